/* Reduced-precision GEMM on the CUDA backend (kernels/backend.h: matmul_lp).
 *
 * out (M, N) = round(in) @ W + bias with W stored in bf16 or f16 and f32 accumulation:
 *  1. k_round_to_half rounds the f32 activations (M, K) to W's dtype into the backend's
 *     grow-only scratch buffer (round-to-nearest-even: __float2bfloat16_rn /
 *     __float2half_rn, the conversions torch's .to(dtype) performs; NaN stays NaN, f16
 *     overflow becomes Inf). The CPU oracle (kernels/cpu/ops_lowp.c) rounds the same way
 *     on the host, so both sides multiply identical operands.
 *  2. one cuBLASLt GEMM (kernels/cuda/gemm.cu: cvene_cuda_lt_matmul_half) with 16-bit A
 *     and B, f32 D, f32 accumulation and the bias in its epilogue; where cuBLASLt has no
 *     acceptable algorithm: out = bias per row (f32), then cublasGemmEx with 16-bit A and B,
 *     f32 C and CUBLAS_COMPUTE_32F. Products of two 16-bit floats are exact in f32 and the
 *     sums are f32, so the result differs from the CPU's only by accumulation order (tensor
 *     cores are allowed here -- they are the point -- and keep f32 accumulation).
 * Nothing waits: the conversion, the bias fill and the GEMM are queued on the backend's
 * stream in order, and the scratch is reused only by later work on that stream. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/act.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/storage.cuh"

namespace {

constexpr int kLpBlock = 256;


unsigned grid_for(size_t n) {
    size_t g = (n + kLpBlock - 1) / kLpBlock;
    const size_t cap = (size_t)1 << 20; /* grid-stride loops cover the rest */
    if (g > cap) g = cap;
    if (g == 0) g = 1;
    return (unsigned)g;
}

/* dst (n) = src (n) rounded to nearest even in H (bf16 or f16) */
template <class H> __global__ void k_round_to_half(H *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        stf(dst + i, src[i]);
}

/* out (n) = round(act(round(y))) in H: the 16-bit GEMM's stored output, then its activation
 * (CVENE_ACT_NONE: round(y)) - matmul_act's two stores of a 16-bit model, in one pass */
template <class H> __global__ void k_store_act(H *out, const float *y, size_t n, int act) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        if (act == CVENE_ACT_NONE) {
            stf(out + i, y[i]);
        } else {
            H g;
            stf(&g, y[i]);
            stf(out + i, act_f(ldf(&g), act));
        }
    }
}

/* out (M, N) = bias broadcast over rows (zeros when bias is NULL) */
__global__ void k_lp_bias_fill(float *out, const float *bias, int N, size_t total) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias ? bias[i % (size_t)N] : 0.0f;
}

/* out (M, N) = x16 (M, K) @ W + bias, f32 out, x16 and W of dt (F16 or BF16), K > 0: one
 * cuBLASLt GEMM with the bias in its epilogue where it has an acceptable algorithm, else out =
 * bias per row (no bias: beta = 0) and cublasGemmEx accumulating into it. Row-major out = x @ W
 * is, read column-major, out^T (N, M) = W^T (N, K) @ x^T (K, M), as cu_matmul: cuBLAS A = W
 * (lda = ldw; op N for (K, N), T for (N, K)), B = x16 (ldb = K), C = out (ldc = N). */
cvene_status gemm_half_f32out(cvene_backend *be, cudaStream_t st, float *out, const void *x16, const void *w,
                              cvene_dtype dt, int ldw, int trans_w, const float *bias, int M, int K, int N) {
    {
        int ran = 0;
        const cvene_status s = cvene_cuda_lt_matmul_half(be, out, x16, w, dt, ldw, trans_w, bias, M, K, N, &ran);
        if (s != CVENE_OK || ran) return s;
    }
    float beta = 0.0f;
    if (bias) { /* out = bias per row, then the GEMM accumulates into it */
        const size_t total = (size_t)M * (size_t)N;
        k_lp_bias_fill<<<grid_for(total), kLpBlock, 0, st>>>(out, bias, N, total);
        CU_CHECK(be, cudaGetLastError());
        beta = 1.0f;
    }
    const float alpha = 1.0f;
    const cudaDataType_t ct = dt == CVENE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    cublasHandle_t blas = static_cast<cublasHandle_t>(cvene_backend_cuda_blas(be));
    CUBLAS_CHECK(be, cublasGemmEx(blas, trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, w, ct, ldw,
                                   x16, ct, K, &beta, out, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return CVENE_OK;
}

} // namespace

extern "C" cvene_status cvene_cuda_matmul_lp(cvene_backend *be, float *out, const float *in, const void *w,
                                             cvene_dtype w_dtype, int ldw, int trans_w, const float *bias,
                                             int M, int K, int N) {
    if (w_dtype == CVENE_F32)
        return be->ops->matmul(be, out, in, static_cast<const float *>(w), ldw, trans_w, bias, M, K, N);
    if (w_dtype != CVENE_F16 && w_dtype != CVENE_BF16)
        return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "matmul_lp: w_dtype must be F32, F16 or BF16");
    if (M <= 0 || N <= 0) return CVENE_OK;
    CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)));
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    const size_t total = (size_t)M * (size_t)N;
    if (K <= 0) { /* out = bias per row (zeros without one) */
        k_lp_bias_fill<<<grid_for(total), kLpBlock, 0, st>>>(out, bias, N, total);
        CU_CHECK(be, cudaGetLastError());
        return CVENE_OK;
    }

    const size_t nx = (size_t)M * (size_t)K;
    void *xs = nullptr;
    {
        const cvene_status s = cvene_backend_cuda_scratch(be, nx * sizeof(uint16_t), &xs);
        if (s != CVENE_OK) return s;
    }
    if (w_dtype == CVENE_BF16)
        k_round_to_half<<<grid_for(nx), kLpBlock, 0, st>>>(static_cast<__nv_bfloat16 *>(xs), in, nx);
    else
        k_round_to_half<<<grid_for(nx), kLpBlock, 0, st>>>(static_cast<__half *>(xs), in, nx);
    CU_CHECK(be, cudaGetLastError());
    return gemm_half_f32out(be, st, out, xs, w, w_dtype, ldw, trans_w, bias, M, K, N);
}

/* cvene_ops16.matmul_act on CUDA: out (M, N) = round(act(round(in @ W + bias))) with in, W and
 * out 16-bit (dt), f32 bias and accumulation - the CPU oracle's two stores:
 *  - one cuBLASLt GEMM writing dt directly (f32 bias added in its epilogue, then one rounding),
 *    then the 16-bit activation kernel in place (widen, act, round);
 *  - where cuBLASLt has no such algorithm: the GEMM writes f32 into the backend's scratch (a
 *    cuBLASLt GEMM with f32 D, or out = bias then GemmEx as matmul_lp) and k_store_act rounds
 *    it to dt, applies the activation to the rounded value and rounds again, in one pass (one
 *    f32 (M, N) write and read more). */
extern "C" cvene_status cvene_cuda_matmul16(cvene_backend *be, cvene_dtype dt, void *out, const void *in,
                                            const void *w, int ldw, int trans_w, const float *bias, int M, int K,
                                            int N, cvene_act act) {
    if (dt == CVENE_F32)
        return be->ops->matmul_act(be, static_cast<float *>(out), static_cast<const float *>(in), w, CVENE_F32, ldw,
                                   trans_w, bias, M, K, N, act);
    if (dt != CVENE_F16 && dt != CVENE_BF16)
        return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "ops16.matmul_act: dt must be F32, F16 or BF16");
    if (!act_valid(act)) {
        char m[64];
        snprintf(m, sizeof m, "ops16.matmul_act: unknown activation %d", (int)act);
        return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, m);
    }
    if (M <= 0 || N <= 0) return CVENE_OK;
    CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)));
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    const size_t total = (size_t)M * (size_t)N;
    if (K > 0) { /* one GEMM writing dt (bias in f32, one rounding), then the activation in place */
        int ran = 0;
        const cvene_status s = cvene_cuda_lt_matmul_half_out(be, out, in, w, dt, ldw, trans_w, bias, M, K, N, &ran);
        if (s != CVENE_OK) return s;
        if (ran) return be->ops->ops16->activation(be, dt, out, total, act);
    }
    void *ys = nullptr;
    {
        const cvene_status s = cvene_backend_cuda_scratch(be, total * sizeof(float), &ys);
        if (s != CVENE_OK) return s;
    }
    float *y = static_cast<float *>(ys);
    if (K > 0) {
        const cvene_status s = gemm_half_f32out(be, st, y, in, w, dt, ldw, trans_w, bias, M, K, N);
        if (s != CVENE_OK) return s;
    } else { /* empty sum: y = bias per row (zeros without one) */
        k_lp_bias_fill<<<grid_for(total), kLpBlock, 0, st>>>(y, bias, N, total);
        CU_CHECK(be, cudaGetLastError());
    }
    if (dt == CVENE_BF16)
        k_store_act<<<grid_for(total), kLpBlock, 0, st>>>(static_cast<__nv_bfloat16 *>(out), y, total, (int)act);
    else
        k_store_act<<<grid_for(total), kLpBlock, 0, st>>>(static_cast<__half *>(out), y, total, (int)act);
    CU_CHECK(be, cudaGetLastError());
    return CVENE_OK;
}
