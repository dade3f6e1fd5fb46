#!/usr/bin/env python3
"""The bad-input suite of `phaseid serve`: every case is answered with the
right 4xx/5xx status and a JSON {"error": ...} body (or, for broken
connections, the connection is dropped) while the server keeps serving; a
good request after each group still works, and SIGTERM ends it with exit 0
(under AddressSanitizer a memory error would have killed it instead).

Cases: malformed JSON (including NaN literals), wrong datatype, wrong shape,
wrong value count, NaN/Inf in JSON and binary data, integers out of range,
truncated and overlong binary sections, a bad Inference-Header-Content-Length,
an empty body, a batch over the queue, a body over --max-body-mb (declared:
413 before the body is sent; chunked: 413 after it), an unknown model, bad
stream headers, a slow client (dropped after --timeout-s while others are
served), clients gone mid-upload (infer and stream), and bytes that are not
HTTP.

Run by ctest with PHASEID_BIN set; exits 1 listing failures.
"""
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

from checks import check, failures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_fixture import (TINY_POINTS, http, json_error, make_tiny_model,  # noqa: E402
                            server_log, start_server, stop_server)

N = TINY_POINTS
TIMEOUT_S = 3


def pattern(i=0):
    return [20.0 + 400.0 * (abs(j - 300 - 50 * i) < 4) + 200.0 * (abs(j - 900) < 3)
            for j in range(N)]


def infer_json(inputs, **extra):
    d = {"inputs": inputs}
    d.update(extra)
    return json.dumps(d).encode()


def pat_input(data, shape=None, dtype="FP32"):
    return {"name": "patterns", "shape": shape or [1, N], "datatype": dtype, "data": data}


def expect(base, status, body, headers=None, path="/v2/models/xrd-tiny/infer", what=""):
    st, h, b = http(base, "POST", path, body, headers=headers)
    msg = json_error(b)
    check(st == status and msg, "%s: status %s (want %d), body %r" % (what, st, status, b[:200]))
    return msg or ""


def good_request(base, what):
    st, h, b = http(base, "POST", "/v2/models/xrd-tiny/infer", infer_json([pat_input(pattern())]))
    check(st == 200 and "outputs" in json.loads(b), "good request after %s: %s" % (what, st))


def binary_body(hdr_inputs, payload, outputs=None):
    h = {"inputs": hdr_inputs}
    if outputs:
        h["outputs"] = outputs
    j = json.dumps(h).encode()
    return j + payload, {"Inference-Header-Content-Length": str(len(j)),
                         "Content-Type": "application/octet-stream"}


def json_cases(base):
    p = pattern()
    expect(base, 400, b'{"inputs": [', what="malformed JSON")
    expect(base, 400, b'{"inputs": [{"name": "patterns", "shape": [1, 3], "datatype": "FP32", '
                      b'"data": [NaN, 1, 2]}]}', what="NaN literal")
    expect(base, 400, b"", what="empty body")
    expect(base, 400, b"\xff\xfe\x00garbage", what="binary garbage")
    expect(base, 400, b"[]", what="array instead of object")
    m = expect(base, 400, infer_json([pat_input(p, dtype="FP64")]), what="wrong datatype")
    check("datatype" in m, "datatype message %r" % m)
    m = expect(base, 400, infer_json([pat_input(p[:-1], shape=[1, N - 1])]), what="wrong shape")
    check(str(N) in m, "shape message names the grid %r" % m)
    expect(base, 400, infer_json([pat_input(p, shape=[2, N])]), what="too few values")
    expect(base, 400, infer_json([pat_input(p, shape=[1, 1, N])]), what="3-d shape")
    expect(base, 400, infer_json([pat_input(p[:10] + [1e39] + p[11:])]), what="Inf (1e39) value")
    expect(base, 400, infer_json([pat_input([int(v) for v in p[:5]] + [-1] + [int(v) for v in
                                                                                p[6:]],
                                            dtype="UINT16")]), what="negative UINT16")
    expect(base, 400, infer_json([pat_input([70000] * N, dtype="UINT16")]), what="UINT16 overflow")
    expect(base, 400, infer_json([pat_input(p)], parameters={"top_k": -2}), what="bad top_k")
    expect(base, 400, infer_json([pat_input(p)], outputs=[{"name": "logits"}]),
           what="unknown output")
    expect(base, 400, infer_json([pat_input([5.0] * N)]), what="flat pattern")
    big = [pattern(i % 8) for i in range(65)]
    expect(base, 400, infer_json([pat_input(big, shape=[65, N])]), what="batch over the queue")
    st, h, b = http(base, "POST", "/v2/models/xrd-tiny/infer",
                    infer_json([pat_input(big[:64], shape=[64, N])]))
    check(st == 200 and json.loads(b)["outputs"][0]["shape"][0] == 64,
          "a batch that fills the idle queue exactly is served: %s %r" % (st, b[:200]))
    expect(base, 404, infer_json([pat_input(p)]), path="/v2/models/nope/infer",
           what="unknown model")
    good_request(base, "JSON cases")


def binary_cases(base):
    raw = struct.pack("<%df" % N, *pattern())
    inp = [{"name": "patterns", "shape": [1, N], "datatype": "FP32",
            "parameters": {"binary_data_size": 4 * N}}]
    body, h = binary_body(inp, raw)
    st, hh, b = http(base, "POST", "/v2/models/xrd-tiny/infer", body, headers=h)
    check(st == 200, "binary good %s %s" % (st, b[:200]))
    body, h = binary_body(inp, raw[:-7])
    m = expect(base, 400, body, h, what="truncated binary section")
    check("truncated" in m, "truncated message %r" % m)
    body, h = binary_body(inp, raw + b"\x00" * 8)
    expect(base, 400, body, h, what="bytes after the binary sections")
    nan = struct.pack("<%df" % N, *(pattern()[:5] + [float("nan")] + pattern()[6:]))
    body, h = binary_body(inp, nan)
    expect(base, 400, body, h, what="NaN in binary data")
    inf = struct.pack("<%df" % N, *(pattern()[:5] + [float("inf")] + pattern()[6:]))
    body, h = binary_body(inp, inf)
    expect(base, 400, body, h, what="Inf in binary data")
    body, h = binary_body(inp, raw)
    h["Inference-Header-Content-Length"] = "12abc"
    expect(base, 400, body, h, what="bad header length")
    h["Inference-Header-Content-Length"] = str(len(body) + 10)
    expect(base, 400, body, h, what="header length past the body")
    bad = [dict(inp[0], parameters={"binary_data_size": 4 * N + 4})]
    body, h = binary_body(bad, raw + b"\0" * 4)
    expect(base, 400, body, h, what="wrong binary_data_size")
    good_request(base, "binary cases")


def raw_request(base, data, read=True, timeout=10):
    host, port = base.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
                if b"\r\n\r\n" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                    if cl and len(rest) >= int(cl[0].split(b":")[1]):
                        break
        except socket.timeout:
            pass
    s.close()
    return out


def limit_cases(base):
    # declared over the limit: answered 413 before any body byte is sent
    out = raw_request(base, b"POST /v2/models/xrd-tiny/infer HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 2097152\r\nContent-Type: application/json\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 413") and json_error(body), "declared body over the limit: %r"
          % out[:300])
    # chunked over the limit: read (and dropped), then 413
    host, port = base.split("//")[1].split(":")
    import http.client as hc
    c = hc.HTTPConnection(host, int(port), timeout=60)

    def gen():
        for _ in range(40):
            yield b" " * 65536  # 2.5 MiB of whitespace

    c.request("POST", "/v2/models/xrd-tiny/infer", body=gen(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    b = r.read()
    check(r.status == 413 and json_error(b), "chunked body over the limit: %s %r" % (r.status, b))
    c.close()
    good_request(base, "limit cases")


def stream_cases(base):
    frame = struct.pack("<%dH" % N, *[int(v) for v in pattern()])
    for hdr, what in [({}, "no frame headers"),
                      ({"X-Frame-Size": str(N + 1), "X-Frame-Dtype": "UINT16"}, "frame size"),
                      ({"X-Frame-Size": str(N), "X-Frame-Dtype": "INT8"}, "dtype"),
                      ({"X-Frame-Size": "x", "X-Frame-Dtype": "UINT16"}, "frame size text"),
                      ({"X-Frame-Size": str(N), "X-Frame-Dtype": "UINT16",
                        "X-Stream-Id": "../../x"}, "stream id")]:
        expect(base, 400, frame, hdr, path="/v1/models/xrd-tiny/stream", what="stream " + what)
    expect(base, 404, frame, {"X-Frame-Size": str(N), "X-Frame-Dtype": "UINT16"},
           path="/v1/models/nope/stream", what="stream unknown model")
    good_request(base, "stream cases")


def connection_cases(base):
    host, port = base.split("//")[1].split(":")
    # slow client: half a request, then silence; dropped after --timeout-s
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT_S + 10)
    s.sendall(b"POST /v2/models/xrd-tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
              b"\r\n{\"inputs\": [")
    t0 = time.time()
    served = []

    def others():  # the server keeps answering others meanwhile
        while time.time() - t0 < TIMEOUT_S:
            st, h, b = http(base, "GET", "/v2/health/ready")
            served.append(st)
            time.sleep(0.2)

    th = threading.Thread(target=others)
    th.start()
    try:
        d = s.recv(4096)
    except (socket.timeout, ConnectionResetError):
        d = None
    dt = time.time() - t0
    th.join()
    check(d == b"" and TIMEOUT_S - 0.5 <= dt <= TIMEOUT_S + 5,
          "slow client dropped after %.1f s (timeout %d s), got %r" % (dt, TIMEOUT_S, d))
    check(len(served) >= 5 and all(x == 200 for x in served), "served during a slow client %s"
          % served)
    s.close()
    # slow headers (never finished)
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT_S + 10)
    s.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t0 = time.time()
    try:
        d = s.recv(4096)
    except (socket.timeout, ConnectionResetError):
        d = None
    check(d == b"" and time.time() - t0 <= TIMEOUT_S + 5, "slow headers dropped: %r" % d)
    s.close()
    # client gone mid-upload: infer body and a stream cut mid-frame
    for path, hdr in [("/v2/models/xrd-tiny/infer", b"Content-Length: 500000\r\n"),
                      ("/v1/models/xrd-tiny/stream", b"Transfer-Encoding: chunked\r\n"
                       b"X-Frame-Size: %d\r\nX-Frame-Dtype: UINT16\r\n" % N)]:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + hdr + b"\r\n")
        if b"chunked" in hdr:
            frames = struct.pack("<%dH" % N, *[int(v) for v in pattern()]) * 50
            part = frames[:len(frames) - 1000]
            s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        else:
            s.sendall(b'{"inputs": [{"name": "patterns", "data": [' + b"1, " * 30000)
        time.sleep(0.3)
        s.close()
    # not HTTP at all
    out = raw_request(base, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200),
                      timeout=TIMEOUT_S + 5)
    check(not out.startswith(b"HTTP/1.1 200"), "garbage answered %r" % out[:80])
    out = raw_request(base, b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 300000 +
                      b"\r\n\r\n", timeout=TIMEOUT_S + 5)
    check(out == b"" or out.split(b"\r\n")[0].split()[1] in (b"413", b"431", b"400"),
          "huge header answered %r" % out[:80])
    time.sleep(0.5)
    good_request(base, "connection cases")
    check(http(base, "GET", "/v2/health/ready")[0] == 200, "ready after connection cases")


def main():
    tmp = tempfile.mkdtemp(prefix="phaseid-srv-bad-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    make_tiny_model(models)
    proc, base = start_server(models, ["--max-body-mb", "1", "--timeout-s", str(TIMEOUT_S),
                                       "--max-queue", "64"])
    try:
        json_cases(base)
        binary_cases(base)
        limit_cases(base)
        stream_cases(base)
        connection_cases(base)
        st, h, b = http(base, "GET", "/metrics")
        fails = [ln for ln in b.decode().splitlines()
                 if ln.startswith('phaseid_inference_request_failure_total{model="xrd-tiny"}')]
        check(fails and float(fails[0].split()[-1]) >= 20, "failures counted: %s" % fails)
    finally:
        rc = stop_server(proc)
        log = server_log(proc)
        check(rc == 0, "exit status %s after the suite; log:\n%s" % (rc, log[-3000:]))
        check("ERROR: AddressSanitizer" not in log and "runtime error" not in log,
              "sanitizer report:\n" + log[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
