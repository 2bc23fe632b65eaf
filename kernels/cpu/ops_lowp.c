/* CPU reference for matmul_lp (kernels/backend.h): the reduced-precision GEMM the CUDA
 * backend runs with bf16 / f16 operands and f32 accumulation.
 *
 * The oracle rounds exactly what the CUDA side rounds -- every input activation, and the
 * weights are already stored in w_dtype -- converts both back to f32 (exact: every f16 /
 * bf16 value is an f32) and multiplies them with the f32 matmul (OpenBLAS sgemm). Each
 * product of two 16-bit floats is exact in f32 (11 + 11 or 8 + 8 significand bits), so
 * the two backends differ only in the order of the f32 accumulation.
 *
 * Clarity over speed: each call converts into freshly allocated f32 copies. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/dtype.h"
#include "kernels/backend.h"

static cvene_status lp_fail(cvene_backend *be, cvene_status st, const char *msg) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "matmul_lp: %s", msg);
    return st;
}

cvene_status cvene_cpu_matmul_lp(cvene_backend *be, float *out, const float *in, const void *w,
                                 cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                 int K, int N) {
    if (w_dtype == CVENE_F32)
        return be->ops->matmul(be, out, in, (const float *)w, ldw, trans_w, bias, M, K, N);
    if (!cvene_dtype_is_half(w_dtype)) return lp_fail(be, CVENE_ERR_INVALID_ARG, "w_dtype must be F32, F16 or BF16");
    if (M <= 0 || N <= 0) return CVENE_OK;
    if (K <= 0) { /* empty sum: out = bias (or zeros), as the CUDA matmul */
        for (size_t i = 0; i < (size_t)M * (size_t)N; i++) out[i] = bias ? bias[i % (size_t)N] : 0.0f;
        return CVENE_OK;
    }

    /* W packed: trans_w = 0 -> (K, N) with ld N; trans_w = 1 -> (N, K) with ld K */
    const size_t rows = trans_w ? (size_t)N : (size_t)K, cols = trans_w ? (size_t)K : (size_t)N;
    float *wf = malloc(sizeof(float) * rows * cols);
    float *xf = malloc(sizeof(float) * (size_t)M * (size_t)K);
    if (!wf || !xf) {
        free(wf);
        free(xf);
        return lp_fail(be, CVENE_ERR_OOM, "out of memory for the f32 copies of the operands");
    }
    const uint16_t *wh = (const uint16_t *)w;
    for (size_t r = 0; r < rows; r++) cvene_half_to_f32_array(wf + r * cols, wh + r * (size_t)ldw, cols, w_dtype);
    const size_t nx = (size_t)M * (size_t)K;
    for (size_t i = 0; i < nx; i++) xf[i] = cvene_round_to_half(in[i], w_dtype);
    cvene_status st = be->ops->matmul(be, out, xf, wf, (int)cols, trans_w, bias, M, K, N);
    free(wf);
    free(xf);
    return st;
}
