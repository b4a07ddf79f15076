#!/usr/bin/env bash
# Run 40 (eleventh session; one device call after ./build.sh gpu-bundle; ~330 s, cut to what the
# device budget left after failed starts allows): the new defaults (decode attention v5 where it
# needs no KV split, the hybrid dense LoRA path at 128 rows) through the op tests' small set
# (test_lora_dense runs again: it had skipped itself since run 33; the hybrid's must-fail pass),
# the goldens (a hybrid pass among them), the demo job against the CPU, a device fault and resume,
# then workloads 2 and 1, and 1 without the hybrid (LB_CUDA_LORA_DENSE_MIN_ROWS=0). Workload 3
# under these defaults ran in run 39 (LB_CUDA_ATTN=5 then meant v5 everywhere, today's 6).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
OPS_SMALL_EXTRA=0 W1_VARIANTS=${W1_VARIANTS-"nohyb:LB_CUDA_LORA_DENSE_MIN_ROWS=0"} MAX_SEQS=512 \
    PEER=0 PROFILE=0 BUDGET=${BUDGET:-400} tests/gpu_all.sh ops_small golden bench demo fault
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
grep -h 'step graphs\|cuda stats' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/bench_stats.txt"
exit $rc
