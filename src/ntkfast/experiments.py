"""Experiments that make the two NTK theorems visible on finite networks (data only;
figures in :mod:`ntkfast.plotting`).

(a) :func:`kernel_convergence` — at initialisation ‖Θ_emp − Θ_∞‖_F/‖Θ_∞‖_F → 0 as width n
    grows, like n^(−1/2) (Jacot et al. 2018, Theorem 1); the log-log slope is fitted.
(b) :func:`kernel_change` — during gradient descent the empirical NTK barely moves:
    ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F shrinks with width (Theorem 2; Lee et al. 2019).
(c) :func:`training_vs_ntk` — trained finite networks against the NTK gradient-flow
    prediction (:func:`ntk_prediction`) at the same times.
(d) :func:`spectrum_dynamics` — the eigenvalues λ_i of Θ_∞ on the training set and the
    per-eigendirection residuals |v_iᵀ(f_t − y)|, which the NTK predicts decay as e^{−ηλ_i t}.

Conventions (DESIGN §1): gradient descent on the sum loss ½‖f(X) − y‖² with learning rate η;
GD step s is compared with gradient-flow time t = s (the continuous time of η·steps is η t).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from . import _validation as V
from .finite import finite_network

__all__ = [
    "load_digits_split", "default_lr", "ntk_prediction", "kernel_convergence",
    "kernel_change", "training_vs_ntk", "training_experiments", "spectrum_dynamics",
    "loglog_slope", "ntk_ensemble", "one_d_regression",
]


def __dir__():  # the API, not this module's imports
    return list(__all__)


# -- data -------------------------------------------------------------------------
def load_digits_split(n_train=32, n_test=64, seed=0):
    """scikit-learn's bundled 8×8 digits, shuffled with ``seed`` and split.

    Pixels are scaled to [0, 1], centred by the training mean image and every row
    rescaled to norm √d (so x·x/d = 1).  Returns a dict with ``X_train``, ``X_test``,
    ``labels_train``, ``labels_test`` (ints 0–9) and ``y_train``, ``y_test``
    (the scalar target +1 for digits 0–4, −1 for 5–9).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'ntkfast[demo]'") \
            from exc
    n_train = V.check_int(n_train, "n_train", minimum=1)
    n_test = V.check_int(n_test, "n_test", minimum=0)
    data = load_digits()
    X, labels = data.data / 16.0, data.target
    if n_train + n_test > len(X):
        raise ValueError(f"n_train + n_test: at most {len(X)} digits, got {n_train + n_test}")
    order = np.random.default_rng(seed).permutation(len(X))
    tr, te = order[:n_train], order[n_train:n_train + n_test]
    mean = X[tr].mean(axis=0)

    def prep(A):
        A = A - mean
        norms = np.linalg.norm(A, axis=1, keepdims=True)
        return A * (np.sqrt(A.shape[1]) / np.maximum(norms, 1e-12))

    sign = lambda lab: np.where(lab < 5, 1.0, -1.0)  # noqa: E731
    return dict(X_train=prep(X[tr]), X_test=prep(X[te]), labels_train=labels[tr],
                labels_test=labels[te], y_train=sign(labels[tr]), y_test=sign(labels[te]))


def _analytic(mlp, width):
    """The analytic kernel matching a finite network of this width (for 'standard'
    the NTK depends on the width)."""
    return finite_network(mlp, width).analytic()


def default_lr(theta_train, scale=0.5):
    """η = scale / λ_max(Θ) (GD on the sum loss is stable for η < 2/λ_max)."""
    lam_max = linalg.eigh(theta_train, eigvals_only=True, subset_by_index=[
        theta_train.shape[0] - 1, theta_train.shape[0] - 1])[0]
    return scale / lam_max


def loglog_slope(x, y):
    """Least-squares slope and intercept of log y against log x."""
    slope, intercept = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(slope), float(intercept)


# -- the NTK prediction --------------------------------------------------------------
def ntk_prediction(theta_train, y, t, lr, f0_train=None, theta_test=None, f0_test=None,
                   discrete=False):
    """Outputs of the linearised network under gradient flow on ½‖f(X) − y‖².

    With Θ = V Λ Vᵀ (``scipy.linalg.eigh``) and r₀ = f₀ − y:

        f_train(t) = y + V e^{−ηΛt} Vᵀ r₀
        f_test(t)  = f₀(Z) − Θ(Z, X) V Λ⁻¹ (1 − e^{−ηΛt}) Vᵀ r₀

    (Λ⁻¹(1 − e^{−ηΛt}) → ηt for λ = 0).  ``discrete=True`` gives gradient descent on the
    linearised model instead: e^{−ηλt} → (1 − ηλ)^t.  ``f0_*=None`` means f₀ = 0 (the mean
    over initialisations).  ``t`` may be a scalar or an array of R times.

    Returns (f_train, f_test) with shapes (R, N, k) and (R, M, k) (or without the leading
    axis for a scalar ``t``); f_test is None without ``theta_test``.
    """
    theta_train = np.asarray(theta_train, dtype=np.float64)
    N = theta_train.shape[0]
    if theta_train.shape != (N, N):
        raise ValueError(f"theta_train: expected a square matrix, got {theta_train.shape}")
    y = np.asarray(y, dtype=np.float64)
    y2 = y[:, None] if y.ndim == 1 else y
    if y2.shape[0] != N:
        raise ValueError(f"y: has {y2.shape[0]} rows but theta_train is {N}×{N}")
    f0 = np.zeros_like(y2) if f0_train is None else np.asarray(f0_train, float).reshape(y2.shape)
    lam, vec = linalg.eigh(theta_train)
    lam = np.maximum(lam, 0.0)
    ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    proj = vec.T @ (f0 - y2)                                  # Vᵀ r₀, (N, k)
    if discrete:
        decay = (1.0 - lr * lam)[None, :] ** ts[:, None]      # (R, N)
    else:
        decay = np.exp(-lr * np.outer(ts, lam))
    f_train = y2[None] + np.einsum("ij,rj,jk->rik", vec, decay, proj)
    f_test = None
    if theta_test is not None:
        theta_test = np.asarray(theta_test, dtype=np.float64)
        if theta_test.ndim != 2 or theta_test.shape[1] != N:
            raise ValueError(f"theta_test: expected shape (M, {N}), got {theta_test.shape}")
        pos = lam > 1e-12 * max(lam.max(), 1e-300)
        safe = np.where(pos, lam, 1.0)
        gain = np.where(pos[None], (1.0 - decay) / safe[None], lr * ts[:, None])  # (R, N)
        g0 = (np.zeros((theta_test.shape[0], y2.shape[1])) if f0_test is None
              else np.asarray(f0_test, float).reshape(theta_test.shape[0], y2.shape[1]))
        f_test = g0[None] - np.einsum("mi,ij,rj,jk->rmk", theta_test, vec, gain, proj)
    if np.ndim(t) == 0:
        f_train = f_train[0]
        f_test = None if f_test is None else f_test[0]
    return f_train, f_test


def _gain(lam, t, lr):
    """Λ⁻¹(1 − e^{−ηΛt}) on the eigenvalues (→ ηt where λ = 0; 1/λ for t = ∞)."""
    lam = np.maximum(lam, 0.0)
    tiny = lam <= 1e-12 * max(lam.max(), 1e-300)
    safe = np.where(tiny, 1.0, lam)
    if np.isinf(t):
        if tiny.any():
            raise ValueError("theta_train: singular NTK; t = inf needs a positive definite "
                             "kernel (add a ridge, or use a finite t)")
        return 1.0 / safe
    return np.where(tiny, lr * t, -np.expm1(-lr * t * lam) / safe)


def ntk_ensemble(theta_train, theta_test, nngp_train, nngp_test, nngp_test_diag, y,
                 t=np.inf, lr=1.0):
    """Mean and variance over random initialisations of infinitely wide networks trained
    by gradient flow on ½‖f(X) − y‖² up to time t (Lee et al. 2019, eqs. 15–16).

    With f₀ ~ GP(0, Σ) and M_t = Θ(Z, X) Θ⁻¹ (I − e^{−ηΘt}), f_t(Z) = f₀(Z) + M_t (y − f₀(X)):

        mean = M_t y,    var = diag Σ(Z, Z) − 2 diag(M_t Σ(X, Z)) + diag(M_t Σ(X, X) M_tᵀ).

    ``nngp_test`` is Σ(Z, X), ``nngp_test_diag`` the vector Σ(z, z).  Returns (mean, var);
    mean has y's trailing shape.
    """
    lam, vec = linalg.eigh(np.asarray(theta_train, dtype=np.float64))
    M = (np.asarray(theta_test, float) @ vec) * _gain(lam, t, lr)[None] @ vec.T   # (M, N)
    mean = M @ np.asarray(y, dtype=np.float64)
    var = (np.asarray(nngp_test_diag, float) - 2 * np.einsum("mn,mn->m", M, nngp_test)
           + np.einsum("mn,nk,mk->m", M, nngp_train, M))
    return mean, np.maximum(var, 0.0)


def one_d_regression(mlp, width, n_train=8, n_grid=200, n_nets=4, steps=1000, lr_scale=0.5,
                     noise=0.05, seed=0):
    """The 1-D picture: y = sin(x) + noise at ``n_train`` points of [−π, π]; the NTK
    ensemble mean and std (:func:`ntk_ensemble`) at time t = ``steps`` on a grid, the
    outputs of ``n_nets`` finite networks of ``width`` trained for ``steps`` GD steps with the
    same η, and Θ_∞(grid, grid).  Returns a dict of arrays."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-np.pi, np.pi, V.check_int(n_train, "n_train", minimum=1)))
    y = np.sin(x) + noise * rng.standard_normal(x.size)
    grid = np.linspace(-np.pi, np.pi, V.check_int(n_grid, "n_grid", minimum=2))
    X, G = x[:, None], grid[:, None]
    ana = _analytic(mlp, width)
    k_tr, k_gx = ana.kernels(X), ana.kernels(G, X)
    theta_grid = ana.ntk(G)
    lr = default_lr(k_tr.ntk, lr_scale)
    mean, var = ntk_ensemble(k_tr.ntk, k_gx.ntk, k_tr.nngp, k_gx.nngp, ana.nngp_diag(G), y,
                             t=steps, lr=lr)
    nets = np.empty((n_nets, grid.size))
    for i in range(n_nets):
        net = finite_network(mlp, width, seed=seed + 1 + i, d=1)
        net.train(X, y, lr, steps)
        nets[i] = net(G)[:, 0]
    return dict(x_train=x, y_train=y, grid=grid, mean=mean, std=np.sqrt(var), nets=nets,
                theta_grid=theta_grid, width=width, steps=steps, lr=lr,
                target=np.sin(grid))


# -- (a) kernel convergence at initialisation ------------------------------------------
def kernel_convergence(mlp, X, widths, n_seeds=5, seed=0):
    """‖K_emp − K_∞‖_F/‖K_∞‖_F at initialisation for K = NTK and NNGP, per width and seed.

    Returns a dict: ``widths`` (W,), ``ntk_errors`` and ``nngp_errors`` (W, n_seeds),
    their means over seeds, and ``ntk_slope``/``nngp_slope`` (log-log fit of the mean
    error against width; theory −½) with the intercepts.
    """
    widths = _check_widths(widths)
    n_seeds = V.check_int(n_seeds, "n_seeds", minimum=1)
    X = V.check_inputs(X, "X").astype(np.float64)
    ntk_err = np.empty((len(widths), n_seeds))
    nngp_err = np.empty_like(ntk_err)
    for i, w in enumerate(widths):
        ks = _analytic(mlp, w).kernels(X)
        for s in range(n_seeds):
            net = finite_network(mlp, w, seed=seed + s, d=X.shape[1])
            ntk_err[i, s] = _rel(net.empirical_ntk(X), ks.ntk)
            nngp_err[i, s] = _rel(net.empirical_nngp(X), ks.nngp)
    out = dict(widths=widths, ntk_errors=ntk_err, nngp_errors=nngp_err,
               ntk_mean=ntk_err.mean(1), nngp_mean=nngp_err.mean(1), n_seeds=n_seeds)
    out["ntk_slope"], out["ntk_intercept"] = loglog_slope(widths, out["ntk_mean"])
    out["nngp_slope"], out["nngp_intercept"] = loglog_slope(widths, out["nngp_mean"])
    return out


# -- (b) + (c) training runs ----------------------------------------------------------------
def training_experiments(mlp, X, y, X_test, widths, steps=200, n_checkpoints=8, n_seeds=2,
                         lr=None, lr_scale=0.5, seed=0, discrete=False,
                         center=False):
    """Train networks of each width (``n_seeds`` each) by full-batch GD for ``steps`` steps
    and record, at ``n_checkpoints`` geometrically spaced steps, the relative kernel change
    ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F on X and the outputs; compare the outputs with
    :func:`ntk_prediction` (Θ_∞, the network's own f₀, the same η and t = step;
    ``discrete=True``: gradient descent on the linearised network, (1 − ηλ)^t instead of
    e^{−ηλt}, which removes the width-independent gap between a GD step and gradient flow;
    ``center=True``: the centred networks f(x) − f₀(x), trained on y (i.e. f trained on
    y + f₀(X)), against the prediction from f₀ = 0, so the comparison does not depend on
    the random initial outputs and the seed-to-seed spread is much smaller).

    ``lr=None``: η = lr_scale/λ_max(Θ_∞(X, X)) per width.  Returns a dict with
    ``widths``, ``steps`` (R,), ``lr`` (W,), ``kernel_change`` (W, S, R),
    ``test_rms`` and ``train_rms`` (W, S, R): RMS of f_net − f_NTK, ``test_rel`` (W, S, R):
    the test RMS over RMS(f_NTK(t) − f₀) (the error relative to how far the prediction has
    moved, so it does not scale with the random f₀; 0 at t = 0),
    ``change_slope``/``test_rms_slope`` (log-log in width, at the final step),
    and for seed 0 the curves ``f_net_test``/``f_ntk_test`` (W, R, M) and the loss.
    """
    widths = _check_widths(widths)
    n_seeds = V.check_int(n_seeds, "n_seeds", minimum=1)
    steps = V.check_int(steps, "steps", minimum=1)
    X = V.check_inputs(X, "X").astype(np.float64)
    X_test = V.check_inputs(X_test, "X_test", d=X.shape[1]).astype(np.float64)
    y = _check_y(y, X.shape[0])
    checkpoints = np.unique(np.concatenate([[0], np.geomspace(
        1, steps, V.check_int(n_checkpoints, "n_checkpoints", minimum=2) - 1).round()])
    ).astype(int)
    W, S, R = len(widths), n_seeds, len(checkpoints)
    change = np.zeros((W, S, R))
    test_rms = np.zeros((W, S, R))
    test_rel = np.zeros((W, S, R))
    train_rms = np.zeros((W, S, R))
    lrs = np.zeros(W)
    f_net_test = np.zeros((W, R, X_test.shape[0]))
    f_ntk_test = np.zeros((W, R, X_test.shape[0]))
    loss = np.zeros((W, R))
    for i, w in enumerate(widths):
        ana = _analytic(mlp, w)
        th_tr, th_te = ana.ntk(X), ana.ntk(X_test, X)
        lrs[i] = default_lr(th_tr, lr_scale) if lr is None else float(lr)
        for s in range(S):
            net = finite_network(mlp, w, seed=seed + s, d=X.shape[1])
            k0 = net.empirical_ntk(X)
            f_tr, f_te = np.zeros((R, X.shape[0])), np.zeros((R, X_test.shape[0]))
            f_tr[0], f_te[0] = net(X)[:, 0], net(X_test)[:, 0]
            off_tr, off_te = (f_tr[0].copy(), f_te[0].copy()) if center else (0.0, 0.0)
            f_tr[0] -= off_tr
            f_te[0] -= off_te
            for r in range(1, R):
                net.train(X, y + off_tr, lrs[i], int(checkpoints[r] - checkpoints[r - 1]))
                f_tr[r], f_te[r] = net(X)[:, 0] - off_tr, net(X_test)[:, 0] - off_te
                change[i, s, r] = _rel(net.empirical_ntk(X), k0)
            p_tr, p_te = ntk_prediction(th_tr, y, checkpoints, lrs[i], f_tr[0], th_te, f_te[0],
                                        discrete=discrete)
            train_rms[i, s] = np.sqrt(np.mean((f_tr - p_tr[..., 0]) ** 2, axis=1))
            test_rms[i, s] = np.sqrt(np.mean((f_te - p_te[..., 0]) ** 2, axis=1))
            moved = np.sqrt(np.mean((p_te[..., 0] - f_te[0]) ** 2, axis=1))
            test_rel[i, s] = test_rms[i, s] / np.maximum(moved, 1e-300)
            test_rel[i, s, 0] = 0.0
            if s == 0:
                f_net_test[i], f_ntk_test[i] = f_te, p_te[..., 0]
                loss[i] = 0.5 * np.sum((f_tr - y[None]) ** 2, axis=1)
    out = dict(widths=widths, steps=checkpoints, lr=lrs, kernel_change=change,
               test_rms=test_rms, train_rms=train_rms, f_net_test=f_net_test,
               f_ntk_test=f_ntk_test, loss=loss, n_seeds=S)
    out["change_slope"], _ = loglog_slope(widths, change[:, :, -1].mean(1))
    out["test_rms_slope"], _ = loglog_slope(widths, test_rms[:, :, -1].mean(1))
    out["test_rel"] = test_rel
    out["test_rel_slope"], _ = loglog_slope(widths, test_rel[:, :, -1].mean(1))
    return out


def kernel_change(mlp, X, y, widths, steps=200, n_seeds=2, lr=None, seed=0, **kw):
    """(b) ‖Θ_t − Θ_0‖_F/‖Θ_0‖_F during GD, per width: see :func:`training_experiments`
    (whose full result is returned; the key is ``kernel_change``)."""
    return training_experiments(mlp, X, y, X[:1], widths, steps=steps, n_seeds=n_seeds,
                                lr=lr, seed=seed, **kw)


def training_vs_ntk(mlp, X, y, X_test, widths, steps=200, n_seeds=2, lr=None, seed=0, **kw):
    """(c) trained finite networks vs the NTK gradient-flow prediction at the same times:
    see :func:`training_experiments` (keys ``test_rms``, ``train_rms``)."""
    return training_experiments(mlp, X, y, X_test, widths, steps=steps, n_seeds=n_seeds,
                                lr=lr, seed=seed, **kw)


# -- (d) spectrum and per-eigendirection convergence ---------------------------------------
def spectrum_dynamics(mlp, X, y, width, steps=200, n_dirs=5, lr=None, lr_scale=0.5, seed=0,
                      n_checkpoints=40):
    """Eigen-decomposition Θ_∞(X, X) = V Λ Vᵀ and the residual along eigendirections.

    Trains one network of ``width`` and records, for ``n_dirs`` directions i spread over
    the spectrum, ρ_i(t) = |v_iᵀ(f_t − y)| / |v_iᵀ(f_0 − y)|, against the NTK prediction
    e^{−ηλ_i t}.  Returns ``eigvals`` (descending), ``eigvals_emp`` (of Θ_emp at init),
    ``dirs``, ``steps``, ``ratio_net`` and ``ratio_ntk`` (R, n_dirs), ``lr``.
    """
    width = V.check_int(width, "width", minimum=1)
    X = V.check_inputs(X, "X").astype(np.float64)
    y = _check_y(y, X.shape[0])
    N = X.shape[0]
    lam, vec = linalg.eigh(_analytic(mlp, width).ntk(X))
    lam, vec = lam[::-1], vec[:, ::-1]
    eta = lr_scale / lam[0] if lr is None else float(lr)
    dirs = np.unique(np.geomspace(1, max(N // 2, 1), V.check_int(n_dirs, "n_dirs", minimum=1))
                     .round().astype(int) - 1)
    net = finite_network(mlp, width, seed=seed, d=X.shape[1])
    emp = np.sort(linalg.eigh(net.empirical_ntk(X), eigvals_only=True))[::-1]
    checkpoints = np.unique(np.linspace(0, steps, n_checkpoints).round().astype(int))
    hist = net.train(X, y, eta, steps, record_steps=checkpoints)
    res = (hist.train[:, :, 0] - y[None]) @ vec[:, dirs]            # (R, n_dirs)
    ratio_net = np.abs(res) / np.maximum(np.abs(res[0]), 1e-300)
    ratio_ntk = np.exp(-eta * np.outer(checkpoints, lam[dirs]))
    return dict(eigvals=lam, eigvals_emp=emp, dirs=dirs, steps=checkpoints, lr=eta,
                ratio_net=ratio_net, ratio_ntk=ratio_ntk, width=width, loss=hist.loss)


# -- helpers -----------------------------------------------------------------------------------
def _rel(A, B):
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))


def _check_widths(widths):
    widths = np.atleast_1d(np.asarray(widths))
    if widths.ndim != 1 or widths.size == 0 or not np.issubdtype(widths.dtype, np.integer):
        raise ValueError(f"widths: expected a non-empty list of integers, got {widths!r}")
    if widths.min() < 1:
        raise ValueError(f"widths: every width must be >= 1, got {widths.tolist()}")
    return widths.astype(int)


def _check_y(y, N):
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (N,):
        raise ValueError(f"y: expected shape ({N},) to match the {N} rows of X, got {y.shape}")
    return y
