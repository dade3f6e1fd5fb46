#!/usr/bin/env python3
"""A model trained on simulated patterns identifies real measured XRD patterns.

Issue requirement: a model trained on the 56 references in
$PHASEID_SHARED_DATA/xrd/li-mn-ti-o-f/references names the right formula
first for each of the three measured patterns in .../li-mn-ti-o-f/spectra
(Mn2O3.xy, MnO.xy, TiO2.xy: Cu K-alpha, 2-theta 10-100 deg, step 0.01, with
background).

1. `phaseid train --phases REFERENCES --arch SPEC --steps N --seed S
   --grid 10:80:0.02` trains a compact CNN on patterns simulated on the fly
   (default augmentation, Chebyshev background included) -- about two minutes
   on two cores. The model grid 10-80 deg lies inside the measured range.
2. `phaseid classify --model M --format json --top K spectra/*.xy`.
3. For every file: prints the top-3 phases with probabilities, the unknown
   score and the rank of the expected formula; asserts the top phase's
   formula equals the file stem.

Environment: PHASEID_BIN (the phaseid binary), PHASEID_SHARED_DATA (the
shared data directory); exits 77 (skip) with a message when the data set is
absent. PHASEID_REAL_XRD_STEPS overrides the step count (for experiments).
Stdlib only. Exit 1 with every failure listed, 0 when all pass.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SHARED = os.environ.get("PHASEID_SHARED_DATA", "")

# A compact CNN for 3501-point frames: strided convolutions and pools down to
# 64 x 54, then a flattened dense layer (keeps peak positions, which a global
# pool would average away in so small a network). ~0.47 M parameters,
# ~8.3 MFLOPs per frame.
ARCH = ("conv1d(16,k9,s2,p4) bn relu maxpool(2) conv1d(32,k7,s2,p3) bn relu maxpool(2) "
        "conv1d(32,k5,p2) bn relu maxpool(2) conv1d(64,k3,p1) bn relu maxpool(2) "
        "flatten dense(128) relu head")
GRID = "10:80:0.02"
STEPS = int(os.environ.get("PHASEID_REAL_XRD_STEPS", "1000"))
LR = "2e-3"
SEED = "1"


def main():
    if not SHARED:
        print("SKIP: PHASEID_SHARED_DATA is not set (needs xrd/li-mn-ti-o-f)")
        return 77
    root = os.path.join(SHARED, "xrd", "li-mn-ti-o-f")
    refs = os.path.join(root, "references")
    spectra = sorted(glob.glob(os.path.join(root, "spectra", "*.xy")))
    if not os.path.isdir(refs) or not glob.glob(os.path.join(refs, "*.cif")) or not spectra:
        print(f"SKIP: data set absent: need {refs}/*.cif and {root}/spectra/*.xy")
        return 77

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "real_xrd.h5")
        cmd = [BIN, "train", "--modality", "xrd", "--phases", refs, "--out", model,
               "--arch", ARCH, "--steps", str(STEPS), "--lr", LR, "--seed", SEED,
               "--grid", GRID, "--val", "200", "--quiet"]
        print("$ " + " ".join(f"'{a}'" if " " in a else a for a in cmd), flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(r.stdout + r.stderr, end="")
        print(f"training wall time {time.time() - t0:.1f} s", flush=True)
        if r.returncode != 0:
            print(f"FAIL: phaseid train exited {r.returncode}")
            return 1

        # --top large enough to find the expected formula's rank.
        cmd = [BIN, "classify", "--model", model, "--format", "json", "--top", "56"] + spectra
        print("$ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr, end="")
            print(f"FAIL: phaseid classify exited {r.returncode}")
            return 1
        results = json.loads(r.stdout)
        if len(results) != len(spectra):
            print(f"FAIL: {len(results)} results for {len(spectra)} files")
            return 1
        for path, res in zip(spectra, results):
            stem = os.path.splitext(os.path.basename(path))[0]
            phases = res["phases"]
            rank = next((i + 1 for i, p in enumerate(phases) if p["formula"] == stem), None)
            top3 = ", ".join(f"{p['name']} ({p['formula']}) {p['probability']:.3f}"
                             for p in phases[:3])
            print(f"{os.path.basename(path)}: top-3 {top3}; unknown_score "
                  f"{res['unknown_score']:.3f} (unknown={res['unknown']}); "
                  f"rank of {stem}: {rank if rank else '> listed'}")
            if not phases or phases[0]["formula"] != stem:
                failures.append(f"{os.path.basename(path)}: top formula "
                                f"{phases[0]['formula'] if phases else None}, expected {stem} "
                                f"(rank {rank})")
    if failures:
        print("FAILURES:")
        for f in failures:
            print("  " + f)
        return 1
    print(f"ok: {len(spectra)} measured patterns identified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
