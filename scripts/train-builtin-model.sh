#!/usr/bin/env bash
# Train the built-in XRD model (data/models/xrd-builtin.h5) exactly as shipped:
# the whole built-in phase library (83 phases), 1..3 phases per pattern
# (sigmoid presence head + fractions), every augmentation on at the
# simulator's default ranges, 10 % outlier patterns per batch (outlier
# exposure for the unknown-phase score), calibration on 4000 patterns drawn
# with every augmentation range widened 1.5x. 2-theta 10..80 deg at 0.02 deg,
# Cu K-alpha. Reproducible from the seed on the same backend.
# usage: scripts/train-builtin-model.sh [OUT.h5] [extra phaseid train options]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${PHASEID_BIN:-$ROOT/build/cli/phaseid}"
OUT="${1:-$ROOT/data/models/xrd-builtin.h5}"
shift || true
SPEC="conv1d(8,k9,s2,p4) bn relu maxpool(2) conv1d(16,k7,s2,p3) bn relu maxpool(2) \
conv1d(32,k5,p2) bn relu maxpool(2) conv1d(64,k3,p1) bn relu maxpool(2) \
conv1d(96,k3,p1) bn relu maxpool(2) flatten dense(256) relu dropout(0.2) head"
mkdir -p "$(dirname "$OUT")"
exec "$BIN" train --modality xrd --phases builtin --out "$OUT" --arch "$SPEC" \
  --steps 44000 --batch 128 --lr 3e-3 --seed 7 --grid 10:80:0.02 --mixtures 3 \
  --outliers 0.1 --outliers-lattice 0.5 --calib-widen 1.5 --val 2000 --calib 4000 --device cpu "$@"
