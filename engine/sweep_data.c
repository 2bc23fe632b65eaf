/* Dataset sweeps: one sweep per base/source pair, each at its own positions for the same columns
 * (roles), averaged.
 *
 * Examples differ in length and in where a role falls, so each runs as its own sweep session on
 * the fast path (source and base cached once per example, sites packed per layer), or as one
 * attribution-patching estimate (p->atp). Rows of different examples are not packed into one
 * forward: a resumed forward reads one prompt's cached keys and values. On ranks (p->comm) the
 * examples are split among them, their rows exchanged, and the mean added in example order, so it
 * equals one process's bit for bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"
#include "kernels/ctx.h"
#include "models/model.h"

typedef struct {
    cvene_progress_fn fn;
    void *user;
    int64_t before, total; /* sites of this rank's examples already done, of the whole dataset */
    cvene_comm *c;         /* on ranks: rank 0 adds the others' done sites (their last word) */
    int64_t *others;
    cvene_status err;      /* a failed read of the others' progress, reported after the example */
} data_progress;

static int64_t others_done(data_progress *d) {
    int64_t n = 0;
    if (d->c && d->c->rank == 0 && d->err == CVENE_OK) d->err = comm_progress_poll(d->c, d->others);
    for (int r = 1; d->c && r < d->c->size; r++) n += d->others[r];
    return n;
}

static void forward_progress(void *user, int64_t done, int64_t total) {
    data_progress *d = user;
    (void)total;
    if (d->fn) d->fn(d->user, d->before + done + others_done(d), d->total);
}

cvene_status cvene_sweep_dataset(cvene_model *m, const cvene_sweep_example *ex, int n_ex, int n_positions,
                                 const cvene_sweep_params *p, float *per_example, float *mean,
                                 cvene_sweep_summary *summary) {
    if (!m || !p) return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "sweep dataset: NULL argument");
    cvene_ctx *ctx = m->ctx;
    const cvene_model_info mi = cvene_model_get_info(m);
    if (!ex || n_ex <= 0) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep dataset: the dataset is empty");
    if (n_positions <= 0) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep dataset: no positions (columns) to sweep");
    if (p->trace || p->together)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "sweep dataset: %s", p->trace ? "causal tracing runs one prompt "
                          "(cvene_sweep)" : "positions patched together are per prompt (cvene_sweep)");
    for (int e = 0; e < n_ex; e++) {
        if (!ex[e].base_ids || !ex[e].source_ids || !ex[e].positions || ex[e].T <= 0)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep dataset: example %d has no ids or positions", e);
        for (int k = 0; k < n_positions; k++)
            if (ex[e].positions[k] < 0 || ex[e].positions[k] >= ex[e].T)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "sweep dataset: example %d: position %d (column %d) is outside its %d tokens", e,
                                  ex[e].positions[k], k, ex[e].T);
    }
    const int nl = p->layers ? p->n_layers : mi.n_layer;
    const int nh = p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && p->head == CVENE_ALL_HEADS ? mi.n_head : 1;
    const size_t per = (size_t)nl * nh * n_positions;
    cvene_comm *c = p->comm && p->comm->size > 1 ? p->comm : NULL;
    /* every example's rows (the caller's, or ours when it wants only the mean), its summary, its rank */
    float *all = per_example ? per_example : malloc(sizeof(float) * per * (size_t)n_ex);
    double *acc = calloc(per, sizeof(double));
    cvene_sweep_summary *ones = calloc((size_t)n_ex, sizeof *ones);
    int *owner = calloc((size_t)n_ex, sizeof(int));
    double *cost = c ? malloc(sizeof(double) * (size_t)n_ex) : NULL;
    int64_t *others = c ? calloc(2 * (size_t)c->size, sizeof(int64_t)) : NULL, *final = c ? others + c->size : NULL;
    if (!all || !acc || !ones || !owner || (c && (!cost || !others))) {
        if (all != per_example) free(all);
        free(acc), free(ones), free(owner), free(cost), free(others);
        return cvene_fail(ctx, CVENE_ERR_OOM, "sweep dataset: out of memory");
    }
    /* on ranks: examples split by their length (a resumed forward's cost grows with it) */
    for (int e = 0; c && e < n_ex; e++) cost[e] = (double)ex[e].T;
    if (c) comm_split_costs(cost, NULL, n_ex, c->size, owner);
    for (int e = 0; c && e < n_ex; e++) final[owner[e]] += (int64_t)per; /* every rank's share, in sites */
    /* one bar for the whole dataset: rank 0 adds what the others say they have done */
    data_progress dp = {p->progress, p->progress_user, 0, n_ex * (int64_t)per, c, others, CVENE_OK};
    cvene_status st = CVENE_OK;
    for (int e = 0; e < n_ex && st == CVENE_OK; e++) {
        if (c && owner[e] != c->rank) continue;
        cvene_sweep_params q = *p;
        q.positions = ex[e].positions, q.n_positions = n_positions;
        q.token = ex[e].token, q.token_b = ex[e].token_b;
        q.position_ids = NULL, q.comm = NULL;
        q.progress = p->progress || c ? forward_progress : NULL, q.progress_user = &dp;
        st = cvene_sweep(m, ex[e].base_ids, ex[e].source_ids, ex[e].T, &q, all + (size_t)e * per, &ones[e]);
        if (st != CVENE_OK) { /* name the example in front of the sweep's own message */
            char msg[CVENE_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", ctx->err);
            st = cvene_fail(ctx, st, "sweep dataset: example %d: %s", e, msg);
            break;
        }
        dp.before += (int64_t)per;
        if (c && c->rank != 0) st = comm_progress_send(c, dp.before);
        forward_progress(&dp, 0, 0);
        if (st == CVENE_OK) st = dp.err;
    }
    if (st == CVENE_OK && c) st = comm_progress_drain(c, others, final); /* rank 0: every rank's last word */
    if (st == CVENE_OK && c && c->rank == 0) forward_progress(&dp, 0, 0); /* the whole dataset done */
    if (st == CVENE_OK && c) st = comm_share_rows(c, owner, n_ex, sizeof(float) * per, all);
    if (st == CVENE_OK && c) st = comm_share_rows(c, owner, n_ex, sizeof *ones, ones);
    /* the mean and the summary in example order, as one process adds them */
    cvene_sweep_summary sum;
    memset(&sum, 0, sizeof sum);
    for (int e = 0; st == CVENE_OK && e < n_ex; e++) {
        for (size_t i = 0; i < per; i++) acc[i] += all[(size_t)e * per + i];
        sum.base_score += ones[e].base_score / n_ex, sum.source_score += ones[e].source_score / n_ex;
        sum.forwards += ones[e].forwards, sum.sites += ones[e].sites;
    }
    if (st == CVENE_OK && mean)
        for (size_t i = 0; i < per; i++) mean[i] = (float)(acc[i] / n_ex);
    if (st == CVENE_OK && summary) *summary = sum;
    if (all != per_example) free(all);
    free(acc), free(ones), free(owner), free(cost), free(others);
    return st;
}
