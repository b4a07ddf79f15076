/* tmodel.h — write tiny random Llama-family checkpoints and PEFT adapters for tests
 * (config.json + model.safetensors; adapter_config.json + adapter_model.safetensors),
 * deterministic from a seed. Header-only, for tests. */
#ifndef LB_TMODEL_H
#define LB_TMODEL_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* every helper is optional for a test file */
#define TM_FN static __attribute__((unused))

struct tm_tensor { char name[200]; int n_dim; int64_t shape[2]; float *data; };
struct tm_file { struct tm_tensor t[256]; int n; };

static uint64_t tm_rng = 1;
TM_FN float tm_randn(void)
{
    /* xorshift + Box-Muller */
    double u1, u2;
    tm_rng ^= tm_rng << 13; tm_rng ^= tm_rng >> 7; tm_rng ^= tm_rng << 17;
    u1 = ((tm_rng >> 11) + 1.0) / 9007199254740993.0;
    tm_rng ^= tm_rng << 13; tm_rng ^= tm_rng >> 7; tm_rng ^= tm_rng << 17;
    u2 = (tm_rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

TM_FN void tm_add(struct tm_file *f, const char *name, int64_t d0, int64_t d1, float std, float mean)
{
    struct tm_tensor *t = &f->t[f->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t n = d0 * (d1 > 0 ? d1 : 1);
    t->data = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) t->data[i] = mean + std * tm_randn();
}

/* 1: pad the JSON header with spaces to a multiple of 8 bytes (what real writers do), so
 * tensor data is aligned; 0: unpadded. */
static int tm_pad_header = 1;

/* dtype: "BF16", "F16" or "F32" */
TM_FN int tm_write(struct tm_file *f, const char *path, const char *dtype)
{
    int es = strcmp(dtype, "F32") ? 2 : 4;
    char *hdr = malloc(1 << 20);
    int p = sprintf(hdr, "{");
    uint64_t off = 0;
    for (int i = 0; i < f->n; i++) {
        struct tm_tensor *t = &f->t[i];
        int64_t n = t->shape[0] * (t->n_dim == 2 ? t->shape[1] : 1);
        if (t->n_dim == 2)
            p += sprintf(hdr + p, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "", t->name, dtype,
                         (long long)t->shape[0], (long long)t->shape[1], (unsigned long long)off, (unsigned long long)(off + (uint64_t)n * es));
        else
            p += sprintf(hdr + p, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "", t->name, dtype,
                         (long long)t->shape[0], (unsigned long long)off, (unsigned long long)(off + (uint64_t)n * es));
        off += (uint64_t)n * es;
    }
    p += sprintf(hdr + p, "}");
    if (tm_pad_header) while (p % 8) hdr[p++] = ' '; /* the reference writer pads with spaces to 8 bytes */
    FILE *fp = fopen(path, "wb");
    if (!fp) { free(hdr); return -1; }
    uint64_t hl = (uint64_t)p;
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, (size_t)p, fp);
    for (int i = 0; i < f->n; i++) {
        struct tm_tensor *t = &f->t[i];
        int64_t n = t->shape[0] * (t->n_dim == 2 ? t->shape[1] : 1);
        for (int64_t k = 0; k < n; k++) {
            if (es == 4) fwrite(&t->data[k], 4, 1, fp);
            else {
                uint16_t h = strcmp(dtype, "BF16") ? lb_f32_to_f16(t->data[k]) : lb_f32_to_bf16(t->data[k]);
                fwrite(&h, 2, 1, fp);
            }
        }
        free(t->data);
    }
    f->n = 0;
    fclose(fp);
    free(hdr);
    return 0;
}

TM_FN void tm_write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (fp) { fputs(text, fp); fclose(fp); }
}

struct tm_cfg { const char *arch; int H, L, NH, NKV, D, F, V; int tie, llama3; const char *dtype; };

/* Called on the tensor list before it is written: tests drop, reshape, poison or add tensors. */
typedef void (*tm_edit_fn)(struct tm_file *f, void *ctx);

TM_FN struct tm_tensor *tm_find(struct tm_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

TM_FN void tm_drop(struct tm_file *f, const char *name)
{
    struct tm_tensor *t = tm_find(f, name);
    if (!t) return;
    free(t->data);
    *t = f->t[--f->n];
}

/* Write f as n_shards files "model-0000i-of-0000n.safetensors" (tensors dealt round robin)
 * plus model.safetensors.index.json, or as model.safetensors when n_shards <= 1. */
TM_FN int tm_write_sharded(struct tm_file *f, const char *dir, const char *dtype, int n_shards)
{
    char p[512];
    if (n_shards <= 1) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        return tm_write(f, p, dtype);
    }
    size_t cap = 64 + (size_t)f->n * 200, k = 0;
    char *idx = malloc(cap);
    k += (size_t)snprintf(idx + k, cap - k, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    int rc = 0, n_listed = 0;
    for (int s = 0; s < n_shards; s++) {
        struct tm_file *g = calloc(1, sizeof *g);
        for (int i = s; i < f->n; i += n_shards) {
            g->t[g->n++] = f->t[i];
            k += (size_t)snprintf(idx + k, cap - k, "%s\"%s\":\"model-%05d-of-%05d.safetensors\"", n_listed++ ? "," : "", f->t[i].name, s + 1, n_shards);
        }
        snprintf(p, sizeof p, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, n_shards);
        rc |= tm_write(g, p, dtype);
        free(g);
    }
    f->n = 0;
    snprintf(idx + k, cap - k, "}}");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    tm_write_text(p, idx);
    free(idx);
    return rc;
}

TM_FN int tm_model_ex(const char *dir, const struct tm_cfg *c, uint64_t seed, tm_edit_fn edit, void *ctx, int n_shards);

/* A tiny model folder. Returns 0 on success. */
TM_FN int tm_model(const char *dir, const struct tm_cfg *c, uint64_t seed)
{
    return tm_model_ex(dir, c, seed, NULL, NULL, 1);
}

/* tm_model with an edit hook over the tensor list and an optional split into shards. */
TM_FN int tm_model_ex(const char *dir, const struct tm_cfg *c, uint64_t seed, tm_edit_fn edit, void *ctx, int n_shards)
{
    char p[512];
    mkdir(dir, 0755);
    tm_rng = seed * 2654435761u + 1;
    int qwen2 = !strcmp(c->arch, "Qwen2ForCausalLM"), qwen3 = !strcmp(c->arch, "Qwen3ForCausalLM");
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"%s\"],\"hidden_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
             "\"num_key_value_heads\":%d,\"head_dim\":%d,\"intermediate_size\":%d,\"vocab_size\":%d,\"max_position_embeddings\":256,"
             "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":%s,\"hidden_act\":\"silu\",\"torch_dtype\":\"%s\","
             "\"bos_token_id\":1,\"eos_token_id\":2%s}",
             c->arch, c->H, c->L, c->NH, c->NKV, c->D, c->F, c->V, c->tie ? "true" : "false",
             !strcmp(c->dtype, "F32") ? "float32" : !strcmp(c->dtype, "F16") ? "float16" : "bfloat16",
             c->llama3 ? ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":32}" : "");
    snprintf(p, sizeof p, "%s/config.json", dir);
    tm_write_text(p, cfg);
    struct tm_file *f = calloc(1, sizeof *f);
    char nm[160];
    tm_add(f, "model.embed_tokens.weight", c->V, c->H, 0.5f, 0);
    tm_add(f, "model.norm.weight", c->H, 0, 0.1f, 1);
    if (!c->tie) tm_add(f, "lm_head.weight", c->V, c->H, 0.1f, 0);
    for (int l = 0; l < c->L; l++) {
#define A(suffix, d0, d1, sd, mu) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); tm_add(f, nm, d0, d1, sd, mu); } while (0)
        A("input_layernorm.weight", c->H, 0, 0.1f, 1);
        A("post_attention_layernorm.weight", c->H, 0, 0.1f, 1);
        A("self_attn.q_proj.weight", c->NH * c->D, c->H, 0.15f, 0);
        A("self_attn.k_proj.weight", c->NKV * c->D, c->H, 0.15f, 0);
        A("self_attn.v_proj.weight", c->NKV * c->D, c->H, 0.15f, 0);
        A("self_attn.o_proj.weight", c->H, c->NH * c->D, 0.15f, 0);
        if (qwen2) {
            A("self_attn.q_proj.bias", c->NH * c->D, 0, 0.1f, 0);
            A("self_attn.k_proj.bias", c->NKV * c->D, 0, 0.1f, 0);
            A("self_attn.v_proj.bias", c->NKV * c->D, 0, 0.1f, 0);
        }
        if (qwen3) {
            A("self_attn.q_norm.weight", c->D, 0, 0.1f, 1);
            A("self_attn.k_norm.weight", c->D, 0, 0.1f, 1);
        }
        A("mlp.gate_proj.weight", c->F, c->H, 0.15f, 0);
        A("mlp.up_proj.weight", c->F, c->H, 0.15f, 0);
        A("mlp.down_proj.weight", c->H, c->F, 0.15f, 0);
#undef A
    }
    if (edit) edit(f, ctx);
    int rc = tm_write_sharded(f, dir, c->dtype, n_shards);
    free(f);
    return rc;
}

TM_FN int tm_adapter_ex(const char *dir, const struct tm_cfg *c, int r, float alpha, const char *const *targets, int n_targets,
                         uint64_t seed, tm_edit_fn edit, void *ctx);

/* An adapter folder with rank r on the given comma-less list of targets (PEFT names), all layers. */
TM_FN int tm_adapter(const char *dir, const struct tm_cfg *c, int r, float alpha, const char *const *targets, int n_targets, uint64_t seed)
{
    return tm_adapter_ex(dir, c, r, alpha, targets, n_targets, seed, NULL, NULL);
}

/* tm_adapter with an edit hook over the tensor list before it is written. */
TM_FN int tm_adapter_ex(const char *dir, const struct tm_cfg *c, int r, float alpha, const char *const *targets, int n_targets,
                         uint64_t seed, tm_edit_fn edit, void *ctx)
{
    char p[512], cfg[1024], list[256] = "";
    mkdir(dir, 0755);
    tm_rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int i = 0; i < n_targets; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? "," : "", targets[i]);
    snprintf(cfg, sizeof cfg, "{\"peft_type\":\"LORA\",\"r\":%d,\"lora_alpha\":%g,\"target_modules\":[%s],\"bias\":\"none\",\"use_rslora\":false}", r, alpha, list);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    tm_write_text(p, cfg);
    struct tm_file *f = calloc(1, sizeof *f);
    for (int l = 0; l < c->L; l++)
        for (int i = 0; i < n_targets; i++) {
            const char *t = targets[i];
            int attn = t[0] == 'q' || t[0] == 'k' || t[0] == 'v' || t[0] == 'o';
            int in = c->H, out = c->H;
            if (!strcmp(t, "q_proj")) out = c->NH * c->D;
            else if (!strcmp(t, "k_proj") || !strcmp(t, "v_proj")) out = c->NKV * c->D;
            else if (!strcmp(t, "o_proj")) in = c->NH * c->D;
            else if (!strcmp(t, "gate_proj") || !strcmp(t, "up_proj")) out = c->F;
            else if (!strcmp(t, "down_proj")) in = c->F;
            char nm[160];
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_A.weight", l, attn ? "self_attn" : "mlp", t);
            tm_add(f, nm, r, in, 0.3f, 0);
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_B.weight", l, attn ? "self_attn" : "mlp", t);
            tm_add(f, nm, out, r, 0.3f, 0);
        }
    if (edit) edit(f, ctx);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    int rc = tm_write(f, p, "F32");
    free(f);
    return rc;
}
/* An adapter folder with the given adapter_config.json text and, for each layer l and target t
 * (in enum lb_target order: q k v o gate up down), lora_A/lora_B tensors of rank rank[l*7+t]
 * (0: none), F32, PEFT names. */
TM_FN int tm_adapter_ranks(const char *dir, const struct tm_cfg *c, const char *config_json, const int *rank, uint64_t seed,
                           tm_edit_fn edit, void *ctx)
{
    static const char *names[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    char p[512], nm[160];
    mkdir(dir, 0755);
    tm_rng = seed * 0x9e3779b97f4a7c15ull + 11;
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    tm_write_text(p, config_json);
    struct tm_file *f = calloc(1, sizeof *f);
    for (int l = 0; l < c->L; l++)
        for (int t = 0; t < 7; t++) {
            int r = rank[l * 7 + t];
            if (!r) continue;
            int q = c->NH * c->D, kv = c->NKV * c->D;
            int in = t == 3 ? q : t == 6 ? c->F : c->H;
            int out = t == 0 ? q : t <= 2 ? kv : t == 3 || t == 6 ? c->H : c->F;
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_A.weight", l, t <= 3 ? "self_attn" : "mlp", names[t]);
            tm_add(f, nm, r, in, 0.3f, 0);
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_B.weight", l, t <= 3 ? "self_attn" : "mlp", names[t]);
            tm_add(f, nm, out, r, 0.3f, 0);
        }
    if (edit) edit(f, ctx);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    int rc = tm_write(f, p, "F32");
    free(f);
    return rc;
}

/* A fresh folder under /tmp (mkdtemp); tm_rmtree removes a folder and everything under it. */
TM_FN char *tm_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/lbtest.XXXXXX");
    return mkdtemp(buf);
}

TM_FN void tm_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) { unlink(dir); return; }
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) tm_rmtree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}
#endif
