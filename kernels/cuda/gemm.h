/* The CUDA backend's f32 GEMM state (kernels/cuda/gemm.cu), private to the CUDA files:
 * a cuBLASLt handle, one workspace allocated when the backend is created, and a small
 * cache of plans (descriptors + chosen algorithm) per problem shape, so a forward pass
 * allocates nothing and picks no algorithm after its first call of each shape. */
#ifndef CVENE_CUDA_GEMM_H
#define CVENE_CUDA_GEMM_H

#include <cuda_runtime.h>

#include <stddef.h>

#include "kernels/backend.h"

typedef struct cvene_cuda_gemm cvene_cuda_gemm;

/* Creates the state on the current device (the caller has set it); on failure returns
 * NULL and writes a message to err. Allocates the workspace (cudaMalloc) once. */
cvene_cuda_gemm *cvene_cuda_gemm_new(char *err, size_t err_len);
/* Frees the state. The caller has synchronised the stream that used the workspace and
 * made the device current. NULL is a no-op. */
void cvene_cuda_gemm_free(cvene_cuda_gemm *g);
/* Decides once, when the backend is created, whether matmul_act may fuse gelu_new into the
 * cuBLASLt epilogue (see gemm.cu); waits for the stream. Never fails: any error means no. */
void cvene_cuda_gemm_probe_gelu(cvene_backend *be);
/* For kernels/cuda/lowp.cu: out (M, N) = in16 @ W + bias with 16-bit in16 and W (dt F16 or
 * BF16; layout, ldw and trans_w as matmul), f32 out and bias, through cuBLASLt with the bias
 * in the epilogue and f32 accumulation. *ran = 0 and nothing queued when no acceptable
 * algorithm exists (or dt is not 16-bit); the caller then runs its own path. */
cvene_status cvene_cuda_lt_matmul_half(cvene_backend *be, float *out, const void *in16, const void *w, cvene_dtype dt,
                                       int ldw, int trans_w, const float *bias, int M, int K, int N, int *ran);
/* For kernels/cuda/lowp.cu: out16 (M, N) = round(in16 @ W + bias), in16, W and out16 all of dt
 * (F16 or BF16), f32 bias and accumulation, one cuBLASLt GEMM writing dt; *ran = 0 and nothing
 * queued when no acceptable algorithm exists. */
cvene_status cvene_cuda_lt_matmul_half_out(cvene_backend *be, void *out16, const void *in16, const void *w,
                                           cvene_dtype dt, int ldw, int trans_w, const float *bias, int M, int K, int N,
                                           int *ran);
/* The state of a CUDA backend (kernels/cuda/backend_cuda.cu). */
cvene_cuda_gemm *cvene_backend_cuda_gemm(cvene_backend *be);

#endif
