#!/usr/bin/env bash
# gpu_run7.sh — the one device call of session 7 (about 5 minutes of device time were left):
# verification of this session's changes, then the issue-5 workloads. Builds nothing: run from
# the repository root after ./build.sh gpu-bundle (binaries in .gpu/):
#   tests/ops/gpu_run7.sh        (BUDGET seconds, default 270; everything under $OUT)
# Steps, each bounded by what is left of the budget:
#   1. op tests: attention in full (the decode kernel's page ids are now loaded before its
#      copies), then every op in the small set (LoRA now with set-mode cases, adapter modules
#      through the upload ring; the other kernels are unchanged since run 6's full pass), golden
#      vs HF on CUDA (which now also checks the engine's top-2 margins against the reference's),
#      once more with the LoRA-before-projection order on every step it applies to;
#   2. the demo job on CUDA vs CPU by the golden rule (tests/gpu_demo_compare.py), and its KV
#      sizing line (gpu_memory_fraction);
#   3. a device fault mid-run on CUDA (tests/cli/device_fault.sh with LB_DEVICE=cuda);
#   4. decode attention kernel timing, grid order 0 (default) and 1 (kv heads fastest): the faster
#      by more than 5% is used for the rest of the call;
#   5. workloads 2 and 1 (max_seqs 256, as before), workload 1 again with the old LoRA order
#      (LB_LORA_SET_MIN_TOK=-1) and at max_seqs 512, and a quarter of workload 1 under
#      LB_CUDA_PROFILE=1 (GPU time per op); PEER=0: the peer was measured in run 6's call.
# Output: $OUT/summary.txt and $OUT/all.tgz (every log).
set -u
O=${OUT:-/tmp/run7}
L=/tmp/run7-logs
mkdir -p "$O" "$L"
T0=$(date +%s)
left() { echo $((${BUDGET:-270} - ($(date +%s) - T0))); }
S=$O/summary.txt
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
finish() { tar czf "$O/all.tgz" -C "$L" . 2>/dev/null; say "total $(($(date +%s) - T0))s"; }
trap finish EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$S"

# 1. op tests + golden
LB_OPS_FILTER=attn,kv_write step test_ops_attn.log 40 .gpu/test_ops
grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops_attn.log" | head -20 | tee -a "$S"
LB_OPS_SMALL=1 step test_ops_small.log 60 .gpu/test_ops
grep -E '^[a-z_0-9-]+ +[0-9]+ +[0-9]+ +[0-9]+ |^RESULT|check failed|^FAIL' "$L/test_ops_small.log" | head -30 | tee -a "$S"
LB_FIXTURES=$PWD/tests/golden/fixtures LB_GOLDEN_DEVICE=cuda step test_golden.log 40 .gpu/test_golden
grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden.log" | head -20 | tee -a "$S"
# the LoRA-before-projection order (normally steps of >= 1024 tokens) on every step it applies to
LB_LORA_SET_MIN_TOK=1 LB_FIXTURES=$PWD/tests/golden/fixtures LB_GOLDEN_DEVICE=cuda step test_golden_setfirst.log 40 .gpu/test_golden
grep -E 'greedy|worst|^RESULT|check failed|^FAIL' "$L/test_golden_setfirst.log" | head -20 | sed 's/^/set-first /' | tee -a "$S"

# 2. demo: CUDA vs CPU
step demo_cuda.log 30 .gpu/lorabatch run jobs/demo.yaml --restart --device cuda
grep -E 'KV cache|done:' "$L/demo_cuda.log" | tee -a "$S"
rm -rf /tmp/demo-cuda && cp -r build/demo-out /tmp/demo-cuda
step demo_cpu.log 40 .gpu/lorabatch run jobs/demo.yaml --restart --device cpu --threads 16
step demo_compare.txt 40 python3 tests/gpu_demo_compare.py .gpu/lorabatch jobs/demo.yaml /tmp/demo-cuda build/demo-out
tail -4 "$L/demo_compare.txt" | tee -a "$S"
cp -r /tmp/demo-cuda "$L/demo-out-cuda" && cp -r build/demo-out "$L/demo-out-cpu"

# 3. device fault on CUDA
LB_BIN=$PWD/.gpu/lorabatch LB_DEVICE=cuda step device_fault.txt 45 bash tests/cli/device_fault.sh
grep -E '^RESULT|^FAIL' "$L/device_fault.txt" | tee -a "$S"

# 4. decode attention: grid order 0 vs 1
step attn_order0.txt 20 .gpu/lora_bench --attn-only
step attn_order1.txt 20 env LB_CUDA_ATTN_DEC_ORDER=1 .gpu/lora_bench --attn-only
grep -h '^attn' "$L/attn_order0.txt" | sed 's/^/order0 /' | tee -a "$S"
grep -h '^attn' "$L/attn_order1.txt" | sed 's/^/order1 /' | tee -a "$S"
us() { sed -n 's/^attn *decode  .*q\/seq=1 *\([0-9.]*\) us.*/\1/p' "$1" | head -1; }
u0=$(us "$L/attn_order0.txt"); u1=$(us "$L/attn_order1.txt")
if [ -n "$u0" ] && [ -n "$u1" ] && python3 -c "import sys; sys.exit(0 if $u1 < 0.95 * $u0 else 1)"; then
    export LB_CUDA_ATTN_DEC_ORDER=1
    say "decode 256 x 640: order1 $u1 us < order0 $u0 us: the workloads run with LB_CUDA_ATTN_DEC_ORDER=1"
else
    say "decode 256 x 640: order0 ${u0:-?} us, order1 ${u1:-?} us: the workloads run with the default order"
fi

# 5. workloads
l=$(left)
W1_VARIANTS="old_order:LB_LORA_SET_MIN_TOK=-1 s512:MAX_SEQS=512" PEER=0 PROFILE=1 step gpu_bench.txt $((l - 5)) \
    bench/gpu_bench.sh .gpu/lorabatch "$L/bench"
tail -12 "$L/gpu_bench.txt" | tee -a "$S"
grep -h '^cuda profile' "$L/bench/w1_profile.log" 2>/dev/null | head -40 | tee -a "$S"
