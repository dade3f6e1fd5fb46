#!/usr/bin/env python3
"""`phaseid train` end to end on a temporary library of 3 CIFs.

1. Trains a small CNN for 40 steps (batch 16, 2-theta grid 10..80 step 0.05)
   and requires exit 0, the validation/time/samples lines on stdout, and a
   model file whose attributes h5py reads: format, modality, arch_spec,
   head softmax, n_classes 3, train_steps 40, train_batch 16, train_flops > 0,
   calibration fields (temperature > 0, 0 <= ece <= 1) and /params of
   n_params finite floats; /phases/names are the 3 stems.
2. --mixtures 2 gives a sigmoid+fractions head.
3. Bad arguments exit 2: --lr nan, --steps 0, an unknown arch token, missing
   --out, an unknown option; an unknown phase folder exits 1.

Run by ctest as `python3 FILE` with PHASEID_BIN set. Needs h5py and numpy
(exit 77, skipped, when they are missing). Exits 1 with every failure listed.
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
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"skipped: {e} (pip install h5py numpy)")
    sys.exit(77)

BIN = os.environ.get("PHASEID_BIN", "phaseid")
SRC = os.environ.get("PHASEID_SOURCE_DIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
ARCH = "conv1d(8,k9,s2,p4) bn relu maxpool(4) conv1d(16,k9,s2,p4) bn relu maxpool(4) " \
       "flatten dense(32) relu head"


def run(args):
    return subprocess.run([BIN, "train"] + args, capture_output=True, text=True, timeout=600)


def run_synth(args):
    return subprocess.run([BIN, "synth", "xrd"] + args, capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "lib")
        os.mkdir(lib)
        stems = ["NaCl_225", "Si_227", "TiO2_141"]
        for s in stems:
            shutil.copy(os.path.join(SRC, "data", "phases", s + ".cif"), lib)
        out = os.path.join(tmp, "m.h5")
        base = ["--modality", "xrd", "--phases", lib, "--arch", ARCH, "--grid", "10:80:0.05",
                "--batch", "16", "--val", "64", "--threads", "2"]
        r = run(base + ["--out", out, "--steps", "40", "--lr", "3e-3", "--seed", "3"])
        check(r.returncode == 0, f"train exit {r.returncode}: {r.stderr[-500:]}")
        check("validation accuracy:" in r.stdout, "no validation line")
        check("training time:" in r.stdout and "samples/s:" in r.stdout, "no time lines")
        check(os.path.isfile(out), "model file missing")
        if os.path.isfile(out):
            with h5py.File(out, "r") as f:
                a = f.attrs
                check(a["format"] == "phaseid-model", "format attribute")
                check(a["modality"] == "xrd", "modality")
                check(a["arch_spec"] == ARCH, f"arch_spec {a['arch_spec']!r}")
                check(a["head"] == "softmax", f"head {a['head']}")
                check(int(a["n_classes"]) == 3, "n_classes")
                check(int(a["train_steps"]) == 40 and int(a["train_batch"]) == 16,
                      "train steps/batch")
                check(int(a["train_seed"]) == 3, "train_seed")
                check(float(a["train_flops"]) > 0, "train_flops")
                check(float(a["temperature"]) > 0 and 0 <= float(a["ece"]) <= 1,
                      "calibration fields")
                check('"calibrated": true' in a["generator"], "generator marks calibrated")
                check(a["preprocessing"] == "max-normalize", "preprocessing")
                check(os.path.isabs(a["library"]), f"library path {a['library']}")
                p = f["params"][...]
                check(p.shape == (int(a["n_params"]),) and np.all(np.isfinite(p)), "params")
                names = [x.decode() if isinstance(x, bytes) else x for x in f["phases/names"][...]]
                check(names == stems, f"phase names {names}")
        out2 = os.path.join(tmp, "mix.h5")
        r = run(base + ["--out", out2, "--steps", "10", "--mixtures", "2", "--quiet",
                        "--strain", "1.5", "--size", "20:60", "--texture", "off"])
        check(r.returncode == 0, f"mixtures exit {r.returncode}: {r.stderr[-500:]}")
        if os.path.isfile(out2):
            with h5py.File(out2, "r") as f:
                check(f.attrs["head"] == "sigmoid+fractions", f"mixture head {f.attrs['head']}")
                gen = json.loads(f.attrs["generator"])
                check(abs(gen["strain_max"] - 0.015) < 1e-12, f"--strain recorded: {gen}")
                check(gen["size_nm"] == [20, 60] and gen["texture_r"] == [1, 1],
                      f"--size/--texture recorded: {gen}")
                # the set rule was fitted on the calibration patterns: the
                # exact-set accuracies are recorded; the thresholds (one for
                # rank 2 with --mixtures 2) are stored when they beat 0.5
                check("set_exact_before" in gen and "set_exact_after" in gen,
                      f"set-rule fit recorded: {gen}")
                check("phase set:" in r.stdout, f"set rule printed: {r.stdout}")
                if "set_thresholds" in f.attrs:
                    thr = list(np.atleast_1d(f.attrs["set_thresholds"]))
                    check(len(thr) == 1 and all(0 < t < 1 for t in thr), f"set thresholds {thr}")
                    check(np.allclose(thr, gen["set_thresholds"], atol=1e-4),
                          f"set thresholds {thr} vs generator {gen['set_thresholds']}")
                    check(gen["set_exact_after"] > gen["set_exact_before"],
                          f"a stored rule beats 0.5: {gen}")
                else:
                    check(gen["set_thresholds"] == [] and
                          gen["set_exact_after"] == gen["set_exact_before"],
                          f"no rule stored, none fitted: {gen}")

        # training from a dataset file (phaseid synth xrd): single phase, then mixtures
        ds = os.path.join(tmp, "ds.h5")
        r = run_synth(["--phases", lib, "--n", "600", "--out", ds, "--two-theta", "10:80:0.05",
                       "--quiet"])
        check(r.returncode == 0, f"synth for --dataset: {r.stderr[-300:]}")
        out3 = os.path.join(tmp, "fromfile.h5")
        r = run(["--modality", "xrd", "--dataset", ds, "--out", out3, "--arch", ARCH, "--steps",
                 "60", "--batch", "16", "--lr", "3e-3", "--quiet"])
        check(r.returncode == 0, f"--dataset exit {r.returncode}: {r.stderr[-500:]}")
        check("(120 calibration patterns)" in r.stdout, f"held-out rows: {r.stdout}")
        if os.path.isfile(out3):
            with h5py.File(out3, "r") as f:
                gen = json.loads(f.attrs["generator"])
                check(gen.get("dataset") == ds, f"dataset provenance: {gen}")
                check(f.attrs["head"] == "softmax", "softmax head from a single-phase file")
                check(int(f["grid"].attrs["n_points"]) == 1401, "grid from the file")
        dsm = os.path.join(tmp, "dsm.h5")
        run_synth(["--phases", lib, "--n", "300", "--out", dsm, "--two-theta", "10:80:0.05",
                   "--mixtures", "2", "--quiet"])
        out4 = os.path.join(tmp, "fromfile_mix.h5")
        r = run(["--modality", "xrd", "--dataset", dsm, "--out", out4, "--arch", ARCH, "--steps",
                 "10", "--batch", "16", "--quiet"])
        check(r.returncode == 0, f"--dataset mixtures exit {r.returncode}: {r.stderr[-500:]}")
        if os.path.isfile(out4):
            with h5py.File(out4, "r") as f:
                check(f.attrs["head"] == "sigmoid+fractions", "mixture file -> sigmoid head")
        r = run(["--modality", "xrd", "--dataset", dsm, "--out", out4 + ".x", "--arch", ARCH,
                 "--steps", "5", "--mixtures", "1"])
        check(r.returncode == 2 and "mixtures" in r.stderr, f"mixture file, softmax: {r.stderr}")
        junk = os.path.join(tmp, "junk.h5")
        with open(junk, "wb") as f:
            f.write(b"not hdf5" * 100)

        bad = os.path.join(tmp, "bad.h5")
        for args, code, what in [
            (base + ["--out", bad, "--lr", "nan"], 2, "NaN lr"),
            (base + ["--out", bad, "--steps", "0"], 2, "--steps 0"),
            (["--modality", "xrd", "--phases", lib, "--out", bad, "--arch",
              "conv1d(8,k5) foo head"], 2, "unknown arch token"),
            (base, 2, "missing --out"),
            (base + ["--out", bad, "--bogus", "1"], 2, "unknown option"),
            (base + ["--out", bad, "--strain", "abc"], 2, "bad --strain"),
            (["--modality", "xrd", "--dataset", junk, "--phases", lib, "--out", bad], 1,
             "--dataset not HDF5"),
            (["--modality", "xrd", "--dataset", ds, "--phases", "builtin", "--out", bad], 2,
             "--dataset with another library"),
            (["--modality", "xrd", "--dataset", ds, "--grid", "10:80:0.1", "--out", bad], 2,
             "--dataset with --grid"),
            (base + ["--out", bad, "--size", "50:10"], 2, "inverted --size"),
            (["--modality", "xrd", "--phases", os.path.join(tmp, "nope"), "--out", bad], 1,
             "unknown phase folder"),
        ]:
            r = run(args)
            check(r.returncode == code, f"{what}: exit {r.returncode} (want {code})")
            check(r.stderr.strip() != "", f"{what}: no message")
        check(not os.path.exists(bad), "a failed run left a model file")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all train CLI checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
