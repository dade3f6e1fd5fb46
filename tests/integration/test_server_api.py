#!/usr/bin/env python3
"""`phaseid serve` end to end: every endpoint of docs/http-api.md on a real
server bound to 127.0.0.1, with a small model trained in a temp dir.

1. KServe v2: /v2, health live/ready, model metadata (also /versions/1),
   model ready, config, statistics, repository index; unknown routes 404,
   wrong methods 405, unknown model 404, names that try to leave DIR 400/404.
2. tritonclient[http], unchanged, in JSON and binary modes: server and model
   metadata and config, inference of FP32 and UINT16 batches; both modes give
   the same numbers; probabilities sum to 1, top_phases follow the
   probabilities, unknown == (score > the model's threshold); outputs subset
   and top_k.
3. The same pattern three ways agrees: `phaseid classify` (CLI) and POST
   /v1/models/NAME/classify give the same JSON object; infer with an axis
   input gives the same probabilities.
4. /v1/models: fields, reference peaks inside the grid (from the sticks the
   model file carries; Si 111 at its published angle).
5. A small stream with a NaN frame, a flat frame and a truncated tail: one
   line per frame in order, error lines where due, the truncation line last.
6. /v1/events: a stats event and result events of the stream (with its id).
7. /metrics: counters match what was sent; `promtool check metrics` passes
   (skipped when promtool is absent).
8. Dashboard: GET / and /web/* serve the embedded files (the source files
   when server/web/ exists).
9. Token: a second server with --token-file: 401 without it, 200 with it,
   health open, ?token= for events; binding 0.0.0.0 without a token refused.
10. A repository with a broken model file: the others serve, readiness 503,
   the index says UNAVAILABLE.
11. SIGTERM: exit 0.

Run by ctest with PHASEID_BIN set. Exits 1 listing failures, 77 when the
tritonclient/numpy packages are missing.
"""
import http.client as httpclient
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from checks import check, failures, write_xy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import (BIN, TINY_POINTS, http, json_error, make_tiny_model,  # noqa: E402
                            server_log, start_server, stop_server)

try:
    import numpy as np
    import tritonclient.http as th
except ImportError as e:
    print("SKIP: needs numpy and tritonclient[http] (%s)" % e)
    sys.exit(77)


def get_json(base, path, **kw):
    st, h, b = http(base, "GET", path, **kw)
    try:
        return st, json.loads(b) if b else None
    except ValueError:
        return st, None


def patterns(rng, b, n=TINY_POINTS):
    """Smooth random patterns with a few peaks on a floor (not flat)."""
    x = np.arange(n)
    out = np.full((b, n), 20.0)
    for i in range(b):
        for _ in range(6):
            c = rng.uniform(0, n)
            out[i] += rng.uniform(50, 500) * np.exp(-0.5 * ((x - c) / 3.0) ** 2)
    return out


def kserve_routes(base):
    st, o = get_json(base, "/v2")
    check(st == 200 and o["name"] == "phaseid" and "binary_tensor_data" in o["extensions"],
          "/v2 %s %s" % (st, o))
    check(http(base, "GET", "/v2/health/live")[0] == 200, "live")
    check(http(base, "GET", "/v2/health/ready")[0] == 200, "ready")
    for p in ("/v2/models/xrd-tiny", "/v2/models/xrd-tiny/versions/1"):
        st, o = get_json(base, p)
        check(st == 200 and o["name"] == "xrd-tiny" and o["versions"] == ["1"]
              and o["inputs"][0]["shape"] == [-1, TINY_POINTS]
              and [t["name"] for t in o["outputs"]] == ["probabilities", "top_phases",
                                                          "fractions", "unknown_score",
                                                          "residual", "missing", "unknown"],
              "metadata %s" % p)
    check(http(base, "GET", "/v2/models/xrd-tiny/ready")[0] == 200, "model ready")
    check(http(base, "GET", "/v2/models/xrd-tiny/versions/1/ready")[0] == 200, "v1 ready")
    st, o = get_json(base, "/v2/models/xrd-tiny/config")
    check(st == 200 and o["max_batch_size"] >= 64 and o["input"][0]["dims"] == [TINY_POINTS]
          and "dynamic_batching" in o, "config %s" % o)
    st, h, b = http(base, "POST", "/v2/repository/index", b"{}")
    check(st == 200 and json.loads(b) == [{"name": "xrd-tiny", "version": "1", "state": "READY"}],
          "index %s %s" % (st, b))
    # refusals, each with a JSON error body
    for method, path, want in [("GET", "/nope", 404), ("GET", "/v2/models/nope", 404),
                               ("GET", "/v2/models/nope/ready", 404),
                               ("GET", "/v2/models/xrd-tiny/versions/2", 404),
                               ("POST", "/v2/models/nope/infer", 404),
                               ("GET", "/v2/models/xrd-tiny/infer", 405),
                               ("POST", "/v2/health/live", 405),
                               ("GET", "/v2/models/..%2F..%2Fetc/ready", 404),
                               ("GET", "/v2/models/%2e%2e", 400),
                               ("GET", "/v2/models/a%20b", 400),
                               ("POST", "/v1/models/../classify", 400)]:
        st, h, b = http(base, method, path, b"" if method == "POST" else None)
        check(st == want and json_error(b), "%s %s: %s %s (want %d)" % (method, path, st, b, want))


def triton_checks(host, rng, threshold, phase_names, residual_threshold=None,
                  missing_threshold=None):
    c = th.InferenceServerClient(host)
    check(c.is_server_live() and c.is_server_ready() and c.is_model_ready("xrd-tiny"),
          "tritonclient health")
    check(c.get_server_metadata()["name"] == "phaseid", "tritonclient server metadata")
    md = c.get_model_metadata("xrd-tiny")
    check(md["inputs"][0]["name"] == "patterns", "tritonclient model metadata")
    check(c.get_model_config("xrd-tiny")["max_batch_size"] >= 64, "tritonclient config")
    check(c.get_model_repository_index()[0]["name"] == "xrd-tiny", "tritonclient index")
    x = patterns(rng, 5).astype(np.float32)
    names = ["probabilities", "top_phases", "fractions", "unknown_score", "residual", "missing",
             "unknown"]
    res = {}
    for binary in (False, True):
        for dtype, arr in (("FP32", x), ("UINT16", np.round(x).astype(np.uint16))):
            inp = th.InferInput("patterns", list(arr.shape), dtype)
            inp.set_data_from_numpy(arr, binary_data=binary)
            outs = [th.InferRequestedOutput(n, binary_data=binary) for n in names]
            r = c.infer("xrd-tiny", [inp], outputs=outs, request_id="req-%s" % binary)
            check(r.get_response()["id"] == "req-%s" % binary, "id echoed")
            res[(binary, dtype)] = {n: r.as_numpy(n) for n in names}
    for key, o in res.items():
        p = o["probabilities"]
        check(p.shape == (5, len(phase_names)), "%s prob shape %s" % (key, p.shape))
        check(np.allclose(p.sum(1), 1, atol=1e-4), "%s prob sums %s" % (key, p.sum(1)))
        top = [[t.decode() if isinstance(t, bytes) else t for t in row] for row in o["top_phases"]]
        check(np.asarray(top).shape == (5, 3), "%s top shape" % (key,))
        for i in range(5):
            order = np.argsort(-p[i], kind="stable")
            check(top[i][0] == phase_names[order[0]], "%s top phase %s vs argmax %s"
                  % (key, top[i][0], phase_names[order[0]]))
            # unknown: the energy score above its threshold, or the physics
            # residual or missing-reflection fraction above their own (NaN
            # when the model has no residual check)
            rv, mv = float(o["residual"][i]), float(o["missing"][i])
            by_res = residual_threshold is not None and rv == rv and rv > residual_threshold
            by_miss = missing_threshold is not None and mv == mv and mv > missing_threshold
            check(bool(o["unknown"][i]) == (float(o["unknown_score"][i]) > threshold or by_res
                                            or by_miss),
                  "%s unknown flag (score %g, residual %g, missing %g)"
                  % (key, o["unknown_score"][i], rv, mv))
        f = o["fractions"]
        check(np.all(f[np.arange(5), np.argmax(p, 1)] == 1.0), "%s fraction of top = 1" % (key,))
    # JSON and binary agree exactly; FP32 and UINT16 (same rounded values) closely
    for dtype in ("FP32", "UINT16"):
        a, b = res[(False, dtype)], res[(True, dtype)]
        check(np.array_equal(a["probabilities"], b["probabilities"]),
              "JSON vs binary probabilities (%s)" % dtype)
        check(np.array_equal(a["unknown"], b["unknown"]), "JSON vs binary unknown (%s)" % dtype)
    check(np.allclose(res[(True, "FP32")]["probabilities"], res[(True, "UINT16")]["probabilities"],
                      atol=2e-3), "FP32 vs UINT16 counts")
    # outputs subset and top_k
    inp = th.InferInput("patterns", [2, TINY_POINTS], "FP32")
    inp.set_data_from_numpy(x[:2], binary_data=True)
    r = c.infer("xrd-tiny", [inp], outputs=[th.InferRequestedOutput("top_phases")],
                parameters={"top_k": 5})
    check([o["name"] for o in r.get_response()["outputs"]] == ["top_phases"], "outputs subset")
    check(r.as_numpy("top_phases").shape == (2, 5), "top_k 5")
    c.close()


def classify_three_ways(base, tmp):
    xy = os.path.join(tmp, "p.xy")
    write_xy(xy, [(27.3, 100), (31.7, 60), (45.4, 80), (56.5, 30)])
    model = os.path.join(tmp, "models", "xrd-tiny.h5")
    p = subprocess.run([BIN, "classify", "--model", model, "--device", "cpu", xy],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "phaseid classify: %s" % p.stderr)
    cli = json.loads(p.stdout)[0]
    body = open(xy, "rb").read()
    st, h, b = http(base, "POST", "/v1/models/xrd-tiny/classify", body)
    check(st == 200, "classify status %s %s" % (st, b))
    srv = json.loads(b)
    cli["file"] = "request"
    check(srv == cli, "/v1 classify differs from the CLI:\n%s\n%s" % (srv, cli))
    check(h.get("Content-Type", "").startswith("application/json"), "classify content type")
    # wavelength query: the same pattern said to be at MoKa1 lands elsewhere
    st, h, b = http(base, "POST", "/v1/models/xrd-tiny/classify?wavelength=CuKa1", body)
    check(st == 200, "classify with wavelength %s" % st)
    st, h, b = http(base, "POST", "/v1/models/xrd-tiny/classify?wavelength=banana", body)
    check(st == 400 and json_error(b), "bad wavelength %s" % st)
    st, h, b = http(base, "POST", "/v1/models/xrd-tiny/classify", b"not a pattern\n")
    check(st == 400 and json_error(b), "bad xy %s %s" % (st, b))
    # infer with an axis input, same numbers
    rows = [line.split() for line in open(xy) if not line.startswith("#")]
    ax = [float(r[0]) for r in rows]
    y = [float(r[1]) for r in rows]
    req = {"inputs": [{"name": "patterns", "shape": [1, len(y)], "datatype": "FP32", "data": y},
                      {"name": "axis", "shape": [len(ax)], "datatype": "FP32", "data": ax}],
           "outputs": [{"name": "probabilities"}, {"name": "top_phases"}]}
    st, h, b = http(base, "POST", "/v2/models/xrd-tiny/infer", json.dumps(req).encode())
    check(st == 200, "infer with axis %s %s" % (st, b[:200]))
    if st == 200:
        o = json.loads(b)["outputs"]
        top = o[1]["data"]
        check(top[0] == cli["phases"][0]["name"], "axis infer top %s vs %s"
              % (top[0], cli["phases"][0]["name"]))
        names = [ph["name"] for ph in cli["phases"]]
        # probabilities by phase name from the CLI's three
        check(abs(max(o[0]["data"]) - cli["phases"][0]["probability"]) < 1e-5,
              "axis infer probability %s vs %s" % (max(o[0]["data"]), cli["phases"][0]))
        check(top == names, "axis infer ranking %s vs %s" % (top, names))


def v1_models(base):
    st, o = get_json(base, "/v1/models")
    check(st == 200 and len(o["models"]) == 1, "/v1/models %s" % st)
    if st != 200:
        return None
    m = o["models"][0]
    for k in ("name", "modality", "device", "head", "n_params", "flops_per_frame", "grid",
              "phases", "calibration", "unknown", "training"):
        check(k in m, "/v1/models lacks %s" % k)
    st_ = m["calibration"].get("set_thresholds", "missing")
    check(st_ is None or (isinstance(st_, list) and all(0 < t < 1 for t in st_)),
          "calibration.set_thresholds %s" % (st_,))
    g = m["grid"]
    check(g["axis"] == "2theta" and g["n_points"] == TINY_POINTS and abs(g["x0"] - 10) < 1e-9,
          "grid %s" % g)
    lo, hi = g["x0"], g["x0"] + (g["n_points"] - 1) * g["step"]
    with_peaks = 0
    for ph in m["phases"]:
        pk = ph["peaks"]
        check(len(pk) <= 40, "%s: %d peaks" % (ph["name"], len(pk)))
        if pk:
            with_peaks += 1
            check(all(lo - 1e-6 <= a <= hi + 1e-6 and 1 <= i <= 100 for a, i in pk),
                  "%s peaks out of range" % ph["name"])
            check(max(i for _, i in pk) == 100, "%s strongest peak 100" % ph["name"])
            check([a for a, _ in pk] == sorted(a for a, _ in pk), "%s peaks sorted" % ph["name"])
    check(with_peaks >= len(m["phases"]) - 2, "peaks for %d of %d phases"
          % (with_peaks, len(m["phases"])))
    # The model file carries the sticks (a trained model stores them): Si's
    # strongest line, 111, at 28.443 deg for Cu K-alpha1 (ICDD PDF 27-1402).
    si = [ph for ph in m["phases"] if ph["name"] == "Si_227"]
    check(bool(si) and si[0]["peaks"], "Si_227 and its peaks listed")
    if si and si[0]["peaks"]:
        a, i = max(si[0]["peaks"], key=lambda p: p[1])
        check(abs(a - 28.443) < 0.02 and i == 100, "Si 111 at %.4f deg (28.443)" % a)
    check(m["training"]["steps"] == 60, "training steps %s" % m["training"])
    check(m["unknown"]["auroc"] is None, "AUROC of a model with no held-out phases: %s (null)"
          % m["unknown"]["auroc"])
    return m


def stream_small(base, rng):
    x = np.round(patterns(rng, 20)).astype(np.uint16)
    frames = [row.tobytes() for row in x]
    f32 = np.asarray(x, dtype=np.float32)
    f32[3, 100] = np.nan
    f32[7, :] = 5.0  # flat
    body = b"".join(row.tobytes() for row in f32) + b"\x00" * 100  # truncated tail
    c = http_client(base)
    c.request("POST", "/v1/models/xrd-tiny/stream", body=body,
              headers={"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "FP32",
                       "X-Seq-Start": "1000", "X-Stream-Id": "small-1"})
    r = c.getresponse()
    lines = r.read().decode().splitlines()
    check(r.status == 200 and r.getheader("Content-Type") == "application/x-ndjson",
          "stream status %s" % r.status)
    objs = [json.loads(line) for line in lines]
    check(len(objs) == 21, "stream lines %d (20 frames + truncation)" % len(objs))
    check([o.get("seq") for o in objs[:20]] == list(range(1000, 1020)), "stream seqs")
    check("error" in objs[3] and "non-finite" in objs[3]["error"], "NaN frame line %s" % objs[3])
    check("error" in objs[7] and "flat" in objs[7]["error"], "flat frame line %s" % objs[7])
    check(all("phases" in o and len(o["phases"]) == 3 for i, o in enumerate(objs[:20])
              if i not in (3, 7)), "result lines")
    check("error" in objs[20] and "truncated" in objs[20]["error"] and "seq" not in objs[20],
          "truncation line %s" % objs[20])
    c.close()
    # UINT16 in chunks; header errors are 400 with JSON
    def gen():
        for fr in frames:
            yield fr
    c = http_client(base)
    c.request("POST", "/v1/models/xrd-tiny/stream", body=gen(), encode_chunked=True,
              headers={"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "UINT16",
                       "Transfer-Encoding": "chunked"})
    r = c.getresponse()
    lines = r.read().decode().splitlines()
    check(r.status == 200 and [json.loads(s)["seq"] for s in lines] == list(range(20)),
          "chunked UINT16 stream")
    c.close()
    for hdr, why in [({"X-Frame-Size": "7", "X-Frame-Dtype": "FP32"}, "frame size"),
                     ({"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "FP64"}, "dtype"),
                     ({"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "FP32",
                       "X-Stream-Id": "a/b"}, "stream id"),
                     ({"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "FP32",
                       "X-Seq-Start": "-4"}, "seq start")]:
        st, h, b = http(base, "POST", "/v1/models/xrd-tiny/stream", frames[0], headers=hdr)
        check(st == 400 and json_error(b), "stream %s: %s %s" % (why, st, b))


def http_client(base, timeout=120):
    host, port = base.split("//")[1].split(":")
    return httpclient.HTTPConnection(host, int(port), timeout=timeout)


def events_check(base, rng):
    """Read /v1/events while a stream runs: stats once a second, result events."""
    got = []
    host, port = base.split("//")[1].split(":")

    def reader():
        c = http_client(base, timeout=10)
        c.request("GET", "/v1/events?model=xrd-tiny")
        r = c.getresponse()
        got.append("%d %s\n" % (r.status, r.getheader("Content-Type")))
        buf = b""
        t_end = time.time() + 3.5
        while time.time() < t_end:  # stats arrive every second, so read1 returns
            d = r.read1(65536)
            if not d:
                break
            buf += d
        c.close()
        got.append(buf.decode(errors="replace"))

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.4)
    x = np.round(patterns(rng, 400)).astype(np.uint16)
    c = http_client(base)
    c.request("POST", "/v1/models/xrd-tiny/stream", body=x.tobytes(),
              headers={"X-Frame-Size": str(TINY_POINTS), "X-Frame-Dtype": "UINT16",
                       "X-Stream-Id": "ev-stream"})
    r = c.getresponse()
    r.read()
    c.close()
    t.join()
    check(len(got) == 2 and got[0].startswith("200 text/event-stream"), "events headers %s"
          % (got[:1],))
    text = got[1] if len(got) == 2 else ""
    stats = [json.loads(line[6:]) for line in text.split("\n")
             if line.startswith("data: ") and '"frames_per_s"' in line]
    results = [json.loads(line[6:]) for line in text.split("\n")
               if line.startswith("data: ") and '"seq"' in line]
    check(len(stats) >= 2, "stats events: %d in 3.5 s" % len(stats))
    if stats:
        s = stats[-1]
        for k in ("time", "frames_per_s", "requests_per_s", "latency_ms", "queue_ms",
                  "batch_mean", "queue_depth", "device", "gpu"):
            check(k in s, "stats lacks %s" % k)
        check(s["device"] == "cpu" and s["gpu"] is None, "stats device %s" % s)
    check(len(results) >= 1, "result events: %d" % len(results))
    for e in results:
        check(e["model"] == "xrd-tiny" and e["stream"] == "ev-stream" and 0 <= e["seq"] < 400
              and len(e["phases"]) == 3, "result event %s" % str(e)[:200])
    seqs = [e["seq"] for e in results]
    check(seqs == sorted(seqs), "result events in order")
    framed = [e for e in results if "frame" in e]
    check(len(framed) >= 1 and all(len(e["frame"]["y"]) <= 700 for e in framed),
          "frames attached (%d)" % len(framed))
    st, h, b = http(base, "GET", "/v1/events?model=nope")
    check(st == 404, "events for an unknown model %s" % st)


def metrics_check(base, tmp):
    st, h, b = http(base, "GET", "/metrics")
    text = b.decode()
    check(st == 200 and h.get("Content-Type", "").startswith("text/plain"), "metrics %s" % st)

    def val(prefix):
        for line in text.splitlines():
            if line.startswith(prefix + " "):
                return float(line.split()[-1])
        return None

    ok = val('phaseid_inference_request_success_total{model="xrd-tiny"}')
    frames = val('phaseid_inference_frames_total{model="xrd-tiny"}')
    check(ok is not None and ok >= 10, "success counter %s" % ok)
    check(frames is not None and frames >= 440, "frames counter %s" % frames)
    bucket = val('phaseid_batch_size_bucket{model="xrd-tiny",le="+Inf"}')
    execs = val('phaseid_inference_exec_total{model="xrd-tiny"}')
    check(bucket == execs and execs > 0, "batch histogram count %s vs exec %s" % (bucket, execs))
    check(val('phaseid_batch_size_sum{model="xrd-tiny"}') == frames, "batch sum = frames")
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=b, capture_output=True)
        check(p.returncode == 0, "promtool check metrics: %s %s" % (p.stdout, p.stderr))
    else:
        print("NOTE: promtool not found, 'promtool check metrics' skipped")


def web_check(base):
    src = os.environ.get("PHASEID_SOURCE_DIR", "")
    st, h, b = http(base, "GET", "/")
    check(st == 200 and h.get("Content-Type", "").startswith("text/html"), "GET / %s" % st)
    web = os.path.join(src, "server", "web")
    if src and os.path.isfile(os.path.join(web, "index.html")):
        check(b == open(os.path.join(web, "index.html"), "rb").read(), "index.html embedded")
        for name in sorted(os.listdir(web)):
            p = os.path.join(web, name)
            if os.path.isfile(p) and not name.startswith("."):
                st, h, b = http(base, "GET", "/web/" + name)
                check(st == 200 and b == open(p, "rb").read(), "/web/%s" % name)
    st, h, b = http(base, "GET", "/web/nope.js")
    check(st == 404, "/web/nope.js %s" % st)
    st, h, b = http(base, "GET", "/web/..%2Fserver.c")
    check(st == 404, "/web/../ %s" % st)


def token_checks(models):
    tok = os.path.join(os.path.dirname(models), "token")
    with open(tok, "w") as f:
        f.write("s3cret-token\n")
    proc, base = start_server(models, ["--token-file", tok, "--threads", "1"])
    try:
        check(http(base, "GET", "/v2/health/ready")[0] == 200, "token: health open")
        check(http(base, "GET", "/v2")[0] == 401, "token: /v2 without token")
        check(http(base, "GET", "/v2", headers={"Authorization": "Bearer wrong"})[0] == 401,
              "token: wrong token")
        st, h, b = http(base, "GET", "/v2", headers={"Authorization": "Bearer s3cret-token"})
        check(st == 200, "token: with token %s" % st)
        check(http(base, "GET", "/metrics")[0] == 401, "token: metrics")
        check(http(base, "GET", "/?token=s3cret-token")[0] == 200, "token: ?token= for /")
        check(http(base, "GET", "/v2?token=s3cret-token")[0] == 401, "token: ?token= not for /v2")
        c = http_client(base, timeout=5)
        c.request("GET", "/v1/events?token=s3cret-token")
        r = c.getresponse()
        check(r.status == 200, "token: events with ?token= %s" % r.status)
        c.close()
    finally:
        check(stop_server(proc) == 0, "token server exit status")
    p = subprocess.run([BIN, "serve", "--models", models, "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PHASEID_TOKEN"})
    check(p.returncode == 2 and "token" in p.stderr, "0.0.0.0 without token: %s %s"
          % (p.returncode, p.stderr))


def broken_repo(tmp, model_path):
    d = os.path.join(tmp, "broken")
    os.makedirs(d)
    shutil.copy(model_path, os.path.join(d, "good.h5"))
    with open(os.path.join(d, "bad.h5"), "w") as f:
        f.write("not hdf5\n")
    proc, base = start_server(d, ["--threads", "1"], wait_ready=False)
    try:
        t_end = time.time() + 60
        st = None
        while time.time() < t_end:
            st = http(base, "GET", "/v2/health/live")[0]
            if st == 200:
                break
            time.sleep(0.1)
        check(http(base, "GET", "/v2/health/ready")[0] == 503, "broken repo: not ready")
        st, h, b = http(base, "POST", "/v2/repository/index", b"")
        idx = {o["name"]: o for o in json.loads(b)}
        check(idx["good"]["state"] == "READY" and idx["bad"]["state"] == "UNAVAILABLE"
              and idx["bad"].get("reason"), "broken repo index %s" % idx)
        check(http(base, "GET", "/v2/models/good/ready")[0] == 200, "good model ready")
        st, h, b = http(base, "POST", "/v2/models/bad/infer", b"{}")
        check(st == 503 and json_error(b), "infer on the broken model %s" % st)
    finally:
        check(stop_server(proc) == 0, "broken repo server exit status")


def main():
    rng = np.random.default_rng(5)
    tmp = tempfile.mkdtemp(prefix="phaseid-srv-api-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    t0 = time.time()
    model_path = make_tiny_model(models)
    print("model trained in %.1f s" % (time.time() - t0), flush=True)
    proc, base = start_server(models, ["--max-queue-delay-us", "2000"])
    try:
        kserve_routes(base)
        m = v1_models(base)
        if m:
            triton_checks(base.split("//")[1], rng, m["unknown"]["threshold"],
                          [p["name"] for p in m["phases"]], m["unknown"].get("residual_threshold"),
                          m["unknown"].get("missing_threshold"))
        classify_three_ways(base, tmp)
        stream_small(base, rng)
        events_check(base, rng)
        metrics_check(base, tmp)
        web_check(base)
        st, o = get_json(base, "/v2/models/xrd-tiny/stats")
        s = o["model_stats"][0] if st == 200 else {}
        check(s.get("inference_count", 0) >= 440 and s["inference_stats"]["success"]["count"] > 0,
              "statistics %s" % str(o)[:300])
        check(get_json(base, "/v2/models/stats")[0] == 200, "all-model statistics")
    finally:
        rc = stop_server(proc)
        check(rc == 0, "SIGTERM exit status %s; log:\n%s" % (rc, server_log(proc)[-2000:]))
    token_checks(models)
    broken_repo(tmp, model_path)
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s) in %.1f s" % (len(failures), time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
