/* Fused intervention kernels vs the device's copy bandwidth (CUDA only).
 *
 *   cvene_bench_iv_kernels [reps]
 *
 * Measures, on CUDA device 0 with CUDA events on the backend's stream. One timed sample is
 * G = 20 back-to-back launches of the case, each on the next of NBUF buffer sets (so
 * consecutive launches do not hit in L2), divided by G: launch gaps then overlap the
 * previous kernel, as they do inside a forward; a single launch per sample would mostly
 * time the fixed launch cost for the small cases. The result is the median of `reps`
 * samples (after a warm-up). Cases:
 *   copy             cudaMemcpyAsync device to device of 64 MiB (bytes read + written)
 *   iv_units ...     VANILLA on a block_output-like (B=32, T=128, C=4096) stream: one
 *                    position per example, every position, and every position with a
 *                    subspace: 256 random dims (sorted, as the engine passes them), and
 *                    the contiguous dims [0, 256) and [0, 2048) both as the engine calls
 *                    them now (engine/run.c: a subspace that is one run [a, a + m) in
 *                    every example is a whole-row call with D = m and offsets shifted by
 *                    a, no dims arrays) and through the dims-list path
 *   iv_rotated ...   n = 4096 vectors of D = 4096 (a whole 32 x 128 site) with k = 1, 8
 *                    (the realistic small-k sizes: rotated / low-rank / LoReFT
 *                    interventions of rank 1..16) and 64, W (k, D) and the low-rank form
 *                    W (D, k); k = 64 also with offsets (the scattered-vector kernel the
 *                    engine's calls take); k = 8 also with CVENE_IV_ROTATED=smem (W in
 *                    shared memory instead of registers: both kernels in one run); and
 *                    n = 32 (one position per example), k = 8
 * and prints one line per case: name, GB/s counting the minimum bytes the op must move
 * (VANILLA: read the source floats, write the site floats; iv_rotated: read x, s and W once,
 * write x), that as a percentage of the 64 MiB copy, and as a percentage of a copy moving
 * the same number of bytes (read + write) timed the same way, which is the fair reference
 * for the small cases (1 MB) that no kernel can stream at full speed.
 * For the random dims the line also gives the bandwidth counted in the 32-byte sectors the
 * op touches (distinct sectors of the 256 sorted dims per row, in x and in s): a scattered
 * 4-byte value still moves a whole sector through L2 and DRAM, so 256 random dims of 4096
 * (~200 sectors per row for 256 values) cannot reach 70% of copy bandwidth counted in
 * useful bytes; the sector count shows how close the kernel is to what the memory does.
 * For iv_rotated it also prints the FLOP floor 4 n D k at 67 TFLOP/s (H200 FP32 without
 * tensor cores): where that exceeds the time the bytes take at copy speed the case is
 * compute-bound (k = 64 at D = 4096), and the copy percentage cannot reach 70%.
 * Without a CUDA device it prints "no CUDA device" and exits 0. */
#define _POSIX_C_SOURCE 200809L /* setenv, unsetenv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels/backend.h"

#define NBUF 3
#define WARMUP 5
#define G 20                 /* launches per timed sample */
#define FP32_PEAK 67e12      /* FLOP/s: H200 FP32 without tensor cores */

#define CK(call)                                                                                    \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));  \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)
#define OK(be, call)                                                                                \
    do {                                                                                            \
        if ((call) != CVENE_OK) {                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, (be)->err);        \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static char errbuf[1024];

static void *dev_alloc(cvene_backend *be, size_t n) {
    void *p = NULL;
    OK(be, be->ops->alloc(be, &p, n));
    return p;
}

static void *upload(cvene_backend *be, const void *h, size_t n) {
    void *p = dev_alloc(be, n);
    OK(be, be->ops->to_device(be, p, h, n));
    return p;
}

/* d (n) = random floats in [-scale, scale) written on the host and uploaded */
static void fill_random(cvene_backend *be, float *d, size_t n, float scale, unsigned *seed) {
    float *h = malloc(sizeof(float) * n);
    if (!h) exit(1);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        h[i] = ((float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
    }
    OK(be, be->ops->to_device(be, d, h, sizeof(float) * n));
    free(h);
}

/* a new buffer of random floats (buffers start finite) */
static float *dev_random(cvene_backend *be, size_t n, float scale, unsigned *seed) {
    float *d = dev_alloc(be, sizeof(float) * n);
    fill_random(be, d, n, scale, seed);
    return d;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* One case: `run(k)` queues the op on buffer set k. Returns the median over reps of the
 * time of G back-to-back launches divided by G, in milliseconds. */
typedef void (*run_fn)(void *ctx, int k);

static float time_case(cvene_backend *be, run_fn run, void *ctx, int reps) {
    cudaStream_t st = (cudaStream_t)cvene_backend_cuda_stream(be);
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int w = 0; w < WARMUP; w++) run(ctx, w % NBUF);
    OK(be, be->ops->sync(be));
    float *ms = malloc(sizeof(float) * (size_t)reps);
    if (!ms) exit(1);
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, st));
        for (int g = 0; g < G; g++) run(ctx, (r * G + g) % NBUF);
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&ms[r], a, b));
        ms[r] /= (float)G;
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    float med = ms[reps / 2];
    free(ms);
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return med;
}

/* ---- cases ------------------------------------------------------------------------- */

typedef struct {
    cvene_backend *be;
    void *dst[NBUF], *src[NBUF];
    size_t n;
} copy_ctx;
static void run_copy(void *p, int k) {
    copy_ctx *c = p;
    OK(c->be, c->be->ops->copy(c->be, c->dst[k], c->src[k], c->n));
}

/* the reference copies: 64 MiB (copy_gbs) and, per case, one of the same byte count */
typedef struct {
    cvene_backend *be;
    copy_ctx big, same; /* same: buffers of `cap` bytes, n set per case */
    size_t cap;
    int reps;
    double copy_gbs;
} bench;

/* GB/s of a device copy that reads and writes `bytes` in all (bytes / 2 each way) */
static double same_size_copy_gbs(bench *bn, double bytes) {
    size_t half = (size_t)(bytes / 2.0);
    if (half > bn->cap) half = bn->cap;
    if (half < 4) half = 4;
    bn->same.n = half;
    float ms = time_case(bn->be, run_copy, &bn->same, bn->reps);
    return 2.0 * (double)half / (ms * 1e-3) / 1e9;
}

/* one line: name, GB/s, % of the 64 MiB copy, % of the same-size copy, then (extra) */
static double report(bench *bn, const char *name, double bytes, float ms, const char *extra) {
    double gbs = bytes / (ms * 1e-3) / 1e9;
    double same = same_size_copy_gbs(bn, bytes);
    printf("%-74s %9.1f  %6.1f%%  %6.1f%%   (%.4f ms, %.1f MB%s%s)\n", name, gbs, 100.0 * gbs / bn->copy_gbs,
           100.0 * gbs / same, ms, bytes / 1e6, extra && *extra ? "; " : "", extra ? extra : "");
    return gbs;
}

typedef struct {
    cvene_backend *be;
    float *x[NBUF], *s[NBUF];
    const int64_t *x_off, *s_off, *dims_off;
    const int32_t *dims, *dims_n;
    int n, D;
    int64_t rs; /* row stride (R = 1: not read) */
} units_ctx;
static void run_units(void *p, int k) {
    units_ctx *c = p;
    OK(c->be, c->be->ops->iv_units(c->be, c->x[k], c->x_off, c->rs, c->s[k], c->s_off, c->rs, c->dims, c->dims_off,
                                   c->dims_n, c->n, 1, c->D, CVENE_IVOP_VANILLA));
}

typedef struct {
    cvene_backend *be;
    float *x[NBUF], *s[NBUF];
    const int64_t *x_off, *s_off;
    const float *W;
    int n, D, k, trans;
} rot_ctx;
static void run_rot(void *p, int k) {
    rot_ctx *c = p;
    OK(c->be, c->be->ops->iv_rotated(c->be, c->x[k], c->x_off, c->s[k], c->s_off, c->W, c->n, c->D, c->k, c->trans));
}

/* iv_rotated case: bytes read x, s, W once and write x; the FLOP floor next to it */
static void rot_case(bench *bn, rot_ctx *r, const char *name) {
    const double bytes = (3.0 * r->n * r->D + (double)r->k * r->D) * sizeof(float);
    const double flop_ms = 4.0 * r->n * r->D * r->k / FP32_PEAK * 1e3;
    const double byte_ms = bytes / (bn->copy_gbs * 1e9) * 1e3;
    char extra[160];
    snprintf(extra, sizeof extra, "FLOP floor %.4f ms at 67 TFLOP/s, bytes at copy speed %.4f ms: %s", flop_ms, byte_ms,
             flop_ms > byte_ms ? "compute-bound" : "bandwidth-bound");
    float ms = time_case(bn->be, run_rot, r, bn->reps);
    report(bn, name, bytes, ms, extra);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 51;
    if (reps < 1) reps = 1;
    if (cvene_backend_cuda_device_count() == 0) {
        printf("no CUDA device: nothing to measure\n");
        return 0;
    }
    cvene_backend *be = cvene_backend_cuda_new(0, errbuf, sizeof errbuf);
    if (!be) {
        fprintf(stderr, "CUDA backend: %s\n", errbuf);
        return 1;
    }
    be->err = errbuf;
    be->err_len = sizeof errbuf;
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d buffer sets rotated; one sample = %d back-to-back launches / %d, median of %d samples\n",
           prop.name, NBUF, G, G, reps);
    printf("%-74s %9s  %7s  %7s\n", "case", "GB/s", "of_copy", "of_same-size_copy");
    unsigned seed = 1234;

    /* block_output-like stream (B, T, C) and a source of the same shape */
    const int B = 32, T = 128, C = 4096;
    const size_t site_n = (size_t)B * T * C;
    units_ctx u = {be, {0}, {0}, NULL, NULL, NULL, NULL, NULL, 0, C, C};
    for (int k = 0; k < NBUF; k++) {
        u.x[k] = dev_random(be, site_n, 1.0f, &seed);
        u.s[k] = dev_random(be, site_n, 1.0f, &seed);
    }

    /* reference copies, in their own buffers (x and s stay different): 64 MiB (one whole
     * site), and same-size copies up to the largest case (iv_rotated n = D = 4096: 3 sites
     * + W, moved as half read, half write) */
    bench bn;
    memset(&bn, 0, sizeof bn);
    bn.be = be;
    bn.reps = reps;
    bn.cap = (size_t)((3.0 * site_n + 64.0 * C) * sizeof(float) / 2.0) + 4096;
    bn.same.be = be;
    for (int k = 0; k < NBUF; k++) { /* contents do not matter to a copy */
        bn.same.dst[k] = dev_alloc(be, bn.cap);
        bn.same.src[k] = dev_alloc(be, bn.cap);
    }
    bn.big.be = be;
    bn.big.n = site_n * sizeof(float);
    for (int k = 0; k < NBUF; k++) bn.big.dst[k] = bn.same.dst[k], bn.big.src[k] = bn.same.src[k];
    float ms = time_case(be, run_copy, &bn.big, reps);
    bn.copy_gbs = 2.0 * (double)bn.big.n / (ms * 1e-3) / 1e9;
    report(&bn, "copy d2d (64 MiB)", 2.0 * (double)bn.big.n, ms, NULL);

    /* index arrays: every position (n = B*T), or position 17 of each example (n = B) */
    const int n_all = B * T;
    int64_t *xo = malloc(sizeof(int64_t) * (size_t)n_all), *zo = calloc((size_t)n_all, sizeof(int64_t));
    int64_t *xo1 = malloc(sizeof(int64_t) * B);
    int32_t *dn = malloc(sizeof(int32_t) * (size_t)n_all), dims[256];
    if (!xo || !zo || !xo1 || !dn) return 1;
    for (int i = 0; i < n_all; i++) xo[i] = (int64_t)i * C, dn[i] = 256;
    for (int b = 0; b < B; b++) xo1[b] = ((int64_t)b * T + 17) * C;
    int32_t *perm = malloc(sizeof(int32_t) * C);
    if (!perm) return 1;
    for (int d = 0; d < C; d++) perm[d] = d;
    for (int d = C - 1; d > 0; d--) { /* Fisher-Yates: 256 random dims */
        seed = seed * 1664525u + 1013904223u;
        int j = (int)((seed >> 8) % (unsigned)(d + 1)), t = perm[d];
        perm[d] = perm[j], perm[j] = t;
    }
    memcpy(dims, perm, sizeof dims);
    qsort(dims, 256, sizeof(int32_t), cmp_i32); /* the engine sorts (and dedupes) subspace dims */
    int64_t *d_xo = upload(be, xo, sizeof(int64_t) * (size_t)n_all);
    int64_t *d_xo1 = upload(be, xo1, sizeof(int64_t) * B);
    int64_t *d_zo = upload(be, zo, sizeof(int64_t) * (size_t)n_all);
    int32_t *d_dn = upload(be, dn, sizeof(int32_t) * (size_t)n_all);
    int32_t *d_dims = upload(be, dims, sizeof dims);

    /* one position per example: source (B, 1, C) packed, site rows at position 17 */
    int64_t *so1 = malloc(sizeof(int64_t) * B);
    if (!so1) return 1;
    for (int b = 0; b < B; b++) so1[b] = (int64_t)b * C;
    int64_t *d_so1 = upload(be, so1, sizeof(int64_t) * B);
    u.x_off = d_xo1, u.s_off = d_so1, u.n = B;
    ms = time_case(be, run_units, &u, reps);
    report(&bn, "iv_units vanilla 1 pos (B=32, C=4096)", 2.0 * B * C * sizeof(float), ms, NULL);

    u.x_off = d_xo, u.s_off = d_xo, u.n = n_all;
    ms = time_case(be, run_units, &u, reps);
    report(&bn, "iv_units vanilla all pos (32x128x4096)", 2.0 * (double)site_n * sizeof(float), ms, NULL);

    /* 256 random dims, sorted: each 4-byte value sits in a 32-byte sector that moves whole */
    {
        int sectors = 0; /* distinct 32-byte sectors of one row's dims (rows start 16 KB apart) */
        for (int q = 0; q < 256; q++) sectors += q == 0 || dims[q] / 8 != dims[q - 1] / 8;
        u.dims = d_dims, u.dims_off = d_zo, u.dims_n = d_dn;
        ms = time_case(be, run_units, &u, reps);
        const double sector_bytes = 2.0 * n_all * sectors * 32.0; /* s read, x written */
        const double sector_gbs = sector_bytes / (ms * 1e-3) / 1e9;
        char extra[200];
        snprintf(extra, sizeof extra, "counted in the %d touched 32-byte sectors per row of x and of s: %.1f GB/s = "
                 "%.1f%% of copy", sectors, sector_gbs, 100.0 * sector_gbs / bn.copy_gbs);
        report(&bn, "iv_units vanilla all pos, 256 random dims (sorted; dims list)", 2.0 * n_all * 256.0 * sizeof(float),
               ms, extra);
    }

    /* contiguous subspaces (pyvene's usual [0, m) ranges), as the engine calls them (one run
     * [a, a + m) in every example: a whole-row call on m floats, offsets shifted by a = 0,
     * no dims arrays) and through the dims list */
    int32_t *first = malloc(sizeof(int32_t) * C);
    int32_t *dn2 = malloc(sizeof(int32_t) * (size_t)n_all);
    if (!first || !dn2) return 1;
    for (int d = 0; d < C; d++) first[d] = d;
    int32_t *d_first = upload(be, first, sizeof(int32_t) * C);
    for (int i = 0; i < n_all; i++) dn2[i] = C / 2;
    int32_t *d_dn2 = upload(be, dn2, sizeof(int32_t) * (size_t)n_all);
    for (int m = 256; m <= C / 2; m *= 8) {
        char name[100];
        const double bytes = 2.0 * n_all * (double)m * sizeof(float);
        u.dims = NULL, u.dims_off = NULL, u.dims_n = NULL, u.D = m; /* rows still C apart: u.rs */
        ms = time_case(be, run_units, &u, reps);
        snprintf(name, sizeof name, "iv_units vanilla all pos, dims [0, %d) (engine: whole-row call, D=%d)", m, m);
        report(&bn, name, bytes, ms, NULL);
        u.dims = d_first, u.dims_off = d_zo, u.dims_n = m == 256 ? d_dn : d_dn2, u.D = C;
        ms = time_case(be, run_units, &u, reps);
        snprintf(name, sizeof name, "iv_units vanilla all pos, dims [0, %d) (dims list)", m);
        report(&bn, name, bytes, ms, NULL);
    }
    u.dims = NULL, u.dims_off = NULL, u.dims_n = NULL, u.D = C;
    be->ops->free(be, d_first), be->ops->free(be, d_dn2);
    free(first), free(dn2);

    /* rotated: n = 4096 vectors of D = 4096 (the same buffers), W (k, D) or (D, k). W has
     * entries of variance 1 / D, so W W^T ~ I (eigenvalues within (1 +- sqrt(k / D))^2, in
     * (0, 2) for every k here): each launch moves the k-dim component of x towards s's, so
     * x stays bounded over hundreds of repeated launches (no inf / NaN creeping into the
     * timing). One buffer of 64 x D serves every k and both forms (its first k D entries). */
    const int n = 4096, D = 4096;
    float *W = dev_random(be, (size_t)64 * D, 1.7320508f / 64.0f, &seed); /* sqrt(3 / 4096) */
    rot_ctx r = {be, {0}, {0}, NULL, NULL, W, n, D, 1, 0};
    for (int q = 0; q < NBUF; q++) { /* the Vanilla cases left x = s: new x */
        fill_random(be, u.x[q], site_n, 1.0f, &seed);
        r.x[q] = u.x[q], r.s[q] = u.s[q];
    }
    const int ks[3] = {1, 8, 64};
    for (int trans = 0; trans <= 1; trans++)
        for (int i = 0; i < 3; i++) {
            char name[100];
            r.k = ks[i], r.trans = trans;
            snprintf(name, sizeof name, "iv_rotated%s n=4096 D=4096 k=%d%s", trans ? " low-rank W (D, k)" : "", ks[i],
                     ks[i] <= 16 ? " (realistic small k)" : "");
            rot_case(&bn, &r, name);
        }
    /* k = 8 again with W in shared memory (the kernel k_rot_wreg replaced for 2 <= k <= 8 at
     * this size): the A/B of the two on the same card in the same run */
    setenv("CVENE_IV_ROTATED", "smem", 1);
    for (int trans = 0; trans <= 1; trans++) {
        r.k = 8, r.trans = trans;
        rot_case(&bn, &r, trans ? "iv_rotated low-rank n=4096 D=4096 k=8, W in shared memory (CVENE_IV_ROTATED=smem)"
                                : "iv_rotated n=4096 D=4096 k=8, W in shared memory (CVENE_IV_ROTATED=smem)");
    }
    unsetenv("CVENE_IV_ROTATED");
    /* k = 64 with offsets (here i D, the same vectors): the scattered-vector kernel, which is
     * what the engine's calls (offsets on the device) take when W does not fit on chip */
    r.k = 64, r.trans = 0, r.x_off = d_xo, r.s_off = d_xo;
    rot_case(&bn, &r, "iv_rotated n=4096 D=4096 k=64, offsets (scattered-vector kernel)");
    /* one position per example: x at position 17 of each example, s packed */
    r.k = 8, r.n = B, r.x_off = d_xo1, r.s_off = d_so1;
    rot_case(&bn, &r, "iv_rotated n=32 (1 pos, B=32) D=4096 k=8 (realistic small k)");

    for (int q = 0; q < NBUF; q++) {
        be->ops->free(be, u.x[q]), be->ops->free(be, u.s[q]);
        be->ops->free(be, bn.same.dst[q]), be->ops->free(be, bn.same.src[q]);
    }
    be->ops->free(be, W);
    be->ops->free(be, d_xo), be->ops->free(be, d_xo1), be->ops->free(be, d_zo), be->ops->free(be, d_dn);
    be->ops->free(be, d_dims), be->ops->free(be, d_so1);
    free(xo), free(zo), free(xo1), free(dn), free(perm), free(so1);
    cvene_backend_cuda_free(be);
    return 0;
}
