/* model.h — a Hugging Face causal-LM checkpoint: config.json, generation_config.json,
 * weights (safetensors, mmapped). Supported: LlamaForCausalLM (Llama 2/3/3.1/3.2 incl.
 * llama3 RoPE scaling, tied embeddings), MistralForCausalLM, Qwen2ForCausalLM (q/k/v
 * bias), Qwen3ForCausalLM (q_norm/k_norm, explicit head_dim). Reads transformers 4.x
 * and 5.x config spellings. Anything else is refused by name. */
#ifndef LB_MODEL_H
#define LB_MODEL_H

#include "safetensors.h"

enum lb_arch { LB_ARCH_LLAMA, LB_ARCH_MISTRAL, LB_ARCH_QWEN2, LB_ARCH_QWEN3 };

#define LB_MAX_EOS 16

struct lb_model_config {
    enum lb_arch arch;
    char arch_name[64];
    int n_layer, n_hidden, n_ff, n_head, n_kv_head, head_dim, n_vocab, max_pos;
    float rms_eps;
    float rope_theta;
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int tie_embed;
    int qkv_bias;   /* Qwen2 */
    int qk_norm;    /* Qwen3 */
    enum lb_dtype dtype;         /* declared dtype (torch_dtype / dtype) */
    int bos_id;                  /* -1 if none */
    int eos_ids[LB_MAX_EOS];     /* from generation_config.json (else config.json) */
    int n_eos;
};

struct lb_layer_weights {  /* borrowed from the lb_st_set */
    const struct lb_tensor *attn_norm, *ffn_norm;
    const struct lb_tensor *wq, *wk, *wv, *wo;       /* [out, in] */
    const struct lb_tensor *bq, *bk, *bv;            /* Qwen2, else NULL */
    const struct lb_tensor *q_norm, *k_norm;         /* Qwen3 [D], else NULL */
    const struct lb_tensor *w_gate, *w_up, *w_down;
};

struct lb_model {
    char *dir;                               /* owned */
    struct lb_model_config cfg;
    struct lb_st_set st;                     /* owned */
    const struct lb_tensor *embed, *norm, *lm_head; /* lm_head == embed when tied */
    struct lb_layer_weights *layers;         /* owned [n_layer] */
};

/* Parse config.json text (buf, n) into cfg. `name` is used in messages. */
int lb_model_config_parse(struct lb_model_config *cfg, const char *buf, size_t n, const char *name,
                          struct lb_err *err);
/* Read EOS ids (int or list) from generation_config.json text; replaces cfg's. */
int lb_model_genconfig_parse(struct lb_model_config *cfg, const char *buf, size_t n, const char *name,
                             struct lb_err *err);
/* Open a checkpoint folder; validates every tensor shape against the config, rejects NaN/Inf. */
int lb_model_open(struct lb_model *m, const char *dir, struct lb_err *err);
void lb_model_free(struct lb_model *m);
/* In/out features of a target module. */
void lb_model_target_dims(const struct lb_model_config *c, enum lb_target t, int *n_in, int *n_out);

#endif
