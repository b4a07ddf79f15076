/* t.h — the smallest test framework that does the job.
 * T_CHECK(cond, fmt, ...) records a failure with file:line and keeps going;
 * T_RUN(fn) runs one test function and prints "ok"/"FAIL"/"skip";
 * T_SKIP(reason) inside a test marks it skipped; T_DONE() prints "RESULT p f s"
 * (the line build.sh sums) and returns the exit code. */
#ifndef LB_T_H
#define LB_T_H
#include <stdio.h>
#include <string.h>

static int t_pass, t_fail, t_skip, t_cur_fail, t_cur_skip;
static int t_expect_fail; /* 1 while a test provokes failures on purpose: they print as "expected" */

#define T_CHECK(cond, ...)                                                      \
    do {                                                                        \
        if (!(cond)) {                                                          \
            t_cur_fail++;                                                       \
            fprintf(stderr, "  %s:%d: %s: %s: ", __FILE__, __LINE__,           \
                    t_expect_fail ? "expected failure" : "check failed", #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

#define T_SKIP(...)                                                             \
    do {                                                                        \
        t_cur_skip = 1;                                                         \
        fprintf(stderr, "  skip: ");                                            \
        fprintf(stderr, __VA_ARGS__);                                           \
        fprintf(stderr, "\n");                                                  \
        return;                                                                 \
    } while (0)

#define T_RUN(fn)                                                               \
    do {                                                                        \
        t_cur_fail = 0; t_cur_skip = 0;                                         \
        fn();                                                                   \
        if (t_cur_fail) { t_fail++; printf("FAIL %s\n", #fn); }                 \
        else if (t_cur_skip) { t_skip++; printf("skip %s\n", #fn); }            \
        else { t_pass++; printf("ok   %s\n", #fn); }                            \
        fflush(stdout);                                                         \
    } while (0)

#define T_DONE() (printf("RESULT %d %d %d\n", t_pass, t_fail, t_skip), t_fail ? 1 : 0)

#endif
