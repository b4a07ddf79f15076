/* test_shard.c — shard streaming (.jsonl, multi-frame .jsonl.zst), long lines, seek to a
 * cursor, damaged zstd; the record catalogue (good and bad lines). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "shard.h"
#include "t.h"

static char tmp_root[512];

static void make_tmp(void)
{
    const char *base = getenv("LB_TEST_OUT");
    snprintf(tmp_root, sizeof tmp_root, "%s/shard.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_root)) {
        snprintf(tmp_root, sizeof tmp_root, "/tmp/shard.XXXXXX");
        if (!mkdtemp(tmp_root)) perror("mkdtemp");
    }
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

/* Compresses src as several independent frames cut every `chunk` bytes (mid-line on purpose). */
static void write_zst(const char *path, const char *src, size_t n, size_t chunk, int *n_frames)
{
    size_t cap = ZSTD_compressBound(n) + 64 * (n / chunk + 1);
    char *dst = malloc(cap);
    size_t k = 0;
    *n_frames = 0;
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        k += ZSTD_compress(dst + k, cap - k, src + i, m, 3);
        ++*n_frames;
    }
    write_file(path, dst, k);
    free(dst);
}

/* The test corpus: varied lines, one of 1.5 MB (beyond the reader's first buffer), CRLF,
 * an empty line, and a last line without '\n'. */
struct corpus {
    char *text;
    size_t n;
    int n_lines;
    size_t starts[400], lens[400]; /* per expected line: offset, length without \r\n */
};

static void corpus_build(struct corpus *c)
{
    size_t cap = 4u << 20;
    c->text = malloc(cap);
    c->n = 0;
    c->n_lines = 0;
    unsigned x = 7;
    for (int i = 0; i < 300; i++) {
        c->starts[c->n_lines] = c->n;
        size_t len;
        if (i == 5) len = 0;                      /* empty line */
        else if (i == 150) len = 1500000;         /* long line */
        else {
            x = x * 1103515245u + 12345u;
            len = 1 + (x >> 16) % 2000;
        }
        for (size_t k = 0; k < len; k++) c->text[c->n++] = (char)('a' + (k + (size_t)i) % 26);
        c->lens[c->n_lines++] = len;
        if (i % 7 == 3) c->text[c->n++] = '\r';
        if (i != 299) c->text[c->n++] = '\n';
    }
}

/* Reads every line; checks them against the corpus from line `first` on. */
static int check_all(struct lb_shard *s, const struct corpus *c, int first, size_t max_line)
{
    struct lb_shard_line l;
    struct lb_err err = {0};
    int i = first, bad = 0, rc;
    while ((rc = lb_shard_next(s, &l, &err)) == 1) {
        if (i >= c->n_lines) {
            bad++;
            break;
        }
        int ok = l.index == i && l.offset == (int64_t)c->starts[i];
        if (c->lens[i] > max_line) ok = ok && l.too_long && !l.data && l.n >= c->lens[i];
        else ok = ok && !l.too_long && l.n == c->lens[i] && !memcmp(l.data, c->text + c->starts[i], l.n);
        if (!ok) {
            if (bad < 3)
                fprintf(stderr, "  line %d: got index %lld offset %lld n %zu too_long %d\n", i, (long long)l.index,
                        (long long)l.offset, l.n, l.too_long);
            bad++;
        }
        i++;
    }
    if (rc < 0) {
        fprintf(stderr, "  read error: %s\n", err.msg);
        bad++;
    }
    if (i != c->n_lines) {
        fprintf(stderr, "  read %d lines, want %d\n", i, c->n_lines);
        bad++;
    }
    struct lb_shard_cursor end;
    lb_shard_tell(s, &end);
    if (end.offset != (int64_t)c->n || end.line != c->n_lines) bad++;
    return bad;
}

static void stream_and_seek(const char *path, const struct corpus *c, size_t max_line)
{
    struct lb_shard *s;
    struct lb_err err = {0};
    T_CHECK(lb_shard_open(&s, path, max_line, &err) == 0, "%s", err.msg);
    if (!s) return;
    T_CHECK(check_all(s, c, 0, max_line ? max_line : LB_SHARD_MAX_LINE) == 0, "%s: stream differs", path);
    lb_shard_close(s);

    /* cursors saved on the way, then seek to each in a fresh reader (as a resume does) */
    int probes[] = {0, 1, 5, 6, 149, 150, 151, 298, 299, 300};
    for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++) {
        int k = probes[p];
        struct lb_shard_cursor cur = {.offset = k < c->n_lines ? (int64_t)c->starts[k] : (int64_t)c->n, .line = k};
        T_CHECK(lb_shard_open(&s, path, max_line, &err) == 0, "%s", err.msg);
        if (!s) return;
        /* read a few lines first: seeking must reset the reader's state */
        struct lb_shard_line l;
        for (int j = 0; j < 3; j++) lb_shard_next(s, &l, &err);
        int rc = lb_shard_seek(s, &cur, &err);
        T_CHECK(rc == 0, "seek to line %d: %s", k, err.msg);
        if (!rc) T_CHECK(check_all(s, c, k, max_line ? max_line : LB_SHARD_MAX_LINE) == 0, "after seek to line %d", k);
        lb_shard_close(s);
    }
    /* bad cursors: mid-line and past the end */
    T_CHECK(lb_shard_open(&s, path, max_line, &err) == 0, "%s", err.msg);
    struct lb_shard_cursor mid = {.offset = (int64_t)c->starts[10] + 3, .line = 10};
    int rc = lb_shard_seek(s, &mid, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "not at a line start"), "mid-line cursor: rc %d %s", rc, err.msg);
    struct lb_shard_cursor past = {.offset = (int64_t)c->n + 10, .line = 301};
    rc = lb_shard_seek(s, &past, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "shorter"), "cursor past the end: rc %d %s", rc, err.msg);
    lb_shard_close(s);
}

static void test_plain(void)
{
    struct corpus c;
    corpus_build(&c);
    char path[600];
    snprintf(path, sizeof path, "%s/plain.jsonl", tmp_root);
    write_file(path, c.text, c.n);
    stream_and_seek(path, &c, 0);
    free(c.text);
}

static void test_zst_multiframe(void)
{
    struct corpus c;
    corpus_build(&c);
    char path[600];
    snprintf(path, sizeof path, "%s/multi.jsonl.zst", tmp_root);
    int frames;
    write_zst(path, c.text, c.n, 100003, &frames);
    T_CHECK(frames > 10, "only %d frames", frames);
    stream_and_seek(path, &c, 0);
    free(c.text);
}

/* A cap below the long line: it is reported too_long with its length, and the lines after
 * it are intact (plain and zst; discard mode runs when the line overflows the window). */
static void test_too_long(void)
{
    struct corpus c;
    corpus_build(&c);
    char path[600];
    snprintf(path, sizeof path, "%s/cap.jsonl", tmp_root);
    write_file(path, c.text, c.n);
    stream_and_seek(path, &c, 4096);
    snprintf(path, sizeof path, "%s/cap.jsonl.zst", tmp_root);
    int frames;
    write_zst(path, c.text, c.n, 65536, &frames);
    stream_and_seek(path, &c, 4096);
    stream_and_seek(path, &c, 1999); /* some ordinary lines are over this cap too */
    free(c.text);

    /* a line exactly at the cap is fine; one byte more is not */
    snprintf(path, sizeof path, "%s/edge.jsonl", tmp_root);
    write_file(path, "abcd\nabcde\nab", 13);
    struct lb_shard *s;
    struct lb_err err = {0};
    struct lb_shard_line l;
    T_CHECK(lb_shard_open(&s, path, 4, &err) == 0, "%s", err.msg);
    T_CHECK(lb_shard_next(s, &l, &err) == 1 && !l.too_long && l.n == 4, "line at the cap");
    T_CHECK(lb_shard_next(s, &l, &err) == 1 && l.too_long && l.n == 5 && l.offset == 5, "line over the cap");
    T_CHECK(lb_shard_next(s, &l, &err) == 1 && !l.too_long && l.n == 2 && l.offset == 11 && l.index == 2,
            "line after");
    T_CHECK(lb_shard_next(s, &l, &err) == 0, "eof");
    T_CHECK(lb_shard_next(s, &l, &err) == 0, "eof again");
    lb_shard_close(s);
}

static void test_small_files(void)
{
    char path[600];
    struct lb_shard *s;
    struct lb_err err = {0};
    struct lb_shard_line l;
    snprintf(path, sizeof path, "%s/empty.jsonl", tmp_root);
    write_file(path, "", 0);
    T_CHECK(lb_shard_open(&s, path, 0, &err) == 0 && lb_shard_next(s, &l, &err) == 0, "empty file has no lines");
    lb_shard_close(s);
    snprintf(path, sizeof path, "%s/one.jsonl", tmp_root);
    write_file(path, "{}\n", 3);
    T_CHECK(lb_shard_open(&s, path, 0, &err) == 0, "%s", err.msg);
    T_CHECK(lb_shard_next(s, &l, &err) == 1 && l.n == 2, "one line");
    T_CHECK(lb_shard_next(s, &l, &err) == 0, "a final newline adds no line");
    lb_shard_close(s);
    snprintf(path, sizeof path, "%s/empty.jsonl.zst", tmp_root);
    int frames;
    write_zst(path, "", 0, 10, &frames);
    T_CHECK(lb_shard_open(&s, path, 0, &err) == 0 && lb_shard_next(s, &l, &err) == 0, "empty zst file");
    lb_shard_close(s);
    int rc = lb_shard_open(&s, "/nonexistent/x.jsonl", 0, &err);
    T_CHECK(rc == LB_E_IO && s == NULL && strstr(err.msg, "/nonexistent/x.jsonl"), "rc %d %s", rc, err.msg);
}

static void test_zst_damaged(void)
{
    char path[600], text[5000];
    size_t n = 0;
    for (int i = 0; i < 200; i++) n += (size_t)snprintf(text + n, sizeof text - n, "{\"prompt\":\"%d\"}\n", i);
    snprintf(path, sizeof path, "%s/trunc.jsonl.zst", tmp_root);
    size_t cap = ZSTD_compressBound(n);
    char *z = malloc(cap);
    size_t zn = ZSTD_compress(z, cap, text, n, 3);
    write_file(path, z, zn - 5); /* cut inside the frame */
    struct lb_shard *s;
    struct lb_err err = {0};
    struct lb_shard_line l;
    T_CHECK(lb_shard_open(&s, path, 0, &err) == 0, "%s", err.msg);
    int rc;
    while ((rc = lb_shard_next(s, &l, &err)) == 1) {}
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "trunc.jsonl.zst") && strstr(err.msg, "truncated"), "rc %d %s", rc,
            err.msg);
    lb_shard_close(s);
    snprintf(path, sizeof path, "%s/notzstd.jsonl.zst", tmp_root);
    write_file(path, text, n);
    T_CHECK(lb_shard_open(&s, path, 0, &err) == 0, "%s", err.msg);
    rc = lb_shard_next(s, &l, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "bad zstd data"), "rc %d %s", rc, err.msg);
    lb_shard_close(s);
    free(z);
}

/* ------------------------------------------------------------------ records */

struct rec_case {
    const char *line;
    const char *code;  /* NULL: good */
    const char *msg;   /* substring of the message */
};

static const struct rec_case rec_cases[] = {
    {"{\"prompt\":\"hi\"}", NULL, NULL},
    {"{\"prompt_token_ids\":[1,2,3]}", NULL, NULL},
    {"  {\"prompt\":\"x\", \"id\": \"a\"}  ", NULL, NULL},
    {"", "bad_json", "empty line"},
    {"   ", "bad_json", "empty line"},
    {"{\"prompt\":\"hi\"", "bad_json", "column"},
    {"{\"prompt\":\"hi\"} x", "bad_json", "column"},
    {"[1,2]", "bad_json", "must be a JSON object"},
    {"\"just a string\"", "bad_json", "must be a JSON object"},
    {"{\"prompt\":\"a\xff\"}", "bad_utf8", NULL},
    {"{\"prompt\":\"\xed\xa0\x80\"}", "bad_utf8", NULL},
    {"{\"prompt\":\"a\",\"prompt\":\"b\"}", "bad_json", "duplicate"},
    {"{\"prompt\":\"a\",\"promt\":\"b\"}", "bad_field", "unknown field \"promt\""},
    {"{\"prompt\":5}", "bad_field", "field \"prompt\": expected a string"},
    {"{\"prompt\":\"\"}", "bad_field", "field \"prompt\": empty"},
    {"{\"prompt_token_ids\":[]}", "bad_field", "prompt_token_ids\": empty"},
    {"{\"prompt_token_ids\":[1,\"2\"]}", "bad_field", "element 1 is a string"},
    {"{\"prompt_token_ids\":[1,-2]}", "bad_field", "element 1 is out of range"},
    {"{\"prompt_token_ids\":[1,2147483648]}", "bad_field", "element 1 is out of range"},
    {"{\"prompt_token_ids\":[1.5]}", "bad_field", "element 0 is a real number"},
    {"{\"prompt_token_ids\":\"12\"}", "bad_field", "expected an array"},
    {"{\"prompt\":\"a\",\"prompt_token_ids\":[1]}", "bad_field", "not both"},
    {"{\"id\":1}", "bad_field", "no prompt"},
    {"{}", "bad_field", "no prompt"},
    {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", "unsupported", "chat templates not supported yet"},
    {"{\"messages\":[],\"prompt\":\"x\"}", "bad_field", "not several"},
    {"{\"prompt\":\"a\",\"id\":[1]}", "bad_field", "field \"id\": expected a string or an integer"},
    {"{\"prompt\":\"a\",\"id\":1.5}", "bad_field", "field \"id\""},
    {"{\"prompt\":\"a\",\"max_tokens\":0}", "bad_field", "field \"max_tokens\": must be in [1,"},
    {"{\"prompt\":\"a\",\"max_tokens\":\"9\"}", "bad_field", "field \"max_tokens\": expected an integer"},
    {"{\"prompt\":\"a\",\"max_tokens\":10.0}", "bad_field", "field \"max_tokens\": expected an integer"},
    {"{\"prompt\":\"a\",\"temperature\":-0.5}", "bad_field", "field \"temperature\""},
    {"{\"prompt\":\"a\",\"temperature\":null}", "bad_field", "field \"temperature\": expected a number, got null"},
    {"{\"prompt\":\"a\",\"top_p\":0}", "bad_field", "field \"top_p\": must be in (0, 1]"},
    {"{\"prompt\":\"a\",\"top_p\":1.01}", "bad_field", "field \"top_p\""},
    {"{\"prompt\":\"a\",\"top_k\":-1}", "bad_field", "field \"top_k\""},
    {"{\"prompt\":\"a\",\"top_k\":true}", "bad_field", "field \"top_k\": expected an integer, got a boolean"},
    {"{\"prompt\":\"a\",\"seed\":-3}", "bad_field", "field \"seed\""},
    {"{\"prompt\":\"a\",\"seed\":99999999999999999999}", "bad_json", "column"},
    {"{\"prompt\":\"a\",\"stop\":5}", "bad_field", "field \"stop\""},
    {"{\"prompt\":\"a\",\"stop\":[\"x\",7]}", "bad_field", "field \"stop\""},
    {"{\"prompt\":\"a\",\"stop\":[\"\"]}", "bad_field", "non-empty"},
    {"{\"prompt\":\"a\",\"stop\":\"a\\u0000b\"}", "bad_field", "U+0000"},
    {"{\"prompt\\u0000\":\"a\"}", "bad_json", "NUL byte in object key"},
};

static void test_record_catalogue(void)
{
    struct lb_gen_param def = {.max_tokens = 256, .temperature = 0, .top_p = 1, .top_k = 0, .seed = 9};
    for (size_t i = 0; i < sizeof rec_cases / sizeof rec_cases[0]; i++) {
        const struct rec_case *k = &rec_cases[i];
        struct lb_record r;
        struct lb_err err = {0};
        int rc = lb_record_parse(&r, 41, k->line, strlen(k->line), &def, &err);
        T_CHECK(rc == 0, "case %zu: rc %d", i, rc);
        if (!k->code) {
            T_CHECK(r.err_code == NULL, "case %zu (%s): unexpected error %s: %s", i, k->line, r.err_code, r.err_msg);
        } else {
            T_CHECK(r.err_code && !strcmp(r.err_code, k->code), "case %zu (%s): code %s, want %s (%s)", i, k->line,
                    r.err_code ? r.err_code : "(none)", k->code, r.err_msg);
            T_CHECK(!k->msg || strstr(r.err_msg, k->msg), "case %zu (%s): message \"%s\" lacks \"%s\"", i, k->line,
                    r.err_msg, k->msg);
        }
        T_CHECK(r.index == 41, "case %zu: index", i);
        lb_record_free(&r);
    }
}

static void test_record_fields(void)
{
    char *stops[] = {"</s>"};
    struct lb_gen_param def = {.max_tokens = 256, .temperature = 0.5f, .top_p = 0.9f, .top_k = 40, .seed = 9,
                               .n_stop = 1, .stop = stops};
    struct lb_record r;
    struct lb_err err = {0};
    const char *l1 = "{\"prompt\":\"a\\u0000b \\u00e9\"}";
    T_CHECK(lb_record_parse(&r, 3, l1, strlen(l1), &def, &err) == 0 && !r.err_code, "%s", r.err_msg);
    T_CHECK(r.n_prompt == 6 && !memcmp(r.prompt, "a\0b \xc3\xa9", 6), "prompt with NUL kept");
    T_CHECK(!r.id.is_str && r.id.i == 3, "default id is the index");
    T_CHECK(r.gen.max_tokens == 256 && r.gen.temperature == 0.5f && r.gen.top_p == 0.9f && r.gen.top_k == 40 &&
                r.gen.seed == 9 && r.gen.n_stop == 1 && !strcmp(r.gen.stop[0], "</s>") && r.gen.stop[0] != stops[0],
            "defaults not copied");
    lb_record_free(&r);

    const char *l2 = "{\"id\":\"q\\u00001\",\"prompt_token_ids\":[128000,0,7],\"max_tokens\":5,\"temperature\":1,"
                     "\"top_p\":0.25,\"top_k\":3,\"seed\":12345678901234,\"stop\":[\"\\n\\n\",\"END\"]}";
    T_CHECK(lb_record_parse(&r, 0, l2, strlen(l2), &def, &err) == 0 && !r.err_code, "%s", r.err_msg);
    T_CHECK(r.id.is_str && r.id.n_s == 3 && !memcmp(r.id.s, "q\0" "1", 3), "string id with NUL");
    T_CHECK(!r.prompt && r.n_prompt_token_ids == 3 && r.prompt_token_ids[0] == 128000 && r.prompt_token_ids[2] == 7,
            "token ids");
    T_CHECK(r.gen.max_tokens == 5 && r.gen.temperature == 1.0f && r.gen.top_p == 0.25f && r.gen.top_k == 3 &&
                r.gen.seed == 12345678901234ull,
            "overrides");
    T_CHECK(r.gen.n_stop == 2 && !strcmp(r.gen.stop[0], "\n\n") && !strcmp(r.gen.stop[1], "END"), "stop list");
    lb_record_free(&r);

    const char *l3 = "{\"prompt\":\"x\",\"stop\":\"###\",\"id\":-5}";
    T_CHECK(lb_record_parse(&r, 0, l3, strlen(l3), &def, &err) == 0 && !r.err_code, "%s", r.err_msg);
    T_CHECK(r.gen.n_stop == 1 && !strcmp(r.gen.stop[0], "###") && r.id.i == -5, "single stop string replaces defaults");
    lb_record_free(&r);
    const char *l4 = "{\"prompt\":\"x\",\"stop\":[]}";
    T_CHECK(lb_record_parse(&r, 0, l4, strlen(l4), &def, &err) == 0 && !r.err_code && r.gen.n_stop == 0,
            "empty stop list clears defaults");
    lb_record_free(&r);

    T_CHECK(lb_record_too_long(&r, 8, 99999, &def, &err) == 0 && r.err_code && !strcmp(r.err_code, "line_too_long") &&
                strstr(r.err_msg, "99999") && r.id.i == 8,
            "too long record");
    lb_record_free(&r);
}

int main(void)
{
    make_tmp();
    T_RUN(test_plain);
    T_RUN(test_zst_multiframe);
    T_RUN(test_too_long);
    T_RUN(test_small_files);
    T_RUN(test_zst_damaged);
    T_RUN(test_record_catalogue);
    T_RUN(test_record_fields);
    return T_DONE();
}
