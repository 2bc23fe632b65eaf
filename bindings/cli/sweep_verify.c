/* `cvene sweep --method atp --verify K`: exact patching at the K sites the attribution-patching
 * estimate ranks highest, to report where the estimate misleads (Spearman's rank correlation, the
 * largest errors), added to the sweep's JSON document. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "bindings/cli/sweep.h"

typedef struct { double change; int li, col; } site_est;
static int by_change(const void *x, const void *y) {
    const double a = fabs(((const site_est *)x)->change), b = fabs(((const site_est *)y)->change);
    return (a < b) - (a > b); /* largest first */
}

/* Spearman's rank correlation of x and y (n values; ties get their mean rank). */
static double spearman(const double *x, const double *y, int n) {
    double *r = malloc(sizeof(double) * 2 * (size_t)n);
    if (!r || n < 2) {
        free(r);
        return NAN;
    }
    for (int w = 0; w < 2; w++) {
        const double *v = w ? y : x;
        for (int i = 0; i < n; i++) {
            double lt = 0, eq = 0;
            for (int j = 0; j < n; j++) lt += v[j] < v[i], eq += v[j] == v[i];
            r[w * n + i] = lt + (eq + 1) / 2;
        }
    }
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) mx += r[i] / n, my += r[n + i] / n;
    for (int i = 0; i < n; i++) {
        sxy += (r[i] - mx) * (r[n + i] - my), sxx += (r[i] - mx) * (r[i] - mx), syy += (r[n + i] - my) * (r[n + i] - my);
    }
    free(r);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

/* --verify K: the K sites of largest estimated change patched exactly (one sweep session over
 * the positions they use, a layer at a time), printed side by side and added to doc["verify"]:
 * per site the estimate and the exact score, and over the K sites the sign agreement and
 * Spearman's rank correlation of the changes. An estimate "misleads" when its change has the
 * wrong sign or is off by more than half the exact change. 0, or -1 (the context's error). */
int cli_sweep_verify_atp(cvene_model *m, const int32_t *base, const int32_t *src, int T, const cvene_sweep_params *p0,
                         const float *est, const int *layers, int nl, int nh, const cvene_sweep_summary *sum, int K,
                         cJSON *doc) {
    const int np = p0->n_positions, ncol = nh * np;
    site_est *all = malloc(sizeof(site_est) * (size_t)nl * ncol);
    int *upos = malloc(sizeof(int) * (size_t)T), *uidx = malloc(sizeof(int) * (size_t)T);
    float *row = malloc(sizeof(float) * (size_t)nh * T);
    double *ex = malloc(sizeof(double) * 2 * (size_t)K);
    int rc = -1;
    cvene_sweep_session *ss = NULL;
    if (!all || !upos || !uidx || !row || !ex) {
        fprintf(stderr, "cvene sweep: out of memory\n");
        rc = -2;
        goto out;
    }
    for (int li = 0; li < nl; li++)
        for (int c = 0; c < ncol; c++)
            all[(size_t)li * ncol + c] = (site_est){est[(size_t)li * ncol + c] - sum->base_score, li, c};
    qsort(all, (size_t)nl * ncol, sizeof *all, by_change);
    if (K > nl * ncol) K = nl * ncol;
    int nu = 0; /* the positions the K sites use, in sweep order */
    for (int t = 0; t < T; t++) uidx[t] = -1;
    for (int k = 0; k < K; k++) uidx[p0->positions[all[k].col % np]] = 1;
    for (int t = 0; t < T; t++)
        if (uidx[t] > 0) uidx[t] = nu, upos[nu++] = t;
    cvene_sweep_params p = *p0;
    p.positions = upos, p.n_positions = nu, p.layers = NULL, p.n_layers = 0, p.progress = NULL;
    if (cvene_sweep_begin(m, base, src, T, &p, &ss) != CVENE_OK) goto out;
    for (int li = 0; li < nl; li++) {
        int need = 0;
        for (int k = 0; k < K; k++) need |= all[k].li == li;
        if (!need) continue;
        if (cvene_sweep_layer(ss, layers[li], row) != CVENE_OK) goto out;
        for (int k = 0; k < K; k++)
            if (all[k].li == li) {
                const int h = all[k].col / np, t = p0->positions[all[k].col % np];
                ex[k] = all[k].change, ex[K + k] = row[(size_t)h * nu + uidx[t]] - sum->base_score;
            }
    }
    cJSON *v = cJSON_AddArrayToObject(doc, "verify");
    int sign_ok = 0, misleading = 0;
    printf("verify: the %d sites of largest estimated change, patched exactly (changes from the base score %.4g)\n",
           K, sum->base_score);
    printf("  %5s %5s %8s %12s %12s\n", "layer", nh > 1 ? "head" : "", "position", "estimate", "exact");
    for (int k = 0; k < K; k++) {
        const int h = all[k].col / np, t = p0->positions[all[k].col % np];
        const int same_sign = (ex[k] > 0) == (ex[K + k] > 0);
        const int bad = !same_sign || fabs(ex[k] - ex[K + k]) > 0.5 * fabs(ex[K + k]);
        sign_ok += same_sign, misleading += bad;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", layers[all[k].li]);
        if (nh > 1) cJSON_AddNumberToObject(e, "head", h);
        cJSON_AddNumberToObject(e, "position", t);
        cJSON_AddNumberToObject(e, "estimate", ex[k] + sum->base_score);
        cJSON_AddNumberToObject(e, "exact", ex[K + k] + sum->base_score);
        cJSON_AddBoolToObject(e, "misleading", bad);
        cJSON_AddItemToArray(v, e);
        char hs[16] = "";
        if (nh > 1) snprintf(hs, sizeof hs, "%d", h);
        printf("  %5d %5s %8d %+12.5g %+12.5g%s\n", layers[all[k].li], hs, t, ex[k], ex[K + k], bad ? "  misleading" : "");
    }
    const double rho = spearman(ex, ex + K, K);
    cJSON *vs = cJSON_AddObjectToObject(doc, "verify_summary");
    cJSON_AddNumberToObject(vs, "sites", K);
    cJSON_AddNumberToObject(vs, "sign_agreement", (double)sign_ok / K);
    cJSON_AddNumberToObject(vs, "misleading", misleading);
    if (isfinite(rho)) cJSON_AddNumberToObject(vs, "spearman", rho);
    printf("  sign agrees on %d of %d; %d misleading (wrong sign or > 50%% off); Spearman rank correlation %.3f\n",
           sign_ok, K, misleading, rho);
    rc = 0;
out:
    cvene_sweep_end(ss);
    free(all), free(upos), free(uidx), free(row), free(ex);
    return rc;
}
