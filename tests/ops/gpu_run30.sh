#!/usr/bin/env bash
# Run 30 (one device call, after ./build.sh gpu-bundle; ~470 s): the op tests' small set, then
# workload 3 with the dense LoRA path's width limit at its default (1024 columns) and at 2048,
# each under LB_CUDA_STATS=1 (how many ops the dense path took and left to the segmented kernels).
# Workload 1 is not rerun (the device budget left for the session): compare with run 29's.
# SHORT=1 (~270 s): only the LoRA op cases, and workload 3 with W3_NREQ (2048) requests (an A/B, not the
# workload's figure).
set -u
OUT=${OUT:-/tmp/lb-gpu}
mkdir -p "$OUT/bench"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
if [ "${SHORT:-0}" = 1 ]; then
    LB_OPS_SMALL=1 LB_OPS_FILTER=lora timeout 60 .gpu/test_ops > "$OUT/test_ops_lora.log" 2>&1
    rc=$?
    grep -E '^RESULT|check failed|^FAIL|^(ok|FAIL|skip) +test_lora' "$OUT/test_ops_lora.log" | tail -30
    export N_REQ=${W3_NREQ:-2048}
else
    BUDGET=75 tests/gpu_all.sh ops_small
    rc=$?
fi
W3=/tmp/lb-gpu-logs/bench/w3
for v in 1024 2048; do
    MAX_SEQS=512 LB_CUDA_STATS=1 LB_CUDA_LORA_DENSE_RMAX=$v timeout $([ $v = 1024 ] && echo 265 || echo 175) \
        bench/gpu_bench_w3.sh .gpu/lorabatch "$W3" | tail -3
    cp "$W3/w3.json" "$OUT/bench/w3_rmax$v.json" 2>/dev/null
    grep "cuda stats" "$W3/run.log" | tee "$OUT/stats_rmax$v.txt"
    rm -f "$W3/w3.json"
done
exit $rc
