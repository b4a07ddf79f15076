#!/usr/bin/env bash
# Run 34 (one device call, after ./build.sh gpu-bundle; ~585 s; ninth session): the op tests' small
# set (test_lora_act: the fused gate/up + SwiGLU op against the CPU, which run 33 skipped), the
# goldens (default LB_LORA_ACT=1 and a pass at 2), workloads 2 and 1 with workload 1 A/B'd against
# LB_LORA_ACT=0 twice, interleaved (run 33: act 23,546 against 23,300 without, while lora_bench had
# the fused op 3% slower than the two ops it replaces at workload 1's decode shape: one sample each
# could not tell), then workload 3 in full under the defaults (its ratio to workload 1).
set -u
OUT=${OUT:-/tmp/lb-gpu}
W1_VARIANTS="noact:LB_LORA_ACT=0 act1b:LB_LORA_ACT=1 noact2:LB_LORA_ACT=0" W3_RESERVE=285 MAX_SEQS=512 PEER=0 \
    PROFILE=0 BUDGET=${BUDGET:-590} tests/gpu_all.sh ops_small golden bench w3
rc=$?
mkdir -p "$OUT/bench"
cp /tmp/lb-gpu-logs/bench/*.json "$OUT/bench/" 2>/dev/null
cp /tmp/lb-gpu-logs/bench/w3/*.json "$OUT/bench/" 2>/dev/null
exit $rc
