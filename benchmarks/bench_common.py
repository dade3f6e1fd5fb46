"""Helpers shared by the benchmark scripts: find the phaseid binary, run a
command (exit with its stderr on failure, log it), decode HDF5 strings, and
describe the machine for the results JSON."""
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def find_bin(arg):
    for c in [arg, os.environ.get("PHASEID_BIN"), os.path.join(ROOT, "build", "cli", "phaseid")]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("phaseid binary not found (use --phaseid or PHASEID_BIN)")


def sh(cmd, log):
    """Run cmd, append it to log; exit on failure; returns (stdout, seconds)."""
    log.append(" ".join(cmd))
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout, time.time() - t0


def s(v):
    """An HDF5 string attribute or element as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "loadavg": list(os.getloadavg())}
