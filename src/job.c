/* job.c — see job.h.
 *
 * The YAML is loaded with libyaml's document API (a node tree with start marks, so every
 * message can carry a line), then walked by a hand-written schema: one function per
 * mapping, each key checked against the known names. Checks never stop at the first
 * problem: each one adds a message to a list and the walk goes on; the list is reported
 * at the end. Scalars: numbers, booleans and null must be plain (unquoted); strings may
 * be any style. */
#include "job.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_DIAG 200

/* ------------------------------------------------------------------ small helpers */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *dup_s(const char *s) { return dup_n(s, strlen(s)); }

static char *fmt_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_alloc(const char *fmt, ...)
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

/* base_dir + "/" + p unless p is absolute or base_dir is empty. escape: backslash-escape
 * glob metacharacters of base_dir (the pattern part stays a pattern). */
/* "a/b//" -> "a/b" (a lone "/" stays). */
static void strip_slashes(char *d)
{
    size_t k = strlen(d);
    while (k > 1 && d[k - 1] == '/') d[--k] = 0;
}

static char *join_path(const char *base_dir, const char *p, int escape)
{
    if (p[0] == '/' || !base_dir || !base_dir[0]) {
        char *d = dup_s(p);
        if (d) strip_slashes(d);
        return d;
    }
    size_t nb = strlen(base_dir), np = strlen(p);
    char *d = malloc(2 * nb + np + 2);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < nb; i++) {
        if (escape && strchr("*?[]\\", base_dir[i])) d[k++] = '\\';
        d[k++] = base_dir[i];
    }
    if (k && d[k - 1] != '/') d[k++] = '/';
    memcpy(d + k, p, np + 1);
    strip_slashes(d);
    return d;
}

void lb_gen_param_free(struct lb_gen_param *p)
{
    if (!p) return;
    for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    free(p->stop);
    p->stop = NULL;
    p->n_stop = 0;
}

int lb_gen_param_copy(struct lb_gen_param *dst, const struct lb_gen_param *src, struct lb_err *err)
{
    *dst = *src;
    dst->stop = NULL;
    dst->n_stop = 0;
    if (src->n_stop) {
        dst->stop = calloc((size_t)src->n_stop, sizeof *dst->stop);
        if (!dst->stop) return lb_err_set(err, LB_E_OOM, "out of memory copying stop strings");
        for (int i = 0; i < src->n_stop; i++) {
            dst->stop[i] = dup_s(src->stop[i]);
            dst->n_stop = i + 1;
            if (!dst->stop[i]) {
                lb_gen_param_free(dst);
                return lb_err_set(err, LB_E_OOM, "out of memory copying stop strings");
            }
        }
    }
    return 0;
}

void lb_job_init(struct lb_job *job)
{
    memset(job, 0, sizeof *job);
    job->zstd_level = 3;
    job->gen.max_tokens = 256;
    job->gen.temperature = 0.0f;
    job->gen.top_p = 1.0f;
    job->device = LB_DEVICE_AUTO;
    job->tensor_parallel = 1;
    job->gpu_adapter_slots = 8;
    job->host_adapter_cache = 64;
    job->max_lora_rank = 64;
    job->max_seqs = 256;
    job->max_batch_tokens = 8192;
    job->gpu_memory_fraction = 0.90;
    job->max_error_rate = 0.5;
    job->error_rate_min_records = 100;
    job->checkpoint_interval_s = 30.0;
}

static void free_adapters(struct lb_job_adapter *a, int n)
{
    for (int i = 0; i < n; i++) {
        free(a[i].name);
        free(a[i].dir);
    }
    free(a);
}

static void free_diag(struct lb_job *job)
{
    for (int i = 0; i < job->n_diag; i++) free(job->diag[i]);
    free(job->diag);
    job->diag = NULL;
    job->n_diag = 0;
}

static void free_resolved(struct lb_job *job)
{
    free_adapters(job->adapters, job->n_adapter);
    job->adapters = NULL;
    job->n_adapter = 0;
    for (int i = 0; i < job->n_shard; i++) {
        free(job->shards[i].path);
        free(job->shards[i].stem);
    }
    free(job->shards);
    job->shards = NULL;
    job->n_shard = 0;
    for (int i = 0; i < job->n_unit; i++) free(job->units[i].out_name);
    free(job->units);
    job->units = NULL;
    job->n_unit = 0;
}

void lb_job_free(struct lb_job *job)
{
    if (!job) return;
    free(job->path);
    free(job->base_dir);
    free(job->model_dir);
    free(job->adapters_dir);
    free_adapters(job->map, job->n_map);
    for (int i = 0; i < job->n_input; i++) {
        free(job->inputs[i].pattern);
        for (int k = 0; k < job->inputs[i].n_adapter; k++) free(job->inputs[i].adapters[k]);
        free(job->inputs[i].adapters);
    }
    free(job->inputs);
    free(job->out_dir);
    lb_gen_param_free(&job->gen);
    free_resolved(job);
    free_diag(job);
    memset(job, 0, sizeof *job);
}

/* ------------------------------------------------------------------ diagnostics */

struct ctx {
    struct lb_job *job;
    yaml_document_t *doc;
    int n_dropped; /* messages beyond MAX_DIAG */
    int oom;
};

static void diag(struct ctx *c, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void diag(struct ctx *c, int line, const char *field, const char *fmt, ...)
{
    struct lb_job *job = c->job;
    if (job->n_diag >= MAX_DIAG) {
        c->n_dropped++;
        return;
    }
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char *m = field ? fmt_alloc("%s:%d: field \"%s\": %s", job->path, line, field, what)
                    : fmt_alloc("%s:%d: %s", job->path, line, what);
    char **d = realloc(job->diag, (size_t)(job->n_diag + 1) * sizeof *d);
    if (!m || !d) {
        free(m);
        if (d) job->diag = d;
        c->oom = 1;
        return;
    }
    job->diag = d;
    job->diag[job->n_diag++] = m;
}

/* Puts the collected messages into err. */
static int report(struct ctx *c, struct lb_err *err)
{
    if (c->oom) return lb_err_set(err, LB_E_OOM, "%s: out of memory", c->job->path);
    if (!c->job->n_diag) return 0;
    if (!err) return LB_E_INPUT;
    err->status = LB_E_INPUT;
    size_t k = 0, cap = sizeof err->msg;
    int shown = 0;
    for (int i = 0; i < c->job->n_diag; i++) {
        size_t len = strlen(c->job->diag[i]);
        if (k + len + 1 + 48 >= cap) break;
        if (i) err->msg[k++] = '\n';
        memcpy(err->msg + k, c->job->diag[i], len);
        k += len;
        shown++;
    }
    err->msg[k] = 0;
    int more = c->job->n_diag - shown + c->n_dropped;
    if (more) snprintf(err->msg + k, cap - k, "\n... and %d more errors", more);
    return LB_E_INPUT;
}

/* ------------------------------------------------------------------ scalar readers */

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static const char *type_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return "a scalar";
    default: return "nothing";
    }
}

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int is_null(const yaml_node_t *n)
{
    if (!is_plain(n)) return 0;
    const char *s = sval(n);
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Shows a scalar in a message, cut to a readable length. */
static const char *show(const yaml_node_t *n, char *buf, size_t cap)
{
    if (n->type != YAML_SCALAR_NODE) return type_name(n);
    snprintf(buf, cap, "\"%.60s%s\"", sval(n), strlen(sval(n)) > 60 ? "..." : "");
    return buf;
}

static int get_int(struct ctx *c, const yaml_node_t *n, const char *field, int64_t lo, int64_t hi, int64_t *out)
{
    char b[80];
    if (!is_plain(n) || is_null(n)) {
        diag(c, line_of(n), field, "expected an integer, got %s", show(n, b, sizeof b));
        return -1;
    }
    const char *s = sval(n);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) {
        diag(c, line_of(n), field, "expected an integer, got %s", show(n, b, sizeof b));
        return -1;
    }
    if (v < lo || v > hi) {
        diag(c, line_of(n), field, "must be in [%lld, %lld], got %lld", (long long)lo, (long long)hi, v);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_u64(struct ctx *c, const yaml_node_t *n, const char *field, uint64_t *out)
{
    char b[80];
    const char *s = n->type == YAML_SCALAR_NODE ? sval(n) : "";
    char *end;
    errno = 0;
    unsigned long long v = is_plain(n) && isdigit((unsigned char)s[0]) ? strtoull(s, &end, 10) : 0;
    if (!is_plain(n) || !isdigit((unsigned char)s[0]) || *end || errno) {
        diag(c, line_of(n), field, "expected an integer in [0, 2^64), got %s", show(n, b, sizeof b));
        return -1;
    }
    *out = v;
    return 0;
}

/* lo_open/hi_open: the bound itself is excluded. */
static int get_num(struct ctx *c, const yaml_node_t *n, const char *field, double lo, int lo_open, double hi,
                   int hi_open, double *out)
{
    char b[80];
    if (!is_plain(n) || is_null(n)) {
        diag(c, line_of(n), field, "expected a number, got %s", show(n, b, sizeof b));
        return -1;
    }
    const char *s = sval(n);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) {
        diag(c, line_of(n), field, "expected a number, got %s", show(n, b, sizeof b));
        return -1;
    }
    if ((lo_open ? v <= lo : v < lo) || (hi_open ? v >= hi : v > hi)) {
        diag(c, line_of(n), field, "must be in %c%g, %g%c, got %s", lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']',
             s);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_bool(struct ctx *c, const yaml_node_t *n, const char *field, int *out)
{
    char b[80];
    if (is_plain(n)) {
        const char *s = sval(n);
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
            *out = 1;
            return 0;
        }
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
            *out = 0;
            return 0;
        }
    }
    diag(c, line_of(n), field, "expected true or false, got %s", show(n, b, sizeof b));
    return -1;
}

/* A non-empty string (any scalar style, not null). *out is a fresh copy. */
static int get_str(struct ctx *c, const yaml_node_t *n, const char *field, char **out)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        diag(c, line_of(n), field, "expected a string, got %s", is_null(n) ? "null" : type_name(n));
        return -1;
    }
    if (!n->data.scalar.length) {
        diag(c, line_of(n), field, "must not be empty");
        return -1;
    }
    if (strlen(sval(n)) != n->data.scalar.length) {
        diag(c, line_of(n), field, "must not contain a NUL character");
        return -1;
    }
    *out = dup_s(sval(n));
    if (!*out) c->oom = 1;
    return *out ? 0 : -1;
}

/* Walks a mapping: for each pair calls fn(c, key, value, field path); checks the keys are
 * scalars, known (in `known`, NULL-terminated) and not repeated. */
typedef void (*pair_fn)(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field);

static int walk_map(struct ctx *c, yaml_node_t *n, const char *field, const char *const *known, pair_fn fn,
                    void *user)
{
    if (n->type != YAML_MAPPING_NODE) {
        diag(c, line_of(n), field, "expected a mapping, got %s", is_null(n) ? "null" : type_name(n));
        return -1;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v) continue;
        if (k->type != YAML_SCALAR_NODE) {
            diag(c, line_of(k), field, "keys must be strings, got %s", type_name(k));
            continue;
        }
        const char *key = sval(k);
        int dup = 0;
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *k2 = yaml_document_get_node(c->doc, q->key);
            if (k2 && k2->type == YAML_SCALAR_NODE && !strcmp(sval(k2), key)) dup = 1;
        }
        char sub[256];
        if (field) snprintf(sub, sizeof sub, "%.120s.%.120s", field, key);
        else snprintf(sub, sizeof sub, "%.120s", key);
        if (dup) {
            diag(c, line_of(k), sub, "repeated key");
            continue;
        }
        int ok = !known;
        for (int i = 0; known && known[i]; i++)
            if (!strcmp(known[i], key)) ok = 1;
        if (!ok) {
            char list[512] = "";
            size_t m = 0;
            for (int i = 0; known[i] && m < sizeof list - 40; i++)
                m += (size_t)snprintf(list + m, sizeof list - m, "%s%s", i ? ", " : "", known[i]);
            diag(c, line_of(k), sub, "unknown key (known: %s)", list);
            continue;
        }
        fn(c, user, key, v, sub);
    }
    return 0;
}

/* ------------------------------------------------------------------ sections */

static int valid_adapter_name(const char *s)
{
    if (!s[0] || s[0] == '.' || !strcmp(s, LB_JOB_BASE)) return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') return 0;
    return 1;
}

static void on_map_entry(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    struct lb_job *job = c->job;
    if (!valid_adapter_name(key)) {
        diag(c, line_of(v), field,
             "bad adapter name \"%s\" (letters, digits, '.', '_', '-'; not starting with '.'; \"base\" is reserved)",
             key);
        return;
    }
    char *dir;
    if (get_str(c, v, field, &dir)) return;
    char *j = join_path(job->base_dir, dir, 0);
    free(dir);
    struct lb_job_adapter *m = realloc(job->map, (size_t)(job->n_map + 1) * sizeof *m);
    char *name = dup_s(key);
    if (!j || !m || !name) {
        free(j);
        free(name);
        if (m) job->map = m;
        c->oom = 1;
        return;
    }
    job->map = m;
    job->map[job->n_map++] = (struct lb_job_adapter){.name = name, .dir = j, .line = line_of(v)};
}

static void on_adapters(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    struct lb_job *job = c->job;
    if (!strcmp(key, "dir")) {
        char *s;
        if (get_str(c, v, field, &s)) return;
        job->adapters_dir = join_path(job->base_dir, s, 0);
        job->line_adapters_dir = line_of(v);
        free(s);
        if (!job->adapters_dir) c->oom = 1;
    } else {
        walk_map(c, v, field, NULL, on_map_entry, NULL);
    }
}

struct input_seen {
    int has_path, has_adapter;
};

/* Adds one adapter name to an input; checks form and duplicates. */
static void input_add_adapter(struct ctx *c, struct lb_job_input *in, yaml_node_t *v, const char *field)
{
    char *name;
    if (is_null(v)) name = dup_s(LB_JOB_BASE);
    else if (get_str(c, v, field, &name)) return;
    if (!name) {
        c->oom = 1;
        return;
    }
    if (strcmp(name, LB_JOB_BASE) && !valid_adapter_name(name)) {
        diag(c, line_of(v), field, "bad adapter name \"%s\"", name);
        free(name);
        return;
    }
    for (int i = 0; i < in->n_adapter; i++)
        if (!strcmp(in->adapters[i], name)) {
            diag(c, line_of(v), field, "adapter \"%s\" listed twice", name);
            free(name);
            return;
        }
    char **a = realloc(in->adapters, (size_t)(in->n_adapter + 1) * sizeof *a);
    if (!a) {
        free(name);
        c->oom = 1;
        return;
    }
    in->adapters = a;
    in->adapters[in->n_adapter++] = name;
}

static void on_input(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    struct lb_job_input *in = user;
    if (!strcmp(key, "path")) {
        char *s;
        if (get_str(c, v, field, &s)) return;
        in->pattern = join_path(c->job->base_dir, s, 1);
        free(s);
        if (!in->pattern) c->oom = 1;
        return;
    }
    /* adapter | adapters */
    if (in->line_adapter) {
        diag(c, line_of(v), field, "give either \"adapter\" or \"adapters\", not both");
        return;
    }
    in->line_adapter = line_of(v);
    if (!strcmp(key, "adapter")) {
        input_add_adapter(c, in, v, field);
        return;
    }
    if (v->type != YAML_SEQUENCE_NODE) {
        diag(c, line_of(v), field, "expected a list of adapter names, got %s", is_null(v) ? "null" : type_name(v));
        return;
    }
    if (v->data.sequence.items.start == v->data.sequence.items.top) {
        diag(c, line_of(v), field, "empty list (use \"base\" for the model without adapter)");
        return;
    }
    int i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++, i++) {
        yaml_node_t *e = yaml_document_get_node(c->doc, *it);
        char sub[300];
        snprintf(sub, sizeof sub, "%s[%d]", field, i);
        if (e) input_add_adapter(c, in, e, sub);
    }
}

static void parse_inputs(struct ctx *c, yaml_node_t *v, const char *field)
{
    struct lb_job *job = c->job;
    if (v->type != YAML_SEQUENCE_NODE) {
        diag(c, line_of(v), field, "expected a list of inputs, got %s", is_null(v) ? "null" : type_name(v));
        return;
    }
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (!n) {
        diag(c, line_of(v), field, "empty list");
        return;
    }
    job->inputs = calloc((size_t)n, sizeof *job->inputs);
    if (!job->inputs) {
        c->oom = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        yaml_node_t *e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        if (!e) continue;
        struct lb_job_input *in = &job->inputs[job->n_input++];
        in->line = line_of(e);
        char sub[64];
        snprintf(sub, sizeof sub, "%.40s[%d]", field, i);
        static const char *const known[] = {"path", "adapter", "adapters", NULL};
        if (walk_map(c, e, sub, known, on_input, in)) continue;
        if (!in->pattern && e->type == YAML_MAPPING_NODE) {
            char f[80];
            snprintf(f, sizeof f, "%s.path", sub);
            diag(c, in->line, f, "missing (a file name or glob of .jsonl / .jsonl.zst shards)");
        }
        if (!in->line_adapter) { /* no adapter given: the base model */
            in->line_adapter = in->line;
            in->adapters = malloc(sizeof *in->adapters);
            if (in->adapters) in->adapters[0] = dup_s(LB_JOB_BASE);
            if (!in->adapters || !in->adapters[0]) {
                c->oom = 1;
                continue;
            }
            in->n_adapter = 1;
        }
    }
}

static void on_output(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    struct lb_job *job = c->job;
    int64_t x;
    if (!strcmp(key, "dir")) {
        char *s;
        if (get_str(c, v, field, &s)) return;
        job->out_dir = join_path(job->base_dir, s, 0);
        free(s);
        if (!job->out_dir) c->oom = 1;
    } else if (!strcmp(key, "zstd_level")) {
        if (!get_int(c, v, field, 1, 19, &x)) job->zstd_level = (int)x;
    } else {
        get_bool(c, v, field, &job->token_ids);
    }
}

static void parse_stop(struct ctx *c, yaml_node_t *v, const char *field)
{
    struct lb_gen_param *g = &c->job->gen;
    lb_gen_param_free(g);
    if (v->type == YAML_SCALAR_NODE && !is_null(v)) {
        char *s;
        if (get_str(c, v, field, &s)) return;
        g->stop = malloc(sizeof *g->stop);
        if (!g->stop) {
            free(s);
            c->oom = 1;
            return;
        }
        g->stop[0] = s;
        g->n_stop = 1;
        return;
    }
    if (v->type != YAML_SEQUENCE_NODE) {
        diag(c, line_of(v), field, "expected a string or a list of strings, got %s",
             is_null(v) ? "null" : type_name(v));
        return;
    }
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (!n) return;
    g->stop = calloc((size_t)n, sizeof *g->stop);
    if (!g->stop) {
        c->oom = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        yaml_node_t *e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        char sub[300];
        snprintf(sub, sizeof sub, "%s[%d]", field, i);
        char *s;
        if (e && !get_str(c, e, sub, &s)) g->stop[g->n_stop++] = s;
    }
}

static void on_generation(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    struct lb_gen_param *g = &c->job->gen;
    int64_t x;
    double d;
    if (!strcmp(key, "max_tokens")) {
        if (!get_int(c, v, field, 1, 1 << 24, &x)) g->max_tokens = (int32_t)x;
    } else if (!strcmp(key, "temperature")) {
        if (!get_num(c, v, field, 0, 0, 1e6, 0, &d)) g->temperature = (float)d;
    } else if (!strcmp(key, "top_p")) {
        if (!get_num(c, v, field, 0, 1, 1, 0, &d)) g->top_p = (float)d;
    } else if (!strcmp(key, "top_k")) {
        if (!get_int(c, v, field, 0, INT32_MAX, &x)) g->top_k = (int32_t)x;
    } else if (!strcmp(key, "seed")) {
        get_u64(c, v, field, &g->seed);
    } else if (!strcmp(key, "ignore_eos")) {
        get_bool(c, v, field, &g->ignore_eos);
    } else {
        parse_stop(c, v, field);
    }
}

static void on_resources(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    struct lb_job *job = c->job;
    int64_t x;
    double d;
    struct { const char *name; int *dst; int64_t lo, hi; } ints[] = {
        {"tensor_parallel", &job->tensor_parallel, 1, 64},
        {"gpu_adapter_slots", &job->gpu_adapter_slots, 1, 1 << 16},
        {"host_adapter_cache", &job->host_adapter_cache, 1, 1 << 20},
        {"max_lora_rank", &job->max_lora_rank, 1, 1 << 16},
        {"max_seqs", &job->max_seqs, 1, 1 << 20},
        {"max_batch_tokens", &job->max_batch_tokens, 1, 1 << 26},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(key, ints[i].name)) {
            if (!get_int(c, v, field, ints[i].lo, ints[i].hi, &x)) *ints[i].dst = (int)x;
            return;
        }
    if (!strcmp(key, "device")) {
        char b[80];
        const char *s = v->type == YAML_SCALAR_NODE ? sval(v) : "";
        if (v->type == YAML_SCALAR_NODE && !strcmp(s, "auto")) job->device = LB_DEVICE_AUTO;
        else if (v->type == YAML_SCALAR_NODE && !strcmp(s, "cpu")) job->device = LB_DEVICE_CPU;
        else if (v->type == YAML_SCALAR_NODE && !strcmp(s, "cuda")) job->device = LB_DEVICE_CUDA;
        else diag(c, line_of(v), field, "expected auto, cpu or cuda, got %s", show(v, b, sizeof b));
    } else if (!strcmp(key, "gpu_memory_fraction")) {
        if (!get_num(c, v, field, 0, 1, 1, 0, &d)) job->gpu_memory_fraction = d;
    } else if (!strcmp(key, "max_error_rate")) {
        if (!get_num(c, v, field, 0, 0, 1, 0, &d)) job->max_error_rate = d;
    }
}

static void on_checkpoint(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    (void)user;
    (void)key; /* interval_s */
    double d;
    if (!get_num(c, v, field, 0, 1, 1e9, 0, &d)) c->job->checkpoint_interval_s = d;
}

static void on_top(struct ctx *c, void *user, const char *key, yaml_node_t *v, const char *field)
{
    struct lb_job *job = c->job;
    int *seen = user; /* [0] model [1] inputs [2] output [3] output.dir */
    if (!strcmp(key, "model")) {
        seen[0] = 1;
        char *s;
        if (get_str(c, v, field, &s)) return;
        job->model_dir = join_path(job->base_dir, s, 0);
        job->line_model = line_of(v);
        free(s);
        if (!job->model_dir) c->oom = 1;
    } else if (!strcmp(key, "adapters")) {
        if (is_null(v)) return;
        static const char *const known[] = {"dir", "map", NULL};
        walk_map(c, v, field, known, on_adapters, NULL);
    } else if (!strcmp(key, "inputs")) {
        seen[1] = 1;
        parse_inputs(c, v, field);
    } else if (!strcmp(key, "output")) {
        seen[2] = 1;
        static const char *const known[] = {"dir", "zstd_level", "token_ids", NULL};
        if (!walk_map(c, v, field, known, on_output, NULL) && !job->out_dir) seen[3] = line_of(v);
    } else if (!strcmp(key, "generation")) {
        static const char *const known[] = {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos", NULL};
        walk_map(c, v, field, known, on_generation, NULL);
    } else if (!strcmp(key, "resources")) {
        static const char *const known[] = {"device", "tensor_parallel", "gpu_adapter_slots",
                                            "host_adapter_cache", "max_lora_rank", "max_seqs",
                                            "max_batch_tokens", "gpu_memory_fraction", "max_error_rate", NULL};
        walk_map(c, v, field, known, on_resources, NULL);
    } else {
        static const char *const known[] = {"interval_s", NULL};
        walk_map(c, v, field, known, on_checkpoint, NULL);
    }
}

int lb_job_parse(struct lb_job *job, const char *buf, size_t n, const char *path, const char *base_dir,
                 struct lb_err *err)
{
    struct ctx c = {.job = job};
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_parser = 0, have_doc = 0;
    free_diag(job);
    free(job->path);
    free(job->base_dir);
    job->path = dup_s(path ? path : "job.yaml");
    job->base_dir = dup_s(base_dir ? base_dir : "");
    if (!job->path || !job->base_dir || !yaml_parser_initialize(&parser)) {
        c.oom = 1;
        goto done;
    }
    have_parser = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, n);
    if (!yaml_parser_load(&parser, &doc)) {
        diag(&c, (int)parser.problem_mark.line + 1, NULL, "YAML syntax error: %s%s%s",
             parser.problem ? parser.problem : "?", parser.context ? " " : "", parser.context ? parser.context : "");
        goto done;
    }
    have_doc = 1;
    c.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        diag(&c, 1, NULL, "empty job file (needs at least model, inputs and output.dir)");
        goto done;
    }
    /* A second document in the stream is refused: it would be silently ignored. */
    yaml_document_t doc2;
    if (yaml_parser_load(&parser, &doc2)) {
        if (yaml_document_get_root_node(&doc2))
            diag(&c, (int)yaml_document_get_root_node(&doc2)->start_mark.line + 1, NULL,
                 "more than one YAML document in the job file");
        yaml_document_delete(&doc2);
    } else {
        diag(&c, (int)parser.problem_mark.line + 1, NULL, "YAML syntax error: %s",
             parser.problem ? parser.problem : "?");
    }
    int seen[4] = {0};
    static const char *const known[] = {"model", "adapters", "inputs", "output", "generation", "resources",
                                        "checkpoint", NULL};
    if (walk_map(&c, root, NULL, known, on_top, seen)) goto done;
    if (!seen[0]) diag(&c, line_of(root), "model", "missing (the model folder)");
    if (!seen[1]) diag(&c, line_of(root), "inputs", "missing (a list of {path, adapter|adapters})");
    if (!seen[2]) diag(&c, line_of(root), "output", "missing (needs at least output.dir)");
    if (seen[3]) diag(&c, seen[3], "output.dir", "missing (the folder for outputs and the checkpoint)");
done:
    if (have_doc) yaml_document_delete(&doc);
    if (have_parser) yaml_parser_delete(&parser);
    return report(&c, err);
}

int lb_job_load(struct lb_job *job, const char *path, struct lb_err *err)
{
    int rc = 0;
    char *buf = NULL, *dir = NULL, *abs = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc = lb_err_set(err, LB_E_IO, "%s: cannot open job file: %s", path, strerror(errno));
        goto done;
    }
    size_t cap = 1 << 16, n = 0;
    buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap >= (size_t)64 << 20) {
            rc = lb_err_set(err, LB_E_INPUT, "%s: job file larger than 64 MiB", path);
            goto done;
        }
        char *b = realloc(buf, cap * 2);
        if (!b) break;
        buf = b;
        cap *= 2;
    }
    if (!buf) {
        rc = lb_err_set(err, LB_E_OOM, "%s: out of memory", path);
        goto done;
    }
    if (ferror(f)) {
        rc = lb_err_set(err, LB_E_IO, "%s: read failed: %s", path, strerror(errno));
        goto done;
    }
    dir = dup_s(path);
    if (!dir) {
        rc = lb_err_set(err, LB_E_OOM, "%s: out of memory", path);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    abs = realpath(dir, NULL);
    rc = lb_job_parse(job, buf, n, path, abs ? abs : dir, err);
done:
    if (f) fclose(f);
    free(buf);
    free(dir);
    free(abs);
    return rc;
}

/* ------------------------------------------------------------------ resolve */

static int is_dir(const char *p)
{
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

static int cmp_adapter(const void *a, const void *b)
{
    return strcmp(((const struct lb_job_adapter *)a)->name, ((const struct lb_job_adapter *)b)->name);
}

static int add_adapter(struct ctx *c, const char *name, const char *dir, int line)
{
    struct lb_job *job = c->job;
    for (int i = 0; i < job->n_adapter; i++)
        if (!strcmp(job->adapters[i].name, name)) {
            diag(c, line, "adapters", "adapter \"%s\" defined twice (line %d: %s, line %d: %s)", name,
                 job->adapters[i].line, job->adapters[i].dir, line, dir);
            return 0;
        }
    struct lb_job_adapter *a = realloc(job->adapters, (size_t)(job->n_adapter + 1) * sizeof *a);
    if (!a) return c->oom = 1, -1;
    job->adapters = a;
    char *nm = dup_s(name), *d = dup_s(dir);
    if (!nm || !d) {
        free(nm);
        free(d);
        return c->oom = 1, -1;
    }
    job->adapters[job->n_adapter++] = (struct lb_job_adapter){.name = nm, .dir = d, .line = line};
    return 0;
}

static void list_adapter_dir(struct ctx *c)
{
    struct lb_job *job = c->job;
    const char *dir = job->adapters_dir;
    DIR *d = opendir(dir);
    if (!d) {
        diag(c, job->line_adapters_dir, "adapters.dir", "cannot open folder %s: %s", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *sub = fmt_alloc("%s/%s", dir, e->d_name);
        char *cfg = fmt_alloc("%s/%s/adapter_config.json", dir, e->d_name);
        if (!sub || !cfg) c->oom = 1;
        else if (is_dir(sub) && is_file(cfg)) {
            if (!valid_adapter_name(e->d_name))
                diag(c, job->line_adapters_dir, "adapters.dir",
                     "adapter folder %s: the name \"%s\" cannot be an adapter name (letters, digits, '.', '_', '-'; "
                     "\"base\" is reserved)", sub, e->d_name);
            else add_adapter(c, e->d_name, sub, job->line_adapters_dir);
        }
        free(sub);
        free(cfg);
    }
    closedir(d);
}

static const char *file_base(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int add_shard(struct ctx *c, const char *path, const char *field, int line)
{
    struct lb_job *job = c->job;
    for (int i = 0; i < job->n_shard; i++)
        if (!strcmp(job->shards[i].path, path)) return i;
    const char *base = file_base(path);
    int zst = ends_with(base, ".jsonl.zst");
    if (!zst && !ends_with(base, ".jsonl")) {
        diag(c, line, field, "%s: a shard must end in .jsonl or .jsonl.zst", path);
        return -1;
    }
    if (!is_file(path)) {
        diag(c, line, field, "%s: not a regular file", path);
        return -1;
    }
    size_t n_stem = strlen(base) - (zst ? 10 : 6);
    if (!n_stem) {
        diag(c, line, field, "%s: empty file name stem", path);
        return -1;
    }
    struct lb_job_shard *s = realloc(job->shards, (size_t)(job->n_shard + 1) * sizeof *s);
    if (!s) return c->oom = 1, -1;
    job->shards = s;
    char *p = dup_s(path), *stem = dup_n(base, n_stem);
    if (!p || !stem) {
        free(p);
        free(stem);
        return c->oom = 1, -1;
    }
    job->shards[job->n_shard] = (struct lb_job_shard){.path = p, .zst = zst, .stem = stem};
    return job->n_shard++;
}

static int add_unit(struct ctx *c, int shard, int adapter, const char *field, int line)
{
    struct lb_job *job = c->job;
    const char *an = adapter >= 0 ? job->adapters[adapter].name : LB_JOB_BASE;
    char *name = fmt_alloc("%s.%s.jsonl.zst", job->shards[shard].stem, an);
    if (!name) return c->oom = 1, -1;
    for (int i = 0; i < job->n_unit; i++)
        if (!strcmp(job->units[i].out_name, name)) {
            const struct lb_job_unit *u = &job->units[i];
            if (u->shard == shard)
                diag(c, line, field, "%s with adapter \"%s\" is already an input (listed twice)",
                     job->shards[shard].path, an);
            else
                diag(c, line, field, "%s and %s would both write %s (same file name stem)",
                     job->shards[u->shard].path, job->shards[shard].path, name);
            free(name);
            return 0;
        }
    struct lb_job_unit *u = realloc(job->units, (size_t)(job->n_unit + 1) * sizeof *u);
    if (!u) {
        free(name);
        return c->oom = 1, -1;
    }
    job->units = u;
    job->units[job->n_unit++] = (struct lb_job_unit){.shard = shard, .adapter = adapter, .out_name = name};
    return 0;
}

int lb_job_find_adapter(const struct lb_job *job, const char *name)
{
    if (!strcmp(name, LB_JOB_BASE)) return -1;
    for (int i = 0; i < job->n_adapter; i++)
        if (!strcmp(job->adapters[i].name, name)) return i;
    return -2;
}

int lb_job_resolve(struct lb_job *job, struct lb_err *err)
{
    struct ctx c = {.job = job};
    free_diag(job);
    free_resolved(job);

    if (job->model_dir && !is_dir(job->model_dir))
        diag(&c, job->line_model, "model", "%s: not a folder (%s)", job->model_dir,
             access(job->model_dir, F_OK) ? strerror(errno) : "exists but is not a directory");

    int n_diag_before_adapters = job->n_diag;
    if (job->adapters_dir) list_adapter_dir(&c);
    for (int i = 0; i < job->n_map; i++) {
        const struct lb_job_adapter *m = &job->map[i];
        char *cfg = fmt_alloc("%s/adapter_config.json", m->dir);
        char f[300];
        snprintf(f, sizeof f, "adapters.map.%s", m->name);
        if (!cfg) c.oom = 1;
        else if (!is_dir(m->dir)) diag(&c, m->line, f, "%s: not a folder", m->dir);
        else if (!is_file(cfg)) diag(&c, m->line, f, "%s: no adapter_config.json in this folder", m->dir);
        else add_adapter(&c, m->name, m->dir, m->line);
        free(cfg);
    }
    if (job->n_adapter) qsort(job->adapters, (size_t)job->n_adapter, sizeof *job->adapters, cmp_adapter);

    /* Unknown adapters: only reported when the adapter list itself had no error, so a
     * failed folder does not cascade into one message per input. */
    int adapters_ok = job->n_diag == n_diag_before_adapters;
    for (int i = 0; i < job->n_input && !c.oom; i++) {
        struct lb_job_input *in = &job->inputs[i];
        if (!in->pattern) continue; /* only after a failed parse */
        char f[64];
        snprintf(f, sizeof f, "inputs[%d].path", i);
        int idx[256];
        int n_idx = 0, bad = 0;
        for (int k = 0; k < in->n_adapter; k++) {
            int a = lb_job_find_adapter(job, in->adapters[k]);
            if (a == -2) {
                bad = 1;
                if (adapters_ok) {
                    char fa[64];
                    snprintf(fa, sizeof fa, "inputs[%d].adapter%s", i, in->n_adapter > 1 ? "s" : "");
                    char known[512] = "";
                    size_t m = 0;
                    for (int j = 0; j < job->n_adapter && m < sizeof known - 80; j++)
                        m += (size_t)snprintf(known + m, sizeof known - m, "%s%s", j ? ", " : "", job->adapters[j].name);
                    diag(&c, in->line_adapter, fa, "unknown adapter \"%s\" (known: %s%s%s)", in->adapters[k],
                         known, job->n_adapter ? ", " : "", LB_JOB_BASE);
                }
            } else if (n_idx < 256) {
                idx[n_idx++] = a;
            } else {
                bad = 1;
                diag(&c, in->line_adapter, "adapters", "more than 256 adapters for one input");
            }
        }
        glob_t g;
        memset(&g, 0, sizeof g);
        int grc = glob(in->pattern, GLOB_ERR, NULL, &g);
        if (grc == GLOB_NOMATCH) diag(&c, in->line, f, "%s matches no file", in->pattern);
        else if (grc == GLOB_NOSPACE) c.oom = 1;
        else if (grc) diag(&c, in->line, f, "%s: cannot read folder: %s", in->pattern, strerror(errno));
        for (size_t k = 0; !grc && k < g.gl_pathc; k++) {
            int s = add_shard(&c, g.gl_pathv[k], f, in->line);
            for (int j = 0; s >= 0 && !bad && j < n_idx; j++) add_unit(&c, s, idx[j], f, in->line);
        }
        globfree(&g);
    }
    if (!c.oom && !job->n_diag) {
        /* Stable order: shards in order of first appearance, then adapters as listed.
         * A counting sort by shard keeps the insertion order within a shard. */
        struct lb_job_unit *tmp = malloc((size_t)job->n_unit * sizeof *tmp + 1);
        int *cnt = calloc((size_t)job->n_shard + 1, sizeof *cnt);
        if (!tmp || !cnt) c.oom = 1;
        else {
            for (int i = 0; i < job->n_unit; i++) cnt[job->units[i].shard + 1]++;
            for (int s = 0; s < job->n_shard; s++) cnt[s + 1] += cnt[s];
            for (int i = 0; i < job->n_unit; i++) tmp[cnt[job->units[i].shard]++] = job->units[i];
            if (job->n_unit) memcpy(job->units, tmp, (size_t)job->n_unit * sizeof *tmp);
        }
        free(tmp);
        free(cnt);
        for (int i = 0; i < job->n_unit; i++) {
            struct lb_job_unit *u = &job->units[i];
            u->adapter_name = u->adapter >= 0 ? job->adapters[u->adapter].name : LB_JOB_BASE;
        }
    }
    int rc = report(&c, err);
    if (rc) free_resolved(job);
    return rc;
}

/* ------------------------------------------------------------------ canonical text */

struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Value text escaped so one value stays on one line. */
static void sb_val(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\n') sb_str(b, "\\n");
        else if (*s == '\r') sb_str(b, "\\r");
        else if (*s == '\\') sb_str(b, "\\\\");
        else sb_put(b, s, 1);
    }
}

static void sb_fmt(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_str(b, tmp);
}

/* Shortest decimal that reads back as the same float: 0.95f prints "0.95", not
 * "0.949999988", and two different floats never print alike. */
static void sb_float(struct sbuf *b, const char *key, float v)
{
    char tmp[64];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    sb_fmt(b, "%s=%s\n", key, tmp);
}

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Splits text into lines (in place, text is a private copy), sorted. */
static char **split_lines(char *text, size_t n, int *n_lines)
{
    int cnt = 0;
    for (size_t i = 0; i < n; i++)
        if (text[i] == '\n') cnt++;
    char **v = malloc(((size_t)cnt + 1) * sizeof *v);
    if (!v) return NULL;
    int k = 0;
    char *s = text;
    for (size_t i = 0; i < n; i++)
        if (text[i] == '\n') {
            text[i] = 0;
            if (*s) v[k++] = s;
            s = text + i + 1;
        }
    if (s < text + n && *s) v[k++] = s;
    qsort(v, (size_t)k, sizeof *v, cmp_line);
    *n_lines = k;
    return v;
}

int lb_job_canon(const struct lb_job *job, char **out, size_t *n, struct lb_err *err)
{
    struct sbuf b = {0};
    sb_str(&b, "model=");
    sb_val(&b, job->model_dir ? job->model_dir : "");
    sb_str(&b, "\n");
    for (int i = 0; i < job->n_adapter; i++) {
        int used = 0;
        for (int k = 0; k < job->n_unit && !used; k++) used = job->units[k].adapter == i;
        if (!used) continue;
        sb_str(&b, "adapter.");
        sb_val(&b, job->adapters[i].name);
        sb_str(&b, "=");
        sb_val(&b, job->adapters[i].dir);
        sb_str(&b, "\n");
    }
    for (int i = 0; i < job->n_unit; i++) {
        const struct lb_job_unit *u = &job->units[i];
        sb_str(&b, "unit.");
        sb_val(&b, u->out_name);
        sb_str(&b, "=");
        sb_val(&b, job->shards[u->shard].path);
        sb_str(&b, " | ");
        sb_val(&b, u->adapter >= 0 ? job->adapters[u->adapter].name : LB_JOB_BASE);
        sb_str(&b, "\n");
    }
    const struct lb_gen_param *g = &job->gen;
    sb_fmt(&b, "generation.max_tokens=%d\n", (int)g->max_tokens);
    sb_float(&b, "generation.temperature", g->temperature);
    sb_float(&b, "generation.top_p", g->top_p);
    sb_fmt(&b, "generation.top_k=%d\n", (int)g->top_k);
    sb_fmt(&b, "generation.seed=%llu\n", (unsigned long long)g->seed);
    /* only when on, so that checkpoints written before the field existed still resume */
    if (g->ignore_eos) sb_str(&b, "generation.ignore_eos=true\n");
    sb_str(&b, "generation.stop=[");
    for (int i = 0; i < g->n_stop; i++) {
        sb_str(&b, i ? ", \"" : "\"");
        for (const char *s = g->stop[i]; *s; s++) {
            if (*s == '"' || *s == '\\') sb_put(&b, "\\", 1);
            if (*s == '\n') sb_str(&b, "\\n");
            else if (*s == '\r') sb_str(&b, "\\r");
            else sb_put(&b, s, 1);
        }
        sb_str(&b, "\"");
    }
    sb_str(&b, "]\n");
    sb_fmt(&b, "output.token_ids=%s\n", job->token_ids ? "true" : "false");
    if (b.oom) {
        free(b.p);
        return lb_err_set(err, LB_E_OOM, "out of memory building the job fingerprint");
    }
    /* One key per line, sorted: the diff walks two sorted lists. */
    char *copy = dup_n(b.p, b.n);
    int n_lines = 0;
    char **lines = copy ? split_lines(copy, b.n, &n_lines) : NULL;
    struct sbuf s = {0};
    sb_str(&s, "");
    for (int i = 0; lines && i < n_lines; i++) {
        sb_str(&s, lines[i]);
        sb_str(&s, "\n");
    }
    free(lines);
    free(copy);
    free(b.p);
    if (!lines || s.oom) {
        free(s.p);
        return lb_err_set(err, LB_E_OOM, "out of memory building the job fingerprint");
    }
    *out = s.p;
    *n = s.n;
    return 0;
}

uint64_t lb_job_fingerprint(const char *canon, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)canon[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int key_cmp(const char *a, const char *b)
{
    size_t na = strcspn(a, "="), nb = strcspn(b, "=");
    int r = strncmp(a, b, na < nb ? na : nb);
    if (r) return r;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

int lb_job_canon_diff(const char *old_canon, size_t n_old, const char *new_canon, size_t n_new, char *buf,
                      size_t cap)
{
    char *a = dup_n(old_canon, n_old), *b = dup_n(new_canon, n_new);
    int na = 0, nb = 0, n_diff = 0;
    char **la = a ? split_lines(a, n_old, &na) : NULL;
    char **lb = b ? split_lines(b, n_new, &nb) : NULL;
    if (!la || !lb) {
        free(la);
        free(lb);
        free(a);
        free(b);
        return LB_E_OOM;
    }
    size_t k = 0;
    if (cap) buf[0] = 0;
    int i = 0, j = 0;
    while (i < na || j < nb) {
        char item[600];
        item[0] = 0;
        int c = i >= na ? 1 : j >= nb ? -1 : key_cmp(la[i], lb[j]);
        if (c == 0) {
            if (strcmp(la[i], lb[j]))
                snprintf(item, sizeof item, "changed %.*s: %.250s -> %.250s", (int)strcspn(la[i], "="), la[i],
                         la[i] + strcspn(la[i], "=") + (la[i][strcspn(la[i], "=")] ? 1 : 0),
                         lb[j] + strcspn(lb[j], "=") + (lb[j][strcspn(lb[j], "=")] ? 1 : 0));
            i++;
            j++;
        } else if (c < 0) {
            snprintf(item, sizeof item, "removed %.500s", la[i++]);
        } else {
            snprintf(item, sizeof item, "added %.500s", lb[j++]);
        }
        if (!item[0]) continue;
        n_diff++;
        if (n_diff <= 20 && cap) {
            int w = snprintf(buf + k, cap - k, "%s%s", k ? "\n" : "", item);
            if (w > 0) k = k + (size_t)w < cap ? k + (size_t)w : cap - 1;
        }
    }
    if (n_diff > 20 && cap && k < cap - 1) snprintf(buf + k, cap - k, "\n... and %d more differences", n_diff - 20);
    free(la);
    free(lb);
    free(a);
    free(b);
    return n_diff;
}
