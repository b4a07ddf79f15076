/* util.c — see util.h. */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int lb_file_read(const char *path, char **buf, size_t *n, struct lb_err *err)
{
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lb_err_set(err, errno == ENOENT ? LB_E_INPUT : LB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    char *b = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) { rc = lb_err_set(err, LB_E_INPUT, "%s: not a regular file", path); goto done; }
    if (fseek(f, 0, SEEK_END) != 0) { rc = lb_err_set(err, LB_E_IO, "%s: cannot seek: %s", path, strerror(errno)); goto done; }
    long len = ftell(f);
    if (len < 0) { rc = lb_err_set(err, LB_E_IO, "%s: cannot tell size", path); goto done; }
    rewind(f);
    b = malloc((size_t)len + 1);
    if (!b) { rc = lb_err_set(err, LB_E_OOM, "%s: cannot allocate %ld bytes", path, len); goto done; }
    if (len && fread(b, 1, (size_t)len, f) != (size_t)len) {
        rc = lb_err_set(err, LB_E_IO, "%s: short read", path);
        goto done;
    }
    b[len] = 0;
    *buf = b;
    *n = (size_t)len;
    b = NULL;
done:
    free(b);
    fclose(f);
    return rc;
}

int lb_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int lb_dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *lb_strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *lb_path_join(const char *a, const char *b)
{
    if (b[0] == '/' || !a[0]) return lb_strfmt("%s", b);
    size_t na = strlen(a);
    return lb_strfmt("%s%s%s", a, a[na - 1] == '/' ? "" : "/", b);
}

int lb_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

double lb_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void *lb_xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) { fprintf(stderr, "lorabatch: out of memory (%zu bytes)\n", n); abort(); }
    return p;
}
