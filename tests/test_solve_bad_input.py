"""Bad input to KernelRegression, direct and mixed-precision routes (issue 21 item 5)."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.solve import KernelRegression, MixedPrecision, NotPositiveDefiniteError
from ntkfast.solve import mixed_precision as mp

N = 600  # more than one 512-row tile band of the checks


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, 5))
    net = nk.MLP(depth=2, activation="relu")
    return net, X, net.ntk(X, dtype=np.float64), rng.standard_normal(N)


def _file(tmp_path, K, dtype, name="K.npy", mode="r"):
    path = tmp_path / name
    np.save(path, K.astype(dtype))
    return np.load(path, mmap_mode=mode), path


ROUTES = {
    "float64": lambda net, X: dict(mixed_precision=False),
    "mixed-self": lambda net, X: dict(mixed_precision=True),
    "mixed-network": lambda net, X: dict(mixed_precision=MixedPrecision(network=net, X=X)),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("where", [(37, 530), (530, 37), (541, 541)])
def test_nan_in_memmapped_kernel_names_first_bad_row(problem, tmp_path, route, where):
    net, X, K, y = problem
    bad = K.copy()
    i, j = where
    bad[i, j] = np.nan  # one triangle only: still found
    bad[300, 310] = bad[310, 300] = np.inf  # a later row, symmetric
    mm, _ = _file(tmp_path, bad, np.float32 if route == "mixed-network" else np.float64)
    first = min(300, i)
    with pytest.raises(ValueError, match=rf"k_train_train: row {first} contains NaN or inf"):
        KernelRegression(mm, y, ridge=1e-3, **ROUTES[route](net, X))


def test_nan_found_in_the_in_place_factorisation_pass(problem, tmp_path):
    net, X, K, y = problem
    bad = K.copy()
    bad[:, 123] = bad[123, :] = np.nan  # a point whose kernel row is NaN
    mm, _ = _file(tmp_path, bad, np.float32, mode="r+")
    # every row holds the NaN of column 123: the first is row 0, and the column is named
    with pytest.raises(ValueError, match=r"k_train_train: row 0 contains NaN or inf "
                                         r"\(first at column 123\)"):
        KernelRegression(mm, y, overwrite=True,
                         mixed_precision=MixedPrecision(network=net, X=X))


def test_mixed_route_reads_the_kernel_once(problem, tmp_path, monkeypatch):
    """The validation scan is the copy pass: one scan of k_train_train, no other."""
    net, X, K, y = problem
    mm, _ = _file(tmp_path, K, np.float32)
    calls = []
    scan = mp.as_square_kernel

    def counting(arr, name, visit=None):
        calls.append(visit is not None)
        return scan(arr, name, visit=visit)

    monkeypatch.setattr(mp, "as_square_kernel", counting)
    KernelRegression(mm, y, ridge=1e-3, mixed_precision=MixedPrecision(network=net, X=X))
    assert calls == [True]


def test_nan_in_float64_kernel_file(problem, tmp_path):
    net, X, K, y = problem
    bad = K.copy()
    bad[444, 2] = bad[2, 444] = np.nan
    _, path = _file(tmp_path, bad, np.float64, name="K64.npy")
    with pytest.raises(ValueError, match=r"float64_kernel .*NaN or inf in row 2 "):
        KernelRegression(K.astype(np.float32), y, ridge=1e-3,
                         mixed_precision=MixedPrecision(float64_kernel=str(path)))


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("n_y", [N - 1, N + 1])
def test_y_of_wrong_length(problem, route, n_y):
    net, X, K, _ = problem
    with pytest.raises(ValueError, match=rf"y_train: expected shape \({N},\) .* got shape "
                                         rf"\({n_y},\)"):
        KernelRegression(K, np.ones(n_y), **ROUTES[route](net, X))


def test_kernel_file_shape_does_not_match_X(problem, tmp_path):
    net, X, K, y = problem
    mm, path = _file(tmp_path, K, np.float32)
    with pytest.raises(ValueError, match=rf"X has {N - 1} rows but k_train_train is "
                                         rf"{N}x{N}"):
        KernelRegression(mm, y, mixed_precision=MixedPrecision(network=net, X=X[1:]))
    with pytest.raises(ValueError, match=r"X must be an array of inputs"):
        KernelRegression(mm, y, mixed_precision=MixedPrecision(network=net, X=list(X)))
    _, p64 = _file(tmp_path, K[1:, 1:], np.float64, name="small.npy")
    with pytest.raises(ValueError, match=rf"shape \({N - 1}, {N - 1}\) but k_train_train"):
        KernelRegression(mm, y, mixed_precision=MixedPrecision(float64_kernel=str(p64)))
    with pytest.raises(ValueError, match="must hold the float64 values"):
        KernelRegression(mm, y, mixed_precision=MixedPrecision(float64_kernel=mm))
    with pytest.raises(ValueError, match="square 2-D Gram matrix"):
        KernelRegression(mm[:, 1:], y, mixed_precision=True)


def test_overwrite_conflicts(problem, tmp_path):
    net, X, K, y = problem
    rw, _ = _file(tmp_path, K, np.float32, mode="r+")
    with pytest.raises(ValueError, match="overwrite=True would destroy"):
        KernelRegression(rw, y, overwrite=True, mixed_precision=True)
    ro, _ = _file(tmp_path, K, np.float32, name="ro.npy")
    with pytest.raises(ValueError, match="overwrite=True needs a writable array"):
        KernelRegression(ro, y, overwrite=True,
                         mixed_precision=MixedPrecision(network=net, X=X))


def test_not_symmetric_mixed(problem):
    net, X, K, y = problem
    bad = K.copy()
    bad[5, 550] += 1e-2 * K[0, 0]
    with pytest.raises(ValueError, match="not symmetric"):
        KernelRegression(bad, y, mixed_precision=True)


def test_not_positive_definite_even_with_jitter():
    K = -np.eye(50)
    with pytest.raises(NotPositiveDefiniteError, match="float32 copy .* even with jitter"):
        KernelRegression(K, np.ones(50), mixed_precision=True)


def test_indefinite_in_float64_only():
    """float32 needs jitter; conjugate gradients then meet pᵀAp ≤ 0 in float64."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    w = np.linspace(1.0, 2.0, 60)
    w[0] = -1e-7
    K = (Q * w) @ Q.T
    K = 0.5 * (K + K.T)
    with pytest.warns(nk.solve.JitterWarning), pytest.raises(NotPositiveDefiniteError,
                                                             match="float64"):
        KernelRegression(K, Q[:, 0], mixed_precision=True)
