#!/usr/bin/env bash
# Workload 3's schedule on the CPU: how many engine steps the planner and the run loop need for
# issue 5's many-adapter workload (256 Zipf adapters, 32 slots, 4096 requests, max_seqs 512),
# without a GPU. The step count depends only on the schedule (admission, slots, loads, lengths),
# not on the backend, so a tiny model on the CPU backend gives the same count as the 8B model on
# a GPU (H100 run 17: 2617 steps; this script with the 25% drain slack that run used: 2606; run
# 22 with no slack: 2350, this script 2337). The step count does not set the GPU's tokens/s: in
# run 22, 10% fewer steps took the same time, each fuller step costing proportionally more.
#   bench/w3_sched_cpu.sh [OUT_DIR]        (default bench/results/w3_sched_cpu)
# Environment: PROMPT [512], GEN [256], SLOTS [32], N_REQ [4096], MAX_SEQS [512], KV_PAGES
# [22469: the KV cache the H100 had for workload 3 in run 17, 16-token pages; 0: the CPU's own];
# PROMPT=128 GEN=64 runs in ~20 s a pass instead of ~2 min. Two passes: SLOTS slots, then a slot
# for every adapter (the bound the slot budget is measured against). Needs build/lorabatch.
# Writes OUT_DIR/w3_sched.json and prints a table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/results/w3_sched_cpu}" && readlink -f "${1:-$ROOT/bench/results/w3_sched_cpu}")
PROMPT=${PROMPT:-512} GEN=${GEN:-256} SLOTS=${SLOTS:-32}
F=$ROOT/tests/golden/fixtures/llama3
TMP=$(mktemp -d /tmp/lb-w3sched.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
M=$TMP/model
# the fixture model, with a context long enough for PROMPT + GEN (the outputs are not looked at)
bash "$ROOT/bench/fixture_model.sh" "$M" $((PROMPT + GEN + 64))
SRC="$F/adapters/all7_r8 $F/adapters/layer1_r16 $F/adapters/qv_rslora_r4 $F/adapters/bin_r2"
rows=()
for slots in "$SLOTS" 256; do
    d=$TMP/slots$slots # the job's shards and outputs stay in the temporary folder
    LB_KV_PAGES=${KV_PAGES:-22469} M=$M DEVICE=cpu PROMPT=$PROMPT GEN=$GEN SLOTS=$slots MAX_SEQS=${MAX_SEQS:-512} ADAPTER_SRC="$SRC" \
        bash "$ROOT/bench/gpu_bench_w3.sh" "$ROOT/build/lorabatch" "$d" > "$OUT/slots$slots.log" 2>&1 ||
        { tail -5 "$OUT/slots$slots.log"; exit 1; }
    cp "$d/w3.json" "$OUT/slots$slots.json"
    cp "$d/plan.txt" "$OUT/plan_slots$slots.txt"
    grep -h '^run stats' "$d/run.log" >> "$OUT/slots$slots.log" || true # under LB_RUN_STATS=1
    rows+=("$OUT/slots$slots.json")
done
python3 - "$OUT" "$PROMPT" "$GEN" "$SLOTS" "${rows[@]}" <<'PY'
import json, sys
out, prompt, gen, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a, b = (json.load(open(p)) for p in sys.argv[5:7])
r = {"prompt": prompt, "gen": gen, "slots": slots, "records": a["records"],
     "engine_steps": a["engine_steps"], "plan_estimated_steps": a.get("plan_estimated_steps"),
     "prefill_adapters_per_step": a.get("prefill_adapters_per_step"),
     "engine_steps_slot_per_adapter": b["engine_steps"],
     "tokens_per_step": (a["prompt_tokens"] + a["generated_tokens"]) / a["engine_steps"],
     "steps_vs_slot_per_adapter": a["engine_steps"] / b["engine_steps"]}
json.dump(r, open(f"{out}/w3_sched.json", "w"), indent=2)
print(f"{'slots':>6} {'engine steps':>12} {'plan estimate':>13} {'tokens/step':>11}")
print(f"{slots:6d} {a['engine_steps']:12d} {str(a.get('plan_estimated_steps')):>13} {r['tokens_per_step']:11.0f}")
print(f"{'all':>6} {b['engine_steps']:12d} {str(b.get('plan_estimated_steps')):>13} "
      f"{(b['prompt_tokens'] + b['generated_tokens']) / b['engine_steps']:11.0f}")
print(f"steps with {slots} slots / with a slot per adapter: {r['steps_vs_slot_per_adapter']:.3f}")
print(f"adapters per step with prompt chunks ({slots} slots): {r['prefill_adapters_per_step']}")
PY
