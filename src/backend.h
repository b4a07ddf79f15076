/* backend.h — the host/device boundary.
 *
 * A backend is a struct of function pointers (struct lb_backend_ops) plus private state.
 * Two implementations: cpu (backend_cpu.c, the numerical reference: plain loops, fp32
 * accumulation) and cuda (gpu/backend_cuda.cu). Everything the forward pass needs is an
 * op from the short list in enum lb_op_kind; forward.c drives a model through ops only,
 * so both backends run the same forward and tests can compare them op by op.
 *
 * Memory: buffers (struct lb_buf) are backend-owned. Weights are created from host
 * memory with ops->weight (the CPU backend borrows the host memory, CUDA copies it).
 * Activations live in the backend's activation dtype (cpu: f32, cuda: bf16);
 * upload/download convert from/to f32 or i32 on the host side.
 *
 * Shape letters: T tokens in a step, S adapter segments, H hidden, F intermediate,
 * R LoRA rank, NH/NKV heads, D head dim, V vocab, P pages, B page size (tokens).
 * All index arrays (ids, positions, CSR indptr, segments) are i32 buffers.
 *
 * Does not: schedule, own records, know about jobs. Adapter slots and the paged KV
 * cache live inside the backend (their sizes are fixed at lb_backend_ops.setup). */
#ifndef LB_BACKEND_H
#define LB_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum lb_dtype { LB_F32 = 0, LB_F16 = 1, LB_BF16 = 2, LB_I32 = 3, LB_U8 = 4 };
size_t lb_dtype_size(enum lb_dtype t);
const char *lb_dtype_name(enum lb_dtype t);

/* LoRA target modules, in the order used everywhere (adapters, slots, forward). */
enum lb_target { LB_T_Q = 0, LB_T_K, LB_T_V, LB_T_O, LB_T_GATE, LB_T_UP, LB_T_DOWN, LB_T_COUNT };
const char *lb_target_name(enum lb_target t); /* "q_proj", ... */

struct lb_buf; /* opaque; owned by the backend that made it */

enum lb_op_kind {
    LB_OP_EMBED,     /* out[T,H] = table[ids[t], :] */
    LB_OP_RMSNORM,   /* res? res += x; out = rmsnorm(res? res : x) * w  (rows of n) */
    LB_OP_MATMUL,    /* y[T,N] (+)= x[T,K] @ W[N,K]^T (+ bias[N]) */
    LB_OP_LORA,      /* y_j[T,N_j] += scale * (x[T,K] @ A^T) @ B^T per segment's slot, 1..3 targets
                      * (act: then the SwiGLU of gate and up, see u.lora.act) */
    LB_OP_ROPE,      /* in place on q[T,NH,D], k[T,NKV,D] at pos[T] (HF rotate_half layout) */
    LB_OP_KV_WRITE,  /* cache[layer] at slot_map[t] <- k[T,NKV,D], v[T,NKV,D]; slot_map[t] < 0: none */
    LB_OP_ATTN,      /* out[T,NH,D] = causal GQA attention of q over the paged cache (keys below
                      * min(pos[t] + 1, kv_len[s]); none: zeros) */
    LB_OP_SWIGLU,    /* out[T,F] = silu(gate[T,F]) * up[T,F] */
    LB_OP_ADD,       /* y[n] += x[n] */
    LB_OP_GATHER,    /* out[n,H] = x[idx[i], :] */
    LB_OP_SAMPLE,    /* tok[n] = sample(logits[n,V], params[n]) */
    LB_OP_ALLREDUCE, /* x[n] = sum over tensor-parallel ranks (identity when tp=1) */
    LB_OP_COUNT
};
const char *lb_op_name(enum lb_op_kind k);

/* Per-row sampling parameters (uploaded as raw bytes, LB_U8). Semantics in sample.h. */
struct lb_sample_param {
    float temperature; /* <= 0: greedy */
    float top_p;       /* (0,1]; 1 = off */
    int32_t top_k;     /* 0 = off */
    int32_t step;      /* generation step (0 for the first generated token) */
    uint64_t seed;     /* per-record key, see lb_sample_key */
};

struct lb_op {
    enum lb_op_kind kind;
    union {
        struct { struct lb_buf *ids, *table, *out; int n_tok, n_hidden; } embed;
        struct { struct lb_buf *x, *res, *w, *out; int n_rows, n; float eps; } rmsnorm;
        struct {
            struct lb_buf *x, *w, *bias, *y; /* bias may be NULL */
            int n_tok, n_in, n_out;
            int accumulate; /* 1: y += x W^T */
        } matmul;
        struct {
            int layer, n_tgt;                /* n_tgt in 1..3, targets share x */
            enum lb_target tgt[3];
            struct lb_buf *x, *y[3];          /* x[T,K]; y[j] [T, N_j] accumulated into */
            int n_tok, n_in, n_out[3];
            struct lb_buf *seg_start;         /* i32 [S+1], seg_start[0]=0, seg_start[S]=T */
            struct lb_buf *seg_slot;          /* i32 [S], adapter slot or -1 (no LoRA) */
            int n_seg;
            const int32_t *h_seg_start, *h_seg_slot; /* optional host copies of seg_start/seg_slot (NULL:
                                               * none); a backend may plan from them (the CUDA
                                               * backend's dense path for large steps needs them) */
            int set;                          /* 1: y_j = the LoRA term (overwritten, 0 where a module is
                                               * absent); only when every segment has a slot, and only
                                               * on a backend whose supports() accepts it */
            int act;                          /* 1 (n_tgt 2: gate, up; not with set): then y[0] = silu(y[0]) * y[1]
                                               * over all T rows (base rows too), the SwiGLU that
                                               * follows the gate/up projections, so a backend may fuse
                                               * it with the LoRA term's expansion; y[1] is left
                                               * undefined */
        } lora;
        struct { struct lb_buf *q, *k, *pos; int n_tok, n_head, n_kv_head, head_dim; } rope;
        struct { int layer; struct lb_buf *k, *v, *slot_map; int n_tok; } kv_write;
        struct {
            int layer;
            struct lb_buf *q, *out;           /* [T,NH,D] */
            int n_tok, n_seq;
            struct lb_buf *q_indptr;          /* i32 [n_seq+1]: rows of seq s */
            struct lb_buf *kv_len;            /* i32 [n_seq]: cached tokens of seq s incl. this step */
            struct lb_buf *page_indptr;       /* i32 [n_seq+1] */
            struct lb_buf *page_idx;          /* i32 [page_indptr[n_seq]] */
            struct lb_buf *pos;               /* i32 [T]: token t attends positions 0..pos[t] */
            float scale;                      /* softmax scale, 1/sqrt(D) */
            int max_q;                        /* hint: no sequence has more query rows than this (0: not
                                               * known); 1 lets a backend skip its prefill machinery */
        } attn;
        struct { struct lb_buf *gate, *up, *out; int n_tok, n_ff; } swiglu;
        struct { struct lb_buf *x, *y; int64_t n; } add;
        struct { struct lb_buf *x, *idx, *out; int n, n_cols; } gather;
        struct { struct lb_buf *logits, *params, *tok; int n, n_vocab; } sample;
        struct { struct lb_buf *x; int64_t n; } allreduce;
    } u;
};

/* Static facts the backend needs to size its state. */
struct lb_backend_setup {
    int n_layer, n_head, n_kv_head, head_dim, n_hidden, n_ff, n_vocab;
    float rms_eps;
    /* RoPE */
    float rope_theta;
    int rope_llama3;                 /* 1: llama3 frequency scaling below */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    /* KV cache */
    int n_page, page_size;
    /* adapter slots */
    int n_slot, max_rank;
    /* tensor parallel */
    int tp_rank, tp_size;
};

/* One adapter module as the backend receives it (already sliced for this TP rank). */
struct lb_lora_module {
    int rank;               /* 0: module absent */
    float scale;
    enum lb_dtype dtype;    /* of a and b */
    const void *a;          /* [R, n_in] row-major, borrowed for the call */
    const void *b;          /* [n_out, R] */
    int n_in, n_out;
};

struct lb_backend;

struct lb_backend_ops {
    const char *name;
    enum lb_dtype act_dtype;
    int (*supports)(struct lb_backend *be, const struct lb_op *op);
    int (*setup)(struct lb_backend *be, const struct lb_backend_setup *s, struct lb_err *err);
    struct lb_buf *(*alloc)(struct lb_backend *be, enum lb_dtype dt, size_t n_elem, struct lb_err *err);
    /* A read-only weight buffer holding host data (n_elem of dt). cpu borrows `host`
     * (it must outlive the buffer); cuda copies it. */
    struct lb_buf *(*weight)(struct lb_backend *be, enum lb_dtype dt, const void *host, size_t n_elem,
                             struct lb_err *err);
    void (*buf_free)(struct lb_backend *be, struct lb_buf *b);
    /* Converting copies: src_dt/dst_dt is LB_F32, LB_I32 or the buffer's own dtype. */
    int (*upload)(struct lb_backend *be, struct lb_buf *b, size_t off_elem, const void *src, enum lb_dtype src_dt,
                  size_t n_elem, struct lb_err *err);
    int (*download)(struct lb_backend *be, const struct lb_buf *b, size_t off_elem, void *dst, enum lb_dtype dst_dt,
                    size_t n_elem, struct lb_err *err);
    int (*run)(struct lb_backend *be, const struct lb_op *op, struct lb_err *err);
    /* Copy one module of an adapter into a slot (layer, target). Modules not given stay empty.
     * lora_load and lora_clear touch only a slot that no op run since the last download or sync
     * reads (the engine loads a slot only when none of its sequences is left), so a backend may
     * copy concurrently with ops already queued; ops run afterwards must see the new contents. */
    int (*lora_load)(struct lb_backend *be, int slot, int layer, enum lb_target t, const struct lb_lora_module *m,
                     struct lb_err *err);
    int (*lora_clear)(struct lb_backend *be, int slot, struct lb_err *err);
    int (*sync)(struct lb_backend *be, struct lb_err *err);
    void (*destroy)(struct lb_backend *be);
    /* Device memory now free and in total (bytes). NULL on the CPU backend, whose KV cache is
     * sized without it. */
    int (*mem_info)(struct lb_backend *be, size_t *free_bytes, size_t *total_bytes, struct lb_err *err);
    /* Optional (NULL: none): a step's ops as one recorded graph, replayed for later steps of the
     * same key. The caller promises that steps of one key run the same ops with the same arguments
     * (shapes, buffers), only the contents of uploaded buffers differing, and that it uploads a
     * step's buffers before graph_begin. graph_begin returns 1 when it has queued the key's graph
     * (the caller runs no op, calls no graph_end); 0: the caller runs the step's ops, then calls
     * graph_end(ok = whether they all succeeded), which queues them if they were recorded and
     * returns 1 when the recording failed (the caller runs the ops again, as they are) or 0. */
    int (*graph_begin)(struct lb_backend *be, uint64_t key, struct lb_err *err);
    int (*graph_end)(struct lb_backend *be, int ok, struct lb_err *err);
};

struct lb_backend {
    const struct lb_backend_ops *ops;
    void *impl; /* owned, backend-private */
};

/* Constructors. n_thread <= 0: use every core. */
int lb_backend_cpu_open(struct lb_backend *be, int n_thread, struct lb_err *err);
/* Returns LB_E_UNSUPPORTED when the binary was built without CUDA, LB_E_DEVICE when no GPU. */
int lb_backend_cuda_open(struct lb_backend *be, int device, struct lb_err *err);
void lb_backend_close(struct lb_backend *be);

#endif
