/* Trainable interventions (engine/trainable.h): the table's dispatch, and what the type
 * families (engine/tr_rotate.c, tr_reft.c, tr_autoencoder.c) share: tensors, device buffers,
 * the orthogonal rotation, subspace masks and the default state-dict mapping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/numpy_random.h"
#include "engine/tr_type.h"

/* LAPACK (in Debian's OpenBLAS): QR for the initial orthogonal matrices */
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);

/* ---- the table ---- */

static const tr_type *const table[CVENE_IV_N_TYPES] = {
    [CVENE_IV_ROTATED_SPACE] = &tr_type_rotated_space,
    [CVENE_IV_LOW_RANK_ROTATED_SPACE] = &tr_type_low_rank,
    [CVENE_IV_BOUNDLESS_ROTATED_SPACE] = &tr_type_boundless,
    [CVENE_IV_SIGMOID_MASK_ROTATED_SPACE] = &tr_type_sigmoid_mask_rotated,
    [CVENE_IV_SIGMOID_MASK] = &tr_type_sigmoid_mask,
    [CVENE_IV_LOREFT] = &tr_type_loreft,
    [CVENE_IV_PCA_ROTATED_SPACE] = &tr_type_pca,
    [CVENE_IV_AUTOENCODER] = &tr_type_autoencoder,
    [CVENE_IV_JUMPRELU_AUTOENCODER] = &tr_type_jumprelu,
    [CVENE_IV_NOREFT] = &tr_type_noreft,
    [CVENE_IV_CONSREFT] = &tr_type_consreft,
    [CVENE_IV_LOBIREFT] = &tr_type_lobireft,
    [CVENE_IV_DIREFT] = &tr_type_direft,
    [CVENE_IV_NODIREFT] = &tr_type_nodireft,
};

const tr_type *tr_type_get(cvene_intervention_type t) {
    return t >= 0 && t < CVENE_IV_N_TYPES ? table[t] : NULL;
}

int tr_type_trainable(cvene_intervention_type t) { return tr_type_get(t) != NULL; }
int tr_type_flattened(cvene_intervention_type t) {
    const tr_type *ty = tr_type_get(t);
    return ty && (ty->flags & TR_FLAT);
}
tr_r_kind tr_type_r_kind(cvene_intervention_type t) {
    const tr_type *ty = tr_type_get(t);
    return ty ? ty->r_kind : TR_R_NONE;
}

/* pyvene's IntervenableModel.set_temperature reaches Boundless and SigmoidMask only */
int tr_has_temperature(const tr_weights *w) {
    const tr_type *ty = tr_type_get(w->type);
    return ty && (ty->flags & TR_TEMPERATURE);
}

void tr_set_temperature(tr_weights *w, float t) {
    tr_tensor *tt = tr_weights_find(w, "temperature");
    if (tt) tt->value[0] = t;
}

/* ---- tensors ---- */

tr_tensor *tr_add(tr_weights *w, const char *name, int ndim, int64_t d0, int64_t d1, int trainable) {
    if (w->n == TR_MAX_TENSORS) return NULL;
    tr_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim, t->shape[0] = d0, t->shape[1] = d1, t->trainable = trainable;
    t->numel = ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1;
    t->value = calloc((size_t)(t->numel ? t->numel : 1), sizeof(float));
    if (trainable) {
        t->grad = calloc((size_t)(t->numel ? t->numel : 1), sizeof(float));
        t->m = calloc((size_t)(t->numel ? t->numel : 1), sizeof(float));
        t->v = calloc((size_t)(t->numel ? t->numel : 1), sizeof(float));
    }
    if (!t->value || (trainable && (!t->grad || !t->m || !t->v))) {
        free(t->value), free(t->grad), free(t->m), free(t->v);
        return NULL;
    }
    w->n++;
    return t;
}

void tr_remove(tr_weights *w, const char *name) {
    tr_tensor *t = tr_weights_find(w, name);
    if (!t) return;
    free(t->value), free(t->grad), free(t->m), free(t->v);
    const int i = (int)(t - w->t);
    memmove(&w->t[i], &w->t[i + 1], sizeof(tr_tensor) * (size_t)(w->n - i - 1));
    w->n--;
}

void tr_weights_free(tr_weights *w) {
    for (int i = 0; w && i < w->n; i++) free(w->t[i].value), free(w->t[i].grad), free(w->t[i].m), free(w->t[i].v);
    if (w) {
        free(w->inter);
        w->inter = NULL, w->n_inter = 0, w->n = 0;
    }
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
    dst->n_inter = src->n_inter, dst->inter_list = src->inter_list;
    int ok = 1;
    if (src->n_inter) {
        dst->inter = malloc(sizeof(int) * (size_t)src->n_inter);
        if ((ok = dst->inter != NULL)) memcpy(dst->inter, src->inter, sizeof(int) * (size_t)src->n_inter);
    }
    for (int i = 0; ok && i < src->n; i++) {
        const tr_tensor *s = &src->t[i];
        tr_tensor *d = tr_add(dst, s->name, s->ndim, s->shape[0], s->shape[1], s->trainable);
        if (!(ok = d != NULL)) break;
        memcpy(d->value, s->value, sizeof(float) * (size_t)s->numel);
        if (s->grad && !d->grad && !(ok = (d->grad = calloc((size_t)s->numel, sizeof(float))) != NULL)) break;
        if (s->grad) memcpy(d->grad, s->grad, sizeof(float) * (size_t)s->numel);
        if (s->trainable) {
            memcpy(d->m, s->m, sizeof(float) * (size_t)s->numel);
            memcpy(d->v, s->v, sizeof(float) * (size_t)s->numel);
        }
    }
    if (!ok) {
        tr_weights_free(dst);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory copying an intervention's weights");
    }
    return CVENE_OK;
}

cvene_status tr_weights_set_interchange(cvene_ctx *ctx, tr_weights *w, const int *dims, int n, int list) {
    const tr_r_kind rk = tr_type_r_kind(w->type);
    const char *tn = cvene_intervention_type_name(w->type);
    if (n < 1 || (n > 1 && w->type != CVENE_IV_AUTOENCODER))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: interchange_dim takes %s, got %d values", tn,
                          w->type == CVENE_IV_AUTOENCODER ? "one or more latent indices" : "one value", n);
    if (rk == TR_R_INTERCHANGE) {
        if (dims[0] < 0 || dims[0] > w->D)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: interchange dimension %d is outside [1, %d] (the "
                              "dimension of the stream it acts on)", tn, dims[0], w->D);
        w->r = dims[0];
        return CVENE_OK;
    }
    if (rk != TR_R_LATENT) return CVENE_OK; /* pyvene's forward ignores it */
    for (int i = 0; i < n; i++)
        if (dims[i] < 0 || (w->type == CVENE_IV_AUTOENCODER && dims[i] >= w->r))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: interchange_dim %d is %s (latent width %d)", tn, dims[i],
                              w->type == CVENE_IV_AUTOENCODER ? "not a latent index" : "negative", w->r);
    int *v = malloc(sizeof(int) * (size_t)n);
    if (!v) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    memcpy(v, dims, sizeof(int) * (size_t)n);
    free(w->inter);
    w->inter = v, w->n_inter = n, w->inter_list = list;
    return CVENE_OK;
}

int tr_interchange_dim(const tr_weights *w, int64_t *out, int max, int *n) {
    const tr_r_kind rk = tr_type_r_kind(w->type);
    if (rk == TR_R_LATENT && w->n_inter > 0) {
        for (int i = 0; i < w->n_inter && i < max; i++) out[i] = w->inter[i];
        *n = w->n_inter;
        return w->inter_list;
    }
    /* RotatedSpace's / PCA's swapped dims; every other type its embed_dim */
    if (max > 0) out[0] = rk == TR_R_INTERCHANGE && w->r > 0 ? w->r : w->D;
    *n = 1;
    return 0;
}

void tr_fill_uniform(float *a, int64_t na, float *b, int64_t nb, double bound, uint32_t seed) {
    cvene_np_random rng;
    cvene_np_random_seed(&rng, seed);
    for (int64_t i = 0; i < na; i++) a[i] = (float)((2 * cvene_np_random_double(&rng) - 1) * bound);
    for (int64_t i = 0; b && i < nb; i++) b[i] = (float)((2 * cvene_np_random_double(&rng) - 1) * bound);
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

int tr_init_rotation(tr_weights *w, int D, int k, uint64_t seed) {
    tr_tensor *orig = tr_add(w, P_ORIGINAL, 2, D, k, 1), *base = tr_add(w, P_BASE, 2, D, D, 0);
    double *q = malloc(sizeof(double) * (size_t)D * D);
    const int ok = orig && base && q && random_orthogonal(D, (uint32_t)seed, q) == 0;
    for (int64_t i = 0; ok && i < (int64_t)D * D; i++) base->value[i] = (float)q[i];
    for (int j = 0; ok && j < k; j++) orig->value[(size_t)j * k + j] = -1.0f; /* torch's right_inverse: -I */
    free(q);
    return ok;
}

cvene_status tr_fail_oom_init(cvene_ctx *ctx, tr_weights *w) {
    const cvene_intervention_type type = w->type;
    const int D = w->D;
    tr_weights_free(w);
    return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory initialising a %s (D = %d)", cvene_intervention_type_name(type),
                      D);
}

cvene_status tr_weights_init(cvene_ctx *ctx, tr_weights *w, cvene_intervention_type type, int D, int r,
                             uint64_t seed) {
    memset(w, 0, sizeof *w);
    w->type = type, w->D = D, w->r = r;
    const tr_type *ty = tr_type_get(type);
    const char *tn = cvene_intervention_type_name(type);
    if (!ty) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s is not a trainable intervention", tn);
    const tr_r_kind rk = ty->r_kind;
    if (D < 1 || (rk == TR_R_RANK && (r < 1 || r > D)) || (rk == TR_R_INTERCHANGE && (r < 0 || r > D)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "%s: %s %d is outside [1, %d] (the dimension of the stream it acts on)", tn,
                          rk == TR_R_RANK ? "low_rank_dimension" : rk == TR_R_INTERCHANGE ? "interchange dimension"
                                                                                          : "unit width",
                          rk == TR_R_RANK || rk == TR_R_INTERCHANGE ? r : D, D);
    if (rk == TR_R_LATENT && r < 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: its latent width (low_rank_dimension) is %d; it needs >= 1",
                          tn, r);
    return ty->init(ctx, w, seed);
}

cvene_status tr_weights_set_proj_bias(cvene_ctx *ctx, tr_weights *w, int add_bias) {
    if (w->type != CVENE_IV_NOREFT && w->type != CVENE_IV_NODIREFT)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s has no proj_layer (add_bias is NoReFT's and NodiReFT's)",
                          cvene_intervention_type_name(w->type));
    const int has = tr_weights_find(w, "proj_layer.bias") != NULL;
    if (!add_bias) tr_remove(w, "proj_layer.bias");
    /* NodiReFT never reads its bias: torch gives it no gradient, nothing trains it */
    else if (!has && !tr_add(w, "proj_layer.bias", 1, w->r, 0, w->type == CVENE_IV_NOREFT))
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    return CVENE_OK;
}

/* ---- state dicts ---- */

void tr_sd_put(tr_state_dict *sd, const char *name, int is_i64, int ndim, int64_t d0, int64_t d1, const void *data,
               int own) {
    tr_sd_tensor *t = &sd->t[sd->n];
    snprintf(sd->names[sd->n], sizeof sd->names[sd->n], "%s", name);
    t->name = sd->names[sd->n];
    t->is_i64 = is_i64, t->ndim = ndim, t->shape[0] = d0, t->shape[1] = d1;
    t->f = is_i64 ? NULL : data;
    t->l = is_i64 ? data : NULL;
    t->dtype = is_i64 ? "I64" : "F32";
    if (own) sd->own[sd->n_own++] = (void *)data;
    sd->n++;
}

void tr_state_dict_free(tr_state_dict *sd) {
    for (int i = 0; i < sd->n_own; i++) free(sd->own[i]);
    memset(sd, 0, sizeof *sd);
}

cvene_status tr_sd_export_default(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd) {
    for (int k = 0; k < w->n; k++) {
        const tr_tensor *x = &w->t[k];
        tr_sd_put(sd, x->name, 0, x->ndim, x->shape[0], x->shape[1], x->value, 0);
    }
    int n = 0;
    int64_t one;
    tr_interchange_dim(w, &one, 1, &n);
    int64_t *e = malloc(sizeof(int64_t)), *ic = malloc(sizeof(int64_t) * (size_t)n);
    if (!e || !ic) {
        free(e), free(ic);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    *e = w->D;
    const int list = tr_interchange_dim(w, ic, n, &n);
    tr_sd_put(sd, "embed_dim", 1, 0, 0, 0, e, 1);
    tr_sd_put(sd, "interchange_dim", 1, list ? 1 : 0, n, 0, ic, 1);
    return CVENE_OK;
}

cvene_status tr_state_dict_export(cvene_ctx *ctx, const tr_weights *w, tr_state_dict *sd) {
    memset(sd, 0, sizeof *sd);
    const tr_type *ty = tr_type_get(w->type);
    if (!ty) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s is not a trainable intervention",
                               cvene_intervention_type_name(w->type));
    cvene_status st = ty->export_sd ? ty->export_sd(ctx, w, sd) : tr_sd_export_default(ctx, w, sd);
    if (st != CVENE_OK) tr_state_dict_free(sd);
    return st;
}

static int64_t sd_dim(const tr_sd_tensor *s, int d) { return s->ndim > d ? s->shape[d] : 1; }

cvene_status tr_sd_load_into(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, const tr_weights *w,
                             const tr_tensor *x, float *dst) {
    int64_t numel = 1;
    for (int d = 0; d < s->ndim; d++) numel *= s->shape[d];
    const int same = s->ndim == x->ndim && (x->ndim < 1 || s->shape[0] == x->shape[0]) &&
                     (x->ndim < 2 || s->shape[1] == x->shape[1]);
    if (!same || numel != x->numel || s->is_i64)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %d dims (%lld x %lld%s) but this %s (D = %d) "
                          "needs %d (%lld x %lld)", path, s->name, s->ndim, (long long)sd_dim(s, 0),
                          (long long)sd_dim(s, 1), s->is_i64 ? ", I64" : "", cvene_intervention_type_name(w->type), w->D,
                          x->ndim, (long long)(x->ndim > 0 ? x->shape[0] : 1), (long long)(x->ndim > 1 ? x->shape[1] : 1));
    memcpy(dst, s->f, sizeof(float) * (size_t)numel);
    return CVENE_OK;
}

cvene_status tr_sd_check_scalar(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, int64_t want) {
    if (!s->is_i64 || s->ndim != 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: '%s' must be an I64 scalar (pyvene's buffer), got %s with %d dims",
                          path, s->name, s->dtype, s->ndim);
    if (s->l[0] != want)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: %s is %lld, but this intervention's is %lld (another model "
                          "or another component?)", path, s->name, (long long)s->l[0], (long long)want);
    return CVENE_OK;
}

cvene_status tr_sd_unknown(cvene_ctx *ctx, const char *path, const tr_sd_tensor *s, const tr_weights *w) {
    return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' is not in a %s's state dict", path, s->name,
                      cvene_intervention_type_name(w->type));
}

cvene_status tr_sd_import_default(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        const tr_sd_tensor *s = &t[i];
        if (!strcmp(s->name, "embed_dim")) {
            CVENE_TRY(tr_sd_check_scalar(ctx, path, s, w->D));
            continue;
        }
        if (!strcmp(s->name, "interchange_dim") || !strcmp(s->name, "intervention_population"))
            continue; /* the config's intervention_dimensions decide, as in pyvene's load */
        tr_tensor *x = tr_weights_find(w, s->name);
        if (!x) return tr_sd_unknown(ctx, path, s, w);
        CVENE_TRY(tr_sd_load_into(ctx, path, s, w, x, x->value));
    }
    return CVENE_OK;
}

cvene_status tr_state_dict_import(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n) {
    const tr_type *ty = tr_type_get(w->type);
    if (!ty) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s is not a trainable intervention",
                               cvene_intervention_type_name(w->type));
    return ty->import_sd ? ty->import_sd(ctx, w, path, t, n) : tr_sd_import_default(ctx, w, path, t, n);
}

/* ---- compute state ---- */

cvene_status tr_dalloc(tr_state *s, float **p, size_t n) {
    cvene_backend *be = s->ctx->be;
    if (be->ops->alloc(be, (void **)p, (n ? n : 1) * sizeof(float)) != CVENE_OK) {
        *p = NULL;
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "cannot allocate %zu floats for a trainable intervention", n);
    }
    return CVENE_OK;
}

void tr_dfree(tr_state *s, float *p) {
    if (p) s->ctx->be->ops->free(s->ctx->be, p);
}

cvene_status tr_zero_dev(tr_state *s, float *p, size_t n) {
    float *z = calloc(n ? n : 1, sizeof(float));
    if (!z) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = s->ctx->be->ops->to_device(s->ctx->be, p, z, n * sizeof(float));
    free(z);
    return st;
}

cvene_status tr_repeat_rows(tr_state *s, float *dst, const float *src, size_t len) {
    cvene_backend *be = s->ctx->be;
    for (int b = 0; b < s->n_max; b++) CVENE_TRY(be->ops->copy(be, dst + (size_t)b * len, src, sizeof(float) * len));
    return CVENE_OK;
}

cvene_status tr_grad_from_dev(tr_state *s, tr_tensor *t, float *dev) {
    cvene_backend *be = s->ctx->be;
    float *h = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (!h) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = be->ops->to_host(be, h, dev, sizeof(float) * (size_t)t->numel);
    for (int64_t i = 0; st == CVENE_OK && i < t->numel; i++) t->grad[i] += h[i];
    free(h);
    CVENE_TRY(st);
    return tr_zero_dev(s, dev, (size_t)t->numel);
}

cvene_status tr_mm(cvene_backend *be, float *out, const float *x, const float *W, int n, int K, int N) {
    return be->ops->matmul(be, out, x, W, N, 0, NULL, n, K, N);
}

cvene_status tr_mm_t(cvene_backend *be, float *out, const float *y, const float *W, int n, int K, int N) {
    return be->ops->matmul(be, out, y, W, N, 1, NULL, n, N, K);
}

cvene_status tr_subspace_mask(tr_state *s, float *mask, int width, const float *def, const char *what) {
    const int sub = s->sub_rows > 0 && (s->ty->flags & TR_SUBSPACES);
    for (int b = 0; b < s->n_max; b++) {
        float *row = mask + (size_t)b * width;
        if (!sub || b >= s->sub_rows) {
            for (int i = 0; i < width; i++) row[i] = def ? def[i] : 0.0f;
            continue;
        }
        for (int i = 0; i < width; i++) row[i] = 0.0f;
        for (int j = s->sub_off[b]; j < s->sub_off[b + 1]; j++) {
            const int d = s->sub_dims[j];
            if (d < 0 || d >= width)
                return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "%s: subspace dim %d of row %d is outside [0, %d) "
                                  "(%s)", cvene_intervention_type_name(s->w->type), d, b, width, what);
            row[d] = 1.0f;
        }
    }
    return CVENE_OK;
}

cvene_status tr_rot_new(tr_state *s, int k) {
    const int D = s->D;
    const size_t Dk = (size_t)D * k;
    s->k = k;
    s->orth = orth_new(D, k);
    s->X = malloc(sizeof(double) * Dk), s->base = malloc(sizeof(double) * (size_t)D * D);
    s->Wd = malloc(sizeof(double) * Dk), s->dWd = malloc(sizeof(double) * Dk), s->dXd = malloc(sizeof(double) * Dk);
    s->Wh = malloc(sizeof(float) * Dk), s->dWh = malloc(sizeof(float) * Dk);
    if (!s->orth || !s->X || !s->base || !s->Wd || !s->dWd || !s->dXd || !s->Wh || !s->dWh)
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    CVENE_TRY(tr_dalloc(s, &s->W, Dk));
    CVENE_TRY(tr_dalloc(s, &s->dW, Dk));
    return tr_zero_dev(s, s->dW, Dk);
}

void tr_rot_free(tr_state *s) {
    tr_dfree(s, s->W), tr_dfree(s, s->dW);
    s->W = s->dW = NULL;
    orth_free(s->orth);
    s->orth = NULL;
    free(s->X), free(s->base), free(s->Wd), free(s->dWd), free(s->dXd), free(s->Wh), free(s->dWh);
    s->X = s->base = s->Wd = s->dWd = s->dXd = NULL;
    s->Wh = s->dWh = NULL;
}

cvene_status tr_rot_prepare(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    tr_weights *w = s->w;
    const tr_tensor *X = tr_weights_find(w, P_ORIGINAL), *B = tr_weights_find(w, P_BASE);
    if (!X || !B) return cvene_fail(s->ctx, CVENE_ERR_FORMAT, "%s: missing " P_ORIGINAL " or " P_BASE,
                                    cvene_intervention_type_name(w->type));
    for (int64_t i = 0; i < X->numel; i++) s->X[i] = X->value[i];
    for (int64_t i = 0; i < B->numel; i++) s->base[i] = B->value[i];
    if (orth_forward(s->orth, s->X, s->base, s->Wd) != 0)
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory materialising a rotation");
    for (int64_t i = 0; i < X->numel; i++) s->Wh[i] = (float)s->Wd[i]; /* torch keeps W in f32 */
    return be->ops->to_device(be, s->W, s->Wh, sizeof(float) * (size_t)X->numel);
}

cvene_status tr_rot_finish(tr_state *s) {
    cvene_backend *be = s->ctx->be;
    tr_tensor *X = tr_weights_find(s->w, P_ORIGINAL);
    const size_t Dk = (size_t)s->D * s->k;
    CVENE_TRY(be->ops->to_host(be, s->dWh, s->dW, sizeof(float) * Dk));
    CVENE_TRY(tr_zero_dev(s, s->dW, Dk));
    for (size_t i = 0; i < Dk; i++) s->dWd[i] = s->dWh[i];
    if (orth_backward(s->orth, s->dWd, s->dXd) != 0)
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory in a rotation's backward");
    for (size_t i = 0; i < Dk; i++) X->grad[i] += (float)s->dXd[i];
    return CVENE_OK;
}

cvene_status tr_rot_materialise(cvene_ctx *ctx, const tr_weights *w, float *W) {
    const tr_tensor *X = tr_weights_find((tr_weights *)w, P_ORIGINAL), *B = tr_weights_find((tr_weights *)w, P_BASE);
    if (!X || !B) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: missing " P_ORIGINAL " or " P_BASE,
                                    cvene_intervention_type_name(w->type));
    const int n = (int)X->shape[0], k = (int)X->shape[1];
    orth_param *o = orth_new(n, k);
    double *Xd = malloc(sizeof(double) * (size_t)n * k), *Bd = malloc(sizeof(double) * (size_t)n * n);
    double *Wd = malloc(sizeof(double) * (size_t)n * k);
    int ok = o && Xd && Bd && Wd;
    for (int64_t i = 0; ok && i < X->numel; i++) Xd[i] = X->value[i];
    for (int64_t i = 0; ok && i < B->numel; i++) Bd[i] = B->value[i];
    ok = ok && orth_forward(o, Xd, Bd, Wd) == 0;
    for (int64_t i = 0; ok && i < (int64_t)n * k; i++) W[i] = (float)Wd[i];
    orth_free(o), free(Xd), free(Bd), free(Wd);
    return ok ? CVENE_OK : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory materialising a rotation");
}

void tr_state_free(tr_state *s) {
    if (!s) return;
    if (s->ty && s->ty->state_free) s->ty->state_free(s);
    tr_rot_free(s);
    float *dev[] = {s->xb, s->xs, s->rb, s->rs, s->mix, s->tmp, s->d, s->dd};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) tr_dfree(s, dev[i]);
    free(s->sub_off), free(s->sub_dims);
    free(s);
}

cvene_status tr_state_new(cvene_ctx *ctx, tr_weights *w, int n_max, tr_state **out) {
    *out = NULL;
    if (!ctx->be->ops->bwd)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no backward ops yet",
                          ctx->be->ops->name);
    const tr_type *ty = tr_type_get(w->type);
    if (!ty) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s is not a trainable intervention",
                               cvene_intervention_type_name(w->type));
    tr_state *s = calloc(1, sizeof *s);
    if (!s) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    s->ctx = ctx, s->w = w, s->ty = ty, s->n_max = n_max, s->D = w->D;
    const size_t nD = (size_t)n_max * w->D;
    cvene_status st = ty->state_new(s);
    /* (n_max, D) covers every (n, k) use too (k <= D) */
    float **work[] = {&s->xb, &s->xs, &s->mix, &s->tmp, &s->rb, &s->rs, &s->d, &s->dd};
    for (size_t i = 0; st == CVENE_OK && i < sizeof work / sizeof *work; i++) st = tr_dalloc(s, work[i], nD);
    if (st != CVENE_OK) {
        tr_state_free(s);
        return st;
    }
    *out = s;
    return CVENE_OK;
}

cvene_status tr_set_subspaces(tr_state *s, const int *off, const int *dims, int n_rows) {
    free(s->sub_off), free(s->sub_dims);
    s->sub_off = s->sub_dims = NULL;
    s->sub_rows = 0;
    if (!off) return CVENE_OK;
    if (n_rows < 1 || n_rows > s->n_max)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "subspaces for %d rows; this intervention has room for %d",
                          n_rows, s->n_max);
    for (int i = 0; i < n_rows; i++)
        if (off[i + 1] < off[i])
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "subspaces: row %d's offsets decrease", i);
    const int nd = off[n_rows] - off[0];
    s->sub_off = malloc(sizeof(int) * (size_t)(n_rows + 1));
    s->sub_dims = malloc(sizeof(int) * (size_t)(nd ? nd : 1));
    if (!s->sub_off || !s->sub_dims) {
        free(s->sub_off), free(s->sub_dims);
        s->sub_off = s->sub_dims = NULL;
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    for (int i = 0; i <= n_rows; i++) s->sub_off[i] = off[i] - off[0];
    memcpy(s->sub_dims, dims + off[0], sizeof(int) * (size_t)nd);
    s->sub_rows = n_rows;
    return CVENE_OK;
}

cvene_status tr_prepare(tr_state *s) { return s->ty->prepare(s); }

cvene_status tr_forward(tr_state *s, float *out, const float *xb, const float *xs, int n) {
    if (n > s->n_max)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "trainable intervention: %d units, room for %d", n, s->n_max);
    if (s->sub_rows && (s->ty->flags & TR_SUBSPACES) && n != s->sub_rows)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "trainable intervention: %d units, but subspaces for %d", n,
                          s->sub_rows);
    cvene_backend *be = s->ctx->be;
    const size_t nD = (size_t)n * s->D;
    s->n = n;
    CVENE_TRY(be->ops->copy(be, s->xb, xb, nD * sizeof(float)));
    CVENE_TRY(be->ops->copy(be, s->xs, xs, nD * sizeof(float)));
    return s->ty->forward(s, out, n);
}

cvene_status tr_backward_ex(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    if (n != s->n)
        return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "trainable intervention: backward of %d units after a forward "
                          "of %d", n, s->n);
    return s->ty->backward(s, dxb, dxs, g, n);
}

cvene_status tr_backward(tr_state *s, float *dxb, const float *g, int n) { return tr_backward_ex(s, dxb, NULL, g, n); }

cvene_status tr_finish_grads(tr_state *s) { return s->ty->finish_grads(s); }
