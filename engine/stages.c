/* Layer split (cvene.h, "layer split"): a model's layers in stages on ranks, rows in micro-batches.
 *
 * Stage s runs its layers [a, b) of each micro-batch: stage 0 as a forward from the token ids, the
 * others as a forward resumed at layer a from the residual the stage before sent (models/model.h,
 * cvene_resume with no past); every stage but the last stops at block_output of layer b - 1 (a site
 * that captures the residual and ends the forward) and sends the residual with the rows' carry to
 * stage s + 1. Sends block until the next stage takes the message, so stage s computes micro-batch
 * j + 1 while stage s + 1 computes j: a pipeline, with no schedule of its own. The last stage keeps
 * the logits of every micro-batch and sends them to rank 0 at the end (sending each as it is done
 * could deadlock: rank 0 is still feeding the pipe).
 *
 * The layers compute exactly what one process computes (the same kernels on the same rows); only the
 * fused residual add + next layernorm at a stage boundary becomes an add, then a layernorm. */
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"
#include "kernels/tensor.h"
#include "models/model.h"

typedef struct {
    const cvene_stage_opts *u;
    int row0, stop_layer; /* stop_layer -1: the last stage (runs to the logits) */
    float *carry;         /* this micro-batch's rows' carry (host) */
    float *out;           /* the captured residual (host) */
    size_t out_bytes;
    cvene_backend *be;
    int failed;           /* the capture's copy failed (its message is on the context) */
} stage_run;

static int stage_site(void *user, cvene_component c, int layer, cvene_tensor_view *v) {
    stage_run *r = user;
    if (r->u && r->u->fn && ((r->u->sites[c] >> layer) & 1u)) {
        const int rc = r->u->fn(r->u->user, c, layer, v, r->row0, r->carry);
        if (rc) return rc;
    }
    if (c == CVENE_BLOCK_OUTPUT && layer == r->stop_layer) {
        if (r->be->ops->to_host(r->be, r->out, v->data, r->out_bytes) != CVENE_OK) {
            r->failed = 1;
            return 1;
        }
        return CVENE_SITE_STOP;
    }
    return 0;
}

static cvene_status check_args(cvene_comm *c, cvene_model *m, const int32_t *ids, int B, int T, int micro,
                               const cvene_stage_opts *u) {
    cvene_ctx *ctx = m->ctx;
    const cvene_model_info mi = cvene_model_get_info(m);
    if (!m->vt->forward_from)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "stages: %s models cannot run in stages (GPT-2 and GPT-NeoX can)",
                          m->vt->name);
    if (B < 1 || T < 1 || T > model_position_limit(m) || micro < 1 || micro > B)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: B = %d, T = %d (1..%d) and micro_batch = %d (1..B) are "
                          "out of range", B, T, model_position_limit(m), micro);
    if (c->size > mi.n_layer)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: %d ranks but the model has only %d layers (one stage "
                          "holds at least one)", c->size, mi.n_layer);
    if (u && (u->logits_to_keep < 0 || u->logits_to_keep > (c->size > 1 ? 1 : T)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: logits_to_keep = %d is outside [0, %d]%s",
                          u->logits_to_keep, c->size > 1 ? 1 : T,
                          c->size > 1 ? " (a resumed forward keeps every position or the last)" : "");
    if (u && (u->carry < 0 || (u->carry > 0 && !u->fn)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: carry = %d floats per row needs a site function (and "
                          "must not be negative)", u->carry);
    for (int k = 0; u && u->fn && k < CVENE_N_COMPONENTS; k++)
        if (mi.n_layer < 64 && (u->sites[k] >> mi.n_layer))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: sites of %s name layers past the model's %d",
                              cvene_component_name((cvene_component)k), mi.n_layer);
    if (c->rank == 0 && !ids) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "stages: rank 0 needs the input ids");
    /* every rank the same shape of work, or every rank fails here (not a hang in the pipe) */
    const int64_t shape[6] = {B, T, micro, u ? u->carry : 0, u ? u->logits_to_keep : 0, mi.n_layer};
    return cvene_comm_agree(c, shape, sizeof shape, "B, T, micro-batch, carry and model");
}

cvene_status cvene_forward_stages(cvene_comm *c, cvene_model *m, const int32_t *ids, int B, int T, int micro,
                                  const cvene_stage_opts *u, float *logits) {
    if (!c || !m) return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "stages: NULL communicator or model");
    CVENE_TRY(check_args(c, m, ids, B, T, micro, u));
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_model_info mi = cvene_model_get_info(m);
    const int N = c->size, s = c->rank, C = mi.n_embd, V = mi.vocab_size, K = u ? u->carry : 0;
    const int keep = u ? u->logits_to_keep : 0, TL = keep ? keep : T; /* logits positions per row */
    int a, n_l;
    cvene_stage_layers(mi.n_layer, N, s, &a, &n_l);
    const int last = s == N - 1;
    /* a message: the micro-batch's residual (rows, T, C) then its carry (rows, K), host f32 */
    const size_t x_floats = (size_t)micro * T * C, msg_floats = x_floats + (size_t)micro * K;
    float *msg = malloc(sizeof(float) * msg_floats), *xdev = NULL;
    float *all_logits = last ? (s == 0 ? logits : malloc(sizeof(float) * (size_t)B * TL * V)) : NULL;
    cvene_status st = msg && (!last || all_logits || (s == 0 && !logits))
                          ? CVENE_OK
                          : cvene_fail(ctx, CVENE_ERR_OOM, "stages: out of memory for a micro-batch of %d rows", micro);
    /* a resumed forward reads its residual from the device */
    if (st == CVENE_OK && s > 0 && be->device != CVENE_DEVICE_CPU)
        st = be->ops->alloc(be, (void **)&xdev, sizeof(float) * x_floats);
    for (int r0 = 0; r0 < B && st == CVENE_OK; r0 += micro) {
        const int rows = B - r0 < micro ? B - r0 : micro;
        const size_t xb = sizeof(float) * (size_t)rows * T * C, cb = sizeof(float) * (size_t)rows * K;
        float *carry = msg + (size_t)rows * T * C; /* this micro-batch's layout: residual, then carry */
        if (s > 0) st = comm_recv_big(c, msg, xb + cb, s - 1, COMM_TAG_STAGE, "a micro-batch's residual");
        else memset(carry, 0, cb);
        if (st != CVENE_OK) break;
        stage_run r = {u, r0, last ? -1 : a + n_l - 1, carry, msg, xb, be, 0};
        cvene_run_opts o;
        memset(&o, 0, sizeof o);
        o.site_fn = stage_site, o.site_user = &r;
        for (int k = 0; u && u->fn && k < CVENE_N_COMPONENTS; k++) /* this stage's layers only */
            o.sites[k] = u->sites[k] & (((a + n_l >= 64 ? 0 : 1ull << (a + n_l)) - 1) & ~((1ull << a) - 1));
        if (!last) o.sites[CVENE_BLOCK_OUTPUT] |= 1ull << (a + n_l - 1);
        o.logits = last && all_logits ? all_logits + (size_t)r0 * TL * V : NULL;
        o.logits_to_keep = last && s == 0 ? keep : 0; /* a resumed forward: rs.last_logits_only */
        if (s == 0) {
            st = cvene_forward(m, ids + (size_t)r0 * T, rows, T, &o);
        } else {
            if (xdev) st = be->ops->to_device(be, xdev, msg, xb);
            cvene_resume rs;
            memset(&rs, 0, sizeof rs);
            rs.layer = a, rs.past = 0, rs.x = xdev ? xdev : msg;
            rs.last_logits_only = last && keep == 1;
            if (st == CVENE_OK) st = m->vt->forward_from(m, &rs, rows, T, &o);
        }
        if (st == CVENE_ERR_CALLBACK && r.failed) st = CVENE_ERR_IO; /* the capture's own message stands */
        if (st == CVENE_OK && !last) st = comm_send_big(c, msg, xb + cb, s + 1, COMM_TAG_STAGE);
    }
    /* the logits to rank 0, micro-batch by micro-batch */
    for (int r0 = 0; st == CVENE_OK && N > 1 && (last || s == 0) && r0 < B; r0 += micro) {
        const int rows = B - r0 < micro ? B - r0 : micro;
        const size_t n = sizeof(float) * (size_t)rows * TL * V;
        if (last) st = comm_send_big(c, all_logits + (size_t)r0 * TL * V, n, 0, COMM_TAG_STAGE_OUT);
        else if (logits) st = comm_recv_big(c, logits + (size_t)r0 * TL * V, n, N - 1, COMM_TAG_STAGE_OUT, "logits");
        else { /* rank 0 without a buffer: take them anyway, so nothing stays queued */
            float *tmp = malloc(n ? n : 1);
            st = tmp ? comm_recv_big(c, tmp, n, N - 1, COMM_TAG_STAGE_OUT, "logits")
                     : cvene_fail(ctx, CVENE_ERR_OOM, "stages: out of memory");
            free(tmp);
        }
    }
    if (xdev) be->ops->free(be, xdev);
    if (all_logits != logits) free(all_logits);
    free(msg);
    return st;
}
