/* pyvene's rotations and masks (engine/trainable.h): RotatedSpace, LowRankRotatedSpace,
 * BoundlessRotatedSpace, SigmoidMaskRotatedSpace and SigmoidMask, one table entry each
 * (engine/tr_type.h). docs/training_semantics.md §3.1-3.5 has the formulas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tr_type.h"

typedef struct {
    float *mask, *maskn;        /* device: the mask (D) and it repeated per row (n_max, D) */
    float *dmn;                 /* device (n_max, D): the mask's gradient per row, summed later */
    float *dm;                  /* device (D) */
    float *mh;                  /* host mask (D) */
    float *mk;                  /* LowRank with subspaces: the rank columns per row (n_max, r), device */
    float *rows;                /* host (n_max, D): per-row masks before upload */
} rot_priv;

#define PRIV(s) ((rot_priv *)(s)->priv)

static int is_masked(cvene_intervention_type t) {
    return t == CVENE_IV_BOUNDLESS_ROTATED_SPACE || t == CVENE_IV_SIGMOID_MASK_ROTATED_SPACE ||
           t == CVENE_IV_SIGMOID_MASK || t == CVENE_IV_ROTATED_SPACE;
}

/* ---- tensors ---- */

/* the types whose rotation is D x D (LowRank's is D x r) */
static int square(cvene_intervention_type t) { return t != CVENE_IV_LOW_RANK_ROTATED_SPACE; }

static cvene_status init_rot(cvene_ctx *ctx, tr_weights *w, uint64_t seed) {
    const int D = w->D, t = w->type;
    int ok = 1;
    if (t != CVENE_IV_SIGMOID_MASK) ok = tr_init_rotation(w, D, square(t) ? D : w->r, seed);
    switch (t) {
    case CVENE_IV_BOUNDLESS_ROTATED_SPACE: {
        /* torch gives the temperature a gradient, but the tutorials anneal it instead of training
         * it: a gradient here, no optimizer step */
        tr_tensor *b = tr_add(w, "intervention_boundaries", 1, 1, 0, 1), *tt = tr_add(w, "temperature", 0, 0, 0, 0);
        ok = ok && b && tt && (tt->grad = calloc(1, sizeof(float))) != NULL;
        if (ok) b->value[0] = 0.5f, tt->value[0] = 50.0f;
        break;
    }
    case CVENE_IV_SIGMOID_MASK_ROTATED_SPACE: { /* its temperature gets a gradient and trains (pyvene) */
        tr_tensor *mk = tr_add(w, "masks", 1, D, 0, 1), *tt = tr_add(w, "temperature", 0, 0, 0, 1);
        ok = ok && mk && tt;
        for (int i = 0; ok && i < D; i++) mk->value[i] = 100.0f; /* pyvene: close to 1 after the sigmoid */
        if (ok) tt->value[0] = 50.0f;
        break;
    }
    case CVENE_IV_SIGMOID_MASK: {
        tr_tensor *mk = tr_add(w, "mask", 1, D, 0, 1), *tt = tr_add(w, "temperature", 0, 0, 0, 0);
        ok = ok && mk && tt;
        if (ok) tt->value[0] = 0.01f;
        break;
    }
    default:
        break;
    }
    return ok ? CVENE_OK : tr_fail_oom_init(ctx, w);
}

/* Boundless's intervention_population: an int64 arange(D) Parameter in pyvene's state dict */
static cvene_status export_boundless(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd) {
    CVENE_TRY(tr_sd_export_default(ctx, w, sd));
    int64_t *pop = malloc(sizeof(int64_t) * (size_t)w->D);
    if (!pop) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; i < w->D; i++) pop[i] = i;
    tr_sd_put(sd, "intervention_population", 1, 1, w->D, 0, pop, 1);
    return CVENE_OK;
}

/* ---- compute state ---- */

static void state_free(tr_state *s) {
    rot_priv *p = PRIV(s);
    if (!p) return;
    float *dev[] = {p->mask, p->maskn, p->dmn, p->dm, p->mk};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) tr_dfree(s, dev[i]);
    free(p->mh), free(p->rows), free(p);
    s->priv = NULL;
}

static cvene_status state_new(tr_state *s) {
    rot_priv *p = calloc(1, sizeof *p);
    if (!p) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    s->priv = p;
    const int D = s->D, t = s->w->type;
    const size_t nD = (size_t)s->n_max * D;
    cvene_status st = CVENE_OK;
    if (t != CVENE_IV_SIGMOID_MASK) st = tr_rot_new(s, square(t) ? D : s->w->r);
    if (st == CVENE_OK && !(p->rows = malloc(sizeof(float) * nD))) st = cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK && is_masked(t)) {
        if (!(p->mh = malloc(sizeof(float) * (size_t)D))) st = cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        if (st == CVENE_OK) st = tr_dalloc(s, &p->mask, (size_t)D);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->maskn, nD);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->dmn, nD);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->dm, (size_t)D);
        if (st == CVENE_OK) st = tr_zero_dev(s, p->dm, (size_t)D);
    }
    if (st == CVENE_OK && t == CVENE_IV_LOW_RANK_ROTATED_SPACE) st = tr_dalloc(s, &p->mk, (size_t)s->n_max * s->k);
    return st;
}

static float sigmoidf_(double x) { return (float)(1.0 / (1.0 + exp(-x))); }

static int has_subspaces(const tr_state *s) { return s->sub_rows > 0; }

static cvene_status prepare(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    rot_priv *p = PRIV(s);
    tr_weights *w = s->w;
    const int D = s->D, t = w->type;
    if (s->orth) CVENE_TRY(tr_rot_prepare(s));
    if (t == CVENE_IV_LOW_RANK_ROTATED_SPACE && has_subspaces(s)) { /* the rank columns each row keeps */
        const int k = s->k;
        float *ones = malloc(sizeof(float) * (size_t)k);
        if (!ones) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        for (int i = 0; i < k; i++) ones[i] = 1.0f;
        cvene_status st = tr_subspace_mask(s, p->rows, k, ones, "rank columns");
        free(ones);
        CVENE_TRY(st);
        CVENE_TRY(be->ops->to_device(be, p->mk, p->rows, sizeof(float) * (size_t)s->n_max * k));
    }
    if (p->mask) {
        const tr_tensor *tt = tr_weights_find(w, "temperature");
        const float temp = tt ? tt->value[0] : 1.0f;
        if (t == CVENE_IV_ROTATED_SPACE) { /* a hard mask: the first k dims come from the source */
            for (int i = 0; i < D; i++) p->mh[i] = i < w->r ? 1.0f : 0.0f;
        } else if (t == CVENE_IV_BOUNDLESS_ROTATED_SPACE) {
            const float b = tr_weights_find(w, "intervention_boundaries")->value[0];
            const float bc = b < 1e-3f ? 1e-3f : b > 1.0f ? 1.0f : b;
            const float y = bc * (float)D; /* boundary_y = boundaries[0] * int(embed_dim) */
            for (int i = 0; i < D; i++)
                p->mh[i] = sigmoidf_(((float)i - 0.0f) / temp) * sigmoidf_((y - (float)i) / temp);
        } else {
            const tr_tensor *mk = tr_weights_find(w, t == CVENE_IV_SIGMOID_MASK ? "mask" : "masks");
            for (int i = 0; i < D; i++) p->mh[i] = sigmoidf_(mk->value[i] / temp);
        }
        CVENE_TRY(be->ops->to_device(be, p->mask, p->mh, sizeof(float) * (size_t)D));
        if (t == CVENE_IV_ROTATED_SPACE && has_subspaces(s)) { /* each row its own rotated dims */
            CVENE_TRY(tr_subspace_mask(s, p->rows, D, p->mh, "rotated dims"));
            CVENE_TRY(be->ops->to_device(be, p->maskn, p->rows, sizeof(float) * (size_t)s->n_max * D));
        } else {
            CVENE_TRY(tr_repeat_rows(s, p->maskn, p->mask, (size_t)D)); /* the mask per row, for element-wise ops */
        }
    }
    return CVENE_OK;
}

/* ---- forward ---- */

static cvene_status forward_low_rank(tr_state *s, float *out, int n) {
    /* out = xb + ((xs W - xb W) * M) W^T, M only with subspaces */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    const int D = s->D, k = s->k;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    CVENE_TRY(tr_mm(be, s->rb, s->xb, s->W, n, D, k));
    CVENE_TRY(tr_mm(be, s->rs, s->xs, s->W, n, D, k));
    CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nk));
    if (has_subspaces(s)) CVENE_TRY(bw->mul(be, s->d, s->d, PRIV(s)->mk, nk, 0));
    CVENE_TRY(tr_mm_t(be, s->tmp, s->d, s->W, n, D, k));
    return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
}

static cvene_status forward_sigmoid_mask(tr_state *s, float *out, int n) {
    /* out = (1 - m) xb + m xs = xb + m (xs - xb) */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    const size_t nD = (size_t)n * s->D;
    CVENE_TRY(bw->affine(be, s->d, s->xs, s->xb, 1.0f, -1.0f, 0.0f, nD));
    CVENE_TRY(bw->mul(be, s->tmp, PRIV(s)->maskn, s->d, nD, 0));
    return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
}

static cvene_status forward_masked(tr_state *s, float *out, int n) {
    /* the masked rotations: mix = rb + m (rs - rb), out = mix W^T */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    const int D = s->D;
    const size_t nD = (size_t)n * D;
    CVENE_TRY(tr_mm(be, s->rb, s->xb, s->W, n, D, D));
    CVENE_TRY(tr_mm(be, s->rs, s->xs, s->W, n, D, D));
    CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nD)); /* rs - rb */
    CVENE_TRY(bw->mul(be, s->mix, PRIV(s)->maskn, s->d, nD, 0));
    CVENE_TRY(bw->affine(be, s->mix, s->mix, s->rb, 1.0f, 1.0f, 0.0f, nD));
    return tr_mm_t(be, out, s->mix, s->W, n, D, D);
}

/* ---- backward ---- */

static cvene_status backward_low_rank(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dd = (g W) M; dW += g^T d + (xs - xb)^T dd; dxb = g - dd W^T; dxs = dd W^T */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    const int D = s->D, k = s->k;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    CVENE_TRY(tr_mm(be, s->dd, g, s->W, n, D, k));
    if (has_subspaces(s)) CVENE_TRY(bw->mul(be, s->dd, s->dd, PRIV(s)->mk, nk, 0));
    CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->d, n, D, k, 1));
    CVENE_TRY(bw->affine(be, s->tmp, s->xs, s->xb, 1.0f, -1.0f, 0.0f, nD));
    CVENE_TRY(bw->matmul_tn(be, s->dW, s->tmp, s->dd, n, D, k, 1));
    if (dxs) CVENE_TRY(tr_mm_t(be, dxs, s->dd, s->W, n, D, k));
    if (!dxb) return CVENE_OK;
    CVENE_TRY(tr_mm_t(be, s->tmp, s->dd, s->W, n, D, k));
    return bw->affine(be, dxb, g, s->tmp, 1.0f, -1.0f, 0.0f, nD);
}

static cvene_status backward_sigmoid_mask(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dm_row = g * (xs - xb); dxb = g * (1 - m); dxs = g * m */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    rot_priv *p = PRIV(s);
    const size_t nD = (size_t)n * s->D;
    CVENE_TRY(bw->mul(be, p->dmn, g, s->d, nD, 0));
    CVENE_TRY(bw->sum_rows(be, p->dm, p->dmn, n, s->D, 1));
    if (dxs) CVENE_TRY(bw->mul(be, dxs, g, p->maskn, nD, 0));
    if (!dxb) return CVENE_OK;
    CVENE_TRY(bw->affine(be, s->tmp, p->maskn, NULL, -1.0f, 0.0f, 1.0f, nD));
    return bw->mul(be, dxb, g, s->tmp, nD, 0);
}

static cvene_status backward_masked(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dmix = g W; dW += g^T mix; drs = dmix m; drb = dmix (1 - m); dm += sum dmix (rs - rb);
     * dW += xb^T drb + xs^T drs; dxb = drb W^T; dxs = drs W^T */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    rot_priv *p = PRIV(s);
    const int D = s->D;
    const size_t nD = (size_t)n * D;
    CVENE_TRY(tr_mm(be, s->tmp, g, s->W, n, D, D)); /* dmix */
    CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->mix, n, D, D, 1));
    if (s->w->type != CVENE_IV_ROTATED_SPACE) {
        CVENE_TRY(bw->mul(be, p->dmn, s->tmp, s->d, nD, 0));
        CVENE_TRY(bw->sum_rows(be, p->dm, p->dmn, n, D, 1));
    }
    CVENE_TRY(bw->mul(be, s->rs, s->tmp, p->maskn, nD, 0)); /* drs (rs is free now) */
    CVENE_TRY(bw->matmul_tn(be, s->dW, s->xs, s->rs, n, D, D, 1));
    if (dxs) CVENE_TRY(tr_mm_t(be, dxs, s->rs, s->W, n, D, D));
    CVENE_TRY(bw->affine(be, s->rb, s->tmp, s->rs, 1.0f, -1.0f, 0.0f, nD)); /* drb = dmix - drs */
    CVENE_TRY(bw->matmul_tn(be, s->dW, s->xb, s->rb, n, D, D, 1));
    if (!dxb) return CVENE_OK;
    return tr_mm_t(be, dxb, s->rb, s->W, n, D, D);
}

/* ---- parameter gradients ---- */

/* dsigmoid(x) = s (1 - s) */
static double dsig(double x) {
    const double s = 1.0 / (1.0 + exp(-x));
    return s * (1.0 - s);
}

static cvene_status finish_grads(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    rot_priv *p = PRIV(s);
    tr_weights *w = s->w;
    const int D = s->D, t = w->type;
    if (s->orth) CVENE_TRY(tr_rot_finish(s));
    if (!p->dm || t == CVENE_IV_ROTATED_SPACE) return CVENE_OK;
    float *dm = malloc(sizeof(float) * (size_t)D);
    if (!dm) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = be->ops->to_host(be, dm, p->dm, sizeof(float) * (size_t)D);
    if (st == CVENE_OK) st = tr_zero_dev(s, p->dm, (size_t)D);
    const float temp = tr_weights_find(w, "temperature")->value[0];
    if (st == CVENE_OK && t == CVENE_IV_BOUNDLESS_ROTATED_SPACE) {
        /* m_i = sig(i / t) sig((c D - i) / t), c = clamp(b, 1e-3, 1): dm_i/db = sig(i / t) sig'(.) D / t
         * inside the clamp's range (torch's clamp passes the gradient at its bounds too) */
        tr_tensor *b = tr_weights_find(w, "intervention_boundaries"), *tt = tr_weights_find(w, "temperature");
        const double bv = b->value[0], c = bv < 1e-3 ? 1e-3 : bv > 1.0 ? 1.0 : bv;
        double gb = 0;
        for (int i = 0; i < D; i++) {
            const double s1 = 1.0 / (1.0 + exp(-(double)i / temp));
            gb += dm[i] * s1 * dsig((c * D - i) / temp) * D / temp;
        }
        if (bv >= 1e-3 && bv <= 1.0) b->grad[0] += (float)gb;
        if (tt->grad) { /* dm_i/dt = -(i sig'(i / t) sig(u) + u' sig(i / t) sig'(u)) / t, u = (y - i) / t, u' = y - i */
            const float bc = (float)c, y = bc * (float)D; /* as the forward (prepare) computes it */
            double gt = 0;
            for (int i = 0; i < D; i++) {
                const double a = i / (double)temp, u = ((double)y - i) / temp;
                const double sa = 1.0 / (1.0 + exp(-a)), su = 1.0 / (1.0 + exp(-u));
                gt -= dm[i] * (i * dsig(a) * su + ((double)y - i) * sa * dsig(u)) / temp / temp;
            }
            tt->grad[0] += (float)gt;
        }
    } else if (st == CVENE_OK) { /* m = sig(mask / t) */
        tr_tensor *mk = tr_weights_find(w, t == CVENE_IV_SIGMOID_MASK ? "mask" : "masks");
        tr_tensor *tt = tr_weights_find(w, "temperature");
        double gt = 0;
        for (int i = 0; i < D; i++) {
            const double ds = dm[i] * dsig(mk->value[i] / temp);
            mk->grad[i] += (float)(ds / temp);
            gt -= ds * mk->value[i] / ((double)temp * temp); /* d(x / t)/dt = -x / t^2 */
        }
        if (tt->trainable) tt->grad[0] += (float)gt; /* SigmoidMask's is a detached copy in pyvene */
    }
    free(dm);
    return st;
}

/* ---- the entries ---- */

const tr_type tr_type_rotated_space = {
    CVENE_IV_ROTATED_SPACE, TR_FLAT | TR_SUBSPACES, TR_R_INTERCHANGE, init_rot, state_new, state_free, prepare,
    forward_masked, backward_masked, finish_grads, NULL, NULL,
};
const tr_type tr_type_low_rank = {
    CVENE_IV_LOW_RANK_ROTATED_SPACE, TR_FLAT | TR_SUBSPACES, TR_R_RANK, init_rot, state_new, state_free, prepare,
    forward_low_rank, backward_low_rank, finish_grads, NULL, NULL,
};
const tr_type tr_type_boundless = {
    CVENE_IV_BOUNDLESS_ROTATED_SPACE, TR_FLAT | TR_TEMPERATURE, TR_R_NONE, init_rot, state_new, state_free, prepare,
    forward_masked, backward_masked, finish_grads, export_boundless, NULL,
};
const tr_type tr_type_sigmoid_mask_rotated = {
    CVENE_IV_SIGMOID_MASK_ROTATED_SPACE, TR_FLAT, TR_R_NONE, init_rot, state_new, state_free, prepare,
    forward_masked, backward_masked, finish_grads, NULL, NULL,
};
/* localist: per unit; its temperature is a detached copy in pyvene's forward (grad None) */
const tr_type tr_type_sigmoid_mask = {
    CVENE_IV_SIGMOID_MASK, TR_TEMPERATURE, TR_R_NONE, init_rot, state_new, state_free, prepare,
    forward_sigmoid_mask, backward_sigmoid_mask, finish_grads, NULL, NULL,
};
