/* pyvene's GRU training pass (models/model.h, "training passes"; the forward is models/gru.c):
 * the recurrence of layers [l0, L) over every timestep from a given input sequence (l0 = L: the
 * output head alone), keeping what the backward needs, and the backward through time from the
 * loss rows' logits down to that input, with the model frozen (activation gradients only: each
 * x2h / h2h GEMM's dX is the forward's GEMM with the weight transposed; no weight gradient).
 *
 * The pass's input tp->x (B, T, h) is layer l0's cell input at every step: the embeddings for
 * l0 = 0 (wte[ids], plus wpe[position_ids] where the caller's forward adds them), else layer
 * l0 - 1's outputs. A loss row b * T + t is the top layer's output at step t through the head:
 * an LM's logits at t, or a classifier's score at the step pyvene pools (sum(mask) - 1). The
 * pass's mask and position ids are not read (pyvene's GRU reads every token).
 *
 * Sites and grad sites are per timestep, (B, W) views as in the forward: the forward calls the
 * sites for t = 0..T-1, layers upward, in gru.c's order within a cell; the backward calls the
 * grad sites in exactly the reverse order (t = T-1..0, layers downward, a cell's last site
 * first). cell_input.l (l >= 1) IS the buffer of cell_output.(l-1), which layer l - 1 reads
 * again at t + 1 (pyvene's in-place semantics, models/gru.c): its grad site gets the gradient of
 * that buffer from every reader (layer l's x2h at t, layer l - 1's h2h and update at t + 1),
 * and what the callback leaves there is then cell_output.(l-1)'s gradient (the forward ran
 * cell_output.(l-1)'s site before cell_input.l's). A pass from l0 >= 1 therefore refuses sites
 * and grad sites at cell_input.l0 (they need layer l0 - 1's recurrence: start the pass there),
 * and any site below l0.
 *
 * Saved per step and layer: cvene_gru_saved (kernels/backend.h), each value as the later ops
 * read it after every site. A cell's element-wise backward is bwd.gru_cell: one call when no
 * gate grad site of the layer is on, else one per run of stages between the gate grad sites
 * (the same bits either way). */
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
#include "models/gru.h"

typedef struct {
    float *saved;   // (T, L - l0, 8, B, h): cvene_gru_saved per step and pass layer
    float *xT;      // (T, B, h) the pass's input, time-major: step t is a contiguous (B, h)
    float *outT;    // (T, B, h) the top layer's output at each step
    float *h;       // (L - l0, B, h) hidden states, updated in place (the buffers the sites see)
    float *xg, *hg; // (B, 3h) x2h / h2h outputs; backward: their gradients
    float *xs, *hs; // (3, B, h) the same gate-major; backward: their gradients
    float *xr;      // (N, h) the loss rows' top-layer outputs
    float *g;       // (L - l0, B, h) backward: the gradient of each hidden-state buffer
    float *d;       // (3, B, h) backward: the gate gradients [d_r | d_z | d_n]
    float *dx;      // (B, h) backward: a GEMM's input gradient
    float *dxr;     // (N, h) backward: the loss rows' output gradients
    float *dout;    // (T, B, h) backward: the head's gradient at each step
} train_acts;

static void carve(cvene_arena *a, train_acts *s, int n_layers, int B, int T, int h, int N) {
    const size_t Bh = (size_t)B * h, TBh = (size_t)T * Bh, F = sizeof(float);
    s->saved = cvene_arena_take(a, TBh * (size_t)n_layers * CVENE_GRU_N_SAVED * F);
    s->xT = cvene_arena_take(a, TBh * F);
    s->outT = cvene_arena_take(a, TBh * F);
    s->h = cvene_arena_take(a, (size_t)n_layers * Bh * F);
    s->xg = cvene_arena_take(a, 3 * Bh * F);
    s->hg = cvene_arena_take(a, 3 * Bh * F);
    s->xs = cvene_arena_take(a, 3 * Bh * F);
    s->hs = cvene_arena_take(a, 3 * Bh * F);
    s->xr = cvene_arena_take(a, (size_t)N * h * F);
    s->g = cvene_arena_take(a, (size_t)n_layers * Bh * F);
    s->d = cvene_arena_take(a, 3 * Bh * F);
    s->dx = cvene_arena_take(a, Bh * F);
    s->dxr = cvene_arena_take(a, (size_t)N * h * F);
    s->dout = cvene_arena_take(a, TBh * F);
}

/* The arena of a pass (sized, grown, carved): the backward carves what its forward carved. */
static cvene_status setup(cvene_model *m, const model_train_pass *tp, train_acts *s) {
    const gru_config *c = &((gru_model *)m->arch)->cfg;
    const int n_layers = c->n_layer - tp->layer;
    cvene_arena a = {NULL, 0, 0};
    carve(&a, s, n_layers, tp->B, tp->T, c->h_dim, tp->n_rows);
    CVENE_TRY(model_reserve_training(m, a.used));
    a = (cvene_arena){m->train_mem, 0, m->train_cap};
    carve(&a, s, n_layers, tp->B, tp->T, c->h_dim, tp->n_rows);
    return CVENE_OK;
}

static cvene_status check_pass(cvene_model *m, const model_train_pass *tp) {
    const gru_model *g = m->arch;
    const gru_config *c = &g->cfg;
    cvene_ctx *ctx = m->ctx;
    if (tp->live_start)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "training pass: the GRU computes every row (no live rows)");
    if (g->p.gemm_dtype != CVENE_F32)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "training runs the GRU in f32 only (this context computes in %s)",
                          cvene_dtype_name(g->p.gemm_dtype));
    if (!ctx->be->ops->bwd || !ctx->be->ops->bwd->gru_cell)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no GRU backward op (bwd.gru_cell)",
                          ctx->be->ops->name);
    if (tp->layer < 0 || tp->layer > c->n_layer || tp->B <= 0 || tp->T <= 0 || (int64_t)tp->B * tp->T > (1 << 30) ||
        tp->n_rows <= 0 || !tp->rows || !tp->x || !tp->logits)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: layer %d, B %d, T %d, %d loss rows out of range",
                          tp->layer, tp->B, tp->T, tp->n_rows);
    for (int i = 0; i < tp->n_rows; i++)
        if (tp->rows[i] < 0 || tp->rows[i] >= tp->B * tp->T)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "training pass: loss row %d = %d is outside [0, %d)", i,
                              tp->rows[i], tp->B * tp->T);
    return CVENE_OK;
}

/* The sites (what: "sites" or "grad sites") a pass from tp->layer can serve (header comment). */
static cvene_status check_sites(cvene_model *m, const model_train_pass *tp, const uint64_t *sites, const char *what) {
    const int L = ((gru_model *)m->arch)->cfg.n_layer, l0 = tp->layer;
    const uint64_t below = l0 >= 64 ? ~0ull : (1ull << l0) - 1;
    for (int comp = 0; comp < CVENE_N_COMPONENTS; comp++) {
        const uint64_t on = sites[comp];
        const char *name = cvene_component_name((cvene_component)comp);
        if (!on) continue;
        if (!cvene_component_is_gru((cvene_component)comp))
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "training pass: %s[%s]: a GRU has no such stream", what,
                              name);
        if (L < 64 && (on >> L))
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "training pass: %s[%s] asks for a layer >= n_layer = %d",
                              what, name, L);
        if (on & below)
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG,
                              "training pass: %s[%s] asks for a layer below the pass's first layer %d", what, name, l0);
        if (comp == CVENE_CELL_INPUT && l0 >= 1 && l0 < L && ((on >> l0) & 1u))
            return cvene_fail(m->ctx, CVENE_ERR_UNSUPPORTED,
                              "training pass: %s[cell_input] at layer %d: cell_input.%d is cell_output.%d, which layer "
                              "%d's recurrence reads at the next step; start the pass at layer %d", what, l0, l0,
                              l0 - 1, l0 - 1, l0 - 1);
    }
    return CVENE_OK;
}

/* S[k] of a step's saved block <- src (B, h) */
static cvene_status save(cvene_backend *be, float *S, cvene_gru_saved k, const float *src, size_t Bh) {
    return be->ops->copy(be, S + (size_t)k * Bh, src, Bh * sizeof(float));
}

cvene_status gru_train_forward(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o) {
    CVENE_TRY(check_pass(m, tp));
    if (o && o->site_fn) CVENE_TRY(check_sites(m, tp, o->sites, "sites"));
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const gru_config *c = &((gru_model *)m->arch)->cfg;
    const gru_params *p = &((gru_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, h = c->h_dim, L = c->n_layer, l0 = tp->layer, nl = L - l0;
    const size_t Bh = (size_t)B * h, F = sizeof(float);
    train_acts s;
    CVENE_TRY(setup(m, tp, &s));
    float *zeros = calloc(nl > 0 ? (size_t)nl * Bh : 1, F);
    if (!zeros) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = op->to_device(be, s.h, zeros, (size_t)nl * Bh * F); /* h_{-1} = 0 */
    free(zeros);
    if (st == CVENE_OK) st = op->permute_heads(be, s.xT, tp->x, 1, B, T, h, 1); // (B, T, h) -> (T, B, h)
    if (st == CVENE_OK && nl == 0) st = op->copy(be, s.outT, s.xT, (size_t)T * Bh * F);
    gru_site_run r = {m, o, B};
    float *xr = s.xs, *xz = s.xs + Bh, *xn = s.xs + 2 * Bh;
    const float *hr = s.hs, *hz = s.hs + Bh, *hn = s.hs + 2 * Bh;
    for (int t = 0; st == CVENE_OK && t < T; t++) {
        for (int l = l0; st == CVENE_OK && l < L; l++) {
            const gru_layer *P = &p->layers[l];
            float *x = l == l0 ? s.xT + (size_t)t * Bh : s.h + (size_t)(l - 1 - l0) * Bh; // (B, h)
            float *hl = s.h + (size_t)(l - l0) * Bh;                                       // (B, h) h^l_{t-1}
            float *S = s.saved + ((size_t)t * nl + (l - l0)) * CVENE_GRU_N_SAVED * Bh;     // (8, B, h)
#define TRY(e) if ((st = (e)) != CVENE_OK) break
            TRY(gru_site_step(&r, CVENE_CELL_INPUT, l, x, h));
            TRY(save(be, S, CVENE_GRU_SAVED_H, hl, Bh)); /* no site of this step writes hl before the update */
            TRY(gru_gate_proj(&r, s.xg, s.xs, x, P->x2h_w, P->x2h_b, l, CVENE_X2H_OUTPUT, CVENE_RESET_X2H_OUTPUT));
            TRY(gru_gate_proj(&r, s.hg, s.hs, hl, P->h2h_w, P->h2h_b, l, CVENE_H2H_OUTPUT, CVENE_RESET_H2H_OUTPUT));
            TRY(save(be, S, CVENE_GRU_SAVED_HN, hn, Bh));
            TRY(op->residual_add(be, xr, hr, Bh)); // a_r = x_r + h_r
            TRY(gru_site_step(&r, CVENE_RESET_GATE_INPUT, l, xr, h));
            TRY(save(be, S, CVENE_GRU_SAVED_AR, xr, Bh));
            TRY(op->activation(be, xr, Bh, CVENE_ACT_SIGMOID)); // r
            TRY(gru_site_step(&r, CVENE_RESET_GATE_OUTPUT, l, xr, h));
            TRY(save(be, S, CVENE_GRU_SAVED_R, xr, Bh));
            TRY(op->residual_add(be, xz, hz, Bh)); // a_z = x_z + h_z
            TRY(gru_site_step(&r, CVENE_UPDATE_GATE_INPUT, l, xz, h));
            TRY(save(be, S, CVENE_GRU_SAVED_AZ, xz, Bh));
            TRY(op->activation(be, xz, Bh, CVENE_ACT_SIGMOID)); // z
            TRY(gru_site_step(&r, CVENE_UPDATE_GATE_OUTPUT, l, xz, h));
            TRY(save(be, S, CVENE_GRU_SAVED_Z, xz, Bh));
            TRY(op->gru_pointwise(be, xn, xn, xr, hn, Bh, CVENE_GRU_NEW_GATE_IN)); // a_n = x_n + r * h_n
            TRY(gru_site_step(&r, CVENE_NEW_GATE_INPUT, l, xn, h));
            TRY(save(be, S, CVENE_GRU_SAVED_AN, xn, Bh));
            TRY(op->activation(be, xn, Bh, CVENE_ACT_TANH)); // n
            TRY(gru_site_step(&r, CVENE_NEW_GATE_OUTPUT, l, xn, h));
            TRY(save(be, S, CVENE_GRU_SAVED_N, xn, Bh));
            TRY(op->gru_pointwise(be, hl, xz, hl, xn, Bh, CVENE_GRU_HIDDEN)); // z * h + (1 - z) * n
            TRY(gru_site_step(&r, CVENE_CELL_OUTPUT, l, hl, h));
#undef TRY
        }
        if (st == CVENE_OK && nl > 0) /* the top layer's output at t, as pyvene appends it */
            st = op->copy(be, s.outT + (size_t)t * Bh, s.h + (size_t)(nl - 1) * Bh, Bh * F);
    }
    /* the loss rows: their top-layer outputs, the head */
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++) {
        const int b = tp->rows[i] / T, t = tp->rows[i] % T;
        st = op->copy(be, s.xr + (size_t)i * h, s.outT + ((size_t)t * B + b) * h, (size_t)h * F);
    }
    if (st == CVENE_OK)
        st = op->matmul_lp(be, tp->logits, s.xr, p->head, p->gemm_dtype, h, 1, NULL, tp->n_rows, h, c->n_out);
    return st == CVENE_SITE_STOPPED ? cvene_fail(m->ctx, CVENE_ERR_CALLBACK, "a site stopped a training pass") : st;
}

/* One timestep of a grad site (c, l): a (B, W) view of data. */
static cvene_status grad_step(cvene_model *m, const model_grad_sites *gs, cvene_component c, int l, float *data,
                              int B, int W) {
    const int64_t shape[2] = {B, W};
    return model_grad_site(m, gs, c, l, data, 2, shape);
}

/* The element-wise backward of cell (t, l): g (B, h) holds the gradient of its output hy and
 * gets the direct path dh ⊙ z to h_{t-1}; dx3 / dh3 (3, B, h) get the gradients of x2h's and
 * h2h's outputs. The gate grad sites sit between the stages, in the reverse of the forward's
 * order; the stages between two sites that are on run as one call. */
static cvene_status cell_backward(cvene_model *m, const model_grad_sites *gs, int l, float *g, const float *S,
                                  float *d, float *dx3, float *dh3, int B) {
    static const struct {
        unsigned stage;
        cvene_component site; /* the grad site after the stage (CVENE_N_COMPONENTS: none) */
        int third;            /* of d: the gate gradient that site sees */
    } chain[] = {
        {CVENE_GRU_BWD_HIDDEN, CVENE_NEW_GATE_OUTPUT, 2},     {CVENE_GRU_BWD_NEW_ACT, CVENE_NEW_GATE_INPUT, 2},
        {CVENE_GRU_BWD_NEW_IN, CVENE_UPDATE_GATE_OUTPUT, 1},  {CVENE_GRU_BWD_UPDATE_ACT, CVENE_UPDATE_GATE_INPUT, 1},
        {CVENE_GRU_BWD_UPDATE_IN, CVENE_RESET_GATE_OUTPUT, 0}, {CVENE_GRU_BWD_RESET_ACT, CVENE_RESET_GATE_INPUT, 0},
        {CVENE_GRU_BWD_RESET_IN, CVENE_N_COMPONENTS, 0},
    };
    cvene_backend *be = m->ctx->be;
    const int h = ((gru_model *)m->arch)->cfg.h_dim;
    const size_t Bh = (size_t)B * h;
    unsigned pending = 0;
    for (size_t k = 0; k < sizeof chain / sizeof *chain; k++) {
        pending |= chain[k].stage;
        if (chain[k].site == CVENE_N_COMPONENTS || !model_grad_on(gs, chain[k].site, l)) continue;
        CVENE_TRY(be->ops->bwd->gru_cell(be, dx3, dh3, d, g, g, S, Bh, pending));
        pending = 0;
        CVENE_TRY(grad_step(m, gs, chain[k].site, l, d + (size_t)chain[k].third * Bh, B, h));
    }
    return pending ? be->ops->bwd->gru_cell(be, dx3, dh3, d, g, g, S, Bh, pending) : CVENE_OK;
}

/* A GEMM output's gradient: the thirds' grad sites on three (3, B, h) (new, update, reset: the
 * reverse of the forward), whole (B, 3h) <- three interleaved, the whole's grad site, then
 * dx (B, h) = whole @ W for the forward's whole = x @ W^T + b with W (3h, h). */
static cvene_status gemm_backward(cvene_model *m, const model_grad_sites *gs, int l, float *three, float *whole,
                                  const void *w, cvene_component whole_c, cvene_component first, float *dx, int B) {
    cvene_backend *be = m->ctx->be;
    const int h = ((gru_model *)m->arch)->cfg.h_dim;
    const size_t Bh = (size_t)B * h;
    for (int k = 2; k >= 0; k--) CVENE_TRY(grad_step(m, gs, (cvene_component)(first + k), l, three + k * Bh, B, h));
    CVENE_TRY(be->ops->permute_heads(be, whole, three, 1, B, 3, h, 0)); // (3, B, h) -> (B, 3, h)
    CVENE_TRY(grad_step(m, gs, whole_c, l, whole, B, 3 * h));
    return be->ops->matmul(be, dx, whole, (const float *)w, h, 0, NULL, B, 3 * h, h); // (B, h)
}

cvene_status gru_train_backward(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                const model_grad_sites *gs) {
    CVENE_TRY(check_pass(m, tp));
    if (gs && gs->fn) CVENE_TRY(check_sites(m, tp, gs->sites, "grad sites"));
    if (!dlogits) return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "training pass: dlogits is NULL");
    cvene_backend *be = m->ctx->be;
    const cvene_ops *op = be->ops;
    const gru_config *c = &((gru_model *)m->arch)->cfg;
    const gru_params *p = &((gru_model *)m->arch)->p;
    const int B = tp->B, T = tp->T, h = c->h_dim, L = c->n_layer, l0 = tp->layer, nl = L - l0;
    const size_t Bh = (size_t)B * h, F = sizeof(float);
    train_acts s;
    CVENE_TRY(setup(m, tp, &s)); /* the same carve as the forward: its saved buffers */
    const size_t nz = (size_t)T * Bh > (size_t)nl * Bh ? (size_t)T * Bh : (size_t)nl * Bh;
    float *zeros = calloc(nz, F);
    if (!zeros) return cvene_fail(m->ctx, CVENE_ERR_OOM, "out of memory");
    /* the head: dxr (N, h) = dlogits (N, V) @ head (V, h), scattered into each step's gradient */
    cvene_status st = op->matmul(be, s.dxr, dlogits, (const float *)p->head, h, 0, NULL, tp->n_rows, c->n_out, h);
    if (st == CVENE_OK) st = op->to_device(be, s.dout, zeros, (size_t)T * Bh * F);
    if (st == CVENE_OK) st = op->to_device(be, s.g, zeros, (size_t)nl * Bh * F);
    free(zeros);
    for (int i = 0; st == CVENE_OK && i < tp->n_rows; i++) { /* rows may repeat: add, do not copy */
        const int b = tp->rows[i] / T, t = tp->rows[i] % T;
        st = op->residual_add(be, s.dout + ((size_t)t * B + b) * h, s.dxr + (size_t)i * h, (size_t)h);
    }
    for (int t = T - 1; st == CVENE_OK && nl > 0 && t >= 0; t--) {
        /* the head read the top layer's buffer after step t */
        st = op->residual_add(be, s.g + (size_t)(nl - 1) * Bh, s.dout + (size_t)t * Bh, Bh);
        for (int l = L - 1; st == CVENE_OK && l >= l0; l--) {
            const gru_layer *P = &p->layers[l];
            float *g = s.g + (size_t)(l - l0) * Bh; // (B, h) d h^l_t, from every reader after step (t, l)
            const float *S = s.saved + ((size_t)t * nl + (l - l0)) * CVENE_GRU_N_SAVED * Bh;
#define TRY(e) if ((st = (e)) != CVENE_OK) break
            TRY(grad_step(m, gs, CVENE_CELL_OUTPUT, l, g, B, h));
            TRY(cell_backward(m, gs, l, g, S, s.d, s.xs, s.hs, B)); /* g: d h^l_{t-1} through z */
            TRY(gemm_backward(m, gs, l, s.hs, s.hg, P->h2h_w, CVENE_H2H_OUTPUT, CVENE_RESET_H2H_OUTPUT, s.dx, B));
            TRY(op->residual_add(be, g, s.dx, Bh)); /* g: d h^l_{t-1}, whole for step (t, l) */
            TRY(gemm_backward(m, gs, l, s.xs, s.xg, P->x2h_w, CVENE_X2H_OUTPUT, CVENE_RESET_X2H_OUTPUT, s.dx, B));
            if (l > l0) { /* the cell input is layer l - 1's buffer h^{l-1}_t: its total gradient */
                float *gb = s.g + (size_t)(l - 1 - l0) * Bh;
                TRY(op->residual_add(be, gb, s.dx, Bh));
                TRY(grad_step(m, gs, CVENE_CELL_INPUT, l, gb, B, h));
            } else { /* the pass's input at t (its grad site is on only for l0 = 0: check_sites) */
                TRY(grad_step(m, gs, CVENE_CELL_INPUT, l, s.dx, B, h));
            }
#undef TRY
        }
    }
    if (st == CVENE_OK) st = op->sync(be);
    return st;
}
