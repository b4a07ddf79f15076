/* job.h — the job file (YAML) → struct lb_job, and the job's work units.
 *
 * Two steps, both before any model or GPU work:
 *   lb_job_parse   syntax, schema, types and ranges (no file system access). Every problem
 *                  is collected and reported at once, one per line, as
 *                  `job.yaml:LINE: field "generation.top_p": must be in (0, 1], got 1.5`.
 *   lb_job_resolve file system: expands input globs, lists adapters (adapters.dir + map),
 *                  checks every named adapter exists and every file is there, and builds the
 *                  work units: one per (shard, adapter), each with its output file name
 *                  `<shard stem>.<adapter>.jsonl.zst`. Errors are collected the same way.
 * Relative paths resolve against base_dir (the job file's folder for lb_job_load).
 *
 * Does not: open the model or adapters (lb_model_open / lb_adapter_open), read shards,
 * create the output folder, pick a --part (the CLI/planner does that over job->units).
 *
 * Fingerprint: lb_job_canon renders everything that changes the outputs (model dir, adapter
 * dirs in use, work units with their shard files, generation defaults, output.token_ids)
 * as a canonical text of `key=value` lines, one key per line, sorted by key.
 * lb_job_fingerprint hashes it; lb_job_canon_diff names the keys that differ between two
 * canonical texts, so a changed job can say what changed. zstd_level, resources and
 * checkpoint settings are not part of it (they do not change decompressed outputs). */
#ifndef LB_JOB_H
#define LB_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LB_JOB_BASE "base" /* adapter name meaning "no adapter" */

/* Generation parameters: the job's defaults, and a record's effective values. */
struct lb_gen_param {
    int32_t max_tokens;  /* >= 1 */
    float temperature;   /* >= 0; 0 = greedy */
    float top_p;         /* (0, 1] */
    int32_t top_k;       /* >= 0; 0 = off */
    uint64_t seed;
    int n_stop;
    char **stop;         /* owned [n_stop], each owned, NUL-terminated, non-empty */
    int ignore_eos;      /* job-wide only: 1 = always max_tokens tokens, EOS ids included (benchmarks) */
};
/* Deep copy (dst is overwritten, not freed first). 0 or LB_E_OOM. */
int lb_gen_param_copy(struct lb_gen_param *dst, const struct lb_gen_param *src, struct lb_err *err);
void lb_gen_param_free(struct lb_gen_param *p); /* frees stop; leaves scalars */

enum lb_device_kind { LB_DEVICE_AUTO = 0, LB_DEVICE_CPU, LB_DEVICE_CUDA };

struct lb_job_input {          /* one entry of `inputs:` as written */
    char *pattern;             /* owned; glob, already joined with base_dir */
    int n_adapter;
    char **adapters;           /* owned [n_adapter]; LB_JOB_BASE for none; no duplicates */
    int line;                  /* 1-based line of the entry (for messages) */
    int line_adapter;          /* line of adapter:/adapters: (or of the entry) */
};

struct lb_job_adapter {
    char *name;                /* owned; [A-Za-z0-9._-]+, not starting with '.', never "base" */
    char *dir;                 /* owned; joined with base_dir */
    int line;                  /* 1-based line where it was defined (adapters.dir or map entry) */
};

struct lb_job_shard {
    char *path;                /* owned; as glob(3) returned it */
    int zst;                   /* 1: .jsonl.zst, 0: .jsonl */
    char *stem;                /* owned; file name without .jsonl / .jsonl.zst */
};

struct lb_job_unit {           /* one output file */
    int shard;                 /* index into job->shards */
    int adapter;               /* index into job->adapters, -1 = base (no adapter) */
    const char *adapter_name;  /* borrowed: job->adapters[adapter].name or LB_JOB_BASE */
    char *out_name;            /* owned; "<stem>.<adapter>.jsonl.zst" (no folder) */
};

struct lb_job {
    char *path;                /* owned; job file name as used in messages */
    char *base_dir;            /* owned */

    char *model_dir;           /* owned, joined */
    int line_model;
    char *adapters_dir;        /* owned, joined; NULL when absent */
    int line_adapters_dir;
    int n_map;
    struct lb_job_adapter *map;    /* owned [n_map]: adapters.map entries in file order */
    int n_input;
    struct lb_job_input *inputs;   /* owned [n_input] */

    char *out_dir;             /* owned, joined */
    int zstd_level;            /* 1..19, default 3 */
    int token_ids;             /* 0/1, default 0 */

    struct lb_gen_param gen;   /* defaults: 256, 0.0, 1.0, 0, 0, [] */

    enum lb_device_kind device;    /* auto */
    int tensor_parallel;           /* 1 */
    int gpu_adapter_slots;         /* 8 */
    int host_adapter_cache;        /* 64 */
    int max_lora_rank;             /* 64 */
    int max_seqs;                  /* 256 */
    int max_batch_tokens;          /* 8192 */
    double gpu_memory_fraction;    /* (0, 1], 0.90 */
    double max_error_rate;         /* [0, 1], 0.5: stop when errors/records exceeds it ... */
    int64_t error_rate_min_records;/* ... once at least this many records are done (100; not in YAML) */
    double checkpoint_interval_s;  /* > 0, 30 */

    /* Filled by lb_job_resolve. */
    int n_adapter;
    struct lb_job_adapter *adapters; /* owned [n_adapter], sorted by name, unique */
    int n_shard;
    struct lb_job_shard *shards;     /* owned [n_shard]: order of first appearance (inputs in
                                        file order, each glob's matches sorted) */
    int n_unit;
    struct lb_job_unit *units;       /* owned [n_unit]: by shard, then adapter as listed */

    int n_diag;
    char **diag;                     /* owned: every message of the last failed parse/resolve */
};

void lb_job_init(struct lb_job *job);
void lb_job_free(struct lb_job *job); /* accepts a half-built or zeroed job */

/* Parses buf[0..n) (need not be NUL-terminated). path: the name used in messages;
 * base_dir: folder that relative paths are joined to ("" or NULL: left as written).
 * On failure returns LB_E_INPUT with every problem in job->diag and, joined by newlines
 * (as many as fit), in err; or LB_E_OOM. The job must be lb_job_init'ed; free it either way. */
int lb_job_parse(struct lb_job *job, const char *buf, size_t n, const char *path, const char *base_dir,
                 struct lb_err *err);
/* Reads the file and parses it; base_dir is the file's folder made absolute. LB_E_IO if the
 * file cannot be read. */
int lb_job_load(struct lb_job *job, const char *path, struct lb_err *err);

/* After a successful parse: fills adapters, shards, units (see the struct). All problems
 * collected: LB_E_INPUT with messages `job.yaml:LINE: field "inputs[0].path": ...`. */
int lb_job_resolve(struct lb_job *job, struct lb_err *err);

/* Index of adapter `name` in job->adapters, -1 for LB_JOB_BASE, -2 if unknown. */
int lb_job_find_adapter(const struct lb_job *job, const char *name);

/* Canonical text of a resolved job (see top). *out: owned by the caller (free), NUL-terminated,
 * *n its length. 0 or LB_E_OOM. */
int lb_job_canon(const struct lb_job *job, char **out, size_t *n, struct lb_err *err);
/* 64-bit FNV-1a of the canonical text. */
uint64_t lb_job_fingerprint(const char *canon, size_t n);
/* Writes into buf (cap bytes, always NUL-terminated when cap > 0) a description of what
 * differs between two canonical texts, one item per line:
 *   changed generation.top_p: 1 -> 0.9
 *   added unit.b.sql.jsonl.zst=...
 *   removed adapter.chat=...
 * (at most 20 items, then "... and N more differences"). Returns the number of differing
 * keys (0: identical), or LB_E_OOM. */
int lb_job_canon_diff(const char *old_canon, size_t n_old, const char *new_canon, size_t n_new, char *buf,
                      size_t cap);

#endif
