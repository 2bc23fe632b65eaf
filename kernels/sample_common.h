/* What the CPU and CUDA sample ops (kernels/cpu/ops_gen.c, kernels/cuda/sample.cu) share, so
 * the two compute these bit for bit: the counter-based uniform of kernels/backend.h's decoding
 * section, the weight of a survivor, and the order-preserving uint32 key of a float that their
 * top-k / top-p threshold searches bisect over. Plain C, also compiled as CUDA (host and device)
 * and, under the kernel emulator, as host C++. */
#ifndef CVENE_SAMPLE_COMMON_H
#define CVENE_SAMPLE_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define CVENE_HD __host__ __device__
#else
#define CVENE_HD
#endif

static inline CVENE_HD uint64_t cvene_splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* u in [0, 1) of row b at decoding step `step`: 24 random bits, so u (and u * S in double) is
 * exact and the same on every backend. */
static inline CVENE_HD double cvene_sample_uniform(uint64_t seed, uint64_t step, int64_t b) {
    const uint64_t x = cvene_splitmix64(cvene_splitmix64(seed + step) + (uint64_t)b);
    return (double)(x >> 40) * (1.0 / 16777216.0);
}

/* w of a survivor given the largest z: 1 at zmax (also when zmax is infinite), else expf. */
static inline CVENE_HD float cvene_sample_weight(float z, float zmax) { return z == zmax ? 1.0f : expf(z - zmax); }

/* Order-preserving key: a < b as floats implies key(a) < key(b) (-0 sorts just below +0, which
 * compare equal; NaNs sort outside [key(-inf), key(+inf)], the range the searches use). */
static inline CVENE_HD uint32_t cvene_f32_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static inline CVENE_HD float cvene_key_f32(uint32_t k) {
    const uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
