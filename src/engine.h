/* engine.h — continuous batching over one lb_runner.
 *
 * Requests are admitted in submission order (grouped by adapter within a window, below). Each
 * step: every running sequence that has finished its prompt decodes one token; the rest of the
 * token budget (max_batch_tokens) goes to prompt chunks (chunked prefill) of sequences still prefilling, then of newly
 * admitted ones; a sequence that finishes retires and its seat and KV pages are reused in
 * the same step's successors. KV memory is paged (a free list of n_page pages of
 * page_size tokens). When pages run out the most recently admitted sequence is preempted:
 * its pages are freed and it is re-queued at the front with prompt + generated tokens, to
 * be recomputed (its output is unchanged: the RNG is keyed by (record, step), and the CPU
 * computes each row the same way whatever the batch).
 * Sequences in a step are ordered by adapter slot so LoRA segments are long. Grouping by
 * adapter (LB_PREFILL_GROUP=0: off): admission takes the queue's head and then the waiting
 * sequences of its adapter submitted fewer than LB_GROUP_WINDOW (256) places after it, so a
 * sequence is passed only by ones submitted within that window after it; prefill chunks fill the
 * budget one adapter at a time, the adapter of the oldest sequence still prefilling first. Large
 * steps then carry one or a few adapters, while decode rows stay as mixed as the running set. */
#ifndef LB_ENGINE_H
#define LB_ENGINE_H

#include "forward.h"

enum lb_finish { LB_FINISH_NONE = 0, LB_FINISH_STOP, LB_FINISH_LENGTH };

struct lb_req {
    int64_t user;                 /* caller's handle, returned in the result */
    const int32_t *prompt;        /* [n_prompt], copied by lb_engine_add */
    int n_prompt;
    int slot;                     /* adapter slot, -1 = base model */
    int max_new;                  /* generated-token cap */
    struct lb_sample_param sp;    /* seed = the record's key; step is filled in by the engine */
    int ignore_eos;
};

struct lb_result {
    int64_t user;
    const int32_t *tokens;        /* [n_tokens] generated ids (EOS excluded); valid during the callback */
    int n_tokens;
    int n_prompt;
    int n_eos;                    /* 1 when the sequence ended on an EOS id (counted as generated) */
    enum lb_finish finish;
    /* with lb_engine_opts.margins: [2 * (n_tokens + n_eos)] per generated token, the top-2
     * logit margin of the step that chose it and the step's max |logit| (else NULL) */
    const float *margins;
};

/* Called after every generated token (not EOS); return nonzero to stop the sequence ("stop"). */
typedef int (*lb_token_fn)(void *ctx, int64_t user, const int32_t *tokens, int n_tokens);
typedef int (*lb_done_fn)(void *ctx, const struct lb_result *res, struct lb_err *err);

struct lb_engine_opts {
    int max_seqs, max_batch_tokens;
    lb_token_fn on_token;         /* optional */
    lb_done_fn on_done;           /* required */
    void *ctx;
    int margins;                  /* 1: report each step's top-2 logit margin (lb_result.margins);
                                   * every step then downloads its logits (slow: for tests) */
};

struct lb_engine_seq;

struct lb_engine {
    struct lb_runner *r;          /* borrowed */
    struct lb_engine_opts o;
    int page_size, n_page, max_ctx;
    int32_t *free_pages;          /* owned stack [n_page] */
    int n_free;
    struct lb_engine_seq **run;   /* owned [max_seqs] running sequences, admission order */
    int n_run;
    struct lb_engine_seq **wait;  /* owned queue (ring) */
    int wait_head, n_wait, wait_cap;
    int64_t admit_counter, queue_counter;
    int64_t n_preempt, n_steps, n_tok_prefill, n_tok_decode;
    int64_t n_prefill_steps, n_prefill_adapters; /* steps with prefill chunks; the sum of their chunks' distinct adapters */
    int64_t n_decode_steps, n_decode_adapters;   /* steps without; the sum of their distinct adapters (base: one) */
    /* host time (LB_RUN_STATS, set by the caller): the last step's tokens; seconds spent planning
     * steps (admission into the batch, pages, the step's arrays) and applying their results */
    int timing, last_T;
    int last_n_seq;               /* sequences of the last step (seq_slot, q_indptr describe them) */
    int group;                    /* admission and prefill grouped by adapter (default; LB_PREFILL_GROUP=0 off) */
    int group_window;             /* admission looks this many waiting sequences ahead (LB_GROUP_WINDOW, 256) */
    double t_plan, t_apply;
    /* step scratch (owned) */
    int32_t *tok, *pos, *slot_map, *q_indptr, *kv_len, *page_indptr, *page_idx, *seq_slot, *out_rows, *out_tok;
    struct lb_sample_param *sp;
    struct lb_engine_seq **order;
    float *logits;                /* owned [max_seqs, V] when o.margins */
};

int lb_engine_init(struct lb_engine *e, struct lb_runner *r, const struct lb_engine_opts *o, struct lb_err *err);
void lb_engine_free(struct lb_engine *e);
int lb_engine_add(struct lb_engine *e, const struct lb_req *q, struct lb_err *err);
/* One step. Returns 0, or an error from the backend / a callback. */
int lb_engine_step(struct lb_engine *e, struct lb_err *err);
int lb_engine_idle(const struct lb_engine *e);
/* Slots used by running or waiting sequences: bitmask query for the adapter scheduler. */
int lb_engine_slot_in_use(const struct lb_engine *e, int slot);

#endif
