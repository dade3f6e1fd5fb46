/* phaseid dashboard: reads GET /v1/models once and the server-sent events of
 * GET /v1/events live; draws the latest frame with the simulated peak
 * positions of the predicted phases, a timeline of phase probabilities (ring
 * buffer of the last 2,000 results shown), the service's stats, the models,
 * and classifies dropped .xy files through POST /v1/models/{name}/classify.
 * Events only update state; drawing is coalesced into one
 * requestAnimationFrame callback, so thousands of frames per second cost a
 * JSON parse each and at most one redraw per display frame. */
(function () {
  "use strict";

  var TIMELINE_CAP = 2000; /* results kept for the timeline */
  var MAX_SERIES = 6; /* phases drawn on the timeline */
  var PALETTE = ["#4fb3ff", "#ffb347", "#7be07b", "#e88cff", "#ffe066", "#5ee6d6",
                 "#ff8c8c", "#b0a3ff", "#c6e377", "#f4a6c8"];

  var params = new URLSearchParams(window.location.search);
  var token = params.get("token");

  var state = {
    models: [], /* from /v1/models */
    phaseInfo: {}, /* "model/phase" -> phase object (peaks, formula) */
    ring: new Array(TIMELINE_CAP), /* results, oldest overwritten */
    ringStart: 0,
    ringLen: 0,
    results: 0, /* result events seen */
    unknownSeen: 0,
    latest: null, /* latest result event of the shown stream */
    latestFrame: null, /* latest event with a frame of the shown stream */
    streams: {}, /* name -> results seen */
    stream: "", /* selected stream, "" = the latest one */
    lastStream: "",
    stats: null,
    colors: {},
    nextColor: 0,
    dirty: { frame: true, timeline: true, stats: false, pred: false },
    connected: false,
  };
  window.phaseid = state; /* for tests and the console */

  function $(id) { return document.getElementById(id); }

  function withToken(url) {
    if (!token) return url;
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token);
  }

  function authHeaders(extra) {
    var h = extra || {};
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function colorOf(name) {
    if (!state.colors[name]) {
      state.colors[name] = PALETTE[state.nextColor % PALETTE.length];
      state.nextColor++;
    }
    return state.colors[name];
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || typeof x !== "number" || !isFinite(x)) return "-";
    return x.toFixed(digits);
  }

  function fmtCount(x) {
    if (typeof x !== "number" || !isFinite(x)) return "-";
    if (x >= 1e15) return (x / 1e15).toFixed(2) + " P";
    if (x >= 1e12) return (x / 1e12).toFixed(2) + " T";
    if (x >= 1e9) return (x / 1e9).toFixed(2) + " G";
    if (x >= 1e6) return (x / 1e6).toFixed(2) + " M";
    if (x >= 1e3) return (x / 1e3).toFixed(1) + " k";
    return String(Math.round(x));
  }

  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c];
    });
  }

  function schedule() {
    if (schedule.pending) return;
    schedule.pending = true;
    window.requestAnimationFrame(function () {
      schedule.pending = false;
      draw();
    });
  }

  /* ------------------------------------------------------------- models */

  function loadModels() {
    fetch(withToken("v1/models"), { headers: authHeaders() })
      .then(function (r) {
        if (!r.ok) throw new Error("GET /v1/models: " + r.status);
        return r.json();
      })
      .then(function (j) {
        state.models = j.models || [];
        state.phaseInfo = {};
        state.models.forEach(function (m) {
          (m.phases || []).forEach(function (p) {
            state.phaseInfo[m.name + "/" + p.name] = p;
            if (!state.phaseInfo["*/" + p.name]) state.phaseInfo["*/" + p.name] = p;
          });
        });
        renderModels();
        state.dirty.frame = true;
        schedule();
      })
      .catch(function (e) {
        $("models").textContent = "cannot load models: " + e.message;
        window.setTimeout(loadModels, 3000);
      });
  }

  function renderModels() {
    var box = $("models");
    var sel = $("drop-model");
    sel.innerHTML = "";
    if (!state.models.length) {
      box.textContent = "no models loaded";
      return;
    }
    box.classList.remove("muted");
    var html = "";
    state.models.forEach(function (m) {
      var opt = document.createElement("option");
      opt.value = opt.textContent = m.name;
      sel.appendChild(opt);
      var g = m.grid || {};
      var last = (g.x0 !== undefined && g.step !== undefined && g.n_points)
        ? g.x0 + g.step * (g.n_points - 1) : NaN;
      var wl = Array.isArray(g.wavelength_a) ? g.wavelength_a.join(", ") : g.wavelength_a;
      var cal = m.calibration || {};
      var unk = m.unknown || {};
      var tr = m.training || {};
      html += "<div class=\"model\" data-model=\"" + esc(m.name) + "\">" +
        "<div class=\"name\">" + esc(m.name) + "</div><dl>" +
        "<dt>modality</dt><dd>" + esc(m.modality) + " &middot; " + esc(m.head) + " head &middot; " + esc(m.device) + "</dd>" +
        "<dt>size</dt><dd>" + fmtCount(m.n_params) + " params &middot; " + fmtCount(m.flops_per_frame) + "FLOP/frame</dd>" +
        "<dt>grid</dt><dd class=\"grid\">" + esc(g.axis) + " " + fmt(g.x0, 3) + " &ndash; " + fmt(last, 3) +
        " step " + esc(typeof g.step === "number" ? Number(g.step.toPrecision(6)) : g.step) + " (" + esc(g.n_points) + " points), &lambda; " + esc(wl) + " &Aring;</dd>" +
        "<dt>calibration</dt><dd>T " + fmt(cal.temperature, 3) + " &middot; ECE " + fmt(cal.ece, 4) + "</dd>" +
        "<dt>unknown</dt><dd>" + esc(unk.score) + " &gt; " + fmt(unk.threshold, 3) +
        (typeof unk.auroc === "number" && isFinite(unk.auroc) ? " &middot; AUROC " + fmt(unk.auroc, 3) : "") + "</dd>" +
        "<dt>training</dt><dd>seed " + esc(tr.seed) + " &middot; " + esc(tr.steps) + " steps &times; " + esc(tr.batch) +
        " &middot; " + fmtCount(tr.flops) + "FLOP &middot; phaseid " + esc(tr.phaseid_version) +
        (tr.created ? " &middot; " + esc(tr.created) : "") + "</dd>" +
        (tr.library ? "<dt>library</dt><dd>" + esc(tr.library) + "</dd>" : "") +
        "</dl><details" + ((m.phases || []).length <= 40 ? " open" : "") + "><summary>" + (m.phases || []).length + " phases</summary><table>";
      (m.phases || []).forEach(function (p) {
        html += "<tr><td><span class=\"swatch\" style=\"background:" + colorOf(p.name) + "\"></span>" +
          esc(p.name) + "</td><td>" + esc(p.formula) + "</td><td class=\"muted\">" +
          ((p.peaks || []).length) + " peaks</td></tr>";
      });
      html += "</table></details></div>";
    });
    box.innerHTML = html;
  }

  /* ------------------------------------------------------------- events */

  function connect() {
    var es = new EventSource(withToken("v1/events"));
    es.onopen = function () {
      state.connected = true;
      setStatus("live", "status-live");
    };
    es.onerror = function () {
      state.connected = false;
      /* EventSource reconnects by itself while readyState is CONNECTING. */
      setStatus(es.readyState === 2 ? "disconnected" : "reconnecting",
                es.readyState === 2 ? "status-down" : "status-connecting");
      if (es.readyState === 2) window.setTimeout(connect, 3000);
    };
    es.addEventListener("result", function (ev) {
      var r;
      try { r = JSON.parse(ev.data); } catch (e) { return; }
      onResult(r);
    });
    es.addEventListener("stats", function (ev) {
      try { state.stats = JSON.parse(ev.data); } catch (e) { return; }
      state.dirty.stats = true;
      schedule();
    });
  }

  function setStatus(text, cls) {
    var s = $("status");
    s.textContent = text;
    s.className = "status " + cls;
  }

  function onResult(r) {
    state.results++;
    if (r.unknown) state.unknownSeen++;
    var name = r.stream || "(request)";
    if (!(name in state.streams)) {
      state.streams[name] = 0;
      var opt = document.createElement("option");
      opt.value = opt.textContent = name;
      $("stream-select").appendChild(opt);
    }
    state.streams[name]++;
    state.lastStream = name;
    /* Keep the ring small: only what the timeline draws. */
    var probs = {};
    var fracs = null;
    (r.phases || []).forEach(function (p) {
      probs[p.name] = p.probability;
      if (typeof p.fraction === "number" && isFinite(p.fraction)) {
        fracs = fracs || {};
        fracs[p.name] = p.fraction;
      }
    });
    var item = {
      seq: r.seq, stream: name, model: r.model, unknown: !!r.unknown, probs: probs, fracs: fracs,
      top: r.phases && r.phases.length ? r.phases[0].name : null,
    };
    var i = (state.ringStart + state.ringLen) % TIMELINE_CAP;
    state.ring[i] = item;
    if (state.ringLen < TIMELINE_CAP) state.ringLen++;
    else state.ringStart = (state.ringStart + 1) % TIMELINE_CAP;

    var shown = state.stream || name;
    if (name === shown) {
      state.latest = r;
      if (r.frame && r.frame.y) state.latestFrame = r;
      state.dirty.frame = state.dirty.pred = true;
    }
    state.dirty.timeline = true;
    schedule();
  }

  /* ------------------------------------------------------------ drawing */

  /* Size a canvas's backing store to its CSS box (crisp on HiDPI). */
  function prepCanvas(c) {
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(50, Math.round(c.clientWidth * dpr));
    var h = Math.max(50, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    var ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx: ctx, w: c.clientWidth, h: c.clientHeight };
  }

  function axes(ctx, x0, y0, x1, y1) {
    ctx.strokeStyle = "#2a3440";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x0, y1);
    ctx.lineTo(x1, y1);
    ctx.stroke();
  }

  function phaseInfo(model, name) {
    return state.phaseInfo[model + "/" + name] || state.phaseInfo["*/" + name] || null;
  }

  /* Pattern y on axis x (arrays) with the sticks of `phases` (result
   * entries) below it. */
  function drawPattern(canvas, xs, ys, model, phases, title) {
    var c = prepCanvas(canvas), ctx = c.ctx, W = c.w, H = c.h;
    var L = 44, R = 10, T = 14, B = 26;
    ctx.clearRect(0, 0, W, H);
    if (!xs || !xs.length) {
      ctx.fillStyle = "#8a96a3";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText(title || "waiting for a frame", L + 10, H / 2);
      return;
    }
    var xmin = xs[0], xmax = xs[xs.length - 1];
    var ymin = Infinity, ymax = -Infinity;
    for (var i = 0; i < ys.length; i++) {
      if (ys[i] < ymin) ymin = ys[i];
      if (ys[i] > ymax) ymax = ys[i];
    }
    if (!(ymax > ymin)) { ymax = ymin + 1; }
    var stickBand = phases && phases.length ? 0.28 : 0;
    var plotH = H - T - B;
    var curveH = plotH * (1 - stickBand);
    function px(x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); }
    function py(y) { return T + curveH - (y - ymin) / (ymax - ymin) * curveH; }
    axes(ctx, L, T, W - R, H - B);
    /* x ticks */
    ctx.fillStyle = "#8a96a3";
    ctx.font = "11px system-ui, sans-serif";
    var span = xmax - xmin, stepT = Math.pow(10, Math.floor(Math.log10(span / 6)));
    if (span / stepT > 12) stepT *= 5; else if (span / stepT > 6) stepT *= 2;
    for (var t = Math.ceil(xmin / stepT) * stepT; t <= xmax; t += stepT) {
      var X = px(t);
      ctx.fillRect(X, H - B, 1, 4);
      ctx.fillText(String(Math.round(t * 100) / 100), X - 8, H - B + 15);
    }
    ctx.save();
    ctx.translate(12, T + curveH / 2 + 20);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("intensity", 0, 0);
    ctx.restore();
    ctx.fillText("2\u03b8 (deg)", W - R - 50, H - 4);
    /* sticks of the predicted phases, one row each */
    if (phases && phases.length) {
      var rowH = plotH * stickBand / phases.length;
      phases.forEach(function (p, k) {
        var info = phaseInfo(model, p.name);
        var col = colorOf(p.name);
        var base = T + curveH + rowH * (k + 1);
        ctx.strokeStyle = col;
        ctx.globalAlpha = 0.35 + 0.65 * Math.min(1, Math.max(0, p.probability || 0));
        ctx.beginPath();
        (info && info.peaks ? info.peaks : []).forEach(function (pk) {
          if (pk[0] < xmin || pk[0] > xmax) return;
          var X = px(pk[0]);
          ctx.moveTo(X, base);
          ctx.lineTo(X, base - Math.max(2, rowH * 0.9 * pk[1] / 100));
          /* faint guide up through the pattern */
          if (pk[1] >= 20) {
            ctx.moveTo(X, T + curveH);
            ctx.lineTo(X, T);
          }
        });
        ctx.lineWidth = 1;
        ctx.stroke();
        ctx.globalAlpha = 1;
      });
      /* guides drawn above are faint: redraw the pattern on top */
    }
    ctx.strokeStyle = "#d8dee6";
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    /* at most one vertex per pixel column pair: min/max decimation */
    var cols = Math.max(50, Math.floor(W - L - R));
    var per = Math.max(1, Math.floor(ys.length / cols));
    for (var j = 0; j < ys.length; j += per) {
      var lo = Infinity, hi = -Infinity;
      for (var m = j; m < Math.min(ys.length, j + per); m++) {
        if (ys[m] < lo) lo = ys[m];
        if (ys[m] > hi) hi = ys[m];
      }
      var Xj = px(xs[j]);
      if (j === 0) ctx.moveTo(Xj, py(lo)); else ctx.lineTo(Xj, py(lo));
      if (hi !== lo) ctx.lineTo(Xj, py(hi));
    }
    ctx.stroke();
  }

  function drawFrame() {
    var r = state.latestFrame;
    var canvas = $("frame-plot");
    if (!r) {
      drawPattern(canvas, null, null, null, null, "waiting for a frame (frames come with ~10 results/s)");
      return;
    }
    var f = r.frame, n = f.y.length, xs = new Array(n);
    for (var i = 0; i < n; i++) xs[i] = f.x0 + f.step * i;
    var phases = (r.phases || []).filter(function (p, k) { return k === 0 || p.probability >= 0.05; });
    drawPattern(canvas, xs, f.y, r.model, phases);
    canvas.dataset.seq = r.seq;
    var leg = "";
    phases.forEach(function (p) {
      var info = phaseInfo(r.model, p.name);
      leg += "<span><span class=\"swatch\" style=\"background:" + colorOf(p.name) + "\"></span>" +
        esc(p.name) + (info && info.formula ? " (" + esc(info.formula) + ")" : "") + " " +
        fmt(p.probability, 3) + (info && info.peaks && info.peaks.length ? "" : " &middot; no peaks") + "</span>";
    });
    $("frame-legend").innerHTML = leg;
  }

  function drawPrediction() {
    var r = state.latest;
    if (!r) return;
    var top = r.phases && r.phases.length ? r.phases[0] : null;
    $("top-phase").textContent = top ? top.name : "-";
    $("top-phase").style.color = top ? colorOf(top.name) : "";
    $("unknown-flag").className = "badge" + (r.unknown ? "" : " badge-hidden");
    $("unknown-flag").textContent = "UNKNOWN" + (typeof r.unknown_score === "number" ? " " + r.unknown_score.toFixed(2) : "");
    var html = "";
    (r.phases || []).forEach(function (p) {
      var pr = Math.max(0, Math.min(1, p.probability || 0));
      html += "<li><span>" + esc(p.name) + "</span><span class=\"bar\"><span style=\"width:" +
        (pr * 100).toFixed(1) + "%;background:" + colorOf(p.name) + "\"></span></span><span>" +
        fmt(p.probability, 3) + "</span></li>";
    });
    $("phase-list").innerHTML = html;
    $("frame-info").textContent = (r.stream || "request") + " \u00b7 seq " + r.seq + " \u00b7 " +
      r.model + " \u00b7 " + fmt(r.latency_ms, 2) + " ms";
  }

  function drawTimeline() {
    var canvas = $("timeline");
    var c = prepCanvas(canvas), ctx = c.ctx, W = c.w, H = c.h;
    var L = 44, R = 10, T = 10, B = 36, band = 10;
    ctx.clearRect(0, 0, W, H);
    var shown = state.stream || state.lastStream;
    var pts = [];
    for (var i = 0; i < state.ringLen; i++) {
      var it = state.ring[(state.ringStart + i) % TIMELINE_CAP];
      if (it.stream === shown) pts.push(it);
    }
    canvas.dataset.points = String(pts.length);
    axes(ctx, L, T, W - R, H - B);
    ctx.fillStyle = "#8a96a3";
    ctx.font = "11px system-ui, sans-serif";
    [0, 0.5, 1].forEach(function (v) {
      var Y = T + (1 - v) * (H - T - B - band);
      ctx.fillText(v.toFixed(1), L - 26, Y + 4);
      ctx.fillStyle = "#1f2833";
      ctx.fillRect(L + 1, Y, W - L - R, 1);
      ctx.fillStyle = "#8a96a3";
    });
    if (!pts.length) {
      ctx.fillText("waiting for results", L + 10, H / 2);
      $("timeline-legend").innerHTML = "";
      return;
    }
    /* sequence numbers may restart (a new stream run): order by arrival,
     * label by seq */
    var s0 = pts[0].seq, s1 = pts[pts.length - 1].seq;
    var monotone = true;
    for (var k = 1; k < pts.length; k++) if (pts[k].seq < pts[k - 1].seq) { monotone = false; break; }
    function px(idx) {
      if (monotone && s1 > s0) return L + (pts[idx].seq - s0) / (s1 - s0) * (W - L - R);
      return L + (pts.length > 1 ? idx / (pts.length - 1) : 0) * (W - L - R);
    }
    var plotH = H - T - B - band;
    function py(p) { return T + (1 - p) * plotH; }
    /* series: the phases most often on top */
    var count = {};
    pts.forEach(function (p) { if (p.top) count[p.top] = (count[p.top] || 0) + 1; });
    var names = Object.keys(count).sort(function (a, b) { return count[b] - count[a]; }).slice(0, MAX_SERIES);
    names.forEach(function (nm) {
      var col = colorOf(nm);
      ctx.strokeStyle = col;
      ctx.lineWidth = 1.5;
      ctx.setLineDash([]);
      ctx.beginPath();
      pts.forEach(function (p, idx) {
        var v = p.probs[nm] || 0;
        if (idx === 0) ctx.moveTo(px(idx), py(v)); else ctx.lineTo(px(idx), py(v));
      });
      ctx.stroke();
      var anyFrac = pts.some(function (p) { return p.fracs && nm in p.fracs; });
      if (anyFrac) {
        ctx.setLineDash([2, 3]);
        ctx.lineWidth = 1;
        ctx.beginPath();
        var started = false;
        pts.forEach(function (p, idx) {
          var v = p.fracs && nm in p.fracs ? p.fracs[nm] : (p.fracs ? 0 : null);
          if (v === null) { started = false; return; }
          if (!started) { ctx.moveTo(px(idx), py(v)); started = true; } else ctx.lineTo(px(idx), py(v));
        });
        ctx.stroke();
        ctx.setLineDash([]);
      }
    });
    /* unknown frames: red ticks in the band under the plot */
    ctx.fillStyle = "#ff5a5f";
    var nUnk = 0;
    pts.forEach(function (p, idx) {
      if (!p.unknown) return;
      nUnk++;
      ctx.fillRect(px(idx) - 1, T + plotH + 2, 2, band - 2);
    });
    canvas.dataset.unknown = String(nUnk);
    /* seq labels */
    ctx.fillStyle = "#8a96a3";
    ctx.fillText("seq " + s0, L, H - B + 22);
    var lab = "seq " + s1;
    ctx.fillText(lab, W - R - ctx.measureText(lab).width, H - B + 22);
    ctx.fillText("unknown", 2, T + plotH + band);
    var leg = "";
    names.forEach(function (nm) {
      leg += "<span><span class=\"swatch\" style=\"background:" + colorOf(nm) + "\"></span>" + esc(nm) + "</span>";
    });
    leg += "<span><span class=\"swatch\" style=\"background:#ff5a5f\"></span>unknown (" + nUnk + ")</span>";
    leg += "<span>" + pts.length + " results shown" + (state.streams[shown] > pts.length ? " of " + state.streams[shown] : "") + "</span>";
    $("timeline-legend").innerHTML = leg;
  }

  function drawStats() {
    var s = state.stats;
    if (!s) return;
    var lat = s.latency_ms || {};
    $("stat-fps").textContent = fmt(s.frames_per_s, s.frames_per_s >= 100 ? 0 : 1);
    $("stat-p50").textContent = fmt(lat.p50, 2) + " ms";
    $("stat-p90").textContent = fmt(lat.p90, 2) + " ms";
    $("stat-p99").textContent = fmt(lat.p99, 2) + " ms";
    $("stat-batch").textContent = fmt(s.batch_mean, 1);
    $("stat-queue").textContent = s.queue_depth === undefined ? "-" : String(s.queue_depth);
    $("stat-device").textContent = s.device || "-";
    $("stat-device").title = s.device || "";
    var g = s.gpu;
    $("stat-gpu").textContent = g ? (g.name ? g.name + ": " : "") + fmt(g.power_w, 0) + " W \u00b7 " +
      fmt(g.frames_per_joule, 1) + " frames/J" : "no GPU";
  }

  function draw() {
    var d = state.dirty;
    if (d.frame) drawFrame();
    if (d.pred) drawPrediction();
    if (d.timeline) drawTimeline();
    if (d.stats) drawStats();
    $("stat-results").textContent = fmtCount(state.results);
    state.dirty = { frame: false, timeline: false, stats: false, pred: false };
  }

  /* ---------------------------------------------------------- drop zone */

  function parseXY(text) {
    var xs = [], ys = [];
    text.split(/\r?\n/).forEach(function (line) {
      line = line.trim();
      if (!line || /^[#!;%@a-df-zA-DF-Z"]/.test(line)) return;
      var f = line.split(/[\s,;]+/);
      if (f.length < 2) return;
      var x = parseFloat(f[0]), y = parseFloat(f[1]);
      if (isFinite(x) && isFinite(y)) { xs.push(x); ys.push(y); }
    });
    return { x: xs, y: ys };
  }

  function classifyFile(file) {
    var model = $("drop-model").value;
    var out = $("drop-result");
    if (!model) {
      out.innerHTML = "<span class=\"err\">no model loaded</span>";
      return;
    }
    var wl = $("drop-wavelength").value.trim();
    out.textContent = "classifying " + file.name + " with " + model + " ...";
    var reader = new FileReader();
    reader.onload = function () {
      var text = reader.result;
      var url = "v1/models/" + encodeURIComponent(model) + "/classify" +
        (wl ? "?wavelength=" + encodeURIComponent(wl) : "");
      fetch(withToken(url), {
        method: "POST", body: text, headers: authHeaders({ "Content-Type": "text/plain" }),
      })
        .then(function (r) {
          return r.json().then(function (j) { return { ok: r.ok, status: r.status, j: j }; });
        })
        .then(function (res) {
          if (!res.ok) throw new Error(res.j && res.j.error ? res.j.error : "HTTP " + res.status);
          var j = res.j;
          var html = "<b>" + esc(file.name) + "</b>" +
            (j.unknown ? " <span class=\"badge\">UNKNOWN</span>" : "") +
            " <span class=\"muted\">unknown score " + fmt(j.unknown_score, 2) + "</span><ol class=\"phase-list\">";
          (j.phases || []).forEach(function (p) {
            var pr = Math.max(0, Math.min(1, p.probability || 0));
            html += "<li><span>" + esc(p.name) + (p.formula ? " <span class=\"muted\">" + esc(p.formula) + "</span>" : "") +
              "</span><span class=\"bar\"><span style=\"width:" + (pr * 100).toFixed(1) + "%;background:" +
              colorOf(p.name) + "\"></span></span><span>" + fmt(p.probability, 3) + "</span></li>";
          });
          out.innerHTML = html + "</ol>";
          out.classList.remove("muted");
          var xy = parseXY(text);
          var c = $("drop-plot");
          c.classList.remove("hidden");
          drawPattern(c, xy.x, xy.y, model, (j.phases || []).slice(0, 2));
        })
        .catch(function (e) {
          out.innerHTML = "<span class=\"err\">" + esc(file.name) + ": " + esc(e.message) + "</span>";
        });
    };
    reader.readAsText(file);
  }

  function setupDrop() {
    var dz = $("dropzone"), input = $("drop-input");
    dz.addEventListener("click", function () { input.click(); });
    dz.addEventListener("keydown", function (e) { if (e.key === "Enter") input.click(); });
    input.addEventListener("change", function () {
      if (input.files && input.files[0]) classifyFile(input.files[0]);
      input.value = "";
    });
    ["dragenter", "dragover"].forEach(function (t) {
      dz.addEventListener(t, function (e) { e.preventDefault(); dz.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      dz.addEventListener(t, function (e) { e.preventDefault(); dz.classList.remove("over"); });
    });
    dz.addEventListener("drop", function (e) {
      var f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (f) classifyFile(f);
    });
    /* dropping elsewhere must not navigate away from the dashboard */
    window.addEventListener("dragover", function (e) { e.preventDefault(); });
    window.addEventListener("drop", function (e) { e.preventDefault(); });
  }

  function start() {
    $("stream-select").addEventListener("change", function (e) {
      state.stream = e.target.value;
      state.latest = null;
      state.latestFrame = null; /* the selected stream's next results fill them */
      state.dirty = { frame: true, timeline: true, stats: true, pred: true };
      schedule();
    });
    window.addEventListener("resize", function () {
      state.dirty = { frame: true, timeline: true, stats: true, pred: true };
      schedule();
    });
    setupDrop();
    loadModels();
    connect();
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
