/* Fused rotated-subspace / low-rank intervention kernel (kernels/backend.h: iv_rotated)
 * on the CUDA backend's stream. Agrees with the CPU reference (kernels/cpu/ops_intervene.c)
 * to f32 rounding: it accumulates in f32 in a different order (warp trees).
 *
 * One block per V consecutive vectors; the differences s - x sit in shared memory (V, D),
 * each warp takes rows j of W for the dot products (V at once, so W is read once per V
 * vectors), then threads over d add W^T proj to x. */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"

namespace {

constexpr int kRotBlock = 256;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kMaxGrid = 1 << 20; /* grid-stride loops cover the rest */

/* ---- iv_rotated -------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

template <bool TRANS> __device__ __forceinline__ float w_at(const float *W, int j, int d, int D, int k) {
    return TRANS ? W[(int64_t)d * k + j] : W[(int64_t)j * D + d];
}

/* dynamic shared memory: delta (V, D) then proj (V, k) */
template <int V, bool TRANS>
__global__ void k_iv_rotated(float *x, const int64_t *x_off, const float *s, const int64_t *s_off, const float *W,
                             int n, int D, int k) {
    extern __shared__ float sm[];
    float *delta = sm, *proj = sm + (size_t)V * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int64_t g = blockIdx.x; g * V < n; g += gridDim.x) {
        const int64_t i0 = g * V;
        const int nv = (int)min((int64_t)V, (int64_t)n - i0);
        for (int v = 0; v < V; v++) {
            const int64_t i = i0 + v;
            const float *xi = v < nv ? x + (x_off ? x_off[i] : i * D) : nullptr;
            const float *si = v < nv ? s + (s_off ? s_off[i] : i * D) : nullptr;
            for (int d = threadIdx.x; d < D; d += blockDim.x) delta[(size_t)v * D + d] = v < nv ? si[d] - xi[d] : 0.0f;
        }
        __syncthreads();
        for (int j = warp; j < k; j += nwarps) { /* proj[v][j] = W_j . delta_v */
            float acc[V];
#pragma unroll
            for (int v = 0; v < V; v++) acc[v] = 0.0f;
            for (int d = lane; d < D; d += 32) {
                const float w = w_at<TRANS>(W, j, d, D, k);
#pragma unroll
                for (int v = 0; v < V; v++) acc[v] += w * delta[(size_t)v * D + d];
            }
#pragma unroll
            for (int v = 0; v < V; v++) {
                const float t = warp_sum(acc[v]);
                if (lane == 0) proj[(size_t)v * k + j] = t;
            }
        }
        __syncthreads();
        for (int d = threadIdx.x; d < D; d += blockDim.x) { /* x_v[d] += sum_j W[j, d] proj[v][j] */
            float acc[V];
#pragma unroll
            for (int v = 0; v < V; v++) acc[v] = 0.0f;
            for (int j = 0; j < k; j++) {
                const float w = w_at<TRANS>(W, j, d, D, k);
#pragma unroll
                for (int v = 0; v < V; v++) acc[v] += w * proj[(size_t)v * k + j];
            }
#pragma unroll
            for (int v = 0; v < V; v++)
                if (v < nv) {
                    const int64_t i = i0 + v;
                    float *xi = x + (x_off ? x_off[i] : i * D);
                    xi[d] += acc[v];
                }
        }
        __syncthreads(); /* shared memory is refilled by the next group */
    }
}

template <int V, bool TRANS>
cvene_status launch_rotated(cvene_backend *be, cudaStream_t st, size_t smem, float *x, const int64_t *x_off,
                            const float *s, const int64_t *s_off, const float *W, int n, int D, int k) {
    auto kern = k_iv_rotated<V, TRANS>;
    if (smem > 48 * 1024) /* beyond the default: opt in (host-side attribute, no sync) */
        CU_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int64_t blocks = ((int64_t)n + V - 1) / V;
    if (blocks > kMaxGrid) blocks = kMaxGrid;
    kern<<<(unsigned)blocks, kRotBlock, smem, st>>>(x, x_off, s, s_off, W, n, D, k);
    CU_CHECK(be, cudaGetLastError());
    return CVENE_OK;
}

} // namespace

cvene_status cvene_cuda_iv_rotated(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                                   const int64_t *s_off, const float *W, int n, int D, int k, int trans) {
    if (n <= 0 || D <= 0 || k <= 0) return CVENE_OK;
    if (!x || !s || !W) return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "iv_rotated: NULL buffer");
    const int dev = cvene_backend_cuda_ordinal(be);
    CU_CHECK(be, cudaSetDevice(dev));
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    int optin = 0;
    CU_CHECK(be, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const size_t per = sizeof(float) * ((size_t)D + (size_t)k); /* one vector's delta and proj */
    /* four vectors per block share each read of W once there are enough vectors to keep
     * every SM busy; otherwise one per block */
    const int V = n >= 1024 && 4 * per <= (size_t)optin ? 4 : 1;
    if (V * per > (size_t)optin) {
        char m[160];
        snprintf(m, sizeof m, "iv_rotated: D + k = %zu floats exceed the %d bytes of shared memory per block",
                 per / sizeof(float), optin);
        return CUDA_OP_FAIL(be, CVENE_ERR_UNSUPPORTED, m);
    }
    if (V == 4)
        return trans ? launch_rotated<4, true>(be, st, 4 * per, x, x_off, s, s_off, W, n, D, k)
                     : launch_rotated<4, false>(be, st, 4 * per, x, x_off, s, s_off, W, n, D, k);
    return trans ? launch_rotated<1, true>(be, st, per, x, x_off, s, s_off, W, n, D, k)
                 : launch_rotated<1, false>(be, st, per, x, x_off, s, s_off, W, n, D, k);
}
