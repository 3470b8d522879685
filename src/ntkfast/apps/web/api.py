"""The JSON API of ``ntkfast serve``: validate a request, compute the 1-D picture.

Pure functions, no web framework: :func:`handle` takes the raw request body (bytes, str
or an already-decoded object) and returns ``(http_status, json_dict)``; it never raises.

Request (every field optional; defaults in :data:`DEFAULTS`, ranges in :data:`LIMITS`)::

    {"points": [[x, y], ...],          # x in [-3, 3], |y| <= 100, at most 200 points
     "depth": 1, "activation": "relu", "w_std": 1.5, "b_std": 0.5,  # b_std null: no bias
     "ridge": 1e-3,                    # added to the diagonal of Θ(X, X)
     "t": "inf",                       # training time >= 0, or "inf" (kernel regression)
     "band": "auto",                   # "auto" | "posterior" | "ensemble"
     "finite": false, "width": 256, "n_nets": 3, "seed": 0,
     "n_grid": 200, "n_heatmap": 100}

What is computed (conventions of ``DESIGN.md`` §1: sum loss ½‖f − y‖², learning rate η,
df/dt = −ηΘ(f − y), f₀ = 0 on average):

- η = 0.5 / λ_max(Θ(X, X)) (:func:`ntkfast.experiments.default_lr`), so that time t is
  also the number of gradient-descent steps the finite networks take.
- mean: t = ∞ → :class:`~ntkfast.solve.KernelRegression` on Θ with ``ridge``
  (Θ(z, X)(Θ + rI)⁻¹y); finite t → :class:`~ntkfast.solve.GradientFlow` at time t.
- band (±1 std): "posterior" → the NTK-GP posterior (Θ as the GP prior covariance,
  noise variance ``ridge``: :meth:`KernelRegression.variance`, independent of t);
  "ensemble" → the std over random initialisations of infinitely wide networks trained
  to time t (:class:`~ntkfast.solve.InfiniteEnsemble`, Lee et al. 2019); "auto" →
  posterior for t = ∞ and ensemble for finite t.
- finite: ``n_nets`` :class:`~ntkfast.finite.FiniteMLP` networks of hidden ``width``
  (seeds seed+1 …) trained by full-batch gradient descent with the same η for t steps
  (at most :data:`MAX_STEPS`; t = ∞ → :data:`MAX_STEPS`).  One request trains for a work
  budget of about :data:`FINITE_BUDGET_S` seconds and answers with the networks as far as
  they got (``steps``), the steps they are headed for (``target_steps``) and the
  gradient-flow mean at the time actually reached, for comparison.  With a job store
  (:class:`FiniteJobs`, as ``ntkfast serve`` has) an unfinished training is kept under
  ``finite.job``, and each :func:`handle_continue` request (``POST /api/finite``
  ``{"job": id}``) trains it about :data:`FINITE_SLICE_S` seconds further and answers the
  same ``finite`` object, until ``done``: the page streams the networks to the end.
- heatmap: Θ(x, x') on ``n_heatmap`` points of [-3, 3], quantised to uint8 (base64), and
  (``heatmap.normalized``, same encoding) Θ(x, x')/√(Θ(x, x) Θ(x', x')), which shows the
  angular structure that Θ's growth with |x| hides.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
import warnings
from collections import OrderedDict

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = ["RequestError", "DEFAULTS", "LIMITS", "ACTIVATIONS", "config", "parse_request",
           "compute", "handle", "handle_continue", "finite_steps", "FiniteJobs", "MAX_POINTS",
           "MAX_WIDTH", "MAX_STEPS", "FINITE_BUDGET_S", "FINITE_DEADLINE_S", "FINITE_SLICE_S",
           "MAX_FINITE_PARAMS", "MAX_JOBS", "JOB_TTL_S"]

ACTIVATIONS = ("relu", "erf", "gelu", "leaky_relu", "abs", "identity")
BANDS = ("auto", "posterior", "ensemble")
X_RANGE = (-3.0, 3.0)
Y_MAX = 100.0
MAX_POINTS = 200
MAX_WIDTH = 4096
MAX_T = 1e9
#: most gradient-descent steps a finite network takes (t = ∞: this many)
MAX_STEPS = 20000
#: estimated seconds of finite-network training allowed per request (all nets together)
FINITE_BUDGET_S = 0.12
#: cost model of one GD step of FiniteMLP.train (fitted on this 2-core machine, on the safe
#: side): seconds = overhead per layer + per-element work + hidden-to-hidden GEMM flops / rate
_STEP_OVERHEAD_S = 60e-6
_STEP_OVERHEAD_PER_LAYER_S = 40e-6
_ELEM_S = (3e-8, 6e-8)      # per activation element; the second once N·width leaves cache
_FLOP_RATE = 4e9
#: training stops early (after a whole round of chunks) past this many seconds, so that a busy
#: machine cannot stretch a request: then the response says the time limit was hit
FINITE_DEADLINE_S = 0.16
_CHUNK = 25
#: seconds of training per continuation request (POST /api/finite)
FINITE_SLICE_S = 0.25
#: unfinished trainings kept per server (the newest), and how long an idle one is kept
MAX_JOBS = 2
JOB_TTL_S = 120.0
#: most parameters (all finite networks of one request together): bounds memory and work
MAX_FINITE_PARAMS = 1 << 23
_MAX_BODY = 1 << 20

DEFAULTS = dict(points=[], depth=1, activation="relu", w_std=1.5, b_std=0.5, ridge=1e-3,
                t="inf", band="auto", finite=False, width=256, n_nets=3, seed=0,
                n_grid=200, n_heatmap=100)

#: (kind, low, high) per numeric field; bounds inclusive
LIMITS = dict(depth=("int", 0, 8), w_std=("float", 1e-3, 10.0), b_std=("float", 0.0, 10.0),
              ridge=("float", 0.0, 1e4), t=("float", 0.0, MAX_T), width=("int", 1, MAX_WIDTH),
              n_nets=("int", 1, 8), seed=("int", 0, 2**31 - 1), n_grid=("int", 10, 400),
              n_heatmap=("int", 10, 200))


class RequestError(ValueError):
    """A bad request: ``field`` names the offending field (or "body")."""

    def __init__(self, field, message, status=400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def payload(self):
        return {"error": f"{self.field}: {self.message}", "field": self.field}


def config():
    """Defaults and limits, for the page (GET /api/config)."""
    limits = {k: {"type": kind, "min": lo, "max": hi} for k, (kind, lo, hi) in LIMITS.items()}
    return dict(defaults=DEFAULTS, limits=limits, activations=list(ACTIVATIONS),
                bands=list(BANDS), x_range=list(X_RANGE), y_max=Y_MAX,
                max_points=MAX_POINTS, max_steps=MAX_STEPS, finite_budget_s=FINITE_BUDGET_S,
                finite_slice_s=FINITE_SLICE_S)


# -- validation -------------------------------------------------------------------------
def _number(value, field):
    """A finite real number (bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"expected a number, got {_describe(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise RequestError(field, f"too large: {str(value)[:20]}…") from None
    if not math.isfinite(v):
        raise RequestError(field, f"must be finite, got {value!r}")
    return v


def _describe(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        s = value if len(value) <= 20 else value[:20] + "…"
        return f"the string {s!r}"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return repr(value)


def _ranged(value, field):
    kind, lo, hi = LIMITS[field]
    v = _number(value, field)
    if kind == "int":
        if v != int(v):
            raise RequestError(field, f"expected an integer, got {value!r}")
        v = int(v)
    if not lo <= v <= hi:
        raise RequestError(field, f"must lie in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _time(value):
    if isinstance(value, str):
        if value.strip().lower() in ("inf", "infinity", "+inf", "∞"):
            return math.inf
        raise RequestError("t", f"expected a number >= 0 or \"inf\", got {_describe(value)}")
    if isinstance(value, float) and value == math.inf:
        return math.inf
    return _ranged(value, "t")


def _points(value):
    if not isinstance(value, list):
        raise RequestError("points", f"expected an array of [x, y] pairs, got {_describe(value)}")
    if len(value) > MAX_POINTS:
        raise RequestError("points", f"at most {MAX_POINTS} points, got {len(value)}")
    xs, ys = [], []
    for i, p in enumerate(value):
        if isinstance(p, dict) and set(p) == {"x", "y"}:
            p = [p["x"], p["y"]]
        if not isinstance(p, list) or len(p) != 2:
            raise RequestError(f"points[{i}]", f"expected a pair [x, y], got {_describe(p)}")
        x = _number(p[0], f"points[{i}][0]")
        y = _number(p[1], f"points[{i}][1]")
        if not X_RANGE[0] <= x <= X_RANGE[1]:
            raise RequestError(f"points[{i}][0]", f"x must lie in [{X_RANGE[0]:g}, "
                               f"{X_RANGE[1]:g}], got {p[0]!r}")
        if abs(y) > Y_MAX:
            raise RequestError(f"points[{i}][1]", f"|y| must be <= {Y_MAX:g}, got {p[1]!r}")
        xs.append(x)
        ys.append(y)
    return np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)


def _decode(body):
    if isinstance(body, (bytes, bytearray)):
        if len(body) > _MAX_BODY:
            raise RequestError("body", f"larger than {_MAX_BODY} bytes", status=413)
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("body", "not UTF-8 text") from None
    if isinstance(body, str):
        if not body.strip():
            return {}
        try:
            # NaN / Infinity literals stay floats here and are refused per field below
            # (except t = Infinity, which means t = ∞).
            body = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RequestError("body", f"malformed JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RequestError("body", f"expected a JSON object, got {_describe(body)}")
    return body


def parse_request(body):
    """Validate a request (bytes, str or dict); return a dict of clean parameters
    (``x``, ``y`` arrays and every field of :data:`DEFAULTS` except ``points``).

    Raises :class:`RequestError` naming the first bad field."""
    raw = _decode(body)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field; expected some of {sorted(DEFAULTS)}")
    req = dict(DEFAULTS)
    req.update(raw)
    out = {}
    out["x"], out["y"] = _points(req["points"])
    for field in LIMITS:
        if field == "t":
            continue
        if field == "b_std" and req[field] is None:
            out[field] = None
            continue
        out[field] = _ranged(req[field], field)
    out["t"] = _time(req["t"])
    act = req["activation"]
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise RequestError("activation", f"must be one of {', '.join(ACTIVATIONS)}; got "
                           f"{_describe(act) if not isinstance(act, str) else repr(act)}")
    out["activation"] = act
    band = req["band"]
    if not isinstance(band, str) or band not in BANDS:
        raise RequestError("band", f"must be one of {', '.join(BANDS)}; got {band!r}")
    out["band"] = band
    if not isinstance(req["finite"], bool):
        raise RequestError("finite", f"expected true or false, got {_describe(req['finite'])}")
    out["finite"] = req["finite"]
    if out["finite"]:
        total = out["n_nets"] * _n_params(out["width"], out["depth"])
        if total > MAX_FINITE_PARAMS:
            raise RequestError("width", f"finite networks too large: n_nets × parameters = "
                               f"{total:,} > {MAX_FINITE_PARAMS:,}; lower width, depth or "
                               "n_nets")
    return out


# -- computation ------------------------------------------------------------------------
def _step_cost(n, width, depth):
    """Estimated seconds of one GD step (forward + backward) of FiniteMLP.train on n points."""
    n = max(n, 1)
    elem = n * width * max(depth, 1)
    c_elem = _ELEM_S[0] if n * width <= 131072 else _ELEM_S[1]
    flops = 6.0 * n * max(depth - 1, 0) * width * width
    return (_STEP_OVERHEAD_S + _STEP_OVERHEAD_PER_LAYER_S * depth + c_elem * elem
            + flops / _FLOP_RATE)


def _n_params(width, depth):
    return (2 * width + max(depth - 1, 0) * width * width) if depth else 1


def finite_steps(t, n, width, depth, n_nets, n_grid=200):
    """(steps, truncated): GD steps each finite network takes for training time t, from
    the cost model, after the fixed cost of drawing the networks and evaluating the grid."""
    want = MAX_STEPS if math.isinf(t) else int(round(t))
    fixed = n_nets * (_n_params(width, depth) * 2e-8 + _step_cost(n_grid, width, depth) / 3)
    afford = int(max(FINITE_BUDGET_S - fixed, 0.0) / (n_nets * _step_cost(n, width, depth)))
    steps = max(0, min(want, MAX_STEPS, afford))
    return steps, steps < want or math.isinf(t)


def _finite_list(a):
    a = np.asarray(a, dtype=np.float64)
    return [v if math.isfinite(v) else None for v in a.tolist()]


def _quantised(K):
    """K as uint8 bytes (base64) with its range: value = vmin + byte/255·(vmax − vmin)."""
    lo, hi = float(K.min()), float(K.max())
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.rint((K - lo) / span * 255.0), 0, 255).astype(np.uint8)
    return dict(vmin=lo, vmax=hi, data=base64.b64encode(q.tobytes()).decode("ascii"))


def _heatmap(net, n):
    """Θ(x, x') on n points of [-3, 3], and the normalized kernel
    Θ(x, x')/√(Θ(x, x) Θ(x', x')) (0 where a diagonal entry is 0), quantised."""
    g = np.linspace(X_RANGE[0], X_RANGE[1], n)
    theta = np.asarray(net.ntk(g[:, None], n_jobs=1), dtype=np.float64)
    d = np.sqrt(np.maximum(np.diag(theta), 0.0))
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    normalized = np.clip(theta * inv[:, None] * inv[None, :], -1.0, 1.0)
    return dict(n=n, x_min=X_RANGE[0], x_max=X_RANGE[1], **_quantised(theta),
                encoding="uint8-base64, row-major, row i = x_i (ascending), "
                         "value = vmin + byte/255*(vmax-vmin)",
                normalized=_quantised(normalized))


def compute(p, jobs=None):
    """The response for validated parameters ``p`` (from :func:`parse_request`);
    ``jobs``: a :class:`FiniteJobs` store that keeps an unfinished finite-network training
    for :func:`handle_continue` (None: the networks stop where this request's budget
    ends)."""
    import ntkfast as nk
    from ...experiments import default_lr
    from ...solve import GradientFlow, InfiniteEnsemble, KernelRegression
    from ...solve import NotPositiveDefiniteError

    t_start = time.perf_counter()
    timing = {}
    notes = []
    x, y, t = p["x"], p["y"], p["t"]
    n = x.size
    X = x[:, None]
    grid = np.linspace(X_RANGE[0], X_RANGE[1], p["n_grid"])
    G = grid[:, None]
    net = nk.MLP(depth=p["depth"], activation=p["activation"], w_std=p["w_std"],
                 b_std=p["b_std"])
    band = p["band"]
    if band == "auto":
        band = "posterior" if math.isinf(t) else "ensemble"
    finite_out = None
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        if n:
            ktr = net.kernels(X, n_jobs=1)
            kgx = net.kernels(G, X, n_jobs=1)
            lam = np.linalg.eigvalsh(ktr.ntk)
            if lam[-1] > 1e-300:
                lr = float(default_lr(np.asarray(ktr.ntk, dtype=np.float64)))
            else:  # e.g. every x = 0 with b_std = 0 or None: nothing can be learned
                lr = 1.0
                notes.append("Θ(X, X) = 0 on these points (x = 0 without bias?): the network "
                             "cannot fit them; η = 1 is used")
            if lam[0] + p["ridge"] <= 1e-10 * (lam[-1] + p["ridge"]):
                notes.append(f"Θ(X, X) + ridge·I is numerically singular (eigenvalues "
                             f"{lam[0] + p['ridge']:.2g} … {lam[-1] + p['ridge']:.3g}; e.g. "
                             "repeated x): the t = ∞ fit is ill-conditioned, increase ridge")
        else:
            lr = 1.0
        timing["kernels_ms"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        if n == 0:  # the prior: f₀ = 0 on average
            mean = np.zeros_like(grid)
            if band == "posterior":
                var = net.ntk_diag(G)
            else:
                var = net.nngp_diag(G)
        else:
            reg = None
            try:
                if math.isinf(t) or band == "posterior":
                    reg = KernelRegression(ktr.ntk, y, ridge=p["ridge"])
            except NotPositiveDefiniteError as exc:
                raise RequestError("ridge", f"Θ(X, X) + ridge·I is singular ({exc}); "
                                   "increase ridge", status=422) from None
            if math.isinf(t):
                mean = reg.predict(kgx.ntk)
            else:
                mean = GradientFlow(ktr.ntk, y, lr, p["ridge"]).predict(kgx.ntk, t).test
            if band == "posterior":
                var = reg.variance(kgx.ntk, net.ntk_diag(G))
            else:
                ens = InfiniteEnsemble(net, X, y, learning_rate=lr, ridge=p["ridge"], n_jobs=1)
                var = ens.predict(G, t, cov="diag").covariance
        std = np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 0.0))
        timing["solve_ms"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        heat = _heatmap(net, p["n_heatmap"])
        timing["heatmap_ms"] = (time.perf_counter() - t0) * 1e3

        if p["finite"]:
            t0 = time.perf_counter()
            steps, _ = finite_steps(t, n, p["width"], p["depth"], p["n_nets"], p["n_grid"])
            flow = GradientFlow(ktr.ntk, y, lr, p["ridge"]) if n else None
            job = _FiniteJob(net, p, X, y, lr, G, t, flow, kgx.ntk if n else None, mean)
            timed_out = job.train(steps, t0 + FINITE_DEADLINE_S)
            # with a job store the rest is streamed (the response says how far: steps,
            # target_steps, done); without one, say why the networks stopped short
            if jobs is None and timed_out:
                notes.append(f"finite networks stopped after {job.done} of {steps} planned GD "
                             f"steps: the {FINITE_DEADLINE_S:g} s time limit was hit (busy "
                             "machine?)")
            if jobs is None and n and job.done < job.target:
                notes.append(f"finite networks trained {job.done} of {job.target} GD steps: "
                             f"~{FINITE_BUDGET_S:g} s of work per request")
            if n and math.isinf(t):
                notes.append(f"t = ∞: finite networks train {MAX_STEPS} GD steps "
                             f"(t = {MAX_STEPS})")
            elif n and job.target < t:
                notes.append(f"finite networks train at most {MAX_STEPS} GD steps "
                             f"(t = {MAX_STEPS}), not t = {t:g}")
            if jobs is not None and not job.finished:
                job.id = jobs.add(job)
            finite_out = job.payload()
            notes.extend(job.notes())
            timing["finite_ms"] = (time.perf_counter() - t0) * 1e3
    for w in caught:
        notes.append(f"{w.category.__name__}: {w.message}")

    if band == "posterior":
        band_label = ("±1 std of the NTK-GP posterior (Θ as GP prior covariance, noise variance"
                      " = ridge; KernelRegression.variance; does not depend on t)")
    else:
        band_label = ("±1 std over random initialisations of infinitely wide networks trained "
                      f"to t = {'∞' if math.isinf(t) else format(t, 'g')} "
                      "(InfiniteEnsemble, Lee et al. 2019)")
    mean_label = ("kernel regression Θ(x, X)(Θ + ridge·I)⁻¹y (t = ∞)" if math.isinf(t) else
                  f"gradient flow on the NTK at t = {t:g} (GradientFlow, η = {lr:.3g})")
    timing["total_ms"] = (time.perf_counter() - t_start) * 1e3
    return dict(
        points=[[float(a), float(b)] for a, b in zip(x, y)], n_points=int(n),
        grid=grid.tolist(), mean=_finite_list(mean), std=_finite_list(std),
        band=band, band_label=band_label, mean_label=mean_label,
        t="inf" if math.isinf(t) else t, lr=lr, ridge=p["ridge"],
        net=dict(depth=p["depth"], activation=p["activation"], w_std=p["w_std"],
                 b_std=p["b_std"], parameterization="ntk"),
        finite=finite_out, heatmap=heat, warnings=notes,
        timing={k: round(v, 3) for k, v in timing.items()})


class _FiniteJob:
    """The finite networks of one request, trained in chunks of GD steps towards
    ``target`` = min(t, MAX_STEPS) steps (MAX_STEPS for t = ∞)."""

    def __init__(self, net, p, X, y, lr, G, t, flow, ntk_grid_train, mean):
        self.models = [net.finite(p["width"], seed=p["seed"] + 1 + i, d=1)
                       for i in range(p["n_nets"])]
        self.X, self.y, self.lr, self.G, self.t = X, y, lr, G, t
        self.flow, self.ntk_grid_train, self.mean = flow, ntk_grid_train, mean
        self.width, self.n_nets = p["width"], p["n_nets"]
        self.target = (MAX_STEPS if math.isinf(t) else min(int(round(t)), MAX_STEPS)) \
            if X.shape[0] else 0
        self.done = 0
        self.id = None
        self.lock = threading.Lock()
        self.used = time.monotonic()
        self._nets = None

    @property
    def finished(self):
        return self.done >= self.target

    def train(self, steps, deadline):
        """Train up to ``steps`` more GD steps (never past ``target``), in rounds of
        chunks every network finishes, stopping after a round once ``time.perf_counter()``
        passes ``deadline``.  Returns True if the deadline cut the steps short."""
        stop = min(self.target, self.done + max(int(steps), 0))
        timed_out = False
        with np.errstate(all="ignore"), threadpool_limits(limits=1):
            while self.done < stop:
                k = min(_CHUNK, stop - self.done)
                for f in self.models:
                    f.train(self.X, self.y, self.lr, k, record_steps=[])
                self.done += k
                if self.done < stop and time.perf_counter() > deadline:
                    timed_out = True
                    break
            self._nets = np.array([f(self.G)[:, 0] for f in self.models])
        self.used = time.monotonic()
        return timed_out

    def notes(self):
        nets = self._nets
        bad = int(np.sum(~np.isfinite(nets).all(axis=1) | (np.abs(nets) > 1e6).any(1)))
        if bad:
            return [f"{bad} of {len(nets)} finite networks diverged (learning rate too large "
                    "for this width); try a larger width"]
        return []

    def payload(self):
        """The ``finite`` object of a response: the networks on the grid now."""
        n = self.X.shape[0]
        reached = None
        if n and self.done != self.t:
            reached = self.flow.predict(self.ntk_grid_train, float(self.done)).test
        elif n:
            reached = self.mean
        want = math.inf if math.isinf(self.t) else self.t
        return dict(width=self.width, n_nets=self.n_nets, steps=self.done,
                    t_reached=self.done if n else 0, target_steps=self.target,
                    truncated=bool(n and self.done < want), done=self.finished,
                    job=None if self.finished else self.id,
                    nets=[_finite_list(r) for r in self._nets],
                    ntk_mean_at_t_reached=None if reached is None else _finite_list(reached))


class FiniteJobs:
    """Unfinished finite-network trainings, kept between requests so that the page can
    stream them to the end (:func:`handle_continue`).  Thread-safe; holds at most
    ``max_jobs`` (the newest; an older one is dropped) and forgets a job idle for
    ``ttl_s`` seconds, so a closed page leaves no work and little memory behind (at most
    ``max_jobs`` × :data:`MAX_FINITE_PARAMS` parameters)."""

    def __init__(self, max_jobs=MAX_JOBS, ttl_s=JOB_TTL_S):
        self.max_jobs, self.ttl_s = int(max_jobs), float(ttl_s)
        self._jobs = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._jobs)

    def add(self, job):
        """Keep ``job``; returns its new id."""
        job_id = secrets.token_hex(8)
        job.used = time.monotonic()
        with self._lock:
            self._expire()
            self._jobs[job_id] = job
            while len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)
        return job_id

    def get(self, job_id):
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
            if job is not None:
                job.used = time.monotonic()
            return job

    def drop(self, job_id):
        with self._lock:
            self._jobs.pop(job_id, None)

    def _expire(self):
        now = time.monotonic()
        for key in [k for k, j in self._jobs.items() if now - j.used > self.ttl_s]:
            del self._jobs[key]


def handle_continue(body, jobs):
    """(status, payload) for ``POST /api/finite`` ``{"job": id}``: train that job's networks
    about :data:`FINITE_SLICE_S` seconds further and answer ``{"finite": {...},
    "warnings": [...]}`` (the ``finite`` object of :func:`compute`); 404 naming ``job`` if
    it is unknown (finished, replaced by a newer request, or idle too long).  Never raises."""
    try:
        raw = _decode(body)
        unknown = sorted(set(raw) - {"job"})
        if unknown:
            raise RequestError(unknown[0], "unknown field; expected only 'job'")
        job_id = raw.get("job")
        if not isinstance(job_id, str) or not job_id:
            raise RequestError("job", f"expected the job id string of a response's "
                               f"finite.job, got {_describe(job_id)}")
        job = jobs.get(job_id) if jobs is not None else None
        if job is None:
            raise RequestError("job", "unknown or finished training (a newer request "
                               "replaces it; idle ones are dropped)", status=404)
        with job.lock:
            t0 = time.perf_counter()
            job.train(job.target - job.done, t0 + FINITE_SLICE_S)
            out = job.payload()
            notes = job.notes()
        if job.finished:
            jobs.drop(job_id)
        return 200, dict(finite=out, warnings=notes,
                         timing=dict(finite_ms=round((time.perf_counter() - t0) * 1e3, 3)))
    except RequestError as exc:
        return exc.status, exc.payload()
    except Exception as exc:  # last resort: the server must answer, not crash
        return 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "field": None}


def handle(body, jobs=None):
    """(status, payload) for a request body; never raises.

    200 with the result; 400 (or 413/422) with ``{"error": "field: message", "field"}``
    for bad input; 500 with ``{"error": ...}`` for anything unexpected.  ``jobs``: see
    :func:`compute`."""
    try:
        p = parse_request(body)
        return 200, compute(p, jobs)
    except RequestError as exc:
        return exc.status, exc.payload()
    except Exception as exc:  # last resort: the server must answer, not crash
        return 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "field": None}
