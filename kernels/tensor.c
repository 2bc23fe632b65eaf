#include <string.h>
#include "kernels/tensor.h"

size_t cvene_dtype_size(cvene_dtype t) {
    switch (t) {
    case CVENE_F32: case CVENE_I32: return 4;
    case CVENE_F16: case CVENE_BF16: return 2;
    }
    return 0;
}

const char *cvene_dtype_name(cvene_dtype t) {
    switch (t) {
    case CVENE_F32: return "f32";
    case CVENE_F16: return "f16";
    case CVENE_BF16: return "bf16";
    case CVENE_I32: return "i32";
    }
    return "?";
}

int64_t cvene_tensor_numel(const cvene_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t cvene_tensor_nbytes(const cvene_tensor *t) {
    return (size_t)cvene_tensor_numel(t) * cvene_dtype_size(t->dtype);
}

cvene_tensor cvene_tensor_make(void *data, cvene_dtype dt, cvene_device dev, int ndim,
                               const int64_t *shape) {
    cvene_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < 4; i++) t.shape[i] = shape[i];
    return t;
}

float cvene_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float cvene_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t cvene_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

uint16_t cvene_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* overflow -> inf */
    if (ax < 0x38800000u) {                                       /* subnormal / zero */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e; /* f16 subnormal = half * 2^-24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t e = (ax >> 23) - 127 + 15, m = ax & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

void *cvene_arena_take(cvene_arena *a, size_t nbytes) {
    size_t off = (a->used + 255) & ~(size_t)255;
    a->used = off + nbytes;
    if (!a->base) return NULL;
    return a->base + off;
}

static inline int nonfinite_bits(const float *x) {
    uint32_t u;
    memcpy(&u, x, 4); /* the exponent all ones: infinity or NaN */
    return (u & 0x7f800000u) == 0x7f800000u;
}

int64_t cvene_first_nonfinite(const float *x, size_t n) {
    size_t i = 0;
    /* blocks of 64 without a branch per element, then the exact index */
    for (; i + 64 <= n; i += 64) {
        int bad = 0;
        for (size_t k = 0; k < 64; k++) bad |= nonfinite_bits(x + i + k);
        if (bad) break;
    }
    for (; i < n; i++)
        if (nonfinite_bits(x + i)) return (int64_t)i;
    return -1;
}
