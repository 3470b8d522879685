"""Kernels of ``nk.serial`` networks: the layer rules against independent checks.

* an independent per-pair oracle (below): every layer as explicit P×P matrix algebra on
  the flattened pixel-pair covariances (convolutions and pools as 0/1 selection
  matrices built position by position), no shared code with the engine but the
  activations' kernel rules;
* closed-form identities (1×1 convolutions are Dense layers, circular convolutions of
  constant images are MLPs, zero padding counts as zeros, linear nets under
  GlobalAvgPool are the mean input product);
* the fully-connected fast path equals nk.MLP, and the layer rules reproduce it;
* full mode = same-position mode, symmetry, PSD, diagonals, dtypes, blocks, threads.
"""

import itertools

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends import reference_network as RN
from ntkfast.layers import Elementwise
from ntkfast.layers.linear import AvgPool, Conv, Dense, Flatten, GlobalAvgPool


# -- the independent oracle ----------------------------------------------------------
def _axis_matrices(n, k, s, padding):
    """Per window offset a, the (n_out, n) selection matrix of input index s·o + a − lo
    (zero row where SAME pads, wrapped for CIRCULAR)."""
    if padding == "VALID":
        n_out, lo = (n - k) // s + 1, 0
    else:
        n_out = -(-n // s)
        lo = max((n_out - 1) * s + k - n, 0) // 2
    mats = []
    for a in range(k):
        m = np.zeros((n_out, n))
        for o in range(n_out):
            j = s * o + a - lo
            if padding == "CIRCULAR":
                m[o, j % n] = 1
            elif 0 <= j < n:
                m[o, j] = 1
        mats.append(m)
    return mats, n_out


def _window_matrices(spatial, window, strides, padding):
    per_axis = [_axis_matrices(n, k, s, padding)
                for n, k, s in zip(spatial, window, strides)]
    mats = []
    for combo in itertools.product(*[m for m, _ in per_axis]):
        m = np.ones((1, 1))
        for a in combo:
            m = np.kron(m, a)
        mats.append(m)
    return mats, tuple(n for _, n in per_axis)


class _Pair:
    """Covariances of one pair (x, z) on flattened positions: Σxx, Σzz, Σxz (P×P) and
    Θxz; ``ch``: channel count, for the 'standard' parameterization."""

    def __init__(self, sxx, szz, sxz, txz, spatial, ch):
        self.sxx, self.szz, self.sxz, self.txz = sxx, szz, sxz, txz
        self.spatial, self.ch = spatial, ch

    def with_(self, **kw):
        new = _Pair(self.sxx, self.szz, self.sxz, self.txz, self.spatial, self.ch)
        for k, v in kw.items():
            setattr(new, k, v)
        return new


def _oracle_layer(layer, st):
    if isinstance(layer, nk.layers.Serial):
        for l in layer.layers:
            st = _oracle_layer(l, st)
        return st
    if isinstance(layer, nk.FanOut):
        return [st] * layer.num
    if isinstance(layer, nk.layers.Parallel):
        return [_oracle_layer(b, s) for b, s in zip(layer.branches, st)]
    if isinstance(layer, nk.FanInSum):
        return st[0].with_(sxx=sum(s.sxx for s in st), szz=sum(s.szz for s in st),
                           sxz=sum(s.sxz for s in st), txz=sum(s.txz for s in st))
    if isinstance(layer, (Dense, Conv)):
        w2 = layer.w_std ** 2
        b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
        if isinstance(layer, Dense):
            mats, out, size = [np.eye(st.sxx.shape[0])], st.spatial, 1
        else:
            mats, out = _window_matrices(st.spatial, layer.filter_shape,
                                         layer.strides_or_ones, layer.padding)
            size = len(mats)
        mean = lambda S: sum(m @ S @ m.T for m in mats) / size  # noqa: E731
        sxz_in = mean(st.sxz)
        new = dict(sxx=w2 * mean(st.sxx) + b2, szz=w2 * mean(st.szz) + b2,
                   sxz=w2 * sxz_in + b2)
        if layer.parameterization == "ntk":
            txz = new["sxz"] + w2 * mean(st.txz)
        else:
            txz = st.ch * size * sxz_in + w2 * mean(st.txz)
            if layer.b_std is not None:
                txz = txz + 1.0
        return _Pair(new["sxx"], new["szz"], new["sxz"], txz, out, layer.width)
    if isinstance(layer, AvgPool):
        mats, out = _window_matrices(st.spatial, layer.window_shape,
                                     layer.strides_or_default, layer.padding)
        B = sum(mats) / len(mats)
        pool = lambda S: B @ S @ B.T  # noqa: E731
        return _Pair(pool(st.sxx), pool(st.szz), pool(st.sxz), pool(st.txz), out, st.ch)
    if isinstance(layer, GlobalAvgPool):
        return _Pair(*(np.array([[S.mean()]]) for S in (st.sxx, st.szz, st.sxz, st.txz)),
                     (), st.ch)
    if isinstance(layer, Flatten):
        return _Pair(*(np.array([[np.diag(S).mean()]])
                       for S in (st.sxx, st.szz, st.sxz, st.txz)),
                     (), None if st.ch is None else st.ch * int(np.prod(st.spatial)))
    if isinstance(layer, nk.LayerNorm):
        qx, qz = np.diag(st.sxx) + layer.eps, np.diag(st.szz) + layer.eps
        nxz = np.sqrt(np.outer(qx, qz))
        return st.with_(sxx=st.sxx / np.sqrt(np.outer(qx, qx)),
                        szz=st.szz / np.sqrt(np.outer(qz, qz)), sxz=st.sxz / nxz,
                        txz=st.txz / nxz)
    if isinstance(layer, Elementwise):
        act = layer.activation
        qx, qz = np.diag(st.sxx), np.diag(st.szz)

        def rule(S, a, b):
            e, ed = act.kernel_rule(S, a[:, None], b[None, :])
            return np.broadcast_to(e, S.shape), np.broadcast_to(ed, S.shape)

        # a row's own variances q(p) = Σ(x, x)[p, p] use the diagonal rule (θ = 0)
        exx, ezz = rule(st.sxx, qx, qx)[0].copy(), rule(st.szz, qz, qz)[0].copy()
        np.fill_diagonal(exx, act.diag_rule(qx)[0])
        np.fill_diagonal(ezz, act.diag_rule(qz)[0])
        exz, edxz = rule(st.sxz, qx, qz)
        return st.with_(sxx=exx, szz=ezz, sxz=exz, txz=st.txz * edxz)
    raise TypeError(layer)


def oracle(net, X, Z):
    """(Σ(X, Z), Θ(X, Z)) pair by pair."""
    spatial, C = X.shape[1:-1], X.shape[-1]
    S = np.zeros((len(X), len(Z)))
    T = np.zeros_like(S)
    for i, j in itertools.product(range(len(X)), range(len(Z))):
        x, z = X[i].reshape(-1, C), Z[j].reshape(-1, C)
        st = _Pair(x @ x.T / C, z @ z.T / C, x @ z.T / C, np.zeros((len(x), len(z))),
                   spatial, C)
        st = _oracle_layer(net, st)
        S[i, j], T[i, j] = st.sxz[0, 0], st.txz[0, 0]
    return S, T


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# -- architectures -------------------------------------------------------------------
def _res_block(width=None):
    return [nk.FanOut(2), nk.parallel(nk.serial(nk.ReLU(), nk.Conv((3, 3), w_std=1.3,
                                                                   width=width)),
                                      nk.Identity()), nk.FanInSum()]


ARCHS = {
    "flatten_same_valid_stride": ((5, 6, 3), nk.serial(
        nk.Conv((3, 3), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
        nk.Conv((2, 3), strides=(2, 1), padding="VALID", w_std=1.2), nk.Erf(), nk.Flatten(),
        nk.Dense(w_std=1.1, b_std=0.2))),
    "circular_even_filter_gap": ((5, 4, 2), nk.serial(
        nk.Conv((2, 3), padding="CIRCULAR", w_std=1.2, b_std=0.1), nk.Abs(),
        nk.Conv((3, 3), strides=(2, 2), padding="CIRCULAR", w_std=1.4), nk.GELU(),
        nk.GlobalAvgPool(), nk.Dense(w_std=0.9, b_std=0.1))),
    "avgpool_same_valid_circular": ((7, 6, 2), nk.serial(
        nk.Conv((3, 3), w_std=1.3, b_std=0.2), nk.ReLU(),
        nk.AvgPool((2, 2), strides=(2, 1), padding="SAME"), nk.Conv((2, 2), padding="VALID"),
        nk.LeakyReLU(0.1), nk.AvgPool((3, 2)), nk.AvgPool((2, 2), padding="CIRCULAR"),
        nk.Flatten(), nk.Dense(w_std=1.0))),
    "residual_layernorm": ((4, 4, 3), nk.serial(
        nk.Conv((3, 3), w_std=1.4, b_std=0.1), *_res_block(), nk.LayerNorm(), nk.ReLU(),
        nk.Conv((1, 1), w_std=1.2), nk.LayerNorm(eps=0.1), nk.Erf(), nk.GlobalAvgPool(),
        nk.Dense(w_std=1.0, b_std=0.3))),
    "standard_param": ((5, 5, 3), nk.serial(
        nk.Conv((3, 3), w_std=1.5, b_std=0.1, parameterization="standard", width=7),
        nk.ReLU(), nk.Conv((2, 2), strides=(2, 2), parameterization="standard", width=5,
                           b_std=0.0),
        nk.ReLU(), nk.Flatten(), nk.Dense(parameterization="standard", b_std=0.2, width=1))),
    "standard_gap_dense_per_position": ((4, 3, 2), nk.serial(
        nk.Dense(w_std=1.3, parameterization="standard", width=6), nk.ReLU(),
        nk.Conv((2, 2), padding="CIRCULAR", parameterization="standard", width=4),
        nk.ReLU(), nk.GlobalAvgPool(), nk.Dense(parameterization="standard", b_std=0.1))),
    "signal_1d": ((7, 2), nk.serial(
        nk.Conv((3,), padding="SAME", w_std=1.4, b_std=0.1), nk.ReLU(),
        nk.Conv((2,), strides=(2,), padding="VALID"), nk.AvgPool((2,)), nk.Tanh(),
        nk.AvgPool((2,), padding="SAME"), nk.GlobalAvgPool(), nk.Dense())),
    "signal_1d_flatten": ((6, 3), nk.serial(
        nk.Conv((3,), padding="CIRCULAR", strides=(2,), w_std=1.4), nk.ReLU(),
        nk.Dense(w_std=1.2, b_std=0.3), nk.Sin(), nk.Flatten(), nk.Dense())),
    "vectors_mixed_dense": ((6,), nk.serial(
        nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=0.7), nk.LayerNorm(),
        nk.Erf(), nk.Dense(b_std=0.5), nk.FanOut(2),
        nk.parallel(nk.Dense(), nk.serial(nk.Abs(), nk.Dense(w_std=2.0))), nk.FanInSum(),
        nk.GELU(), nk.Flatten(), nk.Dense())),
}


def _data(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + shape)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_matches_independent_oracle(name):
    shape, net = ARCHS[name]
    X, Z = _data(shape, 4, 1), _data(shape, 3, 2)
    S, T = oracle(net, X, Z)
    k = net.kernels(X, Z)
    assert _rel(k.nngp, S) < 1e-13 and _rel(k.ntk, T) < 1e-13
    # K(X, X): the entries above the diagonal match the oracle (below: mirrored, and
    # quadrature φ are symmetric only to ~1e-13), the diagonal is the exact one
    Sxx, Txx = oracle(net, X, X)
    kxx = net.kernels(X)
    assert _rel(kxx.nngp, Sxx) < 1e-12 and _rel(kxx.ntk, Txx) < 1e-7
    off = np.triu(np.ones((len(X),) * 2, dtype=bool), 1)
    assert _rel(kxx.nngp[off], Sxx[off]) < 1e-13 and _rel(kxx.ntk[off], Txx[off]) < 1e-13


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_symmetric_psd_and_diagonals(name):
    shape, net = ARCHS[name]
    X = _data(shape, 9, 3)
    X[4] = 2 * X[1]          # a scaled copy: θ = 0 off the diagonal too
    X[7] = 0.0               # a zero input
    k = net.kernels(X)
    for K, diag in ((k.nngp, net.nngp_diag(X)), (k.ntk, net.ntk_diag(X))):
        assert np.array_equal(K, K.T)
        assert np.array_equal(np.diag(K), diag)
        w = np.linalg.eigvalsh(K)
        assert w.min() >= -1e-12 * np.abs(K).max()
    assert np.array_equal(net.nngp(X), k.nngp) and np.array_equal(net.ntk(X), k.ntk)


# -- identities ----------------------------------------------------------------------
def test_conv_1x1_is_dense_per_position():
    X, Z = _data((4, 5, 3), 4, 4), _data((4, 5, 3), 3, 5)
    for readout in (nk.Flatten(), nk.GlobalAvgPool()):
        conv = nk.serial(nk.Conv((1, 1), w_std=1.3, b_std=0.2), nk.ReLU(),
                         nk.Conv((1, 1), w_std=0.8), nk.GELU(), readout, nk.Dense(b_std=0.1))
        dense = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.ReLU(), nk.Dense(w_std=0.8),
                          nk.GELU(), readout, nk.Dense(b_std=0.1))
        a, b = conv.kernels(X, Z), dense.kernels(X, Z)
        assert _rel(a.nngp, b.nngp) < 1e-14 and _rel(a.ntk, b.ntk) < 1e-14


@pytest.mark.parametrize("act", [nk.ReLU(), nk.Erf(), nk.GELU()])
def test_circular_conv_gap_on_constant_images_is_the_mlp(act):
    rng = np.random.default_rng(6)
    v, u = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    X = np.broadcast_to(v[:, None, None, :], (5, 4, 3, 3)).copy()
    Z = np.broadcast_to(u[:, None, None, :], (4, 4, 3, 3)).copy()
    net = nk.serial(nk.Conv((3, 2), padding="CIRCULAR", w_std=1.4, b_std=0.3), act,
                    nk.Conv((2, 3), padding="CIRCULAR", strides=(2, 1), w_std=1.4, b_std=0.3),
                    act, nk.GlobalAvgPool(), nk.Dense(w_std=1.4, b_std=0.3))
    mlp = nk.MLP(2, act, w_std=1.4, b_std=0.3)
    for A, B, a, b in ((X, Z, v, u), (X, None, v, None)):
        k, m = net.kernels(A, B), mlp.kernels(a, b)
        assert _rel(k.nngp, m.nngp) < 1e-13 and _rel(k.ntk, m.ntk) < 1e-13


def test_one_pixel_images_circular_is_the_mlp_and_same_counts_zeros():
    X, Z = _data((1, 1, 4), 5, 7), _data((1, 1, 4), 3, 8)
    x, z = X.reshape(5, 4), Z.reshape(3, 4)
    circ = nk.serial(nk.Conv((3, 3), padding="CIRCULAR", w_std=1.5, b_std=0.1), nk.ReLU(),
                     nk.Conv((3, 3), padding="CIRCULAR", w_std=1.5, b_std=0.1), nk.Flatten())
    k, m = circ.kernels(X, Z), nk.MLP(1, "relu", 1.5, 0.1).kernels(x, z)
    assert _rel(k.nngp, m.nngp) < 1e-14 and _rel(k.ntk, m.ntk) < 1e-14
    # SAME: the 8 zero-padded neighbours count as zeros in the mean → σ_w²/9
    same = nk.serial(nk.Conv((3, 3), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
                     nk.Flatten(), nk.Dense(w_std=1.5, b_std=0.1))
    ref = nk.serial(nk.Dense(w_std=0.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
    k, r = same.kernels(X, Z), ref.kernels(x, z)
    assert _rel(k.nngp, r.nngp) < 1e-14
    # Θ: the first layer's Σ-term is σ_w²/9-scaled too, its Θ-term σ_w² mean(0) = 0
    assert _rel(k.ntk, r.ntk) < 1e-14


def test_gap_of_linear_circular_conv_is_the_mean_input_product():
    X, Z = _data((5, 4, 3), 4, 9), _data((5, 4, 3), 3, 10)
    w1, b1, w2, b2 = 1.3, 0.4, 0.9, 0.2
    net = nk.serial(nk.Conv((3, 2), padding="CIRCULAR", w_std=w1, b_std=b1),
                    nk.GlobalAvgPool(), nk.Dense(w_std=w2, b_std=b2))
    m = X.mean(axis=(1, 2)) @ Z.mean(axis=(1, 2)).T / 3   # mean over pixel pairs of x·z'/C
    s1 = w1 ** 2 * m + b1 ** 2
    k = net.kernels(X, Z)
    assert _rel(k.nngp, w2 ** 2 * s1 + b2 ** 2) < 1e-14
    assert _rel(k.ntk, w2 ** 2 * s1 + b2 ** 2 + w2 ** 2 * s1) < 1e-14
    # without padding effects: GAP then Dense on the raw input
    k = nk.serial(nk.GlobalAvgPool(), nk.Dense(w_std=w2, b_std=b2)).kernels(X, Z)
    assert _rel(k.nngp, w2 ** 2 * m + b2 ** 2) < 1e-14


def test_avgpool_default_strides_are_one_like_nt():
    assert nk.AvgPool((2, 3)).strides_or_default == (1, 1)
    net1 = nk.serial(nk.Conv((2, 2)), nk.ReLU(), nk.AvgPool((2, 2)), nk.Flatten(), nk.Dense())
    net2 = nk.serial(nk.Conv((2, 2)), nk.ReLU(), nk.AvgPool((2, 2), strides=(1, 1)),
                     nk.Flatten(), nk.Dense())
    X = _data((5, 5, 2), 3, 11)
    assert np.array_equal(net1.ntk(X), net2.ntk(X))
    assert nk.AvgPool((2, 2)).output_spatial((5, 5), "") == (4, 4)


# -- modes, engines, blocks ----------------------------------------------------------
@pytest.mark.parametrize("name", ["flatten_same_valid_stride", "standard_param",
                                  "signal_1d_flatten", "vectors_mixed_dense"])
def test_full_mode_equals_same_position_mode(name):
    shape, net = ARCHS[name]
    X, Z = _data(shape, 5, 12), _data(shape, 4, 13)
    outs = []
    for full in (False, True):
        plan = RN.NetworkPlan(net, shape, full=full)
        assert plan.full is full
        eng = RN.NetworkReferenceEngine()
        sx, sz = eng.variances(plan, X), eng.variances(plan, Z)
        S, T = np.empty((5, 4)), np.empty((5, 4))
        eng.fill(plan, X, Z, S, T, symmetric=False, qx=sx, qz=sz)
        outs.append((S, T, sx.nngp, sx.ntk))
    for a, b in zip(*outs):
        assert _rel(a, b) < 1e-14
    # an identity pooling switches the whole network to full mode: the same numbers
    pooled = nk.serial(nk.AvgPool((1,) * (len(shape) - 1)), net) if len(shape) > 1 else None
    if pooled is not None:
        assert _rel(pooled.ntk(X, Z), net.ntk(X, Z)) < 1e-14


def _mlp_like(depth, act, w, b, par, width):
    layers = [nk.Dense(w, b, par, width=width)]
    for _ in range(depth):
        layers += [act, nk.Dense(w, b, par, width=width)]
    return nk.serial(*layers)


MLP_CASES = [(0, nk.ReLU(), 1.0, None, "ntk", None),
             (1, nk.ReLU(), 1.4, 0.1, "ntk", None),
             (3, nk.Erf(2.0, 0.5, 0.3), 1.2, 0.0, "ntk", None),
             (2, nk.GELU(), 0.9, 0.3, "standard", 17),
             (2, nk.LeakyReLU(0.2), 1.1, None, "standard", 8),
             (0, nk.Abs(), 1.3, 0.2, "standard", None),
             (2, nk.Identity(), 1.0, 0.5, "ntk", None)]


@pytest.mark.parametrize("case", MLP_CASES, ids=lambda c: f"{c[0]}-{c[1]!r}-{c[4]}")
def test_fully_connected_chain_is_the_mlp(case, monkeypatch):
    depth, act, w, b, par, width = case
    net = _mlp_like(depth, act, w, b, par, width)
    mlp = nk.MLP(depth, act, w, b, par, width=width if width else
                 (1 if par == "standard" else None))
    X, Z = _data((6,), 7, 14), _data((6,), 5, 15)
    ref = {z is None: mlp.kernels(X, z) for z in (None, Z)}
    ref_diag = (mlp.nngp_diag(X), mlp.ntk_diag(X))

    # the layer rules themselves (forced) reproduce the MLP
    for z in (None, Z):
        k = net.kernels(X, z, backend="reference")
        r = ref[z is None]
        assert _rel(k.nngp, r.nngp) < 1e-13 and _rel(k.ntk, r.ntk) < 1e-13
    assert _rel(net.nngp_diag(X, backend="reference"), ref_diag[0]) < 1e-13
    assert _rel(net.ntk_diag(X, backend="reference"), ref_diag[1]) < 1e-13

    # the fast path: the MLP engine itself, never the layer rules
    def boom(*a, **k):
        raise AssertionError("the network reference engine ran")

    monkeypatch.setattr(RN.NetworkReferenceEngine, "fill", boom)
    monkeypatch.setattr(RN.NetworkReferenceEngine, "variances", boom)
    monkeypatch.setattr(RN, "compute_diagonal", boom)
    for z in (None, Z):
        k = net.kernels(X, z)
        r = ref[z is None]
        assert _rel(k.nngp, r.nngp) <= 1e-15 and _rel(k.ntk, r.ntk) <= 1e-15
    assert _rel(net.nngp_diag(X), ref_diag[0]) <= 1e-15
    assert _rel(net.ntk_diag(X), ref_diag[1]) <= 1e-15


def test_fast_path_only_for_mlp_chains():
    assert nk.serial(nk.Dense(), nk.ReLU(), nk.Dense())._mlp_equivalent() is not None
    nested = nk.serial(nk.serial(nk.Dense(1.2), nk.ReLU()), nk.Dense(1.2))
    assert nested._mlp_equivalent().depth == 1
    for net in (nk.serial(nk.Dense(1.0), nk.ReLU(), nk.Dense(2.0)),
                nk.serial(nk.Dense(), nk.ReLU(), nk.Dense(), nk.Erf(), nk.Dense()),
                nk.serial(nk.Dense(), nk.ReLU(), nk.ReLU(), nk.Dense()),
                nk.serial(nk.Dense(), nk.ReLU(), nk.Dense(), nk.Flatten()),
                nk.serial(nk.Dense(parameterization="standard", width=3), nk.ReLU(),
                          nk.Dense(parameterization="standard", width=4), nk.ReLU(),
                          nk.Dense(parameterization="standard"))):
        assert net._mlp_equivalent() is None
    # an MLP chain on images is not an MLP: the layer rules say why it does not fit
    with pytest.raises(nk.layers.LayerError, match="still spatial"):
        nk.serial(nk.Dense(), nk.ReLU(), nk.Dense()).ntk(np.ones((2, 3, 3, 2)))


def test_blocks_threads_tiles_and_budget_agree(monkeypatch):
    shape, net = ARCHS["avgpool_same_valid_circular"]
    X, Z = _data(shape, 11, 16), _data(shape, 6, 17)
    base = net.kernels(X, Z, n_jobs=1)
    sym = net.kernels(X, n_jobs=1)
    for kw in ({"n_jobs": 2}, {"tile": 3, "n_jobs": 2}, {"tile": 1}):
        k = net.kernels(X, Z, **kw)
        assert _rel(k.ntk, base.ntk) < 1e-14 and _rel(k.nngp, base.nngp) < 1e-14
        s = net.kernels(X, **kw)
        assert np.array_equal(s.ntk, s.ntk.T)
        assert _rel(s.ntk, sym.ntk) < 1e-14
        assert np.array_equal(np.diag(s.ntk), np.diag(sym.ntk))
    # a tiny budget: one pair and one row at a time, the same numbers
    monkeypatch.setattr(RN, "STATE_BUDGET", 1)
    k = net.kernels(X, Z, n_jobs=1)
    assert _rel(k.ntk, base.ntk) < 1e-14
    s = net.kernels(X, n_jobs=1)
    assert np.array_equal(s.ntk, s.ntk.T) and _rel(s.ntk, sym.ntk) < 1e-14


def test_block_sizes_follow_the_memory_budget():
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense())
    plan = RN.NetworkPlan(net, (32, 32, 3))
    assert plan.full and plan.pair_elems == 1024 ** 2
    eng = RN.NetworkReferenceEngine()
    edge = eng.sub_block(plan, 1000, 1000)
    assert edge * edge * plan.pair_elems * 8 * RN.ARRAYS_ALIVE <= RN.STATE_BUDGET
    flat = RN.NetworkPlan(nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Flatten(), nk.Dense()),
                          (32, 32, 3))
    assert not flat.full and flat.pair_elems == 1024
    assert eng.sub_block(flat, 1000, 1000) > edge


def test_dtype_out_and_single_kernels():
    shape, net = ARCHS["flatten_same_valid_stride"]
    X, Z = _data(shape, 5, 18), _data(shape, 3, 19)
    k64 = net.kernels(X, Z)
    k32 = net.kernels(X.astype(np.float32), Z.astype(np.float32))
    assert k32.nngp.dtype == np.float32 and k32.ntk.dtype == np.float32
    assert _rel(k32.ntk.astype(float), k64.ntk) < 1e-5
    assert net.ntk(X, Z, dtype="float32").dtype == np.float32
    out = np.empty((5, 3))
    assert net.ntk(X, Z, out=out) is out and np.array_equal(out, k64.ntk)
    pair = (np.empty((5, 5)), np.empty((5, 5)))
    k = net.kernels(X, out=pair)
    assert k.nngp is pair[0] and k.ntk is pair[1]
    assert np.array_equal(net.nngp(X, Z), k64.nngp)
    d = np.empty(5, np.float32)
    assert net.ntk_diag(X, dtype=np.float32, out=d) is d
    assert net.ntk_diag(X.tolist()).shape == (5,)          # lists are fine
