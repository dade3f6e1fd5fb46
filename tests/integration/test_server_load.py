#!/usr/bin/env python3
"""Overload and deadlines of `phaseid serve`.

A deliberately heavy model (two 64-channel convolutions on the full
1401-point grid, a few training steps: its weights do not matter here) makes
the server's capacity small enough for a Python client to offer ten times it.

1. Capacity C (requests/s of 64 UINT16 patterns) is measured closed-loop
   with 4 clients.
2. Overload: requests are offered open-loop at 10 C for 4 s from 48
   threads on keep-alive connections. Every request gets an answer (no
   connection error), only 200 or 503 (with Retry-After and a JSON error),
   the achieved offered rate is at least 9 C, the model keeps computing
   (its compute time covers at least 80 % of the overload: shedding does
   not starve it) and the server stays ready; the success and failure
   counters of /metrics match the answers exactly.
3. Deadlines: a second server with --timeout-s 1 and a long queue gets
   simultaneous requests worth about 2.5 s of work (doubled, at most
   twice, if none waited past the deadline): the first are answered 200,
   those that waited past 1 s get 504, nothing else.

Run by ctest with PHASEID_BIN set; exits 1 listing failures.
"""
import http.client as httpclient
import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time

from checks import check, failures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import (TINY_GRID, TINY_POINTS, http, json_error,  # noqa: E402
                            make_tiny_model, server_log, start_server, stop_server)

N = TINY_POINTS
B = 64
HEAVY = "conv1d(64,k9,p4) relu conv1d(64,k9,p4) relu gpool dense(32) relu head"


def make_body():
    rows = []
    for i in range(B):
        rows.append(struct.pack("<%dH" % N, *[20 + 300 * (abs(j - (37 * i) % N) < 4)
                                              for j in range(N)]))
    payload = b"".join(rows)
    hdr = json.dumps({"inputs": [{"name": "patterns", "shape": [B, N], "datatype": "UINT16",
                                  "parameters": {"binary_data_size": len(payload)}}],
                      "outputs": [{"name": "top_phases", "parameters": {"binary_data": True}}]
                      }).encode()
    return hdr + payload, {"Inference-Header-Content-Length": str(len(hdr)),
                           "Content-Type": "application/octet-stream"}


BODY, HEADERS = make_body()


class Client:
    def __init__(self, base):
        host, port = base.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.c = None

    def post(self):
        """(status, retry_after, body) of one infer request; reconnects once."""
        for attempt in (0, 1):
            if self.c is None:
                self.c = httpclient.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.c.request("POST", "/v2/models/xrd-heavy/infer", body=BODY, headers=HEADERS)
                r = self.c.getresponse()
                b = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, r.getheader("Retry-After"), b
            except (httpclient.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        return None


def metric(base, name):
    st, h, b = http(base, "GET", "/metrics")
    for line in b.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def capacity(base, seconds=3.0, n=4):
    done = [0] * n

    def run(i):
        c = Client(base)
        t_end = time.time() + seconds
        while time.time() < t_end:
            st, _, _ = c.post()
            if st == 200:
                done[i] += 1

    th = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    return sum(done) / (time.time() - t0)


def overload(base, cap):
    rate = 10.0 * cap
    seconds = 4.0
    total = max(40, int(rate * seconds))
    lock = threading.Lock()
    nxt = [0]
    results = []  # (status, retry_after, is_json_error, latency)
    errors = []
    t0 = time.time() + 0.2

    def run():
        c = Client(base)
        while True:
            with lock:
                k = nxt[0]
                if k >= total:
                    return
                nxt[0] += 1
            wait = t0 + k / rate - time.time()
            if wait > 0:
                time.sleep(wait)
            t_send = time.time()
            try:
                st, ra, b = c.post()
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                results.append((st, ra, st == 200 or bool(json_error(b)), time.time() - t_send,
                                t_send))

    time.sleep(0.3)  # counters are updated once an answer is fully sent
    s0 = metric(base, 'phaseid_inference_request_success_total{model="xrd-heavy"}')
    f0 = metric(base, 'phaseid_inference_request_failure_total{model="xrd-heavy"}')
    c0 = metric(base, 'phaseid_compute_duration_seconds_sum{model="xrd-heavy"}')
    th = [threading.Thread(target=run) for _ in range(48)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    sends = sorted(r[4] for r in results)
    span = (sends[-1] - sends[0]) if len(sends) > 1 else 1.0
    offered = (len(sends) - 1) / span if span > 0 else 0.0
    codes = {}
    for r in results:
        codes[r[0]] = codes.get(r[0], 0) + 1
    ok = codes.get(200, 0)
    lat_ok = sorted(r[3] for r in results if r[0] == 200)
    p = (lambda q: lat_ok[min(len(lat_ok) - 1, int(q * len(lat_ok)))] if lat_ok else float("nan"))
    print("capacity %.1f req/s (%d patterns each); offered %.1f req/s (%.1fx) for %.1f s: %s; "
          "200 latency p50 %.0f ms p99 %.0f ms" % (cap, B, offered, offered / cap, span, codes,
                                                  1e3 * p(0.5), 1e3 * p(0.99)), flush=True)
    check(not errors, "%d requests without an answer: %s" % (len(errors), errors[:3]))
    check(len(results) == total, "answers %d of %d" % (len(results), total))
    check(set(codes) <= {200, 503}, "statuses other than 200/503: %s" % codes)
    check(codes.get(503, 0) > 0, "no 503 at 10x capacity: %s" % codes)
    check(all(r[1] == "1" and r[2] for r in results if r[0] == 503),
          "503 without Retry-After: 1 and a JSON error")
    check(offered >= 9.0 * cap, "offered only %.1fx capacity" % (offered / cap))
    time.sleep(0.3)
    s1 = metric(base, 'phaseid_inference_request_success_total{model="xrd-heavy"}')
    f1 = metric(base, 'phaseid_inference_request_failure_total{model="xrd-heavy"}')
    c1 = metric(base, 'phaseid_compute_duration_seconds_sum{model="xrd-heavy"}')
    # Shedding load must not starve the model: from the first request to the
    # last answer the batcher computes nearly all the time. Its compute time
    # is wall time, so this holds on a machine shared with other jobs; the
    # goodput against the closed-loop capacity is printed, not asserted
    # (speed belongs to the benchmarks).
    window = max(r[4] + r[3] for r in results) - sends[0]
    busy = (c1 - c0) / window
    print("batcher busy %.2f of %.1f s; goodput %.2f of capacity"
          % (busy, window, ok / (cap * span)), flush=True)
    check(ok > 0 and busy >= 0.8, "model busy only %.2f of the overload (%d served)" % (busy, ok))
    check(s1 - s0 == ok and f1 - f0 == codes.get(503, 0),
          "metrics: %d successes, %d failures counted for %s" % (s1 - s0, f1 - f0, codes))
    check(http(base, "GET", "/v2/health/ready")[0] == 200, "ready after the overload")


def burst(base, n):
    """n requests sent at once; [(status, is 200 or a JSON error)]."""
    out = []
    lock = threading.Lock()
    gate = threading.Barrier(n)

    def run():
        c = Client(base)
        gate.wait()
        st, _, b = c.post()
        with lock:
            out.append((st, st == 200 or bool(json_error(b))))

    th = [threading.Thread(target=run) for _ in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return out


def deadlines(models):
    proc, base = start_server(models, ["--timeout-s", "1", "--max-queue", "16384",
                                       "--max-batch", "64"])
    try:
        cap = capacity(base, seconds=1.5, n=2)
        # enough simultaneous work for about 2.5 s of queue; on a machine
        # shared with other jobs the capacity can change after it was
        # measured, so a burst that finished inside the deadline is doubled
        n = max(6, int(2.5 * cap) + 2)
        for _ in range(3):
            out = burst(base, n)
            codes = {}
            for st, _ in out:
                codes[st] = codes.get(st, 0) + 1
            print("deadline 1 s, %d simultaneous requests at %.1f req/s: %s" % (n, cap, codes),
                  flush=True)
            if codes.get(504, 0) > 0 or set(codes) - {200}:
                break
            n = min(240, 2 * n)  # 240 x 64 frames fit the queue of 16384
        check(set(codes) <= {200, 504}, "deadline statuses %s" % codes)
        check(codes.get(200, 0) > 0 and codes.get(504, 0) > 0, "deadline: both 200 and 504 %s"
              % codes)
        check(all(j for _, j in out), "504 without a JSON error")
    finally:
        rc = stop_server(proc)
        check(rc == 0, "deadline server exit %s: %s" % (rc, server_log(proc)[-1500:]))


def main():
    tmp = tempfile.mkdtemp(prefix="phaseid-srv-load-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    make_tiny_model(models, name="xrd-heavy", arch=HEAVY, grid=TINY_GRID, steps=2, calib=50)
    proc, base = start_server(models, ["--max-queue", str(4 * B), "--max-batch", str(B),
                                       "--max-connections", "128"])
    try:
        cap = capacity(base)
        check(cap > 0, "capacity %.2f" % cap)
        if cap > 0:
            overload(base, cap)
    finally:
        rc = stop_server(proc)
        check(rc == 0, "exit status %s after the overload; log:\n%s"
              % (rc, server_log(proc)[-2000:]))
    deadlines(models)
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
