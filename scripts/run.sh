#!/usr/bin/env bash
# The main job (README's first command): install what is missing, build
# (CUDA where nvcc exists), take the built-in model (data/models, shipped;
# trained with scripts/train-builtin-model.sh if it is missing), start
# `phaseid serve` on 127.0.0.1:8000, stream the heating-ramp demo into it and
# print the dashboard URL. Running it again reuses the build and the model.
# Ctrl-C stops the stream and the server cleanly.
#
# Environment: PHASEID_PORT (default 8000), PHASEID_RATE (demo frames/s,
# default 20), PHASEID_RUN_SECONDS (stop by itself after that many seconds;
# default: run until Ctrl-C).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
BIN="$ROOT/build/cli/phaseid"
PORT="${PHASEID_PORT:-8000}"
RATE="${PHASEID_RATE:-20}"
URL="http://127.0.0.1:$PORT"
MODELS="$ROOT/data/models"
OUT="$ROOT/out"
mkdir -p "$OUT"

if [[ ! -f "$MODELS/xrd-builtin.h5" ]]; then
  echo "== no built-in model in data/models: training it (about 20 min on 2 CPU cores)"
  bash scripts/train-builtin-model.sh "$MODELS/xrd-builtin.h5"
fi

SERVER_PID=""
STREAM_PID=""
stop() {
  trap - INT TERM EXIT
  if [[ -n "$STREAM_PID" ]] && kill -0 "$STREAM_PID" 2>/dev/null; then
    kill -INT "$STREAM_PID" 2>/dev/null || true
    wait "$STREAM_PID" 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    echo "phaseid: server stopped (drained)"
  fi
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

echo
echo "== phaseid serve --models data/models on $URL (log: out/serve.log)"
"$BIN" serve --models "$MODELS" --host 127.0.0.1 --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVER_PID=$!
ready=0
for _ in $(seq 1 600); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "phaseid: the server did not start:" >&2
    cat "$OUT/serve.log" >&2
    exit 1
  fi
  if curl -sf -o /dev/null "$URL/v2/health/ready"; then
    ready=1
    break
  fi
  sleep 0.1
done
if [[ $ready != 1 ]]; then
  echo "phaseid: the server is not ready after 60 s (see out/serve.log)" >&2
  exit 1
fi
python3 - "$URL" <<'PY' || true
import json, sys, urllib.request
for m in json.load(urllib.request.urlopen(sys.argv[1] + "/v1/models", timeout=60))["models"]:
    g, t = m["grid"], m["training"]
    hi = g["x0"] + g["step"] * (g["n_points"] - 1)
    print(f"model {m['name']}: {len(m['phases'])} phases, {m['head']} head, "
          f"{m['n_params']:,} parameters, {m['flops_per_frame'] / 1e6:.2f} MFLOPs/frame, "
          f"2-theta {g['x0']:g}-{hi:.0f} deg, {m['device']}; "
          f"trained {t['steps']} steps x {t['batch']}")
PY

echo
echo "==================================================================="
echo "  dashboard:  $URL/"
echo "  KServe v2:  $URL/v2/models/xrd-builtin    metrics: $URL/metrics"
echo "  classify a file:"
echo "    curl --data-binary @pattern.xy $URL/v1/models/xrd-builtin/classify"
echo "==================================================================="
echo
echo "== demo: heating ramp (anatase -> anatase + rutile -> rutile, then brucite,"
echo "   which is not in the library and should be flagged unknown), $RATE frames/s,"
echo "   repeated until Ctrl-C"
"$BIN" stream --server "$URL" --model xrd-builtin --demo heating-ramp --rate "$RATE" --loop &
STREAM_PID=$!
if [[ -n "${PHASEID_RUN_SECONDS:-}" ]]; then
  sleep "$PHASEID_RUN_SECONDS"
  echo
  echo "== PHASEID_RUN_SECONDS=$PHASEID_RUN_SECONDS reached: stopping"
  stop
else
  wait "$STREAM_PID" || true
fi
