#!/usr/bin/env python3
"""XRD training throughput: the built-in model's recipe, on the CPU.

Runs `scripts/train-builtin-model.sh` (the recipe that trains the shipped
model: patterns simulated on the fly by worker threads, batch 128, AdamW)
for --steps steps with no validation or calibration set, for each binary
(--bin LABEL=PATH, repeatable, e.g. the previous build beside this one) and
each thread count, --repeat times in turn (binaries alternate, since the VM
is shared). Reads the training loop's own samples/s from phaseid's output
and the process's CPU time (user, system) from getrusage, prints a table and
writes every run to --json (default benchmarks/results/train_throughput.json)
with the machine and the exact commands. Results do not depend on the thread
count (the kernels' loops give the same bits on any number of threads), so
the runs also record a checksum of the trained parameters per binary.

  python3 benchmarks/train_throughput.py --steps 1000
  python3 benchmarks/train_throughput.py --bin before=/tmp/old/phaseid \\
      --bin after=build/cli/phaseid --threads 1,0 --repeat 2
"""
import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import ROOT, find_bin, machine  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "train-builtin-model.sh")


def params_digest(path):
    """SHA-256 of the model file's parameters (h5py), or None without h5py."""
    try:
        import h5py
    except ImportError:
        return None
    with h5py.File(path, "r") as f:
        return hashlib.sha256(f["params"][()].tobytes()).hexdigest()[:16]


def run_once(bin_, steps, threads, tmp):
    out = os.path.join(tmp, "m.h5")
    cmd = ["bash", SCRIPT, out, "--steps", str(steps), "--val", "0", "--calib", "0"]
    if threads:  # 0: phaseid's default, every core
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, PHASEID_BIN=bin_)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
        raise SystemExit(f"failed ({r.returncode}): PHASEID_BIN={bin_} {' '.join(cmd)}")
    m = re.search(r"^samples/s: ([0-9.]+)", r.stdout + r.stderr, re.M)
    hb = re.search(r"(\d+) steps x (\d+)", r.stdout + r.stderr)
    if not m or not hb:
        raise SystemExit("no 'samples/s:' or 'N steps x B' line in phaseid train's output")
    batch = int(hb.group(2))
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    return {"samples_per_s": float(m.group(1)), "wall_s": round(wall, 2),
            "user_s": round(user, 2), "sys_s": round(sys_, 2),
            "batch": batch,
            "samples_per_cpu_s": round(steps * batch / (user + sys_), 1) if user + sys_ > 0 else None,
            "load_before": round(load, 2), "params_sha256_16": params_digest(out),
            "command": f"PHASEID_BIN={bin_} {' '.join(cmd)}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", action="append", default=[],
                    help="LABEL=PATH of a phaseid binary (repeatable; default: this build)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", default="0", help="comma list (0 = all cores)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results",
                                                   "train_throughput.json"))
    a = ap.parse_args()
    bins = []
    for b in a.bin or ["this=" + find_bin(None)]:
        label, _, path = b.partition("=")
        if not path:
            ap.error(f"--bin {b}: expected LABEL=PATH")
        bins.append((label, find_bin(path)))
    threads = [int(t) for t in a.threads.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            for t in threads:
                for label, path in bins:
                    r = run_once(path, a.steps, t, tmp)
                    r.update({"bin": label, "threads": t, "repeat": rep})
                    runs.append(r)
                    print(f"  {label:<10} threads {t}: {r['samples_per_s']:8.1f} samples/s "
                          f"(user {r['user_s']} s, sys {r['sys_s']} s)", flush=True)
    print()
    print(f"{'binary':<10} {'threads':>7} {'samples/s':>10} {'per CPU-s':>10} {'user s':>8} "
          f"{'sys s':>7} {'wall s':>7}  params")
    for r in runs:
        print(f"{r['bin']:<10} {r['threads']:>7} {r['samples_per_s']:>10.1f} "
              f"{r['samples_per_cpu_s'] or 0:>10.1f} {r['user_s']:>8.1f} {r['sys_s']:>7.1f} "
              f"{r['wall_s']:>7.1f}  {r['params_sha256_16']}")
    res = {"benchmark": "train_throughput", "date": time.strftime("%Y-%m-%d"),
           "machine": machine(), "steps": a.steps, "recipe": SCRIPT,
           "note": "samples/s: phaseid train's own figure for the training loop (simulation "
                   "on worker threads overlapped with the steps); no validation or "
                   "calibration set; CPU time includes the start (phase library, twins)",
           "runs": runs}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
