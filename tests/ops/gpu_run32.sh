#!/usr/bin/env bash
# Run 32 (one device call, after ./build.sh gpu-bundle; ~450 s; prepared in the eighth session,
# not yet run):
#  1. ops_small (with the LoRA cases under LB_CUDA_LORA_EXPAND_COLS=2 and 8, reported) and the
#     LoRA op timings: the default expand and 2, 4, 8 column chunks per block (LORA_OPTS)
#  2. workloads 2 and 1, workload 1 again with LB_CUDA_LORA_EXPAND_COLS=4, and a quarter of
#     workload 1 under LB_CUDA_PROFILE=1 (GPU time per op kind)
#  3. a quarter of workload 3 (1024 requests, the same 256 Zipf adapters, 32 slots) under
#     LB_CUDA_PROFILE=1 LB_CUDA_STATS=1: where workload 3 loses to workload 1, op kind by op kind
#     (compare per token with step 2's profile)
# TOTAL (default 560) bounds the whole call; workload 3's quarter gets what is left.
set -u
OUT=${OUT:-/tmp/lb-gpu}
mkdir -p "$OUT/bench"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
LORA_SET=0 LORA_OPTS="LB_CUDA_LORA_EXPAND_COLS=2 LB_CUDA_LORA_EXPAND_COLS=4 LB_CUDA_LORA_EXPAND_COLS=8" BUDGET=170 \
    tests/gpu_all.sh ops_small lora
rc=$?
B=/tmp/lb-gpu-logs/bench
MAX_SEQS=512 PEER=0 PROFILE=1 W1_VARIANTS="cols4:LB_CUDA_LORA_EXPAND_COLS=4" timeout 230 \
    bench/gpu_bench.sh .gpu/lorabatch $B > "$OUT/gpu_bench.txt" 2>&1
tail -8 "$OUT/gpu_bench.txt"
cp $B/*.json "$OUT/bench/" 2>/dev/null
cp $B/w1_profile.log "$OUT/w1_quarter_profile.log"
left=$((${TOTAL:-560} - ($(date +%s) - T0)))
echo "w3 quarter gets $left s"
N_REQ=1024 MAX_SEQS=512 LB_CUDA_PROFILE=1 LB_CUDA_STATS=1 timeout $left bench/gpu_bench_w3.sh .gpu/lorabatch $B/w3 | tail -3
cp $B/w3/run.log "$OUT/w3_quarter_profile.log"
grep -E 'cuda profile|cuda stats' "$OUT/w3_quarter_profile.log" | head -30
exit $rc
