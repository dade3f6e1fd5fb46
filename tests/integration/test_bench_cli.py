#!/usr/bin/env python3
"""`phaseid bench classify` from the command line (no timing is asserted:
speed is reported by benchmarks, not tested).

1. --arch with random weights on synthetic frames: exit 0, a row per batch
   size, and a --json file with the spec's parameter count (`phaseid arch
   --format json` says the same), one result per batch with frames > 0, and
   frames_rows 0 (synthetic).
2. --frames FILE.h5: a `phaseid synth xrd` dataset of 1-3-phase mixtures on
   the same grid runs; the text names the file and its pattern count, the
   JSON has frames_rows = that count.
3. Errors: --frames with a dataset on another grid (exit 1, names both point
   counts), a file that is not HDF5 (exit 1, names the file), a missing value
   or a bad batch list (exit 2).

Run by ctest as `python3 FILE` with PHASEID_BIN. Exits 1 listing failures.
"""
import json
import os
import subprocess
import sys
import tempfile

from checks import check, failures

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SPEC = "conv1d(8,k9,s2,p4) relu maxpool(4) flatten dense(32) relu head(sigmoid)"


def run(args):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=300)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        js = os.path.join(tmp, "b.json")
        base = ["bench", "classify", "--arch", SPEC, "--input", "1x1401", "--classes", "4",
                "--seconds", "0.1", "--threads", "1"]
        r = run(base + ["--batch", "1,8", "--json", js])
        check(r.returncode == 0, "synthetic run exit %d: %s" % (r.returncode, r.stderr))
        check("frames: synthetic" in r.stdout, "text names the synthetic frames")
        rows = [ln for ln in r.stdout.splitlines() if ln.split()[:1] in (["1"], ["8"])]
        check(len(rows) == 2, "a row per batch size: %s" % r.stdout)
        a = run(["arch", "--input", "1x1401", "--classes", "4", "--format", "json", SPEC])
        params = json.loads(a.stdout)["totals"]["params"] if a.returncode == 0 else None
        with open(js) as f:
            j = json.load(f)
        check(j["params"] == params, "params %s vs phaseid arch %s" % (j["params"], params))
        check([x["batch"] for x in j["results"]] == [1, 8], "results per batch")
        check(all(x["frames"] > 0 for x in j["results"]), "frames measured")
        check(j["frames_rows"] == 0, "synthetic: frames_rows 0")

        ds = os.path.join(tmp, "mix.h5")
        s = run(["synth", "xrd", "--phases", "builtin", "--n", "50", "--mixtures", "3",
                 "--two-theta", "10:80.01:0.05", "--out", ds, "--quiet"])
        check(s.returncode == 0, "synth: %s" % s.stderr)
        r = run(base + ["--batch", "16", "--frames", ds, "--json", js])
        check(r.returncode == 0, "--frames run exit %d: %s" % (r.returncode, r.stderr))
        check("frames: 50 patterns of " + ds in r.stdout, "text names the file: %s" % r.stdout)
        with open(js) as f:
            check(json.load(f)["frames_rows"] == 50, "frames_rows 50")

        other = os.path.join(tmp, "other.h5")
        run(["synth", "xrd", "--phases", "builtin", "--n", "5", "--two-theta", "10:80.01:0.1",
             "--out", other, "--quiet"])
        r = run(base + ["--batch", "4", "--frames", other])
        check(r.returncode == 1 and "701" in r.stderr and "1401" in r.stderr,
              "other grid refused: %d %s" % (r.returncode, r.stderr))
        junk = os.path.join(tmp, "junk.h5")
        with open(junk, "w") as f:
            f.write("not hdf5\n")
        r = run(base + ["--batch", "4", "--frames", junk])
        check(r.returncode == 1 and junk in r.stderr, "junk refused: %d %s"
              % (r.returncode, r.stderr))
        r = run(base + ["--frames"])
        check(r.returncode == 2 and "missing value" in r.stderr, "missing value: %s" % r.stderr)
        r = run(base + ["--batch", "0,8"])
        check(r.returncode == 2, "bad batch list: exit %d" % r.returncode)
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
