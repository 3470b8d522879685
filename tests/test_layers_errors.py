"""Networks that do not fit their input, and bad inputs, fail with clear errors: the
layer (index and type) and the fix (issue 18, item 7)."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.layers import LayerError

IMG = np.ones((2, 5, 5, 3))
SIG = np.ones((2, 6, 3))
VEC = np.ones((2, 4))


def _fails(net, X, *patterns, exc=LayerError):
    for method in (net.ntk, net.nngp_diag):
        with pytest.raises(exc) as info:
            method(X)
        for p in patterns:
            assert p in str(info.value), (p, str(info.value))


def test_image_rank_does_not_fit_the_filter():
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Flatten(), nk.Dense())
    _fails(net, SIG, "layer 0 (Conv)", "2 spatial dimension(s)", "spatial shape (6,)",
           "rank 1")
    _fails(nk.serial(nk.Conv((3,)), nk.Flatten()), IMG, "layer 0 (Conv)", "rank 2")


def test_vectors_into_spatial_layers():
    for layer, name in ((nk.Conv((3, 3)), "Conv"), (nk.AvgPool((2, 2)), "AvgPool"),
                        (nk.GlobalAvgPool(), "GlobalAvgPool")):
        _fails(nk.serial(nk.Dense(), nk.ReLU(), layer, nk.Dense()), VEC,
               f"layer 2 ({name})", "vectors")


def test_layer_after_a_readout_that_needs_spatial_input():
    _fails(nk.serial(nk.Conv((3, 3)), nk.Flatten(), nk.Conv((3, 3))), IMG,
           "layer 2 (Conv)", "before the Flatten/GlobalAvgPool readout")
    _fails(nk.serial(nk.Conv((3, 3)), nk.GlobalAvgPool(), nk.ReLU(), nk.AvgPool((2, 2))),
           IMG, "layer 3 (AvgPool)", "before the Flatten/GlobalAvgPool readout")
    _fails(nk.serial(nk.Conv((3, 3)), nk.GlobalAvgPool(), nk.GlobalAvgPool()), IMG,
           "layer 2 (GlobalAvgPool)", "remove it")


def test_spatial_output_needs_a_readout():
    _fails(nk.serial(nk.Conv((3, 3)), nk.ReLU()), IMG, "layer 1 (ReLU)", "still spatial",
           "Flatten() or GlobalAvgPool()")
    _fails(nk.serial(nk.Dense(), nk.ReLU(), nk.Dense()), IMG, "layer 2 (Dense)",
           "still spatial")


def test_window_or_valid_filter_larger_than_the_input():
    _fails(nk.serial(nk.Conv((3, 3)), nk.AvgPool((6, 2)), nk.Flatten()), IMG,
           "layer 1 (AvgPool)", "window_shape (6, 2) is larger than its input (5, 5)",
           "padding='SAME'")
    _fails(nk.serial(nk.Dense(), nk.ReLU(), nk.Conv((7, 1), padding="VALID"), nk.Flatten()),
           IMG, "layer 2 (Conv)", "filter_shape (7, 1) is larger", "smaller filter_shape")
    # strides shrink the image below a later VALID window
    _fails(nk.serial(nk.Conv((3, 3), strides=(2, 2)), nk.ReLU(),
                     nk.Conv((4, 4), padding="VALID"), nk.Flatten()), IMG,
           "layer 2 (Conv)", "larger than its input (3, 3)")


def test_bad_hyperparameters_fail_at_construction():
    for make, patterns in (
            (lambda: nk.Conv((3, 3), strides=(0, 1)), ("Conv", "strides", "positive")),
            (lambda: nk.AvgPool((2, 2), strides=(-1, 1)), ("AvgPool", "strides")),
            (lambda: nk.Conv((3, 0)), ("Conv", "filter_shape")),
            (lambda: nk.AvgPool((2, 2), strides=(1,)), ("AvgPool", "one entry per axis")),
            (lambda: nk.Conv((3, 3), padding="FULL"), ("Conv", "'SAME', 'VALID', 'CIRCULAR'")),
            (lambda: nk.AvgPool((2,), padding="reflect"), ("AvgPool", "padding")),
            (lambda: nk.Dense(w_std=-1.0), ("Dense", "w_std")),
            (lambda: nk.Dense(parameterization="mup"), ("Dense", "'ntk' or 'standard'")),
            (lambda: nk.LayerNorm(eps=-1.0), ("LayerNorm", "eps"))):
        with pytest.raises(ValueError) as info:
            make()
        for p in patterns:
            assert p in str(info.value)
    assert nk.Conv((3, 3), padding="circular").padding == "CIRCULAR"
    with pytest.raises(TypeError, match="call it"):
        nk.serial(nk.ReLU, nk.Dense())


def test_branch_errors():
    _fails(nk.serial(nk.Conv((3, 3)), nk.FanOut(2),
                     nk.parallel(nk.Conv((3, 3), padding="VALID"), nk.Identity()),
                     nk.FanInSum(), nk.Flatten()), IMG,
           "layer 3 (FanInSum)", "[(3, 3), (5, 5)]", "same strides and padding='SAME'")
    _fails(nk.serial(nk.Conv((3, 3), width=4), nk.FanOut(2),
                     nk.parallel(nk.Conv((3, 3), width=5), nk.Identity()), nk.FanInSum(),
                     nk.Flatten()), IMG, "layer 3 (FanInSum)", "channel counts [5, 4]")
    _fails(nk.serial(nk.Dense(), nk.FanOut(2)), VEC, "ends with 2 branches", "FanInSum()")
    _fails(nk.serial(nk.Dense(), nk.parallel(nk.Dense(), nk.Dense())), VEC,
           "layer 1 (Parallel)", "FanOut(2)")
    _fails(nk.serial(nk.FanOut(3), nk.parallel(nk.Dense(), nk.Dense())), VEC,
           "layer 1 (Parallel)", "gets 3 branches")
    _fails(nk.serial(nk.FanOut(2), nk.Dense()), VEC, "layer 1 (Dense)", "FanInSum")
    _fails(nk.serial(nk.Dense(), nk.FanInSum()), VEC, "layer 1 (FanInSum)", "one input")
    _fails(nk.serial(nk.Conv((3, 3)), nk.FanOut(2),
                     nk.parallel(nk.serial(nk.ReLU(), nk.Conv((3, 3, 3))), nk.Identity()),
                     nk.FanInSum(), nk.Flatten()), IMG,
           "layer 2 (Parallel) branch 0 layer 1 (Conv)", "rank 2")
    _fails(nk.serial(nk.Conv((3, 3)), nk.FanOut(2),
                     nk.parallel(nk.GlobalAvgPool(), nk.Identity()), nk.FanInSum()), IMG,
           "layer 3 (FanInSum)", "[(), (5, 5)]")
    # (nt) a sum of branches must be Gaussian: not an activation's output
    _fails(nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.FanOut(2),
                     nk.parallel(nk.Conv((3, 3)), nk.Identity()), nk.FanInSum(),
                     nk.Flatten()), IMG, "layer 4 (FanInSum)", "branch(es) [1]", "Gaussian")


def test_activations_need_gaussian_input():
    # (nt) an activation needs a random affine layer before it
    _fails(nk.serial(nk.ReLU(), nk.Dense()), VEC, "layer 0 (ReLU)", "Gaussian",
           "put a Dense or Conv before it")
    _fails(nk.serial(nk.Dense(), nk.ReLU(), nk.Erf(), nk.Dense()), VEC, "layer 2 (Erf)")
    _fails(nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.AvgPool((2, 2)), nk.ReLU(),
                     nk.Flatten()), IMG, "layer 3 (ReLU)")
    _fails(nk.serial(nk.Conv((3, 3)), nk.Flatten(), nk.ReLU(), nk.Dense()), IMG,
           "layer 2 (ReLU)")
    # the identity is a no-op anywhere; pooling, LayerNorm and sums keep Gaussianity
    nk.serial(nk.Identity(), nk.Dense(), nk.Identity(), nk.Identity(), nk.Erf(),
              nk.Identity(), nk.Dense()).ntk(VEC)
    nk.serial(nk.Conv((3, 3)), nk.AvgPool((2, 2)), nk.LayerNorm(), nk.ReLU(),
              nk.GlobalAvgPool(), nk.Dense()).ntk(IMG)


def test_layernorm_needs_gaussian_input_and_standard_needs_widths():
    _fails(nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.LayerNorm(), nk.Flatten()), IMG,
           "layer 2 (LayerNorm)", "Gaussian", "put a Dense or Conv before it")
    _fails(nk.serial(nk.LayerNorm(), nk.Dense()), VEC, "layer 0 (LayerNorm)")
    _fails(nk.serial(nk.Conv((3, 3)), nk.ReLU(),
                     nk.Conv((3, 3), parameterization="standard"), nk.Flatten()), IMG,
           "layer 2 (Conv)", "parameterization='standard'", "give width=")
    # the first layer reads the input's channel count: fine without widths
    nk.serial(nk.Conv((3, 3), parameterization="standard"), nk.Flatten()).ntk(IMG)


def test_bad_inputs():
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Flatten(), nk.Dense())
    X = np.ones((3, 5, 5, 3))
    X[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="X: example 2 contains NaN"):
        net.ntk(X)
    with pytest.raises(ValueError, match="Z: example 2 contains NaN"):
        net.ntk(IMG, X)
    with pytest.raises(ValueError, match=r"Z: examples of shape \(5, 4, 3\) but X's are "
                                         r"\(5, 5, 3\)"):
        net.kernels(IMG, np.ones((2, 5, 4, 3)))
    with pytest.raises(ValueError, match="expected a batch"):
        net.ntk(np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        net.ntk(np.ones((0, 5, 5, 3)))
    with pytest.raises(TypeError, match="complex"):
        net.ntk(IMG + 1j)
    with pytest.raises(ValueError, match="too large for float32"):
        net.ntk(IMG.astype(np.float32) * 1e18)
    with pytest.raises(ValueError, match="too large for float64"):
        net.ntk(IMG * 1e200)


def test_bad_keywords():
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Flatten(), nk.Dense())
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        net.ntk(IMG, backend="gpu")
    # the compiled network engine runs this net; not one with a quadrature activation
    with pytest.raises(ValueError, match=r"backend='compiled'.*layer 1 \(Tanh\).*'reference'"):
        nk.serial(nk.Conv((3, 3)), nk.Tanh(degree=40), nk.Flatten(), nk.Dense()).ntk(
            IMG, backend="compiled")
    with pytest.raises(ValueError, match="backend='numba'.*'reference'"):
        net.ntk(IMG, backend="numba")
    with pytest.raises(ValueError, match=r"shape \(2, 2\) and dtype float64"):
        net.ntk(IMG, out=np.empty((3, 3)))
    with pytest.raises(ValueError, match="pass a pair"):
        net.kernels(IMG, out=np.empty((2, 2)))
    with pytest.raises(ValueError, match="n_jobs"):
        net.ntk(IMG, n_jobs=0)
    with pytest.raises(ValueError, match="tile"):
        net.ntk(IMG, tile=0)
    with pytest.raises(TypeError, match="dtype"):
        net.ntk(IMG, dtype=np.int32)
    with pytest.raises(ValueError, match="out: the diagonal"):
        net.ntk_diag(IMG, out=np.empty(3))
