"""Shared by the integration tests (each runs as its own process): the list
of failed checks, the check that records one, whether this build has
`phaseid serve`, and a synthetic .xy writer."""
import math
import subprocess

failures = []


def check(cond, what):
    """Record `what` as a failure (and print it) when cond is false; returns cond."""
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def serve_available(bin_):
    """True when `bin_ serve --help` works (the build has the HTTP service)."""
    try:
        r = subprocess.run([bin_, "serve", "--help"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return r.returncode == 0 and "--models" in (r.stdout + r.stderr)


def write_xy(path, peaks, lo=10.0, hi=80.0, step=0.01, base=5.0):
    """A synthetic .xy pattern: Gaussian peaks [(two_theta, height)] on a floor."""
    n = int(round((hi - lo) / step)) + 1
    with open(path, "w") as f:
        f.write("# 2theta intensity\n")
        for i in range(n):
            x = lo + i * step
            y = base + sum(h * math.exp(-0.5 * ((x - c) / 0.1) ** 2) for c, h in peaks)
            f.write("%.4f %.6f\n" % (x, y))
