"""Series activations in conv nets: the compiled engine's time with Tanh, Softplus, SiLU,
Sigmoid against the same network with ReLU, side by side in one run, and the reference
(NumPy) engine's time for comparison.

    python bench/bench_conv_activations.py [--n 8] [--size 32] [--threads 2]
        [--archs myrtle5,cnn-flatten(4)] [--acts tanh,softplus,silu,sigmoid]
        [--data random|smooth|digits] [--ref-n 2]

Per network (a preset of ``ntkfast.architecture_spec`` with ``relu`` replaced by the
activation) and activation: ``kernels(X)`` of N images (both kernels, float64) by the
compiled engine, the better of two runs after a warm-up, and its ratio to ReLU's; the
self pass (per image) and the cross pass (per pair) separately; and the reference
engine's ``kernels`` of the first ``--ref-n`` images against the compiled engine's on
the same images.  ``--data smooth``: blurred noise; ``--data digits``: scikit-learn's
digits, upscaled bilinearly (natural images have pixel pairs at |ρ| → 1 that need the
long tables, up to 2048 terms, and the largest variances beyond what those certify,
whose image pairs the reference recomputes: the routed column).  Nothing is asserted:
timings on a shared machine are noisy, so the variants alternate within one run.
CPU s: process time of all threads (the fair ratio when other work shares the cores);
the passes' columns are CPU time too, the cross pass the better of two fills with one
engine (the second reads the tables the first kept).

Measured (AMD EPYC Zen 4, 2 cores shared with other work, ``--n 8 --size 32
--archs myrtle5,cnn-flatten(4) --ref-n 1``, CPU-time ratios to ReLU in one run, the
previous engine beside it): Myrtle-5 K(X, X) 2.6-2.8x ReLU (was 3.9-4.9x), cross pass
2.1-2.2x per pair (was 3.4-3.9x), self pass 35-37 ms / image (was 72-85; ReLU 12).
CNN-Flatten(4) stays table-bound at N = 8 (ReLU's whole K(X, X) is 1 ms; the tables,
one quadrature per pixel and layer, ~40 ms / image), 2.3x faster than before (each
image's tables built once per fill).  Smooth images (``--data smooth``, 2026-11-28):
Myrtle-5 / tanh 6.1x ReLU in wall time (was 46x: the long tier's tables were rebuilt per
image pair), cross pass 3.0x per pair; docs/benchmarks.md has the table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def build(arch, act):
    from ntkfast.architecture_spec import PRESETS, parse_architecture
    name, _, arg = arch.partition("(")
    spec = PRESETS[name](*([int(arg.rstrip(")"))] if arg else [])) if name in PRESETS \
        else arch
    return parse_architecture(spec.replace("relu", act))


def images(n, size, kind, rng):
    if kind == "digits":  # scikit-learn's 8x8 digits, bilinear to size x size, 3 channels
        from scipy.ndimage import zoom
        from sklearn.datasets import load_digits
        d = load_digits().images[:n] / 16.0
        X = np.stack([zoom(im, size / 8, order=1) for im in d])[..., None].repeat(3, -1)
        return (X - X.mean()) / X.std()
    X = rng.standard_normal((n, size, size, 3))
    if kind == "smooth":  # a 5-tap blur along both axes, twice
        for _ in range(2):
            for ax in (1, 2):
                X = sum(np.roll(X, s, axis=ax) for s in (-2, -1, 0, 1, 2)) / 5.0
        X /= X.std()
    return X


def timed(f, repeat=2):
    """(wall s, CPU s of the process: all threads), each the best of ``repeat`` runs."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def passes(net, X, threads):
    """(self pass CPU s / image, cross pass CPU s / pair, image pairs sent to the
    reference)."""
    from ntkfast.backends.compiled_network import CompiledNetworkEngine
    from ntkfast.backends.reference_network import NetworkPlan
    n = X.shape[0]
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine(n_jobs=threads)
    routed = []
    orig = eng._precise

    def spy(plan_, X64, Z64, near, *a, **k):
        routed.append(int(near.sum()))
        return orig(plan_, X64, Z64, near, *a, **k)

    eng._precise = spy
    ts = timed(lambda: eng.variances(plan, X))[1]
    q = eng.variances(plan, X)
    S = np.empty((n, n))
    T = np.empty_like(S)
    tc = timed(lambda: eng.fill(plan, X, X, S, T, symmetric=True, n_jobs=threads, qx=q,
                                qz=q))[1]
    return ts / n, tc / (n * (n - 1) / 2), (routed[-1] if routed else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default="myrtle5,cnn-flatten(4)")
    ap.add_argument("--acts", default="tanh,softplus,silu,sigmoid")
    ap.add_argument("--data", default="random", choices=["random", "smooth", "digits"])
    ap.add_argument("--ref-n", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = images(args.n, args.size, args.data, rng)
    Xr = X[:args.ref_n]
    acts = ["relu"] + args.acts.split(",")
    print(f"# K(X, X) of N = {args.n} images {args.size}x{args.size}x3 ({args.data}), "
          f"float64, {args.threads} threads; reference on {args.ref_n} images")
    print(f"{'network':16s} {'act':9s} {'wall s':>7s} {'/ReLU':>6s} {'CPU s':>7s} "
          f"{'/ReLU':>6s} {'self ms/img':>11s} {'cross ms/pair':>13s} {'/ReLU':>6s} "
          f"{'routed':>6s} {'ref s':>8s} {'comp s':>8s} {'ref/comp':>8s}")
    for arch in args.archs.split(";") if ";" in args.archs else _split(args.archs):
        nets = {a: build(arch, a) for a in acts}
        for a in acts:  # warm-up: Numba, tables, threads
            nets[a].kernels(X[:2], n_jobs=args.threads)
        base = base_cpu = base_cross = None
        for a in acts:
            net = nets[a]
            wall, cpu = timed(lambda: net.kernels(X, n_jobs=args.threads))
            ts, tc, routed = passes(net, X, args.threads)
            tref = timed(lambda: net.kernels(Xr, backend="reference"), 1)[0]
            tcomp = timed(lambda: net.kernels(Xr, n_jobs=args.threads))[0]
            if a == "relu":
                base, base_cpu, base_cross = wall, cpu, tc
            print(f"{arch:16s} {a:9s} {wall:7.3f} {wall / base:6.2f} {cpu:7.3f} "
                  f"{cpu / base_cpu:6.2f} {ts * 1e3:11.2f} {tc * 1e3:13.2f} "
                  f"{tc / base_cross:6.2f} {routed:6d} {tref:8.3f} {tcomp:8.3f} "
                  f"{tref / tcomp:8.1f}", flush=True)


def _split(text):
    """Comma-separated architectures, keeping commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur] if cur else out


if __name__ == "__main__":
    main()
