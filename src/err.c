/* err.c — see err.h. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lb_err_set(struct lb_err *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

int lb_err_prefix(struct lb_err *err, const char *fmt, ...)
{
    if (!err) return LB_E_INTERNAL;
    char head[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    char tmp[LB_ERR_MSG_CAP];
    size_t n_head = strlen(head);
    if (n_head > sizeof tmp - 3) n_head = sizeof tmp - 3;
    memcpy(tmp, head, n_head);
    memcpy(tmp + n_head, ": ", 2);
    size_t n_msg = strnlen(err->msg, sizeof err->msg);
    if (n_msg > sizeof tmp - n_head - 3) n_msg = sizeof tmp - n_head - 3;
    memcpy(tmp + n_head + 2, err->msg, n_msg);
    tmp[n_head + 2 + n_msg] = 0;
    memcpy(err->msg, tmp, sizeof tmp);
    return err->status ? err->status : LB_E_INTERNAL;
}

const char *lb_status_name(int status)
{
    switch (status) {
    case LB_OK: return "ok";
    case LB_E_INPUT: return "input";
    case LB_E_IO: return "io";
    case LB_E_OOM: return "oom";
    case LB_E_DEVICE: return "device";
    case LB_E_CORRUPT: return "corrupt";
    case LB_E_UNSUPPORTED: return "unsupported";
    case LB_E_INTERNAL: return "internal";
    case LB_E_INTERRUPTED: return "interrupted";
    case LB_E_DATA: return "data";
    default: return "unknown";
    }
}
