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
/* The state of a CUDA backend (kernels/cuda/backend_cuda.cu). */
cvene_cuda_gemm *cvene_backend_cuda_gemm(cvene_backend *be);

#endif
