#!/usr/bin/env bash
# Install what phaseid needs on Debian 12 when it is missing, then configure
# and build. Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh [--test]   --test also installs the test-only tools
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${PHASEID_BUILD:-$ROOT/build}"
WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1

# Debian packages the build needs (library -dev packages and tools).
PKGS=(build-essential cmake pkg-config libhdf5-dev libcif-dev libsymspg-dev libxrl-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev curl
      libcmocka-dev libopenblas-dev python3)
# Test-only: clang + its runtime for libFuzzer and sanitizers, venv for peer tools.
TEST_PKGS=(clang clang-format libclang-rt-14-dev python3-venv git prometheus chromium chromium-driver wrk)

missing=()
want=("${PKGS[@]}")
[[ $WANT_TEST == 1 ]] && want+=("${TEST_PKGS[@]}")
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "phaseid setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# CUDA is optional: the build enables it when nvcc is found (no GPU needed).
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

mkdir -p "$BUILD"
LOG="$BUILD/configure.log"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
grep -E "phaseid: CUDA backend" "$LOG" || true
cmake --build "$BUILD" -j"$(nproc)"
