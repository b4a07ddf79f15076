#!/usr/bin/env bash
# Run 36 (one device call, after ./build.sh gpu-bundle; ~420 s; tenth session): decode steps as
# CUDA graphs (forward.c pads them to buckets of 32 rows; the backend records a key's second step
# and replays it). Correctness: the goldens with graphs (the default) and without (LB_GRAPHS=0),
# the demo job on CUDA against the CPU, the device-fault test (resume). Speed: workloads 2 and 1
# with and without graphs, interleaved (LB_GRAPHS=0: no padding, no graphs: the path of run 35).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W2_VARIANTS="nograph:LB_GRAPHS=0" W1_VARIANTS="nograph:LB_GRAPHS=0 graph2:LB_GRAPHS=1" W3_RESERVE=0 \
    MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-560} tests/gpu_all.sh golden demo fault bench
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
grep -h 'step graphs\|cuda stats\|recording' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/graph_stats.txt"
exit $rc
