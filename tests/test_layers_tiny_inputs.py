"""Layer networks on tiny inputs (issue 17 for architectures): homogeneous networks
(ReLU-like layers, no bias) are rescaled exactly per example; others are rejected with
a clear error instead of a silently wrong kernel."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends.reference_network import NetworkPlan, is_homogeneous

CNN = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Conv((3, 3), w_std=1.5), nk.FanOut(2),
                nk.parallel(nk.serial(nk.LeakyReLU(0.1), nk.Conv((2, 2))), nk.Identity()),
                nk.FanInSum(), nk.AvgPool((2, 2)), nk.Conv((2, 2)), nk.Abs(),
                nk.GlobalAvgPool(), nk.Dense())


@pytest.fixture
def X():
    return np.random.default_rng(1).standard_normal((5, 6, 6, 2))


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_homogeneity_is_read_from_the_layers():
    assert is_homogeneous(CNN)
    assert not is_homogeneous(nk.serial(nk.Conv((3, 3), b_std=0.1), nk.ReLU(), nk.Flatten(),
                                        nk.Dense()))
    assert not is_homogeneous(nk.serial(nk.Conv((3, 3)), nk.Erf(), nk.Flatten(), nk.Dense()))
    assert not is_homogeneous(nk.serial(nk.Conv((3, 3)), nk.LayerNorm(), nk.ReLU(),
                                        nk.Flatten(), nk.Dense()))
    assert NetworkPlan(CNN, (6, 6, 2)).homogeneous


@pytest.mark.parametrize("scale", [2.0 ** -300, 1e-120, 1e-150])
def test_tiny_examples_are_rescaled_exactly(X, scale):
    """K(s x, z) = s K(x, z) exactly for a power of two s (the reference), and to rounding
    for other s; untouched examples keep their exact bits."""
    ref = CNN.kernels(X)
    Xs = X.copy()
    Xs[2] *= scale
    k = CNN.kernels(Xs)
    others = [0, 1, 3, 4]
    assert np.array_equal(k.ntk[np.ix_(others, others)], ref.ntk[np.ix_(others, others)])
    for got, want in ((k.ntk, ref.ntk), (k.nngp, ref.nngp)):
        row = got[2, others] / scale
        assert rel(row, want[2, others]) < 1e-12
        assert abs(got[2, 2] / scale / scale - want[2, 2]) <= 1e-12 * want[2, 2]
        assert np.array_equal(got, got.T)
    assert np.array_equal(np.diag(k.ntk), CNN.ntk_diag(Xs))
    cross = CNN.ntk(Xs[:3], X[3:])
    assert rel(cross[2] / scale, ref.ntk[2, 3:]) < 1e-12


def test_tiny_examples_without_exact_rescaling_are_rejected(X):
    biased = nk.serial(nk.Conv((3, 3), b_std=1e-100), nk.ReLU(), nk.GlobalAvgPool(),
                       nk.Dense())
    with pytest.raises(ValueError, match="example 0 is too small.*rescale the inputs"):
        biased.ntk(X * 1e-160)
    smooth = nk.serial(nk.Conv((3, 3)), nk.GELU(), nk.Flatten(), nk.Dense())
    with pytest.raises(ValueError, match="too small"):
        smooth.ntk(X * 1e-160)
    # an ordinary input of the same networks is untouched
    assert np.isfinite(biased.ntk(X)).all() and np.isfinite(smooth.ntk(X)).all()
