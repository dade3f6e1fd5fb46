"""Helpers shared by the benchmark scripts: find the phaseid binary, run a
command (exit with its stderr on failure, log it), decode HDF5 strings, and
describe the machine for the results JSON."""
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def find_bin(arg):
    for c in [arg, os.environ.get("PHASEID_BIN"), os.path.join(ROOT, "build", "cli", "phaseid")]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("phaseid binary not found (use --phaseid or PHASEID_BIN)")


def sh(cmd, log):
    """Run cmd, append it to log; exit on failure; returns (stdout, seconds)."""
    log.append(" ".join(cmd))
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout, time.time() - t0


def s(v):
    """An HDF5 string attribute or element as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (else platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "loadavg": list(os.getloadavg())}


def link_lib(src_dir, names, dst):
    """A phase folder dst holding links to src_dir/NAME.cif for each name."""
    os.mkdir(dst)
    for n in names:
        os.symlink(os.path.join(src_dir, n + ".cif"), os.path.join(dst, n + ".cif"))


def _lattice(sg, symbol):
    """(crystal family, centring letter) of a space group."""
    fam = ("triclinic" if sg <= 2 else "monoclinic" if sg <= 15 else "orthorhombic" if sg <= 74
           else "tetragonal" if sg <= 142 else "hexagonal" if sg <= 194 else "cubic")
    return fam, symbol.strip()[0].upper()


def lattice_siblings(bin_, phases_dir, strain, log):
    """For each phase of phases_dir, the other phases it shares a Bravais
    lattice with and whose cell it can reach under the symmetry-keeping
    lattice strain of the augmentation (each free cell length scaled by
    1 +- strain, angles within 0.5 deg): their strained peak POSITIONS can
    coincide, so only relative intensities (structure factors, which texture
    and noise blur) tell them apart. Uses `phaseid phases list`."""
    out, _ = sh([bin_, "phases", "list", "--phases", phases_dir, "--format", "tsv"], log)
    lines = out.strip().splitlines()
    head = lines[0].split("\t")
    rows = [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]
    lim = (1.0 + strain) / (1.0 - strain)
    info = {}
    for r in rows:
        cell = [float(r[k]) for k in ("a", "b", "c", "alpha", "beta", "gamma")]
        info[r["name"]] = (_lattice(int(r["spacegroup_number"]), r["spacegroup_symbol"]), cell)
    sib = {n: set() for n in info}
    for n, (lat, c) in info.items():
        for m, (lat2, c2) in info.items():
            if m == n or lat2 != lat:
                continue
            if all(max(x, y) / min(x, y) <= lim for x, y in zip(c[:3], c2[:3])) and \
                    all(abs(x - y) <= 0.5 for x, y in zip(c[3:], c2[3:])):
                sib[n].add(m)
    return sib


def _inv_d2(hkl, cell):
    """1/d^2 for orthogonal-axis and hexagonal cells (gamma = 120)."""
    a, b, c, al, be, ga = cell
    h, k, l = hkl[:, 0], hkl[:, 1], hkl[:, 2]
    if abs(ga - 120.0) < 0.5:
        return 4.0 / 3.0 * (h * h + h * k + k * k) / (a * a) + l * l / (c * c)
    return h * h / (a * a) + k * k / (b * b) + l * l / (c * c)


# Twin threshold: the median cosine between a phase's texture-free pattern and
# its textured ones at the default March-Dollase range (r 0.5..1.5, all other
# augmentation off) is 0.9976 over the 83 built-in phases (10th percentile
# 0.9505); see near_twins.
TWIN_COS = 0.995


def near_twins(bin_, phases_dir, strain, grid, wavelength_a, log, min_cos=TWIN_COS, fwhm=0.25):
    """Pairs of lattice siblings (lattice_siblings) whose powder patterns are
    near twins: the best cosine similarity of their Gaussian-broadened stick
    patterns (FWHM `fwhm` deg, one wavelength, on the 2-theta grid lo:hi:step),
    over every lattice strain of the second phase that the augmentation can
    reach relative to the first (each free cell length 1 +- 2 strain), is at
    least min_cos. At the default 0.995 such a pair differs by less than
    texture alone typically changes one phase's pattern (TWIN_COS): a
    classifier can tell them apart only by intensity details that texture
    and noise blur.
    Returns {name: {twin: cosine}}."""
    import numpy as np
    sib = lattice_siblings(bin_, phases_dir, strain, log)
    out, _ = sh([bin_, "phases", "list", "--phases", phases_dir, "--format", "tsv"], log)
    lines = out.strip().splitlines()
    head = lines[0].split("\t")
    cells = {}
    for ln in lines[1:]:
        r = dict(zip(head, ln.split("\t")))
        cells[r["name"]] = [float(r[k]) for k in ("a", "b", "c", "alpha", "beta", "gamma")]
    lo, hi, step = grid
    x = np.arange(lo, hi + step / 2, step)
    sig = fwhm / 2.3548
    sticks = {}

    def load(n):
        if n not in sticks:
            txt, _ = sh([bin_, "synth", "xrd", "--sticks", os.path.join(phases_dir, n + ".cif"),
                         "--wavelength", f"{wavelength_a:.6f}"], log)
            rows = [ln.split("\t") for ln in txt.strip().splitlines()[1:]]
            hkl = np.array([[float(r[3]), float(r[4]), float(r[5])] for r in rows])
            inten = np.array([float(r[2]) for r in rows])
            sticks[n] = (hkl, inten)
        return sticks[n]

    def profile(n, cell):
        hkl, inten = load(n)
        s = 0.5 * wavelength_a * np.sqrt(_inv_d2(hkl, cell))
        ok = s < 1.0
        tt = 2.0 * np.degrees(np.arcsin(s[ok]))
        y = (inten[ok][None, :] * np.exp(-0.5 * ((x[:, None] - tt[None, :]) / sig) ** 2)).sum(1)
        nrm = np.linalg.norm(y)
        return y / nrm if nrm > 0 else y

    twins = {n: {} for n in sib}
    done = set()
    free2 = np.linspace(-2 * strain, 2 * strain, 25)
    for n, ss in sib.items():
        for m in ss:
            if (m, n) in done:
                continue
            done.add((n, m))
            if cells[n][3:] != [90.0, 90.0, 90.0] and abs(cells[n][5] - 120.0) > 0.5:
                continue  # oblique cells: not handled by _inv_d2
            pa = profile(n, cells[n])
            cm = cells[m]
            cubic = abs(cm[0] - cm[1]) < 1e-4 * cm[0] and abs(cm[0] - cm[2]) < 1e-4 * cm[0]
            ta = abs(cm[0] - cm[1]) < 1e-4 * cm[0]
            def cos(e1, e2):
                c2 = list(cm)
                c2[0] *= 1 + e1
                c2[1] *= 1 + e1 if ta else 1 + e2
                c2[2] *= 1 + (e1 if cubic else e2)
                return float(pa @ profile(m, c2))

            # coarse grid, then a fine one around its best (orthorhombic
            # cells: b and c share one factor, which can only under-rate
            # a pair's similarity)
            best, b1, b2 = max((cos(e1, e2), e1, e2) for e1 in free2
                               for e2 in ([0.0] if cubic else free2))
            fine = np.linspace(-0.005, 0.005, 21)
            best = max(best, max(cos(b1 + f1, b2 + f2) for f1 in fine
                                 for f2 in ([0.0] if cubic else fine[::2])))
            if best >= min_cos:
                twins[n][m] = twins[m][n] = round(best, 4)
    return twins
