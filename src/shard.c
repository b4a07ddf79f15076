/* shard.c — see shard.h.
 *
 * The reader keeps a window buf[start..end) of uncompressed bytes; `pos` is the stream
 * offset of buf[start]. A line is returned in place when its '\n' is in the window;
 * otherwise the window is compacted to the front, grown (doubling, up to max_line + 1)
 * and refilled. A line that does not fit the cap is skipped in discard mode, counting
 * its bytes, so positions stay exact. The zstd path decompresses into the free tail of
 * the same window (ZSTD_decompressStream), so there is one copy per byte. */
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

struct lb_shard {
    char *path;            /* owned */
    int fd;
    int zst;
    ZSTD_DCtx *dctx;       /* owned, zst only */
    unsigned char *in;     /* owned [in_cap], compressed bytes read, zst only */
    size_t in_cap, in_pos, in_n;
    int in_eof;            /* read() returned 0 */
    size_t frame_left;     /* last ZSTD_decompressStream hint; 0 = at a frame boundary */
    char *buf;             /* owned [cap] window */
    size_t cap, start, end, scan; /* scan: bytes in [start, scan) hold no '\n' */
    size_t max_line;
    int64_t pos;           /* stream offset of buf[start] */
    int64_t line;          /* index of the next line */
    int eof;               /* no more bytes to come */
};

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void lb_shard_close(struct lb_shard *s)
{
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    ZSTD_freeDCtx(s->dctx);
    free(s->in);
    free(s->buf);
    free(s->path);
    free(s);
}

int lb_shard_open(struct lb_shard **out, const char *path, size_t max_line, struct lb_err *err)
{
    *out = NULL;
    struct lb_shard *s = calloc(1, sizeof *s);
    if (!s) return lb_err_set(err, LB_E_OOM, "shard %s: out of memory", path);
    s->fd = -1;
    s->max_line = max_line ? max_line : LB_SHARD_MAX_LINE;
    /* start small (many shards may be open at once), grow by doubling for long lines */
    s->cap = s->max_line + 1 < ((size_t)1 << 16) ? s->max_line + 1 : (size_t)1 << 16;
    s->path = strdup(path);
    s->buf = malloc(s->cap);
    s->zst = ends_with(path, ".zst");
    if (s->zst) {
        s->in_cap = ZSTD_DStreamInSize();
        s->in = malloc(s->in_cap);
        s->dctx = ZSTD_createDCtx();
    }
    if (!s->path || !s->buf || (s->zst && (!s->in || !s->dctx))) {
        lb_shard_close(s);
        return lb_err_set(err, LB_E_OOM, "shard %s: out of memory", path);
    }
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        lb_shard_close(s);
        return lb_err_set(err, LB_E_IO, "shard %s: cannot open: %s", path, strerror(e));
    }
    *out = s;
    return 0;
}

static ssize_t read_some(int fd, void *p, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0 || errno != EINTR) return r;
    }
}

/* Appends bytes to buf[end..cap). Returns the count added (0 with s->eof set at the end of
 * the stream) or a negative status. Precondition: end < cap. */
static int64_t fill(struct lb_shard *s, struct lb_err *err)
{
    if (s->eof) return 0;
    if (!s->zst) {
        ssize_t r = read_some(s->fd, s->buf + s->end, s->cap - s->end);
        if (r < 0) return lb_err_set(err, LB_E_IO, "shard %s: read failed: %s", s->path, strerror(errno));
        if (r == 0) s->eof = 1;
        s->end += (size_t)r;
        return r;
    }
    for (;;) {
        if (s->in_pos == s->in_n && !s->in_eof) {
            ssize_t r = read_some(s->fd, s->in, s->in_cap);
            if (r < 0) return lb_err_set(err, LB_E_IO, "shard %s: read failed: %s", s->path, strerror(errno));
            s->in_pos = 0;
            s->in_n = (size_t)r;
            if (r == 0) s->in_eof = 1;
        }
        ZSTD_inBuffer ib = {s->in, s->in_n, s->in_pos};
        ZSTD_outBuffer ob = {s->buf + s->end, s->cap - s->end, 0};
        size_t rc = ZSTD_decompressStream(s->dctx, &ob, &ib);
        if (ZSTD_isError(rc))
            return lb_err_set(err, LB_E_INPUT, "shard %s: bad zstd data near compressed byte %lld: %s", s->path,
                              (long long)lseek(s->fd, 0, SEEK_CUR), ZSTD_getErrorName(rc));
        /* A call that neither reads nor writes (empty input after a finished frame) returns
         * the header size of a next frame: not evidence of truncation, so keep the old hint. */
        if (ib.pos != s->in_pos || ob.pos) s->frame_left = rc;
        s->in_pos = ib.pos;
        s->end += ob.pos;
        if (ob.pos) return (int64_t)ob.pos;
        if (s->in_eof && s->in_pos == s->in_n) {
            if (s->frame_left) return lb_err_set(err, LB_E_INPUT, "shard %s: truncated zstd frame at the end of the file",
                                      s->path);
            s->eof = 1;
            return 0;
        }
    }
}

/* Skips the rest of a line that does not fit: counts bytes up to and including the next
 * '\n' (or the end). Sets *n_line to the line length without '\n'. */
static int discard_line(struct lb_shard *s, size_t *n_line, int *had_nl, struct lb_err *err)
{
    size_t total = s->end - s->start;
    s->start = s->end = s->scan = 0;
    *had_nl = 0;
    for (;;) {
        int64_t r = fill(s, err);
        if (r < 0) return (int)r;
        if (r == 0) break;
        char *nl = memchr(s->buf, '\n', s->end);
        if (nl) {
            total += (size_t)(nl - s->buf);
            s->start = s->scan = (size_t)(nl - s->buf) + 1;
            *had_nl = 1;
            break;
        }
        total += s->end;
        s->end = 0;
    }
    *n_line = total;
    return 0;
}

int lb_shard_next(struct lb_shard *s, struct lb_shard_line *line, struct lb_err *err)
{
    memset(line, 0, sizeof *line);
    for (;;) {
        char *nl = s->scan < s->end ? memchr(s->buf + s->scan, '\n', s->end - s->scan) : NULL;
        if (nl || (s->eof && s->end > s->start)) {
            size_t n = nl ? (size_t)(nl - (s->buf + s->start)) : s->end - s->start;
            if (n > s->max_line) { /* fit in the window but over the cap */
                line->too_long = 1;
                line->n = n;
            } else {
                line->data = s->buf + s->start;
                line->n = n && line->data[n - 1] == '\r' ? n - 1 : n;
            }
            line->index = s->line++;
            line->offset = s->pos;
            size_t used = n + (nl ? 1 : 0);
            s->start += used;
            s->scan = s->start;
            s->pos += (int64_t)used;
            return 1;
        }
        if (s->eof) return 0;
        s->scan = s->end;
        if (s->start > 0) { /* compact */
            memmove(s->buf, s->buf + s->start, s->end - s->start);
            s->end -= s->start;
            s->scan -= s->start;
            s->start = 0;
        }
        if (s->end == s->cap) {
            size_t limit = s->max_line + 1;
            if (s->cap < limit) {
                size_t cap = s->cap * 2 < limit ? s->cap * 2 : limit;
                char *b = realloc(s->buf, cap);
                if (!b) return lb_err_set(err, LB_E_OOM, "shard %s: out of memory for a %zu-byte line", s->path, cap);
                s->buf = b;
                s->cap = cap;
            } else {
                size_t n = 0;
                int had_nl = 0;
                int64_t off = s->pos;
                int rc = discard_line(s, &n, &had_nl, err);
                if (rc) return rc;
                line->too_long = 1;
                line->n = n;
                line->index = s->line++;
                line->offset = off;
                s->pos += (int64_t)n + had_nl;
                return 1;
            }
        }
        int64_t r = fill(s, err);
        if (r < 0) return (int)r;
    }
}

void lb_shard_tell(const struct lb_shard *s, struct lb_shard_cursor *cur)
{
    cur->offset = s->pos;
    cur->line = s->line;
}

int lb_shard_seek(struct lb_shard *s, const struct lb_shard_cursor *cur, struct lb_err *err)
{
    if (cur->offset < 0 || cur->line < 0 || cur->line > cur->offset)
        return lb_err_set(err, LB_E_CORRUPT, "shard %s: bad cursor (offset %lld, line %lld)", s->path,
                          (long long)cur->offset, (long long)cur->line);
    /* Start over, then skip (zst: from the start; plain: from one byte before the cursor). */
    int64_t skip = cur->offset;
    off_t at = 0;
    if (!s->zst && skip > 0) {
        at = (off_t)(skip - 1);
        skip = 1;
    }
    if (lseek(s->fd, at, SEEK_SET) < 0)
        return lb_err_set(err, LB_E_IO, "shard %s: seek failed: %s", s->path, strerror(errno));
    if (s->zst) ZSTD_DCtx_reset(s->dctx, ZSTD_reset_session_only);
    s->in_pos = s->in_n = 0;
    s->in_eof = 0;
    s->eof = 0;
    s->frame_left = 0;
    s->start = s->end = s->scan = 0;
    char last = '\n';
    while (skip > 0) {
        if (s->start == s->end) {
            s->start = s->end = 0;
            int64_t r = fill(s, err);
            if (r < 0) return (int)r;
            if (r == 0)
                return lb_err_set(err, LB_E_CORRUPT,
                                  "shard %s: shorter than the checkpoint's cursor (byte %lld): was the file changed?",
                                  s->path, (long long)cur->offset);
        }
        size_t take = s->end - s->start;
        if ((int64_t)take > skip) take = (size_t)skip;
        last = s->buf[s->start + take - 1];
        s->start += take;
        skip -= (int64_t)take;
    }
    s->scan = s->start;
    s->pos = cur->offset;
    s->line = cur->line;
    if (last != '\n') { /* only fine at the very end, after a last line without '\n' */
        if (s->start == s->end) {
            s->start = s->end = s->scan = 0;
            int64_t r = fill(s, err);
            if (r < 0) return (int)r;
        }
        if (s->start != s->end)
            return lb_err_set(err, LB_E_CORRUPT, "shard %s: checkpoint cursor (byte %lld) is not at a line start: "
                              "was the file changed?", s->path, (long long)cur->offset);
    }
    return 0;
}

/* ------------------------------------------------------------------ records */

void lb_record_init(struct lb_record *r) { memset(r, 0, sizeof *r); }

void lb_record_free(struct lb_record *r)
{
    if (!r) return;
    free(r->id.s);
    free(r->prompt);
    free(r->prompt_token_ids);
    lb_gen_param_free(&r->gen);
    memset(r, 0, sizeof *r);
}

static void bad(struct lb_record *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bad(struct lb_record *r, const char *code, const char *fmt, ...)
{
    if (r->err_code) return; /* the first problem is the one reported */
    r->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof r->err_msg, fmt, ap);
    va_end(ap);
}

static int start_record(struct lb_record *r, int64_t index, const struct lb_gen_param *defaults, struct lb_err *err)
{
    lb_record_init(r);
    r->index = index;
    r->id.i = index;
    return lb_gen_param_copy(&r->gen, defaults, err);
}

int lb_record_too_long(struct lb_record *r, int64_t index, size_t n, const struct lb_gen_param *defaults,
                       struct lb_err *err)
{
    int rc = start_record(r, index, defaults, err);
    if (rc) return rc;
    bad(r, LB_REC_E_TOO_LONG, "line of %zu bytes is longer than the limit", n);
    return 0;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int get_i64(struct lb_record *r, const char *key, const json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!json_is_integer(v)) {
        bad(r, LB_REC_E_FIELD, "field \"%s\": expected an integer, got %s", key, json_type_name(v));
        return -1;
    }
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        bad(r, LB_REC_E_FIELD, "field \"%s\": must be in [%lld, %lld], got %lld", key, (long long)lo, (long long)hi,
            (long long)x);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_real(struct lb_record *r, const char *key, const json_t *v, double lo, int lo_open, double hi,
                    double *out)
{
    if (!json_is_number(v)) {
        bad(r, LB_REC_E_FIELD, "field \"%s\": expected a number, got %s", key, json_type_name(v));
        return -1;
    }
    double x = json_number_value(v);
    if ((lo_open ? x <= lo : x < lo) || x > hi) {
        bad(r, LB_REC_E_FIELD, "field \"%s\": must be in %c%g, %g], got %g", key, lo_open ? '(' : '[', lo, hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

/* A stop string: non-empty, no U+0000. Returns a copy or NULL (error set / oom flagged). */
static char *stop_str(struct lb_record *r, const json_t *v, int *oom)
{
    if (!json_is_string(v)) {
        bad(r, LB_REC_E_FIELD, "field \"stop\": expected a string or an array of strings, got %s",
            json_type_name(v));
        return NULL;
    }
    size_t n = json_string_length(v);
    if (!n || strlen(json_string_value(v)) != n) {
        bad(r, LB_REC_E_FIELD, "field \"stop\": stop strings must be non-empty and hold no U+0000");
        return NULL;
    }
    char *s = strdup(json_string_value(v));
    if (!s) *oom = 1;
    return s;
}

static void parse_stop(struct lb_record *r, const json_t *v, int *oom)
{
    lb_gen_param_free(&r->gen);
    if (!json_is_array(v)) {
        char *s = stop_str(r, v, oom);
        if (!s) return;
        r->gen.stop = malloc(sizeof *r->gen.stop);
        if (!r->gen.stop) {
            free(s);
            *oom = 1;
            return;
        }
        r->gen.stop[0] = s;
        r->gen.n_stop = 1;
        return;
    }
    size_t n = json_array_size(v);
    if (!n) return;
    r->gen.stop = calloc(n, sizeof *r->gen.stop);
    if (!r->gen.stop) {
        *oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char *s = stop_str(r, json_array_get(v, i), oom);
        if (!s) return;
        r->gen.stop[r->gen.n_stop++] = s;
    }
}

int lb_record_parse(struct lb_record *r, int64_t index, const char *line, size_t n,
                    const struct lb_gen_param *defaults, struct lb_err *err)
{
    int rc = start_record(r, index, defaults, err);
    if (rc) return rc;
    size_t k = 0;
    while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
    if (k == n) {
        bad(r, LB_REC_E_JSON, "empty line");
        return 0;
    }
    json_error_t je;
    json_t *root = json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!root) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return lb_err_set(err, LB_E_OOM, "out of memory parsing record %lld", (long long)index);
        bad(r, json_error_code(&je) == json_error_invalid_utf8 ? LB_REC_E_UTF8 : LB_REC_E_JSON,
            "invalid JSON at column %d: %s", je.column, je.text);
        return 0;
    }
    int oom = 0;
    if (!json_is_object(root)) {
        bad(r, LB_REC_E_JSON, "a record must be a JSON object, got %s", json_type_name(root));
        goto done;
    }
    const char *key;
    size_t n_key;
    json_t *v;
    int has_messages = 0;
    int64_t x;
    double d;
    json_object_keylen_foreach(root, key, n_key, v)
    {
        if (r->err_code) break;
        if (strlen(key) != n_key) {
            bad(r, LB_REC_E_FIELD, "unknown field \"%s\\u0000...\"", key);
        } else if (!strcmp(key, "prompt")) {
            if (!json_is_string(v)) bad(r, LB_REC_E_FIELD, "field \"prompt\": expected a string, got %s", json_type_name(v));
            else if (!json_string_length(v)) bad(r, LB_REC_E_FIELD, "field \"prompt\": empty");
            else {
                r->n_prompt = json_string_length(v);
                r->prompt = malloc(r->n_prompt + 1);
                if (!r->prompt) oom = 1;
                else {
                    memcpy(r->prompt, json_string_value(v), r->n_prompt);
                    r->prompt[r->n_prompt] = 0;
                }
            }
        } else if (!strcmp(key, "prompt_token_ids")) {
            size_t m = json_array_size(v);
            if (!json_is_array(v))
                bad(r, LB_REC_E_FIELD, "field \"prompt_token_ids\": expected an array of integers, got %s",
                    json_type_name(v));
            else if (!m) bad(r, LB_REC_E_FIELD, "field \"prompt_token_ids\": empty");
            else if (m > INT32_MAX) bad(r, LB_REC_E_FIELD, "field \"prompt_token_ids\": too long");
            else if (!(r->prompt_token_ids = malloc(m * sizeof *r->prompt_token_ids))) oom = 1;
            else {
                r->n_prompt_token_ids = (int)m;
                for (size_t i = 0; i < m; i++) {
                    json_t *e = json_array_get(v, i);
                    if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX) {
                        bad(r, LB_REC_E_FIELD, "field \"prompt_token_ids\": element %zu is %s, expected an integer "
                            "in [0, 2^31)", i, json_is_integer(e) ? "out of range" : json_type_name(e));
                        break;
                    }
                    r->prompt_token_ids[i] = (int32_t)json_integer_value(e);
                }
            }
        } else if (!strcmp(key, "messages")) {
            has_messages = 1;
        } else if (!strcmp(key, "id")) {
            if (json_is_integer(v)) {
                r->id.i = json_integer_value(v);
            } else if (json_is_string(v)) {
                r->id.is_str = 1;
                r->id.n_s = json_string_length(v);
                r->id.s = malloc(r->id.n_s + 1);
                if (!r->id.s) oom = 1;
                else {
                    memcpy(r->id.s, json_string_value(v), r->id.n_s);
                    r->id.s[r->id.n_s] = 0;
                }
            } else {
                bad(r, LB_REC_E_FIELD, "field \"id\": expected a string or an integer, got %s", json_type_name(v));
            }
        } else if (!strcmp(key, "max_tokens")) {
            if (!get_i64(r, key, v, 1, 1 << 24, &x)) r->gen.max_tokens = (int32_t)x;
        } else if (!strcmp(key, "temperature")) {
            if (!get_real(r, key, v, 0, 0, 1e6, &d)) r->gen.temperature = (float)d;
        } else if (!strcmp(key, "top_p")) {
            if (!get_real(r, key, v, 0, 1, 1, &d)) r->gen.top_p = (float)d;
        } else if (!strcmp(key, "top_k")) {
            if (!get_i64(r, key, v, 0, INT32_MAX, &x)) r->gen.top_k = (int32_t)x;
        } else if (!strcmp(key, "seed")) {
            if (!get_i64(r, key, v, 0, INT64_MAX, &x)) {
                r->gen.seed = (uint64_t)x;
                r->has_seed = 1;
            }
        } else if (!strcmp(key, "stop")) {
            parse_stop(r, v, &oom);
        } else {
            bad(r, LB_REC_E_FIELD, "unknown field \"%.100s\" (known: prompt, prompt_token_ids, messages, id, "
                "max_tokens, temperature, top_p, top_k, seed, stop)", key);
        }
        if (oom) break;
    }
    if (oom) goto done;
    if (has_messages && !r->prompt && !r->prompt_token_ids)
        bad(r, LB_REC_E_UNSUPPORTED, "field \"messages\": chat templates not supported yet; give \"prompt\" or "
            "\"prompt_token_ids\"");
    if (has_messages && (r->prompt || r->prompt_token_ids))
        bad(r, LB_REC_E_FIELD, "give one of \"prompt\", \"prompt_token_ids\", \"messages\", not several");
    if (r->prompt && r->prompt_token_ids)
        bad(r, LB_REC_E_FIELD, "give one of \"prompt\" and \"prompt_token_ids\", not both");
    if (!r->prompt && !r->prompt_token_ids && !has_messages)
        bad(r, LB_REC_E_FIELD, "no prompt: give \"prompt\" (a string) or \"prompt_token_ids\" (an array of integers)");
done:
    json_decref(root);
    if (oom) return lb_err_set(err, LB_E_OOM, "out of memory parsing record %lld", (long long)index);
    return 0;
}
