/* forward.c — the decoder forward pass as backend ops (see forward.h).
 *
 * Per layer (HF Llama/Mistral/Qwen2/Qwen3 order):
 *   h = rmsnorm(x)                       (fused: x += previous block's output first)
 *   q,k,v = h Wq/Wk/Wv (+bias) ; += LoRA(q,k,v) reading h once
 *   Qwen3: q,k = per-head rmsnorm(q,k)
 *   rope(q,k) ; cache k,v ; att = attention(q, cache)
 *   o = att Wo ; += LoRA(o)
 *   h = rmsnorm(x += o)
 *   g,u = h Wg, h Wu ; += LoRA(gate,up) ; g = silu(g) * u   (one op with the LoRA: LB_LORA_ACT)
 *   d = g Wd ; += LoRA(down)             (d lives in `o`; added to x by the next norm)
 * then h = rmsnorm(x += d) with the final norm, the rows that need a token are gathered,
 * logits = h_rows W_lm^T, sample.
 *
 * Decode steps (one row per sequence, each sampled) may run as CUDA graphs on a backend that
 * offers them (graph_begin/graph_end): the step is padded to a bucket of LB_GRAPH_BUCKET rows
 * (default 32, up to LB_GRAPH_MAX_TOK, default 512) and its adapter segments to a multiple of 16,
 * so every op of the step has a shape fixed by the bucket and only the uploaded index buffers
 * change; the backend records the bucket's ops once and replays them. Padding rows are sequences
 * of no cached tokens (kv_len 0), no KV write (slot -1), token 0 at position 0, greedy, under the
 * last real sequence's adapter; rows are independent in every op, so they change no real row. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lb_layer_bufs {
    struct lb_buf *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *q_norm, *k_norm, *w_gate, *w_up, *w_down;
};

static struct lb_buf *wbuf(struct lb_runner *r, const struct lb_tensor *t, int *rc, struct lb_err *err)
{
    if (!t || *rc) return NULL;
    struct lb_buf *b = r->be->ops->weight(r->be, t->dtype, t->data, (size_t)t->n_elem, err);
    if (!b) *rc = err && err->status ? err->status : LB_E_OOM;
    else r->weight_bytes += (int64_t)t->n_bytes;
    return b;
}

static struct lb_buf *abuf(struct lb_runner *r, enum lb_dtype dt, size_t n, int *rc, struct lb_err *err)
{
    if (*rc) return NULL;
    struct lb_buf *b = r->be->ops->alloc(r->be, dt, n, err);
    if (!b) *rc = err && err->status ? err->status : LB_E_OOM;
    return b;
}

void lb_runner_free(struct lb_runner *r)
{
    if (!r || !r->be) return;
    struct lb_backend *be = r->be;
    void (*fr)(struct lb_backend *, struct lb_buf *) = be->ops->buf_free;
    struct lb_buf **all[] = {&r->embed, &r->norm, &r->lm_head, &r->x, &r->h, &r->q, &r->k, &r->v, &r->att, &r->g, &r->u,
                             &r->o, &r->hl, &r->logits, &r->ids, &r->pos, &r->slot_map, &r->q_indptr, &r->kv_len,
                             &r->page_indptr, &r->page_idx, &r->seg_start, &r->seg_slot, &r->out_rows, &r->params, &r->tok_out};
    if (r->lm_head == r->embed) r->lm_head = NULL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) { fr(be, *all[i]); *all[i] = NULL; }
    if (r->layers && r->m)
        for (int l = 0; l < r->m->cfg.n_layer; l++) {
            struct lb_layer_bufs *L = &r->layers[l];
            struct lb_buf *lb[] = {L->attn_norm, L->ffn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv,
                                   L->q_norm, L->k_norm, L->w_gate, L->w_up, L->w_down};
            for (size_t i = 0; i < sizeof lb / sizeof lb[0]; i++) fr(be, lb[i]);
        }
    free(r->layers);
    free(r->h_seg_start);
    free(r->h_seg_slot);
    free(r->pad);
    free(r->pad_sp);
    memset(r, 0, sizeof *r);
}

int lb_runner_init(struct lb_runner *r, struct lb_backend *be, const struct lb_model *m, const struct lb_runner_opts *o,
                   struct lb_err *err)
{
    memset(r, 0, sizeof *r);
    r->be = be;
    r->m = m;
    r->opt = *o;
    const char *fs = getenv("LB_FAULT_STEP");
    r->fault_step = fs ? atoll(fs) : 0;
    fs = getenv("LB_LORA_SET_MIN_TOK");
    r->lora_set_min_tok = fs ? atoi(fs) : 1024;
    fs = getenv("LB_LORA_ACT");
    r->lora_act = fs ? atoi(fs) : 1;
    fs = getenv("LB_GRAPHS");
    r->graph = fs ? atoi(fs) : 1;
    if (r->graph == 1 && !be->ops->graph_begin) r->graph = 0;
    fs = getenv("LB_GRAPH_BUCKET");
    r->graph_bucket = fs && atoi(fs) > 0 ? atoi(fs) : 32;
    fs = getenv("LB_GRAPH_MAX_TOK");
    r->graph_max_tok = fs ? atoi(fs) : 512;
    const struct lb_model_config *c = &m->cfg;
    struct lb_backend_setup s = {
        .n_layer = c->n_layer, .n_head = c->n_head, .n_kv_head = c->n_kv_head, .head_dim = c->head_dim,
        .n_hidden = c->n_hidden, .n_ff = c->n_ff, .n_vocab = c->n_vocab, .rms_eps = c->rms_eps,
        .rope_theta = c->rope_theta, .rope_llama3 = c->rope_llama3, .rope_factor = c->rope_factor,
        .rope_low_freq_factor = c->rope_low_freq_factor, .rope_high_freq_factor = c->rope_high_freq_factor,
        .rope_orig_max_pos = c->rope_orig_max_pos, .n_page = o->n_page, .page_size = o->page_size,
        .n_slot = o->n_slot, .max_rank = o->max_rank, .tp_rank = 0, .tp_size = 1,
    };
    int rc = be->ops->setup(be, &s, err);
    if (rc) return rc;
    r->layers = calloc((size_t)c->n_layer, sizeof *r->layers);
    if (!r->layers) return lb_err_set(err, LB_E_OOM, "out of memory");
    r->embed = wbuf(r, m->embed, &rc, err);
    r->norm = wbuf(r, m->norm, &rc, err);
    r->lm_head = m->lm_head == m->embed ? r->embed : wbuf(r, m->lm_head, &rc, err);
    for (int l = 0; l < c->n_layer && !rc; l++) {
        const struct lb_layer_weights *W = &m->layers[l];
        struct lb_layer_bufs *L = &r->layers[l];
        L->attn_norm = wbuf(r, W->attn_norm, &rc, err);
        L->ffn_norm = wbuf(r, W->ffn_norm, &rc, err);
        L->wq = wbuf(r, W->wq, &rc, err);
        L->wk = wbuf(r, W->wk, &rc, err);
        L->wv = wbuf(r, W->wv, &rc, err);
        L->wo = wbuf(r, W->wo, &rc, err);
        L->bq = wbuf(r, W->bq, &rc, err);
        L->bk = wbuf(r, W->bk, &rc, err);
        L->bv = wbuf(r, W->bv, &rc, err);
        L->q_norm = wbuf(r, W->q_norm, &rc, err);
        L->k_norm = wbuf(r, W->k_norm, &rc, err);
        L->w_gate = wbuf(r, W->w_gate, &rc, err);
        L->w_up = wbuf(r, W->w_up, &rc, err);
        L->w_down = wbuf(r, W->w_down, &rc, err);
    }
    enum lb_dtype ad = be->ops->act_dtype;
    size_t T = (size_t)o->max_tok, H = (size_t)c->n_hidden, Q = (size_t)c->n_head * c->head_dim,
           KV = (size_t)c->n_kv_head * c->head_dim, F = (size_t)c->n_ff, NS = (size_t)o->max_seq;
    r->x = abuf(r, ad, T * H, &rc, err);
    r->h = abuf(r, ad, T * H, &rc, err);
    r->q = abuf(r, ad, T * Q, &rc, err);
    r->k = abuf(r, ad, T * KV, &rc, err);
    r->v = abuf(r, ad, T * KV, &rc, err);
    r->att = abuf(r, ad, T * Q, &rc, err);
    r->g = abuf(r, ad, T * F, &rc, err);
    r->u = abuf(r, ad, T * F, &rc, err);
    r->o = abuf(r, ad, T * H, &rc, err);
    r->hl = abuf(r, ad, NS * H, &rc, err);
    r->logits = abuf(r, LB_F32, NS * (size_t)c->n_vocab, &rc, err);
    r->ids = abuf(r, LB_I32, T, &rc, err);
    r->pos = abuf(r, LB_I32, T, &rc, err);
    r->slot_map = abuf(r, LB_I32, T, &rc, err);
    r->q_indptr = abuf(r, LB_I32, NS + 1, &rc, err);
    r->kv_len = abuf(r, LB_I32, NS, &rc, err);
    r->page_indptr = abuf(r, LB_I32, NS + 1, &rc, err);
    r->page_idx = abuf(r, LB_I32, (size_t)o->n_page + NS, &rc, err);
    r->seg_start = abuf(r, LB_I32, NS + 1, &rc, err);
    r->seg_slot = abuf(r, LB_I32, NS, &rc, err);
    r->out_rows = abuf(r, LB_I32, NS, &rc, err);
    r->params = abuf(r, LB_U8, NS * sizeof(struct lb_sample_param), &rc, err);
    r->tok_out = abuf(r, LB_I32, NS, &rc, err);
    r->h_seg_start = calloc(NS + 1, sizeof(int32_t));
    r->h_seg_slot = calloc(NS + 1, sizeof(int32_t));
    r->pad = calloc(8 * (NS + 1), sizeof(int32_t));
    r->pad_sp = calloc(NS + 1, sizeof *r->pad_sp);
    if (!rc && (!r->h_seg_start || !r->h_seg_slot || !r->pad || !r->pad_sp)) rc = lb_err_set(err, LB_E_OOM, "out of memory");
    if (rc) {
        lb_runner_free(r);
        return rc;
    }
    /* LoRA before the projection: only on a backend that offers set mode (asked once) */
    struct lb_op probe = {.kind = LB_OP_LORA};
    probe.u.lora.n_tgt = 1;
    probe.u.lora.x = r->h;
    probe.u.lora.set = 1;
    if (r->lora_set_min_tok >= 0 && !be->ops->supports(be, &probe)) r->lora_set_min_tok = -1;
    /* gate/up's LoRA op with the SwiGLU after it (act): likewise */
    probe.u.lora.set = 0;
    probe.u.lora.act = 1;
    probe.u.lora.n_tgt = 2;
    probe.u.lora.tgt[0] = LB_T_GATE;
    probe.u.lora.tgt[1] = LB_T_UP;
    probe.u.lora.n_out[0] = probe.u.lora.n_out[1] = c->n_ff;
    if (r->lora_act > 0 && !be->ops->supports(be, &probe)) r->lora_act = 0;
    return 0;
}

int lb_runner_load_adapter(struct lb_runner *r, int slot, const struct lb_adapter *a, struct lb_err *err)
{
    int rc = r->be->ops->lora_clear(r->be, slot, err);
    if (rc || !a) return rc;
    for (int l = 0; l < a->n_layer; l++)
        for (int t = 0; t < LB_T_COUNT; t++) {
            const struct lb_adapter_module *md = lb_adapter_mod(a, l, t);
            if (!md->rank) continue;
            struct lb_lora_module lm = {md->rank, md->scale, md->dtype, md->a, md->b, 0, 0};
            lb_model_target_dims(&r->m->cfg, (enum lb_target)t, &lm.n_in, &lm.n_out);
            if ((rc = r->be->ops->lora_load(r->be, slot, l, (enum lb_target)t, &lm, err)))
                return lb_err_prefix(err, "adapter \"%s\" layer %d %s", a->name, l, lb_target_name((enum lb_target)t));
        }
    return 0;
}

#define RUN(...)                                                         \
    do {                                                                 \
        struct lb_op op_ = __VA_ARGS__;                                  \
        if ((rc = be->ops->run(be, &op_, err))) {                        \
            lb_err_prefix(err, "layer %d op %s", l, lb_op_name(op_.kind)); \
            return rc;                                                   \
        }                                                                \
    } while (0)

/* LoRA before the projection (large steps, every row under an adapter, a backend that can):
 * the LoRA op writes y = its term and the projection adds x W^T to it (accumulate), so y is
 * written once by the LoRA and read once by the GEMM's epilogue, instead of the LoRA reading and
 * writing the GEMM's output again. LB_LORA_SET_MIN_TOK: the smallest step that does this
 * (default 1024 tokens; a negative value, or a backend without set mode: never). */
static int lora_set_first(const struct lb_runner *r, int T, int n_seg)
{
    if (!n_seg || r->lora_set_min_tok < 0 || T < r->lora_set_min_tok) return 0;
    for (int g = 0; g < n_seg; g++)
        if (r->h_seg_slot[g] < 0 && r->h_seg_start[g + 1] > r->h_seg_start[g]) return 0;
    return 1;
}

static int lora(struct lb_runner *r, int l, int n_tgt, const enum lb_target *tgt, struct lb_buf *x, int n_in,
                struct lb_buf *const *y, int T, int n_seg, int set, int act, struct lb_err *err)
{
    struct lb_backend *be = r->be;
    int rc;
    if (!n_seg) return 0;
    struct lb_op op = {.kind = LB_OP_LORA};
    op.u.lora.layer = l;
    op.u.lora.n_tgt = n_tgt;
    op.u.lora.x = x;
    op.u.lora.n_tok = T;
    op.u.lora.n_in = n_in;
    op.u.lora.seg_start = r->seg_start;
    op.u.lora.seg_slot = r->seg_slot;
    op.u.lora.n_seg = n_seg;
    op.u.lora.h_seg_start = r->h_seg_start;
    op.u.lora.h_seg_slot = r->h_seg_slot;
    op.u.lora.set = set;
    op.u.lora.act = act;
    for (int j = 0; j < n_tgt; j++) {
        op.u.lora.tgt[j] = tgt[j];
        op.u.lora.y[j] = y[j];
        int ni;
        lb_model_target_dims(&r->m->cfg, tgt[j], &ni, &op.u.lora.n_out[j]);
    }
    if ((rc = be->ops->run(be, &op, err))) return lb_err_prefix(err, "layer %d op lora", l);
    return 0;
}

/* The ops of one step (its index buffers uploaded): embedding, the layers, and the sampling of
 * n_out rows. fault: fail halfway through the layers (LB_FAULT_STEP). */
static int step_ops(struct lb_runner *r, int T, int NS, int n_out, int n_seg, int fault, struct lb_err *err)
{
    struct lb_backend *be = r->be;
    const struct lb_model_config *c = &r->m->cfg;
    int rc = 0, l = -1;
    int H = c->n_hidden, D = c->head_dim, NH = c->n_head, NKV = c->n_kv_head, F = c->n_ff;
    int Q = NH * D, KV = NKV * D;
    float eps = c->rms_eps;
    RUN({.kind = LB_OP_EMBED, .u.embed = {r->ids, r->embed, r->x, T, H}});
    const int set_first = lora_set_first(r, T, n_seg);
    /* gate/up: LB_LORA_ACT (default 1) = 1: on steps that add the LoRA term after the projections,
     * the LoRA op also applies the SwiGLU (act), which a backend may fuse with the term's expansion
     * (the CUDA backend does: no write-back of gate and up, no separate SwiGLU pass); 2: on
     * set-first steps too (gate/up then runs projection-first); 0: never */
    const int gu_set = set_first && r->lora_act < 2;
    const int gu_act = n_seg && !gu_set && r->lora_act > 0;
    for (l = 0; l < c->n_layer; l++) {
        struct lb_layer_bufs *L = &r->layers[l];
        if (fault && l == c->n_layer / 2)
            return lb_err_set(err, LB_E_DEVICE, "layer %d: injected device fault in step %lld (LB_FAULT_STEP)", l, (long long)r->n_step_calls);
        if (l == 0) RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->x, NULL, L->attn_norm, r->h, T, H, eps}});
        else RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->o, r->x, L->attn_norm, r->h, T, H, eps}});
        static const enum lb_target qkv[3] = {LB_T_Q, LB_T_K, LB_T_V};
        struct lb_buf *yqkv[3] = {r->q, r->k, r->v};
        if (set_first && (rc = lora(r, l, 3, qkv, r->h, H, yqkv, T, n_seg, 1, 0, err))) return rc;
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->h, L->wq, L->bq, r->q, T, H, Q, set_first}});
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->h, L->wk, L->bk, r->k, T, H, KV, set_first}});
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->h, L->wv, L->bv, r->v, T, H, KV, set_first}});
        if (!set_first && (rc = lora(r, l, 3, qkv, r->h, H, yqkv, T, n_seg, 0, 0, err))) return rc;
        if (c->qk_norm) {
            RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->q, NULL, L->q_norm, r->q, T * NH, D, eps}});
            RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->k, NULL, L->k_norm, r->k, T * NKV, D, eps}});
        }
        RUN({.kind = LB_OP_ROPE, .u.rope = {r->q, r->k, r->pos, T, NH, NKV, D}});
        RUN({.kind = LB_OP_KV_WRITE, .u.kv_write = {l, r->k, r->v, r->slot_map, T}});
        RUN({.kind = LB_OP_ATTN, .u.attn = {l, r->q, r->att, T, NS, r->q_indptr, r->kv_len, r->page_indptr, r->page_idx,
                                            r->pos, 1.0f / sqrtf((float)D), r->step_max_q}});
        static const enum lb_target o_t[1] = {LB_T_O};
        if (set_first && (rc = lora(r, l, 1, o_t, r->att, Q, &r->o, T, n_seg, 1, 0, err))) return rc;
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->att, L->wo, NULL, r->o, T, Q, H, set_first}});
        if (!set_first && (rc = lora(r, l, 1, o_t, r->att, Q, &r->o, T, n_seg, 0, 0, err))) return rc;
        RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->o, r->x, L->ffn_norm, r->h, T, H, eps}});
        static const enum lb_target gu[2] = {LB_T_GATE, LB_T_UP};
        struct lb_buf *ygu[2] = {r->g, r->u};
        if (gu_set && (rc = lora(r, l, 2, gu, r->h, H, ygu, T, n_seg, 1, 0, err))) return rc;
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->h, L->w_gate, NULL, r->g, T, H, F, gu_set}});
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->h, L->w_up, NULL, r->u, T, H, F, gu_set}});
        if (!gu_set && (rc = lora(r, l, 2, gu, r->h, H, ygu, T, n_seg, 0, gu_act, err))) return rc;
        if (!gu_act) RUN({.kind = LB_OP_SWIGLU, .u.swiglu = {r->g, r->u, r->g, T, F}});
        static const enum lb_target d_t[1] = {LB_T_DOWN};
        if (set_first && (rc = lora(r, l, 1, d_t, r->g, F, &r->o, T, n_seg, 1, 0, err))) return rc;
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->g, L->w_down, NULL, r->o, T, F, H, set_first}});
        if (!set_first && (rc = lora(r, l, 1, d_t, r->g, F, &r->o, T, n_seg, 0, 0, err))) return rc;
    }
    l = c->n_layer;
    if (n_out) {
        RUN({.kind = LB_OP_RMSNORM, .u.rmsnorm = {r->o, r->x, r->norm, r->h, T, H, eps}});
        RUN({.kind = LB_OP_GATHER, .u.gather = {r->h, r->out_rows, r->hl, n_out, H}});
        RUN({.kind = LB_OP_MATMUL, .u.matmul = {r->hl, r->lm_head, NULL, r->logits, n_out, H, c->n_vocab, 0}});
        RUN({.kind = LB_OP_SAMPLE, .u.sample = {r->logits, r->params, r->tok_out, n_out, c->n_vocab}});
    }
    return 0;
}

/* Rows a decode step (one row per sequence, every one sampled) is padded to for a graph: T rounded
 * up to r->graph_bucket, within the workspace; 0 when the step is not padded (r->step_max_q: the
 * step's, set before). */
static int graph_rows(const struct lb_runner *r, const struct lb_step *st)
{
    int T = st->n_tok;
    if (!r->graph || T != st->n_seq || st->n_out != T || T > r->graph_max_tok) return 0;
    if (r->step_max_q != 1) return 0; /* one row each (padding adds one-row sequences: still 1) */
    int lim = r->opt.max_tok < r->opt.max_seq ? r->opt.max_tok : r->opt.max_seq;
    int Tp = (T + r->graph_bucket - 1) / r->graph_bucket * r->graph_bucket;
    if (Tp > lim) Tp = lim;
    return Tp >= T ? Tp : 0;
}

/* *ps = st padded to Tp rows in r's scratch (see the top of this file). */
static void pad_step(struct lb_runner *r, const struct lb_step *st, int Tp, struct lb_step *ps)
{
    const int T = st->n_tok;
    const size_t n = (size_t)r->opt.max_seq + 1;
    int32_t *tok = r->pad, *pos = tok + n, *slot = pos + n, *qi = slot + n, *kvl = qi + n, *pi = kvl + n, *ss = pi + n,
            *orow = ss + n;
    struct lb_sample_param *sp = r->pad_sp;
    memcpy(tok, st->tokens, sizeof *tok * T);
    memcpy(pos, st->pos, sizeof *pos * T);
    memcpy(slot, st->slot_map, sizeof *slot * T);
    memcpy(qi, st->q_indptr, sizeof *qi * (T + 1));
    memcpy(kvl, st->kv_len, sizeof *kvl * T);
    memcpy(pi, st->page_indptr, sizeof *pi * (T + 1));
    memcpy(ss, st->seq_slot, sizeof *ss * T);
    memcpy(orow, st->out_rows, sizeof *orow * T);
    memcpy(sp, st->sp, sizeof *sp * T);
    for (int i = T; i < Tp; i++) {
        tok[i] = 0;
        pos[i] = 0;
        slot[i] = -1;              /* no KV write */
        qi[i + 1] = i + 1;         /* one row */
        kvl[i] = 0;                /* attends to nothing: its output is zeros */
        pi[i + 1] = pi[T];         /* no pages */
        ss[i] = st->seq_slot[T - 1]; /* in the last real segment: no segment more */
        orow[i] = i;
        memset(&sp[i], 0, sizeof sp[i]);
        sp[i].top_p = 1.0f;        /* greedy */
    }
    *ps = (struct lb_step){Tp, Tp, tok, pos, slot, qi, kvl, pi, st->page_idx, ss, Tp, orow, sp};
}

/* The step's ops, inside the backend's graph for its key when it is a padded decode step: the
 * backend replays the graph (the ops are not run here), records them as it, or lets them run as
 * they are (the key's first step; or an op failed while recording: then they run again). */
static int run_step(struct lb_runner *r, int graph, uint64_t key, int T, int NS, int n_out, int n_seg, int fault,
                    struct lb_err *err)
{
    struct lb_backend *be = r->be;
    if (!graph) return step_ops(r, T, NS, n_out, n_seg, fault, err);
    int rc = be->ops->graph_begin(be, key, err);
    if (rc) return rc < 0 ? rc : 0; /* replayed */
    rc = step_ops(r, T, NS, n_out, n_seg, fault, err);
    struct lb_err e2 = {0};
    int g = be->ops->graph_end(be, rc == 0, &e2);
    if (g < 0) {
        if (rc) return rc;
        *err = e2;
        return g;
    }
    if (g == 1) return step_ops(r, T, NS, n_out, n_seg, fault, err); /* the recording failed: as they are */
    return rc;
}

int lb_runner_step(struct lb_runner *r, const struct lb_step *st, int32_t *tok_out, float *logits_out, struct lb_err *err)
{
    struct lb_backend *be = r->be;
    const struct lb_model_config *c = &r->m->cfg;
    int T = st->n_tok, NS = st->n_seq, rc = 0;
    const int T_real = T;
    if (T <= 0 || T > r->opt.max_tok || NS <= 0 || NS > r->opt.max_seq || st->n_out > r->opt.max_seq || st->n_out < 0)
        return lb_err_set(err, LB_E_INTERNAL, "step: %d tokens / %d seqs / %d outputs exceed the workspace (%d / %d)", T, NS,
                          st->n_out, r->opt.max_tok, r->opt.max_seq);
    int n_pages = st->page_indptr[NS];
    if (n_pages > r->opt.n_page + r->opt.max_seq) return lb_err_set(err, LB_E_INTERNAL, "step: %d pages listed", n_pages);
    const int n_real = st->n_out; /* tokens to download */
    r->step_max_q = 0; /* the attention op's hint */
    for (int s = 0; s < NS; s++)
        if (st->q_indptr[s + 1] - st->q_indptr[s] > r->step_max_q) r->step_max_q = st->q_indptr[s + 1] - st->q_indptr[s];
    struct lb_step padded;
    const int Tp = graph_rows(r, st);
    if (Tp) {
        pad_step(r, st, Tp, &padded);
        st = &padded;
        T = NS = Tp;
    }
    /* adapter segments: runs of equal slot over consecutive sequences */
    int n_seg = 0;
    for (int s = 0; s < NS; s++) {
        if (n_seg && r->h_seg_slot[n_seg - 1] == st->seq_slot[s]) continue;
        r->h_seg_start[n_seg] = st->q_indptr[s];
        r->h_seg_slot[n_seg] = st->seq_slot[s];
        n_seg++;
    }
    r->h_seg_start[n_seg] = T;
    int any_lora = 0, all_slotted = 1;
    for (int g = 0; g < n_seg; g++) {
        any_lora |= r->h_seg_slot[g] >= 0;
        all_slotted &= r->h_seg_slot[g] >= 0;
    }
    if (!any_lora) n_seg = 0; /* base-model rows only: every LoRA op is skipped */
    if (Tp && n_seg) { /* padded: empty segments (no slot) up to a multiple of 16 */
        int nb = (n_seg + 15) / 16 * 16;
        if (nb > r->opt.max_seq) nb = r->opt.max_seq;
        for (; n_seg < nb; n_seg++) {
            r->h_seg_slot[n_seg] = -1;
            r->h_seg_start[n_seg + 1] = T;
        }
    }
    const struct lb_backend_ops *B = be->ops;
    if ((rc = B->upload(be, r->ids, 0, st->tokens, LB_I32, (size_t)T, err)) ||
        (rc = B->upload(be, r->pos, 0, st->pos, LB_I32, (size_t)T, err)) ||
        (rc = B->upload(be, r->slot_map, 0, st->slot_map, LB_I32, (size_t)T, err)) ||
        (rc = B->upload(be, r->q_indptr, 0, st->q_indptr, LB_I32, (size_t)NS + 1, err)) ||
        (rc = B->upload(be, r->kv_len, 0, st->kv_len, LB_I32, (size_t)NS, err)) ||
        (rc = B->upload(be, r->page_indptr, 0, st->page_indptr, LB_I32, (size_t)NS + 1, err)) ||
        (n_pages && (rc = B->upload(be, r->page_idx, 0, st->page_idx, LB_I32, (size_t)n_pages, err))) ||
        (n_seg && (rc = B->upload(be, r->seg_start, 0, r->h_seg_start, LB_I32, (size_t)n_seg + 1, err))) ||
        (n_seg && (rc = B->upload(be, r->seg_slot, 0, r->h_seg_slot, LB_I32, (size_t)n_seg, err))) ||
        (st->n_out && (rc = B->upload(be, r->out_rows, 0, st->out_rows, LB_I32, (size_t)st->n_out, err))) ||
        (st->n_out && (rc = B->upload(be, r->params, 0, st->sp, LB_U8, (size_t)st->n_out * sizeof *st->sp, err))))
        return rc;
    int fault = r->fault_step > 0 && ++r->n_step_calls == r->fault_step;
    /* the key: the shapes (rows, segments) and what the ops choose from the segments' slots */
    const uint64_t key = (uint64_t)T | (uint64_t)n_seg << 20 | (uint64_t)all_slotted << 40;
    if ((rc = run_step(r, Tp && be->ops->graph_begin && !fault, key, T, NS, st->n_out, n_seg, fault, err))) return rc;
    if (r->on_queued && (rc = r->on_queued(r->on_queued_ctx, T_real, err))) return rc;
    if (!n_real) return 0;
    if ((rc = B->download(be, r->tok_out, 0, tok_out, LB_I32, (size_t)n_real, err))) return rc;
    if (logits_out && (rc = B->download(be, r->logits, 0, logits_out, LB_F32, (size_t)n_real * c->n_vocab, err))) return rc;
    return 0;
}
