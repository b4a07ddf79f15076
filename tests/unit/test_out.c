/* test_out.c — zstd writer (commit, resume after a crash, disk full), line builders, reorder. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "ckpt.h"
#include "out.h"
#include "t.h"

static char tmp_root[512];

static void make_tmp(void)
{
    const char *base = getenv("LB_TEST_OUT");
    snprintf(tmp_root, sizeof tmp_root, "%s/out.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_root)) {
        snprintf(tmp_root, sizeof tmp_root, "/tmp/out.XXXXXX");
        if (!mkdtemp(tmp_root)) perror("mkdtemp");
    }
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* Decompresses a whole file (any number of frames); counts the frames. NULL if invalid. */
static char *unzstd(const char *path, size_t *n_out, int *n_frames)
{
    size_t n;
    unsigned char *src = slurp(path, &n);
    if (!src) return NULL;
    *n_frames = 0;
    for (size_t k = 0; k < n;) {
        size_t f = ZSTD_findFrameCompressedSize(src + k, n - k);
        if (ZSTD_isError(f)) {
            free(src);
            return NULL;
        }
        k += f;
        ++*n_frames;
    }
    size_t cap = 1 << 16, len = 0;
    char *dst = malloc(cap);
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer in = {src, n, 0};
    size_t last = 0;
    while (in.pos < in.size || last) {
        if (len == cap) dst = realloc(dst, cap *= 2);
        ZSTD_outBuffer ob = {dst + len, cap - len, 0};
        size_t before = in.pos;
        last = ZSTD_decompressStream(d, &ob, &in);
        if (ZSTD_isError(last)) {
            free(dst);
            dst = NULL;
            break;
        }
        len += ob.pos;
        if (!ob.pos && in.pos == before && last) { /* truncated */
            free(dst);
            dst = NULL;
            break;
        }
    }
    ZSTD_freeDCtx(d);
    free(src);
    *n_out = len;
    return dst;
}

static int64_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) ? -1 : (int64_t)st.st_size;
}

/* Line i of the test stream: varied lengths, some compressible, some not. */
static int make_line(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "{\"index\":%d,\"text\":\"", i);
    unsigned x = (unsigned)i * 2654435761u;
    int len = 20 + (int)(x % 300);
    for (int k = 0; k < len && n < (int)cap - 4; k++) {
        x = x * 1103515245u + 12345u;
        buf[n++] = (char)('a' + (x >> 16) % 26);
    }
    n += snprintf(buf + n, cap - (size_t)n, "\"}");
    return n;
}

/* Everything lines [0, count) make, joined with '\n'. */
static char *expected(int count, size_t *n)
{
    size_t cap = (size_t)count * 400 + 1, k = 0;
    char *s = malloc(cap);
    for (int i = 0; i < count; i++) {
        k += (size_t)make_line(s + k, cap - k, i);
        s[k++] = '\n';
    }
    *n = k;
    return s;
}

static int write_range(struct lb_out *o, int from, int to, int commit_every, int64_t *committed, struct lb_err *err)
{
    char line[512];
    for (int i = from; i < to; i++) {
        int n = make_line(line, sizeof line, i);
        int rc = lb_out_write(o, line, (size_t)n, err);
        if (rc) return rc;
        if (commit_every && (i + 1) % commit_every == 0 && (rc = lb_out_commit(o, committed, err))) return rc;
    }
    return 0;
}

static void test_uninterrupted(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/a.base.jsonl.zst", tmp_root);
    struct lb_out *o;
    struct lb_err err = {0};
    int64_t len = -1;
    T_CHECK(lb_out_open(&o, path, 0, 3, &err) == 0, "%s", err.msg);
    if (!o) return;
    T_CHECK(write_range(o, 0, 1000, 100, &len, &err) == 0, "%s", err.msg);
    T_CHECK(len == file_size(path), "committed %lld, file %lld", (long long)len, (long long)file_size(path));
    int64_t len2 = -1;
    T_CHECK(lb_out_commit(o, &len2, &err) == 0 && len2 == len, "empty commit changed the length");
    T_CHECK(lb_out_n_lines(o) == 1000 && lb_out_n_lines_pending(o) == 0, "line counts");
    lb_out_close(o);
    size_t n_got, n_want;
    int frames = 0;
    char *got = unzstd(path, &n_got, &frames), *want = expected(1000, &n_want);
    T_CHECK(got && n_got == n_want && !memcmp(got, want, n_want), "decompressed output differs (%zu vs %zu)", n_got,
            n_want);
    T_CHECK(frames == 10, "frames %d, want one per commit (10)", frames);
    free(got);
    free(want);
}

/* Crash after a commit, with part of the next frame on disk plus garbage; resume from the
 * committed length; the result decompresses to exactly the uninterrupted stream. */
static void test_resume_after_crash(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/b.sql.jsonl.zst", tmp_root);
    struct lb_out *o;
    struct lb_err err = {0};
    int64_t len = -1;
    T_CHECK(lb_out_open(&o, path, 0, 3, &err) == 0, "%s", err.msg);
    if (!o) return;
    T_CHECK(write_range(o, 0, 300, 100, &len, &err) == 0, "%s", err.msg);
    int64_t committed = len;
    /* 2700 more lines, uncommitted: enough to make the writer flush part of a frame */
    T_CHECK(write_range(o, 300, 3000, 0, &len, &err) == 0, "%s", err.msg);
    lb_out_close(o); /* "crash": no commit */
    int64_t sz = file_size(path);
    T_CHECK(sz > committed, "expected uncommitted bytes on disk (size %lld, committed %lld)", (long long)sz,
            (long long)committed);
    int fd = open(path, O_WRONLY | O_APPEND);
    T_CHECK(write(fd, "\x28\xb5\x2f\xfd garbage after a crash", 26) == 26, "append");
    close(fd);
    size_t n_x;
    int fr;
    char *x = unzstd(path, &n_x, &fr);
    T_CHECK(x == NULL, "a file cut mid-frame should not decompress cleanly");
    free(x);

    T_CHECK(lb_out_open(&o, path, committed, 3, &err) == 0, "resume: %s", err.msg);
    if (!o) return;
    T_CHECK(file_size(path) == committed, "not truncated to the committed length");
    T_CHECK(write_range(o, 300, 3000, 100, &len, &err) == 0, "%s", err.msg);
    lb_out_close(o);
    size_t n_got, n_want;
    int frames = 0;
    char *got = unzstd(path, &n_got, &frames), *want = expected(3000, &n_want);
    T_CHECK(got && n_got == n_want && !memcmp(got, want, n_want), "resumed output differs from uninterrupted");
    T_CHECK(frames == 30, "frames %d", frames);
    free(got);
    free(want);

    /* checkpoint says more than the file holds */
    int rc = lb_out_open(&o, path, file_size(path) + 1, 3, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, path) && strstr(err.msg, "shorter"), "rc %d: %s", rc, err.msg);
    T_CHECK(o == NULL, "handle on failure");
    char missing[700];
    snprintf(missing, sizeof missing, "%s/gone.jsonl.zst", tmp_root);
    rc = lb_out_open(&o, missing, 100, 3, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "gone.jsonl.zst"), "missing output on resume: rc %d %s", rc, err.msg);
    /* committed_len 0 on an existing file starts it over */
    T_CHECK(lb_out_open(&o, path, 0, 3, &err) == 0 && file_size(path) == 0, "restart truncates");
    lb_out_close(o);
}

static void test_io_errors(void)
{
    struct lb_out *o = NULL;
    struct lb_err err = {0};
    int rc = lb_out_open(&o, "/nonexistent-lorabatch-dir/x.base.jsonl.zst", 0, 3, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "/nonexistent-lorabatch-dir/x.base.jsonl.zst"), "rc %d: %s", rc, err.msg);
    if (access("/dev/full", W_OK)) T_SKIP("no /dev/full");
    rc = lb_out_open(&o, "/dev/full", 0, 3, &err);
    T_CHECK(rc == 0, "open /dev/full: %s", err.msg);
    if (rc) return;
    int64_t len = -7;
    rc = write_range(o, 0, 50, 0, &len, &err);
    if (!rc) rc = lb_out_commit(o, &len, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "/dev/full") && strstr(err.msg, "No space left"), "disk full: rc %d %s",
            rc, err.msg);
    T_CHECK(len == -7, "committed length reported after a failed commit");
    rc = lb_out_write(o, "x", 1, &err);
    T_CHECK(rc == LB_E_IO, "writer keeps going after a failure");
    lb_out_close(o);
}

static void test_line_ok(void)
{
    struct lb_err err = {0};
    char *line;
    size_t n;
    int32_t toks[3] = {5, 0, 128000};
    struct lb_out_ok r = {.id = {.is_str = 1, .s = "q-1", .n_s = 3},
                          .index = 3,
                          .adapter = "sql",
                          .text = "SELECT \"x\"\n\xc3\xa9\0!",
                          .n_text = 15,
                          .finish_reason = "length",
                          .n_tok_prompt = 12,
                          .n_tok_gen = 3,
                          .token_ids = toks,
                          .n_token_ids = 3};
    T_CHECK(lb_out_line_ok(&line, &n, &r, &err) == 0, "%s", err.msg);
    const char *want = "{\"id\":\"q-1\",\"index\":3,\"adapter\":\"sql\",\"text\":\"SELECT \\\"x\\\"\\n\xc3\xa9\\u0000!\","
                       "\"finish_reason\":\"length\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}";
    T_CHECK(n == strlen(line) && !strcmp(line, want), "got  %s\nwant %s", line, want);
    free(line);
    r.with_token_ids = 1;
    r.id = (struct lb_rec_id){.i = 42};
    T_CHECK(lb_out_line_ok(&line, &n, &r, &err) == 0, "%s", err.msg);
    T_CHECK(strstr(line, "{\"id\":42,") == line && strstr(line, ",\"token_ids\":[5,0,128000]}"), "got %s", line);
    free(line);
    r.text = "bad \xff utf8";
    r.n_text = 10;
    int rc = lb_out_line_ok(&line, &n, &r, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "UTF-8") && line == NULL, "invalid text: rc %d %s", rc, err.msg);
    r.text = "\xed\xa0\x80"; /* a UTF-16 surrogate encoded in UTF-8 */
    r.n_text = 3;
    rc = lb_out_line_ok(&line, &n, &r, &err);
    T_CHECK(rc == LB_E_INPUT, "surrogate accepted: rc %d", rc);
}

static void test_line_error(void)
{
    struct lb_err err = {0};
    char *line;
    size_t n;
    struct lb_rec_id id = {.i = 7};
    T_CHECK(lb_out_line_error(&line, &n, &id, 7, "base", "bad_json", "invalid JSON at column 3", &err) == 0, "%s",
            err.msg);
    const char *want = "{\"id\":7,\"index\":7,\"adapter\":\"base\",\"error\":{\"code\":\"bad_json\",\"message\":"
                       "\"invalid JSON at column 3\"}}";
    T_CHECK(!strcmp(line, want), "got %s", line);
    free(line);
    /* messages quoting broken input stay writable: invalid bytes become U+FFFD */
    struct lb_rec_id sid = {.is_str = 1, .s = "a\0b", .n_s = 3};
    T_CHECK(lb_out_line_error(&line, &n, &sid, 9, "sql", "bad_field", "x\xff\xc3(\xe0\x80\x80y", &err) == 0, "%s",
            err.msg);
    json_error_t je;
    json_t *j = json_loadb(line, n, JSON_ALLOW_NUL, &je);
    T_CHECK(j != NULL, "error line is not JSON: %s", line);
    if (j) {
        json_t *m = json_object_get(json_object_get(j, "error"), "message");
        const char *w = "x\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy";
        T_CHECK(m && !strcmp(json_string_value(m), w), "message %s", m ? json_string_value(m) : "(none)");
        json_t *i = json_object_get(j, "id");
        T_CHECK(i && json_string_length(i) == 3 && !memcmp(json_string_value(i), "a\0b", 3), "id kept with its NUL");
        json_decref(j);
    }
    free(line);
}

static void test_reorder(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/r.base.jsonl.zst", tmp_root);
    struct lb_out *o;
    struct lb_err err = {0};
    T_CHECK(lb_out_open(&o, path, 0, 1, &err) == 0, "%s", err.msg);
    if (!o) return;
    struct lb_reorder r;
    struct lb_shard_cursor start = {.offset = 1000, .line = 100};
    T_CHECK(lb_reorder_init(&r, &start, 8, &err) == 0, "%s", err.msg);
    /* indices 100..139 arrive shuffled within windows of 8 */
    int order[40];
    for (int i = 0; i < 40; i++) order[i] = i;
    unsigned x = 12345;
    for (int b = 0; b < 40; b += 8)
        for (int i = 7; i > 0; i--) {
            x = x * 1103515245u + 12345u;
            int j = (int)((x >> 16) % (unsigned)(i + 1));
            int t = order[b + i];
            order[b + i] = order[b + j];
            order[b + j] = t;
        }
    int64_t total = 0;
    for (int k = 0; k < 40; k++) {
        int i = order[k];
        char buf[32];
        int n = snprintf(buf, sizeof buf, "line %d", 100 + i);
        struct lb_shard_cursor after = {.offset = 1000 + 10 * (i + 1), .line = 100 + i + 1};
        T_CHECK(lb_reorder_put(&r, 100 + i, strdup(buf), (size_t)n, &after, &err) == 0, "put %d: %s", i, err.msg);
        int64_t w;
        T_CHECK(lb_reorder_drain(&r, o, &w, &err) == 0, "%s", err.msg);
        total += w;
        T_CHECK(r.next_cursor.line == r.next && r.next_cursor.offset == 1000 + 10 * (r.next - 100), "cursor");
    }
    T_CHECK(total == 40 && r.next == 140 && r.n_held == 0, "drained %lld", (long long)total);
    struct lb_shard_cursor after = {0};
    int rc = lb_reorder_put(&r, 148, strdup("x"), 1, &after, &err);
    T_CHECK(rc == LB_E_INTERNAL, "put beyond the window accepted");
    rc = lb_reorder_put(&r, 139, strdup("x"), 1, &after, &err);
    T_CHECK(rc == LB_E_INTERNAL, "put of an index already written accepted");
    T_CHECK(lb_reorder_put(&r, 141, strdup("x"), 1, &after, &err) == 0, "put 141");
    rc = lb_reorder_put(&r, 141, strdup("y"), 1, &after, &err);
    T_CHECK(rc == LB_E_INTERNAL && strstr(err.msg, "twice"), "duplicate accepted");
    int64_t w = -1;
    T_CHECK(lb_reorder_drain(&r, o, &w, &err) == 0 && w == 0, "drain across a gap wrote %lld", (long long)w);
    lb_reorder_free(&r); /* frees the held line 141 */
    int64_t len;
    T_CHECK(lb_out_commit(o, &len, &err) == 0, "%s", err.msg);
    lb_out_close(o);
    size_t n;
    int frames;
    char *got = unzstd(path, &n, &frames);
    char want[2048];
    size_t k = 0;
    for (int i = 100; i < 140; i++) k += (size_t)snprintf(want + k, sizeof want - k, "line %d\n", i);
    T_CHECK(got && n == k && !memcmp(got, want, k), "reordered output wrong");
    free(got);
}

/* ------------------------------------------------------------------ resume end to end */

/* The loop an engine runs, on these modules only: read records, answer out of order,
 * reorder, write, commit + checkpoint every few lines. "Crashes" (stops without a commit)
 * once it has written crash_after lines in this run. Returns 1 when finished, 0 after a
 * crash, -1 on error. */
static int pipeline_run(const char *shard, const char *out, const char *ckpt, int crash_after)
{
    struct lb_err err = {0};
    struct lb_ckpt c;
    lb_ckpt_init(&c);
    int found = 0, ret = -1;
    struct lb_out *o = NULL;
    struct lb_shard *s = NULL;
    struct lb_reorder r = {0};
    if (lb_ckpt_read(ckpt, &c, &found, &err)) goto done;
    if (!found) {
        c.n_unit = 1;
        c.units = calloc(1, sizeof *c.units);
        c.units[0].name = strdup("u.base.jsonl.zst");
        c.canon = strdup("x=1\n");
        c.n_canon = 4;
    }
    if (c.finished) {
        ret = 1;
        goto done;
    }
    struct lb_ckpt_unit *u = &c.units[0];
    struct lb_shard_cursor cur = {u->in_offset, u->in_line};
    if (lb_out_open(&o, out, u->out_committed_bytes, 3, &err) || lb_shard_open(&s, shard, 0, &err) ||
        lb_shard_seek(s, &cur, &err) || lb_reorder_init(&r, &cur, 16, &err))
        goto done;
    struct lb_gen_param def = {.max_tokens = 4, .top_p = 1};
    int written = 0, since_commit = 0, eof = 0;
    while (!eof) {
        /* a batch of up to 5 records, answered in reverse order */
        char *lines[5];
        size_t ns[5];
        int64_t idx[5];
        struct lb_shard_cursor after[5];
        int nb = 0;
        while (nb < 5) {
            struct lb_shard_line l;
            int rc = lb_shard_next(s, &l, &err);
            if (rc < 0) goto done;
            if (rc == 0) {
                eof = 1;
                break;
            }
            struct lb_record rec;
            lb_record_parse(&rec, l.index, l.data, l.n, &def, &err);
            if (rec.err_code) {
                lb_out_line_error(&lines[nb], &ns[nb], &rec.id, rec.index, "base", rec.err_code, rec.err_msg, &err);
            } else {
                struct lb_out_ok ok = {.id = rec.id, .index = rec.index, .adapter = "base", .text = rec.prompt,
                                       .n_text = rec.n_prompt, .finish_reason = "length", .n_tok_prompt = 1,
                                       .n_tok_gen = 4};
                lb_out_line_ok(&lines[nb], &ns[nb], &ok, &err);
            }
            idx[nb] = l.index;
            lb_shard_tell(s, &after[nb]);
            u->n_rec_error += rec.err_code != NULL; /* counted when committed: see below */
            lb_record_free(&rec);
            nb++;
        }
        for (int k = nb - 1; k >= 0; k--)
            if (lb_reorder_put(&r, idx[k], lines[k], ns[k], &after[k], &err)) goto done;
        int64_t w;
        if (lb_reorder_drain(&r, o, &w, &err)) goto done;
        written += (int)w;
        since_commit += (int)w;
        if (written >= crash_after) {
            ret = 0; /* crash: uncommitted lines may be partly on disk */
            goto done;
        }
        if (since_commit >= 7 || eof) {
            int64_t len;
            if (lb_out_commit(o, &len, &err)) goto done;
            u->out_committed_bytes = len;
            u->n_rec_done += r.next - u->in_line;
            u->in_offset = r.next_cursor.offset;
            u->in_line = r.next_cursor.line;
            if (eof) u->flags = LB_CKPT_UNIT_FINISHED, c.finished = 1;
            c.n_rec_done = u->n_rec_done;
            u->n_rec_error = 0; /* error counts are not the point here */
            c.n_rec_error = 0;
            c.seq++;
            if (lb_ckpt_write(ckpt, &c, &err)) goto done;
            since_commit = 0;
        }
    }
    ret = 1;
done:
    if (ret < 0) fprintf(stderr, "  pipeline: %s\n", err.msg);
    lb_reorder_free(&r);
    lb_shard_close(s);
    lb_out_close(o);
    lb_ckpt_free(&c);
    return ret;
}

static void test_pipeline_resume(void)
{
    char shard[600], ref[600], ref_ck[600], out[600], ck[600];
    snprintf(shard, sizeof shard, "%s/in.jsonl.zst", tmp_root);
    /* 120 records, some bad, as a multi-frame .zst */
    char *text = malloc(1 << 16);
    size_t n = 0;
    for (int i = 0; i < 120; i++) {
        if (i % 17 == 5) n += (size_t)sprintf(text + n, "{\"prompt\": oops}\n");
        else if (i % 23 == 7) n += (size_t)sprintf(text + n, "\n");
        else n += (size_t)sprintf(text + n, "{\"id\":\"r%d\",\"prompt\":\"record %d %.*s\"}\n", i, i, i % 40,
                                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN");
    }
    size_t cap = ZSTD_compressBound(n) * 2 + 1024, zn = 0;
    char *z = malloc(cap);
    for (size_t k = 0; k < n; k += 700) zn += ZSTD_compress(z + zn, cap - zn, text + k, n - k < 700 ? n - k : 700, 3);
    FILE *f = fopen(shard, "wb");
    fwrite(z, 1, zn, f);
    fclose(f);
    free(z);
    free(text);

    snprintf(ref, sizeof ref, "%s/ref.base.jsonl.zst", tmp_root);
    snprintf(ref_ck, sizeof ref_ck, "%s/ref.ckpt", tmp_root);
    T_CHECK(pipeline_run(shard, ref, ref_ck, 1 << 30) == 1, "uninterrupted run");
    size_t n_ref;
    int fr;
    char *want = unzstd(ref, &n_ref, &fr);
    int n_lines = 0;
    for (size_t k = 0; want && k < n_ref; k++) n_lines += want[k] == '\n';
    T_CHECK(want && n_lines == 120, "reference has %d lines", n_lines);

    int crash_points[] = {1, 3, 7, 8, 13, 29, 50};
    for (size_t t = 0; t < sizeof crash_points / sizeof crash_points[0]; t++) {
        snprintf(out, sizeof out, "%s/c%zu.base.jsonl.zst", tmp_root, t);
        snprintf(ck, sizeof ck, "%s/c%zu.ckpt", tmp_root, t);
        int runs = 0, rc;
        /* the crash point moves one line later each run, so runs that crash before their
         * first commit happen too, yet the job progresses */
        while ((rc = pipeline_run(shard, out, ck, crash_points[t] + runs)) == 0 && runs < 500) runs++;
        T_CHECK(rc == 1, "crash every %d lines: run failed", crash_points[t]);
        T_CHECK(pipeline_run(shard, out, ck, 1) == 1, "a finished job re-run is a no-op");
        size_t n_got;
        char *got = unzstd(out, &n_got, &fr);
        T_CHECK(got && n_got == n_ref && !memcmp(got, want, n_ref), "crash every %d lines (%d runs): output differs",
                crash_points[t], runs);
        T_CHECK(runs > 0, "no crash happened");
        free(got);
    }
    free(want);
}

int main(void)
{
    make_tmp();
    T_RUN(test_uninterrupted);
    T_RUN(test_resume_after_crash);
    T_RUN(test_io_errors);
    T_RUN(test_line_ok);
    T_RUN(test_line_error);
    T_RUN(test_reorder);
    T_RUN(test_pipeline_resume);
    return T_DONE();
}
