"""backend='cuda' (numba.cuda).  No GPU in CI: the kernels run under Numba's CUDA simulator
in a separate pytest process (NUMBA_ENABLE_CUDASIM is read when numba is imported, and the
rest of the suite imports numba normally).  The ``test_sim_*`` tests run only in that
child process; ``test_simulator_suite`` launches it."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ntkfast as nk

numba = pytest.importorskip("numba")

IN_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim_only = pytest.mark.skipif(not IN_SIM, reason="runs in the CUDA-simulator subprocess")


@pytest.mark.skipif(IN_SIM, reason="this is the launcher")
def test_simulator_suite(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    # run from a scratch directory: the child imports the installed ntkfast (with its
    # compiled modules), not a source tree that may not have been built in place
    proc = subprocess.run([sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q",
                           "-k", "test_sim_", "-p", "no:cacheprovider"],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("\n")[-2]


@pytest.mark.skipif(IN_SIM, reason="needs the real numba.cuda")
def test_no_gpu_clear_error_and_auto_never_cuda():
    from ntkfast.backends import get_backend
    from ntkfast.backends.cuda import cuda_available
    for act in (nk.ReLU(), nk.Erf(), nk.activations.Tanh()):
        assert get_backend("auto", act).name != "cuda"
    if cuda_available():  # pragma: no cover - a machine with a GPU
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        nk.MLP(activation="relu").ntk(np.eye(3), backend="cuda")


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@sim_only
@pytest.mark.parametrize("act", [nk.ReLU(), nk.ABReLU(-0.3, 2.0), nk.Erf(2.0, 0.5, 0.3),
                                 nk.GELU(), nk.Identity()])
def test_sim_matches_cpu_engine(act):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((9, 5))
    Z = rng.standard_normal((6, 5))
    net = nk.MLP(depth=2, activation=act, w_std=1.1, b_std=0.2)
    for ZZ in (None, Z):
        a = net.kernels(X, ZZ, backend="cuda", dtype=np.float64)
        b = net.kernels(X, ZZ, backend="reference")
        c = net.kernels(X, ZZ, backend="auto")
        assert _rel(a.nngp, b.nngp) <= 1e-12 and _rel(a.ntk, b.ntk) <= 1e-12
        assert _rel(a.ntk, c.ntk) <= 1e-12
        if ZZ is None:
            assert np.array_equal(a.ntk, a.ntk.T)
            np.testing.assert_array_equal(np.diag(a.ntk), net.ntk_diag(X))


@sim_only
def test_sim_float32_standard_and_gemm_tiles():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((18, 21))   # > one 16×16 tile in rows and in d
    net = nk.MLP(depth=1, activation="relu", w_std=1.3, b_std=0.1,
                 parameterization="standard", width=32)
    a = net.kernels(X, backend="cuda", dtype=np.float32)
    b = net.kernels(X, backend="reference")
    assert a.ntk.dtype == np.float32
    assert _rel(a.ntk, b.ntk) < 1e-5 and _rel(a.nngp, b.nngp) < 1e-5
    from ntkfast.backends.cuda import _kernels
    gemm, _ = _kernels(np.float64)
    from numba import cuda
    Z = rng.standard_normal((17, 21))
    out = cuda.device_array((18, 17))
    gemm[(2, 2), (16, 16)](cuda.to_device(X), cuda.to_device(Z), out)
    np.testing.assert_allclose(out.copy_to_host(), X @ Z.T, rtol=1e-13, atol=1e-13)


@sim_only
def test_sim_unsupported_activation_clear_error():
    with pytest.raises(ValueError, match="no CUDA kernel for Tanh"):
        nk.MLP(activation="tanh").ntk(np.eye(2), backend="cuda")
