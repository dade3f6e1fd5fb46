#!/usr/bin/env python3
"""XRD simulation throughput: phaseid full profiles vs pymatgen stick patterns.

For a few built-in phases (small, mid-size and large cells) and, when present,
the 56 shared Li-Mn-Ti-O-F reference CIFs, in one run:
  - `phaseid bench xrd --phase ... --json ...`: full augmented profiles per
    second (Cu K-alpha1+2, 2-theta 10-80 deg, 0.01 deg steps = 7001 points,
    every default augmentation on), one thread and all threads; per core both
    as wall-clock patterns/s / threads and as patterns per CPU-second;
  - pymatgen's XRDCalculator("CuKa").get_pattern(structure, (10, 80)): stick
    patterns per second on the same CIF (structure parsing excluded; the
    calculator is created once).
Prints a table and writes benchmarks/results/xrd_throughput.json with the
machine (CPU model, cores, load average), the date and the command.

usage: python3 benchmarks/xrd_throughput.py [--phaseid BIN] [--seconds S]
                                           [--ref-seconds S] [--out FILE]
PHASEID_BIN and PHASEID_SHARED_DATA are honoured; the shared references are
looked up in $PHASEID_SHARED_DATA/xrd/li-mn-ti-o-f/references or
../shared/data/xrd/li-mn-ti-o-f/references.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import cpu_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILTIN = ["Cu_225", "Al2SiO5_58", "ZrO2_14", "Y2O3_206"]


def find_bin(arg):
    cands = [arg, os.environ.get("PHASEID_BIN")] + [
        os.path.join(ROOT, d, "cli", "phaseid") for d in ("build", "build-render", "build-release")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit("phaseid binary not found: build it or pass --phaseid / PHASEID_BIN")


def pymatgen_version():
    try:
        from importlib.metadata import version
        return version("pymatgen")
    except Exception:  # noqa: BLE001 (any failure: unknown version)
        return "unknown"


def phaseid_bench(binary, phase, seconds):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as t:
        path = t.name
    try:
        p = subprocess.run([binary, "bench", "xrd", "--phase", phase, "--seconds", str(seconds),
                            "--device", "cpu", "--json", path],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"phaseid bench xrd --phase {phase}: {p.stderr.strip()}")
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)


def pymatgen_rate(calc, structure, min_seconds=1.0):
    """Stick patterns per second (at least 3 calls and min_seconds)."""
    n, t0 = 0, time.perf_counter()
    while True:
        calc.get_pattern(structure, two_theta_range=(10, 80))
        n += 1
        el = time.perf_counter() - t0
        if n >= 3 and el >= min_seconds:
            return n / el


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phaseid", default=None)
    ap.add_argument("--seconds", type=float, default=3.0, help="per phaseid measurement")
    ap.add_argument("--ref-seconds", type=float, default=0.3,
                    help="per phaseid measurement on each shared reference")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "xrd_throughput.json"))
    args = ap.parse_args()
    binary = find_bin(args.phaseid)

    warnings.filterwarnings("ignore")
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Structure
    calc = XRDCalculator(wavelength="CuKa")

    rows = []
    for name in BUILTIN:
        cif = os.path.join(ROOT, "data", "phases", name + ".cif")
        if not os.path.exists(cif):
            print(f"skipping {name}: {cif} missing")
            continue
        b = phaseid_bench(binary, name, args.seconds)
        s = Structure.from_file(cif)
        rows.append({"set": "builtin", "phase": name, "cif": os.path.relpath(cif, ROOT),
                     "atoms_in_cell": len(s), "families_in_range": b["families_in_range"],
                     "phaseid": b["results"], "pymatgen_sticks_per_s": pymatgen_rate(calc, s)})

    shared = os.environ.get("PHASEID_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
    refdir = os.path.join(shared, "xrd", "li-mn-ti-o-f", "references")
    refs = sorted(glob.glob(os.path.join(refdir, "*.cif")))
    ref_summary = None
    if refs:
        ph1, phc, pm = [], [], []
        for cif in refs:
            b = phaseid_bench(binary, cif, args.ref_seconds)
            s = Structure.from_file(cif)
            r = pymatgen_rate(calc, s, min_seconds=0.3)
            one = b["results"][0]
            ph1.append(one["patterns_per_s"])
            phc.append(one["patterns_per_cpu_second"])
            pm.append(r)
            rows.append({"set": "shared-references", "phase": os.path.basename(cif)[:-4],
                         "atoms_in_cell": len(s), "families_in_range": b["families_in_range"],
                         "phaseid": b["results"], "pymatgen_sticks_per_s": r})
        hm = lambda v: len(v) / sum(1.0 / x for x in v)  # noqa: E731 (rate over the whole set)
        ref_summary = {"count": len(refs), "phaseid_1thread_patterns_per_s": hm(ph1),
                       "phaseid_patterns_per_cpu_second": hm(phc),
                       "pymatgen_sticks_per_s": hm(pm)}
    else:
        print(f"shared references not found in {refdir}: builtin phases only")

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    result = {
        "benchmark": "xrd_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "phaseid": binary,
        "machine": {"cpu_model": cpu_model(), "cores_online": os.cpu_count(),
                    "load_average_1min_at_end": load, "python": platform.python_version(),
                    "pymatgen": pymatgen_version()},
        "settings": {"phaseid": "full profiles, CuKa1+2, 10-80 deg step 0.01 (7001 points), "
                                "default augmentation on (strain, shifts, size/microstrain, "
                                "texture, Caglioti, background, hump, air, Gaussian+Poisson "
                                "noise)",
                     "pymatgen": "XRDCalculator('CuKa').get_pattern(s, (10, 80)): sticks"},
        "rows": rows,
        "shared_references_summary": ref_summary,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

    print(f"machine: {result['machine']['cpu_model']}, {os.cpu_count()} cores, load {load}")
    print(f"{'phase':<22}{'atoms':>6}{'families':>9}{'phaseid 1 thr':>15}{'per CPU-s':>11}"
          f"{'all thr':>10}{'pymatgen':>10}{'ratio':>8}")
    for r in rows:
        if r["set"] != "builtin":
            continue
        one, allt = r["phaseid"][0], r["phaseid"][1]
        print(f"{r['phase']:<22}{r['atoms_in_cell']:>6}{r['families_in_range']:>9}"
              f"{one['patterns_per_s']:>15.0f}{one['patterns_per_cpu_second']:>11.0f}"
              f"{allt['patterns_per_s']:>10.0f}{r['pymatgen_sticks_per_s']:>10.1f}"
              f"{one['patterns_per_s'] / r['pymatgen_sticks_per_s']:>8.0f}")
    if ref_summary:
        s = ref_summary
        print(f"{s['count']} shared references (rate over the set): phaseid "
              f"{s['phaseid_1thread_patterns_per_s']:.0f} profiles/s on 1 thread "
              f"({s['phaseid_patterns_per_cpu_second']:.0f} per CPU-second), pymatgen "
              f"{s['pymatgen_sticks_per_s']:.1f} stick patterns/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
