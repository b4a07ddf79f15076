/* err.h — status codes and the error record every fallible function fills.
 *
 * A fallible function returns int: 0 on success or a negative enum lb_status, and
 * takes `struct lb_err *err` as its last argument. The message is written where the
 * failure is found; callers on the way up prepend their context with lb_err_prefix,
 * so the user reads e.g. `shard a.jsonl line 12: field "adapter": unknown adapter "x"`.
 * `err` may be NULL (the message is then dropped). */
#ifndef LB_ERR_H
#define LB_ERR_H

#include <stddef.h>

enum lb_status {
    LB_OK = 0,
    LB_E_INPUT = -1,       /* bad user input: job file, record, model files */
    LB_E_IO = -2,          /* read/write/fsync failed, disk full */
    LB_E_OOM = -3,         /* host or device memory */
    LB_E_DEVICE = -4,      /* CUDA / cuBLAS / NCCL error */
    LB_E_CORRUPT = -5,     /* checkpoint or weights damaged */
    LB_E_UNSUPPORTED = -6, /* valid but not implemented (architecture, feature, shape) */
    LB_E_INTERNAL = -7,    /* a bug */
    LB_E_INTERRUPTED = -8, /* a signal asked us to stop; state is resumable */
    LB_E_DATA = -9,        /* data-error cap reached */
};

#define LB_ERR_MSG_CAP 2048

struct lb_err {
    int status;                /* enum lb_status, 0 when unset */
    char msg[LB_ERR_MSG_CAP];  /* NUL-terminated */
};

/* Sets err (if not NULL) and returns status, so `return lb_err_set(err, LB_E_INPUT, ...)` works. */
int lb_err_set(struct lb_err *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "<context>: " to the message already in err. Returns err->status (or LB_E_INTERNAL). */
int lb_err_prefix(struct lb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Short name of a status: "input", "io", ... */
const char *lb_status_name(int status);

#endif
