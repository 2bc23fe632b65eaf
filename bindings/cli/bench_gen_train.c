/* cvene bench generate | train (bindings/cli/bench.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/bench.h"

/* ---- generate: tokens/s of greedy decoding, with and without a config -------------------- */

typedef struct {
    bench_env *e;
    const cvene_config *cfg; /* NULL: no interventions */
    const cvene_request *req;
    cvene_gen_params p;
} gen_job;

static int gen_call(void *arg) {
    gen_job *j = arg;
    cvene_generation *g = NULL;
    if (cvene_generate(j->e->m, j->cfg, j->req, &j->p, &g) != CVENE_OK) {
        fprintf(stderr, "cvene bench generate: %s\n", cvene_ctx_error(j->e->ctx));
        return -1;
    }
    cvene_generation_free(g);
    return 0;
}

int bench_generate(bench_env *e) {
    if (e->info.arch == CVENE_ARCH_GRU) {
        fprintf(stderr, "cvene bench generate: decoding runs GPT-2 and GPT-NeoX models; this model is a GRU\n");
        return -1;
    }
    const int B = e->a.batch ? e->a.batch : 1;
    int N = e->a.max_new_tokens;
    int32_t *one = NULL, *ids = NULL;
    int T = 0, rc = -1;
    cli_text tx = {e->ctx, e->a.model, NULL, 0};
    cvene_config *cfg = NULL;
    cvene_request *req = NULL;
    if (e->a.prompt) {
        if (cli_text_encode(&tx, e->a.prompt, &one, &T) != 0) goto done;
    } else if (e->a.ids) {
        const int max = (int)strlen(e->a.ids) / 2 + 1;
        if (!(one = malloc(sizeof(int32_t) * (size_t)max))) goto done;
        if ((T = bench_parse_ints("generate", "--ids", e->a.ids, 0, e->info.n_token_ids - 1, one, max)) < 0) goto done;
    } else {
        T = e->info.n_positions >= 32 ? 16 : e->info.n_positions / 2 > 0 ? e->info.n_positions / 2 : 1;
        if (!(one = malloc(sizeof(int32_t) * (size_t)T))) goto done;
        bench_random_ids(e, one, (size_t)T, 21);
    }
    if (!N) N = e->info.n_positions - T < 32 ? e->info.n_positions - T : 32; /* the default: what fits */
    if (N < 1 || (int64_t)T + N > e->info.n_positions) {
        fprintf(stderr, "cvene bench generate: a prompt of %d tokens plus --max-new-tokens %d is beyond the model's "
                        "context (n_positions %d)\n", T, N, e->info.n_positions);
        goto done;
    }
    if (!(ids = malloc(sizeof(int32_t) * (size_t)B * T))) goto done;
    for (int b = 0; b < B; b++) memcpy(ids + (size_t)b * T, one, sizeof(int32_t) * (size_t)T);
    cvene_input in = {ids, NULL, B, T, NULL};
    if (cvene_request_new(e->ctx, &req) != CVENE_OK || cvene_request_set_base(req, &in) != CVENE_OK) {
        fprintf(stderr, "cvene bench generate: %s\n", cvene_ctx_error(e->ctx));
        goto done;
    }
    if (e->a.config && bench_load_config(e, 1, &cfg)) goto done;
    if (bench_plan_memory(e, B, T + N)) goto done;
    gen_job j = {e, NULL, req, cvene_gen_default_params()};
    j.p.max_new_tokens = N, j.p.intervene_on_prompt = e->a.intervene_on_prompt; /* greedy, no end id: N steps */
    bench_stats plain, with;
    if (bench_time(e, "decode", gen_call, &j, e->a.warmup, e->a.repeat, &plain)) goto done;
    char name[96];
    snprintf(name, sizeof name, "greedy decode, %d x (%d + %d) tokens", B, T, N);
    bench_record(e, name, &plain, (double)B * N, "tokens/s");
    cJSON_AddNumberToObject(e->derived, "ms_per_step", 1e3 * plain.median / N);
    if (cfg) {
        j.cfg = cfg;
        if (bench_time(e, "decode with the config", gen_call, &j, e->a.warmup, e->a.repeat, &with)) {
            bench_stats_free(&plain);
            goto done;
        }
        snprintf(name, sizeof name, "greedy decode with the config (%d intervention%s)", cvene_config_count(cfg),
                 cvene_config_count(cfg) == 1 ? "" : "s");
        bench_record(e, name, &with, (double)B * N, "tokens/s");
        cJSON_AddNumberToObject(e->derived, "intervention_overhead_pct", 100.0 * (with.median / plain.median - 1.0));
        cJSON_AddNumberToObject(e->derived, "intervention_overhead_us_per_step", 1e6 * (with.median - plain.median) / N);
        bench_stats_free(&with);
    }
    bench_stats_free(&plain);
    rc = 0;
done:
    cvene_request_free(req);
    cvene_config_free(cfg);
    free(one), free(ids);
    cli_text_free(&tx);
    return rc;
}

/* ---- train: optimizer steps/s, and what a whole run or a DAS grid would take ------------- */

typedef struct {
    double *t; /* the time after each step */
    int64_t n, cap;
} step_clock;

static int on_step(void *user, int64_t step, int64_t total, double loss, double lr) {
    step_clock *c = user;
    (void)total, (void)loss, (void)lr;
    if (step >= 1 && step <= c->cap && step > c->n) c->t[c->n++] = cli_now();
    return 0;
}

int bench_train(bench_env *e) {
    int rc = -1;
    cvene_config *cfg = NULL;
    cvene_tokenizer *tok = NULL;
    cvene_dataset *d = NULL;
    cvene_trainer *t = NULL;
    step_clock clk = {NULL, 0, 0};
    if (e->a.config) {
        if (bench_load_config(e, 0, &cfg)) goto done;
    } else if (cli_type_config(e->ctx, "bench train", e->a.type, e->a.layer, "block_output",
                               e->a.rank ? e->a.rank : 1, &cfg)) {
        goto done;
    }
    if (cvene_tokenizer_load(e->ctx, e->a.model, &tok) != CVENE_OK) tok = NULL; /* ids-only datasets need none */
    if (cvene_dataset_load_jsonl(e->ctx, e->a.data, tok, &d) != CVENE_OK) {
        fprintf(stderr, "cvene bench train: %s\n", cvene_ctx_error(e->ctx));
        goto done;
    }
    const int S = e->a.steps, W = e->a.warmup, R = e->a.repeat;
    cvene_train_params tp = cvene_train_default_params();
    if (e->a.batch) tp.batch_size = e->a.batch;
    tp.seed = e->a.seed;
    tp.max_steps = (int64_t)(W + R) * S;
    clk.cap = tp.max_steps;
    if (!(clk.t = malloc(sizeof(double) * (size_t)clk.cap))) {
        fprintf(stderr, "cvene bench train: out of memory for %lld step times (--warmup + --repeat) x --steps\n",
                (long long)clk.cap);
        goto done;
    }
    tp.progress = on_step, tp.progress_user = &clk;
    if (cvene_trainer_new(e->m, cfg, &tp, &t) != CVENE_OK) {
        fprintf(stderr, "cvene bench train: the config cannot train on this model: %s\n", cvene_ctx_error(e->ctx));
        goto done;
    }
    bench_progress(e, "training %lld steps", (long long)tp.max_steps);
    const double t0 = cli_now();
    if (cvene_trainer_fit(t, d) != CVENE_OK) {
        fprintf(stderr, "cvene bench train: %s\n", cvene_ctx_error(e->ctx));
        goto done;
    }
    if (clk.n < tp.max_steps) {
        fprintf(stderr, "cvene bench train: training stopped after %lld of %lld steps\n", (long long)clk.n,
                (long long)tp.max_steps);
        goto done;
    }
    /* runs of S steps: the first W are the warm-up (the first also built the caches) */
    bench_stats st = {0};
    if (!(st.samples = malloc(sizeof(double) * (size_t)R))) goto done;
    for (int r = 0; r < R; r++) {
        const int64_t a = (int64_t)(W + r) * S; /* steps done before this run */
        st.samples[st.n++] = clk.t[a + S - 1] - (a ? clk.t[a - 1] : t0);
    }
    if (bench_stats_summarise(&st)) {
        bench_stats_free(&st);
        goto done;
    }
    char name[96];
    snprintf(name, sizeof name, "%d optimizer steps (batch %d)", S, tp.batch_size);
    bench_record(e, name, &st, S, "steps/s");
    const double step_s = st.median / S;
    bench_stats_free(&st);
    /* the first step also built the caches of the frozen model: its time beyond a step */
    const double cache_s = clk.t[0] - t0 - step_s > 0 ? clk.t[0] - t0 - step_s : 0;
    const int n = cvene_dataset_count(d);
    const int64_t per_epoch = (n + tp.batch_size - 1) / tp.batch_size;
    const double run_s = cache_s + step_s * (double)per_epoch * e->a.epochs;
    cJSON_AddNumberToObject(e->derived, "examples", n);
    cJSON_AddNumberToObject(e->derived, "seconds_per_step", step_s);
    cJSON_AddNumberToObject(e->derived, "examples_per_s", tp.batch_size / step_s);
    cJSON_AddNumberToObject(e->derived, "cache_build_seconds", cache_s);
    cJSON_AddNumberToObject(e->projection, "steps_per_epoch", (double)per_epoch);
    cJSON_AddNumberToObject(e->projection, "epoch_seconds", cache_s + step_s * (double)per_epoch);
    cJSON_AddNumberToObject(e->projection, "epochs", e->a.epochs);
    cJSON_AddNumberToObject(e->projection, "training_run_seconds", run_s);
    /* the pyvene paper's grid: one training per (layer, position) cell, 4 positions a layer */
    const int cells = e->info.n_layer * 4;
    cJSON_AddNumberToObject(e->projection, "das_grid_cells", cells);
    cJSON_AddNumberToObject(e->projection, "das_grid_seconds_one_by_one", run_s * cells);
    int32_t ranks[64];
    const int nr = bench_rank_counts(e, ranks, 64);
    if (nr < 0) goto done;
    cJSON *split = cJSON_AddArrayToObject(e->projection, "das_grid_on_ranks");
    for (int i = 0; i < nr; i++) { /* cells are alike: each rank trains ceil(cells / N) of them */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "ranks", ranks[i]);
        cJSON_AddNumberToObject(o, "seconds", run_s * (double)((cells + ranks[i] - 1) / ranks[i]));
        cJSON_AddItemToArray(split, o);
    }
    cJSON_AddStringToObject(e->projection, "note", "the grid trains each (layer, position) cell alone, as pyvene's "
                                                   "notebook does; sharing forwards across cells (issue #14) and "
                                                   "ranks (issue #15) are not here yet");
    rc = 0;
done:
    free(clk.t);
    cvene_trainer_free(t);
    cvene_dataset_free(d);
    cvene_tokenizer_free(tok);
    cvene_config_free(cfg);
    return rc;
}
