/* plan_sim.c — planner simulation table on synthetic workloads (run bench/plan_sim.sh).
 *
 * Workloads: N_REC records spread over 8, 64 or 1000 adapters with uniform or Zipf(1.1)
 * popularity (largest-remainder rounding, so counts add up exactly), each adapter's records cut
 * into shards of at most SHARD_REC records; prompt 256 and 128 generated tokens per record on
 * average; rank-16 adapters of a Llama-3-8B-sized model (5.24 MB per rank, all 7 targets) that
 * load in ~1 engine step (25 GB/s host->device, ~30 ms per decode step at 256 sequences).
 * For each slot budget 4, 8, 32 it builds the plan (policy fill, drain slack 25%) and a baseline
 * (policy fifo: adapters in index order, first loaded first admitted). "fill, exact lengths" is
 * the planner's own estimate (every record exactly the mean); the plan is then replayed on the
 * engine model with every record's generated length drawn uniformly within +-50% and +-90% of
 * the mean (seed 42), admission strictly in plan order. Prints a markdown table, writes JSON
 * (also steps and stall steps). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define N_REC 100000
#define SHARD_REC 5000
#define MAX_SEQS 256
#define MAX_BATCH_TOKENS 8192
#define PROMPT_TOK 256
#define GEN_TOK 128
#define RANK 16
#define RANK_BYTES 5242880ull
#ifndef LOAD_BYTES_PER_STEP
#define LOAD_BYTES_PER_STEP 750000000ull
#endif
#define JITTER 50
#ifndef SLACK
#define SLACK LB_PLAN_DRAIN_SLACK_DEFAULT
#endif

static void counts(int n_ad, int zipf, int64_t *out)
{
    double *w = malloc((size_t)n_ad * sizeof *w), sum = 0;
    for (int i = 0; i < n_ad; i++) sum += (w[i] = zipf ? pow(i + 1, -1.1) : 1.0);
    int64_t given = 0;
    double *frac = malloc((size_t)n_ad * sizeof *frac);
    for (int i = 0; i < n_ad; i++) {
        double x = N_REC * w[i] / sum;
        out[i] = (int64_t)x;
        frac[i] = x - (double)out[i];
        given += out[i];
    }
    while (given < N_REC) { /* largest remainder, ties to the lower index */
        int b = 0;
        for (int i = 1; i < n_ad; i++)
            if (frac[i] > frac[b]) b = i;
        out[b]++;
        frac[b] = -1;
        given++;
    }
    free(w);
    free(frac);
}

int main(int argc, char **argv)
{
    const char *json_path = argc > 1 ? argv[1] : NULL;
    const char *commit = argc > 2 ? argv[2] : "unknown";
    FILE *js = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !js) {
        perror(json_path);
        return 1;
    }
    static const int n_ads[] = {8, 64, 1000};
    static const int slots[] = {4, 8, 32};
    if (js) fprintf(js, "{\"commit\": \"%s\", \"records\": %d, \"max_seqs\": %d, \"max_batch_tokens\": %d, \"prompt_tok\": %d, "
                        "\"gen_tok\": %d, \"jitter_pct\": %d, \"load_steps\": %llu, \"drain_slack_pct\": %d, \"rows\": [\n",
                    commit, N_REC, MAX_SEQS, MAX_BATCH_TOKENS, PROMPT_TOK, GEN_TOK, JITTER,
                    (RANK * RANK_BYTES + LOAD_BYTES_PER_STEP - 1) / LOAD_BYTES_PER_STEP, SLACK);
    printf("| adapters | popularity | slots | loads | ideal | runs | fill, exact lengths | fill, +-50%% | fill, +-90%% "
           "| fifo loads | fifo fill, +-50%% |\n");
    printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    int first = 1, rc = 0;
    for (int ia = 0; ia < 3; ia++)
        for (int zipf = 0; zipf < 2; zipf++) {
            int n_ad = n_ads[ia];
            int64_t *cnt = malloc((size_t)n_ad * sizeof *cnt);
            counts(n_ad, zipf, cnt);
            struct lb_plan_adapter *ads = calloc((size_t)n_ad, sizeof *ads);
            int64_t n_units = 0;
            for (int a = 0; a < n_ad; a++) n_units += (cnt[a] + SHARD_REC - 1) / SHARD_REC;
            struct lb_plan_unit *units = calloc((size_t)n_units, sizeof *units);
            int64_t u = 0;
            for (int a = 0; a < n_ad; a++) {
                ads[a] = (struct lb_plan_adapter){NULL, RANK, RANK * RANK_BYTES};
                for (int64_t left = cnt[a]; left > 0; left -= SHARD_REC) {
                    int64_t n = left < SHARD_REC ? left : SHARD_REC;
                    units[u] = (struct lb_plan_unit){(int32_t)u, a, n, n * PROMPT_TOK, n * GEN_TOK};
                    u++;
                }
            }
            for (int is = 0; is < 3; is++) {
                struct lb_plan_input in = {
                    .n_adapters = n_ad, .adapters = ads, .n_units = n_units, .units = units,
                    .gpu_adapter_slots = slots[is], .max_seqs = MAX_SEQS, .max_batch_tokens = MAX_BATCH_TOKENS,
                    .load_bytes_per_step = LOAD_BYTES_PER_STEP, .drain_slack_pct = SLACK,
                };
                struct lb_plan p[2];
                struct lb_plan_sim sim[3]; /* fill +-50%, fill +-90%, fifo +-50% */
                struct lb_err err = {0};
                for (int k = 0; k < 2; k++) {
                    in.policy = k ? LB_PLAN_POLICY_FIFO : LB_PLAN_POLICY_FILL;
                    if (lb_plan_build(&in, &p[k], &err)) {
                        fprintf(stderr, "plan_sim: %s\n", err.msg);
                        return 1;
                    }
                }
                for (int k = 0; k < 3; k++) {
                    struct lb_plan_sim_opts so = {.seed = 42, .jitter_pct = k == 1 ? 90 : JITTER};
                    if (lb_plan_simulate(&p[k == 2], &so, &sim[k], &err)) {
                        fprintf(stderr, "plan_sim: %s\n", err.msg);
                        return 1;
                    }
                }
                const char *pop = zipf ? "zipf(1.1)" : "uniform";
                printf("| %d | %s | %d | %lld | %lld | %lld | %.1f%% | %.1f%% | %.1f%% | %lld | %.1f%% |\n", n_ad, pop,
                       slots[is], (long long)p[0].n_loads, (long long)p[0].n_loads_ideal, (long long)p[0].n_runs,
                       100 * p[0].est_fill, 100 * sim[0].fill, 100 * sim[1].fill, (long long)p[1].n_loads,
                       100 * sim[2].fill);
                if (js)
                    fprintf(js, "%s  {\"adapters\": %d, \"popularity\": \"%s\", \"slots\": %d, \"loads\": %lld, "
                                "\"loads_ideal\": %lld, \"runs\": %lld, \"fill_exact\": %.4f, \"steps_exact\": %lld, "
                                "\"fill_jitter50\": %.4f, \"steps_jitter50\": %lld, \"stall_steps_jitter50\": %lld, "
                                "\"fill_jitter90\": %.4f, \"steps_jitter90\": %lld, "
                                "\"fifo_loads\": %lld, \"fifo_fill_exact\": %.4f, \"fifo_fill_jitter50\": %.4f, "
                                "\"fifo_steps_jitter50\": %lld}",
                            first ? "" : ",\n", n_ad, pop, slots[is], (long long)p[0].n_loads,
                            (long long)p[0].n_loads_ideal, (long long)p[0].n_runs, p[0].est_fill,
                            (long long)p[0].est_steps, sim[0].fill, (long long)sim[0].n_steps,
                            (long long)sim[0].n_stall_steps, sim[1].fill, (long long)sim[1].n_steps,
                            (long long)p[1].n_loads, p[1].est_fill, sim[2].fill, (long long)sim[2].n_steps);
                first = 0;
                lb_plan_free(&p[0]);
                lb_plan_free(&p[1]);
            }
            free(cnt);
            free(ads);
            free(units);
        }
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    return rc;
}
