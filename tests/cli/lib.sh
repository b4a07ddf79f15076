# lib.sh — shared by the CLI tests (sourced, not run). Each test counts checks with ok/bad
# and ends with `finish`, which prints the RESULT line build.sh sums.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${LB_BIN:-$ROOT/build/lorabatch}
FIX=${LB_FIXTURE_MODEL:-$ROOT/tests/golden/fixtures/llama3}
T=$(mktemp -d /tmp/lbcli.XXXXXX)
trap 'rm -rf "$T"' EXIT
n_pass=0 n_fail=0 n_skip=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
bad() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }
check() { # description command...
    local d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
finish() { echo "RESULT $n_pass $n_fail $n_skip"; [ $n_fail -eq 0 ]; }

# zstd -dc, or lorabatch's own `cat` on machines without the zstd program (the GPU machines)
if command -v zstd >/dev/null 2>&1; then zcat_() { zstd -dc "$@"; }; else zcat_() { "$BIN" cat "$@"; }; fi

# Decompressed, concatenated view of every output file of a folder (sorted by name).
dump_outputs() { # dir
    local f
    for f in $(ls "$1"/*.jsonl.zst 2>/dev/null | sort); do echo "== $(basename "$f")"; zcat_ "$f"; done
}

# A job over the fixture model: 3 shards, two adapters, fan-out, base.
make_job() { # dir n_a n_b n_c
    local d=$1 na=$2 nb=$3 nc=$4
    mkdir -p "$d/data" "$d/loras"
    ln -sfn "$FIX/adapters/all7_r8" "$d/loras/sql"
    ln -sfn "$FIX/adapters/qv_rslora_r4" "$d/loras/chat"
    python3 - "$d" "$na" "$nb" "$nc" <<'PY'
import json, random, sys
d, counts = sys.argv[1], [int(x) for x in sys.argv[2:5]]
random.seed(7)
words = "the of and to in is was for on that with as by at from data model query table select answer question".split()
for name, n in zip("abc", counts):
    with open(f"{d}/data/{name}.jsonl", "w") as f:
        for i in range(n):
            r = {"id": f"{name}-{i}"}
            if i % 3 == 0:
                r["prompt_token_ids"] = [random.randrange(3, 500) for _ in range(random.randrange(1, 24))]
            else:
                r["prompt"] = " ".join(random.choice(words) for _ in range(random.randrange(1, 16)))
            if i % 4 == 1: r["max_tokens"] = 3
            if i % 5 == 2: r["temperature"] = 0.8; r["top_p"] = 0.9
            if i % 7 == 3: r["seed"] = 1000 + i; r["temperature"] = 1.0; r["top_k"] = 20
            f.write(json.dumps(r) + "\n")
PY
    cat > "$d/job.yaml" <<YAML
model: $FIX/model
adapters:
  dir: loras/
inputs:
  - path: data/a.jsonl
    adapter: sql
  - path: data/b.jsonl
    adapters: [sql, chat, base]
  - path: data/c.jsonl
    adapter: chat
output:
  dir: out/
generation:
  max_tokens: 10
  temperature: 0.0
resources:
  device: cpu
  gpu_adapter_slots: 2
  max_seqs: 6
  max_batch_tokens: 48
checkpoint:
  interval_s: 0.05
YAML
}
