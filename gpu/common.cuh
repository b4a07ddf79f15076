/* common.cuh — check macros, the CUDA backend's private state, and small device helpers.
 *
 * Included by every .cu file in gpu/. Not seen by src/ (src sees only backend.h).
 *
 * Errors: every CUDA / cuBLAS call goes through LB_CU / LB_CUBLAS, which on failure fill
 * the caller's `struct lb_err *err` with the expression text, file:line and the library's
 * error name, and return LB_E_DEVICE from the enclosing function. LB_CU_LAUNCH() checks the
 * last launch error (always: it costs nothing, a launch error is found at launch time). */
#ifndef LB_GPU_COMMON_CUH
#define LB_GPU_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "err.h"
#include "util.h"
}

typedef __nv_bfloat16 bf16;

#define LB_CU(expr)                                                                                        \
    do {                                                                                                   \
        cudaError_t e_ = (expr);                                                                           \
        if (e_ != cudaSuccess)                                                                             \
            return lb_err_set(err, LB_E_DEVICE, "%s:%d: %s: %s (%s)", __FILE__, __LINE__, #expr,          \
                              cudaGetErrorName(e_), cudaGetErrorString(e_));                               \
    } while (0)

#define LB_CU_LAUNCH() LB_CU(cudaGetLastError())

/* Programmatic dependent launch (compute capability 9.0+; no-ops below). A kernel launched with
 * lb_launch(pdl = 1, ...) may start before the kernel ahead of it in the stream has finished: once
 * every block of that one has called pdl_trigger() or exited. Before its pdl_wait() it may read only
 * what was complete when the kernel ahead started, and write nothing; pdl_wait() returns when the
 * kernel ahead has completed and its writes are visible. A kernel that triggers must do so after its
 * own pdl_wait() (if it has one), so that what came before it is complete when its dependents start. */
static __device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
static __device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
static __device__ __forceinline__ void prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
/* kernel<<<g, b, sm, s>>>(args...), as a programmatic dependent launch when pdl is set */
template <typename... P, typename... A>
static cudaError_t lb_launch(int pdl, void (*k)(P...), dim3 g, dim3 b, size_t sm, cudaStream_t s, A... args)
{
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = g;
    cfg.blockDim = b;
    cfg.dynamicSmemBytes = sm;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, ((P)args)...);
}

/* Returns from the enclosing int function when a call into an LB-style function fails. */
#define LB_TRY(expr)                                                                                       \
    do {                                                                                                   \
        int rc_ = (expr);                                                                                  \
        if (rc_ < 0) return rc_;                                                                           \
    } while (0)

#define LB_UNSUP(...) return lb_err_set(err, LB_E_UNSUPPORTED, __VA_ARGS__)

/* ------------------------------------------------------------------ buffers */
struct lb_buf {
    enum lb_dtype dt;
    size_t n_elem;
    void *d;       /* owned, device, n_elem of dt */
    int is_weight; /* 1: made by ops->weight (read-only by convention) */
};

/* ------------------------------------------------------------------ adapter slots
 * One module of one adapter in one slot, as the kernels see it. Stored in a device table
 * indexed [slot][layer][target]. a: [rank, n_in] bf16, b: [n_out, rank] bf16, both packed
 * at the module's own rank inside a region sized for max_rank. rank 0: module absent. */
struct lb_cu_lora_mod {
    const bf16 *a;
    const bf16 *b;
    int rank;
    float scale;
};

struct lb_cublas; /* dl_cublas.cu */

#define LB_CU_PROF_KEYS (16 * 4 * 2) /* op kind x variant x (step <= 512 tokens, larger) */
#define LB_CU_UP_NBLK 4
#define LB_CU_GRAPH_CAP 64 /* recorded step graphs kept (least recently used dropped) */
/* One recorded step (graph_begin/graph_end in backend_cuda.cu). */
struct lb_cu_graph {
    uint64_t key;
    int seen;                     /* steps of this key so far */
    int failed;                   /* recording failed once: its steps run as ops */
    int unfit;                    /* an op of the recording depends on more than the key */
    unsigned long long mem_gen;   /* c->mem_gen when recorded */
    unsigned long long last_use;  /* for eviction */
    cudaGraphExec_t exec;         /* NULL until recorded */
};
/* A ring of pinned host blocks for asynchronous host-to-device copies queued on one stream. */
struct lb_cu_ring {
    char *h;             /* owned, pinned, LB_CU_UP_NBLK * blk bytes */
    size_t blk;          /* bytes per block */
    size_t off;          /* bytes used in the current block */
    int cur;             /* current block */
    cudaStream_t stream; /* the stream whose copies read the blocks */
    cudaEvent_t ev[LB_CU_UP_NBLK];
    int pending[LB_CU_UP_NBLK]; /* 1: ev[i] recorded and not yet known complete */
};

struct lb_cu {
    int device;
    int n_sm;
    /* Kernel variants, read once at open from the environment (for A/B tests and fallbacks):
     * LB_CUDA_LORA=1 -> SIMT shrink (v1), 2 -> tensor-core shrink with the tile list built by every
     * op, default 3 -> as 2 with the tile list built once per step (cached, see lora_seg.cu);
     * LB_CUDA_ATTN=1 -> SIMT attention for every token, 2 -> tensor-core prefill + SIMT decode,
     * 3 -> tensor-core prefill + cp.async-pipelined SIMT decode (k_attn_decode), default 4 -> as 3
     * with the tensor-core decode (k_attn_decode_tc) where its shapes apply. */
    int lora_variant, attn_variant;
    int elem_variant; /* 2 (default): 16-byte vectorised RMSNorm, SwiGLU and RoPE (bf16); LB_CUDA_ELEM=1: scalar */
    int lora_dense_min; /* LB_CUDA_LORA_DENSE=N: set-mode ops of steps of >= N tokens take the dense
                         * cuBLAS LoRA path (lora_dense.cu); default 1024, 0: never */
    size_t lora_dense_cache; /* LB_CUDA_LORA_DENSE_CACHE=MiB (bytes here): device memory the dense path may
                              * keep its gathered A_stack/B_j in across steps, per (layer, op); 0: off */
    size_t ldc_used;         /* bytes held by that cache */
    void *ldc;               /* lora_dense.cu's cache entries, [n_layer][LB_T_COUNT], owned */
    unsigned *slot_gen;      /* host [n_slot]: bumped by every lora_load/lora_clear of the slot */
    int lora_dense_check;  /* LB_CUDA_LORA_DENSE_CHECK=1: every dense LoRA op is compared with the
                            * segmented kernels on a copy of y; differences are printed (debug) */
    int lora_dense_hilo; /* LB_CUDA_LORA_DENSE_HILO=1: the dense path carries v as bf16 hi + lo (K = 2 Rp
                          * in the expand); default 0: one bf16 (K = Rp; H100 run 26) */
    int lora_dense_strict; /* LB_CUDA_LORA_DENSE_STRICT=1: a step the dense path was asked to take
                            * but cannot is an error (tests) */
    int lora_dense_rmax; /* LB_CUDA_LORA_DENSE_RMAX: the most columns (the step's active ranks summed
                          * per target, rounded up to 64) the dense path takes; default 1024 */
    int lora_dense_min_rows; /* LB_CUDA_LORA_DENSE_MIN_ROWS=N: the dense path takes only the slots with
                              * at least N rows in the step; the other slots' rows get their term from
                              * the segmented kernels after it (default 0: every slot dense) */
    int32_t *d_hyb_slot, *h_hyb_slot; /* owned: seg_slot with the dense slots as -1 (device, host) */
    size_t hyb_bytes, h_hyb_n;
    int lora_exact_grid; /* set around the hybrid's segmented op: grid from the host copy's tiles */
    int lora_hybrid_skip; /* LB_CUDA_LORA_DENSE_HYBRID_SKIP=1 (tests only): the hybrid's segmented part is
                           * not run, so its rows keep y = 0; test_lora_dense_hybrid must then fail */
    long long ld_hybrid, ld_hybrid_rows; /* dense ops that left slots to the segmented kernels; their rows */
    int lora_dense_group_rows;           /* LB_CUDA_LORA_DENSE_GROUP_ROWS=G: the dense path's rows in groups of
                                          * whole segments of about G rows, each over its own slots' columns */
    long long ld_grouped, ld_groups;     /* dense ops run in row groups; the groups */
    int lora_group_skip_last;            /* LB_CUDA_LORA_DENSE_GROUP_SKIP_LAST=1 (tests only): the last row group's
                                          * products are skipped, so its rows are wrong: proves groups ran */
    long long ld_taken, ld_skip_rmax, ld_skip_other; /* dense path: ops it ran, ops of >= LB_CUDA_LORA_DENSE
                                                      * tokens it left to the segmented kernels (their
                                                      * ranks over lora_dense_rmax; any other reason) */
    int lora_expand; /* LB_CUDA_LORA_EXPAND=2: variant 3 keeps the v2 expand (A/B); default 3 */
    int lora_act; /* LB_CUDA_LORA_ACT=0: an act LoRA op (gate/up + SwiGLU) runs as the add-mode op and the
                   * SwiGLU kernel; default 1: k_lora_expand_act where it applies */
    int lora_async; /* LB_CUDA_LORA_ASYNC: 1 (default) cp.async staging in the LoRA shrink; 0: the
                     * loads of runs 1-22 */
    int lora_split_blocks; /* LB_CUDA_LORA_SPLIT=N: shrink blocks per SM the K split aims at (default 8) */
    int lora_pdl; /* LB_CUDA_LORA_PDL (default 1 on compute capability 9.0+; 0: off): on steps of <= 512 tokens
                   * the segmented LoRA pair as programmatic
                   * dependent launches: the expand's blocks start while the shrink runs and load
                   * their tile, module, y and B before they wait for its v (lora_seg.cu) */
    int attn_prefill; /* LB_CUDA_ATTN_PREFILL=2: the WMMA prefill (v2); 3: mma.sync FA2-style; default 4: its lean variant */
    int attn_dec_order; /* LB_CUDA_ATTN_DEC_ORDER=1: the v3 and v4 decode grids with kv heads fastest
                         * (v3: no gain in run 7; default 0, sequences fastest) */
    int attn_dec_nst;   /* LB_CUDA_ATTN_DEC_NST: cp.async stages of the v5 decode (2, 3 or 4; default 3) */
    int attn_dec_lean;  /* LB_CUDA_ATTN_DEC_LEAN (default 1; 0: plain v5): v5 with one page lookup per
                         * 16-key tile, no softmax for padding rows (G <= 8), the rescale only when a
                         * maximum grew */
    cudaStream_t stream; /* owned: every op runs on it */
    struct lb_cublas *blas; /* owned: run-time-loaded cuBLASLt + handle + workspace */

    int have_setup;
    struct lb_backend_setup s;
    /* Paged KV cache: [n_layer][n_page][page_size][NKV][D] bf16 each (NKV is this rank's). */
    bf16 *d_kcache, *d_vcache; /* owned, device */
    int n_kv_head_local, n_head_local;
    float *d_inv_freq; /* owned, device [D/2]: RoPE inverse frequencies (llama3-scaled if asked) */

    /* Adapter slots: one allocation, carved per (slot, layer, target). */
    bf16 *d_slots;                     /* owned, device */
    size_t slot_stride_elem;           /* elements of one slot */
    size_t mod_off_elem[LB_T_COUNT];   /* offset of target t inside one layer of a slot */
    size_t layer_stride_elem;          /* elements of one layer inside a slot */
    int mod_in[LB_T_COUNT], mod_out[LB_T_COUNT]; /* this rank's n_in/n_out per target */
    struct lb_cu_lora_mod *d_mods;     /* owned, device [n_slot][n_layer][LB_T_COUNT] */
    struct lb_cu_lora_mod *h_mods;     /* owned, host mirror of d_mods */

    /* Bumped by every upload, alloc and free: per-step metadata derived from uploaded index
     * buffers (the LoRA tile list) is cached under (buffer pointers, sizes, buf_gen). */
    unsigned long long buf_gen;
    /* LoRA tile list cache (lora_variant 3): count (first 256 bytes) + tiles, grow-only. */
    void *d_lora_tl;
    size_t lora_tl_bytes;
    const void *lc_start, *lc_slot;
    int lc_nseg, lc_ntok, lc_valid;
    unsigned long long lc_gen;

    /* CUDA graphs of decode steps (graph_begin/graph_end, backend_cuda.cu): LB_CUDA_GRAPHS=0 turns
     * them off (default on). A key's first step runs as ops (sizing workspaces, making GEMM plans),
     * its second is recorded, later ones replay the recording. mem_gen is bumped whenever device
     * memory a recording may point into is freed (workspaces regrown, buffers freed): recordings
     * of an older mem_gen are dropped and made again. */
    int graphs;
    struct lb_cu_graph graph[LB_CU_GRAPH_CAP];
    int n_graph;
    struct lb_cu_graph *g_rec; /* being recorded (stream capture on `stream`) */
    unsigned long long mem_gen, g_clock;
    long long st_g_replay, st_g_rec, st_g_fail, st_g_drop;

    /* Grow-only scratch for op workspaces (LoRA partials, attention splits, sampling). */
    void *d_ws;
    size_t ws_bytes;
    /* Grow-only pinned host staging for large converting uploads, downloads and adapter loads
     * (used only under a stream synchronisation). */
    void *h_stage;
    size_t stage_bytes;

    /* Upload ring (backend_cuda.cu, ring_*): pinned host memory in LB_CU_UP_NBLK blocks, allocated
     * once (at setup, or at the first upload), so that upload() copies the caller's data into it
     * and queues cudaMemcpyAsync without waiting for the GPU. Uploads fill the current block; when
     * one does not fit, an event is recorded for the block on the ring's stream (it completes once
     * every copy queued from it has run) and the next block is taken after waiting on its own
     * event. A synchronisation of the compute stream (download, sync) frees every block of `up` at
     * once. Uploads larger than a block take the synchronous path through h_stage. */
    struct lb_cu_ring up;
    /* LB_CUDA_COPY_STREAM (default 1): adapter modules and the slot table go through their own ring `ld` on
     * the copy stream `cstream`, overlapping the ops already queued on the compute stream (the
     * backend contract: lora_load/lora_clear touch only a slot that no queued op reads). The next
     * op makes the compute stream wait for them (cs_join: event cs_ev). 0: both on `stream`. */
    int copy_stream;
    int copy_threads; /* host threads staging an adapter module (LB_CUDA_COPY_THREADS, default 4) */
    cudaStream_t cstream;
    cudaEvent_t cs_ev;
    int cs_pending; /* copies queued on cstream since the last join */
    struct lb_cu_ring ld;

    /* LB_CUDA_STATS=1: host-side time split of the step loop, printed at destroy (stderr). A step
     * runs from its first ring upload to its first download; synchronous uploads (weights) end
     * any step in progress and are counted apart. */
    int stats;
    double st_t_last;                      /* end of the last download (s), 0 before the first */
    double st_gap, st_upload, st_enqueue, st_wait, st_first_up; /* seconds */
    double st_sync_s;                      /* synchronous (larger than a block) uploads */
    long long st_steps, st_up_n, st_up_bytes, st_up_sync, st_sync_bytes, st_blk_wait;
    double st_small_gap, st_small_enq, st_small_wait; long long st_small_steps; int st_step_tok;
    /* LB_CUDA_PROFILE=1: GPU time per op, from a pair of events around each op (read back at
     * each stream synchronisation), keyed by op kind, variant and step size; printed at destroy */
    int prof;
    cudaEvent_t *prof_ev;                  /* [2 * prof_cap] */
    int *prof_key;                         /* [prof_cap] key of each recorded op */
    int prof_n, prof_cap;
    double prof_ms[LB_CU_PROF_KEYS], prof_span_ms;
    long long prof_cnt[LB_CU_PROF_KEYS];
};

static inline struct lb_cu *cu_of(struct lb_backend *be) { return (struct lb_cu *)be->impl; }

/* Grows the device workspace to at least n bytes (synchronising the stream first when it
 * must reallocate). Allocation happens during the first steps only. */
int lb_cu_ws(struct lb_cu *c, size_t n, void **out, struct lb_err *err);
/* A grow-only device buffer *p of *cap bytes: at least n (with room to grow); the old one is
 * freed once the stream has finished with it. LB_E_OOM naming `what`. */
int lb_cu_grow(struct lb_cu *c, void **p, size_t *cap, size_t n, const char *what, struct lb_err *err);

/* ------------------------------------------------------------------ op entries (one per family) */
int lb_cuda_embed(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_rmsnorm(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_matmul(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_lora(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
/* 1: done by the dense path (lora_dense.cu), 0: not applicable (take the segmented one), < 0: error */
int lb_cuda_lora_dense(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
void lb_cuda_lora_dense_free(struct lb_cu *c); /* the cache above */
int lb_cuda_rope(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_kv_write(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_attn(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_swiglu(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_add(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_gather(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);
int lb_cuda_sample(struct lb_cu *c, const struct lb_op *op, struct lb_err *err);

/* cuBLASLt, opened at run time (dl_cublas.cu). */
int lb_cublas_open(struct lb_cu *c, struct lb_err *err);
void lb_cublas_close(struct lb_cu *c);
void lb_cublas_stats(const struct lb_cu *c); /* LB_CUDA_STATS: plans made, their host time */
/* y[T,N] (+)= x[T,K] @ w[N,K]^T; x, w bf16; y bf16 or f32. */
int lb_cublas_gemm(struct lb_cu *c, const void *x, const void *w, void *y, enum lb_dtype y_dt, int n_tok, int n_in,
                   int n_out, int accumulate, struct lb_err *err);

/* ------------------------------------------------------------------ device helpers */
__device__ __forceinline__ float ldf(const float *p) { return *p; }
__device__ __forceinline__ float ldf(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void stf(float *p, float v) { *p = v; }
__device__ __forceinline__ void stf(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* 16-byte asynchronous copy global -> shared (sm_80+); pred false: nothing is read and the 16
 * destination bytes are zero-filled (gmem must still be a valid address). The copies of a thread
 * are all in flight until cp_async_wait: no register dependence serialises them. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0; /* 0: no bytes read, the 16 destination bytes are zero-filled */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* Dispatch on an activation-like dtype (f32 or bf16): runs `body` with T bound. */
#define LB_DISPATCH_FB(dt, T, ...)                                                                         \
    do {                                                                                                   \
        if ((dt) == LB_F32) {                                                                              \
            typedef float T;                                                                               \
            __VA_ARGS__;                                                                                   \
        } else if ((dt) == LB_BF16) {                                                                      \
            typedef bf16 T;                                                                                \
            __VA_ARGS__;                                                                                   \
        } else {                                                                                           \
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s:%d: dtype %s not supported here (f32 or bf16)",   \
                              __FILE__, __LINE__, lb_dtype_name(dt));                                      \
        }                                                                                                  \
    } while (0)

static inline int is_fb(enum lb_dtype dt) { return dt == LB_F32 || dt == LB_BF16; }

/* Checks that buffer b exists, holds dtype dt (dt < 0: f32 or bf16) and at least n elements. */
int lb_cu_check_buf(const struct lb_buf *b, int dt, size_t n, const char *what, struct lb_err *err);

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* 8 bf16 <-> 8 floats through one 16-byte word */
__device__ __forceinline__ void unpack8(const uint4 &u, float *f)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 v = __bfloat1622float2(h[e]);
        f[2 * e] = v.x;
        f[2 * e + 1] = v.y;
    }
}
__device__ __forceinline__ uint4 pack8(const float *f)
{
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int e = 0; e < 4; e++) h[e] = __floats2bfloat162_rn(f[2 * e], f[2 * e + 1]);
    return u;
}

#endif
