/* sample.cu — next-token sampling on the GPU, following sample.h exactly.
 *
 * One block (512 threads) per row of logits[n, V]; only the token ids leave the GPU.
 *   temperature <= 0: k_sample_rows takes the argmax (lowest index wins ties; NaN ignored).
 *   otherwise, with z = logit / temperature (fp32) and the order (z desc, index asc), which is
 *   sample.h's order (p desc, index asc) since p is monotone in z:
 *     1. top_k > 0: the kept set is the first top_k tokens of that order;
 *     2. e = exp(z - max z) in float64 over the kept set, total = sum e;
 *     3. top_p < 1: keep the shortest prefix (in the order) whose mass reaches top_p * total;
 *     4. u = lb_rng_uniform(seed, step); pick the first kept token whose cumulative mass exceeds
 *        u * (kept mass).
 *   Each "first position in the order where a running sum crosses X" is one radix select
 *   (select_cross): four passes over the row, each a 256-bin histogram (float64 in shared memory)
 *   of the keys under the prefix chosen so far, then an index-ordered scan over the tied keys.
 *   No sort, no V-sized workspace. The same routine counts (weight 1) for top-k.
 * Agreement with the CPU reference: greedy is exact; sampling differs only where a cumulative
 * sum lands within float64 rounding of a boundary (summation order differs), i.e. near-ties.
 * Histogram atomics make such near-tie picks run-to-run nondeterministic; noted for the
 * deterministic mode (issue 5).
 *
 * Test: build/tests/test_ops (sample cases: greedy, temperature, top-k, top-p, both). */
#include <math.h>

#include "common.cuh"
#include "rng.cuh"

#define SAMPLE_THREADS 512

__device__ __forceinline__ uint32_t fkey(float z)
{
    if (z == 0.0f) z = 0.0f; /* -0 == +0 */
    uint32_t u = __float_as_uint(z);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <typename T>
struct row_view {
    const T *x;
    int V;
    double inv_t; /* 1 / temperature, in float64 as the CPU reference */
    double zmax;  /* max logit * inv_t */
    /* kept set: top-k cut (key > kk or (key == kk and i <= ik)), top-p cut likewise */
    int has_k, has_p;
    uint32_t kk, pk;
    int ik, ip;
    /* The order uses the logit itself (same order as logit / T for T > 0, and what the CPU sorts). */
    __device__ __forceinline__ float z(int i) const { return ldf(&x[i]); }
    __device__ __forceinline__ double w(float zi) const { return exp((double)zi * inv_t - zmax); }
    __device__ __forceinline__ bool kept(int i, uint32_t key, float zi) const
    {
        if (zi != zi) return false;
        if (has_k && !(key > kk || (key == kk && i <= ik))) return false;
        if (has_p && !(key > pk || (key == pk && i <= ip))) return false;
        return true;
    }
};

__device__ double block_sum_d(double v, double *red)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        double w = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.0;
        for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(0xffffffffu, w, o);
        if (threadIdx.x == 0) red[32] = w;
    }
    __syncthreads();
    double r = red[32];
    __syncthreads();
    return r;
}

/* Inclusive block scan of doubles in thread order. */
__device__ double block_scan_d(double v, double *red)
{
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    double x = v;
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) red[w] = x;
    __syncthreads();
    if (w == 0) {
        double t = lane < (int)blockDim.x / 32 ? red[lane] : 0.0, s = t;
        for (int o = 1; o < 32; o <<= 1) {
            double y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += y;
        }
        red[lane] = s - t;
    }
    __syncthreads();
    double r = x + red[w];
    __syncthreads();
    return r;
}

/* First position in the order (key desc, index asc) over the kept set where the running sum of
 * weights (1 if count, else exp(z - zmax)) satisfies sum > X (strict) or sum >= X. Returns the
 * key and index there. If the sum never crosses (float64 rounding at the very end), the last
 * kept element is returned; -1 if nothing is kept. Called by every thread of the block. */
template <typename T>
__device__ void select_cross(const row_view<T> &rv, bool count, double X, bool strict, uint32_t *key_out, int *idx_out)
{
    __shared__ double hist[256];
    __shared__ double red[33];
    __shared__ uint32_t s_prefix;
    __shared__ double s_above;
    __shared__ int s_idx, s_last;
    uint32_t prefix = 0, mask = 0;
    double above = 0.0;
    for (int pass = 0; pass < 4; pass++) {
        int shift = 24 - 8 * pass;
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0.0;
        __syncthreads();
        for (int i = threadIdx.x; i < rv.V; i += blockDim.x) {
            float zi = rv.z(i);
            uint32_t k = fkey(zi);
            if ((k & mask) != prefix || !rv.kept(i, k, zi)) continue;
            double w = count ? 1.0 : rv.w(zi);
            atomicAdd(&hist[(k >> shift) & 255], w);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            double cum = above, cum_at_lowest = above;
            int chosen = -1, lowest = -1;
            for (int b = 255; b >= 0; b--) {
                if (hist[b] == 0.0) continue;
                double nc = cum + hist[b];
                if (strict ? nc > X : nc >= X) {
                    chosen = b;
                    break;
                }
                lowest = b;
                cum_at_lowest = cum;
                cum = nc;
            }
            if (chosen < 0) { /* never crossed: the last element of the order */
                chosen = lowest < 0 ? 0 : lowest;
                cum = cum_at_lowest;
            }
            s_prefix = prefix | ((uint32_t)chosen << shift);
            s_above = cum;
        }
        __syncthreads();
        prefix = s_prefix;
        above = s_above;
        mask |= 255u << shift;
    }
    /* ties on the exact key, in index order */
    if (threadIdx.x == 0) {
        s_idx = 0x7fffffff;
        s_last = -1;
    }
    __syncthreads();
    double run = above;
    for (int base = 0; base < rv.V; base += blockDim.x) {
        int i = base + threadIdx.x;
        double w = 0.0;
        bool tie = false;
        if (i < rv.V) {
            float zi = rv.z(i);
            uint32_t k = fkey(zi);
            if (k == prefix && rv.kept(i, k, zi)) {
                tie = true;
                w = count ? 1.0 : rv.w(zi);
            }
        }
        double tot = run + block_scan_d(w, red);
        if (tie) {
            if (strict ? tot > X : tot >= X) atomicMin(&s_idx, i);
            atomicMax(&s_last, i);
        }
        double chunk = block_sum_d(w, red); /* its barriers publish the atomics */
        if (s_idx != 0x7fffffff) break;
        run += chunk;
    }
    __syncthreads();
    *key_out = prefix;
    *idx_out = s_idx != 0x7fffffff ? s_idx : s_last;
    __syncthreads();
}

template <typename T>
static __global__ void __launch_bounds__(SAMPLE_THREADS)
    k_sample_rows(const T *logits, const struct lb_sample_param *params, int32_t *tok, int V)
{
    __shared__ float r_v[32];
    __shared__ int r_i[32];
    __shared__ double red[33];
    __shared__ int s_last;
    int row = blockIdx.x;
    const T *x = logits + (size_t)row * V;
    struct lb_sample_param p = params[row];

    /* max of the logits (greedy: with its lowest index) */
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = ldf(&x[i]);
        if (v > best) { /* NaN never wins; strided order keeps the lowest index per thread */
            best = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    if (threadIdx.x % 32 == 0) {
        r_v[threadIdx.x / 32] = best;
        r_i[threadIdx.x / 32] = bi;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        best = threadIdx.x < blockDim.x / 32 ? r_v[threadIdx.x] : -INFINITY;
        bi = threadIdx.x < blockDim.x / 32 ? r_i[threadIdx.x] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) {
                best = ov;
                bi = oi;
            }
        }
        if (threadIdx.x == 0) {
            r_v[0] = best;
            r_i[0] = bi;
        }
    }
    __syncthreads();
    best = r_v[0];
    bi = r_i[0];
    if (!(p.temperature > 0.0f) || bi == 0x7fffffff) {
        if (threadIdx.x == 0) tok[row] = bi == 0x7fffffff ? 0 : bi;
        return;
    }

    row_view<T> rv;
    rv.x = x;
    rv.V = V;
    rv.inv_t = 1.0 / (double)p.temperature;
    rv.zmax = (double)ldf(&x[bi]) * rv.inv_t;
    rv.has_k = rv.has_p = 0;
    rv.kk = rv.pk = 0;
    rv.ik = rv.ip = 0;
    if (p.top_k > 0 && p.top_k < V) {
        uint32_t k;
        int i;
        select_cross(rv, true, (double)p.top_k, false, &k, &i);
        rv.has_k = 1;
        rv.kk = k;
        rv.ik = i;
    }
    /* total mass of the kept set */
    double tot = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float zi = rv.z(i);
        uint32_t k = fkey(zi);
        if (rv.kept(i, k, zi)) tot += rv.w(zi);
    }
    tot = block_sum_d(tot, red);
    double kept_mass = tot;
    if (p.top_p > 0.0f && p.top_p < 1.0f) {
        uint32_t k;
        int i;
        select_cross(rv, false, (double)p.top_p * tot, false, &k, &i);
        rv.has_p = 1;
        rv.pk = k;
        rv.ip = i;
        double m = 0.0;
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float zj = rv.z(j);
            uint32_t kj = fkey(zj);
            if (rv.kept(j, kj, zj)) m += rv.w(zj);
        }
        kept_mass = block_sum_d(m, red);
    }
    double u = lb_rng_uniform_dev(p.seed, (uint32_t)p.step);
    uint32_t k;
    int i;
    select_cross(rv, false, u * kept_mass, true, &k, &i);
    if (threadIdx.x == 0) s_last = i;
    __syncthreads();
    if (threadIdx.x == 0) tok[row] = s_last >= 0 ? s_last : bi;
}

int lb_cuda_sample(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &s = op->u.sample;
    if (s.n < 0 || s.n_vocab <= 0) LB_UNSUP("bad shape n=%d V=%d", s.n, s.n_vocab);
    if (!s.n) return 0;
    LB_TRY(lb_cu_check_buf(s.logits, -1, (size_t)s.n * s.n_vocab, "logits", err));
    LB_TRY(lb_cu_check_buf(s.params, LB_U8, (size_t)s.n * sizeof(struct lb_sample_param), "params", err));
    LB_TRY(lb_cu_check_buf(s.tok, LB_I32, (size_t)s.n, "tok", err));
    LB_DISPATCH_FB(s.logits->dt, T,
                   k_sample_rows<T><<<(unsigned)s.n, SAMPLE_THREADS, 0, c->stream>>>(
                       (const T *)s.logits->d, (const struct lb_sample_param *)s.params->d, (int32_t *)s.tok->d,
                       s.n_vocab));
    LB_CU_LAUNCH();
    return 0;
}
