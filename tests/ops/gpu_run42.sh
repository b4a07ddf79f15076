#!/usr/bin/env bash
# Run 42 (prepared in the twelfth session, extended in the thirteenth; ran there on an H100 with
# W1_VARIANTS="grp2k:... pdl:... grp2k_pdl:..." BUDGET=420, 296 s: tests/ops/gpu_run42_summary.txt). Checks, then times:
# - the defaults after run 41 (lean v5 decode, lean prefill, hybrid at 128 rows) and the dense path's
#   split into ld_plan/ld_exec (on the default path, not yet run on a GPU): the op tests' small set,
#   the goldens;
# - the dense LoRA path in row groups (LB_CUDA_LORA_DENSE_GROUP_ROWS, opt-in): test_lora_dense_groups
#   with its must-fail pass, a grouped golden pass, workload 1 with groups of ~2048 and ~1024 rows.
#   Why: a large step's dense LoRA multiplies every row by every active adapter's columns (16 x the
#   useful work in workload 1); groups of whole segments multiply only their own adapters' columns;
# - the segmented LoRA pair as programmatic dependent launches (LB_CUDA_LORA_PDL=1, opt-in): the
#   LoRA op cases and a golden pass with it, the LoRA op timings, workload 1 with it and with it and
#   groups of ~2048. Why: decode LoRA (+3.6 ms a decode step on the H200) is bound by each block's
#   chain of dependent loads; with PDL the expand's blocks start while the shrink runs and issue
#   their y loads, module lookups and B prefetches before they wait for v.
# Workload 2 in the same call, for the tax. STEPS="... w3" adds workload 3 (~175 s more).
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
OPS_SMALL_EXTRA=0 LORA_SET=0 LORA_OPTS=${LORA_OPTS-"LB_CUDA_LORA_PDL=1"} \
    W1_VARIANTS=${W1_VARIANTS-"grp2k:LB_CUDA_LORA_DENSE_GROUP_ROWS=2048 grp1k:LB_CUDA_LORA_DENSE_GROUP_ROWS=1024 pdl:LB_CUDA_LORA_PDL=1 grp2k_pdl:LB_CUDA_LORA_DENSE_GROUP_ROWS=2048,LB_CUDA_LORA_PDL=1"} \
    W3_RESERVE=${W3_RESERVE:-175} W3_ENV="LB_CUDA_STATS=1" MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-540} \
    tests/gpu_all.sh ${STEPS:-ops_small golden lora bench}
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
for f in /tmp/lb-gpu-logs/bench/w*.log; do echo "$(basename $f): $(grep -h 'steps of <= 512\|cuda stats: [0-9]* steps:\|row groups\|step graphs' $f | tr '\n' ' ')"; done | tee "$OUT/bench_stats.txt"
grep -h 'cuda stats' /tmp/lb-gpu-logs/bench/w3/run.log 2>/dev/null | tee "$OUT/w3_stats.txt"
exit $rc
