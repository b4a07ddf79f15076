/* rng.cuh — the per-record counter-based RNG on the device, bit-identical to src/sample.c's
 * lb_rng_uniform (a pure function of key and step, in [0, 1), 53 bits). Keep the two in step:
 * test_ops checks them against each other on many (key, step) pairs (rng case). */
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
    uint64_t z = lb_rng_mix64(key ^ lb_rng_mix64((uint64_t)step + 0x632be59bd9b4e019ull));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
#endif
