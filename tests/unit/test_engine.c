/* test_engine.c — batch invariance of the CPU backend through the engine: a record's tokens
 * (greedy and sampled) and its logits do not depend on its batch neighbours, on max_seqs,
 * on the token budget (chunked prefill), on preemption, or on which slot holds its adapter. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "sample.h"
#include "t.h"
#include "tmodel.h"

#define N_REQ 7
#define MAX_NEW 12

static char g_dir[256];
static struct lb_model g_m;
static struct lb_adapter g_ad[2];
static const int32_t prompts[N_REQ][40] = {
    {5, 6, 7}, {9}, {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27},
    {40, 41, 42, 43, 44}, {100, 3, 100, 3}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7},
    {300, 301}};
static const int plen[N_REQ] = {3, 1, 17, 5, 4, 34, 2};
static const int adapter_of[N_REQ] = {-1, 0, 1, 0, -1, 1, 0}; /* -1 base, else g_ad index */

struct collect { int32_t tok[N_REQ][MAX_NEW + 1]; int n[N_REQ]; int finish[N_REQ]; };

static int on_done(void *ctx, const struct lb_result *r, struct lb_err *err)
{
    (void)err;
    struct collect *c = ctx;
    memcpy(c->tok[r->user], r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
    c->n[r->user] = r->n_tokens;
    c->finish[r->user] = r->finish;
    return 0;
}

/* Run requests `which` (mask) with the given limits; slot_of_adapter maps g_ad index -> slot. */
static int run(struct collect *out, unsigned which, int max_seqs, int max_batch, int n_page, const int *slot_of_adapter,
               float temperature, int64_t *n_preempt)
{
    struct lb_backend be;
    struct lb_runner r;
    struct lb_engine e;
    struct lb_err err = {0};
    memset(out, 0, sizeof *out);
    if (lb_backend_cpu_open(&be, 2, &err)) return -1;
    struct lb_runner_opts ro = {max_batch, max_seqs, n_page, 4, 2, 16};
    int rc = lb_runner_init(&r, &be, &g_m, &ro, &err);
    for (int a = 0; a < 2 && !rc; a++) rc = lb_runner_load_adapter(&r, slot_of_adapter[a], &g_ad[a], &err);
    struct lb_engine_opts eo = {max_seqs, max_batch, NULL, on_done, out, 0};
    if (!rc) rc = lb_engine_init(&e, &r, &eo, &err);
    for (int i = 0; i < N_REQ && !rc; i++) {
        if (!(which & (1u << i))) continue;
        struct lb_req q = {i, prompts[i], plen[i], adapter_of[i] < 0 ? -1 : slot_of_adapter[adapter_of[i]], MAX_NEW,
                           {temperature, 0.9f, 50, 0, lb_sample_key(42, (uint64_t)i)}, 1};
        rc = lb_engine_add(&e, &q, &err);
    }
    while (!rc && !lb_engine_idle(&e)) rc = lb_engine_step(&e, &err);
    if (rc) fprintf(stderr, "  engine: %s\n", err.msg);
    if (n_preempt) *n_preempt = e.n_preempt;
    lb_engine_free(&e);
    lb_runner_free(&r);
    lb_backend_close(&be);
    return rc;
}

static void check_same(const struct collect *a, const struct collect *b, unsigned which, const char *what)
{
    for (int i = 0; i < N_REQ; i++) {
        if (!(which & (1u << i))) continue;
        T_CHECK(a->n[i] == b->n[i] && !memcmp(a->tok[i], b->tok[i], sizeof(int32_t) * (size_t)a->n[i]),
                "%s: request %d differs (%d vs %d tokens)", what, i, a->n[i], b->n[i]);
    }
}

static void invariance(float temperature)
{
    const int slots[2] = {0, 1}, swapped[2] = {1, 0};
    struct collect alone[N_REQ], all, tmp;
    unsigned every = (1u << N_REQ) - 1;
    for (int i = 0; i < N_REQ; i++) T_CHECK(run(&alone[i], 1u << i, 1, 64, 64, slots, temperature, NULL) == 0, "alone %d", i);
    /* every request ran to MAX_NEW (EOS ignored) and adapters change the output */
    for (int i = 0; i < N_REQ; i++) T_CHECK(alone[i].n[i] == MAX_NEW, "request %d made %d tokens", i, alone[i].n[i]);
    T_CHECK(run(&all, every, 8, 256, 256, slots, temperature, NULL) == 0, "all");
    for (int i = 0; i < N_REQ; i++) check_same(&alone[i], &all, 1u << i, "full batch vs alone");
    T_CHECK(run(&tmp, every, 3, 5, 256, slots, temperature, NULL) == 0, "max_seqs 3, 5 tokens/step");
    check_same(&all, &tmp, every, "max_seqs 3 / chunked prefill");
    T_CHECK(run(&tmp, every, 8, 256, 256, swapped, temperature, NULL) == 0, "swapped slots");
    check_same(&all, &tmp, every, "adapter slots swapped");
    int64_t n_pre = 0;
    T_CHECK(run(&tmp, every, 7, 64, 14, slots, temperature, &n_pre) == 0, "tiny KV pool");
    check_same(&all, &tmp, every, "with preemption");
    T_CHECK(n_pre > 0, "the tiny KV pool (14 pages of 4) should force preemption, got %lld", (long long)n_pre);
}

static void test_greedy_invariance(void) { invariance(0.0f); }
static void test_sampled_invariance(void) { invariance(0.8f); }

/* logits of the last prompt token: bitwise equal alone and inside a mixed batch */
static void test_logits_bitwise(void)
{
    struct lb_backend be;
    struct lb_runner r;
    struct lb_err err = {0};
    T_CHECK(lb_backend_cpu_open(&be, 2, &err) == 0, "%s", err.msg);
    struct lb_runner_opts ro = {128, 8, 64, 4, 2, 16};
    T_CHECK(lb_runner_init(&r, &be, &g_m, &ro, &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_load_adapter(&r, 0, &g_ad[0], &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_load_adapter(&r, 1, &g_ad[1], &err) == 0, "%s", err.msg);
    int V = g_m.cfg.n_vocab;
    float *alone = malloc(sizeof(float) * (size_t)V * 3), *batch = malloc(sizeof(float) * (size_t)V * 3);
    int32_t tok[3];
    const int which[3] = {2, 3, 5};
    int page0 = 0;
    /* alone: each prompt in its own step, pages from 0 */
    for (int k = 0; k < 3; k++) {
        int i = which[k], n = plen[i];
        int32_t pos[40], sm[40], pages[16], qi[2] = {0, n}, kvl[1] = {n}, pi[2] = {0, (n + 3) / 4}, slot[1] = {adapter_of[i]}, orow[1] = {n - 1};
        for (int t = 0; t < n; t++) { pos[t] = t; sm[t] = t; }
        for (int p = 0; p < (n + 3) / 4; p++) pages[p] = p;
        struct lb_sample_param sp = {0};
        struct lb_step st = {n, 1, prompts[i], pos, sm, qi, kvl, pi, pages, slot, 1, orow, &sp};
        T_CHECK(lb_runner_step(&r, &st, &tok[k], alone + (size_t)k * V, &err) == 0, "%s", err.msg);
    }
    /* together: one step, disjoint pages, mixed adapters (base, slot 0, slot 1 in mixed order) */
    int32_t toks[128], pos[128], sm[128], pages[64], qi[4] = {0}, kvl[3], pi[4] = {0}, slot[3], orow[3];
    int T = 0, np = 0;
    for (int k = 0; k < 3; k++) {
        int i = which[k], n = plen[i];
        int first = page0 + np;
        for (int p = 0; p < (n + 3) / 4; p++) pages[np++] = 10 + first + p;
        for (int t = 0; t < n; t++) { toks[T] = prompts[i][t]; pos[T] = t; sm[T] = (10 + first + t / 4) * 4 + t % 4; T++; }
        qi[k + 1] = T;
        kvl[k] = n;
        pi[k + 1] = np;
        slot[k] = adapter_of[i];
        orow[k] = T - 1;
    }
    struct lb_sample_param sp[3] = {{0}};
    struct lb_step st = {T, 3, toks, pos, sm, qi, kvl, pi, pages, slot, 3, orow, sp};
    int32_t tb[3];
    T_CHECK(lb_runner_step(&r, &st, tb, batch, &err) == 0, "%s", err.msg);
    T_CHECK(!memcmp(alone, batch, sizeof(float) * (size_t)V * 3), "logits differ between alone and mixed batch");
    T_CHECK(!memcmp(tok, tb, sizeof tok), "tokens differ");
    /* and the adapters matter: request 3 (adapter 0) with its adapter removed gives other logits */
    T_CHECK(lb_runner_load_adapter(&r, 0, NULL, &err) == 0, "%s", err.msg);
    T_CHECK(lb_runner_step(&r, &st, tb, batch, &err) == 0, "%s", err.msg);
    T_CHECK(memcmp(alone + V, batch + V, sizeof(float) * (size_t)V) != 0, "clearing the adapter slot changed nothing");
    T_CHECK(!memcmp(alone, batch, sizeof(float) * (size_t)V), "base-model row changed when another slot was cleared");
    free(alone);
    free(batch);
    lb_runner_free(&r);
    lb_backend_close(&be);
}

/* sampling: deterministic per (key, step); temperature spreads choices; top_k=1 == greedy */
static void test_sampler(void)
{
    float logits[50];
    for (int i = 0; i < 50; i++) logits[i] = (float)((i * 37) % 50) / 10.0f;
    void *scratch = malloc(lb_sample_scratch_bytes(50));
    struct lb_sample_param g = {0.0f, 1.0f, 0, 0, 1};
    int best = lb_sample_row(logits, 50, &g, scratch);
    T_CHECK(logits[best] == 4.9f, "greedy picked %d", best);
    struct lb_sample_param k1 = {1.0f, 1.0f, 1, 0, 7};
    T_CHECK(lb_sample_row(logits, 50, &k1, scratch) == best, "top_k=1 must equal greedy");
    struct lb_sample_param p0 = {1.0f, 1e-6f, 0, 0, 7};
    T_CHECK(lb_sample_row(logits, 50, &p0, scratch) == best, "tiny top_p must equal greedy");
    int seen[50] = {0}, distinct = 0;
    for (int s = 0; s < 400; s++) {
        struct lb_sample_param p = {1.0f, 1.0f, 0, s, 99};
        int t = lb_sample_row(logits, 50, &p, scratch);
        struct lb_sample_param p2 = p;
        T_CHECK(lb_sample_row(logits, 50, &p2, scratch) == t, "same key/step must give the same token");
        if (!seen[t]++) distinct++;
    }
    T_CHECK(distinct > 10, "temperature 1 over 400 steps gave only %d distinct tokens", distinct);
    int kept[50] = {0};
    for (int s = 0; s < 400; s++) {
        struct lb_sample_param p = {1.0f, 1.0f, 3, s, 5};
        kept[lb_sample_row(logits, 50, &p, scratch)] = 1;
    }
    int n_kept = 0;
    for (int i = 0; i < 50; i++) n_kept += kept[i];
    T_CHECK(n_kept <= 3 && n_kept >= 2, "top_k=3 sampled %d distinct tokens", n_kept);
    double u0 = lb_rng_uniform(lb_sample_key(1, 2), 0), u1 = lb_rng_uniform(lb_sample_key(1, 3), 0);
    T_CHECK(u0 != u1 && u0 >= 0 && u0 < 1 && u1 >= 0 && u1 < 1, "rng keys");
    free(scratch);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lb_test_engine_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    char p[300];
    struct tm_cfg c = {"LlamaForCausalLM", 64, 2, 4, 2, 16, 96, 512, 0, 1, "BF16"};
    snprintf(p, sizeof p, "%s/model", g_dir);
    tm_model(p, &c, 11);
    const char *all7[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    const char *qv[] = {"q_proj", "v_proj"};
    struct lb_err err = {0};
    if (lb_model_open(&g_m, p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    snprintf(p, sizeof p, "%s/a0", g_dir);
    tm_adapter(p, &c, 8, 16, all7, 7, 5);
    if (lb_adapter_open(&g_ad[0], "a0", p, &g_m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    snprintf(p, sizeof p, "%s/a1", g_dir);
    tm_adapter(p, &c, 4, 8, qv, 2, 6);
    if (lb_adapter_open(&g_ad[1], "a1", p, &g_m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    T_RUN(test_sampler);
    T_RUN(test_logits_bitwise);
    T_RUN(test_greedy_invariance);
    T_RUN(test_sampled_invariance);
    lb_adapter_free(&g_ad[0]);
    lb_adapter_free(&g_ad[1]);
    lb_model_free(&g_m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd)) {}
    return T_DONE();
}
