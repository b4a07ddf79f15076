/* torchbin.c — placeholder until the torch.save parser lands (branch torchbin). */
#include "torchbin.h"
int lb_torchbin_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err)
{
    (void)f; (void)buf; (void)n;
    return lb_err_set(err, LB_E_UNSUPPORTED, "adapter_model.bin is not supported yet");
}
int lb_torchbin_open(struct lb_st_file *f, const char *path, struct lb_err *err)
{
    (void)f;
    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: adapter_model.bin is not supported yet", path);
}
