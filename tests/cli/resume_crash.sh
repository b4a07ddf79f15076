#!/usr/bin/env bash
# Crash test: kill -9 the run at 20 random moments (checkpoints every 20 ms, so many kills
# land inside a commit), resume each time; the final decompressed outputs must be
# byte-identical to an uninterrupted run's, every record exactly once.
. "$(dirname "$0")/lib.sh"
make_job "$T/ref" 300 150 100
cp -r "$T/ref" "$T/crash"
sed -i 's/interval_s: 0.05/interval_s: 0.02/; s/max_seqs: 6/max_seqs: 2/; s/max_tokens: 10/max_tokens: 60/' "$T/ref/job.yaml" "$T/crash/job.yaml"
( cd "$T/ref" && "$BIN" run job.yaml > run.log 2>&1 ); rc=$?
check "reference run exits 0" [ $rc -eq 0 ]
ref=$(dump_outputs "$T/ref/out" | md5sum)
# how long an uninterrupted run takes, to spread the kills over it
t0=$(date +%s%N); ( cd "$T/ref" && "$BIN" run job.yaml --restart > /dev/null 2>&1 ); t1=$(date +%s%N)
span_ms=$(( (t1 - t0) / 1000000 ))
[ $span_ms -lt 50 ] && span_ms=50
check "restart reproduces the reference" [ "$(dump_outputs "$T/ref/out" | md5sum)" = "$ref" ]
cd "$T/crash"
RANDOM=12345
kills=0 resumed=0
for i in $(seq 1 20); do
    "$BIN" run job.yaml > "run$i.log" 2>&1 &
    pid=$!
    sleep "$(awk -v ms=$((5 + RANDOM % (span_ms / 12 + 1))) 'BEGIN{printf "%.3f", ms/1000}')"
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null
    grep -q "resuming from the checkpoint" "run$i.log" && resumed=$((resumed + 1))
done
"$BIN" run job.yaml > final.log 2>&1; rc=$?
check "final resume exits 0 (rc $rc)" [ $rc -eq 0 ]
check "at least 10 of 20 kills hit a running process ($kills)" [ $kills -ge 10 ]
check "runs resumed from checkpoints ($resumed)" [ $resumed -ge 5 ]
check "outputs byte-identical to the uninterrupted run" [ "$(dump_outputs out | md5sum)" = "$ref" ]
check "every record exactly once" python3 -c "
import json, subprocess, glob
for f in glob.glob('out/*.jsonl.zst'):
    lines = subprocess.run(['zstd','-dc',f],capture_output=True).stdout.decode().splitlines()
    idx = [json.loads(l)['index'] for l in lines]
    assert idx == list(range(len(idx))), f
    shard = f.split('/')[-1].split('.')[0]
    assert len(idx) == sum(1 for _ in open(f'data/{shard}.jsonl')), f
"
finish
