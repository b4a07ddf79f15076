/* test_golden.c — the CPU backend against Hugging Face transformers + PEFT.
 *
 * For every fixture model (tests/golden/fixtures/<model>/, made by gen_fixtures.py on the
 * GPU machine) and every adapter plus the base model, the reference holds, per prompt, the
 * logits after the prompt and 12 greedy tokens. Here:
 *   - logits after the prompt: max |ours - ref| <= 1e-4 * max |ref| (per prompt);
 *   - greedy tokens: identical, all (adapter, prompt) pairs run in ONE engine pass, so
 *     every batch mixes adapters and base rows. A mismatch is tolerated only from a step
 *     whose reference top-2 margin is below 1e-4 * max |logit| (a float tie).
 * Every adapter must change at least one prompt's tokens vs the base model, or the
 * fixture proves nothing.
 * LB_GOLDEN_DEVICE=cuda runs the same checks on the CUDA backend (bf16 activations) with
 * bf16 tolerances: logits within 3e-2 relative, and greedy tokens identical up to the first
 * step whose reference top-2 margin is below bf16 noise (2e-2 x max |logit|). On machines
 * without a GPU that mode reports every model skipped. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "sample.h"
#include "t.h"
#include "util.h"

#define MAX_KEYS 8
#define MAX_PROMPTS 8
#define MAX_NEW 32

struct golden {
    char name[64];
    struct lb_model m;
    int n_key;                     /* results: base + adapters */
    char key[MAX_KEYS][64];
    struct lb_adapter ad[MAX_KEYS]; /* ad[k] valid for k with key != "base" */
    int is_base[MAX_KEYS];
    int n_prompt, n_new;
    int32_t *prompt[MAX_PROMPTS];
    int plen[MAX_PROMPTS];
    json_t *ref;
    int32_t got[MAX_KEYS][MAX_PROMPTS][MAX_NEW];
    int n_got[MAX_KEYS][MAX_PROMPTS];
    float margin[MAX_KEYS][MAX_PROMPTS][MAX_NEW]; /* the engine's top-2 margin per step (opts.margins) */
};

static int use_cuda(void)
{
    const char *d = getenv("LB_GOLDEN_DEVICE");
    return d && !strcmp(d, "cuda");
}

static const char *fixtures_dir(void)
{
    const char *d = getenv("LB_FIXTURES");
    return d ? d : "tests/golden/fixtures";
}

static int on_done(void *ctx, const struct lb_result *r, struct lb_err *err)
{
    (void)err;
    struct golden *g = ctx;
    int k = (int)(r->user / MAX_PROMPTS), p = (int)(r->user % MAX_PROMPTS);
    g->n_got[k][p] = r->n_tokens;
    memcpy(g->got[k][p], r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
    for (int i = 0; i < r->n_tokens && r->margins; i++) g->margin[k][p][i] = r->margins[2 * i];
    return 0;
}

static int load(struct golden *g, const char *model_name)
{
    struct lb_err err = {0};
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", model_name);
    char *dir = lb_strfmt("%s/%s", fixtures_dir(), model_name);
    char *mdir = lb_strfmt("%s/model", dir), *ref = lb_strfmt("%s/ref.json", dir);
    int rc = -1;
    json_error_t je;
    if (lb_model_open(&g->m, mdir, &err)) { fprintf(stderr, "  %s\n", err.msg); goto done; }
    g->ref = json_load_file(ref, 0, &je);
    if (!g->ref) { fprintf(stderr, "  %s: %s\n", ref, je.text); goto done; }
    json_t *prompts = json_object_get(g->ref, "prompts"), *results = json_object_get(g->ref, "results");
    g->n_new = (int)json_integer_value(json_object_get(g->ref, "n_new"));
    if (!json_is_array(prompts) || !json_is_object(results) || g->n_new <= 0 || g->n_new > MAX_NEW) { fprintf(stderr, "  %s: bad format\n", ref); goto done; }
    g->n_prompt = (int)json_array_size(prompts);
    if (g->n_prompt > MAX_PROMPTS) g->n_prompt = MAX_PROMPTS;
    for (int p = 0; p < g->n_prompt; p++) {
        json_t *a = json_array_get(prompts, (size_t)p);
        g->plen[p] = (int)json_array_size(a);
        g->prompt[p] = malloc(sizeof(int32_t) * (size_t)(g->plen[p] + 1));
        for (int i = 0; i < g->plen[p]; i++) g->prompt[p][i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    }
    const char *k;
    json_t *v;
    json_object_foreach(results, k, v) {
        if (g->n_key == MAX_KEYS) break;
        int i = g->n_key;
        snprintf(g->key[i], sizeof g->key[i], "%s", k);
        g->is_base[i] = !strcmp(k, "base");
        if (!g->is_base[i]) {
            char *adir = lb_strfmt("%s/adapters/%s", dir, k);
            int e = lb_adapter_open(&g->ad[i], k, adir, &g->m, &err);
            free(adir);
            if (e) { fprintf(stderr, "  %s: adapter %s: %s\n", model_name, k, err.msg); goto done; }
        }
        g->n_key++;
    }
    rc = 0;
done:
    free(dir); free(mdir); free(ref);
    return rc;
}

static void unload(struct golden *g)
{
    for (int i = 0; i < g->n_key; i++) if (!g->is_base[i]) lb_adapter_free(&g->ad[i]);
    for (int p = 0; p < g->n_prompt; p++) free(g->prompt[p]);
    json_decref(g->ref);
    lb_model_free(&g->m);
}

static float max_abs(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++) if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

static void check_model(const char *model_name)
{
    struct golden *g = calloc(1, sizeof *g);
    if (load(g, model_name)) { T_CHECK(0, "fixture %s does not load", model_name); free(g); return; }
    struct lb_backend be;
    struct lb_runner r;
    struct lb_engine e;
    struct lb_err err = {0};
    int V = g->m.cfg.n_vocab, max_rank = 1;
    for (int i = 0; i < g->n_key; i++) if (!g->is_base[i] && g->ad[i].max_rank > max_rank) max_rank = g->ad[i].max_rank;
    double tol_logits = use_cuda() ? 3e-2 : 1e-4, tol_margin = use_cuda() ? 2e-2 : 1e-4;
    if (use_cuda()) {
        if (lb_backend_cuda_open(&be, 0, &err)) { unload(g); free(g); T_SKIP("no CUDA backend: %s", err.msg); }
    } else T_CHECK(lb_backend_cpu_open(&be, 0, &err) == 0, "%s", err.msg);
    struct lb_runner_opts ro = {256, 64, 256, 16, g->n_key, max_rank};
    T_CHECK(lb_runner_init(&r, &be, &g->m, &ro, &err) == 0, "%s", err.msg);
    for (int i = 0; i < g->n_key; i++)
        if (!g->is_base[i]) T_CHECK(lb_runner_load_adapter(&r, i, &g->ad[i], &err) == 0, "%s", err.msg);
    /* 1. logits after each prompt, one sequence per step */
    float *lg = malloc(sizeof(float) * (size_t)V);
    double worst = 0;
    for (int k = 0; k < g->n_key; k++) {
        json_t *res = json_object_get(json_object_get(g->ref, "results"), g->key[k]);
        for (int p = 0; p < g->n_prompt; p++) {
            int n = g->plen[p];
            int32_t pos[256], sm[256], pages[16], qi[2] = {0, n}, kvl[1] = {n}, pi[2] = {0, (n + 15) / 16}, slot[1] = {g->is_base[k] ? -1 : k}, orow[1] = {n - 1};
            for (int t = 0; t < n; t++) pos[t] = sm[t] = t;
            for (int q = 0; q < pi[1]; q++) pages[q] = q;
            struct lb_sample_param sp = {0};
            struct lb_step st = {n, 1, g->prompt[p], pos, sm, qi, kvl, pi, pages, slot, 1, orow, &sp};
            int32_t tok;
            T_CHECK(lb_runner_step(&r, &st, &tok, lg, &err) == 0, "%s", err.msg);
            json_t *rl = json_object_get(json_array_get(res, (size_t)p), "logits");
            T_CHECK((int)json_array_size(rl) == V, "%s/%s prompt %d: %zu reference logits, vocab %d", model_name, g->key[k], p, json_array_size(rl), V);
            if ((int)json_array_size(rl) != V) continue;
            float *ref = malloc(sizeof(float) * (size_t)V);
            double md = 0;
            for (int i = 0; i < V; i++) {
                ref[i] = (float)json_number_value(json_array_get(rl, (size_t)i));
                double d = fabs((double)lg[i] - ref[i]);
                if (d > md) md = d;
            }
            double rel = md / max_abs(ref, V);
            if (rel > worst) worst = rel;
            T_CHECK(rel <= tol_logits, "%s/%s prompt %d: logits differ, max abs diff %.3g = %.3g relative", model_name, g->key[k], p, md, rel);
            free(ref);
        }
    }
    printf("  %s [%s]: worst first-step logit difference %.2e relative (%d adapters + base, %d prompts)\n", model_name, be.ops->name, worst, g->n_key - 1, g->n_prompt);
    free(lg);
    /* 2. greedy continuations, everything in one mixed engine run */
    struct lb_engine_opts eo = {64, 96, NULL, on_done, g, 1};
    T_CHECK(lb_engine_init(&e, &r, &eo, &err) == 0, "%s", err.msg);
    for (int p = 0; p < g->n_prompt; p++)
        for (int k = 0; k < g->n_key; k++) {
            struct lb_req q = {k * MAX_PROMPTS + p, g->prompt[p], g->plen[p], g->is_base[k] ? -1 : k, g->n_new, {0.0f, 1.0f, 0, 0, 0}, 1};
            T_CHECK(lb_engine_add(&e, &q, &err) == 0, "%s", err.msg);
        }
    while (!lb_engine_idle(&e)) if (lb_engine_step(&e, &err)) { T_CHECK(0, "%s", err.msg); break; }
    int n_exact = 0, n_tie = 0, n_pairs = 0;
    double worst_margin = 0; /* |engine margin - reference margin| / max |logit|, over steps before any divergence */
    for (int k = 0; k < g->n_key; k++) {
        json_t *res = json_object_get(json_object_get(g->ref, "results"), g->key[k]);
        int differs_from_base = 0;
        for (int p = 0; p < g->n_prompt; p++) {
            json_t *o = json_array_get(res, (size_t)p), *rt = json_object_get(o, "tokens"), *rm = json_object_get(o, "margins"),
                   *rl = json_object_get(o, "logits");
            float scale = 0;
            for (size_t i = 0; i < json_array_size(rl); i++) { float a = fabsf((float)json_number_value(json_array_get(rl, i))); if (a > scale) scale = a; }
            n_pairs++;
            T_CHECK(g->n_got[k][p] == g->n_new, "%s/%s prompt %d: %d tokens", model_name, g->key[k], p, g->n_got[k][p]);
            int first_diff = -1;
            for (int s = 0; s < g->n_new && s < g->n_got[k][p]; s++)
                if (g->got[k][p][s] != (int32_t)json_integer_value(json_array_get(rt, (size_t)s))) { first_diff = s; break; }
            /* the engine's reported margins (lorabatch generate --margins) against the reference's,
             * on the steps where both followed the same tokens */
            for (int s = 0; s < (first_diff < 0 ? g->n_got[k][p] : first_diff) && s < (int)json_array_size(rm); s++) {
                double d = fabs((double)g->margin[k][p][s] - json_number_value(json_array_get(rm, (size_t)s))) / scale;
                if (d > worst_margin) worst_margin = d;
                T_CHECK(d <= 2 * tol_logits, "%s/%s prompt %d step %d: engine margin %.5g, reference %.5g", model_name, g->key[k], p, s,
                        g->margin[k][p][s], json_number_value(json_array_get(rm, (size_t)s)));
            }
            if (first_diff < 0) n_exact++;
            else {
                double margin = json_number_value(json_array_get(rm, (size_t)first_diff));
                if (margin < tol_margin * scale) n_tie++;
                else T_CHECK(0, "%s/%s prompt %d: token %d is %d, reference %lld (reference top-2 margin %.3g)", model_name, g->key[k], p,
                             first_diff, g->got[k][p][first_diff], (long long)json_integer_value(json_array_get(rt, (size_t)first_diff)), margin);
            }
            int b = -1;
            for (int j = 0; j < g->n_key; j++) if (g->is_base[j]) b = j;
            if (b >= 0 && memcmp(g->got[k][p], g->got[b][p], sizeof(int32_t) * (size_t)g->n_new)) differs_from_base = 1;
        }
        if (!g->is_base[k]) T_CHECK(differs_from_base, "%s: adapter %s gives the base model's tokens on every prompt", model_name, g->key[k]);
    }
    printf("  %s: greedy continuations: %d of %d identical, %d diverged at a reference near-tie; engine top-2 margins within %.2e x max |logit| of the reference's\n",
           model_name, n_exact, n_pairs, n_tie, worst_margin);
    lb_engine_free(&e);
    lb_runner_free(&r);
    lb_backend_close(&be);
    unload(g);
    free(g);
}

static void test_llama3(void) { check_model("llama3"); }
static void test_qwen2(void) { check_model("qwen2"); }
static void test_qwen3(void) { check_model("qwen3"); }
static void test_mistral(void) { check_model("mistral"); }

int main(void)
{
    T_RUN(test_llama3);
    T_RUN(test_qwen2);
    T_RUN(test_qwen3);
    T_RUN(test_mistral);
    return T_DONE();
}
