/* gen.sample on the CUDA backend (kernels/backend.h: cvene_ops_gen): the next token of each
 * row, one block per row, the same steps as the CPU reference (kernels/cpu/ops_gen.c):
 *   1. zmax and the number of non-NaN z (z = logit / temperature: one IEEE f32 division, the
 *      CPU's bits; recomputed in every pass instead of stored, scratch holding w);
 *   2. top-k: the k-th largest z by bisection over the order-preserving uint32 keys of floats
 *      (kernels/sample_common.h), one pass and one block count per step (at most 32);
 *   3. w of the top-k survivors into the row's scratch (0 for the others), W their sum;
 *   4. top-p: the smallest key t with G(t) < top_p * W, G(t) the sum of w over z > t: each step
 *      a pass and a fixed-order block sum, which (like the CPU's index-order sum) never grows
 *      when t grows, so the survivors with z >= t are exactly those the rule keeps;
 *   5. the draw: each thread sums the kept w of a contiguous chunk of the row, thread 0 turns
 *      the chunk sums into exclusive prefixes in chunk order (S, the total, last), and a thread
 *      walks its chunk comparing prefix + running chunk sum with target = u * S; the first
 *      index over target wins (a block min). The running sums end at exactly S > target.
 * Every sum is in double, per thread in index order, then over threads in a fixed order (the
 * xor tree of backend_cuda.cu's reductions, or the sequential prefix), so a row's token is the
 * same from run to run. The CPU sums the same terms in index order, so the two differ only when
 * a rounding-sized difference moves target across a boundary of the running sum or moves a
 * token across the top-p cut; expf may also differ from the host's in the last ulp. The
 * uniform u is the CPU's bit for bit (integer arithmetic).
 * Greedy: the block max of the non-NaN logits, then the least index holding it.
 * Everything is queued on the backend's stream; nothing waits. Reads stay inside the row's V
 * logits and V scratch floats (the emulator's exact-size buffers check it). */
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/sample_common.h"

namespace {

constexpr int kMaxBlock = 512;  /* threads per row at most (V >= 16 * 512) */
constexpr int kPerThread = 16;  /* below that, about this many logits per thread */
constexpr unsigned kFull = 0xffffffffu;

/* ---- fixed-order block reductions over doubles (blockDim.x a multiple of 32, at most 1024):
 * the warp xor tree, then warp 0 over the warps' results, as backend_cuda.cu's block_sum; every
 * thread gets lane 0's result. Counts and indices (below 2^31) are exact as doubles. Each starts
 * with __syncthreads so consecutive calls may reuse sh, and ends with one, which also makes the
 * global writes made before the call (the scratch) visible block-wide. */
enum { kSum = 0, kMin = 1, kMax = 2 };
template <int Op> __device__ __forceinline__ double comb(double a, double b) {
    return Op == kSum ? a + b : Op == kMin ? fmin(a, b) : fmax(a, b);
}
template <int Op> __device__ double block_reduce(double v, double ident, double *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = comb<Op>(v, __shfl_xor_sync(kFull, v, o));
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        double x = lane < nw ? sh[lane] : ident;
        for (int o = 16; o > 0; o >>= 1) x = comb<Op>(x, __shfl_xor_sync(kFull, x, o));
        if (lane == 0) sh[0] = x;
    }
    __syncthreads();
    return sh[0];
}

/* The least index of the largest non-NaN logit of x (V); 0 when all are NaN. */
__device__ int greedy_row(const float *x, int V, double *sh) {
    double m = -INFINITY, nv = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (!isnan(x[i])) {
            nv += 1.0;
            m = fmax(m, (double)x[i]);
        }
    nv = block_reduce<kSum>(nv, 0.0, sh);
    m = block_reduce<kMax>(m, -INFINITY, sh);
    if (nv == 0.0) return 0;
    double first = V;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if ((double)x[i] == m) { /* -0 and +0 are equal: the first zero wins, as on the CPU */
            first = i;
            break;
        }
    return (int)block_reduce<kMin>(first, (double)V, sh);
}

/* One row x (V), scratch w (V): the steps of the header comment. */
__device__ int sample_row(const float *x, int V, float *w, const cvene_sample_params &sp, double u, double *sh,
                          double *pre) {
    const float temp = sp.temperature;
    const int tid = threadIdx.x, nt = blockDim.x;
    double zm = -INFINITY, nv = 0.0;
    for (int i = tid; i < V; i += nt) {
        const float z = x[i] / temp;
        if (!isnan(z)) {
            nv += 1.0;
            zm = fmax(zm, (double)z);
        }
    }
    nv = block_reduce<kSum>(nv, 0.0, sh);
    zm = block_reduce<kMax>(zm, -INFINITY, sh);
    if (nv == 0.0) return 0;
    const float zmax = (float)zm; /* a z value, exact */

    /* top-k: the largest key t with count(z >= t) >= k (uniform across the block: every thread
     * gets the same counts) */
    float tk = -INFINITY;
    if (sp.top_k > 0 && (double)sp.top_k < nv) {
        uint32_t lo = cvene_f32_key(-INFINITY), hi = cvene_f32_key(INFINITY);
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo + 1) / 2;
            const float t = cvene_key_f32(mid);
            double c = 0.0;
            for (int i = tid; i < V; i += nt) c += x[i] / temp >= t ? 1.0 : 0.0;
            c = block_reduce<kSum>(c, 0.0, sh);
            if (c >= (double)sp.top_k) lo = mid;
            else hi = mid - 1;
        }
        tk = cvene_key_f32(lo);
    }

    double W = 0.0;
    for (int i = tid; i < V; i += nt) {
        const float z = x[i] / temp;
        w[i] = z >= tk ? cvene_sample_weight(z, zmax) : 0.0f;
        W += w[i];
    }
    W = block_reduce<kSum>(W, 0.0, sh); /* its trailing barrier publishes w */

    /* top-p: the smallest key t with G(t) < top_p * W (zmax survives with w = 1: W >= 1) */
    float tp = -INFINITY;
    if (sp.top_p < 1.0f) {
        const double pw = (double)sp.top_p * W;
        uint32_t lo = cvene_f32_key(-INFINITY), hi = cvene_f32_key(INFINITY);
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo) / 2;
            const float t = cvene_key_f32(mid);
            double g = 0.0;
            for (int i = tid; i < V; i += nt)
                if (x[i] / temp > t) g += w[i];
            g = block_reduce<kSum>(g, 0.0, sh);
            if (g < pw) hi = mid;
            else lo = mid + 1;
        }
        tp = cvene_key_f32(lo);
    }
    const float keep = fmaxf(tk, tp); /* neither is NaN */

    /* the draw over contiguous chunks [i0, i1) in chunk order */
    const int64_t chunk = ((int64_t)V + nt - 1) / nt;
    const int i0 = (int)min((int64_t)V, tid * chunk), i1 = (int)min((int64_t)V, i0 + chunk);
    double c = 0.0;
    for (int i = i0; i < i1; i++)
        if (x[i] / temp >= keep) c += w[i];
    pre[tid] = c;
    __syncthreads();
    if (tid == 0) {
        double s = 0.0;
        for (int j = 0; j < nt; j++) {
            const double cj = pre[j];
            pre[j] = s;
            s += cj;
        }
        pre[nt] = s;
    }
    __syncthreads();
    const double target = u * pre[nt];
    const double base = pre[tid];
    double run = 0.0, hit = V, last = -1.0;
    for (int i = i0; i < i1; i++) {
        if (!(x[i] / temp >= keep)) continue;
        run += w[i];
        last = i;
        if (base + run > target) { /* at the chunk's end base + run is the next prefix */
            hit = i;
            break;
        }
    }
    hit = block_reduce<kMin>(hit, (double)V, sh);
    if (hit < (double)V) return (int)hit;
    return (int)block_reduce<kMax>(last, -1.0, sh); /* unreachable: the sums end at S > target */
}

/* One block per row b. A finished row (done[b] != 0) gets pad_id; any other row its token,
 * and done[b] = 1 when that token is a stop id. Every thread reads done[b] before the first
 * barrier; thread 0 writes it after the last, so the read and the write never race. */
__global__ void k_sample(int32_t *ids, int32_t *done, const float *logits, int64_t ld, int V, float *scratch,
                         cvene_sample_params sp, uint64_t step, const int32_t *stop, int n_stop, int32_t pad_id) {
    __shared__ double sh[32];
    __shared__ double pre[kMaxBlock + 1]; /* the draw's chunk prefixes, then S */
    const int b = blockIdx.x;
    if (done[b] != 0) { /* uniform: the whole block returns */
        if (threadIdx.x == 0) ids[b] = pad_id;
        return;
    }
    const float *x = logits + (int64_t)b * ld;
    const int tok = sp.greedy ? greedy_row(x, V, sh)
                              : sample_row(x, V, scratch + (int64_t)b * V, sp,
                                           cvene_sample_uniform(sp.seed, step, b), sh, pre);
    if (threadIdx.x == 0) {
        ids[b] = tok;
        for (int s = 0; s < n_stop; s++)
            if (stop[s] == tok) {
                done[b] = 1;
                break;
            }
    }
}

#define ENTER(be) CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)))

inline cudaStream_t stream_of(cvene_backend *be) { return static_cast<cudaStream_t>(cvene_backend_cuda_stream(be)); }

/* Threads per row: about kPerThread logits each, a whole number of warps, at most kMaxBlock. */
int block_for(int V) {
    int nt = (V + kPerThread - 1) / kPerThread;
    nt = (nt + 31) / 32 * 32;
    return nt < 32 ? 32 : nt > kMaxBlock ? kMaxBlock : nt;
}

} // namespace

extern "C" cvene_status cvene_cuda_sample(cvene_backend *be, int32_t *ids, int32_t *done, const float *logits,
                                          int64_t ld, int B, int V, float *scratch, const cvene_sample_params *sp,
                                          uint64_t step, const int32_t *stop, int n_stop, int32_t pad_id) {
    const cvene_status st = cvene_gen_sample_check(be, ids, done, logits, ld, B, V, scratch, sp, stop, n_stop);
    if (st != CVENE_OK || B == 0) return st;
    ENTER(be);
    /* B <= INT_MAX fits the grid's x limit */
    k_sample<<<(unsigned)B, block_for(V), 0, stream_of(be)>>>(ids, done, logits, ld, V, scratch, *sp, step, stop,
                                                                n_stop, pad_id);
    LAUNCH_CHECK(be);
    return CVENE_OK;
}
