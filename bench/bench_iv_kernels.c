/* Fused intervention kernels vs the device's copy bandwidth (CUDA only).
 *
 *   cvene_bench_iv_kernels [reps]
 *
 * Measures, on CUDA device 0 with CUDA events on the backend's stream (warm-up, then the
 * median of `reps` timed launches, each launch on the next of NBUF buffer sets so that
 * consecutive launches do not hit in L2):
 *   copy             cudaMemcpyAsync device to device (bytes read + written)
 *   iv_units ...     VANILLA on a block_output-like (B=32, T=128, C=4096) stream: one
 *                    position per example, every position, and every position with a
 *                    256-dim subspace (random dims)
 *   iv_rotated ...   n=4096 vectors, D=4096, k=64, W (k, D) and the low-rank transpose
 * and prints one line per case: name, GB/s counting the minimum bytes the op must move
 * (VANILLA: read the source floats, write the site floats; iv_rotated: read x, s and W
 * once, write x), and that as a percentage of the copy bandwidth.
 * Without a CUDA device it prints "no CUDA device" and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels/backend.h"

#define NBUF 3
#define WARMUP 5

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

/* random floats in [-scale, scale) written on the host and uploaded (buffers start finite) */
static float *dev_random(cvene_backend *be, size_t n, float scale, unsigned *seed) {
    float *h = malloc(sizeof(float) * n);
    if (!h) exit(1);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        h[i] = ((float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
    }
    float *d = upload(be, h, sizeof(float) * n);
    free(h);
    return d;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One case: `run(k)` queues the op on buffer set k; returns the median milliseconds. */
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
        run(ctx, r % NBUF);
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&ms[r], a, b));
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    float med = ms[reps / 2];
    free(ms);
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return med;
}

static double report(const char *name, double bytes, float ms, double copy_gbs) {
    double gbs = bytes / (ms * 1e-3) / 1e9;
    if (copy_gbs > 0) printf("%-40s %9.1f  %6.1f%%   (%.4f ms, %.1f MB)\n", name, gbs, 100.0 * gbs / copy_gbs, ms, bytes / 1e6);
    else printf("%-40s %9.1f  %6.1f%%   (%.4f ms, %.1f MB)\n", name, gbs, 100.0, ms, bytes / 1e6);
    return gbs;
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

typedef struct {
    cvene_backend *be;
    float *x[NBUF], *s[NBUF];
    const int64_t *x_off, *s_off, *dims_off;
    const int32_t *dims, *dims_n;
    int n, D;
} units_ctx;
static void run_units(void *p, int k) {
    units_ctx *c = p;
    OK(c->be, c->be->ops->iv_units(c->be, c->x[k], c->x_off, c->D, c->s[k], c->s_off, c->D, c->dims, c->dims_off,
                                   c->dims_n, c->n, 1, c->D, CVENE_IVOP_VANILLA));
}

typedef struct {
    cvene_backend *be;
    float *x[NBUF], *s[NBUF];
    const float *W;
    int n, D, k, trans;
} rot_ctx;
static void run_rot(void *p, int k) {
    rot_ctx *c = p;
    OK(c->be, c->be->ops->iv_rotated(c->be, c->x[k], NULL, c->s[k], NULL, c->W, c->n, c->D, c->k, c->trans));
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
    printf("device: %s, %d buffer sets rotated, median of %d reps\n", prop.name, NBUF, reps);
    printf("%-40s %9s  %7s\n", "case", "GB/s", "of_copy");
    unsigned seed = 1234;

    /* block_output-like stream (B, T, C) and a source of the same shape */
    const int B = 32, T = 128, C = 4096;
    const size_t site_n = (size_t)B * T * C;
    units_ctx u = {be, {0}, {0}, NULL, NULL, NULL, NULL, NULL, 0, C};
    for (int k = 0; k < NBUF; k++) {
        u.x[k] = dev_random(be, site_n, 1.0f, &seed);
        u.s[k] = dev_random(be, site_n, 1.0f, &seed);
    }

    /* copy bandwidth: as many bytes as one whole site */
    copy_ctx cp = {be, {0}, {0}, site_n * sizeof(float)};
    for (int k = 0; k < NBUF; k++) cp.dst[k] = u.x[k], cp.src[k] = u.s[k];
    float ms = time_case(be, run_copy, &cp, reps);
    double copy_gbs = report("copy d2d (64 MiB)", 2.0 * (double)cp.n, ms, 0);

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
    report("iv_units vanilla 1 pos (B=32, C=4096)", 2.0 * B * C * sizeof(float), ms, copy_gbs);

    u.x_off = d_xo, u.s_off = d_xo, u.n = n_all;
    ms = time_case(be, run_units, &u, reps);
    report("iv_units vanilla all pos (32x128x4096)", 2.0 * (double)site_n * sizeof(float), ms, copy_gbs);

    u.dims = d_dims, u.dims_off = d_zo, u.dims_n = d_dn;
    ms = time_case(be, run_units, &u, reps);
    report("iv_units vanilla all pos, 256 random dims", 2.0 * n_all * 256.0 * sizeof(float), ms, copy_gbs);

    /* contiguous subspaces (pyvene's usual [0, k) ranges): whole 32-byte sectors move, so these
     * can stream; the random dims above touch a sector per 4-byte value (8x the counted bytes) */
    int32_t *first = malloc(sizeof(int32_t) * C);
    int32_t *dn2 = malloc(sizeof(int32_t) * (size_t)n_all);
    if (!first || !dn2) return 1;
    for (int d = 0; d < C; d++) first[d] = d;
    int32_t *d_first = upload(be, first, sizeof(int32_t) * C);
    u.dims = d_first;
    ms = time_case(be, run_units, &u, reps);
    report("iv_units vanilla all pos, dims [0, 256)", 2.0 * n_all * 256.0 * sizeof(float), ms, copy_gbs);
    for (int i = 0; i < n_all; i++) dn2[i] = C / 2;
    int32_t *d_dn2 = upload(be, dn2, sizeof(int32_t) * (size_t)n_all);
    u.dims_n = d_dn2;
    ms = time_case(be, run_units, &u, reps);
    report("iv_units vanilla all pos, dims [0, 2048)", 2.0 * n_all * (C / 2.0) * sizeof(float), ms, copy_gbs);
    u.dims = NULL, u.dims_off = NULL, u.dims_n = NULL;
    be->ops->free(be, d_first), be->ops->free(be, d_dn2);
    free(first), free(dn2);

    /* rotated: n = 4096 vectors of D = 4096 (the same buffers), W (64, 4096) */
    const int n = 4096, D = 4096, k = 64;
    rot_ctx r = {be, {0}, {0}, NULL, n, D, k, 0};
    for (int q = 0; q < NBUF; q++) r.x[q] = u.x[q], r.s[q] = u.s[q];
    /* entries of variance 1 / D: W W^T is near the identity, so x stays bounded over
     * hundreds of repeated launches (no inf / NaN creeping into the timing) */
    float *W = dev_random(be, (size_t)k * D, 1.7320508f / 64.0f, &seed);
    r.W = W;
    double rot_bytes = (3.0 * n * D + (double)k * D) * sizeof(float);
    ms = time_case(be, run_rot, &r, reps);
    report("iv_rotated n=4096 D=4096 k=64", rot_bytes, ms, copy_gbs);
    r.trans = 1;
    ms = time_case(be, run_rot, &r, reps);
    report("iv_rotated low-rank (W^T) same sizes", rot_bytes, ms, copy_gbs);

    for (int q = 0; q < NBUF; q++) be->ops->free(be, u.x[q]), be->ops->free(be, u.s[q]);
    be->ops->free(be, W);
    be->ops->free(be, d_xo), be->ops->free(be, d_xo1), be->ops->free(be, d_zo), be->ops->free(be, d_dn);
    be->ops->free(be, d_dims), be->ops->free(be, d_so1);
    free(xo), free(zo), free(xo1), free(dn), free(perm), free(so1);
    cvene_backend_cuda_free(be);
    return 0;
}
