/* Pieces the causal LMs' forwards share: for resumed forwards (cvene_resume, sweeps) the
 * argument check, gathering each row's last positions, joining cached keys/values to the
 * new ones and the output-head rows of the few vocabulary columns a metric reads; and the
 * output head itself with kept positions (logits_to_keep) and columns; and the call of a
 * site on activations of any storage dtype. */
#include "kernels/tensor.h"
#include "models/model.h"

cvene_status resume_check(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o) {
    const cvene_model_info *mi = &m->info;
    if (B <= 0 || T <= 0 || T > mi->n_positions || rs->past < 0 || rs->past >= T || rs->layer < 0 ||
        rs->layer > mi->n_layer || (o && (o->attention_mask || o->position_ids)) || rs->n_vocab < 0 ||
        rs->n_vocab > mi->vocab_size || (rs->n_vocab > 0 && (!rs->last_logits_only || !rs->vocab)))
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG,
                          "resumed forward: B=%d T=%d past=%d layer=%d n_vocab=%d out of range (or a mask given, or "
                          "n_vocab without last_logits_only)", B, T, rs->past, rs->layer, rs->n_vocab);
    for (int j = 0; j < rs->n_vocab; j++)
        if (rs->vocab[j] < 0 || rs->vocab[j] >= mi->vocab_size)
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "resumed forward: vocab[%d] = %d is outside [0, %d)", j,
                              rs->vocab[j], mi->vocab_size);
    return CVENE_OK;
}

int resume_layer_has_sites(const cvene_run_opts *o, int l) {
    if (!o || !o->site_fn) return 0;
    for (int c = 0; c < CVENE_N_COMPONENTS; c++)
        if ((o->sites[c] >> l) & 1u) return 1;
    return 0;
}

cvene_status resume_gather_tail(cvene_backend *be, void *rows, const void *x, int B, int T, int N, int C, size_t esz) {
    for (int b = 0; b < B; b++)
        CVENE_TRY(be->ops->copy(be, (char *)rows + (size_t)b * N * C * esz,
                                (const char *)x + ((size_t)b * T + T - N) * C * esz, (size_t)N * C * esz));
    return CVENE_OK;
}

cvene_status resume_join_cache(cvene_backend *be, cvene_dtype adt, void *full, const float *cache, const void *cur,
                               int B, int past, int T, int C) {
    const int Tk = past + T;
    const size_t E = cvene_dtype_size(adt);
    for (int b = 0; b < B; b++) {
        void *row = act_at(full, adt, (size_t)b * Tk * C);
        CVENE_TRY(be->ops->ops16->convert(be, row, adt, cache, CVENE_F32, (size_t)past * C));
        CVENE_TRY(be->ops->copy(be, act_at(row, adt, (size_t)past * C), act_at(cur, adt, (size_t)b * T * C),
                                (size_t)T * C * E));
    }
    return CVENE_OK;
}

cvene_status resume_head_rows(cvene_backend *be, void *dst, const void *head, cvene_dtype dt, const int32_t *ids,
                              int n, int C) {
    const size_t row = (size_t)C * cvene_dtype_size(dt);
    for (int j = 0; j < n; j++)
        CVENE_TRY(be->ops->copy(be, (char *)dst + j * row, (const char *)head + (size_t)ids[j] * row, row));
    return CVENE_OK;
}

cvene_status model_logits_to_keep(cvene_model *m, const cvene_run_opts *o, const cvene_resume *rs, int T, int *N) {
    *N = rs ? (rs->last_logits_only ? 1 : 0) : o ? o->logits_to_keep : 0;
    if (*N < 0 || *N > T)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "logits_to_keep = %d is outside [0, %d] (the sequence length)",
                          *N, T);
    if (!o || (!o->n_logits_vocab && !o->logits_vocab)) return CVENE_OK;
    if (o->n_logits_vocab < 0 || o->n_logits_vocab > m->info.vocab_size || !o->logits_vocab)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "n_logits_vocab = %d must be in [1, %d] with logits_vocab "
                          "given", o->n_logits_vocab, m->info.vocab_size);
    if (!*N || (rs && rs->n_vocab > 0))
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "logits_vocab needs logits_to_keep >= 1 (the columns of the "
                          "kept positions)%s", rs && rs->n_vocab > 0 ? ", and not a resumed forward's own" : "");
    for (int j = 0; j < o->n_logits_vocab; j++)
        if (o->logits_vocab[j] < 0 || o->logits_vocab[j] >= m->info.vocab_size)
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "logits_vocab[%d] = %d is outside the vocabulary [0, %d)",
                              j, o->logits_vocab[j], m->info.vocab_size);
    return CVENE_OK;
}

cvene_status model_head_logits(cvene_backend *be, const model_head_args *a) {
    const cvene_ops16 *o16 = be->ops->ops16;
    const cvene_dtype adt = a->adt;
    const size_t esz = cvene_dtype_size(adt);
    const int C = a->C, TL = a->keep ? a->keep : a->T, rows = (a->B - a->row0) * TL;
    const int NV = a->vocab ? a->n_vocab : a->V;
    const void *hx = act_at(a->x, adt, (size_t)a->row0 * a->T * C);
    if (a->keep && a->xq != a->x) {
        hx = act_at(a->xq, adt, (size_t)a->row0 * a->keep * C); /* the last block ran on the kept positions only */
    } else if (a->keep) { /* only each row's last `keep` positions: gather those rows first */
        CVENE_TRY(resume_gather_tail(be, a->gather, a->x, a->B, a->T, a->keep, C, esz));
        hx = act_at(a->gather, adt, (size_t)a->row0 * a->keep * C);
    }
    CVENE_TRY(o16->layernorm(be, adt, a->ln, hx, a->ln_w, a->ln_b, rows, C, a->eps));
    const void *head = a->head;
    if (NV < a->V) { /* only some columns (a sweep's logit difference): their rows of the head */
        CVENE_TRY(resume_head_rows(be, a->wsel, a->head, a->wdt, a->vocab, NV, C));
        head = a->wsel;
    }
    float *dst = a->dev ? a->dev : a->out;
    const size_t n = (size_t)rows * NV;
    const void *hin = a->ln;
    if (adt != CVENE_F32) { /* the 16-bit ln_f output widened (exactly) for the f32-output GEMM */
        CVENE_TRY(o16->convert(be, a->stage, CVENE_F32, a->ln, adt, (size_t)rows * C));
        hin = a->stage;
    }
    CVENE_TRY(be->ops->matmul_lp(be, dst, hin, head, a->wdt, C, 1, NULL, rows, C, NV)); // (rows, NV)
    /* 16-bit adt: the logits a 16-bit model stores (as transformers returns them), kept as f32 */
    CVENE_TRY(o16->round(be, adt, dst, n));
    if (a->dev && a->out) CVENE_TRY(be->ops->to_host(be, a->out, a->dev, n * sizeof(float)));
    return CVENE_OK;
}

cvene_status model_site(cvene_model *m, const cvene_run_opts *o, cvene_dtype adt, float *stage, cvene_component c,
                        int l, void *data, int ndim, const int64_t *shape) {
    cvene_backend *be = m->ctx->be;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *view = adt == CVENE_F32 ? (float *)data : stage;
    if (adt != CVENE_F32) CVENE_TRY(be->ops->ops16->convert(be, stage, CVENE_F32, data, adt, (size_t)n));
    cvene_tensor_view v = cvene_tensor_make(view, CVENE_F32, be->device, ndim, shape);
    int rc = o->site_fn(o->site_user, c, l, &v);
    if (rc == CVENE_SITE_STOP) return CVENE_SITE_STOPPED;
    if (rc != 0)
        return cvene_fail(m->ctx, CVENE_ERR_CALLBACK, "site callback at %s layer %d returned %d",
                          cvene_component_name(c), l, rc);
    if (adt != CVENE_F32) CVENE_TRY(be->ops->ops16->convert(be, data, adt, stage, CVENE_F32, (size_t)n));
    return CVENE_OK;
}

cvene_status model_grad_site(cvene_model *m, const model_grad_sites *g, cvene_component c, int l, float *data,
                             int ndim, const int64_t *shape) {
    if (!model_grad_on(g, c, l)) return CVENE_OK;
    cvene_tensor_view v = cvene_tensor_make(data, CVENE_F32, m->ctx->be->device, ndim, shape);
    int rc = g->fn(g->user, c, l, &v);
    if (rc != 0)
        return cvene_fail(m->ctx, CVENE_ERR_CALLBACK, "grad site callback at %s layer %d returned %d",
                          cvene_component_name(c), l, rc);
    return CVENE_OK;
}
