/* CUDA backend: the op table of kernels/backend.h on one NVIDIA device.
 *
 * Every op computes the same thing as the CPU reference (kernels/cpu/ops_cpu.c),
 * in f32, with the same accumulations in double where the CPU uses double
 * (layernorm statistics, softmax sums), so results agree to f32 rounding of a
 * different summation order. f32 GEMMs go to cuBLASLt with CUBLAS_COMPUTE_32F, the bias
 * (and gelu_new, for matmul_act) in the GEMM's epilogue, no TF32 and no emulation
 * (kernels/cuda/gemm.cu; the cuBLAS handle here is its fallback and matmul_lp's).
 *
 * All work is queued on the backend's own stream; ops return as soon as the work
 * is queued, except to_host and sync, which wait for it. Every CUDA / cuBLAS call
 * and every kernel launch is checked; a failure returns CVENE_ERR_BACKEND (or
 * CVENE_ERR_OOM for a failed allocation) and leaves "file:line: call: reason" in
 * be->err.
 *
 * Launches: element-wise ops use 256-thread blocks with a grid-stride loop; row
 * ops (layernorm, softmax, attn_probs) use one block per row and loop over the
 * row, so any row length works; nothing assumes sizes are multiples of a block. */
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/act.cuh"
#include "kernels/cuda/storage.cuh"

namespace {

struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cvene_cuda_gemm *gemm; /* cuBLASLt handle, workspace and plans (kernels/cuda/gemm.cu) */
    /* grow-only scratch (matmul_lp's rounded activations), allocated stream-ordered */
    void *scratch;
    size_t scratch_cap;
};

inline cuda_impl *impl_of(cvene_backend *be) { return static_cast<cuda_impl *>(be->impl); }

} // namespace

/* Make the backend's device current for this thread (two contexts on two devices may
 * share a thread; cudaSetDevice on the already-current device is cheap). */
#define ENTER(be) CU_CHECK(be, cudaSetDevice(impl_of(be)->device))

namespace {

constexpr int kEltBlock = 256;  /* element-wise kernels */
constexpr int kRowBlock = 256;  /* layernorm, softmax: one block per row */
constexpr int kAttnBlock = 128; /* attn_probs: one block per (b, h, i) query row */
constexpr int kApplyRows = 8;   /* attn_apply: query rows per block (share v loads) */
constexpr unsigned kFull = 0xffffffffu;
constexpr size_t kMaxGrid = 2147483647u; /* gridDim.x limit for one-block-per-row kernels */

/* Grid for a grid-stride loop over n elements. */
unsigned grid_for(size_t n, int block) {
    size_t g = (n + (size_t)block - 1) / (size_t)block;
    const size_t cap = (size_t)1 << 20;
    if (g > cap) g = cap;
    if (g == 0) g = 1;
    return (unsigned)g;
}

/* ---- block reductions (blockDim.x a multiple of 32, at most 1024) --------
 * The result is returned to every thread. Each begins with __syncthreads so the
 * shared scratch can be reused by consecutive calls; the trailing one makes global
 * and shared writes made before the call visible to the whole block. Order is fixed
 * for a given block size, so results are deterministic. */
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

__device__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        float x = lane < nw ? sh[lane] : -INFINITY;
        x = warp_max(x);
        if (lane == 0) sh[0] = x;
    }
    __syncthreads();
    return sh[0];
}

__device__ double block_sum(double v, double *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        double x = lane < nw ? sh[lane] : 0.0;
        x = warp_sum_d(x);
        if (lane == 0) sh[0] = x;
    }
    __syncthreads();
    return sh[0];
}

/* ---- kernels ----------------------------------------------------------- *
 * Templated on the storage type T of the activations (float, __nv_bfloat16, __half;
 * kernels/cuda/storage.cuh): they load with ldf (widening to f32), compute in f32 / double
 * exactly as before, and store with stf (rounding once). T = float is the f32 op. */

/* out (N, C) = wte[ids[n]] + wpe[pos ? pos[n] : n % T] */
template <class T>
__global__ void k_embedding(T *out, const int32_t *ids, const int32_t *pos, const float *wte,
                            const float *wpe, int Tn, int C, size_t total) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t n = idx / (size_t)C, c = idx % (size_t)C;
        const int64_t p = pos ? (int64_t)pos[n] : (int64_t)(n % (size_t)Tn);
        stf(out + idx, wte[(int64_t)ids[n] * C + (int64_t)c] + wpe[p * C + (int64_t)c]);
    }
}

/* The rest of one row's layernorm once each thread holds s, the sum of its elements
 * (c = threadIdx.x, + blockDim.x, ...): mean and (biased) variance in double, two passes,
 * as the CPU, then the normalised row. Shared by k_layernorm and k_residual_layernorm so
 * the two produce the same bits (same sums in the same order, same rounding). */
template <class T>
__device__ __forceinline__ void ln_finish(T *o, const T *x, const float *w, const float *b, int C, float eps,
                                          double s, double *sh) {
    const double mean = block_sum(s, sh) / C;
    double v = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const double d = ldf(x + c) - mean;
        v += d * d;
    }
    const double var = block_sum(v, sh) / C;
    const float m = (float)mean, rstd = (float)(1.0 / sqrt(var + eps));
    for (int c = threadIdx.x; c < C; c += blockDim.x) stf(o + c, (ldf(x + c) - m) * rstd * w[c] + b[c]);
}

/* One block per row. */
template <class T>
__global__ void k_layernorm(T *out, const T *in, const float *w, const float *b, int C, float eps) {
    __shared__ double sh[32];
    const T *x = in + (int64_t)blockIdx.x * C;
    double s = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ldf(x + c);
    ln_finish(out + (int64_t)blockIdx.x * C, x, w, b, C, eps, s, sh);
}

/* One block per row: x += y (one f32 add per element, as k_residual_add, stored), summed
 * while it is written (the stored, rounded value), then the layernorm of the updated row. The
 * later passes re-read x elements this same thread wrote, from L1/L2 rather than DRAM for
 * rows of a few thousand elements. */
template <class T>
__global__ void k_residual_layernorm(T *x, const T *y, T *out, const float *w, const float *b, int C, float eps) {
    __shared__ double sh[32];
    T *xr = x + (int64_t)blockIdx.x * C;
    const T *yr = y + (int64_t)blockIdx.x * C;
    double s = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        stf(xr + c, ldf(xr + c) + ldf(yr + c));
        s += ldf(xr + c);
    }
    ln_finish(out + (int64_t)blockIdx.x * C, xr, w, b, C, eps, s, sh);
}

/* Where one attn_probs row keeps its f32 scores and exponentials: in place in probs for
 * f32 storage, in dynamic shared memory after the query otherwise (rounding them in probs
 * would round twice). */
__device__ __forceinline__ float *score_row(float *p, float *sm) { return (void)sm, p; }
template <class T> __device__ __forceinline__ float *score_row(T *, float *sm) { return sm; }

/* One block per query row r = (b, h, i). Warps take keys j (any Tk); lanes split D.
 * Scores, then max, exp and the double sum exactly as the CPU; probs stored once. */
template <class T>
__global__ void k_attn_probs(T *probs, const T *q, size_t q_bs, const T *k, size_t k_bs,
                             const int32_t *key_mask, int Tq, int Tk, int H, int D, float scale) {
    extern __shared__ float sm[]; /* (D) this row's query, then (Tk) scores unless T is float */
    __shared__ float shf[32];
    __shared__ double shd[32];
    float *qs = sm;
    const int64_t r = blockIdx.x;
    const int i = (int)(r % Tq);
    const int h = (int)((r / Tq) % H);
    const int64_t b = r / ((int64_t)Tq * H);
    const int C = H * D;
    const int last = (Tk - Tq) + i; /* causal: keys 0..last */
    const T *qi = q + b * q_bs + (size_t)i * C + (size_t)h * D;
    const T *kb = k + b * k_bs + (size_t)h * D;
    const int32_t *km = key_mask ? key_mask + b * Tk : nullptr;
    T *p = probs + r * Tk;
    float *sc = score_row(p, sm + D);

    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = ldf(qi + d);
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float mx = -INFINITY;
    for (int j = warp; j < Tk; j += nwarps) { /* the branch is uniform within a warp */
        if (j > last || (km && !km[j])) {
            if (lane == 0) sc[j] = -INFINITY;
            continue;
        }
        const T *kj = kb + (size_t)j * C;
        float s = 0.0f;
        for (int d = lane; d < D; d += 32) s += qs[d] * ldf(kj + d);
        s = warp_sum_f(s);
        const float v = s * scale;
        if (lane == 0) sc[j] = v;
        if (v > mx) mx = v;
    }
    mx = block_max(mx, shf); /* also makes the score writes visible block-wide */
    if (mx == -INFINITY) {   /* nothing visible (a padded query): zero row */
        for (int j = threadIdx.x; j < Tk; j += blockDim.x) stf(p + j, 0.0f);
        return;
    }
    double sum = 0.0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        const float pj = sc[j];
        const float e = pj == -INFINITY ? 0.0f : expf(pj - mx);
        sc[j] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / block_sum(sum, shd));
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) stf(p + j, sc[j] * inv);
}

/* Block = (b, h, tile of kApplyRows query rows); threads over d. Each output element
 * sums p[j] * v[j, d] over j in order, skipping p[j] == 0, as the CPU. */
template <class T>
__global__ void k_attn_apply(T *out, const T *probs, const T *v, size_t v_bs, int Tq, int Tk, int H, int D) {
    const int tiles = (Tq + kApplyRows - 1) / kApplyRows;
    const int tile = (int)(blockIdx.x % tiles);
    const int64_t bh = blockIdx.x / tiles;
    const int h = (int)(bh % H);
    const int64_t b = bh / H;
    const int C = H * D;
    const int i0 = tile * kApplyRows;
    const int nr = min(kApplyRows, Tq - i0);
    const T *pr = probs + (bh * Tq + i0) * (int64_t)Tk;
    const T *vb = v + b * v_bs + (size_t)h * D;
    T *ob = out + (b * Tq + i0) * (int64_t)C + (int64_t)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc[kApplyRows];
#pragma unroll
        for (int rr = 0; rr < kApplyRows; rr++) acc[rr] = 0.0f;
        for (int j = 0; j < Tk; j++) {
            const float vj = ldf(vb + (size_t)j * C + d);
#pragma unroll
            for (int rr = 0; rr < kApplyRows; rr++) {
                if (rr < nr) {
                    const float pj = ldf(pr + (int64_t)rr * Tk + j);
                    if (pj != 0.0f) acc[rr] += pj * vj;
                }
            }
        }
#pragma unroll
        for (int rr = 0; rr < kApplyRows; rr++)
            if (rr < nr) stf(ob + (int64_t)rr * C + d, acc[rr]);
    }
}

template <class T> __global__ void k_activation(T *x, size_t n, int act) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        stf(x + i, act_f(ldf(x + i), act));
}

/* One block per row, in place: max, exp, double sum, scale; as the CPU. The exponentials
 * are recomputed for the final pass instead of stored (expf is deterministic, so for f32 the
 * result is the same, and 16-bit storage is rounded only once). */
template <class T> __global__ void k_softmax(T *x, int C) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    T *r = x + (int64_t)blockIdx.x * C;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < C; c += blockDim.x) mx = ldf(r + c) > mx ? ldf(r + c) : mx;
    mx = block_max(mx, shf);
    double sum = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum += expf(ldf(r + c) - mx);
    const float inv = (float)(1.0 / block_sum(sum, shd));
    for (int c = threadIdx.x; c < C; c += blockDim.x) stf(r + c, expf(ldf(r + c) - mx) * inv);
}

/* GRU element-wise steps; __fmul_rn/__fadd_rn keep each product and sum rounded on its
 * own (nvcc would otherwise fuse them into an FMA), as the CPU and torch compute them. */
template <class T>
__global__ void k_gru_pointwise(T *out, const T *a, const T *b, const T *c, size_t n, int step) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float x = ldf(a + i), y = ldf(b + i), w = ldf(c + i);
        if (step == CVENE_GRU_NEW_GATE_IN)
            stf(out + i, __fadd_rn(x, __fmul_rn(y, w)));
        else
            stf(out + i, __fadd_rn(__fmul_rn(x, y), __fmul_rn(__fadd_rn(1.0f, -x), w)));
    }
}

template <class T> __global__ void k_residual_add(T *x, const T *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        stf(x + i, ldf(x + i) + ldf(y + i));
}

/* GPT-NeoX rotary, one thread per (row n = b*T + t, head h, pair i < half), as the CPU:
 * inv = 1 / f32(base^(f32(2i) / f32(rot))) with the power in double, angle = f32(pos) * inv,
 * cos/sin in f32 (the precise sincosf, not the fast-math intrinsic). */
template <class T>
__global__ void k_rotary(T *x, int ld, const int32_t *pos, int Tn, int H, int D, int half, int rot, float base,
                         size_t total) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % (size_t)half);
        size_t rest = idx / (size_t)half;
        const int h = (int)(rest % (size_t)H);
        const size_t n = rest / (size_t)H;
        const float p = (float)(pos ? pos[n] : (int32_t)(n % (size_t)Tn));
        const float e = (float)(2 * i) / (float)rot;
        const float inv = 1.0f / (float)pow((double)base, (double)e);
        float s, c;
        sincosf(p * inv, &s, &c);
        T *xh = x + n * (size_t)ld + (size_t)h * D;
        const float a = ldf(xh + i), b = ldf(xh + i + half);
        stf(xh + i, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
        stf(xh + i + half, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
    }
}

/* Indexed by the destination so writes coalesce; a pure move (T may be any element type).
 * to_heads: dst (B, H, T, D) <- src (B, T, H, D); else dst (B, T, H, D) <- src (B, H, T, D). */
template <class T>
__global__ void k_permute_heads(T *dst, const T *src, int Tn, int H, int D, int to_heads, size_t total) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t d = idx % (size_t)D;
        size_t rest = idx / (size_t)D;
        if (to_heads) { /* idx = ((b*H + h)*T + t)*D + d */
            const size_t t = rest % (size_t)Tn;
            rest /= (size_t)Tn;
            const size_t h = rest % (size_t)H, b = rest / (size_t)H;
            dst[idx] = src[((b * Tn + t) * H + h) * D + d];
        } else { /* idx = ((b*T + t)*H + h)*D + d */
            const size_t h = rest % (size_t)H;
            rest /= (size_t)H;
            const size_t t = rest % (size_t)Tn, b = rest / (size_t)Tn;
            dst[idx] = src[((b * H + h) * Tn + t) * D + d];
        }
    }
}

/* x (n) = x rounded to T and widened back, in place */
template <class T> __global__ void k_round_f32(float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        T h;
        stf(&h, x[i]);
        x[i] = ldf(&h);
    }
}

/* dst (n) = src (n) converted (storage.cuh: exact widening, nearest-even rounding) */
template <class D_, class S_> __global__ void k_convert(D_ *dst, const S_ *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        stf(dst + i, ldf(src + i));
}

/* ---- ops --------------------------------------------------------------- */

cvene_status too_many_rows(cvene_backend *be, int line, size_t rows) {
    if (be->err && be->err_len)
        snprintf(be->err, be->err_len, "%s:%d: %zu blocks exceed the CUDA grid limit",
                 cvene_cuda_short_file(__FILE__), line, rows);
    return CVENE_ERR_UNSUPPORTED;
}

cvene_status cu_alloc(cvene_backend *be, void **ptr, size_t nbytes) {
    *ptr = nullptr;
    ENTER(be);
    /* never hand out NULL for a valid request (the CPU backend does not either) */
    cudaError_t e = cudaMalloc(ptr, nbytes ? nbytes : 256);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it so later checks do not see it */
        *ptr = nullptr;
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: cudaMalloc(%zu bytes) on device %d: %s",
                     cvene_cuda_short_file(__FILE__), __LINE__, nbytes, impl_of(be)->device,
                     cudaGetErrorString(e));
        return CVENE_ERR_OOM;
    }
    if (e != cudaSuccess) {
        *ptr = nullptr;
        return cvene_cuda_fail(be->err, be->err_len, __FILE__, __LINE__, "cudaMalloc", e);
    }
    return CVENE_OK;
}

/* free cannot return a status; a failure is still reported in be->err. */
cvene_status cu_free_checked(cvene_backend *be, void *p) {
    if (!p) return CVENE_OK;
    ENTER(be);
    CU_CHECK(be, cudaFree(p));
    return CVENE_OK;
}
void cu_free(cvene_backend *be, void *p) { (void)cu_free_checked(be, p); }

/* Queued on the stream. A pageable host buffer may be reused as soon as this returns
 * (the runtime stages it); a pinned one only after sync. */
cvene_status cu_to_device(cvene_backend *be, void *dst, const void *host_src, size_t n) {
    if (!n) return CVENE_OK;
    ENTER(be);
    CU_CHECK(be, cudaMemcpyAsync(dst, host_src, n, cudaMemcpyHostToDevice, impl_of(be)->stream));
    return CVENE_OK;
}

/* Complete on return: waits for all work queued before it. */
cvene_status cu_to_host(cvene_backend *be, void *host_dst, const void *src, size_t n) {
    ENTER(be);
    cudaStream_t st = impl_of(be)->stream;
    if (n) CU_CHECK(be, cudaMemcpyAsync(host_dst, src, n, cudaMemcpyDeviceToHost, st));
    CU_CHECK(be, cudaStreamSynchronize(st));
    return CVENE_OK;
}

/* Device to device (cudaMemcpyDefault also allows a peer device's buffer). */
cvene_status cu_copy(cvene_backend *be, void *dst, const void *src, size_t n) {
    if (!n) return CVENE_OK;
    ENTER(be);
    CU_CHECK(be, cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, impl_of(be)->stream));
    return CVENE_OK;
}

/* gen.copy2d: height rows of width bytes between pitched buffers, device to device (a peer
 * device's buffer too, as cu_copy), queued on the stream. One row is a plain copy, so its
 * pitches (which cudaMemcpy2DAsync would check) are not read, as the CPU's. */
cvene_status cu_copy2d(cvene_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                       size_t height) {
    const cvene_status st = cvene_gen_copy2d_check(be, dst, dpitch, src, spitch, width, height);
    if (st != CVENE_OK || !width || !height) return st;
    ENTER(be);
    if (height == 1)
        CU_CHECK(be, cudaMemcpyAsync(dst, src, width, cudaMemcpyDefault, impl_of(be)->stream));
    else
        CU_CHECK(be, cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDefault,
                                       impl_of(be)->stream));
    return CVENE_OK;
}

cvene_status cu_sync(cvene_backend *be) {
    ENTER(be);
    CU_CHECK(be, cudaStreamSynchronize(impl_of(be)->stream));
    return CVENE_OK;
}

/* Each op's launch is a template over the storage type T; the f32 op is T = float, and the
 * cvene_ops16 entry (cu16_*) picks T from dt. */

template <class T>
cvene_status run_embedding(cvene_backend *be, T *out, const int32_t *ids, const int32_t *pos, const float *wte,
                           const float *wpe, int B, int Tn, int C) {
    const size_t total = (size_t)B * (size_t)Tn * (size_t)C;
    if (B <= 0 || Tn <= 0 || C <= 0) return CVENE_OK;
    ENTER(be);
    k_embedding<<<grid_for(total, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(out, ids, pos, wte, wpe, Tn, C,
                                                                                    total);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_layernorm(cvene_backend *be, T *out, const T *in, const float *w, const float *b, int N, int C,
                           float eps) {
    if (N <= 0 || C <= 0) return CVENE_OK;
    ENTER(be);
    k_layernorm<<<(unsigned)N, kRowBlock, 0, impl_of(be)->stream>>>(out, in, w, b, C, eps);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_residual_layernorm(cvene_backend *be, T *x, const T *y, T *out, const float *w, const float *b,
                                    int N, int C, float eps) {
    if (N <= 0 || C <= 0) return CVENE_OK;
    ENTER(be);
    k_residual_layernorm<<<(unsigned)N, kRowBlock, 0, impl_of(be)->stream>>>(x, y, out, w, b, C, eps);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T> constexpr bool is_f32() { return false; }
template <> constexpr bool is_f32<float>() { return true; }

template <class T>
cvene_status run_attn_probs(cvene_backend *be, T *probs, const T *q, size_t q_bs, const T *k, size_t k_bs,
                            const int32_t *key_mask, int B, int Tq, int Tk, int H, int D, float scale) {
    if (B <= 0 || Tq <= 0 || Tk <= 0 || H <= 0) return CVENE_OK;
    if (D < 0) D = 0;
    ENTER(be);
    const size_t rows = (size_t)B * (size_t)H * (size_t)Tq;
    /* the query; 16-bit storage also keeps the row's f32 scores here (score_row) */
    const size_t smem = sizeof(float) * ((size_t)D + (is_f32<T>() ? 0 : (size_t)Tk));
    if (rows > kMaxGrid) return too_many_rows(be, __LINE__, rows);
    if (smem > 40 * 1024) { /* near the default 48 KiB, which the kernel's static arrays share: opt in */
        cudaFuncAttributes fa;
        CU_CHECK(be, cudaFuncGetAttributes(&fa, k_attn_probs<T>));
        int optin = 0;
        CU_CHECK(be, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, impl_of(be)->device));
        if (smem + fa.sharedSizeBytes > (size_t)optin) {
            if (be->err && be->err_len)
                snprintf(be->err, be->err_len,
                         "%s:%d: attn_probs: Tk = %d keys and D = %d need %zu bytes of shared memory (plus %zu "
                         "static), more than the %d a block may have", cvene_cuda_short_file(__FILE__), __LINE__, Tk,
                         D, smem, (size_t)fa.sharedSizeBytes, optin);
            return CVENE_ERR_UNSUPPORTED;
        }
        if (smem + fa.sharedSizeBytes > 48 * 1024)
            CU_CHECK(be, cudaFuncSetAttribute(k_attn_probs<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    }
    k_attn_probs<<<(unsigned)rows, kAttnBlock, smem, impl_of(be)->stream>>>(probs, q, q_bs, k, k_bs, key_mask, Tq,
                                                                             Tk, H, D, scale);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_attn_apply(cvene_backend *be, T *out, const T *probs, const T *v, size_t v_bs, int B, int Tq,
                            int Tk, int H, int D) {
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    if (Tk < 0) Tk = 0;
    ENTER(be);
    const size_t tiles = ((size_t)Tq + kApplyRows - 1) / kApplyRows;
    const size_t blocks = (size_t)B * (size_t)H * tiles;
    if (blocks > kMaxGrid) return too_many_rows(be, __LINE__, blocks);
    int threads = ((D + 31) / 32) * 32;
    if (threads > 256) threads = 256;
    k_attn_apply<<<(unsigned)blocks, threads, 0, impl_of(be)->stream>>>(out, probs, v, v_bs, Tq, Tk, H, D);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T> cvene_status run_activation(cvene_backend *be, T *x, size_t n, cvene_act act) {
    if (!act_valid(act)) {
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: unknown activation %d", cvene_cuda_short_file(__FILE__),
                     __LINE__, (int)act);
        return CVENE_ERR_INVALID_ARG;
    }
    if (!n || act == CVENE_ACT_NONE) return CVENE_OK;
    ENTER(be);
    k_activation<<<grid_for(n, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(x, n, (int)act);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T> cvene_status run_softmax(cvene_backend *be, T *x, int N, int C) {
    if (N <= 0 || C <= 0) return CVENE_OK;
    ENTER(be);
    k_softmax<<<(unsigned)N, kRowBlock, 0, impl_of(be)->stream>>>(x, C);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T> cvene_status run_residual_add(cvene_backend *be, T *x, const T *y, size_t n) {
    if (!n) return CVENE_OK;
    ENTER(be);
    k_residual_add<<<grid_for(n, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(x, y, n);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_rotary(cvene_backend *be, T *x, int ld, const int32_t *pos, int B, int Tn, int H, int D,
                        int rot_dims, float base) {
    const int half = rot_dims / 2;
    if (B <= 0 || Tn <= 0 || H <= 0 || half <= 0) return CVENE_OK;
    ENTER(be);
    const size_t total = (size_t)B * (size_t)Tn * (size_t)H * (size_t)half;
    k_rotary<<<grid_for(total, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(x, ld, pos, Tn, H, D, half, rot_dims,
                                                                                base, total);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_gru_pointwise(cvene_backend *be, T *out, const T *a, const T *b, const T *c, size_t n,
                               cvene_gru_step step) {
    if (step != CVENE_GRU_NEW_GATE_IN && step != CVENE_GRU_HIDDEN) {
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: gru_pointwise: unknown step %d", cvene_cuda_short_file(__FILE__),
                     __LINE__, (int)step);
        return CVENE_ERR_INVALID_ARG;
    }
    if (!n) return CVENE_OK;
    ENTER(be);
    k_gru_pointwise<<<grid_for(n, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(out, a, b, c, n, (int)step);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

template <class T>
cvene_status run_permute_heads(cvene_backend *be, T *dst, const T *src, int B, int Tn, int H, int D, int to_heads) {
    if (B <= 0 || Tn <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    ENTER(be);
    const size_t total = (size_t)B * (size_t)Tn * (size_t)H * (size_t)D;
    k_permute_heads<<<grid_for(total, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(dst, src, Tn, H, D, to_heads,
                                                                                        total);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

/* ---- the f32 ops (T = float) ---- */

cvene_status cu_embedding(cvene_backend *be, float *out, const int32_t *ids, const int32_t *pos, const float *wte,
                          const float *wpe, int B, int T, int C) {
    return run_embedding(be, out, ids, pos, wte, wpe, B, T, C);
}
cvene_status cu_layernorm(cvene_backend *be, float *out, const float *in, const float *w, const float *b, int N, int C,
                          float eps) {
    return run_layernorm(be, out, in, w, b, N, C, eps);
}
cvene_status cu_residual_layernorm(cvene_backend *be, float *x, const float *y, float *out, const float *w,
                                   const float *b, int N, int C, float eps) {
    return run_residual_layernorm(be, x, y, out, w, b, N, C, eps);
}
cvene_status cu_attn_probs(cvene_backend *be, float *probs, const float *q, size_t q_bs, const float *k, size_t k_bs,
                           const int32_t *key_mask, int B, int Tq, int Tk, int H, int D, float scale) {
    return run_attn_probs(be, probs, q, q_bs, k, k_bs, key_mask, B, Tq, Tk, H, D, scale);
}
cvene_status cu_attn_apply(cvene_backend *be, float *out, const float *probs, const float *v, size_t v_bs, int B,
                           int Tq, int Tk, int H, int D) {
    return run_attn_apply(be, out, probs, v, v_bs, B, Tq, Tk, H, D);
}
cvene_status cu_activation(cvene_backend *be, float *x, size_t n, cvene_act act) {
    return run_activation(be, x, n, act);
}
cvene_status cu_softmax(cvene_backend *be, float *x, int N, int C) { return run_softmax(be, x, N, C); }
cvene_status cu_residual_add(cvene_backend *be, float *x, const float *y, size_t n) {
    return run_residual_add(be, x, y, n);
}
cvene_status cu_rotary(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T, int H, int D,
                       int rot_dims, float base) {
    return run_rotary(be, x, ld, pos, B, T, H, D, rot_dims, base);
}
cvene_status cu_gru_pointwise(cvene_backend *be, float *out, const float *a, const float *b, const float *c, size_t n,
                              cvene_gru_step step) {
    return run_gru_pointwise(be, out, a, b, c, n, step);
}
cvene_status cu_permute_heads(cvene_backend *be, float *dst, const float *src, int B, int T, int H, int D,
                              int to_heads) {
    return run_permute_heads(be, dst, src, B, T, H, D, to_heads);
}

/* ---- the ops on 16-bit activations (cvene_ops16): T from dt ---- */

cvene_status bad_dt(cvene_backend *be, const char *op, cvene_dtype dt) {
    if (be->err && be->err_len)
        snprintf(be->err, be->err_len, "ops16.%s: dt = %d is not F32, F16 or BF16", op, (int)dt);
    return CVENE_ERR_INVALID_ARG;
}

/* f(T *) called with a null pointer of dt's storage type. */
template <class F> cvene_status by_dt(cvene_backend *be, cvene_dtype dt, const char *op, F f) {
    switch (dt) {
    case CVENE_F32: return f(static_cast<float *>(nullptr));
    case CVENE_BF16: return f(static_cast<__nv_bfloat16 *>(nullptr));
    case CVENE_F16: return f(static_cast<__half *>(nullptr));
    default: return bad_dt(be, op, dt);
    }
}
#define AS(p) static_cast<decltype(t)>(p)
#define AS_C(p) static_cast<const std::remove_pointer_t<decltype(t)> *>(p)

cvene_status cu16_embedding(cvene_backend *be, cvene_dtype dt, void *out, const int32_t *ids, const int32_t *pos,
                            const float *wte, const float *wpe, int B, int T, int C) {
    return by_dt(be, dt, "embedding", [&](auto t) { return run_embedding(be, AS(out), ids, pos, wte, wpe, B, T, C); });
}
cvene_status cu16_layernorm(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const float *w,
                            const float *b, int N, int C, float eps) {
    return by_dt(be, dt, "layernorm", [&](auto t) { return run_layernorm(be, AS(out), AS_C(in), w, b, N, C, eps); });
}
cvene_status cu16_residual_layernorm(cvene_backend *be, cvene_dtype dt, void *x, const void *y, void *out,
                                     const float *w, const float *b, int N, int C, float eps) {
    return by_dt(be, dt, "residual_layernorm",
                 [&](auto t) { return run_residual_layernorm(be, AS(x), AS_C(y), AS(out), w, b, N, C, eps); });
}
cvene_status cu16_residual_add(cvene_backend *be, cvene_dtype dt, void *x, const void *y, size_t n) {
    return by_dt(be, dt, "residual_add", [&](auto t) { return run_residual_add(be, AS(x), AS_C(y), n); });
}
cvene_status cu16_attn_probs(cvene_backend *be, cvene_dtype dt, void *probs, const void *q, size_t q_bs,
                             const void *k, size_t k_bs, const int32_t *key_mask, int B, int Tq, int Tk, int H, int D,
                             float scale) {
    return by_dt(be, dt, "attn_probs", [&](auto t) {
        return run_attn_probs(be, AS(probs), AS_C(q), q_bs, AS_C(k), k_bs, key_mask, B, Tq, Tk, H, D, scale);
    });
}
cvene_status cu16_attn_apply(cvene_backend *be, cvene_dtype dt, void *out, const void *probs, const void *v,
                             size_t v_bs, int B, int Tq, int Tk, int H, int D) {
    return by_dt(be, dt, "attn_apply",
                 [&](auto t) { return run_attn_apply(be, AS(out), AS_C(probs), AS_C(v), v_bs, B, Tq, Tk, H, D); });
}
cvene_status cu16_activation(cvene_backend *be, cvene_dtype dt, void *x, size_t n, cvene_act act) {
    return by_dt(be, dt, "activation", [&](auto t) { return run_activation(be, AS(x), n, act); });
}
cvene_status cu16_softmax(cvene_backend *be, cvene_dtype dt, void *x, int N, int C) {
    return by_dt(be, dt, "softmax", [&](auto t) { return run_softmax(be, AS(x), N, C); });
}
cvene_status cu16_rotary(cvene_backend *be, cvene_dtype dt, void *x, int ld, const int32_t *pos, int B, int T, int H,
                         int D, int rot_dims, float base) {
    return by_dt(be, dt, "rotary", [&](auto t) { return run_rotary(be, AS(x), ld, pos, B, T, H, D, rot_dims, base); });
}
cvene_status cu16_permute_heads(cvene_backend *be, cvene_dtype dt, void *dst, const void *src, int B, int T, int H,
                                int D, int to_heads) {
    return by_dt(be, dt, "permute_heads",
                 [&](auto t) { return run_permute_heads(be, AS(dst), AS_C(src), B, T, H, D, to_heads); });
}
cvene_status cu16_gru_pointwise(cvene_backend *be, cvene_dtype dt, void *out, const void *a, const void *b,
                                const void *c, size_t n, cvene_gru_step step) {
    return by_dt(be, dt, "gru_pointwise",
                 [&](auto t) { return run_gru_pointwise(be, AS(out), AS_C(a), AS_C(b), AS_C(c), n, step); });
}
cvene_status cu16_convert(cvene_backend *be, void *dst, cvene_dtype dst_dt, const void *src, cvene_dtype src_dt,
                          size_t n) {
    return by_dt(be, dst_dt, "convert (dst_dt)", [&](auto td) {
        return by_dt(be, src_dt, "convert (src_dt)", [&](auto t) -> cvene_status {
            if (!n) return CVENE_OK;
            ENTER(be);
            if (dst_dt == src_dt) {
                CU_CHECK(be, cudaMemcpyAsync(dst, src, n * sizeof *t, cudaMemcpyDefault, impl_of(be)->stream));
                return CVENE_OK;
            }
            k_convert<<<grid_for(n, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(static_cast<decltype(td)>(dst),
                                                                                     AS_C(src), n);
            LAUNCH_CHECK(be);
            return CVENE_OK;
        });
    });
}
cvene_status cu16_round(cvene_backend *be, cvene_dtype dt, float *x, size_t n) {
    return by_dt(be, dt, "round", [&](auto t) -> cvene_status {
        using T = std::remove_pointer_t<decltype(t)>;
        if (!n || is_f32<T>()) return CVENE_OK;
        ENTER(be);
        k_round_f32<T><<<grid_for(n, kEltBlock), kEltBlock, 0, impl_of(be)->stream>>>(x, n);
        LAUNCH_CHECK(be);
        return CVENE_OK;
    });
}
#undef AS
#undef AS_C

const cvene_ops16 cuda_ops16 = {
    cu16_embedding,          /* embedding */
    cu16_layernorm,          /* layernorm */
    cu16_residual_layernorm, /* residual_layernorm */
    cu16_residual_add,       /* residual_add */
    cvene_cuda_matmul16,     /* matmul_act (kernels/cuda/lowp.cu) */
    cu16_attn_probs,         /* attn_probs */
    cu16_attn_apply,         /* attn_apply */
    cu16_activation,         /* activation */
    cu16_softmax,            /* softmax */
    cu16_rotary,             /* rotary */
    cu16_permute_heads,      /* permute_heads */
    cu16_gru_pointwise,      /* gru_pointwise */
    cu16_convert,            /* convert */
    cu16_round,              /* round */
};
static_assert(sizeof(cvene_ops16) == 14 * sizeof(void *), "cvene_ops16 changed: update cuda_ops16");

} // namespace

/* the decoding ops (kernels/backend.h: cvene_ops_gen); positional, as cuda_ops */
extern "C" const cvene_ops_gen cvene_cuda_ops_gen = {
    cu_copy2d,         /* copy2d */
    cvene_cuda_sample, /* sample (kernels/cuda/sample.cu) */
};
static_assert(sizeof(cvene_ops_gen) == 2 * sizeof(void *), "cvene_ops_gen changed: update cvene_cuda_ops_gen");

namespace {

/* Positional (C++17 has no designated initializers); the static_assert below catches a
 * slot added to cvene_ops without being filled here. */
const cvene_ops cuda_ops = {
    "cuda",
    cu_alloc,         /* alloc */
    cu_free,          /* free */
    cu_to_device,     /* to_device */
    cu_to_host,       /* to_host */
    cu_copy,          /* copy */
    cu_sync,          /* sync */
    cu_embedding,     /* embedding */
    cu_layernorm,     /* layernorm */
    cvene_cuda_matmul, /* matmul (kernels/cuda/gemm.cu) */
    cu_attn_probs,    /* attn_probs */
    cu_attn_apply,    /* attn_apply */
    cu_activation,    /* activation */
    cu_softmax,       /* softmax */
    cu_residual_add,  /* residual_add */
    cu_rotary,        /* rotary */
    cu_permute_heads, /* permute_heads */
    cu_gru_pointwise, /* gru_pointwise */
    cvene_cuda_iv_units,   /* iv_units (kernels/cuda/intervene.cu) */
    cvene_cuda_iv_rotated, /* iv_rotated */
    cvene_cuda_matmul_lp,  /* matmul_lp (kernels/cuda/lowp.cu) */
    cu_residual_layernorm, /* residual_layernorm */
    cvene_cuda_matmul_act, /* matmul_act (kernels/cuda/gemm.cu) */
    &cuda_ops16,           /* ops16 */
    &cvene_cuda_ops_bwd,   /* bwd (kernels/cuda/backward.cu) */
    &cvene_cuda_ops_gen,   /* gen (below; sample in kernels/cuda/sample.cu) */
};
static_assert(sizeof(cvene_ops) == 26 * sizeof(void *),
              "cvene_ops changed: update the CUDA op table (cuda_ops)");

} // namespace

/* ---- construction ------------------------------------------------------ */

#define CTOR_CU(call)                                                                        \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            cvene_cuda_fail(err, err_len, __FILE__, __LINE__, #call, e_);                          \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)
#define CTOR_BLAS(call)                                                                      \
    do {                                                                                     \
        cublasStatus_t s_ = (call);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            cvene_cublas_fail(err, err_len, __FILE__, __LINE__, #call, s_);                        \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)

extern "C" int cvene_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no device: clear, report none */
        return 0;
    }
    return n > 0 ? n : 0;
}

extern "C" void *cvene_backend_cuda_stream(cvene_backend *be) { return impl_of(be)->stream; }
extern "C" int cvene_backend_cuda_ordinal(cvene_backend *be) { return impl_of(be)->device; }
extern "C" void *cvene_backend_cuda_blas(cvene_backend *be) { return impl_of(be)->blas; }
cvene_cuda_gemm *cvene_backend_cuda_gemm(cvene_backend *be) { return impl_of(be)->gemm; }

/* Stream-ordered (cudaMallocAsync / cudaFreeAsync on the backend's stream): the old buffer
 * is released only after the work queued before it, so growing never waits for the device
 * and never frees memory a queued kernel still reads. Grows by at least 1.5x so a run of
 * slowly increasing sizes reallocates O(log) times. */
extern "C" cvene_status cvene_backend_cuda_scratch(cvene_backend *be, size_t nbytes, void **out) {
    cuda_impl *im = impl_of(be);
    *out = nullptr;
    if (nbytes <= im->scratch_cap && im->scratch) {
        *out = im->scratch;
        return CVENE_OK;
    }
    ENTER(be);
    size_t cap = im->scratch_cap + im->scratch_cap / 2;
    if (cap < nbytes) cap = nbytes;
    cap = (cap + 255) & ~(size_t)255;
    if (im->scratch) {
        void *old = im->scratch;
        im->scratch = nullptr;
        im->scratch_cap = 0;
        CU_CHECK(be, cudaFreeAsync(old, im->stream));
    }
    void *p = nullptr;
    cudaError_t e = cudaMallocAsync(&p, cap, im->stream);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it so later checks do not see it */
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: cudaMallocAsync(%zu bytes) for scratch on device %d: %s",
                     cvene_cuda_short_file(__FILE__), __LINE__, cap, im->device, cudaGetErrorString(e));
        return CVENE_ERR_OOM;
    }
    if (e != cudaSuccess) return cvene_cuda_fail(be->err, be->err_len, __FILE__, __LINE__, "cudaMallocAsync", e);
    im->scratch = p;
    im->scratch_cap = cap;
    *out = p;
    return CVENE_OK;
}

extern "C" cvene_backend *cvene_backend_cuda_new(int device, char *err, size_t err_len) {
    cvene_backend *be = nullptr;
    cuda_impl *im = nullptr;
    bool have_stream = false, have_blas = false;
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        cvene_cuda_fail(err, err_len, __FILE__, __LINE__, "cudaGetDeviceCount", ce);
        return nullptr;
    }
    if (device < 0 || device >= count) {
        if (err && err_len)
            snprintf(err, err_len, "CUDA device %d requested but %d device(s) visible", device,
                     count);
        return nullptr;
    }
    be = static_cast<cvene_backend *>(calloc(1, sizeof *be));
    im = static_cast<cuda_impl *>(calloc(1, sizeof *im));
    if (!be || !im) {
        if (err && err_len) snprintf(err, err_len, "out of memory creating CUDA backend");
        goto fail;
    }
    im->device = device;
    CTOR_CU(cudaSetDevice(device));
    {
        cudaDeviceProp prop;
        CTOR_CU(cudaGetDeviceProperties(&prop, device));
        snprintf(be->name, sizeof be->name, "%.150s", prop.name);
    }
    CTOR_CU(cudaStreamCreate(&im->stream));
    have_stream = true;
    CTOR_BLAS(cublasCreate(&im->blas));
    have_blas = true;
    CTOR_BLAS(cublasSetStream(im->blas, im->stream));
    /* plain f32: no TF32 / emulated-BF16 GEMMs, so results match the CPU within 1e-5 */
    CTOR_BLAS(cublasSetMathMode(im->blas, CUBLAS_DEFAULT_MATH));
    CTOR_BLAS(cublasSetPointerMode(im->blas, CUBLAS_POINTER_MODE_HOST));
    im->gemm = cvene_cuda_gemm_new(err, err_len);
    if (!im->gemm) goto fail;

    be->ops = &cuda_ops;
    be->device = CVENE_DEVICE_CUDA;
    be->n_threads = 0;
    be->impl = im;
    /* like the CPU backend, ops have no message buffer until the owner (the context)
     * points be->err at one; err here may be a caller's short-lived buffer */
    be->err = nullptr;
    be->err_len = 0;
    /* decide the gelu_new epilogue now (it waits for the device), never inside a forward */
    cvene_cuda_gemm_probe_gelu(be);
    return be;

fail:
    if (im) {
        cvene_cuda_gemm_free(im->gemm);
        if (have_blas) (void)cublasDestroy(im->blas);
        if (have_stream) (void)cudaStreamDestroy(im->stream);
    }
    free(im);
    free(be);
    return nullptr;
}

extern "C" void cvene_backend_cuda_free(cvene_backend *be) {
    if (!be) return;
    cuda_impl *im = impl_of(be);
    if (im) {
        /* best effort: nothing can be returned from here */
        if (cudaSetDevice(im->device) == cudaSuccess) {
            if (im->scratch) (void)cudaFreeAsync(im->scratch, im->stream);
            (void)cudaStreamSynchronize(im->stream);
            cvene_cuda_gemm_free(im->gemm);
            (void)cublasDestroy(im->blas);
            (void)cudaStreamDestroy(im->stream);
        }
        (void)cudaGetLastError();
        free(im);
    }
    free(be);
}
