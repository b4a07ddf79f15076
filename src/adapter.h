/* adapter.h — Hugging Face PEFT LoRA adapters: adapter_config.json +
 * adapter_model.safetensors (or adapter_model.bin, a torch.save ZIP parsed as data).
 * Honours r, lora_alpha, use_rslora, rank_pattern, alpha_pattern, target_modules (list or
 * regex), layers_to_transform, fan_in_fan_out. Validates every tensor against the base
 * model. Refuses use_dora, modules_to_save, bias != none, embedding/lm_head targets. */
#ifndef LB_ADAPTER_H
#define LB_ADAPTER_H

#include "model.h"

struct lb_adapter_module {
    int rank;                /* 0 = not targeted */
    float alpha, scale;
    enum lb_dtype dtype;
    const void *a;           /* [R, n_in] row-major; borrowed from st or owned by adapter */
    const void *b;           /* [n_out, R] */
};

struct lb_adapter {
    char *name;              /* owned */
    char *dir;               /* owned */
    int n_layer;
    struct lb_adapter_module *mods; /* owned [n_layer * LB_T_COUNT], index layer*LB_T_COUNT + target */
    struct lb_st_file st;    /* owned mapping (safetensors case) */
    void *owned_data;        /* owned buffer (bin case, or transposed fan_in_fan_out data) */
    int64_t n_params;
    int max_rank;
};

int lb_adapter_open(struct lb_adapter *a, const char *name, const char *dir, const struct lb_model *m,
                    struct lb_err *err);
void lb_adapter_free(struct lb_adapter *a);
/* Asks the kernel to read the adapter's mapped file into the page cache in the background
 * (madvise WILLNEED), so a later load copies from memory instead of waiting on the disk. */
void lb_adapter_prefetch(const struct lb_adapter *a);
static inline const struct lb_adapter_module *lb_adapter_mod(const struct lb_adapter *a, int layer, int t)
{
    return &a->mods[layer * LB_T_COUNT + t];
}

#endif
