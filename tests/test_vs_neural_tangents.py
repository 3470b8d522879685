"""Our kernels equal neural-tangents' ``stax`` kernels (the convention contract).

``tests/data/nt_stax_reference.npz`` was produced by neural-tangents 0.6.5
(jax 0.4.30, x64) with ``python bench/vs_neural_tangents.py dump
tests/data/nt_stax_reference.npz --n 24``: an independent implementation's
numbers for every activation × parameterization × bias setting (depth 3).
"""

import json
import pathlib

import numpy as np
import pytest

import ntkfast as nk

PATH = pathlib.Path(__file__).parent / "data" / "nt_stax_reference.npz"
ACTS = {"relu": nk.ReLU(), "leaky_relu(0.1)": nk.LeakyReLU(0.1), "abs": nk.Abs(),
        "abrelu(-0.3,2)": nk.ABReLU(-0.3, 2.0), "erf": nk.Erf(),
        "erf(2,0.5,0.3)": nk.Erf(2.0, 0.5, 0.3), "gelu": nk.GELU(), "identity": nk.Identity()}


def _cases():
    f = np.load(PATH)
    return [(i, cfg) for i, cfg in enumerate(json.loads(str(f["meta"])))]


@pytest.mark.parametrize("backend", ["compiled", "reference"])
@pytest.mark.parametrize("i, cfg", _cases(), ids=lambda v: v if isinstance(v, int) else
                         f"{v['act']}-{v['parameterization']}-{v['b_std']}")
def test_matches_neural_tangents(i, cfg, backend):
    from ntkfast.backends import compiled_available
    if backend == "compiled" and not compiled_available():
        pytest.skip("compiled extension not built")
    f = np.load(PATH)
    n = int(f["n"])
    rng = np.random.default_rng(0)  # the same data as bench/vs_neural_tangents.py
    X, Z = rng.standard_normal((n, 32)), rng.standard_normal((n // 2, 32))
    net = nk.MLP(depth=cfg["depth"], activation=ACTS[cfg["act"]], w_std=cfg["w_std"],
                 b_std=cfg["b_std"], parameterization=cfg["parameterization"],
                 width=cfg["width"])
    k = net.kernels(X, Z, backend=backend)
    for ours, theirs in ((k.nngp, f[f"nngp{i}"]), (k.ntk, f[f"ntk{i}"])):
        # relative to the matrix scale: single entries may be sums that cancel
        assert np.max(np.abs(ours - theirs)) <= 1e-13 * np.max(np.abs(theirs))
