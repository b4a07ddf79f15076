/* out.c — see out.h.
 *
 * One ZSTD_CCtx per output file; compressed bytes collect in a ZSTD_CStreamOutSize()
 * buffer (~128 KiB) that is written with write(2) whenever it fills, and at commit.
 * Memory per open output: the zstd context (~1-2 MiB at level 3) plus that buffer. */
#include "out.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

struct lb_out {
    char *path;          /* owned */
    int fd;
    ZSTD_CCtx *cctx;     /* owned */
    unsigned char *buf;  /* owned [cap]: compressed bytes not yet written */
    size_t cap, n;
    int64_t file_len;    /* bytes written to the file so far */
    int64_t committed;   /* durable length */
    int64_t n_lines, n_lines_pending;
    int broken;          /* a write failed: refuse further writes */
};

static int io_fail(struct lb_out *o, const char *what, int e, struct lb_err *err)
{
    o->broken = 1;
    return lb_err_set(err, LB_E_IO, "output %s: %s failed: %s%s", o->path, what, strerror(e),
                      e == ENOSPC || e == EDQUOT ? " (disk full: free space and run again; the job resumes from "
                                                   "the last checkpoint)" : "");
}

static int write_all(struct lb_out *o, const void *p, size_t n, struct lb_err *err)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(o->fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return io_fail(o, "write", errno, err);
        if (w == 0) return io_fail(o, "write", EIO, err);
        c += w;
        n -= (size_t)w;
        o->file_len += w;
    }
    return 0;
}

static int flush_buf(struct lb_out *o, struct lb_err *err)
{
    int rc = write_all(o, o->buf, o->n, err);
    o->n = 0;
    return rc;
}

void lb_out_close(struct lb_out *o)
{
    if (!o) return;
    if (o->fd >= 0) close(o->fd);
    ZSTD_freeCCtx(o->cctx);
    free(o->buf);
    free(o->path);
    free(o);
}

static void fsync_parent(const char *path)
{
    char *d = strdup(path);
    if (!d) return;
    char *s = strrchr(d, '/');
    if (s == d) s[1] = 0;
    else if (s) *s = 0;
    else strcpy(d, ".");
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* best effort: some file systems refuse fsync on folders */
        close(fd);
    }
    free(d);
}

int lb_out_open(struct lb_out **out, const char *path, int64_t committed_len, int level, struct lb_err *err)
{
    *out = NULL;
    struct lb_out *o = calloc(1, sizeof *o);
    if (!o) return lb_err_set(err, LB_E_OOM, "output %s: out of memory", path);
    o->fd = -1;
    o->path = strdup(path);
    o->cap = ZSTD_CStreamOutSize();
    o->buf = malloc(o->cap);
    o->cctx = ZSTD_createCCtx();
    int rc = 0;
    if (!o->path || !o->buf || !o->cctx) {
        rc = lb_err_set(err, LB_E_OOM, "output %s: out of memory", path);
        goto fail;
    }
    size_t zr = ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(zr)) zr = ZSTD_CCtx_setParameter(o->cctx, ZSTD_c_checksumFlag, 1);
    if (ZSTD_isError(zr)) {
        rc = lb_err_set(err, LB_E_INPUT, "output %s: zstd level %d: %s", path, level, ZSTD_getErrorName(zr));
        goto fail;
    }
    if (committed_len < 0) {
        rc = lb_err_set(err, LB_E_INTERNAL, "output %s: negative committed length", path);
        goto fail;
    }
    if (committed_len == 0) {
        int existed = access(path, F_OK) == 0;
        o->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (o->fd < 0) {
            rc = lb_err_set(err, LB_E_IO, "output %s: cannot create: %s", path, strerror(errno));
            goto fail;
        }
        if (!existed) fsync_parent(path);
    } else {
        o->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (o->fd < 0) {
            rc = lb_err_set(err, errno == ENOENT ? LB_E_CORRUPT : LB_E_IO,
                            "output %s: cannot open for resume (checkpoint says %lld bytes committed): %s", path,
                            (long long)committed_len, strerror(errno));
            goto fail;
        }
        struct stat st;
        if (fstat(o->fd, &st)) {
            rc = lb_err_set(err, LB_E_IO, "output %s: stat failed: %s", path, strerror(errno));
            goto fail;
        }
        if (st.st_size < committed_len) {
            rc = lb_err_set(err, LB_E_CORRUPT,
                            "output %s: %lld bytes, shorter than the %lld bytes the checkpoint says were committed",
                            path, (long long)st.st_size, (long long)committed_len);
            goto fail;
        }
        if (st.st_size > committed_len) { /* drop the uncommitted tail (a frame cut by a crash) */
            if (ftruncate(o->fd, (off_t)committed_len) || fsync(o->fd)) {
                rc = lb_err_set(err, LB_E_IO, "output %s: truncate to %lld bytes failed: %s", path,
                                (long long)committed_len, strerror(errno));
                goto fail;
            }
        }
        if (lseek(o->fd, (off_t)committed_len, SEEK_SET) < 0) {
            rc = lb_err_set(err, LB_E_IO, "output %s: seek failed: %s", path, strerror(errno));
            goto fail;
        }
    }
    o->file_len = o->committed = committed_len;
    *out = o;
    return 0;
fail:
    lb_out_close(o);
    return rc;
}

/* Feeds input through the compressor with the given directive until it is consumed (and,
 * for ZSTD_e_end, the frame is complete), writing out full buffers. */
static int compress(struct lb_out *o, const void *p, size_t n, ZSTD_EndDirective mode, struct lb_err *err)
{
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer ob = {o->buf, o->cap, o->n};
        size_t left = ZSTD_compressStream2(o->cctx, &ob, &in, mode);
        o->n = ob.pos;
        if (ZSTD_isError(left)) {
            o->broken = 1;
            return lb_err_set(err, LB_E_INTERNAL, "output %s: zstd: %s", o->path, ZSTD_getErrorName(left));
        }
        if (o->n == o->cap) {
            int rc = flush_buf(o, err);
            if (rc) return rc;
        }
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return 0;
    }
}

int lb_out_write(struct lb_out *o, const char *line, size_t n, struct lb_err *err)
{
    if (o->broken) return lb_err_set(err, LB_E_IO, "output %s: an earlier write failed", o->path);
    int rc = compress(o, line, n, ZSTD_e_continue, err);
    if (!rc) rc = compress(o, "\n", 1, ZSTD_e_continue, err);
    if (!rc) {
        o->n_lines++;
        o->n_lines_pending++;
    }
    return rc;
}

int lb_out_commit(struct lb_out *o, int64_t *committed_len, struct lb_err *err)
{
    if (o->broken) return lb_err_set(err, LB_E_IO, "output %s: an earlier write failed", o->path);
    /* a file's first commit always ends a frame, even an empty one, so an output with no
     * lines is still a valid zstd file (zstd -d refuses a 0-byte file) */
    if (o->n_lines_pending || o->file_len == 0) {
        int rc = compress(o, NULL, 0, ZSTD_e_end, err);
        if (!rc) rc = flush_buf(o, err);
        if (rc) return rc;
        while (fsync(o->fd)) {
            if (errno == EINTR) continue;
            if (errno == EINVAL || errno == EROFS) break; /* special files (tests use /dev/full) */
            return io_fail(o, "fsync", errno, err);
        }
        o->committed = o->file_len;
        o->n_lines_pending = 0;
    }
    if (committed_len) *committed_len = o->committed;
    return 0;
}

int64_t lb_out_n_lines(const struct lb_out *o) { return o->n_lines; }
int64_t lb_out_n_lines_pending(const struct lb_out *o) { return o->n_lines_pending; }

/* ------------------------------------------------------------------ line builders */

/* Copies s[0..n) replacing each invalid UTF-8 sequence by U+FFFD (EF BF BD). Rules: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
static char *utf8_fix(const char *s, size_t n, size_t *n_out)
{
    char *d = malloc(3 * n + 1);
    if (!d) return NULL;
    size_t k = 0, i = 0;
    const unsigned char *u = (const unsigned char *)s;
    while (i < n) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        int ok = len && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) ok = (u[i + j] & 0xC0) == 0x80;
        if (ok && len == 3) {
            if (c == 0xE0 && u[i + 1] < 0xA0) ok = 0;       /* overlong */
            if (c == 0xED && u[i + 1] >= 0xA0) ok = 0;      /* surrogate */
        }
        if (ok && len == 4) {
            if (c == 0xF0 && u[i + 1] < 0x90) ok = 0;       /* overlong */
            if (c == 0xF4 && u[i + 1] >= 0x90) ok = 0;      /* > U+10FFFF */
        }
        if (ok) {
            memcpy(d + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(d + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    d[k] = 0;
    *n_out = k;
    return d;
}

static json_t *id_value(const struct lb_rec_id *id)
{
    return id->is_str ? json_stringn(id->s, id->n_s) : json_integer(id->i);
}

/* Dumps obj (stolen) into *line. */
static int dump(json_t *obj, char **line, size_t *n, const char *what, struct lb_err *err)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return lb_err_set(err, LB_E_OOM, "out of memory building %s", what);
    *line = s;
    *n = strlen(s);
    return 0;
}

int lb_out_line_ok(char **line, size_t *n, const struct lb_out_ok *r, struct lb_err *err)
{
    *line = NULL;
    *n = 0;
    json_t *o = json_object(), *usage = json_object();
    json_t *id = id_value(&r->id);
    json_t *text = json_stringn(r->text ? r->text : "", r->text ? r->n_text : 0);
    json_t *adapter = json_string(r->adapter);
    if (!o || !usage) goto oom;
    if (!id || !text || !adapter) {
        json_decref(o);
        json_decref(usage);
        json_decref(id);
        json_decref(text);
        json_decref(adapter);
        return lb_err_set(err, LB_E_INPUT, "record %lld: %s is not valid UTF-8", (long long)r->index,
                          !text ? "generated text" : !id ? "id" : "adapter name");
    }
    int bad = json_object_set_new(o, "id", id) | json_object_set_new(o, "index", json_integer(r->index)) |
              json_object_set_new(o, "adapter", adapter) | json_object_set_new(o, "text", text) |
              json_object_set_new(o, "finish_reason", json_string(r->finish_reason ? r->finish_reason : "stop")) |
              json_object_set_new(usage, "prompt_tokens", json_integer(r->n_tok_prompt)) |
              json_object_set_new(usage, "completion_tokens", json_integer(r->n_tok_gen)) |
              json_object_set_new(o, "usage", usage);
    usage = NULL;
    if (!bad && r->with_token_ids) {
        json_t *a = json_array();
        bad |= !a;
        for (int64_t i = 0; a && i < r->n_token_ids; i++) bad |= json_array_append_new(a, json_integer(r->token_ids[i]));
        bad |= json_object_set_new(o, "token_ids", a);
    }
    if (bad) goto oom;
    return dump(o, line, n, "an output line", err);
oom:
    json_decref(o);
    json_decref(usage);
    return lb_err_set(err, LB_E_OOM, "out of memory building an output line");
}

int lb_out_line_error(char **line, size_t *n, const struct lb_rec_id *id, int64_t index, const char *adapter,
                      const char *code, const char *message, struct lb_err *err)
{
    *line = NULL;
    *n = 0;
    size_t n_msg = 0, n_id = 0, n_ad = 0;
    char *msg = utf8_fix(message ? message : "", message ? strlen(message) : 0, &n_msg);
    char *ad = utf8_fix(adapter, strlen(adapter), &n_ad);
    char *ids = id->is_str ? utf8_fix(id->s, id->n_s, &n_id) : NULL;
    json_t *o = json_object(), *e = json_object();
    int bad = !msg || !ad || (id->is_str && !ids) || !o || !e;
    if (!bad) {
        bad = json_object_set_new(o, "id", id->is_str ? json_stringn(ids, n_id) : json_integer(id->i)) |
              json_object_set_new(o, "index", json_integer(index)) |
              json_object_set_new(o, "adapter", json_stringn(ad, n_ad)) |
              json_object_set_new(e, "code", json_string(code)) |
              json_object_set_new(e, "message", json_stringn(msg, n_msg)) | json_object_set_new(o, "error", e);
        e = NULL;
    }
    free(msg);
    free(ad);
    free(ids);
    if (bad) {
        json_decref(o);
        json_decref(e);
        return lb_err_set(err, LB_E_OOM, "out of memory building an error line");
    }
    return dump(o, line, n, "an error line", err);
}

/* ------------------------------------------------------------------ reorder buffer */

int lb_reorder_init(struct lb_reorder *r, const struct lb_shard_cursor *start, int cap, struct lb_err *err)
{
    memset(r, 0, sizeof *r);
    if (cap < 1) cap = 1;
    r->slots = calloc((size_t)cap, sizeof *r->slots);
    if (!r->slots) return lb_err_set(err, LB_E_OOM, "out of memory for a reorder buffer of %d lines", cap);
    r->cap = cap;
    r->next = start->line;
    r->next_cursor = *start;
    return 0;
}

void lb_reorder_free(struct lb_reorder *r)
{
    if (!r) return;
    for (int i = 0; i < r->cap; i++) free(r->slots[i].line);
    free(r->slots);
    memset(r, 0, sizeof *r);
}

int lb_reorder_put(struct lb_reorder *r, int64_t index, char *line, size_t n, const struct lb_shard_cursor *after,
                   struct lb_err *err)
{
    if (index < r->next || index >= r->next + r->cap) {
        free(line);
        return lb_err_set(err, LB_E_INTERNAL, "reorder: line %lld outside the window [%lld, %lld)", (long long)index,
                          (long long)r->next, (long long)(r->next + r->cap));
    }
    struct lb_reorder_slot *s = &r->slots[index % r->cap];
    if (s->line) {
        free(line);
        return lb_err_set(err, LB_E_INTERNAL, "reorder: line %lld given twice", (long long)index);
    }
    s->line = line;
    s->n = n;
    s->after = *after;
    r->n_held++;
    return 0;
}

int lb_reorder_drain(struct lb_reorder *r, struct lb_out *o, int64_t *n_written, struct lb_err *err)
{
    int64_t k = 0;
    int rc = 0;
    for (;;) {
        struct lb_reorder_slot *s = &r->slots[r->next % r->cap];
        if (!s->line) break;
        rc = lb_out_write(o, s->line, s->n, err);
        if (rc) break;
        free(s->line);
        s->line = NULL;
        r->next_cursor = s->after;
        r->next++;
        r->n_held--;
        k++;
    }
    if (n_written) *n_written = k;
    return rc;
}
