#!/usr/bin/env python3
"""HTTP load benchmark of `phaseid serve` against in-process inference.

Starts the server on 127.0.0.1 with one model on the chosen device, then
drives POST /v2/models/NAME/infer in the KServe binary tensor mode (JSON
header + raw UINT16 patterns, binary outputs) at concurrency 1, 8 and 64,
with 1 and 16 patterns per request, and reads throughput (patterns/s) and
p50/p99 request latency. The load generator is perf_analyzer when a working
binary is on PATH (the PyPI package 'perf-analyzer' must provide it), else
wrk (Debian package 'wrk') with a Lua script sending the same binary body.
The in-process reference is `phaseid bench classify` on the same model and
device (batch 1, 16 and the server's max batch 64) and on the same patterns
(`--frames`, when h5py is there to write them). The ratio column is HTTP
patterns/s over the best in-process patterns/s (any batch size, best of a run
before and one after the HTTP runs: the machine may be shared); the target
is >= 0.5.

Without --model, trains the small CNN of benchmarks/bench_infer.py (10
steps: throughput does not depend on the weights) on the built-in phases.

  python3 benchmarks/http_load.py --phaseid build/cli/phaseid
      [--model M.h5] [--device cpu] [--seconds 5] [--json benchmarks/results/http_load.json]

Prints a table and writes the JSON (machine, commands, numbers).
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import cpu_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from server_fixture import start_server, stop_server  # noqa: E402

SMALL = ("conv1d(16,k9,s2,p4) bn relu maxpool(2) conv1d(32,k7,s2,p3) bn relu maxpool(2) "
         "conv1d(32,k5,p2) bn relu maxpool(2) conv1d(64,k3,p1) bn relu maxpool(2) "
         "flatten dense(128) relu head")


def pattern_row(i, n_points):
    """Pattern i of the load: two narrow peaks on a floor (counts)."""
    return [20 + 300 * (abs(j - (37 * i + 200) % n_points) < 4)
            + 120 * (abs(j - (53 * i + 900) % n_points) < 3) for j in range(n_points)]


def frames_file(path, n_points, n=64):
    """The same patterns as the HTTP bodies, as /patterns of an HDF5 file for
    the in-process reference (`bench classify --frames`), so both sides
    classify the same frames (the residual check's cost depends on them)."""
    import h5py
    import numpy as np
    with h5py.File(path, "w") as f:
        f["patterns"] = np.array([pattern_row(i, n_points) for i in range(n)], np.float32)


def body_for(n_points, batch):
    rows = []
    for i in range(batch):
        rows.append(struct.pack("<%dH" % n_points, *pattern_row(i, n_points)))
    payload = b"".join(rows)
    hdr = json.dumps({"inputs": [{"name": "patterns", "shape": [batch, n_points],
                                  "datatype": "UINT16",
                                  "parameters": {"binary_data_size": len(payload)}}],
                      "outputs": [{"name": n, "parameters": {"binary_data": True}}
                                  for n in ("probabilities", "top_phases", "unknown_score",
                                            "unknown")]}).encode()
    return hdr + payload, len(hdr)


def parse_dur(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def run_wrk(url, body_path, hlen, conc, seconds, threads):
    lua = body_path + ".lua"
    with open(lua, "w") as f:
        f.write('local f = io.open("%s", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                'wrk.headers["Inference-Header-Content-Length"] = "%d"\n' % (body_path, hlen))
    cmd = ["wrk", "-t", str(min(threads, conc)), "-c", str(conc), "-d", "%ds" % seconds,
           "--latency", "--timeout", "30s", "-s", lua, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    out = p.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:(.*)", out)
    total = re.search(r"(\d+) requests in", out)
    lat = {}
    for q in ("50", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, out, re.M)
        lat[q] = parse_dur(m.group(1)) if m else float("nan")
    return {"cmd": " ".join(cmd), "requests_per_s": float(rps.group(1)) if rps else 0.0,
            "requests": int(total.group(1)) if total else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errs.group(1).strip() if errs else "",
            "p50_s": lat["50"], "p90_s": lat["90"], "p99_s": lat["99"], "raw": out}


def have_perf_analyzer():
    exe = shutil.which("perf_analyzer")
    if not exe:
        return None
    try:
        p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return exe if "concurrency-range" in (p.stdout + p.stderr) else None


def run_perf_analyzer(exe, host, model, batch, conc, seconds, workdir):
    csv = os.path.join(workdir, "pa_%d_%d.csv" % (batch, conc))
    cmd = [exe, "-m", model, "-u", host, "-i", "http", "-b", str(batch),
           "--concurrency-range", "%d:%d" % (conc, conc), "--measurement-interval",
           str(seconds * 1000), "--input-data", "random", "-f", csv, "--percentile", "99"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 20 + 300)
    out = p.stdout + p.stderr
    thr = re.search(r"Throughput:\s+([\d.]+) infer/sec", out)
    p50 = re.search(r"p50 latency:\s+(\d+) usec", out)
    p99 = re.search(r"p99 latency:\s+(\d+) usec", out)
    ips = float(thr.group(1)) if thr else 0.0
    return {"cmd": " ".join(cmd), "requests_per_s": ips / batch, "requests": 0, "non_2xx": 0,
            "socket_errors": "", "p50_s": int(p50.group(1)) * 1e-6 if p50 else float("nan"),
            "p90_s": float("nan"), "p99_s": int(p99.group(1)) * 1e-6 if p99 else float("nan"),
            "raw": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phaseid", default=os.environ.get("PHASEID_BIN", "phaseid"))
    ap.add_argument("--model", help="model file (default: train the small CNN)")
    ap.add_argument("--grid", default="10:80:0.02", help="grid to train on without --model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--patterns", default="1,16", help="patterns per request")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "http_load.json"))
    a = ap.parse_args()
    os.environ["PHASEID_BIN"] = a.phaseid
    import server_fixture
    server_fixture.BIN = a.phaseid
    tmp = tempfile.mkdtemp(prefix="phaseid-http-load-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    name = "bench"
    mpath = os.path.join(models, name + ".h5")
    if a.model:
        shutil.copy(a.model, mpath)
    else:
        r = subprocess.run([a.phaseid, "train", "--modality", "xrd", "--phases", "builtin",
                            "--out", mpath, "--arch", SMALL, "--grid", a.grid, "--steps", "10",
                            "--warmup", "2", "--val", "0", "--calib", "100", "--quiet"],
                           capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(r.stdout + r.stderr)
            return 1
    # in-process reference, measured before and after the HTTP runs (the
    # machine may be shared): the best figure of either run and any batch size
    ref_json = os.path.join(tmp, "inproc.json")
    ref_cmd = [a.phaseid, "bench", "classify", "--model", mpath, "--batch", "1,16,64",
               "--seconds", str(a.seconds), "--device", a.device, "--json", ref_json]
    try:
        import h5py
        with h5py.File(mpath, "r") as f:
            n_model = int(f["grid"].attrs["n_points"])
        ref_frames = os.path.join(tmp, "frames.h5")
        frames_file(ref_frames, n_model)
        ref_cmd += ["--frames", ref_frames]
    except ImportError:
        print("(no h5py: the in-process reference runs on bench classify's own frames)")

    def inprocess():
        print("$ " + " ".join(ref_cmd), flush=True)
        r = subprocess.run(ref_cmd, capture_output=True, text=True)
        print(r.stdout, end="")
        if r.returncode:
            sys.stderr.write(r.stderr)
            return None
        ref = json.load(open(ref_json))
        return {int(x["batch"]): float(x["frames_per_s"]) for x in ref["results"]}

    inproc_runs = [inprocess()]
    if inproc_runs[0] is None:
        return 1

    proc, base = start_server(models, ["--device", a.device, "--max-batch", "64"])
    meta = json.loads(urllib.request.urlopen(base + "/v2/models/" + name).read())
    n_points = meta["inputs"][0]["shape"][1]
    pa = have_perf_analyzer()
    tool = "perf_analyzer" if pa else "wrk"
    if not pa and not shutil.which("wrk"):
        stop_server(proc)
        print("neither a working perf_analyzer nor wrk found")
        return 77
    rows = []
    try:
        for batch in [int(x) for x in a.patterns.split(",")]:
            body, hlen = body_for(n_points, batch)
            bpath = os.path.join(tmp, "body_%d.bin" % batch)
            with open(bpath, "wb") as f:
                f.write(body)
            for conc in [int(x) for x in a.concurrency.split(",")]:
                if pa:
                    m = run_perf_analyzer(pa, base.split("//")[1], name, batch, conc, a.seconds,
                                          tmp)
                else:
                    m = run_wrk(base + "/v2/models/%s/infer" % name, bpath, hlen, conc,
                                a.seconds, threads=2)
                m.update({"patterns_per_request": batch, "concurrency": conc,
                          "patterns_per_s": m["requests_per_s"] * batch})
                rows.append(m)
                print("  %-3d patterns/request, concurrency %-3d: %8.0f patterns/s, p50 %.2f ms, "
                      "p99 %.2f ms, non-2xx %d" % (batch, conc, m["patterns_per_s"],
                                                   1e3 * m["p50_s"], 1e3 * m["p99_s"],
                                                   m["non_2xx"]), flush=True)
                time.sleep(0.5)
        stats = urllib.request.urlopen(base + "/metrics").read().decode()
    finally:
        rc = stop_server(proc)
    inproc_runs.append(inprocess())
    inproc = {b: max(run[b] for run in inproc_runs if run) for b in inproc_runs[0]}
    ref_fps = max(inproc.values())
    for m in rows:
        m["ratio_to_inprocess"] = m["patterns_per_s"] / ref_fps
    batch_sum = re.search(r'phaseid_batch_size_sum\{model="bench"\} (\S+)', stats)
    batch_cnt = re.search(r'phaseid_batch_size_count\{model="bench"\} (\S+)', stats)
    mean_batch = float(batch_sum.group(1)) / max(1.0, float(batch_cnt.group(1))) \
        if batch_sum and batch_cnt else float("nan")

    print()
    print("HTTP binary (%s, %s) vs in-process (phaseid bench classify), device %s, %s, %d cores"
          % (tool, "UINT16 patterns", a.device, cpu_model(), os.cpu_count()))
    print("in-process patterns/s (best of 2 runs): " + ", ".join(
        "batch %d: %.0f" % (b, v) for b, v in sorted(inproc.items())))
    print("%-10s %-6s %-12s %-10s %-10s %-8s %s" % ("pat/req", "conc", "patterns/s", "p50 ms",
                                                  "p99 ms", "non-2xx", "vs in-process best"))
    for m in rows:
        print("%-10d %-6d %-12.0f %-10.2f %-10.2f %-8d %.2f" % (
            m["patterns_per_request"], m["concurrency"], m["patterns_per_s"], 1e3 * m["p50_s"],
            1e3 * m["p99_s"], m["non_2xx"], m["ratio_to_inprocess"]))
    best = max(rows, key=lambda m: m["patterns_per_s"])
    print("best HTTP/in-process ratio %.2f (target >= 0.5); mean server batch %.1f; server exit %d"
          % (best["ratio_to_inprocess"], mean_batch, rc))
    out = {"benchmark": "http_load", "tool": tool, "device": a.device, "cpu": cpu_model(),
           "cores": os.cpu_count(), "model_points": n_points,
           "model": a.model or ("trained: " + SMALL + " grid " + a.grid),
           "inprocess_cmd": " ".join(ref_cmd).replace(tmp, "$TMP"),
           "inprocess_patterns_per_s": inproc, "inprocess_runs": inproc_runs,
           "reference_patterns_per_s": ref_fps,
           "mean_server_batch": mean_batch, "server_exit": rc,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "runs": [{k: (v.replace(tmp, "$TMP") if isinstance(v, str) else v)
                     for k, v in m.items() if k != "raw"} for m in rows],
           "best_ratio": best["ratio_to_inprocess"]}
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print("wrote " + a.json)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
