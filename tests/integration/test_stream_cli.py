#!/usr/bin/env python3
"""`phaseid stream` against a real `phaseid serve` over loopback.

A small model (tests/integration/server_fixture.py's make_tiny_model: the
built-in phases, grid 10..80 deg step 0.05) is served from a temp folder.
Checks:

1. --demo composition-scan --frames 60 --chunk 16 --json --truth-out: exit 0,
   60 ndjson lines with seq 0..59 in order, each with phases / unknown; the
   truth file has 60 lines, seq 0..59, composition and fractions summing to 1;
   the summary (stderr with --json) counts 60 sent and 60 received.
2. The human format: one line per frame starting with its seq, the truth shown,
   and an accuracy line in the summary.
3. --save (no server, --grid = the model's) writes a stack that --from replays:
   60 results; a `phaseid synth xrd` stack on the model grid replays with
   accuracy from its labels.
4. --rate 100 for 40 frames takes at least 0.35 s (pacing honoured).
5. --loop ended by SIGINT: exit 0, summary printed, every frame sent answered.
6. Errors, each exit 1 with a clear message: unknown model (names the model
   and the served ones), server down ("cannot reach"), a stack on another grid
   ("wrong grid"); usage errors exit 2.
7. With --token-file on the server: no token -> exit 1 mentioning the token;
   --token -> exit 0.

Run by ctest as `python3 FILE` with PHASEID_BIN and PHASEID_SOURCE_DIR; skips
(exit 77) when this build has no `phaseid serve`. Exits 1 listing failures.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from checks import check, failures, serve_available

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SRC = os.environ.get("PHASEID_SOURCE_DIR",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GRID = "10:80:0.05"


def run(args, timeout=300, **kw):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------ server fixture

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_fixture  # noqa: E402 - the shared server fixture

start_server = server_fixture.start_server


def model_grid(base, name):
    with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
        models = json.load(r)["models"]
    for m in models:
        if m["name"] == name:
            return m["grid"]
    return None


def ndjson(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def main():
    if not serve_available(BIN):
        print("SKIP: this build has no `phaseid serve` (server not built)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        models = os.path.join(tmp, "models")
        os.mkdir(models)
        server_fixture.make_tiny_model(models)
        proc, base = start_server(models, [])
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=10) as resp:
                name = json.load(resp)["models"][0]["name"]
            g = model_grid(base, name)
            check(g is not None, f"model {name} listed by /v1/models")
            server = ["--server", base, "--model", name]

            # 1. composition scan, json, truth
            truth = os.path.join(tmp, "truth.jsonl")
            r = run(["stream"] + server + ["--demo", "composition-scan", "--frames", "60",
                                           "--chunk", "16", "--json", "--truth-out", truth])
            check(r.returncode == 0, f"composition-scan exit {r.returncode}: {r.stderr[-800:]}")
            res = ndjson(r.stdout)
            check([x.get("seq") for x in res] == list(range(60)),
                  f"60 results with seq 0..59 in order, got {[x.get('seq') for x in res][:70]}")
            check(all("phases" in x and "unknown" in x for x in res), "result fields")
            check("60 frames sent, 60 results received" in r.stderr, f"summary: {r.stderr[-300:]}")
            tl = [json.loads(l) for l in open(truth)] if os.path.exists(truth) else []
            check([t["seq"] for t in tl] == list(range(60)), "truth seq 0..59")
            check(all(abs(sum(p["fraction"] for p in t["phases"]) - 1) < 1e-9 and
                      abs(sum(t["composition"]) - 1) < 1e-9 for t in tl), "truth fractions sum to 1")
            check(tl and tl[0]["phases"][0]["name"] == "ZnO_186", "first scan point is pure ZnO")

            # 2. human format
            r = run(["stream"] + server + ["--demo", "heating-ramp", "--frames", "40"])
            check(r.returncode == 0, f"heating-ramp exit {r.returncode}: {r.stderr[-500:]}")
            lines = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
            check(len(lines) == 40 and all(l.split()[0] == str(i) for i, l in enumerate(lines)),
                  f"40 human lines starting with seq: {lines[:3]}")
            check(all("truth" in l for l in lines), "truth shown per line")
            check("# 40 frames sent, 40 results received" in r.stdout and "accuracy vs truth" in r.stdout
                  and "out-of-library frames flagged unknown" in r.stdout, f"summary: {r.stdout[-400:]}")

            # 3. --save then --from; a synth xrd stack on the model grid
            last = g["x0"] + g["step"] * (g["n_points"] - 1)
            grid_arg = f"{g['x0']}:{last}:{g['step']}"
            saved = os.path.join(tmp, "scan.h5")
            r = run(["stream", "--demo", "composition-scan", "--frames", "60", "--grid", grid_arg,
                     "--save", saved])
            check(r.returncode == 0 and os.path.exists(saved), f"--save exit {r.returncode}: {r.stderr}")
            r = run(["stream"] + server + ["--from", saved, "--json", "--chunk", "25"])
            check(r.returncode == 0, f"--from exit {r.returncode}: {r.stderr[-500:]}")
            check([x.get("seq") for x in ndjson(r.stdout)] == list(range(60)), "--from: 60 results in order")
            check("accuracy vs truth" in r.stderr, "--from: truth read from the saved stack")
            synth = os.path.join(tmp, "synth.h5")
            lib = os.path.join(tmp, "lib-synth")
            os.mkdir(lib)
            for s in ["ZnO_186", "CeO2_225"]:
                os.symlink(os.path.join(SRC, "data", "phases", s + ".cif"), os.path.join(lib, s + ".cif"))
            rs = run(["synth", "xrd", "--phases", lib, "--n", "30", "--two-theta", grid_arg,
                      "--out", synth, "--seed", "2"])
            check(rs.returncode == 0, f"synth xrd: {rs.stderr[-300:]}")
            r = run(["stream"] + server + ["--from", synth, "--quiet"])
            check(r.returncode == 0 and "30 frames sent, 30 results received" in r.stdout,
                  f"--from synth stack: {r.returncode} {r.stdout[-300:]} {r.stderr[-300:]}")
            check("accuracy vs truth: " in r.stdout and "/30 " in r.stdout, "synth stack truth from labels")

            # 4. pacing
            t0 = time.time()
            r = run(["stream"] + server + ["--demo", "heating-ramp", "--frames", "40", "--rate", "100",
                                           "--quiet"])
            dt = time.time() - t0
            check(r.returncode == 0 and dt >= 0.35, f"--rate 100 x 40 frames took {dt:.2f} s")

            # 5. --loop until SIGINT
            p = subprocess.Popen([BIN, "stream"] + server + ["--demo", "heating-ramp", "--frames", "40",
                                                              "--loop", "--rate", "200", "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
            check(p.returncode == 0, f"--loop + SIGINT exit {p.returncode}: {err[-300:]}")
            m = re.search(r"# (\d+) frames sent, (\d+) results received", out)
            check(m and m.group(1) == m.group(2) and int(m.group(1)) > 40,
                  f"--loop summary: {out[-300:]}")

            # 6. errors
            r = run(["stream", "--server", base, "--model", "nope", "--demo", "heating-ramp"])
            check(r.returncode == 1 and "'nope'" in r.stderr and name in r.stderr,
                  f"unknown model: {r.returncode} {r.stderr}")
            r = run(["stream", "--server", f"http://127.0.0.1:{free_port()}", "--model", name,
                     "--demo", "heating-ramp"])
            check(r.returncode == 1 and "cannot reach" in r.stderr, f"server down: {r.returncode} {r.stderr}")
            other = os.path.join(tmp, "other.h5")
            run(["stream", "--demo", "heating-ramp", "--frames", "20", "--grid", "10:80:0.02", "--save", other])
            r = run(["stream"] + server + ["--from", other])
            check(r.returncode == 1 and "wrong grid" in r.stderr, f"wrong grid: {r.returncode} {r.stderr}")
            for bad in (["--demo", "cooling"], ["--demo", "heating-ramp", "--from", saved], [],
                        ["--demo", "heating-ramp", "--rate", "-1"], ["--demo", "heating-ramp", "--frames", "5"]):
                r = run(["stream"] + server + bad)
                check(r.returncode == 2, f"usage error {bad}: exit {r.returncode}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

        # 7. token
        tok = os.path.join(tmp, "token")
        with open(tok, "w") as f:
            f.write("s3cret-token\n")
        proc, base = start_server(models, ["--token-file", tok])
        try:
            r = run(["stream", "--server", base, "--model", name, "--demo", "heating-ramp",
                     "--frames", "20", "--quiet"], env={k: v for k, v in os.environ.items()
                                                        if k != "PHASEID_TOKEN"})
            check(r.returncode == 1 and "token" in r.stderr.lower(), f"no token: {r.returncode} {r.stderr}")
            r = run(["stream", "--server", base, "--model", name, "--demo", "heating-ramp",
                     "--frames", "20", "--quiet", "--token", "s3cret-token"])
            check(r.returncode == 0, f"with token: {r.returncode} {r.stderr}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"test_stream_cli: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
