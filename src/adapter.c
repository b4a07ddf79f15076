/* adapter.c — Hugging Face PEFT LoRA adapters (see adapter.h).
 *
 * Which modules an adapter targets follows PEFT: a target_modules list matches a module
 * name that equals an entry or ends with "." + entry; a single string is a regex that must
 * match the whole module name (PCRE2, anchored at both ends, like Python's re.fullmatch).
 * rank_pattern / alpha_pattern keys match like PEFT's get_pattern_key: the first key K
 * (in file order) for which "(.*\.)?(K)$" matches from the start of the module name.
 * exclude_modules (list or regex, same matching) removes modules from the targets.
 * scale = alpha / r, or alpha / sqrt(r) with use_rslora.
 * fan_in_fan_out only changes the math for GPT-2 style Conv1D layers; the targets here
 * are nn.Linear, for which PEFT itself resets it to false, so it is accepted and has no
 * effect (as in PEFT). Every tensor in the file must belong to a targeted module and have
 * the shape the base model implies; anything else is refused with its name and shapes. */
#include "adapter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "torchbin.h"
#include "util.h"

/* r above this is no low-rank adapter; the bound also keeps (int) conversions exact. */
#define LB_ADAPTER_MAX_RANK 65536

/* 1 if the regex matches name (anchored per flags), 0 if not, negative on a bad regex. */
static int regex_match(const char *re, int whole, const char *name, char *why, size_t why_n)
{
    int ec;
    PCRE2_SIZE eo;
    char *pat = whole ? lb_strfmt("(?:%s)", re) : lb_strfmt("(.*\\.)?(%s)$", re);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                     PCRE2_ANCHORED | (whole ? PCRE2_ENDANCHORED : 0), &ec, &eo, NULL);
    free(pat);
    if (!code) {
        PCRE2_UCHAR buf[128];
        pcre2_get_error_message(ec, buf, sizeof buf);
        snprintf(why, why_n, "%s at offset %zu", (char *)buf, (size_t)eo);
        return -1;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    int rc = pcre2_match(code, (PCRE2_SPTR)name, strlen(name), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    snprintf(why, why_n, "match error %d", rc);
    return -1;
}

static int ends_with_module(const char *name, const char *target)
{
    size_t n = strlen(name), t = strlen(target);
    if (n == t) return !strcmp(name, target);
    return n > t && name[n - t - 1] == '.' && !strcmp(name + n - t, target);
}

/* Does target_modules select `name`? <0 on bad regex (message in why). */
static int targets_module(json_t *tm, const char *name, char *why, size_t why_n)
{
    if (json_is_string(tm)) return regex_match(json_string_value(tm), 1, name, why, why_n);
    size_t i;
    json_t *x;
    json_array_foreach(tm, i, x)
        if (json_is_string(x) && ends_with_module(name, json_string_value(x))) return 1;
    return 0;
}

/* Look up a per-module override; returns the JSON value or NULL. */
static json_t *pattern_lookup(json_t *pat, const char *name, char *why, size_t why_n, int *bad)
{
    if (!json_is_object(pat)) return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(pat, k, v) {
        int m = regex_match(k, 0, name, why, why_n);
        if (m < 0) {
            char *w = lb_strfmt("key \"%s\": %s", k, why);
            if (w) { snprintf(why, why_n, "%s", w); free(w); }
            *bad = 1;
            return NULL;
        }
        if (m) return v;
    }
    return NULL;
}

static void module_name(char *out, size_t n, int layer, enum lb_target t)
{
    snprintf(out, n, "model.layers.%d.%s.%s", layer, t <= LB_T_O ? "self_attn" : "mlp", lb_target_name(t));
}

void lb_adapter_free(struct lb_adapter *a)
{
    if (!a) return;
    free(a->name);
    free(a->dir);
    free(a->mods);
    lb_st_free(&a->st);
    free(a->owned_data);
    memset(a, 0, sizeof *a);
}

void lb_adapter_prefetch(const struct lb_adapter *a)
{
    if (a && a->st.map && a->st.map_bytes) (void)madvise(a->st.map, a->st.map_bytes, MADV_WILLNEED);
}

/* 1 if any element is NaN or Inf (exponent all ones); memcpy loads, data may be unaligned. */
static int has_nonfinite(const struct lb_tensor *t)
{
    const unsigned char *p = t->data;
    unsigned acc = 0;
    if (t->dtype == LB_F32) {
        uint32_t u;
        for (int64_t i = 0; i < t->n_elem; i++) { memcpy(&u, p + 4 * i, 4); acc |= (u & 0x7f800000u) == 0x7f800000u; }
    } else {
        uint16_t h, mask = t->dtype == LB_BF16 ? 0x7f80u : 0x7c00u;
        for (int64_t i = 0; i < t->n_elem; i++) { memcpy(&h, p + 2 * i, 2); acc |= (h & mask) == mask; }
    }
    return acc != 0;
}

/* "[d0, d1, ...]" into buf[n], truncated to fit (snprintf's return value can exceed n: never
 * index or size with it unchecked). */
static void shape_str(const struct lb_tensor *t, char *buf, size_t n)
{
    size_t p = 0;
    buf[0] = 0;
    for (int i = 0; i <= t->n_dim && p < n; i++) {
        int w = i < t->n_dim ? snprintf(buf + p, n - p, "%s%lld", i ? ", " : "[", (long long)t->shape[i])
                             : snprintf(buf + p, n - p, "%s]", t->n_dim ? "" : "[");
        if (w < 0) break;
        p += (size_t)w;
    }
}

int lb_adapter_open(struct lb_adapter *a, const char *name, const char *dir, const struct lb_model *m, struct lb_err *err)
{
    memset(a, 0, sizeof *a);
    a->name = strdup(name);
    a->dir = strdup(dir);
    const struct lb_model_config *c = &m->cfg;
    a->n_layer = c->n_layer;
    a->mods = calloc((size_t)c->n_layer * LB_T_COUNT, sizeof *a->mods);
    char *cfg_path = lb_path_join(dir, "adapter_config.json");
    char *st_path = lb_path_join(dir, "adapter_model.safetensors");
    char *bin_path = lb_path_join(dir, "adapter_model.bin");
    char *buf = NULL;
    size_t n = 0;
    json_t *o = NULL;
    unsigned char *used = NULL;
    char why[256] = "";
    int rc = 0;
    if (!lb_dir_exists(dir)) { rc = lb_err_set(err, LB_E_INPUT, "adapter \"%s\": folder %s does not exist", name, dir); goto done; }
    /* lb_file_read on a folder sees a size of 2^63-1 (ext4) and asks malloc for it */
    if (lb_dir_exists(cfg_path)) { rc = lb_err_set(err, LB_E_INPUT, "%s is a folder, not a file", cfg_path); goto done; }
    if ((rc = lb_file_read(cfg_path, &buf, &n, err))) goto done;
    json_error_t je;
    o = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) { rc = lb_err_set(err, LB_E_INPUT, "%s: not a JSON object (%s, line %d)", cfg_path, je.text, je.line); goto done; }
    json_t *pt = json_object_get(o, "peft_type");
    if (pt && (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: peft_type %s is not supported (LORA)", cfg_path, json_is_string(pt) ? json_string_value(pt) : "?");
        goto done;
    }
    json_t *x = json_object_get(o, "use_dora");
    if (json_is_true(x)) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: use_dora (DoRA) is not supported", cfg_path); goto done; }
    x = json_object_get(o, "modules_to_save");
    if (x && !json_is_null(x) && !(json_is_array(x) && json_array_size(x) == 0)) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: modules_to_save is not supported", cfg_path);
        goto done;
    }
    x = json_object_get(o, "bias");
    if (x && !json_is_null(x) && (!json_is_string(x) || strcmp(json_string_value(x), "none"))) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: bias \"%s\" is not supported (none)", cfg_path, json_is_string(x) ? json_string_value(x) : "?");
        goto done;
    }
    /* PEFT fields that change inference when set; initialisation-only ones (corda, eva,
     * loftq, lora_ga configs, init_lora_weights) and training-only ones are ignored. */
    static const char *const refused[] = {"alora_invocation_tokens", "layer_replication", "target_parameters",
                                          "trainable_token_indices", "arrow_config", "kasa_config", "monteclora_config",
                                          "velora_config", "use_bdlora", "megatron_config"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *f = json_object_get(o, refused[i]);
        int set = f && !json_is_null(f) && !json_is_false(f) && !(json_is_array(f) && !json_array_size(f)) &&
                  !(json_is_object(f) && !json_object_size(f));
        if (set) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: %s is set: not supported", cfg_path, refused[i]); goto done; }
    }
    json_t *excl = json_object_get(o, "exclude_modules");
    if (excl && !json_is_null(excl) && !json_is_string(excl) && !json_is_array(excl)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: field \"exclude_modules\" must be a list of names or a regex string", cfg_path);
        goto done;
    }
    x = json_object_get(o, "use_qalora");
    if (json_is_true(x)) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: use_qalora is not supported", cfg_path); goto done; }
    x = json_object_get(o, "lora_bias");
    if (json_is_true(x)) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: lora_bias is not supported", cfg_path); goto done; }
    json_t *jr = json_object_get(o, "r");
    if (!json_is_integer(jr) || json_integer_value(jr) <= 0 || json_integer_value(jr) > LB_ADAPTER_MAX_RANK) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: field \"r\" must be a positive integer (at most %d)", cfg_path, LB_ADAPTER_MAX_RANK);
        goto done;
    }
    int r_def = (int)json_integer_value(jr);
    json_t *ja = json_object_get(o, "lora_alpha");
    double alpha_def = 8;
    if (ja && !json_is_null(ja)) {
        if (!json_is_number(ja)) { rc = lb_err_set(err, LB_E_INPUT, "%s: field \"lora_alpha\" must be a number", cfg_path); goto done; }
        alpha_def = json_number_value(ja);
    }
    int rslora = json_is_true(json_object_get(o, "use_rslora"));
    json_t *tm = json_object_get(o, "target_modules");
    if (!json_is_string(tm) && !json_is_array(tm)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: field \"target_modules\" must be a list of names or a regex string", cfg_path);
        goto done;
    }
    /* embedding / lm_head targets are refused by name */
    const char *other[] = {"model.embed_tokens", "lm_head"};
    for (int i = 0; i < 2; i++) {
        int t = targets_module(tm, other[i], why, sizeof why);
        if (t < 0) { rc = lb_err_set(err, LB_E_INPUT, "%s: target_modules regex: %s", cfg_path, why); goto done; }
        if (t) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s: target_modules selects %s: embedding and lm_head targets are not supported", cfg_path, other[i]); goto done; }
    }
    json_t *ltt = json_object_get(o, "layers_to_transform");
    if (ltt && !json_is_null(ltt) && !json_is_integer(ltt) && !json_is_array(ltt)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: field \"layers_to_transform\" must be an integer or a list", cfg_path);
        goto done;
    }
    /* PEFT's LoraConfig refuses this pair, and its matcher would ignore layers_to_transform */
    if (ltt && !json_is_null(ltt) && json_is_string(tm)) {
        rc = lb_err_set(err, LB_E_INPUT, "%s: layers_to_transform cannot be used with a regex target_modules (PEFT refuses it too)", cfg_path);
        goto done;
    }
    json_t *rp = json_object_get(o, "rank_pattern"), *ap = json_object_get(o, "alpha_pattern");
    int n_targeted = 0;
    for (int l = 0; l < c->n_layer; l++) {
        int layer_ok = 1;
        if (json_is_integer(ltt)) layer_ok = json_integer_value(ltt) == l;
        else if (json_is_array(ltt)) {
            layer_ok = 0;
            size_t i;
            json_t *v;
            json_array_foreach(ltt, i, v) if (json_is_integer(v) && json_integer_value(v) == l) layer_ok = 1;
        }
        if (!layer_ok) continue;
        for (int t = 0; t < LB_T_COUNT; t++) {
            char mn[128];
            module_name(mn, sizeof mn, l, (enum lb_target)t);
            int sel = targets_module(tm, mn, why, sizeof why);
            if (sel < 0) { rc = lb_err_set(err, LB_E_INPUT, "%s: target_modules regex: %s", cfg_path, why); goto done; }
            if (sel && excl && !json_is_null(excl)) {
                int ex = targets_module(excl, mn, why, sizeof why);
                if (ex < 0) { rc = lb_err_set(err, LB_E_INPUT, "%s: exclude_modules regex: %s", cfg_path, why); goto done; }
                if (ex) sel = 0;
            }
            if (!sel) continue;
            struct lb_adapter_module *md = &a->mods[l * LB_T_COUNT + t];
            int bad = 0;
            json_t *rv = pattern_lookup(rp, mn, why, sizeof why, &bad);
            if (bad) { rc = lb_err_set(err, LB_E_INPUT, "%s: rank_pattern %s", cfg_path, why); goto done; }
            json_t *av = pattern_lookup(ap, mn, why, sizeof why, &bad);
            if (bad) { rc = lb_err_set(err, LB_E_INPUT, "%s: alpha_pattern %s", cfg_path, why); goto done; }
            if (rv && (!json_is_integer(rv) || json_integer_value(rv) <= 0 || json_integer_value(rv) > LB_ADAPTER_MAX_RANK)) {
                rc = lb_err_set(err, LB_E_INPUT, "%s: rank_pattern value for %s must be a positive integer (at most %d)", cfg_path, mn, LB_ADAPTER_MAX_RANK);
                goto done;
            }
            if (av && !json_is_number(av)) { rc = lb_err_set(err, LB_E_INPUT, "%s: alpha_pattern value for %s must be a number", cfg_path, mn); goto done; }
            md->rank = rv ? (int)json_integer_value(rv) : r_def;
            md->alpha = (float)(av ? json_number_value(av) : alpha_def);
            md->scale = (float)(rslora ? md->alpha / sqrt((double)md->rank) : (double)md->alpha / md->rank);
            n_targeted++;
        }
    }
    if (!n_targeted) { rc = lb_err_set(err, LB_E_INPUT, "%s: target_modules selects none of the base model's q/k/v/o/gate/up/down projections", cfg_path); goto done; }
    /* tensors */
    if (lb_file_exists(st_path)) rc = lb_st_open(&a->st, st_path, err);
    else if (lb_file_exists(bin_path)) rc = lb_torchbin_open(&a->st, bin_path, err);
    else rc = lb_err_set(err, LB_E_INPUT, "adapter \"%s\": %s has neither adapter_model.safetensors nor adapter_model.bin", name, dir);
    if (rc) goto done;
    used = calloc((size_t)a->st.n_tensor + 1, 1);
    for (int l = 0; l < c->n_layer; l++)
        for (int t = 0; t < LB_T_COUNT; t++) {
            struct lb_adapter_module *md = &a->mods[l * LB_T_COUNT + t];
            if (!md->rank) continue;
            char mn[128], tn[192];
            module_name(mn, sizeof mn, l, (enum lb_target)t);
            int n_in, n_out;
            lb_model_target_dims(c, (enum lb_target)t, &n_in, &n_out);
            for (int ab = 0; ab < 2; ab++) {
                snprintf(tn, sizeof tn, "base_model.model.%s.lora_%c.weight", mn, ab ? 'B' : 'A');
                const struct lb_tensor *tt = lb_st_find(&a->st, tn);
                if (!tt) {
                    snprintf(tn, sizeof tn, "base_model.model.%s.lora_%c.default.weight", mn, ab ? 'B' : 'A');
                    tt = lb_st_find(&a->st, tn);
                }
                if (!tt) { rc = lb_err_set(err, LB_E_INPUT, "adapter \"%s\": tensor \"base_model.model.%s.lora_%c.weight\" is missing (the config targets %s)", name, mn, ab ? 'B' : 'A', mn); goto done; }
                used[tt - a->st.tensors] = 1;
                int64_t d0 = ab ? n_out : md->rank, d1 = ab ? md->rank : n_in;
                if (tt->n_dim != 2 || tt->shape[0] != d0 || tt->shape[1] != d1) {
                    char got[96];
                    shape_str(tt, got, sizeof got);
                    rc = lb_err_set(err, LB_E_INPUT, "adapter \"%s\": tensor \"%s\" has shape %s but the base model (%s) and r=%d imply [%lld, %lld]: an adapter for another base model?",
                                    name, tn, got, m->dir, md->rank, (long long)d0, (long long)d1);
                    goto done;
                }
                if (tt->dtype != LB_BF16 && tt->dtype != LB_F16 && tt->dtype != LB_F32) {
                    rc = lb_err_set(err, LB_E_UNSUPPORTED, "adapter \"%s\": tensor \"%s\" has dtype %s", name, tn, lb_dtype_name(tt->dtype));
                    goto done;
                }
                if (has_nonfinite(tt)) {
                    rc = lb_err_set(err, LB_E_CORRUPT, "adapter \"%s\": tensor \"%s\" holds NaN or Inf values", name, tn);
                    goto done;
                }
                if (ab) md->b = tt->data; else md->a = tt->data;
                if (ab && tt->dtype != md->dtype) {
                    rc = lb_err_set(err, LB_E_UNSUPPORTED, "adapter \"%s\": %s lora_A and lora_B have different dtypes", name, mn);
                    goto done;
                }
                md->dtype = tt->dtype;
                a->n_params += tt->n_elem;
            }
            if (md->rank > a->max_rank) a->max_rank = md->rank;
        }
    for (int i = 0; i < a->st.n_tensor; i++)
        if (!used[i]) {
            rc = lb_err_set(err, LB_E_INPUT, "adapter \"%s\": tensor \"%s\" does not belong to a module the config targets in this base model (%s)",
                            name, a->st.tensors[i].name, m->dir);
            goto done;
        }
done:
    json_decref(o);
    free(used);
    free(buf);
    free(cfg_path);
    free(st_path);
    free(bin_path);
    if (rc) lb_adapter_free(a);
    return rc;
}
