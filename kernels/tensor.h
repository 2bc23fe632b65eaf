/* Tensors (up to 4-D, f32/f16/bf16/i32, CPU or CUDA) and the activation arena. */
#ifndef CVENE_TENSOR_H
#define CVENE_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "cvene.h"

typedef cvene_tensor_view cvene_tensor; /* same layout as the public view */

size_t cvene_dtype_size(cvene_dtype t);
const char *cvene_dtype_name(cvene_dtype t);
int64_t cvene_tensor_numel(const cvene_tensor *t);
size_t cvene_tensor_nbytes(const cvene_tensor *t);
cvene_tensor cvene_tensor_make(void *data, cvene_dtype dt, cvene_device dev, int ndim,
                               const int64_t *shape);

/* Scalar conversion helpers (round-to-nearest-even, as torch). */
float cvene_f16_to_f32(uint16_t h);
float cvene_bf16_to_f32(uint16_t h);
uint16_t cvene_f32_to_f16(float f);
uint16_t cvene_f32_to_bf16(float f);

/* Index of the first NaN or infinity among x[0 .. n), or -1 when all are finite (host memory;
 * a bit test per element, as fast as reading x). */
int64_t cvene_first_nonfinite(const float *x, size_t n);

/* The activation arena: one allocation sized before a run, carved by a bump
 * pointer (llm.c's pattern). Sizing pass: call with base == NULL to count. */
typedef struct {
    char *base;      /* NULL while sizing */
    size_t used, cap;
} cvene_arena;

/* Reserve n f32-aligned bytes (256-byte aligned); returns NULL while sizing. */
void *cvene_arena_take(cvene_arena *a, size_t nbytes);

#endif
