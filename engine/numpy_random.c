#include <math.h>
#include "engine/numpy_random.h"

void cvene_np_random_seed(cvene_np_random *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = 624;
    r->has_gauss = 0;
    r->gauss = 0.0;
}

static uint32_t next_u32(cvene_np_random *r) {
    if (r->mti >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (r->mt[k] & 0x80000000u) | (r->mt[(k + 1) % 624] & 0x7fffffffu);
            r->mt[k] = r->mt[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->mti = 0;
    }
    uint32_t y = r->mt[r->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

double cvene_np_random_double(cvene_np_random *r) {
    uint32_t a = next_u32(r) >> 5, b = next_u32(r) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
}

double cvene_np_random_gauss(cvene_np_random *r) {
    if (r->has_gauss) {
        r->has_gauss = 0;
        return r->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * cvene_np_random_double(r) - 1.0;
        x2 = 2.0 * cvene_np_random_double(r) - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    r->gauss = f * x1;
    r->has_gauss = 1;
    return f * x2;
}

void cvene_np_randn(uint32_t seed, double *out, size_t n) {
    cvene_np_random r;
    cvene_np_random_seed(&r, seed);
    for (size_t i = 0; i < n; i++) out[i] = cvene_np_random_gauss(&r);
}
