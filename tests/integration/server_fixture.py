"""Shared fixture for the tests that run the real `phaseid serve`.

    from server_fixture import make_tiny_model, start_server, stop_server

    models = tempfile.mkdtemp()
    make_tiny_model(models)                     # models/xrd-tiny.h5, a few seconds
    proc, base = start_server(models, ["--max-queue", "512"])
    ...                                         # HTTP against base ("http://127.0.0.1:PORT")
    rc = stop_server(proc)                      # SIGTERM, drain, exit status (0 expected)

The server binds 127.0.0.1 on a free port the kernel picks (--port 0) and
prints it; start_server reads it and polls GET /v2/health/ready until 200.
Its stderr goes to a file (proc.stderr_path, read with server_log(proc)).
The binary is $PHASEID_BIN (ctest sets it), else `phaseid` on PATH.
No shipped model is used: make_tiny_model trains one with the CLI.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("PHASEID_BIN", "phaseid")

TINY_ARCH = ("conv1d(8,k9,s4,p4) relu maxpool(4) conv1d(16,k5,s2,p2) relu gpool dense(32) "
             "relu head")
TINY_GRID = "10:80:0.05"  # 1401 points, 2-theta degrees
TINY_POINTS = 1401


def make_tiny_model(dir, name="xrd-tiny", arch=TINY_ARCH, grid=TINY_GRID, steps=60, calib=200):
    """Train a small XRD model on the built-in phases into DIR/NAME.h5; returns its path."""
    path = os.path.join(dir, name + ".h5")
    cmd = [BIN, "train", "--modality", "xrd", "--phases", "builtin", "--out", path, "--arch",
           arch, "--steps", str(steps), "--batch", "32", "--grid", grid, "--val", "0",
           "--calib", str(calib), "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("phaseid train failed (%d): %s%s" % (p.returncode, p.stdout, p.stderr))
    return path


def server_log(proc):
    """The server's stderr so far."""
    try:
        with open(proc.stderr_path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def start_server(models_dir, extra_args=(), timeout=120, env=None, wait_ready=True):
    """Start `phaseid serve` on 127.0.0.1 (free port); returns (proc, base_url).

    With wait_ready, polls /v2/health/ready until it answers 200 (raises on
    timeout or early exit)."""
    fd, err_path = tempfile.mkstemp(prefix="phaseid-serve-", suffix=".log")
    errf = os.fdopen(fd, "w")
    cmd = [BIN, "serve", "--models", models_dir, "--host", "127.0.0.1", "--port", "0"]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True,
                            env=env if env is not None else os.environ.copy())
    errf.close()
    proc.stderr_path = err_path
    line = proc.stdout.readline()  # "phaseid serve: listening on http://127.0.0.1:PORT"
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line or "")
    if not m:
        proc.wait(timeout=30)
        raise RuntimeError("server did not start (exit %s): %s %s"
                           % (proc.returncode, line, server_log(proc)))
    base = "http://127.0.0.1:%s" % m.group(1)
    if wait_ready:
        t_end = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.time() > t_end:
                stop_server(proc)
                raise RuntimeError("server not ready: " + server_log(proc))
            time.sleep(0.05)
    return proc, base


def stop_server(proc, timeout=60):
    """SIGTERM (drain) and wait; returns the exit status (killed: -9)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


def http(base, method, path, body=None, headers=None, timeout=60):
    """One request; returns (status, headers dict, body bytes) for any status."""
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def json_error(body):
    """The message of a {"error": "..."} body, or None when it is not one."""
    try:
        o = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(o, dict) and isinstance(o.get("error"), str) and o["error"]:
        return o["error"]
    return None
