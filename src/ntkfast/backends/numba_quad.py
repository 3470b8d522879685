"""``backend='numba'``: compiled, parallel kernels for activations without a C closed form.

Per block of rows (a *panel*, 512 rows by default): one GEMM of the panel against the
columns by NumPy/BLAS, then a Numba kernel, parallel over the panel's rows (``prange``),
runs the whole depth recursion per element (:mod:`ntkfast._spec`) and writes Σ/Θ.
Symmetric K(X, X): only columns ≥ row are computed and mirrored (by the series and Sin
kernels while the tile is in cache, else per panel); the diagonal is the O(N) diagonal
recursion (θ = 0), as in the compiled engine.

Four per-element evaluations of (E, Ė):

* **tabulated** — when every row of X shares one q per layer and every row of Z
  shares one q per layer (normalised inputs; relative spread ≤ :data:`CONSTANT_Q_RTOL`),
  the layer map depends on the angle θ only.  It is tabulated once per layer on
  :data:`TABLE_SIZE` + 1 equispaced θ ∈ [0, π] with the activation's own
  ``kernel_rule`` (the quadrature oracle, or Sin's closed form) and applied per
  element by 6-point Lagrange interpolation in θ = atan2(√max(q q' − Σ², 0), Σ).
  Tabulating in θ rather than ρ = cos θ keeps the maps smooth at ρ = ±1 (ReLU-like
  φ have √(1 − ρ²) terms).  Interpolation error ≲ 1e-12 relative to max|E| for the
  built-in activations at q ≈ 1 (tests: ≤ 1e-10).
* **series** — the default for Tanh, Softplus, Sigmoid, SiLU and smooth :class:`Custom`
  φ on inputs of unequal norms: the Hermite series of :mod:`ntkfast.series`.  Per layer
  the coefficient vectors of every row and column (one 1-D quadrature each, a BLAS
  product), then :func:`_fill_series`: per chunk of :data:`SERIES_CB` columns the number
  of terms its largest |ρ| needs (the certified truncation bound, ≤ 1e-13 of
  √(E[φ(u)²]E[φ(v)²])) and one power series f(ρ) for both maps (E = b_0 b_0 + f,
  Ė = f'/√(q_x q_z), :meth:`~ntkfast.series.SeriesCoeffs.chain`): its parity chains in
  ρ² by Horner together with their derivatives, vectorised over the chunk, the whole
  depth recursion per element.
  A first pass uses :data:`ntkfast.series.KFAST` terms; the elements it cannot certify
  get a :data:`~ntkfast.series.KCAP` pass, and those still uncertified (|ρ| → 1 with a
  steep φ(√q ·)) the activation's own rule (series or 2-D quadrature per element).
  Measured 2.1–3.3× the compiled ReLU time (``bench/bench_activations.py``).
* **closed** — :class:`Sin`/:class:`Cos`: the closed form fused into the recursion
  (:func:`_fill_sin`: per-row × per-column damping factors, one vectorised exponential
  per element and layer), ~1.2× the compiled ReLU time.
* **per element** — φ with ``kink=True`` or ``method='quadrature'`` (``degree=``
  given): the same 2-D quadrature as ``kernel_rule`` (:mod:`ntkfast.quadrature`, tensor
  rule with n² or polar rule with 4·n_a·n_r evaluations of φ and φ' per entry and
  layer), compiled with φ inlined; the outer values φ(√q_x x_k) are computed once per
  row and layer.  This costs ~n² φ evaluations per entry and layer, i.e. thousands of
  times the closed-form path.

Numba compiles the per-element kernel once per activation per process (a few
seconds); the tabulated kernel is cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
    from llvmlite import ir as _llvm_ir
    from numba import njit, prange
    from numba.core.extending import intrinsic
except ImportError as _exc:  # pragma: no cover - numba is an optional extra
    numba = None
    _NUMBA_ERROR = _exc
else:
    _NUMBA_ERROR = None

from .. import quadrature
from ..activations import QuadratureActivation, Sin
from .reference import diagonal_from_variances
from .. import series

if numba is not None:
    from ..series import rho_bin as _series_bin

#: θ grid intervals of the tabulated path
TABLE_SIZE = 2048
#: rows per panel (one GEMM + one kernel launch): the Gram products of N = 4000, d = 64
#: took 0.017 s at 512 rows against 0.020–0.024 s at 256 (thin products run faster
#: with more rows); the buffer is 512 × the columns
DEFAULT_PANEL = 512
#: columns per chunk of the series kernel (its CB; 128 measured ~15 % faster than 32
#: or 64 at N = 4000: fewer chunk set-ups, the chunk's K hardly grows)
SERIES_CB = 128
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


    @njit(inline="always")
    def _store_chunk(outS, outT, mirS, mirT, wS, wT, r, lo, m, S, Th):
        """Row r, columns lo … lo + m − 1 of a panel from the chunk's Σ, Θ, and the
        same values into the mirror views (column r of the rows below) while hot."""
        oS = outS[r, lo:lo + m]
        oT = outT[r, lo:lo + m]
        for i in range(m):
            oS[i] = S[i]
            oT[i] = Th[i]
        if wS:
            for i in range(m):
                mirS[lo + i, r] = S[i]
        if wT:
            for i in range(m):
                mirT[lo + i, r] = Th[i]

    @njit(cache=True, parallel=True)
    def _mirror_panel(o, i0, i1):
        """o[j, i] = o[i, j] for rows i0 ≤ i < i1 and columns j > i (the lower part of a
        symmetric block from its upper panel), in 32 × 32 tiles, parallel over tiles."""
        n = o.shape[0]
        B = 32
        for t in prange((n - i0 + B - 1) // B):
            jb = i0 + t * B
            je = min(n, jb + B)
            for ib in range(i0, i1, B):
                ie = min(i1, ib + B)
                if ib >= je:
                    continue
                for j in range(jb, je):
                    for i in range(ib, min(ie, j)):
                        o[j, i] = o[i, j]

    @njit(cache=True, parallel=True)
    def _fill_series(G, inv_d, symmetric, depth, w2, b2, lam0, lam, mu, qx, qz, P, c0x, kt,
                     Qt, c0z, ktz, ktzb, lanes, cb, i0, j0, outS, outT, flag, mirS, mirT):
        """The recursion per element with (E, Ė) from one power series per pair,
        vectorised over chunks of CB columns:

            E = b_0 b_0 + f(ρ),   Ė = f'(ρ)/√(q_x q_z),   f(ρ) = Σ_{k≥1} a_k a_k ρ^k

        (:meth:`ntkfast.series.SeriesCoeffs.chain`), f split by parity into chains in
        t = ρ² (odd: ρ·O(t), even: t·V(t)), each run by Horner together with its
        derivative: f' = O + 2t·O' + 2ρ(V + t·V').  Three operations per term for both
        maps where separate series of E and Ė take four.

        qx, qz: the inverse roots 1/√q (0 where q = 0) of the layers' variances, so
        ρ = Σ · (1/√q_x)(1/√q_z).  Rows i0 + r of the per-layer packed chains P (depth,
        n, J, 2), b_0 in c0x (depth, n) and term tables kt (depth, n, NBINS) against
        columns j0 + c of Qt (depth, J, 2, m: the columns' chains, column index last),
        c0z (depth, m), ktz and ktzb (depth, ⌈m/CB⌉, NBINS: ktz's maximum over each
        aligned block of CB columns); lanes (depth, 3): (pm, two, j2) of
        :func:`ntkfast.series.chain_plan`.  A chunk of columns sums the series to the
        K its largest |ρ| needs (f to ρ^{K+1}, so that f' has Ė's K terms; more terms
        only shrink the truncation); an element whose series cannot be certified is
        flagged (``flag[r, c]``) and left for the caller, as is the diagonal of a
        symmetric block.  ``mirS``/``mirT`` (see :func:`_mirrors`): where not empty, the
        transposed views that receive outS[r, c]/outT[r, c] at [c, r] too (a symmetric
        block's lower part, written while the tile is in cache: no separate mirror
        pass)."""
        nr, nc = G.shape
        nb = kt.shape[2]
        wS = mirS.shape[0] > 0
        wT = mirT.shape[0] > 0
        kcap = 2 * P.shape[2] - 2
        RB = 8
        CB = cb
        nbad = np.zeros((nr + RB - 1) // RB, dtype=np.int64)  # per row block
        for rb in prange((nr + RB - 1) // RB):
            S = np.empty(CB)
            Th = np.empty(CB)
            rho = np.empty(CB)
            rbits = rho.view(np.int64)
            r2 = np.empty(CB)
            sc = np.empty(CB)
            f0 = np.empty(CB)
            g0 = np.empty(CB)
            f1 = np.empty(CB)
            g1 = np.empty(CB)
            bad = np.empty(CB, dtype=np.bool_)
            ra = rb * RB
            re = min(nr, ra + RB)
            cstart = ra + 1 if symmetric else 0
            for ca in range(cstart, nc, 4 * CB):
                cb_end = min(nc, ca + 4 * CB)
                for r in range(ra, re):
                    x = i0 + r
                    lo0 = ca
                    if symmetric and lo0 < r + 1:
                        lo0 = r + 1
                    for lo in range(lo0, cb_end, CB):
                        m = min(CB, cb_end - lo)
                        z0 = j0 + lo
                        g = G[r, lo:lo + m]
                        anybad = False
                        for i in range(m):
                            S[i] = w2 * (g[i] * inv_d) + b2
                            Th[i] = lam0 * (g[i] * inv_d) + mu
                            bad[i] = False
                        for l in range(depth):
                            ia = qx[l, x]
                            iz = qz[l, z0:z0 + m]
                            pm = lanes[l, 0]
                            two = lanes[l, 1]
                            j2 = lanes[l, 2]
                            for i in range(m):
                                s = ia * iz[i]
                                sc[i] = s
                                rh = min(max(S[i] * s, -1.0), 1.0)
                                rho[i] = rh
                                r2[i] = rh * rh
                            # max |ρ| as the max of the bits with the sign cleared: an
                            # integer reduction vectorises, a float max does not
                            mb = 0
                            for i in range(m):
                                mb = max(mb, rbits[i] & 0x7FFFFFFFFFFFFFFF)
                            mmax = _bits_to_double(min(mb, 0x3FF0000000000000))  # ≤ 1.0
                            bi = _series_bin(mmax, nb)
                            K = max(kt[l, x, bi], ktzb[l, z0 // CB, bi],
                                    ktzb[l, (z0 + m - 1) // CB, bi])
                            if K > kcap:  # rare: per element, flag what cannot be certified
                                K = 0
                                for i in range(m):
                                    bj = _series_bin(rho[i], nb)
                                    Ki = max(kt[l, x, bj], ktz[l, z0 + i, bj])
                                    if Ki > kcap:
                                        bad[i] = True
                                        anybad = True
                                    elif Ki > K:
                                        K = Ki
                            # f to ρ^{K+1}: odd chain a_{2j+1}, j ≤ K/2; even chain
                            # a_{2j+2}, j ≤ (K − 1)/2; the minor lane stops at j2
                            top = K // 2 if pm == 1 else (K - 1) // 2
                            top2 = min((K - 1) // 2 if pm == 1 else K // 2, j2)
                            f0[:m] = 0.0
                            g0[:m] = 0.0
                            _chain(Qt, P, l, x, 0, z0, m, top, r2, f0, g0)
                            if two:
                                f1[:m] = 0.0
                                g1[:m] = 0.0
                                _chain(Qt, P, l, x, 1, z0, m, top2, r2, f1, g1)
                            # j = 0 fused with E, Ė and the layer's update: A, B the
                            # lanes' chains at t and dA, dB their t-derivatives
                            a00 = c0x[l, x]
                            cz0 = c0z[l, z0:z0 + m]
                            p0 = P[l, x, 0, 0]
                            q0 = Qt[l, 0, 0, z0:z0 + m]
                            p1 = P[l, x, 0, 1]                # 0 without a minor lane
                            q1 = Qt[l, 0, 1, z0:z0 + m]
                            for i in range(m):
                                t = r2[i]
                                rh = rho[i]
                                A = f0[i] * t + p0 * q0[i]
                                dA = g0[i] * t + f0[i]
                                if two:
                                    B = f1[i] * t + p1 * q1[i]
                                    dB = g1[i] * t + f1[i]
                                else:
                                    B = 0.0
                                    dB = 0.0
                                if pm == 1:
                                    E = a00 * cz0[i] + rh * A + t * B
                                    D = A + 2.0 * t * dA + 2.0 * rh * (B + t * dB)
                                else:
                                    E = a00 * cz0[i] + t * A + rh * B
                                    D = 2.0 * rh * (A + t * dA) + B + 2.0 * t * dB
                                Th[i] = w2 * (sc[i] * D) * Th[i] + lam * E + mu
                                S[i] = w2 * E + b2
                        _store_chunk(outS, outT, mirS, mirT, wS, wT, r, lo, m, S, Th)
                        if anybad:
                            for i in range(m):
                                if bad[i]:
                                    flag[r, lo + i] = True
                                    nbad[rb] += 1
        return nbad.sum()

    @njit(inline="always")
    def _chain(Qt, P, l, x, lane, z0, m, top, r2, f, g):
        """Horner steps j = top … 1 of one lane's chain and its t-derivative over a chunk
        (f ← f·t + a_j, g ← g·t + f): single steps down to a multiple of four, then
        four steps per pass over the chunk (a quarter of the loads and stores of the
        accumulators; ~5 % faster than two)."""
        j = top                                  # top < 1 (K = 0): no step
        while j > 0 and j % 4 != 0:
            q0 = Qt[l, j, lane, z0:z0 + m]
            p0 = P[l, x, j, lane]
            for i in range(m):
                t = r2[i]
                g[i] = g[i] * t + f[i]
                f[i] = f[i] * t + p0 * q0[i]
            j -= 1
        while j >= 4:
            # 1-D slices: LLVM vectorises these loops (not 4-D indexing)
            q0 = Qt[l, j, lane, z0:z0 + m]
            u0 = Qt[l, j - 1, lane, z0:z0 + m]
            q1 = Qt[l, j - 2, lane, z0:z0 + m]
            u1 = Qt[l, j - 3, lane, z0:z0 + m]
            p0 = P[l, x, j, lane]
            s0 = P[l, x, j - 1, lane]
            p1 = P[l, x, j - 2, lane]
            s1 = P[l, x, j - 3, lane]
            for i in range(m):
                t = r2[i]
                fa = f[i]
                ga = g[i] * t + fa
                fa = fa * t + p0 * q0[i]
                ga = ga * t + fa
                fa = fa * t + s0 * u0[i]
                ga = ga * t + fa
                fa = fa * t + p1 * q1[i]
                g[i] = ga * t + fa
                f[i] = fa * t + s1 * u1[i]
            j -= 4

    @intrinsic
    def _bits_to_double(typingctx, i):
        """The float64 whose bit pattern is the int64 ``i`` (2^n = (n + 1023) << 52)."""
        if not isinstance(i, numba.types.Integer):
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _llvm_ir.DoubleType())
        return numba.types.float64(numba.types.int64), codegen

    @njit(cache=True, inline="always", fastmath={"contract"})
    def _exp_sinh(y):
        """(e^y, sinh y) for 0 ≤ y ≤ 709, branch-free so that a loop over elements
        vectorises (Numba has no vector exp without SVML): y = n ln2 + r, |r| ≤ ln2/2
        (Cody–Waite: ln2 in two parts), e^r by its Taylor polynomial to r¹³ (truncation
        < 5e-18), times 2^n built from its bits: ≤ 1 ulp measured on [0, 709].  sinh y
        by its Taylor polynomial to y¹⁷ below y = 1 (no cancellation, truncation
        < 1e-17), else (e^y − e^{−y})/2."""
        n = int(y * 1.4426950408889634 + 0.5)
        r = (y - n * 0.6931471803691238) - n * 1.9082149292705877e-10
        p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
            1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
                1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
                                                           + r * (1.0 / 6227020800)))))))))))))
        ey = p * _bits_to_double((n + 1023) << 52)
        z = y * y
        sp = y * (1.0 + z * (1.0 / 6 + z * (1.0 / 120 + z * (1.0 / 5040 + z * (
            1.0 / 362880 + z * (1.0 / 39916800 + z * (1.0 / 6227020800 + z * (
                1.0 / 1307674368000 + z * (1.0 / 355687428096000)))))))))
        sl = 0.5 * (ey - 1.0 / ey)
        return ey, (sp if y < 1.0 else sl)

    @njit(cache=True, parallel=True, fastmath={"contract"})
    def _fill_sin(G, inv_d, symmetric, depth, w2, b2, lam0, lam, mu, fx, fz, i0, j0, bb, a2,
                  sin2, cos2, outS, outT, mirS, mirT):
        """The recursion per element for φ(u) = a sin(bu + c) (:class:`Sin`'s closed form,
        fused): with x = b²Σ and the per-row/column factors fx[l, i0 + r] = e^{−b² q_x/2},
        fz[l, j0 + c] = e^{−b² q_z/2} (C-contiguous, so that the column loop vectorises;
        bb = b², a2 = a², sin2 = sin²c, cos2 = cos²c),

            E = a² fx fz (sinh x + sin²c e^{−x}),
            Ė = a² b² fx fz (sinh x + cos²c e^{−x}),

        from one vectorised exponential of |x| per element and layer (:func:`_exp_sinh`;
        sinh and e^{−x} without cancellation), per block of RB rows × CB columns.
        ``mirS``/``mirT``: as in :func:`_fill_series`."""
        nr, nc = G.shape
        wS = mirS.shape[0] > 0
        wT = mirT.shape[0] > 0
        RB = 8
        CB = 64
        for rb in prange((nr + RB - 1) // RB):
            S = np.empty(CB)
            Th = np.empty(CB)
            ra = rb * RB
            re = min(nr, ra + RB)
            for ca in range(ra if symmetric else 0, nc, CB):
                for r in range(ra, re):
                    lo = max(ca, r) if symmetric else ca
                    m = min(ca + CB, nc) - lo
                    if m <= 0:
                        continue
                    g = G[r, lo:lo + m]
                    for i in range(m):
                        S[i] = w2 * (g[i] * inv_d) + b2
                        Th[i] = lam0 * (g[i] * inv_d) + mu
                    for l in range(depth):
                        ax = a2 * fx[l, i0 + r]
                        f = fz[l, j0 + lo:j0 + lo + m]
                        for i in range(m):
                            x = bb * S[i]
                            y = abs(x)
                            ok = y <= 709.0              # False for NaN too
                            ey, sh = _exp_sinh(y if ok else 0.0)
                            ey = ey if ok else math.inf  # overflow (or NaN) as NumPy's sinh
                            sh = sh if ok else y * math.inf
                            small = 1.0 / ey
                            dec = small if x >= 0.0 else ey      # e^{−x}
                            sh = sh if x >= 0.0 else -sh         # sinh x
                            damp = ax * f[i]
                            E = damp * (sh + sin2 * dec)
                            Ed = bb * damp * (sh + cos2 * dec)
                            Th[i] = w2 * Ed * Th[i] + lam * E + mu
                            S[i] = w2 * E + b2
                    _store_chunk(outS, outT, mirS, mirT, wS, wT, r, lo, m, S, Th)


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
    error if q is not constant) or False (always per element).  Sin/Cos take their
    fused closed form unless ``tabulate=True``.
    """

    name = "numba"

    def __init__(self, tabulate=None, panel=None, table_size=TABLE_SIZE, series=None):
        if numba is None:
            raise ImportError("backend='numba' needs numba: pip install 'ntkfast[numba]' "
                              f"({_NUMBA_ERROR})")
        self.tabulate = tabulate
        self.panel = panel
        self.table_size = int(table_size)
        self.series = series
        self.last_mode = None
        self.last_flagged = 0

    def _mode(self, spec, qx, qz, dtype):
        rtol = CONSTANT_Q_RTOL.get(np.dtype(dtype), 1e-12)
        const = all(_is_constant(qx[l], rtol) and _is_constant(qz[l], rtol)
                    for l in range(spec.depth))
        if self.tabulate is True and not const:
            raise ValueError("backend='numba' with tabulate=True: the per-layer variances q "
                             "are not constant across rows (normalise the inputs)")
        if isinstance(spec.activation, Sin) and self.tabulate is not True:
            return "closed"
        if not const or self.tabulate is False:
            act = spec.activation
            return "series" if getattr(act, "uses_series", False) and \
                self.series is not False else "element"
        return "table"

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
        self.last_flagged = 0
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
        elif mode == "series":
            tables = _SeriesPanels(act, qx, None if symmetric else qz, depth, n_jobs,
                                   min(n, int(self.panel or DEFAULT_PANEL)), m)
        elif mode == "closed":
            bb = act.b * act.b
            with np.errstate(under="ignore"):
                fx = np.ascontiguousarray(np.exp(-0.5 * bb * qx))
                fz = fx if symmetric else np.ascontiguousarray(np.exp(-0.5 * bb * qz))
            sin_args = (bb, act.a * act.a, math.sin(act.c) ** 2, math.cos(act.c) ** 2)
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
        # single-threaded BLAS for the panels' GEMMs: idle BLAS threads spin and take
        # the cores from the Numba kernels that follow (as in the compiled engine).
        # Measured worse: the whole Gram matrix by one threaded syrk into an output
        # that the kernels overwrite (+0.03 s at N = 4000: the kernels then read G
        # from memory instead of a panel still in cache)
        from .._threads import limited
        blas = limited(1, "blas")
        blas.__enter__()  # left in the finally below
        gram = _PanelGram(threads)
        try:
            for i0 in range(0, n, panel):
                i1 = min(n, i0 + panel)
                j0 = i0 if symmetric else 0
                G = gram(Xc[i0:i1], Zc[j0:])
                shape = (i1 - i0, m - j0)
                oS = out_nngp[i0:i1, j0:] if out_nngp is not None else np.empty(shape, dtype)
                oT = out_ntk[i0:i1, j0:] if out_ntk is not None else np.empty(shape, dtype)
                mirS, mirT, mirrored = _mirrors(symmetric and mode in ("series", "closed"),
                                                out_nngp, out_ntk, i0, i1, dtype)
                if mode == "table":
                    _fill_table(G, inv_d, symmetric, depth, spec.w2, spec.b2, spec.lam0,
                                spec.lam, spec.mu, qq, tabE, tabD,
                                self.table_size / math.pi, oS, oT)
                elif mode == "series":
                    self._series_panel(spec, tables, G, inv_d, symmetric, qx, qz, i0, j0,
                                       i1, oS, oT, mirS, mirT)
                elif mode == "closed":
                    _fill_sin(G, inv_d, symmetric, depth, spec.w2, spec.b2, spec.lam0,
                              spec.lam, spec.mu, fx, fz, i0, j0, *sin_args, oS, oT, mirS,
                              mirT)
                else:  # "element": a QuadratureActivation by 2-D quadrature per element
                    kernel(G, inv_d, symmetric, depth, spec.w2, spec.b2, spec.lam0, spec.lam,
                           spec.mu, qx[:, i0:i1], qz[:, j0:], act.kink, x, w, ax, aw, rr, rw,
                           oS, oT)
                if symmetric:
                    for o in (out_nngp, out_ntk):
                        if o is None or any(o is d for d in mirrored):
                            continue
                        if type(o) is np.ndarray:  # blocked, cache-friendly transpose
                            _mirror_panel(o, i0, i1)
                            continue
                        sq = o[i0:i1, i0:i1]
                        il = np.tril_indices(i1 - i0, -1)
                        sq[il] = sq.T[il]
                        o[i1:, i0:i1] = o[i0:i1, i1:].T
        finally:
            gram.close()
            blas.__exit__(None, None, None)
            numba.set_num_threads(old_threads)
        if symmetric:
            sig_diag, ntk_diag = diagonal_from_variances(spec, Xc, qx)
            idx = np.arange(n)
            if out_nngp is not None:
                out_nngp[idx, idx] = sig_diag
            if out_ntk is not None:
                out_ntk[idx, idx] = ntk_diag

    def _series_panel(self, spec, tables, G, inv_d, symmetric, qx, qz, i0, j0, i1, oS, oT,
                      mirS, mirT):
        """One panel by the series: a first pass with KFAST terms; the elements it
        cannot certify get a KCAP pass (its tables built on first need), and those
        still uncertified the activation's own rule (:func:`_redo_pairs`); the mirror
        views (:func:`_mirrors`) get the corrected elements too."""
        args = (G, inv_d, symmetric, spec.depth, spec.w2, spec.b2, spec.lam0, spec.lam,
                spec.mu, *tables.roots)
        flag = tables.flag[:G.shape[0], :G.shape[1]]     # all False between panels
        if not _fill_series(*args, *tables.fast, i0, j0, oS, oT, flag, mirS, mirT):
            return
        S2 = np.empty(G.shape)
        T2 = np.empty(G.shape)
        flag2 = np.zeros(G.shape, dtype=np.bool_)
        none = np.empty((0, 0))
        _fill_series(*args, *tables.full(), i0, j0, S2, T2, flag2, none, none)
        still = flag & flag2
        r, c = np.nonzero(still)
        g = G[r, c] * inv_d
        fixed = flag.copy()
        oS[flag] = S2[flag]
        oT[flag] = T2[flag]
        if r.size:
            self.last_flagged += int(r.size)
            _redo_pairs(spec, g, qx[:, i0:i1][:, r], qz[:, j0:][:, c], r, c, oS, oT)
        r, c = np.nonzero(fixed)
        for o, mir in ((oS, mirS), (oT, mirT)):
            if mir.shape[0]:
                mir[c, r] = o[r, c]
        flag[...] = False


class _SeriesPanels:
    """What the series kernel reads across the panels of one block: the KFAST tables
    (``fast``), the KCAP ones built on first need (:meth:`full`), the inverse roots of
    the variances and a flag buffer of one panel (kept all False between panels)."""

    def __init__(self, act, qx, qz, depth, n_jobs, rows, cols):
        self._args = (act, qx, qz, depth, n_jobs)
        self.fast = _series_tables(*self._args, series.KFAST)
        self._full = None
        self.roots = (_inv_roots(qx), _inv_roots(qx if qz is None else qz))
        self.flag = np.zeros((rows, cols), dtype=np.bool_)

    def full(self):
        if self._full is None:
            self._full = _series_tables(*self._args, series.KCAP)
        return self._full


def _series_tables(act, qx, qz, depth, n_jobs=1, kcap=None):
    """Per layer l < depth the series data of the variances qx[l] (and qz[l]; None:
    the same as X): (P, c0x, kt, Qt, c0z, ktz, ktzb, lanes, CB) as :func:`_fill_series`
    reads them (the columns' data with the column index last).  Computed on
    ``n_jobs`` threads, single-threaded BLAS each, per side and layer: the coefficients
    (at most ``kcap`` terms, default :data:`ntkfast.series.KCAP`) and their power-series
    chains, then, once the layer's lane plan is known, the packed layouts.  Rows with
    q ≤ 0 are flagged in kt (their Ė is not f'(ρ)/√(q_x q_z): the caller's per-element
    rule)."""
    from concurrent.futures import ThreadPoolExecutor
    from .._threads import limited
    kcap = int(kcap or series.KCAP)
    sides = [qx] if qz is None else [qx, qz]
    jobs = [(s_, l) for s_ in range(len(sides)) for l in range(depth)]
    J = series.n_pairs(kcap)
    d1 = max(depth, 1)
    n, m = qx.shape[1], sides[-1].shape[1]
    nblk = -(-m // SERIES_CB)
    P = np.zeros((d1, n, J, 2))
    c0x = np.zeros((d1, n))
    kt = np.zeros((d1, n, series.NBINS), dtype=np.int16)
    Qt = np.zeros((d1, J, 2, m))
    c0z = np.zeros((d1, m))
    ktz = kt if qz is None else np.zeros((d1, m, series.NBINS), dtype=np.int16)
    ktzb = np.zeros((d1, nblk, series.NBINS), dtype=np.int16)
    lanes = np.zeros((d1, 3), dtype=np.int64)
    lanes[:, 1] = 1
    lanes[:, 2] = J - 1

    def coefficients(job):
        q = sides[job[0]][job[1]]
        c = act.series_coefficients(q, kcap)
        kt_ = c.kt
        if not np.all(q > 0):
            kt_ = kt_.copy()
            kt_[~(q > 0)] = np.iinfo(np.int16).max
        return c.chain(q), c.A[:, 0], kt_

    def pack(job, done):
        side, l = job
        F, b0, kt_ = done
        packed = series.chain_packed(F, J, int(lanes[l, 0]))
        if side == 0:
            P[l], c0x[l], kt[l] = packed, b0, kt_
        if side == len(sides) - 1:                  # the columns: index last
            Qt[l] = packed.transpose(1, 2, 0)
            c0z[l] = b0
            ktz[l] = kt_
            # ktz's maximum over aligned blocks of SERIES_CB columns (the kernel's chunks)
            pad = np.zeros((nblk * SERIES_CB, series.NBINS), dtype=np.int16)
            pad[:m] = kt_
            ktzb[l] = pad.reshape(nblk, SERIES_CB, series.NBINS).max(axis=1)

    with limited(1, "blas"), \
            ThreadPoolExecutor(max(1, min(int(n_jobs or 1), len(jobs)))) as pool:
        done = list(pool.map(coefficients, jobs))
        for l in range(depth):
            lanes[l] = series.chain_plan(*[done[s_ * depth + l][0]
                                           for s_ in range(len(sides))])
        list(pool.map(lambda k: pack(jobs[k], done[k]), range(len(jobs))))
    return P, c0x, kt, Qt, c0z, ktz, ktzb, lanes, SERIES_CB


def _mirrors(enabled, out_nngp, out_ntk, i0, i1, dtype):
    """(mirS, mirT, mirrored): for a symmetric panel of rows i0:i1 the transposed views
    out[i0:, i0:i1] a kernel fills along with the upper part (an empty array where an
    output is absent or not a plain ndarray: mirrored afterwards), and the outputs
    that are mirrored that way."""
    empty = np.empty((0, 0), dtype)
    views = []
    done = []
    for o in (out_nngp, out_ntk):
        if enabled and o is not None and type(o) is np.ndarray:
            views.append(o[i0:, i0:i1])
            done.append(o)
        else:
            views.append(empty)
    return views[0], views[1], tuple(done)


class _PanelGram:
    """A panel's Gram product A Bᵀ on ``threads`` threads of our own, each a
    single-threaded BLAS call on a slab of A's rows (a contiguous block of the result):
    no BLAS worker threads, which would spin after each product and take the cores
    from the Numba kernels."""

    def __init__(self, threads):
        self.threads = int(threads)
        self._pool = None
        self._buf = np.empty(0)
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.threads)

    def __call__(self, A, B):
        """A Bᵀ in a buffer reused from panel to panel (its pages faulted in once):
        valid until the next call."""
        n, m = A.shape[0], B.shape[0]
        dtype = np.result_type(A, B)
        if self._buf.dtype != dtype or self._buf.size < n * m:
            self._buf = np.empty(n * m, dtype=dtype)
        G = self._buf[:n * m].reshape(n, m)
        if self._pool is None or n < 16 * self.threads:
            return np.matmul(A, B.T, out=G)
        cuts = np.linspace(0, n, self.threads + 1).astype(int)
        list(self._pool.map(lambda k: np.matmul(A[cuts[k]:cuts[k + 1]], B.T,
                                                out=G[cuts[k]:cuts[k + 1]]),
                            range(self.threads)))
        return G

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()


def _inv_roots(q):
    """1/√q, 0 where q = 0 (ρ = 0 for a zero row, as in the other engines)."""
    with np.errstate(divide="ignore"):
        r = 1.0 / np.sqrt(q)
    return np.ascontiguousarray(np.where(q > 0, r, 0.0))


def _redo_pairs(spec, g, qx, qz, r, c, oS, oT):
    """oS[r, c], oT[r, c] by the activation's own rule (series where it certifies, else
    2-D quadrature), vectorised over the pairs: g the pairs' inner products / d, qx and
    qz (depth, pairs) their variances."""
    S = spec.w2 * g + spec.b2
    T = spec.lam0 * g + spec.mu
    for l in range(spec.depth):
        e, ed = spec.activation.kernel_rule(S, qx[l], qz[l])
        T = spec.w2 * ed * T + spec.lam * e + spec.mu
        S = spec.w2 * e + spec.b2
    oS[r, c] = S
    oT[r, c] = T
