#!/usr/bin/env bash
# The parsers of untrusted input under libFuzzer + ASan + UBSan for a few seconds each
# (tests/fuzz/run.sh; FUZZ_SECONDS per target, default 8). Skipped without clang's libFuzzer and
# under ./build.sh asan (the fuzz targets carry their own sanitizers). A longer look:
# tests/fuzz/run.sh 600.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${LB_SANITIZED:-}" ]; then echo "SKIP fuzz: run by ./build.sh test, not under the sanitizer build"; exit 77; fi
exec bash "$ROOT/tests/fuzz/run.sh" "${FUZZ_SECONDS:-8}"
