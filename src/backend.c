/* backend.c — names and sizes shared by every backend. */
#include "backend.h"

size_t lb_dtype_size(enum lb_dtype t)
{
    switch (t) {
    case LB_F32: case LB_I32: return 4;
    case LB_F16: case LB_BF16: return 2;
    case LB_U8: return 1;
    }
    return 0;
}

const char *lb_dtype_name(enum lb_dtype t)
{
    switch (t) {
    case LB_F32: return "F32";
    case LB_F16: return "F16";
    case LB_BF16: return "BF16";
    case LB_I32: return "I32";
    case LB_U8: return "U8";
    }
    return "?";
}

const char *lb_target_name(enum lb_target t)
{
    static const char *names[LB_T_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    return (unsigned)t < LB_T_COUNT ? names[t] : "?";
}

const char *lb_op_name(enum lb_op_kind k)
{
    static const char *names[LB_OP_COUNT] = {"embed", "rmsnorm", "matmul", "lora", "rope", "kv_write",
                                             "attn", "swiglu", "add", "gather", "sample", "allreduce"};
    return (unsigned)k < LB_OP_COUNT ? names[k] : "?";
}

void lb_backend_close(struct lb_backend *be)
{
    if (be && be->ops && be->ops->destroy) be->ops->destroy(be);
    if (be) { be->ops = NULL; be->impl = NULL; }
}
