#!/bin/bash
# slurm-array.sh — run one lorabatch job as a Slurm job array: task I of N runs
# `lorabatch run JOB --part I/N`, a disjoint, stable part of the work with its own
# checkpoint, and resumes on its own after a time limit, a preemption, a requeue or a crash.
#
#   mkdir -p logs                                  # Slurm does not create the -o folder
#   sbatch jobs/slurm-array.sh jobs/slurm.yaml     # or: LB_JOB=jobs/slurm.yaml sbatch jobs/slurm-array.sh
#   lorabatch status jobs/slurm.yaml               # progress of every part, then "total: K of N part(s) finished"
#   tail -f logs/<array id>_<task>.log             # one log per task, kept across requeues
#
# The job file, model, inputs and output folder must be on a filesystem every node sees; each
# part locks the output folder with flock(2) (NFS: fine; Lustre: mount with -o flock, else the
# lock fails and lorabatch exits 4).
#
# Resubmitting (after a task failed, was cancelled or hard-killed): submit the same job with the
# same number of parts; finished parts exit 0 at once, the others resume from their checkpoints:
#   sbatch jobs/slurm-array.sh jobs/slurm.yaml                  # all parts again, or only some:
#   LB_PARTS=4 sbatch --array=2 jobs/slurm-array.sh jobs/slurm.yaml
# (with --array=2 alone Slurm says the array has 1 task, so the part count must be given).
#
# How a task ends, and how it comes back:
#   - finished: lorabatch exits 0; the task is COMPLETED.
#   - time limit: --signal=B:USR1@120 has Slurm send SIGUSR1 to this script about 120 s (up to
#     60 s more) before the limit; it is passed on to lorabatch, which commits its checkpoint
#     and exits 75 ("interrupted, resumable"); this script then requeues its own task with
#     `scontrol requeue` and the task starts again (SLURM_RESTART_COUNT=1, 2, ...) and resumes.
#   - preemption (PreemptMode=REQUEUE), `scontrol requeue`, node failure: Slurm sends SIGTERM to
#     every process of the task (lorabatch commits and exits 75) and, because of --requeue,
#     puts the task back in the queue itself; it resumes when it starts again.
#   - scancel: SIGTERM, lorabatch commits and exits 75, the task stays CANCELLED (this script
#     requeues only after the time-limit warning, never after a SIGTERM).
#   - hard kill (`scancel -b -s KILL`, OOM killer, node crash): the last checkpoint on disk is
#     intact; resubmit as above and the part resumes from it, every record exactly once.
#
# Why lorabatch is not simply `exec`ed: with `exec` the SIGUSR1 would reach lorabatch directly
# (a shell running a foreground program does not act on a trapped signal until the program
# ends), but nothing would be left to act on exit 75, so a task stopped at its time limit would
# end FAILED and need a resubmission (or a cluster whose slurm.conf has RequeueExit=75). So
# this script runs lorabatch in the background, waits for it, passes SIGUSR1/SIGTERM/SIGINT on
# (bash's `wait` returns at once when a trapped signal arrives), and acts on its exit code.
# lorabatch is started under `setpriv --pdeathsig KILL` so that it dies with this script: a
# `scancel -b -s KILL` that kills only the batch shell must not leave an orphan lorabatch
# running (and holding the output folder's lock) on a cluster without cgroups.
# LB_EXEC=1 switches to the plain `exec` form (no self-requeue at the time limit).
#
# Environment (all optional): LB_JOB (job file; the first argument wins), LB_PARTS (N),
# LORABATCH (the binary; default: lorabatch on PATH, else $SLURM_SUBMIT_DIR/build/lorabatch),
# LB_EXEC=1, LB_ARGS (extra arguments for `lorabatch run`, e.g. "--progress-interval 60").
# Options given to sbatch on its command line override the #SBATCH lines below.
#
#SBATCH --job-name=lorabatch
# one task per part: I = $SLURM_ARRAY_TASK_ID in 0..N-1, N = the number of tasks (append %K
# to run at most K parts at once, e.g. --array=0-3%2)
#SBATCH --array=0-3
# per-task resources; for the CUDA backend add a GPU: --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
# SIGUSR1 to the batch shell (B:) 120 s before the time limit: checkpoint, exit 75, requeue
#SBATCH --signal=B:USR1@120
# the task may be requeued (preemption, node failure, scontrol requeue, this script)
#SBATCH --requeue
# keep the log across requeues (without it a requeued task starts a new, empty log)
#SBATCH --open-mode=append
# one log per task: logs/<array job id>_<task id>.log (the folder must exist)
#SBATCH --output=logs/%A_%a.log
set -u

say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) slurm-array: $*" >&2; }

JOB=${1:-${LB_JOB:-jobs/slurm.yaml}}
LB=${LORABATCH:-}
if [ -z "$LB" ]; then
    if command -v lorabatch >/dev/null 2>&1; then LB=lorabatch; else LB=${SLURM_SUBMIT_DIR:-.}/build/lorabatch; fi
fi

# The part: I from the task id; N from LB_PARTS, else from the array when it is 0..N-1 step 1.
args=(run "$JOB")
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    I=$SLURM_ARRAY_TASK_ID
    N=${LB_PARTS:-}
    if [ -z "$N" ]; then
        if [ "${SLURM_ARRAY_TASK_MIN:-}" = 0 ] && [ "${SLURM_ARRAY_TASK_STEP:-1}" = 1 ] &&
           [ "$((${SLURM_ARRAY_TASK_MAX:-0} + 1))" = "${SLURM_ARRAY_TASK_COUNT:-}" ]; then
            N=$SLURM_ARRAY_TASK_COUNT
        else
            say "the array is not 0..N-1 (--array=${SLURM_ARRAY_TASK_MIN:-?}-${SLURM_ARRAY_TASK_MAX:-?}, ${SLURM_ARRAY_TASK_COUNT:-?} tasks): set LB_PARTS to the job's number of parts"
            exit 2
        fi
    fi
    args+=(--part "$I/$N")
fi
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && args+=(--threads "$SLURM_CPUS_PER_TASK")
# shellcheck disable=SC2206
[ -n "${LB_ARGS:-}" ] && args+=(${LB_ARGS})

say "job ${SLURM_JOB_ID:-?} (array ${SLURM_ARRAY_JOB_ID:-?} task ${SLURM_ARRAY_TASK_ID:-?}) on $(hostname), restart ${SLURM_RESTART_COUNT:-0}: $LB ${args[*]}"

if [ "${LB_EXEC:-0}" = 1 ]; then
    exec "$LB" "${args[@]}"
fi

pid="" warned=0 trapped=0
forward() { # SIG
    trapped=1
    [ "$1" = USR1 ] && warned=1
    [ -n "$pid" ] && kill -s "$1" "$pid" 2>/dev/null
    say "got SIG$1${pid:+, passed on to lorabatch ($pid)}"
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
trap 'forward INT' INT

pdeath=()
command -v setpriv >/dev/null 2>&1 && pdeath=(setpriv --pdeathsig KILL --)
"${pdeath[@]}" "$LB" "${args[@]}" &
pid=$!

# Wait for lorabatch's own exit status. A trapped signal makes `wait` return early with
# 128+signal while the program still runs; its status is then fetched by the next `wait`.
# When the program had already ended, bash may have no status left to give (127, once seen
# -1 under scancel): then the best knowledge is the signal that stopped it.
prev=""
while :; do
    trapped=0
    wait "$pid" 2>/dev/null
    rc=$?
    if [ "$trapped" = 1 ] && [ "$rc" -gt 128 ]; then prev=$rc; continue; fi
    break
done
if [ -n "$prev" ] && { [ "$rc" = 127 ] || [ "$rc" -lt 0 ] || [ "$rc" -gt 255 ]; }; then rc=$prev; fi

case $rc in
    0) say "part done (lorabatch exited 0); progress of all parts: $LB status $JOB" ;;
    75 | 138 | 143) # 75: interrupted, checkpoint committed. 138/143 (128 + SIGUSR1/SIGTERM): the
        # signal came before lorabatch had installed its handlers (while it was still loading),
        # or its status was lost (above); either way the last checkpoint on disk is intact
        if [ "$warned" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
            # requeueing ends this very task: Slurm sends SIGTERM to all of its processes, the
            # scontrol that asked included, sometimes before scontrol has its answer (it then
            # dies and reports failure although the requeue took effect). Ignored here, the
            # SIGTERM is ignored by scontrol too, which then reports the real outcome.
            trap '' TERM
            if scontrol requeue "$SLURM_JOB_ID"; then
                say "time-limit warning: lorabatch stopped (exit $rc); task requeued, it resumes from its checkpoint"
                exit 0
            fi
            say "scontrol requeue $SLURM_JOB_ID failed: resubmit this part to resume it"
        else
            say "lorabatch was interrupted (exit $rc): resumable; Slurm requeues the task if it was preempted or requeued"
        fi ;;
    *) say "lorabatch exited $rc" ;;
esac
exit "$rc"
