/* numpy's legacy RandomState(seed).randn, bit for bit: MT19937 seeded with
 * init_genrand, 53-bit doubles, and the polar Gaussian that caches its second
 * value. pyvene's NoiseIntervention draws its fixed noise this way. */
#ifndef CVENE_NUMPY_RANDOM_H
#define CVENE_NUMPY_RANDOM_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t mt[624];
    int mti;
    int has_gauss;
    double gauss;
} cvene_np_random;

void cvene_np_random_seed(cvene_np_random *r, uint32_t seed);
double cvene_np_random_double(cvene_np_random *r);  /* [0, 1) */
double cvene_np_random_gauss(cvene_np_random *r);   /* standard normal */
/* out[0..n) = RandomState(seed).randn(n) */
void cvene_np_randn(uint32_t seed, double *out, size_t n);

#endif
