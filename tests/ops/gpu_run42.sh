#!/usr/bin/env bash
# Run 42 (prepared in the twelfth session; NOT YET RUN: no machine came after run 41; ~500 s).
# The defaults after run 41 (lean v5 decode, lean prefill, hybrid at 128 rows; and the dense path's
# split into ld_plan/ld_exec, on the default path) and the dense LoRA path in row groups
# (LB_CUDA_LORA_DENSE_GROUP_ROWS, opt-in, not yet run on a GPU): the op tests' small set
# (test_lora_dense_groups with its must-fail pass), the goldens (a grouped pass among them),
# workloads 2 and 1, workload 1 with groups of ~2048 and ~1024 rows, workload 3.
# Why the groups: a large step's dense LoRA multiplies every row by every active adapter's columns
# (16 x the useful work in workload 1); groups of whole segments each multiply only their own
# adapters' columns, at the price of more, smaller GEMMs.
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
OPS_SMALL_EXTRA=0 W1_VARIANTS=${W1_VARIANTS-"grp2k:LB_CUDA_LORA_DENSE_GROUP_ROWS=2048 grp1k:LB_CUDA_LORA_DENSE_GROUP_ROWS=1024"} \
    W3_RESERVE=${W3_RESERVE:-175} W3_ENV="LB_CUDA_STATS=1" MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-540} \
    tests/gpu_all.sh ${STEPS:-ops_small golden bench w3}
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
for f in /tmp/lb-gpu-logs/bench/w*.log; do echo "$(basename $f): $(grep -h 'steps of <= 512\|cuda stats: [0-9]* steps:\|row groups' $f | tr '\n' ' ')"; done | tee "$OUT/bench_stats.txt"
grep -h 'cuda stats' /tmp/lb-gpu-logs/bench/w3/run.log 2>/dev/null | tee "$OUT/w3_stats.txt"
exit $rc
