"""Bad input gets a clear error naming the argument; odd-but-valid input works."""

import numpy as np
import pytest

import ntkfast as nk


@pytest.fixture
def net():
    return nk.MLP(depth=2, b_std=0.1)


def test_nan_and_inf_name_the_row(net):
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X: row 3 .*NaN or inf"):
        net.ntk(X)
    Z = np.ones((4, 3))
    Z[0, 0] = np.inf
    Z[2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"Z: row 0 \(and 1 more\)"):
        net.ntk(np.ones((2, 3)), Z)
    with pytest.raises(ValueError, match="X: row 3"):
        net.ntk_diag(X)


@pytest.mark.parametrize("bad, err, msg", [
    (np.ones(5), ValueError, "2-D"),
    (np.ones((2, 3, 4)), ValueError, "2-D"),
    (np.ones((0, 3)), ValueError, "empty"),
    (np.ones((3, 0)), ValueError, "empty"),
    (np.array([["a", "b"]]), TypeError, "numeric"),
    (np.ones((2, 2), dtype=complex), TypeError, "complex"),
])
def test_bad_arrays(net, bad, err, msg):
    with pytest.raises(err, match=msg):
        net.nngp(bad)


def test_feature_mismatch(net):
    with pytest.raises(ValueError, match="Z: has 4 features but X has 3"):
        net.ntk(np.ones((2, 3)), np.ones((2, 4)))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="activation: unknown activation 'tanhh'.*'relu'"):
        nk.MLP(activation="tanhh")
    with pytest.raises(ValueError, match="w_std"):
        nk.MLP(w_std=-1.0)
    with pytest.raises(ValueError, match="w_std"):
        nk.MLP(w_std=float("nan"))
    with pytest.raises(ValueError, match="b_std"):
        nk.MLP(b_std=float("inf"))
    with pytest.raises(ValueError, match="depth"):
        nk.MLP(depth=-1)
    with pytest.raises(TypeError, match="depth"):
        nk.MLP(depth=2.5)
    with pytest.raises(ValueError, match="width: the 'standard' parameterization needs"):
        nk.MLP(parameterization="standard")
    with pytest.raises(ValueError, match="parameterization"):
        nk.MLP(parameterization="mup")
    with pytest.raises(ValueError, match="Erf: a must be finite"):
        nk.Erf(a=float("nan"))


def test_bad_options(net):
    X = np.ones((3, 2))
    with pytest.raises(TypeError, match="dtype"):
        net.ntk(X, dtype=np.int32)
    with pytest.raises(ValueError, match="backend: unknown backend 'gpu'"):
        net.ntk(X, backend="gpu")
    with pytest.raises(ValueError, match="n_jobs"):
        net.ntk(X, n_jobs=0)
    with pytest.raises(ValueError, match="tile"):
        net.ntk(X, tile=0)
    with pytest.raises(ValueError, match="out: .* shape"):
        net.ntk(X, out=np.empty((2, 2)))


def test_integer_fortran_and_strided_input(net, rng):
    Xi = rng.integers(-3, 4, size=(20, 5))
    ref = net.ntk(Xi.astype(np.float64))
    out = net.ntk(Xi)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
    Xf = np.asfortranarray(Xi.astype(np.float64))
    np.testing.assert_array_equal(net.ntk(Xf), ref)
    big = np.zeros((40, 10))
    big[::2, ::2] = Xi
    np.testing.assert_array_equal(net.ntk(big[::2, ::2]), ref)
    np.testing.assert_array_equal(net.ntk(Xi.tolist()), ref)


def test_dtype_follows_input_and_can_be_forced(net, rng):
    X = rng.standard_normal((10, 3))
    assert net.ntk(X.astype(np.float32)).dtype == np.float32
    assert net.ntk(X).dtype == np.float64
    assert net.ntk(X, dtype="float32").dtype == np.float32
    assert net.ntk(X.astype(np.float32), dtype=np.float64).dtype == np.float64


def test_inputs_too_large_for_the_dtype_are_rejected(net, rng):
    X = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="X: row 0 is too large for float64"):
        net.ntk(X * 1e200)
    with pytest.raises(ValueError, match="too large for float32 .*dtype='float64'"):
        net.ntk(X.astype(np.float32) * 1e25)
    with pytest.raises(ValueError, match="Z: row"):
        net.ntk(X, X * 1e200)
    with pytest.raises(ValueError, match="too large"):
        net.ntk_diag(X * 1e200)
    assert np.all(np.isfinite(net.ntk(X * 1e60)))           # large but representable
    assert np.all(np.isfinite(net.ntk(X * 1e-200)))         # tiny inputs are fine


def test_diag_methods_take_the_kernel_keywords(net, rng):
    X = rng.standard_normal((7, 3))
    out = np.empty(7)
    assert net.ntk_diag(X, out=out, n_jobs=1, tile=4, progress=False) is out
    np.testing.assert_array_equal(out, np.diag(net.ntk(X)))
    with pytest.raises(ValueError, match="out: the diagonal needs an array of shape"):
        net.nngp_diag(X, out=np.empty(6))
    with pytest.raises(ValueError, match="backend"):
        net.ntk_diag(X, backend="gpu")


# -- issue 17: the fault probe ------------------------------------------------------
def test_out_overlapping_an_input_is_rejected(rng):
    """net.ntk(X, out=X) read X while overwriting it: 31 % wrong values, silently."""
    net = nk.MLP(depth=2)
    X = rng.standard_normal((6, 6))
    ref = net.ntk(X)
    with pytest.raises(ValueError, match=r"out: the output array shares memory with X.*"
                                         r"separate output array"):
        net.ntk(X, out=X)
    np.testing.assert_array_equal(net.ntk(X), ref)             # X untouched
    Z = rng.standard_normal((6, 6))
    with pytest.raises(ValueError, match="shares memory with Z"):
        net.nngp(X, Z, out=Z)
    big = np.zeros((12, 6))
    big[:6] = X
    with pytest.raises(ValueError, match="shares memory with X"):
        net.ntk(big[:6], out=big[:6])
    # a disjoint part of the same buffer is fine
    out = net.ntk(big[:6], out=big[6:])
    assert out.base is big and np.allclose(out, ref, rtol=1e-12)


def test_kernels_pair_outputs_must_not_overlap(rng):
    net = nk.MLP(depth=2)
    X = rng.standard_normal((5, 3))
    buf = np.ones((5, 5))
    with pytest.raises(ValueError, match=r"out: the two output arrays \(nngp, ntk\) share"):
        net.kernels(X, out=(buf, buf))
    with pytest.raises(ValueError, match=r"out: the two output arrays \(nngp, ntk\) share"):
        net.kernels(X, out=(buf[:, :], buf.reshape(5, 5)))
    with pytest.raises(ValueError, match="shares memory with X"):
        net.kernels(buf, out=(np.empty((5, 5)), buf))
    S, T = net.kernels(X, out=(np.empty((5, 5)), np.empty((5, 5))))
    assert np.allclose(T, net.ntk(X), rtol=1e-12)


def test_huge_std_is_rejected_at_construction():
    """w_std ≳ 1e154 gave a bare OverflowError at compute time."""
    for name in ("w_std", "b_std"):
        with pytest.raises(ValueError, match=rf"{name}: must be below 1.34e\+154 .*variance"):
            nk.MLP(**{name: 1e155})
    nk.MLP(w_std=1e150)  # representable: accepted (the inputs' check decides later)


def test_depth_is_capped():
    """depth=10**8 ended in a MemoryError (or hours of work) that did not name depth."""
    with pytest.raises(ValueError, match=r"depth: at most 10000 hidden layers"):
        nk.MLP(depth=10**8)
    assert nk.MLP(depth=10_000).depth == 10_000


def test_out_of_memory_names_depth(monkeypatch):
    import ntkfast.outofcore.tiling

    def oom(*a, **k):
        raise MemoryError("Unable to allocate 3.81 TiB")

    monkeypatch.setattr(ntkfast.outofcore.tiling, "compute_gram", oom)
    with pytest.raises(MemoryError, match=r"depth-3 network on 4×4 kernels: the per-row "
                                          r"layer variances .*reduce depth"):
        nk.MLP(depth=3).ntk(np.ones((4, 2)))


def test_n_jobs_is_capped_at_the_cores(rng):
    """n_jobs=10**6 tried to allocate 3.81 TiB of per-thread scratch."""
    import os

    from ntkfast._validation import check_n_jobs
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert check_n_jobs(10**6) == ncpu
    assert check_n_jobs(None) == check_n_jobs(-1) == ncpu
    assert check_n_jobs(1) == 1 and check_n_jobs(-10**6) == 1
    X = rng.standard_normal((30, 4))
    np.testing.assert_allclose(nk.MLP(depth=2).ntk(X, n_jobs=10**6),
                               nk.MLP(depth=2).ntk(X, n_jobs=1), rtol=1e-13)


def test_unwritable_output_directory(tmp_path):
    """An output under /proc said 'needs 0.0 MB but only 0.0 MB is free'."""
    import os
    X = np.ones((3, 2))
    if os.path.isdir("/proc"):
        with pytest.raises(OSError, match=r"out: cannot create files in '/proc'.*not "
                                          r"writable"):
            nk.MLP().ntk(X, out="/proc/K.npy")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            pass  # root may write anyway: only /proc is checked then
        else:
            with pytest.raises(OSError, match="not writable"):
                nk.MLP().ntk(X, out=str(ro / "K.npy"))
    finally:
        os.chmod(ro, 0o755)
    assert not [p for p in os.listdir(tmp_path / "ro")]       # no probe file left behind


def test_out_path_that_is_a_mapped_input_is_rejected(tmp_path, rng):
    path = tmp_path / "X.npy"
    np.save(path, rng.standard_normal((4, 4)))
    X = np.load(path, mmap_mode="r")
    with pytest.raises(ValueError, match=r"out: .*X.npy' is the file X is read from"):
        nk.MLP().ntk(X, out=str(path))
    with pytest.raises(ValueError, match="out: both kernels would go to the same file"):
        nk.MLP().kernels(X, out=(str(tmp_path / "K.npy"), str(tmp_path / "." / "K.npy")))
