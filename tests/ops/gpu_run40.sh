#!/usr/bin/env bash
# Run 40 (eleventh session; one device call after ./build.sh gpu-bundle; ~520 s): the new defaults
# (decode attention v5 where it needs no KV split, the hybrid dense LoRA path at 128 rows) through
# the op tests' small set (test_lora_dense runs again: it had skipped itself since run 33; the
# hybrid's must-fail pass), the goldens (a hybrid pass among them), the demo job against the CPU, a
# device fault and resume, workloads 2 and 1 (and 1 without the hybrid),
# then workload 3 in full, with statistics.
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W1_VARIANTS="nohyb:LB_CUDA_LORA_DENSE_MIN_ROWS=0" W3_ENV="LB_CUDA_STATS=1" W3_RESERVE=200 MAX_SEQS=512 \
    PEER=0 PROFILE=0 BUDGET=${BUDGET:-565} tests/gpu_all.sh ops_small golden demo fault bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'cuda stats' /tmp/lb-gpu-logs/bench/w3/run.log 2>/dev/null | tee "$OUT/w3_stats.txt"
grep -h 'step graphs\|cuda stats' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/bench_stats.txt"
exit $rc
