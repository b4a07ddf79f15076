/* test_engine.c — batch invariance of the CPU backend through the engine: a record's tokens
 * (greedy and sampled) and its logits do not depend on its batch neighbours, on max_seqs,
 * on the token budget (chunked prefill), on preemption, or on which slot holds its adapter. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "sample.h"
#include "t.h"
#include "tmodel.h"

#define N_REQ 7
#define MAX_NEW 12

static char g_dir[256];
static struct lb_model g_m;
static struct lb_adapter g_ad[2];
static const int32_t prompts[N_REQ][40] = {
    {5, 6, 7}, {9}, {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27},
    {40, 41, 42, 43, 44}, {100, 3, 100, 3}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7},
    {300, 301}};
static const int plen[N_REQ] = {3, 1, 17, 5, 4, 34, 2};
static const int adapter_of[N_REQ] = {-1, 0, 1, 0, -1, 1, 0}; /* -1 base, else g_ad index */

struct collect { int32_t tok[N_REQ][MAX_NEW + 1]; int n[N_REQ]; int finish[N_REQ]; };

static int on_done(void *ctx, const struct lb_result *r, struct lb_err *err)
{
    (void)err;
    struct collect *c = ctx;
    memcpy(c->tok[r->user], r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
    c->n[r->user] = r->n_tokens;
    c->finish[r->user] = r->finish;
    return 0;
}

/* A recording backend around the CPU one, to test forward.c's side of graph_begin/graph_end
 * (backend.h) without a GPU: a key's first step runs as ops, its second is recorded (the ops are
 * kept, not run, until graph_end runs them), later ones replay the kept ops with the arguments of
 * the recording. If forward.c gave two steps of one key different op arguments, a replay would
 * run the recorded ones and the tokens would differ from the plain backend's. fail: every
 * recording fails (graph_end returns 1 and forward.c must run the ops again). */
struct rec_graph { uint64_t key; int seen, n; struct lb_op *ops; };
struct rec {
    struct lb_backend in;
    struct lb_backend_ops ops;
    int fail, recording, n_g, n_cur, cap_cur;
    struct rec_graph g[64], *cur_g;
    struct lb_op *cur;
};
static long long g_replay, g_recorded, g_failed;
static int g_wrap; /* run(): 0 plain CPU backend, 1 recording, 2 recording that always fails */

#define REC(be) ((struct rec *)(be)->impl)
static int w_supports(struct lb_backend *be, const struct lb_op *op) { return REC(be)->in.ops->supports(&REC(be)->in, op); }
static int w_setup(struct lb_backend *be, const struct lb_backend_setup *s, struct lb_err *err) { return REC(be)->in.ops->setup(&REC(be)->in, s, err); }
static struct lb_buf *w_alloc(struct lb_backend *be, enum lb_dtype dt, size_t n, struct lb_err *err) { return REC(be)->in.ops->alloc(&REC(be)->in, dt, n, err); }
static struct lb_buf *w_weight(struct lb_backend *be, enum lb_dtype dt, const void *h, size_t n, struct lb_err *err) { return REC(be)->in.ops->weight(&REC(be)->in, dt, h, n, err); }
static void w_buf_free(struct lb_backend *be, struct lb_buf *b) { REC(be)->in.ops->buf_free(&REC(be)->in, b); }
static int w_upload(struct lb_backend *be, struct lb_buf *b, size_t off, const void *src, enum lb_dtype dt, size_t n, struct lb_err *err) { return REC(be)->in.ops->upload(&REC(be)->in, b, off, src, dt, n, err); }
static int w_download(struct lb_backend *be, const struct lb_buf *b, size_t off, void *dst, enum lb_dtype dt, size_t n, struct lb_err *err) { return REC(be)->in.ops->download(&REC(be)->in, b, off, dst, dt, n, err); }
static int w_lora_load(struct lb_backend *be, int slot, int layer, enum lb_target t, const struct lb_lora_module *m, struct lb_err *err) { return REC(be)->in.ops->lora_load(&REC(be)->in, slot, layer, t, m, err); }
static int w_lora_clear(struct lb_backend *be, int slot, struct lb_err *err) { return REC(be)->in.ops->lora_clear(&REC(be)->in, slot, err); }
static int w_sync(struct lb_backend *be, struct lb_err *err) { return REC(be)->in.ops->sync(&REC(be)->in, err); }
static int w_run(struct lb_backend *be, const struct lb_op *op, struct lb_err *err)
{
    struct rec *w = REC(be);
    if (!w->recording) return w->in.ops->run(&w->in, op, err);
    if (w->n_cur == w->cap_cur) {
        w->cap_cur = w->cap_cur ? 2 * w->cap_cur : 256;
        w->cur = realloc(w->cur, sizeof *w->cur * (size_t)w->cap_cur);
    }
    w->cur[w->n_cur++] = *op;
    return 0;
}
static int w_play(struct rec *w, const struct lb_op *ops, int n, struct lb_err *err)
{
    for (int i = 0; i < n; i++) {
        int rc = w->in.ops->run(&w->in, &ops[i], err);
        if (rc) return rc;
    }
    return 0;
}
static int w_graph_begin(struct lb_backend *be, uint64_t key, struct lb_err *err)
{
    struct rec *w = REC(be);
    struct rec_graph *g = NULL;
    for (int i = 0; i < w->n_g && !g; i++)
        if (w->g[i].key == key) g = &w->g[i];
    if (!g) {
        if (w->n_g == 64) return 0;
        g = &w->g[w->n_g++];
        g->key = key;
    }
    if (g->ops) {
        g_replay++;
        int rc = w_play(w, g->ops, g->n, err);
        return rc ? rc : 1;
    }
    if (g->seen++ == 0) return 0;
    w->recording = 1;
    w->n_cur = 0;
    w->cur_g = g;
    return 0;
}
static int w_graph_end(struct lb_backend *be, int ok, struct lb_err *err)
{
    struct rec *w = REC(be);
    if (!w->recording) return 0;
    w->recording = 0;
    if (!ok || w->fail) {
        g_failed++;
        return 1;
    }
    struct rec_graph *g = w->cur_g;
    g->ops = malloc(sizeof *g->ops * (size_t)w->n_cur);
    memcpy(g->ops, w->cur, sizeof *g->ops * (size_t)w->n_cur);
    g->n = w->n_cur;
    g_recorded++;
    return w_play(w, g->ops, g->n, err);
}
static void w_destroy(struct lb_backend *be)
{
    struct rec *w = REC(be);
    w->in.ops->destroy(&w->in);
    for (int i = 0; i < w->n_g; i++) free(w->g[i].ops);
    free(w->cur);
    free(w);
    be->impl = NULL;
}

static void rec_wrap(struct lb_backend *be, int fail)
{
    struct rec *w = calloc(1, sizeof *w);
    w->in = *be;
    w->fail = fail;
    w->ops = *be->ops;
    w->ops.supports = w_supports;
    w->ops.setup = w_setup;
    w->ops.alloc = w_alloc;
    w->ops.weight = w_weight;
    w->ops.buf_free = w_buf_free;
    w->ops.upload = w_upload;
    w->ops.download = w_download;
    w->ops.run = w_run;
    w->ops.lora_load = w_lora_load;
    w->ops.lora_clear = w_lora_clear;
    w->ops.sync = w_sync;
    w->ops.destroy = w_destroy;
    w->ops.mem_info = NULL;
    w->ops.graph_begin = w_graph_begin;
    w->ops.graph_end = w_graph_end;
    be->ops = &w->ops;
    be->impl = w;
}

static void (*g_on_step)(const struct lb_engine *e); /* run(): called after every step */

/* Run requests `which` (mask) with the given limits; slot_of_adapter maps g_ad index -> slot. */
static int run(struct collect *out, unsigned which, int max_seqs, int max_batch, int n_page, const int *slot_of_adapter,
               float temperature, int64_t *n_preempt)
{
    struct lb_backend be;
    struct lb_runner r;
    struct lb_engine e;
    struct lb_err err = {0};
    memset(out, 0, sizeof *out);
    if (lb_backend_cpu_open(&be, 2, &err)) return -1;
    if (g_wrap) rec_wrap(&be, g_wrap == 2);
    struct lb_runner_opts ro = {max_batch, max_seqs, n_page, 4, 2, 16};
    int rc = lb_runner_init(&r, &be, &g_m, &ro, &err);
    for (int a = 0; a < 2 && !rc; a++) rc = lb_runner_load_adapter(&r, slot_of_adapter[a], &g_ad[a], &err);
    struct lb_engine_opts eo = {max_seqs, max_batch, NULL, on_done, out, 0};
    if (!rc) rc = lb_engine_init(&e, &r, &eo, &err);
    for (int i = 0; i < N_REQ && !rc; i++) {
        if (!(which & (1u << i))) continue;
        struct lb_req q = {i, prompts[i], plen[i], adapter_of[i] < 0 ? -1 : slot_of_adapter[adapter_of[i]], MAX_NEW,
                           {temperature, 0.9f, 50, 0, lb_sample_key(42, (uint64_t)i)}, 1};
        rc = lb_engine_add(&e, &q, &err);
    }
    while (!rc && !lb_engine_idle(&e)) {
        rc = lb_engine_step(&e, &err);
        if (!rc && g_on_step) g_on_step(&e);
    }
    if (rc) fprintf(stderr, "  engine: %s\n", err.msg);
    if (n_preempt) *n_preempt = e.n_preempt;
    lb_engine_free(&e);
    lb_runner_free(&r);
    lb_backend_close(&be);
    return rc;
}

static void check_same(const struct collect *a, const struct collect *b, unsigned which, const char *what)
{
    for (int i = 0; i < N_REQ; i++) {
        if (!(which & (1u << i))) continue;
        T_CHECK(a->n[i] == b->n[i] && !memcmp(a->tok[i], b->tok[i], sizeof(int32_t) * (size_t)a->n[i]),
                "%s: request %d differs (%d vs %d tokens)", what, i, a->n[i], b->n[i]);
    }
}

static void invariance(float temperature)
{
    const int slots[2] = {0, 1}, swapped[2] = {1, 0};
    struct collect alone[N_REQ], all, tmp;
    unsigned every = (1u << N_REQ) - 1;
    for (int i = 0; i < N_REQ; i++) T_CHECK(run(&alone[i], 1u << i, 1, 64, 64, slots, temperature, NULL) == 0, "alone %d", i);
    /* every request ran to MAX_NEW (EOS ignored) and adapters change the output */
    for (int i = 0; i < N_REQ; i++) T_CHECK(alone[i].n[i] == MAX_NEW, "request %d made %d tokens", i, alone[i].n[i]);
    T_CHECK(run(&all, every, 8, 256, 256, slots, temperature, NULL) == 0, "all");
    for (int i = 0; i < N_REQ; i++) check_same(&alone[i], &all, 1u << i, "full batch vs alone");
    T_CHECK(run(&tmp, every, 3, 5, 256, slots, temperature, NULL) == 0, "max_seqs 3, 5 tokens/step");
    check_same(&all, &tmp, every, "max_seqs 3 / chunked prefill");
    T_CHECK(run(&tmp, every, 8, 256, 256, swapped, temperature, NULL) == 0, "swapped slots");
    check_same(&all, &tmp, every, "adapter slots swapped");
    int64_t n_pre = 0;
    T_CHECK(run(&tmp, every, 7, 64, 14, slots, temperature, &n_pre) == 0, "tiny KV pool");
    check_same(&all, &tmp, every, "with preemption");
    T_CHECK(n_pre > 0, "the tiny KV pool (14 pages of 4) should force preemption, got %lld", (long long)n_pre);
}

static void test_greedy_invariance(void) { invariance(0.0f); }
static void test_sampled_invariance(void) { invariance(0.8f); }

/* Decode steps padded and run through the recording backend (graphs: forward.c's keys and
 * padding) give the plain backend's tokens, with buckets of 2 rows, the same limits as above, and
 * with every recording failing (the ops run again). */
static void graph_case(float temperature)
{
    const int slots[2] = {0, 1};
    const unsigned every = (1u << N_REQ) - 1;
    struct collect ref, got;
    const struct { int seqs, batch, pages; } lim[] = {{8, 256, 256}, {3, 5, 256}, {7, 64, 14}, {5, 9, 256}};
    setenv("LB_GRAPH_BUCKET", "2", 1);
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
        g_wrap = 0;
        T_CHECK(run(&ref, every, lim[k].seqs, lim[k].batch, lim[k].pages, slots, temperature, NULL) == 0, "plain");
        for (int mode = 1; mode <= 2; mode++) {
            long long rp = g_replay, rc = g_recorded, fl = g_failed;
            g_wrap = mode;
            T_CHECK(run(&got, every, lim[k].seqs, lim[k].batch, lim[k].pages, slots, temperature, NULL) == 0, "graphs");
            char what[96];
            snprintf(what, sizeof what, "graphs%s, max_seqs %d, %d tokens/step, %d pages", mode == 2 ? " (recordings fail)" : "",
                     lim[k].seqs, lim[k].batch, lim[k].pages);
            check_same(&ref, &got, every, what);
            if (mode == 1) T_CHECK(g_replay > rp && g_recorded > rc, "%s: %lld replays, %lld recordings", what, g_replay - rp, g_recorded - rc);
            else T_CHECK(g_failed > fl && g_replay == rp, "%s: %lld failed recordings, %lld replays", what, g_failed - fl, g_replay - rp);
        }
    }
    g_wrap = 0;
    unsetenv("LB_GRAPH_BUCKET");
}

static void test_graph_greedy(void) { graph_case(0.0f); }
static void test_graph_sampled(void) { graph_case(0.8f); }

/* Admission and prefill grouped by adapter (engine.h): the first step's chunks as (slot, tokens)
 * (no sequence decodes yet). */
struct step_log {
    int n_step, first_n, first_slot[8], first_tok[8];
    int bad_count; /* steps after which the engine's prefill/decode step counters were wrong */
    int64_t dec_steps, dec_adapters; /* the engine's counters after the last step */
};
static struct step_log g_log;
static void log_step(const struct lb_engine *e)
{
    int k = 0, distinct = 0;
    for (int i = 0; i < e->last_n_seq; i++) {
        int n = e->q_indptr[i + 1] - e->q_indptr[i];
        if (g_log.n_step == 0 && k < 8) { g_log.first_slot[k] = e->seq_slot[i]; g_log.first_tok[k] = n; k++; }
        if (i == 0 || e->seq_slot[i] != e->seq_slot[i - 1]) distinct++; /* the step is sorted by slot */
    }
    if (g_log.n_step == 0) g_log.first_n = k;
    g_log.n_step++;
    /* every step is counted once, as a step with prefill or without; one without adds its
     * distinct adapters (the base counting as one) */
    int64_t dd = e->n_decode_steps - g_log.dec_steps, da = e->n_decode_adapters - g_log.dec_adapters;
    if (e->n_prefill_steps + e->n_decode_steps != e->n_steps || dd < 0 || dd > 1 || (dd == 1 && da != distinct) ||
        (dd == 0 && da != 0))
        g_log.bad_count++;
    g_log.dec_steps = e->n_decode_steps;
    g_log.dec_adapters = e->n_decode_adapters;
}

/* run() with every request (greedy, 256 pages), LB_PREFILL_GROUP and LB_GROUP_WINDOW set as given
 * (NULL: unset), the steps logged into *log */
static int logged_run(struct collect *out, int max_seqs, int max_batch, const char *group, const char *window,
                      struct step_log *log)
{
    const int slots[2] = {0, 1};
    if (group) setenv("LB_PREFILL_GROUP", group, 1);
    if (window) setenv("LB_GROUP_WINDOW", window, 1);
    memset(&g_log, 0, sizeof g_log);
    g_on_step = log_step;
    int rc = run(out, (1u << N_REQ) - 1, max_seqs, max_batch, 256, slots, 0.0f, NULL);
    g_on_step = NULL;
    *log = g_log;
    unsetenv("LB_PREFILL_GROUP");
    unsetenv("LB_GROUP_WINDOW");
    return rc;
}

/* the first step's chunks are exactly (slot[k], tok[k]) for k < n */
static int first_step_is(const struct step_log *l, int n, const int *slot, const int *tok)
{
    if (l->first_n != n) return 0;
    for (int k = 0; k < n; k++)
        if (l->first_slot[k] != slot[k] || l->first_tok[k] != tok[k]) return 0;
    return 1;
}
#define FIRST_FMT "%d chunks (%d:%d %d:%d %d:%d)"
#define FIRST_ARGS(l) (l).first_n, (l).first_slot[0], (l).first_tok[0], (l).first_slot[1], (l).first_tok[1], \
                      (l).first_slot[2], (l).first_tok[2]

static void test_prefill_group(void)
{
    const unsigned every = (1u << N_REQ) - 1;
    struct collect on, off;
    struct step_log lon, loff;
    T_CHECK(logged_run(&on, 8, 8, NULL, NULL, &lon) == 0, "grouped");
    T_CHECK(logged_run(&off, 8, 8, "0", NULL, &loff) == 0, "admission order");
    check_same(&off, &on, every, "prefill grouped vs admission order");
    T_CHECK(lon.bad_count == 0 && loff.bad_count == 0, "step counters wrong after %d (grouped) and %d steps", lon.bad_count,
            loff.bad_count);
    T_CHECK(lon.dec_steps > 0 && lon.dec_adapters >= lon.dec_steps, "%lld decode steps, %lld adapters in them",
            (long long)lon.dec_steps, (long long)lon.dec_adapters);
    /* the first step (budget 8, prompts of 3, 1, 17, 5, 4, 34, 2 tokens on adapters -1, 0, 1, 0,
     * -1, 1, 0): grouped, the oldest (request 0, base) leads: requests 0 (3) and 4 (4) of the base,
     * then request 1 (1 token, slot 0); in admission order: 0 (3), 1 (1), 2 (4 of 17) */
    T_CHECK(first_step_is(&lon, 3, (const int[]){-1, -1, 0}, (const int[]){3, 4, 1}), "grouped first step: " FIRST_FMT,
            FIRST_ARGS(lon));
    T_CHECK(first_step_is(&loff, 3, (const int[]){-1, 0, 1}, (const int[]){3, 1, 4}), "admission-order first step: " FIRST_FMT,
            FIRST_ARGS(loff));
    /* admission with two seats: grouped, the head (request 0, base) and the next base request
     * (4) come in; in queue order requests 0 and 1 (adapter 0) */
    T_CHECK(logged_run(&on, 2, 64, NULL, NULL, &lon) == 0, "grouped, 2 seats");
    T_CHECK(logged_run(&off, 2, 64, "0", NULL, &loff) == 0, "queue order, 2 seats");
    check_same(&off, &on, every, "2 seats: grouped vs queue order");
    T_CHECK(first_step_is(&lon, 2, (const int[]){-1, -1}, (const int[]){3, 4}), "grouped admission: " FIRST_FMT, FIRST_ARGS(lon));
    T_CHECK(first_step_is(&loff, 2, (const int[]){-1, 0}, (const int[]){3, 1}), "queue-order admission: " FIRST_FMT, FIRST_ARGS(loff));
    /* the window counts submission places: a window of 1 turns admission grouping off (prefill
     * grouping stays), and request 4 is 4 places after request 0, so a window of 4 leaves it out
     * (request 1 comes in, as in queue order) and a window of 5 takes it */
    const char *win[3] = {"1", "4", "5"};
    for (int w = 0; w < 3; w++) {
        T_CHECK(logged_run(&on, 2, 64, NULL, win[w], &lon) == 0, "window %s, 2 seats", win[w]);
        check_same(&off, &on, every, "2 seats: window 1/4/5 vs queue order");
        const int *tok = w < 2 ? (const int[]){3, 1} : (const int[]){3, 4};
        const int *slot = w < 2 ? (const int[]){-1, 0} : (const int[]){-1, -1};
        T_CHECK(first_step_is(&lon, 2, slot, tok), "window %s: " FIRST_FMT, win[w], FIRST_ARGS(lon));
    }
}

/* logits of the last prompt token: bitwise equal alone and inside a mixed batch */
static void test_logits_bitwise(void)
{
    struct lb_backend be;
    struct lb_runner r;
    struct lb_err err = {0};
    T_CHECK(lb_backend_cpu_open(&be, 2, &err) == 0, "%s", err.msg);
    struct lb_runner_opts ro = {128, 8, 64, 4, 2, 16};
    T_CHECK(lb_runner_init(&r, &be, &g_m, &ro, &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_load_adapter(&r, 0, &g_ad[0], &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_load_adapter(&r, 1, &g_ad[1], &err) == 0, "%s", err.msg);
    int V = g_m.cfg.n_vocab;
    float *alone = malloc(sizeof(float) * (size_t)V * 3), *batch = malloc(sizeof(float) * (size_t)V * 3);
    int32_t tok[3];
    const int which[3] = {2, 3, 5};
    int page0 = 0;
    /* alone: each prompt in its own step, pages from 0 */
    for (int k = 0; k < 3; k++) {
        int i = which[k], n = plen[i];
        int32_t pos[40], sm[40], pages[16], qi[2] = {0, n}, kvl[1] = {n}, pi[2] = {0, (n + 3) / 4}, slot[1] = {adapter_of[i]}, orow[1] = {n - 1};
        for (int t = 0; t < n; t++) { pos[t] = t; sm[t] = t; }
        for (int p = 0; p < (n + 3) / 4; p++) pages[p] = p;
        struct lb_sample_param sp = {0};
        struct lb_step st = {n, 1, prompts[i], pos, sm, qi, kvl, pi, pages, slot, 1, orow, &sp};
        T_CHECK(lb_runner_step(&r, &st, &tok[k], alone + (size_t)k * V, &err) == 0, "%s", err.msg);
    }
    /* together: one step, disjoint pages, mixed adapters (base, slot 0, slot 1 in mixed order) */
    int32_t toks[128], pos[128], sm[128], pages[64], qi[4] = {0}, kvl[3], pi[4] = {0}, slot[3], orow[3];
    int T = 0, np = 0;
    for (int k = 0; k < 3; k++) {
        int i = which[k], n = plen[i];
        int first = page0 + np;
        for (int p = 0; p < (n + 3) / 4; p++) pages[np++] = 10 + first + p;
        for (int t = 0; t < n; t++) { toks[T] = prompts[i][t]; pos[T] = t; sm[T] = (10 + first + t / 4) * 4 + t % 4; T++; }
        qi[k + 1] = T;
        kvl[k] = n;
        pi[k + 1] = np;
        slot[k] = adapter_of[i];
        orow[k] = T - 1;
    }
    struct lb_sample_param sp[3] = {{0}};
    struct lb_step st = {T, 3, toks, pos, sm, qi, kvl, pi, pages, slot, 3, orow, sp};
    int32_t tb[3];
    T_CHECK(lb_runner_step(&r, &st, tb, batch, &err) == 0, "%s", err.msg);
    T_CHECK(!memcmp(alone, batch, sizeof(float) * (size_t)V * 3), "logits differ between alone and mixed batch");
    T_CHECK(!memcmp(tok, tb, sizeof tok), "tokens differ");
    /* and the adapters matter: request 3 (adapter 0) with its adapter removed gives other logits */
    T_CHECK(lb_runner_load_adapter(&r, 0, NULL, &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_step(&r, &st, tb, batch, &err) == 0, "%s", err.msg);
    T_CHECK(memcmp(alone + V, batch + V, sizeof(float) * (size_t)V) != 0, "clearing the adapter slot changed nothing");
    T_CHECK(!memcmp(alone, batch, sizeof(float) * (size_t)V), "base-model row changed when another slot was cleared");
    free(alone);
    free(batch);
    lb_runner_free(&r);
    lb_backend_close(&be);
}

/* sampling: deterministic per (key, step); temperature spreads choices; top_k=1 == greedy */
static void test_sampler(void)
{
    float logits[50];
    for (int i = 0; i < 50; i++) logits[i] = (float)((i * 37) % 50) / 10.0f;
    void *scratch = malloc(lb_sample_scratch_bytes(50));
    struct lb_sample_param g = {0.0f, 1.0f, 0, 0, 1};
    int best = lb_sample_row(logits, 50, &g, scratch);
    T_CHECK(logits[best] == 4.9f, "greedy picked %d", best);
    struct lb_sample_param k1 = {1.0f, 1.0f, 1, 0, 7};
    T_CHECK(lb_sample_row(logits, 50, &k1, scratch) == best, "top_k=1 must equal greedy");
    struct lb_sample_param p0 = {1.0f, 1e-6f, 0, 0, 7};
    T_CHECK(lb_sample_row(logits, 50, &p0, scratch) == best, "tiny top_p must equal greedy");
    int seen[50] = {0}, distinct = 0;
    for (int s = 0; s < 400; s++) {
        struct lb_sample_param p = {1.0f, 1.0f, 0, s, 99};
        int t = lb_sample_row(logits, 50, &p, scratch);
        struct lb_sample_param p2 = p;
        T_CHECK(lb_sample_row(logits, 50, &p2, scratch) == t, "same key/step must give the same token");
        if (!seen[t]++) distinct++;
    }
    T_CHECK(distinct > 10, "temperature 1 over 400 steps gave only %d distinct tokens", distinct);
    int kept[50] = {0};
    for (int s = 0; s < 400; s++) {
        struct lb_sample_param p = {1.0f, 1.0f, 3, s, 5};
        kept[lb_sample_row(logits, 50, &p, scratch)] = 1;
    }
    int n_kept = 0;
    for (int i = 0; i < 50; i++) n_kept += kept[i];
    T_CHECK(n_kept <= 3 && n_kept >= 2, "top_k=3 sampled %d distinct tokens", n_kept);
    double u0 = lb_rng_uniform(lb_sample_key(1, 2), 0), u1 = lb_rng_uniform(lb_sample_key(1, 3), 0);
    T_CHECK(u0 != u1 && u0 >= 0 && u0 < 1 && u1 >= 0 && u1 < 1, "rng keys");
    free(scratch);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lb_test_engine_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    char p[300];
    struct tm_cfg c = {"LlamaForCausalLM", 64, 2, 4, 2, 16, 96, 512, 0, 1, "BF16"};
    snprintf(p, sizeof p, "%s/model", g_dir);
    tm_model(p, &c, 11);
    const char *all7[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    const char *qv[] = {"q_proj", "v_proj"};
    struct lb_err err = {0};
    if (lb_model_open(&g_m, p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    snprintf(p, sizeof p, "%s/a0", g_dir);
    tm_adapter(p, &c, 8, 16, all7, 7, 5);
    if (lb_adapter_open(&g_ad[0], "a0", p, &g_m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    snprintf(p, sizeof p, "%s/a1", g_dir);
    tm_adapter(p, &c, 4, 8, qv, 2, 6);
    if (lb_adapter_open(&g_ad[1], "a1", p, &g_m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    T_RUN(test_sampler);
    T_RUN(test_logits_bitwise);
    T_RUN(test_greedy_invariance);
    T_RUN(test_sampled_invariance);
    T_RUN(test_graph_greedy);
    T_RUN(test_graph_sampled);
    T_RUN(test_prefill_group);
    lb_adapter_free(&g_ad[0]);
    lb_adapter_free(&g_ad[1]);
    lb_model_free(&g_m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {}
    return T_DONE();
}
