#!/usr/bin/env bash
# Run 44 (written in the fourteenth session, which got no machine). The engine now groups
# admission and each step's prefill chunks by adapter (LB_PREFILL_GROUP=0: queue order), so
# workload 1's 8192-token steps carry ~1.9 adapters instead of all 16 (CPU schedule) and the
# dense LoRA path multiplies by their columns only; decode steps are unchanged. Checks ops_small (the review commit f070ed2
# had not run on a GPU) and the goldens, then times workloads 2 and 1, workload 1 without the
# grouping, workload 1 with the segmented kernels on large steps too (LB_CUDA_LORA_DENSE=0: with
# ~2 adapters a step the dense path's advantage may change), workload 1 with a window of 1024
# (LB_GROUP_WINDOW: decode steps at 8 adapters x 64 rows instead of 16 x 32 on the CPU schedule),
# a quarter of workload 1 under the op profiler with and without it, and workload 3.
# Ran in the fifteenth session as four shorter calls (STEPS and W1_VARIANTS cut to the device time
# left; the commands and results: tests/ops/NOTES.md, "Run 44").
set -u
OUT=${OUT:-/tmp/lb-gpu}
export LB_CUDA_STATS=1
W1_VARIANTS=${W1_VARIANTS-"nogroup:LB_PREFILL_GROUP=0 win1k:LB_GROUP_WINDOW=1024 seg:LB_CUDA_LORA_DENSE=0 prof:NREQ=256,LB_CUDA_PROFILE=1 prof_nogroup:NREQ=256,LB_CUDA_PROFILE=1,LB_PREFILL_GROUP=0"} \
    MAX_SEQS=512 PEER=0 PROFILE=0 OPS_SMALL_EXTRA=0 W3_RESERVE=${W3_RESERVE:-185} BUDGET=${BUDGET:-570} \
    tests/gpu_all.sh ${STEPS:-ops_small golden bench w3}
rc=$?
cp /tmp/lb-gpu/summary.txt "$OUT/" 2>/dev/null
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
cp /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
for f in /tmp/lb-gpu-logs/bench/w*.log; do echo "$(basename $f): $(grep -h 'generate:\|cuda stats: [0-9]* steps:\|GEMM plans' $f | tr '\n' ' ')"; done > "$OUT/bench_stats.txt"
for f in /tmp/lb-gpu-logs/bench/w1_prof*.log; do echo "== $(basename $f)"; grep -h '^cuda profile' $f; done > "$OUT/profiles.txt"
exit $rc
