"""Conv / pooling networks against a 40-digit mpmath evaluation of their kernels.

The oracle below is written straight from the math of DESIGN.md §5, independently
of the engine's layer rules: the state of a set of inputs v_0 … v_{n-1} is the joint
covariance of all (input, position) pairs, kept as blocks Σ_ij[p, p'] (and Θ_ij) for
the self pairs (i, i) and the asked-for cross pairs (i, j):

* input: Σ_ij[p, p'] = v_i[p]·v_j[p'] / C, Θ = 0;
* Dense (per position) / Conv(k, s, padding): Σ' = σ_w² · mean over the window offset a
  (the same on both sides) of Σ[s p + a − lo, s p' + a − lo] + σ_b², positions outside
  the image are zeros (SAME) or wrap (CIRCULAR); Θ' = σ_w² · mean_a Θ[..] + Σ';
* an activation: Σ'[p, p'] = E[φ(u)φ(v)], Θ' = Θ · E[φ'(u)φ'(v)] with (u, v) of
  covariance [[Σ_ii[p, p], Σ_ij[p, p']], [Σ_ij[p, p'], Σ_jj[p', p']]] (the closed forms
  of tests/test_precision_mpmath.py: θ from √max(q q' − Σ², 0) at 40 digits);
* AvgPool: windows of p and of p' averaged independently (divided by |k|², padded
  positions count as zeros); GlobalAvgPool: the mean over all (p, p'); Flatten: the
  mean over the same-position pairs (p, p);
* FanOut / parallel / FanInSum: the branches' states added;
* LayerNorm: Σ'[p, p'] = Σ / √((Σ_ii[p, p] + ε)(Σ_jj[p', p'] + ε)), Θ likewise.

Inputs are the exact binary values of the float arrays, so the reference is the exact
kernel of the given inputs (40 digits absorb the cancellation in q q' − Σ² of
near-duplicate images).  The float64 engine must be within 1e-10 of it (relative to
the entry) off the diagonal, near-duplicate and duplicate images included, and within
1e-12 on the diagonal.
"""

import itertools

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")
from mpmath import mp, mpf  # noqa: E402

import ntkfast as nk  # noqa: E402
from ntkfast.layers import Elementwise, Parallel, Serial  # noqa: E402
from test_precision_mpmath import mp_rule  # noqa: E402

mp.dps = 40


# -- the oracle --------------------------------------------------------------------------
def _window_index(spatial, window, strides, padding):
    """(output spatial shape, idx) with idx[o][a] the flat input position that output
    position o reads at window offset a (None: a zero-padded position)."""
    axes = []
    for n, k, s in zip(spatial, window, strides):
        if padding == "VALID":
            out, lo = -(-(n - k + 1) // s), 0
        else:
            out = -(-n // s)
            lo = max((out - 1) * s + k - n, 0) // 2
        rows = []
        for o in range(out):
            row = []
            for a in range(k):
                i = s * o + a - lo
                if not 0 <= i < n:
                    i = i % n if padding == "CIRCULAR" else None
                row.append(i)
            rows.append(row)
        axes.append(rows)
    out_spatial = tuple(len(r) for r in axes)
    idx = []
    for o in itertools.product(*[range(m) for m in out_spatial]):
        per = []
        for a in itertools.product(*[range(k) for k in window]):
            pos = [axes[d][o[d]][a[d]] for d in range(len(spatial))]
            per.append(None if None in pos else int(np.ravel_multi_index(pos, spatial)))
        idx.append(per)
    return out_spatial, idx


class MPState:
    """Blocks (i, j) → (Σ_ij, Θ_ij), object arrays (P, P) of mpf over flat positions."""

    def __init__(self, spatial, blocks):
        self.spatial, self.blocks = spatial, blocks

    def map(self, fn, spatial):
        return MPState(spatial, {k: (fn(s), fn(t)) for k, (s, t) in self.blocks.items()})


def _zeros(n, m):
    a = np.empty((n, m), dtype=object)
    a.fill(mpf(0))
    return a


def _conv_mean(a, idx, pool):
    """Conv (pool=False): out[o, o'] = mean_a a[idx[o][a], idx[o'][a]];
    pool: out[o, o'] = mean_{a, b} a[idx[o][a], idx[o'][b]]."""
    k = len(idx[0])
    out = _zeros(len(idx), len(idx))
    for o, ro in enumerate(idx):
        for o2, ro2 in enumerate(idx):
            if pool:
                terms = [a[i, j] for i in ro if i is not None for j in ro2 if j is not None]
                out[o, o2] = mp.fsum(terms) / (k * k)
            else:
                terms = [a[i, j] for i, j in zip(ro, ro2) if i is not None and j is not None]
                out[o, o2] = mp.fsum(terms) / k
    return out


def _affine(layer, state, mean, spatial):
    assert layer.parameterization == "ntk"
    w2 = mpf(layer.w_std) ** 2
    b2 = mpf(0) if layer.b_std is None else mpf(layer.b_std) ** 2
    blocks = {}
    for key, (s, t) in state.blocks.items():
        s2 = w2 * mean(s) + b2
        blocks[key] = (s2, w2 * mean(t) + s2)
    return MPState(spatial, blocks)


def _activation(act, state):
    if isinstance(act, nk.Identity):
        return state
    blocks = {}
    for (i, j), (s, t) in state.blocks.items():
        qi = state.blocks[(i, i)][0].diagonal()
        qj = state.blocks[(j, j)][0].diagonal()
        e, edot = _zeros(*s.shape), _zeros(*s.shape)
        for p in range(s.shape[0]):
            for p2 in range(s.shape[1]):
                e[p, p2], edot[p, p2] = mp_rule(act, s[p, p2], qi[p], qj[p2])
        blocks[(i, j)] = (e, t * edot)
    return MPState(state.spatial, blocks)


def mp_run(layer, state):
    """The state after ``layer`` (a list of states for branches)."""
    if isinstance(layer, Serial):
        for sub in layer.layers:
            state = mp_run(sub, state)
        return state
    if isinstance(layer, Parallel):
        return [mp_run(b, s) for b, s in zip(layer.branches, state)]
    if isinstance(layer, nk.FanOut):
        return [state] * layer.num
    if isinstance(layer, nk.FanInSum):
        return MPState(state[0].spatial, {
            k: (sum((st.blocks[k][0] for st in state[1:]), state[0].blocks[k][0]),
                sum((st.blocks[k][1] for st in state[1:]), state[0].blocks[k][1]))
            for k in state[0].blocks})
    if isinstance(layer, Elementwise):
        return _activation(layer.activation, state)
    if isinstance(layer, nk.Dense):
        return _affine(layer, state, lambda a: a, state.spatial)
    if isinstance(layer, nk.Conv):
        spatial, idx = _window_index(state.spatial, layer.filter_shape,
                                     layer.strides or (1,) * len(layer.filter_shape),
                                     layer.padding)
        return _affine(layer, state, lambda a: _conv_mean(a, idx, False), spatial)
    if isinstance(layer, nk.AvgPool):
        spatial, idx = _window_index(state.spatial, layer.window_shape,
                                     layer.strides or (1,) * len(layer.window_shape),
                                     layer.padding)
        return state.map(lambda a: _conv_mean(a, idx, True), spatial)
    if isinstance(layer, nk.LayerNorm):
        # the channels of each position normalised: Σ'[p, p'] = Σ / √((q_i(p) + ε)(q_j(p') + ε))
        eps = mpf(layer.eps)
        blocks = {}
        for (i, j), (s, t) in state.blocks.items():
            ni = [mp.sqrt(q + eps) for q in state.blocks[(i, i)][0].diagonal()]
            nj = [mp.sqrt(q + eps) for q in state.blocks[(j, j)][0].diagonal()]
            norm = np.array([[a * b for b in nj] for a in ni], dtype=object)
            blocks[(i, j)] = (s / norm, t / norm)
        return MPState(state.spatial, blocks)
    if isinstance(layer, nk.GlobalAvgPool):
        return state.map(lambda a: np.array([[mp.fsum(a.ravel()) / a.size]], dtype=object), ())
    if isinstance(layer, nk.Flatten):
        return state.map(lambda a: np.array([[mp.fsum(a.diagonal()) / a.shape[0]]],
                                            dtype=object), ())
    raise TypeError(f"the oracle has no rule for {layer!r}")


def mp_kernels(net, inputs, pairs):
    """{(i, j): (Σ, Θ)} (mpf) of the network for the pairs (i, j) of ``inputs`` (arrays
    (*S, C) whose exact binary values are used) and every (i, i)."""
    spatial, c = inputs[0].shape[:-1], inputs[0].shape[-1]
    vecs = [np.array([[mpf(float(v)) for v in row] for row in
                      np.asarray(x, np.float64).reshape(-1, c)], dtype=object)
            for x in inputs]
    keys = sorted({(i, i) for i in range(len(inputs))} | set(pairs))
    blocks = {}
    for i, j in keys:
        s = _zeros(len(vecs[i]), len(vecs[j]))
        for p in range(s.shape[0]):
            for p2 in range(s.shape[1]):
                s[p, p2] = mp.fsum(a * b for a, b in zip(vecs[i][p], vecs[j][p2])) / c
        blocks[(i, j)] = (s, _zeros(*s.shape))
    out = mp_run(net, MPState(tuple(spatial), blocks))
    assert out.spatial == ()
    return {k: (s[0, 0], t[0, 0]) for k, (s, t) in out.blocks.items()}


# -- helpers ---------------------------------------------------------------------------
BACKENDS = ("reference", "auto")
OFF_DIAG_RTOL = 1e-10
DIAG_RTOL = 1e-12


def near_copy(rng, x, eps):
    """x + ε·η with ‖ε η‖ = ε ‖x‖ (ε = 0: an exact copy)."""
    if eps == 0:
        return x.copy()
    eta = rng.standard_normal(x.shape)
    return x + eps * eta * (np.linalg.norm(x) / np.linalg.norm(eta))


def rel_err(got, ref, floor=0.0):
    """|got − ref| / max(|ref|, floor) at 40 digits (got: a float)."""
    return float(abs(mpf(float(got)) - ref) / max(abs(ref), floor))


def _oracle(cache, key, net, inputs, pairs):
    if key not in cache:
        cache[key] = mp_kernels(net, inputs, pairs)
    return cache[key]


@pytest.fixture(scope="module")
def oracle_cache():
    return {}


def conv_net(head, act, pool_inside=False):
    """Two 3×3 convolutions with the activation after each, then the readout: Flatten
    (same-position mode) or GlobalAvgPool (all pixel pairs; with ``pool_inside`` an
    AvgPool before the second convolution, so the second activation reads pooled
    covariances)."""
    layers = [nk.Conv((3, 3), w_std=1.5, b_std=0.1), act]
    if pool_inside:
        layers.append(nk.AvgPool((2, 2), strides=(1, 1), padding="SAME"))
    layers += [nk.Conv((3, 3), w_std=1.3, b_std=0.1 if head == "flatten" else None), act,
               nk.Flatten() if head == "flatten" else nk.GlobalAvgPool(),
               nk.Dense(w_std=1.2, b_std=0.2)]
    return nk.serial(*layers)


# -- the oracle against the engine on well-separated images -------------------------
SEPARATED = {
    "flatten-relu-circular": nk.serial(
        nk.Conv((3, 3), w_std=1.5, b_std=0.1), nk.ReLU(),
        nk.Conv((3, 3), padding="CIRCULAR", w_std=1.3), nk.ReLU(), nk.Flatten(),
        nk.Dense(w_std=1.2, b_std=0.2)),
    "gap-relu-pool-valid": nk.serial(
        nk.Conv((3, 3), w_std=1.5, b_std=0.1), nk.ReLU(), nk.AvgPool((2, 2), strides=(1, 1)),
        nk.Conv((2, 2), padding="VALID", w_std=1.3), nk.ReLU(), nk.GlobalAvgPool(),
        nk.Dense(w_std=1.2)),
    "flatten-erf-gelu-strides": nk.serial(
        nk.Conv((3, 3), strides=(2, 1), w_std=1.5, b_std=0.1), nk.Erf(),
        nk.Dense(w_std=1.1, b_std=0.3), nk.GELU(), nk.Flatten(), nk.Dense()),
    "residual-leaky-abs-erf": nk.serial(
        nk.Conv((3, 3), w_std=1.2), nk.FanOut(2),
        nk.parallel(nk.serial(nk.LeakyReLU(0.1), nk.Conv((3, 3), padding="CIRCULAR")),
                    nk.Identity()),
        nk.FanInSum(), nk.Abs(), nk.AvgPool((2, 2), strides=(2, 2), padding="SAME"),
        nk.Conv((3, 3)), nk.Erf(2.0, 0.5, 0.3), nk.GlobalAvgPool(), nk.Dense()),
    "layernorm-relu-head": nk.serial(
        nk.Conv((3, 3), w_std=1.3, b_std=0.1), nk.LayerNorm(), nk.ReLU(),
        nk.Conv((3, 3), strides=(2, 2), padding="VALID"), nk.ReLU(), nk.Flatten(),
        nk.Dense(b_std=0.5), nk.ReLU(), nk.Dense()),
}


@pytest.mark.parametrize("name", list(SEPARATED))
def test_oracle_agrees_on_separated_images(name, rng):
    """Independent oracle and engine agree to rounding (≲ 1e-15) on random images:
    this validates the oracle (and the engine) before the near-duplicate tests."""
    net = SEPARATED[name]
    X = rng.standard_normal((3, 5, 5, 2))
    ref = mp_kernels(net, list(X), [(0, 1), (0, 2), (1, 2)])
    for backend in BACKENDS:
        k = net.kernels(X, backend=backend)
        for (i, j), (s, t) in ref.items():
            assert rel_err(k.nngp[i, j], s) < 1e-13, (backend, i, j)
            assert rel_err(k.ntk[i, j], t) < 1e-13, (backend, i, j)


# -- near-duplicate images ----------------------------------------------------------------
EPS = (1e-3, 1e-5, 1e-7, 1e-9, 0.0)
ACTS = {"relu": nk.ReLU(), "erf": nk.Erf(), "abs": nk.Abs(), "leaky": nk.LeakyReLU(0.2),
        "gelu": nk.GELU()}
CASES = [("flatten", a) for a in ACTS] + [("gap", a) for a in ("relu", "erf", "leaky")] + \
    [("gap-pool", a) for a in ("relu", "erf", "abs")]


@pytest.mark.parametrize("head,act", CASES)
def test_near_duplicate_images(head, act, oracle_cache):
    """x against z = x + ε η (‖ε η‖ = ε ‖x‖, ε = 1e-3 … 1e-9) and an exact copy of x, as
    cross pairs K(x, Z) and inside K(X, X): ≤ 1e-10 of each entry off the diagonal
    (float64 by subtraction gave ~4e-9 for the ReLU family), ≤ 1e-12 on it."""
    rng = np.random.default_rng(2023)  # its exact copy lost 1e-9 in the Flatten nets
    x = rng.standard_normal((5, 5, 2) if head == "flatten" else (4, 4, 2))
    zs = [near_copy(rng, x, e) for e in EPS]
    inputs = [x] + zs
    net = conv_net("flatten" if head == "flatten" else "gap", ACTS[act],
                   pool_inside=head == "gap-pool")
    ref = _oracle(oracle_cache, (head, act), net, inputs,
                  [(0, k + 1) for k in range(len(zs))])
    for backend in BACKENDS:
        cross = net.kernels(x[None], np.array(zs), backend=backend)
        full = net.kernels(np.array(inputs), backend=backend)
        for k, eps in enumerate(EPS):
            s, t = ref[(0, k + 1)]
            for got, r, what in ((cross.nngp[0, k], s, "nngp"), (cross.ntk[0, k], t, "ntk"),
                                 (full.nngp[0, k + 1], s, "nngp in K(X)"),
                                 (full.ntk[0, k + 1], t, "ntk in K(X)")):
                assert rel_err(got, r) <= OFF_DIAG_RTOL, (backend, eps, what, rel_err(got, r))
        for i in range(len(inputs)):
            s, t = ref[(i, i)]
            assert rel_err(full.nngp[i, i], s) <= DIAG_RTOL, (backend, i)
            assert rel_err(full.ntk[i, i], t) <= DIAG_RTOL, (backend, i)
            assert rel_err(net.ntk_diag(inputs[i][None], backend=backend)[0], t) <= DIAG_RTOL


def test_scattered_near_duplicates_and_tiles(oracle_cache):
    """Near-duplicate pairs scattered over K(X, Z) (recomputed as a list of pairs, not
    the rows × columns they span) and over K(X, X) computed in 2×2 tiles on 2 threads
    (pairs split across tiles, mirrored blocks)."""
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((4, 4, 2)) for _ in range(4)]
    zs = [near_copy(rng, xs[k], e) for k, e in zip((2, 0, 3, 1), (1e-8, 0.0, 1e-10, 1e-6))]
    order = (2, 0, 3, 1)
    net = conv_net("gap", nk.ReLU(), pool_inside=True)
    inputs = xs + zs
    pairs = [(i, j) for i in range(4) for j in range(4, 8)]
    ref = _oracle(oracle_cache, "scattered", net, inputs, pairs)
    for backend in BACKENDS:
        cross = net.kernels(np.array(xs), np.array(zs), backend=backend)
        full = net.ntk(np.array(inputs), tile=2, n_jobs=2, backend=backend)
        for i, j in pairs:
            s, t = ref[(i, j)]
            assert rel_err(cross.nngp[i, j - 4], s) <= OFF_DIAG_RTOL, (backend, i, j)
            assert rel_err(cross.ntk[i, j - 4], t) <= OFF_DIAG_RTOL, (backend, i, j)
            assert rel_err(full[i, j], t) <= OFF_DIAG_RTOL, (backend, i, j)
            assert full[j, i] == full[i, j]
        for k, i in enumerate(order):  # the near-duplicate pairs, at 1e-12
            assert rel_err(cross.ntk[i, k], ref[(i, k + 4)][1]) <= 1e-12, (backend, i, k)


@pytest.mark.parametrize("act", [nk.ReLU(), nk.Abs(), nk.LeakyReLU(0.2)], ids=repr)
def test_antiparallel_scaled_and_uniform_images(act, oracle_cache):
    """z ≈ −x (Abs maps it to near-parallel features), scaled copies 3x and 0.37x, an
    image with uniform regions (near-parallel pixel pairs p ≠ p' of one image: its
    diagonal K(x, x) too) and a zero image (θ = π/2 by convention).  Entries far below
    their pair's scale √(K(x,x) K(z,z)) (ReLU of antiparallel inputs) are held to 1e-10
    of 1e-6 of that scale."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 4, 2))
    u = np.ones((4, 4, 2)) * np.array([0.3, -0.7])
    u[0, :2] = rng.standard_normal((2, 2))
    inputs = [x, -near_copy(rng, x, 1e-9), -x, 3.0 * x, 0.37 * near_copy(rng, x, 1e-8), u,
              near_copy(rng, u, 1e-9), 0.0 * x]
    pairs = [(0, j) for j in range(1, 5)] + [(5, 6), (5, 7)]
    net = nk.serial(nk.Conv((3, 3), w_std=1.3), act, nk.AvgPool((2, 2), padding="SAME"),
                    nk.Conv((3, 3), w_std=1.2, b_std=0.3), nk.ReLU(), nk.GlobalAvgPool(),
                    nk.Dense())
    ref = _oracle(oracle_cache, ("antiparallel", repr(act)), net, inputs, pairs)
    for backend in BACKENDS:
        k = net.kernels(np.array(inputs), backend=backend)
        for i, j in pairs:
            for m, kind in enumerate(("nngp", "ntk")):
                got = getattr(k, kind)
                scale = mp.sqrt(ref[(i, i)][m] * ref[(j, j)][m])
                assert rel_err(got[i, j], ref[(i, j)][m], 1e-6 * scale) <= OFF_DIAG_RTOL, \
                    (backend, i, j, kind)
        for i in range(len(inputs)):
            assert rel_err(k.nngp[i, i], ref[(i, i)][0]) <= DIAG_RTOL, (backend, i)
            assert rel_err(k.ntk[i, i], ref[(i, i)][1]) <= DIAG_RTOL, (backend, i)


def test_double_double_primitives():
    """The double-double arithmetic of the precise pass: ~1e-32 against mpmath."""
    from ntkfast.layers.doubledouble import DD, atan2, fast_two_sum
    rng = np.random.default_rng(5)
    n = 300
    hi = rng.standard_normal((2, n)) * 10.0 ** rng.integers(-3, 4, (2, n))
    a, b = (DD(*fast_two_sum(h, h * rng.uniform(-1e-17, 1e-17, n))) for h in hi)
    tiny = DD(np.abs(a.hi) * 1e-12, a.lo * 0)
    val = lambda d, i: mpf(float(d.hi[i])) + mpf(float(d.lo[i]))  # noqa: E731
    checks = [(a + b, lambda i: val(a, i) + val(b, i), False),
              (a * b, lambda i: val(a, i) * val(b, i), True),
              (a / b, lambda i: val(a, i) / val(b, i), True),
              (abs(a).sqrt(), lambda i: mp.sqrt(abs(val(a, i))), True),
              (atan2(a, b), lambda i: mp.atan2(val(a, i), val(b, i)), False),
              (atan2(tiny, abs(b)), lambda i: mp.atan2(val(tiny, i), abs(val(b, i))), True)]
    for got, ref, relative in checks:
        for i in range(n):
            r = ref(i)
            scale = abs(r) if relative else max(abs(val(a, i)), abs(val(b, i)), 1)
            assert abs(val(got, i) - r) <= 1e-30 * scale, i
    s = a.reshape(15, 20).sum(axis=1)
    for r in range(15):
        exact = mp.fsum(val(a, r * 20 + c) for c in range(20))
        assert abs(val(s, r) - exact) <= 1e-30 * max(abs(exact), 1)
