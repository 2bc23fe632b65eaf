/* Sweeps: activation patching and causal tracing over layers x positions.
 *
 * A patch at (layer l, position p) of a causal model leaves every activation
 * below l, and every position before p, as in the unpatched base run. So the
 * fast path runs the source and the base once, caching the source's patched
 * component, the base's residual stream entering each layer and its keys and
 * values; then, for a batch of positions of one layer, it resumes the forward
 * at l (at l + 1 for block_output) for positions >= the batch's smallest p only,
 * attending to the cached keys/values of earlier positions, and computes logits
 * for the last position only. The naive path runs one full forward per site. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ctx.h"
#include "engine/numpy_random.h"
#include "models/model.h"

cvene_sweep_params cvene_sweep_default_params(void) {
    cvene_sweep_params p;
    memset(&p, 0, sizeof p);
    p.component = CVENE_BLOCK_OUTPUT;
    p.metric = CVENE_METRIC_PROB;
    p.window = 1;
    p.n_samples = 10;
    return p;
}

typedef struct {
    cvene_model *m;
    const cvene_sweep_params *p;
    cvene_component phys;  /* site that holds the component */
    int off, len;          /* the patched slice of each position's vector */
    int D;                 /* width of the site's stream */
    int T, L, C, V;
    float *src;            /* (L, T, D) source component */
    float *resid;          /* (L + 1, T, C) base residual entering each layer (+ final) */
    float *kc, *vc;        /* (L, T, C) base keys / values */
    float **kp, **vp;      /* per-layer pointers into kc / vc */
    float *src_logits;     /* (V) source logits, last position */
    double *src_logp;      /* (V) log-softmax of the source (KL) */
    const double *noise;   /* (n_subject, C) noise of the current sample, or NULL */
    /* the patch of the current forward */
    int lo, hi;            /* window [lo, hi) */
    const int *pos;        /* per row: patched position */
    int past;              /* first position the forward computes */
    int caching;           /* 1: the base run, filling resid/kc/vc; 2: the source run, filling src */
    int add_noise;         /* add the sample's noise at block_input(0) */
    int patching;          /* patch phys at window layers */
} sweep_state;

static int window_lo(int l, int w) { return l - w / 2 < 0 ? 0 : l - w / 2; }
static int window_hi(int l, int w, int L) { return l + (w + 1) / 2 > L ? L : l + (w + 1) / 2; }

/* Sites of the base run (caching, noise) and of patched forwards. */
static int on_site(void *user, cvene_component comp, int layer, cvene_tensor_view *t) {
    sweep_state *s = user;
    float *x = t->data;
    int rows = (int)t->shape[0], Tq = (int)t->shape[1], W = (int)t->shape[2];
    if (comp == CVENE_BLOCK_INPUT && layer == 0 && s->add_noise && s->noise) {
        /* as ROME: float64 noise added to the float32 embeddings */
        const cvene_sweep_params *p = s->p;
        for (int b = 0; b < rows; b++)
            for (int k = 0; k < p->n_subject; k++)
                for (int c = 0; c < W; c++) {
                    float *e = &x[((size_t)b * Tq + p->subject[k]) * W + c];
                    *e = (float)((double)*e + s->noise[(size_t)k * W + c]);
                }
    }
    if (s->caching == 2) {
        if (comp == s->phys) memcpy(s->src + (size_t)layer * s->T * s->D, x, sizeof(float) * (size_t)s->T * s->D);
        return 0;
    }
    if (s->caching) {
        size_t n = (size_t)s->T * s->C;
        if (comp == CVENE_BLOCK_INPUT) memcpy(s->resid + (size_t)layer * n, x, n * sizeof(float));
        if (comp == CVENE_BLOCK_OUTPUT && layer == s->L - 1) memcpy(s->resid + (size_t)s->L * n, x, n * sizeof(float));
        if (comp == CVENE_KEY_OUTPUT) memcpy(s->kc + (size_t)layer * n, x, n * sizeof(float));
        if (comp == CVENE_VALUE_OUTPUT) memcpy(s->vc + (size_t)layer * n, x, n * sizeof(float));
        return 0;
    }
    if (s->patching && comp == s->phys && layer >= s->lo && layer < s->hi)
        for (int b = 0; b < rows; b++) {
            int q = s->pos[b] - s->past;
            memcpy(x + ((size_t)b * Tq + q) * W + s->off,
                   s->src + ((size_t)layer * s->T + s->pos[b]) * s->D + s->off, sizeof(float) * (size_t)s->len);
        }
    return 0;
}

static double metric(const sweep_state *s, const float *logits) {
    const cvene_sweep_params *p = s->p;
    int V = s->V;
    if (p->metric == CVENE_METRIC_LOGIT_DIFF) return (double)logits[p->token] - logits[p->token_b];
    double mx = -INFINITY, z = 0;
    for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
    double lz = mx + log(z);
    if (p->metric == CVENE_METRIC_PROB) return exp(logits[p->token] - lz);
    double kl = 0; /* KL(source || patched) */
    for (int v = 0; v < V; v++) kl += exp(s->src_logp[v]) * (s->src_logp[v] - (logits[v] - lz));
    return kl;
}

static cvene_status check_params(cvene_ctx *ctx, const cvene_model_info *mi, const cvene_sweep_params *p, int T,
                                 const int32_t *base, const int32_t *src) {
    if (T <= 0 || T > mi->n_positions)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: prompt length %d must be in [1, %d]", T, mi->n_positions);
    for (int t = 0; t < T; t++)
        if ((!p->trace && (base[t] < 0 || base[t] >= mi->vocab_size)) || src[t] < 0 || src[t] >= mi->vocab_size)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: token id at position %d is outside the vocabulary [0, %d)",
                              t, mi->vocab_size);
    switch (p->component) {
    case CVENE_BLOCK_OUTPUT: case CVENE_BLOCK_INPUT: case CVENE_ATTENTION_OUTPUT: case CVENE_MLP_OUTPUT:
    case CVENE_MLP_ACTIVATION: case CVENE_ATTENTION_VALUE_OUTPUT: case CVENE_HEAD_ATTENTION_VALUE_OUTPUT:
        break;
    default:
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "sweep: component %s is not supported (block_output, block_input, attention_output, "
                          "mlp_output, mlp_activation, attention_value_output, head_attention_value_output)",
                          cvene_component_name(p->component));
    }
    if (p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && (p->head < 0 || p->head >= mi->n_head))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: head %d is out of range [0, %d)", p->head, mi->n_head);
    if (p->metric < CVENE_METRIC_LOGIT_DIFF || p->metric > CVENE_METRIC_KL)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: unknown metric %d", (int)p->metric);
    if (p->metric != CVENE_METRIC_KL && (p->token < 0 || p->token >= mi->vocab_size))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: metric token %d is outside the vocabulary [0, %d)",
                          p->token, mi->vocab_size);
    if (p->metric == CVENE_METRIC_LOGIT_DIFF && (p->token_b < 0 || p->token_b >= mi->vocab_size))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: second metric token %d is outside the vocabulary [0, %d)",
                          p->token_b, mi->vocab_size);
    if (p->window < 1 || p->window > mi->n_layer)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: window %d must be in [1, %d]", p->window, mi->n_layer);
    for (int i = 0; p->layers && i < p->n_layers; i++)
        if (p->layers[i] < 0 || p->layers[i] >= mi->n_layer)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: layer %d is out of range [0, %d)", p->layers[i],
                              mi->n_layer);
    for (int i = 0; p->positions && i < p->n_positions; i++)
        if (p->positions[i] < 0 || p->positions[i] >= T)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: position %d is out of range [0, %d)", p->positions[i], T);
    if ((p->layers && p->n_layers <= 0) || (p->positions && p->n_positions <= 0))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: empty layer or position list");
    if (p->trace) {
        if (!p->subject || p->n_subject <= 0)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: causal tracing needs the subject positions");
        for (int k = 0; k < p->n_subject; k++)
            if (p->subject[k] < 0 || p->subject[k] >= T)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: subject position %d is out of range [0, %d)",
                                  p->subject[k], T);
        if (p->n_samples < 1) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: n_samples must be >= 1");
        if (!(p->noise_scale >= 0) || !isfinite(p->noise_scale))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: noise_scale must be a finite number >= 0");
    }
    return CVENE_OK;
}

/* ROME's noise level: the standard deviation of the token-embedding entries. */
static cvene_status embedding_std(cvene_model *m, double *std) {
    int V = 0, C = 0;
    const float *wte = m->vt->token_embeddings ? m->vt->token_embeddings(m, &V, &C) : NULL;
    if (!wte) return cvene_fail(m->ctx, CVENE_ERR_UNSUPPORTED, "sweep: this model exposes no token embeddings; give noise_scale");
    double s1 = 0, s2 = 0;
    size_t n = (size_t)V * C;
    for (size_t i = 0; i < n; i++) s1 += wte[i];
    double mean = s1 / (double)n;
    for (size_t i = 0; i < n; i++) s2 += (wte[i] - mean) * (wte[i] - mean);
    *std = sqrt(s2 / (double)(n > 1 ? n - 1 : 1)); /* torch.std is unbiased */
    return CVENE_OK;
}

static void softmax_log(const float *logits, int V, double *out) {
    double mx = -INFINITY, z = 0;
    for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
    for (int v = 0; v < V; v++) out[v] = logits[v] - mx - log(z);
}

/* One forward with the current state's callbacks; logits (rows, V) of the last position. */
static cvene_status full_forward(sweep_state *s, const int32_t *ids, int rows, float *logits_full, float *last,
                                 const uint64_t *sites) {
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    memcpy(o.sites, sites, sizeof o.sites);
    o.site_fn = on_site;
    o.site_user = s;
    o.logits = logits_full;
    CVENE_TRY(cvene_forward(s->m, ids, rows, s->T, &o));
    for (int b = 0; b < rows; b++)
        memcpy(last + (size_t)b * s->V, logits_full + ((size_t)b * s->T + s->T - 1) * s->V, sizeof(float) * (size_t)s->V);
    return CVENE_OK;
}

typedef struct { int pos, idx; } pos_idx;
static int pos_cmp(const void *a, const void *b) { return ((const pos_idx *)a)->pos - ((const pos_idx *)b)->pos; }

cvene_status cvene_sweep(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                         const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary) {
    if (!m || !p || !scores || !source_ids || (!p->trace && !base_ids))
        return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "sweep: NULL argument");
    cvene_ctx *ctx = m->ctx;
    if (ctx->be->device != CVENE_DEVICE_CPU)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "sweep: runs on the CPU backend for now");
    cvene_model_info mi = cvene_model_get_info(m);
    CVENE_TRY(check_params(ctx, &mi, p, T, base_ids, source_ids));
    const int L = mi.n_layer, C = mi.n_embd, V = mi.vocab_size;
    const int nl = p->layers ? p->n_layers : L, np = p->positions ? p->n_positions : T;
    const int n_samples = p->trace ? p->n_samples : 1;
    const int head = p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT;

    sweep_state s;
    memset(&s, 0, sizeof s);
    s.m = m, s.p = p, s.T = T, s.L = L, s.C = C, s.V = V;
    s.phys = head ? CVENE_ATTENTION_VALUE_OUTPUT : p->component;
    s.D = p->component == CVENE_MLP_ACTIVATION ? mi.n_inner : C;
    s.off = head ? p->head * (C / mi.n_head) : 0;
    s.len = head ? C / mi.n_head : s.D;
    int max_batch = p->max_batch > 0 ? p->max_batch : 32;
    if (max_batch > np) max_batch = np;
    size_t TC = (size_t)T * C;
    s.src = malloc(sizeof(float) * (size_t)L * T * s.D);
    s.resid = malloc(sizeof(float) * (L + 1) * TC);
    s.kc = malloc(sizeof(float) * L * TC);
    s.vc = malloc(sizeof(float) * L * TC);
    s.kp = malloc(sizeof(float *) * (size_t)L);
    s.vp = malloc(sizeof(float *) * (size_t)L);
    s.src_logp = malloc(sizeof(double) * (size_t)V);
    double *noise = p->trace ? malloc(sizeof(double) * (size_t)p->n_subject * C) : NULL;
    float *logits_full = malloc(sizeof(float) * (size_t)max_batch * T * V);
    float *last = malloc(sizeof(float) * (size_t)max_batch * V);
    float *x = malloc(sizeof(float) * (size_t)max_batch * TC);
    int *row_pos = malloc(sizeof(int) * (size_t)max_batch);
    int32_t *ids_rep = malloc(sizeof(int32_t) * (size_t)max_batch * T);
    pos_idx *order = malloc(sizeof(pos_idx) * (size_t)np);
    double *acc = calloc((size_t)nl * np, sizeof(double));
    cvene_status st = CVENE_OK;
    if (!s.src || !s.resid || !s.kc || !s.vc || !s.kp || !s.vp || !s.src_logp || (p->trace && !noise) || !logits_full ||
        !last || !x || !row_pos || !ids_rep || !order || !acc)
        st = cvene_fail(ctx, CVENE_ERR_OOM, "sweep: out of memory for caches (T=%d, %d layers)", T, L);
    for (int l = 0; st == CVENE_OK && l < L; l++) s.kp[l] = s.kc + l * TC, s.vp[l] = s.vc + l * TC;
    for (int k = 0; st == CVENE_OK && k < np; k++) order[k] = (pos_idx){p->positions ? p->positions[k] : k, k};
    if (st == CVENE_OK) qsort(order, (size_t)np, sizeof *order, pos_cmp);
    s.pos = row_pos;
    int64_t forwards = 0, done = 0, total = (int64_t)n_samples * nl * np;
    double base_score = 0, source_score = 0;
    uint64_t sites[CVENE_N_COMPONENTS];

    /* the source run: its component at every layer, and its last-position logits */
    if (st == CVENE_OK) {
        memset(sites, 0, sizeof sites);
        sites[s.phys] = L >= 64 ? ~0ull : (1ull << L) - 1;
        s.caching = 2;
        st = full_forward(&s, source_ids, 1, logits_full, last, sites);
        forwards++;
        s.caching = 0;
        if (st == CVENE_OK) {
            softmax_log(last, V, s.src_logp);
            source_score = metric(&s, last);
        }
    }
    double scale = p->noise_scale;
    if (st == CVENE_OK && p->trace && scale == 0) {
        double sd = 0;
        st = embedding_std(m, &sd);
        scale = 3.0 * sd;
    }
    const int32_t *base = p->trace ? source_ids : base_ids;
    const int fast = !p->naive && m->vt->forward_from;
    for (int smp = 0; smp < n_samples && st == CVENE_OK; smp++) {
        if (p->trace) {
            cvene_np_randn(p->seed + (uint32_t)smp, noise, (size_t)p->n_subject * C);
            for (size_t k = 0; k < (size_t)p->n_subject * C; k++) noise[k] *= scale;
            s.noise = noise;
        }
        /* the base run: residual stream, keys and values at every layer */
        memset(sites, 0, sizeof sites);
        uint64_t all = L >= 64 ? ~0ull : (1ull << L) - 1;
        sites[CVENE_BLOCK_INPUT] = all, sites[CVENE_KEY_OUTPUT] = all, sites[CVENE_VALUE_OUTPUT] = all;
        sites[CVENE_BLOCK_OUTPUT] = 1ull << (L - 1);
        s.caching = 1, s.add_noise = 1;
        st = full_forward(&s, base, 1, logits_full, last, sites);
        s.caching = 0;
        forwards++;
        if (st != CVENE_OK) break;
        base_score += metric(&s, last) / n_samples;
        for (int li = 0; li < nl && st == CVENE_OK; li++) {
            int l = p->layers ? p->layers[li] : li;
            s.lo = window_lo(l, p->window), s.hi = window_hi(l, p->window, L);
            /* block_input / block_output with no window: patch the residual directly */
            int direct = p->window == 1 && (p->component == CVENE_BLOCK_OUTPUT || p->component == CVENE_BLOCK_INPUT);
            int start = !direct ? s.lo : p->component == CVENE_BLOCK_OUTPUT ? l + 1 : l;
            for (int k0 = 0; k0 < np && st == CVENE_OK; k0 += max_batch) {
                int nb = np - k0 < max_batch ? np - k0 : max_batch;
                for (int b = 0; b < nb; b++) row_pos[b] = order[k0 + b].pos;
                if (!fast) { /* reference: one full forward per site */
                    for (int b = 0; b < nb && st == CVENE_OK; b++) {
                        s.pos = &row_pos[b], s.past = 0, s.patching = 1, s.add_noise = 1;
                        memset(sites, 0, sizeof sites);
                        for (int q = s.lo; q < s.hi; q++) sites[s.phys] |= 1ull << q;
                        sites[CVENE_BLOCK_INPUT] |= 1; /* noise */
                        st = full_forward(&s, base, 1, logits_full, last + (size_t)b * V, sites);
                        forwards++;
                    }
                    s.pos = row_pos;
                } else {
                    int past = row_pos[0], Tq = T - past;
                    for (int b = 0; b < nb; b++) {
                        memcpy(x + (size_t)b * Tq * C, s.resid + start * TC + (size_t)past * C, sizeof(float) * (size_t)Tq * C);
                        if (direct)
                            memcpy(x + ((size_t)b * Tq + row_pos[b] - past) * C, s.src + (size_t)l * TC + (size_t)row_pos[b] * C,
                                   sizeof(float) * (size_t)C);
                    }
                    cvene_resume rs = {start, past, x, s.kp, s.vp, 1};
                    cvene_run_opts o;
                    memset(&o, 0, sizeof o);
                    o.logits = last;
                    if (!direct) {
                        for (int q = s.lo; q < s.hi; q++) o.sites[s.phys] |= 1ull << q;
                        o.site_fn = on_site;
                        o.site_user = &s;
                        s.past = past, s.patching = 1, s.add_noise = 0;
                    }
                    st = m->vt->forward_from(m, &rs, nb, T, &o);
                    forwards++;
                }
                for (int b = 0; b < nb && st == CVENE_OK; b++)
                    acc[(size_t)li * np + order[k0 + b].idx] += metric(&s, last + (size_t)b * V) / n_samples;
                s.patching = 0;
                done += nb;
                if (p->progress && st == CVENE_OK) p->progress(p->progress_user, done, total);
            }
        }
    }
    if (st == CVENE_OK) {
        for (size_t k = 0; k < (size_t)nl * np; k++) scores[k] = (float)acc[k];
        if (summary) *summary = (cvene_sweep_summary){base_score, source_score, forwards, total};
    }
    free(s.src), free(s.resid), free(s.kc), free(s.vc), free(s.kp), free(s.vp), free(s.src_logp), free(noise);
    free(logits_full), free(last), free(x), free(row_pos), free(ids_rep), free(order), free(acc);
    return st;
}
