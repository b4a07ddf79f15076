/* tok_int.h — internals shared by tok.c (loading), tok_re.c (regexes), tok_enc.c
 * (encoding) and tok_dec.c (decoding). Not a public contract: only tok_*.c include it.
 *
 * Representation, chosen so that encoding does no string building on its hot path:
 * - BPE runs on ids. A word is a byte string; its first symbols are its bytes
 *   (byte-level models) or its code points (SentencePiece-style models), each looked up
 *   once; merges are a hash from (left id, right id) to (rank, merged id).
 * - For byte-level models the string -> id map is keyed by the token's raw bytes (the
 *   inverse of the GPT-2 byte-to-char table applied to the vocab string), so words from
 *   the pre-tokenizer are looked up without mapping them to "Ġ"-style strings first.
 * - Decoding pieces (what the decoder chain turns each id into, before the final UTF-8
 *   repair and Strip) are computed once at load.
 */
#ifndef LB_TOK_INT_H
#define LB_TOK_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdint.h>

#include "tok.h"

/* ---------------------------------------------------------------- hash maps */

/* String -> int32. Keys are copied into an owned blob. Open addressing, linear probe. */
struct tok_map {
    struct tok_map_slot {
        uint32_t hash; /* 0 = empty (real hashes are forced non-zero) */
        uint32_t len;
        uint64_t off; /* into blob */
        int32_t val;
    } *slots;         /* owned; [mask + 1] */
    uint32_t mask;
    uint32_t n;
    char *blob; /* owned; [blob_cap] */
    size_t blob_n, blob_cap;
};
uint32_t tok_hash(const void *p, size_t n);
int tok_map_init(struct tok_map *m, uint32_t n_expect);
void tok_map_free(struct tok_map *m);
/* Inserts or overwrites. Returns 0 or LB_E_OOM. */
int tok_map_put(struct tok_map *m, const char *k, size_t n, int32_t val);
/* Returns the value, or -1 when absent (values stored are never negative). */
int32_t tok_map_get(const struct tok_map *m, const char *k, size_t n);

/* (left id, right id) -> (rank, merged id). */
struct tok_pairs {
    struct tok_pair_slot {
        uint64_t key; /* ((uint64_t)left << 32) | right; UINT64_MAX = empty */
        int32_t rank;
        int32_t merged;
    } *slots;         /* owned; [mask + 1] */
    uint64_t mask;
};
static inline const struct tok_pair_slot *tok_pairs_get(const struct tok_pairs *p, int32_t a,
                                                        int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    for (uint64_t i = h & p->mask;; i = (i + 1) & p->mask) {
        const struct tok_pair_slot *s = &p->slots[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

/* ---------------------------------------------------------------- regexes */

/* A compiled Oniguruma-syntax pattern (rewritten for PCRE2), or a literal string. */
struct tok_re {
    pcre2_code *code; /* owned; JIT-compiled when the platform allows; NULL for a literal */
    int jit;
    char *lit;        /* owned: the literal, when code is NULL */
    size_t n_lit;
};
/* Compiles an Oniguruma pattern (as tokenizer.json's {"Regex": ...}). `what` names the
 * component for messages. */
int tok_re_compile(struct tok_re *re, const char *pat, size_t n_pat, const char *what,
                   struct lb_err *err);
/* Compiles a literal (as {"String": ...}). */
int tok_re_compile_literal(struct tok_re *re, const char *lit, size_t n_lit, const char *what,
                           struct lb_err *err);
void tok_re_free(struct tok_re *re);

/* Per-call match state (match data and, for very long subjects, a bigger JIT stack). */
struct tok_re_scratch {
    pcre2_match_data *md;      /* owned */
    pcre2_match_context *mctx; /* owned, NULL until needed */
    pcre2_jit_stack *stack;    /* owned, NULL until needed */
    size_t stack_bytes;
};
void tok_re_scratch_free(struct tok_re_scratch *s);
/* Finds the next match in subj[0..n) starting at `start`, JS/Oniguruma-style (an empty
 * match is returned as such; the caller steps past it). Returns 1 and sets [*ms, *me) on a
 * match, 0 when there is none, or a negative lb_status with err set (never treats an
 * engine error as "no match"). */
int tok_re_next(const struct tok_re *re, struct tok_re_scratch *s, const char *subj, size_t n,
                size_t start, size_t *ms, size_t *me, struct lb_err *err);

/* ---------------------------------------------------------------- components */

enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_UNICODE };
struct tok_norm {
    enum tok_norm_kind kind;
    char *str;       /* owned: Prepend's text or Replace's content */
    size_t n_str;
    struct tok_re re; /* Replace's pattern (String or Regex) */
    int utf8proc_opts; /* TOK_NORM_UNICODE: utf8proc options (NFC, NFKC, ...) */
};

enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};
enum tok_pre_kind { TOK_PRE_SPLIT, TOK_PRE_PREFIX_SPACE, TOK_PRE_METASPACE };
struct tok_pre {
    enum tok_pre_kind kind;
    struct tok_re re;                  /* TOK_PRE_SPLIT */
    enum tok_split_behavior behavior;
    int invert;
    char *repl;                        /* owned; TOK_PRE_METASPACE: the replacement of " " */
    size_t n_repl;
    int prepend;                       /* TOK_PRE_METASPACE: 0 never, 1 first section, 2 always */
};

struct tok_added {
    char *content; /* owned */
    size_t n_content;
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
};

/* Byte trie over added-token contents, for leftmost-longest matching. */
struct tok_trie {
    struct tok_trie_node {
        int32_t child;   /* first child, -1 none */
        int32_t sibling; /* next sibling, -1 none */
        int32_t added;   /* index into lb_tok.added when a token ends here, else -1 */
        uint8_t byte;
    } *nodes;            /* owned; [n_nodes]; node 0 is the root */
    int32_t n_nodes, cap;
    int32_t root_child[256]; /* direct table for the root's children */
    uint8_t first[256];      /* 1 when some token starts with that byte */
    int empty;               /* no tokens at all */
};

/* ---------------------------------------------------------------- the tokenizer */

struct lb_tok {
    uint64_t gen;          /* unique per loaded tokenizer (keys per-thread word caches) */
    int32_t n_vocab;       /* highest id + 1 */
    /* tokenizer.json strings per id */
    char *piece_blob;      /* owned */
    uint64_t *piece_off;   /* owned; [n_vocab + 1]; a hole has off[i] == off[i+1] */
    uint8_t *has_piece;    /* owned; [n_vocab] */
    uint8_t *is_special;   /* owned; [n_vocab] */
    struct tok_map piece_map; /* tokenizer.json string -> id (vocab, then added tokens) */

    /* normalizer */
    struct tok_norm *norms; /* owned; [n_norms] */
    int n_norms;
    int has_normalizer;     /* a normalizer is configured (even an empty Sequence) */

    /* added tokens */
    struct tok_added *added; /* owned; [n_added] */
    int n_added;
    struct tok_trie trie_raw;  /* tokens matched before normalization */
    struct tok_trie trie_norm; /* normalized=true tokens, matched after normalization */
    struct tok_map added_map;  /* content (and normalized content) -> index into added */

    /* pre-tokenizer */
    struct tok_pre *pres; /* owned; [n_pres] */
    int n_pres;
    int byte_level; /* ByteLevel ends the pre-tokenizer: words are raw bytes */

    /* BPE model */
    struct tok_map word_map; /* word-space bytes -> id (see file top) */
    struct tok_pairs merges;
    int32_t sym_id[256]; /* byte-level: id of each byte; SentencePiece: id of each ASCII char */
    int32_t byte_fb_id[256]; /* byte_fallback: id of "<0xXX>", -1 when missing */
    int32_t unk_id;          /* -1 when none */
    int ignore_merges, byte_fallback, fuse_unk;

    /* post-processor (TemplateProcessing "single") */
    int32_t *tpl_pre, *tpl_post; /* owned; ids before / after $A */
    int n_tpl_pre, n_tpl_post;

    /* decoder */
    char *dec_blob;     /* owned: decoded bytes of each id */
    uint64_t *dec_off;  /* owned; [n_vocab + 1] */
    int dec_join_space; /* no decoder: tokens joined by " " */
    uint8_t *dec_meta_strip; /* owned; [n_vocab] or NULL: Metaspace decoder, the first token's
                              * piece starts with a space to drop */
    int strip_start, strip_stop; /* Strip after Fuse: leading / trailing counts */
    uint32_t strip_cp;           /* the character Strip removes */

    /* config */
    int32_t bos_id, eos_id;
    int config_add_bos;
};

/* tok_enc.c / tok_dec.c helpers used elsewhere */
int tok_ids_reserve(struct lb_tok_ids *v, size_t n, struct lb_err *err);
int tok_text_reserve(struct lb_tok_text *v, size_t n, struct lb_err *err);
/* Validates UTF-8; returns the offset of the first bad byte, or n when valid. */
size_t tok_utf8_check(const uint8_t *s, size_t n);
/* Decodes one code point of valid UTF-8 at s; *len gets its byte count. */
static inline uint32_t tok_utf8_get(const uint8_t *s, int *len)
{
    uint8_t c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) {
        *len = 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}
static inline int tok_utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
/* The GPT-2 byte -> char table, inverted (valid once a tokenizer was loaded). */
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not one of the 256 */
/* Applies the normalizer chain to s[0..n) (valid UTF-8), result in out (reset first);
 * tmp and rs are the caller's scratch. */
int tok_normalize(const struct lb_tok *t, const char *s, size_t n, struct lb_tok_text *out,
                  struct lb_tok_text *tmp, struct tok_re_scratch *rs, struct lb_err *err);
#define TOK_MAX_PRES 16 /* pre-tokenizer steps */
/* Replaces every match of re in io (JS replaceAll semantics; empty matches step one
 * character) with content; tmp and rs are scratch. */
int tok_replace_all(const struct tok_re *re, const char *content, size_t n_content, struct lb_tok_text *io,
                    struct lb_tok_text *tmp, struct tok_re_scratch *rs, struct lb_err *err);
/* Fails with LB_E_UNSUPPORTED naming the first key of o not in the NULL-ended list. */
int tok_check_keys(json_t *o, const char *where, const char *const *allowed, struct lb_err *err);
/* Builds the per-id decoder pieces; called by the loader once everything else is set. */
int tok_dec_build(struct lb_tok *t, json_t *decoder, struct lb_err *err);

#endif
