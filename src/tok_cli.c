/* tok_cli.c — `lorabatch tokenize`: the tokenizer from the command line, for people,
 * for the conformance tests (tests/cli/tok_conformance.sh) and for the benchmark
 * (bench/tok_bench.sh).
 *
 *   lorabatch tokenize --tokenizer DIR [options] [--text STR]
 *       encodes STR (default: all of standard input) and prints {"ids":[...],"decoded":"..."}
 *   lorabatch tokenize --tokenizer DIR --jsonl FILE
 *       one JSON string or {"text": ...} per line -> one {"ids":[...],"decoded":"..."} per
 *       line, or {"error":"..."} for a line that fails (the others go on; exit 3 at the end)
 *   lorabatch tokenize --tokenizer DIR --decode FILE
 *       one JSON array of ids or {"ids": [...]} per line -> one {"text":"..."} per line
 *   lorabatch tokenize --tokenizer DIR --bench FILE [--whole]
 *       encodes FILE line by line (or --whole, as one string) on one thread and prints
 *       {"bytes","tokens","seconds","mb_per_s"}
 * Options: --special (add the post-processor's special tokens), --config-bos (and BOS
 * when tokenizer_config.json asks for it), --skip-special (decoding leaves special tokens
 * out), --check-stream (also decode through the incremental decoder, one id at a time,
 * and fail the line if the text differs).
 * FILE may be "-" for standard input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "tok.h"

#include <jansson.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: lorabatch tokenize --tokenizer DIR [--special] [--config-bos] [--skip-special]\n"
               "                          [--check-stream] [--text STR | --jsonl FILE | --decode FILE |\n"
               "                          --bench FILE [--whole]]\n");
}

struct opts {
    const char *dir, *text, *jsonl, *decode, *bench;
    int enc_flags, dec_flags, check_stream, whole;
};

static FILE *open_in(const char *path)
{
    if (!strcmp(path, "-")) return stdin;
    return fopen(path, "rb");
}

/* Prints "ids":[...] */
static void print_ids(FILE *f, const struct lb_tok_ids *v)
{
    fputs("\"ids\":[", f);
    for (size_t i = 0; i < v->n; i++) fprintf(f, i ? ",%d" : "%d", v->ids[i]);
    fputc(']', f);
}

static int print_json_string(FILE *f, const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (!j) return -1;
    int rc = json_dumpf(j, f, JSON_ENCODE_ANY);
    json_decref(j);
    return rc;
}

static void print_error(FILE *f, const char *msg)
{
    fputs("{\"error\":", f);
    print_json_string(f, msg, strlen(msg));
    fputs("}\n", f);
}

static int valid_utf8(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

/* Decodes ids whole and (with check) one at a time; fails when the two differ. */
static int decode_checked(const struct lb_tok *t, const struct lb_tok_ids *ids, const struct opts *o,
                          struct lb_tok_text *text, struct lb_tok_text *streamed, struct lb_err *err)
{
    int rc = lb_tok_decode(t, ids->ids, ids->n, o->dec_flags, text, err);
    if (rc || !o->check_stream) return rc;
    struct lb_tok_stream s;
    lb_tok_stream_init(&s, t, o->dec_flags);
    streamed->n = 0;
    for (size_t i = 0; i < ids->n && !rc; i++) {
        size_t before = streamed->n;
        rc = lb_tok_stream_feed(&s, ids->ids[i], streamed, err);
        /* each chunk must be valid UTF-8 on its own: only whole characters come out */
        if (!rc && streamed->n > before && !valid_utf8(streamed->s + before, streamed->n - before))
            rc = lb_err_set(err, LB_E_INTERNAL, "stream emitted invalid UTF-8 after id %zu", i);
    }
    if (!rc) rc = lb_tok_stream_flush(&s, streamed, err);
    if (!rc && (streamed->n != text->n || memcmp(streamed->s, text->s, text->n)))
        rc = lb_err_set(err, LB_E_INTERNAL, "incremental decoding differs from whole decoding");
    return rc;
}

static int encode_one(const struct lb_tok *t, const char *s, size_t n, const struct opts *o, struct lb_tok_ids *ids,
                      struct lb_tok_text *text, struct lb_tok_text *streamed, FILE *out, struct lb_err *err)
{
    int rc = lb_tok_encode(t, s, n, o->enc_flags, ids, err);
    if (!rc) rc = decode_checked(t, ids, o, text, streamed, err);
    if (rc) return rc;
    fputc('{', out);
    print_ids(out, ids);
    fputs(",\"decoded\":", out);
    if (print_json_string(out, text->s ? text->s : "", text->n))
        return lb_err_set(err, LB_E_INTERNAL, "decoded text is not valid UTF-8");
    fputs("}\n", out);
    return 0;
}

static int run_jsonl(const struct lb_tok *t, const struct opts *o, FILE *in, int decode)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, n_bad = 0;
    struct lb_tok_ids ids = {0};
    struct lb_tok_text text = {0}, streamed = {0};
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        struct lb_err err = {0};
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        int rc;
        if (!j) {
            rc = lb_err_set(&err, LB_E_INPUT, "not JSON: %s (column %d)", je.text, je.column);
        } else if (!decode) {
            json_t *s = json_is_object(j) ? json_object_get(j, "text") : j;
            if (!json_is_string(s))
                rc = lb_err_set(&err, LB_E_INPUT, "expected a JSON string or {\"text\": string}");
            else
                rc = encode_one(t, json_string_value(s), json_string_length(s), o, &ids, &text, &streamed, stdout, &err);
        } else {
            json_t *a = json_is_object(j) ? json_object_get(j, "ids") : j;
            rc = json_is_array(a) ? 0 : lb_err_set(&err, LB_E_INPUT, "expected a JSON array of ids or {\"ids\": [...]}");
            ids.n = 0;
            size_t i;
            json_t *x;
            json_array_foreach(a, i, x) {
                if (rc) break;
                if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
                    rc = lb_err_set(&err, LB_E_INPUT, "ids[%zu] is not a token id", i);
                    break;
                }
                if (ids.n == ids.cap) {
                    size_t nc = ids.cap ? ids.cap * 2 : 64;
                    int32_t *p = realloc(ids.ids, nc * sizeof *p);
                    if (!p) { rc = lb_err_set(&err, LB_E_OOM, "out of memory"); break; }
                    ids.ids = p;
                    ids.cap = nc;
                }
                ids.ids[ids.n++] = (int32_t)json_integer_value(x);
            }
            if (!rc) rc = decode_checked(t, &ids, o, &text, &streamed, &err);
            if (!rc) {
                fputs("{\"text\":", stdout);
                print_json_string(stdout, text.s ? text.s : "", text.n);
                fputs("}\n", stdout);
            }
        }
        json_decref(j);
        if (rc) {
            n_bad++;
            lb_err_prefix(&err, "line %ld", lineno);
            print_error(stdout, err.msg);
        }
    }
    int read_err = ferror(in);
    free(line);
    lb_tok_ids_free(&ids);
    lb_tok_text_free(&text);
    lb_tok_text_free(&streamed);
    if (read_err) {
        fprintf(stderr, "lorabatch tokenize: read error\n");
        return LB_EXIT_IO;
    }
    if (fflush(stdout)) return LB_EXIT_IO;
    if (n_bad) {
        fprintf(stderr, "lorabatch tokenize: %ld of %ld lines failed\n", n_bad, lineno);
        return LB_EXIT_DATA;
    }
    return LB_EXIT_OK;
}

static int read_all(FILE *f, char **buf, size_t *n)
{
    size_t cap = 1 << 20;
    *n = 0;
    *buf = malloc(cap);
    if (!*buf) return -1;
    for (;;) {
        if (*n == cap) {
            char *p = realloc(*buf, cap * 2);
            if (!p) return -1;
            *buf = p;
            cap *= 2;
        }
        size_t got = fread(*buf + *n, 1, cap - *n, f);
        *n += got;
        if (!got) return ferror(f) ? -1 : 0;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run_bench(const struct lb_tok *t, const struct opts *o)
{
    FILE *f = open_in(o->bench);
    if (!f) {
        fprintf(stderr, "lorabatch tokenize: cannot open %s\n", o->bench);
        return LB_EXIT_USAGE;
    }
    char *buf = NULL;
    size_t n = 0;
    int r = read_all(f, &buf, &n);
    if (f != stdin) fclose(f);
    if (r) {
        free(buf);
        fprintf(stderr, "lorabatch tokenize: cannot read %s\n", o->bench);
        return LB_EXIT_IO;
    }
    struct lb_tok_ids ids = {0};
    struct lb_err err = {0};
    size_t n_tokens = 0;
    int rc = 0;
    double t0 = now_s();
    if (o->whole) {
        rc = lb_tok_encode(t, buf, n, o->enc_flags, &ids, &err);
        n_tokens = ids.n;
    } else {
        size_t pos = 0;
        while (pos < n && !rc) {
            const char *nl = memchr(buf + pos, '\n', n - pos);
            size_t end = nl ? (size_t)(nl - buf) : n;
            rc = lb_tok_encode(t, buf + pos, end - pos, o->enc_flags, &ids, &err);
            n_tokens += ids.n;
            pos = end + 1;
        }
    }
    double dt = now_s() - t0;
    free(buf);
    lb_tok_ids_free(&ids);
    if (rc) {
        fprintf(stderr, "lorabatch tokenize: %s\n", err.msg);
        return lb_exit_code(rc);
    }
    printf("{\"bytes\":%zu,\"tokens\":%zu,\"seconds\":%.4f,\"mb_per_s\":%.2f}\n", n, n_tokens, dt,
           dt > 0 ? (double)n / 1e6 / dt : 0.0);
    return LB_EXIT_OK;
}

int lb_cmd_tokenize(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof o);
    for (int i = 2; i < argc; i++) { /* argv[1] is "tokenize" */
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "--tokenizer")) slot = &o.dir;
        else if (!strcmp(a, "--text")) slot = &o.text;
        else if (!strcmp(a, "--jsonl")) slot = &o.jsonl;
        else if (!strcmp(a, "--decode")) slot = &o.decode;
        else if (!strcmp(a, "--bench")) slot = &o.bench;
        else if (!strcmp(a, "--special")) { o.enc_flags |= LB_TOK_ADD_SPECIAL; continue; }
        else if (!strcmp(a, "--config-bos")) { o.enc_flags |= LB_TOK_ADD_SPECIAL | LB_TOK_CONFIG_BOS; continue; }
        else if (!strcmp(a, "--skip-special")) { o.dec_flags |= LB_TOK_SKIP_SPECIAL; continue; }
        else if (!strcmp(a, "--check-stream")) { o.check_stream = 1; continue; }
        else if (!strcmp(a, "--whole")) { o.whole = 1; continue; }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return LB_EXIT_OK; }
        else {
            fprintf(stderr, "lorabatch tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return LB_EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "lorabatch tokenize: %s needs a value\n", a);
            return LB_EXIT_USAGE;
        }
        *slot = argv[++i];
    }
    int n_modes = !!o.text + !!o.jsonl + !!o.decode + !!o.bench;
    if (!o.dir || n_modes > 1) {
        usage(stderr);
        return LB_EXIT_USAGE;
    }
    struct lb_tok *t = NULL;
    struct lb_err err = {0};
    int rc = lb_tok_open(&t, o.dir, &err);
    if (rc) {
        fprintf(stderr, "lorabatch tokenize: %s\n", err.msg);
        return lb_exit_code(rc);
    }
    int ex = LB_EXIT_OK;
    if (o.bench) {
        ex = run_bench(t, &o);
    } else if (o.jsonl || o.decode) {
        const char *path = o.jsonl ? o.jsonl : o.decode;
        FILE *f = open_in(path);
        if (!f) {
            fprintf(stderr, "lorabatch tokenize: cannot open %s\n", path);
            ex = LB_EXIT_USAGE;
        } else {
            ex = run_jsonl(t, &o, f, o.decode != NULL);
            if (f != stdin) fclose(f);
        }
    } else {
        char *buf = NULL;
        size_t n = 0;
        if (o.text) {
            n = strlen(o.text);
        } else if (read_all(stdin, &buf, &n)) {
            fprintf(stderr, "lorabatch tokenize: cannot read standard input\n");
            ex = LB_EXIT_IO;
        }
        if (ex == LB_EXIT_OK) {
            struct lb_tok_ids ids = {0};
            struct lb_tok_text text = {0}, streamed = {0};
            rc = encode_one(t, o.text ? o.text : buf, n, &o, &ids, &text, &streamed, stdout, &err);
            if (rc) {
                fprintf(stderr, "lorabatch tokenize: %s\n", err.msg);
                ex = lb_exit_code(rc);
            }
            lb_tok_ids_free(&ids);
            lb_tok_text_free(&text);
            lb_tok_text_free(&streamed);
        }
        free(buf);
    }
    lb_tok_free(t);
    return ex;
}
