#!/usr/bin/env bash
# Run 40 (prepared in the eleventh session; NOT YET RUN: the device budget went to failed starts;
# one device call after ./build.sh gpu-bundle; ~560 s): the op tests' small set, with
# test_lora_dense running again (it had skipped itself in runs 20, 25 and 39) and test_lora_dense_hybrid's
# must-fail pass (the hybrid dense path, LB_CUDA_LORA_DENSE_MIN_ROWS, opt-in); the goldens (a
# hybrid pass among them); workloads 2 and 1 under the defaults (v5 decode attention where it
# needs no KV split), workload 1 with the hybrid at 128 rows; workload 3 with it (run 39: 22,307
# tok/s, 89.8% of workload 1). When the hybrid's test and golden pass, make 128 the default
# (gpu/backend_cuda.cu, LB_CUDA_LORA_DENSE_MIN_ROWS).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
OPS_SMALL_EXTRA=0 W1_VARIANTS=${W1_VARIANTS-"hyb:LB_CUDA_LORA_DENSE_MIN_ROWS=128"} W3_RESERVE=200 \
    W3_ENV="LB_CUDA_STATS=1 LB_CUDA_LORA_DENSE_MIN_ROWS=128" MAX_SEQS=512 \
    PEER=0 PROFILE=0 BUDGET=${BUDGET:-570} tests/gpu_all.sh ops_small golden bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'cuda stats' /tmp/lb-gpu-logs/bench/w3/run.log 2>/dev/null | tee "$OUT/w3_stats.txt"
grep -h 'step graphs\|cuda stats' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/bench_stats.txt"
exit $rc
