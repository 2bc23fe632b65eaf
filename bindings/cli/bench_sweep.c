/* cvene bench sweep (bindings/cli/bench.h): the activation-patching sweep of a prompt pair, timed
 * on a sample of layers and projected to the whole layers x positions grid.
 *
 * The cost model: a sweep first runs the source and the base once (begin), then each layer l
 * patches every position and resumes the forward from l upward, so a layer's cost falls about
 * linearly with l (it runs the L - l - 1 layers above it), except the top two (the last block
 * runs only the last position). We time begin, a few layers spread over the rest and the top two,
 * fit a line through the rest's times, and sum: that is the projected full sweep.
 * Split over N ranks (issue #15: ranks split sweep sites by this same cost), each rank runs
 * begin and its share of the layers, assigned longest first to the least loaded rank. --full
 * times the real full sweep, to check the projection. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/bench.h"

/* ids from --X-ids, --X text, or n random tokens; the count, or -1 after printing why */
static int prompt_ids(bench_env *e, cli_text *tx, const char *ids_arg, const char *text, const char *what, int n_random,
                      uint64_t salt, int32_t **out) {
    int n = 0;
    if (ids_arg) {
        const int max = (int)strlen(ids_arg) / 2 + 1;
        char opt[32];
        snprintf(opt, sizeof opt, "--%s-ids", what);
        if (!(*out = malloc(sizeof(int32_t) * (size_t)max))) return -1;
        return bench_parse_ints("sweep", opt, ids_arg, 0, e->info.n_token_ids - 1, *out, max);
    }
    if (text) {
        if (cli_text_encode(tx, text, out, &n) != 0) return -1;
        return n;
    }
    if (!(*out = malloc(sizeof(int32_t) * (size_t)n_random))) return -1;
    bench_random_ids(e, *out, (size_t)n_random, salt);
    return n_random;
}

typedef struct {
    bench_env *e;
    const int32_t *base, *source;
    int T;
    cvene_sweep_params p;
    cvene_sweep_session *s; /* begin's result; layer calls use it */
    int layer;
    float *scores;
} sw_job;

static int sw_begin(void *arg) {
    sw_job *j = arg;
    cvene_sweep_end(j->s);
    j->s = NULL;
    if (cvene_sweep_begin(j->e->m, j->base, j->source, j->T, &j->p, &j->s) == CVENE_OK) return 0;
    fprintf(stderr, "cvene bench sweep: %s\n", cvene_ctx_error(j->e->ctx));
    return -1;
}

static int sw_layer(void *arg) {
    sw_job *j = arg;
    if (cvene_sweep_layer(j->s, j->layer, j->scores) == CVENE_OK) return 0;
    fprintf(stderr, "cvene bench sweep: %s\n", cvene_ctx_error(j->e->ctx));
    return -1;
}

static int sw_whole(void *arg) { /* cvene_sweep over p's layers and positions (naive or full) */
    sw_job *j = arg;
    if (cvene_sweep(j->e->m, j->base, j->source, j->T, &j->p, j->scores, NULL) == CVENE_OK) return 0;
    fprintf(stderr, "cvene bench sweep: %s\n", cvene_ctx_error(j->e->ctx));
    return -1;
}

static void on_progress(void *user, int64_t done, int64_t total) {
    sw_job *j = user;
    bench_progress(j->e, "full sweep: %lld/%lld sites", (long long)done, (long long)total);
}

/* layer costs c (L) split over n ranks, longest first to the least loaded: the busiest rank's sum */
static double split_ranks(const double *c, int L, int n) {
    int *order = malloc(sizeof(int) * (size_t)L);
    double *load = calloc((size_t)n, sizeof(double)), worst = 0;
    if (!order || !load) {
        free(order), free(load);
        return -1;
    }
    for (int l = 0; l < L; l++) order[l] = l;
    for (int a = 1; a < L; a++)
        for (int b = a; b > 0 && c[order[b]] > c[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    for (int i = 0; i < L; i++) {
        int r = 0;
        for (int q = 1; q < n; q++) r = load[q] < load[r] ? q : r;
        load[r] += c[order[i]];
    }
    for (int r = 0; r < n; r++) worst = load[r] > worst ? load[r] : worst;
    free(order), free(load);
    return worst;
}

int bench_sweep(bench_env *e) {
    const int L = e->info.n_layer;
    if (e->info.arch == CVENE_ARCH_GRU) {
        fprintf(stderr, "cvene bench sweep: the sweep engine runs GPT-2 and GPT-NeoX models; this model is a GRU\n");
        return -1;
    }
    cli_text tx = {e->ctx, e->a.model, NULL, 0};
    int32_t *base = NULL, *source = NULL;
    const int n_rand = e->a.seq ? e->a.seq : 16;
    int rc = -1;
    sw_job j;
    memset(&j, 0, sizeof j);
    double *cost = NULL;
    int *sample = NULL;
    const int Tb = prompt_ids(e, &tx, e->a.base_ids, e->a.base, "base", n_rand, 11, &base);
    const int Ts = Tb < 0 ? -1 : prompt_ids(e, &tx, e->a.source_ids, e->a.source, "source", n_rand, 12, &source);
    if (Tb < 0 || Ts < 0) goto done;
    if (Tb != Ts) {
        fprintf(stderr, "cvene bench sweep: the base has %d tokens and the source %d: positions are patched one to "
                        "one, so they must have the same length\n", Tb, Ts);
        goto done;
    }
    if (Tb > e->info.n_positions) {
        fprintf(stderr, "cvene bench sweep: the prompts have %d tokens, beyond the model's context (n_positions %d)%s\n",
                Tb, e->info.n_positions, e->a.seq ? ": give a smaller --seq" : "");
        goto done;
    }
    const int T = Tb;
    j.e = e, j.base = base, j.source = source, j.T = T;
    j.p = cvene_sweep_default_params();
    if (e->a.component) {
        j.p.component = cvene_component_from_name(e->a.component);
        if (j.p.component == CVENE_N_COMPONENTS) {
            fprintf(stderr, "cvene bench sweep: --component \"%s\" is not a component name\n", e->a.component);
            goto done;
        }
    }
    j.p.head = e->a.head;
    j.p.metric = CVENE_METRIC_LOGIT_DIFF; /* the metric's two logits: any pair costs the same */
    j.p.token = 0, j.p.token_b = e->info.vocab_size > 1 ? 1 : 0;
    j.p.progress = on_progress, j.p.progress_user = &j;
    const int max_batch = !strcmp(e->a.device, "cuda") ? 32 : 8;
    if (bench_plan_memory(e, max_batch < T ? max_batch : T, T)) goto done;
    /* the sampled layers: --layers, or --sample-layers spread evenly over the linear part [0, L - 2)
     * (both ends) plus the top two layers, which are cheap and off the line (see below) */
    sample = malloc(sizeof(int) * (size_t)L);
    cost = calloc((size_t)L, sizeof(double));
    j.scores = malloc(sizeof(float) * (size_t)L * T);
    if (!sample || !cost || !j.scores) goto done;
    int ns = 0;
    const int lin = L > 2 ? L - 2 : L; /* layers [0, lin) are on the line */
    if (e->a.layers) {
        if ((ns = cli_parse_list("bench sweep", "--layers", e->a.layers, sample, 0, L, "layer", "the model's layers")) < 0)
            goto done;
    } else {
        const int want = e->a.sample_layers < lin ? e->a.sample_layers : lin;
        for (int i = 0; i < want; i++) {
            const int l = want == 1 ? lin / 2 : (int)((double)i * (lin - 1) / (want - 1) + 0.5);
            if (ns == 0 || sample[ns - 1] != l) sample[ns++] = l;
        }
        for (int l = lin; l < L; l++) sample[ns++] = l;
    }
    for (int a = 1; a < ns; a++) /* ascending */
        for (int b = a; b > 0 && sample[b] < sample[b - 1]; b--) {
            int t = sample[b];
            sample[b] = sample[b - 1], sample[b - 1] = t;
        }

    /* begin: the source and base runs (and their caches) */
    bench_stats st;
    if (bench_time(e, "sweep begin", sw_begin, &j, e->a.warmup, e->a.repeat, &st)) goto done;
    bench_record(e, "begin: source + base runs, caches", &st, 0, NULL);
    const double t_begin = st.median;
    bench_stats_free(&st);
    double *measured = calloc((size_t)L, sizeof(double));
    if (!measured) goto done;
    for (int i = 0; i < ns; i++) {
        char what[64];
        j.layer = sample[i];
        snprintf(what, sizeof what, "fast path, layer %d (%d positions)", sample[i], T);
        if (bench_time(e, what, sw_layer, &j, e->a.warmup, e->a.repeat, &st)) {
            free(measured);
            goto done;
        }
        bench_record(e, what, &st, T, "sites/s");
        measured[sample[i]] = st.median;
        bench_stats_free(&st);
    }
    /* Layers [0, L - 2) lie on a line: patching at l resumes L - l - 1 blocks, each over the
     * patched rows' positions. The top two do not: the last block runs only the last position
     * (and layer L - 1 resumes no block at all), so they are measured, not fitted. The line is
     * the least-squares one through the sampled layers below L - 2 (every sample if there are
     * fewer than two there; one sample: flat), robust to one noisy sample where joining the
     * samples would pass its noise on. A layer's projected cost: measured if it is one of the
     * top two and was sampled, else the line there (never below 0). */
    double sl = 0, sc = 0, sll = 0, slc = 0;
    int nfit = 0;
    for (int pass = 0; pass < 2 && nfit < 2; pass++) {
        sl = sc = sll = slc = 0, nfit = 0;
        for (int i = 0; i < ns; i++) {
            if (pass == 0 && sample[i] >= lin) continue;
            const double l = sample[i], c = measured[sample[i]];
            sl += l, sc += c, sll += l * l, slc += l * c, nfit++;
        }
    }
    const double den = nfit * sll - sl * sl, slope = nfit > 1 && den > 0 ? (nfit * slc - sl * sc) / den : 0;
    const double icpt = (sc - slope * sl) / nfit;
    for (int l = 0; l < L; l++) cost[l] = icpt + slope * l > 0 ? icpt + slope * l : 0;
    for (int i = 0; i < ns; i++)
        if (sample[i] >= lin) cost[sample[i]] = measured[sample[i]];
    free(measured);
    double layers_sum = 0;
    for (int l = 0; l < L; l++) layers_sum += cost[l];
    const double projected = t_begin + layers_sum, sites = (double)L * T;
    cJSON_AddNumberToObject(e->derived, "layers", L);
    cJSON_AddNumberToObject(e->derived, "positions", T);
    cJSON_AddNumberToObject(e->derived, "sampled_layers", ns);
    cJSON_AddNumberToObject(e->derived, "fast_sites_per_s", sites / projected);

    /* the naive loop (one full forward per site) on a few sites of the middle layer */
    if (e->a.naive_sites > 0) {
        const int k = e->a.naive_sites < T ? e->a.naive_sites : T;
        int mid = L / 2, *pos = malloc(sizeof(int) * (size_t)k);
        if (!pos) goto done;
        for (int i = 0; i < k; i++) pos[i] = (int)((double)i * T / k);
        cvene_sweep_params fast = j.p;
        j.p.naive = 1, j.p.layers = &mid, j.p.n_layers = 1, j.p.positions = pos, j.p.n_positions = k;
        j.p.progress = NULL;
        const int ok = bench_time(e, "naive sites", sw_whole, &j, e->a.warmup ? 1 : 0, e->a.repeat, &st) == 0;
        j.p = fast;
        free(pos);
        if (!ok) goto done;
        char what[80];
        snprintf(what, sizeof what, "naive loop, %d site%s of layer %d", k, k == 1 ? "" : "s", mid);
        bench_record(e, what, &st, k, "sites/s");
        /* the naive sweep also runs the source and the base once: the rest is k full forwards */
        const double per_site = (st.median - t_begin > 0.5 * st.median ? st.median - t_begin : 0.5 * st.median) / k;
        cJSON_AddNumberToObject(e->derived, "naive_sites_per_s", 1.0 / per_site);
        cJSON_AddNumberToObject(e->derived, "speedup_fast_over_naive", (t_begin + per_site * sites) / projected);
        cJSON_AddNumberToObject(e->projection, "naive_full_sweep_seconds", t_begin + per_site * sites);
        bench_stats_free(&st);
    }
    cJSON_AddNumberToObject(e->projection, "full_sweep_seconds", projected);
    int32_t ranks[64];
    const int nr = bench_rank_counts(e, ranks, 64);
    if (nr < 0) goto done;
    cJSON *split = cJSON_AddArrayToObject(e->projection, "full_sweep_on_ranks");
    for (int i = 0; i < nr; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "ranks", ranks[i]);
        cJSON_AddNumberToObject(o, "seconds", t_begin + split_ranks(cost, L, ranks[i]));
        cJSON_AddItemToArray(split, o);
    }
    if (nr) cJSON_AddStringToObject(e->projection, "ranks_note", "multi-rank sweeps are issue #15: this is the split "
                                                                 "they would run (each rank: begin + its layers)");
    if (e->a.full) {
        j.p.layers = NULL, j.p.n_layers = 0, j.p.positions = NULL, j.p.n_positions = 0;
        if (bench_time(e, "full sweep", sw_whole, &j, 0, e->a.repeat < 3 ? e->a.repeat : 3, &st)) goto done;
        bench_record(e, "full sweep (checks the projection)", &st, sites, "sites/s");
        cJSON_AddNumberToObject(e->projection, "full_sweep_measured_seconds", st.median);
        cJSON_AddNumberToObject(e->projection, "projection_error_pct", 100.0 * (projected - st.median) / st.median);
        bench_stats_free(&st);
    }
    rc = 0;
done:
    cvene_sweep_end(j.s);
    free(j.scores), free(cost), free(sample), free(base), free(source);
    cli_text_free(&tx);
    return rc;
}
