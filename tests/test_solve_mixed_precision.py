"""Mixed-precision KernelRegression: float32 factor, float64 answer (issue 21 item 1).

References are independent of the code under test: a direct float64 Cholesky
solve (``mixed_precision=False``), and for the badly conditioned case a float64
solve refined with residuals in extended precision (``np.longdouble``).
"""

import logging

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.solve import KernelRegression, MixedPrecision, MixedPrecisionInfo
from ntkfast.solve import mixed_precision as mp


@pytest.fixture(scope="module")
def ntk_problem():
    """A depth-3 ReLU NTK on N = 2000 points in 2-D: condition ~4e6 at ridge 1e-4."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 2))
    net = nk.MLP(depth=3, activation="relu")
    K = net.ntk(X, dtype=np.float64)
    Y = np.stack([np.sin(X @ rng.standard_normal(2)), np.cos(X[:, 0])], axis=1)
    return net, X, K, Y


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _backward_error(K, ridge, x, y):
    """η = ‖y − (K + ridge I)x‖∞ / (‖K + ridge I‖∞ ‖x‖∞ + ‖y‖∞), computed here."""
    A = K + ridge * np.eye(K.shape[0])
    return np.max(np.abs(y - A @ x)) / (np.max(np.abs(A).sum(1)) * np.max(np.abs(x))
                                        + np.max(np.abs(y)))


@pytest.mark.parametrize("ridge", [1e-2, 1e-4])
def test_matches_float64_solve_all_sources(ntk_problem, tmp_path, ridge):
    net, X, K, Y = ntk_problem
    ref = KernelRegression(K, Y, ridge=ridge, mixed_precision=False)
    assert ref.mixed_precision_info is None
    path64 = tmp_path / "K64.npy"
    np.save(path64, K)
    K32 = K.astype(np.float32)
    fits = {
        "self": KernelRegression(K, Y, ridge=ridge, mixed_precision=True),
        "file": KernelRegression(K32, Y, ridge=ridge,
                                 mixed_precision=MixedPrecision(float64_kernel=str(path64))),
        "network": KernelRegression(K32, Y, ridge=ridge,
                                    mixed_precision=MixedPrecision(network=net, X=X)),
    }
    for name, kr in fits.items():
        info = kr.mixed_precision_info
        assert isinstance(info, MixedPrecisionInfo), name
        assert info.converged and info.residual <= info.tol, (name, info)
        assert info.tol == pytest.approx(np.sqrt(2000) * np.finfo(float).eps)
        assert kr.alpha.dtype == np.float64 and kr.alpha.shape == Y.shape
        assert _rel(kr.alpha, ref.alpha) <= 1e-8, name
        assert 0 <= info.forward_error <= 1e-8, name
        # the reported residual is the true one of the returned alpha
        for j in range(Y.shape[1]):
            eta = _backward_error(K, ridge, kr.alpha[:, j], Y[:, j])
            assert eta <= 2 * info.residual + 1e-17, name
        assert kr.factor[0].dtype == np.float32
        assert "mixed_precision=True" in repr(kr)
        Z = X[:7] + 0.1
        np.testing.assert_allclose(kr.predict(net.ntk(Z, X, dtype=np.float64)),
                                   ref.predict(net.ntk(Z, X, dtype=np.float64)),
                                   rtol=1e-7, atol=1e-8 * np.abs(ref.predict(
                                       net.ntk(Z, X, dtype=np.float64))).max())


def test_network_source_factors_float32_memmap_in_place(ntk_problem, tmp_path):
    """overwrite=True on a float32 kernel file written by out=: spotrf in the file."""
    net, X, K, Y = ntk_problem
    X = X[:600]
    K = K[:600, :600]
    y = Y[:600, 0]
    path = tmp_path / "K32.npy"
    net.ntk(X, dtype=np.float32, out=str(path))
    mm = np.load(path, mmap_mode="r+")
    kr = KernelRegression(mm, y, ridge=1e-3, overwrite=True,
                          mixed_precision=MixedPrecision(network=net, X=X))
    assert np.shares_memory(kr.factor[0], mm)
    assert kr.alpha.shape == (600,)
    ref = KernelRegression(K, y, ridge=1e-3, mixed_precision=False)
    assert _rel(kr.alpha, ref.alpha) <= 1e-8
    with pytest.raises(ValueError, match="ridge_path"):
        kr.ridge_path([1e-3])


def test_float32_input_is_solved_exactly_as_given():
    """mixed_precision=True on float32 K: the float64 solution of that float32 matrix."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((300, 500))
    K32 = (G @ G.T / 500).astype(np.float32)
    y = rng.standard_normal(300)
    kr = KernelRegression(K32, y, ridge=1e-3, mixed_precision=True)
    ref = KernelRegression(K32.astype(np.float64), y, ridge=1e-3, mixed_precision=False)
    assert _rel(kr.alpha, ref.alpha) <= 1e-10
    plain = KernelRegression(K32, y, ridge=1e-3)  # default keeps the float32 route
    assert plain.mixed_precision_info is None and plain.alpha.dtype == np.float32


def test_auto_route_when_float64_does_not_fit(monkeypatch, caplog, ntk_problem):
    net, X, K, Y = ntk_problem
    K, y = K[:300, :300], Y[:300]
    assert KernelRegression(K, y, ridge=1e-3).mixed_precision_info is None  # fits: float64
    monkeypatch.setattr(mp, "available_memory", lambda: 300 * 300 * 8)  # 0.8 x this < need
    with caplog.at_level(logging.INFO, logger="ntkfast.solve"):
        kr = KernelRegression(K, y, ridge=1e-3)
    info = kr.mixed_precision_info
    assert info is not None and info.reason.startswith("auto")
    assert any("mixed precision" in r.getMessage() and "auto" in r.getMessage()
               for r in caplog.records)
    ref = KernelRegression(K, y, ridge=1e-3, mixed_precision=False)
    assert _rel(kr.alpha, ref.alpha) <= 1e-8


def test_float32_not_positive_definite_preconditioner_jitter_only():
    """A matrix PD in float64 but not after rounding to float32: jitter enters M only.

    Such a matrix has κ ≳ √N/eps₃₂ (here ~4e9), so no float64 solver is accurate to
    1e-8; the check is: backward error at rounding level, and a forward error no
    worse than the direct float64 solve's, both against the float64 solve refined
    with np.longdouble residuals (κ·eps₆₄ < 1, so that converges).
    """
    rng = np.random.default_rng(3)
    n, r, ridge = 400, 10, 1e-7
    G = rng.standard_normal((n, r))
    K = G @ G.T / r
    assert np.linalg.eigvalsh(K.astype(np.float32).astype(float) + ridge * np.eye(n))[0] < 0
    y = rng.standard_normal(n)
    A = K + ridge * np.eye(n)
    x = np.linalg.solve(A, y)
    Al, yl = A.astype(np.longdouble), y.astype(np.longdouble)
    for _ in range(4):
        x = x + np.linalg.solve(A, (yl - Al @ x.astype(np.longdouble)).astype(float))
    with pytest.warns(nk.solve.JitterWarning, match="preconditioner only"):
        kr = KernelRegression(K, y, ridge=ridge, mixed_precision=MixedPrecision(max_iter=60))
    info = kr.mixed_precision_info
    assert info.preconditioner_jitter > 0 and kr.jitter == 0.0
    assert info.converged
    assert _backward_error(K, ridge, kr.alpha, y) <= 2 * info.residual + 1e-17
    direct = KernelRegression(K, y, ridge=ridge, mixed_precision=False)
    assert direct.jitter == 0.0
    assert _rel(kr.alpha, x) <= max(10 * _rel(direct.alpha, x), 1e-8)


@pytest.mark.filterwarnings("ignore::ntkfast.solve.JitterWarning")
def test_non_convergence_warns_and_reports():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((200, 20))
    K = G @ G.T / 20
    with pytest.warns(nk.solve.ConvergenceWarning, match="backward error"):
        kr = KernelRegression(K, rng.standard_normal(200), ridge=1e-9,
                              mixed_precision=MixedPrecision(max_iter=1))
    info = kr.mixed_precision_info
    assert not info.converged and info.residual > info.tol and info.n_iter == 1


@pytest.mark.parametrize("bad, match", [
    ("yes", "mixed_precision: expected"),
    (MixedPrecision, None),
])
def test_option_validation(bad, match):
    K = np.eye(3)
    if match is None:
        for kw, m in [(dict(network=object()), "both network"),
                      (dict(kind="foo"), "kind"), (dict(tol=2.0), "tol"),
                      (dict(max_iter=0), "max_iter"),
                      (dict(network=object(), X=np.ones((3, 2)), float64_kernel=K), "not both")]:
            with pytest.raises(ValueError, match=m):
                MixedPrecision(**kw)
        return
    with pytest.raises(ValueError, match=match):
        KernelRegression(K, np.ones(3), mixed_precision=bad)


def test_jitter_retry_in_place_restores_the_file(tmp_path):
    """A failed in-place spotrf is undone from the untouched triangle before the jitter:
    the same factor, hence the same α, as the copy route."""
    rng = np.random.default_rng(3)
    n, r, ridge = 400, 10, 1e-7
    G = rng.standard_normal((n, r))
    K = G @ G.T / r
    y = rng.standard_normal(n)
    path = tmp_path / "K32.npy"
    np.save(path, K.astype(np.float32))
    mm = np.load(path, mmap_mode="r+")
    opt = MixedPrecision(float64_kernel=K, max_iter=60)
    with pytest.warns(nk.solve.JitterWarning, match="preconditioner only"):
        inplace = KernelRegression(mm, y, ridge=ridge, overwrite=True, mixed_precision=opt)
    with pytest.warns(nk.solve.JitterWarning, match="preconditioner only"):
        copied = KernelRegression(K, y, ridge=ridge, mixed_precision=opt)
    assert np.shares_memory(inplace.factor[0], mm)
    np.testing.assert_array_equal(np.tril(inplace.factor[0]), np.tril(copied.factor[0]))
    np.testing.assert_array_equal(inplace.alpha, copied.alpha)


def test_estimator_form_takes_the_mixed_route(ntk_problem):
    """KernelRegression(ridge=, mixed_precision=).fit(K, y) = the constructor form."""
    net, X, K, Y = ntk_problem
    ref = KernelRegression(K, Y, ridge=1e-3, mixed_precision=False)
    est = KernelRegression(ridge=1e-3, mixed_precision=MixedPrecision(network=net, X=X))
    assert est.fit(K, Y) is est
    assert est.mixed_precision_info is not None and est.mixed_precision_info.converged
    assert _rel(est.alpha, ref.alpha) <= 1e-8
    assert "mixed_precision=True" in repr(est)
    # a later plain fit on the same estimator leaves no stale mixed-route report
    est.mixed_precision = False
    assert est.fit(K, Y).mixed_precision_info is None
