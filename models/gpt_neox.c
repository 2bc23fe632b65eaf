/* Native GPT-NeoX (Pythia): checkpoint loading and the forward pass, written once
 * against the backend op table, numerically mirroring transformers 4.46.3's
 * GPTNeoXForCausalLM with eager attention.
 *
 * Block l (x is the residual stream, (B, T, C)):
 *   a   = dense(attn(rotary(split(query_key_value(ln1(x))))))
 *   parallel residual:   x = x + (mlp(ln2(x)) + a)      (transformers: mlp + attn + x)
 *   sequential residual: h = x + a;  x = h + mlp(ln2(h))
 *   mlp(y) = dense_4h_to_h(act(dense_h_to_4h(y)))
 * query_key_value is an nn.Linear (3C, C) whose output is laid out per head:
 * [q_h (D), k_h (D), v_h (D)] for h = 0..H-1. The rotary embedding rotates the first
 * rot = int(D * rotary_pct) dims of every q and k head (rotate-half, angle
 * pos * base^(-2i/rot), cos/sin in float32 as transformers computes them).
 *
 * Sites, in the order they are called (the order pyvene's hooks fire):
 *   block_input        input of layers[l]
 *   attention_input    input of layers[l].attention (= ln1(x))
 *   query_output, key_output, value_output, head_{query,key,value}_output
 *                      NOT in pyvene 0.1.8 for GPT-NeoX; cvene defines them as the
 *                      vectors attention uses: q and k AFTER the rotary embedding
 *                      (what GPTNeoXAttention._attn receives), v as projected
 *   attention_weight   softmax probabilities (not a pyvene GPT-NeoX component either)
 *   attention_value_output, head_attention_value_output
 *                      input of layers[l].attention.dense (merged heads)
 *   attention_output   output of layers[l].attention (dense output)
 *   mlp_input          input of layers[l].mlp (ln2 of x, or of x + a when sequential)
 *   mlp_activation     output of layers[l].mlp.act
 *   mlp_output         output of layers[l].mlp
 *   block_output       output of layers[l]
 * The training pass (train_forward / train_backward) is models/gpt_neox_train.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
#include "models/gpt_neox.h"
#include "models/hf_config.h"
#include "models/weights.h"

/* ---- config ------------------------------------------------------------ */

static cvene_status parse_config(cvene_ctx *ctx, const char *dir, const cJSON *j, neox_config *c) {
    const int BIG = 1 << 24;
    CVENE_TRY(hf_config_int(ctx, j, dir, "vocab_size", 1, BIG, &c->vocab_size));
    CVENE_TRY(hf_config_int(ctx, j, dir, "hidden_size", 1, 1 << 16, &c->n_embd));
    CVENE_TRY(hf_config_int(ctx, j, dir, "num_hidden_layers", 1, 64, &c->n_layer));
    CVENE_TRY(hf_config_int(ctx, j, dir, "num_attention_heads", 1, 1 << 12, &c->n_head));
    if (c->n_embd % c->n_head != 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s/config.json: hidden_size = %d is not divisible by num_attention_heads = %d",
                          dir, c->n_embd, c->n_head);
    CVENE_TRY(hf_config_int(ctx, j, dir, "intermediate_size", 1, 1 << 20, &c->n_inner));
    CVENE_TRY(hf_config_int_opt(ctx, j, dir, "max_position_embeddings", 1, BIG, 2048, &c->n_positions));
    double pct, base, eps;
    /* transformers >= 5 saves the rotary settings as rope_parameters {rope_type,
     * partial_rotary_factor, rope_theta} instead of rotary_pct / rotary_emb_base:
     * read the legacy key when it is there, else the new one. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        if (!cJSON_IsObject(rp))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: rope_parameters must be an object", dir);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "default")))
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                              "%s/config.json: rope_parameters.rope_type = %s; only the default rotary "
                              "embedding is supported", dir, cJSON_IsString(type) ? type->valuestring : "(not a string)");
    } else {
        rp = NULL;
    }
    const cJSON *pct_obj = j, *base_obj = j;
    const char *pct_key = "rotary_pct", *base_key = "rotary_emb_base";
    if (!cJSON_HasObjectItem(j, "rotary_pct") && rp && cJSON_HasObjectItem(rp, "partial_rotary_factor"))
        pct_obj = rp, pct_key = "partial_rotary_factor";
    if (!cJSON_HasObjectItem(j, "rotary_emb_base") && rp && cJSON_HasObjectItem(rp, "rope_theta"))
        base_obj = rp, base_key = "rope_theta";
    CVENE_TRY(hf_config_float_opt(ctx, pct_obj, dir, pct_key, 0.25, &pct));
    if (!(pct > 0.0 && pct <= 1.0))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: %s = %g must be in (0, 1]", dir, pct_key, pct);
    const int D = c->n_embd / c->n_head;
    c->rot_dims = (int)(D * pct); /* Python's int(head_size * rotary_pct) */
    if (c->rot_dims % 2 != 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s/config.json: %s = %g gives int(head_dim %d * %s) = %d rotary "
                          "dims, which must be even (rotate-half pairs dim i with i + rot/2)",
                          dir, pct_key, pct, D, pct_key, c->rot_dims);
    CVENE_TRY(hf_config_float_opt(ctx, base_obj, dir, base_key, 10000.0, &base));
    if (!(base > 0.0 && base < 3.0e38))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: %s = %g must be in (0, 3e38): it is used as a "
                          "float32, as transformers does (10000 is the usual value)", dir, base_key, base);
    c->rot_base = (float)base;
    CVENE_TRY(hf_config_float_opt(ctx, j, dir, "layer_norm_eps", 1e-5, &eps));
    if (!(eps > 0.0 && eps < 3.0e38))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: layer_norm_eps = %g must be in (0, 3e38) (a "
                          "float32; 1e-5 is the usual value)", dir, eps);
    c->ln_eps = (float)eps;
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (scaling && !cJSON_IsNull(scaling))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s/config.json: rope_scaling is set; only the default rotary embedding "
                          "(rope_scaling null) is supported", dir);
    const char *act;
    CVENE_TRY(hf_config_str_opt(ctx, j, dir, "hidden_act", "gelu", &act));
    if (!strcmp(act, "gelu"))
        c->act = CVENE_GELU_ERF;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_fast"))
        c->act = CVENE_GELU_TANH;
    else if (!strcmp(act, "relu"))
        c->act = CVENE_ACT_RELU;
    else
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s/config.json: hidden_act \"%s\" is not supported (gelu, gelu_new, "
                          "gelu_pytorch_tanh, gelu_fast, relu)", dir, act);
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "use_parallel_residual", 1, &c->parallel));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "tie_word_embeddings", 0, &c->tied));
    CVENE_TRY(hf_config_bool_opt(ctx, j, dir, "attention_bias", 1, &c->attn_bias));
    return CVENE_OK;
}

/* ---- weights ----------------------------------------------------------- */

static int build_specs(const neox_config *c, neox_params *p, weight_spec *s) {
    int64_t C = c->n_embd, I = c->n_inner, V = c->vocab_size;
    int n = 0;
    n = add_spec(s, n, &p->embed_in, V, C, "embed_in.weight", 0);
    for (int l = 0; l < c->n_layer; l++) {
        neox_layer *L = &p->layers[l];
        n = add_spec(s, n, &L->ln_1_w, C, 0, "layers.%d.input_layernorm.weight", l);
        n = add_spec(s, n, &L->ln_1_b, C, 0, "layers.%d.input_layernorm.bias", l);
        n = add_gemm_spec(s, n, &L->qkv_w, 3 * C, C, "layers.%d.attention.query_key_value.weight", l);
        if (c->attn_bias) n = add_spec(s, n, &L->qkv_b, 3 * C, 0, "layers.%d.attention.query_key_value.bias", l);
        n = add_gemm_spec(s, n, &L->dense_w, C, C, "layers.%d.attention.dense.weight", l);
        if (c->attn_bias) n = add_spec(s, n, &L->dense_b, C, 0, "layers.%d.attention.dense.bias", l);
        n = add_spec(s, n, &L->ln_2_w, C, 0, "layers.%d.post_attention_layernorm.weight", l);
        n = add_spec(s, n, &L->ln_2_b, C, 0, "layers.%d.post_attention_layernorm.bias", l);
        n = add_gemm_spec(s, n, &L->fc_w, I, C, "layers.%d.mlp.dense_h_to_4h.weight", l);
        n = add_spec(s, n, &L->fc_b, I, 0, "layers.%d.mlp.dense_h_to_4h.bias", l);
        n = add_gemm_spec(s, n, &L->proj_w, C, I, "layers.%d.mlp.dense_4h_to_h.weight", l);
        n = add_spec(s, n, &L->proj_b, C, 0, "layers.%d.mlp.dense_4h_to_h.bias", l);
    }
    n = add_spec(s, n, &p->ln_f_w, C, 0, "final_layer_norm.weight", 0);
    n = add_spec(s, n, &p->ln_f_b, C, 0, "final_layer_norm.bias", 0);
    if (!c->tied) {
        n = add_gemm_spec(s, n, &p->embed_out, V, C, "embed_out.weight", 0);
        s[n - 1].no_prefix = 1;
    }
    return n;
}

/* Parameter counts by placement (the planner splits layers over devices). */
static void count_params(const neox_config *c, int64_t *embed, int64_t *layer, int64_t *final) {
    int64_t C = c->n_embd, I = c->n_inner, V = c->vocab_size;
    *embed = V * C;
    *layer = 2 * C + 3 * C * C + C * C + 2 * C + I * C + I + C * I + C + (c->attn_bias ? 3 * C + C : 0);
    *final = 2 * C + (c->tied ? 0 : V * C);
}

static void neox_free(cvene_model *m) {
    neox_model *g = m->arch;
    if (g) {
        free(g->p.layers);
        if (g->p.zero_row) g->be->ops->free(g->be, g->p.zero_row);
    }
    free(g);
    m->arch = NULL;
}

static cvene_status neox_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
static cvene_status neox_forward_from(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o);
static const float *neox_token_embeddings(cvene_model *m, int *V, int *C) {
    neox_model *g = m->arch;
    *V = g->cfg.vocab_size;
    *C = g->cfg.n_embd;
    return g->p.embed_in;
}
static cvene_status neox_decode(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o);
static const cvene_model_vtable neox_vtable = {"gpt_neox", neox_forward, neox_free, neox_forward_from,
                                               neox_token_embeddings, neox_train_forward, neox_train_backward,
                                               neox_decode};

cvene_status gpt_neox_load(cvene_model *m, const char *dir, const cJSON *cfg) {
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    neox_model *g = calloc(1, sizeof *g);
    if (!g) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    g->be = be;
    m->arch = g;
    m->vt = &neox_vtable;
    neox_config *c = &g->cfg;
    cvene_status st = parse_config(ctx, dir, cfg, c);
    if (st != CVENE_OK) {
        neox_free(m);
        return st;
    }
    st_archive ar;
    st = st_archive_open_dir(ctx, &ar, dir);
    if (st != CVENE_OK) {
        neox_free(m);
        return st;
    }
    int max_specs = 5 + 12 * c->n_layer;
    g->p.gemm_dtype = ctx->params.compute_dtype;
    weight_spec *specs = malloc(sizeof(weight_spec) * (size_t)max_specs);
    g->p.layers = calloc((size_t)c->n_layer, sizeof(neox_layer));
    if (!specs || !g->p.layers) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory loading %s", dir);
    int n = st == CVENE_OK ? build_specs(c, &g->p, specs) : 0;
    /* tied head in reduced precision: a 16-bit copy of embed_in for the output GEMM (the
     * embedding lookup keeps the f32 one); not counted as extra parameters */
    const int n_counted = n;
    if (st == CVENE_OK && c->tied && g->p.gemm_dtype != CVENE_F32)
        n = add_gemm_spec(specs, n, &g->p.embed_out, c->vocab_size, c->n_embd, "embed_in.weight", 0);
    if (st == CVENE_OK) st = weights_resolve(ctx, dir, &ar, specs, n, "gpt_neox.");
    if (st == CVENE_OK) st = weights_upload(m, specs, n); /* may take over ar (F32 used in place) */
    if (st == CVENE_OK && c->tied && g->p.gemm_dtype == CVENE_F32) g->p.embed_out = g->p.embed_in;
    if (st == CVENE_OK) st = weights_zero_row(ctx, &g->p.zero_row, c->n_embd);
    int64_t params = st == CVENE_OK ? weights_count(specs, n_counted) : 0;
    free(specs);
    st_archive_close(&ar);
    if (st != CVENE_OK) {
        neox_free(m);
        return st; /* the caller frees param_mem and the kept mapping */
    }
    m->info = (cvene_model_info){CVENE_ARCH_GPT_NEOX, c->n_layer, c->n_head, c->n_embd, c->n_inner,
                                 c->vocab_size, c->n_positions, params, c->vocab_size};
    return CVENE_OK;
}

/* ---- activations -------------------------------------------------------- */

/* Activations are held in the forward's storage dtype adt (f32, or 16-bit with
 * cvene_ctx_params.activation_dtype), hence void pointers; logits and the site stage are f32. */
typedef struct {
    void *x;       // (B, T, C) residual stream
    void *ln;      // (B, T, C) layernorm output
    void *qkv;     // (B, T, H, 3, D) query_key_value output, regrouped in place (via tmp)
                   // to (3, B, T, C): q, then k = q + BTC, then v = k + BTC
    void *tmp;     // (B, T, 3, H, D) regrouping scratch
    void *kf, *vf;    // (B, Tk, C) cached prefix + new keys/values when resuming
    void *probs;   // (B, H, T, Tk)
    void *att;     // (B, T, C) merged heads
    void *attn;    // (B, T, C) attention output
    void *mlp;     // (B, T, C) mlp output
    void *fc;      // (B, T, I)
    void *heads;   // (B, H, T, D) scratch for per-head sites
    float *logits; // (B, T, V) device logits when not writing straight to the host
    float *stage;  // 16-bit adt: the f32 copy a site sees (the largest site tensor; the head's input)
    void *wsel;    // (n_vocab, C) output-head rows of the columns a resumed forward asked for
    int32_t *ids, *pos, *mask; // (B, T) device copies of the inputs
    int32_t *zpos; // (B, T) zeros: every token reads the zero row as its "position embedding"
    int32_t *rpos; // (B, T) rotary positions past .. Tk - 1 of a resumed forward
} neox_acts;

/* T: positions computed; Tk: positions attended (Tk > T when resuming after a cached
 * prefix: kf/vf then hold the full keys/values, unless join is 0: a decoding call's cache);
 * logits: device logits floats (0: none); n_vocab < vocab_size: room for that many
 * output-head rows. */
static void carve(cvene_arena *a, neox_acts *s, const neox_config *c, cvene_dtype adt, int B, int T, int Tk,
                  int join, int dev_inputs, size_t logits, int n_vocab) {
    size_t BT = (size_t)B * T, C = (size_t)c->n_embd, F = sizeof(float), E = cvene_dtype_size(adt);
    const size_t probs = BT * (size_t)c->n_head * (size_t)Tk, fc = BT * (size_t)c->n_inner;
    s->x = cvene_arena_take(a, BT * C * E);
    s->ln = cvene_arena_take(a, BT * C * E);
    s->qkv = cvene_arena_take(a, 3 * BT * C * E);
    s->tmp = cvene_arena_take(a, 3 * BT * C * E);
    s->kf = Tk > T && join ? cvene_arena_take(a, (size_t)B * Tk * C * E) : NULL;
    s->vf = Tk > T && join ? cvene_arena_take(a, (size_t)B * Tk * C * E) : NULL;
    s->probs = cvene_arena_take(a, probs * E);
    s->att = cvene_arena_take(a, BT * C * E);
    s->attn = cvene_arena_take(a, BT * C * E);
    s->mlp = cvene_arena_take(a, BT * C * E);
    s->fc = cvene_arena_take(a, fc * E);
    s->heads = cvene_arena_take(a, BT * C * E);
    s->logits = logits ? cvene_arena_take(a, logits * F) : NULL;
    size_t st = BT * C > fc ? BT * C : fc;
    if (probs > st) st = probs;
    s->stage = adt != CVENE_F32 ? cvene_arena_take(a, st * F) : NULL;
    s->wsel = n_vocab < c->vocab_size ? cvene_arena_take(a, (size_t)n_vocab * C * F) : NULL;
    s->ids = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->pos = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->mask = dev_inputs ? cvene_arena_take(a, BT * 4) : NULL;
    s->zpos = cvene_arena_take(a, BT * 4);
    s->rpos = Tk > T && join ? cvene_arena_take(a, BT * 4) : NULL;
}

/* ---- planning (from config.json alone) ----------------------------------- */

cvene_status gpt_neox_plan(cvene_ctx *ctx, const char *dir, const cJSON *cfg, int B, int T, int on_device,
                           cvene_dtype adt, model_plan *out) {
    neox_config c;
    memset(&c, 0, sizeof c);
    CVENE_TRY(parse_config(ctx, dir, cfg, &c));
    memset(out, 0, sizeof *out);
    out->arch = CVENE_ARCH_GPT_NEOX;
    out->n_layer = c.n_layer, out->n_embd = c.n_embd, out->n_head = c.n_head, out->n_inner = c.n_inner;
    out->vocab_size = c.vocab_size, out->n_positions = c.n_positions;
    count_params(&c, &out->embed_params, &out->layer_params, &out->final_params);
    cvene_arena a = {NULL, 0, 0};
    neox_acts s;
    carve(&a, &s, &c, adt, B, T, T, 1, on_device, 0, c.vocab_size);
    out->arena_bytes = a.used;
    out->logits_bytes = (size_t)B * T * (size_t)c.vocab_size * sizeof(float);
    return CVENE_OK;
}

/* ---- sites ------------------------------------------------------------- */

int neox_site_on(const neox_site_run *r, cvene_component c, int l) {
    return r->o && r->o->site_fn && ((r->o->sites[c] >> l) & 1u);
}

cvene_status neox_site_call(const neox_site_run *r, cvene_component c, int l, void *data, int ndim, int64_t d0,
                            int64_t d1, int64_t d2, int64_t d3) {
    if (!neox_site_on(r, c, l)) return CVENE_OK;
    int64_t shape[4] = {d0, d1, d2, d3};
    return model_site(r->m, r->o, r->adt, r->stage, c, l, data, ndim, shape);
}

/* (B, T, C) site and, if asked, its per-head (B, H, T, D) form. */
cvene_status neox_site_btc(const neox_site_run *r, cvene_component c, cvene_component head_c, int l, void *data) {
    const neox_config *g = &((neox_model *)r->m->arch)->cfg;
    int B = r->B, T = r->T, C = g->n_embd, H = g->n_head, D = C / H;
    if (c != CVENE_N_COMPONENTS) CVENE_TRY(neox_site_call(r, c, l, data, 3, B, T, C, 0));
    if (head_c == CVENE_N_COMPONENTS || !neox_site_on(r, head_c, l)) return CVENE_OK;
    cvene_backend *be = r->m->ctx->be;
    CVENE_TRY(be->ops->ops16->permute_heads(be, r->adt, r->heads, data, B, T, H, D, 1));
    CVENE_TRY(neox_site_call(r, head_c, l, r->heads, 4, B, H, T, D));
    return be->ops->ops16->permute_heads(be, r->adt, data, r->heads, B, T, H, D, 0);
}

/* ---- forward ----------------------------------------------------------- */

static cvene_status check_inputs(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    cvene_ctx *ctx = m->ctx;
    if (!ids) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "input_ids is NULL");
    if (B <= 0 || T <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "batch size %d and sequence length %d must be > 0", B, T);
    /* rotary has no position table: T may exceed max_position_embeddings, as in transformers */
    if ((int64_t)B * T > (1 << 30))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "batch %d x sequence %d is too large", B, T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (ids[i] < 0 || ids[i] >= c->vocab_size)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)", b, t, ids[i],
                                  c->vocab_size);
            if (o && o->position_ids && (o->position_ids[i] < 0 || o->position_ids[i] > (1 << 24)))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "position_ids[%d][%d] = %d is outside [0, %d] (positions are exact in "
                                  "float32 only up to 2^24)", b, t, o->position_ids[i], 1 << 24);
            if (o && o->attention_mask && o->attention_mask[i] != 0 && o->attention_mask[i] != 1)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "attention_mask[%d][%d] = %d must be 0 or 1", b,
                                  t, o->attention_mask[i]);
        }
    if (o)
        for (int comp = 0; comp < CVENE_N_COMPONENTS; comp++)
            if (c->n_layer < 64 && (o->sites[comp] >> c->n_layer))
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sites[%s] asks for a layer >= n_layer = %d",
                                  cvene_component_name((cvene_component)comp), c->n_layer);
    return CVENE_OK;
}

static cvene_status neox_forward_impl(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o,
                                      const cvene_resume *rs, const model_decode *dc);

static cvene_status neox_forward(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o) {
    cvene_status st = neox_forward_impl(m, ids, B, T, o, NULL, NULL);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

static cvene_status neox_forward_from(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o) {
    CVENE_TRY(resume_check(m, rs, B, T, o));
    cvene_status st = neox_forward_impl(m, NULL, B, T, o, rs, NULL);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

static cvene_status neox_decode(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o) {
    CVENE_TRY(decode_check(m, dc, B, T, o));
    cvene_status st = neox_forward_impl(m, NULL, B, T, o, NULL, dc);
    return st == CVENE_SITE_STOPPED ? CVENE_OK : st;
}

/* A full forward (rs and dc NULL), one resumed at layer rs->layer for positions [rs->past, T),
 * attending to cached (rotated) keys and values of the earlier positions, or a decoding call
 * (dc: T new positions after dc->past cached ones, inputs and logits on the device). */
static cvene_status neox_forward_impl(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o,
                                      const cvene_resume *rs, const model_decode *dc) {
    if (!rs && !dc) CVENE_TRY(check_inputs(m, ids, B, T, o));
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_ops *op = be->ops;
    if (!op->rotary)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "the %s backend has no rotary op (needed by GPT-NeoX)",
                          op->name);
    const neox_config *c = &((neox_model *)m->arch)->cfg;
    const neox_params *p = &((neox_model *)m->arch)->p;
    const cvene_dtype wdt = p->gemm_dtype; /* f32: matmul_lp is exactly matmul */
    const cvene_dtype adt = ctx->params.activation_dtype;
    const cvene_ops16 *o16 = op->ops16; /* every op in the activation storage adt (F32: the f32 op) */
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
    const int dev_logits = logits_out && (!on_host || keep) && !out_dev; /* else written in place */

    cvene_arena a = {NULL, 0, 0};
    neox_acts s;
    const size_t nlog = dev_logits ? (size_t)logit_rows * NV : 0;
    carve(&a, &s, c, adt, B, T, Tk, !dc, !on_host && !rs && !dc, nlog, NV);
    CVENE_TRY(model_reserve_activations(m, a.used, B, Tk));
    a = (cvene_arena){m->act_mem, 0, m->act_cap};
    carve(&a, &s, c, adt, B, T, Tk, !dc, !on_host && !rs && !dc, nlog, NV);

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
    /* embed_in has no position table: the zero row at "position" 0 for every token (a decoding
     * call's zeros are its own, on the device: no upload, which would wait for the device); a
     * resumed forward needs no embedding but rotary positions past .. Tk - 1 instead */
    const int32_t *zpos = dc ? dc->zeros : s.zpos;
    const int resumed = rs && past > 0; /* a decoding call reads its own positions (dc->pos) */
    if (!dc) {
        int32_t *hp = calloc((size_t)BT, sizeof(int32_t));
        if (!hp) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        for (int i = 0; resumed && i < BT; i++) /* past = 0: the default 0..T-1 */
            hp[i] = rs->positions ? rs->positions[past + i % T] : past + i % T;
        cvene_status ps = op->to_device(be, resumed ? s.rpos : s.zpos, hp, (size_t)BT * 4);
        free(hp);
        CVENE_TRY(ps);
    }
    if (resumed) d_pos = s.rpos;

    neox_site_run r = {m, o, B, T, s.heads, adt, s.stage};
    const float scale = (float)(1.0 / sqrt((double)D)); /* norm_factor = head_size ** -0.5 */
    const size_t BTC = (size_t)BT * C;
    void *q = s.qkv, *k = act_at(s.qkv, adt, BTC), *v = act_at(s.qkv, adt, 2 * BTC);

    /* When only each row's last `keep` positions' logits are wanted (sweeps: 1), the last
     * block needs keys and values of every position but nothing after them except at those
     * positions: there attention and the MLP run on B * keep rows instead of B * T (unless a
     * site of that layer must see every position). xq is then those rows' residual. */
    const int tail = keep && keep < T && !resume_layer_has_sites(o, c->n_layer - 1) ? c->n_layer - 1 : -1;
    void *xq = s.x;

    if (rs) CVENE_TRY(o16->convert(be, s.x, adt, rs->x, CVENE_F32, BTC)); /* f32 residual: copied or rounded */
    else CVENE_TRY(o16->embedding(be, adt, s.x, d_ids, zpos, p->embed_in, p->zero_row, B, T, C)); // (B, T, C)
    int ln1_ready = 0; /* s.ln already holds this block's ln_1 (fused into the last residual add) */
    for (int l = rs ? rs->layer : 0; l < c->n_layer; l++) {
        const neox_layer *L = &p->layers[l];
        const int Tq = l == tail ? keep : T, Mq = B * Tq; /* query rows of this block */
        CVENE_TRY(neox_site_btc(&r, CVENE_BLOCK_INPUT, CVENE_N_COMPONENTS, l, s.x));
        if (!ln1_ready) CVENE_TRY(o16->layernorm(be, adt, s.ln, s.x, L->ln_1_w, L->ln_1_b, BT, C, c->ln_eps));
        CVENE_TRY(neox_site_btc(&r, CVENE_ATTENTION_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        /* fused projection (B*T, H, 3, D), regrouped to (B*T, 3, H, D), then to (3, B*T, C):
         * q, k and v each contiguous (B, T, C) for their sites */
        CVENE_TRY(model_gemm(be, adt, wdt, s.qkv, s.ln, L->qkv_w, C, 1, L->qkv_b, BT, C, 3 * C, CVENE_ACT_NONE));
        CVENE_TRY(o16->permute_heads(be, adt, s.tmp, s.qkv, BT, H, 3, D, 1));
        CVENE_TRY(o16->permute_heads(be, adt, s.qkv, s.tmp, 1, BT, 3, C, 1));
        CVENE_TRY(o16->rotary(be, adt, q, C, d_pos, B, T, H, D, c->rot_dims, c->rot_base));
        CVENE_TRY(o16->rotary(be, adt, k, C, d_pos, B, T, H, D, c->rot_dims, c->rot_base));
        CVENE_TRY(neox_site_btc(&r, CVENE_QUERY_OUTPUT, CVENE_N_COMPONENTS, l, q));
        CVENE_TRY(neox_site_btc(&r, CVENE_KEY_OUTPUT, CVENE_N_COMPONENTS, l, k));
        CVENE_TRY(neox_site_btc(&r, CVENE_VALUE_OUTPUT, CVENE_N_COMPONENTS, l, v));
        CVENE_TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_QUERY_OUTPUT, l, q));
        CVENE_TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_KEY_OUTPUT, l, k));
        CVENE_TRY(neox_site_btc(&r, CVENE_N_COMPONENTS, CVENE_HEAD_VALUE_OUTPUT, l, v));
        const void *kk = k, *vv = v;
        size_t kv_bs = (size_t)Tk * C;
        if (s.kf) { /* resuming: cached prefix keys/values (already rotated), shared by every row, then ours */
            CVENE_TRY(resume_join_cache(be, adt, s.kf, rs->k_cache[l], k, B, past, T, C));
            CVENE_TRY(resume_join_cache(be, adt, s.vf, rs->v_cache[l], v, B, past, T, C));
            kk = s.kf, vv = s.vf;
        } else if (dc) { /* decoding: ours appended to each row's cache, which attention reads in place */
            CVENE_TRY(decode_append(be, adt, dc, l, B, T, C, k, v, &kk, &vv));
            kv_bs = (size_t)dc->cap * C;
        }
        /* the tail block's queries: each row's last Tq, read in place (batch stride T * C) */
        const void *qq = Tq == T ? q : act_at(q, adt, (size_t)(T - Tq) * C);
        CVENE_TRY(o16->attn_probs(be, adt, s.probs, qq, (size_t)T * C, kk, kv_bs, d_mask, B, Tq, Tk, H, D, scale));
        CVENE_TRY(neox_site_call(&r, CVENE_ATTENTION_WEIGHT, l, s.probs, 4, B, H, T, Tk));
        CVENE_TRY(o16->attn_apply(be, adt, s.att, s.probs, vv, kv_bs, B, Tq, Tk, H, D)); // (B, Tq, C)
        CVENE_TRY(neox_site_btc(&r, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_HEAD_ATTENTION_VALUE_OUTPUT, l, s.att));
        CVENE_TRY(model_gemm(be, adt, wdt, s.attn, s.att, L->dense_w, C, 1, L->dense_b, Mq, C, C, CVENE_ACT_NONE));
        CVENE_TRY(neox_site_btc(&r, CVENE_ATTENTION_OUTPUT, CVENE_N_COMPONENTS, l, s.attn));
        if (Tq != T) { /* from here on only the last rows: their residual in heads (unused: no sites) */
            xq = s.heads;
            CVENE_TRY(resume_gather_tail(be, xq, s.x, B, T, Tq, C, E));
        }
        /* sequential: h = x + a, then ln_2(h), fused (no site between: MLP_INPUT is ln_2's
         * output); parallel: ln_2 reads the block's input x, which attention left alone */
        if (!c->parallel)
            CVENE_TRY(o16->residual_layernorm(be, adt, xq, s.attn, s.ln, L->ln_2_w, L->ln_2_b, Mq, C, c->ln_eps));
        else
            CVENE_TRY(o16->layernorm(be, adt, s.ln, xq, L->ln_2_w, L->ln_2_b, Mq, C, c->ln_eps));
        CVENE_TRY(neox_site_btc(&r, CVENE_MLP_INPUT, CVENE_N_COMPONENTS, l, s.ln));
        /* dense_h_to_4h and its activation in one op (MLP_ACTIVATION is the activation's
         * output); Pythia's exact-erf gelu runs as GEMM then activation on every backend */
        CVENE_TRY(model_gemm(be, adt, wdt, s.fc, s.ln, L->fc_w, C, 1, L->fc_b, Mq, C, I, c->act)); // (B, Tq, I)
        CVENE_TRY(neox_site_call(&r, CVENE_MLP_ACTIVATION, l, s.fc, 3, B, T, I, 0));
        CVENE_TRY(model_gemm(be, adt, wdt, s.mlp, s.fc, L->proj_w, I, 1, L->proj_b, Mq, I, C, CVENE_ACT_NONE));
        CVENE_TRY(neox_site_btc(&r, CVENE_MLP_OUTPUT, CVENE_N_COMPONENTS, l, s.mlp));
        if (c->parallel) CVENE_TRY(o16->residual_add(be, adt, s.mlp, s.attn, (size_t)Mq * C)); // m + a, as transformers
        /* x + (m + a) (parallel) or h + m, with the next block's ln_1 fused in when no site
         * sits between (this block's BLOCK_OUTPUT, the next one's BLOCK_INPUT); after the
         * last block ln_f follows only when logits are wanted, below */
        ln1_ready = l + 1 < c->n_layer && xq == s.x && !neox_site_on(&r, CVENE_BLOCK_OUTPUT, l) &&
                    !neox_site_on(&r, CVENE_BLOCK_INPUT, l + 1);
        if (ln1_ready)
            CVENE_TRY(o16->residual_layernorm(be, adt, s.x, s.mlp, s.ln, p->layers[l + 1].ln_1_w,
                                              p->layers[l + 1].ln_1_b, BT, C, c->ln_eps));
        else
            CVENE_TRY(o16->residual_add(be, adt, xq, s.mlp, (size_t)Mq * C));
        CVENE_TRY(neox_site_btc(&r, CVENE_BLOCK_OUTPUT, CVENE_N_COMPONENTS, l, s.x));
    }
    /* a decoding call leaves its work queued: the caller's sampler reads the device logits */
    if (!logits_out) return out_dev ? CVENE_OK : op->sync(be);
    model_head_args h = {adt, s.x, xq, s.attn, s.ln, s.stage, p->ln_f_w, p->ln_f_b, c->ln_eps, p->embed_out, wdt, s.wsel,
                         cols, NV, B, T, C, V, row0, keep, dev_logits ? s.logits : NULL, logits_out};
    CVENE_TRY(model_head_logits(be, &h));
    return out_dev ? CVENE_OK : op->sync(be);
}
