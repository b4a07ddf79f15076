#!/usr/bin/env bash
# gpu_run.sh — the GPU test tier, run on the device machine. Builds nothing: it runs the binaries
# that sit beside it (./build.sh gpu-bundle copies them into .gpu/, or copy build/lorabatch and
# build/tests/test_ops by hand).
#   tests/gpu_run.sh                 op tests (CUDA vs CPU), then golden tests if present
#   LB_SANITIZE="memcheck racecheck" tests/gpu_run.sh
#                                    afterwards, the op tests under compute-sanitizer, one pass per
#                                    tool (LB_SANITIZE_FILTER limits the ops, default all)
# LB_STEP_TIMEOUT (seconds, default 600) bounds each step. Logs go to $LB_GPU_LOG (default: $OUT when set, else /tmp). Prints a summary last; exits 1 on
# any failure.
set -u
cd "$(dirname "$0")"
LOG=${LB_GPU_LOG:-${OUT:-/tmp}}
mkdir -p "$LOG"
fail=0
summary=()

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"

run_one() { # name cmd...
    local name=$1; shift
    local t0=$(date +%s)
    timeout "${LB_STEP_TIMEOUT:-600}" "$@" >"$LOG/$name.log" 2>&1
    local rc=$?
    local t1=$(date +%s)
    local res=$(grep -E '^RESULT [0-9]+ [0-9]+ [0-9]+$' "$LOG/$name.log" | tail -n 1)
    [ $rc -ne 0 ] && fail=1
    summary+=("$(printf '%-28s rc=%-3d %-18s %4ds' "$name" "$rc" "${res:-no RESULT}" $((t1 - t0)))")
    grep -E 'check failed|FAIL|ERROR SUMMARY|^[a-z_]+ +[0-9]+ +[0-9]+ +[0-9]+ ' "$LOG/$name.log" | head -n 60
}

if [ -x ./test_ops ]; then
    run_one test_ops ./test_ops
else
    echo "test_ops not found beside $0"; fail=1
fi
for t in ./test_golden*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done

for tool in ${LB_SANITIZE:-}; do
    if ! command -v compute-sanitizer >/dev/null 2>&1; then echo "compute-sanitizer not found"; break; fi
    LB_OPS_FILTER=${LB_SANITIZE_FILTER:-} LB_OPS_SMALL=1 run_one "sanitize_$tool" \
        compute-sanitizer --tool "$tool" --error-exitcode 3 ./test_ops
done

echo "==== summary"
for s in "${summary[@]}"; do echo "$s"; done
exit $fail
