#!/usr/bin/env bash
# Issue 5, workload 3: many adapters through `lorabatch run` (planner, slots, loads, checkpoints):
# 256 adapters of ranks 8 to 64 on all 7 targets, Zipf popularity, 4096 requests of 512 prompt
# tokens, exactly 256 generated (generation.ignore_eos), gpu_adapter_slots 32. Run on the GPU
# machine (builds nothing):
#   bench/gpu_bench_w3.sh BIN OUT_DIR
# Environment (defaults in brackets): M model dir [/tmp/m8b: a random Llama-3-8B is written there
# when missing], N_ADAPTERS [256], N_DISTINCT [16], RANKS [8,16,24,32,40,48,56,64], N_REQ [4096],
# PROMPT [512], GEN [256], SLOTS [32], ZIPF_S [1.0], MAX_SEQS [256], DEVICE [cuda],
# ADAPTER_SRC ["DIR ..." existing adapter folders to use instead of generated ones (smoke tests
# on the tiny fixture model)], GEMM_TFLOPS [read from OUT_DIR/../gemm.json or OUT_DIR/gemm.json].
#
# Disk: 256 distinct rank-8..64 adapters of an 8B model are ~48 GB, more than the GPU machine's
# disk holds beside the model, so the 256 adapter names point (symbolic links) at N_DISTINCT
# distinct weight sets, ranks cycling through RANKS: adapter i has rank RANKS[i % len]. lorabatch
# keys adapters by name: every load is a real load (files read, converted, copied into a slot);
# what the links save is disk, and a first read from disk per distinct set (the page cache then
# serves it, as it would serve 48 GB on a 128 GB machine after the first pass).
#
# Reports (table + OUT_DIR/w3.json): total and output tokens/s, peak GPU memory, adapter loads,
# how many were made ahead (while a step ran on the GPU), host seconds in loads and the part of
# them that stalled admission (summary.json), the plan's predicted loads, and the fraction of the
# compute ceiling as in gpu_bench.sh (Llama-3-8B FLOPs per token; skipped for other models).
set -uo pipefail
BIN=$(readlink -f "${1:-.gpu/lorabatch}")
OUT=$(mkdir -p "${2:-bench/results/w3}" && readlink -f "${2:-bench/results/w3}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
M=${M:-/tmp/m8b}
NA=${N_ADAPTERS:-256} ND=${N_DISTINCT:-16} RANKS=${RANKS:-8,16,24,32,40,48,56,64}
NREQ=${N_REQ:-4096} PROMPT=${PROMPT:-512} GEN=${GEN:-256} SLOTS=${SLOTS:-32} ZS=${ZIPF_S:-1.0}
W=$OUT/work
mkdir -p "$W"
t0=$(date +%s)
if [ -z "${ADAPTER_SRC:-}" ]; then
    if [ ! -f "$M/config.json" ]; then
        python3 "$ROOT/bench/gen_random_model.py" --shape llama-3-8b --out "$M" > "$OUT/gen_model.log" 2>&1 ||
            { echo "model generator failed"; tail -5 "$OUT/gen_model.log"; exit 1; }
    fi
    if [ ! -d "$W/distinct" ] || [ "$(ls "$W/distinct" | wc -l)" -lt "$ND" ]; then
        python3 "$ROOT/bench/gen_random_model.py" --shape llama-3-8b --out "$M" --adapters-only --adapters "$ND" \
            --ranks "$RANKS" --adapter-dtype bf16 --adapter-dir "$W/distinct" > "$OUT/gen_adapters.log" 2>&1 ||
            { echo "adapter generator failed"; tail -5 "$OUT/gen_adapters.log"; exit 1; }
    fi
    ADAPTER_SRC=$(ls -d "$W"/distinct/* | sort -t- -k2,2n | tr '\n' ' ')
fi
echo "inputs ready in $(( $(date +%s) - t0 )) s"
python3 - "$W" "$M" "$NA" "$NREQ" "$PROMPT" "$GEN" "$SLOTS" "$ZS" "${MAX_SEQS:-256}" "${DEVICE:-cuda}" $ADAPTER_SRC <<'PY'
import json, os, random, sys
w, model, na, nreq, plen, gen, slots, zs, max_seqs, device = sys.argv[1:11]
src = sys.argv[11:]
na, nreq, plen, gen, slots, zs, max_seqs = int(na), int(nreq), int(plen), int(gen), int(slots), float(zs), int(max_seqs)
os.makedirs(f"{w}/loras", exist_ok=True)
os.makedirs(f"{w}/data", exist_ok=True)
for i in range(na):
    link = f"{w}/loras/a{i:03d}"
    if os.path.islink(link): os.remove(link)
    os.symlink(src[i % len(src)], link)
rng = random.Random(3)
weights = [1.0 / (i + 1) ** zs for i in range(na)]
counts = [0] * na
for a in rng.choices(range(na), weights=weights, k=nreq): counts[a] += 1
vocab = json.load(open(f"{model}/config.json"))["vocab_size"]
lines = ["model: " + model, "adapters:", "  dir: loras/", "inputs:"]
for i in range(na):
    with open(f"{w}/data/a{i:03d}.jsonl", "w") as f:
        for _ in range(counts[i]):
            f.write(json.dumps({"prompt_token_ids": [rng.randrange(10, vocab - 10) for _ in range(plen)]}) + "\n")
    lines += [f"  - path: data/a{i:03d}.jsonl", f"    adapter: a{i:03d}"]
lines += ["output:", "  dir: out", "  token_ids: true", "generation:", f"  max_tokens: {gen}", "  ignore_eos: true",
          "resources:", f"  device: {device}", f"  gpu_adapter_slots: {slots}", "  max_lora_rank: 64",
          f"  max_seqs: {max_seqs}", "  max_batch_tokens: 8192", "checkpoint:", "  interval_s: 60"]
open(f"{w}/job.yaml", "w").write("\n".join(lines) + "\n")
used = sum(1 for c in counts if c)
print(f"job: {na} adapters ({used} with records; the most popular has {max(counts)}), {nreq} requests")
PY
cd "$W" || exit 1
"$BIN" plan job.yaml > "$OUT/plan.txt" 2>&1
grep -i "load" "$OUT/plan.txt" | head -5
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/mem_w3.txt" &
    mw=$!
fi
"$BIN" run job.yaml --restart > "$OUT/run.log" 2>&1
rc=$?
[ -n "${mw:-}" ] && kill "$mw" 2>/dev/null
echo "run: exit $rc; $(tail -1 "$OUT/run.log")"
python3 - "$OUT" "$W" "${GEMM_TFLOPS:-}" <<'PY'
import json, os, sys
out, w, gemm = sys.argv[1], sys.argv[2], sys.argv[3]
s = json.load(open(f"{w}/out/summary.json"))
if not gemm:
    for g in [f"{out}/gemm.json", f"{out}/../gemm.json"]:
        if os.path.exists(g): gemm = json.load(open(g))["gemm_8192_bf16_tflops"]; break
mem = []
if os.path.exists(f"{out}/mem_w3.txt"): mem = [int(x) for x in open(f"{out}/mem_w3.txt").read().split() if x.isdigit()]
p, g, t = s["prompt_tokens"], s["generated_tokens"], s["seconds"]
r = {"workload": "w3_many_adapters", "records": s["records"], "errors": s["errors"], "prompt_tokens": p, "generated_tokens": g,
     "seconds": t, "output_tok_s": g / t, "total_tok_s": (p + g) / t, "adapter_loads": s["adapter_loads"],
     "adapter_load_seconds": s["adapter_load_seconds"], "adapter_loads_ahead": s.get("adapter_loads_ahead", 0),
     "adapter_load_seconds_ahead": s.get("adapter_load_seconds_ahead", 0.0), "peak_gpu_mem_mib": max(mem) if mem else None, "backend": s["backend"],
     "engine_steps": s.get("engine_steps"), "prefill_steps": s.get("prefill_steps"),
     "prefill_adapters_per_step": s.get("prefill_adapters_per_step")}
# the planner's estimate, for comparison with the engine's steps (lorabatch plan, lengths as estimated)
import re
m = re.search(r"estimated engine steps: (\d+), mean batch fill ([\d.]+)%", open(f"{out}/plan.txt").read()) if os.path.exists(f"{out}/plan.txt") else None
if m: r["plan_estimated_steps"], r["plan_mean_fill_pct"] = int(m[1]), float(m[2])
H, F, L, V, Q, KV = 4096, 14336, 32, 128256, 4096, 1024
model_cfg = json.load(open([l[7:] for l in open(f"{w}/job.yaml") if l.startswith("model: ")][0].strip() + "/config.json"))
if gemm and model_cfg.get("hidden_size") == H and model_cfg.get("num_hidden_layers") == L and model_cfg.get("intermediate_size") == F:
    ft = 2 * (L * (H * Q + 2 * H * KV + Q * H + 3 * H * F) + V * H)
    r["gemm_tflops"] = float(gemm)
    r["ceiling_fraction"] = (p + g) * ft / (t * float(gemm) * 1e12)
json.dump(r, open(f"{out}/w3.json", "w"), indent=2)
print(f"engine steps {r['engine_steps']}; planner's estimate {r.get('plan_estimated_steps')} steps at "
      f"{r.get('plan_mean_fill_pct')}% mean batch fill")
print(f"{'workload':18} {'records':>7} {'out tok/s':>10} {'total tok/s':>12} {'loads':>6} {'ahead':>6} {'load s':>7} {'stall s':>7} {'peak MiB':>9} {'ceiling':>8}")
print(f"{r['workload']:18} {r['records']:7d} {r['output_tok_s']:10.0f} {r['total_tok_s']:12.0f} {r['adapter_loads']:6d} "
      f"{r['adapter_loads_ahead']:6d} {r['adapter_load_seconds']:7.2f} {r['adapter_load_seconds'] - r['adapter_load_seconds_ahead']:7.2f} "
      f"{str(r['peak_gpu_mem_mib']):>9} "
      f"{(100 * r['ceiling_fraction']) if 'ceiling_fraction' in r else float('nan'):7.1f}%")
PY
