"""Hermite-series kernel maps for smooth activations without a closed form.

For ``(u, v) ~ N(0, [[qx, Σ], [Σ, qz]])`` write u = √qx g, v = √qz g' with corr(g, g') =
ρ = Σ/√(qx qz).  Mehler's formula gives, with the orthonormal Hermite polynomials
p_k = He_k/√k! and the per-variance coefficients b_k(q) = E[φ(√q g) p_k(g)],

    E[φ(u)φ(v)]   = Σ_k b_k(qx) b_k(qz) ρ^k,
    E[φ'(u)φ'(v)] = Σ_k b'_k(qx) b'_k(qz) ρ^k       (b'_k from φ' the same way).

So per layer the coefficient vectors of every row are computed once (one trapezoidal
quadrature per row: a BLAS product of the (rows × nodes) values of φ with the
(nodes × K) Hermite table, :func:`coefficients`) and each element is a K-term
polynomial in ρ (evaluated as an even and an odd chain in ρ², two independent Horner
recurrences; φ of one parity, e.g. tanh, has one chain only).

**Error bound.**  By Parseval Σ_k b_k(q)² = E[φ(√q g)²] =: e(q), so the tail after K
terms, T_K(q) = e(q) − Σ_{k≤K} b_k(q)², bounds the truncation (Cauchy–Schwarz):

    |Σ_{k>K} b_k(qx) b_k(qz) ρ^k| ≤ |ρ|^{K+1} √(T_K(qx) T_K(qz)).

Each row stores, for :data:`NBINS` bins of |ρ| (at the bin's upper edge m), the least K
with m^{(K+1)/2} √(T_K/e) ≤ √:data:`TOL` (the product of the two rows' factors is then
≤ TOL): an element reads the larger K of its two rows, so its truncation error is
≤ TOL · √(e(qx) e(qz)) (TOL = 1e-13; the Cauchy–Schwarz scale of E[φ(u)φ(v)]).  Where
no K ≤ the computed length meets it (|ρ| → 1 with steep φ(√q ·), e.g. tanh at q ≳ 1.5
and |ρ| ≳ 0.9) the element is *flagged* and the caller evaluates it by 2-D quadrature
(:func:`quadrature_fallback`, its step refined with q).

**Coefficients.**  b_k(q) = Σ_n w_n φ(√q x_n) p_k(x_n) on the trapezoidal rule x_n = n h,
|x_n| ≤ L = 14 (:data:`HALF_WIDTH`: beyond, |p_k(x)| e^{−x²/2} < 1.1 e^{−49} for every
k), h = min(0.2, 0.15/√q): for φ
analytic in the strip |Im u| < τ the error is ~ exp(−2π τ/(h √q)) (tanh, τ = π/2:
≤ 1e-16 for every q), measured ≤ 4e-16 for k ≤ 128 (φ = tanh' , the hardest built-in)
against a rule with h = 0.01.
Rows are grouped by ⌈log₂ q⌉ (one step per group); every row gets the same length K,
the largest any group needs (the least with relative tail ≤ 1e-8 at ρ = 1, at most
:data:`KCAP`): the tail bound of a row holds only over computed terms.  On a fixed
rule b_k(q) is analytic in log q, so a group of many rows is computed at 25
Chebyshev points of its range of log q and interpolated; a row keeps the interpolant
where the 13- and 25-point ones agree to 1e-14 of its √e(q), else it gets its own
rule (:func:`_interpolated`; measured: every row of the built-in activations over
1e-3 ≤ q ≤ 30 within 1e-14 of its own rule, i.e. at rounding level).

**Kinks.**  A φ with a kink or jump has algebraically decaying b_k (ReLU: T_K ~ K^{−3/2})
at every variance, a steep analytic φ (tanh(3u)) only at large ones:
:func:`decay_check` measures the tail after KCAP terms (at q = 1 and 1/16 for a
:class:`~ntkfast.activations.Custom` φ, which warns and keeps the quadrature when both are
slow), and :func:`calibrate_step` refines the rule for φ analytic in a narrow strip.

**φ' from φ (Stein).**  Gaussian integration by parts, E[φ'(√q g) He_k(g)] =
E[φ(√q g) He_{k+1}(g)]/√q, gives b'_k = √(k+1) b_{k+1}/√q: a
:class:`~ntkfast.activations.Custom` φ without ``dfn`` needs no derived φ' for its tables
(:func:`coefficients` with ``stein``), except on rows where 1/√q would amplify the
rounding of b_{k+1} past :data:`STEIN_AMP`.  The compiled engines use the same identity
to take both maps from one series per pair: E = b_0 b_0 + f(ρ), Ė = f'(ρ)/√(qx qz),
f(ρ) = Σ_{k≥1} a_k(qx) a_k(qz) ρ^k (:meth:`SeriesCoeffs.chain`), each parity chain run by
Horner with its derivative: three operations per term for both maps instead of four.

**Diagonal.**  E[φ(√q g)²] and E[φ'(√q g)²] are smooth in log q: the diagonal rule of many
rows is computed at 65 Chebyshev points and interpolated, verified per row
(:func:`diag_interpolated`).

**Speed.**  The coefficients cost O(nodes × K) per group of rows (the interpolation
O(rows × 25 × K), BLAS) and the truncation tables O(rows × (K + NBINS)); the elements
O(K) each, with K ≈ 10–25 for |ρ| ≲ 0.3 (typical of unrelated inputs) and KCAP = 128
at |ρ| → 1.
The engine (:mod:`ntkfast.backends.numba_quad`) first runs with :data:`KFAST` terms and
gives a KCAP pass only to the elements that need it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is an optional extra
    njit = None

__all__ = ["KCAP", "TOL", "NBINS", "SeriesCoeffs", "coefficients", "table_terms", "diag",
           "decay_check", "hermite_table", "evaluate", "quadrature_fallback", "stein_rows",
           "diag_interpolated"]

#: most Hermite terms per row and map
KCAP = 128
#: terms of the engine's first pass (the pairs it cannot certify get a KCAP pass):
#: enough for |ρ| ≲ 0.8 with tanh at q = 1, at ~1/4 of KCAP's coefficient cost
KFAST = 48
#: truncation bound, relative to √(e(qx) e(qz))
TOL = 1e-13
#: bins of |ρ| in the per-row tables of K
NBINS = 256
#: relative tail at ρ = 1 at which a group of rows stops adding terms
CONVERGED = 1e-8
#: relative tail at q = 1, K = KCAP above which φ counts as kinked (ReLU: 2.6e-2,
#: tanh: 1e-7, a φ' with a kink such as u|u|: ~1e-3)
KINK_TAIL = 1e-4
#: half-width of the coefficients' rule: by Cramér's inequality |p_k(x)| ≤ 1.09 e^{x²/4}
#: for every k, so the integrand φ(√q x) p_k(x) e^{−x²/2} is below 1.1 e^{−49}|φ| beyond
#: (measured: the coefficients agree with L = 31 to 2e-16 for k ≤ 128)
HALF_WIDTH = 14.0
#: rows per block of the coefficient products (bounds temporaries to ~ 10 MB)
_ROWS = 1024


#: most terms the base step resolves (measured: the first coefficient off by > 2e-15
#: of √E[φ²] from a rule 7× finer is at k = 328 … 1432 for the built-in activations
#: over 1/16 ≤ q ≤ 16)
STEP_TERMS = 256


def _step(q, step=1.0, K=0):
    """The trapezoidal step for variance q; ``step`` < 1 scales it down for φ analytic in
    a narrower strip than tanh's (:meth:`ntkfast.activations.Custom` calibrates it).

    Tables of more than :data:`STEP_TERMS` terms also resolve p_k: the Fourier transform
    of φ(√q x) p_k(x) e^{−x²/2} reaches about √k + 1.5 + 22.3 √q/step (p_k's spectrum
    peaks at √k; measured over the built-ins, 1/16 ≤ q ≤ 4), which must stay below the
    alias frequency 2π/h, so h ≤ 2π/(√K + 6 + 24 √q/step)."""
    h = step * min(0.2, 0.15 / math.sqrt(max(q, 1e-300)))
    if K > STEP_TERMS:
        reach = math.sqrt(K) + 6.0 + 24.0 * math.sqrt(max(q, 0.0)) / step
        h = min(h, 2.0 * math.pi / reach)
    return h


@functools.lru_cache(maxsize=64)
def _rule(h, K):
    """Trapezoidal nodes x_n = n h on [−L, L] and weights ∝ e^{−x²/2} (sum 1)."""
    L = HALF_WIDTH
    m = int(math.ceil(L / h))
    x = np.arange(-m, m + 1) * h
    w = np.exp(-0.5 * x * x)
    w /= w.sum()
    for a in (x, w):
        a.setflags(write=False)
    return x, w


def _cached_below(limit):
    """lru_cache for the tables of at most ``limit`` terms; longer ones (the conv
    engine's last tier: up to 2048 terms × ~1000 nodes, 10-20 MB each, their (h, K)
    different from call to call) are rebuilt each time instead of pinned in memory."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=64)(fn)

        @functools.wraps(fn)
        def table(h, K):
            return cached(h, K) if K <= limit else fn(h, K)
        return table
    return wrap


@_cached_below(STEP_TERMS)
def folded_table(h, K):
    """(y, we, wo, We, Wo): the nodes y ≥ 0 of :func:`hermite_table`'s rule and, for
    f(x) folded into fe = f(y) + f(−y), fo = f(y) − f(−y) (y > 0; fe = f(0), fo = 0 at
    y = 0), the weights and tables with b_{2j} = fe @ We[:, j], b_{2j+1} = fo @ Wo[:, j]
    (p_k has the parity of k), half the nodes and half the terms each."""
    x, w, W = hermite_table(h, K)
    m = x.size // 2                      # x[m] = 0
    y = x[m:]
    we = w[m:].copy()
    We = W[m:, 0::2].copy()
    Wo = W[m:, 1::2].copy()
    for a in (y, we, We, Wo):
        a.setflags(write=False)
    return y, we, We, Wo


@_cached_below(STEP_TERMS)
def hermite_table(h, K):
    """(x, w, W) with W[n, k] = w_n p_k(x_n), p_k = He_k/√k! (the recurrence
    p_{k+1} = (x p_k − √k p_{k−1})/√(k+1))."""
    x, w = _rule(h, K)
    P = np.empty((K + 1, x.size))
    P[0] = 1.0
    if K >= 1:
        P[1] = x
    for k in range(1, K):
        P[k + 1] = (x * P[k] - math.sqrt(k) * P[k - 1]) / math.sqrt(k + 1)
    W = np.ascontiguousarray((P * w).T)
    W.setflags(write=False)
    return x, w, W


class SeriesCoeffs:
    """Per-row series data for a vector of variances q (see the module doc).

    ``A``/``Ad``: (n, K+1) coefficients b_k(q) of φ and of φ'; ``kt``: (n, NBINS) int16,
    the terms needed per |ρ| bin by both maps (> K: not certifiable, flag);
    ``e``/``ed``: E[φ(√q g)²], E[φ'(√q g)²] (the exact diagonal).
    """

    __slots__ = ("A", "Ad", "kt", "e", "ed")

    def __init__(self, A, Ad, kt, e, ed):
        self.A, self.Ad, self.kt, self.e, self.ed = A, Ad, kt, e, ed

    @property
    def K(self):
        return self.A.shape[1] - 1

    def lanes(self):
        """(E odd, E even, Ė odd, Ė even): per map and parity the last j with a nonzero
        coefficient (odd: k = 2j + 1, even: k = 2j + 2; relative to the row's largest),
        −1 if none."""
        return _last_nonzero(self.A, (1, 2)) + _last_nonzero(self.Ad, (1, 2))

    def packed(self, J, pe, pd):
        """(P, c0): P (n, J, 4) float64, lane 0: E's coefficients of parity ``pe`` (1:
        b_{2j+1}, 0: b_{2j+2}), lane 1: Ė's of parity ``pd``, lanes 2, 3: the other
        parities; c0 (n, 2): b_0 and b'_0.  Zero-padded (:func:`evaluate`'s layout: one
        row's chains side by side; the compiled engines take :func:`chain_packed`)."""
        n = self.A.shape[0]
        P = np.zeros((n, J, 4))
        for lane, C, par in ((0, self.A, pe), (1, self.Ad, pd), (2, self.A, 1 - pe),
                             (3, self.Ad, 1 - pd)):
            part = C[:, (1 if par else 2)::2][:, :J]
            P[:, :part.shape[1], lane] = part
        c0 = np.ascontiguousarray(np.stack([self.A[:, 0], self.Ad[:, 0]], axis=1))
        return P, c0

    def chain(self, q):
        """(n, K + 1): the coefficients a_1 … a_{K+1} of the single power series of both
        maps, b_k(q) for k ≥ 1, so that

            E = b_0(qx) b_0(qz) + f(ρ),   Ė = f'(ρ)/√(qx qz),   f(ρ) = Σ_k a_k(qx) a_k(qz) ρ^k

        (Stein: k b_k(qx) b_k(qz)/√(qx qz) = b'_{k−1}(qx) b'_{k−1}(qz)).  Taken as
        a_k = √q b'_{k−1}/√k, accurate on every row: it is b_k to rounding where b' came
        from b (:func:`stein_rows`), and where φ' was integrated (tiny q) f' returns
        those coefficients exactly while E's terms keep their error ≤ ε √E[φ²].  Rows
        with q ≤ 0 lose Ė's constant term b'_0 b'_0 (f' = 0 there): the FC engine flags
        them, the conv kernel takes b'_0 b'_0 there.  Up to a_{K+1}, so that f' covers
        Ė's K terms."""
        q = np.asarray(q, dtype=np.float64)
        k = np.arange(1, self.Ad.shape[1] + 1)
        root = np.sqrt(np.maximum(q, 0.0))
        return root[:, None] * self.Ad / np.sqrt(k)[None, :]


def _last_nonzero(C, starts):
    """Per start s, the last j with column s + 2j of C nonzero in some row (relative to
    that row's largest entry: 1e-15), −1 if none."""
    if not C.size:
        return (-1,) * len(starts)
    mag = np.abs(C)
    big = (mag > 1e-15 * mag.max(axis=1, keepdims=True)).any(axis=0)
    out = []
    for s in starts:
        cols = np.nonzero(big[s::2])[0]
        out.append(int(cols[-1]) if cols.size else -1)
    return tuple(out)


def chain_lane(F, par):
    """The parity ``par`` (1: a_{2j+1}, 0: a_{2j+2}) of chain coefficients F
    (:meth:`SeriesCoeffs.chain`, column k − 1 holding a_k), entry j in column j."""
    return F[:, (0 if par else 1)::2]


def chain_plan(*chains):
    """(pm, two, j2) of power-series coefficients (:meth:`SeriesCoeffs.chain`, column
    k − 1 holding a_k): the major lane holds the parity with the longer run of nonzero
    terms (pm: 1 odd, a_{2j+1}; 0 even, a_{2j+2}; relative to each row's largest), the
    minor lane the other, nonzero up to j2 (−1: none, two = 0).  tanh and sigmoid have
    one lane; softplus and SiLU, whose odd part is u/2, j2 = 0."""
    odd = even = -1
    for F in chains:                  # column 0: a_1 (odd), column 1: a_2 (even)
        o, e = _last_nonzero(F, (0, 1))
        odd, even = max(odd, o), max(even, e)
    pm = 1 if odd >= even else 0
    j2 = even if pm else odd
    return pm, int(j2 >= 0), j2


def chain_packed(F, J, pm):
    """(n, J, 2) float64: lane 0 the major parity pm of :func:`chain_plan` (1: a_{2j+1},
    0: a_{2j+2}), lane 1 the other, zero-padded (one row's lanes side by side)."""
    n = F.shape[0]
    P = np.zeros((n, J, 2))
    for lane, par in ((0, pm), (1, 1 - pm)):
        part = chain_lane(F, par)[:, :J]
        P[:, :part.shape[1], lane] = part
    return P


def lane_plan(*coeff_sets):
    """(pe, pd, nl, j2) shared by the coefficient sets: lane 0 (1) holds the parity of
    E (Ė) with the longer run of nonzero terms (pe, pd: 1 odd, 0 even), lanes 2, 3 the
    other parities, nonzero up to j2 (−1: none, nl = 2; else nl = 4).  Odd φ (tanh, sin)
    and sigmoid − ½ have nl = 2; softplus and SiLU, whose odd part is u/2, j2 = 0."""
    return plan_lanes(*(C.lanes() for C in coeff_sets))


def plan_lanes(*lane_sets):
    """:func:`lane_plan` from the sets' :meth:`SeriesCoeffs.lanes` tuples."""
    eo = ee = do = de = -1
    for a, b, c, d in lane_sets:
        eo, ee, do, de = max(eo, a), max(ee, b), max(do, c), max(de, d)
    pe = 1 if eo >= ee else 0
    pd = 1 if do >= de else 0
    j2 = max(ee if pe else eo, de if pd else do)
    return pe, pd, (4 if j2 >= 0 else 2), j2


def n_pairs(K):
    """Entries j of :meth:`SeriesCoeffs.packed` a K-term series reads (j ≤ K // 2)."""
    return K // 2 + 1


@functools.lru_cache(maxsize=8)
def _bin_powers(K1):
    """(NBINS, K1): m^k, k = 1 … K1, m the upper edges of the |ρ| bins (read-only;
    16 ms to build for the conv engine's long tables)."""
    mpow = np.power(((np.arange(NBINS) + 1.0) / NBINS)[:, None], np.arange(1, K1 + 1))
    mpow.setflags(write=False)
    return mpow


def _k_table(b, e, bd=None, ed=None, jobs=1):
    """(n, NBINS) int32: least K' with m^{(K'+1)/2} √(T_K'/e) ≤ √TOL, m the bin's upper
    edge; with ``bd``, ``ed`` (φ''s coefficients) the least K' that bounds both maps:
    the condition, m^{K'+1} · max(T_K'/e, T'_K'/e') ≤ TOL, is monotone in K', so it is
    one scan per row (:func:`_k_rows`, without the GIL: blocks of rows on ``jobs``
    threads) against a table of the powers m^k."""
    n, K1 = b.shape
    mpow = _bin_powers(K1)
    kt = np.empty((n, NBINS), dtype=np.int32)
    two = bd is not None
    b = np.ascontiguousarray(b, dtype=np.float64)
    e = np.ascontiguousarray(e, dtype=np.float64)
    bd = np.ascontiguousarray(bd, dtype=np.float64) if two else b
    ed = np.ascontiguousarray(ed, dtype=np.float64) if two else e
    from ._threads import map_threads
    args = (mpow, TOL, 32767, 8 * np.finfo(float).eps)
    cuts = np.linspace(0, n, max(1, min(int(jobs or 1), n // 256)) + 1).astype(int)

    def rows(k):
        r = slice(cuts[k], cuts[k + 1])
        _k_rows(b[r], e[r], bd[r], ed[r], two, *args, kt[r])

    map_threads(rows, range(cuts.size - 1), jobs)
    return kt


@functools.lru_cache(maxsize=512)
def _group_k(phi2, q, kcap=KCAP, step=1.0):
    """Terms the largest q of a group needs: the least K with relative tail T_K/e ≤
    CONVERGED² at ρ = 1 in both maps, the tail summed as the K tables sum it (the terms
    after K, plus the clamped remainder e − Σ b² and 8 ε e: no cancellation), or, for
    tables of more than :data:`STEP_TERMS` terms, ≤ TOL/16 (what the K table's last bin
    needs, with margin for the group's smaller variances: CONVERGED² is below the
    rounding of a long sum).

    Memoised: a function of φ and the group's bound q = 2^g only, asked again for every
    chunk of images and layer by the conv engine, and each answer is a quadrature of
    ``kcap`` terms (8 ms at 2048)."""
    x, w, W = hermite_table(_step(q, step, kcap), kcap)
    f, d = phi2(math.sqrt(q) * x)
    goal = CONVERGED * CONVERGED if kcap <= STEP_TERMS else TOL / 16
    K = 0
    for vals in (f, d):
        b = (vals @ W)
        e = float(w @ (vals * vals))
        if e <= 0:
            continue
        if kcap <= STEP_TERMS:
            T = np.maximum(e - np.cumsum(b * b), 0.0) / e
        else:
            sq = b * b
            after = np.concatenate([np.cumsum(sq[::-1])[::-1][1:], [0.0]])
            T = (after + max(e - float(sq.sum()), 0.0) + 8 * np.finfo(float).eps * e) / e
        hit = np.nonzero(T <= goal)[0]
        K = max(K, int(hit[0]) if hit.size else kcap)
    return max(K, 2)


def coefficients(phi2, q, kcap=KCAP, step=1.0, stein=None, jobs=1):
    """See :func:`_coefficients` (run with single-threaded BLAS: its products are thin,
    and threaded BLAS slows them down several-fold on a busy machine; ``jobs`` threads
    of our own run its groups of variances side by side)."""
    from ._threads import limited
    with limited(1, "blas"):
        return _coefficients(phi2, q, kcap, step, stein, int(jobs or 1))


def _folded(vals_p, vals_m, We, Wo, we, C, e, rows, K1):
    """C[rows, :K1] = the coefficients b_0 … b_{K1−1} of the values on the folded rule
    (vals_p at +y, vals_m at −y; :func:`folded_table`) and e[rows] = Σ w φ²."""
    fe = vals_p + vals_m
    fo = vals_p - vals_m
    fe[:, 0] *= 0.5            # y = 0 counted once
    fo[:, 0] = 0.0
    # an odd (even) φ has fe (fo) = 0 exactly: skip its product
    C[rows, 0:K1:2] = (fe @ We)[:, :(K1 + 1) // 2] if fe.any() else 0.0
    C[rows, 1:K1:2] = (fo @ Wo)[:, :K1 // 2] if fo.any() else 0.0
    sq = vals_p * vals_p + vals_m * vals_m
    sq[:, 0] *= 0.5
    e[rows] = sq @ we


def stein_rows(q, e, ed):
    """The rows whose φ' coefficients come from φ's (:func:`coefficients` with
    ``stein``): b'_k = √(k+1) b_{k+1}/√q carries the rounding of b_{k+1} (~ε √e) times
    1/√q, i.e. ε·√(e/(q ed)) relative to √ed; used where that amplification is at most
    :data:`STEIN_AMP` (else φ' itself is integrated)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        amp2 = e / (q * ed)
    return (q > 0) & (ed > 0) & (amp2 <= STEIN_AMP * STEIN_AMP)


#: largest amplification √(E[φ²]/(q E[φ'²])) of the rounding of φ's coefficients that
#: the Stein identity may carry into φ''s: the error of b'_k is ≤ 7 ε·amp·√E[φ'²]
#: (measured for sigmoid, softplus and LeCun's tanh at q = 1e-12 … 30,
#: tests/test_stein.py), so ≤ 5e-14 √E[φ'²] here; beyond (tiny q with E[φ] ≠ 0) φ' is
#: integrated
STEIN_AMP = 30.0


def _octaves(q):
    """The group of each variance, ⌈log₂ q⌉ (the rows that share a rule)."""
    return np.ceil(np.log2(np.maximum(q, 1e-300))).astype(np.int64)


def table_terms(phi2, q, kcap=KCAP, step=1.0, groups=None):
    """Terms K of :func:`coefficients`' tables for the variances ``q``: the most any
    of their groups (⌈log₂ q⌉) needs (:func:`_group_k`, memoised: cheap after the first
    call), at least 2, at most ``kcap``.  Every row gets all K terms."""
    q = np.asarray(q, dtype=np.float64).ravel()
    if not q.size:
        return 2
    g = _octaves(q) if groups is None else groups
    return max([2] + [_group_k(phi2, float(2.0 ** k), kcap, step) for k in np.unique(g)])


def _coefficients(phi2, q, kcap=KCAP, step=1.0, stein=None, jobs=1):
    """:class:`SeriesCoeffs` for the variances ``q`` (1-D float64), ``phi2(u) -> (φ, φ')``
    vectorised, with at most ``kcap`` (even) terms: the tables flag (> kcap) what
    these cannot certify.

    ``stein``: None, or (phi, ed) with ``phi(u) -> φ`` vectorised and ed = E[φ'(√q g)²]
    per row (e.g. :func:`diag`'s): then φ' is not evaluated for the rows of
    :func:`stein_rows` — its coefficients follow from φ's by Gaussian integration by
    parts (Stein), E[φ'(√q g) He_k(g)] = E[φ(√q g) He_{k+1}(g)]/√q, i.e.
    b'_k = √(k+1) b_{k+1}/√q in the orthonormal basis (one more term of φ).

    A group of many rows is computed at a few variances and interpolated in log q
    (:func:`_interpolated`), verified per row.  The groups run on ``jobs`` threads
    (each group's values do not depend on the others: the same tables for any
    ``jobs``)."""
    q = np.ascontiguousarray(q, dtype=np.float64).ravel()
    n = q.size
    groups = _octaves(q)
    parts = [(np.nonzero(groups == g)[0], float(2.0 ** g)) for g in np.unique(groups)]
    Kall = table_terms(phi2, q, kcap, step, groups)
    # every row gets all Kall terms: the tail bound of a row is only valid over
    # computed terms (a row truncated earlier would need its true, sub-rounding tail)
    nb = Kall + 1 + (stein is not None)        # φ's coefficients (Stein: to b_{Kall+1})
    B = np.empty((n, nb))
    Ad = np.empty((n, Kall + 1))
    e = np.empty(n)
    ed = np.empty(n)
    if stein is not None:
        phi, ed[:] = stein

    def group(part):
        """The rows of one group (its own rule; disjoint rows of B, Ad, e, ed)."""
        idx, qg = part
        y, we, We, Wo = folded_table(_step(qg, step, nb - 1), nb - 1)

        def rule(qr):
            """[b_0 … b_{nb−1}, e] of φ at the variances qr (without ``stein`` also
            [b'_0 … b'_Kall, ed] of φ') on the group's rule, one row per variance."""
            m = qr.size
            u = np.sqrt(qr)[:, None] * y[None, :]
            all_rows = np.arange(m)
            Bq, eq = np.empty((m, nb)), np.empty(m)
            if stein is not None:
                _folded(phi(u), phi(-u), We, Wo, we, Bq, eq, all_rows, nb)
                return np.concatenate([Bq, eq[:, None]], axis=1)
            fp, dp = phi2(u)
            fm, dm = phi2(-u)
            Dq, edq = np.empty((m, Kall + 1)), np.empty(m)
            _folded(fp, fm, We, Wo, we, Bq, eq, all_rows, nb)
            _folded(dp, dm, We, Wo, we, Dq, edq, all_rows, Kall + 1)
            return np.concatenate([Bq, eq[:, None], Dq, edq[:, None]], axis=1)

        def store(rows, V):
            B[rows], e[rows] = V[:, :nb], V[:, nb]
            if stein is None:
                Ad[rows], ed[rows] = V[:, nb + 1:-1], V[:, -1]

        # (columns, the row's energy column, its power): √e for coefficients, e for e
        blocks = [(0, nb, nb, 0.5), (nb, nb + 1, nb, 1.0)]
        if stein is None:
            de = nb + Kall + 2
            blocks += [(nb + 1, de, de, 0.5), (de, de + 1, de, 1.0)]
        direct = _interpolated(rule, store, q, idx, blocks)
        for s in range(0, direct.size, _ROWS):
            rows = direct[s:s + _ROWS]
            store(rows, rule(q[rows]))
        if stein is not None:
            _stein_derivative(phi2, q, idx, B, e, ed, Ad, y, we, We, Wo, Kall)

    # the groups are independent (each its own rule, its own rows): on ``jobs``
    # threads, largest first, with the values of the sequential loop
    from ._threads import map_threads
    parts.sort(key=lambda part: -part[0].size)
    map_threads(group, parts, jobs)
    A = np.ascontiguousarray(B[:, :Kall + 1])
    kt = _k_table(A, e, Ad, ed, jobs).astype(np.int16)
    return SeriesCoeffs(A, Ad, kt, e, ed)


def _stein_derivative(phi2, q, idx, B, e, ed, Ad, y, we, We, Wo, Kall):
    """Ad[idx] = φ''s coefficients b'_k = √(k+1) b_{k+1}/√q from φ's (B) on the rows of
    :func:`stein_rows`, by integrating φ' on the group's rule elsewhere."""
    ok = stein_rows(q[idx], e[idx], ed[idx])
    good = idx[ok]
    k = np.arange(1, Kall + 2)
    Bg = B[good]
    # a parity of φ's coefficients from k = 2 on that is all at rounding level
    # (≤ 1e-15 of the row's largest: an exact parity, e.g. softplus = u/2 + even,
    # sigmoid = ½ + odd) is zero: φ''s 1/√q would lift that noise into lanes of
    # its own (SeriesCoeffs.lanes) and double the kernel's work
    scale = 1e-15 * np.abs(Bg).max(axis=1)
    for par in (2, 3):
        noise = np.abs(Bg[:, par::2]).max(axis=1) <= scale
        Bg[np.ix_(noise, np.arange(par, Kall + 2, 2))] = 0.0
    Ad[good] = Bg[:, 1:] * np.sqrt(k)[None, :] / np.sqrt(q[good])[:, None]
    bad = idx[~ok]
    for s in range(0, bad.size, _ROWS):      # tiny q (or φ' ≡ 0): integrate φ' itself
        rows = bad[s:s + _ROWS]
        u = np.sqrt(q[rows])[:, None] * y[None, :]
        spare = np.empty(q.size)
        _folded(phi2(u)[1], phi2(-u)[1], We, Wo, we, Ad, spare, rows, Kall + 1)


#: Chebyshev–Lobatto points (2n + 1) in log q at which a group's coefficients are
#: computed for interpolation (the check interpolant uses every other one): n = 12
#: reproduces b_k(q) of the built-in activations over an octave to ~2e-15 of √E[φ²]
#: (their rounding level), n = 4 only to ~1e-11
COEFF_INTERP_N = 12
#: fewest rows of a group for which its coefficients are interpolated
COEFF_INTERP_MIN = 8 * COEFF_INTERP_N
#: bytes of one block of rows of the coefficient interpolants (:func:`_interpolated`)
_INTERP_BLOCK_BYTES = 8 << 20
#: agreement of the two interpolants at which a row takes the finer one: relative to
#: √E[φ²] of the row for the coefficients, to E[φ²] for E[φ²] itself
COEFF_INTERP_TOL = 1e-14


def _interpolated(rule, store, q, idx, blocks):
    """Fill the rows ``idx`` (one group: one quadrature rule) by interpolation in log q
    where that is verified; return the rows left to compute directly.

    ``rule(qr)`` gives the values (coefficients and energies, one row per variance) at
    the 2n + 1 Chebyshev–Lobatto points of [log q_min, log q_max] (n =
    :data:`COEFF_INTERP_N`); they are smooth in log q (φ(√q y) on a fixed rule), so the
    barycentric interpolant through them is exact to rounding for most rows.  A row is
    stored (``store(rows, values)``) where the n- and 2n-point interpolants agree to
    :data:`COEFF_INTERP_TOL` in every column block ``(start, stop, energy, power)`` of
    ``blocks``, relative to the row's value in column ``energy`` to the given power; the
    others (and groups too small, or of one variance, or with q ≤ 0) are returned."""
    qi = q[idx]
    if idx.size < COEFF_INTERP_MIN or not np.all(np.isfinite(qi) & (qi > 0)):
        return idx
    t = np.log(qi)
    got = _interp_nodes(t, COEFF_INTERP_N, rule)
    if got is None:
        return idx
    nodes, V = got
    # a block of rows at a time: the two interpolants of all rows are (rows × columns)
    # arrays, and for long tables (2049 terms, 8192 rows: 270 MB each) faulting in
    # their fresh pages cost more than computing them
    step = max(16, _INTERP_BLOCK_BYTES // (8 * V.shape[1]))
    left = []
    for s in range(0, idx.size, step):
        rows = idx[s:s + step]
        fine = _cheb_interp(t[s:s + step], nodes, V)
        coarse = _cheb_interp(t[s:s + step], nodes[::2], V[::2])
        ok = np.ones(rows.size, dtype=bool)
        for start, stop, energy, power in blocks:
            diff = np.abs(fine[:, start:stop] - coarse[:, start:stop]).max(axis=1)
            ok &= diff <= COEFF_INTERP_TOL * np.abs(fine[:, energy]) ** power
        if ok.all():
            store(rows, fine)
        else:
            store(rows[ok], fine[ok])
        left.append(rows[~ok])
    return np.concatenate(left)


def diag(phi2, q, step=1.0):
    """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, q) on the coefficients' rule (h = min(0.2,
    0.15/√q) on [−L, L]): the exact diagonal of the series maps."""
    q = np.asarray(q, dtype=np.float64)
    flat = q.ravel()
    e = np.empty(flat.size)
    ed = np.empty(flat.size)
    groups = _octaves(flat)
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        x, w = _rule(_step(float(2.0 ** g), step), 0)
        for s in range(0, idx.size, _ROWS):
            rows = idx[s:s + _ROWS]
            f, d = phi2(np.sqrt(flat[rows])[:, None] * x[None, :])
            e[rows] = (f * f) @ w
            ed[rows] = (d * d) @ w
    return e.reshape(q.shape), ed.reshape(q.shape)


#: fewest rows for which :func:`diag_interpolated` interpolates (below: :func:`diag`)
DIAG_INTERP_MIN = 256
#: Chebyshev points in log q of the check interpolant (the final one has twice as many)
DIAG_INTERP_N = 32
#: agreement of the two interpolants (relative) at which the finer is used for a row
DIAG_INTERP_TOL = 1e-14


def _cheb_lobatto(lo, hi, n):
    """The n + 1 Chebyshev–Lobatto points of [lo, hi], descending (hi … lo exactly)."""
    x = np.cos(np.arange(n + 1) * np.pi / n)
    nodes = 0.5 * (hi + lo) + 0.5 * (hi - lo) * x
    nodes[0], nodes[-1] = hi, lo
    return nodes


def _interp_nodes(t, n, values):
    """(nodes, V): the 2n + 1 Chebyshev–Lobatto points of [min t, max t] and
    ``values(exp(nodes))`` (nodes × columns); None when t has (nearly) no spread."""
    lo, hi = float(t.min()), float(t.max())
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        return None
    nodes = _cheb_lobatto(lo, hi, 2 * n)
    return nodes, values(np.exp(nodes))


def _two_interpolants(t, n, values):
    """(fine, coarse): at the points ``t``, the barycentric interpolants through the
    nodes of :func:`_interp_nodes` and through every other one of them; None when t has
    (nearly) no spread."""
    got = _interp_nodes(t, n, values)
    if got is None:
        return None
    nodes, V = got
    return _cheb_interp(t, nodes, V), _cheb_interp(t, nodes[::2], V[::2])


def _cheb_interp(t, nodes, vals):
    """The barycentric interpolant through Chebyshev–Lobatto ``nodes`` (descending,
    x_j = cos(jπ/n) mapped) of ``vals`` (nodes × m), at the points ``t``."""
    n = nodes.size - 1
    w = np.ones(n + 1)
    w[1::2] = -1.0
    w[0] *= 0.5
    w[-1] *= 0.5
    d = t[:, None] - nodes[None, :]
    exact = d == 0.0
    d[exact] = 1.0
    c = w[None, :] / d
    out = (c @ vals) / c.sum(axis=1)[:, None]
    hit = exact.any(axis=1)
    if hit.any():
        out[hit] = vals[np.argmax(exact[hit], axis=1)]
    return out


def diag_interpolated(phi2, q, step=1.0, tol_d=None):
    """:func:`diag` for many rows at the cost of a few: E[φ(√q g)²] and E[φ'(√q g)²] are
    smooth in log q, so they are computed at the 2n + 1 Chebyshev–Lobatto points of
    [log q_min, log q_max] (n = :data:`DIAG_INTERP_N`) and interpolated (barycentric).
    A row takes the 2n-point interpolant where the n-point one agrees with it to
    :data:`DIAG_INTERP_TOL` relative (the finer one's error is then far smaller),
    else :func:`diag` itself; so do rows with q ≤ 0 or not finite, and all rows when
    there are fewer than :data:`DIAG_INTERP_MIN`.  ``tol_d``: the agreement asked of
    E[φ'²] instead (a φ' known only to ~1e-13, e.g. by finite differences, has that
    noise in its rule's values)."""
    q = np.asarray(q, dtype=np.float64)
    flat = q.ravel()
    good = np.isfinite(flat) & (flat > 0)
    if np.count_nonzero(good) < DIAG_INTERP_MIN:
        return diag(phi2, q, step)
    both = _two_interpolants(np.log(flat[good]), DIAG_INTERP_N,
                             lambda qn: np.stack(diag(phi2, qn, step), axis=1))
    if both is None:                                # (nearly) one variance: no spread
        return diag(phi2, q, step)
    fine, coarse = both
    tol = np.array([DIAG_INTERP_TOL, DIAG_INTERP_TOL if tol_d is None else tol_d])
    close = np.all(np.abs(fine - coarse) <= tol * np.abs(fine), axis=1)
    e = np.empty(flat.size)
    ed = np.empty(flat.size)
    idx = np.nonzero(good)[0]
    e[idx], ed[idx] = fine[:, 0], fine[:, 1]
    direct = np.concatenate([np.nonzero(~good)[0], idx[~close]])
    if direct.size:
        e[direct], ed[direct] = diag(phi2, flat[direct], step)
    return e.reshape(q.shape), ed.reshape(q.shape)


def decay_check(phi2, q=1.0, step=1.0):
    """max over φ and φ' of the relative tail √(T_KCAP/e) at variance ``q``: ≳ KINK_TAIL
    means φ (or φ') has a kink or a jump and the series cannot certify most elements."""
    x, w, W = hermite_table(_step(q, step), KCAP)
    f, d = phi2(math.sqrt(q) * x)
    worst = 0.0
    for vals in (f, d):
        e = float(w @ (vals * vals))
        if e > 0:
            b = vals @ W
            worst = max(worst, math.sqrt(max(e - float(b @ b), 0.0) / e))
    return worst


if njit is not None:

    @njit(cache=True, inline="always")
    def _tail_ratio(b, e, slack, out, accumulate):
        """out[k] (or its max with) T_k/e, T_k = Σ_{j>k} b_j² + max(e − Σ b², 0) +
        slack·|e| (the rounding-level remainder clamped); 0 where e ≤ 0 (φ ≡ 0 on this
        row: nothing to sum)."""
        K1 = b.size
        if not e > 0.0:
            if not accumulate:
                out[:] = 0.0
            return
        total = 0.0
        for k in range(K1):
            total += b[k] * b[k]
        rest = max(e - total, 0.0) + slack * abs(e)
        inv = 1.0 / e
        tail = 0.0
        for k in range(K1 - 1, -1, -1):
            v = (tail + rest) * inv
            out[k] = max(out[k], v) if accumulate else v
            tail += b[k] * b[k]

    @njit(cache=True, nogil=True)
    def _k_rows(b, e, bd, ed, two, mpow, tol, flag, slack, kt):
        """kt[r, m] = least k with mpow[m, k] · R[r, k] ≤ tol (else ``flag``), R the
        larger tail ratio of the row's two maps (:func:`_tail_ratio`), mpow[m, k] =
        edge_m^{k+1}; nondecreasing in m, so one forward scan per row.  Serial, without
        the GIL: the engine builds the tables of its layers on threads of its own (a
        parallel kernel here would nest)."""
        n, K1 = b.shape
        R = np.empty(K1)
        for r in range(n):
            _tail_ratio(b[r], e[r], slack, R, False)
            if two:
                _tail_ratio(bd[r], ed[r], slack, R, True)
            k = 0
            for m in range(mpow.shape[0]):
                while k < K1 and mpow[m, k] * R[k] > tol:
                    k += 1
                kt[r, m] = k if k < K1 else flag

    @njit(cache=True, inline="always")
    def pair(P, c0x, r, Q, c0z, c, K, rho, pe, pd, nl, j2):
        """(E, Ė) = Σ_{k≤K} (at least) of the packed rows P[r], Q[c]
        (:meth:`SeriesCoeffs.packed`): b_0 b'_0 plus Horner chains in ρ² per lane."""
        r2 = rho * rho
        l0 = 0.0
        l1 = 0.0
        l2 = 0.0
        l3 = 0.0
        for j in range(K // 2, -1, -1):
            l0 = l0 * r2 + P[r, j, 0] * Q[c, j, 0]
            l1 = l1 * r2 + P[r, j, 1] * Q[c, j, 1]
            if nl == 4 and j <= j2:
                l2 = l2 * r2 + P[r, j, 2] * Q[c, j, 2]
                l3 = l3 * r2 + P[r, j, 3] * Q[c, j, 3]
        return combine(c0x[r, 0] * c0z[c, 0], c0x[r, 1] * c0z[c, 1], l0, l1, l2, l3,
                       rho, r2, pe, pd)

    @njit(cache=True, inline="always")
    def combine(e00, d00, l0, l1, l2, l3, rho, r2, pe, pd):
        """E = b_0 b_0 + (ρ or ρ²)·lane 0 + (ρ² or ρ)·lane 2 (odd lanes start at k = 1,
        even ones at k = 2); Ė likewise from lanes 1, 3."""
        if pe == 1:
            E = e00 + rho * l0 + r2 * l2
        else:
            E = e00 + r2 * l0 + rho * l2
        if pd == 1:
            Ed = d00 + rho * l1 + r2 * l3
        else:
            Ed = d00 + r2 * l1 + rho * l3
        return E, Ed

    @njit(cache=True, inline="always")
    def rho_bin(rho, nbins):
        m = abs(rho)
        b = int(m * nbins)
        return b if b < nbins else nbins - 1

    @njit(cache=True, parallel=True)
    def _eval(sigma, qx, qz, ix, iz, P, c0x, kt, Q, c0z, ktz, pe, pd, nl, j2, ex, edx,
              outE, outEd, flag):
        n = sigma.size
        nb = kt.shape[1]
        kcap = 2 * P.shape[1] - 2
        for i in prange(n):
            r = ix[i]
            c = iz[i]
            qq = qx[i] * qz[i]
            rho = 0.0
            if qq > 0.0:
                rho = sigma[i] / math.sqrt(qq)
                rho = min(max(rho, -1.0), 1.0)
            # an input with itself (θ = 0 up to rounding, qx = qz): the diagonal, to first
            # order in Σ: E = e(qx) − (qx − Σ) e'(qx) (dE/dΣ = Ė), Ė = e'(qx); the
            # neglected terms are ≲ 1e-12 of the scale (and zero when Σ = qx = qz)
            if qq > 0.0 and qx[i] - sigma[i] <= 1e-12 * qx[i] and \
                    abs(qx[i] - qz[i]) <= 1e-12 * qx[i]:
                outE[i] = ex[r] - (qx[i] - sigma[i]) * edx[r]
                outEd[i] = edx[r]
                continue
            bi = rho_bin(rho, nb)
            K = max(kt[r, bi], ktz[c, bi])
            if K > kcap:
                flag[i] = True
                outE[i] = 0.0
                outEd[i] = 0.0
                continue
            outE[i], outEd[i] = pair(P, c0x, r, Q, c0z, c, K, rho, pe, pd, nl, j2)


def evaluate(phi2, sigma, qx, qz, fallback, step=1.0, kcap=KFAST):
    """(E, Ė) broadcast over ``sigma``, ``qx``, ``qz`` by the series with at most ``kcap``
    terms, the elements these cannot certify by KCAP terms, and those still uncertified
    by ``fallback(sigma, qx, qz) -> (E, Ė)`` (1-D arrays).  Elements with Σ = qx = qz up
    to 1e-12 relative (θ ≈ 0, e.g. an input paired with itself) take the diagonal
    E[φ²], E[φ'²] (corrected to first order in Σ).  ``step``: see :func:`_step`."""
    sigma = np.asarray(sigma, dtype=np.float64)
    qx = np.asarray(qx, dtype=np.float64)
    qz = np.asarray(qz, dtype=np.float64)
    shape = np.broadcast_shapes(sigma.shape, qx.shape, qz.shape)
    Cx = coefficients(phi2, qx.ravel(), kcap, step)
    same = qz is qx or (qz.size == qx.size and np.array_equal(qz.ravel(), qx.ravel()))
    Cz = Cx if same else coefficients(phi2, qz.ravel(), kcap, step)
    J = n_pairs(kcap)
    pe, pd, nl, j2 = lane_plan(Cx, Cz)
    P, c0x = Cx.packed(J, pe, pd)
    Q, c0z = (P, c0x) if Cz is Cx else Cz.packed(J, pe, pd)
    ix = np.broadcast_to(np.arange(qx.size).reshape(qx.shape), shape).ravel()
    iz = np.broadcast_to(np.arange(qz.size).reshape(qz.shape), shape).ravel()
    s = np.ascontiguousarray(np.broadcast_to(sigma, shape)).ravel()
    qxb = np.ascontiguousarray(np.broadcast_to(qx, shape)).ravel()
    qzb = np.ascontiguousarray(np.broadcast_to(qz, shape)).ravel()
    e = np.empty(s.size)
    ed = np.empty(s.size)
    flag = np.zeros(s.size, dtype=np.bool_)
    _eval(s, qxb, qzb, np.ascontiguousarray(ix), np.ascontiguousarray(iz), P, c0x, Cx.kt,
          Q, c0z, Cz.kt, pe, pd, nl, j2, Cx.e, Cx.ed, e, ed, flag)
    if flag.any():
        if kcap < KCAP:
            e[flag], ed[flag] = evaluate(phi2, s[flag], qxb[flag], qzb[flag], fallback,
                                         step, KCAP)
        else:
            e[flag], ed[flag] = fallback(s[flag], qxb[flag], qzb[flag])
    return e.reshape(shape), ed.reshape(shape)


def calibrate_step(phi2, q=1.0, tol=1e-13, smallest=1.0 / 16):
    """The step scale (1, ½, ¼, …) at which the coefficients at variance ``q`` agree
    with those at half the step to ``tol`` of their largest (None: not even at
    ``smallest``): φ analytic only in a narrow strip (e.g. tanh(3u)) needs a finer rule."""
    step = 1.0
    x, _, W = hermite_table(_step(q, step), KCAP)
    b = phi2(math.sqrt(q) * x)[0] @ W
    while step >= smallest:
        x2, _, W2 = hermite_table(_step(q, step / 2), KCAP)
        b2 = phi2(math.sqrt(q) * x2)[0] @ W2
        if np.max(np.abs(b - b2)) <= tol * max(np.max(np.abs(b2)), 1e-300):
            return step
        step, b = step / 2, b2
    return None


def quadrature_fallback(phi2, sigma, qx, qz, degree=None, rule="trapezoid"):
    """2-D tensor quadrature (:func:`ntkfast.quadrature.gauss_kernel`) with the step
    refined for large variances: degree n·max(1, √max(qx, qz)/1.2) for the default n,
    so that h √q stays ≲ 0.25 (tanh at q = 4: ~1e-14 instead of 3e-9)."""
    from . import quadrature
    base = int(degree or quadrature.DEFAULT_DEGREE)
    qm = np.maximum(qx, qz)
    factor = np.maximum(1.0, np.sqrt(qm) / 1.2)
    deg = np.minimum(np.ceil(base * factor), 8 * base).astype(np.int64) | 1
    e = np.empty(sigma.size)
    ed = np.empty(sigma.size)
    for n in np.unique(deg):
        sel = deg == n
        e[sel], ed[sel] = quadrature.gauss_kernel(phi2, sigma[sel], qx[sel], qz[sel],
                                                  degree=int(n), rule=rule)
    return e, ed
