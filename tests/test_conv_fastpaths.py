"""The compiled conv engine's special paths against the NumPy reference backend: the
same-position Conv from zero-padded copies (window shapes, paddings and image sizes
that make every output an edge case), the self pass's symmetric half-planes (slots
completed by mirroring before pooling, GAP, LayerNorm, circular Conv, FanInSum of a
half and a complete slot), and the per-thread workspace the module docstring states."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends.compiled_network import CompiledNetworkEngine, TILE_ELEMS
from ntkfast.backends.reference_network import NetworkPlan


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _check(net, X, Z=None):
    """compiled = reference (<= 1e-12 in float64, 1e-5 in float32); K(X, X) exactly
    symmetric with the *_diag diagonal, bitwise."""
    ref = net.kernels(X, Z, backend="reference")
    got = net.kernels(X, Z, backend="compiled")
    assert _rel(got.nngp, ref.nngp) <= 1e-12
    assert _rel(got.ntk, ref.ntk) <= 1e-12
    X32 = X.astype(np.float32)
    got32 = net.kernels(X32, None if Z is None else Z.astype(np.float32),
                        backend="compiled")
    assert _rel(got32.nngp, ref.nngp) <= 1e-5
    assert _rel(got32.ntk, ref.ntk) <= 1e-5
    if Z is None:
        for k, diag in ((got.nngp, net.nngp_diag(X)), (got.ntk, net.ntk_diag(X))):
            assert np.array_equal(k, k.T)
            assert np.array_equal(np.diag(k), diag)


@pytest.mark.parametrize("shape", [(7, 5, 2), (2, 3, 1), (1, 9, 2), (6, 1, 3)])
def test_same_position_conv_edges(shape):
    """Flatten readouts (same-position pixel pairs): windows wider than the image, even
    windows (SAME pads more on one side), VALID, a strided and a circular Conv between
    (the general path), images of one row or one column."""
    rng = np.random.default_rng(sum(shape))
    h, w, _ = shape
    net = nk.serial(nk.Conv((5, 4), w_std=1.3, b_std=0.2), nk.ReLU(),
                    nk.Conv((2, 2), w_std=1.1, padding="SAME"), nk.Erf(),
                    nk.Conv((min(h, 2), min(w, 3)), w_std=1.2, padding="VALID"), nk.ReLU(),
                    nk.Conv((3, 3), w_std=1.4, b_std=0.1, padding="CIRCULAR"), nk.GELU(),
                    nk.Conv((3, 3), w_std=1.2, strides=(2, 1), width=8), nk.ReLU(),
                    nk.Conv((1, 1), w_std=1.0, parameterization="standard"), nk.ReLU(),
                    nk.Flatten(), nk.Dense(w_std=1.1))
    X = rng.standard_normal((4,) + shape)
    Z = rng.standard_normal((3,) + shape)
    _check(net, X)
    _check(net, X, Z)


def _conv(k=3, **kw):
    return nk.Conv((k, k), w_std=1.4, b_std=0.1, **kw)


@pytest.mark.parametrize("case", ["mixed_fanin", "circular", "layernorm", "copy_half"])
def test_self_pass_half_planes(case):
    """Pooling networks (all pixel pairs) whose self pass completes its half-plane
    slots in each way: a FanInSum of a Conv branch (half) and a pooling branch
    (complete), a circular Conv after an activation, LayerNorm after a Conv, a FanOut
    of a half slot into two Conv branches."""
    rng = np.random.default_rng(5)
    if case == "mixed_fanin":
        body = [_conv(), nk.ReLU(), _conv(), nk.FanOut(2),
                nk.parallel(nk.serial(nk.ReLU(), _conv()),
                            nk.AvgPool((2, 2), strides=(1, 1), padding="SAME")),
                nk.FanInSum(), nk.ReLU()]
    elif case == "circular":
        body = [_conv(), nk.ReLU(), _conv(padding="CIRCULAR"), nk.ReLU(), _conv(k=2)]
    elif case == "layernorm":
        body = [_conv(), nk.ReLU(), _conv(), nk.LayerNorm(eps=0.1), nk.ReLU()]
    else:
        body = [_conv(), nk.ReLU(), nk.FanOut(2),
                nk.parallel(nk.serial(_conv(), nk.ReLU(), _conv()),
                            nk.serial(_conv(k=1), nk.Erf(), _conv(k=2))),
                nk.FanInSum(), nk.AvgPool((2, 2), strides=(1, 1), padding="SAME")]
    net = nk.serial(*body, nk.GlobalAvgPool(), nk.Dense(w_std=1.2))
    X = rng.standard_normal((4, 6, 5, 2))
    _check(net, X)


def test_workspace_myrtle5():
    """One thread's buffers for Myrtle-5 on 32x32 images: the four P^2 states (Sigma,
    Theta and the two spares; the one-column GEMM tile inside a spare) and well under
    1 MiB more."""
    from ntkfast import _conv_engine
    from ntkfast.architecture_spec import parse_architecture
    plan = NetworkPlan(parse_architecture("myrtle5"), (32, 32, 3))
    prog = CompiledNetworkEngine().program(plan)
    assert prog.full and prog.n_slots == 1
    P2 = (32 * 32) ** 2
    cols = max(1, TILE_ELEMS // P2)
    assert cols == 1
    for itemsize in (4, 8):
        got = _conv_engine.workspace_bytes(prog.prog(None), cols, itemsize)
        assert 4 * P2 * itemsize <= got < 4 * P2 * itemsize + 2 ** 20
        # a multi-column tile is separate
        assert _conv_engine.workspace_bytes(prog.prog(None), 2, itemsize) >= got + 2 * P2 * itemsize - 2 ** 10
