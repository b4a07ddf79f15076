#!/usr/bin/env bash
# Run 31 (one device call, after ./build.sh gpu-bundle; ~560 s): the tensor-core LoRA expand
# (k_lora_expand_tc, LB_CUDA_LORA_EXPAND=4, the new default) against the fp32 one (3) and the
# tensor-core one with 4 tiles per block (5). Ran at commit f0ccc83 (see tests/ops/NOTES.md, eighth
# session); the kernel was slower on most cases and was removed after the run, so the EXPAND=4/5
# settings no longer exist.
#  1. ops_small (every op, the default expand) and goldens; the LoRA op cases again under
#     LB_CUDA_LORA_EXPAND=3 and =5 (gpu_all.sh's LORA_OPTS runs them in lora_bench only)
#  2. lora_bench --lora-only: segmented kernels with the new expand, with the old one
#     (LB_CUDA_LORA_EXPAND=3), with 4 tiles per block (=5), and set mode on the segmented kernels and on the dense path
#  3. workload 1, no w2 (run 29's figure stands), no peer
#  4. workload 3 (compare run 30: 19,723 tok/s with the fp32 expand)
set -u
OUT=${OUT:-/tmp/lb-gpu}
mkdir -p "$OUT/bench"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
LORA_OPTS="LB_CUDA_LORA_EXPAND=3 LB_CUDA_LORA_EXPAND=5" BUDGET=200 tests/gpu_all.sh ops_small golden lora
rc=$?
LB_OPS_SMALL=1 LB_OPS_FILTER=lora LB_CUDA_LORA_EXPAND=3 timeout 60 .gpu/test_ops > "$OUT/test_ops_lora_expand3.log" 2>&1 || rc=1
echo "expand 3: $(grep -E '^RESULT' "$OUT/test_ops_lora_expand3.log")"
LB_OPS_SMALL=1 LB_OPS_FILTER=lora LB_CUDA_LORA_EXPAND=5 timeout 60 .gpu/test_ops > "$OUT/test_ops_lora_expand5.log" 2>&1 || rc=1
echo "expand 5: $(grep -E '^RESULT' "$OUT/test_ops_lora_expand5.log")"
MAX_SEQS=512 SKIP_W2=1 PEER=0 PROFILE=0 W1_VARIANTS="" timeout 150 \
    bench/gpu_bench.sh .gpu/lorabatch /tmp/lb-gpu-logs/bench > "$OUT/gpu_bench.txt" 2>&1
tail -6 "$OUT/gpu_bench.txt"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
W3=/tmp/lb-gpu-logs/bench/w3
left=$((585 - ($(date +%s) - T0)))
echo "w3 gets ${left} s"
MAX_SEQS=512 LB_CUDA_STATS=1 timeout $left bench/gpu_bench_w3.sh .gpu/lorabatch "$W3" | tail -3
cp "$W3/w3.json" "$OUT/bench/w3.json" 2>/dev/null
grep "cuda stats" "$W3/run.log" | tee "$OUT/stats_w3.txt"
exit $rc
