#!/usr/bin/env bash
# gpu_all.sh — the GPU test tier and the issue-5 benchmarks, in one device call that builds
# nothing. From the repository root, after ./build.sh gpu-bundle here (binaries in .gpu/):
#   BUDGET=540 tests/gpu_all.sh [STEP...]      (default: every step below, in this order)
# Steps, each bounded by what is left of BUDGET (seconds, default 540); results in $OUT (else
# /tmp/lb-gpu): summary.txt and all.tgz (every log); exit 1 when a test step failed.
#   ops      every op on CUDA against the CPU backend (tests/unit/test_ops.c), in full
#   golden   the fixture models against Hugging Face on CUDA (greedy tokens identical up to the
#            first reference near-tie; decode steps as CUDA graphs, the default), without graphs
#            (LB_GRAPHS=0), with the hybrid dense path forced to split the fixtures' small steps
#            (LB_CUDA_LORA_DENSE_MIN_ROWS=16, dense strict), and again with LB_LORA_SET_MIN_TOK=1 (LoRA before its
#            projection on every step it applies to), with LB_CUDA_COPY_STREAM=0 (adapter copies on
#            the compute stream; the copy stream is the default) and with LB_LORA_SET_MIN_TOK=1
#            LB_CUDA_LORA_DENSE=1 (every set-mode LoRA op through the dense cuBLAS path, strict: an
#            op it cannot take fails the test), and that once more with LB_CUDA_LORA_DENSE_HILO=1
#            (v as a hi/lo pair) and with LB_CUDA_LORA_DENSE_CACHE=2048 (the gather cache; these
#            two reported only), and with LB_LORA_ACT=2 (gate/up's LoRA and SwiGLU as one op on
#            every step)
#   demo     the demo job on CUDA against the CPU backend by the same rule (gpu_demo_compare.py)
#   fault    a device fault mid-run on CUDA: exit 5, checkpoint, resume (tests/cli/device_fault.sh)
#   elem     element-wise kernels, scalar (LB_CUDA_ELEM=1) vs the default 16-byte v2 (lora_bench
#            --elem-only); when v2 is not faster on all three, the steps after it use the scalar ones
#   lora     LoRA op timings (lora_bench --lora-only), segmented kernels (v3), and in set mode
#            (LB_BENCH_LORA_SET=1, with the projections after them: set+proj) the segmented
#            kernels vs the dense cuBLAS path,
#            and the segmented ones under each LB_CUDA_LORA_SPLIT of LORA_SPLITS (e.g. "4 2") and
#            each LB_CUDA_LORA_ASYNC of LORA_ASYNCS (e.g. "0") and each setting of LORA_OPTS
#            (e.g. "LB_CUDA_LORA_SPLIT=4"); LORA_SET=0 skips set mode
#   attn     attention kernel timings (lora_bench --attn-only), LB_CUDA_ATTN=4 (v4 tensor-core
#            decode) and the default (v5: one warp per item where no KV split is needed, else v4),
#            then each setting of ATTN_OPTS (e.g. "lean:LB_CUDA_ATTN_DEC_LEAN=1,LB_CUDA_ATTN_PREFILL=4")
#   bench    workloads 2 and 1 (bench/gpu_bench.sh), the per-op GPU profile, workload 1 under
#            each setting of W1_VARIANTS (default none; e.g. "ddc:LB_LORA_SET_MIN_TOK=1,
#            LB_CUDA_LORA_DENSE=1,LB_CUDA_LORA_DENSE_CACHE=3072"); leaves
#            W3_RESERVE seconds, default 240, for w3, and QUICK_RESERVE, default 120, for quick)
#   w3       workload 3: 256 adapters, Zipf, 32 slots (bench/gpu_bench_w3.sh); W3_LIMIT caps its
#            seconds, W3_ENV (e.g. LB_CUDA_LORA_DENSE=0) sets the environment of its run
#   quick    a quarter of workloads 2 and 1 (256 requests), then workload 1 under each opt-in path
#            (QUICK_VARIANTS, default: segmented LoRA only, scalar element-wise kernels, the v3 decode attention, GEMM tuning; QUICK_W2_VARIANTS for the
#            base model): an A/B in ~20 s a run (not in the default list)
#   sanitize the op tests' small set under compute-sanitizer memcheck and racecheck (not in the
#            default list: name it)
#   ops_small the op tests' small set (a quick correctness pass before timing; not in the default
#            list), its LoRA cases with LB_CUDA_LORA_PDL=0 (OPS_PDL=0 skips), then with
#            LB_CUDA_COPY_STREAM=0, LB_CUDA_LORA_ASYNC=0, and LB_CUDA_LORA_DENSE_HILO=1 (reported
#            only; OPS_SMALL_EXTRA=0 skips these three)
#   ops_attn every attention case under every attention variant (not in the default list)
#   pick     the fixture goldens under each opt-in of PICK alone ("name:VAR=VAL[,VAR=VAL][:EXPORT]
#            ..."); the settings of those that pass (or EXPORT, VAR=VAL[,...]) are exported for the
#            steps after it (not in the default list)
#   ncu      Nsight Compute on one decode-attention launch of lora_bench --attn-only (speed of light,
#            memory, warp stalls, occupancy; not in the default list)
# The device machines have no zstd program: the scripts read outputs with `lorabatch cat`.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# ./build.sh gpu-bundle carries the binaries as one archive (the carry limit is 64 MiB)
[ -f .gpu/bin.tgz ] && { tar xzf .gpu/bin.tgz -C .gpu || { echo "cannot unpack .gpu/bin.tgz"; exit 1; }; }
O=${OUT:-/tmp/lb-gpu}
L=/tmp/lb-gpu-logs
B=.gpu/lorabatch
mkdir -p "$O" "$L"
T0=$(date +%s)
S=$O/summary.txt
fail=0
left() { echo $((${BUDGET:-540} - ($(date +%s) - T0))); }
say() { echo "$*" | tee -a "$S"; }
step() { # name limit cmd...
    local name=$1 lim=$2 l s rc
    shift 2
    l=$(left)
    if [ "$l" -lt 10 ]; then say "SKIP $name (no time left)"; return 1; fi
    [ "$lim" -gt "$l" ] && lim=$l
    s=$(date +%s)
    timeout "$lim" "$@" >"$L/$name" 2>&1
    rc=$?
    say "step $name rc=$rc $(($(date +%s) - s))s"
    return $rc
}
tested() { "$@" || fail=1; } # a test step: its failure fails the call
finish() { tar czf "$O/all.tgz" --exclude=./bench/w3/work --exclude="*.safetensors" -C "$L" . 2>/dev/null; say "total $(($(date +%s) - T0))s"; }
trap finish EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$S"
export LB_FIXTURES=$ROOT/tests/golden/fixtures

do_ops() {
    tested step test_ops.log 150 .gpu/test_ops
    grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops.log" | head -30 | tee -a "$S"
}
do_ops_small() {
    LB_OPS_SMALL=1 tested step test_ops_small.log 60 .gpu/test_ops
    grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops_small.log" | head -30 | tee -a "$S"
    # the LoRA cases with the segmented pair as ordinary launches (LB_CUDA_LORA_PDL=0; the default on
    # Hopper is programmatic dependent launches; OPS_PDL=0 skips)
    if [ "${OPS_PDL:-1}" != 0 ]; then
        LB_OPS_SMALL=1 LB_OPS_FILTER=lora LB_CUDA_LORA_PDL=0 tested step test_ops_nopdl.log 40 .gpu/test_ops
        grep -E '^RESULT|check failed|^FAIL' "$L/test_ops_nopdl.log" | head -10 | sed 's/^/lora-no-pdl /' | tee -a "$S"
    fi
    [ "${OPS_SMALL_EXTRA:-1}" = 0 ] && return # only the main pass
    # the LoRA cases again with adapter copies on the compute stream (LB_CUDA_COPY_STREAM=0)
    LB_OPS_SMALL=1 LB_OPS_FILTER=lora LB_CUDA_COPY_STREAM=0 tested step test_ops_cstream.log 40 .gpu/test_ops
    grep -E '^RESULT|check failed|^FAIL' "$L/test_ops_cstream.log" | head -10 | sed 's/^/no-copy-stream /' | tee -a "$S"
    # and with the LoRA shrink's older staging (LB_CUDA_LORA_ASYNC=0; the default is cp.async)
    LB_OPS_SMALL=1 LB_OPS_FILTER=lora LB_CUDA_LORA_ASYNC=0 tested step test_ops_async0.log 40 .gpu/test_ops
    grep -E '^RESULT|check failed|^FAIL' "$L/test_ops_async0.log" | head -10 | sed "s/^/lora-async-0 /" | tee -a "$S"
    # other LoRA paths, reported only: the dense path's v as a hi/lo pair (LB_CUDA_LORA_DENSE_HILO=1)
    for v in LB_CUDA_LORA_DENSE_HILO=1; do
        LB_OPS_SMALL=1 LB_OPS_FILTER=lora timeout 40 env "$v" .gpu/test_ops >"$L/test_ops_opt_${v//=/_}.log" 2>&1
        say "opt-in $v: $(grep -E '^RESULT|check failed|^FAIL' "$L/test_ops_opt_${v//=/_}.log" | head -5 | tr '\n' ' ')"
    done
}
do_ncu() {
    if ! command -v ncu >/dev/null 2>&1; then say "SKIP ncu: no ncu"; return; fi
    step ncu_attn.txt 90 ncu --clock-control none --kernel-name "regex:${NCU_KERNEL:-k_attn_decode}" --launch-skip 3 \
        --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section Occupancy --section LaunchStats --section SchedulerStats .gpu/lora_bench --attn-only
    grep -E 'Throughput|Duration|Stall|Occupancy|Registers|Shared Memory|Warp Cycles|Issued|Eligible|Active Warps|Block Limit|Hit Rate' \
        "$L/ncu_attn.txt" | head -60 | tee -a "$S"
    # the first decode LoRA case of lora_bench (qkv, 16 x 16 tokens, r16): shrink and expand
    step ncu_lora.txt 90 ncu --clock-control none --kernel-name "regex:k_lora_(shrink_tc|expand_v3)" --launch-skip 6 \
        --launch-count 4 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
        .gpu/lora_bench --lora-only
    grep -E 'k_lora|Duration|Throughput|Grid Size|Registers|Achieved Occupancy|Stall' "$L/ncu_lora.txt" | head -60 | tee -a "$S"
}
do_golden() {
    LB_CUDA_STATS=1 LB_GOLDEN_DEVICE=cuda tested step test_golden.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL|step graphs|recording' "$L/test_golden.log" | head -24 | tee -a "$S"
    # decode steps as ops, unpadded (the default records them as CUDA graphs and replays them)
    LB_GRAPHS=0 LB_GOLDEN_DEVICE=cuda tested step test_golden_nograph.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_nograph.log" | head -20 | sed 's/^/no-graphs /' | tee -a "$S"
    LB_LORA_SET_MIN_TOK=1 LB_GOLDEN_DEVICE=cuda tested step test_golden_setfirst.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_setfirst.log" | head -20 | sed 's/^/set-first /' | tee -a "$S"
    # gate/up's LoRA op with the SwiGLU (LB_LORA_ACT; the default 1 covers decode steps above):
    # on every LoRA step, set-first ones included (2)
    LB_LORA_ACT=2 LB_GOLDEN_DEVICE=cuda tested step test_golden_act2.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_act2.log" | head -20 | sed 's/^/act-2 /' | tee -a "$S"
    LB_CUDA_COPY_STREAM=0 LB_GOLDEN_DEVICE=cuda tested step test_golden_cstream.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_cstream.log" | head -20 | sed 's/^/no-copy-stream /' | tee -a "$S"
    # the dense LoRA path (set mode only; the default on steps of >= 1024 tokens): LoRA before its
    # projection on every step that allows it (LB_LORA_SET_MIN_TOK=1), those ops on the dense path
    # (strict)
    LB_CUDA_LORA_DENSE_MIN_ROWS=0 LB_LORA_SET_MIN_TOK=1 LB_CUDA_LORA_DENSE=1 LB_CUDA_LORA_DENSE_STRICT=1 LB_GOLDEN_DEVICE=cuda tested step test_golden_dense.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_dense.log" | head -20 | sed 's/^/dense /' | tee -a "$S"
    # the hybrid (LB_CUDA_LORA_DENSE_MIN_ROWS, default 128: slots with fewer rows go to the segmented
    # kernels; the fixtures' steps are small, so at 16 rows some slots are dense, some not; the
    # statistics count the split)
    LB_CUDA_STATS=1 LB_CUDA_LORA_DENSE_MIN_ROWS=16 LB_LORA_SET_MIN_TOK=1 LB_CUDA_LORA_DENSE=1 LB_CUDA_LORA_DENSE_STRICT=1 LB_GOLDEN_DEVICE=cuda tested step test_golden_hybrid.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL|left slots' "$L/test_golden_hybrid.log" | head -24 | sed 's/^/hybrid /' | tee -a "$S"
    # the dense path in row groups of about 8 rows (LB_CUDA_LORA_DENSE_GROUP_ROWS, opt-in), with the
    # hybrid; the statistics count the grouped ops
    LB_CUDA_STATS=1 LB_CUDA_LORA_DENSE_GROUP_ROWS=8 LB_CUDA_LORA_DENSE_MIN_ROWS=16 LB_LORA_SET_MIN_TOK=1 LB_CUDA_LORA_DENSE=1 LB_CUDA_LORA_DENSE_STRICT=1 LB_GOLDEN_DEVICE=cuda tested step test_golden_groups.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL|row groups' "$L/test_golden_groups.log" | head -24 | sed 's/^/groups /' | tee -a "$S"
    # the segmented LoRA pair as ordinary launches (LB_CUDA_LORA_PDL=0; the default on Hopper is
    # programmatic dependent launches, which the passes above run, decode steps as graphs with them)
    LB_CUDA_LORA_PDL=0 LB_GOLDEN_DEVICE=cuda tested step test_golden_nopdl.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_nopdl.log" | head -24 | sed 's/^/no-pdl /' | tee -a "$S"
    # the same with the dense path's v as a hi/lo pair (LB_CUDA_LORA_DENSE_HILO=1, the default of
    # runs 11-26: reported, a failure does not fail the call)
    LB_CUDA_LORA_DENSE_MIN_ROWS=0 LB_CUDA_LORA_DENSE_HILO=1 LB_LORA_SET_MIN_TOK=1 LB_CUDA_LORA_DENSE=1 LB_CUDA_LORA_DENSE_STRICT=1 LB_GOLDEN_DEVICE=cuda step test_golden_hilo.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_hilo.log" | head -20 | sed 's/^/dense-hilo /' | tee -a "$S"
    # and with the dense path's gather cache (LB_CUDA_LORA_DENSE_CACHE=MiB, opt-in: reported only)
    LB_CUDA_LORA_DENSE_MIN_ROWS=0 LB_CUDA_LORA_DENSE_CACHE=2048 LB_LORA_SET_MIN_TOK=1 LB_CUDA_LORA_DENSE=1 LB_CUDA_LORA_DENSE_STRICT=1 LB_GOLDEN_DEVICE=cuda step test_golden_dcache.log 60 .gpu/test_golden
    grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_dcache.log" | head -20 | sed 's/^/dense-cache /' | tee -a "$S"
}
do_demo() {
    tested step demo_cuda.log 60 $B run jobs/demo.yaml --restart --device cuda
    grep -E 'KV cache|done:' "$L/demo_cuda.log" | tee -a "$S"
    rm -rf /tmp/demo-cuda && cp -r build/demo-out /tmp/demo-cuda
    tested step demo_cpu.log 60 $B run jobs/demo.yaml --restart --device cpu
    tested step demo_compare.txt 60 python3 tests/gpu_demo_compare.py $B jobs/demo.yaml /tmp/demo-cuda build/demo-out
    tail -4 "$L/demo_compare.txt" | tee -a "$S"
    rm -rf "$L/demo-out-cuda" "$L/demo-out-cpu"
    cp -r /tmp/demo-cuda "$L/demo-out-cuda" && cp -r build/demo-out "$L/demo-out-cpu"
}
do_fault() {
    LB_BIN=$ROOT/$B LB_DEVICE=cuda tested step device_fault.txt 90 bash tests/cli/device_fault.sh
    grep -E '^RESULT|^FAIL|^info' "$L/device_fault.txt" | tee -a "$S"
}
do_elem() {
    step elem1.txt 30 env LB_CUDA_ELEM=1 .gpu/lora_bench --elem-only
    step elem2.txt 30 .gpu/lora_bench --elem-only
    grep -h '^elem' "$L/elem1.txt" | sed 's/^/v1 /' | tee -a "$S"
    grep -h '^elem' "$L/elem2.txt" | sed 's/^/v2 /' | tee -a "$S"
    if python3 - "$L/elem1.txt" "$L/elem2.txt" <<'PY'
import re, sys
t = [[float(m[1]) for m in re.finditer(r"^elem .*?([\d.]+) us", open(f).read(), re.M)] for f in sys.argv[1:]]
sys.exit(0 if len(t[0]) == 3 and len(t[1]) == 3 and all(b < 0.95 * a for a, b in zip(*t)) else 1)
PY
    then
        say "element-wise v2 (default) faster on all three"
    else
        export LB_CUDA_ELEM=1
        say "element-wise v2 not faster on all three: the steps after this run with LB_CUDA_ELEM=1"
    fi
}
do_attn() { # the v4 decode, then the default (v5 where it needs no KV split), for the A/B
    step attn.txt 30 env LB_CUDA_ATTN=4 .gpu/lora_bench --attn-only
    grep -h '^attn' "$L/attn.txt" | sed 's/^/v4 /' | tee -a "$S"
    step attn_v5.txt 30 .gpu/lora_bench --attn-only
    grep -h '^attn' "$L/attn_v5.txt" | sed 's/^/v5 /' | tee -a "$S"
    # ATTN_OPTS="name:VAR=value,VAR=value ...": the timings again under each setting
    for v in ${ATTN_OPTS:-}; do
        step "attn_${v%%:*}.txt" 30 env $(echo "${v#*:}" | tr , ' ') .gpu/lora_bench --attn-only
        grep -h '^attn' "$L/attn_${v%%:*}.txt" | sed "s/^/${v%%:*} /" | tee -a "$S"
    done
}
do_lora() { # LoRA op timings (lora_bench --lora-only): the default v3 kernels, then set mode on the
    # v3 kernels and on the dense cuBLAS path
    step lora_seg.txt 40 env LB_CUDA_LORA_DENSE=0 .gpu/lora_bench --lora-only
    if [ "${LORA_SET:-1}" != 0 ]; then # LORA_SET=0: skip the set-mode timings
        step lora_dense.txt 40 env LB_BENCH_LORA_SET=1 LB_CUDA_LORA_DENSE=1 .gpu/lora_bench --lora-only
        step lora_seg_set.txt 40 env LB_BENCH_LORA_SET=1 LB_CUDA_LORA_DENSE=0 .gpu/lora_bench --lora-only
    fi
    # the segmented kernels under the other staging mode: LORA_ASYNCS="0" (LB_CUDA_LORA_ASYNC)
    for m in ${LORA_ASYNCS:-}; do
        step "lora_async$m.txt" 40 env LB_CUDA_LORA_DENSE=0 LB_CUDA_LORA_ASYNC=$m .gpu/lora_bench --lora-only
        grep -h ' r=' "$L/lora_async$m.txt" | sed "s/^/async$m /" | tee -a "$S"
    done
    # the segmented kernels under other settings: LORA_OPTS="VAR=value ..." (e.g. LB_CUDA_LORA_ASYNC=0)
    for v in ${LORA_OPTS:-}; do
        step "lora_opt_${v//=/_}.txt" 40 env LB_CUDA_LORA_DENSE=0 "$v" .gpu/lora_bench --lora-only
        grep -h ' r=' "$L/lora_opt_${v//=/_}.txt" | sed "s/^/$v /" | tee -a "$S"
    done
    # fewer K splits of the shrink (fewer v planes for the expand to sum): LB_CUDA_LORA_SPLIT
    for sp in ${LORA_SPLITS:-}; do
        step "lora_split$sp.txt" 40 env LB_CUDA_LORA_DENSE=0 LB_CUDA_LORA_SPLIT=$sp .gpu/lora_bench --lora-only
        grep -h ' r=' "$L/lora_split$sp.txt" | sed "s/^/split$sp /" | tee -a "$S"
    done
    grep -h ' r=' "$L/lora_seg.txt" | sed 's/^/seg   /' | tee -a "$S"
    [ -f "$L/lora_seg_set.txt" ] && grep -h ' r=' "$L/lora_seg_set.txt" | sed 's/^/seg-set /' | tee -a "$S"
    [ -f "$L/lora_dense.txt" ] && grep -h ' r=' "$L/lora_dense.txt" | sed 's/^/dense-set /' | tee -a "$S"
}
do_ops_attn() { # every attention case under every attention variant (the decode kernels' full check)
    LB_OPS_FILTER=attn,kv_write tested step test_ops_attn.log 120 .gpu/test_ops
    grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops_attn.log" | head -30 | tee -a "$S"
}
do_bench() {
    local l reserve=0
    l=$(left)
    case " $STEPS " in *" w3 "*) reserve=${W3_RESERVE:-240} ;; esac
    case " $STEPS " in *" quick "*) reserve=$((reserve + ${QUICK_RESERVE:-120})) ;; esac
    W1_VARIANTS=${W1_VARIANTS-} PEER=${PEER:-0} PROFILE=${PROFILE:-1} \
        step gpu_bench.txt $((l - reserve)) bench/gpu_bench.sh $B "$L/bench"
    tail -12 "$L/gpu_bench.txt" | tee -a "$S"
    grep -h '^cuda profile' "$L/bench/w1_profile.log" 2>/dev/null | head -40 | tee -a "$S"
}
do_w3() {
    local l
    l=$(($(left) - 5))
    [ -n "${W3_LIMIT:-}" ] && [ "$W3_LIMIT" -lt "$l" ] && l=$W3_LIMIT
    step gpu_bench_w3.txt $l env ${W3_ENV:-} bench/gpu_bench_w3.sh $B "$L/bench/w3"
    tail -4 "$L/gpu_bench_w3.txt" | tee -a "$S"
}
do_quick() { # the opt-in paths A/B'd on a quarter of workloads 2 and 1 (QUICK: 256 requests)
    local l
    l=$(left)
    PEER=0 PROFILE=0 W2_VARIANTS=${QUICK_W2_VARIANTS:-} \
        W1_VARIANTS=${QUICK_VARIANTS-"seg:LB_CUDA_LORA_DENSE=0 elem1:LB_CUDA_ELEM=1 attn3:LB_CUDA_ATTN=3 tune:LB_CUDA_GEMM_TUNE=1"} \
        step gpu_bench_quick.txt $((l - 5)) bench/gpu_bench.sh $B "$L/bench_quick" quick
    grep -E '^w[12]_|^(workload|w[12]_[a-z0-9_]+) +[0-9]' "$L/gpu_bench_quick.txt" | tail -14 | sed 's/^/quick /' | tee -a "$S"
}
do_pick() { # the fixture goldens under each opt-in alone (PICK: "name:VAR=VAL[,VAR=VAL] ..."); the
    # settings of those that pass are exported for the steps after (the benchmarks then run with them)
    # "name:TEST_ENV:EXPORT_ENV" tests under TEST_ENV and exports EXPORT_ENV when it passes
    local v name rest envs exp
    for v in ${PICK:-}; do
        name=${v%%:*}
        rest=${v#*:}
        envs=${rest%%:*}
        exp=${rest#*:}
        envs=${envs//,/ }
        exp=${exp//,/ }
        if step "golden_$name.log" 60 env $envs LB_GOLDEN_DEVICE=cuda .gpu/test_golden; then
            export $exp
            say "pick $name: golden passes; exported $exp"
        else
            say "pick $name: golden FAILS; not used"
        fi
        grep -E 'greedy|^RESULT|check failed' "$L/golden_$name.log" | head -12 | sed "s/^/$name /" | tee -a "$S"
    done
}
do_sanitize() {
    local tool
    if ! command -v compute-sanitizer >/dev/null 2>&1; then say "SKIP sanitize: no compute-sanitizer"; return; fi
    for tool in memcheck racecheck; do
        LB_OPS_SMALL=1 tested step "sanitize_$tool.txt" 120 compute-sanitizer --tool $tool --error-exitcode 3 .gpu/test_ops
        grep -E 'ERROR SUMMARY|^RESULT' "$L/sanitize_$tool.txt" | tee -a "$S"
    done
}
STEPS=${*:-ops golden demo fault elem attn bench w3}
for st in $STEPS; do
    case $st in
        ops | ops_small | ops_attn | golden | pick | demo | fault | elem | attn | lora | ncu | bench | w3 | quick | sanitize) "do_$st" ;;
        *) say "unknown step $st (ops ops_small ops_attn golden pick demo fault elem attn lora ncu bench w3 quick sanitize)"; fail=1 ;;
    esac
done
exit $fail
