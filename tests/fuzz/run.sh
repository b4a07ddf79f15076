#!/usr/bin/env bash
# run.sh — builds the fuzz targets of fuzz_parsers.c with clang (libFuzzer + ASan + UBSan) into
# build/fuzz and runs each for SECONDS from its seeds (files of the repository: fixture models,
# configs, job files, records, tokenizers; tests/fuzz/seeds/ for the two formats the repository
# holds no small example of).
#   tests/fuzz/run.sh [SECONDS per target, default 60] [TARGET...]
# Targets: safetensors torchbin config job record ckpt adaptercfg tokjson tokenize. Prints "ok"/"FAIL" per
# target and a RESULT line; a crash leaves its input in build/fuzz/artifacts/. Exits 77 when no
# clang with libFuzzer is installed. Each run starts from the seeds again (the corpus grown by a
# run stays in build/fuzz/corpus/TARGET for a longer look: FUZZ_KEEP_CORPUS=1 reuses it).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SEC=${1:-60}
shift || true
TARGETS=${*:-safetensors torchbin config job record ckpt adaptercfg tokjson tokenize}
CC=${CLANG:-clang}
O=build/fuzz
mkdir -p "$O/obj" "$O/artifacts"
n_pass=0 n_fail=0 n_skip=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
bad() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

if ! command -v "$CC" >/dev/null 2>&1 ||
   ! echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
       "$CC" -fsanitize=fuzzer -x c - -o "$O/probe" >/dev/null 2>&1; then
    echo "SKIP fuzz: no clang with libFuzzer ($CC)"
    exit 77
fi
LIBDIR=/usr/lib/$(gcc -print-multiarch)
LIBS="$LIBDIR/libzstd.a $LIBDIR/libyaml.a $LIBDIR/libjansson.a $LIBDIR/libpcre2-8.a $LIBDIR/libutf8proc.a -lm -ldl -lpthread"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c11 -O1 -g -D_GNU_SOURCE -pthread -Isrc $SAN"

# the library, instrumented for coverage (rebuilt when a source is newer than its object)
objs=()
pids=()
for src in src/*.c; do
    [ "$(basename "$src")" = main.c ] && continue
    obj=$O/obj/$(basename "${src%.c}").o
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ -n "$(find src -name '*.[ch]' -newer "$obj" | head -1)" ]; then
        "$CC" $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj" & pids+=($!)
        if [ ${#pids[@]} -ge "$(nproc)" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
    fi
done
for p in "${pids[@]}"; do wait "$p" || { echo "FAIL fuzz: the library does not build with $CC"; echo "RESULT 0 1 0"; exit 1; }; done

seed() { # target files...
    local t=$1 d=$O/corpus/$1 f
    shift
    [ -n "${FUZZ_KEEP_CORPUS:-}" ] || rm -rf "$d"
    mkdir -p "$d"
    for f in "$@"; do [ -f "$f" ] && cp "$f" "$d/seed-$(echo "$f" | tr '/' '_')"; done
}
lines() { # target file: one seed per line
    local i=0 l
    while IFS= read -r l && [ $i -lt 40 ]; do printf '%s' "$l" > "$O/corpus/$1/line-$i"; i=$((i + 1)); done < "$2"
}
for t in $TARGETS; do
    case $t in
        safetensors) seed $t tests/fuzz/seeds/safetensors/* ;;
        torchbin) seed $t tests/data/torchbin/*.bin ;;
        config) seed $t tests/golden/fixtures/*/model/config.json tests/golden/fixtures/*/model/generation_config.json ;;
        job) seed $t jobs/*.yaml ;;
        record) seed $t; lines $t jobs/demo-data/questions.jsonl; lines $t jobs/demo-data/eval.jsonl
                printf '%s' '{"prompt_token_ids": [1, 2, 3], "max_tokens": 4, "stop": ["a", "b"], "id": 7, "seed": 9}' > "$O/corpus/$t/ids" ;;
        ckpt) seed $t tests/fuzz/seeds/ckpt/* ;;
        adaptercfg) seed $t tests/golden/fixtures/*/adapters/*/adapter_config.json ;;
        tokjson) seed $t tests/tok/tiny/tokenizer.json tests/golden/fixtures/llama3/model/tokenizer.json ;;
        tokenize) seed $t; lines $t jobs/demo-data/questions.jsonl
                  printf 'caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd <|begin_of_text|>  \t\r\n 12345 \xf0\x9f\x98\x80' > "$O/corpus/$t/mixed" ;;
        *) bad "unknown target $t"; continue ;;
    esac
    bin=$O/fuzz_$t
    def=FUZZ_$(echo "$t" | tr '[:lower:]' '[:upper:]')
    if [ ! -f "$bin" ] || [ tests/fuzz/fuzz_parsers.c -nt "$bin" ] || [ -n "$(find "$O/obj" -name '*.o' -newer "$bin" | head -1)" ]; then
        if ! "$CC" $CFLAGS -fsanitize=fuzzer -D"$def" tests/fuzz/fuzz_parsers.c "${objs[@]}" $LIBS -o "$bin" > "$O/build_$t.log" 2>&1; then
            bad "fuzz_$t: does not build ($(tail -1 "$O/build_$t.log"))"
            continue
        fi
    fi
    case $t in config | job | record | tokenize | adaptercfg) max=8192 ;; ckpt) max=16384 ;; *) max=65536 ;; esac
    LB_FUZZ_TOKENIZER=$ROOT/tests/golden/fixtures/llama3/model LB_FUZZ_FIXTURE=$ROOT/tests/golden/fixtures/llama3 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" -max_total_time="$SEC" -timeout=10 -rss_limit_mb=2048 -max_len=$max -print_final_stats=1 \
        -artifact_prefix="$O/artifacts/$t-" "$O/corpus/$t" > "$O/$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$O/$t.log" | tail -1)
    if [ $rc -eq 0 ]; then
        ok "fuzz_$t: ${runs:-?} inputs in ${SEC} s, no crash, leak or hang"
    else
        bad "fuzz_$t: exit $rc after ${runs:-?} inputs; see $O/$t.log and $O/artifacts/"
        grep -E "ERROR|SUMMARY|runtime error|fuzz_tokenize|abort" "$O/$t.log" | head -8
    fi
done
echo "RESULT $n_pass $n_fail $n_skip"
[ $n_fail -eq 0 ]
