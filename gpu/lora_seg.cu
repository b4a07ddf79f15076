/* lora_seg.cu — mixed-LoRA over adapter segments: y_j += scale * (x A_j^T) B_j^T per segment.
 *
 * Tokens of a step come grouped in S segments (seg_start[S+1]); segment s uses adapter slot
 * seg_slot[s] (-1: base model, no LoRA work). Each (slot, layer, target) module has its own rank
 * R (no padding to the largest rank); A is [R, K], B is [N, R], bf16, in slot memory.
 *
 * Three launches per op:
 *   k_lora_tiles   one block: cuts the segments into tiles of <= LORA_TM tokens of one segment
 *                  (slot -1 and empty segments give none) and writes the tile list + count to
 *                  the workspace. The grid of the next kernels is the bound T/TM + S; blocks past
 *                  the count exit at once. This is the SGMV idea (one block works on many tokens
 *                  that share one adapter, so A and B are read once per tile, not once per token);
 *                  with one-token segments (decode, all-distinct adapters) a tile is one token
 *                  and the kernels degrade gracefully to BGMV (each token reads its own A/B).
 *   k_lora_shrink  grid (tiles, targets, K splits): v[t, r] = sum_k x[t,k] A[r,k] for the tile's
 *                  tokens, all ranks of the module, over one K range, through shared memory
 *                  (x tile 16x64 and A tile Rx64 per step). The K split fills the GPU when there
 *                  are few tiles (decode); partial sums go to separate workspace planes, summed in
 *                  a fixed order by the expand, so results are deterministic. All targets of the
 *                  op share x (q/k/v, gate/up): one launch, x read from L2 for the 2nd/3rd target.
 *   k_lora_expand  grid (tiles, N/256, targets): sums the v planes of the tile into shared
 *                  memory (times scale), each thread owns one output column n: reads B[n, :R]
 *                  once and adds sum_r v[t, r] B[n, r] into y[t, n] for every token of the tile.
 * Arithmetic in fp32; y is read and written once per tile (one rounding to its dtype).
 * op.act (gate/up then the SwiGLU, forward.c's LB_LORA_ACT): k_lora_expand_act instead of the
 * expand when every row of the step has an adapter; otherwise this op, then the SwiGLU kernel.
 * Variants: v3 (default): the tile list is built once per step and cached (k_lora_tiles runs on
 * the first op after an upload; the other ops of the step reuse it: two launches per op, not
 * three), k_lora_shrink_tc, and k_lora_expand_v3 (bf16x2 y, y loads issued before the barrier;
 * LB_CUDA_LORA_EXPAND=2 keeps k_lora_expand_vec). Loads (LB_CUDA_LORA_ASYNC, see lora_stage): by
 * default the shrink stages x and A with cp.async (all copies of a slice in flight; before, each
 * thread's 16-byte loads ran one after another, 8 dependent round trips per slice at rank 16 and
 * 20 at rank 64); 0 restores the shrink's loads of runs 1-22. The two are separate instances
 * of the kernel (template ASYNC): one kernel with a run-time mode took 124 registers instead of
 * 96. (Double-buffering the slices was tried in runs 23-24: no faster, removed.) v2 (LB_CUDA_LORA=2) k_lora_shrink_tc (tensor
 * cores, WMMA) + k_lora_expand_vec (16-byte B rows), needs bf16 x and K % 8 == 0; v1
 * (LB_CUDA_LORA=1, or f32 x) the SIMT k_lora_shrink + k_lora_expand. v1 on H100 (bench/results/lora_bench_v1_h100.txt), decode T=256 16x16 r=16:
 * qkv 125 us vs 43 us base GEMMs: latency-bound (few blocks, 22 serial K steps each).
 *
 * PDL (default on Hopper, LB_CUDA_LORA_PDL=0 off): on steps of <= 512 tokens the v3 shrink and
 * expand (or the act expand) are programmatic dependent launches; the expand's blocks load their
 * tile, y and module and prefetch B while the shrink runs (H100 run 42: workload 1's decode ops
 * 5-18% faster, -14 us per layer).
 *
 * Test: build/tests/test_ops (lora cases: distinct/uniform/Zipf/identical/skewed/empty/base rows,
 * ranks 1..128). Bench: bench/lora_bench (issue 5). */
#include <math.h>
#include <stdio.h>

#include <mma.h>

#include "common.cuh"

#define LORA_TM 16   /* tokens per tile */
#define LORA_KC 64   /* K step of the shrink */
#define LORA_RMAX 128
#define LORA_SPLIT_MAX 16 /* K splits of the shrink at most (v planes the expand sums) */

struct lora_tile {
    int seg, t0, tn, slot;
};

/* One block of 1024 threads. Each thread takes a contiguous run of segments, counts its tiles,
 * a block-wide exclusive scan gives its first tile index, then it writes them. */
static __global__ void __launch_bounds__(1024) k_lora_tiles(const int32_t *seg_start, const int32_t *seg_slot,
                                                            int n_seg, lora_tile *tiles, int *n_tiles)
{
    __shared__ int warp_tot[32];
    int tid = threadIdx.x, nt = blockDim.x;
    int per = (n_seg + nt - 1) / nt;
    int s0 = min(n_seg, tid * per), s1 = min(n_seg, s0 + per);
    int cnt = 0;
    for (int s = s0; s < s1; s++) {
        int len = seg_start[s + 1] - seg_start[s];
        if (seg_slot[s] >= 0 && len > 0) cnt += (len + LORA_TM - 1) / LORA_TM;
    }
    /* inclusive scan within the warp, then over warp totals */
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
        warp_tot[lane] = x - v; /* exclusive */
    }
    __syncthreads();
    int at = warp_tot[w] + inc - cnt;
    for (int s = s0; s < s1; s++) {
        int a = seg_start[s], len = seg_start[s + 1] - a;
        if (seg_slot[s] < 0 || len <= 0) continue;
        for (int t0 = a; t0 < a + len; t0 += LORA_TM) {
            lora_tile tl;
            tl.seg = s;
            tl.t0 = t0;
            tl.tn = min(LORA_TM, a + len - t0);
            tl.slot = seg_slot[s];
            tiles[at++] = tl;
        }
    }
    if (tid == nt - 1) *n_tiles = at;
}

struct lora_args {
    const struct lb_cu_lora_mod *mods; /* [n_slot][n_layer][LB_T_COUNT] */
    const lora_tile *tiles;
    const int *n_tiles;
    float *v;        /* [n_split][n_tgt][T][RMAX] */
    int n_slot, n_layer, layer, n_tok, n_in, n_split, k_chunk, r_stride;
    int n_tgt, tgt[3], n_out[3];
    void *y[3];
    int set; /* 1 (k_lora_expand_v3 only): y = the LoRA term, not y += it */
    int async; /* LB_CUDA_LORA_ASYNC: which k_lora_shrink_tc runs: 0 stages through registers (runs
                * 1-22), 1 (default) cp.async staging */
};

template <typename T>
static __global__ void __launch_bounds__(256) k_lora_shrink(lora_args a, const T *x)
{
    __shared__ float x_s[LORA_TM][LORA_KC + 1];
    __shared__ float a_s[LORA_RMAX][LORA_KC + 1];
    if ((int)blockIdx.x >= *a.n_tiles) return;
    lora_tile tl = a.tiles[blockIdx.x];
    int j = blockIdx.y, split = blockIdx.z;
    if (tl.slot >= a.n_slot) return;
    struct lb_cu_lora_mod md = a.mods[((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT + a.tgt[j]];
    int R = md.rank;
    if (R <= 0) return;
    int kb = split * a.k_chunk, ke = min(a.n_in, kb + a.k_chunk);
    int n_out_el = tl.tn * R;
    float acc[LORA_TM * LORA_RMAX / 256];
#pragma unroll
    for (int i = 0; i < LORA_TM * LORA_RMAX / 256; i++) acc[i] = 0.0f;

    for (int k0 = kb; k0 < ke; k0 += LORA_KC) {
        int kn = min(LORA_KC, ke - k0);
        for (int i = threadIdx.x; i < LORA_TM * LORA_KC; i += blockDim.x) {
            int t = i / LORA_KC, k = i % LORA_KC;
            x_s[t][k] = (t < tl.tn && k < kn) ? ldf(&x[(size_t)(tl.t0 + t) * a.n_in + k0 + k]) : 0.0f;
        }
        for (int i = threadIdx.x; i < R * LORA_KC; i += blockDim.x) {
            int r = i / LORA_KC, k = i % LORA_KC;
            a_s[r][k] = k < kn ? __bfloat162float(md.a[(size_t)r * a.n_in + k0 + k]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < LORA_TM * LORA_RMAX / 256; i++) {
            int o = threadIdx.x + 256 * i;
            if (o < n_out_el) {
                int t = o / R, r = o % R;
                float s = 0.0f;
#pragma unroll 16
                for (int k = 0; k < LORA_KC; k++) s += x_s[t][k] * a_s[r][k];
                acc[i] += s;
            }
        }
        __syncthreads();
    }
    float *v = a.v + ((size_t)split * a.n_tgt + j) * a.n_tok * a.r_stride;
#pragma unroll
    for (int i = 0; i < LORA_TM * LORA_RMAX / 256; i++) {
        int o = threadIdx.x + 256 * i;
        if (o < n_out_el) {
            int t = o / R, r = o % R;
            v[(size_t)(tl.t0 + t) * a.r_stride + r] = acc[i];
        }
    }
}

template <typename T>
static __global__ void __launch_bounds__(256) k_lora_expand(lora_args a)
{
    __shared__ float v_s[LORA_TM][LORA_RMAX];
    if ((int)blockIdx.x >= *a.n_tiles) return;
    lora_tile tl = a.tiles[blockIdx.x];
    int j = blockIdx.z;
    int N = a.n_out[j];
    int n0 = blockIdx.y * 256;
    if (n0 >= N || tl.slot >= a.n_slot) return;
    struct lb_cu_lora_mod md = a.mods[((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT + a.tgt[j]];
    int R = md.rank;
    if (R <= 0) return;
    for (int i = threadIdx.x; i < tl.tn * R; i += blockDim.x) {
        int t = i / R, r = i % R;
        float s = 0.0f;
        for (int sp = 0; sp < a.n_split; sp++)
            s += a.v[(((size_t)sp * a.n_tgt + j) * a.n_tok + tl.t0 + t) * a.r_stride + r];
        v_s[t][r] = s * md.scale;
    }
    __syncthreads();
    int n = n0 + threadIdx.x;
    if (n >= N) return;
    float acc[LORA_TM];
#pragma unroll
    for (int t = 0; t < LORA_TM; t++) acc[t] = 0.0f;
    const bf16 *b = md.b + (size_t)n * R;
    for (int r = 0; r < R; r++) {
        float bv = __bfloat162float(b[r]);
#pragma unroll
        for (int t = 0; t < LORA_TM; t++) acc[t] += v_s[t][r] * bv;
    }
    T *y = (T *)a.y[j];
#pragma unroll
    for (int t = 0; t < LORA_TM; t++) {
        if (t < tl.tn) {
            T *p = &y[(size_t)(tl.t0 + t) * N + n];
            stf(p, ldf(p) + acc[t]);
        }
    }
}

/* v2 shrink: tensor cores (WMMA 16x16x16 bf16 -> fp32). The block stages a 16-token x KC slice
 * of x and the RP x KC slice of A (RP = R rounded up to 16, zero rows beyond R; zero token rows
 * beyond the tile) in shared memory with 16-byte loads, then 4 warps split the KC steps, each
 * holding RP/16 accumulator fragments (tokens x ranks); the 4 warps' partial tiles are summed
 * through shared memory at the end. Needs x bf16 and K % 8 == 0 (else v1 is used). */
#define LORA2_KC 256
#define LORA2_LD (LORA2_KC + 8) /* padded row, in elements: 528 bytes, a multiple of 16 and 32-byte friendly */

static size_t lora2_smem_bytes(int max_rank)
{
    int rp = (max_rank + 15) & ~15;
    return (size_t)(16 + rp) * LORA2_LD * sizeof(bf16);
}

/* Stages one K slice [k0, k0 + kn) of the tile's x rows and A's RP rows into shared memory (xs, as:
 * 16 + RP rows of LORA2_LD; zero rows and columns past the tile, R and kn). async 0: 16-byte
 * loads through registers; each thread's loads run one after the other (a load, its store to shared
 * memory, the next load): 4 + RP/4 dependent DRAM round trips per 256-wide slice for 128 threads,
 * which is what held the decode shrink at a fifth of the memory rate (run 12 ncu). async 1:
 * cp.async, every copy of the slice in flight at once (one round trip), committed; the caller
 * waits. */
template <int ASYNC>
static __device__ __forceinline__ void lora_stage(const bf16 *x, const lora_tile &tl, int n_in, const bf16 *A, int R,
                                                  int RP, int k0, int kn, bf16 *xs, bf16 *as)
{
    const int nv = ((kn + 15) & ~15) / 8;
    if (ASYNC) {
        for (int i = threadIdx.x; i < 16 * nv; i += blockDim.x) {
            const int t = i / nv, c = (i % nv) * 8;
            const bool ok = t < tl.tn && c < kn;
            cp_async16(xs + t * LORA2_LD + c, ok ? x + (size_t)(tl.t0 + t) * n_in + k0 + c : x, ok);
        }
        for (int i = threadIdx.x; i < RP * nv; i += blockDim.x) {
            const int r = i / nv, c = (i % nv) * 8;
            const bool ok = r < R && c < kn;
            cp_async16(as + r * LORA2_LD + c, ok ? A + (size_t)r * n_in + k0 + c : A, ok);
        }
        cp_async_commit();
    } else {
        for (int i = threadIdx.x; i < 16 * nv; i += blockDim.x) {
            const int t = i / nv, c = (i % nv) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (t < tl.tn && c < kn) v = *(const uint4 *)(x + (size_t)(tl.t0 + t) * n_in + k0 + c);
            *(uint4 *)(xs + t * LORA2_LD + c) = v;
        }
        for (int i = threadIdx.x; i < RP * nv; i += blockDim.x) {
            const int r = i / nv, c = (i % nv) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < R && c < kn) v = *(const uint4 *)(A + (size_t)r * n_in + k0 + c);
            *(uint4 *)(as + r * LORA2_LD + c) = v;
        }
    }
}

/* The partial v = x A^T of one 16-token tile over the K range [kb, ke), on tensor cores, for
 * k_lora_shrink_tc (NW = 4 warps). Per LORA2_KC slice the block stages the tile's x rows and A's
 * RP rows in shared memory (lora_stage), and its NW warps take every NW-th 16-wide K step.
 * On return (after a barrier) sm holds red [NW][16][RP] fp32, each warp's partial sums; the
 * caller adds them up in a fixed order. The order of the tensor-core products is the same for
 * both async modes, so v is too. */
template <int NW, int ASYNC>
static __device__ __forceinline__ void lora_tile_partials(const bf16 *x, const lora_tile &tl, int n_in,
                                                          const struct lb_cu_lora_mod &md, int kb, int ke,
                                                          unsigned char *sm)
{
    using namespace nvcuda;
    const int R = md.rank, RP = (R + 15) & ~15, nrb = RP / 16, warp = threadIdx.x / 32;
    float *red = (float *)sm;       /* [NW][16][RP], reused after the K loop */
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[LORA_RMAX / 16];
#pragma unroll
    for (int i = 0; i < LORA_RMAX / 16; i++) wmma::fill_fragment(acc[i], 0.0f);

    bf16 *xs = (bf16 *)sm;         /* [16][LORA2_LD] */
    bf16 *as = xs + 16 * LORA2_LD; /* [RP][LORA2_LD] */
    for (int k0 = kb; k0 < ke; k0 += LORA2_KC) {
        const int kn = min(LORA2_KC, ke - k0); /* a multiple of 8 */
        const int kn16 = (kn + 15) & ~15;
        lora_stage<ASYNC>(x, tl, n_in, md.a, R, RP, k0, kn, xs, as);
        if (ASYNC) cp_async_wait<0>();
        __syncthreads();
        for (int ks = warp * 16; ks < kn16; ks += NW * 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, xs + ks, LORA2_LD);
#pragma unroll
            for (int i = 0; i < LORA_RMAX / 16; i++) {
                if (i < nrb) {
                    /* B[k][n] = A[r=n][k]: A's rows seen column-major are A^T */
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
                    wmma::load_matrix_sync(fb, as + i * 16 * LORA2_LD + ks, LORA2_LD);
                    wmma::mma_sync(acc[i], fa, fb, acc[i]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < LORA_RMAX / 16; i++)
        if (i < nrb) wmma::store_matrix_sync(red + warp * 16 * RP + i * 16, acc[i], RP, wmma::mem_row_major);
    __syncthreads();
}

/* PDL (LB_CUDA_LORA_PDL): launched as a programmatic dependent launch, the shrink waits for the
 * kernel ahead at once (it reads the tile list, which may have just been built), then lets the
 * expand launch: the expand's blocks take the SM slots the shrink frees and load what they can
 * before they wait for v. */
template <int ASYNC, int PDL>
static __global__ void __launch_bounds__(128) k_lora_shrink_tc(lora_args a, const bf16 *x)
{
    extern __shared__ __align__(128) unsigned char sm_raw[];
    if (PDL) {
        pdl_wait();
        pdl_trigger();
    }
    const float *red = (const float *)sm_raw; /* [4][16][RP] after lora_tile_partials */
    /* grid (targets, tiles, splits): the blocks of one tile's targets run back to back, so x is
     * read from DRAM once and from L2 for the 2nd and 3rd target (q/k/v, gate/up share x) */
    if ((int)blockIdx.y >= *a.n_tiles) return;
    lora_tile tl = a.tiles[blockIdx.y];
    int j = blockIdx.x, split = blockIdx.z;
    if (tl.slot >= a.n_slot) return;
    int tgt = j == 0 ? a.tgt[0] : j == 1 ? a.tgt[1] : a.tgt[2];
    struct lb_cu_lora_mod md = a.mods[((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT + tgt];
    int R = md.rank;
    if (R <= 0) return;
    const int RP = (R + 15) & ~15;
    const int kb = split * a.k_chunk, ke = min(a.n_in, kb + a.k_chunk);
    lora_tile_partials<4, ASYNC>(x, tl, a.n_in, md, kb, ke, sm_raw);
    float *v = a.v + ((size_t)split * a.n_tgt + j) * a.n_tok * a.r_stride;
    for (int i = threadIdx.x; i < tl.tn * R; i += blockDim.x) {
        int t = i / R, r = i % R;
        float sum = red[(0 * 16 + t) * RP + r] + red[(1 * 16 + t) * RP + r] + red[(2 * 16 + t) * RP + r] +
                    red[(3 * 16 + t) * RP + r];
        v[(size_t)(tl.t0 + t) * a.r_stride + r] = sum;
    }
}

/* v2 expand: as k_lora_expand, with B rows read 16 bytes at a time when R % 8 == 0. */
template <typename T>
static __global__ void __launch_bounds__(256) k_lora_expand_vec(lora_args a)
{
    __shared__ float v_s[LORA_TM][LORA_RMAX];
    if ((int)blockIdx.x >= *a.n_tiles) return;
    lora_tile tl = a.tiles[blockIdx.x];
    int j = blockIdx.z;
    int N = j == 0 ? a.n_out[0] : j == 1 ? a.n_out[1] : a.n_out[2];
    int n0 = blockIdx.y * 256;
    if (n0 >= N || tl.slot >= a.n_slot) return;
    int tgt = j == 0 ? a.tgt[0] : j == 1 ? a.tgt[1] : a.tgt[2];
    struct lb_cu_lora_mod md = a.mods[((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT + tgt];
    int R = md.rank;
    if (R <= 0) return;
    for (int i = threadIdx.x; i < tl.tn * R; i += blockDim.x) {
        int t = i / R, r = i % R;
        float sum = 0.0f;
        for (int sp = 0; sp < a.n_split; sp++)
            sum += a.v[(((size_t)sp * a.n_tgt + j) * a.n_tok + tl.t0 + t) * a.r_stride + r];
        v_s[t][r] = sum * md.scale;
    }
    __syncthreads();
    int n = n0 + threadIdx.x;
    if (n >= N) return;
    float acc[LORA_TM];
#pragma unroll
    for (int t = 0; t < LORA_TM; t++) acc[t] = 0.0f;
    const bf16 *b = md.b + (size_t)n * R;
    if ((R & 7) == 0) {
        for (int r0 = 0; r0 < R; r0 += 8) {
            uint4 u = *(const uint4 *)(b + r0);
            const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 f = __bfloat1622float2(h[e]);
#pragma unroll
                for (int t = 0; t < LORA_TM; t++) acc[t] += v_s[t][r0 + 2 * e] * f.x + v_s[t][r0 + 2 * e + 1] * f.y;
            }
        }
    } else {
        for (int r = 0; r < R; r++) {
            float bv = __bfloat162float(b[r]);
#pragma unroll
            for (int t = 0; t < LORA_TM; t++) acc[t] += v_s[t][r] * bv;
        }
    }
    T *y = (T *)(j == 0 ? a.y[0] : j == 1 ? a.y[1] : a.y[2]);
#pragma unroll
    for (int t = 0; t < LORA_TM; t++) {
        if (t < tl.tn) {
            T *p = &y[(size_t)(tl.t0 + t) * N + n];
            stf(p, ldf(p) + acc[t]);
        }
    }
}

/* v3 expand (bf16 y, every N even): a thread owns 2 adjacent columns (bf16x2 y accesses: a warp
 * reads 128 contiguous bytes per token) for one half of the tile's tokens (8 rows); a block of
 * 256 threads covers 256 columns x 16 tokens. The thread's y values are loaded into registers
 * before the block waits on the module table, the v planes and B, so that round trip overlaps
 * the y reads (v2 read y only after the barrier: a second dependent round trip per block). */
#define LORA3_NC 256
#define LORA3_TH (LORA_TM / 2) /* tokens per thread */
/* Registers decide this kernel's speed: loading B's first 32 ranks before the barrier (run 23) took
 * it from 64 registers to 177, one block per SM instead of four, and made every case 1.3-2.5x
 * slower; keep it at 64 (4 blocks, 32 warps per SM). */
/* The expand's inner product for one thread: columns n and n + 1 (B rows b0 and b0 + R) against
 * the scaled v of tokens tb .. tb + LORA3_TH - 1 of the tile (v_s rows), fp32. */
static __device__ __forceinline__ void expand_pair(const bf16 *b0, const int R, const float (*v_s)[LORA_RMAX],
                                                   const int tb, float *acc0, float *acc1)
{
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++) acc0[t] = acc1[t] = 0.0f;
    const bf16 *b1 = b0 + R;
    if ((R & 7) == 0) {
#pragma unroll 1
        for (int r0 = 0; r0 < R; r0 += 8) {
            uint4 u0 = *(const uint4 *)(b0 + r0), u1 = *(const uint4 *)(b1 + r0);
            float f0[8], f1[8];
            const __nv_bfloat162 *h0 = (const __nv_bfloat162 *)&u0, *h1 = (const __nv_bfloat162 *)&u1;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 x0 = __bfloat1622float2(h0[e]), x1 = __bfloat1622float2(h1[e]);
                f0[2 * e] = x0.x;
                f0[2 * e + 1] = x0.y;
                f1[2 * e] = x1.x;
                f1[2 * e + 1] = x1.y;
            }
#pragma unroll
            for (int t = 0; t < LORA3_TH; t++) {
                float4 va = *(const float4 *)&v_s[tb + t][r0], vb = *(const float4 *)&v_s[tb + t][r0 + 4];
                acc0[t] += va.x * f0[0] + va.y * f0[1] + va.z * f0[2] + va.w * f0[3] + vb.x * f0[4] + vb.y * f0[5] +
                           vb.z * f0[6] + vb.w * f0[7];
                acc1[t] += va.x * f1[0] + va.y * f1[1] + va.z * f1[2] + va.w * f1[3] + vb.x * f1[4] + vb.y * f1[5] +
                           vb.z * f1[6] + vb.w * f1[7];
            }
        }
    } else {
#pragma unroll 1
        for (int r = 0; r < R; r++) {
            float x0 = __bfloat162float(b0[r]), x1 = __bfloat162float(b1[r]);
#pragma unroll
            for (int t = 0; t < LORA3_TH; t++) {
                acc0[t] += v_s[tb + t][r] * x0;
                acc1[t] += v_s[tb + t][r] * x1;
            }
        }
    }
}

/* The tile's v for target j (the K-split planes summed in a fixed order) times scale, into v_s. */
static __device__ __forceinline__ void expand_load_v(const lora_args &a, const lora_tile &tl, const int j, const int R,
                                                     const float scale, float (*v_s)[LORA_RMAX])
{
    for (int i = threadIdx.x; i < tl.tn * R; i += blockDim.x) {
        int t = i / R, r = i % R;
        float sum = 0.0f;
        for (int sp = 0; sp < a.n_split; sp++)
            sum += a.v[(((size_t)sp * a.n_tgt + j) * a.n_tok + tl.t0 + t) * a.r_stride + r];
        v_s[t][r] = sum * scale;
    }
}

/* B rows n and n + 1 (2R bf16 from b0) into L2, one prefetch per 128 bytes: the PDL expand issues
 * them before it waits for the shrink, so its B loads after the barrier do not go to DRAM */
static __device__ __forceinline__ void expand_prefetch_b(const bf16 *b0, const int R)
{
    for (int off = 0; off < 2 * R; off += 64) prefetch_l2(b0 + off);
}

/* PDL: launched as a programmatic dependent launch after the shrink (LB_CUDA_LORA_PDL), the block
 * reads its tile, y and the module table and prefetches its B rows (all complete before the shrink
 * started) while the shrink runs, and waits for it only before reading v or writing y. */
template <int PDL>
static __global__ void __launch_bounds__(256) k_lora_expand_v3(lora_args a)
{
    __shared__ __align__(16) float v_s[LORA_TM][LORA_RMAX];
    if ((int)blockIdx.x >= *a.n_tiles) return;
    const lora_tile tl = a.tiles[blockIdx.x];
    const int j = blockIdx.z;
    const int N = j == 0 ? a.n_out[0] : j == 1 ? a.n_out[1] : a.n_out[2];
    if ((int)blockIdx.y * LORA3_NC >= N || tl.slot >= a.n_slot) return;
    bf16 *y = (bf16 *)(j == 0 ? a.y[0] : j == 1 ? a.y[1] : a.y[2]);
    const int th = threadIdx.x / 128;                          /* token half */
    const int n = blockIdx.y * LORA3_NC + (threadIdx.x % 128) * 2;
    const int tb = th * LORA3_TH;                              /* first token (in the tile) of this thread */
    const int tn = max(0, min(LORA3_TH, tl.tn - tb));          /* tokens of this thread */
    const bool col_ok = n < N;                                 /* N even: n + 1 < N too */
    __nv_bfloat162 *yp = (__nv_bfloat162 *)(y + (size_t)(tl.t0 + tb) * N + n);
    const size_t ys = (size_t)N / 2;                           /* row stride in bf16x2 */
    __nv_bfloat162 yv[LORA3_TH];
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++) {
        yv[t] = __floats2bfloat162_rn(0.0f, 0.0f);
        if (!a.set && col_ok && t < tn) yv[t] = yp[t * ys];
    }
    const int tgt = j == 0 ? a.tgt[0] : j == 1 ? a.tgt[1] : a.tgt[2];
    const struct lb_cu_lora_mod md = a.mods[((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT + tgt];
    const int R = md.rank;
    if (PDL) {
        if (R > 0 && col_ok && tn > 0) expand_prefetch_b(md.b + (size_t)n * R, R);
        pdl_wait();
    }
    if (R <= 0) { /* block-uniform; set mode: the module is absent, its term is 0 */
        if (a.set && col_ok)
            for (int t = 0; t < tn; t++) yp[t * ys] = yv[t];
        return;
    }
    expand_load_v(a, tl, j, R, md.scale, v_s);
    __syncthreads();
    if (!col_ok || tn == 0) return;
    float acc0[LORA3_TH], acc1[LORA3_TH];
    expand_pair(md.b + (size_t)n * R, R, v_s, tb, acc0, acc1);
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++) {
        if (t < tn) {
            float2 f = __bfloat1622float2(yv[t]);
            yp[t * ys] = __floats2bfloat162_rn(f.x + acc0[t], f.y + acc1[t]);
        }
    }
}

/* The gate/up expand fused with the SwiGLU that follows it (op.act; n_tgt 2, every row of the step
 * in a tile, i.e. no base rows): the v3 block layout over gate's and up's columns at once; a
 * thread loads its gate and up values, adds both terms in fp32 and writes silu(g) * u over gate
 * (one rounding, where the separate ops round g + term and u + term to bf16 first). It replaces
 * the expand's y write-back of both targets and the whole SwiGLU pass: per element of F, 2 bf16
 * read and 1 written instead of 4 + 3. H100 runs 33-34 (lora_bench_run33_act_h100.txt): no faster
 * than the expand plus the SwiGLU kernel as an op (workload 1's decode shape 87.5 against 84.9 us;
 * slower at rank 64 and with one-token segments), being bound like the expand by each block's
 * chain of dependent loads, now over two targets' v planes, with half the blocks; yet workload 1
 * ran 0.4% faster with it (three samples each way): one launch fewer per decode layer. 80
 * registers at 3 blocks per SM (97 without the bound, 2 blocks). */
template <int PDL>
static __global__ void __launch_bounds__(256, 3) k_lora_expand_act(lora_args a)
{
    __shared__ __align__(16) float v_s[2][LORA_TM][LORA_RMAX];
    if ((int)blockIdx.x >= *a.n_tiles) return;
    const lora_tile tl = a.tiles[blockIdx.x];
    const int N = a.n_out[0];
    if ((int)blockIdx.y * LORA3_NC >= N || tl.slot >= a.n_slot) return;
    const int th = threadIdx.x / 128;
    const int n = blockIdx.y * LORA3_NC + (threadIdx.x % 128) * 2;
    const int tb = th * LORA3_TH;
    const int tn = max(0, min(LORA3_TH, tl.tn - tb));
    const bool col_ok = n < N;
    const size_t off = (size_t)(tl.t0 + tb) * N + n;
    __nv_bfloat162 *gp = (__nv_bfloat162 *)((bf16 *)a.y[0] + off);
    const __nv_bfloat162 *up = (const __nv_bfloat162 *)((const bf16 *)a.y[1] + off);
    const size_t ys = (size_t)N / 2;
    __nv_bfloat162 gv[LORA3_TH], uv[LORA3_TH];
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++)
        if (col_ok && t < tn) {
            gv[t] = gp[t * ys];
            uv[t] = up[t * ys];
        }
    const struct lb_cu_lora_mod *mt = a.mods + ((size_t)tl.slot * a.n_layer + a.layer) * LB_T_COUNT;
    const struct lb_cu_lora_mod mg = mt[a.tgt[0]], mu = mt[a.tgt[1]];
    const int Rg = max(mg.rank, 0), Ru = max(mu.rank, 0);
    if (PDL) { /* as k_lora_expand_v3 */
        if (col_ok && tn > 0) {
            if (Rg > 0) expand_prefetch_b(mg.b + (size_t)n * Rg, Rg);
            if (Ru > 0) expand_prefetch_b(mu.b + (size_t)n * Ru, Ru);
        }
        pdl_wait();
    }
    expand_load_v(a, tl, 0, Rg, mg.scale, v_s[0]);
    expand_load_v(a, tl, 1, Ru, mu.scale, v_s[1]);
    __syncthreads();
    if (!col_ok || tn == 0) return;
    /* gate first, kept as fp32 silu(g + term) (its bf16 inputs die), then up: fewer live registers
     * than both sums at once */
    float s0[LORA3_TH], s1[LORA3_TH], a0[LORA3_TH], a1[LORA3_TH];
    expand_pair(mg.b + (size_t)n * Rg, Rg, v_s[0], tb, a0, a1); /* rank 0: the loops do nothing */
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++) {
        const float2 g = __bfloat1622float2(gv[t]);
        const float x0 = g.x + a0[t], x1 = g.y + a1[t];
        s0[t] = x0 / (1.0f + expf(-x0));
        s1[t] = x1 / (1.0f + expf(-x1));
    }
    expand_pair(mu.b + (size_t)n * Ru, Ru, v_s[1], tb, a0, a1);
#pragma unroll
    for (int t = 0; t < LORA3_TH; t++) {
        if (t < tn) {
            const float2 u = __bfloat1622float2(uv[t]);
            gp[t * ys] = __floats2bfloat162_rn(s0[t] * (u.x + a0[t]), s1[t] * (u.y + a1[t]));
        }
    }
}

static float bf16_host(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* LB_CUDA_LORA_DENSE_CHECK=1 (debug, with LB_CUDA_LORA_DENSE=N): runs the op on the dense path
 * into y and on the segmented kernels into a copy of y's input, then compares the two on the host
 * and prints, per op, how many elements differ by more than one bf16 step of their own magnitude
 * and the worst one (ops the dense path does not take run the segmented kernels alone). Slow: it
 * synchronises on every LoRA op. It found why the dense path failed a fixture golden
 * (qwen2/qv_rslora_r4; tests/ops/NOTES.md, runs 13 and 15). */
static int lora_dense_check(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &l = op->u.lora;
    if (l.n_tgt < 1 || l.n_tgt > 3 || !l.n_tok) {
        const int keep = c->lora_dense_check;
        c->lora_dense_check = 0;
        int rc = lb_cuda_lora(c, op, err);
        c->lora_dense_check = keep;
        return rc;
    }
    struct lb_buf yc[3];
    struct lb_op op2 = *op;
    size_t n[3];
    for (int j = 0; j < l.n_tgt; j++) {
        n[j] = (size_t)l.n_tok * l.n_out[j];
        yc[j] = *l.y[j];
        yc[j].d = NULL;
        if (l.y[j]->dt != LB_BF16) return lb_err_set(err, LB_E_INTERNAL, "dense check: y not bf16");
        LB_CU(cudaMalloc(&yc[j].d, n[j] * 2));
        LB_CU(cudaMemcpyAsync(yc[j].d, l.y[j]->d, n[j] * 2, cudaMemcpyDeviceToDevice, c->stream));
        op2.u.lora.y[j] = &yc[j];
    }
    const int keep_check = c->lora_dense_check, keep_strict = c->lora_dense_strict, keep_min = c->lora_dense_min;
    c->lora_dense_check = 0;
    c->lora_dense_strict = 0;
    int taken = lb_cuda_lora_dense(c, op, err);
    c->lora_dense_min = 0;
    int rc = taken < 0 ? taken : lb_cuda_lora(c, taken ? &op2 : op, err); /* not taken: y gets the segmented result */
    c->lora_dense_min = keep_min;
    c->lora_dense_check = keep_check;
    c->lora_dense_strict = keep_strict;
    if (rc == 0) {
        LB_CU(cudaStreamSynchronize(c->stream));
        for (int j = 0; j < l.n_tgt && taken; j++) {
            uint16_t *hd = (uint16_t *)malloc(n[j] * 2), *hs = (uint16_t *)malloc(n[j] * 2);
            if (hd && hs && cudaMemcpy(hd, l.y[j]->d, n[j] * 2, cudaMemcpyDeviceToHost) == cudaSuccess &&
                cudaMemcpy(hs, yc[j].d, n[j] * 2, cudaMemcpyDeviceToHost) == cudaSuccess) {
                double mx = 0, md = 0, worst_ulp = 0;
                size_t n_diff = 0, n_far = 0, at = 0;
                for (size_t e = 0; e < n[j]; e++) {
                    double a = bf16_host(hd[e]), b = bf16_host(hs[e]);
                    if (fabs(b) > mx) mx = fabs(b);
                    if (hd[e] != hs[e]) n_diff++;
                    /* one bf16 step at this magnitude: 2^(e - 8) for big = m 2^e, m in [0.5, 1) */
                    double big = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
                    int ex = 0;
                    frexp(big > 0 ? big : 1e-30, &ex);
                    double ulp = ldexp(1.0, ex - 8), u = fabs(a - b) / ulp;
                    if (u > 1.01) n_far++;
                    if (u > worst_ulp) { worst_ulp = u; md = fabs(a - b); at = e; }
                }
                if (n_far)
                    fprintf(stderr, "dense-check: layer %d target %s T=%d n_seg=%d set=%d: %zu of %zu differ, %zu by more than one bf16 step, worst %.1f steps: token %zu col %zu dense %.6g seg %.6g (diff %.3g), max |y| %.4g\n",
                            l.layer, lb_target_name((enum lb_target)l.tgt[j]), l.n_tok, l.n_seg, l.set, n_diff, n[j], n_far,
                            worst_ulp, at / l.n_out[j], at % l.n_out[j], bf16_host(hd[at]), bf16_host(hs[at]), md, mx);
                else if (n_diff)
                    fprintf(stderr, "dense-check: layer %d target %s T=%d: %zu of %zu differ by one bf16 step\n", l.layer,
                            lb_target_name((enum lb_target)l.tgt[j]), l.n_tok, n_diff, n[j]);
            }
            free(hd);
            free(hs);
        }
    }
    for (int j = 0; j < l.n_tgt; j++) cudaFree(yc[j].d);
    return rc;
}

/* op.act: can k_lora_expand_act take it? It writes only the rows of its tiles, so every row of the
 * step must be in a segment with a valid slot (the host copies of the segments say so), and the
 * v3 kernels must be the ones selected. */
static int lora_act_fusable(const struct lb_cu *c, const struct lb_op *op)
{
    const auto &l = op->u.lora;
    if (!c->lora_act || c->lora_variant < 3 || c->lora_expand < 3) return 0;
    if (!l.n_tok || !l.n_seg || c->s.n_slot <= 0 || c->s.max_rank <= 0 || c->s.max_rank > LORA_RMAX) return 0;
    if (!l.x || l.x->dt != LB_BF16 || l.n_in % 8 || l.n_out[0] % 2) return 0;
    if (!l.y[0] || !l.y[1] || l.y[0]->dt != LB_BF16 || l.y[1]->dt != LB_BF16) return 0;
    if ((size_t)(l.n_tok + LORA_TM - 1) / LORA_TM + (size_t)l.n_seg > 65535) return 0;
    if (!l.h_seg_start || !l.h_seg_slot || l.h_seg_start[0] != 0 || l.h_seg_start[l.n_seg] != l.n_tok) return 0;
    for (int s = 0; s < l.n_seg; s++) {
        if (l.h_seg_start[s + 1] < l.h_seg_start[s]) return 0;
        if (l.h_seg_start[s + 1] > l.h_seg_start[s] && (l.h_seg_slot[s] < 0 || l.h_seg_slot[s] >= c->s.n_slot)) return 0;
    }
    return 1;
}

int lb_cuda_lora(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &l = op->u.lora;
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "lora before setup");
    if (l.n_tgt < 1 || l.n_tgt > 3) LB_UNSUP("n_tgt %d (1..3)", l.n_tgt);
    if (l.n_tok < 0 || l.n_in <= 0 || l.n_seg < 0) LB_UNSUP("bad shape T=%d K=%d S=%d", l.n_tok, l.n_in, l.n_seg);
    if (l.layer < 0 || l.layer >= c->s.n_layer) return lb_err_set(err, LB_E_INTERNAL, "layer %d out of range", l.layer);
    if (l.act && (l.n_tgt != 2 || l.set || l.n_out[0] != l.n_out[1]))
        LB_UNSUP("act needs 2 targets of one width (gate, up), not in set mode");
    if (l.act && !lora_act_fusable(c, op)) { /* the term added into gate and up, then the SwiGLU op */
        struct lb_op o2 = *op, sw;
        o2.u.lora.act = 0;
        LB_TRY(lb_cuda_lora(c, &o2, err));
        memset(&sw, 0, sizeof sw);
        sw.kind = LB_OP_SWIGLU;
        sw.u.swiglu.gate = l.y[0];
        sw.u.swiglu.up = l.y[1];
        sw.u.swiglu.out = l.y[0];
        sw.u.swiglu.n_tok = l.n_tok;
        sw.u.swiglu.n_ff = l.n_out[0];
        return lb_cuda_swiglu(c, &sw, err);
    }
    size_t T = l.n_tok, K = l.n_in;
    if (c->lora_dense_check && c->lora_dense_min > 0 && !l.act) return lora_dense_check(c, op, err);
    { /* large steps: the dense cuBLAS path (lora_dense.cu) when it applies */
        int rc = lb_cuda_lora_dense(c, op, err);
        if (rc) return rc < 0 ? rc : 0;
    }
    size_t n_tile_max = (T + LORA_TM - 1) / LORA_TM + (size_t)l.n_seg;
    const int tc = c->lora_variant >= 2 && l.x && l.x->dt == LB_BF16 && K % 8 == 0 && n_tile_max <= 65535;
    /* the grid: one block per tile the bound allows; the hybrid's part (lora_dense.cu) has a few
     * tiles among many rows, so there the grid and the K split follow the tiles its host copy of
     * the segments makes (k_lora_tiles makes the same ones); the tile list is sized by the bound */
    size_t n_grid = n_tile_max;
    if (c->lora_exact_grid && l.h_seg_start && l.h_seg_slot) {
        size_t n = 0;
        for (int s = 0; s < l.n_seg; s++) {
            const int len = l.h_seg_start[s + 1] - l.h_seg_start[s];
            if (l.h_seg_slot[s] >= 0 && len > 0) n += (size_t)(len + LORA_TM - 1) / LORA_TM;
        }
        if (n < n_grid) n_grid = n ? n : 1;
    }
    const int work = l.n_tok && l.n_seg && c->s.n_slot > 0 && c->s.max_rank > 0;
    int n_even = 1;
    for (int j = 0; j < l.n_tgt; j++) n_even &= (l.n_out[j] % 2) == 0;
    const int use_v3 = work && tc && c->lora_variant >= 3 && c->lora_expand >= 3 && n_even;
    if (l.set && !use_v3) /* y = the LoRA term: zeros first (k_lora_expand_v3 writes every row itself) */
        for (int j = 0; j < l.n_tgt; j++) {
            LB_TRY(lb_cu_check_buf(l.y[j], l.x ? (int)l.x->dt : -1, T * l.n_out[j], "y", err));
            LB_CU(cudaMemsetAsync(l.y[j]->d, 0, T * l.n_out[j] * lb_dtype_size(l.y[j]->dt), c->stream));
        }
    if (!work) return 0;
    if (c->s.max_rank > LORA_RMAX) LB_UNSUP("max rank %d > %d", c->s.max_rank, LORA_RMAX);
    LB_TRY(lb_cu_check_buf(l.x, -1, T * K, "x", err));
    LB_TRY(lb_cu_check_buf(l.seg_start, LB_I32, (size_t)l.n_seg + 1, "seg_start", err));
    LB_TRY(lb_cu_check_buf(l.seg_slot, LB_I32, (size_t)l.n_seg, "seg_slot", err));
    lora_args a;
    memset(&a, 0, sizeof a);
    int n_out_max = 0;
    for (int j = 0; j < l.n_tgt; j++) {
        int t = l.tgt[j];
        if ((unsigned)t >= LB_T_COUNT) return lb_err_set(err, LB_E_INTERNAL, "target %d", t);
        if (l.n_in != c->mod_in[t] || l.n_out[j] != c->mod_out[t])
            return lb_err_set(err, LB_E_INTERNAL, "%s: op shape K=%d N=%d, slots hold K=%d N=%d", lb_target_name((enum lb_target)t),
                              l.n_in, l.n_out[j], c->mod_in[t], c->mod_out[t]);
        LB_TRY(lb_cu_check_buf(l.y[j], l.x->dt, T * l.n_out[j], "y", err));
        a.tgt[j] = t;
        a.n_out[j] = l.n_out[j];
        a.y[j] = l.y[j]->d;
        if (l.n_out[j] > n_out_max) n_out_max = l.n_out[j];
    }
    a.mods = c->d_mods;
    a.n_slot = c->s.n_slot;
    a.n_layer = c->s.n_layer;
    a.layer = l.layer;
    a.n_tok = l.n_tok;
    a.n_in = l.n_in;
    a.n_tgt = l.n_tgt;
    a.r_stride = c->s.max_rank;
    a.set = l.set && use_v3;
    a.async = c->lora_async;

    /* v2: about 4 blocks per SM (half the tile bound is typically empty); v1: 2 */
    /* LB_CUDA_LORA_SPLIT=N: aim at N shrink blocks per SM instead (fewer K splits: fewer v planes
     * for the expand to sum, a thinner shrink grid). H100 run 11: 4 and 2 are slower on decode
     * steps than the default 8 (lora_bench_run11_split*_h100.txt) */
    size_t want = (size_t)c->n_sm * (tc ? (c->lora_split_blocks > 0 ? c->lora_split_blocks : 8) : 2), base = n_grid * l.n_tgt;
    /* K split only pays when tiles are few; keep >= 256 of K per split. */
    int n_split = base >= want ? 1 : (int)((want + base - 1) / base);
    int max_split = (int)(K / 256) > 0 ? (int)(K / 256) : 1;
    if (n_split > max_split) n_split = max_split;
    if (n_split > LORA_SPLIT_MAX) n_split = LORA_SPLIT_MAX;
    int k_chunk = (int)((K + n_split - 1) / n_split);
    k_chunk = (k_chunk + LORA_KC - 1) / LORA_KC * LORA_KC;
    n_split = (int)((K + k_chunk - 1) / k_chunk);
    a.n_split = n_split;
    a.k_chunk = k_chunk;

    size_t tiles_bytes = (n_tile_max * sizeof(lora_tile) + 255) / 256 * 256;
    size_t v_bytes = (size_t)n_split * l.n_tgt * T * a.r_stride * sizeof(float);
    void *ws;
    if (c->lora_variant >= 3) {
        /* The tile list depends only on seg_start/seg_slot (uploaded once per step, the same for
         * all targets and layers): build it into its own buffer on the first op of a step and
         * reuse it while the buffers, sizes and c->buf_gen (bumped by every upload/alloc/free)
         * are unchanged. Saves one launch per op. */
        int hit = c->lc_valid && c->lc_start == l.seg_start->d && c->lc_slot == l.seg_slot->d &&
                  c->lc_nseg == l.n_seg && c->lc_ntok == l.n_tok && c->lc_gen == c->buf_gen;
        if (!hit) {
            c->lc_valid = 0;
            LB_TRY(lb_cu_grow(c, &c->d_lora_tl, &c->lora_tl_bytes, 256 + tiles_bytes, "LoRA tile list", err));
            k_lora_tiles<<<1, 1024, 0, c->stream>>>((const int32_t *)l.seg_start->d, (const int32_t *)l.seg_slot->d,
                                                    l.n_seg, (lora_tile *)((char *)c->d_lora_tl + 256),
                                                    (int *)c->d_lora_tl);
            LB_CU_LAUNCH();
            c->lc_valid = 1;
            c->lc_start = l.seg_start->d;
            c->lc_slot = l.seg_slot->d;
            c->lc_nseg = l.n_seg;
            c->lc_ntok = l.n_tok;
            c->lc_gen = c->buf_gen;
        }
        LB_TRY(lb_cu_ws(c, v_bytes, &ws, err));
        a.n_tiles = (const int *)c->d_lora_tl;
        a.tiles = (const lora_tile *)((char *)c->d_lora_tl + 256);
        a.v = (float *)ws;
    } else {
        LB_TRY(lb_cu_ws(c, 256 + tiles_bytes + v_bytes, &ws, err));
        int *d_count = (int *)ws;
        a.n_tiles = d_count;
        a.tiles = (lora_tile *)((char *)ws + 256);
        a.v = (float *)((char *)ws + 256 + tiles_bytes);
        k_lora_tiles<<<1, 1024, 0, c->stream>>>((const int32_t *)l.seg_start->d, (const int32_t *)l.seg_slot->d,
                                                l.n_seg, (lora_tile *)a.tiles, d_count);
        LB_CU_LAUNCH();
    }
    dim3 g_shrink((unsigned)n_grid, l.n_tgt, n_split), g_expand((unsigned)n_grid, cdiv(n_out_max, 256), l.n_tgt);
    if (tc) {
        size_t sm = lora2_smem_bytes(c->s.max_rank);
        /* PDL: the v3 pair (and the fused act expand) only, on steps of <= 512 tokens: H100 run 42's op
         * timings were 5-18% faster with it at 256 and 512 tokens in segments of 16 and 32, and up to
         * 10% slower at 8192 (prefill 16 x 512, where the shrink's last wave shares the SMs with the
         * expand's early blocks) */
        const int pdl = c->lora_pdl && use_v3 && l.n_tok <= 512;
        void (*kf)(lora_args, const bf16 *) = pdl ? (a.async ? k_lora_shrink_tc<1, 1> : k_lora_shrink_tc<0, 1>)
                                                  : (a.async ? k_lora_shrink_tc<1, 0> : k_lora_shrink_tc<0, 0>);
        if (sm > 48 * 1024) LB_CU(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
        LB_CU(lb_launch(pdl, kf, dim3(l.n_tgt, (unsigned)n_grid, n_split), dim3(128), sm, c->stream, a,
                        (const bf16 *)l.x->d));
        if (l.act) { /* lora_act_fusable held: use_v3 too */
            LB_CU(lb_launch(pdl, pdl ? k_lora_expand_act<1> : k_lora_expand_act<0>,
                            dim3((unsigned)n_grid, cdiv(n_out_max, 256), 1), dim3(256), 0, c->stream, a));
            return 0;
        }
        if (use_v3) {
            LB_CU(lb_launch(pdl, pdl ? k_lora_expand_v3<1> : k_lora_expand_v3<0>, g_expand, dim3(256), 0, c->stream, a));
            return 0;
        }
        k_lora_expand_vec<bf16><<<g_expand, 256, 0, c->stream>>>(a);
        LB_CU_LAUNCH();
        return 0;
    }
    LB_DISPATCH_FB(l.x->dt, T_, {
        k_lora_shrink<T_><<<g_shrink, 256, 0, c->stream>>>(a, (const T_ *)l.x->d);
        LB_CU_LAUNCH();
        k_lora_expand<T_><<<g_expand, 256, 0, c->stream>>>(a);
        LB_CU_LAUNCH();
    });
    return 0;
}
