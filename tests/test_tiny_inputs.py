"""Tiny inputs (issue 17): nothing silently wrong.

A ReLU network without bias on rows of norm 1e-12 (float32) or 1e-90 (float64) gave
17-25 % wrong kernels in both backends: the variance products q q' underflowed and
the angle between the inputs was lost.  Positively homogeneous networks without bias
satisfy K(a x, b z) = a b K(x, z) (a, b > 0), so the exact answer is the kernel of
the rows scaled to unit size, multiplied back: that is the reference here.  Where no
such identity holds (a bias, quadrature activations) and the result would be wrong,
the call must raise an error naming the row.
"""

import os

import numpy as np
import pytest

import ntkfast as nk
from conftest import requires_compiled

BACKENDS = [pytest.param("compiled", marks=requires_compiled), "reference"]
HOMOGENEOUS = [nk.ReLU(), nk.LeakyReLU(0.2), nk.Abs(), nk.ABReLU(-0.3, 2.0), nk.Identity()]
#: row norms per dtype: tiny, tinier, and rows whose entries are subnormal numbers
SCALES = {np.float32: [1e-12, 1e-30, 3e-40], np.float64: [1e-90, 1e-200, 1e-310]}
#: relative tolerances: float32 rounding (the reference backend's textbook angle in
#: float32 loses a few more digits than the compiled engine), 1e-12 in float64
RTOL = {np.float32: 2e-6, np.float64: 1e-12}
RTOL_REFERENCE_F32 = 1e-4


def unit_rows(n, d, seed=0):
    U = np.random.default_rng(seed).standard_normal((n, d))
    return U / np.linalg.norm(U, axis=1, keepdims=True)


def tiny_inputs(dtype, scales, seed=0):
    """Rows of the given norms (cycled), a zero row and a unit row, in ``dtype``."""
    U = unit_rows(len(scales) * 2 + 2, 5, seed)
    s = np.array(list(scales) * 2 + [1.0, 0.0])
    return (U * s[:, None]).astype(dtype)


def exact_kernels(net, X, Z=None):
    """(Σ, Θ) in float64 from rows scaled exactly to max |x| in [0.5, 1) (all normal),
    computed by the float64 reference backend and scaled back: K(x, z) = K(2^a x, 2^b z)
    · 2^(−a−b) for homogeneous networks without bias."""
    def scaled(A):
        A = np.asarray(A, dtype=np.float64)
        m = np.abs(A).max(axis=1)
        _, e = np.frexp(np.where(m > 0, m, 1.0))
        return np.ldexp(A, -e[:, None]), e

    Xs, ex = scaled(X)
    Zs, ez = (Xs, ex) if Z is None else scaled(Z)
    S, T = net.kernels(Xs, None if Z is None else Zs, backend="reference", dtype="float64")
    E = ex[:, None] + ez[None, :]
    return np.ldexp(S, E), np.ldexp(T, E)


def assert_close(K, ref, dtype, rtol=None):
    """|K − ref| <= rtol |ref| + 2 subnormal units of ``dtype`` (results below the
    normal range are only representable to that absolute accuracy)."""
    K = np.asarray(K, dtype=np.float64)
    atol = 2 * float(np.finfo(dtype).smallest_subnormal)
    err = np.abs(K - ref)
    bad = err > (rtol or RTOL[dtype]) * np.abs(ref) + atol
    assert not bad.any(), (f"max relative error "
                           f"{np.max(err / np.maximum(np.abs(ref), atol)):.3g} at "
                           f"{np.argwhere(bad)[0]}: {K[bad][:3]} vs {ref[bad][:3]}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", HOMOGENEOUS, ids=repr)
def test_tiny_rows_of_homogeneous_networks_are_exact(act, dtype, backend):
    X = tiny_inputs(dtype, SCALES[dtype])
    rtol = RTOL_REFERENCE_F32 if (backend, dtype) == ("reference", np.float32) else None
    for net in (nk.MLP(depth=3, activation=act),
                nk.MLP(depth=2, activation=act, w_std=1.3, parameterization="standard",
                       width=64)):
        S, T = net.kernels(X, backend=backend)
        refS, refT = exact_kernels(net, X)
        assert_close(S, refS, dtype, rtol)
        assert_close(T, refT, dtype, rtol)
        # the diagonal methods: exact too, and (compiled) the same bits as K(X, X)
        assert_close(net.ntk_diag(X), np.diag(refT), dtype)
        assert_close(net.nngp_diag(X), np.diag(refS), dtype)
        if backend == "compiled":
            assert np.array_equal(net.ntk_diag(X), np.diag(T))
            assert np.array_equal(net.nngp_diag(X), np.diag(S))
        zero = len(X) - 1
        assert not S[zero].any() and not T[:, zero].any()      # the zero row: exactly 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_issue_example_and_cross_kernels(dtype, backend):
    net = nk.MLP(depth=3, activation="relu")
    rtol = RTOL_REFERENCE_F32 if (backend, dtype) == ("reference", np.float32) else None
    s = SCALES[dtype][0]
    X = (unit_rows(6, 4) * s).astype(dtype)
    assert_close(net.ntk(X, backend=backend), exact_kernels(net, X)[1], dtype, rtol)
    # tiny Z against normal X, and the other way round
    Xn = unit_rows(5, 4, seed=1).astype(dtype)
    assert_close(net.ntk(Xn, X, backend=backend), exact_kernels(net, Xn, X)[1], dtype, rtol)
    assert_close(net.nngp(X, Xn, backend=backend), exact_kernels(net, X, Xn)[0], dtype,
                 rtol)


def test_rows_keep_their_bits_when_nothing_is_tiny():
    """Rows inside the safe range are not touched: same bits with or without tiny rows
    beside them (same shapes, so the same GEMM)."""
    net = nk.MLP(depth=3, activation="relu")
    X = unit_rows(20, 6)
    plain = net.ntk(np.vstack([X, X[:2]]))
    mixed = net.ntk(np.vstack([X, 1e-200 * X[:2]]))
    assert np.array_equal(mixed[:20, :20], plain[:20, :20])


def test_out_of_core_tiny_rows_match_in_memory(tmp_path):
    net = nk.MLP(depth=2, activation="relu")
    X = tiny_inputs(np.float32, SCALES[np.float32])
    path = str(tmp_path / "K.npy")
    K = net.ntk(X, out=path, tile=3)
    assert np.array_equal(np.load(path), net.ntk(X, tile=3))
    assert_close(K, exact_kernels(net, X)[1], np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_network_with_shrinking_variance(backend):
    """ReLU with w_std=1 halves the variance per layer: at depth 80 the float32
    variances underflowed (33 % error); now exact; past the float32 range an error."""
    X = unit_rows(6, 5).astype(np.float32)
    net = nk.MLP(depth=80, activation="relu")
    ref = net.ntk(X.astype(np.float64), backend="reference")
    # float32 rounding accumulated over 80 layers (~1e-5; it was 0.33 before)
    assert_close(net.ntk(X, backend=backend), ref, np.float32, rtol=1e-4)
    with pytest.raises(ValueError, match=r"depth: .*depth 150 with w_std=1.*float64"):
        nk.MLP(depth=150, activation="relu").ntk(X, backend=backend)
    with pytest.raises(ValueError, match=r"depth: "):
        nk.MLP(depth=150, activation="relu").ntk_diag(X)
    assert np.isfinite(nk.MLP(depth=150, activation="relu").ntk(X.astype(np.float64))).all()


def test_bias_keeps_tiny_inputs_accurate():
    """With a (not tiny) bias every variance is >= σ_b²: nothing to do, accurate."""
    net = nk.MLP(depth=3, activation="relu", b_std=0.1)
    X = tiny_inputs(np.float32, SCALES[np.float32])
    ref = net.ntk(X.astype(np.float64), backend="reference")
    assert np.allclose(net.ntk(X), ref, rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype,b_std,scale", [(np.float32, 1e-10, 1e-12),
                                               (np.float64, 1e-80, 1e-90)])
def test_tiny_bias_and_tiny_inputs_are_rejected(dtype, b_std, scale):
    """ReLU with a bias is not homogeneous: there was a 3e-4 error in float32, 7e-4 in
    float64 (against mpmath), silently.  Now an error naming the row and the fix."""
    net = nk.MLP(depth=3, activation="relu", b_std=b_std)
    X = unit_rows(4, 5).astype(dtype)
    Z = X.copy()
    Z[2] *= scale
    with pytest.raises(ValueError, match=r"Z: row 2 is too small .*rescale the inputs "
                                         r"and b_std together"):
        net.ntk(X, Z)
    with pytest.raises(ValueError, match=r"X: row 2 is too small"):
        net.ntk_diag(Z)
    with pytest.raises(ValueError, match=r"X: row 2 is too small"):
        nk.MLP(depth=1, activation="relu", b_std=0.0, parameterization="standard",
               width=8).ntk(Z)


def test_quadrature_activations_reject_variances_below_float64_range():
    """Tanh/SiLU... form q q' in float64: rows of norm 1e-90 gave 67-75 % errors."""
    net = nk.MLP(depth=2, activation="tanh")
    X = unit_rows(3, 4)
    X[1] *= 1e-90
    with pytest.raises(ValueError, match=r"X: row 1 is too small .*Tanh"):
        net.ntk(X, backend="reference")
    X[1] *= 1e60  # norm 1e-30: fine
    assert np.isfinite(net.ntk(X, backend="reference")).all()


def test_smooth_activations_are_accurate_at_any_scale():
    """Erf and GELU need no angle: at norms 1e-90 they match a 40-digit recursion."""
    mpmath = pytest.importorskip("mpmath")
    from test_precision_mpmath import mp_kernels

    X = unit_rows(3, 4) * 1e-90
    for act in (nk.Erf(), nk.GELU()):
        net = nk.MLP(depth=3, activation=act)
        S, T = net.kernels(X, backend="reference")
        for i in range(3):
            for j in range(3):
                s, t = mp_kernels(net, X[i], X[j])
                assert abs(mpmath.mpf(float(T[i, j])) - t) <= 1e-13 * abs(t)
                assert abs(mpmath.mpf(float(S[i, j])) - s) <= 1e-13 * abs(s)


def test_mixed_scales_in_one_row_block():
    """Rows of very different norms in one block, each scaled on its own."""
    net = nk.MLP(depth=4, activation="relu")
    U = unit_rows(6, 3)
    X = U * np.array([1e-300, 1e-150, 1.0, 1e50, 1e-320, 3.0])[:, None]
    S, T = net.kernels(X)
    refS, refT = exact_kernels(net, X)
    assert_close(S, refS, np.float64)
    assert_close(T, refT, np.float64)
    assert os.environ.get("NTKFAST_NEVER_SET") is None
