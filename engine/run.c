/* Running a request: plan the forward passes, gather sources at their sites,
 * apply interventions to the base rows, collect results.
 *
 * A pass is one batched forward over blocks of rows (a source, the base, the
 * clean base for output_original_output). At each site, for each block: first
 * its setters (interventions applied to its rows, in config order), then its
 * getters (source activations gathered from its rows). Rows never interact in
 * a forward, so putting sources and the base in one batch is exact; the plan
 * does so whenever they share a sequence length (parallel mode), and otherwise
 * runs sources first, stopping each at the last site it feeds.
 *
 * GRUs (unit "t", docs/interventions.md "GRU"): the model calls each site once per
 * timestep with that step's (B, W) rows, so here a site call is one timestep, counted
 * per (component, layer) as pyvene counts hook calls. At step t, example b's setter
 * acts if t is among its base timesteps, taking the k-th source vector when t is the
 * k-th smallest of them; getters store the k-th smallest source timestep in slot k.
 * A source timestep may come after the base timestep it feeds, so sources read at unit
 * t always run in a pass before the base.
 *
 * Fused path (both backends): every source gather, and every Vanilla / Addition /
 * Subtraction / Zero / Collect / Skip intervention without a link key, is one iv_units op
 * (kernels/backend.h) at its site, on the backend's device; at unit t one per timestep
 * (the examples that list that step, each with its slot's source). Its index arrays (unit
 * offsets, subspace dims) are built once per request in prepare() and uploaded in one
 * buffer per element type; offsets are relative to the block's first row, so one set
 * serves whichever rows of the pass the block lands on. Sources, constant sources and
 * collect buffers live on the device; collected values come back to the host at the end
 * of the run. The host path (move_units, combine, apply_step) remains on the CPU for
 * callbacks, Noise and link keys; on a device those are fused calls, callbacks a host round
 * trip between two of them (fused_on). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"
#include "engine/numpy_random.h"
#include "engine/tensor.h"
#include "models/model.h"

struct cvene_result {
    float *logits, *orig_logits; /* views into logits_mem */
    float *logits_mem;
    int B, T, V;
    int n_collected;
    cvene_tensor_view *collected; /* data owned */
    int n_passes;
};

/* Geometry of one intervention's stream in a run of length T. A unit is R rows
 * of D floats, row stride S, starting at an offset inside the example. Per-head
 * components are served on their (B, T, C) stream (query_output for
 * head_query_output, ...): head h of position p is the hd floats at p*C + h*hd.
 * That keeps every intervention on one tensor in config order, as pyvene's
 * hooks on one module fire. */
typedef struct {
    int A;        /* what a "pos"/"h" index addresses: T, or heads */
    int R, D, S;  /* rows per unit, the last dim, row stride */
    int T, C, hd; /* for head units */
    int64_t E;    /* floats per example */
} geom;

enum { ROLE_SOURCE, ROLE_BASE, ROLE_ORIG };

/* One iv_units call: its shape and where its index arrays sit in the request's packed
 * index buffers (idx64: x_off, src_off, dims_off; idx32: dims, dims_n). */
typedef struct {
    int on;              /* 0: no fused call for this side */
    int op;              /* cvene_iv_op */
    int n, R, D;         /* units, rows per unit, floats per row */
    int64_t x_rs, src_rs;
    int64_t E;           /* floats per example of the site: the block's rows start at row0 * E */
    int T;               /* sequence length of the run it acts on */
    int64_t x_off, src_off, dims_off; /* element offsets into idx64 */
    int64_t dims_n;      /* element offset into idx32, -1 = every unit takes all D */
} fused_call;

/* Host-side growing index arrays, uploaded once in prepare(). */
typedef struct {
    int64_t *v64;
    int32_t *v32;
    size_t n64, cap64, n32, cap32;
} idx_pool;

typedef struct {
    int role, group;      /* group: for sources */
    const iv_input *in;
    int row0;             /* first row in the pass */
    int *setters, n_setters;
    int *getters, n_getters;
} block;

typedef struct {
    cvene_ctx *ctx;
    cvene_model *m;
    const cvene_config *c;
    iv_locs *locs;        /* 2n */
    iv_dims *dims;        /* n * B */
    int B;
    float **store;        /* per intervention: gathered source (B, U, R, D), on the device */
    float **csrc;         /* per intervention: its constant source on the device (fused path) */
    float **coll;         /* per Collect: its result on the device (CPU: the result's own buffer) */
    fused_call *set, *get; /* per intervention: fused setter / source gather */
    fused_call **step_set, **step_get; /* unit t: per intervention, one call per timestep */
    fused_call *link_in, *link_out;    /* device link keys: hot -> units, units -> hot */
    float **hot_dev;                   /* per link key on a device: the chain's last result */
    int64_t *hot_dev_cap, *hot_dev_len; /* its size, and the length now held (0: none yet) */
    float **rt_dev, **rt_src;          /* device callbacks: the units on the device, the source on the host */
    int64_t *rt_len, *rt_src_len;      /* ... and their lengths in floats */
    int *n_step_set, *n_step_get;      /* ... and how many timesteps they cover */
    int64_t *idx64;       /* packed index arrays on the device (fused_call offsets point here) */
    int32_t *idx32;
    float **hot;          /* per link key: last linked result */
    int64_t *hot_len;
    int n_links;
    float *scratch;       /* (B, U, R, D) base gather */
    size_t scratch_len;
    double **noise;       /* per intervention (U * D) doubles */
    cvene_result *res;
    int *collect_slot;    /* per intervention: index into res->collected or -1 */
    int *target_T;        /* per intervention: length of the run its setter acts on */
    block *blocks;
    int n_blocks;
    int T;                /* this pass */
    int in_base_T;        /* the base's sequence length */
    int64_t last_site;    /* stop the pass after this site order (-1 = run to the end) */
    int step[CVENE_N_COMPONENTS][64]; /* GRU: calls so far of (site, layer) in this pass = timestep */
    cvene_status err;
    char errmsg[CVENE_ERR_LEN]; /* err's message: the forward overwrites the context's */
    int diagnose;         /* looking for where a non-finite result first appears (diagnose_site) */
    float *diag_host;     /* diagnose on a device: the site tensor copied to the host */
    size_t diag_cap;
} run_state;

/* forward order of sites, for stopping early: layer by layer in a transformer (step 0);
 * a GRU runs every layer inside each timestep, so there the step comes first */
static int64_t site_order(cvene_component c, int layer, int step) {
    return ((int64_t)step * 64 + layer) * CVENE_N_COMPONENTS + (int)c;
}

static int is_head(cvene_component c) {
    return c == CVENE_HEAD_QUERY_OUTPUT || c == CVENE_HEAD_KEY_OUTPUT || c == CVENE_HEAD_VALUE_OUTPUT ||
           c == CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
}

/* The site whose tensor holds a component. */
static cvene_component physical(cvene_component c) {
    switch (c) {
    case CVENE_HEAD_QUERY_OUTPUT: return CVENE_QUERY_OUTPUT;
    case CVENE_HEAD_KEY_OUTPUT: return CVENE_KEY_OUTPUT;
    case CVENE_HEAD_VALUE_OUTPUT: return CVENE_VALUE_OUTPUT;
    case CVENE_HEAD_ATTENTION_VALUE_OUTPUT: return CVENE_ATTENTION_VALUE_OUTPUT;
    /* a GRU gate's third of x2h / h2h is served on the whole (B, 3h) output, so every
     * intervention on that module's output acts in config order, as pyvene's hooks */
    case CVENE_RESET_X2H_OUTPUT: case CVENE_UPDATE_X2H_OUTPUT: case CVENE_NEW_X2H_OUTPUT: return CVENE_X2H_OUTPUT;
    case CVENE_RESET_H2H_OUTPUT: case CVENE_UPDATE_H2H_OUTPUT: case CVENE_NEW_H2H_OUTPUT: return CVENE_H2H_OUTPUT;
    default: return c;
    }
}

static geom stream_geom(const cvene_model_info *mi, cvene_component comp, cvene_unit unit, int T,
                        int present) {
    geom g;
    memset(&g, 0, sizeof g);
    int C = mi->n_embd, H = mi->n_head, hd = C / H;
    g.T = T, g.C = C, g.hd = hd;
    if (unit == CVENE_UNIT_T) {
        /* a GRU site call is one timestep: (B, W) rows, W = 3h on x2h/h2h (whose thirds are
         * served there), h otherwise; a unit is one timestep's D floats (present or not) */
        int W = physical(comp) == CVENE_X2H_OUTPUT || physical(comp) == CVENE_H2H_OUTPUT ? 3 * C : C;
        g.E = W, g.A = T, g.R = 1;
        g.D = g.S = comp == CVENE_X2H_OUTPUT || comp == CVENE_H2H_OUTPUT ? 3 * C : C;
        return g;
    }
    if (comp == CVENE_ATTENTION_WEIGHT) {
        g.E = (int64_t)H * T * T, g.A = H, g.R = T, g.D = T;
    } else if (is_head(comp)) {
        g.E = (int64_t)T * C, g.A = H, g.D = hd, g.R = unit == CVENE_UNIT_H ? T : 1, g.S = C;
    } else {
        g.D = comp == CVENE_MLP_ACTIVATION ? mi->n_inner : C;
        g.E = (int64_t)T * g.D, g.A = T, g.R = 1;
    }
    if (!present) { /* the whole example as one unit */
        g.D = is_head(comp) ? C : g.D;
        g.R = (int)(g.E / g.D);
        g.S = g.D;
    }
    if (!g.S) g.S = g.D;
    return g;
}

static int n_units(const iv_locs *l) { return !l->present ? 1 : (l->pos ? l->U * l->U2 : l->U); }

/* Units an intervention side selects in a run of length T: for unit t, no locations
 * (pyvene's None) means every timestep. */
static int units_of(const cvene_representation *r, const iv_locs *l, int T) {
    return r->unit == CVENE_UNIT_T && !l->present ? T : n_units(l);
}

/* Unit t: the slot of timestep `step` for example b (its rank among the example's listed
 * timesteps, which check_locs made distinct), or -1 when the step is not listed. */
static int step_slot(const iv_locs *l, int b, int step) {
    if (!l->present) return step;
    int rank = 0, found = 0;
    for (int u = 0; u < l->U; u++) {
        int v = l->idx[b * l->U + u];
        if (v == step) found = 1;
        else if (v < step) rank++;
    }
    return found ? rank : -1;
}

/* Unit t: where a component's D floats start in a (B, W) row of its site. */
static int64_t gru_offset(cvene_component comp, const geom *g) {
    switch (comp) {
    case CVENE_UPDATE_X2H_OUTPUT: case CVENE_UPDATE_H2H_OUTPUT: return g->C;
    case CVENE_NEW_X2H_OUTPUT: case CVENE_NEW_H2H_OUTPUT: return 2 * (int64_t)g->C;
    default: return 0; /* reset third, or the whole row */
    }
}

/* float offset of unit u of example b inside that example */
static int64_t unit_offset(const iv_locs *l, const geom *g, cvene_component comp, int b, int u) {
    if (!l->present) return 0;
    if (l->pos) {
        int h = l->idx[b * l->U + u / l->U2], p = l->pos[b * l->U2 + u % l->U2];
        return (int64_t)p * g->C + (int64_t)h * g->hd;
    }
    int idx = l->idx[b * l->U + u];
    if (comp == CVENE_ATTENTION_WEIGHT) return (int64_t)idx * g->T * g->T;
    if (is_head(comp)) return (int64_t)idx * g->hd;
    return (int64_t)idx * g->D;
}

/* (B, U, R, D) <-> rows [row0, row0 + B) of the site tensor; dir 0 gathers, 1 scatters */
static void move_units(float *packed, float *site, int row0, int B, const iv_locs *l, const geom *g,
                       cvene_component comp, int dir) {
    int U = n_units(l);
    int64_t L = (int64_t)g->R * g->D;
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            float *pk = packed + ((int64_t)b * U + u) * L;
            float *st = site + (int64_t)(row0 + b) * g->E + unit_offset(l, g, comp, b, u);
            for (int r = 0; r < g->R; r++) {
                if (dir) memcpy(st + (int64_t)r * g->S, pk + (int64_t)r * g->D, sizeof(float) * (size_t)g->D);
                else memcpy(pk + (int64_t)r * g->D, st + (int64_t)r * g->S, sizeof(float) * (size_t)g->D);
            }
        }
}

/* The site Skip reads: the input of the module pyvene hooks. */
static cvene_component getter_component(const cvene_representation *r, const cvene_model *m) {
    if (r->type != CVENE_IV_SKIP) return r->component;
    if (r->component == CVENE_BLOCK_OUTPUT) return CVENE_BLOCK_INPUT;
    if (r->component == CVENE_MLP_OUTPUT) return CVENE_MLP_INPUT;
    /* GPT-NeoX: pyvene hooks the whole attention module, whose input is attention_input */
    if (r->component == CVENE_ATTENTION_OUTPUT && cvene_model_get_info(m).arch == CVENE_ARCH_GPT_NEOX)
        return CVENE_ATTENTION_INPUT;
    return r->component; /* pre-hooked components and GPT-2's attention_output read themselves */
}

static int needs_source(const cvene_representation *r) {
    return r->type == CVENE_IV_VANILLA || r->type == CVENE_IV_ADDITION || r->type == CVENE_IV_SUBTRACTION ||
           r->type == CVENE_IV_SKIP;
}

/* The types an iv_units op computes. */
static int fusable_kind(const cvene_representation *r) {
    switch (r->type) {
    case CVENE_IV_VANILLA: case CVENE_IV_ADDITION: case CVENE_IV_SUBTRACTION: case CVENE_IV_ZERO:
    case CVENE_IV_COLLECT: case CVENE_IV_SKIP: return 1;
    default: return 0;
    }
}

/* Types the fused path (iv_units) covers on every backend; the rest run on the host path on
 * the CPU, and on a device as fused_on() says. */
static int fused_type(const cvene_representation *r) { return r->link_key < 0 && fusable_kind(r); }

static int iv_op_of(cvene_intervention_type t) {
    switch (t) {
    case CVENE_IV_ADDITION: return CVENE_IVOP_ADDITION;
    case CVENE_IV_SUBTRACTION: return CVENE_IVOP_SUBTRACTION;
    case CVENE_IV_ZERO: return CVENE_IVOP_ZERO;
    case CVENE_IV_COLLECT: return CVENE_IVOP_COLLECT;
    case CVENE_IV_NOISE: return CVENE_IVOP_ADDITION; /* of its noise, as an f32 source (fused_on) */
    default: return CVENE_IVOP_VANILLA; /* Vanilla, Skip */
    }
}

/* Whether intervention i runs as fused iv_units calls on this backend: the fused types
 * everywhere; on a device backend also
 *  - a callback outside link keys, as a host round trip (run_round_trip, run_step_round_trip);
 *  - Noise, as an Addition of the f32 values (float)(noise * level) (the CPU keeps pyvene's
 *    double-precision sum x + noise * level, exact; on the device the sum is rounded once
 *    more, a difference of at most one f32 ulp of each touched value);
 *  - a link key whose every intervention is of such a type other than Collect: the chain's
 *    last result lives in a device buffer (s->hot_dev), written after each linked setter
 *    and scattered over the units before the next one, as the host path does with s->hot. */
static int fused_on(const run_state *s, int i) {
    const cvene_representation *r = &s->c->reps[i].r;
    const int dev = s->ctx->be->device != CVENE_DEVICE_CPU;
    if (r->type == CVENE_IV_CALLBACK) return dev && r->link_key < 0; /* a host round trip */
    if (r->link_key < 0) return fused_type(r) || (dev && r->type == CVENE_IV_NOISE);
    if (!dev) return 0;
    for (int j = 0; j < s->c->n; j++) {
        const cvene_representation *q = &s->c->reps[j].r;
        if (q->link_key == r->link_key && ((!fusable_kind(q) && q->type != CVENE_IV_NOISE) || q->type == CVENE_IV_COLLECT))
            return 0;
    }
    return 1;
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
    geom g = stream_geom(&mi, r->component, r->unit, bk->in->T, bl->present);
    int B = s->B, U = units_of(r, bl, bk->in->T);
    int64_t off = gru_offset(r->component, &g);
    for (int b = 0; b < B; b++) {
        int k = step_slot(bl, b, step);
        if (k < 0) continue;
        float *x = site + (int64_t)(bk->row0 + b) * g.E + off;
        const iv_dims *dm = &s->dims[i * B + b];
        int64_t slot = ((int64_t)b * U + k) * g.D;
        const float *y = s->store[i] ? s->store[i] + slot : NULL;
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
    geom g = stream_geom(&mi, r->component, r->unit, bk->in->T, bl->present);
    int B = s->B, U = n_units(bl);
    int64_t L = (int64_t)g.R * g.D, n = (int64_t)B * U * L;
    float *gb = s->scratch;
    move_units(gb, site, bk->row0, B, bl, &g, r->component, 0);
    const int lk = c->reps[i].link; /* dense index of r->link_key */
    if (lk >= 0 && s->hot[lk]) {
        if (s->hot_len[lk] != n)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "intervention %d shares intervention_link_key %d with an earlier one but selects a "
                              "different number of units", i, r->link_key);
        memcpy(gb, s->hot[lk], sizeof(float) * (size_t)n);
    }
    const float *gs = s->store[i];
    int64_t src_len = gs ? n : 0;
    if (!gs && r->source) gs = r->source, src_len = r->source_len; /* constant source */
    for (int b = 0; b < B; b++) {
        const iv_dims *dm = &s->dims[i * B + b];
        float *eb = gb + (int64_t)b * U * L;
        if (r->type == CVENE_IV_CALLBACK) {
            int64_t shape[4] = {1, U, g.R, g.D};
            const float *es = s->store[i] ? s->store[i] + (int64_t)b * U * L : NULL;
            int rc = r->fn(r->fn_user, eb, es, shape, b, dm->n >= 0 ? dm->dims : NULL, dm->n >= 0 ? dm->n : 0);
            if (rc != 0)
                return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
            continue;
        }
        if (r->type == CVENE_IV_COLLECT) continue;
        if (r->type == CVENE_IV_NOISE) {
            /* pyvene adds the float64 noise times the float32 level in double */
            double level = (double)(float)r->noise_level;
            const double *nz = s->noise[i];
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
        cvene_tensor_view *t = &s->res->collected[s->collect_slot[i]];
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
        if (!s->hot[lk] && !(s->hot[lk] = malloc(sizeof(float) * (size_t)n)))
            return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        memcpy(s->hot[lk], gb, sizeof(float) * (size_t)n);
        s->hot_len[lk] = n;
    }
    return CVENE_OK;
}

/* One fused call on a block's rows of the site; src: the call's source / destination. */
static cvene_status run_fused(run_state *s, const fused_call *f, float *site, const block *bk, float *src) {
    if (bk->in->T != f->T) /* the plan and prepare() disagree: a bug, not a user error */
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
    if (op == CVENE_IVOP_COLLECT) return s->coll[i];
    if (op == CVENE_IVOP_ZERO) return NULL;
    return s->store[i] ? s->store[i] : s->csrc[i];
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
    const fused_call *get = &s->link_out[i];
    const int B = s->B, U = get->n / B, R = s->set[i].R, D = s->set[i].D;
    const int64_t L = (int64_t)R * D, len = s->rt_len[i];
    CVENE_TRY(run_fused(s, get, site, bk, s->rt_dev[i]));
    CVENE_TRY(be->ops->to_host(be, s->scratch, s->rt_dev[i], sizeof(float) * (size_t)len));
    if (s->store[i])
        CVENE_TRY(be->ops->to_host(be, s->rt_src[i], s->store[i], sizeof(float) * (size_t)s->rt_src_len[i]));
    for (int b = 0; b < B; b++) {
        const iv_dims *dm = &s->dims[i * B + b];
        int64_t shape[4] = {1, U, R, D};
        const float *es = s->store[i] ? s->rt_src[i] + (int64_t)b * U * L : NULL;
        int rc = r->fn(r->fn_user, s->scratch + (int64_t)b * U * L, es, shape, b, dm->n >= 0 ? dm->dims : NULL,
                       dm->n >= 0 ? dm->n : 0);
        if (rc != 0) return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
    }
    CVENE_TRY(be->ops->to_device(be, s->rt_dev[i], s->scratch, sizeof(float) * (size_t)len));
    return run_fused(s, &s->link_in[i], site, bk, s->rt_dev[i]);
}

/* A callback at unit t on a device: the rows of the examples listing this step to the host,
 * the callback on each with its slot's source, as apply_step does on the CPU, and back. */
static cvene_status run_step_round_trip(run_state *s, int i, float *site, const block *bk, int step) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_backend *be = s->ctx->be;
    const int T = s->n_step_set[i], B = s->B, D = s->set[i].D;
    if (step >= T || s->step_set[i][step].n == 0) return CVENE_OK;
    const fused_call *get = &s->step_set[i][step], *put = &s->step_set[i][T + step];
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int U = units_of(r, bl, bk->in->T);
    CVENE_TRY(run_fused(s, get, site, bk, s->rt_dev[i]));
    CVENE_TRY(be->ops->to_host(be, s->scratch, s->rt_dev[i], sizeof(float) * (size_t)get->n * (size_t)D));
    if (s->store[i])
        CVENE_TRY(be->ops->to_host(be, s->rt_src[i], s->store[i], sizeof(float) * (size_t)s->rt_src_len[i]));
    int64_t q = 0;
    for (int b = 0; b < B; b++) {
        const int k = step_slot(bl, b, step);
        if (k < 0) continue;
        const iv_dims *dm = &s->dims[i * B + b];
        const int64_t slot = ((int64_t)b * U + k) * D;
        const float *y = s->store[i] ? s->rt_src[i] + slot : NULL;
        if (!y && r->source) y = r->source_len == D ? r->source : r->source + slot; /* constant source */
        int64_t shape[4] = {1, 1, 1, D};
        int rc = r->fn(r->fn_user, s->scratch + q * D, y, shape, b, dm->n >= 0 ? dm->dims : NULL, dm->n >= 0 ? dm->n : 0);
        if (rc != 0) return cvene_fail(s->ctx, CVENE_ERR_CALLBACK, "callback of intervention %d returned %d", i, rc);
        q++;
    }
    CVENE_TRY(be->ops->to_device(be, s->rt_dev[i], s->scratch, sizeof(float) * (size_t)get->n * (size_t)D));
    return run_fused(s, put, site, bk, s->rt_dev[i]);
}

/* A fused setter, with its link chain on a device (build_link). */
static cvene_status run_setter(run_state *s, int i, float *site, const block *bk) {
    const int lk = s->c->reps[i].link; /* dense index of the link key */
    const int linked = lk >= 0 && s->link_out[i].on;
    const fused_call *out = &s->link_out[i];
    const int64_t len = (int64_t)out->n * out->R * out->D;
    if (linked && s->hot_dev_len[lk]) {
        if (s->hot_dev_len[lk] != len)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG,
                              "intervention %d shares intervention_link_key %d with an earlier one but selects a "
                              "different number of units", i, s->c->reps[i].r.link_key);
        CVENE_TRY(run_fused(s, &s->link_in[i], site, bk, s->hot_dev[lk]));
    }
    CVENE_TRY(run_fused(s, &s->set[i], site, bk, fused_source(s, i, s->set[i].op)));
    if (!linked) return CVENE_OK;
    CVENE_TRY(run_fused(s, out, site, bk, s->hot_dev[lk]));
    s->hot_dev_len[lk] = len;
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
        if (physical(r->component) == comp && r->layer == layer) i = bk->setters[j];
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

static int on_site(void *user, cvene_component comp, int layer, cvene_tensor_view *t) {
    run_state *s = user;
    const cvene_config *c = s->c;
    float *site = t->data;
    const int gru = cvene_component_is_gru(comp);
    const int step = gru ? s->step[comp][layer] : 0; /* this call's timestep */
    for (int k = 0; k < s->n_blocks; k++) {
        const block *bk = &s->blocks[k];
        for (int j = 0; j < bk->n_setters; j++) {
            int i = bk->setters[j];
            if (physical(c->reps[i].r.component) != comp || c->reps[i].r.layer != layer) continue;
            if (gru && s->rt_dev[i])
                s->err = run_step_round_trip(s, i, site, bk, step);
            else if (gru && s->step_set[i])
                s->err = run_step(s, s->step_set[i], s->n_step_set[i], step, site, bk,
                                  fused_source(s, i, s->step_set[i][0].op));
            else
                s->err = gru ? apply_step(s, i, site, bk, step)
                       : s->set[i].on ? run_setter(s, i, site, bk)
                       : s->rt_dev[i] ? run_round_trip(s, i, site, bk)
                                      : apply(s, i, site, bk);
            if (s->err != CVENE_OK) {
                snprintf(s->errmsg, sizeof s->errmsg, "%s", s->ctx->err);
                return 1;
            }
        }
        for (int j = 0; j < bk->n_getters; j++) {
            int i = bk->getters[j];
            const cvene_representation *r = &c->reps[i].r;
            if (physical(getter_component(r, s->m)) != comp || r->layer != layer) continue;
            s->err = gru ? run_step(s, s->step_get[i], s->n_step_get[i], step, site, bk, s->store[i])
                         : run_fused(s, &s->get[i], site, bk, s->store[i]);
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
    return s->last_site >= 0 && site_order(comp, layer, step) >= s->last_site ? CVENE_SITE_STOP : 0;
}

/* ---- one pass ----------------------------------------------------------- */

static cvene_status run_pass(run_state *s, block *blocks, int n_blocks, int want_logits) {
    int N = 0, T = blocks[0].in->T;
    for (int k = 0; k < n_blocks; k++) {
        blocks[k].row0 = N;
        N += blocks[k].in->B;
    }
    cvene_model_info mi = cvene_model_get_info(s->m);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N * T);
    int32_t *mask = malloc(sizeof(int32_t) * (size_t)N * T);
    /* position ids when any block has them; the others get transformers' default 0..T-1 (a
     * GRU's blocks all have them or none do: cvene_run checks) */
    int any_pos = 0;
    for (int k = 0; k < n_blocks; k++) any_pos |= blocks[k].in->pos != NULL;
    int32_t *pos = any_pos ? malloc(sizeof(int32_t) * (size_t)N * T) : NULL;
    /* logits only for the base (and clean base) rows, which come last: written straight
     * into the result, the clean base's right after the base's */
    int row0 = N;
    for (int k = 0; want_logits && k < n_blocks; k++)
        if (blocks[k].role != ROLE_SOURCE && blocks[k].row0 < row0) row0 = blocks[k].row0;
    float *logits = want_logits ? malloc(sizeof(float) * (size_t)(N - row0) * T * mi.vocab_size) : NULL;
    if (!ids || !mask || (want_logits && !logits) || (any_pos && !pos)) {
        free(ids), free(mask), free(logits), free(pos);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory assembling a batch of %d x %d", N, T);
    }
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    s->last_site = -1;
    memset(s->step, 0, sizeof s->step);
    for (int k = 0; k < n_blocks; k++) {
        const iv_input *in = blocks[k].in;
        memcpy(ids + (size_t)blocks[k].row0 * T, in->ids, sizeof(int32_t) * (size_t)in->B * T);
        for (int64_t q = 0; q < (int64_t)in->B * T; q++)
            mask[(size_t)blocks[k].row0 * T + q] = in->mask ? in->mask[q] : 1;
        for (int64_t q = 0; pos && q < (int64_t)in->B * T; q++)
            pos[(size_t)blocks[k].row0 * T + q] = in->pos ? in->pos[q] : (int32_t)(q % T);
        for (int j = 0; j < blocks[k].n_setters; j++) {
            const cvene_representation *r = &s->c->reps[blocks[k].setters[j]].r;
            o.sites[physical(r->component)] |= 1ull << r->layer;
        }
        for (int j = 0; j < blocks[k].n_getters; j++) {
            const cvene_representation *r = &s->c->reps[blocks[k].getters[j]].r;
            o.sites[physical(getter_component(r, s->m))] |= 1ull << r->layer;
            int last_step = 0; /* unit t: the last source timestep read */
            if (r->unit == CVENE_UNIT_T) {
                const iv_locs *sl = &s->locs[2 * blocks[k].getters[j]];
                last_step = sl->present ? 0 : T - 1;
                for (int q = 0; sl->present && q < s->B * sl->U; q++)
                    if (sl->idx[q] > last_step) last_step = sl->idx[q];
            }
            int64_t so = site_order(physical(getter_component(r, s->m)), r->layer, last_step);
            if (!want_logits && so > s->last_site) s->last_site = so;
        }
    }
    if (want_logits) s->last_site = -1;
    if (s->diagnose) { /* every layer's output too, and the embeddings */
        const int L = mi.n_layer;
        const uint64_t all = L >= 64 ? ~0ull : (1ull << L) - 1;
        if (mi.arch == CVENE_ARCH_GRU) o.sites[CVENE_CELL_OUTPUT] |= all;
        else o.sites[CVENE_BLOCK_OUTPUT] |= all, o.sites[CVENE_BLOCK_INPUT] |= 1;
    }
    o.attention_mask = mask;
    o.position_ids = pos;
    o.logits = logits;
    o.logits_row0 = want_logits ? row0 : 0;
    o.site_fn = on_site;
    o.site_user = s;
    s->blocks = blocks;
    s->n_blocks = n_blocks;
    s->T = T;
    s->err = CVENE_OK;
    for (int l = 0; l < s->n_links; l++) { /* link chains live within one forward */
        free(s->hot[l]);
        s->hot[l] = NULL;
        s->hot_dev_len[l] = 0;
    }
    cvene_status st = cvene_forward(s->m, ids, N, T, &o);
    if (st == CVENE_ERR_CALLBACK && s->err != CVENE_OK) st = cvene_fail(s->ctx, s->err, "%s", s->errmsg);
    s->res->n_passes++;
    if (st == CVENE_OK && want_logits) {
        for (int k = 0; k < n_blocks; k++) {
            if (blocks[k].role == ROLE_BASE) s->res->logits = logits + (size_t)(blocks[k].row0 - row0) * T * mi.vocab_size;
            if (blocks[k].role == ROLE_ORIG) s->res->orig_logits = logits + (size_t)(blocks[k].row0 - row0) * T * mi.vocab_size;
        }
        s->res->logits_mem = logits; /* owns both */
        logits = NULL;
    }
    free(ids), free(mask), free(logits), free(pos);
    return st;
}

/* ---- validation against the model --------------------------------------- */

static cvene_status check_locs(run_state *s, int i, int side, int T) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *l = &s->locs[2 * i + side];
    const char *sn = side ? "base" : "source";
    cvene_model_info mi = cvene_model_get_info(s->m);
    geom g = stream_geom(&mi, r->component, r->unit, T, l->present);
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

static int same_input(const iv_input *a, const iv_input *b) {
    if (a->B != b->B || a->T != b->T || !a->mask != !b->mask || !a->pos != !b->pos) return 0;
    size_t n = (size_t)a->B * a->T;
    return !memcmp(a->ids, b->ids, n * 4) && (!a->mask || !memcmp(a->mask, b->mask, n * 4)) &&
           (!a->pos || !memcmp(a->pos, b->pos, n * 4));
}

/* ---- the run ------------------------------------------------------------- */

static void state_free(run_state *s, int n) {
    cvene_backend *be = s->ctx->be;
    /* device buffers (cudaFree waits for queued kernels that still use them) */
    for (int i = 0; s->store && i < n; i++)
        if (s->store[i]) be->ops->free(be, s->store[i]);
    for (int i = 0; s->csrc && i < n; i++)
        if (s->csrc[i]) be->ops->free(be, s->csrc[i]);
    for (int i = 0; s->coll && be->device != CVENE_DEVICE_CPU && i < n; i++)
        if (s->coll[i]) be->ops->free(be, s->coll[i]);
    if (s->idx64) be->ops->free(be, s->idx64);
    if (s->idx32) be->ops->free(be, s->idx32);
    free(s->csrc), free(s->coll), free(s->set), free(s->get);
    for (int l = 0; s->hot_dev && l < s->n_links; l++)
        if (s->hot_dev[l]) be->ops->free(be, s->hot_dev[l]);
    free(s->hot_dev), free(s->hot_dev_cap), free(s->hot_dev_len), free(s->link_in), free(s->link_out);
    for (int i = 0; s->rt_dev && i < n; i++)
        if (s->rt_dev[i]) be->ops->free(be, s->rt_dev[i]);
    for (int i = 0; s->rt_src && i < n; i++) free(s->rt_src[i]);
    free(s->rt_dev), free(s->rt_src), free(s->rt_len), free(s->rt_src_len);
    for (int i = 0; s->step_set && i < n; i++) free(s->step_set[i]);
    for (int i = 0; s->step_get && i < n; i++) free(s->step_get[i]);
    free(s->step_set), free(s->step_get), free(s->n_step_set), free(s->n_step_get);
    for (int i = 0; s->noise && i < n; i++) free(s->noise[i]);
    for (int l = 0; s->hot && l < s->n_links; l++) free(s->hot[l]);
    free(s->store), free(s->noise), free(s->hot), free(s->hot_len), free(s->scratch), free(s->collect_slot), free(s->target_T);
    if (s->locs) iv_locs_free(s->locs, 2 * n);
    if (s->dims) iv_dims_free(s->dims, n * s->B);
    free(s->locs), free(s->dims);
}

void cvene_result_free(cvene_result *res) {
    if (!res) return;
    for (int k = 0; k < res->n_collected; k++) free(res->collected[k].data);
    free(res->collected), free(res->logits_mem);
    free(res);
}

/* ---- fused calls: index arrays built once per request ------------------- */

static cvene_status dev_alloc(run_state *s, void **p, size_t nbytes, const char *what) {
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
    int64_t o = unit_offset(l, g, comp, b, u);
    for (int v = u + 1; v < U; v++)
        if (unit_offset(l, g, comp, b, v) == o) return 1;
    return 0;
}

/* Collect with subspaces: pyvene picks dims of the flattened (U x D) units, so each picked
 * float is a unit of one row of one float, written compactly (B, U, n / U). */
static int build_collect_dims(run_state *s, int i, const geom *g, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *bl = &s->locs[2 * i + 1];
    fused_call *f = &s->set[i];
    int B = s->B, nd = s->dims[i * B].n;
    f->n = B * nd, f->R = 1, f->D = 1, f->x_rs = 1, f->src_rs = 1, f->dims_n = -1;
    if (!take_units(p, f)) return 0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < nd; k++) {
            int flat = s->dims[i * B + b].dims[k], u = flat / g->D, d = flat % g->D;
            int64_t q = (int64_t)b * nd + k; /* = b * U * (nd / U) + k */
            p->v64[f->x_off + q] = (int64_t)b * g->E + unit_offset(bl, g, r->component, b, u) + d;
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

/* A linked setter on a device (fused_on): link_out stores every unit's R x D floats after
 * the setter in the chain's buffer, slot (b U + u) R D, as the host path keeps its gathered
 * units; link_in writes that buffer back over the units before the setter when an earlier
 * intervention of the chain ran in this pass (all D floats, a unit listed twice once: the
 * host path's scatter keeps the last). */
static int build_link(run_state *s, int i, const geom *g, idx_pool *p, int64_t *cap) {
    const cvene_representation *r = &s->c->reps[i].r;
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int B = s->B, U = n_units(bl);
    const int64_t L = (int64_t)g->R * g->D;
    fused_call *in = &s->link_in[i], *out = &s->link_out[i];
    for (int k = 0; k < 2; k++) {
        fused_call *f = k ? in : out;
        f->on = 1, f->op = k ? CVENE_IVOP_VANILLA : CVENE_IVOP_COLLECT, f->T = s->target_T[i], f->E = g->E;
        f->R = g->R, f->D = g->D, f->x_rs = g->S, f->src_rs = g->D, f->dims_n = -1, f->n = 0;
        for (int b = 0; b < B; b++)
            for (int u = 0; u < U; u++) f->n += !(k && overwritten_later(bl, g, r->component, b, u, U));
        if (!take_units(p, f)) return 0;
        int64_t q = 0;
        for (int b = 0; b < B; b++)
            for (int u = 0; u < U; u++) {
                if (k && overwritten_later(bl, g, r->component, b, u, U)) continue;
                p->v64[f->x_off + q] = (int64_t)b * g->E + unit_offset(bl, g, r->component, b, u);
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
    fused_call *f = &s->set[i];
    int B = s->B, U = n_units(bl);
    geom g = stream_geom(&mi, r->component, r->unit, s->target_T[i], bl->present);
    f->on = 1, f->op = iv_op_of(r->type), f->T = s->target_T[i], f->E = g.E;
    if (f->op == CVENE_IVOP_COLLECT && s->dims[i * B].n >= 0) return build_collect_dims(s, i, &g, p);
    const int writes_x = f->op != CVENE_IVOP_COLLECT;
    /* a constant source of one unit's D floats is broadcast over rows, units and examples */
    const int bcast = !s->store[i] && r->source && r->source_len == g.D;
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
            p->v64[f->x_off + q] = (int64_t)b * g.E + unit_offset(bl, &g, r->component, b, u) + shift;
            p->v64[f->src_off + q] = (noise ? u * (int64_t)g.D : bcast ? 0 : ((int64_t)b * U + u) * L) + shift;
            p->v64[f->dims_off + q] = doff[b] >= 0 && run <= 0 ? doff[b] : 0;
            if (any_dims) p->v32[f->dims_n + q] = dcnt[b];
            q++;
        }
    free(doff), free(dcnt), free(first);
    if (ok && r->link_key >= 0) ok = build_link(s, i, &g, p, &s->hot_dev_cap[s->c->reps[i].link]);
    return ok;
}

/* The gather of intervention i's source into s->store[i]: (B, U, R, D). */
static int build_getter(run_state *s, int i, int T, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *sl = &s->locs[2 * i];
    fused_call *f = &s->get[i];
    geom g = stream_geom(&mi, r->component, r->unit, T, sl->present);
    int B = s->B, U = n_units(sl);
    int64_t L = (int64_t)g.R * g.D;
    f->on = 1, f->op = CVENE_IVOP_COLLECT, f->T = T, f->E = g.E;
    f->n = B * U, f->R = g.R, f->D = g.D, f->x_rs = g.S, f->src_rs = g.D, f->dims_n = -1;
    if (!take_units(p, f)) return 0;
    for (int b = 0; b < B; b++)
        for (int u = 0; u < U; u++) {
            int64_t q = (int64_t)b * U + u;
            const int row = sl->bcast ? 0 : b; /* one source example for every base example */
            p->v64[f->x_off + q] = (int64_t)row * g.E + unit_offset(sl, &g, r->component, b, u);
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
    const int B = s->B, T = s->target_T[i], op = iv_op_of(r->type);
    geom g = stream_geom(&mi, r->component, r->unit, T, bl->present);
    const int U = units_of(r, bl, T);
    const int64_t off = gru_offset(r->component, &g);
    const int bcast = !s->store[i] && r->source && r->source_len == g.D;
    const int cdims = op == CVENE_IVOP_COLLECT && s->dims[i * B].n >= 0 ? s->dims[i * B].n : -1; /* Collect dims */
    int64_t *doff = malloc(sizeof(int64_t) * (size_t)B);
    int *dcnt = malloc(sizeof(int) * (size_t)B);
    fused_call *calls = s->step_set[i] = calloc((size_t)T, sizeof(fused_call));
    s->n_step_set[i] = T;
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
        for (int b = 0; b < B; b++) f->n += step_slot(bl, b, t) >= 0 ? (cdims >= 0 ? cdims : 1) : 0;
        if (f->n == 0) continue;
        if (!(ok = take_units(p, f))) break;
        if (any_dims && !(ok = (f->dims_n = take32(p, (size_t)f->n)) >= 0)) break;
        int64_t q = 0;
        for (int b = 0; b < B; b++) {
            const int k = step_slot(bl, b, t);
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
    geom g = stream_geom(&mi, r->component, r->unit, T, sl->present);
    const int B = s->B, U = units_of(r, sl, T);
    const int64_t off = gru_offset(r->component, &g);
    fused_call *calls = s->step_get[i] = calloc((size_t)T, sizeof(fused_call));
    s->n_step_get[i] = T;
    if (!calls) return 0;
    for (int t = 0; t < T; t++) {
        fused_call *f = &calls[t];
        f->on = 1, f->op = CVENE_IVOP_COLLECT, f->T = T, f->E = g.E, f->R = 1, f->D = g.D;
        f->x_rs = g.D, f->src_rs = g.D, f->dims_n = -1, f->n = 0;
        for (int b = 0; b < B; b++) f->n += step_slot(sl, b, t) >= 0;
        if (f->n == 0) continue;
        if (!take_units(p, f)) return 0;
        int64_t q = 0;
        for (int b = 0; b < B; b++) {
            const int k = step_slot(sl, b, t);
            if (k < 0) continue;
            p->v64[f->x_off + q] = (int64_t)(sl->bcast ? 0 : b) * g.E + off;
            p->v64[f->src_off + q] = ((int64_t)b * U + k) * g.D;
            p->v64[f->dims_off + q] = 0;
            q++;
        }
    }
    return 1;
}

/* A callback on a device: link_out gathers its units (B, U, R, D) into rt_dev[i], link_in
 * writes them back (see build_link); run_round_trip calls the callback on the host between. */
static int build_round_trip(run_state *s, int i, idx_pool *p) {
    const cvene_representation *r = &s->c->reps[i].r;
    cvene_model_info mi = cvene_model_get_info(s->m);
    const iv_locs *bl = &s->locs[2 * i + 1];
    const int T = s->target_T[i], B = s->B;
    geom g = stream_geom(&mi, r->component, r->unit, T, bl->present);
    s->rt_src_len[i] = (int64_t)B * units_of(r, bl, T) * g.R * g.D; /* the gathered source's */
    s->set[i].R = g.R, s->set[i].D = g.D; /* the callback's unit shape (set[i] itself stays off) */
    if (r->unit != CVENE_UNIT_T) return build_link(s, i, &g, p, &s->rt_len[i]);
    /* unit t: per step, the rows of the examples listing it, packed: calls [0, T) gather them
     * into rt_dev (row q at q D), calls [T, 2T) write them back */
    const int64_t off = gru_offset(r->component, &g);
    fused_call *calls = s->step_set[i] = calloc(2 * (size_t)T, sizeof(fused_call));
    s->n_step_set[i] = T;
    s->rt_len[i] = (int64_t)B * g.D;
    if (!calls) return 0;
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < 2; k++) {
            fused_call *f = &calls[k * T + t];
            f->on = 1, f->op = k ? CVENE_IVOP_VANILLA : CVENE_IVOP_COLLECT, f->T = T, f->E = g.E, f->R = 1;
            f->D = g.D, f->x_rs = g.D, f->src_rs = g.D, f->dims_n = -1, f->n = 0;
            for (int b = 0; b < B; b++) f->n += step_slot(bl, b, t) >= 0;
            if (f->n == 0) continue;
            if (!take_units(p, f)) return 0;
            int64_t q = 0;
            for (int b = 0; b < B; b++) {
                if (step_slot(bl, b, t) < 0) continue;
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
static cvene_status build_fused(run_state *s, const iv_input **src) {
    idx_pool p;
    memset(&p, 0, sizeof p);
    int ok = 1;
    for (int i = 0; ok && i < s->c->n; i++) {
        const cvene_representation *r = &s->c->reps[i].r;
        const int ut = r->unit == CVENE_UNIT_T;
        if (s->store[i]) ok = ut ? build_getter_t(s, i, src[iv_group(s->c, i)]->T, &p)
                                 : build_getter(s, i, src[iv_group(s->c, i)]->T, &p);
        if (ok && fused_on(s, i)) ok = r->type == CVENE_IV_CALLBACK ? build_round_trip(s, i, &p)
                                     : ut ? build_setter_t(s, i, &p) : build_setter(s, i, &p);
    }
    cvene_status st = ok ? CVENE_OK : cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_backend *be = s->ctx->be;
    if (st == CVENE_OK) st = dev_alloc(s, (void **)&s->idx64, sizeof(int64_t) * p.n64, "intervention indices");
    if (st == CVENE_OK) st = dev_alloc(s, (void **)&s->idx32, sizeof(int32_t) * p.n32, "subspace indices");
    if (st == CVENE_OK && p.n64) st = be->ops->to_device(be, s->idx64, p.v64, sizeof(int64_t) * p.n64);
    if (st == CVENE_OK && p.n32) st = be->ops->to_device(be, s->idx32, p.v32, sizeof(int32_t) * p.n32);
    free(p.v64), free(p.v32);
    return st;
}

/* CUDA: bring the collected values back into the result (host memory). */
static cvene_status fetch_collected(run_state *s) {
    cvene_backend *be = s->ctx->be;
    if (be->device == CVENE_DEVICE_CPU) return CVENE_OK;
    for (int i = 0; i < s->c->n; i++) {
        if (!s->coll[i]) continue;
        const cvene_tensor_view *t = &s->res->collected[s->collect_slot[i]];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        CVENE_TRY(be->ops->to_host(be, t->data, s->coll[i], sizeof(float) * n));
    }
    return CVENE_OK;
}

static cvene_status prepare(run_state *s, const iv_input **src) {
    const cvene_config *c = s->c;
    cvene_ctx *ctx = s->ctx;
    int n = c->n, B = s->B;
    cvene_model_info mi = cvene_model_get_info(s->m);
    int T = 0;
    s->store = calloc((size_t)n, sizeof(float *));
    s->csrc = calloc((size_t)n, sizeof(float *));
    s->coll = calloc((size_t)n, sizeof(float *));
    s->set = calloc((size_t)n, sizeof(fused_call));
    s->get = calloc((size_t)n, sizeof(fused_call));
    s->rt_dev = calloc((size_t)n, sizeof(float *));
    s->rt_len = calloc((size_t)n, sizeof(int64_t));
    s->rt_src_len = calloc((size_t)n, sizeof(int64_t));
    s->rt_src = calloc((size_t)n, sizeof(float *));
    s->link_in = calloc((size_t)n, sizeof(fused_call));
    s->link_out = calloc((size_t)n, sizeof(fused_call));
    s->step_set = calloc((size_t)n, sizeof(fused_call *));
    s->step_get = calloc((size_t)n, sizeof(fused_call *));
    s->n_step_set = calloc((size_t)n, sizeof(int));
    s->n_step_get = calloc((size_t)n, sizeof(int));
    s->noise = calloc((size_t)n, sizeof(double *));
    s->collect_slot = malloc(sizeof(int) * (size_t)n);
    s->res->collected = calloc((size_t)n, sizeof(cvene_tensor_view));
    if (!s->store || !s->csrc || !s->coll || !s->set || !s->get || !s->rt_dev || !s->rt_src || !s->rt_len ||
        !s->rt_src_len || !s->link_in ||
        !s->link_out || !s->step_set ||
        !s->step_get ||
        !s->n_step_set || !s->n_step_get || !s->noise || !s->collect_slot ||
        !s->res->collected)
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    size_t scratch = 0;
    for (int i = 0; i < n; i++) {
        const cvene_representation *r = &c->reps[i].r;
        int g = iv_group(c, i);
        const char *cn = cvene_component_name(r->component);
        s->collect_slot[i] = -1;
        if (ctx->be->device != CVENE_DEVICE_CPU && !fused_on(s, i))
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
        if (r->type == CVENE_IV_CALLBACK && !r->fn)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d]: callback \"%s\" is not bound (cvene_config_bind_callback)", i,
                              c->reps[i].callback_name ? c->reps[i].callback_name : "?");
        if (r->type == CVENE_IV_COLLECT && src[g])
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d] is a CollectIntervention, which reads the base run: give its "
                              "group (%d) no source", i, g);
        const iv_locs *bl = &s->locs[2 * i + 1], *sl = &s->locs[2 * i];
        T = s->target_T[i];
        CVENE_TRY(check_locs(s, i, 1, T));
        geom gb = stream_geom(&mi, r->component, r->unit, T, bl->present);
        int U = units_of(r, bl, T);
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
        if ((needs_source(r) || r->type == CVENE_IV_CALLBACK) && src[g] && !r->source) {
            CVENE_TRY(check_locs(s, i, 0, src[g]->T));
            geom gs = stream_geom(&mi, getter_component(r, s->m), r->unit, src[g]->T, sl->present);
            int Us = units_of(r, sl, src[g]->T);
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
            CVENE_TRY(dev_alloc(s, (void **)&s->store[i], sizeof(float) * len, "a source store"));
        }
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
            s->collect_slot[i] = s->res->n_collected++;
            if (ctx->be->device == CVENE_DEVICE_CPU) s->coll[i] = t->data; /* the device is the host */
            else CVENE_TRY(dev_alloc(s, (void **)&s->coll[i], sizeof(float) * len, "a Collect result"));
        }
        if (r->source && fused_type(r) && needs_source(r)) {
            size_t nb = sizeof(float) * (size_t)r->source_len;
            CVENE_TRY(dev_alloc(s, (void **)&s->csrc[i], nb, "a constant source"));
            CVENE_TRY(ctx->be->ops->to_device(ctx->be, s->csrc[i], r->source, nb));
        }
        if (r->type == CVENE_IV_NOISE) {
            if (!(s->noise[i] = malloc(sizeof(double) * (size_t)U * gb.D)))
                return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            cvene_np_randn(r->noise_seed, s->noise[i], (size_t)U * gb.D);
            if (fused_on(s, i)) { /* the device adds (float)(noise * level): see fused_on */
                const double level = (double)(float)r->noise_level;
                const size_t nn = (size_t)U * gb.D;
                float *h = malloc(sizeof(float) * nn);
                if (!h) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
                for (size_t q = 0; q < nn; q++) h[q] = (float)(s->noise[i][q] * level);
                cvene_status st = dev_alloc(s, (void **)&s->csrc[i], sizeof(float) * nn, "a noise source");
                if (st == CVENE_OK) st = ctx->be->ops->to_device(ctx->be, s->csrc[i], h, sizeof(float) * nn);
                free(h);
                CVENE_TRY(st);
            }
        }
    }
    s->n_links = c->n_links;
    s->hot_dev = calloc((size_t)s->n_links + 1, sizeof(float *));
    s->hot_dev_cap = calloc((size_t)s->n_links + 1, sizeof(int64_t));
    s->hot_dev_len = calloc((size_t)s->n_links + 1, sizeof(int64_t));
    if (!s->hot_dev || !s->hot_dev_cap || !s->hot_dev_len) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    CVENE_TRY(build_fused(s, src));
    for (int l = 0; l < s->n_links; l++)
        if (s->hot_dev_cap[l] > 0)
            CVENE_TRY(dev_alloc(s, (void **)&s->hot_dev[l], sizeof(float) * (size_t)s->hot_dev_cap[l], "a link chain"));
    for (int i = 0; i < n; i++) { /* device callbacks: their units' buffers */
        if (c->reps[i].r.type != CVENE_IV_CALLBACK || !fused_on(s, i)) continue;
        const int64_t len = s->rt_len[i], slen = s->rt_src_len[i];
        CVENE_TRY(dev_alloc(s, (void **)&s->rt_dev[i], sizeof(float) * (size_t)(len ? len : 1), "a callback's units"));
        if (s->store[i] && !(s->rt_src[i] = malloc(sizeof(float) * (size_t)(slen ? slen : 1))))
            return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    s->hot = calloc((size_t)s->n_links + 1, sizeof(float *));
    s->hot_len = calloc((size_t)s->n_links + 1, sizeof(int64_t));
    s->scratch = malloc(sizeof(float) * (scratch ? scratch : 1));
    s->scratch_len = scratch;
    if (!s->hot || !s->hot_len || !s->scratch) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    return CVENE_OK;
}

static int is_active(const cvene_representation *r, const iv_input *src) {
    switch (r->type) {
    case CVENE_IV_CALLBACK: case CVENE_IV_ZERO: case CVENE_IV_NOISE: case CVENE_IV_COLLECT: return 1;
    default: return r->source != NULL || src != NULL;
    }
}

/* Interventions of group g (or all when g < 0) that act on a run. */
static int collect_setters(const run_state *s, const iv_input **src, int g, int *out) {
    int k = 0;
    for (int i = 0; i < s->c->n; i++)
        if ((g < 0 || iv_group(s->c, i) == g) && is_active(&s->c->reps[i].r, src[iv_group(s->c, i)])) out[k++] = i;
    return k;
}

static int runs_first(const run_state *s, const block *bk, const iv_input *base) {
    if (bk->in->T != base->T) return 1;
    for (int j = 0; j < bk->n_getters; j++)
        if (s->c->reps[bk->getters[j]].r.unit == CVENE_UNIT_T) return 1;
    return 0;
}

static cvene_status plan_parallel(run_state *s, const iv_input **src, const iv_input *base, int orig) {
    const cvene_config *c = s->c;
    int n = c->n;
    /* one block per distinct source input: never run the same source twice */
    block *blocks = calloc((size_t)c->n_groups + 2, sizeof(block));
    int *lists = malloc(sizeof(int) * (size_t)(2 * n + 1) * ((size_t)c->n_groups + 2));
    if (!blocks || !lists) {
        free(blocks), free(lists);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    int nb = 0;
    for (int i = 0; i < n; i++) {
        if (!s->store[i]) continue;
        const iv_input *in = src[iv_group(c, i)];
        int k = 0;
        while (k < nb && !same_input(blocks[k].in, in)) k++;
        if (k == nb) {
            blocks[nb] = (block){ROLE_SOURCE, iv_group(c, i), in, 0, NULL, 0, lists + (size_t)nb * (2 * n + 1), 0};
            nb++;
        }
        blocks[k].getters[blocks[k].n_getters++] = i;
    }
    block *pass = calloc((size_t)nb + 2, sizeof(block));
    if (!pass) {
        free(blocks), free(lists);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    cvene_status st = CVENE_OK;
    /* sources of another length (and GRU sources read at unit t, whose timesteps may come
     * after the base steps they feed) run first, batched by length, stopping at their
     * last site */
    for (int k = 0; k < nb && st == CVENE_OK; k++) {
        if (!runs_first(s, &blocks[k], base) || blocks[k].role != ROLE_SOURCE) continue;
        int m = 0, T = blocks[k].in->T;
        for (int q = k; q < nb; q++)
            if (blocks[q].role == ROLE_SOURCE && blocks[q].in->T == T && runs_first(s, &blocks[q], base)) {
                pass[m++] = blocks[q];
                blocks[q].role = -1; /* done */
            }
        st = run_pass(s, pass, m, 0);
    }
    /* the base pass: same-length sources, the base, and the clean base */
    int m = 0;
    for (int k = 0; k < nb; k++)
        if (blocks[k].role == ROLE_SOURCE) pass[m++] = blocks[k];
    int *setters = lists + (size_t)(c->n_groups + 1) * (2 * n + 1);
    pass[m++] = (block){ROLE_BASE, -1, base, 0, setters, collect_setters(s, src, -1, setters), NULL, 0};
    if (orig) pass[m++] = (block){ROLE_ORIG, -1, base, 0, NULL, 0, NULL, 0};
    if (st == CVENE_OK) st = run_pass(s, pass, m, 1);
    free(blocks), free(lists), free(pass);
    return st;
}

static cvene_status plan_serial(run_state *s, const iv_input **src, const iv_input *base, int orig) {
    const cvene_config *c = s->c;
    int n = c->n;
    int *prev = malloc(sizeof(int) * (size_t)(n + 1)), *cur = malloc(sizeof(int) * (size_t)(n + 1));
    int *get = malloc(sizeof(int) * (size_t)(n + 1));
    if (!prev || !cur || !get) {
        free(prev), free(cur), free(get);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    int n_prev = 0;
    cvene_status st = CVENE_OK;
    for (int g = 0; g < c->n_groups && st == CVENE_OK; g++) {
        if (!src[g]) continue; /* as pyvene: the previous setters stay active */
        int ng = 0;
        for (int i = 0; i < n; i++)
            if (iv_group(c, i) == g && s->store[i]) get[ng++] = i;
        if (ng) {
            block b = {ROLE_SOURCE, g, src[g], 0, prev, n_prev, get, ng};
            st = run_pass(s, &b, 1, 0);
        }
        n_prev = collect_setters(s, src, g, cur);
        int *t = prev;
        prev = cur, cur = t;
    }
    if (st == CVENE_OK) {
        block pass[2] = {{ROLE_BASE, -1, base, 0, prev, n_prev, NULL, 0}, {ROLE_ORIG, -1, base, 0, NULL, 0, NULL, 0}};
        st = run_pass(s, pass, orig ? 2 : 1, 1);
    }
    free(prev), free(cur), free(get);
    return st;
}

static cvene_status run_once(cvene_model *m, const cvene_config *c, const cvene_request *r, int diagnose,
                             cvene_result **out) {
    cvene_ctx *ctx = m->ctx;
    if (!r->base.present) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "the request has no base input");
    const iv_input *base = &r->base;
    int G = c->n_groups, B = base->B;
    if (r->n_sources > 1 && r->n_sources != G)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "the request has %d sources but the config has %d source group%s (one source per group, "
                          "or one source shared by all)", r->n_sources, G, G == 1 ? "" : "s");
    const iv_input **src = calloc((size_t)G + 1, sizeof(iv_input *));
    if (!src) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
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
    run_state s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx, s.m = m, s.c = c, s.B = B, s.in_base_T = base->T, s.diagnose = diagnose;
    cvene_result *res = calloc(1, sizeof *res);
    s.res = res;
    s.locs = calloc(2 * (size_t)c->n, sizeof(iv_locs));
    s.dims = calloc((size_t)c->n * B, sizeof(iv_dims));
    if (st == CVENE_OK && (!res || !s.locs || !s.dims)) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = iv_resolve_locations(ctx, c, r->locations, B, s.locs);
    if (st == CVENE_OK) st = iv_resolve_subspaces(ctx, c, r->subspaces, B, s.dims);
    else if (s.dims) for (int k = 0; k < c->n * B; k++) s.dims[k] = (iv_dims){NULL, -1};
    for (int i = 0; st == CVENE_OK && i < c->n; i++) { /* a source of batch 1 serves every example */
        const iv_input *in = src[iv_group(c, i)];
        if (in && in->B == 1 && B > 1) s.locs[2 * i].bcast = 1;
    }
    if (st == CVENE_OK && c->mode == CVENE_MODE_SERIAL)
        for (int i = 0; i < c->n && st == CVENE_OK; i++)
            if (src[iv_group(c, i)] && needs_source(&c->reps[i].r) && !s.locs[2 * i + 1].present &&
                r->locations)
                st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                "unit_locations: serial mode needs an entry for group %d (\"source_%d->%s\")",
                                iv_group(c, i), iv_group(c, i), iv_group(c, i) == G - 1 ? "base" : "source_N");
    if (st == CVENE_OK && !(s.target_T = malloc(sizeof(int) * (size_t)c->n)))
        st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; st == CVENE_OK && i < c->n; i++) {
        /* serial: group g's setters act on the next source present, else the base */
        s.target_T[i] = base->T;
        for (int g = iv_group(c, i) + 1; c->mode == CVENE_MODE_SERIAL && g < G; g++)
            if (src[g]) {
                s.target_T[i] = src[g]->T;
                break;
            }
    }
    if (st == CVENE_OK) st = prepare(&s, src);
    if (st == CVENE_OK)
        st = c->mode == CVENE_MODE_SERIAL ? plan_serial(&s, src, base, r->output_original)
                                          : plan_parallel(&s, src, base, r->output_original);
    if (st == CVENE_OK) st = fetch_collected(&s);
    if (res) res->B = B, res->T = base->T, res->V = cvene_model_get_info(m).vocab_size;
    state_free(&s, c->n);
    free(s.diag_host);
    free(src);
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
int cvene_result_n_passes(const cvene_result *res) { return res->n_passes; }
