"""Random valid architectures from the compiled engine's layer set against the NumPy
reference engine (issue 19, item 7).

The generator draws Conv (SAME / VALID / CIRCULAR padding, strides, both
parameterizations, with or without bias), the ReLU family / Erf / GELU / Identity,
LayerNorm, AvgPool (strides, SAME / VALID), residual blocks of 2 or 3 branches
(FanOut / parallel / FanInSum, possibly nested), a GlobalAvgPool or Flatten readout and
Dense layers after it, on 1-D and 2-D inputs of odd sizes.  Checked, both dtypes:
K(X, Z) and K(X, X) of the compiled engine = the reference's (≤ 1e-12 of the matrix
scale in float64; float32 within 3e-5), K(X, X) exactly symmetric with the ``*_diag``
values on its diagonal, and the compiled self pass (variance tapes and exact
diagonals) = the reference's.
"""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends.compiled_network import CompiledNetworkEngine, unsupported_layer
from ntkfast.backends.reference_network import NetworkPlan, NetworkReferenceEngine

ACTS = (nk.ReLU, lambda: nk.LeakyReLU(0.2), nk.Abs, lambda: nk.ABReLU(-0.4, 0.9),
        lambda: nk.Erf(1.1, 0.7, 0.2), nk.GELU, nk.Identity)
#: C >= 2: with one channel a window cut to one position by padding gives exactly
#: parallel pixel pairs, whose float64 angles are noise (both engines then agree to the
#: documented ~2.5e-11, not 1e-12; tests/test_compiled_network.py covers that case)
SHAPES = ((5, 7, 2), (7, 3, 3), (9, 2), (3, 5, 2), (11, 3), (7, 7, 2))


def _linear(rng, cls, **kw):
    b_std = None if rng.random() < 0.4 else float(rng.uniform(0.05, 0.5))
    std = rng.random() < 0.25
    return cls(**kw, w_std=float(rng.uniform(0.8, 1.6)), b_std=b_std,
               parameterization="standard" if std else "ntk", width=3)


def _conv(rng, size, same=False):
    d = len(size)
    k = tuple(int(rng.integers(1, 4)) for _ in range(d))
    pad = "SAME" if same else str(rng.choice(["SAME", "VALID", "CIRCULAR"]))
    if pad == "VALID" and any(kk > n for kk, n in zip(k, size)):
        pad = "SAME"
    strides = None if same or rng.random() < 0.6 else \
        tuple(int(rng.integers(1, 3)) for _ in range(d))
    layer = _linear(rng, nk.Conv, filter_shape=k, strides=strides, padding=pad)
    return layer, layer.output_spatial(size, "")


def _residual(rng, size, depth=0):
    """A block x + f(x) (+ g(x)) whose branches keep the spatial shape; its input and
    output are Gaussian (after a Conv)."""
    n = int(rng.integers(2, 4))
    branches = []
    for b in range(n):
        if b == n - 1 and rng.random() < 0.7:
            branches.append(nk.Identity())
            continue
        layers = [ACTS[rng.integers(0, 6)]()]
        conv, _ = _conv(rng, size, same=True)
        layers.append(conv)
        if depth == 0 and rng.random() < 0.3:
            layers.append(_residual(rng, size, depth + 1))
        if rng.random() < 0.3:
            layers.append(nk.LayerNorm(eps=float(rng.choice([1e-12, 0.1]))))
        branches.append(nk.serial(*layers))
    return nk.serial(nk.FanOut(n), nk.parallel(*branches), nk.FanInSum())


def random_architecture(rng, size, pool):
    """A random valid network on inputs of spatial shape ``size``; ``pool``: may pool
    (AvgPool, GlobalAvgPool: all pixel pairs), else a Flatten readout (same-position
    pairs)."""
    layers = []
    conv, size = _conv(rng, size)
    layers.append(conv)
    for depth in range(int(rng.integers(1, 4))):
        if rng.random() < 0.4:
            layers.append(_residual(rng, size))
        if rng.random() < 0.25:
            layers.append(nk.LayerNorm(eps=float(rng.choice([1e-12, 0.5]))))
        layers.append(ACTS[rng.integers(0, len(ACTS))]())
        if pool and rng.random() < 0.5 and min(size) >= 2:
            w = tuple(int(rng.integers(1, min(3, min(size)) + 1)) for _ in size)
            s = None if rng.random() < 0.5 else tuple(int(rng.integers(1, 3)) for _ in size)
            p = nk.AvgPool(w, strides=s, padding=str(rng.choice(["VALID", "SAME"])))
            layers.append(p)
            size = p.output_spatial(size, "")
        conv, size = _conv(rng, size)
        layers.append(conv)
    layers.append(nk.GlobalAvgPool() if pool and rng.random() < 0.7 else nk.Flatten())
    layers.append(_linear(rng, nk.Dense))
    if rng.random() < 0.5:
        layers += [ACTS[rng.integers(0, len(ACTS))](), _linear(rng, nk.Dense)]
    return nk.serial(*layers)


def _case(seed):
    rng = np.random.default_rng(1000 + seed)
    shape = SHAPES[seed % len(SHAPES)]
    net = random_architecture(rng, shape[:-1], pool=seed % 3 != 0)
    return net, rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("seed", range(24))
def test_compiled_equals_reference(seed):
    net, X, Z = _case(seed)
    assert unsupported_layer(net) is None, net
    for B in (Z, None):
        ref = net.kernels(X, B, backend="reference")
        got = net.kernels(X, B, backend="compiled")
        assert _rel(got.nngp, ref.nngp) <= 1e-12, net
        assert _rel(got.ntk, ref.ntk) <= 1e-12, net
        B32 = None if B is None else B.astype(np.float32)
        got32 = net.kernels(X.astype(np.float32), B32, backend="compiled")
        assert got32.nngp.dtype == np.float32
        assert _rel(got32.nngp, ref.nngp) <= 3e-5, net
        assert _rel(got32.ntk, ref.ntk) <= 3e-5, net
        if B is None:
            for k, diag in ((got.nngp, net.nngp_diag(X)), (got.ntk, net.ntk_diag(X))):
                assert np.array_equal(k, k.T)
                assert np.array_equal(np.diag(k), diag)


@pytest.mark.parametrize("seed", range(0, 24, 3))
def test_compiled_self_pass_equals_reference(seed):
    net, X, _ = _case(seed)
    plan = NetworkPlan(net, X.shape[1:])
    for want_ntk in (True, False):
        got = CompiledNetworkEngine(n_jobs=2).variances(plan, X, want_ntk)
        ref = NetworkReferenceEngine().variances(plan, X, want_ntk)
        assert len(got.tapes) == len(ref.tapes)
        for a, b in zip(got.tapes, ref.tapes):
            assert a.shape == b.shape
            assert _rel(a, b) <= 1e-13
        assert _rel(got.nngp, ref.nngp) <= 1e-13
        if want_ntk:
            assert _rel(got.ntk, ref.ntk) <= 1e-13
        else:
            assert got.ntk is None


def test_generator_covers_the_layer_set():
    """The drawn networks use every layer type (so the tests above can fail)."""
    seen = set()

    def walk(layer):
        seen.add(type(layer).__name__)
        for child in getattr(layer, "layers", ()) or ():
            walk(child)
        for child in getattr(layer, "branches", ()) or ():
            walk(child)
        if type(layer).__name__ == "Elementwise":
            seen.add(type(layer.activation).__name__)

    for seed in range(24):
        walk(_case(seed)[0])
    for name in ("Conv", "Dense", "AvgPool", "GlobalAvgPool", "Flatten", "FanOut",
                 "Parallel", "FanInSum", "LayerNorm", "ReLU", "Erf", "GELU", "Abs"):
        assert name in seen, name
