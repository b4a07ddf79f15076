#!/usr/bin/env bash
# SIGTERM (and SIGINT, SIGUSR1) mid-run: checkpoint, exit 75 within seconds, resume to
# outputs identical to an uninterrupted run.
. "$(dirname "$0")/lib.sh"
make_job "$T/ref" 300 150 100
sed -i 's/interval_s: 0.05/interval_s: 30/; s/max_seqs: 6/max_seqs: 1/; s/max_tokens: 10/max_tokens: 60/' "$T/ref/job.yaml"
cp -r "$T/ref" "$T/sig"
( cd "$T/ref" && "$BIN" run job.yaml > /dev/null 2>&1 ); check "reference run exits 0" [ $? -eq 0 ]
ref=$(dump_outputs "$T/ref/out" | md5sum)
cd "$T/sig"
for sig in TERM INT USR1; do
    "$BIN" run job.yaml > "$sig.log" 2>&1 &
    pid=$!
    sleep 0.4
    t0=$(date +%s%N)
    kill -$sig $pid
    wait $pid; rc=$?
    t1=$(date +%s%N)
    if grep -q "already finished" "$sig.log"; then n_skip=$((n_skip + 1)); echo "skip SIG$sig: the job finished first"; continue; fi
    check "SIG$sig: exit code 75 (got $rc)" [ $rc -eq 75 ]
    check "SIG$sig: stopped within 5 s ($(( (t1 - t0) / 1000000 )) ms)" [ $(( (t1 - t0) / 1000000 )) -lt 5000 ]
    check "SIG$sig: says how to resume" grep -q "resume" "$sig.log"
done
# a signal during start-up (before the engine runs) is still a clean, resumable stop
# The signal goes as soon as the process is lorabatch (no longer the forked shell) and has its
# SIGTERM handler (SigCgt bit 15 in /proc/PID/status). A fixed sleep raced the fork/exec: a
# SIGTERM landing before exec kills the forked shell (143), which says nothing about lorabatch.
"$BIN" run job.yaml > early.log 2>&1 &
pid=$!
bin_real=$(readlink -f "$BIN")
for _ in $(seq 1 20000); do
    kill -0 $pid 2>/dev/null || break
    [ "$(readlink /proc/$pid/exe 2>/dev/null)" = "$bin_real" ] || continue
    cgt=$(awk '/^SigCgt:/ {print $2}' /proc/$pid/status 2>/dev/null) || break
    [ -n "$cgt" ] && [ $(( 0x$cgt >> 14 & 1 )) -eq 1 ] && break
done
kill -TERM $pid
wait $pid; rc=$?
check "SIGTERM at start-up: exit 75 (got $rc)" [ $rc -eq 75 ]
"$BIN" status job.yaml > status.txt 2>&1
check "status shows progress before the end" grep -q "in progress" status.txt
"$BIN" run job.yaml > final.log 2>&1; rc=$?
check "resume exits 0 (rc $rc)" [ $rc -eq 0 ]
check "outputs identical to the uninterrupted run" [ "$(dump_outputs out | md5sum)" = "$ref" ]
finish
