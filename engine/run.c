/* Running a request (cvene_run): check it against the model, prepare what each intervention
 * needs (source stores, constant sources, collect buffers, noise: engine/run_internal.h's
 * iv_slot), build the fused index arrays (engine/index.c), run the passes the plan makes
 * (engine/plan.c, applying at sites in engine/apply.c) and return the result. Sources, constant
 * sources and collect buffers live on the device; collected values come back to the host at
 * the end of the run. A result holding a NaN or an infinity is an error naming where it came
 * from (run_once again with every site scanned). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/numpy_random.h"
#include "engine/run_internal.h"
#include "engine/trained.h"
#include "kernels/tensor.h"

/* ---- validation against the model --------------------------------------- */

static cvene_status check_locs(run_state *s, int i, int side, int T) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *l = &s->locs[2 * i + side];
    const char *sn = side ? "base" : "source";
    cvene_model_info mi = cvene_model_get_info(s->m);
    geom g = iv_stream_geom(&mi, r->component, r->unit, T, l->present);
    if (!l->present) return CVENE_OK;
    const char *what = r->unit == CVENE_UNIT_T ? "timestep"
                     : r->unit == CVENE_UNIT_POS && r->component != CVENE_ATTENTION_WEIGHT ? "position" : "head";
    for (int k = 0; k < s->B * l->U; k++)
        if (l->idx[k] >= g.A)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: intervention %d (%s, layer %d), example %d: %s %s %d is out of range "
                              "[0, %d)", i, cvene_component_name(r->component), r->layer, k / l->U, sn, what,
                              l->idx[k], g.A);
    for (int k = 0; r->unit == CVENE_UNIT_T && k < s->B * l->U; k++) /* a timestep is a slot: once */
        for (int q = k + 1; q < (k / l->U + 1) * l->U; q++)
            if (l->idx[q] == l->idx[k])
                return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                                  "unit_locations: intervention %d (%s, layer %d), example %d: %s timestep %d is "
                                  "listed twice", i, cvene_component_name(r->component), r->layer, k / l->U, sn,
                                  l->idx[k]);
    for (int k = 0; l->pos && k < s->B * l->U2; k++)
        if (l->pos[k] >= T)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: intervention %d (%s, layer %d), example %d: %s position %d is out of "
                              "range [0, %d)", i, cvene_component_name(r->component), r->layer, k / l->U2, sn,
                              l->pos[k], T);
    return CVENE_OK;
}

static cvene_status check_input(cvene_ctx *ctx, const iv_input *in, int B, const char *what, int serial) {
    if (in->B != B && (in->B != 1 || serial))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "%s has batch size %d but the base has %d (a source needs the base's batch size%s)", what,
                          in->B, B, serial ? "" : ", or 1 to be shared by every base example");
    return CVENE_OK;
}

/* Token ids, mask and position ids of one input against the model, named as the request names
 * them (base.input_ids[b][t], sources[g]...): checked before anything is packed into a batch,
 * whose row numbers would mean nothing to the caller. */
static cvene_status check_tokens(cvene_model *m, const iv_input *in, const char *what) {
    const cvene_model_info mi = cvene_model_get_info(m);
    const int pos_hi = model_position_limit(m);
    for (int b = 0; b < in->B; b++)
        for (int t = 0; t < in->T; t++) {
            const size_t q = (size_t)b * in->T + t;
            if (in->ids[q] < 0 || in->ids[q] >= mi.n_token_ids)
                return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "%s.input_ids[%d][%d] = %d is outside the vocabulary "
                                  "[0, %d)", what, b, t, in->ids[q], mi.n_token_ids);
            if (in->mask && in->mask[q] != 0 && in->mask[q] != 1)
                return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "%s.attention_mask[%d][%d] = %d must be 0 or 1", what,
                                  b, t, in->mask[q]);
            if (in->pos && (in->pos[q] < 0 || in->pos[q] >= pos_hi))
                return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "%s.position_ids[%d][%d] = %d is outside [0, %d)%s",
                                  what, b, t, in->pos[q], pos_hi,
                                  mi.arch == CVENE_ARCH_GPT_NEOX ? " (rotary angles are exact in f32 up to 2^24)"
                                                                 : " (the model's position table)");
        }
    if (in->T > mi.n_positions && mi.arch == CVENE_ARCH_GPT2) /* NeoX (rotary) and the GRU have no such limit */
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "%s has %d tokens; the model takes at most %d (n_positions)",
                          what, in->T, mi.n_positions);
    return CVENE_OK;
}


/* ---- the run ------------------------------------------------------------- */

static void state_free(run_state *s, int n) {
    cvene_backend *be = s->ctx->be;
    /* device buffers (cudaFree waits for queued kernels that still use them) */
    for (int i = 0; s->iv && i < n; i++) {
        iv_slot *v = &s->iv[i];
        if (v->store) be->ops->free(be, v->store);
        if (v->csrc) be->ops->free(be, v->csrc);
        if (v->coll && be->device != CVENE_DEVICE_CPU) be->ops->free(be, v->coll);
        if (v->rt_dev) be->ops->free(be, v->rt_dev);
        free(v->rt_src), free(v->step_set), free(v->step_get), free(v->noise);
    }
    for (int l = 0; s->link && l < s->n_links; l++) {
        if (s->link[l].dev) be->ops->free(be, s->link[l].dev);
        free(s->link[l].hot);
    }
    if (s->idx64) be->ops->free(be, s->idx64);
    if (s->idx32) be->ops->free(be, s->idx32);
    free(s->iv), free(s->link), free(s->scratch);
    if (s->locs) iv_locs_free(s->locs, 2 * n);
    if (s->dims) iv_dims_free(s->dims, n * s->B);
    free(s->locs), free(s->dims);
}

void cvene_result_free(cvene_result *res) {
    if (!res) return;
    for (int k = 0; res->collected_dev && k < res->n_collected; k++)
        if (res->collected_dev[k]) res->be->ops->free(res->be, res->collected_dev[k]);
    free(res->collected_dev);
    for (int k = 0; k < res->n_collected; k++) free(res->collected[k].data);
    free(res->collected), free(res->logits_mem);
    free(res->iv_seconds);
    free(res);
}

/* CUDA: bring the collected values back into the result (host memory). */
cvene_status iv_fetch_collected(run_state *s) {
    cvene_backend *be = s->ctx->be;
    if (be->device == CVENE_DEVICE_CPU) return CVENE_OK;
    cvene_result *res = s->res;
    if (res->n_collected && !res->collected_dev) {
        if (!(res->collected_dev = calloc((size_t)res->n_collected, sizeof(float *))))
            return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        res->be = be;
    }
    for (int i = 0; i < s->c->n; i++) {
        if (!s->iv[i].coll) continue;
        const cvene_tensor_view *t = &res->collected[s->iv[i].collect_slot];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        CVENE_TRY(be->ops->to_host(be, t->data, s->iv[i].coll, sizeof(float) * n));
        /* the device copy stays with the result (cvene_result_collected_device) */
        res->collected_dev[s->iv[i].collect_slot] = s->iv[i].coll;
        s->iv[i].coll = NULL;
    }
    return CVENE_OK;
}

/* A trained intervention's compute state for this request: its units are U of gb's R x D floats
 * (one row each: unit pos or h on a (B, T, D) stream), flattened to one vector per example for
 * the types pyvene flattens. Subspaces are not applied to trained types yet. */
static cvene_status trained_state(run_state *s, int i, const geom *gb, int U) {
    const cvene_representation *r = &s->c->reps[i].r;
    if (gb->R != 1)
        return cvene_fail(s->ctx, CVENE_ERR_UNSUPPORTED, "representations[%d]: a trained %s on %s with unit \"%s\" "
                          "acts on units of %d rows; cvene_run applies trained types to units of one row (unit pos "
                          "on a (B, T, D) stream, or unit h) for now", i, cvene_intervention_type_name(r->type),
                          cvene_component_name(r->component), cvene_unit_name(r->unit), gb->R);
    for (int b = 0; b < s->B; b++)
        if (s->dims[i * s->B + b].n >= 0)
            return cvene_fail(s->ctx, CVENE_ERR_UNSUPPORTED, "representations[%d]: subspaces on a trained %s are not "
                              "supported by cvene_run yet", i, cvene_intervention_type_name(r->type));
    const int flat = tr_type_flattened(r->type);
    if (flat && U != r->max_number_of_units)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: %s rotates an example's %d units as one "
                          "vector (max_number_of_units), but the request selects %d", i,
                          cvene_intervention_type_name(r->type), r->max_number_of_units, U);
    s->iv[i].trained_rows = flat ? s->B : s->B * U;
    return iv_trained_state(s->c, i, s->ctx, flat ? U * gb->D : gb->D, s->iv[i].trained_rows, &s->iv[i].trained);
}

static cvene_status prepare(run_state *s, const iv_input **src) {
    const cvene_config *c = s->c;
    cvene_ctx *ctx = s->ctx;
    int n = c->n, B = s->B;
    cvene_model_info mi = cvene_model_get_info(s->m);
    int T = 0;
    s->res->collected = calloc((size_t)n, sizeof(cvene_tensor_view));
    s->n_links = c->n_links;
    s->link = calloc((size_t)s->n_links + 1, sizeof(iv_link));
    if (!s->res->collected || !s->link) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    size_t scratch = 0;
    for (int i = 0; i < n; i++) {
        const cvene_representation *r = &c->reps[i].r;
        int g = iv_group(c, i);
        const char *cn = cvene_component_name(r->component);
        s->iv[i].collect_slot = -1;
        if (ctx->be->device != CVENE_DEVICE_CPU && !iv_fused_on(s, i))
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "representations[%d]: %s in intervention_link_key chain %d is not supported on the "
                              "%s backend yet (a chain with a CollectIntervention or a LambdaIntervention runs on "
                              "the CPU backend)", i, cvene_intervention_type_name(r->type), r->link_key,
                              ctx->be->ops->name);
        if (r->layer >= mi.n_layer)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].layer = %d is out of range: the model has %d layers", i, r->layer,
                              mi.n_layer);
        if (cvene_component_is_gru(r->component) != (mi.arch == CVENE_ARCH_GRU))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              mi.arch == CVENE_ARCH_GRU
                                  ? "representations[%d].component = %s: the model is a GRU (%s), which has no such "
                                    "stream (GRU components: cell_input, cell_output, {reset,update,new}_gate_{input,"
                                    "output}, x2h_output, h2h_output, {reset,update,new}_{x2h,h2h}_output)"
                                  : "representations[%d].component = %s is a GRU component but the model is a "
                                    "transformer (%s)",
                              i, cn, s->m->vt->name);
        if ((iv_type_get(r->type)->flags & IV_TRAINABLE) && !iv_trained_loaded(c, i))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: %s is trainable and has no weights: "
                              "load them with cvene_config_load_weights (cvene run --weights DIR)", i,
                              cvene_intervention_type_name(r->type));
        if ((iv_type_get(r->type)->flags & IV_TRAINABLE) && (r->unit == CVENE_UNIT_T || r->link_key >= 0))
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "representations[%d]: a trained %s %s is not supported yet",
                              i, cvene_intervention_type_name(r->type),
                              r->unit == CVENE_UNIT_T ? "at unit t (GRU timesteps)" : "in an intervention_link_key chain");
        if (r->type == CVENE_IV_CALLBACK && !r->fn)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d]: callback \"%s\" is not bound (cvene_config_bind_callback)", i,
                              c->reps[i].callback_name ? c->reps[i].callback_name : "?");
        if (r->type == CVENE_IV_COLLECT && src[g])
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d] is a CollectIntervention, which reads the base run: give its "
                              "group (%d) no source", i, g);
        const iv_locs *bl = &s->locs[2 * i + 1], *sl = &s->locs[2 * i];
        T = s->iv[i].target_T;
        CVENE_TRY(check_locs(s, i, 1, T));
        geom gb = iv_stream_geom(&mi, r->component, r->unit, T, bl->present);
        int U = iv_units_of(r, bl, T);
        size_t len = (size_t)B * U * gb.R * gb.D;
        if (len > scratch) scratch = len;
        for (int b = 0; b < B; b++) {
            const iv_dims *d = &s->dims[i * B + b];
            /* Collect picks dims of the flattened (U x D) units; at unit t, of each timestep */
            int lim = r->type == CVENE_IV_COLLECT && d->n >= 0 && r->unit != CVENE_UNIT_T ? U * gb.D : gb.D;
            for (int k = 0; k < d->n; k++)
                if (d->dims[k] >= lim)
                    return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                      "subspaces: intervention %d (%s), example %d: dimension %d is out of range [0, %d)",
                                      i, cn, b, d->dims[k], lim);
        }
        if (iv_takes_source(r) && src[g] && !r->source) {
            CVENE_TRY(check_locs(s, i, 0, src[g]->T));
            geom gs = iv_stream_geom(&mi, iv_getter_component(r, s->m), r->unit, src[g]->T, sl->present);
            int Us = iv_units_of(r, sl, src[g]->T);
            if (Us != U || (sl->pos && sl->U != bl->U) || gs.R * gs.D != gb.R * gb.D) {
                /* why the sizes differ, in the user's terms */
                char hint[200] = "";
                if (gs.R * gs.D != gb.R * gb.D && (r->unit == CVENE_UNIT_H || !sl->present || !bl->present))
                    snprintf(hint, sizeof hint, " (%s spans every position, so the source needs the base's length: "
                             "the source has %d tokens, the base %d)",
                             r->unit == CVENE_UNIT_H ? "a head (unit h)" : "a side without unit_locations",
                             src[g]->T, T);
                else if (Us != U)
                    snprintf(hint, sizeof hint, " (list as many source as base locations per example)");
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "intervention %d (%s, layer %d): the source selects %d %s(s) of %d values but the "
                                  "base %d %s(s) of %d values; they must match%s", i, cn, r->layer, Us,
                                  r->unit == CVENE_UNIT_T ? "timestep" : "unit", gs.R * gs.D, U,
                                  r->unit == CVENE_UNIT_T ? "timestep" : "unit", gb.R * gb.D, hint);
            }
            CVENE_TRY(iv_dev_alloc(s, (void **)&s->iv[i].store, sizeof(float) * len, "a source store"));
            s->iv[i].store_len = (int64_t)len;
        }
        if (iv_type_get(r->type)->flags & IV_TRAINABLE) CVENE_TRY(trained_state(s, i, &gb, U));
        if (r->source && r->source_len != gb.D && (size_t)r->source_len != len)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].source_representation has %lld values; %s needs %d (one unit) or %zu",
                              i, (long long)r->source_len, cn, gb.D, len);
        if (r->type == CVENE_IV_COLLECT) {
            const iv_dims *d0 = &s->dims[i * B];
            cvene_tensor_view *t = &s->res->collected[s->res->n_collected];
            t->dtype = CVENE_F32;
            t->device = CVENE_DEVICE_CPU;
            if (d0->n >= 0 && r->unit == CVENE_UNIT_T) { /* (B, U, dims) */
                for (int b = 1; b < B; b++)
                    if (s->dims[i * B + b].n != d0->n)
                        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                                          "intervention %d: Collect needs the same number of subspace dims in every "
                                          "example", i);
                t->ndim = 3, t->shape[0] = B, t->shape[1] = U, t->shape[2] = d0->n;
                len = (size_t)B * U * (size_t)d0->n;
            } else if (d0->n >= 0) {
                if (gb.R != 1 || bl->pos || d0->n % U)
                    return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                                      "intervention %d: Collect with subspaces needs unit pos on a (B, T, D) stream "
                                      "and a number of dims divisible by the %d units", i, U);
                for (int b = 1; b < B; b++)
                    if (s->dims[i * B + b].n != d0->n)
                        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                                          "intervention %d: Collect needs the same number of subspace dims in every "
                                          "example", i);
                t->ndim = 3, t->shape[0] = B, t->shape[1] = U, t->shape[2] = d0->n / U;
            } else if (bl->pos) {
                t->ndim = 4, t->shape[0] = B, t->shape[1] = bl->U, t->shape[2] = bl->U2, t->shape[3] = gb.D;
            } else if (gb.R == 1) {
                t->ndim = 3, t->shape[0] = B, t->shape[1] = U, t->shape[2] = gb.D;
            } else {
                t->ndim = 4, t->shape[0] = B, t->shape[1] = U, t->shape[2] = gb.R, t->shape[3] = gb.D;
            }
            if (!(t->data = malloc(sizeof(float) * len))) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            s->iv[i].collect_slot = s->res->n_collected++;
            if (ctx->be->device == CVENE_DEVICE_CPU) s->iv[i].coll = t->data; /* the device is the host */
            else CVENE_TRY(iv_dev_alloc(s, (void **)&s->iv[i].coll, sizeof(float) * len, "a Collect result"));
        }
        if (r->source && iv_fused_type(r) && iv_needs_source(r)) {
            size_t nb = sizeof(float) * (size_t)r->source_len;
            CVENE_TRY(iv_dev_alloc(s, (void **)&s->iv[i].csrc, nb, "a constant source"));
            CVENE_TRY(ctx->be->ops->to_device(ctx->be, s->iv[i].csrc, r->source, nb));
        }
        if (r->type == CVENE_IV_NOISE) {
            if (!(s->iv[i].noise = malloc(sizeof(double) * (size_t)U * gb.D)))
                return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            cvene_np_randn(r->noise_seed, s->iv[i].noise, (size_t)U * gb.D);
            if (iv_fused_on(s, i)) { /* the device adds (float)(noise * level): see iv_fused_on */
                const double level = (double)(float)r->noise_level;
                const size_t nn = (size_t)U * gb.D;
                float *h = malloc(sizeof(float) * nn);
                if (!h) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
                for (size_t q = 0; q < nn; q++) h[q] = (float)(s->iv[i].noise[q] * level);
                cvene_status st = iv_dev_alloc(s, (void **)&s->iv[i].csrc, sizeof(float) * nn, "a noise source");
                if (st == CVENE_OK) st = ctx->be->ops->to_device(ctx->be, s->iv[i].csrc, h, sizeof(float) * nn);
                free(h);
                CVENE_TRY(st);
            }
        }
    }
    CVENE_TRY(iv_build_fused(s, src));
    for (int l = 0; l < s->n_links; l++)
        if (s->link[l].dev_cap > 0)
            CVENE_TRY(iv_dev_alloc(s, (void **)&s->link[l].dev, sizeof(float) * (size_t)s->link[l].dev_cap, "a link chain"));
    for (int i = 0; i < n; i++) { /* device callbacks and trained types: their units' buffers */
        const int trained = s->iv[i].trained != NULL;
        if ((c->reps[i].r.type != CVENE_IV_CALLBACK && !trained) || !iv_fused_on(s, i)) continue;
        const int64_t len = s->iv[i].rt_len, slen = s->iv[i].rt_src_len;
        CVENE_TRY(iv_dev_alloc(s, (void **)&s->iv[i].rt_dev, sizeof(float) * (size_t)(len ? len : 1), "a callback's units"));
        if (!trained && s->iv[i].store && !(s->iv[i].rt_src = malloc(sizeof(float) * (size_t)(slen ? slen : 1))))
            return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    s->scratch = malloc(sizeof(float) * (scratch ? scratch : 1));
    s->scratch_len = scratch;
    if (!s->scratch) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    return CVENE_OK;
}

cvene_status iv_state_open(run_state *s, cvene_model *m, const cvene_config *c, const cvene_request *r,
                           const cJSON *locations, int target_T, int diagnose, const iv_input ***src_out) {
    cvene_ctx *ctx = m->ctx;
    memset(s, 0, sizeof *s);
    *src_out = NULL;
    if (!r->base.present) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "the request has no base input");
    const iv_input *base = &r->base;
    int G = c->n_groups, B = base->B;
    if (r->n_sources > 1 && r->n_sources != G)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "the request has %d sources but the config has %d source group%s (one source per group, "
                          "or one source shared by all)", r->n_sources, G, G == 1 ? "" : "s");
    const iv_input **src = calloc((size_t)G + 1, sizeof(iv_input *));
    if (!src) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    *src_out = src;
    cvene_status st = check_tokens(m, base, "base");
    const int gru = cvene_model_get_info(m).arch == CVENE_ARCH_GRU;
    for (int g = 0; g < G && st == CVENE_OK; g++) {
        const int k = r->n_sources == 1 ? 0 : g; /* the request's own index, for messages */
        const iv_input *in = k < r->n_sources ? &r->sources[k] : NULL;
        src[g] = in && in->present ? in : NULL;
        char what[32];
        snprintf(what, sizeof what, "sources[%d]", k);
        if (src[g]) st = check_input(ctx, src[g], B, what, c->mode == CVENE_MODE_SERIAL);
        if (src[g] && st == CVENE_OK) st = check_tokens(m, src[g], what);
        /* a GRU without position ids adds no position embedding, which 0..T-1 cannot stand for */
        if (src[g] && st == CVENE_OK && gru && !src[g]->pos != !base->pos)
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                            "%s %s position_ids but the base %s: a GRU adds its position embedding only when they "
                            "are given, so give them to every input or to none", what, src[g]->pos ? "has" : "has no",
                            base->pos ? "has" : "has none");
    }
    s->ctx = ctx, s->m = m, s->c = c, s->B = B, s->in_base_T = base->T, s->diagnose = diagnose;
    s->profile = r->profile;
    cvene_result *res = calloc(1, sizeof *res);
    s->res = res;
    if (res && r->profile && c->n > 0) {
        res->n_iv = c->n;
        if (!(res->iv_seconds = calloc((size_t)c->n, sizeof(double))))
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    s->locs = calloc(2 * (size_t)c->n, sizeof(iv_locs));
    s->dims = calloc((size_t)c->n * B, sizeof(iv_dims));
    if (st == CVENE_OK && (!res || !s->locs || !s->dims)) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = iv_resolve_locations(ctx, c, locations, B, s->locs);
    if (st == CVENE_OK) st = iv_resolve_subspaces(ctx, c, r->subspaces, B, s->dims);
    else if (s->dims) for (int k = 0; k < c->n * B; k++) s->dims[k] = (iv_dims){NULL, -1};
    for (int i = 0; st == CVENE_OK && i < c->n; i++) { /* a source of batch 1 serves every example */
        const iv_input *in = src[iv_group(c, i)];
        if (in && in->B == 1 && B > 1) s->locs[2 * i].bcast = 1;
    }
    if (st == CVENE_OK && c->mode == CVENE_MODE_SERIAL)
        for (int i = 0; i < c->n && st == CVENE_OK; i++)
            if (src[iv_group(c, i)] && iv_needs_source(&c->reps[i].r) && !s->locs[2 * i + 1].present && locations)
                st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                "unit_locations: serial mode needs an entry for group %d (\"source_%d->%s\")",
                                iv_group(c, i), iv_group(c, i), iv_group(c, i) == G - 1 ? "base" : "source_N");
    if (st == CVENE_OK && !(s->iv = calloc((size_t)(c->n > 0 ? c->n : 1), sizeof(iv_slot))))
        st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; st == CVENE_OK && i < c->n; i++) {
        /* serial: group g's setters act on the next source present, else the base */
        s->iv[i].target_T = target_T > 0 ? target_T : base->T;
        for (int g = iv_group(c, i) + 1; c->mode == CVENE_MODE_SERIAL && g < G; g++)
            if (src[g]) {
                s->iv[i].target_T = src[g]->T;
                break;
            }
    }
    if (st == CVENE_OK) st = prepare(s, src);
    if (res) res->B = B, res->T = base->T, res->V = cvene_model_get_info(m).vocab_size;
    return st;
}

void iv_state_close(run_state *s, const iv_input **src) {
    if (s->c) state_free(s, s->c->n);
    free(s->diag_host);
    free((void *)src);
    s->diag_host = NULL;
}

static cvene_status run_once(cvene_model *m, const cvene_config *c, const cvene_request *r, int diagnose,
                             cvene_result **out) {
    run_state s;
    const iv_input **src = NULL;
    cvene_status st = iv_state_open(&s, m, c, r, r->locations, -1, diagnose, &src);
    if (st == CVENE_OK)
        st = c->mode == CVENE_MODE_SERIAL ? iv_plan_serial(&s, src, &r->base, r->output_original)
                                          : iv_plan_parallel(&s, src, &r->base, r->output_original);
    if (st == CVENE_OK) st = iv_fetch_collected(&s);
    cvene_result *res = s.res;
    iv_state_close(&s, src);
    if (st != CVENE_OK) {
        cvene_result_free(res);
        return st;
    }
    *out = res;
    return CVENE_OK;
}

/* The first non-finite value of a result: "logits[b][t][v]" into where, or 0 when all are finite. */
static int result_nonfinite(const cvene_result *res, char *where, size_t n) {
    const size_t nl = (size_t)res->B * res->T * res->V;
    const float *arr[2] = {res->logits, res->orig_logits};
    const char *names[2] = {"logits", "original_logits"};
    for (int k = 0; k < 2; k++) {
        const int64_t e = arr[k] ? cvene_first_nonfinite(arr[k], nl) : -1;
        if (e >= 0) {
            snprintf(where, n, "%s[%lld][%lld][%lld]", names[k], (long long)(e / ((int64_t)res->T * res->V)),
                     (long long)(e / res->V % res->T), (long long)(e % res->V));
            return 1;
        }
    }
    for (int k = 0; k < res->n_collected; k++) {
        const cvene_tensor_view *t = &res->collected[k];
        const int64_t e = cvene_first_nonfinite(t->data, (size_t)cvene_tensor_numel(t));
        if (e >= 0) {
            snprintf(where, n, "collected[%d] (element %lld)", k, (long long)e);
            return 1;
        }
    }
    return 0;
}

cvene_status cvene_run(cvene_model *m, const cvene_config *c, const cvene_request *r, cvene_result **out) {
    if (!out) return CVENE_ERR_INVALID_ARG;
    *out = NULL;
    if (!m || !c || !r) return CVENE_ERR_INVALID_ARG;
    cvene_result *res = NULL;
    CVENE_TRY(run_once(m, c, r, 0, &res));
    char where[96];
    if (!result_nonfinite(res, where, sizeof where)) {
        *out = res;
        return CVENE_OK;
    }
    /* rare: run again, scanning every site, to say where it came from */
    cvene_result_free(res);
    res = NULL;
    cvene_status st = run_once(m, c, r, 1, &res);
    cvene_result_free(res);
    if (st == CVENE_ERR_NUMERIC) return st;
    if (st != CVENE_OK) return st;
    return cvene_fail(m->ctx, CVENE_ERR_NUMERIC, "the result %s is not finite (NaN or infinity), and no site "
                      "of the forward holds a non-finite value: it appeared in the output head", where);
}

const float *cvene_result_logits(const cvene_result *res, int *B, int *T, int *V) {
    if (B) *B = res->B;
    if (T) *T = res->T;
    if (V) *V = res->V;
    return res->logits;
}
const float *cvene_result_original_logits(const cvene_result *res) { return res->orig_logits; }
int cvene_result_n_collected(const cvene_result *res) { return res->n_collected; }
cvene_tensor_view cvene_result_collected(const cvene_result *res, int k) {
    cvene_tensor_view none;
    memset(&none, 0, sizeof none);
    return k >= 0 && k < res->n_collected ? res->collected[k] : none;
}
cvene_tensor_view cvene_result_collected_device(const cvene_result *res, int k) {
    cvene_tensor_view v = cvene_result_collected(res, k);
    if (v.data && res->collected_dev && res->collected_dev[k]) { /* CUDA; on the CPU the host copy is the device's */
        v.data = res->collected_dev[k];
        v.device = res->be->device;
    }
    return v;
}
int cvene_result_n_passes(const cvene_result *res) { return res->n_passes; }
double cvene_result_intervention_seconds(const cvene_result *res, int k) {
    return res && res->iv_seconds && k >= 0 && k < res->n_iv ? res->iv_seconds[k] : -1.0;
}
