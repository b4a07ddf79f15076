#!/usr/bin/env bash
# slurm.sh — lorabatch under a real (local, one-node) Slurm 22.05 cluster, through the
# shipped jobs/slurm-array.sh, checked against plain uninterrupted runs of the same jobs:
#   1. a job array with --part over 4 tasks: all finish, each output identical to the whole
#      job's (part files of a record-split shard concatenated in part order), `lorabatch
#      status` reports every part finished;
#   2. `scontrol requeue` of a running task: SIGTERM, exit 75, Slurm requeues it, it resumes
#      from its checkpoint and finishes;
#   3. `scancel -b -s KILL` of a running task (hard kill), then the part resubmitted: it
#      resumes and finishes; once with the script's default wrapper, once with LB_EXEC=1;
#   4. SIGUSR1 to the batch shell (what --signal=B:USR1@120 sends before the time limit):
#      exit 75, the script requeues its own task, it resumes and finishes;
#   5. a real time limit (--time=1 --signal=B:USR1@60): Slurm's own warning, same path as 4
#      (counted as a skip when the job happens to finish before Slurm sends it);
#   6. the shipped example verbatim: `sbatch jobs/slurm-array.sh jobs/slurm.yaml` from a
#      repository root, its default --array=0-3 and logs/%A_%a.log.
# Every output: identical to the reference, every record exactly once (line count = input
# lines, "index" 0..n-1 in order). Needs root and apt-get (installs munge + Slurm from
# Debian); exits 77 (skip) when Slurm cannot be had. Daemons are stopped on any exit.
# LB_SLURM_KEEP=1 keeps the work folder (configs, logs, outputs) for a look afterwards.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${LB_BIN:-$ROOT/build/lorabatch}
FIX=${LB_FIXTURE_MODEL:-$ROOT/tests/golden/fixtures/llama3}
ARRAY_SH=$ROOT/jobs/slurm-array.sh
t_start=$(date +%s)
# every wait below stops at this point, so a broken cluster fails the test well inside CI's 10 min
t_end=$((t_start + 420))

n_pass=0 n_fail=0 n_skip=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
bad() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
skip_all() { echo "SKIP slurm: $*"; exit 77; }
el() { echo "$(($(date +%s) - t_start))s"; }

[ -z "${LB_SANITIZED:-}" ] || skip_all "timing-bound (Slurm time limits, one deadline): not run under the sanitizers"
[ "$(id -u)" = 0 ] || skip_all "needs root (apt-get; slurmd launches jobs as root)"
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || skip_all "Slurm is not installed and there is no apt-get"
fi
[ -x "$BIN" ] || { echo "FAIL no lorabatch binary at $BIN"; echo "RESULT 0 1 0"; exit 1; }
[ -d "$FIX/model" ] || { echo "FAIL no fixture model at $FIX"; echo "RESULT 0 1 0"; exit 1; }
for t in python3 zstd setpriv; do command -v $t >/dev/null 2>&1 || skip_all "needs $t"; done

T=$(mktemp -d /tmp/lbslurm.XXXXXX)
chmod 755 "$T"
D=$T/cluster
# running lorabatch processes (plain /proc: procps may be missing on a minimal Debian)
lorabatch_pids() { local f; for f in /proc/[0-9]*/comm; do [ "$(cat "$f" 2>/dev/null)" = lorabatch ] && { f=${f#/proc/}; echo "${f%/comm}"; }; done; }
cleanup() {
    [ -d "$D/run" ] && "$ROOT/tests/slurm/stop-local-slurm.sh" "$D" >/dev/null 2>&1
    # a lorabatch this test started (it runs in a folder under $T) must not outlive it
    local p
    for p in $(lorabatch_pids); do
        case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in "$T"/*) kill -KILL "$p" 2>/dev/null ;; esac
    done
    if [ -n "${LB_SLURM_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- jobs and references
# A: quick, 3 shards, fan-out + base, 5 work units over 4 parts (whole units per part).
# S: slow (max_seqs 1, long outputs), one shard fanned over 2 adapters, 3 parts: fewer units
#    than parts, so the records of a shard are split and parts write .part-I-of-3 files.
mkjob() { # dir kind
    local d=$1 kind=$2
    mkdir -p "$d/data" "$d/loras" "$d/logs"
    ln -sfn "$FIX/adapters/all7_r8" "$d/loras/sql"
    ln -sfn "$FIX/adapters/qv_rslora_r4" "$d/loras/chat"
    python3 - "$d" "$kind" <<'PY'
import json, random, sys
d, kind = sys.argv[1], sys.argv[2]
random.seed(17)
words = "the of and to in is was for on that with as by at from data model query table select answer question".split()
shards = {"A": {"a": 30, "b": 24, "c": 18}, "S": {"big": 420}, "L": {"big": 1200}}[kind]
for name, n in shards.items():
    with open(f"{d}/data/{name}.jsonl", "w") as f:
        for i in range(n):
            r = {"id": f"{name}-{i}"}
            if i % 4 == 0: r["prompt_token_ids"] = [random.randrange(3, 500) for _ in range(random.randrange(1, 20))]
            else: r["prompt"] = " ".join(random.choice(words) for _ in range(random.randrange(1, 14)))
            if i % 5 == 2: r["temperature"] = 0.8; r["top_p"] = 0.9
            if i % 7 == 3: r["seed"] = 1000 + i; r["temperature"] = 1.0; r["top_k"] = 20
            f.write(json.dumps(r) + "\n")
PY
    if [ "$kind" = A ]; then
        cat > "$d/job.yaml" <<YAML
model: $FIX/model
adapters:
  dir: loras/
inputs:
  - path: data/a.jsonl
    adapter: sql
  - path: data/b.jsonl
    adapters: [sql, chat, base]
  - path: data/c.jsonl
    adapter: chat
output:
  dir: out/
generation:
  max_tokens: 12
resources:
  device: cpu
  gpu_adapter_slots: 2
  max_seqs: 4
checkpoint:
  interval_s: 0.2
YAML
    else
        cat > "$d/job.yaml" <<YAML
model: $FIX/model
adapters:
  dir: loras/
inputs:
  - path: data/big.jsonl
    adapters: [sql, base]
output:
  dir: out/
generation:
  max_tokens: $([ "$kind" = S ] && echo 160 || echo 200)
resources:
  device: cpu
  gpu_adapter_slots: 1
  max_seqs: 1
checkpoint:
  interval_s: 0.3
YAML
    fi
}
mkjob "$T/refA" A
mkjob "$T/refS" S
mkjob "$T/refL" L
cp -r "$T/refA" "$T/array"
for x in requeue kill killexec usr1; do cp -r "$T/refS" "$T/$x"; done
cp -r "$T/refL" "$T/timelimit"
# 6. the shipped example as documented: jobs/slurm.yaml through jobs/slurm-array.sh from a
#    repository root (a copy: jobs/ copied, tests/ linked, its own build/ for the outputs)
R=$T/repo
mkdir -p "$R/build" && cp -r "$ROOT/jobs" "$R/" && ln -s "$ROOT/tests" "$R/tests"
sed 's|dir: ../build/slurm-out|dir: ../build/slurm-ref|' "$R/jobs/slurm.yaml" > "$R/jobs/slurm-ref.yaml"
# sbatch resolves a relative job path against the submit dir; the job's own paths are
# relative to the job file, so every copy is independent
( cd "$T/refA" && "$BIN" run job.yaml > run.log 2>&1; echo $? > rc ) &
ref_a=$!
( cd "$T/refS" && "$BIN" run job.yaml > run.log 2>&1; echo $? > rc ) &
ref_s=$!
( cd "$T/refL" && "$BIN" run job.yaml > run.log 2>&1; echo $? > rc ) &
ref_l=$!
( cd "$R" && "$BIN" run jobs/slurm-ref.yaml > build/ref.log 2>&1; echo $? > build/ref.rc ) &
ref_e=$!

# ---------------------------------------------------------------- the cluster
port=$((17000 + $$ % 2000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; do
    port=$((port + 2))
done
if ! LOCAL_SLURM_CPUS=8 LOCAL_SLURM_CRED_EXPIRE=5 LOCAL_SLURM_CTLD_PORT=$port LOCAL_SLURM_SLURMD_PORT=$((port + 1)) \
    "$ROOT/tests/slurm/start-local-slurm.sh" "$D" > "$T/cluster-start.log" 2>&1; then
    tail -n 20 "$T/cluster-start.log"
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
        skip_all "Slurm could not be installed"
    fi
    bad "local Slurm cluster did not start"
    echo "RESULT $n_pass $n_fail $n_skip"
    exit 1
fi
export SLURM_CONF=$D/etc/slurm.conf
ok "local Slurm cluster up ($(sinfo -V), $(el))"


# ---------------------------------------------------------------- helpers
# sbatch the shipped script for the job in DIR; extra sbatch options first. Prints the job id.
submit() { # dir [env assignments...] -- [sbatch options...]
    local d=$1; shift
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    (cd "$d" && env LORABATCH="$BIN" "${envs[@]}" sbatch --parsable --cpus-per-task=1 --mem=200M --time=10 \
        --output="$d/logs/%A_%a.log" "$@" "$ARRAY_SH" job.yaml) | cut -d';' -f1
}
# wait until no task of the array is pending or running
capped() { local e=$(($(date +%s) + $1)); [ "$e" -gt "$t_end" ] && e=$t_end; echo "$e"; }
wait_gone() { # jobid timeout_s
    local end; end=$(capped "$2")
    while [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.5
    done
}
# records committed so far by part I/N of the job in DIR, while that part is in progress
part_done() { # dir I N
    "$BIN" status "$1/job.yaml" 2>/dev/null | sed -n "s/.*\.lorabatch\.part-$2-of-$3\.ckpt: in progress, \([0-9]*\) records.*/\1/p"
}
wait_progress() { # dir I N timeout_s: until the part has committed some records
    local end n; end=$(capped "$4")
    while :; do
        n=$(part_done "$1" "$2" "$3")
        [ -n "$n" ] && [ "$n" -gt 0 ] && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
task_field() { # jobid_task field
    scontrol -o show job "$1" 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}
# outputs of DIR against REF: per whole-job file, the part files concatenated in part order
# must equal it byte for byte after decompression; every record once, indexes 0..n-1 in order
same_outputs() { # ref_dir dir: the jobs' out/ folders, inputs in dir/data
    same_out_dirs "$1/out" "$2/out" "$2/data"
}
same_out_dirs() { # ref_out out data
    python3 - "$1" "$2" "$3" <<'PY'
import glob, json, os, re, subprocess, sys
ref, got, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
def unz(f): return subprocess.run(["zstd", "-dc", f], check=True, capture_output=True).stdout
refs = sorted(glob.glob(ref + "/*.jsonl.zst"))
assert refs, "no reference outputs"
seen = set()
for f in refs:
    name = os.path.basename(f)[:-len(".jsonl.zst")]
    whole = f"{got}/{name}.jsonl.zst"
    parts = glob.glob(f"{got}/{name}.part-*-of-*.jsonl.zst")
    if os.path.exists(whole):
        assert not parts, f"{name}: both a whole file and part files"
        files = [whole]
    else:
        assert parts, f"{name}: missing"
        files = sorted(parts, key=lambda p: int(re.search(r"\.part-(\d+)-of-\d+\.jsonl\.zst$", p).group(1)))
    seen.update(files)
    data = b"".join(unz(p) for p in files)
    want = unz(f)
    assert data == want, f"{name}: differs from the uninterrupted run ({len(data)} vs {len(want)} bytes)"
    shard = name.rsplit(".", 1)[0]
    n_in = sum(1 for _ in open(f"{data_dir}/{shard}.jsonl"))
    lines = data.split(b"\n")  # not splitlines(): a text may hold U+0085 or U+2028 raw
    assert lines[-1] == b"", f"{name}: does not end with a newline"
    lines = lines[:-1]
    assert len(lines) == n_in, f"{name}: {len(lines)} lines for {n_in} input lines"
    idx = [json.loads(l)["index"] for l in lines]
    assert idx == list(range(n_in)), f"{name}: indexes not 0..{n_in - 1} in order"
extra = set(glob.glob(got + "/*.jsonl.zst")) - seen
assert not extra, f"unexpected outputs: {sorted(extra)}"
PY
}
status_all_done() { # dir N
    "$BIN" status "$1/job.yaml" > "$1/status.txt" 2>&1 && grep -q "^total: $2 of $2 part(s) finished" "$1/status.txt"
}
# "resuming from the checkpoint: X of Y records done" with 0 < X < Y in a log
resumed_mid() { # log
    grep -o "resuming from the checkpoint: [0-9]* of [0-9]*" "$1" | awk '{ if ($5 > 0 && $5 < $7) ok = 1 } END { exit !ok }'
}
no_orphan() { # dir part: no lorabatch process runs that part of the job
    local p
    for p in $(lorabatch_pids); do
        tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -q -- "--part $2" &&
            [ "$(readlink "/proc/$p/cwd")" = "$1" ] && return 1
    done
    return 0
}

# ---------------------------------------------------------------- submit everything
# all four slow arrays and the quick one run at once (8 CPUs advertised on a 2-core box
# slows each task down, which leaves time to interrupt it mid-run)
jA=$(submit "$T/array" -- --array=0-3)
jR=$(submit "$T/requeue" -- --array=0-2)
jK=$(submit "$T/kill" -- --array=0-2)
jX=$(submit "$T/killexec" LB_EXEC=1 -- --array=0-2)
jU=$(submit "$T/usr1" -- --array=0-2)
# 5. a real time limit: one task (the whole job, --part 0/1), 1 minute, warned 60 s early
jT=$(submit "$T/timelimit" -- --array=0 --time=1 --signal=B:USR1@60)
# as the script's header says, with only the resources cut down for a CI box
jE=$( (cd "$R" && mkdir -p logs && env LORABATCH="$BIN" sbatch --parsable --cpus-per-task=1 --mem=200M \
    jobs/slurm-array.sh jobs/slurm.yaml) | cut -d';' -f1)
echo "submitted: example $jE, array $jA, requeue $jR, kill $jK, kill-exec $jX, usr1 $jU, time limit $jT ($(el))"

# 2. requeue task 1 mid-run
if wait_progress "$T/requeue" 1 3 120; then
    scontrol requeue "${jR}_1"; check "requeue: scontrol requeue ${jR}_1 mid-run accepted" [ $? -eq 0 ]
else bad "requeue: part 1/3 never showed progress"; fi
# 3. hard-kill task 2 (wrapper) and task 0 (exec) mid-run
if wait_progress "$T/kill" 2 3 120; then
    scancel -b -s KILL "${jK}_2"; check "kill: scancel -b -s KILL ${jK}_2 mid-run accepted" [ $? -eq 0 ]
else bad "kill: part 2/3 never showed progress"; fi
if wait_progress "$T/killexec" 0 3 120; then
    scancel -b -s KILL "${jX}_0"; check "kill-exec: scancel -b -s KILL ${jX}_0 mid-run accepted" [ $? -eq 0 ]
else bad "kill-exec: part 0/3 never showed progress"; fi
# 4. the time-limit warning by hand: SIGUSR1 to the batch shell of task 1
if wait_progress "$T/usr1" 1 3 120; then
    scancel -b -s USR1 "${jU}_1"; check "usr1: scancel -b -s USR1 ${jU}_1 mid-run accepted" [ $? -eq 0 ]
else bad "usr1: part 1/3 never showed progress"; fi

# the hard-killed tasks: ended (no requeue), no lorabatch left behind, part unfinished
for k in "kill $jK 2" "killexec $jX 0"; do
    set -- $k
    end=$(capped 60)
    while [ "$(task_field "${2}_$3" JobState)" = RUNNING ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.3; done
    st=$(task_field "${2}_$3" JobState)
    check "$1: task ${2}_$3 ended by the hard kill (state $st, exit $(task_field "${2}_$3" ExitCode))" grep -qxE 'FAILED|CANCELLED' <<< "$st"
    sleep 1
    check "$1: no lorabatch left running part $3/3" no_orphan "$T/$1" "$3/3"
    n=$(part_done "$T/$1" "$3" 3)
    check "$1: part $3/3 is unfinished in its checkpoint (${n:-?} records committed)" [ -n "$n" ]
done
# resubmitting one task without LB_PARTS: the script cannot tell N and must refuse
jK1=$(submit "$T/kill" -- --array=2)
wait_gone "$jK1" 60
check "kill: --array=2 without LB_PARTS refused (state $(task_field "${jK1}_2" JobState), exit $(task_field "${jK1}_2" ExitCode))" \
    [ "$(task_field "${jK1}_2" JobState) $(task_field "${jK1}_2" ExitCode)" = "FAILED 2:0" ]
check "kill: ... saying to set LB_PARTS, with no lorabatch run" \
    sh -c "grep -q 'set LB_PARTS' '$T/kill/logs/${jK1}_2.log' && ! grep -q 'lorabatch run' '$T/kill/logs/${jK1}_2.log'"
# resubmit the killed parts (LB_PARTS: an --array of one task does not tell N)
jK2=$(submit "$T/kill" LB_PARTS=3 -- --array=2)
jX2=$(submit "$T/killexec" LB_PARTS=3 LB_EXEC=1 -- --array=0)
echo "resubmitted: kill $jK2, kill-exec $jX2 ($(el))"

for j in "$jE" "$jA" "$jR" "$jK" "$jX" "$jU" "$jK2" "$jX2" "$jT"; do
    wait_gone "$j" 360 || bad "job $j still queued or running after 360 s"
done
echo "all jobs ended ($(el))"
wait "$ref_a"; wait "$ref_s"; wait "$ref_l"; wait "$ref_e"
for r in A S L; do check "reference run $r (plain, uninterrupted) exits 0" [ "$(cat "$T/ref$r/rc")" = 0 ]; done
check "reference run of jobs/slurm.yaml (plain, uninterrupted) exits 0" [ "$(cat "$R/build/ref.rc")" = 0 ]

# ---------------------------------------------------------------- 1. the array
for i in 0 1 2 3; do
    check "array: task ${jA}_$i COMPLETED, exit 0:0" [ "$(task_field "${jA}_$i" JobState) $(task_field "${jA}_$i" ExitCode)" = "COMPLETED 0:0" ]
done
check "array: each task ran --part I/4" [ "$(cat "$T/array/logs/${jA}"_*.log | grep -c -- '--part [0-3]/4')" = 4 ]
check "array: outputs identical to the whole job, every record once" same_outputs "$T/refA" "$T/array"
check "array: lorabatch status reports 4 of 4 parts finished" status_all_done "$T/array" 4
check "array: a re-run of a finished part exits 0 at once" \
    sh -c "cd '$T/array' && '$BIN' run job.yaml --part 3/4 2>&1 | grep -q 'already finished'"

# ---------------------------------------------------------------- 2. requeue
L=$T/requeue/logs/${jR}_1.log
check "requeue: task ${jR}_1 COMPLETED after 1 restart" \
    [ "$(task_field "${jR}_1" JobState) $(task_field "${jR}_1" Restarts)" = "COMPLETED 1" ]
check "requeue: lorabatch committed its checkpoint on the SIGTERM" grep -q "stopped by signal 15; checkpoint written" "$L"
check "requeue: the log kept both runs (--open-mode=append)" sh -c "grep -q 'restart 0:' '$L' && grep -q 'restart 1:' '$L'"
check "requeue: the second run resumed mid-way from the checkpoint" resumed_mid "$L"
check "requeue: outputs identical to the uninterrupted run, every record once" same_outputs "$T/refS" "$T/requeue"
check "requeue: status reports 3 of 3 parts finished" status_all_done "$T/requeue" 3

# ---------------------------------------------------------------- 3. hard kill + resubmit
for k in "kill $jK2 2" "killexec $jX2 0"; do
    set -- $k
    L=$T/$1/logs/${2}_$3.log
    check "$1: resubmitted task ${2}_$3 COMPLETED, exit 0:0" [ "$(task_field "${2}_$3" JobState) $(task_field "${2}_$3" ExitCode)" = "COMPLETED 0:0" ]
    check "$1: it resumed mid-way from the last checkpoint" resumed_mid "$L"
    check "$1: outputs identical to the uninterrupted run, every record once" same_outputs "$T/refS" "$T/$1"
    check "$1: status reports 3 of 3 parts finished" status_all_done "$T/$1" 3
done

# ---------------------------------------------------------------- 4. SIGUSR1 -> self-requeue
L=$T/usr1/logs/${jU}_1.log
check "usr1: task ${jU}_1 COMPLETED after 1 restart" \
    [ "$(task_field "${jU}_1" JobState) $(task_field "${jU}_1" Restarts)" = "COMPLETED 1" ]
check "usr1: the script passed SIGUSR1 on, lorabatch committed its checkpoint" grep -q "stopped by signal 10; checkpoint written" "$L"
check "usr1: ... and the script requeued its own task" grep -q "lorabatch stopped (exit [0-9]*); task requeued" "$L"
check "usr1: the second run resumed mid-way from the checkpoint" resumed_mid "$L"
check "usr1: outputs identical to the uninterrupted run, every record once" same_outputs "$T/refS" "$T/usr1"
check "usr1: status reports 3 of 3 parts finished" status_all_done "$T/usr1" 3

# ---------------------------------------------------------------- 5. real time limit
L=$T/timelimit/logs/${jT}_0.log
restarts=$(task_field "${jT}_0" Restarts)
check "timelimit: task ${jT}_0 COMPLETED, exit 0:0 (after ${restarts:-?} restarts)" [ "$(task_field "${jT}_0" JobState) $(task_field "${jT}_0" ExitCode)" = "COMPLETED 0:0" ]
if [ "${restarts:-0}" -ge 1 ]; then
    check "timelimit: Slurm's SIGUSR1 warning reached the script" grep -q "got SIGUSR1" "$L"
    check "timelimit: lorabatch committed its checkpoint on it" grep -q "stopped by signal 10; checkpoint written" "$L"
    check "timelimit: ... and the script requeued the task" grep -q "lorabatch stopped (exit [0-9]*); task requeued" "$L"
    check "timelimit: the next run resumed mid-way from the checkpoint" resumed_mid "$L"
else
    n_skip=$((n_skip + 1)); echo "skip timelimit: the job finished before Slurm's first time-limit warning"
fi
check "timelimit: outputs identical to the uninterrupted run, every record once" same_outputs "$T/refL" "$T/timelimit"
check "timelimit: status reports the job finished" status_all_done "$T/timelimit" 1

# ---------------------------------------------------------------- 6. the shipped example
for i in 0 1 2 3; do
    check "example: task ${jE}_$i COMPLETED, exit 0:0, log in logs/${jE}_$i.log" \
        [ "$(task_field "${jE}_$i" JobState) $(task_field "${jE}_$i" ExitCode) $(test -s "$R/logs/${jE}_$i.log" && echo log)" = "COMPLETED 0:0 log" ]
done
check "example: outputs identical to a plain run of jobs/slurm.yaml, every record once" \
    same_out_dirs "$R/build/slurm-ref" "$R/build/slurm-out" "$R/jobs/slurm-data"
check "example: lorabatch status jobs/slurm.yaml reports 4 of 4 parts finished" \
    sh -c "cd '$R' && '$BIN' status jobs/slurm.yaml | grep -q '^total: 4 of 4 part(s) finished'"

if [ "$n_fail" -gt 0 ]; then
    echo "--- logs of failed runs"
    for f in "$T"/*/logs/*.log; do echo "== $f"; tail -n 8 "$f"; done
fi
echo "wall time $(el)"
echo "RESULT $n_pass $n_fail $n_skip"
[ "$n_fail" -eq 0 ]
