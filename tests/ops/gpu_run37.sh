#!/usr/bin/env bash
# Run 37 (ran at commit 680db78, whose LB_LORA_OVERLAP was removed after it: 2% slower; one device call, after ./build.sh gpu-bundle; ~480 s; tenth session): the op tests' small
# set (test_lora_phase: add-mode LoRA ops split in two phases, phase 1's shrink on a second stream
# beside the projections, against the CPU), the goldens (graphs, no graphs, overlap), workloads 2
# and 1 with workload 1 also under LB_LORA_OVERLAP=1, then workload 3 in full under the defaults
# (decode steps as CUDA graphs since run 36), with graph and host-time statistics.
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W1_VARIANTS="overlap:LB_LORA_OVERLAP=1" W3_ENV="LB_RUN_STATS=1 LB_CUDA_STATS=1" W3_RESERVE=230 MAX_SEQS=512 \
    PEER=0 PROFILE=0 BUDGET=${BUDGET:-580} tests/gpu_all.sh ops_small golden bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'run stats\|cuda stats\|recording' /tmp/lb-gpu-logs/bench/w3/run.log | tee "$OUT/w3_stats.txt"
grep -h 'step graphs\|recording' /tmp/lb-gpu-logs/bench/*.log 2>/dev/null | tee "$OUT/graph_stats.txt"
exit $rc
