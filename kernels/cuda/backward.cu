/* The backward ops on the CUDA backend (kernels/backend.h: cvene_ops_bwd).
 *
 * Each computes what the CPU reference (kernels/cpu/ops_bwd.c) computes, in f32 with the
 * same sums in double, so the two agree to f32 rounding of a different summation order:
 *  - row ops (layernorm, xent, attention's softmax backward) run one block per row and
 *    reduce with the fixed-order warp / block trees below (double where the CPU sums in
 *    double); sum_rows sums each column over 8 fixed row phases, then the phases in order;
 *  - GEMM-shaped parts (attention's per-head products, matmul_tn) are cuBLAS SGEMMs on the
 *    backend's handle (plain f32, no TF32: cvene_backend_cuda_new sets CUBLAS_DEFAULT_MATH),
 *    the heads of one batch row as one strided-batched call;
 *  - element-wise ops round each product and sum on its own (__fmul_rn / __fadd_rn: nvcc
 *    would otherwise contract them into FMAs), as the CPU, which is built without contraction.
 * No atomics and no split reductions whose order depends on scheduling, so a step is
 * bit-identical from run to run on the same device. All work is queued on the backend's
 * stream; nothing waits. Every CUDA / cuBLAS call and launch is checked (cuda_check.h). */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"
#include "kernels/cuda/act.cuh"
#include "kernels/cuda/cuda_check.h"

namespace {

constexpr int kEltBlock = 256;  /* element-wise kernels, grid-stride */
constexpr int kRowBlock = 256;  /* layernorm, xent: one block per row */
constexpr int kAttnBlock = 128; /* softmax backward: one block per (b, h, i) row */
constexpr int kSumCols = 32;    /* sum_rows: columns per block (one warp wide) */
constexpr int kSumPhases = 8;   /* sum_rows: row phases per block (warps) */
constexpr unsigned kFull = 0xffffffffu;
constexpr size_t kMaxGrid = 2147483647u; /* gridDim.x limit for one-block-per-row kernels */

unsigned grid_for(size_t n) {
    size_t g = (n + (size_t)kEltBlock - 1) / (size_t)kEltBlock;
    const size_t cap = (size_t)1 << 20; /* grid-stride loops cover the rest */
    if (g > cap) g = cap;
    if (g == 0) g = 1;
    return (unsigned)g;
}

/* ---- fixed-order block reductions (blockDim.x a multiple of 32, at most 1024), as in
 * backend_cuda.cu: warp xor-trees, then warp 0 over the warps' results; every thread gets the
 * result. Each starts with __syncthreads so consecutive calls may reuse sh, and ends with one so
 * the result (and writes made before the call) are visible block-wide. */
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum(double v) {
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
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        double x = lane < nw ? sh[lane] : 0.0;
        x = warp_sum(x);
        if (lane == 0) sh[0] = x;
    }
    __syncthreads();
    return sh[0];
}

__device__ __forceinline__ float acc_store(float old, float v, int accumulate) {
    return accumulate ? __fadd_rn(old, v) : v;
}

/* ---- kernels ---- */

/* One block per row: the forward's statistics (double mean and biased variance, two passes, m
 * and rstd rounded to f32), xhat = (x - m) * rstd and g = dy * w in f32, the two means in
 * double, dx = rstd (g - mean(g) - xhat mean(g xhat)) in double, rounded once. */
__global__ void k_layernorm_bwd(float *dx, const float *dy, const float *x, const float *w, int C, float eps,
                                int accumulate) {
    __shared__ double sh[32];
    const int64_t off = (int64_t)blockIdx.x * C;
    dx += off, dy += off, x += off;
    double s = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
    const double mean = block_sum(s, sh) / C;
    double v = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const double d = x[c] - mean;
        v += d * d;
    }
    const double var = block_sum(v, sh) / C;
    const float m = (float)mean, rstd = (float)(1.0 / sqrt(var + eps));
    double sg = 0.0, sgx = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float g = __fmul_rn(dy[c], w[c]), xh = __fmul_rn(__fsub_rn(x[c], m), rstd);
        sg += g;
        sgx += (double)g * xh;
    }
    const double mg = block_sum(sg, sh) / C;
    const double mgx = block_sum(sgx, sh) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float g = __fmul_rn(dy[c], w[c]), xh = __fmul_rn(__fsub_rn(x[c], m), rstd);
        const float val = (float)((double)rstd * ((double)g - mg - (double)xh * mgx));
        dx[c] = acc_store(dx[c], val, accumulate);
    }
}

/* One block per (b, h, i) row of dp (B, H, T, T), in place: dS = P (dP - sum_j dP P), keys
 * with P == 0 skipped in the double sum and given dS = 0, as the CPU. */
__global__ void k_softmax_bwd(float *dp, const float *probs, int T) {
    __shared__ double sh[32];
    float *d = dp + (int64_t)blockIdx.x * T;
    const float *p = probs + (int64_t)blockIdx.x * T;
    double s = 0.0;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        if (p[j] != 0.0f) s += (double)d[j] * p[j];
    const float sf = (float)block_sum(s, sh);
    for (int j = threadIdx.x; j < T; j += blockDim.x) d[j] = p[j] != 0.0f ? __fmul_rn(p[j], __fsub_rn(d[j], sf)) : 0.0f;
}

/* act'(x) for the smooth activations, the CPU's formulas (ops_bwd.c: act_grad) with every
 * product and sum rounded on its own. */
__device__ float act_grad(float x, int act) {
    const float k0 = 0.7978845608028654f;    /* sqrt(2/pi) */
    const float rs2 = 0.7071067811865476f;   /* 1/sqrt(2) */
    const float ir2pi = 0.3989422804014327f; /* 1/sqrt(2 pi) */
    switch (act) {
    case CVENE_GELU_TANH: {
        /* left to right, as the CPU's C expressions evaluate */
        const float u = __fmul_rn(k0, __fadd_rn(x, __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, x), x), x)));
        const float t = tanhf(u);
        const float sech2 = __fsub_rn(1.0f, __fmul_rn(t, t));
        const float d = __fmul_rn(0.5f, __fadd_rn(1.0f, t));
        if (sech2 == 0.0f) return d;
        const float poly = __fadd_rn(1.0f, __fmul_rn(__fmul_rn(0.134145f, x), x));
        return __fadd_rn(d, __fmul_rn(__fmul_rn(__fmul_rn(__fmul_rn(0.5f, x), sech2), k0), poly));
    }
    case CVENE_GELU_ERF: {
        const float cdf = __fmul_rn(0.5f, __fadd_rn(1.0f, erff(__fmul_rn(x, rs2))));
        const float pdf = expf(__fmul_rn(__fmul_rn(-0.5f, x), x));
        return __fadd_rn(cdf, __fmul_rn(__fmul_rn(x, ir2pi), pdf));
    }
    case CVENE_ACT_SIGMOID: {
        const float s = 1.0f / __fadd_rn(1.0f, expf(-x));
        return __fmul_rn(s, __fsub_rn(1.0f, s));
    }
    default: { /* CVENE_ACT_TANH (the caller handles RELU and NONE) */
        const float t = tanhf(x);
        return __fsub_rn(1.0f, __fmul_rn(t, t));
    }
    }
}

__global__ void k_activation_bwd(float *dx, const float *dy, const float *x, size_t n, int act, int accumulate) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v;
        if (act == CVENE_ACT_RELU) v = x[i] > 0.0f ? dy[i] : 0.0f; /* a select, as the CPU */
        else if (act == CVENE_ACT_NONE) v = dy[i];
        else v = __fmul_rn(dy[i], act_grad(x[i], act));
        dx[i] = acc_store(dx[i], v, accumulate);
    }
}

/* The transpose of k_rotary (backend_cuda.cu), one thread per (row n, head h, pair i): the same
 * angle computation (inv = 1 / f32(base^(f32(2i) / f32(rot))), power in double, angle =
 * f32(pos) * inv, precise sincosf), the pair turned by -angle. */
__global__ void k_rotary_bwd(float *x, int ld, const int32_t *pos, int Tn, int H, int D, int half, int rot,
                             float base, size_t total) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % (size_t)half);
        const size_t rest = idx / (size_t)half;
        const int h = (int)(rest % (size_t)H);
        const size_t n = rest / (size_t)H;
        const float p = (float)(pos ? pos[n] : (int32_t)(n % (size_t)Tn));
        const float e = (float)(2 * i) / (float)rot;
        const float inv = 1.0f / (float)pow((double)base, (double)e);
        float s, c;
        sincosf(p * inv, &s, &c);
        float *xh = x + n * (size_t)ld + (size_t)h * D;
        const float a = xh[i], b = xh[i + half];
        xh[i] = __fadd_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        xh[i + half] = __fsub_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
}

/* One block per row of logits (N, V), in place allowed: max, expf(x - max) summed in double,
 * loss = log(sum) + max - x[label] in double, dlogits = scale (p - onehot). x[label] is read
 * by every thread before the sum's barriers, so no thread has written the row yet. A row's
 * label decides the whole block's path (uniform branch). */
__global__ void k_xent(float *dl, float *loss, const float *logits, const int32_t *labels, int V, float scale) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    float *d = dl + r * V;
    const int label = labels[r];
    if (label < 0 || label >= V) { /* ignored row: zeros; out-of-range label: NaN (the caller's error) */
        const float fill = label < 0 ? 0.0f : NAN;
        for (int j = threadIdx.x; j < V; j += blockDim.x) d[j] = fill;
        if (threadIdx.x == 0) loss[r] = fill;
        return;
    }
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = x[j] > mx ? x[j] : mx;
    mx = block_max(mx, shf);
    const float xl = x[label];
    double s = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(__fsub_rn(x[j], mx));
    const double sum = block_sum(s, shd);
    if (threadIdx.x == 0) loss[r] = (float)(log(sum) + (double)mx - (double)xl);
    const float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float p = __fmul_rn(expf(__fsub_rn(x[j], mx)), inv);
        d[j] = __fmul_rn(scale, j == label ? __fsub_rn(p, 1.0f) : p);
    }
}

__global__ void k_affine(float *out, const float *a, const float *b, float alpha, float beta, float gamma, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float t = b ? __fadd_rn(__fmul_rn(alpha, a[i]), __fmul_rn(beta, b[i])) : __fmul_rn(alpha, a[i]);
        out[i] = __fadd_rn(t, gamma);
    }
}

__global__ void k_mul(float *out, const float *a, const float *b, size_t n, int accumulate) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = acc_store(out[i], __fmul_rn(a[i], b[i]), accumulate);
}

/* Block = kSumCols columns x kSumPhases warps. Thread (phase ph, lane c) sums rows ph, ph + 8,
 * ... of column c in double (a warp reads 32 contiguous floats per row); phase 0 then adds the
 * 8 partials in phase order and rounds once. */
__global__ void k_sum_rows(float *out, const float *x, int M, int N, int accumulate) {
    __shared__ double part[kSumPhases][kSumCols];
    const int lane = threadIdx.x % kSumCols, ph = threadIdx.x / kSumCols;
    const int64_t col = (int64_t)blockIdx.x * kSumCols + lane;
    double s = 0.0;
    if (col < N)
        for (int64_t m = ph; m < M; m += kSumPhases) s += x[m * N + col];
    part[ph][lane] = s;
    __syncthreads();
    if (ph == 0 && col < N) {
        double t = 0.0;
        for (int k = 0; k < kSumPhases; k++) t += part[k][lane];
        out[col] = acc_store(out[col], (float)t, accumulate);
    }
}

/* One thread per element through the selected stages of the GRU cell's backward, each stage
 * loading what it reads and storing what it writes, as the CPU's gru_cell_elt (ops_bwd.c),
 * every product and sum rounded on its own. S: saved (8, n); (3, n) buffers by thirds. */
__global__ void k_gru_cell_bwd(float *dx, float *dhg, float *d, float *dh_prev, const float *dh, const float *S,
                               size_t n, unsigned st) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t R = i, Z = n + i, N = 2 * n + i;
        if (st & CVENE_GRU_BWD_HIDDEN) {
            const float g = dh[i], z = S[CVENE_GRU_SAVED_Z * n + i];
            const float hmn = __fsub_rn(S[CVENE_GRU_SAVED_H * n + i], S[CVENE_GRU_SAVED_N * n + i]);
            d[N] = __fmul_rn(g, __fsub_rn(1.0f, z));
            d[Z] = __fmul_rn(g, hmn);
            dh_prev[i] = __fmul_rn(g, z); /* last: dh_prev may be dh */
        }
        if (st & CVENE_GRU_BWD_NEW_ACT) d[N] = __fmul_rn(d[N], act_grad(S[CVENE_GRU_SAVED_AN * n + i], CVENE_ACT_TANH));
        if (st & CVENE_GRU_BWD_NEW_IN) {
            const float dn = d[N];
            dx[N] = dn;
            dhg[N] = __fmul_rn(dn, S[CVENE_GRU_SAVED_R * n + i]);
            d[R] = __fmul_rn(dn, S[CVENE_GRU_SAVED_HN * n + i]);
        }
        if (st & CVENE_GRU_BWD_UPDATE_ACT)
            d[Z] = __fmul_rn(d[Z], act_grad(S[CVENE_GRU_SAVED_AZ * n + i], CVENE_ACT_SIGMOID));
        if (st & CVENE_GRU_BWD_UPDATE_IN) dx[Z] = dhg[Z] = d[Z];
        if (st & CVENE_GRU_BWD_RESET_ACT)
            d[R] = __fmul_rn(d[R], act_grad(S[CVENE_GRU_SAVED_AR * n + i], CVENE_ACT_SIGMOID));
        if (st & CVENE_GRU_BWD_RESET_IN) dx[R] = dhg[R] = d[R];
    }
}

__global__ void k_zero(float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = 0.0f;
}

/* ---- ops ---- */

#define ENTER(be) CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)))

inline cudaStream_t stream_of(cvene_backend *be) { return static_cast<cudaStream_t>(cvene_backend_cuda_stream(be)); }
inline cublasHandle_t blas_of(cvene_backend *be) { return static_cast<cublasHandle_t>(cvene_backend_cuda_blas(be)); }

cvene_status too_many_rows(cvene_backend *be, const char *op, size_t rows) {
    if (be->err && be->err_len)
        snprintf(be->err, be->err_len, "%s: bwd.%s: %zu rows exceed the CUDA grid limit", cvene_cuda_short_file(__FILE__),
                 op, rows);
    return CVENE_ERR_UNSUPPORTED;
}

cvene_status cu_layernorm_bwd(cvene_backend *be, float *dx, const float *dy, const float *x, const float *w, int N,
                              int C, float eps, int accumulate) {
    if (N <= 0 || C <= 0) return CVENE_OK;
    ENTER(be);
    k_layernorm_bwd<<<(unsigned)N, kRowBlock, 0, stream_of(be)>>>(dx, dy, x, w, C, eps, accumulate);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

/* Per batch row b, the H heads as one strided-batched SGEMM (head h starts D floats after head
 * h - 1 in a (T, H*D) row; its (T, T) matrices T*T floats apart). Row-major X = A B is, read
 * column-major, Xᵀ = Bᵀ Aᵀ: each call passes the row-major right operand first, with the same
 * transpose flag as the row-major formula, m = columns of X, n = rows of X. */
cvene_status cu_attention_bwd(cvene_backend *be, float *dq, float *dk, float *dv, float *dp, const float *dout,
                              const float *q, const float *k, const float *v, const float *probs, int B, int T, int H,
                              int D, float scale) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    const size_t rows = (size_t)B * (size_t)H * (size_t)T;
    if (rows > kMaxGrid) return too_many_rows(be, "attention", rows);
    ENTER(be);
    cublasHandle_t blas = blas_of(be);
    const int C = H * D;
    const long long sq = D, sp = (long long)T * T; /* strides between heads */
    const size_t bq = (size_t)T * C, bp = (size_t)H * T * T; /* strides between batch rows */
    const float one = 1.0f, zero = 0.0f;
    for (int b = 0; b < B; b++) /* dP (T, T) = dout_h (T, D) v_hᵀ */
        CUBLAS_CHECK(be, cublasSgemmStridedBatched(blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, &one, v + b * bq, C, sq,
                                                   dout + b * bq, C, sq, &zero, dp + b * bp, T, sp, H));
    k_softmax_bwd<<<(unsigned)rows, kAttnBlock, 0, stream_of(be)>>>(dp, probs, T);
    LAUNCH_CHECK(be);
    for (int b = 0; b < B; b++) {
        const float *ds = dp + b * bp, *p = probs + b * bp;
        /* dq_h (T, D) = scale dS k_h */
        CUBLAS_CHECK(be, cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, &scale, k + b * bq, C, sq,
                                                   ds, T, sp, &zero, dq + b * bq, C, sq, H));
        /* dk_h (T, D) = scale dSᵀ q_h */
        CUBLAS_CHECK(be, cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, &scale, q + b * bq, C, sq,
                                                   ds, T, sp, &zero, dk + b * bq, C, sq, H));
        /* dv_h (T, D) = Pᵀ dout_h */
        CUBLAS_CHECK(be, cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, &one, dout + b * bq, C, sq,
                                                   p, T, sp, &zero, dv + b * bq, C, sq, H));
    }
    return CVENE_OK;
}

cvene_status cu_activation_bwd(cvene_backend *be, float *dx, const float *dy, const float *x, size_t n, cvene_act act,
                               int accumulate) {
    if (!act_valid(act)) {
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: bwd.activation: unknown activation %d",
                     cvene_cuda_short_file(__FILE__), __LINE__, (int)act);
        return CVENE_ERR_INVALID_ARG;
    }
    if (!n) return CVENE_OK;
    ENTER(be);
    k_activation_bwd<<<grid_for(n), kEltBlock, 0, stream_of(be)>>>(dx, dy, x, n, (int)act, accumulate);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

cvene_status cu_rotary_bwd(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T, int H, int D,
                           int rot_dims, float base) {
    const int half = rot_dims / 2;
    if (B <= 0 || T <= 0 || H <= 0 || half <= 0) return CVENE_OK;
    ENTER(be);
    const size_t total = (size_t)B * (size_t)T * (size_t)H * (size_t)half;
    k_rotary_bwd<<<grid_for(total), kEltBlock, 0, stream_of(be)>>>(x, ld, pos, T, H, D, half, rot_dims, base, total);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

/* out (K, N) (+)= aᵀ b: column-major outᵀ (N, K) = bᵀ (N, M) a (M, K), i.e. cuBLAS A = b (op N,
 * lda N), B = a (op T, ldb K); beta 1 accumulates. M = 0: an empty sum. */
cvene_status cu_matmul_tn(cvene_backend *be, float *out, const float *a, const float *b, int M, int K, int N,
                          int accumulate) {
    if (K <= 0 || N <= 0) return CVENE_OK;
    ENTER(be);
    if (M <= 0) {
        if (!accumulate) {
            const size_t n = (size_t)K * (size_t)N;
            k_zero<<<grid_for(n), kEltBlock, 0, stream_of(be)>>>(out, n);
            LAUNCH_CHECK(be);
        }
        return CVENE_OK;
    }
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(be, cublasSgemm(blas_of(be), CUBLAS_OP_N, CUBLAS_OP_T, N, K, M, &one, b, N, a, K, &beta, out, N));
    return CVENE_OK;
}

cvene_status cu_xent(cvene_backend *be, float *dlogits, float *loss, const float *logits, const int32_t *labels, int N,
                     int V, float scale) {
    if (N <= 0) return CVENE_OK;
    if (V <= 0) {
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: bwd.xent: needs V >= 1, got V = %d", cvene_cuda_short_file(__FILE__),
                     __LINE__, V);
        return CVENE_ERR_INVALID_ARG;
    }
    ENTER(be);
    k_xent<<<(unsigned)N, kRowBlock, 0, stream_of(be)>>>(dlogits, loss, logits, labels, V, scale);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

cvene_status cu_affine(cvene_backend *be, float *out, const float *a, const float *b, float alpha, float beta,
                       float gamma, size_t n) {
    if (!n) return CVENE_OK;
    ENTER(be);
    k_affine<<<grid_for(n), kEltBlock, 0, stream_of(be)>>>(out, a, b, alpha, beta, gamma, n);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

cvene_status cu_mul(cvene_backend *be, float *out, const float *a, const float *b, size_t n, int accumulate) {
    if (!n) return CVENE_OK;
    ENTER(be);
    k_mul<<<grid_for(n), kEltBlock, 0, stream_of(be)>>>(out, a, b, n, accumulate);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

cvene_status cu_sum_rows(cvene_backend *be, float *out, const float *x, int M, int N, int accumulate) {
    if (N <= 0) return CVENE_OK;
    if (M < 0) M = 0;
    ENTER(be);
    const unsigned blocks = (unsigned)((N + kSumCols - 1) / kSumCols);
    k_sum_rows<<<blocks, kSumCols * kSumPhases, 0, stream_of(be)>>>(out, x, M, N, accumulate);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

cvene_status cu_gru_cell_bwd(cvene_backend *be, float *dx, float *dhg, float *d, float *dh_prev, const float *dh,
                             const float *saved, size_t n, unsigned stages) {
    if (stages & ~(unsigned)CVENE_GRU_BWD_ALL) {
        if (be->err && be->err_len)
            snprintf(be->err, be->err_len, "%s:%d: bwd.gru_cell: unknown stage bits %u",
                     cvene_cuda_short_file(__FILE__), __LINE__, stages);
        return CVENE_ERR_INVALID_ARG;
    }
    if (!n || !stages) return CVENE_OK;
    ENTER(be);
    k_gru_cell_bwd<<<grid_for(n), kEltBlock, 0, stream_of(be)>>>(dx, dhg, d, dh_prev, dh, saved, n, stages);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}

#undef ENTER

} // namespace

/* Positional (C++17 has no designated initializers); the static_assert catches a slot added to
 * cvene_ops_bwd without being filled here. */
extern "C" const cvene_ops_bwd cvene_cuda_ops_bwd = {
    cu_layernorm_bwd,  /* layernorm */
    cu_attention_bwd,  /* attention */
    cu_activation_bwd, /* activation */
    cu_rotary_bwd,     /* rotary */
    cu_matmul_tn,      /* matmul_tn */
    cu_xent,           /* xent */
    cu_affine,         /* affine */
    cu_mul,            /* mul */
    cu_sum_rows,       /* sum_rows */
    cu_gru_cell_bwd,   /* gru_cell */
};
static_assert(sizeof(cvene_ops_bwd) == 10 * sizeof(void *), "cvene_ops_bwd changed: update cvene_cuda_ops_bwd");
