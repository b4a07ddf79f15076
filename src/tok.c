/* tok.c — loading tokenizer.json / tokenizer_config.json into struct lb_tok, plus the
 * small shared pieces (hash maps, UTF-8 checks, the GPT-2 byte table, accessors).
 *
 * The loader is strict: every key of every component it reads must be one it knows, and
 * every value must be one it implements; anything else is LB_E_UNSUPPORTED naming the
 * component and key, so a tokenizer we would get wrong never loads. (tokenizer_config.json
 * is read leniently: it carries many keys that do not concern encoding.)
 *
 * Semantics follow @huggingface/tokenizers 0.2.0 (the conformance reference) where it
 * defines them; for options it ignores (single_word, Split behaviours other than
 * Isolated) they follow the Rust `tokenizers` crate.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_int.h"

/* ---------------------------------------------------------------- small shared pieces */

uint32_t tok_hash(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    uint32_t r = (uint32_t)h;
    return r ? r : 1;
}

int tok_map_init(struct tok_map *m, uint32_t n_expect)
{
    memset(m, 0, sizeof *m);
    uint32_t cap = 64;
    while (cap < n_expect * 2u && cap < (1u << 30)) cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) return LB_E_OOM;
    m->mask = cap - 1;
    return 0;
}

void tok_map_free(struct tok_map *m)
{
    if (!m) return;
    free(m->slots);
    free(m->blob);
    memset(m, 0, sizeof *m);
}

static int map_grow(struct tok_map *m)
{
    uint32_t cap = (m->mask + 1) * 2;
    struct tok_map_slot *ns = calloc(cap, sizeof *ns);
    if (!ns) return LB_E_OOM;
    for (uint32_t i = 0; i <= m->mask; i++) {
        struct tok_map_slot *s = &m->slots[i];
        if (!s->hash) continue;
        uint32_t j = s->hash & (cap - 1);
        while (ns[j].hash) j = (j + 1) & (cap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->mask = cap - 1;
    return 0;
}

int tok_map_put(struct tok_map *m, const char *k, size_t n, int32_t val)
{
    if (n > 0xFFFFFFFFu) return LB_E_INPUT;
    if ((uint64_t)(m->n + 1) * 10 > (uint64_t)(m->mask + 1) * 7 && map_grow(m)) return LB_E_OOM;
    uint32_t h = tok_hash(k, n);
    uint32_t i = h & m->mask;
    for (;; i = (i + 1) & m->mask) {
        struct tok_map_slot *s = &m->slots[i];
        if (!s->hash) break;
        if (s->hash == h && s->len == n && !memcmp(m->blob + s->off, k, n)) {
            s->val = val;
            return 0;
        }
    }
    if (m->blob_n + n > m->blob_cap) {
        size_t cap = m->blob_cap ? m->blob_cap * 2 : 4096;
        while (cap < m->blob_n + n) cap *= 2;
        char *b = realloc(m->blob, cap);
        if (!b) return LB_E_OOM;
        m->blob = b;
        m->blob_cap = cap;
    }
    if (n) memcpy(m->blob + m->blob_n, k, n);
    struct tok_map_slot *s = &m->slots[i];
    s->hash = h;
    s->len = (uint32_t)n;
    s->off = m->blob_n;
    s->val = val;
    m->blob_n += n;
    m->n++;
    return 0;
}

int32_t tok_map_get(const struct tok_map *m, const char *k, size_t n)
{
    if (!m->slots) return -1;
    uint32_t h = tok_hash(k, n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const struct tok_map_slot *s = &m->slots[i];
        if (!s->hash) return -1;
        if (s->hash == h && s->len == n && !memcmp(m->blob + s->off, k, n)) return s->val;
    }
}

size_t tok_utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (v & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return i;
        if (i + need >= n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to
 * U+0100 + k in byte order. */
static uint16_t byte_to_cp_tab[256];
static int16_t cp_to_byte_tab[0x144];
static pthread_once_t byte_tables_once = PTHREAD_ONCE_INIT;

static void init_byte_tables(void)
{
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_to_cp_tab[b] = (uint16_t)(printable ? b : 0x100 + k++);
    }
    for (int i = 0; i < 0x144; i++) cp_to_byte_tab[i] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte_tab[byte_to_cp_tab[b]] = (int16_t)b;
}

int tok_cp_to_byte(uint32_t cp) { return cp < 0x144 ? cp_to_byte_tab[cp] : -1; }

void lb_tok_ids_free(struct lb_tok_ids *v)
{
    if (!v) return;
    free(v->ids);
    memset(v, 0, sizeof *v);
}

void lb_tok_text_free(struct lb_tok_text *v)
{
    if (!v) return;
    free(v->s);
    memset(v, 0, sizeof *v);
}

int tok_ids_reserve(struct lb_tok_ids *v, size_t n, struct lb_err *err)
{
    if (n <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *p = realloc(v->ids, cap * sizeof *p);
    if (!p) return lb_err_set(err, LB_E_OOM, "out of memory (%zu token ids)", n);
    v->ids = p;
    v->cap = cap;
    return 0;
}

int tok_text_reserve(struct lb_tok_text *v, size_t n, struct lb_err *err)
{
    if (n + 1 <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 256;
    while (cap < n + 1) cap *= 2;
    char *p = realloc(v->s, cap);
    if (!p) return lb_err_set(err, LB_E_OOM, "out of memory (%zu bytes of text)", n);
    v->s = p;
    v->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------- JSON helpers */

/* Checks that every key of object o is in the NULL-terminated list. */
int tok_check_keys(json_t *o, const char *where, const char *const *allowed, struct lb_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, k)) { ok = 1; break; }
        if (!ok) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: option \"%s\" is not supported", where, k);
    }
    return 0;
}

/* Optional boolean: absent or null -> def. */
static int get_bool(json_t *o, const char *key, int def, int *out, const char *where, struct lb_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_boolean(v)) return lb_err_set(err, LB_E_INPUT, "%s: \"%s\" must be true or false", where, key);
    *out = json_is_true(v);
    return 0;
}

/* Optional string: absent or null -> NULL. */
static int get_str(json_t *o, const char *key, const char **s, size_t *n, const char *where, struct lb_err *err)
{
    json_t *v = json_object_get(o, key);
    *s = NULL;
    *n = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return lb_err_set(err, LB_E_INPUT, "%s: \"%s\" must be a string", where, key);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

static const char *type_of(json_t *o) /* "type" of a component, or "" */
{
    json_t *v = json_object_get(o, "type");
    return json_is_string(v) ? json_string_value(v) : "";
}

static char *dup_mem(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* pattern {"String": s} | {"Regex": r} */
static int load_pattern(json_t *pat, struct tok_re *re, const char *where, struct lb_err *err)
{
    if (!json_is_object(pat) || json_object_size(pat) != 1)
        return lb_err_set(err, LB_E_INPUT, "%s: \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}", where);
    json_t *v;
    if ((v = json_object_get(pat, "String")) && json_is_string(v))
        return tok_re_compile_literal(re, json_string_value(v), json_string_length(v), where, err);
    if ((v = json_object_get(pat, "Regex")) && json_is_string(v))
        return tok_re_compile(re, json_string_value(v), json_string_length(v), where, err);
    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: pattern kind \"%s\" is not supported", where,
                      json_object_iter_key(json_object_iter(pat)));
}

/* ---------------------------------------------------------------- model: vocab */

struct loader {
    struct lb_tok *t;
    const char **pp; /* [n_vocab] borrowed from the JSON: string per id */
    size_t *pl;
    json_t *vocab, *merges, *model, *added;
};

static int load_vocab(struct loader *L, struct lb_err *err)
{
    struct lb_tok *t = L->t;
    json_t *model = L->model;
    if (!json_is_object(model)) return lb_err_set(err, LB_E_INPUT, "tokenizer.json: \"model\" must be an object");
    const char *type = type_of(model);
    if (strcmp(type, "BPE"))
        return lb_err_set(err, LB_E_UNSUPPORTED, "model type \"%s\" is not supported (only BPE)",
                          *type ? type : "(none)");
    static const char *const keys[] = {"type", "dropout", "unk_token", "continuing_subword_prefix",
                                       "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges",
                                       "vocab", "merges", NULL};
    int rc = tok_check_keys(model, "model (BPE)", keys, err);
    if (rc) return rc;
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0))
        return lb_err_set(err, LB_E_UNSUPPORTED, "model (BPE): dropout is not supported");
    const char *s;
    size_t n;
    if ((rc = get_str(model, "continuing_subword_prefix", &s, &n, "model (BPE)", err))) return rc;
    if (n) return lb_err_set(err, LB_E_UNSUPPORTED, "model (BPE): continuing_subword_prefix \"%s\" is not supported", s);
    if ((rc = get_str(model, "end_of_word_suffix", &s, &n, "model (BPE)", err))) return rc;
    if (n) return lb_err_set(err, LB_E_UNSUPPORTED, "model (BPE): end_of_word_suffix \"%s\" is not supported", s);
    if ((rc = get_bool(model, "fuse_unk", 0, &t->fuse_unk, "model (BPE)", err))) return rc;
    if ((rc = get_bool(model, "byte_fallback", 0, &t->byte_fallback, "model (BPE)", err))) return rc;
    if ((rc = get_bool(model, "ignore_merges", 0, &t->ignore_merges, "model (BPE)", err))) return rc;

    L->vocab = json_object_get(model, "vocab");
    L->merges = json_object_get(model, "merges");
    if (!json_is_object(L->vocab)) return lb_err_set(err, LB_E_INPUT, "model: \"vocab\" must be an object");
    if (!json_is_array(L->merges)) return lb_err_set(err, LB_E_INPUT, "model: \"merges\" must be an array");

    /* highest id over vocab and added tokens */
    int64_t max_id = -1;
    const char *k;
    size_t kl;
    json_object_keylen_foreach(L->vocab, k, kl, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 26))
            return lb_err_set(err, LB_E_INPUT, "model.vocab[\"%.*s\"]: id must be an integer in [0, 2^26)",
                              (int)(kl > 60 ? 60 : kl), k);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    if (L->added && !json_is_array(L->added))
        return lb_err_set(err, LB_E_INPUT, "tokenizer.json: \"added_tokens\" must be an array");
    size_t i;
    json_t *a;
    json_array_foreach(L->added, i, a) {
        json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 26))
            return lb_err_set(err, LB_E_INPUT, "added_tokens[%zu]: \"id\" must be an integer in [0, 2^26)", i);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) return lb_err_set(err, LB_E_INPUT, "model.vocab is empty");
    t->n_vocab = (int32_t)(max_id + 1);
    L->pp = calloc((size_t)t->n_vocab, sizeof *L->pp);
    L->pl = calloc((size_t)t->n_vocab, sizeof *L->pl);
    if (!L->pp || !L->pl) return lb_err_set(err, LB_E_OOM, "out of memory (vocab of %d)", t->n_vocab);
    if (tok_map_init(&t->piece_map, (uint32_t)json_object_size(L->vocab) + 64))
        return lb_err_set(err, LB_E_OOM, "out of memory (vocab)");
    json_object_keylen_foreach(L->vocab, k, kl, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (tok_utf8_check((const uint8_t *)k, kl) != kl)
            return lb_err_set(err, LB_E_INPUT, "model.vocab: a key is not valid UTF-8");
        L->pp[id] = k;
        L->pl[id] = kl;
        if (tok_map_put(&t->piece_map, k, kl, id)) return lb_err_set(err, LB_E_OOM, "out of memory (vocab)");
    }
    return 0;
}

/* ---------------------------------------------------------------- added tokens */

static int trie_add(struct tok_trie *tr, const char *s, size_t n, int32_t idx)
{
    if (n == 0) return 0;
    if (!tr->nodes) {
        tr->cap = 64;
        tr->nodes = malloc((size_t)tr->cap * sizeof *tr->nodes);
        if (!tr->nodes) return LB_E_OOM;
        for (int b = 0; b < 256; b++) tr->root_child[b] = -1;
        tr->nodes[0] = (struct tok_trie_node){-1, -1, -1, 0};
        tr->n_nodes = 1;
    }
    tr->first[(uint8_t)s[0]] = 1;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t ch = node == 0 ? tr->root_child[c] : tr->nodes[node].child;
        if (node != 0)
            while (ch >= 0 && tr->nodes[ch].byte != c) ch = tr->nodes[ch].sibling;
        if (ch < 0) {
            if (tr->n_nodes == tr->cap) {
                if (tr->cap > (1 << 28)) return LB_E_OOM;
                struct tok_trie_node *p = realloc(tr->nodes, (size_t)tr->cap * 2 * sizeof *p);
                if (!p) return LB_E_OOM;
                tr->nodes = p;
                tr->cap *= 2;
            }
            ch = tr->n_nodes++;
            tr->nodes[ch] = (struct tok_trie_node){-1, -1, -1, c};
            if (node == 0) {
                tr->root_child[c] = ch;
            } else {
                tr->nodes[ch].sibling = tr->nodes[node].child;
                tr->nodes[node].child = ch;
            }
        }
        node = ch;
    }
    tr->nodes[node].added = idx;
    return 0;
}

static int load_added(struct loader *L, struct lb_err *err)
{
    struct lb_tok *t = L->t;
    size_t n = json_array_size(L->added);
    if (tok_map_init(&t->added_map, (uint32_t)n * 2 + 8)) return lb_err_set(err, LB_E_OOM, "out of memory");
    if (n == 0) return 0;
    t->added = calloc(n, sizeof *t->added);
    if (!t->added) return lb_err_set(err, LB_E_OOM, "out of memory (added tokens)");
    size_t i;
    json_t *a;
    json_array_foreach(L->added, i, a) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!json_is_object(a)) return lb_err_set(err, LB_E_INPUT, "%s: must be an object", where);
        static const char *const keys[] = {"id", "content", "single_word", "lstrip", "rstrip", "normalized",
                                           "special", NULL};
        int rc = tok_check_keys(a, where, keys, err);
        if (rc) return rc;
        struct tok_added *ad = &t->added[t->n_added];
        const char *s;
        size_t sl;
        if ((rc = get_str(a, "content", &s, &sl, where, err))) return rc;
        if (!s) return lb_err_set(err, LB_E_INPUT, "%s: \"content\" is missing", where);
        if (tok_utf8_check((const uint8_t *)s, sl) != sl)
            return lb_err_set(err, LB_E_INPUT, "%s: content is not valid UTF-8", where);
        int special = 0, sw = 0, ls = 0, rs = 0, norm = 0;
        if ((rc = get_bool(a, "special", 0, &special, where, err))) return rc;
        if ((rc = get_bool(a, "single_word", 0, &sw, where, err))) return rc;
        if ((rc = get_bool(a, "lstrip", 0, &ls, where, err))) return rc;
        if ((rc = get_bool(a, "rstrip", 0, &rs, where, err))) return rc;
        if ((rc = get_bool(a, "normalized", !special, &norm, where, err))) return rc;
        ad->content = dup_mem(s, sl);
        if (!ad->content) return lb_err_set(err, LB_E_OOM, "out of memory");
        ad->n_content = sl;
        ad->id = (int32_t)json_integer_value(json_object_get(a, "id"));
        ad->special = (uint8_t)special;
        ad->single_word = (uint8_t)sw;
        ad->lstrip = (uint8_t)ls;
        ad->rstrip = (uint8_t)rs;
        ad->normalized = (uint8_t)norm;
        t->n_added++;
        /* the vocab learns the added token (overriding a vocab entry of the same string) */
        L->pp[ad->id] = ad->content;
        L->pl[ad->id] = sl;
        if (tok_map_put(&t->piece_map, s, sl, ad->id) || tok_map_put(&t->added_map, s, sl, t->n_added - 1))
            return lb_err_set(err, LB_E_OOM, "out of memory");
    }
    return 0;
}

/* Needs the normalizer: normalized tokens are matched on normalized text. */
static int build_tries(struct lb_tok *t, struct lb_err *err)
{
    struct lb_tok_text norm = {0}, tmp = {0};
    struct tok_re_scratch rs = {0};
    int rc = 0;
    for (int i = 0; i < t->n_added && !rc; i++) {
        struct tok_added *ad = &t->added[i];
        if (ad->normalized && t->has_normalizer) {
            rc = tok_normalize(t, ad->content, ad->n_content, &norm, &tmp, &rs, err);
            if (rc) break;
            if (trie_add(&t->trie_norm, norm.s, norm.n, i) || tok_map_put(&t->added_map, norm.s, norm.n, i))
                rc = lb_err_set(err, LB_E_OOM, "out of memory");
        } else if (trie_add(&t->trie_raw, ad->content, ad->n_content, i)) {
            rc = lb_err_set(err, LB_E_OOM, "out of memory");
        }
    }
    t->trie_raw.empty = t->trie_raw.n_nodes == 0;
    t->trie_norm.empty = t->trie_norm.n_nodes == 0;
    lb_tok_text_free(&norm);
    lb_tok_text_free(&tmp);
    tok_re_scratch_free(&rs);
    return rc;
}

/* ---------------------------------------------------------------- normalizer */

static int add_norm(struct lb_tok *t, json_t *o, const char *where, struct lb_err *err)
{
    if (json_is_null(o)) return 0;
    if (!json_is_object(o)) return lb_err_set(err, LB_E_INPUT, "%s: must be an object", where);
    const char *type = type_of(o);
    int rc;
    if (!strcmp(type, "Sequence")) {
        static const char *const keys[] = {"type", "normalizers", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *arr = json_object_get(o, "normalizers");
        if (!json_is_array(arr)) return lb_err_set(err, LB_E_INPUT, "%s: \"normalizers\" must be an array", where);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            char w[160];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, i);
            if ((rc = add_norm(t, x, w, err))) return rc;
        }
        return 0;
    }
    struct tok_norm nm;
    memset(&nm, 0, sizeof nm);
    if (!strcmp(type, "Prepend")) {
        static const char *const keys[] = {"type", "prepend", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        const char *s;
        size_t n;
        if ((rc = get_str(o, "prepend", &s, &n, where, err))) return rc;
        if (!s) return lb_err_set(err, LB_E_INPUT, "%s (Prepend): \"prepend\" is missing", where);
        nm.kind = TOK_NORM_PREPEND;
        nm.str = dup_mem(s, n);
        nm.n_str = n;
        if (!nm.str) return lb_err_set(err, LB_E_OOM, "out of memory");
    } else if (!strcmp(type, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        const char *s;
        size_t n;
        if ((rc = get_str(o, "content", &s, &n, where, err))) return rc;
        nm.kind = TOK_NORM_REPLACE;
        nm.str = dup_mem(s ? s : "", n);
        nm.n_str = n;
        if (!nm.str) return lb_err_set(err, LB_E_OOM, "out of memory");
        if (memchr(nm.str, '$', n)) {
            free(nm.str);
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s (Replace): content with '$' is not supported", where);
        }
        if ((rc = load_pattern(json_object_get(o, "pattern"), &nm.re, where, err))) {
            free(nm.str);
            return rc;
        }
    } else if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") || !strcmp(type, "NFKD")) {
        static const char *const keys[] = {"type", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        nm.kind = TOK_NORM_UNICODE;
        nm.utf8proc_opts = UTF8PROC_STABLE | (type[2] == 'K' || type[3] == 'K' ? UTF8PROC_COMPAT : 0) |
                           (type[strlen(type) - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
    } else {
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: normalizer \"%s\" is not supported", where,
                          *type ? type : "(no type)");
    }
    struct tok_norm *p = realloc(t->norms, (size_t)(t->n_norms + 1) * sizeof *p);
    if (!p) {
        free(nm.str);
        tok_re_free(&nm.re);
        return lb_err_set(err, LB_E_OOM, "out of memory");
    }
    t->norms = p;
    t->norms[t->n_norms++] = nm;
    return 0;
}

/* ---------------------------------------------------------------- pre-tokenizer */

static int push_pre(struct lb_tok *t, struct tok_pre *pr, struct lb_err *err)
{
    if (t->n_pres == TOK_MAX_PRES) {
        tok_re_free(&pr->re);
        free(pr->repl);
        return lb_err_set(err, LB_E_UNSUPPORTED, "pre_tokenizer: more than %d steps", TOK_MAX_PRES);
    }
    struct tok_pre *p = realloc(t->pres, (size_t)(t->n_pres + 1) * sizeof *p);
    if (!p) {
        tok_re_free(&pr->re);
        free(pr->repl);
        return lb_err_set(err, LB_E_OOM, "out of memory");
    }
    t->pres = p;
    t->pres[t->n_pres++] = *pr;
    return 0;
}

/* GPT-2's pattern, used by ByteLevel with use_regex (Oniguruma syntax). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_pre(struct lb_tok *t, json_t *o, const char *where, struct lb_err *err)
{
    if (json_is_null(o)) return 0;
    if (!json_is_object(o)) return lb_err_set(err, LB_E_INPUT, "%s: must be an object", where);
    if (t->byte_level)
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: a pre-tokenizer after ByteLevel is not supported", where);
    const char *type = type_of(o);
    int rc;
    struct tok_pre pr;
    memset(&pr, 0, sizeof pr);
    if (!strcmp(type, "Sequence")) {
        static const char *const keys[] = {"type", "pretokenizers", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *arr = json_object_get(o, "pretokenizers");
        if (!json_is_array(arr)) return lb_err_set(err, LB_E_INPUT, "%s: \"pretokenizers\" must be an array", where);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            char w[160];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            if ((rc = add_pre(t, x, w, err))) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        char w[200];
        snprintf(w, sizeof w, "%s (Split)", where);
        if ((rc = get_bool(o, "invert", 0, &pr.invert, w, err))) return rc;
        const char *b;
        size_t bn;
        if ((rc = get_str(o, "behavior", &b, &bn, w, err))) return rc;
        if (!b) return lb_err_set(err, LB_E_INPUT, "%s: \"behavior\" is missing", w);
        if (!strcmp(b, "Isolated")) pr.behavior = TOK_SPLIT_ISOLATED;
        else if (!strcmp(b, "Removed")) pr.behavior = TOK_SPLIT_REMOVED;
        else if (!strcmp(b, "MergedWithPrevious")) pr.behavior = TOK_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) pr.behavior = TOK_SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) pr.behavior = TOK_SPLIT_CONTIGUOUS;
        else return lb_err_set(err, LB_E_UNSUPPORTED, "%s: behavior \"%s\" is not supported", w, b);
        pr.kind = TOK_PRE_SPLIT;
        if ((rc = load_pattern(json_object_get(o, "pattern"), &pr.re, w, err))) return rc;
        return push_pre(t, &pr, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        char w[200];
        snprintf(w, sizeof w, "%s (ByteLevel)", where);
        int aps = 0, use_regex = 1, trim = 0;
        if ((rc = get_bool(o, "add_prefix_space", 0, &aps, w, err))) return rc;
        if ((rc = get_bool(o, "use_regex", 1, &use_regex, w, err))) return rc;
        if ((rc = get_bool(o, "trim_offsets", 0, &trim, w, err))) return rc; /* offsets only */
        if (aps) {
            pr.kind = TOK_PRE_PREFIX_SPACE;
            if ((rc = push_pre(t, &pr, err))) return rc;
        }
        if (use_regex) {
            memset(&pr, 0, sizeof pr);
            pr.kind = TOK_PRE_SPLIT;
            pr.behavior = TOK_SPLIT_ISOLATED;
            if ((rc = tok_re_compile(&pr.re, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, w, err))) return rc;
            if ((rc = push_pre(t, &pr, err))) return rc;
        }
        t->byte_level = 1;
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        static const char *const keys[] = {"type", "replacement", "prepend_scheme", "split", "add_prefix_space",
                                           "str_rep", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        char w[200];
        snprintf(w, sizeof w, "%s (Metaspace)", where);
        const char *r, *sr, *ps;
        size_t rn, srn, psn;
        int split = 1, aps = 1;
        if ((rc = get_str(o, "replacement", &r, &rn, w, err)) || (rc = get_str(o, "str_rep", &sr, &srn, w, err)) ||
            (rc = get_str(o, "prepend_scheme", &ps, &psn, w, err)) || (rc = get_bool(o, "split", 1, &split, w, err)) ||
            (rc = get_bool(o, "add_prefix_space", 1, &aps, w, err)))
            return rc;
        if (!r) { r = "\xe2\x96\x81"; rn = 3; }
        if (sr && (srn != rn || memcmp(sr, r, rn)))
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s: str_rep different from replacement is not supported", w);
        pr.kind = TOK_PRE_METASPACE;
        pr.prepend = aps ? 2 : 0;
        if (ps && !strcmp(ps, "always")) pr.prepend = 2;
        else if (ps && !strcmp(ps, "first")) pr.prepend = 1;
        else if (ps && !strcmp(ps, "never")) pr.prepend = 0;
        else if (ps) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: prepend_scheme \"%s\" is not supported", w, ps);
        if (rn == 0 || tok_utf8_check((const uint8_t *)r, rn) != rn)
            return lb_err_set(err, LB_E_INPUT, "%s: bad replacement", w);
        pr.repl = dup_mem(r, rn);
        pr.n_repl = rn;
        if (!pr.repl) return lb_err_set(err, LB_E_OOM, "out of memory");
        if ((rc = push_pre(t, &pr, err))) return rc;
        if (split) { /* the Rust crate splits on the replacement, each piece led by it */
            memset(&pr, 0, sizeof pr);
            pr.kind = TOK_PRE_SPLIT;
            pr.behavior = TOK_SPLIT_MERGED_NEXT;
            if ((rc = tok_re_compile_literal(&pr.re, r, rn, w, err))) return rc;
            if ((rc = push_pre(t, &pr, err))) return rc;
        }
        return 0;
    }
    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported", where,
                      *type ? type : "(no type)");
}

/* ---------------------------------------------------------------- model: merges, maps */

static int build_model(struct loader *L, struct lb_err *err)
{
    struct lb_tok *t = L->t;
    int rc;
    const char *s;
    size_t n;
    if ((rc = get_str(L->model, "unk_token", &s, &n, "model (BPE)", err))) return rc;
    t->unk_id = -1;
    if (s) {
        t->unk_id = tok_map_get(&t->piece_map, s, n);
        if (t->unk_id < 0) return lb_err_set(err, LB_E_INPUT, "model.unk_token \"%s\" is not in the vocab", s);
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        t->byte_fb_id[b] = tok_map_get(&t->piece_map, buf, 6);
        if (t->byte_level) {
            int len = tok_utf8_put(byte_to_cp_tab[b], buf);
            t->sym_id[b] = tok_map_get(&t->piece_map, buf, (size_t)len);
        } else {
            buf[0] = (char)b;
            t->sym_id[b] = b < 0x80 ? tok_map_get(&t->piece_map, buf, 1) : -1;
        }
    }
    if (t->byte_level) { /* word map keyed by raw bytes */
        if (tok_map_init(&t->word_map, t->piece_map.n + 16)) return lb_err_set(err, LB_E_OOM, "out of memory");
        char *raw = NULL;
        size_t raw_cap = 0;
        for (uint32_t i = 0; i <= t->piece_map.mask; i++) {
            const struct tok_map_slot *sl = &t->piece_map.slots[i];
            if (!sl->hash) continue;
            const uint8_t *k = (const uint8_t *)t->piece_map.blob + sl->off;
            if (sl->len > raw_cap) {
                raw_cap = sl->len * 2 + 16;
                char *p = realloc(raw, raw_cap);
                if (!p) { free(raw); return lb_err_set(err, LB_E_OOM, "out of memory"); }
                raw = p;
            }
            size_t m = 0, j = 0;
            int ok = 1;
            while (j < sl->len) {
                int len;
                int b = tok_cp_to_byte(tok_utf8_get(k + j, &len));
                if (b < 0) { ok = 0; break; }
                raw[m++] = (char)b;
                j += (size_t)len;
            }
            if (ok && tok_map_put(&t->word_map, raw, m, sl->val)) {
                free(raw);
                return lb_err_set(err, LB_E_OOM, "out of memory");
            }
        }
        free(raw);
    }
    /* merges */
    size_t n_merges = json_array_size(L->merges);
    uint64_t cap = 64;
    while (cap < (uint64_t)n_merges * 2) cap *= 2;
    t->merges.slots = malloc(cap * sizeof *t->merges.slots);
    if (!t->merges.slots) return lb_err_set(err, LB_E_OOM, "out of memory (merges)");
    for (uint64_t i = 0; i < cap; i++) t->merges.slots[i].key = UINT64_MAX;
    t->merges.mask = cap - 1;
    char *cat = NULL;
    size_t cat_cap = 0;
    size_t i;
    json_t *m;
    rc = 0;
    json_array_foreach(L->merges, i, m) {
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(m)) {
            a = json_string_value(m);
            size_t ml = json_string_length(m);
            const char *sp = memchr(a, ' ', ml);
            if (!sp || memchr(sp + 1, ' ', ml - (size_t)(sp + 1 - a))) {
                rc = lb_err_set(err, LB_E_INPUT, "model.merges[%zu]: \"%s\" is not two tokens separated by one space",
                                i, a);
                break;
            }
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = ml - na - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            na = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            nb = json_string_length(json_array_get(m, 1));
        } else {
            rc = lb_err_set(err, LB_E_INPUT, "model.merges[%zu]: must be \"a b\" or [\"a\", \"b\"]", i);
            break;
        }
        if (na + nb > cat_cap) {
            cat_cap = (na + nb) * 2 + 64;
            char *p = realloc(cat, cat_cap);
            if (!p) { rc = lb_err_set(err, LB_E_OOM, "out of memory"); break; }
            cat = p;
        }
        memcpy(cat, a, na);
        memcpy(cat + na, b, nb);
        int32_t ia = tok_map_get(&t->piece_map, a, na), ib = tok_map_get(&t->piece_map, b, nb);
        int32_t im = tok_map_get(&t->piece_map, cat, na + nb);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = lb_err_set(err, LB_E_INPUT, "model.merges[%zu]: token \"%.*s\" is not in the vocab", i,
                            (int)(ia < 0 ? na : ib < 0 ? nb : na + nb), ia < 0 ? a : ib < 0 ? b : cat);
            break;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        uint64_t h = key * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        uint64_t j = h & t->merges.mask;
        while (t->merges.slots[j].key != UINT64_MAX && t->merges.slots[j].key != key) j = (j + 1) & t->merges.mask;
        /* a repeated merge keeps its last rank, as a JS Map / Rust HashMap built in order does */
        t->merges.slots[j] = (struct tok_pair_slot){key, (int32_t)i, im};
    }
    free(cat);
    return rc;
}

/* ---------------------------------------------------------------- post-processor */

static int resolve_special(struct lb_tok *t, json_t *specials, const char *name, int32_t **ids, int *n,
                           const char *where, struct lb_err *err)
{
    json_t *sp = json_is_object(specials) ? json_object_get(specials, name) : NULL;
    json_t *arr = sp ? json_object_get(sp, "ids") : NULL;
    if (json_is_array(arr)) {
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= t->n_vocab)
                return lb_err_set(err, LB_E_INPUT, "%s: special token \"%s\": bad id", where, name);
            int32_t *p = realloc(*ids, (size_t)(*n + 1) * sizeof *p);
            if (!p) return lb_err_set(err, LB_E_OOM, "out of memory");
            *ids = p;
            (*ids)[(*n)++] = (int32_t)json_integer_value(x);
        }
        return 0;
    }
    int32_t id = tok_map_get(&t->piece_map, name, strlen(name));
    if (id < 0) return lb_err_set(err, LB_E_INPUT, "%s: special token \"%s\" is unknown", where, name);
    int32_t *p = realloc(*ids, (size_t)(*n + 1) * sizeof *p);
    if (!p) return lb_err_set(err, LB_E_OOM, "out of memory");
    *ids = p;
    (*ids)[(*n)++] = id;
    return 0;
}

static int load_post(struct lb_tok *t, json_t *o, const char *where, int *n_templates, struct lb_err *err)
{
    if (!o || json_is_null(o)) return 0;
    if (!json_is_object(o)) return lb_err_set(err, LB_E_INPUT, "%s: must be an object", where);
    const char *type = type_of(o);
    int rc;
    if (!strcmp(type, "Sequence")) {
        static const char *const keys[] = {"type", "processors", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *arr = json_object_get(o, "processors");
        if (!json_is_array(arr)) return lb_err_set(err, LB_E_INPUT, "%s: \"processors\" must be an array", where);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            char w[160];
            snprintf(w, sizeof w, "%s.processors[%zu]", where, i);
            if ((rc = load_post(t, x, w, n_templates, err))) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) { /* changes offsets only */
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        return tok_check_keys(o, where, keys, err);
    }
    if (!strcmp(type, "TemplateProcessing")) {
        static const char *const keys[] = {"type", "single", "pair", "special_tokens", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        if (++*n_templates > 1)
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s: more than one TemplateProcessing is not supported", where);
        json_t *single = json_object_get(o, "single");
        json_t *specials = json_object_get(o, "special_tokens");
        if (!json_is_array(single)) return lb_err_set(err, LB_E_INPUT, "%s: \"single\" must be an array", where);
        int seen_a = 0;
        size_t i;
        json_t *it;
        json_array_foreach(single, i, it) {
            json_t *st = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
            if (st && json_is_string(json_object_get(st, "id"))) {
                const char *name = json_string_value(json_object_get(st, "id"));
                rc = seen_a ? resolve_special(t, specials, name, &t->tpl_post, &t->n_tpl_post, where, err)
                            : resolve_special(t, specials, name, &t->tpl_pre, &t->n_tpl_pre, where, err);
                if (rc) return rc;
            } else if (sq && json_is_string(json_object_get(sq, "id")) &&
                       !strcmp(json_string_value(json_object_get(sq, "id")), "A") && !seen_a) {
                seen_a = 1;
            } else {
                return lb_err_set(err, LB_E_UNSUPPORTED, "%s: \"single\"[%zu] is not supported (only SpecialToken "
                                  "and one Sequence A)", where, i);
            }
        }
        if (!seen_a) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: \"single\" without Sequence A", where);
        return 0;
    }
    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: post-processor \"%s\" is not supported", where,
                      *type ? type : "(no type)");
}

/* ---------------------------------------------------------------- tokenizer_config.json */

static int32_t config_token(struct lb_tok *t, json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return tok_map_get(&t->piece_map, json_string_value(v), json_string_length(v));
}

static int load_config(struct lb_tok *t, json_t *cfg, struct lb_err *err)
{
    t->bos_id = t->eos_id = -1;
    t->config_add_bos = -1;
    if (cfg) {
        if (!json_is_object(cfg)) return lb_err_set(err, LB_E_INPUT, "tokenizer_config.json: must be an object");
        t->bos_id = config_token(t, json_object_get(cfg, "bos_token"));
        t->eos_id = config_token(t, json_object_get(cfg, "eos_token"));
        json_t *v = json_object_get(cfg, "add_bos_token");
        if (json_is_boolean(v)) t->config_add_bos = json_is_true(v);
        json_t *extra = json_object_get(cfg, "additional_special_tokens");
        size_t i;
        json_t *x;
        json_array_foreach(extra, i, x) {
            int32_t id = config_token(t, x);
            if (id >= 0) t->is_special[id] = 1;
        }
    }
    if (t->bos_id < 0 && t->n_tpl_pre > 0) t->bos_id = t->tpl_pre[0];
    return 0;
}

/* ---------------------------------------------------------------- entry points */

void lb_tok_free(struct lb_tok *t)
{
    if (!t) return;
    free(t->piece_blob);
    free(t->piece_off);
    free(t->has_piece);
    free(t->is_special);
    tok_map_free(&t->piece_map);
    for (int i = 0; i < t->n_norms; i++) {
        free(t->norms[i].str);
        tok_re_free(&t->norms[i].re);
    }
    free(t->norms);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    tok_map_free(&t->added_map);
    for (int i = 0; i < t->n_pres; i++) {
        tok_re_free(&t->pres[i].re);
        free(t->pres[i].repl);
    }
    free(t->pres);
    tok_map_free(&t->word_map);
    free(t->merges.slots);
    free(t->tpl_pre);
    free(t->tpl_post);
    free(t->dec_blob);
    free(t->dec_off);
    free(t->dec_meta_strip);
    free(t);
}

static int build_pieces(struct loader *L, struct lb_err *err)
{
    struct lb_tok *t = L->t;
    size_t total = 0, nv = (size_t)(uint32_t)t->n_vocab;
    for (size_t i = 0; i < nv; i++) total += L->pl[i];
    t->piece_blob = malloc(total + 1);
    t->piece_off = malloc((nv + 1) * sizeof *t->piece_off);
    t->has_piece = calloc(nv, 1);
    t->is_special = calloc(nv, 1);
    if (!t->piece_blob || !t->piece_off || !t->has_piece || !t->is_special)
        return lb_err_set(err, LB_E_OOM, "out of memory (vocab strings)");
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->piece_off[i] = off;
        if (L->pp[i]) {
            t->has_piece[i] = 1;
            memcpy(t->piece_blob + off, L->pp[i], L->pl[i]);
            off += L->pl[i];
        }
    }
    t->piece_off[t->n_vocab] = off;
    t->piece_blob[off] = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].special) t->is_special[t->added[i].id] = 1;
    return 0;
}

int lb_tok_load_buf(struct lb_tok **out, const char *json, size_t n_json, const char *config, size_t n_config,
                    struct lb_err *err)
{
    *out = NULL;
    pthread_once(&byte_tables_once, init_byte_tables);
    struct lb_tok *t = calloc(1, sizeof *t);
    if (!t) return lb_err_set(err, LB_E_OOM, "out of memory");
    static uint64_t next_gen;
    t->gen = __atomic_add_fetch(&next_gen, 1, __ATOMIC_RELAXED);
    t->unk_id = t->bos_id = t->eos_id = -1;
    t->config_add_bos = -1;
    struct loader L = {.t = t};
    json_t *root = NULL, *cfg = NULL;
    json_error_t je;
    int rc = 0;
    root = json_loadb(json, n_json, JSON_ALLOW_NUL, &je);
    if (!root) {
        rc = lb_err_set(err, LB_E_INPUT, "tokenizer.json: line %d column %d: %s", je.line, je.column, je.text);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = lb_err_set(err, LB_E_INPUT, "tokenizer.json: not a JSON object");
        goto done;
    }
    if (config && n_config) {
        cfg = json_loadb(config, n_config, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg) {
            rc = lb_err_set(err, LB_E_INPUT, "tokenizer_config.json: line %d column %d: %s", je.line, je.column,
                            je.text);
            goto done;
        }
    }
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens", "normalizer",
                                       "pre_tokenizer", "post_processor", "decoder", "model", NULL};
    if ((rc = tok_check_keys(root, "tokenizer.json", keys, err))) goto done;
    json_t *v = json_object_get(root, "truncation");
    if (v && !json_is_null(v)) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "tokenizer.json: truncation is not supported"); goto done; }
    v = json_object_get(root, "padding");
    if (v && !json_is_null(v)) { rc = lb_err_set(err, LB_E_UNSUPPORTED, "tokenizer.json: padding is not supported"); goto done; }
    L.model = json_object_get(root, "model");
    L.added = json_object_get(root, "added_tokens");
    if ((rc = load_vocab(&L, err))) goto done;
    if ((rc = load_added(&L, err))) goto done;
    if ((rc = build_pieces(&L, err))) goto done;
    json_t *nm = json_object_get(root, "normalizer");
    t->has_normalizer = nm && !json_is_null(nm);
    if ((rc = add_norm(t, nm ? nm : json_null(), "normalizer", err))) goto done;
    if ((rc = build_tries(t, err))) goto done;
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if ((rc = add_pre(t, pre ? pre : json_null(), "pre_tokenizer", err))) goto done;
    if ((rc = build_model(&L, err))) goto done;
    int n_templates = 0;
    if ((rc = load_post(t, json_object_get(root, "post_processor"), "post_processor", &n_templates, err))) goto done;
    if ((rc = load_config(t, cfg, err))) goto done;
    if ((rc = tok_dec_build(t, json_object_get(root, "decoder"), err))) goto done;
done:
    free(L.pp);
    free(L.pl);
    json_decref(root);
    json_decref(cfg);
    if (rc) {
        lb_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int read_file(const char *path, char **buf, size_t *n, struct lb_err *err)
{
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lb_err_set(err, errno == ENOENT ? LB_E_INPUT : LB_E_IO, "%s: %s", path, strerror(errno));
    int rc = 0;
    size_t cap = 1 << 16;
    char *p = malloc(cap);
    if (!p) { fclose(f); return lb_err_set(err, LB_E_OOM, "%s: out of memory", path); }
    for (;;) {
        if (*n == cap) {
            if (cap >= ((size_t)1 << 32)) { rc = lb_err_set(err, LB_E_INPUT, "%s: larger than 4 GiB", path); break; }
            char *q = realloc(p, cap * 2);
            if (!q) { rc = lb_err_set(err, LB_E_OOM, "%s: out of memory", path); break; }
            p = q;
            cap *= 2;
        }
        size_t got = fread(p + *n, 1, cap - *n, f);
        *n += got;
        if (got == 0) {
            if (ferror(f)) rc = lb_err_set(err, LB_E_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc) { free(p); *n = 0; return rc; }
    *buf = p;
    return 0;
}

int lb_tok_open(struct lb_tok **out, const char *dir, struct lb_err *err)
{
    *out = NULL;
    size_t dl = strlen(dir);
    char *path = malloc(dl + 32);
    if (!path) return lb_err_set(err, LB_E_OOM, "out of memory");
    char *json = NULL, *cfg = NULL;
    size_t n_json = 0, n_cfg = 0;
    snprintf(path, dl + 32, "%s/tokenizer.json", dir);
    int rc = read_file(path, &json, &n_json, err);
    if (rc == 0) {
        snprintf(path, dl + 32, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            rc = read_file(path, &cfg, &n_cfg, err);
        }
    }
    if (rc == 0) {
        rc = lb_tok_load_buf(out, json, n_json, cfg, n_cfg, err);
        if (rc) lb_err_prefix(err, "tokenizer %s", dir);
    }
    free(json);
    free(cfg);
    free(path);
    return rc;
}

int32_t lb_tok_n_vocab(const struct lb_tok *t) { return t->n_vocab; }
int32_t lb_tok_bos_id(const struct lb_tok *t) { return t->bos_id; }
int32_t lb_tok_eos_id(const struct lb_tok *t) { return t->eos_id; }
int lb_tok_config_add_bos(const struct lb_tok *t) { return t->config_add_bos; }
int lb_tok_is_special(const struct lb_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->is_special[id];
}

const char *lb_tok_id_to_piece(const struct lb_tok *t, int32_t id, size_t *n)
{
    if (id < 0 || id >= t->n_vocab || !t->has_piece[id]) {
        if (n) *n = 0;
        return NULL;
    }
    if (n) *n = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece_blob + t->piece_off[id];
}

int32_t lb_tok_piece_to_id(const struct lb_tok *t, const char *piece, size_t n)
{
    return tok_map_get(&t->piece_map, piece, n);
}
