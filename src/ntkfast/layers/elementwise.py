"""Elementwise layers: every activation of :mod:`ntkfast.activations` used as a layer.

Rule, at every pixel pair (p, p') with the per-position variances q_x(p), q_z(p'):
Σ'[p, p'] = E[φ(u)φ(v)],  Θ'[p, p'] = Θ[p, p'] · E[φ'(u)φ'(v)],
(u, v) ~ N(0, [[q_x(p), Σ[p, p']], [Σ[p, p'], q_z(p')]]) — the activation's own
``kernel_rule``.  In the self pass (Σ(x, x)) the same-position pairs p = p' use
the activation's ``diag_rule`` (θ = 0 exactly), so the diagonals are exact.

As in neural-tangents 0.6.5 (``_elementwise`` raises unless ``k.is_gaussian``), the
input must be a zero-mean Gaussian (after a Dense/Conv, possibly pooled, normalised or
summed), and the output is not one (``is_gaussian=False``); the identity is a no-op.

Near-parallel pairs: E[φ'φ'] of the ReLU family, (a²+b²)/2 − k θ with k = (a−b)²/(2π),
reads θ to first order, and θ from D = q q' − Σ² formed in float64 is off by
δθ ≈ ν/(sin θ + √ν), ν = 16 u (:data:`ANGLE_NOISE`, u = 2⁻⁵³: the noise of D relative
to q q' from a few roundings in Σ and q) — ~1e-8 for duplicates computed along
different paths.  (E and the NNGP are second order in δθ: they keep their digits.)
In the float64 passes these activations (:attr:`Activation.angle_sensitive`)
therefore estimate, per pair of inputs, the relative error of Θ' = Ė Θ that the
angles of its pixel pairs cause,

    est = Σ_pp k δθ |Θ[pp]| / Σ_pp |Ė Θ[pp]|,

over the pixel pairs with sin²θ < :data:`NEAR_PARALLEL_TAU` (the others add ≲ 1e-12:
k ν/√τ ≈ 3e-13 of their Θ), not counting pixel pairs with Σ = q = q' to the bit (the
two sides computed alike — identical windows of duplicates or of uniform regions:
θ = 0 is right, the true values differing by ~u at most, so the true θ is ~u) nor the
self pass's own same-position pairs (θ = 0 by the diagonal rule).  The estimates are
summed over the layers on the tape, and the engine recomputes the pairs with
est > :data:`NEAR_PARALLEL_RTOL` in double-double (Σ a :class:`~.doubledouble.DD`,
``kernel_rule_dd``), where every angle is exact to ~1e-16 absolute.  Measured, est
is 4-50 times the actual error, so the pairs left in float64 are within ~2.5e-11.
Nothing is estimated when Θ is not wanted, nor after an activation without a
double-double rule (quadrature activations, Sin, Cos: the precise pass would evaluate
it in float64, so a ReLU after it keeps the float64 angles, ~1e-9 for duplicates).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import Activation, Identity, get_activation
from .base import Layer, LayerError
from .doubledouble import is_dd
from .state import Meta, broadcast, scale_ntk, set_spatial_diagonal

__all__ = ["Elementwise", "NEAR_PARALLEL_TAU", "NEAR_PARALLEL_RTOL", "ANGLE_NOISE"]

#: pixel pairs with q q' − Σ² < τ q q' (sin²θ < τ, θ < 1e-3) enter the error estimate
NEAR_PARALLEL_TAU = 1e-6
#: pairs whose estimated relative error of Θ (summed over the layers) exceeds this are
#: recomputed precisely (the estimate is 4-50 times the measured error)
NEAR_PARALLEL_RTOL = 1e-10
#: ν: the float64 noise of D = q q' − Σ², relative to q q' (16 u)
ANGLE_NOISE = 16 * 2.0 ** -53


class Elementwise(Layer):
    """An activation φ as a layer (``serial`` wraps activation objects in it)."""

    kind = "elementwise"

    def __init__(self, activation):
        self.activation: Activation = get_activation(activation)

    def output_meta(self, meta, where):
        meta = super().output_meta(meta, where)
        if isinstance(self.activation, Identity):
            return meta
        if not meta.gaussian:
            raise LayerError(
                f"{where}: an activation is defined (as in neural-tangents) only on "
                "zero-mean Gaussian input, i.e. after a Dense/Conv (possibly pooled, "
                "normalised or summed), not after another activation, Flatten or on the raw "
                "input; put a Dense or Conv before it")
        return Meta(meta.spatial, meta.channels, False)

    def kernel(self, state):
        act = self.activation
        if isinstance(act, Identity):  # E[φφ] = Σ, E[φ'φ'] = 1 exactly: a no-op
            return state
        meta = Meta(state.meta.spatial, state.meta.channels, False)
        qx, qz, q = state.variances()
        precise = is_dd(state.sigma)
        if not act.dd_exact:
            state.tape.float64_only = True
        # float64 passes: estimate the Θ error the angles cause (see module doc)
        ntk = state.ntk
        watch = (not precise and act.angle_sensitive and ntk is not None
                 and np.ndim(ntk) > 0 and not state.tape.float64_only)
        if precise:
            rule, diag_rule = act.kernel_rule_dd, act.diag_rule_dd
        elif watch:
            def rule(sigma, qx, qz):
                return act.kernel_rule(sigma, qx, qz, near_tau=NEAR_PARALLEL_TAU)
            diag_rule = act.diag_rule
        else:
            rule, diag_rule = act.kernel_rule, act.diag_rule
        d = len(state.meta.spatial)
        near = None
        if state.is_self:
            e_diag, edot_diag = diag_rule(q)
            if state.full:
                e, edot, *near = rule(state.cov, qx, qz)
                shape = state.cov.shape
                e = broadcast(e, shape).copy()
                edot = np.array(np.broadcast_to(edot, shape), dtype=np.float64)
                set_spatial_diagonal(e, d, e_diag)
                set_spatial_diagonal(edot, d, edot_diag)
                if near and near[0] is not None:
                    # the same-position pairs (θ = 0 by the diagonal rule) excepted
                    near = np.array(np.broadcast_to(near[0], shape))
                    set_spatial_diagonal(near, d, False)
                    near = [near]
            else:
                e, edot = e_diag, edot_diag
        else:
            e, edot, *near = rule(state.nngp, qx, qz)
            if near and near[0] is not None and state.tape.skip_diagonal:
                i = np.arange(min(near[0].shape[:2]))
                near[0][i, i] = False
        if near and near[0] is not None and near[0].any():
            _estimate_angle_error(state, act, near[0], qx, qz, edot)
        e = broadcast(e, state.sigma.shape)
        return state.evolve(sigma=e, ntk=scale_ntk(state.ntk, edot), meta=meta)

    def describe(self):
        from ..outofcore.journal import describe
        return {"layer": "Elementwise", "activation": describe(self.activation)}

    def __repr__(self):
        return repr(self.activation)


def _estimate_angle_error(state, act, near, qx, qz, edot):
    """Add to the tape, per pair, the estimated relative error of Θ' = Ė Θ caused by
    the float64 angles of the near-parallel pixel pairs ``near`` (a mask of Σ's
    shape; see the module doc)."""
    sigma, ntk = state.sigma, state.ntk
    shape = sigma.shape
    nb = 1 if state.is_self else 2
    where = np.nonzero(near)
    a, b = np.broadcast_to(qx, shape)[where], np.broadcast_to(qz, shape)[where]
    s = sigma[where]
    qq = a * b
    sin = np.sqrt(np.maximum(qq - s * s, 0.0) / qq)
    nu = ANGLE_NOISE
    # Σ = qx = qz to the bit: both sides computed alike (θ = 0 is then right to ~u)
    alike = (s == a) & (s == b)
    dtheta = np.where(alike, 0.0, nu / (sin + np.sqrt(nu)))
    contrib = act.edot_angle_slope * dtheta * np.abs(np.broadcast_to(ntk, shape)[where])
    pairs = math.prod(shape[:nb])
    num = np.bincount(np.ravel_multi_index(where[:nb], shape[:nb]), contrib, minlength=pairs)
    cand = num > 0
    if not cand.any():
        return
    flat = (np.abs(np.broadcast_to(edot, shape) * ntk)).reshape(pairs, -1)
    est = np.zeros(pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        est[cand] = num[cand] / flat[cand].sum(axis=1)
    state.tape.add_angle_error(np.where(np.isnan(est), np.inf, est).reshape(shape[:nb]))
