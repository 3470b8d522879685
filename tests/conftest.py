import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends import compiled_available

ALL_ACTIVATIONS = [
    nk.ReLU(), nk.LeakyReLU(0.1), nk.Abs(), nk.ABReLU(-0.3, 2.0),
    nk.Erf(), nk.Erf(2.0, 0.5, 0.3), nk.GELU(), nk.Identity(),
]


def pytest_report_header(config):
    """Which ntkfast (installed, compiled?) and which BLAS kernels this run tests."""
    from threadpoolctl import threadpool_info
    blas = sorted({f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                   for i in threadpool_info() if i.get("user_api") == "blas"})
    return [f"ntkfast {nk.__version__} from {nk.__file__} (compiled: {compiled_available()})",
            f"BLAS: {', '.join(blas) or 'unknown'}"]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


requires_compiled = pytest.mark.skipif(not compiled_available(),
                                       reason="compiled extension not built")


#: the compiled FC engine's instruction-set levels (tests parametrize ``at_level`` over
#: these with ``indirect=True``)
ISA_LEVELS = ["x86-64-v4", "x86-64-v3", "baseline"]


@pytest.fixture
def at_level(request):
    """Run the test with the compiled engine forced to the level ``request.param`` (skip
    where this CPU lacks it), restoring the previous level afterwards."""
    compiled = pytest.importorskip("ntkfast.backends.compiled")
    level = request.param
    if level not in compiled.isa_levels():
        pytest.skip(f"{level} not available here ({compiled.isa_levels()})")
    previous = compiled.set_isa(level)
    try:
        yield level
    finally:
        compiled.set_isa(previous)


def assert_numba_matches_reference(net, X, Z, float32=True):
    """``net.kernels`` by the numba engine equals the reference backend (the
    activation's rule per element), X with itself and with Z, NNGP and NTK: ≤ 1e-12 of
    the matrix scale in float64 and (``float32``) ≤ 1e-5 in float32."""
    for Zi in (None, Z):
        k = net.kernels(X, Zi, backend="numba")
        r = net.kernels(X, Zi, backend="reference")
        for a, b in ((k.nngp, r.nngp), (k.ntk, r.ntk)):
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))
        if float32:
            k32 = net.kernels(X, Zi, backend="numba", dtype=np.float32)
            for a, b in ((k32.nngp, r.nngp), (k32.ntk, r.ntk)):
                assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))


def fill_both(eng, plan, X, Z, qx, qz, tile, jobs):
    """[(False, Σ, Θ) of X against Z, (True, Σ, Θ) of X with itself] by the compiled
    network engine's ``fill`` with the given tile and threads."""
    out = []
    for sym, Zb, qb in ((False, Z, qz), (True, X, qx)):
        S = np.empty((X.shape[0], Zb.shape[0]))
        T = np.empty_like(S)
        eng.fill(plan, X, Zb, S, T, symmetric=sym, dtype=np.float64, tile=tile,
                 n_jobs=jobs, qx=qx, qz=qb)
        out.append((sym, S, T))
    return out


def assert_fills_agree(results):
    """Every fill of :func:`fill_both`'s list equals the first of its kind to 1e-13 of
    the matrix scale."""
    for sym in (False, True):
        first = [r for r in results if r[0] is sym]
        for _, S, T in first[1:]:
            assert np.max(np.abs(S - first[0][1])) <= 1e-13 * np.max(np.abs(S))
            assert np.max(np.abs(T - first[0][2])) <= 1e-13 * np.max(np.abs(T))
