"""Out-of-core benchmark: Θ(X, X) of N points straight to a memory-mapped .npy file.

    python bench/bench_outofcore.py                 # N=100000, D=784, depth 3, float32
    python bench/bench_outofcore.py --n 20000       # a quicker check

Each measurement runs in a fresh child process so its peak RSS
(``resource.getrusage``) is its own.  Rows: the in-RAM path at --ram-n (the
throughput reference; best of --repeat runs, as one takes only about a second),
and the out-of-core path at --n (input X itself a memory-mapped .npy).  Throughput = output elements (N²) per second; the last
column is the out-of-core throughput relative to the in-RAM path.

Not a test: it needs N² · itemsize bytes of free disk (40 GB at N=100000,
float32) in --dir, and minutes.  The output is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_input(path, n, d, dtype, seed=0, chunk=8192):
    """Standard-normal rows written in chunks (the generator never holds all of X)."""
    from numpy.lib.format import open_memmap
    rng = np.random.default_rng(seed)
    X = open_memmap(path, mode="w+", dtype=dtype, shape=(n, d))
    for r in range(0, n, chunk):
        X[r:r + chunk] = rng.standard_normal((min(chunk, n - r), d), dtype=np.float32)
    X.flush()
    del X


def child(args):
    """One measurement; prints a JSON line."""
    import resource

    sys.path.insert(0, ROOT)
    import ntkfast as nk

    net = nk.MLP(depth=args.depth, activation="relu", w_std=1.0, b_std=0.1)
    X = np.load(args.input, mmap_mode="r")[:args.n]
    kw = dict(dtype=args.dtype, n_jobs=args.jobs, tile=args.tile, backend=args.backend)
    if args.mode == "ram":
        X = np.array(X)                   # in-RAM input and output
        net.ntk(X[:256], **kw)            # warm-up (threads, BLAS)
        wall = float("inf")
        for _ in range(args.repeat):      # a ~1 s timing: best of a few
            t0 = time.perf_counter()
            K = net.ntk(X, **kw)
            wall = min(wall, time.perf_counter() - t0)
            del K
    else:
        t0 = time.perf_counter()
        K = net.ntk(X, out=args.out, progress=args.progress, resume=False, **kw)
        wall = time.perf_counter() - t0
        del K
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": args.mode, "n": args.n, "wall": wall, "peak_rss": peak}))


def run_child(ns, mode, n, out=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode, "--n", str(n),
           "--input", ns.input, "--depth", str(ns.depth), "--dtype", ns.dtype,
           "--backend", ns.backend]
    if ns.jobs is not None:
        cmd += ["--jobs", str(ns.jobs)]
    if ns.tile is not None:
        cmd += ["--tile", str(ns.tile)]
    if out is not None:
        cmd += ["--out", out]
    if ns.progress:
        cmd += ["--progress"]
    cmd += ["--repeat", str(ns.repeat)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows of X (default 100000)")
    p.add_argument("--d", type=int, default=784, help="features (default 784)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--ram-n", type=int, default=8000, help="N of the in-RAM reference run")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--tile", type=int, default=None, help="block edge (default: planner)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--dir", default=None, help="where X and K go (default: a temp dir "
                   "under the current directory)")
    p.add_argument("--keep", action="store_true", help="keep X.npy and K.npy")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr")
    p.add_argument("--repeat", type=int, default=3, help="in-RAM reference: best of this "
                   "many runs (default 3)")
    p.add_argument("--_child", dest="child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child:
        ns.mode = ns.child
        return child(ns)

    sys.path.insert(0, ROOT)
    import ntkfast
    from ntkfast.backends import compiled_available

    folder = ns.dir or tempfile.mkdtemp(prefix="ntkfast-bench-", dir=os.getcwd())
    os.makedirs(folder, exist_ok=True)
    itemsize = np.dtype(ns.dtype).itemsize
    need = ns.n * ns.n * itemsize + ns.n * ns.d * 4
    free = shutil.disk_usage(folder).free
    if need > free:
        sys.exit(f"bench_outofcore: needs {need / 1e9:.1f} GB free in {folder}, "
                 f"has {free / 1e9:.1f} GB (use --dir or a smaller --n)")
    ns.input = os.path.join(folder, "X.npy")
    out = os.path.join(folder, "K.npy")
    try:
        n_in = max(ns.n, ns.ram_n)
        t0 = time.perf_counter()
        make_input(ns.input, n_in, ns.d, np.float32)
        print(f"# input X: {n_in}×{ns.d} float32 written in {time.perf_counter() - t0:.1f} s "
              f"to {ns.input}", flush=True)
        ram = run_child(ns, "ram", ns.ram_n)
        ooc = run_child(ns, "file", ns.n, out=out)
    finally:
        if not ns.keep:
            for f in (ns.input, out):
                if os.path.exists(f):
                    os.unlink(f)
            if ns.dir is None:
                shutil.rmtree(folder, ignore_errors=True)

    ram_tp = ram["n"] ** 2 / ram["wall"]
    rows = [("in-RAM", ram), ("out-of-core (.npy memmap)", ooc)]
    print(f"# ntkfast {ntkfast.__version__}, backend {ns.backend} (compiled built: "
          f"{compiled_available()}), depth {ns.depth}, D={ns.d}, {ns.dtype}, "
          f"jobs {ns.jobs or os.cpu_count()}, tile {ns.tile or 'auto'}")
    print(f"| {'path':<26} | {'N':>7} | {'output':>9} | {'wall (s)':>8} | "
          f"{'peak RSS':>9} | {'Melem/s':>8} | {'vs in-RAM':>9} |")
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 11}|")
    for name, r in rows:
        tp = r["n"] ** 2 / r["wall"]
        size = r["n"] ** 2 * itemsize
        print(f"| {name:<26} | {r['n']:>7} | {size / 1e9:>6.2f} GB | {r['wall']:>8.1f} | "
              f"{r['peak_rss'] / 2**20:>6.0f} MB | {tp / 1e6:>8.1f} | {tp / ram_tp:>8.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
