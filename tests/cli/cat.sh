#!/usr/bin/env bash
# `lorabatch cat`: output files decompressed like `zstd -dc` (every frame, several files in
# order); a file cut inside a frame, a file that is not zstd, a missing file: exit 4 naming it.
. "$(dirname "$0")/lib.sh"
make_job "$T/j" 40 20 10
sed -i 's/interval_s: 0.05/interval_s: 0.001/' "$T/j/job.yaml" # a frame per commit: many frames
( cd "$T/j" && "$BIN" run job.yaml > run.log 2>&1 ); check "job runs" [ $? -eq 0 ]
files=$(ls "$T"/j/out/*.jsonl.zst | sort)
f1=$(echo "$files" | head -1)
frames() { python3 -c "import sys; d=open(sys.argv[1],'rb').read(); print(d.count(b'\x28\xb5\x2f\xfd'))" "$1"; }
check "the first output file holds several frames ($(frames "$f1"))" [ "$(frames "$f1")" -gt 1 ]
n1=$("$BIN" cat "$f1" | wc -l)
check "cat of one file: $n1 lines" [ "$n1" -gt 0 ]
check "cat of one file = zstd -dc" cmp -s <("$BIN" cat "$f1") <(zstd -dc "$f1")
# shellcheck disable=SC2086
check "cat of every file = zstd -dc of every file, in order" cmp -s <("$BIN" cat $files) <(zstd -dc $files)
sz=$(stat -c %s "$f1")
head -c $((sz - 3)) "$f1" > "$T/cut.zst"
"$BIN" cat "$T/cut.zst" > /dev/null 2> "$T/cut.err"; rc=$?
check "a file cut inside a frame: exit 4 (got $rc)" [ $rc -eq 4 ]
check "... the message names the file and the last whole frame" grep -q "cut.zst: ends inside a zstd frame (whole frames up to byte" "$T/cut.err"
echo '{"not":"zstd"}' > "$T/plain.jsonl.zst"
"$BIN" cat "$T/plain.jsonl.zst" > /dev/null 2> "$T/plain.err"; rc=$?
check "a file that is not zstd: exit 4 (got $rc), named" sh -c "[ $rc -eq 4 ] && grep -q 'plain.jsonl.zst: not zstd data' '$T/plain.err'"
"$BIN" cat "$T/missing.zst" > /dev/null 2> "$T/missing.err"; rc=$?
check "a missing file: exit 4 (got $rc), named" sh -c "[ $rc -eq 4 ] && grep -q 'missing.zst' '$T/missing.err'"
"$BIN" cat > /dev/null 2>&1; rc=$?
check "no file: usage, exit 2 (got $rc)" [ $rc -eq 2 ]
finish
