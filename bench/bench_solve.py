"""pytest-benchmark timings of the solver layer (not part of the CI test suite).

    pytest bench/bench_solve.py --runslow --benchmark-enable     # or NTKFAST_BENCH=1

Skipped unless asked: the repo's pytest config disables benchmarking by default,
and CI only collects ``tests/``.  For the issue's ratios use ``bench/solve_ratios.py``.
"""

import os

import numpy as np
import pytest
import scipy.linalg as sla

from ntkfast.solve import GradientFlow, KernelRegression

pytestmark = pytest.mark.slow

SIZES = [int(s) for s in os.environ.get("NTKFAST_BENCH_SIZES", "1000,2000").split(",")]


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    if not (request.config.getoption("--runslow", default=False)
            or os.environ.get("NTKFAST_BENCH")):
        pytest.skip("benchmark: run with --runslow (or NTKFAST_BENCH=1) and --benchmark-enable")


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 32))
    sq = (X * X).sum(1)[:, None] + (X * X).sum(1)[None, :] - 2.0 * (X @ X.T)
    K = np.exp(-np.maximum(sq, 0.0) / 64.0)
    K = 0.5 * (K + K.T) + 1e-6 * np.eye(n)
    return K, rng.standard_normal(n)


@pytest.mark.parametrize("n", SIZES)
def test_bare_cho_factor(benchmark, n):
    K, _ = _problem(n)
    benchmark(sla.cho_factor, K)


@pytest.mark.parametrize("n", SIZES)
def test_kernel_regression_fit(benchmark, n):
    K, y = _problem(n)
    benchmark(KernelRegression, K, y)


@pytest.mark.parametrize("n", SIZES)
def test_kernel_regression_fit_in_place(benchmark, n):
    K, y = _problem(n)
    benchmark.pedantic(lambda a: KernelRegression(a, y, overwrite=True),
                       setup=lambda: ((K.copy(),), {}), rounds=3)


@pytest.mark.parametrize("n", SIZES)
def test_loo_residuals(benchmark, n):
    K, y = _problem(n)
    reg = KernelRegression(K, y)
    benchmark(reg.loo_residuals)


@pytest.mark.parametrize("n", SIZES)
def test_bare_eigh(benchmark, n):
    K, _ = _problem(n)
    benchmark.pedantic(sla.eigh, args=(K,), rounds=1)


@pytest.mark.parametrize("n", SIZES)
def test_gradient_flow_100_times(benchmark, n):
    K, y = _problem(n)
    flow = GradientFlow(K, y, method="eigh")
    ts = np.concatenate([np.geomspace(1e-3, 1e4, 99), [np.inf]])
    benchmark(flow.predict, K[: n // 4], ts)


@pytest.mark.parametrize("n", SIZES)
def test_gradient_flow_krylov_100_times(benchmark, n):
    K, y = _problem(n)
    ts = np.geomspace(1e-3, 1e4, 100)
    benchmark.pedantic(lambda: GradientFlow(K, y, method="krylov").predict(K[: n // 4], ts),
                       rounds=1)


@pytest.mark.parametrize("n", SIZES)
def test_ridge_path_20(benchmark, n):
    K, y = _problem(n)
    reg = KernelRegression(K, y, ridge=1e-3)
    reg.ridge_path([1e-3])  # cache the eigendecomposition
    benchmark(reg.ridge_path, np.geomspace(1e-6, 1.0, 20), K[: n // 4])
