#!/usr/bin/env python3
"""Near twins in a trained model file against an independent implementation.

1. `phaseid train` (a few steps, mixtures of 2, calibration on) on a
   temporary library of 9 built-in phases, among them the bcc metals Cr, Fe,
   V, Mo, W and the diamond/zincblende Si, Ge, GaAs, plus NaCl.
2. The model file's /phases/twins and /phases/twin_cosines (models/twins.c,
   C) must be the pairs, and to 1e-3 the cosines, that
   benchmarks/bench_common.near_twins (numpy, Gaussian-broadened sticks from
   `phaseid synth xrd --sticks`, strain scan of its own) finds for the same
   library, grid, wavelength and strain; and must include the physically
   obvious ones (Cr-Fe, Mo-W, Si-Ge) and nothing with NaCl.
3. `phaseid classify` JSON lists, for every reported phase, exactly its
   partners in the file as "near_twins"; the training summary prints the
   number of pairs.

Run by ctest with PHASEID_BIN set. Needs h5py and numpy (exit 77 without).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from checks import check, failures

try:
    import h5py
    import numpy as np  # noqa: F401 (bench_common needs it)
except ImportError as e:  # pragma: no cover
    print(f"skipped: {e} (pip install h5py numpy)")
    sys.exit(77)

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SRC = os.environ.get("PHASEID_SOURCE_DIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "benchmarks"))
from bench_common import near_twins  # noqa: E402

ARCH = "conv1d(4,k9,s4,p4) relu maxpool(4) flatten dense(16) relu head"
STEMS = ["Cr_229", "Fe_229", "V_229", "Mo_229", "W_229", "Si_227", "Ge_227", "GaAs_216",
         "NaCl_225"]
GRID = (10.0, 80.0, 0.02)
CU_KA1 = 1.540562


def main():
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "lib")
        os.mkdir(lib)
        for s in STEMS:
            shutil.copy(os.path.join(SRC, "data", "phases", s + ".cif"), lib)
        model = os.path.join(tmp, "m.h5")
        r = subprocess.run([BIN, "train", "--modality", "xrd", "--phases", lib, "--out", model,
                            "--arch", ARCH, "--grid", "10:80:0.02", "--steps", "3", "--batch",
                            "8", "--val", "0", "--calib", "96", "--mixtures", "2", "--strain",
                            "3", "--threads", "2", "--quiet"],
                           capture_output=True, text=True, timeout=600)
        check(r.returncode == 0, f"train exit {r.returncode}: {r.stderr[-800:]}")
        if r.returncode != 0:
            return 1
        with h5py.File(model, "r") as f:
            names = [x.decode() if isinstance(x, bytes) else x for x in f["phases/names"][...]]
            pairs = f["phases/twins"][...] if "phases/twins" in f else np.zeros((0, 2), int)
            cos = f["phases/twin_cosines"][...] if "phases/twin_cosines" in f else []
        ours = {tuple(sorted((names[a], names[b]))): float(c) for (a, b), c in zip(pairs, cos)}
        check(f"near twins in the library: {len(ours)} pairs" in r.stdout,
              f"summary line: {r.stdout}")

        log = []
        ref = near_twins(BIN, lib, 0.03, GRID, CU_KA1, log)
        theirs = {tuple(sorted((a, b))): c for a, v in ref.items() for b, c in v.items()}
        print(f"model file: {sorted(ours.items())}")
        print(f"bench_common: {sorted(theirs.items())}")
        check(set(ours) == set(theirs), f"pairs differ: only C {set(ours) - set(theirs)}, "
              f"only numpy {set(theirs) - set(ours)}")
        for p in set(ours) & set(theirs):
            check(abs(ours[p] - theirs[p]) < 1e-3, f"{p}: cosine {ours[p]} vs {theirs[p]}")
        for p in [("Cr_229", "Fe_229"), ("Mo_229", "W_229"), ("Ge_227", "Si_227")]:
            check(p in ours, f"{p} not found")
        check(not any("NaCl_225" in p for p in ours), "NaCl has no twin here")

        data = os.path.join(tmp, "d.h5")
        r = subprocess.run([BIN, "synth", "xrd", "--phases", lib, "--n", "6", "--out", data,
                            "--two-theta", "10:80.01:0.02", "--seed", "5", "--quiet"],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"synth exit {r.returncode}: {r.stderr[-500:]}")
        r = subprocess.run([BIN, "classify", "--model", model, "--top", "9", "--device", "cpu",
                            data], capture_output=True, text=True)
        check(r.returncode == 0, f"classify exit {r.returncode}: {r.stderr[-500:]}")
        rows = json.loads(r.stdout) if r.returncode == 0 else []
        check(len(rows) == 6, f"{len(rows)} rows")
        for row in rows:
            for ph in row["phases"]:
                want = sorted(b if a == ph["name"] else a for a, b in ours if ph["name"] in (a, b))
                check(sorted(ph.get("near_twins", [None])) == want,
                      f"{ph['name']}: near_twins {ph.get('near_twins')} vs {want}")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("near twins: model file and bench_common agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
