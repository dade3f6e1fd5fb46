#!/usr/bin/env python3
"""`phaseid synth xrd` end to end: dataset files, reproducibility, bad settings.

1. Writes `phaseid synth xrd --phases builtin --n 200 --mixtures 3 --seed 7`
   twice, with --threads 1 and --threads 2 (and a different --batch), and
   requires bit-identical /patterns, /labels, /multi_hot and /fractions.
2. Checks the layout: shapes and dtypes, /axis (its axis_kind attribute and
   the 2-theta grid 10..80 step 0.01), /phases and /formulas, and that the
   root carries every generator setting as an attribute.
3. Checks the content: each row's maximum is exactly 1 and every value is
   finite; fractions sum to 1 (within 1e-5) with each present phase >= the
   minimum fraction 0.1 in mixtures; multi_hot == (fractions > 0); labels are
   the phase index for single-phase rows and -1 for mixtures; with --mixtures
   3 all of 1, 2 and 3 phases occur.
4. Another seed gives different patterns.
5. Bad settings exit 2 (usage) or 1 (library/file) with a message naming the
   problem: NaN strain, --two-theta 80:10:0.01, --n 0, an unknown phase
   folder, an unknown option, inverted --size.

Run by ctest as `python3 FILE` with PHASEID_BIN set. Needs h5py and numpy
(exit 77, skipped, when they are missing: `pip install h5py`). Exits 1 with
every failure listed, 0 when all pass.
"""
import os
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


def run(args, timeout=600):
    p = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def synth(out, threads, seed=7, batch=None):
    args = ["synth", "xrd", "--phases", "builtin", "--n", "200", "--mixtures", "3",
            "--seed", str(seed), "--out", out, "--threads", str(threads), "--quiet",
            "--device", "cpu"]
    if batch:
        args += ["--batch", str(batch)]
    rc, _, err = run(args)
    if rc != 0:
        print(err)
    return rc


SETTINGS = [
    "generator", "phaseid_version", "command", "seed", "n_patterns", "n_points",
    "axis_kind", "two_theta_min_deg", "two_theta_max_deg", "two_theta_step_deg",
    "source", "wavelength_a", "wavelengths_a", "line_weights", "lp_mode",
    "lp_mono_two_theta_deg", "lp_polarization", "debye_waller", "library_path",
    "n_phases", "mixtures_max", "mixtures_min_fraction", "aug_enabled",
    "aug_strain_max", "aug_zero_shift_max_deg", "aug_displacement_max", "aug_size_nm",
    "aug_microstrain", "aug_texture_r", "aug_caglioti_u_deg2", "aug_caglioti_v_deg2",
    "aug_caglioti_w_deg2", "aug_eta", "aug_bg_order_min", "aug_bg_order_max",
    "aug_bg_max", "aug_hump_height", "aug_air_height", "aug_noise_sigma",
    "aug_poisson_counts", "aug_impurities_max",
]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a_path, b_path, c_path = (os.path.join(tmp, n) for n in ("a.h5", "b.h5", "c.h5"))
        check(synth(a_path, 1) == 0, "synth --threads 1 exits 0")
        check(synth(b_path, 2, batch=37) == 0, "synth --threads 2 --batch 37 exits 0")
        check(synth(c_path, 2, seed=8) == 0, "synth --seed 8 exits 0")
        if failures:
            return
        with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b, \
                h5py.File(c_path, "r") as c:
            for name in ("patterns", "labels", "multi_hot", "fractions", "axis"):
                check(np.array_equal(a[name][()], b[name][()]),
                      f"/{name} identical for --threads 1 and --threads 2")
            check(not np.array_equal(a["patterns"][()], c["patterns"][()]),
                  "another seed gives other patterns")

            P = a["patterns"][()]
            k = len(a["phases"])
            check(P.shape == (200, 7001) and P.dtype == np.float32, f"/patterns {P.shape} float32")
            check(a["labels"].shape == (200,) and a["labels"].dtype == np.int32, "/labels int32 N")
            check(a["multi_hot"].shape == (200, k) and a["multi_hot"].dtype == np.uint8,
                  "/multi_hot uint8 N x phases")
            check(a["fractions"].shape == (200, k) and a["fractions"].dtype == np.float32,
                  "/fractions float32 N x phases")
            check(len(a["formulas"]) == k and k >= 10, f"/phases and /formulas ({k} phases)")
            x = a["axis"][()]
            check(a["axis"].attrs.get("axis_kind") in ("two_theta_deg", b"two_theta_deg"),
                  "/axis has axis_kind two_theta_deg")
            check(abs(x[0] - 10) < 1e-5 and abs(x[-1] - 80) < 1e-3 and len(x) == 7001,
                  "/axis is 10..80 deg in 7001 points")
            missing = [s for s in SETTINGS if s not in a.attrs]
            check(not missing, f"root attributes present (missing: {missing})")
            check(int(a.attrs["seed"]) == 7 and int(a.attrs["n_patterns"]) == 200,
                  "seed and n_patterns attributes")

            check(np.all(np.isfinite(P)), "patterns finite")
            check(np.all(P.max(axis=1) == 1.0), "every row's maximum is exactly 1")
            F = a["fractions"][()]
            M = a["multi_hot"][()]
            L = a["labels"][()]
            check(np.allclose(F.sum(axis=1), 1.0, atol=1e-5), "fractions sum to 1")
            check(np.array_equal(M.astype(bool), F > 0), "multi_hot == (fractions > 0)")
            n_present = M.sum(axis=1)
            mixed = n_present > 1
            check(np.all(F[mixed][M[mixed].astype(bool)] >= 0.1 - 1e-6),
                  "mixture fractions >= 0.1")
            single = np.where(n_present == 1)[0]
            check(np.all(L[single] == M[single].argmax(axis=1)),
                  "single-phase labels = the present phase")
            check(np.all(L[mixed] == -1), "mixture labels are -1")
            counts = [int((n_present == j).sum()) for j in (1, 2, 3)]
            check(all(cnt > 20 for cnt in counts) and n_present.max() == 3,
                  f"1, 2 and 3 phases all occur ({counts})")

        # Bad settings: exit code and a message naming the problem.
        out = os.path.join(tmp, "bad.h5")
        base = ["synth", "xrd", "--phases", "builtin", "--out", out, "--quiet"]
        cases = [
            (base + ["--n", "10", "--strain", "nan"], 2, "--strain"),
            (base + ["--n", "10", "--two-theta", "80:10:0.01"], 2, "MIN must be smaller"),
            (base + ["--n", "0"], 2, "--n"),
            (base + ["--n", "10", "--size", "100:5"], 2, "MIN must not exceed MAX"),
            (base + ["--n", "10", "--frobnicate", "1"], 2, "unknown option"),
            (["synth", "xrd", "--phases", os.path.join(tmp, "no_such_dir"), "--n", "10",
              "--out", out, "--quiet"], 1, "no_such_dir"),
            (["synth", "nmr"], 2, "unknown modality"),
        ]
        for args, want, needle in cases:
            rc, _, err = run(args)
            check(rc == want and needle in err,
                  f"{' '.join(args[2:])}: exit {rc} (want {want}), stderr {err.strip()!r} "
                  f"should mention {needle!r}")
        check(not os.path.exists(out), "no output file left by failed runs")
        rc, so, _ = run(["synth", "--help"])
        check(rc == 0 and "xrd" in so, "synth --help lists the xrd modality")
        rc, so, _ = run(["synth", "xrd", "--help"])
        check(rc == 0 and "--mixtures" in so and "--two-theta" in so, "synth xrd --help")


if __name__ == "__main__":
    main()
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all synth CLI checks passed")
    sys.exit(0)
