/* cmd_model.c — `lorabatch inspect` and `lorabatch generate` (token ids in, token ids out).
 * `generate` drives the same engine and runner the job pipeline uses, for quick checks,
 * golden comparisons and CPU/GPU speed measurements. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "cli.h"
#include "engine.h"
#include "sample.h"
#include "util.h"

static int fail(struct lb_err *err)
{
    fprintf(stderr, "lorabatch: %s\n", err->msg);
    return lb_exit_code(err->status);
}

static void print_model(const struct lb_model *m)
{
    const struct lb_model_config *c = &m->cfg;
    int64_t n_params = 0, n_bytes = 0, n_t = 0;
    for (int f = 0; f < m->st.n_file; f++)
        for (int i = 0; i < m->st.files[f].n_tensor; i++) {
            n_params += m->st.files[f].tensors[i].n_elem;
            n_bytes += (int64_t)m->st.files[f].tensors[i].n_bytes;
            n_t++;
        }
    printf("model %s\n  architecture %s, dtype %s\n", m->dir, c->arch_name, lb_dtype_name(c->dtype));
    printf("  layers %d, hidden %d, intermediate %d, heads %d, kv heads %d, head_dim %d, vocab %d, context %d\n", c->n_layer,
           c->n_hidden, c->n_ff, c->n_head, c->n_kv_head, c->head_dim, c->n_vocab, c->max_pos);
    printf("  rope theta %g%s", c->rope_theta, c->rope_llama3 ? ", llama3 scaling" : "");
    if (c->rope_llama3)
        printf(" (factor %g, low %g, high %g, original context %d)", c->rope_factor, c->rope_low_freq_factor,
               c->rope_high_freq_factor, c->rope_orig_max_pos);
    printf("\n  tied embeddings %s, qkv bias %s, qk norm %s, rms eps %g\n", c->tie_embed ? "yes" : "no", c->qkv_bias ? "yes" : "no",
           c->qk_norm ? "yes" : "no", c->rms_eps);
    printf("  bos %d, eos", c->bos_id);
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("\n  %lld tensors in %d file(s), %lld parameters, %.1f MiB\n", (long long)n_t, m->st.n_file, (long long)n_params,
           (double)n_bytes / (1 << 20));
}

static void print_adapter(const struct lb_adapter *a)
{
    printf("adapter %s (%s)\n  %lld parameters, max rank %d\n", a->name, a->dir, (long long)a->n_params, a->max_rank);
    printf("  %-10s %5s %8s %9s  layers\n", "target", "rank", "alpha", "scale");
    for (int t = 0; t < LB_T_COUNT; t++) {
        int first = -1, n = 0;
        for (int l = 0; l < a->n_layer; l++)
            if (lb_adapter_mod(a, l, t)->rank) { if (first < 0) first = l; n++; }
        if (first < 0) continue;
        /* one line per distinct (rank, alpha) */
        const struct lb_adapter_module *m0 = lb_adapter_mod(a, first, t);
        printf("  %-10s %5d %8g %9.4g  %d of %d:", lb_target_name((enum lb_target)t), m0->rank, m0->alpha, m0->scale, n, a->n_layer);
        for (int l = 0; l < a->n_layer; l++) if (lb_adapter_mod(a, l, t)->rank) printf(" %d", l);
        printf("\n");
    }
}

int lb_cmd_inspect(int argc, char **argv)
{
    const char *path = NULL, *model = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (argv[i][0] == '-') { fprintf(stderr, "lorabatch inspect: unknown option %s\n", argv[i]); return LB_EXIT_USAGE; }
        else path = argv[i];
    }
    if (!path) { fprintf(stderr, "usage: lorabatch inspect PATH [--model BASE]   (PATH: a model or an adapter folder)\n"); return LB_EXIT_USAGE; }
    struct lb_err err = {0};
    char *ac = lb_path_join(path, "adapter_config.json");
    int is_adapter = lb_file_exists(ac);
    free(ac);
    struct lb_model m;
    if (!is_adapter) {
        if (lb_model_open(&m, path, &err)) return fail(&err);
        print_model(&m);
        printf("  validates: yes\n");
        lb_model_free(&m);
        return 0;
    }
    if (!model) {
        fprintf(stderr, "lorabatch inspect: %s is an adapter; pass --model BASE to validate it against its base model\n", path);
        return LB_EXIT_USAGE;
    }
    if (lb_model_open(&m, model, &err)) return fail(&err);
    struct lb_adapter a;
    const char *name = strrchr(path, '/');
    name = name && name[1] ? name + 1 : path;
    if (lb_adapter_open(&a, name, path, &m, &err)) { lb_model_free(&m); return fail(&err); }
    print_adapter(&a);
    printf("  validates against %s: yes\n", model);
    lb_adapter_free(&a);
    lb_model_free(&m);
    return 0;
}

/* ---------------------------------------------------------------- generate */

struct gen_out {
    FILE *f;
    char **adapter_of;   /* [n] adapter name per request (borrowed) */
    int64_t n_done, n_gen;
};

static int on_done(void *ctx, const struct lb_result *r, struct lb_err *err)
{
    struct gen_out *g = ctx;
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(r->user));
    json_object_set_new(o, "adapter", json_string(g->adapter_of[r->user]));
    json_t *ids = json_array();
    for (int i = 0; i < r->n_tokens; i++) json_array_append_new(ids, json_integer(r->tokens[i]));
    json_object_set_new(o, "token_ids", ids);
    json_object_set_new(o, "finish_reason", json_string(r->finish == LB_FINISH_STOP ? "stop" : "length"));
    json_object_set_new(o, "usage", json_pack("{s:i,s:i}", "prompt_tokens", r->n_prompt, "completion_tokens", r->n_tokens + r->n_eos));
    if (r->margins) { /* --margins: per generated token, the top-2 logit margin and max |logit| of its step */
        json_t *mg = json_array(), *sc = json_array();
        for (int i = 0; i < r->n_tokens + r->n_eos; i++) {
            json_array_append_new(mg, json_real(r->margins[2 * i]));
            json_array_append_new(sc, json_real(r->margins[2 * i + 1]));
        }
        json_object_set_new(o, "margins", mg);
        json_object_set_new(o, "max_abs_logits", sc);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return lb_err_set(err, LB_E_OOM, "out of memory");
    int ok = fprintf(g->f, "%s\n", s) > 0;
    free(s);
    g->n_done++;
    g->n_gen += r->n_tokens + r->n_eos;
    return ok ? 0 : lb_err_set(err, LB_E_IO, "cannot write output: %s", strerror(errno));
}

static int parse_ids(const char *s, int32_t **ids, int *n)
{
    int cap = 16;
    *ids = malloc(sizeof(int32_t) * (size_t)cap);
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff) return -1;
        if (*n == cap) { cap *= 2; *ids = realloc(*ids, sizeof(int32_t) * (size_t)cap); }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        if (*s == ',') s++;
    }
    return *n ? 0 : -1;
}

int lb_cmd_generate(int argc, char **argv)
{
    const char *model_dir = NULL, *device = "cpu";
    const char *ad_name[64], *ad_dir[64];
    int n_ad = 0, threads = 0, max_tokens = 16, top_k = 0, max_seqs = 64, max_batch = 2048, ignore_eos = 0, repeat = 1, margins = 0;
    float temperature = 0.0f, top_p = 1.0f;
    long long seed = 0;
    int32_t *pid[256];
    int pn[256], n_prompt = 0;
    const char *p_adapter[256];
    const char *cur_adapter = "base";
    int rc = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--model") && more) model_dir = argv[++i];
        else if (!strcmp(a, "--adapter") && more) {
            char *eq = strchr(argv[++i], '=');
            if (!eq || n_ad == 64) { fprintf(stderr, "lorabatch generate: --adapter takes NAME=DIR\n"); return LB_EXIT_USAGE; }
            *eq = 0;
            ad_name[n_ad] = argv[i];
            ad_dir[n_ad++] = eq + 1;
        } else if (!strcmp(a, "--use") && more) cur_adapter = argv[++i];
        else if (!strcmp(a, "--prompt-ids") && more) {
            if (n_prompt == 256 || parse_ids(argv[++i], &pid[n_prompt], &pn[n_prompt])) {
                fprintf(stderr, "lorabatch generate: --prompt-ids takes comma-separated token ids\n");
                return LB_EXIT_USAGE;
            }
            p_adapter[n_prompt++] = cur_adapter;
        } else if (!strcmp(a, "--device") && more) device = argv[++i];
        else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--max-tokens") && more) max_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--temperature") && more) temperature = (float)atof(argv[++i]);
        else if (!strcmp(a, "--top-p") && more) top_p = (float)atof(argv[++i]);
        else if (!strcmp(a, "--top-k") && more) top_k = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && more) seed = atoll(argv[++i]);
        else if (!strcmp(a, "--max-seqs") && more) max_seqs = atoi(argv[++i]);
        else if (!strcmp(a, "--max-batch-tokens") && more) max_batch = atoi(argv[++i]);
        else if (!strcmp(a, "--repeat") && more) repeat = atoi(argv[++i]);
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (!strcmp(a, "--margins")) margins = 1;
        else { fprintf(stderr, "lorabatch generate: unknown or incomplete option %s\n", a); return LB_EXIT_USAGE; }
    }
    if (!model_dir || !n_prompt || repeat < 1 || max_seqs < 1 || max_batch < 1) {
        fprintf(stderr,
                "usage: lorabatch generate --model DIR [--adapter NAME=DIR]... [--use NAME] --prompt-ids 1,2,3 [--use NAME --prompt-ids ...]\n"
                "       [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--ignore-eos]\n"
                "       [--device cpu|cuda] [--threads N] [--max-seqs N] [--max-batch-tokens N] [--repeat N] [--margins]\n"
                "  prints one JSON line per prompt; --use selects the adapter for the prompts after it (base = none);\n"
                "  --margins adds each generated token's top-2 logit margin and max |logit| (margins, max_abs_logits)\n");
        return LB_EXIT_USAGE;
    }
    struct lb_err err = {0};
    struct lb_model m;
    struct lb_adapter ads[64];
    struct lb_backend be = {0};
    struct lb_runner r = {0};
    struct lb_engine e = {0};
    int n_loaded = 0;
    char **adapter_of = NULL;
    if ((rc = lb_model_open(&m, model_dir, &err))) return fail(&err);
    for (; n_loaded < n_ad; n_loaded++)
        if ((rc = lb_adapter_open(&ads[n_loaded], ad_name[n_loaded], ad_dir[n_loaded], &m, &err))) goto out;
    int max_rank = 1;
    for (int i = 0; i < n_ad; i++) if (ads[i].max_rank > max_rank) max_rank = ads[i].max_rank;
    if (!strcmp(device, "cuda")) rc = lb_backend_cuda_open(&be, 0, &err);
    else if (!strcmp(device, "cpu")) rc = lb_backend_cpu_open(&be, threads, &err);
    else rc = lb_err_set(&err, LB_E_INPUT, "--device must be cpu or cuda, not \"%s\"", device);
    if (rc) goto out;
    int total = n_prompt * repeat, max_len = 0;
    for (int i = 0; i < n_prompt; i++) if (pn[i] + max_tokens + 1 > max_len) max_len = pn[i] + max_tokens + 1;
    int page_size = 16;
    int seqs = max_seqs < total ? max_seqs : total;
    struct lb_runner_opts ro = {max_batch, seqs, seqs * ((max_len + page_size - 1) / page_size) + 1, page_size, n_ad ? n_ad : 1, max_rank};
    if ((rc = lb_runner_init(&r, &be, &m, &ro, &err))) goto out;
    for (int i = 0; i < n_ad; i++) if ((rc = lb_runner_load_adapter(&r, i, &ads[i], &err))) goto out;
    adapter_of = calloc((size_t)total, sizeof *adapter_of);
    struct gen_out g = {stdout, adapter_of, 0, 0};
    struct lb_engine_opts eo = {seqs, max_batch, NULL, on_done, &g, margins};
    if ((rc = lb_engine_init(&e, &r, &eo, &err))) goto out;
    double t0 = lb_now_s();
    int64_t n_prompt_tok = 0;
    for (int k = 0; k < total; k++) {
        int i = k % n_prompt, slot = -1;
        if (strcmp(p_adapter[i], "base")) {
            for (int j = 0; j < n_ad; j++) if (!strcmp(ad_name[j], p_adapter[i])) slot = j;
            if (slot < 0) { rc = lb_err_set(&err, LB_E_INPUT, "--use %s: no such --adapter", p_adapter[i]); goto out; }
        }
        for (int t = 0; t < pn[i]; t++)
            if (pid[i][t] >= m.cfg.n_vocab) { rc = lb_err_set(&err, LB_E_INPUT, "prompt %d: token id %d >= vocab size %d", i, pid[i][t], m.cfg.n_vocab); goto out; }
        adapter_of[k] = (char *)p_adapter[i];
        struct lb_req q = {k, pid[i], pn[i], slot, max_tokens, {temperature, top_p, top_k, 0, lb_sample_key((uint64_t)seed, (uint64_t)k)}, ignore_eos};
        n_prompt_tok += pn[i];
        if ((rc = lb_engine_add(&e, &q, &err))) goto out;
    }
    while (!lb_engine_idle(&e))
        if ((rc = lb_engine_step(&e, &err))) goto out;
    double dt = lb_now_s() - t0;
    fprintf(stderr, "generate: %d sequences, %lld prompt + %lld generated tokens in %.3f s: %.1f generated tok/s, %.1f total tok/s (%s, %lld steps, %lld preemptions, %lld steps with prefill at %.2f adapters each, %lld without at %.2f)\n",
            total, (long long)n_prompt_tok, (long long)g.n_gen, dt, (double)g.n_gen / dt, (double)(g.n_gen + n_prompt_tok) / dt,
            be.ops->name, (long long)e.n_steps, (long long)e.n_preempt, (long long)e.n_prefill_steps,
            e.n_prefill_steps ? (double)e.n_prefill_adapters / (double)e.n_prefill_steps : 0.0, (long long)e.n_decode_steps,
            e.n_decode_steps ? (double)e.n_decode_adapters / (double)e.n_decode_steps : 0.0);
out:
    lb_engine_free(&e);
    lb_runner_free(&r);
    lb_backend_close(&be);
    for (int i = 0; i < n_loaded; i++) lb_adapter_free(&ads[i]);
    lb_model_free(&m);
    for (int i = 0; i < n_prompt; i++) free(pid[i]);
    free(adapter_of);
    return rc ? fail(&err) : 0;
}
