/* sample.h — sampling semantics shared by every backend.
 *
 * RNG: counter-based. u = lb_rng_uniform(key, step) is a pure function of the record's key
 * and the step, so a record's samples never depend on its batch neighbours.
 * lb_sample_key(job_seed, record_seed_or_index) derives the key.
 *
 * Sampling of one row of logits (CPU reference; CUDA follows the same definition):
 *   temperature <= 0: argmax (lowest index wins ties).
 *   otherwise: z = logits / temperature; keep the top_k largest (ties: lower index first)
 *   when top_k > 0; p = softmax(z) over kept tokens in float64; sort by (p desc, index asc);
 *   keep the shortest prefix whose cumulative p >= top_p (at least one token);
 *   draw u in [0,1), pick the first token whose cumulative p exceeds u * (kept mass). */
#ifndef LB_SAMPLE_H
#define LB_SAMPLE_H

#include <stdint.h>

#include "backend.h"

uint64_t lb_sample_key(uint64_t job_seed, uint64_t record_key);
double lb_rng_uniform(uint64_t key, uint32_t step);
/* scratch: at least 2*n_vocab ints + n_vocab doubles worth of bytes (lb_sample_scratch_bytes). */
size_t lb_sample_scratch_bytes(int n_vocab);
int32_t lb_sample_row(const float *logits, int n_vocab, const struct lb_sample_param *p, void *scratch);

#endif
