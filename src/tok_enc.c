/* tok_enc.c — text -> ids.
 *
 * Pipeline per call (the reference's order):
 *   1. added tokens not subject to normalization are cut out, leftmost-longest (byte trie);
 *   2. each text section is normalized, then normalized added tokens are cut out;
 *   3. each remaining piece is pre-tokenized (Split regexes, ByteLevel) into words;
 *   4. each word goes through BPE (ignore_merges shortcut, per-call word cache, then merges
 *      by rank over a linked list: O(n^2) scan for short words, a binary heap beyond);
 *   5. the post-processor template adds its special tokens.
 * All scratch is per thread (struct enc), so concurrent encodes on one tokenizer are safe.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_int.h"

struct seg {
    size_t s, e;
    int32_t added; /* index into t->added, or -1 for text */
};
struct segvec {
    struct seg *v; /* owned */
    size_t n, cap;
};
struct span {
    size_t s, e;
    int is_match;
};
struct spanvec {
    struct span *v; /* owned */
    size_t n, cap;
};
struct sym {
    int32_t id; /* -1: not in the vocab (byte fallback / unk); -2: merged away */
    int32_t prev, next;
    uint32_t start; /* byte offset in the word (for unknown symbols) */
    uint32_t len;
};
struct hent { /* a candidate merge: the pair starting at symbol pos had this rank when pushed */
    int32_t rank, pos;
};

/* Word cache: word bytes -> the ids BPE gave it (before unk fusing). Per call. */
#define CACHE_MAX_WORD 256
#define CACHE_MAX_SLOTS (1u << 17)
#define CACHE_MAX_ARENA ((size_t)16 << 20) /* bytes of keys + ids per thread */
struct cache_slot {
    uint32_t hash; /* 0: empty */
    uint32_t n_key;
    uint32_t n_ids;
    uint64_t off; /* into arena: key bytes, then padding to 4, then ids */
};
struct cache {
    struct cache_slot *slots; /* owned */
    uint32_t mask, n;
    char *arena; /* owned */
    size_t arena_n, arena_cap;
};

struct enc {
    const struct lb_tok *t;
    struct lb_tok_ids *out;
    struct lb_err *err;
    struct tok_re_scratch rs;
    struct segvec seg_raw, seg_norm;
    struct lb_tok_text norm, tmp;
    struct lb_tok_text pre_buf[TOK_MAX_PRES];
    struct spanvec spans[TOK_MAX_PRES];
    struct sym *sym;
    size_t sym_cap;
    struct hent *heap;
    size_t heap_cap;
    struct cache cache;
    uint64_t cache_gen; /* lb_tok.gen the cache belongs to */
    int use_cache;
    int last_unk;
    int first_section; /* the text being pre-tokenized starts the input (Metaspace "first") */
};

static inline int utf8_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* ---------------------------------------------------------------- output */

static int push_id(struct enc *e, int32_t id)
{
    struct lb_tok_ids *o = e->out;
    if (o->n == o->cap && tok_ids_reserve(o, o->n + 1, e->err)) return LB_E_OOM;
    o->ids[o->n++] = id;
    return 0;
}

/* Model output: fuse_unk folds runs of unk into one (within one piece of text). */
static int emit_model(struct enc *e, int32_t id)
{
    const struct lb_tok *t = e->t;
    if (t->fuse_unk && id == t->unk_id) {
        if (e->last_unk) return 0;
        e->last_unk = 1;
    } else {
        e->last_unk = 0;
    }
    return push_id(e, id);
}

/* ---------------------------------------------------------------- word cache */

static int cache_init(struct cache *c)
{
    c->slots = calloc(4096, sizeof *c->slots);
    if (!c->slots) return LB_E_OOM;
    c->mask = 4095;
    return 0;
}

static void cache_free(struct cache *c)
{
    free(c->slots);
    free(c->arena);
    memset(c, 0, sizeof *c);
}

static const struct cache_slot *cache_get(const struct cache *c, const uint8_t *w, size_t n, uint32_t h)
{
    for (uint32_t i = h & c->mask;; i = (i + 1) & c->mask) {
        const struct cache_slot *s = &c->slots[i];
        if (!s->hash) return NULL;
        if (s->hash == h && s->n_key == n && !memcmp(c->arena + s->off, w, n)) return s;
    }
}

static const int32_t *cache_ids(const struct cache *c, const struct cache_slot *s)
{
    return (const int32_t *)(c->arena + s->off + ((s->n_key + 3) & ~3u));
}

/* Best effort: a failed allocation just leaves the word uncached. */
static void cache_put(struct cache *c, const uint8_t *w, size_t n, uint32_t h, const int32_t *ids, size_t n_ids)
{
    if (n_ids > 0xFFFF) return;
    size_t need = ((n + 3) & ~(size_t)3) + n_ids * sizeof(int32_t);
    if ((c->n + 1) * 10 > (c->mask + 1) * 7 || c->arena_n + need > CACHE_MAX_ARENA) {
        if (c->mask + 1 >= CACHE_MAX_SLOTS || c->arena_n + need > CACHE_MAX_ARENA) { /* full: start over */
            memset(c->slots, 0, (size_t)(c->mask + 1) * sizeof *c->slots);
            c->n = 0;
            c->arena_n = 0;
        } else {
            uint32_t cap = (c->mask + 1) * 2;
            struct cache_slot *ns = calloc(cap, sizeof *ns);
            if (!ns) return;
            for (uint32_t i = 0; i <= c->mask; i++) {
                if (!c->slots[i].hash) continue;
                uint32_t j = c->slots[i].hash & (cap - 1);
                while (ns[j].hash) j = (j + 1) & (cap - 1);
                ns[j] = c->slots[i];
            }
            free(c->slots);
            c->slots = ns;
            c->mask = cap - 1;
        }
    }
    if (c->arena_n + need > c->arena_cap) {
        size_t cap = c->arena_cap ? c->arena_cap * 2 : 65536;
        while (cap < c->arena_n + need) cap *= 2;
        char *a = realloc(c->arena, cap);
        if (!a) return;
        c->arena = a;
        c->arena_cap = cap;
    }
    uint32_t i = h & c->mask;
    while (c->slots[i].hash) i = (i + 1) & c->mask;
    memcpy(c->arena + c->arena_n, w, n);
    memcpy(c->arena + c->arena_n + ((n + 3) & ~(size_t)3), ids, n_ids * sizeof(int32_t));
    c->slots[i] = (struct cache_slot){h, (uint32_t)n, (uint32_t)n_ids, c->arena_n};
    c->arena_n += need;
    c->n++;
}

/* ---------------------------------------------------------------- BPE */

static inline int32_t pair_rank(const struct lb_tok *t, int32_t a, int32_t b, int32_t *merged)
{
    if (a < 0 || b < 0) return INT32_MAX;
    const struct tok_pair_slot *s = tok_pairs_get(&t->merges, a, b);
    if (!s) return INT32_MAX;
    *merged = s->merged;
    return s->rank;
}

static inline int hent_less(const struct hent *a, const struct hent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_reserve(struct enc *e, size_t n);

static int heap_push(struct enc *e, size_t *n, struct hent h)
{
    if (heap_reserve(e, *n + 1)) return LB_E_OOM;
    size_t i = (*n)++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!hent_less(&h, &e->heap[par])) break;
        e->heap[i] = e->heap[par];
        i = par;
    }
    e->heap[i] = h;
    return 0;
}

/* Moves h[i] down to its place in the heap h[0..m). */
static void sift_down(struct hent *h, size_t m, size_t i)
{
    struct hent x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && hent_less(&h[c + 1], &h[c])) c++;
        if (!hent_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static struct hent heap_pop(struct enc *e, size_t *n)
{
    struct hent top = e->heap[0];
    e->heap[0] = e->heap[--*n];
    if (*n) sift_down(e->heap, *n, 0);
    return top;
}

static int heap_reserve(struct enc *e, size_t n)
{
    if (n <= e->heap_cap) return 0;
    size_t cap = e->heap_cap ? e->heap_cap * 2 : 1024;
    while (cap < n) cap *= 2;
    struct hent *p = realloc(e->heap, cap * sizeof *p);
    if (!p) return lb_err_set(e->err, LB_E_OOM, "out of memory (BPE heap)");
    e->heap = p;
    e->heap_cap = cap;
    return 0;
}

/* Appends a candidate without ordering (the caller heapifies). */
static int push_pair_unordered(struct enc *e, size_t *nh, int32_t i)
{
    struct sym *s = e->sym;
    int32_t merged;
    int32_t r = pair_rank(e->t, s[i].id, s[s[i].next].id, &merged);
    if (r == INT32_MAX) return 0;
    if (heap_reserve(e, *nh + 1)) return LB_E_OOM;
    e->heap[(*nh)++] = (struct hent){r, i};
    return 0;
}

static int push_pair(struct enc *e, size_t *nh, int32_t i)
{
    struct sym *s = e->sym;
    int32_t j = s[i].next;
    int32_t merged;
    int32_t r = pair_rank(e->t, s[i].id, s[j].id, &merged);
    if (r == INT32_MAX) return 0;
    return heap_push(e, nh, (struct hent){r, i});
}

/* Merges e->sym[0..m) (a list linked in index order); the result is the list from 0. */
static int bpe_merge(struct enc *e, size_t m)
{
    const struct lb_tok *t = e->t;
    struct sym *s = e->sym;
    if (m <= 48) { /* short word: scan for the best pair each round */
        int32_t rank[64], merged_tmp[64];
        int32_t idx[64]; /* live symbol indices, in order */
        for (size_t i = 0; i < m; i++) idx[i] = (int32_t)i;
        for (size_t i = 0; i + 1 < m; i++) rank[i] = pair_rank(t, s[i].id, s[i + 1].id, &merged_tmp[i]);
        size_t k = m;
        while (k > 1) {
            size_t best = 0;
            int32_t br = rank[0];
            for (size_t i = 1; i + 1 < k; i++)
                if (rank[i] < br) { br = rank[i]; best = i; }
            if (br == INT32_MAX) break;
            s[idx[best]].id = merged_tmp[best];
            /* drop idx[best + 1] */
            for (size_t i = best + 1; i + 1 < k; i++) idx[i] = idx[i + 1];
            for (size_t i = best + 1; i + 2 < k; i++) { rank[i] = rank[i + 1]; merged_tmp[i] = merged_tmp[i + 1]; }
            k--;
            if (best > 0) rank[best - 1] = pair_rank(t, s[idx[best - 1]].id, s[idx[best]].id, &merged_tmp[best - 1]);
            if (best + 1 < k) rank[best] = pair_rank(t, s[idx[best]].id, s[idx[best + 1]].id, &merged_tmp[best]);
        }
        for (size_t i = 0; i < k; i++) {
            s[idx[i]].next = i + 1 < k ? idx[i + 1] : -1;
        }
        return 0;
    }
    /* first candidates: collected, then heapified in O(m) */
    size_t nh = 0;
    for (size_t i = 0; i + 1 < m; i++)
        if (push_pair_unordered(e, &nh, (int32_t)i)) return LB_E_OOM;
    for (size_t i = nh / 2; i-- > 0;) sift_down(e->heap, nh, i);
    while (nh) {
        struct hent h = heap_pop(e, &nh);
        int32_t i = h.pos, j = s[i].next, merged = 0;
        /* stale when the pair at pos changed since (ranks identify merges); merged-away
         * symbols have id -2 and never pair */
        if (j < 0 || pair_rank(t, s[i].id, s[j].id, &merged) != h.rank) continue;
        s[i].id = merged;
        s[i].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = i;
        s[j].id = -2;
        if (s[i].prev >= 0 && push_pair(e, &nh, s[i].prev)) return LB_E_OOM;
        if (s[i].next >= 0 && push_pair(e, &nh, i)) return LB_E_OOM;
    }
    return 0;
}

/* Appends the model's ids for one unknown symbol (byte fallback, else unk, else nothing). */
static int unknown_ids(struct enc *e, const uint8_t *w, const struct sym *s, int32_t *buf, size_t *nb)
{
    const struct lb_tok *t = e->t;
    if (t->byte_fallback) {
        int ok = 1;
        for (uint32_t k = 0; k < s->len; k++)
            if (t->byte_fb_id[w[s->start + k]] < 0) ok = 0;
        if (ok) {
            for (uint32_t k = 0; k < s->len; k++) buf[(*nb)++] = t->byte_fb_id[w[s->start + k]];
            return 0;
        }
    }
    if (t->unk_id >= 0) buf[(*nb)++] = t->unk_id;
    return 0;
}

static int model_word(struct enc *e, const uint8_t *w, size_t n)
{
    const struct lb_tok *t = e->t;
    if (n == 0) return 0;
    if (n > 0x7FFFFFFF) return lb_err_set(e->err, LB_E_INPUT, "a single word of %zu bytes is too long", n);
    const struct tok_map *wm = t->byte_level ? &t->word_map : &t->piece_map;
    if (t->ignore_merges) {
        int32_t id = tok_map_get(wm, (const char *)w, n);
        if (id >= 0) return emit_model(e, id);
    }
    uint32_t h = 0;
    if (e->use_cache && n <= CACHE_MAX_WORD) {
        h = tok_hash(w, n);
        const struct cache_slot *cs = cache_get(&e->cache, w, n, h);
        if (cs) {
            const int32_t *ids = cache_ids(&e->cache, cs);
            for (uint32_t k = 0; k < cs->n_ids; k++)
                if (emit_model(e, ids[k])) return LB_E_OOM;
            return 0;
        }
    }
    /* first symbols */
    if (n + 1 > e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap : 256;
        while (cap < n + 1) cap *= 2;
        struct sym *p = realloc(e->sym, cap * sizeof *p);
        if (!p) return lb_err_set(e->err, LB_E_OOM, "out of memory (a word of %zu bytes)", n);
        e->sym = p;
        e->sym_cap = cap;
    }
    struct sym *s = e->sym;
    size_t m = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) s[i] = (struct sym){t->sym_id[w[i]], (int32_t)i - 1, (int32_t)i + 1, (uint32_t)i, 1};
        m = n;
    } else {
        for (size_t i = 0; i < n;) {
            int len = utf8_len(w[i]);
            int32_t id = w[i] < 0x80 ? t->sym_id[w[i]] : tok_map_get(&t->piece_map, (const char *)w + i, (size_t)len);
            s[m] = (struct sym){id, (int32_t)m - 1, (int32_t)m + 1, (uint32_t)i, (uint32_t)len};
            m++;
            i += (size_t)len;
        }
    }
    s[m - 1].next = -1;
    if (m > 1 && bpe_merge(e, m)) return LB_E_OOM;
    /* collect: into a small stack buffer when it fits (for the cache), else emit directly */
    int32_t buf[CACHE_MAX_WORD + 1];
    size_t nb = 0;
    int cacheable = e->use_cache && n <= CACHE_MAX_WORD;
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        if (nb + s[i].len + 1 > sizeof buf / sizeof buf[0]) { /* long word: flush as we go */
            for (size_t k = 0; k < nb; k++)
                if (emit_model(e, buf[k])) return LB_E_OOM;
            nb = 0;
            cacheable = 0;
        }
        if (s[i].id >= 0) buf[nb++] = s[i].id;
        else unknown_ids(e, w, &s[i], buf, &nb);
    }
    for (size_t k = 0; k < nb; k++)
        if (emit_model(e, buf[k])) return LB_E_OOM;
    if (cacheable) cache_put(&e->cache, w, n, h, buf, nb);
    return 0;
}

/* ---------------------------------------------------------------- pre-tokenizers */

static int pre(struct enc *e, int level, const char *s, size_t n);

static int push_span(struct enc *e, struct spanvec *v, size_t s, size_t en, int is_match)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        struct span *p = realloc(v->v, cap * sizeof *p);
        if (!p) return lb_err_set(e->err, LB_E_OOM, "out of memory");
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = (struct span){s, en, is_match};
    return 0;
}

/* Split, Isolated, not inverted: the hot path, streamed without collecting spans. */
static int split_isolated(struct enc *e, const struct tok_re *re, int level, const char *s, size_t n)
{
    size_t pos = 0, prev = 0, ms, me;
    while (pos <= n) {
        int r = tok_re_next(re, &e->rs, s, n, pos, &ms, &me, e->err);
        if (r < 0) return r;
        if (r == 0) break;
        if (ms > prev && (r = pre(e, level + 1, s + prev, ms - prev))) return r;
        if (me > ms && (r = pre(e, level + 1, s + ms, me - ms))) return r;
        prev = me;
        if (me == ms) { /* empty match: step one character, as JS and Oniguruma iterators do */
            if (me >= n) break;
            pos = me + (size_t)utf8_len((uint8_t)s[me]);
        } else {
            pos = me;
        }
    }
    if (prev < n) return pre(e, level + 1, s + prev, n - prev);
    return 0;
}

/* Other behaviours, as the Rust crate defines them. */
static int split_general(struct enc *e, const struct tok_pre *p, int level, const char *s, size_t n)
{
    struct spanvec *v = &e->spans[level];
    v->n = 0;
    size_t pos = 0, prev = 0, ms, me;
    int r;
    while (pos <= n) {
        r = tok_re_next(&p->re, &e->rs, s, n, pos, &ms, &me, e->err);
        if (r < 0) return r;
        if (r == 0) break;
        if (ms > prev && push_span(e, v, prev, ms, 0)) return LB_E_OOM;
        if (push_span(e, v, ms, me, 1)) return LB_E_OOM;
        prev = me;
        if (me == ms) {
            if (me >= n) break;
            pos = me + (size_t)utf8_len((uint8_t)s[me]);
        } else {
            pos = me;
        }
    }
    if (prev < n && push_span(e, v, prev, n, 0)) return LB_E_OOM;
    if (p->invert)
        for (size_t i = 0; i < v->n; i++) v->v[i].is_match = !v->v[i].is_match;
    /* fold spans into pieces in place */
    size_t k = 0;
    switch (p->behavior) {
    case TOK_SPLIT_ISOLATED: k = v->n; break;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < v->n; i++)
            if (!v->v[i].is_match) v->v[k++] = v->v[i];
        break;
    case TOK_SPLIT_MERGED_PREV: {
        int prev_match = 0;
        for (size_t i = 0; i < v->n; i++) {
            if (v->v[i].is_match && !prev_match && k > 0) v->v[k - 1].e = v->v[i].e;
            else v->v[k++] = v->v[i];
            prev_match = v->v[i].is_match;
        }
        break;
    }
    case TOK_SPLIT_MERGED_NEXT: {
        /* walk backwards: a match joins the piece after it */
        int prev_match = 0;
        size_t w = v->n;
        for (size_t i = v->n; i-- > 0;) {
            struct span sp = v->v[i];
            if (sp.is_match && !prev_match && w < v->n) v->v[w].s = sp.s;
            else v->v[--w] = sp;
            prev_match = sp.is_match;
        }
        memmove(v->v, v->v + w, (v->n - w) * sizeof *v->v);
        k = v->n - w;
        break;
    }
    case TOK_SPLIT_CONTIGUOUS: {
        int prev_match = 0;
        for (size_t i = 0; i < v->n; i++) {
            if (v->v[i].is_match && prev_match && k > 0) v->v[k - 1].e = v->v[i].e;
            else v->v[k++] = v->v[i];
            prev_match = v->v[i].is_match;
        }
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        /* v may not be touched by deeper levels (they use their own spans) */
        size_t a = e->spans[level].v[i].s, b = e->spans[level].v[i].e;
        if (b > a && (r = pre(e, level + 1, s + a, b - a))) return r;
    }
    return 0;
}

static int pre(struct enc *e, int level, const char *s, size_t n)
{
    const struct lb_tok *t = e->t;
    if (n == 0) return 0;
    if (level == t->n_pres) return model_word(e, (const uint8_t *)s, n);
    const struct tok_pre *p = &t->pres[level];
    if (p->kind == TOK_PRE_PREFIX_SPACE) {
        if (s[0] == ' ') return pre(e, level + 1, s, n);
        struct lb_tok_text *b = &e->pre_buf[level];
        if (tok_text_reserve(b, n + 1, e->err)) return LB_E_OOM;
        b->s[0] = ' ';
        memcpy(b->s + 1, s, n);
        b->n = n + 1;
        return pre(e, level + 1, b->s, b->n);
    }
    if (p->kind == TOK_PRE_METASPACE) { /* " " -> replacement, maybe one in front */
        struct lb_tok_text *b = &e->pre_buf[level];
        size_t n_sp = 0;
        for (size_t i = 0; i < n; i++) n_sp += s[i] == ' ';
        int front = (p->prepend == 2 || (p->prepend == 1 && e->first_section)) &&
                    !(n >= p->n_repl && !memcmp(s, p->repl, p->n_repl));
        if (tok_text_reserve(b, n + (n_sp + 1) * p->n_repl, e->err)) return LB_E_OOM;
        size_t w = 0;
        if (front && s[0] != ' ') { memcpy(b->s, p->repl, p->n_repl); w = p->n_repl; }
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') { memcpy(b->s + w, p->repl, p->n_repl); w += p->n_repl; }
            else b->s[w++] = s[i];
        }
        b->n = w;
        return pre(e, level + 1, b->s, b->n);
    }
    if (p->behavior == TOK_SPLIT_ISOLATED && !p->invert) return split_isolated(e, &p->re, level, s, n);
    return split_general(e, p, level, s, n);
}

/* ---------------------------------------------------------------- normalizers */

static int append(struct lb_tok_text *o, const char *s, size_t n, struct lb_err *err)
{
    if (tok_text_reserve(o, o->n + n, err)) return LB_E_OOM;
    if (n) memcpy(o->s + o->n, s, n);
    o->n += n;
    o->s[o->n] = 0;
    return 0;
}

int tok_replace_all(const struct tok_re *re, const char *content, size_t n_content, struct lb_tok_text *io,
                    struct lb_tok_text *tmp, struct tok_re_scratch *rs, struct lb_err *err)
{
    size_t pos = 0, prev = 0, ms, me;
    int any = 0;
    tmp->n = 0;
    while (pos <= io->n) {
        int r = tok_re_next(re, rs, io->s, io->n, pos, &ms, &me, err);
        if (r < 0) return r;
        if (r == 0) break;
        any = 1;
        if (append(tmp, io->s + prev, ms - prev, err) || append(tmp, content, n_content, err)) return LB_E_OOM;
        prev = me;
        if (me == ms) { /* empty match: JS replaceAll steps one character */
            if (me >= io->n) break;
            pos = me + (size_t)utf8_len((uint8_t)io->s[me]);
        } else {
            pos = me;
        }
    }
    if (!any) return 0;
    if (append(tmp, io->s + prev, io->n - prev, err)) return LB_E_OOM;
    struct lb_tok_text sw = *io;
    *io = *tmp;
    *tmp = sw;
    return 0;
}

int tok_normalize(const struct lb_tok *t, const char *s, size_t n, struct lb_tok_text *out,
                  struct lb_tok_text *tmp, struct tok_re_scratch *rs, struct lb_err *err)
{
    out->n = 0;
    if (append(out, s, n, err)) return LB_E_OOM;
    for (int k = 0; k < t->n_norms; k++) {
        const struct tok_norm *nm = &t->norms[k];
        if (nm->kind == TOK_NORM_PREPEND) {
            if (out->n == 0) continue;
            if (tok_text_reserve(out, out->n + nm->n_str, err)) return LB_E_OOM;
            memmove(out->s + nm->n_str, out->s, out->n + 1);
            memcpy(out->s, nm->str, nm->n_str);
            out->n += nm->n_str;
        } else if (nm->kind == TOK_NORM_REPLACE) {
            int rc = tok_replace_all(&nm->re, nm->str, nm->n_str, out, tmp, rs, err);
            if (rc) return rc;
        } else { /* Unicode normalization forms */
            /* Every code point below U+0300 is NFC-stable (a starter that never composes
             * with what precedes it): such text is its own NFC. Other forms: ASCII only. */
            uint8_t limit = (nm->utf8proc_opts & UTF8PROC_COMPOSE) && !(nm->utf8proc_opts & UTF8PROC_COMPAT) ? 0xCC : 0x80;
            int trivial = 1;
            for (size_t i = 0; i < out->n; i++)
                if ((uint8_t)out->s[i] >= limit) { trivial = 0; break; }
            if (trivial) continue;
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)out->s, (utf8proc_ssize_t)out->n, &dst,
                                              (utf8proc_option_t)nm->utf8proc_opts);
            if (r < 0) {
                free(dst);
                return lb_err_set(err, r == UTF8PROC_ERROR_NOMEM ? LB_E_OOM : LB_E_INTERNAL,
                                  "Unicode normalization failed: %s", utf8proc_errmsg(r));
            }
            out->n = 0;
            int rc = append(out, (const char *)dst, (size_t)r, err);
            free(dst);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- added tokens */

static int push_seg(struct enc *e, struct segvec *v, size_t s, size_t en, int32_t added)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        struct seg *p = realloc(v->v, cap * sizeof *p);
        if (!p) return lb_err_set(e->err, LB_E_OOM, "out of memory");
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = (struct seg){s, en, added};
    return 0;
}

/* Longest token starting at s[i]; returns its added index (and *end) or -1. */
static int32_t trie_longest(const struct tok_trie *tr, const uint8_t *s, size_t n, size_t i, size_t *end)
{
    int32_t best = -1;
    int32_t node = tr->root_child[s[i]];
    size_t j = i + 1;
    while (node >= 0) {
        if (tr->nodes[node].added >= 0) {
            best = tr->nodes[node].added;
            *end = j;
        }
        if (j >= n) break;
        int32_t c = tr->nodes[node].child;
        while (c >= 0 && tr->nodes[c].byte != s[j]) c = tr->nodes[c].sibling;
        node = c;
        j++;
    }
    return best;
}

/* JavaScript's String.prototype.trim set (the reference trims with it). */
static int is_js_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

static int is_word_cp(uint32_t c)
{
    if (c == '_') return 1;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

static uint32_t last_cp(const uint8_t *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    int len;
    return tok_utf8_get(s + i, &len);
}

/* Cuts text s[0..n) at added tokens of trie tr into v. */
static int split_added(struct enc *e, const struct tok_trie *tr, const char *str, size_t n, struct segvec *v)
{
    const struct lb_tok *t = e->t;
    const uint8_t *s = (const uint8_t *)str;
    v->n = 0;
    size_t prev = 0, i = 0;
    if (!tr->empty) {
        while (i < n) {
            if (!tr->first[s[i]]) { i++; continue; }
            size_t end = 0;
            int32_t k = trie_longest(tr, s, n, i, &end);
            if (k < 0) { i++; continue; }
            const struct tok_added *ad = &t->added[k];
            if (ad->single_word) {
                int len;
                int ok = (i == 0 || !is_word_cp(last_cp(s, i))) && (end == n || !is_word_cp(tok_utf8_get(s + end, &len)));
                if (!ok) { i = end; continue; }
            }
            if (i > prev && push_seg(e, v, prev, i, -1)) return LB_E_OOM;
            if (push_seg(e, v, i, end, k)) return LB_E_OOM;
            prev = i = end;
        }
    }
    if (prev < n && push_seg(e, v, prev, n, -1)) return LB_E_OOM;
    /* lstrip / rstrip eat the whitespace next to the token */
    for (size_t j = 0; j < v->n; j++) {
        if (v->v[j].added < 0) continue;
        const struct tok_added *ad = &t->added[v->v[j].added];
        if (ad->lstrip && j > 0 && v->v[j - 1].added < 0) {
            struct seg *g = &v->v[j - 1];
            while (g->e > g->s) {
                size_t k = g->e - 1;
                while (k > g->s && (s[k] & 0xC0) == 0x80) k--;
                int len;
                if (!is_js_space(tok_utf8_get(s + k, &len))) break;
                g->e = k;
            }
        }
        if (ad->rstrip && j + 1 < v->n && v->v[j + 1].added < 0) {
            struct seg *g = &v->v[j + 1];
            while (g->s < g->e) {
                int len;
                if (!is_js_space(tok_utf8_get(s + g->s, &len))) break;
                g->s += (size_t)len;
            }
        }
    }
    return 0;
}

/* A piece of text between added tokens, after normalization. */
static int encode_piece(struct enc *e, const char *s, size_t n)
{
    const struct lb_tok *t = e->t;
    if (n == 0) return 0;
    if (t->n_added) { /* the reference treats a piece equal to an added token as that token */
        int32_t k = tok_map_get(&t->added_map, s, n);
        if (k >= 0) return push_id(e, t->added[k].id);
    }
    e->last_unk = 0;
    return pre(e, 0, s, n);
}

static int encode_text(struct enc *e, const char *text, size_t n)
{
    const struct lb_tok *t = e->t;
    int rc = split_added(e, &t->trie_raw, text, n, &e->seg_raw);
    if (rc) return rc;
    for (size_t i = 0; i < e->seg_raw.n; i++) {
        struct seg g = e->seg_raw.v[i];
        e->first_section = i == 0;
        if (g.added >= 0) {
            if ((rc = push_id(e, t->added[g.added].id))) return rc;
            continue;
        }
        const char *s = text + g.s;
        size_t len = g.e - g.s;
        if (len == 0) continue;
        if (t->n_added) {
            int32_t k = tok_map_get(&t->added_map, s, len);
            if (k >= 0) {
                if ((rc = push_id(e, t->added[k].id))) return rc;
                continue;
            }
        }
        if (t->has_normalizer) {
            if ((rc = tok_normalize(t, s, len, &e->norm, &e->tmp, &e->rs, e->err))) return rc;
            s = e->norm.s;
            len = e->norm.n;
            if (len == 0) continue;
        }
        if (t->trie_norm.empty) {
            if ((rc = encode_piece(e, s, len))) return rc;
            continue;
        }
        if ((rc = split_added(e, &t->trie_norm, s, len, &e->seg_norm))) return rc;
        for (size_t j = 0; j < e->seg_norm.n; j++) {
            struct seg h = e->seg_norm.v[j];
            rc = h.added >= 0 ? push_id(e, t->added[h.added].id) : encode_piece(e, s + h.s, h.e - h.s);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Scratch lives per thread between calls: the word cache pays off across calls (prompts
 * share most of their words) and buffers are reused. A tokenizer's generation number keys
 * the cache, so a thread moving to another tokenizer starts it afresh. Buffers that a huge
 * input grew are released at the end of that call. */
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static _Thread_local struct enc *tls_enc; /* also keeps the block reachable for leak checkers */

static void enc_scratch_free(struct enc *e)
{
    tok_re_scratch_free(&e->rs);
    free(e->seg_raw.v);
    free(e->seg_norm.v);
    lb_tok_text_free(&e->norm);
    lb_tok_text_free(&e->tmp);
    for (int i = 0; i < TOK_MAX_PRES; i++) {
        lb_tok_text_free(&e->pre_buf[i]);
        free(e->spans[i].v);
    }
    free(e->sym);
    free(e->heap);
    cache_free(&e->cache);
    memset(e, 0, sizeof *e);
}

static void enc_trim(struct enc *e)
{
    const size_t big = (size_t)1 << 20; /* bytes */
    if (e->sym_cap * sizeof *e->sym > big) { free(e->sym); e->sym = NULL; e->sym_cap = 0; }
    if (e->heap_cap * sizeof *e->heap > big) { free(e->heap); e->heap = NULL; e->heap_cap = 0; }
    if (e->norm.cap > big) lb_tok_text_free(&e->norm);
    if (e->tmp.cap > big) lb_tok_text_free(&e->tmp);
    if (e->seg_raw.cap * sizeof(struct seg) > big) { free(e->seg_raw.v); memset(&e->seg_raw, 0, sizeof e->seg_raw); }
    if (e->seg_norm.cap * sizeof(struct seg) > big) { free(e->seg_norm.v); memset(&e->seg_norm, 0, sizeof e->seg_norm); }
    for (int i = 0; i < TOK_MAX_PRES; i++) {
        if (e->pre_buf[i].cap > big) lb_tok_text_free(&e->pre_buf[i]);
        if (e->spans[i].cap * sizeof(struct span) > big) { free(e->spans[i].v); memset(&e->spans[i], 0, sizeof e->spans[i]); }
    }
    if (e->rs.stack) { /* a JIT stack was needed for a huge piece */
        pcre2_jit_stack_free(e->rs.stack);
        e->rs.stack = NULL;
        e->rs.stack_bytes = 0;
        pcre2_match_context_free(e->rs.mctx);
        e->rs.mctx = NULL;
    }
}

static void tls_destroy(void *p)
{
    struct enc *e = p;
    enc_scratch_free(e);
    free(e);
    tls_enc = NULL;
}

static void tls_make_key(void) { pthread_key_create(&tls_key, tls_destroy); }

static struct enc *enc_get(void)
{
    if (tls_enc) return tls_enc;
    pthread_once(&tls_once, tls_make_key);
    struct enc *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    if (pthread_setspecific(tls_key, e)) {
        free(e);
        return NULL;
    }
    tls_enc = e;
    return e;
}

int lb_tok_encode(const struct lb_tok *t, const char *text, size_t n_text, int flags, struct lb_tok_ids *out,
                  struct lb_err *err)
{
    out->n = 0;
    size_t bad = tok_utf8_check((const uint8_t *)text, n_text);
    if (bad != n_text) return lb_err_set(err, LB_E_INPUT, "text is not valid UTF-8 (byte %zu)", bad);
    struct enc *ep = enc_get();
    if (!ep) return lb_err_set(err, LB_E_OOM, "out of memory (tokenizer scratch)");
    struct enc *e = ep;
    e->t = t;
    e->out = out;
    e->err = err;
    e->last_unk = 0;
    if (e->cache_gen != t->gen) {
        if (e->cache.slots) {
            memset(e->cache.slots, 0, (size_t)(e->cache.mask + 1) * sizeof *e->cache.slots);
            e->cache.n = 0;
            e->cache.arena_n = 0;
        }
        e->cache_gen = t->gen;
    }
    e->use_cache = e->cache.slots || cache_init(&e->cache) == 0;
    int rc = 0;
    if (flags & LB_TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_tpl_pre && !rc; i++) rc = push_id(e, t->tpl_pre[i]);
    if (!rc) rc = encode_text(e, text, n_text);
    if (flags & LB_TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_tpl_post && !rc; i++) rc = push_id(e, t->tpl_post[i]);
    if (!rc && (flags & LB_TOK_ADD_SPECIAL) && (flags & LB_TOK_CONFIG_BOS) && t->config_add_bos == 1 &&
        t->bos_id >= 0 && (out->n == 0 || out->ids[0] != t->bos_id)) {
        rc = push_id(e, 0);
        if (!rc) {
            memmove(out->ids + 1, out->ids, (out->n - 1) * sizeof *out->ids);
            out->ids[0] = t->bos_id;
        }
    }
    enc_trim(e);
    e->t = NULL;
    e->out = NULL;
    e->err = NULL;
    if (rc) out->n = 0;
    return rc;
}
