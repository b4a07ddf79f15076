/* torchbin.c — torch.save ZIP + data.pkl parsed as data (see torchbin.h).
 *
 * Two layers, both working on the caller's buffer and bounds-checking every read:
 *  - zip_*: find the end record (and the ZIP64 end record torch always writes), walk the central
 *    directory, check every local header against it, sort members by name for lookup.
 *  - vm_*: a pickle stack machine over a pool of plain values. Objects are indices into the pool,
 *    so memo sharing and self-references cost nothing and nothing is walked recursively. The
 *    pool, stack and memo grow with the pickle but are bounded by its length (every opcode that
 *    creates or pushes costs at least one byte). GLOBAL names are checked against an allow-list
 *    the moment they are read; REDUCE interprets those few callables without calling anything.
 * Finally the top-level dict is turned into lb_tensor records and checked against the storages. */
#include "torchbin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define TB_MAX_PKL_BYTES ((uint64_t)1 << 30) /* data.pkl of a 100k-tensor model is a few MB */
#define TB_MAX_OBJS (1 << 28)
#define TB_MAX_LINE 256                      /* GLOBAL module / name lines */
#define TB_MAX_KEY 64                        /* storage keys are "0", "1", ... */
#define TB_MAX_NAME 4096                     /* tensor names */

#define ZIP_LOCAL_SIG 0x04034b50u
#define ZIP_CENTRAL_SIG 0x02014b50u
#define ZIP_END_SIG 0x06054b50u
#define ZIP64_END_SIG 0x06064b50u
#define ZIP64_LOC_SIG 0x07064b50u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* Untrusted bytes for a message: at most 120 characters, non-printables as '?'. */
struct shown { char s[128]; };
static struct shown show(const unsigned char *p, size_t n)
{
    struct shown r;
    size_t k = n < 120 ? n : 117, i;
    for (i = 0; i < k; i++) r.s[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    if (k < n) { memcpy(r.s + k, "...", 3); k += 3; }
    r.s[k] = 0;
    return r;
}

static int printable(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] >= 0x7f) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------ ZIP */

struct zent {
    const unsigned char *name;  /* borrowed from the buffer, not NUL-terminated */
    size_t name_len;
    uint64_t off_local, csize, usize;
    int method, flags;
    uint64_t off_data;          /* after the local header (its own name and extra lengths) */
};

struct zip {
    const unsigned char *p;     /* borrowed: whole file */
    size_t n;
    struct zent *ents;          /* owned [n_ent], sorted by name */
    size_t n_ent;
    const unsigned char *prefix; /* borrowed: first path component of the first member */
    size_t prefix_len;
};

static int cmp_zent(const void *a, const void *b)
{
    const struct zent *x = a, *y = b;
    size_t k = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, k);
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* ZIP64 extended information: the saturated 32-bit fields, in the order usize, csize, offset. */
static int zip64_extra(const unsigned char *x, size_t xlen, struct zent *e, struct lb_err *err)
{
    size_t i = 0;
    while (i + 4 <= xlen) {
        unsigned id = rd16(x + i), len = rd16(x + i + 2);
        if (len > xlen - i - 4) break;
        if (id == 1) {
            const unsigned char *q = x + i + 4;
            size_t left = len;
            uint64_t *f[3] = {&e->usize, &e->csize, &e->off_local};
            for (int k = 0; k < 3; k++) {
                if (*f[k] != 0xffffffffu) continue;
                if (left < 8) break;
                *f[k] = rd64(q);
                q += 8;
                left -= 8;
            }
        }
        i += 4 + len;
    }
    if (e->usize == 0xffffffffu || e->csize == 0xffffffffu || e->off_local == 0xffffffffu)
        return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\": 32-bit size or offset saturated but no ZIP64 extra field gives it",
                          show(e->name, e->name_len).s);
    return 0;
}

static int zip_open(struct zip *z, const unsigned char *p, size_t n, struct lb_err *err)
{
    memset(z, 0, sizeof *z);
    z->p = p;
    z->n = n;
    if (n >= 1 && p[0] == 0x80)
        return lb_err_set(err, LB_E_UNSUPPORTED, "legacy torch.save format (a bare pickle stream, torch < 1.6); "
                                                 "re-save it with a newer torch or convert it to safetensors");
    if (n < 22) return lb_err_set(err, LB_E_CORRUPT, "file is %zu bytes, too short for a ZIP archive", n);
    /* End record: last 22 bytes plus a comment of up to 65535 bytes; its comment length must end the file. */
    size_t lo = n - 22 > 65535 ? n - 22 - 65535 : 0, end = SIZE_MAX;
    for (size_t i = n - 22 + 1; i-- > lo;)
        if (rd32(p + i) == ZIP_END_SIG && i + 22 + rd16(p + i + 20) == n) { end = i; break; }
    if (end == SIZE_MAX)
        return lb_err_set(err, LB_E_CORRUPT, "no ZIP end-of-central-directory record%s",
                          rd32(p) == ZIP_LOCAL_SIG ? ": the archive is truncated" : ": not a torch.save ZIP file");
    const unsigned char *e = p + end;
    uint64_t n_ent = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    uint64_t limit = end; /* the central directory must end before this */
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10))
        return lb_err_set(err, LB_E_UNSUPPORTED, "multi-disk ZIP archives are not supported");
    if (end >= 20 && rd32(p + end - 20) == ZIP64_LOC_SIG) {
        const unsigned char *l = p + end - 20;
        uint64_t off64 = rd64(l + 8);
        if (rd32(l + 4) != 0 || rd32(l + 16) > 1)
            return lb_err_set(err, LB_E_UNSUPPORTED, "multi-disk ZIP64 archives are not supported");
        if (off64 > end - 20 || end - 20 - off64 < 56)
            return lb_err_set(err, LB_E_CORRUPT, "ZIP64 end record offset %llu lies outside the file",
                              (unsigned long long)off64);
        const unsigned char *r = p + off64;
        if (rd32(r) != ZIP64_END_SIG) return lb_err_set(err, LB_E_CORRUPT, "ZIP64 end record signature missing");
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
            return lb_err_set(err, LB_E_UNSUPPORTED, "multi-disk ZIP64 archives are not supported");
        n_ent = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_off = rd64(r + 48);
        limit = off64;
    } else if (n_ent == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        return lb_err_set(err, LB_E_CORRUPT, "ZIP end record is saturated but there is no ZIP64 end record");
    }
    if (cd_off > limit || cd_size > limit - cd_off)
        return lb_err_set(err, LB_E_CORRUPT, "central directory [%llu, +%llu) runs past its end record at %llu",
                          (unsigned long long)cd_off, (unsigned long long)cd_size, (unsigned long long)limit);
    if (n_ent == 0) return lb_err_set(err, LB_E_CORRUPT, "ZIP archive has no members");
    if (n_ent > cd_size / 46)
        return lb_err_set(err, LB_E_CORRUPT, "ZIP claims %llu members but its central directory holds %llu bytes",
                          (unsigned long long)n_ent, (unsigned long long)cd_size);
    z->ents = calloc((size_t)n_ent, sizeof *z->ents);
    if (!z->ents) return lb_err_set(err, LB_E_OOM, "out of memory for %llu ZIP members", (unsigned long long)n_ent);
    uint64_t pos = cd_off, cd_end = cd_off + cd_size;
    for (uint64_t k = 0; k < n_ent; k++) {
        struct zent *ze = &z->ents[k];
        if (cd_end - pos < 46 || rd32(p + pos) != ZIP_CENTRAL_SIG)
            return lb_err_set(err, LB_E_CORRUPT, "central directory entry %llu at %llu: bad signature or truncated",
                              (unsigned long long)k, (unsigned long long)pos);
        const unsigned char *c = p + pos;
        size_t nl = rd16(c + 28), xl = rd16(c + 30), cl = rd16(c + 32);
        if (cd_end - pos - 46 < (uint64_t)nl + xl + cl)
            return lb_err_set(err, LB_E_CORRUPT, "central directory entry %llu runs past the directory", (unsigned long long)k);
        ze->flags = rd16(c + 8);
        ze->method = rd16(c + 10);
        ze->csize = rd32(c + 20);
        ze->usize = rd32(c + 24);
        ze->off_local = rd32(c + 42);
        ze->name = c + 46;
        ze->name_len = nl;
        int rc = zip64_extra(c + 46 + nl, xl, ze, err);
        if (rc) return rc;
        pos += 46 + nl + xl + cl;
        /* Local header: same name, and the data it announces ends before the central directory. */
        uint64_t lo_ = ze->off_local;
        if (lo_ > cd_off || cd_off - lo_ < 30 || rd32(p + lo_) != ZIP_LOCAL_SIG)
            return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\": local header at %llu is missing or outside the data area",
                              show(ze->name, nl).s, (unsigned long long)lo_);
        size_t lnl = rd16(p + lo_ + 26), lxl = rd16(p + lo_ + 28);
        if (cd_off - lo_ - 30 < (uint64_t)lnl + lxl)
            return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\": local header at %llu runs into the central directory",
                              show(ze->name, nl).s, (unsigned long long)lo_);
        if (lnl != nl || memcmp(p + lo_ + 30, ze->name, nl) != 0)
            return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\": local header name does not match the central directory",
                              show(ze->name, nl).s);
        ze->off_data = lo_ + 30 + lnl + lxl;
        if (ze->csize > cd_off - ze->off_data)
            return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\": %llu bytes at %llu run into the central directory at %llu",
                              show(ze->name, nl).s, (unsigned long long)ze->csize, (unsigned long long)ze->off_data,
                              (unsigned long long)cd_off);
    }
    z->n_ent = (size_t)n_ent;
    /* torch takes the archive folder from the first member, whatever the folder is called. */
    const unsigned char *slash = memchr(z->ents[0].name, '/', z->ents[0].name_len);
    if (!slash || slash == z->ents[0].name)
        return lb_err_set(err, LB_E_CORRUPT, "first ZIP member \"%s\" is not inside a folder: not a torch.save archive",
                          show(z->ents[0].name, z->ents[0].name_len).s);
    z->prefix = z->ents[0].name;
    z->prefix_len = (size_t)(slash - z->ents[0].name);
    qsort(z->ents, z->n_ent, sizeof *z->ents, cmp_zent);
    for (size_t i = 1; i < z->n_ent; i++)
        if (!cmp_zent(&z->ents[i - 1], &z->ents[i]))
            return lb_err_set(err, LB_E_CORRUPT, "ZIP member \"%s\" appears twice", show(z->ents[i].name, z->ents[i].name_len).s);
    return 0;
}

/* Member "<prefix>/<suffix>" or NULL. */
static const struct zent *zip_find(const struct zip *z, const char *suffix, size_t suffix_len)
{
    char name[TB_MAX_LINE * 2 + 8];
    if (z->prefix_len + 1 + suffix_len > sizeof name) return NULL;
    memcpy(name, z->prefix, z->prefix_len);
    name[z->prefix_len] = '/';
    memcpy(name + z->prefix_len + 1, suffix, suffix_len);
    struct zent key = {.name = (const unsigned char *)name, .name_len = z->prefix_len + 1 + suffix_len};
    return bsearch(&key, z->ents, z->n_ent, sizeof *z->ents, cmp_zent);
}

/* The bytes of a stored member. */
static int zip_data(const struct zip *z, const struct zent *e, const unsigned char **data, uint64_t *size, struct lb_err *err)
{
    if (e->flags & 0x41)
        return lb_err_set(err, LB_E_UNSUPPORTED, "ZIP member \"%s\" is encrypted", show(e->name, e->name_len).s);
    if (e->method != 0)
        return lb_err_set(err, LB_E_UNSUPPORTED, "ZIP member \"%s\" is compressed (method %d); only stored (method 0) "
                                                 "members can be mapped, as torch.save writes them",
                          show(e->name, e->name_len).s, e->method);
    if (e->csize != e->usize)
        return lb_err_set(err, LB_E_CORRUPT, "stored ZIP member \"%s\": compressed size %llu != size %llu",
                          show(e->name, e->name_len).s, (unsigned long long)e->csize, (unsigned long long)e->usize);
    *data = z->p + e->off_data;
    *size = e->usize;
    return 0;
}

/* --------------------------------------------------------------------------- pickle machine */

enum kind { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR };
static const char *kind_name[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict", "global", "storage", "tensor"};

enum gfun { G_ODICT = 1, G_REBUILD_V2, G_PARAM, G_PARAM_STATE, G_STORAGE };

struct obj {
    int kind;                   /* enum kind */
    int sub;                    /* GLOBAL: enum gfun; STORAGE: 1 when dtype is supported */
    int64_t i;                  /* INT/BOOL value; STORAGE numel; TENSOR storage offset */
    const unsigned char *s;     /* borrowed from data.pkl: STR bytes; GLOBAL/STORAGE type name */
    size_t s_len;
    int *items;                 /* owned: TUPLE/LIST items, DICT key,value pairs, TENSOR {storage, size, stride} */
    int n_items, cap_items;
    int key;                    /* STORAGE: its key string object */
    enum lb_dtype dtype;        /* STORAGE */
    const unsigned char *data;  /* STORAGE: borrowed, start of member data/<key> */
    uint64_t data_bytes;
};

struct vm {
    const unsigned char *p;     /* borrowed: data.pkl bytes */
    size_t n, pos, op_pos;
    int op;
    const struct zip *z;
    struct obj *objs;           /* owned [n_obj] */
    int n_obj, cap_obj;
    int *stack;                 /* owned [n_stack] object ids */
    int n_stack, cap_stack;
    int *marks;                 /* owned [n_mark] stack heights */
    int n_mark, cap_mark;
    int *memo;                  /* owned [cap_memo], -1 = empty */
    size_t cap_memo, n_memo;
    struct lb_err *err;
};

static int vm_fail(struct vm *vm, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int vm_fail(struct vm *vm, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lb_err_set(vm->err, status, "data.pkl byte %zu (opcode 0x%02x): %s", vm->op_pos, vm->op & 0xff, msg);
}

static int grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap) return 0;
    if (need > TB_MAX_OBJS) return -1;
    int nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    void *q = realloc(*arr, (size_t)nc * elem);
    if (!q) return -1;
    *arr = q;
    *cap = nc;
    return 0;
}

static int new_obj(struct vm *vm, int kind, int *id)
{
    if (grow((void **)&vm->objs, &vm->cap_obj, vm->n_obj + 1, sizeof *vm->objs))
        return vm_fail(vm, LB_E_OOM, "out of memory (or over %d objects)", TB_MAX_OBJS);
    struct obj *o = &vm->objs[vm->n_obj];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->key = -1;
    *id = vm->n_obj++;
    return 0;
}

static int add_item(struct vm *vm, int id, int item)
{
    struct obj *o = &vm->objs[id];
    if (grow((void **)&o->items, &o->cap_items, o->n_items + 1, sizeof *o->items))
        return vm_fail(vm, LB_E_OOM, "out of memory");
    o->items[o->n_items++] = item;
    return 0;
}

static int push(struct vm *vm, int id)
{
    if (grow((void **)&vm->stack, &vm->cap_stack, vm->n_stack + 1, sizeof *vm->stack))
        return vm_fail(vm, LB_E_OOM, "out of memory for the stack");
    vm->stack[vm->n_stack++] = id;
    return 0;
}

static int fence(const struct vm *vm) { return vm->n_mark ? vm->marks[vm->n_mark - 1] : 0; }

static int pop(struct vm *vm, int *id)
{
    if (vm->n_stack <= fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow");
    *id = vm->stack[--vm->n_stack];
    return 0;
}

static int top(struct vm *vm, int *id)
{
    if (vm->n_stack <= fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow");
    *id = vm->stack[vm->n_stack - 1];
    return 0;
}

/* Items above the last MARK: *base is their first stack index; the mark is removed. */
static int pop_mark(struct vm *vm, int *base)
{
    if (!vm->n_mark) return vm_fail(vm, LB_E_CORRUPT, "no MARK on the stack");
    *base = vm->marks[--vm->n_mark];
    return 0;
}

static int need(struct vm *vm, uint64_t k)
{
    if (k > vm->n - vm->pos)
        return vm_fail(vm, LB_E_CORRUPT, "wants %llu more bytes but only %zu are left (truncated or absurd length)",
                       (unsigned long long)k, vm->n - vm->pos);
    return 0;
}

static int push_new(struct vm *vm, int kind, int64_t i)
{
    int id = -1, rc;
    if ((rc = new_obj(vm, kind, &id))) return rc;
    vm->objs[id].i = i;
    return push(vm, id);
}

static int push_str(struct vm *vm, uint64_t len)
{
    int id = -1, rc;
    if ((rc = need(vm, len))) return rc;
    if ((rc = new_obj(vm, K_STR, &id))) return rc;
    vm->objs[id].s = vm->p + vm->pos;
    vm->objs[id].s_len = (size_t)len;
    vm->pos += (size_t)len;
    return push(vm, id);
}

/* Little-endian two's complement of len bytes (LONG1 / LONG4). */
static int push_long(struct vm *vm, uint64_t len)
{
    int rc;
    if ((rc = need(vm, len))) return rc;
    if (len > 8) return vm_fail(vm, LB_E_UNSUPPORTED, "integer of %llu bytes does not fit in 64 bits", (unsigned long long)len);
    uint64_t u = 0;
    for (uint64_t k = 0; k < len; k++) u |= (uint64_t)vm->p[vm->pos + k] << (8 * k);
    if (len && len < 8 && (vm->p[vm->pos + len - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * len);
    vm->pos += (size_t)len;
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return push_new(vm, K_INT, v);
}

static int make_seq(struct vm *vm, int kind, int base)
{
    int id = -1, rc;
    if ((rc = new_obj(vm, kind, &id))) return rc;
    for (int k = base; k < vm->n_stack; k++)
        if ((rc = add_item(vm, id, vm->stack[k]))) return rc;
    vm->n_stack = base;
    return push(vm, id);
}

static int memo_put(struct vm *vm, uint64_t idx)
{
    int id = -1, rc;
    if ((rc = top(vm, &id))) return rc;
    if (idx >= vm->n) return vm_fail(vm, LB_E_CORRUPT, "memo index %llu is larger than the pickle", (unsigned long long)idx);
    if (idx >= vm->cap_memo) {
        size_t nc = vm->cap_memo ? vm->cap_memo : 64;
        while (nc <= idx) nc *= 2;
        int *q = realloc(vm->memo, nc * sizeof *q);
        if (!q) return vm_fail(vm, LB_E_OOM, "out of memory for the memo");
        for (size_t k = vm->cap_memo; k < nc; k++) q[k] = -1;
        vm->memo = q;
        vm->cap_memo = nc;
    }
    if (vm->memo[idx] < 0) vm->n_memo++;
    vm->memo[idx] = id;
    return 0;
}

static int memo_get(struct vm *vm, uint64_t idx)
{
    if (idx >= vm->cap_memo || vm->memo[idx] < 0)
        return vm_fail(vm, LB_E_CORRUPT, "memo slot %llu read before it was written", (unsigned long long)idx);
    return push(vm, vm->memo[idx]);
}

static int str_is(const struct obj *o, const char *s)
{
    size_t k = strlen(s);
    return o->kind == K_STR && o->s_len == k && !memcmp(o->s, s, k);
}

static int mem_is(const unsigned char *p, size_t n, const char *s) { return n == strlen(s) && !memcmp(p, s, n); }

/* The allow-list. Anything else is refused here, before it could be referred to. */
static int push_global(struct vm *vm, const unsigned char *mod, size_t mod_len, const unsigned char *name, size_t name_len)
{
    int g = 0, id = -1, rc;
    if (mem_is(mod, mod_len, "collections") && mem_is(name, name_len, "OrderedDict")) g = G_ODICT;
    else if (mem_is(mod, mod_len, "torch._utils") && mem_is(name, name_len, "_rebuild_tensor_v2")) g = G_REBUILD_V2;
    else if (mem_is(mod, mod_len, "torch._utils") && mem_is(name, name_len, "_rebuild_parameter")) g = G_PARAM;
    else if (mem_is(mod, mod_len, "torch._utils") && mem_is(name, name_len, "_rebuild_parameter_with_state")) g = G_PARAM_STATE;
    else if (mem_is(mod, mod_len, "torch") && name_len > 7 && !memcmp(name + name_len - 7, "Storage", 7) &&
             printable(name, name_len))
        g = G_STORAGE;
    if (!g)
        return vm_fail(vm, LB_E_UNSUPPORTED, "refusing GLOBAL %s.%s: only collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
                                             "torch._utils._rebuild_parameter and torch.*Storage are allowed (pickle code is never run)",
                       show(mod, mod_len).s, show(name, name_len).s);
    if ((rc = new_obj(vm, K_GLOBAL, &id))) return rc;
    vm->objs[id].sub = g;
    vm->objs[id].s = name;
    vm->objs[id].s_len = name_len;
    return push(vm, id);
}

static int read_line(struct vm *vm, const unsigned char **s, size_t *len)
{
    size_t left = vm->n - vm->pos, lim = left < TB_MAX_LINE ? left : TB_MAX_LINE;
    const unsigned char *nl = memchr(vm->p + vm->pos, '\n', lim);
    if (!nl) return vm_fail(vm, LB_E_CORRUPT, "GLOBAL name is not a line of at most %d bytes", TB_MAX_LINE);
    *s = vm->p + vm->pos;
    *len = (size_t)(nl - *s);
    vm->pos += *len + 1;
    return 0;
}

/* ('storage', torch.<T>Storage, key, location, numel) -> STORAGE bound to member data/<key>. */
static int persistent_load(struct vm *vm)
{
    int pid = -1, rc;
    if ((rc = pop(vm, &pid))) return rc;
    const struct obj *t = &vm->objs[pid];
    if (t->kind != K_TUPLE || t->n_items < 1 || !str_is(&vm->objs[t->items[0]], "storage"))
        return vm_fail(vm, LB_E_UNSUPPORTED, "persistent id is not a ('storage', ...) tuple");
    if (t->n_items != 5)
        return vm_fail(vm, LB_E_CORRUPT, "storage persistent id has %d fields, expected 5", t->n_items);
    const struct obj *ty = &vm->objs[t->items[1]], *key = &vm->objs[t->items[2]], *loc = &vm->objs[t->items[3]],
                     *numel = &vm->objs[t->items[4]];
    if (ty->kind != K_GLOBAL || ty->sub != G_STORAGE)
        return vm_fail(vm, LB_E_CORRUPT, "storage type is a %s, not a torch.*Storage", kind_name[ty->kind]);
    if (key->kind != K_STR || key->s_len == 0 || key->s_len > TB_MAX_KEY || !printable(key->s, key->s_len))
        return vm_fail(vm, LB_E_CORRUPT, "storage key is not a short printable string");
    if (loc->kind != K_STR) return vm_fail(vm, LB_E_CORRUPT, "storage location is a %s, not a string", kind_name[loc->kind]);
    if (numel->kind != K_INT || numel->i < 0) return vm_fail(vm, LB_E_CORRUPT, "storage size is not a non-negative int");
    char suffix[TB_MAX_KEY + 8];
    memcpy(suffix, "data/", 5);
    memcpy(suffix + 5, key->s, key->s_len);
    const struct zent *e = zip_find(vm->z, suffix, 5 + key->s_len);
    if (!e)
        return vm_fail(vm, LB_E_CORRUPT, "storage key \"%s\": no member %s/data/%s in the archive", show(key->s, key->s_len).s,
                       show(vm->z->prefix, vm->z->prefix_len).s, show(key->s, key->s_len).s);
    const unsigned char *ty_name = ty->s;
    size_t ty_len = ty->s_len;
    int key_id = t->items[2];
    int64_t n_el = numel->i;
    int id = -1;
    if ((rc = new_obj(vm, K_STORAGE, &id))) return rc; /* may move the pool: no obj pointers below */
    struct obj *o = &vm->objs[id];
    o->s = ty_name;
    o->s_len = ty_len;
    o->key = key_id;
    o->i = n_el;
    o->sub = 1;
    if (mem_is(o->s, o->s_len, "BFloat16Storage")) o->dtype = LB_BF16;
    else if (mem_is(o->s, o->s_len, "HalfStorage")) o->dtype = LB_F16;
    else if (mem_is(o->s, o->s_len, "FloatStorage")) o->dtype = LB_F32;
    else o->sub = 0; /* refused when a tensor uses it, so the message can name the tensor */
    if ((rc = zip_data(vm->z, e, &o->data, &o->data_bytes, vm->err))) return rc;
    if (o->sub) {
        uint64_t es = lb_dtype_size(o->dtype);
        if ((uint64_t)o->i > o->data_bytes / es)
            return vm_fail(vm, LB_E_CORRUPT, "storage \"%s\" claims %lld %s elements but member data/%s holds %llu bytes",
                           show(vm->objs[o->key].s, vm->objs[o->key].s_len).s, (long long)o->i, lb_dtype_name(o->dtype),
                           show(vm->objs[o->key].s, vm->objs[o->key].s_len).s, (unsigned long long)o->data_bytes);
    }
    return push(vm, id);
}

static int int_tuple(const struct vm *vm, int id, int max_len)
{
    const struct obj *o = &vm->objs[id];
    if (o->kind != K_TUPLE || o->n_items > max_len) return 0;
    for (int k = 0; k < o->n_items; k++) {
        const struct obj *x = &vm->objs[o->items[k]];
        if (x->kind != K_INT || x->i < 0) return 0;
    }
    return 1;
}

static int reduce(struct vm *vm)
{
    int args_id = -1, fn_id = -1, id = -1, rc;
    if ((rc = pop(vm, &args_id)) || (rc = pop(vm, &fn_id))) return rc;
    const struct obj *fn = &vm->objs[fn_id], *args = &vm->objs[args_id];
    if (fn->kind != K_GLOBAL) return vm_fail(vm, LB_E_CORRUPT, "REDUCE on a %s, not a callable", kind_name[fn->kind]);
    if (args->kind != K_TUPLE) return vm_fail(vm, LB_E_CORRUPT, "REDUCE arguments are a %s, not a tuple", kind_name[args->kind]);
    const int *a = args->items;
    int na = args->n_items;
    switch (fn->sub) {
    case G_ODICT:
        if (na != 0) return vm_fail(vm, LB_E_UNSUPPORTED, "collections.OrderedDict called with %d arguments", na);
        return push_new(vm, K_DICT, 0);
    case G_PARAM:
    case G_PARAM_STATE:
        if (na != (fn->sub == G_PARAM ? 3 : 4) || vm->objs[a[0]].kind != K_TENSOR)
            return vm_fail(vm, LB_E_CORRUPT, "torch._utils.%s needs (tensor, requires_grad, hooks%s)", show(fn->s, fn->s_len).s,
                           fn->sub == G_PARAM ? "" : ", state");
        return push(vm, a[0]);
    case G_REBUILD_V2: {
        if (na != 6 && na != 7)
            return vm_fail(vm, LB_E_CORRUPT, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %d", na);
        if (vm->objs[a[0]].kind != K_STORAGE)
            return vm_fail(vm, LB_E_CORRUPT, "_rebuild_tensor_v2 argument 0 is a %s, not a storage", kind_name[vm->objs[a[0]].kind]);
        if (vm->objs[a[1]].kind != K_INT || vm->objs[a[1]].i < 0)
            return vm_fail(vm, LB_E_CORRUPT, "_rebuild_tensor_v2 storage offset is not a non-negative int");
        if (!int_tuple(vm, a[2], 64) || !int_tuple(vm, a[3], 64) || vm->objs[a[2]].n_items != vm->objs[a[3]].n_items)
            return vm_fail(vm, LB_E_CORRUPT, "_rebuild_tensor_v2 size and stride must be tuples of non-negative ints of equal length");
        if ((rc = new_obj(vm, K_TENSOR, &id))) return rc;
        vm->objs[id].i = vm->objs[a[1]].i;
        int s = vm->objs[args_id].items[0], sz = vm->objs[args_id].items[2], st = vm->objs[args_id].items[3];
        if ((rc = add_item(vm, id, s)) || (rc = add_item(vm, id, sz)) || (rc = add_item(vm, id, st))) return rc;
        return push(vm, id);
    }
    default:
        return vm_fail(vm, LB_E_UNSUPPORTED, "refusing to call torch.%s", show(fn->s, fn->s_len).s);
    }
}

static int set_items(struct vm *vm, int base)
{
    int rc, n = vm->n_stack - base;
    if (base < 1 || base <= fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow (no dict under the items)");
    if (n % 2) return vm_fail(vm, LB_E_CORRUPT, "SETITEMS with an odd number of items");
    int d = vm->stack[base - 1];
    if (vm->objs[d].kind != K_DICT) return vm_fail(vm, LB_E_CORRUPT, "SETITEM on a %s, not a dict", kind_name[vm->objs[d].kind]);
    for (int k = base; k < vm->n_stack; k++)
        if ((rc = add_item(vm, d, vm->stack[k]))) return rc;
    vm->n_stack = base;
    return 0;
}

static int append_items(struct vm *vm, int base)
{
    int rc;
    if (base < 1 || base <= fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow (no list under the items)");
    int l = vm->stack[base - 1];
    if (vm->objs[l].kind != K_LIST) return vm_fail(vm, LB_E_CORRUPT, "APPEND on a %s, not a list", kind_name[vm->objs[l].kind]);
    for (int k = base; k < vm->n_stack; k++)
        if ((rc = add_item(vm, l, vm->stack[k]))) return rc;
    vm->n_stack = base;
    return 0;
}

/* Run data.pkl to STOP; *result is the object it built. */
static int vm_run(struct vm *vm, int *result)
{
    int rc = 0, id = -1, id2 = -1, base = 0;
    for (;;) {
        if (vm->pos >= vm->n) {
            vm->op_pos = vm->pos;
            vm->op = 0;
            return vm_fail(vm, LB_E_CORRUPT, "pickle ends without STOP (truncated)");
        }
        vm->op_pos = vm->pos;
        vm->op = vm->p[vm->pos++];
        switch (vm->op) {
        case 0x80: /* PROTO */
            if ((rc = need(vm, 1))) return rc;
            if (vm->p[vm->pos] > 5) return vm_fail(vm, LB_E_UNSUPPORTED, "pickle protocol %d", vm->p[vm->pos]);
            vm->pos++;
            break;
        case 0x95: /* FRAME: a length hint; the opcodes inside are read as usual */
            if ((rc = need(vm, 8))) return rc;
            vm->pos += 8;
            if ((rc = need(vm, rd64(vm->p + vm->pos - 8)))) return rc;
            break;
        case '.': /* STOP */
            if ((rc = pop(vm, result))) return rc;
            return 0;
        case '(': /* MARK */
            if (grow((void **)&vm->marks, &vm->cap_mark, vm->n_mark + 1, sizeof *vm->marks))
                return vm_fail(vm, LB_E_OOM, "out of memory for marks");
            vm->marks[vm->n_mark++] = vm->n_stack;
            break;
        case '0': /* POP */
            rc = pop(vm, &id);
            break;
        case '1': /* POP_MARK */
            if (!(rc = pop_mark(vm, &base))) vm->n_stack = base;
            break;
        case '2': /* DUP */
            if (!(rc = top(vm, &id))) rc = push(vm, id);
            break;
        case '}': rc = push_new(vm, K_DICT, 0); break;   /* EMPTY_DICT */
        case ']': rc = push_new(vm, K_LIST, 0); break;   /* EMPTY_LIST */
        case ')': rc = push_new(vm, K_TUPLE, 0); break;  /* EMPTY_TUPLE */
        case 'N': rc = push_new(vm, K_NONE, 0); break;   /* NONE */
        case 0x88: rc = push_new(vm, K_BOOL, 1); break;  /* NEWTRUE */
        case 0x89: rc = push_new(vm, K_BOOL, 0); break;  /* NEWFALSE */
        case 't': /* TUPLE */
        case 'l': /* LIST */
            if (!(rc = pop_mark(vm, &base))) rc = make_seq(vm, vm->op == 't' ? K_TUPLE : K_LIST, base);
            break;
        case 'd': /* DICT */
            if ((rc = pop_mark(vm, &base))) return rc;
            if ((vm->n_stack - base) % 2) return vm_fail(vm, LB_E_CORRUPT, "DICT with an odd number of items");
            rc = make_seq(vm, K_DICT, base);
            break;
        case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
            base = vm->n_stack - (vm->op - 0x84);
            if (base < fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow");
            rc = make_seq(vm, K_TUPLE, base);
            break;
        case 'X': /* BINUNICODE */
        case 'B': /* BINBYTES */
            if (!(rc = need(vm, 4))) { vm->pos += 4; rc = push_str(vm, rd32(vm->p + vm->pos - 4)); }
            break;
        case 'T': /* BINSTRING: signed 32-bit length */
            if ((rc = need(vm, 4))) return rc;
            vm->pos += 4;
            if (rd32(vm->p + vm->pos - 4) & 0x80000000u) return vm_fail(vm, LB_E_CORRUPT, "negative BINSTRING length");
            rc = push_str(vm, rd32(vm->p + vm->pos - 4));
            break;
        case 0x8c: /* SHORT_BINUNICODE */
        case 'U':  /* SHORT_BINSTRING */
        case 'C':  /* SHORT_BINBYTES */
            if (!(rc = need(vm, 1))) { vm->pos += 1; rc = push_str(vm, vm->p[vm->pos - 1]); }
            break;
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
            if (!(rc = need(vm, 8))) { vm->pos += 8; rc = push_str(vm, rd64(vm->p + vm->pos - 8)); }
            break;
        case 'J': /* BININT */
            if (!(rc = need(vm, 4))) { vm->pos += 4; rc = push_new(vm, K_INT, (int32_t)rd32(vm->p + vm->pos - 4)); }
            break;
        case 'K': /* BININT1 */
            if (!(rc = need(vm, 1))) { vm->pos += 1; rc = push_new(vm, K_INT, vm->p[vm->pos - 1]); }
            break;
        case 'M': /* BININT2 */
            if (!(rc = need(vm, 2))) { vm->pos += 2; rc = push_new(vm, K_INT, rd16(vm->p + vm->pos - 2)); }
            break;
        case 0x8a: /* LONG1 */
            if (!(rc = need(vm, 1))) { vm->pos += 1; rc = push_long(vm, vm->p[vm->pos - 1]); }
            break;
        case 0x8b: /* LONG4 */
            if (!(rc = need(vm, 4))) { vm->pos += 4; rc = push_long(vm, rd32(vm->p + vm->pos - 4)); }
            break;
        case 'G': /* BINFLOAT: value unused */
            if (!(rc = need(vm, 8))) { vm->pos += 8; rc = push_new(vm, K_FLOAT, 0); }
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *m = NULL, *nm = NULL;
            size_t ml = 0, nml = 0;
            if ((rc = read_line(vm, &m, &ml)) || (rc = read_line(vm, &nm, &nml))) return rc;
            rc = push_global(vm, m, ml, nm, nml);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if ((rc = pop(vm, &id2)) || (rc = pop(vm, &id))) return rc;
            if (vm->objs[id].kind != K_STR || vm->objs[id2].kind != K_STR)
                return vm_fail(vm, LB_E_CORRUPT, "STACK_GLOBAL needs two strings");
            rc = push_global(vm, vm->objs[id].s, vm->objs[id].s_len, vm->objs[id2].s, vm->objs[id2].s_len);
            break;
        case 'R': rc = reduce(vm); break;           /* REDUCE */
        case 'Q': rc = persistent_load(vm); break;  /* BINPERSID */
        case 'b': /* BUILD: __setstate__ is never run; the state (e.g. state_dict _metadata) is dropped */
            if (!(rc = pop(vm, &id))) rc = top(vm, &id2);
            break;
        case 'q': /* BINPUT */
            if (!(rc = need(vm, 1))) { vm->pos += 1; rc = memo_put(vm, vm->p[vm->pos - 1]); }
            break;
        case 'r': /* LONG_BINPUT */
            if (!(rc = need(vm, 4))) { vm->pos += 4; rc = memo_put(vm, rd32(vm->p + vm->pos - 4)); }
            break;
        case 0x94: /* MEMOIZE */
            rc = memo_put(vm, vm->n_memo);
            break;
        case 'h': /* BINGET */
            if (!(rc = need(vm, 1))) { vm->pos += 1; rc = memo_get(vm, vm->p[vm->pos - 1]); }
            break;
        case 'j': /* LONG_BINGET */
            if (!(rc = need(vm, 4))) { vm->pos += 4; rc = memo_get(vm, rd32(vm->p + vm->pos - 4)); }
            break;
        case 's': /* SETITEM */
            base = vm->n_stack - 2;
            if (base < fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow");
            rc = set_items(vm, base);
            break;
        case 'u': /* SETITEMS */
            if (!(rc = pop_mark(vm, &base))) rc = set_items(vm, base);
            break;
        case 'a': /* APPEND */
            base = vm->n_stack - 1;
            if (base < fence(vm)) return vm_fail(vm, LB_E_CORRUPT, "pickle stack underflow");
            rc = append_items(vm, base);
            break;
        case 'e': /* APPENDS */
            if (!(rc = pop_mark(vm, &base))) rc = append_items(vm, base);
            break;
        default:
            return vm_fail(vm, LB_E_UNSUPPORTED, "pickle opcode 0x%02x ('%c') is not one torch.save writes for tensors; "
                                                 "refusing it (nothing in the file is executed)",
                           vm->op, vm->op >= 0x20 && vm->op < 0x7f ? vm->op : '?');
        }
        if (rc) return rc;
    }
}

static void vm_free(struct vm *vm)
{
    for (int i = 0; i < vm->n_obj; i++) free(vm->objs[i].items);
    free(vm->objs);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
}

/* ---------------------------------------------------------------------------- tensors */

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const struct lb_tensor *)a)->name, ((const struct lb_tensor *)b)->name);
}

static int make_tensor(const struct vm *vm, const struct obj *key, const struct obj *val, struct lb_tensor *t, struct lb_err *err)
{
    if (key->kind != K_STR || key->s_len == 0 || key->s_len > TB_MAX_NAME || memchr(key->s, 0, key->s_len))
        return lb_err_set(err, LB_E_CORRUPT, "a top-level key is not a tensor name (a %s of %zu bytes)", kind_name[key->kind],
                          key->kind == K_STR ? key->s_len : (size_t)0);
    struct shown name = show(key->s, key->s_len);
    const char *nm = name.s;
    if (val->kind != K_TENSOR)
        return lb_err_set(err, LB_E_UNSUPPORTED, "entry \"%s\" is a %s, not a tensor", nm, kind_name[val->kind]);
    const struct obj *st = &vm->objs[val->items[0]], *size = &vm->objs[val->items[1]], *stride = &vm->objs[val->items[2]];
    if (!st->sub)
        return lb_err_set(err, LB_E_UNSUPPORTED, "tensor \"%s\": storage type torch.%s is not supported "
                                                 "(BFloat16Storage, HalfStorage, FloatStorage)",
                          nm, show(st->s, st->s_len).s);
    if (size->n_items > LB_ST_MAX_DIMS)
        return lb_err_set(err, LB_E_UNSUPPORTED, "tensor \"%s\": %d dimensions (max %d)", nm, size->n_items, LB_ST_MAX_DIMS);
    t->dtype = st->dtype;
    t->n_dim = size->n_items;
    size_t n_elem = 1, es = lb_dtype_size(st->dtype);
    for (int d = 0; d < t->n_dim; d++) {
        t->shape[d] = vm->objs[size->items[d]].i;
        if (!lb_mul_ok(n_elem, (size_t)t->shape[d], &n_elem) || n_elem > (size_t)INT64_MAX / es)
            return lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": shape overflows", nm);
    }
    if (n_elem > 0) {
        int64_t want = 1;
        for (int d = t->n_dim - 1; d >= 0; d--) {
            if (t->shape[d] != 1 && vm->objs[stride->items[d]].i != want)
                return lb_err_set(err, LB_E_UNSUPPORTED, "non-contiguous tensor %s (dimension %d: stride %lld, want %lld); "
                                                         "save it after .contiguous()",
                                  nm, d, (long long)vm->objs[stride->items[d]].i, (long long)want);
            want *= t->shape[d];
        }
    }
    uint64_t off = (uint64_t)val->i, numel = (uint64_t)st->i;
    if (off > numel || n_elem > numel - off)
        return lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": storage offset %llu + %zu elements runs past storage \"%s\" (%llu elements)",
                          nm, (unsigned long long)off, n_elem, show(vm->objs[st->key].s, vm->objs[st->key].s_len).s,
                          (unsigned long long)numel);
    t->data = st->data + off * es;
    if ((uintptr_t)t->data % es)
        return lb_err_set(err, LB_E_UNSUPPORTED, "tensor \"%s\": data is not %zu-byte aligned in the file (torch aligns to 64)", nm, es);
    t->n_elem = (int64_t)n_elem;
    t->n_bytes = n_elem * es;
    t->name = malloc(key->s_len + 1);
    if (!t->name) return lb_err_set(err, LB_E_OOM, "out of memory");
    memcpy(t->name, key->s, key->s_len);
    t->name[key->s_len] = 0;
    return 0;
}

static int check_byteorder(const struct zip *z, struct lb_err *err)
{
    const struct zent *e = zip_find(z, "byteorder", 9);
    const unsigned char *d = NULL;
    uint64_t n = 0;
    int rc;
    if (!e) return 0; /* older torch: little-endian implied */
    if ((rc = zip_data(z, e, &d, &n, err))) return rc;
    if (mem_is(d, (size_t)n, "little")) return 0;
    if (mem_is(d, (size_t)n, "big")) return lb_err_set(err, LB_E_UNSUPPORTED, "big-endian torch.save file (byteorder \"big\")");
    return lb_err_set(err, LB_E_CORRUPT, "byteorder record is \"%s\", expected \"little\"", show(d, (size_t)n).s);
}

int lb_torchbin_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err)
{
    struct zip z;
    struct vm vm;
    memset(&vm, 0, sizeof vm);
    f->tensors = NULL;
    f->n_tensor = 0;
    int rc = zip_open(&z, buf, n, err);
    if (rc) goto done;
    if ((rc = check_byteorder(&z, err))) goto done;
    const struct zent *pk = zip_find(&z, "data.pkl", 8);
    if (!pk) {
        rc = lb_err_set(err, LB_E_CORRUPT, "no %s/data.pkl member: not a torch.save archive", show(z.prefix, z.prefix_len).s);
        goto done;
    }
    const unsigned char *pkl = NULL;
    uint64_t n_pkl = 0;
    if ((rc = zip_data(&z, pk, &pkl, &n_pkl, err))) goto done;
    if (n_pkl > TB_MAX_PKL_BYTES) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "data.pkl is %llu bytes (limit %llu)", (unsigned long long)n_pkl,
                        (unsigned long long)TB_MAX_PKL_BYTES);
        goto done;
    }
    vm.p = pkl;
    vm.n = (size_t)n_pkl;
    vm.z = &z;
    vm.err = err;
    int res = -1;
    if ((rc = vm_run(&vm, &res))) goto done;
    const struct obj *d = &vm.objs[res];
    if (d->kind != K_DICT) {
        rc = lb_err_set(err, LB_E_UNSUPPORTED, "data.pkl holds a %s, expected a dict of tensors", kind_name[d->kind]);
        goto done;
    }
    int n_t = d->n_items / 2;
    f->tensors = calloc(n_t ? (size_t)n_t : 1, sizeof *f->tensors);
    if (!f->tensors) { rc = lb_err_set(err, LB_E_OOM, "out of memory for %d tensors", n_t); goto done; }
    for (int k = 0; k < n_t; k++) {
        if ((rc = make_tensor(&vm, &vm.objs[d->items[2 * k]], &vm.objs[d->items[2 * k + 1]], &f->tensors[k], err))) goto done;
        f->n_tensor++;
    }
    qsort(f->tensors, (size_t)f->n_tensor, sizeof *f->tensors, cmp_tensor_name);
    for (int k = 1; k < f->n_tensor; k++)
        if (!strcmp(f->tensors[k - 1].name, f->tensors[k].name)) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor name \"%s\" appears twice", show((const unsigned char *)f->tensors[k].name,
                                                                                      strlen(f->tensors[k].name)).s);
            goto done;
        }
done:
    vm_free(&vm);
    free(z.ents);
    if (rc) {
        for (int k = 0; k < f->n_tensor; k++) free(f->tensors[k].name);
        free(f->tensors);
        f->tensors = NULL;
        f->n_tensor = 0;
    }
    return rc;
}

int lb_torchbin_open(struct lb_st_file *f, const char *path, struct lb_err *err)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lb_err_set(err, errno == ENOENT ? LB_E_INPUT : LB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) { rc = lb_err_set(err, LB_E_IO, "%s: cannot stat: %s", path, strerror(errno)); goto done; }
    f->path = strdup(path);
    if (!f->path) { rc = lb_err_set(err, LB_E_OOM, "out of memory"); goto done; }
    f->map_bytes = (size_t)st.st_size;
    if (f->map_bytes) {
        f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = lb_err_set(err, LB_E_IO, "%s: mmap failed: %s", path, strerror(errno));
            goto done;
        }
    }
    rc = lb_torchbin_parse(f, f->map ? f->map : "", f->map_bytes, err);
    if (rc) lb_err_prefix(err, "%s", path);
done:
    close(fd);
    if (rc) lb_st_free(f);
    return rc;
}
