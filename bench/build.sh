#!/usr/bin/env bash
# bench/build.sh — builds the kernel benchmarks against the objects of ./build.sh (run that first).
#   bench/build.sh   ->  build/bench/lora_bench
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
LIBDIR=/usr/lib/$(gcc -print-multiarch)
mkdir -p "$OUT/bench"
objs=()
for o in "$OUT"/obj/*.o; do [ "$(basename "$o")" = main.o ] || objs+=("$o"); done
set -x
gcc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc -c bench/lora_bench.c -o "$OUT/bench/lora_bench.o"
gcc -o "$OUT/bench/lora_bench" "$OUT/bench/lora_bench.o" "${objs[@]}" \
    "$LIBDIR/libzstd.a" "$LIBDIR/libyaml.a" "$LIBDIR/libjansson.a" "$LIBDIR/libpcre2-8.a" "$LIBDIR/libutf8proc.a" \
    "$CUDA_HOME/lib64/libcudart_static.a" -lrt -lstdc++ -lm -ldl -lpthread
