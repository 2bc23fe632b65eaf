/* pyreft 0.1.0's interventions (engine/trainable.h): LoReFT, NoReFT, ConsReFT, LobiReFT, DiReFT
 * and NodiReFT, one table entry each (engine/tr_type.h). docs/training_semantics.md §3.9 and
 * tools/make_training_fixtures.py (which re-implements pyreft's classes) have the formulas.
 * All are sourceless and act per unit (keep_last_dim); act_fn is pyreft's default, "linear"
 * (the identity), and dropout 0. Names: W (D, r) the orthonormal rotate_layer weight, A, a the
 * learned_source Linear(D, r), P, p the proj_layer Linear(D, r) (not orthogonal), c a learned
 * (r) vector (ConsReFT, LobiReFT's learned_source). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/numpy_random.h"
#include "engine/tr_type.h"

typedef struct {
    float *A, *a, *dA, *da;     /* learned_source: Linear weight (r, D) and bias (r), or the vector c in a / da */
    float *P, *p, *dP, *dp;     /* proj_layer weight (r, D) and bias (r) (NoReFT, NodiReFT) */
    float *cn;                  /* c repeated per row (n_max, r) */
} reft_priv;

#define PRIV(s) ((reft_priv *)(s)->priv)
#define LS_W "learned_source.weight"
#define LS_B "learned_source.bias"
#define LS_C "learned_source"
#define PJ_W "proj_layer.weight"
#define PJ_B "proj_layer.bias"

static int has_rotation(cvene_intervention_type t) { return t != CVENE_IV_NOREFT && t != CVENE_IV_NODIREFT; }
static int has_vector(cvene_intervention_type t) { return t == CVENE_IV_CONSREFT || t == CVENE_IV_LOBIREFT; }

/* ---- tensors ---- */

/* an nn.Linear(D, r) called prefix: U(-1/sqrt(D), 1/sqrt(D)) weight then bias */
static int add_linear(tr_weights *w, const char *wname, const char *bname, int bias_trainable, uint32_t seed) {
    tr_tensor *a = tr_add(w, wname, 2, w->r, w->D, 1), *b = bname ? tr_add(w, bname, 1, w->r, 0, bias_trainable) : NULL;
    if (!a || (bname && !b)) return 0;
    tr_fill_uniform(a->value, a->numel, b ? b->value : NULL, b ? b->numel : 0, 1.0 / sqrt((double)w->D), seed);
    return 1;
}

static cvene_status init_reft(cvene_ctx *ctx, tr_weights *w, uint64_t seed) {
    const int t = w->type;
    int ok = 1;
    if (has_rotation(t)) ok = tr_init_rotation(w, w->D, w->r, seed);
    if (ok && has_vector(t)) { /* torch.rand(r) */
        tr_tensor *c = tr_add(w, LS_C, 1, w->r, 0, 1);
        if ((ok = c != NULL)) {
            cvene_np_random rng;
            cvene_np_random_seed(&rng, (uint32_t)(seed ^ 0x5eedu));
            for (int i = 0; i < w->r; i++) c->value[i] = (float)cvene_np_random_double(&rng);
        }
    }
    /* NoReFT and NodiReFT: proj_layer first (pyreft's order); NoReFT with a bias (pyreft's add_bias,
     * tr_weights_set_proj_bias), NodiReFT without (it never reads one) */
    if (ok && !has_rotation(t))
        ok = add_linear(w, PJ_W, t == CVENE_IV_NOREFT ? PJ_B : NULL, 1, (uint32_t)(seed ^ 0x9a0fu));
    if (ok && !has_vector(t)) ok = add_linear(w, LS_W, LS_B, 1, (uint32_t)(seed ^ 0x5eedu));
    return ok ? CVENE_OK : tr_fail_oom_init(ctx, w);
}

/* pyreft's LoreftIntervention.state_dict: weight and bias of its learned source, and
 * rotate_layer, the materialised (D, r) rotation (no original / base / embed_dim) */
static cvene_status export_loreft(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd) {
    const tr_tensor *A = tr_weights_find((tr_weights *)w, LS_W), *b = tr_weights_find((tr_weights *)w, LS_B);
    float *W = malloc(sizeof(float) * (size_t)w->D * w->r);
    if (!W) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    tr_sd_put(sd, "weight", 0, 2, A->shape[0], A->shape[1], A->value, 0);
    tr_sd_put(sd, "bias", 0, 1, b->shape[0], 0, b->value, 0);
    tr_sd_put(sd, "rotate_layer", 0, 2, w->D, w->r, W, 1);
    return tr_rot_materialise(ctx, w, W);
}

static cvene_status import_loreft(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        const tr_sd_tensor *s = &t[i];
        if (!strcmp(s->name, "embed_dim")) {
            CVENE_TRY(tr_sd_check_scalar(ctx, path, s, w->D));
            continue;
        }
        if (!strcmp(s->name, "interchange_dim")) continue;
        if (!strcmp(s->name, "rotate_layer")) {
            /* pyreft's load_state_dict: base[:, :r] = R with original as a fresh module has it
             * (-I: the map is then the identity), so W = R */
            tr_tensor *X = tr_weights_find(w, P_ORIGINAL), *B = tr_weights_find(w, P_BASE);
            float *R = malloc(sizeof(float) * (size_t)X->numel);
            if (!R) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            cvene_status st = tr_sd_load_into(ctx, path, s, w, X, R);
            const int D = w->D, r = w->r;
            for (int a = 0; st == CVENE_OK && a < D; a++)
                for (int b = 0; b < r; b++) {
                    B->value[(size_t)a * D + b] = R[(size_t)a * r + b];
                    X->value[(size_t)a * r + b] = a == b ? -1.0f : 0.0f;
                }
            free(R);
            CVENE_TRY(st);
            continue;
        }
        /* weight / bias are the learned source's (its own names load too) */
        const char *name = !strcmp(s->name, "weight") ? LS_W : !strcmp(s->name, "bias") ? LS_B : s->name;
        tr_tensor *x = tr_weights_find(w, name);
        if (!x) return tr_sd_unknown(ctx, path, s, w);
        CVENE_TRY(tr_sd_load_into(ctx, path, s, w, x, x->value));
    }
    return CVENE_OK;
}

/* NoReFT / NodiReFT: a full state dict with proj_layer.weight says whether it had add_bias */
static cvene_status import_proj(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n) {
    int weight = 0, bias = 0;
    for (int i = 0; i < n; i++) weight |= !strcmp(t[i].name, PJ_W), bias |= !strcmp(t[i].name, PJ_B);
    if (weight || bias) CVENE_TRY(tr_weights_set_proj_bias(ctx, w, bias));
    return tr_sd_import_default(ctx, w, path, t, n);
}

/* ---- compute state ---- */

static void state_free(tr_state *s) {
    reft_priv *p = PRIV(s);
    if (!p) return;
    float *dev[] = {p->A, p->a, p->dA, p->da, p->P, p->p, p->dP, p->dp, p->cn};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) tr_dfree(s, dev[i]);
    free(p);
    s->priv = NULL;
}

static cvene_status state_new(tr_state *s) {
    reft_priv *p = calloc(1, sizeof *p);
    if (!p) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    s->priv = p;
    const int t = s->w->type, r = s->w->r;
    const size_t rD = (size_t)r * s->D;
    cvene_status st = has_rotation(t) ? tr_rot_new(s, r) : CVENE_OK;
    if (!has_rotation(t)) s->k = r;
    if (st == CVENE_OK && !has_vector(t)) st = tr_dalloc(s, &p->A, rD);
    if (st == CVENE_OK) st = tr_dalloc(s, &p->a, (size_t)r);
    if (st == CVENE_OK && !has_vector(t)) st = tr_dalloc(s, &p->dA, rD);
    if (st == CVENE_OK) st = tr_dalloc(s, &p->da, (size_t)r);
    if (st == CVENE_OK && !has_vector(t)) st = tr_zero_dev(s, p->dA, rD);
    if (st == CVENE_OK) st = tr_zero_dev(s, p->da, (size_t)r);
    if (st == CVENE_OK && has_vector(t)) st = tr_dalloc(s, &p->cn, (size_t)s->n_max * r);
    if (st == CVENE_OK && !has_rotation(t)) {
        st = tr_dalloc(s, &p->P, rD);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->p, (size_t)r);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->dP, rD);
        if (st == CVENE_OK) st = tr_dalloc(s, &p->dp, (size_t)r);
        if (st == CVENE_OK) st = tr_zero_dev(s, p->dP, rD);
        if (st == CVENE_OK) st = tr_zero_dev(s, p->dp, (size_t)r);
    }
    return st;
}

static cvene_status upload(tr_state *s, float *dev, const char *name) {
    const tr_tensor *x = tr_weights_find(s->w, name);
    if (!x) return cvene_fail(s->ctx, CVENE_ERR_FORMAT, "%s: missing %s", cvene_intervention_type_name(s->w->type),
                              name);
    return s->ctx->be->ops->to_device(s->ctx->be, dev, x->value, sizeof(float) * (size_t)x->numel);
}

static cvene_status prepare(tr_state *s) {
    reft_priv *p = PRIV(s);
    const int t = s->w->type;
    if (s->orth) CVENE_TRY(tr_rot_prepare(s));
    if (has_vector(t)) {
        CVENE_TRY(upload(s, p->a, LS_C));
        CVENE_TRY(tr_repeat_rows(s, p->cn, p->a, (size_t)s->k));
    } else {
        CVENE_TRY(upload(s, p->A, LS_W));
        CVENE_TRY(upload(s, p->a, LS_B));
    }
    if (p->P) CVENE_TRY(upload(s, p->P, PJ_W));
    if (p->P && tr_weights_find(s->w, PJ_B)) CVENE_TRY(upload(s, p->p, PJ_B));
    return CVENE_OK;
}

/* NoReFT's proj_layer bias, when it has one */
static const float *proj_bias(tr_state *s) { return tr_weights_find(s->w, PJ_B) ? PRIV(s)->p : NULL; }

/* ---- forward: rs holds the learned source h = xb A^T + a (n, r) ---- */

static cvene_status forward(tr_state *s, float *out, int n) {
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    reft_priv *p = PRIV(s);
    const int D = s->D, k = s->k, t = s->w->type;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    if (!has_vector(t)) CVENE_TRY(op->matmul(be, s->rs, s->xb, p->A, D, 1, p->a, n, D, k));
    switch (t) {
    case CVENE_IV_LOREFT: /* out = xb + (h - xb W) W^T */
        CVENE_TRY(tr_mm(be, s->rb, s->xb, s->W, n, D, k));
        CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nk));
        CVENE_TRY(tr_mm_t(be, s->tmp, s->d, s->W, n, D, k));
        break;
    case CVENE_IV_CONSREFT: /* out = xb + (c - xb W) W^T */
        CVENE_TRY(tr_mm(be, s->rb, s->xb, s->W, n, D, k));
        CVENE_TRY(bw->affine(be, s->d, p->cn, s->rb, 1.0f, -1.0f, 0.0f, nk));
        CVENE_TRY(tr_mm_t(be, s->tmp, s->d, s->W, n, D, k));
        break;
    case CVENE_IV_LOBIREFT: /* out = xb + c W^T */
        CVENE_TRY(tr_mm_t(be, s->tmp, p->cn, s->W, n, D, k));
        break;
    case CVENE_IV_DIREFT: /* out = xb + h W^T */
        CVENE_TRY(tr_mm_t(be, s->tmp, s->rs, s->W, n, D, k));
        break;
    case CVENE_IV_NOREFT: /* out = xb + (h - (xb P^T + p)) P */
        CVENE_TRY(op->matmul(be, s->rb, s->xb, p->P, D, 1, proj_bias(s), n, D, k));
        CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nk));
        CVENE_TRY(tr_mm(be, s->tmp, s->d, p->P, n, k, D));
        break;
    default: /* NodiReFT: out = xb + h P */
        CVENE_TRY(tr_mm(be, s->tmp, s->rs, p->P, n, k, D));
        break;
    }
    return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
}

/* ---- backward ---- */

static cvene_status backward_loreft(tr_state *s, float *dxb, const float *g, int n) {
    /* d = h - rb with h = xb A^T + a; dd = g W; dW += g^T d - xb^T dd; dA += dd^T xb; da += sum dd;
     * dxb = g + dd A - dd W^T */
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    reft_priv *p = PRIV(s);
    const int D = s->D, k = s->k;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    CVENE_TRY(tr_mm(be, s->dd, g, s->W, n, D, k));
    CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->d, n, D, k, 1));
    CVENE_TRY(bw->affine(be, s->tmp, s->xb, NULL, -1.0f, 0.0f, 0.0f, nD));
    CVENE_TRY(bw->matmul_tn(be, s->dW, s->tmp, s->dd, n, D, k, 1));
    CVENE_TRY(bw->matmul_tn(be, p->dA, s->dd, s->xb, n, k, D, 1));
    CVENE_TRY(bw->sum_rows(be, p->da, s->dd, n, k, 1));
    if (!dxb) return CVENE_OK;
    CVENE_TRY(tr_mm_t(be, s->tmp, s->dd, s->W, n, D, k)); /* dd W^T */
    CVENE_TRY(bw->affine(be, s->rb, s->dd, NULL, 1.0f, 0.0f, 0.0f, nk)); /* keep dd: rb is free now */
    CVENE_TRY(op->matmul(be, s->mix, s->rb, p->A, D, 0, NULL, n, k, D)); /* dd A (n, D) */
    CVENE_TRY(bw->affine(be, s->mix, s->mix, s->tmp, 1.0f, -1.0f, 0.0f, nD));
    return bw->affine(be, dxb, g, s->mix, 1.0f, 1.0f, 0.0f, nD);
}

static cvene_status backward(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    (void)dxs; /* sourceless: no source to give a gradient */
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    reft_priv *p = PRIV(s);
    const int D = s->D, k = s->k, t = s->w->type;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    switch (t) {
    case CVENE_IV_LOREFT:
        return backward_loreft(s, dxb, g, n);
    case CVENE_IV_CONSREFT: /* dd = g W; dW += g^T d - xb^T dd; dc += sum dd; dxb = g - dd W^T */
        CVENE_TRY(tr_mm(be, s->dd, g, s->W, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->d, n, D, k, 1));
        CVENE_TRY(bw->affine(be, s->tmp, s->xb, NULL, -1.0f, 0.0f, 0.0f, nD));
        CVENE_TRY(bw->matmul_tn(be, s->dW, s->tmp, s->dd, n, D, k, 1));
        CVENE_TRY(bw->sum_rows(be, p->da, s->dd, n, k, 1));
        if (!dxb) return CVENE_OK;
        CVENE_TRY(tr_mm_t(be, s->tmp, s->dd, s->W, n, D, k));
        return bw->affine(be, dxb, g, s->tmp, 1.0f, -1.0f, 0.0f, nD);
    case CVENE_IV_LOBIREFT: /* dW += g^T c; dc += sum g W; dxb = g */
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, p->cn, n, D, k, 1));
        CVENE_TRY(tr_mm(be, s->dd, g, s->W, n, D, k));
        CVENE_TRY(bw->sum_rows(be, p->da, s->dd, n, k, 1));
        return dxb && dxb != g ? op->copy(be, dxb, g, sizeof(float) * nD) : CVENE_OK;
    case CVENE_IV_DIREFT: /* dd = g W; dW += g^T h; dA += dd^T xb; da += sum dd; dxb = g + dd A */
        CVENE_TRY(tr_mm(be, s->dd, g, s->W, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->rs, n, D, k, 1));
        break;
    case CVENE_IV_NOREFT:
        /* dd = g P^T; dP += d^T g - dd^T xb; dp -= sum dd; dA += dd^T xb; da += sum dd;
         * dxb = g + dd A - dd P */
        CVENE_TRY(op->matmul(be, s->dd, g, p->P, D, 1, NULL, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, p->dP, s->d, g, n, k, D, 1));
        CVENE_TRY(bw->affine(be, s->rb, s->dd, NULL, -1.0f, 0.0f, 0.0f, nk)); /* -dd (rb is free now) */
        CVENE_TRY(bw->matmul_tn(be, p->dP, s->rb, s->xb, n, k, D, 1));
        if (proj_bias(s)) CVENE_TRY(bw->sum_rows(be, p->dp, s->rb, n, k, 1));
        break;
    default: /* NodiReFT: dd = g P^T; dP += h^T g; dA += dd^T xb; da += sum dd; dxb = g + dd A */
        CVENE_TRY(op->matmul(be, s->dd, g, p->P, D, 1, NULL, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, p->dP, s->rs, g, n, k, D, 1));
        break;
    }
    /* DiReFT, NoReFT, NodiReFT: the learned source's Linear */
    CVENE_TRY(bw->matmul_tn(be, p->dA, s->dd, s->xb, n, k, D, 1));
    CVENE_TRY(bw->sum_rows(be, p->da, s->dd, n, k, 1));
    if (!dxb) return CVENE_OK;
    CVENE_TRY(op->matmul(be, s->mix, s->dd, p->A, D, 0, NULL, n, k, D)); /* dd A */
    if (t == CVENE_IV_NOREFT) {
        CVENE_TRY(tr_mm(be, s->tmp, s->dd, p->P, n, k, D)); /* dd P */
        CVENE_TRY(bw->affine(be, s->mix, s->mix, s->tmp, 1.0f, -1.0f, 0.0f, nD));
    }
    return bw->affine(be, dxb, g, s->mix, 1.0f, 1.0f, 0.0f, nD);
}

static cvene_status finish_grads(tr_state *s) {
    reft_priv *p = PRIV(s);
    tr_weights *w = s->w;
    if (s->orth) CVENE_TRY(tr_rot_finish(s));
    if (has_vector(w->type)) return tr_grad_from_dev(s, tr_weights_find(w, LS_C), p->da);
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(w, LS_W), p->dA));
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(w, LS_B), p->da));
    if (p->P) {
        tr_tensor *pb = tr_weights_find(w, PJ_B);
        CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(w, PJ_W), p->dP));
        if (pb && pb->trainable) CVENE_TRY(tr_grad_from_dev(s, pb, p->dp));
    }
    return CVENE_OK;
}

/* ---- the entries ---- */

const tr_type tr_type_loreft = {
    CVENE_IV_LOREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    export_loreft, import_loreft,
};
const tr_type tr_type_noreft = {
    CVENE_IV_NOREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    NULL, import_proj,
};
const tr_type tr_type_consreft = {
    CVENE_IV_CONSREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    NULL, NULL,
};
const tr_type tr_type_lobireft = {
    CVENE_IV_LOBIREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    NULL, NULL,
};
const tr_type tr_type_direft = {
    CVENE_IV_DIREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    NULL, NULL,
};
const tr_type tr_type_nodireft = {
    CVENE_IV_NODIREFT, 0, TR_R_RANK, init_reft, state_new, state_free, prepare, forward, backward, finish_grads,
    NULL, import_proj,
};
