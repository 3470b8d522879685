"""End to end: ``ntkfast serve`` in a thread, the page in real headless Chromium (Selenium).

The page opens with the sine example fitted and the heatmap in view; clears it, clicks
three points on the canvas, checks the drawn mean curve (its polyline and the canvas
pixels under it) against the server's answer, toggles the finite-width networks and
follows their training to the end, shift-click-removes a point and saves a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and ``pip install selenium``; the paths can be overridden with
``NTKFAST_CHROMIUM`` and ``NTKFAST_CHROMEDRIVER``.  Skips with a message when any is missing.
No Selenium Manager: the driver path is given explicitly, nothing is downloaded.
"""

import json
import logging
import os
import shutil
import struct
import time

import numpy as np
import pytest

pytest.importorskip("flask", reason="ntkfast serve needs Flask (pip install flask)")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)")


def _find(env, *names):
    path = os.environ.get(env)
    if path:
        return path if os.access(path, os.X_OK) else None
    for name in names:
        p = name if os.path.isabs(name) else shutil.which(name)
        if p and os.access(p, os.X_OK):
            return p
    return None


CHROMIUM = _find("NTKFAST_CHROMIUM", "/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = _find("NTKFAST_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not available (need /usr/bin/chromium and /usr/bin/chromedriver: "
           "apt-get install chromium chromium-driver; or set NTKFAST_CHROMIUM and "
           f"NTKFAST_CHROMEDRIVER); found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}")

MEAN_RGB = (0x1F, 0x5F, 0xBF)
TIMEOUT = 30


@pytest.fixture(scope="module")
def server():
    from ntkfast.apps.web.app import start_background
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv, url = start_background("127.0.0.1", 0)
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except WebDriverException as exc:
        pytest.fail(f"chromium ({CHROMIUM}) / chromedriver ({CHROMEDRIVER}) are installed but "
                    f"did not start: {exc.msg}")
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def _state(driver, expr):
    return driver.execute_script(f"var s = window.__ntk_state; return {expr};")


def _wait(driver, cond, what):
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.05).until(lambda d: cond(d))
    except Exception:
        err = _state(driver, "[s.status, s.lastError, s.points]")
        pytest.fail(f"timed out waiting for {what}; page state {err}")


def _ready_with(driver, n_points, finite=None):
    def cond(d):
        s = _state(d, "s.status === 'ready' && s.response ? [s.response.n_points, "
                      "s.response.finite !== null, s.requests] : null")
        return s is not None and s[0] == n_points and (finite is None or s[1] == finite)
    _wait(driver, cond, f"a drawn response with {n_points} points (finite={finite})")


def _click(driver, canvas, fx, fy, shift=False):
    """Click at fraction (fx, fy) of the canvas' displayed box (from its top-left)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    w, h = driver.execute_script(
        "var r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    ox, oy = int(round((fx - 0.5) * w)), int(round((fy - 0.5) * h))  # offsets from centre
    chain = ActionChains(driver)
    if shift:
        chain.key_down(Keys.SHIFT)
    chain.move_to_element_with_offset(canvas, ox, oy).click()
    if shift:
        chain.key_up(Keys.SHIFT)
    chain.perform()


def _near(rgba, rgb, tol=40):
    return rgba[3] > 200 and all(abs(a - b) <= tol for a, b in zip(rgba[:3], rgb))


def test_click_fit_toggle_and_screenshot(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    t_start = time.perf_counter()
    d = browser
    d.get(server)
    _ready_with(d, 8)  # the sine example, fitted on load
    canvas = d.find_element(By.ID, "plot")
    assert len(_state(d, "s.polyline")) == 200
    d.find_element(By.ID, "clear").click()
    _ready_with(d, 0)  # the prior

    # -- three clicks: three points, one fit drawn through them -------------------------
    for fx, fy in [(0.25, 0.45), (0.5, 0.3), (0.78, 0.62)]:
        _click(d, canvas, fx, fy)
    _ready_with(d, 3, finite=False)
    resp = _state(d, "s.response")
    pts = _state(d, "s.points")
    assert len(pts) == 3 and resp["points"] == pts
    xs = [p[0] for p in pts]
    assert xs[0] < xs[1] < xs[2] and all(-3 <= v <= 3 for p in pts for v in p)
    # the clicks land where they were aimed: y decreases downwards on the canvas
    assert pts[1][1] > pts[0][1] > pts[2][1]
    # t = ∞, small ridge: the mean curve passes through the clicked points
    mean_at = np.interp(xs, resp["grid"], resp["mean"])
    assert np.max(np.abs(mean_at - [p[1] for p in pts])) < 0.15
    assert resp["band"] == "posterior"
    legend = d.find_element(By.ID, "legend-band").text
    assert "NTK-GP posterior" in legend

    # -- the drawn curve: one vertex per grid point, blue pixels under it ---------------
    poly = _state(d, "s.polyline")
    assert len(poly) == len(resp["grid"]) == 200
    px = np.array(poly)
    assert np.all(np.diff(px[:, 0]) > 0)  # drawn left to right
    # vertical order of the drawn curve follows the mean (canvas y grows downwards)
    m = np.array(resp["mean"])
    inside = (m > -3) & (m < 3)
    order = np.corrcoef(px[inside, 1], m[inside])[0, 1]
    assert order < -0.999
    pts_px = [np.interp(p[0], resp["grid"], px[:, 0]) for p in pts]  # pixel x of the dots
    colours = d.execute_script(
        "return arguments[0].map(function (p) { return window.__ntk_pixel(p[0], p[1]); });",
        poly)
    keep = [i for i, (x, _) in enumerate(poly)
            if inside[i] and min(abs(x - q) for q in pts_px) > 8]
    blue = sum(_near(colours[i], MEAN_RGB) for i in keep)
    assert blue >= 0.9 * len(keep), f"only {blue}/{len(keep)} mean-curve pixels are blue"
    # and the canvas is not blank elsewhere: the white background and the band exist
    corner = d.execute_script("return window.__ntk_pixel(2, 2);")
    assert corner[:3] == [255, 255, 255]

    # -- finite-width networks, trained to t = 1000 while the page streams them ----------
    d.execute_script("var t = document.getElementById('t'); t.value = '7';"
                     "t.dispatchEvent(new Event('input', {bubbles: true}));")
    _wait(d, lambda dd: _state(dd, "s.status === 'ready' && s.response.t") == 1000,
          "the fit at t = 1000")
    d.find_element(By.ID, "finite").click()
    _ready_with(d, 3, finite=True)
    _wait(d, lambda dd: _state(dd, "s.response.finite.done && !s.training"),
          "the finite networks to finish training")
    resp = _state(d, "s.response")
    f = resp["finite"]
    assert f["steps"] == f["target_steps"] == 1000 and f["job"] is None
    assert _state(d, "s.continuations") >= 1, "the training was not streamed"
    assert "1000 GD steps" in d.find_element(By.ID, "legend-finite").text
    n_nets = int(d.find_element(By.ID, "n_nets").get_attribute("value"))
    assert f["n_nets"] == n_nets and len(f["nets"]) == n_nets
    samples = _state(d, "s.samples")
    assert len(samples) == n_nets and all(len(s) == 200 for s in samples)
    assert f["steps"] >= 1 and all(v is not None for net in f["nets"] for v in net)
    orange = 0
    for s in samples:
        cols = d.execute_script(
            "return arguments[0].map(function (p) { return window.__ntk_pixel(p[0], p[1]); });",
            s[::5])
        orange += sum(c[0] > 170 and 70 < c[1] < 170 and c[2] < 110 for c in cols)
    assert orange > 10, "no finite-width curve visible on the canvas"
    assert "finite networks" in d.find_element(By.ID, "legend-finite").text

    # -- shift-click removes the nearest point ------------------------------------------
    _click(d, canvas, 0.5, 0.33, shift=True)
    _ready_with(d, 2, finite=True)
    left = _state(d, "s.points")
    assert left == [pts[0], pts[2]]

    # -- screenshot -----------------------------------------------------------------------
    shot = tmp_path / "ntkfast-serve.png"
    assert d.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    w, h = struct.unpack(">II", data[16:24])
    assert w >= 800 and h >= 600
    canvas_png = canvas.screenshot_as_png
    assert canvas_png[:8] == b"\x89PNG\r\n\x1a\n"

    # no JavaScript errors on the page
    logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not logs, json.dumps(logs, indent=1)
    print(f"\nscreenshot: {shot} ({len(data)} bytes, {w}x{h}); "
          f"e2e took {time.perf_counter() - t_start:.1f} s")


def test_opens_fitted_with_the_heatmap_in_view(server, browser):
    """At 1280×900 the page opens with the example fitted and the heatmap drawn, in view
    without scrolling."""
    d = browser
    size = d.get_window_size()
    try:
        d.set_window_size(1280, 900)
        d.get(server)
        _ready_with(d, 8)
        top, bottom, inner = d.execute_script(
            "var r = document.getElementById('heatmap').getBoundingClientRect();"
            "return [r.top, r.bottom, window.innerHeight];")
        assert 0 <= top and bottom <= inner, (top, bottom, inner)
        # the heatmap is drawn: its pixels are not all one colour
        colours = d.execute_script(
            "var c = document.getElementById('heatmap').getContext('2d');"
            "var d = c.getImageData(0, 0, c.canvas.width, c.canvas.height).data;"
            "var seen = {}; for (var i = 0; i < d.length; i += 397) seen[d[i] + ',' + d[i+1]]"
            " = 1; return Object.keys(seen).length;")
        assert colours > 10
        # the normalized kernel on request: a redraw, its colour bar ends at 1
        before = d.find_element("id", "heatmap").screenshot_as_png
        from selenium.webdriver.support.ui import Select
        Select(d.find_element("id", "heat-kind")).select_by_value("normalized")
        _wait(d, lambda dd: float(dd.find_element("id", "heat-max").text) <= 1.0,
              "the normalized heatmap's colour bar")
        assert d.find_element("id", "heatmap").screenshot_as_png != before
    finally:
        d.set_window_size(size["width"], size["height"])


def test_bad_input_shows_an_error_not_a_crash(server, browser):
    """The API answers 400 to bad input sent by the page's own fetch; the page keeps
    working afterwards."""
    d = browser
    d.get(server)
    _ready_with(d, 8)
    status, body = d.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch('/api/fit', {method: 'POST', headers: {'Content-Type': 'application/json'},
                           body: '{"width": 100000, "finite": true}'})
          .then(function (r) { return r.json().then(function (j) { done([r.status, j]); }); });
    """)
    assert status == 400 and body["field"] == "width"
    # an out-of-range value typed into a control: the page shows the server's message
    el = d.find_element("id", "w_std")
    el.clear()
    el.send_keys("50")
    _wait(d, lambda dd: _state(dd, "s.status") == "error", "the error status")
    assert "w_std" in d.find_element("id", "status").text
    el.clear()
    el.send_keys("1.5")
    _ready_with(d, 8)
