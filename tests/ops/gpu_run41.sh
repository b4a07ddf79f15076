#!/usr/bin/env bash
# Run 41 (twelfth session; one device call after ./build.sh gpu-bundle; ~350 s): the lean v5
# decode (LB_CUDA_ATTN_DEC_LEAN=1: one page lookup per 16-key tile, no softmax for padding rows,
# the rescale only when a maximum grew; opt-in) at three and two stages, and the lean prefill
# (LB_CUDA_ATTN_PREFILL=4: page ids staged per block, no mask below every row's limit; opt-in):
# the op tests' small set (test_attn_v5_lean, test_attn_prefill_lean), the attention timings, the
# fixture goldens under each, workloads 2 and 1 with and without. Why: on the H200 (run 40) decode
# steps were only ~5% faster than on the H100 with a 39% faster memory, so v5 looks bound by its
# per-tile instructions there; the prefill kernel runs at 72 TFLOP/s (causal count).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
LEAN="LB_CUDA_ATTN_DEC_LEAN=1,LB_CUDA_ATTN_PREFILL=4"
OPS_SMALL_EXTRA=0 \
    ATTN_OPTS="lean:$LEAN lean2:$LEAN,LB_CUDA_ATTN_DEC_NST=2 nst2:LB_CUDA_ATTN_DEC_NST=2" \
    PICK="lean:LB_CUDA_ATTN=6,$LEAN:LB_PICK_LEAN=1 lean2:LB_CUDA_ATTN=6,$LEAN,LB_CUDA_ATTN_DEC_NST=2:LB_PICK_LEAN2=1" \
    W1_VARIANTS=${W1_VARIANTS-"lean:$LEAN lean2:$LEAN,LB_CUDA_ATTN_DEC_NST=2"} W2_VARIANTS=${W2_VARIANTS-"lean:$LEAN"} \
    MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-540} tests/gpu_all.sh ops_small attn pick bench
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
grep -h 'steps of <= 512\|cuda stats: [0-9]* steps:' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/bench_stats.txt"
for f in /tmp/lb-gpu-logs/bench/w*.log; do echo "$(basename $f): $(grep -h 'steps of <= 512' $f)"; done | tee -a "$OUT/bench_stats.txt"
exit $rc
