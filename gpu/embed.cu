/* embed.cu — embedding gather: out[T,H] = table[ids[t], :].
 *
 * Kernel: k_embed_rows, one block per token row, 16-byte copies when the row allows (bf16
 * table into a bf16 output: a pure copy), else element-wise with conversion. An id outside
 * [0, n_rows) writes a zero row (the engine validates ids on the host; this keeps the kernel
 * from reading out of bounds).
 *
 * Test: build/tests/test_ops (embed cases). */
#include "common.cuh"

template <typename Tt, typename To>
static __global__ void k_embed_rows(const int32_t *ids, const Tt *table, To *out, int H, int64_t n_rows)
{
    int t = blockIdx.x;
    int64_t id = ids[t];
    To *o = out + (size_t)t * H;
    if (id < 0 || id >= n_rows) {
        for (int i = threadIdx.x; i < H; i += blockDim.x) stf(&o[i], 0.0f);
        return;
    }
    const Tt *r = table + (size_t)id * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) stf(&o[i], ldf(&r[i]));
}

static __global__ void k_embed_rows_vec(const int32_t *ids, const uint4 *table, uint4 *out, int H8, int64_t n_rows)
{
    int t = blockIdx.x;
    int64_t id = ids[t];
    uint4 *o = out + (size_t)t * H8;
    if (id < 0 || id >= n_rows) {
        for (int i = threadIdx.x; i < H8; i += blockDim.x) o[i] = make_uint4(0, 0, 0, 0);
        return;
    }
    const uint4 *r = table + (size_t)id * H8;
    for (int i = threadIdx.x; i < H8; i += blockDim.x) o[i] = r[i];
}

int lb_cuda_embed(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    const auto &e = op->u.embed;
    if (e.n_tok < 0 || e.n_hidden <= 0) LB_UNSUP("bad shape T=%d H=%d", e.n_tok, e.n_hidden);
    if (e.n_tok == 0) return 0;
    size_t T = e.n_tok, H = e.n_hidden;
    LB_TRY(lb_cu_check_buf(e.ids, LB_I32, T, "ids", err));
    LB_TRY(lb_cu_check_buf(e.table, -1, H, "table", err));
    LB_TRY(lb_cu_check_buf(e.out, -1, T * H, "out", err));
    int64_t n_rows = (int64_t)(e.table->n_elem / H);
    int threads = H >= 1024 ? 256 : 128;
    if (e.table->dt == LB_BF16 && e.out->dt == LB_BF16 && H % 8 == 0) {
        k_embed_rows_vec<<<(unsigned)T, threads, 0, c->stream>>>((const int32_t *)e.ids->d, (const uint4 *)e.table->d,
                                                                (uint4 *)e.out->d, (int)(H / 8), n_rows);
    } else {
        LB_DISPATCH_FB(e.table->dt, Tt, LB_DISPATCH_FB(e.out->dt, To,
            k_embed_rows<Tt, To><<<(unsigned)T, threads, 0, c->stream>>>((const int32_t *)e.ids->d,
                (const Tt *)e.table->d, (To *)e.out->d, (int)H, n_rows)));
    }
    LB_CU_LAUNCH();
    return 0;
}
