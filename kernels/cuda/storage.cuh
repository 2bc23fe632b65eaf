/* Loads and stores of activation elements for kernels templated on their storage type T:
 * float, __nv_bfloat16 or __half. Loads widen to f32 (exact); stores round to nearest even
 * (__float2bfloat16_rn / __float2half_rn, the conversions torch's .to(dtype) performs; NaN
 * stays NaN, f16 overflow becomes Inf). For float both are plain accesses, so an f32 kernel
 * instantiated from a template is the f32 kernel it always was. */
#ifndef CVENE_CUDA_STORAGE_CUH
#define CVENE_CUDA_STORAGE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

__device__ __forceinline__ float ldf(const float *p) { return *p; }
__device__ __forceinline__ float ldf(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float ldf(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ void stf(float *p, float v) { *p = v; }
__device__ __forceinline__ void stf(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void stf(__half *p, float v) { *p = __float2half_rn(v); }

#endif
