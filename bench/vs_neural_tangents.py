"""ntkfast against neural-tangents' ``stax``: same numbers, and how much faster.

neural-tangents needs JAX; run its half in an environment that has it and ours
in this one (they need not be the same Python environment):

    # 1. in an environment with neural-tangents (e.g. neural-tangents 0.6.5, jax 0.4.30):
    python bench/vs_neural_tangents.py dump nt.npz [--n 2000]
    # 2. here:
    python bench/vs_neural_tangents.py compare nt.npz

A third form runs both halves side by side in one run (nt in its own environment as
a subprocess, alternating with ours), for the ReLU MLP at several input dimensions
and both dtypes — K(X, X), Σ and Θ, depth 3:

    python bench/vs_neural_tangents.py dims [--n 4000] [--dims 784 16]
                                         [--nt-python /tmp/ntenv/bin/python]

It also times, alternating with ours in the same process, BLAS ``syrk`` of the same X
(a Gram matrix must at least be formed) and the *floor* of any K(X, X) engine here:
allocating both N×N outputs and writing every element once, on the same threads
(the kernel zeroes fresh pages, then the write; freeing included, as for ours).
"floor/ours" is the fraction of that floor reached.  CPU seconds (all threads) are
printed next to the wall times: on a shared machine they move less.  Without nt's
environment (no ``--nt-python``) the nt columns are left empty.

``dump`` evaluates NT's infinite-width kernels (float64, x64 enabled) for every
activation × parameterization × bias setting on seeded data and records its
wall times (best of 3, after a warm-up call that includes JIT compilation);
``compare`` recomputes them with ntkfast and prints the maximum relative
difference and the time ratio NT / ntkfast per configuration.
"""

from __future__ import annotations

import argparse
import gc
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


DIMS_NET = dict(depth=3, w_std=1.3, b_std=0.2)


def nt_dims(x_path, out_path, dtype, repeat):
    """nt's half of ``dims`` (runs in nt's environment): best-of-``repeat`` K(X, X)."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    from neural_tangents import stax

    X = np.load(x_path).astype(dtype)
    layers = [stax.Dense(512, W_std=DIMS_NET["w_std"], b_std=DIMS_NET["b_std"])]
    for i in range(DIMS_NET["depth"]):
        layers += [stax.Relu(), stax.Dense(512 if i < DIMS_NET["depth"] - 1 else 1,
                                           W_std=DIMS_NET["w_std"], b_std=DIMS_NET["b_std"])]
    kfn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
    k = kfn(X, None, get=("nngp", "ntk"))
    k.ntk.block_until_ready()
    t = best_of(lambda: kfn(X, None, get=("nngp", "ntk")).ntk.block_until_ready(), repeat)
    np.savez(out_path, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk), seconds=t)


def write_floor(n, dtype, jobs):
    """Both fresh N×N outputs (ntkfast's allocator) with every element written once, on
    ``jobs`` threads (row bands); returns the pair."""
    from concurrent.futures import ThreadPoolExecutor

    from ntkfast._alloc import aligned

    a, b = aligned((n, n), dtype), aligned((n, n), dtype)
    band = -(-n // jobs)

    def write(k):
        a[k * band:(k + 1) * band] = 1.0
        b[k * band:(k + 1) * band] = 1.0

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(write, range(jobs)))
    return a, b


def timed(fn):
    """(wall s, process CPU s) of one call, its result freed inside the timing."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def rotation(fns, repeat):
    """Each of ``fns`` once untimed, then ``repeat`` rounds of one timed call of each in
    turn (drift of a shared machine hits all alike): per fn the best wall time, the
    median CPU time and the median over rounds of wall(fns[0]) / wall(fn)."""
    for fn in fns:
        fn()
    walls = np.zeros((repeat, len(fns)))
    cpus = np.zeros_like(walls)
    for r in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            walls[r, i], cpus[r, i] = timed(fn)
    return walls.min(0), np.median(cpus, 0), np.median(walls[:, :1] / walls, 0)


def dims(n, dim_list, nt_python, repeat):
    """Side by side: nt (subprocess, its own environment) and ntkfast, same threads; and
    ntkfast against syrk and the write floor, alternating in this process."""
    import os
    import subprocess
    import sys
    import tempfile

    from scipy.linalg import blas

    import ntkfast as nk
    from ntkfast._threads import available_cores
    from ntkfast.backends import compiled

    jobs = available_cores()
    have_nt = bool(nt_python) and os.path.exists(nt_python)
    print(f"# K(X, X) of N = {n} points, ReLU MLP depth {DIMS_NET['depth']}, Σ and Θ, "
          f"best of {repeat} after a warm-up; ntkfast tile kernel {compiled.isa()}; "
          f"threads: {jobs} on every side; nt: {nt_python if have_nt else 'not run'}")
    print("# max rel diff Θ: |ours − nt| / max|Θ|, off and on the diagonal (nt forms the angle "
          "by arccos, which loses half the digits for near-parallel pairs: θ = 0 on the diagonal)")
    print("# syrk: BLAS X Xᵀ (upper triangle); floor: allocate both outputs and write each "
          "element once; ratios: medians of per-round ratios; CPU: median process CPU s")
    print("| D | dtype | nt s | ntkfast s | nt / ntkfast | syrk s | floor s | ours / syrk | "
          "ours / floor | floor / ours | ntkfast CPU s | floor CPU s | "
          "max rel diff Θ off diag | on diag |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    net = nk.MLP(**DIMS_NET)
    with tempfile.TemporaryDirectory() as tmp:
        for d in dim_list:
            X = np.random.default_rng(0).standard_normal((n, d))
            xp = os.path.join(tmp, "x.npy")
            np.save(xp, X)
            for dtype in ("float32", "float64"):
                Xd = X.astype(dtype)
                nt_s, off, on = float("nan"), float("nan"), float("nan")
                if have_nt:
                    op = os.path.join(tmp, "nt.npz")
                    subprocess.run([nt_python, os.path.abspath(__file__), "nt-dims", xp, op,
                                    dtype, str(repeat)], check=True, stderr=subprocess.DEVNULL)
                    ref = np.load(op)
                    nt_s = float(ref["seconds"])
                    k = net.kernels(Xd, dtype=dtype)
                    err = np.abs(k.ntk - ref["ntk"]) / np.abs(ref["ntk"]).max()
                    on = np.diagonal(err).max()
                    np.fill_diagonal(err, 0.0)
                    off = err.max()
                    del k, err, ref
                syrk = blas.dsyrk if dtype == "float64" else blas.ssyrk
                best, cpu, ratio = rotation(
                    [lambda: net.kernels(Xd, dtype=dtype, n_jobs=jobs),
                     lambda: syrk(1.0, Xd, lower=False),
                     lambda: write_floor(n, dtype, jobs)], repeat)
                t = best[0]
                print(f"| {d} | {dtype} | {nt_s:.3f} | {t:.4f} | {nt_s / t:.1f} | "
                      f"{best[1]:.4f} | {best[2]:.4f} | {ratio[1]:.2f} | "
                      f"{ratio[2]:.2f} | {1 / ratio[2]:.2f} | {cpu[0]:.4f} | {cpu[2]:.4f} | "
                      f"{off:.1e} | {on:.1e} |")
                sys.stdout.flush()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("path")
    d.add_argument("--n", type=int, default=2000)
    c = sub.add_parser("compare")
    c.add_argument("path")
    m = sub.add_parser("dims")
    m.add_argument("--n", type=int, default=4000)
    m.add_argument("--dims", type=int, nargs="+", default=[784, 16])
    m.add_argument("--repeat", type=int, default=3)
    m.add_argument("--nt-python", default="/tmp/ntenv/bin/python")
    w = sub.add_parser("nt-dims")  # internal: nt's half of ``dims``
    for name in ("x", "out", "dtype"):
        w.add_argument(name)
    w.add_argument("repeat", type=int)
    a = ap.parse_args()
    if a.cmd == "dump":
        dump(a.path, a.n)
    elif a.cmd == "compare":
        compare(a.path)
    elif a.cmd == "dims":
        dims(a.n, a.dims, a.nt_python, a.repeat)
    else:
        nt_dims(a.x, a.out, a.dtype, a.repeat)
