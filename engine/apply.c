/* Applying interventions at a site. The fused path is one iv_units op per intervention
 * (engine/index.c built its arrays); the host path (move_units, combine, apply_step) remains on
 * the CPU for callbacks, Noise and link keys; on a device those are fused calls, callbacks a
 * host round trip between two of them (iv_fused_on).
 *
 * GRUs (unit "t", docs/interventions.md "GRU"): the model calls each site once per timestep
 * with that step's (B, W) rows, so here a site call is one timestep, counted per (component,
 * layer) as pyvene counts hook calls. At step t, example b's setter acts if t is among its base
 * timesteps, taking the k-th source vector when t is the k-th smallest of them; getters store
 * the k-th smallest source timestep in slot k. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/run_internal.h"
#include "engine/trainable.h"
#include "kernels/tensor.h"

/* (B, U, R, D) <-> rows [row0, row0 + B) of the site tensor; dir 0 gathers, 1 scatters */
static void move_units(float *packed, float *site, int row0, int B, const iv_locs *l, const geom *g,
                       cvene_component comp, int dir) {
    int U = iv_n_units(l);
    int64_t L = (int64_t)g->R * g->D;
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            float *pk = packed + ((int64_t)b * U + u) * L;
            float *st = site + (int64_t)(row0 + b) * g->E + iv_unit_offset(l, g, comp, b, u);
            for (int r = 0; r < g->R; r++) {
                if (dir) memcpy(st + (int64_t)r * g->S, pk + (int64_t)r * g->D, sizeof(float) * (size_t)g->D);
                else memcpy(pk + (int64_t)r * g->D, st + (int64_t)r * g->S, sizeof(float) * (size_t)g->D);
            }
        }
}

/* ---- applying one intervention to a block's rows ----------------------- */

/* x[S] op= y[S] on one row of D floats (S: the example's subspace dims, or all). */
static void combine(cvene_intervention_type type, float *x, const float *y, const iv_dims *dm, int D) {
    int nd = dm->n >= 0 ? dm->n : D;
    for (int k = 0; k < nd; k++) {
        int d = dm->n >= 0 ? dm->dims[k] : k;
        switch (type) {
        case CVENE_IV_VANILLA: case CVENE_IV_SKIP: x[d] = y[d]; break;
        case CVENE_IV_ADDITION: x[d] = x[d] + y[d]; break;
        case CVENE_IV_SUBTRACTION: x[d] = x[d] - y[d]; break;
        case CVENE_IV_ZERO: x[d] = 0.0f; break;
        default: break;
        }
    }
}

/* Unit t at one timestep, for a callback (every other type at unit t is fused): every
 * example of the block that lists `step` gets the callback on its row, with the source of
 * that step's slot. Unit t excludes Noise, Skip and link keys (engine/config.c). */
static cvene_status apply_step(run_state *s, int i, float *site, const block *bk, int step) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    geom g = iv_stream_geom(&mi, r->component, r->unit, bk->in->T, bl->present);
    int B = s->B, U = iv_units_of(r, bl, bk->in->T);
    int64_t off = iv_gru_offset(r->component, &g);
    for (int b = 0; b < B; b++) {
        int k = iv_step_slot(bl, b, step);
        if (k < 0) continue;
        float *x = site + (int64_t)(bk->row0 + b) * g.E + off;
        const iv_dims *dm = &s->dims[i * B + b];
        int64_t slot = ((int64_t)b * U + k) * g.D;
        const float *y = s->iv[i].store ? s->iv[i].store + slot : NULL;
        if (!y && r->source) y = r->source_len == g.D ? r->source : r->source + slot; /* constant source */
        int64_t shape[4] = {1, 1, 1, g.D};
        int rc = r->fn(r->fn_user, x, y, shape, b, dm->n >= 0 ? dm->dims : NULL, dm->n >= 0 ? dm->n : 0);
        if (rc != 0) return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
    }
    return CVENE_OK;
}

static cvene_status apply(run_state *s, int i, float *site, const block *bk) {
    const cvene_config *c = s->c;
    const cvene_representation *r = &c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    geom g = iv_stream_geom(&mi, r->component, r->unit, bk->in->T, bl->present);
    int B = s->B, U = iv_n_units(bl);
    int64_t L = (int64_t)g.R * g.D, n = (int64_t)B * U * L;
    float *gb = s->scratch;
    move_units(gb, site, bk->row0, B, bl, &g, r->component, 0);
    const int lk = c->reps[i].link; /* dense index of r->link_key */
    if (lk >= 0 && s->link[lk].hot) {
        if (s->link[lk].hot_len != n)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "intervention %d shares intervention_link_key %d with an earlier one but selects a "
                              "different number of units", i, r->link_key);
        memcpy(gb, s->link[lk].hot, sizeof(float) * (size_t)n);
    }
    const float *gs = s->iv[i].store;
    int64_t src_len = gs ? n : 0;
    if (!gs && r->source) gs = r->source, src_len = r->source_len; /* constant source */
    if (s->iv[i].trained) /* its own forward on the gathered units (a sourceless type: the base's) */
        CVENE_TRY(tr_forward(s->iv[i].trained, gb, gb, s->iv[i].store ? s->iv[i].store : gb, s->iv[i].trained_rows));
    for (int b = 0; !s->iv[i].trained && b < B; b++) {
        const iv_dims *dm = &s->dims[i * B + b];
        float *eb = gb + (int64_t)b * U * L;
        if (r->type == CVENE_IV_CALLBACK) {
            int64_t shape[4] = {1, U, g.R, g.D};
            const float *es = s->iv[i].store ? s->iv[i].store + (int64_t)b * U * L : NULL;
            int rc = r->fn(r->fn_user, eb, es, shape, b, dm->n >= 0 ? dm->dims : NULL, dm->n >= 0 ? dm->n : 0);
            if (rc != 0)
                return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
            continue;
        }
        if (r->type == CVENE_IV_COLLECT) continue;
        if (r->type == CVENE_IV_NOISE) {
            /* pyvene adds the float64 noise times the float32 level in double */
            double level = (double)(float)r->noise_level;
            const double *nz = s->iv[i].noise;
            for (int u = 0; u < U; u++)
                for (int64_t d = 0; d < L; d++) {
                    float *x = &eb[u * L + d];
                    *x = (float)((double)*x + nz[u * g.D + d % g.D] * level);
                }
            continue;
        }
        for (int u = 0; u < U; u++)
            for (int rr = 0; rr < g.R; rr++) {
                float *x = eb + u * L + (int64_t)rr * g.D;
                const float *y = NULL;
                if (gs) y = src_len == g.D ? gs : gs + (int64_t)b * U * L + u * L + (int64_t)rr * g.D;
                combine(r->type, x, y, dm, g.D);
            }
    }
    if (r->type == CVENE_IV_COLLECT) {
        cvene_tensor_view *t = &s->res->collected[s->iv[i].collect_slot];
        const iv_dims *d0 = &s->dims[i * B];
        if (d0->n < 0) {
            memcpy(t->data, gb, sizeof(float) * (size_t)n);
        } else { /* pyvene picks subspace dims from the flattened (U x D) vector */
            float *o = t->data;
            int per = d0->n / U;
            for (int b = 0; b < B; b++)
                for (int k = 0; k < d0->n; k++) o[(int64_t)b * U * per + k] = gb[(int64_t)b * U * L + s->dims[i * B + b].dims[k]];
        }
    } else {
        move_units(gb, site, bk->row0, B, bl, &g, r->component, 1);
    }
    if (lk >= 0) {
        if (!s->link[lk].hot && !(s->link[lk].hot = malloc(sizeof(float) * (size_t)n)))
            return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        memcpy(s->link[lk].hot, gb, sizeof(float) * (size_t)n);
        s->link[lk].hot_len = n;
    }
    return CVENE_OK;
}

/* One fused call on a block's rows of the site; src: the call's source / destination. */
static cvene_status run_fused(run_state *s, const fused_call *f, float *site, const block *bk, float *src) {
    if (bk->in->T != f->T) /* the plan and the index building disagree: a bug, not a user error */
        return cvene_fail(s->ctx, CVENE_ERR_UNSUPPORTED, "internal: fused intervention call planned for length %d runs on %d",
                          f->T, bk->in->T);
    cvene_backend *be = s->ctx->be;
    const int32_t *dims_n = f->dims_n >= 0 ? s->idx32 + f->dims_n : NULL;
    const int64_t *src_off = f->op == CVENE_IVOP_ZERO ? NULL : s->idx64 + f->src_off;
    return be->ops->iv_units(be, site + (int64_t)bk->row0 * f->E, s->idx64 + f->x_off, f->x_rs, src, src_off,
                             f->src_rs, s->idx32, s->idx64 + f->dims_off, dims_n, f->n, f->R, f->D, f->op);
}

/* What a fused setter of intervention i with op reads or (Collect) writes. */
static float *fused_source(const run_state *s, int i, int op) {
    if (op == CVENE_IVOP_COLLECT) return s->iv[i].coll;
    if (op == CVENE_IVOP_ZERO) return NULL;
    return s->iv[i].store ? s->iv[i].store : s->iv[i].csrc;
}

/* Unit t: the fused call of one timestep (nothing when no example lists it). */
static cvene_status run_step(run_state *s, const fused_call *calls, int n_steps, int step, float *site,
                             const block *bk, float *src) {
    if (step >= n_steps || calls[step].n == 0) return CVENE_OK;
    return run_fused(s, &calls[step], site, bk, src);
}

/* A callback on a device (build_round_trip): its units to the host, the callback for each
 * example as on the CPU (the base units (1, U, R, D), the gathered source's if any), and
 * back. The host copies wait for the device: a callback costs a synchronisation per site. */
static cvene_status run_round_trip(run_state *s, int i, float *site, const block *bk) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_backend *be = s->ctx->be;
    const fused_call *get = &s->iv[i].link_out;
    const int B = s->B, U = get->n / B, R = s->iv[i].set.R, D = s->iv[i].set.D;
    const int64_t L = (int64_t)R * D, len = s->iv[i].rt_len;
    CVENE_TRY(run_fused(s, get, site, bk, s->iv[i].rt_dev));
    CVENE_TRY(be->ops->to_host(be, s->scratch, s->iv[i].rt_dev, sizeof(float) * (size_t)len));
    if (s->iv[i].store)
        CVENE_TRY(be->ops->to_host(be, s->iv[i].rt_src, s->iv[i].store, sizeof(float) * (size_t)s->iv[i].rt_src_len));
    for (int b = 0; b < B; b++) {
        const iv_dims *dm = &s->dims[i * B + b];
        int64_t shape[4] = {1, U, R, D};
        const float *es = s->iv[i].store ? s->iv[i].rt_src + (int64_t)b * U * L : NULL;
        int rc = r->fn(r->fn_user, s->scratch + (int64_t)b * U * L, es, shape, b, dm->n >= 0 ? dm->dims : NULL,
                       dm->n >= 0 ? dm->n : 0);
        if (rc != 0) return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
    }
    CVENE_TRY(be->ops->to_device(be, s->iv[i].rt_dev, s->scratch, sizeof(float) * (size_t)len));
    return run_fused(s, &s->iv[i].link_in, site, bk, s->iv[i].rt_dev);
}

/* A trained type on a device: its units gathered (link_out: (B, U, R, D) in rt_dev), its forward
 * with the gathered source (store), and back (link_in), all on the device. */
static cvene_status run_trained_dev(run_state *s, int i, float *site, const block *bk) {
    float *x = s->iv[i].rt_dev;
    CVENE_TRY(run_fused(s, &s->iv[i].link_out, site, bk, x));
    CVENE_TRY(tr_forward(s->iv[i].trained, x, x, s->iv[i].store ? s->iv[i].store : x, s->iv[i].trained_rows));
    return run_fused(s, &s->iv[i].link_in, site, bk, x);
}

/* A callback at unit t on a device: the rows of the examples listing this step to the host,
 * the callback on each with its slot's source, as apply_step does on the CPU, and back. */
static cvene_status run_step_round_trip(run_state *s, int i, float *site, const block *bk, int step) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_backend *be = s->ctx->be;
    const int T = s->iv[i].n_step_set, B = s->B, D = s->iv[i].set.D;
    if (step >= T || s->iv[i].step_set[step].n == 0) return CVENE_OK;
    const fused_call *get = &s->iv[i].step_set[step], *put = &s->iv[i].step_set[T + step];
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int U = iv_units_of(r, bl, bk->in->T);
    CVENE_TRY(run_fused(s, get, site, bk, s->iv[i].rt_dev));
    CVENE_TRY(be->ops->to_host(be, s->scratch, s->iv[i].rt_dev, sizeof(float) * (size_t)get->n * (size_t)D));
    if (s->iv[i].store)
        CVENE_TRY(be->ops->to_host(be, s->iv[i].rt_src, s->iv[i].store, sizeof(float) * (size_t)s->iv[i].rt_src_len));
    int64_t q = 0;
    for (int b = 0; b < B; b++) {
        const int k = iv_step_slot(bl, b, step);
        if (k < 0) continue;
        const iv_dims *dm = &s->dims[i * B + b];
        const int64_t slot = ((int64_t)b * U + k) * D;
        const float *y = s->iv[i].store ? s->iv[i].rt_src + slot : NULL;
        if (!y && r->source) y = r->source_len == D ? r->source : r->source + slot; /* constant source */
        int64_t shape[4] = {1, 1, 1, D};
        int rc = r->fn(r->fn_user, s->scratch + q * D, y, shape, b, dm->n >= 0 ? dm->dims : NULL, dm->n >= 0 ? dm->n : 0);
        if (rc != 0) return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
        q++;
    }
    CVENE_TRY(be->ops->to_device(be, s->iv[i].rt_dev, s->scratch, sizeof(float) * (size_t)get->n * (size_t)D));
    return run_fused(s, put, site, bk, s->iv[i].rt_dev);
}

/* A fused setter, with its link chain on a device (build_link). */
static cvene_status run_setter(run_state *s, int i, float *site, const block *bk) {
    const int lk = s->c->reps[i].link; /* dense index of the link key */
    const int linked = lk >= 0 && s->iv[i].link_out.on;
    const fused_call *out = &s->iv[i].link_out;
    const int64_t len = (int64_t)out->n * out->R * out->D;
    if (linked && s->link[lk].dev_len) {
        if (s->link[lk].dev_len != len)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "intervention %d shares intervention_link_key %d with an earlier one but selects a "
                              "different number of units", i, s->c->reps[i].r.link_key);
        CVENE_TRY(run_fused(s, &s->iv[i].link_in, site, bk, s->link[lk].dev));
    }
    CVENE_TRY(run_fused(s, &s->iv[i].set, site, bk, fused_source(s, i, s->iv[i].set.op)));
    if (!linked) return CVENE_OK;
    CVENE_TRY(run_fused(s, out, site, bk, s->link[lk].dev));
    s->link[lk].dev_len = len;
    return CVENE_OK;
}

/* ---- where a non-finite result comes from ----------------------------------
 * cvene_run checks its results (logits, collected values) for NaN and infinity, which costs a
 * read of what it returns. Only when one is found does it run the request again with
 * s->diagnose set: every site of the pass, and block_output / cell_output of every layer,
 * is scanned after its interventions, and the first non-finite value is reported with the
 * run, example, position and what acted there last. */
static const char *block_role(const run_state *s, const block *bk, char *buf, size_t n) {
    if (bk->role == ROLE_BASE) return "the base";
    if (bk->role == ROLE_ORIG) return "the clean base (output_original_output)";
    snprintf(buf, n, "source %d", bk->group);
    (void)s;
    return buf;
}

static cvene_status diagnose_site(run_state *s, cvene_component comp, int layer, int step, const cvene_tensor_view *t) {
    cvene_backend *be = s->ctx->be;
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    const float *x = t->data;
    if (t->device != CVENE_DEVICE_CPU) {
        if (n > s->diag_cap) {
            float *h = realloc(s->diag_host, n * sizeof(float));
            if (!h) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
            s->diag_host = h, s->diag_cap = n;
        }
        CVENE_TRY(be->ops->to_host(be, s->diag_host, t->data, n * sizeof(float)));
        x = s->diag_host;
    }
    const int64_t e = cvene_first_nonfinite(x, n);
    if (e < 0) return CVENE_OK;
    const int64_t rows = t->shape[0], per_row = (int64_t)n / rows, row = e / per_row;
    int k = 0;
    while (k + 1 < s->n_blocks && s->blocks[k + 1].row0 <= row) k++;
    const block *bk = &s->blocks[k];
    char rb[32], where[96];
    const char *who = block_role(s, bk, rb, sizeof rb);
    if (cvene_component_is_gru(comp))
        snprintf(where, sizeof where, "timestep %d", step);
    else if (t->ndim == 3) /* (rows, T, D) */
        snprintf(where, sizeof where, "position %lld", (long long)((e % per_row) / t->shape[2]));
    else
        snprintf(where, sizeof where, "element %lld", (long long)(e % per_row));
    char act[256];
    int i = -1; /* the block's last intervention at this site */
    for (int j = 0; j < bk->n_setters; j++) {
        const cvene_representation *r = &s->c->reps[bk->setters[j]].r;
        if (iv_physical(r->component) == comp && r->layer == layer) i = bk->setters[j];
    }
    if (i >= 0)
        snprintf(act, sizeof act, "after representations[%d] (%s) acted there", i,
                 cvene_intervention_type_name(s->c->reps[i].r.type));
    else
        snprintf(act, sizeof act, "computed by the forward itself (no intervention acts there; the values "
                 "feeding it overflowed)");
    return cvene_fail(s->ctx, CVENE_ERR_NUMERIC,
                      "non-finite value (%s) first appears at %s of layer %d, %s example %lld, %s: %s",
                      isnan(x[e]) ? "NaN" : "infinity", cvene_component_name(comp), layer, who,
                      (long long)(row - bk->row0), where, act);
}

/* A profiled request (cvene_request_set_profile) times each intervention's calls: the device
 * is synchronised before (so the forward's own work is not counted) and after (so queued
 * launches are). prof_begin returns the start, or 0 when not profiling. */
static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double prof_begin(run_state *s) {
    if (!s->profile) return 0;
    cvene_backend *be = s->ctx->be;
    return be->ops->sync(be) == CVENE_OK ? mono_now() : 0;
}
static void prof_end(run_state *s, int i, double t0) {
    if (!s->profile || t0 == 0 || !s->res->iv_seconds) return;
    cvene_backend *be = s->ctx->be;
    (void)be->ops->sync(be);
    s->res->iv_seconds[i] += mono_now() - t0;
}

int iv_on_site(void *user, cvene_component comp, int layer, cvene_tensor_view *t) {
    run_state *s = user;
    const cvene_config *c = s->c;
    float *site = t->data;
    const int gru = cvene_component_is_gru(comp);
    const int step = gru ? s->step[comp][layer] : 0; /* this call's timestep */
    for (int k = 0; k < s->n_blocks; k++) {
        const block *bk = &s->blocks[k];
        for (int j = 0; j < bk->n_setters; j++) {
            int i = bk->setters[j];
            if (iv_physical(c->reps[i].r.component) != comp || c->reps[i].r.layer != layer) continue;
            const double t0 = prof_begin(s);
            if (gru && s->iv[i].rt_dev)
                s->err = run_step_round_trip(s, i, site, bk, step);
            else if (gru && s->iv[i].step_set)
                s->err = run_step(s, s->iv[i].step_set, s->iv[i].n_step_set, step, site, bk,
                                  fused_source(s, i, s->iv[i].step_set[0].op));
            else
                s->err = gru ? apply_step(s, i, site, bk, step)
                       : s->iv[i].set.on ? run_setter(s, i, site, bk)
                       : s->iv[i].trained && s->iv[i].rt_dev ? run_trained_dev(s, i, site, bk)
                       : s->iv[i].rt_dev ? run_round_trip(s, i, site, bk)
                                      : apply(s, i, site, bk);
            prof_end(s, i, t0);
            if (s->err != CVENE_OK) {
                snprintf(s->errmsg, sizeof s->errmsg, "%s", s->ctx->err);
                return 1;
            }
        }
        for (int j = 0; j < bk->n_getters; j++) {
            int i = bk->getters[j];
            const cvene_representation *r = &c->reps[i].r;
            if (iv_physical(iv_getter_component(r, s->m)) != comp || r->layer != layer) continue;
            const double t0 = prof_begin(s);
            s->err = gru ? run_step(s, s->iv[i].step_get, s->iv[i].n_step_get, step, site, bk, s->iv[i].store)
                         : run_fused(s, &s->iv[i].get, site, bk, s->iv[i].store);
            prof_end(s, i, t0);
            if (s->err != CVENE_OK) {
                snprintf(s->errmsg, sizeof s->errmsg, "%s", s->ctx->err);
                return 1;
            }
        }
    }
    if (s->diagnose && (s->err = diagnose_site(s, comp, layer, step, t)) != CVENE_OK) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->ctx->err);
        return 1;
    }
    if (gru) s->step[comp][layer]++;
    return s->last_site >= 0 && iv_site_order(comp, layer, step) >= s->last_site ? CVENE_SITE_STOP : 0;
}
