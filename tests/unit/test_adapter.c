/* test_adapter.c — PEFT LoRA adapters against a tiny base model: ranks and scales
 * (alpha/r, rsLoRA alpha/sqrt(r)), rank_pattern / alpha_pattern, regex targets,
 * layers_to_transform, and a catalogue of refusals, each with its status and message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "t.h"
#include "tmodel.h"

static const struct tm_cfg base = {"LlamaForCausalLM", 32, 2, 4, 2, 8, 48, 64, 0, 0, "BF16"};
/* another base: hidden 48, head_dim 12, ff 64 */
static const struct tm_cfg other = {"LlamaForCausalLM", 48, 2, 4, 2, 12, 64, 64, 0, 0, "BF16"};
static char root[64];
static struct lb_model model;
static int n_dir;

#define NT LB_T_COUNT
static const char *all7[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

/* A fresh adapter folder path. */
static const char *newdir(void)
{
    static char d[128];
    snprintf(d, sizeof d, "%s/a%d", root, n_dir++);
    return d;
}

static int open_adapter(struct lb_adapter *a, const char *dir, struct lb_err *err)
{
    memset(err, 0, sizeof *err);
    int rc = lb_adapter_open(a, "test", dir, &model, err);
    if (rc) T_CHECK(a->mods == NULL && a->name == NULL && a->st.tensors == NULL, "%s: failed open leaves state", dir);
    return rc;
}

static int near(float a, float b) { return fabsf(a - b) <= 1e-6f * fmaxf(1.0f, fabsf(b)); }

static void test_good(void)
{
    const char *d = newdir();
    T_CHECK(tm_adapter(d, &base, 4, 8.0f, all7, 7, 1) == 0, "write");
    struct lb_adapter a;
    struct lb_err err;
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0, "good adapter: %d %s", rc, err.msg);
    if (rc) return;
    T_CHECK(a.n_layer == 2 && a.max_rank == 4 && !strcmp(a.name, "test"), "header");
    int64_t want_params = 0;
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < NT; t++) {
            const struct lb_adapter_module *m = lb_adapter_mod(&a, l, t);
            int n_in, n_out;
            lb_model_target_dims(&model.cfg, (enum lb_target)t, &n_in, &n_out);
            want_params += 4 * (n_in + n_out);
            T_CHECK(m->rank == 4 && m->alpha == 8.0f && near(m->scale, 2.0f) && m->a && m->b && m->dtype == LB_F32, "layer %d %s: rank %d scale %g", l,
                    all7[t], m->rank, m->scale);
        }
    T_CHECK(a.n_params == want_params, "n_params %lld want %lld", (long long)a.n_params, (long long)want_params);
    /* A is [R, n_in]: its first row starts the tensor */
    const struct lb_tensor *ta = lb_st_find(&a.st, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
    T_CHECK(ta && lb_adapter_mod(&a, 1, LB_T_DOWN)->a == ta->data, "A points at its tensor");
    lb_adapter_free(&a);
    lb_adapter_free(NULL);
}

static void test_rslora_and_patterns(void)
{
    struct lb_adapter a;
    struct lb_err err;
    int rank[2 * NT];
    /* rsLoRA: scale = alpha / sqrt(r) on q, v */
    const char *d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q || i % NT == LB_T_V) ? 16 : 0;
    tm_adapter_ranks(d, &base, "{\"peft_type\":\"LORA\",\"r\":16,\"lora_alpha\":8,\"use_rslora\":true,\"target_modules\":[\"q_proj\",\"v_proj\"],\"bias\":\"none\"}",
                     rank, 2, NULL, NULL);
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0, "rslora: %d %s", rc, err.msg);
    if (!rc) {
        T_CHECK(near(lb_adapter_mod(&a, 0, LB_T_Q)->scale, 2.0f) && near(lb_adapter_mod(&a, 1, LB_T_V)->scale, 2.0f), "rslora scale %g",
                lb_adapter_mod(&a, 0, LB_T_Q)->scale);
        T_CHECK(lb_adapter_mod(&a, 0, LB_T_K)->rank == 0 && lb_adapter_mod(&a, 1, LB_T_O)->rank == 0, "untargeted modules");
        lb_adapter_free(&a);
    }
    /* rank_pattern and alpha_pattern: overrides on matching modules only.
     * "q_proj" -> every q; "layers.1.mlp.down_proj" -> only layer 1's down; "o_proj" alpha only */
    d = newdir();
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < NT; t++) rank[l * NT + t] = t == LB_T_Q ? 8 : (l == 1 && t == LB_T_DOWN) ? 2 : 4;
    tm_adapter_ranks(d, &base,
                     "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":16,\"target_modules\":[\"q_proj\",\"k_proj\",\"v_proj\",\"o_proj\",\"gate_proj\","
                     "\"up_proj\",\"down_proj\"],\"rank_pattern\":{\"q_proj\":8,\"layers.1.mlp.down_proj\":2},"
                     "\"alpha_pattern\":{\"o_proj\":2,\"model.layers.0.mlp.up_proj\":40}}",
                     rank, 3, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0, "patterns: %d %s", rc, err.msg);
    if (!rc) {
        for (int l = 0; l < 2; l++) {
            const struct lb_adapter_module *q = lb_adapter_mod(&a, l, LB_T_Q), *k = lb_adapter_mod(&a, l, LB_T_K), *o = lb_adapter_mod(&a, l, LB_T_O),
                                           *dn = lb_adapter_mod(&a, l, LB_T_DOWN), *up = lb_adapter_mod(&a, l, LB_T_UP);
            T_CHECK(q->rank == 8 && q->alpha == 16 && near(q->scale, 2.0f), "layer %d q: rank %d scale %g", l, q->rank, q->scale);
            T_CHECK(k->rank == 4 && near(k->scale, 4.0f), "layer %d k: rank %d scale %g", l, k->rank, k->scale);
            T_CHECK(o->rank == 4 && o->alpha == 2 && near(o->scale, 0.5f), "layer %d o: alpha %g scale %g", l, o->alpha, o->scale);
            T_CHECK(dn->rank == (l == 1 ? 2 : 4) && near(dn->scale, l == 1 ? 8.0f : 4.0f), "layer %d down: rank %d scale %g", l, dn->rank, dn->scale);
            T_CHECK(up->alpha == (l == 0 ? 40 : 16), "layer %d up: alpha %g", l, up->alpha);
        }
        T_CHECK(a.max_rank == 8, "max_rank %d", a.max_rank);
        lb_adapter_free(&a);
    }
    /* a pattern key must match at a module-name boundary: "proj" matches nothing, "_proj" neither */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q) ? 4 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":4,\"lora_alpha\":4,\"target_modules\":[\"q_proj\"],\"rank_pattern\":{\"proj\":9,\"_proj\":9}}", rank, 4, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 0, LB_T_Q)->rank == 4, "boundary: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
}

static void add_default(struct tm_file *f, void *ctx)
{
    (void)ctx;
    for (int i = 0; i < f->n; i++) {
        char *w = strstr(f->t[i].name, ".weight");
        if (w) strcpy(w, ".default.weight");
    }
}

static void test_regex_and_layers(void)
{
    struct lb_adapter a;
    struct lb_err err;
    int rank[2 * NT];
    /* regex string: full match, q and v of every layer */
    const char *d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q || i % NT == LB_T_V) ? 4 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":4,\"lora_alpha\":8,\"target_modules\":\".*\\\\.(q_proj|v_proj)\"}", rank, 5, NULL, NULL);
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 1, LB_T_V)->rank == 4 && lb_adapter_mod(&a, 1, LB_T_K)->rank == 0, "regex q|v: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
    /* regex selecting one layer's MLP */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i / NT == 1 && i % NT >= LB_T_GATE) ? 2 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":2,\"lora_alpha\":2,\"target_modules\":\"model\\\\.layers\\\\.1\\\\.mlp\\\\..*\"}", rank, 6, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 1, LB_T_UP)->rank == 2 && lb_adapter_mod(&a, 0, LB_T_UP)->rank == 0, "regex layer 1 mlp: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
    /* a regex is a full match: "q_proj" alone matches no full module name */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = 0;
    tm_adapter_ranks(d, &base, "{\"r\":2,\"target_modules\":\"q_proj\"}", rank, 6, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "selects none"), "regex q_proj is a full match: %d %s", rc, err.msg);
    /* layers_to_transform: int */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i / NT == 1 && (i % NT == LB_T_Q || i % NT == LB_T_K)) ? 4 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"k_proj\"],\"layers_to_transform\":1}", rank, 7, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 1, LB_T_K)->rank == 4 && lb_adapter_mod(&a, 0, LB_T_Q)->rank == 0, "layers_to_transform 1: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
    /* layers_to_transform: list */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i / NT == 0) ? 4 : 0;
    tm_adapter_ranks(d, &base,
                     "{\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"k_proj\",\"v_proj\",\"o_proj\",\"gate_proj\",\"up_proj\",\"down_proj\"],"
                     "\"layers_to_transform\":[0],\"layers_pattern\":\"layers\"}",
                     rank, 8, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 0, LB_T_DOWN)->rank == 4 && lb_adapter_mod(&a, 1, LB_T_Q)->rank == 0, "layers_to_transform [0]: %d %s", rc,
            err.msg);
    if (!rc) lb_adapter_free(&a);
    /* layers_to_transform [0] but the file also holds layer 1: refused, the tensor named */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q) ? 4 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":4,\"target_modules\":[\"q_proj\"],\"layers_to_transform\":[0]}", rank, 8, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"base_model.model.model.layers.1.self_attn.q_proj.lora_"), "layer 1 beyond layers_to_transform: %d %s",
            rc, err.msg);
    /* fan_in_fan_out is accepted (PEFT resets it for nn.Linear) */
    d = newdir();
    tm_adapter_ranks(d, &base, "{\"r\":4,\"target_modules\":[\"q_proj\"],\"fan_in_fan_out\":true}", rank, 9, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0, "fan_in_fan_out: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
    /* exclude_modules removes a module from the targets */
    d = newdir();
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q && i >= NT) ? 4 : 0;
    tm_adapter_ranks(d, &base, "{\"r\":4,\"target_modules\":[\"q_proj\"],\"exclude_modules\":\".*layers\\\\.0\\\\..*\"}", rank, 9, NULL, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && !lb_adapter_mod(&a, 0, LB_T_Q)->rank && lb_adapter_mod(&a, 1, LB_T_Q)->rank == 4, "exclude_modules regex: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q) ? 4 : 0;
    /* lora_A.default.weight names (saved without PEFT's adapter-name strip) */
    d = newdir();
    tm_adapter_ranks(d, &base, "{\"r\":4,\"target_modules\":[\"q_proj\"]}", rank, 9, add_default, NULL);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == 0 && lb_adapter_mod(&a, 1, LB_T_Q)->b, ".default names: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
}

/* edit hooks */
static void drop(struct tm_file *f, void *ctx) { tm_drop(f, ctx); }
static void add_extra(struct tm_file *f, void *ctx) { tm_add(f, ctx, 4, 32, 0.1f, 0); }

/* The catalogue: adapter_config.json text (targets q,v of both layers with rank 4 unless
 * ranks_all), optional tensor edit, expected status and message parts. */
struct bad { const char *what, *config; tm_edit_fn edit; const char *ctx; int status; const char *m1, *m2; };

#define QV "\"target_modules\":[\"q_proj\",\"v_proj\"]"
static const struct bad catalogue[] = {
    {"use_dora", "{\"r\":4," QV ",\"use_dora\":true}", NULL, NULL, LB_E_UNSUPPORTED, "use_dora", "adapter_config.json"},
    {"modules_to_save", "{\"r\":4," QV ",\"modules_to_save\":[\"lm_head\"]}", NULL, NULL, LB_E_UNSUPPORTED, "modules_to_save", "adapter_config.json"},
    {"bias all", "{\"r\":4," QV ",\"bias\":\"all\"}", NULL, NULL, LB_E_UNSUPPORTED, "bias \"all\"", "adapter_config.json"},
    {"bias lora_only", "{\"r\":4," QV ",\"bias\":\"lora_only\"}", NULL, NULL, LB_E_UNSUPPORTED, "bias \"lora_only\"", NULL},
    {"lora_bias", "{\"r\":4," QV ",\"lora_bias\":true}", NULL, NULL, LB_E_UNSUPPORTED, "lora_bias", NULL},
    {"target embed_tokens", "{\"r\":4,\"target_modules\":[\"q_proj\",\"embed_tokens\"]}", NULL, NULL, LB_E_UNSUPPORTED, "model.embed_tokens", "not supported"},
    {"target lm_head", "{\"r\":4,\"target_modules\":[\"lm_head\",\"v_proj\"]}", NULL, NULL, LB_E_UNSUPPORTED, "lm_head", "not supported"},
    {"regex target lm_head", "{\"r\":4,\"target_modules\":\".*(v_proj|q_proj|lm_head)\"}", NULL, NULL, LB_E_UNSUPPORTED, "lm_head", "not supported"},
    {"peft_type IA3", "{\"peft_type\":\"IA3\",\"r\":4," QV "}", NULL, NULL, LB_E_UNSUPPORTED, "peft_type IA3", "adapter_config.json"},
    {"peft_type ADALORA", "{\"peft_type\":\"ADALORA\",\"r\":4," QV "}", NULL, NULL, LB_E_UNSUPPORTED, "ADALORA", NULL},
    {"r missing", "{" QV "}", NULL, NULL, LB_E_INPUT, "\"r\"", "adapter_config.json"},
    {"r zero", "{\"r\":0," QV "}", NULL, NULL, LB_E_INPUT, "\"r\"", "positive"},
    {"r 2^32 (would wrap to 0)", "{\"r\":4294967296," QV "}", NULL, NULL, LB_E_INPUT, "\"r\"", "at most"},
    {"rank_pattern 2^32", "{\"r\":4," QV ",\"rank_pattern\":{\"q_proj\":4294967300}}", NULL, NULL, LB_E_INPUT, "rank_pattern", "q_proj"},
    {"r a string", "{\"r\":\"4\"," QV "}", NULL, NULL, LB_E_INPUT, "\"r\"", "positive"},
    {"lora_alpha a string", "{\"r\":4,\"lora_alpha\":\"8\"," QV "}", NULL, NULL, LB_E_INPUT, "\"lora_alpha\"", "number"},
    {"target_modules missing", "{\"r\":4}", NULL, NULL, LB_E_INPUT, "\"target_modules\"", NULL},
    {"target_modules selects nothing", "{\"r\":4,\"target_modules\":[\"c_attn\"]}", NULL, NULL, LB_E_INPUT, "target_modules", "none"},
    {"target_modules all-linear (unexpanded)", "{\"r\":4,\"target_modules\":\"all-linear\"}", NULL, NULL, LB_E_INPUT, "target_modules", "none"},
    {"bad regex", "{\"r\":4,\"target_modules\":\"(q_proj\"}", NULL, NULL, LB_E_INPUT, "target_modules regex", "parenthes"},
    {"bad rank_pattern key", "{\"r\":4," QV ",\"rank_pattern\":{\"[q\":8}}", NULL, NULL, LB_E_INPUT, "rank_pattern", "[q"},
    {"rank_pattern value zero", "{\"r\":4," QV ",\"rank_pattern\":{\"q_proj\":0}}", NULL, NULL, LB_E_INPUT, "rank_pattern", "q_proj"},
    {"alpha_pattern value a string", "{\"r\":4," QV ",\"alpha_pattern\":{\"v_proj\":\"x\"}}", NULL, NULL, LB_E_INPUT, "alpha_pattern", "v_proj"},
    {"layers_to_transform a string", "{\"r\":4," QV ",\"layers_to_transform\":\"0\"}", NULL, NULL, LB_E_INPUT, "layers_to_transform", NULL},
    {"layers_to_transform with a regex", "{\"r\":4,\"target_modules\":\".*\\\\.(q_proj|v_proj)\",\"layers_to_transform\":[0,1]}", NULL, NULL, LB_E_INPUT,
     "layers_to_transform", "regex"},
    /* exclude_modules is honoured: the excluded module's tensors become extra tensors */
    {"exclude_modules", "{\"r\":4," QV ",\"exclude_modules\":[\"model.layers.0.self_attn.q_proj\"]}", NULL, NULL, LB_E_INPUT,
     "\"base_model.model.model.layers.0.self_attn.q_proj.lora_", "does not belong"},
    {"config not JSON", "{\"r\":4,", NULL, NULL, LB_E_INPUT, "adapter_config.json", "not a JSON object"},
    {"config an array", "[]", NULL, NULL, LB_E_INPUT, "adapter_config.json", "not a JSON object"},
    {"missing lora_B", "{\"r\":4," QV "}", drop, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", LB_E_INPUT,
     "\"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight\"", "missing"},
    {"missing lora_A", "{\"r\":4," QV "}", drop, "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", LB_E_INPUT,
     "\"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight\"", "missing"},
    {"extra tensor not targeted", "{\"r\":4," QV "}", add_extra, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", LB_E_INPUT,
     "\"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight\"", "does not belong"},
    {"extra tensor of another kind", "{\"r\":4," QV "}", add_extra, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", LB_E_INPUT,
     "lora_magnitude_vector", "does not belong"},
    {"rank in the file != r", "{\"r\":8," QV "}", NULL, NULL, LB_E_INPUT, "[4, 32]", "[8, 32]"},
};

static void test_catalogue(void)
{
    int rank[2 * NT];
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q || i % NT == LB_T_V) ? 4 : 0;
    for (size_t i = 0; i < sizeof catalogue / sizeof *catalogue; i++) {
        const struct bad *b = &catalogue[i];
        const char *d = newdir();
        tm_adapter_ranks(d, &base, b->config, rank, 10 + i, b->edit, (void *)b->ctx);
        struct lb_adapter a;
        struct lb_err err;
        int rc = open_adapter(&a, d, &err);
        if (!rc) lb_adapter_free(&a);
        T_CHECK(rc == b->status, "%s: status %d (%s) want %d: %s", b->what, rc, lb_status_name(rc), b->status, err.msg);
        T_CHECK(strstr(err.msg, b->m1) && (!b->m2 || strstr(err.msg, b->m2)), "%s: message lacks '%s'/'%s': %s", b->what, b->m1, b->m2 ? b->m2 : "",
                err.msg);
    }
}

static void test_files(void)
{
    struct lb_adapter a;
    struct lb_err err;
    char p[256];
    /* missing folder */
    const char *d = newdir();
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, d) && strstr(err.msg, "does not exist") && strstr(err.msg, "\"test\""), "missing folder: %d %s", rc, err.msg);
    /* missing adapter_config.json */
    d = newdir();
    tm_adapter(d, &base, 4, 8, all7, 2, 20);
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    unlink(p);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "adapter_config.json") && strstr(err.msg, "cannot open"), "missing config: %d %s", rc, err.msg);
    /* adapter_config.json is a folder */
    mkdir(p, 0755);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "adapter_config.json") && strstr(err.msg, "folder"), "config a folder: %d %s", rc, err.msg);
    /* missing adapter_model.* */
    d = newdir();
    tm_adapter(d, &base, 4, 8, all7, 2, 21);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    unlink(p);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "adapter_model.safetensors") && strstr(err.msg, "adapter_model.bin") && strstr(err.msg, d),
            "missing weights: %d %s", rc, err.msg);
    /* only an adapter_model.bin, and it is not a torch.save ZIP: refused, the file named
     * (unsupported while the .bin reader is a stub, corrupt once it parses) */
    snprintf(p, sizeof p, "%s/adapter_model.bin", d);
    tm_write_text(p, "import os; os.system('echo pwned')\n");
    rc = open_adapter(&a, d, &err);
    T_CHECK((rc == LB_E_UNSUPPORTED || rc == LB_E_CORRUPT) && strstr(err.msg, "adapter_model.bin"), "garbage .bin: %d %s", rc, err.msg);
    /* truncated adapter_model.safetensors */
    d = newdir();
    tm_adapter(d, &base, 4, 8, all7, 2, 22);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    T_CHECK(truncate(p, 600) == 0, "truncate");
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "adapter_model.safetensors") && strstr(err.msg, "truncated"), "truncated: %d %s", rc, err.msg);
    /* adapter for another base model: tensor name and both shapes */
    d = newdir();
    tm_adapter(d, &other, 4, 8, all7, 7, 23);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\"") && strstr(err.msg, "[4, 48]") &&
                strstr(err.msg, "[4, 32]") && strstr(err.msg, "another base model"),
            "other base: %d %s", rc, err.msg);
    /* another base that differs only in the MLP width: found at gate_proj's lora_B */
    struct tm_cfg wide = base;
    wide.F = 96;
    d = newdir();
    tm_adapter(d, &wide, 4, 8, all7, 7, 24);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight\"") && strstr(err.msg, "[96, 4]") &&
                strstr(err.msg, "[48, 4]"),
            "other base (MLP): %d %s", rc, err.msg);
    /* a base with more layers: the extra layer's tensors do not belong */
    struct tm_cfg deep = base;
    deep.L = 3;
    d = newdir();
    tm_adapter(d, &deep, 4, 8, all7, 1, 25);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "model.layers.2.self_attn.q_proj") && strstr(err.msg, "does not belong"), "deeper base: %d %s", rc, err.msg);
}

/* A lora_A tensor with a shape the writer cannot make: 8 dimensions of huge sizes and zero
 * elements (a valid safetensors entry). The shape message must not overflow its buffer. */
static void test_weird_shapes(void)
{
    struct lb_adapter a;
    struct lb_err err;
    int rank[2 * NT] = {0};
    const char *d = newdir();
    tm_adapter_ranks(d, &base, "{\"r\":4,\"target_modules\":[\"q_proj\"],\"layers_to_transform\":0}", rank, 30, NULL, NULL);
    const char *hdr = "{\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[0,"
                      "1000000000000000000,1000000000000000000,1000000000000000000,1000000000000000000,1000000000000000000,"
                      "1000000000000000000,1000000000000000000],\"data_offsets\":[0,0]},"
                      "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[32,4],\"data_offsets\":[0,512]}}";
    char p[256];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    FILE *fp = fopen(p, "wb");
    uint64_t hl = strlen(hdr);
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, hl, fp);
    for (int i = 0; i < 512; i++) fputc(0, fp);
    fclose(fp);
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "q_proj.lora_A.weight") && strstr(err.msg, "[4, 32]"), "8-dim lora_A: %d %s", rc, err.msg);
    /* lora_A 1-D */
    hdr = "{\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[128],\"data_offsets\":[0,512]},"
          "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[32,4],\"data_offsets\":[512,1024]}}";
    fp = fopen(p, "wb");
    hl = strlen(hdr);
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, hl, fp);
    for (int i = 0; i < 1024; i++) fputc(0, fp);
    fclose(fp);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "[128]") && strstr(err.msg, "[4, 32]"), "1-D lora_A: %d %s", rc, err.msg);
    /* I32 lora tensors */
    hdr = "{\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":{\"dtype\":\"I32\",\"shape\":[4,32],\"data_offsets\":[0,512]},"
          "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[32,4],\"data_offsets\":[512,1024]}}";
    fp = fopen(p, "wb");
    hl = strlen(hdr);
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, hl, fp);
    for (int i = 0; i < 1024; i++) fputc(0, fp);
    fclose(fp);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "q_proj.lora_A.weight") && strstr(err.msg, "I32"), "I32 lora_A: %d %s", rc, err.msg);
    /* lora_A F32, lora_B BF16: mixed dtypes refused */
    hdr = "{\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[4,32],\"data_offsets\":[0,512]},"
          "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"BF16\",\"shape\":[32,4],\"data_offsets\":[512,768]}}";
    fp = fopen(p, "wb");
    hl = strlen(hdr);
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, hl, fp);
    for (int i = 0; i < 768; i++) fputc(0, fp);
    fclose(fp);
    rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "q_proj") && strstr(err.msg, "dtypes"), "mixed dtypes: %d %s", rc, err.msg);
}

/* NaN in adapter weights is refused like NaN in the base */
static void poison(struct tm_file *f, void *ctx)
{
    struct tm_tensor *t = tm_find(f, ctx);
    if (t) t->data[3] = NAN;
}

static void test_nonfinite(void)
{
    struct lb_adapter a;
    struct lb_err err;
    int rank[2 * NT];
    for (int i = 0; i < 2 * NT; i++) rank[i] = (i % NT == LB_T_Q || i % NT == LB_T_V) ? 4 : 0;
    const char *d = newdir();
    tm_adapter_ranks(d, &base, "{\"r\":4," QV "}", rank, 40, poison, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    int rc = open_adapter(&a, d, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "\"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight\"") && strstr(err.msg, "NaN"),
            "NaN in lora_B: %d %s", rc, err.msg);
    if (!rc) lb_adapter_free(&a);
}

/* Seeded mutations of adapter_config.json (patterns, regexes, layers) and of the tensor file
 * header: every result is 0 or a negative status with a message. */
static void test_mutations(void)
{
    int rank[2 * NT];
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < NT; t++) rank[l * NT + t] = t == LB_T_Q ? 8 : 4;
    const char *cfg = "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":16,\"use_rslora\":false,\"target_modules\":[\"q_proj\",\"k_proj\",\"v_proj\","
                      "\"o_proj\",\"gate_proj\",\"up_proj\",\"down_proj\"],\"rank_pattern\":{\"q_proj\":8},\"alpha_pattern\":{\"o_proj\":2},"
                      "\"layers_to_transform\":[0,1],\"bias\":\"none\",\"modules_to_save\":null}";
    const char *d = newdir();
    tm_adapter_ranks(d, &base, cfg, rank, 50, NULL, NULL);
    char p[256], st[256];
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", d);
    FILE *fp = fopen(st, "rb");
    fseek(fp, 0, SEEK_END);
    long n_st = ftell(fp);
    rewind(fp);
    unsigned char *good_st = malloc((size_t)n_st);
    T_CHECK(fread(good_st, 1, (size_t)n_st, fp) == (size_t)n_st, "read");
    fclose(fp);
    struct lb_adapter a;
    struct lb_err err;
    T_CHECK(open_adapter(&a, d, &err) == 0, "seed adapter: %s", err.msg);
    lb_adapter_free(&a);
    static const char tokens[] = "{}[],:\"0123456789-.*()|\\^$?+ ";
    uint64_t s = 4242;
    size_t n = strlen(cfg);
    int n_ok = 0, n_bad = 0, weird = 0;
    for (int it = 0; it < 600; it++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        char *m = malloc(n + 1);
        memcpy(m, cfg, n + 1);
        size_t pos = (size_t)(s >> 8) % n;
        int tensor_file = it % 3 == 2;
        if (!tensor_file) {
            if (s & 1) m[pos] = tokens[(s >> 40) % (sizeof tokens - 1)];
            else m[pos] = 0; /* truncate */
            tm_write_text(p, m);
        } else {
            unsigned char *b = malloc((size_t)n_st);
            memcpy(b, good_st, (size_t)n_st);
            b[(s >> 8) % 1500] = (unsigned char)tokens[(s >> 40) % (sizeof tokens - 1)];
            fp = fopen(st, "wb");
            fwrite(b, 1, (size_t)n_st, fp);
            fclose(fp);
            free(b);
            tm_write_text(p, cfg);
        }
        free(m);
        int rc = open_adapter(&a, d, &err);
        if (rc == 0) { n_ok++; lb_adapter_free(&a); }
        else if (rc < 0 && rc >= LB_E_DATA && err.status == rc && err.msg[0]) n_bad++;
        else { weird++; fprintf(stderr, "  adapter mutation %d: rc %d %s\n", it, rc, err.msg); }
        if (tensor_file) {
            fp = fopen(st, "wb");
            fwrite(good_st, 1, (size_t)n_st, fp);
            fclose(fp);
        }
    }
    free(good_st);
    T_CHECK(weird == 0, "%d odd results", weird);
    printf("     adapter mutations: %d accepted, %d refused\n", n_ok, n_bad);
}

int main(void)
{
    if (!tm_tmpdir(root, sizeof root)) { printf("mkdtemp failed\n"); return 1; }
    char d[128];
    snprintf(d, sizeof d, "%s/base", root);
    struct lb_err err = {0};
    if (tm_model(d, &base, 1) || lb_model_open(&model, d, &err)) {
        printf("base model: %s\n", err.msg);
        tm_rmtree(root);
        return 1;
    }
    T_RUN(test_good);
    T_RUN(test_rslora_and_patterns);
    T_RUN(test_regex_and_layers);
    T_RUN(test_catalogue);
    T_RUN(test_files);
    T_RUN(test_weird_shapes);
    T_RUN(test_nonfinite);
    T_RUN(test_mutations);
    lb_model_free(&model);
    tm_rmtree(root);
    return T_DONE();
}
