"""Finite-width fully-connected networks and their empirical NTK (NumPy, float64).

The network is ``Dense, [Activation, Dense] * depth`` exactly as :class:`ntkfast.MLP`
(DESIGN §1), with layer widths n_0 = d, n_1 … n_depth = ``width``, n_{depth+1} = ``n_out``.
Both parameterizations are written as one forward rule, for l = 0 … depth,

    z_{l+1} = a_l · W_l h_l + β · b_l,      h_0 = x,  h_l = φ(z_l),  f(x) = z_{depth+1}

    'ntk'      : a_l = σ_w/√n_l,  β = σ_b,  W_l, b_l ~ N(0, 1)
    'standard' : a_l = 1,         β = 1,    W_l ~ N(0, σ_w²/n_l),  b_l ~ N(0, σ_b²)

(``b_std=None``: no bias parameters at all).  With g_l(x) = ∂f/∂z_l (backprop:
g_{depth+1} = e_c, g_l = φ'(z_l) ⊙ a_l W_lᵀ g_{l+1}) the empirical NTK factorises layerwise,

    Θ_emp(x, z) = Σ_l ⟨∂f/∂W_l(x), ∂f/∂W_l(z)⟩ + ⟨∂f/∂b_l(x), ∂f/∂b_l(z)⟩
                = Σ_l (g_{l+1}(x)·g_{l+1}(z)) · (a_l² h_l(x)·h_l(z) + β²),

so it costs a few N×n Gram products per layer and never forms the N×P Jacobian.
As width → ∞ at initialisation Θ_emp → Θ_∞ = ``MLP.ntk`` (Jacot et al. 2018, Theorem 1),
with fluctuations O(1/√width); in the 'standard' parameterization the matching analytic
kernel is the one of ``MLP(..., parameterization='standard', width=width)``
(see :meth:`FiniteMLP.analytic`).

Training is full-batch gradient descent on the sum loss L = ½‖f(X) − y‖², θ ← θ − η ∇L;
for a wide network step s tracks the gradient flow df/dt = −η Θ (f − y) at time t = s
(DESIGN §1, "Training dynamics").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from . import _validation as V

__all__ = ["FiniteMLP", "TrainHistory", "finite_network"]


def __dir__():  # the API, not this module's imports
    return list(__all__)


@dataclass
class TrainHistory:
    """What :meth:`FiniteMLP.train` recorded.

    steps : (R,) int — the GD steps at which outputs were recorded (0 = initialisation).
    train : (R, N, k) — f(X) at those steps.  test : (R, M, k) or None — f(X_test).
    loss : (R,) — ½‖f(X) − y‖² at those steps.  lr : the learning rate η.
    """

    steps: np.ndarray
    train: np.ndarray
    test: np.ndarray | None
    loss: np.ndarray
    lr: float


class FiniteMLP:
    """A finite-width network ``Dense, [Activation, Dense] * depth`` (see module docstring).

    Parameters
    ----------
    width : int >= 1
        Hidden width n of every hidden layer.
    depth, activation, w_std, b_std, parameterization
        As in :class:`ntkfast.MLP`.
    n_out : int >= 1
        Number of output units k (the readout width).
    seed : int
        Seed of the ``np.random.default_rng`` that draws all parameters (layer by
        layer: W_0, b_0, W_1, b_1, …).
    d : int, optional
        Input dimension.  ``None``: the parameters are drawn on the first call, from
        the feature dimension of that input (the same seed gives the same network).
    """

    def __init__(self, width, depth=1, activation="relu", w_std=1.0, b_std=None,
                 parameterization="ntk", n_out=1, seed=0, d=None):
        self.width = V.check_int(width, "width", minimum=1)
        (self.depth, self.activation, self.w_std, self.b_std,
         self.parameterization) = V.check_architecture(depth, activation, w_std, b_std,
                                                       parameterization)
        self.n_out = V.check_int(n_out, "n_out", minimum=1)
        self.seed = V.check_int(seed, "seed", minimum=0)
        self.d = None
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] | None = None
        if d is not None:
            self._build(V.check_int(d, "d", minimum=1))

    # -- construction --------------------------------------------------------
    @property
    def has_bias(self) -> bool:
        return self.b_std is not None

    @property
    def layer_widths(self) -> tuple:
        """(n_0, …, n_{depth+1}) = (d, width, …, width, n_out)."""
        self._require_built()
        return (self.d,) + (self.width,) * self.depth + (self.n_out,)

    @property
    def n_params(self) -> int:
        n = self.layer_widths
        return sum(n[l + 1] * n[l] + (n[l + 1] if self.has_bias else 0)
                   for l in range(self.depth + 1))

    def _scales(self, n_in):
        """(a_l, β, std of W_l, std of b_l) for a Dense with n_in inputs."""
        sb = 0.0 if self.b_std is None else self.b_std
        if self.parameterization == "ntk":
            return self.w_std / np.sqrt(n_in), sb, 1.0, 1.0
        return 1.0, 1.0, self.w_std / np.sqrt(n_in), sb

    def _build(self, d):
        self.d = d
        rng = np.random.default_rng(self.seed)
        n = self.layer_widths
        self.weights, biases = [], []
        for l in range(self.depth + 1):
            _, _, w_sd, b_sd = self._scales(n[l])
            self.weights.append(w_sd * rng.standard_normal((n[l + 1], n[l])))
            if self.has_bias:
                biases.append(b_sd * rng.standard_normal(n[l + 1]))
        self.biases = biases if self.has_bias else None

    def _require_built(self):
        if self.d is None:
            raise RuntimeError("the network has no parameters yet: pass d=... or call it "
                               "on an input first")

    def _check_x(self, X, name="X"):
        X = V.check_inputs(X, name).astype(np.float64, copy=False)
        if self.d is None:
            self._build(X.shape[1])
        elif X.shape[1] != self.d:
            raise ValueError(f"{name}: has {X.shape[1]} features but the network's input "
                             f"dimension is d={self.d}")
        return X

    def copy(self) -> "FiniteMLP":
        """A deep copy (same parameters)."""
        new = object.__new__(FiniteMLP)
        new.__dict__.update(self.__dict__)
        new.weights = [W.copy() for W in self.weights]
        new.biases = None if self.biases is None else [b.copy() for b in self.biases]
        return new

    def analytic(self):
        """The infinite-width :class:`ntkfast.MLP` this network converges to (for
        'standard', the analytic kernel at this hidden width)."""
        from .network import MLP

        width = self.width if self.parameterization == "standard" else None
        return MLP(self.depth, self.activation, self.w_std, self.b_std,
                   self.parameterization, width)

    def __repr__(self):
        return (f"FiniteMLP(width={self.width}, depth={self.depth}, "
                f"activation={self.activation!r}, w_std={self.w_std!r}, b_std={self.b_std!r}, "
                f"parameterization={self.parameterization!r}, n_out={self.n_out}, "
                f"seed={self.seed}, d={self.d})")

    # -- flat parameter vector (for checks; training does not use it) ---------
    def get_params(self) -> np.ndarray:
        """All parameters as one vector θ (order: W_0, b_0, W_1, b_1, …)."""
        self._require_built()
        parts = []
        for l, W in enumerate(self.weights):
            parts.append(W.ravel())
            if self.has_bias:
                parts.append(self.biases[l])
        return np.concatenate(parts)

    def set_params(self, theta) -> "FiniteMLP":
        """Overwrite the parameters from a vector laid out as :meth:`get_params`."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta: expected shape ({self.n_params},), got {theta.shape}")
        i = 0
        for l, W in enumerate(self.weights):
            W[...] = theta[i:i + W.size].reshape(W.shape)
            i += W.size
            if self.has_bias:
                b = self.biases[l]
                b[...] = theta[i:i + b.size]
                i += b.size
        return self

    # -- forward and backward ---------------------------------------------------
    def _forward(self, X):
        """Pre-activations zs = [z_1 … z_{depth+1}] and inputs hs = [h_0 … h_depth]."""
        hs, zs = [X], []
        n = self.layer_widths
        for l, W in enumerate(self.weights):
            a, beta, _, _ = self._scales(n[l])
            z = (hs[-1] @ W.T) * a
            if self.has_bias:
                z = z + beta * self.biases[l]
            zs.append(z)
            if l < self.depth:
                hs.append(self.activation.fn(z))
        return zs, hs

    def __call__(self, X) -> np.ndarray:
        """f(X), shape (N, n_out)."""
        return self._forward(self._check_x(X))[0][-1]

    forward = __call__

    def _output_grads(self, zs):
        """G_l = ∂f_c/∂z_l for l = 1 … depth, as (k, N, n_l) arrays (G_{depth+1} = I):

            G_depth = φ'(z_depth) ⊙ a_depth W_depth[c],   G_l = φ'(z_l) ⊙ (G_{l+1} @ a_l W_l).
        """
        n = self.layer_widths
        grads = [None] * (self.depth + 2)
        for l in range(self.depth, 0, -1):
            a = self._scales(n[l])[0]
            dphi = self.activation.dfn(zs[l - 1])                     # (N, n_l)
            if l == self.depth:
                back = (a * self.weights[l])[:, None, :]               # (k, 1, n_l)
            else:
                back = (grads[l + 1] @ self.weights[l]) * a            # (k, N, n_l)
            grads[l] = dphi[None] * back
        return grads

    def _layer_terms(self, X):
        zs, hs = self._forward(X)
        return zs, hs, self._output_grads(zs)

    # -- kernels ------------------------------------------------------------------
    def empirical_ntk(self, X, Z=None, full=False) -> np.ndarray:
        """Θ_emp(X, Z) = J(X) J(Z)ᵀ by the layerwise factorisation

            Θ_emp(x, z)_{cc'} = Σ_l (g^c_{l+1}(x)·g^{c'}_{l+1}(z)) · (a_l² h_l(x)·h_l(z) + β²)

        (g^c_{depth+1} = e_c).  Returns (N, M): the mean over outputs of the diagonal
        blocks (1/k) Σ_c Θ_cc (for k = 1 the NTK itself), or with ``full=True`` the
        (N, M, k, k) array Θ_{cc'}.
        """
        X = self._check_x(X)
        same = Z is None
        Z = X if same else self._check_x(Z, "Z")
        zx, hx, gx = self._layer_terms(X)
        zz, hz, gz = (zx, hx, gx) if same else self._layer_terms(Z)
        n, k = self.layer_widths, self.n_out
        shape = (X.shape[0], Z.shape[0]) + ((k, k) if full else ())
        theta = np.zeros(shape)
        for l in range(self.depth + 1):
            a, beta, _, _ = self._scales(n[l])
            A = a * a * (hx[l] @ hz[l].T)
            if self.has_bias:
                A += beta * beta
            if l == self.depth:               # readout: g·g = δ_cc'
                if full:
                    theta += A[:, :, None, None] * np.eye(k)
                else:
                    theta += A
                continue
            Gx, Gz = gx[l + 1], gz[l + 1]
            if full:
                theta += np.einsum("cxi,dzi->xzcd", Gx, Gz) * A[:, :, None, None]
            else:
                gg = np.einsum("cxi,czi->xz", Gx, Gz) / k
                theta += gg * A
        if same:
            theta = 0.5 * (theta + np.swapaxes(theta, 0, 1)) if not full else theta
        return theta

    def empirical_nngp(self, X, Z=None) -> np.ndarray:
        """The readout's conditional covariance given the last hidden layer,

            Σ_emp(x, z) = σ_w² h_depth(x)·h_depth(z)/n_depth + σ_b²,

        i.e. Cov[f(x), f(z) | hidden weights] (it → Σ = ``MLP.nngp`` as width → ∞)."""
        X = self._check_x(X)
        hx = self._forward(X)[1][-1]
        hz = hx if Z is None else self._forward(self._check_x(Z, "Z"))[1][-1]
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        return self.w_std ** 2 * (hx @ hz.T) / hx.shape[1] + b2

    # -- training -------------------------------------------------------------------
    def _check_y(self, y, N):
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != N:
            raise ValueError(f"y: expected shape ({N},) or ({N}, {self.n_out}) to match the "
                             f"{N} rows of X, got {np.shape(y)}")
        if y.shape[1] != self.n_out:
            raise ValueError(f"y: has {y.shape[1]} columns but the network has "
                             f"n_out={self.n_out} outputs")
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        return y

    def loss_and_grads(self, X, y):
        """L = ½‖f(X) − y‖² and its gradients (dW_l, db_l) by backprop with
        D_{depth+1} = f − y:  dW_l = a_l D_{l+1}ᵀ h_l,  db_l = β Σ_i D_{l+1},
        D_l = φ'(z_l) ⊙ (D_{l+1} @ a_l W_l)."""
        X = self._check_x(X)
        y = self._check_y(y, X.shape[0])
        return self._loss_and_grads(X, y)

    def _loss_and_grads(self, X, y):
        zs, hs = self._forward(X)
        n = self.layer_widths
        D = zs[-1] - y
        loss = 0.5 * float(np.sum(D * D))
        dW = [None] * (self.depth + 1)
        db = [None] * (self.depth + 1) if self.has_bias else None
        for l in range(self.depth, -1, -1):
            a, beta, _, _ = self._scales(n[l])
            dW[l] = (D.T @ hs[l]) * a
            if self.has_bias:
                db[l] = beta * D.sum(axis=0)
            if l > 0:
                D = self.activation.dfn(zs[l - 1]) * ((D @ self.weights[l]) * a)
        return loss, dW, db

    def train(self, X, y, lr, steps, record_steps=None, X_test=None) -> TrainHistory:
        """Full-batch gradient descent θ ← θ − η ∇θ ½‖f(X) − y‖², in place.

        ``record_steps``: the steps (0 … steps) at which f(X), f(X_test) and the loss are
        recorded (default: 0 and ``steps``).  Tracks gradient flow at t = step."""
        X = self._check_x(X)
        y = self._check_y(y, X.shape[0])
        if X_test is not None:
            X_test = self._check_x(X_test, "X_test")
        lr = V.check_nonneg_finite(lr, "lr")
        steps = V.check_int(steps, "steps", minimum=0)
        record = np.unique(np.asarray([0, steps] if record_steps is None else record_steps,
                                      dtype=int))
        if record.size and (record.min() < 0 or record.max() > steps):
            raise ValueError(f"record_steps: must lie in [0, steps={steps}]")
        # Small batches: BLAS threads cost more than they save (and thrash on busy machines).
        with threadpool_limits(limits=1 if X.shape[0] <= 256 else None):
            return self._train(X, y, lr, steps, record, X_test)

    def _train(self, X, y, lr, steps, record, X_test):
        want = set(record.tolist())
        tr, te, losses = [], [], []
        for s in range(steps + 1):
            if s in want:
                f = self._forward(X)[0][-1]
                tr.append(f)
                losses.append(0.5 * float(np.sum((f - y) ** 2)))
                if X_test is not None:
                    te.append(self._forward(X_test)[0][-1])
            if s == steps:
                break
            _, dW, db = self._loss_and_grads(X, y)
            for l in range(self.depth + 1):
                self.weights[l] -= lr * dW[l]
                if self.has_bias:
                    self.biases[l] -= lr * db[l]
        return TrainHistory(steps=record, train=np.array(tr),
                            test=np.array(te) if X_test is not None else None,
                            loss=np.array(losses), lr=lr)


def finite_network(mlp, width, seed=0, n_out=1, d=None) -> FiniteMLP:
    """The finite-width network with ``mlp``'s depth, activation, σ_w, σ_b and
    parameterization at hidden width ``width`` (parameters drawn from ``seed``;
    ``d=None``: drawn on first use).  Backs ``MLP.finite(width, seed)``."""
    return FiniteMLP(width, depth=mlp.depth, activation=mlp.activation, w_std=mlp.w_std,
                     b_std=mlp.b_std, parameterization=mlp.parameterization, n_out=n_out,
                     seed=seed, d=d)
