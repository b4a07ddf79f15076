/* plan.c — see plan.h.
 *
 * Why a simulation inside the planner. The slot budget only bites through time: an adapter's
 * slot can be given to the next adapter once its last sequence retires, and that is a decode
 * length (~100s of steps) after its last record was admitted. Contiguous admission per adapter
 * (one load each) is easy; the hard part is which adapters share the batch. With Zipf
 * popularity most adapters are tiny (1000 adapters, 100k records: the smallest have ~10
 * records); a tiny adapter holds a slot for a full decode length while filling ~10 of
 * max_seqs seats, so if the resident adapters are all tiny the batch runs nearly empty. The
 * fix is to keep a big adapter (or base records) resident as a filler while tiny ones turn
 * over in the other slots, and to spend the filler's records on exactly that. A closed-form
 * rule for "when" is brittle under prefill budgets and uneven lengths; a discrete-event
 * simulation with integer time is small (one heap of max_seqs end times), exact, deterministic
 * and O(records * log max_seqs + records * slots), and its admission order is feasible by
 * construction. The same loop, driven by a finished plan instead of the policy, is
 * lb_plan_simulate, so "the plan's own estimate" and "the replay" cannot drift apart.
 *
 * Time model: step t admits records (prompt tokens count against max_batch_tokens together
 * with one token per decoding sequence), a record holds its seat for max(1, gen) steps plus one
 * per extra prefill chunk. Per-record estimates come from the unit totals spread evenly
 * (record k gets floor((k+1)G/n) - floor(kG/n), so they add up exactly). Loads go through one
 * loader, each taking ceil(bytes / load_bytes_per_step) steps, and start only once the slot's
 * previous occupant has retired its last sequence. */
#include "plan.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* DRAINING: all sequences of the occupant retired in the nominal timeline, but the builder keeps
 * the slot until drain_slack_pct more of their durations have passed (slot_ready = release). */
enum { SLOT_FREE = 0, SLOT_LOADING, SLOT_RESIDENT, SLOT_DRAINING };

struct sim {
    /* config */
    int build;                       /* 1: take decisions and emit runs/loads; 0: replay */
    int32_t na;                      /* adapters; index na = base */
    int32_t n_slots, max_seqs, mbt;
    int policy;
    const struct lb_plan_unit *units; /* borrowed [n_units] */
    int64_t n_units;
    int64_t *load_steps;             /* owned [na] */
    uint64_t seed;
    int32_t jitter_pct;
    int32_t slack_pct;               /* build only: drain slack, see lb_plan_input */
    /* per adapter [na + 1] */
    int64_t *rem;                    /* owned: records not admitted yet */
    int64_t *inflight;               /* owned: seats held */
    int32_t *slot_of;                /* owned: current slot, -1 */
    int64_t *load_seq;               /* owned: when loaded (FIFO pick) */
    int64_t *release_at;             /* owned: latest admit + dur * (1 + slack) of its records */
    int64_t total_rem;
    /* build: per adapter unit lists (CSR) and cursor */
    int64_t *ad_ptr;                 /* owned [na + 2] */
    int64_t *ad_units;               /* owned [units with records] */
    int64_t *cur_pos, *cur_off;      /* owned [na + 1] */
    int32_t *pend;                   /* owned [na]: adapters waiting for a slot */
    int64_t pend_lo, pend_hi;        /* pending = pend[lo, hi) */
    int32_t cached;                  /* adapter picked last in this admission round, -1 */
    /* replay: the plan */
    const struct lb_plan_run *runs;  /* borrowed [n_runs] */
    int64_t n_runs, run_i, run_off;
    const struct lb_plan_load *loads_in; /* borrowed [n_loads_in] */
    int64_t n_loads_in, load_i;
    /* slots [n_slots] */
    int32_t *slot_occ;               /* owned: current or previous occupant, -1 */
    int *slot_state;                 /* owned */
    int64_t *slot_ready;             /* owned */
    int64_t loader_free;
    /* in-flight sequences: min-heap on end time [max_seqs] */
    int64_t *h_end;                  /* owned */
    int32_t *h_ad;                   /* owned */
    int64_t h_n;
    /* build output (owned until handed to the plan) */
    struct lb_plan_run *out_runs;
    int64_t n_out_runs, cap_out_runs;
    struct lb_plan_load *out_loads;
    int64_t n_out_loads;
    /* counters */
    int64_t t, seat_steps, stall_steps, n_loads;
};

static void sim_free(struct sim *s)
{
    free(s->load_steps); free(s->rem); free(s->inflight); free(s->slot_of); free(s->load_seq);
    free(s->release_at);
    free(s->ad_ptr); free(s->ad_units); free(s->cur_pos); free(s->cur_off); free(s->pend);
    free(s->slot_occ); free(s->slot_state); free(s->slot_ready); free(s->h_end); free(s->h_ad);
    free(s->out_runs); free(s->out_loads);
    memset(s, 0, sizeof *s);
}

/* calloc of n elements of size sz, at least one element so NULL always means failure. */
static void *zalloc(int64_t n, size_t sz)
{
    if (n < 1) n = 1;
    if ((uint64_t)n > SIZE_MAX / sz) return NULL;
    return calloc((size_t)n, sz);
}

/* Estimated prompt and generated tokens of record k of unit u: the totals spread evenly. */
static void rec_tokens(const struct lb_plan_unit *u, int64_t k, int64_t *p, int64_t *g)
{
    int64_t n = u->n_records;
    int64_t qp = u->n_tok_prompt / n, rp = u->n_tok_prompt % n;
    int64_t qg = u->n_tok_gen / n, rg = u->n_tok_gen % n;
    /* rp, rg < n and k < n, so (k+1)*r < n*n: fits for n < 3e9 */
    *p = qp + ((k + 1) * rp / n - k * rp / n);
    *g = qg + ((k + 1) * rg / n - k * rg / n);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void heap_push(struct sim *s, int64_t end, int32_t ad)
{
    int64_t i = s->h_n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (s->h_end[p] <= end) break;
        s->h_end[i] = s->h_end[p];
        s->h_ad[i] = s->h_ad[p];
        i = p;
    }
    s->h_end[i] = end;
    s->h_ad[i] = ad;
}

static void heap_pop(struct sim *s)
{
    int64_t n = --s->h_n;
    int64_t end = s->h_end[n];
    int32_t ad = s->h_ad[n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && s->h_end[c + 1] < s->h_end[c]) c++;
        if (s->h_end[c] >= end) break;
        s->h_end[i] = s->h_end[c];
        s->h_ad[i] = s->h_ad[c];
        i = c;
    }
    s->h_end[i] = end;
    s->h_ad[i] = ad;
}

/* Common allocation of the per-adapter, per-slot and heap state. */
static int sim_alloc(struct sim *s)
{
    int64_t na1 = (int64_t)s->na + 1;
    s->load_steps = zalloc(s->na, sizeof *s->load_steps);
    s->rem = zalloc(na1, sizeof *s->rem);
    s->inflight = zalloc(na1, sizeof *s->inflight);
    s->slot_of = zalloc(na1, sizeof *s->slot_of);
    s->load_seq = zalloc(na1, sizeof *s->load_seq);
    s->release_at = zalloc(na1, sizeof *s->release_at);
    s->slot_occ = zalloc(s->n_slots, sizeof *s->slot_occ);
    s->slot_state = zalloc(s->n_slots, sizeof *s->slot_state);
    s->slot_ready = zalloc(s->n_slots, sizeof *s->slot_ready);
    s->h_end = zalloc(s->max_seqs, sizeof *s->h_end);
    s->h_ad = zalloc(s->max_seqs, sizeof *s->h_ad);
    if (!s->load_steps || !s->rem || !s->inflight || !s->slot_of || !s->load_seq || !s->release_at || !s->slot_occ ||
        !s->slot_state || !s->slot_ready || !s->h_end || !s->h_ad)
        return -1;
    for (int64_t a = 0; a < na1; a++) s->slot_of[a] = -1;
    for (int32_t i = 0; i < s->n_slots; i++) s->slot_occ[i] = -1;
    s->cached = -1;
    return 0;
}

/* Supply of records that can fill seats without a new load: base + resident/loading adapters. */
static int64_t sim_supply(const struct sim *s)
{
    int64_t sup = s->rem[s->na];
    for (int32_t i = 0; i < s->n_slots; i++)
        if (s->slot_state[i] != SLOT_FREE) sup += s->rem[s->slot_occ[i]];
    return sup;
}

/* Build: which waiting adapter gets a free slot. pend is sorted by records desc (FILL) or by
 * index (FIFO). FILL: the largest when the resident adapters and base records hold fewer
 * records than max_seqs (not enough to cover a slot turnover), else the smallest, which turns
 * over beside the filler. The threshold was picked on bench/plan_sim.sh: 1x max_seqs beat
 * 2x, 3x, 4x and 6x on the 4-slot Zipf workload (79.6% vs 72.7..75.2% replayed fill) and tied
 * elsewhere. */
static int32_t choose_load(struct sim *s)
{
    if (s->pend_lo >= s->pend_hi) return -1;
    if (s->policy == LB_PLAN_POLICY_FIFO) return s->pend[s->pend_lo++];
    if (sim_supply(s) < (int64_t)s->max_seqs) return s->pend[s->pend_lo++];
    return s->pend[--s->pend_hi];
}

/* Build: which adapter the next free seat goes to; -1 when none can be admitted now. */
static int32_t choose_admit(struct sim *s)
{
    if (s->cached >= 0 && s->rem[s->cached] > 0) return s->cached;
    int32_t best = -1;
    for (int32_t i = 0; i < s->n_slots; i++) {
        if (s->slot_state[i] != SLOT_RESIDENT) continue;
        int32_t a = s->slot_occ[i];
        if (s->rem[a] == 0) continue;
        if (best < 0) { best = a; continue; }
        if (s->policy == LB_PLAN_POLICY_FIFO) {
            if (s->load_seq[a] < s->load_seq[best]) best = a;
        } else if (s->rem[a] < s->rem[best] || (s->rem[a] == s->rem[best] && s->load_seq[a] < s->load_seq[best])) {
            best = a;
        }
    }
    if (best < 0 && s->rem[s->na] > 0) best = s->na;
    s->cached = best;
    return best;
}

/* Next record to admit: adapter index (na = base), unit, record. 0 when none can go now, -1 when
 * the plan puts a run in another slot than its adapter sits in. */
static int next_record(struct sim *s, int32_t *ai, int64_t *u, int64_t *k)
{
    if (s->build) {
        int32_t a = choose_admit(s);
        if (a < 0) return 0;
        *ai = a;
        *u = s->ad_units[s->ad_ptr[a] + s->cur_pos[a]];
        *k = s->cur_off[a];
        return 1;
    }
    if (s->run_i >= s->n_runs) return 0;
    const struct lb_plan_run *r = &s->runs[s->run_i];
    int32_t a = r->adapter < 0 ? s->na : r->adapter;
    if (a != s->na) {
        int32_t sl = s->slot_of[a];
        if (sl < 0 || s->slot_state[sl] != SLOT_RESIDENT) return 0;
        if (sl != r->slot) return -1;
    }
    *ai = a;
    *u = r->unit;
    *k = r->rec_begin + s->run_off;
    return 1;
}

static int push_run(struct sim *s, int64_t u, int64_t k, int32_t a)
{
    if (s->n_out_runs > 0) {
        struct lb_plan_run *last = &s->out_runs[s->n_out_runs - 1];
        if (last->unit == u && last->rec_end == k) {
            last->rec_end++;
            return 0;
        }
    }
    if (s->n_out_runs == s->cap_out_runs) {
        int64_t cap = s->cap_out_runs ? 2 * s->cap_out_runs : 1024;
        void *p = realloc(s->out_runs, (size_t)cap * sizeof *s->out_runs);
        if (!p) return -1;
        s->out_runs = p;
        s->cap_out_runs = cap;
    }
    s->out_runs[s->n_out_runs++] = (struct lb_plan_run){
        .unit = u, .rec_begin = k, .rec_end = k + 1,
        .adapter = a == s->na ? LB_PLAN_BASE : a,
        .slot = a == s->na ? -1 : s->slot_of[a],
    };
    return 0;
}

/* The record was admitted: advance the cursor (build: also emit it) */
static int commit_record(struct sim *s, int32_t a, int64_t u, int64_t k)
{
    if (s->build) {
        if (push_run(s, u, k, a)) return -1;
        if (++s->cur_off[a] == s->units[u].n_records) {
            s->cur_pos[a]++;
            s->cur_off[a] = 0;
        }
        return 0;
    }
    if (s->runs[s->run_i].rec_begin + ++s->run_off == s->runs[s->run_i].rec_end) {
        s->run_i++;
        s->run_off = 0;
    }
    return 0;
}

/* Starts every load that can start at time t. Returns 0, or -1 on an inconsistent plan. */
static int start_loads(struct sim *s)
{
    while (s->loader_free <= s->t) {
        int32_t a, sl;
        if (s->build) {
            sl = -1;
            for (int32_t i = 0; i < s->n_slots && sl < 0; i++)
                if (s->slot_state[i] == SLOT_FREE) sl = i;
            if (sl < 0) return 0;
            a = choose_load(s);
            if (a < 0) return 0;
            s->out_loads[s->n_out_loads++] = (struct lb_plan_load){
                .adapter = a, .slot = sl, .evicts = s->slot_occ[sl], .run_need = -1, .run_prefetch = -1};
        } else {
            if (s->load_i >= s->n_loads_in) return 0;
            const struct lb_plan_load *l = &s->loads_in[s->load_i];
            a = l->adapter;
            sl = l->slot;
            if (a < 0 || a >= s->na || sl < 0 || sl >= s->n_slots || s->slot_of[a] >= 0) return -1;
            if (s->slot_state[sl] != SLOT_FREE) return 0;
            s->load_i++;
        }
        s->slot_occ[sl] = a;
        s->slot_of[a] = sl;
        s->load_seq[a] = s->n_loads++;
        s->slot_ready[sl] = s->t + s->load_steps[a];
        s->slot_state[sl] = s->slot_ready[sl] <= s->t ? SLOT_RESIDENT : SLOT_LOADING;
        s->loader_free = s->slot_ready[sl];
    }
    return 0;
}

/* The event loop shared by the builder and the replay. Returns 0, -1 on allocation failure,
 * -2 when stuck or inconsistent (a bug in the builder or a bad plan in the replay). */
static int sim_run(struct sim *s)
{
    for (;;) {
        /* retire */
        while (s->h_n > 0 && s->h_end[0] <= s->t) {
            int32_t a = s->h_ad[0];
            heap_pop(s);
            if (--s->inflight[a] == 0 && s->rem[a] == 0 && a != s->na) {
                int32_t sl = s->slot_of[a];
                if (sl < 0) return -2;
                s->slot_state[sl] = SLOT_DRAINING;
                s->slot_ready[sl] = s->release_at[a];
            }
        }
        for (int32_t i = 0; i < s->n_slots; i++) {
            if (s->slot_ready[i] > s->t) continue;
            if (s->slot_state[i] == SLOT_LOADING) {
                s->slot_state[i] = SLOT_RESIDENT;
            } else if (s->slot_state[i] == SLOT_DRAINING) {
                s->slot_state[i] = SLOT_FREE;
                s->slot_of[s->slot_occ[i]] = -1;
            }
        }
        if (start_loads(s)) return -2;

        /* admit */
        int64_t budget = (int64_t)s->mbt - s->h_n;
        int64_t n_adm = 0;
        int blocked = 0, waiting = 0;
        s->cached = -1;
        while (s->h_n < s->max_seqs) {
            int32_t a;
            int64_t u, k, p, g;
            int nr = next_record(s, &a, &u, &k);
            if (nr < 0) return -2;
            if (nr == 0) {
                waiting = s->total_rem > 0;
                break;
            }
            if (u < 0 || u >= s->n_units || k < 0 || k >= s->units[u].n_records || s->rem[a] <= 0) return -2;
            rec_tokens(&s->units[u], k, &p, &g);
            if (s->jitter_pct > 0 && g > 0) {
                int64_t span = g * s->jitter_pct / 100;
                uint64_t h = mix64(s->seed ^ mix64((uint64_t)u * 0x100000001b3ull ^ (uint64_t)k));
                g += (int64_t)(h % (uint64_t)(2 * span + 1)) - span;
            }
            int64_t pe = p < s->mbt ? p : s->mbt;
            if (pe > budget && !(n_adm == 0 && s->h_n == 0)) {
                blocked = 1;
                break;
            }
            budget -= pe;
            int64_t dur = (g > 1 ? g : 1) + (p > s->mbt ? (p + s->mbt - 1) / s->mbt - 1 : 0);
            heap_push(s, s->t + dur, a);
            int64_t rel = s->t + dur + (dur * s->slack_pct + 99) / 100;
            if (rel > s->release_at[a]) s->release_at[a] = rel;
            s->inflight[a]++;
            s->rem[a]--;
            s->total_rem--;
            n_adm++;
            if (commit_record(s, a, u, k)) return -1;
        }
        if (s->total_rem == 0 && s->h_n == 0) return 0;

        /* next event */
        int64_t tn = INT64_MAX;
        if (s->h_n > 0) tn = s->h_end[0];
        for (int32_t i = 0; i < s->n_slots; i++)
            if ((s->slot_state[i] == SLOT_LOADING || s->slot_state[i] == SLOT_DRAINING) && s->slot_ready[i] < tn)
                tn = s->slot_ready[i];
        if (blocked && n_adm > 0 && s->t + 1 < tn) tn = s->t + 1;
        if (tn == INT64_MAX || tn <= s->t) return -2;
        s->seat_steps += s->h_n * (tn - s->t);
        if (waiting && !blocked) s->stall_steps += tn - s->t;
        s->t = tn;
    }
}

static void load_steps_init(struct sim *s, const size_t *bytes, size_t lbps)
{
    for (int32_t a = 0; a < s->na; a++)
        s->load_steps[a] = lbps ? (int64_t)((bytes[a] + lbps - 1) / lbps) : 0;
}

/* ------------------------------------------------------------------ validation, budget */

static int add_ok(int64_t *acc, int64_t v)
{
    return !__builtin_add_overflow(*acc, v, acc);
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

static const char *ad_name(const struct lb_plan_input *in, int32_t a, char *buf, size_t n)
{
    if (in->adapters[a].name) return in->adapters[a].name;
    snprintf(buf, n, "adapter %d", (int)a);
    return buf;
}

static int check_input(const struct lb_plan_input *in, struct lb_err *err)
{
    if (in->n_adapters < 0 || (in->n_adapters > 0 && !in->adapters))
        return lb_err_set(err, LB_E_INPUT, "plan: bad adapter list (n_adapters %d)", (int)in->n_adapters);
    if (in->n_units < 0 || (in->n_units > 0 && !in->units))
        return lb_err_set(err, LB_E_INPUT, "plan: bad unit list (n_units %lld)", (long long)in->n_units);
    if (in->max_seqs < 1 || in->max_seqs > (1 << 20))
        return lb_err_set(err, LB_E_INPUT, "plan: max_seqs must be in [1, 1048576], got %d", (int)in->max_seqs);
    if (in->max_batch_tokens < 1)
        return lb_err_set(err, LB_E_INPUT, "plan: max_batch_tokens must be >= 1, got %d", (int)in->max_batch_tokens);
    if (in->gpu_adapter_slots < 0 || in->gpu_adapter_slots > 65536)
        return lb_err_set(err, LB_E_INPUT, "plan: gpu_adapter_slots must be in [0, 65536], got %d",
                          (int)in->gpu_adapter_slots);
    if (in->drain_slack_pct < 0 || in->drain_slack_pct > 1000)
        return lb_err_set(err, LB_E_INPUT, "plan: drain_slack_pct must be in [0, 1000], got %d", (int)in->drain_slack_pct);
    if (in->policy != LB_PLAN_POLICY_FILL && in->policy != LB_PLAN_POLICY_FIFO)
        return lb_err_set(err, LB_E_INPUT, "plan: unknown policy %d", in->policy);
    char nb[32];
    for (int32_t a = 0; a < in->n_adapters; a++) {
        if (in->adapters[a].rank < 1)
            return lb_err_set(err, LB_E_INPUT, "plan: adapter \"%s\": rank must be >= 1, got %d",
                              ad_name(in, a, nb, sizeof nb), (int)in->adapters[a].rank);
        if (in->mem.max_lora_rank > 0 && in->adapters[a].rank > in->mem.max_lora_rank)
            return lb_err_set(err, LB_E_INPUT, "plan: adapter \"%s\": rank %d exceeds max_lora_rank %d",
                              ad_name(in, a, nb, sizeof nb), (int)in->adapters[a].rank, (int)in->mem.max_lora_rank);
    }
    int64_t n_rec = 0, n_slotted = 0, n_tok = 0;
    for (int64_t i = 0; i < in->n_units; i++) {
        const struct lb_plan_unit *u = &in->units[i];
        if (u->adapter < LB_PLAN_BASE || u->adapter >= in->n_adapters)
            return lb_err_set(err, LB_E_INPUT, "plan: unit %lld (shard %d): adapter index %d out of range [-1, %d)",
                              (long long)i, (int)u->shard, (int)u->adapter, (int)in->n_adapters);
        if (u->n_records < 0 || u->n_tok_prompt < 0 || u->n_tok_gen < 0)
            return lb_err_set(err, LB_E_INPUT, "plan: unit %lld (shard %d): negative count", (long long)i, (int)u->shard);
        if (u->n_records > ((int64_t)1 << 31))
            return lb_err_set(err, LB_E_UNSUPPORTED, "plan: unit %lld (shard %d): %lld records, more than 2^31 in one unit",
                              (long long)i, (int)u->shard, (long long)u->n_records);
        if (!add_ok(&n_rec, u->n_records) || !add_ok(&n_tok, u->n_tok_prompt) || !add_ok(&n_tok, u->n_tok_gen))
            return lb_err_set(err, LB_E_INPUT, "plan: record or token counts overflow");
        if (u->adapter != LB_PLAN_BASE) n_slotted += u->n_records;
    }
    if (n_slotted > 0 && in->gpu_adapter_slots == 0)
        return lb_err_set(err, LB_E_INPUT,
                          "plan: gpu_adapter_slots is 0 but %lld records need an adapter", (long long)n_slotted);
    return 0;
}

static int compute_budget(const struct lb_plan_input *in, struct lb_plan_budget *b, struct lb_err *err)
{
    const struct lb_plan_mem *m = &in->mem;
    memset(b, 0, sizeof *b);
    if (m->device_bytes == 0) return 0;
    if (!(m->gpu_memory_fraction > 0.0 && m->gpu_memory_fraction <= 1.0))
        return lb_err_set(err, LB_E_INPUT, "memory budget: gpu_memory_fraction must be in (0, 1], got %g",
                          m->gpu_memory_fraction);
    if (m->kv_token_bytes == 0 || m->kv_page_tokens < 1)
        return lb_err_set(err, LB_E_INPUT, "memory budget: kv_token_bytes and kv_page_tokens must be > 0");
    b->checked = 1;
    b->available_bytes = (size_t)((double)m->device_bytes * m->gpu_memory_fraction);
    b->weight_bytes = m->weight_bytes;
    b->workspace_bytes = m->workspace_bytes;
    size_t big = 0;
    for (int32_t a = 0; a < in->n_adapters; a++)
        if (in->adapters[a].bytes > big) big = in->adapters[a].bytes;
    if (m->lora_rank_bytes > 0) {
        if (m->max_lora_rank < 1)
            return lb_err_set(err, LB_E_INPUT, "memory budget: max_lora_rank must be >= 1 when lora_rank_bytes is set");
        if (__builtin_mul_overflow((size_t)m->max_lora_rank, m->lora_rank_bytes, &b->slot_bytes))
            return lb_err_set(err, LB_E_INPUT, "memory budget: slot size overflows");
        char nb[32];
        for (int32_t a = 0; a < in->n_adapters; a++)
            if (in->adapters[a].bytes > b->slot_bytes)
                return lb_err_set(err, LB_E_INPUT,
                                  "memory budget: adapter \"%s\": %zu bytes loaded, larger than a slot "
                                  "(max_lora_rank %d x %zu bytes per rank = %zu)",
                                  ad_name(in, a, nb, sizeof nb), in->adapters[a].bytes, (int)m->max_lora_rank,
                                  m->lora_rank_bytes, b->slot_bytes);
    } else {
        b->slot_bytes = big;
    }
    size_t fixed = 0, one_seq = 0;
    int ovf = __builtin_mul_overflow((size_t)in->gpu_adapter_slots, b->slot_bytes, &b->slots_bytes);
    ovf |= __builtin_add_overflow(b->weight_bytes, b->slots_bytes, &fixed);
    ovf |= __builtin_add_overflow(fixed, b->workspace_bytes, &fixed);
    ovf |= __builtin_mul_overflow((size_t)m->kv_page_tokens, m->kv_token_bytes, &b->kv_page_bytes);
    int64_t seq_pages = m->max_seq_tokens > 0 ? (m->max_seq_tokens + m->kv_page_tokens - 1) / m->kv_page_tokens : 0;
    ovf |= __builtin_mul_overflow((size_t)seq_pages, b->kv_page_bytes, &one_seq);
    size_t need;
    ovf |= __builtin_add_overflow(fixed, one_seq, &need);
    if (ovf) return lb_err_set(err, LB_E_INPUT, "memory budget: sizes overflow");
    if (need > b->available_bytes) {
        return lb_err_set(err, LB_E_OOM,
                          "memory budget: needs %zu bytes (%.2f GiB) but %zu bytes (%.2f GiB) are available "
                          "(device %zu bytes x gpu_memory_fraction %.2f): weights %zu + %d adapter slots x %zu "
                          "+ workspace %zu + KV cache for one sequence of %lld tokens %zu; "
                          "lower gpu_adapter_slots, max_lora_rank or max_batch_tokens, or raise gpu_memory_fraction",
                          need, gib(need), b->available_bytes, gib(b->available_bytes), m->device_bytes,
                          m->gpu_memory_fraction, b->weight_bytes, (int)in->gpu_adapter_slots, b->slot_bytes,
                          b->workspace_bytes, (long long)m->max_seq_tokens, one_seq);
    }
    b->kv_bytes = b->available_bytes - fixed;
    b->n_kv_pages = (int64_t)(b->kv_bytes / b->kv_page_bytes);
    b->n_kv_tokens = b->n_kv_pages * m->kv_page_tokens;
    return 0;
}

/* ------------------------------------------------------------------ build */

/* Sorting indices by a key, largest key first, ties by lower index (qsort has no context
 * argument, so the key travels with the index). */
struct key_idx {
    int64_t key;
    int64_t idx;
};

static int cmp_key_desc(const void *x, const void *y)
{
    const struct key_idx *a = x, *b = y;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* idx[0..n) sorted by key[idx] desc, ties by index. Returns -1 on allocation failure. */
static int sort_by_key_desc(int32_t *idx, int64_t n, const int64_t *key)
{
    struct key_idx *kv = zalloc(n, sizeof *kv);
    if (!kv) return -1;
    for (int64_t i = 0; i < n; i++) kv[i] = (struct key_idx){key[idx[i]], idx[i]};
    qsort(kv, (size_t)n, sizeof *kv, cmp_key_desc);
    for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)kv[i].idx;
    free(kv);
    return 0;
}

void lb_plan_free(struct lb_plan *plan)
{
    if (!plan) return;
    free(plan->runs);
    free(plan->loads);
    free(plan->adapters);
    free(plan->names);
    free(plan->units);
    memset(plan, 0, sizeof *plan);
}

int lb_plan_build(const struct lb_plan_input *in, struct lb_plan *plan, struct lb_err *err)
{
    if (!plan) return lb_err_set(err, LB_E_INTERNAL, "plan: NULL plan");
    memset(plan, 0, sizeof *plan);
    if (!in) return lb_err_set(err, LB_E_INTERNAL, "plan: NULL input");
    int rc = check_input(in, err);
    if (rc) return rc;
    struct sim s;
    memset(&s, 0, sizeof s);
    size_t *bytes = NULL;

    rc = compute_budget(in, &plan->budget, err);
    if (rc) goto done;

    int32_t na = in->n_adapters;
    plan->n_adapters = na;
    plan->n_slots = in->gpu_adapter_slots;
    plan->max_seqs = in->max_seqs;
    plan->max_batch_tokens = in->max_batch_tokens;
    plan->load_bytes_per_step = in->load_bytes_per_step;
    plan->policy = in->policy;
    plan->n_units = in->n_units;
    plan->units = zalloc(in->n_units, sizeof *plan->units);
    plan->adapters = zalloc(na, sizeof *plan->adapters);
    size_t names_len = 0;
    char nb[32];
    for (int32_t a = 0; a < na; a++) names_len += strlen(ad_name(in, a, nb, sizeof nb)) + 1;
    plan->names = zalloc((int64_t)names_len, 1);
    bytes = zalloc(na, sizeof *bytes);
    rc = LB_E_OOM;
    if (!plan->units || !plan->adapters || !plan->names || !bytes) goto oom;
    if (in->n_units) memcpy(plan->units, in->units, (size_t)in->n_units * sizeof *plan->units);
    char *np = plan->names;
    for (int32_t a = 0; a < na; a++) {
        struct lb_plan_adapter_stat *st = &plan->adapters[a];
        size_t l = strlen(ad_name(in, a, nb, sizeof nb)) + 1;
        memcpy(np, ad_name(in, a, nb, sizeof nb), l);
        st->name = np;
        np += l;
        st->rank = in->adapters[a].rank;
        st->bytes = bytes[a] = in->adapters[a].bytes;
        st->slot = -1;
        st->first_run = st->last_run = -1;
    }
    for (int64_t i = 0; i < in->n_units; i++) {
        const struct lb_plan_unit *u = &in->units[i];
        plan->n_records += u->n_records; /* these sums were checked for overflow in check_input */
        plan->n_tok_prompt += u->n_tok_prompt;
        plan->n_tok_gen += u->n_tok_gen;
        if (u->n_records == 0) continue;
        if (u->adapter == LB_PLAN_BASE) {
            plan->base_n_records += u->n_records;
            plan->base_n_tok_prompt += u->n_tok_prompt;
            plan->base_n_tok_gen += u->n_tok_gen;
        } else {
            struct lb_plan_adapter_stat *st = &plan->adapters[u->adapter];
            st->n_units++;
            st->n_records += u->n_records;
            st->n_tok_prompt += u->n_tok_prompt;
            st->n_tok_gen += u->n_tok_gen;
        }
    }

    /* simulation state */
    s.build = 1;
    s.na = na;
    s.n_slots = in->gpu_adapter_slots;
    s.max_seqs = in->max_seqs;
    s.mbt = in->max_batch_tokens;
    s.policy = in->policy;
    s.slack_pct = in->drain_slack_pct;
    s.units = plan->units;
    s.n_units = plan->n_units;
    if (sim_alloc(&s)) goto oom;
    load_steps_init(&s, bytes, in->load_bytes_per_step);
    s.ad_ptr = zalloc((int64_t)na + 2, sizeof *s.ad_ptr);
    s.cur_pos = zalloc((int64_t)na + 1, sizeof *s.cur_pos);
    s.cur_off = zalloc((int64_t)na + 1, sizeof *s.cur_off);
    s.pend = zalloc(na, sizeof *s.pend);
    s.out_loads = zalloc(na, sizeof *s.out_loads);
    if (!s.ad_ptr || !s.cur_pos || !s.cur_off || !s.pend || !s.out_loads) goto oom;
    /* CSR of units with records per adapter (base last), in input order */
    int64_t n_with = 0;
    for (int64_t i = 0; i < in->n_units; i++) {
        const struct lb_plan_unit *u = &in->units[i];
        if (u->n_records == 0) continue;
        int32_t a = u->adapter < 0 ? na : u->adapter;
        s.ad_ptr[a + 1]++;
        s.rem[a] += u->n_records;
        n_with++;
    }
    for (int32_t a = 0; a <= na; a++) s.ad_ptr[a + 1] += s.ad_ptr[a];
    s.ad_units = zalloc(n_with, sizeof *s.ad_units);
    if (!s.ad_units) goto oom;
    for (int64_t i = 0; i < in->n_units; i++) {
        const struct lb_plan_unit *u = &in->units[i];
        if (u->n_records == 0) continue;
        int32_t a = u->adapter < 0 ? na : u->adapter;
        s.ad_units[s.ad_ptr[a] + s.cur_pos[a]++] = i;
    }
    memset(s.cur_pos, 0, ((size_t)na + 1) * sizeof *s.cur_pos);
    for (int32_t a = 0; a <= na; a++) s.total_rem += s.rem[a];
    for (int32_t a = 0; a < na; a++)
        if (s.rem[a] > 0) s.pend[s.pend_hi++] = a;
    plan->n_loads_ideal = s.pend_hi;
    if (s.policy == LB_PLAN_POLICY_FILL) {
        if (sort_by_key_desc(s.pend, s.pend_hi, s.rem)) goto oom;
    }

    int r = sim_run(&s);
    if (r == -1) goto oom;
    if (r != 0 || s.n_out_loads != plan->n_loads_ideal) {
        rc = lb_err_set(err, LB_E_INTERNAL, "plan: planner simulation got stuck at step %lld (a bug)", (long long)s.t);
        goto done;
    }
    plan->est_steps = s.t;
    plan->est_fill = s.t > 0 ? (double)s.seat_steps / ((double)s.t * in->max_seqs) : 0.0;
    plan->runs = s.out_runs;
    plan->n_runs = s.n_out_runs;
    s.out_runs = NULL;
    plan->loads = s.out_loads;
    plan->n_loads = s.n_out_loads;
    s.out_loads = NULL;

    for (int64_t i = 0; i < plan->n_runs; i++) {
        const struct lb_plan_run *ru = &plan->runs[i];
        if (ru->adapter < 0) continue;
        struct lb_plan_adapter_stat *st = &plan->adapters[ru->adapter];
        if (st->first_run < 0) st->first_run = i;
        st->last_run = i;
        st->slot = ru->slot;
    }
    for (int64_t i = 0; i < plan->n_loads; i++) {
        struct lb_plan_load *l = &plan->loads[i];
        l->run_need = plan->adapters[l->adapter].first_run;
        l->run_prefetch = l->evicts >= 0 ? plan->adapters[l->evicts].last_run + 1 : 0;
        if (l->run_need < 0 || l->run_prefetch > l->run_need) {
            rc = lb_err_set(err, LB_E_INTERNAL, "plan: load %lld of adapter %d is inconsistent (a bug)",
                            (long long)i, (int)l->adapter);
            goto done;
        }
    }
    rc = 0;
    goto done;
oom:
    rc = lb_err_set(err, LB_E_OOM, "plan: out of host memory");
done:
    sim_free(&s);
    free(bytes);
    if (rc) lb_plan_free(plan);
    return rc;
}

/* ------------------------------------------------------------------ simulate */

int lb_plan_simulate(const struct lb_plan *plan, const struct lb_plan_sim_opts *opts,
                     struct lb_plan_sim *out, struct lb_err *err)
{
    if (!plan || !out) return lb_err_set(err, LB_E_INTERNAL, "plan simulate: NULL argument");
    memset(out, 0, sizeof *out);
    if (plan->max_seqs < 1) return lb_err_set(err, LB_E_INTERNAL, "plan simulate: empty plan");
    struct sim s;
    memset(&s, 0, sizeof s);
    size_t *bytes = NULL;
    int rc = 0;
    s.na = plan->n_adapters;
    s.n_slots = plan->n_slots;
    s.max_seqs = plan->max_seqs;
    s.mbt = plan->max_batch_tokens;
    s.policy = plan->policy;
    s.units = plan->units;
    s.n_units = plan->n_units;
    s.runs = plan->runs;
    s.n_runs = plan->n_runs;
    s.loads_in = plan->loads;
    s.n_loads_in = plan->n_loads;
    if (opts) {
        s.seed = opts->seed;
        s.jitter_pct = opts->jitter_pct < 0 ? 0 : opts->jitter_pct > 100 ? 100 : opts->jitter_pct;
    }
    bytes = zalloc(s.na, sizeof *bytes);
    if (!bytes || sim_alloc(&s)) {
        rc = lb_err_set(err, LB_E_OOM, "plan simulate: out of host memory");
        goto done;
    }
    for (int32_t a = 0; a < s.na; a++) bytes[a] = plan->adapters[a].bytes;
    load_steps_init(&s, bytes, plan->load_bytes_per_step);
    for (int64_t i = 0; i < plan->n_runs; i++) {
        const struct lb_plan_run *r = &plan->runs[i];
        if (r->adapter < LB_PLAN_BASE || r->adapter >= s.na || r->rec_end <= r->rec_begin) {
            rc = lb_err_set(err, LB_E_INTERNAL, "plan simulate: run %lld is malformed", (long long)i);
            goto done;
        }
        s.rem[r->adapter < 0 ? s.na : r->adapter] += r->rec_end - r->rec_begin;
        s.total_rem += r->rec_end - r->rec_begin;
    }
    int r = sim_run(&s);
    if (r == -1) {
        rc = lb_err_set(err, LB_E_OOM, "plan simulate: out of host memory");
        goto done;
    }
    if (r != 0 || s.load_i != s.n_loads_in) {
        rc = lb_err_set(err, LB_E_INTERNAL, "plan simulate: the plan is inconsistent (stuck at step %lld, run %lld)",
                        (long long)s.t, (long long)s.run_i);
        goto done;
    }
    out->n_steps = s.t;
    out->n_seat_steps = s.seat_steps;
    out->fill = s.t > 0 ? (double)s.seat_steps / ((double)s.t * s.max_seqs) : 0.0;
    out->n_loads = s.n_loads;
    out->n_stall_steps = s.stall_steps;
done:
    sim_free(&s);
    free(bytes);
    return rc;
}

/* ------------------------------------------------------------------ print */

static void fmt_bytes(char *buf, size_t n, size_t b)
{
    if (b >= ((size_t)1 << 30)) snprintf(buf, n, "%.2f GiB", (double)b / (1 << 30));
    else if (b >= ((size_t)1 << 20)) snprintf(buf, n, "%.1f MiB", (double)b / (1 << 20));
    else snprintf(buf, n, "%zu B", b);
}

void lb_plan_print(const struct lb_plan *p, FILE *f)
{
    enum { TOP = 20, CHAIN = 6 };
    char b1[32], b2[32];
    fprintf(f, "plan: %lld records (%lld prompt + %lld generated tokens estimated), %lld units, %d adapters, "
               "%d GPU adapter slots, max_seqs %d, max_batch_tokens %d, policy %s\n",
            (long long)p->n_records, (long long)p->n_tok_prompt, (long long)p->n_tok_gen, (long long)p->n_units,
            (int)p->n_adapters, (int)p->n_slots, (int)p->max_seqs, (int)p->max_batch_tokens,
            p->policy == LB_PLAN_POLICY_FIFO ? "fifo" : "fill");

    int32_t *idx = NULL;
    int64_t *recs = NULL;
    int32_t n_with = 0;
    if (p->n_adapters > 0) {
        idx = malloc((size_t)p->n_adapters * sizeof *idx);
        recs = malloc((size_t)p->n_adapters * sizeof *recs);
    }
    fprintf(f, "\nadapters (largest first)%s:\n", p->n_adapters > TOP ? ", top 20" : "");
    fprintf(f, "  %-24s %6s %10s %12s %12s %5s %6s %12s\n", "adapter", "rank", "records", "prompt tok", "gen tok",
            "units", "slot", "runs");
    if (p->base_n_records > 0)
        fprintf(f, "  %-24s %6s %10lld %12lld %12lld %5s %6s %12s\n", "(base)", "-", (long long)p->base_n_records,
                (long long)p->base_n_tok_prompt, (long long)p->base_n_tok_gen, "", "-", "");
    if (idx && recs) {
        for (int32_t a = 0; a < p->n_adapters; a++) {
            recs[a] = p->adapters[a].n_records;
            if (recs[a] > 0) idx[n_with++] = a;
        }
        sort_by_key_desc(idx, n_with, recs); /* unsorted on allocation failure: still a summary */
        for (int32_t j = 0; j < n_with && j < TOP; j++) {
            const struct lb_plan_adapter_stat *st = &p->adapters[idx[j]];
            char runs[32];
            snprintf(runs, sizeof runs, "%lld..%lld", (long long)st->first_run, (long long)st->last_run);
            fprintf(f, "  %-24.24s %6d %10lld %12lld %12lld %5lld %6d %12s\n", st->name, (int)st->rank,
                    (long long)st->n_records, (long long)st->n_tok_prompt, (long long)st->n_tok_gen,
                    (long long)st->n_units, (int)st->slot, runs);
        }
        if (n_with > TOP) fprintf(f, "  ... %d more adapters with records\n", (int)(n_with - TOP));
    }
    if (p->n_adapters - n_with > 0 && idx)
        fprintf(f, "  %d adapters have no records (not loaded)\n", (int)(p->n_adapters - n_with));

    fprintf(f, "\nadmission order: %lld runs; slot timeline (loads in order, -> = next occupant):\n", (long long)p->n_runs);
    for (int32_t sl = 0; sl < p->n_slots && sl < 64; sl++) {
        int64_t n = 0;
        for (int64_t i = 0; i < p->n_loads; i++)
            if (p->loads[i].slot == sl) n++;
        fprintf(f, "  slot %3d: %4lld loads:", (int)sl, (long long)n);
        int64_t shown = 0;
        for (int64_t i = 0; i < p->n_loads && shown < CHAIN; i++) {
            if (p->loads[i].slot != sl) continue;
            fprintf(f, "%s %s@%lld", shown ? " ->" : "", p->adapters[p->loads[i].adapter].name,
                    (long long)p->loads[i].run_need);
            shown++;
        }
        fprintf(f, "%s\n", n > CHAIN ? " -> ..." : "");
    }
    if (p->n_slots > 64) fprintf(f, "  ... %d more slots\n", (int)(p->n_slots - 64));
    fprintf(f, "predicted adapter loads: %lld (ideal, one per adapter with records: %lld)\n",
            (long long)p->n_loads, (long long)p->n_loads_ideal);
    fprintf(f, "estimated engine steps: %lld, mean batch fill %.1f%% of max_seqs (lengths exactly as estimated)\n",
            (long long)p->est_steps,
            100.0 * p->est_fill);

    const struct lb_plan_budget *bu = &p->budget;
    fprintf(f, "\nmemory budget (per device):");
    if (!bu->checked) {
        fprintf(f, " not checked (no device memory given)\n");
    } else {
        fmt_bytes(b1, sizeof b1, bu->available_bytes);
        fprintf(f, "\n  available             %s\n", b1);
        fmt_bytes(b1, sizeof b1, bu->weight_bytes);
        fprintf(f, "  weights               %s\n", b1);
        fmt_bytes(b1, sizeof b1, bu->slots_bytes);
        fmt_bytes(b2, sizeof b2, bu->slot_bytes);
        fprintf(f, "  adapter slots         %s (%d x %s)\n", b1, (int)p->n_slots, b2);
        fmt_bytes(b1, sizeof b1, bu->workspace_bytes);
        fprintf(f, "  workspace             %s\n", b1);
        fmt_bytes(b1, sizeof b1, bu->kv_bytes);
        fmt_bytes(b2, sizeof b2, bu->kv_page_bytes);
        fprintf(f, "  KV cache              %s = %lld pages of %s (%lld tokens)\n", b1, (long long)bu->n_kv_pages, b2,
                (long long)bu->n_kv_tokens);
        if (p->n_records > 0) {
            int64_t mean = (p->n_tok_prompt + p->n_tok_gen) / p->n_records;
            if (mean > 0 && bu->n_kv_tokens / mean < p->max_seqs)
                fprintf(f, "  note: the KV cache holds about %lld sequences of the mean length (%lld tokens), "
                           "fewer than max_seqs %d; the engine will preempt\n",
                        (long long)(bu->n_kv_tokens / mean), (long long)mean, (int)p->max_seqs);
        }
    }
    free(idx);
    free(recs);
}

/* ------------------------------------------------------------------ parts */

int lb_plan_part_units(int64_t n_units, const int64_t *unit_records, int32_t part_i, int32_t part_n,
                       struct lb_plan_part_range *out, int64_t cap, int64_t *n_out, struct lb_err *err)
{
    if (!n_out || n_units < 0 || (n_units > 0 && !unit_records) || cap < 0 || (cap > 0 && !out))
        return lb_err_set(err, LB_E_INPUT, "part: bad arguments");
    *n_out = 0;
    if (part_n < 1 || part_i < 0 || part_i >= part_n)
        return lb_err_set(err, LB_E_INPUT, "--part %d/%d: need 0 <= I < N", (int)part_i, (int)part_n);
    int64_t total = 0;
    for (int64_t u = 0; u < n_units; u++)
        if (unit_records[u] < 0 || !add_ok(&total, unit_records[u]))
            return lb_err_set(err, LB_E_INPUT, "part: unit %lld: bad record count", (long long)u);
    int64_t n = 0;
    if (n_units >= part_n) {
        /* whole units, largest first to the part with the fewest records (LPT; ties: fewest units,
         * so empty units cannot leave a part without work; then lower part); O(n_units * part_n) */
        int32_t *idx = zalloc(n_units, sizeof *idx);
        int64_t *load = zalloc(part_n, sizeof *load), *cnt = zalloc(part_n, sizeof *cnt);
        int32_t *owner = zalloc(n_units, sizeof *owner);
        if (!idx || !load || !cnt || !owner || n_units > INT32_MAX) {
            free(idx); free(load); free(cnt); free(owner);
            return lb_err_set(err, LB_E_OOM, "part: out of host memory");
        }
        for (int64_t u = 0; u < n_units; u++) idx[u] = (int32_t)u;
        if (sort_by_key_desc(idx, n_units, unit_records)) {
            free(idx); free(load); free(cnt); free(owner);
            return lb_err_set(err, LB_E_OOM, "part: out of host memory");
        }
        for (int64_t j = 0; j < n_units; j++) {
            int32_t best = 0;
            for (int32_t q = 1; q < part_n; q++)
                if (load[q] < load[best] || (load[q] == load[best] && cnt[q] < cnt[best])) best = q;
            owner[idx[j]] = best;
            load[best] += unit_records[idx[j]];
            cnt[best]++;
        }
        for (int64_t u = 0; u < n_units; u++) {
            if (owner[u] != part_i) continue;
            if (n < cap) out[n] = (struct lb_plan_part_range){u, 0, unit_records[u]};
            n++;
        }
        free(idx); free(load); free(cnt); free(owner);
    } else {
        /* record slices of the concatenation; floor(i*T/N) computed without overflow */
        int64_t q = total / part_n, r = total % part_n;
        int64_t lo = q * part_i + r * part_i / part_n;
        int64_t hi = q * (part_i + 1) + r * (part_i + 1) / part_n;
        int64_t pre = 0;
        for (int64_t u = 0; u < n_units; u++) {
            int64_t a = pre, b = pre + unit_records[u];
            pre = b;
            int64_t x = a > lo ? a : lo, y = b < hi ? b : hi;
            if (unit_records[u] == 0) {
                if (part_i != 0) continue; /* empty units belong to part 0, so their (empty) output exists */
                x = y = a;
            } else if (x >= y) {
                continue;
            }
            if (n < cap) out[n] = (struct lb_plan_part_range){u, x - a, y - a};
            n++;
        }
    }
    *n_out = n;
    if (n > cap)
        return lb_err_set(err, LB_E_OOM, "part: %lld ranges do not fit in a buffer of %lld", (long long)n, (long long)cap);
    return 0;
}
