/* test_safetensors.c — lb_st_parse on buffers (a catalogue of malformed headers, each with
 * its expected status and message), sharded sets on disk, bf16/f16 conversions, and a
 * seeded mutation loop over a good file that must never crash. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "t.h"
#include "tmodel.h"

/* A safetensors image: u64 header length, the header text, then data_bytes bytes of data
 * (filled with 0x3c so F32/F16/BF16 values are finite). Allocated to exactly its size so
 * ASan sees any read past the end. */
static unsigned char *img(const char *hdr, size_t data_bytes, size_t *n)
{
    size_t h = strlen(hdr);
    *n = 8 + h + data_bytes;
    unsigned char *b = malloc(*n ? *n : 1);
    uint64_t hl = h;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + 8, hdr, h);
    memset(b + 8 + h, 0x3c, data_bytes);
    return b;
}

/* Parse hdr + data_bytes of data; returns the status and fills err. */
static int parse_hdr(const char *hdr, size_t data_bytes, struct lb_err *err)
{
    size_t n;
    unsigned char *b = img(hdr, data_bytes, &n);
    struct lb_st_file f;
    memset(err, 0, sizeof *err);
    int rc = lb_st_parse(&f, b, n, err);
    if (!rc) {
        lb_st_free(&f);
    } else if (f.tensors || f.n_tensor) {
        rc = 999; /* a failed parse must leave nothing behind */
    }
    free(b);
    return rc;
}

/* A catalogue row: header text, data bytes, expected status, substrings the message must hold. */
struct bad_case { const char *what, *hdr; size_t data_bytes; int status; const char *msg1, *msg2; };

#define W1 "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"

static const struct bad_case catalogue[] = {
    {"header not JSON", "{\"w\":", 16, LB_E_CORRUPT, "not valid JSON", NULL},
    {"header empty (length 0)", "", 16, LB_E_CORRUPT, "not valid JSON", NULL},
    {"header JSON array", "[1,2,3]", 0, LB_E_CORRUPT, "not a JSON object", NULL},
    {"header JSON string", "\"hello\"", 0, LB_E_CORRUPT, "not valid JSON", NULL}, /* jansson refuses a bare scalar at top level */
    {"header two JSON values", "{}{}", 0, LB_E_CORRUPT, "not valid JSON", NULL},
    {"entry not an object", "{\"w\":[1,2]}", 16, LB_E_CORRUPT, "\"w\"", "not an object"},
    {"entry missing dtype", "{\"w\":{\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "dtype"},
    {"entry missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "shape"},
    {"entry missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2]}}", 16, LB_E_CORRUPT, "\"w\"", "data_offsets"},
    {"data_offsets of 3", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8,16]}}", 16, LB_E_CORRUPT, "\"w\"", "data_offsets"},
    {"dtype not a string", "{\"w\":{\"dtype\":7,\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "dtype"},
    {"shape not an array", "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "shape"},
    {"dtype F8_E4M3", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, LB_E_UNSUPPORTED, "\"w\"", "F8_E4M3"},
    {"dtype I64", "{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, LB_E_UNSUPPORTED, "\"w\"", "I64"},
    {"dtype F64", "{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, LB_E_UNSUPPORTED, "\"w\"", "F64"},
    {"dtype lower case", "{\"w\":{\"dtype\":\"f32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, LB_E_UNSUPPORTED, "\"w\"", "f32"},
    {"negative shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "shape[1]"},
    {"fractional shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 16, LB_E_CORRUPT, "\"w\"", "shape[0]"},
    {"string shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "shape[0]"},
    {"9 dimensions", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "9 dimensions"},
    {"shape product overflows", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "overflows"},
    {"shape x dtype size overflows", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "overflows"},
    {"shape x dtype != span (short)", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, LB_E_CORRUPT, "\"w\"", "16 bytes but data_offsets span 12"},
    {"shape x dtype != span (long)", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "\"w\"", "8 bytes but data_offsets span 16"},
    {"offsets past the end (truncated data)", "{" W1 "}", 12, LB_E_CORRUPT, "\"w\"", "outside the data area"},
    {"offsets past the end, huge", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[9223372036854775800,9223372036854775807]}}", 16,
     LB_E_CORRUPT, "\"w\"", "outside the data area"},
    {"begin > end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", 16, LB_E_CORRUPT, "\"w\"", "begin <= end"},
    {"negative begin", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 16, LB_E_CORRUPT, "\"w\"", "begin <= end"},
    {"offsets not integers", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 16, LB_E_CORRUPT, "\"w\"", "data_offsets"},
    {"overlapping tensors", "{" W1 ",\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, LB_E_CORRUPT, "overlap", "\"v\""},
    {"overlapping tensors, same span", "{" W1 ",\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "overlap", "\"w\""},
    {"tensor inside another", "{\"big\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},\"in\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     32, LB_E_CORRUPT, "overlap", "\"in\""},
    {"duplicate keys", "{" W1 "," W1 "}", 16, LB_E_CORRUPT, "not valid JSON", "duplicate"},
    {"NUL byte in header", "{\"w\\u0000x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, LB_E_CORRUPT, "not valid JSON", NULL},
};

static void test_catalogue(void)
{
    for (size_t i = 0; i < sizeof catalogue / sizeof *catalogue; i++) {
        const struct bad_case *c = &catalogue[i];
        struct lb_err err;
        int rc = parse_hdr(c->hdr, c->data_bytes, &err);
        T_CHECK(rc == c->status, "%s: status %d (%s), want %d; message: %s", c->what, rc, lb_status_name(rc), c->status, err.msg);
        T_CHECK(strstr(err.msg, c->msg1) != NULL, "%s: message lacks '%s': %s", c->what, c->msg1, err.msg);
        T_CHECK(!c->msg2 || strstr(err.msg, c->msg2) != NULL, "%s: message lacks '%s': %s", c->what, c->msg2, err.msg);
        T_CHECK(err.status == rc, "%s: err.status %d != rc %d", c->what, err.status, rc);
    }
}

static void test_short_files(void)
{
    unsigned char b[8] = {0};
    struct lb_st_file f;
    struct lb_err err = {0};
    int rc = lb_st_parse(&f, b, 0, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "0 bytes") && strstr(err.msg, "8-byte header"), "empty: %d %s", rc, err.msg);
    unsigned char *seven = malloc(7);
    memset(seven, 0, 7);
    rc = lb_st_parse(&f, seven, 7, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "7 bytes"), "7 bytes: %d %s", rc, err.msg);
    free(seven);
    rc = lb_st_parse(&f, NULL, 0, &err);
    T_CHECK(rc == LB_E_CORRUPT, "NULL, 0: %d %s", rc, err.msg);
    /* exactly 8 bytes: header length 0, no header */
    rc = lb_st_parse(&f, b, 8, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "JSON"), "8 zero bytes: %d %s", rc, err.msg);
}

static void test_header_length(void)
{
    struct lb_st_file f;
    struct lb_err err = {0};
    size_t n;
    /* absurd: 200 MiB, in a 40-byte file */
    unsigned char *b = img("{}", 30, &n);
    uint64_t hl = 200ull << 20;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    int rc = lb_st_parse(&f, b, n, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "absurd") && strstr(err.msg, "209715200"), "200 MiB: %d %s", rc, err.msg);
    /* absurd: all ones (would overflow 8 + hlen) */
    memset(b, 0xff, 8);
    rc = lb_st_parse(&f, b, n, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "absurd"), "2^64-1: %d %s", rc, err.msg);
    /* past EOF: says 100, 40 bytes in the file (truncated header) */
    hl = 100;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    rc = lb_st_parse(&f, b, n, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "100") && strstr(err.msg, "past the end") && strstr(err.msg, "truncated"),
            "past EOF: %d %s", rc, err.msg);
    /* one byte past EOF */
    hl = n - 8 + 1;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    rc = lb_st_parse(&f, b, n, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "past the end"), "1 past EOF: %d %s", rc, err.msg);
    free(b);
    /* a good file cut anywhere inside its header */
    b = img("{" W1 "}", 16, &n);
    for (size_t cut = 8; cut < n - 16; cut++) {
        rc = lb_st_parse(&f, b, cut, &err);
        T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "past the end"), "cut at %zu: %d %s", cut, rc, err.msg);
    }
    /* cut inside its data */
    for (size_t cut = n - 16; cut < n; cut++) {
        rc = lb_st_parse(&f, b, cut, &err);
        T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "\"w\"") && strstr(err.msg, "truncated"), "cut at %zu: %d %s", cut, rc, err.msg);
    }
    free(b);
}

static void test_good_roundtrip(void)
{
    /* F32 [2,3] at 0, BF16 [4] at 24, F16 [2,2] at 32, I32 [1] at 40, a zero-size tensor,
     * __metadata__, and trailing header padding (spaces) as the reference writer makes. */
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"b.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"a.bf16\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
        "\"c.f16\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
        "\"d.i32\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[40,44]},"
        "\"e.empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[44,44]},"
        "\"f.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[44,48]}}     ";
    size_t n;
    unsigned char *b = img(hdr, 48, &n);
    unsigned char *d = b + 8 + strlen(hdr);
    float f32v[6] = {1.0f, -2.5f, 3.14159f, 0.0f, -0.0f, 1e-30f};
    memcpy(d, f32v, 24);
    float bfv[4] = {1.0f, -0.5f, 3.0f, 65536.0f}; /* exactly representable in bf16 */
    for (int i = 0; i < 4; i++) { uint16_t h = lb_f32_to_bf16(bfv[i]); memcpy(d + 24 + 2 * i, &h, 2); }
    float hv[4] = {0.25f, -1024.0f, 65504.0f, 5.960464477539063e-08f}; /* incl. f16 max and min subnormal */
    for (int i = 0; i < 4; i++) { uint16_t h = lb_f32_to_f16(hv[i]); memcpy(d + 32 + 2 * i, &h, 2); }
    int32_t iv = -7;
    memcpy(d + 40, &iv, 4);
    float sv = 42.0f;
    memcpy(d + 44, &sv, 4);
    struct lb_st_file f;
    struct lb_err err = {0};
    int rc = lb_st_parse(&f, b, n, &err);
    T_CHECK(rc == 0, "good file: %d %s", rc, err.msg);
    if (rc) { free(b); return; }
    T_CHECK(f.n_tensor == 6, "n_tensor %d, want 6 (__metadata__ is not a tensor)", f.n_tensor);
    T_CHECK(lb_st_find(&f, "__metadata__") == NULL, "__metadata__ found as a tensor");
    for (int i = 1; i < f.n_tensor; i++) T_CHECK(strcmp(f.tensors[i - 1].name, f.tensors[i].name) < 0, "not sorted at %d", i);
    const struct lb_tensor *t = lb_st_find(&f, "b.f32");
    T_CHECK(t && t->dtype == LB_F32 && t->n_dim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->n_elem == 6 && t->n_bytes == 24,
            "b.f32 metadata");
    if (t) for (int i = 0; i < 6; i++) T_CHECK(lb_tensor_get_f32(t->data, t->dtype, i) == f32v[i], "f32[%d]", i);
    t = lb_st_find(&f, "a.bf16");
    T_CHECK(t && t->dtype == LB_BF16 && t->n_elem == 4 && t->n_bytes == 8, "a.bf16 metadata");
    if (t) for (int i = 0; i < 4; i++) T_CHECK(lb_tensor_get_f32(t->data, t->dtype, i) == bfv[i], "bf16[%d] = %g", i, lb_tensor_get_f32(t->data, t->dtype, i));
    t = lb_st_find(&f, "c.f16");
    T_CHECK(t && t->dtype == LB_F16 && t->n_elem == 4, "c.f16 metadata");
    if (t) for (int i = 0; i < 4; i++) T_CHECK(lb_tensor_get_f32(t->data, t->dtype, i) == hv[i], "f16[%d] = %g want %g", i, lb_tensor_get_f32(t->data, t->dtype, i), hv[i]);
    t = lb_st_find(&f, "d.i32");
    T_CHECK(t && t->dtype == LB_I32 && lb_tensor_get_f32(t->data, t->dtype, 0) == -7.0f, "i32");
    t = lb_st_find(&f, "e.empty");
    T_CHECK(t && t->n_elem == 0 && t->n_bytes == 0 && t->n_dim == 2, "zero-size tensor");
    t = lb_st_find(&f, "f.scalar");
    T_CHECK(t && t->n_dim == 0 && t->n_elem == 1 && lb_tensor_get_f32(t->data, t->dtype, 0) == 42.0f, "scalar");
    T_CHECK(lb_st_find(&f, "zz") == NULL && lb_st_find(&f, "") == NULL, "find of absent names");
    lb_st_free(&f);
    lb_st_free(&f); /* idempotent */
    lb_st_free(NULL);
    free(b);
}

/* Writers that do not pad the header put tensor data at any address; reads must still be right
 * (and clean under UBSan). */
static void test_unaligned(void)
{
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},\"y\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[12,14]}}";
    for (int pad = 0; pad < 4; pad++) {
        char h[256];
        snprintf(h, sizeof h, "%s%.*s", hdr, pad, "   ");
        size_t n;
        unsigned char *b = img(h, 14, &n);
        float v[3] = {1.5f, -2.0f, 1e10f};
        memcpy(b + 8 + strlen(h), v, 12);
        uint16_t hv = lb_f32_to_f16(0.5f);
        memcpy(b + 8 + strlen(h) + 12, &hv, 2);
        struct lb_st_file f;
        struct lb_err err = {0};
        int rc = lb_st_parse(&f, b, n, &err);
        T_CHECK(rc == 0, "pad %d: %d %s", pad, rc, err.msg);
        if (!rc) {
            const struct lb_tensor *t = lb_st_find(&f, "x");
            for (int i = 0; i < 3; i++) T_CHECK(t && lb_tensor_get_f32(t->data, t->dtype, i) == v[i], "pad %d x[%d]", pad, i);
            t = lb_st_find(&f, "y");
            T_CHECK(t && lb_tensor_get_f32(t->data, t->dtype, 0) == 0.5f, "pad %d y", pad);
            lb_st_free(&f);
        }
        free(b);
    }
}

/* Holes between tensors and bytes after the last one are tolerated (nothing reads them). */
static void test_holes_tolerated(void)
{
    struct lb_err err;
    int rc = parse_hdr("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 64, &err);
    T_CHECK(rc == 0, "hole + trailing bytes: %d %s", rc, err.msg);
    rc = parse_hdr("{}", 0, &err);
    T_CHECK(rc == 0, "no tensors: %d %s", rc, err.msg);
    rc = parse_hdr("{\"__metadata__\":{\"format\":\"pt\"}}", 0, &err);
    T_CHECK(rc == 0, "only __metadata__: %d %s", rc, err.msg);
}

/* ---------------------------------------------------------------- files and sharded sets */

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (fp) { fwrite(buf, 1, n, fp); fclose(fp); }
}

/* A shard holding the named F32 [2] tensors, contiguous. */
static void write_shard(const char *path, const char *const *names, int n_names)
{
    char hdr[1024];
    int p = snprintf(hdr, sizeof hdr, "{");
    for (int i = 0; i < n_names; i++)
        p += snprintf(hdr + p, sizeof hdr - (size_t)p, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%d,%d]}", i ? "," : "", names[i],
                      8 * i, 8 * i + 8);
    snprintf(hdr + p, sizeof hdr - (size_t)p, "}");
    size_t n;
    unsigned char *b = img(hdr, (size_t)(8 * n_names), &n);
    write_file(path, b, n);
    free(b);
}

static void test_open_file(void)
{
    char dir[64], p[256];
    if (!tm_tmpdir(dir, sizeof dir)) T_SKIP("mkdtemp failed");
    struct lb_st_file f;
    struct lb_err err = {0};
    snprintf(p, sizeof p, "%s/none.safetensors", dir);
    int rc = lb_st_open(&f, p, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "none.safetensors") && strstr(err.msg, "cannot open"), "missing file: %d %s", rc, err.msg);
    snprintf(p, sizeof p, "%s/empty.safetensors", dir);
    write_file(p, "", 0);
    rc = lb_st_open(&f, p, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "empty.safetensors") && strstr(err.msg, "0 bytes"), "empty file: %d %s", rc, err.msg);
    snprintf(p, sizeof p, "%s/bad.safetensors", dir);
    size_t n;
    unsigned char *b = img("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, &n);
    write_file(p, b, n);
    free(b);
    rc = lb_st_open(&f, p, &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "bad.safetensors") && strstr(err.msg, "F8_E4M3"), "bad dtype via open: %d %s", rc, err.msg);
    T_CHECK(f.map == NULL && f.tensors == NULL && f.path == NULL, "failed open leaves state behind");
    snprintf(p, sizeof p, "%s/good.safetensors", dir);
    const char *names[] = {"a", "b"};
    write_shard(p, names, 2);
    rc = lb_st_open(&f, p, &err);
    T_CHECK(rc == 0 && f.n_tensor == 2 && lb_st_find(&f, "b") && f.path && !strcmp(f.path, p), "good via open: %d %s", rc, err.msg);
    if (!rc) lb_st_free(&f);
    /* a folder where a file is expected */
    snprintf(p, sizeof p, "%s/sub.safetensors", dir);
    mkdir(p, 0755);
    rc = lb_st_open(&f, p, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "sub.safetensors") && strstr(err.msg, "not a regular file"), "folder as file: %d %s", rc, err.msg);
    tm_rmtree(dir);
}

static void test_sharded(void)
{
    char dir[64], p[256];
    if (!tm_tmpdir(dir, sizeof dir)) T_SKIP("mkdtemp failed");
    struct lb_st_set s;
    struct lb_err err = {0};
    int rc = lb_st_set_open(&s, dir, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "no model.safetensors") && strstr(err.msg, dir), "empty folder: %d %s", rc, err.msg);

    const char *s1[] = {"x.0", "x.1"}, *s2[] = {"y.0"};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_shard(p, s1, 2);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_shard(p, s2, 1);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    tm_write_text(p, "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"x.0\":\"model-00001-of-00002.safetensors\","
                     "\"y.0\":\"model-00002-of-00002.safetensors\",\"x.1\":\"model-00001-of-00002.safetensors\"}}");
    rc = lb_st_set_open(&s, dir, &err);
    T_CHECK(rc == 0 && s.n_file == 2, "good sharded set: %d %s", rc, err.msg);
    if (!rc) {
        T_CHECK(lb_st_set_find(&s, "x.1") && lb_st_set_find(&s, "y.0") && !lb_st_set_find(&s, "z"), "find across shards");
        lb_st_set_free(&s);
    }
    struct { const char *what, *index; int status; const char *m1, *m2; } bad[] = {
        {"index names a missing shard",
         "{\"weight_map\":{\"x.0\":\"model-00001-of-00002.safetensors\",\"q\":\"model-00003-of-00003.safetensors\"}}", LB_E_INPUT,
         "model-00003-of-00003.safetensors", "cannot open"},
        {"tensor not in the shard the index names",
         "{\"weight_map\":{\"x.0\":\"model-00002-of-00002.safetensors\",\"y.0\":\"model-00002-of-00002.safetensors\"}}", LB_E_CORRUPT,
         "\"x.0\"", "model-00002-of-00002.safetensors"},
        {"tensor in no shard", "{\"weight_map\":{\"ghost\":\"model-00001-of-00002.safetensors\"}}", LB_E_CORRUPT, "\"ghost\"",
         "model-00001-of-00002.safetensors"},
        {"weight_map path with '/'", "{\"weight_map\":{\"x.0\":\"../model-00001-of-00002.safetensors\"}}", LB_E_CORRUPT, "\"x.0\"",
         "file name"},
        {"weight_map absolute path", "{\"weight_map\":{\"x.0\":\"/etc/passwd\"}}", LB_E_CORRUPT, "\"x.0\"", "file name"},
        {"weight_map value not a string", "{\"weight_map\":{\"x.0\":3}}", LB_E_CORRUPT, "\"x.0\"", "file name"},
        {"no weight_map", "{\"metadata\":{}}", LB_E_CORRUPT, "weight_map", "model.safetensors.index.json"},
        {"weight_map not an object", "{\"weight_map\":[]}", LB_E_CORRUPT, "weight_map", "model.safetensors.index.json"},
        {"index not JSON", "{\"weight_map\":", LB_E_CORRUPT, "weight_map", "model.safetensors.index.json"},
        {"index duplicate key", "{\"weight_map\":{},\"weight_map\":{}}", LB_E_CORRUPT, "weight_map", "duplicate"},
        {"weight_map names the folder", "{\"weight_map\":{\"x.0\":\"..\"}}", LB_E_INPUT, "..", "not a regular file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tm_write_text(p, bad[i].index);
        memset(&err, 0, sizeof err);
        rc = lb_st_set_open(&s, dir, &err);
        T_CHECK(rc == bad[i].status, "%s: status %d (%s) want %d: %s", bad[i].what, rc, lb_status_name(rc), bad[i].status, err.msg);
        T_CHECK(strstr(err.msg, bad[i].m1) && (!bad[i].m2 || strstr(err.msg, bad[i].m2)), "%s: message: %s", bad[i].what, err.msg);
        T_CHECK(s.files == NULL && s.n_file == 0, "%s: failed open leaves files", bad[i].what);
    }
    /* an empty weight_map is an empty (valid) set: the model loader then reports missing tensors */
    tm_write_text(p, "{\"weight_map\":{}}");
    rc = lb_st_set_open(&s, dir, &err);
    T_CHECK(rc == 0 && s.n_file == 0, "empty weight_map: %d %s", rc, err.msg);
    if (!rc) lb_st_set_free(&s);
    /* the same tensor in two shards */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    const char *s2dup[] = {"y.0", "x.1"};
    write_shard(p, s2dup, 2);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    tm_write_text(p, "{\"weight_map\":{\"x.0\":\"model-00001-of-00002.safetensors\",\"x.1\":\"model-00001-of-00002.safetensors\","
                     "\"y.0\":\"model-00002-of-00002.safetensors\"}}");
    rc = lb_st_set_open(&s, dir, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "\"x.1\"") && strstr(err.msg, "model-00001-of-00002.safetensors") &&
                strstr(err.msg, "model-00002-of-00002.safetensors"),
            "tensor in two shards: %d %s", rc, err.msg);
    /* a damaged shard: its name is in the message */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_file(p, "\x10\0\0\0\0\0\0\0{", 9);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    tm_write_text(p, "{\"weight_map\":{\"x.0\":\"model-00001-of-00002.safetensors\",\"y.0\":\"model-00002-of-00002.safetensors\"}}");
    rc = lb_st_set_open(&s, dir, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, "model-00002-of-00002.safetensors") && strstr(err.msg, "past the end"), "damaged shard: %d %s", rc,
            err.msg);
    tm_rmtree(dir);
}

/* ---------------------------------------------------------------- conversions */

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_bf16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lb_bf16_to_f32((uint16_t)h);
        T_CHECK(bits(f) == h << 16, "bf16 %04x widens to %08x", h, bits(f));
        if (isnan(f)) { if (!isnan(lb_bf16_to_f32(lb_f32_to_bf16(f)))) bad++; continue; }
        if (lb_f32_to_bf16(f) != h) bad++;
    }
    T_CHECK(bad == 0, "%d bf16 values do not round-trip", bad);
    /* round to nearest, ties to even */
    T_CHECK(lb_f32_to_bf16(from_bits(0x3f808000)) == 0x3f80, "1 + 2^-8 (tie, even below) -> 1");
    T_CHECK(lb_f32_to_bf16(from_bits(0x3f818000)) == 0x3f82, "1 + 3*2^-8 (tie, odd below) -> up");
    T_CHECK(lb_f32_to_bf16(from_bits(0x3f808001)) == 0x3f81, "just above a tie rounds up");
    T_CHECK(lb_f32_to_bf16(from_bits(0x3f807fff)) == 0x3f80, "just below a tie rounds down");
    T_CHECK(lb_f32_to_bf16(from_bits(0xbf818000)) == 0xbf82, "negative tie to even");
    T_CHECK(lb_f32_to_bf16(FLT_MAX) == 0x7f80, "FLT_MAX rounds to inf (RNE)");
    T_CHECK(lb_f32_to_bf16(from_bits(0x7f7f7fff)) == 0x7f7f, "largest value below the tie stays finite");
    /* subnormals */
    T_CHECK(lb_f32_to_bf16(from_bits(0x00010000)) == 0x0001, "smallest bf16 subnormal");
    T_CHECK(lb_f32_to_bf16(from_bits(0x00008000)) == 0x0000, "half the smallest subnormal: tie to even (0)");
    T_CHECK(lb_f32_to_bf16(from_bits(0x00018000)) == 0x0002, "1.5 subnormal: tie to even (2)");
    T_CHECK(lb_f32_to_bf16(from_bits(0x007fffff)) == 0x0080, "largest f32 subnormal rounds to the smallest normal");
    /* inf, nan, signed zero */
    T_CHECK(lb_f32_to_bf16(INFINITY) == 0x7f80 && lb_f32_to_bf16(-INFINITY) == 0xff80, "inf");
    T_CHECK(isnan(lb_bf16_to_f32(lb_f32_to_bf16(NAN))), "nan stays nan");
    T_CHECK(isnan(lb_bf16_to_f32(lb_f32_to_bf16(from_bits(0x7f800001)))), "nan with payload only in the low bits stays nan");
    T_CHECK(isnan(lb_bf16_to_f32(lb_f32_to_bf16(from_bits(0xffffffff)))), "all-ones nan stays nan");
    T_CHECK(lb_f32_to_bf16(-0.0f) == 0x8000, "-0");
}

/* The f16 value nearest x (ties to even), by brute force over the 2^15 magnitudes. */
static uint16_t f16_nearest(float x)
{
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (a >= 65520.0) return sign | 0x7c00;
    uint16_t best = 0;
    double best_d = INFINITY;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double d = fabs((double)lb_f16_to_f32((uint16_t)h) - a);
        if (d < best_d || (d == best_d && !(h & 1))) { best_d = d; best = (uint16_t)h; }
    }
    return sign | best;
}

static void test_f16(void)
{
    /* widening against exact values */
    T_CHECK(lb_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal = 2^-24");
    T_CHECK(lb_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24), "largest subnormal");
    T_CHECK(lb_f16_to_f32(0x0200) == ldexpf(1.0f, -15), "subnormal 0x0200 = 2^-15");
    T_CHECK(lb_f16_to_f32(0x0400) == ldexpf(1.0f, -14), "smallest normal");
    T_CHECK(lb_f16_to_f32(0x7bff) == 65504.0f, "max");
    T_CHECK(lb_f16_to_f32(0x3c00) == 1.0f && lb_f16_to_f32(0xc000) == -2.0f, "1, -2");
    T_CHECK(isinf(lb_f16_to_f32(0x7c00)) && lb_f16_to_f32(0xfc00) < 0, "inf");
    T_CHECK(isnan(lb_f16_to_f32(0x7e00)) && isnan(lb_f16_to_f32(0x7c01)), "nan");
    T_CHECK(bits(lb_f16_to_f32(0x8000)) == 0x80000000u, "-0");
    /* exact round trip of every non-NaN f16 */
    int bad = 0, first = -1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lb_f16_to_f32((uint16_t)h);
        if (isnan(f)) { if (!isnan(lb_f16_to_f32(lb_f32_to_f16(f)))) bad++; continue; }
        if (lb_f32_to_f16(f) != h) { if (first < 0) first = (int)h; bad++; }
    }
    T_CHECK(bad == 0, "%d f16 values do not round-trip (first 0x%04x -> 0x%04x)", bad, first, first >= 0 ? lb_f32_to_f16(lb_f16_to_f32((uint16_t)first)) : 0);
    /* ties to even, normal range */
    T_CHECK(lb_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00, "1 + 2^-11 (tie) -> 1");
    T_CHECK(lb_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "1 + 3*2^-11 (tie) -> even above");
    T_CHECK(lb_f32_to_f16(65519.0f) == 0x7bff, "65519 -> max");
    T_CHECK(lb_f32_to_f16(65520.0f) == 0x7c00, "65520 (tie above max) -> inf");
    T_CHECK(lb_f32_to_f16(1e10f) == 0x7c00 && lb_f32_to_f16(-1e10f) == 0xfc00, "overflow -> inf");
    /* subnormal results */
    T_CHECK(lb_f32_to_f16(ldexpf(1, -25)) == 0x0000, "2^-25 (tie between 0 and 1) -> 0");
    T_CHECK(lb_f32_to_f16(ldexpf(3, -25)) == 0x0002, "3*2^-25 (tie between 1 and 2) -> 2");
    T_CHECK(lb_f32_to_f16(ldexpf(1.25f, -25)) == 0x0001, "1.25*2^-25 -> 1");
    T_CHECK(lb_f32_to_f16(ldexpf(1, -15)) == 0x0200, "2^-15 -> 0x0200 (got 0x%04x)", lb_f32_to_f16(ldexpf(1, -15)));
    T_CHECK(lb_f32_to_f16(ldexpf(1, -26)) == 0x0000 && lb_f32_to_f16(-ldexpf(1, -26)) == 0x8000, "tiny -> signed 0");
    T_CHECK(lb_f32_to_f16(ldexpf(2047, -25)) == 0x0400, "largest-subnormal + half ulp (tie) -> smallest normal");
    T_CHECK(lb_f32_to_f16(INFINITY) == 0x7c00 && isnan(lb_f16_to_f32(lb_f32_to_f16(NAN))), "inf, nan");
    /* against brute force on seeded random values across the f16 range (incl. subnormals) */
    uint64_t s = 12345;
    int wrong = 0;
    for (int i = 0; i < 4000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint32_t u = (uint32_t)(0x32800000u + (s % (0x47800000u - 0x32800000u))) | (uint32_t)((s >> 40) & 1) << 31;
        float x = from_bits(u);
        uint16_t want = f16_nearest(x), got = lb_f32_to_f16(x);
        if (want != got) {
            if (wrong < 5) fprintf(stderr, "  f16(%a) = 0x%04x, nearest is 0x%04x\n", (double)x, got, want);
            wrong++;
        }
    }
    T_CHECK(wrong == 0, "%d of 4000 random values not rounded to nearest even", wrong);
}

/* ---------------------------------------------------------------- mutation loop */

static void test_mutations(void)
{
    /* a good 3-tensor file */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},\"c\":{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[22,24]}}";
    size_t n;
    unsigned char *good = img(hdr, 24, &n);
    struct lb_st_file f;
    struct lb_err err;
    T_CHECK(lb_st_parse(&f, good, n, &err) == 0, "seed file parses: %s", err.msg);
    lb_st_free(&f);
    uint64_t s = 0x5eed;
    int n_ok = 0, n_bad = 0, n_weird = 0;
    static const char tokens[] = "{}[],:\"0123456789-eE.ABFIU \\";
    for (int iter = 0; iter < 3000; iter++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        unsigned char *m = malloc(n);
        memcpy(m, good, n);
        size_t len = n;
        int kind = (int)(s % 5);
        size_t pos = (size_t)((s >> 8) % n);
        switch (kind) {
        case 0: m[pos] ^= (unsigned char)(1u << ((s >> 40) % 8)); break;      /* flip a bit */
        case 1: m[pos] = tokens[(s >> 40) % (sizeof tokens - 1)]; break;      /* swap in a JSON token */
        case 2: len = pos; break;                                              /* truncate */
        case 3: m[pos] = (unsigned char)(s >> 32); m[(pos * 7 + 3) % n] = (unsigned char)(s >> 48); break; /* two random bytes */
        case 4: if (pos < 8) m[pos] = (unsigned char)(s >> 24); else m[(s >> 20) % 8] ^= 0x01; break; /* header length */
        }
        unsigned char *exact = malloc(len ? len : 1); /* exactly len bytes, so ASan sees overreads */
        memcpy(exact, m, len);
        memset(&err, 0, sizeof err);
        int rc = lb_st_parse(&f, exact, len, &err);
        if (rc == 0) {
            n_ok++;
            /* every tensor it accepts must lie inside the buffer and be readable */
            for (int i = 0; i < f.n_tensor; i++) {
                const struct lb_tensor *t = &f.tensors[i];
                const unsigned char *d = t->data;
                if (d < exact || d + t->n_bytes > exact + len) n_weird++;
                for (int64_t k = 0; k < t->n_elem && t->n_bytes; k++) (void)lb_tensor_get_f32(t->data, t->dtype, k);
            }
            lb_st_free(&f);
        } else if (rc < 0 && rc >= LB_E_DATA && err.msg[0] && err.status == rc) {
            n_bad++;
        } else {
            n_weird++;
            fprintf(stderr, "  mutation %d (kind %d pos %zu): rc %d msg '%s'\n", iter, kind, pos, rc, err.msg);
        }
        free(exact);
        free(m);
    }
    T_CHECK(n_weird == 0, "%d mutations gave a bad status or a tensor outside the buffer", n_weird);
    T_CHECK(n_ok + n_bad == 3000, "accounting");
    printf("     mutations: %d accepted, %d refused\n", n_ok, n_bad);
    free(good);
}

int main(void)
{
    T_RUN(test_catalogue);
    T_RUN(test_short_files);
    T_RUN(test_header_length);
    T_RUN(test_good_roundtrip);
    T_RUN(test_unaligned);
    T_RUN(test_holes_tolerated);
    T_RUN(test_open_file);
    T_RUN(test_sharded);
    T_RUN(test_bf16);
    T_RUN(test_f16);
    T_RUN(test_mutations);
    return T_DONE();
}
