/* cli.c — status -> exit code mapping shared by the subcommands. */
#include "cli.h"
#include "err.h"

int lb_exit_code(int status)
{
    switch (status) {
    case LB_OK: return LB_EXIT_OK;
    case LB_E_INPUT: case LB_E_UNSUPPORTED: case LB_E_CORRUPT: return LB_EXIT_USAGE;
    case LB_E_IO: return LB_EXIT_IO;
    case LB_E_OOM: case LB_E_DEVICE: return LB_EXIT_DEVICE;
    case LB_E_INTERRUPTED: return LB_EXIT_INTERRUPTED;
    case LB_E_DATA: return LB_EXIT_DATA;
    default: return LB_EXIT_INTERNAL;
    }
}
