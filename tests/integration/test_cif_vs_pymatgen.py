#!/usr/bin/env python3
"""Checks the CIF reader and symmetry expansion against pymatgen (a peer
tool, independent of our code): for every reference CIF of the shared
Li-Mn-Ti-O-F set and every CIF of the built-in library, `phaseid phases show
FILE --format json` must agree with pymatgen's CifParser + SpacegroupAnalyzer
on atoms in the cell, volume, density, reduced formula and space group.

Environment: PHASEID_BIN (the phaseid binary), PHASEID_SHARED_DATA (the
shared data folder), PHASEID_SOURCE_DIR (the source tree). Exit code 77 =
skipped (nothing to check, or pymatgen missing)."""
import glob
import json
import math
import os
import subprocess
import sys
import warnings

SKIP = 77
VOLUME_RTOL = 1e-4   # both compute V from the same six numbers
DENSITY_RTOL = 2e-3  # atomic weights: xraylib vs pymatgen tables differ in the 4th digit at most
SYMPREC = 0.01       # pymatgen's default, and what phaseid uses first


def main():
    try:
        from pymatgen.core import Composition
        from pymatgen.io.cif import CifParser
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    except ImportError as e:
        print(f"SKIP: pymatgen not importable ({e})")
        return SKIP
    warnings.filterwarnings("ignore")

    exe = os.environ.get("PHASEID_BIN")
    if not exe or not os.access(exe, os.X_OK):
        print(f"FAIL: PHASEID_BIN not set or not executable: {exe!r}")
        return 1
    shared = os.environ.get("PHASEID_SHARED_DATA", "")
    source = os.environ.get("PHASEID_SOURCE_DIR", "")

    files = []
    refdir = os.path.join(shared, "xrd", "li-mn-ti-o-f", "references")
    if os.path.isdir(refdir):
        refs = sorted(glob.glob(os.path.join(refdir, "*.cif")))
        if len(refs) != 56:
            print(f"FAIL: expected 56 reference CIFs in {refdir}, found {len(refs)}")
            return 1
        files += refs
    else:
        print(f"note: shared reference folder {refdir} is absent; checking the built-in library only")
    builtin = sorted(glob.glob(os.path.join(source, "data", "phases", "*.cif"))) if source else []
    files += builtin
    if not files:
        print("SKIP: no reference CIFs (PHASEID_SHARED_DATA) and no data/phases/*.cif to check")
        return SKIP

    failures = []
    for path in files:
        name = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))
        run = subprocess.run([exe, "phases", "show", path, "--format", "json"],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            failures.append(f"{name}: phaseid exit {run.returncode}: {run.stderr.strip()}")
            continue
        ours = json.loads(run.stdout)["phases"]
        theirs = CifParser(path).parse_structures(primitive=False)
        if len(ours) != len(theirs):
            failures.append(f"{name}: {len(ours)} structures vs pymatgen {len(theirs)}")
            continue
        for o, t in zip(ours, theirs):
            tag = f"{name} [{o['name']}]"
            # Atoms: pymatgen has one site per position with a composition
            # (Fe2+ and Fe3+ sharing a site without an _atom_type oxidation
            # table become one Fe entry); count (position, element) pairs on
            # both sides, and require every phaseid site to be in [0, 1).
            n_t = sum(len({sp.symbol for sp in site.species}) for site in t)
            pairs = set()
            for site in o["sites"]:
                if not all(0.0 <= x < 1.0 for x in site["frac"]):
                    failures.append(f"{tag}: site {site['label']} not wrapped into [0,1): {site['frac']}")
                pairs.add((site["element"],) + tuple(round(x * 1000) % 1000 for x in site["frac"]))
            if len(pairs) != n_t:
                failures.append(f"{tag}: {len(pairs)} atoms in cell vs pymatgen {n_t}")
            if o["n_sites"] < len(pairs) or len(o["sites"]) != o["n_sites"]:
                failures.append(f"{tag}: n_sites {o['n_sites']} inconsistent with the site list")
            if not math.isclose(o["volume_a3"], t.volume, rel_tol=VOLUME_RTOL):
                failures.append(f"{tag}: volume {o['volume_a3']} vs pymatgen {t.volume}")
            if not math.isclose(o["density_g_cm3"], float(t.density), rel_tol=DENSITY_RTOL):
                failures.append(f"{tag}: density {o['density_g_cm3']} vs pymatgen {float(t.density)}")
            comp = t.composition
            if all(abs(v - round(v)) < 1e-6 for v in comp.values()):
                if o["formula"] != comp.reduced_formula:
                    failures.append(f"{tag}: formula {o['formula']} vs pymatgen {comp.reduced_formula}")
            else:
                # Partial occupancy: pymatgen prints the unreduced cell; compare
                # the element ratios of our per-formula-unit amounts instead.
                mine = Composition(o["formula"])
                if not mine.almost_equals(comp / (comp.num_atoms / mine.num_atoms), rtol=2e-3):
                    failures.append(f"{tag}: formula {o['formula']} vs pymatgen {comp.formula}")
            sg = SpacegroupAnalyzer(t, symprec=SYMPREC).get_space_group_number()
            if o["spacegroup_number"] != sg:
                failures.append(f"{tag}: space group {o['spacegroup_number']} vs pymatgen {sg}")

    print(f"checked {len(files)} CIF files ({len(builtin)} built-in) against pymatgen")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
