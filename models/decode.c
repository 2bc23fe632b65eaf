/* What the causal LMs' decoding calls share (model_decode, issue #16): checking a call and
 * appending a layer's new keys and values to the per-row cache. */
#include "kernels/tensor.h"
#include "models/model.h"

cvene_status decode_check(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o) {
    const cvene_model_info *mi = &m->info;
    if (!dc || !dc->k || !dc->v || !dc->ids || !dc->pos || !dc->mask || !dc->zeros)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "decoding call: a NULL cache, ids, positions, mask or zeros");
    if (B <= 0 || T <= 0 || dc->past < 0 || dc->cap <= 0 || (int64_t)dc->past + T > dc->cap)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG,
                          "decoding call: B = %d, T = %d new positions after past = %d do not fit the cache of %d "
                          "positions", B, T, dc->past, dc->cap);
    if (o && (o->attention_mask || o->position_ids || o->logits))
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "decoding call: the mask, positions and logits go in the "
                          "decoding arguments, not the run options");
    for (int c = 0; o && c < CVENE_N_COMPONENTS; c++)
        if (mi->n_layer < 64 && (o->sites[c] >> mi->n_layer))
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "sites[%s] asks for a layer >= n_layer = %d",
                              cvene_component_name((cvene_component)c), mi->n_layer);
    return CVENE_OK;
}

cvene_status decode_append(cvene_backend *be, cvene_dtype adt, const model_decode *dc, int l, int B, int T, int C,
                           const void *k, const void *v, const void **kk, const void **vv) {
    const size_t E = cvene_dtype_size(adt), row = (size_t)C * E;
    const size_t layer = (size_t)l * B * dc->cap * C; /* elements before layer l's (B, cap, C) */
    void *kc = act_at(dc->k, adt, layer), *vc = act_at(dc->v, adt, layer);
    const size_t at = (size_t)dc->past * row;
    CVENE_TRY(be->ops->gen->copy2d(be, (char *)kc + at, (size_t)dc->cap * row, k, (size_t)T * row, (size_t)T * row,
                                   (size_t)B));
    CVENE_TRY(be->ops->gen->copy2d(be, (char *)vc + at, (size_t)dc->cap * row, v, (size_t)T * row, (size_t)T * row,
                                   (size_t)B));
    *kk = kc, *vv = vc;
    return CVENE_OK;
}
