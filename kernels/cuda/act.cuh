/* The element-wise activations of the CUDA backend (kernels/backend.h: cvene_act), shared
 * by the activation kernel and the 16-bit GEMM's output pass (kernels/cuda/lowp.cu). act is
 * validated on the host (act_valid); CVENE_ACT_NONE is never passed to act_f (callers skip it). */
#ifndef CVENE_CUDA_ACT_CUH
#define CVENE_CUDA_ACT_CUH

#include <cuda_runtime.h>
#include <math.h>

#include "kernels/backend.h"

/* act is one of cvene_act's values (host side, before a launch) */
inline bool act_valid(cvene_act act) {
    return act == CVENE_GELU_TANH || act == CVENE_GELU_ERF || act == CVENE_ACT_RELU || act == CVENE_ACT_SIGMOID ||
           act == CVENE_ACT_TANH || act == CVENE_ACT_NONE;
}

__device__ __forceinline__ float act_f(float v, int act) {
    const float k0 = 0.7978845608028654f;  /* sqrt(2/pi) */
    const float rs2 = 0.7071067811865476f; /* 1/sqrt(2) */
    switch (act) {
    case CVENE_GELU_TANH: return 0.5f * v * (1.0f + tanhf(k0 * (v + 0.044715f * v * v * v)));
    case CVENE_GELU_ERF: return 0.5f * v * (1.0f + erff(v * rs2));
    case CVENE_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case CVENE_ACT_TANH: return tanhf(v);
    default: return v > 0.0f ? v : 0.0f; /* CVENE_ACT_RELU (validated on the host) */
    }
}

#endif
