/* lora_dense.cu — mixed-LoRA for large steps (prefill) as two dense cuBLAS products.
 *
 * The segmented kernels of lora_seg.cu read and write y once per 16-token tile through plain
 * loads and stores; on an 8192-token prefill step they ran at 0.5-1.0 TB/s and cost ~37% of the
 * base projections' time with 16 rank-16 adapters (bench/results/lora_bench_v3_h100.txt). Here
 * the step's active adapters are packed side by side and both products go through cuBLASLt:
 *
 *   gather   A_stack [sum_j Rp_j, K] = the A of every active slot for every target, rows stacked
 *            (target j at row base_j, slot i at base_j + off_j[i]); B_j = the slots' B side by
 *            side (slot i in columns off_j[i] .. off_j[i+1]), stored twice, [N_j, 2 Rp_j] (see
 *            the mask); Rp_j = R_j rounded up to LD_PAD with zero rows/columns (fewer distinct
 *            GEMM shapes, aligned leading dims).
 *   shrink   Vf [T, sum Rp] (f32) = x A_stack^T, one GEMM for the op's 1-3 targets (x read once).
 *   mask     Vb_j [T, Rp_j] (bf16): w = Vf's columns of token t's own slot times that module's
 *            scale (zero elsewhere; base rows: all zero), rounded to bf16 as PEFT rounds the
 *            output of lora_A. LB_CUDA_LORA_DENSE_HILO=1 (the default of runs 11-25) splits w in
 *            two bf16 halves instead, hi = bf16(w) in columns 0 .. Rp_j and lo = bf16(w - hi) in
 *            Rp_j .. 2 Rp_j, so hi + lo carries w to ~16 bits as the segmented kernels' fp32 v
 *            does, at twice the expand's K (added after runs 8-9 for a golden failure whose cause
 *            turned out to be the beta = 1 epilogue, below; H100 run 26: workload 1 1.5% slower
 *            than one bf16, whose strict golden passes).
 *   expand   y_j = Vb_j B_j^T (hilo: [hi | lo] [B_j | B_j]^T = (hi + lo) B_j^T), one GEMM per
 *            target with K = Rp_j (hilo 2 Rp_j); fp32 accumulation, one rounding of y. Set mode
 *            only (see below).
 *
 * The shrink computes every active slot's columns for every token (n_act times the useful
 * FLOPs), the expand likewise multiplies zeros; both run on tensor cores at GEMM rate. Measured
 * on the H100 (lora_bench, which runs the ops in add mode; 16 adapters of rank 16, an
 * 8192-token Llama-3-8B step): 1.21 ms per layer before the hi/lo split (run 10), 1.34 ms with it
 * (run 11), against the segmented kernels' 1.97-2.01 ms; on decode steps (T = 256-512) it is
 * slower than the segmented kernels. Base
 * rows (Vb = 0) get y + 0 = y exactly. Used when the step has at least LB_CUDA_LORA_DENSE tokens
 * (default 1024 since H100 run 16: its strict golden passes and workload 1 ran 2.3% faster than
 * on the segmented kernels; 0: never), the op is in set mode, the op carries the
 * host copies of the segments, x is bf16 with K % 8 == 0,
 * y is bf16, at most LD_MAX_ACT distinct slots are active and every Rp_j <= LD_RMAX; otherwise
 * the segmented path runs (LB_CUDA_LORA_DENSE_STRICT=1 makes that an error, for tests).
 *
 * Also here: the gather cache (LB_CUDA_LORA_DENSE_CACHE) and the fold of the LoRA term into the
 * projection's GEMM (LB_CUDA_LORA_FOLD), each described where its code starts.
 *
 * Test: build/tests/test_ops (test_lora_dense: every LoRA layout, set mode, the step sequence,
 * with LB_CUDA_LORA_DENSE=1; test_lora_dense_cache; test_lora_fold). */
#include "common.cuh"

#define LD_MAX_ACT 32
#define LD_RMAX 1024
#define LD_PAD 64
#define LD_ROWS 32 /* token rows per block of the mask kernel */

/* The plan of one op, filled once on the host and passed by value to both kernels (~2.6 KB). */
struct ld_args {
    int n_tgt, n_act, K, T, n_seg;
    int kmul;                   /* 1: Vb = bf16(w); 2 (LB_CUDA_LORA_DENSE_HILO=1): [hi | lo] and B_j stored twice */
    int bvec;                   /* 1: every active rank and B pointer a multiple of 8 elements (16-byte gather) */
    int ld_vf;                  /* sum of Rp_j: columns of Vf, rows of A_stack */
    int N[3], Rp[3], base[3];   /* base_j: first row of target j in A_stack (column in Vf) */
    int off[3][LD_MAX_ACT + 1]; /* row (A) / column (B, Vb) of active slot i in target j; [n_act] = R_j */
    float scale[3][LD_MAX_ACT];
    int act_slot[LD_MAX_ACT];
    const bf16 *a[3][LD_MAX_ACT], *b[3][LD_MAX_ACT];
    const int32_t *seg_start, *seg_slot;
    bf16 *A;     /* [ld_vf][K] */
    bf16 *B[3];  /* [N_j][2 Rp_j] */
    float *vf;   /* [T][ld_vf] */
    bf16 *vb[3]; /* [T][2 Rp_j]: hi, lo */
    bf16 *xw;    /* fold (LB_CUDA_LORA_FOLD): X' [T][ldx] = [x | Vb_0 | Vb_1 | Vb_2], target j's Vb at
                  * column K + base_j; NULL: Vb_j in vb[j] */
    int ldx;
};

/* grid (x blocks, n_tgt, 2): z = 0 fills target j's rows of A_stack (16-byte copies), z = 1 its B_j. */
static __global__ void __launch_bounds__(256) k_ld_gather(const __grid_constant__ ld_args g)
{
    const int j = blockIdx.y;
    __shared__ int off_s[LD_MAX_ACT + 1];
    __shared__ const bf16 *p_s[LD_MAX_ACT];
    const bool is_b = blockIdx.z == 1;
    for (int i = threadIdx.x; i <= g.n_act; i += blockDim.x) {
        off_s[i] = g.off[j][i];
        if (i < g.n_act) p_s[i] = is_b ? g.b[j][i] : g.a[j][i];
    }
    __syncthreads();
    const int R = off_s[g.n_act], Rp = g.Rp[j];
    if (!is_b) {
        const int kv = g.K / 8;
        const size_t n = (size_t)Rp * kv;
        uint4 *dst = (uint4 *)(g.A + (size_t)g.base[j] * g.K);
        for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
            const int row = (int)(e / kv), c = (int)(e % kv);
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row < R) {
                int i = 0;
                while (off_s[i + 1] <= row) i++;
                v = ((const uint4 *)(p_s[i] + (size_t)(row - off_s[i]) * g.K))[c];
            }
            dst[e] = v;
        }
    } else if (g.bvec) { /* every rank and B pointer a multiple of 8 elements: 16-byte copies */
        const int rv = Rp / 8;
        const size_t n = (size_t)g.N[j] * rv;
        uint4 *dst = (uint4 *)g.B[j]; /* [N][kmul Rp / 8] */
        for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
            const int row = (int)(e / rv), c = (int)(e % rv), col = c * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (col < R) {
                int i = 0;
                while (off_s[i + 1] <= col) i++;
                const int r = off_s[i + 1] - off_s[i];
                v = *(const uint4 *)(p_s[i] + (size_t)row * r + (col - off_s[i]));
            }
            dst[(size_t)row * g.kmul * rv + c] = v;
            if (g.kmul == 2) dst[(size_t)row * 2 * rv + rv + c] = v;
        }
    } else {
        const size_t n = (size_t)g.N[j] * Rp;
        bf16 *dst = g.B[j]; /* [N][kmul Rp]: B_j, then B_j again (it multiplies the lo half of Vb) */
        for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
            const int row = (int)(e / Rp), col = (int)(e % Rp);
            bf16 v = __float2bfloat16_rn(0.0f);
            if (col < R) {
                int i = 0;
                while (off_s[i + 1] <= col) i++;
                const int r = off_s[i + 1] - off_s[i];
                v = p_s[i][(size_t)row * r + (col - off_s[i])];
            }
            dst[(size_t)row * g.kmul * Rp + col] = v;
            if (g.kmul == 2) dst[(size_t)row * 2 * Rp + Rp + col] = v;
        }
    }
}

/* grid (T / LD_ROWS, n_tgt): the block finds each of its rows' active-slot index (binary search
 * over the segments, then the slot among the active ones), then writes Vb_j for those rows. */
static __global__ void __launch_bounds__(256) k_ld_mask(const __grid_constant__ ld_args m)
{
    const int j = blockIdx.y, t0 = blockIdx.x * LD_ROWS;
    __shared__ int act_s[LD_ROWS];
    __shared__ int off_s[LD_MAX_ACT + 1];
    __shared__ float sc_s[LD_MAX_ACT];
    for (int i = threadIdx.x; i <= m.n_act; i += blockDim.x) {
        off_s[i] = m.off[j][i];
        if (i < m.n_act) sc_s[i] = m.scale[j][i];
    }
    if (threadIdx.x < LD_ROWS) {
        const int t = t0 + threadIdx.x;
        int a = -1;
        if (t < m.T) {
            int lo = 0, hi = m.n_seg - 1; /* last s with seg_start[s] <= t: the non-empty segment holding t */
            while (lo < hi) {
                const int mid = (lo + hi + 1) / 2;
                if (m.seg_start[mid] <= t) lo = mid;
                else hi = mid - 1;
            }
            const int slot = m.seg_slot[lo];
            for (int i = 0; i < m.n_act; i++)
                if (m.act_slot[i] == slot) a = i;
        }
        act_s[threadIdx.x] = a;
    }
    __syncthreads();
    const int Rp = m.Rp[j];
    const int rows = min(LD_ROWS, m.T - t0);
    const float *vf = m.vf + (size_t)t0 * m.ld_vf + m.base[j];
    const size_t vs = m.xw ? (size_t)m.ldx : (size_t)m.kmul * Rp; /* row stride of Vb_j */
    bf16 *vb = m.xw ? m.xw + (size_t)t0 * m.ldx + m.K + m.base[j] : m.vb[j] + (size_t)t0 * vs;
    for (int e = threadIdx.x; e < rows * Rp; e += blockDim.x) {
        const int r = e / Rp, col = e % Rp, a = act_s[r];
        float v = 0.0f;
        if (a >= 0 && col >= off_s[a] && col < off_s[a + 1]) v = vf[(size_t)r * m.ld_vf + col] * sc_s[a];
        const bf16 hi = __float2bfloat16_rn(v);
        vb[(size_t)r * vs + col] = hi;
        if (m.kmul == 2) vb[(size_t)r * vs + Rp + col] = __float2bfloat16_rn(v - __bfloat162float(hi));
    }
}

static size_t ld_al(size_t n) { return (n + 255) & ~(size_t)255; }

/* The gather cache (LB_CUDA_LORA_DENSE_CACHE=MiB, opt-in): one entry per (layer, the op's first
 * target) holds the A_stack and B_j that op gathered last, with the key they were gathered for
 * (active slots in order, each slot's load generation, kmul). An op whose key matches skips the
 * gather; a decode step's op sees the same adapters as the step before unless one finished or was
 * loaded. An entry grows only within the budget; past it the op gathers into the workspace. */
struct ld_ent {
    void *d;
    size_t cap;
    int valid, n_act, kmul, fold, n_tgt, tgt[3];
    int act[LD_MAX_ACT];
    unsigned gen[LD_MAX_ACT];
};
struct ld_cache {
    int n;
    struct ld_ent e[1]; /* [n_layer * LB_T_COUNT] */
};

void lb_cuda_lora_dense_free(struct lb_cu *c)
{
    struct ld_cache *lc = (struct ld_cache *)c->ldc;
    if (!lc) return;
    for (int i = 0; i < lc->n; i++)
        if (lc->e[i].d) cudaFree(lc->e[i].d);
    free(lc);
    c->ldc = NULL;
    c->ldc_used = 0;
}

/* The cache entry for this op with room for `bytes` (NULL: no cache, or over the budget); *hit:
 * it already holds what this op would gather. */
static struct ld_ent *ld_cache_get(struct lb_cu *c, const struct lb_op *op, const ld_args &a, int fold, size_t bytes,
                                   int *hit, struct lb_err *err, int *rc)
{
    const auto &l = op->u.lora;
    *hit = 0;
    *rc = 0;
    if (!c->lora_dense_cache || !c->slot_gen) return NULL;
    struct ld_cache *lc = (struct ld_cache *)c->ldc;
    if (!lc) {
        const int n = c->s.n_layer * LB_T_COUNT;
        lc = (struct ld_cache *)calloc(1, sizeof *lc + (size_t)n * sizeof(struct ld_ent));
        if (!lc) return NULL;
        lc->n = n;
        c->ldc = lc;
    }
    struct ld_ent *e = &lc->e[l.layer * LB_T_COUNT + l.tgt[0]];
    int same = e->valid && e->n_act == a.n_act && e->kmul == a.kmul && e->fold == fold && e->n_tgt == l.n_tgt &&
               e->cap >= bytes;
    for (int j = 0; same && j < l.n_tgt; j++) same = e->tgt[j] == l.tgt[j];
    for (int i = 0; same && i < a.n_act; i++) same = e->act[i] == a.act_slot[i] && e->gen[i] == c->slot_gen[a.act_slot[i]];
    if (same) {
        *hit = 1;
        return e;
    }
    e->valid = 0;
    if (e->cap < bytes) {
        if (c->ldc_used - e->cap + bytes > c->lora_dense_cache) return NULL;
        const size_t n = bytes + bytes / 8;
        cudaError_t ce = cudaStreamSynchronize(c->stream); /* the old buffer may still be read */
        if (ce == cudaSuccess && e->d) ce = cudaFree(e->d);
        if (ce != cudaSuccess) {
            *rc = lb_err_set(err, LB_E_DEVICE, "cuda: LoRA gather cache: %s", cudaGetErrorString(ce));
            return NULL;
        }
        c->ldc_used -= e->cap;
        e->d = NULL;
        e->cap = 0;
        if (cudaMalloc(&e->d, n) != cudaSuccess) {
            (void)cudaGetLastError();
            e->d = NULL;
            return NULL; /* no room: gather into the workspace as without the cache */
        }
        e->cap = n;
        c->ldc_used += n;
    }
    e->n_act = a.n_act;
    e->kmul = a.kmul;
    e->fold = fold;
    e->n_tgt = l.n_tgt;
    for (int j = 0; j < l.n_tgt; j++) e->tgt[j] = l.tgt[j];
    for (int i = 0; i < a.n_act; i++) {
        e->act[i] = a.act_slot[i];
        e->gen[i] = c->slot_gen[a.act_slot[i]];
    }
    return e; /* the caller gathers into it, then marks it valid */
}

/* The dense path does not apply to a step it was asked to take: 0 (the segmented path runs), or
 * an error under LB_CUDA_LORA_DENSE_STRICT=1 (tests: proves the cases they check ran here). */
static int ld_skip(const struct lb_cu *c, const char *why, struct lb_err *err)
{
    return c->lora_dense_strict ? lb_err_set(err, LB_E_INTERNAL, "dense LoRA path not taken: %s", why) : 0;
}

static int lf_prep(struct lb_cu *c, const struct lb_op *op, const ld_args &a, struct lb_err *err);

/* fold 0: the dense path (y_j = the term); 1: the fold (LB_CUDA_LORA_FOLD, below): Vb_j go into
 * X' = [x | Vb_0 | ..] and the projections' GEMMs add the term (lf_matmul). */
static int ld_run(struct lb_cu *c, const struct lb_op *op, int fold, struct lb_err *err)
{
    const auto &l = op->u.lora;
    if (!fold && (c->lora_dense_min <= 0 || l.n_tok < c->lora_dense_min)) return 0;
    if (!l.n_seg || !c->d_slots) return 0;
    auto skip = [&](const char *why) { return fold ? 0 : ld_skip(c, why, err); };
    /* Set mode only (y = the LoRA term; the projection then accumulates into it). Adding the term
     * into an existing bf16 y through cuBLASLt's beta = 1 epilogue loses it to a bf16 rounding
     * before the add: H100 run 13, LB_CUDA_LORA_DENSE_CHECK on the fixture goldens, dense y were
     * multiples of 2^-8 where y and the term nearly cancel, up to hundreds of bf16 steps off the
     * segmented kernels' fp32 sums; run 15, set-mode ops only: the two paths agree to a step or two
     * (a few elements of ~1e-5 excepted). That rounding is what failed the qwen2 golden in runs
     * 8-14. The segmented kernels add in fp32, so they take the ops that add into y (decode and
     * steps with base rows); large prefill steps with every row under an adapter run set-first
     * (LB_LORA_SET_MIN_TOK, src/forward.c), and those are the ones this path is for. Run 16 (H100):
     * the fixture goldens pass with every set-mode op on this path (strict). */
    if (!l.set) return 0;
    if (!l.h_seg_start || !l.h_seg_slot) return skip("no host copy of the segments");
    if (!l.x || l.x->dt != LB_BF16 || l.n_in % 8) return skip("x not bf16 with K % 8 == 0");
    for (int j = 0; j < l.n_tgt; j++)
        if (!l.y[j] || l.y[j]->dt != LB_BF16) return skip("y not bf16");
    const int T = l.n_tok, K = l.n_in;
    if (l.h_seg_start[0] != 0 || l.h_seg_start[l.n_seg] != T) return 0; /* the segmented path reports what is wrong */
    int act[LD_MAX_ACT], n_act = 0;
    for (int s = 0; s < l.n_seg; s++) {
        const int sl = l.h_seg_slot[s];
        if (sl < 0 || l.h_seg_start[s + 1] <= l.h_seg_start[s]) continue;
        if (sl >= c->s.n_slot) return 0; /* the segmented path ignores such rows */
        int seen = 0;
        for (int i = 0; i < n_act; i++) seen |= act[i] == sl;
        if (seen) continue;
        if (n_act == LD_MAX_ACT) return skip("more than LD_MAX_ACT adapters in the step");
        act[n_act++] = sl;
    }
    if (!n_act) return 0;
    for (int i = 1; i < n_act; i++) /* slot order: the same adapters give the same layout (and cache key) */
        for (int k = i; k > 0 && act[k - 1] > act[k]; k--) {
            const int t = act[k];
            act[k] = act[k - 1];
            act[k - 1] = t;
        }

    ld_args a;
    memset(&a, 0, sizeof a);
    int bvec = 1;
    for (int j = 0; j < l.n_tgt; j++) {
        const int t = l.tgt[j];
        if ((unsigned)t >= LB_T_COUNT || l.n_in != c->mod_in[t] || l.n_out[j] != c->mod_out[t])
            return 0; /* the segmented path reports the bad shape */
        int o = 0;
        for (int i = 0; i < n_act; i++) {
            const struct lb_cu_lora_mod &md = c->h_mods[((size_t)act[i] * c->s.n_layer + l.layer) * LB_T_COUNT + t];
            const int r = md.rank > 0 ? md.rank : 0;
            if (r && (((uintptr_t)md.a & 15) || !md.b)) return skip("A not 16-byte aligned");
            if (r && (r % 8 || ((uintptr_t)md.b & 15))) bvec = 0;
            a.off[j][i] = o;
            a.a[j][i] = md.a;
            a.b[j][i] = md.b;
            a.scale[j][i] = md.scale;
            o += r;
        }
        a.off[j][n_act] = o;
        a.Rp[j] = (o + LD_PAD - 1) / LD_PAD * LD_PAD;
        if (a.Rp[j] > LD_RMAX) return skip("the step's ranks add up to more than LD_RMAX");
        a.base[j] = a.ld_vf;
        a.N[j] = l.n_out[j];
        a.ld_vf += a.Rp[j];
    }
    if (fold) { /* the x copy into X' must cost less than the y round trip it saves; spare columns */
        long n_sum = 0;
        for (int j = 0; j < l.n_tgt; j++) n_sum += a.N[j];
        if (K > 2 * n_sum) return 0;
        for (int j = 0; j < l.n_tgt; j++)
            if (a.base[j] + a.Rp[j] > c->lora_fold) return 0;
    }
    /* workspace: A_stack, Vf, then B_j and Vb_j per target (not for the fold: B goes into the
     * weights, Vb into X'), each 256-byte aligned */
    size_t o_a = 0, o_vf = ld_al((size_t)a.ld_vf * K * 2), end = o_vf + ld_al((size_t)T * a.ld_vf * 4), o_b[3], o_vb[3];
    for (int j = 0; j < l.n_tgt && !fold; j++) {
        o_b[j] = end;
        o_vb[j] = o_b[j] + ld_al((size_t)a.N[j] * 2 * a.Rp[j] * 2);
        end = o_vb[j] + ld_al((size_t)T * 2 * a.Rp[j] * 2);
    }
    if (end > ((size_t)512 << 20)) return skip("workspace over 512 MiB");
    LB_TRY(lb_cu_check_buf(l.x, LB_BF16, (size_t)T * K, "x", err));
    LB_TRY(lb_cu_check_buf(l.seg_start, LB_I32, (size_t)l.n_seg + 1, "seg_start", err));
    LB_TRY(lb_cu_check_buf(l.seg_slot, LB_I32, (size_t)l.n_seg, "seg_slot", err));
    for (int j = 0; j < l.n_tgt; j++) LB_TRY(lb_cu_check_buf(l.y[j], LB_BF16, (size_t)T * l.n_out[j], "y", err));
    if (a.ld_vf == 0) { /* no active slot has a module for these targets: the term is 0 */
        for (int j = 0; j < l.n_tgt; j++) LB_CU(cudaMemsetAsync(l.y[j]->d, 0, (size_t)T * l.n_out[j] * 2, c->stream));
        return 1;
    }
    void *ws;
    LB_TRY(lb_cu_ws(c, end, &ws, err));
    char *w = (char *)ws;
    a.A = (bf16 *)(w + o_a);
    a.vf = (float *)(w + o_vf);
    for (int j = 0; j < l.n_tgt && !fold; j++) {
        a.B[j] = (bf16 *)(w + o_b[j]);
        a.vb[j] = (bf16 *)(w + o_vb[j]);
    }
    a.n_tgt = l.n_tgt;
    a.kmul = c->lora_dense_hilo && !fold ? 2 : 1;
    a.n_act = n_act;
    a.bvec = bvec;
    a.K = K;
    a.T = T;
    a.n_seg = l.n_seg;
    for (int i = 0; i < n_act; i++) a.act_slot[i] = act[i];
    a.seg_start = (const int32_t *)l.seg_start->d;
    a.seg_slot = (const int32_t *)l.seg_slot->d;

    /* A_stack and the B_j from the gather cache when it holds them (LB_CUDA_LORA_DENSE_CACHE) */
    size_t c_b[3], c_end = ld_al((size_t)a.ld_vf * K * 2);
    for (int j = 0; j < l.n_tgt && !fold; j++) { /* the fold gathers B into the weights' spare columns */
        c_b[j] = c_end;
        c_end += ld_al((size_t)a.N[j] * a.kmul * a.Rp[j] * 2);
    }
    int hit = 0, crc = 0;
    struct ld_ent *ent = ld_cache_get(c, op, a, fold, c_end, &hit, err, &crc);
    if (crc) return crc;
    if (ent) {
        a.A = (bf16 *)ent->d;
        for (int j = 0; j < l.n_tgt && !fold; j++) a.B[j] = (bf16 *)((char *)ent->d + c_b[j]);
    }
    size_t most = 0; /* the gather's largest part: A rows in 16-byte vectors or B elements */
    for (int j = 0; j < l.n_tgt; j++) {
        size_t a_vec = (size_t)a.Rp[j] * (K / 8), b_el = (size_t)a.N[j] * a.Rp[j] / (bvec ? 8 : 1);
        most = a_vec > most ? a_vec : most;
        most = b_el > most ? b_el : most;
    }
    const unsigned gx = cdiv(most, 256), cap = (unsigned)c->n_sm * 8;
    if (!hit) {
        k_ld_gather<<<dim3(gx < cap ? gx : cap, l.n_tgt, fold ? 1 : 2), 256, 0, c->stream>>>(a);
        LB_CU_LAUNCH();
        if (ent) ent->valid = 1;
    }
    LB_TRY(lb_cublas_gemm(c, l.x->d, a.A, a.vf, LB_F32, T, K, a.ld_vf, 0, err));
    if (fold) return lf_prep(c, op, a, err);
    k_ld_mask<<<dim3(cdiv(T, LD_ROWS), l.n_tgt), 256, 0, c->stream>>>(a);
    LB_CU_LAUNCH();
    for (int j = 0; j < l.n_tgt; j++) {
        if (a.off[j][n_act] == 0) { /* no active slot has this target: its term is 0 */
            LB_CU(cudaMemsetAsync(l.y[j]->d, 0, (size_t)T * l.n_out[j] * 2, c->stream));
            continue;
        }
        LB_TRY(lb_cublas_gemm(c, a.vb[j], a.B[j], l.y[j]->d, LB_BF16, T, a.kmul * a.Rp[j], a.N[j], 0, err)); /* y = the term */
    }
    return 1;
}

int lb_cuda_lora_dense(struct lb_cu *c, const struct lb_op *op, struct lb_err *err) { return ld_run(c, op, 0, err); }

/* ------------------------------------------------------------------ the fold (LB_CUDA_LORA_FOLD=R)
 * The LoRA term folded into the projection's GEMM (opt-in, not yet run on a GPU when written):
 *
 *   y_j = x W_j^T + Vb_j B_j^T = [x | Vb_0 | .. | Vb_j] [W_j | 0 | .. | B_j]^T
 *
 * one GEMM per target with K' = K + base_j + Rp_j, fp32 accumulation and one rounding of y; no
 * expand kernel, no y written by the LoRA and read back by the GEMM's epilogue (on an 8192-token
 * step, 0.94 GB per layer for gate/up alone). A set-mode LoRA op (forward.c issues it right before
 * its projections, which accumulate into y) computes Vb_j as the dense path does (one shrink GEMM
 * for the op's targets, the mask) into X' = [x | Vb_0 | Vb_1 | Vb_2] (x copied in) and leaves
 * y alone; each projection's matmul then finds its pending target (lb_cuda_lora_fold_matmul) and
 * runs the GEMM above with beta 0. The weights get R spare columns per row the first time a fold
 * needs them (the weight is reallocated with rows K + spare apart, lb_buf.ld; spare grows up to
 * LB_CUDA_LORA_FOLD), and the spare columns [0, base_j + Rp_j) of W_j hold zeros and the active
 * slots' B side by side, rewritten only when the active slots or their contents change (a
 * per-weight key like the gather cache's). Ops whose x is wider than twice their outputs (down:
 * copying x would cost more than the y round trip) and ops needing more spare columns than
 * LB_CUDA_LORA_FOLD take the dense or segmented path as before. When a weight cannot be widened
 * (no device memory), that projection runs unfolded and the segmented kernels add its term. Any
 * op other than the pending projections' matmuls while a term is pending is an internal error. */

struct lf_pend {
    const struct lb_buf *y;
    int tgt, N, base, Rp, R, done;
    int off[LD_MAX_ACT + 1];
    const bf16 *b[LD_MAX_ACT];
};
struct lf_wt { /* what the spare columns of one weight hold */
    const struct lb_buf *w;
    int valid, n_act, base, need;
    int act[LD_MAX_ACT];
    unsigned gen[LD_MAX_ACT];
};
struct lf_state {
    bf16 *xw;
    size_t xw_cap;
    const struct lb_buf *x;
    int T, K, ldx, n_act, n_pend;
    int act[LD_MAX_ACT];
    struct lf_pend p[3];
    struct lb_op op; /* the LoRA op, for the unfolded fallback */
    struct lf_wt *wt;
    int n_wt, cap_wt;
};

struct lf_wb_args {
    bf16 *w;
    int ld, K, N, need, base, n_act, vec;
    int off[LD_MAX_ACT + 1];
    const bf16 *b[LD_MAX_ACT];
};

/* the spare columns [K, K + need) of every row of W': zeros, and the active slots' B rows side by
 * side in [K + base, K + base + R) */
static __global__ void __launch_bounds__(256) k_lf_wb(const __grid_constant__ lf_wb_args g)
{
    __shared__ int off_s[LD_MAX_ACT + 1];
    for (int i = threadIdx.x; i <= g.n_act; i += blockDim.x) off_s[i] = g.off[i];
    __syncthreads();
    const int R = off_s[g.n_act];
    if (g.vec) {
        const int nc = g.need / 8;
        const size_t n = (size_t)g.N * nc;
        for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
            const int row = (int)(e / nc), col = (int)(e % nc) * 8, rc = col - g.base;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (rc >= 0 && rc < R) {
                int i = 0;
                while (off_s[i + 1] <= rc) i++;
                const int r = off_s[i + 1] - off_s[i];
                v = *(const uint4 *)(g.b[i] + (size_t)row * r + (rc - off_s[i]));
            }
            *(uint4 *)(g.w + (size_t)row * g.ld + g.K + col) = v;
        }
        return;
    }
    const size_t n = (size_t)g.N * g.need;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(e / g.need), col = (int)(e % g.need), rc = col - g.base;
        bf16 v = __float2bfloat16_rn(0.0f);
        if (rc >= 0 && rc < R) {
            int i = 0;
            while (off_s[i + 1] <= rc) i++;
            const int r = off_s[i + 1] - off_s[i];
            v = g.b[i][(size_t)row * r + (rc - off_s[i])];
        }
        g.w[(size_t)row * g.ld + g.K + col] = v;
    }
}

/* x [T][K] -> the first K columns of X' [T][ldx] (K, ldx multiples of 8) */
static __global__ void k_lf_copy_x(const bf16 *x, bf16 *xw, int T, int K, int ldx)
{
    const int kv = K / 8;
    const size_t n = (size_t)T * kv;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t t = e / kv, c = e % kv;
        *(uint4 *)(xw + t * ldx + c * 8) = ((const uint4 *)x)[e];
    }
}

static struct lf_state *lf_of(struct lb_cu *c)
{
    if (!c->lf) c->lf = calloc(1, sizeof(struct lf_state));
    return (struct lf_state *)c->lf;
}

void lb_cuda_lora_fold_free(struct lb_cu *c)
{
    struct lf_state *f = (struct lf_state *)c->lf;
    if (!f) return;
    if (f->xw) cudaFree(f->xw);
    free(f->wt);
    free(f);
    c->lf = NULL;
    c->lf_pending = 0;
}

/* After the shrink GEMM of a fold: X' = [x | Vb_j ..], the pending targets recorded. */
static int lf_prep(struct lb_cu *c, const struct lb_op *op, const ld_args &a0, struct lb_err *err)
{
    const auto &l = op->u.lora;
    struct lf_state *f = lf_of(c);
    if (!f) return lb_err_set(err, LB_E_OOM, "out of host memory");
    ld_args a = a0;
    const int T = l.n_tok, K = l.n_in, ldx = K + a.ld_vf;
    const size_t bytes = (size_t)T * ldx * 2;
    if (bytes > f->xw_cap) {
        LB_CU(cudaStreamSynchronize(c->stream)); /* the old X' may still be read */
        if (f->xw) LB_CU(cudaFree(f->xw));
        f->xw = NULL;
        f->xw_cap = 0;
        const size_t n = bytes + bytes / 4 + 4096;
        cudaError_t e = cudaMalloc((void **)&f->xw, n);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            f->xw = NULL;
            return lb_err_set(err, LB_E_OOM, "cuda: LoRA fold buffer of %zu bytes: %s", n, cudaGetErrorName(e));
        }
        f->xw_cap = n;
    }
    a.xw = f->xw;
    a.ldx = ldx;
    const size_t nv = (size_t)T * (K / 8);
    const unsigned cap = (unsigned)c->n_sm * 8, gx = cdiv(nv, 256);
    k_lf_copy_x<<<gx < cap ? gx : cap, 256, 0, c->stream>>>((const bf16 *)l.x->d, f->xw, T, K, ldx);
    LB_CU_LAUNCH();
    k_ld_mask<<<dim3(cdiv(T, LD_ROWS), l.n_tgt), 256, 0, c->stream>>>(a);
    LB_CU_LAUNCH();
    f->x = l.x;
    f->T = T;
    f->K = K;
    f->ldx = ldx;
    f->n_act = a.n_act;
    for (int i = 0; i < a.n_act; i++) f->act[i] = a.act_slot[i];
    f->op = *op;
    f->n_pend = l.n_tgt;
    for (int j = 0; j < l.n_tgt; j++) {
        struct lf_pend *p = &f->p[j];
        p->y = l.y[j];
        p->tgt = l.tgt[j];
        p->N = a.N[j];
        p->base = a.base[j];
        p->Rp = a.Rp[j];
        p->R = a.off[j][a.n_act];
        p->done = 0;
        for (int i = 0; i <= a.n_act; i++) p->off[i] = a.off[j][i];
        for (int i = 0; i < a.n_act; i++) p->b[i] = a.b[j][i];
    }
    c->lf_pending = l.n_tgt;
    return 1;
}

int lb_cuda_lora_fold(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    if (c->lora_fold <= 0 || !op->u.lora.set) return 0;
    return ld_run(c, op, 1, err);
}

/* Reallocates weight w [N][K] with rows K + spare apart (1; 0: no device memory, w unchanged). */
static int lf_widen(struct lb_cu *c, struct lb_buf *w, int K, int N, int spare, struct lb_err *err)
{
    const int ld_old = w->ld ? w->ld : K, ld = K + spare;
    void *d = NULL;
    if (c->lora_fold_nomem) return 0; /* LB_CUDA_LORA_FOLD_TEST_NOMEM=1 (tests): as if no room */
    LB_CU(cudaStreamSynchronize(c->stream)); /* earlier ops may still read the old rows */
    if (cudaMalloc(&d, (size_t)N * ld * 2) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    LB_CU(cudaMemcpy2DAsync(d, (size_t)ld * 2, w->d, (size_t)ld_old * 2, (size_t)K * 2, N, cudaMemcpyDeviceToDevice,
                            c->stream));
    LB_CU(cudaStreamSynchronize(c->stream));
    LB_CU(cudaFree(w->d));
    w->d = d;
    w->ld = ld;
    c->buf_gen++;
    return 1;
}

int lb_cuda_lora_fold_matmul(struct lb_cu *c, const struct lb_op *op, struct lb_err *err)
{
    if (!c->lf_pending) return 0;
    struct lf_state *f = (struct lf_state *)c->lf;
    const auto &m = op->u.matmul;
    int j = -1;
    for (int i = 0; i < f->n_pend; i++)
        if (!f->p[i].done && f->p[i].y == m.y) j = i;
    if (j < 0 || m.x != f->x || !m.accumulate || m.n_tok != f->T || m.n_in != f->K || m.n_out != f->p[j].N ||
        m.y->dt != LB_BF16 || m.w->dt != LB_BF16)
        return lb_err_set(err, LB_E_INTERNAL,
                          "cuda: a LoRA term folded into its projection is pending, and this matmul is not that "
                          "projection");
    struct lf_pend *p = &f->p[j];
    p->done = 1;
    c->lf_pending--;
    const int T = m.n_tok, K = m.n_in, N = m.n_out, need = p->base + p->Rp;
    if (p->R == 0) { /* no active slot has this module: y = x W^T */
        LB_TRY(lb_cublas_gemm_ld(c, m.x->d, K, m.w->d, m.w->ld ? m.w->ld : K, m.y->d, LB_BF16, T, K, N, 0, err));
        return 1;
    }
    struct lf_wt *wt = NULL;
    for (int i = 0; i < f->n_wt && !wt; i++)
        if (f->wt[i].w == m.w) wt = &f->wt[i];
    if (!wt) {
        if (f->n_wt == f->cap_wt) {
            int nc = f->cap_wt ? 2 * f->cap_wt : 64;
            struct lf_wt *nw = (struct lf_wt *)realloc(f->wt, sizeof *nw * (size_t)nc);
            if (!nw) return lb_err_set(err, LB_E_OOM, "out of host memory");
            f->wt = nw;
            f->cap_wt = nc;
        }
        wt = &f->wt[f->n_wt++];
        memset(wt, 0, sizeof *wt);
        wt->w = m.w;
    }
    int spare = m.w->ld ? m.w->ld - K : 0;
    if (spare < need) {
        /* at least 512 columns (up to the cap) on the first widening: each widening synchronises
         * and copies the weight, so a need that grows a little later should still fit */
        int want = (need + 127) / 128 * 128;
        if (want < 512) want = 512;
        if (want > c->lora_fold) want = c->lora_fold >= need ? c->lora_fold : need;
        int rc = lf_widen(c, m.w, K, N, want, err);
        if (rc < 0) return rc;
        wt->valid = 0;
        if (rc == 0) { /* no room for the spare columns: unfolded, the segmented kernels add the term */
            LB_TRY(lb_cublas_gemm_ld(c, m.x->d, K, m.w->d, m.w->ld ? m.w->ld : K, m.y->d, LB_BF16, T, K, N, 0, err));
            if (m.bias) LB_TRY(lb_cuda_bias_add(c, m.y, m.bias, T, N, err));
            struct lb_op o2 = f->op;
            o2.u.lora.n_tgt = 1;
            o2.u.lora.tgt[0] = (enum lb_target)p->tgt;
            o2.u.lora.y[0] = m.y;
            o2.u.lora.n_out[0] = N;
            o2.u.lora.set = 0;
            LB_TRY(lb_cuda_lora(c, &o2, err));
            return 2;
        }
    }
    int same = wt->valid && wt->n_act == f->n_act && wt->base == p->base && wt->need == need;
    for (int i = 0; same && i < f->n_act; i++) same = wt->act[i] == f->act[i] && wt->gen[i] == c->slot_gen[f->act[i]];
    if (!same) {
        lf_wb_args g;
        memset(&g, 0, sizeof g);
        g.w = (bf16 *)m.w->d;
        g.ld = m.w->ld;
        g.K = K;
        g.N = N;
        g.need = need;
        g.base = p->base;
        g.n_act = f->n_act;
        g.vec = need % 8 == 0 && p->base % 8 == 0;
        for (int i = 0; i <= f->n_act; i++) g.off[i] = p->off[i];
        for (int i = 0; i < f->n_act; i++) {
            g.b[i] = p->b[i];
            const int r = p->off[i + 1] - p->off[i];
            if (r && (r % 8 || ((uintptr_t)p->b[i] & 15))) g.vec = 0;
        }
        const size_t n = (size_t)N * (g.vec ? need / 8 : need);
        const unsigned cap = (unsigned)c->n_sm * 8, gx = cdiv(n, 256);
        k_lf_wb<<<gx < cap ? gx : cap, 256, 0, c->stream>>>(g);
        LB_CU_LAUNCH();
        wt->valid = 1;
        wt->n_act = f->n_act;
        wt->base = p->base;
        wt->need = need;
        for (int i = 0; i < f->n_act; i++) {
            wt->act[i] = f->act[i];
            wt->gen[i] = c->slot_gen[f->act[i]];
        }
    }
    LB_TRY(lb_cublas_gemm_ld(c, f->xw, f->ldx, m.w->d, m.w->ld, m.y->d, LB_BF16, T, K + need, N, 0, err));
    return 1;
}
