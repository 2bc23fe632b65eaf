/* Trainable interventions (engine/trainable.h): tensors, initialisation, forward, backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/numpy_random.h"
#include "engine/trainable.h"

/* LAPACK (in Debian's OpenBLAS): QR for the initial orthogonal matrices */
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);

#define P_ORIGINAL "rotate_layer.parametrizations.weight.original"
#define P_BASE "rotate_layer.parametrizations.weight.0.base"

int tr_type_trainable(cvene_intervention_type t) { return t >= CVENE_IV_ROTATED_SPACE && t < CVENE_IV_N_TYPES; }

static int rotated(cvene_intervention_type t) {
    return t == CVENE_IV_ROTATED_SPACE || t == CVENE_IV_LOW_RANK_ROTATED_SPACE ||
           t == CVENE_IV_BOUNDLESS_ROTATED_SPACE || t == CVENE_IV_SIGMOID_MASK_ROTATED_SPACE || t == CVENE_IV_LOREFT;
}
/* the types whose rotation is D x D (the others' is D x r) */
static int square(cvene_intervention_type t) {
    return t == CVENE_IV_ROTATED_SPACE || t == CVENE_IV_BOUNDLESS_ROTATED_SPACE ||
           t == CVENE_IV_SIGMOID_MASK_ROTATED_SPACE;
}

/* ---- tensors ---- */

static tr_tensor *add(tr_weights *w, const char *name, int ndim, int64_t d0, int64_t d1, int trainable) {
    if (w->n == TR_MAX_TENSORS) return NULL;
    tr_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim, t->shape[0] = d0, t->shape[1] = d1, t->trainable = trainable;
    t->numel = ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1;
    t->value = calloc((size_t)t->numel, sizeof(float));
    if (trainable) {
        t->grad = calloc((size_t)t->numel, sizeof(float));
        t->m = calloc((size_t)t->numel, sizeof(float));
        t->v = calloc((size_t)t->numel, sizeof(float));
    }
    if (!t->value || (trainable && (!t->grad || !t->m || !t->v))) {
        free(t->value), free(t->grad), free(t->m), free(t->v);
        return NULL;
    }
    w->n++;
    return t;
}

void tr_weights_free(tr_weights *w) {
    for (int i = 0; w && i < w->n; i++) free(w->t[i].value), free(w->t[i].grad), free(w->t[i].m), free(w->t[i].v);
    if (w) w->n = 0;
}

tr_tensor *tr_weights_find(tr_weights *w, const char *name) {
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return &w->t[i];
    return NULL;
}

void tr_weights_zero_grad(tr_weights *w) {
    for (int i = 0; i < w->n; i++)
        if (w->t[i].grad) memset(w->t[i].grad, 0, sizeof(float) * (size_t)w->t[i].numel);
}

cvene_status tr_weights_copy(cvene_ctx *ctx, tr_weights *dst, const tr_weights *src) {
    memset(dst, 0, sizeof *dst);
    dst->type = src->type, dst->D = src->D, dst->r = src->r;
    for (int i = 0; i < src->n; i++) {
        const tr_tensor *s = &src->t[i];
        tr_tensor *d = add(dst, s->name, s->ndim, s->shape[0], s->shape[1], s->trainable);
        if (!d) {
            tr_weights_free(dst);
            return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory copying an intervention's weights");
        }
        memcpy(d->value, s->value, sizeof(float) * (size_t)s->numel);
        if (s->trainable) {
            memcpy(d->m, s->m, sizeof(float) * (size_t)s->numel);
            memcpy(d->v, s->v, sizeof(float) * (size_t)s->numel);
        }
    }
    return CVENE_OK;
}

/* pyvene's IntervenableModel.set_temperature reaches Boundless and SigmoidMask only */
int tr_has_temperature(const tr_weights *w) {
    return w->type == CVENE_IV_BOUNDLESS_ROTATED_SPACE || w->type == CVENE_IV_SIGMOID_MASK;
}

void tr_set_temperature(tr_weights *w, float t) {
    tr_tensor *tt = tr_weights_find(w, "temperature");
    if (tt) tt->value[0] = t;
}

/* An n x n orthogonal matrix (row-major) from the QR of Gaussian noise, columns signed so R's
 * diagonal is positive (torch.nn.init.orthogonal_'s construction; not its numbers). */
static int random_orthogonal(int n, uint32_t seed, double *out) {
    double *a = malloc(sizeof(double) * (size_t)n * n), *tau = malloc(sizeof(double) * (size_t)n);
    double wq = 0;
    int lwork = -1, info = 0;
    if (!a || !tau) goto fail;
    cvene_np_randn(seed, a, (size_t)n * n); /* column-major for LAPACK: the transpose, also Gaussian */
    dgeqrf_(&n, &n, a, &n, tau, &wq, &lwork, &info);
    lwork = (int)wq;
    double *work = malloc(sizeof(double) * (size_t)(lwork > n ? lwork : n));
    if (!work) goto fail;
    dgeqrf_(&n, &n, a, &n, tau, work, &lwork, &info);
    double *sign = malloc(sizeof(double) * (size_t)n);
    if (info == 0 && sign) {
        for (int j = 0; j < n; j++) sign[j] = a[(size_t)j * n + j] < 0 ? -1.0 : 1.0; /* R's diagonal */
        dorgqr_(&n, &n, &n, a, &n, tau, work, &lwork, &info);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) out[(size_t)i * n + j] = a[(size_t)j * n + i] * sign[j];
    }
    free(work), free(sign), free(a), free(tau);
    return info == 0 && sign ? 0 : -1;
fail:
    free(a), free(tau);
    return -1;
}

cvene_status tr_weights_init(cvene_ctx *ctx, tr_weights *w, cvene_intervention_type type, int D, int r,
                             uint64_t seed) {
    memset(w, 0, sizeof *w);
    w->type = type, w->D = D, w->r = r;
    if (!tr_type_trainable(type)) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s is not a trainable intervention",
                                                    cvene_intervention_type_name(type));
    const int low = type == CVENE_IV_LOW_RANK_ROTATED_SPACE || type == CVENE_IV_LOREFT;
    if (D < 1 || (low && (r < 1 || r > D)) || (type == CVENE_IV_ROTATED_SPACE && (r < 0 || r > D)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "%s: %s %d is outside [1, %d] (the dimension of the stream it acts on)",
                          cvene_intervention_type_name(type), low ? "low_rank_dimension" : "interchange dimension", r,
                          D);
    int ok = 1;
    if (rotated(type)) {
        const int k = square(type) ? D : r;
        tr_tensor *orig = add(w, P_ORIGINAL, 2, D, k, 1), *base = add(w, P_BASE, 2, D, D, 0);
        double *q = malloc(sizeof(double) * (size_t)D * D);
        ok = orig && base && q && random_orthogonal(D, (uint32_t)seed, q) == 0;
        for (int64_t i = 0; ok && i < (int64_t)D * D; i++) base->value[i] = (float)q[i];
        for (int j = 0; ok && j < k; j++) orig->value[(size_t)j * k + j] = -1.0f; /* torch's right_inverse: -I */
        free(q);
    }
    switch (type) {
    case CVENE_IV_BOUNDLESS_ROTATED_SPACE: {
        tr_tensor *b = add(w, "intervention_boundaries", 1, 1, 0, 1), *t = add(w, "temperature", 0, 0, 0, 0);
        ok = ok && b && t;
        if (ok) b->value[0] = 0.5f, t->value[0] = 50.0f;
        break;
    }
    case CVENE_IV_SIGMOID_MASK_ROTATED_SPACE: { /* its temperature gets a gradient and trains (pyvene) */
        tr_tensor *mk = add(w, "masks", 1, D, 0, 1), *t = add(w, "temperature", 0, 0, 0, 1);
        ok = ok && mk && t;
        for (int i = 0; ok && i < D; i++) mk->value[i] = 100.0f; /* pyvene: close to 1 after the sigmoid */
        if (ok) t->value[0] = 50.0f;
        break;
    }
    case CVENE_IV_SIGMOID_MASK: {
        tr_tensor *mk = add(w, "mask", 1, D, 0, 1), *t = add(w, "temperature", 0, 0, 0, 0);
        ok = ok && mk && t;
        if (ok) t->value[0] = 0.01f;
        break;
    }
    case CVENE_IV_LOREFT: { /* nn.Linear(D, r): U(-1/sqrt(D), 1/sqrt(D)) weight and bias */
        tr_tensor *a = add(w, "learned_source.weight", 2, r, D, 1), *b = add(w, "learned_source.bias", 1, r, 0, 1);
        ok = ok && a && b;
        if (ok) {
            cvene_np_random rng;
            cvene_np_random_seed(&rng, (uint32_t)(seed ^ 0x5eedu));
            const double bound = 1.0 / sqrt((double)D);
            for (int64_t i = 0; i < a->numel; i++) a->value[i] = (float)((2 * cvene_np_random_double(&rng) - 1) * bound);
            for (int64_t i = 0; i < b->numel; i++) b->value[i] = (float)((2 * cvene_np_random_double(&rng) - 1) * bound);
        }
        break;
    }
    default:
        break;
    }
    if (!ok) {
        tr_weights_free(w);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory initialising a %s (D = %d)",
                          cvene_intervention_type_name(type), D);
    }
    return CVENE_OK;
}

/* ---- compute state ---- */

struct tr_state {
    cvene_ctx *ctx;
    tr_weights *w;
    int n_max, D, k;            /* k: W's columns */
    orth_param *orth;
    double *X, *base, *Wd, *dWd, *dXd; /* host double work (D x k, D x D) */
    float *Wh, *dWh;            /* host f32 W and its gradient */
    float *W, *dW;              /* device (D, k) */
    float *mask, *maskn;        /* device: the mask (D) and it repeated per row (n_max, D) */
    float *dmn;                 /* device (n_max, D): the mask's gradient per row, summed later */
    float *dm;                  /* device (D) */
    float *A, *a, *dA, *da;     /* LoReFT's Linear (r, D), (r) and gradients, device */
    float *xb, *xs, *rb, *rs, *mix, *tmp, *d, *dd; /* device work: (n_max, D) or (n_max, k) */
    float *mh;                  /* host mask (D) */
    int n;                      /* rows of the last forward */
};

static cvene_status dalloc(tr_state *s, float **p, size_t n) {
    cvene_backend *be = s->ctx->be;
    if (be->ops->alloc(be, (void **)p, (n ? n : 1) * sizeof(float)) != CVENE_OK) {
        *p = NULL;
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "cannot allocate %zu floats for a trainable intervention", n);
    }
    return CVENE_OK;
}

void tr_state_free(tr_state *s) {
    if (!s) return;
    cvene_backend *be = s->ctx->be;
    float *dev[] = {s->W, s->dW, s->mask, s->maskn, s->dmn, s->dm, s->A, s->a, s->dA, s->da,
                    s->xb, s->xs, s->rb, s->rs, s->mix, s->tmp, s->d, s->dd};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) be->ops->free(be, dev[i]);
    orth_free(s->orth);
    free(s->X), free(s->base), free(s->Wd), free(s->dWd), free(s->dXd), free(s->Wh), free(s->dWh), free(s->mh);
    free(s);
}

static cvene_status zero_dev(tr_state *s, float *p, size_t n) {
    float *z = calloc(n ? n : 1, sizeof(float));
    if (!z) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = s->ctx->be->ops->to_device(s->ctx->be, p, z, n * sizeof(float));
    free(z);
    return st;
}

cvene_status tr_state_new(cvene_ctx *ctx, tr_weights *w, int n_max, tr_state **out) {
    *out = NULL;
    if (!ctx->be->ops->bwd)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no backward ops yet",
                          ctx->be->ops->name);
    tr_state *s = calloc(1, sizeof *s);
    if (!s) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    s->ctx = ctx, s->w = w, s->n_max = n_max, s->D = w->D;
    const int D = w->D, t = w->type;
    s->k = rotated(t) ? (square(t) ? D : w->r) : 0;
    const size_t nD = (size_t)n_max * D, Dk = (size_t)D * s->k;
    cvene_status st = CVENE_OK;
    if (rotated(t)) {
        s->orth = orth_new(D, s->k);
        s->X = malloc(sizeof(double) * Dk), s->base = malloc(sizeof(double) * (size_t)D * D);
        s->Wd = malloc(sizeof(double) * Dk), s->dWd = malloc(sizeof(double) * Dk), s->dXd = malloc(sizeof(double) * Dk);
        s->Wh = malloc(sizeof(float) * Dk), s->dWh = malloc(sizeof(float) * Dk);
        if (!s->orth || !s->X || !s->base || !s->Wd || !s->dWd || !s->dXd || !s->Wh || !s->dWh)
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        if (st == CVENE_OK) st = dalloc(s, &s->W, Dk);
        if (st == CVENE_OK) st = dalloc(s, &s->dW, Dk);
        if (st == CVENE_OK) st = zero_dev(s, s->dW, Dk);
    }
    const int masked = t == CVENE_IV_BOUNDLESS_ROTATED_SPACE || t == CVENE_IV_SIGMOID_MASK_ROTATED_SPACE ||
                       t == CVENE_IV_SIGMOID_MASK || t == CVENE_IV_ROTATED_SPACE;
    if (st == CVENE_OK && masked) {
        if (!(s->mh = malloc(sizeof(float) * (size_t)D))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        if (st == CVENE_OK) st = dalloc(s, &s->mask, (size_t)D);
        if (st == CVENE_OK) st = dalloc(s, &s->maskn, nD);
        if (st == CVENE_OK) st = dalloc(s, &s->dmn, nD);
        if (st == CVENE_OK) st = dalloc(s, &s->dm, (size_t)D);
        if (st == CVENE_OK) st = zero_dev(s, s->dm, (size_t)D);
    }
    if (st == CVENE_OK && t == CVENE_IV_LOREFT) {
        const size_t rD = (size_t)w->r * D;
        st = dalloc(s, &s->A, rD);
        if (st == CVENE_OK) st = dalloc(s, &s->a, (size_t)w->r);
        if (st == CVENE_OK) st = dalloc(s, &s->dA, rD);
        if (st == CVENE_OK) st = dalloc(s, &s->da, (size_t)w->r);
        if (st == CVENE_OK) st = zero_dev(s, s->dA, rD);
        if (st == CVENE_OK) st = zero_dev(s, s->da, (size_t)w->r);
    }
    /* (n_max, D) covers every (n, k) use too (k <= D) */
    float **work[] = {&s->xb, &s->xs, &s->mix, &s->tmp, &s->rb, &s->rs, &s->d, &s->dd};
    for (size_t i = 0; st == CVENE_OK && i < sizeof work / sizeof *work; i++) st = dalloc(s, work[i], nD);
    if (st != CVENE_OK) {
        tr_state_free(s);
        return st;
    }
    *out = s;
    return CVENE_OK;
}

static float sigmoidf_(double x) { return (float)(1.0 / (1.0 + exp(-x))); }

cvene_status tr_prepare(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    tr_weights *w = s->w;
    const int D = s->D, t = w->type;
    if (s->orth) {
        const tr_tensor *X = tr_weights_find(w, P_ORIGINAL), *B = tr_weights_find(w, P_BASE);
        if (!X || !B) return cvene_fail(s->ctx, CVENE_ERR_FORMAT, "%s: missing " P_ORIGINAL " or " P_BASE,
                                        cvene_intervention_type_name(w->type));
        for (int64_t i = 0; i < X->numel; i++) s->X[i] = X->value[i];
        for (int64_t i = 0; i < B->numel; i++) s->base[i] = B->value[i];
        if (orth_forward(s->orth, s->X, s->base, s->Wd) != 0)
            return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory materialising a rotation");
        for (int64_t i = 0; i < X->numel; i++) s->Wh[i] = (float)s->Wd[i]; /* torch keeps W in f32 */
        CVENE_TRY(be->ops->to_device(be, s->W, s->Wh, sizeof(float) * (size_t)X->numel));
    }
    if (s->mask) {
        const tr_tensor *tt = tr_weights_find(w, "temperature");
        const float temp = tt ? tt->value[0] : 1.0f;
        if (t == CVENE_IV_ROTATED_SPACE) { /* a hard mask: the first k dims come from the source */
            for (int i = 0; i < D; i++) s->mh[i] = i < w->r ? 1.0f : 0.0f;
        } else if (t == CVENE_IV_BOUNDLESS_ROTATED_SPACE) {
            const float b = tr_weights_find(w, "intervention_boundaries")->value[0];
            const float bc = b < 1e-3f ? 1e-3f : b > 1.0f ? 1.0f : b;
            const float y = bc * (float)D; /* boundary_y = boundaries[0] * int(embed_dim) */
            for (int i = 0; i < D; i++)
                s->mh[i] = sigmoidf_(((float)i - 0.0f) / temp) * sigmoidf_((y - (float)i) / temp);
        } else {
            const tr_tensor *mk = tr_weights_find(w, t == CVENE_IV_SIGMOID_MASK ? "mask" : "masks");
            for (int i = 0; i < D; i++) s->mh[i] = sigmoidf_(mk->value[i] / temp);
        }
        CVENE_TRY(be->ops->to_device(be, s->mask, s->mh, sizeof(float) * (size_t)D));
        for (int b = 0; b < s->n_max; b++) /* the mask per row, for element-wise ops */
            CVENE_TRY(be->ops->copy(be, s->maskn + (size_t)b * D, s->mask, sizeof(float) * (size_t)D));
    }
    if (t == CVENE_IV_LOREFT) {
        CVENE_TRY(be->ops->to_device(be, s->A, tr_weights_find(w, "learned_source.weight")->value,
                                     sizeof(float) * (size_t)w->r * D));
        CVENE_TRY(be->ops->to_device(be, s->a, tr_weights_find(w, "learned_source.bias")->value,
                                     sizeof(float) * (size_t)w->r));
    }
    return CVENE_OK;
}

/* out (n, N) = x (n, K) @ W (K, N) with W row-major at leading dimension N */
static cvene_status mm(cvene_backend *be, float *out, const float *x, const float *W, int n, int K, int N) {
    return be->ops->matmul(be, out, x, W, N, 0, NULL, n, K, N);
}
/* out (n, K) = y (n, N) @ W^T, W (K, N) row-major */
static cvene_status mm_t(cvene_backend *be, float *out, const float *y, const float *W, int n, int K, int N) {
    return be->ops->matmul(be, out, y, W, N, 1, NULL, n, N, K);
}

cvene_status tr_forward(tr_state *s, float *out, const float *xb, const float *xs, int n) {
    if (n > s->n_max)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "trainable intervention: %d units, room for %d", n, s->n_max);
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    const int D = s->D, k = s->k, t = s->w->type;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    s->n = n;
    CVENE_TRY(op->copy(be, s->xb, xb, nD * sizeof(float)));
    CVENE_TRY(op->copy(be, s->xs, xs, nD * sizeof(float)));
    switch (t) {
    case CVENE_IV_LOW_RANK_ROTATED_SPACE: /* out = xb + (xs W - xb W) W^T */
        CVENE_TRY(mm(be, s->rb, s->xb, s->W, n, D, k));
        CVENE_TRY(mm(be, s->rs, s->xs, s->W, n, D, k));
        CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nk));
        CVENE_TRY(mm_t(be, s->tmp, s->d, s->W, n, D, k));
        return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
    case CVENE_IV_LOREFT: /* out = xb + (xb A^T + a - xb W) W^T */
        CVENE_TRY(op->matmul(be, s->rs, s->xb, s->A, D, 1, s->a, n, D, k)); /* the learned source (n, r) */
        CVENE_TRY(mm(be, s->rb, s->xb, s->W, n, D, k));
        CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nk));
        CVENE_TRY(mm_t(be, s->tmp, s->d, s->W, n, D, k));
        return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
    case CVENE_IV_SIGMOID_MASK: /* out = (1 - m) xb + m xs = xb + m (xs - xb) */
        CVENE_TRY(bw->affine(be, s->d, s->xs, s->xb, 1.0f, -1.0f, 0.0f, nD));
        CVENE_TRY(bw->mul(be, s->tmp, s->maskn, s->d, nD, 0));
        return bw->affine(be, out, s->xb, s->tmp, 1.0f, 1.0f, 0.0f, nD);
    default: /* the masked rotations: mix = rb + m (rs - rb), out = mix W^T */
        CVENE_TRY(mm(be, s->rb, s->xb, s->W, n, D, D));
        CVENE_TRY(mm(be, s->rs, s->xs, s->W, n, D, D));
        CVENE_TRY(bw->affine(be, s->d, s->rs, s->rb, 1.0f, -1.0f, 0.0f, nD)); /* rs - rb */
        CVENE_TRY(bw->mul(be, s->mix, s->maskn, s->d, nD, 0));
        CVENE_TRY(bw->affine(be, s->mix, s->mix, s->rb, 1.0f, 1.0f, 0.0f, nD));
        return mm_t(be, out, s->mix, s->W, n, D, D);
    }
}

cvene_status tr_backward(tr_state *s, float *dxb, const float *g, int n) {
    if (n != s->n)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "trainable intervention: backward of %d units after a forward "
                          "of %d", n, s->n);
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    const int D = s->D, k = s->k, t = s->w->type;
    const size_t nD = (size_t)n * D, nk = (size_t)n * k;
    switch (t) {
    case CVENE_IV_LOW_RANK_ROTATED_SPACE:
        /* dd = g W; dW += g^T d + (xs - xb)^T dd; dxb = g - dd W^T */
        CVENE_TRY(mm(be, s->dd, g, s->W, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->d, n, D, k, 1));
        CVENE_TRY(bw->affine(be, s->tmp, s->xs, s->xb, 1.0f, -1.0f, 0.0f, nD));
        CVENE_TRY(bw->matmul_tn(be, s->dW, s->tmp, s->dd, n, D, k, 1));
        if (!dxb) return CVENE_OK;
        CVENE_TRY(mm_t(be, s->tmp, s->dd, s->W, n, D, k));
        return bw->affine(be, dxb, g, s->tmp, 1.0f, -1.0f, 0.0f, nD);
    case CVENE_IV_LOREFT:
        /* d = h - rb with h = xb A^T + a; dd = g W; dW += g^T d - xb^T dd; dA += dd^T xb; da += sum dd;
         * dxb = g + dd A - dd W^T */
        CVENE_TRY(mm(be, s->dd, g, s->W, n, D, k));
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->d, n, D, k, 1));
        CVENE_TRY(bw->affine(be, s->tmp, s->xb, NULL, -1.0f, 0.0f, 0.0f, nD));
        CVENE_TRY(bw->matmul_tn(be, s->dW, s->tmp, s->dd, n, D, k, 1));
        CVENE_TRY(bw->matmul_tn(be, s->dA, s->dd, s->xb, n, k, D, 1));
        CVENE_TRY(bw->sum_rows(be, s->da, s->dd, n, k, 1));
        if (!dxb) return CVENE_OK;
        CVENE_TRY(mm_t(be, s->tmp, s->dd, s->W, n, D, k)); /* dd W^T */
        CVENE_TRY(bw->affine(be, s->rb, s->dd, NULL, 1.0f, 0.0f, 0.0f, nk)); /* keep dd: rb is free now */
        CVENE_TRY(op->matmul(be, s->mix, s->rb, s->A, D, 0, NULL, n, k, D)); /* dd A (n, D) */
        CVENE_TRY(bw->affine(be, s->mix, s->mix, s->tmp, 1.0f, -1.0f, 0.0f, nD));
        return bw->affine(be, dxb, g, s->mix, 1.0f, 1.0f, 0.0f, nD);
    case CVENE_IV_SIGMOID_MASK:
        /* dm_row = g * (xs - xb); dxb = g * (1 - m) */
        CVENE_TRY(bw->mul(be, s->dmn, g, s->d, nD, 0));
        CVENE_TRY(bw->sum_rows(be, s->dm, s->dmn, n, D, 1));
        if (!dxb) return CVENE_OK;
        CVENE_TRY(bw->affine(be, s->tmp, s->maskn, NULL, -1.0f, 0.0f, 1.0f, nD));
        return bw->mul(be, dxb, g, s->tmp, nD, 0);
    default:
        /* dmix = g W; dW += g^T mix; drs = dmix m; drb = dmix (1 - m); dm += sum dmix (rs - rb);
         * dW += xb^T drb + xs^T drs; dxb = drb W^T */
        CVENE_TRY(mm(be, s->tmp, g, s->W, n, D, D)); /* dmix */
        CVENE_TRY(bw->matmul_tn(be, s->dW, g, s->mix, n, D, D, 1));
        if (t != CVENE_IV_ROTATED_SPACE) {
            CVENE_TRY(bw->mul(be, s->dmn, s->tmp, s->d, nD, 0));
            CVENE_TRY(bw->sum_rows(be, s->dm, s->dmn, n, D, 1));
        }
        CVENE_TRY(bw->mul(be, s->rs, s->tmp, s->maskn, nD, 0)); /* drs (rs is free now) */
        CVENE_TRY(bw->matmul_tn(be, s->dW, s->xs, s->rs, n, D, D, 1));
        CVENE_TRY(bw->affine(be, s->rb, s->tmp, s->rs, 1.0f, -1.0f, 0.0f, nD)); /* drb = dmix - drs */
        CVENE_TRY(bw->matmul_tn(be, s->dW, s->xb, s->rb, n, D, D, 1));
        if (!dxb) return CVENE_OK;
        return mm_t(be, dxb, s->rb, s->W, n, D, D);
    }
}

/* dsigmoid(x) = s (1 - s) */
static double dsig(double x) {
    const double s = 1.0 / (1.0 + exp(-x));
    return s * (1.0 - s);
}

cvene_status tr_finish_grads(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    tr_weights *w = s->w;
    const int D = s->D, t = w->type;
    if (s->orth) {
        tr_tensor *X = tr_weights_find(w, P_ORIGINAL);
        const size_t Dk = (size_t)D * s->k;
        CVENE_TRY(be->ops->to_host(be, s->dWh, s->dW, sizeof(float) * Dk));
        CVENE_TRY(zero_dev(s, s->dW, Dk));
        for (size_t i = 0; i < Dk; i++) s->dWd[i] = s->dWh[i];
        if (orth_backward(s->orth, s->dWd, s->dXd) != 0)
            return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory in a rotation's backward");
        for (size_t i = 0; i < Dk; i++) X->grad[i] += (float)s->dXd[i];
    }
    if (s->dm && t != CVENE_IV_ROTATED_SPACE) {
        float *dm = malloc(sizeof(float) * (size_t)D);
        if (!dm) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        cvene_status st = be->ops->to_host(be, dm, s->dm, sizeof(float) * (size_t)D);
        if (st == CVENE_OK) st = zero_dev(s, s->dm, (size_t)D);
        const float temp = tr_weights_find(w, "temperature")->value[0];
        if (st == CVENE_OK && t == CVENE_IV_BOUNDLESS_ROTATED_SPACE) {
            /* m_i = sig(i / t) sig((c D - i) / t), c = clamp(b, 1e-3, 1): dm_i/db = sig(i / t) sig'(.) D / t
             * inside the clamp's range (torch's clamp passes the gradient at its bounds too) */
            tr_tensor *b = tr_weights_find(w, "intervention_boundaries");
            const double bv = b->value[0], c = bv < 1e-3 ? 1e-3 : bv > 1.0 ? 1.0 : bv;
            double gb = 0;
            for (int i = 0; i < D; i++) {
                const double s1 = 1.0 / (1.0 + exp(-(double)i / temp));
                gb += dm[i] * s1 * dsig((c * D - i) / temp) * D / temp;
            }
            if (bv >= 1e-3 && bv <= 1.0) b->grad[0] += (float)gb;
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
        CVENE_TRY(st);
    }
    if (t == CVENE_IV_LOREFT) {
        tr_tensor *A = tr_weights_find(w, "learned_source.weight"), *a = tr_weights_find(w, "learned_source.bias");
        float *h = malloc(sizeof(float) * (size_t)A->numel);
        if (!h) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        cvene_status st = be->ops->to_host(be, h, s->dA, sizeof(float) * (size_t)A->numel);
        for (int64_t i = 0; st == CVENE_OK && i < A->numel; i++) A->grad[i] += h[i];
        if (st == CVENE_OK) st = be->ops->to_host(be, h, s->da, sizeof(float) * (size_t)a->numel);
        for (int64_t i = 0; st == CVENE_OK && i < a->numel; i++) a->grad[i] += h[i];
        free(h);
        CVENE_TRY(st);
        CVENE_TRY(zero_dev(s, s->dA, (size_t)A->numel));
        CVENE_TRY(zero_dev(s, s->da, (size_t)a->numel));
    }
    return CVENE_OK;
}
