#!/usr/bin/env bash
# gpu_all.sh — everything the GPU machine runs in one call (builds nothing):
#   op tests (CUDA vs CPU) + golden vs HF on CUDA, the demo job on CUDA vs CPU (by the golden
#   rule: tests/gpu_demo_compare.py), a device fault mid-run on CUDA (tests/cli/device_fault.sh),
#   the issue-5 benchmark. Usage from the repository root, after ./build.sh gpu-bundle here:
#     tests/gpu_all.sh [bench|nobench] [w3]  (logs and JSON under $OUT, else /tmp/lb-gpu)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
O=${OUT:-/tmp/lb-gpu}
mkdir -p "$O"
export LB_GPU_LOG=$O LB_FIXTURES=$ROOT/tests/golden/fixtures LB_GOLDEN_DEVICE=cuda LB_STEP_TIMEOUT=240
echo "== op tests + golden (CUDA)"
.gpu/gpu_run.sh 2>&1 | tail -40
echo "== demo job: CUDA vs CPU"
B=.gpu/lorabatch
$B run jobs/demo.yaml --restart --device cuda > "$O/demo_cuda.log" 2>&1; echo "cuda rc=$? $(tail -1 "$O/demo_cuda.log")"
rm -rf /tmp/demo-cuda && cp -r build/demo-out /tmp/demo-cuda
$B run jobs/demo.yaml --restart --device cpu > "$O/demo_cpu.log" 2>&1; echo "cpu rc=$? $(tail -1 "$O/demo_cpu.log")"
tar czf "$O/demo_outputs.tgz" -C /tmp demo-cuda -C "$ROOT/build" demo-out
python3 tests/gpu_demo_compare.py "$B" jobs/demo.yaml /tmp/demo-cuda build/demo-out > "$O/demo_compare.txt" 2>&1; echo "demo compare rc=$?"
tail -12 "$O/demo_compare.txt"
echo "== device fault mid-run on CUDA: checkpoint, resume"
LB_BIN=$ROOT/$B LB_DEVICE=cuda bash tests/cli/device_fault.sh 2>&1 | tail -14
if [ "${1:-bench}" = bench ]; then
    echo "== benchmark"
    bench/gpu_bench.sh "$B" "$O/bench" 2>&1 | tail -25
    # workload 3 (256 adapters, Zipf, 32 slots; ~4 minutes on an H100): tests/gpu_all.sh bench w3
    [ "${2:-}" = w3 ] && bench/gpu_bench_w3.sh "$B" "$O/bench/w3" 2>&1 | tail -8
fi
