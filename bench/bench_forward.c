/* Forward-pass throughput of the native engine on one model directory.
 *   cvene_bench_forward DIR B T [iters] [threads] [cpu|cuda]
 * Random token ids (fixed seed), one warm-up pass, then `iters` timed passes
 * with full logits. Prints one JSON line: {"B":..,"T":..,"ms":..,"tok_s":..}.
 * Used by bench/bench_cpu_forward.py, which runs transformers beside it. */
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

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR B T [iters=10] [threads=0] [cpu|cuda]\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[2]), T = atoi(argv[3]);
    int iters = argc > 4 ? atoi(argv[4]) : 10, threads = argc > 5 ? atoi(argv[5]) : 0;
    if (B <= 0 || T <= 0 || iters <= 0) {
        fprintf(stderr, "B, T and iters must be positive\n");
        return 2;
    }
    cvene_ctx_params cp = cvene_ctx_default_params();
    cp.n_threads = threads;
    if (argc > 6 && !strcmp(argv[6], "cuda")) cp.device = CVENE_DEVICE_CUDA;
    char err[512];
    cvene_ctx *ctx;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    cvene_model *m;
    if (cvene_model_load(ctx, argv[1], &m) != CVENE_OK) {
        fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
        cvene_ctx_free(ctx);
        return 1;
    }
    cvene_model_info info = cvene_model_get_info(m);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    float *logits = malloc(sizeof(float) * (size_t)B * T * info.vocab_size);
    if (!ids || !logits) return 1;
    srand(1234);
    for (int i = 0; i < B * T; i++) ids[i] = rand() % info.vocab_size;
    cvene_run_opts o = {0};
    o.logits = logits;
    int rc = 0;
    double best = 1e30, total = 0.0;
    for (int it = -1; it < iters && rc == 0; it++) {
        double t0 = now_s();
        if (cvene_forward(m, ids, B, T, &o) != CVENE_OK) {
            fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
            rc = 1;
        }
        double dt = now_s() - t0;
        if (it >= 0) {
            total += dt;
            if (dt < best) best = dt;
        }
    }
    if (rc == 0)
        printf("{\"B\": %d, \"T\": %d, \"iters\": %d, \"ms_mean\": %.3f, \"ms_best\": %.3f, "
               "\"tok_s\": %.1f}\n",
               B, T, iters, 1e3 * total / iters, 1e3 * best, (double)B * T * iters / total);
    free(ids);
    free(logits);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    return rc;
}
