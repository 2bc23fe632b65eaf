/* GPT-NeoX's training pass (models/model.h, "training passes"), mirroring GPT-2's
 * (models/gpt2_train.c): the forward of layers [l0, L) (l0 = L: the output head alone) keeping
 * what the backward needs, and the backward from the loss rows' logits down to the input of
 * l0, with the model frozen (activation gradients only: every GEMM's dX is the forward's GEMM
 * with its weight not transposed -- nn.Linear weights are (out, in) -- and no weight gradient
 * is ever formed).
 *
 * Block l, as models/gpt_neox.c runs it (x the residual entering it):
 *   a = dense(attn(rotary(split(query_key_value(ln1(x))))))
 *   parallel residual:   x' = x + (mlp(ln2(x)) + a)
 *   sequential residual: h = x + a;  x' = h + mlp(ln2(h))
 * so the backward of a parallel block sends the block output's gradient down both branches and
 * adds both layernorms' input gradients to it; a sequential one is GPT-2's block.
 *
 * The fused projection's output (B, T, H, 3, D) is regrouped to q, k, v, each (B, T, C), and
 * the first rot_dims of every q and k head are rotated; the backward undoes both: rotary's
 * transpose on dq and dk (after their grad sites: query_output and key_output are the
 * post-rotary vectors), then the regrouping's inverse before the projection's dX.
 *
 * Saved per layer: the residual entering it (ln1's and, parallel, ln2's input), q, k, v as
 * attention used them, the attention probabilities, the residual after the attention
 * (sequential only: ln2's input) and dense_h_to_4h's output before the activation.
 * Interventions act at the forward's sites as in a normal forward, so what is saved is what the
 * later ops read; their vector-Jacobian products run at the grad sites.
 *
 * Live rows (model_train_pass.live_start) as GPT-2's pass runs them: every op but the attention
 * on the packed live rows, rotary with each packed row's own position; the attention on the
 * (B, T) layout with the caller's K and V (post-rotary) and Q zero on the rows that are not live. */
#include <math.h>
#include <stdlib.h>

#include "kernels/tensor.h"
#include "models/gpt_neox.h"

typedef struct {
    float *x_in;             // (B, T, C)
    float *qkv;              // (3, B, T, C): q, k (post-rotary), v
    float *probs;            // (B, H, T, T)
    float *x_mid;            // (B, T, C) sequential only (NULL when parallel)
    float *fc_pre;           // (B, T, I)
} saved_layer;

typedef struct {
    saved_layer *layer;      // [L - l0] (host array of device pointers)
    float *x;                // (B, T, C) the running residual
    float *ln, *att, *attn, *mlp, *heads; // (B, T, C) work
    float *tmp;              // (3, B, T, C) the projection's regrouping scratch
    float *fc;               // (B, T, I)
    float *xr, *lnf;         // (N, C) the loss rows' final residual and ln_f output
    float *g, *dmlp, *dattn, *dln, *datt; // (B, T, C) gradients
    float *dqkv;             // (3, B, T, C) dq, dk, dv; then the projection's (B, T, H, 3, D)
    float *dfc;              // (B, T, I)
    float *dp;               // (B, H, T, T) attention backward scratch
    float *dlnf, *dxr;       // (N, C)
    int32_t *mask;           // (B, T) on the device, or NULL
    int32_t *pos;            // (B, T) on the device, or NULL (0..T-1)
    int32_t *rpos;           // (B T) live rows: each packed row's position, on the device
    float *zero;             // (B, T, C) zeros
} train_acts;

static void carve(cvene_arena *a, train_acts *s, saved_layer *layers, const neox_config *c, int n_layers, int B,
                  int T, int N, int with_mask, int with_pos) {
    const size_t C = (size_t)c->n_embd, BTC = (size_t)B * T * C, BTI = (size_t)B * T * c->n_inner;
    const size_t P = (size_t)B * c->n_head * T * T, F = sizeof(float);
    for (int k = 0; k < n_layers; k++) {
        saved_layer *sl = &layers[k];
        sl->x_in = cvene_arena_take(a, BTC * F);
        sl->qkv = cvene_arena_take(a, 3 * BTC * F);
        sl->probs = cvene_arena_take(a, P * F);
        sl->x_mid = c->parallel ? NULL : cvene_arena_take(a, BTC * F);
        sl->fc_pre = cvene_arena_take(a, BTI * F);
    }
    s->layer = layers;
    float **btc[] = {&s->x,    &s->ln,   &s->att,   &s->attn, &s->mlp, &s->heads,
                     &s->g,    &s->dmlp, &s->dattn, &s->dln,  &s->datt};
    for (size_t k = 0; k < sizeof btc / sizeof *btc; k++) *btc[k] = cvene_arena_take(a, BTC * F);
    s->tmp = cvene_arena_take(a, 3 * BTC * F);
    s->dqkv = cvene_arena_take(a, 3 * BTC * F);
    s->fc = cvene_arena_take(a, BTI * F);
    s->dfc = cvene_arena_take(a, BTI * F);
    s->dp = cvene_arena_take(a, P * F);
    s->xr = cvene_arena_take(a, (size_t)N * C * F);
    s->lnf = cvene_arena_take(a, (size_t)N * C * F);
    s->dlnf = cvene_arena_take(a, (size_t)N * C * F);
    s->dxr = cvene_arena_take(a, (size_t)N * C * F);
    s->mask = with_mask ? cvene_arena_take(a, (size_t)B * T * 4) : NULL;
    s->pos = with_pos ? cvene_arena_take(a, (size_t)B * T * 4) : NULL;
    s->rpos = cvene_arena_take(a, (size_t)B * T * 4);
    s->zero = cvene_arena_take(a, BTC * F);
}

/* The arena of a pass (sized, grown, carved); layers must hold L - l0 entries. */
static cvene_status setup(cvene_model *m, const model_train_pass *tp, train_acts *s, saved_layer *layers) {
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    const int n_layers = c->n_layer - tp->layer;
    cvene_arena a = {NULL, 0, 0};
    carve(&a, s, layers, c, n_layers, tp->B, tp->T, tp->n_rows, tp->mask != NULL, tp->pos != NULL);
    CVENE_TRY(model_reserve_training(m, a.used));
    a = (cvene_arena){m->train_mem, 0, m->train_cap};
    carve(&a, s, layers, c, n_layers, tp->B, tp->T, tp->n_rows, tp->mask != NULL, tp->pos != NULL);
    const size_t BTC = (size_t)tp->B * tp->T * c->n_embd;
    float *z = calloc(BTC, sizeof(float));
    int32_t *rp = malloc(sizeof(int32_t) * (size_t)tp->B * tp->T);
    cvene_status st = z && rp ? CVENE_OK : cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = m->ctx->be->ops->to_device(m->ctx->be, s->zero, z, BTC * sizeof(float));
    if (st == CVENE_OK && tp->live_start) { /* the packed rows' positions, as rotary reads them */
        size_t r = 0;
        for (int b = 0; b < tp->B; b++)
            for (int t = tp->live_start[b]; t < tp->live_end[b]; t++)
                rp[r++] = tp->pos ? tp->pos[(size_t)b * tp->T + t] : t;
        st = m->ctx->be->ops->to_device(m->ctx->be, s->rpos, rp, sizeof(int32_t) * (r ? r : 1));
    }
    free(z), free(rp);
    return st;
}

static cvene_status check_pass(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o) {
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    cvene_ctx *ctx = m->ctx;
    const cvene_ops *op = ctx->be->ops;
    if (ctx->params.activation_dtype != CVENE_F32 || ((neox_model *)m->arch)->p.gemm_dtype != CVENE_F32)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "training runs GPT-NeoX in f32 only (this context computes in %s)",
                          cvene_dtype_name(ctx->params.compute_dtype));
    if (!op->bwd || !op->bwd->rotary || !op->rotary)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "the %s backend has no backward ops (or no rotary op) yet (train on the CPU)", op->name);
    /* rotary has no position table: T is bounded by the arena only, as in the forward */
    if (tp->layer < 0 || tp->layer > c->n_layer || tp->B <= 0 || tp->T <= 0 || (int64_t)tp->B * tp->T > (1 << 30) ||
        tp->n_rows <= 0 || !tp->rows || !tp->x || !tp->logits)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: layer %d, B %d, T %d, %d loss rows out of range",
                          tp->layer, tp->B, tp->T, tp->n_rows);
    for (int i = 0; i < tp->n_rows; i++)
        if (tp->rows[i] < 0 || tp->rows[i] >= tp->B * tp->T)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: loss row %d = %d is outside [0, %d)", i,
                              tp->rows[i], tp->B * tp->T);
    for (int i = 0; tp->pos && i < tp->B * tp->T; i++)
        if (tp->pos[i] < 0 || tp->pos[i] > (1 << 24))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "training pass: position id %d = %d is outside [0, %d] (exact in float32 up to 2^24)",
                              i, tp->pos[i], 1 << 24);
    CVENE_TRY(model_check_live(m, tp, o, NULL, c->n_layer));
    /* the attention backward differentiates the softmax through the probabilities the forward
     * used: an intervention that replaced them would need the ones it replaced */
    for (int l = tp->layer; o && o->site_fn && l < c->n_layer; l++)
        if ((o->sites[CVENE_ATTENTION_WEIGHT] >> l) & 1u)
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "training through an intervention on attention_weight (layer %d) is not supported", l);
    return CVENE_OK;
}

cvene_status neox_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o) {
    CVENE_TRY(check_pass(m, tp, o));
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    const neox_params *p = &((neox_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, C = c->n_embd, H = c->n_head, D = C / H, I = c->n_inner, BT = B * T;
    const int live = tp->live_start != NULL, M = model_live_rows(tp); /* M: the rows every op but attention runs on */
    const size_t BTC = (size_t)BT * C, MC = (size_t)M * C;
    const float scale = (float)(1.0 / sqrt((double)D)); /* norm_factor, as the forward */
    saved_layer *layers = malloc(sizeof(saved_layer) * (size_t)(c->n_layer - tp->layer + 1));
    if (!layers) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    train_acts s;
    cvene_status st = setup(m, tp, &s, layers);
    if (st == CVENE_OK && s.mask) st = op->to_device(be, s.mask, tp->mask, (size_t)BT * 4);
    if (st == CVENE_OK && s.pos) st = op->to_device(be, s.pos, tp->pos, (size_t)BT * 4);
    if (st == CVENE_OK) st = op->copy(be, s.x, tp->x, BTC * sizeof(float));
    neox_site_run r = {m, o, B, T, s.heads, CVENE_F32, NULL};
    if (st == CVENE_OK && tp->layer > 0) /* the residual the pass starts from is the block below's output */
        st = neox_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, tp->layer - 1, s.x);
    if (st == CVENE_OK && live && tp->layer < c->n_layer) /* the same residual, before it is packed */
        st = neox_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, tp->layer, s.x);
    if (st == CVENE_OK && live) { /* from here on x holds the live rows, packed */
        st = model_live_move(be, tp, s.x, s.tmp, C, 0);
        if (st == CVENE_OK) st = op->copy(be, s.x, s.tmp, MC * sizeof(float));
    }
    /* rotary's positions: the (B, T) ids, or each packed row's */
    const int32_t *rot_pos = live ? s.rpos : s.pos;
    const int rot_B = live ? 1 : B, rot_T = live ? M : T;
    for (int l = tp->layer; st == CVENE_OK && l < c->n_layer; l++) {
        const neox_layer *L = &p->layers[l];
        const saved_layer *sl = &layers[l - tp->layer];
        /* attention's q, k, v on the (B, T) layout: the saved qkv, or with live rows the saved q and
         * the caller's K and V */
        float *q = sl->qkv, *k = live ? tp->kv + (size_t)(2 * (l - tp->layer)) * BTC : sl->qkv + BTC;
        float *v = live ? tp->kv + (size_t)(2 * (l - tp->layer) + 1) * BTC : sl->qkv + 2 * BTC;
#define TRY(e) if ((st = (e)) != CVENE_OK) break
        if (!live) TRY(neox_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, l, s.x));
        TRY(op->copy(be, sl->x_in, s.x, MC * sizeof(float)));
        TRY(op->layernorm(be, s.ln, s.x, L->ln_1_w, L->ln_1_b, M, C, c->ln_eps)); // (M, C)
        TRY(neox_site_btc(&r, CVENE_ATTENTION_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        /* (M, H, 3, D) -> (M, 3, H, D) -> (3, M, C), as the forward; with live rows in dqkv (free
         * until the backward), scattered below */
        float *split = live ? s.dqkv : sl->qkv;
        TRY(op->matmul(be, split, s.ln, L->qkv_w, C, 1, L->qkv_b, M, C, 3 * C));
        TRY(op->permute_heads(be, s.tmp, split, M, H, 3, D, 1));
        TRY(op->permute_heads(be, split, s.tmp, 1, M, 3, C, 1));
        TRY(op->rotary(be, split, C, rot_pos, rot_B, rot_T, H, D, c->rot_dims, c->rot_base));
        TRY(op->rotary(be, split + MC, C, rot_pos, rot_B, rot_T, H, D, c->rot_dims, c->rot_base));
        if (live) { /* scatter: Q (zero elsewhere), and the live rows of K and V */
            TRY(op->copy(be, q, s.zero, BTC * sizeof(float)));
            TRY(model_live_move(be, tp, q, split, C, 1));
            TRY(model_live_move(be, tp, k, split + MC, C, 1));
            TRY(model_live_move(be, tp, v, split + 2 * MC, C, 1));
            TRY(model_live_pad(be, tp, k, s.zero, C));
            TRY(model_live_pad(be, tp, v, s.zero, C));
        }
        TRY(neox_site_btc(&r, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, q));
        TRY(neox_site_btc(&r, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, k));
        TRY(neox_site_btc(&r, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, v));
        TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, q));
        TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, k));
        TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, v));
        TRY(op->attn_probs(be, sl->probs, q, (size_t)T * C, k, (size_t)T * C, s.mask, B, T, T, H, D,
                           scale)); // (B, H, T, T)
        TRY(op->attn_apply(be, s.att, sl->probs, v, (size_t)T * C, B, T, T, H, D)); // (B, T, C)
        TRY(neox_site_btc(&r, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.att));
        if (live) TRY(model_live_move(be, tp, s.att, s.tmp, C, 0));
        TRY(op->matmul(be, s.attn, live ? s.tmp : s.att, L->dense_w, C, 1, L->dense_b, M, C, C));
        TRY(neox_site_btc(&r, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.attn));
        if (!c->parallel) { /* h = x + a, ln_2 reads h; parallel: ln_2 reads the block's input */
            TRY(op->residual_add(be, s.x, s.attn, MC));
            TRY(op->copy(be, sl->x_mid, s.x, MC * sizeof(float)));
        }
        TRY(op->layernorm(be, s.ln, s.x, L->ln_2_w, L->ln_2_b, M, C, c->ln_eps));
        TRY(neox_site_btc(&r, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        TRY(op->matmul(be, sl->fc_pre, s.ln, L->fc_w, C, 1, L->fc_b, M, C, I)); // (M, I)
        TRY(op->copy(be, s.fc, sl->fc_pre, (size_t)M * I * sizeof(float)));
        TRY(op->activation(be, s.fc, (size_t)M * I, c->act));
        TRY(neox_site_call(&r, CVENE_MLP_ACTIVATION, l, s.fc, 3, B, T, I, 0));
        TRY(op->matmul(be, s.mlp, s.fc, L->proj_w, I, 1, L->proj_b, M, I, C));
        TRY(neox_site_btc(&r, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.mlp));
        if (c->parallel) TRY(op->residual_add(be, s.mlp, s.attn, MC)); // x + (m + a), as transformers
        TRY(op->residual_add(be, s.x, s.mlp, MC));
        TRY(neox_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.x));
#undef TRY
    }
    /* the loss rows: their final residual, final_layer_norm, embed_out */
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++)
        st = op->copy(be, s.xr + (size_t)i * C, s.x + model_loss_row(tp, i) * C, sizeof(float) * (size_t)C);
    if (st == CVENE_OK) st = op->layernorm(be, s.lnf, s.xr, p->ln_f_w, p->ln_f_b, tp->n_rows, C, c->ln_eps);
    if (st == CVENE_OK) st = op->matmul(be, tp->logits, s.lnf, p->embed_out, C, 1, NULL, tp->n_rows, C, c->vocab_size);
    free(layers);
    return st == CVENE_SITE_STOPPED ? cvene_fail(m->ctx, CVENE_ERR_CALLBACK, "a site stopped a training pass") : st;
}

/* dx (M, K) = dy (M, N) @ W for a forward out = x @ W^T with W (N, K) an nn.Linear weight. */
static cvene_status gemm_dx(cvene_backend *be, float *dx, const float *dy, const void *w, int M, int K, int N) {
    return be->ops->matmul(be, dx, dy, w, K, 0, NULL, M, N, K);
}

/* A grad site on a (B, T, C) gradient and its per-head form (models/train_pass.c). */
static cvene_status grad_btc(cvene_model *m, const model_grad_sites *g, cvene_component c, cvene_component head_c,
                             int l, float *data, float *heads, int B, int T) {
    const neox_config *cfg = &((neox_model *)m->arch)->cfg;
    return model_grad_btc(m, g, c, head_c, l, data, heads, B, T, cfg->n_embd, cfg->n_head);
}

cvene_status neox_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                 const model_grad_sites *gs) {
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops_bwd *bw = op->bwd;
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    const neox_params *p = &((neox_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, C = c->n_embd, H = c->n_head, D = C / H, I = c->n_inner, BT = B * T;
    const int live = tp->live_start != NULL, M = model_live_rows(tp);
    const size_t BTC = (size_t)BT * C, MC = (size_t)M * C, F = sizeof(float);
    const float scale = (float)(1.0 / sqrt((double)D));
    if (live) CVENE_TRY(model_check_live(m, tp, NULL, gs, c->n_layer));
    saved_layer *layers = malloc(sizeof(saved_layer) * (size_t)(c->n_layer - tp->layer + 1));
    if (!layers) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    train_acts s;
    cvene_status st = setup(m, tp, &s, layers); /* the same carve as the forward: its saved buffers */
    const int32_t *rot_pos = live ? s.rpos : s.pos;
    const int rot_B = live ? 1 : B, rot_T = live ? M : T;
    /* the head: dlnf = dlogits @ embed_out (V, C); final_layer_norm; scattered into the residual's gradient */
    if (st == CVENE_OK) st = op->matmul(be, s.dlnf, dlogits, p->embed_out, C, 0, NULL, tp->n_rows, c->vocab_size, C);
    if (st == CVENE_OK) st = bw->layernorm(be, s.dxr, s.dlnf, s.xr, p->ln_f_w, tp->n_rows, C, c->ln_eps, 0);
    if (st == CVENE_OK) st = op->copy(be, s.g, s.zero, MC * F);
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++) /* rows may repeat: add, do not copy */
        st = op->residual_add(be, s.g + model_loss_row(tp, i) * C, s.dxr + (size_t)i * C, (size_t)C);
    for (int l = c->n_layer - 1; st == CVENE_OK && l >= tp->layer; l--) {
        const neox_layer *L = &p->layers[l];
        const saved_layer *sl = &layers[l - tp->layer];
        float *dq = s.dqkv, *dk = s.dqkv + BTC, *dv = s.dqkv + 2 * BTC;
        const float *k = live ? tp->kv + (size_t)(2 * (l - tp->layer)) * BTC : sl->qkv + BTC;
        const float *v = live ? tp->kv + (size_t)(2 * (l - tp->layer) + 1) * BTC : sl->qkv + 2 * BTC;
#define TRY(e) if ((st = (e)) != CVENE_OK) break
        TRY(grad_btc(m, gs, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.g, s.heads, B, T));
        /* the MLP's output gradient is the block output's in both layouts; a parallel block's
         * attention output gets it too, taken before the MLP's layernorm adds to g */
        TRY(op->copy(be, s.dmlp, s.g, MC * F));
        if (c->parallel) TRY(op->copy(be, s.dattn, s.g, MC * F));
        TRY(grad_btc(m, gs, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.dmlp, s.heads, B, T));
        TRY(gemm_dx(be, s.dfc, s.dmlp, L->proj_w, M, I, C)); // (M, I)
        if (model_grad_on(gs, CVENE_MLP_ACTIVATION, l)) {
            const int64_t shape[4] = {B, T, I, 0};
            TRY(model_grad_site(m, gs, CVENE_MLP_ACTIVATION, l, s.dfc, 3, shape));
        }
        TRY(bw->activation(be, s.dfc, s.dfc, sl->fc_pre, (size_t)M * I, c->act, 0));
        TRY(gemm_dx(be, s.dln, s.dfc, L->fc_w, M, C, I));
        TRY(grad_btc(m, gs, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.dln, s.heads, B, T));
        /* g += ln_2's input gradient: d x_in (parallel, completed below) or d h (sequential) */
        TRY(bw->layernorm(be, s.g, s.dln, c->parallel ? sl->x_in : sl->x_mid, L->ln_2_w, M, C, c->ln_eps, 1));
        if (!c->parallel) TRY(op->copy(be, s.dattn, s.g, MC * F)); /* h = x + a */
        TRY(grad_btc(m, gs, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.dattn, s.heads, B, T));
        if (live) { /* dAtt on the (B, T) layout: the live rows' and 0 */
            TRY(gemm_dx(be, s.dln, s.dattn, L->dense_w, M, C, C));
            TRY(op->copy(be, s.datt, s.zero, BTC * F));
            TRY(model_live_move(be, tp, s.datt, s.dln, C, 1));
        } else {
            TRY(gemm_dx(be, s.datt, s.dattn, L->dense_w, BT, C, C));
        }
        TRY(grad_btc(m, gs, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.datt, s.heads, B, T));
        TRY(bw->attention(be, dq, dk, dv, s.dp, s.datt, sl->qkv, k, v, sl->probs, B, T, H, D, scale));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, dv, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, dk, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, dq, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, dv, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, dk, s.heads, B, T));
        TRY(grad_btc(m, gs, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, dq, s.heads, B, T));
        if (live) { /* the live rows of dQ, dK, dV, packed (3, M, C) into dqkv (the rest: constants') */
            float *d3[3] = {dq, dk, dv};
            for (int j = 0; j < 3 && st == CVENE_OK; j++)
                st = model_live_move(be, tp, d3[j], s.tmp + (size_t)j * MC, C, 0);
            if (st == CVENE_OK) st = op->copy(be, s.dqkv, s.tmp, 3 * MC * F);
            if (st != CVENE_OK) break;
        }
        /* q and k were rotated after the split: turn their gradients back */
        TRY(bw->rotary(be, s.dqkv, C, rot_pos, rot_B, rot_T, H, D, c->rot_dims, c->rot_base));
        TRY(bw->rotary(be, s.dqkv + MC, C, rot_pos, rot_B, rot_T, H, D, c->rot_dims, c->rot_base));
        /* (3, M, C) -> (M, 3, H, D) -> (M, H, 3, D): the projection's output layout */
        TRY(op->permute_heads(be, s.tmp, s.dqkv, 1, M, 3, C, 0));
        TRY(op->permute_heads(be, s.dqkv, s.tmp, M, H, 3, D, 0));
        TRY(gemm_dx(be, s.dln, s.dqkv, L->qkv_w, M, C, 3 * C));
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
