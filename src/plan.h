/* plan.h — the planner: a pure function from (adapters, work units with record counts and
 * token estimates, slot budget, batch limits, memory facts) to a plan.
 *
 * The plan says
 *   - in which order the engine admits records: a list of "runs", each a contiguous record
 *     range [rec_begin, rec_end) of one work unit (a (shard, adapter) pair). Every record of
 *     every unit appears in exactly one run; the runs of one unit appear in increasing record
 *     order and tile it without gaps, so each unit is read front to back by one cursor;
 *   - which GPU adapter slot every adapter sits in and when: a list of load events, each with
 *     the run index from which the adapter must be resident (run_need) and the earliest run
 *     index from which it may be loaded (run_prefetch = previous occupant's last run + 1). Every
 *     adapter with records is loaded exactly once; an adapter's slot is not reused before all
 *     its runs are admitted. At any run index at most `gpu_adapter_slots` adapters are live
 *     (live = first run <= i <= last run). Base-model records (adapter LB_PLAN_BASE) need no slot;
 *   - the memory budget: weights + slots + workspace, the rest is KV cache (in pages).
 *
 * What it deliberately does not do: no I/O, no device, no clock, no global state; floating
 * point only for gpu_memory_fraction and the reported fill, never in an ordering decision (same
 * input, same plan, bit for bit). It does not read shards: the caller passes record counts and
 * token totals (estimates are fine; only throughput, never correctness, depends on them).
 *
 * How the engine follows it: admit records run by run in order. Start the loads in list order;
 * load i may start once (a) the load before it has started, (b) every run before run_prefetch
 * has been admitted and (c) the evicted adapter's last sequence has retired; admission of
 * run_need waits until the load is done. This never deadlocks: the planner's own timeline
 * started the loads in that order, so every run of an evicted adapter comes before the first
 * run of any adapter loaded at or after that point.
 *
 * Strategy (see plan.c for the why): the planner runs a small continuous-batching simulation
 * (max_seqs seats, max_batch_tokens per step, each record holding a seat for its generated
 * tokens) and takes its decisions in it. An adapter holds one slot from its first record to its
 * last (its runs interleave only with those of the other resident adapters), so it is loaded
 * once. When a slot frees (its occupant's last sequence retired, plus drain_slack_pct), it goes
 * to the largest waiting adapter if the resident adapters (plus base records) hold fewer than
 * max_seqs records, else to the smallest waiting adapter, so tiny adapters turn over beside a
 * big "filler" adapter instead of each draining the batch. Among resident adapters, free seats
 * go to the one with the fewest records left (its slot frees soonest); base records fill what
 * is left. */
#ifndef LB_PLAN_H
#define LB_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define LB_PLAN_BASE (-1) /* adapter index of "no adapter" (base model) */
#define LB_PLAN_DRAIN_SLACK_DEFAULT 25

struct lb_plan_adapter {
    const char *name;  /* borrowed, may be NULL ("adapter <i>" is printed); copied into the plan */
    int32_t rank;      /* LoRA rank r (max over modules), >= 1 */
    size_t bytes;      /* bytes of A+B once loaded into a slot */
};

/* One work unit: the records of one shard that go through one adapter (or base). */
struct lb_plan_unit {
    int32_t shard;        /* caller's shard index, carried through untouched */
    int32_t adapter;      /* index into lb_plan_input.adapters, or LB_PLAN_BASE */
    int64_t n_records;    /* >= 0 */
    int64_t n_tok_prompt; /* estimated prompt tokens, total over the unit's records, >= 0 */
    int64_t n_tok_gen;    /* estimated generated tokens, total over the unit's records, >= 0 */
};

/* Memory facts, per device. device_bytes == 0 skips the budget (CPU backend, tests). */
struct lb_plan_mem {
    size_t device_bytes;        /* device memory in bytes */
    double gpu_memory_fraction; /* (0, 1]; available = device_bytes * fraction */
    size_t weight_bytes;        /* base model weights resident on the device */
    size_t workspace_bytes;     /* activations, logits, scratch at max_batch_tokens */
    size_t kv_token_bytes;      /* K+V bytes of one token over all layers, > 0 */
    int32_t kv_page_tokens;     /* tokens per KV page, > 0 */
    int32_t max_lora_rank;      /* slot size in ranks; every adapter rank must be <= it */
    size_t lora_rank_bytes;     /* bytes of A+B per unit of rank (all layers, all targets);
                                 * 0 = size a slot as the largest adapter's bytes */
    int64_t max_seq_tokens;     /* longest sequence (prompt + generation) that must fit; 0 = skip */
};

enum lb_plan_policy {
    LB_PLAN_POLICY_FILL = 0, /* the strategy above (default) */
    LB_PLAN_POLICY_FIFO = 1, /* baseline: adapters in index order, first loaded first admitted */
};

struct lb_plan_input {
    int32_t n_adapters;
    const struct lb_plan_adapter *adapters; /* borrowed [n_adapters] */
    int64_t n_units;
    const struct lb_plan_unit *units;       /* borrowed [n_units]; order = input order */
    int32_t gpu_adapter_slots;  /* S in [0, 65536]; 0 only when no adapter has records */
    int32_t max_seqs;           /* sequences in flight, [1, 2^20] */
    int32_t max_batch_tokens;   /* tokens per engine step (prefill + decode), >= 1 */
    size_t load_bytes_per_step; /* adapter bytes moved into a slot per engine step (estimate);
                                 * 0 = loads take no time */
    int policy;                 /* enum lb_plan_policy */
    int32_t drain_slack_pct;    /* 0..1000: the planner reuses an adapter's slot only once this
                                 * percentage of each of its records' estimated durations has
                                 * passed beyond the estimate, so sequences that run longer than
                                 * estimated do not make the next adapter wait in the engine.
                                 * 0 = trust the estimates. LB_PLAN_DRAIN_SLACK_DEFAULT (25) won
                                 * on bench/plan_sim.sh against 0, 10, 40, 50 and against
                                 * modelling the spread of lengths inside the planner: with
                                 * lengths +-90% around the estimate, 1000 Zipf adapters in 8
                                 * slots replay at 99.6% fill (slack 0: 90.3%). lorabatch run
                                 * passes 0 when generation.ignore_eos makes every length exact
                                 * (run.c, plan_slack) */
    struct lb_plan_mem mem;
};

/* One contiguous range of one unit's records, admitted in this position of the order. */
struct lb_plan_run {
    int64_t unit;      /* index into the units */
    int64_t rec_begin; /* first record (0-based within the unit) */
    int64_t rec_end;   /* one past the last */
    int32_t adapter;   /* = units[unit].adapter (LB_PLAN_BASE or an index) */
    int32_t slot;      /* slot the adapter sits in, -1 for base */
};

/* Adapter `adapter` is loaded into `slot`; ordered as the loads start in the plan's timeline. */
struct lb_plan_load {
    int32_t adapter;
    int32_t slot;
    int32_t evicts;       /* previous occupant, -1 when the slot was empty */
    int64_t run_need;     /* first run of `adapter`: must be resident before it is admitted */
    int64_t run_prefetch; /* earliest run index from which it may be loaded: the previous
                           * occupant's last run + 1 (0 for an empty slot); <= run_need. The
                           * previous occupant's sequences must also have retired. */
};

struct lb_plan_adapter_stat {
    char *name;           /* borrowed from lb_plan.names (freed with the plan) */
    int32_t rank;
    size_t bytes;
    int64_t n_units;      /* units with records */
    int64_t n_records;
    int64_t n_tok_prompt, n_tok_gen;
    int32_t slot;         /* -1 when it has no records */
    int64_t first_run, last_run; /* -1 when it has no records */
};

struct lb_plan_budget {
    int checked;            /* 0 when mem.device_bytes was 0 */
    size_t available_bytes; /* device_bytes * gpu_memory_fraction */
    size_t weight_bytes;
    size_t slot_bytes;      /* one slot */
    size_t slots_bytes;     /* n_slots * slot_bytes */
    size_t workspace_bytes;
    size_t kv_bytes;        /* what is left for the KV cache */
    size_t kv_page_bytes;
    int64_t n_kv_pages;
    int64_t n_kv_tokens;    /* n_kv_pages * kv_page_tokens */
};

struct lb_plan {
    int64_t n_runs;
    struct lb_plan_run *runs;      /* owned [n_runs], admission order */
    int64_t n_loads;
    struct lb_plan_load *loads;    /* owned [n_loads] */
    int64_t n_loads_ideal;         /* adapters with records */
    int32_t n_adapters;
    struct lb_plan_adapter_stat *adapters; /* owned [n_adapters] */
    char *names;                   /* owned block holding the adapter names */
    int64_t n_units;
    struct lb_plan_unit *units;    /* owned copy [n_units] */
    int64_t base_n_records, base_n_tok_prompt, base_n_tok_gen;
    int64_t n_records, n_tok_prompt, n_tok_gen; /* totals */
    int32_t n_slots, max_seqs, max_batch_tokens;
    size_t load_bytes_per_step;
    int policy;
    struct lb_plan_budget budget;
    int64_t est_steps;             /* engine steps in the planner's own simulation */
    double est_fill;               /* its mean batch fill (mean seats in use / max_seqs) */
};

/* Builds the plan. Pure and deterministic. `plan` is initialised here (no need to zero it) and
 * must be released with lb_plan_free, also after a failure (then it is empty).
 * Errors: LB_E_INPUT (bad counts, adapter index out of range, rank above max_lora_rank,
 * adapters with records but no slots), LB_E_OOM (memory budget does not fit: the message names
 * needed vs available bytes and each part; or host allocation failed). */
int lb_plan_build(const struct lb_plan_input *in, struct lb_plan *plan, struct lb_err *err);

/* Releases what the plan owns and zeroes it. Accepts NULL and an empty plan. */
void lb_plan_free(struct lb_plan *plan);

/* Human summary: adapters (records, tokens), slot timeline, predicted loads vs ideal, estimated
 * batch fill, memory budget. Long adapter lists are cut to the largest ones. */
void lb_plan_print(const struct lb_plan *plan, FILE *f);

struct lb_plan_sim_opts {
    uint64_t seed;      /* for the per-record length jitter */
    int32_t jitter_pct; /* 0..100: each record's generated tokens are drawn uniformly in
                         * estimate * (1 +- jitter_pct/100), at least 1; 0 = the estimates */
};

struct lb_plan_sim {
    int64_t n_steps;       /* engine steps until the last record retires */
    double fill;           /* mean over steps of seats in use / max_seqs */
    int64_t n_loads;       /* adapter loads performed */
    int64_t n_stall_steps; /* steps in which the next record in order waited for its adapter */
    int64_t n_seat_steps;  /* sum over steps of seats in use */
};

/* Replays the plan on a model of the engine: admission strictly in plan order, max_seqs seats,
 * max_batch_tokens per step (a decoding sequence costs 1, an admitted record its prompt tokens,
 * capped at max_batch_tokens), a record holds its seat for max(1, generated tokens) steps (+1
 * per extra prefill chunk), one loader moving load_bytes_per_step, loads started in plan order
 * once the slot's previous occupant has retired. With jitter_pct 0 it reproduces the planner's
 * own timeline (est_steps, est_fill) when the plan was built with drain_slack_pct 0. `opts` may
 * be NULL (no jitter). Pure. Errors: LB_E_INTERNAL if the plan is inconsistent (a run in
 * another slot than its adapter's, a load missing or out of order), LB_E_OOM. */
int lb_plan_simulate(const struct lb_plan *plan, const struct lb_plan_sim_opts *opts,
                     struct lb_plan_sim *out, struct lb_err *err);

/* A record range of one unit, as picked for one part. */
struct lb_plan_part_range {
    int64_t unit;
    int64_t rec_begin, rec_end;
};

/* The work of part `part_i` of `part_n` (--part I/N), as ranges sorted by unit. When
 * n_units >= part_n, whole units: units are dealt largest first (ties: lower index) to the part
 * with the fewest records so far (ties: fewest units, then lower part), so every part gets at
 * least one unit.
 * Otherwise the records of all units, concatenated in unit order, are cut into part_n equal
 * slices (floor(i*T/N) .. floor((i+1)*T/N)). Over all I, every record lies in exactly one part;
 * the answer depends only on the arguments (stable across runs and machines).
 * Writes at most `cap` ranges to `out` (may be NULL when cap is 0) and the number needed to
 * *n_out; returns LB_E_INPUT on bad arguments, LB_E_OOM if cap is too small (or allocation
 * failed). A part may be empty (*n_out == 0) only when there are fewer records than parts. */
int lb_plan_part_units(int64_t n_units, const int64_t *unit_records, int32_t part_i, int32_t part_n,
                       struct lb_plan_part_range *out, int64_t cap, int64_t *n_out,
                       struct lb_err *err);

#endif
