#!/usr/bin/env bash
# The main job (README's first command): install what is missing, build, and
# run the XRD simulator on the built-in phase library with a summary.
# Re-running reuses the build and only regenerates the demo dataset.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
BIN="$ROOT/build/cli/phaseid"
OUT="$ROOT/out"
mkdir -p "$OUT"

echo
echo "== built-in phase library"
"$BIN" phases list | awk -F'\t' 'NR > 1 { n++; printf "%s%s", (n > 1 ? ", " : ""), $1 } END { printf "\n%d phases\n", n }'

echo
echo "== stick pattern of rutile (Cu K-alpha1, strongest peaks)"
"$BIN" synth xrd --sticks data/phases/TiO2_136.cif --wavelength CuKa1 --two-theta 20:70 | head -8

echo
echo "== synthetic dataset: 10000 single-phase and mixture patterns, all augmentations on"
"$BIN" synth xrd --phases builtin --n 10000 --mixtures 3 --seed 1 --out "$OUT/demo_xrd.h5"
ls -l "$OUT/demo_xrd.h5"

echo
echo "== simulator throughput on this machine"
"$BIN" bench xrd --seconds 2

SPECTRA="$ROOT/../shared/data/xrd/li-mn-ti-o-f"
if [[ -d "$SPECTRA" ]]; then
  echo
  echo "== physics-only baseline on measured patterns (${SPECTRA#$ROOT/})"
  "$BIN" match --refs "$SPECTRA/references" --top 1 "$SPECTRA"/spectra/*.xy
fi
echo
echo "phaseid: done. Next: phaseid --help"
