/* run.c — `lorabatch run | plan | status`: the job pipeline.
 *
 *   job.yaml -> lb_job (parse + resolve: every error at once, before any model work)
 *            -> model, tokenizer, every adapter the job names (validated against the model)
 *            -> record counts per shard (one streaming pass) -> --part selection
 *            -> checkpoint: resume, refuse a changed job (naming what changed), or start
 *            -> plan (admission order + adapter-slot timeline) over the records still to do
 *            -> engine steps; records stream in plan order from one reader per work unit;
 *               bad records become error lines without touching the model
 *            -> per unit a reorder buffer puts lines back in input order -> zstd writer
 *            -> every checkpoint.interval_s: close frames, fsync, write the checkpoint.
 *
 * Exactly-once: the checkpoint holds, per output, the committed byte length and the input
 * cursor of the first record not yet committed. A resume truncates each output to its
 * committed length and re-reads from the cursor; records that were in flight are simply
 * computed again. A record's output depends only on the record (the RNG is keyed by job
 * seed and record; the CPU backend is batch-invariant), so a resumed run's decompressed
 * outputs are byte-identical to an uninterrupted run's.
 *
 * Output naming: `<stem>.<adapter>.jsonl.zst`; when --part splits a shard's records
 * (fewer units than parts) the part's file is `<stem>.<adapter>.part-I-of-N.jsonl.zst`
 * and holds that part's record range (the "index" field is always the input line).
 * Records given as text need the model folder's tokenizer.json; without one, prompts must
 * be token ids, "text" is "" and token_ids are always written. */
#include "run.h"

#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "ckpt.h"
#include "cli.h"
#include "engine.h"
#include "job.h"
#include "out.h"
#include "plan.h"
#include "sample.h"
#include "shard.h"
#include "tok.h"
#include "util.h"

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t g_stop_signal;
static void on_signal(int sig) { g_stop_signal = sig; }
static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---------------------------------------------------------------- options */

struct run_opts {
    const char *job_path;
    int part_i, part_n;
    int restart;
    const char *device;      /* NULL: job's */
    int threads;
    double progress_s;       /* log interval when not a terminal */
    int kill_after_commits;  /* testing aid: exit(99) right after the Nth checkpoint (0 = off) */
};

static int parse_opts(int argc, char **argv, struct run_opts *o, const char *cmd)
{
    memset(o, 0, sizeof *o);
    o->part_n = 1;
    o->progress_s = 10;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--part") && more) {
            if (sscanf(argv[++i], "%d/%d", &o->part_i, &o->part_n) != 2 || o->part_n < 1 || o->part_i < 0 || o->part_i >= o->part_n) {
                fprintf(stderr, "lorabatch %s: --part takes I/N with 0 <= I < N, got \"%s\"\n", cmd, argv[i]);
                return -1;
            }
        } else if (!strcmp(a, "--restart")) o->restart = 1;
        else if (!strcmp(a, "--device") && more) o->device = argv[++i];
        else if (!strcmp(a, "--threads") && more) o->threads = atoi(argv[++i]);
        else if (!strcmp(a, "--progress-interval") && more) o->progress_s = atof(argv[++i]);
        else if (!strcmp(a, "--test-exit-after-commits") && more) o->kill_after_commits = atoi(argv[++i]);
        else if (a[0] == '-') { fprintf(stderr, "lorabatch %s: unknown or incomplete option %s\n", cmd, a); return -1; }
        else if (!o->job_path) o->job_path = a;
        else { fprintf(stderr, "lorabatch %s: unexpected argument %s\n", cmd, a); return -1; }
    }
    if (!o->job_path) {
        fprintf(stderr, "usage: lorabatch %s JOB.yaml [--part I/N]%s\n", cmd,
                strcmp(cmd, "run") ? "" : " [--restart] [--device auto|cpu|cuda] [--threads N] [--progress-interval S]");
        return -1;
    }
    return 0;
}

static int fail(struct lb_err *err)
{
    fprintf(stderr, "lorabatch: %s\n", err->msg);
    return lb_exit_code(err->status);
}

/* ---------------------------------------------------------------- the session */

struct unit {
    const struct lb_job_unit *ju;
    char *out_name;                 /* owned (part files get a suffix) */
    char *out_path;                 /* owned */
    int64_t rec_begin, rec_end;     /* this part's records of the shard */
    int64_t n_total;                /* rec_end - rec_begin */
    struct lb_shard *rd;            /* owned, opened lazily */
    struct lb_out *out;             /* owned, opened lazily */
    struct lb_reorder ro;
    int opened, finished;
    int64_t next_read;              /* index of the next record to read */
    int64_t committed_bytes;
    struct lb_shard_cursor cursor;  /* of the first uncommitted record */
    int64_t n_in_flight;
    /* counters of lines written (drained), and of those committed */
    int64_t n_done, n_err, tok_p, tok_g;
    int64_t c_done, c_err, c_tok_p, c_tok_g;
    /* per-line stats for lines held in the reorder ring, indexed by index % cap */
    unsigned char *held_err;
    int64_t *held_tok_p, *held_tok_g;
};

struct flight {
    int used, unit;
    int64_t index;
    struct lb_rec_id id;            /* owned string */
    struct lb_shard_cursor after;
    char **stop;                    /* owned copies */
    int n_stop;
    size_t max_stop;
    struct lb_tok_stream ts;
    struct lb_tok_text text;
    int stopped;
    size_t stop_at;                 /* byte where the first stop string starts */
    int32_t n_prompt;
};

struct session {
    struct run_opts o;
    struct lb_job job;
    struct lb_model m;
    int model_open;
    struct lb_tok *tok;
    struct lb_adapter *ads;         /* [job.n_adapter]; loaded[i] says which are open */
    char *ads_loaded;
    int64_t *shard_records;         /* [n_shard], -1 = not counted */
    struct unit *units;
    int n_units;
    char *canon;
    size_t n_canon;
    uint64_t fp;
    struct lb_ckpt prev;            /* the checkpoint found at start */
    int have_prev;
    char ckpt_path[4096];
    struct lb_lock lock;
    /* engine side */
    struct lb_backend be;
    int be_open;
    struct lb_runner r;
    struct lb_engine e;
    struct flight *fl;
    int n_fl, cap_fl;
    int32_t *slot_adapter;          /* [n_slot] adapter in each slot, -1 empty */
    int *adapter_slot;              /* [n_adapter] */
    int n_slot;
    int64_t n_loads, n_loads_ahead;
    double stall_s, ahead_s;        /* host seconds in loads at admission / ahead (load_ahead) */
    const struct lb_plan *plan;     /* borrowed, during the main loop */
    int64_t run_i;                  /* the plan run being admitted */
    int64_t load_i;                 /* plan.loads before this one are done or passed */
    /* totals and timing */
    int64_t n_records_total, n_done, n_err, tok_p, tok_g, n_done_at_start, tok_at_start;
    double t_start, t_last_ckpt, t_last_log;
    int64_t adm_rec;  /* admit_records: the next record of the current run (-1: its first) */
    int adm_stalled;  /* admit_records: a run waits for its slot */
    int adm_failed;   /* admit_records failed inside a step (the step's error is an input error) */
    int admit_ahead;  /* LB_ADMIT_AHEAD (default 1): admit_records also runs in the on_queued hook */
    /* LB_RUN_STATS=1: the main loop's host time per iteration, by the size of the iteration's step
     * ([0]: <= 512 tokens, [1]: larger): admitting records (reading, parsing, adapter loads made
     * here), the engine step (its planning and applying separately, from the engine), draining
     * finished records to the outputs, the rest (checkpoints, progress) */
    int stats;
    double st_admit[2], st_step[2], st_plan[2], st_apply[2], st_drain[2], st_rest[2];
    long long st_n[2];
    double st_admit_hook; /* admit_records' time inside the on_queued hook (LB_ADMIT_AHEAD) */
    int64_t elapsed_prev_ms;
    uint64_t ckpt_seq;
    int n_commits;
    int is_tty;
    struct lb_tok_ids ids;          /* scratch */
};

static void session_free(struct session *s)
{
    for (int i = 0; i < s->n_units; i++) {
        struct unit *u = &s->units[i];
        lb_shard_close(u->rd);
        lb_out_close(u->out);
        lb_reorder_free(&u->ro);
        free(u->out_name);
        free(u->out_path);
        free(u->held_err);
        free(u->held_tok_p);
        free(u->held_tok_g);
    }
    free(s->units);
    for (int i = 0; i < s->cap_fl; i++) {
        struct flight *f = &s->fl[i];
        if (f->id.is_str) free(f->id.s);
        for (int k = 0; k < f->n_stop; k++) free(f->stop[k]);
        free(f->stop);
        lb_tok_text_free(&f->text);
    }
    free(s->fl);
    lb_engine_free(&s->e);
    if (s->r.be) lb_runner_free(&s->r);
    if (s->be_open) lb_backend_close(&s->be);
    if (s->ads)
        for (int i = 0; i < s->job.n_adapter; i++) if (s->ads_loaded[i]) lb_adapter_free(&s->ads[i]);
    free(s->ads);
    free(s->ads_loaded);
    free(s->slot_adapter);
    free(s->adapter_slot);
    free(s->shard_records);
    lb_tok_free(s->tok);
    lb_tok_ids_free(&s->ids);
    if (s->model_open) lb_model_free(&s->m);
    lb_ckpt_free(&s->prev);
    lb_lock_release(&s->lock);
    free(s->canon);
    lb_job_free(&s->job);
}

/* Job file, model, tokenizer, adapters: everything validated before any generation. */
static int open_inputs(struct session *s, struct lb_err *err)
{
    lb_job_init(&s->job);
    int rc = lb_job_load(&s->job, s->o.job_path, err);
    if (!rc) rc = lb_job_resolve(&s->job, err);
    if (rc) return rc;
    if ((rc = lb_model_open(&s->m, s->job.model_dir, err))) return lb_err_prefix(err, "%s:%d: field \"model\"", s->job.path, s->job.line_model);
    s->model_open = 1;
    char *tj = lb_path_join(s->job.model_dir, "tokenizer.json");
    if (lb_file_exists(tj) && (rc = lb_tok_open(&s->tok, s->job.model_dir, err))) {
        free(tj);
        return lb_err_prefix(err, "model %s: tokenizer", s->job.model_dir);
    }
    free(tj);
    s->ads = calloc((size_t)s->job.n_adapter + 1, sizeof *s->ads);
    s->ads_loaded = calloc((size_t)s->job.n_adapter + 1, 1);
    if (!s->ads || !s->ads_loaded) return lb_err_set(err, LB_E_OOM, "out of memory");
    /* validate every adapter a unit uses; report all failures at once */
    char *used = calloc((size_t)s->job.n_adapter + 1, 1);
    for (int i = 0; i < s->job.n_unit; i++) if (s->job.units[i].adapter >= 0) used[s->job.units[i].adapter] = 1;
    char all[LB_ERR_MSG_CAP] = "";
    int n_bad = 0;
    for (int a = 0; a < s->job.n_adapter; a++) {
        if (!used[a]) continue;
        struct lb_err e1 = {0};
        const struct lb_job_adapter *ja = &s->job.adapters[a];
        if (lb_adapter_open(&s->ads[a], ja->name, ja->dir, &s->m, &e1)) {
            size_t l = strlen(all);
            snprintf(all + l, sizeof all - l, "%s%s:%d: adapter \"%s\": %s", n_bad ? "\n" : "", s->job.path, ja->line, ja->name, e1.msg);
            if (!n_bad || e1.status != LB_E_INPUT) rc = e1.status;
            n_bad++;
        } else s->ads_loaded[a] = 1;
    }
    free(used);
    if (n_bad) return lb_err_set(err, rc, "%s", all);
    return 0;
}

static int count_shards(struct session *s, struct lb_err *err)
{
    s->shard_records = malloc(sizeof(int64_t) * (size_t)(s->job.n_shard + 1));
    for (int i = 0; i < s->job.n_shard; i++) {
        struct lb_shard *rd;
        int rc = lb_shard_open(&rd, s->job.shards[i].path, 0, err);
        if (rc) return rc;
        struct lb_shard_line ln;
        int64_t n = 0;
        while ((rc = lb_shard_next(rd, &ln, err)) == 1) n++;
        lb_shard_close(rd);
        if (rc < 0) return rc;
        s->shard_records[i] = n;
    }
    return 0;
}

static char *part_name(const char *out_name, int i, int n)
{
    const char *suf = ".jsonl.zst";
    size_t l = strlen(out_name), ls = strlen(suf);
    if (l > ls && !strcmp(out_name + l - ls, suf)) return lb_strfmt("%.*s.part-%d-of-%d%s", (int)(l - ls), out_name, i, n, suf);
    return lb_strfmt("%s.part-%d-of-%d", out_name, i, n);
}

static int select_part(struct session *s, struct lb_err *err)
{
    int64_t nu = s->job.n_unit;
    int64_t *rec = malloc(sizeof(int64_t) * (size_t)(nu + 1));
    for (int64_t i = 0; i < nu; i++) rec[i] = s->shard_records[s->job.units[i].shard];
    int64_t n_out = 0;
    struct lb_plan_part_range *rg = malloc(sizeof *rg * (size_t)(nu + 1));
    int rc = lb_plan_part_units(nu, rec, s->o.part_i, s->o.part_n, rg, nu + 1, &n_out, err);
    if (rc) { free(rec); free(rg); return rc; }
    s->units = calloc((size_t)(n_out + 1), sizeof *s->units);
    for (int64_t k = 0; k < n_out; k++) {
        struct unit *u = &s->units[s->n_units++];
        u->ju = &s->job.units[rg[k].unit];
        u->rec_begin = rg[k].rec_begin;
        u->rec_end = rg[k].rec_end;
        u->n_total = u->rec_end - u->rec_begin;
        int whole = u->rec_begin == 0 && u->rec_end == rec[rg[k].unit];
        u->out_name = whole ? strdup(u->ju->out_name) : part_name(u->ju->out_name, s->o.part_i, s->o.part_n);
        u->out_path = lb_path_join(s->job.out_dir, u->out_name);
        s->n_records_total += u->n_total;
    }
    free(rec);
    free(rg);
    return 0;
}

/* canonical text: the job's plus the part, so parts never take each other's checkpoints */
static int make_canon(struct session *s, struct lb_err *err)
{
    char *c = NULL;
    size_t n = 0;
    int rc = lb_job_canon(&s->job, &c, &n, err);
    if (rc) return rc;
    s->canon = lb_strfmt("%spart=%d/%d\n", c, s->o.part_i, s->o.part_n);
    free(c);
    s->n_canon = strlen(s->canon);
    s->fp = lb_job_fingerprint(s->canon, s->n_canon);
    return 0;
}

static int mkdir_p(const char *dir, struct lb_err *err)
{
    char *p = strdup(dir);
    for (char *q = p + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(p, 0777) && errno != EEXIST) { int e = errno; free(p); return lb_err_set(err, LB_E_IO, "cannot create folder %s: %s", dir, strerror(e)); }
            *q = '/';
        }
    int rc = 0;
    if (mkdir(p, 0777) && errno != EEXIST) rc = lb_err_set(err, LB_E_IO, "cannot create output folder %s: %s", dir, strerror(errno));
    free(p);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints */

static int write_ckpt(struct session *s, int finished, struct lb_err *err)
{
    struct lb_ckpt c;
    lb_ckpt_init(&c);
    c.fingerprint = s->fp;
    c.canon = s->canon;
    c.n_canon = s->n_canon;
    c.part_i = s->o.part_i;
    c.part_n = s->o.part_n;
    c.finished = finished;
    c.seq = ++s->ckpt_seq;
    c.time_unix_ms = (int64_t)time(NULL) * 1000;
    c.elapsed_ms = s->elapsed_prev_ms + (int64_t)((lb_now_s() - s->t_start) * 1000);
    c.n_unit = s->n_units;
    c.units = calloc((size_t)s->n_units + 1, sizeof *c.units);
    for (int i = 0; i < s->n_units; i++) {
        struct unit *u = &s->units[i];
        struct lb_ckpt_unit *cu = &c.units[i];
        cu->name = u->out_name;
        cu->out_committed_bytes = u->committed_bytes;
        cu->in_offset = u->cursor.offset;
        cu->in_line = u->cursor.line;
        cu->n_rec_done = u->c_done;
        cu->n_rec_error = u->c_err;
        cu->n_tok_prompt = u->c_tok_p;
        cu->n_tok_gen = u->c_tok_g;
        cu->flags = u->finished ? LB_CKPT_UNIT_FINISHED : 0;
        c.n_rec_done += u->c_done;
        c.n_rec_error += u->c_err;
        c.n_tok_prompt += u->c_tok_p;
        c.n_tok_gen += u->c_tok_g;
    }
    int rc = lb_ckpt_write(s->ckpt_path, &c, err);
    free(c.units);
    return rc;
}

static int drain_unit(struct session *s, struct unit *u, struct lb_err *err)
{
    if (!u->opened) return 0;
    int64_t before = u->ro.next, n = 0;
    int rc = lb_reorder_drain(&u->ro, u->out, &n, err);
    for (int64_t i = before; i < before + n; i++) {
        int64_t k = i % u->ro.cap;
        u->n_done++;
        u->n_err += u->held_err[k];
        u->tok_p += u->held_tok_p[k];
        u->tok_g += u->held_tok_g[k];
        s->n_done++;
        s->n_err += u->held_err[k];
        s->tok_p += u->held_tok_p[k];
        s->tok_g += u->held_tok_g[k];
    }
    return rc;
}

static int unit_complete(const struct unit *u) { return u->opened && u->ro.next >= u->rec_end && u->n_in_flight == 0; }

/* Close frames of every open output, fsync, then write the checkpoint (last). */
static int drain_all(struct session *s, struct lb_err *err)
{
    int rc = 0;
    for (int i = 0; i < s->n_units && !rc; i++) rc = drain_unit(s, &s->units[i], err);
    return rc;
}

static int commit_all(struct session *s, struct lb_err *err)
{
    int rc = 0;
    int all_done = 1;
    for (int i = 0; i < s->n_units; i++) {
        struct unit *u = &s->units[i];
        if (u->finished) continue;
        if (u->opened) {
            if ((rc = drain_unit(s, u, err))) return rc;
            if ((rc = lb_out_commit(u->out, &u->committed_bytes, err))) return rc;
            u->cursor = u->ro.next_cursor;
            u->c_done = u->n_done;
            u->c_err = u->n_err;
            u->c_tok_p = u->tok_p;
            u->c_tok_g = u->tok_g;
            if (unit_complete(u)) {
                u->finished = 1;
                lb_out_close(u->out);
                u->out = NULL;
                lb_shard_close(u->rd);
                u->rd = NULL;
            }
        }
        if (!u->finished) all_done = 0;
    }
    if ((rc = write_ckpt(s, all_done, err))) return rc;
    s->t_last_ckpt = lb_now_s();
    s->n_commits++;
    if (s->o.kill_after_commits && s->n_commits >= s->o.kill_after_commits) _exit(99);
    return 0;
}

/* ---------------------------------------------------------------- records in and out */

static int open_unit(struct session *s, struct unit *u, struct lb_err *err)
{
    int rc;
    if ((rc = lb_shard_open(&u->rd, s->job.shards[u->ju->shard].path, 0, err))) return rc;
    if (u->cursor.line > 0 || u->cursor.offset > 0) {
        if ((rc = lb_shard_seek(u->rd, &u->cursor, err))) return rc;
    } else if (u->rec_begin > 0) { /* a part range: skip to its first record */
        struct lb_shard_line ln;
        for (int64_t i = 0; i < u->rec_begin; i++)
            if ((rc = lb_shard_next(u->rd, &ln, err)) != 1) return rc < 0 ? rc : lb_err_set(err, LB_E_CORRUPT, "%s: shorter than counted", u->out_name);
        lb_shard_tell(u->rd, &u->cursor);
    }
    u->next_read = u->cursor.line;
    if ((rc = lb_out_open(&u->out, u->out_path, u->committed_bytes, s->job.zstd_level, err))) return rc;
    int cap = s->cap_fl + 8;
    if ((rc = lb_reorder_init(&u->ro, &u->cursor, cap, err))) return rc;
    u->held_err = calloc((size_t)cap, 1);
    u->held_tok_p = calloc((size_t)cap, sizeof(int64_t));
    u->held_tok_g = calloc((size_t)cap, sizeof(int64_t));
    if (!u->held_err || !u->held_tok_p || !u->held_tok_g) return lb_err_set(err, LB_E_OOM, "out of memory");
    u->opened = 1;
    return 0;
}

static int put_line(struct unit *u, int64_t index, char *line, size_t n, const struct lb_shard_cursor *after, int is_err,
                    int64_t tok_p, int64_t tok_g, struct lb_err *err)
{
    int64_t k = index % u->ro.cap;
    u->held_err[k] = (unsigned char)is_err;
    u->held_tok_p[k] = tok_p;
    u->held_tok_g[k] = tok_g;
    return lb_reorder_put(&u->ro, index, line, n, after, err);
}

static int put_error(struct unit *u, const struct lb_rec_id *id, int64_t index, const char *code, const char *msg,
                     const struct lb_shard_cursor *after, struct lb_err *err)
{
    char *line;
    size_t n;
    int rc = lb_out_line_error(&line, &n, id, index, u->ju->adapter_name, code, msg, err);
    if (rc) return rc;
    return put_line(u, index, line, n, after, 1, 0, 0, err);
}

static int find_flight(struct session *s)
{
    for (int i = 0; i < s->cap_fl; i++) if (!s->fl[i].used) return i;
    return -1;
}

static int on_token(void *ctx, int64_t user, const int32_t *tokens, int n_tokens)
{
    struct session *s = ctx;
    struct flight *f = &s->fl[user];
    if (!s->tok) return 0;
    size_t before = f->text.n;
    struct lb_err e = {0};
    if (lb_tok_stream_feed(&f->ts, tokens[n_tokens - 1], &f->text, &e)) return 0;
    if (!f->n_stop || f->text.n == before) return 0;
    size_t from = before > f->max_stop ? before - f->max_stop : 0;
    size_t best = (size_t)-1;
    for (int k = 0; k < f->n_stop; k++) {
        const char *hit = memmem(f->text.s + from, f->text.n - from, f->stop[k], strlen(f->stop[k]));
        if (hit && (size_t)(hit - f->text.s) < best) best = (size_t)(hit - f->text.s);
    }
    if (best == (size_t)-1) return 0;
    f->stopped = 1;
    f->stop_at = best;
    return 1;
}

static int on_done(void *ctx, const struct lb_result *res, struct lb_err *err)
{
    struct session *s = ctx;
    struct flight *f = &s->fl[res->user];
    struct unit *u = &s->units[f->unit];
    int rc = 0;
    if (s->tok) {
        if (!f->stopped && (rc = lb_tok_stream_flush(&f->ts, &f->text, err))) return rc;
        if (!f->stopped && f->n_stop) { /* a stop string completed by the flush */
            for (int k = 0; k < f->n_stop; k++) {
                const char *hit = memmem(f->text.s, f->text.n, f->stop[k], strlen(f->stop[k]));
                if (hit && (!f->stopped || (size_t)(hit - f->text.s) < f->stop_at)) { f->stopped = 1; f->stop_at = (size_t)(hit - f->text.s); }
            }
        }
    }
    size_t n_text = f->stopped ? f->stop_at : f->text.n;
    struct lb_out_ok ok = {f->id, f->index, u->ju->adapter_name, s->tok ? f->text.s : "", s->tok ? n_text : 0,
                           res->finish == LB_FINISH_STOP ? "stop" : "length", res->n_prompt, res->n_tokens + res->n_eos,
                           res->tokens, res->n_tokens, s->job.token_ids || !s->tok};
    if (!ok.text) ok.text = "";
    char *line;
    size_t n;
    if ((rc = lb_out_line_ok(&line, &n, &ok, err))) return rc;
    rc = put_line(u, f->index, line, n, &f->after, 0, res->n_prompt, res->n_tokens + res->n_eos, err);
    u->n_in_flight--;
    if (f->id.is_str) free(f->id.s);
    memset(&f->id, 0, sizeof f->id);
    for (int k = 0; k < f->n_stop; k++) free(f->stop[k]);
    free(f->stop);
    f->stop = NULL;
    f->n_stop = 0;
    f->used = 0;
    s->n_fl--;
    return rc;
}

/* Read, parse and submit the next record of u. Returns 1 if one was consumed, 0 at the end. */
static int admit_one(struct session *s, int ui, int slot, struct lb_err *err)
{
    struct unit *u = &s->units[ui];
    if (u->next_read >= u->rec_end) return 0;
    struct lb_shard_line ln;
    int rc = lb_shard_next(u->rd, &ln, err);
    if (rc < 0) return rc;
    if (rc == 0) return lb_err_set(err, LB_E_CORRUPT, "%s: ended at line %lld, %lld lines were counted at start", s->job.shards[u->ju->shard].path,
                                   (long long)u->next_read, (long long)u->rec_end);
    struct lb_shard_cursor after;
    lb_shard_tell(u->rd, &after);
    u->next_read++;
    struct lb_record rec;
    lb_record_init(&rec);
    if (ln.too_long) rc = lb_record_too_long(&rec, ln.index, ln.n, &s->job.gen, err);
    else rc = lb_record_parse(&rec, ln.index, ln.data, ln.n, &s->job.gen, err);
    if (rc) { lb_record_free(&rec); return rc; }
    const int32_t *ids = NULL;
    int n_ids = 0;
    char msg[300];
    const char *code = rec.err_code;
    if (!code && rec.prompt) {
        if (!s->tok) { code = "no_tokenizer"; snprintf(msg, sizeof msg, "a text prompt needs %s/tokenizer.json; give prompt_token_ids", s->job.model_dir); }
        else {
            struct lb_err te = {0};
            if (lb_tok_encode(s->tok, rec.prompt, rec.n_prompt, LB_TOK_ADD_SPECIAL | LB_TOK_CONFIG_BOS, &s->ids, &te)) {
                code = "bad_prompt";
                snprintf(msg, sizeof msg, "field \"prompt\": %s", te.msg);
            } else { ids = s->ids.ids; n_ids = (int)s->ids.n; }
        }
    } else if (!code) {
        ids = rec.prompt_token_ids;
        n_ids = rec.n_prompt_token_ids;
        for (int i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= s->m.cfg.n_vocab) {
                code = LB_REC_E_FIELD;
                snprintf(msg, sizeof msg, "field \"prompt_token_ids\"[%d]: %d is outside the vocabulary [0, %d)", i, ids[i], s->m.cfg.n_vocab);
                break;
            }
    }
    if (!code && n_ids == 0) { code = LB_REC_E_FIELD; snprintf(msg, sizeof msg, "the prompt is empty (no tokens)"); }
    if (!code && n_ids >= s->m.cfg.max_pos) {
        code = "prompt_too_long";
        snprintf(msg, sizeof msg, "the prompt has %d tokens; the model's context is %d", n_ids, s->m.cfg.max_pos);
    }
    if (code) {
        rc = put_error(u, &rec.id, rec.index, code, rec.err_code ? rec.err_msg : msg, &after, err);
        lb_record_free(&rec);
        return rc ? rc : 1;
    }
    int fi = find_flight(s);
    struct flight *f = &s->fl[fi];
    struct lb_tok_text keep = f->text; /* reuse the text buffer, reset everything else */
    memset(f, 0, sizeof *f);
    f->text = keep;
    f->text.n = 0;
    f->used = 1;
    f->unit = ui;
    f->index = rec.index;
    f->id = rec.id;
    rec.id.s = NULL; /* moved */
    f->after = after;
    f->n_prompt = n_ids;
    if (rec.gen.n_stop) {
        f->stop = calloc((size_t)rec.gen.n_stop, sizeof *f->stop);
        for (int k = 0; k < rec.gen.n_stop; k++) {
            f->stop[k] = strdup(rec.gen.stop[k]);
            size_t l = strlen(f->stop[k]);
            if (l > f->max_stop) f->max_stop = l;
        }
        f->n_stop = rec.gen.n_stop;
    }
    if (s->tok) lb_tok_stream_init(&f->ts, s->tok, LB_TOK_SKIP_SPECIAL);
    /* the RNG key: record seed when given, else (shard, index) — never the batch */
    uint64_t rkey = rec.has_seed ? rec.gen.seed ^ 0x5bd1e9955bd1e995ull : ((uint64_t)u->ju->shard << 40) ^ (uint64_t)rec.index;
    struct lb_req q = {fi, ids, n_ids, slot, rec.gen.max_tokens,
                       {rec.gen.temperature, rec.gen.top_p, rec.gen.top_k, 0, lb_sample_key(s->job.gen.seed, rkey)},
                       s->job.gen.ignore_eos};
    s->n_fl++;
    u->n_in_flight++;
    rc = lb_engine_add(&s->e, &q, err);
    lb_record_free(&rec);
    return rc ? rc : 1;
}

/* ---------------------------------------------------------------- progress */

static void progress(struct session *s, int final)
{
    double now = lb_now_s();
    double interval = s->is_tty ? 0.5 : s->o.progress_s;
    if (!final && now - s->t_last_log < interval) return;
    s->t_last_log = now;
    double dt = now - s->t_start;
    int64_t done = s->n_done, total = s->n_records_total;
    double tps = dt > 0 ? (double)(s->tok_g - s->tok_at_start) / dt : 0;
    double rps = dt > 0 ? (double)(done - s->n_done_at_start) / dt : 0;
    double eta = rps > 0 ? (double)(total - done) / rps : 0;
    char line[256];
    snprintf(line, sizeof line, "records %lld/%lld (%.1f%%), errors %lld, %.1f gen tok/s, adapter loads %lld, ETA %.0f s",
             (long long)done, (long long)total, total ? 100.0 * (double)done / (double)total : 100.0, (long long)s->n_err, tps,
             (long long)s->n_loads, eta);
    if (s->is_tty) fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    else {
        time_t t = time(NULL);
        struct tm tm;
        char ts[32];
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        fprintf(stderr, "%s lorabatch: %s\n", ts, line);
    }
}

/* ---------------------------------------------------------------- run */

static int open_backend(struct session *s, struct lb_err *err)
{
    if (s->job.tensor_parallel > 1)
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: resources.tensor_parallel %d: tensor parallelism is not implemented yet (use 1)",
                          s->job.path, s->job.tensor_parallel);
    const char *dev = s->o.device;
    if (!dev) dev = s->job.device == LB_DEVICE_CPU ? "cpu" : s->job.device == LB_DEVICE_CUDA ? "cuda" : "auto";
    int rc;
    if (!strcmp(dev, "cuda") || !strcmp(dev, "auto")) {
        rc = lb_backend_cuda_open(&s->be, 0, err);
        if (!rc) { s->be_open = 1; return 0; }
        if (!strcmp(dev, "cuda")) return rc;
        fprintf(stderr, "lorabatch: no usable GPU (%s); running on the CPU backend\n", err->msg);
        memset(err, 0, sizeof *err);
    } else if (strcmp(dev, "cpu")) return lb_err_set(err, LB_E_INPUT, "--device must be auto, cpu or cuda, not \"%s\"", dev);
    rc = lb_backend_cpu_open(&s->be, s->o.threads, err);
    if (!rc) s->be_open = 1;
    return rc;
}

static int load_adapter(struct session *s, int a, int slot, int ahead, struct lb_err *err)
{
    double t0 = lb_now_s();
    int rc = lb_runner_load_adapter(&s->r, slot, &s->ads[a], err);
    if (rc) return rc;
    if (s->slot_adapter[slot] >= 0) s->adapter_slot[s->slot_adapter[slot]] = -1;
    s->slot_adapter[slot] = a;
    s->adapter_slot[a] = slot;
    s->n_loads++;
    if (ahead) {
        s->n_loads_ahead++;
        s->ahead_s += lb_now_s() - t0;
    } else s->stall_s += lb_now_s() - t0;
    return 0;
}

/* A plan load (plan.h, struct lb_plan_load) is still to be made: admission has not passed its
 * first run and its adapter is not in its slot. */
static int load_pending(const struct session *s, const struct lb_plan_load *ld)
{
    return ld->run_need >= s->run_i && s->adapter_slot[ld->adapter] != ld->slot;
}

/* It can be made now: the plan allows it (run_prefetch: the slot's previous occupant has no runs
 * left to admit) and the slot is empty or holds that occupant with none of its sequences left in
 * the engine. Loads into one slot thus happen in the plan's order. */
static int load_ready(const struct session *s, const struct lb_plan_load *ld)
{
    if (ld->run_prefetch > s->run_i) return 0;
    int occ = s->slot_adapter[ld->slot];
    return occ < 0 || (occ == ld->evicts && !lb_engine_slot_in_use(&s->e, ld->slot));
}

/* The plan's loads from s->load_i on; the ones no longer pending at the front are passed for
 * good. NULL without a plan. */
#define LOAD_WINDOW 256
static const struct lb_plan_load *pending_loads(struct session *s, int64_t *n)
{
    const struct lb_plan *p = s->plan;
    if (!p) return NULL;
    while (s->load_i < p->n_loads && !load_pending(s, &p->loads[s->load_i])) s->load_i++;
    *n = p->n_loads - s->load_i < LOAD_WINDOW ? p->n_loads - s->load_i : LOAD_WINDOW;
    return p->loads + s->load_i;
}

/* The first pending load among the next LOAD_WINDOW ones (in the plan's order) that is ready, or
 * NULL. */
static const struct lb_plan_load *ready_load(struct session *s)
{
    int64_t n = 0;
    const struct lb_plan_load *ld = pending_loads(s, &n);
    for (int64_t i = 0; i < n; i++)
        if (load_pending(s, &ld[i]) && load_ready(s, &ld[i])) return &ld[i];
    return NULL;
}

/* Admission: records of the plan's runs, in order, into the engine while its queue has room
 * (reading and parsing them, opening their shard's output, loading a run's adapter when its slot
 * is free and the load is not left to load_ahead). s->adm_rec (the next record of the current
 * run, -1: its first) and s->adm_stalled (a run waits for its slot) carry over between calls.
 * Called between steps, and (LB_ADMIT_AHEAD, default 1) also from the runner's on_queued hook,
 * so that this host work overlaps the step on the GPU: the engine takes the records at its next
 * step either way (an error there fails the step, and the run stops as after a device error,
 * with its checkpoint). Returns 0 or an error (< 0). */
static int defer_load(struct session *s, int adapter, int slot);

static int admit_records(struct session *s, struct lb_err *err)
{
    const struct lb_plan *plan = s->plan;
    int rc;
    while (s->run_i < plan->n_runs && s->n_fl < s->cap_fl) {
        const struct lb_plan_run *pr = &plan->runs[s->run_i];
        struct unit *u = &s->units[pr->unit];
        if (s->adm_rec < 0) s->adm_rec = pr->rec_begin;
        if (s->adm_rec >= pr->rec_end) { s->run_i++; s->adm_rec = -1; continue; }
        if (!u->opened && (rc = open_unit(s, u, err))) return rc;
        int slot = -1;
        if (pr->adapter >= 0) {
            slot = pr->slot;
            if (s->adapter_slot[pr->adapter] != slot) {
                if (s->slot_adapter[slot] >= 0 && lb_engine_slot_in_use(&s->e, slot)) { s->adm_stalled = 1; break; }
                if (defer_load(s, pr->adapter, slot)) { s->adm_stalled = 0; break; }
                if ((rc = load_adapter(s, pr->adapter, slot, 0, err))) return rc;
            }
        }
        s->adm_stalled = 0;
        /* the reorder window bounds how far reading may run ahead of writing */
        if (u->next_read - u->ro.next >= u->ro.cap) {
            if ((rc = drain_unit(s, u, err))) return rc;
            if (u->next_read - u->ro.next >= u->ro.cap) break;
        }
        rc = admit_one(s, (int)pr->unit, slot, err);
        if (rc < 0) return rc;
        s->adm_rec++;
    }
    return 0;
}

/* The runner's on_queued hook: while the GPU runs a step, make the plan's ready loads (in its
 * order), up to LOAD_AHEAD_BYTES of adapters for every LOAD_AHEAD_TOK tokens of the step (at
 * least that much, and at least one load). A copy is queued behind the step (or beside it, on a
 * copy stream), so the step still reads a slot's old occupant; the host-side work of a load
 * (reading the mapped file, converting into pinned memory) overlaps the step instead of leaving
 * the GPU idle between steps. The bound keeps that host work within about the step's GPU time:
 * 256 MiB is ~35-45 ms of copying at host memory speed, about a 512-sequence decode step or a
 * 2048-token prefill of an 8B model. The next ready load's file is announced to the kernel
 * (page-cache readahead). */
#define LOAD_AHEAD_BYTES ((size_t)256 << 20)
#define LOAD_AHEAD_TOK 2048
static int load_ahead(void *ctx, int n_tok, struct lb_err *err)
{
    struct session *s = ctx;
    const struct lb_plan_load *ld;
    size_t done = 0, bound = LOAD_AHEAD_BYTES;
    if (n_tok > LOAD_AHEAD_TOK) bound *= (size_t)(n_tok / LOAD_AHEAD_TOK);
    while (done < bound && (ld = ready_load(s))) {
        int rc = load_adapter(s, ld->adapter, ld->slot, 1, err);
        if (rc) return rc;
        done += s->plan->adapters[ld->adapter].bytes > 0 ? s->plan->adapters[ld->adapter].bytes : 1;
    }
    if ((ld = ready_load(s))) lb_adapter_prefetch(&s->ads[ld->adapter]);
    if (s->admit_ahead) {
        const double t0 = s->stats ? lb_now_s() : 0;
        int rc = admit_records(s, err);
        if (s->stats) s->st_admit_hook += lb_now_s() - t0;
        if (rc < 0) {
            s->adm_failed = 1; /* the step fails with it; run_job words the error for input */
            return rc;
        }
    }
    return 0;
}

/* Admission reached a run whose adapter is not loaded and whose slot is free: leave the load to
 * the next step's load_ahead (1) when the engine has any sequence for that step and the load is
 * ready among the plan's next ones; else load now (0). A load made now runs with the GPU idle
 * (host time: reading the file, converting into pinned memory; ~33 ms for an average workload-3
 * adapter of an 8B model); made in the hook it overlaps the step, and the run's sequences join
 * one step later, which costs the step their few rows. Only an empty engine loads at once. (An
 * earlier rule deferred only when the engine already had max_seqs sequences: on the H100, run 9,
 * 51 of 196 loads were made ahead and admission stalled 4.8 s of the 63.9 s.) */
static int defer_load(struct session *s, int adapter, int slot)
{
    if (lb_engine_idle(&s->e)) return 0;
    int64_t n = 0;
    const struct lb_plan_load *ld = pending_loads(s, &n);
    for (int64_t i = 0; i < n; i++)
        if (ld[i].adapter == adapter && ld[i].slot == slot) return load_pending(s, &ld[i]) && load_ready(s, &ld[i]);
    return 0;
}

static int write_summary(struct session *s, struct lb_err *err)
{
    double dt = (double)(s->elapsed_prev_ms) / 1000.0 + (lb_now_s() - s->t_start);
    json_t *o = json_pack("{s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:f,s:I,s:f,s:I,s:I,s:f,s:I,s:f,s:s}", "job", s->job.path, "part", s->o.part_i, "parts", s->o.part_n,
                          "records", (json_int_t)s->n_done, "errors", (json_int_t)s->n_err, "prompt_tokens", (json_int_t)s->tok_p,
                          "generated_tokens", (json_int_t)s->tok_g, "seconds", dt, "generated_tokens_per_s", dt > 0 ? (double)s->tok_g / dt : 0.0,
                          "adapter_loads", (json_int_t)s->n_loads, "adapter_load_seconds", s->stall_s + s->ahead_s,
                          "adapter_loads_ahead", (json_int_t)s->n_loads_ahead, "adapter_load_seconds_ahead", s->ahead_s, "engine_steps", (json_int_t)s->e.n_steps,
                          "prefill_steps", (json_int_t)s->e.n_prefill_steps, "prefill_adapters_per_step",
                          s->e.n_prefill_steps ? (double)s->e.n_prefill_adapters / (double)s->e.n_prefill_steps : 0.0,
                          "decode_steps", (json_int_t)s->e.n_decode_steps, "decode_adapters_per_step",
                          s->e.n_decode_steps ? (double)s->e.n_decode_adapters / (double)s->e.n_decode_steps : 0.0, "backend", s->be_open ? s->be.ops->name : "none");
    char *name = s->o.part_n > 1 ? lb_strfmt("summary.part-%d-of-%d.json", s->o.part_i, s->o.part_n) : strdup("summary.json");
    char *path = lb_path_join(s->job.out_dir, name);
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_SORT_KEYS) ? lb_err_set(err, LB_E_IO, "cannot write %s", path) : 0;
    json_decref(o);
    free(name);
    free(path);
    return rc;
}

static int restart_outputs(struct session *s, struct lb_err *err)
{
    for (int i = 0; i < s->n_units; i++)
        if (unlink(s->units[i].out_path) && errno != ENOENT)
            return lb_err_set(err, LB_E_IO, "cannot remove %s: %s", s->units[i].out_path, strerror(errno));
    if (unlink(s->ckpt_path) && errno != ENOENT) return lb_err_set(err, LB_E_IO, "cannot remove %s: %s", s->ckpt_path, strerror(errno));
    return 0;
}

/* A signal that arrives before the engine runs: nothing new to commit, the last checkpoint
 * (if any) stands; exit as interrupted. */
static int stop_requested(struct lb_err *err)
{
    if (!g_stop_signal) return 0;
    return lb_err_set(err, LB_E_INTERRUPTED, "stopped by signal %d during start-up; nothing was lost; run the same command to resume",
                      (int)g_stop_signal);
}

/* The folder remembers how it is split (whole job or N parts): a different split would
 * write the same files under other checkpoints. */
static int check_layout(struct session *s, struct lb_err *err)
{
    char *path = lb_path_join(s->job.out_dir, ".lorabatch.layout");
    char *buf = NULL;
    size_t n = 0;
    int rc = 0, parts = 0;
    if (lb_file_exists(path)) {
        if ((rc = lb_file_read(path, &buf, &n, err))) goto done;
        if (sscanf(buf, "parts %d", &parts) != 1 || parts < 1) { rc = lb_err_set(err, LB_E_CORRUPT, "%s: unreadable", path); goto done; }
        if (parts != s->o.part_n)
            rc = lb_err_set(err, LB_E_INPUT, "output folder %s holds a run split in %d part(s); this run uses %d: use the same --part N, or another output folder",
                            s->job.out_dir, parts, s->o.part_n);
        goto done;
    }
    /* parts start side by side: write a temp file and rename it, so a reader sees all or nothing */
    char *tmp = lb_strfmt("%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "parts %d\n", s->o.part_n) < 0 || fclose(f) || rename(tmp, path))
        rc = lb_err_set(err, LB_E_IO, "cannot write %s: %s", path, strerror(errno));
    free(tmp);
done:
    free(buf);
    free(path);
    return rc;
}

/* The planner's drain slack (plan.h, drain_slack_pct): the guard for sequences that run longer
 * than estimated. With generation.ignore_eos every record generates exactly its max_tokens, so the
 * estimates are exact (but for records that set their own max_tokens or stop strings) and the
 * guard only keeps slots idle: on workload 3 (256 Zipf adapters, 32 slots, 4096 requests of 512
 * prompt and 256 generated tokens, 512 sequences, the H100's KV cache) the engine takes 2337 steps
 * with no slack against 2606 with the default 25% (bench/w3_sched_cpu.sh, a tiny model on the CPU
 * backend; the H100 took 2617 steps at 25% in run 17). */
static int32_t plan_slack(const struct session *s)
{
    return s->job.gen.ignore_eos ? 0 : LB_PLAN_DRAIN_SLACK_DEFAULT;
}

/* The planner's view of what is left: adapters (rank, bytes) and per unit the records not yet
 * committed, with token estimates (64 prompt tokens a record, max_tokens generated: only
 * batch fill, never correctness, depends on them). Returns the largest adapter rank. */
static int plan_inputs(const struct session *s, struct lb_plan_adapter **pa_out, struct lb_plan_unit **pu_out)
{
    struct lb_plan_adapter *pa = calloc((size_t)s->job.n_adapter + 1, sizeof *pa);
    struct lb_plan_unit *pu = calloc((size_t)s->n_units + 1, sizeof *pu);
    int max_rank = 1;
    for (int a = 0; a < s->job.n_adapter; a++) {
        pa[a].name = s->job.adapters[a].name;
        pa[a].rank = s->ads_loaded[a] && s->ads[a].max_rank > 0 ? s->ads[a].max_rank : 1;
        pa[a].bytes = s->ads_loaded[a] ? (size_t)s->ads[a].n_params * 2 : 0;
        if (pa[a].rank > max_rank) max_rank = pa[a].rank;
    }
    for (int i = 0; i < s->n_units; i++) {
        const struct unit *u = &s->units[i];
        int64_t start = u->cursor.line > u->rec_begin ? u->cursor.line : u->rec_begin;
        int64_t left = u->finished ? 0 : u->rec_end - start;
        pu[i] = (struct lb_plan_unit){u->ju->shard, u->ju->adapter, left, left * 64, left * s->job.gen.max_tokens};
    }
    *pa_out = pa;
    *pu_out = pu;
    return max_rank;
}

/* The memory budget of a plan (plan.h, struct lb_plan_mem) for a device of total_bytes of which
 * used_bytes are taken before lorabatch allocates anything (the CUDA context, other processes):
 * weights, adapter slots (max_rank ranks each), workspace at max_batch_tokens, KV pages of 16
 * tokens in bf16; one sequence of up to min(model context, 4096 + max_tokens) tokens must fit. */
static void mem_budget(const struct session *s, int max_rank, size_t total_bytes, size_t used_bytes, struct lb_plan_mem *mem)
{
    const struct lb_model_config *c = &s->m.cfg;
    size_t weight_bytes = 0;
    for (int f = 0; f < s->m.st.n_file; f++)
        for (int i = 0; i < s->m.st.files[f].n_tensor; i++) weight_bytes += s->m.st.files[f].tensors[i].n_bytes;
    size_t rank_bytes = 0;
    for (int t = 0; t < LB_T_COUNT; t++) {
        int ni, no;
        lb_model_target_dims(c, (enum lb_target)t, &ni, &no);
        rank_bytes += (size_t)(ni + no) * 2 * c->n_layer;
    }
    /* activations at max_batch_tokens (x, h, o, q, k, v, att, gate, up, LoRA and attention
     * scratch), logits of max_seqs rows, cuBLAS workspace and the upload ring; plus what is
     * already in use on the device */
    size_t ws = (size_t)s->job.max_batch_tokens * (size_t)(6 * c->n_hidden + 4 * c->n_ff + 2 * c->n_head * c->head_dim) * 2 +
                (size_t)s->job.max_seqs * c->n_vocab * 4 + ((size_t)256 << 20) + used_bytes;
    int64_t seq_tokens = 4096 + (int64_t)s->job.gen.max_tokens;
    if (seq_tokens > s->m.cfg.max_pos) seq_tokens = s->m.cfg.max_pos;
    *mem = (struct lb_plan_mem){total_bytes, s->job.gpu_memory_fraction, weight_bytes, ws,
                                (size_t)2 * c->n_layer * c->n_kv_head * c->head_dim * 2, 16,
                                s->job.max_lora_rank > max_rank ? s->job.max_lora_rank : max_rank, rank_bytes, seq_tokens};
}

static int run_job(struct session *s, struct lb_err *err)
{
    int rc;
    install_signals();
    if ((rc = open_inputs(s, err)) || (rc = stop_requested(err)) || (rc = count_shards(s, err)) || (rc = stop_requested(err)) || (rc = select_part(s, err)) || (rc = make_canon(s, err))) return rc;
    if ((rc = mkdir_p(s->job.out_dir, err))) return rc;
    if ((rc = lb_lock_acquire(&s->lock, s->job.out_dir, s->o.part_i, s->o.part_n, err))) return rc;
    if ((rc = check_layout(s, err))) return rc;
    lb_ckpt_path(s->ckpt_path, sizeof s->ckpt_path, s->job.out_dir, s->o.part_i, s->o.part_n);
    lb_ckpt_init(&s->prev);
    if (s->o.restart) {
        if ((rc = restart_outputs(s, err))) return rc;
    } else if ((rc = lb_ckpt_read(s->ckpt_path, &s->prev, &s->have_prev, err))) {
        return lb_err_prefix(err, "checkpoint (use --restart to start over)");
    }
    if (s->have_prev) {
        if (s->prev.fingerprint != s->fp || s->prev.n_canon != s->n_canon || memcmp(s->prev.canon, s->canon, s->n_canon)) {
            char diff[1500];
            lb_job_canon_diff(s->prev.canon, s->prev.n_canon, s->canon, s->n_canon, diff, sizeof diff);
            return lb_err_set(err, LB_E_INPUT, "%s: the job changed since the checkpoint in %s, refusing to resume:\n%s\n(use --restart to start over)",
                              s->job.path, s->job.out_dir, diff);
        }
        s->elapsed_prev_ms = s->prev.elapsed_ms;
        s->ckpt_seq = s->prev.seq;
        for (int i = 0; i < s->n_units; i++) {
            struct unit *u = &s->units[i];
            for (int k = 0; k < s->prev.n_unit; k++) {
                struct lb_ckpt_unit *cu = &s->prev.units[k];
                if (strcmp(cu->name, u->out_name)) continue;
                u->committed_bytes = cu->out_committed_bytes;
                u->cursor.offset = cu->in_offset;
                u->cursor.line = cu->in_line;
                u->c_done = u->n_done = cu->n_rec_done;
                u->c_err = u->n_err = cu->n_rec_error;
                u->c_tok_p = u->tok_p = cu->n_tok_prompt;
                u->c_tok_g = u->tok_g = cu->n_tok_gen;
                u->finished = (cu->flags & LB_CKPT_UNIT_FINISHED) != 0;
                s->n_done += u->n_done;
                s->n_err += u->n_err;
                s->tok_p += u->tok_p;
                s->tok_g += u->tok_g;
            }
        }
        if (s->prev.finished) {
            fprintf(stderr, "lorabatch: %s is already finished (%lld records in %s); nothing to do\n", s->job.path, (long long)s->n_done, s->job.out_dir);
            return 0;
        }
        fprintf(stderr, "lorabatch: resuming from the checkpoint: %lld of %lld records done\n", (long long)s->n_done, (long long)s->n_records_total);
    }
    s->n_done_at_start = s->n_done;
    s->tok_at_start = s->tok_g;
    /* plan over what is left */
    struct lb_plan_adapter *pa;
    struct lb_plan_unit *pu;
    int max_rank = plan_inputs(s, &pa, &pu);
    int n_used_adapters = 0;
    for (int a = 0; a < s->job.n_adapter; a++) n_used_adapters += s->ads_loaded[a];
    s->n_slot = s->job.gpu_adapter_slots < 1 ? 1 : s->job.gpu_adapter_slots;
    if (n_used_adapters && s->n_slot > n_used_adapters) s->n_slot = n_used_adapters;
    /* backend first: on a GPU the plan's memory budget comes from the device's own figures */
    struct lb_plan plan = {0};
    if ((rc = stop_requested(err)) || (rc = open_backend(s, err))) { free(pu); free(pa); goto out; }
    struct lb_plan_input pin = {s->job.n_adapter, pa, s->n_units, pu, s->n_slot, s->job.max_seqs, s->job.max_batch_tokens, 0,
                                LB_PLAN_POLICY_FILL, plan_slack(s), {0}};
    size_t dev_free = 0, dev_total = 0;
    if (s->be.ops->mem_info) {
        if ((rc = s->be.ops->mem_info(&s->be, &dev_free, &dev_total, err))) { free(pu); free(pa); goto out; }
        mem_budget(s, max_rank, dev_total, dev_total - dev_free, &pin.mem);
    }
    rc = lb_plan_build(&pin, &plan, err);
    free(pu);
    free(pa);
    if (rc) { lb_err_prefix(err, "plan"); goto out; }
    /* runner, engine */
    int ps = 16;
    int64_t ctx_pages = (s->m.cfg.max_pos + ps - 1) / ps;
    const struct lb_model_config *c = &s->m.cfg;
    size_t page_bytes = (size_t)2 * c->n_layer * ps * c->n_kv_head * c->head_dim * lb_dtype_size(s->be.ops->act_dtype == LB_F32 ? LB_F32 : LB_BF16);
    /* never more pages than max_seqs sequences of the model's whole context can use */
    int64_t want = (int64_t)s->job.max_seqs * ctx_pages + 1;
    if (plan.budget.checked) {
        /* GPU: every page that gpu_memory_fraction leaves after weights, slots and workspace */
        if (want > plan.budget.n_kv_pages) want = plan.budget.n_kv_pages;
        fprintf(stderr, "lorabatch: KV cache %lld pages of %d tokens (%.2f GiB) from gpu_memory_fraction %.2f of %.1f GiB "
                        "(weights %.2f GiB, %d slots %.2f GiB, workspace and in use %.2f GiB)\n",
                (long long)want, ps, (double)want * (double)page_bytes / 1073741824.0, s->job.gpu_memory_fraction,
                dev_total / 1073741824.0, plan.budget.weight_bytes / 1073741824.0, s->n_slot, plan.budget.slots_bytes / 1073741824.0,
                plan.budget.workspace_bytes / 1073741824.0);
    } else {
        /* CPU: at most 4 GiB, at least one sequence of the model's whole context */
        int64_t cap_pages = (int64_t)(((size_t)4 << 30) / page_bytes);
        if (cap_pages < ctx_pages + 1) cap_pages = ctx_pages + 1;
        if (want > cap_pages) want = cap_pages;
    }
    if (want > INT32_MAX / ps) want = INT32_MAX / ps;
    /* LB_KV_PAGES=N: at most N pages (at least one whole sequence), so a run on the CPU can have a
     * GPU's cache (bench/w3_sched_cpu.sh) */
    const char *kv_env = getenv("LB_KV_PAGES");
    int64_t kv_cap = kv_env ? atoll(kv_env) : 0;
    if (kv_cap > 0 && kv_cap < want) want = kv_cap > ctx_pages + 1 ? kv_cap : ctx_pages + 1;
    struct lb_runner_opts ro = {s->job.max_batch_tokens, s->job.max_seqs, (int)want, ps, s->n_slot, max_rank};
    if ((rc = lb_runner_init(&s->r, &s->be, &s->m, &ro, err))) goto out;
    s->cap_fl = 2 * s->job.max_seqs;
    s->fl = calloc((size_t)s->cap_fl, sizeof *s->fl);
    s->slot_adapter = malloc(sizeof(int32_t) * (size_t)s->n_slot);
    s->adapter_slot = malloc(sizeof(int) * (size_t)(s->job.n_adapter + 1));
    for (int i = 0; i < s->n_slot; i++) s->slot_adapter[i] = -1;
    for (int i = 0; i < s->job.n_adapter; i++) s->adapter_slot[i] = -1;
    struct lb_engine_opts eo = {s->job.max_seqs, s->job.max_batch_tokens, on_token, on_done, s, 0};
    if ((rc = lb_engine_init(&s->e, &s->r, &eo, err))) goto out;
    s->t_start = s->t_last_ckpt = s->t_last_log = lb_now_s();
    s->is_tty = isatty(2);
    if ((rc = stop_requested(err))) goto out;
    /* main loop: admit in plan order, step, drain, checkpoint */
    s->adm_rec = -1;
    s->adm_stalled = 0;
    s->run_i = 0;
    s->load_i = 0;
    s->plan = &plan;
    s->r.on_queued = load_ahead;
    s->r.on_queued_ctx = s;
    s->stats = getenv("LB_RUN_STATS") && atoi(getenv("LB_RUN_STATS")) > 0;
    s->e.timing = s->stats;
    /* LB_ADMIT_AHEAD (default 1; 0: between steps only). H100 run 35, workload 3: the host's time
     * between large steps fell from 2.3-3.4 ms (runs 30-31) to ~0.9 ms, 20,094 tok/s against
     * run 34's 19,896; outputs identical on the CPU backend with and without */
    s->admit_ahead = !(getenv("LB_ADMIT_AHEAD") && atoi(getenv("LB_ADMIT_AHEAD")) == 0);
    for (;;) {
        double ta = s->stats ? lb_now_s() : 0, tb = 0, tc = 0, td = 0, pl = s->e.t_plan, ap = s->e.t_apply;
        /* admit while the engine's queue has room */
        if ((rc = admit_records(s, err))) goto out;
        if (lb_engine_idle(&s->e) && !(s->run_i < plan.n_runs)) break;
        if (s->stats) tb = lb_now_s();
        if (!lb_engine_idle(&s->e)) {
            if ((rc = lb_engine_step(&s->e, err))) {
                /* a device error mid-run (or an input error met by admission inside the step):
                 * the records finished before it are whole; commit them so a resume starts after
                 * them (the ones in flight are recomputed) */
                struct lb_err e2 = {0};
                if (!drain_all(s, &e2) && !commit_all(s, &e2)) {
                    size_t n = strlen(err->msg);
                    snprintf(err->msg + n, sizeof err->msg - n, "; %lld of %lld records done, checkpoint written to %s; %srun the same command to resume",
                             (long long)s->n_done, (long long)s->n_records_total, s->ckpt_path,
                             s->adm_failed ? "fix that, then " : "");
                }
                goto out;
            }
        } else if (s->adm_stalled) {
            rc = lb_err_set(err, LB_E_INTERNAL, "adapter slot schedule stalled with an idle engine");
            goto out;
        }
        if (s->stats) tc = lb_now_s();
        if ((rc = drain_all(s, err))) goto out;
        if (s->stats) td = lb_now_s();
        if (s->n_done >= s->job.error_rate_min_records && s->n_done > 0 &&
            (double)s->n_err / (double)s->n_done > s->job.max_error_rate) {
            if ((rc = commit_all(s, err))) goto out;
            rc = lb_err_set(err, LB_E_DATA, "%lld of %lld records so far are errors (%.0f%%), above resources.max_error_rate %.2f: stopping (see the error lines in %s)",
                            (long long)s->n_err, (long long)s->n_done, 100.0 * (double)s->n_err / (double)s->n_done, s->job.max_error_rate, s->job.out_dir);
            goto out;
        }
        if (g_stop_signal) {
            if ((rc = commit_all(s, err))) goto out;
            progress(s, 1);
            rc = lb_err_set(err, LB_E_INTERRUPTED, "stopped by signal %d; checkpoint written to %s; run the same command to resume",
                            (int)g_stop_signal, s->ckpt_path);
            goto out;
        }
        if (lb_now_s() - s->t_last_ckpt >= s->job.checkpoint_interval_s && (rc = commit_all(s, err))) goto out;
        progress(s, 0);
        if (s->stats && s->e.last_T > 0) {
            const int k = s->e.last_T > 512;
            s->st_n[k]++;
            s->st_admit[k] += tb - ta;
            s->st_step[k] += tc - tb;
            s->st_plan[k] += s->e.t_plan - pl;
            s->st_apply[k] += s->e.t_apply - ap;
            s->st_drain[k] += td - tc;
            s->st_rest[k] += lb_now_s() - td;
        }
    }
    if (s->stats && s->admit_ahead)
        fprintf(stderr, "run stats: admission inside the step (LB_ADMIT_AHEAD): %.3f s in all\n", s->st_admit_hook);
    for (int k = 0; s->stats && k < 2; k++)
        if (s->st_n[k]) {
            const double n = (double)s->st_n[k];
            fprintf(stderr,
                    "run stats: %lld steps of %s tokens, host us per step: admit %.1f, engine step %.1f (planning "
                    "%.1f, applying %.1f, the rest: the runner, i.e. queueing the GPU work and waiting for it), drain "
                    "%.1f, rest %.1f\n",
                    s->st_n[k], k ? "> 512" : "<= 512", 1e6 * s->st_admit[k] / n, 1e6 * s->st_step[k] / n,
                    1e6 * s->st_plan[k] / n, 1e6 * s->st_apply[k] / n, 1e6 * s->st_drain[k] / n, 1e6 * s->st_rest[k] / n);
        }
    for (int i = 0; i < s->n_units; i++)
        if (!s->units[i].finished && !s->units[i].opened && (rc = open_unit(s, &s->units[i], err))) goto out;
    if ((rc = commit_all(s, err))) goto out;
    progress(s, 1);
    rc = write_summary(s, err);
    if (!rc)
        fprintf(stderr, "lorabatch: done: %lld records (%lld errors), %lld generated tokens, outputs in %s\n", (long long)s->n_done,
                (long long)s->n_err, (long long)s->tok_g, s->job.out_dir);
out:
    s->plan = NULL;
    s->r.on_queued = NULL;
    lb_plan_free(&plan);
    return rc;
}

int lb_cmd_run(int argc, char **argv)
{
    struct session *s = calloc(1, sizeof *s);
    if (parse_opts(argc, argv, &s->o, "run")) { free(s); return LB_EXIT_USAGE; }
    s->lock.fd = s->lock.fd_shared = -1;
    struct lb_err err = {0};
    int rc = run_job(s, &err);
    session_free(s);
    free(s);
    return rc ? fail(&err) : 0;
}

int lb_cmd_plan(int argc, char **argv)
{
    struct session *s = calloc(1, sizeof *s);
    if (parse_opts(argc, argv, &s->o, "plan")) { free(s); return LB_EXIT_USAGE; }
    s->lock.fd = s->lock.fd_shared = -1;
    struct lb_err err = {0};
    int rc = 0;
    if ((rc = open_inputs(s, &err)) || (rc = count_shards(s, &err)) || (rc = select_part(s, &err))) goto out;
    struct lb_plan_adapter *pa;
    struct lb_plan_unit *pu;
    int max_rank = plan_inputs(s, &pa, &pu);
    int n_slot = s->job.gpu_adapter_slots;
    struct lb_plan_input pin = {s->job.n_adapter, pa, s->n_units, pu, n_slot, s->job.max_seqs, s->job.max_batch_tokens, 0,
                                LB_PLAN_POLICY_FILL, plan_slack(s), {0}};
    /* the budget of this machine's first GPU when there is one (and the job may use it), else of
     * an 80 GiB GPU */
    size_t dev_free = 0, dev_total = 0;
    const char *dev = s->o.device ? s->o.device : s->job.device == LB_DEVICE_CPU ? "cpu" : "cuda";
    if (strcmp(dev, "cpu")) {
        struct lb_backend gpu = {0};
        struct lb_err e2 = {0};
        if (!lb_backend_cuda_open(&gpu, 0, &e2)) {
            if (!gpu.ops->mem_info || gpu.ops->mem_info(&gpu, &dev_free, &dev_total, &e2)) dev_total = 0;
            lb_backend_close(&gpu);
        }
    }
    if (dev_total) mem_budget(s, max_rank, dev_total, dev_total - dev_free, &pin.mem);
    else mem_budget(s, max_rank, (size_t)80 << 30, 0, &pin.mem);
    struct lb_plan plan;
    rc = lb_plan_build(&pin, &plan, &err);
    free(pa);
    free(pu);
    if (!rc) {
        printf("job %s: %d work units (%lld records) in part %d/%d, model %s\n", s->job.path, s->n_units, (long long)s->n_records_total,
               s->o.part_i, s->o.part_n, s->job.model_dir);
        if (dev_total)
            printf("memory budget below: this machine's GPU 0, %.1f GiB, %.2f GiB already in use (bf16 weights and KV cache)\n",
                   dev_total / 1073741824.0, (dev_total - dev_free) / 1073741824.0);
        else
            printf("memory budget below assumes one 80 GiB GPU (bf16 weights and KV cache)\n");
        lb_plan_print(&plan, stdout);
    }
    lb_plan_free(&plan);
out:
    session_free(s);
    free(s);
    return rc ? fail(&err) : 0;
}

int lb_cmd_status(int argc, char **argv)
{
    struct run_opts o;
    if (parse_opts(argc, argv, &o, "status")) return LB_EXIT_USAGE;
    struct lb_job job;
    lb_job_init(&job);
    struct lb_err err = {0};
    int rc = lb_job_load(&job, o.job_path, &err);
    if (rc) { lb_job_free(&job); return fail(&err); }
    /* sum every checkpoint in the output folder: the whole job's and each part's */
    int64_t done = 0, errs = 0, tok_g = 0, elapsed = 0;
    int n_found = 0, n_finished = 0, n_expected = 0;
    char *pat = lb_path_join(job.out_dir, ".lorabatch*.ckpt");
    glob_t g;
    memset(&g, 0, sizeof g);
    if (glob(pat, 0, NULL, &g) == 0)
        for (size_t k = 0; k < g.gl_pathc; k++) {
            struct lb_ckpt c;
            lb_ckpt_init(&c);
            int found = 0;
            struct lb_err e1 = {0};
            if (lb_ckpt_read(g.gl_pathv[k], &c, &found, &e1)) { fprintf(stderr, "lorabatch status: %s\n", e1.msg); rc = e1.status; }
            if (found) {
                n_found++;
                done += c.n_rec_done;
                errs += c.n_rec_error;
                tok_g += c.n_tok_gen;
                elapsed += c.elapsed_ms;
                n_finished += c.finished;
                if (c.part_n > n_expected) n_expected = c.part_n;
                printf("%s: %s, %lld records (%lld errors), %lld generated tokens, %.1f s\n", g.gl_pathv[k], c.finished ? "finished" : "in progress",
                       (long long)c.n_rec_done, (long long)c.n_rec_error, (long long)c.n_tok_gen, (double)c.elapsed_ms / 1000.0);
            }
            lb_ckpt_free(&c);
        }
    globfree(&g);
    free(pat);
    if (!n_found) printf("no checkpoint in %s: the job has not started\n", job.out_dir);
    else
        printf("total: %d of %d part(s) finished, %lld records (%lld errors), %lld generated tokens, %.1f s of run time\n", n_finished,
               n_expected, (long long)done, (long long)errs, (long long)tok_g, (double)elapsed / 1000.0);
    lb_job_free(&job);
    return rc ? lb_exit_code(rc) : 0;
}
