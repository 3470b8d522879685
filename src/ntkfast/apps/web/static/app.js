/* ntkfast serve: the page.  No dependencies; draws on <canvas> itself.
 *
 * The state of the page is window.__ntk_state (read by the end-to-end test):
 *   points        [[x, y], ...] as sent
 *   request       the last request body sent to /api/fit
 *   response      the last successful response (JSON from the server)
 *   polyline      the drawn mean curve, [[px, py], ...] in canvas logical pixels
 *   samples       the drawn finite-width curves, one polyline each
 *   pixelScale    backing-store pixels per logical pixel (for getImageData)
 *   status        "init" | "loading" | "ready" | "error"  (also data-status on #plot)
 *   training      true while finite networks are streamed (data-training on #plot)
 *   requests, responses, continuations, lastError, roundTripMs
 */
(function () {
  "use strict";

  var X_MIN = -3, X_MAX = 3, Y_MIN = -3, Y_MAX = 3;
  var W = 760, H = 460;                       // logical size of #plot
  var PAD = { left: 44, right: 14, top: 14, bottom: 34 };
  var T_VALUES = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 1e4, 1e5, "inf"];
  var MAX_POINTS = 200;
  var COLORS = { mean: "#1f5fbf", band: "rgba(120,130,145,0.33)", finite: "rgba(224,123,0,0.85)",
                 reached: "#6a3d9a", point: "#111111", grid: "#e6e9ef", axis: "#9aa3b2",
                 text: "#5b6577" };

  var state = {
    points: [], request: null, response: null, polyline: [], samples: [],
    pixelScale: 1, status: "init", training: false, requests: 0, responses: 0,
    continuations: 0, lastError: null, roundTripMs: null
  };
  window.__ntk_state = state;

  var $ = function (id) { return document.getElementById(id); };
  var plot = $("plot"), ctx = plot.getContext("2d");
  var heat = $("heatmap"), hctx = heat.getContext("2d");
  var controller = null, seq = 0, timer = null;

  // -- coordinates ---------------------------------------------------------------------
  var PW = W - PAD.left - PAD.right, PH = H - PAD.top - PAD.bottom;
  function sx(x) { return PAD.left + (x - X_MIN) / (X_MAX - X_MIN) * PW; }
  function sy(y) { return PAD.top + (Y_MAX - y) / (Y_MAX - Y_MIN) * PH; }
  function dataX(px) { return X_MIN + (px - PAD.left) / PW * (X_MAX - X_MIN); }
  function dataY(py) { return Y_MAX - (py - PAD.top) / PH * (Y_MAX - Y_MIN); }

  function setupCanvas() {
    var dpr = Math.max(1, Math.min(window.devicePixelRatio || 1, 3));
    plot.width = Math.round(W * dpr);
    plot.height = Math.round(H * dpr);
    state.pixelScale = plot.width / W;
  }

  /** RGBA of the backing-store pixel under logical point (lx, ly) (for tests). */
  window.__ntk_pixel = function (lx, ly) {
    var s = state.pixelScale;
    var d = ctx.getImageData(Math.round(lx * s), Math.round(ly * s), 1, 1).data;
    return [d[0], d[1], d[2], d[3]];
  };

  // -- controls ------------------------------------------------------------------------
  function tValue() { return T_VALUES[+$("t").value]; }
  function tLabel(t) {
    if (t === "inf") return "∞";
    return t >= 1e4 ? t.toExponential(0).replace("e+", "e") : String(t);
  }
  function syncOutputs() {
    $("depth-out").textContent = $("depth").value;
    $("t-out").textContent = tLabel(tValue());
    $("n_nets-out").textContent = $("n_nets").value;
  }
  function numberOr(id, fallback) {
    var v = parseFloat($(id).value);
    return isFinite(v) ? v : fallback;
  }
  function buildRequest() {
    return {
      points: state.points.map(function (p) { return [p[0], p[1]]; }),
      depth: parseInt($("depth").value, 10),
      activation: $("activation").value,
      w_std: numberOr("w_std", 1.5),
      b_std: numberOr("b_std", 0),
      ridge: parseFloat($("ridge").value),
      t: tValue(),
      band: $("band").value,
      finite: $("finite").checked,
      width: parseInt($("width").value, 10),
      n_nets: parseInt($("n_nets").value, 10)
    };
  }

  // -- talking to the server -----------------------------------------------------------
  function setStatus(s) {
    state.status = s;
    plot.setAttribute("data-status", s);
  }
  function schedule(delay) {
    if (timer) clearTimeout(timer);
    setStatus("loading");
    timer = setTimeout(fit, delay === undefined ? 60 : delay);
  }
  function fit() {
    timer = null;
    if (controller) controller.abort();
    controller = new AbortController();
    var my = ++seq, body = buildRequest(), t0 = performance.now();
    state.request = body;
    state.requests++;
    fetch("/api/fit", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, status: r.status, json: j }; });
    }).then(function (res) {
      if (my !== seq) return;                 // a newer request is on its way
      state.roundTripMs = performance.now() - t0;
      if (!res.ok) {
        state.lastError = res.json && res.json.error ? res.json.error : "HTTP " + res.status;
        setStatus("error");
        showStatus("error " + res.status + ": " + state.lastError, true);
        return;
      }
      state.lastError = null;
      state.response = res.json;
      state.responses++;
      draw();
      drawHeatmap();
      updateLegend();
      setStatus("ready");
      var f = res.json.finite;
      setTraining(!!(f && f.job && !f.done));
      if (state.training) continueTraining(f.job, my);
    }).catch(function (err) {
      if (err && err.name === "AbortError") return;
      if (my !== seq) return;
      state.lastError = String(err);
      setStatus("error");
      showStatus("request failed: " + err, true);
    });
  }

  function setTraining(on) {
    state.training = on;
    plot.setAttribute("data-training", on ? "yes" : "no");
  }
  /** Ask the server to train the finite networks of fit number `my` further, draw them,
   *  and go on until they are done or a newer fit replaces them. */
  function continueTraining(job, my) {
    fetch("/api/finite", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ job: job }), signal: controller.signal
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, status: r.status, json: j }; });
    }).then(function (res) {
      if (my !== seq || !state.response) return;
      if (!res.ok) { setTraining(false); return; }  // e.g. 404: dropped by the server
      state.continuations++;
      state.response.finite = res.json.finite;
      var extra = (res.json.warnings || []).filter(function (w) {
        return state.response.warnings.indexOf(w) < 0;
      });
      state.response.warnings = state.response.warnings.concat(extra);
      draw();
      updateLegend();
      var f = res.json.finite;
      setTraining(!f.done && !!f.job);
      if (state.training) continueTraining(f.job, my);
    }).catch(function (err) {
      if (err && err.name === "AbortError") return;
      if (my === seq) setTraining(false);
    });
  }

  function showStatus(text, isError) {
    var el = $("status");
    el.textContent = text;
    el.className = isError ? "status error" : "status";
  }

  // -- the plot ------------------------------------------------------------------------
  function path(xs, ys) {
    var pts = [];
    for (var i = 0; i < xs.length; i++) {
      if (ys[i] === null || !isFinite(ys[i])) continue;
      pts.push([sx(xs[i]), sy(ys[i])]);
    }
    return pts;
  }
  function strokePolyline(pts, color, width, dash) {
    if (pts.length < 2) return;
    ctx.save();
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    if (dash) ctx.setLineDash(dash);
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (var i = 1; i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.stroke();
    ctx.restore();
  }
  function drawAxes() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, W, H);
    ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = COLORS.text;
    for (var v = -3; v <= 3; v++) {
      ctx.strokeStyle = v === 0 ? COLORS.axis : COLORS.grid;
      ctx.beginPath(); ctx.moveTo(sx(v), PAD.top); ctx.lineTo(sx(v), PAD.top + PH); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(PAD.left, sy(v)); ctx.lineTo(PAD.left + PW, sy(v)); ctx.stroke();
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      ctx.fillText(String(v), sx(v), PAD.top + PH + 5);
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      ctx.fillText(String(v), PAD.left - 6, sy(v));
    }
    ctx.strokeStyle = COLORS.axis;
    ctx.strokeRect(PAD.left, PAD.top, PW, PH);
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText("x", PAD.left + PW / 2, H - 1);
  }
  function draw() {
    ctx.setTransform(state.pixelScale, 0, 0, state.pixelScale, 0, 0);
    drawAxes();
    var r = state.response;
    state.polyline = [];
    state.samples = [];
    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top, PW, PH);
    ctx.clip();
    if (r) {
      var g = r.grid, m = r.mean, s = r.std, i;
      // band: mean ± std
      ctx.fillStyle = COLORS.band;
      ctx.beginPath();
      var first = true;
      for (i = 0; i < g.length; i++) {
        if (m[i] === null || s[i] === null) continue;
        var px = sx(g[i]), py = sy(m[i] + s[i]);
        if (first) { ctx.moveTo(px, py); first = false; } else ctx.lineTo(px, py);
      }
      for (i = g.length - 1; i >= 0; i--) {
        if (m[i] === null || s[i] === null) continue;
        ctx.lineTo(sx(g[i]), sy(m[i] - s[i]));
      }
      ctx.closePath();
      ctx.fill();
      if (r.finite) {
        r.finite.nets.forEach(function (ys) {
          var pts = path(g, ys);
          state.samples.push(pts);
          strokePolyline(pts, COLORS.finite, 1.4);
        });
        if (r.finite.ntk_mean_at_t_reached && r.finite.steps !== r.t) {
          strokePolyline(path(g, r.finite.ntk_mean_at_t_reached), COLORS.reached, 1.6, [6, 4]);
        }
      }
      state.polyline = path(g, m);
      strokePolyline(state.polyline, COLORS.mean, 2.5);
    }
    ctx.restore();
    // points on top
    state.points.forEach(function (p) {
      ctx.beginPath();
      ctx.arc(sx(p[0]), sy(p[1]), 4.5, 0, 2 * Math.PI);
      ctx.fillStyle = COLORS.point;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    });
    $("n-points").textContent = String(state.points.length);
  }

  function updateLegend() {
    var r = state.response;
    if (!r) return;
    $("legend-mean").textContent = "mean: " + r.mean_label;
    $("legend-band").textContent = r.band_label;
    var f = r.finite;
    $("legend-finite-row").hidden = !f;
    $("legend-reached-row").hidden = !(f && f.steps !== r.t && r.n_points > 0);
    if (f) {
      var asked = r.t === "inf" ? "t = ∞" : "t = " + r.t;
      $("legend-finite").textContent = f.n_nets + " finite networks, width " + f.width +
        ", trained " + f.steps + (f.done ? "" : " of " + f.target_steps) + " GD steps" +
        (f.done ? " (t = " + f.t_reached + ")" : " — training…") +
        (f.done && f.truncated ? "; " + asked + " is capped at " + f.target_steps + " steps"
                               : "");
      $("legend-reached").textContent = "NTK mean at t = " + f.t_reached +
        " (the time the networks reached)";
    }
    var tm = r.timing || {};
    showStatus(r.n_points + " points · server " + (tm.total_ms || 0).toFixed(1) + " ms" +
      (tm.finite_ms ? " (finite nets " + tm.finite_ms.toFixed(0) + " ms)" : "") +
      " · round trip " + state.roundTripMs.toFixed(0) + " ms · η = " + r.lr.toPrecision(3), false);
    var ul = $("warnings");
    ul.textContent = "";
    (r.warnings || []).forEach(function (w) {
      var li = document.createElement("li");
      li.textContent = w;
      ul.appendChild(li);
    });
  }

  // -- the heatmap ---------------------------------------------------------------------
  // viridis, 9 anchors (matplotlib's values), linearly interpolated
  var VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  var LUT = (function () {
    var lut = new Uint8ClampedArray(256 * 3);
    for (var i = 0; i < 256; i++) {
      var u = i / 255 * (VIRIDIS.length - 1), k = Math.min(Math.floor(u), VIRIDIS.length - 2);
      var f = u - k;
      for (var c = 0; c < 3; c++) {
        lut[3 * i + c] = Math.round(VIRIDIS[k][c] * (1 - f) + VIRIDIS[k + 1][c] * f);
      }
    }
    return lut;
  })();

  function drawColorbar() {
    var cb = $("colorbar"), c = cb.getContext("2d");
    var img = c.createImageData(cb.width, cb.height);
    for (var x = 0; x < cb.width; x++) {
      var v = Math.round(x / (cb.width - 1) * 255);
      for (var y = 0; y < cb.height; y++) {
        var o = 4 * (y * cb.width + x);
        img.data[o] = LUT[3 * v]; img.data[o + 1] = LUT[3 * v + 1];
        img.data[o + 2] = LUT[3 * v + 2]; img.data[o + 3] = 255;
      }
    }
    c.putImageData(img, 0, 0);
  }

  function drawHeatmap() {
    var r = state.response;
    if (!r || !r.heatmap) return;
    var hm = r.heatmap, n = hm.n;
    var shown = $("heat-kind").value === "normalized" && hm.normalized ? hm.normalized : hm;
    var bytes = atob(shown.data);
    var off = document.createElement("canvas");
    off.width = n; off.height = n;
    var octx = off.getContext("2d"), img = octx.createImageData(n, n);
    for (var i = 0; i < n; i++) {          // row i = x'_i; drawn with x' increasing upwards
      for (var j = 0; j < n; j++) {
        var v = bytes.charCodeAt(i * n + j), o = 4 * ((n - 1 - i) * n + j);
        img.data[o] = LUT[3 * v]; img.data[o + 1] = LUT[3 * v + 1];
        img.data[o + 2] = LUT[3 * v + 2]; img.data[o + 3] = 255;
      }
    }
    octx.putImageData(img, 0, 0);
    var size = heat.width;
    hctx.imageSmoothingEnabled = false;
    hctx.clearRect(0, 0, size, size);
    hctx.drawImage(off, 0, 0, size, size);
    // ticks at the training x on both axes
    [["rgba(0,0,0,0.8)", 3], ["#ffffff", 1.2]].forEach(function (style) {
      hctx.strokeStyle = style[0];
      hctx.lineWidth = style[1];
      state.points.forEach(function (p) {
        var u = (p[0] - hm.x_min) / (hm.x_max - hm.x_min) * size;
        hctx.beginPath(); hctx.moveTo(u, size); hctx.lineTo(u, size - 9); hctx.stroke();
        hctx.beginPath(); hctx.moveTo(0, size - u); hctx.lineTo(9, size - u); hctx.stroke();
      });
    });
    $("heat-min").textContent = shown.vmin.toPrecision(3);
    $("heat-max").textContent = shown.vmax.toPrecision(3);
  }

  // -- interaction ---------------------------------------------------------------------
  function eventToLogical(ev) {
    var rect = plot.getBoundingClientRect();
    return [(ev.clientX - rect.left) * W / rect.width, (ev.clientY - rect.top) * H / rect.height];
  }
  plot.addEventListener("click", function (ev) {
    var q = eventToLogical(ev);
    if (ev.shiftKey) {
      if (!state.points.length) return;
      var best = -1, bestD = Infinity;
      state.points.forEach(function (p, i) {
        var d = Math.pow(sx(p[0]) - q[0], 2) + Math.pow(sy(p[1]) - q[1], 2);
        if (d < bestD) { bestD = d; best = i; }
      });
      state.points.splice(best, 1);
    } else {
      var x = dataX(q[0]), y = dataY(q[1]);
      if (x < X_MIN || x > X_MAX || y < Y_MIN || y > Y_MAX) return;  // outside the axes
      if (state.points.length >= MAX_POINTS) {
        showStatus("at most " + MAX_POINTS + " points", true);
        return;
      }
      state.points.push([Math.round(x * 1e4) / 1e4, Math.round(y * 1e4) / 1e4]);
    }
    draw();
    schedule(0);
  });

  $("controls").addEventListener("input", function () { syncOutputs(); schedule(); });
  $("controls").addEventListener("change", function () { syncOutputs(); schedule(); });
  $("heat-kind").addEventListener("change", drawHeatmap);
  $("clear").addEventListener("click", function () { state.points = []; draw(); schedule(0); });
  function loadExample() {
    var xs = [-2.6, -1.9, -1.2, -0.5, 0.3, 1.0, 1.8, 2.5];
    state.points = xs.map(function (x) {
      return [x, Math.round(1.5 * Math.sin(1.3 * x) * 1e4) / 1e4];
    });
  }
  $("example").addEventListener("click", function () { loadExample(); draw(); schedule(0); });

  // -- start ---------------------------------------------------------------------------
  function applyConfig(cfg) {
    var d = cfg.defaults || {};
    ["depth", "activation", "w_std", "b_std", "ridge", "band", "width", "n_nets"].forEach(function (k) {
      if (d[k] !== undefined && d[k] !== null) $(k).value = String(d[k]);
    });
    if (cfg.max_points) MAX_POINTS = cfg.max_points;
  }
  setupCanvas();
  drawColorbar();
  loadExample();            // the page opens with the sine example, fitted
  draw();
  syncOutputs();
  fetch("/api/config").then(function (r) { return r.json(); })
    .then(applyConfig).catch(function () { /* keep the HTML defaults */ })
    .then(function () { syncOutputs(); schedule(0); });
})();
