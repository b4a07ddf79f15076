/* attn_paged.cu — KV-cache writes and causal GQA attention over the paged cache.
 *
 * Cache layout (per K and V): [n_layer][n_page][B][NKV][D] bf16; a cache slot is page*B + offset.
 *
 * Kernels
 *   k_kv_write            one thread per 8 elements of (t, kv head, d): cache[slot_map[t]] <- k, v.
 *                         slot_map[t] < 0 skips the token (padding).
 *   k_attn_paged<DPL>     one block (4 warps) per (query token, kv head, group of <= 8 query heads,
 *                         KV split). Flash-style online softmax in the log2 domain: each warp takes
 *                         32 keys at a time, one key per lane (the lane dots its K row against the
 *                         block's query heads held in shared memory), then the warp accumulates
 *                         p * V with one lane per DPL output dims. Warps merge (m, l, acc) in shared
 *                         memory at the end. Prefill and decode use the same kernel: a token of a
 *                         prefill chunk simply has a longer causal range (0..pos[t]) over cached pages,
 *                         so chunked prefill against earlier pages is the same code path.
 *   k_attn_merge          merges the KV splits (decode with few tokens and long contexts: the host
 *                         picks n_split so that T * NKV * n_split fills the GPU; each token's range
 *                         0..pos[t] is cut into n_split chunks of whole 32-key groups).
 * DPL (dims per lane) = D/32 rounded up to 1, 2, 4 or 8: D <= 256, D % 8 == 0.
 *
 * Not yet: a tensor-core prefill kernel (each prefill token re-reads its K/V prefix from L2 here;
 * fine for correctness and decode, slow for long prompts) — issue 5, next part.
 *
 * Test: build/tests/test_ops (kv_write, attn cases: ragged, page sizes, chunked prefill, 4k+ decode). */
#include <math.h>

#include "common.cuh"

#define ATT_NW 4
#define ATT_G 8

static __global__ void k_kv_write(const bf16 *k, const bf16 *v, const int32_t *slot_map, bf16 *kc, bf16 *vc,
                                  int n_tok, int NKV, int D, size_t layer_off, int64_t n_slots)
{
    int D8 = D / 8;
    size_t n = (size_t)n_tok * NKV * D8;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(i / ((size_t)NKV * D8));
        int64_t slot = slot_map[t];
        if (slot < 0 || slot >= n_slots) continue;
        size_t r = i % ((size_t)NKV * D8); /* (h, d8) within the token */
        size_t dst = layer_off + (size_t)slot * NKV * D8 + r;
        ((uint4 *)kc)[dst] = ((const uint4 *)k)[i];
        ((uint4 *)vc)[dst] = ((const uint4 *)v)[i];
    }
}

template <int N>
__device__ __forceinline__ void load_bf16(const bf16 *p, float *o)
{
    if constexpr (N == 8) {
        uint4 u = *(const uint4 *)p;
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __bfloat1622float2(h[i]);
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    } else if constexpr (N == 4) {
        uint2 u = *(const uint2 *)p;
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float2 f = __bfloat1622float2(h[i]);
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    } else if constexpr (N == 2) {
        float2 f = __bfloat1622float2(*(const __nv_bfloat162 *)p);
        o[0] = f.x;
        o[1] = f.y;
    } else {
        o[0] = __bfloat162float(*p);
    }
}

struct attn_args {
    const bf16 *q;        /* [T, NH, D] */
    bf16 *out;            /* [T, NH, D] (n_split == 1) */
    float *part;          /* [n_split][T][NH][D + 2]: acc, m, l (n_split > 1) */
    const bf16 *kc, *vc;  /* this layer's cache base */
    const int32_t *q_indptr, *kv_len, *page_indptr, *page_idx, *pos;
    int n_tok, n_seq, NH, NKV, D, G, n_hgrp, B, n_page, n_split;
    float scale_log2; /* softmax scale * log2(e) */
};

template <int DPL>
static __global__ void __launch_bounds__(ATT_NW * 32) k_attn_paged(attn_args a)
{
    __shared__ float q_s[ATT_G][32 * DPL];
    __shared__ float p_s[ATT_NW][ATT_G][32];
    __shared__ size_t row_s[ATT_NW][32];
    __shared__ float m_s[ATT_NW][ATT_G], l_s[ATT_NW][ATT_G];
    __shared__ float acc_s[ATT_NW][ATT_G][32 * DPL];

    const int t = blockIdx.x, kvh = blockIdx.y / a.n_hgrp, hg = blockIdx.y % a.n_hgrp, split = blockIdx.z;
    const int h0 = kvh * a.G + hg * ATT_G;
    const int gn = min(ATT_G, a.G - hg * ATT_G);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int D = a.D;

    /* sequence of token t: q_indptr[s] <= t < q_indptr[s+1] */
    int lo = 0, hi = a.n_seq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (a.q_indptr[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    const int s = lo;
    int len = min(a.pos[t] + 1, a.kv_len[s]);
    if (len < 0) len = 0;
    int chunk = (len + a.n_split - 1) / a.n_split;
    chunk = (chunk + 31) / 32 * 32;
    const int k0 = split * chunk, k1 = min(len, k0 + chunk);
    const int *pages = a.page_idx + a.page_indptr[s];
    const size_t row_stride = (size_t)a.NKV * D; /* elements between consecutive cache slots */

    for (int i = threadIdx.x; i < ATT_G * 32 * DPL; i += blockDim.x) {
        int g = i / (32 * DPL), d = i % (32 * DPL);
        q_s[g][d] = (g < gn && d < D) ? __bfloat162float(a.q[((size_t)t * a.NH + h0 + g) * D + d]) * a.scale_log2
                                      : 0.0f;
    }
    __syncthreads();

    float m[ATT_G], l[ATT_G], acc[ATT_G][DPL];
#pragma unroll
    for (int g = 0; g < ATT_G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++) acc[g][e] = 0.0f;
    }

    for (int kb = k0 + warp * 32; kb < k1; kb += ATT_NW * 32) {
        int key = kb + lane;
        bool valid = key < k1;
        size_t row = 0;
        if (valid) {
            int page = pages[key / a.B];
            if (page < 0 || page >= a.n_page) valid = false;
            else row = ((size_t)page * a.B + key % a.B) * row_stride + (size_t)kvh * D;
        }
        float sc[ATT_G];
#pragma unroll
        for (int g = 0; g < ATT_G; g++) sc[g] = 0.0f;
        if (valid) {
            const bf16 *kr = a.kc + row;
            for (int d0 = 0; d0 < D; d0 += 8) {
                float kf[8];
                load_bf16<8>(kr + d0, kf);
#pragma unroll
                for (int g = 0; g < ATT_G; g++) {
                    if (g < gn) {
                        float acc_d = 0.0f;
#pragma unroll
                        for (int e = 0; e < 8; e++) acc_d += q_s[g][d0 + e] * kf[e];
                        sc[g] += acc_d;
                    }
                }
            }
        }
#pragma unroll
        for (int g = 0; g < ATT_G; g++) {
            if (g < gn) {
                float x = valid ? sc[g] : -INFINITY;
                float m_new = fmaxf(m[g], warp_max(x));
                float p = 0.0f, corr = 1.0f;
                if (m_new != -INFINITY) {
                    p = valid ? exp2f(x - m_new) : 0.0f;
                    corr = exp2f(m[g] - m_new); /* m[g] == -inf gives 0, acc and l are 0 then */
                }
                l[g] = l[g] * corr + warp_sum(p);
                m[g] = m_new;
#pragma unroll
                for (int e = 0; e < DPL; e++) acc[g][e] *= corr;
                p_s[warp][g][lane] = p;
            }
        }
        row_s[warp][lane] = valid ? row : (size_t)-1;
        __syncwarp();
        int nk = min(32, k1 - kb);
        for (int j = 0; j < nk; j++) {
            size_t r = row_s[warp][j];
            if (r == (size_t)-1) continue;
            if (lane * DPL < D) {
                float vf[DPL];
                load_bf16<DPL>(a.vc + r + lane * DPL, vf);
#pragma unroll
                for (int g = 0; g < ATT_G; g++) {
                    if (g < gn) {
                        float p = p_s[warp][g][j];
#pragma unroll
                        for (int e = 0; e < DPL; e++) acc[g][e] += p * vf[e];
                    }
                }
            }
        }
        __syncwarp();
    }

    /* merge the warps */
#pragma unroll
    for (int g = 0; g < ATT_G; g++) {
        if (lane == 0) {
            m_s[warp][g] = m[g];
            l_s[warp][g] = l[g];
        }
#pragma unroll
        for (int e = 0; e < DPL; e++) acc_s[warp][g][lane * DPL + e] = acc[g][e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < gn * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        float M = -INFINITY;
        for (int w = 0; w < ATT_NW; w++) M = fmaxf(M, m_s[w][g]);
        float L = 0.0f, A = 0.0f;
        if (M != -INFINITY) {
            for (int w = 0; w < ATT_NW; w++) {
                float f = exp2f(m_s[w][g] - M);
                L += l_s[w][g] * f;
                A += acc_s[w][g][d] * f;
            }
        }
        size_t oi = ((size_t)t * a.NH + h0 + g);
        if (a.n_split == 1) {
            a.out[oi * D + d] = __float2bfloat16_rn(L > 0.0f ? A / L : 0.0f);
        } else {
            float *pp = a.part + ((size_t)split * a.n_tok * a.NH + oi) * (D + 2);
            pp[d] = A;
            if (d == 0) {
                pp[D] = M;
                pp[D + 1] = L;
            }
        }
    }
}

/* One block per (token, head), one thread per dim: out = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). */
static __global__ void k_attn_merge(const float *part, bf16 *out, int n_tok, int NH, int D, int n_split)
{
    size_t oi = (size_t)blockIdx.x * NH + blockIdx.y;
    size_t sstride = (size_t)n_tok * NH * (D + 2);
    const float *p0 = part + oi * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_split; s++) M = fmaxf(M, p0[s * sstride + D]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float L = 0.0f, A = 0.0f;
        if (M != -INFINITY) {
            for (int s = 0; s < n_split; s++) {
                const float *p = p0 + s * sstride;
                float f = exp2f(p[D] - M);
                L += p[D + 1] * f;
                A += p[d] * f;
            }
        }
        out[oi * D + d] = __float2bfloat16_rn(L > 0.0f ? A / L : 0.0f);
    }
}

int lb_cuda_kv_write(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &w = op->u.kv_write;
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "kv_write before setup");
    int NKV = c->n_kv_head_local, D = c->s.head_dim;
    if (D % 8) LB_UNSUP("head_dim %d not a multiple of 8", D);
    if (w.layer < 0 || w.layer >= c->s.n_layer) return lb_err_set(err, LB_E_INTERNAL, "layer %d out of range", w.layer);
    if (w.n_tok < 0) LB_UNSUP("bad n_tok %d", w.n_tok);
    if (!w.n_tok) return 0;
    size_t T = w.n_tok;
    LB_TRY(lb_cu_check_buf(w.k, LB_BF16, T * NKV * D, "k", err));
    LB_TRY(lb_cu_check_buf(w.v, LB_BF16, T * NKV * D, "v", err));
    LB_TRY(lb_cu_check_buf(w.slot_map, LB_I32, T, "slot_map", err));
    int64_t n_slots = (int64_t)c->s.n_page * c->s.page_size;
    size_t layer_off = (size_t)w.layer * n_slots * NKV * (D / 8); /* in uint4 units */
    size_t n = T * NKV * (D / 8);
    size_t g = (n + 255) / 256, cap = (size_t)c->n_sm * 16;
    k_kv_write<<<(unsigned)(g < cap ? g : cap), 256, 0, c->stream>>>((const bf16 *)w.k->d, (const bf16 *)w.v->d,
                                                                      (const int32_t *)w.slot_map->d, c->d_kcache,
                                                                      c->d_vcache, w.n_tok, NKV, D, layer_off, n_slots);
    LB_CU_LAUNCH();
    return 0;
}

int lb_cuda_attn(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &at = op->u.attn;
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "attn before setup");
    int NH = c->n_head_local, NKV = c->n_kv_head_local, D = c->s.head_dim;
    if (D % 8 || D > 256) LB_UNSUP("head_dim %d (need a multiple of 8, <= 256)", D);
    if (at.layer < 0 || at.layer >= c->s.n_layer) return lb_err_set(err, LB_E_INTERNAL, "layer %d out of range", at.layer);
    if (at.n_tok < 0 || at.n_seq < 0) LB_UNSUP("bad shape T=%d seqs=%d", at.n_tok, at.n_seq);
    if (!at.n_tok) return 0;
    if (!at.n_seq) return lb_err_set(err, LB_E_INTERNAL, "attn: %d tokens but no sequences", at.n_tok);
    size_t T = at.n_tok, S = at.n_seq;
    LB_TRY(lb_cu_check_buf(at.q, LB_BF16, T * NH * D, "q", err));
    LB_TRY(lb_cu_check_buf(at.out, LB_BF16, T * NH * D, "out", err));
    LB_TRY(lb_cu_check_buf(at.q_indptr, LB_I32, S + 1, "q_indptr", err));
    LB_TRY(lb_cu_check_buf(at.kv_len, LB_I32, S, "kv_len", err));
    LB_TRY(lb_cu_check_buf(at.page_indptr, LB_I32, S + 1, "page_indptr", err));
    LB_TRY(lb_cu_check_buf(at.page_idx, LB_I32, 0, "page_idx", err));
    LB_TRY(lb_cu_check_buf(at.pos, LB_I32, T, "pos", err));

    attn_args a;
    a.q = (const bf16 *)at.q->d;
    a.out = (bf16 *)at.out->d;
    a.part = NULL;
    size_t layer_off = (size_t)at.layer * c->s.n_page * c->s.page_size * NKV * D;
    a.kc = c->d_kcache + layer_off;
    a.vc = c->d_vcache + layer_off;
    a.q_indptr = (const int32_t *)at.q_indptr->d;
    a.kv_len = (const int32_t *)at.kv_len->d;
    a.page_indptr = (const int32_t *)at.page_indptr->d;
    a.page_idx = (const int32_t *)at.page_idx->d;
    a.pos = (const int32_t *)at.pos->d;
    a.n_tok = at.n_tok;
    a.n_seq = at.n_seq;
    a.NH = NH;
    a.NKV = NKV;
    a.D = D;
    a.G = NH / NKV;
    a.n_hgrp = (a.G + ATT_G - 1) / ATT_G;
    a.B = c->s.page_size;
    a.n_page = c->s.n_page;
    a.scale_log2 = at.scale * 1.4426950408889634f;

    /* Enough blocks to fill the GPU twice over; cap the split count at 64. */
    size_t base = T * NKV * a.n_hgrp, want = (size_t)c->n_sm * 2;
    int n_split = base >= want ? 1 : (int)((want + base - 1) / base);
    if (n_split > 64) n_split = 64;
    a.n_split = n_split;
    if (n_split > 1) {
        void *ws;
        LB_TRY(lb_cu_ws(c, (size_t)n_split * T * NH * (D + 2) * sizeof(float), &ws, err));
        a.part = (float *)ws;
    }
    dim3 grid((unsigned)T, (unsigned)(NKV * a.n_hgrp), (unsigned)n_split);
    int dpl = D <= 32 ? 1 : D <= 64 ? 2 : D <= 128 ? 4 : 8;
    switch (dpl) {
    case 1: k_attn_paged<1><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    case 2: k_attn_paged<2><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    case 4: k_attn_paged<4><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    default: k_attn_paged<8><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    }
    LB_CU_LAUNCH();
    if (n_split > 1) {
        k_attn_merge<<<dim3((unsigned)T, (unsigned)NH), D < 128 ? D : 128, 0, c->stream>>>(a.part, a.out, at.n_tok, NH,
                                                                                           D, n_split);
        LB_CU_LAUNCH();
    }
    return 0;
}
