#!/usr/bin/env python3
"""The live dashboard end to end: `phaseid serve` + `phaseid stream --demo
heating-ramp` + headless Chromium (Selenium, /usr/bin/chromedriver).

Model: data/models/xrd-builtin.h5 when it exists; otherwise a small model is
trained here (about 30 s on 2 cores) on the demo's phases and seven others
(anatase, rutile, brookite, cassiterite SnO2 - rutile's isostructural look-
alike -, ZnO, CeO2, hematite, MgO, Si, NaCl, corundum, calcite), two phases
per pattern (sigmoid head with fractions), grid 10..80 deg step 0.05.

1. The page loads from / (and its /web files), says "live" once the event
   stream is open, lists the model with its phases, grid and training
   provenance.
2. With the heating ramp streaming (400 frames, 200 frames/s, looped), the
   page shows a top phase that is one of the model's phases, three phase
   bars, a timeline with at least 100 points and unknown frames marked, the
   frame plot of a recent seq, and metrics: frames/s a number, latency
   p50/p99 in ms, the device, and GPU power or "no GPU".
3. Ground truth (--truth-out) against the first pass of results (the
   ndjson of --json), and against the page's own timeline data, with these
   tolerances:
   - anatase-only frames: top phase anatase (TiO2_141) in >= 90 %;
   - rutile-only frames: top phase rutile (TiO2_136) in >= 90 %;
   - clearly two-phase frames (rutile weight fraction 0.25..0.75): both
     phases in the result with probability >= 0.1 in >= 80 %;
   - order: frames predicted anatase-only (top anatase, rutile < 0.1), both
     (each >= 0.1) and rutile-only come in that order of mean seq;
   - out-of-library (brucite) frames flagged unknown in >= 80 %, in-library
     frames flagged in <= 10 %.
4. Responsiveness: while frames stream at --rate 2000 the page keeps
   painting (>= 10 animation frames/s in headless Chromium on a loaded
   2-core machine; the measured rate is printed) and its timeline keeps at
   most 2,000 points.
5. The drop zone: an .xy file of anatase (its sticks broadened) put into
   the page's file input is classified by the server, and the answer names
   anatase.
6. A screenshot: docs/dashboard.png with PHASEID_SAVE_SCREENSHOT=1, else a
   temp file (its path is printed).

Skips (exit 77) without `phaseid serve`, selenium, chromium or chromedriver.
"""
import json
import math
import random
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from checks import check, failures, serve_available

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SRC = os.environ.get("PHASEID_SOURCE_DIR",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHROMEDRIVER = "/usr/bin/chromedriver"
ANATASE, RUTILE, UNKNOWN_PHASE = "TiO2_141", "TiO2_136", "brucite_164"
N_FRAMES, RATE = 400, 200
FALLBACK_PHASES = ["TiO2_141", "TiO2_136", "TiO2_61", "SnO2_136", "ZnO_186", "CeO2_225",
                   "Fe2O3_167", "MgO_225", "Si_227", "NaCl_225", "Al2O3_167", "CaCO3_167"]


def run(args, timeout=900):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------ server fixture


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import start_server  # noqa: E402 - the shared server fixture


def stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def prepare_model(models_dir, tmp):
    """(model name, description): the built-in model, else a small one."""
    builtin = os.path.join(SRC, "data", "models", "xrd-builtin.h5")
    if os.path.isfile(builtin):
        os.symlink(builtin, os.path.join(models_dir, "xrd-builtin.h5"))
        return "xrd-builtin", "data/models/xrd-builtin.h5"
    lib = os.path.join(tmp, "lib")
    os.mkdir(lib)
    for s in FALLBACK_PHASES:
        os.symlink(os.path.join(SRC, "data", "phases", s + ".cif"), os.path.join(lib, s + ".cif"))
    out = os.path.join(models_dir, "demo-small.h5")
    t0 = time.time()
    r = run(["train", "--modality", "xrd", "--phases", lib, "--out", out, "--grid", "10:80:0.05",
             "--arch", "conv1d(8,k9,s2,p4) bn relu maxpool(2) conv1d(16,k7,s2,p3) bn relu maxpool(2) "
             "conv1d(32,k5,p2) bn relu maxpool(2) flatten dense(64) relu head",
             "--steps", "3000", "--batch", "32", "--lr", "3e-3", "--mixtures", "2",
             "--threads", "2", "--val", "300", "--calib", "1000", "--seed", "1", "--quiet"])
    if r.returncode != 0:
        raise RuntimeError("phaseid train failed: " + r.stderr[-1000:])
    print(f"trained the fallback model in {time.time() - t0:.1f} s")
    return "demo-small", "trained here (no data/models/xrd-builtin.h5)"


# ------------------------------------------------------------- ground truth

def truth_class(t):
    """'A' anatase only, 'R' rutile only, 'B' clearly both, 'b' marginal
    two-phase, 'U' out of library."""
    if t.get("unknown"):
        return "U"
    fr = {p["name"]: p["fraction"] for p in t["phases"]}
    a, r = fr.get(ANATASE, 0.0), fr.get(RUTILE, 0.0)
    if a > 0 and r == 0:
        return "A"
    if r > 0 and a == 0:
        return "R"
    return "B" if 0.25 <= r <= 0.75 else "b"


def check_ramp(items, truth, where):
    """items: [(seq, top, {phase: probability}, unknown)], truth: seq -> dict."""
    cnt = {k: [0, 0] for k in "ARBUK"}  # class -> [good, total]; K: in-library flagged
    pred_seqs = {"A": [], "B": [], "R": []}
    for seq, top, probs, unk in items:
        t = truth.get(seq)
        if t is None:
            continue
        c = truth_class(t)
        pa, pr = probs.get(ANATASE, 0.0), probs.get(RUTILE, 0.0)
        if c == "A":
            cnt["A"][0] += top == ANATASE
            cnt["A"][1] += 1
        elif c == "R":
            cnt["R"][0] += top == RUTILE
            cnt["R"][1] += 1
        elif c == "B":
            cnt["B"][0] += pa >= 0.1 and pr >= 0.1
            cnt["B"][1] += 1
        if c == "U":
            cnt["U"][0] += bool(unk)
            cnt["U"][1] += 1
        else:
            cnt["K"][0] += bool(unk)
            cnt["K"][1] += 1
            if pa >= 0.1 and pr >= 0.1:
                pred_seqs["B"].append(seq)
            elif top == ANATASE:
                pred_seqs["A"].append(seq)
            elif top == RUTILE:
                pred_seqs["R"].append(seq)
    frac = {k: (g / n if n else float("nan")) for k, (g, n) in cnt.items()}
    print(f"{where}: anatase-only {cnt['A']}, rutile-only {cnt['R']}, both {cnt['B']}, "
          f"unknown flagged {cnt['U']}, in-library flagged {cnt['K']}")
    check(cnt["A"][1] >= 10 and frac["A"] >= 0.9, f"{where}: anatase-only frames top anatase {cnt['A']}")
    check(cnt["R"][1] >= 10 and frac["R"] >= 0.9, f"{where}: rutile-only frames top rutile {cnt['R']}")
    check(cnt["B"][1] >= 5 and frac["B"] >= 0.8, f"{where}: two-phase frames show both {cnt['B']}")
    check(cnt["U"][1] >= 3 and frac["U"] >= 0.8, f"{where}: out-of-library frames flagged unknown {cnt['U']}")
    check(cnt["K"][1] > 0 and frac["K"] <= 0.1, f"{where}: in-library frames flagged unknown {cnt['K']}")
    means = {k: sum(v) / len(v) for k, v in pred_seqs.items() if v}
    check(len(means) == 3 and means["A"] < means["B"] < means["R"],
          f"{where}: predicted anatase -> both -> rutile order, mean seq {means}")


def write_xy_from_sticks(cif, path):
    """A pattern as a lab diffractometer with a Cu K-alpha tube gives it: the
    phase's K-alpha1 sticks (phaseid synth xrd --sticks) plus their K-alpha2
    partners (lambda 1.544390 A, half the intensity) as Gaussians of 0.1 deg
    FWHM on a background of 50 counts with Poisson-like noise, 10..80 deg
    step 0.02. (The built-in model was trained on the doublet; a
    monochromated K-alpha1-only pattern is outside its instrument range.)"""
    r = run(["synth", "xrd", "--sticks", cif, "--wavelength", "CuKa1", "--two-theta", "10:80"])
    sticks = [(float(f[0]), float(f[2])) for f in
              (l.split("\t") for l in r.stdout.splitlines()[1:]) if len(f) > 2]
    l1, l2 = 1.540562, 1.544390
    doublet = []
    for c, h in sticks:
        doublet.append((c, h))
        s2 = l2 / l1 * math.sin(math.radians(c / 2))
        if s2 < 1:
            doublet.append((2 * math.degrees(math.asin(s2)), 0.5 * h))
    sig = 0.1 / 2.3548
    rng = random.Random(5)
    with open(path, "w") as f:
        f.write("# 2theta intensity\n")
        for i in range(3501):
            x = 10.0 + 0.02 * i
            y = 50.0 + sum(10.0 * h * math.exp(-0.5 * ((x - c) / sig) ** 2)
                           for c, h in doublet if abs(x - c) < 1.0)
            y += rng.gauss(0.0, math.sqrt(y))
            f.write(f"{x:.3f} {max(y, 0.0):.3f}\n")


# ------------------------------------------------------------------ browser

def make_driver(webdriver, Service):
    opts = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1600,1000", "--hide-scrollbars"]:
        opts.add_argument(a)
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    opts.binary_location = binary
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    return d


def text(d, By, id_):
    return d.find_element(By.ID, id_).text.strip()


def wait_for(pred, timeout, step=0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def main():
    if not serve_available(BIN):
        print("SKIP: this build has no `phaseid serve` (server not built)")
        return 77
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        print("SKIP: python selenium is not installed (pip install selenium)")
        return 77
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")) or \
            not os.access(CHROMEDRIVER, os.X_OK):
        print("SKIP: needs Debian's chromium and chromium-driver (/usr/bin/chromedriver)")
        return 77

    with tempfile.TemporaryDirectory() as tmp:
        models = os.path.join(tmp, "models")
        os.mkdir(models)
        name, what = prepare_model(models, tmp)
        print(f"model {name}: {what}")
        proc, base = start_server(models, [])
        driver = stream = None
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
                mlist = json.load(r)["models"]
            model = next((m for m in mlist if m["name"] == name), None)
            check(model is not None, f"/v1/models lists {name}")
            phases = [p["name"] for p in model["phases"]] if model else []
            if not check(ANATASE in phases and RUTILE in phases, "the model knows anatase and rutile"):
                return 1

            # 1. page loads and goes live
            driver = make_driver(webdriver, Service)
            driver.get(base + "/")
            check(wait_for(lambda: text(driver, By, "status") == "live", 20),
                  f"status live, got {text(driver, By, 'status')!r}")
            check(wait_for(lambda: name in text(driver, By, "models"), 20), "models panel names the model")
            mtxt = text(driver, By, "models")
            check(f"{len(phases)} phases" in mtxt and "grid" in mtxt and "training" in mtxt,
                  f"models panel content: {mtxt[:300]!r}")

            # 2. stream the heating ramp (looped) and wait for live results
            truth_path = os.path.join(tmp, "truth.jsonl")
            res_path = os.path.join(tmp, "results.ndjson")
            res_f = open(res_path, "w")
            stream = subprocess.Popen(
                [BIN, "stream", "--server", base, "--model", name, "--demo", "heating-ramp",
                 "--frames", str(N_FRAMES), "--rate", str(RATE), "--loop", "--json",
                 "--truth-out", truth_path, "--stream-id", "heating-ramp"],
                stdout=res_f, stderr=subprocess.PIPE, text=True)
            check(wait_for(lambda: count_lines(res_path) >= N_FRAMES + N_FRAMES // 2, 120, 0.5),
                  f"a pass and a half of results within 120 s ({count_lines(res_path)})")
            check(wait_for(lambda: text(driver, By, "top-phase") not in ("", "-"), 20), "a top phase shown")
            check(wait_for(lambda: text(driver, By, "stat-fps") not in ("", "-"), 20), "frames/s shown")
            check(wait_for(lambda: driver.find_element(By.ID, "frame-plot").get_attribute("data-seq"), 20),
                  "a frame drawn")
            top = text(driver, By, "top-phase")
            check(top in phases, f"top phase {top!r} is a model phase")
            bars = driver.find_elements(By.CSS_SELECTOR, "#phase-list li")
            check(len(bars) == 3, f"three phase bars, got {len(bars)}")
            pts = int(driver.find_element(By.ID, "timeline").get_attribute("data-points") or 0)
            unk = int(driver.find_element(By.ID, "timeline").get_attribute("data-unknown") or 0)
            check(pts >= 100, f"timeline points {pts}")
            check(unk >= 1, f"unknown frames marked on the timeline: {unk}")
            fps = text(driver, By, "stat-fps")
            check(fps.replace(".", "", 1).isdigit(), f"frames/s is a number: {fps!r}")
            for k in ("stat-p50", "stat-p90", "stat-p99"):
                v = text(driver, By, k)
                check(v.endswith("ms") and v[:-2].strip().replace(".", "", 1).isdigit(), f"{k} {v!r}")
            check(text(driver, By, "stat-device") not in ("", "-"), "device shown")
            gpu = text(driver, By, "stat-gpu")
            check(gpu == "no GPU" or ("W" in gpu and "frames/J" in gpu), f"GPU tile {gpu!r}")
            print(f"page: top {top}, timeline {pts} points ({unk} unknown), {fps} frames/s, "
                  f"p99 {text(driver, By, 'stat-p99')}, device {text(driver, By, 'stat-device')}, {gpu}")

            # 5. the drop zone classifies an .xy file: anatase sticks
            # broadened into a pattern
            xy = os.path.join(tmp, "anatase.xy")
            write_xy_from_sticks(os.path.join(SRC, "data", "phases", ANATASE + ".cif"), xy)
            driver.execute_script("document.getElementById('drop-input').hidden = false;")
            driver.find_element(By.ID, "drop-input").send_keys(xy)
            check(wait_for(lambda: ANATASE in text(driver, By, "drop-result"), 30),
                  f"dropped anatase.xy classified as anatase: {text(driver, By, 'drop-result')[:200]!r}")
            driver.execute_script("document.getElementById('drop-input').hidden = true;")

            # 6. screenshot (the page as it is, mid-stream)
            if os.environ.get("PHASEID_SAVE_SCREENSHOT") == "1":
                shot = os.path.join(SRC, "docs", "dashboard.png")
            else:  # outside the temp folder, so it can be looked at afterwards
                shot = os.path.join(tempfile.gettempdir(), "phaseid-dashboard.png")
            os.makedirs(os.path.dirname(shot), exist_ok=True)
            check(driver.save_screenshot(shot) and os.path.getsize(shot) > 10000, "screenshot saved")
            print(f"screenshot: {shot}")

            # 3. ground truth, on the page's own timeline data and on the
            # first pass of the stream's results
            ring = driver.execute_script(
                "var n = arguments[0]; return window.phaseid.ring.filter(function (x) { return x && "
                "x.stream === 'heating-ramp' && x.seq < n; }).map(function (x) { return [x.seq, x.top, "
                "x.probs, x.unknown]; });", N_FRAMES)
            stop(stream, signal.SIGINT, 60)
            err = stream.stderr.read()
            res_f.close()
            check(stream.returncode == 0, f"stream exit {stream.returncode}: {err[-500:]}")
            check("results received" in err, f"stream summary: {err[-300:]}")
            truth = {}
            for line in open(truth_path):
                t = json.loads(line)
                if t["seq"] < N_FRAMES:
                    truth[t["seq"]] = t
            check(len(truth) == N_FRAMES, f"truth for {N_FRAMES} frames, got {len(truth)}")
            items = []
            for line in open(res_path):
                r = json.loads(line)
                if "seq" in r and r["seq"] < N_FRAMES and "phases" in r:
                    ph = r["phases"]
                    items.append((r["seq"], ph[0]["name"] if ph else None,
                                  {p["name"]: p["probability"] for p in ph}, r.get("unknown")))
            check(len(items) == N_FRAMES, f"{N_FRAMES} first-pass results, got {len(items)}")
            check_ramp(items, truth, "stream results")
            check(len(ring) >= 100, f"page timeline holds {len(ring)} first-pass results")
            check_ramp([(s, t, p, u) for s, t, p, u in ring], truth, "page timeline")

            # 4. responsiveness at 2,000 frames/s
            fast = subprocess.Popen(
                [BIN, "stream", "--server", base, "--model", name, "--demo", "heating-ramp",
                 "--frames", str(N_FRAMES), "--rate", "2000", "--loop", "--quiet", "--stream-id", "fast"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(2.0)
            stat = driver.execute_async_script("""
                var done = arguments[arguments.length - 1], n = 0, t0 = performance.now(), last = t0, gap = 0;
                function tick(t) { n++; gap = Math.max(gap, t - last); last = t;
                  if (t - t0 < 3000) requestAnimationFrame(tick);
                  else done([n / ((t - t0) / 1000), gap, window.phaseid.ringLen, window.phaseid.results]); }
                requestAnimationFrame(tick);""")
            fps_page = text(driver, By, "stat-fps")
            stop(fast, signal.SIGINT, 60)
            out = fast.stdout.read()
            print(f"at --rate 2000: page {stat[0]:.1f} animation frames/s, longest gap {stat[1]:.0f} ms, "
                  f"ring {stat[2]}, server frames/s tile {fps_page}; stream: {out.strip()[:200]}")
            check(stat[0] >= 10, f"page keeps painting at 2,000 frames/s: {stat[0]:.1f} frames/s")
            check(stat[2] <= 2000, f"timeline ring capped: {stat[2]}")
        finally:
            if driver is not None:
                driver.quit()
            for p in (stream,):
                if p is not None and p.poll() is None:
                    stop(p, signal.SIGINT)
            stop(proc)
    print(f"test_dashboard: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
