"""Out-of-core benchmark: Θ(X, X) of N points straight to a memory-mapped .npy file.

    python bench/bench_outofcore.py                 # N=100000, D=784, depth 3, float32
    python bench/bench_outofcore.py --n 20000       # a quicker check

Each measurement runs in a fresh child process so its peak RSS
(``resource.getrusage``) is its own.  Rows:

* in-RAM at --ram-n: the throughput reference (the median of --repeat runs of
  about half a second each; the best of them is printed too);
* in-RAM at --ram-n while the disk is busy (unless --no-io-probe): the same,
  with a second process writing large sequential O_DIRECT chunks to a scratch
  file in --dir (always to fresh blocks, as an output run writes: the file's
  blocks are freed before each pass over it) at the bytes/s an out-of-core run
  must write to reach --probe-fraction (0.8) of the in-RAM throughput.  On a
  machine whose disk I/O costs CPU time (a VM whose host takes it from the
  guest as "steal"), the engine slows down beside it; if it falls below that
  fraction, no out-of-core run can reach it there.  The writer's rate alone
  (unpaced) is printed too;
* out-of-core at --n (input X itself a memory-mapped .npy).

Throughput = output elements (N²) per second; the last column is relative to
the in-RAM median.

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
ROOT = os.path.join(os.path.dirname(HERE), "src")


def make_input(path, n, d, dtype, seed=0, chunk=8192):
    """Standard-normal rows written in chunks (the generator never holds all of X)."""
    from numpy.lib.format import open_memmap
    rng = np.random.default_rng(seed)
    X = open_memmap(path, mode="w+", dtype=dtype, shape=(n, d))
    for r in range(0, n, chunk):
        X[r:r + chunk] = rng.standard_normal((min(chunk, n - r), d), dtype=np.float32)
    X.flush()
    del X


def import_ntkfast():
    """The installed ntkfast (with its compiled engine), else this checkout's."""
    try:
        import ntkfast
    except ImportError:
        sys.path.insert(0, ROOT)
        import ntkfast
    return ntkfast


def child(args):
    """One measurement; prints a JSON line."""
    import resource

    nk = import_ntkfast()

    net = nk.MLP(depth=args.depth, activation="relu", w_std=1.0, b_std=0.1)
    X = np.load(args.input, mmap_mode="r")[:args.n]
    kw = dict(dtype=args.dtype, n_jobs=args.jobs, tile=args.tile, backend=args.backend)
    extra = {}
    if args.mode in ("ram", "ram-io"):
        X = np.array(X)                   # in-RAM input and output
        net.ntk(X[:256], **kw)            # warm-up (threads, BLAS)
        probe = (start_disk_writer(args.out, args.probe_seconds, args.probe_rate)
                 if args.mode == "ram-io" else None)
        walls = []
        try:
            for _ in range(args.repeat):  # ~0.5 s timings: median (and best) of a few
                t0 = time.perf_counter()
                K = net.ntk(X, **kw)
                walls.append(time.perf_counter() - t0)
                del K
        finally:
            if probe is not None:
                extra = stop_disk_writer(probe)
        wall = float(np.median(walls))
        extra["best_wall"] = min(walls)
    else:
        t0 = time.perf_counter()
        K = net.ntk(X, out=args.out, progress=args.progress, resume=False, **kw)
        wall = time.perf_counter() - t0
        del K
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": args.mode, "n": args.n, "wall": wall, "peak_rss": peak,
                      **extra}))


# -- the disk-busy probe -----------------------------------------------------------
PROBE_CHUNK = 4 * 2**20       # bytes per write
PROBE_SPAN = 4 * 2**30        # the scratch file's size at most: writes wrap around
HUGE = 2 * 2**20              # transparent huge page size


def _hole_puncher():
    """f(fd, n): free the first n bytes' blocks of fd, keeping its size (Linux
    fallocate PUNCH_HOLE); True if done (a no-op returning False where that is
    unavailable)."""
    import ctypes
    import ctypes.util

    try:
        fallocate = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
    except (OSError, AttributeError, TypeError):
        return lambda fd, n: False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    punch_keep_size = 0x02 | 0x01   # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    return lambda fd, n: fallocate(fd, punch_keep_size, 0, n) == 0


def disk_writer(path, alone_s, rate):
    """Write PROBE_CHUNK-sized page-aligned chunks to ``path`` (O_DIRECT where the
    filesystem allows) until SIGTERM or the parent exits: as fast as it can for the
    first ``alone_s`` seconds, then at most ``rate`` bytes/s (if > 0).  Print JSON:
    bytes/s in either phase."""
    import ctypes
    import errno
    import mmap
    import signal

    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    parent = os.getppid()
    direct = hasattr(os, "O_DIRECT")
    flags = os.O_WRONLY | os.O_CREAT
    try:
        fd = os.open(path, flags | (os.O_DIRECT if direct else 0), 0o600)
    except OSError:
        fd, direct = os.open(path, flags, 0o600), False
    # a 2 MiB-aligned chunk on transparent huge pages, like the writer's staging
    # (each request then is one physically contiguous segment)
    area = mmap.mmap(-1, PROBE_CHUNK + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        area.madvise(mmap.MADV_HUGEPAGE)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(area)) % HUGE
    buf = memoryview(area)[start:start + PROBE_CHUNK]
    buf[:] = np.random.default_rng(0).bytes(PROBE_CHUNK)
    # wrap around within half of the free space (and PROBE_SPAN); the span's blocks are
    # freed before each pass, so that every write lands on fresh blocks as the
    # output's writes do (rewriting allocated blocks is 2-3x cheaper on the reference
    # VM, whose host allocates storage on first write)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    span = max(PROBE_CHUNK, min(PROBE_SPAN, free // 2) // PROBE_CHUNK * PROBE_CHUNK)
    punch, fresh = _hole_puncher(), True
    marks, off, total = [], 0, 0
    t0 = time.perf_counter()
    print("ready", flush=True)
    try:
        while not stop and os.getppid() == parent:
            if off == 0 and total and not punch(fd, span):
                fresh = False                     # rewrites its blocks from now on
            try:
                total += os.pwrite(fd, buf, off)
            except OSError as exc:                # O_DIRECT opened but refused
                if not direct or exc.errno != errno.EINVAL:
                    raise
                os.close(fd)
                fd, direct = os.open(path, flags, 0o600), False
                continue
            off = (off + PROBE_CHUNK) % span
            if not direct and off % (64 * PROBE_CHUNK) == 0:
                os.fdatasync(fd)
            now = time.perf_counter() - t0
            if not marks and now >= alone_s:
                marks.append((now, total))
            elif marks and rate > 0 and total - marks[0][1] > rate * (now - marks[0][0]):
                time.sleep((total - marks[0][1]) / rate - (now - marks[0][0]))
    finally:
        t1 = time.perf_counter() - t0
        os.close(fd)
        os.unlink(path)
        buf.release()
    ta, ba = marks[0] if marks else (t1, total)
    busy = (total - ba) / (t1 - ta) if t1 > ta else float("nan")
    print(json.dumps({"disk_alone": ba / ta, "disk_busy": busy, "direct": direct,
                      "fresh": fresh}))


def start_disk_writer(path, alone_s, rate):
    """Start :func:`disk_writer` in a child and wait until it has written alone for
    ``alone_s`` seconds."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_child", "disk",
                             "--out", path, "--probe-seconds", str(alone_s),
                             "--probe-rate", str(rate)],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(alone_s + 0.5)
    return proc


def stop_disk_writer(proc):
    proc.terminate()
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


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
    cmd += ["--repeat", str(ns.repeat), "--probe-seconds", str(ns.probe_seconds),
            "--probe-rate", str(ns.probe_rate)]
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
    p.add_argument("--repeat", type=int, default=7, help="in-RAM reference: median of this "
                   "many runs (default 7)")
    p.add_argument("--no-io-probe", action="store_true", help="skip the in-RAM run beside "
                   "a busy disk")
    p.add_argument("--probe-seconds", type=float, default=5.0, help="disk-busy probe: "
                   "seconds the disk writer runs alone first (default 5)")
    p.add_argument("--probe-fraction", type=float, default=0.8, help="disk-busy probe: "
                   "beside the engine, write the bytes/s an out-of-core run needs to reach "
                   "this fraction of the in-RAM throughput (default 0.8, the target)")
    p.add_argument("--probe-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--_child", dest="child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child == "disk":
        return disk_writer(ns.out, ns.probe_seconds, ns.probe_rate)
    if ns.child:
        ns.mode = ns.child
        return child(ns)

    ntkfast = import_ntkfast()
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
        # the disk-busy probe writes the bytes an out-of-core run needs per second to
        # reach --probe-fraction of the in-RAM throughput
        ns.probe_rate = ns.probe_fraction * itemsize * ram["n"] ** 2 / ram["wall"]
        busy = (None if ns.no_io_probe else
                run_child(ns, "ram-io", ns.ram_n, out=os.path.join(folder, "io_probe.bin")))
        ooc = run_child(ns, "file", ns.n, out=out)
    finally:
        if not ns.keep:
            for f in (ns.input, out):
                if os.path.exists(f):
                    os.unlink(f)
            if ns.dir is None:
                shutil.rmtree(folder, ignore_errors=True)

    ram_tp = ram["n"] ** 2 / ram["wall"]
    rows = [("in-RAM", ram)] + ([("in-RAM, disk busy", busy)] if busy else []) + [
        ("out-of-core (.npy memmap)", ooc)]
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
    ooc_tp = ooc["n"] ** 2 / ooc["wall"]
    best_tp = ram["n"] ** 2 / ram["best_wall"]
    print(f"# in-RAM reference: median of {ns.repeat} runs (best: {best_tp / 1e6:.1f} "
          f"M elements/s; out-of-core = {ooc_tp / best_tp:.0%} of it)")
    if busy:
        size = ns.n ** 2 * itemsize
        alone = busy["disk_alone"]
        blocks = "fresh" if busy["fresh"] else "its own, rewritten,"
        print(f"# disk busy: a sequential {PROBE_CHUNK >> 20} MiB-chunk writer to {blocks} "
              f"blocks ({'O_DIRECT' if busy['direct'] else 'buffered'}) ran at {alone / 1e6:.0f} "
              f"MB/s alone (so {size / 1e9:.1f} GB take {size / alone:.0f} s), then beside "
              f"the engine at {busy['disk_busy'] / 1e6:.0f} MB/s (paced to "
              f"{ns.probe_rate / 1e6:.0f}: the output rate of an out-of-core run at "
              f"{ns.probe_fraction:.0%} of in-RAM); the engine ran at "
              f"{ram['wall'] / busy['wall']:.0%} of its idle-disk speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
