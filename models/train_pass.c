/* What GPT-2's and GPT-NeoX's training passes share (models/model.h): grad sites on (B, T, C)
 * gradients, and live rows (model_train_pass.live_start) -- the checks, the packed rows' count and
 * order, and the moves between the (B, T, W) layout and the packed (R, W) rows. */
#include "models/model.h"

int model_live_rows(const model_train_pass *tp) {
    if (!tp->live_start) return tp->B * tp->T;
    int R = 0;
    for (int b = 0; b < tp->B; b++) R += tp->live_end[b] - tp->live_start[b];
    return R;
}

cvene_status model_live_move(cvene_backend *be, const model_train_pass *tp, float *full, float *packed, int W,
                             int dir) {
    size_t r = 0;
    for (int b = 0; b < tp->B; b++) {
        const size_t n = (size_t)(tp->live_end[b] - tp->live_start[b]) * W;
        float *f = full + ((size_t)b * tp->T + tp->live_start[b]) * W;
        CVENE_TRY(be->ops->copy(be, dir ? f : packed + r, dir ? packed + r : f, n * sizeof(float)));
        r += n;
    }
    return CVENE_OK;
}

cvene_status model_live_pad(cvene_backend *be, const model_train_pass *tp, float *full, const float *zero, int W) {
    for (int b = 0; b < tp->B; b++)
        if (tp->live_end[b] < tp->T)
            CVENE_TRY(be->ops->copy(be, full + ((size_t)b * tp->T + tp->live_end[b]) * W, zero,
                                    sizeof(float) * (size_t)(tp->T - tp->live_end[b]) * W));
    return CVENE_OK;
}

size_t model_loss_row(const model_train_pass *tp, int i) {
    const int r = tp->rows[i];
    if (!tp->live_start) return (size_t)r;
    const int b = r / tp->T, t = r % tp->T;
    size_t off = 0;
    for (int q = 0; q < b; q++) off += (size_t)(tp->live_end[q] - tp->live_start[q]);
    return off + (size_t)(t - tp->live_start[b]);
}

/* the sites a pass with live rows allows: the residual entering `layer` */
static int allowed(int k, int l, const model_train_pass *tp) {
    return (k == CVENE_BLOCK_INPUT && l == tp->layer) || (k == CVENE_BLOCK_OUTPUT && l == tp->layer - 1);
}

cvene_status model_check_live(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o,
                              const model_grad_sites *g, int n_layer) {
    cvene_ctx *ctx = m->ctx;
    if (!tp->live_start) return CVENE_OK;
    if (!tp->live_end || !tp->kv)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: live rows need live_end and kv");
    for (int b = 0; b < tp->B; b++)
        if (tp->live_start[b] < 0 || tp->live_start[b] > tp->live_end[b] || tp->live_end[b] > tp->T)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: example %d's live rows [%d, %d) are outside "
                              "[0, %d]", b, tp->live_start[b], tp->live_end[b], tp->T);
    for (int i = 0; i < tp->n_rows; i++) {
        const int b = tp->rows[i] / tp->T, t = tp->rows[i] % tp->T;
        if (t < tp->live_start[b] || t >= tp->live_end[b])
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: loss row %d (example %d, position %d) is not "
                              "live", i, b, t);
    }
    for (int k = 0; k < CVENE_N_COMPONENTS; k++)
        for (int l = tp->layer - 1 > 0 ? tp->layer - 1 : 0; l < n_layer; l++) {
            const int site = o && o->site_fn && ((o->sites[k] >> l) & 1u), grad = g && model_grad_on(g, (cvene_component)k, l);
            if ((site || grad) && !allowed(k, l, tp))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: live rows allow %s only on the residual "
                                  "entering layer %d (%s of layer %d)", grad ? "grad sites" : "sites", tp->layer,
                                  cvene_component_name((cvene_component)k), l);
        }
    return CVENE_OK;
}

cvene_status model_live_unpack(cvene_backend *be, const model_train_pass *tp, float *g, float *tmp, const float *zero,
                               int C) {
    const size_t MC = (size_t)model_live_rows(tp) * C, BTC = (size_t)tp->B * tp->T * C;
    CVENE_TRY(be->ops->copy(be, tmp, g, MC * sizeof(float)));
    CVENE_TRY(be->ops->copy(be, g, zero, BTC * sizeof(float)));
    return model_live_move(be, tp, g, tmp, C, 1);
}

cvene_status model_grad_btc(cvene_model *m, const model_grad_sites *g, cvene_component c, cvene_component head_c, int l,
                            float *data, float *heads, int B, int T, int C, int H) {
    const int D = C / H;
    cvene_backend *be = m->ctx->be;
    if (head_c != CVENE_N_COMPONENTS && model_grad_on(g, head_c, l)) { /* the reverse of the forward's order */
        const int64_t hs[4] = {B, H, T, D};
        CVENE_TRY(be->ops->permute_heads(be, heads, data, B, T, H, D, 1));
        CVENE_TRY(model_grad_site(m, g, head_c, l, heads, 4, hs));
        CVENE_TRY(be->ops->permute_heads(be, data, heads, B, T, H, D, 0));
    }
    const int64_t shape[4] = {B, T, C, 0};
    return c == CVENE_N_COMPONENTS ? CVENE_OK : model_grad_site(m, g, c, l, data, 3, shape);
}
