#!/usr/bin/env bash
# CPU generation speed (issue 2): tokens/s at batch 1 and 8 on the tiny fixture model and on a
# random Llama-3.2-1B-shaped checkpoint (made here by bench/gen_random_c.c, ~2.5 GB in build/).
# Prints a table; writes bench/results/cpu_generate.json. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/lorabatch ] || ./build.sh release
BIN=build/lorabatch
mkdir -p build/bench
gcc -O2 -o build/bench/gen_random_c bench/gen_random_c.c -lm
[ -f build/bench/llama-3.2-1b/model.safetensors ] || build/bench/gen_random_c build/bench/llama-3.2-1b llama-3.2-1b
NEW=${NEW:-32}
rows=()
measure() { # name model batch prompt_len
    local name=$1 model=$2 batch=$3 plen=$4 ids args=() line
    ids=$(seq -s, 100 $((99 + plen)))
    for _ in $(seq "$batch"); do args+=(--prompt-ids "$ids"); done
    line=$("$BIN" generate --model "$model" "${args[@]}" --max-tokens "$NEW" --ignore-eos --max-seqs "$batch" 2>&1 >/dev/null | grep '^generate:')
    local gen tot
    gen=$(echo "$line" | sed -E 's/.* ([0-9.]+) generated tok\/s.*/\1/')
    tot=$(echo "$line" | sed -E 's/.* ([0-9.]+) total tok\/s.*/\1/')
    printf '%-14s %6s %7s %7s %12s %12s\n' "$name" "$batch" "$plen" "$NEW" "$gen" "$tot"
    rows+=("{\"model\":\"$name\",\"batch\":$batch,\"prompt_tokens\":$plen,\"new_tokens\":$NEW,\"generated_tok_s\":$gen,\"total_tok_s\":$tot}")
}
printf '%-14s %6s %7s %7s %12s %12s\n' model batch prompt new gen_tok/s total_tok/s
for b in 1 8; do measure tiny-llama3 tests/golden/fixtures/llama3/model $b 16; done
for b in 1 8; do measure llama-3.2-1b build/bench/llama-3.2-1b $b 16; done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
{
    echo "{\"bench\":\"cpu_generate\",\"commit\":\"$(git rev-parse --short HEAD)\",\"cpu\":\"$cpu\",\"cores\":$(nproc),\"results\":["
    (IFS=,; echo "${rows[*]}")
    echo "]}"
} > bench/results/cpu_generate.json
echo "wrote bench/results/cpu_generate.json"
