#!/usr/bin/env bash
# gpu_run_v3.sh — one device call for the v3 kernels (issue 5): op tests, kernel benchmark of the
# new defaults and of the old variants on the same machine, then the two end-to-end workloads of
# bench/gpu_bench.sh (new kernels only; the before figures are the earlier run's). Builds nothing:
# run from the repository root with the binaries in DIR (default .cu):
#   tests/ops/gpu_run_v3.sh [DIR]      (BUDGET seconds, default 400; logs under $OUT)
# Files written under $OUT (at most 8): test_ops.log bench_new.txt bench_old.txt w2_base.log
# w1_lora16.log sanitize.txt bench_order.txt summary.txt.
set -u
C=${1:-.cu}
O=${OUT:-/tmp/v3out}
mkdir -p "$O"
T0=$(date +%s)
left() { echo $((${BUDGET:-400} - ($(date +%s) - T0))); }
step() { # name limit cmd...
    local name=$1 lim=$2 l s rc
    shift 2
    l=$(left)
    if [ "$l" -lt 15 ]; then echo "SKIP $name (no time left)" | tee -a "$O/summary.txt"; return 1; fi
    [ "$lim" -gt "$l" ] && lim=$l
    s=$(date +%s)
    timeout "$lim" "$@" >"$O/$name" 2>&1
    rc=$?
    echo "step $name rc=$rc $(($(date +%s) - s))s" | tee -a "$O/summary.txt"
    return $rc
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee -a "$O/summary.txt"

step test_ops.log 150 "$C/test_ops"
grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |RESULT|check failed|FAIL' "$O/test_ops.log" | head -40 | tee -a "$O/summary.txt"

step bench_new.txt 80 "$C/lora_bench"
step bench_old.txt 80 env LB_CUDA_LORA=2 LB_CUDA_ATTN=2 "$C/lora_bench"
python3 - "$O" <<'PY' | tee -a "$O/summary.txt"
import re, sys
o = sys.argv[1]
def rows(f):
    d = {}
    try: txt = open(f"{o}/{f}").read()
    except OSError: return d
    for ln in txt.splitlines():
        m = re.match(r"(\w+)\s+(\S+)\s+T=(\d+)\s+r=(\d+)\s+base\s+([\d.]+) us.*lora\s+([\d.]+) us", ln)
        if m: d[(m[1], m[2], m[4])] = (float(m[5]), float(m[6]))
        m = re.match(r"attn\s+(\S+)\s+seqs=(\d+)\s+ctx=(\d+)\s+q/seq=(\d+)\s+([\d.]+) us\s+([\d.]+) GB/s.*?([\d.]+) TF/s", ln)
        if m: d[("attn", m[1], m[3])] = (float(m[5]), float(m[6]), float(m[7]))
    return d
n, b = rows("bench_new.txt"), rows("bench_old.txt")
print(f"{'case':40} {'old us':>9} {'new us':>9} {'new/old':>8}  extra")
for k in n:
    if k[0] == "attn":
        ob = b.get(k, (float('nan'),) * 3)
        print(f"{'attn ' + k[1] + ' ctx=' + k[2]:40} {ob[0]:9.1f} {n[k][0]:9.1f} {n[k][0] / ob[0]:8.2f}  new {n[k][1]:.0f} GB/s {n[k][2]:.1f} TF/s (old {ob[1]:.0f} GB/s {ob[2]:.1f} TF/s)")
    else:
        ob = b.get(k, (float('nan'), float('nan')))
        print(f"{' '.join(k):40} {ob[1]:9.1f} {n[k][1]:9.1f} {n[k][1] / ob[1]:8.2f}  base {n[k][0]:.1f} us, lora/base {100 * n[k][1] / n[k][0]:.0f}%")
PY

M=/tmp/m8b
step gen.txt 90 python3 bench/gen_random_model.py --shape llama-3-8b --out $M --adapters 16 --ranks 16 --adapter-dtype bf16 ||
    tail -5 "$O/gen.txt"
mv "$O/gen.txt" /tmp/gen.txt 2>/dev/null # keep $OUT at 8 files
PROMPTS=$(python3 -c "
import random
random.seed(1)
for i in range(16): print(','.join(str(random.randrange(1000, 100000)) for _ in range(512)))")
run_lb() { # name with_adapters
    local name=$1 ad=$2 args=() i=0 p d
    if [ "$ad" = 1 ]; then for d in $(ls -d $M/adapters/* | head -16); do args+=(--adapter "a$i=$d"); i=$((i + 1)); done; fi
    i=0
    while read -r p; do
        [ "$ad" = 1 ] && args+=(--use "a$i")
        args+=(--prompt-ids "$p")
        i=$((i + 1))
    done <<<"$PROMPTS"
    step "$name.log" 110 bash -c 'o=$1; shift; exec "$@" >"$o"' _ /tmp/out_$name.jsonl "$C/lorabatch" generate \
        --device cuda --model $M "${args[@]}" --repeat 64 --max-tokens 256 --ignore-eos --max-seqs 256 \
        --max-batch-tokens 8192
    grep '^generate:' "$O/$name.log" | tee -a "$O/summary.txt"
}
if [ -f $M/config.json ]; then
    run_lb w2_base 0
    run_lb w1_lora16 1
fi
LB_OPS_FILTER=attn,lora LB_OPS_SMALL=1 step sanitize.txt 100 compute-sanitizer --tool memcheck --error-exitcode 3 "$C/test_ops"
grep -E 'ERROR SUMMARY|RESULT' "$O/sanitize.txt" | tee -a "$O/summary.txt"
# run 4 measured LB_CUDA_LORA_EXPAND=2 here (bench/results/lora_bench_v3_expand2_h100.txt); next: the
# decode grid order (not yet measured)
step bench_order.txt 80 env LB_CUDA_ATTN_DEC_ORDER=1 "$C/lora_bench" && grep '^attn' "$O/bench_order.txt"
python3 - "$O" <<'PY' | tee -a "$O/summary.txt"
import re, sys
o = sys.argv[1]
H, F, L, V, Q, KV = 4096, 14336, 32, 128256, 4096, 1024
ft = 2 * (L * (H * Q + 2 * H * KV + Q * H + 3 * H * F) + V * H)
for name in ["w2_base", "w1_lora16"]:
    try: log = open(f"{o}/{name}.log").read()
    except OSError: continue
    m = re.search(r"generate: (\d+) sequences, (\d+) prompt \+ (\d+) generated tokens in ([\d.]+) s", log)
    if not m: print(name, "no result:", log[-300:]); continue
    n, p, g, t = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    print(f"{name}: {n} req, {t:.1f} s, {(p + g) / t:.0f} total tok/s, {g / t:.0f} out tok/s, "
          f"{100 * (p + g) * ft / (t * 728e12):.1f}% of 728 TFLOP/s")
PY
echo "==== summary"
cat "$O/summary.txt"
