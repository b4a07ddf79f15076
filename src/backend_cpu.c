/* backend_cpu.c — the reference backend: plain loops, fp32 activations and accumulation.
 *
 * It is the oracle the CUDA backend is tested against, so it stays simple. Two rules make
 * a sequence's result independent of its batch: every output element is computed by the
 * same loop in the same order whatever T is (dot products run over k in a fixed 8-lane
 * order), and threads split work only over independent outputs (columns, heads), never
 * over a reduction. Weights stay in their file dtype (bf16/f16/f32, borrowed from the
 * mmap) and are widened to f32 a row at a time.
 *
 * KV cache: K and V as f32 [n_layer][n_page][page_size][NKV][D]. Adapter slots: f32 copies
 * of A [R, n_in] and B [n_out, R] per (slot, layer, target). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "safetensors.h"
#include "sample.h"

struct lb_buf {
    enum lb_dtype dt;
    size_t n;       /* elements */
    void *data;     /* owned unless borrowed */
    int borrowed;
};

struct cpu_lora { int rank; float scale; float *a, *b; int n_in, n_out; }; /* a, b owned */

struct cpu {
    int n_thread;
    struct lb_backend_setup s;
    float *k_cache, *v_cache; /* owned [n_layer][n_page][page_size][NKV][D] */
    struct cpu_lora *slots;   /* owned [n_slot][n_layer][LB_T_COUNT] */
};

/* ---------------------------------------------------------------- threads */

typedef void (*range_fn)(void *ctx, int begin, int end);
struct par_job { range_fn fn; void *ctx; int begin, end; };
static void *par_main(void *arg)
{
    struct par_job *j = arg;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

/* Run fn over [0, n) split in contiguous chunks; threads only when work (a flop estimate)
 * is large enough to pay for thread start-up (~30 us). */
static void par_for(struct cpu *c, int n, double work, range_fn fn, void *ctx)
{
    int nt = c->n_thread;
    if (nt > n) nt = n;
    if (nt <= 1 || work < 2e6) { fn(ctx, 0, n); return; }
    if (nt > 64) nt = 64;
    pthread_t th[64];
    struct par_job jobs[64];
    int started[64] = {0};
    for (int i = 0; i < nt; i++) {
        jobs[i] = (struct par_job){fn, ctx, (int)((int64_t)n * i / nt), (int)((int64_t)n * (i + 1) / nt)};
        if (i > 0) started[i] = pthread_create(&th[i], NULL, par_main, &jobs[i]) == 0;
    }
    fn(ctx, jobs[0].begin, jobs[0].end);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(ctx, jobs[i].begin, jobs[i].end);
    }
}

/* ---------------------------------------------------------------- helpers */

static void row_to_f32(const void *src, enum lb_dtype dt, size_t off, size_t n, float *dst)
{
    switch (dt) {
    case LB_F32: memcpy(dst, (const float *)src + off, n * 4); break;
    case LB_BF16: {
        const uint16_t *p = (const uint16_t *)src + off;
        for (size_t i = 0; i < n; i++) { uint32_t u = (uint32_t)p[i] << 16; memcpy(&dst[i], &u, 4); }
        break;
    }
    case LB_F16: {
        const uint16_t *p = (const uint16_t *)src + off;
        for (size_t i = 0; i < n; i++) dst[i] = lb_f16_to_f32(p[i]);
        break;
    }
    default: for (size_t i = 0; i < n; i++) dst[i] = lb_tensor_get_f32(src, dt, (int64_t)(off + i));
    }
}

/* Fixed-order dot product: 8 lanes over k, then a fixed tree. Same result for the same inputs
 * whatever the batch. */
static float dot_f32(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[k + l] * b[k + l];
    for (int l = 0; k < n; k++, l++) acc[l] += a[k] * b[k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static float *f32(const struct lb_buf *b) { return (float *)b->data; }
static int32_t *i32(const struct lb_buf *b) { return (int32_t *)b->data; }

/* ---------------------------------------------------------------- ops */

struct mm_ctx { const struct lb_buf *x, *w, *bias; struct lb_buf *y; int T, K, N, acc; };
static void mm_range(void *vctx, int g0, int g1) /* g: groups of 4 output columns */
{
    struct mm_ctx *m = vctx;
    int n0 = g0 * 4, n1 = g1 * 4 < m->N ? g1 * 4 : m->N;
    float *wrow = malloc((size_t)m->K * 4 * 4);
    const float *x = f32(m->x);
    float *y = f32(m->y);
    /* 4 weight rows at a time, each widened once and used for every token */
    for (int n = n0; n < n1; n += 4) {
        int nb = n1 - n < 4 ? n1 - n : 4;
        for (int j = 0; j < nb; j++) row_to_f32(m->w->data, m->w->dt, (size_t)(n + j) * m->K, (size_t)m->K, wrow + (size_t)j * m->K);
        for (int t = 0; t < m->T; t++)
            for (int j = 0; j < nb; j++) {
                float v = dot_f32(x + (size_t)t * m->K, wrow + (size_t)j * m->K, m->K);
                if (m->bias) v += lb_tensor_get_f32(m->bias->data, m->bias->dt, n + j);
                float *out = &y[(size_t)t * m->N + n + j];
                *out = m->acc ? *out + v : v;
            }
    }
    free(wrow);
}

static void op_matmul(struct cpu *c, const struct lb_op *op)
{
    struct mm_ctx m = {op->u.matmul.x, op->u.matmul.w, op->u.matmul.bias, op->u.matmul.y,
                       op->u.matmul.n_tok, op->u.matmul.n_in, op->u.matmul.n_out, op->u.matmul.accumulate};
    par_for(c, (m.N + 3) / 4, 2.0 * m.T * m.N * m.K, mm_range, &m);
}

static void op_rmsnorm(const struct lb_op *op)
{
    int n = op->u.rmsnorm.n;
    float *w = malloc((size_t)n * 4);
    row_to_f32(op->u.rmsnorm.w->data, op->u.rmsnorm.w->dt, 0, (size_t)n, w);
    for (int r = 0; r < op->u.rmsnorm.n_rows; r++) {
        float *x = f32(op->u.rmsnorm.x) + (size_t)r * n;
        float *out = f32(op->u.rmsnorm.out) + (size_t)r * n;
        float *src = x;
        if (op->u.rmsnorm.res) {
            float *res = f32(op->u.rmsnorm.res) + (size_t)r * n;
            for (int i = 0; i < n; i++) res[i] += x[i];
            src = res;
        }
        float ss = dot_f32(src, src, n);
        float inv = 1.0f / sqrtf(ss / (float)n + op->u.rmsnorm.eps);
        for (int i = 0; i < n; i++) out[i] = w[i] * (src[i] * inv);
    }
    free(w);
}

static void op_embed(const struct lb_op *op)
{
    int H = op->u.embed.n_hidden;
    for (int t = 0; t < op->u.embed.n_tok; t++)
        row_to_f32(op->u.embed.table->data, op->u.embed.table->dt, (size_t)i32(op->u.embed.ids)[t] * H, (size_t)H,
                   f32(op->u.embed.out) + (size_t)t * H);
}

static void rope_inv_freq(const struct lb_backend_setup *s, float *inv, int D)
{
    for (int i = 0; i < D / 2; i++) {
        float f = 1.0f / powf(s->rope_theta, (float)(2 * i) / (float)D);
        if (s->rope_llama3) {
            double low_wl = (double)s->rope_orig_max_pos / s->rope_low_freq_factor;
            double high_wl = (double)s->rope_orig_max_pos / s->rope_high_freq_factor;
            double wl = 2.0 * M_PI / (double)f;
            if (wl > low_wl) f = f / s->rope_factor;
            else if (wl >= high_wl) {
                float smooth = (float)(((double)s->rope_orig_max_pos / wl - s->rope_low_freq_factor) /
                                       (s->rope_high_freq_factor - s->rope_low_freq_factor));
                f = (1.0f - smooth) * f / s->rope_factor + smooth * f;
            }
        }
        inv[i] = f;
    }
}

static void rope_apply(float *x, int n_head, int D, const float *cs, const float *sn)
{
    int h2 = D / 2;
    for (int h = 0; h < n_head; h++) {
        float *v = x + (size_t)h * D;
        for (int i = 0; i < h2; i++) {
            float a = v[i], b = v[i + h2];
            v[i] = a * cs[i] - b * sn[i];
            v[i + h2] = b * cs[i] + a * sn[i];
        }
    }
}

static void op_rope(struct cpu *c, const struct lb_op *op)
{
    int D = op->u.rope.head_dim;
    float inv[512], cs[256], sn[256];
    rope_inv_freq(&c->s, inv, D);
    for (int t = 0; t < op->u.rope.n_tok; t++) {
        float p = (float)i32(op->u.rope.pos)[t];
        for (int i = 0; i < D / 2; i++) {
            float a = p * inv[i];
            cs[i] = cosf(a);
            sn[i] = sinf(a);
        }
        rope_apply(f32(op->u.rope.q) + (size_t)t * op->u.rope.n_head * D, op->u.rope.n_head, D, cs, sn);
        rope_apply(f32(op->u.rope.k) + (size_t)t * op->u.rope.n_kv_head * D, op->u.rope.n_kv_head, D, cs, sn);
    }
}

static size_t kv_off(const struct lb_backend_setup *s, int layer, int64_t slot)
{
    return (((size_t)layer * s->n_page * s->page_size) + (size_t)slot) * s->n_kv_head * s->head_dim;
}

static void op_kv_write(struct cpu *c, const struct lb_op *op)
{
    size_t row = (size_t)c->s.n_kv_head * c->s.head_dim;
    for (int t = 0; t < op->u.kv_write.n_tok; t++) {
        int slot = i32(op->u.kv_write.slot_map)[t];
        if (slot < 0) continue; /* a padding row */
        memcpy(c->k_cache + kv_off(&c->s, op->u.kv_write.layer, slot), f32(op->u.kv_write.k) + t * row, row * 4);
        memcpy(c->v_cache + kv_off(&c->s, op->u.kv_write.layer, slot), f32(op->u.kv_write.v) + t * row, row * 4);
    }
}

struct attn_ctx { struct cpu *c; const struct lb_op *op; int *tok_seq; };
static void attn_range(void *vctx, int r0, int r1)
{
    struct attn_ctx *a = vctx;
    const struct lb_op *op = a->op;
    const struct lb_backend_setup *s = &a->c->s;
    int NH = s->n_head, NKV = s->n_kv_head, D = s->head_dim, B = s->page_size;
    int group = NH / NKV;
    float *score = NULL;
    int cap = 0;
    for (int r = r0; r < r1; r++) {
        int t = r / NH, h = r % NH, g = h / group;
        int sq = a->tok_seq[t];
        int pos = i32(op->u.attn.pos)[t];
        int n_ctx = pos + 1, kv = i32(op->u.attn.kv_len)[sq];
        if (n_ctx > kv) n_ctx = kv; /* 0 on a padding row: zeros */
        if (n_ctx > cap) { free(score); cap = n_ctx; score = malloc((size_t)cap * 4); }
        const int32_t *pages = i32(op->u.attn.page_idx) + i32(op->u.attn.page_indptr)[sq];
        const float *q = f32(op->u.attn.q) + ((size_t)t * NH + h) * D;
        float mx = -INFINITY;
        for (int p = 0; p < n_ctx; p++) {
            const float *k = a->c->k_cache + kv_off(s, op->u.attn.layer, (int64_t)pages[p / B] * B + p % B) + (size_t)g * D;
            score[p] = dot_f32(q, k, D) * op->u.attn.scale;
            if (score[p] > mx) mx = score[p];
        }
        float sum = 0.0f;
        for (int p = 0; p < n_ctx; p++) { score[p] = expf(score[p] - mx); sum += score[p]; }
        float *out = f32(op->u.attn.out) + ((size_t)t * NH + h) * D;
        for (int d = 0; d < D; d++) out[d] = 0.0f;
        for (int p = 0; p < n_ctx; p++) {
            const float *v = a->c->v_cache + kv_off(s, op->u.attn.layer, (int64_t)pages[p / B] * B + p % B) + (size_t)g * D;
            float w = score[p] / sum;
            for (int d = 0; d < D; d++) out[d] += w * v[d];
        }
    }
    free(score);
}

static int op_attn(struct cpu *c, const struct lb_op *op, struct lb_err *err)
{
    int T = op->u.attn.n_tok;
    int *tok_seq = malloc((size_t)(T ? T : 1) * sizeof *tok_seq);
    const int32_t *qi = i32(op->u.attn.q_indptr);
    for (int sq = 0; sq < op->u.attn.n_seq; sq++)
        for (int t = qi[sq]; t < qi[sq + 1]; t++) {
            if (t < 0 || t >= T) { free(tok_seq); return lb_err_set(err, LB_E_INTERNAL, "attn: q_indptr out of range"); }
            tok_seq[t] = sq;
        }
    struct attn_ctx a = {c, op, tok_seq};
    double work = 0;
    for (int t = 0; t < T; t++) work += 4.0 * c->s.n_head * c->s.head_dim * (i32(op->u.attn.pos)[t] + 1);
    par_for(c, T * c->s.n_head, work, attn_range, &a);
    free(tok_seq);
    return 0;
}

static void op_swiglu(const struct lb_op *op)
{
    size_t n = (size_t)op->u.swiglu.n_tok * op->u.swiglu.n_ff;
    const float *g = f32(op->u.swiglu.gate), *u = f32(op->u.swiglu.up);
    float *o = f32(op->u.swiglu.out);
    for (size_t i = 0; i < n; i++) o[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

static void op_lora(struct cpu *c, const struct lb_op *op)
{
    const int32_t *ss = i32(op->u.lora.seg_start), *sl = i32(op->u.lora.seg_slot);
    int K = op->u.lora.n_in;
    float tmp[1024];
    for (int sg = 0; sg < op->u.lora.n_seg; sg++) {
        int slot = sl[sg];
        if (slot < 0 || slot >= c->s.n_slot) continue;
        for (int j = 0; j < op->u.lora.n_tgt; j++) {
            const struct cpu_lora *m = &c->slots[((size_t)slot * c->s.n_layer + op->u.lora.layer) * LB_T_COUNT + op->u.lora.tgt[j]];
            if (!m->rank) continue;
            int N = op->u.lora.n_out[j];
            for (int t = ss[sg]; t < ss[sg + 1]; t++) {
                const float *x = f32(op->u.lora.x) + (size_t)t * K;
                for (int r = 0; r < m->rank; r++) tmp[r] = dot_f32(x, m->a + (size_t)r * K, K);
                float *y = f32(op->u.lora.y[j]) + (size_t)t * N;
                for (int n = 0; n < N; n++) y[n] += dot_f32(tmp, m->b + (size_t)n * m->rank, m->rank) * m->scale;
            }
        }
    }
    if (op->u.lora.act) { /* the SwiGLU after gate/up, as the separate op would run it */
        struct lb_op sw = {.kind = LB_OP_SWIGLU};
        sw.u.swiglu.gate = op->u.lora.y[0];
        sw.u.swiglu.up = op->u.lora.y[1];
        sw.u.swiglu.out = op->u.lora.y[0];
        sw.u.swiglu.n_tok = op->u.lora.n_tok;
        sw.u.swiglu.n_ff = op->u.lora.n_out[0];
        op_swiglu(&sw);
    }
}

static int op_sample(const struct lb_op *op, struct lb_err *err)
{
    int V = op->u.sample.n_vocab;
    void *scratch = malloc(lb_sample_scratch_bytes(V));
    if (!scratch) return lb_err_set(err, LB_E_OOM, "sample: out of memory");
    const struct lb_sample_param *p = op->u.sample.params->data;
    for (int i = 0; i < op->u.sample.n; i++)
        i32(op->u.sample.tok)[i] = lb_sample_row(f32(op->u.sample.logits) + (size_t)i * V, V, &p[i], scratch);
    free(scratch);
    return 0;
}

/* ---------------------------------------------------------------- vtable */

static int cpu_supports(struct lb_backend *be, const struct lb_op *op)
{
    struct cpu *c = be->impl;
    /* set mode (y = the LoRA term, the projection added after) is not offered: the reference
     * keeps one order of operations, so a row's result never depends on its batch */
    if (op->kind == LB_OP_LORA)
        return op->u.lora.n_tgt >= 1 && op->u.lora.n_tgt <= 3 && c->s.max_rank <= 1024 && !op->u.lora.set &&
               (!op->u.lora.act || (op->u.lora.n_tgt == 2 && op->u.lora.n_out[0] == op->u.lora.n_out[1]));
    if (op->kind == LB_OP_ROPE) return op->u.rope.head_dim <= 512;
    if (op->kind == LB_OP_ALLREDUCE) return c->s.tp_size <= 1;
    return op->kind < LB_OP_COUNT;
}

static void cpu_free_slots(struct cpu *c)
{
    if (!c->slots) return;
    size_t n = (size_t)c->s.n_slot * c->s.n_layer * LB_T_COUNT;
    for (size_t i = 0; i < n; i++) { free(c->slots[i].a); free(c->slots[i].b); }
    free(c->slots);
    c->slots = NULL;
}

static int cpu_setup(struct lb_backend *be, const struct lb_backend_setup *s, struct lb_err *err)
{
    struct cpu *c = be->impl;
    free(c->k_cache); free(c->v_cache);
    cpu_free_slots(c);
    c->s = *s;
    size_t n = (size_t)s->n_layer * s->n_page * s->page_size * s->n_kv_head * s->head_dim;
    c->k_cache = calloc(n ? n : 1, 4);
    c->v_cache = calloc(n ? n : 1, 4);
    c->slots = calloc((size_t)(s->n_slot ? s->n_slot : 1) * s->n_layer * LB_T_COUNT, sizeof *c->slots);
    if (!c->k_cache || !c->v_cache || !c->slots)
        return lb_err_set(err, LB_E_OOM, "cpu backend: cannot allocate a KV cache of %zu MiB", 2 * n * 4 >> 20);
    return 0;
}

static struct lb_buf *cpu_alloc(struct lb_backend *be, enum lb_dtype dt, size_t n, struct lb_err *err)
{
    (void)be;
    struct lb_buf *b = calloc(1, sizeof *b);
    if (b) b->data = calloc(n ? n : 1, lb_dtype_size(dt));
    if (!b || !b->data) { free(b); lb_err_set(err, LB_E_OOM, "cpu backend: cannot allocate %zu elements", n); return NULL; }
    b->dt = dt;
    b->n = n;
    return b;
}

static struct lb_buf *cpu_weight(struct lb_backend *be, enum lb_dtype dt, const void *host, size_t n, struct lb_err *err)
{
    (void)be;
    struct lb_buf *b = calloc(1, sizeof *b);
    if (!b) { lb_err_set(err, LB_E_OOM, "cpu backend: out of memory"); return NULL; }
    *b = (struct lb_buf){dt, n, (void *)host, 1};
    if ((uintptr_t)host % lb_dtype_size(dt)) { /* an unpadded safetensors header: copy to aligned memory */
        b->data = malloc(n * lb_dtype_size(dt) + 1);
        if (!b->data) { free(b); lb_err_set(err, LB_E_OOM, "cpu backend: out of memory"); return NULL; }
        memcpy(b->data, host, n * lb_dtype_size(dt));
        b->borrowed = 0;
    }
    return b;
}

static void cpu_buf_free(struct lb_backend *be, struct lb_buf *b)
{
    (void)be;
    if (!b) return;
    if (!b->borrowed) free(b->data);
    free(b);
}

static int convert(void *dst, enum lb_dtype ddt, const void *src, enum lb_dtype sdt, size_t n, struct lb_err *err)
{
    if (ddt == sdt) { memcpy(dst, src, n * lb_dtype_size(ddt)); return 0; }
    if (ddt == LB_F32 && (sdt == LB_BF16 || sdt == LB_F16 || sdt == LB_I32)) {
        for (size_t i = 0; i < n; i++) ((float *)dst)[i] = lb_tensor_get_f32(src, sdt, (int64_t)i);
        return 0;
    }
    if (sdt == LB_F32 && ddt == LB_BF16) { for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = lb_f32_to_bf16(((const float *)src)[i]); return 0; }
    if (sdt == LB_F32 && ddt == LB_F16) { for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = lb_f32_to_f16(((const float *)src)[i]); return 0; }
    return lb_err_set(err, LB_E_UNSUPPORTED, "cpu backend: no conversion %s -> %s", lb_dtype_name(sdt), lb_dtype_name(ddt));
}

static int cpu_upload(struct lb_backend *be, struct lb_buf *b, size_t off, const void *src, enum lb_dtype sdt, size_t n, struct lb_err *err)
{
    (void)be;
    if (off + n > b->n) return lb_err_set(err, LB_E_INTERNAL, "upload past the end of a buffer (%zu + %zu > %zu)", off, n, b->n);
    if (b->borrowed) return lb_err_set(err, LB_E_INTERNAL, "upload into a weight buffer");
    return convert((char *)b->data + off * lb_dtype_size(b->dt), b->dt, src, sdt, n, err);
}

static int cpu_download(struct lb_backend *be, const struct lb_buf *b, size_t off, void *dst, enum lb_dtype ddt, size_t n, struct lb_err *err)
{
    (void)be;
    if (off + n > b->n) return lb_err_set(err, LB_E_INTERNAL, "download past the end of a buffer (%zu + %zu > %zu)", off, n, b->n);
    return convert(dst, ddt, (const char *)b->data + off * lb_dtype_size(b->dt), b->dt, n, err);
}

static int cpu_run(struct lb_backend *be, const struct lb_op *op, struct lb_err *err)
{
    struct cpu *c = be->impl;
    if (!cpu_supports(be, op)) return lb_err_set(err, LB_E_UNSUPPORTED, "cpu backend: op %s not supported with these parameters", lb_op_name(op->kind));
    switch (op->kind) {
    case LB_OP_EMBED: op_embed(op); return 0;
    case LB_OP_RMSNORM: op_rmsnorm(op); return 0;
    case LB_OP_MATMUL: op_matmul(c, op); return 0;
    case LB_OP_LORA: op_lora(c, op); return 0;
    case LB_OP_ROPE: op_rope(c, op); return 0;
    case LB_OP_KV_WRITE: op_kv_write(c, op); return 0;
    case LB_OP_ATTN: return op_attn(c, op, err);
    case LB_OP_SWIGLU: op_swiglu(op); return 0;
    case LB_OP_ADD: {
        float *y = f32(op->u.add.y);
        const float *x = f32(op->u.add.x);
        for (int64_t i = 0; i < op->u.add.n; i++) y[i] += x[i];
        return 0;
    }
    case LB_OP_GATHER:
        for (int i = 0; i < op->u.gather.n; i++)
            memcpy(f32(op->u.gather.out) + (size_t)i * op->u.gather.n_cols,
                   f32(op->u.gather.x) + (size_t)i32(op->u.gather.idx)[i] * op->u.gather.n_cols, (size_t)op->u.gather.n_cols * 4);
        return 0;
    case LB_OP_SAMPLE: return op_sample(op, err);
    case LB_OP_ALLREDUCE: return 0;
    default: return lb_err_set(err, LB_E_UNSUPPORTED, "cpu backend: unknown op %d", op->kind);
    }
}

static int cpu_lora_load(struct lb_backend *be, int slot, int layer, enum lb_target t, const struct lb_lora_module *m, struct lb_err *err)
{
    struct cpu *c = be->impl;
    if (slot < 0 || slot >= c->s.n_slot || layer < 0 || layer >= c->s.n_layer || (unsigned)t >= LB_T_COUNT)
        return lb_err_set(err, LB_E_INTERNAL, "lora_load: slot %d layer %d target %d out of range", slot, layer, t);
    if (m->rank > c->s.max_rank)
        return lb_err_set(err, LB_E_UNSUPPORTED, "lora_load: rank %d exceeds max_lora_rank %d", m->rank, c->s.max_rank);
    struct cpu_lora *d = &c->slots[((size_t)slot * c->s.n_layer + layer) * LB_T_COUNT + t];
    free(d->a); free(d->b);
    memset(d, 0, sizeof *d);
    if (!m->rank) return 0;
    d->a = malloc((size_t)m->rank * m->n_in * 4);
    d->b = malloc((size_t)m->rank * m->n_out * 4);
    if (!d->a || !d->b) return lb_err_set(err, LB_E_OOM, "lora_load: out of memory");
    row_to_f32(m->a, m->dtype, 0, (size_t)m->rank * m->n_in, d->a);
    row_to_f32(m->b, m->dtype, 0, (size_t)m->rank * m->n_out, d->b);
    d->rank = m->rank;
    d->scale = m->scale;
    d->n_in = m->n_in;
    d->n_out = m->n_out;
    return 0;
}

static int cpu_lora_clear(struct lb_backend *be, int slot, struct lb_err *err)
{
    struct cpu *c = be->impl;
    if (slot < 0 || slot >= c->s.n_slot) return lb_err_set(err, LB_E_INTERNAL, "lora_clear: slot %d out of range", slot);
    for (int i = 0; i < c->s.n_layer * LB_T_COUNT; i++) {
        struct cpu_lora *d = &c->slots[(size_t)slot * c->s.n_layer * LB_T_COUNT + i];
        free(d->a); free(d->b);
        memset(d, 0, sizeof *d);
    }
    return 0;
}

static int cpu_sync(struct lb_backend *be, struct lb_err *err) { (void)be; (void)err; return 0; }

static void cpu_destroy(struct lb_backend *be)
{
    struct cpu *c = be->impl;
    if (!c) return;
    free(c->k_cache); free(c->v_cache);
    cpu_free_slots(c);
    free(c);
}

static const struct lb_backend_ops cpu_ops = {
    .name = "cpu", .act_dtype = LB_F32, .supports = cpu_supports, .setup = cpu_setup, .alloc = cpu_alloc,
    .weight = cpu_weight, .buf_free = cpu_buf_free, .upload = cpu_upload, .download = cpu_download, .run = cpu_run,
    .lora_load = cpu_lora_load, .lora_clear = cpu_lora_clear, .sync = cpu_sync, .destroy = cpu_destroy,
};

int lb_backend_cpu_open(struct lb_backend *be, int n_thread, struct lb_err *err)
{
    struct cpu *c = calloc(1, sizeof *c);
    if (!c) return lb_err_set(err, LB_E_OOM, "cpu backend: out of memory");
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    c->n_thread = n_thread > 0 ? n_thread : (nc > 0 ? (int)nc : 1);
    be->ops = &cpu_ops;
    be->impl = c;
    return 0;
}
