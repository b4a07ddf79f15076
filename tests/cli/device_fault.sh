#!/usr/bin/env bash
# A device error mid-run (LB_FAULT_STEP=N: step N fails halfway through its layers with a
# device error, as a CUDA fault would): exit 5 naming the fault, the records finished before
# it committed with a checkpoint, and the same command resumes to outputs identical to an
# uninterrupted run. LB_DEVICE=cuda runs it on the CUDA backend (the GPU test tier).
. "$(dirname "$0")/lib.sh"
DEV=${LB_DEVICE:-cpu}
make_job "$T/ref" 120 60 40
# one sequence at a time, long outputs: many steps, records finishing all along the run
sed -i 's/interval_s: 0.05/interval_s: 3600/; s/max_seqs: 6/max_seqs: 2/; s/max_tokens: 10/max_tokens: 20/' "$T/ref/job.yaml"
cp -r "$T/ref" "$T/f1"
( cd "$T/ref" && "$BIN" run job.yaml --device "$DEV" > run.log 2>&1 ); check "reference run exits 0" [ $? -eq 0 ]
ref=$(dump_outputs "$T/ref/out" | md5sum)
cd "$T/f1"
n_total=$(cat data/*.jsonl | wc -l)
for step in 150 900; do
    LB_FAULT_STEP=$step "$BIN" run job.yaml --device "$DEV" > fault_$step.log 2>&1; rc=$?
    check "fault at step $step: exit 5 (got $rc)" [ $rc -eq 5 ]
    check "fault at step $step: the message names the fault and the step" grep -q "injected device fault in step $step" fault_$step.log
    check "fault at step $step: a checkpoint was written, the message says how to resume" grep -q "checkpoint written to .*run the same command to resume" fault_$step.log
    done_n=$(sed -n 's/.*; \([0-9]*\) of [0-9]* records done.*/\1/p' fault_$step.log | tail -1)
    check "fault at step $step: records finished before it were committed (${done_n:-?} done)" [ "${done_n:-0}" -gt 0 ]
done
"$BIN" run job.yaml --device "$DEV" > resume.log 2>&1; rc=$?
check "resume exits 0 (rc $rc)" [ $rc -eq 0 ]
check "resume started from the checkpoint" grep -q "resuming from the checkpoint" resume.log
if [ "$DEV" = cpu ]; then
    check "outputs identical to the uninterrupted run" [ "$(dump_outputs out | md5sum)" = "$ref" ]
else
    # the CUDA backend is not batch-invariant (bf16, and cuBLAS picks kernels by batch size): a
    # resumed run batches records differently, so a record's tokens may differ at a near-tie
    dump_outputs "$T/ref/out" > "$T/ref.txt"
    dump_outputs out > "$T/res.txt"
    echo "info: $(python3 - "$T/ref.txt" "$T/res.txt" <<'PY'
import json, sys
def recs(path):  # dump_outputs text: "== file" headers, then that file's records
    r, f = {}, None
    for ln in open(path):
        if ln.startswith("== "): f = ln[3:].strip(); continue
        o = json.loads(ln); r[(f, o["index"])] = o.get("token_ids", o.get("text"))
    return r
a, b = recs(sys.argv[1]), recs(sys.argv[2])
print(f"{sum(a[k] == b.get(k) for k in a)} of {len(a)} records identical to the uninterrupted CUDA run")
PY
)"
fi
# every record once: data/a.jsonl -> sql, b -> sql, chat, base, c -> chat (make_job in lib.sh)
want=$(( $(wc -l < data/a.jsonl) + 3 * $(wc -l < data/b.jsonl) + $(wc -l < data/c.jsonl) ))
n_lines=$(dump_outputs out | grep -c '"index"')
n_ref=$(dump_outputs "$T/ref/out" | grep -c '"index"')
check "every record exactly once ($n_lines output lines, reference $n_ref, expected $want)" [ "$n_lines" = "$want" ] && [ "$n_ref" = "$want" ]
ids() { dump_outputs "$1" | python3 -c "import json,sys; p=sorted((json.loads(l)['id'], json.loads(l)['adapter']) for l in sys.stdin if l.startswith('{')); print(len(p), p)" | md5sum; }
check "the same (id, adapter) pairs as the uninterrupted run, none missing" sh -c "[ '$(ids out)' = '$(ids "$T/ref/out")' ] && [ $n_lines -gt 0 ]"
finish
