/* Host conversions between f32 and the 16-bit float dtypes (see kernels/dtype.h). */
#include "kernels/dtype.h"
#include "kernels/tensor.h"

int cvene_dtype_is_half(cvene_dtype dt) { return dt == CVENE_F16 || dt == CVENE_BF16; }

void cvene_f32_to_half_array(uint16_t *dst, const float *src, size_t n, cvene_dtype dt) {
    if (dt == CVENE_BF16)
        for (size_t i = 0; i < n; i++) dst[i] = cvene_f32_to_bf16(src[i]);
    else
        for (size_t i = 0; i < n; i++) dst[i] = cvene_f32_to_f16(src[i]);
}

void cvene_half_to_f32_array(float *dst, const uint16_t *src, size_t n, cvene_dtype dt) {
    if (dt == CVENE_BF16)
        for (size_t i = 0; i < n; i++) dst[i] = cvene_bf16_to_f32(src[i]);
    else
        for (size_t i = 0; i < n; i++) dst[i] = cvene_f16_to_f32(src[i]);
}

float cvene_round_to_half(float x, cvene_dtype dt) {
    return dt == CVENE_BF16 ? cvene_bf16_to_f32(cvene_f32_to_bf16(x)) : cvene_f16_to_f32(cvene_f32_to_f16(x));
}
