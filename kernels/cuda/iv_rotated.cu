/* Fused rotated-subspace / low-rank intervention (kernels/backend.h: iv_rotated) on the CUDA
 * backend's stream: x_i <- x_i + M^T (M (s_i - x_i)) with M = W (trans 0, W (k, D)) or
 * M = W^T (trans 1, W (D, k)). f32 throughout, f32 accumulation; agrees with the CPU
 * reference (kernels/cpu/ops_intervene.c) to f32 rounding (only the summation order
 * differs: per-thread chunks, then warp and block trees). No device sync, no host<->device
 * copy: everything is queued on the backend's stream.
 *
 * ---- arithmetic (why the paths are what they are) ------------------------------------
 * Bytes that must move: read x, s (n D floats each) and W (k D) once, write x once:
 * 4 (3 n D + k D). FLOPs: 4 n D k (2 n D k for the k dot products, 2 n D k for W^T p).
 * So the op does about k / 3 FLOP per byte. On an H200 (FP32 without tensor cores ~67
 * TFLOP/s; device-to-device copy ~3.5 TB/s) the two floors meet at k ~ 57:
 *   n = 4096, D = 4096, k = 64: 202 MB -> 0.058 ms at copy speed; 4.3 GFLOP -> 0.064 ms at
 *     FP32 peak. 70% of copy (0.082 ms) would need ~78% of FP32 peak while streaming,
 *     which FFMA code does not reach; TF32 tensor cores are ruled out (~3e-4 relative
 *     error breaks the f32 contract). This size is compute-bound.
 *   k = 8: 0.54 GFLOP -> 8 us of FP32 against 58 us of memory: bandwidth-bound with 7x
 *     headroom; k = 1: ~1 us of FLOPs. Realistic rotated / low-rank interventions (pyvene's
 *     RotatedSpaceIntervention with a small interchange_dim, LowRankRotatedSpaceIntervention
 *     and LoReFT with rank 1..16) are small k, i.e. bandwidth-bound: there the target is
 *     >= 70% of copy bandwidth, which needs x and s streamed once with wide loads and W
 *     kept on chip.
 *
 * ---- (a) small k: W resident in shared memory (k_rot_resident) ----------------------
 * When k rows of D floats (padded, see below) plus a few KB fit in the opt-in shared memory
 * of one block (227 KB on H100/H200: k <= 13 at D = 4096, k <= 74 at D = 768), a
 * persistent grid (about one or two blocks per SM) runs; each block
 *   1. copies W into shared memory once, as (k, ldw) rows (for trans 1 it transposes
 *      while copying, so both forms then run the same code at the same speed); rows are
 *      padded to ldw = 4 (mod 32) floats: 16-byte aligned rows for float4 reads, and the
 *      transposing scalar stores spread over the banks (at most 2-way for 2 <= k <= 16;
 *      k = 1 needs no transpose);
 *   2. loops over groups of V consecutive vectors (V = 4, 2 or 1): each thread owns C
 *      float4 chunks of every vector of the group (chunk c = t + m T); it reads x_i and
 *      s_i once (float4 loads when the vector's address is 16-byte aligned, else scalar;
 *      the test is per vector since offsets are arbitrary) and keeps x and s - x in
 *      registers, so x is read from DRAM once;
 *   3. projections: for 4 rows j of W at a time, each thread accumulates its chunks'
 *      partial dot products for all V vectors (one shared-memory read of W serves V
 *      vectors), then a transposing warp reduction sums the 4 V partials with about one
 *      shuffle each (instead of 5), one value per warp goes to shared memory and threads
 *      add the warps' values in a fixed order (deterministic);
 *   4. update: x += sum_j W_j p_j from registers and shared memory, one store per float.
 * Two block barriers per group; loads of the next group are issued right after the
 * stores, and the first group's loads overlap the copy of W. The whole-block structure
 * keeps ~128 KB of loads in flight per SM at D = 4096, enough to keep HBM busy while
 * other SMs compute.
 * Registers: at most V C = 8 float4 pairs of x and s - x per thread (64 registers), so
 * every shape fits 128 registers at 512 threads (ptxas: 90-128, a few bytes of spill in
 * three shapes); at D = 4096 that is one block of 16 warps per SM.
 * Expected at n = D = 4096 (V = 4, C = 2, 512 threads, 128 blocks of 8 groups each):
 * k = 1 and k = 8 bandwidth-bound, ~75-85% (k = 1) and ~70-80% (k = 8) of copy (the FFMA
 * and shuffle work per group is ~10% (k = 1) to ~35% (k = 8) of the group's memory time and
 * overlaps other SMs' loads);
 * trans 1 the same (only the one-time copy of W differs). Small n (n = 32, one position per
 * example) is latency-bound: one block per vector, each first copying all of W (128 KB at
 * k = 8) from L2, ~3-4 us per launch.
 *
 * ---- (a') one block per SM: x and s through shared memory (k_rot_pipe) -------------
 * At D = 4096 the (a) kernel runs one block per SM (128 registers x 512 threads fill the
 * register file; at k = 8 W also takes 131 KB of shared memory), and its phases are
 * serial: load a group, reduce (barriers), update, store, then load the next. Measured
 * on an H200 (n = D = 4096): k = 1 85% of copy, k = 8 only 61% (0.086 ms against
 * 0.052 ms for the bytes): at k = 8 the ~3 us of FFMA / shared-memory / barrier work per
 * group adds to the ~7 us of memory time instead of hiding under it. A software-pipelined
 * variant with a second register set (loads of group g + G issued before group g's
 * compute) did not work: ptxas put all those loads and the shared-memory reads on one
 * scoreboard, so the first use of group g's data waited for group g + G's loads too
 * (measured 57%). k_rot_pipe therefore streams x and s through shared memory with
 * cp.async (LDGSTS: no register scoreboard): after reading group g's chunks into
 * registers each thread issues the copies of group g + G into the same buffer (it owns
 * the chunks it copies and reads back, so no barrier guards the buffer) and only then
 * runs group g's projections and update; the copies are in flight the whole time.
 * Buffer 2 V C T float4 (V D 8 bytes) beside W: V C = 4 (V = 2 at D = 4096: 64 KB, so
 * k <= 10 at D = 4096). Used when the plain kernel's occupancy is one block per SM, the
 * buffer fits, every block gets at least two groups, and k >= 2 (kPipeMinK): at k = 1 the
 * serial kernel with V = 4 wins (H200: 85.3% against 81.6% for k_rot_pipe with V = 2,
 * which pays the per-group barriers and reductions for half as many vectors).
 * Predicted k = 8: ~70% (group compute fully hidden, ~64 KB in flight per SM); measured on
 * an H200 against the serial kernel in the same runs: k = 8 67.7-68.4% of copy (trans 0
 * and 1 alike) against 60.5-61.7%, i.e. ~0.078 ms instead of 0.086 ms; k = 1 unchanged
 * (84-85%, same kernel). Still short of 70%: while a block waits for its group, only that
 * group's 64 KB is in flight per SM (a second buffer does not fit beside W at k = 8).
 * For 2 <= k <= 8 at C <= 2 (D <= 4096) k_rot_wreg below now runs instead (W in registers,
 * shared memory free for a 4-8 deep ring of whole vectors); k_rot_pipe remains for C = 4
 * and k up to 10, and behind CVENE_IV_ROTATED=smem (A/B in bench_iv_kernels). Not yet
 * measured on a GPU (written in a session without one; checked in a host emulator of the
 * kernel with the copies completing as late as cp.async allows, under ASan + UBSan).
 *
 * ---- (b) larger k ------------------------------------------------------------------
 * Contiguous vectors (x_off = s_off = NULL) go to cuBLAS (the backend's handle, plain f32
 * math: checked): three SGEMMs P = S M^T, P -= X M^T, X += P M with P (n, k) in the
 * backend's scratch buffer. They move 4 n D floats instead of 3 (X is read twice) but run
 * at FP32 GEMM speed, which is what bounds this regime (expected ~0.15-0.2 ms at n = D =
 * 4096, k = 64: ~30-40% of copy bandwidth, against 11.5% / 1.8% before).
 * Scattered vectors use k_iv_rotated: one block per V vectors, s - x in shared memory,
 * W (k, D) read from L2 with coalesced rows; for trans 1, W (D, k) is first transposed
 * into the scratch buffer (k, D) so the reads stay coalesced (the old kernel read W^T
 * columns with a stride of k floats: 1.9% of copy bandwidth). */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"

namespace {

constexpr unsigned kFull = 0xffffffffu;

/* ---- (a) W resident in shared memory ------------------------------------------------ */

constexpr int kResMaxThreads = 512; /* at most 16 warps per block; with C <= 8 chunks per
                                       thread that covers D <= 16384 */
constexpr int kRows = 4;            /* rows of W per projection chunk: 4 V partials per lane */
constexpr int kPipeMinK = 2;        /* smallest k that takes the software-pipelined kernel */

__device__ __forceinline__ float4 f4zero() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }

/* x and s are global memory touched once per launch: .cg (L2, not L1) loads and stores,
 * which also name the global space (the pointers pass through arrays, where the compiler
 * would otherwise emit generic accesses) */
/* floats [d, min(d + 4, D)) of p, the rest 0: any alignment, never reads past D */
__device__ __forceinline__ float4 load_part(const float *p, int d, int D) {
    float4 r = f4zero();
    r.x = __ldcg(p + d);
    if (d + 1 < D) r.y = __ldcg(p + d + 1);
    if (d + 2 < D) r.z = __ldcg(p + d + 2);
    if (d + 3 < D) r.w = __ldcg(p + d + 3);
    return r;
}

__device__ __forceinline__ void store_part(float *p, int d, int D, float4 r) {
    __stcg(p + d, r.x);
    if (d + 1 < D) __stcg(p + d + 1, r.y);
    if (d + 2 < D) __stcg(p + d + 2, r.z);
    if (d + 3 < D) __stcg(p + d + 3, r.w);
}

/* One step of the transposing warp reduction over N partials per lane: lanes whose bit O
 * is clear keep the lower H partials and send the upper H to their partner (lane ^ O),
 * which keeps the upper ones; each lane then holds H pair sums. */
template <int H, int O, int N> __device__ __forceinline__ void tr_step(float (&a)[N], int lane) {
    const bool up = (lane & O) != 0;
#pragma unroll
    for (int i = 0; i < H; i++) {
        const float send = up ? a[i] : a[i + H];
        const float keep = up ? a[i + H] : a[i];
        a[i] = keep + __shfl_xor_sync(kFull, send, O);
    }
}

/* Warp totals of N = 4, 8 or 16 partials per lane: halving steps on lane bits 4, 3, ...
 * (N - 1 shuffles), then plain xor steps on the remaining bits. Returns, in lane L, the
 * warp total of a[L / (32 / N)] (checked against a lane simulation). 16 partials cost 16
 * shuffles instead of 5 x 16. */
template <int N> __device__ __forceinline__ float warp_sum_tr(float (&a)[N], int lane) {
    static_assert(N == 4 || N == 8 || N == 16, "4, 8 or 16 partials");
    if constexpr (N == 16) {
        tr_step<8, 16>(a, lane);
        tr_step<4, 8>(a, lane);
        tr_step<2, 4>(a, lane);
        tr_step<1, 2>(a, lane);
    } else if constexpr (N == 8) {
        tr_step<4, 16>(a, lane);
        tr_step<2, 8>(a, lane);
        tr_step<1, 4>(a, lane);
    } else {
        tr_step<2, 16>(a, lane);
        tr_step<1, 8>(a, lane);
    }
    float r = a[0];
#pragma unroll
    for (int o = 16 / N; o > 0; o >>= 1) r += __shfl_xor_sync(kFull, r, o);
    return r;
}

/* Copy W into shared memory as Ws (k, ldw): row j = W row j (trans 0) or W column j
 * (trans 1); columns [D, ldw) zeroed (the last chunk of a row may read up to 3 of them,
 * multiplied by zeros, and 0 * garbage could be NaN). Loads are batched KS deep (float4
 * when W is 16-byte aligned) because this copy is latency-bound: ~128 KB per block from L2
 * at D = 4096, k = 8. KS = 8 where the first group's x and s, live meanwhile, take few
 * registers; 4 otherwise (8 would spill). The (row, column) of each thread's next element
 * is advanced incrementally instead of divided out per element. */
template <int KS>
__device__ void stage_w(float *Ws, const float *__restrict__ W, int D, int k, int trans, int ldw) {
    const int t = threadIdx.x, T = blockDim.x;
    const int pad = ldw - D;
    for (int e = t; e < k * pad; e += T) {
        const int j = e / pad;
        Ws[j * ldw + D + (e - j * pad)] = 0.0f;
    }
    const bool a16 = ((uintptr_t)W & 15) == 0;
    if (!trans) {
        if (a16 && (D & 3) == 0) { /* rows of whole float4s */
            const int nc = D >> 2, total = k * nc;
            int j = t / nc, c = t - j * nc;
            const int dj = T / nc, dc = T - dj * nc;
            for (int base = t; base < total; base += KS * T) {
                float4 r[KS];
                int o[KS];
#pragma unroll
                for (int u = 0; u < KS; u++) {
                    o[u] = j * ldw + 4 * c;
                    if (base + u * T < total) r[u] = __ldg(reinterpret_cast<const float4 *>(W + (size_t)j * D) + c);
                    c += dc;
                    j += dj;
                    if (c >= nc) c -= nc, j++;
                }
#pragma unroll
                for (int u = 0; u < KS; u++)
                    if (base + u * T < total) *reinterpret_cast<float4 *>(Ws + o[u]) = r[u];
            }
        } else {
            for (int j = 0; j < k; j++)
                for (int d = t; d < D; d += T) Ws[j * ldw + d] = __ldg(W + (size_t)j * D + d);
        }
        return;
    }
    /* trans 1: W (D, k); element e = d k + j goes to Ws[j][d] */
    const int total = D * k;
    if (a16) {
        const int q4 = total >> 2; /* whole float4s; the last total % 4 floats below */
        int d = (4 * t) / k, j = 4 * t - d * k;
        const int dd = (4 * T) / k, dj = 4 * T - dd * k;
        for (int base = t; base < q4; base += KS * T) {
            float4 r[KS];
            int rd[KS], rj[KS];
#pragma unroll
            for (int u = 0; u < KS; u++) {
                rd[u] = d, rj[u] = j;
                if (base + u * T < q4) r[u] = __ldg(reinterpret_cast<const float4 *>(W) + base + u * T);
                j += dj;
                d += dd;
                if (j >= k) j -= k, d++;
            }
#pragma unroll
            for (int u = 0; u < KS; u++)
                if (base + u * T < q4) {
                    const float v4[4] = {r[u].x, r[u].y, r[u].z, r[u].w};
                    int dq = rd[u], jq = rj[u];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        Ws[jq * ldw + dq] = v4[e];
                        if (++jq == k) jq = 0, dq++;
                    }
                }
        }
        for (int e = 4 * q4 + t; e < total; e += T) {
            const int de = e / k;
            Ws[(e - de * k) * ldw + de] = __ldg(W + e);
        }
    } else {
        int d = t / k, j = t - d * k;
        const int dd = T / k, dj = T - dd * k;
        for (int e = t; e < total; e += T) {
            Ws[j * ldw + d] = __ldg(W + e);
            j += dj;
            d += dd;
            if (j >= k) j -= k, d++;
        }
    }
}

/* Issue the loads of group g (vectors g V .. g V + V - 1): x into xr, s into dr (turned
 * into s - x by finish_group, kept separate so all loads are in flight before the first
 * use). Vectors past n and chunks past D read as zeros. xp / xa: each vector's x and
 * whether it is 16-byte aligned (for the stores). */
template <int V, int C>
__device__ __forceinline__ void load_group(float *x, const int64_t *__restrict__ x_off, const float *s,
                                           const int64_t *__restrict__ s_off, int n, int D, int NC, int64_t g,
                                           float4 (&xr)[V][C], float4 (&dr)[V][C], float *(&xp)[V], bool (&xa)[V]) {
    const int t = threadIdx.x, T = blockDim.x;
    const float *sp[V];
    bool sa[V];
#pragma unroll
    for (int v = 0; v < V; v++) { /* offsets first: one round trip for all V vectors */
        const int64_t i = g * V + v;
        xp[v] = nullptr, sp[v] = nullptr;
        if (i < n) {
            xp[v] = x + (x_off ? __ldg(x_off + i) : i * D);
            sp[v] = s + (s_off ? __ldg(s_off + i) : i * D);
        }
        xa[v] = ((uintptr_t)xp[v] & 15) == 0;
        sa[v] = ((uintptr_t)sp[v] & 15) == 0;
    }
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int m = 0; m < C; m++) {
            const int c = t + m * T, d = 4 * c;
            float4 xv = f4zero(), sv = f4zero();
            if (xp[v] && c < NC) {
                const bool full = d + 4 <= D;
                xv = xa[v] && full ? __ldcg(reinterpret_cast<const float4 *>(xp[v] + d)) : load_part(xp[v], d, D);
                /* s is read once: evict-first keeps L2 for W and x */
                sv = sa[v] && full ? __ldcs(reinterpret_cast<const float4 *>(sp[v] + d)) : load_part(sp[v], d, D);
            }
            xr[v][m] = xv;
            dr[v][m] = sv;
        }
}

template <int V, int C> __device__ __forceinline__ void finish_group(const float4 (&xr)[V][C], float4 (&dr)[V][C]) {
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int m = 0; m < C; m++) {
            dr[v][m].x -= xr[v][m].x;
            dr[v][m].y -= xr[v][m].y;
            dr[v][m].z -= xr[v][m].z;
            dr[v][m].w -= xr[v][m].w;
        }
}

/* One group with x in xr and s - x in dr (finish_group done): projections (two block
 * barriers), update and stores. Block-uniform control flow (every thread calls it for the same
 * groups). red is next written by the next group's projections, which every thread
 * starts only after passing this group's second barrier, i.e. after the block totals
 * were read; proj is next written after the next group's first barrier, i.e. after every
 * thread finished this group's update. */
template <int V, int C>
__device__ __forceinline__ void rot_group(const float *Ws, float *red, float *proj, int D, int NC, int k, int nch,
                                          int ldw, float4 (&xr)[V][C], float4 (&dr)[V][C], float *const (&xp)[V],
                                          const bool (&xa)[V]) {
    constexpr int NV = kRows * V;
    const int t = threadIdx.x, T = blockDim.x, lane = t & 31, warp = t >> 5, NW = T >> 5;
    /* projections, kRows rows of W at a time */
    for (int jc = 0; jc < nch; jc++) {
        float a[NV]; /* a[jj V + v]: this thread's part of W_{jc kRows + jj} . delta_v */
#pragma unroll
        for (int q = 0; q < NV; q++) a[q] = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kRows; jj++) {
            const int j = jc * kRows + jj;
            if (j < k) { /* uniform over the block */
                const float *wr = Ws + j * ldw;
#pragma unroll
                for (int m = 0; m < C; m++) {
                    const int c = t + m * T;
                    if (c < NC) {
                        const float4 w = *reinterpret_cast<const float4 *>(wr + 4 * c);
#pragma unroll
                        for (int v = 0; v < V; v++) {
                            float acc = a[jj * V + v];
                            acc = fmaf(w.x, dr[v][m].x, acc);
                            acc = fmaf(w.y, dr[v][m].y, acc);
                            acc = fmaf(w.z, dr[v][m].z, acc);
                            acc = fmaf(w.w, dr[v][m].w, acc);
                            a[jj * V + v] = acc;
                        }
                    }
                }
            }
        }
        constexpr int LPV = 32 / NV; /* lanes that end with the same total */
        const float tot = warp_sum_tr<NV>(a, lane); /* warp total of a[lane / LPV] */
        if (lane % LPV == 0) red[(jc * NW + warp) * NV + lane / LPV] = tot;
    }
    __syncthreads();
    /* block totals: partial q of chunk jc is row jc kRows + q / V, vector q % V, i.e.
     * proj[(jc kRows + q / V) V + q % V] = proj[jc NV + q]; warps added in order */
    for (int u = t; u < nch * NV; u += T) {
        const float *r = red + (u / NV) * NW * NV + (u % NV);
        float sum = 0.0f;
        for (int w = 0; w < NW; w++) sum += r[w * NV];
        proj[u] = sum;
    }
    __syncthreads();
    /* update: up = sum_j W_j p_j (summed first, then added to x, as the CPU does) */
    float4 up[V][C];
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int m = 0; m < C; m++) up[v][m] = f4zero();
#pragma unroll 2
    for (int j = 0; j < k; j++) {
        float pv[V];
        if constexpr (V == 4) {
            const float4 p4 = *reinterpret_cast<const float4 *>(proj + j * 4);
            pv[0] = p4.x, pv[1] = p4.y, pv[2] = p4.z, pv[3] = p4.w;
        } else {
#pragma unroll
            for (int v = 0; v < V; v++) pv[v] = proj[j * V + v];
        }
        const float *wr = Ws + j * ldw;
#pragma unroll
        for (int m = 0; m < C; m++) {
            const int c = t + m * T;
            if (c < NC) {
                const float4 w = *reinterpret_cast<const float4 *>(wr + 4 * c);
#pragma unroll
                for (int v = 0; v < V; v++) {
                    up[v][m].x = fmaf(w.x, pv[v], up[v][m].x);
                    up[v][m].y = fmaf(w.y, pv[v], up[v][m].y);
                    up[v][m].z = fmaf(w.z, pv[v], up[v][m].z);
                    up[v][m].w = fmaf(w.w, pv[v], up[v][m].w);
                }
            }
        }
    }
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int m = 0; m < C; m++) {
            const int c = t + m * T, d = 4 * c;
            if (xp[v] && c < NC) {
                const float4 r = make_float4(xr[v][m].x + up[v][m].x, xr[v][m].y + up[v][m].y,
                                             xr[v][m].z + up[v][m].z, xr[v][m].w + up[v][m].w);
                if (xa[v] && d + 4 <= D) __stcg(reinterpret_cast<float4 *>(xp[v] + d), r);
                else store_part(xp[v], d, D, r);
            }
        }
}

/* Dynamic shared memory (floats): Ws (k, ldw) | red (nch, NW, NV) | proj (nch NV), with
 * NV = kRows V partials per lane and nch = ceil(k / kRows) row chunks;
 * proj[j V + v] = W_j . (s_v - x_v). Every part starts 16-byte aligned (ldw and NV are
 * multiples of 4).
 * Loads of the next group are issued after this group's stores: the block waits a load
 * latency per group and has no loads in flight while it computes (k_rot_pipe overlaps
 * them). The group body is the same arithmetic as rot_group, written out here: calling
 * rot_group from this kernel made ptxas spill more (<4, 2>: 8/12 bytes instead of 4/4)
 * and cost k = 1 ~2% of copy bandwidth on an H200 (83.2% against 85.3%). */
template <int V, int C>
__global__ void __launch_bounds__(kResMaxThreads, 1)
    k_rot_resident(float *x, const int64_t *__restrict__ x_off, const float *s, const int64_t *__restrict__ s_off,
                   const float *__restrict__ W, int n, int D, int k, int trans, int ldw) {
    constexpr int NV = kRows * V;
    extern __shared__ float4 sm4[];
    float *Ws = reinterpret_cast<float *>(sm4);
    const int t = threadIdx.x, T = blockDim.x, lane = t & 31, warp = t >> 5, NW = T >> 5;
    const int NC = (D + 3) >> 2;       /* float4 chunks per vector */
    const int nch = (k + kRows - 1) / kRows;
    float *red = Ws + k * ldw;
    float *proj = red + nch * NW * NV;
    const int64_t ngroups = ((int64_t)n + V - 1) / V;

    float4 xr[V][C], dr[V][C];
    float *xp[V];
    bool xa[V];
    int64_t g = blockIdx.x; /* the host launches at most ngroups blocks */
    load_group<V, C>(x, x_off, s, s_off, n, D, NC, g, xr, dr, xp, xa);
    stage_w<V * C <= 2 ? 8 : 4>(Ws, W, D, k, trans, ldw); /* overlaps the first group's loads */
    __syncthreads();

    for (; g < ngroups; g += gridDim.x) {
        finish_group<V, C>(xr, dr);
        /* projections, kRows rows of W at a time */
        for (int jc = 0; jc < nch; jc++) {
            float a[NV]; /* a[jj V + v]: this thread's part of W_{jc kRows + jj} . delta_v */
#pragma unroll
            for (int q = 0; q < NV; q++) a[q] = 0.0f;
#pragma unroll
            for (int jj = 0; jj < kRows; jj++) {
                const int j = jc * kRows + jj;
                if (j < k) { /* uniform over the block */
                    const float *wr = Ws + j * ldw;
#pragma unroll
                    for (int m = 0; m < C; m++) {
                        const int c = t + m * T;
                        if (c < NC) {
                            const float4 w = *reinterpret_cast<const float4 *>(wr + 4 * c);
#pragma unroll
                            for (int v = 0; v < V; v++) {
                                float acc = a[jj * V + v];
                                acc = fmaf(w.x, dr[v][m].x, acc);
                                acc = fmaf(w.y, dr[v][m].y, acc);
                                acc = fmaf(w.z, dr[v][m].z, acc);
                                acc = fmaf(w.w, dr[v][m].w, acc);
                                a[jj * V + v] = acc;
                            }
                        }
                    }
                }
            }
            constexpr int LPV = 32 / NV; /* lanes that end with the same total */
            const float tot = warp_sum_tr<NV>(a, lane); /* warp total of a[lane / LPV] */
            if (lane % LPV == 0) red[(jc * NW + warp) * NV + lane / LPV] = tot;
        }
        __syncthreads();
        /* block totals: partial q of chunk jc is row jc kRows + q / V, vector q % V, i.e.
         * proj[(jc kRows + q / V) V + q % V] = proj[jc NV + q]; warps added in order */
        for (int u = t; u < nch * NV; u += T) {
            const float *r = red + (u / NV) * NW * NV + (u % NV);
            float sum = 0.0f;
            for (int w = 0; w < NW; w++) sum += r[w * NV];
            proj[u] = sum;
        }
        __syncthreads(); /* proj is next written after the next group's first barrier */
        /* update: up = sum_j W_j p_j (summed first, then added to x, as the CPU does) */
        float4 up[V][C];
#pragma unroll
        for (int v = 0; v < V; v++)
#pragma unroll
            for (int m = 0; m < C; m++) up[v][m] = f4zero();
#pragma unroll 2
        for (int j = 0; j < k; j++) {
            float pv[V];
            if constexpr (V == 4) {
                const float4 p4 = *reinterpret_cast<const float4 *>(proj + j * 4);
                pv[0] = p4.x, pv[1] = p4.y, pv[2] = p4.z, pv[3] = p4.w;
            } else {
#pragma unroll
                for (int v = 0; v < V; v++) pv[v] = proj[j * V + v];
            }
            const float *wr = Ws + j * ldw;
#pragma unroll
            for (int m = 0; m < C; m++) {
                const int c = t + m * T;
                if (c < NC) {
                    const float4 w = *reinterpret_cast<const float4 *>(wr + 4 * c);
#pragma unroll
                    for (int v = 0; v < V; v++) {
                        up[v][m].x = fmaf(w.x, pv[v], up[v][m].x);
                        up[v][m].y = fmaf(w.y, pv[v], up[v][m].y);
                        up[v][m].z = fmaf(w.z, pv[v], up[v][m].z);
                        up[v][m].w = fmaf(w.w, pv[v], up[v][m].w);
                    }
                }
            }
        }
#pragma unroll
        for (int v = 0; v < V; v++)
#pragma unroll
            for (int m = 0; m < C; m++) {
                const int c = t + m * T, d = 4 * c;
                if (xp[v] && c < NC) {
                    const float4 r = make_float4(xr[v][m].x + up[v][m].x, xr[v][m].y + up[v][m].y,
                                                 xr[v][m].z + up[v][m].z, xr[v][m].w + up[v][m].w);
                    if (xa[v] && d + 4 <= D) __stcg(reinterpret_cast<float4 *>(xp[v] + d), r);
                    else store_part(xp[v], d, D, r);
                }
            }
        if (g + gridDim.x < ngroups)
            load_group<V, C>(x, x_off, s, s_off, n, D, NC, g + gridDim.x, xr, dr, xp, xa);
    }
}

/* cp.async (sm_80+): 16-byte copies global -> shared that bypass L1 (.cg), 4-byte ones
 * (.ca: the only kind for 4 bytes), both zero-filling what src_bytes leaves out (0: only
 * zeros, nothing read). They complete in the background, outside the register scoreboards;
 * cp_wait_all waits for this thread's copies and makes them visible to it, cp_wait_n<N> for
 * all but its N most recent commit groups. The host emulator of this file (tests/kernel_emu)
 * supplies its own versions, which complete each copy as late as these waits allow. */
#ifndef CVENE_KERNEL_EMU
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait_n() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

/* Issue group g's copies into buf (2 V rows of C T float4: x_v at row 2 v, s_v at row
 * 2 v + 1; thread t owns float4 t + m T of each row, the chunks it later reads back, so no
 * barrier guards buf). Vectors past n and floats past D are zero-filled. xp / xa as in
 * load_group. */
template <int V, int C>
__device__ __forceinline__ void issue_group(float4 *buf, float *x, const int64_t *__restrict__ x_off, const float *s,
                                            const int64_t *__restrict__ s_off, int n, int D, int NC, int64_t g,
                                            float *(&xp)[V], bool (&xa)[V]) {
    const int t = threadIdx.x, T = blockDim.x;
    const float *sp[V];
    bool sa[V];
#pragma unroll
    for (int v = 0; v < V; v++) {
        const int64_t i = g * V + v;
        xp[v] = nullptr, sp[v] = nullptr;
        if (i < n) {
            xp[v] = x + (x_off ? __ldg(x_off + i) : i * D);
            sp[v] = s + (s_off ? __ldg(s_off + i) : i * D);
        }
        xa[v] = ((uintptr_t)xp[v] & 15) == 0;
        sa[v] = ((uintptr_t)sp[v] & 15) == 0;
    }
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const float *p = q ? sp[v] : xp[v];
            const bool al = q ? sa[v] : xa[v];
            float4 *row = buf + (2 * v + q) * (C * T);
#pragma unroll
            for (int m = 0; m < C; m++) {
                const int c = t + m * T, d = 4 * c;
                if (c >= NC) continue; /* never read back */
                float *dst = reinterpret_cast<float *>(row + c);
                if (!p) {
                    cp_async16(dst, x, 0);
                } else if (al && d + 4 <= D) {
                    cp_async16(dst, p + d, 16);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; e++) cp_async4(dst + e, p + (d + e < D ? d + e : d), d + e < D ? 4 : 0);
                }
            }
        }
}

/* W resident, x and s streamed through shared memory with cp.async (software pipelining):
 * group g's data is read from buf into registers, then the copies of group g + G
 * (G = gridDim.x) are issued into buf BEFORE group g's projections, barriers and update,
 * so the SM keeps the next group's V D 8 bytes of loads in flight while it computes.
 * Same arithmetic and summation order as k_rot_resident. Dynamic shared memory: Ws | red |
 * proj as there, then buf (2 V C T float4). */
template <int V, int C>
__global__ void __launch_bounds__(kResMaxThreads, 1)
    k_rot_pipe(float *x, const int64_t *__restrict__ x_off, const float *s, const int64_t *__restrict__ s_off,
               const float *__restrict__ W, int n, int D, int k, int trans, int ldw) {
    constexpr int NV = kRows * V;
    extern __shared__ float4 sm4[];
    float *Ws = reinterpret_cast<float *>(sm4);
    const int t = threadIdx.x, T = blockDim.x, NW = T >> 5;
    const int NC = (D + 3) >> 2; /* float4 chunks per vector */
    const int nch = (k + kRows - 1) / kRows;
    float *red = Ws + k * ldw;
    float *proj = red + nch * NW * NV;
    float4 *buf = reinterpret_cast<float4 *>(proj + nch * NV); /* 16-byte aligned: all parts are */
    const int64_t ngroups = ((int64_t)n + V - 1) / V;
    const int64_t G = gridDim.x;

    float *xp[V], *xpn[V];
    bool xa[V], xan[V];
    int64_t g = blockIdx.x; /* the host launches at most ngroups blocks */
    issue_group<V, C>(buf, x, x_off, s, s_off, n, D, NC, g, xpn, xan);
    cp_commit();
    stage_w<8>(Ws, W, D, k, trans, ldw); /* overlaps the first group's copies */
    __syncthreads();
    for (; g < ngroups; g += G) {
        float4 xr[V][C], dr[V][C];
        cp_wait_all();
#pragma unroll
        for (int v = 0; v < V; v++) {
            xp[v] = xpn[v], xa[v] = xan[v];
#pragma unroll
            for (int m = 0; m < C; m++) {
                const int c = t + m * T;
                xr[v][m] = f4zero(), dr[v][m] = f4zero();
                if (c < NC) xr[v][m] = buf[(2 * v) * (C * T) + c], dr[v][m] = buf[(2 * v + 1) * (C * T) + c];
            }
        }
        finish_group<V, C>(xr, dr); /* consumes this thread's buf chunks before they are overwritten */
        if (g + G < ngroups) {
            issue_group<V, C>(buf, x, x_off, s, s_off, n, D, NC, g + G, xpn, xan);
            cp_commit();
        }
        rot_group<V, C>(Ws, red, proj, D, NC, k, nch, ldw, xr, dr, xp, xa);
    }
}

/* ---- (a'') small k at one block per SM: W in registers (k_rot_wreg) -------------------
 * For 2 <= k <= 8 at C <= 2 float4 chunks per thread (D <= 4096 at 512 threads) each thread
 * keeps the k x 4 C floats of W that meet its own chunks in registers (<= 64 at k = 8,
 * C = 2), loaded once per block: no shared-memory reads of W at all (k_rot_pipe reads all
 * of W from shared memory twice per group, ~1 us of LDS.128 per vector at D = 4096, k = 8),
 * and shared memory is free for an S-stage cp.async ring of whole vectors (S = 8 / C: 128
 * KB of x and s in flight per SM, against k_rot_pipe's single 64 KB buffer, which at k = 8
 * left each SM with one group's loads in flight while it waited). One vector per step:
 *   1. wait for the oldest slot (cp.async.wait_group S - 1: every thread waits for its own
 *      copies, the only ones it reads), read x and s into registers, s - x;
 *   2. issue the copies of the vector S steps ahead into the same slot (each thread copies
 *      exactly the chunks it reads back, so no barrier guards the ring);
 *   3. k partial dot products, the transposing warp reduction (padded to 4 or 8 partials),
 *      one value per warp and row into red[step parity]; ONE block barrier; every thread
 *      then adds the warps' values for all k rows itself (fixed warp order: the same p_j
 *      in every thread, deterministic). red is double-buffered by step parity: a thread
 *      writes red[p] again two steps later, after passing the next step's barrier, which
 *      every thread reaches only after reading red[p];
 *   4. x + sum_j W_j p_j stored from registers.
 * Registers (ptxas, sm_90, 512 threads): see the launch's comment. Chunks past NC and floats
 * past D hold zeros in both W and s - x (cp.async zero-fills), so they add exact zeros.
 * Same summation structure as the other resident kernels (per-thread chunks, warp tree,
 * warps in order), so it agrees with the CPU reference to f32 rounding. */
constexpr int kWregMinK = 2, kWregMaxK = 8;

template <int K, int C, int S>
__global__ void __launch_bounds__(kResMaxThreads, 1)
    k_rot_wreg(float *x, const int64_t *__restrict__ x_off, const float *s, const int64_t *__restrict__ s_off,
               const float *__restrict__ W, int n, int D, int trans) {
    constexpr int NP = K <= 4 ? 4 : 8; /* partials per lane for warp_sum_tr: K, zero-padded */
    constexpr int LPV = 32 / NP;       /* lanes that end with the same warp total */
    extern __shared__ float4 sm4[];
    const int t = threadIdx.x, T = blockDim.x, lane = t & 31, warp = t >> 5, NW = T >> 5;
    const int NC = (D + 3) >> 2; /* float4 chunks per vector */
    float *red = reinterpret_cast<float *>(sm4);       /* 2 x (NW, NP) warp totals */
    float4 *ring = sm4 + (2 * NW * NP) / 4;            /* S slots of 2 C T float4 (x | s) */
    const int64_t G = gridDim.x;
    const int64_t g0 = blockIdx.x; /* the host launches at most n blocks */

    /* the ring's first S vectors, then this thread's part of W (overlapping those copies) */
    float *xp_unused[1];
    bool xa_unused[1];
#pragma unroll
    for (int q = 0; q < S; q++) {
        const int64_t g = g0 + q * G;
        if (g < n) issue_group<1, C>(ring + q * (2 * C * T), x, x_off, s, s_off, n, D, NC, g, xp_unused, xa_unused);
        cp_commit(); /* one commit group per slot, empty or not: wait_group counts them */
    }
    float4 w[K][C]; /* w[j][m]: row j of M = W (trans 0) or W^T (trans 1), floats 4 c .. 4 c + 3 */
    const bool wa = !trans && ((uintptr_t)W & 15) == 0 && (D & 3) == 0;
#pragma unroll
    for (int m = 0; m < C; m++) {
        const int c = t + m * T, d = 4 * c;
#pragma unroll
        for (int j = 0; j < K; j++) {
            float4 v = f4zero();
            if (c < NC) {
                if (wa) {
                    v = __ldg(reinterpret_cast<const float4 *>(W + (size_t)j * D + d));
                } else if (!trans) {
                    v = load_part(W + (size_t)j * D, d, D);
                } else { /* W (D, K): element (d, j) at d K + j */
                    v.x = __ldg(W + (size_t)d * K + j);
                    if (d + 1 < D) v.y = __ldg(W + (size_t)(d + 1) * K + j);
                    if (d + 2 < D) v.z = __ldg(W + (size_t)(d + 2) * K + j);
                    if (d + 3 < D) v.w = __ldg(W + (size_t)(d + 3) * K + j);
                }
            }
            w[j][m] = v;
        }
    }

    int slot = 0, par = 0;
    for (int64_t g = g0; g < n; g += G) {
        cp_wait_n<S - 1>(); /* this thread's copies of vector g (the oldest group) landed */
        float4 *sb = ring + slot * (2 * C * T);
        float4 xr[C], dr[C];
#pragma unroll
        for (int m = 0; m < C; m++) {
            const int c = t + m * T;
            xr[m] = f4zero(), dr[m] = f4zero();
            if (c < NC) {
                xr[m] = sb[c];
                const float4 sv = sb[C * T + c];
                dr[m] = make_float4(sv.x - xr[m].x, sv.y - xr[m].y, sv.z - xr[m].z, sv.w - xr[m].w);
            }
        }
        {
            const int64_t gn = g + S * G;
            if (gn < n) issue_group<1, C>(sb, x, x_off, s, s_off, n, D, NC, gn, xp_unused, xa_unused);
            cp_commit();
        }
        /* projections: a[j] = this thread's part of M_j . (s - x) */
        float a[NP];
#pragma unroll
        for (int j = 0; j < NP; j++) a[j] = 0.0f;
#pragma unroll
        for (int j = 0; j < K; j++)
#pragma unroll
            for (int m = 0; m < C; m++) {
                float acc = a[j];
                acc = fmaf(w[j][m].x, dr[m].x, acc);
                acc = fmaf(w[j][m].y, dr[m].y, acc);
                acc = fmaf(w[j][m].z, dr[m].z, acc);
                acc = fmaf(w[j][m].w, dr[m].w, acc);
                a[j] = acc;
            }
        float *rp = red + par * (NW * NP);
        const float tot = warp_sum_tr<NP>(a, lane); /* warp total of a[lane / LPV] */
        if (lane % LPV == 0) rp[warp * NP + lane / LPV] = tot;
        __syncthreads();
        float p[NP]; /* block totals, warps added in order (the same in every thread) */
#pragma unroll
        for (int j = 0; j < NP; j++) p[j] = 0.0f;
        for (int wi = 0; wi < NW; wi++) {
#pragma unroll
            for (int q = 0; q < NP / 4; q++) {
                const float4 r = *reinterpret_cast<const float4 *>(rp + wi * NP + 4 * q);
                p[4 * q] += r.x, p[4 * q + 1] += r.y, p[4 * q + 2] += r.z, p[4 * q + 3] += r.w;
            }
        }
        /* update: x + sum_j M_j p_j (the sum first, then added to x, as the CPU does) */
        float *xp = x + (x_off ? __ldg(x_off + g) : g * D);
        const bool xa = ((uintptr_t)xp & 15) == 0;
#pragma unroll
        for (int m = 0; m < C; m++) {
            const int c = t + m * T, d = 4 * c;
            float4 up = f4zero();
#pragma unroll
            for (int j = 0; j < K; j++) {
                up.x = fmaf(w[j][m].x, p[j], up.x);
                up.y = fmaf(w[j][m].y, p[j], up.y);
                up.z = fmaf(w[j][m].z, p[j], up.z);
                up.w = fmaf(w[j][m].w, p[j], up.w);
            }
            if (c < NC) {
                const float4 r = make_float4(xr[m].x + up.x, xr[m].y + up.y, xr[m].z + up.z, xr[m].w + up.w);
                if (xa && d + 4 <= D) __stcg(reinterpret_cast<float4 *>(xp + d), r);
                else store_part(xp, d, D, r);
            }
        }
        slot = slot + 1 == S ? 0 : slot + 1;
        par ^= 1;
    }
}

/* The resident path's shape for (n, D, k), or ok = false when it does not apply. */
struct resident_plan {
    bool ok;
    int C, V, T, ldw;
    size_t smem;
};

/* Shared memory of the resident kernel in bytes: Ws, red, proj (see k_rot_resident). */
size_t resident_smem(int k, int ldw, int V, int T) {
    const size_t NV = (size_t)kRows * V, nch = ((size_t)k + kRows - 1) / kRows, NW = (size_t)T / 32;
    return sizeof(float) * ((size_t)k * (size_t)ldw + nch * NW * NV + nch * NV);
}

resident_plan plan_resident(int n, int D, int k, int optin, int sms) {
    resident_plan p = {false, 1, 1, 32, 0, 0};
    const int NC = (D + 3) / 4;
    /* fewest chunks per thread with at most kResMaxThreads threads: C <= 8 */
    while (p.C <= 8 && (NC + p.C - 1) / p.C > kResMaxThreads) p.C *= 2;
    if (p.C > 8) return p;
    p.T = ((NC + p.C - 1) / p.C + 31) / 32 * 32;
    /* V vectors per pass share each shared-memory read of W; V C <= 8 float4 pairs keeps
     * x and s - x in 64 registers (the kernel stays under 128 at 512 threads). Fewer
     * vectors per pass when n is too small to give every SM a group. */
    p.V = p.C <= 2 ? 4 : p.C == 4 ? 2 : 1;
    while (p.V > 1 && ((int64_t)n + p.V - 1) / p.V < sms) p.V /= 2;
    p.ldw = 4 * NC;
    p.ldw += (36 - p.ldw % 32) % 32; /* ldw = 4 (mod 32): see the header */
    p.smem = resident_smem(k, p.ldw, p.V, p.T);
    p.ok = p.smem <= (size_t)optin;
    return p;
}

/* Queue a resident kernel on a persistent grid of at most maxg blocks: as few blocks as
 * give the same number of rounds, so every block gets the same number of groups (no
 * half-empty last round). */
cvene_status queue_resident(cvene_backend *be, cudaStream_t st,
                            void (*kern)(float *, const int64_t *, const float *, const int64_t *, const float *, int,
                                         int, int, int, int),
                            int T, size_t smem, int ldw, int64_t ngroups, int64_t maxg, float *x, const int64_t *x_off,
                            const float *s, const int64_t *s_off, const float *W, int n, int D, int k, int trans) {
    if (smem > 48 * 1024) /* beyond the default: opt in (host-side attribute, no sync) */
        CU_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int64_t rounds = (ngroups + maxg - 1) / maxg;
    const int64_t grid = (ngroups + rounds - 1) / rounds;
    kern<<<(unsigned)grid, T, smem, st>>>(x, x_off, s, s_off, W, n, D, k, trans, ldw);
    CU_CHECK(be, cudaGetLastError());
    return CVENE_OK;
}

/* Queue k_rot_wreg<K, C, 8 / C> on a persistent grid of at most sms blocks (one block per
 * SM: 512 threads at up to 128 registers fill the register file), as few blocks as give
 * the same number of rounds; *launched = false when its shared memory (ring + red) does not
 * fit. ptxas (CUDA 13, sm_90) for K = 8, C = 2: see bench/RESULTS.md's GPU section. */
template <int K, int C>
cvene_status launch_wreg_k(cvene_backend *be, cudaStream_t st, int T, int sms, int optin, bool *launched, float *x,
                           const int64_t *x_off, const float *s, const int64_t *s_off, const float *W, int n, int D,
                           int trans) {
    constexpr int S = 8 / C, NP = K <= 4 ? 4 : 8;
    const size_t smem = sizeof(float) * 2 * (size_t)(T / 32) * NP + sizeof(float4) * S * 2 * C * (size_t)T;
    *launched = false;
    if (smem > (size_t)optin) return CVENE_OK;
    auto kern = k_rot_wreg<K, C, S>;
    if (smem > 48 * 1024) /* beyond the default: opt in (host-side attribute, no sync) */
        CU_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int64_t rounds = ((int64_t)n + sms - 1) / sms;
    const int64_t grid = ((int64_t)n + rounds - 1) / rounds;
    kern<<<(unsigned)grid, T, smem, st>>>(x, x_off, s, s_off, W, n, D, trans);
    CU_CHECK(be, cudaGetLastError());
    *launched = true;
    return CVENE_OK;
}

template <int C>
cvene_status launch_wreg(cvene_backend *be, cudaStream_t st, int T, int sms, int optin, bool *launched, float *x,
                         const int64_t *x_off, const float *s, const int64_t *s_off, const float *W, int n, int D,
                         int k, int trans) {
#define WREG_ARGS be, st, T, sms, optin, launched, x, x_off, s, s_off, W, n, D, trans
    switch (k) {
    case 2: return launch_wreg_k<2, C>(WREG_ARGS);
    case 3: return launch_wreg_k<3, C>(WREG_ARGS);
    case 4: return launch_wreg_k<4, C>(WREG_ARGS);
    case 5: return launch_wreg_k<5, C>(WREG_ARGS);
    case 6: return launch_wreg_k<6, C>(WREG_ARGS);
    case 7: return launch_wreg_k<7, C>(WREG_ARGS);
    case 8: return launch_wreg_k<8, C>(WREG_ARGS);
    default: *launched = false; return CVENE_OK;
    }
#undef WREG_ARGS
}

/* CVENE_IV_ROTATED=smem in the environment keeps W in shared memory (k_rot_pipe) where
 * k_rot_wreg would run: for A/B measurements (bench_iv_kernels) and as an escape hatch. */
bool wreg_disabled() {
    const char *e = getenv("CVENE_IV_ROTATED");
    return e && strcmp(e, "smem") == 0;
}

/* Launch the resident kernel; *launched = false (nothing queued) if the device cannot
 * hold one block of it, so the caller falls back. */
template <int V, int C>
cvene_status launch_resident(cvene_backend *be, cudaStream_t st, const resident_plan &p, int sms, int optin,
                             bool *launched, float *x, const int64_t *x_off, const float *s, const int64_t *s_off,
                             const float *W, int n, int D, int k, int trans) {
    auto kern = k_rot_resident<V, C>;
    *launched = false;
    /* persistent grid: up to ~32 warps per SM (W is copied once per block, so no more
     * blocks than that) as far as occupancy allows. One block always fits (launch bounds:
     * <= 128 registers at 512 threads; the plan checked shared memory), so with at most
     * one group per SM the occupancy query (host time that small launches feel) is
     * skipped. */
    const int64_t ngroups = ((int64_t)n + V - 1) / V;
    int bps = 1;
    if (ngroups > sms) {
        if (p.smem > 48 * 1024) /* the query needs the opt-in too */
            CU_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)p.smem));
        int occ = 0;
        CU_CHECK(be, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, p.T, p.smem));
        if (occ < 1) return CVENE_OK;
        /* one block fills the SM (shared memory or registers): no other block's loads
         * overlap this one's compute, so take k_rot_pipe (x and s through shared memory,
         * VP C <= 4 float4 pairs a thread per group) when its buffer fits beside W and
         * every block still gets two groups or more (the pipeline needs a next group) */
        if constexpr (C <= 2) { /* W in registers, a deep ring of whole vectors */
            if (occ == 1 && k >= kWregMinK && k <= kWregMaxK && n >= 2 * sms && !wreg_disabled()) {
                const cvene_status r =
                    launch_wreg<C>(be, st, p.T, sms, optin, launched, x, x_off, s, s_off, W, n, D, k, trans);
                if (r != CVENE_OK || *launched) return r;
            }
        }
        if constexpr (C <= 4) {
            constexpr int VP = V * C >= 4 ? 4 / C : V;
            const int64_t ngp = ((int64_t)n + VP - 1) / VP;
            const size_t smem = resident_smem(k, p.ldw, VP, p.T) + sizeof(float4) * 2 * VP * C * (size_t)p.T;
            if (occ == 1 && k >= kPipeMinK && ngp > sms && smem <= (size_t)optin) {
                const cvene_status r =
                    queue_resident(be, st, k_rot_pipe<VP, C>, p.T, smem, p.ldw, ngp, sms, x, x_off, s, s_off, W, n, D,
                                   k, trans);
                *launched = r == CVENE_OK;
                return r;
            }
        }
        bps = 32 / (p.T / 32);
        if (bps < 1) bps = 1;
        if (bps > occ) bps = occ;
    }
    const cvene_status r = queue_resident(be, st, kern, p.T, p.smem, p.ldw, ngroups, (int64_t)sms * bps, x, x_off, s,
                                          s_off, W, n, D, k, trans);
    *launched = r == CVENE_OK;
    return r;
}

cvene_status run_resident(cvene_backend *be, cudaStream_t st, const resident_plan &p, int sms, int optin,
                          bool *launched, float *x, const int64_t *x_off, const float *s, const int64_t *s_off,
                          const float *W, int n, int D, int k, int trans) {
#define RES_ARGS be, st, p, sms, optin, launched, x, x_off, s, s_off, W, n, D, k, trans
    switch (p.C * 10 + p.V) {
    case 11: return launch_resident<1, 1>(RES_ARGS);
    case 12: return launch_resident<2, 1>(RES_ARGS);
    case 14: return launch_resident<4, 1>(RES_ARGS);
    case 21: return launch_resident<1, 2>(RES_ARGS);
    case 22: return launch_resident<2, 2>(RES_ARGS);
    case 24: return launch_resident<4, 2>(RES_ARGS);
    case 41: return launch_resident<1, 4>(RES_ARGS);
    case 42: return launch_resident<2, 4>(RES_ARGS);
    case 81: return launch_resident<1, 8>(RES_ARGS);
    default: *launched = false; return CVENE_OK; /* not a planned shape */
    }
#undef RES_ARGS
}

/* ---- (b) larger k, scattered vectors: W from L2 ------------------------------------- */

constexpr int kRotBlock = 256;
constexpr int64_t kMaxGrid = 1 << 20; /* grid-stride loops cover the rest */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

/* One block per V consecutive vectors; the differences s - x sit in shared memory (V, D),
 * each warp takes rows j of W (k, D) for the dot products (V at once, so W is read once
 * per V vectors; lanes read consecutive floats of a row), then threads over d add
 * W^T proj to x (consecutive threads, consecutive floats of each row).
 * Dynamic shared memory: delta (V, D) then proj (V, k). */
template <int V>
__global__ void k_iv_rotated(float *x, const int64_t *x_off, const float *s, const int64_t *s_off,
                             const float *__restrict__ W, int n, int D, int k) {
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
            const float *wj = W + (size_t)j * D;
            for (int d = lane; d < D; d += 32) {
                const float w = __ldg(wj + d);
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
                const float w = __ldg(W + (size_t)j * D + d);
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

template <int V>
cvene_status launch_rotated(cvene_backend *be, cudaStream_t st, size_t smem, float *x, const int64_t *x_off,
                            const float *s, const int64_t *s_off, const float *W, int n, int D, int k) {
    auto kern = k_iv_rotated<V>;
    if (smem > 48 * 1024) /* beyond the default: opt in (host-side attribute, no sync) */
        CU_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int64_t blocks = ((int64_t)n + V - 1) / V;
    if (blocks > kMaxGrid) blocks = kMaxGrid;
    kern<<<(unsigned)blocks, kRotBlock, smem, st>>>(x, x_off, s, s_off, W, n, D, k);
    CU_CHECK(be, cudaGetLastError());
    return CVENE_OK;
}

/* out (cols, rows) = in (rows, cols)^T, both row-major: 32 x 32 tiles through shared
 * memory (33 columns: conflict-free both ways), blocks of 32 x 8 threads; coalesced
 * reads and writes. */
__global__ void k_transpose(float *__restrict__ out, const float *__restrict__ in, int rows, int cols) {
    __shared__ float tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = in[(size_t)r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (c < cols && r < rows) out[(size_t)c * rows + r] = tile[threadIdx.x][i];
    }
}

/* ---- (b) larger k, contiguous vectors: cuBLAS ---------------------------------------
 * Row-major X, S (n, D) are column-major X^T, S^T (D, n) with ld D; P (n, k) row-major is
 * column-major P^T (k, n) with ld k. M is the (k, D) matrix of the projection: W for
 * trans 0, W^T for trans 1.
 *   trans 0: W (k, D) row-major = column-major (D, k), ld D; M = op_T of it.
 *   trans 1: W (D, k) row-major = column-major (k, D), ld k = M itself (op_N).
 * GEMM 1, 2: P^T (k, n) = M (k, D) S^T (D, n), then P^T -= M X^T
 *            (m = k, n = n, K = D; A = W with opA = T (trans 0, lda D) or N (trans 1, lda k)).
 * GEMM 3:    X^T (D, n) += M^T (D, k) P^T (k, n)
 *            (m = D, n = n, K = k; A = W with opA = N (trans 0, lda D) or T (trans 1, lda k)).
 * i.e. x_i += M^T (M s_i - M x_i). P = M S - M X rather than M (S - X): S - X would need an
 * n x D scratch and two more passes over it; the difference is f32 rounding of each
 * product, relative to |M s| (W has orthonormal-ish rows in every use). When s_i == x_i
 * the two GEMMs see identical inputs with identical shapes and give identical sums. */
cvene_status rotated_gemm(cvene_backend *be, cublasHandle_t h, float *x, const float *s, const float *W, int n,
                          int D, int k, int trans) {
    void *pv = nullptr;
    {
        const cvene_status st = cvene_backend_cuda_scratch(be, sizeof(float) * (size_t)n * (size_t)k, &pv);
        if (st != CVENE_OK) return st;
    }
    float *P = static_cast<float *>(pv);
    const float one = 1.0f, zero = 0.0f, minus = -1.0f; /* host pointer mode (the backend's) */
    const int lda = trans ? k : D;
    const cublasOperation_t op1 = trans ? CUBLAS_OP_N : CUBLAS_OP_T;
    const cublasOperation_t op3 = trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(be, cublasSgemm(h, op1, CUBLAS_OP_N, k, n, D, &one, W, lda, s, D, &zero, P, k));
    CUBLAS_CHECK(be, cublasSgemm(h, op1, CUBLAS_OP_N, k, n, D, &minus, W, lda, x, D, &one, P, k));
    CUBLAS_CHECK(be, cublasSgemm(h, op3, CUBLAS_OP_N, D, n, k, &one, W, lda, P, k, &one, x, D));
    return CVENE_OK;
}

} // namespace

cvene_status cvene_cuda_iv_rotated(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                                   const int64_t *s_off, const float *W, int n, int D, int k, int trans) {
    if (n <= 0 || D <= 0 || k <= 0) return CVENE_OK;
    if (!x || !s || !W) return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "iv_rotated: NULL buffer");
    if (k == 1) trans = 0; /* W (D, 1) and W (1, D) are the same floats in the same order */
    const int dev = cvene_backend_cuda_ordinal(be);
    CU_CHECK(be, cudaSetDevice(dev));
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    int optin = 0, sms = 0;
    CU_CHECK(be, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    CU_CHECK(be, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    if (sms < 1) sms = 1;

    /* (a) W fits in one block's shared memory */
    const resident_plan rp = plan_resident(n, D, k, optin, sms);
    if (rp.ok) {
        bool launched = false;
        const cvene_status r = run_resident(be, st, rp, sms, optin, &launched, x, x_off, s, s_off, W, n, D, k, trans);
        if (r != CVENE_OK || launched) return r;
    }

    /* (b) contiguous vectors: three SGEMMs, if the handle does plain f32 math (TF32 would
     * break the f32 contract; the backend sets CUBLAS_DEFAULT_MATH, this guards changes) */
    if (!x_off && !s_off) {
        cublasHandle_t h = static_cast<cublasHandle_t>(cvene_backend_cuda_blas(be));
        cublasMath_t mode = CUBLAS_DEFAULT_MATH;
        CUBLAS_CHECK(be, cublasGetMathMode(h, &mode));
        const int base = (int)mode & 0xf;
        if (base == CUBLAS_DEFAULT_MATH || base == CUBLAS_PEDANTIC_MATH) return rotated_gemm(be, h, x, s, W, n, D, k, trans);
    }

    /* (b) scattered vectors: delta in shared memory, W (k, D) rows from L2 */
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
    const float *Wk = W;
    if (trans) { /* W (D, k) -> W^T (k, D) in the scratch buffer, so rows read coalesced */
        void *wt = nullptr;
        const cvene_status r = cvene_backend_cuda_scratch(be, sizeof(float) * (size_t)D * (size_t)k, &wt);
        if (r != CVENE_OK) return r;
        const dim3 grid((unsigned)((k + 31) / 32), (unsigned)((D + 31) / 32)), block(32, 8);
        k_transpose<<<grid, block, 0, st>>>(static_cast<float *>(wt), W, D, k);
        CU_CHECK(be, cudaGetLastError());
        Wk = static_cast<const float *>(wt);
    }
    if (V == 4) return launch_rotated<4>(be, st, 4 * per, x, x_off, s, s_off, Wk, n, D, k);
    return launch_rotated<1>(be, st, per, x, x_off, s, s_off, Wk, n, D, k);
}
