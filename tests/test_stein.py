"""Stein's identity for a Custom φ without dfn: φ''s Hermite coefficients from φ's
(ntkfast.series.coefficients(stein=...)) against those of the exact φ' (given as dfn),
the amplification threshold, and the engine against the reference backend (whose
series integrates the derived φ')."""

import math

import numpy as np
import pytest

from conftest import assert_numba_matches_reference
import ntkfast as nk

pytest.importorskip("numba")
from ntkfast import series  # noqa: E402
from ntkfast.activations import Custom  # noqa: E402


def _sig(u):
    return 1.0 / (1.0 + math.exp(-u))


def _dsig(u):
    s = 1.0 / (1.0 + math.exp(-u))
    return s * (1.0 - s)


def _lecun(u):
    return 1.7159 * math.tanh(2.0 * u / 3.0)


def _dlecun(u):
    t = math.tanh(2.0 * u / 3.0)
    return 1.7159 * 2.0 / 3.0 * (1.0 - t * t)


def _softplus(u):
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


PAIRS = [(_sig, _dsig), (_lecun, _dlecun), (_softplus, _sig)]
Q = np.geomspace(1e-12, 30.0, 43)


@pytest.mark.parametrize("f,df", PAIRS, ids=lambda f: f.__name__)
def test_stein_coefficients_match_exact_derivative(f, df):
    """Without dfn the engine's tables take φ''s coefficients from φ's (rows of tiny q
    with E[φ] ≠ 0 integrate the derived φ'): ≤ 1e-13 √E[φ'²] from those of the exact
    φ', q from 1e-12 to 30; the Ė tables (terms per |ρ|) never certify with fewer
    terms than the exact φ''s need, up to 2 (E[φ'²] comes from the derived φ', ~1e-13
    off, which moves the tail at rounding level)."""
    a = Custom(f, name=f.__name__ + "-stein")
    b = Custom(f, df, name=f.__name__ + "-exact")
    assert a.derivative_method != "given"
    Ca = a.series_coefficients(Q, 48)
    Cb = b.series_coefficients(Q, 48)
    _, ed = b.diag_rule(Q)
    err = np.max(np.abs(Ca.Ad - Cb.Ad), axis=1)
    assert np.all(err <= 1e-13 * np.sqrt(ed)), err / np.sqrt(ed)
    np.testing.assert_array_equal(Ca.A, Cb.A)
    assert np.all(Cb.kt.astype(int) <= Ca.kt.astype(int) + 2)


@pytest.mark.parametrize("f,df", PAIRS, ids=lambda f: f.__name__)
def test_stein_amplification_bound(f, df):
    """The threshold's justification: with Stein forced on every row the error of b'_k
    is ≤ 10 ε·amp·√E[φ'²], amp = √(E[φ²]/(q E[φ'²])) (so STEIN_AMP = 30 keeps it
    ≤ 1e-13), and it does grow like amp: at amp ≥ 1e4 (sigmoid, softplus at q ≲ 1e-8)
    it exceeds 1e-13 — the rows the threshold sends to φ'."""
    a = Custom(f, name=f.__name__ + "-forced")
    b = Custom(f, df, name=f.__name__ + "-ref")
    e, ed = b.diag_rule(Q)
    # stein_rows decides with the given ed: pass every row through by a huge STEIN_AMP
    old = series.STEIN_AMP
    try:
        series.STEIN_AMP = math.inf
        forced = series.coefficients(a.phi2, Q, 48, a.series_step, stein=(a.phi, ed))
    finally:
        series.STEIN_AMP = old
    exact = series.coefficients(b.phi2, Q, 48, b.series_step)
    amp = np.sqrt(e / (Q * ed))
    err = np.max(np.abs(forced.Ad - exact.Ad), axis=1) / np.sqrt(ed)
    eps = np.finfo(float).eps
    assert np.all(err <= 10 * eps * np.maximum(amp, 1.0))
    if f is not _lecun:                     # E[tanh] = 0: amp ≈ 1 at every q
        assert np.any(err[amp >= 1e4] > 1e-13)
    used = series.stein_rows(Q, e, ed)
    assert np.all(used == (amp <= series.STEIN_AMP))


def _unequal(rng, n, d=8):
    return rng.standard_normal((n, d)) * rng.uniform(0.2, 1.8, (n, 1))


@pytest.mark.parametrize("given", [False, True], ids=["derived", "dfn"])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_engine_with_stein_matches_reference(param, given, rng):
    """The numba engine (Stein tables) against the reference backend (the series of
    φ' itself: derived, or dfn), a sigmoid-like φ with E[φ] ≠ 0 and tiny rows (the φ'
    fallback), float64 ≤ 1e-12 and float32 ≤ 1e-5, NNGP and NTK."""
    act = Custom(_sig, _dsig if given else None, name=f"sig-engine-stein-{given}")
    X, Z = _unequal(rng, 60), _unequal(rng, 30)
    X[3] *= 1e-5
    net = nk.MLP(activation=act, depth=3, w_std=1.3, b_std=0.0 if param == "ntk" else 0.1,
                 parameterization=param, width=None if param == "ntk" else 50)
    assert_numba_matches_reference(net, X, Z)


def test_diag_memo_returns_copies():
    """The memoised diagonal rule: the same numbers as series.diag, new arrays each call
    (a caller writing into them cannot change the next result), recomputed for other q."""
    act = Custom(_sig, name="sig-memo")
    q = np.array([0.3, 1.0, 2.5])
    e1, d1 = act.diag_rule(q)
    e1[:] = 0.0
    e2, d2 = act.diag_rule(q.copy())
    re_, rd = series.diag(act.phi2, q, step=act.series_step)
    np.testing.assert_array_equal(e2, re_)
    np.testing.assert_array_equal(d2, rd)
    e3, _ = act.diag_rule(q * 2)
    np.testing.assert_array_equal(e3, series.diag(act.phi2, q * 2, step=act.series_step)[0])
    import pickle
    assert "_diag_memo" not in act.__getstate__()
    assert pickle.loads(pickle.dumps(nk.activations.Tanh())) == nk.activations.Tanh()



@pytest.mark.parametrize("f,df", PAIRS, ids=lambda f: f.__name__)
def test_interpolated_diagonal_of_derived_derivative(f, df):
    """Without dfn (a central-difference φ', ~1e-13) the interpolated diagonal rule of
    600 rows, q from 1e-6 to 20, against the direct rule of the exact φ': E[φ²] ≤ 1e-14,
    E[φ'²] ≤ 3e-13."""
    a = Custom(f, name=f.__name__ + "-interp")
    b = Custom(f, df, name=f.__name__ + "-interp-exact")
    q = np.geomspace(1e-6, 20.0, 600)
    e, ed = a.diag_rule(q)
    re_, red = series.diag(b.phi2, q, step=b.series_step)
    np.testing.assert_allclose(e, re_, rtol=1e-14, atol=0)
    np.testing.assert_allclose(ed, red, rtol=3e-13, atol=0)


def test_stein_keeps_exact_parity_lanes():
    """Softplus = u/2 + even: φ''s odd chain beyond b'_0 … and even chain must stay as in
    the direct tables (rounding-level coefficients of φ lifted by 1/√q would open long
    lanes of their own and double the kernel's work), at small and large q."""
    from ntkfast.activations import Softplus, Tanh
    q = np.array([1e-4, 0.05, 1.0, 6.0])
    for act in (Softplus(), Tanh()):
        st = act.series_coefficients(q, 48)
        direct = series.coefficients(act.phi2, q, 48)
        assert series.lane_plan(st) == series.lane_plan(direct)
