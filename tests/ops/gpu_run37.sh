#!/usr/bin/env bash
# Run 37 (one device call, after ./build.sh gpu-bundle; ~340 s; tenth session): workloads 2 and 1,
# then workload 3 in full, all with decode steps as CUDA graphs (the default since run 36), with
# the host-time and graph statistics (LB_CUDA_STATS=1, LB_RUN_STATS=1 for workload 3).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W3_ENV="LB_RUN_STATS=1 LB_CUDA_STATS=1" W3_RESERVE=230 MAX_SEQS=512 PEER=0 PROFILE=0 \
    BUDGET=${BUDGET:-400} tests/gpu_all.sh bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'run stats\|cuda stats\|recording' /tmp/lb-gpu-logs/bench/w3/run.log | tee "$OUT/w3_stats.txt"
grep -h 'step graphs\|recording' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/graph_stats.txt"
exit $rc
