#!/usr/bin/env python3
"""XRD inference throughput: wraps `phaseid bench classify`.

Without --model, first trains the small CNN of
tests/integration/test_real_xrd_model.py for a few steps (throughput does not
depend on the weights) on --phases, then runs the benchmark and prints its
table; --json keeps the raw numbers.

  python3 benchmarks/bench_infer.py --phaseid build-real/cli/phaseid \\
      --phases ../shared/data/xrd/li-mn-ti-o-f/references --json infer.json
"""
import argparse
import os
import subprocess
import sys
import tempfile

SMALL = ("conv1d(16,k9,s2,p4) bn relu maxpool(2) conv1d(32,k7,s2,p3) bn relu maxpool(2) "
         "conv1d(32,k5,p2) bn relu maxpool(2) conv1d(64,k3,p1) bn relu maxpool(2) "
         "flatten dense(128) relu head")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phaseid", default=os.environ.get("PHASEID_BIN", "phaseid"))
    ap.add_argument("--model", help="trained model file (default: train the small CNN)")
    ap.add_argument("--phases", default="builtin", help="library to train on without --model")
    ap.add_argument("--arch", default=SMALL, help="spec to train without --model")
    ap.add_argument("--grid", default="10:80:0.02", help="grid to train on without --model")
    ap.add_argument("--batch", default="1,64,4096")
    ap.add_argument("--seconds", default="3")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if not model:
            model = os.path.join(tmp, "bench.h5")
            r = subprocess.run([a.phaseid, "train", "--modality", "xrd", "--phases", a.phases,
                                "--out", model, "--arch", a.arch, "--grid", a.grid,
                                "--steps", "10", "--warmup", "2", "--val", "0", "--quiet"],
                               capture_output=True, text=True)
            if r.returncode:
                sys.stderr.write(r.stdout + r.stderr)
                return 1
        cmd = [a.phaseid, "bench", "classify", "--model", model, "--batch", a.batch,
               "--seconds", a.seconds, "--device", a.device]
        if a.json:
            cmd += ["--json", a.json]
        print("$ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
