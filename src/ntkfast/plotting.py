"""Figures for the finite-width experiments (matplotlib, Agg backend).

One function per figure; each takes the dict returned by the matching function of
:mod:`ntkfast.experiments` (or :mod:`ntkfast.apps.demo`) and a ``path``: the PNG is written
there and the path returned (``path=None``: the Figure is returned instead).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "plot_one_d", "plot_kernel_convergence", "plot_kernel_change", "plot_training_vs_ntk",
    "plot_spectrum", "plot_eigen_dynamics",
]


def _figure(nrows=1, ncols=1, **kw):
    """A Figure on the Agg canvas (no pyplot, no global backend switch) and its axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'ntkfast[plot]'") from exc
    fig = Figure(figsize=kw.pop("figsize", (6.5, 4.8)))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _cmap(name, n, lo=0.05, hi=0.9):
    from matplotlib import colormaps
    return colormaps[name](np.linspace(lo, hi, n))


def _finish(fig, path):
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    return str(path)


def _width_colors(n):
    return _cmap("viridis", n)


def _curves_by_width(ax, widths, steps, values, ylabel, title):
    """One curve per width of the seed-mean of values[width, seed, step] against the
    gradient-descent step (the first step, 0, left out of the log axis)."""
    for i, c in enumerate(_width_colors(len(widths))):
        ax.plot(steps[1:], values[i, :, 1:].mean(0), "o-", ms=3, color=c,
                label=f"width {widths[i]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient-descent step t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_one_d(res, path=None):
    """Top: training points, NTK ensemble mean ±1 std at the training time, finite
    networks trained at the chosen width.  Bottom: the heatmap of Θ_∞(x, x')."""
    fig, (ax, axk) = _figure(2, 1, figsize=(7, 9), height_ratios=[1, 1.1])
    g = res["grid"]
    ax.plot(g, res["target"], color="0.6", ls=":", label="target sin(x)")
    ax.fill_between(g, res["mean"] - res["std"], res["mean"] + res["std"], color="C0",
                    alpha=0.2, label="NTK ensemble ±1 std")
    ax.plot(g, res["mean"], color="C0", lw=2, label="NTK regression mean")
    for i, f in enumerate(res["nets"]):
        ax.plot(g, f, color="C3", lw=1, alpha=0.8,
                label=f"trained nets, width {res['width']}" if i == 0 else None)
    ax.scatter(res["x_train"], res["y_train"], color="k", zorder=5, label="training points")
    ax.set_title(f"NTK prediction vs {len(res['nets'])} finite networks "
                 f"(t = {res['steps']} GD steps)")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.legend(fontsize=8, loc="best")
    im = axk.imshow(res["theta_grid"], origin="lower", cmap="magma", aspect="auto",
                    extent=[g[0], g[-1], g[0], g[-1]])
    fig.colorbar(im, ax=axk, label="Θ(x, x')")
    axk.set_title("Infinite-width NTK Θ(x, x') on the input grid")
    axk.set_xlabel("x")
    axk.set_ylabel("x'")
    return _finish(fig, path)


def plot_kernel_convergence(res, path=None):
    """(a) relative kernel error at initialisation vs width, log-log, with the fit."""
    fig, ax = _figure()
    w = res["widths"]
    for key, name, c in (("ntk", "NTK Θ", "C0"), ("nngp", "NNGP Σ", "C1")):
        errs = res[f"{key}_errors"]
        ax.scatter(np.repeat(w, errs.shape[1]), errs.ravel(), color=c, alpha=0.3, s=12)
        ax.plot(w, res[f"{key}_mean"], "o-", color=c,
                label=f"{name}: mean over {errs.shape[1]} seeds, slope {res[key + '_slope']:.2f}")
        ax.plot(w, np.exp(res[f"{key}_intercept"]) * w ** res[f"{key}_slope"], "--",
                color=c, lw=1)
    ax.plot(w, res["ntk_mean"][0] * (w / w[0]) ** -0.5, ":", color="k", label="∝ width^(-1/2)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width n")
    ax.set_ylabel("‖K_emp − K_∞‖_F / ‖K_∞‖_F")
    ax.set_title("Theorem 1: the empirical kernel at init converges as width grows")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_kernel_change(res, path=None):
    """(b) relative NTK change during training: vs step per width, and final vs width."""
    fig, (a1, a2) = _figure(1, 2, figsize=(11, 4.5))
    w, steps, ch = res["widths"], res["steps"], res["kernel_change"]
    _curves_by_width(a1, w, steps, ch, "‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F",
                     "NTK change during training")
    final = ch[:, :, -1]
    a2.scatter(np.repeat(w, final.shape[1]), final.ravel(), color="C0", alpha=0.3, s=12)
    a2.plot(w, final.mean(1), "o-", color="C0",
            label=f"mean, slope {res['change_slope']:.2f}")
    a2.plot(w, final.mean(1)[0] * (w / w[0]) ** -0.5, ":", color="k", label="∝ width^(-1/2)")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("hidden width n")
    a2.set_ylabel(f"relative change after {steps[-1]} steps")
    a2.set_title("Theorem 2: the kernel freezes as width grows")
    a2.legend(fontsize=8)
    return _finish(fig, path)


def plot_training_vs_ntk(res, path=None):
    """(c) RMS distance between trained networks and the NTK prediction, and the test
    outputs of the narrowest and widest networks against the prediction."""
    fig, (a1, a2) = _figure(1, 2, figsize=(11, 4.5))
    w, steps, rms = res["widths"], res["steps"], res["test_rms"]
    _curves_by_width(a1, w, steps, rms, "test RMS of f_net(t) − f_NTK(t)",
                     f"Trained nets vs NTK prediction (slope in width "
                     f"{res['test_rms_slope']:.2f})")
    for i, c, m in ((0, "C1", "o"), (len(w) - 1, "C0", "s")):
        a2.scatter(res["f_ntk_test"][i, -1], res["f_net_test"][i, -1], s=12, color=c,
                   marker=m, alpha=0.7, label=f"width {w[i]}")
    lo = min(res["f_ntk_test"][:, -1].min(), res["f_net_test"][:, -1].min())
    hi = max(res["f_ntk_test"][:, -1].max(), res["f_net_test"][:, -1].max())
    a2.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    a2.set_xlabel("NTK prediction f_NTK(x) at the last step")
    a2.set_ylabel("trained network f_net(x)")
    a2.set_title(f"Test outputs after {steps[-1]} steps")
    a2.legend(fontsize=8)
    return _finish(fig, path)


def plot_spectrum(res, path=None):
    """Eigenvalues of Θ_∞ and of the empirical NTK(s) on the training set, descending."""
    fig, ax = _figure()
    lam = np.asarray(res["eigvals"])
    ax.plot(np.arange(1, lam.size + 1), np.maximum(lam, 1e-300), "k-", lw=2,
            label="infinite width Θ_∞")
    for (label, ev), c in zip(res.get("empirical", {}).items(), ("C1", "C2", "C3", "C4")):
        ax.plot(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-300), "-", color=c, lw=1,
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue λ_i")
    ax.set_title(res.get("title", "NTK spectrum on the training set"))
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_eigen_dynamics(res, path=None):
    """(d) left: the spectrum with the tracked directions; right: residual along each
    eigendirection for a trained network vs the NTK prediction e^{−ηλ_i t}."""
    fig, (a1, a2) = _figure(1, 2, figsize=(11, 4.5))
    lam, dirs = res["eigvals"], res["dirs"]
    idx = np.arange(1, lam.size + 1)
    a1.plot(idx, np.maximum(lam, 1e-300), "k.-", label="Θ_∞")
    a1.plot(idx, np.maximum(res["eigvals_emp"], 1e-300), "-", color="0.6",
            label=f"Θ_emp, width {res['width']}")
    colors = _cmap("plasma", len(dirs), 0.0, 0.85)
    for j, c in zip(dirs, colors):
        a1.plot(j + 1, lam[j], "o", color=c, ms=8)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("index i")
    a1.set_ylabel("eigenvalue λ_i")
    a1.set_title("NTK spectrum (training set)")
    a1.legend(fontsize=8)
    t = res["steps"]
    for k, (j, c) in enumerate(zip(dirs, colors)):
        a2.plot(t, np.maximum(res["ratio_net"][:, k], 1e-12), "-", color=c,
                label=f"i = {j + 1}: network")
        a2.plot(t, np.maximum(res["ratio_ntk"][:, k], 1e-12), "--", color=c)
    a2.plot([], [], "k--", label="NTK: exp(−ηλ_i t)")
    a2.set_yscale("log")
    a2.set_ylim(1e-6, 2)
    a2.set_xlabel("gradient-descent step t")
    a2.set_ylabel("|v_iᵀ(f_t − y)| / |v_iᵀ(f_0 − y)|")
    a2.set_title("Residual along eigendirections: large λ first")
    a2.legend(fontsize=7, ncol=2)
    return _finish(fig, path)
