#!/usr/bin/env bash
# Everything phaseid wants from a lent GPU machine, in as few calls as
# possible. That machine (an H100 or H200 with the CUDA 13 toolkit, Python
# with numpy and h5py) has none of our Debian libraries and no network, so
# the build is made here and carried there:
#
#   here:  bash scripts/gpu-kit.sh pack [BUILD_DIR]
#          bundles BUILD_DIR (default build; configured with CUDA) -- the
#          phaseid binary, the cmocka test binaries and every shared library
#          they load except glibc's and CUDA's own -- into .carry/gpukit.tar.xz
#          (ignored by git; name .carry in the device call's carry list).
#   there: bash scripts/gpu-kit.sh run [all|tests|bench|train]
#          unpacks the kit and, for 'all' (default), in one call (about
#          5 minutes on an H100, most of it training):
#          1. the GPU and driver, and any library the kit lacks there;
#          2. every cmocka unit test (the CUDA parity tests of test_nn,
#             test_net, test_xrd_render run where a device is visible);
#          3. inference throughput of the built-in model on CUDA, batch 1, 64,
#             4096, 65536, with and without the physics residual check;
#          4. simulator throughput (CPU threads, then the CUDA renderer), and
#             HTTP load on CUDA (benchmarks/http_load.py, wrk packed when here);
#          5. training throughput: the built-in recipe on CUDA for
#             PHASEID_KIT_STEPS steps (default 2000; 20000 is the full recipe);
#          then prints a summary and leaves in $OUT (what comes back) the
#          summary, the JSON results and one tarball of every log.
#
# The built-in model and phase library travel with the working tree; the
# shared data (../shared/data) does not, so the tests that need it skip.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="$ROOT/.carry/gpukit.tar.xz"

usage() {
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

# Shared libraries a binary loads, less the C library's own and CUDA's (the
# GPU machine's toolkit and driver provide those, matched to its driver).
kit_libs() {
  ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|librt|libpthread|libresolv|ld-linux[^/]*)\.so|/libcuda\.|/libcudart\.|/libcublas|/libcublasLt\.|/libcurand\.|/libnvidia-' || true
}

pack() {
  local build="${1:-$ROOT/build}"
  local bin="$build/cli/phaseid"
  if [[ ! -x "$bin" ]]; then
    echo "gpu-kit: no $bin; build first (cmake -S . -B build && cmake --build build)" >&2
    exit 1
  fi
  if ! ldd "$bin" | grep -q libcudart; then
    echo "gpu-kit: $bin was built without CUDA (nvcc not found at configure time)" >&2
    exit 1
  fi
  local stage
  stage="$(mktemp -d)"
  mkdir -p "$stage/kit/bin" "$stage/kit/tests" "$stage/kit/lib"
  cp "$bin" "$stage/kit/bin/"
  # wrk drives the HTTP load benchmark (Debian package 'wrk'; optional)
  local wrk
  wrk="$(command -v wrk || true)"
  [[ -n "$wrk" ]] && cp "$wrk" "$stage/kit/bin/"
  local t tests=()
  for t in "$build"/tests/test_*; do
    [[ -x "$t" && -f "$t" ]] || continue
    cp "$t" "$stage/kit/tests/"
    tests+=("$t")
  done
  local lib
  for lib in $(kit_libs "$bin" ${wrk:+"$wrk"} "${tests[@]}"); do
    cp -L "$lib" "$stage/kit/lib/$(basename "$lib")"
  done
  git -C "$ROOT" rev-parse HEAD >"$stage/kit/COMMIT" 2>/dev/null || echo unknown >"$stage/kit/COMMIT"
  (cd "$ROOT" && git status --short) >"$stage/kit/DIRTY" 2>/dev/null || true
  mkdir -p "$(dirname "$KIT")"
  tar -C "$stage" -cf - kit | xz -T0 -6 >"$KIT.tmp" && mv "$KIT.tmp" "$KIT"
  rm -rf "$stage"
  echo "gpu-kit: $KIT ($(du -h "$KIT" | cut -f1)): phaseid, ${#tests[@]} test binaries," \
    "$(kit_libs "$bin" ${wrk:+"$wrk"} "${tests[@]}" | wc -l) libraries, commit $(cut -c1-12 <<<"$(git -C "$ROOT" rev-parse HEAD)")"
  echo "gpu-kit: on the GPU machine: carry [\".carry\"], command: bash scripts/gpu-kit.sh run"
}

run() {
  local what="${1:-all}"
  case "$what" in all | tests | bench | train) ;; *) usage ;; esac
  if [[ ! -f "$KIT" ]]; then
    echo "gpu-kit: no $KIT: run 'bash scripts/gpu-kit.sh pack' here and carry .carry" >&2
    exit 1
  fi
  local out="${OUT:-$ROOT/out/gpukit}"
  local w
  w="$(mktemp -d)"
  mkdir -p "$out" "$w/logs" "$w/results"
  xz -dc "$KIT" | tar -C "$w" -xf - || exit 1
  local K="$w/kit" P="$w/kit/bin/phaseid"
  # A library the machine has under the same soname stays the machine's: its
  # own copy may be newer than Debian 12's (libstdc++ for CUDA's libraries).
  local lib
  mkdir -p "$K/lib-unused"
  for lib in "$K"/lib/*; do
    if ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$(basename "$lib") "; then
      mv "$lib" "$K/lib-unused/"
    fi
  done
  local cudalib
  for cudalib in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d "$cudalib" ]] && break
  done
  export LD_LIBRARY_PATH="$K/lib:$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PHASEID_SOURCE_DIR="$ROOT" PHASEID_SHARED_DATA="$ROOT/../shared/data"
  local S="$w/summary.txt"
  {
    echo "phaseid gpu kit: $what, commit $(cat "$K/COMMIT"), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    [[ -s "$K/DIRTY" ]] && echo "  (packed from a tree with uncommitted changes)"
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm \
      --format=csv,noheader 2>&1 | sed 's/^/GPU: /'
    local missing
    missing="$(ldd "$P" "$K"/tests/* 2>/dev/null | grep 'not found' | sort -u)"
    [[ -n "$missing" ]] && echo "MISSING LIBRARIES:" && echo "$missing"
  } | tee "$S"
  nvidia-smi -q >"$w/logs/nvidia-smi.txt" 2>&1

  if [[ "$what" == all || "$what" == tests ]]; then
    echo "== unit tests (cmocka; CUDA parity where a device is visible)" | tee -a "$S"
    local t name rc pass=0 fail=0 skip=0
    for t in "$K"/tests/test_*; do
      name="$(basename "$t")"
      (cd "$w" && timeout 300 "$t") >"$w/logs/$name.log" 2>&1
      rc=$?
      case $rc in
        0) pass=$((pass + 1)) ;;
        77) skip=$((skip + 1)) ;;
        *) fail=$((fail + 1)) && echo "  FAILED $name (exit $rc): logs/$name.log" | tee -a "$S" ;;
      esac
      grep -h -i -E 'cuda|gpu|skipped' "$w/logs/$name.log" | grep -v '^\[' | sed "s/^/  $name: /" |
        head -20 | tee -a "$S"
    done
    echo "unit tests: $pass passed, $fail failed, $skip skipped" | tee -a "$S"
  fi

  if [[ "$what" == all || "$what" == bench ]]; then
    local model="$ROOT/data/models/xrd-builtin.h5"
    echo "== inference, built-in model, CUDA" | tee -a "$S"
    "$P" bench classify --model "$model" --device cuda --batch 1,64,4096,65536 --seconds 3 \
      --json "$w/results/infer_cuda.json" 2>&1 | tee "$w/logs/infer_cuda.log" | tail -8 | tee -a "$S"
    echo "== inference, network only (--no-residual), CUDA" | tee -a "$S"
    "$P" bench classify --model "$model" --device cuda --batch 1,64,4096,65536 --seconds 3 \
      --no-residual --json "$w/results/infer_cuda_nores.json" 2>&1 |
      tee "$w/logs/infer_cuda_nores.log" | tail -8 | tee -a "$S"
    echo "== simulator throughput (CPU threads, then CUDA)" | tee -a "$S"
    "$P" bench xrd --device auto --seconds 3 --json "$w/results/xrd_cuda.json" 2>&1 |
      tee "$w/logs/xrd.log" | tail -8 | tee -a "$S"
    if [[ -x "$K/bin/wrk" ]]; then
      echo "== HTTP load (KServe binary, wrk), built-in model, CUDA" | tee -a "$S"
      PATH="$K/bin:$PATH" python3 "$ROOT/benchmarks/http_load.py" --phaseid "$P" \
        --model "$model" --device cuda --json "$w/results/http_load_cuda.json" 2>&1 |
        tee "$w/logs/http_load.log" | tail -12 | tee -a "$S"
    fi
  fi

  if [[ "$what" == all || "$what" == train ]]; then
    local steps="${PHASEID_KIT_STEPS:-2000}"
    echo "== training, built-in recipe on CUDA, $steps steps x 128" | tee -a "$S"
    local t0 t1
    t0=$(date +%s.%N)
    PHASEID_BIN="$P" bash "$ROOT/scripts/train-builtin-model.sh" "$w/results/xrd-cuda.h5" \
      --device cuda --steps "$steps" --quiet >"$w/logs/train.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    tail -25 "$w/logs/train.log" | tee -a "$S"
    echo "training exit $rc, wall $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s for $steps steps x 128 patterns" \
      "(calibration and validation included)" | tee -a "$S"
  fi

  cp "$S" "$out/summary.txt"
  cp "$w"/results/*.json "$out/" 2>/dev/null
  tar -C "$w" -czf "$out/gpukit-logs.tar.gz" logs summary.txt
  [[ -f "$w/results/xrd-cuda.h5" ]] && cp "$w/results/xrd-cuda.h5" "$out/"
  rm -rf "$w"
  echo "gpu-kit: results in $out"
}

case "${1:-}" in
  pack) shift && pack "$@" ;;
  run) shift && run "$@" ;;
  *) usage ;;
esac
