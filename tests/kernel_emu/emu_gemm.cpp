// Stand-in for kernels/cuda/gemm.cu (cuBLASLt) in the emulated CUDA backend: the same entry
// points, computed as a naive row-major GEMM with f32 accumulation on host memory (the
// "cuBLAS path" of gemm.cu: out = bias, then the products). cuBLASLt itself is not emulated,
// so the emulated backend never reports a cuBLASLt GEMM (cvene_backend_cuda_gemm_counts: lt
// stays 0) and never fuses the GELU epilogue; tests that assert those are GPU-only.
#include <cuda_runtime.h>

#include <cstdlib>

#include "kernels/backend.h"
#include "kernels/cuda/gemm.h"

struct cvene_cuda_gemm {
    int64_t n_blas;
};

cvene_cuda_gemm *cvene_cuda_gemm_new(char *, size_t) { return static_cast<cvene_cuda_gemm *>(calloc(1, sizeof(cvene_cuda_gemm))); }
void cvene_cuda_gemm_free(cvene_cuda_gemm *g) { free(g); }
void cvene_cuda_gemm_probe_gelu(cvene_backend *) {}
cvene_status cvene_cuda_lt_matmul_half(cvene_backend *, float *, const void *, const void *, cvene_dtype, int, int,
                                       const float *, int, int, int, int *ran) {
    *ran = 0; // no cuBLASLt here: matmul_lp takes its cublasGemmEx path (emulated)
    return CVENE_OK;
}

extern "C" cvene_status cvene_cuda_matmul(cvene_backend *be, float *out, const float *in, const float *w, int ldw,
                                          int trans_w, const float *bias, int M, int K, int N) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                const float wv = trans_w ? w[(size_t)n * ldw + k] : w[(size_t)k * ldw + n];
                acc = std::fma(in[(size_t)m * K + k], wv, acc);
            }
            out[(size_t)m * N + n] = (bias ? bias[n] : 0.0f) + acc;
        }
    if (K > 0 && M > 0 && N > 0) cvene_backend_cuda_gemm(be)->n_blas++;
    return CVENE_OK;
}

extern "C" cvene_status cvene_cuda_matmul_act(cvene_backend *be, float *out, const float *in, const void *w,
                                              cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                              int K, int N, cvene_act act) {
    if (act != CVENE_GELU_TANH && act != CVENE_GELU_ERF && act != CVENE_ACT_RELU && act != CVENE_ACT_SIGMOID &&
        act != CVENE_ACT_TANH && act != CVENE_ACT_NONE) {
        if (be->err && be->err_len) snprintf(be->err, be->err_len, "matmul_act: unknown activation");
        return CVENE_ERR_INVALID_ARG;
    }
    const cvene_status s = be->ops->matmul_lp(be, out, in, w, w_dtype, ldw, trans_w, bias, M, K, N);
    if (s != CVENE_OK || M <= 0 || N <= 0) return s;
    return be->ops->activation(be, out, (size_t)M * (size_t)N, act);
}

extern "C" int cvene_backend_cuda_gelu_epilogue(cvene_backend *) { return 0; }
extern "C" double cvene_backend_cuda_gelu_probe_error(cvene_backend *) { return -2.0; }
extern "C" void cvene_backend_cuda_gemm_counts(cvene_backend *be, int64_t *lt, int64_t *blas) {
    if (lt) *lt = 0;
    if (blas) *blas = cvene_backend_cuda_gemm(be)->n_blas;
}
