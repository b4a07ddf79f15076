/* sample.c — counter-based RNG and the reference sampler (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t lb_sample_key(uint64_t job_seed, uint64_t record_key)
{
    return mix64(mix64(job_seed + 0x9e3779b97f4a7c15ull) ^ (record_key * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull));
}

double lb_rng_uniform(uint64_t key, uint32_t step)
{
    uint64_t z = mix64(key ^ mix64((uint64_t)step + 0x632be59bd9b4e019ull));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0); /* 53 bits -> [0,1) */
}

size_t lb_sample_scratch_bytes(int n_vocab)
{
    return (size_t)n_vocab * (sizeof(int32_t) + sizeof(double));
}

/* sort indices by (logit desc, index asc); ctx = logits */
static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *z = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = z[i], y = z[j];
    if (x > y) return -1;
    if (x < y) return 1;
    return i < j ? -1 : i > j;
}

/* Exact and simple: sort all candidates, n_vocab log n_vocab per sampled row
 * (greedy rows return before the sort). */
int32_t lb_sample_row(const float *logits, int n_vocab, const struct lb_sample_param *p, void *scratch)
{
    int32_t best = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (!(p->temperature > 0.0f)) return best;
    int32_t *idx = scratch;
    double *prob = (double *)(idx + n_vocab);
    for (int i = 0; i < n_vocab; i++) idx[i] = i;
    /* ordering by logit == ordering by logit / T for T > 0 */
    qsort_r(idx, (size_t)n_vocab, sizeof *idx, cmp_desc, (void *)logits);
    int n = n_vocab;
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    double inv_t = 1.0 / (double)p->temperature, zmax = (double)logits[idx[0]] * inv_t, sum = 0.0;
    for (int i = 0; i < n; i++) {
        prob[i] = exp((double)logits[idx[i]] * inv_t - zmax);
        sum += prob[i];
    }
    double top_p = p->top_p > 0.0f && p->top_p < 1.0f ? (double)p->top_p : 1.0;
    if (top_p < 1.0) {
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += prob[i] / sum;
            if (cum >= top_p) { keep = i + 1; break; }
        }
        n = keep;
    }
    double mass = 0.0;
    for (int i = 0; i < n; i++) mass += prob[i];
    double u = lb_rng_uniform(p->seed, (uint32_t)p->step) * mass, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += prob[i];
        if (cum > u) return idx[i];
    }
    return idx[n - 1];
}
