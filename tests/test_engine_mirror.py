"""The mirrored writes of K(X, X) in the compiled FC engine, at every instruction-set
level: the lower triangle is the bit copy of the upper one.  Sizes and tiles are chosen
so that the streamed path (rows a multiple of 64 bytes: N a multiple of 16) with whole
16-row groups (the in-register transposes of x86-64-v4), partial groups and partial
column blocks occurs, and the plain-store path (N = 301, 133)."""

import numpy as np
import pytest

import ntkfast as nk
from conftest import requires_compiled
from ntkfast._alloc import aligned

pytestmark = requires_compiled

compiled = pytest.importorskip("ntkfast.backends.compiled")
from conftest import ISA_LEVELS as LEVELS  # noqa: E402


def _fill(net, X, dtype, tile, mirror, outs):
    """Σ and Θ of K(X, X) into ``outs`` through the engine's multi-kernel entry."""
    from ntkfast.backends.reference import layer_variances

    spec = net._spec(X.shape[1])
    q = layer_variances(spec, X)
    depth = spec.depth
    s_slot = [-1] * depth + [0]
    t_slot = [-1] * depth + [1]
    compiled.CompiledEngine().fill_multi(spec, X, None, outs, s_slot, t_slot, [0],
                                         symmetric=True, dtype=dtype, tile=tile, n_jobs=2,
                                         qx=q, qz=q, mirror=mirror)


@pytest.mark.parametrize("at_level", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, tile", [(320, 64), (272, 16), (400, 256), (304, 32), (64, 32),
                                     (301, 64), (133, 256)])
def test_mirror_is_bit_copy_of_upper_triangle(at_level, dtype, n, tile, rng):
    X = rng.standard_normal((n, 13)).astype(dtype)
    net = nk.MLP(depth=3, w_std=1.3, b_std=0.2)
    mirrored = [aligned((n, n), dtype) for _ in range(2)]
    upper = [aligned((n, n), dtype, zero=True) for _ in range(2)]
    _fill(net, X, dtype, tile, True, mirrored)
    _fill(net, X, dtype, tile, False, upper)
    iu = np.triu_indices(n, 1)
    for m, u in zip(mirrored, upper):
        assert np.array_equal(m[iu], u[iu])                 # the same upper triangle
        assert np.array_equal(m.T[iu], u[iu])               # its bit copy below
        assert np.array_equal(np.tril(u, -1), np.zeros_like(u))  # mirror=False: untouched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mirror_identical_across_levels(dtype, rng):
    """Every level writes the same lower triangle (the v4 transposes are bit moves)."""
    levels = compiled.isa_levels()
    if len(levels) < 2:
        pytest.skip(f"one level only here ({levels})")
    X = rng.standard_normal((272, 16)).astype(dtype)
    net = nk.MLP(depth=2, w_std=1.3, b_std=0.2)
    results = []
    for level in levels:
        previous = compiled.set_isa(level)
        try:
            k = net.kernels(X, dtype=dtype, tile=32)
        finally:
            compiled.set_isa(previous)
        il = np.tril_indices(len(X), -1)
        iu = (il[1], il[0])
        assert np.array_equal(k.ntk[il], k.ntk[iu]) and np.array_equal(k.nngp[il], k.nngp[iu])
        results.append(k)
    ref = results[-1].ntk
    for k in results[:-1]:  # levels agree to rounding (FMA contraction may differ)
        assert np.max(np.abs(k.ntk - ref)) <= 1e-5 * np.max(np.abs(ref))
