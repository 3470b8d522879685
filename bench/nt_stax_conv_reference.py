"""Reference kernels from neural-tangents' ``stax`` for convolutional, pooling,
residual and LayerNorm networks (the numbers ``tests/test_vs_neural_tangents_conv.py``
holds ntkfast to).

Runs in an environment with neural-tangents and JAX only (it does not import
ntkfast), e.g.::

    python3 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30
    /tmp/ntenv/bin/python bench/nt_stax_conv_reference.py tests/data/nt_stax_conv_reference.npz

Every architecture is a JSON-able list of layers in nt's ``stax`` vocabulary::

    ["Conv", {"out_chan": 4, "filter_shape": [3, 3], "padding": "SAME", "W_std": 1.5}]
    ["parallel", [[...branch 0 layers...], [...branch 1 layers...]]]

built with ``getattr(stax, name)(**kwargs)`` (lists of ``filter_shape``, ``strides``,
``window_shape`` become tuples); a keyword left out takes nt's default, which is how
the defaults are pinned (Conv ``padding``, AvgPool ``strides``, LayerNorm ``eps``, ...);
``ElementwiseNumerical``'s ``fn``/``df`` are names from :data:`FUNCTIONS` ("tanh", "dtanh").

For architecture ``i`` the file holds ``x{i}`` (N = 6 rows), ``z{i}`` (M = 4 rows),
``nngp_xz{i}``, ``ntk_xz{i}`` (K(X, Z), N×M) and ``nngp_xx{i}``, ``ntk_xx{i}``
(K(X, X) with ``x2=None``, N×N, nt's own diagonal included), float64 with
``jax_enable_x64``.  ``meta`` is a JSON string: versions, the architectures with
their input shapes and seeds, and the nt defaults found (signatures and numerical
checks, e.g. that ``AvgPool(w)`` equals ``AvgPool(w, strides=(1, ...))``).
"""

from __future__ import annotations

import inspect
import json
import platform
import sys

import numpy as np

N_X, N_Z = 6, 4
TUPLE_KEYS = ("filter_shape", "strides", "window_shape")


def conv(c, f, **kw):
    return ["Conv", dict(out_chan=c, filter_shape=list(f), **kw)]


def dense(d, **kw):
    return ["Dense", dict(out_dim=d, **kw)]


def act(name, **kw):
    return [name, kw]


def pool(w, **kw):
    return ["AvgPool", dict(window_shape=list(w), **kw)]


def residual(*branches):
    return [["FanOut", {"num": len(branches)}], ["parallel", [list(b) for b in branches]],
            ["FanInSum", {}]]


def wrn_block(channels, strides=(1, 1), channel_mismatch=False):
    """nt README's WideResnetBlock."""
    main = ["serial", [RELU, conv(channels, (3, 3), strides=list(strides), padding="SAME"),
                       RELU, conv(channels, (3, 3), padding="SAME")]]
    shortcut = IDENT if not channel_mismatch else \
        conv(channels, (3, 3), strides=list(strides), padding="SAME")
    return ["serial", [["FanOut", {"num": 2}], ["parallel", [[main], [shortcut]]],
                       ["FanInSum", {}]]]


def wrn_group(n, channels, strides=(1, 1)):
    """nt README's WideResnetGroup."""
    return [wrn_block(channels, strides, channel_mismatch=True)] + \
        [wrn_block(channels, (1, 1)) for _ in range(n - 1)]


RELU, FLAT, GAP, IDENT = act("Relu"), act("Flatten"), act("GlobalAvgPool"), act("Identity")

# name -> (per-example input shape, layers)
ARCHS = [
    ("conv2d_same_relu_flatten", (5, 7, 3), [
        conv(8, (3, 3), strides=[1, 1], padding="SAME", W_std=1.5, b_std=0.1), RELU, FLAT,
        dense(1, W_std=1.0, b_std=None)]),
    ("conv2d_default_padding_valid", (6, 5, 2), [
        conv(4, (3, 2), W_std=1.3),                       # padding, strides: nt defaults
        act("Erf"), conv(4, (2, 2), padding="VALID", W_std=1.1, b_std=0.2), RELU, GAP,
        dense(1, W_std=2.0, b_std=0.05)]),
    ("conv2d_circular_even_odd", (5, 6, 2), [
        conv(4, (2, 2), padding="CIRCULAR", W_std=1.2, b_std=0.1), RELU,
        conv(4, (3, 3), padding="CIRCULAR", W_std=1.4), act("Abs"), FLAT,
        dense(1, W_std=1.0, b_std=0.1)]),
    ("conv2d_stride2_same_valid", (7, 7, 3), [
        conv(4, (3, 3), strides=[2, 2], padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (2, 2), strides=[2, 1], padding="VALID", W_std=1.2), act("Gelu"), GAP,
        dense(1, W_std=1.0)]),
    ("conv2d_stride2_circular_even", (6, 8, 2), [
        conv(3, (4, 4), strides=[2, 2], padding="CIRCULAR", W_std=1.3, b_std=0.1), RELU,
        conv(3, (2, 3), strides=[1, 2], padding="CIRCULAR", W_std=1.3), RELU, FLAT,
        dense(1, W_std=1.0)]),
    ("conv2d_same_even_filter_stride2", (5, 7, 2), [
        conv(4, (2, 4), strides=[2, 2], padding="SAME", W_std=1.3, b_std=0.2),
        act("LeakyRelu", alpha=0.1), conv(4, (3, 3), padding="SAME", W_std=1.2), RELU,
        FLAT, dense(1, W_std=1.0)]),
    ("conv1d_same_valid_stride", (9, 3), [
        conv(4, (3,), padding="SAME", W_std=1.5, b_std=0.1), RELU,
        conv(4, (4,), strides=[2], padding="VALID", W_std=1.3),
        act("LeakyRelu", alpha=0.1), FLAT, dense(1, W_std=1.0, b_std=0.1)]),
    ("conv1d_circular_pool", (8, 2), [
        conv(4, (5,), padding="CIRCULAR", W_std=1.2, b_std=0.3),
        act("Erf", a=2.0, b=0.5, c=0.3), pool((2,), strides=[2], padding="VALID"),
        conv(4, (3,), padding="CIRCULAR", W_std=1.4), RELU, FLAT, dense(1)]),
    ("conv1d_filter_larger_than_input_same", (4, 3), [
        conv(4, (5,), padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (6,), strides=[2], padding="SAME", W_std=1.3), RELU, GAP, dense(1)]),
    ("avgpool_default_strides", (6, 6, 2), [
        conv(4, (3, 3), padding="SAME", W_std=1.4), RELU,
        pool((2, 2)),                                     # strides, padding: nt defaults
        conv(4, (2, 2), padding="VALID", W_std=1.3), RELU, FLAT, dense(1)]),
    ("avgpool_same_stride2_gap", (5, 7, 2), [
        conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (2, 2), padding="SAME", W_std=1.2),
        pool((3, 3), strides=[2, 2], padding="SAME"), act("Erf"), GAP,
        dense(1, W_std=1.5, b_std=0.1)]),
    ("avgpool1d_same_strides_none", (7, 3), [
        conv(4, (3,), padding="SAME", W_std=1.4), RELU,
        pool((3,), strides=None, padding="SAME"),
        conv(4, (2,), padding="VALID", W_std=1.3), RELU, FLAT, dense(1)]),
    ("avgpool_circular_and_valid", (6, 5, 2), [
        conv(4, (3, 3), padding="SAME", W_std=1.3), RELU,
        pool((2, 2), strides=[1, 1], padding="CIRCULAR"),
        conv(4, (2, 2), padding="SAME", W_std=1.2), RELU,
        pool((3, 2), strides=[2, 1], padding="VALID"), FLAT, dense(1, b_std=0.1)]),
    ("dense_on_spatial", (5, 5, 2), [
        conv(4, (3, 3), padding="VALID", W_std=1.4), RELU,
        dense(6, W_std=1.4, b_std=0.2), act("Gelu"),
        pool((2, 2), strides=[1, 1]), FLAT, dense(1)]),
    ("dense_on_raw_signal_then_flatten", (5, 3), [
        dense(4, W_std=1.3, b_std=0.1), RELU, dense(4, W_std=1.2), act("Erf"), FLAT,
        dense(3, W_std=1.1, b_std=0.1), RELU, dense(1)]),
    ("flatten_input_mlp", (4, 3, 2), [
        FLAT, dense(8, W_std=1.5, b_std=0.1), RELU, dense(1, W_std=1.0)]),
    ("resnet_block_identity", (6, 6, 3), [
        conv(3, (3, 3), padding="SAME", W_std=1.3), *residual(
            [RELU, conv(3, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), RELU,
             conv(3, (3, 3), padding="SAME", W_std=1.2)],
            [IDENT]),
        RELU, GAP, dense(1)]),
    ("resnet1d_three_branches", (8, 2), [
        conv(2, (3,), padding="CIRCULAR", W_std=1.3), *residual(
            [RELU, conv(2, (3,), padding="SAME", W_std=1.4)],
            [IDENT],
            [act("Erf"), conv(2, (1,), padding="SAME", W_std=0.9, b_std=0.2)]),
        act("Gelu"), pool((2,), strides=[2]), FLAT, dense(1)]),
    ("layernorm_conv", (5, 6, 2), [
        conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.3),
        ["LayerNorm", {"axis": -1}], RELU,
        conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2),
        ["LayerNorm", {"axis": -1, "eps": 0.5}], act("Erf"), FLAT,
        dense(4, W_std=1.2, b_std=0.1), ["LayerNorm", {}], RELU, dense(1)]),
    ("activation_zoo", (6, 5, 2), [
        conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.1),
        act("ABRelu", a=-0.3, b=2.0), conv(4, (3, 3), padding="SAME", W_std=1.1),
        IDENT, conv(4, (2, 2), padding="VALID", W_std=1.2), act("Abs"),
        conv(4, (3, 3), padding="SAME", W_std=1.0, b_std=0.2), act("Gelu"), GAP,
        dense(4, W_std=1.5, b_std=0.1), act("LeakyRelu", alpha=0.1), dense(1)]),
    ("sin_cos_sigmoid_like", (6, 3), [
        conv(4, (3,), padding="SAME", W_std=1.2, b_std=0.1), act("Sin", a=1.2, b=0.8, c=0.3),
        conv(4, (3,), padding="SAME", W_std=1.3), act("Cos", a=0.9, b=1.1, c=-0.2),
        conv(4, (2,), padding="VALID", W_std=1.1), act("Sigmoid_like"), FLAT, dense(1)]),
    ("standard_param_conv_flatten", (5, 5, 2), [
        conv(5, (3, 3), padding="SAME", W_std=1.3, b_std=0.1, parameterization="standard"),
        RELU, conv(7, (2, 2), padding="VALID", W_std=1.2, parameterization="standard"), RELU,
        FLAT, dense(3, W_std=1.1, b_std=0.2, parameterization="standard"), RELU,
        dense(1, W_std=1.0, parameterization="standard")]),
    ("standard_param_1d_pool_zero_bias", (8, 3), [
        conv(6, (3,), strides=[2], padding="CIRCULAR", W_std=1.4, b_std=0.0,
             parameterization="standard"), act("Erf"),
        pool((2,), strides=[1], padding="SAME"),
        conv(5, (2,), padding="VALID", W_std=1.2, b_std=0.1, parameterization="standard"),
        RELU, GAP, dense(2, W_std=1.3, b_std=0.0, parameterization="standard"),
        act("Gelu"), dense(1, W_std=1.0, b_std=0.1, parameterization="standard")]),
    ("mixed_param_resnet", (5, 5, 2), [
        conv(3, (3, 3), padding="SAME", W_std=1.3, parameterization="standard"), *residual(
            [RELU, conv(3, (3, 3), padding="SAME", W_std=1.4, b_std=0.1,
                        parameterization="standard")],
            [IDENT]),
        RELU, FLAT, dense(1, W_std=1.0, b_std=0.1, parameterization="standard")]),
    ("deep_cnn_depth6", (8, 8, 1), [
        conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (3, 3), strides=[2, 2], padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), RELU,
        conv(4, (2, 2), padding="VALID", W_std=1.4, b_std=0.1), RELU,
        conv(4, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1), RELU,
        GAP, dense(1, W_std=1.0, b_std=0.1)]),
    ("deep_resnet1d_3_blocks", (7, 2), [
        conv(2, (3,), padding="SAME", W_std=1.2),
        *[layer for _ in range(3) for layer in residual(
            [RELU, conv(2, (3,), padding="SAME", W_std=1.3, b_std=0.1), RELU,
             conv(2, (3,), padding="SAME", W_std=1.1)],
            [IDENT])],
        RELU, GAP, dense(1)]),
    ("myrtle_like", (8, 8, 3), [
        conv(4, (3, 3), padding="SAME", W_std=2 ** 0.5), RELU,
        conv(4, (3, 3), padding="SAME", W_std=2 ** 0.5), RELU,
        pool((2, 2), strides=[2, 2]),
        conv(4, (3, 3), padding="SAME", W_std=2 ** 0.5), RELU,
        pool((2, 2), strides=[2, 2]), GAP, dense(1)]),
    ("elementwise_numerical_tanh", (6, 2), [
        conv(4, (3,), padding="SAME", W_std=1.3, b_std=0.1),
        ["ElementwiseNumerical", {"fn": "tanh", "deg": 25}],   # derivative by jax.grad
        conv(4, (3,), padding="SAME", W_std=1.2),
        ["ElementwiseNumerical", {"fn": "tanh", "deg": 25, "df": "dtanh"}], FLAT, dense(1)]),
    # nt's README examples, scaled down (tests/test_stax_dropin.py writes them in nt's style)
    ("nt_readme_conv", (6, 6, 3), [
        conv(32, (3, 3)), RELU, FLAT, ["Dense", {"out_dim": 1, "W_std": 2.0, "b_std": 0.05}]]),
    ("nt_readme_wide_resnet", (8, 8, 3), [
        conv(16, (3, 3), padding="SAME"),
        *wrn_group(1, 16), *wrn_group(1, 32, (2, 2)),
        pool((2, 2)), FLAT, dense(1, W_std=1.0, b_std=0.0)]),
]


#: functions named in ElementwiseNumerical's "fn"/"df" (JSON holds their names)
FUNCTIONS = {"tanh": lambda u: __import__("jax").numpy.tanh(u),
             "dtanh": lambda u: 1 - __import__("jax").numpy.tanh(u) ** 2}


def _args(kw):
    return {k: (tuple(v) if k in TUPLE_KEYS and isinstance(v, list) else
                FUNCTIONS[v] if k in ("fn", "df") else v)
            for k, v in kw.items()}


def build(stax, layers):
    """(init_fn, apply_fn, kernel_fn) of a JSON layer list (nested for parallel)."""
    out = []
    for name, kw in layers:
        if name == "parallel":
            out.append(stax.parallel(*[build(stax, b) for b in kw]))
        elif name == "serial":
            out.append(build(stax, kw))
        else:
            out.append(getattr(stax, name)(**_args(kw)))
    return stax.serial(*out)


def data(i, shape):
    rng = np.random.default_rng(1000 + i)
    return rng.standard_normal((N_X, *shape)), rng.standard_normal((N_Z, *shape))


def pinned_defaults(stax):
    """nt's defaults from its signatures, and numerical checks of those that matter."""
    import neural_tangents as nt  # noqa: F401

    sig = {}
    for name in ("Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm", "Erf",
                 "Gelu", "LeakyRelu", "Relu", "Sin", "Cos", "FanOut"):
        params = inspect.signature(inspect.unwrap(getattr(stax, name))).parameters
        sig[name] = {k: (repr(p.default) if p.default is not p.empty else "<required>")
                     for k, p in params.items()}
    checks = {}
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 5, 2))
    z = rng.standard_normal((2, 6, 5, 2))

    def k(*layers):
        return np.asarray(stax.serial(*layers, stax.Flatten(), stax.Dense(1))[2](
            x, z, "ntk"))

    c = stax.Conv(3, (3, 3), padding="SAME")
    base = k(c, stax.Relu(), stax.AvgPool((2, 2)))
    checks["AvgPool(w) vs strides=(1,1)"] = float(np.max(np.abs(
        base - k(c, stax.Relu(), stax.AvgPool((2, 2), strides=(1, 1))))))
    checks["AvgPool(w) vs strides=w"] = float(np.max(np.abs(
        base - k(c, stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2))))))
    checks["AvgPool(w) vs padding='VALID'"] = float(np.max(np.abs(
        base - k(c, stax.Relu(), stax.AvgPool((2, 2), strides=(1, 1), padding="VALID")))))
    base = k(stax.Conv(3, (3, 3)))
    checks["Conv default vs padding='VALID'"] = float(np.max(np.abs(
        base - k(stax.Conv(3, (3, 3), padding="VALID")))))
    checks["Conv default vs padding='SAME'"] = float(np.max(np.abs(
        base - k(stax.Conv(3, (3, 3), padding="SAME")))))
    base = k(stax.Conv(3, (3, 3), padding="SAME"), stax.LayerNorm(), stax.Relu())
    checks["LayerNorm() vs eps=1e-12, axis=-1"] = float(np.max(np.abs(base - k(
        stax.Conv(3, (3, 3), padding="SAME"), stax.LayerNorm(axis=-1, eps=1e-12),
        stax.Relu()))))
    summary = {
        "AvgPool.strides=None": "ones: stride 1 on every axis (NOT the window shape)"
        if checks["AvgPool(w) vs strides=(1,1)"] == 0 and checks["AvgPool(w) vs strides=w"] > 0
        else "UNEXPECTED, see checks",
        "AvgPool.padding": sig["AvgPool"]["padding"],
        "AvgPool.normalize_edges": sig["AvgPool"]["normalize_edges"],
        "Conv.padding": sig["Conv"]["padding"],
        "Conv.strides=None": "ones",
        "Conv.b_std": sig["Conv"]["b_std"], "Conv.W_std": sig["Conv"]["W_std"],
        "Dense.b_std": sig["Dense"]["b_std"], "Dense.W_std": sig["Dense"]["W_std"],
        "Dense.parameterization": sig["Dense"]["parameterization"],
        "LayerNorm.eps": sig["LayerNorm"]["eps"], "LayerNorm.axis": sig["LayerNorm"]["axis"],
        "Erf": [sig["Erf"][a] for a in "abc"], "Gelu.approximate": sig["Gelu"]["approximate"],
        "LeakyRelu.alpha": sig["LeakyRelu"]["alpha"],
    }
    return {"summary": summary, "signatures": sig, "numerical_checks_max_abs_diff": checks}


def main(path):
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    out, archs = {}, []
    for i, (name, shape, layers) in enumerate(ARCHS):
        X, Z = data(i, shape)
        kfn = build(stax, layers)[2]
        kxz = kfn(X, Z, ("nngp", "ntk"))
        kxx = kfn(X, None, ("nngp", "ntk"))
        out[f"x{i}"], out[f"z{i}"] = X, Z
        out[f"nngp_xz{i}"], out[f"ntk_xz{i}"] = np.asarray(kxz.nngp), np.asarray(kxz.ntk)
        out[f"nngp_xx{i}"], out[f"ntk_xx{i}"] = np.asarray(kxx.nngp), np.asarray(kxx.ntk)
        for key in ("nngp_xz", "ntk_xz", "nngp_xx", "ntk_xx"):
            a = out[f"{key}{i}"]
            assert a.dtype == np.float64 and np.all(np.isfinite(a)), (name, key)
        assert out[f"nngp_xz{i}"].shape == (N_X, N_Z), (name, out[f"nngp_xz{i}"].shape)
        archs.append({"index": i, "name": name, "x_shape": list(X.shape),
                      "z_shape": list(Z.shape), "seed": 1000 + i, "layers": layers})
        print(f"{i:2d} {name:40s} x {X.shape} ntk[0,0] {out[f'ntk_xx{i}'][0, 0]:.6g}")
    meta = {
        "generator": "bench/nt_stax_conv_reference.py",
        "neural_tangents": nt.__version__, "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "numpy": np.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "jax_backend": jax.default_backend(),
        "x64": True,
        "data": "x{i}, z{i} = numpy.random.default_rng(1000 + i).standard_normal((6, *shape)),"
                " then (4, *shape)",
        "layout": "kernel_fn(x, z, ('nngp', 'ntk')) -> nngp_xz{i}, ntk_xz{i}; "
                  "kernel_fn(x, None, ('nngp', 'ntk')) -> nngp_xx{i}, ntk_xx{i}",
        "nt_defaults": pinned_defaults(stax),
        "architectures": archs,
    }
    np.savez_compressed(path, meta=json.dumps(meta), **out)
    print(json.dumps(meta["nt_defaults"]["summary"], indent=1))
    print(json.dumps(meta["nt_defaults"]["numerical_checks_max_abs_diff"], indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nt_stax_conv_reference.npz")
