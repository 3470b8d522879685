"""ntkfast against neural-tangents' ``stax``: same numbers, and how much faster.

neural-tangents needs JAX; run its half in an environment that has it and ours
in this one (they need not be the same Python environment):

    # 1. in an environment with neural-tangents (e.g. neural-tangents 0.6.5, jax 0.4.30):
    python bench/vs_neural_tangents.py dump nt.npz [--n 2000]
    # 2. here:
    python bench/vs_neural_tangents.py compare nt.npz

``dump`` evaluates NT's infinite-width kernels (float64, x64 enabled) for every
activation × parameterization × bias setting on seeded data and records its
wall times (best of 3, after a warm-up call that includes JIT compilation);
``compare`` recomputes them with ntkfast and prints the maximum relative
difference and the time ratio NT / ntkfast per configuration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

ACTIVATIONS = {
    "relu": ("Relu", ()), "leaky_relu(0.1)": ("LeakyRelu", (0.1,)), "abs": ("Abs", ()),
    "abrelu(-0.3,2)": ("ABRelu", (-0.3, 2.0)), "erf": ("Erf", ()),
    "erf(2,0.5,0.3)": ("Erf", (2.0, 0.5, 0.3)), "gelu": ("Gelu", ()), "identity": ("Identity", ()),
}
CONFIGS = [dict(act=a, parameterization=p, b_std=b, depth=3, w_std=1.3, width=256)
           for a, p, b in itertools.product(ACTIVATIONS, ("ntk", "standard"), (None, 0.2))]


def data(n, d=32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), rng.standard_normal((n // 2, d))


def nt_kernel_fn(cfg):
    from neural_tangents import stax

    name, args = ACTIVATIONS[cfg["act"]]
    act = getattr(stax, name)
    dense = dict(W_std=cfg["w_std"], b_std=cfg["b_std"], parameterization=cfg["parameterization"])
    depth, width = cfg["depth"], cfg["width"]
    layers = [stax.Dense(width if depth else 1, **dense)]
    for i in range(depth):
        layers += [act(*args), stax.Dense(width if i < depth - 1 else 1, **dense)]
    return stax.serial(*layers)[2]


def best_of(fn, repeat=3):
    fn()  # warm-up (JIT)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def dump(path, n):
    import jax

    jax.config.update("jax_enable_x64", True)
    X, Z = data(n)
    out, meta = {}, []
    for i, cfg in enumerate(CONFIGS):
        kfn = jax.jit(nt_kernel_fn(cfg), static_argnames="get")
        k = kfn(X, Z, get=("nngp", "ntk"))
        out[f"nngp{i}"], out[f"ntk{i}"] = np.asarray(k.nngp), np.asarray(k.ntk)
        t = best_of(lambda: kfn(X, Z, get=("nngp", "ntk")).ntk.block_until_ready())
        meta.append(dict(cfg, seconds=t))
        print(f"{i:2d} {cfg}: {t:.3f} s")
    np.savez(path, meta=json.dumps(meta), n=n, **out)


def compare(path):
    import ntkfast as nk

    f = np.load(path)
    meta = json.loads(str(f["meta"]))
    X, Z = data(int(f["n"]))
    acts = {"relu": nk.ReLU(), "leaky_relu(0.1)": nk.LeakyReLU(0.1), "abs": nk.Abs(),
            "abrelu(-0.3,2)": nk.ABReLU(-0.3, 2.0), "erf": nk.Erf(),
            "erf(2,0.5,0.3)": nk.Erf(2.0, 0.5, 0.3), "gelu": nk.GELU(), "identity": nk.Identity()}
    print(f"{'activation':>16} {'param':>9} {'b_std':>5} {'max rel diff Σ':>15} "
          f"{'max rel diff Θ':>15} {'NT s':>8} {'ours s':>8} {'NT/ours':>8}")
    for i, cfg in enumerate(meta):
        net = nk.MLP(depth=cfg["depth"], activation=acts[cfg["act"]], w_std=cfg["w_std"],
                     b_std=cfg["b_std"], parameterization=cfg["parameterization"],
                     width=cfg["width"])
        k = net.kernels(X, Z)
        ds = np.max(np.abs(k.nngp - f[f"nngp{i}"]) / np.abs(f[f"nngp{i}"]).max())
        dt = np.max(np.abs(k.ntk - f[f"ntk{i}"]) / np.abs(f[f"ntk{i}"]).max())
        t = best_of(lambda: net.kernels(X, Z))
        print(f"{cfg['act']:>16} {cfg['parameterization']:>9} {str(cfg['b_std']):>5} "
              f"{ds:15.2e} {dt:15.2e} {cfg['seconds']:8.3f} {t:8.3f} {cfg['seconds'] / t:8.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("path")
    d.add_argument("--n", type=int, default=2000)
    c = sub.add_parser("compare")
    c.add_argument("path")
    a = ap.parse_args()
    dump(a.path, a.n) if a.cmd == "dump" else compare(a.path)
