#!/usr/bin/env bash
# Run 32 (one device call, after ./build.sh gpu-bundle; ~230 s): where workload 3 loses to
# workload 1, op kind by op kind. GPU time per op (LB_CUDA_PROFILE=1, events around each op) and
# the host's step timings (LB_CUDA_STATS=1) for a quarter of workload 1 (256 requests, as
# gpu_bench.sh's PROFILE=1) and a quarter of workload 3 (1024 requests, same 256 Zipf adapters,
# 32 slots). Compare per token: the logs go to $OUT.
set -u
OUT=${OUT:-/tmp/lb-gpu}
mkdir -p "$OUT"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
B=/tmp/lb-gpu-logs/bench
MAX_SEQS=512 SKIP_W2=1 PEER=0 PROFILE=1 timeout 200 bench/gpu_bench.sh .gpu/lorabatch $B quick > "$OUT/gpu_bench.txt" 2>&1
tail -4 "$OUT/gpu_bench.txt"
cp $B/w1_profile.log "$OUT/w1_quarter_profile.log"
grep -E '^generate|share|cuda stats' "$OUT/w1_quarter_profile.log" | head -4
left=$((${TOTAL:-560} - ($(date +%s) - T0)))
N_REQ=1024 MAX_SEQS=512 LB_CUDA_PROFILE=1 LB_CUDA_STATS=1 timeout $left bench/gpu_bench_w3.sh .gpu/lorabatch $B/w3 | tail -3
cp $B/w3/run.log "$OUT/w3_quarter_profile.log"
grep -E 'cuda profile|cuda stats' "$OUT/w3_quarter_profile.log" | head -30
