/* torchbin.h — torch.save ZIP files parsed as data (never executed). */
#ifndef LB_TORCHBIN_H
#define LB_TORCHBIN_H
#include "safetensors.h"
/* Parse a torch.save ZIP image in buf[0..n) (borrowed: tensors point into buf). */
int lb_torchbin_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err);
/* mmap the file, then parse; f->map owns the mapping (lb_st_free releases it). */
int lb_torchbin_open(struct lb_st_file *f, const char *path, struct lb_err *err);
#endif
