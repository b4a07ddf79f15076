/* cli.h — subcommands. Each returns a process exit code (see README "Exit codes");
 * only main.c calls exit. */
#ifndef LB_CLI_H
#define LB_CLI_H

/* Exit codes, one per status class. */
enum lb_exit {
    LB_EXIT_OK = 0,
    LB_EXIT_USAGE = 2,       /* bad command line, job file or model/adapter input */
    LB_EXIT_DATA = 3,        /* error-rate cap reached */
    LB_EXIT_IO = 4,          /* disk full, unwritable output */
    LB_EXIT_DEVICE = 5,      /* GPU / library error */
    LB_EXIT_INTERRUPTED = 75,/* stopped by a signal, resumable (EX_TEMPFAIL) */
    LB_EXIT_INTERNAL = 70,   /* a bug (EX_SOFTWARE) */
};
int lb_exit_code(int status); /* enum lb_status -> enum lb_exit */

int lb_cmd_inspect(int argc, char **argv);
int lb_cmd_generate(int argc, char **argv);
int lb_cmd_tokenize(int argc, char **argv);
int lb_cmd_cat(int argc, char **argv);

#endif
