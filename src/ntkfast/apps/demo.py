"""``ntkfast demo``: NTK regression on scikit-learn's digits, and the finite-width
experiments drawn as PNG figures.

    >>> from ntkfast.apps.demo import run_demo
    >>> summary = run_demo("ntkfast-demo", width=512, depth=2)   # about a minute on 2 cores

Steps: (1) Θ_∞ on the digits training set (timed, with a progress bar), kernel regression
on one-hot targets, ŷ = Θ(Z, X)(Θ + εI)⁻¹ Y by Cholesky (ε = 1e-6 · mean diag Θ), test
accuracy, and the kernel sorted by class beside the normalized kernel; (2) the figures of
:mod:`ntkfast.plotting`: the NTK spectrum, the 1-D picture, experiments (a)–(d) of
:mod:`ntkfast.experiments`.  Every stage prints a line when it starts and when it ends.

Experiments (b)/(c) train centred networks f − f₀ (so the comparison does not depend on
the random initial outputs) and compare them with gradient descent on the linearised
network ((1 − ηλ)^t, the same steps), averaged over more seeds for the narrow, cheap
widths than for the wide ones: the error then decreases with width as the theory says.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
from scipy import linalg

from .. import _validation as V
from .. import experiments as E
from .. import plotting as P

__all__ = ["run_demo", "add_demo_arguments", "main_from_args", "kernel_regression"]

W_STD, B_STD, ACTIVATION = 1.0, 1.0, "relu"   # the defaults study (docs/defaults-study.md)


def kernel_regression(theta_train, theta_test, Y, ridge=1e-6):
    """ŷ = Θ(Z, X) (Θ(X, X) + ε I)⁻¹ Y with ε = ridge · mean(diag Θ), by Cholesky."""
    eps = ridge * float(np.mean(np.diag(theta_train)))
    factor = linalg.cho_factor(theta_train + eps * np.eye(theta_train.shape[0]), lower=True)
    return theta_test @ linalg.cho_solve(factor, Y)


def _settings(quick, width):
    """Problem sizes: digits for (1), the experiment subset, widths for (a) and (b)/(c),
    GD steps, seeds, the 1-D picture's steps and nets.  ``seeds_bc`` is a work budget:
    width w gets about seeds_bc · 256² / w² seeds for (b)/(c), between ``min_seeds`` and
    ``max_seeds`` (training costs ∝ w²)."""
    if quick:
        return dict(n_train=300, n_test=200, n_small=24, widths_a=[16, 64, 256, 1024],
                    widths_bc=[16, 64, 256], steps=60, seeds_a=2, seeds_bc=2, min_seeds=2,
                    max_seeds=4, steps_1d=150, nets_1d=2, width_bc=min(width, 256))
    return dict(n_train=1200, n_test=597, n_small=32,
                widths_a=[32, 64, 128, 256, 512, 1024, 2048], widths_bc=[32, 64, 128, 256,
                                                                         512],
                steps=200, seeds_a=4, seeds_bc=4, min_seeds=3, max_seeds=12, steps_1d=300,
                nets_1d=4, width_bc=width)


def _seeds_for(width, cfg):
    """Seeds for (b)/(c) at this width: ∝ 1/width² (the cost of one run), clipped."""
    want = int(round(cfg["seeds_bc"] * (256.0 / width) ** 2))
    return int(min(cfg["max_seeds"], max(cfg["min_seeds"], want)))


def training_by_width(mlp, data, widths, steps, seeds, seed=0, say=None):
    """Experiments (b)/(c) of :func:`ntkfast.experiments.training_experiments`, run width by
    width with ``seeds[i]`` seeds each (centred networks, discrete-time prediction), and
    stacked into one result: per-seed arrays (W, max seeds, R) padded with NaN, means and
    slopes over the seeds each width has.  ``say``: called with a progress line per width."""
    runs = []
    for w, s in zip(widths, seeds):
        t = time.perf_counter()
        with warnings.catch_warnings():   # its one-width slope fit: not used here
            warnings.simplefilter("ignore", np.exceptions.RankWarning
                                  if hasattr(np, "exceptions") else np.RankWarning)
            runs.append(E.training_experiments(mlp, data["X_train"], data["y_train"],
                                               data["X_test"], [w], steps=steps, n_seeds=s,
                                               seed=seed, discrete=True, center=True))
        if say is not None:
            say(f"    width {w}: {s} networks trained {steps} steps "
                f"({time.perf_counter() - t:.1f} s)")
    S = max(seeds)

    def stack(key):
        arrays = []
        for r in runs:
            a = r[key]
            pad = np.full((a.shape[0], S - a.shape[1]) + a.shape[2:], np.nan)
            arrays.append(np.concatenate([a, pad], axis=1))
        return np.concatenate(arrays)

    out = dict(widths=np.asarray(widths), steps=runs[0]["steps"],
               lr=np.concatenate([r["lr"] for r in runs]), n_seeds=list(seeds))
    for key in ("kernel_change", "test_rms", "test_rel", "train_rms"):
        out[key] = stack(key)
    for key in ("f_net_test", "f_ntk_test", "loss"):
        out[key] = np.concatenate([r[key] for r in runs])
    for key, slope in (("kernel_change", "change_slope"), ("test_rms", "test_rms_slope"),
                       ("test_rel", "test_rel_slope")):
        out[slope], _ = E.loglog_slope(widths, np.nanmean(out[key][:, :, -1], axis=1))
    return out


def run_demo(out_dir="ntkfast-demo", width=512, depth=2, n_train=None, progress=True, seed=0,
             quick=False) -> dict:
    """Run the demo and write its figures into ``out_dir``.

    Network: ``MLP(depth, 'relu', w_std=1.5, b_std=1.0)`` ('ntk' parameterization);
    finite networks of hidden ``width`` for the 1-D picture, the spectrum and experiment (d).
    ``n_train``: digits used for training (default 1200, ``quick``: 300); the rest (up to
    597) are the test set.  ``quick=True`` shrinks every experiment (≈ 10 s).

    Returns a dict with ``accuracy``, ``timings`` (seconds per stage), ``figures``
    (name → PNG path) and the measured numbers ``ntk_slope``, ``nngp_slope``,
    ``kernel_change_slope``, ``train_vs_ntk_slope`` (of the relative test error),
    ``kernel_change`` and ``train_vs_ntk_rms`` (per width, at the last step, seed means),
    ``train_vs_ntk_rel`` (per width and checkpoint t ≥ 1, seed means),
    ``train_vs_ntk_monotone`` (whether that error decreases with width at every
    checkpoint), ``widths_bc`` and ``seeds_bc`` (seeds per width).
    """
    from ..network import MLP

    width = V.check_int(width, "width", minimum=1)
    depth = V.check_int(depth, "depth", minimum=0)
    cfg = _settings(bool(quick), width)
    if n_train is not None:
        cfg["n_train"] = V.check_int(n_train, "n_train", minimum=2)
        cfg["n_test"] = min(cfg["n_test"], 1797 - cfg["n_train"])
        if cfg["n_test"] < 1:
            raise ValueError("n_train: leave at least one of the 1797 digits for testing")
    say = print if progress else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    mlp = MLP(depth=depth, activation=ACTIVATION, w_std=W_STD, b_std=B_STD)
    timings, figures, out = {}, {}, {}
    t_all = time.perf_counter()
    say(f"ntkfast demo: {mlp}, finite width {width}, figures in {out_dir}/")

    # (1) digits: kernel, regression, accuracy --------------------------------------------
    data = E.load_digits_split(cfg["n_train"], cfg["n_test"], seed)
    Xtr, Xte = data["X_train"], data["X_test"]
    say(f"digits: NTK of {len(Xtr)} training and {len(Xte)} test digits ...")
    t = time.perf_counter()
    K_tr = mlp.ntk(Xtr, progress=progress)
    K_te = mlp.ntk(Xte, Xtr, progress=progress)
    timings["ntk"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = kernel_regression(K_tr, K_te, np.eye(10)[data["labels_train"]])
    timings["solve"] = time.perf_counter() - t
    out["accuracy"] = float(np.mean(scores.argmax(1) == data["labels_test"]))
    say(f"digits: NTK of {len(Xtr)}x{len(Xtr)} + {len(Xte)}x{len(Xtr)} in "
        f"{timings['ntk']:.2f} s; Cholesky solve {timings['solve']:.2f} s; "
        f"test accuracy {out['accuracy']:.2%} on {len(Xte)} digits")
    n_map = min(len(Xtr), 300)
    figures["kernel_heatmap"] = P.plot_kernel_heatmap(
        dict(theta=K_tr[:n_map, :n_map], labels=data["labels_train"][:n_map],
             title=f"NTK of {n_map} training digits (depth {depth})"),
        os.path.join(out_dir, "kernel_heatmap.png"))

    # spectrum of Θ_∞ and of finite networks on the same training set -------------------------
    t = time.perf_counter()
    from ..finite import finite_network
    n_sp = min(len(Xtr), 150 if quick else 600)
    say(f"spectrum: Θ_∞ and the empirical NTK of finite networks on {n_sp} digits ...")
    spec = dict(eigvals=np.sort(linalg.eigvalsh(K_tr[:n_sp, :n_sp]))[::-1], empirical={},
                title=f"NTK spectrum on {n_sp} digits (depth {depth})")
    for w in sorted({min(64, width), width}):
        emp = finite_network(mlp, w, seed=seed, d=Xtr.shape[1]).empirical_ntk(Xtr[:n_sp])
        spec["empirical"][f"empirical, width {w}"] = np.sort(linalg.eigvalsh(emp))[::-1]
    figures["spectrum"] = P.plot_spectrum(spec, os.path.join(out_dir, "spectrum.png"))
    timings["spectrum"] = time.perf_counter() - t
    say(f"spectrum: done ({timings['spectrum']:.1f} s)")

    # the 1-D picture --------------------------------------------------------------------------
    say(f"1-D picture: training {cfg['nets_1d']} networks of width {width} for "
        f"{cfg['steps_1d']} steps ...")
    t = time.perf_counter()
    res1 = E.one_d_regression(mlp, width, n_nets=cfg["nets_1d"], steps=cfg["steps_1d"],
                              lr_scale=1.0, seed=seed)
    figures["one_d"] = P.plot_one_d(res1, os.path.join(out_dir, "one_d.png"))
    timings["one_d"] = time.perf_counter() - t
    say(f"1-D picture: {cfg['nets_1d']} networks of width {width} trained "
        f"({timings['one_d']:.1f} s)")

    # (a) kernel convergence at init -------------------------------------------------------------
    small = E.load_digits_split(cfg["n_small"], 64, seed + 1)
    say(f"(a) kernels at initialisation: widths {', '.join(map(str, cfg['widths_a']))}, "
        f"{cfg['seeds_a']} seeds each ...")
    t = time.perf_counter()
    ra = E.kernel_convergence(mlp, small["X_train"], cfg["widths_a"], n_seeds=cfg["seeds_a"],
                              seed=seed)
    figures["kernel_convergence"] = P.plot_kernel_convergence(
        ra, os.path.join(out_dir, "kernel_convergence.png"))
    timings["kernel_convergence"] = time.perf_counter() - t
    out["ntk_slope"], out["nngp_slope"] = ra["ntk_slope"], ra["nngp_slope"]
    say(f"(a) ‖Θ_emp − Θ_∞‖/‖Θ_∞‖ vs width: log-log slope {ra['ntk_slope']:.3f} "
        f"(NNGP {ra['nngp_slope']:.3f}; theory −0.5) ({timings['kernel_convergence']:.1f} s)")

    # (b) + (c) training ------------------------------------------------------------------------
    t = time.perf_counter()
    widths_bc = sorted(set(cfg["widths_bc"]) | {cfg["width_bc"]})
    seeds_bc = [_seeds_for(w, cfg) for w in widths_bc]
    say(f"(b)+(c) training: widths {', '.join(map(str, widths_bc))} "
        f"({', '.join(map(str, seeds_bc))} seeds), {cfg['steps']} GD steps ...")
    rb = training_by_width(mlp, small, widths_bc, cfg["steps"], seeds_bc, seed=seed, say=say)
    figures["kernel_change"] = P.plot_kernel_change(rb, os.path.join(out_dir,
                                                                      "kernel_change.png"))
    figures["training_vs_ntk"] = P.plot_training_vs_ntk(
        rb, os.path.join(out_dir, "training_vs_ntk.png"))
    timings["training"] = time.perf_counter() - t
    out.update(widths_bc=list(widths_bc), seeds_bc=seeds_bc,
               kernel_change_slope=rb["change_slope"],
               train_vs_ntk_slope=rb["test_rel_slope"],
               kernel_change=np.nanmean(rb["kernel_change"][:, :, -1], 1).tolist(),
               train_vs_ntk_rms=np.nanmean(rb["test_rms"][:, :, -1], 1).tolist(),
               train_vs_ntk_rel=np.nanmean(rb["test_rel"], 1)[:, 1:].tolist())
    out["train_vs_ntk_monotone"] = bool(np.all(np.diff(np.array(out["train_vs_ntk_rel"]),
                                                       axis=0) < 0))
    say(f"(b) relative NTK change after {cfg['steps']} steps: "
        + ", ".join(f"n={w}: {c:.3g}" for w, c in zip(widths_bc, out["kernel_change"]))
        + f" (slope {rb['change_slope']:.2f})")
    say("(c) test RMS(f_net − f_NTK) / RMS(f_NTK − f_0) after "
        f"{cfg['steps']} steps: "
        + ", ".join(f"n={w}: {c[-1]:.3g}" for w, c in zip(widths_bc, out["train_vs_ntk_rel"]))
        + f" (slope {rb['test_rel_slope']:.2f}; decreases with width at every step: "
        + ("yes" if out["train_vs_ntk_monotone"] else "no") + f") ({timings['training']:.1f} s)")

    # (d) per-eigendirection convergence -----------------------------------------------------------
    say(f"(d) eigendirections: one network of width {cfg['width_bc']}, {cfg['steps']} steps ...")
    t = time.perf_counter()
    rd = E.spectrum_dynamics(mlp, small["X_train"], small["y_train"], cfg["width_bc"],
                             steps=cfg["steps"], seed=seed)
    figures["eigen_dynamics"] = P.plot_eigen_dynamics(rd, os.path.join(out_dir,
                                                                        "eigen_dynamics.png"))
    timings["eigen_dynamics"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    say(f"(d) eigendirections {[int(i) + 1 for i in rd['dirs']]} tracked ({timings['eigen_dynamics']:.1f} s)")
    say(f"wrote {len(figures)} figures to {out_dir}/ in {timings['total']:.1f} s total: "
        + ", ".join(os.path.basename(p) for p in figures.values()))
    out.update(timings=timings, figures=figures, width=width, depth=depth,
               n_train=len(Xtr), n_test=len(Xte))
    return out


def add_demo_arguments(parser):
    """Add ``--out DIR``, ``--width``, ``--depth``, ``--quick`` (and ``--seed``) to an
    argparse parser."""
    parser.add_argument("--out", metavar="DIR", default="ntkfast-demo",
                        help="folder for the PNG figures (default: ntkfast-demo)")
    parser.add_argument("--width", type=int, default=512,
                        help="hidden width of the finite networks (default: 512)")
    parser.add_argument("--depth", type=int, default=2,
                        help="number of hidden layers (default: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes everywhere (about 10–20 s on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main_from_args(args) -> int:
    """Run the demo from parsed arguments (see :func:`add_demo_arguments`); returns 0."""
    for name in ("width", "depth"):
        value = getattr(args, name)
        if value < (1 if name == "width" else 0):
            raise SystemExit(f"--{name}: must be >= {1 if name == 'width' else 0}, got {value}")
    run_demo(out_dir=args.out, width=args.width, depth=args.depth, quick=args.quick,
             seed=getattr(args, "seed", 0), progress=True)
    return 0
