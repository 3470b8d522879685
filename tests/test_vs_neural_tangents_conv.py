"""ntkfast.stax networks give neural-tangents' ``stax`` kernels: convolutions, pooling,
residual blocks, LayerNorm, every closed-form activation, both parameterizations.

``tests/data/nt_stax_conv_reference.npz`` was produced by neural-tangents 0.6.5 (jax
0.4.30, x64) with ``bench/nt_stax_conv_reference.py`` (which does not import ntkfast):
for each architecture of its ``meta`` (nt's ``stax`` vocabulary, as JSON) the inputs
``x{i}`` (6 rows), ``z{i}`` (4 rows) and nt's K(X, Z), K(X, X).

Tolerances: 1e-10 of the matrix scale off the diagonal; on the diagonal of K(X, X)
1e-7 (nt's acos(1 − ε) is ~1e-9 off there; ours is exact) and bitwise equality with
``net.nngp_diag`` / ``net.ntk_diag``.
"""

import inspect
import json
import math
import pathlib

import numpy as np
import pytest

from ntkfast import stax

PATH = pathlib.Path(__file__).parent / "data" / "nt_stax_conv_reference.npz"
TUPLE_KEYS = ("filter_shape", "strides", "window_shape")
#: ElementwiseNumerical's "fn"/"df" by name (Numba-compilable, as ntkfast's Custom needs)
FUNCTIONS = {"tanh": lambda u: math.tanh(u), "dtanh": lambda u: 1.0 - math.tanh(u) ** 2}
OFF_DIAG_RTOL = 1e-10
DIAG_RTOL = 1e-7


def _meta():
    with np.load(PATH) as f:
        return json.loads(str(f["meta"]))


def build(layers):
    """An ntkfast.stax network from the reference's JSON layer list (as the generator
    builds nt's: ``getattr(stax, name)(**kwargs)``, nested for parallel/serial)."""
    out = []
    for name, kw in layers:
        if name == "parallel":
            out.append(stax.parallel(*[build(branch) for branch in kw]))
        elif name == "serial":
            out.append(build(kw))
        else:
            kw = {k: (tuple(v) if k in TUPLE_KEYS and isinstance(v, list) else
                      FUNCTIONS[v] if k in ("fn", "df") else v)
                  for k, v in kw.items()}
            out.append(getattr(stax, name)(**kw))
    return stax.serial(*out)


ARCHS = _meta()["architectures"]


def _load(i):
    with np.load(PATH) as f:
        return {k: f[f"{k}{i}"] for k in ("x", "z", "nngp_xz", "ntk_xz", "nngp_xx", "ntk_xx")}


def _rel(ours, theirs, mask=None):
    diff = np.abs(ours - theirs)
    if mask is not None:
        diff = diff[mask]
    return float(np.max(diff) / np.max(np.abs(theirs)))


def test_reference_file_is_small_and_describes_itself():
    assert PATH.stat().st_size < 1_000_000
    meta = _meta()
    assert meta["neural_tangents"] == "0.6.5" and meta["x64"]
    assert len(ARCHS) >= 20
    with np.load(PATH) as f:
        for a in ARCHS:
            i = a["index"]
            assert list(f[f"x{i}"].shape) == a["x_shape"]
            assert f[f"nngp_xz{i}"].shape == (a["x_shape"][0], a["z_shape"][0])
            assert f[f"ntk_xx{i}"].dtype == np.float64


@pytest.mark.parametrize("arch", ARCHS, ids=[a["name"] for a in ARCHS])
def test_matches_neural_tangents(arch):
    ref = _load(arch["index"])
    init_fn, apply_fn, kernel_fn = build(arch["layers"])
    kxz = kernel_fn(ref["x"], ref["z"], ("nngp", "ntk"))
    kxx = kernel_fn(ref["x"], None, ("nngp", "ntk"))
    n = ref["x"].shape[0]
    off = ~np.eye(n, dtype=bool)
    if "ElementwiseNumerical" in json.dumps(arch["layers"]):
        # nt's Gauss–Hermite rule is not symmetric in (x, z): its K(X, X) is not symmetric
        # (to the quadrature's accuracy, ~1e-4 at deg=25).  Ours is K(x_i, x_j) for i < j
        # (nt's upper triangle), mirrored.
        lower = np.tril(np.ones((n, n), dtype=bool), -1)
        for ours, theirs in ((kxx.nngp, ref["nngp_xx"]), (kxx.ntk, ref["ntk_xx"])):
            assert _rel(ours, theirs.T, lower) <= OFF_DIAG_RTOL
            assert _rel(theirs, theirs.T, lower) <= 1e-3   # nt's own asymmetry
            assert _rel(ours, theirs, lower) <= 1e-3
        off = np.triu(off)
    errors = {
        "nngp_xz": _rel(kxz.nngp, ref["nngp_xz"]),
        "ntk_xz": _rel(kxz.ntk, ref["ntk_xz"]),
        "nngp_xx off-diagonal": _rel(kxx.nngp, ref["nngp_xx"], off),
        "ntk_xx off-diagonal": _rel(kxx.ntk, ref["ntk_xx"], off),
    }
    bad = {k: v for k, v in errors.items() if not v <= OFF_DIAG_RTOL}
    assert not bad, f"{arch['name']}: relative errors {bad}"

    diag = {"nngp_xx diagonal": _rel(np.diag(kxx.nngp), np.diag(ref["nngp_xx"])),
            "ntk_xx diagonal": _rel(np.diag(kxx.ntk), np.diag(ref["ntk_xx"]))}
    bad = {k: v for k, v in diag.items() if not v <= DIAG_RTOL}
    assert not bad, f"{arch['name']}: relative errors on the diagonal {bad}"

    # K(X, X) is exactly symmetric and its diagonal is the *_diag methods'
    net = kernel_fn.net
    for k in (kxx.nngp, kxx.ntk):
        np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(np.diag(kxx.nngp), net.nngp_diag(ref["x"]))
    np.testing.assert_array_equal(np.diag(kxx.ntk), net.ntk_diag(ref["x"]))


@pytest.mark.parametrize("arch", ARCHS[:3] + ARCHS[-2:], ids=lambda a: a["name"])
def test_get_variants_agree(arch):
    """get=None (a Kernel), a string and a tuple give the same numbers; cov1/cov2 are the
    diagonals of K(X, X), K(Z, Z)."""
    ref = _load(arch["index"])
    x, z = ref["x"], ref["z"]
    kernel_fn = build(arch["layers"])[2]
    k = kernel_fn(x, z)
    both = kernel_fn(x, z, ("ntk", "nngp"))
    assert type(both).__name__ == "AnalyticKernel" and both._fields == ("ntk", "nngp")
    for name in ("nngp", "ntk"):
        one = kernel_fn(x, z, name)
        assert isinstance(one, np.ndarray) and one.dtype == np.float64
        np.testing.assert_array_equal(one, getattr(k, name))
        np.testing.assert_array_equal(one, getattr(both, name))
    np.testing.assert_array_equal(k.cov1, kernel_fn.net.nngp_diag(x))
    np.testing.assert_array_equal(k.cov2, kernel_fn.net.nngp_diag(z))
    assert np.max(np.abs(k.cov1 - np.diag(ref["nngp_xx"]))) <= DIAG_RTOL * np.max(k.cov1)
    kx = kernel_fn(x, get=("nngp", "cov1", "cov2"), diagonal_batch=False)
    np.testing.assert_array_equal(kx.cov1, kx.nngp)
    assert kx.cov2 is None


# ---------------------------------------------------------------------------------------
# nt's defaults, pinned by the reference (signatures and numerical checks)
# ---------------------------------------------------------------------------------------

def test_nt_defaults_pinned_by_the_reference():
    d = _meta()["nt_defaults"]
    checks = d["numerical_checks_max_abs_diff"]
    # nt 0.6.5: AvgPool strides=None is stride 1 (not the window), Conv pads 'VALID'
    assert checks["AvgPool(w) vs strides=(1,1)"] == 0 and checks["AvgPool(w) vs strides=w"] > 0
    assert checks["Conv default vs padding='VALID'"] == 0
    assert checks["LayerNorm() vs eps=1e-12, axis=-1"] == 0
    s = d["summary"]
    assert s["Conv.padding"] == "'VALID'" and s["LayerNorm.eps"] == "1e-12"
    assert s["Dense.b_std"] == "None" and s["AvgPool.padding"] == "'VALID'"


@pytest.mark.parametrize("name", sorted(_meta()["nt_defaults"]["signatures"]))
def test_signatures_equal_nt(name):
    """Parameter names, order and defaults of ntkfast.stax's layers equal nt 0.6.5's."""
    theirs = _meta()["nt_defaults"]["signatures"][name]
    params = inspect.signature(getattr(stax, name)).parameters
    ours = {k: (repr(p.default) if p.default is not p.empty else "<required>")
            for k, p in params.items()}
    assert list(ours) == list(theirs)
    assert ours == theirs


def test_avgpool_default_strides_numerically():
    """stax.AvgPool(w) == stax.AvgPool(w, strides=(1, 1)) != strides=w, as nt."""
    ref = _load(0)
    x, z = ref["x"], ref["z"]

    def k(pool):
        return stax.serial(stax.Conv(3, (3, 3), padding="SAME"), stax.Relu(), pool,
                           stax.Flatten(), stax.Dense(1))[2](x, z, "ntk")

    base = k(stax.AvgPool((2, 2)))
    np.testing.assert_array_equal(base, k(stax.AvgPool((2, 2), strides=(1, 1))))
    assert np.max(np.abs(base - k(stax.AvgPool((2, 2), strides=(2, 2))))) > 1e-6
