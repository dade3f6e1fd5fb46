#!/usr/bin/env python3
"""Streams and the graceful drain of `phaseid serve`.

1. One stream of 100,000 UINT16 frames (chunked upload, generated on the
   fly) gets exactly 100,000 result lines, seq 0..99,999 in order, each with
   three phases; the frame counter of /metrics grows by 100,000.
2. X-Seq-Start continues a stream over two requests.
3. SIGTERM while a 30,000-frame stream is still uploading, an infer request
   is waiting and an event stream is open: the stream gets all its lines in
   order, the infer request is answered, the event stream ends, new
   connections are refused, and the process exits 0.

Run by ctest with PHASEID_BIN set; exits 1 listing failures.
"""
import http.client as httpclient
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

from checks import check, failures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import (TINY_POINTS, http, make_tiny_model, server_log,  # noqa: E402
                            start_server, stop_server)

N = TINY_POINTS


def frame_block(count=64):
    """count distinct UINT16 frames (peaks at shifting positions)."""
    out = []
    for i in range(count):
        row = [20 + 300 * (abs(j - (97 * i) % N) < 4) + 150 * (abs(j - (53 * i + 400) % N) < 3)
               for j in range(N)]
        out.append(struct.pack("<%dH" % N, *row))
    return out


BLOCK = frame_block()


def gen_frames(n, pause_every=0, pause_s=0.0):
    sent = 0
    while sent < n:
        k = min(len(BLOCK), n - sent)
        yield b"".join(BLOCK[:k])
        sent += k
        if pause_every and (sent // len(BLOCK)) % pause_every == 0:
            time.sleep(pause_s)


def conn(base, timeout=600):
    host, port = base.split("//")[1].split(":")
    return httpclient.HTTPConnection(host, int(port), timeout=timeout)


def run_stream(base, n, seq_start=None, stream_id=None, pause_every=0, pause_s=0.0):
    hdr = {"X-Frame-Size": str(N), "X-Frame-Dtype": "UINT16", "Transfer-Encoding": "chunked"}
    if seq_start is not None:
        hdr["X-Seq-Start"] = str(seq_start)
    if stream_id:
        hdr["X-Stream-Id"] = stream_id
    c = conn(base)
    c.request("POST", "/v1/models/xrd-tiny/stream", body=gen_frames(n, pause_every, pause_s),
              headers=hdr, encode_chunked=True)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data.decode().splitlines()


def metric(base, name):
    st, h, b = http(base, "GET", "/metrics")
    for line in b.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def check_lines(lines, n, start, what):
    check(len(lines) == n, "%s: %d lines for %d frames" % (what, len(lines), n))
    bad = 0
    for i, line in enumerate(lines):
        o = json.loads(line)
        if o.get("seq") != start + i or len(o.get("phases", [])) != 3:
            bad += 1
            if bad < 4:
                print("  line %d: %s" % (i, line[:200]))
    check(bad == 0, "%s: %d lines out of order or without phases" % (what, bad))


def long_stream(base):
    f0 = metric(base, 'phaseid_inference_frames_total{model="xrd-tiny"}')
    t0 = time.time()
    st, lines = run_stream(base, 100000, stream_id="long")
    dt = time.time() - t0
    print("100,000 frames in %.1f s (%.0f frames/s)" % (dt, 100000 / dt), flush=True)
    check(st == 200, "long stream status %s" % st)
    check_lines(lines, 100000, 0, "100,000-frame stream")
    f1 = metric(base, 'phaseid_inference_frames_total{model="xrd-tiny"}')
    check(f1 - f0 == 100000, "frames counted %s" % (f1 - f0))
    st, a = run_stream(base, 5000, seq_start=0, stream_id="split")
    st2, b = run_stream(base, 5000, seq_start=5000, stream_id="split")
    check(st == 200 and st2 == 200, "split stream status")
    check_lines(a + b, 10000, 0, "stream continued with X-Seq-Start")


def drain(models):
    proc, base = start_server(models, ["--max-queue", "2048"])
    host, port = base.split("//")[1].split(":")
    out = {}

    def streamer():
        try:
            # about 2-3 s of upload: pauses between blocks of frames
            out["stream"] = run_stream(base, 30000, stream_id="drain", pause_every=20,
                                       pause_s=0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            out["stream"] = (None, repr(e))

    def events():
        try:
            c = conn(base, timeout=30)
            c.request("GET", "/v1/events")
            r = c.getresponse()
            n = 0
            while True:
                d = r.read1(65536)
                if not d:
                    break
                n += len(d)
            out["events"] = ("ended", n)
        except Exception as e:  # noqa: BLE001
            out["events"] = ("error", repr(e))

    ts = threading.Thread(target=streamer)
    te = threading.Thread(target=events)
    te.start()
    ts.start()
    time.sleep(0.8)
    # an infer request in flight at the signal
    body = json.dumps({"inputs": [{"name": "patterns", "shape": [8, N], "datatype": "UINT16",
                                   "data": [list(struct.unpack("<%dH" % N, BLOCK[i]))
                                            for i in range(8)]}]}).encode()
    c = conn(base, timeout=60)
    c.putrequest("POST", "/v2/models/xrd-tiny/infer")
    c.putheader("Content-Length", str(len(body)))
    c.endheaders()
    c.send(body[:len(body) // 2])
    # let the server accept the connection and read the headers: a connection
    # still in the kernel's backlog at SIGTERM is not accepted work
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t_sig = time.time()
    c.send(body[len(body) // 2:])
    r = c.getresponse()
    rb = r.read()
    check(r.status in (200, 503), "infer in flight at SIGTERM: %s %s" % (r.status, rb[:200]))
    c.close()
    time.sleep(0.3)
    refused = False
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        d = s.recv(1024)
        refused = d == b""
        s.close()
    except OSError:
        refused = True
    check(refused, "a new connection after SIGTERM was served")
    ts.join(timeout=300)
    te.join(timeout=60)
    try:
        rc = proc.wait(timeout=60)
    except Exception:  # noqa: BLE001
        rc = stop_server(proc)
    print("drained %.1f s after SIGTERM" % (time.time() - t_sig), flush=True)
    st, lines = out.get("stream", (None, []))
    check(st == 200, "stream in flight at SIGTERM: %s %s" % (st, str(lines)[:200]))
    if st == 200:
        check_lines(lines, 30000, 0, "stream across SIGTERM")
    check(out.get("events", ("?",))[0] == "ended", "event stream at SIGTERM: %s"
          % (out.get("events"),))
    check(rc == 0, "exit status after drain %s; log:\n%s" % (rc, server_log(proc)[-2000:]))


def main():
    tmp = tempfile.mkdtemp(prefix="phaseid-srv-stream-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    make_tiny_model(models)
    proc, base = start_server(models)
    try:
        long_stream(base)
    finally:
        rc = stop_server(proc)
        check(rc == 0, "exit status %s; log:\n%s" % (rc, server_log(proc)[-2000:]))
    drain(models)
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
