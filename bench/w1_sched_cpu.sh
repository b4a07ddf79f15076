#!/usr/bin/env bash
# Workload 1's schedule on the CPU: the engine steps `lorabatch generate` makes for issue 5's
# workload 1 (1024 requests cycling through 16 adapters, 512 prompt tokens, 256 new, max_seqs
# 512, 8192 tokens a step) and how many distinct adapters its steps carry, without a GPU. The
# schedule depends only on admission and lengths, not on the backend, so the tiny fixture model
# (its context stretched; one adapter under 16 names) gives the 8B model's steps. Each SETTINGS
# entry is one pass, "name:VAR=VAL[,VAR=VAL]" ("default:" for none); the outputs of every pass
# are compared with the first's (sorted JSONL: the engine's grouping must not change them).
#   bench/w1_sched_cpu.sh [OUT_DIR]        (default bench/results/w1_sched_cpu)
# Environment: SETTINGS ["default: queue:LB_PREFILL_GROUP=0 win1k:LB_GROUP_WINDOW=1024"], REPEAT
# [64 per prompt: 1024 requests], GEN [256]; ~35 s a pass on two cores. Needs build/lorabatch.
# Writes OUT_DIR/w1_sched.json and prints a table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/results/w1_sched_cpu}" && readlink -f "${1:-$ROOT/bench/results/w1_sched_cpu}")
REPEAT=${REPEAT:-64} GEN=${GEN:-256}
F=$ROOT/tests/golden/fixtures/llama3
TMP=$(mktemp -d /tmp/lb-w1sched.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
M=$TMP/model
bash "$ROOT/bench/fixture_model.sh" "$M" $((512 + GEN + 64))
# 16 prompts of 512 token ids below the fixture's vocabulary, one per adapter name
args=()
for i in $(seq 0 15); do args+=(--adapter "a$i=$F/adapters/all7_r8"); done
i=0
while read -r p; do args+=(--use "a$i" --prompt-ids "$p"); i=$((i + 1)); done < <(python3 -c "
import random
random.seed(1)
for i in range(16): print(','.join(str(random.randrange(3, 500)) for _ in range(512)))")
rows=()
first=
SETTINGS=${SETTINGS:-"default: queue:LB_PREFILL_GROUP=0 win1k:LB_GROUP_WINDOW=1024"}
for s in $SETTINGS; do
    name=${s%%:*}
    envs=${s#*:}
    envs=${envs//,/ }
    env $envs "$ROOT/build/lorabatch" generate --device cpu --model "$M" "${args[@]}" --repeat "$REPEAT" --max-tokens "$GEN" \
        --ignore-eos --max-seqs 512 --max-batch-tokens 8192 > "$TMP/$name.jsonl" 2> "$OUT/$name.log" ||
        { tail -5 "$OUT/$name.log"; exit 1; }
    sort "$TMP/$name.jsonl" > "$TMP/$name.sorted"
    same=reference
    if [ -n "$first" ]; then cmp -s "$TMP/$first.sorted" "$TMP/$name.sorted" && same=identical || same=DIFFERENT; else first=$name; fi
    line=$(grep '^generate:' "$OUT/$name.log")
    rows+=("$(python3 - "$name" "$same" "$line" <<'PY'
import json, re, sys
name, same, line = sys.argv[1:4]
m = re.search(r"(\d+) steps, \d+ preemptions, (\d+) steps with prefill at ([\d.]+) adapters each, (\d+) without at ([\d.]+)", line)
print(json.dumps({"name": name, "steps": int(m[1]), "prefill_steps": int(m[2]), "prefill_adapters_per_step": float(m[3]),
                  "decode_steps": int(m[4]), "decode_adapters_per_step": float(m[5]), "outputs": same}))
PY
)")
done
printf '%s\n' "${rows[@]}" | python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
json.dump({'workload': 'issue 5 workload 1 schedule (CPU, fixture llama3)', 'repeat': $REPEAT, 'gen': $GEN, 'passes': rows},
          open('$OUT/w1_sched.json', 'w'), indent=2)
print('%-10s %6s %18s %18s %10s' % ('pass', 'steps', 'prefill (ad/step)', 'decode (ad/step)', 'outputs'))
for r in rows:
    print('%-10s %6d %10d (%5.2f) %10d (%5.2f) %10s' % (r['name'], r['steps'], r['prefill_steps'], r['prefill_adapters_per_step'],
                                                       r['decode_steps'], r['decode_adapters_per_step'], r['outputs']))
"
grep -q DIFFERENT "$OUT/w1_sched.json" && { echo "w1_sched_cpu: outputs differ between passes" >&2; exit 1; }
exit 0
