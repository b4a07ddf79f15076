#!/usr/bin/env bash
# End-to-end job on the fixture model: fan-out, base + adapters, per-record overrides,
# error lines, summary, status, re-run no-op, changed job refused, --restart.
. "$(dirname "$0")/lib.sh"
make_job "$T/j" 20 12 9
# bad records in shard c: invalid JSON, unknown field, messages, out-of-vocab id, empty line, invalid UTF-8
{
    echo '{"prompt": "ok one"}'
    echo '{"prompt": "unterminated'
    echo '{"prompt": "x", "temprature": 0.5}'
    echo '{"messages": [{"role": "user", "content": "hi"}]}'
    echo '{"prompt_token_ids": [1, 999999]}'
    echo ''
    printf '{"prompt": "bad \xff utf8"}\n'
    echo '{"prompt": "stop here", "stop": ["the"], "max_tokens": 30, "temperature": 1.0, "seed": 5}'
} >> "$T/j/data/c.jsonl"
cd "$T/j"
"$BIN" plan job.yaml > plan.txt 2>&1; rc=$?
check "plan exits 0" [ $rc -eq 0 ]
check "plan names both adapters" grep -q "sql" plan.txt
"$BIN" run job.yaml > run.log 2>&1; rc=$?
check "run exits 0 (rc $rc)" [ $rc -eq 0 ]
for u in a.sql b.sql b.chat b.base c.chat; do
    shard=${u%%.*}
    n_in=$(wc -l < data/$shard.jsonl)
    n_out=$(zstd -dc out/$u.jsonl.zst | wc -l)
    check "$u: one output line per input line ($n_out/$n_in)" [ "$n_in" = "$n_out" ]
    check "$u: line i answers input line i" python3 -c "
import json,sys
for i,l in enumerate(open(0)):
    o=json.loads(l); assert o['index']==i, (i,o['index'])
" < <(zstd -dc out/$u.jsonl.zst)
done
zstd -dc out/c.chat.jsonl.zst > c.out
codes=$(python3 -c "
import json
print(' '.join(json.loads(l).get('error',{}).get('code','-') for l in open('c.out')))")
check "error codes in order: $codes" [ "$(echo $codes | cut -d' ' -f10-16)" = "- bad_json bad_field unsupported bad_field bad_json bad_utf8" ]
check "max_tokens override respected" python3 -c "
import json
for l in open('c.out'):
    o=json.loads(l)
    if o['id'] in ('c-1','c-5'): assert o['usage']['completion_tokens']<=3, o
"
check "stop string cut the text" python3 -c "
import json
o=[json.loads(l) for l in open('c.out')][-1]
assert 'the' not in o['text'], o
"
check "adapters change outputs (b.sql != b.chat)" [ "$(zstd -dc out/b.sql.jsonl.zst | md5sum)" != "$(zstd -dc out/b.chat.jsonl.zst | md5sum)" ]
check "text prompts produce text" python3 -c "
import json
t=[json.loads(l) for l in open('c.out')]
assert any(o.get('text') for o in t if 'error' not in o)
"
check "summary.json counts every record" python3 -c "
import json
s=json.load(open('out/summary.json')); assert s['records']==20+3*12+9+8, s; assert s['errors']==6, s
"
"$BIN" status job.yaml > status.txt 2>&1
check "status says finished" grep -q "1 of 1 part(s) finished" status.txt
before=$(dump_outputs out | md5sum)
"$BIN" run job.yaml > rerun.log 2>&1; rc=$?
check "re-running a finished job exits 0" [ $rc -eq 0 ]
check "re-run says nothing to do" grep -q "already finished" rerun.log
check "re-run leaves outputs alone" [ "$(dump_outputs out | md5sum)" = "$before" ]
sed -i 's/max_tokens: 10/max_tokens: 11/' job.yaml
"$BIN" run job.yaml > changed.log 2>&1; rc=$?
check "a changed job refuses to resume (exit 2, got $rc)" [ $rc -eq 2 ]
check "and names what changed" grep -q "generation.max_tokens" changed.log
"$BIN" run job.yaml --restart > restart.log 2>&1; rc=$?
check "--restart starts over (rc $rc)" [ $rc -eq 0 ]
check "--restart output differs only where max_tokens matters" [ "$(zstd -dc out/c.chat.jsonl.zst | wc -l)" = "$(wc -l < data/c.jsonl)" ]
# an empty shard: an empty output, and the job still counts as finished
mkdir -p "$T/empty" && cd "$T/empty" && : > empty.jsonl && echo '{"prompt_token_ids": [5, 6]}' > one.jsonl
printf 'model: %s/model\ninputs:\n  - path: empty.jsonl\n    adapter: base\n  - path: one.jsonl\n    adapter: base\noutput:\n  dir: out\ngeneration:\n  max_tokens: 4\nresources:\n  device: cpu\n' "$FIX" > job.yaml
"$BIN" run job.yaml > run.log 2>&1; rc=$?
check "empty shard: run exits 0 (rc $rc)" [ $rc -eq 0 ]
check "empty shard: an empty output that zstd decodes" sh -c 'zstd -t -q out/empty.base.jsonl.zst && [ "$(zstd -dc out/empty.base.jsonl.zst | wc -c)" = 0 ]'
"$BIN" run job.yaml > rerun.log 2>&1
check "empty shard: the job is finished" grep -q "already finished" rerun.log
# generation.ignore_eos: every record runs to max_tokens, also those that stop at EOS without it
# (the demo's questions: some end on EOS within 24 tokens on this model)
mkdir -p "$T/eos" && cd "$T/eos"
printf 'model: %s/model\ninputs:\n  - path: %s/jobs/demo-data/questions.jsonl\n    adapter: base\noutput:\n  dir: out\n  token_ids: true\ngeneration:\n  max_tokens: 24\nresources:\n  device: cpu\n' "$FIX" "$ROOT" > job.yaml
sed 's/  max_tokens: 24/  max_tokens: 24\n  ignore_eos: true/' job.yaml > job_ie.yaml && sed -i 's/dir: out/dir: out_ie/' job_ie.yaml
"$BIN" run job.yaml > eos.log 2>&1 && "$BIN" run job_ie.yaml > eos_ie.log 2>&1; rc=$?
check "ignore_eos: both runs exit 0 (rc $rc)" [ $rc -eq 0 ]
n_stop=$(zstd -dc out/questions.base.jsonl.zst | grep -c '"finish_reason":"stop"')
check "ignore_eos: without it, some records stop at EOS ($n_stop)" [ "$n_stop" -gt 0 ]
check "ignore_eos: with it, every record has completion_tokens = its max_tokens" python3 -c "
import json, subprocess, sys
recs = [json.loads(l) for l in open('$ROOT/jobs/demo-data/questions.jsonl')]
out = [json.loads(l) for l in subprocess.run(['zstd', '-dc', 'out_ie/questions.base.jsonl.zst'], capture_output=True).stdout.decode().splitlines()]
ok = len(out) == len(recs) and all(o['usage']['completion_tokens'] == r.get('max_tokens', 24) and o['finish_reason'] == 'length' for o, r in zip(out, recs))
sys.exit(0 if ok else 1)"
# a record's own seed keys its sampler even when it equals the job's seed: two such records with
# the same prompt agree; two without a seed are keyed by their line and differ
mkdir -p "$T/seed" && cd "$T/seed"
for i in 1 2; do echo '{"prompt": "the model answers", "temperature": 1.0, "seed": 7}'; done > s.jsonl
for i in 1 2; do echo '{"prompt": "the model answers", "temperature": 1.0}'; done >> s.jsonl
printf 'model: %s/model\ninputs:\n  - path: s.jsonl\n    adapter: base\noutput:\n  dir: out\n  token_ids: true\ngeneration:\n  max_tokens: 16\n  seed: 7\nresources:\n  device: cpu\n' "$FIX" > job.yaml
"$BIN" run job.yaml > run.log 2>&1; rc=$?
check "seeds: run exits 0 (rc $rc)" [ $rc -eq 0 ]
check "seeds: records with seed = the job's seed sample alike; records without differ by line" python3 -c "
import json, subprocess, sys
o = [json.loads(l)['token_ids'] for l in subprocess.run(['zstd', '-dc', 'out/s.base.jsonl.zst'], capture_output=True).stdout.decode().splitlines()]
sys.exit(0 if len(o) == 4 and o[0] == o[1] and o[2] != o[3] else 1)"
# two runs on one folder: the second is refused by the lock (a slow job: one sequence at a time)
make_job "$T/slow" 400 10 10
cd "$T/slow"
sed -i 's/max_seqs: 6/max_seqs: 1/; s/max_tokens: 10/max_tokens: 30/' job.yaml
"$BIN" run job.yaml > first.log 2>&1 &
pid=$!
sleep 0.3
"$BIN" run job.yaml > lock.log 2>&1; rc=$?
kill -TERM $pid 2>/dev/null; wait $pid
check "a second run on the same folder is refused with exit 4 (rc $rc)" [ $rc -eq 4 ]
check "and the message names the holder" grep -q "in use by another run (pid [0-9]" lock.log
finish
