"""Convolutional kernels: ntkfast's compiled network engine against neural-tangents'
``stax`` (and against ntkfast's own NumPy engine), side by side in one run.

    python bench/vs_neural_tangents_conv.py [--n N] [--threads 2] [--nt-python /tmp/ntenv/bin/python]
        [--nt-cache DIR]

N images per network: by default 8 for the pooling networks (Myrtle-5, ResNet-like:
~1 M pixel pairs per image pair) and 64 for CNN-Flatten (1024 same-position pixel
pairs per image pair: at N = 8 its 64 entries measure fixed costs, not the per-entry
rate); ``--n`` sets one N for all.

The nt half runs in its own environment (neural-tangents 0.6.5 + jax, CPU) as a
subprocess of this script (``nt`` sub-command; it does not import ntkfast): the same
network, built from ntkfast's ``describe()``, K(X, X) of N images of 32×32×3 in
float32, jit-compiled and warmed up on the same shapes, then timed once, with XLA's
default threads (all cores: the same 2 as ours on the 2-core machine).

Networks: Myrtle-5 (``parse_architecture('myrtle5')``: conv-relu ×2, avgpool 2,
conv-relu, avgpool 2, conv-relu, global average pool, dense: all pixel pairs), a
5-layer CNN-Flatten (``cnn-flatten(4)``: 4 conv-relu, flatten, dense: the
same-position pairs only) and a ResNet-like net (``resnet-gap``: conv, two residual
blocks x + conv(relu(conv(relu(x)))) by FanOut / parallel / FanInSum, relu, GAP,
dense: all pixel pairs).

Reported per network and dtype, seconds per kernel entry (a K(X, X) of N² entries):

* ``ntkfast`` total: ``net.kernels(X)`` (the compiled self pass, O(N P²), + the
  compiled cross pass over the N(N−1)/2 pairs i < j), the better of two runs after a
  warm-up;
* ``self s/image``: the self pass alone (``variances``: the per-image fixed cost, in
  float64 whatever the dtype), per image (better of two);
* ``cross``: the compiled cross pass alone (what grows as N²), per pair (better of two);
* ``numpy``: the reference NumPy engine's cross pass, per pair (a few pairs);
* ``nt``: neural-tangents' K(X, X) time / N²;
* ``workspace``: one thread's buffers (``_conv_engine.workspace_bytes``);
* ``CPU s/pair``: the cross pass's process CPU time per pair (all threads), and the
  GFLOP/s per core-second and fraction of one core's peak it gives: on a shared
  machine the wall-clock rate understates the engine;
* GFLOP/s of the cross pass against the arithmetic count of :func:`flop_count` (per
  pair: the input products 2C per pixel pair; Conv 2·(2k + 3) per output pixel pair
  for Σ and Θ (two separable diagonal window sums of k adds each, then the affine
  step); ReLU 30 (sqrt, the atan2 polynomial with its division, 10 multiply-adds);
  AvgPool the four one-axis window sums of Σ and Θ; GAP/Flatten 2 per element;
  FanInSum 2 (Σ, Θ); LayerNorm 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.abspath(__file__)


# -- the nt side (runs in nt's environment) -------------------------------------------
def nt_layer(d):
    """nt's stax layer of one ``describe()`` dict (nested: Serial, Parallel)."""
    from neural_tangents import stax
    kind = d["layer"]
    if kind == "Serial":
        return stax.serial(*(nt_layer(c) for c in d["layers"]))
    if kind == "Parallel":
        return stax.parallel(*(nt_layer(c) for c in d["branches"]))
    if kind == "FanOut":
        return stax.FanOut(d["num"])
    if kind == "FanInSum":
        return stax.FanInSum()
    if kind == "LayerNorm":
        return stax.LayerNorm(axis=-1, eps=d["eps"])
    if kind == "Conv":
        return stax.Conv(1, tuple(d["filter_shape"]),
                         None if d["strides"] is None else tuple(d["strides"]),
                         padding=d["padding"], W_std=d["w_std"], b_std=d["b_std"])
    if kind == "Dense":
        return stax.Dense(1, W_std=d["w_std"], b_std=d["b_std"])
    if kind == "Elementwise":
        act = json.dumps(d["activation"]).lower()
        if "identity" in act:
            return stax.Identity()
        assert "abrelu" in act and d["activation"][1:] == [0.0, 1.0], d
        return stax.Relu()
    if kind == "AvgPool":
        return stax.AvgPool(tuple(d["window_shape"]),
                            None if d["strides"] is None else tuple(d["strides"]),
                            d["padding"])
    if kind == "GlobalAvgPool":
        return stax.GlobalAvgPool()
    if kind == "Flatten":
        return stax.Flatten()
    raise ValueError(kind)


def nt_layers(desc):
    return nt_layer(desc)[2]


def nt_main(args):
    import jax
    import jax.numpy as jnp
    desc = json.loads(args.desc)
    kernel_fn = jax.jit(nt_layers(desc), static_argnames=("get",))
    X = np.load(args.x).astype(np.float32)
    k = kernel_fn(jnp.asarray(X), None, get=("nngp", "ntk"))  # compile + warm-up
    jax.block_until_ready(k)
    t0 = time.perf_counter()
    k = kernel_fn(jnp.asarray(X), None, get=("nngp", "ntk"))
    jax.block_until_ready(k)
    dt = time.perf_counter() - t0
    np.savez(args.out, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk), seconds=dt,
             versions=json.dumps({"jax": jax.__version__}))


# -- our side ---------------------------------------------------------------------------
def resnet_block_gap():
    """A ResNet-like network: conv, two residual blocks x + conv(relu(conv(relu(x))))
    (FanOut / parallel / FanInSum), relu, global average pool, dense (all pixel pairs)."""
    import ntkfast as nk
    w = 2 ** 0.5

    def block():
        branch = nk.serial(nk.ReLU(), nk.Conv((3, 3), w_std=w, b_std=0.1), nk.ReLU(),
                           nk.Conv((3, 3), w_std=w, b_std=0.1))
        return nk.serial(nk.FanOut(2), nk.parallel(branch, nk.Identity()), nk.FanInSum())

    return nk.serial(nk.Conv((3, 3), w_std=w, b_std=0.1), block(), block(), nk.ReLU(),
                     nk.GlobalAvgPool(), nk.Dense(w_std=w))


def build(name):
    """The network of an --archs entry: 'resnet-gap' or a parse_architecture spec."""
    if name == "resnet-gap":
        return resnet_block_gap()
    from ntkfast.architecture_spec import parse_architecture
    return parse_architecture(name)



def default_n(name):
    """Images per network by default: 64 for the same-position networks (Flatten
    readouts: ~1e-5 s per entry, so N = 8 would time fixed costs), 8 for the rest."""
    return 64 if "flatten" in name else 8


def flop_count(program):
    """Arithmetic of one pair's cross pass (see the module doc), from the op list."""
    from ntkfast.backends import compiled_network as CN
    full = program.full
    total = 0
    for r in program.rows:
        hi, wi, ho, wo = r["hi"], r["wi"], r["ho"], r["wo"]
        n_in = (hi * wi) ** 2 if full else hi * wi
        n_out = (ho * wo) ** 2 if full else ho * wo
        k = r.get("kh", 1), r.get("kw", 1)
        if r["kind"] == CN.INPUT:
            total += 2 * program.C * n_out
        elif r["kind"] == CN.CONV:
            total += 2 * (k[0] + k[1] + 3) * n_out
        elif r["kind"] == CN.AFFINE:
            total += 4 * n_in
        elif r["kind"] == CN.ACT:
            total += 30 * n_in
        elif r["kind"] == CN.POOL:
            total += 2 * (k[0] * (ho * hi * wi * wi) + k[0] * (ho * ho * wi * wi)
                          + k[1] * (ho * ho * wo * wi) + k[1] * n_out)
        elif r["kind"] in (CN.GAP, CN.FLATTEN):
            total += 2 * n_in
        elif r["kind"] == CN.ADD:
            total += 2 * n_in
        elif r["kind"] == CN.LNORM:
            total += 6 * n_in
    return total


def ours(net, X, dtype, threads, n_numpy_pairs=2):
    from ntkfast.backends.compiled_network import CompiledNetworkEngine
    from ntkfast.backends.reference_network import NetworkPlan, NetworkReferenceEngine
    Xd = X.astype(dtype)
    n = X.shape[0]
    net.kernels(Xd[:2], n_jobs=threads, backend="compiled")  # warm-up (threads, BLAS)
    total = float("inf")
    for _ in range(2):  # the better of two (a shared machine)
        t0 = time.perf_counter()
        k = net.kernels(Xd, n_jobs=threads, backend="compiled")
        total = min(total, time.perf_counter() - t0)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine(n_jobs=threads)
    self_s = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        q = eng.variances(plan, Xd)
        self_s = min(self_s, (time.perf_counter() - t0) / n)
    S = np.empty((n, n), dtype)
    T = np.empty_like(S)
    cross = cpu = float("inf")
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        eng.fill(plan, Xd, Xd, S, T, symmetric=True, dtype=dtype, n_jobs=threads, qx=q,
                 qz=q)
        cross = min(cross, (time.perf_counter() - t0) / (n * (n - 1) / 2))
        cpu = min(cpu, (time.process_time() - c0) / (n * (n - 1) / 2))
    ref = NetworkReferenceEngine()
    m = n_numpy_pairs
    S2 = np.empty((1, m))
    T2 = np.empty_like(S2)
    t0 = time.perf_counter()
    try:
        ref.fill(plan, X[:1].astype(np.float64), X[1:1 + m].astype(np.float64), S2, T2,
                 symmetric=False, dtype=np.float64, qx=q[:1], qz=q[1:1 + m])
        numpy_pair = (time.perf_counter() - t0) / m
    except Exception as exc:  # the NumPy engine is someone's work in progress
        print(f"# numpy engine failed: {exc!r}", file=sys.stderr)
        numpy_pair = float("nan")
    from ntkfast import _conv_engine
    from ntkfast.backends.compiled_network import TILE_ELEMS
    prog = eng.program(plan)
    cols = max(1, min(n, TILE_ELEMS // (prog.P * prog.P))) if prog.full else min(n, 256)
    ws = _conv_engine.workspace_bytes(prog.prog(dtype), cols, np.dtype(dtype).itemsize)
    return (k, total / n ** 2, cross, cpu, numpy_pair, flop_count(prog), self_s, ws)


def run_nt(desc, X, threads, python, cache=None):
    """nt's (Σ, Θ, seconds); ``cache``: an .npz path reused when it exists."""
    if cache and os.path.exists(cache):
        with np.load(cache) as f:
            return f["nngp"], f["ntk"], float(f["seconds"])
    with tempfile.TemporaryDirectory() as tmp:
        xp, op = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npz")
        np.save(xp, X)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), JAX_PLATFORMS="cpu")
        subprocess.run([python, HERE, "nt", "--desc", json.dumps(desc), "--x", xp,
                        "--out", op], check=True, env=env)
        if cache:
            import shutil
            shutil.copy(op, cache)
        with np.load(op) as f:
            return f["nngp"], f["ntk"], float(f["seconds"])


def peak_gflops(threads):
    """threads × 16 float64 flops/cycle (two 256-bit FMA pipes: 2 × 4 lanes × 2 flops;
    Zen 4 runs AVX-512 on the same two pipes, so no more) × the clock in /proc/cpuinfo;
    float32 twice that."""
    ghz = 3.0
    try:
        with open("/proc/cpuinfo") as fh:
            mhz = [float(l.split(":")[1]) for l in fh if l.startswith("cpu MHz")]
        ghz = max(mhz) / 1000 if mhz else ghz
    except OSError:
        pass
    return threads * 16 * ghz


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    p_nt = sub.add_parser("nt")
    p_nt.add_argument("--desc")
    p_nt.add_argument("--x")
    p_nt.add_argument("--out")
    ap.add_argument("--n", type=int, default=None,
                    help="images per network (default: 8 for the pooling networks, "
                    "64 for CNN-Flatten)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nt-python", default="/tmp/ntenv/bin/python")
    ap.add_argument("--archs", default="myrtle5,cnn-flatten(4),resnet-gap",
                    help="comma-separated parse_architecture specs or 'resnet-gap'")
    ap.add_argument("--nt-cache", default="", help="a folder: reuse nt's kernels and times")
    args = ap.parse_args()
    if args.cmd == "nt":
        return nt_main(args)
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":")[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    peak = peak_gflops(args.threads)
    print(f"# {cpu}, {os.cpu_count()} cores, {args.threads} threads; N images 32x32x3 "
          f"per network; K(X, X) (N^2 entries); peak assumed {peak:.0f} GFLOP/s f64, "
          f"{2 * peak:.0f} f32; load average {os.getloadavg()[0]:.1f}")
    head = ("arch", "N", "dtype", "nt s/entry", "ntkfast s/entry", "nt/ntkfast",
            "cross s/pair", "nt/cross", "self s/image", "numpy s/pair", "numpy/cross",
            "MFLOP/pair", "GFLOP/s", "% peak", "CPU s/pair", "GFLOP/s per core",
            "% core peak", "max rel diff vs nt", "workspace MiB/thread")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in args.archs.split(","):
        net = build(name)
        n = args.n or default_n(name)
        X = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
        nt_s = None
        if os.path.exists(args.nt_python):
            cache = None if not args.nt_cache else os.path.join(
                args.nt_cache, f"nt_{name}_{n}_{args.threads}.npz")
            nt_nngp, nt_ntk, nt_time = run_nt(net.describe(), X, args.threads,
                                              args.nt_python, cache)
            nt_s = nt_time / n ** 2
        for dtype in (np.float32, np.float64):
            k, per_entry, cross, cpu, numpy_pair, flops, self_s, ws = ours(
                net, X, dtype, args.threads)
            gf = flops / cross / 1e9
            gf_core = flops / cpu / 1e9  # per core-second actually spent (shared machine)
            pk = peak * (2 if dtype == np.float32 else 1)
            if nt_s is not None:
                diff = max(np.max(np.abs(k.ntk - nt_ntk.reshape(k.ntk.shape)))
                           / np.max(np.abs(nt_ntk)),
                           np.max(np.abs(k.nngp - nt_nngp.reshape(k.nngp.shape)))
                           / np.max(np.abs(nt_nngp)))
                cols = (f"{nt_s:.3g}", f"{per_entry:.3g}", f"{nt_s / per_entry:.0f}x",
                        f"{cross:.3g}", f"{nt_s / cross:.0f}x")
            else:
                diff = float("nan")
                cols = ("-", f"{per_entry:.3g}", "-", f"{cross:.3g}", "-")
            print("| " + " | ".join((name, str(n), np.dtype(dtype).name) + cols + (
                f"{self_s:.3g}", f"{numpy_pair:.3g}", f"{numpy_pair / cross:.0f}x", f"{flops / 1e6:.1f}",
                f"{gf:.1f}", f"{100 * gf / pk:.1f}", f"{cpu:.3g}", f"{gf_core:.1f}",
                f"{100 * gf_core * args.threads / pk:.1f}", f"{diff:.1e}",
                f"{ws / 2 ** 20:.3g}")) + " |", flush=True)


if __name__ == "__main__":
    main()
