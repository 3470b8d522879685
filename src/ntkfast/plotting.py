"""Figures for the finite-width experiments and the kernels (matplotlib, Agg backend).

One function per figure; each takes the dict returned by the matching function of
:mod:`ntkfast.experiments` (or :mod:`ntkfast.apps.demo`) and a ``path``: the PNG is written
there and the path returned (``path=None``: the Figure is returned instead).  ``fig``: an
existing, empty matplotlib Figure to draw into (e.g. ``plt.figure()`` in a notebook),
instead of a new one on the Agg canvas.  Labels are matplotlib mathtext.

Kernel heatmaps show Θ beside the normalized kernel (:func:`normalized_kernel`)

    Θ̂(x, x') = Θ(x, x') / √(Θ(x, x) Θ(x', x')),

the cosine similarity of the two inputs in the kernel's feature space: Θ itself is
dominated by the norms of the inputs, Θ̂ shows which inputs the network treats as alike.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "plot_one_d", "plot_kernel_convergence", "plot_kernel_change", "plot_training_vs_ntk",
    "plot_spectrum", "plot_eigen_dynamics", "plot_kernel_heatmap", "normalized_kernel",
    "sort_by_class",
]


def __dir__():  # the API, not this module's imports
    return list(__all__)

_THETA_INF = r"$\Theta_\infty$"
_THETA_HAT = r"$\Theta(x,x')\,/\,\sqrt{\Theta(x,x)\,\Theta(x',x')}$"


def _figure(nrows=1, ncols=1, fig=None, **kw):
    """A Figure on the Agg canvas (no pyplot, no global backend switch) and its axes;
    with ``fig`` (an empty Figure) its size is set and the axes are made in it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'ntkfast[plot]'") from exc
    size = kw.pop("figsize", (6.5, 4.8))
    if fig is None:
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
    else:
        fig.set_size_inches(*size)
    if nrows == 0:
        return fig, None
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


def normalized_kernel(K):
    """Θ̂ = K / √(diag K diag Kᵀ): K(x, x') / √(K(x, x) K(x', x')) for a square PSD K
    (entries in [−1, 1]; a zero diagonal entry gives 0 in its row and column)."""
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K: expected a square matrix, got shape {K.shape}")
    d = np.sqrt(np.maximum(np.diag(K), 0.0))
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    return np.clip(K * inv[:, None] * inv[None, :], -1.0, 1.0)


def sort_by_class(K, labels):
    """(K[order][:, order], labels[order], order) with the rows in class order (stable)."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    return np.asarray(K)[np.ix_(order, order)], labels[order], order


def _heatmap(ax, K, title, cmap, vmin=None, vmax=None, extent=None, label=None):
    im = ax.imshow(K, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                   origin="lower" if extent is not None else "upper",
                   extent=extent, aspect="equal")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_title(title, fontsize=10)
    return im


def _class_ticks(ax, labels):
    """Class boundaries as thin lines, class names at the middle of each block."""
    labels = np.asarray(labels)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    for b in starts[1:]:
        ax.axhline(b - 0.5, color="w", lw=0.5)
        ax.axvline(b - 0.5, color="w", lw=0.5)
    mids = (starts + ends - 1) / 2
    ax.set_xticks(mids, [str(v) for v in labels[starts]], fontsize=8)
    ax.set_yticks(mids, [str(v) for v in labels[starts]], fontsize=8)
    ax.tick_params(length=0)


def plot_kernel_heatmap(res, path=None, fig=None):
    """Θ on a labelled dataset, sorted by class, beside the normalized kernel Θ̂.

    ``res``: a dict with ``theta`` (N, N), ``labels`` (N,) and optionally ``title`` and
    ``name`` (the kernel's symbol in mathtext, default Θ)."""
    K, labels, _ = sort_by_class(res["theta"], res["labels"])
    name = res.get("name", r"\Theta")
    fig, (a1, a2) = _figure(1, 2, fig=fig, figsize=(11, 5))
    Kn = normalized_kernel(K)
    off = ~np.eye(K.shape[0], dtype=bool)   # colour range from the off-diagonal pairs
    _heatmap(a1, K, rf"${name}(x, x')$, sorted by class", "magma",
             *np.percentile(K[off], [1, 99.5]) if off.any() else (None, None))
    _heatmap(a2, Kn,
             rf"normalized: ${name}(x,x')\,/\,\sqrt{{{name}(x,x)\,{name}(x',x')}}$",
             "viridis", *np.percentile(Kn[off], [1, 99.5]) if off.any() else (None, None))
    for ax in (a1, a2):
        _class_ticks(ax, labels)
        ax.set_xlabel("class of $x'$")
        ax.set_ylabel("class of $x$")
    if res.get("title"):
        fig.suptitle(res["title"])
    return _finish(fig, path)


def _n_seeds(values):
    """Seeds per width of values[width, seed, ...] (NaN rows pad widths with fewer)."""
    v = values.reshape(values.shape[0], values.shape[1], -1)
    return (~np.isnan(v[:, :, -1])).sum(1)


def _curves_by_width(ax, widths, steps, values, ylabel, title):
    """One curve per width of the seed-mean of values[width, seed, step] (NaN: no such
    seed) against the gradient-descent step (step 0 left out of the log axis)."""
    counts = _n_seeds(values)
    for i, c in enumerate(_width_colors(len(widths))):
        ax.plot(steps[1:], np.nanmean(values[i, :, 1:], axis=0), "o-", ms=3, color=c,
                label=f"width {widths[i]}" + (f" ({counts[i]} seeds)" if counts.max() > 1
                                              else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient-descent step $t$")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="mean over seeds" if counts.max() > 1 else None,
              title_fontsize=8)


def plot_one_d(res, path=None, fig=None):
    """Top: training points, NTK ensemble mean ±1 std at the training time, finite
    networks trained at the chosen width.  Bottom: Θ_∞(x, x') on the input grid and the
    normalized kernel Θ̂(x, x')."""
    fig, _ = _figure(0, fig=fig, figsize=(10, 9))
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1])
    ax = fig.add_subplot(gs[0, :])
    g = res["grid"]
    ax.plot(g, res["target"], color="0.6", ls=":", label=r"target $\sin x$")
    ax.fill_between(g, res["mean"] - res["std"], res["mean"] + res["std"], color="C0",
                    alpha=0.2, label=r"NTK ensemble $\pm 1$ std")
    ax.plot(g, res["mean"], color="C0", lw=2, label="NTK ensemble mean")
    for i, f in enumerate(res["nets"]):
        ax.plot(g, f, color="C3", lw=1, alpha=0.8,
                label=f"trained nets, width {res['width']}" if i == 0 else None)
    ax.scatter(res["x_train"], res["y_train"], color="k", zorder=5, label="training points")
    ax.set_title(f"Infinite-width prediction vs {len(res['nets'])} finite networks "
                 f"($t$ = {res['steps']} GD steps)", fontsize=11)
    ax.set_xlabel("$x$")
    ax.set_ylabel("$f(x)$")
    ax.legend(fontsize=8, loc="best")
    ext = [g[0], g[-1], g[0], g[-1]]
    th = np.asarray(res["theta_grid"])
    for k, (K, title, cmap, lo) in enumerate((
            (th, r"$\Theta_\infty(x, x')$", "magma", None),
            (normalized_kernel(th), r"normalized " + _THETA_HAT, "viridis",
             np.percentile(normalized_kernel(th), 1)))):
        axk = fig.add_subplot(gs[1, k])
        _heatmap(axk, K, title, cmap, vmin=lo, vmax=1.0 if k else None, extent=ext)
        axk.set_xlabel("$x$")
        axk.set_ylabel("$x'$")
    return _finish(fig, path)


def plot_kernel_convergence(res, path=None, fig=None):
    """(a) relative kernel error at initialisation vs width, log-log, with the fit."""
    fig, ax = _figure(fig=fig)
    w = res["widths"]
    for key, name, c in (("ntk", r"NTK $\Theta$", "C0"), ("nngp", r"NNGP $\Sigma$", "C1")):
        errs = res[f"{key}_errors"]
        ax.scatter(np.repeat(w, errs.shape[1]), errs.ravel(), color=c, alpha=0.3, s=12)
        ax.plot(w, res[f"{key}_mean"], "o-", color=c,
                label=f"{name}: mean of {errs.shape[1]} seeds, slope {res[key + '_slope']:.2f}")
        ax.plot(w, np.exp(res[f"{key}_intercept"]) * w ** res[f"{key}_slope"], "--",
                color=c, lw=1)
    ax.plot(w, res["ntk_mean"][0] * (w / w[0]) ** -0.5, ":", color="k",
            label=r"$\propto n^{-1/2}$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width $n$")
    ax.set_ylabel(r"$\|K_{\mathrm{emp}} - K_\infty\|_F \,/\, \|K_\infty\|_F$")
    ax.set_title("The empirical kernel at initialisation converges as width grows",
                 fontsize=10)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_kernel_change(res, path=None, fig=None):
    """(b) relative NTK change during training: vs step per width, and final vs width."""
    fig, (a1, a2) = _figure(1, 2, fig=fig, figsize=(11, 4.5))
    w, steps, ch = res["widths"], res["steps"], res["kernel_change"]
    _curves_by_width(a1, w, steps, ch, r"$\|\Theta_t - \Theta_0\|_F \,/\, \|\Theta_0\|_F$",
                     "NTK change during training")
    final = ch[:, :, -1]
    a2.scatter(np.repeat(w, final.shape[1]), final.ravel(), color="C0", alpha=0.3, s=12)
    mean = np.nanmean(final, axis=1)
    a2.plot(w, mean, "o-", color="C0", label=f"mean over seeds, slope {res['change_slope']:.2f}")
    a2.plot(w, mean[0] * (w / w[0]) ** -0.5, ":", color="k",
            label=r"$\propto n^{-1/2}$")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("hidden width $n$")
    a2.set_ylabel(f"relative change after {steps[-1]} steps")
    a2.set_title("The kernel freezes as width grows", fontsize=10)
    a2.legend(fontsize=8)
    return _finish(fig, path)


def plot_training_vs_ntk(res, path=None, fig=None):
    """(c) RMS distance between trained networks and the NTK prediction, and the test
    outputs of the narrowest and widest networks against the prediction."""
    fig, (a1, a2) = _figure(1, 2, fig=fig, figsize=(11, 4.5))
    w, steps = res["widths"], res["steps"]
    if "test_rel" in res:
        _curves_by_width(a1, w, steps, res["test_rel"],
                         r"$\mathrm{RMS}(f_{\mathrm{net}} - f_{\mathrm{NTK}})\,/\,"
                         r"\mathrm{RMS}(f_{\mathrm{NTK}} - f_0)$ on test points",
                         f"Trained networks vs the NTK prediction (slope in width "
                         f"{res['test_rel_slope']:.2f})")
    else:
        _curves_by_width(a1, w, steps, res["test_rms"],
                         r"test RMS of $f_{\mathrm{net}}(t) - f_{\mathrm{NTK}}(t)$",
                         f"Trained networks vs the NTK prediction (slope in width "
                         f"{res['test_rms_slope']:.2f})")
    for i, c, m in ((0, "C1", "o"), (len(w) - 1, "C0", "s")):
        a2.scatter(res["f_ntk_test"][i, -1], res["f_net_test"][i, -1], s=12, color=c,
                   marker=m, alpha=0.7, label=f"width {w[i]}")
    lo = min(res["f_ntk_test"][:, -1].min(), res["f_net_test"][:, -1].min())
    hi = max(res["f_ntk_test"][:, -1].max(), res["f_net_test"][:, -1].max())
    a2.plot([lo, hi], [lo, hi], "k--", lw=1, label="$y = x$")
    a2.set_xlabel(r"NTK prediction $f_{\mathrm{NTK}}(x)$ at the last step")
    a2.set_ylabel(r"trained network $f_{\mathrm{net}}(x)$")
    a2.set_title(f"Test outputs after {steps[-1]} steps", fontsize=10)
    a2.legend(fontsize=8)
    return _finish(fig, path)


def plot_spectrum(res, path=None, fig=None):
    """Eigenvalues of Θ_∞ and of the empirical NTK(s) on the training set, descending."""
    fig, ax = _figure(fig=fig)
    lam = np.asarray(res["eigvals"])
    ax.plot(np.arange(1, lam.size + 1), np.maximum(lam, 1e-300), "k-", lw=2,
            label=r"infinite width $\Theta_\infty$")
    for (label, ev), c in zip(res.get("empirical", {}).items(), ("C1", "C2", "C3", "C4")):
        ax.plot(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-300), "-", color=c, lw=1,
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index $i$")
    ax.set_ylabel(r"eigenvalue $\lambda_i$")
    ax.set_title(res.get("title", "NTK spectrum on the training set"), fontsize=10)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_eigen_dynamics(res, path=None, fig=None):
    """(d) left: the spectrum with the tracked directions; right: residual along each
    eigendirection for a trained network vs the NTK prediction e^{−ηλ_i t}."""
    fig, (a1, a2) = _figure(1, 2, fig=fig, figsize=(11, 4.5))
    lam, dirs = res["eigvals"], res["dirs"]
    idx = np.arange(1, lam.size + 1)
    a1.plot(idx, np.maximum(lam, 1e-300), "k.-", label=_THETA_INF)
    a1.plot(idx, np.maximum(res["eigvals_emp"], 1e-300), "-", color="0.6",
            label=rf"$\Theta_{{\mathrm{{emp}}}}$, width {res['width']}")
    colors = _cmap("plasma", len(dirs), 0.0, 0.85)
    for j, c in zip(dirs, colors):
        a1.plot(j + 1, lam[j], "o", color=c, ms=8)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("index $i$")
    a1.set_ylabel(r"eigenvalue $\lambda_i$")
    a1.set_title("NTK spectrum (training set)", fontsize=10)
    a1.legend(fontsize=8)
    t = res["steps"]
    for k, (j, c) in enumerate(zip(dirs, colors)):
        a2.plot(t, np.maximum(res["ratio_net"][:, k], 1e-12), "-", color=c,
                label=f"$i$ = {j + 1}: network")
        a2.plot(t, np.maximum(res["ratio_ntk"][:, k], 1e-12), "--", color=c)
    a2.plot([], [], "k--", label=r"NTK: $e^{-\eta \lambda_i t}$")
    a2.set_yscale("log")
    a2.set_ylim(1e-6, 2)
    a2.set_xlabel("gradient-descent step $t$")
    a2.set_ylabel(r"$|v_i^\top(f_t - y)| \,/\, |v_i^\top(f_0 - y)|$")
    a2.set_title(r"Residual along eigendirections: large $\lambda_i$ first", fontsize=10)
    a2.legend(fontsize=7, ncol=2)
    return _finish(fig, path)
