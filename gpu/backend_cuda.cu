/* backend_cuda.cu — the CUDA backend: struct lb_backend_ops over one GPU.
 *
 * Owns: one stream on which every op runs in order, the cuBLASLt handle (dl_cublas.cu), the
 * paged KV cache, the adapter slots and grow-only workspaces. Activations are bf16 (act_dtype)
 * with fp32 accumulation inside every kernel. Float weights (f32, f16, bf16) are stored as
 * bf16 on the device (f32/f16 are rounded to nearest-even at upload); i32 and u8 are raw.
 *
 * Upload is asynchronous: it copies the caller's data (converted if asked) into a pinned upload
 * ring and queues cudaMemcpyAsync on the stream, so the caller may reuse its memory as soon as it
 * returns while the GPU has not waited for anything (see the ring in common.cuh: a block of the
 * ring is reused only after an event shows every copy from it has run). Download is the one
 * synchronisation point of a step: it queues the copy into pinned memory, waits for the stream
 * and returns data ready on the host. Uploads larger than a ring block (weights) stay
 * synchronous. Ops are asynchronous; sync() waits for them and reports any deferred device error.
 * LB_CUDA_STATS=1 prints, at destroy, where the host's time went between and within steps.
 *
 * Adapter modules are converted into pinned memory and copied without waiting for the GPU: on the
 * compute stream, or with LB_CUDA_COPY_STREAM=1 on a copy stream beside the queued ops (see
 * cu_lora_load).
 *
 * Step graphs (graph_begin/graph_end): forward.c pads decode steps to fixed shapes and brackets
 * their ops; a key's second step is recorded by stream capture and later ones replay it with one
 * cudaGraphLaunch (see cu_graph_begin).
 *
 * Does not: tensor-parallel collectives (tp_size must be 1 for now: allreduce is the identity).
 *
 * Test: ./build.sh test, then on the device tests/gpu_run.sh (build/tests/test_ops). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.cuh"

int lb_cu_check_buf(const struct lb_buf *b, int dt, size_t n, const char *what, struct lb_err *err)
{
    if (!b) return lb_err_set(err, LB_E_INTERNAL, "%s: buffer is NULL", what);
    if (dt >= 0 && (int)b->dt != dt)
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: dtype %s, expected %s", what, lb_dtype_name(b->dt),
                          lb_dtype_name((enum lb_dtype)dt));
    if (dt < 0 && !is_fb(b->dt))
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: dtype %s, expected f32 or bf16", what, lb_dtype_name(b->dt));
    if (b->n_elem < n)
        return lb_err_set(err, LB_E_INTERNAL, "%s: buffer holds %zu elements, op needs %zu", what, b->n_elem, n);
    return 0;
}

int lb_cu_grow(struct lb_cu *c, void **p, size_t *cap, size_t n, const char *what, struct lb_err *err)
{
    if (n <= *cap) return 0;
    const size_t want = n + n / 4 + ((size_t)1 << 20);
    LB_CU(cudaStreamSynchronize(c->stream)); /* the old buffer may still be in use */
    c->mem_gen++;                            /* recorded graphs may point into it */
    if (*p) LB_CU(cudaFree(*p));
    *p = NULL;
    *cap = 0;
    cudaError_t e = cudaMalloc(p, want);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return lb_err_set(err, LB_E_OOM, "cuda: %s of %zu bytes: %s", what, want, cudaGetErrorName(e));
    }
    *cap = want;
    return 0;
}

int lb_cu_ws(struct lb_cu *c, size_t n, void **out, struct lb_err *err)
{
    LB_TRY(lb_cu_grow(c, &c->d_ws, &c->ws_bytes, n, "workspace", err));
    *out = c->d_ws;
    return 0;
}

static int stage(struct lb_cu *c, size_t n, struct lb_err *err)
{
    if (n <= c->stage_bytes) return 0;
    if (c->h_stage) LB_CU(cudaFreeHost(c->h_stage));
    c->h_stage = NULL;
    c->stage_bytes = 0;
    size_t want = n < ((size_t)4 << 20) ? ((size_t)4 << 20) : n;
    LB_CU(cudaMallocHost(&c->h_stage, want));
    c->stage_bytes = want;
    return 0;
}

/* ------------------------------------------------------------------ upload ring */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The ring's stream has just been synchronised: every queued copy has run, every block is free. */
static void ring_all_free(struct lb_cu_ring *r)
{
    for (int i = 0; i < LB_CU_UP_NBLK; i++) r->pending[i] = 0;
    r->off = 0;
}

/* LB_CUDA_PROFILE: the op's key (kind, variant, step size) */
static int prof_key(const struct lb_cu *c, const struct lb_op *op)
{
    int var = 0, big = 0;
    switch (op->kind) {
    case LB_OP_MATMUL:
        var = op->u.matmul.n_out == c->s.n_vocab ? 1 : 0; /* 1: the LM head */
        big = op->u.matmul.n_tok > 512;
        break;
    case LB_OP_LORA:
        var = op->u.lora.n_tgt - 1; /* 0: o or down, 1: gate+up, 2: q+k+v */
        big = op->u.lora.n_tok > 512;
        break;
    case LB_OP_ATTN:
        var = op->u.attn.n_tok == op->u.attn.n_seq ? 0 : 1; /* 0: decode rows only, 1: with prefill rows */
        big = op->u.attn.n_tok > 512;
        break;
    default: break;
    }
    if (var < 0 || var > 3) var = 3;
    return ((int)op->kind * 4 + var) * 2 + big;
}

static const char *prof_var_name(int kind, int var)
{
    if (kind == LB_OP_MATMUL) return var ? "lm_head" : "proj";
    if (kind == LB_OP_LORA) return var == 0 ? "1 target" : var == 1 ? "2 targets" : "3 targets";
    if (kind == LB_OP_ATTN) return var ? "with prefill" : "decode only";
    return "";
}

/* After a stream synchronisation: add up the recorded ops' times */
static void prof_harvest(struct lb_cu *c)
{
    if (!c->prof_n) return;
    for (int i = 0; i < c->prof_n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->prof_ev[2 * i], c->prof_ev[2 * i + 1]) == cudaSuccess) {
            c->prof_ms[c->prof_key[i]] += ms;
            c->prof_cnt[c->prof_key[i]]++;
        }
    }
    float span = 0;
    if (cudaEventElapsedTime(&span, c->prof_ev[0], c->prof_ev[2 * c->prof_n - 1]) == cudaSuccess) c->prof_span_ms += span;
    (void)cudaGetLastError();
    c->prof_n = 0;
}

static void prof_print(struct lb_cu *c)
{
    double total = 0;
    for (int k = 0; k < LB_CU_PROF_KEYS; k++) total += c->prof_ms[k];
    if (total <= 0) return;
    fprintf(stderr, "cuda profile: GPU time per op (events around each op; %.3f s in ops, %.3f s from each step's first op to its last)\n",
            total / 1e3, c->prof_span_ms / 1e3);
    fprintf(stderr, "cuda profile: %-9s %-13s %-10s %9s %11s %10s %7s\n", "op", "variant", "step", "count", "total ms", "avg us", "share");
    int done[LB_CU_PROF_KEYS] = {0};
    for (;;) { /* largest first */
        int best = -1;
        for (int k = 0; k < LB_CU_PROF_KEYS; k++)
            if (!done[k] && c->prof_cnt[k] && (best < 0 || c->prof_ms[k] > c->prof_ms[best])) best = k;
        if (best < 0) break;
        done[best] = 1;
        int kind = best / 8, var = (best / 2) % 4, big = best % 2;
        fprintf(stderr, "cuda profile: %-9s %-13s %-10s %9lld %11.1f %10.1f %6.1f%%\n", lb_op_name((enum lb_op_kind)kind),
                prof_var_name(kind, var), big ? "> 512 tok" : "<= 512 tok", c->prof_cnt[best], c->prof_ms[best],
                1e3 * c->prof_ms[best] / (double)c->prof_cnt[best], 100.0 * c->prof_ms[best] / total);
    }
}

static int stream_sync(struct lb_cu *c, struct lb_err *err)
{
    LB_CU(cudaStreamSynchronize(c->stream));
    ring_all_free(&c->up);
    if (c->prof) prof_harvest(c);
    return 0;
}

/* Allocates ring r once, blk bytes per block, its copies queued on `stream` (grow-only: a larger
 * request reallocates after synchronising that stream, which happens at setup only). */
static int ring_init(struct lb_cu *c, struct lb_cu_ring *r, cudaStream_t stream, size_t blk, struct lb_err *err)
{
    blk = (blk + 4095) & ~(size_t)4095;
    if (r->h && blk <= r->blk) return 0;
    if (stream == c->stream) LB_TRY(stream_sync(c, err));
    else LB_CU(cudaStreamSynchronize(stream));
    if (r->h) LB_CU(cudaFreeHost(r->h));
    r->h = NULL;
    r->blk = 0;
    r->stream = stream;
    for (int i = 0; i < LB_CU_UP_NBLK; i++)
        if (!r->ev[i]) LB_CU(cudaEventCreateWithFlags(&r->ev[i], cudaEventDisableTiming));
    cudaError_t e = cudaHostAlloc((void **)&r->h, blk * LB_CU_UP_NBLK, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        r->h = NULL;
        return lb_err_set(err, LB_E_OOM, "cuda: pinned upload ring of %zu bytes: %s", blk * LB_CU_UP_NBLK,
                          cudaGetErrorName(e));
    }
    r->blk = blk;
    r->cur = 0;
    ring_all_free(r);
    return 0;
}

static void ring_free(struct lb_cu_ring *r)
{
    if (r->h) cudaFreeHost(r->h);
    r->h = NULL;
    for (int i = 0; i < LB_CU_UP_NBLK; i++)
        if (r->ev[i]) cudaEventDestroy(r->ev[i]);
}

/* Reserves n bytes of ring r that no queued copy reads any more; NULL (and no error) when n does
 * not fit in a block. *p is set on success. */
static int ring_reserve(struct lb_cu *c, struct lb_cu_ring *r, size_t n, void **p, struct lb_err *err)
{
    *p = NULL;
    n = (n + 255) & ~(size_t)255;
    if (n > r->blk) return 0;
    if (r->off + n > r->blk) {
        /* close the current block: its event completes after every copy queued from it */
        LB_CU(cudaEventRecord(r->ev[r->cur], r->stream));
        r->pending[r->cur] = 1;
        r->cur = (r->cur + 1) % LB_CU_UP_NBLK;
        r->off = 0;
        if (r->pending[r->cur]) {
            c->st_blk_wait++;
            LB_CU(cudaEventSynchronize(r->ev[r->cur]));
            r->pending[r->cur] = 0;
        }
    }
    *p = r->h + (size_t)r->cur * r->blk + r->off;
    r->off += n;
    return 0;
}

/* The upload ring of the compute stream (allocated at the first upload when setup has not). */
static int up_reserve(struct lb_cu *c, size_t n, void **p, struct lb_err *err)
{
    if (!c->up.h) LB_TRY(ring_init(c, &c->up, c->stream, (size_t)4 << 20, err));
    return ring_reserve(c, &c->up, n, p, err);
}

/* Ops queued from now on wait for the copies queued on the copy stream so far. */
static int cs_join(struct lb_cu *c, struct lb_err *err)
{
    if (!c->cs_pending) return 0;
    LB_CU(cudaEventRecord(c->cs_ev, c->cstream));
    LB_CU(cudaStreamWaitEvent(c->stream, c->cs_ev, 0));
    c->cs_pending = 0;
    return 0;
}

/* Host-side conversions (round to nearest even; NaN stays NaN). */
static void to_half(enum lb_dtype dt, const float *src, void *dst, size_t n)
{
    if (dt == LB_BF16) {
        bf16 *d = (bf16 *)dst;
        for (size_t i = 0; i < n; i++) d[i] = __float2bfloat16_rn(src[i]);
    } else {
        __half *d = (__half *)dst;
        for (size_t i = 0; i < n; i++) d[i] = __float2half_rn(src[i]);
    }
}

static void from_half(enum lb_dtype dt, const void *src, float *dst, size_t n)
{
    if (dt == LB_BF16) {
        const bf16 *s = (const bf16 *)src;
        for (size_t i = 0; i < n; i++) dst[i] = __bfloat162float(s[i]);
    } else {
        const __half *s = (const __half *)src;
        for (size_t i = 0; i < n; i++) dst[i] = __half2float(s[i]);
    }
}

/* ------------------------------------------------------------------ vtable */
static int fb(const struct lb_buf *b) { return b && is_fb(b->dt); }
static int is(const struct lb_buf *b, enum lb_dtype dt) { return b && b->dt == dt; }

/* The same questions the op entries ask, ahead of time: dtypes and the setup-dependent limits
 * (shapes are checked again, with a message, when the op runs). */
static int cu_supports(struct lb_backend *be, const struct lb_op *op)
{
    struct lb_cu *c = cu_of(be);
    const auto *o = op;
    switch (op->kind) {
    case LB_OP_EMBED: return is(o->u.embed.ids, LB_I32) && fb(o->u.embed.table) && fb(o->u.embed.out);
    case LB_OP_RMSNORM:
        return fb(o->u.rmsnorm.x) && fb(o->u.rmsnorm.w) && is(o->u.rmsnorm.out, o->u.rmsnorm.x->dt) &&
               (!o->u.rmsnorm.res || is(o->u.rmsnorm.res, o->u.rmsnorm.x->dt));
    case LB_OP_MATMUL:
        return is(o->u.matmul.x, LB_BF16) && is(o->u.matmul.w, LB_BF16) && fb(o->u.matmul.y) &&
               (!o->u.matmul.bias || is(o->u.matmul.bias, LB_BF16));
    case LB_OP_ROPE: return c->have_setup && o->u.rope.head_dim == c->s.head_dim;
    case LB_OP_SWIGLU: return fb(o->u.swiglu.gate) && is(o->u.swiglu.up, o->u.swiglu.gate->dt);
    case LB_OP_ADD: return fb(o->u.add.x) && fb(o->u.add.y);
    case LB_OP_GATHER: return fb(o->u.gather.x) && is(o->u.gather.idx, LB_I32) && fb(o->u.gather.out);
    case LB_OP_SAMPLE: return fb(o->u.sample.logits) && is(o->u.sample.params, LB_U8) && is(o->u.sample.tok, LB_I32);
    case LB_OP_KV_WRITE: case LB_OP_ATTN:
        return c->have_setup && c->s.head_dim <= 256 && c->s.head_dim % 8 == 0;
    case LB_OP_LORA:
        return c->have_setup && c->s.max_rank <= 128 && fb(o->u.lora.x) &&
               (!o->u.lora.act || (o->u.lora.n_tgt == 2 && !o->u.lora.set && o->u.lora.n_out[0] == o->u.lora.n_out[1]));
    case LB_OP_ALLREDUCE:
        return !c->have_setup || c->s.tp_size <= 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------ step graphs */
static void graph_drop(struct lb_cu *c, struct lb_cu_graph *g)
{
    if (g->exec) {
        cudaGraphExecDestroy(g->exec); /* one still running is freed when it completes */
        c->st_g_drop++;
    }
    g->exec = NULL;
}

static void graphs_free(struct lb_cu *c)
{
    if (c->g_rec) {
        cudaGraph_t gr = NULL;
        cudaStreamEndCapture(c->stream, &gr);
        if (gr) cudaGraphDestroy(gr);
        (void)cudaGetLastError();
        c->g_rec = NULL;
    }
    for (int i = 0; i < c->n_graph; i++) graph_drop(c, &c->graph[i]);
    c->n_graph = 0;
}

/* The backend contract (backend.h): the ops between graph_begin and graph_end are the same for
 * every step of a key, only the uploaded buffers' contents differ. The first step of a key runs as
 * ops, which sizes every workspace and makes the GEMM plans, so that recording the second calls
 * nothing that allocates or synchronises (the capture is thread-local: such a call fails, the
 * recording is abandoned, the key is marked failed and forward.c runs the ops again). A recording
 * is dropped when memory it may use was freed since (mem_gen). Adapter copies on the copy stream
 * are joined before the graph, outside the recording. */
static int cu_graph_begin(struct lb_backend *be, uint64_t key, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    if (!c->graphs || c->prof || c->lora_dense_check || c->g_rec) return 0;
    LB_TRY(cs_join(c, err));
    struct lb_cu_graph *g = NULL;
    for (int i = 0; i < c->n_graph && !g; i++)
        if (c->graph[i].key == key) g = &c->graph[i];
    if (!g) {
        if (c->n_graph < LB_CU_GRAPH_CAP) g = &c->graph[c->n_graph++];
        else { /* the least recently used makes room */
            g = &c->graph[0];
            for (int i = 1; i < c->n_graph; i++)
                if (c->graph[i].last_use < g->last_use) g = &c->graph[i];
            graph_drop(c, g);
        }
        memset(g, 0, sizeof *g);
        g->key = key;
    }
    g->last_use = ++c->g_clock;
    if (g->exec && g->mem_gen != c->mem_gen) graph_drop(c, g);
    c->lc_valid = 0; /* the LoRA tile list is built inside the graph */
    if (g->exec) {
        LB_CU(cudaGraphLaunch(g->exec, c->stream));
        c->st_g_replay++;
        return 1;
    }
    if (g->failed || g->seen++ == 0) return 0;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        g->failed = 1;
        c->st_g_fail++;
        return 0;
    }
    c->g_rec = g;
    return 0;
}

static int cu_graph_end(struct lb_backend *be, int ok, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    struct lb_cu_graph *g = c->g_rec;
    if (!g) return 0;
    c->g_rec = NULL;
    c->lc_valid = 0;
    cudaGraph_t gr = NULL;
    cudaGraphExec_t x = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &gr);
    if (e == cudaSuccess && ok && gr) e = cudaGraphInstantiate(&x, gr, 0);
    if (gr) cudaGraphDestroy(gr);
    if (e != cudaSuccess || !ok || !x || g->unfit) {
        (void)cudaGetLastError();
        if (x) cudaGraphExecDestroy(x);
        g->failed = 1;
        if (!c->st_g_fail++ && ok && !g->unfit)
            fprintf(stderr, "lorabatch: cuda: recording a decode step as a graph failed (%s); such steps run as ops\n",
                    cudaGetErrorName(e));
        return 1;
    }
    g->exec = x;
    g->mem_gen = c->mem_gen;
    c->st_g_rec++;
    LB_CU(cudaGraphLaunch(x, c->stream));
    return 0;
}

static void free_state(struct lb_cu *c)
{
    graphs_free(c);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->cstream) cudaStreamSynchronize(c->cstream); /* no copy into the slots is left in flight */
    c->cs_pending = 0;
    ring_all_free(&c->ld);
    if (c->d_kcache) cudaFree(c->d_kcache);
    if (c->d_vcache) cudaFree(c->d_vcache);
    if (c->d_inv_freq) cudaFree(c->d_inv_freq);
    if (c->d_slots) cudaFree(c->d_slots);
    if (c->d_mods) cudaFree(c->d_mods);
    lb_cuda_lora_dense_free(c);
    free(c->h_mods);
    free(c->slot_gen);
    c->slot_gen = NULL;
    c->d_kcache = c->d_vcache = NULL;
    c->d_inv_freq = NULL;
    c->d_slots = NULL;
    c->d_mods = NULL;
    c->h_mods = NULL;
    c->have_setup = 0;
}

static int cu_malloc(void **p, size_t n, const char *what, struct lb_err *err)
{
    cudaError_t e = cudaMalloc(p, n ? n : 256);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return lb_err_set(err, LB_E_OOM, "cuda: %s needs %.1f MiB; %.1f MiB of %.1f MiB free on the GPU (%s)", what,
                      n / 1048576.0, fr / 1048576.0, tot / 1048576.0, cudaGetErrorName(e));
}

/* RoPE inverse frequencies: HF's float32 formula, with the llama3 wavelength bands compared in
 * float64 — the very expression of backend_cpu.c (rope_inv_freq), so both backends rotate by
 * bit-identical frequencies. */
static void rope_inv_freq(const struct lb_backend_setup *s, float *inv)
{
    int D = s->head_dim;
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

static int cu_setup(struct lb_backend *be, const struct lb_backend_setup *s, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    free_state(c);
    if (s->tp_size > 1)
        return lb_err_set(err, LB_E_UNSUPPORTED, "cuda: tensor parallel (tp_size %d) is not built yet", s->tp_size);
    if (s->n_head <= 0 || s->n_kv_head <= 0 || s->n_head % s->n_kv_head || s->head_dim <= 0 || s->head_dim % 2)
        return lb_err_set(err, LB_E_INPUT, "cuda setup: bad heads (n_head %d, n_kv_head %d, head_dim %d)", s->n_head,
                          s->n_kv_head, s->head_dim);
    if (s->head_dim > 256)
        return lb_err_set(err, LB_E_UNSUPPORTED, "cuda: head_dim %d > 256 not supported", s->head_dim);
    if (s->max_rank > 128)
        return lb_err_set(err, LB_E_UNSUPPORTED, "cuda: max LoRA rank %d > 128 not supported", s->max_rank);
    c->s = *s;
    c->n_head_local = s->n_head;
    c->n_kv_head_local = s->n_kv_head;
    int D = s->head_dim;

    size_t kv_elem = (size_t)s->n_layer * s->n_page * s->page_size * s->n_kv_head * D;
    LB_TRY(cu_malloc((void **)&c->d_kcache, kv_elem * 2, "KV cache (K)", err));
    LB_TRY(cu_malloc((void **)&c->d_vcache, kv_elem * 2, "KV cache (V)", err));

    float *inv = (float *)malloc(sizeof(float) * (D / 2));
    if (!inv) return lb_err_set(err, LB_E_OOM, "host");
    rope_inv_freq(s, inv);
    int rc = cu_malloc((void **)&c->d_inv_freq, sizeof(float) * (D / 2), "RoPE table", err);
    if (rc == 0) {
        cudaError_t e = cudaMemcpy(c->d_inv_freq, inv, sizeof(float) * (D / 2), cudaMemcpyHostToDevice);
        if (e != cudaSuccess) rc = lb_err_set(err, LB_E_DEVICE, "cudaMemcpy RoPE table: %s", cudaGetErrorName(e));
    }
    free(inv);
    if (rc < 0) return rc;

    int H = s->n_hidden, F = s->n_ff, QD = s->n_head * D, KD = s->n_kv_head * D;
    int in[LB_T_COUNT] = {H, H, H, QD, H, H, F};
    int out[LB_T_COUNT] = {QD, KD, KD, H, F, F, H};
    size_t off = 0, R = (size_t)s->max_rank;
    for (int t = 0; t < LB_T_COUNT; t++) {
        c->mod_in[t] = in[t];
        c->mod_out[t] = out[t];
        c->mod_off_elem[t] = off;
        off += R * ((size_t)in[t] + out[t]);
        off = (off + 63) & ~(size_t)63; /* 128-byte aligned modules */
    }
    c->layer_stride_elem = off;
    c->slot_stride_elem = off * s->n_layer;
    size_t n_slot = s->n_slot > 0 ? s->n_slot : 0;
    if (n_slot && R) LB_TRY(cu_malloc((void **)&c->d_slots, c->slot_stride_elem * n_slot * 2, "adapter slots", err));
    size_t n_mod = n_slot * s->n_layer * LB_T_COUNT;
    c->h_mods = (struct lb_cu_lora_mod *)calloc(n_mod ? n_mod : 1, sizeof *c->h_mods);
    c->slot_gen = (unsigned *)calloc(n_slot ? n_slot : 1, sizeof *c->slot_gen);
    if (!c->h_mods || !c->slot_gen) return lb_err_set(err, LB_E_OOM, "host");
    LB_TRY(cu_malloc((void **)&c->d_mods, (n_mod ? n_mod : 1) * sizeof *c->d_mods, "adapter table", err));
    LB_CU(cudaMemcpy(c->d_mods, c->h_mods, (n_mod ? n_mod : 1) * sizeof *c->d_mods, cudaMemcpyHostToDevice));
    /* Upload ring, sized for one step's index buffers with room to spare: tokens, positions and
     * slot map of up to 64K tokens (768 KiB), the page list (4 bytes a page) and per-sequence
     * arrays, per block; several steps fit before a block is reused. With adapter slots, also
     * large enough that the blocks other than the current one hold a whole slot (capped at
     * 256 MiB a block): an adapter loaded while a step runs (the job pipeline loads the plan's
     * next adapter then) is staged without waiting for that step's copies to finish. */
    size_t blk = ((size_t)4 << 20) + (size_t)4 * ((size_t)s->n_page + 4096), slot_blk = 0;
    if (n_slot && R) {
        slot_blk = c->slot_stride_elem * 2 / (LB_CU_UP_NBLK - 1) + ((size_t)1 << 20);
        if (slot_blk > ((size_t)256 << 20)) slot_blk = (size_t)256 << 20;
    }
    if (slot_blk && c->copy_stream) { /* adapters go through their own ring on the copy stream */
        if (!c->cstream) {
            LB_CU(cudaStreamCreateWithFlags(&c->cstream, cudaStreamNonBlocking));
            LB_CU(cudaEventCreateWithFlags(&c->cs_ev, cudaEventDisableTiming));
        }
        LB_TRY(ring_init(c, &c->ld, c->cstream, slot_blk, err));
    } else if (slot_blk > blk) blk = slot_blk;
    LB_TRY(ring_init(c, &c->up, c->stream, blk, err));
    c->have_setup = 1;
    return 0;
}

static struct lb_buf *cu_alloc(struct lb_backend *be, enum lb_dtype dt, size_t n_elem, struct lb_err *err)
{
    if (be && be->impl) cu_of(be)->buf_gen++;
    size_t es = lb_dtype_size(dt);
    if (!es) {
        lb_err_set(err, LB_E_INTERNAL, "cuda alloc: bad dtype %d", (int)dt);
        return NULL;
    }
    struct lb_buf *b = (struct lb_buf *)calloc(1, sizeof *b);
    if (!b) {
        lb_err_set(err, LB_E_OOM, "host");
        return NULL;
    }
    b->dt = dt;
    b->n_elem = n_elem;
    if (cu_malloc(&b->d, n_elem * es, "buffer", err) < 0) {
        free(b);
        return NULL;
    }
    return b;
}

static void cu_buf_free(struct lb_backend *be, struct lb_buf *b)
{
    if (be && be->impl) {
        cu_of(be)->buf_gen++;
        cu_of(be)->mem_gen++; /* recorded graphs may point into it */
    }
    if (!b) return;
    cudaFree(b->d);
    free(b);
}

static int cu_upload(struct lb_backend *be, struct lb_buf *b, size_t off, const void *src, enum lb_dtype src_dt,
                     size_t n, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    if (!b || off + n > b->n_elem)
        return lb_err_set(err, LB_E_INTERNAL, "cuda upload: %zu elements at %zu into a buffer of %zu", n, off,
                          b ? b->n_elem : 0);
    c->buf_gen++;
    if (!n) return 0;
    double t0 = c->stats ? now_s() : 0;
    if (c->stats && c->st_first_up == 0) { /* first upload of a step */
        c->st_first_up = t0;
        c->st_step_tok = (int)n;
        if (c->st_t_last > 0) {
            c->st_gap += t0 - c->st_t_last;
            if (n <= 512) c->st_small_gap += t0 - c->st_t_last;
        }
    }
    size_t es = lb_dtype_size(b->dt);
    char *dst = (char *)b->d + off * es;
    int raw = src_dt == b->dt;
    int conv = src_dt == LB_F32 && (b->dt == LB_BF16 || b->dt == LB_F16);
    if (!raw && !conv)
        return lb_err_set(err, LB_E_UNSUPPORTED, "cuda upload: %s host data into a %s buffer", lb_dtype_name(src_dt),
                          lb_dtype_name(b->dt));
    size_t bytes = raw ? n * es : n * 2;
    void *h;
    LB_TRY(up_reserve(c, bytes, &h, err));
    if (h) { /* asynchronous: the caller's memory is copied into the ring before we return */
        if (raw) memcpy(h, src, bytes);
        else to_half(b->dt, (const float *)src, h, n);
        LB_CU(cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, c->stream));
    } else if (raw) { /* larger than a ring block (weights): synchronous, as before */
        c->st_up_sync++;
        LB_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
        LB_TRY(stream_sync(c, err));
    } else {
        c->st_up_sync++;
        LB_TRY(stream_sync(c, err)); /* the staging buffer may still feed an earlier copy */
        LB_TRY(stage(c, bytes, err));
        to_half(b->dt, (const float *)src, c->h_stage, n);
        LB_CU(cudaMemcpyAsync(dst, c->h_stage, bytes, cudaMemcpyHostToDevice, c->stream));
        LB_TRY(stream_sync(c, err));
    }
    if (c->stats) {
        double dt = now_s() - t0;
        if (h) {
            c->st_upload += dt;
            c->st_up_n++;
            c->st_up_bytes += (long long)bytes;
        } else { /* weights: not part of a step (the next upload starts one) */
            c->st_sync_s += dt;
            c->st_sync_bytes += (long long)bytes;
            c->st_first_up = 0;
        }
    }
    return 0;
}

static int cu_download(struct lb_backend *be, const struct lb_buf *b, size_t off, void *dst, enum lb_dtype dst_dt,
                       size_t n, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    if (!b || off + n > b->n_elem)
        return lb_err_set(err, LB_E_INTERNAL, "cuda download: %zu elements at %zu from a buffer of %zu", n, off,
                          b ? b->n_elem : 0);
    if (!n) return 0;
    size_t es = lb_dtype_size(b->dt);
    const char *src = (const char *)b->d + off * es;
    int raw = dst_dt == b->dt;
    int conv = dst_dt == LB_F32 && (b->dt == LB_BF16 || b->dt == LB_F16);
    if (!raw && !conv)
        return lb_err_set(err, LB_E_UNSUPPORTED, "cuda download: %s buffer into %s host data", lb_dtype_name(b->dt),
                          lb_dtype_name(dst_dt));
    double t0 = c->stats ? now_s() : 0;
    size_t bytes = raw ? n * es : n * 2;
    if (raw && bytes > ((size_t)16 << 20)) { /* large (logits for tests): straight into the caller's memory */
        LB_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
        LB_TRY(stream_sync(c, err));
    } else {
        /* h_stage is only touched under a stream synchronisation; none of the queued work reads it */
        LB_TRY(stage(c, bytes, err));
        LB_CU(cudaMemcpyAsync(c->h_stage, src, bytes, cudaMemcpyDeviceToHost, c->stream));
        LB_TRY(stream_sync(c, err));
        if (raw) memcpy(dst, c->h_stage, bytes);
        else from_half(b->dt, c->h_stage, (float *)dst, n);
    }
    if (c->stats && c->st_first_up > 0) { /* the step's first download ends it */
        double t1 = now_s();
        double enq = t0 - c->st_first_up, wait = t1 - t0;
        c->st_enqueue += enq;
        c->st_wait += wait;
        c->st_steps++;
        if (c->st_step_tok <= 512) {
            c->st_small_enq += enq;
            c->st_small_wait += wait;
            c->st_small_steps++;
        }
        c->st_first_up = 0;
        c->st_t_last = t1;
    }
    return 0;
}

static struct lb_buf *cu_weight(struct lb_backend *be, enum lb_dtype dt, const void *host, size_t n_elem,
                                struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    enum lb_dtype store = (dt == LB_F32 || dt == LB_F16) ? LB_BF16 : dt;
    struct lb_buf *b = cu_alloc(be, store, n_elem, err);
    if (!b) return NULL;
    b->is_weight = 1;
    int rc = 0;
    if (dt == store) {
        rc = cu_upload(be, b, 0, host, dt, n_elem, err);
    } else {
        /* Convert in chunks through the pinned stage: f32/f16 -> bf16. */
        size_t chunk = (size_t)1 << 22;
        for (size_t i = 0; i < n_elem && rc == 0; i += chunk) {
            size_t m = n_elem - i < chunk ? n_elem - i : chunk;
            rc = stage(c, m * 2, err);
            if (rc) break;
            cudaError_t e = cudaStreamSynchronize(c->stream);
            if (e != cudaSuccess) {
                rc = lb_err_set(err, LB_E_DEVICE, "cuda weight upload: %s", cudaGetErrorName(e));
                break;
            }
            bf16 *d = (bf16 *)c->h_stage;
            if (dt == LB_F32) {
                const float *s = (const float *)host + i;
                for (size_t j = 0; j < m; j++) d[j] = __float2bfloat16_rn(s[j]);
            } else {
                const __half *s = (const __half *)host + i;
                for (size_t j = 0; j < m; j++) d[j] = __float2bfloat16_rn(__half2float(s[j]));
            }
            e = cudaMemcpyAsync((bf16 *)b->d + i, d, m * 2, cudaMemcpyHostToDevice, c->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
            if (e != cudaSuccess) rc = lb_err_set(err, LB_E_DEVICE, "cuda weight upload: %s", cudaGetErrorName(e));
        }
    }
    if (rc < 0) {
        cu_buf_free(be, b);
        return NULL;
    }
    return b;
}

static int run_allreduce(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    (void)op;
    if (c->have_setup && c->s.tp_size > 1) LB_UNSUP("cuda: allreduce over %d ranks not built yet", c->s.tp_size);
    return 0; /* one rank: the identity */
}

static int cu_run(struct lb_backend *be, const struct lb_op *op, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    int rc;
    LB_TRY(cs_join(c, err));
    if (c->prof) {
        if (c->prof_n == c->prof_cap) {
            int nc = c->prof_cap ? 2 * c->prof_cap : 1024;
            cudaEvent_t *ev = (cudaEvent_t *)realloc(c->prof_ev, sizeof *ev * 2 * (size_t)nc);
            int *key = (int *)realloc(c->prof_key, sizeof *key * (size_t)nc);
            if (ev) c->prof_ev = ev;
            if (key) c->prof_key = key;
            if (!ev || !key) return lb_err_set(err, LB_E_OOM, "cuda profile: out of host memory");
            for (int i = 2 * c->prof_cap; i < 2 * nc; i++) LB_CU(cudaEventCreate(&c->prof_ev[i]));
            c->prof_cap = nc;
        }
        c->prof_key[c->prof_n] = prof_key(c, op);
        LB_CU(cudaEventRecord(c->prof_ev[2 * c->prof_n], c->stream));
    }
    switch (op->kind) {
    case LB_OP_EMBED: rc = lb_cuda_embed(c, op, err); break;
    case LB_OP_RMSNORM: rc = lb_cuda_rmsnorm(c, op, err); break;
    case LB_OP_MATMUL: rc = lb_cuda_matmul(c, op, err); break;
    case LB_OP_LORA: rc = lb_cuda_lora(c, op, err); break;
    case LB_OP_ROPE: rc = lb_cuda_rope(c, op, err); break;
    case LB_OP_KV_WRITE: rc = lb_cuda_kv_write(c, op, err); break;
    case LB_OP_ATTN: rc = lb_cuda_attn(c, op, err); break;
    case LB_OP_SWIGLU: rc = lb_cuda_swiglu(c, op, err); break;
    case LB_OP_ADD: rc = lb_cuda_add(c, op, err); break;
    case LB_OP_GATHER: rc = lb_cuda_gather(c, op, err); break;
    case LB_OP_SAMPLE: rc = lb_cuda_sample(c, op, err); break;
    case LB_OP_ALLREDUCE: rc = run_allreduce(c, op, err); break;
    default: return lb_err_set(err, LB_E_UNSUPPORTED, "cuda: unknown op %d", (int)op->kind);
    }
    if (rc < 0) lb_err_prefix(err, "cuda op %s", lb_op_name(op->kind));
    else if (c->prof) {
        LB_CU(cudaEventRecord(c->prof_ev[2 * c->prof_n + 1], c->stream));
        c->prof_n++;
    }
    return rc;
}

/* ------------------------------------------------------------------ adapters */
/* The stream and ring that adapter copies go through: the copy stream's when there is one. */
static cudaStream_t ld_stream(const struct lb_cu *c) { return c->ld.h ? c->cstream : c->stream; }

/* Reserves n bytes of pinned memory from which an adapter copy is queued on ld_stream(); when n
 * does not fit a ring block, the staging buffer after synchronising that stream (and the compute
 * stream: h_stage also serves its downloads). *sync is then set: the caller synchronises
 * ld_stream() once the copy is queued. */
static int ld_reserve(struct lb_cu *c, size_t n, void **p, int *sync, struct lb_err *err)
{
    *sync = 0;
    if (c->ld.h) LB_TRY(ring_reserve(c, &c->ld, n, p, err));
    else LB_TRY(up_reserve(c, n, p, err));
    if (*p) return 0;
    LB_TRY(stream_sync(c, err));
    if (c->ld.h) LB_CU(cudaStreamSynchronize(c->cstream));
    LB_TRY(stage(c, n, err));
    *p = c->h_stage;
    *sync = 1;
    return 0;
}

/* Queues the copy of n bytes from pinned h (from ld_reserve) to device d. */
static int ld_copy(struct lb_cu *c, void *d, const void *h, size_t n, int sync, struct lb_err *err)
{
    cudaStream_t st = ld_stream(c);
    LB_CU(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, st));
    if (st == c->cstream) c->cs_pending = 1;
    if (sync) {
        if (st == c->stream) LB_TRY(stream_sync(c, err));
        else LB_CU(cudaStreamSynchronize(st));
    }
    return 0;
}

/* h_mods[mi .. mi+n) -> d_mods (see cu_lora_load) */
static int mods_upload(struct lb_cu *c, size_t mi, size_t n, struct lb_err *err)
{
    size_t bytes = n * sizeof *c->h_mods;
    void *h;
    int sync;
    c->buf_gen++;
    LB_TRY(ld_reserve(c, bytes, &h, &sync, err));
    memcpy(h, c->h_mods + mi, bytes);
    return ld_copy(c, c->d_mods + mi, h, bytes, sync, err);
}

/* Backend contract (backend.h): no op queued so far reads `slot`, and ops queued later must see
 * the new module. Without a copy stream the copy is queued on the compute stream, which gives
 * both. With one (LB_CUDA_COPY_STREAM=1) it runs beside the queued ops, and the next op waits for
 * it (cs_join in cu_run), so a load made while a step runs (the job pipeline loads the plan's
 * next adapters then) costs the step nothing on the GPU. Either way the host-side conversion
 * into pinned memory happens here (bf16 modules of 1 MiB or more copied by copy_threads threads:
 * one core stages ~6 GB/s, ~30 ms for an average workload-3 adapter) and the call does not wait
 * for the GPU, unless a module is larger than a ring block. */
static int cu_lora_load(struct lb_backend *be, int slot, int layer, enum lb_target t, const struct lb_lora_module *m,
                        struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "cuda lora_load before setup");
    if (slot < 0 || slot >= c->s.n_slot || layer < 0 || layer >= c->s.n_layer || (unsigned)t >= LB_T_COUNT)
        return lb_err_set(err, LB_E_INTERNAL, "cuda lora_load: slot %d layer %d target %d out of range", slot, layer,
                          (int)t);
    size_t mi = ((size_t)slot * c->s.n_layer + layer) * LB_T_COUNT + t;
    struct lb_cu_lora_mod md = {NULL, NULL, 0, 0.0f};
    c->slot_gen[slot]++; /* copies of the slot's modules (the dense path's cache) are stale */
    if (m && m->rank > 0) {
        if (m->rank > c->s.max_rank)
            return lb_err_set(err, LB_E_INPUT, "adapter %s layer %d: rank %d > max_lora_rank %d", lb_target_name(t),
                              layer, m->rank, c->s.max_rank);
        if (m->n_in != c->mod_in[t] || m->n_out != c->mod_out[t])
            return lb_err_set(err, LB_E_INPUT, "adapter %s layer %d: shape in %d out %d, model expects in %d out %d",
                              lb_target_name(t), layer, m->n_in, m->n_out, c->mod_in[t], c->mod_out[t]);
        if (m->dtype != LB_F32 && m->dtype != LB_F16 && m->dtype != LB_BF16)
            return lb_err_set(err, LB_E_UNSUPPORTED, "adapter %s layer %d: dtype %s", lb_target_name(t), layer,
                              lb_dtype_name(m->dtype));
        size_t na = (size_t)m->rank * m->n_in, nb = (size_t)m->n_out * m->rank;
        bf16 *base = c->d_slots + (size_t)slot * c->slot_stride_elem + (size_t)layer * c->layer_stride_elem +
                     c->mod_off_elem[t];
        bf16 *h;
        int sync;
        LB_TRY(ld_reserve(c, (na + nb) * 2, (void **)&h, &sync, err));
        const void *srcs[2] = {m->a, m->b};
        size_t ns[2] = {na, nb};
        for (int k = 0; k < 2; k++) {
            bf16 *d = h + (k ? na : 0);
            if (m->dtype == LB_BF16) lb_par_memcpy(d, srcs[k], ns[k] * 2, c->copy_threads);
            else if (m->dtype == LB_F32) to_half(LB_BF16, (const float *)srcs[k], d, ns[k]);
            else {
                const __half *s = (const __half *)srcs[k];
                for (size_t j = 0; j < ns[k]; j++) d[j] = __float2bfloat16_rn(__half2float(s[j]));
            }
        }
        LB_TRY(ld_copy(c, base, h, (na + nb) * 2, sync, err));
        md.a = base;
        md.b = base + na;
        md.rank = m->rank;
        md.scale = m->scale;
    }
    c->h_mods[mi] = md;
    LB_TRY(mods_upload(c, mi, 1, err));
    return 0;
}

static int cu_lora_clear(struct lb_backend *be, int slot, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "cuda lora_clear before setup");
    if (slot < 0 || slot >= c->s.n_slot) return lb_err_set(err, LB_E_INTERNAL, "cuda lora_clear: slot %d", slot);
    size_t n = (size_t)c->s.n_layer * LB_T_COUNT, mi = (size_t)slot * n;
    c->slot_gen[slot]++;
    memset(c->h_mods + mi, 0, n * sizeof *c->h_mods);
    return mods_upload(c, mi, n, err);
}

static int cu_sync(struct lb_backend *be, struct lb_err *err)
{
    struct lb_cu *c = cu_of(be);
    LB_TRY(cs_join(c, err));
    LB_TRY(stream_sync(c, err)); /* after the join: the copy stream's work has run too */
    LB_CU(cudaGetLastError());
    return 0;
}

static void cu_destroy(struct lb_backend *be)
{
    struct lb_cu *c = cu_of(be);
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->cstream) cudaStreamSynchronize(c->cstream);
    if (c->prof) {
        prof_harvest(c);
        prof_print(c);
        for (int i = 0; i < 2 * c->prof_cap; i++) cudaEventDestroy(c->prof_ev[i]);
        free(c->prof_ev);
        free(c->prof_key);
    }
    if (c->stats && c->st_steps) {
        long long ns = c->st_steps, nsm = c->st_small_steps;
        fprintf(stderr,
                "cuda stats: %lld steps: host between steps %.3f s (%.1f us/step), ring uploads %.3f s (%lld, %.1f "
                "MiB, %lld ring waits), enqueue %.3f s (%.1f us/step, uploads included), wait in download %.3f s "
                "(%.1f us/step); %lld synchronous uploads (weights) %.1f MiB in %.3f s\n",
                ns, c->st_gap, 1e6 * c->st_gap / ns, c->st_upload, c->st_up_n, c->st_up_bytes / 1048576.0,
                c->st_blk_wait, c->st_enqueue, 1e6 * c->st_enqueue / ns, c->st_wait, 1e6 * c->st_wait / ns,
                c->st_up_sync, c->st_sync_bytes / 1048576.0, c->st_sync_s);
        if (nsm)
            fprintf(stderr,
                    "cuda stats: %lld steps of <= 512 tokens: host between %.1f us/step, enqueue %.1f us/step, wait "
                    "%.1f us/step\n",
                    nsm, 1e6 * c->st_small_gap / nsm, 1e6 * c->st_small_enq / nsm, 1e6 * c->st_small_wait / nsm);
        lb_cublas_stats(c);
        if (c->st_g_replay || c->st_g_rec || c->st_g_fail)
            fprintf(stderr,
                    "cuda stats: step graphs: %lld steps replayed, %lld recorded, %lld recordings failed, %lld dropped "
                    "(memory moved or evicted)\n",
                    c->st_g_replay, c->st_g_rec, c->st_g_fail, c->st_g_drop);
        if (c->ld_taken || c->ld_skip_rmax || c->ld_skip_other)
            fprintf(stderr,
                    "cuda stats: dense LoRA path: %lld ops taken; left to the segmented kernels: %lld whose active "
                    "ranks add up to more than %d columns (LB_CUDA_LORA_DENSE_RMAX), %lld for other reasons\n",
                    c->ld_taken, c->ld_skip_rmax, c->lora_dense_rmax, c->ld_skip_other);
        if (c->ld_hybrid)
            fprintf(stderr,
                    "cuda stats: dense LoRA path: %lld ops left slots of fewer than %d rows "
                    "(LB_CUDA_LORA_DENSE_MIN_ROWS) to the segmented kernels, %.1f rows per op\n",
                    c->ld_hybrid, c->lora_dense_min_rows, (double)c->ld_hybrid_rows / c->ld_hybrid);
        if (c->ld_grouped)
            fprintf(stderr,
                    "cuda stats: dense LoRA path: %lld ops in row groups of about %d rows "
                    "(LB_CUDA_LORA_DENSE_GROUP_ROWS), %.1f groups per op\n",
                    c->ld_grouped, c->lora_dense_group_rows, (double)c->ld_groups / c->ld_grouped);
    }
    free_state(c);
    lb_cublas_close(c);
    if (c->d_ws) cudaFree(c->d_ws);
    if (c->d_lora_tl) cudaFree(c->d_lora_tl);
    if (c->d_hyb_slot) cudaFree(c->d_hyb_slot);
    free(c->h_hyb_slot);
    if (c->h_stage) cudaFreeHost(c->h_stage);
    ring_free(&c->up);
    ring_free(&c->ld);
    if (c->cs_ev) cudaEventDestroy(c->cs_ev);
    if (c->cstream) cudaStreamDestroy(c->cstream);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
    be->impl = NULL;
}

static int cu_mem_info(struct lb_backend *be, size_t *free_bytes, size_t *total_bytes, struct lb_err *err)
{
    (void)be;
    LB_CU(cudaMemGetInfo(free_bytes, total_bytes));
    return 0;
}

static const struct lb_backend_ops cu_ops = {
    "cuda",      LB_BF16,         cu_supports,   cu_setup,      cu_alloc, cu_weight, cu_buf_free, cu_upload,
    cu_download, cu_run,          cu_lora_load,  cu_lora_clear, cu_sync,  cu_destroy, cu_mem_info,
    cu_graph_begin, cu_graph_end,
};

extern "C" int lb_backend_cuda_open(struct lb_backend *be, int device, struct lb_err *err)
{
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        (void)cudaGetLastError();
        return lb_err_set(err, LB_E_DEVICE, "cuda: no usable GPU (%s)",
                          e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= n_dev)
        return lb_err_set(err, LB_E_DEVICE, "cuda: device %d does not exist (%d found)", device, n_dev);
    struct lb_cu *c = (struct lb_cu *)calloc(1, sizeof *c);
    if (!c) return lb_err_set(err, LB_E_OOM, "host");
    c->device = device;
    be->ops = &cu_ops;
    be->impl = c;
    int rc = 0;
    cudaDeviceProp prop;
    e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) rc = lb_err_set(err, LB_E_DEVICE, "cuda: device %d: %s", device, cudaGetErrorString(e));
    if (rc == 0) {
        c->n_sm = prop.multiProcessorCount;
        const char *ev = getenv("LB_CUDA_LORA");
        c->lora_variant = ev && (atoi(ev) == 1 || atoi(ev) == 2) ? atoi(ev) : 3;
        ev = getenv("LB_CUDA_LORA_DENSE");
        /* default 1024: the dense path on set-mode ops of >= 1024 tokens (H100 run 16: workload 1
         * +2.3% over the segmented kernels, LB_CUDA_LORA_DENSE=0; its strict golden passes) */
        c->lora_dense_min = ev ? atoi(ev) : 1024;
        ev = getenv("LB_CUDA_LORA_DENSE_HILO");
        /* default 0: v as one bf16 (H100 run 26: workload 1 +1.5% over the hi/lo pair, its strict
         * golden passes); 1: the hi/lo pair of runs 11-25 */
        c->lora_dense_hilo = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_LORA_DENSE_CACHE");
        c->lora_dense_cache = ev && atoll(ev) > 0 ? (size_t)atoll(ev) << 20 : 0;
        ev = getenv("LB_CUDA_LORA_DENSE_STRICT");
        c->lora_dense_strict = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_LORA_DENSE_RMAX");
        c->lora_dense_rmax = ev && atoi(ev) > 0 ? atoi(ev) : 1024;
        if (c->lora_dense_rmax > 4096) c->lora_dense_rmax = 4096;
        ev = getenv("LB_CUDA_LORA_DENSE_MIN_ROWS");
        /* default 128: H100 run 39 measured workload 3 at 22,307 tok/s with it (v5 decode), against
         * 20,455 without either in run 37; H200 run 40: workload 3 24,089 tok/s (93.6% of workload
         * 1), workload 1 25,836 against 25,745 without; its op test (test_lora_dense_hybrid, with a
         * must-fail pass) and the hybrid golden passed there. 0: every slot dense */
        c->lora_dense_min_rows = ev ? (atoi(ev) > 0 ? atoi(ev) : 0) : 128;
        ev = getenv("LB_CUDA_LORA_DENSE_GROUP_ROWS");
        /* default 0 (one group: every row times every dense slot's columns); not yet run on a GPU
         * (tests/ops/gpu_run42.sh measures 2048 and 1024) */
        c->lora_dense_group_rows = ev && atoi(ev) > 0 ? atoi(ev) : 0;
        ev = getenv("LB_CUDA_LORA_DENSE_GROUP_SKIP_LAST");
        c->lora_group_skip_last = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_LORA_DENSE_HYBRID_SKIP");
        c->lora_hybrid_skip = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_LORA_DENSE_CHECK");
        c->lora_dense_check = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_LORA_EXPAND");
        c->lora_expand = ev && atoi(ev) == 2 ? 2 : 3;
        ev = getenv("LB_CUDA_LORA_ACT");
        c->lora_act = !(ev && atoi(ev) == 0);
        ev = getenv("LB_CUDA_LORA_ASYNC");
        c->lora_async = !(ev && atoi(ev) == 0);
        ev = getenv("LB_CUDA_LORA_PDL");
        /* default on (Hopper+, steps of <= 512 tokens): H100 runs 42-43, op tests and goldens pass with
         * it; workload 1's decode LoRA ops 5-18% faster (-14 us per layer at 512 tokens); 0: off */
        c->lora_pdl = !(ev && atoi(ev) == 0) && prop.major >= 9;
        ev = getenv("LB_CUDA_LORA_SPLIT");
        c->lora_split_blocks = ev ? atoi(ev) : 0;
        ev = getenv("LB_CUDA_ATTN_PREFILL");
        /* default 4: the FA2-style prefill's lean variant (page ids staged once per block, no mask
         * below every row's causal limit; H200 run 41: 448 against 477 us at 16 x 512, op tests and
         * goldens pass); 3: the plain one; 2: the WMMA prefill */
        c->attn_prefill = ev && (atoi(ev) == 2 || atoi(ev) == 3) ? atoi(ev) : 4;
        ev = getenv("LB_CUDA_ATTN_DEC_ORDER");
        c->attn_dec_order = ev && atoi(ev) == 1 ? 1 : 0;
        ev = getenv("LB_CUDA_COPY_STREAM");
        /* default on (LB_CUDA_COPY_STREAM=0: copies on the compute stream): op tests and goldens
         * pass with it in runs 10-16, workload 3 hid 251 of 252 loads with it (run 11) */
        c->copy_stream = !ev || atoi(ev) > 0;
        ev = getenv("LB_CUDA_COPY_THREADS");
        c->copy_threads = ev ? atoi(ev) : 4; /* H100 run 9: one thread staged adapters at ~5.8 GB/s */
        ev = getenv("LB_CUDA_STATS");
        c->stats = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_GRAPHS");
        c->graphs = !(ev && atoi(ev) == 0);
        ev = getenv("LB_CUDA_ELEM");
        /* default 2: the 16-byte kernels (H100, run 10: workload 1 +4.0% over the scalar ones,
         * LB_CUDA_ELEM=1; op tests pass) */
        c->elem_variant = ev && atoi(ev) == 1 ? 1 : 2;
        ev = getenv("LB_CUDA_PROFILE");
        c->prof = ev && atoi(ev) > 0;
        ev = getenv("LB_CUDA_ATTN");
        /* default 5: the decode with one warp per item (k_attn_decode_w) where it needs no KV
         * split, else the v4 tensor-core decode (H100 run 39: workload 1 +3.1% over v4 alone,
         * LB_CUDA_ATTN=4; op tests and goldens pass); 6: k_attn_decode_w everywhere
         * (LB_CUDA_ATTN_DEC_NST=4: its four-stage ring); 1-3 select the older kernels (v4 was the
         * default from run 8 to run 39: workload 1 +12% over v3) */
        c->attn_variant = ev && atoi(ev) >= 1 && atoi(ev) <= 6 ? atoi(ev) : 5;
        ev = getenv("LB_CUDA_ATTN_DEC_NST");
        c->attn_dec_nst = ev && (atoi(ev) == 4 || atoi(ev) == 2) ? atoi(ev) : 3;
        ev = getenv("LB_CUDA_ATTN_DEC_LEAN");
        /* default 1: v5 with fewer instructions per 16-key tile (H200 run 41: 332 against 448 us at
         * 512 x 640, 4.04 TB/s = 96% of the copy rate; workload 1 +7.1% with the lean prefill; op
         * tests and goldens pass); 0: plain v5 */
        c->attn_dec_lean = !(ev && atoi(ev) == 0);
        if (prop.major < 8)
            rc = lb_err_set(err, LB_E_UNSUPPORTED, "cuda: %s has compute capability %d.%d; bf16 kernels need 8.0+",
                            prop.name, prop.major, prop.minor);
    }
    if (rc == 0) rc = lb_cublas_open(c, err);
    if (rc < 0) {
        cu_destroy(be);
        be->ops = NULL;
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ matmul (dense, cuBLASLt) */
template <typename T>
static __global__ void k_bias_add(T *y, const bf16 *bias, int n_tok, int n_out)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n_tok * n_out) return;
    stf(&y[i], ldf(&y[i]) + __bfloat162float(bias[i % n_out]));
}

int lb_cuda_matmul(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &m = op->u.matmul;
    if (m.n_tok < 0 || m.n_in <= 0 || m.n_out <= 0) LB_UNSUP("bad shape T=%d K=%d N=%d", m.n_tok, m.n_in, m.n_out);
    if (m.n_tok == 0) return 0;
    size_t T = m.n_tok, K = m.n_in, N = m.n_out;
    LB_TRY(lb_cu_check_buf(m.x, LB_BF16, T * K, "x", err));
    LB_TRY(lb_cu_check_buf(m.w, LB_BF16, N * K, "w", err));
    LB_TRY(lb_cu_check_buf(m.y, -1, T * N, "y", err));
    if (m.bias) LB_TRY(lb_cu_check_buf(m.bias, LB_BF16, N, "bias", err));
    LB_TRY(lb_cublas_gemm(c, m.x->d, m.w->d, m.y->d, m.y->dt, m.n_tok, m.n_in, m.n_out, m.accumulate, err));
    if (m.bias) {
        LB_DISPATCH_FB(m.y->dt, T_, k_bias_add<T_><<<cdiv(T * N, 256), 256, 0, c->stream>>>(
                                        (T_ *)m.y->d, (const bf16 *)m.bias->d, m.n_tok, m.n_out));
        LB_CU_LAUNCH();
    }
    return 0;
}
