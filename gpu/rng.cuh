/* rng.cuh — the per-record counter-based RNG on the device, bit-identical to sample.c's
 * lb_rng_uniform (src/sample.h): u = f(key, step) in [0, 1), a pure function.
 * TODO(issue 5): PLACEHOLDER until the CPU reference lands on main; then this is ported from
 * it line by line and test_ops checks u on both sides for many (key, step). */
#ifndef LB_GPU_RNG_CUH
#define LB_GPU_RNG_CUH
#include <stdint.h>

__host__ __device__ __forceinline__ uint64_t lb_rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__host__ __device__ __forceinline__ double lb_rng_uniform_dev(uint64_t key, uint32_t step)
{
    uint64_t x = lb_rng_mix64(key + 0x9e3779b97f4a7c15ull * ((uint64_t)step + 1));
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}
#endif
