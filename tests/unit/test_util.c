/* test_util.c — lb_par_memcpy: every byte lands once, at every split (sizes around the
 * threshold, odd sizes, thread counts 1..12, unaligned pointers); nothing outside the
 * destination range is written. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "util.h"

static void test_par_memcpy(void)
{
    const size_t sizes[] = {0, 1, 63, 4096, LB_PAR_MEMCPY_MIN - 1, LB_PAR_MEMCPY_MIN, LB_PAR_MEMCPY_MIN + 7,
                            3 * LB_PAR_MEMCPY_MIN + 12345, 9 * LB_PAR_MEMCPY_MIN + 1};
    const int threads[] = {1, 2, 3, 4, 7, 8, 12};
    size_t max_n = 9 * LB_PAR_MEMCPY_MIN + 1 + 64;
    unsigned char *src = malloc(max_n), *dst = malloc(max_n + 128);
    T_CHECK(src && dst, "malloc");
    if (!src || !dst) return;
    uint32_t x = 12345;
    for (size_t i = 0; i < max_n; i++) {
        x = x * 1664525u + 1013904223u;
        src[i] = (unsigned char)(x >> 24);
    }
    int n_bad = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++)
            for (int off = 0; off < 2; off++) { /* off 1: both pointers unaligned */
                size_t n = sizes[si];
                memset(dst, 0xA5, max_n + 128);
                lb_par_memcpy(dst + 64 + off, src + off, n, threads[ti]);
                int ok = memcmp(dst + 64 + off, src + off, n) == 0;
                for (size_t i = 0; i < 64 + (size_t)off && ok; i++) ok = dst[i] == 0xA5;
                for (size_t i = 64 + off + n; i < 64 + off + n + 64 && ok; i++) ok = dst[i] == 0xA5;
                if (!ok && n_bad++ < 5) T_CHECK(0, "n %zu threads %d offset %d: copy wrong or bytes outside written", n, threads[ti], off);
            }
    T_CHECK(n_bad == 0, "%d of %zu cases wrong", n_bad, 2 * (sizeof sizes / sizeof *sizes) * (sizeof threads / sizeof *threads));
    free(src);
    free(dst);
}

int main(void)
{
    T_RUN(test_par_memcpy);
    return T_DONE();
}
