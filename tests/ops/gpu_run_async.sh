#!/usr/bin/env bash
# gpu_run_async.sh — one device call for the asynchronous uploads (issue 5, step overhead):
# op tests, then bench/gpu_bench.sh's two end-to-end workloads without its HF+PEFT peer step,
# with the new binary (LB_CUDA_STATS=1: the host's time split per step goes to each run's log),
# then, as time allows, the same workloads with the binary built before the change, on the same
# machine. Builds nothing: run from the repository root with the binaries in DIR (default .cu:
# test_ops, lorabatch, lorabatch_base):
#   tests/ops/gpu_run_async.sh [DIR]     (BUDGET seconds, default 285; at most 8 files under $OUT)
set -u
C=${1:-.cu}
O=${OUT:-/tmp/asyncout}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $((${BUDGET:-285} - ($(date +%s) - T0))); }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee -a "$O/summary.txt"
s=$(date +%s)
timeout 150 "$C/test_ops" >"$O/test_ops.log" 2>&1
echo "test_ops rc=$? $(($(date +%s) - s))s" | tee -a "$O/summary.txt"
grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |RESULT|check failed|FAIL|upload_reuse' "$O/test_ops.log" | head -40 | tee -a "$O/summary.txt"
M=/tmp/m8b
s=$(date +%s)
timeout 90 python3 bench/gen_random_model.py --shape llama-3-8b --out $M --adapters 16 --ranks 16 --adapter-dtype bf16 >/tmp/gen.log 2>&1
echo "gen rc=$? $(($(date +%s) - s))s" | tee -a "$O/summary.txt"
# bench/gpu_bench.sh without the peer; GEMM_FROM reuses a measured ceiling, LB_BENCH_ONLY picks one workload
sed -e '/peer_hf.py/d' -e '/^echo "peer:/d' \
    -e 's|^python3 - > "\$OUT/gemm.json" <<.PY.$|[ -n "${GEMM_FROM:-}" ] \&\& cp "$GEMM_FROM" "$OUT/gemm.json" \|\| python3 - > "$OUT/gemm.json" <<'"'"'PY'"'"'|' \
    -e 's|^run_lb \(w[12]_[a-z0-9]*\) \([01]\)$|[ -z "${LB_BENCH_ONLY:-}" ] \|\| [ "$LB_BENCH_ONLY" = \1 ] \&\& run_lb \1 \2|' \
    bench/gpu_bench.sh >/tmp/gpu_bench_np.sh
chmod +x /tmp/gpu_bench_np.sh
s=$(date +%s)
LB_CUDA_STATS=1 timeout $(left) /tmp/gpu_bench_np.sh "$C/lorabatch" /tmp/bench_new >"$O/bench_new.txt" 2>&1
echo "bench new rc=$? $(($(date +%s) - s))s" | tee -a "$O/summary.txt"
cat "$O/bench_new.txt"
for f in w2_base.log w1_lora16.log gpu_bench.json; do cp /tmp/bench_new/$f "$O/new_$f" 2>/dev/null; done
for w in w2_base w1_lora16; do
    [ -x "$C/lorabatch_base" ] || break
    l=$(left)
    if [ "$l" -lt 60 ]; then echo "SKIP base-binary $w (${l}s left)" | tee -a "$O/summary.txt"; continue; fi
    s=$(date +%s)
    LB_BENCH_ONLY=$w GEMM_FROM=/tmp/bench_new/gemm.json timeout "$l" /tmp/gpu_bench_np.sh "$C/lorabatch_base" /tmp/bench_base >>"$O/bench_base.txt" 2>&1
    echo "bench base $w rc=$? $(($(date +%s) - s))s" | tee -a "$O/summary.txt"
    grep "^$w" "$O/bench_base.txt" | tail -1
done
cp /tmp/bench_base/gpu_bench.json "$O/base_gpu_bench.json" 2>/dev/null
echo "==== summary"
cat "$O/summary.txt"
