#!/usr/bin/env bash
# bench/gpu_bench_w3.sh (issue 5's workload 3) in miniature on the CPU, so the benchmark script
# keeps working between GPU sessions: the fixture model, its adapters as the distinct weight
# sets, 24 adapter names with Zipf popularity, 4 slots, max_seqs 4 (so admission runs ahead of
# the engine and the plan's next loads can be made while a step runs).
. "$(dirname "$0")/lib.sh"
F=$(cd "$FIX" && pwd)
M=$F/model ADAPTER_SRC="$(ls -d "$F"/adapters/* | tr '\n' ' ')" N_ADAPTERS=24 N_REQ=200 PROMPT=20 GEN=8 SLOTS=4 MAX_SEQS=4 \
    DEVICE=cpu bash "$ROOT/bench/gpu_bench_w3.sh" "$BIN" "$T/w3" > "$T/w3.log" 2>&1
rc=$?
check "the script exits 0 (rc $rc)" [ $rc -eq 0 ]
check "it wrote w3.json: 200 records, no errors, 200 x 8 tokens generated (ignore_eos), >= 24 loads" python3 -c "
import json, sys
r = json.load(open('$T/w3/w3.json'))
sys.exit(0 if r['records'] == 200 and r['errors'] == 0 and r['generated_tokens'] == 1600 and r['adapter_loads'] >= 24 else 1)"
check "some loads were made ahead of need (while a step ran), the rest at admission" python3 -c "
import json, sys
r = json.load(open('$T/w3/w3.json'))
sys.exit(0 if 0 < r['adapter_loads_ahead'] <= r['adapter_loads'] and 0 <= r['adapter_load_seconds_ahead'] <= r['adapter_load_seconds'] else 1)"
n_used=$(cat "$T"/w3/work/data/*.jsonl | wc -l)
check "200 records over the shards ($n_used)" [ "$n_used" = 200 ]
check "24 adapter names, linked to the 5 distinct fixture adapters" [ "$(ls "$T/w3/work/loras" | wc -l)" = 24 ]
finish
