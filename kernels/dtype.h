/* Arrays of f32 <-> f16 / bf16 on the host, built on the scalar conversions of
 * kernels/tensor.c (round-to-nearest-even as torch's .to(dtype); Inf stays Inf, NaN
 * stays a (quiet) NaN, f16 overflow becomes Inf, f16 subnormals are kept).
 * Used by the reduced-precision GEMM (kernels/cpu/ops_lowp.c) and by weight loading
 * when a context asks for bf16/f16 weights (models/weights.c). */
#ifndef CVENE_DTYPE_H
#define CVENE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include "cvene.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 for F16 and BF16 (the 16-bit float dtypes matmul_lp accepts). */
int cvene_dtype_is_half(cvene_dtype dt);
/* dst (n) = src (n) rounded to dt (F16 or BF16), as 16-bit patterns. */
void cvene_f32_to_half_array(uint16_t *dst, const float *src, size_t n, cvene_dtype dt);
/* dst (n) = the f32 value of each dt (F16 or BF16) pattern in src (exact). */
void cvene_half_to_f32_array(float *dst, const uint16_t *src, size_t n, cvene_dtype dt);
/* x rounded to dt (F16 or BF16) and back: the f32 the reduced-precision GEMM multiplies. */
float cvene_round_to_half(float x, cvene_dtype dt);

#ifdef __cplusplus
}
#endif
#endif
