/* out.h — output files: JSONL lines compressed as zstd frames, committed durably; the
 * output line builders; a reorder buffer that puts lines back in input order.
 *
 * Writer contract: bytes written since the last commit belong to an open frame and may be
 * partly on disk; lb_out_commit closes the frame (ZSTD_e_end; a file's first commit writes a
 * frame even when empty, so every output is a valid zstd file), writes it out, fsyncs and
 * returns the committed length. Only committed lengths go into the checkpoint. A resume
 * opens the file with that length: the file is truncated to it (dropping any half-written
 * frame) and new frames are appended; zstd decodes concatenated frames, so the decompressed
 * file equals an uninterrupted run's.
 *
 * Does not: decide when to commit (the engine does, at checkpoint time), know about shards.
 * Disk full, unwritable paths, short files: LB_E_IO / LB_E_CORRUPT naming the file. After
 * a failed write the writer refuses further writes (the caller stops; resume recovers). */
#ifndef LB_OUT_H
#define LB_OUT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "shard.h" /* struct lb_rec_id */

struct lb_out; /* opaque handle */

/* Opens path for appending frames. committed_len 0: creates or truncates the file (and
 * fsyncs its folder when the file is new). committed_len > 0: the file must exist and hold
 * at least that many bytes (else LB_E_CORRUPT); it is truncated to committed_len.
 * level: zstd level 1..19. LB_E_IO (naming the file), LB_E_OOM. *out NULL on failure. */
int lb_out_open(struct lb_out **out, const char *path, int64_t committed_len, int level, struct lb_err *err);
/* Appends line[0..n) and a '\n' to the open frame (line must not contain '\n'). */
int lb_out_write(struct lb_out *o, const char *line, size_t n, struct lb_err *err);
/* Closes the frame, writes it, fsyncs. *committed_len: the file length now durable. With
 * nothing written since the last commit, no empty frame is added. */
int lb_out_commit(struct lb_out *o, int64_t *committed_len, struct lb_err *err);
/* Lines written since the open (committed or not), and since the last commit. */
int64_t lb_out_n_lines(const struct lb_out *o);
int64_t lb_out_n_lines_pending(const struct lb_out *o);
/* Closes the file. Uncommitted data is not flushed (it is dropped on resume anyway). */
void lb_out_close(struct lb_out *o);

/* ------------------------------------------------------------------ line builders */

struct lb_out_ok {
    struct lb_rec_id id;          /* borrowed */
    int64_t index;                /* input line index */
    const char *adapter;          /* borrowed; "base" for none */
    const char *text;             /* borrowed; must be valid UTF-8 (may hold U+0000) */
    size_t n_text;
    const char *finish_reason;    /* borrowed: "stop" | "length" */
    int64_t n_tok_prompt, n_tok_gen;
    const int32_t *token_ids;     /* borrowed [n_token_ids]; written only when with_token_ids */
    int64_t n_token_ids;
    int with_token_ids;
};

/* {"id","index","adapter","text","finish_reason","usage":{"prompt_tokens","completion_tokens"}}
 * (+ "token_ids"), compact, no newline. *line: malloc'ed, owned by the caller; *n its length.
 * LB_E_INPUT when text, id or adapter is not valid UTF-8; LB_E_OOM. */
int lb_out_line_ok(char **line, size_t *n, const struct lb_out_ok *r, struct lb_err *err);
/* {"id","index","adapter","error":{"code","message"}}; message may be any bytes (invalid
 * UTF-8 is replaced by U+FFFD so an error line is always writable). */
int lb_out_line_error(char **line, size_t *n, const struct lb_rec_id *id, int64_t index, const char *adapter,
                      const char *code, const char *message, struct lb_err *err);

/* ------------------------------------------------------------------ reorder buffer */

/* Results arrive in any order; lines leave in index order. A ring of `cap` slots holds
 * lines whose index is in [next, next + cap). Each line carries the input cursor just
 * after its record, so after draining, (next, next_cursor) is exactly the input position
 * that matches what was written: the checkpoint's cursor. */
struct lb_reorder_slot {
    char *line;                   /* owned; NULL = empty */
    size_t n;
    struct lb_shard_cursor after; /* input cursor after this record */
};

struct lb_reorder {
    int64_t next;                 /* index of the next line to leave */
    struct lb_shard_cursor next_cursor; /* input cursor of record `next` */
    int cap;
    int n_held;
    struct lb_reorder_slot *slots; /* owned [cap] */
};

/* start: cursor of the first record to come (its line is start.line). LB_E_OOM. */
int lb_reorder_init(struct lb_reorder *r, const struct lb_shard_cursor *start, int cap, struct lb_err *err);
void lb_reorder_free(struct lb_reorder *r); /* frees held lines; accepts zeroed */
/* Takes ownership of line (freed on error too). LB_E_INTERNAL when index is outside
 * [next, next + cap) or already held. */
int lb_reorder_put(struct lb_reorder *r, int64_t index, char *line, size_t n, const struct lb_shard_cursor *after,
                   struct lb_err *err);
/* Writes every line from `next` on that is present, in order, to o. *n_written (may be NULL):
 * lines written. Stops at the first gap. */
int lb_reorder_drain(struct lb_reorder *r, struct lb_out *o, int64_t *n_written, struct lb_err *err);

#endif
