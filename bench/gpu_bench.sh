#!/usr/bin/env bash
# Issue 5 workloads on one GPU (run on the GPU machine; builds nothing):
#   bench/gpu_bench.sh BIN OUT_DIR [quick]
# 1. 1024 requests x 512 prompt tokens, exactly 256 generated (EOS ignored), 16 rank-16 adapters
#    on all 7 targets, spread evenly;   2. the same on the base model;
#   4. the peer: HF transformers + PEFT, mixed adapters per batch, on the same model and adapters
#      (32 requests of 512 prompt tokens, 64 new tokens: the full workload would take HF an hour).
# Random Llama-3-8B-shaped bf16 checkpoint from bench/gen_random_model.py. Reports output and
# total tokens/s, peak GPU memory, and the fraction of the compute ceiling: total tokens x
# 2 x (projection + LM head weights) / (wall x cuBLAS bf16 8192^3 GEMM rate measured here).
# lorabatch runs through `lorabatch generate` (the same engine and runner as `run`).
# Environment: MAX_SEQS (sequences per step, default 512), PEER=0 (skip the peer), PROFILE=1 (also
# a quarter of workload 1 under LB_CUDA_PROFILE=1: GPU time per op kind), W1_VARIANTS / W2_VARIANTS
# ("name:VAR=value ...": workload 1 / 2 again under each setting), SKIP_W2=1 (workload 1 and its
# variants only: an A/B when device time is short).
set -uo pipefail
BIN=${1:-.gpu/lorabatch}
OUT=${2:-bench/results}
QUICK=${3:-}
mkdir -p "$OUT"
# the table is built from every w1_*/w2_* log in OUT: drop those of an earlier call on the same
# machine (a warm device keeps /tmp), so that only this call's runs are reported
rm -f "$OUT"/w[12]_*.log "$OUT"/w[12]_*.settings "$OUT"/out_w[12]_*.jsonl "$OUT"/mem_w[12]_*.txt
M=/tmp/m8b
NREQ=1024; NPEER=32
[ -n "$QUICK" ] && { NREQ=256; NPEER=16; }
t0=$(date +%s)
[ -f $M/config.json ] || python3 bench/gen_random_model.py --shape llama-3-8b --out $M --adapters 16 --ranks 16 --adapter-dtype bf16 > "$OUT/gen.log" 2>&1 || { echo "generator failed"; tail "$OUT/gen.log"; exit 1; }
echo "model written in $(( $(date +%s) - t0 )) s"
python3 - > "$OUT/gemm.json" <<'PY'
import json, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
ts = []
for _ in range(10):
    s.record(); a @ b; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
ts.sort()
gemm = 2 * 8192**3 / ts[len(ts) // 2] / 1e12
# the memory roofline the decode kernels should be judged against: a 2 GiB device-to-device copy
# (bytes read + bytes written per second), and a read-only reduction over the same bytes
x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x); x.fill_(1)
z = x.view(torch.int32)
for _ in range(2): y.copy_(x); z.sum(dtype=torch.int64)
torch.cuda.synchronize()
cp, rd = [], []
for _ in range(5):
    s.record(); y.copy_(x); e.record(); torch.cuda.synchronize(); cp.append(s.elapsed_time(e) / 1e3)
    s.record(); z.sum(dtype=torch.int64); e.record(); torch.cuda.synchronize(); rd.append(s.elapsed_time(e) / 1e3)
cp.sort(); rd.sort()
print(json.dumps({"gemm_8192_bf16_tflops": gemm, "hbm_copy_gbs": 2 * x.numel() / cp[2] / 1e9,
                  "hbm_read_gbs": x.numel() / rd[2] / 1e9, "device": torch.cuda.get_device_name()}))
PY
cat "$OUT/gemm.json"
PROMPTS=$(python3 -c "
import random
random.seed(1)
for i in range(16): print(','.join(str(random.randrange(1000, 100000)) for _ in range(512)))")
mem_watch() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$1" & echo $!; }
run_lb() { # name with_adapters
    local name=$1 ad=$2 args=() i=0 p
    if [ "$ad" = 1 ]; then for d in $(ls -d $M/adapters/* | head -16); do args+=(--adapter "a$i=$d"); i=$((i + 1)); done; fi
    i=0
    while read -r p; do
        [ "$ad" = 1 ] && args+=(--use "a$i")
        args+=(--prompt-ids "$p"); i=$((i + 1))
    done <<< "$PROMPTS"
    echo "NREQ=$NREQ MAX_SEQS=${MAX_SEQS:-512} LB_LORA_SET_MIN_TOK=${LB_LORA_SET_MIN_TOK:-default} LB_CUDA_ATTN=${LB_CUDA_ATTN:-default} LB_CUDA_ELEM=${LB_CUDA_ELEM:-default} LB_CUDA_GEMM_TUNE=${LB_CUDA_GEMM_TUNE:-default} LB_CUDA_LORA_DENSE=${LB_CUDA_LORA_DENSE:-default} LB_CUDA_LORA_DENSE_HILO=${LB_CUDA_LORA_DENSE_HILO:-default} LB_CUDA_COPY_STREAM=${LB_CUDA_COPY_STREAM:-default} LB_GRAPHS=${LB_GRAPHS:-default} LB_CUDA_ATTN_DEC_ORDER=${LB_CUDA_ATTN_DEC_ORDER:-default} LB_CUDA_ATTN_DEC_NST=${LB_CUDA_ATTN_DEC_NST:-default} LB_CUDA_LORA_DENSE_MIN_ROWS=${LB_CUDA_LORA_DENSE_MIN_ROWS:-default} LB_CUDA_ATTN_DEC_LEAN=${LB_CUDA_ATTN_DEC_LEAN:-default} LB_CUDA_ATTN_PREFILL=${LB_CUDA_ATTN_PREFILL:-default} LB_CUDA_LORA_DENSE_GROUP_ROWS=${LB_CUDA_LORA_DENSE_GROUP_ROWS:-default} LB_PREFILL_GROUP=${LB_PREFILL_GROUP:-default} LB_GROUP_WINDOW=${LB_GROUP_WINDOW:-default}" > "$OUT/$name.settings"
    local w; w=$(mem_watch "$OUT/mem_$name.txt")
    timeout 170 "$BIN" generate --device cuda --model $M "${args[@]}" --repeat $((NREQ / 16)) --max-tokens 256 --ignore-eos \
        --max-seqs ${MAX_SEQS:-512} --max-batch-tokens 8192 > "$OUT/out_$name.jsonl" 2> "$OUT/$name.log"
    echo "$name: exit $? $(grep '^generate:' "$OUT/$name.log")"
    kill $w 2>/dev/null
    tail -3 "$OUT/$name.log"
}
[ "${SKIP_W2:-0}" = 1 ] || run_lb w2_base 0
run_lb w1_lora16 1
if [ "${PROFILE:-0}" = 1 ]; then # GPU time per op (events around each op) on a quarter of workload 1
    NREQ=256 LB_CUDA_PROFILE=1 LB_CUDA_STATS=1 run_lb w1_profile 1
    grep "^cuda profile\|^cuda stats" "$OUT/w1_profile.log"
fi
# W1_VARIANTS="name:VAR=value ...": workload 1 again under each setting (e.g. old_order:LB_LORA_SET_MIN_TOK=-1)
# (several settings: comma-separated, e.g. dd:LB_LORA_SET_MIN_TOK=1,LB_CUDA_LORA_DENSE=1)
for v in ${W1_VARIANTS:-}; do
    eval "$(echo "${v#*:}" | tr , ' ') run_lb w1_${v%%:*} 1"
done
# W2_VARIANTS likewise for workload 2 (the base model), so that a setting is compared on both
for v in ${W2_VARIANTS:-}; do
    eval "$(echo "${v#*:}" | tr , ' ') run_lb w2_${v%%:*} 0"
done
if [ "${PEER:-1}" != 0 ]; then
    timeout 170 python3 bench/peer_hf.py --model $M --adapters $M/adapters --requests $NPEER --batch $NPEER --new ${PEER_NEW:-64} --json "$OUT/peer.json" > "$OUT/peer.log" 2>&1
    echo "peer: exit $? $(tail -1 "$OUT/peer.log")"
fi
python3 - "$OUT" <<'PY'
import json, re, sys, os
out = sys.argv[1]
gemm = json.load(open(f"{out}/gemm.json"))["gemm_8192_bf16_tflops"]
H, F, L, V, Q, KV = 4096, 14336, 32, 128256, 4096, 1024
flops_tok = 2 * (L * (H * Q + 2 * H * KV + Q * H + 3 * H * F) + V * H)
rows = []
names = ["w2_base", "w1_lora16"] + sorted(os.path.basename(f)[:-4] for f in __import__("glob").glob(f"{out}/w[12]_*.log")
                                          if os.path.basename(f)[:-4] not in ("w1_lora16", "w2_base"))
for name in names:
    try: log = open(f"{out}/{name}.log").read()
    except OSError: continue
    m = re.search(r"generate: (\d+) sequences, (\d+) prompt \+ (\d+) generated tokens in ([\d.]+) s", log)
    if not m: rows.append({"workload": name, "error": log[-400:]}); continue
    n, p, g, t = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    mem = [int(x) for x in open(f"{out}/mem_{name}.txt").read().split() if x.isdigit()]
    rows.append({"workload": name, "requests": n, "prompt_tokens": p, "generated_tokens": g, "seconds": t,
                 "settings": open(f"{out}/{name}.settings").read().strip() if os.path.exists(f"{out}/{name}.settings") else None,
                 "output_tok_s": g / t, "total_tok_s": (p + g) / t, "peak_gpu_mem_mib": max(mem) if mem else None,
                 "ceiling_fraction": (p + g) * flops_tok / (t * gemm * 1e12)})
if os.environ.get("PEER", "1") != "0":
    try: rows.append(json.load(open(f"{out}/peer.json")))
    except Exception as e: rows.append({"peer": "failed", "why": str(e)})
gj = json.load(open(f"{out}/gemm.json"))
res = {"gemm_tflops": gemm, "hbm_copy_gbs": gj.get("hbm_copy_gbs"), "hbm_read_gbs": gj.get("hbm_read_gbs"),
       "flops_per_token": flops_tok, "device": gj["device"], "rows": rows}
json.dump(res, open(f"{out}/gpu_bench.json", "w"), indent=2)
print(f"{'workload':16} {'req':>5} {'out tok/s':>10} {'total tok/s':>12} {'peak MiB':>9} {'ceiling':>8}")
for r in rows:
    if "workload" in r and "seconds" in r:
        print(f"{r['workload']:16} {r['requests']:5d} {r['output_tok_s']:10.0f} {r['total_tok_s']:12.0f} {str(r['peak_gpu_mem_mib']):>9} {100*r['ceiling_fraction']:7.1f}%")
    elif "peer" in r and "output_tok_s" in r:
        print(f"{'hf+peft':16} {r['requests']:5d} {r['output_tok_s']:10.0f} {r['total_tok_s']:12.0f} {r['peak_mem_gib']*1024:9.0f}")
    else: print(r)
print(f"cuBLAS bf16 8192^3: {gemm:.0f} TFLOP/s on {res['device']}; HBM: copy {res['hbm_copy_gbs'] or 0:.0f} GB/s, "
      f"read {res['hbm_read_gbs'] or 0:.0f} GB/s")
PY
