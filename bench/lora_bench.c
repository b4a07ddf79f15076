/* lora_bench.c — kernel benchmark of the CUDA backend's LoRA and attention ops at Llama-3-8B
 * shapes, through the backend interface (the same ops the engine runs).
 *
 * For each projection group of one layer (q+k+v, o, gate+up, down) and each token layout:
 *   base  = the dense projection(s) of the group (LB_OP_MATMUL, cuBLASLt), time and TFLOP/s;
 *   lora  = one LB_OP_LORA over the group's targets, time, GB/s over the fewest bytes it must move
 *           (x once, each distinct adapter's A and B once, y read and written), and lora/base.
 *   set+proj (LB_BENCH_LORA_SET=1) = the LoRA op in set mode followed by the group's projections
 *           adding into y, as forward.c runs large steps.
 *   gate_up (add mode) also: lora+swiglu = the op then LB_OP_SWIGLU; act = one op with act set
 *           (the CUDA backend's k_lora_expand_act, LB_LORA_ACT in forward.c).
 * Layouts: decode T=256 (16 adapters x 16 tokens; 256 one-token segments over 16 adapters),
 * prefill T=8192 (16 adapters x 512 tokens); ranks 16 and 64. Plus attention: decode (256
 * sequences of 640 and of 2048 cached tokens, 8 of 8192) and prefill (16 sequences of 512
 * tokens), time and GB/s or TFLOP/s.
 * Timing: host clock around batches of back-to-back launches (sync before and after), 5 batches,
 * median and min per launch; warm L2 (weights of a projection mostly fit in the 50 MB L2 of an
 * H100 only for o/qkv; noted in the results).
 *
 * Build: bench/build.sh (links against build/obj). Run on the device: ./lora_bench [--json FILE] [--attn-only | --elem-only | --lora-only]
 * (LB_CUDA_ELEM=1: the scalar element-wise kernels; the default is the vectorised v2) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"

static struct lb_backend be;
static struct lb_err err;
static FILE *json;
/* the kernel variant an LB_CUDA_* switch selects; unset: the backend's default (lora 3, attn 5, elem 2) */
static const char *variant(const char *env)
{
    const char *v = getenv(env);
    if (v && *v) return v;
    return !strcmp(env, "LB_CUDA_ATTN") ? "5" : !strcmp(env, "LB_CUDA_ELEM") ? "2" : "3";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    float v = (float)((rs >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
    return v == 0.0f ? 0.5f : v;
}

static void die(const char *what)
{
    fprintf(stderr, "lora_bench: %s: %s\n", what, err.msg);
    exit(1);
}

static struct lb_buf *act(size_t n, float a)
{
    struct lb_buf *b = be.ops->alloc(&be, be.ops->act_dtype, n, &err);
    if (!b) die("alloc");
    float *h = malloc(n * 4);
    for (size_t i = 0; i < n; i++) h[i] = rnd() * a;
    if (be.ops->upload(&be, b, 0, h, LB_F32, n, &err) < 0) die("upload");
    free(h);
    return b;
}

static struct lb_buf *ints(size_t n, const int32_t *v)
{
    struct lb_buf *b = be.ops->alloc(&be, LB_I32, n ? n : 1, &err);
    if (!b) die("alloc");
    if (n && be.ops->upload(&be, b, 0, v, LB_I32, n, &err) < 0) die("upload");
    return b;
}

static struct lb_buf *weight(size_t n)
{
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        float f = rnd() * 0.05f;
        uint32_t u;
        memcpy(&u, &f, 4);
        h[i] = (uint16_t)(u >> 16);
    }
    struct lb_buf *b = be.ops->weight(&be, LB_BF16, h, n, &err);
    if (!b) die("weight");
    free(h);
    return b;
}

/* Times `n_op` ops run back to back; returns median and min seconds per launch of the group. */
static void time_ops(const struct lb_op *ops, int n_op, int reps, double *med, double *mn)
{
    double t[5];
    for (int w = 0; w < 3; w++)
        for (int i = 0; i < n_op; i++)
            if (be.ops->run(&be, &ops[i], &err) < 0) die("run");
    if (be.ops->sync(&be, &err) < 0) die("sync");
    for (int b = 0; b < 5; b++) {
        double t0 = now_s();
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < n_op; i++)
                if (be.ops->run(&be, &ops[i], &err) < 0) die("run");
        if (be.ops->sync(&be, &err) < 0) die("sync");
        t[b] = (now_s() - t0) / reps;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    *med = t[2];
    *mn = t[0];
}

enum { H = 4096, NH = 32, NKV = 8, D = 128, F = 14336, N_ADAPTER = 16 };

static void load_adapters(int rank)
{
    int in[LB_T_COUNT] = {H, H, H, NH * D, H, H, F}, out[LB_T_COUNT] = {NH * D, NKV * D, NKV * D, H, F, F, H};
    for (int s = 0; s < N_ADAPTER; s++)
        for (int t = 0; t < LB_T_COUNT; t++) {
            size_t na = (size_t)rank * in[t], nb = (size_t)out[t] * rank;
            float *a = malloc(na * 4), *b = malloc(nb * 4);
            for (size_t i = 0; i < na; i++) a[i] = rnd() * 0.02f;
            for (size_t i = 0; i < nb; i++) b[i] = rnd() * 0.02f;
            struct lb_lora_module m = {rank, 2.0f, LB_F32, a, b, in[t], out[t]};
            if (be.ops->lora_load(&be, s, 0, (enum lb_target)t, &m, &err) < 0) die("lora_load");
            free(a);
            free(b);
        }
}

struct group {
    const char *name;
    int n_tgt, K;
    enum lb_target tgt[3];
    int N[3];
};
static const struct group groups[] = {
    {"qkv", 3, H, {LB_T_Q, LB_T_K, LB_T_V}, {NH * D, NKV * D, NKV * D}},
    {"o", 1, NH * D, {LB_T_O}, {H}},
    {"gate_up", 2, H, {LB_T_GATE, LB_T_UP}, {F, F}},
    {"down", 1, F, {LB_T_DOWN}, {H}},
};

static void bench_lora(const char *layout, int T, int n_seg, const int32_t *ss, const int32_t *sl, int rank)
{
    struct lb_buf *bss = ints(n_seg + 1, ss), *bsl = ints(n_seg, sl);
    int distinct = 0, seen[N_ADAPTER] = {0};
    for (int i = 0; i < n_seg; i++)
        if (sl[i] >= 0 && !seen[sl[i]]) seen[sl[i]] = 1, distinct++;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        const struct group *gr = &groups[g];
        struct lb_buf *x = act((size_t)T * gr->K, 1.0f), *y[3] = {0}, *w[3] = {0};
        struct lb_op mm[3], lo;
        memset(&lo, 0, sizeof lo);
        double flops = 0, bytes_base = 0, bytes_lora = (double)T * gr->K * 2;
        for (int j = 0; j < gr->n_tgt; j++) {
            y[j] = act((size_t)T * gr->N[j], 1.0f);
            w[j] = weight((size_t)gr->N[j] * gr->K);
            memset(&mm[j], 0, sizeof mm[j]);
            mm[j].kind = LB_OP_MATMUL;
            mm[j].u.matmul.x = x;
            mm[j].u.matmul.w = w[j];
            mm[j].u.matmul.y = y[j];
            mm[j].u.matmul.n_tok = T;
            mm[j].u.matmul.n_in = gr->K;
            mm[j].u.matmul.n_out = gr->N[j];
            flops += 2.0 * T * gr->N[j] * gr->K;
            bytes_base += 2.0 * ((double)gr->N[j] * gr->K + (double)T * gr->K + (double)T * gr->N[j]);
            bytes_lora += distinct * 2.0 * rank * ((double)gr->K + gr->N[j]) + 2.0 * 2.0 * T * gr->N[j];
            lo.u.lora.tgt[j] = gr->tgt[j];
            lo.u.lora.y[j] = y[j];
            lo.u.lora.n_out[j] = gr->N[j];
        }
        lo.kind = LB_OP_LORA;
        lo.u.lora.layer = 0;
        lo.u.lora.n_tgt = gr->n_tgt;
        lo.u.lora.x = x;
        lo.u.lora.n_tok = T;
        lo.u.lora.n_in = gr->K;
        lo.u.lora.seg_start = bss;
        lo.u.lora.seg_slot = bsl;
        lo.u.lora.n_seg = n_seg;
        lo.u.lora.h_seg_start = ss; /* as forward.c passes them (the dense path plans from them) */
        lo.u.lora.h_seg_slot = sl;
        /* LB_BENCH_LORA_SET=1: the op in set mode (y = the LoRA term, as on large prefill steps
         * where LoRA runs before its projection); the dense path takes only such ops */
        lo.u.lora.set = getenv("LB_BENCH_LORA_SET") && atoi(getenv("LB_BENCH_LORA_SET")) > 0;
        int reps = T >= 4096 ? 10 : 50;
        double bm, bmin, lm, lmin, sm = 0, smin = 0;
        time_ops(mm, gr->n_tgt, reps, &bm, &bmin);
        time_ops(&lo, 1, reps, &lm, &lmin);
        if (lo.u.lora.set) { /* forward.c's set-first order: the LoRA op, then the projections adding into y */
            struct lb_op seq[4];
            seq[0] = lo;
            for (int j = 0; j < gr->n_tgt; j++) {
                seq[1 + j] = mm[j];
                seq[1 + j].u.matmul.accumulate = 1;
            }
            time_ops(seq, 1 + gr->n_tgt, reps, &sm, &smin);
        }
        double cm = 0, cmin = 0, am = 0, amin = 0;
        if (gr->n_tgt == 2 && !lo.u.lora.set) { /* gate/up: the op then the SwiGLU, against one act op */
            struct lb_op seq[2];
            seq[0] = lo;
            memset(&seq[1], 0, sizeof seq[1]);
            seq[1].kind = LB_OP_SWIGLU;
            seq[1].u.swiglu.gate = y[0];
            seq[1].u.swiglu.up = y[1];
            seq[1].u.swiglu.out = y[0];
            seq[1].u.swiglu.n_tok = T;
            seq[1].u.swiglu.n_ff = gr->N[0];
            time_ops(seq, 2, reps, &cm, &cmin);
            seq[0].u.lora.act = 1;
            time_ops(seq, 1, reps, &am, &amin);
        }
        printf("%-8s %-22s T=%-5d r=%-3d  base %8.1f us %6.1f TF/s | lora %8.1f us (min %7.1f) %7.1f GB/s  lora/base %5.1f%%",
               gr->name, layout, T, rank, bm * 1e6, flops / bm * 1e-12, lm * 1e6, lmin * 1e6,
               lm > 0 ? bytes_lora / lm * 1e-9 : 0.0, 100.0 * lm / bm);
        if (lo.u.lora.set) printf(" | set+proj %8.1f us (+%5.1f%% over base)", sm * 1e6, 100.0 * (sm - bm) / bm);
        if (am > 0) printf(" | lora+swiglu %8.1f us, act %8.1f us", cm * 1e6, am * 1e6);
        printf("\n");
        if (json)
            fprintf(json,
                    "{\"bench\":\"lora\",\"variant\":\"v%s\",\"group\":\"%s\",\"layout\":\"%s\",\"T\":%d,\"rank\":%d,\"n_seg\":%d,"
                    "\"base_us\":%.2f,\"base_min_us\":%.2f,\"base_tflops\":%.1f,\"base_gbs\":%.1f,\"lora_us\":%.2f,"
                    "\"lora_min_us\":%.2f,\"lora_gbs\":%.1f,\"lora_over_base\":%.4f,\"setproj_us\":%.2f,"
                    "\"lora_swiglu_us\":%.2f,\"act_us\":%.2f}\n",
                    variant("LB_CUDA_LORA"), gr->name, layout, T, rank, n_seg, bm * 1e6, bmin * 1e6, flops / bm * 1e-12, bytes_base / bm * 1e-9,
                    lm * 1e6, lmin * 1e6, lm > 0 ? bytes_lora / lm * 1e-9 : 0.0, lm / bm, sm * 1e6, cm * 1e6, am * 1e6);
        for (int j = 0; j < gr->n_tgt; j++) {
            be.ops->buf_free(&be, y[j]);
            be.ops->buf_free(&be, w[j]);
        }
        be.ops->buf_free(&be, x);
    }
    be.ops->buf_free(&be, bss);
    be.ops->buf_free(&be, bsl);
}

static void bench_attn(const char *name, int n_seq, int ctx, int q_per_seq, int B)
{
    int T = n_seq * q_per_seq, pages_per = (ctx + B - 1) / B;
    int32_t *qi = malloc((n_seq + 1) * 4), *kl = malloc(n_seq * 4), *pi = malloc((n_seq + 1) * 4);
    int32_t *px = malloc((size_t)n_seq * pages_per * 4), *pos = malloc(T * 4);
    int32_t *slot = malloc((size_t)n_seq * ctx * 4);
    for (int s = 0; s <= n_seq; s++) {
        qi[s] = s * q_per_seq;
        pi[s] = s * pages_per;
    }
    for (int s = 0; s < n_seq; s++) {
        kl[s] = ctx;
        for (int p = 0; p < pages_per; p++) px[s * pages_per + p] = (p * n_seq + s); /* interleaved pages */
        for (int r = 0; r < q_per_seq; r++) pos[s * q_per_seq + r] = ctx - q_per_seq + r;
        for (int p = 0; p < ctx; p++) slot[(size_t)s * ctx + p] = px[s * pages_per + p / B] * B + p % B;
    }
    /* fill the cache */
    size_t n_kv = (size_t)n_seq * ctx;
    struct lb_buf *k = act(n_kv * NKV * D, 1.0f), *v = act(n_kv * NKV * D, 1.0f), *bslot = ints(n_kv, slot);
    struct lb_op kw;
    memset(&kw, 0, sizeof kw);
    kw.kind = LB_OP_KV_WRITE;
    kw.u.kv_write.layer = 0;
    kw.u.kv_write.k = k;
    kw.u.kv_write.v = v;
    kw.u.kv_write.slot_map = bslot;
    kw.u.kv_write.n_tok = (int)n_kv;
    double wm, wmin;
    time_ops(&kw, 1, 5, &wm, &wmin);
    struct lb_buf *q = act((size_t)T * NH * D, 1.0f), *o = act((size_t)T * NH * D, 1.0f);
    struct lb_buf *bqi = ints(n_seq + 1, qi), *bkl = ints(n_seq, kl), *bpi = ints(n_seq + 1, pi);
    struct lb_buf *bpx = ints((size_t)n_seq * pages_per, px), *bpos = ints(T, pos);
    struct lb_op at;
    memset(&at, 0, sizeof at);
    at.kind = LB_OP_ATTN;
    at.u.attn.layer = 0;
    at.u.attn.q = q;
    at.u.attn.out = o;
    at.u.attn.n_tok = T;
    at.u.attn.n_seq = n_seq;
    at.u.attn.q_indptr = bqi;
    at.u.attn.kv_len = bkl;
    at.u.attn.page_indptr = bpi;
    at.u.attn.page_idx = bpx;
    at.u.attn.pos = bpos;
    at.u.attn.scale = 1.0f / sqrtf((float)D);
    at.u.attn.max_q = q_per_seq; /* the hint forward.c passes (1: no prefill kernel on decode) */
    double m, mn;
    time_ops(&at, 1, q_per_seq > 1 ? 5 : 20, &m, &mn);
    double pairs = 0;
    for (int r = 0; r < q_per_seq; r++) pairs += ctx - q_per_seq + r + 1;
    pairs *= n_seq;
    double flops = 4.0 * NH * D * pairs, bytes = (double)n_kv * NKV * D * 2 * 2;
    printf("attn     %-22s seqs=%-4d ctx=%-5d q/seq=%-4d %8.1f us  %7.1f GB/s (KV once)  %6.1f TF/s   kv_write %7.1f us\n",
           name, n_seq, ctx, q_per_seq, m * 1e6, bytes / m * 1e-9, flops / m * 1e-12, wm * 1e6);
    if (json)
        fprintf(json,
                "{\"bench\":\"attn\",\"variant\":\"v%s\",\"name\":\"%s\",\"n_seq\":%d,\"ctx\":%d,\"q_per_seq\":%d,\"us\":%.2f,\"min_us\":%.2f,"
                "\"kv_gbs\":%.1f,\"tflops\":%.2f,\"kv_write_us\":%.2f}\n",
                variant("LB_CUDA_ATTN"), name, n_seq, ctx, q_per_seq, m * 1e6, mn * 1e6, bytes / m * 1e-9, flops / m * 1e-12, wm * 1e6);
    struct lb_buf *bufs[] = {k, v, bslot, q, o, bqi, bkl, bpi, bpx, bpos};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be.ops->buf_free(&be, bufs[i]);
    free(qi);
    free(kl);
    free(pi);
    free(px);
    free(pos);
    free(slot);
}

/* The small per-layer ops of a decode step (T = 256 tokens of Llama-3-8B): GB/s counts every
 * byte read and written once. */
static void bench_elem(void)
{
    const int T = 256;
    int32_t pos[256];
    for (int t = 0; t < T; t++) pos[t] = 600 + t;
    struct lb_buf *x = act((size_t)T * H, 1.0f), *res = act((size_t)T * H, 1.0f), *out = act((size_t)T * H, 1.0f);
    struct lb_buf *w = weight(H), *g = act((size_t)T * F, 2.0f), *u = act((size_t)T * F, 2.0f);
    struct lb_buf *q = act((size_t)T * NH * D, 1.0f), *k = act((size_t)T * NKV * D, 1.0f), *bpos = ints(T, pos);
    struct lb_op op[3];
    memset(op, 0, sizeof op);
    op[0].kind = LB_OP_RMSNORM;
    op[0].u.rmsnorm.x = x;
    op[0].u.rmsnorm.res = res;
    op[0].u.rmsnorm.w = w;
    op[0].u.rmsnorm.out = out;
    op[0].u.rmsnorm.n_rows = T;
    op[0].u.rmsnorm.n = H;
    op[0].u.rmsnorm.eps = 1e-5f;
    op[1].kind = LB_OP_SWIGLU;
    op[1].u.swiglu.gate = g;
    op[1].u.swiglu.up = u;
    op[1].u.swiglu.out = g;
    op[1].u.swiglu.n_tok = T;
    op[1].u.swiglu.n_ff = F;
    op[2].kind = LB_OP_ROPE;
    op[2].u.rope.q = q;
    op[2].u.rope.k = k;
    op[2].u.rope.pos = bpos;
    op[2].u.rope.n_tok = T;
    op[2].u.rope.n_head = NH;
    op[2].u.rope.n_kv_head = NKV;
    op[2].u.rope.head_dim = D;
    const char *names[3] = {"rmsnorm+res T=256 n=4096", "swiglu T=256 F=14336", "rope T=256 32+8 heads x 128"};
    double bytes[3] = {(double)T * H * 2 * 4, (double)T * F * 2 * 3, (double)T * (NH + NKV) * D * 2 * 2};
    for (int i = 0; i < 3; i++) {
        double m, mn;
        time_ops(&op[i], 1, 50, &m, &mn);
        printf("elem     %-30s %8.1f us  %7.1f GB/s\n", names[i], m * 1e6, bytes[i] / m * 1e-9);
        if (json)
            fprintf(json, "{\"bench\":\"elem\",\"variant\":\"v%s\",\"name\":\"%s\",\"us\":%.2f,\"min_us\":%.2f,\"gbs\":%.1f}\n",
                    variant("LB_CUDA_ELEM"), names[i], m * 1e6, mn * 1e6, bytes[i] / m * 1e-9);
    }
    struct lb_buf *bufs[] = {x, res, out, w, g, u, q, k, bpos};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be.ops->buf_free(&be, bufs[i]);
}

int main(int argc, char **argv)
{
    int attn_only = 0, elem_only = 0, lora_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json = fopen(argv[++i], "w");
        else if (!strcmp(argv[i], "--attn-only")) attn_only = 1;
        else if (!strcmp(argv[i], "--elem-only")) elem_only = 1;
        else if (!strcmp(argv[i], "--lora-only")) lora_only = 1;
    }
    if (lb_backend_cuda_open(&be, 0, &err) < 0) die("cuda");
    printf("kernel variants: lora v%s, attn v%s\n", variant("LB_CUDA_LORA"), variant("LB_CUDA_ATTN"));
    struct lb_backend_setup s;
    memset(&s, 0, sizeof s);
    s.n_layer = 1;
    s.n_head = NH;
    s.n_kv_head = NKV;
    s.head_dim = D;
    s.n_hidden = H;
    s.n_ff = F;
    s.n_vocab = 128256;
    s.rms_eps = 1e-5f;
    s.rope_theta = 500000.0f;
    s.n_page = 256 * 130; /* 256 seqs x 2048 tokens at B=16 = 32768 pages */
    s.page_size = 16;
    s.n_slot = N_ADAPTER;
    s.max_rank = 64;
    s.tp_size = 1;
    if (be.ops->setup(&be, &s, &err) < 0) die("setup");

    if (elem_only) {
        bench_elem();
        lb_backend_close(&be);
        return 0;
    }
    static int32_t ss[8193 + 256], sl[8192 + 256];
    int ranks[2] = {16, 64};
    for (int ri = 0; ri < 2 && !attn_only; ri++) {
        load_adapters(ranks[ri]);
        /* decode: 16 adapters x 16 tokens */
        for (int i = 0; i <= 16; i++) ss[i] = i * 16;
        for (int i = 0; i < 16; i++) sl[i] = i;
        bench_lora("decode-16x16", 256, 16, ss, sl, ranks[ri]);
        /* decode at max_seqs 512: 16 adapters x 32 tokens */
        for (int i = 0; i <= 16; i++) ss[i] = i * 32;
        bench_lora("decode-16x32", 512, 16, ss, sl, ranks[ri]);
        /* decode: 256 one-token segments */
        for (int i = 0; i <= 256; i++) ss[i] = i;
        for (int i = 0; i < 256; i++) sl[i] = i % 16;
        bench_lora("decode-distinct", 256, 256, ss, sl, ranks[ri]);
        /* prefill: 16 adapters x 512 tokens */
        for (int i = 0; i <= 16; i++) ss[i] = i * 512;
        for (int i = 0; i < 16; i++) sl[i] = i;
        bench_lora("prefill-16x512", 8192, 16, ss, sl, ranks[ri]);
    }
    /* base rows only: the cost of a LoRA op with nothing to do */
    ss[0] = 0;
    ss[1] = 256;
    sl[0] = -1;
    if (!attn_only) bench_lora("decode-base-only", 256, 1, ss, sl, 0);

    if (lora_only) {
        lb_backend_close(&be);
        return 0;
    }
    if (!attn_only) bench_elem();
    bench_attn("decode", 256, 640, 1, 16);
    bench_attn("decode-512", 512, 640, 1, 16); /* workload 1's decode steps */
    bench_attn("decode-2k", 256, 2048, 1, 16);
    bench_attn("decode-long", 8, 8192, 1, 16);
    bench_attn("prefill", 16, 512, 512, 16);
    if (json) fclose(json);
    lb_backend_close(&be);
    return 0;
}
