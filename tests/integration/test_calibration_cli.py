#!/usr/bin/env python3
"""`phaseid train` calibration and unknown-phase detection, end to end.

1. On a temporary library of 6 built-in CIFs, `--holdout-phases 0.25` holds
   out 2 phases (chosen from --seed) and trains a small CNN for a short run;
   requires exit 0, the temperature / ECE / threshold / AUROC lines on stdout,
   and a model file whose attributes are consistent: temperature finite and
   > 0, 0 <= ece <= 1 (and the printed "after" value), unknown_score
   "energy", unknown_threshold finite, 0 <= unknown_auroc <= 1, 4 classes
   (the known phases), the generator provenance naming the held-out phases.
2. Without --holdout-phases the model is calibrated too, with the AUROC
   sentinel 0.5 ("unknown_auroc_measured": false).
3. Bad --holdout-phases (nan, 1.0, -0.1) and --calib -1 exit 2 with a
   message and no model file.

Run by ctest as `python3 FILE` with PHASEID_BIN set. Needs h5py and numpy
(exit 77, skipped, when they are missing). Exits 1 with every failure listed.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

from checks import check, failures

try:
    import h5py
    import numpy as np  # noqa: F401  (h5py needs it; imported for the skip check)
except ImportError as e:  # pragma: no cover
    print(f"skipped: {e} (pip install h5py numpy)")
    sys.exit(77)

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SRC = os.environ.get("PHASEID_SOURCE_DIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
ARCH = "conv1d(8,k9,s2,p4) bn relu maxpool(4) conv1d(16,k9,s2,p4) bn relu maxpool(4) " \
       "flatten dense(32) relu head"
STEMS = ["NaCl_225", "Si_227", "TiO2_136", "TiO2_141", "MnO_225", "Al2O3_167"]


def run(args):
    return subprocess.run([BIN, "train"] + args, capture_output=True, text=True, timeout=600)


def attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "lib")
        os.mkdir(lib)
        for s in STEMS:
            shutil.copy(os.path.join(SRC, "data", "phases", s + ".cif"), lib)
        base = ["--modality", "xrd", "--phases", lib, "--arch", ARCH, "--grid", "10:80:0.05",
                "--batch", "32", "--val", "64", "--threads", "2", "--lr", "3e-3",
                "--seed", "5", "--quiet"]
        out = os.path.join(tmp, "m.h5")
        r = run(base + ["--out", out, "--steps", "120", "--calib", "400",
                        "--holdout-phases", "0.25"])
        check(r.returncode == 0, f"train exit {r.returncode}: {r.stderr[-500:]}")
        print(r.stdout, end="")
        for line in ("temperature:", "ECE:", "unknown threshold", "unknown AUROC:"):
            check(line in r.stdout, f"no '{line}' line")
        m = re.search(r"ECE: ([0-9.]+) before, ([0-9.]+) after", r.stdout)
        check(m is not None, "ECE line format")
        if m:
            check(float(m.group(2)) <= float(m.group(1)) + 1e-4, "ECE after > before")
        check(os.path.isfile(out), "model file missing")
        if os.path.isfile(out):
            with h5py.File(out, "r") as f:
                a = f.attrs
                t = float(a["temperature"])
                ece = float(a["ece"])
                thr = float(a["unknown_threshold"])
                auroc = float(a["unknown_auroc"])
                check(math.isfinite(t) and t > 0, f"temperature {t}")
                check(0 <= ece <= 1, f"ece {ece}")
                if m:
                    check(abs(ece - float(m.group(2))) < 1e-4, "stored ECE != printed")
                check(attr_str(a["unknown_score"]) == "energy", "unknown_score")
                check(math.isfinite(thr) and thr < 1e29, f"unknown_threshold {thr}")
                check(0 <= auroc <= 1, f"unknown_auroc {auroc}")
                check(int(a["n_classes"]) == 4, f"n_classes {a['n_classes']} (want 4 known)")
                gen = json.loads(attr_str(a["generator"]))
                check(gen.get("calibrated") is True, "generator: calibrated")
                check(gen.get("unknown_auroc_measured") is True, "generator: AUROC measured")
                held = gen.get("holdout_phases", [])
                check(len(held) == 2, f"held-out phases {held}")
                names = [attr_str(x) for x in f["phases/names"][...]]
                check(sorted(names + held) == sorted(STEMS), f"known {names} + held {held}")
                check(os.path.realpath(attr_str(a["library"])) == os.path.realpath(lib),
                      f"library {attr_str(a['library'])}")

        # same seed -> same held-out phases
        out_b = os.path.join(tmp, "m_b.h5")
        r = run(base + ["--out", out_b, "--steps", "5", "--warmup", "1", "--calib", "64",
                        "--holdout-phases", "0.25"])
        check(r.returncode == 0, f"repeat exit {r.returncode}: {r.stderr[-300:]}")
        if os.path.isfile(out) and os.path.isfile(out_b):
            with h5py.File(out, "r") as f, h5py.File(out_b, "r") as g:
                ga = json.loads(attr_str(f.attrs["generator"]))
                gb = json.loads(attr_str(g.attrs["generator"]))
                check(ga.get("holdout_phases") == gb.get("holdout_phases"),
                      "held-out phases not reproducible from the seed")

        out0 = os.path.join(tmp, "m0.h5")
        r = run(base + ["--out", out0, "--steps", "20", "--calib", "200"])
        check(r.returncode == 0, f"no-holdout exit {r.returncode}: {r.stderr[-500:]}")
        check("not measured" in r.stdout, "no-holdout AUROC line")
        if os.path.isfile(out0):
            with h5py.File(out0, "r") as f:
                a = f.attrs
                check(float(a["unknown_auroc"]) == 0.5, "AUROC sentinel 0.5")
                check(math.isfinite(float(a["unknown_threshold"])), "threshold stored")
                check(int(a["n_classes"]) == 6, "all 6 phases trained")
                gen = json.loads(attr_str(a["generator"]))
                check(gen.get("unknown_auroc_measured") is False, "AUROC marked not measured")

        bad = os.path.join(tmp, "bad.h5")
        for args, what in [
            (["--holdout-phases", "nan"], "--holdout-phases nan"),
            (["--holdout-phases", "1.0"], "--holdout-phases 1.0"),
            (["--holdout-phases", "-0.1"], "--holdout-phases -0.1"),
            (["--holdout-phases", "abc"], "--holdout-phases abc"),
            (["--calib", "-1"], "--calib -1"),
        ]:
            r = run(base + ["--out", bad, "--steps", "5"] + args)
            check(r.returncode == 2, f"{what}: exit {r.returncode} (want 2)")
            check(r.stderr.strip() != "", f"{what}: no message")
        check(not os.path.exists(bad), "a failed run left a model file")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all calibration CLI checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
