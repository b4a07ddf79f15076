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
 *   k_attn_tiles +        (v2, default) sequences with >= 2 query rows (prefill and chunked
 *   k_attn_prefill_tc     prefill) run on tensor cores, 16 query rows x 4 heads per block, keys in
 *                         tiles of 64 gathered through the page table (see the kernel's comment);
 *                         k_attn_paged then skips those sequences. D % 16 == 0 and D <= 128;
 *                         otherwise, or with LB_CUDA_ATTN=1, every token takes k_attn_paged.
 *   k_attn_decode         (v3, LB_CUDA_ATTN=3) single-row (decode) sequences when the tensor-core
 *                         path applies: a grid over sequences, K/V tiles of 64 keys by cp.async,
 *                         two stages (see the kernel's comment); LB_CUDA_ATTN=2 keeps k_attn_paged.
 *   k_attn_prefill_fa     (v3, default for D = 64, 128) the prefill tiles with S/P/O in registers
 *                         (mma.sync, FA2 style), by default its lean variant (page ids staged per
 *                         block, no mask below every row's limit; LB_CUDA_ATTN_PREFILL=3 the plain
 *                         one); LB_CUDA_ATTN_PREFILL=2 keeps k_attn_prefill_tc.
 *   k_attn_decode_tc      (v4, default since run 8: workload 1 +12% over v3 on the H100; D = 64,
 *                         128 and G <= 16)
 *                         single-row sequences on tensor cores: the kv head's query heads are the
 *                         rows of one mma tile, K/V tiles three cp.async stages deep (see the
 *                         kernel's comment); otherwise k_attn_decode runs.
 *   k_attn_decode_w       (v5, default where no KV split is needed) one warp per (sequence, kv
 *                         head, split), by default lean (LB_CUDA_ATTN_DEC_LEAN; see there). H200
 *                         run 41, 512 x 640: 332 us, 4.04 TB/s (96% of the copy rate).
 * v3 on H100 (tests/ops/NOTES.md, run 4): decode 256 x 640 401 us (1.67 TB/s), 256 x 2048
 * 1213 us (1.77 TB/s); prefill 16 x 512 478 us (72 TFLOP/s).
 * DPL (dims per lane) = D/32 rounded up to 1, 2, 4 or 8: D <= 256, D % 8 == 0.
 * v1 on H100 (bench/results/lora_bench_v1_h100.txt): decode 256 x 640 ctx 542 us (1.24 TB/s of
 * KV), prefill 16 x 512 4.4 ms (7.8 TFLOP/s: each row re-read its K/V prefix on CUDA cores).
 *
 * Test: build/tests/test_ops (kv_write, attn cases: ragged, page sizes, chunked prefill, 4k+ decode). */
#include <limits.h>
#include <math.h>

#include <mma.h>

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
    int skip_multi;   /* 1: tokens of sequences with >= 2 query rows are left to the tensor-core kernel */
    int dec_order;    /* k_attn_decode grid order, see there (LB_CUDA_ATTN_DEC_ORDER=1; default 0) */
    int B_shift;      /* log2(B) when B is a power of two, else -1 (the lean prefill's page arithmetic) */
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
    if (a.skip_multi && a.q_indptr[s + 1] - a.q_indptr[s] >= 2) return;
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
static __global__ void k_attn_merge(attn_args a)
{
    const float *part = a.part;
    bf16 *out = a.out;
    const int n_tok = a.n_tok, NH = a.NH, D = a.D, n_split = a.n_split;
    if (a.skip_multi) { /* rows of multi-row sequences belong to the tensor-core kernel */
        int t = blockIdx.x, lo = 0, hi = a.n_seq - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (a.q_indptr[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        if (a.q_indptr[lo + 1] - a.q_indptr[lo] >= 2) return;
    }
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


/* ------------------------------------------------------------------ v3: decode (one query row)
 * k_attn_decode<DPL, GH>  one block (4 warps) per (sequence with exactly one query row, kv head,
 *   group of <= GH query heads, KV split). The block streams its key range in tiles of 64 keys:
 *   K and V rows are copied page by page into shared memory with 16-byte cp.async, two stages
 *   deep (the next tile is in flight while the current one is used), so every block keeps ~34 KB
 *   of loads outstanding (v1 had one 16-byte load per lane outstanding at a time). Warp w takes
 *   keys 16w..16w+15 of each tile: lane l dots key (l & 15) against the block's query heads over
 *   half of D (l >> 4), one shuffle completes the score; the warp's online softmax (log2 domain)
 *   writes p to shared memory, then every lane accumulates p * V for DPL dims of its heads.
 *   Warps merge (m, l, acc) in shared memory at the end; KV splits are merged by k_attn_merge.
 *   Needs D % 16 == 0, D <= 128 (the tensor-core prefill's condition; other shapes take v1).
 *   Keys whose page is out of range are masked (as in k_attn_paged). */
#define ADC_KT 64 /* keys per tile */
#define ADC_NW 4

struct adc_smem_layout {
    int kld, vld;  /* bf16 row strides: K padded by 16 bytes (conflict-free lane-per-key reads) */
    size_t stage, v_rel, ok_off, q_off, p_off, m_off, l_off, a_off, bytes; /* stage s: K at s*stage, V at +v_rel */
};

__host__ __device__ static adc_smem_layout adc_layout(int D, int GH)
{
    adc_smem_layout L;
    L.kld = D + 8;
    L.vld = D;
    L.v_rel = (size_t)ADC_KT * L.kld * 2;
    L.stage = L.v_rel + (size_t)ADC_KT * L.vld * 2;
    size_t off = 2 * L.stage;
    size_t stage_end = off;
    /* merge area (after the key loop) reuses the stages when it fits */
    size_t merge = (size_t)ADC_NW * GH * D * 4;
    L.a_off = 0;
    if (merge > stage_end) off = merge;
    L.ok_off = off; off += 2 * ADC_KT * 4;                 /* int row_ok[2][KT] */
    L.q_off = off; off += (size_t)GH * D * 4;              /* float q[GH][D] (scaled) */
    L.p_off = off; off += (size_t)ADC_NW * 16 * GH * 4;     /* float p[NW][16][GH] */
    L.m_off = off; off += (size_t)ADC_NW * GH * 4;
    L.l_off = off; off += (size_t)ADC_NW * GH * 4;
    L.bytes = off;
    return L;
}

/* cp_async16, cp_async_commit, cp_async_wait: common.cuh */

/* One 16-byte piece of the decode and prefill kernels' K/V tile copies: chunk i of a tile of keys
 * from kt (row r = i / (D / 8) of the tile, 8 elements c of it) of kv head kvh, through the table
 * of pages of B tokens (page ids from pg_s, staged from page p0, when pg_sh, else from pages), into
 * the K and V stages (row stride LD) by cp.async, zero-filled for keys at or past kend and for
 * invalid pages; row_ok[r] says which (written by the thread with c = 0). The callers' loops hand
 * out i. */
template <int D, int LD>
__device__ __forceinline__ void attn_copy_chunk(const bf16 *kc, const bf16 *vc, int B, int sh, int n_page,
                                                const int *pages, bool pg_sh, const int *pg_s, int p0, int kvh,
                                                size_t row_stride, int kt, int kend, int i, bf16 *ks, bf16 *vs,
                                                int *row_ok)
{
    const int r = i / (D / 8), c = i % (D / 8), key = kt + r;
    bool ok = false;
    size_t off = 0;
    if (key < kend) { /* sh >= 0: B = 2^sh, a shift and a mask for the division */
        const int pi = sh >= 0 ? key >> sh : key / B;
        const int page = pg_sh ? pg_s[pi - p0] : pages[pi];
        ok = page >= 0 && page < n_page;
        const int kin = sh >= 0 ? key & (B - 1) : key - pi * B;
        if (ok) off = ((size_t)page * B + kin) * row_stride + (size_t)kvh * D + (size_t)c * 8;
    }
    cp_async16(ks + r * LD + c * 8, kc + off, ok);
    cp_async16(vs + r * LD + c * 8, vc + off, ok);
    if (c == 0) row_ok[r] = ok;
}

template <int DPL, int GH>
static __global__ void __launch_bounds__(ADC_NW * 32) k_attn_decode(attn_args a)
{
    extern __shared__ __align__(128) unsigned char sm[];
    /* a.dec_order 1: grid (kv heads x head groups, sequences, splits), so the blocks of one
     * sequence's kv heads run together and read each cache row ([NKV][D] of a slot) at once */
    const int s = a.dec_order ? blockIdx.y : blockIdx.x;
    const int hy = a.dec_order ? blockIdx.x : blockIdx.y;
    const int q0 = a.q_indptr[s];
    if (a.q_indptr[s + 1] - q0 != 1) return; /* prefill rows: tensor-core kernel; empty: nothing */
    const int t = q0;
    const int n_hg = (a.G + GH - 1) / GH;
    const int kvh = hy / n_hg, hg = hy % n_hg, split = blockIdx.z;
    const int h0 = kvh * a.G + hg * GH;
    const int gn = min(GH, a.G - hg * GH);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int D = a.D;
    const adc_smem_layout L = adc_layout(D, GH);
    int *row_ok = (int *)(sm + L.ok_off);
    float *q_s = (float *)(sm + L.q_off);
    float *p_s = (float *)(sm + L.p_off) + warp * 16 * GH;

    int len = min(a.pos[t] + 1, a.kv_len[s]);
    if (len < 0) len = 0;
    int chunk = (len + a.n_split - 1) / a.n_split;
    chunk = (chunk + ADC_KT - 1) / ADC_KT * ADC_KT;
    const int k0 = min(len, split * chunk), k1 = min(len, k0 + chunk);
    const int n_tiles = (k1 - k0 + ADC_KT - 1) / ADC_KT;
    const int *pages = a.page_idx + a.page_indptr[s];
    const size_t row_stride = (size_t)a.NKV * D;
    const int cpr = D / 8; /* 16-byte chunks per row */

    for (int i = threadIdx.x; i < GH * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        q_s[i] = g < gn ? __bfloat162float(a.q[((size_t)t * a.NH + h0 + g) * D + d]) * a.scale_log2 : 0.0f;
    }

    /* issue the copies of tile `it` into stage st */
    auto issue = [&](int it, int st) {
        bf16 *ks = (bf16 *)(sm + st * L.stage), *vs = (bf16 *)(sm + st * L.stage + L.v_rel);
        const int kt = k0 + it * ADC_KT;
        for (int i = threadIdx.x; i < ADC_KT * cpr; i += ADC_NW * 32) {
            int r = i / cpr, c = i - r * cpr, key = kt + r;
            bool ok = false;
            size_t off = 0;
            if (key < k1) {
                int page = pages[key / a.B];
                ok = page >= 0 && page < a.n_page;
                if (ok) off = ((size_t)page * a.B + key % a.B) * row_stride + (size_t)kvh * D + (size_t)c * 8;
            }
            cp_async16(ks + r * L.kld + c * 8, a.kc + off, ok);
            cp_async16(vs + r * L.vld + c * 8, a.vc + off, ok);
            if (c == 0) row_ok[st * ADC_KT + r] = ok;
        }
    };

    float m[GH], l[GH], acc[GH][DPL];
#pragma unroll
    for (int g = 0; g < GH; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++) acc[g][e] = 0.0f;
    }
    const int kl = lane & 15, half = lane >> 4;
    const int dh = D / 2; /* dims per half, a multiple of 8 */

    if (n_tiles > 0) issue(0, 0);
    cp_async_commit();
    for (int it = 0; it < n_tiles; it++) {
        const int st = it & 1;
        if (it + 1 < n_tiles) issue(it + 1, st ^ 1);
        cp_async_commit();
        cp_async_wait<1>(); /* tile it has landed (this thread's copies) */
        __syncthreads();    /* ... and every thread's */
        const bf16 *ks = (const bf16 *)(sm + st * L.stage), *vs = (const bf16 *)(sm + st * L.stage + L.v_rel);
        const int kw = k0 + it * ADC_KT + warp * 16; /* first key of this warp */
        const int nk = max(0, min(16, k1 - kw));
        if (nk > 0) {
            const int r = warp * 16 + kl;
            const bool valid = kl < nk && row_ok[st * ADC_KT + r];
            float sc[GH];
#pragma unroll
            for (int g = 0; g < GH; g++) sc[g] = 0.0f;
            const bf16 *krow = ks + r * L.kld + half * dh;
            const float *qh = q_s + half * dh;
            for (int d0 = 0; d0 < dh; d0 += 8) {
                float kf[8];
                load_bf16<8>(krow + d0, kf);
#pragma unroll
                for (int g = 0; g < GH; g++) {
                    if (g < gn) {
                        float4 qa = *(const float4 *)(qh + g * D + d0), qb = *(const float4 *)(qh + g * D + d0 + 4);
                        sc[g] += qa.x * kf[0] + qa.y * kf[1] + qa.z * kf[2] + qa.w * kf[3] + qb.x * kf[4] +
                                 qb.y * kf[5] + qb.z * kf[6] + qb.w * kf[7];
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < GH; g++) {
                if (g < gn) {
                    float x = sc[g] + __shfl_xor_sync(0xffffffffu, sc[g], 16);
                    x = valid ? x : -INFINITY;
                    float m_new = fmaxf(m[g], warp_max(x));
                    float p = 0.0f, corr = 1.0f;
                    if (m_new != -INFINITY) {
                        p = valid ? exp2f(x - m_new) : 0.0f;
                        corr = exp2f(m[g] - m_new); /* m[g] == -inf gives 0; acc and l are 0 then */
                    }
                    l[g] = l[g] * corr + warp_sum(half == 0 ? p : 0.0f);
                    m[g] = m_new;
#pragma unroll
                    for (int e = 0; e < DPL; e++) acc[g][e] *= corr;
                    if (half == 0) p_s[kl * GH + g] = p;
                }
            }
            __syncwarp();
            if (lane * DPL < D) {
                const bf16 *vcol = vs + (size_t)(warp * 16) * L.vld + lane * DPL;
#pragma unroll 4
                for (int j = 0; j < nk; j++) {
                    float vf[DPL];
                    load_bf16<DPL>(vcol + j * L.vld, vf);
#pragma unroll
                    for (int g = 0; g < GH; g++) {
                        if (g < gn) {
                            float p = p_s[j * GH + g];
#pragma unroll
                            for (int e = 0; e < DPL; e++) acc[g][e] += p * vf[e];
                        }
                    }
                }
            }
            __syncwarp();
        }
        __syncthreads(); /* stage st is free for the copies of tile it + 2 */
    }
    cp_async_wait<0>();
    __syncthreads();

    /* merge the warps */
    float *m_s = (float *)(sm + L.m_off), *l_s = (float *)(sm + L.l_off), *acc_s = (float *)(sm + L.a_off);
#pragma unroll
    for (int g = 0; g < GH; g++) {
        if (lane == 0) {
            m_s[warp * GH + g] = m[g];
            l_s[warp * GH + g] = l[g];
        }
        if (lane * DPL < D) {
#pragma unroll
            for (int e = 0; e < DPL; e++) acc_s[(warp * GH + g) * D + lane * DPL + e] = acc[g][e];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < gn * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        float M = -INFINITY;
        for (int w = 0; w < ADC_NW; w++) M = fmaxf(M, m_s[w * GH + g]);
        float Lsum = 0.0f, A = 0.0f;
        if (M != -INFINITY) {
            for (int w = 0; w < ADC_NW; w++) {
                float f = exp2f(m_s[w * GH + g] - M);
                Lsum += l_s[w * GH + g] * f;
                A += acc_s[(w * GH + g) * D + d] * f;
            }
        }
        size_t oi = ((size_t)t * a.NH + h0 + g);
        if (a.n_split == 1) {
            a.out[oi * D + d] = __float2bfloat16_rn(Lsum > 0.0f ? A / Lsum : 0.0f);
        } else {
            float *pp = a.part + ((size_t)split * a.n_tok * a.NH + oi) * (D + 2);
            pp[d] = A;
            if (d == 0) {
                pp[D] = M;
                pp[D + 1] = Lsum;
            }
        }
    }
}

template <int DPL, int GH>
static int adc_launch(struct lb_cu *c, const attn_args &a, dim3 g, struct lb_err *err)
{
    adc_smem_layout L = adc_layout(a.D, GH);
    if (L.bytes > 48 * 1024) {
        LB_CU(cudaFuncSetAttribute(k_attn_decode<DPL, GH>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L.bytes));
        LB_CU(cudaFuncSetAttribute(k_attn_decode<DPL, GH>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    }
    k_attn_decode<DPL, GH><<<g, ADC_NW * 32, L.bytes, c->stream>>>(a);
    LB_CU_LAUNCH();
    return 0;
}

/* ------------------------------------------------------------------ v2: tensor-core prefill
 * k_attn_tiles  cuts every sequence with >= 2 query rows into tiles of <= 16 consecutive rows.
 * k_attn_prefill_tc  one block (4 warps) per (tile, kv head, group of <= 4 query heads): warp w
 *   owns query head h0 + w for the tile's 16 rows. Keys go in tiles of 64 (gathered through the
 *   page table into shared memory, shared by the 4 heads): S = Q K^T by WMMA (bf16 -> fp32), the
 *   warp's online softmax on S in shared memory (causal mask pos[t] >= key, key < kv_len), P as
 *   bf16, O (fp32, in shared memory) rescaled and O += P V by WMMA. D <= 128, D % 16 == 0. */
#define ATC_KT 64
#define ATC_DMAX 128

struct atc_tile {
    int seq, t0, tn;
};

static __global__ void __launch_bounds__(1024) k_attn_tiles(const int32_t *q_indptr, int n_seq, atc_tile *tiles,
                                                            int *n_tiles)
{
    __shared__ int warp_tot[32];
    int tid = threadIdx.x, nt = blockDim.x;
    int per = (n_seq + nt - 1) / nt;
    int s0 = min(n_seq, tid * per), s1 = min(n_seq, s0 + per);
    int cnt = 0;
    for (int s = s0; s < s1; s++) {
        int len = q_indptr[s + 1] - q_indptr[s];
        if (len >= 2) cnt += (len + 15) / 16;
    }
    int lane = tid % 32, w = tid / 32, inc = cnt;
    for (int o = 1; o < 32; o <<= 1) {
        int v = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += v;
    }
    if (lane == 31) warp_tot[w] = inc;
    __syncthreads();
    if (w == 0) {
        int v = lane < nt / 32 ? warp_tot[lane] : 0, x = v;
        for (int o = 1; o < 32; o <<= 1) {
            int u = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += u;
        }
        warp_tot[lane] = x - v;
    }
    __syncthreads();
    int at = warp_tot[w] + inc - cnt;
    for (int s = s0; s < s1; s++) {
        int a = q_indptr[s], len = q_indptr[s + 1] - a;
        if (len < 2) continue;
        for (int t0 = a; t0 < a + len; t0 += 16) {
            atc_tile tl;
            tl.seq = s;
            tl.t0 = t0;
            tl.tn = min(16, a + len - t0);
            tiles[at++] = tl;
        }
    }
    if (tid == nt - 1) *n_tiles = at;
}

struct atc_smem_layout {
    int ldk;  /* bf16 row of K/V/Q tiles: D + 8 */
    int lds;  /* float row of S: KT + 4 */
    int ldp;  /* bf16 row of P: KT + 8 */
    int ldo;  /* float row of O: D + 4 */
    size_t k_off, v_off, q_off, s_off, p_off, o_off, ml_off, bytes;
};

__host__ __device__ static atc_smem_layout atc_layout(int D)
{
    atc_smem_layout L;
    L.ldk = D + 8;
    L.lds = ATC_KT + 4;
    L.ldp = ATC_KT + 8;
    L.ldo = D + 4;
    size_t off = 0;
    L.k_off = off; off += (size_t)ATC_KT * L.ldk * 2;
    L.v_off = off; off += (size_t)ATC_KT * L.ldk * 2;
    L.q_off = off; off += (size_t)4 * 16 * L.ldk * 2;
    L.s_off = off; off += (size_t)4 * 16 * L.lds * 4;
    L.p_off = off; off += (size_t)4 * 16 * L.ldp * 2;
    L.o_off = off; off += (size_t)4 * 16 * L.ldo * 4;
    L.ml_off = off; off += (size_t)4 * 16 * 3 * 4; /* m, l, corr per row */
    L.bytes = off;
    return L;
}

static __global__ void __launch_bounds__(128) k_attn_prefill_tc(attn_args a, const atc_tile *tiles, const int *n_tiles)
{
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char sm[];
    if ((int)blockIdx.x >= *n_tiles) return;
    const atc_tile tl = tiles[blockIdx.x];
    const int n_hg = (a.G + 3) / 4;
    const int kvh = blockIdx.y / n_hg, hg = blockIdx.y % n_hg;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int D = a.D;
    const atc_smem_layout L = atc_layout(D);
    bf16 *k_s = (bf16 *)(sm + L.k_off), *v_s = (bf16 *)(sm + L.v_off);
    bf16 *q_s = (bf16 *)(sm + L.q_off) + warp * 16 * L.ldk;
    float *s_s = (float *)(sm + L.s_off) + warp * 16 * L.lds;
    bf16 *p_s = (bf16 *)(sm + L.p_off) + warp * 16 * L.ldp;
    float *o_s = (float *)(sm + L.o_off) + warp * 16 * L.ldo;
    float *m_s = (float *)(sm + L.ml_off) + warp * 48, *l_s = m_s + 16, *c_s = m_s + 32;
    const int h = kvh * a.G + hg * 4 + warp;
    const bool head_ok = hg * 4 + warp < a.G;
    const int s = tl.seq;
    const int kv_len = a.kv_len[s];
    const int *pages = a.page_idx + a.page_indptr[s];
    const size_t row_stride = (size_t)a.NKV * D;

    /* this warp's Q rows (zero beyond the tile or for a missing head), O = 0, m = -inf, l = 0 */
    for (int i = lane; i < 16 * (D / 8); i += 32) {
        int r = i / (D / 8), c = (i % (D / 8)) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (head_ok && r < tl.tn) v = *(const uint4 *)(a.q + ((size_t)(tl.t0 + r) * a.NH + h) * D + c);
        *(uint4 *)(q_s + r * L.ldk + c) = v;
    }
    for (int i = lane; i < 16 * D; i += 32) o_s[(i / D) * L.ldo + i % D] = 0.0f;
    if (lane < 16) {
        m_s[lane] = -INFINITY;
        l_s[lane] = 0.0f;
    }
    /* keys needed by the tile: 0 .. max pos over its rows */
    int kmax = 0;
    for (int r = 0; r < tl.tn; r++) kmax = max(kmax, a.pos[tl.t0 + r] + 1);
    kmax = min(kmax, kv_len);
    /* the row each lane pair works on in the softmax, and its causal limit */
    const int my_row = lane >> 1, my_half = lane & 1;
    const int my_lim = my_row < tl.tn ? min(a.pos[tl.t0 + my_row] + 1, kv_len) : 0; /* keys < my_lim are visible */

    for (int kt0 = 0; kt0 < kmax; kt0 += ATC_KT) {
        __syncthreads(); /* previous tile's K/V no longer read */
        for (int i = threadIdx.x; i < ATC_KT * (D / 8); i += blockDim.x) {
            int r = i / (D / 8), c = (i % (D / 8)) * 8, key = kt0 + r;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (key < kmax) {
                int page = pages[key / a.B];
                if (page >= 0 && page < a.n_page) {
                    size_t off = ((size_t)page * a.B + key % a.B) * row_stride + (size_t)kvh * D + c;
                    kv = *(const uint4 *)(a.kc + off);
                    vv = *(const uint4 *)(a.vc + off);
                }
            }
            *(uint4 *)(k_s + r * L.ldk + c) = kv;
            *(uint4 *)(v_s + r * L.ldk + c) = vv;
        }
        __syncthreads();
        if (!head_ok) continue;
        /* S[16][64] = Q K^T */
#pragma unroll
        for (int nb = 0; nb < ATC_KT / 16; nb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
            wmma::fill_fragment(sf, 0.0f);
            for (int kk = 0; kk < D; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kb;
                wmma::load_matrix_sync(qa, q_s + kk, L.ldk);
                wmma::load_matrix_sync(kb, k_s + nb * 16 * L.ldk + kk, L.ldk);
                wmma::mma_sync(sf, qa, kb, sf);
            }
            wmma::store_matrix_sync(s_s + nb * 16, sf, L.lds, wmma::mem_row_major);
        }
        __syncwarp();
        /* online softmax: lane pair (2r, 2r+1) takes row r, 32 columns each */
        {
            float *srow = s_s + my_row * L.lds + my_half * 32;
            bf16 *prow = p_s + my_row * L.ldp + my_half * 32;
            float mx = -INFINITY;
            for (int c = 0; c < 32; c++) {
                int key = kt0 + my_half * 32 + c;
                float x = key < my_lim ? srow[c] * a.scale_log2 : -INFINITY;
                srow[c] = x;
                mx = fmaxf(mx, x);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            float m_old = m_s[my_row];
            float m_new = fmaxf(m_old, mx);
            float corr = 1.0f, sum = 0.0f;
            if (m_new != -INFINITY) {
                corr = exp2f(m_old - m_new);
                for (int c = 0; c < 32; c++) {
                    float p = srow[c] == -INFINITY ? 0.0f : exp2f(srow[c] - m_new);
                    bf16 pb = __float2bfloat16_rn(p);
                    prow[c] = pb;
                    sum += __bfloat162float(pb); /* l sums what P V sums: the rounded p */
                }
            } else {
                for (int c = 0; c < 32; c++) prow[c] = __float2bfloat16_rn(0.0f);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            __syncwarp();
            if (my_half == 0) {
                m_s[my_row] = m_new;
                l_s[my_row] = l_s[my_row] * corr + sum;
                c_s[my_row] = corr;
            }
        }
        __syncwarp();
        /* O = O * corr (per row), then O += P V */
        for (int i = lane; i < 16 * D; i += 32) {
            int r = i / D, d = i % D;
            o_s[r * L.ldo + d] *= c_s[r];
        }
        __syncwarp();
        for (int db = 0; db < D / 16; db++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
            wmma::load_matrix_sync(of, o_s + db * 16, L.ldo, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < ATC_KT; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
                wmma::load_matrix_sync(pa, p_s + kk, L.ldp);
                wmma::load_matrix_sync(vb, v_s + kk * L.ldk + db * 16, L.ldk);
                wmma::mma_sync(of, pa, vb, of);
            }
            wmma::store_matrix_sync(o_s + db * 16, of, L.ldo, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (!head_ok) return;
    __syncwarp();
    for (int i = lane; i < tl.tn * D; i += 32) {
        int r = i / D, d = i % D;
        float l = l_s[r];
        a.out[((size_t)(tl.t0 + r) * a.NH + h) * D + d] = __float2bfloat16_rn(l > 0.0f ? o_s[r * L.ldo + d] / l : 0.0f);
    }
}

/* ------------------------------------------------------------------ v3: prefill, FA2-style
 * k_attn_prefill_fa<D>  same grid and tiles as k_attn_prefill_tc (one block = 16 query rows x 4
 *   heads of one kv head; warp w owns head h0 + w), but S, P and O never leave registers: raw
 *   mma.sync m16n8k16 (bf16 in, fp32 accumulate) with the documented fragment layouts. Q is held
 *   as D/16 A fragments; per tile of 64 keys, S (16 x 64: 8 C fragments) = Q K^T with K fragments
 *   read by ldmatrix; the online softmax works on the C fragments (a row lives in the 4 lanes of a
 *   quad: two shuffles); P is repacked from the C fragments into A fragments (bf16, the FA2 trick)
 *   and O (16 x D: D/8 C fragments) += P V with V fragments read by ldmatrix.trans. K/V tiles come
 *   through the page table by cp.async, two stages deep. l sums the bf16-rounded p (what P V
 *   sums), as in v2. Instantiated for D = 64 and 128; other D % 16 == 0 take v2. */
__device__ __forceinline__ void mma_bf16_16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x2(uint32_t &r0, uint32_t &r1, const void *p)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(s));
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t &r0, uint32_t &r1, const void *p)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(s));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x = lo (lower address / lower k) */
    return *(uint32_t *)&h;
}

#define AFA_KT 64
#define AFA_PMAX 512 /* LEAN: page ids staged in shared memory (else read from global per copy) */
/* The D/16 mma.sync m16n8k16 A fragments of one lane (column pair qc) over rows q0 (fragment row qr)
 * and q1 (row qr + 8), D bf16 each; a row that is not ok loads zeros. Used by the prefill (rows
 * NH * D apart) and by adt_load_q (a kv head's G query heads, D apart). */
template <int D>
static __device__ __forceinline__ void mma_load_a_rows(const bf16 *q0, const bf16 *q1, bool r0ok, bool r1ok, int qc,
                                                       uint32_t (&qf)[D / 16][4])
{
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int c0 = kk * 16 + qc;
        qf[kk][0] = r0ok ? *(const uint32_t *)(q0 + c0) : 0u;
        qf[kk][1] = r1ok ? *(const uint32_t *)(q1 + c0) : 0u;
        qf[kk][2] = r0ok ? *(const uint32_t *)(q0 + c0 + 8) : 0u;
        qf[kk][3] = r1ok ? *(const uint32_t *)(q1 + c0 + 8) : 0u;
    }
}

/* LEAN (LB_CUDA_ATTN_PREFILL=4, the default since H200 run 41: 448 against 477 us at 16 sequences
 * x 512, so the page lookups were a small part; the rest is the kernel's structure): the block
 * stages its page ids in shared memory once (the copies read them there, not from global memory,
 * where each cp.async waited on a dependent load), uses a
 * shift and a mask for the page arithmetic when the page size is a power of two, and skips the
 * per-score mask on key tiles below every row's causal limit (all pages valid), which is all but
 * the last tile or two of a row block. Same products and softmax otherwise. */
template <int D, bool LEAN>
static __global__ void __launch_bounds__(128) k_attn_prefill_fa(attn_args a, const atc_tile *tiles, const int *n_tiles)
{
    constexpr int LD = D + 8; /* bf16 row stride of the K/V stages: 16-byte padded, ldmatrix conflict-free */
    constexpr int STAGE = 2 * AFA_KT * LD; /* elements: K then V */
    extern __shared__ __align__(128) unsigned char sm[];
    bf16 *stg = (bf16 *)sm;
    int *row_ok = (int *)(sm + 2 * STAGE * sizeof(bf16)); /* [2][KT] */
    int *pg_s = row_ok + 2 * AFA_KT;                       /* LEAN: [AFA_PMAX] */
    if ((int)blockIdx.x >= *n_tiles) return;
    const atc_tile tl = tiles[blockIdx.x];
    const int n_hg = (a.G + 3) / 4;
    const int kvh = blockIdx.y / n_hg, hg = blockIdx.y % n_hg;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = kvh * a.G + hg * 4 + warp;
    const bool head_ok = hg * 4 + warp < a.G;
    const int s = tl.seq;
    const int kv_len = a.kv_len[s];
    const int *pages = a.page_idx + a.page_indptr[s];
    const size_t row_stride = (size_t)a.NKV * D;
    const int qr = lane >> 2, qc = (lane & 3) * 2; /* fragment row (and row + 8), column pair */

    /* Q fragments: A[16][D] rows t0 + r (zero beyond the tile / for a missing head) */
    uint32_t qf[D / 16][4];
    mma_load_a_rows<D>(a.q + ((size_t)(tl.t0 + qr) * a.NH + h) * D, a.q + ((size_t)(tl.t0 + qr + 8) * a.NH + h) * D,
                       head_ok && qr < tl.tn, head_ok && qr + 8 < tl.tn, qc, qf);
    /* keys needed by the tile, and each of this lane's two rows' causal limits */
    int kmax = 0, lmin = INT_MAX; /* keys needed by some row / by every row of the tile */
    for (int r = 0; r < tl.tn; r++) {
        const int p1 = a.pos[tl.t0 + r] + 1;
        kmax = max(kmax, p1);
        lmin = min(lmin, p1);
    }
    kmax = min(kmax, kv_len);
    lmin = min(lmin, kv_len);
    const int lim0 = qr < tl.tn ? min(a.pos[tl.t0 + qr] + 1, kv_len) : 0;
    const int lim1 = qr + 8 < tl.tn ? min(a.pos[tl.t0 + qr + 8] + 1, kv_len) : 0;
    const int n_kt = (kmax + AFA_KT - 1) / AFA_KT;
    /* LEAN: the page ids of keys [0, kmax) in shared memory, and whether all are valid */
    const int n_pg = kmax > 0 ? (kmax - 1) / a.B + 1 : 0;
    const bool pg_sh = LEAN && n_pg <= AFA_PMAX;
    bool pages_ok = false;
    if (LEAN) {
        int ok = 1;
        if (pg_sh)
            for (int i = threadIdx.x; i < n_pg; i += 128) {
                const int pg = pages[i];
                pg_s[i] = pg;
                ok &= pg >= 0 && pg < a.n_page;
            }
        pages_ok = __syncthreads_and(ok) && pg_sh; /* also publishes pg_s */
    }

    auto issue = [&](int it, int st) {
        bf16 *ks = stg + st * STAGE, *vs = ks + AFA_KT * LD;
        const int kt = it * AFA_KT;
        /* LEAN: page ids from shared memory, shift and mask for power-of-two pages */
        for (int i = threadIdx.x; i < AFA_KT * (D / 8); i += 128)
            attn_copy_chunk<D, LD>(a.kc, a.vc, a.B, LEAN ? a.B_shift : -1, a.n_page, pages, pg_sh, pg_s, 0, kvh,
                                   row_stride, kt, kmax, i, ks, vs, row_ok + st * AFA_KT);
    };

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows qr and qr + 8 */

    if (n_kt > 0) issue(0, 0);
    cp_async_commit();
    for (int it = 0; it < n_kt; it++) {
        const int st = it & 1;
        if (it + 1 < n_kt) issue(it + 1, st ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (head_ok) {
            const bf16 *ks = stg + st * STAGE, *vs = ks + AFA_KT * LD;
            const int kt = it * AFA_KT;
            float sc[AFA_KT / 8][4];
#pragma unroll
            for (int nb = 0; nb < AFA_KT / 8; nb++) {
                sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    uint32_t b0, b1;
                    /* lanes 0-7: keys nb*8 + lane, dims kk*16..+7; lanes 8-15: same keys, dims +8 */
                    const bf16 *pk = ks + (nb * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8;
                    ldsm_x2(b0, b1, pk);
                    mma_bf16_16816(sc[nb], qf[kk], b0, b1);
                }
            }
            /* scale, mask, row max over the quad (LEAN: no mask on a tile below every row's limit;
             * rows past the tile then get finite scores of q = 0 and are never stored) */
            float mx0 = -INFINITY, mx1 = -INFINITY;
            if (LEAN && pages_ok && kt + AFA_KT <= lmin) {
#pragma unroll
                for (int nb = 0; nb < AFA_KT / 8; nb++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float x0 = sc[nb][e] * a.scale_log2, x1 = sc[nb][2 + e] * a.scale_log2;
                        sc[nb][e] = x0;
                        sc[nb][2 + e] = x1;
                        mx0 = fmaxf(mx0, x0);
                        mx1 = fmaxf(mx1, x1);
                    }
                }
            } else {
#pragma unroll
                for (int nb = 0; nb < AFA_KT / 8; nb++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        int key = kt + nb * 8 + qc + e;
                        bool ok = row_ok[st * AFA_KT + nb * 8 + qc + e] != 0;
                        float x0 = (ok && key < lim0) ? sc[nb][e] * a.scale_log2 : -INFINITY;
                        float x1 = (ok && key < lim1) ? sc[nb][2 + e] * a.scale_log2 : -INFINITY;
                        sc[nb][e] = x0;
                        sc[nb][2 + e] = x1;
                        mx0 = fmaxf(mx0, x0);
                        mx1 = fmaxf(mx1, x1);
                    }
                }
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
            const float c0 = mn0 == -INFINITY ? 1.0f : exp2f(m0 - mn0);
            const float c1 = mn1 == -INFINITY ? 1.0f : exp2f(m1 - mn1);
            m0 = mn0;
            m1 = mn1;
            /* p (bf16-rounded), row sums of this lane's columns, packed into A fragments */
            uint32_t pf[AFA_KT / 16][4];
            float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
            for (int nb = 0; nb < AFA_KT / 8; nb++) {
                float p[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float mm = e < 2 ? mn0 : mn1;
                    float x = sc[nb][e];
                    p[e] = x == -INFINITY ? 0.0f : exp2f(x - mm);
                }
                uint32_t lo = pack_bf16(p[0], p[1]), hi = pack_bf16(p[2], p[3]);
                __nv_bfloat162 blo = *(__nv_bfloat162 *)&lo, bhi = *(__nv_bfloat162 *)&hi;
                s0 += __bfloat162float(blo.x) + __bfloat162float(blo.y);
                s1 += __bfloat162float(bhi.x) + __bfloat162float(bhi.y);
                /* C fragment of keys nb*8..+7 -> half of the A fragment of k16 step nb/2 */
                pf[nb / 2][(nb & 1) * 2 + 0] = lo; /* a0a1 (row qr) or a4a5 */
                pf[nb / 2][(nb & 1) * 2 + 1] = hi; /* a2a3 (row qr+8) or a6a7 */
            }
            l0 = l0 * c0 + s0;
            l1 = l1 * c1 + s1;
#pragma unroll
            for (int nd = 0; nd < D / 8; nd++) {
                o[nd][0] *= c0;
                o[nd][1] *= c0;
                o[nd][2] *= c1;
                o[nd][3] *= c1;
            }
#pragma unroll
            for (int ks16 = 0; ks16 < AFA_KT / 16; ks16++) {
#pragma unroll
                for (int nd = 0; nd < D / 8; nd++) {
                    uint32_t b0, b1;
                    /* lanes 0-7: V rows (keys) ks16*16 + lane, lanes 8-15: keys + 8; dims nd*8..+7 */
                    const bf16 *pv = vs + (ks16 * 16 + (lane & 15)) * LD + nd * 8;
                    ldsm_x2_t(b0, b1, pv);
                    mma_bf16_16816(o[nd], pf[ks16], b0, b1);
                }
            }
        }
        __syncthreads(); /* stage st is free for tile it + 2 */
    }
    cp_async_wait<0>();
    if (!head_ok) return;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    bf16 *out0 = a.out + ((size_t)(tl.t0 + qr) * a.NH + h) * D + qc;
    bf16 *out1 = a.out + ((size_t)(tl.t0 + qr + 8) * a.NH + h) * D + qc;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        if (qr < tl.tn) *(__nv_bfloat162 *)(out0 + nd * 8) = __floats2bfloat162_rn(o[nd][0] * i0, o[nd][1] * i0);
        if (qr + 8 < tl.tn) *(__nv_bfloat162 *)(out1 + nd * 8) = __floats2bfloat162_rn(o[nd][2] * i1, o[nd][3] * i1);
    }
}

template <int D, bool LEAN>
static int afa_launch(struct lb_cu *c, const attn_args &a, dim3 g, const atc_tile *tiles, const int *cnt,
                      struct lb_err *err)
{
    size_t bytes = (size_t)2 * 2 * AFA_KT * (D + 8) * sizeof(bf16) + 2 * AFA_KT * sizeof(int) +
                   (LEAN ? AFA_PMAX * sizeof(int) : 0);
    if (bytes > 48 * 1024) {
        LB_CU(cudaFuncSetAttribute(k_attn_prefill_fa<D, LEAN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        LB_CU(cudaFuncSetAttribute(k_attn_prefill_fa<D, LEAN>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    }
    k_attn_prefill_fa<D, LEAN><<<g, 128, bytes, c->stream>>>(a, tiles, cnt);
    LB_CU_LAUNCH();
    return 0;
}

/* The decode kernels' warp code (v4 and v5). A warp's query heads kvh * G .. + G - 1 are the 16
 * rows of an mma.sync m16n8k16 A fragment (rows >= G zero): adt_load_q loads them from q (the
 * token's kv-head group); adt_warp_keys takes 16 keys (rows kw .. kw + 15 of a K and a V tile in
 * shared memory, row stride LD; key kbase is row kw; row_ok[] marks rows with a valid page):
 * S (16 heads x 16 keys: two C fragments) = Q K^T with K fragments by ldmatrix, the online softmax
 * on the C fragments (a row lives in a quad), P repacked into one A fragment (bf16; l sums the
 * rounded p, as in the prefill kernel), O (16 x D) += P V with V fragments by ldmatrix.trans.
 * (m0, l0) and (m1, l1) are rows qr and qr + 8 of the lane. */
template <int D>
__device__ __forceinline__ void adt_load_q(const bf16 *qb, int G, int lane, uint32_t (&qf)[D / 16][4])
{
    const int qr = lane >> 2, qc = (lane & 3) * 2;
    mma_load_a_rows<D>(qb + (size_t)qr * D, qb + (size_t)(qr + 8) * D, qr < G, qr + 8 < G, qc, qf);
}

/* HI false (the caller knows G <= 8): rows qr + 8 are padding, never stored; their softmax and
 * rescale are skipped (m1, l1 and O's rows qr + 8 are left as they were). LAZY: O and l are rescaled
 * only when some row's maximum grew in this tile (a warp vote); otherwise the factors are exactly 1
 * and the products are identities, so the result is the same bit for bit. */
template <int D, int LD, bool HI = true, bool LAZY = false>
__device__ __forceinline__ void adt_warp_keys(const bf16 *ks, const bf16 *vs, int kw, const int *row_ok, int kbase, int k1,
                                              float scale_log2, const uint32_t (&qf)[D / 16][4], int lane,
                                              float (&o)[D / 8][4], float &m0, float &m1, float &l0, float &l1)
{
    const int qc = (lane & 3) * 2;
    float sc[2][4];
#pragma unroll
    for (int nb = 0; nb < 2; nb++) {
        sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t b0, b1;
            /* lanes 0-7: keys kw + nb*8 + lane, dims kk*16..+7; lanes 8-15: same keys, dims +8 */
            const bf16 *pk = ks + (kw + nb * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8;
            ldsm_x2(b0, b1, pk);
            mma_bf16_16816(sc[nb], qf[kk], b0, b1);
        }
    }
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < 2; nb++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int j = nb * 8 + qc + e;
            const bool ok = kbase + j < k1 && row_ok[kw + j] != 0;
            float x0 = ok ? sc[nb][e] * scale_log2 : -INFINITY;
            float x1 = HI && ok ? sc[nb][2 + e] * scale_log2 : -INFINITY;
            sc[nb][e] = x0;
            sc[nb][2 + e] = x1;
            mx0 = fmaxf(mx0, x0);
            if (HI) mx1 = fmaxf(mx1, x1);
        }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    if (HI) {
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = HI ? fmaxf(m1, mx1) : m1;
    const float c0 = mn0 == -INFINITY ? 1.0f : exp2f(m0 - mn0);
    const float c1 = !HI || mn1 == -INFINITY ? 1.0f : exp2f(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    uint32_t pf[4];
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < 2; nb++) {
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float mm = e < 2 ? mn0 : mn1;
            float x = sc[nb][e];
            p[e] = (!HI && e >= 2) || x == -INFINITY ? 0.0f : exp2f(x - mm);
        }
        uint32_t lo = pack_bf16(p[0], p[1]), hi = pack_bf16(p[2], p[3]);
        __nv_bfloat162 blo = *(__nv_bfloat162 *)&lo, bhi = *(__nv_bfloat162 *)&hi;
        s0 += __bfloat162float(blo.x) + __bfloat162float(blo.y);
        if (HI) s1 += __bfloat162float(bhi.x) + __bfloat162float(bhi.y);
        pf[nb * 2 + 0] = lo; /* keys 0-7: a0a1 (row qr), a2a3 (row qr+8); keys 8-15: a4a5, a6a7 */
        pf[nb * 2 + 1] = hi;
    }
    /* the rescale, skipped by LAZY when no lane's factor differs from 1 */
    const bool rescale = !LAZY || __any_sync(0xffffffffu, c0 != 1.0f || c1 != 1.0f);
    if (rescale) {
        l0 = fmaf(l0, c0, s0); /* one rounding, as nvcc contracts l * c + s */
        if (HI) l1 = fmaf(l1, c1, s1);
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            o[nd][0] *= c0;
            o[nd][1] *= c0;
            if (HI) {
                o[nd][2] *= c1;
                o[nd][3] *= c1;
            }
        }
    } else { /* c0 = c1 = 1: l * 1 + s, one rounding as the fused form above */
        l0 += s0;
        if (HI) l1 += s1;
    }
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        uint32_t b0, b1;
        /* lanes 0-7: V rows (keys) kw + lane, lanes 8-15: keys + 8; dims nd*8..+7 */
        ldsm_x2_t(b0, b1, vs + (kw + (lane & 15)) * LD + nd * 8);
        mma_bf16_16816(o[nd], pf, b0, b1);
    }
}

/* ------------------------------------------------------------------ v4: decode on tensor cores
 * k_attn_decode_tc<D>  one block (4 warps) per (sequence with exactly one query row, kv head,
 *   KV split). The G <= 16 query heads of the kv head are the 16 rows of an mma.sync m16n8k16 A
 *   fragment (rows >= G are zero), so a key is read from shared memory once for all heads and
 *   the arithmetic of a 64-key tile is 32 mma per warp instead of ~900 SIMT instructions (v3 was
 *   latency-bound at 1.4-1.7 TB/s). K/V tiles of 64 keys come through the page table by 16-byte
 *   cp.async, three stages deep (two tiles in flight while one is used: 64 KB per block, 2 blocks
 *   per SM); the sequence's page ids for the block's range are staged in shared memory once.
 *   Warp w takes keys 16w..16w+15 of every tile: S (16 heads x 16 keys: two C fragments) = Q K^T
 *   with K fragments by ldmatrix, the online softmax on the C fragments (a row lives in a quad),
 *   P repacked into one A fragment (bf16; l sums the rounded p, as in the prefill kernel), O (16 x D)
 *   += P V with V fragments by ldmatrix.trans. The warps' (m, l, O) are merged in shared memory at
 *   the end; KV splits (few, long sequences) by k_attn_merge. D = 64 or 128; other shapes take v3. */
#define ADT_KT 64
#define ADT_NST 3
#define ADT_PMAX 1024 /* page ids staged in shared memory (else read from global per copy) */

template <int D>
__host__ __device__ constexpr size_t adt_smem_bytes()
{
    return (size_t)ADT_NST * 2 * ADT_KT * (D + 8) * 2 + (size_t)ADT_NST * ADT_KT * 4 + (size_t)ADT_PMAX * 4;
}

template <int D>
static __global__ void __launch_bounds__(128) k_attn_decode_tc(attn_args a)
{
    constexpr int LD = D + 8;              /* bf16 row stride of a stage: 16-byte padded (ldmatrix conflict-free) */
    constexpr int STAGE = 2 * ADT_KT * LD; /* elements: K tile then V tile */
    extern __shared__ __align__(128) unsigned char sm[];
    bf16 *stg = (bf16 *)sm;
    int *row_ok = (int *)(sm + (size_t)ADT_NST * STAGE * sizeof(bf16)); /* [NST][KT] */
    int *pg_s = row_ok + ADT_NST * ADT_KT;                              /* [PMAX] */
    /* grid (S, NKV, splits), or with dec_order (NKV, S, splits): a sequence's kv heads together */
    const int s = a.dec_order ? blockIdx.y : blockIdx.x;
    const int q0 = a.q_indptr[s];
    if (a.q_indptr[s + 1] - q0 != 1) return; /* prefill rows: the prefill kernel; empty: nothing */
    const int t = q0, kvh = a.dec_order ? blockIdx.x : blockIdx.y, split = blockIdx.z, G = a.G;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int qr = lane >> 2, qc = (lane & 3) * 2; /* fragment row (and row + 8), column pair */

    int len = min(a.pos[t] + 1, a.kv_len[s]);
    if (len < 0) len = 0;
    int chunk = (len + a.n_split - 1) / a.n_split;
    chunk = (chunk + ADT_KT - 1) / ADT_KT * ADT_KT;
    const int k0 = min(len, split * chunk), k1 = min(len, k0 + chunk);
    const int n_kt = (k1 - k0 + ADT_KT - 1) / ADT_KT;
    const int *pages = a.page_idx + a.page_indptr[s];
    const int p0 = k0 / a.B;
    const int np = k1 > k0 ? (k1 - 1) / a.B - p0 + 1 : 0;
    const bool pg_sh = np <= ADT_PMAX;
    if (pg_sh)
        for (int i = threadIdx.x; i < np; i += 128) pg_s[i] = pages[p0 + i];
    const size_t row_stride = (size_t)a.NKV * D;

    uint32_t qf[D / 16][4];
    adt_load_q<D>(a.q + ((size_t)t * a.NH + (size_t)kvh * G) * D, G, lane, qf);
    __syncthreads(); /* pg_s */

    auto issue = [&](int it, int st) {
        bf16 *ks = stg + st * STAGE, *vs = ks + ADT_KT * LD;
        const int kt = k0 + it * ADT_KT;
        for (int i = threadIdx.x; i < ADT_KT * (D / 8); i += 128)
            attn_copy_chunk<D, LD>(a.kc, a.vc, a.B, -1, a.n_page, pages, pg_sh, pg_s, p0, kvh, row_stride, kt, k1, i, ks, vs,
                                   row_ok + st * ADT_KT);
    };

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows qr and qr + 8 */

#pragma unroll
    for (int j = 0; j < ADT_NST - 1; j++) {
        if (j < n_kt) issue(j, j);
        cp_async_commit();
    }
    for (int it = 0; it < n_kt; it++) {
        const int st = it % ADT_NST;
        {
            const int nx = it + ADT_NST - 1;
            if (nx < n_kt) issue(nx, nx % ADT_NST);
            cp_async_commit();
        }
        cp_async_wait<ADT_NST - 1>(); /* tile it has landed (this thread's copies) */
        __syncthreads();              /* ... and every thread's */
        const int kw = warp * 16;     /* this warp's keys inside the tile */
        const int kbase = k0 + it * ADT_KT + kw;
        if (kbase < k1) {
            const bf16 *ks = stg + st * STAGE;
            adt_warp_keys<D, LD>(ks, ks + ADT_KT * LD, kw, row_ok + st * ADT_KT, kbase, k1, a.scale_log2, qf, lane, o, m0,
                                 m1, l0, l1);
        }
        __syncthreads(); /* stage st is free for tile it + NST */
    }
    cp_async_wait<0>();
    __syncthreads(); /* the stages are reused for the merge below */

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float *mw = (float *)sm, *lw = mw + 4 * 16, *ow = lw + 4 * 16; /* [4 warps][16 rows] (+ [D]) */
    if ((lane & 3) == 0) {
        mw[warp * 16 + qr] = m0;
        lw[warp * 16 + qr] = l0;
        mw[warp * 16 + qr + 8] = m1;
        lw[warp * 16 + qr + 8] = l1;
    }
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        *(float2 *)(ow + (size_t)(warp * 16 + qr) * D + nd * 8 + qc) = make_float2(o[nd][0], o[nd][1]);
        *(float2 *)(ow + (size_t)(warp * 16 + qr + 8) * D + nd * 8 + qc) = make_float2(o[nd][2], o[nd][3]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += 128) {
        const int g = i / D, d = i % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < 4; w++) M = fmaxf(M, mw[w * 16 + g]);
        float Lsum = 0.0f, A = 0.0f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < 4; w++) {
                const float f = exp2f(mw[w * 16 + g] - M);
                Lsum += lw[w * 16 + g] * f;
                A += ow[(size_t)(w * 16 + g) * D + d] * f;
            }
        }
        const size_t oi = (size_t)t * a.NH + (size_t)kvh * G + g;
        if (a.n_split == 1) {
            a.out[oi * D + d] = __float2bfloat16_rn(Lsum > 0.0f ? A / Lsum : 0.0f);
        } else {
            float *pp = a.part + ((size_t)split * a.n_tok * a.NH + oi) * (D + 2);
            pp[d] = A;
            if (d == 0) {
                pp[D] = M;
                pp[D + 1] = Lsum;
            }
        }
    }
}

template <int D>
static int adt_launch(struct lb_cu *c, const attn_args &a, dim3 g, struct lb_err *err)
{
    const size_t bytes = adt_smem_bytes<D>();
    static_assert(adt_smem_bytes<D>() >= (size_t)4 * 16 * (D + 2) * 4, "merge area fits in the stages");
    LB_CU(cudaFuncSetAttribute(k_attn_decode_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    LB_CU(cudaFuncSetAttribute(k_attn_decode_tc<D>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    k_attn_decode_tc<D><<<g, 128, bytes, c->stream>>>(a);
    LB_CU_LAUNCH();
    return 0;
}

/* ------------------------------------------------------------------ v5: decode, one warp per item
 * k_attn_decode_w<D, NST>  one warp per (sequence with exactly one query row, kv head, KV split),
 *   ADW_WPB warps per block, each on its own item: no block barrier and no merge across warps. The
 *   items are numbered kv head fastest, then split, then sequence, so the warps that run together
 *   read the same tokens' rows of the cache (all kv heads of a token are one 2 KB row for Llama-3-8B)
 *   where v4's grid ran sequences fastest. A warp streams its keys in tiles of 16 through an NST-deep
 *   cp.async ring in its own slice of shared memory (page ids staged there too), and per tile does
 *   what a v4 warp does for its 16 keys of a 64-key tile: S (16 heads x 16 keys) = Q K^T by
 *   mma.sync, the online softmax on the fragments, O += P V. It holds its item's whole (m, l, O), so
 *   it ends with a normalisation in registers and a store (or, split, k_attn_merge's record).
 *   D = 64 or 128 and G <= 16, as v4. The default (LB_CUDA_ATTN=5) where it needs no KV split;
 *   LB_CUDA_ATTN=6 everywhere. H100 run 39 (lora_bench, 512 sequences x 640 keys): 463 us, 2.90
 *   TB/s, against v4's 536 us, 2.51 TB/s (96% of the copy rate measured in the same call); split
 *   over few long sequences (8 x 8192) it was slower than v4 (147 against 130 us), and four stages
 *   (LB_CUDA_ATTN_DEC_NST=4: 6 warps per SM instead of 8) slower everywhere (620 us). The warp
 *   code is v4's (adt_load_q, adt_warp_keys; made shared after run 39, which measured them as two
 *   copies: the PTX of v4 has the same instructions as before, reordered). */
#define ADW_KT 16
#define ADW_WPB 2
#define ADW_PMAX 64 /* page ids staged per warp (else read from global per copy) */

template <int D, int NST>
__host__ __device__ constexpr size_t adw_smem_bytes()
{
    return (size_t)ADW_WPB * (NST * 2 * ADW_KT * (D + 8) * 2 + NST * ADW_KT * 4 + ADW_PMAX * 4);
}

template <int D, int NST, bool LEAN>
static __global__ void __launch_bounds__(ADW_WPB * 32) k_attn_decode_w(attn_args a)
{
    constexpr int LD = D + 8;              /* bf16 row stride of a stage (ldmatrix conflict-free) */
    constexpr int STAGE = 2 * ADW_KT * LD; /* elements: K tile then V tile */
    extern __shared__ __align__(128) unsigned char sm[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    bf16 *stg = (bf16 *)sm + (size_t)warp * NST * STAGE;
    int *row_ok = (int *)((bf16 *)sm + (size_t)ADW_WPB * NST * STAGE) + warp * NST * ADW_KT; /* [NST][KT] */
    int *pg_s = (int *)((bf16 *)sm + (size_t)ADW_WPB * NST * STAGE) + ADW_WPB * NST * ADW_KT + warp * ADW_PMAX;
    const long long item = (long long)blockIdx.x * ADW_WPB + warp;
    const int kvh = (int)(item % a.NKV);
    const long long rest = item / a.NKV;
    const int split = (int)(rest % a.n_split);
    const long long s = rest / a.n_split;
    if (s >= a.n_seq) return;
    const int q0 = a.q_indptr[s];
    if (a.q_indptr[s + 1] - q0 != 1) return; /* prefill rows: the prefill kernel; empty: nothing */
    const int t = q0, G = a.G;
    const int qr = lane >> 2, qc = (lane & 3) * 2; /* fragment row (and row + 8), column pair */

    int len = min(a.pos[t] + 1, a.kv_len[s]);
    if (len < 0) len = 0;
    int chunk = (len + a.n_split - 1) / a.n_split;
    chunk = (chunk + ADW_KT - 1) / ADW_KT * ADW_KT;
    const int k0 = min(len, split * chunk), k1 = min(len, k0 + chunk);
    const int n_kt = (k1 - k0 + ADW_KT - 1) / ADW_KT;
    const int *pages = a.page_idx + a.page_indptr[s];
    const int p0 = k0 / a.B;
    const int np = k1 > k0 ? (k1 - 1) / a.B - p0 + 1 : 0;
    const bool pg_sh = np <= ADW_PMAX;
    if (pg_sh)
        for (int i = lane; i < np; i += 32) pg_s[i] = pages[p0 + i];
    __syncwarp();
    const size_t row_stride = (size_t)a.NKV * D;

    uint32_t qf[D / 16][4];
    adt_load_q<D>(a.q + ((size_t)t * a.NH + (size_t)kvh * G) * D, G, lane, qf);

    /* LEAN, pages a multiple of 16 tokens: a tile of 16 keys (k0 is a multiple of 16) lies in one page,
     * so the page is looked up once per tile and a lane's rows are fixed strides from its first one,
     * where the general loop divides by the page size for every 16-byte copy */
    const bool tile_pg = LEAN && a.B % ADW_KT == 0;
    auto issue = [&](int it, int st) {
        bf16 *ks = stg + st * STAGE, *vs = ks + ADW_KT * LD;
        const int kt = k0 + it * ADW_KT;
        if (tile_pg) {
            constexpr int CPR = D / 8, RPI = 32 / CPR; /* 16-byte chunks per row, rows per pass */
            const int pi = kt / a.B;
            const int page = pg_sh ? pg_s[pi - p0] : pages[pi];
            const bool pok = page >= 0 && page < a.n_page;
            const int c = lane % CPR, r0 = lane / CPR;
            const size_t base =
                pok ? ((size_t)page * a.B + (kt - pi * a.B) + r0) * row_stride + (size_t)kvh * D + (size_t)c * 8 : 0;
#pragma unroll
            for (int j = 0; j < ADW_KT / RPI; j++) {
                const int r = r0 + j * RPI;
                const bool ok = pok && kt + r < k1;
                const size_t off = ok ? base + (size_t)(j * RPI) * row_stride : 0;
                cp_async16(ks + r * LD + c * 8, a.kc + off, ok);
                cp_async16(vs + r * LD + c * 8, a.vc + off, ok);
                if (c == 0) row_ok[st * ADW_KT + r] = ok;
            }
            return;
        }
        /* attn_copy_chunk's work, written out: called here, nvcc moves this kernel's shared-memory
         * address arithmetic to 64 bits (+20 to +54 PTX instructions per instance). In v4 and the
         * prefill it changes only the instruction choice (PTX compared): the page offset as key -
         * (key / B) * B reuses the quotient where their loops computed key % B, the same integer */
#pragma unroll 4
        for (int i = lane; i < ADW_KT * (D / 8); i += 32) {
            int r = i / (D / 8), c = i % (D / 8), key = kt + r;
            bool ok = false;
            size_t off = 0;
            if (key < k1) {
                int pi = key / a.B;
                int page = pg_sh ? pg_s[pi - p0] : pages[pi];
                ok = page >= 0 && page < a.n_page;
                if (ok) off = ((size_t)page * a.B + key % a.B) * row_stride + (size_t)kvh * D + (size_t)c * 8;
            }
            cp_async16(ks + r * LD + c * 8, a.kc + off, ok);
            cp_async16(vs + r * LD + c * 8, a.vc + off, ok);
            if (c == 0) row_ok[st * ADW_KT + r] = ok;
        }
    };

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* rows qr and qr + 8 */

#pragma unroll
    for (int j = 0; j < NST - 1; j++) {
        if (j < n_kt) issue(j, j);
        cp_async_commit();
    }
    for (int it = 0; it < n_kt; it++) {
        const int st = it % NST;
        {
            const int nx = it + NST - 1; /* into the stage tile it - 1 left, freed by the __syncwarp below */
            if (nx < n_kt) issue(nx, nx % NST);
            cp_async_commit();
        }
        cp_async_wait<NST - 1>(); /* tile it has landed (this lane's copies) */
        __syncwarp();             /* ... and every lane's, with row_ok */
        const int kbase = k0 + it * ADW_KT;
        const bf16 *ks = stg + st * STAGE;
        if (!LEAN)
            adt_warp_keys<D, LD>(ks, ks + ADW_KT * LD, 0, row_ok + st * ADW_KT, kbase, k1, a.scale_log2, qf, lane, o, m0,
                                 m1, l0, l1);
        else if (G > 8)
            adt_warp_keys<D, LD, true, true>(ks, ks + ADW_KT * LD, 0, row_ok + st * ADW_KT, kbase, k1, a.scale_log2, qf,
                                             lane, o, m0, m1, l0, l1);
        else /* rows qr + 8 are padding */
            adt_warp_keys<D, LD, false, true>(ks, ks + ADW_KT * LD, 0, row_ok + st * ADW_KT, kbase, k1, a.scale_log2, qf,
                                              lane, o, m0, m1, l0, l1);
        __syncwarp(); /* stage st is free for tile it + NST */
    }
    cp_async_wait<0>();

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const size_t oi0 = (size_t)t * a.NH + (size_t)kvh * G + qr, oi1 = oi0 + 8;
    const bool w0 = qr < G, w1 = qr + 8 < G;
    if (a.n_split == 1) {
        const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            if (w0) *(__nv_bfloat162 *)(a.out + oi0 * D + nd * 8 + qc) = __floats2bfloat162_rn(o[nd][0] * i0, o[nd][1] * i0);
            if (w1) *(__nv_bfloat162 *)(a.out + oi1 * D + nd * 8 + qc) = __floats2bfloat162_rn(o[nd][2] * i1, o[nd][3] * i1);
        }
    } else { /* k_attn_merge's record: the unnormalised O, m, l */
        float *pp0 = a.part + ((size_t)split * a.n_tok * a.NH + oi0) * (D + 2);
        float *pp1 = a.part + ((size_t)split * a.n_tok * a.NH + oi1) * (D + 2);
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            if (w0) *(float2 *)(pp0 + nd * 8 + qc) = make_float2(o[nd][0], o[nd][1]);
            if (w1) *(float2 *)(pp1 + nd * 8 + qc) = make_float2(o[nd][2], o[nd][3]);
        }
        if ((lane & 3) == 0) {
            if (w0) {
                pp0[D] = m0;
                pp0[D + 1] = l0;
            }
            if (w1) {
                pp1[D] = m1;
                pp1[D + 1] = l1;
            }
        }
    }
}

template <int D, int NST, bool LEAN>
static int adw_launch(struct lb_cu *c, const attn_args &a, size_t n_items, struct lb_err *err)
{
    const size_t bytes = adw_smem_bytes<D, NST>();
    LB_CU(cudaFuncSetAttribute(k_attn_decode_w<D, NST, LEAN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    LB_CU(cudaFuncSetAttribute(k_attn_decode_w<D, NST, LEAN>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    k_attn_decode_w<D, NST, LEAN><<<(unsigned)((n_items + ADW_WPB - 1) / ADW_WPB), ADW_WPB * 32, bytes, c->stream>>>(a);
    LB_CU_LAUNCH();
    return 0;
}

/* v5's instance for the settings: LB_CUDA_ATTN_DEC_NST (2, 3 or 4 stages), LB_CUDA_ATTN_DEC_LEAN */
template <int D>
static int adw_pick(struct lb_cu *c, const attn_args &a, size_t n_items, struct lb_err *err)
{
    const int nst = c->attn_dec_nst;
    if (c->attn_dec_lean)
        return nst == 2 ? adw_launch<D, 2, true>(c, a, n_items, err)
               : nst == 4 ? adw_launch<D, 4, true>(c, a, n_items, err)
                          : adw_launch<D, 3, true>(c, a, n_items, err);
    return nst == 2 ? adw_launch<D, 2, false>(c, a, n_items, err)
           : nst == 4 ? adw_launch<D, 4, false>(c, a, n_items, err)
                      : adw_launch<D, 3, false>(c, a, n_items, err);
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
    a.B_shift = -1;
    for (int sh = 0; sh < 31; sh++)
        if ((1 << sh) == a.B) a.B_shift = sh;
    a.n_page = c->s.n_page;
    a.scale_log2 = at.scale * 1.4426950408889634f;

    /* v2: sequences with >= 2 query rows (prefill chunks) go to the tensor-core kernel; the SIMT
     * kernel below then takes only the single-row (decode) sequences. */
    const int tc = c->attn_variant >= 2 && D % 16 == 0 && D <= ATC_DMAX && at.n_seq >= 1;
    /* the prefill kernel's tile list and launch; none when the caller says every sequence has one
     * row (max_q 1: a decode step, where its grid of T / 16 + S blocks would only exit) */
    const int pre = tc && at.max_q != 1;
    a.skip_multi = tc;
    a.dec_order = 0;
    /* Enough blocks to fill the GPU twice over; cap the split count at 64. */
    size_t base = T * NKV * a.n_hgrp, want = (size_t)c->n_sm * 2;
    int n_split = base >= want ? 1 : (int)((want + base - 1) / base);
    if (n_split > 64) n_split = 64;
    a.n_split = n_split;
    /* v3: the single-row (decode) sequences go to k_attn_decode, a grid over sequences; the
     * v1/v2 SIMT kernel is then not launched at all. */
    const int dec = tc && c->attn_variant >= 3;
    const int GH = a.G <= 4 ? 4 : 8;
    const int n_hg_dec = (a.G + GH - 1) / GH;
    /* v4: the tensor-core decode when its shapes apply (LB_CUDA_ATTN=3 keeps k_attn_decode) */
    const int dec4 = dec && c->attn_variant >= 4 && (D == 64 || D == 128) && a.G <= 16;
    /* v5 (one warp per item): at 6 everywhere; at 5 (the default) where one wave of 8 warps per SM
     * needs no KV split (H100 run 39: 463 against v4's 536 us at 512 sequences x 640 keys, but 147
     * against 130 us at 8 x 8192, split), else v4 */
    const int dec5 = dec4 && (c->attn_variant == 6 || (c->attn_variant == 5 && S * NKV >= (size_t)c->n_sm * 8));
    if (dec) {
        /* v3: about two waves of 3 blocks per SM; v4: two waves of 2 blocks per SM; v5: one wave
         * of 8 warps per SM */
        size_t base_d = S * NKV * (dec4 ? 1 : n_hg_dec), want_d = (size_t)c->n_sm * (dec5 ? 8 : dec4 ? 4 : 6);
        n_split = base_d >= want_d ? 1 : (int)((want_d + base_d - 1) / base_d);
        if (n_split > 64) n_split = 64;
        a.n_split = n_split;
    }
    size_t n_tile_max = pre ? (T + 15) / 16 + S : 0;
    size_t tiles_bytes = (n_tile_max * sizeof(atc_tile) + 255) / 256 * 256;
    size_t part_bytes = n_split > 1 ? (size_t)n_split * T * NH * (D + 2) * sizeof(float) : 0;
    void *ws = NULL;
    if (pre || n_split > 1) LB_TRY(lb_cu_ws(c, 256 + tiles_bytes + part_bytes, &ws, err));
    if (n_split > 1) a.part = (float *)((char *)ws + 256 + tiles_bytes);
    if (pre) {
        int *d_count = (int *)ws;
        atc_tile *tiles = (atc_tile *)((char *)ws + 256);
        k_attn_tiles<<<1, 1024, 0, c->stream>>>(a.q_indptr, at.n_seq, tiles, d_count);
        LB_CU_LAUNCH();
        dim3 g((unsigned)n_tile_max, (unsigned)(NKV * ((a.G + 3) / 4)));
        if (c->attn_variant >= 3 && c->attn_prefill >= 3 && (D == 64 || D == 128)) {
            const bool lean = c->attn_prefill >= 4;
            if (D == 64) LB_TRY((lean ? afa_launch<64, true>(c, a, g, tiles, d_count, err)
                                      : afa_launch<64, false>(c, a, g, tiles, d_count, err)));
            else LB_TRY((lean ? afa_launch<128, true>(c, a, g, tiles, d_count, err)
                              : afa_launch<128, false>(c, a, g, tiles, d_count, err)));
        } else {
            atc_smem_layout L = atc_layout(D);
            if (L.bytes > 48 * 1024)
                LB_CU(cudaFuncSetAttribute(k_attn_prefill_tc, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L.bytes));
            k_attn_prefill_tc<<<g, 128, L.bytes, c->stream>>>(a, tiles, d_count);
            LB_CU_LAUNCH();
        }
    }
    int dpl = D <= 32 ? 1 : D <= 64 ? 2 : D <= 128 ? 4 : 8;
    if (dec5) {
        const size_t n_items = S * NKV * n_split;
        if (D == 64) LB_TRY(adw_pick<64>(c, a, n_items, err));
        else LB_TRY(adw_pick<128>(c, a, n_items, err));
        if (n_split > 1) {
            k_attn_merge<<<dim3((unsigned)T, (unsigned)NH), D < 128 ? D : 128, 0, c->stream>>>(a);
            LB_CU_LAUNCH();
        }
        return 0;
    }
    if (dec4) {
        a.dec_order = c->attn_dec_order && S <= 65535;
        dim3 gd((unsigned)S, (unsigned)NKV, (unsigned)n_split);
        if (a.dec_order) gd = dim3((unsigned)NKV, (unsigned)S, (unsigned)n_split);
        if (D == 64) LB_TRY(adt_launch<64>(c, a, gd, err));
        else LB_TRY(adt_launch<128>(c, a, gd, err));
        if (n_split > 1) {
            k_attn_merge<<<dim3((unsigned)T, (unsigned)NH), D < 128 ? D : 128, 0, c->stream>>>(a);
            LB_CU_LAUNCH();
        }
        return 0;
    }
    if (dec) {
        a.dec_order = c->attn_dec_order && S <= 65535;
        dim3 gd((unsigned)S, (unsigned)(NKV * n_hg_dec), (unsigned)n_split);
        if (a.dec_order) gd = dim3((unsigned)(NKV * n_hg_dec), (unsigned)S, (unsigned)n_split);
        if (GH == 4) {
            if (dpl == 1) LB_TRY((adc_launch<1, 4>(c, a, gd, err)));
            else if (dpl == 2) LB_TRY((adc_launch<2, 4>(c, a, gd, err)));
            else LB_TRY((adc_launch<4, 4>(c, a, gd, err)));
        } else {
            if (dpl == 1) LB_TRY((adc_launch<1, 8>(c, a, gd, err)));
            else if (dpl == 2) LB_TRY((adc_launch<2, 8>(c, a, gd, err)));
            else LB_TRY((adc_launch<4, 8>(c, a, gd, err)));
        }
        if (n_split > 1) {
            k_attn_merge<<<dim3((unsigned)T, (unsigned)NH), D < 128 ? D : 128, 0, c->stream>>>(a);
            LB_CU_LAUNCH();
        }
        return 0;
    }
    dim3 grid((unsigned)T, (unsigned)(NKV * a.n_hgrp), (unsigned)n_split);
    switch (dpl) {
    case 1: k_attn_paged<1><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    case 2: k_attn_paged<2><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    case 4: k_attn_paged<4><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    default: k_attn_paged<8><<<grid, ATT_NW * 32, 0, c->stream>>>(a); break;
    }
    LB_CU_LAUNCH();
    if (n_split > 1) {
        k_attn_merge<<<dim3((unsigned)T, (unsigned)NH), D < 128 ? D : 128, 0, c->stream>>>(a);
        LB_CU_LAUNCH();
    }
    return 0;
}
