"""``backend='numba'``: compiled, parallel kernels for activations without a C closed form.

Per block of rows (a *panel*, 256 rows by default): one GEMM of the panel against the
columns by NumPy/BLAS, then a Numba kernel, parallel over the panel's rows (``prange``),
runs the whole depth recursion per element (:mod:`ntkfast._spec`) and writes Σ/Θ.
Symmetric K(X, X): only columns ≥ row are computed, then mirrored; the diagonal is the
O(N) diagonal recursion (θ = 0), as in the compiled engine.

Two per-element evaluations of (E, Ė):

* **tabulated** — when every row of X shares one q per layer and every row of Z
  shares one q per layer (normalised inputs; relative spread ≤ :data:`CONSTANT_Q_RTOL`),
  the layer map depends on the angle θ only.  It is tabulated once per layer on
  :data:`TABLE_SIZE` + 1 equispaced θ ∈ [0, π] with the activation's own
  ``kernel_rule`` (the quadrature oracle, or Sin's closed form) and applied per
  element by 6-point Lagrange interpolation in θ = atan2(√max(q q' − Σ², 0), Σ).
  Tabulating in θ rather than ρ = cos θ keeps the maps smooth at ρ = ±1 (ReLU-like
  φ have √(1 − ρ²) terms).  Interpolation error ≲ 1e-12 relative to max|E| for the
  built-in activations at q ≈ 1 (tests: ≤ 1e-10).
* **per element** — otherwise: the same 2-D quadrature as ``kernel_rule``
  (:mod:`ntkfast.quadrature`, tensor rule with n² or polar rule with 4·n_a·n_r
  evaluations of φ and φ' per entry and layer), compiled with φ inlined; the outer
  values φ(√q_x x_k) are computed once per row and layer.  This costs ~n² φ
  evaluations per entry and layer, i.e. thousands of times the closed-form path;
  the tabulated path is the fast one.  Closed-form Sin/Cos are evaluated per panel by
  their NumPy rule.

Numba compiles the per-element kernel once per activation per process (a few
seconds); the tabulated kernel is cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError as _exc:  # pragma: no cover - numba is an optional extra
    numba = None
    _NUMBA_ERROR = _exc
else:
    _NUMBA_ERROR = None

from .. import quadrature
from ..activations import QuadratureActivation, Sin
from .reference import diagonal_from_variances

#: θ grid intervals of the tabulated path
TABLE_SIZE = 2048
#: rows per panel (one GEMM + one kernel launch)
DEFAULT_PANEL = 256
#: q counts as constant across rows when its relative spread is at most this
CONSTANT_Q_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-7}


def numba_available() -> bool:
    return numba is not None


def supports(activation) -> bool:
    return isinstance(activation, (QuadratureActivation, Sin))


# -- activation-independent kernels (cached on disk) ---------------------------------
if numba is not None:

    @njit(cache=True, inline="always")
    def _angle(S, qq):
        D = qq - S * S
        if D < 0.0:
            D = 0.0
        sp = math.sqrt(D)
        if sp == 0.0 and S == 0.0:
            return 0.5 * math.pi
        return math.atan2(sp, S)

    @njit(cache=True, parallel=True)
    def _fill_table(G, inv_d, symmetric, depth, w2, b2, lam0, lam, mu, qq, tabE, tabD,
                    inv_h, outS, outT):
        nr, nc = G.shape
        T = tabE.shape[1] - 1
        for r in prange(nr):
            c0 = r if symmetric else 0
            for c in range(c0, nc):
                g = G[r, c] * inv_d
                S = w2 * g + b2
                Th = lam0 * g + mu
                for l in range(depth):
                    th = _angle(S, qq[l]) * inv_h
                    j0 = int(th) - 2
                    if j0 < 0:
                        j0 = 0
                    elif j0 > T - 5:
                        j0 = T - 5
                    t = th - j0
                    # 6-point Lagrange weights at nodes 0..5
                    t0, t1, t2, t3, t4, t5 = t, t - 1.0, t - 2.0, t - 3.0, t - 4.0, t - 5.0
                    w0 = -(t1 * t2 * t3 * t4 * t5) / 120.0
                    w1 = (t0 * t2 * t3 * t4 * t5) / 24.0
                    w2l = -(t0 * t1 * t3 * t4 * t5) / 12.0
                    w3 = (t0 * t1 * t2 * t4 * t5) / 12.0
                    w4 = -(t0 * t1 * t2 * t3 * t5) / 24.0
                    w5 = (t0 * t1 * t2 * t3 * t4) / 120.0
                    E = (w0 * tabE[l, j0] + w1 * tabE[l, j0 + 1] + w2l * tabE[l, j0 + 2]
                         + w3 * tabE[l, j0 + 3] + w4 * tabE[l, j0 + 4] + w5 * tabE[l, j0 + 5])
                    Ed = (w0 * tabD[l, j0] + w1 * tabD[l, j0 + 1] + w2l * tabD[l, j0 + 2]
                          + w3 * tabD[l, j0 + 3] + w4 * tabD[l, j0 + 4] + w5 * tabD[l, j0 + 5])
                    Th = w2 * Ed * Th + lam * E + mu
                    S = w2 * E + b2
                outS[r, c] = S
                outT[r, c] = Th

    @njit(cache=True, inline="always")
    def _sigmoid(u):
        if u >= 0.0:
            return 1.0 / (1.0 + math.exp(-u))
        e = math.exp(u)
        return e / (1.0 + e)

    @njit(cache=True, inline="always")
    def _builtin_phi2(code, u):
        if code == 1:
            t = math.tanh(u)
            return t, 1.0 - t * t
        if code == 2:
            return max(u, 0.0) + math.log1p(math.exp(-abs(u))), _sigmoid(u)
        if code == 3:
            s = _sigmoid(u)
            return s, s * (1.0 - s)
        s = _sigmoid(u)
        return u * s, s + u * s * (1.0 - s)


def _make_fill(phi2):
    """The per-element kernel with φ (``phi2(u) -> (φ, φ')``, a Numba function) inlined."""

    @njit(parallel=True)
    def fill(G, inv_d, symmetric, depth, w2, b2, lam0, lam, mu, qx, qz, kink, x, w,
             ax, aw, rr, rw, outS, outT):
        nr, nc = G.shape
        n = x.size
        na = ax.size
        nrad = rr.size
        for r in prange(nr):
            fu = np.empty((depth, n))
            du = np.empty((depth, n))
            if not kink:
                for l in range(depth):
                    sx = math.sqrt(qx[l, r])
                    for k in range(n):
                        fu[l, k], du[l, k] = phi2(sx * x[k])
            brk = np.empty(5)
            c0 = r if symmetric else 0
            for c in range(c0, nc):
                g = G[r, c] * inv_d
                S = w2 * g + b2
                Th = lam0 * g + mu
                for l in range(depth):
                    a = qx[l, r]
                    b = qz[l, c]
                    qq = a * b
                    D = qq - S * S
                    if D < 0.0:
                        D = 0.0
                    root = math.sqrt(qq)
                    E = 0.0
                    Ed = 0.0
                    if not kink:
                        if root > 0.0:
                            rho = min(max(S / root, -1.0), 1.0)
                            s = min(math.sqrt(D) / root, 1.0)
                        else:
                            rho = 0.0
                            s = 1.0
                        rz = math.sqrt(b)
                        for k in range(n):
                            m = rz * rho * x[k]
                            ie = 0.0
                            ied = 0.0
                            for j in range(n):
                                f, df = phi2(m + rz * s * x[j])
                                ie += w[j] * f
                                ied += w[j] * df
                            E += w[k] * fu[l, k] * ie
                            Ed += w[k] * du[l, k] * ied
                    else:
                        sp = math.sqrt(D)
                        if sp == 0.0 and S == 0.0:
                            th = 0.5 * math.pi
                        else:
                            th = math.atan2(sp, S)
                        half = 0.5 * math.pi
                        tp = 2.0 * math.pi
                        brk[0] = half
                        brk[1] = 3.0 * half
                        brk[2] = (th + half) % tp
                        brk[3] = (th + 3.0 * half) % tp
                        brk[:4].sort()
                        brk[4] = brk[0] + tp
                        sa = math.sqrt(a)
                        sb = math.sqrt(b)
                        for arc in range(4):
                            lo = brk[arc]
                            ln = brk[arc + 1] - lo
                            for i in range(na):
                                t = lo + ln * ax[i]
                                wt = ln * aw[i]
                                cu = sa * math.cos(t)
                                cv = sb * math.cos(t - th)
                                pe = 0.0
                                pd = 0.0
                                for k in range(nrad):
                                    f1, d1 = phi2(cu * rr[k])
                                    f2, d2 = phi2(cv * rr[k])
                                    pe += rw[k] * f1 * f2
                                    pd += rw[k] * d1 * d2
                                E += wt * pe
                                Ed += wt * pd
                        E /= tp
                        Ed /= tp
                    Th = w2 * Ed * Th + lam * E + mu
                    S = w2 * E + b2
                outS[r, c] = S
                outT[r, c] = Th

    return fill


_KERNELS: dict = {}


def _builtin_closure(code):
    @njit(inline="always")
    def phi2(u):
        return _builtin_phi2(code, u)
    return phi2


def _kernel_for(act):
    key = ("builtin", act.quad_code) if act.quad_code >= 0 else ("custom", id(act))
    k = _KERNELS.get(key)
    if k is None:
        phi2 = _builtin_closure(act.quad_code) if act.quad_code >= 0 else act._nb_phi2
        k = _KERNELS[key] = (_make_fill(phi2), act)  # keep act alive for the id key
    return k[0]


def _is_constant(q, rtol):
    return q.size == 0 or float(np.ptp(q)) <= rtol * max(float(np.max(np.abs(q))), 1e-300)


_TABLES: dict = {}


def build_table(activation, qx0, qz0, size=TABLE_SIZE):
    """(E, Ė) on θ_j = jπ/size, j = 0 … size, for q(x) = qx0, q(z) = qz0 (memoised)."""
    key = (activation, float(qx0), float(qz0), int(size))
    hit = _TABLES.get(key)
    if hit is None:
        if len(_TABLES) >= 64:
            _TABLES.pop(next(iter(_TABLES)))
        hit = _TABLES[key] = _build_table(activation, qx0, qz0, size)
    return hit


def _build_table(activation, qx0, qz0, size):
    theta = np.linspace(0.0, np.pi, size + 1)
    sigma = math.sqrt(qx0 * qz0) * np.cos(theta)
    e, ed = activation.kernel_rule(sigma, np.full_like(sigma, qx0), np.full_like(sigma, qz0))
    return np.asarray(e, dtype=np.float64), np.asarray(ed, dtype=np.float64)


class NumbaQuadEngine:
    """The 'numba' backend (see module docstring).

    ``tabulate``: None (automatic: when q is constant per layer), True (require it; an
    error if q is not constant) or False (always per element).
    """

    name = "numba"

    def __init__(self, tabulate=None, panel=None, table_size=TABLE_SIZE):
        if numba is None:
            raise ImportError("backend='numba' needs numba: pip install 'ntkfast[numba]' "
                              f"({_NUMBA_ERROR})")
        self.tabulate = tabulate
        self.panel = panel
        self.table_size = int(table_size)
        self.last_mode = None

    def _mode(self, spec, qx, qz, dtype):
        rtol = CONSTANT_Q_RTOL.get(np.dtype(dtype), 1e-12)
        const = all(_is_constant(qx[l], rtol) and _is_constant(qz[l], rtol)
                    for l in range(spec.depth))
        if self.tabulate is True and not const:
            raise ValueError("backend='numba' with tabulate=True: the per-layer variances q "
                             "are not constant across rows (normalise the inputs)")
        if self.tabulate is False:
            return "element"
        return "table" if const else "element"

    def fill(self, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, tile=None,
             n_jobs=1, qx, qz):
        act = spec.activation
        if not supports(act):
            raise ValueError(f"backend='numba': {act!r} has a compiled closed form; use "
                             "backend='compiled' (or 'auto'); 'numba' computes quadrature "
                             "activations (Tanh, Softplus, Sigmoid, SiLU, Custom) and Sin/Cos")
        dtype = np.dtype(dtype)
        Xc = np.ascontiguousarray(Xb, dtype=dtype)
        Zc = Xc if symmetric else np.ascontiguousarray(Zb, dtype=dtype)
        qx = np.ascontiguousarray(qx, dtype=np.float64)
        qz = qx if symmetric else np.ascontiguousarray(qz, dtype=np.float64)
        n, m = Xc.shape[0], Zc.shape[0]
        inv_d = 1.0 / Xc.shape[1]
        mode = self._mode(spec, qx, qz, dtype) if spec.depth else "table"
        self.last_mode = mode
        depth = spec.depth
        if mode == "table":
            tabE = np.empty((max(depth, 1), self.table_size + 1))
            tabD = np.empty_like(tabE)
            qq = np.empty(max(depth, 1))
            for l in range(depth):
                qx0 = float(qx[l, 0]) if n else 0.0
                qz0 = float(qz[l, 0]) if m else 0.0
                tabE[l], tabD[l] = build_table(act, qx0, qz0, self.table_size)
                qq[l] = qx0 * qz0
        elif isinstance(act, QuadratureActivation):
            kernel = _kernel_for(act)
            if act.kink:
                na, nrad = quadrature.DEFAULT_POLAR
                ax, aw = quadrature.legendre_rule(na)
                rr, rw = quadrature.halfline_rule(nrad, 1)
                x = w = np.zeros(1)
            else:
                x, w = quadrature.smooth_rule(act.degree, act.rule)
                ax = aw = rr = rw = np.zeros(1)
        panel = int(self.panel or DEFAULT_PANEL)
        threads = max(1, min(int(n_jobs or 1), numba.config.NUMBA_NUM_THREADS))
        old_threads = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for i0 in range(0, n, panel):
                i1 = min(n, i0 + panel)
                j0 = i0 if symmetric else 0
                G = Xc[i0:i1] @ Zc[j0:].T
                shape = (i1 - i0, m - j0)
                oS = out_nngp[i0:i1, j0:] if out_nngp is not None else np.empty(shape, dtype)
                oT = out_ntk[i0:i1, j0:] if out_ntk is not None else np.empty(shape, dtype)
                if mode == "table":
                    _fill_table(G, inv_d, symmetric, depth, spec.w2, spec.b2, spec.lam0,
                                spec.lam, spec.mu, qq, tabE, tabD,
                                self.table_size / math.pi, oS, oT)
                elif isinstance(act, QuadratureActivation):
                    kernel(G, inv_d, symmetric, depth, spec.w2, spec.b2, spec.lam0, spec.lam,
                           spec.mu, qx[:, i0:i1], qz[:, j0:], act.kink, x, w, ax, aw, rr, rw,
                           oS, oT)
                else:
                    self._numpy_panel(spec, G * inv_d, qx[:, i0:i1], qz[:, j0:], oS, oT)
                if symmetric:
                    for o in (out_nngp, out_ntk):
                        if o is None:
                            continue
                        sq = o[i0:i1, i0:i1]
                        il = np.tril_indices(i1 - i0, -1)
                        sq[il] = sq.T[il]
                        o[i1:, i0:i1] = o[i0:i1, i1:].T
        finally:
            numba.set_num_threads(old_threads)
        if symmetric:
            sig_diag, ntk_diag = diagonal_from_variances(spec, Xc, qx)
            idx = np.arange(n)
            if out_nngp is not None:
                out_nngp[idx, idx] = sig_diag
            if out_ntk is not None:
                out_ntk[idx, idx] = ntk_diag

    @staticmethod
    def _numpy_panel(spec, g, qx, qz, oS, oT):
        S = spec.w2 * g + spec.b2
        T = spec.lam0 * g + spec.mu
        for l in range(spec.depth):
            e, ed = spec.activation.kernel_rule(S, qx[l][:, None], qz[l][None, :])
            T = spec.w2 * ed * T + spec.lam * e + spec.mu
            S = spec.w2 * e + spec.b2
        oS[...] = S
        oT[...] = T
