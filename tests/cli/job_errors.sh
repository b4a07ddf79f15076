#!/usr/bin/env bash
# Bad-input catalogue at the command line: each case with its exit code and message.
. "$(dirname "$0")/lib.sh"
make_job "$T/j" 3 3 3
cd "$T/j"
expect() { # name exit-code message-substring yaml-edit-command
    local name=$1 code=$2 msg=$3; shift 3
    cp job.yaml case.yaml
    "$@"
    "$BIN" run case.yaml > case.log 2>&1; local rc=$?
    if [ $rc -eq "$code" ] && grep -qF -- "$msg" case.log; then ok "$name"; else bad "$name: rc $rc, wanted $code and \"$msg\"; got: $(head -c 300 case.log)"; fi
}
expect "unknown key names file:line" 2 'case.yaml:15: field "generation.temprature"' sed -i 's/temperature: 0.0/temprature: 0.0/' case.yaml
expect "wrong type" 2 'field "generation.max_tokens"' sed -i 's/max_tokens: 10/max_tokens: ten/' case.yaml
expect "missing model folder" 2 "model" sed -i "s#^model: .*#model: /nonexistent/model#" case.yaml
expect "unknown adapter" 2 '"legal"' sed -i 's/adapter: chat/adapter: legal/' case.yaml
expect "glob matching nothing" 2 "data/zzz" sed -i 's#data/c.jsonl#data/zzz*.jsonl#' case.yaml
expect "several errors at once" 2 'field "generation.top_p"' sed -i 's/temperature: 0.0/temperature: -1\n  top_p: 7/' case.yaml
mkdir -p otherbase && cp -r "$FIX/../qwen2/adapters/all7_r8" otherbase/x 2>/dev/null
if [ -d otherbase/x ]; then
    expect "adapter for another base model" 2 "another base model" sed -i 's#dir: loras/#dir: otherbase/#; s/adapter: sql/adapter: x/; s/adapters: \[sql, chat, base\]/adapters: [x]/; s/adapter: chat/adapter: x/' case.yaml
fi
expect "not YAML" 2 "case.yaml" sh -c 'printf "model: [unclosed\n" > case.yaml'
"$BIN" run > usage.log 2>&1; rc=$?
check "no job file: usage, exit 2" [ $rc -eq 2 ]
"$BIN" run job.yaml --part 3/2 > part.log 2>&1; rc=$?
check "bad --part: exit 2" [ $rc -eq 2 ]
"$BIN" frobnicate > cmd.log 2>&1; rc=$?
check "unknown command: exit 2" [ $rc -eq 2 ]
# error-rate cap: a shard of garbage stops the job with exit 3
for i in $(seq 1 150); do echo "not json $i"; done > data/a.jsonl
sed -i 's/interval_s: 0.05/interval_s: 30/' job.yaml
"$BIN" run job.yaml > cap.log 2>&1; rc=$?
check "error-rate cap: exit 3 (got $rc)" [ $rc -eq 3 ]
check "error-rate cap: says why" grep -q "max_error_rate" cap.log
# unwritable output folder: exit 4, message names it
sed -i 's#dir: out/#dir: /proc/lorabatch-out/#' job.yaml
"$BIN" run job.yaml > io.log 2>&1; rc=$?
check "unwritable output: exit 4 (got $rc)" [ $rc -eq 4 ]
check "unwritable output: names the folder" grep -q "/proc/lorabatch-out" io.log
finish
