/* tok_dec.c — ids -> text, whole or incrementally.
 *
 * The decoders we support are token-local up to a final join, so each id's bytes are
 * computed once at load ("decoder pieces"):
 *   ByteLevel      a token's chars mapped back through the GPT-2 byte table (added tokens,
 *                  and any token with a char outside the table, pass verbatim);
 *   Replace        applied to each token's string;
 *   ByteFallback   "<0xHH>" becomes the raw byte HH;
 *   Strip          per token before Fuse, or on the joined text after Fuse (kept for
 *                  decode time: strip_start / strip_stop);
 *   Metaspace      the replacement char becomes " " in each token; the first token fed
 *                  loses its leading space (dec_meta_strip);
 *   Fuse           the join itself; no decoder at all joins tokens with " ".
 * Decoding then concatenates pieces and repairs UTF-8 with the WHATWG decoder (one U+FFFD
 * per maximal invalid subpart), which gives the same text as the reference's per-run
 * TextDecoder: a run of raw bytes can only be followed by a whole character.
 * lb_tok_decode is the stream fed every id, so the two can never disagree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

enum dstep_kind { D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_BYTELEVEL, D_METASPACE };
struct dstep {
    enum dstep_kind kind;
    struct tok_re re; /* D_REPLACE */
    const char *content; /* D_REPLACE: borrowed from the JSON; D_METASPACE: the replacement */
    size_t n_content;
    uint32_t strip_cp; /* D_STRIP; 0xFFFFFFFF: never matches */
    int start, stop;
};

static int collect(json_t *o, const char *where, struct dstep *steps, int *n, struct lb_err *err)
{
    if (!json_is_object(o)) return lb_err_set(err, LB_E_INPUT, "%s: must be an object", where);
    json_t *ty = json_object_get(o, "type");
    const char *type = json_is_string(ty) ? json_string_value(ty) : "";
    int rc;
    if (!strcmp(type, "Sequence")) {
        static const char *const keys[] = {"type", "decoders", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *arr = json_object_get(o, "decoders");
        if (!json_is_array(arr)) return lb_err_set(err, LB_E_INPUT, "%s: \"decoders\" must be an array", where);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            char w[160];
            snprintf(w, sizeof w, "%s.decoders[%zu]", where, i);
            if ((rc = collect(x, w, steps, n, err))) return rc;
        }
        return 0;
    }
    if (*n == 16) return lb_err_set(err, LB_E_UNSUPPORTED, "%s: more than 16 decoders", where);
    struct dstep *d = &steps[*n];
    memset(d, 0, sizeof *d);
    if (!strcmp(type, "ByteLevel")) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        d->kind = D_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        static const char *const keys[] = {"type", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        d->kind = D_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        static const char *const keys[] = {"type", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        d->kind = D_FUSE;
    } else if (!strcmp(type, "Replace")) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *c = json_object_get(o, "content");
        if (c && !json_is_null(c) && !json_is_string(c))
            return lb_err_set(err, LB_E_INPUT, "%s (Replace): \"content\" must be a string", where);
        d->kind = D_REPLACE;
        d->content = json_is_string(c) ? json_string_value(c) : "";
        d->n_content = json_is_string(c) ? json_string_length(c) : 0;
        if (memchr(d->content, '$', d->n_content))
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s (Replace): content with '$' is not supported", where);
        json_t *pat = json_object_get(o, "pattern");
        json_t *v;
        if (json_is_object(pat) && (v = json_object_get(pat, "String")) && json_is_string(v))
            rc = tok_re_compile_literal(&d->re, json_string_value(v), json_string_length(v), where, err);
        else if (json_is_object(pat) && (v = json_object_get(pat, "Regex")) && json_is_string(v))
            rc = tok_re_compile(&d->re, json_string_value(v), json_string_length(v), where, err);
        else
            rc = lb_err_set(err, LB_E_UNSUPPORTED, "%s (Replace): pattern must be {\"String\"} or {\"Regex\"}", where);
        if (rc) return rc;
    } else if (!strcmp(type, "Metaspace")) {
        static const char *const keys[] = {"type", "replacement", "prepend_scheme", "split", "add_prefix_space",
                                           "str_rep", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *r = json_object_get(o, "replacement");
        if (r && !json_is_null(r) && (!json_is_string(r) || json_string_length(r) == 0))
            return lb_err_set(err, LB_E_INPUT, "%s (Metaspace): bad replacement", where);
        d->kind = D_METASPACE;
        d->content = json_is_string(r) ? json_string_value(r) : "\xe2\x96\x81";
        d->n_content = json_is_string(r) ? json_string_length(r) : 3;
        if ((rc = tok_re_compile_literal(&d->re, d->content, d->n_content, where, err))) return rc;
    } else if (!strcmp(type, "Strip")) {
        static const char *const keys[] = {"type", "content", "start", "stop", NULL};
        if ((rc = tok_check_keys(o, where, keys, err))) return rc;
        json_t *c = json_object_get(o, "content"), *a = json_object_get(o, "start"), *b = json_object_get(o, "stop");
        if (!json_is_string(c) || (a && !json_is_integer(a)) || (b && !json_is_integer(b)))
            return lb_err_set(err, LB_E_INPUT, "%s (Strip): needs a string content and integer start/stop", where);
        d->kind = D_STRIP;
        d->start = a ? (int)json_integer_value(a) : 0;
        d->stop = b ? (int)json_integer_value(b) : 0;
        if (d->start < 0 || d->stop < 0 || d->start > 64 || d->stop > 64)
            return lb_err_set(err, LB_E_UNSUPPORTED, "%s (Strip): start/stop outside [0, 64]", where);
        /* the reference compares single UTF-16 units: only a one-unit content ever matches */
        const uint8_t *cs = (const uint8_t *)json_string_value(c);
        size_t cn = json_string_length(c);
        int len = 0;
        uint32_t cp = cn ? tok_utf8_get(cs, &len) : 0;
        d->strip_cp = (cn && (size_t)len == cn && cp < 0x10000 && tok_utf8_check(cs, cn) == cn) ? cp : 0xFFFFFFFFu;
    } else {
        return lb_err_set(err, LB_E_UNSUPPORTED, "%s: decoder \"%s\" is not supported", where, *type ? type : "(no type)");
    }
    (*n)++;
    return 0;
}

/* Appends the piece of one token under the per-token steps. */
static int piece_of(const struct dstep *steps, int n_steps, const struct tok_map *contents,
                    const char *str, size_t n, struct lb_tok_text *out, struct lb_tok_text *tmp,
                    struct tok_re_scratch *rs, struct lb_err *err)
{
    out->n = 0;
    if (tok_text_reserve(out, n, err)) return LB_E_OOM;
    memcpy(out->s, str, n);
    out->n = n;
    for (int k = 0; k < n_steps; k++) {
        const struct dstep *d = &steps[k];
        switch (d->kind) {
        case D_REPLACE: {
            int rc = tok_replace_all(&d->re, d->content, d->n_content, out, tmp, rs, err);
            if (rc) return rc;
            break;
        }
        case D_STRIP: {
            if (d->strip_cp == 0xFFFFFFFFu) break;
            char c[4];
            size_t cl = (size_t)tok_utf8_put(d->strip_cp, c);
            size_t a = 0, b = out->n;
            for (int i = 0; i < d->start && b - a >= cl && !memcmp(out->s + a, c, cl); i++) a += cl;
            size_t b0 = out->n;
            for (int i = 0; i < d->stop && b0 >= cl && !memcmp(out->s + b0 - cl, c, cl); i++) b0 -= cl;
            b = b0 < a ? a : b0;
            memmove(out->s, out->s + a, b - a);
            out->n = b - a;
            break;
        }
        case D_BYTEFALLBACK:
            if (out->n == 6 && !memcmp(out->s, "<0x", 3) && out->s[5] == '>') {
                char h[3] = {out->s[3], out->s[4], 0};
                char *end;
                long v = strtol(h, &end, 16);
                if (end == h + 2 && h[0] != '+' && h[0] != '-' && h[0] != ' ') {
                    out->s[0] = (char)v;
                    out->n = 1;
                }
            }
            break;
        case D_BYTELEVEL: {
            if (tok_map_get(contents, out->s, out->n) >= 0) break; /* added token: verbatim */
            int ok = 1;
            for (size_t i = 0; i < out->n && ok;) {
                int len;
                ok = tok_cp_to_byte(tok_utf8_get((const uint8_t *)out->s + i, &len)) >= 0;
                i += (size_t)len;
            }
            if (!ok) break; /* a char outside the byte table: verbatim, as the Rust crate does */
            size_t w = 0;
            for (size_t i = 0; i < out->n;) {
                int len;
                out->s[w++] = (char)tok_cp_to_byte(tok_utf8_get((const uint8_t *)out->s + i, &len));
                i += (size_t)len;
            }
            out->n = w;
            break;
        }
        case D_METASPACE: {
            int rc = tok_replace_all(&d->re, " ", 1, out, tmp, rs, err);
            if (rc) return rc;
            break;
        }
        case D_FUSE: break;
        }
    }
    return 0;
}

int tok_dec_build(struct lb_tok *t, json_t *dec, struct lb_err *err)
{
    struct dstep steps[16];
    int n = 0, rc = 0;
    memset(steps, 0, sizeof steps);
    if (!dec || json_is_null(dec)) {
        t->dec_join_space = 1;
    } else {
        rc = collect(dec, "decoder", steps, &n, err);
    }
    /* per-token steps run up to the first Fuse; after it only one Strip is allowed */
    int n_tok = n;
    for (int i = 0; i < n && !rc; i++) {
        if (steps[i].kind == D_FUSE) {
            n_tok = i;
            for (int j = i + 1; j < n && !rc; j++) {
                if (steps[j].kind == D_STRIP && !(t->strip_start || t->strip_stop)) {
                    if (steps[j].strip_cp != 0xFFFFFFFFu) {
                        t->strip_start = steps[j].start;
                        t->strip_stop = steps[j].stop;
                        t->strip_cp = steps[j].strip_cp;
                    }
                } else if (steps[j].kind != D_FUSE) {
                    rc = lb_err_set(err, LB_E_UNSUPPORTED, "decoder: this decoder after Fuse is not supported "
                                                           "(only one Strip)");
                }
            }
            break;
        }
        if ((steps[i].kind == D_BYTEFALLBACK || steps[i].kind == D_BYTELEVEL || steps[i].kind == D_METASPACE) &&
            i + 1 < n && steps[i + 1].kind != D_FUSE)
            rc = lb_err_set(err, LB_E_UNSUPPORTED, "decoder: a decoder after %s (other than Fuse) is not supported",
                            steps[i].kind == D_BYTELEVEL ? "ByteLevel" : steps[i].kind == D_METASPACE ? "Metaspace"
                                                                                               : "ByteFallback");
        /* Metaspace drops the first token's leading space: kept per id for the stream */
        if (steps[i].kind == D_METASPACE && !t->dec_meta_strip) {
            t->dec_meta_strip = calloc((size_t)(uint32_t)t->n_vocab, 1);
            if (!t->dec_meta_strip) rc = lb_err_set(err, LB_E_OOM, "out of memory (decoder)");
        }
    }
    struct tok_map contents;
    memset(&contents, 0, sizeof contents);
    struct lb_tok_text piece = {0}, tmp = {0};
    struct tok_re_scratch rs = {0};
    if (!rc && tok_map_init(&contents, (uint32_t)t->n_added + 8)) rc = lb_err_set(err, LB_E_OOM, "out of memory");
    for (int i = 0; i < t->n_added && !rc; i++)
        if (tok_map_put(&contents, t->added[i].content, t->added[i].n_content, i))
            rc = lb_err_set(err, LB_E_OOM, "out of memory");
    size_t cap = 0, used = 0;
    if (!rc) {
        t->dec_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->dec_off);
        cap = t->piece_off[t->n_vocab] + 16;
        t->dec_blob = malloc(cap);
        if (!t->dec_off || !t->dec_blob) rc = lb_err_set(err, LB_E_OOM, "out of memory (decoder)");
    }
    for (int32_t id = 0; id < t->n_vocab && !rc; id++) {
        t->dec_off[id] = used;
        if (!t->has_piece[id]) continue;
        const char *s = t->piece_blob + t->piece_off[id];
        size_t sn = t->piece_off[id + 1] - t->piece_off[id];
        if ((rc = piece_of(steps, n_tok, &contents, s, sn, &piece, &tmp, &rs, err))) break;
        if (used + piece.n > cap) {
            while (used + piece.n > cap) cap *= 2;
            char *p = realloc(t->dec_blob, cap);
            if (!p) { rc = lb_err_set(err, LB_E_OOM, "out of memory (decoder)"); break; }
            t->dec_blob = p;
        }
        memcpy(t->dec_blob + used, piece.s, piece.n);
        used += piece.n;
        if (t->dec_meta_strip) t->dec_meta_strip[id] = piece.n > 0 && piece.s[0] == ' ';
    }
    if (!rc) t->dec_off[t->n_vocab] = used;
    for (int i = 0; i < n; i++) tok_re_free(&steps[i].re);
    tok_map_free(&contents);
    lb_tok_text_free(&piece);
    lb_tok_text_free(&tmp);
    tok_re_scratch_free(&rs);
    return rc;
}

/* ---------------------------------------------------------------- stream */

void lb_tok_stream_init(struct lb_tok_stream *s, const struct lb_tok *t, int flags)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->flags = flags;
    s->strip_left = t->strip_start;
    s->utf8_lo = 0x80;
    s->utf8_hi = 0xBF;
}

static int put_cp(struct lb_tok_text *out, uint32_t cp, struct lb_err *err)
{
    if (out->n + 4 >= out->cap && tok_text_reserve(out, out->n + 4, err)) return LB_E_OOM;
    out->n += (size_t)tok_utf8_put(cp, out->s + out->n);
    return 0;
}

static int emit_cp(struct lb_tok_stream *s, uint32_t cp, struct lb_tok_text *out, struct lb_err *err)
{
    const struct lb_tok *t = s->tok;
    if (s->strip_left > 0) {
        if (cp == t->strip_cp) {
            s->strip_left--;
            return 0;
        }
        s->strip_left = 0;
    }
    if (t->strip_stop > 0) {
        if (cp == t->strip_cp) {
            if (s->n_held < t->strip_stop) {
                s->n_held++;
                return 0;
            }
            return put_cp(out, cp, err); /* the oldest held one goes out; as many stay held */
        }
        for (; s->n_held > 0; s->n_held--)
            if (put_cp(out, t->strip_cp, err)) return LB_E_OOM;
    }
    return put_cp(out, cp, err);
}

/* WHATWG UTF-8 decoder, one byte at a time. */
static int feed_byte(struct lb_tok_stream *s, uint8_t b, struct lb_tok_text *out, struct lb_err *err)
{
    for (;;) {
        if (s->utf8_need == 0) {
            if (b < 0x80) return emit_cp(s, b, out, err);
            if (b >= 0xC2 && b <= 0xDF) { s->utf8_need = 1; s->utf8_cp = b & 0x1F; }
            else if (b >= 0xE0 && b <= 0xEF) {
                if (b == 0xE0) s->utf8_lo = 0xA0;
                if (b == 0xED) s->utf8_hi = 0x9F;
                s->utf8_need = 2;
                s->utf8_cp = b & 0x0F;
            } else if (b >= 0xF0 && b <= 0xF4) {
                if (b == 0xF0) s->utf8_lo = 0x90;
                if (b == 0xF4) s->utf8_hi = 0x8F;
                s->utf8_need = 3;
                s->utf8_cp = b & 0x07;
            } else {
                return emit_cp(s, 0xFFFD, out, err);
            }
            return 0;
        }
        if (b < s->utf8_lo || b > s->utf8_hi) {
            s->utf8_need = s->utf8_seen = 0;
            s->utf8_cp = 0;
            s->utf8_lo = 0x80;
            s->utf8_hi = 0xBF;
            if (emit_cp(s, 0xFFFD, out, err)) return LB_E_OOM;
            continue; /* the byte starts over */
        }
        s->utf8_lo = 0x80;
        s->utf8_hi = 0xBF;
        s->utf8_cp = (s->utf8_cp << 6) | (b & 0x3F);
        if (++s->utf8_seen < s->utf8_need) return 0;
        uint32_t cp = s->utf8_cp;
        s->utf8_need = s->utf8_seen = 0;
        s->utf8_cp = 0;
        return emit_cp(s, cp, out, err);
    }
}

static void terminate(struct lb_tok_text *out)
{
    if (out->s) out->s[out->n] = 0;
}

int lb_tok_stream_feed(struct lb_tok_stream *s, int32_t id, struct lb_tok_text *out, struct lb_err *err)
{
    const struct lb_tok *t = s->tok;
    if (id < 0 || id >= t->n_vocab)
        return lb_err_set(err, LB_E_INPUT, "token id %d is outside the vocabulary [0, %d)", id, t->n_vocab);
    if ((s->flags & LB_TOK_SKIP_SPECIAL) && t->is_special[id]) return 0;
    if (tok_text_reserve(out, out->n, err)) return LB_E_OOM;
    int rc = 0;
    if (t->dec_join_space && s->n_fed > 0) rc = feed_byte(s, ' ', out, err);
    s->n_fed++;
    const uint8_t *p = (const uint8_t *)t->dec_blob + t->dec_off[id];
    size_t n = t->dec_off[id + 1] - t->dec_off[id];
    if (t->dec_meta_strip && s->n_fed == 1 && t->dec_meta_strip[id]) { p++; n--; }
    for (size_t i = 0; i < n && !rc; i++) rc = feed_byte(s, p[i], out, err);
    terminate(out);
    return rc;
}

int lb_tok_stream_flush(struct lb_tok_stream *s, struct lb_tok_text *out, struct lb_err *err)
{
    int rc = tok_text_reserve(out, out->n, err);
    if (!rc && s->utf8_need) {
        s->utf8_need = s->utf8_seen = 0;
        s->utf8_cp = 0;
        s->utf8_lo = 0x80;
        s->utf8_hi = 0xBF;
        rc = emit_cp(s, 0xFFFD, out, err);
    }
    s->n_held = 0; /* trailing Strip characters are dropped */
    terminate(out);
    return rc;
}

int lb_tok_decode(const struct lb_tok *t, const int32_t *ids, size_t n_ids, int flags, struct lb_tok_text *out,
                  struct lb_err *err)
{
    out->n = 0;
    struct lb_tok_stream s;
    lb_tok_stream_init(&s, t, flags);
    for (size_t i = 0; i < n_ids; i++) {
        int rc = lb_tok_stream_feed(&s, ids[i], out, err);
        if (rc) return rc;
    }
    return lb_tok_stream_flush(&s, out, err);
}
