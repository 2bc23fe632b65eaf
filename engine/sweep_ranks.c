/* Sweeps on ranks (p->comm): the layers split among the ranks by their cost, each rank sweeping
 * its own with the same session a single process would use, the rows exchanged at the end. A
 * layer's scores depend only on the base and source caches and that layer, so the result equals
 * one process's bit for bit, whatever the number of ranks. */
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"
#include "engine/sweep_internal.h"
#include "kernels/ctx.h"
#include "models/model.h"

/* What a layer's sites cost, in block-token units: a patch at (l, t) resumes the blocks above the
 * patched one (all of block l for block_input, about half of it for a sublayer's output) over the
 * positions from t on (keys and values before t are cached), then the unembedding of one row (V x C
 * against about 12 C^2 per token of a block). Together: every position, one row per head. */
static double layer_cost(const cvene_model_info *mi, const cvene_sweep_params *p, int T, int l) {
    const int w = p->window > 0 ? p->window : 1, lo = l - w / 2 < 0 ? 0 : l - w / 2;
    const cvene_component c = p->component;
    const double blocks = (double)(mi->n_layer - lo) - (c == CVENE_BLOCK_OUTPUT ? 1.0 : c == CVENE_BLOCK_INPUT ? 0.0 : 0.5);
    double tokens = 0; /* tokens resumed, summed over the layer's sites */
    const int np = p->together ? 1 : p->positions ? p->n_positions : T;
    for (int i = 0; i < np; i++) tokens += p->together ? T : T - (p->positions ? p->positions[i] : i);
    const double head = (double)mi->vocab_size / (12.0 * (mi->n_embd > 0 ? mi->n_embd : 1));
    return (blocks > 0 ? blocks : 0) * tokens + head * np + 1e-9 * l; /* ties: by layer (a stable split) */
}

cvene_status cvene_sweep_split(const cvene_model *m, const cvene_sweep_params *p, int T, const int *done, int n_ranks,
                               int *owner) {
    if (!m || !p || !owner) return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "sweep split: NULL argument");
    if (n_ranks < 1) return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "sweep split: %d ranks", n_ranks);
    if (T < 1) return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "sweep split: a prompt of %d tokens", T);
    const cvene_model_info mi = cvene_model_get_info((cvene_model *)m);
    const int nl = p->layers ? p->n_layers : mi.n_layer;
    if (nl <= 0) return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "sweep split: no layers");
    double *cost = malloc(sizeof(double) * (size_t)nl);
    if (!cost) return cvene_fail(m->ctx, CVENE_ERR_OOM, "sweep split: out of memory");
    for (int li = 0; li < nl; li++) cost[li] = layer_cost(&mi, p, T, p->layers ? p->layers[li] : li);
    comm_split_costs(cost, done, nl, n_ranks, owner);
    free(cost);
    return CVENE_OK;
}

/* cvene_sweep with p->comm of more than one rank (not atp: one pass, every rank runs it whole) */
cvene_status sweep_on_ranks(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                            const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary) {
    cvene_comm *c = p->comm;
    const cvene_model_info mi = cvene_model_get_info(m);
    const int nl = p->layers ? p->n_layers : mi.n_layer;
    const int nh = p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && p->head == CVENE_ALL_HEADS ? mi.n_head : 1;
    const int ncol = (p->together ? 1 : p->positions ? p->n_positions : T) * nh;
    int *owner = malloc(sizeof(int) * (size_t)(nl > 0 ? nl : 1));
    int64_t *counts = calloc(2 * (size_t)c->size, sizeof(int64_t));
    if (!owner || !counts) {
        free(owner), free(counts);
        return cvene_fail(m->ctx, CVENE_ERR_OOM, "sweep: out of memory");
    }
    cvene_sweep_session *ss = NULL;
    cvene_status st = cvene_sweep_split(m, p, T, NULL, c->size, owner);
    if (st == CVENE_OK) st = cvene_sweep_begin(m, base_ids, source_ids, T, p, &ss); /* checks every argument */
    for (int li = 0; li < nl && st == CVENE_OK; li++)
        if (owner[li] == c->rank) st = cvene_sweep_layer(ss, p->layers ? p->layers[li] : li, scores + (size_t)li * ncol);
    /* a rank that failed stops every rank: the others would wait for its rows */
    if (st != CVENE_OK) {
        free(owner), free(counts);
        cvene_sweep_end(ss);
        return st;
    }
    st = comm_share_rows(c, owner, nl, sizeof(float) * (size_t)ncol, scores);
    cvene_sweep_summary sum = cvene_sweep_get_summary(ss);
    if (st == CVENE_OK) { /* forwards and sites: summed over the ranks */
        int64_t mine[2] = {sum.forwards, sum.sites};
        st = comm_allgather(c, mine, sizeof mine, counts);
        sum.forwards = sum.sites = 0;
        for (int r = 0; st == CVENE_OK && r < c->size; r++) sum.forwards += counts[2 * r], sum.sites += counts[2 * r + 1];
    }
    if (st == CVENE_OK && summary) *summary = sum;
    free(owner), free(counts);
    cvene_sweep_end(ss);
    return st;
}
