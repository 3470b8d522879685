"""The per-row series tables of many rows: coefficients interpolated in log q (verified
per row) against the direct rule of every row, the compiled K-table scan against a
NumPy transcription of its definition, and the engine on enough rows to interpolate."""

import math

import numpy as np
import pytest

from conftest import assert_numba_matches_reference
import ntkfast as nk
from ntkfast import series
from ntkfast.activations import Custom, Sigmoid, SiLU, Softplus, Tanh

pytest.importorskip("numba")


def _lecun(u):
    return 1.7159 * math.tanh(2.0 * u / 3.0)


def _dlecun(u):
    t = math.tanh(2.0 * u / 3.0)
    return 1.7159 * 2.0 / 3.0 * (1.0 - t * t)


ACTS = {"tanh": Tanh(), "sigmoid": Sigmoid(), "softplus": Softplus(), "silu": SiLU(),
        "custom": Custom(_lecun, name="lecun"),
        "custom+dfn": Custom(_lecun, _dlecun, name="lecun_d")}


def _variances(n=3000, lo=1e-3, hi=30.0, seed=5):
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _direct(monkeypatch, fn):
    """fn() with interpolation switched off (every row by its own rule)."""
    with monkeypatch.context() as m:
        m.setattr(series, "COEFF_INTERP_MIN", 1 << 62)
        return fn()


def _assert_close(c, d, tol=1e-14):
    """c, d: SeriesCoeffs; coefficients to ``tol`` of √E[φ²] (√E[φ'²]) of the row."""
    for C, D, e in ((c.A, d.A, d.e), (c.Ad, d.Ad, d.ed)):
        assert C.shape == D.shape
        err = np.max(np.abs(C - D), axis=1) / np.sqrt(e)
        assert err.max() <= tol, err.max()
    np.testing.assert_allclose(c.e, d.e, rtol=tol, atol=0)
    np.testing.assert_allclose(c.ed, d.ed, rtol=tol, atol=0)


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("stein", [True, False])
def test_interpolated_coefficients_match_direct(name, stein, monkeypatch):
    """3000 rows over 15 octaves of q, φ' from φ (Stein, as the engine) or integrated
    (a φ' known only by finite differences, Custom without ``dfn``, is too noisy for
    that: skipped): the interpolated tables equal every row's own
    rule to 1e-14 (relative to the row's √E[φ²]); most rows were interpolated (not bit
    for bit the direct values); the truncation tables agree but for a few bins where
    the tail bound is at rounding level (measured: 3 of 768 000 for tanh)."""
    act = ACTS[name]
    if name == "custom" and not stein:
        pytest.skip("φ' by central differences: ~1e-11 noise in its coefficients")
    q = _variances()

    def run():
        if stein:
            return act.series_coefficients(q, series.KFAST)
        return series.coefficients(act.phi2, q, series.KFAST, act.series_step)

    c = run()
    d = _direct(monkeypatch, run)
    _assert_close(c, d)
    assert np.mean(np.all(c.A == d.A, axis=1)) < 0.5
    assert np.mean(np.abs(c.kt.astype(int) - d.kt.astype(int)) > 1) < 1e-4


def test_unverified_rows_take_the_direct_rule(monkeypatch):
    """Too few interpolation points for the range: the n- and 2n-point interpolants
    disagree and those rows are computed directly (bit for bit); every row stays within
    1e-14."""
    act = ACTS["tanh"]
    q = _variances(2000, 0.5, 1.0)            # one octave: one group, one interpolant
    d = _direct(monkeypatch, lambda: act.series_coefficients(q, series.KCAP))
    monkeypatch.setattr(series, "COEFF_INTERP_N", 2)
    c = act.series_coefficients(q, series.KCAP)
    assert np.mean(np.all(c.A == d.A, axis=1)) > 0.9
    _assert_close(c, d)


def test_interpolants_in_blocks_of_rows(monkeypatch):
    """_interpolated evaluates its interpolants a block of rows at a time (bounded
    temporaries for long tables): with blocks of 16 rows, and with nodes so few that a
    few rows fail the check (n = 8 here: 5 of 2000), every row equals its own rule to
    1e-14 and the same rows as with one block got it bit for bit."""
    act = ACTS["tanh"]
    q = _variances(2000, 0.5, 1.0)
    d = _direct(monkeypatch, lambda: act.series_coefficients(q, series.KCAP))
    monkeypatch.setattr(series, "COEFF_INTERP_N", 8)
    whole = act.series_coefficients(q, series.KCAP)
    monkeypatch.setattr(series, "_INTERP_BLOCK_BYTES", 1)
    blocked = act.series_coefficients(q, series.KCAP)
    _assert_close(blocked, d)
    direct = np.all(blocked.A == d.A, axis=1)
    assert 0 < np.mean(direct) < 1
    np.testing.assert_array_equal(direct, np.all(whole.A == d.A, axis=1))


def test_broken_interpolant_is_caught(monkeypatch):
    """A wrong value at an interpolation node (a bug in the node values) makes the two
    interpolants disagree: no row takes it."""
    act = ACTS["softplus"]
    q = _variances(1500, 0.3, 0.6)
    d = _direct(monkeypatch, lambda: act.series_coefficients(q, series.KFAST))
    real = series._interpolated

    def corrupt(rule, store, q_, idx, blocks):
        def bad_rule(qr):
            V = rule(qr)
            V[3, 2] *= 1 + 1e-6           # b_2 at an odd node (the fine interpolant)
            return V
        return real(bad_rule, store, q_, idx, blocks)

    monkeypatch.setattr(series, "_interpolated", corrupt)
    c = act.series_coefficients(q, series.KFAST)
    assert np.mean(np.all(c.A == d.A, axis=1)) > 0.9
    _assert_close(c, d)


def _k_table_numpy(b, e, bd, ed):
    """The K table by its definition: per row and bin m (upper edge (i+1)/NBINS), the
    least K with m^{(K+1)/2} √(T_K/e) ≤ √TOL for both maps, T_K the energy beyond K
    (plus the clamped remainder and 8ε e), else the flag 32767 (in logarithms: an
    independent transcription; a bin at a rounding tie may differ)."""
    eps8 = 8 * np.finfo(float).eps
    n, K1 = b.shape
    edges = (np.arange(series.NBINS) + 1.0) / series.NBINS
    out = np.empty((n, series.NBINS), dtype=np.int64)
    for r in range(n):
        worst = np.full(K1, -np.inf)
        for C, E in ((b[r], e[r]), (bd[r], ed[r])):
            if not E > 0:
                continue
            rest = max(E - float(np.sum(C * C)), 0.0) + eps8 * abs(E)
            for k in range(K1):
                T = float(np.sum(C[k + 1:] ** 2)) + rest
                worst[k] = max(worst[k], 0.5 * (math.log(T) - math.log(E)))
        for i, m in enumerate(edges):
            ok = [k for k in range(K1)
                  if 0.5 * (k + 1) * math.log(m) + worst[k] <= 0.5 * math.log(series.TOL)]
            out[r, i] = ok[0] if ok else 32767
    return out


def test_k_table_matches_its_definition():
    """Rows of decaying coefficients (geometric, at several rates), a row whose energy
    is all in b_0, a zero row (e = 0) and a slowly decaying one (flagged bins)."""
    rng = np.random.default_rng(2)
    K1 = 30
    rates = np.array([0.2, 0.5, 0.8, 0.95, 0.99, 0.6])
    b = rng.standard_normal((6, K1)) * rates[:, None] ** np.arange(K1)
    bd = rng.standard_normal((6, K1)) * (rates[:, None] * 0.9) ** np.arange(K1)
    b[4] = 0.0
    b[4, 0] = 2.0
    e = np.sum(b * b, axis=1) * (1 + 1e-6)
    ed = np.sum(bd * bd, axis=1) * (1 + 1e-3)
    b[5] = 0.0
    e[5] = 0.0
    got = series._k_table(b, e, bd, ed)
    ref = _k_table_numpy(b, e, bd, ed)
    assert np.mean(got != ref) <= 2 / got.size, np.argwhere(got != ref)
    assert np.all(np.abs(got - ref)[(got < 32767) & (ref < 32767)] <= 1)
    assert (got == 32767).any() and (got < 32767).any()


@pytest.mark.parametrize("name", ["softplus", "custom"])
def test_engine_on_many_rows_matches_reference(name):
    """600 rows over 4 octaves (the tables interpolated), near-parallel pairs in two
    panels (the KCAP pass and the per-element rule; the flag buffer reused across
    panels), X with itself and against other rows: the numba engine equals the
    reference backend (the activation's rule per element) to 1e-12, f64; float32 to
    1e-5."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((600, 12)) * np.exp(rng.uniform(-1.0, 1.0, (600, 1)))
    X[1] = X[0] * (1 + 1e-10)
    X[2] = X[0] * 2.5
    X[301] = X[300] * (1 + 1e-10)     # flagged pairs in a second panel of 256 rows too
    Z = X[::3] * 1.01
    net = nk.MLP(depth=3, activation=ACTS[name], w_std=1.4, b_std=0.3)
    assert_numba_matches_reference(net, X, Z)
    k = net.kernels(X, backend="numba")
    assert np.array_equal(k.ntk, k.ntk.T) and np.array_equal(k.nngp, k.nngp.T)


def test_interpolated_tables_match_mpmath():
    """The maps of 1500 pairs (variances over 10 octaves: interpolated tables) against
    the 40-digit reference at a generic, a near-parallel and a small-q pair, relative
    to the Cauchy–Schwarz scale: ≤ 1e-10 (as the per-element tests)."""
    test_series = pytest.importorskip("test_series")
    rng = np.random.default_rng(4)
    n = 1500
    qx = np.exp(rng.uniform(math.log(0.01), math.log(8.0), n))
    qz = np.exp(rng.uniform(math.log(0.01), math.log(8.0), n))
    rho = rng.uniform(-0.95, 0.95, n)
    rho[1] = 1 - 1e-7
    act = ACTS["tanh"]
    e, ed = act.kernel_rule(rho * np.sqrt(qx * qz), qx, qz)
    for i in (0, 1, int(np.argmin(qx))):
        re_, red = test_series.mp_kernel("tanh", qx[i], qz[i], rho[i])
        ex, edx = test_series.mp_diag("tanh", qx[i])
        ez, edz = test_series.mp_diag("tanh", qz[i])
        assert abs(e[i] - re_) <= 1e-10 * math.sqrt(ex * ez)
        assert abs(ed[i] - red) <= 1e-10 * math.sqrt(edx * edz)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "silu"])
def test_long_tables_agree_with_a_finer_rule(name):
    """Tables of up to 2048 terms (the conv engine's last tier): the step shrinks with
    the terms (series._step), so every coefficient agrees with a rule 2.5x finer to
    rounding (the base step alone is off by up to 1e-7 past k ~ 330 for tanh at q = 1,
    and the tail never converges), and the length is what the last |rho| bin needs."""
    act = ACTS[name]
    q = np.array([0.25, 1.0, 3.0, 8.0])
    C = series.coefficients(act.phi2, q, 2048, act.series_step)
    F = series.coefficients(act.phi2, q, 2048, act.series_step / 2.5)
    k = min(C.K, F.K) + 1
    for a, b, e in ((C.A, F.A, C.e), (C.Ad, F.Ad, C.ed)):
        err = np.abs(a[:, :k] - b[:, :k]).max(axis=1) / np.sqrt(e)
        assert err.max() <= 4e-15
    last = C.kt[:, -1].astype(int)
    assert np.all(last <= C.K)                    # rho = 1 certified at every q here
    assert C.K <= 1.3 * last.max() + 16           # and the tables not much longer
