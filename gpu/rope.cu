/* rope.cu — rotary position embedding, in place, HF rotate_half layout.
 *
 * For each head row x[D] of q[T,NH,D] and k[T,NKV,D] and i < D/2, with a = pos[t] * inv_freq[i]
 * (fp32 product, as HF forms freqs): x[i] <- x[i] cos a - x[i+D/2] sin a,
 * x[i+D/2] <- x[i+D/2] cos a + x[i] sin a. inv_freq is made once at setup (backend_cuda.cu,
 * rope_inv_freq: HF's float32 formula, llama3 scaling when configured). cos/sin use the
 * accurate sincosf (angles reach 1e5 rad at long positions; fast intrinsics lose digits there).
 *
 * Kernel: k_rope, one thread per (row, i) pair, grid-stride over T*(NH+NKV)*D/2; k_rope_v2
 * (default; LB_CUDA_ELEM=1 selects the scalar kernel; bf16, D % 16 == 0), one thread per 8 pairs through 16-byte accesses.
 *
 * Test: build/tests/test_ops (rope cases). */
#include "common.cuh"

template <typename T>
static __global__ void k_rope(T *q, T *k, const int32_t *pos, const float *inv_freq, int n_tok, int NH, int NKV, int D)
{
    int half = D / 2, rows = NH + NKV;
    size_t n = (size_t)n_tok * rows * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rt = idx / half;
        int h = (int)(rt % rows);
        int t = (int)(rt / rows);
        T *x = h < NH ? q + ((size_t)t * NH + h) * D : k + ((size_t)t * NKV + (h - NH)) * D;
        float a = (float)pos[t] * inv_freq[i];
        float s, co;
        sincosf(a, &s, &co);
        float x1 = ldf(&x[i]), x2 = ldf(&x[i + half]);
        stf(&x[i], x1 * co - x2 * s);
        stf(&x[i + half], x2 * co + x1 * s);
    }
}

/* v2 (default, LB_CUDA_ELEM=1 turns it off; bf16, D % 16 == 0): one thread per (row, 8 consecutive i of the first
 * half): two 16-byte loads (x[i..i+7], x[i+D/2..]), two 16-byte stores. Same arithmetic. */
static __global__ void k_rope_v2(bf16 *q, bf16 *k, const int32_t *pos, const float *inv_freq, int n_tok, int NH, int NKV,
                                 int D)
{
    const int half = D / 2, cpr = half / 8, rows = NH + NKV;
    size_t n = (size_t)n_tok * rows * cpr;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int i0 = (int)(idx % cpr) * 8;
        size_t rt = idx / cpr;
        int h = (int)(rt % rows);
        int t = (int)(rt / rows);
        bf16 *x = h < NH ? q + ((size_t)t * NH + h) * D : k + ((size_t)t * NKV + (h - NH)) * D;
        uint4 a4 = *(const uint4 *)(x + i0), b4 = *(const uint4 *)(x + i0 + half);
        float x1[8], x2[8], y1[8], y2[8];
        unpack8(a4, x1);
        unpack8(b4, x2);
        const float p = (float)pos[t];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float s, co;
            sincosf(p * inv_freq[i0 + e], &s, &co);
            y1[e] = x1[e] * co - x2[e] * s;
            y2[e] = x2[e] * co + x1[e] * s;
        }
        *(uint4 *)(x + i0) = pack8(y1);
        *(uint4 *)(x + i0 + half) = pack8(y2);
    }
}

int lb_cuda_rope(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &r = op->u.rope;
    if (!c->have_setup) return lb_err_set(err, LB_E_INTERNAL, "rope before setup (the frequency table comes from it)");
    if (r.n_tok < 0 || r.n_head < 0 || r.n_kv_head < 0 || r.head_dim != c->s.head_dim)
        LB_UNSUP("bad shape T=%d NH=%d NKV=%d D=%d (setup D=%d)", r.n_tok, r.n_head, r.n_kv_head, r.head_dim,
                 c->s.head_dim);
    size_t T = r.n_tok, D = r.head_dim;
    if (!T) return 0;
    LB_TRY(lb_cu_check_buf(r.pos, LB_I32, T, "pos", err));
    if (r.n_head) LB_TRY(lb_cu_check_buf(r.q, -1, T * r.n_head * D, "q", err));
    if (r.n_kv_head) LB_TRY(lb_cu_check_buf(r.k, r.n_head ? (int)r.q->dt : -1, T * r.n_kv_head * D, "k", err));
    enum lb_dtype dt = r.n_head ? r.q->dt : r.k->dt;
    size_t n = T * (r.n_head + r.n_kv_head) * (D / 2);
    if (!n) return 0;
    size_t g = (n + 255) / 256, cap = (size_t)c->n_sm * 16;
    if (c->elem_variant >= 2 && dt == LB_BF16 && D % 16 == 0) {
        size_t n8 = n / 8, g8 = (n8 + 255) / 256;
        k_rope_v2<<<(unsigned)(g8 < cap ? g8 : cap), 256, 0, c->stream>>>(
            r.n_head ? (bf16 *)r.q->d : NULL, r.n_kv_head ? (bf16 *)r.k->d : NULL, (const int32_t *)r.pos->d,
            c->d_inv_freq, r.n_tok, r.n_head, r.n_kv_head, r.head_dim);
        LB_CU_LAUNCH();
        return 0;
    }
    LB_DISPATCH_FB(dt, T_, k_rope<T_><<<(unsigned)(g < cap ? g : cap), 256, 0, c->stream>>>(
                               r.n_head ? (T_ *)r.q->d : NULL, r.n_kv_head ? (T_ *)r.k->d : NULL,
                               (const int32_t *)r.pos->d, c->d_inv_freq, r.n_tok, r.n_head, r.n_kv_head, r.head_dim));
    LB_CU_LAUNCH();
    return 0;
}
