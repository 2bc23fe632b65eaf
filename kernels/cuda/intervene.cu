/* Fused intervention kernels (kernels/backend.h: iv_units, iv_rotated) on the CUDA
 * backend's stream. Same results as the CPU reference (kernels/cpu/ops_intervene.c):
 * iv_units is exact (copies, one add or subtract per float); iv_rotated accumulates in
 * f32 in a different order (warp trees), so it agrees to f32 rounding.
 *
 * iv_units: a work item is one chunk of kChunk floats of one row of one unit, handled by
 * one warp; rows longer than a chunk are split so a few long units (one position of a
 * 4096-wide stream) still spread over many SMs. Rows whose start is 16-byte aligned (and
 * whose source is, or is absent) use float4 loads; the alignment test is per item, since
 * offsets live on the device. Subspace rows walk their dims list (scattered accesses).
 *
 * iv_rotated: one block per V consecutive vectors; the differences s - x sit in shared
 * memory (V, D), each warp takes rows j of W for the dot products (V at once, so W is
 * read once per V vectors), then threads over d add W^T proj to x. */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"

namespace {

constexpr int kIvBlock = 256;    /* threads per block (8 warps) */
constexpr int kChunk = 1024;     /* floats of a row per warp item (multiple of 4) */
constexpr int kRotBlock = 256;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kMaxGrid = 1 << 20; /* grid-stride loops cover the rest */


/* ---- iv_units ---------------------------------------------------------- */

template <int OP> __device__ __forceinline__ void op1(float &x, float &s) {
    if (OP == CVENE_IVOP_VANILLA) x = s;
    else if (OP == CVENE_IVOP_ADDITION) x = x + s;
    else if (OP == CVENE_IVOP_SUBTRACTION) x = x - s;
    else if (OP == CVENE_IVOP_ZERO) x = 0.0f;
    else s = x; /* COLLECT */
}

template <int OP> __device__ __forceinline__ void op4(float4 &x, float4 &s) {
    op1<OP>(x.x, s.x);
    op1<OP>(x.y, s.y);
    op1<OP>(x.z, s.z);
    op1<OP>(x.w, s.w);
}

/* floats [lo, hi) of one full row; lane-strided, float4 when both rows are aligned */
template <int OP> __device__ void row_span(float *xr, float *sr, int lo, int hi, int lane) {
    constexpr bool reads_s = OP != CVENE_IVOP_ZERO;
    constexpr bool writes_x = OP != CVENE_IVOP_COLLECT;
    const bool al = ((uintptr_t)(xr + lo) & 15) == 0 && (!reads_s || ((uintptr_t)(sr + lo) & 15) == 0);
    int d = lo;
    if (al) {
        const int n4 = (hi - lo) >> 2;
        float4 *x4 = reinterpret_cast<float4 *>(xr + lo);
        float4 *s4 = reads_s ? reinterpret_cast<float4 *>(sr + lo) : nullptr;
        for (int i = lane; i < n4; i += 32) {
            float4 xv = make_float4(0.f, 0.f, 0.f, 0.f), sv = xv;
            if (OP != CVENE_IVOP_VANILLA && OP != CVENE_IVOP_ZERO) xv = x4[i];
            if (reads_s && OP != CVENE_IVOP_COLLECT) sv = s4[i];
            op4<OP>(xv, sv);
            if (writes_x) x4[i] = xv;
            else s4[i] = sv;
        }
        d = lo + (n4 << 2);
    }
    for (int i = d + lane; i < hi; i += 32) {
        float sv = 0.0f, zero = 0.0f;
        float &s = reads_s ? sr[i] : zero;
        if (reads_s && OP != CVENE_IVOP_COLLECT) sv = s;
        float xv = xr[i];
        op1<OP>(xv, sv);
        if (writes_x) xr[i] = xv;
        else s = sv;
    }
}

template <int OP>
__global__ void k_iv_units(float *x, const int64_t *x_off, int64_t x_rs, float *src, const int64_t *src_off,
                           int64_t src_rs, const int32_t *dims, const int64_t *dims_off, const int32_t *dims_n,
                           int R, int D, int chunks, int64_t items) {
    const int lane = threadIdx.x & 31;
    const int64_t w0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t it = w0; it < items; it += nw) { /* uniform within a warp */
        const int c = (int)(it % chunks);
        const int64_t row = it / chunks;
        const int u = (int)(row / R), r = (int)(row % R);
        const int nd = dims_n ? dims_n[u] : -1;
        float *xr = x + x_off[u] + (int64_t)r * x_rs;
        float *sr = OP == CVENE_IVOP_ZERO ? nullptr : src + src_off[u] + (int64_t)r * src_rs;
        const int lo = c * kChunk;
        if (nd < 0) {
            if (lo < D) row_span<OP>(xr, sr, lo, min(D, lo + kChunk), lane);
            continue;
        }
        /* subspace: entries [lo, hi) of the dims list; the last chunk takes any excess */
        const int hi = c == chunks - 1 ? nd : min(nd, lo + kChunk);
        const int32_t *du = dims + dims_off[u];
        for (int k = lo + lane; k < hi; k += 32) {
            const int d = du[k];
            float xv = xr[d], zero = 0.0f;
            float &s = OP == CVENE_IVOP_ZERO ? zero : sr[d];
            op1<OP>(xv, s);
            if (OP != CVENE_IVOP_COLLECT) xr[d] = xv;
        }
    }
}

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

template <int OP> cvene_status launch_units(cvene_backend *be, cudaStream_t st, float *x, const int64_t *x_off,
                                             int64_t x_rs, float *src, const int64_t *src_off, int64_t src_rs,
                                             const int32_t *dims, const int64_t *dims_off, const int32_t *dims_n,
                                             int n, int R, int D) {
    const int chunks = (D + kChunk - 1) / kChunk;
    const int64_t items = (int64_t)n * R * chunks;
    int64_t blocks = (items + (kIvBlock / 32) - 1) / (kIvBlock / 32);
    if (blocks > kMaxGrid) blocks = kMaxGrid;
    k_iv_units<OP><<<(unsigned)blocks, kIvBlock, 0, st>>>(x, x_off, x_rs, src, src_off, src_rs, dims, dims_off,
                                                         dims_n, R, D, chunks, items);
    CU_CHECK(be, cudaGetLastError());
    return CVENE_OK;
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

cvene_status cvene_cuda_iv_units(cvene_backend *be, float *x, const int64_t *x_off, int64_t x_rs, float *src,
                                 const int64_t *src_off, int64_t src_rs, const int32_t *dims,
                                 const int64_t *dims_off, const int32_t *dims_n, int n, int R, int D, int op) {
    if (op < CVENE_IVOP_VANILLA || op > CVENE_IVOP_COLLECT)
        return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "iv_units: unknown op");
    if (n <= 0 || R <= 0 || D <= 0) return CVENE_OK;
    if (op != CVENE_IVOP_ZERO && (!src || !src_off))
        return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "iv_units: this op needs a source");
    CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)));
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
#define IV_ARGS be, st, x, x_off, x_rs, src, src_off, src_rs, dims, dims_off, dims_n, n, R, D
    switch (op) {
    case CVENE_IVOP_VANILLA: return launch_units<CVENE_IVOP_VANILLA>(IV_ARGS);
    case CVENE_IVOP_ADDITION: return launch_units<CVENE_IVOP_ADDITION>(IV_ARGS);
    case CVENE_IVOP_SUBTRACTION: return launch_units<CVENE_IVOP_SUBTRACTION>(IV_ARGS);
    case CVENE_IVOP_ZERO: return launch_units<CVENE_IVOP_ZERO>(IV_ARGS);
    default: return launch_units<CVENE_IVOP_COLLECT>(IV_ARGS);
    }
#undef IV_ARGS
}

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
