"""Every instruction-set level of the FC tile kernel (x86-64-v4, -v3, baseline) against
the NumPy oracle, and NTKFAST_ISA.  On a CPU without AVX-512 the v4 cases are skipped;
on non-x86 only the baseline exists."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ntkfast as nk
from conftest import ALL_ACTIVATIONS, requires_compiled

pytestmark = requires_compiled

compiled = pytest.importorskip("ntkfast.backends.compiled")
from conftest import ISA_LEVELS as LEVELS  # noqa: E402
TOL = {np.float64: 1e-13, np.float32: 2e-5}


def scale_err(a, b):
    return np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b))


def _inputs(rng):
    """Random rows plus duplicates, scaled copies, near-parallel and antiparallel rows
    (the pairs where the exact-angle paths of the kernel run)."""
    X = rng.standard_normal((70, 13)) * rng.uniform(0.3, 2.0, size=(70, 1))
    X[10] = X[3]
    X[11] = 2.5 * X[3]
    X[12] = X[4] + 1e-7 * rng.standard_normal(13)
    X[13] = -X[5]
    X[14] = -X[6] + 1e-6 * rng.standard_normal(13)
    Z = np.vstack([rng.standard_normal((40, 13)), X[:5], -0.5 * X[5:8]])
    return X, Z


@pytest.mark.parametrize("at_level", LEVELS, indirect=True)
@pytest.mark.parametrize("depth", [1, 3, 8])
def test_level_matches_reference(at_level, depth, rng):
    """Random rows (no near-parallel pairs, where the textbook oracle itself loses digits)."""
    X = rng.standard_normal((70, 13)) * rng.uniform(0.3, 2.0, size=(70, 1))
    Z = rng.standard_normal((45, 13))
    for act in ALL_ACTIVATIONS:
        for b_std in (None, 0.3):
            net = nk.MLP(depth=depth, activation=act, w_std=1.3, b_std=b_std)
            ref = net.kernels(X, Z, backend="reference")
            ref_sym = net.kernels(X, backend="reference")
            for dtype in (np.float64, np.float32):
                got = net.kernels(X, Z, dtype=dtype, backend="compiled", tile=16)
                sym = net.kernels(X, dtype=dtype, backend="compiled", tile=16)
                for a, b in ((got.nngp, ref.nngp), (got.ntk, ref.ntk),
                             (sym.nngp, ref_sym.nngp), (sym.ntk, ref_sym.ntk)):
                    assert scale_err(a, b) <= TOL[dtype], (at_level, act, b_std, dtype)


@pytest.mark.parametrize("at_level", LEVELS, indirect=True)
def test_level_near_parallel_pairs_mpmath(at_level, rng):
    """Duplicates, scaled copies, near-parallel and near-antiparallel pairs (the exact-angle
    paths) against the 40-digit recursion, ≤ 1e-13 of each pair's scale."""
    mp_kernels = pytest.importorskip("test_precision_mpmath").mp_kernels
    X, Z = _inputs(rng)
    sym_pairs = [(10, 3), (11, 3), (12, 4), (13, 5), (14, 6), (0, 1)]
    cross_pairs = [(3, 43), (11, 43), (5, 45), (13, 45), (0, 2)]  # Z[40:] = X[:5], -X[5:8]/2
    for act in (nk.ReLU(), nk.LeakyReLU(0.1), nk.ABReLU(-0.3, 2.0)):
        for depth, b_std in ((1, None), (4, 0.3)):
            net = nk.MLP(depth=depth, activation=act, w_std=1.3, b_std=b_std)
            sym = net.kernels(X, backend="compiled", tile=16)
            cross = net.kernels(X, Z, backend="compiled", tile=16)
            for ks, B, pairs in ((sym, X, sym_pairs), (cross, Z, cross_pairs)):
                for i, j in pairs:
                    want = [float(v) for v in mp_kernels(net, X[i], B[j])]
                    wx = [float(v) for v in mp_kernels(net, X[i], X[i])]
                    wz = [float(v) for v in mp_kernels(net, B[j], B[j])]
                    for g, w, a, b in zip((ks.nngp[i, j], ks.ntk[i, j]), want, wx, wz):
                        # the pair's own scale √(K(x,x) K(z,z)); ~|K(x,z)| when near-parallel
                        scale = np.sqrt(a * b)
                        assert abs(g - w) <= 1e-13 * scale, (at_level, act, depth, i, j)


def test_levels_agree(rng):
    """All available levels give the same float64 kernels to rounding (≤ 1e-13 of the scale;
    not bitwise: the baseline has no FMA)."""
    X, Z = _inputs(rng)
    net = nk.MLP(depth=5, activation="relu", w_std=1.4, b_std=0.2)
    previous = compiled.isa()
    results = {}
    try:
        for level in compiled.isa_levels():
            compiled.set_isa(level)
            results[level] = net.kernels(X, Z, backend="compiled")
    finally:
        compiled.set_isa(previous)
    first = results[compiled.isa_levels()[-1]]
    for level, ks in results.items():
        assert scale_err(ks.ntk, first.ntk) <= 1e-13, level
        assert scale_err(ks.nngp, first.nngp) <= 1e-13, level


def test_set_isa_errors_and_auto():
    with pytest.raises(ValueError, match="level"):
        compiled.set_isa("avx9000")
    previous = compiled.set_isa("auto")
    try:
        assert compiled.isa() == compiled.isa_levels()[-1]
    finally:
        compiled.set_isa(previous)
    assert "baseline" in compiled.isa_levels()


def _isa_in_subprocess(value):
    env = dict(os.environ, NTKFAST_ISA=value)
    code = ("import warnings; warnings.simplefilter('always');"
            "import ntkfast.backends.compiled as c; print(c.isa())")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return run.stdout.strip(), run.stderr


@pytest.mark.parametrize("value", ["x86-64-v3", "baseline", "auto"])
def test_env_var_selects_level(value):
    levels = compiled.isa_levels()
    got, err = _isa_in_subprocess(value)
    expected = levels[-1] if value == "auto" or value not in levels else value
    assert got == expected
    if value in levels or value == "auto":
        assert "NTKFAST_ISA" not in err


def test_env_var_bad_value_warns():
    got, err = _isa_in_subprocess("pentium")
    assert got == compiled.isa_levels()[-1]
    assert "NTKFAST_ISA" in err and "RuntimeWarning" in err
