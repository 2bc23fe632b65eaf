/* cvene bench forward | run | kernels (bindings/cli/bench.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/bench.h"

/* ---- forward: tokens/s of one B x T forward ------------------------------------------- */

typedef struct {
    bench_env *e;
    const int32_t *ids;
    int B, T;
    cvene_run_opts o;
} fwd_job;

static int fwd_call(void *arg) {
    fwd_job *j = arg;
    if (cvene_forward(j->e->m, j->ids, j->B, j->T, &j->o) == CVENE_OK) return 0;
    fprintf(stderr, "cvene bench: %s\n", cvene_ctx_error(j->e->ctx));
    return -1;
}

/* --seq beyond the model's context, or a forward that cannot be allocated, named before timing */
static int check_seq(const bench_env *e, int T, const char *opt) {
    if (e->info.n_positions > 0 && T > e->info.n_positions) {
        fprintf(stderr, "cvene bench: %s %d is beyond the model's context (n_positions %d)\n", opt, T,
                e->info.n_positions);
        return -1;
    }
    return 0;
}

int bench_forward(bench_env *e) {
    const int B = e->a.batch ? e->a.batch : 1;
    const int T = e->a.seq ? e->a.seq : e->info.n_positions > 0 && e->info.n_positions < 128 ? e->info.n_positions
                                                                                                : 128;
    if (check_seq(e, T, "--seq")) return -1;
    const size_t V = (size_t)e->info.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    float *logits = malloc(sizeof(float) * (size_t)B * T * V);
    if (!ids || !logits) {
        fprintf(stderr, "cvene bench forward: out of memory for B x T x V = %d x %d x %zu logits (give a smaller "
                        "--batch or --seq)\n", B, T, V);
        free(ids), free(logits);
        return -1;
    }
    bench_random_ids(e, ids, (size_t)B * T, 1);
    int rc = bench_plan_memory(e, B, T);
    const int transformer = e->info.arch != CVENE_ARCH_GRU;
    void *dev_logits = NULL;
    struct {
        const char *name;
        int logits, keep, on_device;
    } cases[] = {
        {"forward, every position's logits to host", 1, 0, 0},
        {"forward, last position's logits to host", 1, 1, 0},
        {"forward, logits kept on the device", 1, 0, 1},
        {"forward, no logits", 0, 0, 0},
    };
    double tokens_s[4] = {0};
    for (int c = 0; c < 4 && rc == 0; c++) {
        if (cases[c].keep && !transformer) continue;          /* a GRU refuses logits_to_keep */
        if (cases[c].on_device && (!transformer || strcmp(e->a.device, "cuda"))) continue; /* the host is the CPU's device */
        fwd_job j = {e, ids, B, T, {0}};
        j.o.logits = cases[c].logits ? logits : NULL;
        j.o.logits_to_keep = cases[c].keep;
        if (cases[c].on_device) {
            if (cvene_device_alloc(e->ctx, sizeof(float) * (size_t)B * T * V, &dev_logits) != CVENE_OK) {
                fprintf(stderr, "cvene bench forward: %s\n", cvene_ctx_error(e->ctx));
                rc = -1;
                break;
            }
            j.o.logits = dev_logits, j.o.logits_on_device = 1;
        }
        bench_stats st;
        /* logits left on the device: the next call (or the last to_host) waits for the work */
        if ((rc = bench_time(e, cases[c].name, fwd_call, &j, e->a.warmup, e->a.repeat, &st)) != 0) break;
        bench_record(e, cases[c].name, &st, (double)B * T, "tokens/s");
        tokens_s[c] = (double)B * T / st.median;
        bench_stats_free(&st);
    }
    if (dev_logits) cvene_device_free(e->ctx, dev_logits);
    if (rc == 0) {
        cJSON_AddNumberToObject(e->derived, "batch", B);
        cJSON_AddNumberToObject(e->derived, "seq", T);
        if (tokens_s[0] > 0 && tokens_s[3] > 0)
            cJSON_AddNumberToObject(e->derived, "logits_to_host_share_pct", 100.0 * (1.0 - tokens_s[0] / tokens_s[3]));
        cJSON_AddNumberToObject(e->projection, "hours_per_billion_tokens", tokens_s[3] > 0 ? 1e9 / tokens_s[3] / 3600 : 0);
    }
    free(ids), free(logits);
    return rc;
}

/* ---- run: a pyvene config + inputs against the same forwards without interventions ---- */

/* One input of the inputs JSON ({"input_ids": [[..]], "attention_mask": .., "position_ids": ..}) as
 * plain arrays, for the forwards-without-interventions reference. */
typedef struct {
    int32_t *ids, *mask, *pos;
    int B, T;
} plain_input;

static int32_t *table(const cJSON *a, int *B, int *T) {
    if (!cJSON_IsArray(a) || !cJSON_IsArray(cJSON_GetArrayItem(a, 0))) return NULL;
    *B = cJSON_GetArraySize(a), *T = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    int32_t *out = calloc((size_t)*B * (size_t)(*T > 0 ? *T : 1), sizeof(int32_t));
    int b = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, a) {
        int t = 0;
        cJSON_ArrayForEach(v, row) if (out && t < *T) out[(size_t)b * *T + t++] = (int32_t)v->valuedouble;
        b++;
    }
    return out;
}

static void plain_free(plain_input *p) {
    free(p->ids), free(p->mask), free(p->pos);
    memset(p, 0, sizeof *p);
}

static int plain_parse(const cJSON *in, plain_input *p) {
    memset(p, 0, sizeof *p);
    int B2, T2;
    p->ids = table(cJSON_GetObjectItemCaseSensitive(in, "input_ids"), &p->B, &p->T);
    p->mask = table(cJSON_GetObjectItemCaseSensitive(in, "attention_mask"), &B2, &T2);
    p->pos = table(cJSON_GetObjectItemCaseSensitive(in, "position_ids"), &B2, &T2);
    return p->ids ? 0 : -1;
}

typedef struct {
    bench_env *e;
    cvene_config *cfg;
    cvene_request *req;
    plain_input *in;
    int n_in;
} run_job;

static int run_call(void *arg) {
    run_job *j = arg;
    cvene_result *res = NULL;
    if (cvene_run(j->e->m, j->cfg, j->req, &res) != CVENE_OK) {
        fprintf(stderr, "cvene bench run: %s\n", cvene_ctx_error(j->e->ctx));
        return -1;
    }
    cvene_result_free(res);
    return 0;
}

static int plain_call(void *arg) { /* what the request's inputs cost as plain forwards, logits kept as cvene_run keeps them */
    run_job *j = arg;
    for (int k = 0; k < j->n_in; k++) {
        cvene_run_opts o = {0};
        o.attention_mask = j->in[k].mask, o.position_ids = j->in[k].pos;
        float *logits = k == 0 ? malloc(sizeof(float) * (size_t)j->in[0].B * j->in[0].T * j->e->info.vocab_size) : NULL;
        o.logits = logits;
        cvene_status st = cvene_forward(j->e->m, j->in[k].ids, j->in[k].B, j->in[k].T, &o);
        free(logits);
        if (st != CVENE_OK) {
            fprintf(stderr, "cvene bench run: %s\n", cvene_ctx_error(j->e->ctx));
            return -1;
        }
    }
    return 0;
}

int bench_run(bench_env *e) {
    char err[1024];
    char *ij = cli_read_file(e->a.inputs, err, sizeof err);
    run_job j = {e, NULL, NULL, NULL, 0};
    int rc = -1;
    cJSON *inputs = NULL;
    if (!ij) {
        fprintf(stderr, "cvene bench run: %s\n", err);
        goto done;
    }
    if (bench_load_config(e, 1, &j.cfg)) goto done;
    if (cvene_request_parse(e->ctx, ij, &j.req) != CVENE_OK) {
        fprintf(stderr, "cvene bench run: --inputs %s: %s\n", e->a.inputs, cvene_ctx_error(e->ctx));
        goto done;
    }
    /* the request parsed, so its inputs are well-formed: the plain forwards read the same */
    inputs = cJSON_Parse(ij);
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(inputs, "sources");
    j.in = calloc((size_t)1 + (size_t)cJSON_GetArraySize(srcs), sizeof(plain_input));
    if (!j.in || plain_parse(cJSON_GetObjectItemCaseSensitive(inputs, "base"), &j.in[0])) goto done;
    j.n_in = 1;
    const cJSON *s;
    cJSON_ArrayForEach(s, srcs) if (cJSON_IsObject(s) && plain_parse(s, &j.in[j.n_in]) == 0) j.n_in++;
    if (bench_plan_memory(e, j.in[0].B, j.in[0].T)) goto done;

    /* the check run: the config must run on this model before anything is timed */
    cvene_result *res = NULL;
    if (cvene_run(e->m, j.cfg, j.req, &res) != CVENE_OK) {
        fprintf(stderr, "cvene bench run: the config cannot run on this model: %s\n", cvene_ctx_error(e->ctx));
        goto done;
    }
    const int passes = cvene_result_n_passes(res);
    cvene_result_free(res);
    bench_stats run, plain;
    if (bench_time(e, "run", run_call, &j, e->a.warmup, e->a.repeat, &run)) goto done;
    if (bench_time(e, "plain forwards", plain_call, &j, e->a.warmup, e->a.repeat, &plain)) {
        bench_stats_free(&run);
        goto done;
    }
    bench_record(e, "cvene_run (the request)", &run, 1, "requests/s");
    char name[96];
    snprintf(name, sizeof name, "the same %d input%s as plain forwards", j.n_in, j.n_in == 1 ? "" : "s");
    bench_record(e, name, &plain, 1, "requests/s");
    const int n_iv = cvene_config_count(j.cfg);
    cJSON_AddNumberToObject(e->derived, "interventions", n_iv);
    cJSON_AddNumberToObject(e->derived, "forward_passes", passes);
    cJSON_AddNumberToObject(e->derived, "overhead_us", 1e6 * (run.median - plain.median));
    cJSON_AddNumberToObject(e->derived, "overhead_pct", 100.0 * (run.median / plain.median - 1.0));
    cJSON_AddNumberToObject(e->derived, "overhead_us_per_intervention",
                            n_iv ? 1e6 * (run.median - plain.median) / n_iv : 0);
    bench_stats_free(&run), bench_stats_free(&plain);

    /* each intervention's own time: profiled runs (synchronised around every intervention) */
    double *t = calloc((size_t)(n_iv > 0 ? n_iv : 1) * (size_t)e->a.repeat, sizeof(double));
    cvene_request_set_profile(j.req, 1);
    for (int r = 0; t && r < e->a.repeat; r++) {
        bench_progress(e, "profiled run %d/%d", r + 1, e->a.repeat);
        if (cvene_run(e->m, j.cfg, j.req, &res) != CVENE_OK) {
            fprintf(stderr, "cvene bench run: %s\n", cvene_ctx_error(e->ctx));
            free(t);
            goto done;
        }
        for (int k = 0; k < n_iv; k++) t[(size_t)k * e->a.repeat + r] = cvene_result_intervention_seconds(res, k);
        cvene_result_free(res);
    }
    cJSON *per = cJSON_AddArrayToObject(e->derived, "per_intervention_us");
    double in_iv = 0; /* the interventions' own time: the rest of the overhead is the request's set-up */
    for (int k = 0; t && k < n_iv; k++) {
        bench_stats pst = {0, 0, 0, t + (size_t)k * e->a.repeat, e->a.repeat};
        if (bench_stats_summarise(&pst)) {
            free(t);
            goto done;
        }
        const cvene_representation *r = cvene_config_get(j.cfg, k);
        cJSON *o = cJSON_CreateObject();
        char where[96];
        snprintf(where, sizeof where, "%d: %s at layer %d %s", k, cvene_intervention_type_name(r->type),
                 r->layer, cvene_component_name(r->component));
        cJSON_AddStringToObject(o, "intervention", where);
        cJSON_AddNumberToObject(o, "median_us", 1e6 * pst.median);
        cJSON_AddItemToArray(per, o);
        in_iv += pst.median;
    }
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(e->derived, "overhead_us");
    cJSON_AddNumberToObject(e->derived, "overhead_us_outside_interventions", ov->valuedouble - 1e6 * in_iv);
    free(t);
    rc = 0;
done:
    for (int k = 0; j.in && k < j.n_in; k++) plain_free(&j.in[k]);
    free(j.in);
    cJSON_Delete(inputs);
    cvene_request_free(j.req);
    cvene_config_free(j.cfg);
    free(ij);
    return rc;
}

/* ---- kernels: the fused intervention kernels against a device copy ------------------- */

int bench_kernels(bench_env *e) {
    const int B = e->a.batch ? e->a.batch : 8, T = e->a.seq ? e->a.seq : 128;
    const int C = e->m ? e->info.n_embd : 4096, k = e->a.rank ? e->a.rank : 8;
    if (k > C) {
        fprintf(stderr, "cvene bench kernels: --rank %d is larger than the width C = %d\n", k, C);
        return -1;
    }
    cvene_kernel_timing kt[CVENE_BENCH_KERNELS_MAX];
    int n = 0;
    bench_progress(e, "kernels at B %d x T %d x C %d, k %d", B, T, C, k);
    if (cvene_bench_kernels(e->ctx, B, T, C, k, e->a.repeat, kt, &n) != CVENE_OK) {
        fprintf(stderr, "cvene bench kernels: %s\n", cvene_ctx_error(e->ctx));
        return -1;
    }
    cJSON_AddNumberToObject(e->derived, "B", B);
    cJSON_AddNumberToObject(e->derived, "T", T);
    cJSON_AddNumberToObject(e->derived, "C", C);
    cJSON_AddNumberToObject(e->derived, "k", k);
    for (int i = 0; i < n; i++) {
        bench_stats st = {kt[i].seconds, kt[i].seconds_min, kt[i].seconds_max, NULL, 0};
        cJSON *m = bench_record(e, kt[i].name, &st, kt[i].bytes / 1e9, "GB/s");
        cJSON_AddNumberToObject(m, "bytes", kt[i].bytes);
        cJSON_AddNumberToObject(m, "copy_seconds", kt[i].copy_seconds);
        const double pct = kt[i].seconds > 0 ? 100.0 * kt[i].copy_seconds / kt[i].seconds : 0;
        cJSON_AddNumberToObject(m, "pct_of_copy", pct);
    }
    return 0;
}
