/* test_plan.c — planner invariants on seeded random workloads, memory budget, parts, print. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* open_memstream */
#endif
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "t.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = (rng_state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int64_t rnd_in(int64_t lo, int64_t hi) /* [lo, hi] */
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

struct workload {
    struct lb_plan_adapter ads[64];
    struct lb_plan_unit units[128];
    struct lb_plan_input in;
};

/* A random workload: 0..40 adapters, 0..100 units (some base, some empty), uniform or skewed. */
static void make_workload(struct workload *w, uint64_t seed)
{
    rng_state = seed;
    memset(w, 0, sizeof *w);
    int32_t na = (int32_t)rnd_in(0, 40);
    int64_t nu = rnd_in(0, 100);
    int skew = (int)rnd_in(0, 1);
    for (int32_t a = 0; a < na; a++)
        w->ads[a] = (struct lb_plan_adapter){NULL, (int32_t)rnd_in(1, 64), (size_t)rnd_in(1, 1 << 20)};
    for (int64_t i = 0; i < nu; i++) {
        int32_t a = na > 0 && rnd_in(0, 5) > 0 ? (int32_t)rnd_in(0, na - 1) : LB_PLAN_BASE;
        if (skew && na > 0 && rnd_in(0, 2) == 0) a = 0; /* one popular adapter */
        int64_t n = rnd_in(0, 9) == 0 ? 0 : skew ? (int64_t)(400.0 / pow((double)rnd_in(1, 50), 1.1)) : rnd_in(1, 300);
        w->units[i] = (struct lb_plan_unit){(int32_t)i, a, n, n * rnd_in(0, 300), n * rnd_in(0, 100)};
    }
    w->in = (struct lb_plan_input){
        .n_adapters = na, .adapters = w->ads, .n_units = nu, .units = w->units,
        .gpu_adapter_slots = (int32_t)rnd_in(1, 8), .max_seqs = (int32_t)rnd_in(1, 64),
        .max_batch_tokens = (int32_t)rnd_in(16, 2048),
        .load_bytes_per_step = rnd_in(0, 1) ? 0 : (size_t)rnd_in(1 << 10, 1 << 20),
        .policy = (int)rnd_in(0, 1), .drain_slack_pct = (int32_t)(rnd_in(0, 1) ? 0 : rnd_in(1, 100)),
    };
}

/* Checks every structural invariant of a plan against its input. Returns failures. */
static int check_plan(const struct lb_plan_input *in, const struct lb_plan *p, uint64_t seed)
{
    int before = t_cur_fail;
    int32_t na = in->n_adapters, S = in->gpu_adapter_slots;
    int64_t *cur = calloc((size_t)in->n_units + 1, sizeof *cur);
    int64_t *first = malloc(((size_t)na + 1) * sizeof *first), *last = malloc(((size_t)na + 1) * sizeof *last);
    int32_t *slot = malloc(((size_t)na + 1) * sizeof *slot);
    int64_t *n_load = calloc((size_t)na + 1, sizeof *n_load);
    int64_t *live = calloc((size_t)p->n_runs + 2, sizeof *live);
    for (int32_t a = 0; a < na; a++) first[a] = last[a] = -1, slot[a] = -2;

    /* every record exactly once; each unit's runs in increasing order without gaps */
    for (int64_t i = 0; i < p->n_runs; i++) {
        const struct lb_plan_run *r = &p->runs[i];
        T_CHECK(r->unit >= 0 && r->unit < in->n_units, "seed %" PRIu64 " run %lld: unit %lld", seed, (long long)i,
                (long long)r->unit);
        if (r->unit < 0 || r->unit >= in->n_units) break;
        const struct lb_plan_unit *u = &in->units[r->unit];
        T_CHECK(r->rec_begin == cur[r->unit] && r->rec_end > r->rec_begin && r->rec_end <= u->n_records,
                "seed %" PRIu64 " run %lld: [%lld, %lld) of unit %lld, cursor %lld, n %lld", seed, (long long)i,
                (long long)r->rec_begin, (long long)r->rec_end, (long long)r->unit, (long long)cur[r->unit],
                (long long)u->n_records);
        cur[r->unit] = r->rec_end;
        T_CHECK(r->adapter == u->adapter, "seed %" PRIu64 " run %lld: adapter %d vs unit's %d", seed, (long long)i,
                r->adapter, u->adapter);
        if (r->adapter == LB_PLAN_BASE) {
            T_CHECK(r->slot == -1, "seed %" PRIu64 " base run %lld in slot %d", seed, (long long)i, r->slot);
            continue;
        }
        T_CHECK(r->slot >= 0 && r->slot < S, "seed %" PRIu64 " run %lld: slot %d of %d", seed, (long long)i, r->slot, S);
        int32_t a = r->adapter;
        if (first[a] < 0) first[a] = i, slot[a] = r->slot;
        last[a] = i;
        T_CHECK(slot[a] == r->slot, "seed %" PRIu64 " adapter %d moves from slot %d to %d", seed, a, slot[a], r->slot);
    }
    for (int64_t u = 0; u < in->n_units; u++)
        T_CHECK(cur[u] == in->units[u].n_records, "seed %" PRIu64 " unit %lld: %lld of %lld records planned", seed,
                (long long)u, (long long)cur[u], (long long)in->units[u].n_records);

    /* never more than S adapters live at any run */
    int64_t n_with = 0;
    for (int32_t a = 0; a < na; a++) {
        if (first[a] < 0) continue;
        n_with++;
        live[first[a]]++;
        live[last[a] + 1]--;
        T_CHECK(p->adapters[a].first_run == first[a] && p->adapters[a].last_run == last[a] &&
                    p->adapters[a].slot == slot[a],
                "seed %" PRIu64 " adapter %d: stats disagree with runs", seed, a);
    }
    int64_t acc = 0, peak = 0;
    for (int64_t i = 0; i <= p->n_runs; i++) {
        acc += live[i];
        if (acc > peak) peak = acc;
    }
    T_CHECK(peak <= S, "seed %" PRIu64 ": %lld adapters live at once, %d slots", seed, (long long)peak, S);

    /* loads: one per adapter with records, after the previous occupant's last run */
    T_CHECK(p->n_loads == n_with && p->n_loads_ideal == n_with, "seed %" PRIu64 ": %lld loads, %lld adapters", seed,
            (long long)p->n_loads, (long long)n_with);
    int32_t *occ = malloc(((size_t)S + 1) * sizeof *occ);
    for (int32_t s = 0; s < S; s++) occ[s] = -1;
    for (int64_t i = 0; i < p->n_loads; i++) {
        const struct lb_plan_load *l = &p->loads[i];
        T_CHECK(l->adapter >= 0 && l->adapter < na && l->slot >= 0 && l->slot < S, "seed %" PRIu64 " load %lld", seed,
                (long long)i);
        if (l->adapter < 0 || l->adapter >= na || l->slot < 0 || l->slot >= S) break;
        n_load[l->adapter]++;
        T_CHECK(l->slot == slot[l->adapter] && l->run_need == first[l->adapter],
                "seed %" PRIu64 " load %lld: slot %d need %lld vs %d %lld", seed, (long long)i, l->slot,
                (long long)l->run_need, slot[l->adapter], (long long)first[l->adapter]);
        T_CHECK(l->evicts == occ[l->slot], "seed %" PRIu64 " load %lld evicts %d, slot held %d", seed, (long long)i,
                l->evicts, occ[l->slot]);
        int64_t pre = occ[l->slot] < 0 ? 0 : last[occ[l->slot]] + 1;
        T_CHECK(l->run_prefetch == pre && l->run_prefetch <= l->run_need,
                "seed %" PRIu64 " load %lld: prefetch %lld (want %lld), need %lld", seed, (long long)i,
                (long long)l->run_prefetch, (long long)pre, (long long)l->run_need);
        occ[l->slot] = l->adapter;
    }
    for (int32_t a = 0; a < na; a++)
        T_CHECK(n_load[a] == (first[a] >= 0), "seed %" PRIu64 " adapter %d loaded %lld times", seed, a,
                (long long)n_load[a]);
    free(occ);
    free(cur); free(first); free(last); free(slot); free(n_load); free(live);
    return t_cur_fail - before;
}

static void test_random_invariants(void)
{
    static struct workload w;
    for (uint64_t seed = 1; seed <= 400; seed++) {
        make_workload(&w, seed);
        struct lb_plan p;
        struct lb_err err = {0};
        int rc = lb_plan_build(&w.in, &p, &err);
        T_CHECK(rc == 0, "seed %" PRIu64 ": %s", seed, err.msg);
        if (rc) continue;
        int bad = check_plan(&w.in, &p, seed);
        /* the replay never deadlocks, with exact and with jittered lengths */
        struct lb_plan_sim sim;
        struct lb_plan_sim_opts so = {.seed = seed, .jitter_pct = 60};
        rc = lb_plan_simulate(&p, &so, &sim, &err);
        T_CHECK(rc == 0 && sim.n_loads == p.n_loads, "seed %" PRIu64 ": replay: %s", seed, err.msg);
        T_CHECK(sim.fill >= 0.0 && sim.fill <= 1.0, "seed %" PRIu64 ": fill %f", seed, sim.fill);
        /* with slack 0 and exact lengths the replay is the planner's own timeline */
        if (w.in.drain_slack_pct == 0) {
            so.jitter_pct = 0;
            rc = lb_plan_simulate(&p, &so, &sim, &err);
            T_CHECK(rc == 0 && sim.n_steps == p.est_steps && sim.fill == p.est_fill,
                    "seed %" PRIu64 ": replay %lld steps, fill %f; planner %lld, %f", seed, (long long)sim.n_steps,
                    sim.fill, (long long)p.est_steps, p.est_fill);
        }
        lb_plan_free(&p);
        if (bad) break; /* one seed's worth of messages is enough */
    }
}

static void test_deterministic(void)
{
    static struct workload w;
    for (uint64_t seed = 1000; seed < 1050; seed++) {
        make_workload(&w, seed);
        struct lb_plan a, b;
        struct lb_err err = {0};
        int ra = lb_plan_build(&w.in, &a, &err), rb = lb_plan_build(&w.in, &b, &err);
        T_CHECK(ra == 0 && rb == 0, "seed %" PRIu64 ": %s", seed, err.msg);
        if (ra || rb) continue;
        T_CHECK(a.n_runs == b.n_runs && a.n_loads == b.n_loads && a.est_steps == b.est_steps &&
                    memcmp(a.runs, b.runs, (size_t)a.n_runs * sizeof *a.runs) == 0 &&
                    memcmp(a.loads, b.loads, (size_t)a.n_loads * sizeof *a.loads) == 0,
                "seed %" PRIu64 ": two builds differ", seed);
        lb_plan_free(&a);
        lb_plan_free(&b);
    }
}

/* 300 adapters of 20..80 records, 3 slots: each loaded exactly once. */
static void test_loads_ideal(void)
{
    static struct lb_plan_adapter ads[300];
    static struct lb_plan_unit units[600];
    rng_state = 7;
    for (int a = 0; a < 300; a++) {
        ads[a] = (struct lb_plan_adapter){NULL, 8, 1000};
        for (int k = 0; k < 2; k++) {
            int64_t n = rnd_in(10, 40);
            units[2 * a + k] = (struct lb_plan_unit){k, a, n, n * 100, n * 50};
        }
    }
    struct lb_plan_input in = {.n_adapters = 300, .adapters = ads, .n_units = 600, .units = units,
                               .gpu_adapter_slots = 3, .max_seqs = 128, .max_batch_tokens = 4096,
                               .load_bytes_per_step = 500};
    for (int pol = 0; pol < 2; pol++) {
        in.policy = pol;
        struct lb_plan p;
        struct lb_err err = {0};
        T_CHECK(lb_plan_build(&in, &p, &err) == 0, "%s", err.msg);
        T_CHECK(p.n_loads == 300 && p.n_loads_ideal == 300, "policy %d: %lld loads", pol, (long long)p.n_loads);
        check_plan(&in, &p, 7);
        lb_plan_free(&p);
    }
}

/* One huge adapter and 60 tiny ones, 2 slots: the huge one fills the batch while the tiny ones
 * turn over in the other slot, so the batch stays nearly full; adapters in index order
 * (fifo) drain the batch at every tiny adapter. */
static void test_filler_keeps_batch_full(void)
{
    struct lb_plan_adapter ads[61];
    struct lb_plan_unit units[61];
    for (int a = 0; a < 61; a++) {
        ads[a] = (struct lb_plan_adapter){NULL, 8, 1000};
        int64_t n = a == 60 ? 5000 : 4;
        units[a] = (struct lb_plan_unit){a, a, n, n * 64, n * 64};
    }
    struct lb_plan_input in = {.n_adapters = 61, .adapters = ads, .n_units = 61, .units = units,
                               .gpu_adapter_slots = 2, .max_seqs = 64, .max_batch_tokens = 4096};
    struct lb_plan fill, fifo;
    struct lb_err err = {0};
    T_CHECK(lb_plan_build(&in, &fill, &err) == 0, "%s", err.msg);
    in.policy = LB_PLAN_POLICY_FIFO;
    T_CHECK(lb_plan_build(&in, &fifo, &err) == 0, "%s", err.msg);
    T_CHECK(fill.n_loads == 61 && fifo.n_loads == 61, "loads %lld %lld", (long long)fill.n_loads,
            (long long)fifo.n_loads);
    T_CHECK(fill.est_fill > 0.97, "fill policy: %.3f", fill.est_fill);
    T_CHECK(fifo.est_fill < 0.8, "fifo baseline: %.3f", fifo.est_fill);
    /* the tiny adapters ran beside the huge one: their runs lie inside its span */
    int inside = 0;
    for (int a = 0; a < 60; a++)
        inside += fill.adapters[a].first_run > fill.adapters[60].first_run &&
                  fill.adapters[a].last_run < fill.adapters[60].last_run;
    T_CHECK(inside >= 55, "only %d of 60 tiny adapters ran beside the huge one", inside);
    lb_plan_free(&fill);
    lb_plan_free(&fifo);
}

static void test_base_needs_no_slot(void)
{
    struct lb_plan_unit units[2] = {{0, LB_PLAN_BASE, 100, 1000, 1000}, {1, LB_PLAN_BASE, 0, 0, 0}};
    struct lb_plan_input in = {.n_units = 2, .units = units, .gpu_adapter_slots = 0, .max_seqs = 8,
                               .max_batch_tokens = 64};
    struct lb_plan p;
    struct lb_err err = {0};
    T_CHECK(lb_plan_build(&in, &p, &err) == 0, "%s", err.msg);
    T_CHECK(p.n_runs == 1 && p.runs[0].rec_begin == 0 && p.runs[0].rec_end == 100 && p.n_loads == 0, "runs %lld",
            (long long)p.n_runs);
    check_plan(&in, &p, 0);
    lb_plan_free(&p);
}

static void test_bad_input(void)
{
    struct lb_plan_adapter ads[1] = {{"sql", 16, 100}};
    struct lb_plan_unit units[1] = {{3, 0, 10, 100, 100}};
    struct lb_plan_input in = {.n_adapters = 1, .adapters = ads, .n_units = 1, .units = units,
                               .gpu_adapter_slots = 0, .max_seqs = 8, .max_batch_tokens = 64};
    struct lb_plan p;
    struct lb_err err = {0};
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "gpu_adapter_slots is 0"), "%s", err.msg);
    lb_plan_free(&p);
    in.gpu_adapter_slots = 1;
    units[0].adapter = 1;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "shard 3") && strstr(err.msg, "out of range"),
            "%s", err.msg);
    units[0].adapter = 0;
    units[0].n_records = -1;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "negative"), "%s", err.msg);
    units[0].n_records = 10;
    in.mem.max_lora_rank = 8;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "\"sql\": rank 16 exceeds max_lora_rank 8"),
            "%s", err.msg);
    in.mem.max_lora_rank = 0;
    in.max_seqs = 0;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "max_seqs"), "%s", err.msg);
    T_CHECK(p.runs == NULL && p.n_runs == 0, "failed build left a plan behind");
    lb_plan_free(&p);
    lb_plan_free(NULL);
}

static void mem_input(struct lb_plan_input *in, struct lb_plan_adapter *ads, struct lb_plan_unit *units)
{
    ads[0] = (struct lb_plan_adapter){"a", 16, (size_t)16 << 20};
    ads[1] = (struct lb_plan_adapter){"b", 64, (size_t)64 << 20};
    units[0] = (struct lb_plan_unit){0, 0, 10, 100, 100};
    units[1] = (struct lb_plan_unit){0, 1, 10, 100, 100};
    *in = (struct lb_plan_input){
        .n_adapters = 2, .adapters = ads, .n_units = 2, .units = units, .gpu_adapter_slots = 8, .max_seqs = 16,
        .max_batch_tokens = 512,
        .mem = {.device_bytes = (size_t)80 << 30, .gpu_memory_fraction = 0.5, .weight_bytes = (size_t)16 << 30,
                .workspace_bytes = (size_t)1 << 30, .kv_token_bytes = 131072, .kv_page_tokens = 16,
                .max_lora_rank = 64, .lora_rank_bytes = (size_t)1 << 20, .max_seq_tokens = 8192},
    };
}

static void test_memory_budget(void)
{
    struct lb_plan_adapter ads[2];
    struct lb_plan_unit units[2];
    struct lb_plan_input in;
    mem_input(&in, ads, units);
    struct lb_plan p;
    struct lb_err err = {0};
    T_CHECK(lb_plan_build(&in, &p, &err) == 0, "%s", err.msg);
    /* 40 GiB available - 16 GiB weights - 8 x 64 MiB slots - 1 GiB workspace = 22.5 GiB of KV;
     * a page is 16 x 128 KiB = 2 MiB, so 11520 pages, 184320 tokens */
    size_t kv = ((size_t)40 << 30) - ((size_t)16 << 30) - ((size_t)8 << 26) - ((size_t)1 << 30);
    T_CHECK(p.budget.checked && p.budget.available_bytes == (size_t)40 << 30, "available %zu",
            p.budget.available_bytes);
    T_CHECK(p.budget.slot_bytes == (size_t)64 << 20 && p.budget.slots_bytes == (size_t)512 << 20, "slots %zu",
            p.budget.slots_bytes);
    T_CHECK(p.budget.kv_bytes == kv && p.budget.n_kv_pages == 11520 && p.budget.n_kv_tokens == 184320,
            "kv %zu pages %lld", p.budget.kv_bytes, (long long)p.budget.n_kv_pages);
    lb_plan_free(&p);

    /* too small: weights alone exceed what is available; needed and available are named */
    in.mem.weight_bytes = (size_t)39 << 30;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_OOM, "status %d", err.status);
    size_t need = ((size_t)39 << 30) + ((size_t)8 << 26) + ((size_t)1 << 30) + (size_t)512 * ((size_t)2 << 20);
    char want_need[64], want_avail[64];
    snprintf(want_need, sizeof want_need, "needs %zu bytes", need);
    snprintf(want_avail, sizeof want_avail, "but %zu bytes", (size_t)40 << 30);
    T_CHECK(strstr(err.msg, want_need) && strstr(err.msg, want_avail) && strstr(err.msg, "8 adapter slots"),
            "%s", err.msg);
    lb_plan_free(&p);

    /* fixed parts fit, but not the KV of one max-length sequence */
    in.mem.weight_bytes = ((size_t)40 << 30) - ((size_t)8 << 26) - ((size_t)1 << 30) - ((size_t)10 << 20);
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_OOM && strstr(err.msg, "one sequence of 8192 tokens"), "%s", err.msg);
    in.mem.max_seq_tokens = 64; /* 4 pages = 8 MiB fit in the 10 MiB left */
    T_CHECK(lb_plan_build(&in, &p, &err) == 0 && p.budget.n_kv_pages == 5, "%s pages %lld", err.msg,
            (long long)p.budget.n_kv_pages);
    lb_plan_free(&p);

    /* an adapter larger than a slot */
    mem_input(&in, ads, units);
    in.mem.max_lora_rank = 32;
    ads[1].rank = 32;
    T_CHECK(lb_plan_build(&in, &p, &err) == LB_E_INPUT && strstr(err.msg, "larger than a slot"), "%s", err.msg);
    /* no device memory given: not checked */
    mem_input(&in, ads, units);
    in.mem.device_bytes = 0;
    T_CHECK(lb_plan_build(&in, &p, &err) == 0 && !p.budget.checked, "%s", err.msg);
    lb_plan_free(&p);
}

static void test_parts(void)
{
    static int64_t rec[40];
    static int64_t owner_count[40][600];
    struct lb_plan_part_range out[64];
    for (uint64_t seed = 1; seed <= 200; seed++) {
        rng_state = seed * 31;
        int64_t nu = rnd_in(0, 40);
        int32_t N = (int32_t)rnd_in(1, 12);
        for (int64_t u = 0; u < nu; u++) rec[u] = rnd_in(0, 4) == 0 ? 0 : rnd_in(1, 599);
        memset(owner_count, 0, sizeof owner_count);
        int64_t n_empty = 0;
        for (int32_t i = 0; i < N; i++) {
            int64_t n, n2;
            struct lb_plan_part_range again[64];
            struct lb_err err = {0};
            int rc = lb_plan_part_units(nu, rec, i, N, out, 64, &n, &err);
            T_CHECK(rc == 0, "seed %" PRIu64 ": %s", seed, err.msg);
            if (rc) continue;
            T_CHECK(lb_plan_part_units(nu, rec, i, N, again, 64, &n2, &err) == 0 && n2 == n &&
                        memcmp(again, out, (size_t)n * sizeof *out) == 0,
                    "seed %" PRIu64 ": part %d not stable", seed, i);
            if (n == 0) n_empty++;
            for (int64_t j = 0; j < n; j++) {
                T_CHECK(out[j].unit >= 0 && out[j].unit < nu && out[j].rec_begin >= 0 &&
                            out[j].rec_end <= rec[out[j].unit] && out[j].rec_begin <= out[j].rec_end,
                        "seed %" PRIu64 ": bad range", seed);
                if (j > 0) T_CHECK(out[j].unit > out[j - 1].unit, "seed %" PRIu64 ": ranges not sorted", seed);
                if (nu >= N)
                    T_CHECK(out[j].rec_begin == 0 && out[j].rec_end == rec[out[j].unit],
                            "seed %" PRIu64 ": %lld units >= %d parts but a unit was split", seed, (long long)nu, N);
                for (int64_t r = out[j].rec_begin; r < out[j].rec_end; r++) owner_count[out[j].unit][r]++;
            }
        }
        for (int64_t u = 0; u < nu; u++)
            for (int64_t r = 0; r < rec[u]; r++)
                T_CHECK(owner_count[u][r] == 1, "seed %" PRIu64 ": unit %lld record %lld in %lld parts", seed,
                        (long long)u, (long long)r, (long long)owner_count[u][r]);
        if (nu >= N) T_CHECK(n_empty == 0, "seed %" PRIu64 ": an empty part with %lld units, %d parts", seed,
                             (long long)nu, N);
    }
    /* buffer too small: says how many ranges are needed */
    int64_t r3[3] = {5, 5, 5}, n = -1;
    struct lb_err err = {0};
    T_CHECK(lb_plan_part_units(3, r3, 0, 1, out, 2, &n, &err) == LB_E_OOM && n == 3, "n %lld: %s", (long long)n,
            err.msg);
    T_CHECK(lb_plan_part_units(3, r3, 2, 2, out, 64, &n, &err) == LB_E_INPUT, "part 2/2 accepted");
    /* fewer units than parts: 1 unit of 10 records in 4 parts: 2, 3, 2, 3 records */
    int64_t r1[1] = {10};
    int64_t want[5] = {0, 2, 5, 7, 10};
    for (int32_t i = 0; i < 4; i++) {
        T_CHECK(lb_plan_part_units(1, r1, i, 4, out, 64, &n, &err) == 0 && n == 1 && out[0].rec_begin == want[i] &&
                    out[0].rec_end == want[i + 1],
                "part %d: [%lld, %lld)", i, (long long)out[0].rec_begin, (long long)out[0].rec_end);
    }
    /* LPT balance: 4 units 9, 5, 4, 3 in 2 parts: {9, 3} and {5, 4} */
    int64_t r4[4] = {9, 5, 4, 3};
    T_CHECK(lb_plan_part_units(4, r4, 0, 2, out, 64, &n, &err) == 0 && n == 2 && out[0].unit == 0 && out[1].unit == 3,
            "part 0: %lld ranges", (long long)n);
}

static void test_simulate_rejects_bad_plan(void)
{
    struct lb_plan_adapter ads[3] = {{"x", 8, 10}, {"y", 8, 10}, {"z", 8, 10}};
    struct lb_plan_unit units[3] = {{0, 0, 50, 500, 500}, {0, 1, 50, 500, 500}, {0, 2, 50, 500, 500}};
    struct lb_plan_input in = {.n_adapters = 3, .adapters = ads, .n_units = 3, .units = units,
                               .gpu_adapter_slots = 2, .max_seqs = 16, .max_batch_tokens = 256};
    struct lb_plan p;
    struct lb_err err = {0};
    struct lb_plan_sim sim;
    T_CHECK(lb_plan_build(&in, &p, &err) == 0, "%s", err.msg);
    T_CHECK(lb_plan_simulate(&p, NULL, &sim, &err) == 0, "%s", err.msg);
    /* a run that claims the wrong slot */
    p.runs[0].slot ^= 1;
    T_CHECK(lb_plan_simulate(&p, NULL, &sim, &err) == LB_E_INTERNAL, "wrong slot accepted");
    p.runs[0].slot ^= 1;
    /* a lost load: its adapter can never be admitted */
    p.n_loads--;
    T_CHECK(lb_plan_simulate(&p, NULL, &sim, &err) == LB_E_INTERNAL && strstr(err.msg, "inconsistent"), "%s",
            err.msg);
    p.n_loads++;
    lb_plan_free(&p);
}

static void test_print(void)
{
    struct lb_plan_adapter ads[2];
    struct lb_plan_unit units[3];
    struct lb_plan_input in;
    mem_input(&in, ads, units);
    units[2] = (struct lb_plan_unit){1, LB_PLAN_BASE, 7, 70, 70};
    in.n_units = 3;
    struct lb_plan p;
    struct lb_err err = {0};
    T_CHECK(lb_plan_build(&in, &p, &err) == 0, "%s", err.msg);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    lb_plan_print(&p, f);
    fclose(f);
    T_CHECK(strstr(buf, "plan: 27 records") != NULL, "%s", buf);
    T_CHECK(strstr(buf, "predicted adapter loads: 2 (ideal, one per adapter with records: 2)") != NULL, "%s", buf);
    T_CHECK(strstr(buf, "(base)") && strstr(buf, "KV cache") && strstr(buf, "11520 pages"), "%s", buf);
    T_CHECK(strstr(buf, "slot   0:") != NULL, "%s", buf);
    free(buf);
    lb_plan_free(&p);
}

int main(void)
{
    T_RUN(test_random_invariants);
    T_RUN(test_deterministic);
    T_RUN(test_loads_ideal);
    T_RUN(test_filler_keeps_batch_full);
    T_RUN(test_base_needs_no_slot);
    T_RUN(test_bad_input);
    T_RUN(test_memory_budget);
    T_RUN(test_parts);
    T_RUN(test_simulate_rejects_bad_plan);
    T_RUN(test_print);
    return T_DONE();
}
