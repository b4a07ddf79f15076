/* main.c — command line entry; the only place that exits. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "err.h"

#define LB_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "lorabatch " LB_VERSION " — offline multi-LoRA batch generation\n"
            "usage: lorabatch <command> [args]\n"
            "  version                  print the version\n");
}

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

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return LB_EXIT_USAGE; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) { printf("lorabatch %s\n", LB_VERSION); return 0; }
    if (!strcmp(cmd, "tokenize")) return lb_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { usage(stdout); return 0; }
    fprintf(stderr, "lorabatch: unknown command '%s'\n", cmd);
    usage(stderr);
    return LB_EXIT_USAGE;
}
