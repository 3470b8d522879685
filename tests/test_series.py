"""The Hermite-series kernel maps (ntkfast.series) against independent references:
a 40-digit mpmath evaluation, the Erf closed form (a Custom erf through the series), the
2-D quadrature, and the engines against each other."""

import math
import warnings

import numpy as np
import pytest

from conftest import assert_numba_matches_reference
import ntkfast as nk
from ntkfast import series
from ntkfast.activations import Custom, Sigmoid, SiLU, Softplus, Tanh

mpmath = pytest.importorskip("mpmath")
pytest.importorskip("numba")


# -- 40-digit reference ----------------------------------------------------------------
def _mp_phi(name):
    mp = mpmath.mp
    if name == "tanh":
        return mp.tanh, lambda u: 1 / mp.cosh(u) ** 2, mp.pi / 2
    if name == "sigmoid":
        s = lambda u: 1 / (1 + mp.exp(-u))  # noqa: E731
        return s, lambda u: s(u) * (1 - s(u)), mp.pi
    if name == "softplus":
        s = lambda u: 1 / (1 + mp.exp(-u))  # noqa: E731
        return lambda u: mp.log1p(mp.exp(u)), s, mp.pi
    if name == "silu":
        s = lambda u: 1 / (1 + mp.exp(-u))  # noqa: E731
        return lambda u: u * s(u), lambda u: s(u) + u * s(u) * (1 - s(u)), mp.pi
    raise KeyError(name)


def mp_kernel(name, qx, qz, rho):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) at 40 digits: the tensor trapezoidal rule in the
    Cholesky variables u = √qx x, v = √qz (ρ x + √(1−ρ²) y), with the step for φ
    analytic in |Im u| < τ chosen for a discretisation error below 1e-20
    (2πτ/(h √q) ≥ 46) and [−11.5, 11.5] (Gaussian mass beyond < 1e-29)."""
    mp = mpmath.mp
    with mpmath.workdps(40):
        f, df, tau = _mp_phi(name)
        qx, qz, rho = mp.mpf(qx), mp.mpf(qz), mp.mpf(rho)
        h = 2 * mp.pi * tau / (46 * mp.sqrt(max(qx, qz, mp.mpf(1) / 4)))
        n = int(mp.mpf("11.5") / h) + 1
        xs = [k * h for k in range(-n, n + 1)]
        ws = [mp.exp(-x * x / 2) for x in xs]
        W = mp.fsum(ws)
        s = mp.sqrt(max(1 - rho * rho, 0))
        sx, sz = mp.sqrt(qx), mp.sqrt(qz)
        e = ed = mp.mpf(0)
        for x, wx in zip(xs, ws):
            args = [sz * (rho * x + s * y) for y in xs]
            ie = mp.fsum(wy * f(a) for wy, a in zip(ws, args))
            ied = mp.fsum(wy * df(a) for wy, a in zip(ws, args))
            e += wx * f(sx * x) * ie
            ed += wx * df(sx * x) * ied
        return float(e / W ** 2), float(ed / W ** 2)


def mp_diag(name, q):
    mp = mpmath.mp
    with mpmath.workdps(40):
        f, df, _ = _mp_phi(name)
        g = lambda t, fn: fn(mp.sqrt(q) * t) ** 2 * mp.exp(-t * t / 2)  # noqa: E731
        c = 1 / mp.sqrt(2 * mp.pi)
        return (float(c * mp.quad(lambda t: g(t, f), [-mp.inf, 0, mp.inf])),
                float(c * mp.quad(lambda t: g(t, df), [-mp.inf, 0, mp.inf])))


ACTS = {"tanh": Tanh(), "sigmoid": Sigmoid(), "softplus": Softplus(), "silu": SiLU()}

# (qx, qz, ρ): generic, near-parallel, exactly (anti)parallel, tiny and unequal q;
# the (4, 4, 0.95) tanh case is past what KCAP terms certify (the quadrature fallback)
CASES = [(1.0, 2.0, 0.5), (0.3, 3.0, 1 - 1e-9), (2.0, 0.5, -1.0), (1e-6, 1.0, 0.7),
         (4.0, 4.0, 0.95)]
FAST = [("tanh", c) for c in CASES] + [("sigmoid", CASES[1]), ("softplus", CASES[2])]
SLOW = [(n, c) for n in ("sigmoid", "softplus", "silu") for c in CASES
        if (n, c) not in FAST]


def _check_mp(name, case):
    qx, qz, rho = case
    act = ACTS[name]
    s = rho * math.sqrt(qx * qz)
    e, ed = act.kernel_rule(np.array([s]), np.array([qx]), np.array([qz]))
    re_, red = mp_kernel(name, qx, qz, rho)
    ex, edx = mp_diag(name, qx)
    ez, edz = mp_diag(name, qz)
    # relative to the Cauchy–Schwarz scale √(E[φ(u)²] E[φ(v)²]) (and for φ')
    assert abs(e[0] - re_) <= 1e-10 * math.sqrt(ex * ez), (name, case, e[0], re_)
    assert abs(ed[0] - red) <= 1e-10 * math.sqrt(edx * edz), (name, case, ed[0], red)
    # the series path agrees with the 2-D quadrature path too
    qe, qed = act.quadrature_rule(np.array([s]), np.array([qx]), np.array([qz]))
    assert abs(qe[0] - re_) <= 1e-8 * math.sqrt(ex * ez)


@pytest.mark.parametrize("name,case", FAST, ids=str)
def test_series_matches_mpmath(name, case):
    _check_mp(name, case)


@pytest.mark.slow
@pytest.mark.parametrize("name,case", SLOW, ids=str)
def test_series_matches_mpmath_all(name, case):
    _check_mp(name, case)


@pytest.mark.parametrize("name", ["tanh", "silu"])
def test_diag_matches_mpmath(name):
    q = np.array([1e-9, 0.1, 1.0, 5.0, 40.0])
    e, ed = ACTS[name].diag_rule(q)
    for i, qi in enumerate(q):
        re_, red = mp_diag(name, qi)
        assert abs(e[i] - re_) <= 1e-12 * re_ and abs(ed[i] - red) <= 1e-12 * red


# -- a Custom erf through the series against the Erf closed form ----------------------
def _erf(u):
    return math.erf(u)


def _derf(u):
    return 2.0 / math.sqrt(math.pi) * math.exp(-u * u)


def test_custom_erf_series_equals_closed_form():
    """Any (qx, qz, ρ) from 1e-8 to 30 incl. ρ = ±1: the series (or its fallback) ≤ 1e-12
    of the Cauchy–Schwarz scale (Erf: the exact asin formula)."""
    act = Custom(_erf, _derf, name="erf-series-test")
    assert act.uses_series
    ref = nk.Erf()
    qs = np.array([1e-8, 1e-3, 0.3, 1.0, 3.0, 30.0])
    rhos = np.array([-1.0, -0.999999, -0.7, 0.0, 0.3, 0.9, 1 - 1e-8, 1.0])
    qx, qz, rho = np.meshgrid(qs, qs, rhos, indexing="ij")
    s = rho * np.sqrt(qx * qz)
    e, ed = act.kernel_rule(s, qx, qz)
    er, edr = ref.kernel_rule(s, qx, qz)
    dx, ddx = ref.diag_rule(qx)
    dz, ddz = ref.diag_rule(qz)
    assert np.all(np.abs(e - er) <= 1e-12 * np.sqrt(dx * dz))
    assert np.all(np.abs(ed - edr) <= 1e-11 * np.sqrt(ddx * ddz))
    # the diagonal too
    de, dde = act.diag_rule(qs)
    rde, rdde = ref.diag_rule(qs)
    np.testing.assert_allclose(de, rde, rtol=1e-13)
    np.testing.assert_allclose(dde, rdde, rtol=1e-13)


def test_truncation_bound_holds_per_element():
    """The stated bound: |series − exact| ≤ TOL √(e e') wherever the table certifies."""
    rng = np.random.default_rng(3)
    act = Custom(_erf, _derf, name="erf-bound-test")
    qx = np.exp(rng.uniform(-5, 1.5, 400))
    qz = np.exp(rng.uniform(-5, 1.5, 400))
    rho = rng.uniform(-1, 1, 400)
    s = rho * np.sqrt(qx * qz)
    calls = []

    def fallback(*a):
        calls.append(a[0].size)
        return act._fallback(*a)

    e, ed = series.evaluate(act.phi2, s, qx, qz, fallback)
    er, edr = nk.Erf().kernel_rule(s, qx, qz)
    dx = nk.Erf().diag_rule(qx)[0]
    dz = nk.Erf().diag_rule(qz)[0]
    assert np.all(np.abs(e - er) <= 10 * series.TOL * np.sqrt(dx * dz))


def test_coefficients_parseval_and_parity():
    """Σ b_k² → E[φ²] (Parseval) and tanh's even coefficients vanish exactly."""
    q = np.array([0.01, 0.5, 1.0])
    C = series.coefficients(Tanh().phi2, q)
    assert np.all(C.A[:, 0::2] == 0)
    np.testing.assert_allclose((C.A ** 2).sum(axis=1), C.e, rtol=1e-12)
    assert series.lane_plan(C)[:3] == (1, 0, 2)
    # softplus = u/2 + even: E's odd lane is the single term b_1 (j2 = 0)
    pe, pd, nl, j2 = series.lane_plan(series.coefficients(Softplus().phi2, q))
    assert (pe, pd, nl, j2) == (0, 1, 4, 0)


@pytest.mark.parametrize("act", [Tanh(), Softplus(), SiLU(), Sigmoid()], ids=repr)
def test_chain_is_one_series_for_both_maps(act):
    """SeriesCoeffs.chain: E = b_0 b_0 + f(ρ) and Ė = f'(ρ)/√(qx qz) with f(ρ) = Σ a_k a_k
    ρ^k equal the two maps' own series (series.evaluate), also on rows of tiny q where
    φ' is integrated (not Stein's), and chain_plan puts the longer parity first."""
    rng = np.random.default_rng(5)
    q = np.concatenate([np.exp(rng.uniform(-3, 1.5, 30)), [1e-9, 3e-7]])
    C = act.series_coefficients(q, series.KCAP)
    if isinstance(act, Softplus):                  # φ(0) ≠ 0: tiny q integrates φ'
        assert not series.stein_rows(q, C.e, C.ed).all()
    F = C.chain(q)
    x, z = np.meshgrid(np.arange(q.size), np.arange(q.size), indexing="ij")
    x, z = x.ravel(), z.ravel()
    rho = rng.uniform(-0.8, 0.8, x.size)
    k = np.arange(1, F.shape[1] + 1)
    terms = F[x] * F[z]
    f = (terms * rho[:, None] ** k).sum(axis=1)
    df = (terms * k * rho[:, None] ** (k - 1)).sum(axis=1)
    E = C.A[x, 0] * C.A[z, 0] + f
    Ed = df / np.sqrt(q[x] * q[z])
    e, ed = series.evaluate(act.phi2, rho * np.sqrt(q[x] * q[z]), q[x], q[z],
                            act._fallback)
    np.testing.assert_allclose(E, e, rtol=0, atol=1e-13 * np.sqrt(C.e[x] * C.e[z]).max())
    assert np.all(np.abs(Ed - ed) <= 1e-12 * np.sqrt(C.ed[x] * C.ed[z]))
    pm, two, j2 = series.chain_plan(F)
    expect = {"Tanh()": (1, 0, -1), "Sigmoid()": (1, 0, -1), "Softplus()": (0, 1, 0),
              "SiLU()": (0, 1, 0)}[repr(act)]
    assert (pm, two, j2) == expect


@pytest.mark.parametrize("act", [Tanh(), Softplus()])
def test_table_terms_is_the_length_coefficients_take(act):
    """series.table_terms (what the conv engine sizes its chunks by) = the K of the
    tables coefficients() builds, for variances over several octaves and a subset."""
    q = np.geomspace(0.02, 11.0, 40)
    for kcap in (128, 2048):
        K = series.table_terms(act.phi2, q, kcap)
        assert K == series.coefficients(act.phi2, q, kcap).K
        assert series.table_terms(act.phi2, q[:10], kcap) == \
            series.coefficients(act.phi2, q[:10], kcap).K <= K
    assert series.table_terms(Tanh().phi2, q, 2048) > 128   # the long tier's case


@pytest.mark.parametrize("act", [Tanh(), Softplus()])
@pytest.mark.parametrize("stein", [False, True])
def test_coefficients_on_threads_are_the_sequential_ones(act, stein):
    """coefficients(..., jobs=3) runs its groups of variances on threads: the same
    tables bit for bit (each group its own rule and rows), Stein's or not."""
    q = np.random.default_rng(3).permutation(np.geomspace(0.01, 20.0, 2500))
    extra = {"stein": (act.phi, act.diag_rule(q)[1])} if stein else {}
    one = series.coefficients(act.phi2, q, 128, **extra)
    three = series.coefficients(act.phi2, q, 128, jobs=3, **extra)
    for name in ("A", "Ad", "kt", "e", "ed"):
        assert np.array_equal(getattr(one, name), getattr(three, name)), name
    assert len(np.unique(np.ceil(np.log2(q)))) > 3     # several groups to share out


# -- kinked user φ ----------------------------------------------------------------------
def _kinked(u):
    return max(u, 0.0) + 0.1 * u


def _dkinked(u):
    return 1.1 if u >= 0 else 0.1


def test_kinked_custom_is_detected_and_warns():
    with pytest.warns(UserWarning, match="decay slowly.*quadrature"):
        act = Custom(_kinked, _dkinked, name="kinked")
    assert not act.uses_series and act.method == "quadrature"
    # it still computes the kernel (polar, kink-aware rule): vs LeakyReLU-like ABReLU
    ref = nk.ABReLU(0.1, 1.1)
    s, qx, qz = np.array([0.3, -0.2]), np.array([1.0, 0.5]), np.array([0.7, 2.0])
    e, ed = act.kernel_rule(s, qx, qz)
    er, edr = ref.kernel_rule(s, qx, qz)
    np.testing.assert_allclose(e, er, rtol=1e-10)
    np.testing.assert_allclose(ed, edr, rtol=1e-8)


def test_smooth_custom_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        act = Custom(_erf, _derf, name="erf-no-warn")
    assert act.uses_series and act.series_tail < series.KINK_TAIL


# -- engines --------------------------------------------------------------------------
def _unequal(rng, n, d=8):
    return rng.standard_normal((n, d)) * rng.uniform(0.2, 1.8, (n, 1))


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("act", [Tanh(), Softplus(), SiLU(), Sigmoid()], ids=repr)
def test_numba_series_engine_matches_reference(act, param, rng):
    """The engine's chunked two-pass kernel against the reference backend (the
    activation's kernel_rule per element), float64 and float32, NNGP and NTK."""
    X, Z = _unequal(rng, 40), _unequal(rng, 25)
    kw = dict(depth=3, w_std=1.3, b_std=0.2, parameterization=param,
              width=None if param == "ntk" else 50)
    net = nk.MLP(activation=act, **kw)
    assert_numba_matches_reference(net, X, Z)


def _shifted_tanh(u):  # neither odd nor even: all four lanes, j2 > 0
    return math.tanh(u + 0.5)


def test_numba_series_engine_mixed_parity(rng):
    """A φ with long odd and even chains (the kernel's minor lane up to j2 > 0, cut
    there while the major one runs on): engine = reference, f64."""
    act = Custom(_shifted_tanh, name="shifted-tanh")
    X, Z = _unequal(rng, 150), _unequal(rng, 70)
    q = np.array([0.5, 2.0])
    assert series.lane_plan(series.coefficients(act.phi2, q))[3] > 0
    assert series.chain_plan(act.series_coefficients(q, series.KFAST).chain(q))[2] > 0
    net = nk.MLP(activation=act, depth=3, w_std=1.3, b_std=0.2)
    assert_numba_matches_reference(net, X, Z, float32=False)


def _network_vs_quadrature(act, param, rng):
    X, Z = _unequal(rng, 8), _unequal(rng, 5)
    kw = dict(depth=2, w_std=1.3, b_std=0.2, parameterization=param,
              width=None if param == "ntk" else 50)
    net = nk.MLP(activation=act, **kw)
    # the quadrature needs many points for rows with q ≈ 10 (161 points: 2e-9 off)
    quad = nk.MLP(activation=type(act)(method="quadrature", degree=301), **kw)
    for Zi in (None, Z):
        k = net.kernels(X, Zi, backend="numba")
        r = quad.kernels(X, Zi, backend="reference")
        for a, b in ((k.nngp, r.nngp), (k.ntk, r.ntk)):
            assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))


def test_series_network_matches_quadrature(rng):
    _network_vs_quadrature(Tanh(), "ntk", rng)


@pytest.mark.slow
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("act", [Softplus(), SiLU(), Sigmoid()], ids=repr)
def test_series_network_matches_quadrature_all(act, param, rng):
    _network_vs_quadrature(act, param, rng)


@pytest.mark.parametrize("param,b_std", [("ntk", None), ("standard", None),
                                         ("standard", 0.0)])
@pytest.mark.parametrize("act", [Tanh(), Softplus(), SiLU()], ids=repr)
def test_series_engine_zero_and_tiny_rows(act, param, b_std, rng):
    """Rows with q = 0 (a zero input, no bias: Ė's constant term b'_0 b'_0 is not in
    f'(ρ)/√(qx qz), so the engine flags them; it counts where Θ's previous layer is not
    0 there: the standard parameterization with b_std = 0 adds 1) and tiny q (φ'
    integrated, not from φ by Stein): the numba engine equals the reference per
    element, to 1e-12 of the pair's scale √(K(x, x) K(z, z))."""
    X = _unequal(rng, 30)
    X[3] = 0.0
    X[7] *= 1e-7
    X[9] *= 1e-12
    net = nk.MLP(depth=3, activation=act, b_std=b_std, parameterization=param,
                 width=None if param == "ntk" else 40)
    k = net.kernels(X, backend="numba")
    r = net.kernels(X, backend="reference")
    for a, b in ((k.nngp, r.nngp), (k.ntk, r.ntk)):
        d = np.abs(np.diag(b))
        scale = np.sqrt(np.outer(d, d))
        assert np.all(np.abs(a - b) <= 1e-12 * scale + 1e-300)


def test_series_engine_near_duplicates_and_diagonal(rng):
    """Near-parallel pairs (the second, KCAP pass and the fallback) and the exact
    diagonal: against the reference backend (the same rules per element)."""
    X = _unequal(rng, 24)
    X[1] = X[0] * (1 + 1e-9)
    X[2] = X[0] * 3.0                      # parallel, larger q (tanh at q ≈ 6)
    X[3] = -X[0]
    net = nk.MLP(depth=2, activation=Tanh(), w_std=1.5)
    k = net.kernels(X, backend="numba")
    r = net.kernels(X, backend="reference")
    np.testing.assert_allclose(k.ntk, r.ntk, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.nngp, r.nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.diag(k.ntk), net.ntk_diag(X))


def test_conv_network_with_series_activations(rng):
    X = rng.standard_normal((3, 4, 4, 2)) * rng.uniform(0.5, 1.5, (3, 1, 1, 1))

    def net(act):
        return nk.serial(nk.Conv((3, 3), w_std=1.2, b_std=0.1), act,
                         nk.Conv((3, 3), w_std=1.2), act, nk.Flatten(), nk.Dense())

    for cls in (Tanh,):
        k = net(cls()).kernels(X)
        r = net(cls(method="quadrature", degree=241)).kernels(X)
        for a, b in ((k.nngp, r.nngp), (k.ntk, r.ntk)):
            assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))


def test_input_with_itself_takes_the_diagonal():
    """Σ = qx = qz up to rounding (an input paired with itself in a conv layer's cross
    pass): the diagonal rule, no quadrature fallback, continuous with ρ slightly < 1."""
    act = Custom(_erf, _derf, name="erf-self-test")
    q = np.array([0.5, 3.0, 30.0])
    for rel in (0.0, 1e-15, 1e-13):
        s = q * (1 - rel)
        e, ed = series.evaluate(act.phi2, s, q, q, lambda *a: pytest.fail("fallback"))
        er, edr = nk.Erf().kernel_rule(s, q, q)
        np.testing.assert_allclose(e, er, rtol=1e-13)
        np.testing.assert_allclose(ed, edr, rtol=1e-10)


def _steep(u):
    return math.tanh(3.0 * u)


def test_custom_steep_phi_calibrates_the_step():
    """tanh(3u) is analytic only in |Im u| < π/6: the rule is refined at construction
    and the series matches Tanh's at 9× the variance (tanh(3u) at q = tanh(u) at 9q)."""
    act = Custom(_steep, name="steep")
    assert act.uses_series and act.series_step < 1
    q = np.array([0.05, 0.1, 0.3])
    s = np.array([0.02, -0.05, 0.1])
    e, ed = act.kernel_rule(s, q, q[::-1])
    er, edr = Tanh().kernel_rule(9 * s, 9 * q, 9 * q[::-1])
    np.testing.assert_allclose(e, er, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(ed, 9 * edr, rtol=1e-11, atol=1e-14)


def test_cli_progress_lines_for_logs():
    """stderr not a terminal: tqdm's refreshes become one line per interval, the first
    only after an interval, a last one at the end; other text passes through."""
    import io

    from ntkfast.apps.cli import _LineProgress
    out = io.StringIO()
    lp = _LineProgress(out, interval=0.0)
    lp.write("\r  0%| 0/10")
    lp.write("\r 50%| 5/10")
    lp.write("a warning\n")
    lp.write("\r100%| 10/10")
    lp.write("\n")
    lp.finish()
    assert out.getvalue().splitlines() == ["0%| 0/10", "50%| 5/10", "a warning",
                                           "100%| 10/10"]
    quiet = io.StringIO()
    lp = _LineProgress(quiet, interval=3600)
    lp.write("\r 50%| 5/10")
    lp.finish()
    assert quiet.getvalue() == ""          # a short run prints nothing


def test_cli_activation_with_parameters(tmp_path):
    from ntkfast import _defaults
    from ntkfast.apps.cli import _activation, main
    assert _activation("leaky_relu(0.1)") == nk.LeakyReLU(0.1)
    assert _activation("tanh") == Tanh()
    X = np.random.default_rng(0).standard_normal((30, 4))
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "K.npy"
    assert main(["gram", str(tmp_path / "X.npy"), "-o", str(out), "--activation",
                 "sin(1,2,0.5)", "-q"]) == 0
    np.testing.assert_allclose(np.load(out), nk.MLP(depth=_defaults.DEPTH, activation=nk.Sin(1, 2, 0.5), w_std=_defaults.W_STD,
                                      b_std=_defaults.B_STD).ntk(X),
                               rtol=1e-12)


# -- the diagonal rule interpolated in log q --------------------------------------------
@pytest.mark.parametrize("name", ["tanh", "softplus", "silu", "sigmoid"])
def test_diag_interpolated_matches_direct_rule_and_mpmath(name):
    """2000 rows, q from 1e-9 to 40 (and q = 0): the interpolant agrees with the direct
    1-D rule of every row to 1e-14 (the rule itself: ≤ 1e-12 from mpmath, tested above),
    and sampled rows between the nodes match 40-digit mpmath to 1e-12."""
    act = ACTS[name]
    rng = np.random.default_rng(11)
    q = np.exp(rng.uniform(math.log(1e-9), math.log(40.0), 2000))
    q[7] = 0.0
    e, ed = series.diag_interpolated(act.phi2, q)
    re_, red = series.diag(act.phi2, q)
    np.testing.assert_allclose(e, re_, rtol=1e-14, atol=0)
    np.testing.assert_allclose(ed, red, rtol=1e-14, atol=0)
    for i in (3, 500):
        me, med = mp_diag(name, q[i])
        assert abs(e[i] - me) <= 1e-12 * me and abs(ed[i] - med) <= 1e-12 * med


def test_diag_interpolated_falls_back_where_unverified(monkeypatch):
    """Too few Chebyshev points for the range (the two interpolants disagree): such rows
    take the direct rule, bit for bit (all but the few at or next to a node, where the
    interpolants agree), and every row stays within 1e-14."""
    monkeypatch.setattr(series, "DIAG_INTERP_N", 2)
    q = np.geomspace(1e-6, 50.0, 600)
    phi2 = Tanh().phi2
    e, ed = series.diag_interpolated(phi2, q)
    re_, red = series.diag(phi2, q)
    assert np.mean((e == re_) & (ed == red)) > 0.95
    np.testing.assert_allclose(e, re_, rtol=1e-14, atol=0)
    np.testing.assert_allclose(ed, red, rtol=1e-14, atol=0)
