/* norm.cu — RMSNorm, optionally fused with the residual add.
 *
 *   res == NULL: out = x * rsqrt(mean(x^2) + eps) * w
 *   res != NULL: res += x (res stored in its dtype); out = res * rsqrt(mean(res^2) + eps) * w
 * Rows of n elements; arithmetic in fp32; the norm is taken over the value stored in res
 * (as rounded to its dtype, like Hugging Face, which adds in the activation dtype first).
 *
 * Kernels: k_rmsnorm_warp (one warp per row, n <= 1024: q/k-norm over head_dim, small models)
 * and k_rmsnorm_block (one 256-thread block per row, n > 1024: the hidden state). Both keep
 * the row in registers/shared memory between the sum and the scale, so x and res are read once.
 *
 * k_rmsnorm_v2 (default; LB_CUDA_ELEM=1 selects the scalar kernel; hidden-size rows in bf16): 16-byte loads, every load of a row
 * issued before any is used (the scalar kernels wait on memory once per 256 elements).
 *
 * Test: build/tests/test_ops (rmsnorm cases; the default runs them on the v2 kernels, test_elem_v1 on the scalar ones). */
#include "common.cuh"

#define NORM_WARP_MAX 1024
#define NORM_PER_LANE (NORM_WARP_MAX / 32)

template <typename T, typename W>
static __global__ void k_rmsnorm_warp(const T *x, T *res, const W *w, T *out, int n_rows, int n, float eps)
{
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const T *xr = x + (size_t)row * n;
    T *rr = res ? res + (size_t)row * n : NULL;
    float v[NORM_PER_LANE];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NORM_PER_LANE; j++) {
        int i = lane + 32 * j;
        float a = 0.0f;
        if (i < n) {
            a = ldf(&xr[i]);
            if (rr) {
                T s;
                stf(&s, ldf(&rr[i]) + a);
                rr[i] = s;
                a = ldf(&s);
            }
        }
        v[j] = a;
        ss += a * a;
    }
    ss = warp_sum(ss);
    float inv = rsqrtf(ss / (float)n + eps);
    T *o = out + (size_t)row * n;
#pragma unroll
    for (int j = 0; j < NORM_PER_LANE; j++) {
        int i = lane + 32 * j;
        if (i < n) stf(&o[i], v[j] * inv * ldf(&w[i]));
    }
}

template <typename T, typename W>
static __global__ void k_rmsnorm_block(const T *x, T *res, const W *w, T *out, int n, float eps)
{
    extern __shared__ float row_s[]; /* [n] */
    __shared__ float part[32];
    int row = blockIdx.x;
    const T *xr = x + (size_t)row * n;
    T *rr = res ? res + (size_t)row * n : NULL;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float a = ldf(&xr[i]);
        if (rr) {
            T s;
            stf(&s, ldf(&rr[i]) + a);
            rr[i] = s;
            a = ldf(&s);
        }
        row_s[i] = a;
        ss += a * a;
    }
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float p = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        p = warp_sum(p);
        if (threadIdx.x == 0) part[0] = p;
    }
    __syncthreads();
    float inv = rsqrtf(part[0] / (float)n + eps);
    T *o = out + (size_t)row * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) stf(&o[i], row_s[i] * inv * ldf(&w[i]));
}

/* v2 (default, LB_CUDA_ELEM=1 turns it off; bf16, n % 8 == 0, n <= 8 * 4 * 1024): one block per row, each thread
 * owning up to 4 chunks of 8 elements, all of its x/res loads (16 bytes each) issued before any is
 * used, so a row costs one memory round trip per pass instead of one per 256 elements. Same
 * arithmetic as k_rmsnorm_block: res rounded to bf16 first, sums in fp32. */
#define NORM2_VPT 4
static __global__ void k_rmsnorm_v2(const bf16 *x, bf16 *res, const bf16 *w, bf16 *out, int n, float eps)
{
    __shared__ float part[32];
    const int row = blockIdx.x, nc = n / 8;
    const uint4 *xr = (const uint4 *)(x + (size_t)row * n);
    uint4 *rr = res ? (uint4 *)(res + (size_t)row * n) : NULL;
    uint4 xv[NORM2_VPT], rv[NORM2_VPT];
#pragma unroll
    for (int j = 0; j < NORM2_VPT; j++) {
        int ci = threadIdx.x + j * blockDim.x;
        if (ci < nc) {
            xv[j] = xr[ci];
            if (rr) rv[j] = rr[ci];
        }
    }
    float v[NORM2_VPT][8];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NORM2_VPT; j++) {
        int ci = threadIdx.x + j * blockDim.x;
        if (ci >= nc) continue;
        unpack8(xv[j], v[j]);
        if (rr) {
            float r8[8];
            unpack8(rv[j], r8);
#pragma unroll
            for (int e = 0; e < 8; e++) r8[e] += v[j][e];
            uint4 s = pack8(r8);
            rr[ci] = s;
            unpack8(s, v[j]); /* the norm is taken over the stored (rounded) sum */
        }
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[j][e] * v[j][e];
    }
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float p = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        p = warp_sum(p);
        if (threadIdx.x == 0) part[0] = p;
    }
    __syncthreads();
    const float inv = rsqrtf(part[0] / (float)n + eps);
    uint4 *o = (uint4 *)(out + (size_t)row * n);
    const uint4 *wr = (const uint4 *)w;
#pragma unroll
    for (int j = 0; j < NORM2_VPT; j++) {
        int ci = threadIdx.x + j * blockDim.x;
        if (ci >= nc) continue;
        float w8[8], y[8];
        unpack8(wr[ci], w8);
#pragma unroll
        for (int e = 0; e < 8; e++) y[e] = v[j][e] * inv * w8[e];
        o[ci] = pack8(y);
    }
}

int lb_cuda_rmsnorm(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &r = op->u.rmsnorm;
    if (r.n_rows < 0 || r.n <= 0) LB_UNSUP("bad shape rows=%d n=%d", r.n_rows, r.n);
    if (r.n_rows == 0) return 0;
    size_t R = r.n_rows, N = r.n;
    LB_TRY(lb_cu_check_buf(r.x, -1, R * N, "x", err));
    LB_TRY(lb_cu_check_buf(r.out, r.x->dt, R * N, "out", err));
    if (r.res) LB_TRY(lb_cu_check_buf(r.res, r.x->dt, R * N, "res", err));
    LB_TRY(lb_cu_check_buf(r.w, -1, N, "w", err));
    if ((size_t)r.n * 4 > 160 * 1024) LB_UNSUP("row of %d elements too long", r.n);
    if (c->elem_variant >= 2 && r.x->dt == LB_BF16 && r.w->dt == LB_BF16 && r.n % 8 == 0 && r.n > NORM_WARP_MAX &&
        r.n <= 8 * NORM2_VPT * 1024) {
        int nc = r.n / 8, th = (int)cdiv((size_t)nc, NORM2_VPT);
        th = (th + 31) / 32 * 32;
        k_rmsnorm_v2<<<(unsigned)R, th, 0, c->stream>>>((const bf16 *)r.x->d, r.res ? (bf16 *)r.res->d : NULL,
                                                      (const bf16 *)r.w->d, (bf16 *)r.out->d, r.n, r.eps);
        LB_CU_LAUNCH();
        return 0;
    }
    LB_DISPATCH_FB(r.x->dt, T, LB_DISPATCH_FB(r.w->dt, W, {
        const T *x = (const T *)r.x->d;
        T *res = r.res ? (T *)r.res->d : NULL;
        if (r.n <= NORM_WARP_MAX) {
            k_rmsnorm_warp<T, W><<<cdiv(R, 4), 128, 0, c->stream>>>(x, res, (const W *)r.w->d, (T *)r.out->d,
                                                                   r.n_rows, r.n, r.eps);
        } else {
            size_t sm = N * sizeof(float);
            if (sm > 48 * 1024)
                LB_CU(cudaFuncSetAttribute(k_rmsnorm_block<T, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)sm));
            k_rmsnorm_block<T, W><<<(unsigned)R, 256, sm, c->stream>>>(x, res, (const W *)r.w->d, (T *)r.out->d,
                                                                       r.n, r.eps);
        }
    }));
    LB_CU_LAUNCH();
    return 0;
}
