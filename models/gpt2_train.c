/* GPT-2's training pass (models/model.h, "training passes"): the forward of layers [l0, L)
 * (l0 = L: the output head alone)
 * keeping what the backward needs, and the backward from the loss rows' logits down to the
 * input of l0, with the model frozen (activation gradients only: every GEMM's dX is the
 * forward's GEMM with the weight transposed; no weight gradient is ever formed).
 *
 * Saved per layer: the residual entering it (ln_1's input), q, k, v, the attention
 * probabilities, the residual after the attention (ln_2's input) and c_fc's output before the
 * activation. Interventions act at the forward's sites as in a normal forward, so what is
 * saved is what the later ops read; their vector-Jacobian products run at the grad sites.
 *
 * Live rows (model_train_pass.live_start): every op but the attention runs on the packed live
 * rows (R of them, rows [live_start[b], live_end[b]) of each example, in order); the attention
 * runs on the (B, T) layout, its K and V the caller's kv (the clean rows prefilled, the live ones
 * scattered in), its Q zero on the rows that are not live (their outputs are discarded), and its
 * backward's dK and dV on those rows dropped (they are constants). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
#include "models/gpt2.h"

typedef struct {
    float *x_in, *q, *k, *v; // (B, T, C)
    float *probs;            // (B, H, T, T)
    float *x_mid;            // (B, T, C)
    float *fc_pre;           // (B, T, I)
} saved_layer;

typedef struct {
    saved_layer *layer;      // [L - l0] (host array of device pointers)
    float *x;                // (B, T, C) the running residual
    float *ln, *out, *att, *heads; // (B, T, C) work
    float *fc;               // (B, T, I)
    float *xr, *lnf;         // (N, C) the loss rows' final residual and ln_f output
    float *g, *dout, *dln, *datt, *dq, *dk, *dv, *tmp; // (B, T, C) gradients
    float *dfc;              // (B, T, I)
    float *dp;               // (B, H, T, T) attention backward scratch
    float *dlnf, *dxr;       // (N, C)
    int32_t *mask;           // (B, T) on the device, or NULL
    float *zero;             // (B, T, C) zeros (live rows: the Q and dAtt rows that are not live)
} train_acts;

static void carve(cvene_arena *a, train_acts *s, saved_layer *layers, int n_layers, int B, int T, int C, int H,
                  int I, int N, int with_mask) {
    const size_t BTC = (size_t)B * T * C, BTI = (size_t)B * T * I, P = (size_t)B * H * T * T, F = sizeof(float);
    for (int k = 0; k < n_layers; k++) {
        saved_layer *sl = &layers[k];
        sl->x_in = cvene_arena_take(a, BTC * F);
        sl->q = cvene_arena_take(a, BTC * F);
        sl->k = cvene_arena_take(a, BTC * F);
        sl->v = cvene_arena_take(a, BTC * F);
        sl->probs = cvene_arena_take(a, P * F);
        sl->x_mid = cvene_arena_take(a, BTC * F);
        sl->fc_pre = cvene_arena_take(a, BTI * F);
    }
    s->layer = layers;
    float **btc[] = {&s->x, &s->ln, &s->out, &s->att, &s->heads, &s->g, &s->dout, &s->dln, &s->datt,
                     &s->dq, &s->dk, &s->dv, &s->tmp};
    for (size_t k = 0; k < sizeof btc / sizeof *btc; k++) *btc[k] = cvene_arena_take(a, BTC * F);
    s->fc = cvene_arena_take(a, BTI * F);
    s->dfc = cvene_arena_take(a, BTI * F);
    s->dp = cvene_arena_take(a, P * F);
    s->xr = cvene_arena_take(a, (size_t)N * C * F);
    s->lnf = cvene_arena_take(a, (size_t)N * C * F);
    s->dlnf = cvene_arena_take(a, (size_t)N * C * F);
    s->dxr = cvene_arena_take(a, (size_t)N * C * F);
    s->mask = with_mask ? cvene_arena_take(a, (size_t)B * T * 4) : NULL;
    s->zero = cvene_arena_take(a, BTC * F);
}

/* The arena of a pass (sized, grown, carved); layers must hold L - l0 entries. */
static cvene_status setup(cvene_model *m, const model_train_pass *tp, train_acts *s, saved_layer *layers) {
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    const int n_layers = c->n_layer - tp->layer;
    cvene_arena a = {NULL, 0, 0};
    carve(&a, s, layers, n_layers, tp->B, tp->T, c->n_embd, c->n_head, c->n_inner, tp->n_rows, tp->mask != NULL);
    CVENE_TRY(model_reserve_training(m, a.used));
    a = (cvene_arena){m->train_mem, 0, m->train_cap};
    carve(&a, s, layers, n_layers, tp->B, tp->T, c->n_embd, c->n_head, c->n_inner, tp->n_rows, tp->mask != NULL);
    const size_t BTC = (size_t)tp->B * tp->T * c->n_embd;
    for (int k = 0; tp->live_start && k < n_layers; k++) /* K and V: the caller's, clean rows prefilled */
        layers[k].k = tp->kv + (size_t)(2 * k) * BTC, layers[k].v = tp->kv + (size_t)(2 * k + 1) * BTC;
    float *z = calloc(BTC, sizeof(float));
    if (!z) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    const cvene_status st = m->ctx->be->ops->to_device(m->ctx->be, s->zero, z, BTC * sizeof(float));
    free(z);
    return st;
}

static cvene_status check_pass(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o) {
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    cvene_ctx *ctx = m->ctx;
    if (ctx->params.activation_dtype != CVENE_F32 || ((gpt2_model *)m->arch)->p.gemm_dtype != CVENE_F32)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "training runs GPT-2 in f32 only (this context computes in %s)",
                          cvene_dtype_name(ctx->params.compute_dtype));
    if (!ctx->be->ops->bwd)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no backward ops yet (train on the CPU)",
                          ctx->be->ops->name);
    if (tp->layer < 0 || tp->layer > c->n_layer || tp->B <= 0 || tp->T <= 0 || tp->T > c->n_positions ||
        tp->n_rows <= 0 || !tp->rows || !tp->x || !tp->logits)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: layer %d, B %d, T %d, %d loss rows out of range",
                          tp->layer, tp->B, tp->T, tp->n_rows);
    for (int i = 0; i < tp->n_rows; i++)
        if (tp->rows[i] < 0 || tp->rows[i] >= tp->B * tp->T)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: loss row %d = %d is outside [0, %d)", i,
                              tp->rows[i], tp->B * tp->T);
    CVENE_TRY(model_check_live(m, tp, o, NULL, c->n_layer));
    /* the attention backward differentiates the softmax through the probabilities the forward
     * used: an intervention that replaced them would need the ones it replaced */
    for (int l = tp->layer; o && o->site_fn && l < c->n_layer; l++)
        if ((o->sites[CVENE_ATTENTION_WEIGHT] >> l) & 1u)
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "training through an intervention on attention_weight (layer %d) is not supported", l);
    return CVENE_OK;
}

static float layer_scale(const gpt2_config *c, int l) {
    const float s0 = c->scale_attn_weights ? 1.0f / sqrtf((float)(c->n_embd / c->n_head)) : 1.0f;
    return c->scale_by_inverse_layer_idx ? s0 / (float)(l + 1) : s0;
}

cvene_status gpt2_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o) {
    CVENE_TRY(check_pass(m, tp, o));
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    const gpt2_params *p = &((gpt2_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, C = c->n_embd, H = c->n_head, D = C / H, I = c->n_inner, BT = B * T;
    const int live = tp->live_start != NULL, M = model_live_rows(tp); /* M: the rows every op but attention runs on */
    const size_t BTC = (size_t)BT * C, MC = (size_t)M * C;
    saved_layer *layers = malloc(sizeof(saved_layer) * (size_t)(c->n_layer - tp->layer + 1));
    if (!layers) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    train_acts s;
    cvene_status st = setup(m, tp, &s, layers);
    if (st == CVENE_OK && s.mask) st = op->to_device(be, s.mask, tp->mask, (size_t)BT * 4);
    if (st == CVENE_OK) st = op->copy(be, s.x, tp->x, BTC * sizeof(float));
    gpt2_site_run r = {m, o, B, T, s.heads, CVENE_F32, NULL};
    if (st == CVENE_OK && tp->layer > 0) /* the residual the pass starts from is the block below's output */
        st = gpt2_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, tp->layer - 1, s.x);
    if (st == CVENE_OK && live && tp->layer < c->n_layer) /* the same residual, before it is packed */
        st = gpt2_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, tp->layer, s.x);
    if (st == CVENE_OK && live) { /* from here on x holds the live rows, packed */
        st = model_live_move(be, tp, s.x, s.tmp, C, 0);
        if (st == CVENE_OK) st = op->copy(be, s.x, s.tmp, MC * sizeof(float));
    }
    /* q, k, v from ln into the layer's (B, T, C) buffers: directly, or by the live rows */
    const int qkv_ld = 3 * C;
    for (int l = tp->layer; st == CVENE_OK && l < c->n_layer; l++) {
        const gpt2_layer *L = &p->layers[l];
        const saved_layer *sl = &layers[l - tp->layer];
#define TRY(e) if ((st = (e)) != CVENE_OK) break
        if (!live) TRY(gpt2_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, l, s.x));
        TRY(op->copy(be, sl->x_in, s.x, MC * sizeof(float)));
        TRY(op->layernorm(be, s.ln, s.x, L->ln_1_w, L->ln_1_b, M, C, c->ln_eps)); // (M, C)
        TRY(gpt2_site_btc(&r, CVENE_ATTENTION_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        float *qkv[3] = {sl->q, sl->k, sl->v};
        if (live) TRY(op->copy(be, sl->q, s.zero, BTC * sizeof(float))); /* Q of rows that are not live: 0 */
        for (int j = 0; j < 3 && st == CVENE_OK; j++) {
            float *dst = live ? s.tmp : qkv[j];
            st = op->matmul(be, dst, s.ln, gpt2_wat(L->c_attn_w, CVENE_F32, (size_t)j * C), qkv_ld, 0,
                            L->c_attn_b + (size_t)j * C, M, C, C);
            if (st == CVENE_OK && live) st = model_live_move(be, tp, qkv[j], s.tmp, C, 1);
            if (st == CVENE_OK && live && j > 0) st = model_live_pad(be, tp, qkv[j], s.zero, C); /* K, V padding */
        }
        if (st != CVENE_OK) break;
        TRY(gpt2_site_btc(&r, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, sl->q));
        TRY(gpt2_site_btc(&r, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, sl->k));
        TRY(gpt2_site_btc(&r, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, sl->v));
        TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, sl->q));
        TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, sl->k));
        TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, sl->v));
        TRY(op->attn_probs(be, sl->probs, sl->q, (size_t)T * C, sl->k, (size_t)T * C, s.mask, B, T, T, H, D,
                           layer_scale(c, l))); // (B, H, T, T)
        TRY(op->attn_apply(be, s.att, sl->probs, sl->v, (size_t)T * C, B, T, T, H, D)); // (B, T, C)
        TRY(gpt2_site_btc(&r, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.att));
        if (live) TRY(model_live_move(be, tp, s.att, s.tmp, C, 0));
        TRY(op->matmul(be, s.out, live ? s.tmp : s.att, L->attn_proj_w, C, 0, L->attn_proj_b, M, C, C));
        TRY(gpt2_site_btc(&r, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.out));
        TRY(op->residual_add(be, s.x, s.out, MC));
        TRY(op->copy(be, sl->x_mid, s.x, MC * sizeof(float)));
        TRY(op->layernorm(be, s.ln, s.x, L->ln_2_w, L->ln_2_b, M, C, c->ln_eps));
        TRY(gpt2_site_btc(&r, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        TRY(op->matmul(be, sl->fc_pre, s.ln, L->c_fc_w, I, 0, L->c_fc_b, M, C, I)); // (M, I)
        TRY(op->copy(be, s.fc, sl->fc_pre, (size_t)M * I * sizeof(float)));
        TRY(op->activation(be, s.fc, (size_t)M * I, c->act));
        TRY(gpt2_site_call(&r, CVENE_MLP_ACTIVATION, l, s.fc, 3, B, T, I, 0));
        TRY(op->matmul(be, s.out, s.fc, L->mlp_proj_w, C, 0, L->mlp_proj_b, M, I, C));
        TRY(gpt2_site_btc(&r, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.out));
        TRY(op->residual_add(be, s.x, s.out, MC));
        TRY(gpt2_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.x));
#undef TRY
    }
    /* the loss rows: their final residual, ln_f, the head */
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++)
        st = op->copy(be, s.xr + (size_t)i * C, s.x + model_loss_row(tp, i) * C, sizeof(float) * (size_t)C);
    if (st == CVENE_OK) st = op->layernorm(be, s.lnf, s.xr, p->ln_f_w, p->ln_f_b, tp->n_rows, C, c->ln_eps);
    if (st == CVENE_OK) st = op->matmul(be, tp->logits, s.lnf, p->lm_head, C, 1, NULL, tp->n_rows, C, c->vocab_size);
    free(layers);
    return st == CVENE_SITE_STOPPED ? cvene_fail(m->ctx, CVENE_ERR_CALLBACK, "a site stopped a training pass") : st;
}

/* dx (M, K) = dy (M, N) @ W^T for a forward out = x @ W with W (K, N) row-major at leading
 * dimension ldw (a Conv1D weight or a column slice of one). */
static cvene_status gemm_dx(cvene_backend *be, float *dx, const float *dy, const void *w, int ldw, int M, int K, int N) {
    return be->ops->matmul(be, dx, dy, w, ldw, 1, NULL, M, N, K);
}

/* A grad site on a (B, T, C) gradient and its per-head form (models/train_pass.c). */
static cvene_status grad_btc(cvene_model *m, const model_grad_sites *g, cvene_component c, cvene_component head_c,
                             int l, float *data, float *heads, int B, int T) {
    const gpt2_config *cfg = &((gpt2_model *)m->arch)->cfg;
    return model_grad_btc(m, g, c, head_c, l, data, heads, B, T, cfg->n_embd, cfg->n_head);
}

cvene_status gpt2_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                 const model_grad_sites *gs) {
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    const gpt2_params *p = &((gpt2_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, C = c->n_embd, H = c->n_head, D = C / H, I = c->n_inner, BT = B * T;
    const int live = tp->live_start != NULL, M = model_live_rows(tp);
    const size_t BTC = (size_t)BT * C, MC = (size_t)M * C, F = sizeof(float);
    if (live) CVENE_TRY(model_check_live(m, tp, NULL, gs, c->n_layer));
    saved_layer *layers = malloc(sizeof(saved_layer) * (size_t)(c->n_layer - tp->layer + 1));
    if (!layers) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    train_acts s;
    cvene_status st = setup(m, tp, &s, layers); /* the same carve as the forward: its saved buffers */
    /* the head: dlnf = dlogits @ head (V, C); ln_f; scattered into the residual's gradient */
    if (st == CVENE_OK) st = op->matmul(be, s.dlnf, dlogits, p->lm_head, C, 0, NULL, tp->n_rows, c->vocab_size, C);
    if (st == CVENE_OK) st = bw->layernorm(be, s.dxr, s.dlnf, s.xr, p->ln_f_w, tp->n_rows, C, c->ln_eps, 0);
    if (st == CVENE_OK) st = op->copy(be, s.g, s.zero, MC * F);
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++) /* rows may repeat: add, do not copy */
        st = op->residual_add(be, s.g + model_loss_row(tp, i) * C, s.dxr + (size_t)i * C, (size_t)C);
    for (int l = c->n_layer - 1; st == CVENE_OK && l >= tp->layer; l--) {
        const gpt2_layer *L = &p->layers[l];
        const saved_layer *sl = &layers[l - tp->layer];
#define TRY(e) if ((st = (e)) != CVENE_OK) break
        /* x_out = x_mid + mlp(ln_2(x_mid)) */
        TRY(grad_btc(m, gs, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.g, s.heads, B, T));
        TRY(op->copy(be, s.dout, s.g, MC * F));
        TRY(grad_btc(m, gs, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.dout, s.heads, B, T));
        TRY(gemm_dx(be, s.dfc, s.dout, L->mlp_proj_w, C, M, I, C)); // (M, I)
        if (model_grad_on(gs, CVENE_MLP_ACTIVATION, l)) {
            const int64_t shape[4] = {B, T, I, 0};
            TRY(model_grad_site(m, gs, CVENE_MLP_ACTIVATION, l, s.dfc, 3, shape));
        }
        TRY(bw->activation(be, s.dfc, s.dfc, sl->fc_pre, (size_t)M * I, c->act, 0));
        TRY(gemm_dx(be, s.dln, s.dfc, L->c_fc_w, I, M, C, I));
        TRY(grad_btc(m, gs, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.dln, s.heads, B, T));
        TRY(bw->layernorm(be, s.g, s.dln, sl->x_mid, L->ln_2_w, M, C, c->ln_eps, 1)); /* g: d x_mid */
        /* x_mid = x_in + attn(ln_1(x_in)) */
        TRY(op->copy(be, s.dout, s.g, MC * F));
        TRY(grad_btc(m, gs, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.dout, s.heads, B, T));
        if (live) { /* dAtt on the (B, T) layout: the live rows' and 0 */
            TRY(gemm_dx(be, s.tmp, s.dout, L->attn_proj_w, C, M, C, C));
            TRY(op->copy(be, s.datt, s.zero, BTC * F));
            TRY(model_live_move(be, tp, s.datt, s.tmp, C, 1));
        } else {
            TRY(gemm_dx(be, s.datt, s.dout, L->attn_proj_w, C, BT, C, C));
        }
        TRY(grad_btc(m, gs, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.datt, s.heads, B, T));
        TRY(bw->attention(be, s.dq, s.dk, s.dv, s.dp, s.datt, sl->q, sl->k, sl->v, sl->probs, B, T, H, D,
                          layer_scale(c, l)));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, s.dv, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, s.dk, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, s.dq, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, s.dv, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, s.dk, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, s.dq, s.heads, B, T));
        if (live) { /* the live rows of dQ, dK, dV, packed in place (the rest: constants' gradients) */
            float *dqkv[3] = {s.dq, s.dk, s.dv};
            for (int j = 0; j < 3 && st == CVENE_OK; j++) {
                st = model_live_move(be, tp, dqkv[j], s.tmp, C, 0);
                if (st == CVENE_OK) st = op->copy(be, dqkv[j], s.tmp, MC * F);
            }
            if (st != CVENE_OK) break;
        }
        /* dln_1 = dq Wq^T + dk Wk^T + dv Wv^T, the three column slices of c_attn */
        TRY(gemm_dx(be, s.dln, s.dq, L->c_attn_w, 3 * C, M, C, C));
        TRY(gemm_dx(be, s.tmp, s.dk, gpt2_wat(L->c_attn_w, CVENE_F32, C), 3 * C, M, C, C));
        TRY(op->residual_add(be, s.dln, s.tmp, MC));
        TRY(gemm_dx(be, s.tmp, s.dv, gpt2_wat(L->c_attn_w, CVENE_F32, 2 * (size_t)C), 3 * C, M, C, C));
        TRY(op->residual_add(be, s.dln, s.tmp, MC));
        TRY(grad_btc(m, gs, CVENE_ATTENTION_INPUT, CVENE_N_COMPONENTS, l, s.dln, s.heads, B, T));
        TRY(bw->layernorm(be, s.g, s.dln, sl->x_in, L->ln_1_w, M, C, c->ln_eps, 1)); /* g: d x_in */
        if (!live) TRY(grad_btc(m, gs, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, l, s.g, s.heads, B, T));
#undef TRY
    }
    if (st == CVENE_OK && live) { /* back to the (B, T) layout: the live rows' gradient and 0 */
        st = model_live_unpack(be, tp, s.g, s.tmp, s.zero, C);
        if (st == CVENE_OK && tp->layer < c->n_layer)
            st = grad_btc(m, gs, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, tp->layer, s.g, s.heads, B, T);
    }
    if (st == CVENE_OK && tp->layer > 0)
        st = grad_btc(m, gs, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, tp->layer - 1, s.g, s.heads, B, T);
    if (st == CVENE_OK) st = op->sync(be);
    free(layers);
    return st;
}
