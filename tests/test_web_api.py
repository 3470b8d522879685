"""The JSON API of ``ntkfast serve``: the numbers against ntkfast computed directly, bad
input → 400 naming the field, and the server's error handling (Flask test client)."""

import argparse
import base64
import json
import math
import statistics
import time

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.experiments import default_lr
from ntkfast.solve import GradientFlow, InfiniteEnsemble, KernelRegression
from ntkfast.apps.web import api

flask = pytest.importorskip("flask", reason="ntkfast serve needs Flask (pip install flask)")
from ntkfast.apps.web import app as webapp  # noqa: E402


@pytest.fixture(scope="module")
def client():
    a = webapp.create_app()
    a.testing = True
    return a.test_client()


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n))
    return [[float(a), float(np.sin(a))] for a in x]


def _fit(client, body, raw=False):
    data = body if raw else json.dumps(body)
    r = client.post("/api/fit", data=data, content_type="application/json")
    return r.status_code, r.get_json()


def _default_mlp(depth, activation):
    """The page's network with the API's default σ_w, σ_b."""
    return nk.MLP(depth=depth, activation=activation, w_std=api.DEFAULTS["w_std"],
                  b_std=api.DEFAULTS["b_std"])


def _xy(points):
    a = np.array(points, dtype=float).reshape(-1, 2)
    return a[:, :1], a[:, 1]


# -- good requests -------------------------------------------------------------------------
def test_page_and_assets_are_local(client):
    r = client.get("/")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'id="plot"' in html and 'id="heatmap"' in html
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        rr = client.get(asset)
        assert rr.status_code == 200 and len(rr.data) > 500
        # no CDN, no remote fonts: nothing is fetched from outside the server
        assert b"http://" not in rr.data and b"https://" not in rr.data
    assert "http://" not in html and "https://" not in html


def test_config(client):
    r = client.get("/api/config")
    assert r.status_code == 200
    cfg = r.get_json()
    assert cfg["defaults"] == api.DEFAULTS
    assert set(cfg["activations"]) == {"relu", "erf", "gelu", "leaky_relu", "abs", "identity"}
    assert cfg["limits"]["width"]["max"] == 4096 and cfg["max_points"] == 200


def test_no_points_gives_the_prior(client):
    status, r = _fit(client, {})
    assert status == 200
    assert r["n_points"] == 0 and len(r["grid"]) == 200
    assert np.allclose(r["mean"], 0.0)
    net = nk.MLP(**{k: api.DEFAULTS[k] for k in ("depth", "activation", "w_std", "b_std")})
    G = np.array(r["grid"])[:, None]
    assert r["band"] == "posterior"  # t = ∞ by default
    assert np.allclose(r["std"], np.sqrt(net.ntk_diag(G)))
    status, r = _fit(client, {"t": 10})
    assert r["band"] == "ensemble" and np.allclose(r["std"], np.sqrt(net.nngp_diag(G)))


def test_kernel_regression_at_t_infinity(client):
    pts = _points(50)
    body = dict(points=pts, depth=2, activation="erf", w_std=1.3, b_std=0.2, ridge=1e-2)
    status, r = _fit(client, body)
    assert status == 200, r
    X, y = _xy(pts)
    G = np.array(r["grid"])[:, None]
    net = nk.MLP(depth=2, activation="erf", w_std=1.3, b_std=0.2)
    reg = KernelRegression(net.ntk(X), y, ridge=1e-2)
    assert np.allclose(r["mean"], reg.predict(net.ntk(G, X)), rtol=1e-9, atol=1e-9)
    assert np.allclose(r["std"], np.sqrt(reg.variance(net.ntk(G, X), net.ntk_diag(G))),
                       rtol=1e-7, atol=1e-9)
    assert r["band"] == "posterior" and "KernelRegression.variance" in r["band_label"]
    assert r["t"] == "inf" and r["finite"] is None
    assert r["points"] == pts
    # with a small ridge the mean passes through the training points
    status, r = _fit(client, dict(points=pts[::5], ridge=1e-6))
    xs, ys = _xy(pts[::5])
    mean_at = np.interp(xs[:, 0], r["grid"], r["mean"])
    assert np.max(np.abs(mean_at - ys)) < 0.05


@pytest.mark.parametrize("t", [0, 7.5, 300])
def test_gradient_flow_and_ensemble_at_finite_t(client, t):
    pts = _points(12, seed=1)
    status, r = _fit(client, dict(points=pts, t=t, ridge=1e-3, depth=3, activation="gelu"))
    assert status == 200, r
    X, y = _xy(pts)
    G = np.array(r["grid"])[:, None]
    net = _default_mlp(3, "gelu")
    K = net.ntk(X)
    lr = default_lr(K)
    assert math.isclose(r["lr"], lr, rel_tol=1e-12)
    mean = GradientFlow(K, y, lr, 1e-3).predict(net.ntk(G, X), float(t)).test
    assert np.allclose(r["mean"], mean, atol=1e-9)
    ens = InfiniteEnsemble(net, X, y, learning_rate=lr, ridge=1e-3).predict(G, t, cov="diag")
    assert r["band"] == "ensemble" and "InfiniteEnsemble" in r["band_label"]
    assert np.allclose(r["std"], np.sqrt(np.maximum(ens.covariance, 0)), atol=1e-7)
    assert np.allclose(ens.mean, r["mean"], atol=1e-8)


def test_band_can_be_chosen(client):
    pts = _points(6)
    _, post = _fit(client, dict(points=pts, band="posterior", t=20))
    _, ens = _fit(client, dict(points=pts, band="ensemble", t="inf"))
    assert post["band"] == "posterior" and ens["band"] == "ensemble"
    _, post_inf = _fit(client, dict(points=pts, band="posterior"))
    assert np.allclose(post["std"], post_inf["std"])  # the posterior does not depend on t


def test_finite_networks_are_trained_like_finite_mlp(client):
    pts = _points(8, seed=2)
    body = dict(points=pts, finite=True, width=64, n_nets=2, t=40, seed=5, depth=2)
    status, r = _fit(client, body)
    assert status == 200, r
    f = r["finite"]
    assert f["steps"] == 40 and f["t_reached"] == 40 and not f["truncated"]
    assert len(f["nets"]) == 2 and all(len(n) == 200 for n in f["nets"])
    X, y = _xy(pts)
    G = np.array(r["grid"])[:, None]
    mlp = _default_mlp(2, "relu")
    lr = default_lr(mlp.ntk(X))
    for i, out in enumerate(f["nets"]):
        net = mlp.finite(64, seed=5 + 1 + i, d=1)
        net.train(X, y, lr, 40)
        assert np.allclose(out, net(G)[:, 0], atol=1e-9)
    assert np.allclose(f["ntk_mean_at_t_reached"], r["mean"])


def test_finite_networks_are_capped(client):
    pts = _points(50)
    status, r = _fit(client, dict(points=pts, finite=True, t="inf", width=256))
    assert status == 200
    f = r["finite"]
    assert f["truncated"] and 0 <= f["steps"] <= api.MAX_STEPS
    assert any("GD steps" in w for w in r["warnings"])
    X, y = _xy(pts)
    net = _default_mlp(1, "relu")
    K = net.ntk(X)
    expect = GradientFlow(K, y, default_lr(K), api.DEFAULTS["ridge"]).predict(
        net.ntk(np.array(r["grid"])[:, None], X), float(f["steps"])).test
    assert np.allclose(f["ntk_mean_at_t_reached"], expect, atol=1e-9)
    # the cost model never plans more than the budget allows, whatever the width/depth
    for width, depth in [(4096, 1), (1024, 2), (16, 8), (4096, 0)]:
        steps, _ = api.finite_steps(math.inf, 200, width, depth, 8)
        assert 0 <= steps <= api.MAX_STEPS
        assert steps * 8 * api._step_cost(200, width, depth) <= api.FINITE_BUDGET_S + 1e-12


def _continue(client, body, raw=False):
    data = body if raw else json.dumps(body)
    r = client.post("/api/finite", data=data, content_type="application/json")
    return r.status_code, r.get_json()


def test_finite_networks_stream_to_the_end(client):
    """A fit answers with the networks as far as its budget went and a job; continuing
    the job trains them on to MAX_STEPS (t = ∞), exactly as one uninterrupted run."""
    pts = _points(20, seed=3)
    status, r = _fit(client, dict(points=pts, finite=True, t="inf", width=64, n_nets=1,
                                  seed=2))
    assert status == 200, r
    f = r["finite"]
    assert f["target_steps"] == api.MAX_STEPS and f["steps"] < api.MAX_STEPS
    assert not f["done"] and isinstance(f["job"], str) and f["truncated"]
    seen = [f["steps"]]
    for _ in range(500):
        status, c = _continue(client, {"job": f["job"]})
        assert status == 200, c
        f = c["finite"]
        assert f["steps"] >= seen[-1]
        seen.append(f["steps"])
        if f["done"]:
            break
    assert f["done"] and f["job"] is None and f["steps"] == api.MAX_STEPS
    assert f["t_reached"] == api.MAX_STEPS and f["truncated"]   # t = ∞ is never reached
    X, y = _xy(pts)
    G = np.array(r["grid"])[:, None]
    mlp = _default_mlp(1, "relu")
    K = mlp.ntk(X)
    lr = default_lr(K)
    net = mlp.finite(64, seed=3, d=1)
    net.train(X, y, lr, api.MAX_STEPS)
    assert np.allclose(f["nets"][0], net(G)[:, 0], atol=1e-9)
    expect = GradientFlow(K, y, lr, api.DEFAULTS["ridge"]).predict(
        mlp.ntk(G, X), float(api.MAX_STEPS)).test
    assert np.allclose(f["ntk_mean_at_t_reached"], expect, atol=1e-9)
    # a finished job is forgotten
    status, c = _continue(client, {"job": r["finite"]["job"]})
    assert status == 404 and c["field"] == "job"


def test_finite_networks_reach_a_finite_t(client):
    status, r = _fit(client, dict(points=_points(8), finite=True, t=30, width=32, n_nets=2))
    assert status == 200
    f = r["finite"]
    assert f["done"] and f["job"] is None and f["steps"] == f["target_steps"] == 30
    assert not f["truncated"]


@pytest.mark.parametrize("body, status, field", [
    ({"job": "0123456789abcdef"}, 404, "job"),
    ({}, 400, "job"),
    ({"job": 3}, 400, "job"),
    ({"job": "x", "width": 3}, 400, "width"),
    ("[1]", 400, "body"),
])
def test_continue_bad_input_names_the_field(client, body, status, field):
    st, r = _continue(client, body, raw=isinstance(body, str))
    assert st == status and r["field"] == field, r


def test_job_store_keeps_the_newest_and_forgets_idle_ones():
    jobs = api.FiniteJobs(max_jobs=2, ttl_s=60)

    class J:
        used = 0.0

    ids = [jobs.add(J()) for _ in range(3)]
    assert len(jobs) == 2 and jobs.get(ids[0]) is None
    assert jobs.get(ids[1]) is not None and jobs.get(ids[2]) is not None
    jobs.drop(ids[1])
    assert jobs.get(ids[1]) is None
    idle = api.FiniteJobs(ttl_s=0.0)
    k = idle.add(J())
    time.sleep(0.01)
    assert idle.get(k) is None and len(idle) == 0


def test_heatmap_is_the_ntk_on_the_grid(client):
    status, r = _fit(client, dict(points=_points(5), depth=3, n_heatmap=40))
    hm = r["heatmap"]
    q = np.frombuffer(base64.b64decode(hm["data"]), dtype=np.uint8).reshape(hm["n"], hm["n"])
    vals = hm["vmin"] + q / 255.0 * (hm["vmax"] - hm["vmin"])
    g = np.linspace(hm["x_min"], hm["x_max"], hm["n"])[:, None]
    theta = _default_mlp(3, "relu").ntk(g)
    assert np.max(np.abs(vals - theta)) <= 0.5 / 255 * (hm["vmax"] - hm["vmin"]) + 1e-12
    # the normalized kernel, Θ(x, x')/√(Θ(x, x) Θ(x', x')), in the same encoding
    nm = hm["normalized"]
    qn = np.frombuffer(base64.b64decode(nm["data"]), dtype=np.uint8).reshape(hm["n"], hm["n"])
    vn = nm["vmin"] + qn / 255.0 * (nm["vmax"] - nm["vmin"])
    d = np.sqrt(np.diag(theta))
    assert np.max(np.abs(vn - theta / np.outer(d, d))) <= \
        0.5 / 255 * (nm["vmax"] - nm["vmin"]) + 1e-12
    assert nm["vmax"] <= 1.0 and np.allclose(np.diag(vn), 1.0, atol=0.5 / 255 * 2)


@pytest.mark.parametrize("activation", api.ACTIVATIONS)
@pytest.mark.parametrize("depth", [0, 4])
def test_every_activation_gives_json_safe_numbers(client, activation, depth):
    body = dict(points=_points(10), activation=activation, depth=depth, t=100, finite=True,
                width=32, n_nets=1)
    status, r = _fit(client, body)
    assert status == 200, r
    json.dumps(r, allow_nan=False)
    assert all(v is not None for v in r["mean"] + r["std"])


def test_duplicate_points_and_zero_ridge_do_not_fail(client):
    pts = [[0.5, 1.0], [0.5, -1.0], [1.0, 0.0]]
    status, r = _fit(client, dict(points=pts, ridge=0))
    assert status in (200, 422), r
    if status == 200:
        assert any("Jitter" in w or "singular" in w for w in r["warnings"])
        json.dumps(r, allow_nan=False)
    else:
        assert r["field"] == "ridge"
    # identity activation: Θ has rank 2 on 1-D inputs
    status, r = _fit(client, dict(points=_points(30), activation="identity", ridge=0, depth=2))
    assert status in (200, 422) and (status == 200 or r["field"] == "ridge")


@pytest.mark.parametrize("extra", [{}, {"t": 5}, {"finite": True, "t": 10},
                                   {"band": "ensemble", "b_std": None}])
def test_zero_kernel_on_the_training_points(client, extra):
    """x = 0 without bias: Θ(X, X) = 0 — answered (or 422 naming ridge), never a 500."""
    body = {"points": [[0, 1], [0, 2]], "b_std": 0, **extra}
    status, r = _fit(client, body)
    assert status in (200, 422), r
    if status == 200:
        assert any("cannot fit" in w for w in r["warnings"])
        assert np.allclose(r["mean"], 0.0)
    else:
        assert r["field"] == "ridge"


def test_response_time_for_50_points(client):
    """Informal: prints the times; the target is < 200 ms for 50 points (not asserted)."""
    body = dict(points=_points(50))
    for label, extra in [("t=inf", {}), ("t=100", {"t": 100}),
                         ("t=inf depth=3", {"depth": 3}),
                         ("finite, width 256, t=100", {"finite": True, "t": 100})]:
        times, server = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            status, r = _fit(client, {**body, **extra})
            times.append((time.perf_counter() - t0) * 1e3)
            server.append(r["timing"]["total_ms"])
            assert status == 200
        print(f"\n50 points, {label}: request {statistics.median(times):.1f} ms median "
              f"(min {min(times):.1f}), server compute {statistics.median(server):.1f} ms")


# -- bad requests --------------------------------------------------------------------------
BAD = [
    ("{not json", "body"),
    ("[1, 2, 3]", "body"),
    ('"points"', "body"),
    ('{"depth": "two"}', "depth"),
    ('{"depth": 9}', "depth"),
    ('{"depth": -1}', "depth"),
    ('{"depth": 1.5}', "depth"),
    ('{"depth": true}', "depth"),
    ('{"depth": null}', "depth"),
    ('{"w_std": NaN}', "w_std"),
    ('{"w_std": 0}', "w_std"),
    ('{"b_std": -1}', "b_std"),
    ('{"ridge": Infinity}', "ridge"),
    ('{"ridge": "1e-3"}', "ridge"),
    ('{"ridge": 1e999}', "ridge"),
    ('{"width": 5000, "finite": true}', "width"),
    ('{"width": 4097}', "width"),
    ('{"width": 0}', "width"),
    ('{"width": 1' + "0" * 400 + "}", "width"),
    ('{"finite": true, "depth": 3, "width": 4096}', "width"),
    ('{"n_nets": 50}', "n_nets"),
    ('{"activation": "tanh"}', "activation"),
    ('{"activation": 3}', "activation"),
    ('{"t": -1}', "t"),
    ('{"t": "soon"}', "t"),
    ('{"t": NaN}', "t"),
    ('{"t": -Infinity}', "t"),
    ('{"band": "wide"}', "band"),
    ('{"finite": "yes"}', "finite"),
    ('{"finite": 1}', "finite"),
    ('{"colour": "red"}', "colour"),
    ('{"points": "many"}', "points"),
    ('{"points": [[0, 1, 2]]}', "points[0]"),
    ('{"points": [[0, 1], 5]}', "points[1]"),
    ('{"points": [["a", 1]]}', "points[0][0]"),
    ('{"points": [[0, NaN]]}', "points[0][1]"),
    ('{"points": [[7, 0]]}', "points[0][0]"),
    ('{"points": [[0, 1e6]]}', "points[0][1]"),
    ('{"points": [[0, null]]}', "points[0][1]"),
    ('{"n_grid": 100000}', "n_grid"),
]


@pytest.mark.parametrize("body,field", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input_is_400_naming_the_field(client, body, field):
    status, r = _fit(client, body, raw=True)
    assert status == 400, r
    assert r["field"] == field
    assert r["error"].startswith(field + ":") and len(r["error"]) > len(field) + 5


def test_too_many_points(client):
    status, r = _fit(client, {"points": _points(201)})
    assert status == 400 and r["field"] == "points" and "200" in r["error"]
    status, r = _fit(client, {"points": _points(200), "n_grid": 50, "n_heatmap": 20})
    assert status == 200


def test_non_utf8_and_empty_bodies(client):
    r = client.post("/api/fit", data=b"\xff\xfe{", content_type="application/json")
    assert r.status_code == 400 and r.get_json()["field"] == "body"
    r = client.post("/api/fit", data=b"", content_type="application/json")
    assert r.status_code == 200  # empty body = all defaults


def test_deeply_nested_json(client):
    status, r = _fit(client, "[" * 100000 + "]" * 100000, raw=True)
    assert status == 400 and r["field"] == "body"


def test_body_too_large_is_413_json(client):
    r = client.post("/api/fit", data=b" " * (2 << 20), content_type="application/json")
    assert r.status_code == 413 and "error" in r.get_json()


def test_wrong_method_and_unknown_route_answer_json(client):
    r = client.get("/api/fit")
    assert r.status_code == 405 and "error" in r.get_json()
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.get_json()


def test_unexpected_errors_are_500_and_the_server_keeps_going(client, monkeypatch):
    def boom(p, jobs=None):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(api, "compute", boom)
    status, r = _fit(client, {})
    assert status == 500 and "kaboom" in r["error"]
    monkeypatch.undo()
    status, r = _fit(client, {})
    assert status == 200


def test_handle_never_raises():
    for body in (None, 3, b"\x00", "null", {"points": [[0, 0]] * 5}, {"depth": [1]}):
        status, payload = api.handle(body)
        assert status in (200, 400) and isinstance(payload, dict)


# -- command line --------------------------------------------------------------------------
def test_serve_arguments_default_to_loopback():
    p = webapp.add_serve_arguments(argparse.ArgumentParser())
    args = p.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 8765 and not args.open
    args = p.parse_args(["--port", "9000", "--host", "::1"])
    assert args.port == 9000 and args.host == "::1"


def test_main_from_args_serves_until_interrupted(monkeypatch, capsys):
    seen = {}

    class FakeServer:
        server_port = 4321

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            seen["closed"] = True

    def fake_make_server(host, port, app=None):
        seen["host"], seen["port"] = host, port
        return FakeServer()

    monkeypatch.setattr(webapp, "make_server", fake_make_server)
    args = webapp.add_serve_arguments(argparse.ArgumentParser()).parse_args(["--port", "0"])
    assert webapp.main_from_args(args) == 0
    assert seen == {"host": "127.0.0.1", "port": 0, "closed": True}
    assert "http://127.0.0.1:4321/" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        webapp.main_from_args(argparse.Namespace(host="127.0.0.1", port=70000, open=False))


def test_real_server_on_a_free_loopback_port():
    import urllib.error
    import urllib.request

    srv, url = webapp.start_background(port=0)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/config", timeout=10) as resp:
            assert json.load(resp)["max_points"] == 200
        req = urllib.request.Request(url + "api/fit", data=b'{"depth": "x"}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 400 and json.load(exc.value)["field"] == "depth"
    finally:
        srv.shutdown()
        srv.server_close()


# -- issue 17: DNS-rebinding / cross-origin guard --------------------------------------
def _bound_client(host="127.0.0.1", port=8765):
    a = webapp.create_app(host, port)
    a.testing = True
    return a.test_client()


FIT = json.dumps({"points": [[0.0, 1.0], [1.0, 0.0]]})


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765",
                                  "LOCALHOST:8765"])
def test_loopback_host_is_served(host):
    c = _bound_client()
    assert c.get("/api/config", headers={"Host": host}).status_code == 200
    r = c.post("/api/fit", data=FIT, content_type="application/json",
               headers={"Host": host, "Origin": f"http://{host}"})
    assert r.status_code == 200, r.get_json()


@pytest.mark.parametrize("headers,needle", [
    ({"Host": "evil.example:8765"}, "not this server's address"),
    ({"Host": "evil.example"}, "not this server's address"),
    ({"Host": "127.0.0.1:9999"}, "another port"),
    ({"Host": "127.0.0.1"}, "another port"),
    ({"Host": "127.0.0.1:8765", "Origin": "http://evil.example"}, "cross-origin"),
    ({"Host": "127.0.0.1:8765", "Origin": "http://localhost:8765"}, "cross-origin"),
    ({"Host": "127.0.0.1:8765", "Origin": "https://127.0.0.1:8765"}, "cross-origin"),
    ({"Host": "127.0.0.1:8765", "Origin": "null"}, "cross-origin"),
    ({"Host": "127.0.0.1:8765:1"}, "malformed"),
])
def test_foreign_host_or_origin_is_refused(headers, needle):
    """A page on another origin (or a rebound DNS name) got answers to its POSTs."""
    c = _bound_client()
    r = c.post("/api/fit", data=FIT, content_type="application/json", headers=headers)
    assert r.status_code == 403
    body = r.get_json()
    assert body["error"].startswith("forbidden: ") and needle in body["error"]
    page = c.get("/", headers=headers)
    assert page.status_code == 403 and needle in page.get_data(as_text=True)


def test_explicit_host_and_wildcard_bind():
    c = _bound_client("myhost.lan", 8000)
    assert c.get("/api/config", headers={"Host": "myhost.lan:8000"}).status_code == 200
    assert c.get("/api/config", headers={"Host": "localhost:8000"}).status_code == 200
    assert c.get("/api/config", headers={"Host": "other.lan:8000"}).status_code == 403
    c = _bound_client("0.0.0.0", 8000)
    assert c.get("/api/config", headers={"Host": "192.168.1.20:8000"}).status_code == 200
    assert c.get("/api/config", headers={"Host": "evil.example:8000"}).status_code == 403


def test_real_server_refuses_a_foreign_host():
    import http.client

    srv, url = webapp.start_background(port=0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=10)
        conn.request("POST", "/api/fit", body=FIT,
                     headers={"Host": f"rebind.example:{srv.server_port}",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 403 and b"DNS rebinding" in resp.read()
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=10)
        conn.request("GET", "/api/config")  # http.client sends Host: 127.0.0.1:port
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
