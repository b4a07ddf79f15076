#!/usr/bin/env bash
# Run 39 (eleventh session; one device call after ./build.sh gpu-bundle; ~500 s):
# 1. the op tests' small set: the attention op's max_q hint (decode-only steps skip the prefill
#    kernel), the v5 decode (one warp per item, LB_CUDA_ATTN=5, 3 and 4 stages), the v4 decode with
#    a sequence's kv heads fastest (LB_CUDA_ATTN_DEC_ORDER=1), the hybrid dense LoRA path
#    (LB_CUDA_LORA_DENSE_MIN_ROWS, with its must-fail pass); the goldens;
# 2. decode attention timings (lora_bench --attn-only) under v4, v4 order, v5 and v5 with 4 stages;
#    the fastest at 512 sequences x 640 keys whose op tests passed is exported for what follows,
#    after its goldens pass too;
# 3. workloads 2 and 1 with it, and workload 1 with the v4 default when another was picked;
# 4. workload 3 in full with the hybrid dense path at 128 rows (LB_CUDA_LORA_DENSE_MIN_ROWS=128),
#    with its statistics (run 37, the same but the hybrid: 20,455 tok/s).
set -u
OUT=${OUT:-/tmp/lb-gpu}
L=/tmp/lb-gpu-logs
T0=$(date +%s)
mkdir -p "$OUT" "$L"
S=$OUT/summary.txt
say() { echo "$*" | tee -a "$S"; }
MAX_SEQS=512 BUDGET=150 tests/gpu_all.sh ops_small golden
rc=$?
declare -A env_of=([v4]="LB_CUDA_ATTN=4" [v4order]="LB_CUDA_ATTN=4 LB_CUDA_ATTN_DEC_ORDER=1"
                   [v5]="LB_CUDA_ATTN=5" [v5nst4]="LB_CUDA_ATTN=5 LB_CUDA_ATTN_DEC_NST=4")
best=v4 best_us=
for v in v4 v4order v5 v5nst4; do
    timeout 40 env ${env_of[$v]} .gpu/lora_bench --attn-only > "$L/attn_$v.txt" 2>&1
    grep -h '^attn' "$L/attn_$v.txt" | sed "s/^/$v /" | tee -a "$S"
    us=$(awk '/^attn +decode-512 /{for(i=1;i<=NF;i++) if($(i+1)=="us"){print $i; exit}}' "$L/attn_$v.txt")
    case $v in v5*) t=test_attn_v5 ;; v4order) t=test_attn_v4_order ;; *) t=test_attn ;; esac
    if grep -q "^FAIL $t\$" "$L/test_ops_small.log" || ! grep -q "^ok   $t\$" "$L/test_ops_small.log"; then
        say "attn $v: $t did not pass; not a candidate"
        continue
    fi
    [ -n "$us" ] || continue
    if [ -z "$best_us" ] || awk "BEGIN{exit !($us < 0.98 * $best_us)}"; then best=$v best_us=$us; fi
done
say "decode attention pick: $best (${best_us:-?} us at 512 x 640)"
if [ "$best" != v4 ]; then
    if timeout 60 env ${env_of[$best]} LB_GOLDEN_DEVICE=cuda LB_FIXTURES=$PWD/tests/golden/fixtures .gpu/test_golden > "$L/golden_$best.log" 2>&1; then
        say "golden with $best: pass $(grep -E '^RESULT' "$L/golden_$best.log")"
        export ${env_of[$best]}
    else
        say "golden with $best: FAIL $(grep -E '^RESULT|check failed' "$L/golden_$best.log" | head -5 | tr '\n' ' '); keeping v4"
        best=v4
    fi
fi
w1v=
[ "$best" != v4 ] && w1v="v4:LB_CUDA_ATTN=4,LB_CUDA_ATTN_DEC_ORDER=0,LB_CUDA_ATTN_DEC_NST=3"
left=$((560 - ($(date +%s) - T0)))
export LB_CUDA_STATS=1
W1_VARIANTS="$w1v" W3_ENV="LB_CUDA_STATS=1 LB_CUDA_LORA_DENSE_MIN_ROWS=128" W3_RESERVE=235 MAX_SEQS=512 \
    PEER=0 PROFILE=0 BUDGET=$left tests/gpu_all.sh bench w3
rc2=$?
mkdir -p "$OUT/bench"
cp $L/bench/*.json $L/bench/w3/*.json "$OUT/bench/" 2>/dev/null
grep -h 'cuda stats' $L/bench/w3/run.log 2>/dev/null | tee "$OUT/w3_stats.txt"
grep -h 'step graphs\|cuda stats' $L/bench/*.log 2>/dev/null | tee "$OUT/bench_stats.txt"
say "total $(($(date +%s) - T0))s"
[ $rc = 0 ] && [ $rc2 = 0 ]
