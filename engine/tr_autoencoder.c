/* Interventions in a basis or code learned from data (engine/trainable.h): PCARotatedSpace,
 * AutoencoderIntervention and JumpReLUAutoencoderIntervention, one table entry each
 * (engine/tr_type.h), and PCA's fit (tr_pca_fit). docs/training_semantics.md §3.6-3.8 has the
 * formulas. Each encodes base and source, takes the swapped latents (M) from the source's code
 * and decodes; the swap is an exact select, zb (1 - M) + zs M. Names: L the latent width (PCA:
 * its k components), M (n, L) the swap mask. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "engine/tr_type.h"

/* LAPACK (in Debian's OpenBLAS): the symmetric eigensolver, with gfortran's hidden lengths */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

typedef struct {
    int L;                      /* the latent width now (PCA: its components' count, <= D) */
    int cap;                    /* the latent width the buffers hold */
    float *We, *bE, *Wd, *bD;   /* device: encoder weight / bias, decoder weight / bias (PCA: C in We) */
    float *dWe, *dbE, *dWd, *dbD;
    float *an, *bn, *cn;        /* per row (n_max, D): PCA's mu, 1 / sd, sd; the Autoencoder's b_dec in an */
    float *thn;                 /* JumpReLU's threshold per row (n_max, L) */
    float *M, *Mi;              /* (n_max, L): the swap mask, 1 - M */
    float *pb, *ps, *qb, *qs;   /* (n_max, L): pre-activations (PCA: the rotated rows), JumpReLU's pre - theta */
    float *zb, *zs, *z, *dz;    /* (n_max, L) */
    float *xcb, *xcs;           /* (n_max, D): the encoders' inputs (centred / standardised) */
    float *gD;                  /* (D) */
    float *host;                /* host (n_max, max(L, D)) */
} lat_priv;

#define PRIV(s) ((lat_priv *)(s)->priv)
#define PCA_C "pca_components"
#define PCA_MU "pca_mean"
#define PCA_SD "pca_std"
#define AE_WE "autoencoder.encoder.0.weight"
#define AE_BE "autoencoder.encoder.0.bias"
#define AE_WD "autoencoder.decoder.0.weight"
#define AE_BD "autoencoder.decoder.0.bias"

/* ---- tensors ---- */

static cvene_status init_pca(cvene_ctx *ctx, tr_weights *w, uint64_t seed) {
    (void)seed; /* no RNG: the identity basis, mean 0, std 1 until tr_pca_fit or a load */
    const int D = w->D;
    tr_tensor *c = tr_add(w, PCA_C, 2, D, D, 0), *mu = tr_add(w, PCA_MU, 1, D, 0, 0), *sd = tr_add(w, PCA_SD, 1, D, 0, 0);
    if (!c || !mu || !sd) return tr_fail_oom_init(ctx, w);
    for (int i = 0; i < D; i++) c->value[(size_t)i * D + i] = 1.0f, sd->value[i] = 1.0f;
    return CVENE_OK;
}

static cvene_status init_autoencoder(cvene_ctx *ctx, tr_weights *w, uint64_t seed) {
    const int D = w->D, L = w->r;
    /* Linear(D, L) then Linear(L, D), each U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    tr_tensor *we = tr_add(w, AE_WE, 2, L, D, 1), *be = tr_add(w, AE_BE, 1, L, 0, 1);
    tr_tensor *wd = tr_add(w, AE_WD, 2, D, L, 1), *bd = tr_add(w, AE_BD, 1, D, 0, 1);
    if (!we || !be || !wd || !bd) return tr_fail_oom_init(ctx, w);
    tr_fill_uniform(we->value, we->numel, be->value, be->numel, 1.0 / sqrt((double)D), (uint32_t)(seed ^ 0xae01u));
    tr_fill_uniform(wd->value, wd->numel, bd->value, bd->numel, 1.0 / sqrt((double)L), (uint32_t)(seed ^ 0xae02u));
    return CVENE_OK;
}

static cvene_status init_jumprelu(cvene_ctx *ctx, tr_weights *w, uint64_t seed) {
    (void)seed; /* pyvene zero-initialises every parameter: an SAE's weights are meant to be loaded */
    const int D = w->D, L = w->r;
    /* the threshold gets no gradient in torch (a boolean mask): nothing trains it */
    if (!tr_add(w, "W_enc", 2, D, L, 1) || !tr_add(w, "W_dec", 2, L, D, 1) || !tr_add(w, "threshold", 1, L, 0, 0) ||
        !tr_add(w, "b_enc", 1, L, 0, 1) || !tr_add(w, "b_dec", 1, D, 0, 1))
        return tr_fail_oom_init(ctx, w);
    return CVENE_OK;
}

/* PCA: the components' count comes from the file (k x D, k <= D); mean and std may be (1, D), as
 * numpy's mean(axis=0, keepdims=True) leaves them */
static cvene_status import_pca(cvene_ctx *ctx, tr_weights *w, const char *path, const tr_sd_tensor *t, int n) {
    tr_sd_tensor *u = malloc(sizeof(tr_sd_tensor) * (size_t)(n ? n : 1));
    if (!u) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    memcpy(u, t, sizeof(tr_sd_tensor) * (size_t)n);
    cvene_status st = CVENE_OK;
    for (int i = 0; i < n && st == CVENE_OK; i++) {
        tr_sd_tensor *s = &u[i];
        if ((!strcmp(s->name, PCA_MU) || !strcmp(s->name, PCA_SD)) && s->ndim == 2 && s->shape[0] == 1)
            s->ndim = 1, s->shape[0] = s->shape[1], s->shape[1] = 0;
        tr_tensor *c = tr_weights_find(w, PCA_C);
        if (!strcmp(s->name, PCA_C) && !s->is_i64 && s->ndim == 2 && s->shape[1] == w->D && s->shape[0] >= 1 &&
            s->shape[0] <= w->D && c && s->shape[0] != c->shape[0]) {
            tr_remove(w, PCA_C);
            if (!tr_add(w, PCA_C, 2, s->shape[0], w->D, 0)) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        }
    }
    if (st == CVENE_OK) st = tr_sd_import_default(ctx, w, path, u, n);
    free(u);
    return st;
}

/* ---- compute state ---- */

static void state_free(tr_state *s) {
    lat_priv *p = PRIV(s);
    if (!p) return;
    float *dev[] = {p->We, p->bE, p->Wd, p->bD, p->dWe, p->dbE, p->dWd, p->dbD, p->an, p->bn, p->cn, p->thn, p->M,
                    p->Mi, p->pb, p->ps, p->qb, p->qs, p->zb, p->zs, p->z, p->dz, p->xcb, p->xcs, p->gD};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) tr_dfree(s, dev[i]);
    free(p->host), free(p);
    s->priv = NULL;
}

static cvene_status state_new(tr_state *s) {
    lat_priv *p = calloc(1, sizeof *p);
    if (!p) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    s->priv = p;
    const int t = s->w->type, D = s->D, pca = t == CVENE_IV_PCA_ROTATED_SPACE;
    const int L = pca ? D : s->w->r; /* PCA: room for D components (a load or a fit may change k) */
    const size_t nD = (size_t)s->n_max * D, nL = (size_t)s->n_max * L, LD = (size_t)L * D;
    p->cap = p->L = L;
    cvene_status st = CVENE_OK;
    if (!(p->host = malloc(sizeof(float) * (nL > nD ? nL : nD)))) st = cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    struct {
        float **p;
        size_t n;
        int zero;
    } bufs[] = {
        {&p->We, LD, 0}, {&p->bE, pca ? 0 : (size_t)L, 0}, {&p->Wd, pca ? 0 : LD, 0}, {&p->bD, pca ? 0 : (size_t)D, 0},
        {&p->dWe, pca ? 0 : LD, 1}, {&p->dbE, pca ? 0 : (size_t)L, 1}, {&p->dWd, pca ? 0 : LD, 1},
        {&p->dbD, pca ? 0 : (size_t)D, 1}, {&p->an, nD, 0}, {&p->bn, pca ? nD : 0, 0}, {&p->cn, pca ? nD : 0, 0},
        {&p->thn, t == CVENE_IV_JUMPRELU_AUTOENCODER ? nL : 0, 0}, {&p->M, nL, 0}, {&p->Mi, nL, 0},
        {&p->pb, nL, 0}, {&p->ps, nL, 0}, {&p->qb, nL, 0}, {&p->qs, nL, 0}, {&p->zb, nL, 0}, {&p->zs, nL, 0},
        {&p->z, nL, 0}, {&p->dz, nL, 0}, {&p->xcb, nD, 0}, {&p->xcs, nD, 0}, {&p->gD, (size_t)D, 0},
    };
    for (size_t i = 0; st == CVENE_OK && i < sizeof bufs / sizeof *bufs; i++) {
        if (!bufs[i].n) continue;
        st = tr_dalloc(s, bufs[i].p, bufs[i].n);
        if (st == CVENE_OK && bufs[i].zero) st = tr_zero_dev(s, *bufs[i].p, bufs[i].n);
    }
    return st;
}

static cvene_status upload(tr_state *s, float *dev, const char *name) {
    const tr_tensor *x = tr_weights_find(s->w, name);
    if (!x) return cvene_fail(s->ctx, CVENE_ERR_FORMAT, "%s: missing %s", cvene_intervention_type_name(s->w->type),
                              name);
    return s->ctx->be->ops->to_device(s->ctx->be, dev, x->value, sizeof(float) * (size_t)x->numel);
}

/* host (D) -> device, repeated on every row of dst (n_max, D) */
static cvene_status upload_rows(tr_state *s, float *dst, const float *h, float *one) {
    CVENE_TRY(s->ctx->be->ops->to_device(s->ctx->be, one, h, sizeof(float) * (size_t)s->D));
    return tr_repeat_rows(s, dst, one, (size_t)s->D);
}

/* M and 1 - M (n_max, L) from the host rows in p->host */
static cvene_status upload_mask(tr_state *s) {
    lat_priv *p = PRIV(s);
    cvene_backend *be = s->ctx->be;
    const size_t nL = (size_t)s->n_max * p->L;
    CVENE_TRY(be->ops->to_device(be, p->M, p->host, sizeof(float) * nL));
    for (size_t i = 0; i < nL; i++) p->host[i] = 1.0f - p->host[i];
    return be->ops->to_device(be, p->Mi, p->host, sizeof(float) * nL);
}

static cvene_status prepare_pca(tr_state *s) {
    lat_priv *p = PRIV(s);
    tr_weights *w = s->w;
    const int D = s->D;
    const tr_tensor *C = tr_weights_find(w, PCA_C), *mu = tr_weights_find(w, PCA_MU), *sd = tr_weights_find(w, PCA_SD);
    if (!C || !mu || !sd || C->shape[1] != D || C->shape[0] > p->cap)
        return cvene_fail(s->ctx, CVENE_ERR_FORMAT, "PCARotatedSpaceIntervention: needs " PCA_C " (k x %d, k <= %d), "
                          PCA_MU " and " PCA_SD " (%d)", D, D, D);
    p->L = (int)C->shape[0];
    CVENE_TRY(upload(s, p->We, PCA_C));
    float *inv = malloc(sizeof(float) * (size_t)(D > p->L ? D : p->L));
    if (!inv) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; i < D; i++) inv[i] = 1.0f / sd->value[i];
    cvene_status st = upload_rows(s, p->an, mu->value, p->gD);
    if (st == CVENE_OK) st = upload_rows(s, p->bn, inv, p->gD);
    if (st == CVENE_OK) st = upload_rows(s, p->cn, sd->value, p->gD);
    /* the swapped rotated dims: interchange_dim's first r (clipped to k), or each row's subspaces */
    for (int i = 0; i < p->L; i++) inv[i] = i < w->r ? 1.0f : 0.0f;
    if (st == CVENE_OK) st = tr_subspace_mask(s, p->host, p->L, inv, "PCA components");
    free(inv);
    return st == CVENE_OK ? upload_mask(s) : st;
}

static cvene_status prepare_autoencoder(tr_state *s) {
    lat_priv *p = PRIV(s);
    tr_weights *w = s->w;
    const int L = p->L;
    CVENE_TRY(upload(s, p->We, AE_WE));
    CVENE_TRY(upload(s, p->bE, AE_BE));
    CVENE_TRY(upload(s, p->Wd, AE_WD));
    CVENE_TRY(upload(s, p->bD, AE_BD));
    CVENE_TRY(tr_repeat_rows(s, p->an, p->bD, (size_t)s->D));
    /* interchange_dim indexes the latent (pyvene: base_latent[..., interchange_dim] = ...); its
     * default, embed_dim, is out of range unless L > D (pyvene's IndexError) */
    const int n = w->n_inter ? w->n_inter : 1;
    for (int i = 0; i < L; i++) p->host[i] = 0.0f;
    for (int j = 0; j < n; j++) {
        const int d = w->n_inter ? w->inter[j] : w->D;
        if (d < 0 || d >= L)
            return cvene_fail(s->ctx, CVENE_ERR_INVALID_ARG, "AutoencoderIntervention: interchange_dim %d is not a latent "
                              "index (latent width %d)%s", d, L, w->n_inter ? "" : "; pyvene's default is embed_dim: "
                              "set interchange_dim to the latents to swap");
        p->host[d] = 1.0f;
    }
    for (int b = 1; b < s->n_max; b++) memcpy(p->host + (size_t)b * L, p->host, sizeof(float) * (size_t)L);
    return upload_mask(s);
}

static cvene_status prepare_jumprelu(tr_state *s) {
    lat_priv *p = PRIV(s);
    tr_weights *w = s->w;
    const int L = p->L;
    CVENE_TRY(upload(s, p->We, "W_enc"));
    CVENE_TRY(upload(s, p->bE, "b_enc"));
    CVENE_TRY(upload(s, p->Wd, "W_dec"));
    CVENE_TRY(upload(s, p->bD, "b_dec"));
    CVENE_TRY(upload(s, p->dz, "threshold")); /* dz is free until the backward */
    CVENE_TRY(tr_repeat_rows(s, p->thn, p->dz, (size_t)L));
    /* the latents swapped: the first interchange_dim (embed_dim by default: the whole latent), or
     * each row's subspaces */
    const int k = w->n_inter ? w->inter[0] : w->D;
    float *def = malloc(sizeof(float) * (size_t)L);
    if (!def) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; i < L; i++) def[i] = i < k ? 1.0f : 0.0f;
    cvene_status st = tr_subspace_mask(s, p->host, L, def, "latents");
    free(def);
    return st == CVENE_OK ? upload_mask(s) : st;
}

/* z = zb (1 - M) + zs M: exact for M in {0, 1} */
static cvene_status swap_select(tr_state *s, float *z, const float *zb, const float *zs, size_t n) {
    cvene_backend *be = s->ctx->be;
    CVENE_TRY(be->ops->bwd->mul(be, z, zb, PRIV(s)->Mi, n, 0));
    return be->ops->bwd->mul(be, z, zs, PRIV(s)->M, n, 1);
}

/* ---- PCARotatedSpace: r = ((x - mu) / sd) C^T, out = (mix C) sd + mu ---- */

static cvene_status pca_encode(tr_state *s, float *r, float *xc, const float *x, int n) {
    cvene_backend *be = s->ctx->be;
    lat_priv *p = PRIV(s);
    const size_t nD = (size_t)n * s->D;
    CVENE_TRY(be->ops->bwd->affine(be, xc, x, p->an, 1.0f, -1.0f, 0.0f, nD));
    CVENE_TRY(be->ops->bwd->mul(be, xc, xc, p->bn, nD, 0));
    return be->ops->matmul(be, r, xc, p->We, s->D, 1, NULL, n, s->D, p->L);
}

static cvene_status forward_pca(tr_state *s, float *out, int n) {
    cvene_backend *be = s->ctx->be;
    lat_priv *p = PRIV(s);
    const int D = s->D, L = p->L;
    const size_t nD = (size_t)n * D;
    CVENE_TRY(pca_encode(s, p->pb, p->xcb, s->xb, n));
    CVENE_TRY(pca_encode(s, p->ps, p->xcs, s->xs, n));
    CVENE_TRY(swap_select(s, p->z, p->pb, p->ps, (size_t)n * L));
    CVENE_TRY(be->ops->matmul(be, s->tmp, p->z, p->We, D, 0, NULL, n, L, D));
    CVENE_TRY(be->ops->bwd->mul(be, out, s->tmp, p->cn, nD, 0));
    return be->ops->bwd->affine(be, out, out, p->an, 1.0f, 1.0f, 0.0f, nD);
}

static cvene_status backward_pca(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dz = (g sd) C^T; dxb = ((dz (1 - M)) C) / sd; dxs = ((dz M) C) / sd; nothing trains */
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    lat_priv *p = PRIV(s);
    const int D = s->D, L = p->L;
    const size_t nD = (size_t)n * D, nL = (size_t)n * L;
    CVENE_TRY(bw->mul(be, s->tmp, g, p->cn, nD, 0));
    CVENE_TRY(be->ops->matmul(be, p->dz, s->tmp, p->We, D, 1, NULL, n, D, L));
    float *dst[2] = {dxb, dxs};
    float *const msk[2] = {p->Mi, p->M};
    for (int i = 0; i < 2; i++) {
        if (!dst[i]) continue;
        CVENE_TRY(bw->mul(be, p->zb, p->dz, msk[i], nL, 0));
        CVENE_TRY(be->ops->matmul(be, s->mix, p->zb, p->We, D, 0, NULL, n, L, D));
        CVENE_TRY(bw->mul(be, dst[i], s->mix, p->bn, nD, 0));
    }
    return CVENE_OK;
}

static cvene_status finish_none(tr_state *s) {
    (void)s;
    return CVENE_OK;
}

/* ---- Autoencoder: z = relu((x - b_dec) W_enc^T + b_enc), out = z W_dec^T + b_dec ---- */

static cvene_status ae_encode(tr_state *s, float *pre, float *z, float *xc, const float *x, int n) {
    cvene_backend *be = s->ctx->be;
    lat_priv *p = PRIV(s);
    const size_t nL = (size_t)n * p->L;
    CVENE_TRY(be->ops->bwd->affine(be, xc, x, p->an, 1.0f, -1.0f, 0.0f, (size_t)n * s->D));
    CVENE_TRY(be->ops->matmul(be, pre, xc, p->We, s->D, 1, p->bE, n, s->D, p->L));
    CVENE_TRY(be->ops->copy(be, z, pre, sizeof(float) * nL));
    return be->ops->activation(be, z, nL, CVENE_ACT_RELU);
}

static cvene_status forward_autoencoder(tr_state *s, float *out, int n) {
    lat_priv *p = PRIV(s);
    CVENE_TRY(ae_encode(s, p->pb, p->zb, p->xcb, s->xb, n));
    CVENE_TRY(ae_encode(s, p->ps, p->zs, p->xcs, s->xs, n));
    CVENE_TRY(swap_select(s, p->z, p->zb, p->zs, (size_t)n * p->L));
    return s->ctx->be->ops->matmul(s->ctx->be, out, p->z, p->Wd, p->L, 1, p->bD, n, p->L, s->D);
}

static cvene_status backward_autoencoder(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dz = g W_dec; dW_dec += g^T z; db_dec += sum g; dpre = dz (1 - M) [pre > 0] (base), dz M [pre > 0]
     * (source); dW_enc += dpre^T xc; db_enc += sum dpre; dxc = dpre W_enc; db_dec -= sum dxc (its
     * subtraction in the encoder); dxb = dxc (base), dxs = dxc (source) */
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    lat_priv *p = PRIV(s);
    const int D = s->D, L = p->L;
    const size_t nD = (size_t)n * D, nL = (size_t)n * L;
    CVENE_TRY(op->matmul(be, p->dz, g, p->Wd, L, 0, NULL, n, D, L));
    CVENE_TRY(bw->matmul_tn(be, p->dWd, g, p->z, n, D, L, 1));
    CVENE_TRY(bw->sum_rows(be, p->dbD, g, n, D, 1));
    float *dpre[2] = {p->qb, p->qs}, *pre[2] = {p->pb, p->ps}, *xc[2] = {p->xcb, p->xcs}, *dxc[2] = {s->mix, s->tmp};
    float *const msk[2] = {p->Mi, p->M};
    for (int i = 0; i < 2; i++) {
        CVENE_TRY(bw->mul(be, dpre[i], p->dz, msk[i], nL, 0));
        CVENE_TRY(bw->activation(be, dpre[i], dpre[i], pre[i], nL, CVENE_ACT_RELU, 0));
        CVENE_TRY(bw->matmul_tn(be, p->dWe, dpre[i], xc[i], n, L, D, 1));
        CVENE_TRY(bw->sum_rows(be, p->dbE, dpre[i], n, L, 1));
        CVENE_TRY(op->matmul(be, dxc[i], dpre[i], p->We, D, 0, NULL, n, L, D));
        CVENE_TRY(bw->sum_rows(be, p->gD, dxc[i], n, D, i));
    }
    CVENE_TRY(bw->affine(be, p->dbD, p->dbD, p->gD, 1.0f, -1.0f, 0.0f, (size_t)D));
    if (dxs) CVENE_TRY(op->copy(be, dxs, s->tmp, sizeof(float) * nD));
    return dxb ? op->copy(be, dxb, s->mix, sizeof(float) * nD) : CVENE_OK;
}

static cvene_status finish_autoencoder(tr_state *s) {
    lat_priv *p = PRIV(s);
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, AE_WE), p->dWe));
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, AE_BE), p->dbE));
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, AE_WD), p->dWd));
    return tr_grad_from_dev(s, tr_weights_find(s->w, AE_BD), p->dbD);
}

/* ---- JumpReLU: z = [pre > theta] relu(pre), pre = x W_enc + b_enc; out = z W_dec + b_dec ---- */

static cvene_status jr_encode(tr_state *s, float *pre, float *q, float *z, const float *x, int n) {
    cvene_backend *be = s->ctx->be;
    const cvene_ops_bwd *bw = be->ops->bwd;
    lat_priv *p = PRIV(s);
    const size_t nL = (size_t)n * p->L;
    CVENE_TRY(be->ops->matmul(be, pre, x, p->We, p->L, 0, p->bE, n, s->D, p->L));
    /* pre - theta > 0 exactly when pre > theta (IEEE subtraction of two different floats is never 0) */
    CVENE_TRY(bw->affine(be, q, pre, p->thn, 1.0f, -1.0f, 0.0f, nL));
    CVENE_TRY(be->ops->copy(be, z, pre, sizeof(float) * nL));
    CVENE_TRY(be->ops->activation(be, z, nL, CVENE_ACT_RELU));
    return bw->activation(be, z, z, q, nL, CVENE_ACT_RELU, 0); /* relu(pre) where pre > theta, else 0 */
}

static cvene_status forward_jumprelu(tr_state *s, float *out, int n) {
    lat_priv *p = PRIV(s);
    CVENE_TRY(jr_encode(s, p->pb, p->qb, p->zb, s->xb, n));
    CVENE_TRY(jr_encode(s, p->ps, p->qs, p->zs, s->xs, n));
    CVENE_TRY(swap_select(s, p->z, p->zb, p->zs, (size_t)n * p->L));
    return s->ctx->be->ops->matmul(s->ctx->be, out, p->z, p->Wd, s->D, 0, p->bD, n, p->L, s->D);
}

static cvene_status backward_jumprelu(tr_state *s, float *dxb, float *dxs, const float *g, int n) {
    /* dz = g W_dec^T; dW_dec += z^T g; db_dec += sum g; dpre = dz (1 - M) [pre > theta] [pre > 0] (base),
     * dz M [..] (source); dW_enc += x^T dpre; db_enc += sum dpre; dx = dpre W_enc^T */
    cvene_backend *be = s->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    lat_priv *p = PRIV(s);
    const int D = s->D, L = p->L;
    const size_t nL = (size_t)n * L;
    CVENE_TRY(op->matmul(be, p->dz, g, p->Wd, D, 1, NULL, n, D, L));
    CVENE_TRY(bw->matmul_tn(be, p->dWd, p->z, g, n, L, D, 1));
    CVENE_TRY(bw->sum_rows(be, p->dbD, g, n, D, 1));
    float *dpre[2] = {p->zb, p->zs}, *pre[2] = {p->pb, p->ps}, *q[2] = {p->qb, p->qs}, *dst[2] = {dxb, dxs};
    const float *x[2] = {s->xb, s->xs};
    float *const msk[2] = {p->Mi, p->M};
    for (int i = 0; i < 2; i++) {
        CVENE_TRY(bw->mul(be, dpre[i], p->dz, msk[i], nL, 0));
        CVENE_TRY(bw->activation(be, dpre[i], dpre[i], q[i], nL, CVENE_ACT_RELU, 0));
        CVENE_TRY(bw->activation(be, dpre[i], dpre[i], pre[i], nL, CVENE_ACT_RELU, 0));
        CVENE_TRY(bw->matmul_tn(be, p->dWe, x[i], dpre[i], n, D, L, 1));
        CVENE_TRY(bw->sum_rows(be, p->dbE, dpre[i], n, L, 1));
    }
    for (int i = 0; i < 2; i++)
        if (dst[i]) CVENE_TRY(op->matmul(be, dst[i], dpre[i], p->We, L, 1, NULL, n, L, D));
    return CVENE_OK;
}

static cvene_status finish_jumprelu(tr_state *s) {
    lat_priv *p = PRIV(s);
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, "W_enc"), p->dWe));
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, "b_enc"), p->dbE));
    CVENE_TRY(tr_grad_from_dev(s, tr_weights_find(s->w, "W_dec"), p->dWd));
    return tr_grad_from_dev(s, tr_weights_find(s->w, "b_dec"), p->dbD);
}

/* ---- PCA's fit ---- */

cvene_status tr_pca_fit(cvene_ctx *ctx, tr_weights *w, const float *X, int64_t n, int k) {
    if (w->type != CVENE_IV_PCA_ROTATED_SPACE)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "tr_pca_fit: a %s has no PCA basis",
                          cvene_intervention_type_name(w->type));
    const int D = w->D;
    const int64_t kmax = n < D ? n : D;
    if (n < 2 || !X)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "tr_pca_fit: %lld rows; a PCA needs at least 2", (long long)n);
    if (k <= 0) k = (int)kmax;
    if (k > kmax)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "tr_pca_fit: %d components from %lld rows of %d dims (at most "
                          "%lld, as sklearn)", k, (long long)n, D, (long long)kmax);
    const int64_t chunk = 1024;
    double *mean = calloc((size_t)D, sizeof(double)), *sd = calloc((size_t)D, sizeof(double));
    double *cov = calloc((size_t)D * D, sizeof(double)), *z = malloc(sizeof(double) * (size_t)chunk * D);
    double *ev = malloc(sizeof(double) * (size_t)D), wq = 0;
    int iq = 0, lwork = -1, liwork = -1, info = 0;
    double *work = NULL;
    int *iwork = NULL;
    cvene_status st = mean && sd && cov && z && ev ? CVENE_OK : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    /* mean and population std (two passes, in double); std floored at 1e-6 */
    for (int64_t i = 0; st == CVENE_OK && i < n; i++)
        for (int j = 0; j < D; j++) mean[j] += X[(size_t)i * D + j];
    for (int j = 0; st == CVENE_OK && j < D; j++) mean[j] /= (double)n;
    for (int64_t i = 0; st == CVENE_OK && i < n; i++)
        for (int j = 0; j < D; j++) {
            const double e = X[(size_t)i * D + j] - mean[j];
            sd[j] += e * e;
        }
    for (int j = 0; st == CVENE_OK && j < D; j++) {
        sd[j] = sqrt(sd[j] / (double)n);
        if (!isfinite(sd[j]) || !isfinite(mean[j]))
            st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "tr_pca_fit: dim %d of the data is not finite", j);
        else if (sd[j] < 1e-6)
            sd[j] = 1e-6;
    }
    /* the covariance of Z = (X - mean) / std (centred): Z^T Z / (n - 1), by blocks of rows */
    for (int64_t i0 = 0; st == CVENE_OK && i0 < n; i0 += chunk) {
        const int64_t m = n - i0 < chunk ? n - i0 : chunk;
        for (int64_t i = 0; i < m; i++)
            for (int j = 0; j < D; j++) z[(size_t)i * D + j] = (X[(size_t)(i0 + i) * D + j] - mean[j]) / sd[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, (int)m, 1.0 / (double)(n - 1), z, D, 1.0, cov, D);
    }
    for (int a = 0; st == CVENE_OK && a < D; a++)
        for (int b = 0; b < a; b++) cov[(size_t)a * D + b] = cov[(size_t)b * D + a];
    /* eigenvectors (ascending eigenvalues; column j of the column-major result is vector j) */
    if (st == CVENE_OK) {
        dsyevd_("V", "U", &D, cov, &D, ev, &wq, &lwork, &iq, &liwork, &info, 1, 1);
        lwork = (int)wq, liwork = iq;
        work = malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
        iwork = malloc(sizeof(int) * (size_t)(liwork > 1 ? liwork : 1));
        if (!work || !iwork) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    if (st == CVENE_OK) {
        dsyevd_("V", "U", &D, cov, &D, ev, work, &lwork, iwork, &liwork, &info, 1, 1);
        if (info != 0) st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "tr_pca_fit: LAPACK dsyevd failed (info %d)", info);
    }
    tr_tensor *C = NULL, *mu = NULL, *sdt = NULL;
    if (st == CVENE_OK) { /* (tr_remove moves w's tensors: look them up after) */
        tr_remove(w, PCA_C);
        if (!(C = tr_add(w, PCA_C, 2, k, D, 0))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        mu = tr_weights_find(w, PCA_MU), sdt = tr_weights_find(w, PCA_SD);
        if (st == CVENE_OK && (!mu || !sdt))
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "tr_pca_fit: the weights lack " PCA_MU " or " PCA_SD);
    }
    for (int c = 0; st == CVENE_OK && c < k; c++) {
        const double *v = cov + (size_t)(D - 1 - c) * D; /* the c-th largest eigenvalue's vector */
        int at = 0;
        for (int j = 1; j < D; j++) at = fabs(v[j]) > fabs(v[at]) ? j : at;
        const double sign = v[at] < 0 ? -1.0 : 1.0; /* its largest |entry| positive */
        for (int j = 0; j < D; j++) C->value[(size_t)c * D + j] = (float)(sign * v[j]);
    }
    for (int j = 0; st == CVENE_OK && j < D; j++) mu->value[j] = (float)mean[j], sdt->value[j] = (float)sd[j];
    free(mean), free(sd), free(cov), free(z), free(ev), free(work), free(iwork);
    return st;
}

/* ---- the entries ---- */

/* not a TrainableIntervention in pyvene: its parameters are frozen; BasisAgnostic, distributed */
const tr_type tr_type_pca = {
    CVENE_IV_PCA_ROTATED_SPACE, TR_FLAT | TR_SUBSPACES, TR_R_INTERCHANGE, init_pca, state_new, state_free,
    prepare_pca, forward_pca, backward_pca, finish_none, NULL, import_pca,
};
/* neither distributed nor localist in pyvene, without keep_last_dim: flattened; ignores subspaces */
const tr_type tr_type_autoencoder = {
    CVENE_IV_AUTOENCODER, TR_FLAT, TR_R_LATENT, init_autoencoder, state_new, state_free, prepare_autoencoder,
    forward_autoencoder, backward_autoencoder, finish_autoencoder, NULL, NULL,
};
/* keep_last_dim: per unit */
const tr_type tr_type_jumprelu = {
    CVENE_IV_JUMPRELU_AUTOENCODER, TR_SUBSPACES, TR_R_LATENT, init_jumprelu, state_new, state_free,
    prepare_jumprelu, forward_jumprelu, backward_jumprelu, finish_jumprelu, NULL, NULL,
};
