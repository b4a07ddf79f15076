#!/usr/bin/env bash
# --part I/N: disjoint, stable parts whose outputs together equal the whole job's;
# status adds the parts up. Both cases: whole units per part, and records split across parts.
. "$(dirname "$0")/lib.sh"
make_job "$T/whole" 14 9 7
( cd "$T/whole" && "$BIN" run job.yaml > /dev/null 2>&1 ); check "whole job exits 0" [ $? -eq 0 ]
for N in 3 8; do
    d="$T/parts$N"; cp -r "$T/whole" "$d"; rm -rf "$d/out"
    for I in $(seq 0 $((N - 1))); do ( cd "$d" && "$BIN" run job.yaml --part "$I/$N" > "p$I.log" 2>&1 ) || bad "part $I/$N failed: $(tail -1 "$d/p$I.log")"; done
    "$BIN" status "$d/job.yaml" > "$d/status.txt" 2>&1
    check "N=$N: status sums all parts" grep -q "total: $N of $N part(s) finished" "$d/status.txt"
    ( cd "$d" && "$BIN" run job.yaml --part 0/$((N + 1)) > other.log 2>&1 ); rc=$?
    check "N=$N: another split of the same folder is refused (rc $rc)" [ $rc -eq 2 ]
    check "N=$N: the refusal names both splits" grep -q "split in $N part(s); this run uses $((N + 1))" "$d/other.log"
    check "N=$N: parts together = the whole job (every record once, same lines)" python3 - "$T/whole/out" "$d/out" <<'PY'
import glob, json, os, subprocess, sys
def lines(f): return subprocess.run(['zstd', '-dc', f], capture_output=True).stdout.decode().splitlines()
whole, parts = sys.argv[1], sys.argv[2]
for f in glob.glob(whole + '/*.jsonl.zst'):
    name = os.path.basename(f)[:-len('.jsonl.zst')]
    got = []
    for g in glob.glob(f'{parts}/{name}.jsonl.zst') + glob.glob(f'{parts}/{name}.part-*.jsonl.zst'):
        got += lines(g)
    got.sort(key=lambda l: json.loads(l)['index'])
    assert got == lines(f), name
PY
done
finish
