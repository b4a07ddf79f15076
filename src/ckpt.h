/* ckpt.h — the checkpoint (progress record) file, and the output-folder lock.
 *
 * Format (version 1), all integers little-endian, fixed width:
 *   magic "LBCKPT\r\n" (8) | u32 version | u32 total_bytes (whole file, CRC included)
 *   u64 fingerprint | i32 part_i | i32 part_n | u32 flags (bit 0: finished) | u32 0
 *   u64 seq (commit counter) | i64 time_unix_ms | i64 elapsed_ms
 *   i64 totals: n_rec_done, n_rec_error, n_tok_prompt, n_tok_gen
 *   u32 n_canon | canon bytes (the job's canonical text, see lb_job_canon)
 *   u32 n_unit | per unit: u32 n_name | name bytes | i64 out_committed_bytes,
 *        in_offset, in_line, n_rec_done, n_rec_error, n_tok_prompt, n_tok_gen | u32 flags
 *   u32 crc32 (IEEE, reflected, of every byte before it)
 * The reader checks the magic, version, length, CRC, then every field's range, and rejects
 * anything else with LB_E_CORRUPT and the reason. Parsing works on a buffer (fuzzable).
 * Writing: temp file in the same folder, fsync, rename over the old file, fsync the folder;
 * a crash leaves either the old or the new checkpoint, never a mix.
 *
 * Does not: decide what to save (the engine fills the struct) or compare jobs (job.h). */
#ifndef LB_CKPT_H
#define LB_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LB_CKPT_VERSION 1
#define LB_CKPT_UNIT_FINISHED 1u /* unit flag: every record of the shard committed */

struct lb_ckpt_unit {
    char *name;                 /* owned: the unit's output file name (lb_job_unit.out_name) */
    int64_t out_committed_bytes;/* durable length of the output file */
    int64_t in_offset;          /* input cursor: uncompressed byte offset of the next record ... */
    int64_t in_line;            /* ... and its line index (= lines committed to the output) */
    int64_t n_rec_done;         /* records committed (errors included) */
    int64_t n_rec_error;        /* of which error lines */
    int64_t n_tok_prompt, n_tok_gen;
    uint32_t flags;             /* LB_CKPT_UNIT_FINISHED */
};

struct lb_ckpt {
    uint64_t fingerprint;       /* lb_job_fingerprint(canon) */
    char *canon;                /* owned, NUL-terminated, n_canon bytes */
    size_t n_canon;
    int32_t part_i, part_n;     /* this run's --part I/N (0/1 for the whole job) */
    int finished;               /* every unit finished */
    uint64_t seq;               /* incremented by the writer of each new checkpoint */
    int64_t time_unix_ms;       /* when written */
    int64_t elapsed_ms;         /* run time summed over runs */
    int64_t n_rec_done, n_rec_error, n_tok_prompt, n_tok_gen; /* totals */
    int n_unit;
    struct lb_ckpt_unit *units; /* owned [n_unit], in job->units order */
};

void lb_ckpt_init(struct lb_ckpt *c);
void lb_ckpt_free(struct lb_ckpt *c); /* accepts zeroed / half-parsed */

/* Serializes c. *buf malloc'ed, owned by the caller. LB_E_OOM, LB_E_INTERNAL (values out of
 * range: negative counts, names over 64 KiB). */
int lb_ckpt_serialize(const struct lb_ckpt *c, unsigned char **buf, size_t *n, struct lb_err *err);
/* Parses buf[0..n) into c (lb_ckpt_init'ed; free it either way). LB_E_CORRUPT with the
 * reason (bad magic, version, length, CRC, field out of range); LB_E_OOM. */
int lb_ckpt_parse(struct lb_ckpt *c, const unsigned char *buf, size_t n, struct lb_err *err);
/* Writes atomically (temp + fsync + rename + fsync folder). LB_E_IO naming the file. */
int lb_ckpt_write(const char *path, const struct lb_ckpt *c, struct lb_err *err);
/* Reads path. *found = 0 and returns 0 when it does not exist; otherwise parses it
 * (errors prefixed with the path). */
int lb_ckpt_read(const char *path, struct lb_ckpt *c, int *found, struct lb_err *err);
/* The checkpoint file name in out_dir for --part I/N: "<out_dir>/.lorabatch.ckpt" when
 * part_n <= 1, else "<out_dir>/.lorabatch.part-I-of-N.ckpt". Writes at most cap bytes;
 * returns the length needed (like snprintf). */
int lb_ckpt_path(char *buf, size_t cap, const char *out_dir, int part_i, int part_n);

/* CRC-32 (IEEE 802.3, reflected, init and final xor 0xFFFFFFFF); crc32("123456789") = 0xCBF43926.
 * Chain calls by passing the previous result as crc (start with 0). */
uint32_t lb_crc32(uint32_t crc, const void *p, size_t n);

/* ------------------------------------------------------------------ lock */

/* An flock(2) on "<dir>/.lock" (whole job) or "<dir>/.lock.part-I-of-N" (a part) that keeps
 * two runs from writing one output folder. A part also holds a shared lock on "<dir>/.lock",
 * so parts of one job run side by side while a whole-job run excludes them all. The holder
 * writes "pid <pid> host <hostname>" into its lock file; a refused run names it. The lock
 * ends with the process (or lb_lock_release); the files stay. */
struct lb_lock {
    int fd;       /* the exclusive lock, -1 when none */
    int fd_shared;/* the shared whole-job lock held by a part, -1 when none */
};

/* dir must exist. Always initializes *lk (fds -1 on failure). LB_E_IO when the folder is held by another run ("... is in use by pid
 * 1234 on host x") or the lock file cannot be made. */
int lb_lock_acquire(struct lb_lock *lk, const char *dir, int part_i, int part_n, struct lb_err *err);
void lb_lock_release(struct lb_lock *lk); /* accepts a failed or released lock */

#endif
