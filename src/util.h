/* util.h — small host helpers: whole-file reads, overflow-checked sizes, path joins, time. */
#ifndef LB_UTIL_H
#define LB_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Read a whole file into a NUL-terminated malloc'd buffer (owned by the caller). */
int lb_file_read(const char *path, char **buf, size_t *n, struct lb_err *err);
int lb_file_exists(const char *path);
int lb_dir_exists(const char *path);
/* snprintf into a malloc'd string (owned by the caller); NULL on OOM. */
char *lb_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *lb_path_join(const char *a, const char *b);
/* a*b, returns 0 on overflow of size_t, else 1 and *out. */
int lb_mul_ok(size_t a, size_t b, size_t *out);
double lb_now_s(void);
void *lb_xmalloc(size_t n); /* aborts on OOM: only for small fixed-size metadata */
/* memcpy split over up to n_thread threads (at most 8; one core copies ~6 GB/s, which bounds
 * staging an adapter into pinned memory). Copies under LB_PAR_MEMCPY_MIN bytes, and any part a
 * thread could not be started for, run on the calling thread. Regions must not overlap. */
#define LB_PAR_MEMCPY_MIN ((size_t)1 << 20)
void lb_par_memcpy(void *dst, const void *src, size_t n, int n_thread);

#endif
