#!/usr/bin/env bash
# build.sh — the one entry point.
#   ./build.sh [release]   build/lorabatch (CUDA backend linked in when nvcc is found)
#   ./build.sh debug       build/debug/lorabatch (-O0 -g, asserts)
#   ./build.sh asan        build/asan/lorabatch + tests under ASan+UBSan (CPU only), runs the CPU tests
#   ./build.sh test        release build, then every CPU test; last line "N passed, N failed, N skipped"
#   ./build.sh gpu-bundle  build + copy the binary, test_ops, test_golden and lora_bench into .gpu/ (carried to the device; tests/gpu_all.sh runs them)
#   ./build.sh demo        release build, then run jobs/demo.yaml
# Missing Debian -dev packages are installed with apt-get when run as root; otherwise the
# exact apt-get line is printed and the script stops.
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-release}
shift || true
JOBS=$(nproc 2>/dev/null || echo 2)

say() { echo "+ $*" >&2; }
run() { say "$@"; "$@"; }

# ---------------------------------------------------------------- dependencies
PKGS=(gcc make libzstd-dev libyaml-dev libjansson-dev libpcre2-dev libutf8proc-dev zstd python3)
need=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        run apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "build.sh: missing packages; run: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
fi
LIBDIR=/usr/lib/$(gcc -print-multiarch)
STATIC_LIBS="$LIBDIR/libzstd.a $LIBDIR/libyaml.a $LIBDIR/libjansson.a $LIBDIR/libpcre2-8.a $LIBDIR/libutf8proc.a"

# ---------------------------------------------------------------- toolchain
NVCC=""
if [ -z "${LB_NO_CUDA:-}" ]; then
    if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc)
    elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
fi
CUDA_HOME=${CUDA_HOME:-$( [ -n "$NVCC" ] && dirname "$(dirname "$NVCC")" || echo /usr/local/cuda)}

ARCH_FLAGS="-march=x86-64-v2"
grep -q ' avx2 ' /proc/cpuinfo && grep -q ' fma ' /proc/cpuinfo && ARCH_FLAGS="-march=x86-64-v3"
# -std=c11 (not gnu11) keeps -ffp-contract=off: no silent FMA contraction, results are reproducible.
# snprintf truncation of diagnostics is deliberate (bounded messages): -Wno-format-truncation.
CFLAGS_COMMON="-std=c11 -Wall -Wextra -Werror -Wno-format-truncation -D_GNU_SOURCE -pthread -MMD -MP -Isrc"
case "$MODE" in
    release|test|demo|gpu-bundle|bench) OUT=build; CFLAGS="$CFLAGS_COMMON -O3 $ARCH_FLAGS -DNDEBUG -g" ;;
    debug) OUT=build/debug; CFLAGS="$CFLAGS_COMMON -O0 -g" ;;
    asan) OUT=build/asan; NVCC=""; CFLAGS="$CFLAGS_COMMON -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" ;;
    *) echo "build.sh: unknown mode '$MODE' (release|debug|asan|test|demo|gpu-bundle|bench)" >&2; exit 2 ;;
esac
LDFLAGS=""
[ "$MODE" = asan ] && LDFLAGS="-fsanitize=address,undefined"

if [ -n "$NVCC" ] && [ ! -f gpu/backend_cuda.cu ]; then
    say "CUDA: nvcc found but gpu/backend_cuda.cu is missing: CPU-only build"
    NVCC=""
fi
if [ -n "$NVCC" ]; then
    say "CUDA: $NVCC (sm_80, sm_89, sm_90a + PTX)"
    CFLAGS="$CFLAGS -DLB_HAVE_CUDA"
else
    [ -f gpu/backend_cuda.cu ] && say "CUDA: nvcc not found (or LB_NO_CUDA set): CPU-only build"
fi

mkdir -p "$OUT/obj" "$OUT/tests"
# objects built with other flags are stale
if [ "$(cat "$OUT/obj/.flags" 2>/dev/null)" != "$CFLAGS $NVCC" ]; then
    rm -rf "$OUT"/obj/*.o "$OUT"/obj/*.d "$OUT"/tests/*
    echo "$CFLAGS $NVCC" > "$OUT/obj/.flags"
fi

# ---------------------------------------------------------------- compile
objs=()
pids=()
compile_c() { # src obj
    local src=$1 obj=$2
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || deps_newer "$obj"; then
        say gcc -c "$src" -o "$obj"
        gcc $CFLAGS -c "$src" -o "$obj"
    fi
}
deps_newer() { # obj: true if any dependency listed in obj's .d is newer
    local d=${1%.o}.d
    [ -f "$d" ] || return 0
    local f
    for f in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$d" | tr ' ' '\n' | grep -v ':$' | grep -v '^$'); do
        [ -e "$f" ] || return 0
        [ "$f" -nt "$1" ] && return 0
    done
    return 1
}
wait_all() { local p rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; pids=(); return $rc; }

for src in src/*.c; do
    obj="$OUT/obj/$(basename "${src%.c}").o"
    objs+=("$obj")
    compile_c "$src" "$obj" & pids+=($!)
    [ ${#pids[@]} -ge "$JOBS" ] && { wait_all || exit 1; }
done
wait_all || exit 1

cu_objs=()
if [ -n "$NVCC" ]; then
    GENCODE="-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_89,code=sm_89 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90"
    for src in gpu/*.cu; do
        [ -e "$src" ] || continue
        obj="$OUT/obj/$(basename "${src%.cu}").cu.o"
        cu_objs+=("$obj")
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || deps_newer "$obj"; then
            say nvcc -c "$src"
            "$NVCC" -std=c++17 -O3 -lineinfo $GENCODE -Isrc -Igpu -Xcompiler -Wall,-Wextra,-Werror,-fPIC \
                -MMD -MP -c "$src" -o "$obj"
        fi
    done
    LINK_CUDA="-L$CUDA_HOME/lib64 $CUDA_HOME/lib64/libcudart_static.a -lrt -lstdc++"
else
    LINK_CUDA=""
fi

lib_objs=()
for o in "${objs[@]}"; do [ "$(basename "$o")" = main.o ] || lib_objs+=("$o"); done
LINK_TAIL="$STATIC_LIBS $LINK_CUDA -lm -ldl -lpthread"

run gcc $LDFLAGS -o "$OUT/lorabatch" "${objs[@]}" "${cu_objs[@]}" $LINK_TAIL
echo "built $OUT/lorabatch" >&2

# ---------------------------------------------------------------- tests
build_tests() {
    local t bin
    for t in tests/unit/test_*.c; do
        [ -e "$t" ] || continue
        bin="$OUT/tests/$(basename "${t%.c}")"
        if [ ! -f "$bin" ] || [ "$t" -nt "$bin" ] || [ "$OUT/lorabatch" -nt "$bin" ] || deps_newer "$bin.o"; then
            say gcc "$t" -o "$bin"
            gcc $CFLAGS -Itests/unit -c "$t" -o "$bin.o" && gcc $LDFLAGS -o "$bin" "$bin.o" "${lib_objs[@]}" "${cu_objs[@]}" $LINK_TAIL
        fi
    done
}

# Each test program prints "RESULT <passed> <failed> <skipped>" as its last such line; a program
# that prints none counts as one test, passed on exit 0, skipped on exit 77, failed otherwise.
run_tests() {
    local pass=0 fail=0 skip=0 t out rc line
    # scratch folders the unit tests made under LB_TEST_OUT in earlier runs
    find "$OUT/tests" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + 2>/dev/null || true
    export LB_BIN="$PWD/$OUT/lorabatch" LB_TEST_OUT="$PWD/$OUT/tests"
    for t in "$OUT"/tests/test_* tests/cli/*.sh; do
        [ -x "$t" ] || continue
        case "$t" in *.o|*.d) continue ;; esac
        echo "=== $t"
        set +e
        out=$("$t" 2>&1); rc=$?
        set -e
        echo "$out" | tail -n 40
        line=$(echo "$out" | grep -E '^RESULT [0-9]+ [0-9]+ [0-9]+$' | tail -n 1 || true)
        if [ -n "$line" ]; then
            set -- $line
            pass=$((pass + $2)); fail=$((fail + $3)); skip=$((skip + $4))
            if [ $rc -ne 0 ] && [ "$3" = 0 ]; then echo "!!! $t exited $rc"; fail=$((fail + 1)); fi
        elif [ $rc -eq 0 ]; then pass=$((pass + 1))
        elif [ $rc -eq 77 ]; then skip=$((skip + 1))
        else echo "!!! $t exited $rc"; fail=$((fail + 1)); fi
    done
    echo "$pass passed, $fail failed, $skip skipped"
    [ $fail -eq 0 ]
}

case "$MODE" in
    test) build_tests; run_tests ;;
    asan) build_tests; LB_SANITIZED=1 run_tests ;;
    demo) run "$OUT/lorabatch" run jobs/demo.yaml "$@" ;;
    gpu-bundle)
        build_tests
        rm -rf .gpu && mkdir -p .gpu
        cp "$OUT/lorabatch" .gpu/
        # only what the GPU machine runs (each binary carries cudart: keep the bundle small)
        cp "$OUT"/tests/test_ops "$OUT"/tests/test_golden .gpu/
        if [ -n "$NVCC" ]; then bench/build.sh >&2 && cp "$OUT"/bench/lora_bench .gpu/; fi
        strip .gpu/* # symbols stay in build/; the device call carries at most 64 MiB
        # each binary carries the kernels for four GPU targets (~19 MB): carried as one gzip
        # archive, which tests/gpu_all.sh unpacks on the device
        (cd .gpu && files=$(ls) && tar czf bin.tgz $files && rm -f $files)
        du -sh .gpu >&2 ;;
esac
