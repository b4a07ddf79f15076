#!/usr/bin/env bash
# gpu_run8.sh — PREPARED FOR THE NEXT SESSION, NOT YET RUN: one device call (~9 minutes of
# command time, BUDGET) that measures what session 7 built but could not measure. Builds nothing:
# run from the repository root after ./build.sh gpu-bundle (binaries in .gpu/):
#   BUDGET=540 tests/ops/gpu_run8.sh        (everything under $OUT: summary.txt, all.tgz)
# Steps, each bounded by what is left of the budget:
#   1. every op test in full (new: test_elem_v2, the LB_CUDA_ELEM=2 kernels; test_lora_set on the
#      v2 expand), golden vs HF on CUDA (default and LB_LORA_SET_MIN_TOK=1);
#   2. the demo job, CUDA vs CPU by the golden rule (now readable without the zstd program);
#   3. the device fault on CUDA (record counts now checked against the inputs);
#   4. element-wise kernels, scalar vs LB_CUDA_ELEM=2 (lora_bench --elem-only): the faster by
#      more than 5% on all three is used for the rest of the call;
#   5. workloads 2 and 1, the profile, workload 1 with the old LoRA order (the A/B run 7 lost) and
#      at max_seqs 512;
#   6. workload 3 (bench/gpu_bench_w3.sh: 256 adapters, Zipf, 32 slots).
set -u
O=${OUT:-/tmp/run8}
L=/tmp/run8-logs
mkdir -p "$O" "$L"
T0=$(date +%s)
left() { echo $((${BUDGET:-540} - ($(date +%s) - T0))); }
S=$O/summary.txt
say() { echo "$*" | tee -a "$S"; }
step() { # name limit cmd...
    local name=$1 lim=$2 l s rc
    shift 2
    l=$(left)
    if [ "$l" -lt 10 ]; then say "SKIP $name (no time left)"; return 1; fi
    [ "$lim" -gt "$l" ] && lim=$l
    s=$(date +%s)
    timeout "$lim" "$@" >"$L/$name" 2>&1
    rc=$?
    say "step $name rc=$rc $(($(date +%s) - s))s"
    return $rc
}
finish() { tar czf "$O/all.tgz" -C "$L" . 2>/dev/null; say "total $(($(date +%s) - T0))s"; }
trap finish EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$S"

# 1. op tests + golden
step test_ops.log 150 .gpu/test_ops
grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops.log" | head -30 | tee -a "$S"
LB_FIXTURES=$PWD/tests/golden/fixtures LB_GOLDEN_DEVICE=cuda step test_golden.log 40 .gpu/test_golden
grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden.log" | head -20 | tee -a "$S"
# the LoRA-before-projection order (normally steps of >= 1024 tokens) on every step it applies to
LB_LORA_SET_MIN_TOK=1 LB_FIXTURES=$PWD/tests/golden/fixtures LB_GOLDEN_DEVICE=cuda step test_golden_setfirst.log 40 .gpu/test_golden
grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_setfirst.log" | head -20 | sed 's/^/set-first /' | tee -a "$S"

# 2. demo: CUDA vs CPU
step demo_cuda.log 30 .gpu/lorabatch run jobs/demo.yaml --restart --device cuda
grep -E 'KV cache|done:' "$L/demo_cuda.log" | tee -a "$S"
rm -rf /tmp/demo-cuda && cp -r build/demo-out /tmp/demo-cuda
step demo_cpu.log 40 .gpu/lorabatch run jobs/demo.yaml --restart --device cpu --threads 16
step demo_compare.txt 40 python3 tests/gpu_demo_compare.py .gpu/lorabatch jobs/demo.yaml /tmp/demo-cuda build/demo-out
tail -4 "$L/demo_compare.txt" | tee -a "$S"
cp -r /tmp/demo-cuda "$L/demo-out-cuda" && cp -r build/demo-out "$L/demo-out-cpu"

# 3. device fault on CUDA
LB_BIN=$PWD/.gpu/lorabatch LB_DEVICE=cuda step device_fault.txt 45 bash tests/cli/device_fault.sh
grep -E '^RESULT|^FAIL' "$L/device_fault.txt" | tee -a "$S"

# 4. element-wise kernels: scalar vs 16-byte (LB_CUDA_ELEM=2)
step elem1.txt 30 .gpu/lora_bench --elem-only
step elem2.txt 30 env LB_CUDA_ELEM=2 .gpu/lora_bench --elem-only
grep -h '^elem' "$L/elem1.txt" | sed 's/^/v1 /' | tee -a "$S"
grep -h '^elem' "$L/elem2.txt" | sed 's/^/v2 /' | tee -a "$S"
if python3 - "$L/elem1.txt" "$L/elem2.txt" <<'PY'
import re, sys
t = [[float(m[1]) for m in re.finditer(r"^elem .*?([\d.]+) us", open(f).read(), re.M)] for f in sys.argv[1:]]
sys.exit(0 if len(t[0]) == 3 and len(t[1]) == 3 and all(b < 0.95 * a for a, b in zip(*t)) else 1)
PY
then
    export LB_CUDA_ELEM=2
    say "element-wise v2 faster on all three: the workloads run with LB_CUDA_ELEM=2"
else
    say "element-wise v2 not faster on all three: the workloads run with the scalar kernels"
fi

# 5. workloads 1 and 2 (+ profile, old LoRA order, max_seqs 512); 6. workload 3
l=$(left)
W1_VARIANTS="old_order:LB_LORA_SET_MIN_TOK=-1 s512:MAX_SEQS=512" PEER=0 PROFILE=1 step gpu_bench.txt $((l - 240)) \
    bench/gpu_bench.sh .gpu/lorabatch "$L/bench"
tail -12 "$L/gpu_bench.txt" | tee -a "$S"
grep -h '^cuda profile' "$L/bench/w1_profile.log" 2>/dev/null | head -40 | tee -a "$S"
l=$(left)
step gpu_bench_w3.txt $((l - 5)) bench/gpu_bench_w3.sh .gpu/lorabatch "$L/bench/w3"
tail -4 "$L/gpu_bench_w3.txt" | tee -a "$S"
