/* forward.h — one model, one backend: weights on the backend, workspace sized once, and
 * the forward pass of one engine step expressed as backend ops (the same code drives the
 * cpu and cuda backends).
 *
 * A step is a ragged batch: n_seq sequences, each contributing its next q_len tokens
 * (a prefill chunk or one decode token) that attend to everything cached before them.
 * The caller (engine.c) owns the KV page tables; this module only writes K/V at the slots
 * it is given and reads the pages listed. */
#ifndef LB_FORWARD_H
#define LB_FORWARD_H

#include "adapter.h"
#include "backend.h"
#include "model.h"

struct lb_runner_opts {
    int max_tok;      /* tokens per step (max_batch_tokens) */
    int max_seq;      /* sequences per step */
    int n_page, page_size;
    int n_slot, max_rank;
};

struct lb_step {
    int n_tok, n_seq;
    const int32_t *tokens;      /* [T] */
    const int32_t *pos;         /* [T] position of each token */
    const int32_t *slot_map;    /* [T] KV cache slot = page * page_size + offset */
    const int32_t *q_indptr;    /* [n_seq+1] tokens of seq s: q_indptr[s] .. q_indptr[s+1] */
    const int32_t *kv_len;      /* [n_seq] cached length of seq s after this step */
    const int32_t *page_indptr; /* [n_seq+1] */
    const int32_t *page_idx;    /* [page_indptr[n_seq]] */
    const int32_t *seq_slot;    /* [n_seq] adapter slot or -1 */
    int n_out;                  /* rows to sample: the last token of each seq that needs one */
    const int32_t *out_rows;    /* [n_out] row indices into T */
    const struct lb_sample_param *sp; /* [n_out] */
};

struct lb_layer_bufs;

struct lb_runner {
    struct lb_backend *be;          /* borrowed */
    const struct lb_model *m;       /* borrowed */
    struct lb_runner_opts opt;
    struct lb_buf *embed, *norm, *lm_head;
    struct lb_layer_bufs *layers;   /* owned [n_layer] */
    /* activations: x residual [T,H], h [T,H], q [T,NH*D], k/v [T,NKV*D], att [T,NH*D],
     * g/u [T,F], o [T,H], hl [max_seq,H], logits [max_seq,V] */
    struct lb_buf *x, *h, *q, *k, *v, *att, *g, *u, *o, *hl, *logits; /* o: block output [T,H] */
    /* index buffers (i32) and sampling params (u8) */
    struct lb_buf *ids, *pos, *slot_map, *q_indptr, *kv_len, *page_indptr, *page_idx, *seg_start, *seg_slot,
        *out_rows, *params, *tok_out;
    int32_t *h_seg_start, *h_seg_slot; /* owned host scratch [max_tok+1] */
    int64_t weight_bytes;
    /* fault injection for tests: LB_FAULT_STEP=N makes the N-th step (1-based) fail halfway
     * through its layers with a device error, as a CUDA fault mid-run would */
    int64_t n_step_calls, fault_step;
    int lora_set_min_tok; /* see lora_set_first in forward.c; -1 when the backend has no set mode */
    int lora_act; /* see gate_up in forward.c: 0, 1 or 2; 0 when the backend has no act mode */
    /* Decode steps as graphs (see the top of forward.c). LB_GRAPHS: 1 (default) where the backend
     * offers graphs, 0 never, 2 also pad decode steps on a backend without them (a test of the
     * padding: the outputs must not change). LB_GRAPH_BUCKET (32), LB_GRAPH_MAX_TOK (512). */
    int graph, graph_bucket, graph_max_tok;
    int step_max_q;                 /* the step's most query rows of one sequence (the attention op's hint) */
    int32_t *pad;                   /* owned host scratch: 8 arrays of max_seq + 1 */
    struct lb_sample_param *pad_sp; /* owned [max_seq + 1] */
    /* Optional: called once a step's work is queued on the backend and before the host waits
     * for its tokens, so host work done here (the job pipeline stages the plan's next adapter
     * load) overlaps the step on an asynchronous backend; n_tok: the step's tokens. A nonzero
     * return fails the step. */
    int (*on_queued)(void *ctx, int n_tok, struct lb_err *err);
    void *on_queued_ctx;
};

int lb_runner_init(struct lb_runner *r, struct lb_backend *be, const struct lb_model *m, const struct lb_runner_opts *o,
                   struct lb_err *err);
void lb_runner_free(struct lb_runner *r);
/* Load every module of adapter a into slot (clearing it first); a == NULL just clears. */
int lb_runner_load_adapter(struct lb_runner *r, int slot, const struct lb_adapter *a, struct lb_err *err);
/* Run one step; writes n_out sampled tokens; logits_out (optional) receives [n_out, V] f32. */
int lb_runner_step(struct lb_runner *r, const struct lb_step *st, int32_t *tok_out, float *logits_out, struct lb_err *err);

#endif
