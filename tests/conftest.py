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
