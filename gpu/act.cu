/* act.cu — element-wise ops: SwiGLU, residual add, row gather.
 *
 *   k_swiglu: out[T,F] = silu(gate) * up, silu(g) = g / (1 + exp(-g)), fp32 math, one rounding.
 *   k_add:    y[n] += x[n].
 *   k_gather_rows: out[i,:] = x[idx[i],:] (one block per row; idx out of range writes zeros).
 * All grid-stride; memory-bound by design (one read of each input, one write).
 *
 *   k_swiglu_v2 (default; LB_CUDA_ELEM=1 selects the scalar kernel; bf16): 8 elements per thread through 16-byte accesses.
 *
 * Test: build/tests/test_ops (swiglu, add, gather cases; the default runs them on the v2 kernels, test_elem_v1 on the scalar ones). */
#include "common.cuh"

template <typename T>
static __global__ void k_swiglu(const T *gate, const T *up, T *out, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = ldf(&gate[i]), u = ldf(&up[i]);
        stf(&out[i], g / (1.0f + expf(-g)) * u);
    }
}

/* v2 (default, LB_CUDA_ELEM=1 turns it off; bf16, n % 8 == 0): 8 elements per thread and iteration through 16-byte
 * loads and stores, so 8x the bytes are in flight per thread. Same arithmetic. */
static __global__ void k_swiglu_v2(const uint4 *gate, const uint4 *up, uint4 *out, size_t n8)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (size_t)gridDim.x * blockDim.x) {
        uint4 gu = gate[i], uu = up[i];
        float g[8], u[8], y[8];
        unpack8(gu, g);
        unpack8(uu, u);
#pragma unroll
        for (int e = 0; e < 8; e++) y[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
        out[i] = pack8(y);
    }
}

template <typename T, typename X>
static __global__ void k_add(const X *x, T *y, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        stf(&y[i], ldf(&y[i]) + ldf(&x[i]));
}

template <typename T, typename To>
static __global__ void k_gather_rows(const T *x, const int32_t *idx, To *out, int n_cols, int64_t n_rows_x)
{
    int i = blockIdx.x;
    int64_t r = idx[i];
    To *o = out + (size_t)i * n_cols;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x)
        stf(&o[j], (r >= 0 && r < n_rows_x) ? ldf(&x[(size_t)r * n_cols + j]) : 0.0f);
}

static unsigned grid_for(struct lb_cu *c, size_t n)
{
    size_t g = (n + 255) / 256, cap = (size_t)c->n_sm * 16;
    return (unsigned)(g < cap ? (g ? g : 1) : cap);
}

int lb_cuda_swiglu(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &s = op->u.swiglu;
    if (s.n_tok < 0 || s.n_ff <= 0) LB_UNSUP("bad shape T=%d F=%d", s.n_tok, s.n_ff);
    size_t n = (size_t)s.n_tok * s.n_ff;
    if (!n) return 0;
    LB_TRY(lb_cu_check_buf(s.gate, -1, n, "gate", err));
    LB_TRY(lb_cu_check_buf(s.up, s.gate->dt, n, "up", err));
    LB_TRY(lb_cu_check_buf(s.out, s.gate->dt, n, "out", err));
    if (c->elem_variant >= 2 && s.gate->dt == LB_BF16 && n % 8 == 0) {
        k_swiglu_v2<<<grid_for(c, n / 8), 256, 0, c->stream>>>((const uint4 *)s.gate->d, (const uint4 *)s.up->d,
                                                               (uint4 *)s.out->d, n / 8);
        LB_CU_LAUNCH();
        return 0;
    }
    LB_DISPATCH_FB(s.gate->dt, T, k_swiglu<T><<<grid_for(c, n), 256, 0, c->stream>>>(
                                      (const T *)s.gate->d, (const T *)s.up->d, (T *)s.out->d, n));
    LB_CU_LAUNCH();
    return 0;
}

int lb_cuda_add(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &a = op->u.add;
    if (a.n < 0) LB_UNSUP("bad n %lld", (long long)a.n);
    size_t n = (size_t)a.n;
    if (!n) return 0;
    LB_TRY(lb_cu_check_buf(a.x, -1, n, "x", err));
    LB_TRY(lb_cu_check_buf(a.y, -1, n, "y", err));
    LB_DISPATCH_FB(a.y->dt, T, LB_DISPATCH_FB(a.x->dt, X, k_add<T, X><<<grid_for(c, n), 256, 0, c->stream>>>(
                                                              (const X *)a.x->d, (T *)a.y->d, n)));
    LB_CU_LAUNCH();
    return 0;
}

int lb_cuda_gather(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &g = op->u.gather;
    if (g.n < 0 || g.n_cols <= 0) LB_UNSUP("bad shape n=%d cols=%d", g.n, g.n_cols);
    if (!g.n) return 0;
    LB_TRY(lb_cu_check_buf(g.idx, LB_I32, g.n, "idx", err));
    LB_TRY(lb_cu_check_buf(g.x, -1, g.n_cols, "x", err));
    LB_TRY(lb_cu_check_buf(g.out, -1, (size_t)g.n * g.n_cols, "out", err));
    int64_t rows = (int64_t)(g.x->n_elem / g.n_cols);
    int threads = g.n_cols >= 1024 ? 256 : 128;
    LB_DISPATCH_FB(g.x->dt, T, LB_DISPATCH_FB(g.out->dt, To,
        k_gather_rows<T, To><<<(unsigned)g.n, threads, 0, c->stream>>>((const T *)g.x->d, (const int32_t *)g.idx->d,
                                                                     (To *)g.out->d, g.n_cols, rows)));
    LB_CU_LAUNCH();
    return 0;
}
