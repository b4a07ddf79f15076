#!/usr/bin/env bash
# tok_cli.sh — `lorabatch tokenize` exit codes and messages, on the tiny committed tokenizer
# (tests/tok/tiny: byte-level BPE, Llama-3 split regex, <|bos|> template). Each case: the
# command, its expected exit code, and a string its stdout+stderr must hold.
set -uo pipefail
cd "$(dirname "$0")/../.."
LB_BIN=${LB_BIN:-$PWD/build/lorabatch}
TINY=tests/tok/tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

check() { # name expected_rc expected_substring -- command...
    local name=$1 want_rc=$2 want=$3
    shift 4
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" = "$want_rc" ] && grep -qF -- "$want" <<< "$out"; then
        echo "ok   $name"; pass=$((pass + 1))
    else
        echo "FAIL $name: rc $rc (want $want_rc), output:"; echo "$out" | head -n 5 | sed 's/^/    /'
        fail=$((fail + 1))
    fi
}

check "encode --text" 0 '{"ids":[261,266],"decoded":"hello world"}' -- "$LB_BIN" tokenize --tokenizer $TINY --text "hello world"
check "encode --special" 0 '"ids":[300,261,266]' -- "$LB_BIN" tokenize --tokenizer $TINY --special --text "hello world"
check "encode stdin" 0 '"ids":[261,266]' -- sh -c "printf 'hello world' | '$LB_BIN' tokenize --tokenizer $TINY"
check "invalid UTF-8 on stdin" 2 'not valid UTF-8 (byte 2)' -- sh -c "printf 'ab\377' | '$LB_BIN' tokenize --tokenizer $TINY"
printf '"hello"\n{"text":"a\\u0000b"}\n"bad\377"\n[1,2]\n' > "$tmp/in.jsonl"
check "jsonl: bad lines reported, exit 3" 3 '{"error":"line 3: not JSON' -- "$LB_BIN" tokenize --tokenizer $TINY --jsonl "$tmp/in.jsonl"
check "jsonl: NUL kept" 3 '{"ids":[97,0,98],"decoded":"a\u0000b"}' -- "$LB_BIN" tokenize --tokenizer $TINY --jsonl "$tmp/in.jsonl"
check "jsonl: non-string line" 3 'line 4: expected a JSON string' -- "$LB_BIN" tokenize --tokenizer $TINY --jsonl "$tmp/in.jsonl"
printf '[261,266]\n{"ids":[300,104,228]}\n[5000]\n' > "$tmp/ids.jsonl"
check "decode" 3 '{"text":"hello world"}' -- "$LB_BIN" tokenize --tokenizer $TINY --decode "$tmp/ids.jsonl"
check "decode: invalid UTF-8 becomes U+FFFD" 3 '{"text":"<|bos|>h�"}' -- "$LB_BIN" tokenize --tokenizer $TINY --decode "$tmp/ids.jsonl"
check "decode: id out of range" 3 'token id 5000 is outside the vocabulary' -- "$LB_BIN" tokenize --tokenizer $TINY --decode "$tmp/ids.jsonl"
check "decode --skip-special" 0 '{"text":"h' -- sh -c "echo '[300,104]' | '$LB_BIN' tokenize --tokenizer $TINY --skip-special --decode -"
printf 'hello world\nhello\n' > "$tmp/bench.txt"
check "bench" 0 '"bytes":18,"tokens":3' -- "$LB_BIN" tokenize --tokenizer $TINY --bench "$tmp/bench.txt"
check "missing tokenizer" 2 'tokenizer.json: No such file' -- "$LB_BIN" tokenize --tokenizer "$tmp/none" --text x
check "no --tokenizer" 2 'usage: lorabatch tokenize' -- "$LB_BIN" tokenize --text x
check "unknown option" 2 "unknown option '--frobnicate'" -- "$LB_BIN" tokenize --tokenizer $TINY --frobnicate
mkdir -p "$tmp/uni" && sed 's/"type": *"BPE"/"type":"Unigram"/' $TINY/tokenizer.json > "$tmp/uni/tokenizer.json"
check "unsupported model named" 2 'model type "Unigram" is not supported' -- "$LB_BIN" tokenize --tokenizer "$tmp/uni" --text x
echo "RESULT $pass $fail 0"
[ $fail -eq 0 ]
