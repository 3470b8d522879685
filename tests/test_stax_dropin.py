"""``ntkfast.stax`` is a drop-in for neural-tangents' ``stax``: scripts written for nt run
with only the import changed, return what nt returns (types, shapes) and nt's numbers.

The scripts below are nt's documented examples (its README's convolutional network and
WideResNet, scaled down; its fully-connected network), kept verbatim with
``from neural_tangents import stax``; each test swaps that one line for
``from ntkfast import stax`` and runs them.  Values are checked against the nt 0.6.5
references in ``tests/data/`` (``nt_stax_conv_reference.npz``: architectures
``nt_readme_conv``, ``nt_readme_wide_resnet``; ``nt_stax_reference.npz``: the
fully-connected networks of ``bench/vs_neural_tangents.py``, built by that file's own nt
code with ``neural_tangents.stax`` pointing at ``ntkfast.stax``).
"""

import importlib.util
import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from ntkfast import stax

DATA = pathlib.Path(__file__).parent / "data"
ROOT = pathlib.Path(__file__).parent.parent
NT_IMPORT = "from neural_tangents import stax"


def run_script(script, **inputs):
    """Run an nt script with only its stax import changed; its namespace afterwards."""
    assert script.count(NT_IMPORT) == 1
    code = script.replace(NT_IMPORT, "from ntkfast import stax")
    assert "ntkfast" not in script and "ntkfast" in code
    ns = dict(inputs)
    exec(compile(code, "<nt script>", "exec"), ns)
    return ns


def conv_reference(name):
    with np.load(DATA / "nt_stax_conv_reference.npz") as f:
        meta = json.loads(str(f["meta"]))
        (i,) = [a["index"] for a in meta["architectures"] if a["name"] == name]
        return {k: f[f"{k}{i}"] for k in ("x", "z", "nngp_xz", "ntk_xz", "nngp_xx",
                                          "ntk_xx")}


def assert_close(ours, theirs, rtol=1e-10):
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= rtol * np.max(np.abs(theirs))


def assert_close_off_diagonal(ours, theirs):
    off = ~np.eye(len(theirs), dtype=bool)
    assert np.max(np.abs(ours - theirs)[off]) <= 1e-10 * np.max(np.abs(theirs))
    assert np.max(np.abs(np.diag(ours) - np.diag(theirs))) <= 1e-7 * np.max(np.abs(theirs))


# ---------------------------------------------------------------------------------------
# nt README: a convolutional network
# ---------------------------------------------------------------------------------------

README_CONV = '''
from neural_tangents import stax

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Conv(32, (3, 3)),
    stax.Relu(),
    stax.Flatten(),
    stax.Dense(1, 2., 0.05)
)

ntk = kernel_fn(x1, x2, 'ntk')
nngp = kernel_fn(x1, x2, 'nngp')
both = kernel_fn(x1, x2, ('nngp', 'ntk'))
kernel = kernel_fn(x1, x2)
ntk_train_train = kernel_fn(x1, None, 'ntk')
'''


def test_readme_conv_script():
    ref = conv_reference("nt_readme_conv")
    ns = run_script(README_CONV, x1=ref["x"], x2=ref["z"])
    n, m = len(ref["x"]), len(ref["z"])
    # types as nt's: arrays for a string get, a namedtuple for a tuple, a Kernel for None
    for name in ("ntk", "nngp"):
        assert isinstance(ns[name], np.ndarray) and ns[name].shape == (n, m)
        assert ns[name].dtype == np.float64
    both = ns["both"]
    assert type(both).__name__ == "AnalyticKernel" and both._fields == ("nngp", "ntk")
    nngp, ntk = both                        # it unpacks like nt's namedtuple
    kernel = ns["kernel"]
    assert kernel.nngp.shape == kernel.ntk.shape == (n, m)
    assert kernel.cov1.shape == (n,) and kernel.cov2.shape == (m,)
    for a in (ns["ntk"], ntk, kernel.ntk):
        assert_close(a, ref["ntk_xz"])
    for a in (ns["nngp"], nngp, kernel.nngp):
        assert_close(a, ref["nngp_xz"])
    assert ns["ntk_train_train"].shape == (n, n)
    assert_close_off_diagonal(ns["ntk_train_train"], ref["ntk_xx"])


# ---------------------------------------------------------------------------------------
# nt README: WideResNet (FanOut / parallel / FanInSum), block_size 1, two groups, 8×8
# ---------------------------------------------------------------------------------------

README_WIDE_RESNET = '''
from neural_tangents import stax

def WideResnetBlock(channels, strides=(1, 1), channel_mismatch=False):
  Main = stax.serial(
      stax.Relu(), stax.Conv(channels, (3, 3), strides, padding='SAME'),
      stax.Relu(), stax.Conv(channels, (3, 3), padding='SAME'))
  Shortcut = stax.Identity() if not channel_mismatch else stax.Conv(
      channels, (3, 3), strides, padding='SAME')
  return stax.serial(stax.FanOut(2),
                     stax.parallel(Main, Shortcut),
                     stax.FanInSum())

def WideResnetGroup(n, channels, strides=(1, 1)):
  blocks = []
  blocks += [WideResnetBlock(channels, strides, channel_mismatch=True)]
  for _ in range(n - 1):
    blocks += [WideResnetBlock(channels, (1, 1))]
  return stax.serial(*blocks)

def WideResnet(block_size, k, num_classes):
  return stax.serial(
      stax.Conv(16, (3, 3), padding='SAME'),
      WideResnetGroup(block_size, int(16 * k)),
      WideResnetGroup(block_size, int(32 * k), (2, 2)),
      stax.AvgPool((2, 2)),
      stax.Flatten(),
      stax.Dense(num_classes, 1., 0.))

init_fn, apply_fn, kernel_fn = WideResnet(block_size=1, k=1, num_classes=1)

kernels = kernel_fn(x_train, x_test, ('nngp', 'ntk'))
k_train_train = kernel_fn(x_train, None, ('nngp', 'ntk'))
'''


def test_readme_wide_resnet_script():
    ref = conv_reference("nt_readme_wide_resnet")
    ns = run_script(README_WIDE_RESNET, x_train=ref["x"], x_test=ref["z"])
    assert_close(ns["kernels"].nngp, ref["nngp_xz"])
    assert_close(ns["kernels"].ntk, ref["ntk_xz"])
    assert_close_off_diagonal(ns["k_train_train"].nngp, ref["nngp_xx"])
    assert_close_off_diagonal(ns["k_train_train"].ntk, ref["ntk_xx"])


# ---------------------------------------------------------------------------------------
# nt README: a fully-connected network; nt's init_fn / apply_fn where ntkfast has them
# ---------------------------------------------------------------------------------------

README_FC = '''
from neural_tangents import stax

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(512), stax.Relu(),
    stax.Dense(512), stax.Relu(),
    stax.Dense(1)
)

ntk_train_train = kernel_fn(x_train, None, 'ntk')
ntk_test_train = kernel_fn(x_test, x_train, 'ntk')
'''


def _finite_layers_available():
    try:
        from ntkfast import finite_layers
    except ImportError:
        return False
    return hasattr(finite_layers, "stax_functions")


def test_readme_fc_script():
    import ntkfast as nk
    rng = np.random.default_rng(3)
    x_train, x_test = rng.standard_normal((10, 20)), rng.standard_normal((5, 20))
    ns = run_script(README_FC, x_train=x_train, x_test=x_test)
    net = nk.MLP(depth=2, activation="relu")
    np.testing.assert_allclose(ns["ntk_train_train"], net.ntk(x_train), rtol=1e-14)
    np.testing.assert_allclose(ns["ntk_test_train"], net.ntk(x_test, x_train), rtol=1e-14)
    assert ns["ntk_test_train"].shape == (5, 10)


def test_init_and_apply_fn():
    init_fn, apply_fn, _ = stax.serial(stax.Conv(8, (3, 3)), stax.Relu(), stax.Flatten(),
                                       stax.Dense(3, 2., 0.05))
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 2))
    if not _finite_layers_available():
        with pytest.raises(NotImplementedError, match="finite"):
            init_fn(0, (-1, 6, 6, 2))
        return
    out_shape, params = init_fn(0, (-1, 6, 6, 2))
    assert out_shape == (-1, 3)
    assert len(params) == 4                       # one entry per layer, as nt's serial
    W, b = params[0]
    assert W.shape == (3, 3, 2, 8)                # HWIO, as nt's Conv
    assert apply_fn(params, x).shape == (4, 3)
    # a single layer's params are its own (W, b), not a 1-tuple
    _, (W, b) = stax.Dense(5, b_std=0.1)[0](1, (-1, 7))
    assert W.shape == (7, 5)
    assert stax.Dense(5, b_std=0.1)[1]((W, b), np.ones((2, 7))).shape == (2, 5)


# ---------------------------------------------------------------------------------------
# the fully-connected nt reference through stax (DESIGN §1 numbers)
# ---------------------------------------------------------------------------------------

def _fc_cases():
    with np.load(DATA / "nt_stax_reference.npz") as f:
        return list(enumerate(json.loads(str(f["meta"]))))


@pytest.fixture(scope="module")
def bench_nt_builder():
    """``nt_kernel_fn`` of bench/vs_neural_tangents.py, nt's code unchanged, with
    ``neural_tangents.stax`` resolving to ``ntkfast.stax``."""
    spec = importlib.util.spec_from_file_location("_vs_nt", ROOT / "bench" /
                                                  "vs_neural_tangents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nt_kernel_fn


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("i, cfg", _fc_cases(), ids=lambda v: v if isinstance(v, int) else
                         f"{v['act']}-{v['parameterization']}-{v['b_std']}")
def test_fc_reference_through_stax(i, cfg, backend, bench_nt_builder, monkeypatch):
    fake = types.ModuleType("neural_tangents")
    fake.stax = stax
    monkeypatch.setitem(sys.modules, "neural_tangents", fake)
    monkeypatch.setitem(sys.modules, "neural_tangents.stax", stax)
    kernel_fn = bench_nt_builder(cfg)
    assert type(kernel_fn).__module__ == "ntkfast.stax"   # not nt's
    with np.load(DATA / "nt_stax_reference.npz") as f:
        n = int(f["n"])
        nngp_ref, ntk_ref = f[f"nngp{i}"], f[f"ntk{i}"]
    rng = np.random.default_rng(0)  # the data of bench/vs_neural_tangents.py
    X, Z = rng.standard_normal((n, 32)), rng.standard_normal((n // 2, 32))
    k = kernel_fn(X, Z, get=("nngp", "ntk"), backend=backend)
    for ours, theirs in ((k.nngp, nngp_ref), (k.ntk, ntk_ref)):
        assert np.max(np.abs(ours - theirs)) <= 1e-13 * np.max(np.abs(theirs))


# ---------------------------------------------------------------------------------------
# no JAX; clear errors for what ntkfast does not model
# ---------------------------------------------------------------------------------------

def test_no_jax_needed():
    code = ("import sys, numpy as np\n"
            "from ntkfast import stax\n"
            "k = stax.serial(stax.Conv(4, (3, 3), padding='SAME'), stax.Relu(), "
            "stax.GlobalAvgPool(), stax.Dense(1))[2]\n"
            "k(np.ones((2, 5, 5, 1)), None, 'ntk')\n"
            "assert not any(m == 'jax' or m.startswith('jax.') for m in sys.modules), "
            "'jax imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("make, match", [
    (lambda: stax.Dropout(0.1), "Dropout"),
    (lambda: stax.SumPool((2, 2)), "SumPool"),
    (lambda: stax.GlobalSelfAttention(4, 4, 4, 1), "GlobalSelfAttention"),
    (lambda: stax.Dense(4, channel_axis=0), "channel_axis"),
    (lambda: stax.Dense(4, batch_axis=1), "batch_axis"),
    (lambda: stax.Dense(4, W_std=np.ones(3)), "W_std"),
    (lambda: stax.Dense(4, parameterization="standard", s=(2, 2)), "s="),
    (lambda: stax.Conv(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCHW")),
     "dimension_numbers"),
    (lambda: stax.AvgPool((2, 2), padding="SAME", normalize_edges=True), "normalize_edges"),
    (lambda: stax.LayerNorm(axis=(1, 2, 3)), "axis"),
    (lambda: stax.GlobalAvgPool(channel_axis=1), "channel_axis"),
])
def test_unsupported_raise_naming_the_layer(make, match):
    with pytest.raises(NotImplementedError, match=match):
        make()


def test_kernel_fn_errors():
    x = np.random.default_rng(0).standard_normal((3, 5, 5, 2))
    kernel_fn = stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.Flatten(),
                            stax.Dense(1))[2]
    with pytest.raises(NotImplementedError, match="spatial"):
        stax.serial(stax.Conv(4, (3, 3)), stax.Relu())[2](x)
    with pytest.raises(NotImplementedError, match="mask_constant"):
        kernel_fn(x, None, "ntk", mask_constant=0.0)
    with pytest.raises(NotImplementedError, match="get="):
        kernel_fn(x, None, "is_gaussian")
    with pytest.raises(ValueError, match="unique"):
        kernel_fn(x, None, ("ntk", "ntk"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        kernel_fn(x, None, "ntk", rng=0)
    with pytest.raises(TypeError, match="neural_tangents.stax cannot be mixed"):
        stax.serial(stax.Relu(), (lambda: 0, lambda: 0, lambda: 0))
    # ntkfast's own keywords pass through
    # (the reference and the compiled engine: the same kernel to rounding)
    np.testing.assert_allclose(kernel_fn(x, None, "ntk", backend="reference"),
                               kernel_fn(x, None, "ntk"), rtol=1e-14, atol=0)
    assert kernel_fn(x, None, "ntk", dtype=np.float32).dtype == np.float32


def test_defaults_are_nt_s():
    """Conv pads 'VALID' and AvgPool strides 1 by default; Dense has no bias."""
    conv = stax.Conv(4, (3, 3)).layer
    assert conv.padding == "VALID" and conv.strides_or_ones == (1, 1)
    pool = stax.AvgPool((3, 2)).layer
    assert pool.strides == (1, 1) and pool.padding == "VALID"
    dense = stax.Dense(7).layer
    assert dense.b_std is None and dense.w_std == 1.0 and dense.width == 7
    assert stax.LayerNorm().layer.eps == 1e-12
    assert stax.Sigmoid_like().layer.activation == \
        stax.Erf(0.5, 1 / 2.4020563531719796, 0.5).layer.activation
