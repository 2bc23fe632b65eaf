/* Native GPT-2: checkpoint loading and the forward pass, written once against
 * the backend op table. Every stream pyvene can hook on GPT-2 is published at a
 * site (see cvene.h for the components and their shapes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
#include "models/hf_config.h"
#include "models/model.h"
#include "models/weights.h"
#include "models/gpt2.h"

/* ---- config ------------------------------------------------------------ */

static cvene_status parse_config(cvene_ctx *ctx, const char *dir, const cJSON *j, gpt2_config *c) {
    const int BIG = 1 << 24;
    CVENE_TRY(hf_config_int(ctx, j, dir, "vocab_size", 1, BIG, &c->vocab_size));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_positions", 1, BIG, &c->n_positions));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_embd", 1, 1 << 16, &c->n_embd));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_layer", 1, 64, &c->n_layer));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_head", 1, 1 << 12, &c->n_head));
    if (c->n_embd % c->n_head != 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s/config.json: n_embd = %d is not divisible by n_head = %d", dir,
                          c->n_embd, c->n_head);
    CVENE_TRY(hf_config_int_opt(ctx, j, dir, "n_inner", 1, 1 << 20, 4 * c->n_embd, &c->n_inner));
    double eps;
    CVENE_TRY(hf_config_float_opt(ctx, j, dir, "layer_norm_epsilon", 1e-5, &eps));
    if (!(eps > 0.0 && eps < 3.0e38))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: layer_norm_epsilon = %g must be in (0, 3e38) (a "
                          "float32; 1e-5 is the usual value)", dir, eps);
    c->ln_eps = (float)eps;
    const char *act;
    CVENE_TRY(hf_config_str_opt(ctx, j, dir, "activation_function", "gelu_new", &act));
    if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_fast"))
        c->act = CVENE_GELU_TANH;
    else if (!strcmp(act, "gelu"))
        c->act = CVENE_GELU_ERF;
    else if (!strcmp(act, "relu"))
        c->act = CVENE_ACT_RELU;
    else
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s/config.json: activation_function \"%s\" is not supported (gelu_new, "
                          "gelu_pytorch_tanh, gelu_fast, gelu, relu)",
                          dir, act);
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "scale_attn_weights", 1, &c->scale_attn_weights));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "scale_attn_by_inverse_layer_idx", 0,
                                 &c->scale_by_inverse_layer_idx));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "tie_word_embeddings", 1, &c->tied));
    return CVENE_OK;
}

/* ---- weights ----------------------------------------------------------- */

static int build_specs(const gpt2_config *c, gpt2_params *p, weight_spec *s) {
    int64_t C = c->n_embd, I = c->n_inner, V = c->vocab_size, P = c->n_positions;
    int n = 0;
    n = add_spec(s, n, &p->wte, V, C, "wte.weight", 0);
    n = add_spec(s, n, &p->wpe, P, C, "wpe.weight", 0);
    for (int l = 0; l < c->n_layer; l++) {
        gpt2_layer *L = &p->layers[l];
        n = add_spec(s, n, &L->ln_1_w, C, 0, "h.%d.ln_1.weight", l);
        n = add_spec(s, n, &L->ln_1_b, C, 0, "h.%d.ln_1.bias", l);
        n = add_gemm_spec(s, n, &L->c_attn_w, C, 3 * C, "h.%d.attn.c_attn.weight", l);
        n = add_spec(s, n, &L->c_attn_b, 3 * C, 0, "h.%d.attn.c_attn.bias", l);
        n = add_gemm_spec(s, n, &L->attn_proj_w, C, C, "h.%d.attn.c_proj.weight", l);
        n = add_spec(s, n, &L->attn_proj_b, C, 0, "h.%d.attn.c_proj.bias", l);
        n = add_spec(s, n, &L->ln_2_w, C, 0, "h.%d.ln_2.weight", l);
        n = add_spec(s, n, &L->ln_2_b, C, 0, "h.%d.ln_2.bias", l);
        n = add_gemm_spec(s, n, &L->c_fc_w, C, I, "h.%d.mlp.c_fc.weight", l);
        n = add_spec(s, n, &L->c_fc_b, I, 0, "h.%d.mlp.c_fc.bias", l);
        n = add_gemm_spec(s, n, &L->mlp_proj_w, I, C, "h.%d.mlp.c_proj.weight", l);
        n = add_spec(s, n, &L->mlp_proj_b, C, 0, "h.%d.mlp.c_proj.bias", l);
    }
    n = add_spec(s, n, &p->ln_f_w, C, 0, "ln_f.weight", 0);
    n = add_spec(s, n, &p->ln_f_b, C, 0, "ln_f.bias", 0);
    if (!c->tied) n = add_gemm_spec(s, n, &p->lm_head, V, C, "lm_head.weight", 0), s[n - 1].no_prefix = 1;
    return n;
}


static void gpt2_free(cvene_model *m) {
    gpt2_model *g = m->arch;
    if (g) free(g->p.layers);
    free(g);
    m->arch = NULL;
}

static cvene_status gpt2_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
static cvene_status gpt2_forward_from(cvene_model *m, const cvene_resume *rs, int B, int T,
                                      const cvene_run_opts *o);
static cvene_status gpt2_decode(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o);
static const float *gpt2_token_embeddings(cvene_model *m, int *V, int *C) {
    gpt2_model *g = m->arch;
    *V = g->cfg.vocab_size;
    *C = g->cfg.n_embd;
    return g->p.wte;
}
static const cvene_model_vtable gpt2_vtable = {"gpt2", gpt2_forward, gpt2_free, gpt2_forward_from,
                                               gpt2_token_embeddings, gpt2_train_forward, gpt2_train_backward,
                                               gpt2_decode};

cvene_status gpt2_load(cvene_model *m, const char *dir, const cJSON *cfg) {
    cvene_ctx *ctx = m->ctx;
    gpt2_model *g = calloc(1, sizeof *g);
    if (!g) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    m->arch = g;
    m->vt = &gpt2_vtable;
    gpt2_config *c = &g->cfg;
    cvene_status pst = parse_config(ctx, dir, cfg, c);
    if (pst != CVENE_OK) {
        gpt2_free(m);
        return pst;
    }
    st_archive ar;
    pst = st_archive_open_dir(ctx, &ar, dir);
    if (pst != CVENE_OK) {
        gpt2_free(m);
        return pst;
    }
    int max_specs = 6 + 12 * c->n_layer;
    g->p.gemm_dtype = ctx->params.compute_dtype;
    weight_spec *specs = malloc(sizeof(weight_spec) * (size_t)max_specs);
    g->p.layers = calloc((size_t)c->n_layer, sizeof(gpt2_layer));
    cvene_status st = CVENE_OK;
    if (!specs || !g->p.layers) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory loading %s", dir);
    int n = st == CVENE_OK ? build_specs(c, &g->p, specs) : 0;
    /* tied head in reduced precision: a 16-bit copy of wte for the output GEMM (the
     * embedding lookup keeps reading the f32 wte); not counted as extra parameters */
    const int n_counted = n;
    if (st == CVENE_OK && c->tied && g->p.gemm_dtype != CVENE_F32)
        n = add_gemm_spec(specs, n, &g->p.lm_head, c->vocab_size, c->n_embd, "wte.weight", 0);
    if (st == CVENE_OK) st = weights_resolve(ctx, dir, &ar, specs, n, "transformer.");
    if (st == CVENE_OK) st = weights_upload(m, specs, n);
    if (st == CVENE_OK && c->tied && g->p.gemm_dtype == CVENE_F32) g->p.lm_head = g->p.wte;
    int64_t params = st == CVENE_OK ? weights_count(specs, n_counted) : 0;
    free(specs);
    st_archive_close(&ar);
    if (st != CVENE_OK) {
        gpt2_free(m);
        return st;  /* the caller frees param_mem */
    }
    m->info = (cvene_model_info){CVENE_ARCH_GPT2, c->n_layer, c->n_head, c->n_embd, c->n_inner,
                                 c->vocab_size, c->n_positions, params, c->vocab_size};
    return CVENE_OK;
}

/* ---- forward ----------------------------------------------------------- */

int gpt2_site_on(const gpt2_site_run *r, cvene_component c, int l) {
    return r->o && r->o->site_fn && ((r->o->sites[c] >> l) & 1u);
}

cvene_status gpt2_site_call(const gpt2_site_run *r, cvene_component c, int l, void *data, int ndim,
                              int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    if (!gpt2_site_on(r, c, l)) return CVENE_OK;
    int64_t shape[4] = {d0, d1, d2, d3};
    return model_site(r->m, r->o, r->adt, r->stage, c, l, data, ndim, shape);
}

/* (B, T, C) site and, if asked, its per-head (B, H, T, D) form. */
cvene_status gpt2_site_btc(const gpt2_site_run *r, cvene_component c, cvene_component head_c, int l,
                             void *data) {
    const gpt2_config *g = &((gpt2_model *)r->m->arch)->cfg;
    int B = r->B, T = r->T, C = g->n_embd, H = g->n_head, D = C / H;
    if (c != CVENE_N_COMPONENTS) CVENE_TRY(gpt2_site_call(r, c, l, data, 3, B, T, C, 0));
    if (head_c == CVENE_N_COMPONENTS || !gpt2_site_on(r, head_c, l)) return CVENE_OK;
    cvene_backend *be = r->m->ctx->be;
    CVENE_TRY(be->ops->ops16->permute_heads(be, r->adt, r->heads, data, B, T, H, D, 1));
    CVENE_TRY(gpt2_site_call(r, head_c, l, r->heads, 4, B, H, T, D));
    return be->ops->ops16->permute_heads(be, r->adt, data, r->heads, B, T, H, D, 0);
}


/* Element off of a GEMM weight w held in dtype dt (column slices of c_attn). */
const void *gpt2_wat(const void *w, cvene_dtype dt, size_t off) {
    return (const char *)w + off * cvene_dtype_size(dt);
}

/* Activations are held in the forward's storage dtype adt (f32, or 16-bit with
 * cvene_ctx_params.activation_dtype), hence void pointers; logits and the site stage are f32. */
typedef struct {
    void *x;       // (B, T, C) residual stream
    void *ln;      // (B, T, C) layernorm output
    void *q, *k, *v; // (B, T, C)
    void *kf, *vf;   // (B, Tk, C) cached prefix + new keys/values when resuming
    void *probs;   // (B, H, T, Tk)
    void *att;     // (B, T, C) merged heads
    void *out;     // (B, T, C) attention / mlp output
    void *fc;      // (B, T, I)
    void *heads;   // (B, H, T, D) scratch for per-head sites
    float *logits; // (B, T, V) device logits when not writing straight to the host
    float *stage;  // 16-bit adt: the f32 copy a site sees (the largest site tensor; the head's input)
    void *wsel;    // (n_vocab, C) lm_head rows of the columns a resumed forward asked for
    int32_t *ids, *pos, *mask; // (B, T) device copies of the inputs
} gpt2_acts;

/* Tq: positions computed; Tk: positions attended (Tk > Tq when resuming after a cached
 * prefix, then kf/vf hold the full keys/values, unless join is 0: a decoding call's cache). */
static void carve(cvene_arena *a, gpt2_acts *s, const gpt2_config *c, cvene_dtype adt, int B, int Tq, int Tk,
                  int join, int dev_inputs, int logit_rows, int logit_cols) {
    size_t BT = (size_t)B * Tq, C = (size_t)c->n_embd, F = sizeof(float), E = cvene_dtype_size(adt);
    const size_t probs = BT * (size_t)c->n_head * (size_t)Tk, fc = BT * (size_t)c->n_inner;
    s->x = cvene_arena_take(a, BT * C * E);
    s->ln = cvene_arena_take(a, BT * C * E);
    s->q = cvene_arena_take(a, BT * C * E);
    s->k = cvene_arena_take(a, BT * C * E);
    s->v = cvene_arena_take(a, BT * C * E);
    s->kf = Tk > Tq && join ? cvene_arena_take(a, (size_t)B * Tk * C * E) : NULL;
    s->vf = Tk > Tq && join ? cvene_arena_take(a, (size_t)B * Tk * C * E) : NULL;
    s->probs = cvene_arena_take(a, probs * E);
    s->att = cvene_arena_take(a, BT * C * E);
    s->out = cvene_arena_take(a, BT * C * E);
    s->fc = cvene_arena_take(a, fc * E);
    s->heads = cvene_arena_take(a, BT * C * E);
    s->logits = logit_rows ? cvene_arena_take(a, (size_t)logit_rows * (size_t)logit_cols * F) : NULL;
    size_t st = BT * C > fc ? BT * C : fc;
    if (probs > st) st = probs;
    s->stage = adt != CVENE_F32 ? cvene_arena_take(a, st * F) : NULL;
    /* lm_head rows of the wanted vocabulary columns (resumed forwards with rs->n_vocab) */
    s->wsel = logit_cols < c->vocab_size ? cvene_arena_take(a, (size_t)logit_cols * C * F) : NULL;
    s->ids = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->pos = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->mask = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
}

static cvene_status check_inputs(cvene_model *m, const int32_t *ids, int B, int T,
                                 const cvene_run_opts *o) {
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    cvene_ctx *ctx = m->ctx;
    if (!ids) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "input_ids is NULL");
    if (B <= 0 || T <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "batch size %d and sequence length %d must be > 0", B, T);
    if (T > c->n_positions)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "sequence length %d exceeds the model's n_positions = %d", T, c->n_positions);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (ids[i] < 0 || ids[i] >= c->vocab_size)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)", b, t,
                                  ids[i], c->vocab_size);
            if (o && o->position_ids && (o->position_ids[i] < 0 || o->position_ids[i] >= c->n_positions))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "position_ids[%d][%d] = %d is outside [0, %d)", b, t,
                                  o->position_ids[i], c->n_positions);
            if (o && o->attention_mask && o->attention_mask[i] != 0 && o->attention_mask[i] != 1)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "attention_mask[%d][%d] = %d must be 0 or 1", b, t, o->attention_mask[i]);
        }
    if (o) {
        for (int comp = 0; comp < CVENE_N_COMPONENTS; comp++)
            if (c->n_layer < 64 && (o->sites[comp] >> c->n_layer))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "sites[%s] asks for a layer >= n_layer = %d",
                                  cvene_component_name((cvene_component)comp), c->n_layer);
    }
    return CVENE_OK;
}

static cvene_status gpt2_forward_impl(cvene_model *m, const int32_t *ids, int B, int T,
                                      const cvene_run_opts *o, const cvene_resume *rs, const model_decode *dc);

static cvene_status gpt2_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    cvene_status st = gpt2_forward_impl(m, ids, B, T, o, NULL, NULL);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

static cvene_status gpt2_forward_from(cvene_model *m, const cvene_resume *rs, int B, int T,
                                      const cvene_run_opts *o) {
    CVENE_TRY(resume_check(m, rs, B, T, o));
    cvene_status st = gpt2_forward_impl(m, NULL, B, T, o, rs, NULL);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

static cvene_status gpt2_decode(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o) {
    CVENE_TRY(decode_check(m, dc, B, T, o));
    cvene_status st = gpt2_forward_impl(m, NULL, B, T, o, NULL, dc);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

/* A full forward (rs and dc NULL), one resumed at layer rs->layer for positions
 * [rs->past, T), attending to cached keys/values for the earlier positions, or a decoding
 * call (dc: T new positions after dc->past cached ones, inputs and logits on the device). */
static cvene_status gpt2_forward_impl(cvene_model *m, const int32_t *ids, int B, int T,
                                      const cvene_run_opts *o, const cvene_resume *rs, const model_decode *dc) {
    if (!rs && !dc) CVENE_TRY(check_inputs(m, ids, B, T, o));
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_ops *op = be->ops;
    const cvene_ops16 *o16 = op->ops16; /* every op in the activation storage adt (F32: the f32 op) */
    const gpt2_config *c = &((gpt2_model *)m->arch)->cfg;
    const gpt2_params *p = &((gpt2_model *)m->arch)->p;
    const cvene_dtype wdt = p->gemm_dtype; /* f32: matmul_lp is exactly matmul */
    const cvene_dtype adt = ctx->params.activation_dtype;
    const size_t E = cvene_dtype_size(adt);
    const int C = c->n_embd, H = c->n_head, D = C / H, I = c->n_inner, V = c->vocab_size;
    const int past = rs ? rs->past : dc ? dc->past : 0, Tk = dc ? past + T : T;
    int keep = 1; /* logits for each row's last `keep` positions only (0: every position; decoding: 1) */
    if (!dc) CVENE_TRY(model_logits_to_keep(m, o, rs, Tk - past, &keep));
    T = Tk - past; /* positions computed from here on */
    const int BT = B * T;
    const int on_host = be->device == CVENE_DEVICE_CPU;
    float *logits_out = dc ? dc->logits : o ? o->logits : NULL;
    const int out_dev = dc || (o && o->logits_on_device); /* logits_out is device memory: written in place */
    const int row0 = o && !(rs && keep) && !dc ? o->logits_row0 : 0; /* a sweep's rows: all */
    if (row0 < 0 || row0 >= B)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "logits_row0 = %d is outside [0, %d)", row0, B);
    const int TL = keep ? keep : T; /* logits positions per row */
    const int logit_rows = (B - row0) * TL;
    int NV;
    const int32_t *cols = model_logits_vocab(o, rs, &NV); /* the logits columns (NULL: all V) */
    if (!cols) NV = V;

    /* size the arena, grow it if this (B, T) needs more, then carve */
    cvene_arena a = {NULL, 0, 0};
    gpt2_acts s;
    int dev_logits = logits_out && (!on_host || keep) && !out_dev; /* else written in place */
    carve(&a, &s, c, adt, B, T, Tk, !dc, !on_host && !rs && !dc, dev_logits ? logit_rows : 0, NV);
    CVENE_TRY(model_reserve_activations(m, a.used, B, Tk));
    a = (cvene_arena){m->act_mem, 0, m->act_cap};
    carve(&a, &s, c, adt, B, T, Tk, !dc, !on_host && !rs && !dc, dev_logits ? logit_rows : 0, NV);

    const int32_t *d_ids = ids, *d_pos = o ? o->position_ids : NULL, *d_mask = o ? o->attention_mask : NULL;
    if (dc) d_ids = dc->ids, d_pos = dc->pos, d_mask = dc->mask;
    if (!on_host && !rs && !dc) {
        CVENE_TRY(op->to_device(be, s.ids, ids, (size_t)BT * 4));
        d_ids = s.ids;
        if (d_pos) {
            CVENE_TRY(op->to_device(be, s.pos, d_pos, (size_t)BT * 4));
            d_pos = s.pos;
        }
        if (d_mask) {
            CVENE_TRY(op->to_device(be, s.mask, d_mask, (size_t)BT * 4));
            d_mask = s.mask;
        }
    }

    gpt2_site_run r = {m, o, B, T, s.heads, adt, s.stage};
    const float scale0 = c->scale_attn_weights ? 1.0f / sqrtf((float)D) : 1.0f;

    /* When only each row's last `keep` positions' logits are wanted (sweeps: 1), the last
     * block needs keys and values of every position but nothing after them except at those
     * positions: there q, attention and the MLP run on B * keep rows instead of B * T (unless
     * a site of that layer must see every position). xq is then those rows' residual. */
    const int tail = keep && keep < T && !resume_layer_has_sites(o, c->n_layer - 1) ? c->n_layer - 1 : -1;
    void *xq = s.x;
    int ln1_ready = 0; /* s.ln already holds this block's ln_1 (fused into the last residual add) */

    if (rs) CVENE_TRY(o16->convert(be, s.x, adt, rs->x, CVENE_F32, (size_t)BT * C)); /* f32 residual: copied or rounded */
    else CVENE_TRY(o16->embedding(be, adt, s.x, d_ids, d_pos, p->wte, p->wpe, B, T, C)); // (B, T, C)
    for (int l = rs ? rs->layer : 0; l < c->n_layer; l++) {
        const gpt2_layer *L = &p->layers[l];
        float scale = c->scale_by_inverse_layer_idx ? scale0 / (float)(l + 1) : scale0;
        const int Tq = l == tail ? keep : T, Mq = B * Tq; /* query rows of this block */
        CVENE_TRY(gpt2_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, l, s.x));
        if (!ln1_ready) CVENE_TRY(o16->layernorm(be, adt, s.ln, s.x, L->ln_1_w, L->ln_1_b, BT, C, c->ln_eps));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_ATTENTION_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        /* c_attn as three column slices of the (C, 3C) Conv1D weight, so q, k and v
         * each land contiguous (B, T, C) for their sites */
        if (BT == 1 && 3 * C <= I) { /* one row (a decoding step of one prompt): q, k and v are contiguous
                                      * thirds of one (1, 3C) product, one pass over the memory-bound weight */
            CVENE_TRY(model_gemm(be, adt, wdt, s.fc, s.ln, L->c_attn_w, 3 * C, 0, L->c_attn_b, 1, C, 3 * C,
                                 CVENE_ACT_NONE)); // (1, 3C), in fc (free until the MLP)
            CVENE_TRY(op->copy(be, s.q, s.fc, (size_t)C * E));
            CVENE_TRY(op->copy(be, s.k, act_at(s.fc, adt, C), (size_t)C * E));
            CVENE_TRY(op->copy(be, s.v, act_at(s.fc, adt, 2 * (size_t)C), (size_t)C * E));
        } else {
            if (Tq == T) {
                CVENE_TRY(model_gemm(be, adt, wdt, s.q, s.ln, L->c_attn_w, 3 * C, 0, L->c_attn_b, BT, C, C,
                                     CVENE_ACT_NONE));
            } else { /* the last rows of ln, gathered into att (free until attention) */
                CVENE_TRY(resume_gather_tail(be, s.att, s.ln, B, T, Tq, C, E));
                CVENE_TRY(model_gemm(be, adt, wdt, s.q, s.att, L->c_attn_w, 3 * C, 0, L->c_attn_b, Mq, C, C,
                                     CVENE_ACT_NONE)); // (B, Tq, C)
            }
            CVENE_TRY(model_gemm(be, adt, wdt, s.k, s.ln, gpt2_wat(L->c_attn_w, wdt, C), 3 * C, 0, L->c_attn_b + C, BT,
                                 C, C, CVENE_ACT_NONE));
            CVENE_TRY(model_gemm(be, adt, wdt, s.v, s.ln, gpt2_wat(L->c_attn_w, wdt, 2 * (size_t)C), 3 * C, 0,
                                 L->c_attn_b + 2 * C, BT, C, C, CVENE_ACT_NONE));
        }
        CVENE_TRY(gpt2_site_btc(&r, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, s.q));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, s.k));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, s.v));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, s.q));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, s.k));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, s.v));
        const void *kk = s.k, *vv = s.v;
        size_t kv_bs = (size_t)Tk * C;
        if (s.kf) { /* resuming: cached prefix keys/values, shared by every row, then ours */
            CVENE_TRY(resume_join_cache(be, adt, s.kf, rs->k_cache[l], s.k, B, past, T, C));
            CVENE_TRY(resume_join_cache(be, adt, s.vf, rs->v_cache[l], s.v, B, past, T, C));
            kk = s.kf, vv = s.vf;
        } else if (dc) { /* decoding: ours appended to each row's cache, which attention reads in place */
            CVENE_TRY(decode_append(be, adt, dc, l, B, T, C, s.k, s.v, &kk, &vv));
            kv_bs = (size_t)dc->cap * C;
        }
        CVENE_TRY(o16->attn_probs(be, adt, s.probs, s.q, (size_t)Tq * C, kk, kv_bs, d_mask, B, Tq, Tk, H, D, scale));
        CVENE_TRY(gpt2_site_call(&r, CVENE_ATTENTION_WEIGHT, l, s.probs, 4, B, H, T, Tk));
        CVENE_TRY(o16->attn_apply(be, adt, s.att, s.probs, vv, kv_bs, B, Tq, Tk, H, D)); // (B, Tq, C)
        CVENE_TRY(gpt2_site_btc(&r, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.att));
        CVENE_TRY(model_gemm(be, adt, wdt, s.out, s.att, L->attn_proj_w, C, 0, L->attn_proj_b, Mq, C, C, CVENE_ACT_NONE));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.out));
        if (Tq != T) { /* from here on only the last rows: their residual in heads (unused: no sites) */
            xq = s.heads;
            CVENE_TRY(resume_gather_tail(be, xq, s.x, B, T, Tq, C, E));
        }
        /* fused: no site between the residual add and ln_2 (MLP_INPUT is ln_2's output) */
        CVENE_TRY(o16->residual_layernorm(be, adt, xq, s.out, s.ln, L->ln_2_w, L->ln_2_b, Mq, C, c->ln_eps));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        /* c_fc and its activation in one op (MLP_ACTIVATION is the activation's output) */
        CVENE_TRY(model_gemm(be, adt, wdt, s.fc, s.ln, L->c_fc_w, I, 0, L->c_fc_b, Mq, C, I, c->act)); // (B, Tq, I)
        CVENE_TRY(gpt2_site_call(&r, CVENE_MLP_ACTIVATION, l, s.fc, 3, B, T, I, 0));
        CVENE_TRY(model_gemm(be, adt, wdt, s.out, s.fc, L->mlp_proj_w, C, 0, L->mlp_proj_b, Mq, I, C, CVENE_ACT_NONE));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.out));
        /* the next block's ln_1 fused into this residual add when no site sits between them
         * (this block's BLOCK_OUTPUT, the next one's BLOCK_INPUT); the last block's residual
         * is followed by ln_f only when logits are wanted, below */
        ln1_ready = l + 1 < c->n_layer && xq == s.x && Mq == BT && !gpt2_site_on(&r, CVENE_BLOCK_OUTPUT, l) &&
                    !gpt2_site_on(&r, CVENE_BLOCK_INPUT, l + 1);
        if (ln1_ready)
            CVENE_TRY(o16->residual_layernorm(be, adt, s.x, s.out, s.ln, p->layers[l + 1].ln_1_w,
                                              p->layers[l + 1].ln_1_b, BT, C, c->ln_eps));
        else
            CVENE_TRY(o16->residual_add(be, adt, xq, s.out, (size_t)Mq * C));
        CVENE_TRY(gpt2_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.x));
    }
    /* a decoding call leaves its work queued: the caller's sampler reads the device logits */
    if (!logits_out) return out_dev ? CVENE_OK : op->sync(be);
    model_head_args h = {adt, s.x, xq, s.out, s.ln, s.stage, p->ln_f_w, p->ln_f_b, c->ln_eps, p->lm_head, wdt, s.wsel,
                         cols, NV, B, T, C, V, row0, keep, dev_logits ? s.logits : NULL, logits_out};
    CVENE_TRY(model_head_logits(be, &h));
    return out_dev ? CVENE_OK : op->sync(be);
}

/* GPT-2's footprint from config.json alone, mirroring build_specs and carve for a full
 * forward; test_neox_parity checks both against a loaded model and its arena. */
cvene_status gpt2_plan(cvene_ctx *ctx, const char *dir, const cJSON *j, int B, int T, int on_device,
                              cvene_dtype adt, model_plan *out) {
    int V, P, C, L, H, I, tied;
    CVENE_TRY(hf_config_int(ctx, j, dir, "vocab_size", 1, 1 << 24, &V));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_positions", 1, 1 << 24, &P));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_embd", 1, 1 << 16, &C));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_layer", 1, 64, &L));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_head", 1, 1 << 12, &H));
    if (C % H != 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: n_embd = %d is not divisible by n_head = %d",
                          dir, C, H);
    CVENE_TRY(hf_config_int_opt(ctx, j, dir, "n_inner", 1, 1 << 20, 4 * C, &I));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "tie_word_embeddings", 1, &tied));
    memset(out, 0, sizeof *out);
    out->arch = CVENE_ARCH_GPT2;
    out->n_layer = L, out->n_embd = C, out->n_head = H, out->n_inner = I, out->vocab_size = V,
    out->n_positions = P;
    int64_t c = C, i = I, v = V;
    out->embed_params = v * c + (int64_t)P * c;
    out->layer_params = 2 * c + c * 3 * c + 3 * c + c * c + c + 2 * c + c * i + i + i * c + c;
    out->final_params = 2 * c + (tied ? 0 : v * c);
    size_t BT = (size_t)B * T, F = sizeof(float), E = adt == CVENE_F32 ? F : 2, Cs = (size_t)C;
    const int half = adt != CVENE_F32;
    size_t stage = BT * Cs > BT * (size_t)I ? BT * Cs : BT * (size_t)I; /* the f32 copy a site sees */
    if (BT * (size_t)H * (size_t)T > stage) stage = BT * (size_t)H * (size_t)T;
    size_t bufs[] = {BT * Cs * E, BT * Cs * E, BT * Cs * E, BT * Cs * E, BT * Cs * E, /* x ln q k v */
                     BT * (size_t)H * (size_t)T * E,                                   /* probs */
                     BT * Cs * E, BT * Cs * E, BT * (size_t)I * E, BT * Cs * E,        /* att out fc heads */
                     half ? stage * F : 0,                                             /* site stage */
                     on_device ? BT * 4 : 0, on_device ? BT * 4 : 0, on_device ? BT * 4 : 0};
    cvene_arena a = {NULL, 0, 0};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        if (bufs[k]) cvene_arena_take(&a, bufs[k]);
    out->arena_bytes = a.used;
    out->logits_bytes = BT * (size_t)V * F;
    return CVENE_OK;
}
