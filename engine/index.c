/* Index arrays of the fused path, built once per request: every source gather, and every
 * Vanilla / Addition / Subtraction / Zero / Collect / Skip intervention without a link key, is
 * one iv_units op (kernels/backend.h) at its site, on the backend's device; at unit t one per
 * timestep (the examples that list that step, each with its slot's source). The arrays (unit
 * offsets, subspace dims) go up in one buffer per element type; offsets are relative to the
 * block's first row, so one set serves whichever rows of the pass the block lands on. */
#include <stdlib.h>
#include <string.h>

#include "engine/run_internal.h"

/* Whether intervention i runs as fused iv_units calls on this backend: the fused types
 * everywhere; on a device backend also
 *  - a callback outside link keys, as a host round trip (run_round_trip, run_step_round_trip);
 *  - Noise, as an Addition of the f32 values (float)(noise * level) (the CPU keeps pyvene's
 *    double-precision sum x + noise * level, exact; on the device the sum is rounded once
 *    more, a difference of at most one f32 ulp of each touched value);
 *  - a link key whose every intervention is of such a type other than Collect: the chain's
 *    last result lives in a device buffer (iv_link.dev), written after each linked setter
 *    and scattered over the units before the next one, as the host path does with iv_link.hot. */
int iv_fused_on(const run_state *s, int i) {
    const cvene_representation *r = &s->c->reps[i].r;
    const int dev = s->ctx->be->device != CVENE_DEVICE_CPU;
    if (r->type == CVENE_IV_CALLBACK) return dev && r->link_key < 0; /* a host round trip */
    if (iv_type_get(r->type)->flags & IV_TRAINABLE) return dev; /* its own ops on the gathered units */
    if (r->link_key < 0) return iv_fused_type(r) || (dev && r->type == CVENE_IV_NOISE);
    if (!dev) return 0;
    for (int j = 0; j < s->c->n; j++) {
        const cvene_representation *q = &s->c->reps[j].r;
        if (q->link_key == r->link_key && ((!iv_fusable_kind(q) && q->type != CVENE_IV_NOISE) || q->type == CVENE_IV_COLLECT))
            return 0;
    }
    return 1;
}

/* ---- fused calls: index arrays built once per request ------------------- */

cvene_status iv_dev_alloc(run_state *s, void **p, size_t nbytes, const char *what) {
    cvene_backend *be = s->ctx->be;
    cvene_status st = be->ops->alloc(be, p, nbytes ? nbytes : 4);
    if (st != CVENE_OK) {
        *p = NULL;
        return cvene_fail(s->ctx, st, "allocating %zu bytes for %s on the %s backend failed", nbytes, what,
                          be->ops->name);
    }
    return CVENE_OK;
}

/* Reserve n entries at the end of a pool array; returns their offset, or -1 (out of memory). */
static int64_t take64(idx_pool *p, size_t n) {
    if (p->n64 + n > p->cap64) {
        size_t cap = 2 * (p->n64 + n) + 64;
        int64_t *v = realloc(p->v64, sizeof(int64_t) * cap);
        if (!v) return -1;
        p->v64 = v, p->cap64 = cap;
    }
    p->n64 += n;
    return (int64_t)(p->n64 - n);
}
static int64_t take32(idx_pool *p, size_t n) {
    if (p->n32 + n > p->cap32) {
        size_t cap = 2 * (p->n32 + n) + 64;
        int32_t *v = realloc(p->v32, sizeof(int32_t) * cap);
        if (!v) return -1;
        p->v32 = v, p->cap32 = cap;
    }
    p->n32 += n;
    return (int64_t)(p->n32 - n);
}

/* x_off, src_off and dims_off of f's n units, reserved together. */
static int take_units(idx_pool *p, fused_call *f) {
    f->x_off = take64(p, (size_t)f->n);
    f->src_off = take64(p, (size_t)f->n);
    f->dims_off = take64(p, (size_t)f->n);
    return f->x_off >= 0 && f->src_off >= 0 && f->dims_off >= 0;
}

/* Does a later unit of example b write the same place? pyvene's scatter keeps the last
 * write, so the earlier one is dropped (the fused op needs units that do not overlap;
 * distinct units of one stream never overlap partially). */
static int overwritten_later(const iv_locs *l, const geom *g, cvene_component comp, int b, int u, int U) {
    int64_t o = iv_unit_offset(l, g, comp, b, u);
    for (int v = u + 1; v < U; v++)
        if (iv_unit_offset(l, g, comp, b, v) == o) return 1;
    return 0;
}

/* Collect with subspaces: pyvene picks dims of the flattened (U x D) units, so each picked
 * float is a unit of one row of one float, written compactly (B, U, n / U). */
static int build_collect_dims(run_state *s, int i, const geom *g, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *bl = &s->locs[2 * i + 1];
    fused_call *f = &s->iv[i].set;
    int B = s->B, nd = s->dims[i * B].n;
    f->n = B * nd, f->R = 1, f->D = 1, f->x_rs = 1, f->src_rs = 1, f->dims_n = -1;
    if (!take_units(p, f)) return 0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < nd; k++) {
            int flat = s->dims[i * B + b].dims[k], u = flat / g->D, d = flat % g->D;
            int64_t q = (int64_t)b * nd + k; /* = b * U * (nd / U) + k */
            p->v64[f->x_off + q] = (int64_t)b * g->E + iv_unit_offset(bl, g, r->component, b, u) + d;
            p->v64[f->src_off + q] = q;
            p->v64[f->dims_off + q] = 0;
        }
    return 1;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Each example's subspace dims into the pool, sorted ascending without repeats (a dim
 * listed twice is still one value; the order of a subspace does not change what an
 * interchange, addition, subtraction or zeroing does, and ascending dims let neighbouring
 * threads share memory sectors); off[b] = its offset, or -1 for all dims. */
static int take_dims(run_state *s, int i, int D, idx_pool *p, int64_t *off, int *cnt) {
    for (int b = 0; b < s->B; b++) {
        const iv_dims *dm = &s->dims[i * s->B + b];
        off[b] = -1, cnt[b] = -1;
        if (dm->n < 0) continue;
        if ((off[b] = take32(p, (size_t)dm->n)) < 0) return 0;
        int32_t *v = p->v32 + off[b];
        int m = 0;
        for (int k = 0; k < dm->n; k++)
            if (dm->dims[k] < D) v[m++] = dm->dims[k];
        qsort(v, (size_t)m, sizeof *v, cmp_i32);
        int u = 0;
        for (int k = 0; k < m; k++)
            if (u == 0 || v[k] != v[u - 1]) v[u++] = v[k];
        cnt[b] = u;
    }
    return 1;
}

/* When every example's subspace is one run [first, first + m) of the same length m (pyvene's
 * usual subspace, e.g. dims 0..k-1), the setter is a plain whole-row call on m floats that
 * start `first` floats in: the kernel then streams rows (wide loads) instead of walking a
 * dims list. Returns m and fills first[b], or -1. */
static int contiguous_dims(const idx_pool *p, const int64_t *off, const int *cnt, int B, int *first) {
    int m = cnt[0];
    for (int b = 0; b < B; b++) {
        if (cnt[b] != m || m <= 0) return -1;
        const int32_t *v = p->v32 + off[b];
        if (v[m - 1] - v[0] != m - 1) return -1; /* sorted and unique: a run iff the span is m */
        first[b] = v[0];
    }
    return m;
}

/* A linked setter on a device (iv_fused_on): link_out stores every unit's R x D floats after
 * the setter in the chain's buffer, slot (b U + u) R D, as the host path keeps its gathered
 * units; link_in writes that buffer back over the units before the setter when an earlier
 * intervention of the chain ran in this pass (all D floats, a unit listed twice once: the
 * host path's scatter keeps the last). */
static int build_link(run_state *s, int i, const geom *g, idx_pool *p, int64_t *cap) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int B = s->B, U = iv_n_units(bl);
    const int64_t L = (int64_t)g->R * g->D;
    fused_call *in = &s->iv[i].link_in, *out = &s->iv[i].link_out;
    for (int k = 0; k < 2; k++) {
        fused_call *f = k ? in : out;
        f->on = 1, f->op = k ? CVENE_IVOP_VANILLA : CVENE_IVOP_COLLECT, f->T = s->iv[i].target_T, f->E = g->E;
        f->R = g->R, f->D = g->D, f->x_rs = g->S, f->src_rs = g->D, f->dims_n = -1, f->n = 0;
        for (int b = 0; b < B; b++)
            for (int u = 0; u < U; u++) f->n += !(k && overwritten_later(bl, g, r->component, b, u, U));
        if (!take_units(p, f)) return 0;
        int64_t q = 0;
        for (int b = 0; b < B; b++)
            for (int u = 0; u < U; u++) {
                if (k && overwritten_later(bl, g, r->component, b, u, U)) continue;
                p->v64[f->x_off + q] = (int64_t)b * g->E + iv_unit_offset(bl, g, r->component, b, u);
                p->v64[f->src_off + q] = ((int64_t)b * U + u) * L;
                p->v64[f->dims_off + q] = 0;
                q++;
            }
    }
    const int64_t len = (int64_t)B * U * L;
    if (len > *cap) *cap = len;
    return 1;
}

/* The setter of intervention i on its base rows. */
static int build_setter(run_state *s, int i, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    fused_call *f = &s->iv[i].set;
    int B = s->B, U = iv_n_units(bl);
    geom g = iv_stream_geom(&mi, r->component, r->unit, s->iv[i].target_T, bl->present);
    f->on = 1, f->op = iv_type_get(r->type)->ivop, f->T = s->iv[i].target_T, f->E = g.E;
    if (f->op == CVENE_IVOP_COLLECT && s->dims[i * B].n >= 0) return build_collect_dims(s, i, &g, p);
    const int writes_x = f->op != CVENE_IVOP_COLLECT;
    /* a constant source of one unit's D floats is broadcast over rows, units and examples */
    const int bcast = !s->iv[i].store && r->source && r->source_len == g.D;
    /* Noise: unit u adds row u of its (U, D) noise to each of its rows, in every example,
     * on all D floats (pyvene's noise ignores subspaces) */
    const int noise = r->type == CVENE_IV_NOISE;
    int64_t L = (int64_t)g.R * g.D;
    int64_t *doff = malloc(sizeof(int64_t) * (size_t)B);
    int *dcnt = malloc(sizeof(int) * (size_t)B);
    int ok = doff && dcnt;
    int any_dims = 0;
    /* Collect without subspaces returns every value (as the host path) */
    if (ok && writes_x && !noise) ok = take_dims(s, i, g.D, p, doff, dcnt);
    for (int b = 0; ok && b < B; b++) {
        if (!writes_x || noise) doff[b] = -1, dcnt[b] = -1;
        any_dims |= dcnt[b] >= 0;
    }
    f->n = 0;
    for (int b = 0; ok && b < B; b++)
        for (int u = 0; u < U; u++) f->n += !(writes_x && overwritten_later(bl, &g, r->component, b, u, U));
    f->R = g.R, f->D = g.D, f->x_rs = g.S, f->src_rs = bcast || noise ? 0 : g.D, f->dims_n = -1;
    int *first = ok && any_dims ? malloc(sizeof(int) * (size_t)B) : NULL;
    int run = first ? contiguous_dims(p, doff, dcnt, B, first) : -1;
    if (any_dims && !first) ok = 0;
    if (run > 0) {
        p->n32 = (size_t)doff[0]; /* the lists are not read: give their pool space back */
        f->D = run, any_dims = 0;
    }
    if (ok) ok = take_units(p, f);
    if (ok && any_dims) ok = (f->dims_n = take32(p, (size_t)f->n)) >= 0;
    int64_t q = 0;
    for (int b = 0; ok && b < B; b++)
        for (int u = 0; u < U; u++) {
            if (writes_x && overwritten_later(bl, &g, r->component, b, u, U)) continue;
            const int64_t shift = run > 0 ? first[b] : 0;
            p->v64[f->x_off + q] = (int64_t)b * g.E + iv_unit_offset(bl, &g, r->component, b, u) + shift;
            p->v64[f->src_off + q] = (noise ? u * (int64_t)g.D : bcast ? 0 : ((int64_t)b * U + u) * L) + shift;
            p->v64[f->dims_off + q] = doff[b] >= 0 && run <= 0 ? doff[b] : 0;
            if (any_dims) p->v32[f->dims_n + q] = dcnt[b];
            q++;
        }
    free(doff), free(dcnt), free(first);
    if (ok && r->link_key >= 0) ok = build_link(s, i, &g, p, &s->link[s->c->reps[i].link].dev_cap);
    return ok;
}

/* The gather of intervention i's source into s->iv[i].store: (B, U, R, D). */
static int build_getter(run_state *s, int i, int T, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *sl = &s->locs[2 * i];
    fused_call *f = &s->iv[i].get;
    geom g = iv_stream_geom(&mi, r->component, r->unit, T, sl->present);
    int B = s->B, U = iv_n_units(sl);
    int64_t L = (int64_t)g.R * g.D;
    f->on = 1, f->op = CVENE_IVOP_COLLECT, f->T = T, f->E = g.E;
    f->n = B * U, f->R = g.R, f->D = g.D, f->x_rs = g.S, f->src_rs = g.D, f->dims_n = -1;
    if (!take_units(p, f)) return 0;
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            int64_t q = (int64_t)b * U + u;
            const int row = sl->bcast ? 0 : b; /* one source example for every base example */
            p->v64[f->x_off + q] = (int64_t)row * g.E + iv_unit_offset(sl, &g, r->component, b, u);
            p->v64[f->src_off + q] = q * L;
            p->v64[f->dims_off + q] = 0;
        }
    return 1;
}

/* Unit t: the setter of intervention i as one call per timestep of its base run. At step t
 * the units are the examples listing t, each acting on its row's D floats (at its third of
 * x2h / h2h) with the source of its slot k (t's rank among its listed steps): slot
 * (b U + k) D of the store or of a full constant source, or the one-unit constant source
 * broadcast. Subspace dims as build_setter (sorted, without repeats); Collect with
 * subspaces picks the listed dims of each timestep's vector, in their order, into (B, U, n). */
static int build_setter_t(run_state *s, int i, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int B = s->B, T = s->iv[i].target_T, op = iv_type_get(r->type)->ivop;
    geom g = iv_stream_geom(&mi, r->component, r->unit, T, bl->present);
    const int U = iv_units_of(r, bl, T);
    const int64_t off = iv_gru_offset(r->component, &g);
    const int bcast = !s->iv[i].store && r->source && r->source_len == g.D;
    const int cdims = op == CVENE_IVOP_COLLECT && s->dims[i * B].n >= 0 ? s->dims[i * B].n : -1; /* Collect dims */
    int64_t *doff = malloc(sizeof(int64_t) * (size_t)B);
    int *dcnt = malloc(sizeof(int) * (size_t)B);
    fused_call *calls = s->iv[i].step_set = calloc((size_t)T, sizeof(fused_call));
    s->iv[i].n_step_set = T;
    int ok = doff && dcnt && calls, any_dims = 0;
    if (ok && op != CVENE_IVOP_COLLECT) ok = take_dims(s, i, g.D, p, doff, dcnt);
    for (int b = 0; ok && b < B; b++) {
        if (op == CVENE_IVOP_COLLECT) doff[b] = -1, dcnt[b] = -1;
        any_dims |= dcnt[b] >= 0;
    }
    for (int t = 0; ok && t < T; t++) {
        fused_call *f = &calls[t];
        f->on = 1, f->op = op, f->T = T, f->E = g.E, f->R = 1, f->x_rs = g.D, f->dims_n = -1;
        f->D = cdims >= 0 ? 1 : g.D, f->src_rs = bcast ? 0 : f->D;
        f->n = 0;
        for (int b = 0; b < B; b++) f->n += iv_step_slot(bl, b, t) >= 0 ? (cdims >= 0 ? cdims : 1) : 0;
        if (f->n == 0) continue;
        if (!(ok = take_units(p, f))) break;
        if (any_dims && !(ok = (f->dims_n = take32(p, (size_t)f->n)) >= 0)) break;
        int64_t q = 0;
        for (int b = 0; b < B; b++) {
            const int k = iv_step_slot(bl, b, t);
            if (k < 0) continue;
            const int64_t x0 = (int64_t)b * g.E + off, slot = (int64_t)b * U + k;
            if (cdims >= 0) {
                const iv_dims *dm = &s->dims[i * B + b];
                for (int d = 0; d < cdims; d++, q++) {
                    p->v64[f->x_off + q] = x0 + dm->dims[d];
                    p->v64[f->src_off + q] = slot * cdims + d;
                    p->v64[f->dims_off + q] = 0;
                }
                continue;
            }
            p->v64[f->x_off + q] = x0;
            p->v64[f->src_off + q] = bcast ? 0 : slot * g.D;
            p->v64[f->dims_off + q] = doff[b] >= 0 ? doff[b] : 0;
            if (any_dims) p->v32[f->dims_n + q] = dcnt[b];
            q++;
        }
    }
    free(doff), free(dcnt);
    return ok;
}

/* Unit t: the gather of intervention i's source, one call per timestep of the source run:
 * the examples listing that step store their row's D floats in slot (b U + k). */
static int build_getter_t(run_state *s, int i, int T, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *sl = &s->locs[2 * i];
    geom g = iv_stream_geom(&mi, r->component, r->unit, T, sl->present);
    const int B = s->B, U = iv_units_of(r, sl, T);
    const int64_t off = iv_gru_offset(r->component, &g);
    fused_call *calls = s->iv[i].step_get = calloc((size_t)T, sizeof(fused_call));
    s->iv[i].n_step_get = T;
    if (!calls) return 0;
    for (int t = 0; t < T; t++) {
        fused_call *f = &calls[t];
        f->on = 1, f->op = CVENE_IVOP_COLLECT, f->T = T, f->E = g.E, f->R = 1, f->D = g.D;
        f->x_rs = g.D, f->src_rs = g.D, f->dims_n = -1, f->n = 0;
        for (int b = 0; b < B; b++) f->n += iv_step_slot(sl, b, t) >= 0;
        if (f->n == 0) continue;
        if (!take_units(p, f)) return 0;
        int64_t q = 0;
        for (int b = 0; b < B; b++) {
            const int k = iv_step_slot(sl, b, t);
            if (k < 0) continue;
            p->v64[f->x_off + q] = (int64_t)(sl->bcast ? 0 : b) * g.E + off;
            p->v64[f->src_off + q] = ((int64_t)b * U + k) * g.D;
            p->v64[f->dims_off + q] = 0;
            q++;
        }
    }
    return 1;
}

/* A callback on a device: link_out gathers its units (B, U, R, D) into iv_slot.rt_dev, link_in
 * writes them back (see build_link); run_round_trip calls the callback on the host between. */
static int build_round_trip(run_state *s, int i, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int T = s->iv[i].target_T, B = s->B;
    geom g = iv_stream_geom(&mi, r->component, r->unit, T, bl->present);
    s->iv[i].rt_src_len = (int64_t)B * iv_units_of(r, bl, T) * g.R * g.D; /* the gathered source's */
    s->iv[i].set.R = g.R, s->iv[i].set.D = g.D; /* the callback's unit shape (set[i] itself stays off) */
    if (r->unit != CVENE_UNIT_T) return build_link(s, i, &g, p, &s->iv[i].rt_len);
    /* unit t: per step, the rows of the examples listing it, packed: calls [0, T) gather them
     * into rt_dev (row q at q D), calls [T, 2T) write them back */
    const int64_t off = iv_gru_offset(r->component, &g);
    fused_call *calls = s->iv[i].step_set = calloc(2 * (size_t)T, sizeof(fused_call));
    s->iv[i].n_step_set = T;
    s->iv[i].rt_len = (int64_t)B * g.D;
    if (!calls) return 0;
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < 2; k++) {
            fused_call *f = &calls[k * T + t];
            f->on = 1, f->op = k ? CVENE_IVOP_VANILLA : CVENE_IVOP_COLLECT, f->T = T, f->E = g.E, f->R = 1;
            f->D = g.D, f->x_rs = g.D, f->src_rs = g.D, f->dims_n = -1, f->n = 0;
            for (int b = 0; b < B; b++) f->n += iv_step_slot(bl, b, t) >= 0;
            if (f->n == 0) continue;
            if (!take_units(p, f)) return 0;
            int64_t q = 0;
            for (int b = 0; b < B; b++) {
                if (iv_step_slot(bl, b, t) < 0) continue;
                p->v64[f->x_off + q] = (int64_t)b * g.E + off;
                p->v64[f->src_off + q] = q * g.D;
                p->v64[f->dims_off + q] = 0;
                q++;
            }
        }
    }
    return 1;
}

/* Every fused call of the request, and one upload of their index arrays. */
cvene_status iv_build_fused(run_state *s, const iv_input **src) {
    idx_pool p;
    memset(&p, 0, sizeof p);
    int ok = 1;
    for (int i = 0; ok && i < s->c->n; i++) {
        const cvene_representation *r = &s->c->reps[i].r;
        const int ut = r->unit == CVENE_UNIT_T;
        if (s->iv[i].store) ok = ut ? build_getter_t(s, i, src[iv_group(s->c, i)]->T, &p)
                                 : build_getter(s, i, src[iv_group(s->c, i)]->T, &p);
        const int round_trip = r->type == CVENE_IV_CALLBACK || (iv_type_get(r->type)->flags & IV_TRAINABLE);
        if (ok && iv_fused_on(s, i)) ok = round_trip ? build_round_trip(s, i, &p)
                                     : ut ? build_setter_t(s, i, &p) : build_setter(s, i, &p);
    }
    cvene_status st = ok ? CVENE_OK : cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_backend *be = s->ctx->be;
    if (st == CVENE_OK) st = iv_dev_alloc(s, (void **)&s->idx64, sizeof(int64_t) * p.n64, "intervention indices");
    if (st == CVENE_OK) st = iv_dev_alloc(s, (void **)&s->idx32, sizeof(int32_t) * p.n32, "subspace indices");
    if (st == CVENE_OK && p.n64) st = be->ops->to_device(be, s->idx64, p.v64, sizeof(int64_t) * p.n64);
    if (st == CVENE_OK && p.n32) st = be->ops->to_device(be, s->idx32, p.v32, sizeof(int32_t) * p.n32);
    free(p.v64), free(p.v32);
    return st;
}
