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

#endif
