#!/usr/bin/env bash
# Run 35 (one device call, after ./build.sh gpu-bundle; ~330 s; ninth session): workloads 2 and 1,
# then workload 3 in full with admission overlapped with the GPU step (LB_ADMIT_AHEAD=1: reading,
# parsing and admitting records, opening shards' outputs, from the runner's on_queued hook) and
# the host-time breakdowns (LB_RUN_STATS=1, LB_CUDA_STATS=1). Run 34 (same code otherwise):
# workload 3 at 84.7% of workload 1, 2.3-3.4 ms of host time between its 535 large steps
# (runs 30-31), most of it admission (LB_RUN_STATS on the CPU: 2.2 ms of 2.7).
set -u
OUT=${OUT:-/tmp/lb-gpu}
W3_ENV="LB_ADMIT_AHEAD=1 LB_RUN_STATS=1 LB_CUDA_STATS=1" W3_RESERVE=230 MAX_SEQS=512 PEER=0 PROFILE=0 \
    BUDGET=${BUDGET:-340} tests/gpu_all.sh bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'run stats\|cuda stats' /tmp/lb-gpu-logs/bench/w3/run.log | tee "$OUT/w3_stats.txt"
exit $rc
