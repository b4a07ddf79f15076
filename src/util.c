/* util.c — see util.h. */
#include "util.h"

#include <errno.h>
#include <pthread.h>
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

struct par_cp { char *d; const char *s; size_t n; };

static void *par_cp_main(void *arg)
{
    struct par_cp *j = arg;
    if (j->n) memcpy(j->d, j->s, j->n);
    return NULL;
}

void lb_par_memcpy(void *dst, const void *src, size_t n, int n_thread)
{
    if (n_thread > 8) n_thread = 8;
    if (n_thread <= 1 || n < LB_PAR_MEMCPY_MIN) {
        if (n) memcpy(dst, src, n);
        return;
    }
    pthread_t th[8];
    struct par_cp job[8];
    int started[8] = {0};
    size_t chunk = ((n + (size_t)n_thread - 1) / (size_t)n_thread + 63) & ~(size_t)63; /* 64-byte parts covering n */
    for (int i = 0; i < n_thread; i++) {
        size_t b = (size_t)i * chunk < n ? (size_t)i * chunk : n, e = b + chunk < n ? b + chunk : n;
        job[i] = (struct par_cp){(char *)dst + b, (const char *)src + b, e - b};
        if (i > 0) started[i] = pthread_create(&th[i], NULL, par_cp_main, &job[i]) == 0;
    }
    par_cp_main(&job[0]);
    for (int i = 1; i < n_thread; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else par_cp_main(&job[i]);
    }
}
