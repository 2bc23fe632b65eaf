/* Probes (include/cvene.h, docs/probes.md): activations collected at sites, one position per
 * example, and softmax-regression classifiers fitted on them with full-batch Adam, in the
 * order of f32 operations torch's Adam uses (engine/optim.c), so a probe trained by torch with
 * the same settings lands on the same weights. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cvene.h"
#include "engine/optim.h"
#include "kernels/backend.h"
#include "engine/comm.h"
#include "kernels/ctx.h"
#include "kernels/dtype.h"
#include "models/model.h"
#include "models/safetensors.h"

/* ---- collection ---- */

struct cvene_activations {
    int N, n_sites;
    int *D;       /* (n_sites) */
    float **x;    /* (n_sites) of (N, D) */
};

typedef struct {
    cvene_ctx *ctx;
    cvene_activations *a;
    const cvene_site *sites;
    const int *rowpos;   /* (B, R) the positions of each row of this batch */
    int e0, B, T, R, gru;
    int *calls;          /* (n_sites) callbacks seen in this batch (a GRU site: one per timestep) */
    cvene_status err;
    char msg[512];       /* err's message (the model reports a failed callback over it) */
} collect_run;

static int site_index(const collect_run *r, cvene_component c, int layer, int from) {
    for (int s = from; s < r->a->n_sites; s++)
        if (r->sites[s].component == c && r->sites[s].layer == layer) return s;
    return -1;
}

/* rows (b, p) of v, p = rowpos[b] (transformers) or the rows whose position is this timestep */
static int copy_rows(collect_run *r, int s, const cvene_tensor_view *v, int step) {
    cvene_backend *be = r->ctx->be;
    const int D = (int)v->shape[v->ndim - 1];
    const size_t esz = v->dtype == CVENE_F32 ? 4 : 2;
    if (v->dtype != CVENE_F32 && !cvene_dtype_is_half(v->dtype)) {
        r->err = cvene_fail(r->ctx, CVENE_ERR_UNSUPPORTED, "collect: %s of layer %d has dtype %d",
                            cvene_component_name(r->sites[s].component), r->sites[s].layer, (int)v->dtype);
        return 1;
    }
    if (!r->a->x[s]) {
        r->a->D[s] = D;
        r->a->x[s] = malloc(sizeof(float) * (size_t)r->a->N * D);
        if (!r->a->x[s]) {
            r->err = cvene_fail(r->ctx, CVENE_ERR_OOM, "collect: out of memory for %d x %d activations", r->a->N, D);
            return 1;
        }
    }
    uint16_t *half = esz == 2 ? malloc(2 * (size_t)D) : NULL;
    if (esz == 2 && !half) {
        r->err = cvene_fail(r->ctx, CVENE_ERR_OOM, "out of memory");
        return 1;
    }
    for (int br = 0; br < r->B * r->R && r->err == CVENE_OK; br++) {
        const int b = br / r->R, p = r->rowpos[br];
        if (r->gru && p != step) continue;
        const size_t row = r->gru ? (size_t)b : (size_t)b * r->T + (size_t)p;
        float *dst = r->a->x[s] + ((size_t)r->e0 * r->R + br) * D;
        const char *src = (const char *)v->data + row * D * esz;
        r->err = be->ops->to_host(be, esz == 4 ? (void *)dst : (void *)half, src, esz * (size_t)D);
        if (r->err == CVENE_OK && esz == 2) cvene_half_to_f32_array(dst, half, (size_t)D, v->dtype);
    }
    free(half);
    return r->err != CVENE_OK;
}

static int collect_site(void *user, cvene_component c, int layer, cvene_tensor_view *v) {
    collect_run *r = user;
    for (int s = site_index(r, c, layer, 0); s >= 0; s = site_index(r, c, layer, s + 1)) {
        const int step = r->calls[s]++;
        if (!r->gru && v->ndim != 3) {
            r->err = cvene_fail(r->ctx, CVENE_ERR_INVALID_ARG, "collect: sites[%d] %s is not a (B, T, D) stream (its "
                                "view has %d dims); probe the merged streams (e.g. attention_value_output)", s,
                                cvene_component_name(c), v->ndim);
            break;
        }
        if (r->a->x[s] && r->a->D[s] != v->shape[v->ndim - 1]) {
            r->err = cvene_fail(r->ctx, CVENE_ERR_INVALID_ARG, "collect: sites[%d] changed width", s);
            break;
        }
        if (copy_rows(r, s, v, step)) break;
    }
    if (r->err == CVENE_OK) return 0;
    snprintf(r->msg, sizeof r->msg, "%s", cvene_ctx_error(r->ctx));
    return 1;
}

void cvene_activations_free(cvene_activations *a) {
    if (!a) return;
    for (int s = 0; s < a->n_sites; s++) free(a->x[s]);
    free(a->x), free(a->D), free(a);
}

int cvene_activations_count(const cvene_activations *a) { return a ? a->N : 0; }
int cvene_activations_width(const cvene_activations *a, int s) { return a && s >= 0 && s < a->n_sites ? a->D[s] : 0; }
const float *cvene_activations_data(const cvene_activations *a, int s) {
    return a && s >= 0 && s < a->n_sites ? a->x[s] : NULL;
}

static cvene_status check_collect(cvene_model *m, const int32_t *const *ids, const int *lens, const int *pos, int R,
                                  int N, const cvene_site *sites, int n_sites) {
    cvene_ctx *ctx = m->ctx;
    const cvene_model_info mi = cvene_model_get_info(m);
    const int gru = mi.arch == CVENE_ARCH_GRU;
    if (N < 1 || n_sites < 1 || R < 1 || !ids || !lens || !pos || !sites)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: %d examples, %d positions each and %d sites (need at "
                          "least one of each)", N, R, n_sites);
    for (int s = 0; s < n_sites; s++) {
        const cvene_component c = sites[s].component;
        if ((int)c < 0 || c >= CVENE_N_COMPONENTS || cvene_component_is_gru(c) != gru)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: sites[%d].component %d is not a %s component", s,
                              (int)c, gru ? "GRU" : "transformer");
        if (sites[s].layer < 0 || sites[s].layer >= mi.n_layer)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: sites[%d].layer %d is outside [0, %d)", s,
                              sites[s].layer, mi.n_layer);
        for (int q = 0; q < s; q++)
            if (sites[q].component == c && sites[q].layer == sites[s].layer)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: sites[%d] repeats sites[%d] (%s, layer %d)", s,
                                  q, cvene_component_name(c), sites[s].layer);
    }
    for (int e = 0; e < N; e++) {
        if (lens[e] < 1 || (mi.arch == CVENE_ARCH_GPT2 && lens[e] > mi.n_positions))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: example %d has %d tokens (1 to %d)", e, lens[e],
                              mi.n_positions);
        for (int k = 0; k < R; k++)
            if (pos[(size_t)e * R + k] < -lens[e] || pos[(size_t)e * R + k] >= lens[e])
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: example %d: position %d is outside its %d tokens",
                                  e, pos[(size_t)e * R + k], lens[e]);
        for (int q = 0; q < lens[e]; q++)
            if (ids[e][q] < 0 || ids[e][q] >= mi.n_token_ids)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "collect: example %d: token %d = %d is outside the "
                                  "vocabulary [0, %d)", e, q, ids[e][q], mi.n_token_ids);
    }
    return CVENE_OK;
}

cvene_status cvene_collect(cvene_model *m, const int32_t *const *ids, const int *lens, const int *pos, int N,
                           const cvene_site *sites, int n_sites, int batch_size, cvene_activations **out) {
    return cvene_collect_positions(m, ids, lens, pos, 1, N, sites, n_sites, batch_size, out);
}

/* On ranks: every rank's rows to every rank (a rank that ran no batch learns each site's width
 * from the others). Rows of one example are contiguous in every site's (N R, D) array. */
static cvene_status share_collected(cvene_comm *c, cvene_activations *a, const int *owner, int N, int R) {
    int *D = calloc((size_t)a->n_sites * c->size, sizeof(int));
    if (!D) return cvene_fail(c->ctx, CVENE_ERR_OOM, "collect: out of memory");
    cvene_status st = comm_allgather(c, a->D, sizeof(int) * (size_t)a->n_sites, D);
    for (int s = 0; s < a->n_sites && st == CVENE_OK; s++) {
        int w = 0;
        for (int r = 0; r < c->size; r++) w = D[r * a->n_sites + s] > w ? D[r * a->n_sites + s] : w;
        if (!a->x[s]) {
            a->D[s] = w;
            a->x[s] = malloc(sizeof(float) * (size_t)a->N * (w > 0 ? w : 1));
            if (!a->x[s]) st = cvene_fail(c->ctx, CVENE_ERR_OOM, "collect: out of memory for %d x %d activations", a->N, w);
        }
        if (st == CVENE_OK) st = comm_share_rows(c, owner, N, sizeof(float) * (size_t)R * a->D[s], a->x[s]);
    }
    free(D);
    return st;
}

cvene_status cvene_collect_positions(cvene_model *m, const int32_t *const *ids, const int *lens, const int *pos, int R,
                                     int N, const cvene_site *sites, int n_sites, int batch_size,
                                     cvene_activations **out) {
    return cvene_collect_ranks(NULL, m, ids, lens, pos, R, N, sites, n_sites, batch_size, out);
}

cvene_status cvene_collect_ranks(cvene_comm *comm, cvene_model *m, const int32_t *const *ids, const int *lens,
                                 const int *pos, int R, int N, const cvene_site *sites, int n_sites, int batch_size,
                                 cvene_activations **out) {
    if (!m || !out) return CVENE_ERR_INVALID_ARG;
    *out = NULL;
    CVENE_TRY(check_collect(m, ids, lens, pos, R, N, sites, n_sites));
    if (N > INT_MAX / R)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "collect: %d examples x %d positions is too many rows", N, R);
    cvene_ctx *ctx = m->ctx;
    const int gru = cvene_model_get_info(m).arch == CVENE_ARCH_GRU, Bm = batch_size > 0 ? batch_size : 32;
    cvene_activations *a = calloc(1, sizeof *a);
    int32_t *bids = NULL, *mask = NULL;
    int *rowpos = malloc(sizeof(int) * (size_t)Bm * R), *calls = malloc(sizeof(int) * (size_t)n_sites);
    if (a) a->N = N * R, a->n_sites = n_sites, a->D = calloc((size_t)n_sites, sizeof(int)),
           a->x = calloc((size_t)n_sites, sizeof(float *));
    if (!a || !a->D || !a->x || !rowpos || !calls) {
        cvene_activations_free(a), free(rowpos), free(calls);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    /* on ranks: whole batches split by their tokens, so every batch is the one a single process runs
     * (the same rows padded to the same length: the same values) */
    cvene_comm *c = comm && comm->size > 1 ? comm : NULL;
    const int n_batches = (N + Bm - 1) / Bm;
    int *owner = c ? malloc(sizeof(int) * (size_t)N) : NULL, *bowner = c ? malloc(sizeof(int) * (size_t)n_batches) : NULL;
    double *cost = c ? calloc((size_t)n_batches, sizeof(double)) : NULL;
    if (c && (!owner || !bowner || !cost)) {
        free(owner), free(bowner), free(cost), cvene_activations_free(a), free(rowpos), free(calls);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    if (c) {
        for (int b = 0; b < n_batches; b++) { /* a batch's cost: its rows padded to its longest */
            int T = 0;
            for (int e = b * Bm; e < N && e < (b + 1) * Bm; e++) T = lens[e] > T ? lens[e] : T;
            cost[b] = (double)T * (N - b * Bm < Bm ? N - b * Bm : Bm);
        }
        comm_split_costs(cost, NULL, n_batches, c->size, bowner);
        for (int e = 0; e < N; e++) owner[e] = bowner[e / Bm];
    }
    cvene_status st = CVENE_OK;
    for (int e0 = 0; e0 < N && st == CVENE_OK; e0 += Bm) {
        if (c && bowner[e0 / Bm] != c->rank) continue;
        const int B = N - e0 < Bm ? N - e0 : Bm;
        int T = 0;
        for (int b = 0; b < B; b++) T = lens[e0 + b] > T ? lens[e0 + b] : T;
        free(bids), free(mask);
        bids = calloc((size_t)B * T, sizeof(int32_t)), mask = calloc((size_t)B * T, sizeof(int32_t));
        if (!bids || !mask) {
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            break;
        }
        for (int b = 0; b < B; b++) { /* right padding: a row's real tokens keep their positions */
            const int len = lens[e0 + b];
            memcpy(bids + (size_t)b * T, ids[e0 + b], sizeof(int32_t) * (size_t)len);
            for (int q = 0; q < len; q++) mask[(size_t)b * T + q] = 1;
            for (int k = 0; k < R; k++) {
                const int q = pos[(size_t)(e0 + b) * R + k];
                rowpos[b * R + k] = q < 0 ? q + len : q;
            }
        }
        memset(calls, 0, sizeof(int) * (size_t)n_sites);
        collect_run r = {ctx, a, sites, rowpos, e0, B, T, R, gru, calls, CVENE_OK, ""};
        cvene_run_opts o;
        memset(&o, 0, sizeof o);
        o.attention_mask = mask;
        o.site_fn = collect_site;
        o.site_user = &r;
        for (int s = 0; s < n_sites; s++) o.sites[sites[s].component] |= 1ull << sites[s].layer;
        st = cvene_forward(m, bids, B, T, &o);
        if (st == CVENE_ERR_CALLBACK && r.err != CVENE_OK) st = cvene_fail(ctx, r.err, "%s", r.msg);
        for (int s = 0; s < n_sites && st == CVENE_OK; s++)
            if (calls[s] == 0)
                st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "collect: sites[%d] (%s, layer %d) is not a site of this "
                                "model", s, cvene_component_name(sites[s].component), sites[s].layer);
    }
    free(bids), free(mask), free(rowpos), free(calls);
    if (st == CVENE_OK && c) st = share_collected(c, a, owner, N, R);
    free(owner), free(bowner), free(cost);
    if (st != CVENE_OK) {
        cvene_activations_free(a);
        return st;
    }
    *out = a;
    return CVENE_OK;
}

/* ---- softmax regression ---- */

#define PROBE_CONSTANT 1e-5

struct cvene_probe {
    cvene_ctx *ctx;
    int D, C;
    float *W, *b;        /* (C, D), (C) */
    float *mean, *std;   /* (D) each, or NULL */
};

cvene_probe_params cvene_probe_default_params(void) {
    cvene_probe_params p;
    memset(&p, 0, sizeof p);
    p.steps = 300, p.lr = 1e-2, p.beta1 = 0.9, p.beta2 = 0.999, p.eps = 1e-8, p.standardize = 1;
    return p;
}

void cvene_probe_free(cvene_probe *pr) {
    if (!pr) return;
    free(pr->W), free(pr->b), free(pr->mean), free(pr->std), free(pr);
}

/* z (N, D) = (X - mean) / std, as torch computes (x - mean) / std in f32 */
static void standardise(const cvene_probe *pr, const float *X, int N, float *z) {
    const int D = pr->D;
    for (size_t i = 0; i < (size_t)N; i++)
        for (int d = 0; d < D; d++)
            z[i * D + d] = pr->mean ? (X[i * D + d] - pr->mean[d]) / pr->std[d] : X[i * D + d];
}

/* logits (N, C) = z W^T + b */
static void probe_logits(const cvene_probe *pr, const float *z, int N, float *logits) {
    for (size_t i = 0; i < (size_t)N; i++) memcpy(logits + i * pr->C, pr->b, sizeof(float) * (size_t)pr->C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, pr->C, pr->D, 1.0f, z, pr->D, pr->W, pr->D, 1.0f, logits,
                pr->C);
}

/* mean cross-entropy of logits (N, C) in double; with p, p (N, C) = (softmax - onehot) / N */
static double xent(const float *logits, const int32_t *y, int N, int C, float *p, int *right) {
    double sum = 0;
    int ok = 0;
    for (size_t i = 0; i < (size_t)N; i++) {
        const float *l = logits + i * C;
        int arg = 0;
        for (int c = 1; c < C; c++) arg = l[c] > l[arg] ? c : arg;
        ok += arg == y[i];
        const double mx = l[arg];
        double z = 0;
        for (int c = 0; c < C; c++) z += exp((double)l[c] - mx);
        sum += log(z) - ((double)l[y[i]] - mx);
        for (int c = 0; p && c < C; c++) /* p may be logits: each entry is read before it is written */
            p[i * C + c] = (float)((exp((double)l[c] - mx) / z - (c == y[i])) / N);
    }
    if (right) *right = ok;
    return sum / N;
}

cvene_status cvene_probe_fit(cvene_ctx *ctx, const float *X, const int32_t *y, int N, int D, int C,
                             const cvene_probe_params *params, cvene_probe **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "probe_fit: out is NULL");
    *out = NULL;
    const cvene_probe_params p = params ? *params : cvene_probe_default_params();
    if (!X || !y || N < 1 || D < 1 || C < 2)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "probe_fit: %d examples of width %d in %d classes (need >= 1, "
                          ">= 1 and >= 2)", N, D, C);
    if (p.steps < 1 || !(p.lr > 0) || !(p.eps > 0) || !(p.beta1 >= 0 && p.beta1 < 1) || !(p.beta2 >= 0 && p.beta2 < 1) ||
        !(p.weight_decay >= 0))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "probe_fit: steps %d (>= 1), lr %g (> 0), betas %g %g (in [0, "
                          "1)), eps %g (> 0), weight_decay %g (>= 0)", p.steps, p.lr, p.beta1, p.beta2, p.eps,
                          p.weight_decay);
    for (int i = 0; i < N; i++)
        if (y[i] < 0 || y[i] >= C)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "probe_fit: label %d of example %d is outside [0, %d)", y[i],
                              i, C);
    for (size_t i = 0; i < (size_t)N * D; i++)
        if (!isfinite(X[i]))
            return cvene_fail(ctx, CVENE_ERR_NUMERIC, "probe_fit: feature %zu of example %zu is not finite (%g)",
                              i % (size_t)D, i / (size_t)D, X[i]);
    cvene_probe *pr = calloc(1, sizeof *pr);
    const size_t CD = (size_t)C * D;
    float *z = malloc(sizeof(float) * (size_t)N * D), *logits = malloc(sizeof(float) * (size_t)N * C);
    float *g = calloc(CD + (size_t)C, sizeof(float)), *m = calloc(CD + (size_t)C, sizeof(float));
    float *v = calloc(CD + (size_t)C, sizeof(float));
    if (pr) {
        pr->ctx = ctx, pr->D = D, pr->C = C;
        pr->W = calloc(CD, sizeof(float)), pr->b = calloc((size_t)C, sizeof(float));
        if (p.standardize) pr->mean = malloc(sizeof(float) * (size_t)D), pr->std = malloc(sizeof(float) * (size_t)D);
    }
    if (!pr || !pr->W || !pr->b || (p.standardize && (!pr->mean || !pr->std)) || !z || !logits || !g || !m || !v) {
        cvene_probe_free(pr), free(z), free(logits), free(g), free(m), free(v);
        return cvene_fail(ctx, CVENE_ERR_OOM, "probe_fit: out of memory");
    }
    /* in double, rounded once: numpy's float64 mean / std. A feature varying by less than
     * PROBE_CONSTANT of the features' root-mean-square is constant up to the forward's f32 noise
     * (a saturated GELU gives -0 in one implementation and -1e-9 in another): it is divided by 1,
     * not blown up. */
    double rms = 0;
    for (size_t i = 0; p.standardize && i < (size_t)N * D; i++) rms += (double)X[i] * X[i];
    rms = sqrt(rms / ((double)N * D));
    for (int d = 0; p.standardize && d < D; d++) {
        double s = 0, q = 0;
        for (int i = 0; i < N; i++) s += X[(size_t)i * D + d];
        const double mu = s / N;
        for (int i = 0; i < N; i++) q += (X[(size_t)i * D + d] - mu) * (X[(size_t)i * D + d] - mu);
        const double sd = sqrt(q / N);
        pr->mean[d] = (float)mu, pr->std[d] = sd > PROBE_CONSTANT * rms ? (float)sd : 1.0f;
    }
    standardise(pr, X, N, z);
    optim_adam W_opt = optim_adam_default(), b_opt = optim_adam_default();
    W_opt.beta1 = b_opt.beta1 = p.beta1, W_opt.beta2 = b_opt.beta2 = p.beta2, W_opt.eps = b_opt.eps = p.eps;
    W_opt.weight_decay = p.weight_decay; /* the bias is not decayed */
    cvene_status st = CVENE_OK;
    for (int s = 1; s <= p.steps; s++) {
        probe_logits(pr, z, N, logits);
        const double loss = xent(logits, y, N, C, logits, NULL); /* logits now hold dlogits */
        if (!isfinite(loss)) {
            st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "probe_fit: the loss of step %d is not finite (%g); lower the "
                            "learning rate", s, loss);
            break;
        }
        /* dW (C, D) = dlogits^T z; db = the column sums of dlogits */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, N, 1.0f, logits, C, z, D, 0.0f, g, D);
        for (int c = 0; c < C; c++) {
            double sb = 0;
            for (int i = 0; i < N; i++) sb += logits[(size_t)i * C + c];
            g[CD + c] = (float)sb;
        }
        optim_adam_step(&W_opt, pr->W, g, m, v, CD, s, p.lr);
        optim_adam_step(&b_opt, pr->b, g + CD, m + CD, v + CD, (size_t)C, s, p.lr);
    }
    free(z), free(logits), free(g), free(m), free(v);
    if (st != CVENE_OK) {
        cvene_probe_free(pr);
        return st;
    }
    *out = pr;
    return CVENE_OK;
}

cvene_status cvene_probe_evaluate(const cvene_probe *pr, const float *X, const int32_t *y, int N, double *accuracy,
                                  double *loss) {
    if (!pr) return CVENE_ERR_INVALID_ARG;
    if (!X || !y || N < 1) return cvene_fail(pr->ctx, CVENE_ERR_INVALID_ARG, "probe_evaluate: %d examples", N);
    for (int i = 0; i < N; i++)
        if (y[i] < 0 || y[i] >= pr->C)
            return cvene_fail(pr->ctx, CVENE_ERR_INVALID_ARG, "probe_evaluate: label %d of example %d is outside "
                              "[0, %d)", y[i], i, pr->C);
    float *z = malloc(sizeof(float) * (size_t)N * pr->D), *logits = malloc(sizeof(float) * (size_t)N * pr->C);
    if (!z || !logits) {
        free(z), free(logits);
        return cvene_fail(pr->ctx, CVENE_ERR_OOM, "probe_evaluate: out of memory");
    }
    standardise(pr, X, N, z);
    probe_logits(pr, z, N, logits);
    int right = 0;
    const double l = xent(logits, y, N, pr->C, NULL, &right);
    free(z), free(logits);
    if (accuracy) *accuracy = (double)right / N;
    if (loss) *loss = l;
    return CVENE_OK;
}

void cvene_probe_weights(const cvene_probe *pr, const float **W, const float **b, const float **mean,
                         const float **std) {
    if (W) *W = pr ? pr->W : NULL;
    if (b) *b = pr ? pr->b : NULL;
    if (mean) *mean = pr ? pr->mean : NULL;
    if (std) *std = pr ? pr->std : NULL;
}

cvene_status cvene_probe_save(const cvene_probe *pr, const char *path, const char *const *meta_kv, int n_meta) {
    if (!pr || !path) return CVENE_ERR_INVALID_ARG;
    st_out_tensor t[4] = {{"weight", ST_F32, 2, {pr->C, pr->D}, pr->W}, {"bias", ST_F32, 1, {pr->C}, pr->b},
                          {"mean", ST_F32, 1, {pr->D}, pr->mean}, {"std", ST_F32, 1, {pr->D}, pr->std}};
    return st_write(pr->ctx, path, t, pr->mean ? 4 : 2, meta_kv, n_meta);
}
