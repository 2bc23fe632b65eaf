/* Pieces the causal LMs' forwards share: for resumed forwards (cvene_resume, sweeps) the
 * argument check, gathering each row's last positions, joining cached keys/values to the
 * new ones and the output-head rows of the few vocabulary columns a metric reads; and the
 * output head itself with kept positions (logits_to_keep) and columns. */
#include "engine/tensor.h"
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

cvene_status resume_gather_tail(cvene_backend *be, float *rows, const float *x, int B, int T, int N, int C) {
    for (int b = 0; b < B; b++)
        CVENE_TRY(be->ops->copy(be, rows + (size_t)b * N * C, x + ((size_t)b * T + T - N) * C,
                                (size_t)N * C * sizeof(float)));
    return CVENE_OK;
}

cvene_status resume_join_cache(cvene_backend *be, float *full, const float *cache, const float *cur, int B, int past,
                               int T, int C) {
    const int Tk = past + T;
    for (int b = 0; b < B; b++) {
        float *row = full + (size_t)b * Tk * C;
        CVENE_TRY(be->ops->copy(be, row, cache, (size_t)past * C * sizeof(float)));
        CVENE_TRY(be->ops->copy(be, row + (size_t)past * C, cur + (size_t)b * T * C, (size_t)T * C * sizeof(float)));
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
    return CVENE_OK;
}

cvene_status model_head_logits(cvene_backend *be, const model_head_args *a) {
    const cvene_ops *op = be->ops;
    const int C = a->C, TL = a->keep ? a->keep : a->T, rows = (a->B - a->row0) * TL;
    const int NV = a->rs && a->rs->n_vocab > 0 ? a->rs->n_vocab : a->V;
    const float *hx = a->x + (size_t)a->row0 * a->T * C;
    if (a->keep && a->xq != a->x) {
        hx = a->xq + (size_t)a->row0 * a->keep * C; /* the last block ran on the kept positions only */
    } else if (a->keep) { /* only each row's last `keep` positions: gather those rows first */
        CVENE_TRY(resume_gather_tail(be, a->gather, a->x, a->B, a->T, a->keep, C));
        hx = a->gather + (size_t)a->row0 * a->keep * C;
    }
    CVENE_TRY(op->layernorm(be, a->ln, hx, a->ln_w, a->ln_b, rows, C, a->eps));
    const void *head = a->head;
    if (NV < a->V) { /* only some columns (a sweep's logit difference): their rows of the head */
        CVENE_TRY(resume_head_rows(be, a->wsel, a->head, a->wdt, a->rs->vocab, NV, C));
        head = a->wsel;
    }
    float *dst = a->dev ? a->dev : a->out;
    CVENE_TRY(op->matmul_lp(be, dst, a->ln, head, a->wdt, C, 1, NULL, rows, C, NV)); // (rows, NV)
    if (a->dev) CVENE_TRY(op->to_host(be, a->out, a->dev, (size_t)rows * NV * sizeof(float)));
    return CVENE_OK;
}
