/* Intervention-run timing of the native engine.
 *
 *   cvene_bench_interventions MODEL_DIR CONFIG.json INPUTS.json [iters=5] [threads=0] [DUMP.f32]
 *     Parses the config (pyvene IntervenableConfig JSON) and the request (the
 *     `cvene run --inputs` JSON) once, runs cvene_run once as a warm-up, then
 *     `iters` timed times (cvene_run only: parsing and cvene_result_free are
 *     outside the timed region). Prints one JSON line:
 *       {"iters":..,"ms_median":..,"ms_min":..,"ms_max":..,"passes":..,"B":..,"T":..,"V":..,
 *        "collected":[[shape],..],"ms_all":[every timed call, sorted]}
 *     With DUMP, the last result is written there as raw little-endian f32: the
 *     logits (B, T, V), then each collected tensor in order.
 *
 *   cvene_bench_interventions --overhead MODEL_DIR B T [iters=7] [threads=0]
 *     Cost of an intervention over the forward it rides on. The request is a
 *     single-position Vanilla interchange at block_output of the middle layer
 *     (n_layer / 2), one source of the base's length (so the plan is one
 *     batched pass over source + base rows), random ids and positions (fixed
 *     seed). Config and request are built once, outside the timed loop;
 *     cvene_result_free is outside the timed region. Each iteration times, in
 *     rotating order, three calls on the same (2B, T) batch (source rows, then
 *     base rows):
 *       full:    plain cvene_forward with logits for all 2B rows;
 *       forward: plain cvene_forward with logits for the base rows only
 *                (logits_row0 = B), the forward cvene_run's plan runs;
 *       run:     cvene_run.
 *     Both forwards write into buffers reused across iterations. Prints one
 *     JSON line with the medians, overhead_pct = run / (passes * forward) - 1,
 *     overhead_us = run - passes * forward, vs_full_pct = run / full - 1, and
 *     the mean minor page faults per call (first touches of fresh memory), and
 *     fresh_result_extra_ms: malloc + first write of a fresh (B, T, V) f32
 *     buffer (the result buffer cvene_run allocates per call) minus the same
 *     writes into a reused buffer.
 *
 * Used by bench/bench_interventions.py, which runs pyvene beside it. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cvene.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* minor page faults of this process so far (first touches of fresh memory) */
static long minor_faults(void) {
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) == 0 ? u.ru_minflt : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median of n values (sorts v) */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return NULL;
    }
    char *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1))) {
        if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        } else {
            buf[len] = 0;
        }
    }
    fclose(f);
    if (!buf) fprintf(stderr, "%s: cannot read\n", path);
    return buf;
}

static int parse_count(const char *s, const char *what, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > 1000000) {
        fprintf(stderr, "%s must be an integer >= %d, got \"%s\"\n", what, lo, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int open_model(const char *dir, int threads, cvene_ctx **ctx, cvene_model **m) {
    cvene_ctx_params cp = cvene_ctx_default_params();
    cp.n_threads = threads;
    char err[512];
    *m = NULL;
    if (cvene_ctx_new(&cp, ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "%s\n", err);
        return 0;
    }
    if (cvene_model_load(*ctx, dir, m) != CVENE_OK) {
        fprintf(stderr, "%s: %s\n", dir, cvene_ctx_error(*ctx));
        return 0;
    }
    return 1;
}

/* ---- run mode ----------------------------------------------------------- */

static int bench_run(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR CONFIG.json INPUTS.json [iters=5] [threads=0] [DUMP.f32]\n"
                        "       %s --overhead MODEL_DIR B T [iters=7] [threads=0]\n",
                argv[0], argv[0]);
        return 2;
    }
    int iters = 5, threads = 0;
    if (argc > 4 && !parse_count(argv[4], "iters", 1, &iters)) return 2;
    if (argc > 5 && !parse_count(argv[5], "threads", 0, &threads)) return 2;
    const char *dump = argc > 6 ? argv[6] : NULL;
    char *cfg_json = read_file(argv[2]), *in_json = cfg_json ? read_file(argv[3]) : NULL;
    if (!cfg_json || !in_json) {
        free(cfg_json);
        return 1;
    }
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_config *cfg = NULL;
    cvene_request *req = NULL;
    cvene_result *res = NULL;
    double *t = malloc(sizeof(double) * (size_t)iters);
    int rc = 1;
    if (!t || !open_model(argv[1], threads, &ctx, &m)) goto done;
    if (cvene_config_parse(ctx, cfg_json, &cfg) != CVENE_OK) {
        fprintf(stderr, "%s: %s\n", argv[2], cvene_ctx_error(ctx));
        goto done;
    }
    if (cvene_request_parse(ctx, in_json, &req) != CVENE_OK) {
        fprintf(stderr, "%s: %s\n", argv[3], cvene_ctx_error(ctx));
        goto done;
    }
    for (int it = -1; it < iters; it++) { /* it = -1: warm-up */
        cvene_result_free(res);
        res = NULL;
        double t0 = now_s();
        cvene_status st = cvene_run(m, cfg, req, &res);
        double dt = now_s() - t0;
        if (st != CVENE_OK) {
            fprintf(stderr, "cvene_run: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
        if (it >= 0) t[it] = dt;
    }
    int B, T, V;
    const float *logits = cvene_result_logits(res, &B, &T, &V);
    if (dump) {
        FILE *f = fopen(dump, "wb");
        int ok = f && fwrite(logits, sizeof(float), (size_t)B * T * V, f) == (size_t)B * T * V;
        for (int k = 0; ok && k < cvene_result_n_collected(res); k++) {
            cvene_tensor_view v = cvene_result_collected(res, k);
            size_t n = 1;
            for (int d = 0; d < v.ndim; d++) n *= (size_t)v.shape[d];
            ok = fwrite(v.data, sizeof(float), n, f) == n;
        }
        if (f && fclose(f) != 0) ok = 0;
        if (!ok) {
            fprintf(stderr, "%s: cannot write\n", dump);
            goto done;
        }
    }
    double lo = t[0], hi = t[0];
    for (int i = 0; i < iters; i++) lo = t[i] < lo ? t[i] : lo, hi = t[i] > hi ? t[i] : hi;
    printf("{\"iters\": %d, \"ms_median\": %.4f, \"ms_min\": %.4f, \"ms_max\": %.4f, \"passes\": %d, "
           "\"B\": %d, \"T\": %d, \"V\": %d, \"collected\": [",
           iters, 1e3 * median(t, iters), 1e3 * lo, 1e3 * hi, cvene_result_n_passes(res), B, T, V);
    for (int k = 0; k < cvene_result_n_collected(res); k++) {
        cvene_tensor_view v = cvene_result_collected(res, k);
        printf("%s[", k ? ", " : "");
        for (int d = 0; d < v.ndim; d++) printf("%s%lld", d ? ", " : "", (long long)v.shape[d]);
        printf("]");
    }
    printf("], \"ms_all\": [");
    for (int i = 0; i < iters; i++) printf("%s%.4f", i ? ", " : "", 1e3 * t[i]); /* sorted */
    printf("]}\n");
    rc = 0;
done:
    cvene_result_free(res);
    cvene_request_free(req);
    cvene_config_free(cfg);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    free(t), free(cfg_json), free(in_json);
    return rc;
}

/* ---- overhead mode ------------------------------------------------------ */

/* "[[[p0]], [[p1]], ...]" for one intervention: B rows of one position */
static int locs_json(char *out, size_t cap, const int *pos, int B) {
    size_t k = 0;
    int n = snprintf(out, cap, "[[");
    if (n < 0 || (size_t)n >= cap) return 0;
    k += (size_t)n;
    for (int b = 0; b < B; b++) {
        n = snprintf(out + k, cap - k, "%s[%d]", b ? ", " : "", pos[b]);
        if (n < 0 || (size_t)n >= cap - k) return 0;
        k += (size_t)n;
    }
    n = snprintf(out + k, cap - k, "]]");
    return n >= 0 && (size_t)n < cap - k;
}

static int bench_overhead(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s --overhead MODEL_DIR B T [iters=7] [threads=0]\n", argv[0]);
        return 2;
    }
    int B, T, iters = 7, threads = 0;
    if (!parse_count(argv[3], "B", 1, &B) || !parse_count(argv[4], "T", 1, &T)) return 2;
    if (argc > 5 && !parse_count(argv[5], "iters", 1, &iters)) return 2;
    if (argc > 6 && !parse_count(argv[6], "threads", 0, &threads)) return 2;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_config *cfg = NULL;
    cvene_request *req = NULL;
    cvene_result *res = NULL;
    int rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * 2 * (size_t)B * T);
    int *sp = malloc(sizeof(int) * (size_t)B), *bp = malloc(sizeof(int) * (size_t)B);
    double *tu = malloc(sizeof(double) * (size_t)iters), *tf = malloc(sizeof(double) * (size_t)iters);
    double *tr = malloc(sizeof(double) * (size_t)iters), *tz = malloc(sizeof(double) * (size_t)iters);
    double *tw = malloc(sizeof(double) * (size_t)iters);
    size_t loc_cap = 64 + 24 * (size_t)B;
    char *ls = malloc(loc_cap), *lb = malloc(loc_cap), *ul = malloc(2 * loc_cap + 64);
    float *logits = NULL;
    if (!ids || !sp || !bp || !tu || !tf || !tr || !tz || !tw || !ls || !lb || !ul) goto oom;
    if (!open_model(argv[2], threads, &ctx, &m)) goto done;
    cvene_model_info info = cvene_model_get_info(m);
    if (T > info.n_positions) {
        fprintf(stderr, "T = %d exceeds the model's n_positions = %d\n", T, info.n_positions);
        goto done;
    }
    int layer = info.n_layer / 2;
    if (!(logits = malloc(sizeof(float) * 2 * (size_t)B * T * info.vocab_size))) goto oom;
    /* rows 0..B-1: the source, B..2B-1: the base (the single-pass plan's order) */
    srand(1234);
    for (size_t i = 0; i < 2 * (size_t)B * T; i++) ids[i] = rand() % info.vocab_size;
    for (int b = 0; b < B; b++) sp[b] = rand() % T, bp[b] = rand() % T;
    char cfg_json[256];
    snprintf(cfg_json, sizeof cfg_json,
             "{\"mode\": \"parallel\", \"representations\": [{\"layer\": %d, \"component\": \"block_output\", "
             "\"unit\": \"pos\", \"max_number_of_units\": 1, \"intervention_type\": \"VanillaIntervention\"}]}",
             layer);
    if (!locs_json(ls, loc_cap, sp, B) || !locs_json(lb, loc_cap, bp, B)) goto oom;
    snprintf(ul, 2 * loc_cap + 64, "{\"sources->base\": [%s, %s]}", ls, lb);
    cvene_input src = {ids, NULL, B, T, NULL}, base = {ids + (size_t)B * T, NULL, B, T, NULL};
    if (cvene_config_parse(ctx, cfg_json, &cfg) != CVENE_OK || cvene_request_new(ctx, &req) != CVENE_OK ||
        cvene_request_set_base(req, &base) != CVENE_OK || cvene_request_set_source(req, 0, &src) != CVENE_OK ||
        cvene_request_set_unit_locations(req, ul) != CVENE_OK) {
        fprintf(stderr, "building the request: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    cvene_run_opts o_full, o_base;
    memset(&o_full, 0, sizeof o_full);
    o_full.logits = logits;
    o_base = o_full;
    o_base.logits_row0 = B;
    int passes = 0;
    long flt[3] = {0, 0, 0}; /* page faults over the timed iterations: full, forward, run */
    int warm = iters >= 100 ? 20 : 1;
    for (int it = -warm; it < iters; it++) {
        double dt[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) {
            int which = (k + (it < 0 ? 0 : it)) % 3; /* rotate which goes first */
            cvene_result_free(res);
            res = NULL;
            long f0 = minor_faults();
            double t0 = now_s();
            cvene_status st = which == 2 ? cvene_run(m, cfg, req, &res)
                                         : cvene_forward(m, ids, 2 * B, T, which == 0 ? &o_full : &o_base);
            double t1 = now_s();
            if (it >= 0) flt[which] += minor_faults() - f0;
            if (st != CVENE_OK) {
                fprintf(stderr, "%s: %s\n", which == 2 ? "cvene_run" : "cvene_forward", cvene_ctx_error(ctx));
                goto done;
            }
            if (which == 2) passes = cvene_result_n_passes(res);
            dt[which] = t1 - t0;
        }
        if (it >= 0) tu[it] = dt[0], tf[it] = dt[1], tr[it] = dt[2];
    }
    /* What fresh memory costs cvene_run: its (B, T, V) result buffer is malloc'd per call
     * and first touched by the lm_head. Time malloc + first touch of such a buffer, minus
     * the same writes into a reused buffer (free untimed, as cvene_result_free above). */
    size_t res_bytes = sizeof(float) * (size_t)B * T * info.vocab_size;
    volatile char sink = 0;
    for (int it = 0; it < iters; it++) {
        double t0 = now_s();
        char *p = malloc(res_bytes);
        if (!p) goto oom;
        memset(p, 1, res_bytes); /* not 0: malloc + memset 0 may become calloc */
        tz[it] = now_s() - t0;
        sink = p[res_bytes / 2]; /* keep the buffer alive */
        free(p);
        t0 = now_s();
        memset(logits, 1, res_bytes); /* the reused buffer holds 2B rows */
        tw[it] = now_s() - t0;
        sink = ((char *)logits)[res_bytes / 2];
    }
    double fresh = median(tz, iters) - median(tw, iters);
    /* sorted by median(): [0] is the min */
    double u = median(tu, iters), f = median(tf, iters), r = median(tr, iters);
    (void)sink;
    printf("{\"mode\": \"overhead\", \"model\": \"%s\", \"B\": %d, \"T\": %d, \"layer\": %d, \"iters\": %d, "
           "\"passes\": %d, \"full_ms_median\": %.5f, \"forward_ms_median\": %.5f, \"run_ms_median\": %.5f, "
           "\"forward_ms_min\": %.5f, \"run_ms_min\": %.5f, \"overhead_pct\": %.3f, \"overhead_us\": %.2f, "
           "\"vs_full_pct\": %.3f, \"full_page_faults\": %.1f, \"forward_page_faults\": %.1f, "
           "\"run_page_faults\": %.1f, \"fresh_result_extra_ms\": %.5f}\n",
           argv[2], B, T, layer, iters, passes, 1e3 * u, 1e3 * f, 1e3 * r, 1e3 * tf[0], 1e3 * tr[0],
           100.0 * (r / (passes * f) - 1.0), 1e6 * (r - passes * f), 100.0 * (r / u - 1.0),
           (double)flt[0] / iters, (double)flt[1] / iters, (double)flt[2] / iters, 1e3 * fresh);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "out of memory\n");
done:
    cvene_result_free(res);
    cvene_request_free(req);
    cvene_config_free(cfg);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    free(ids), free(sp), free(bp), free(tu), free(tf), free(tr), free(tz), free(tw);
    free(ls), free(lb), free(ul), free(logits);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--overhead")) return bench_overhead(argc, argv);
    return bench_run(argc, argv);
}
