"""Physics-only baseline on real data: for each measured powder pattern in
../shared/data/xrd/li-mn-ti-o-f/spectra (Cu K-alpha, file name = the phase
present), `phaseid match` ranks the 56 reference CIFs by profile similarity
(SNIP background removal, +-0.3 deg zero shift) and must put a reference with
the named formula first. Ground truth is the file name, written by the data's
authors (XRD-AutoAnalyzer), not by us. Skips (77) when the data is absent."""
import json
import os
import subprocess
import sys

SHARED = os.environ.get("PHASEID_SHARED_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
BIN = os.environ.get("PHASEID_BIN", "phaseid")
ROOT = os.path.join(SHARED, "xrd", "li-mn-ti-o-f")


def main():
    refs = os.path.join(ROOT, "references")
    spectra = os.path.join(ROOT, "spectra")
    if not (os.path.isdir(refs) and os.path.isdir(spectra)):
        print(f"SKIP: {ROOT} is absent (shared measured data not available)")
        return 77
    files = sorted(os.path.join(spectra, f) for f in os.listdir(spectra) if f.endswith(".xy"))
    assert len(files) >= 3, files
    n_refs = len([f for f in os.listdir(refs) if f.endswith(".cif")])
    out = subprocess.run([BIN, "match", "--refs", refs, "--format", "json", "--top", str(n_refs)] + files,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        print(out.stderr)
        return 1
    results = json.loads(out.stdout)
    failures = 0
    for r in results:
        want = os.path.splitext(os.path.basename(r["file"]))[0]
        hits = r["hits"]
        assert len(hits) == n_refs, (len(hits), n_refs)
        top = hits[0]
        best_wrong = next(h for h in hits if h["formula"] != want)
        ok = top["formula"] == want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(r['file'])}: first {top['phase']} "
              f"(score {top['score']:.3f}, zero shift {top['zero_shift_deg']:+.2f} deg); "
              f"best other formula {best_wrong['phase']} ({best_wrong['score']:.3f})")
    print(f"{len(results) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
