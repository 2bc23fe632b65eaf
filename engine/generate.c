/* Generation (cvene_generate, docs/generation.md): a prompt forward that fills a per-row K/V
 * cache, then one forward per generated token reading it (models' decode, model_decode), the
 * next token chosen on the device (the backend's gen->sample). Interventions act through the
 * same request state as cvene_run (engine/run_internal.h): one state for the prompt call
 * (locations against the prompt's length) and one for the generated steps (against the step's
 * one position), sources run once before the prompt.
 *
 * Device buffers live in one allocation (gen_bufs); per call, the host only queues work, and
 * reads the B new ids back when it must (streaming, end-of-sequence ids) -- the one host
 * synchronisation per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/run_internal.h"
#include "kernels/tensor.h"

typedef struct {
    cvene_tensor_view t; /* data owned (host) */
    int call, rep;       /* the call it came from, the intervention */
} gen_collected;

struct cvene_generation {
    int32_t *ids;  /* (B, T0 + steps) */
    float *logits; /* (B, steps, V) or NULL */
    int B, T0, steps, V;
    cvene_ctx *ctx;     /* the device buffers' */
    void *dev_mem;      /* the generation's device allocation, kept for the device views */
    int32_t *dev_ids;   /* (max_new, B) in it: generated ids, step-major */
    float *dev_logits;  /* (max_new, B, V) in it with keep_logits, else NULL */
    /* CollectIntervention: one tensor per intervened call, grouped by intervention (config order)
     * then call, as pyvene's generate lists them */
    gen_collected *coll;
    int n_coll, cap_coll;
};

cvene_gen_params cvene_gen_default_params(void) {
    cvene_gen_params p;
    memset(&p, 0, sizeof p);
    p.max_new_tokens = 16;
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.pad_id = -1;
    p.first_call = p.last_call = -1;
    return p;
}

void cvene_generation_free(cvene_generation *g) {
    if (!g) return;
    if (g->dev_mem) g->ctx->be->ops->free(g->ctx->be, g->dev_mem);
    for (int k = 0; k < g->n_coll; k++) free(g->coll[k].t.data);
    free(g->coll);
    free(g->ids), free(g->logits), free(g);
}
int cvene_generation_n_collected(const cvene_generation *g) { return g->n_coll; }
cvene_tensor_view cvene_generation_collected(const cvene_generation *g, int k, int *call) {
    cvene_tensor_view v;
    memset(&v, 0, sizeof v);
    if (k < 0 || k >= g->n_coll) return v;
    if (call) *call = g->coll[k].call;
    return g->coll[k].t;
}
cvene_tensor_view cvene_generation_device_ids(const cvene_generation *g) {
    cvene_tensor_view v;
    memset(&v, 0, sizeof v);
    if (!g->dev_ids) return v;
    const int64_t shape[2] = {g->steps, g->B};
    return cvene_tensor_make(g->dev_ids, CVENE_I32, g->ctx->be->device, 2, shape);
}
cvene_tensor_view cvene_generation_device_logits(const cvene_generation *g) {
    cvene_tensor_view v;
    memset(&v, 0, sizeof v);
    if (!g->dev_logits) return v;
    const int64_t shape[3] = {g->steps, g->B, g->V};
    return cvene_tensor_make(g->dev_logits, CVENE_F32, g->ctx->be->device, 3, shape);
}
const int32_t *cvene_generation_ids(const cvene_generation *g, int *B, int *T) {
    if (B) *B = g->B;
    if (T) *T = g->T0 + g->steps;
    return g->ids;
}
int cvene_generation_steps(const cvene_generation *g) { return g->steps; }
int cvene_generation_prompt_len(const cvene_generation *g) { return g->T0; }
const float *cvene_generation_logits(const cvene_generation *g, int *B, int *steps, int *V) {
    if (B) *B = g->B;
    if (steps) *steps = g->steps;
    if (V) *V = g->V;
    return g->logits;
}

/* ---- device buffers -------------------------------------------------------- */

typedef struct {
    void *mem;
    void *k, *v;                 // (L, B, cap, C) each, activation dtype
    int32_t *prompt;             // (B, T0) prompt ids
    int32_t *pos_tab, *mask_tab; // (B, cap) position ids and key mask of every position
    int32_t *pos, *mask;         // (B, T0) / (B, cap): a call's positions and keys, contiguous
    int32_t *zeros;              // (B, T0) zeros (model_decode.zeros)
    int32_t *gen;                // (max_new, B) generated ids, step-major: step j's are the next call's input
    int32_t *done, *stop;        // (B) ended rows, (n_eos) end-of-sequence ids
    float *logits;               // (n_logits, B, V): every step's (keep_logits) or one
    float *scratch;              // (B, V) the sampler's
} gen_bufs;

static void carve(cvene_arena *a, gen_bufs *g, const cvene_model_info *mi, size_t E, int B, int T0, int cap,
                  int max_new, int n_eos, int n_logits) {
    const size_t kv = (size_t)mi->n_layer * B * cap * mi->n_embd * E, V = (size_t)mi->vocab_size;
    g->k = cvene_arena_take(a, kv);
    g->v = cvene_arena_take(a, kv);
    g->prompt = cvene_arena_take(a, (size_t)B * T0 * 4);
    g->pos_tab = cvene_arena_take(a, (size_t)B * cap * 4);
    g->mask_tab = cvene_arena_take(a, (size_t)B * cap * 4);
    g->pos = cvene_arena_take(a, (size_t)B * T0 * 4);
    g->mask = cvene_arena_take(a, (size_t)B * cap * 4);
    g->zeros = cvene_arena_take(a, (size_t)B * T0 * 4);
    g->gen = cvene_arena_take(a, (size_t)max_new * B * 4);
    g->done = cvene_arena_take(a, (size_t)B * 4);
    g->stop = cvene_arena_take(a, (size_t)(n_eos > 0 ? n_eos : 1) * 4);
    g->logits = cvene_arena_take(a, (size_t)n_logits * B * V * 4);
    g->scratch = cvene_arena_take(a, (size_t)B * V * 4);
}

/* ---- checking --------------------------------------------------------------- */

static cvene_status check_params(cvene_model *m, const cvene_gen_params *p, const iv_input *base) {
    cvene_ctx *ctx = m->ctx;
    const cvene_model_info mi = cvene_model_get_info(m);
    if (p->max_new_tokens < 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "max_new_tokens = %d must be >= 1", p->max_new_tokens);
    if (p->do_sample) {
        if (!(p->temperature > 0.0f && p->temperature < 3.0e38f))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "temperature = %g must be > 0 (and finite)",
                              (double)p->temperature);
        if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "top_p = %g is outside (0, 1]", (double)p->top_p);
        if (p->top_k < 0) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "top_k = %d must be >= 0", p->top_k);
    }
    if (p->n_eos < 0 || (p->n_eos > 0 && !p->eos_ids))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "eos_ids: %d ids but no array", p->n_eos);
    for (int k = 0; k < p->n_eos; k++)
        if (p->eos_ids[k] < 0 || p->eos_ids[k] >= mi.vocab_size)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "eos_ids[%d] = %d is outside the vocabulary [0, %d)", k,
                              p->eos_ids[k], mi.vocab_size);
    if (p->pad_id < -1 || p->pad_id >= mi.vocab_size)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "pad_id = %d is outside the vocabulary [0, %d) (or -1: the "
                          "first eos id)", p->pad_id, mi.vocab_size);
    if (p->first_call < -1 || p->last_call < -1 || (p->last_call >= 0 && p->first_call > p->last_call))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "first_call = %d and last_call = %d do not make a range of "
                          "calls (-1: no bound)", p->first_call, p->last_call);
    if (!base->present || base->B < 1 || base->T < 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "generation needs a base prompt (the request's base)");
    for (int b = 0; b < base->B; b++) {
        int real = 0;
        for (int t = 0; t < base->T; t++) {
            const int32_t id = base->ids[(size_t)b * base->T + t], mk = base->mask ? base->mask[(size_t)b * base->T + t] : 1;
            if (id < 0 || id >= mi.n_token_ids)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "base.input_ids[%d][%d] = %d is outside the vocabulary "
                                  "[0, %d)", b, t, id, mi.n_token_ids);
            if (mk != 0 && mk != 1)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "base.attention_mask[%d][%d] = %d must be 0 or 1", b, t,
                                  mk);
            if (mk == 0 && real)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "base.attention_mask[%d][%d] = 0 after a token: pad "
                                  "prompts on the left for generation (as transformers asks of decoder-only models)",
                                  b, t);
            real += mk;
        }
        if (!real)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "base row %d is all padding: a prompt needs a token", b);
    }
    return CVENE_OK;
}

/* Position ids of every position a call may read, per row: the prompt's (the base's own, or
 * transformers' cumsum(mask) - 1 with 1 at padding), then one more per generated token. */
static cvene_status position_table(cvene_model *m, const iv_input *base, int cap, int32_t *pos, int32_t *mask) {
    const cvene_model_info mi = cvene_model_get_info(m);
    const int T0 = base->T, limit = model_position_limit(m);
    for (int b = 0; b < base->B; b++) {
        int cum = 0;
        for (int t = 0; t < T0; t++) {
            const size_t q = (size_t)b * T0 + t;
            const int mk = base->mask ? base->mask[q] : 1;
            cum += mk;
            pos[(size_t)b * cap + t] = base->pos ? base->pos[q] : mk ? cum - 1 : 1;
            mask[(size_t)b * cap + t] = mk;
        }
        const int64_t last = pos[(size_t)b * cap + T0 - 1];
        if (last + (cap - T0) >= limit)
            return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG,
                              "base row %d: its prompt ends at position %lld, so %d more tokens would reach position "
                              "%lld, beyond the model's %d (%s): ask for fewer new tokens (max_new_tokens) or a "
                              "shorter prompt", b, (long long)last, cap - T0 + 1, (long long)(last + cap - T0),
                              limit, mi.arch == CVENE_ARCH_GPT2 ? "n_positions" : "positions exact in f32");
        for (int t = T0; t < cap; t++) {
            pos[(size_t)b * cap + t] = (int32_t)(last + t - T0 + 1);
            mask[(size_t)b * cap + t] = 1;
        }
    }
    return CVENE_OK;
}

/* ---- interventions ------------------------------------------------------------ */

/* The calls of one phase: the prompt's (locations against its length) or the generated steps'
 * (against one position). */
typedef struct {
    int on;
    run_state s;
    const iv_input **src; /* each group's source (owned by s) */
    int *setters, n_setters; /* the interventions acting on the base's calls */
    block blk;            /* the base block of a call */
} gen_phase;

typedef struct {
    gen_phase ph[2];    /* [0] the prompt call, [1] the generated steps */
    iv_input step_in;   /* the (B, 1) input a step's block stands for */
    int first, last;    /* calls acted on: [first, last], last -1 = to the end */
} gen_iv;

static void gen_iv_close(gen_iv *g) {
    for (int k = 0; k < 2; k++) {
        cvene_result_free(g->ph[k].s.res);
        g->ph[k].s.res = NULL;
        iv_state_close(&g->ph[k].s, g->ph[k].src);
        free(g->ph[k].setters);
    }
}

/* Open the states the calls need, run the sources once, and share their stores. */
static cvene_status gen_iv_open(gen_iv *g, cvene_model *m, const cvene_config *c, const cvene_request *r,
                                const cvene_gen_params *p) {
    cvene_ctx *ctx = m->ctx;
    memset(g, 0, sizeof *g);
    if (r->output_original)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "output_original_output: generate without a config for the "
                          "original continuation (cvene generate prints both with --original)");
    /* pyvene's rule (IntervenableModel.generate and its setter hook) */
    const int located = r->locations != NULL;
    g->ph[0].on = p->intervene_on_prompt;
    g->ph[1].on = !p->intervene_on_prompt || !located;
    g->first = p->first_call < 0 ? 0 : p->first_call;
    g->last = p->last_call;
    if (g->first > 0) g->ph[0].on = 0;
    if (g->last == 0) g->ph[1].on = 0;
    cJSON *base0 = NULL; /* pyvene's stand-in without locations: {"base": 0} */
    const cJSON *step_locs = r->locations;
    if (!p->intervene_on_prompt && !located) {
        base0 = cJSON_CreateObject();
        if (!base0 || !cJSON_AddNumberToObject(base0, "base", 0)) {
            cJSON_Delete(base0);
            return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        }
        step_locs = base0;
    }
    cvene_status st = CVENE_OK;
    for (int k = 0; k < 2 && st == CVENE_OK; k++) {
        gen_phase *ph = &g->ph[k];
        if (!ph->on) continue;
        st = iv_state_open(&ph->s, m, c, r, k ? step_locs : r->locations, k ? 1 : r->base.T, 0, &ph->src);
        if (st != CVENE_OK && k == 1) {
            char msg[CVENE_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", cvene_ctx_error(ctx));
            st = cvene_fail(ctx, st, "at the generated steps (each call reads one new position per row, so "
                            "unit_locations there index that one position, as in pyvene's generate with "
                            "intervene_on_prompt false): %s", msg);
        }
        if (st == CVENE_OK && !(ph->setters = malloc(sizeof(int) * (size_t)(c->n + 1))))
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    cJSON_Delete(base0);
    CVENE_TRY(st);
    /* sources once (serial: the chain, each source with the previous group's interventions); the
     * other state takes copies of the stores (the same source units) and only the base's list */
    const int first = g->ph[0].on ? 0 : 1, serial = c->mode == CVENE_MODE_SERIAL;
    for (int k = 0; k < 2; k++) {
        gen_phase *ph = &g->ph[k];
        if (!ph->on) continue;
        if (k == first)
            /* pyvene's gate counts each intervention's calls from the chain on: with
             * intervene_on_prompt false and locations given, a chained group's only call (in the
             * next source's forward) is its skipped first, so the chain runs unpatched */
            CVENE_TRY(serial ? iv_run_serial_sources(&ph->s, ph->src, p->intervene_on_prompt || !located, ph->setters,
                                                     &ph->n_setters)
                             : iv_run_sources(&ph->s, ph->src));
        if (!serial) ph->n_setters = iv_base_setters(&ph->s, ph->src, ph->setters);
        else if (k != first) ph->n_setters = iv_serial_base_setters(&ph->s, ph->src, ph->setters);
    }
    if (g->ph[0].on && g->ph[1].on) {
        cvene_backend *be = ctx->be;
        for (int i = 0; i < c->n; i++) {
            const iv_slot *a = &g->ph[0].s.iv[i], *b = &g->ph[1].s.iv[i];
            if (!a->store || !b->store) continue;
            if (a->store_len != b->store_len) /* prepare's size checks make this unreachable */
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "intervention %d: its source units differ between the "
                                  "prompt and the generated steps", i);
            CVENE_TRY(be->ops->copy(be, b->store, a->store, sizeof(float) * (size_t)a->store_len));
        }
    }
    g->step_in = (iv_input){NULL, NULL, NULL, r->base.B, 1, 1};
    for (int k = 0; k < 2; k++)
        g->ph[k].blk = (block){ROLE_BASE, -1, k ? &g->step_in : &r->base, 0, g->ph[k].setters, g->ph[k].n_setters,
                               NULL, 0};
    return CVENE_OK;
}

/* The run options of call j: its state's sites, or none. */
static run_state *gen_iv_call(gen_iv *g, int j, cvene_run_opts *o) {
    memset(o, 0, sizeof *o);
    gen_phase *ph = &g->ph[j > 0];
    if (!ph->on || j < g->first || (g->last >= 0 && j > g->last)) return NULL;
    iv_pass_begin(&ph->s, &ph->blk, 1, ph->blk.in->T, 1, o);
    return &ph->s;
}

/* Call j's CollectIntervention results (state s), appended to the generation's list. */
static cvene_status gen_collect(cvene_generation *res, run_state *s, int j) {
    cvene_backend *be = s->ctx->be;
    for (int i = 0; i < s->c->n; i++) {
        if (s->iv[i].collect_slot < 0) continue;
        const cvene_tensor_view *t = &s->res->collected[s->iv[i].collect_slot];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        if (res->n_coll == res->cap_coll) {
            const int cap = res->cap_coll ? 2 * res->cap_coll : 16;
            gen_collected *grown = realloc(res->coll, sizeof *grown * (size_t)cap);
            if (!grown) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
            res->coll = grown, res->cap_coll = cap;
        }
        gen_collected *e = &res->coll[res->n_coll];
        *e = (gen_collected){*t, j, i};
        if (!(e->t.data = malloc(sizeof(float) * n))) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
        res->n_coll++;
        /* the pass wrote its device buffer (on the CPU: the result's own host array) */
        if (be->device == CVENE_DEVICE_CPU) memcpy(e->t.data, t->data, sizeof(float) * n);
        else CVENE_TRY(be->ops->to_host(be, e->t.data, s->iv[i].coll, sizeof(float) * n));
    }
    return CVENE_OK;
}

/* Stable order: by intervention, then call (insertion order is by call). */
static void sort_collected(cvene_generation *g) {
    for (int a = 1; a < g->n_coll; a++)
        for (int b = a; b > 0 && g->coll[b - 1].rep > g->coll[b].rep; b--) {
            const gen_collected e = g->coll[b];
            g->coll[b] = g->coll[b - 1], g->coll[b - 1] = e;
        }
}

/* ---- the loop ------------------------------------------------------------------- */

static cvene_status fetch_ids(cvene_backend *be, int32_t *host, const int32_t *dev, size_t n) {
    return be->ops->to_host(be, host, dev, n * sizeof(int32_t));
}

cvene_status cvene_generate(cvene_model *m, const cvene_config *c, const cvene_request *r, const cvene_gen_params *p,
                            cvene_generation **out) {
    if (!out) return CVENE_ERR_INVALID_ARG;
    *out = NULL;
    if (!m || !r || !p) return CVENE_ERR_INVALID_ARG;
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    if (!m->vt->decode)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "generation: the %s architecture cannot decode (GPT-2 and "
                          "GPT-NeoX can)", m->vt->name);
    const iv_input *base = &r->base;
    CVENE_TRY(check_params(m, p, base));
    const cvene_model_info mi = cvene_model_get_info(m);
    const int B = base->B, T0 = base->T, V = mi.vocab_size, max_new = p->max_new_tokens;
    const int cap = T0 + max_new - 1; /* the last token is never read back */
    const int n_logits = p->keep_logits ? max_new : 1;
    const size_t E = cvene_dtype_size(ctx->params.activation_dtype);
    const int32_t pad = p->pad_id >= 0 ? p->pad_id : p->n_eos > 0 ? p->eos_ids[0] : 0;

    cvene_generation *res = calloc(1, sizeof *res);
    int32_t *hpos = malloc(sizeof(int32_t) * (size_t)B * cap), *hmask = malloc(sizeof(int32_t) * (size_t)B * cap);
    int32_t *hgen = malloc(sizeof(int32_t) * (size_t)max_new * B);
    int32_t *hzero = calloc((size_t)B * T0, sizeof(int32_t)); /* the done flags' and model_decode.zeros' start */
    gen_bufs d;
    memset(&d, 0, sizeof d);
    gen_iv iv;
    memset(&iv, 0, sizeof iv);
    int32_t *hdone = calloc((size_t)B, sizeof(int32_t));
    cvene_status st = res && hpos && hmask && hgen && hzero && hdone ? CVENE_OK
                                                                     : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = position_table(m, base, cap, hpos, hmask);
    cvene_arena a = {NULL, 0, 0};
    carve(&a, &d, &mi, E, B, T0, cap, max_new, p->n_eos, n_logits);
    if (st == CVENE_OK) {
        st = be->ops->alloc(be, &d.mem, a.used);
        if (st != CVENE_OK)
            st = cvene_fail(ctx, st, "generation: cannot allocate %.1f MiB on the %s device for the key/value cache "
                            "and buffers (batch %d, %d positions)", (double)a.used / 1048576.0, be->ops->name, B, cap);
    }
    if (st == CVENE_OK) {
        a = (cvene_arena){d.mem, 0, a.used};
        carve(&a, &d, &mi, E, B, T0, cap, max_new, p->n_eos, n_logits);
        st = be->ops->to_device(be, d.prompt, base->ids, (size_t)B * T0 * 4);
    }
    if (st == CVENE_OK) st = be->ops->to_device(be, d.pos_tab, hpos, (size_t)B * cap * 4);
    if (st == CVENE_OK) st = be->ops->to_device(be, d.mask_tab, hmask, (size_t)B * cap * 4);
    if (st == CVENE_OK) st = be->ops->to_device(be, d.done, hzero, (size_t)B * 4);
    if (st == CVENE_OK) st = be->ops->to_device(be, d.zeros, hzero, (size_t)B * T0 * 4);
    if (st == CVENE_OK && p->n_eos) st = be->ops->to_device(be, d.stop, p->eos_ids, (size_t)p->n_eos * 4);
    if (st == CVENE_OK && c) st = gen_iv_open(&iv, m, c, r, p);

    const cvene_sample_params sp = {!p->do_sample, p->temperature, p->top_k, p->top_p, p->seed};
    const int watch = p->on_token || p->n_eos > 0; /* the host reads each step's ids */
    int steps = 0;
    for (int j = 0; j < max_new && st == CVENE_OK; j++) {
        const int T = j ? 1 : T0, past = j ? T0 + j - 1 : 0, Tk = past + T;
        const size_t row = (size_t)cap * 4;
        /* this call's positions (B, T) and key mask (B, Tk), contiguous, from the tables */
        st = be->ops->gen->copy2d(be, d.pos, (size_t)T * 4, (char *)d.pos_tab + (size_t)past * 4, row, (size_t)T * 4,
                                  (size_t)B);
        if (st == CVENE_OK)
            st = be->ops->gen->copy2d(be, d.mask, (size_t)Tk * 4, d.mask_tab, row, (size_t)Tk * 4, (size_t)B);
        float *logits = d.logits + (p->keep_logits ? (size_t)j * B * V : 0);
        model_decode dc = {d.k, d.v, cap, past, j ? d.gen + (size_t)(j - 1) * B : d.prompt, d.pos, d.mask, d.zeros,
                           logits};
        cvene_run_opts o;
        run_state *s = c ? gen_iv_call(&iv, j, &o) : NULL;
        if (!s) memset(&o, 0, sizeof o);
        if (st == CVENE_OK) {
            st = m->vt->decode(m, &dc, B, T, &o);
            if (s) st = iv_pass_end(s, st);
            if (s && st == CVENE_OK) st = gen_collect(res, s, j);
        }
        if (st == CVENE_OK)
            st = be->ops->gen->sample(be, d.gen + (size_t)j * B, d.done, logits, V, B, V, d.scratch, &sp,
                                      (uint64_t)j, d.stop, p->n_eos, pad);
        if (st != CVENE_OK) break;
        steps = j + 1;
        if (!watch) continue;
        if ((st = fetch_ids(be, hgen + (size_t)j * B, d.gen + (size_t)j * B, (size_t)B)) != CVENE_OK) break;
        int all_done = 1;
        for (int b = 0; b < B; b++) {
            for (int k = 0; k < p->n_eos && !hdone[b]; k++) hdone[b] = hgen[(size_t)j * B + b] == p->eos_ids[k];
            all_done &= hdone[b] != 0;
        }
        if (p->on_token && p->on_token(p->user, j, hgen + (size_t)j * B, B)) break;
        if (p->n_eos > 0 && all_done) break;
    }
    if (st == CVENE_OK) st = fetch_ids(be, hgen, d.gen, (size_t)steps * B);
    if (st == CVENE_OK) st = be->ops->sync(be);
    if (st == CVENE_OK) {
        sort_collected(res);
        res->B = B, res->T0 = T0, res->steps = steps, res->V = V;
        res->ids = malloc(sizeof(int32_t) * (size_t)B * (T0 + steps));
        if (p->keep_logits) res->logits = malloc(sizeof(float) * (size_t)B * steps * V);
        if (!res->ids || (p->keep_logits && !res->logits)) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    if (st == CVENE_OK) {
        for (int b = 0; b < B; b++) {
            memcpy(res->ids + (size_t)b * (T0 + steps), base->ids + (size_t)b * T0, sizeof(int32_t) * (size_t)T0);
            for (int j = 0; j < steps; j++) res->ids[(size_t)b * (T0 + steps) + T0 + j] = hgen[(size_t)j * B + b];
        }
        /* (steps, B, V) on the device -> (B, steps, V), transformers' stacking of output_logits */
        for (int j = 0; p->keep_logits && j < steps && st == CVENE_OK; j++)
            for (int b = 0; b < B && st == CVENE_OK; b++)
                st = be->ops->to_host(be, res->logits + ((size_t)b * steps + j) * V,
                                      d.logits + ((size_t)j * B + b) * V, sizeof(float) * (size_t)V);
    }
    if (c) gen_iv_close(&iv);
    if (st == CVENE_OK) { /* the device buffers stay with the result (its device views) */
        res->ctx = ctx, res->dev_mem = d.mem, res->dev_ids = d.gen;
        res->dev_logits = p->keep_logits ? d.logits : NULL;
    } else if (d.mem) {
        be->ops->free(be, d.mem);
    }
    free(hpos), free(hmask), free(hgen), free(hzero), free(hdone);
    if (st != CVENE_OK) {
        cvene_generation_free(res);
        return st;
    }
    *out = res;
    return CVENE_OK;
}
