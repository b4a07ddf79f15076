#!/usr/bin/env bash
# Run 33 (one device call, after ./build.sh gpu-bundle; ~530 s; ran in the ninth session on an H100
# at commit 1616a3b; results in tests/ops/NOTES.md). The column chunks were slower and were removed
# after it (code in dcaa089), so this script no longer runs as written; the fused gate/up op stayed.
#  1. ops_small (test_lora_act: gate/up + SwiGLU as one op, k_lora_expand_act, against the CPU's
#     add then SwiGLU; the LoRA cases under LB_CUDA_LORA_EXPAND_COLS=2 and 8), the goldens (the
#     default LB_LORA_ACT=1 fuses on decode steps; a pass at 2), LoRA op timings (gate_up prints
#     lora+swiglu against act) at the default and 2, 4, 8 column chunks per block
#  2. workloads 2 and 1 (default: act on decode steps), workload 1 with LB_LORA_ACT=0 (the
#     separate SwiGLU: the A/B), =2 (act on set-first steps too) and with 4 column chunks
#  3. what is left of TOTAL (default 560): a quarter of workload 3 under LB_CUDA_PROFILE=1
#     LB_CUDA_STATS=1 (GPU time per op kind)
set -u
OUT=${OUT:-/tmp/lb-gpu}
mkdir -p "$OUT/bench"
T0=$(date +%s)
LORA_SET=0 LORA_OPTS="LB_CUDA_LORA_EXPAND_COLS=2 LB_CUDA_LORA_EXPAND_COLS=4 LB_CUDA_LORA_EXPAND_COLS=8" BUDGET=200 \
    tests/gpu_all.sh ops_small golden lora
rc=$?
B=/tmp/lb-gpu-logs/bench
MAX_SEQS=512 PEER=0 PROFILE=0 \
    W1_VARIANTS="noact:LB_LORA_ACT=0 act2:LB_LORA_ACT=2 cols4:LB_CUDA_LORA_EXPAND_COLS=4" timeout 270 \
    bench/gpu_bench.sh .gpu/lorabatch $B > "$OUT/gpu_bench.txt" 2>&1
tail -12 "$OUT/gpu_bench.txt"
cp $B/*.json "$OUT/bench/" 2>/dev/null
left=$((${TOTAL:-560} - ($(date +%s) - T0)))
echo "w3 quarter gets $left s"
if [ "$left" -gt 60 ]; then
    N_REQ=1024 MAX_SEQS=512 LB_CUDA_PROFILE=1 LB_CUDA_STATS=1 timeout $left bench/gpu_bench_w3.sh .gpu/lorabatch $B/w3 | tail -3
    cp $B/w3/run.log "$OUT/w3_quarter_profile.log"
    grep -E 'cuda profile|cuda stats' "$OUT/w3_quarter_profile.log" | head -30
fi
exit $rc
