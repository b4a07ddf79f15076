#!/usr/bin/env bash
# A record's output does not depend on batch composition, the adapter-slot budget, max_seqs or
# max_batch_tokens: the same job under different resources gives byte-identical outputs.
. "$(dirname "$0")/lib.sh"
make_job "$T/a" 24 12 10
( cd "$T/a" && "$BIN" run job.yaml > run.log 2>&1 ); check "reference run exits 0" [ $? -eq 0 ]
ref=$(dump_outputs "$T/a/out" | md5sum)
variant() { # name sed-expression [VAR=value...]
    local d="$T/$1" name=$1 ed=$2
    shift 2
    cp -r "$T/a" "$d"; rm -rf "$d/out"
    sed -i "$ed" "$d/job.yaml"
    ( cd "$d" && env "$@" "$BIN" run job.yaml > run.log 2>&1 ) || { bad "$name: run failed: $(tail -1 "$d/run.log")"; return; }
    set -- "$name"
    check "$1: outputs identical" [ "$(dump_outputs "$d/out" | md5sum)" = "$ref" ]
}
variant slots1 's/gpu_adapter_slots: 2/gpu_adapter_slots: 1/'
variant seqs1 's/max_seqs: 6/max_seqs: 1/'
variant seqs64 's/max_seqs: 6/max_seqs: 64/; s/max_batch_tokens: 48/max_batch_tokens: 4096/'
variant chunked 's/max_batch_tokens: 48/max_batch_tokens: 7/'
# decode steps padded as for CUDA graphs (LB_GRAPHS=2 pads them on the CPU too), the job unchanged
variant padded4 '' LB_GRAPHS=2 LB_GRAPH_BUCKET=4
variant padded32 's/max_seqs: 6/max_seqs: 64/; s/max_batch_tokens: 48/max_batch_tokens: 4096/' LB_GRAPHS=2
finish
