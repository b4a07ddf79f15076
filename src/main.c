/* main.c — command line entry; the only place that exits. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "err.h"
#include "run.h"

#define LB_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "lorabatch " LB_VERSION " — offline multi-LoRA batch generation\n"
            "usage: lorabatch <command> [args]\n"
            "  run JOB.yaml [--part I/N] [--restart] [--device D]   run a job (resumes automatically)\n"
            "  plan JOB.yaml [--part I/N]  validate the job and print the plan, generate nothing\n"
            "  status JOB.yaml          progress of a job (all parts) from its checkpoints\n"
            "  inspect PATH [--model M]  summarise and validate a model or an adapter folder\n"
            "  tokenize --tokenizer DIR ...  encode/decode text with a model's tokenizer.json\n"
            "  generate --model DIR ...  generate from token ids (see lorabatch generate --help)\n"
            "  cat FILE.jsonl.zst...    output files decompressed to standard output\n"
            "  version                  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return LB_EXIT_USAGE; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) { printf("lorabatch %s\n", LB_VERSION); return 0; }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "run")) return lb_cmd_run(argc, argv);
    if (!strcmp(cmd, "plan")) return lb_cmd_plan(argc, argv);
    if (!strcmp(cmd, "status")) return lb_cmd_status(argc, argv);
    if (!strcmp(cmd, "tokenize")) return lb_cmd_tokenize(argc, argv);
    if (!strcmp(cmd, "inspect")) return lb_cmd_inspect(argc, argv);
    if (!strcmp(cmd, "generate")) return lb_cmd_generate(argc, argv);
    if (!strcmp(cmd, "cat")) return lb_cmd_cat(argc, argv);
    fprintf(stderr, "lorabatch: unknown command '%s'\n", cmd);
    usage(stderr);
    return LB_EXIT_USAGE;
}
