/* Fused unit intervention kernel (kernels/backend.h: iv_units) on the CUDA backend's
 * stream. Exact against the CPU reference (kernels/cpu/ops_intervene.c): copies, one add
 * or subtract per float.
 *
 * iv_units: a work item is one chunk of kChunk floats of one row of one unit, handled by
 * one warp; rows longer than a chunk are split so a few long units (one position of a
 * 4096-wide stream) still spread over many SMs. Rows whose start is 16-byte aligned (and
 * whose source is, or is absent) use float4 loads; the alignment test is per item, since
 * offsets live on the device. Subspace rows walk their dims list (subspace_span).
 * (iv_rotated lives in kernels/cuda/iv_rotated.cu.) */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"

namespace {

constexpr int kIvBlock = 256;    /* threads per block (8 warps) */
constexpr int kChunk = 1024;     /* floats of a row per warp item (multiple of 4) */
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

/* entries [lo, hi) of one row's dims list. Each lane takes kIlp entries per step and
 * issues all their loads before any store, so a step costs one memory round trip instead
 * of kIlp (a plain loop serialises them: the compiler cannot move a load of s or x above a
 * store to x that may alias it). The engine passes sorted dims, so neighbouring lanes
 * share sectors, and turns a contiguous subspace into a whole-row call (engine/run.c). */
constexpr int kIlp = 8;
template <int OP>
__device__ void subspace_span(float *xr, float *sr, const int32_t *du, int lo, int hi, int lane) {
    constexpr bool reads_x = OP != CVENE_IVOP_VANILLA && OP != CVENE_IVOP_ZERO;
    for (int k0 = lo; k0 < hi; k0 += 32 * kIlp) {
        int d[kIlp];
        float xv[kIlp], sv[kIlp];
#pragma unroll
        for (int j = 0; j < kIlp; j++) {
            const int k = k0 + j * 32 + lane;
            d[j] = k < hi ? du[k] : -1;
        }
#pragma unroll
        for (int j = 0; j < kIlp; j++) {
            xv[j] = d[j] >= 0 && (reads_x || OP == CVENE_IVOP_COLLECT) ? xr[d[j]] : 0.0f;
            sv[j] = d[j] >= 0 && OP != CVENE_IVOP_ZERO && OP != CVENE_IVOP_COLLECT ? sr[d[j]] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kIlp; j++) {
            if (d[j] < 0) continue;
            op1<OP>(xv[j], sv[j]);
            if (OP == CVENE_IVOP_COLLECT) sr[d[j]] = sv[j];
            else xr[d[j]] = xv[j];
        }
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
        subspace_span<OP>(xr, sr, dims + dims_off[u], lo, hi, lane);
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
