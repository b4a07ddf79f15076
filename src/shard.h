/* shard.h — input shards (.jsonl, .jsonl.zst) read line by line, and records parsed
 * from lines.
 *
 * Reader: streams; memory is one read buffer plus one line buffer that grows up to the
 * line cap (default LB_SHARD_MAX_LINE), whatever the file size. A line is the bytes up to
 * '\n' (a trailing '\r' is dropped); a last line without '\n' counts when non-empty. An
 * empty line is a record too (it answers with an error line), so line i of the input is
 * always record i. A line longer than the cap is returned with too_long set and no data;
 * the reader skips to the next '\n'. Positions are in the uncompressed stream.
 * Seeking to a saved cursor: plain files seek; .zst files are decompressed again from the
 * start and the bytes before the cursor skipped (~1 GB/s).
 *
 * Records: lb_record_parse turns one line into a struct lb_record. A bad line is not a
 * failure: the record carries an error code (LB_REC_E_*) and a message, and the job goes
 * on. Record fields: prompt | prompt_token_ids | messages (refused for now), id, and
 * per-record max_tokens, temperature, top_p, top_k, seed, stop. Any other field is an
 * error (so a typo never falls back to a default).
 *
 * Does not: tokenize, check the prompt against the model's context (the caller does), pick
 * records for a --part. */
#ifndef LB_SHARD_H
#define LB_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "job.h"

#define LB_SHARD_MAX_LINE ((size_t)64 << 20)

struct lb_shard; /* opaque handle */

struct lb_shard_cursor {
    int64_t offset; /* byte offset of the next line in the uncompressed stream */
    int64_t line;   /* its 0-based line index (= record index) */
};

struct lb_shard_line {
    const char *data; /* borrowed from the reader, valid until the next call; NULL if too_long */
    size_t n;         /* bytes (without '\n' / "\r\n"); for too_long, the full length */
    int64_t index;    /* 0-based line index */
    int64_t offset;   /* uncompressed byte offset where the line starts */
    int too_long;     /* 1: longer than the cap, data dropped */
};

/* Opens path; .zst suffix selects zstd. max_line: cap in bytes (0 = LB_SHARD_MAX_LINE).
 * LB_E_IO when the file cannot be opened; LB_E_OOM. *out is NULL on failure. */
int lb_shard_open(struct lb_shard **out, const char *path, size_t max_line, struct lb_err *err);
/* Next line: returns 1 and fills *line, 0 at end of file, or LB_E_IO (read error),
 * LB_E_INPUT (bad zstd data, truncated frame), LB_E_OOM; messages name the file. */
int lb_shard_next(struct lb_shard *s, struct lb_shard_line *line, struct lb_err *err);
/* Position of the next line lb_shard_next would return. */
void lb_shard_tell(const struct lb_shard *s, struct lb_shard_cursor *cur);
/* Moves to a cursor obtained from lb_shard_tell (possibly in an earlier run). LB_E_CORRUPT
 * when the file is shorter than the cursor or the cursor is not at a line start. */
int lb_shard_seek(struct lb_shard *s, const struct lb_shard_cursor *cur, struct lb_err *err);
void lb_shard_close(struct lb_shard *s); /* accepts NULL */

/* ------------------------------------------------------------------ records */

/* Error codes of bad records (the "code" of an output error line). */
#define LB_REC_E_JSON "bad_json"          /* not JSON, not an object, empty line */
#define LB_REC_E_UTF8 "bad_utf8"          /* invalid UTF-8 */
#define LB_REC_E_FIELD "bad_field"        /* unknown field, wrong type, bad value, no prompt */
#define LB_REC_E_UNSUPPORTED "unsupported"/* messages (chat templates not supported yet) */
#define LB_REC_E_TOO_LONG "line_too_long" /* line over the reader's cap */

struct lb_rec_id {
    int is_str;     /* 1: s/n_s; 0: i */
    int64_t i;
    char *s;        /* owned when inside struct lb_record; may contain NUL; NUL-terminated */
    size_t n_s;
};

struct lb_record {
    int64_t index;              /* 0-based line index in the shard */
    struct lb_rec_id id;        /* as given; default: the integer index */
    char *prompt;               /* owned, valid UTF-8, NUL-terminated; NULL when token ids given */
    size_t n_prompt;            /* bytes (the prompt may hold U+0000) */
    int32_t *prompt_token_ids;  /* owned [n_prompt_token_ids] or NULL */
    int n_prompt_token_ids;
    struct lb_gen_param gen;    /* job defaults overlaid with the record's own values; owned */
    int has_seed;               /* 1: the record gave "seed" (the sampler is then keyed by it) */
    const char *err_code;       /* NULL: good record; else one of LB_REC_E_* (static) */
    char err_msg[256];          /* set with err_code: what is wrong, e.g. `field "top_p": ...` */
};

void lb_record_init(struct lb_record *r);
void lb_record_free(struct lb_record *r); /* keeps nothing; accepts a zeroed record */

/* Parses line[0..n) as record `index`. Always fills r (lb_record_free it first when reused):
 * a bad line gives r->err_code/err_msg and returns 0. Returns LB_E_OOM only. */
int lb_record_parse(struct lb_record *r, int64_t index, const char *line, size_t n,
                    const struct lb_gen_param *defaults, struct lb_err *err);
/* Fills r as an error record for a line the reader flagged too_long. */
int lb_record_too_long(struct lb_record *r, int64_t index, size_t n, const struct lb_gen_param *defaults,
                       struct lb_err *err);

#endif
