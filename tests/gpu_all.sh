#!/usr/bin/env bash
# gpu_all.sh — everything the GPU machine runs in one call (builds nothing):
#   op tests (CUDA vs CPU) + golden vs HF on CUDA, the demo job on CUDA vs CPU, the issue-5
#   benchmark. Usage from the repository root, after ./build.sh gpu-bundle here:
#     tests/gpu_all.sh [bench|nobench]      (logs and JSON under $OUT, else /tmp/lb-gpu)
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
command -v zstd >/dev/null && python3 - /tmp/demo-cuda build/demo-out <<'PY'
import glob, json, os, subprocess, sys
same = diff = 0; first = []
for f in sorted(glob.glob(sys.argv[1] + "/*.jsonl.zst")):
    a = subprocess.run(["zstd", "-dc", f], capture_output=True).stdout.decode().splitlines()
    b = subprocess.run(["zstd", "-dc", os.path.join(sys.argv[2], os.path.basename(f))], capture_output=True).stdout.decode().splitlines()
    for x, y in zip(a, b):
        x, y = json.loads(x), json.loads(y)
        if x.get("token_ids") == y.get("token_ids"): same += 1
        else:
            diff += 1
            t1, t2 = x.get("token_ids", []), y.get("token_ids", [])
            k = next((i for i in range(min(len(t1), len(t2))) if t1[i] != t2[i]), min(len(t1), len(t2)))
            first.append(k)
print(f"demo: {same} records identical token for token, {diff} differ (first differing step: {sorted(first)[:20]})")
PY
if [ "${1:-bench}" = bench ]; then
    echo "== benchmark"
    bench/gpu_bench.sh "$B" "$O/bench" 2>&1 | tail -25
fi
