/* test_model.c — config.json / generation_config.json parsing (4.x and 5.x spellings,
 * each supported architecture, a catalogue of refusals) and lb_model_open on tiny random
 * checkpoints, good and damaged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "t.h"
#include "tmodel.h"

static int parse(struct lb_model_config *c, const char *json, struct lb_err *err)
{
    memset(err, 0, sizeof *err);
    return lb_model_config_parse(c, json, strlen(json), "cfg/config.json", err);
}

/* ---------------------------------------------------------------- config.json */

#define LLAMA31_COMMON                                                                                            \
    "\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":128000," \
    "\"eos_token_id\":[128001,128008,128009],\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,"  \
    "\"intermediate_size\":14336,\"max_position_embeddings\":131072,\"mlp_bias\":false,\"model_type\":\"llama\","       \
    "\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":8,\"pretraining_tp\":1,"               \
    "\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":false,\"use_cache\":true,\"vocab_size\":128256"

static const char *llama31_4x =
    "{" LLAMA31_COMMON ",\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"rope_theta\":500000.0,\"torch_dtype\":\"bfloat16\","
    "\"transformers_version\":\"4.43.0.dev0\"}";
static const char *llama31_5x =
    "{" LLAMA31_COMMON ",\"rope_parameters\":{\"factor\":8.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
    "\"original_max_position_embeddings\":8192,\"rope_theta\":500000.0,\"rope_type\":\"llama3\"},\"dtype\":\"bfloat16\","
    "\"transformers_version\":\"5.0.0\"}";

static void test_llama31_4x_5x(void)
{
    struct lb_model_config a, b;
    struct lb_err err;
    int rc = parse(&a, llama31_4x, &err);
    T_CHECK(rc == 0, "4.x: %d %s", rc, err.msg);
    rc = parse(&b, llama31_5x, &err);
    T_CHECK(rc == 0, "5.x: %d %s", rc, err.msg);
    T_CHECK(a.arch == LB_ARCH_LLAMA && !strcmp(a.arch_name, "LlamaForCausalLM"), "arch");
    T_CHECK(a.n_layer == 32 && a.n_hidden == 4096 && a.n_ff == 14336 && a.n_head == 32 && a.n_kv_head == 8 && a.head_dim == 128 &&
                a.n_vocab == 128256 && a.max_pos == 131072,
            "sizes");
    T_CHECK(a.rope_theta == 500000.0f && a.rope_llama3 && a.rope_factor == 8.0f && a.rope_low_freq_factor == 1.0f &&
                a.rope_high_freq_factor == 4.0f && a.rope_orig_max_pos == 8192,
            "rope: theta %g llama3 %d", a.rope_theta, a.rope_llama3);
    T_CHECK(a.rms_eps == 1e-5f && a.dtype == LB_BF16 && !a.tie_embed && !a.qkv_bias && !a.qk_norm, "misc");
    T_CHECK(a.bos_id == 128000 && a.n_eos == 3 && a.eos_ids[0] == 128001 && a.eos_ids[2] == 128009, "bos/eos");
#define SAME(fld) T_CHECK(a.fld == b.fld, "4.x and 5.x differ in " #fld)
    SAME(arch); SAME(n_layer); SAME(n_hidden); SAME(n_ff); SAME(n_head); SAME(n_kv_head); SAME(head_dim); SAME(n_vocab);
    SAME(max_pos); SAME(rms_eps); SAME(rope_theta); SAME(rope_llama3); SAME(rope_factor); SAME(rope_low_freq_factor);
    SAME(rope_high_freq_factor); SAME(rope_orig_max_pos); SAME(tie_embed); SAME(qkv_bias); SAME(qk_norm); SAME(dtype);
    SAME(bos_id); SAME(n_eos);
#undef SAME
    T_CHECK(!memcmp(a.eos_ids, b.eos_ids, sizeof a.eos_ids) && !strcmp(a.arch_name, b.arch_name), "eos/arch_name differ");
}

static void test_arch_variants(void)
{
    struct lb_model_config c;
    struct lb_err err;
    /* Qwen2.5: q/k/v bias, use_sliding_window false with a sliding_window value, tied */
    int rc = parse(&c, "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":896,\"intermediate_size\":4864,\"num_attention_heads\":14,"
                       "\"num_hidden_layers\":24,\"num_key_value_heads\":2,\"vocab_size\":151936,\"max_position_embeddings\":32768,"
                       "\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"sliding_window\":32768,\"use_sliding_window\":false,"
                       "\"max_window_layers\":21,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"hidden_act\":\"silu\","
                       "\"bos_token_id\":151643,\"eos_token_id\":151643,\"rope_scaling\":null}",
               &err);
    T_CHECK(rc == 0 && c.arch == LB_ARCH_QWEN2 && c.qkv_bias && !c.qk_norm && c.tie_embed && c.head_dim == 64 && c.n_eos == 1 &&
                c.eos_ids[0] == 151643 && c.rope_theta == 1e6f && !c.rope_llama3,
            "qwen2: %d %s", rc, err.msg);
    /* Qwen2 with the sliding window switched on is refused */
    rc = parse(&c, "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,"
                   "\"num_hidden_layers\":2,\"vocab_size\":100,\"max_position_embeddings\":32768,\"sliding_window\":4096,\"use_sliding_window\":true}",
               &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "sliding_window") && strstr(err.msg, "config.json"), "qwen2 sliding: %d %s", rc, err.msg);
    /* Qwen3-0.6B: explicit head_dim 128 != 1024/16, qk norm, 5.x spelling with layer_types */
    rc = parse(&c, "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"head_dim\":128,\"hidden_size\":1024,"
                   "\"intermediate_size\":3072,\"num_attention_heads\":16,\"num_hidden_layers\":2,\"num_key_value_heads\":8,"
                   "\"vocab_size\":151936,\"max_position_embeddings\":40960,\"rms_norm_eps\":1e-06,\"tie_word_embeddings\":true,"
                   "\"rope_parameters\":{\"rope_theta\":1000000,\"rope_type\":\"default\"},\"sliding_window\":null,\"use_sliding_window\":false,"
                   "\"layer_types\":[\"full_attention\",\"full_attention\"],\"dtype\":\"bfloat16\",\"eos_token_id\":151645}",
               &err);
    T_CHECK(rc == 0 && c.arch == LB_ARCH_QWEN3 && c.head_dim == 128 && c.qk_norm && !c.qkv_bias && c.rope_theta == 1e6f,
            "qwen3: %d %s head_dim %d", rc, err.msg, c.head_dim);
    /* Mistral: sliding_window null is fine */
    rc = parse(&c, "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":14336,\"num_attention_heads\":32,"
                   "\"num_hidden_layers\":32,\"num_key_value_heads\":8,\"vocab_size\":32768,\"max_position_embeddings\":32768,"
                   "\"rope_theta\":1000000.0,\"sliding_window\":null,\"torch_dtype\":\"bfloat16\",\"hidden_act\":\"silu\"}",
               &err);
    T_CHECK(rc == 0 && c.arch == LB_ARCH_MISTRAL && c.head_dim == 128, "mistral null window: %d %s", rc, err.msg);
    /* Mistral: a window as long as the context is no window */
    rc = parse(&c, "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,"
                   "\"num_hidden_layers\":2,\"vocab_size\":100,\"max_position_embeddings\":4096,\"sliding_window\":4096}",
               &err);
    T_CHECK(rc == 0, "mistral window == context: %d %s", rc, err.msg);
    /* Mistral v0.1: sliding_window 4096 < 32768 is refused */
    rc = parse(&c, "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,"
                   "\"num_hidden_layers\":2,\"vocab_size\":100,\"max_position_embeddings\":32768,\"sliding_window\":4096}",
               &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "sliding_window") && strstr(err.msg, "4096") && strstr(err.msg, "32768"),
            "mistral window: %d %s", rc, err.msg);
    /* Llama 3.2 1B: tied embeddings, explicit head_dim 64 */
    rc = parse(&c, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":2048,\"intermediate_size\":8192,\"num_attention_heads\":32,"
                   "\"num_hidden_layers\":16,\"num_key_value_heads\":8,\"head_dim\":64,\"vocab_size\":128256,\"tie_word_embeddings\":true,"
                   "\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192,"
                   "\"rope_type\":\"llama3\"},\"rope_theta\":500000.0,\"torch_dtype\":\"bfloat16\"}",
               &err);
    T_CHECK(rc == 0 && c.tie_embed && c.rope_factor == 32.0f && c.head_dim == 64, "llama 3.2: %d %s", rc, err.msg);
    /* Llama 2: no rope_scaling, no num_key_value_heads (defaults to heads), float16 */
    rc = parse(&c, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,\"intermediate_size\":11008,\"num_attention_heads\":32,"
                   "\"num_hidden_layers\":32,\"vocab_size\":32000,\"rope_scaling\":null,\"torch_dtype\":\"float16\",\"eos_token_id\":2}",
               &err);
    T_CHECK(rc == 0 && c.n_kv_head == 32 && c.dtype == LB_F16 && !c.rope_llama3 && c.rope_theta == 10000.0f && c.n_eos == 1,
            "llama 2: %d %s", rc, err.msg);
    /* rope_scaling with rope_type "default" is plain RoPE */
    rc = parse(&c, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,"
                   "\"num_hidden_layers\":2,\"vocab_size\":100,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":20000}}",
               &err);
    T_CHECK(rc == 0 && !c.rope_llama3 && c.rope_theta == 20000.0f, "default rope_parameters: %d %s", rc, err.msg);
}

#define BASE "\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,\"vocab_size\":100"

struct cfg_case { const char *what, *json; int status; const char *m1, *m2; };
static const struct cfg_case cfg_catalogue[] = {
    {"not JSON", "{\"architectures\":", LB_E_INPUT, "cfg/config.json", "not a JSON object"},
    {"JSON array", "[1]", LB_E_INPUT, "cfg/config.json", "not a JSON object"},
    {"no architectures", "{\"hidden_size\":64}", LB_E_INPUT, "cfg/config.json", "\"architectures\""},
    {"two architectures", "{\"architectures\":[\"LlamaForCausalLM\",\"MistralForCausalLM\"],\"hidden_size\":64}", LB_E_INPUT, "cfg/config.json", "\"architectures\""},
    {"unknown architecture", "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":768}", LB_E_UNSUPPORTED, "cfg/config.json", "GPT2LMHeadModel"},
    {"unknown architecture (Gemma)", "{\"architectures\":[\"Gemma2ForCausalLM\"]}", LB_E_UNSUPPORTED, "architecture", "Gemma2ForCausalLM"},
    {"missing hidden_size", "{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,\"vocab_size\":100}",
     LB_E_INPUT, "cfg/config.json", "\"hidden_size\" is missing"},
    {"missing vocab_size", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2}",
     LB_E_INPUT, "cfg/config.json", "\"vocab_size\" is missing"},
    {"hidden_size a string", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"64\",\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,\"vocab_size\":100}",
     LB_E_INPUT, "\"hidden_size\"", "integer"},
    {"negative layers", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":-2,\"vocab_size\":100}",
     LB_E_INPUT, "\"num_hidden_layers\"", "non-negative"},
    {"zero heads", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":0,\"num_hidden_layers\":2,\"vocab_size\":100}",
     LB_E_INPUT, "cfg/config.json", "positive"},
    {"heads not a multiple of kv heads", "{" BASE ",\"num_key_value_heads\":3}", LB_E_INPUT, "num_attention_heads 4", "num_key_value_heads 3"},
    {"odd head_dim", "{" BASE ",\"head_dim\":15}", LB_E_UNSUPPORTED, "cfg/config.json", "head_dim 15"},
    {"rope_type yarn (4.x)", "{" BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}", LB_E_UNSUPPORTED, "rope_scaling.rope_type", "yarn"},
    {"rope type linear (old \"type\" key)", "{" BASE ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}", LB_E_UNSUPPORTED, "rope_scaling.rope_type", "linear"},
    {"rope_type dynamic (5.x)", "{" BASE ",\"rope_parameters\":{\"rope_type\":\"dynamic\",\"factor\":2.0,\"rope_theta\":10000}}", LB_E_UNSUPPORTED, "rope_parameters.rope_type", "dynamic"},
    {"rope_scaling not an object", "{" BASE ",\"rope_scaling\":\"llama3\"}", LB_E_INPUT, "rope_scaling", "object"},
    {"llama3 high <= low", "{" BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,\"high_freq_factor\":1,\"original_max_position_embeddings\":8192}}", LB_E_INPUT, "rope_scaling", "high_freq_factor"},
    {"llama3 without factor", "{" BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}",
     LB_E_INPUT, "rope_scaling", "\"factor\""},
    {"llama3 without original_max_position_embeddings", "{" BASE ",\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4}}",
     LB_E_INPUT, "rope_parameters", "original_max_position_embeddings"},
    {"llama3 original context 0", "{" BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":0}}",
     LB_E_INPUT, "rope_scaling", "original_max_position_embeddings > 0"},
    {"rope_scaling factor without a type", "{" BASE ",\"rope_scaling\":{\"factor\":2.0}}", LB_E_INPUT, "rope_scaling", "no rope_type"},
    {"rope_type not a string", "{" BASE ",\"rope_scaling\":{\"rope_type\":3,\"factor\":2.0}}", LB_E_INPUT, "rope_scaling.rope_type", "string"},
    {"hidden_act gelu", "{" BASE ",\"hidden_act\":\"gelu\"}", LB_E_UNSUPPORTED, "hidden_act", "gelu"},
    {"attention_bias on Llama", "{" BASE ",\"attention_bias\":true}", LB_E_UNSUPPORTED, "attention_bias", "LlamaForCausalLM"},
    {"mlp_bias", "{" BASE ",\"mlp_bias\":true}", LB_E_UNSUPPORTED, "mlp_bias", "cfg/config.json"},
    {"quantization_config", "{" BASE ",\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4}}", LB_E_UNSUPPORTED, "quantization_config", "cfg/config.json"},
    {"partial_rotary_factor", "{" BASE ",\"partial_rotary_factor\":0.5}", LB_E_UNSUPPORTED, "partial_rotary_factor", "0.5"},
    {"layer_types sliding", "{" BASE ",\"layer_types\":[\"full_attention\",\"sliding_attention\"]}", LB_E_UNSUPPORTED, "layer_types[1]", "full_attention"},
    {"dtype float8", "{" BASE ",\"torch_dtype\":\"float8_e4m3fn\"}", LB_E_UNSUPPORTED, "dtype", "float8_e4m3fn"},
    {"tie_word_embeddings not bool", "{" BASE ",\"tie_word_embeddings\":1}", LB_E_INPUT, "tie_word_embeddings", "true or false"},
    {"rms_norm_eps a string", "{" BASE ",\"rms_norm_eps\":\"1e-5\"}", LB_E_INPUT, "rms_norm_eps", "number"},
    {"rope_theta zero", "{" BASE ",\"rope_theta\":0}", LB_E_INPUT, "rope_theta", "cfg/config.json"},
    {"rope_theta negative (5.x)", "{" BASE ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":-1}}", LB_E_INPUT, "rope_theta", "cfg/config.json"},
    {"rms_norm_eps negative", "{" BASE ",\"rms_norm_eps\":-1e-5}", LB_E_INPUT, "rms_norm_eps", "cfg/config.json"},
    {"absurd layer count", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":1000000000,\"vocab_size\":100}",
     LB_E_INPUT, "num_hidden_layers", "1000000000"},
    {"eos a string", "{" BASE ",\"eos_token_id\":\"</s>\"}", LB_E_INPUT, "eos_token_id", "integer or a list"},
    {"eos list with a string", "{" BASE ",\"eos_token_id\":[2,\"x\"]}", LB_E_INPUT, "eos_token_id\"[1]", "integer"},
    {"duplicate key", "{" BASE ",\"hidden_size\":32}", LB_E_INPUT, "cfg/config.json", "duplicate"},
};

static void test_config_catalogue(void)
{
    for (size_t i = 0; i < sizeof cfg_catalogue / sizeof *cfg_catalogue; i++) {
        const struct cfg_case *k = &cfg_catalogue[i];
        struct lb_model_config c;
        struct lb_err err;
        int rc = parse(&c, k->json, &err);
        T_CHECK(rc == k->status, "%s: status %d (%s) want %d: %s", k->what, rc, lb_status_name(rc), k->status, err.msg);
        T_CHECK(strstr(err.msg, k->m1) && (!k->m2 || strstr(err.msg, k->m2)), "%s: message lacks '%s'/'%s': %s", k->what, k->m1,
                k->m2 ? k->m2 : "", err.msg);
    }
}

static void test_genconfig(void)
{
    struct lb_model_config c;
    struct lb_err err;
    T_CHECK(parse(&c, "{" BASE ",\"bos_token_id\":1,\"eos_token_id\":2}", &err) == 0, "base: %s", err.msg);
    const char *g = "{\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009],\"do_sample\":true,\"temperature\":0.6}";
    int rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == 0 && c.n_eos == 3 && c.eos_ids[0] == 128001 && c.eos_ids[1] == 128008 && c.eos_ids[2] == 128009 && c.bos_id == 128000,
            "eos list: %d %s n_eos %d", rc, err.msg, c.n_eos);
    g = "{\"eos_token_id\":7}";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == 0 && c.n_eos == 1 && c.eos_ids[0] == 7 && c.bos_id == 128000, "eos int replaces the list: %d n_eos %d", rc, c.n_eos);
    g = "{\"temperature\":0.7}";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == 0 && c.n_eos == 1 && c.eos_ids[0] == 7, "no eos keeps the config's: %d n_eos %d", rc, c.n_eos);
    g = "{\"eos_token_id\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "gen.json") && strstr(err.msg, "EOS"), "17 eos: %d %s", rc, err.msg);
    g = "{\"eos_token_id\":{\"a\":1}}";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "gen.json") && strstr(err.msg, "eos_token_id"), "eos object: %d %s", rc, err.msg);
    g = "{\"eos_token_id\":[2,";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "gen.json") && strstr(err.msg, "not a JSON object"), "not JSON: %d %s", rc, err.msg);
    g = "[2]";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "gen.json"), "array: %d %s", rc, err.msg);
    g = "{\"eos_token_id\":-5}";
    rc = lb_model_genconfig_parse(&c, g, strlen(g), "gen.json", &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "gen.json") && strstr(err.msg, "eos_token_id"), "negative eos: %d %s", rc, err.msg);
}

/* ---------------------------------------------------------------- lb_model_open */

static const struct tm_cfg llama = {"LlamaForCausalLM", 32, 2, 4, 2, 8, 48, 64, 0, 1, "BF16"};
static char root[64];

static void subdir(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", root, name); }

static int open_model(const char *dir, struct lb_err *err)
{
    struct lb_model m;
    memset(err, 0, sizeof *err);
    int rc = lb_model_open(&m, dir, err);
    if (!rc) lb_model_free(&m);
    else T_CHECK(m.dir == NULL && m.layers == NULL && m.st.files == NULL, "%s: failed open leaves state", dir);
    return rc;
}

static void test_model_good(void)
{
    char d[128];
    const struct tm_cfg cfgs[] = {
        llama,
        {"LlamaForCausalLM", 32, 2, 4, 2, 8, 48, 64, 1, 1, "F16"}, /* tied, no lm_head */
        {"Qwen2ForCausalLM", 32, 2, 4, 2, 8, 48, 64, 1, 0, "BF16"},
        {"Qwen3ForCausalLM", 32, 2, 4, 2, 16, 48, 64, 0, 0, "F32"}, /* head_dim 16 != 32/4 */
        {"MistralForCausalLM", 32, 2, 4, 4, 8, 48, 64, 0, 0, "BF16"},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
        snprintf(d, sizeof d, "%s/good%zu", root, i);
        T_CHECK(tm_model(d, &cfgs[i], 1 + i) == 0, "write %s", d);
        struct lb_model m;
        struct lb_err err = {0};
        int rc = lb_model_open(&m, d, &err);
        T_CHECK(rc == 0, "%s %s: %d %s", cfgs[i].arch, d, rc, err.msg);
        if (rc) continue;
        T_CHECK(m.cfg.n_layer == 2 && m.layers[1].w_down && m.embed && m.norm && m.lm_head, "%s: tensors bound", cfgs[i].arch);
        T_CHECK(cfgs[i].tie ? m.lm_head == m.embed : m.lm_head != m.embed, "%s: lm_head tie", cfgs[i].arch);
        T_CHECK(!!m.layers[0].bq == !strcmp(cfgs[i].arch, "Qwen2ForCausalLM") && !!m.layers[0].q_norm == !strcmp(cfgs[i].arch, "Qwen3ForCausalLM"),
                "%s: bias/qk-norm slots", cfgs[i].arch);
        T_CHECK(m.layers[0].wq->shape[0] == cfgs[i].NH * cfgs[i].D, "%s: q rows", cfgs[i].arch);
        lb_model_free(&m);
    }
    lb_model_free(NULL);
}

/* edit hooks */
static void drop_tensor(struct tm_file *f, void *ctx) { tm_drop(f, ctx); }
static void add_bias(struct tm_file *f, void *ctx) { (void)ctx; tm_add(f, "model.layers.0.self_attn.o_proj.bias", 32, 0, 0.1f, 0); }
static void add_lm_head(struct tm_file *f, void *ctx) { (void)ctx; tm_add(f, "lm_head.weight", 64, 32, 0.1f, 0); }
static void add_inv_freq(struct tm_file *f, void *ctx) { (void)ctx; tm_add(f, "model.layers.0.self_attn.rotary_emb.inv_freq", 4, 0, 0.1f, 0); }
static void reshape_k(struct tm_file *f, void *ctx)
{
    (void)ctx;
    struct tm_tensor *t = tm_find(f, "model.layers.1.self_attn.k_proj.weight");
    t->shape[0] = 8; /* [16, 32] -> [8, 32]; data keeps the bigger allocation */
}
static void flatten_norm(struct tm_file *f, void *ctx)
{
    (void)ctx;
    struct tm_tensor *t = tm_find(f, "model.norm.weight");
    t->shape[0] = 4; t->shape[1] = 8; t->n_dim = 2; /* [32] -> [4, 8] */
}
static void poke(struct tm_file *f, void *ctx)
{
    float v = *(float *)ctx;
    struct tm_tensor *t = tm_find(f, "model.layers.1.mlp.up_proj.weight");
    t->data[17] = v;
}

static void test_model_catalogue(void)
{
    char d[128], p[256];
    struct lb_err err;
    int rc;
    /* missing folder */
    subdir(d, sizeof d, "nope");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, d) && strstr(err.msg, "does not exist"), "missing folder: %d %s", rc, err.msg);
    /* a file where the folder should be */
    subdir(d, sizeof d, "afile");
    tm_write_text(d, "x");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "afile"), "file as folder: %d %s", rc, err.msg);
    /* missing config.json */
    subdir(d, sizeof d, "nocfg");
    tm_model(d, &llama, 3);
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "config.json") && strstr(err.msg, "cannot open"), "missing config.json: %d %s", rc, err.msg);
    /* config.json is a folder */
    mkdir(p, 0755);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "config.json") && strstr(err.msg, "folder"), "config.json a folder: %d %s", rc, err.msg);
    rmdir(p);
    /* model.safetensors is a folder */
    {
        char d2[128], p2[256];
        subdir(d2, sizeof d2, "stdir");
        tm_model(d2, &llama, 3);
        snprintf(p2, sizeof p2, "%s/model.safetensors", d2);
        unlink(p2);
        mkdir(p2, 0755);
        rc = open_model(d2, &err);
        T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "no model.safetensors"), "model.safetensors a folder: %d %s", rc, err.msg);
    }
    /* bad config.json: the path is in the message */
    tm_write_text(p, "{\"architectures\":[\"GPT2LMHeadModel\"]}");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, p) && strstr(err.msg, "GPT2LMHeadModel"), "unknown arch on disk: %d %s", rc, err.msg);
    /* missing model.safetensors */
    subdir(d, sizeof d, "noweights");
    tm_model(d, &llama, 3);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "model.safetensors") && strstr(err.msg, d), "missing weights: %d %s", rc, err.msg);
    /* truncated model.safetensors */
    subdir(d, sizeof d, "trunc");
    tm_model(d, &llama, 3);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    T_CHECK(truncate(p, 5000) == 0, "truncate");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "model.safetensors") && strstr(err.msg, "truncated"), "truncated weights: %d %s", rc, err.msg);
    /* bad generation_config.json */
    subdir(d, sizeof d, "badgen");
    tm_model(d, &llama, 3);
    snprintf(p, sizeof p, "%s/generation_config.json", d);
    tm_write_text(p, "{\"eos_token_id\":\"x\"}");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "generation_config.json") && strstr(err.msg, "eos_token_id"), "bad genconfig: %d %s", rc, err.msg);
    tm_write_text(p, "{\"eos_token_id\":[2,3]}");
    struct lb_model m;
    rc = lb_model_open(&m, d, &err);
    T_CHECK(rc == 0 && m.cfg.n_eos == 2 && m.cfg.eos_ids[1] == 3, "genconfig eos list: %d %s", rc, err.msg);
    if (!rc) lb_model_free(&m);

    struct { const char *what, *dir; tm_edit_fn edit; void *ctx; int status; const char *m1, *m2, *m3; } cases[] = {
        {"missing tensor", "miss", drop_tensor, "model.layers.1.self_attn.v_proj.weight", LB_E_INPUT, "\"model.layers.1.self_attn.v_proj.weight\"", "missing", NULL},
        {"missing lm_head (untied)", "misslm", drop_tensor, "lm_head.weight", LB_E_INPUT, "\"lm_head.weight\"", "missing", NULL},
        {"missing embed", "missemb", drop_tensor, "model.embed_tokens.weight", LB_E_INPUT, "\"model.embed_tokens.weight\"", "missing", NULL},
        {"wrong shape", "shape", reshape_k, NULL, LB_E_INPUT, "\"model.layers.1.self_attn.k_proj.weight\"", "[8, 32]", "[16, 32]"},
        {"wrong rank", "rank", flatten_norm, NULL, LB_E_INPUT, "\"model.norm.weight\"", "[4, 8]", "[32]"},
        {"unused tensor", "extra", add_bias, NULL, LB_E_UNSUPPORTED, "\"model.layers.0.self_attn.o_proj.bias\"", "not used", "LlamaForCausalLM"},
        {"NaN in a weight", "nan", poke, &(float){NAN}, LB_E_CORRUPT, "\"model.layers.1.mlp.up_proj.weight\"", "NaN or Inf", NULL},
        {"Inf in a weight", "inf", poke, &(float){INFINITY}, LB_E_CORRUPT, "\"model.layers.1.mlp.up_proj.weight\"", "NaN or Inf", NULL},
        {"-Inf in a weight", "ninf", poke, &(float){-INFINITY}, LB_E_CORRUPT, "\"model.layers.1.mlp.up_proj.weight\"", "NaN or Inf", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        subdir(d, sizeof d, cases[i].dir);
        T_CHECK(tm_model_ex(d, &llama, 5, cases[i].edit, cases[i].ctx, 1) == 0, "write %s", d);
        rc = open_model(d, &err);
        T_CHECK(rc == cases[i].status, "%s: status %d (%s) want %d: %s", cases[i].what, rc, lb_status_name(rc), cases[i].status, err.msg);
        T_CHECK(strstr(err.msg, cases[i].m1) && (!cases[i].m2 || strstr(err.msg, cases[i].m2)) && (!cases[i].m3 || strstr(err.msg, cases[i].m3)) &&
                    strstr(err.msg, d),
                "%s: message: %s", cases[i].what, err.msg);
    }
    /* NaN / Inf in each dtype */
    const char *dts[] = {"F32", "F16", "BF16"};
    for (int k = 0; k < 3; k++) {
        struct tm_cfg c = llama;
        c.dtype = dts[k];
        snprintf(d, sizeof d, "%s/nan_%s", root, dts[k]);
        tm_model_ex(d, &c, 6, poke, &(float){NAN}, 1);
        rc = open_model(d, &err);
        T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "up_proj"), "NaN %s: %d %s", dts[k], rc, err.msg);
        /* f16 overflow: 1e5 is Inf in F16 and finite in BF16/F32 */
        snprintf(d, sizeof d, "%s/big_%s", root, dts[k]);
        tm_model_ex(d, &c, 6, poke, &(float){1e5f}, 1);
        rc = open_model(d, &err);
        T_CHECK(k == 1 ? rc == LB_E_CORRUPT : rc == 0, "1e5 in %s: %d %s", dts[k], rc, err.msg);
    }
    /* hand-made checkpoints whose first tensor (the embedding) is odd */
    struct { const char *what, *hdr; size_t data; int status; const char *m1, *m2; } raw[] = {
        {"8-dim embedding (message must not overflow)",
         "{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[0,1000000000000000000,1000000000000000000,1000000000000000000,"
         "1000000000000000000,1000000000000000000,1000000000000000000,1000000000000000000],\"data_offsets\":[0,0]}}",
         0, LB_E_INPUT, "\"model.embed_tokens.weight\"", "[64, 32]"},
        {"I32 embedding", "{\"model.embed_tokens.weight\":{\"dtype\":\"I32\",\"shape\":[64,32],\"data_offsets\":[0,8192]}}", 8192, LB_E_UNSUPPORTED,
         "\"model.embed_tokens.weight\"", "I32"},
        {"U8 embedding", "{\"model.embed_tokens.weight\":{\"dtype\":\"U8\",\"shape\":[64,32],\"data_offsets\":[0,2048]}}", 2048, LB_E_UNSUPPORTED,
         "\"model.embed_tokens.weight\"", "U8"},
        {"transposed embedding", "{\"model.embed_tokens.weight\":{\"dtype\":\"BF16\",\"shape\":[32,64],\"data_offsets\":[0,4096]}}", 4096, LB_E_INPUT,
         "[32, 64]", "[64, 32]"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++) {
        snprintf(d, sizeof d, "%s/raw%zu", root, i);
        tm_model(d, &llama, 12);
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        FILE *fp = fopen(p, "wb");
        uint64_t hl = strlen(raw[i].hdr);
        fwrite(&hl, 8, 1, fp);
        fwrite(raw[i].hdr, 1, hl, fp);
        for (size_t k = 0; k < raw[i].data; k++) fputc(0, fp);
        fclose(fp);
        rc = open_model(d, &err);
        T_CHECK(rc == raw[i].status && strstr(err.msg, raw[i].m1) && strstr(err.msg, raw[i].m2), "%s: %d %s", raw[i].what, rc, err.msg);
    }
    /* Qwen2 without its q/k/v bias */
    struct tm_cfg q2 = {"Qwen2ForCausalLM", 32, 2, 4, 2, 8, 48, 64, 1, 0, "BF16"};
    subdir(d, sizeof d, "q2nobias");
    tm_model_ex(d, &q2, 7, drop_tensor, "model.layers.0.self_attn.k_proj.bias", 1);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"model.layers.0.self_attn.k_proj.bias\""), "qwen2 no bias: %d %s", rc, err.msg);
    /* Qwen3 without q_norm */
    struct tm_cfg q3 = {"Qwen3ForCausalLM", 32, 2, 4, 2, 16, 48, 64, 0, 0, "BF16"};
    subdir(d, sizeof d, "q3nonorm");
    tm_model_ex(d, &q3, 7, drop_tensor, "model.layers.1.self_attn.q_norm.weight", 1);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"model.layers.1.self_attn.q_norm.weight\""), "qwen3 no q_norm: %d %s", rc, err.msg);
    /* config says more layers than the checkpoint holds */
    subdir(d, sizeof d, "morelayers");
    tm_model(d, &llama, 8);
    snprintf(p, sizeof p, "%s/config.json", d);
    tm_write_text(p, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"num_hidden_layers\":3,\"num_attention_heads\":4,"
                     "\"num_key_value_heads\":2,\"head_dim\":8,\"intermediate_size\":48,\"vocab_size\":64}");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"model.layers.2.input_layernorm.weight\"") && strstr(err.msg, "missing"), "3 layers in config, 2 on disk: %d %s", rc,
            err.msg);
    /* config says fewer: the extra layer's tensors are refused as unused */
    tm_write_text(p, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
                     "\"num_key_value_heads\":2,\"head_dim\":8,\"intermediate_size\":48,\"vocab_size\":64}");
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "model.layers.1."), "1 layer in config, 2 on disk: %d %s", rc, err.msg);
}

static void test_model_tied_and_sharded(void)
{
    char d[128];
    struct lb_err err;
    /* tied model that still stores lm_head.weight: accepted and used */
    struct tm_cfg tied = llama;
    tied.tie = 1;
    subdir(d, sizeof d, "tiedlm");
    tm_model_ex(d, &tied, 9, add_lm_head, NULL, 1);
    struct lb_model m;
    int rc = lb_model_open(&m, d, &err);
    T_CHECK(rc == 0 && m.lm_head && m.lm_head != m.embed && !strcmp(m.lm_head->name, "lm_head.weight"), "tied + lm_head: %d %s", rc, err.msg);
    if (!rc) lb_model_free(&m);
    /* rotary_emb.inv_freq buffers in old checkpoints are tolerated */
    subdir(d, sizeof d, "invfreq");
    tm_model_ex(d, &llama, 9, add_inv_freq, NULL, 1);
    rc = open_model(d, &err);
    T_CHECK(rc == 0, "inv_freq: %d %s", rc, err.msg);
    /* sharded: 2 shards + index */
    subdir(d, sizeof d, "sharded");
    T_CHECK(tm_model_ex(d, &llama, 10, NULL, NULL, 2) == 0, "write sharded");
    rc = lb_model_open(&m, d, &err);
    T_CHECK(rc == 0 && m.st.n_file == 2, "sharded: %d %s", rc, err.msg);
    if (!rc) {
        T_CHECK(m.layers[1].w_down && m.layers[0].wq && m.lm_head, "sharded tensors bound");
        lb_model_free(&m);
    }
    /* 3 shards, one tensor missing from both the index and the shards */
    subdir(d, sizeof d, "sharded3");
    tm_model_ex(d, &llama, 10, drop_tensor, "model.layers.0.mlp.gate_proj.weight", 3);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "\"model.layers.0.mlp.gate_proj.weight\""), "sharded missing: %d %s", rc, err.msg);
    /* sharded with NaN: the tensor is named whichever shard it is in */
    subdir(d, sizeof d, "shardednan");
    tm_model_ex(d, &llama, 10, poke, &(float){NAN}, 2);
    rc = open_model(d, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "\"model.layers.1.mlp.up_proj.weight\""), "sharded NaN: %d %s", rc, err.msg);
}

static uint64_t xs(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

/* Seeded byte mutations of config texts: every result is 0 or a negative status with a message. */
static void test_config_mutations(void)
{
    const char *seeds[] = {llama31_4x, llama31_5x};
    static const char tokens[] = "{}[],:\"0123456789-.e tfn\\";
    uint64_t s = 77;
    int n_ok = 0, n_bad = 0, weird = 0;
    for (int it = 0; it < 4000; it++) {
        const char *src = seeds[it & 1];
        size_t n = strlen(src);
        char *m = malloc(n);
        memcpy(m, src, n);
        size_t len = n;
        uint64_t r = xs(&s);
        size_t pos = (size_t)(r >> 8) % n;
        switch (r % 4) {
        case 0: m[pos] = tokens[(r >> 40) % (sizeof tokens - 1)]; break;
        case 1: m[pos] ^= (char)(1 << ((r >> 40) % 8)); break;
        case 2: len = pos; break;
        case 3: m[pos] = tokens[(r >> 40) % (sizeof tokens - 1)]; m[(pos * 13 + 5) % n] = tokens[(r >> 50) % (sizeof tokens - 1)]; break;
        }
        struct lb_model_config c;
        struct lb_err err = {0};
        int rc = lb_model_config_parse(&c, m, len, "mut.json", &err);
        if (rc == 0) n_ok++;
        else if (rc < 0 && rc >= LB_E_DATA && err.status == rc && strstr(err.msg, "mut.json")) n_bad++;
        else { weird++; fprintf(stderr, "  config mutation %d: rc %d msg %s\n", it, rc, err.msg); }
        if (rc == 0) {
            rc = lb_model_genconfig_parse(&c, m, len, "mut.json", &err);
            T_CHECK(rc <= 0, "genconfig rc %d", rc);
        }
        free(m);
    }
    T_CHECK(weird == 0, "%d mutations gave an odd status or a message without the file name", weird);
    printf("     config mutations: %d accepted, %d refused\n", n_ok, n_bad);
}

/* Seeded mutations of a whole tiny checkpoint on disk, through lb_model_open: never a crash. */
static void test_model_mutations(void)
{
    char d[128], p[256];
    subdir(d, sizeof d, "mut");
    tm_model(d, &llama, 11);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    FILE *fp = fopen(p, "rb");
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    unsigned char *good = malloc((size_t)n);
    T_CHECK(fread(good, 1, (size_t)n, fp) == (size_t)n, "read");
    fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | good[i];
    uint64_t s = 99;
    int n_ok = 0, n_bad = 0, weird = 0;
    static const char tokens[] = "{}[],:\"0123456789-";
    for (int it = 0; it < 300; it++) {
        uint64_t r = xs(&s);
        unsigned char *m = malloc((size_t)n);
        memcpy(m, good, (size_t)n);
        long len = n;
        size_t pos = (size_t)((r >> 8) % (8 + hl)); /* mostly the header */
        switch (r % 4) {
        case 0: m[pos] = (unsigned char)tokens[(r >> 40) % (sizeof tokens - 1)]; break;
        case 1: m[pos] ^= (unsigned char)(1 << ((r >> 40) % 8)); break;
        case 2: len = (long)((r >> 8) % (uint64_t)n); break;
        case 3: m[8 + hl + (r >> 20) % ((uint64_t)n - 8 - hl)] = 0xff; m[8 + hl + (r >> 30) % ((uint64_t)n - 8 - hl)] = 0x7f; break; /* data: maybe NaN */
        }
        fp = fopen(p, "wb");
        fwrite(m, 1, (size_t)len, fp);
        fclose(fp);
        free(m);
        struct lb_model mm;
        struct lb_err err = {0};
        int rc = lb_model_open(&mm, d, &err);
        if (rc == 0) { n_ok++; lb_model_free(&mm); }
        else if (rc < 0 && rc >= LB_E_DATA && err.status == rc && err.msg[0]) n_bad++;
        else { weird++; fprintf(stderr, "  model mutation %d: rc %d %s\n", it, rc, err.msg); }
    }
    free(good);
    T_CHECK(weird == 0, "%d odd results", weird);
    printf("     checkpoint mutations: %d accepted, %d refused\n", n_ok, n_bad);
}

int main(void)
{
    T_RUN(test_llama31_4x_5x);
    T_RUN(test_arch_variants);
    T_RUN(test_config_catalogue);
    T_RUN(test_genconfig);
    T_RUN(test_config_mutations);
    if (!tm_tmpdir(root, sizeof root)) { printf("mkdtemp failed\n"); return 1; }
    T_RUN(test_model_good);
    T_RUN(test_model_catalogue);
    T_RUN(test_model_tied_and_sharded);
    T_RUN(test_model_mutations);
    tm_rmtree(root);
    return T_DONE();
}
