/* engine.c — continuous batching, paged KV, preemption by recompute (see engine.h). */
#include "engine.h"
#include "util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct lb_engine_seq {
    int64_t user, admit;
    int64_t qpos;       /* place in submission order (lb_engine_add's count) */
    int32_t *tok;       /* owned [cap]: prompt then generated */
    int n_tok, cap, n_prompt, n_gen;
    int n_cached;       /* tokens whose K/V are in the cache */
    int32_t *pages;     /* owned [page_cap] */
    int n_pages, page_cap;
    int slot, max_new, ignore_eos;
    int q_step;         /* tokens this sequence contributes to the step being built */
    struct lb_sample_param sp;
    float *margin;      /* owned [2 * cap] with opts.margins: (top-2 margin, max |logit|) per generated token */
};

static void seq_free(struct lb_engine_seq *s)
{
    if (!s) return;
    free(s->tok);
    free(s->pages);
    free(s->margin);
    free(s);
}

void lb_engine_free(struct lb_engine *e)
{
    if (!e) return;
    for (int i = 0; i < e->n_run; i++) seq_free(e->run[i]);
    for (int i = 0; i < e->n_wait; i++) seq_free(e->wait[(e->wait_head + i) % e->wait_cap]);
    free(e->run); free(e->wait); free(e->free_pages);
    free(e->tok); free(e->pos); free(e->slot_map); free(e->q_indptr); free(e->kv_len); free(e->page_indptr);
    free(e->page_idx); free(e->seq_slot); free(e->out_rows); free(e->out_tok); free(e->sp); free(e->order);
    free(e->logits);
    memset(e, 0, sizeof *e);
}

int lb_engine_init(struct lb_engine *e, struct lb_runner *r, const struct lb_engine_opts *o, struct lb_err *err)
{
    memset(e, 0, sizeof *e);
    e->r = r;
    e->o = *o;
    const char *g = getenv("LB_PREFILL_GROUP");
    e->group = !(g && atoi(g) == 0);
    g = getenv("LB_GROUP_WINDOW");
    e->group_window = g && atoi(g) > 0 ? atoi(g) : 256;
    if (e->o.max_seqs > r->opt.max_seq) e->o.max_seqs = r->opt.max_seq;
    if (e->o.max_batch_tokens > r->opt.max_tok) e->o.max_batch_tokens = r->opt.max_tok;
    if (e->o.max_batch_tokens < e->o.max_seqs) e->o.max_seqs = e->o.max_batch_tokens;
    e->page_size = r->opt.page_size;
    e->n_page = r->opt.n_page;
    e->max_ctx = r->m->cfg.max_pos;
    int NS = e->o.max_seqs, T = e->o.max_batch_tokens;
    e->free_pages = malloc(sizeof(int32_t) * (size_t)e->n_page);
    e->run = calloc((size_t)NS, sizeof *e->run);
    e->wait_cap = 64;
    e->wait = calloc((size_t)e->wait_cap, sizeof *e->wait);
    e->tok = malloc(sizeof(int32_t) * (size_t)T);
    e->pos = malloc(sizeof(int32_t) * (size_t)T);
    e->slot_map = malloc(sizeof(int32_t) * (size_t)T);
    e->q_indptr = malloc(sizeof(int32_t) * (size_t)(NS + 1));
    e->kv_len = malloc(sizeof(int32_t) * (size_t)NS);
    e->page_indptr = malloc(sizeof(int32_t) * (size_t)(NS + 1));
    e->page_idx = malloc(sizeof(int32_t) * (size_t)(e->n_page + NS));
    e->seq_slot = malloc(sizeof(int32_t) * (size_t)NS);
    e->out_rows = malloc(sizeof(int32_t) * (size_t)NS);
    e->out_tok = malloc(sizeof(int32_t) * (size_t)NS);
    e->sp = malloc(sizeof *e->sp * (size_t)NS);
    e->order = malloc(sizeof *e->order * (size_t)NS);
    if (e->o.margins && !(e->logits = malloc(sizeof(float) * (size_t)NS * (size_t)r->m->cfg.n_vocab))) {
        lb_engine_free(e);
        return lb_err_set(err, LB_E_OOM, "engine: out of memory");
    }
    if (!e->free_pages || !e->run || !e->wait || !e->tok || !e->pos || !e->slot_map || !e->q_indptr || !e->kv_len ||
        !e->page_indptr || !e->page_idx || !e->seq_slot || !e->out_rows || !e->out_tok || !e->sp || !e->order) {
        lb_engine_free(e);
        return lb_err_set(err, LB_E_OOM, "engine: out of memory");
    }
    for (int i = 0; i < e->n_page; i++) e->free_pages[i] = e->n_page - 1 - i; /* pop gives 0, 1, 2, ... */
    e->n_free = e->n_page;
    return 0;
}

static int wait_push(struct lb_engine *e, struct lb_engine_seq *s, int front)
{
    if (e->n_wait == e->wait_cap) {
        int nc = e->wait_cap * 2;
        struct lb_engine_seq **w = malloc(sizeof *w * (size_t)nc);
        if (!w) return -1;
        for (int i = 0; i < e->n_wait; i++) w[i] = e->wait[(e->wait_head + i) % e->wait_cap];
        free(e->wait);
        e->wait = w;
        e->wait_cap = nc;
        e->wait_head = 0;
    }
    if (front) {
        e->wait_head = (e->wait_head + e->wait_cap - 1) % e->wait_cap;
        e->wait[e->wait_head] = s;
    } else e->wait[(e->wait_head + e->n_wait) % e->wait_cap] = s;
    e->n_wait++;
    return 0;
}

int lb_engine_add(struct lb_engine *e, const struct lb_req *q, struct lb_err *err)
{
    if (q->n_prompt <= 0) return lb_err_set(err, LB_E_INPUT, "empty prompt");
    if (q->max_new <= 0) { /* nothing to generate: done without touching the model */
        struct lb_result res = {q->user, q->prompt, 0, q->n_prompt, 0, LB_FINISH_LENGTH, NULL};
        return e->o.on_done(e->o.ctx, &res, err);
    }
    if (q->n_prompt >= e->max_ctx)
        return lb_err_set(err, LB_E_INPUT, "prompt of %d tokens does not fit the model's context (%d)", q->n_prompt, e->max_ctx);
    int need_pages = (q->n_prompt + 1 + e->page_size - 1) / e->page_size;
    if (need_pages > e->n_page)
        return lb_err_set(err, LB_E_INPUT, "prompt of %d tokens needs %d KV pages, the cache has %d", q->n_prompt, need_pages, e->n_page);
    struct lb_engine_seq *s = calloc(1, sizeof *s);
    if (!s) return lb_err_set(err, LB_E_OOM, "engine: out of memory");
    int max_new = q->max_new;
    if (max_new > e->max_ctx - q->n_prompt) max_new = e->max_ctx - q->n_prompt;
    s->cap = q->n_prompt + (max_new > 0 ? max_new : 0) + 1;
    s->tok = malloc(sizeof(int32_t) * (size_t)s->cap);
    s->page_cap = (s->cap + e->page_size - 1) / e->page_size + 1;
    s->pages = malloc(sizeof(int32_t) * (size_t)s->page_cap);
    if (e->o.margins) s->margin = malloc(sizeof(float) * 2 * (size_t)s->cap);
    if (!s->tok || !s->pages || (e->o.margins && !s->margin) || wait_push(e, s, 0)) { seq_free(s); return lb_err_set(err, LB_E_OOM, "engine: out of memory"); }
    memcpy(s->tok, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
    s->n_tok = s->n_prompt = q->n_prompt;
    s->user = q->user;
    s->qpos = e->queue_counter++;
    s->slot = q->slot;
    s->max_new = max_new;
    s->sp = q->sp;
    s->ignore_eos = q->ignore_eos;
    return 0;
}

int lb_engine_idle(const struct lb_engine *e) { return e->n_run == 0 && e->n_wait == 0; }

int lb_engine_slot_in_use(const struct lb_engine *e, int slot)
{
    for (int i = 0; i < e->n_run; i++) if (e->run[i]->slot == slot) return 1;
    for (int i = 0; i < e->n_wait; i++) if (e->wait[(e->wait_head + i) % e->wait_cap]->slot == slot) return 1;
    return 0;
}

static void release_pages(struct lb_engine *e, struct lb_engine_seq *s)
{
    for (int i = s->n_pages - 1; i >= 0; i--) e->free_pages[e->n_free++] = s->pages[i];
    s->n_pages = 0;
    s->n_cached = 0;
}

/* Pages so that the seq can hold n tokens. 0 on success, -1 when the pool is empty. */
static int ensure_pages(struct lb_engine *e, struct lb_engine_seq *s, int n)
{
    int need = (n + e->page_size - 1) / e->page_size;
    while (s->n_pages < need) {
        if (!e->n_free) return -1;
        s->pages[s->n_pages++] = e->free_pages[--e->n_free];
    }
    return 0;
}

static void remove_run(struct lb_engine *e, int i)
{
    memmove(&e->run[i], &e->run[i + 1], sizeof *e->run * (size_t)(e->n_run - i - 1));
    e->n_run--;
}

/* Preempt the most recently admitted running sequence other than `keep`. */
static int preempt_one(struct lb_engine *e, struct lb_engine_seq *keep)
{
    int victim = -1;
    for (int i = e->n_run - 1; i >= 0; i--)
        if (e->run[i] != keep) { victim = i; break; }
    if (victim < 0) return 0;
    struct lb_engine_seq *s = e->run[victim];
    release_pages(e, s);
    remove_run(e, victim);
    e->n_preempt++;
    return wait_push(e, s, 1);
}

static int cmp_slot(const void *a, const void *b)
{
    const struct lb_engine_seq *x = *(struct lb_engine_seq *const *)a, *y = *(struct lb_engine_seq *const *)b;
    if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
    return x->admit < y->admit ? -1 : x->admit > y->admit;
}

static int is_eos(const struct lb_engine *e, int32_t t)
{
    const struct lb_model_config *c = &e->r->m->cfg;
    for (int i = 0; i < c->n_eos; i++) if (c->eos_ids[i] == t) return 1;
    return 0;
}

static int finish(struct lb_engine *e, int idx, enum lb_finish why, int n_eos, struct lb_err *err)
{
    struct lb_engine_seq *s = e->run[idx];
    struct lb_result res = {s->user, s->tok + s->n_prompt, s->n_gen - n_eos, s->n_prompt, n_eos, why, s->margin};
    release_pages(e, s);
    remove_run(e, idx);
    int rc = e->o.on_done(e->o.ctx, &res, err);
    seq_free(s);
    return rc;
}

static int run_index(const struct lb_engine *e, const struct lb_engine_seq *s)
{
    for (int k = 0; k < e->n_run; k++)
        if (e->run[k] == s) return k;
    return -1;
}

int lb_engine_step(struct lb_engine *e, struct lb_err *err)
{
    const double t0 = e->timing ? lb_now_s() : 0;
    e->last_T = 0;
    /* 1. admit waiting sequences while seats are free: the queue's head, then (e->group) the
     * waiting sequences of the head's adapter fewer than group_window places after it in
     * submission order, then the new head and its adapter, and so on. A sequence is passed only
     * by sequences submitted fewer than group_window places after it; when the queue cycles
     * through the adapters, each window's sequences are admitted as a whole, one adapter after
     * another (the running set is that of queue order at every window's end), so that the
     * sequences admitted in one step share an adapter instead of being one of each. */
    while (e->n_wait && e->n_run < e->o.max_seqs) {
        struct lb_engine_seq *s = e->wait[e->wait_head];
        e->wait_head = (e->wait_head + 1) % e->wait_cap;
        e->n_wait--;
        s->admit = e->admit_counter++;
        e->run[e->n_run++] = s;
        if (!e->group) continue;
        for (int i = 0; i < e->n_wait && i < e->group_window && e->n_run < e->o.max_seqs;) {
            struct lb_engine_seq *t = e->wait[(e->wait_head + i) % e->wait_cap];
            if (t->slot != s->slot || t->qpos - s->qpos >= e->group_window) { i++; continue; }
            for (int p = i; p > 0; p--) /* take entry i out: the ones before it move up by one */
                e->wait[(e->wait_head + p) % e->wait_cap] = e->wait[(e->wait_head + p - 1) % e->wait_cap];
            e->wait_head = (e->wait_head + 1) % e->wait_cap;
            e->n_wait--;
            t->admit = e->admit_counter++;
            e->run[e->n_run++] = t;
        }
    }
    if (!e->n_run) return 0;
    /* 2. token budget: decodes first (admission order), then prefill chunks. A decode that
     * needs a page nobody can give preempts the most recently admitted sequence (run[] is in
     * admission order, so already selected sequences are never the victim). */
    int budget = e->o.max_batch_tokens, n_sel = 0, rc = 0;
    for (int i = 0; i < e->n_run; i++) e->run[i]->q_step = 0; /* nonzero: taken (or passed over) this step */
    for (int i = 0; i < e->n_run && budget > 0; i++) {
        struct lb_engine_seq *s = e->run[i];
        if (s->n_cached < s->n_prompt || s->n_tok - s->n_cached != 1) continue;
        int gone = 0;
        while (ensure_pages(e, s, s->n_cached + 1)) {
            if (e->n_run == 1) { /* alone and still no room: the cache is too small for it */
                if ((rc = finish(e, 0, LB_FINISH_LENGTH, 0, err))) return rc;
                gone = 1;
                break;
            }
            int victim = e->n_run - 1;
            if (preempt_one(e, NULL)) return lb_err_set(err, LB_E_OOM, "engine: out of memory");
            if (victim == i) { gone = 1; break; }
        }
        if (gone) break;
        s->q_step = 1;
        e->order[n_sel++] = s;
        budget--;
    }
    /* Prefill chunks, grouped by adapter (e->group): the oldest sequence still prefilling names
     * the lead adapter, whose prefilling sequences go first (admission order); then the oldest of
     * the rest names the next one, and so on until the budget is spent. The oldest one is always
     * served, so none waits for ever; a large step then has one or a few adapters instead of
     * every adapter of the batch, which makes its LoRA work (the CUDA backend's dense path
     * multiplies every row by every adapter of the step) several times smaller. Decodes are
     * untouched: every running sequence decodes each step. Without grouping: admission order. */
    for (int more = 1; more && budget > 0;) {
        int lead = INT32_MIN;
        more = 0;
        for (int i = 0; i < e->n_run && budget > 0; i++) {
            struct lb_engine_seq *s = e->run[i];
            if (s->q_step || (s->n_cached >= s->n_prompt && s->n_tok - s->n_cached == 1)) continue;
            if (e->group) {
                if (lead == INT32_MIN) lead = s->slot;
                else if (s->slot != lead) { more = 1; continue; }
            }
            int todo = s->n_tok - s->n_cached;
            int room = (e->n_free + s->n_pages) * e->page_size - s->n_cached;
            int n = todo < budget ? todo : budget;
            if (n > room) n = room;
            if (n <= 0) { s->q_step = -1; continue; } /* no room: passed over this step */
            ensure_pages(e, s, s->n_cached + n);
            s->q_step = n;
            e->order[n_sel++] = s;
            budget -= n;
        }
    }
    if (!n_sel) {
        if (e->n_run > 1) { /* prefills hold every page: free the newest and try again next step */
            if (preempt_one(e, NULL)) return lb_err_set(err, LB_E_OOM, "engine: out of memory");
            return 0;
        }
        if (!e->n_run) return 0;
        return lb_err_set(err, LB_E_INTERNAL, "engine: no progress possible (%d running, %d free pages)", e->n_run, e->n_free);
    }
    /* 3. order by adapter slot (stable in admission order) and build the step */
    qsort(e->order, (size_t)n_sel, sizeof *e->order, cmp_slot);
    /* n_ad: distinct adapters among prefill chunks; n_all: among every sequence of the step */
    int T = 0, n_out = 0, n_pg = 0, n_ad = 0, ad_prev = INT32_MIN, n_all = 0, all_prev = INT32_MIN;
    e->q_indptr[0] = 0;
    e->page_indptr[0] = 0;
    for (int i = 0; i < n_sel; i++) {
        struct lb_engine_seq *s = e->order[i];
        if (s->n_cached < s->n_prompt && s->slot != ad_prev) { ad_prev = s->slot; n_ad++; } /* order[] is sorted by slot */
        if (s->slot != all_prev) { all_prev = s->slot; n_all++; }
        for (int k = 0; k < s->q_step; k++) {
            int p = s->n_cached + k;
            e->tok[T] = s->tok[p];
            e->pos[T] = p;
            e->slot_map[T] = s->pages[p / e->page_size] * e->page_size + p % e->page_size;
            T++;
        }
        e->q_indptr[i + 1] = T;
        e->kv_len[i] = s->n_cached + s->q_step;
        memcpy(&e->page_idx[n_pg], s->pages, sizeof(int32_t) * (size_t)s->n_pages);
        n_pg += s->n_pages;
        e->page_indptr[i + 1] = n_pg;
        e->seq_slot[i] = s->slot;
        if (s->n_cached + s->q_step == s->n_tok) {
            e->out_rows[n_out] = T - 1;
            e->sp[n_out] = s->sp;
            e->sp[n_out].step = s->n_gen;
            n_out++;
        }
    }
    struct lb_step st = {T, n_sel, e->tok, e->pos, e->slot_map, e->q_indptr, e->kv_len, e->page_indptr, e->page_idx,
                         e->seq_slot, n_out, e->out_rows, e->sp};
    e->last_T = T;
    e->last_n_seq = n_sel;
    if (n_ad) { e->n_prefill_steps++; e->n_prefill_adapters += n_ad; }
    else { e->n_decode_steps++; e->n_decode_adapters += n_all; }
    const double t1 = e->timing ? lb_now_s() : 0;
    rc = lb_runner_step(e->r, &st, e->out_tok, e->logits, err);
    e->n_steps++;
    if (rc) return rc;
    const double t2 = e->timing ? lb_now_s() : 0;
    e->t_plan += t1 - t0;
    /* 4. apply results */
    int o = 0;
    for (int i = 0; i < n_sel; i++) {
        struct lb_engine_seq *s = e->order[i];
        int is_prefill = s->n_cached < s->n_prompt;
        if (is_prefill) e->n_tok_prefill += s->q_step; else e->n_tok_decode += s->q_step;
        s->n_cached += s->q_step;
        if (s->n_cached < s->n_tok) continue;
        if (s->margin) {
            const float *lg = e->logits + (size_t)o * (size_t)e->r->m->cfg.n_vocab;
            float t1 = -INFINITY, t2 = -INFINITY, mx = 0.0f;
            for (int v = 0; v < e->r->m->cfg.n_vocab; v++) {
                float x = lg[v];
                if (x > t1) { t2 = t1; t1 = x; } else if (x > t2) t2 = x;
                if (fabsf(x) > mx) mx = fabsf(x);
            }
            s->margin[2 * s->n_gen] = t1 - t2;
            s->margin[2 * s->n_gen + 1] = mx;
        }
        int32_t t = e->out_tok[o++];
        s->tok[s->n_tok++] = t;
        s->n_gen++;
        /* run[] index looked up only for a sequence that ends: a search on every sequence of
         * every step was O(n_run^2) host time between GPU steps (~0.2 ms at 512 sequences) */
        if (!s->ignore_eos && is_eos(e, t)) { if ((rc = finish(e, run_index(e, s), LB_FINISH_STOP, 1, err))) return rc; continue; }
        if (e->o.on_token && e->o.on_token(e->o.ctx, s->user, s->tok + s->n_prompt, s->n_gen)) {
            if ((rc = finish(e, run_index(e, s), LB_FINISH_STOP, 0, err))) return rc;
            continue;
        }
        if (s->n_gen >= s->max_new || s->n_tok >= e->max_ctx) {
            if ((rc = finish(e, run_index(e, s), LB_FINISH_LENGTH, 0, err))) return rc;
            continue;
        }
    }
    if (e->timing) e->t_apply += lb_now_s() - t2;
    return 0;
}
