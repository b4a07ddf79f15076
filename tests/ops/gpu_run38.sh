#!/usr/bin/env bash
# Run 38 (one device call, after ./build.sh gpu-bundle; ~170 s; tenth session), asked of an H200
# (needs_h200; no H200 had been lent to this project before): the goldens, then workloads 2 and 1
# under the defaults (decode steps as CUDA graphs), with graph statistics: the ceiling
# target reads "on an H100 or H200".
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W3_RESERVE=0 MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-300} tests/gpu_all.sh golden bench
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
grep -h 'step graphs\|recording\|cuda stats' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/graph_stats.txt"
exit $rc
