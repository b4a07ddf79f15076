/* tok.h — Hugging Face tokenizer.json (model type BPE): text -> token ids -> text.
 *
 * What it does: loads tokenizer.json (+ tokenizer_config.json for BOS/EOS and
 * add_bos_token) and encodes exactly like the reference implementation
 * (@huggingface/tokenizers 0.2.0, itself a port of the Rust `tokenizers`), for
 *   - byte-level BPE (Llama 3 / 3.1, Qwen2 / 2.5 / 3, DeepSeek-V3, GPT-2 style):
 *     Split pre-tokenizers (Oniguruma regexes run through PCRE2 + JIT), ByteLevel
 *     pre-tokenizer / decoder, ignore_merges, merges as "a b" or ["a","b"];
 *   - SentencePiece-style BPE (Mistral / Llama 2, Gemma): normalizers Prepend, Replace,
 *     NFC / NFD / NFKC / NFKD (utf8proc), Sequence; byte_fallback; decoders Replace,
 *     ByteFallback, Fuse, Strip;
 *   - added tokens (special or not; lstrip, rstrip, single_word, normalized) matched
 *     leftmost-longest before anything else; TemplateProcessing post-processor.
 * Any component or option it does not implement is a load-time error (LB_E_UNSUPPORTED)
 * that names it; nothing is silently ignored.
 *
 * What it does not do: Unigram / WordPiece models, offsets, truncation, padding, pairs,
 * chat templates.
 *
 * Thread safety: a loaded tokenizer is immutable. Any number of threads may call encode,
 * decode and the stream functions on one tokenizer at once; every call keeps its scratch
 * (regex match data, BPE work arrays, word cache) to itself.
 *
 * Text: every text input must be valid UTF-8 (U+0000 is fine: lengths are explicit);
 * encode rejects anything else with LB_E_INPUT and the byte offset. Every text output is
 * valid UTF-8: invalid byte sequences that token ids spell out become U+FFFD (one per
 * maximal invalid subpart, as WHATWG's TextDecoder and Rust's from_utf8_lossy do).
 */
#ifndef LB_TOK_H
#define LB_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct lb_tok; /* opaque; immutable once loaded */

/* A growable array of ids owned by the caller. Start it zeroed; encode appends after
 * resetting n to 0 and grows ids with realloc; reuse it across calls to avoid allocating;
 * release with lb_tok_ids_free. */
struct lb_tok_ids {
    int32_t *ids; /* owned; [cap] */
    size_t n;     /* ids in use */
    size_t cap;
};
void lb_tok_ids_free(struct lb_tok_ids *v);

/* A growable text buffer owned by the caller, NUL-terminated after every call that
 * writes it (the NUL is not counted in n). Same rules as lb_tok_ids. */
struct lb_tok_text {
    char *s;  /* owned; [cap] */
    size_t n; /* bytes in use, not counting the NUL */
    size_t cap;
};
void lb_tok_text_free(struct lb_tok_text *v);

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
 * On success *out owns a tokenizer to release with lb_tok_free. Errors: LB_E_IO (file),
 * LB_E_INPUT (malformed JSON or contents), LB_E_UNSUPPORTED (a component we do not
 * implement; the message names it), LB_E_OOM. */
int lb_tok_open(struct lb_tok **out, const char *dir, struct lb_err *err);

/* The same from buffers (the parser proper; fuzzable). config may be NULL / 0. */
int lb_tok_load_buf(struct lb_tok **out, const char *json, size_t n_json, const char *config,
                    size_t n_config, struct lb_err *err);

void lb_tok_free(struct lb_tok *t); /* NULL is fine */

/* Encode flags. */
enum {
    /* Run the tokenizer.json post-processor's special tokens (e.g. BOS from
     * TemplateProcessing), like add_special_tokens=True in Hugging Face tokenizers. */
    LB_TOK_ADD_SPECIAL = 1,
    /* With LB_TOK_ADD_SPECIAL: also prepend BOS when tokenizer_config.json says
     * add_bos_token: true and the post-processor did not already put BOS first (what
     * transformers' Llama/Gemma tokenizer classes do; DeepSeek-V3's tokenizer.json, for
     * one, adds no BOS itself). */
    LB_TOK_CONFIG_BOS = 2,
};

/* Encodes text[0..n_text) into out (out->n is reset first). Errors: LB_E_INPUT (invalid
 * UTF-8: the message gives the byte offset), LB_E_OOM, LB_E_INTERNAL (a regex engine
 * error; named in the message). Any length works: a 10 MB run of one character costs
 * O(n log n) time and O(n) memory. */
int lb_tok_encode(const struct lb_tok *t, const char *text, size_t n_text, int flags,
                  struct lb_tok_ids *out, struct lb_err *err);

/* Decode flags. */
enum {
    LB_TOK_SKIP_SPECIAL = 1, /* leave out special tokens (BOS, EOS, <|im_end|>, ...) */
};

/* Decodes ids into out (out->n is reset first), as the tokenizer.json decoder does.
 * Errors: LB_E_INPUT (an id outside [0, n_vocab)), LB_E_OOM. */
int lb_tok_decode(const struct lb_tok *t, const int32_t *ids, size_t n_ids, int flags,
                  struct lb_tok_text *out, struct lb_err *err);

/* Incremental decoder for generation: feed ids one at a time; each call appends to the
 * caller's text only whole, valid UTF-8 characters (a character split across tokens is
 * held until it completes; invalid sequences become U+FFFD). After the last id call
 * lb_tok_stream_flush. The concatenation of everything appended equals
 * lb_tok_decode of all the ids fed, with the same flags. Plain struct: embed it, no
 * allocation; lb_tok_stream_init resets it. */
struct lb_tok_stream {
    const struct lb_tok *tok; /* borrowed */
    int flags;                /* LB_TOK_SKIP_SPECIAL */
    int n_fed;                /* ids fed so far (after skipping) */
    int strip_left;           /* leading Strip-decoder characters still to drop */
    int n_held;               /* trailing Strip-decoder characters held back */
    uint32_t utf8_cp;         /* UTF-8 decoder state (WHATWG) */
    int utf8_need, utf8_seen;
    uint8_t utf8_lo, utf8_hi;
};
void lb_tok_stream_init(struct lb_tok_stream *s, const struct lb_tok *t, int flags);
int lb_tok_stream_feed(struct lb_tok_stream *s, int32_t id, struct lb_tok_text *out,
                       struct lb_err *err);
int lb_tok_stream_flush(struct lb_tok_stream *s, struct lb_tok_text *out, struct lb_err *err);

/* Ids: vocab size (highest id + 1, added tokens included), BOS / EOS from
 * tokenizer_config.json (else the post-processor's first special token for BOS), -1
 * when unknown. */
int32_t lb_tok_n_vocab(const struct lb_tok *t);
int32_t lb_tok_bos_id(const struct lb_tok *t);
int32_t lb_tok_eos_id(const struct lb_tok *t);
/* tokenizer_config.json add_bos_token: 1 true, 0 false, -1 absent. */
int lb_tok_config_add_bos(const struct lb_tok *t);
/* 1 when id is a special token (added token with special: true, or listed in the config's
 * additional_special_tokens), else 0. */
int lb_tok_is_special(const struct lb_tok *t, int32_t id);
/* The token string as written in tokenizer.json (e.g. "Ġthe", "▁the", "<0x0A>"), borrowed
 * from t; *n gets its length. NULL for an id out of range or with no token. */
const char *lb_tok_id_to_piece(const struct lb_tok *t, int32_t id, size_t *n);
/* Inverse of lb_tok_id_to_piece; -1 when the string is not a token. */
int32_t lb_tok_piece_to_id(const struct lb_tok *t, const char *piece, size_t n);

#endif
