/* Forward-pass throughput of the native engine on one model directory.
 *   cvene_bench_forward DIR B T [iters] [threads] [cpu|cuda] [--ids FILE] [--logits-out FILE]
 *                       [--keep N] [--dtype f32|bf16|f16|bf16-gemm|f16-gemm] [--logits-on-device]
 * Token ids: random (fixed seed), or --ids FILE: B*T raw little-endian int32 (what
 * bench/bench_gpu_forward.py writes, so both libraries see the same batch). One warm-up
 * pass, then `iters` timed passes, each with full (B, T, V) f32 logits copied to a host
 * buffer. On CUDA the logits copy waits for the device (the backend's to_host synchronizes
 * its stream), so each pass is timed to the end of its GPU work, copy included.
 * --logits-out FILE writes the last pass's logits (raw f32, B*T*V) for a parity check.
 * --keep N asks for the last N positions' logits only (cvene_run_opts.logits_to_keep):
 * (B, N, V) cross to the host, and the last block runs only those positions.
 * --dtype bf16 / f16: compute_dtype and activation_dtype = that dtype (the model as
 * transformers runs it after .to(dtype): 16-bit weights and activations, f32 accumulation;
 * the dtype logits are widened to f32). bf16-gemm / f16-gemm: compute_dtype only (16-bit GEMM
 * weights, f32 activations). Default f32.
 * --logits-on-device: the logits stay in device memory (cvene_run_opts.logits_on_device); each pass
 * is timed to the end of its GPU work by reading one float back (cvene_device_to_host waits for the
 * stream), so only 4 bytes cross: the comparison with transformers keeping its logits on the GPU.
 * Prints one JSON line: {"device":..,"B":..,"T":..,"ms_mean":..,"ms_median":..,"tok_s":..}.
 * Used by bench/bench_cpu_forward.py and bench/bench_gpu_forward.py. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cvene.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reads exactly n bytes of path into dst; 0 on success. */
static int read_exact(const char *path, void *dst, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    size_t got = fread(dst, 1, n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) {
        fprintf(stderr, "%s: expected exactly %zu bytes (B*T int32)\n", path, n);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *ids_path = NULL, *logits_path = NULL, *dtype = "f32";
    const char *pos[6] = {0};
    int npos = 0, keep = 0, on_device = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ids") && i + 1 < argc) ids_path = argv[++i];
        else if (!strcmp(argv[i], "--logits-out") && i + 1 < argc) logits_path = argv[++i];
        else if (!strcmp(argv[i], "--logits-on-device")) on_device = 1;
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dtype = argv[++i];
        else if (npos < 6) pos[npos++] = argv[i];
        else npos = 7;
    }
    if (npos < 3 || npos > 6) {
        fprintf(stderr, "usage: %s MODEL_DIR B T [iters=10] [threads=0] [cpu|cuda] [--ids FILE] "
                        "[--logits-out FILE] [--keep N] [--dtype f32|bf16|f16|bf16-gemm|f16-gemm]\n", argv[0]);
        return 2;
    }
    int B = atoi(pos[1]), T = atoi(pos[2]);
    int iters = npos > 3 ? atoi(pos[3]) : 10, threads = npos > 4 ? atoi(pos[4]) : 0;
    if (B <= 0 || T <= 0 || iters <= 0 || keep < 0 || keep > T) {
        fprintf(stderr, "B, T and iters must be positive, --keep in [0, T]\n");
        return 2;
    }
    cvene_ctx_params cp = cvene_ctx_default_params();
    cp.n_threads = threads;
    if (!strcmp(dtype, "bf16")) cp.compute_dtype = cp.activation_dtype = CVENE_BF16;
    else if (!strcmp(dtype, "f16")) cp.compute_dtype = cp.activation_dtype = CVENE_F16;
    else if (!strcmp(dtype, "bf16-gemm")) cp.compute_dtype = CVENE_BF16;
    else if (!strcmp(dtype, "f16-gemm")) cp.compute_dtype = CVENE_F16;
    else if (strcmp(dtype, "f32")) {
        fprintf(stderr, "--dtype must be f32, bf16, f16, bf16-gemm or f16-gemm, got '%s'\n", dtype);
        return 2;
    }
    if (npos > 5 && !strcmp(pos[5], "cuda")) cp.device = CVENE_DEVICE_CUDA;
    else if (npos > 5 && strcmp(pos[5], "cpu")) {
        fprintf(stderr, "device must be cpu or cuda, got '%s'\n", pos[5]);
        return 2;
    }
    char err[512];
    cvene_ctx *ctx;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    cvene_model *m;
    if (cvene_model_load(ctx, pos[0], &m) != CVENE_OK) {
        fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
        cvene_ctx_free(ctx);
        return 1;
    }
    cvene_model_info info = cvene_model_get_info(m);
    const size_t n_logits = (size_t)B * (keep ? keep : T) * info.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    float *logits = malloc(sizeof(float) * n_logits);
    double *times = malloc(sizeof(double) * (size_t)iters);
    int rc = 0;
    if (!ids || !logits || !times) {
        fprintf(stderr, "out of host memory\n");
        rc = 1;
    } else if (ids_path) {
        rc = read_exact(ids_path, ids, sizeof(int32_t) * (size_t)B * T);
    } else {
        srand(1234);
        for (int i = 0; i < B * T; i++) ids[i] = rand() % info.vocab_size;
    }
    cvene_run_opts o = {0};
    o.logits = logits;
    o.logits_to_keep = keep;
    void *dev = NULL;
    if (rc == 0 && on_device) {
        if (cvene_device_alloc(ctx, sizeof(float) * n_logits, &dev) != CVENE_OK) {
            fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
            rc = 1;
        }
        o.logits = dev;
        o.logits_on_device = 1;
    }
    double total = 0.0;
    for (int it = -1; it < iters && rc == 0; it++) {
        double t0 = now_s();
        if (cvene_forward(m, ids, B, T, &o) != CVENE_OK ||
            (dev && cvene_device_to_host(ctx, logits, dev, sizeof(float)) != CVENE_OK)) { /* waits for the device */
            fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
            rc = 1;
        }
        double dt = now_s() - t0;
        if (it >= 0) {
            times[it] = dt;
            total += dt;
        }
    }
    if (rc == 0 && dev && cvene_device_to_host(ctx, logits, dev, sizeof(float) * n_logits) != CVENE_OK) {
        fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
        rc = 1;
    }
    cvene_device_free(ctx, dev);
    if (rc == 0 && logits_path) {
        FILE *f = fopen(logits_path, "wb");
        if (!f || fwrite(logits, sizeof(float), n_logits, f) != n_logits) {
            fprintf(stderr, "cannot write %s\n", logits_path);
            rc = 1;
        }
        if (f && fclose(f) != 0) rc = 1;
    }
    if (rc == 0) {
        qsort(times, (size_t)iters, sizeof(double), cmp_double);
        double median = iters % 2 ? times[iters / 2] : 0.5 * (times[iters / 2 - 1] + times[iters / 2]);
        printf("{\"device\": \"%s\", \"B\": %d, \"T\": %d, \"iters\": %d, \"ms_mean\": %.3f, \"ms_median\": %.3f, "
               "\"ms_best\": %.3f, \"tok_s\": %.1f, \"logits_to_keep\": %d, \"dtype\": \"%s\", \"logits_on_device\": %d}\n",
               cp.device == CVENE_DEVICE_CUDA ? "cuda" : "cpu", B, T, iters, 1e3 * total / iters, 1e3 * median,
               1e3 * times[0], (double)B * T * iters / total, keep, dtype, on_device);
    }
    free(ids);
    free(logits);
    free(times);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    return rc;
}
