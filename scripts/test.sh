#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs missing packages and the
# test-only peer tools (pymatgen, h5py in a virtual environment), then
#   1. Release build (CUDA compiled when nvcc exists): every cmocka unit test,
#      the peer-tool comparisons and CLI integration tests (ctest);
#   2. ASan + UBSan build: the same suite again;
#   3. libFuzzer targets for a bounded time (PHASEID_FUZZ_SECONDS, default 60).
# GPU-only tests skip cleanly where no CUDA device is visible.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ_SECONDS="${PHASEID_FUZZ_SECONDS:-60}"
JOBS="$(nproc)"

bash scripts/setup.sh --test

# Peer tools for physics cross-checks live in a venv (PEP 668 on Debian 12).
VENV="$ROOT/build/venv-test"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import pymatgen.analysis.diffraction.xrd, h5py, tritonclient.http, selenium" 2>/dev/null; then
  echo "phaseid test: installing pymatgen, h5py, tritonclient and selenium into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check pymatgen h5py "tritonclient[http]" selenium
fi
PY="$VENV/bin/python"

if [[ ! -d "$ROOT/../shared/data" ]]; then
  echo "NOTE: ../shared/data is absent: tests that compare with real data will be skipped."
fi

echo "== 0/3 formatting (clang-format, .clang-format at the root)"
FILES=$(git ls-files '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null || find core kernels synth cli tests benchmarks -name '*.[ch]' -o -name '*.cu*')
clang-format --dry-run --Werror $FILES

echo "== 1/3 Release build: full suite"
cmake -S . -B build -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure -j"$JOBS")

echo "== 2/3 ASan + UBSan build: full suite"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPHASEID_SANITIZE=ON -DPHASEID_CUDA=OFF \
  -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build build-asan -j"$JOBS"
# The real-data model test trains a network for ~1.5 min optimized; unoptimized
# under ASan it would take most of the CI budget, and its train/classify code
# paths are covered here by test_train, test_classify and the CLI tests.
# The dashboard test checks a browser page against a live stream at up to
# 2,000 frames/s, which an unoptimized ASan server cannot serve; the server
# code it drives runs under ASan in test_server_* and test_stream_cli.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$JOBS" -E 'py_test_real_xrd_model|py_test_dashboard')

echo "== 3/3 libFuzzer targets, ${FUZZ_SECONDS}s each"
bash tests/fuzz/run_fuzz.sh "$FUZZ_SECONDS"

echo "phaseid test: all stages passed"
