#!/usr/bin/env python3
"""Consistency check of the built-in phase library (data/phases/*.cif).

For every CIF file it checks that
  * the file carries a '# Source:' comment line and a _publ_section_references
    field, a data_ block named like the file, a formula, H-M and Hall symbols;
  * pymatgen parses it without warnings other than the two benign ones
    ("space group from symbol used", "1/3, 2/3 rounded"), with no site
    occupancy above 1;
  * the Hall symbol is spelled exactly as spglib's database writes it and
    belongs to the space-group number in the file name and in
    _space_group_IT_number;
  * the asymmetric unit expanded with the Hall symbol's operators (spglib
    database) gives exactly the structure pymatgen builds from the H-M symbol
    (same number of sites, same positions, same species and occupancies), so
    that a reader working from the Hall symbol and one working from the H-M
    symbol agree; where an explicit _space_group_symop_operation_xyz list is
    present it must equal the Hall symbol's operator set;
  * SpacegroupAnalyzer(symprec=0.01) finds the space group of the file name;
  * composition.reduced_formula equals the formula of the file name (a short
    table lists the deliberately non-stoichiometric phases);
  * no two atoms are closer than 0.9 A (pairs involving H excepted);
  * the density is within 3 % of a published density (table below, values
    from handbooks / mineralogy references, not computed from these files).
It also checks that at least 60 phases exist, that at least 3 files exercise
the explicit-operator path, and that the required phases (including the
deliberately hard-to-tell-apart pairs) are present.

Usage: check_phase_library.py [PHASE_DIR]   (default: data/phases of this tree)
Standard library + pymatgen (and spglib, which pymatgen depends on) only.
Exit status 0 on success, 1 with a list of problems otherwise.
"""

import io
import os
import re
import sys
import warnings
from contextlib import redirect_stderr

import numpy as np

try:
    import spglib
    from pymatgen.core import Composition, Element
    from pymatgen.core.operations import SymmOp
    from pymatgen.io.cif import CifParser, str2float
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
except ImportError as exc:  # pragma: no cover
    print(f"check_phase_library: missing dependency: {exc}", file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
PHASE_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "data", "phases"))

MIN_PHASES = 60
MIN_EXPLICIT_OPS = 3
DENSITY_TOL = 0.03
MIN_DIST = 0.9

CRC = "CRC Handbook of Chemistry and Physics, 97th ed. (2016)"
HOM = "Anthony, Bideaux, Bladh & Nichols, Handbook of Mineralogy, Mineral. Soc. Am."

# stem -> (published density g/cm^3, source). Measured or X-ray densities from
# handbooks and mineralogy references, NOT computed from the CIF files here.
DENSITY = {
    # fcc / bcc / hcp / diamond-type elements (CRC, density near room temperature)
    "Cu_225": (8.96, CRC), "Al_225": (2.70, CRC), "Ni_225": (8.90, CRC),
    "Ag_225": (10.5, CRC), "Au_225": (19.3, CRC), "Pt_225": (21.5, CRC),
    "Pb_225": (11.3, CRC),
    "Fe_225": (8.0, "austenitic (fcc) Fe alloys, e.g. AISI 304: 8.0, ASM Handbook Vol. 1 (1990)"),
    "Fe_229": (7.874, CRC), "W_229": (19.3, CRC), "Mo_229": (10.2, CRC),
    "Cr_229": (7.15, CRC), "Nb_229": (8.57, CRC), "V_229": (6.11, CRC),
    "Mg_194": (1.74, CRC), "Ti_194": (4.506, CRC), "Zn_194": (7.134, CRC),
    "Co_194": (8.86, CRC), "Zr_194": (6.52, CRC),
    "Si_227": (2.3290, CRC), "Ge_227": (5.3234, CRC), "C_227": (3.515, CRC + " (diamond)"),
    "C_194": (2.26, "X-ray density of ideal graphite; Kelly, Physics of Graphite (1981)"),
    # oxides
    "MgO_225": (3.58, HOM + " (periclase)"), "NiO_225": (6.72, CRC),
    "MnO_225": (5.37, HOM + " (manganosite)"), "CoO_225": (6.44, CRC),
    "FeO_225": (5.7, CRC + " (FeO, non-stoichiometric)"), "CaO_225": (3.34, CRC),
    "ZnO_186": (5.66, HOM + " (zincite)"), "CeO2_225": (7.22, CRC),
    "ZrO2_14": (5.68, CRC + " (monoclinic ZrO2)"),
    "Al2O3_167": (3.99, CRC + " (alpha-Al2O3)"), "Cr2O3_167": (5.22, CRC),
    "Fe2O3_167": (5.26, HOM + " (hematite)"), "Cu2O_224": (6.14, HOM + " (cuprite)"),
    "CuO_15": (6.5, HOM + " (tenorite)"), "SnO2_136": (6.99, HOM + " (cassiterite)"),
    "TiO2_136": (4.23, HOM + " (rutile)"), "TiO2_141": (3.88, HOM + " (anatase, 3.79-3.97)"),
    "TiO2_61": (4.12, HOM + " (brookite, 4.08-4.18)"), "Y2O3_206": (5.01, CRC),
    # halides
    "NaCl_225": (2.17, CRC), "KCl_225": (1.988, CRC), "CsCl_221": (3.988, CRC),
    "LiF_225": (2.640, CRC), "CaF2_225": (3.18, CRC), "KBr_225": (2.74, CRC),
    "AgCl_225": (5.56, CRC),
    # sulfides
    "ZnS_216": (4.096, HOM + " (sphalerite)"), "ZnS_186": (4.09, HOM + " (wurtzite)"),
    "PbS_225": (7.58, HOM + " (galena)"), "FeS2_205": (5.01, HOM + " (pyrite)"),
    "MoS2_194": (5.06, CRC),
    # carbonates, sulfates
    "CaCO3_167": (2.71, HOM + " (calcite)"), "CaCO3_62": (2.94, HOM + " (aragonite)"),
    "MgCO3_167": (3.00, HOM + " (magnesite)"), "SrCO3_62": (3.76, HOM + " (strontianite, 3.74-3.78)"),
    "CaSO4_63": (2.97, HOM + " (anhydrite)"),
    # silicates
    "SiO2_154": (2.648, HOM + " (quartz)"), "SiO2_92": (2.33, HOM + " (cristobalite)"),
    "Mg2SiO4_62": (3.275, HOM + " (forsterite)"), "ZrSiO4_141": (4.65, HOM + " (zircon, 4.6-4.7)"),
    "Al2SiO5_58": (3.145, HOM + " (andalusite, 3.13-3.16)"),
    # perovskites
    "SrTiO3_221": (5.12, CRC), "BaTiO3_99": (6.02, CRC), "CaTiO3_62": (3.98, CRC),
    "LaAlO3_167": (6.52, "X-ray density, ICDD PDF 31-0022 (LaAlO3)"),
    "TiPbO3_99": (7.97, "X-ray density of PbTiO3; Jaffe, Cook & Jaffe, Piezoelectric Ceramics (1971)"),
    # spinels
    "MgAl2O4_227": (3.58, HOM + " (spinel)"), "Fe3O4_227": (5.175, HOM + " (magnetite)"),
    "Co3O4_227": (6.11, CRC), "Fe2NiO4_227": (5.38, "X-ray density; Smit & Wijn, Ferrites (1959)"),
    "LiMn2O4_227": (4.28, "X-ray density, ICDD PDF 35-0782 (LiMn2O4)"),
    # carbides, nitrides, semiconductors, intermetallics
    "Fe3C_62": (7.69, "Wood et al., J. Appl. Cryst. 37, 82 (2004) / Fasiska & Jeffrey, Acta Cryst. 19, 463 (1965)"),
    "WC_187": (15.63, CRC), "TiN_225": (5.39, "X-ray density, ICDD PDF 38-1420 (osbornite)"),
    "GaN_186": (6.15, CRC), "AlN_186": (3.255, CRC), "GaAs_216": (5.3176, CRC),
    "SiC_216": (3.21, "beta-SiC, X-ray density; Harris (ed.), Properties of Silicon Carbide, INSPEC (1995)"),
    "BN_194": (2.28, "h-BN X-ray density; Paine & Narula, Chem. Rev. 90, 73 (1990)"),
    "AlNi_221": (5.86, "Noebe, Bowman & Nathal, Int. Mater. Rev. 38, 193 (1993)"),
}

# Phases written deliberately non-stoichiometric: stem -> actual composition
# (compared as atomic fractions instead of the file-name formula).
NONSTOICHIOMETRIC = {
    "FeO_225": "Fe0.95O",  # wustite, Fe site occupancy 0.95
}

# Required coverage (file stems). The hard-to-tell-apart groups are listed again below.
REQUIRED = [
    "Cu_225", "Al_225", "Ni_225", "Ag_225", "Au_225", "Pt_225", "Pb_225", "Fe_225",
    "Fe_229", "W_229", "Mo_229", "Cr_229", "Nb_229", "V_229",
    "Mg_194", "Ti_194", "Zn_194", "Co_194", "Zr_194",
    "Si_227", "Ge_227", "C_227",
    "MgO_225", "NiO_225", "MnO_225", "CoO_225", "FeO_225", "ZnO_186", "CeO2_225", "ZrO2_14",
    "Al2O3_167", "Cr2O3_167", "Fe2O3_167", "Cu2O_224", "CuO_15", "SnO2_136",
    "TiO2_141", "TiO2_136", "TiO2_61", "Y2O3_206",
    "NaCl_225", "KCl_225", "CsCl_221", "LiF_225", "CaF2_225", "KBr_225", "AgCl_225",
    "ZnS_216", "ZnS_186", "PbS_225", "FeS2_205", "MoS2_194",
    "CaCO3_167", "CaCO3_62", "MgCO3_167", "SrCO3_62",
    "SiO2_154", "SiO2_92", "Mg2SiO4_62", "ZrSiO4_141", "Al2SiO5_58",
    "SrTiO3_221", "BaTiO3_99", "CaTiO3_62", "LaAlO3_167",
    "MgAl2O4_227", "Fe3O4_227", "Co3O4_227",
]
REQUIRED_ONE_OF = [
    ("KNbO3 or PbTiO3", ["KNbO3_38", "KNbO3_99", "TiPbO3_99", "PbTiO3_99"]),
    ("ZnFe2O4 or NiFe2O4", ["Zn(FeO2)2_227", "Fe2NiO4_227"]),
    ("Li4Ti5O12 or LiMn2O4", ["Li4Ti5O12_227", "LiMn2O4_227"]),
]
HARD_GROUPS = [
    ("anatase/rutile/brookite", ["TiO2_141", "TiO2_136", "TiO2_61"]),
    ("hematite/magnetite/wustite", ["Fe2O3_167", "Fe3O4_227", "FeO_225"]),
    ("alpha-Fe/gamma-Fe", ["Fe_229", "Fe_225"]),
    ("calcite/aragonite", ["CaCO3_167", "CaCO3_62"]),
    ("quartz/cristobalite", ["SiO2_154", "SiO2_92"]),
    ("sphalerite/wurtzite", ["ZnS_216", "ZnS_186"]),
]

BENIGN_WARNINGS = (
    "No _symmetry_equiv_pos_as_xyz type key found. Spacegroup from",
    "fractional coordinates rounded to ideal values",
)

STEM_RE = re.compile(r"^([A-Za-z0-9()]+)_(\d{1,3})$")
TYPE_RE = re.compile(r"^([A-Z][a-z]?)(\d*[+-])?$")
POS_TOL = 1e-3  # fractional, for merging/deduplicating expanded positions
MATCH_TOL = 0.02  # angstrom, for matching Hall-expanded sites to pymatgen sites


def hall_table():
    table = {}
    for h in range(1, 531):
        t = spglib.get_spacegroup_type(h)
        table[t.hall_symbol] = (h, t.number)
    return table


def op_key(rot, trans):
    t = np.round(np.mod(np.asarray(trans, float), 1.0), 4) % 1.0
    return tuple(int(v) for v in np.asarray(rot).ravel()) + tuple(float(v) for v in t)


def frac_dist(a, b):
    d = np.asarray(a) - np.asarray(b)
    d -= np.round(d)
    return d


def expand(asym, rotations, translations):
    """Expand asymmetric-unit rows [(el, occ, xyz)] -> list of (xyz, {el: occ})."""
    sites = []
    for el, occ, xyz in asym:
        orbit = []
        for r, t in zip(rotations, translations):
            p = np.mod(r @ xyz + t, 1.0)
            if not any(np.all(np.abs(frac_dist(p, q)) < POS_TOL) for q in orbit):
                orbit.append(p)
        for p in orbit:
            for pos, sp in sites:
                if np.all(np.abs(frac_dist(p, pos)) < POS_TOL):
                    sp[el] = sp.get(el, 0.0) + occ
                    break
            else:
                sites.append((p, {el: occ}))
    return sites


def getlist(block, key):
    v = block.data.get(key)
    if v is None:
        return None
    return v if isinstance(v, list) else [v]


def check_file(path, halls, problems, stats):
    name = os.path.basename(path)
    stem = name[:-4]
    err = lambda msg: problems.append(f"{name}: {msg}")

    m = STEM_RE.match(stem)
    if not m:
        err("file name is not <formula>_<space group number>.cif")
        return
    formula, number = m.group(1), int(m.group(2))

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not re.search(r"^# Source: \S.*$", text, re.M):
        err("no '# Source:' comment line")
    if "_publ_section_references" not in text:
        err("no _publ_section_references")

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with redirect_stderr(io.StringIO()):
            try:
                parser = CifParser(path)
                structs = parser.parse_structures(primitive=False, on_error="raise")
            except Exception as exc:  # noqa: BLE001
                err(f"pymatgen cannot parse it: {exc}")
                return
    for w in parser.warnings:
        if not any(b in w for b in BENIGN_WARNINGS):
            err(f"pymatgen warning: {w}")
    if len(structs) != 1:
        err(f"expected one structure, pymatgen found {len(structs)}")
        return
    s = structs[0]
    blocks = list(parser.as_dict().keys())
    block = parser._cif.data[blocks[0]]

    # --- header fields
    if blocks[0].lower() != stem.lower():
        err(f"data_ block name '{blocks[0]}' differs from file stem")
    for key in ("_chemical_formula_sum", "_symmetry_space_group_name_H-M", "_symmetry_space_group_name_Hall",
                "_space_group_IT_number"):
        if not block.data.get(key):
            err(f"missing {key}")
    if not (block.data.get("_chemical_name_mineral") or block.data.get("_chemical_name_common")):
        err("missing _chemical_name_mineral / _chemical_name_common")
    try:
        it_number = int(str2float(block.data.get("_space_group_IT_number", "0")))
    except ValueError:
        it_number = -1
    if it_number != number:
        err(f"_space_group_IT_number {it_number} != file-name number {number}")

    # --- Hall symbol as spglib writes it
    hall_sym = block.data.get("_symmetry_space_group_name_Hall", "")
    if hall_sym not in halls:
        err(f"Hall symbol '{hall_sym}' is not spelled as in spglib's database")
        return
    hall_number, hall_sg = halls[hall_sym]
    if hall_sg != number:
        err(f"Hall symbol '{hall_sym}' is space group {hall_sg}, not {number}")
    db = spglib.get_symmetry_from_database(hall_number)
    rots, trans = db["rotations"], db["translations"]

    # --- explicit operator list (optional) must equal the Hall operator set
    xyz_ops = getlist(block, "_space_group_symop_operation_xyz") or getlist(block, "_symmetry_equiv_pos_as_xyz")
    if xyz_ops:
        stats["explicit"].append(stem)
        try:
            ops = [SymmOp.from_xyz_str(o) for o in xyz_ops]
            given = {op_key(np.round(o.rotation_matrix).astype(int), o.translation_vector) for o in ops}
        except Exception as exc:  # noqa: BLE001
            err(f"cannot read explicit operators: {exc}")
            given = set()
        expected = {op_key(r, t) for r, t in zip(rots, trans)}
        if len(xyz_ops) != len(expected) or given != expected:
            err(f"explicit operator list ({len(xyz_ops)} ops) differs from the Hall symbol's ({len(expected)} ops)")

    # --- atom-site loop
    labels = getlist(block, "_atom_site_label") or []
    types = getlist(block, "_atom_site_type_symbol") or []
    cols = [getlist(block, f"_atom_site_fract_{c}") for c in "xyz"]
    occs = getlist(block, "_atom_site_occupancy")
    bisos = getlist(block, "_atom_site_B_iso_or_equiv")
    if not labels or any(c is None for c in cols) or occs is None or bisos is None or len(types) != len(labels):
        err("atom_site loop lacks label/type_symbol/fract_xyz/occupancy/B_iso_or_equiv")
        return
    asym = []
    for i, lab in enumerate(labels):
        tm = TYPE_RE.match(types[i])
        if not tm:
            err(f"atom {lab}: bad type symbol '{types[i]}'")
            continue
        try:
            Element(tm.group(1))
            xyz = np.array([str2float(c[i]) for c in cols])
            occ = str2float(occs[i])
            b = str2float(bisos[i])
        except Exception as exc:  # noqa: BLE001
            err(f"atom {lab}: unreadable value ({exc})")
            continue
        if not (0 < occ <= 1):
            err(f"atom {lab}: occupancy {occ} outside (0, 1]")
        if not (0 < b < 10):
            err(f"atom {lab}: B_iso {b} implausible")
        asym.append((tm.group(1), occ, xyz))

    # --- Hall-symbol expansion must reproduce pymatgen's structure (H-M path)
    expanded = expand(asym, rots, trans)
    lat = s.lattice
    if len(expanded) != len(s):
        err(f"Hall-symbol expansion gives {len(expanded)} sites, pymatgen gives {len(s)}")
    else:
        pm = [(site.frac_coords, {sp.symbol: amt for sp, amt in site.species.element_composition.items()})
              for site in s]
        used = set()
        for pos, sp in expanded:
            hit = None
            for j, (q, spq) in enumerate(pm):
                if j in used:
                    continue
                if np.linalg.norm(lat.get_cartesian_coords(frac_dist(pos, q))) < MATCH_TOL:
                    hit = j
                    break
            if hit is None:
                err(f"Hall-expanded site {np.round(pos, 4).tolist()} not found in pymatgen's structure")
                break
            used.add(hit)
            spq = pm[hit][1]
            if set(sp) != set(spq) or any(abs(sp[k] - spq[k]) > 1e-3 for k in sp):
                err(f"site {np.round(pos, 4).tolist()}: species {sp} (Hall) vs {spq} (pymatgen)")
                break

    # --- occupancies, distances
    for site in s:
        if site.species.num_atoms > 1.0 + 1e-6:
            err(f"site at {np.round(site.frac_coords, 4).tolist()} has total occupancy {site.species.num_atoms:.3f} > 1")
    if len(s) > 1:
        dm = s.distance_matrix
        np.fill_diagonal(dm, np.inf)
        hmask = np.array([any(el.symbol == "H" for el in site.species.elements) for site in s])
        dm[hmask, :] = np.inf
        dm[:, hmask] = np.inf
        dmin = float(dm.min())
        if dmin < MIN_DIST:
            i, j = np.unravel_index(np.argmin(dm), dm.shape)
            err(f"atoms {i} ({s[i].species_string}) and {j} ({s[j].species_string}) are {dmin:.3f} A apart")

    # --- space group found from the atoms
    try:
        found = SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number()
    except Exception as exc:  # noqa: BLE001
        found = None
        err(f"SpacegroupAnalyzer failed: {exc}")
    if found is not None and found != number:
        err(f"SpacegroupAnalyzer finds space group {found}, file name says {number}")

    # --- formula
    rf = s.composition.reduced_formula
    if stem in NONSTOICHIOMETRIC:
        want = Composition(NONSTOICHIOMETRIC[stem])
        if not s.composition.fractional_composition.almost_equals(want.fractional_composition, rtol=0, atol=1e-3):
            err(f"composition {s.composition.formula} != expected {want.formula}")
        if Composition(formula).elements != want.elements:
            err(f"file-name formula {formula} has other elements than {want.formula}")
    elif rf != formula:
        err(f"reduced formula {rf} != file-name formula {formula}")

    # --- density
    ref = DENSITY.get(stem)
    if ref is None:
        err("no published density in the DENSITY table of this script")
    else:
        rho = s.density
        if abs(rho - ref[0]) / ref[0] > DENSITY_TOL:
            err(f"density {rho:.3f} g/cm3 differs from published {ref[0]} ({ref[1]}) by "
                f"{100 * (rho - ref[0]) / ref[0]:+.1f} %")
    stats["rows"].append((stem, len(s), number, s.density))


def main(argv):
    global PHASE_DIR
    if len(argv) > 1:
        PHASE_DIR = os.path.abspath(argv[1])
    problems = []
    stats = {"explicit": [], "rows": []}
    if not os.path.isdir(PHASE_DIR):
        print(f"check_phase_library: {PHASE_DIR} does not exist")
        return 1
    files = sorted(f for f in os.listdir(PHASE_DIR) if f.endswith(".cif"))
    halls = hall_table()
    for f in files:
        check_file(os.path.join(PHASE_DIR, f), halls, problems, stats)

    stems = {f[:-4] for f in files}
    lower = {}
    for st in stems:
        lower.setdefault(st.lower(), []).append(st)
    for k, v in lower.items():
        if len(v) > 1:
            problems.append(f"file names differ only by case: {v}")
    if len(files) < MIN_PHASES:
        problems.append(f"only {len(files)} phase files, need at least {MIN_PHASES}")
    if len(stats["explicit"]) < MIN_EXPLICIT_OPS:
        problems.append(f"only {len(stats['explicit'])} files with an explicit operator list, need {MIN_EXPLICIT_OPS}")
    for st in REQUIRED:
        if st not in stems:
            problems.append(f"required phase {st}.cif is missing")
    for what, alts in REQUIRED_ONE_OF:
        if not any(a in stems for a in alts):
            problems.append(f"required phase ({what}) is missing")
    for what, group in HARD_GROUPS:
        missing = [g for g in group if g not in stems]
        if missing:
            problems.append(f"hard group {what}: missing {missing}")
    for st in sorted(set(DENSITY) - stems):
        problems.append(f"DENSITY table lists {st} but there is no {st}.cif")

    print(f"check_phase_library: {len(files)} phase files in {PHASE_DIR}")
    print(f"  explicit-operator files: {', '.join(stats['explicit']) or 'none'}")
    print(f"  hard groups present: {sum(all(g in stems for g in grp) for _, grp in HARD_GROUPS)}/{len(HARD_GROUPS)}")
    if problems:
        print(f"FAILED: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("OK: all phases parse, match their space group, formula, Hall-symbol expansion and published density")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
