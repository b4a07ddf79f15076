/* test_torchbin.c — torch.save (adapter_model.bin) parser: round trips through a writer that
 * follows what torch 2.x + CPython's pickler emit byte for byte, then a catalogue of malformed
 * inputs with the status and message each must produce, then truncation and byte-flip sweeps.
 *
 *   build/tests/test_torchbin                    run the tests (from the repository root)
 *   build/tests/test_torchbin --write-fixture    rewrite tests/data/torchbin/tiny_adapter.bin */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "t.h"
#include "torchbin.h"

#define FIXTURE "tests/data/torchbin/tiny_adapter.bin"

/* ------------------------------------------------------------------------- byte buffer */

struct bb { unsigned char *p; size_t n, cap; };

static void put(struct bb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        b->p = realloc(b->p, nc);
        if (!b->p) abort();
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put8(struct bb *b, unsigned v) { unsigned char c = (unsigned char)v; put(b, &c, 1); }
static void put16(struct bb *b, unsigned v) { put8(b, v & 0xff); put8(b, (v >> 8) & 0xff); }
static void put32(struct bb *b, uint32_t v) { put16(b, v & 0xffff); put16(b, v >> 16); }
static void put64(struct bb *b, uint64_t v) { put32(b, (uint32_t)v); put32(b, (uint32_t)(v >> 32)); }
static void puts_(struct bb *b, const char *s) { put(b, s, strlen(s)); }

/* -------------------------------------------------------------- pickle writer (protocol 2)
 * Mirrors CPython's C pickler as torch.save drives it: BINPUT after every memoizable object,
 * BINGET for objects seen before (strings and globals by identity; here by text), TUPLE1-3 for
 * short tuples, MARK..TUPLE otherwise, EMPTY_TUPLE unmemoized, ints as BININT1/BININT2/BININT/LONG1,
 * a dict of one item as key value SETITEM, longer ones as MARK ... SETITEMS. */

struct pk {
    struct bb b;
    char *memo_key[256];
    int n_memo;
    int proto4;   /* protocol 4 flavour: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE */
};

static void pk_memo(struct pk *k, const char *key)
{
    if (k->proto4) put8(&k->b, 0x94);
    else { put8(&k->b, 'q'); put8(&k->b, (unsigned)k->n_memo); }
    k->memo_key[k->n_memo++] = key ? strdup(key) : NULL;
}
static int pk_get(struct pk *k, const char *key)
{
    for (int i = 0; i < k->n_memo; i++)
        if (k->memo_key[i] && !strcmp(k->memo_key[i], key)) { put8(&k->b, 'h'); put8(&k->b, (unsigned)i); return 1; }
    return 0;
}
static void pk_free(struct pk *k)
{
    for (int i = 0; i < k->n_memo; i++) free(k->memo_key[i]);
    free(k->b.p);
}
static void pk_str(struct pk *k, const char *s)
{
    char key[300];
    snprintf(key, sizeof key, "s:%s", s);
    if (pk_get(k, key)) return;
    if (k->proto4 && strlen(s) < 256) { put8(&k->b, 0x8c); put8(&k->b, (unsigned)strlen(s)); }
    else { put8(&k->b, 'X'); put32(&k->b, (uint32_t)strlen(s)); }
    puts_(&k->b, s);
    pk_memo(k, key);
}
static void pk_global(struct pk *k, const char *mod, const char *name)
{
    char key[300];
    snprintf(key, sizeof key, "g:%s.%s", mod, name);
    if (pk_get(k, key)) return;
    if (k->proto4) {
        pk_str(k, mod);
        pk_str(k, name);
        put8(&k->b, 0x93);
    } else {
        put8(&k->b, 'c');
        puts_(&k->b, mod);
        put8(&k->b, '\n');
        puts_(&k->b, name);
        put8(&k->b, '\n');
    }
    pk_memo(k, key);
}
static void pk_int(struct pk *k, int64_t v)
{
    if (v >= 0 && v <= 0xff) { put8(&k->b, 'K'); put8(&k->b, (unsigned)v); }
    else if (v >= 0 && v <= 0xffff) { put8(&k->b, 'M'); put16(&k->b, (unsigned)v); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { put8(&k->b, 'J'); put32(&k->b, (uint32_t)(int32_t)v); }
    else {
        unsigned char by[8];
        int n = 8;
        for (int i = 0; i < 8; i++) by[i] = (unsigned char)((uint64_t)v >> (8 * i));
        while (n > 1 && ((by[n - 1] == 0 && !(by[n - 2] & 0x80)) || (by[n - 1] == 0xff && (by[n - 2] & 0x80)))) n--;
        put8(&k->b, 0x8a);
        put8(&k->b, (unsigned)n);
        put(&k->b, by, (size_t)n);
    }
}
static void pk_int_tuple(struct pk *k, int n, const int64_t *v)
{
    if (n == 0) { put8(&k->b, ')'); return; }
    if (n > 3) put8(&k->b, '(');
    for (int i = 0; i < n; i++) pk_int(k, v[i]);
    put8(&k->b, n > 3 ? 't' : (unsigned)(0x84 + n));
    pk_memo(k, NULL);
}
/* collections.OrderedDict() as CPython reduces it: GLOBAL, EMPTY_TUPLE, REDUCE. */
static void pk_odict(struct pk *k)
{
    pk_global(k, "collections", "OrderedDict");
    put8(&k->b, ')');
    put8(&k->b, 'R');
    pk_memo(k, NULL);
}

struct tspec {
    const char *name;
    const char *stype;  /* "BFloat16Storage", ... */
    const char *key;    /* storage key */
    int64_t numel;      /* storage elements */
    int64_t offset;
    int nd;
    int64_t shape[4], stride[4];
    int param;          /* wrapped in torch._utils._rebuild_parameter */
};

enum top_kind { TOP_DICT, TOP_ODICT_META };

/* torch._utils._rebuild_tensor_v2(('storage', torch.T, key, 'cpu', numel) BINPERSID, offset, size, stride, False, OrderedDict()) */
static void pk_tensor(struct pk *k, const struct tspec *t)
{
    if (t->param) pk_global(k, "torch._utils", "_rebuild_parameter");
    pk_global(k, "torch._utils", "_rebuild_tensor_v2");
    put8(&k->b, '(');                 /* args: 6 > 3 items */
    put8(&k->b, '(');                 /* persistent id: 5 items */
    pk_str(k, "storage");
    pk_global(k, "torch", t->stype);
    pk_str(k, t->key);
    pk_str(k, "cpu");
    pk_int(k, t->numel);
    put8(&k->b, 't');
    pk_memo(k, NULL);
    put8(&k->b, 'Q');                 /* BINPERSID */
    pk_int(k, t->offset);
    pk_int_tuple(k, t->nd, t->shape);
    pk_int_tuple(k, t->nd, t->stride);
    put8(&k->b, 0x89);                /* requires_grad False */
    pk_odict(k);                      /* backward_hooks */
    put8(&k->b, 't');
    pk_memo(k, NULL);
    put8(&k->b, 'R');
    pk_memo(k, NULL);
    if (t->param) {
        put8(&k->b, 0x89);
        pk_odict(k);
        put8(&k->b, 0x87);            /* TUPLE3 (tensor, False, OrderedDict()) */
        pk_memo(k, NULL);
        put8(&k->b, 'R');
        pk_memo(k, NULL);
    }
}

static void pk_dump(struct pk *k, const struct tspec *ts, int n, enum top_kind top)
{
    put8(&k->b, 0x80);
    put8(&k->b, k->proto4 ? 4 : 2);
    size_t frame_at = 0;
    if (k->proto4) { put8(&k->b, 0x95); frame_at = k->b.n; put64(&k->b, 0); }
    if (top == TOP_DICT) {
        put8(&k->b, '}');
        pk_memo(k, NULL);
    } else {
        pk_odict(k);
    }
    if (n > 1) put8(&k->b, '(');
    for (int i = 0; i < n; i++) {
        pk_str(k, ts[i].name);
        pk_tensor(k, &ts[i]);
    }
    if (n > 1) put8(&k->b, 'u');
    else if (n == 1) put8(&k->b, 's');
    if (top == TOP_ODICT_META) { /* state {'_metadata': OrderedDict({'': {'version': 1}})}, then BUILD */
        put8(&k->b, '}');
        pk_memo(k, NULL);
        pk_str(k, "_metadata");
        pk_odict(k);
        pk_str(k, "");
        put8(&k->b, '}');
        pk_memo(k, NULL);
        pk_str(k, "version");
        pk_int(k, 1);
        put8(&k->b, 's');
        put8(&k->b, 's');
        put8(&k->b, 's');
        put8(&k->b, 'b');
    }
    put8(&k->b, '.');
    if (k->proto4) {
        uint64_t len = k->b.n - frame_at - 8;
        for (int i = 0; i < 8; i++) k->b.p[frame_at + i] = (unsigned char)(len >> (8 * i));
    }
}

/* ------------------------------------------------------------------ ZIP writer (miniz-like) */

struct member { const char *name; const void *data; size_t n; int method; };

struct zopts {
    int no_zip64_end;   /* plain end record only */
    int zip64_extra;    /* central entries carry 0xffffffff + ZIP64 extra fields */
    int align;          /* data alignment (torch: 64); 0 = none */
};

static uint32_t crc32_(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void zip_write(struct bb *z, const char *prefix, const struct member *m, int n, const struct zopts *o)
{
    uint64_t *offs = calloc((size_t)n, sizeof *offs);
    char name[256];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/%s", prefix, m[i].name);
        size_t nl = strlen(name);
        offs[i] = z->n;
        size_t pad = 0;
        if (o->align) {
            size_t start = z->n + 30 + nl + 4;
            pad = (o->align - start % (size_t)o->align) % (size_t)o->align;
        }
        put32(z, 0x04034b50u);
        put16(z, o->zip64_extra ? 45 : 20);
        put16(z, 0);
        put16(z, (unsigned)m[i].method);
        put16(z, 0); put16(z, 0x21);      /* time, date */
        put32(z, crc32_(m[i].data, m[i].n));
        put32(z, (uint32_t)m[i].n);
        put32(z, (uint32_t)m[i].n);
        put16(z, (unsigned)nl);
        put16(z, o->align ? (unsigned)(4 + pad) : 0);
        puts_(z, name);
        if (o->align) {                   /* torch's "FB" padding extra field, filled with 'Z' */
            puts_(z, "FB");
            put16(z, (unsigned)pad);
            for (size_t k = 0; k < pad; k++) put8(z, 'Z');
        }
        put(z, m[i].data, m[i].n);
    }
    uint64_t cd_off = z->n;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/%s", prefix, m[i].name);
        size_t nl = strlen(name);
        put32(z, 0x02014b50u);
        put16(z, 0x031e);
        put16(z, o->zip64_extra ? 45 : 20);
        put16(z, 0);
        put16(z, (unsigned)m[i].method);
        put16(z, 0); put16(z, 0x21);
        put32(z, crc32_(m[i].data, m[i].n));
        put32(z, o->zip64_extra ? 0xffffffffu : (uint32_t)m[i].n);
        put32(z, o->zip64_extra ? 0xffffffffu : (uint32_t)m[i].n);
        put16(z, (unsigned)nl);
        put16(z, o->zip64_extra ? 4 + 24 + 4 + 4 : 0);
        put16(z, 0); put16(z, 0); put16(z, 0);
        put32(z, 0);
        put32(z, o->zip64_extra ? 0xffffffffu : (uint32_t)offs[i]);
        puts_(z, name);
        if (o->zip64_extra) {             /* an unknown field first, to be skipped */
            put16(z, 0x7875); put16(z, 4); put32(z, 0);
            put16(z, 1); put16(z, 24); put64(z, m[i].n); put64(z, m[i].n); put64(z, offs[i]);
        }
    }
    uint64_t cd_size = z->n - cd_off;
    if (!o->no_zip64_end) {
        uint64_t r = z->n;
        put32(z, 0x06064b50u);
        put64(z, 44);
        put16(z, 0x031e); put16(z, 45);
        put32(z, 0); put32(z, 0);
        put64(z, (uint64_t)n); put64(z, (uint64_t)n);
        put64(z, cd_size); put64(z, cd_off);
        put32(z, 0x07064b50u);
        put32(z, 0);
        put64(z, r);
        put32(z, 1);
    }
    put32(z, 0x06054b50u);
    put16(z, 0); put16(z, 0);
    put16(z, (unsigned)n); put16(z, (unsigned)n);
    put32(z, (uint32_t)cd_size);
    put32(z, (uint32_t)cd_off);
    put16(z, 0);
    free(offs);
}

/* ------------------------------------------------------------------------------ fixtures */

/* The example from the brief: a.lora_A.weight bf16 [2,3], b.lora_B.weight f32 [3,2]. */
static const float A_VALS[6] = {1.0f, -2.0f, 0.5f, 3.25f, -0.125f, 100.0f};
static const float B_VALS[6] = {0.1f, 0.2f, -0.3f, 4.0f, 5.5f, -6.75f};

static struct tspec TS_AB[2] = {
    {"a.lora_A.weight", "BFloat16Storage", "0", 6, 0, 2, {2, 3}, {3, 1}, 0},
    {"b.lora_B.weight", "FloatStorage", "1", 6, 0, 2, {3, 2}, {2, 1}, 0},
};

struct build {
    const struct tspec *ts;
    int n_ts;
    enum top_kind top;
    int proto4;
    const unsigned char *raw_pkl;  /* use these bytes as data.pkl instead of writing one */
    size_t n_raw_pkl;
    const char *byteorder;         /* NULL: "little"; "" : no record */
    int method0;                   /* compression method of data/0 */
    struct zopts z;
    const char *prefix;
    size_t s0_bytes, s1_bytes;     /* storage member sizes (default 12 and 24) */
};

static void storage_bytes(unsigned char s0[64], unsigned char s1[64])
{
    memset(s0, 0, 64);
    memset(s1, 0, 64);
    for (int i = 0; i < 6; i++) {
        uint16_t h = lb_f32_to_bf16(A_VALS[i]);
        s0[2 * i] = (unsigned char)(h & 0xff);
        s0[2 * i + 1] = (unsigned char)(h >> 8);
        memcpy(s1 + 4 * i, &B_VALS[i], 4); /* little-endian host */
    }
}

static void build_file(struct bb *out, const struct build *bd)
{
    struct pk k;
    memset(&k, 0, sizeof k);
    k.proto4 = bd->proto4;
    const void *pkl = bd->raw_pkl;
    size_t n_pkl = bd->n_raw_pkl;
    if (!pkl) {
        pk_dump(&k, bd->ts ? bd->ts : TS_AB, bd->ts ? bd->n_ts : 2, bd->top);
        pkl = k.b.p;
        n_pkl = k.b.n;
    }
    unsigned char s0[64], s1[64];
    storage_bytes(s0, s1);
    const char *bo = bd->byteorder ? bd->byteorder : "little";
    struct member m[8];
    int n = 0;
    m[n++] = (struct member){"data.pkl", pkl, n_pkl, 0};
    if (*bo) m[n++] = (struct member){"byteorder", bo, strlen(bo), 0};
    m[n++] = (struct member){"data/0", s0, bd->s0_bytes ? bd->s0_bytes : 12, bd->method0};
    m[n++] = (struct member){"data/1", s1, bd->s1_bytes ? bd->s1_bytes : 24, 0};
    m[n++] = (struct member){"version", "3\n", 2, 0};
    m[n++] = (struct member){".data/serialization_id", "1234567890123456789012345678901234567890", 40, 0};
    struct zopts zo = bd->z;
    if (zo.align == 0) zo.align = 64;
    if (zo.align < 0) zo.align = 0;
    zip_write(out, bd->prefix ? bd->prefix : "adapter_model", m, n, &zo);
    pk_free(&k);
}

static struct bb make(const struct build *bd)
{
    struct bb b = {0};
    build_file(&b, bd);
    return b;
}

/* Parse; check status and that the message contains want (when given). */
static int expect(const struct bb *b, int status, const char *want, const char *what)
{
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    struct lb_err err = {0};
    int rc = lb_torchbin_parse(&f, b->p, b->n, &err);
    int ok = rc == status && (!want || strstr(err.msg, want));
    T_CHECK(ok, "%s: got %d (%s) \"%s\", want %d (%s) containing \"%s\"", what, rc, lb_status_name(rc), err.msg, status,
            lb_status_name(status), want ? want : "");
    if (rc == 0) T_CHECK(f.tensors != NULL, "%s: no tensor array", what);
    else T_CHECK(f.tensors == NULL && f.n_tensor == 0, "%s: failure left tensors behind", what);
    lb_st_free(&f);
    return ok;
}

static void check_ab(const struct lb_st_file *f, const unsigned char *buf, size_t n, const char *what)
{
    T_CHECK(f->n_tensor == 2, "%s: %d tensors", what, f->n_tensor);
    if (f->n_tensor != 2) return;
    T_CHECK(!strcmp(f->tensors[0].name, "a.lora_A.weight") && !strcmp(f->tensors[1].name, "b.lora_B.weight"),
            "%s: names/order %s %s", what, f->tensors[0].name, f->tensors[1].name);
    const struct lb_tensor *a = lb_st_find(f, "a.lora_A.weight"), *b = lb_st_find(f, "b.lora_B.weight");
    T_CHECK(a && b, "%s: lb_st_find", what);
    if (!a || !b) return;
    T_CHECK(a->dtype == LB_BF16 && a->n_dim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->n_elem == 6 && a->n_bytes == 12,
            "%s: a meta dtype %d dims %d [%lld %lld] n %lld bytes %zu", what, a->dtype, a->n_dim, (long long)a->shape[0],
            (long long)a->shape[1], (long long)a->n_elem, a->n_bytes);
    T_CHECK(b->dtype == LB_F32 && b->n_dim == 2 && b->shape[0] == 3 && b->shape[1] == 2 && b->n_elem == 6 && b->n_bytes == 24,
            "%s: b meta", what);
    const unsigned char *pa = a->data, *pb = b->data;
    T_CHECK(pa >= buf && pa + a->n_bytes <= buf + n && pb >= buf && pb + b->n_bytes <= buf + n, "%s: data outside buffer", what);
    for (int i = 0; i < 6; i++) {
        float va = lb_tensor_get_f32(a->data, a->dtype, i), vb = lb_tensor_get_f32(b->data, b->dtype, i);
        T_CHECK(va == A_VALS[i], "%s: a[%d] = %g want %g", what, i, va, A_VALS[i]);
        T_CHECK(vb == B_VALS[i], "%s: b[%d] = %g want %g", what, i, vb, B_VALS[i]);
    }
}

static void parse_ok_ab(const struct build *bd, const char *what)
{
    struct bb b = make(bd);
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    struct lb_err err = {0};
    int rc = lb_torchbin_parse(&f, b.p, b.n, &err);
    T_CHECK(rc == 0, "%s: rc %d %s", what, rc, err.msg);
    if (rc == 0) check_ab(&f, b.p, b.n, what);
    lb_st_free(&f);
    free(b.p);
}

/* --------------------------------------------------------------------------------- tests */

static void test_roundtrip_torch_layout(void)
{
    struct build bd = {0};
    parse_ok_ab(&bd, "plain dict, protocol 2, ZIP64 end, 64-byte aligned");
    /* the data pointers land 64-byte aligned, as torch writes them */
    struct bb b = make(&bd);
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    struct lb_err err = {0};
    T_CHECK(lb_torchbin_parse(&f, b.p, b.n, &err) == 0, "%s", err.msg);
    for (int i = 0; i < f.n_tensor; i++)
        T_CHECK(((const unsigned char *)f.tensors[i].data - b.p) % 64 == 0, "tensor %d at file offset %td", i,
                (const unsigned char *)f.tensors[i].data - b.p);
    T_CHECK(f.path == NULL && f.map == NULL, "parse must not set path/map");
    lb_st_free(&f);
    free(b.p);
}

static void test_roundtrip_variants(void)
{
    struct build bd = {0};
    bd.top = TOP_ODICT_META;
    parse_ok_ab(&bd, "OrderedDict state_dict with _metadata BUILD");
    memset(&bd, 0, sizeof bd);
    bd.proto4 = 1;
    parse_ok_ab(&bd, "protocol 4 (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE)");
    memset(&bd, 0, sizeof bd);
    bd.z.no_zip64_end = 1;
    parse_ok_ab(&bd, "plain end record, no ZIP64");
    memset(&bd, 0, sizeof bd);
    bd.z.zip64_extra = 1;
    parse_ok_ab(&bd, "ZIP64 extra fields in every central entry");
    memset(&bd, 0, sizeof bd);
    bd.byteorder = "";
    parse_ok_ab(&bd, "no byteorder record (older torch)");
    memset(&bd, 0, sizeof bd);
    bd.prefix = "archive";
    parse_ok_ab(&bd, "prefix 'archive' (torch.save to a buffer)");
    memset(&bd, 0, sizeof bd);
    struct tspec ts[2] = {TS_AB[0], TS_AB[1]};
    ts[0].param = ts[1].param = 1;
    bd.ts = ts;
    bd.n_ts = 2;
    parse_ok_ab(&bd, "nn.Parameter via _rebuild_parameter");
    ts[0].param = ts[1].param = 0;
    ts[1].key = "1";
    struct tspec rev[2] = {ts[1], ts[0]}; /* file order differs from name order */
    bd.ts = rev;
    parse_ok_ab(&bd, "unsorted insertion order");
}

static void test_views_scalars_empty(void)
{
    /* Three tensors over storage 0 (6 bf16) : a view at offset 3 [3], a 0-dim scalar at 5, an
     * empty [0,4]; plus a [1,3] with a size-1 dimension carrying an odd stride (contiguous in torch). */
    struct tspec ts[4] = {
        {"view", "BFloat16Storage", "0", 6, 3, 1, {3}, {1}, 0},
        {"scalar", "BFloat16Storage", "0", 6, 5, 0, {0}, {0}, 0},
        {"empty", "FloatStorage", "1", 6, 6, 2, {0, 4}, {4, 1}, 0},
        {"row", "FloatStorage", "1", 6, 3, 2, {1, 3}, {7, 1}, 0},
    };
    struct build bd = {0};
    bd.ts = ts;
    bd.n_ts = 4;
    struct bb b = make(&bd);
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    struct lb_err err = {0};
    int rc = lb_torchbin_parse(&f, b.p, b.n, &err);
    T_CHECK(rc == 0, "rc %d %s", rc, err.msg);
    if (rc == 0) {
        T_CHECK(f.n_tensor == 4, "n %d", f.n_tensor);
        const struct lb_tensor *v = lb_st_find(&f, "view"), *s = lb_st_find(&f, "scalar"), *e = lb_st_find(&f, "empty"),
                               *r = lb_st_find(&f, "row");
        T_CHECK(v && s && e && r, "find");
        if (v && s && e && r) {
            for (int i = 0; i < 3; i++)
                T_CHECK(lb_tensor_get_f32(v->data, v->dtype, i) == A_VALS[3 + i], "view[%d]", i);
            T_CHECK(s->n_dim == 0 && s->n_elem == 1 && s->n_bytes == 2 && lb_tensor_get_f32(s->data, s->dtype, 0) == A_VALS[5],
                    "scalar n_dim %d n %lld", s->n_dim, (long long)s->n_elem);
            T_CHECK(e->n_elem == 0 && e->n_bytes == 0 && e->shape[0] == 0 && e->shape[1] == 4, "empty");
            T_CHECK(r->n_elem == 3 && lb_tensor_get_f32(r->data, r->dtype, 0) == B_VALS[3], "row");
        }
    }
    lb_st_free(&f);
    free(b.p);
}

static void test_big_ints(void)
{
    /* numel and offset above 2^31 are LONG1; the storage then cannot hold them -> corrupt, not a crash */
    struct tspec ts[1] = {{"big", "FloatStorage", "1", (int64_t)3 << 31, (int64_t)1 << 32, 1, {2}, {1}, 0}};
    struct build bd = {0};
    bd.ts = ts;
    bd.n_ts = 1;
    struct bb b = make(&bd);
    expect(&b, LB_E_CORRUPT, "claims 6442450944 F32 elements", "LONG1 numel");
    free(b.p);
    struct tspec ts2[1] = {{"neg", "FloatStorage", "1", 6, 0, 1, {-5}, {1}, 0}};
    bd.ts = ts2;
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "non-negative ints", "negative size");
    free(b.p);
}

static void test_file_open_and_fixture(int write_fixture)
{
    struct build bd = {0};
    struct bb b = make(&bd);
    if (write_fixture) {
        FILE *fp = fopen(FIXTURE, "wb");
        T_CHECK(fp && fwrite(b.p, 1, b.n, fp) == b.n && fclose(fp) == 0, "writing %s", FIXTURE);
    }
    struct lb_st_file f;
    struct lb_err err = {0};
    int rc = lb_torchbin_open(&f, FIXTURE, &err);
    T_CHECK(rc == 0, "open %s: %s", FIXTURE, err.msg);
    if (rc == 0) {
        T_CHECK(f.map_bytes == b.n && !memcmp(f.map, b.p, b.n), "%s differs from the writer's output (rerun with --write-fixture?)",
                FIXTURE);
        T_CHECK(f.path && !strcmp(f.path, FIXTURE), "path");
        check_ab(&f, f.map, f.map_bytes, "fixture file");
    }
    lb_st_free(&f);
    rc = lb_torchbin_open(&f, "tests/data/torchbin/no_such_file.bin", &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "no_such_file.bin"), "missing file: %d %s", rc, err.msg);
    T_CHECK(f.tensors == NULL && f.map == NULL && f.path == NULL, "missing file left state");
    free(b.p);
}

/* ------------------------------------------------------------ files written by real torch */

static int open_ok(struct lb_st_file *f, const char *path)
{
    struct lb_err err = {0};
    int rc = lb_torchbin_open(f, path, &err);
    T_CHECK(rc == 0, "%s: %s", path, err.msg);
    return rc == 0;
}

static void check_vals(const struct lb_st_file *f, const char *name, enum lb_dtype dt, int n_dim, const int64_t *shape,
                       const float *vals)
{
    const struct lb_tensor *t = lb_st_find(f, name);
    T_CHECK(t != NULL, "%s missing", name);
    if (!t) return;
    int64_t n = 1;
    T_CHECK(t->dtype == dt && t->n_dim == n_dim, "%s: dtype %d dims %d", name, t->dtype, t->n_dim);
    for (int d = 0; d < n_dim && d < t->n_dim; d++) {
        T_CHECK(t->shape[d] == shape[d], "%s: shape[%d] = %lld want %lld", name, d, (long long)t->shape[d], (long long)shape[d]);
        n *= shape[d];
    }
    T_CHECK(t->n_elem == n && t->n_bytes == (size_t)n * lb_dtype_size(dt), "%s: n_elem %lld", name, (long long)t->n_elem);
    for (int64_t i = 0; vals && i < n; i++) {
        float v = lb_tensor_get_f32(t->data, t->dtype, i);
        T_CHECK(v == vals[i], "%s[%lld] = %g want %g", name, (long long)i, v, vals[i]);
    }
}

/* Saved by torch 2.11.0 (tests/data/torchbin/make_real.py): prefix from the file name,
 * .format_version / .storage_alignment records, ZIP64 end record, 64-byte aligned data. */
static void test_real_torch_files(void)
{
    struct lb_st_file f;
    if (open_ok(&f, "tests/data/torchbin/torch211_plain.bin")) {
        check_ab(&f, f.map, f.map_bytes, "torch211_plain.bin");
        lb_st_free(&f);
    }
    if (open_ok(&f, "tests/data/torchbin/torch211_mixed.bin")) {
        static const float half[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, view[4] = {5, 6, 7, 8}, row[4] = {4, 5, 6, 7},
                           scalar[1] = {2.5f}, ones[4] = {1, 1, 1, 1}, sevens[6] = {7, 7, 7, 7, 7, 7};
        T_CHECK(f.n_tensor == 7, "mixed: %d tensors", f.n_tensor);
        check_vals(&f, "half", LB_F16, 2, (const int64_t[]){3, 4}, half);
        check_vals(&f, "view", LB_F16, 1, (const int64_t[]){4}, view);      /* storage offset 5 */
        check_vals(&f, "row", LB_F16, 2, (const int64_t[]){1, 4}, row);     /* storage offset 4 */
        check_vals(&f, "scalar", LB_F32, 0, NULL, scalar);
        check_vals(&f, "empty", LB_F32, 2, (const int64_t[]){0, 4}, NULL);
        check_vals(&f, "param", LB_F32, 2, (const int64_t[]){2, 2}, ones);  /* _rebuild_parameter */
        check_vals(&f, "cuda", LB_BF16, 2, (const int64_t[]){2, 3}, sevens); /* location 'cuda:0' */
        const struct lb_tensor *h = lb_st_find(&f, "half"), *v = lb_st_find(&f, "view");
        if (h && v) T_CHECK((const char *)v->data - (const char *)h->data == 10, "view shares half's storage at +5 elements");
        lb_st_free(&f);
    }
    if (open_ok(&f, "tests/data/torchbin/torch211_state_dict.bin")) { /* OrderedDict + _metadata BUILD */
        T_CHECK(f.n_tensor == 3, "state_dict: %d tensors", f.n_tensor);
        check_vals(&f, "0.weight", LB_BF16, 2, (const int64_t[]){3, 4}, NULL);
        check_vals(&f, "0.bias", LB_BF16, 1, (const int64_t[]){3}, NULL);
        check_vals(&f, "1.weight", LB_BF16, 2, (const int64_t[]){2, 3}, NULL);
        lb_st_free(&f);
    }
    struct lb_err err = {0};
    int rc = lb_torchbin_open(&f, "tests/data/torchbin/torch211_transposed.bin", &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "torch211_transposed.bin: non-contiguous tensor t"), "transposed: %d %s", rc,
            err.msg);
    rc = lb_torchbin_open(&f, "tests/data/torchbin/torch211_legacy.bin", &err);
    T_CHECK(rc == LB_E_UNSUPPORTED && strstr(err.msg, "legacy torch.save format"), "legacy: %d %s", rc, err.msg);
}

/* ----------------------------------------------------------------- malformed: ZIP layer */

static void test_bad_zip(void)
{
    struct build bd = {0};
    struct bb b;

    bd.method0 = 8;
    b = make(&bd);
    expect(&b, LB_E_UNSUPPORTED, "adapter_model/data/0\" is compressed (method 8)", "compressed member");
    free(b.p);
    memset(&bd, 0, sizeof bd);

    bd.byteorder = "big";
    b = make(&bd);
    expect(&b, LB_E_UNSUPPORTED, "big-endian", "big endian");
    free(b.p);
    bd.byteorder = "middle";
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "byteorder record is \"middle\"", "bad byteorder");
    free(b.p);
    memset(&bd, 0, sizeof bd);

    bd.prefix = "";
    b = make(&bd); /* names "/data.pkl" */
    expect(&b, LB_E_CORRUPT, "not inside a folder", "no folder");
    free(b.p);
    memset(&bd, 0, sizeof bd);

    b = make(&bd);
    struct bb c = {0};
    put(&c, b.p, b.n);

    /* legacy (pre-1.6) file: a bare pickle stream starting with PROTO */
    static const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
    struct bb l = {(unsigned char *)legacy, sizeof legacy, 0};
    expect(&l, LB_E_UNSUPPORTED, "legacy torch.save format", "legacy");
    struct bb e = {(unsigned char *)"", 0, 0};
    expect(&e, LB_E_CORRUPT, "too short", "empty file");
    struct bb junk = {(unsigned char *)"hello, this is not a zip file at all....", 40, 0};
    expect(&junk, LB_E_CORRUPT, "not a torch.save ZIP", "not a zip");

    /* trailing garbage after the end record */
    put(&c, "xx", 2);
    expect(&c, LB_E_CORRUPT, "no ZIP end-of-central-directory", "trailing bytes");
    c.n = b.n;

    /* central directory offset pointing past its end (plain end record, so patch it there) */
    memset(&bd, 0, sizeof bd);
    bd.z.no_zip64_end = 1;
    struct bb p = make(&bd);
    size_t eo = p.n - 22;
    p.p[eo + 16] ^= 0x40;
    expect(&p, LB_E_CORRUPT, "central directory", "cd offset");
    p.p[eo + 16] ^= 0x40;
    p.p[eo + 10] = 0xff; p.p[eo + 11] = 0xff; p.p[eo + 8] = 0xff; p.p[eo + 9] = 0xff;
    expect(&p, LB_E_CORRUPT, "no ZIP64 end record", "saturated without zip64");
    p.p[eo + 10] = 200; p.p[eo + 11] = 0; p.p[eo + 8] = 200; p.p[eo + 9] = 0;
    expect(&p, LB_E_CORRUPT, "claims 200 members", "too many members");
    p.p[eo + 8] = 1;
    expect(&p, LB_E_UNSUPPORTED, "multi-disk", "disk count mismatch");
    free(p.p);

    /* ZIP64 end record offset broken */
    size_t lo = b.n - 22 - 20;
    c.p[lo + 8] ^= 0x01;
    expect(&c, LB_E_CORRUPT, "ZIP64 end record", "zip64 locator");
    c.p[lo + 8] ^= 0x01;
    c.p[lo + 15] = 0x80;
    expect(&c, LB_E_CORRUPT, "ZIP64 end record offset", "zip64 locator huge");
    memcpy(c.p, b.p, b.n);

    /* local header signature of the first member destroyed */
    c.p[0] = 'X';
    expect(&c, LB_E_CORRUPT, "local header at 0 is missing", "local sig");
    memcpy(c.p, b.p, b.n);
    /* local header name differs from the central directory */
    c.p[30] = 'X';
    expect(&c, LB_E_CORRUPT, "local header name does not match", "local name");
    memcpy(c.p, b.p, b.n);

    /* a member's size running into the central directory: patch data.pkl's central size */
    uint64_t cd_off = 0;
    for (int i = 0; i < 8; i++) cd_off |= (uint64_t)c.p[b.n - 22 - 20 - 56 + 48 + i] << (8 * i);
    c.p[cd_off + 20] = 0xff; c.p[cd_off + 21] = 0xff; c.p[cd_off + 22] = 0x00;
    c.p[cd_off + 24] = 0xff; c.p[cd_off + 25] = 0xff; c.p[cd_off + 26] = 0x00;
    expect(&c, LB_E_CORRUPT, "run into the central directory", "member too long");
    memcpy(c.p, b.p, b.n);
    /* stored member whose two sizes disagree */
    c.p[cd_off + 20] ^= 1;
    expect(&c, LB_E_CORRUPT, "compressed size", "csize != usize");
    memcpy(c.p, b.p, b.n);
    /* encrypted flag */
    c.p[cd_off + 8] = 1;
    expect(&c, LB_E_UNSUPPORTED, "encrypted", "encrypted");
    memcpy(c.p, b.p, b.n);
    /* central entry name length running past the directory */
    c.p[cd_off + 28] = 0xff; c.p[cd_off + 29] = 0xff;
    expect(&c, LB_E_CORRUPT, "runs past the directory", "name length");
    memcpy(c.p, b.p, b.n);
    /* rename data.pkl -> data.pkX in both headers: no pickle */
    for (size_t i = 0; i + 8 <= c.n; i++)
        if (!memcmp(c.p + i, "data.pkl", 8)) c.p[i + 7] = 'X';
    expect(&c, LB_E_CORRUPT, "no adapter_model/data.pkl member", "no data.pkl");
    memcpy(c.p, b.p, b.n);
    /* duplicate member: rename data/1 -> data/0 everywhere */
    for (size_t i = 0; i + 20 <= c.n; i++)
        if (!memcmp(c.p + i, "adapter_model/data/1", 20)) c.p[i + 19] = '0';
    expect(&c, LB_E_CORRUPT, "appears twice", "duplicate member");
    free(c.p);
    free(b.p);
}

/* -------------------------------------------------------------- malformed: pickle layer */

static void pkl_case(const void *pkl, size_t n, int status, const char *want, const char *what)
{
    struct build bd = {0};
    bd.raw_pkl = pkl;
    bd.n_raw_pkl = n;
    struct bb b = make(&bd);
    expect(&b, status, want, what);
    free(b.p);
}
#define PKL(s, st, want) pkl_case(s, sizeof(s) - 1, st, want, #s)

static void test_bad_pickle_hand(void)
{
    PKL("\x80\x02R.", LB_E_CORRUPT, "stack underflow");
    PKL("\x80\x02t.", LB_E_CORRUPT, "no MARK");
    PKL("\x80\x02K\x01\x86.", LB_E_CORRUPT, "stack underflow");
    PKL("\x80\x02(K\x01s.", LB_E_CORRUPT, "stack underflow");
    PKL("\x80\x02.", LB_E_CORRUPT, "stack underflow");
    PKL("\x80\x02}", LB_E_CORRUPT, "without STOP");
    PKL("", LB_E_CORRUPT, "without STOP");
    PKL("\x80\x02X\xff\xff\xff\xff", LB_E_CORRUPT, "wants 4294967295 more bytes");
    PKL("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", LB_E_CORRUPT, "wants 18446744073709551615 more bytes");
    PKL("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x80.", LB_E_CORRUPT, "more bytes");
    PKL("\x80\x02T\xff\xff\xff\xff.", LB_E_CORRUPT, "negative BINSTRING");
    PKL("\x80\x02}r\xf0\xff\xff\xff.", LB_E_CORRUPT, "memo index 4294967280");
    PKL("\x80\x02h\x05.", LB_E_CORRUPT, "memo slot 5 read before");
    PKL("\x80\x02j\x00\x00\x00\x10.", LB_E_CORRUPT, "memo slot 268435456");
    PKL("\x80\x06}.", LB_E_UNSUPPORTED, "pickle protocol 6");
    PKL("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", LB_E_UNSUPPORTED, "does not fit in 64 bits");
    PKL("\x80\x02\x8a\x04\x01\x02", LB_E_CORRUPT, "more bytes");
    PKL("\x80\x02" "cos\nsystem\n.", LB_E_UNSUPPORTED, "refusing GLOBAL os.system");
    PKL("\x80\x02" "cbuiltins\neval\n.", LB_E_UNSUPPORTED, "builtins.eval");
    PKL("\x80\x02" "ctorch\nload\n.", LB_E_UNSUPPORTED, "torch.load");
    PKL("\x80\x02" "ctorch._utils\n_rebuild_tensor\n.", LB_E_UNSUPPORTED, "torch._utils._rebuild_tensor:");
    PKL("\x80\x04\x8c\x02os\x8c\x06system\x93.", LB_E_UNSUPPORTED, "refusing GLOBAL os.system");
    PKL("\x80\x02\x8c\x02os}\x93.", LB_E_CORRUPT, "STACK_GLOBAL needs two strings");
    PKL("\x80\x02" "cos\nsystem", LB_E_CORRUPT, "GLOBAL name is not a line");
    PKL("\x80\x02(cos\nsystem\nX\x02\x00\x00\x00idtR.", LB_E_UNSUPPORTED, "os.system");
    PKL("\x80\x02" "ctorch\nFloatStorage\n)R.", LB_E_UNSUPPORTED, "refusing to call torch.FloatStorage");
    PKL("\x80\x02" "ccollections\nOrderedDict\n(K\x01tR.", LB_E_UNSUPPORTED, "OrderedDict called with 1 arguments");
    PKL("\x80\x02K\x01)R.", LB_E_CORRUPT, "REDUCE on a int");
    PKL("\x80\x02" "ccollections\nOrderedDict\nK\x01R.", LB_E_CORRUPT, "arguments are a int");
    PKL("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R.", LB_E_CORRUPT, "takes 6 or 7 arguments, got 0");
    PKL("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))\x89NtR.", LB_E_CORRUPT, "argument 0 is a int");
    PKL("\x80\x02" "ctorch._utils\n_rebuild_parameter\n(K\x00\x89NtR.", LB_E_CORRUPT, "needs (tensor");
    PKL("\x80\x02i__builtin__\nobject\n.", LB_E_UNSUPPORTED, "opcode 0x69 ('i')");
    PKL("\x80\x02\x81.", LB_E_UNSUPPORTED, "opcode 0x81");
    PKL("\x80\x02" "S'x'\n.", LB_E_UNSUPPORTED, "opcode 0x53");
    PKL("\x80\x02]K\x01K\x02s.", LB_E_CORRUPT, "SETITEM on a list");
    PKL("\x80\x02]}s.", LB_E_CORRUPT, "stack underflow");
    PKL("\x80\x02}K\x01" "a.", LB_E_CORRUPT, "APPEND on a dict");
    PKL("\x80\x02}(K\x01u.", LB_E_CORRUPT, "odd number");
    PKL("\x80\x02(K\x01K\x02K\x03" "d.", LB_E_CORRUPT, "DICT with an odd number");
    PKL("\x80\x02]K\x01" "a.", LB_E_UNSUPPORTED, "holds a list");
    PKL("\x80\x02K\x01K\x02K\x03\x87.", LB_E_UNSUPPORTED, "holds a tuple");
    PKL("\x80\x02}K\x01K\x02s.", LB_E_CORRUPT, "top-level key is not a tensor name");
    PKL("\x80\x02}X\x01\x00\x00\x00xK\x02s.", LB_E_UNSUPPORTED, "entry \"x\" is a int, not a tensor");
    PKL("\x80\x02(X\x07\x00\x00\x00storageK\x01tQ.", LB_E_CORRUPT, "persistent id has 2 fields");
    PKL("\x80\x02(X\x06\x00\x00\x00moduleK\x01tQ.", LB_E_UNSUPPORTED, "not a ('storage', ...) tuple");
    PKL("\x80\x02K\x01Q.", LB_E_UNSUPPORTED, "not a ('storage', ...) tuple");
    PKL("\x80\x02(X\x07\x00\x00\x00storageK\x01X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x06tQ.", LB_E_CORRUPT,
        "storage type is a int");
    PKL("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nK\x00X\x03\x00\x00\x00" "cpuK\x06tQ.", LB_E_CORRUPT,
        "storage key is not");
    PKL("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "1NK\x06tQ.", LB_E_CORRUPT,
        "storage location is a None");
    PKL("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "1X\x03\x00\x00\x00" "cpuJ\xff\xff\xff\xfftQ.",
        LB_E_CORRUPT, "storage size is not a non-negative int");
    PKL("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "9X\x03\x00\x00\x00" "cpuK\x06tQ.", LB_E_CORRUPT,
        "storage key \"9\": no member adapter_model/data/9");
    PKL("\x80\x02(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x03\x00\x00\x00../X\x03\x00\x00\x00" "cpuK\x06tQ.",
        LB_E_CORRUPT, "no member adapter_model/data/../");
    /* a valid pickle followed by junk is fine (torch stops at STOP as well) */
    PKL("\x80\x02}.junk", 0, NULL);
    /* POP / POP_MARK / DUP / BINFLOAT / NONE / NEWTRUE / lists are understood */
    PKL("\x80\x02(K\x01K\x02" "1G\x00\x00\x00\x00\x00\x00\x00\x00" "0N0\x88" "0]K\x01" "a(K\x02K\x03" "e0}2" "0.", 0, NULL);
}

static void test_bad_tensors(void)
{
    struct build bd = {0};
    struct bb b;
    struct tspec ts[2] = {TS_AB[0], TS_AB[1]};
    bd.ts = ts;
    bd.n_ts = 2;

    ts[0].stride[0] = 1; ts[0].stride[1] = 2; /* transposed view of a [3,2] */
    b = make(&bd);
    expect(&b, LB_E_UNSUPPORTED, "non-contiguous tensor a.lora_A.weight", "non-contiguous");
    free(b.p);
    ts[0] = TS_AB[0];

    ts[0].offset = 1; /* 1 + 6 > 6 */
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "tensor \"a.lora_A.weight\": storage offset 1 + 6 elements runs past storage \"0\"", "offset past storage");
    free(b.p);
    ts[0].offset = 7;
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "storage offset 7", "offset past end");
    free(b.p);
    ts[0] = TS_AB[0];

    ts[0].numel = 7; /* member data/0 holds 12 bytes = 6 bf16 */
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "storage \"0\" claims 7 BF16 elements but member data/0 holds 12 bytes", "storage too small");
    free(b.p);
    ts[0] = TS_AB[0];

    ts[1].stype = "DoubleStorage";
    b = make(&bd);
    expect(&b, LB_E_UNSUPPORTED, "tensor \"b.lora_B.weight\": storage type torch.DoubleStorage is not supported", "double");
    free(b.p);
    ts[1].stype = "UntypedStorage";
    b = make(&bd);
    expect(&b, LB_E_UNSUPPORTED, "torch.UntypedStorage", "untyped");
    free(b.p);
    ts[1] = TS_AB[1];

    ts[1].name = "a.lora_A.weight";
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "tensor name \"a.lora_A.weight\" appears twice", "duplicate names");
    free(b.p);
    ts[1] = TS_AB[1];

    ts[1].key = "7";
    b = make(&bd);
    expect(&b, LB_E_CORRUPT, "storage key \"7\": no member adapter_model/data/7", "bad storage key");
    free(b.p);
    ts[1] = TS_AB[1];

    /* 9 dimensions, written by hand */
    static const char p9[] = "\x80\x02}X\x02\x00\x00\x00t9" "ctorch._utils\n_rebuild_tensor_v2\n("
                             "(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "1X\x03\x00\x00\x00" "cpuK\x06tQ"
                             "K\x00(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t"
                             "\x89NtRs.";
    pkl_case(p9, sizeof p9 - 1, LB_E_UNSUPPORTED, "9 dimensions (max 8)", "9 dims");
    static const char pst[] = "\x80\x02}X\x02\x00\x00\x00t1" "ctorch._utils\n_rebuild_tensor_v2\n("
                              "(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "1X\x03\x00\x00\x00" "cpuK\x06tQ"
                              "K\x00K\x02\x85K\x01K\x01\x86\x89NtRs.";
    pkl_case(pst, sizeof pst - 1, LB_E_CORRUPT, "equal length", "size/stride rank mismatch");
    /* misaligned storage: a member at an odd file offset (no alignment padding) */
    memset(&bd, 0, sizeof bd);
    bd.z.align = -1;
    bd.prefix = "ab";   /* shifts offsets so data/1 (f32) is not 4-aligned */
    b = make(&bd);
    {
        struct lb_st_file f;
        memset(&f, 0, sizeof f);
        struct lb_err err = {0};
        int rc = lb_torchbin_parse(&f, b.p, b.n, &err);
        /* either it happens to be aligned (and parses) or it is refused cleanly */
        T_CHECK(rc == 0 || (rc == LB_E_UNSUPPORTED && strstr(err.msg, "aligned")), "unaligned: %d %s", rc, err.msg);
        lb_st_free(&f);
    }
    free(b.p);
}

/* ------------------------------------------------------------------ sweeps: never crash */

static void sweep_one(const unsigned char *p, size_t n, int *n_ok, int *n_bad_msg)
{
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    struct lb_err err = {0};
    int rc = lb_torchbin_parse(&f, p, n, &err);
    if (rc == 0) {
        (*n_ok)++;
        for (int i = 0; i < f.n_tensor; i++) {
            const unsigned char *d = f.tensors[i].data;
            if (d < p || d > p + n || f.tensors[i].n_bytes > (size_t)(p + n - d)) (*n_bad_msg)++;
        }
    } else if (rc > 0 || !err.msg[0] || (f.tensors != NULL)) {
        (*n_bad_msg)++;
    }
    lb_st_free(&f);
}

static void test_truncation_sweep(void)
{
    struct build bd = {0};
    struct bb b = make(&bd);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        unsigned char *c = malloc(n ? n : 1); /* exact-size copy so ASan sees any overread */
        memcpy(c, b.p, n);
        struct lb_st_file f;
        memset(&f, 0, sizeof f);
        struct lb_err err = {0};
        int rc = lb_torchbin_parse(&f, c, n, &err);
        if (rc != LB_E_CORRUPT) { bad++; if (bad < 5) fprintf(stderr, "  truncated to %zu: rc %d %s\n", n, rc, err.msg); }
        lb_st_free(&f);
        free(c);
    }
    T_CHECK(bad == 0, "%d truncations not reported as corrupt", bad);
    free(b.p);
}

static void test_flip_sweep(void)
{
    static const unsigned char xs[] = {0xff, 0x01, 0x80, 0x7f};
    int ok = 0, bad = 0, total = 0;
    for (int variant = 0; variant < 2; variant++) {
        struct build bd = {0};
        bd.proto4 = variant;
        struct bb b = make(&bd);
        unsigned char *c = malloc(b.n);
        for (size_t i = 0; i < b.n; i++)
            for (size_t x = 0; x < sizeof xs; x++) {
                memcpy(c, b.p, b.n);
                c[i] ^= xs[x];
                sweep_one(c, b.n, &ok, &bad);
                total++;
            }
        /* multi-byte random damage, fixed seed */
        uint64_t s = 0x9e3779b97f4a7c15ull + (uint64_t)variant;
        for (int it = 0; it < 3000; it++) {
            memcpy(c, b.p, b.n);
            int k = 1 + it % 6;
            for (int j = 0; j < k; j++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                c[s % b.n] = (unsigned char)(s >> 40);
            }
            sweep_one(c, b.n, &ok, &bad);
            total++;
        }
        free(c);
        free(b.p);
    }
    /* and over a file real torch wrote */
    struct lb_st_file rf;
    struct lb_err rerr = {0};
    if (lb_torchbin_open(&rf, "tests/data/torchbin/torch211_mixed.bin", &rerr) == 0) {
        unsigned char *c = malloc(rf.map_bytes);
        for (size_t i = 0; i < rf.map_bytes; i++)
            for (size_t x = 0; x < sizeof xs; x++) {
                memcpy(c, rf.map, rf.map_bytes);
                c[i] ^= xs[x];
                sweep_one(c, rf.map_bytes, &ok, &bad);
                total++;
            }
        free(c);
        lb_st_free(&rf);
    } else {
        T_CHECK(0, "torch211_mixed.bin: %s", rerr.msg);
    }
    T_CHECK(bad == 0, "%d of %d damaged files gave no message or bad pointers", bad, total);
    T_CHECK(ok < total, "no damaged file was rejected");
}

int main(int argc, char **argv)
{
    int write_fixture = argc > 1 && !strcmp(argv[1], "--write-fixture");
    T_RUN(test_roundtrip_torch_layout);
    T_RUN(test_roundtrip_variants);
    T_RUN(test_views_scalars_empty);
    T_RUN(test_big_ints);
    t_cur_fail = 0;
    t_cur_skip = 0;
    test_file_open_and_fixture(write_fixture);
    if (t_cur_fail) { t_fail++; printf("FAIL test_file_open_and_fixture\n"); }
    else { t_pass++; printf("ok   test_file_open_and_fixture\n"); }
    T_RUN(test_real_torch_files);
    T_RUN(test_bad_zip);
    T_RUN(test_bad_pickle_hand);
    T_RUN(test_bad_tensors);
    T_RUN(test_truncation_sweep);
    T_RUN(test_flip_sweep);
    return T_DONE();
}
