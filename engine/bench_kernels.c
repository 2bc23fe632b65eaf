/* The fused intervention kernels timed at a caller's shapes, against a device-to-device copy
 * moving the same bytes (cvene_bench_kernels; `cvene bench kernels`). One sample is G
 * back-to-back launches, each on the next of NBUF buffer sets (so consecutive launches do not
 * hit in L2) and one device synchronisation, divided by G: launch gaps then overlap the previous
 * kernel as they do inside a forward. bench/bench_iv_kernels.c is the developers' fixed-shape
 * version with CUDA events. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/ctx.h"

#define NBUF 3
#define G 10

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    cvene_backend *be;
    float *x[NBUF], *s[NBUF], *cx[NBUF], *cs[NBUF]; /* site, source; the copy's own buffers */
    int64_t *off_all, *off_one, *off_packed;         /* (B T) row offsets; position T-1 of each example;
                                                        packed (B) source rows */
    float *W;                                        /* (k, C) = (C, k) floats */
    int B, T, C, k;
} kbench;

typedef enum { K_COPY, K_UNITS_ONE, K_UNITS_ALL, K_UNITS_HALF, K_ROT, K_ROT_LOWRANK } kcase;

static cvene_status launch(kbench *kb, kcase c, int q, size_t copy_bytes) {
    cvene_backend *be = kb->be;
    const int C = kb->C, n_all = kb->B * kb->T;
    switch (c) {
    case K_COPY: return be->ops->copy(be, kb->cx[q], kb->cs[q], copy_bytes);
    case K_UNITS_ONE:
        return be->ops->iv_units(be, kb->x[q], kb->off_one, C, kb->s[q], kb->off_packed, C, NULL, NULL, NULL, kb->B, 1,
                                 C, CVENE_IVOP_VANILLA);
    case K_UNITS_ALL:
        return be->ops->iv_units(be, kb->x[q], kb->off_all, C, kb->s[q], kb->off_all, C, NULL, NULL, NULL, n_all, 1, C,
                                 CVENE_IVOP_VANILLA);
    case K_UNITS_HALF: /* a contiguous subspace [0, C/2): the engine's whole-row call on C/2 floats */
        return be->ops->iv_units(be, kb->x[q], kb->off_all, C, kb->s[q], kb->off_all, C, NULL, NULL, NULL, n_all, 1,
                                 C / 2, CVENE_IVOP_VANILLA);
    case K_ROT: return be->ops->iv_rotated(be, kb->x[q], NULL, kb->s[q], NULL, kb->W, n_all, C, kb->k, 0);
    case K_ROT_LOWRANK: return be->ops->iv_rotated(be, kb->x[q], NULL, kb->s[q], NULL, kb->W, n_all, C, kb->k, 1);
    }
    return CVENE_ERR_INVALID_ARG;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median, min and max over repeat samples of the seconds per launch */
static cvene_status time_case(kbench *kb, kcase c, size_t copy_bytes, int repeat, double out[3]) {
    double *t = malloc(sizeof(double) * (size_t)repeat);
    if (!t) return CVENE_ERR_OOM;
    cvene_status st = CVENE_OK;
    for (int w = 0; w < NBUF && st == CVENE_OK; w++) st = launch(kb, c, w, copy_bytes); /* warm-up */
    if (st == CVENE_OK) st = kb->be->ops->sync(kb->be);
    for (int r = 0; r < repeat && st == CVENE_OK; r++) {
        const double t0 = now_s();
        for (int g = 0; g < G && st == CVENE_OK; g++) st = launch(kb, c, (r * G + g) % NBUF, copy_bytes);
        if (st == CVENE_OK) st = kb->be->ops->sync(kb->be);
        t[r] = (now_s() - t0) / G;
    }
    if (st == CVENE_OK) {
        qsort(t, (size_t)repeat, sizeof(double), cmp_double);
        out[0] = t[repeat / 2], out[1] = t[0], out[2] = t[repeat - 1];
    }
    free(t);
    return st;
}

static cvene_status upload_random(cvene_backend *be, float **d, size_t n, float scale, uint32_t *seed) {
    float *h = malloc(sizeof(float) * n);
    if (!h) return CVENE_ERR_OOM;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        h[i] = ((float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
    }
    cvene_status st = be->ops->alloc(be, (void **)d, sizeof(float) * n);
    if (st == CVENE_OK) st = be->ops->to_device(be, *d, h, sizeof(float) * n);
    free(h);
    return st;
}

static cvene_status upload_offsets(cvene_backend *be, int64_t **d, const int64_t *h, size_t n) {
    cvene_status st = be->ops->alloc(be, (void **)d, sizeof(int64_t) * n);
    return st == CVENE_OK ? be->ops->to_device(be, *d, h, sizeof(int64_t) * n) : st;
}

static void kbench_free(kbench *kb) {
    cvene_backend *be = kb->be;
    for (int q = 0; q < NBUF; q++) {
        if (kb->x[q]) be->ops->free(be, kb->x[q]);
        if (kb->s[q]) be->ops->free(be, kb->s[q]);
        if (kb->cx[q]) be->ops->free(be, kb->cx[q]);
        if (kb->cs[q]) be->ops->free(be, kb->cs[q]);
    }
    if (kb->off_all) be->ops->free(be, kb->off_all);
    if (kb->off_one) be->ops->free(be, kb->off_one);
    if (kb->off_packed) be->ops->free(be, kb->off_packed);
    if (kb->W) be->ops->free(be, kb->W);
}

cvene_status cvene_bench_kernels(cvene_ctx *ctx, int B, int T, int C, int k, int repeat, cvene_kernel_timing *out,
                                 int *n_out) {
    if (!ctx || !out || !n_out) return CVENE_ERR_INVALID_ARG;
    *n_out = 0;
    if (ctx->be->device != CVENE_DEVICE_CUDA)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the fused intervention kernels are the CUDA backend's: this "
                                                      "context is on the CPU (give it device cuda)");
    if (B < 1 || T < 1 || C < 2 || k < 1 || k > C || repeat < 1 || (int64_t)B * T * C > ((int64_t)1 << 31))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "cvene_bench_kernels: B = %d, T = %d, C = %d, k = %d, repeat = %d: need B, T, repeat >= 1, "
                          "C >= 2, 1 <= k <= C and B T C < 2^31", B, T, C, k, repeat);
    kbench kb;
    memset(&kb, 0, sizeof kb);
    kb.be = ctx->be, kb.B = B, kb.T = T, kb.C = C, kb.k = k;
    const size_t site_n = (size_t)B * T * C, n_all = (size_t)B * T;
    uint32_t seed = 1234;
    cvene_status st = CVENE_OK;
    /* the copy's buffers are as large as the biggest case's bytes split read / write (the
     * rotated ones: x, s read, x written, W read) */
    const size_t copy_cap = (3 * site_n + (size_t)k * C) * sizeof(float) / 2 + 64;
    for (int q = 0; q < NBUF && st == CVENE_OK; q++) {
        st = upload_random(kb.be, &kb.x[q], site_n, 1.0f, &seed);
        if (st == CVENE_OK) st = upload_random(kb.be, &kb.s[q], site_n, 1.0f, &seed);
        if (st == CVENE_OK) st = kb.be->ops->alloc(kb.be, (void **)&kb.cx[q], copy_cap);
        if (st == CVENE_OK) st = kb.be->ops->alloc(kb.be, (void **)&kb.cs[q], copy_cap);
    }
    /* W with entries of variance 1 / C: W W^T ~ I, so repeated launches keep x bounded */
    if (st == CVENE_OK) st = upload_random(kb.be, &kb.W, (size_t)k * C, sqrtf(3.0f / (float)C), &seed);
    int64_t *h = malloc(sizeof(int64_t) * n_all);
    if (!h && st == CVENE_OK) st = CVENE_ERR_OOM;
    if (st == CVENE_OK) {
        for (size_t i = 0; i < n_all; i++) h[i] = (int64_t)i * C;
        st = upload_offsets(kb.be, &kb.off_all, h, n_all);
    }
    if (st == CVENE_OK) {
        for (int b = 0; b < B; b++) h[b] = ((int64_t)b * T + T - 1) * C;
        st = upload_offsets(kb.be, &kb.off_one, h, (size_t)B);
    }
    if (st == CVENE_OK) {
        for (int b = 0; b < B; b++) h[b] = (int64_t)b * C;
        st = upload_offsets(kb.be, &kb.off_packed, h, (size_t)B);
    }
    free(h);
    static const struct {
        kcase c;
        const char *name;
    } cases[] = {
        {K_COPY, "copy (device to device, one site's bytes)"},
        {K_UNITS_ONE, "vanilla, one position per example"},
        {K_UNITS_ALL, "vanilla, every position"},
        {K_UNITS_HALF, "vanilla, every position, dims [0, C/2)"},
        {K_ROT, "rotated W (k, C), every position"},
        {K_ROT_LOWRANK, "low-rank W (C, k), every position"},
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n_cases && st == CVENE_OK; i++) {
        cvene_kernel_timing *o = &out[i];
        memset(o, 0, sizeof *o);
        snprintf(o->name, sizeof o->name, "%s", cases[i].name);
        const double f = sizeof(float);
        switch (cases[i].c) {
        case K_COPY: o->n = (int64_t)n_all, o->D = C, o->bytes = 2.0 * (double)site_n * f; break;
        case K_UNITS_ONE: o->n = B, o->D = C, o->bytes = 2.0 * B * C * f; break;
        case K_UNITS_ALL: o->n = (int64_t)n_all, o->D = C, o->bytes = 2.0 * (double)site_n * f; break;
        case K_UNITS_HALF: o->n = (int64_t)n_all, o->D = C / 2, o->bytes = 2.0 * (double)n_all * (C / 2) * f; break;
        case K_ROT:
        case K_ROT_LOWRANK:
            o->n = (int64_t)n_all, o->D = C, o->k = k, o->bytes = (3.0 * (double)site_n + (double)k * C) * f;
            break;
        }
        double t[3];
        st = time_case(&kb, cases[i].c, (size_t)(o->bytes / 2), repeat, t);
        if (st != CVENE_OK) break;
        o->seconds = t[0], o->seconds_min = t[1], o->seconds_max = t[2];
        /* the fair reference: a copy that reads and writes the same bytes, timed the same way */
        if (cases[i].c == K_COPY) o->copy_seconds = o->seconds;
        else if ((st = time_case(&kb, K_COPY, (size_t)(o->bytes / 2), repeat, t)) == CVENE_OK) o->copy_seconds = t[0];
        *n_out = i + 1;
    }
    kbench_free(&kb);
    if (st == CVENE_ERR_OOM)
        cvene_fail(ctx, st, "cvene_bench_kernels: out of memory for %d buffer sets of B x T x C = %d x %d x %d floats",
                   NBUF, B, T, C);
    return st;
}
