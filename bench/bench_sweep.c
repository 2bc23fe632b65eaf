/* Timing of one full activation-patching sweep with the native engine.
 *   cvene_bench_sweep DIR IDS_JSON OUT_JSON [reps_fast=3] [reps_naive=1] [threads=0] [naive_layers=all]
 *                     [breakdown=0] [device=cpu] [dtype=f32]
 * device: cpu or cuda (the model and the whole sweep on the GPU; exit status 3 when no
 * CUDA device is visible). To name a device with every naive layer, give naive_layers as "".
 * dtype: f32, bf16 or f16 (bf16 / f16: compute_dtype = activation_dtype, the model with 16-bit
 * weights and activations, as `cvene sweep --dtype`).
 * IDS_JSON: {"base": [T ids], "source": [T ids], "token": id, "token_b": id}.
 * Sweeps block_output over all layers x all positions with the logit-difference
 * metric (logit[token] - logit[token_b] at the last position), once with the
 * fast path (naive = 0) and once with one full forward per site (naive = 1).
 * naive_layers (e.g. "0,6,11") restricts the naive sweep to those layers (all
 * positions): its cost per site is the same everywhere, so a subset can be
 * extrapolated when the full naive sweep would take too long. breakdown = 1
 * adds one more fast sweep through the session API (cvene_sweep_begin, then
 * cvene_sweep_layer per layer), timing the source + base runs and each layer.
 * Model loading is outside the timed region; each timed region is one whole
 * cvene_sweep call (its source and base runs included). Untimed warm-ups
 * first: one plain forward, and a fast sweep of one layer (the packed forward's
 * buffers at full size). Writes OUT_JSON: the seconds of every repetition and the
 * scores (n_layer x T, row-major) of the last repetition of each path. Used by
 * bench/bench_sweep.py, which runs pyvene beside it. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cvene.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

static int read_ids(const cJSON *root, const char *key, int32_t **out) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(a)) return -1;
    int n = cJSON_GetArraySize(a);
    *out = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!*out) return -1;
    for (int i = 0; i < n; i++) (*out)[i] = (int32_t)cJSON_GetArrayItem(a, i)->valueint;
    return n;
}

static void put_scores(FILE *f, const char *key, const float *s, int n) {
    fprintf(f, "\"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.9g", i ? ", " : "", (double)s[i]);
    fprintf(f, "]");
}

static void put_times(FILE *f, const char *key, const double *t, int n) {
    fprintf(f, "\"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.6f", i ? ", " : "", t[i]);
    fprintf(f, "]");
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_JSON OUT_JSON [reps_fast=3] [reps_naive=1] [threads=0] "
                "[naive_layers=all] [breakdown=0] [device=cpu|cuda] [dtype=f32|bf16|f16]\n", argv[0]);
        return 2;
    }
    int reps_fast = argc > 4 ? atoi(argv[4]) : 3, reps_naive = argc > 5 ? atoi(argv[5]) : 1;
    int threads = argc > 6 ? atoi(argv[6]) : 0;
    if (reps_fast < 0 || reps_naive < 0 || reps_fast > 100 || reps_naive > 100) {
        fprintf(stderr, "repetitions must be in [0, 100]\n");
        return 2;
    }
    char *txt = slurp(argv[2]);
    cJSON *root = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    int32_t *base = NULL, *src = NULL;
    int T = root ? read_ids(root, "base", &base) : -1;
    int Ts = root ? read_ids(root, "source", &src) : -1;
    const cJSON *tok = root ? cJSON_GetObjectItemCaseSensitive(root, "token") : NULL;
    const cJSON *tok_b = root ? cJSON_GetObjectItemCaseSensitive(root, "token_b") : NULL;
    if (T <= 0 || T != Ts || !cJSON_IsNumber(tok) || !cJSON_IsNumber(tok_b)) {
        fprintf(stderr, "%s: needs base and source id lists of one length, token and token_b\n", argv[2]);
        return 2;
    }
    const char *device = argc > 9 ? argv[9] : "cpu";
    if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "device must be cpu or cuda, not %s\n", device);
        return 2;
    }
    const char *dtype = argc > 10 ? argv[10] : "f32";
    cvene_ctx_params cp = cvene_ctx_default_params();
    cp.n_threads = threads;
    if (!strcmp(dtype, "bf16")) cp.compute_dtype = cp.activation_dtype = CVENE_BF16;
    else if (!strcmp(dtype, "f16")) cp.compute_dtype = cp.activation_dtype = CVENE_F16;
    else if (strcmp(dtype, "f32")) {
        fprintf(stderr, "dtype must be f32, bf16 or f16, not %s\n", dtype);
        return 2;
    }
    if (!strcmp(device, "cuda")) {
        if (!cvene_cuda_available()) {
            fprintf(stderr, "no CUDA device (or a build without the CUDA backend)\n");
            return 3;
        }
        cp.device = CVENE_DEVICE_CUDA;
    }
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
    const int L = info.n_layer, n = L * T;
    int nl_naive = 0, naive_layers[64];
    for (const char *c = argc > 7 ? argv[7] : ""; *c && nl_naive < 64;) {
        char *end;
        long v = strtol(c, &end, 10);
        if (end == c || v < 0 || v >= L) {
            fprintf(stderr, "naive_layers: expected a comma-separated list of layers in [0, %d)\n", L);
            return 2;
        }
        naive_layers[nl_naive++] = (int)v;
        c = *end == ',' ? end + 1 : end;
    }
    float *fast = calloc((size_t)n, sizeof(float)), *naive = calloc((size_t)n, sizeof(float));
    double t_fast[100], t_naive[100];
    cvene_sweep_summary sum_fast = {0}, sum_naive = {0};
    int rc = fast && naive ? 0 : 1;

    /* warm-up: one plain forward (page in the weights, spin up the thread pool) */
    cvene_run_opts o = {0};
    if (rc == 0 && cvene_forward(m, base, 1, T, &o) != CVENE_OK) rc = 1;

    cvene_sweep_params p = cvene_sweep_default_params();
    p.component = CVENE_BLOCK_OUTPUT;
    p.metric = CVENE_METRIC_LOGIT_DIFF;
    p.token = (int32_t)tok->valueint;
    p.token_b = (int32_t)tok_b->valueint;
    /* warm-up of the fast path's packed (T rows x T positions) forward: one layer */
    int warm_layer = L >= 2 ? L - 2 : 0;
    p.layers = &warm_layer, p.n_layers = 1;
    if (rc == 0 && reps_fast && cvene_sweep(m, base, src, T, &p, fast, NULL) != CVENE_OK) rc = 1;
    p.layers = NULL, p.n_layers = 0;
    for (int r = 0; r < reps_fast && rc == 0; r++) {
        p.naive = 0;
        double t0 = now_s();
        if (cvene_sweep(m, base, src, T, &p, fast, &sum_fast) != CVENE_OK) rc = 1;
        t_fast[r] = now_s() - t0;
        fprintf(stderr, "fast  rep %d: %.3f s (%lld forwards)\n", r, t_fast[r], (long long)sum_fast.forwards);
    }
    for (int r = 0; r < reps_naive && rc == 0; r++) {
        p.naive = 1;
        p.layers = nl_naive ? naive_layers : NULL;
        p.n_layers = nl_naive;
        double t0 = now_s();
        if (cvene_sweep(m, base, src, T, &p, naive, &sum_naive) != CVENE_OK) rc = 1;
        t_naive[r] = now_s() - t0;
        fprintf(stderr, "naive rep %d: %.3f s (%lld forwards)\n", r, t_naive[r], (long long)sum_naive.forwards);
    }
    double t_begin = 0, t_layer[64];
    int breakdown = argc > 8 && atoi(argv[8]) != 0 && L <= 64;
    if (rc == 0 && breakdown) {
        p.naive = 0;
        p.layers = NULL, p.n_layers = 0;
        cvene_sweep_session *ss = NULL;
        double t0 = now_s();
        if (cvene_sweep_begin(m, base, src, T, &p, &ss) != CVENE_OK) rc = 1;
        t_begin = now_s() - t0;
        for (int l = 0; l < L && rc == 0; l++) {
            t0 = now_s();
            if (cvene_sweep_layer(ss, l, fast + (size_t)l * T) != CVENE_OK) rc = 1;
            t_layer[l] = now_s() - t0;
        }
        cvene_sweep_end(ss);
    }
    if (rc) fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
    FILE *f = rc == 0 ? fopen(argv[3], "w") : NULL;
    if (rc == 0 && !f) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        rc = 1;
    }
    if (f) {
        fprintf(f, "{\"device\": \"%s\", \"dtype\": \"%s\", \"n_layer\": %d, \"T\": %d, \"n_threads\": %d, ", device,
                dtype, L, T, threads);
        fprintf(f, "\"base_score\": %.9g, \"source_score\": %.9g, ", sum_fast.base_score, sum_fast.source_score);
        fprintf(f, "\"forwards_fast\": %lld, \"forwards_naive\": %lld, ", (long long)sum_fast.forwards,
                (long long)sum_naive.forwards);
        put_times(f, "seconds_fast", t_fast, reps_fast);
        fprintf(f, ", ");
        put_times(f, "seconds_naive", t_naive, reps_naive);
        fprintf(f, ", ");
        put_scores(f, "scores_fast", fast, reps_fast ? n : 0);
        fprintf(f, ", ");
        put_scores(f, "scores_naive", naive, reps_naive ? (nl_naive ? nl_naive : L) * T : 0);
        fprintf(f, ", \"naive_layers\": [");
        for (int i = 0; i < (nl_naive ? nl_naive : L); i++) fprintf(f, "%s%d", i ? ", " : "", nl_naive ? naive_layers[i] : i);
        fprintf(f, "]");
        if (breakdown) {
            fprintf(f, ", \"seconds_begin\": %.6f, ", t_begin);
            put_times(f, "seconds_per_layer", t_layer, L);
        }
        fprintf(f, "}\n");
        fclose(f);
    }
    free(fast);
    free(naive);
    free(base);
    free(src);
    cJSON_Delete(root);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    return rc;
}
