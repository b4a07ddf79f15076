/* tok_re.c — tokenizer.json patterns: Oniguruma syntax rewritten for PCRE2 (+ JIT), and
 * literal patterns.
 *
 * Hugging Face tokenizers compile Split / Replace patterns with Oniguruma (Ruby syntax);
 * the reference we test against (@huggingface/tokenizers) rewrites them for JavaScript.
 * PCRE2 with PCRE2_UTF | PCRE2_UCP agrees with both on everything these patterns use once
 * a few constructs are rewritten (see FACTS.md):
 *   \s -> [\t-\r\x{85}\p{Z}] (inside a class: \t-\r\x{85}\p{Z}); \S -> its negation.
 *       (Oniguruma's \s; PCRE2's own \s also holds U+180E.)
 *   \h \H -> hex digit classes (PCRE2's \h means horizontal space); \v -> \x{0B};
 *   \uHHHH -> \x{HHHH}; {,n} -> {0,n}.
 *   (?i:...) -> (?:...) with each ASCII letter as [xX]: the reference folds ASCII only
 *       (so "'ſ" is not the contraction "'s"); we match the reference.
 *   ^ $ are line anchors (PCRE2_MULTILINE; newline = LF), as in Ruby syntax.
 * Anything whose meaning differs between the engines and that we do not rewrite (\w \b
 * \G \K \R \X, nested classes, class intersection, inline flags other than (?i:, ...)
 * is refused at load with LB_E_UNSUPPORTED, never passed through.
 *
 * Matching: tok_re_next never reports an engine error as "no match". The default match
 * limit is raised for long subjects, and the JIT stack grows (to 256 MB) when needed;
 * only if the engine still gives up does the caller get an error naming the offset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

struct buf {
    char *p;
    size_t n, cap;
    int oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_alnum(char c) { return is_alpha(c) || (c >= '0' && c <= '9'); }

#define WS_CLASS_BODY "\\t-\\r\\x{85}\\p{Z}"

/* Rewrites pattern p[0..n) (valid UTF-8) into b. Returns 0, or LB_E_UNSUPPORTED with err. */
static int rewrite(const char *p, size_t n, struct buf *b, const char *what, struct lb_err *err)
{
    /* group stack: the ASCII-fold state to restore at ')' */
    unsigned char fold_stack[256];
    int depth = 0, fold = 0, in_class = 0;
    size_t class_first = 0; /* index of the first item of the current class */
    for (size_t i = 0; i < n;) {
        char c = p[i];
        if (c == '\\') {
            if (i + 1 >= n)
                return lb_err_set(err, LB_E_INPUT, "%s: regex ends with a lone backslash", what);
            char e = p[i + 1];
            /* \p{..} \P{..} \x{..}: copied whole */
            if ((e == 'p' || e == 'P' || e == 'x') && i + 2 < n && p[i + 2] == '{') {
                const char *close = memchr(p + i + 3, '}', n - i - 3);
                if (!close)
                    return lb_err_set(err, LB_E_INPUT, "%s: regex: unterminated \\%c{", what, e);
                size_t len = (size_t)(close - (p + i)) + 1;
                put(b, p + i, len);
                i += len;
                continue;
            }
            if (e == 'x') { /* \xHH */
                size_t k = i + 2;
                while (k < n && k < i + 4 && is_hex(p[k])) k++;
                if (k == i + 2) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: regex: \\x without hex digits", what);
                put(b, p + i, k - i);
                i = k;
                continue;
            }
            if (e == 'u') { /* \uHHHH */
                if (i + 6 > n || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) || !is_hex(p[i + 4]) ||
                    !is_hex(p[i + 5]))
                    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: regex: malformed \\u escape", what);
                puts_(b, "\\x{");
                put(b, p + i + 2, 4);
                puts_(b, "}");
                i += 6;
                continue;
            }
            const char *rep = NULL;
            switch (e) {
            case 's': rep = in_class ? WS_CLASS_BODY : "[" WS_CLASS_BODY "]"; break;
            case 'S':
                if (in_class)
                    return lb_err_set(err, LB_E_UNSUPPORTED,
                                      "%s: regex: \\S inside a character class is not supported", what);
                rep = "[^" WS_CLASS_BODY "]";
                break;
            case 'h': rep = in_class ? "0-9A-Fa-f" : "[0-9A-Fa-f]"; break;
            case 'H':
                if (in_class)
                    return lb_err_set(err, LB_E_UNSUPPORTED,
                                      "%s: regex: \\H inside a character class is not supported", what);
                rep = "[^0-9A-Fa-f]";
                break;
            case 'd': rep = "\\p{Nd}"; break;
            case 'D': rep = "\\P{Nd}"; break;
            case 'v': rep = "\\x{0B}"; break;
            case 'r': case 'n': case 't': case 'f': case 'a': case 'e':
                rep = NULL;
                put(b, p + i, 2);
                break;
            case 'A': case 'z': case 'Z':
                if (in_class)
                    return lb_err_set(err, LB_E_UNSUPPORTED, "%s: regex: \\%c inside a class", what, e);
                put(b, p + i, 2);
                break;
            default:
                if (is_alnum(e))
                    return lb_err_set(err, LB_E_UNSUPPORTED,
                                      "%s: regex escape \\%c is not supported (its meaning differs between "
                                      "Oniguruma and PCRE2)", what, e);
                if ((unsigned char)e < 0x80) {
                    put(b, p + i, 2); /* escaped punctuation: literal in both */
                } else {
                    /* escaped non-ASCII character: the character itself */
                    put(b, p + i + 1, 1);
                    i += 2;
                    while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80) put(b, p + i++, 1);
                    continue;
                }
            }
            if (rep) puts_(b, rep);
            i += 2;
            continue;
        }
        if (in_class) {
            if (c == ']' && i != class_first) {
                in_class = 0;
                put(b, "]", 1);
                i++;
                continue;
            }
            if (c == '[')
                return lb_err_set(err, LB_E_UNSUPPORTED,
                                  "%s: regex: nested character class or POSIX bracket is not supported", what);
            if (c == '&' && i + 1 < n && p[i + 1] == '&')
                return lb_err_set(err, LB_E_UNSUPPORTED,
                                  "%s: regex: character class intersection (&&) is not supported", what);
            put(b, p + i, 1);
            i++;
            continue;
        }
        switch (c) {
        case '[':
            if (fold)
                return lb_err_set(err, LB_E_UNSUPPORTED,
                                  "%s: regex: character class inside (?i:...) is not supported", what);
            in_class = 1;
            put(b, "[", 1);
            i++;
            if (i < n && p[i] == '^') { put(b, "^", 1); i++; }
            class_first = i;
            continue;
        case '(':
            if (depth == (int)sizeof fold_stack)
                return lb_err_set(err, LB_E_UNSUPPORTED, "%s: regex: groups nested too deep", what);
            fold_stack[depth++] = (unsigned char)fold;
            if (i + 1 < n && p[i + 1] == '?') {
                if (i + 3 < n && p[i + 2] == 'i' && p[i + 3] == ':') {
                    fold = 1;
                    puts_(b, "(?:");
                    i += 4;
                    continue;
                }
                char g = i + 2 < n ? p[i + 2] : 0;
                int ok = g == ':' || g == '=' || g == '!' || g == '>' ||
                         (g == '<' && i + 3 < n && (p[i + 3] == '=' || p[i + 3] == '!' || is_alpha(p[i + 3])));
                if (!ok)
                    return lb_err_set(err, LB_E_UNSUPPORTED,
                                      "%s: regex group syntax \"(?%c\" is not supported", what, g ? g : ' ');
                put(b, p + i, 2);
                i += 2;
                continue;
            }
            put(b, "(", 1);
            i++;
            continue;
        case ')':
            if (depth > 0) fold = fold_stack[--depth];
            put(b, ")", 1);
            i++;
            continue;
        case '{': {
            /* {,n} -> {0,n}; {n,m}+ / {n,m}* mean "repeat the repeat" in Ruby syntax but are
             * possessive / an error in PCRE2: refuse */
            size_t k = i + 1;
            while (k < n && ((p[k] >= '0' && p[k] <= '9') || p[k] == ',')) k++;
            if (k < n && p[k] == '}' && k > i + 1) {
                if (p[i + 1] == ',') {
                    puts_(b, "{0");
                    put(b, p + i + 1, k + 1 - (i + 1));
                } else {
                    put(b, p + i, k + 1 - i);
                }
                if (k + 1 < n && (p[k + 1] == '+' || p[k + 1] == '*'))
                    return lb_err_set(err, LB_E_UNSUPPORTED,
                                      "%s: regex: a quantifier after {n,m} is not supported", what);
                i = k + 1;
                continue;
            }
            puts_(b, "\\{");
            i++;
            continue;
        }
        default:
            if (fold && is_alpha(c)) {
                char cls[4] = {'[', (char)(c | 0x20), (char)(c & ~0x20), ']'};
                put(b, cls, 4);
                i++;
                continue;
            }
            put(b, p + i, 1);
            i++;
        }
    }
    if (in_class) return lb_err_set(err, LB_E_INPUT, "%s: regex: unterminated character class", what);
    if (b->oom) return lb_err_set(err, LB_E_OOM, "%s: out of memory rewriting a regex", what);
    return 0;
}

static int compile(struct tok_re *re, const char *pat, size_t n, const char *what, const char *orig,
                   struct lb_err *err)
{
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return lb_err_set(err, LB_E_OOM, "%s: out of memory", what);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int ec = 0;
    PCRE2_SIZE eo = 0;
    re->code = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: regex %s does not compile (as PCRE2 %.*s): %s at offset %zu",
                          what, orig, (int)(n > 400 ? 400 : n), pat, (const char *)msg, (size_t)eo);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

int tok_re_compile(struct tok_re *re, const char *pat, size_t n_pat, const char *what, struct lb_err *err)
{
    memset(re, 0, sizeof *re);
    if (tok_utf8_check((const uint8_t *)pat, n_pat) != n_pat)
        return lb_err_set(err, LB_E_INPUT, "%s: regex is not valid UTF-8", what);
    struct buf b = {0};
    int rc = rewrite(pat, n_pat, &b, what, err);
    if (rc == 0) {
        char orig[96];
        snprintf(orig, sizeof orig, "\"%.*s%s\"", (int)(n_pat > 80 ? 80 : n_pat), pat, n_pat > 80 ? "..." : "");
        rc = compile(re, b.p ? b.p : "", b.n, what, orig, err);
    }
    free(b.p);
    return rc;
}

int tok_re_compile_literal(struct tok_re *re, const char *lit, size_t n_lit, const char *what,
                           struct lb_err *err)
{
    memset(re, 0, sizeof *re);
    if (tok_utf8_check((const uint8_t *)lit, n_lit) != n_lit)
        return lb_err_set(err, LB_E_INPUT, "%s: pattern is not valid UTF-8", what);
    re->lit = malloc(n_lit + 1);
    if (!re->lit) return lb_err_set(err, LB_E_OOM, "%s: out of memory", what);
    memcpy(re->lit, lit, n_lit);
    re->lit[n_lit] = 0;
    re->n_lit = n_lit;
    return 0;
}

void tok_re_free(struct tok_re *re)
{
    if (!re) return;
    if (re->code) pcre2_code_free(re->code);
    free(re->lit);
    memset(re, 0, sizeof *re);
}

void tok_re_scratch_free(struct tok_re_scratch *s)
{
    if (!s) return;
    if (s->md) pcre2_match_data_free(s->md);
    if (s->mctx) pcre2_match_context_free(s->mctx);
    if (s->stack) pcre2_jit_stack_free(s->stack);
    memset(s, 0, sizeof *s);
}

static int grow_limits(struct tok_re_scratch *s, size_t n_subject)
{
    if (!s->mctx) {
        s->mctx = pcre2_match_context_create(NULL);
        if (!s->mctx) return -1;
    }
    /* Matching is linear in these patterns; allow generously more than the subject needs */
    uint64_t lim = (uint64_t)n_subject * 64 + 10000000;
    if (lim > 0xFFFFFFFFu) lim = 0xFFFFFFFFu;
    pcre2_set_match_limit(s->mctx, (uint32_t)lim);
    pcre2_set_depth_limit(s->mctx, (uint32_t)lim);
    pcre2_set_heap_limit(s->mctx, 4u * 1024 * 1024); /* KiB: 4 GiB */
    return 0;
}

int tok_re_next(const struct tok_re *re, struct tok_re_scratch *s, const char *subj, size_t n,
                size_t start, size_t *ms, size_t *me, struct lb_err *err)
{
    if (!re->code) { /* literal */
        if (re->n_lit == 0) { /* an empty literal matches (empty) everywhere */
            *ms = *me = start;
            return 1;
        }
        if (start >= n || n - start < re->n_lit) return 0;
        const char *hit = memmem(subj + start, n - start, re->lit, re->n_lit);
        if (!hit) return 0;
        *ms = (size_t)(hit - subj);
        *me = *ms + re->n_lit;
        return 1;
    }
    if (!s->md) {
        s->md = pcre2_match_data_create(1, NULL);
        if (!s->md) return lb_err_set(err, LB_E_OOM, "out of memory (regex match data)");
    }
    for (int attempt = 0;; attempt++) {
        int rc = re->jit ? pcre2_jit_match(re->code, (PCRE2_SPTR)subj, n, start, 0, s->md, s->mctx)
                         : pcre2_match(re->code, (PCRE2_SPTR)subj, n, start, PCRE2_NO_UTF_CHECK, s->md, s->mctx);
        if (rc >= 0) { /* 0: ovector too small for the groups; group 0 is still set */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            *ms = ov[0];
            *me = ov[1];
            if (*me < *ms) *me = *ms; /* \K tricks cannot occur (refused), but stay safe */
            return 1;
        }
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        int retry = 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
            size_t want = s->stack_bytes ? s->stack_bytes * 4 : (size_t)1 << 20;
            if (want <= ((size_t)256 << 20) && grow_limits(s, n) == 0) {
                if (s->stack) pcre2_jit_stack_free(s->stack);
                s->stack = pcre2_jit_stack_create(32768, want, NULL);
                s->stack_bytes = s->stack ? want : 0;
                if (s->stack) {
                    pcre2_jit_stack_assign(s->mctx, NULL, s->stack);
                    retry = 1;
                }
            }
        } else if (attempt < 2 && (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                                   rc == PCRE2_ERROR_HEAPLIMIT)) {
            retry = grow_limits(s, n) == 0;
        }
        if (retry) continue;
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return lb_err_set(err, rc == PCRE2_ERROR_NOMEMORY ? LB_E_OOM : LB_E_INPUT,
                          "pre-tokenizer regex gave up on a %zu-byte piece at byte %zu: PCRE2 error %d: %s", n,
                          start, rc, (const char *)msg);
    }
}
