/* safetensors.h — parse and validate safetensors files; map sharded checkpoints.
 *
 * lb_st_parse works on a buffer (fuzzable): it checks the 8-byte header length, that the
 * header is a JSON object, each tensor's dtype, that shape x dtype size = byte length, and
 * that offsets lie inside the data area without overlapping. lb_st_open mmaps a file and
 * calls it. Tensors point into the mapping (borrowed from the lb_st_file). */
#ifndef LB_SAFETENSORS_H
#define LB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "err.h"

#define LB_ST_MAX_DIMS 8

struct lb_tensor {
    char *name;                 /* owned */
    enum lb_dtype dtype;        /* F32, F16, BF16 (I32/U8 only for non-weight tensors) */
    int n_dim;
    int64_t shape[LB_ST_MAX_DIMS];
    int64_t n_elem;
    const void *data;           /* borrowed: points into the file mapping */
    size_t n_bytes;
};

struct lb_st_file {
    char *path;                 /* owned */
    void *map;                  /* owned mmap (or NULL for lb_st_parse on a caller buffer) */
    size_t map_bytes;
    struct lb_tensor *tensors;  /* owned [n_tensor], sorted by name */
    int n_tensor;
};

/* Parse a whole safetensors image held in buf[0..n). Tensors borrow buf. */
int lb_st_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err);
int lb_st_open(struct lb_st_file *f, const char *path, struct lb_err *err);
void lb_st_free(struct lb_st_file *f);
const struct lb_tensor *lb_st_find(const struct lb_st_file *f, const char *name);

/* A checkpoint folder: model.safetensors, or model.safetensors.index.json + shards. */
struct lb_st_set {
    struct lb_st_file *files; /* owned [n_file] */
    int n_file;
};
int lb_st_set_open(struct lb_st_set *s, const char *dir, struct lb_err *err);
void lb_st_set_free(struct lb_st_set *s);
const struct lb_tensor *lb_st_set_find(const struct lb_st_set *s, const char *name);

/* bf16/f16 <-> f32 (exact widening; narrowing rounds to nearest even). */
float lb_bf16_to_f32(uint16_t h);
uint16_t lb_f32_to_bf16(float f);
float lb_f16_to_f32(uint16_t h);
uint16_t lb_f32_to_f16(float f);
/* Element i of a tensor's data as f32. */
float lb_tensor_get_f32(const void *data, enum lb_dtype dt, int64_t i);

#endif
