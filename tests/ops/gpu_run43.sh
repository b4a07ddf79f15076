#!/usr/bin/env bash
# Run 43 (thirteenth session; ran on an H100, 193 s: tests/ops/gpu_run43_summary.txt). After run 42 (H100): PDL for the segmented LoRA pair became
# the default; the GEMM plan cache grew from 64 to 256 plans and counts the plans it makes and their
# host time (cuda stats). Checks the goldens under the new defaults (and without PDL), then times
# workloads 2 and 1, workload 1 without PDL and with row groups of ~2048, and a quarter of workload 1
# under the op profiler with and without the row groups: run 42 showed the groups moving ~4 s of
# workload 1 from "wait in download" to "enqueue" with the total unchanged, so where the time goes
# (GPU per op kind; host plan making) decides whether the groups can pay.
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W1_VARIANTS=${W1_VARIANTS-"nopdl:LB_CUDA_LORA_PDL=0 grp2k:LB_CUDA_LORA_DENSE_GROUP_ROWS=2048 prof:NREQ=256,LB_CUDA_PROFILE=1 prof_grp2k:NREQ=256,LB_CUDA_PROFILE=1,LB_CUDA_LORA_DENSE_GROUP_ROWS=2048"} \
    MAX_SEQS=512 PEER=0 PROFILE=0 BUDGET=${BUDGET:-300} \
    tests/gpu_all.sh ${STEPS:-golden bench}
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
for f in /tmp/lb-gpu-logs/bench/w*.log; do echo "$(basename $f): $(grep -h 'steps of <= 512\|cuda stats: [0-9]* steps:\|row groups\|GEMM plans' $f | tr '\n' ' ')"; done | tee "$OUT/bench_stats.txt"
for f in /tmp/lb-gpu-logs/bench/w1_prof*.log; do echo "== $(basename $f)"; grep -h '^cuda profile' $f; done | tee "$OUT/profiles.txt"
exit $rc
