/* model.c — config.json / generation_config.json parsing and checkpoint loading.
 *
 * The config parser accepts both transformers 4.x spellings (rope_theta, rope_scaling,
 * torch_dtype) and 5.x ones (rope_parameters, dtype). Every field that changes the math
 * is checked; values we do not implement (another RoPE type, sliding windows, biases
 * where Llama has none, other activations, quantization) are refused by name.
 * Loading checks every tensor's presence, dtype and shape, scans weights for NaN/Inf, and
 * refuses tensors it would not use (an unused tensor means an unsupported feature). */
#include "model.h"

#include <jansson.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Far above any released model (Llama-3.1-405B: 126); keeps per-layer tables small and their
 * sizes free of overflow. */
#define LB_MODEL_MAX_LAYERS 4096

static int get_int(json_t *o, const char *k, int def, int required, int *out, const char *name, struct lb_err *err)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        if (required) return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" is missing", name, k);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
        return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" must be a non-negative integer", name, k);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *o, const char *k, float def, float *out, const char *name, struct lb_err *err)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_number(v)) return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" must be a number", name, k);
    if (fabs(json_number_value(v)) > FLT_MAX) /* the conversion to float would be undefined */
        return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" = %g is out of float range", name, k, json_number_value(v));
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *o, const char *k, int def, int *out, const char *name, struct lb_err *err)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_boolean(v)) return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" must be true or false", name, k);
    *out = json_is_true(v);
    return 0;
}

static int parse_eos(json_t *v, struct lb_model_config *c, const char *name, const char *field, struct lb_err *err)
{
    if (!v || json_is_null(v)) return 0;
    c->n_eos = 0;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" = %lld is not a token id", name, field, (long long)json_integer_value(v));
        c->eos_ids[c->n_eos++] = (int)json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v)) return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" must be an integer or a list", name, field);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\"[%zu] must be an integer token id", name, field, i);
        if (c->n_eos == LB_MAX_EOS) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: more than %d EOS ids", name, LB_MAX_EOS);
        c->eos_ids[c->n_eos++] = (int)json_integer_value(x);
    }
    return 0;
}

static int parse_rope(json_t *r, struct lb_model_config *c, const char *name, const char *field, struct lb_err *err)
{
    if (!r || json_is_null(r)) return 0;
    if (!json_is_object(r)) return lb_err_set(err, LB_E_INPUT, "%s: field \"%s\" must be an object", name, field);
    json_t *t = json_object_get(r, "rope_type");
    if (!t) t = json_object_get(r, "type");
    if (t && !json_is_string(t)) return lb_err_set(err, LB_E_INPUT, "%s: %s.rope_type must be a string", name, field);
    if (!t) { /* transformers refuses a scaling without a type; only a bare rope_theta means plain RoPE */
        const char *k;
        json_t *v;
        json_object_foreach(r, k, v)
            if (strcmp(k, "rope_theta")) return lb_err_set(err, LB_E_INPUT, "%s: %s has \"%s\" but no rope_type", name, field, k);
    }
    const char *type = t ? json_string_value(t) : "default";
    int rc;
    if (json_object_get(r, "rope_theta") && (rc = get_float(r, "rope_theta", c->rope_theta, &c->rope_theta, name, err))) return rc;
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (default, llama3)", name, field, type);
    c->rope_llama3 = 1;
    static const char *need[] = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    for (int i = 0; i < 4; i++) /* required by transformers too: no silent defaults */
        if (!json_object_get(r, need[i]))
            return lb_err_set(err, LB_E_INPUT, "%s: %s: llama3 scaling needs \"%s\"", name, field, need[i]);
    if ((rc = get_float(r, "factor", 8.0f, &c->rope_factor, name, err)) ||
        (rc = get_float(r, "low_freq_factor", 1.0f, &c->rope_low_freq_factor, name, err)) ||
        (rc = get_float(r, "high_freq_factor", 4.0f, &c->rope_high_freq_factor, name, err)) ||
        (rc = get_int(r, "original_max_position_embeddings", 8192, 0, &c->rope_orig_max_pos, name, err)))
        return rc;
    if (c->rope_factor <= 0 || c->rope_low_freq_factor <= 0 || c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_orig_max_pos <= 0)
        return lb_err_set(err, LB_E_INPUT,
                          "%s: %s: llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0",
                          name, field);
    return 0;
}

int lb_model_config_parse(struct lb_model_config *c, const char *buf, size_t n, const char *name, struct lb_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *o = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;
    if (!o || !json_is_object(o)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: not a JSON object (%s, line %d)", name, o ? "top level" : je.text, je.line);
        goto done;
    }
    json_t *archs = json_object_get(o, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) != 1 || !json_is_string(json_array_get(archs, 0))) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: field \"architectures\" must be a list of one name", name);
        goto done;
    }
    const char *arch = json_string_value(json_array_get(archs, 0));
    snprintf(c->arch_name, sizeof c->arch_name, "%s", arch);
    if (!strcmp(arch, "LlamaForCausalLM")) c->arch = LB_ARCH_LLAMA;
    else if (!strcmp(arch, "MistralForCausalLM")) c->arch = LB_ARCH_MISTRAL;
    else if (!strcmp(arch, "Qwen2ForCausalLM")) c->arch = LB_ARCH_QWEN2;
    else if (!strcmp(arch, "Qwen3ForCausalLM")) c->arch = LB_ARCH_QWEN3;
    else {
        rc = lb_err_set(err, LB_E_UNSUPPORTED,
                        "%s: architecture \"%s\" is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
                        name, arch);
        goto done;
    }
    if ((rc = get_int(o, "hidden_size", 0, 1, &c->n_hidden, name, err)) ||
        (rc = get_int(o, "num_hidden_layers", 0, 1, &c->n_layer, name, err)) ||
        (rc = get_int(o, "intermediate_size", 0, 1, &c->n_ff, name, err)) ||
        (rc = get_int(o, "num_attention_heads", 0, 1, &c->n_head, name, err)) ||
        (rc = get_int(o, "num_key_value_heads", c->n_head, 0, &c->n_kv_head, name, err)) ||
        (rc = get_int(o, "vocab_size", 0, 1, &c->n_vocab, name, err)) ||
        (rc = get_int(o, "max_position_embeddings", 2048, 0, &c->max_pos, name, err)) ||
        (rc = get_float(o, "rms_norm_eps", 1e-6f, &c->rms_eps, name, err)) ||
        (rc = get_float(o, "rope_theta", 10000.0f, &c->rope_theta, name, err)) ||
        (rc = get_bool(o, "tie_word_embeddings", 0, &c->tie_embed, name, err)))
        goto done;
    if (c->n_hidden <= 0 || c->n_layer <= 0 || c->n_ff <= 0 || c->n_head <= 0 || c->n_kv_head <= 0 || c->n_vocab <= 0) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: sizes must be positive (hidden_size, num_hidden_layers, intermediate_size, heads, vocab_size)", name);
        goto done;
    }
    if (c->n_layer > LB_MODEL_MAX_LAYERS) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: num_hidden_layers %d is implausible (at most %d)", name, c->n_layer, LB_MODEL_MAX_LAYERS);
        goto done;
    }
    if (c->n_head % c->n_kv_head) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", name, c->n_head, c->n_kv_head);
        goto done;
    }
    int hd_default = c->n_hidden / c->n_head;
    if ((rc = get_int(o, "head_dim", hd_default, 0, &c->head_dim, name, err))) goto done;
    if (c->head_dim <= 0 || c->head_dim % 2 || c->head_dim > 512) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: head_dim %d not supported (even, 2..512)", name, c->head_dim);
        goto done;
    }
    /* RoPE: 4.x rope_scaling, 5.x rope_parameters */
    if ((rc = parse_rope(json_object_get(o, "rope_scaling"), c, name, "rope_scaling", err)) ||
        (rc = parse_rope(json_object_get(o, "rope_parameters"), c, name, "rope_parameters", err)))
        goto done;
    float prf = 1.0f;
    if ((rc = get_float(o, "partial_rotary_factor", 1.0f, &prf, name, err))) goto done;
    if (prf != 1.0f) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: partial_rotary_factor %g is not supported", name, prf); goto done; }
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: rope_theta %g must be a positive number", name, c->rope_theta);
        goto done;
    }
    if (!(c->rms_eps >= 0) || !isfinite(c->rms_eps)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: rms_norm_eps %g must be a non-negative number", name, c->rms_eps);
        goto done;
    }
    json_t *act = json_object_get(o, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: hidden_act %s is not supported (silu)", name, json_is_string(act) ? json_string_value(act) : "(not a string)");
        goto done;
    }
    int b = 0;
    if ((rc = get_bool(o, "attention_bias", 0, &b, name, err))) goto done;
    if (b && c->arch != LB_ARCH_QWEN2) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: attention_bias true is not supported for %s", name, arch); goto done; }
    if ((rc = get_bool(o, "mlp_bias", 0, &b, name, err))) goto done;
    if (b) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: mlp_bias true is not supported", name); goto done; }
    if (json_object_get(o, "quantization_config")) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: quantized checkpoints (quantization_config) are not supported", name); goto done; }
    int use_sw = c->arch == LB_ARCH_MISTRAL;
    if (c->arch != LB_ARCH_MISTRAL && c->arch != LB_ARCH_LLAMA && (rc = get_bool(o, "use_sliding_window", 0, &use_sw, name, err))) goto done;
    json_t *sw = json_object_get(o, "sliding_window");
    if (use_sw && sw && !json_is_null(sw)) {
        if (!json_is_integer(sw) || json_integer_value(sw) < c->max_pos) {
            if (json_is_integer(sw))
                rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: sliding_window attention (sliding_window %lld < max_position_embeddings %d) is not supported",
                                name, (long long)json_integer_value(sw), c->max_pos);
            else
                rc = lb_err_set(err, LB_E_INPUT, "%s: field \"sliding_window\" must be an integer or null", name);
            goto done;
        }
    }
    json_t *lt = json_object_get(o, "layer_types");
    if (json_is_array(lt)) {
        size_t i;
        json_t *x;
        json_array_foreach(lt, i, x)
            if (!json_is_string(x) || strcmp(json_string_value(x), "full_attention")) {
                rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: layer_types[%zu] is not \"full_attention\"", name, i);
                goto done;
            }
    }
    c->qkv_bias = c->arch == LB_ARCH_QWEN2;
    c->qk_norm = c->arch == LB_ARCH_QWEN3;
    json_t *dt = json_object_get(o, "dtype");
    if (!dt || json_is_null(dt)) dt = json_object_get(o, "torch_dtype");
    c->dtype = LB_BF16;
    if (json_is_string(dt)) {
        const char *s = json_string_value(dt);
        if (!strcmp(s, "bfloat16")) c->dtype = LB_BF16;
        else if (!strcmp(s, "float16")) c->dtype = LB_F16;
        else if (!strcmp(s, "float32")) c->dtype = LB_F32;
        else { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: dtype \"%s\" is not supported (bfloat16, float16, float32)", name, s); goto done; }
    }
    c->bos_id = -1;
    json_t *bos = json_object_get(o, "bos_token_id");
    if (json_is_integer(bos)) c->bos_id = (int)json_integer_value(bos);
    if ((rc = parse_eos(json_object_get(o, "eos_token_id"), c, name, "eos_token_id", err))) goto done;
done:
    json_decref(o);
    return rc;
}

int lb_model_genconfig_parse(struct lb_model_config *c, const char *buf, size_t n, const char *name, struct lb_err *err)
{
    json_error_t je;
    json_t *o = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return lb_err_set(err, LB_E_INPUT, "%s: not a JSON object (%s, line %d)", name, o ? "top level" : je.text, je.line);
    }
    int rc = parse_eos(json_object_get(o, "eos_token_id"), c, name, "eos_token_id", err);
    json_t *bos = json_object_get(o, "bos_token_id");
    if (!rc && json_is_integer(bos)) c->bos_id = (int)json_integer_value(bos);
    json_decref(o);
    return rc;
}

void lb_model_target_dims(const struct lb_model_config *c, enum lb_target t, int *n_in, int *n_out)
{
    int q = c->n_head * c->head_dim, kv = c->n_kv_head * c->head_dim;
    switch (t) {
    case LB_T_Q: *n_in = c->n_hidden; *n_out = q; break;
    case LB_T_K: case LB_T_V: *n_in = c->n_hidden; *n_out = kv; break;
    case LB_T_O: *n_in = q; *n_out = c->n_hidden; break;
    case LB_T_GATE: case LB_T_UP: *n_in = c->n_hidden; *n_out = c->n_ff; break;
    case LB_T_DOWN: *n_in = c->n_ff; *n_out = c->n_hidden; break;
    default: *n_in = *n_out = 0;
    }
}

/* ---------------------------------------------------------------- weights */

struct want { const struct lb_tensor **slot; char name[160]; int64_t d0, d1; };

static int check_tensor(const struct lb_model *m, const char *name, int64_t d0, int64_t d1, const struct lb_tensor **out,
                        struct lb_err *err)
{
    const struct lb_tensor *t = lb_st_set_find(&m->st, name);
    if (!t) return lb_err_set(err, LB_E_INPUT, "%s: tensor \"%s\" is missing from the checkpoint", m->dir, name);
    if (t->dtype != LB_BF16 && t->dtype != LB_F16 && t->dtype != LB_F32)
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s (BF16, F16, F32 supported)", m->dir, name, lb_dtype_name(t->dtype));
    int nd = d1 < 0 ? 1 : 2;
    if (t->n_dim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[96] = "";
        int p = 0;
        for (int i = 0; i < t->n_dim && p < 80; i++) p += snprintf(got + p, sizeof got - (size_t)p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (nd == 2)
            return lb_err_set(err, LB_E_INPUT, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld, %lld]", m->dir, name, got,
                              (long long)d0, (long long)d1);
        return lb_err_set(err, LB_E_INPUT, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld]", m->dir, name, got, (long long)d0);
    }
    *out = t;
    return 0;
}

/* NaN/Inf scan: exponent all ones. Split over two threads for big checkpoints. */
struct scan_job { const struct lb_tensor **ts; int n, bad; };

static int tensor_has_nonfinite(const struct lb_tensor *t)
{
    /* memcpy loads: tensor data need not be aligned (see lb_tensor_get_f32) */
    const unsigned char *p = t->data;
    if (t->dtype == LB_F32) {
        uint32_t acc = 0, u;
        for (int64_t i = 0; i < t->n_elem; i++) { memcpy(&u, p + 4 * i, 4); acc |= ((u & 0x7f800000u) == 0x7f800000u); }
        return acc != 0;
    }
    uint16_t mask = t->dtype == LB_BF16 ? 0x7f80u : 0x7c00u, h;
    unsigned acc = 0;
    for (int64_t i = 0; i < t->n_elem; i++) { memcpy(&h, p + 2 * i, 2); acc |= ((h & mask) == mask); }
    return acc != 0;
}

static void *scan_thread(void *arg)
{
    struct scan_job *j = arg;
    for (int i = 0; i < j->n; i++)
        if (tensor_has_nonfinite(j->ts[i])) { j->bad = i; return NULL; }
    j->bad = -1;
    return NULL;
}

void lb_model_free(struct lb_model *m)
{
    if (!m) return;
    lb_st_set_free(&m->st);
    free(m->layers);
    free(m->dir);
    memset(m, 0, sizeof *m);
}

int lb_model_open(struct lb_model *m, const char *dir, struct lb_err *err)
{
    memset(m, 0, sizeof *m);
    m->dir = strdup(dir);
    char *p = NULL, *buf = NULL;
    size_t n = 0;
    const struct lb_tensor **used = NULL;
    int n_used = 0, rc = 0;
    if (!lb_dir_exists(dir)) { rc = lb_err_set(err, LB_E_INPUT, "model folder %s does not exist", dir); goto done; }
    p = lb_path_join(dir, "config.json");
    /* lb_file_read on a folder sees a size of 2^63-1 (ext4) and asks malloc for it */
    if (lb_dir_exists(p)) { rc = lb_err_set(err, LB_E_INPUT, "%s is a folder, not a file", p); goto done; }
    if ((rc = lb_file_read(p, &buf, &n, err))) goto done;
    if ((rc = lb_model_config_parse(&m->cfg, buf, n, p, err))) goto done;
    free(p); free(buf); buf = NULL;
    p = lb_path_join(dir, "generation_config.json");
    if (lb_file_exists(p)) {
        if ((rc = lb_file_read(p, &buf, &n, err))) goto done;
        if ((rc = lb_model_genconfig_parse(&m->cfg, buf, n, p, err))) goto done;
    }
    if ((rc = lb_st_set_open(&m->st, dir, err))) goto done;
    const struct lb_model_config *c = &m->cfg;
    int64_t H = c->n_hidden, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_kv_head * c->head_dim, F = c->n_ff;
    size_t cap = 8 + (size_t)c->n_layer * 16;
    used = calloc(cap, sizeof *used);
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!used || !m->layers) { rc = lb_err_set(err, LB_E_OOM, "out of memory"); goto done; }
#define NEED(ptr, nm, a, b_)                                                         \
    do {                                                                             \
        if ((rc = check_tensor(m, nm, a, b_, &(ptr), err))) goto done;               \
        used[n_used++] = (ptr);                                                      \
    } while (0)
    char nm[160];
    NEED(m->embed, "model.embed_tokens.weight", c->n_vocab, H);
    NEED(m->norm, "model.norm.weight", H, -1);
    if (c->tie_embed) {
        m->lm_head = m->embed;
        if (lb_st_set_find(&m->st, "lm_head.weight")) {
            NEED(m->lm_head, "lm_head.weight", c->n_vocab, H); /* some tied checkpoints still store it */
        }
    } else {
        NEED(m->lm_head, "lm_head.weight", c->n_vocab, H);
    }
    for (int l = 0; l < c->n_layer; l++) {
        struct lb_layer_weights *L = &m->layers[l];
#define LW(ptr, suffix, a, b_) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); NEED(ptr, nm, a, b_); } while (0)
        LW(L->attn_norm, "input_layernorm.weight", H, -1);
        LW(L->ffn_norm, "post_attention_layernorm.weight", H, -1);
        LW(L->wq, "self_attn.q_proj.weight", Q, H);
        LW(L->wk, "self_attn.k_proj.weight", KV, H);
        LW(L->wv, "self_attn.v_proj.weight", KV, H);
        LW(L->wo, "self_attn.o_proj.weight", H, Q);
        if (c->qkv_bias) {
            LW(L->bq, "self_attn.q_proj.bias", Q, -1);
            LW(L->bk, "self_attn.k_proj.bias", KV, -1);
            LW(L->bv, "self_attn.v_proj.bias", KV, -1);
        }
        if (c->qk_norm) {
            LW(L->q_norm, "self_attn.q_norm.weight", c->head_dim, -1);
            LW(L->k_norm, "self_attn.k_norm.weight", c->head_dim, -1);
        }
        LW(L->w_gate, "mlp.gate_proj.weight", F, H);
        LW(L->w_up, "mlp.up_proj.weight", F, H);
        LW(L->w_down, "mlp.down_proj.weight", H, F);
#undef LW
    }
#undef NEED
    /* every tensor in the checkpoint must be one we use */
    for (int f = 0; f < m->st.n_file; f++)
        for (int i = 0; i < m->st.files[f].n_tensor; i++) {
            const struct lb_tensor *t = &m->st.files[f].tensors[i];
            int found = 0;
            for (int k = 0; k < n_used && !found; k++) found = used[k] == t;
            if (!found && !strstr(t->name, "rotary_emb.inv_freq")) {
                rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: tensor \"%s\" is not used by %s as configured (unsupported feature?)", dir,
                                t->name, c->arch_name);
                goto done;
            }
        }
    /* NaN / Inf scan over two threads */
    struct scan_job jobs[2] = {{used, n_used / 2, -1}, {used + n_used / 2, n_used - n_used / 2, -1}};
    pthread_t th;
    int threaded = pthread_create(&th, NULL, scan_thread, &jobs[1]) == 0;
    scan_thread(&jobs[0]);
    if (threaded) pthread_join(th, NULL); else scan_thread(&jobs[1]);
    for (int j = 0; j < 2; j++)
        if (jobs[j].bad >= 0) {
            rc = lb_err_set(err, LB_E_CORRUPT, "%s: tensor \"%s\" holds NaN or Inf values", dir, jobs[j].ts[jobs[j].bad]->name);
            goto done;
        }
done:
    free(used);
    free(p);
    free(buf);
    if (rc) lb_model_free(m);
    return rc;
}
