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
            "  inspect PATH [--model M]  summarise and validate a model or an adapter folder\n"
            "  generate --model DIR ...  generate from token ids (see lorabatch generate --help)\n"
            "  version                  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return LB_EXIT_USAGE; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) { printf("lorabatch %s\n", LB_VERSION); return 0; }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "inspect")) return lb_cmd_inspect(argc, argv);
    if (!strcmp(cmd, "generate")) return lb_cmd_generate(argc, argv);
    fprintf(stderr, "lorabatch: unknown command '%s'\n", cmd);
    usage(stderr);
    return LB_EXIT_USAGE;
}
