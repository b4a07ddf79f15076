#!/usr/bin/env bash
# The llama3 fixture model (tests/golden/fixtures/llama3/model) copied into DIR with a context of
# at least CTX tokens, for the CPU schedule studies (w1_sched_cpu.sh, w3_sched_cpu.sh): a tiny
# model whose outputs are not compared with a reference, only across passes.
#   bench/fixture_model.sh DIR CTX
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR CTX" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
cp -r "$ROOT/tests/golden/fixtures/llama3/model/." "$1/"
python3 - "$1/config.json" "$2" <<'PY'
import json, sys
p, n = sys.argv[1], int(sys.argv[2])
c = json.load(open(p))
c["max_position_embeddings"] = max(c["max_position_embeddings"], n)
json.dump(c, open(p, "w"), indent=2)
PY
