/* Native GRU: pyvene 0.1.8's GRU (pyvene/models/gru/modelings_gru.py) with its LM and
 * classifier heads, loaded from config.json (pyvene's GRUConfig: model_type "gru") and
 * model.safetensors (the state_dict of GRULMHeadModel or GRUForClassification), written
 * once against the backend op table.
 *
 * The model (h = h_dim, L = n_layer; every cell an nn.Linear pair, no dropout at eval):
 *   e_t = wte[ids_t] (+ wpe[position_ids_t] only when position_ids are given)
 *   for t = 0..T-1, for l = 0..L-1, with x = e_t (l = 0) or h^{l-1}_t:
 *     [x_r | x_z | x_n] = x2h(x)            (3h: the gates stacked reset | update | new)
 *     [h_r | h_z | h_n] = h2h(h^l_{t-1})    (h^l_{-1} = 0)
 *     r = sigmoid(x_r + h_r);  z = sigmoid(x_z + h_z);  n = tanh(x_n + r * h_n)
 *     h^l_t = z * h^l_{t-1} + (1 - z) * n
 *   GRULMHeadModel:       logits_t = lm_head(h^{L-1}_t)             (B, T, vocab_size)
 *   GRUForClassification: logits_t = score(h^{L-1}_t) at EVERY t    (B, T, n_labels);
 *                         pyvene returns the row at sum(attention_mask) - 1 of each example.
 * The attention mask is not read by the recurrence (pyvene's GRU reads every token).
 *
 * Sites: a GRU's streams exist per timestep, so each requested (component, layer) site
 * is called once per timestep, in order, with a (B, h) view ((B, 3h) for x2h_output and
 * h2h_output) of the tensor the next op reads, i.e. with pyvene's in-place semantics:
 *   cell_input         the cell's input x; for l >= 1 this IS the buffer h^{l-1}_t, which
 *                      is also layer l-1's hidden state at step t+1 (in pyvene the same
 *                      tensor object), so a write there reaches both
 *   x2h_output, {reset,update,new}_x2h_output   x2h(x) and its thirds (B, h) each
 *   h2h_output, {reset,update,new}_h2h_output   h2h(h^l_{t-1}) and its thirds
 *   reset_gate_input/output, update_gate_input/output, new_gate_input/output
 *                      the sigmoid / tanh inputs and outputs
 *   cell_output        h^l_t (what layer l+1 reads at t and layer l at t+1)
 * fired in that order within a (timestep, layer). cvene_run serves the split components
 * on the x2h_output / h2h_output site (engine/run.c); a direct caller may ask for them
 * too and gets the third as a contiguous (B, h) view. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
#include "models/gru.h"
#include "models/hf_config.h"
#include "models/weights.h"

/* ---- config ------------------------------------------------------------ */

static cvene_status parse_config(cvene_ctx *ctx, const char *dir, const cJSON *j, gru_config *c) {
    const int BIG = 1 << 24;
    /* GRUConfig's own fields; HF writes them all, the optional ones default as GRUConfig */
    CVENE_TRY(hf_config_int(ctx, j, dir, "h_dim", 1, 1 << 16, &c->h_dim));
    CVENE_TRY(hf_config_int(ctx, j, dir, "n_layer", 1, 64, &c->n_layer));
    CVENE_TRY(hf_config_int(ctx, j, dir, "vocab_size", 1, BIG, &c->vocab_size));
    CVENE_TRY(hf_config_int_opt(ctx, j, dir, "max_position_embeddings", 1, BIG, 512, &c->n_positions));
    CVENE_TRY(hf_config_int_opt(ctx, j, dir, "n_labels", 1, BIG, 2, &c->n_labels));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "include_bias", 1, &c->bias));
    int emb;
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "include_emb", 0, &emb));
    if (!emb)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s/config.json: include_emb is false: the GRU has no token embedding (wte) and "
                          "takes inputs_embeds; cvene runs GRUs from input_ids (include_emb true)", dir);
    c->head = -1;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    if (arch && !cJSON_IsNull(arch)) {
        const cJSON *a0 = cJSON_IsArray(arch) ? cJSON_GetArrayItem(arch, 0) : NULL;
        if (!cJSON_IsString(a0))
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "%s/config.json: field \"architectures\" must be a list of class names", dir);
        if (!strcmp(a0->valuestring, "GRULMHeadModel")) c->head = GRU_HEAD_LM;
        else if (!strcmp(a0->valuestring, "GRUForClassification")) c->head = GRU_HEAD_CLS;
        else
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "%s/config.json: architectures[0] = \"%s\" is not supported for model_type \"gru\" "
                              "(GRULMHeadModel, GRUForClassification; a bare GRUModel has no output head)",
                              dir, a0->valuestring);
    }
    return CVENE_OK;
}

/* ---- weights ----------------------------------------------------------- */

/* pyvene's GRUCell stacks the three gates in one nn.Linear: say so when a checkpoint's
 * x2h / h2h does not have 3 * h_dim rows (weights_resolve would only report shapes). */
static cvene_status check_gates(cvene_ctx *ctx, const char *dir, const st_archive *ar, const gru_config *c) {
    static const char *const mats[2] = {"x2h", "h2h"};
    const long long h = c->h_dim;
    char name[96], got[64];
    for (int l = 0; l < c->n_layer; l++)
        for (int k = 0; k < 2; k++)
            for (int bias = 0; bias <= c->bias; bias++) {
                snprintf(name, sizeof name, "gru.cells.%d.%s.%s", l, mats[k], bias ? "bias" : "weight");
                const st_tensor *t = st_archive_find(ar, name);
                if (!t) t = st_archive_find(ar, name + 4); /* a bare GRUModel's names */
                if (!t) continue; /* missing: weights_resolve names it */
                if (t->ndim == (bias ? 1 : 2) && t->shape[0] == 3 * h && (bias || t->shape[1] == h)) continue;
                size_t o = (size_t)snprintf(got, sizeof got, "[");
                for (int d = 0; d < t->ndim && o < sizeof got; d++)
                    o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                if (o < sizeof got) snprintf(got + o, sizeof got - o, "]");
                if (bias)
                    return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                      "%s: tensor '%s' has shape %s but a GRU cell's %s stacks the reset, update "
                                      "and new gates (3 x h_dim): h_dim = %lld in config.json needs [%lld]",
                                      dir, t->name, got, mats[k], h, 3 * h);
                return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                  "%s: tensor '%s' has shape %s but a GRU cell's %s stacks the reset, update and "
                                  "new gates (3 x h_dim rows): h_dim = %lld in config.json needs [%lld, %lld]",
                                  dir, t->name, got, mats[k], h, 3 * h, h);
            }
    return CVENE_OK;
}

static int build_specs(const gru_config *c, gru_params *p, weight_spec *s) {
    int64_t h = c->h_dim;
    int n = 0;
    n = add_spec(s, n, &p->wte, c->vocab_size, h, "wte.weight", 0);
    n = add_spec(s, n, &p->wpe, c->n_positions, h, "wpe.weight", 0);
    for (int l = 0; l < c->n_layer; l++) {
        gru_layer *L = &p->layers[l];
        n = add_gemm_spec(s, n, &L->x2h_w, 3 * h, h, "cells.%d.x2h.weight", l);
        if (c->bias) n = add_spec(s, n, &L->x2h_b, 3 * h, 0, "cells.%d.x2h.bias", l);
        n = add_gemm_spec(s, n, &L->h2h_w, 3 * h, h, "cells.%d.h2h.weight", l);
        if (c->bias) n = add_spec(s, n, &L->h2h_b, 3 * h, 0, "cells.%d.h2h.bias", l);
    }
    n = add_gemm_spec(s, n, &p->head, c->n_out, h, c->head == GRU_HEAD_LM ? "lm_head.weight" : "score.weight", 0);
    s[n - 1].no_prefix = 1;
    return n;
}

static void gru_free(cvene_model *m) {
    gru_model *g = m->arch;
    if (g) {
        free(g->p.layers);
        if (g->p.zero_row) g->be->ops->free(g->be, g->p.zero_row);
    }
    free(g);
    m->arch = NULL;
}

static cvene_status gru_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
static const float *gru_token_embeddings(cvene_model *m, int *V, int *C) {
    gru_model *g = m->arch;
    *V = g->cfg.vocab_size;
    *C = g->cfg.h_dim;
    return g->p.wte;
}
/* no forward_from: a GRU has no key/value cache to resume from; the training pass is
 * models/gru_train.c; no decoding yet (a GRU LM would carry its hidden state instead of a cache) */
static const cvene_model_vtable gru_vtable = {"gru", gru_forward, gru_free, NULL, gru_token_embeddings,
                                              gru_train_forward, gru_train_backward, NULL};

cvene_status gru_load(cvene_model *m, const char *dir, const cJSON *cfg) {
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    /* no 16-bit reference exists: pyvene's own GRU cannot run after .to(torch.bfloat16) (its
     * zero initial state stays f32: "mat1 and mat2 must have the same dtype") */
    if (ctx->params.activation_dtype != CVENE_F32)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s: GRU models run with f32 activations; activation_dtype = %s is for GPT-2 and GPT-NeoX "
                          "(compute_dtype alone gives the GRU 16-bit GEMMs)", dir,
                          cvene_dtype_name(ctx->params.activation_dtype));
    gru_model *g = calloc(1, sizeof *g);
    if (!g) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    g->be = be;
    m->arch = g;
    m->vt = &gru_vtable;
    gru_config *c = &g->cfg;
    cvene_status st = parse_config(ctx, dir, cfg, c);
    if (st != CVENE_OK) {
        gru_free(m);
        return st;
    }
    st_archive ar;
    st = st_archive_open_dir(ctx, &ar, dir);
    if (st != CVENE_OK) {
        gru_free(m);
        return st;
    }
    /* the head: as "architectures" says, else as the checkpoint holds */
    int has_lm = st_archive_find(&ar, "lm_head.weight") != NULL, has_cls = st_archive_find(&ar, "score.weight") != NULL;
    if (c->head < 0) c->head = has_lm ? GRU_HEAD_LM : has_cls ? GRU_HEAD_CLS : -1;
    if (c->head < 0)
        st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                        "%s: the checkpoint has neither lm_head.weight (GRULMHeadModel) nor score.weight "
                        "(GRUForClassification); a bare GRUModel has no output head", dir);
    else if (c->head == GRU_HEAD_LM && !has_lm)
        st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                        "%s: config.json says GRULMHeadModel but the checkpoint has no tensor 'lm_head.weight'", dir);
    else if (c->head == GRU_HEAD_CLS && !has_cls)
        st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                        "%s: config.json says GRUForClassification but the checkpoint has no tensor 'score.weight'",
                        dir);
    c->n_out = c->head == GRU_HEAD_CLS ? c->n_labels : c->vocab_size;
    if (st == CVENE_OK) st = check_gates(ctx, dir, &ar, c);
    int max_specs = 3 + 4 * c->n_layer;
    weight_spec *specs = malloc(sizeof(weight_spec) * (size_t)max_specs);
    g->p.layers = calloc((size_t)c->n_layer, sizeof(gru_layer));
    g->p.gemm_dtype = ctx->params.compute_dtype;
    if (st == CVENE_OK && (!specs || !g->p.layers))
        st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory loading %s", dir);
    int n = st == CVENE_OK ? build_specs(c, &g->p, specs) : 0;
    if (st == CVENE_OK) st = weights_resolve(ctx, dir, &ar, specs, n, "gru.");
    if (st == CVENE_OK) st = weights_upload(m, specs, n); /* may take over ar (F32 used in place) */
    if (st == CVENE_OK) st = weights_zero_row(ctx, &g->p.zero_row, c->h_dim);
    int64_t params = st == CVENE_OK ? weights_count(specs, n) : 0;
    free(specs);
    st_archive_close(&ar);
    if (st != CVENE_OK) {
        gru_free(m);
        return st; /* the caller frees param_mem and the kept mapping */
    }
    m->info = (cvene_model_info){CVENE_ARCH_GRU, c->n_layer, 1, c->h_dim, 3 * c->h_dim, c->n_out,
                                 c->n_positions, params, c->vocab_size};
    return CVENE_OK;
}

/* ---- activations -------------------------------------------------------- */

typedef struct {
    float *embT;   // (T, B, h) embeddings, time-major: step t is a contiguous (B, h)
    float *tmp;    // (B, T, h) embeddings before the transpose; the top outputs after
    float *h;      // (L, B, h) hidden states, updated in place
    float *xg, *hg; // (B, 3h) x2h / h2h outputs
    float *xs, *hs; // (3, B, h) the same regrouped gate-major: [r | z | n] each a contiguous (B, h)
    float *outT;   // (T, B, h) top-layer outputs
    float *logits; // (B, T, n_out) device logits when not writing straight to the host
    int32_t *ids, *pos; // (B, T) device copies of the inputs
    int32_t *zpos; // (B, T) zeros: every token reads the zero row when no position_ids are given
} gru_acts;

static void carve(cvene_arena *a, gru_acts *s, const gru_config *c, int B, int T, int dev_inputs, int dev_logits) {
    size_t BT = (size_t)B * T, h = (size_t)c->h_dim, Bh = (size_t)B * h, F = sizeof(float);
    s->embT = cvene_arena_take(a, BT * h * F);
    s->tmp = cvene_arena_take(a, BT * h * F);
    s->h = cvene_arena_take(a, (size_t)c->n_layer * Bh * F);
    s->xg = cvene_arena_take(a, 3 * Bh * F);
    s->hg = cvene_arena_take(a, 3 * Bh * F);
    s->xs = cvene_arena_take(a, 3 * Bh * F);
    s->hs = cvene_arena_take(a, 3 * Bh * F);
    s->outT = cvene_arena_take(a, BT * h * F);
    s->logits = dev_logits ? cvene_arena_take(a, BT * (size_t)c->n_out * F) : NULL;
    s->ids = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->pos = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->zpos = cvene_arena_take(a, BT * 4);
}

/* ---- sites ------------------------------------------------------------- */

int gru_site_on(const gru_site_run *r, cvene_component c, int l) {
    return r->o && r->o->site_fn && ((r->o->sites[c] >> l) & 1u);
}

/* One timestep of (c, l): a (B, W) view. */
cvene_status gru_site_step(const gru_site_run *r, cvene_component c, int l, float *data, int W) {
    if (!gru_site_on(r, c, l)) return CVENE_OK;
    int64_t shape[4] = {r->B, W, 0, 0};
    cvene_tensor_view v = cvene_tensor_make(data, CVENE_F32, r->m->ctx->be->device, 2, shape);
    int rc = r->o->site_fn(r->o->site_user, c, l, &v);
    if (rc == CVENE_SITE_STOP) return CVENE_SITE_STOPPED;
    if (rc != 0)
        return cvene_fail(r->m->ctx, CVENE_ERR_CALLBACK, "site callback at %s layer %d returned %d",
                          cvene_component_name(c), l, rc);
    return CVENE_OK;
}

/* ---- forward ----------------------------------------------------------- */

static cvene_status check_inputs(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    const gru_config *c = &((gru_model *)m->arch)->cfg;
    cvene_ctx *ctx = m->ctx;
    if (!ids) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "input_ids is NULL");
    if (B <= 0 || T <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "batch size %d and sequence length %d must be > 0", B, T);
    if (o && o->logits_to_keep)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "logits_to_keep = %d: the GRU writes its score head at every step (use 0)", o->logits_to_keep);
    if (o && (o->logits_on_device || o->n_logits_vocab || o->logits_vocab))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "logits_on_device and logits_vocab: GPT-2 and GPT-NeoX only (the "
                          "GRU's logits come to the host)");
    /* the recurrence has no position limit; wpe is read only when position_ids are given */
    if ((int64_t)B * T > (1 << 30))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "batch %d x sequence %d is too large", B, T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (ids[i] < 0 || ids[i] >= c->vocab_size)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)", b, t, ids[i],
                                  c->vocab_size);
            if (o && o->position_ids && (o->position_ids[i] < 0 || o->position_ids[i] >= c->n_positions))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "position_ids[%d][%d] = %d is outside the position table [0, %d) "
                                  "(max_position_embeddings)", b, t, o->position_ids[i], c->n_positions);
            if (o && o->attention_mask && o->attention_mask[i] != 0 && o->attention_mask[i] != 1)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "attention_mask[%d][%d] = %d must be 0 or 1", b,
                                  t, o->attention_mask[i]);
        }
    if (o)
        for (int comp = 0; comp < CVENE_N_COMPONENTS; comp++) {
            if (!o->sites[comp]) continue;
            if (!cvene_component_is_gru((cvene_component)comp))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "sites[%s]: a GRU has no such stream (its components: cell_input, "
                                  "cell_output, {reset,update,new}_gate_{input,output}, x2h_output, h2h_output, "
                                  "{reset,update,new}_{x2h,h2h}_output)",
                                  cvene_component_name((cvene_component)comp));
            if (c->n_layer < 64 && (o->sites[comp] >> c->n_layer))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sites[%s] asks for a layer >= n_layer = %d",
                                  cvene_component_name((cvene_component)comp), c->n_layer);
        }
    return CVENE_OK;
}

static cvene_status gru_forward_impl(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);

static cvene_status gru_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    cvene_status st = gru_forward_impl(m, ids, B, T, o);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

/* x (B, h) @ W^T + b for a stacked (3h, h) gate matrix, then its site and the (3, B, h)
 * regrouping with the per-gate sites (models/gru.h). */
cvene_status gru_gate_proj(const gru_site_run *r, float *out3, float *grouped, const float *x, const void *w,
                           const float *bias, int l, cvene_component whole, cvene_component first) {
    cvene_backend *be = r->m->ctx->be;
    const gru_config *c = &((gru_model *)r->m->arch)->cfg;
    const int h = c->h_dim, B = r->B;
    const size_t Bh = (size_t)B * h;
    const cvene_dtype wdt = ((gru_model *)r->m->arch)->p.gemm_dtype; /* f32: matmul_lp is exactly matmul */
    CVENE_TRY(be->ops->matmul_lp(be, out3, x, w, wdt, h, 1, bias, B, h, 3 * h)); // (B, 3h)
    CVENE_TRY(gru_site_step(r, whole, l, out3, 3 * h));
    CVENE_TRY(be->ops->permute_heads(be, grouped, out3, 1, B, 3, h, 1)); // (B, 3, h) -> (3, B, h)
    for (int k = 0; k < 3; k++) CVENE_TRY(gru_site_step(r, (cvene_component)(first + k), l, grouped + k * Bh, h));
    return CVENE_OK;
}

static cvene_status gru_forward_impl(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    CVENE_TRY(check_inputs(m, ids, B, T, o));
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_ops *op = be->ops;
    if (!op->gru_pointwise)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no gru_pointwise op (needed by GRUs)",
                          op->name);
    const gru_config *c = &((gru_model *)m->arch)->cfg;
    const gru_params *p = &((gru_model *)m->arch)->p;
    const int h = c->h_dim, L = c->n_layer, V = c->n_out;
    const size_t BT = (size_t)B * T, Bh = (size_t)B * h;
    const int on_host = be->device == CVENE_DEVICE_CPU;
    float *logits_out = o ? o->logits : NULL;

    cvene_arena a = {NULL, 0, 0};
    gru_acts s;
    carve(&a, &s, c, B, T, !on_host, !on_host && logits_out);
    CVENE_TRY(model_reserve_activations(m, a.used, B, T));
    a = (cvene_arena){m->act_mem, 0, m->act_cap};
    carve(&a, &s, c, B, T, !on_host, !on_host && logits_out);

    const int32_t *d_ids = ids, *d_pos = o ? o->position_ids : NULL;
    if (!on_host) {
        CVENE_TRY(op->to_device(be, s.ids, ids, BT * 4));
        d_ids = s.ids;
        if (d_pos) {
            CVENE_TRY(op->to_device(be, s.pos, d_pos, BT * 4));
            d_pos = s.pos;
        }
    }
    { /* zeros: the initial hidden states (h0 = 0) and, without position_ids, the positions
       * that make every token read the zero row (0.0f and int 0 share their bits) */
        size_t nz = (size_t)L * Bh > BT ? (size_t)L * Bh : BT;
        float *z = calloc(nz, sizeof(float));
        if (!z) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        cvene_status zs = op->to_device(be, s.h, z, (size_t)L * Bh * sizeof(float));
        if (zs == CVENE_OK && !d_pos) zs = op->to_device(be, s.zpos, z, BT * 4);
        free(z);
        CVENE_TRY(zs);
    }
    if (d_pos) CVENE_TRY(op->embedding(be, s.tmp, d_ids, d_pos, p->wte, p->wpe, B, T, h)); // (B, T, h)
    else CVENE_TRY(op->embedding(be, s.tmp, d_ids, s.zpos, p->wte, p->zero_row, B, T, h));
    CVENE_TRY(op->permute_heads(be, s.embT, s.tmp, 1, B, T, h, 1)); // (B, T, h) -> (T, B, h)

    gru_site_run r = {m, o, B};
    float *xr = s.xs, *xz = s.xs + Bh, *xn = s.xs + 2 * Bh;
    const float *hr = s.hs, *hz = s.hs + Bh, *hn = s.hs + 2 * Bh;
    for (int t = 0; t < T; t++) {
        for (int l = 0; l < L; l++) {
            const gru_layer *P = &p->layers[l];
            float *x = l == 0 ? s.embT + (size_t)t * Bh : s.h + (size_t)(l - 1) * Bh; // (B, h)
            float *hl = s.h + (size_t)l * Bh;                                      // (B, h) h^l_{t-1}
            CVENE_TRY(gru_site_step(&r, CVENE_CELL_INPUT, l, x, h));
            CVENE_TRY(gru_gate_proj(&r, s.xg, s.xs, x, P->x2h_w, P->x2h_b, l, CVENE_X2H_OUTPUT,
                                    CVENE_RESET_X2H_OUTPUT));
            CVENE_TRY(gru_gate_proj(&r, s.hg, s.hs, hl, P->h2h_w, P->h2h_b, l, CVENE_H2H_OUTPUT,
                                    CVENE_RESET_H2H_OUTPUT));
            CVENE_TRY(op->residual_add(be, xr, hr, Bh)); // x_r + h_r
            CVENE_TRY(gru_site_step(&r, CVENE_RESET_GATE_INPUT, l, xr, h));
            CVENE_TRY(op->activation(be, xr, Bh, CVENE_ACT_SIGMOID)); // r
            CVENE_TRY(gru_site_step(&r, CVENE_RESET_GATE_OUTPUT, l, xr, h));
            CVENE_TRY(op->residual_add(be, xz, hz, Bh)); // x_z + h_z
            CVENE_TRY(gru_site_step(&r, CVENE_UPDATE_GATE_INPUT, l, xz, h));
            CVENE_TRY(op->activation(be, xz, Bh, CVENE_ACT_SIGMOID)); // z
            CVENE_TRY(gru_site_step(&r, CVENE_UPDATE_GATE_OUTPUT, l, xz, h));
            CVENE_TRY(op->gru_pointwise(be, xn, xn, xr, hn, Bh, CVENE_GRU_NEW_GATE_IN)); // x_n + r * h_n
            CVENE_TRY(gru_site_step(&r, CVENE_NEW_GATE_INPUT, l, xn, h));
            CVENE_TRY(op->activation(be, xn, Bh, CVENE_ACT_TANH)); // n
            CVENE_TRY(gru_site_step(&r, CVENE_NEW_GATE_OUTPUT, l, xn, h));
            CVENE_TRY(op->gru_pointwise(be, hl, xz, hl, xn, Bh, CVENE_GRU_HIDDEN)); // z * h + (1 - z) * n
            CVENE_TRY(gru_site_step(&r, CVENE_CELL_OUTPUT, l, hl, h));
        }
        /* the top layer's output at t, as pyvene appends it (a later step never writes it) */
        CVENE_TRY(op->copy(be, s.outT + (size_t)t * Bh, s.h + (size_t)(L - 1) * Bh, Bh * sizeof(float)));
    }
    if (!logits_out) return op->sync(be);
    const int row0 = o->logits_row0, rows = (B - row0) * T; /* logits for rows row0.. only */
    if (row0 < 0 || row0 >= B)
        return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "logits_row0 = %d is outside [0, %d)", row0, B);
    CVENE_TRY(op->permute_heads(be, s.tmp, s.outT, 1, T, B, h, 1)); // (T, B, h) -> (B, T, h)
    float *dst = on_host ? logits_out : s.logits;
    CVENE_TRY(op->matmul_lp(be, dst, s.tmp + (size_t)row0 * T * h, p->head, p->gemm_dtype, h, 1, NULL, rows, h,
                            V)); // (rows, n_out)
    if (!on_host) CVENE_TRY(op->to_host(be, logits_out, s.logits, (size_t)rows * V * sizeof(float)));
    return op->sync(be);
}
