"""pytest-benchmark benchmarks of the engine (not run in CI: CI runs tests/ only).

    pytest bench/test_bench_engine.py --benchmark-enable --benchmark-columns=min,median

Compare ``test_ntk_*`` with ``test_syrk_*`` of the same size: the ratio is the
cost of the recursion on top of forming the Gram matrix.
"""

import numpy as np
import pytest
from scipy.linalg import blas

import ntkfast as nk

N = 4000


@pytest.fixture(scope="module", params=[(784, np.float32), (784, np.float64),
                                        (16, np.float32), (16, np.float64)],
                ids=lambda p: f"D{p[0]}-{np.dtype(p[1]).name}")
def data(request):
    d, dtype = request.param
    return np.random.default_rng(0).standard_normal((N, d)).astype(dtype)


def test_syrk(benchmark, data):
    f = blas.dsyrk if data.dtype == np.float64 else blas.ssyrk
    benchmark(f, 1.0, data)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu"])
def test_ntk_depth3(benchmark, data, act):
    net = nk.MLP(depth=3, activation=act, b_std=0.1)
    benchmark(net.ntk, data)


def test_kernels_depth3_relu(benchmark, data):
    net = nk.MLP(depth=3, activation="relu", b_std=0.1)
    benchmark(net.kernels, data)


@pytest.mark.parametrize("depth", [1, 10, 20])
def test_ntk_depth_sweep(benchmark, data, depth):
    net = nk.MLP(depth=depth, activation="relu", b_std=0.1)
    benchmark(net.ntk, data)


@pytest.mark.parametrize("isa", ["x86-64-v4", "x86-64-v3"])
def test_ntk_depth3_relu_isa(benchmark, data, isa):
    """The tile kernel at each instruction-set level (skipped where the CPU lacks it)."""
    from ntkfast.backends import compiled
    if isa not in compiled.isa_levels():
        pytest.skip(f"{isa} not available ({compiled.isa_levels()})")
    previous = compiled.set_isa(isa)
    try:
        net = nk.MLP(depth=3, activation="relu", b_std=0.1)
        benchmark(net.ntk, data)
    finally:
        compiled.set_isa(previous)


def test_sweep_pass_depths1to5_frozen0to2(benchmark, data):
    """Every (depth, k) kernel of a sweep in one compiled pass; compare with
    test_kernels_depth5_relu (bench/sweep_speedup.py prints the ratio)."""
    net = nk.MLP(depth=5, activation="relu", b_std=0.1)
    benchmark(net.kernels, data, depths=[1, 2, 3, 4, 5], frozen_layers=[0, 1, 2])


def test_kernels_depth5_relu(benchmark, data):
    net = nk.MLP(depth=5, activation="relu", b_std=0.1)
    benchmark(net.kernels, data)
