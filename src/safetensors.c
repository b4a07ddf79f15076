/* safetensors.c — parse, validate and mmap safetensors files (see safetensors.h).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data area; offsets are relative to the data area. Every tensor must fit
 * inside the data area, match shape x dtype size exactly, and not overlap another. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define ST_MAX_HEADER_BYTES (100u << 20)

float lb_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lb_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lb_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (a < 0x38800000u) { /* subnormal or zero in f16 */
        if (a < 0x33000000u) return (uint16_t)sign;
        /* value = man * 2^(E-150) = (man >> (126-E)) * 2^-24: shift is 14..24 */
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((a >> 13) - (112u << 10));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

/* memcpy, not a typed load: the safetensors format does not promise aligned data (a header
 * without padding puts tensors at any address), and compilers turn this into one load. */
float lb_tensor_get_f32(const void *data, enum lb_dtype dt, int64_t i)
{
    const unsigned char *p = data;
    float f;
    uint16_t h;
    int32_t k;
    switch (dt) {
    case LB_F32: memcpy(&f, p + 4 * i, 4); return f;
    case LB_BF16: memcpy(&h, p + 2 * i, 2); return lb_bf16_to_f32(h);
    case LB_F16: memcpy(&h, p + 2 * i, 2); return lb_f16_to_f32(h);
    case LB_I32: memcpy(&k, p + 4 * i, 4); return (float)k;
    case LB_U8: return (float)p[i];
    }
    return 0.0f;
}

static int parse_dtype(const char *s, enum lb_dtype *dt)
{
    if (!strcmp(s, "F32")) *dt = LB_F32;
    else if (!strcmp(s, "F16")) *dt = LB_F16;
    else if (!strcmp(s, "BF16")) *dt = LB_BF16;
    else if (!strcmp(s, "I32")) *dt = LB_I32;
    else if (!strcmp(s, "U8")) *dt = LB_U8;
    else return -1;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const struct lb_tensor *)a)->name, ((const struct lb_tensor *)b)->name);
}

struct span { uint64_t begin, end; const char *name; };
static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

void lb_st_free(struct lb_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensor; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_bytes);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Fills f->tensors / f->n_tensor from buf; leaves f->path and f->map to the caller. */
static int parse_image(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err)
{
    const unsigned char *p = buf;
    json_t *root = NULL;
    struct span *spans = NULL;
    int rc = 0;
    f->tensors = NULL;
    f->n_tensor = 0;
    if (n < 8) return lb_err_set(err, LB_E_CORRUPT, "file is %zu bytes, shorter than the 8-byte header length", n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return lb_err_set(err, LB_E_CORRUPT, "header length %llu is absurd (limit %u)", (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
    if (hlen > n - 8)
        return lb_err_set(err, LB_E_CORRUPT, "header length %llu runs past the end of the file (%zu bytes): truncated?",
                          (unsigned long long)hlen, n);
    json_error_t je;
    root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) return lb_err_set(err, LB_E_CORRUPT, "header is not valid JSON (%s at byte %d)", je.text, je.position);
    if (!json_is_object(root)) { rc = lb_err_set(err, LB_E_CORRUPT, "header is not a JSON object"); goto done; }
    const unsigned char *data = p + 8 + hlen;
    uint64_t data_bytes = n - 8 - hlen;
    size_t cap = json_object_size(root);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    spans = calloc(cap ? cap : 1, sizeof *spans);
    if (!f->tensors || !spans) { rc = lb_err_set(err, LB_E_OOM, "out of memory for %zu tensors", cap); goto done; }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        struct lb_tensor *t = &f->tensors[f->n_tensor];
        if (!json_is_object(val)) { rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": entry is not an object", key); goto done; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"), *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": needs string dtype, array shape, 2 data_offsets", key);
            goto done;
        }
        if (parse_dtype(json_string_value(jd), &t->dtype)) {
            rc = lb_err_set(err, LB_E_UNSUPPORTED, "tensor \"%s\": dtype %s is not supported (F32, F16, BF16, I32, U8)", key,
                            json_string_value(jd));
            goto done;
        }
        if (json_array_size(js) > LB_ST_MAX_DIMS) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": %zu dimensions (max %d)", key, json_array_size(js), LB_ST_MAX_DIMS);
            goto done;
        }
        t->n_dim = (int)json_array_size(js);
        size_t n_elem = 1;
        for (int d = 0; d < t->n_dim; d++) {
            json_t *x = json_array_get(js, (size_t)d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) {
                rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": shape[%d] is not a non-negative integer", key, d);
                goto done;
            }
            t->shape[d] = json_integer_value(x);
            if (!lb_mul_ok(n_elem, (size_t)t->shape[d], &n_elem)) {
                rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": shape overflows", key);
                goto done;
            }
        }
        size_t n_bytes;
        if (!lb_mul_ok(n_elem, lb_dtype_size(t->dtype), &n_bytes)) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": size overflows", key);
            goto done;
        }
        json_t *jb = json_array_get(jo, 0), *je2 = json_array_get(jo, 1);
        if (!json_is_integer(jb) || !json_is_integer(je2) || json_integer_value(jb) < 0 ||
            json_integer_value(je2) < json_integer_value(jb)) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": data_offsets must be integers 0 <= begin <= end", key);
            goto done;
        }
        uint64_t b = (uint64_t)json_integer_value(jb), e = (uint64_t)json_integer_value(je2);
        if (e > data_bytes) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": data_offsets [%llu, %llu) lie outside the data area (%llu bytes): truncated?",
                            key, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_bytes);
            goto done;
        }
        if (e - b != n_bytes) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensor \"%s\": shape x %s size = %zu bytes but data_offsets span %llu", key,
                            lb_dtype_name(t->dtype), n_bytes, (unsigned long long)(e - b));
            goto done;
        }
        t->name = strdup(key);
        if (!t->name) { rc = lb_err_set(err, LB_E_OOM, "out of memory"); goto done; }
        t->n_elem = (int64_t)n_elem;
        t->n_bytes = n_bytes;
        t->data = data + b;
        spans[f->n_tensor] = (struct span){b, e, t->name};
        f->n_tensor++;
    }
    qsort(spans, (size_t)f->n_tensor, sizeof *spans, cmp_span);
    for (int i = 1; i < f->n_tensor; i++)
        if (spans[i].begin < spans[i - 1].end) {
            rc = lb_err_set(err, LB_E_CORRUPT, "tensors \"%s\" and \"%s\" overlap in the data area", spans[i - 1].name, spans[i].name);
            goto done;
        }
    qsort(f->tensors, (size_t)f->n_tensor, sizeof *f->tensors, cmp_tensor_name);
done:
    free(spans);
    json_decref(root);
    if (rc) {
        for (int i = 0; i < f->n_tensor; i++) free(f->tensors[i].name);
        free(f->tensors);
        f->tensors = NULL;
        f->n_tensor = 0;
    }
    return rc;
}

int lb_st_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err)
{
    memset(f, 0, sizeof *f); /* no path, no mapping: lb_st_free must not release what it does not own */
    return parse_image(f, buf, n, err);
}

int lb_st_open(struct lb_st_file *f, const char *path, struct lb_err *err)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lb_err_set(err, errno == ENOENT ? LB_E_INPUT : LB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) { rc = lb_err_set(err, LB_E_IO, "%s: cannot stat: %s", path, strerror(errno)); goto done; }
    if (!S_ISREG(st.st_mode)) { rc = lb_err_set(err, LB_E_INPUT, "%s: not a regular file", path); goto done; }
    f->path = strdup(path);
    f->map_bytes = (size_t)st.st_size;
    if (f->map_bytes) {
        f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) { f->map = NULL; rc = lb_err_set(err, LB_E_IO, "%s: mmap failed: %s", path, strerror(errno)); goto done; }
    }
    rc = parse_image(f, f->map, f->map_bytes, err);
    if (rc) lb_err_prefix(err, "%s", path);
done:
    close(fd);
    if (rc) lb_st_free(f);
    return rc;
}

const struct lb_tensor *lb_st_find(const struct lb_st_file *f, const char *name)
{
    int lo = 0, hi = f->n_tensor - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (!c) return &f->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

void lb_st_set_free(struct lb_st_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_file; i++) lb_st_free(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int lb_st_set_open(struct lb_st_set *s, const char *dir, struct lb_err *err)
{
    memset(s, 0, sizeof *s);
    char *single = lb_path_join(dir, "model.safetensors");
    char *index = lb_path_join(dir, "model.safetensors.index.json");
    char *buf = NULL;
    char **names = NULL;
    size_t n_names = 0, nbuf = 0;
    json_t *root = NULL;
    int rc = 0;
    if (lb_file_exists(index)) {
        if ((rc = lb_file_read(index, &buf, &nbuf, err))) goto done;
        json_error_t je;
        root = json_loadb(buf, nbuf, JSON_REJECT_DUPLICATES, &je);
        json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
        if (!json_is_object(wm)) {
            rc = lb_err_set(err, LB_E_CORRUPT, "%s: no \"weight_map\" object%s%s", index, root ? "" : ": ", root ? "" : je.text);
            goto done;
        }
        names = calloc(json_object_size(wm) + 1, sizeof *names);
        const char *k;
        json_t *v;
        json_object_foreach(wm, k, v) {
            if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
                rc = lb_err_set(err, LB_E_CORRUPT, "%s: weight_map[\"%s\"] must be a file name in the folder", index, k);
                goto done;
            }
            names[n_names++] = (char *)json_string_value(v);
        }
        qsort(names, n_names, sizeof *names, cmp_str);
        size_t u = 0;
        for (size_t i = 0; i < n_names; i++)
            if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
        n_names = u;
        s->files = calloc(n_names ? n_names : 1, sizeof *s->files);
        for (size_t i = 0; i < n_names; i++) {
            char *p = lb_path_join(dir, names[i]);
            rc = lb_st_open(&s->files[s->n_file], p, err);
            free(p);
            if (rc) goto done;
            s->n_file++;
        }
        /* a name in two shards: which copy is meant would depend on lookup order */
        for (int i = 0; i < s->n_file; i++)
            for (int t = 0; t < s->files[i].n_tensor; t++)
                for (int j = i + 1; j < s->n_file; j++)
                    if (lb_st_find(&s->files[j], s->files[i].tensors[t].name)) {
                        rc = lb_err_set(err, LB_E_CORRUPT, "%s: tensor \"%s\" is in both %s and %s", index, s->files[i].tensors[t].name,
                                        s->files[i].path, s->files[j].path);
                        goto done;
                    }
        /* every name in the map must be in the file it names */
        json_object_foreach(wm, k, v) {
            int found = 0;
            for (int i = 0; i < s->n_file && !found; i++) {
                const char *base = strrchr(s->files[i].path, '/');
                base = base ? base + 1 : s->files[i].path;
                if (!strcmp(base, json_string_value(v))) found = lb_st_find(&s->files[i], k) != NULL;
            }
            if (!found) { rc = lb_err_set(err, LB_E_CORRUPT, "%s: tensor \"%s\" is not in %s", index, k, json_string_value(v)); goto done; }
        }
    } else if (lb_file_exists(single)) {
        s->files = calloc(1, sizeof *s->files);
        if ((rc = lb_st_open(&s->files[0], single, err))) goto done;
        s->n_file = 1;
    } else {
        rc = lb_err_set(err, LB_E_INPUT, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
done:
    json_decref(root);
    free(names);
    free(buf);
    free(single);
    free(index);
    if (rc) lb_st_set_free(s);
    return rc;
}

const struct lb_tensor *lb_st_set_find(const struct lb_st_set *s, const char *name)
{
    for (int i = 0; i < s->n_file; i++) {
        const struct lb_tensor *t = lb_st_find(&s->files[i], name);
        if (t) return t;
    }
    return NULL;
}
