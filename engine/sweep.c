/* Sweeps: activation patching and causal tracing over layers x positions.
 *
 * A patch at (layer l, position p) of a causal model leaves every activation
 * below l, and every position before p, as in the unpatched base run. So the
 * fast path runs the source and the base once, caching the source's patched
 * component, the base's residual stream entering each layer and its keys and
 * values; then, for a batch of positions of one layer, it resumes the forward
 * at l (at l + 1 for block_output) for positions >= the batch's smallest p only,
 * attending to the cached keys/values of earlier positions, and computes logits
 * for the last position only: its last block runs everything after the keys and
 * values on the last position alone, and for the logit difference only the two
 * metric tokens' columns of the output head are computed (models/gpt2.c). The
 * naive path runs one full forward per site.
 *
 * Both backends run the same code through the backend's ops: every buffer a site
 * reads or writes (the source component, the per-sample caches, the packed input
 * of a batched forward, the patch index arrays) lives on the backend's device
 * (be->ops->alloc), the caches are filled by device-to-device copies, and patches
 * are one iv_units op per site. Only small things cross to the host: the
 * last-position logits rows the metric reads, the patch index arrays (to_device)
 * and, in causal tracing, the subject rows of block_input(0) (the noise is drawn
 * and added there in float64, as ROME/numpy do, then the rows go back). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ctx.h"
#include "kernels/tensor.h"
#include "engine/numpy_random.h"
#include "engine/sweep_internal.h"
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
    cvene_backend *be;
    int on_host;           /* the backend's memory is the host's (CPU): no staging copies */
    const cvene_sweep_params *p;
    cvene_component phys;  /* site that holds the component */
    int off, len;          /* the patched slice of each position's vector */
    int D;                 /* width of the site's stream */
    int T, L, C, V;
    int max_batch;
    float *src;            /* (L, T, D) source component (device) */
    float *resid;          /* (L + 1, T, C) base residual entering each layer (+ final), current sample (device) */
    float *kc, *vc;        /* (L, T, C) base keys / values, current sample (device) */
    float **kp, **vp;      /* per-layer device pointers into kc / vc (the arrays are host) */
    /* patch index arrays for iv_units, (4, max_batch) int64 on the device (d_idx) and
     * their host staging (h_idx): per row b of the current forward
     *   [0]: patch x_off    (b * Tq + pos[b] - past) * D + off  (into the site tensor)
     *   [1]: patch src_off  pos[b] * D + off                    (into src's layer)
     *   [2]: prefix x_off   b * Tq * C                          (into the packed input)
     *   [3]: prefix src_off past * C                            (into resid's layer) */
    int64_t *d_idx, *h_idx;
    int icap;              /* entries per index array: max_batch, or rows x positions when every row patches
                            * all the positions together (params.together) */
    int n_units;           /* patch units of the current forward (entries of [0] and [1]) */
    float *host_rows;      /* (T, C) host staging of block_input(0) rows for the noise (CUDA) */
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
    cvene_status err;      /* an op failed inside a site callback: its status and message (the */
    char errmsg[CVENE_ERR_LEN]; /* forward's own "callback returned" message overwrites ctx->err) */
} sweep_state;

#define CVENE_MAX_HEADS_TOGETHER 1024

static int window_lo(int l, int w) { return l - w / 2 < 0 ? 0 : l - w / 2; }
static int window_hi(int l, int w, int L) { return l + (w + 1) / 2 > L ? L : l + (w + 1) / 2; }

/* Fill the patch (and, for a packed forward, prefix) index arrays of rows [0, nb) from
 * s->pos and upload them: one small to_device per forward. */
static cvene_status upload_index(sweep_state *s, int nb, int past, int Tq) {
    const int mb = s->icap;
    int64_t *h = s->h_idx;
    for (int b = 0; b < nb; b++) {
        h[b] = ((int64_t)b * Tq + s->pos[b] - past) * s->D + s->off;
        h[mb + b] = (int64_t)s->pos[b] * s->D + s->off;
        h[2 * mb + b] = (int64_t)b * Tq * s->C;
        h[3 * mb + b] = (int64_t)past * s->C;
    }
    s->n_units = nb;
    return s->be->ops->to_device(s->be, s->d_idx, h, sizeof(int64_t) * 4 * (size_t)mb);
}

/* The same when every row patches all np positions pos[0..np) together, row b at slice offset
 * off[b] (a head's): units b * np + k. */
static cvene_status upload_index_together(sweep_state *s, int nb, const int *off, const int *pos, int np, int past,
                                          int Tq) {
    const int mb = s->icap;
    int64_t *h = s->h_idx;
    for (int b = 0; b < nb; b++) {
        for (int k = 0; k < np; k++) {
            h[b * np + k] = ((int64_t)b * Tq + pos[k] - past) * s->D + off[b];
            h[mb + b * np + k] = (int64_t)pos[k] * s->D + off[b];
        }
        h[2 * mb + b] = (int64_t)b * Tq * s->C;
        h[3 * mb + b] = (int64_t)past * s->C;
    }
    s->n_units = nb * np;
    return s->be->ops->to_device(s->be, s->d_idx, h, sizeof(int64_t) * 4 * (size_t)mb);
}

/* As ROME: float64 noise added to the float32 embeddings of the subject positions, rounded
 * back to f32, row by row. On a device, the rows spanning the subject positions go to the
 * host for this and come back (n_subject is a handful; the rest stays on the device). */
static cvene_status add_noise(sweep_state *s, float *x, int rows, int Tq, int W) {
    const cvene_sweep_params *p = s->p;
    int lo = p->subject[0], hi = p->subject[0];
    for (int k = 1; k < p->n_subject; k++) {
        lo = p->subject[k] < lo ? p->subject[k] : lo;
        hi = p->subject[k] > hi ? p->subject[k] : hi;
    }
    const size_t span = (size_t)(hi - lo + 1) * W * sizeof(float);
    for (int b = 0; b < rows; b++) {
        float *dev = x + ((size_t)b * Tq + lo) * W; /* (hi - lo + 1, W) */
        float *h = s->on_host ? dev : s->host_rows;
        if (!s->on_host) CVENE_TRY(s->be->ops->to_host(s->be, h, dev, span));
        for (int k = 0; k < p->n_subject; k++)
            for (int c = 0; c < W; c++) {
                float *e = &h[(size_t)(p->subject[k] - lo) * W + c];
                *e = (float)((double)*e + s->noise[(size_t)k * W + c]);
            }
        if (!s->on_host) CVENE_TRY(s->be->ops->to_device(s->be, dev, h, span));
    }
    return CVENE_OK;
}

/* Sites of the base run (caching, noise), of the source run (caching) and of patched
 * forwards. The site tensor is on the backend's device. */
static cvene_status site_work(sweep_state *s, cvene_component comp, int layer, cvene_tensor_view *t) {
    cvene_backend *be = s->be;
    float *x = t->data;
    int rows = (int)t->shape[0], Tq = (int)t->shape[1], W = (int)t->shape[2];
    if (comp == CVENE_BLOCK_INPUT && layer == 0 && s->add_noise && s->noise) CVENE_TRY(add_noise(s, x, rows, Tq, W));
    if (s->caching == 2) {
        if (comp == s->phys)
            CVENE_TRY(be->ops->copy(be, s->src + (size_t)layer * s->T * s->D, x, sizeof(float) * (size_t)s->T * s->D));
        return CVENE_OK;
    }
    if (s->caching) {
        size_t n = (size_t)s->T * s->C;
        float *dst = comp == CVENE_BLOCK_INPUT ? s->resid + (size_t)layer * n
                     : comp == CVENE_BLOCK_OUTPUT && layer == s->L - 1 ? s->resid + (size_t)s->L * n
                     : comp == CVENE_KEY_OUTPUT ? s->kc + (size_t)layer * n
                     : comp == CVENE_VALUE_OUTPUT ? s->vc + (size_t)layer * n : NULL;
        if (dst) CVENE_TRY(be->ops->copy(be, dst, x, n * sizeof(float)));
        return CVENE_OK;
    }
    /* x[b, pos[b] - past, off : off + len] = src[layer, pos[b], off : off + len] for every row b:
     * one iv_units op over the index arrays upload_index staged for this forward */
    if (s->patching && comp == s->phys && layer >= s->lo && layer < s->hi)
        CVENE_TRY(be->ops->iv_units(be, x, s->d_idx, 0, s->src + (size_t)layer * s->T * s->D, s->d_idx + s->icap,
                                    0, NULL, NULL, NULL, s->n_units, 1, s->len, CVENE_IVOP_VANILLA));
    return CVENE_OK;
}

static int on_site(void *user, cvene_component comp, int layer, cvene_tensor_view *t) {
    sweep_state *s = user;
    cvene_status st = site_work(s, comp, layer, t);
    if (st == CVENE_OK) return 0;
    s->err = st;
    memcpy(s->errmsg, s->m->ctx->err, sizeof s->errmsg); /* both CVENE_ERR_LEN */
    s->errmsg[sizeof s->errmsg - 1] = 0;
    return 1;
}

/* The status of a forward run with on_site: an op's failure inside the callback is
 * reported as that op's status and message rather than as "callback returned 1". */
static cvene_status site_status(sweep_state *s, cvene_status st) {
    if (st == CVENE_OK || !s->err) return st;
    st = s->err;
    s->err = CVENE_OK;
    return cvene_fail(s->m->ctx, st, "sweep: %s", s->errmsg);
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

cvene_status sweep_check_params(cvene_ctx *ctx, const cvene_model_info *mi, const cvene_sweep_params *p, int T,
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
    if (p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && p->head != CVENE_ALL_HEADS &&
        (p->head < 0 || p->head >= mi->n_head))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: head %d is out of range [0, %d) (or CVENE_ALL_HEADS, -1)",
                          p->head, mi->n_head);
    if (p->metric < CVENE_METRIC_LOGIT_DIFF || p->metric > CVENE_METRIC_KL)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: unknown metric %d", (int)p->metric);
    if (p->metric != CVENE_METRIC_KL && (p->token < 0 || p->token >= mi->vocab_size))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: metric token %d is outside the vocabulary [0, %d)",
                          p->token, mi->vocab_size);
    if (p->metric == CVENE_METRIC_LOGIT_DIFF && (p->token_b < 0 || p->token_b >= mi->vocab_size))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: second metric token %d is outside the vocabulary [0, %d)",
                          p->token_b, mi->vocab_size);
    for (int t = 0; p->position_ids && t < T; t++)
        if (p->position_ids[t] < 0 || (mi->arch == CVENE_ARCH_GPT2 && p->position_ids[t] >= mi->n_positions) ||
            p->position_ids[t] > (1 << 24))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: position_ids[%d] = %d is outside [0, %d)", t,
                              p->position_ids[t], mi->arch == CVENE_ARCH_GPT2 ? mi->n_positions : (1 << 24) + 1);
    for (int i = 0; p->together && p->positions && i < p->n_positions; i++)
        for (int j = 0; j < i; j++)
            if (p->positions[i] == p->positions[j])
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "sweep: position %d is listed twice; positions patched "
                                  "together must be distinct", p->positions[i]);
    if (p->together && p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && p->head == CVENE_ALL_HEADS &&
        mi->n_head > CVENE_MAX_HEADS_TOGETHER)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "sweep: every head together supports up to %d heads (the model "
                          "has %d)", CVENE_MAX_HEADS_TOGETHER, mi->n_head);
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

/* ROME's noise level: the standard deviation of the token-embedding entries. The matrix is
 * on the backend's device; off the CPU it is read in chunks through a host buffer, summed in
 * the same order either way. */
static cvene_status embedding_std(cvene_model *m, double *std) {
    int V = 0, C = 0;
    const float *wte = m->vt->token_embeddings ? m->vt->token_embeddings(m, &V, &C) : NULL;
    if (!wte) return cvene_fail(m->ctx, CVENE_ERR_UNSUPPORTED, "sweep: this model exposes no token embeddings; give noise_scale");
    cvene_backend *be = m->ctx->be;
    const int on_host = be->device == CVENE_DEVICE_CPU;
    const size_t n = (size_t)V * C, chunk = on_host ? n : (size_t)1 << 20;
    float *buf = on_host ? NULL : malloc(sizeof(float) * (chunk < n ? chunk : n));
    if (!on_host && !buf) return cvene_fail(m->ctx, CVENE_ERR_OOM, "sweep: out of memory");
    double s1 = 0, s2 = 0, mean = 0;
    cvene_status st = CVENE_OK;
    for (int pass = 0; pass < 2 && st == CVENE_OK; pass++) {
        for (size_t i0 = 0; i0 < n && st == CVENE_OK; i0 += chunk) {
            size_t k = n - i0 < chunk ? n - i0 : chunk;
            const float *w = wte + i0;
            if (!on_host) {
                st = be->ops->to_host(be, buf, wte + i0, sizeof(float) * k);
                w = buf;
                if (st != CVENE_OK) break;
            }
            if (pass == 0)
                for (size_t i = 0; i < k; i++) s1 += w[i];
            else
                for (size_t i = 0; i < k; i++) s2 += (w[i] - mean) * (w[i] - mean);
        }
        mean = s1 / (double)n;
    }
    free(buf);
    if (st != CVENE_OK) return st;
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
    o.position_ids = s->p->position_ids; /* rows is 1 */
    CVENE_TRY(site_status(s, cvene_forward(s->m, ids, rows, s->T, &o)));
    for (int b = 0; b < rows; b++)
        memcpy(last + (size_t)b * s->V, logits_full + ((size_t)b * s->T + s->T - 1) * s->V, sizeof(float) * (size_t)s->V);
    return CVENE_OK;
}

typedef struct { int pos, idx; } pos_idx;
static int pos_cmp(const void *a, const void *b) { return ((const pos_idx *)a)->pos - ((const pos_idx *)b)->pos; }

struct cvene_sweep_session {
    sweep_state s;
    cvene_sweep_params p;      /* copy; p.positions points at positions below */
    int *positions, *subject;
    int32_t *position_ids;     /* (T) copy of p->position_ids, or NULL */
    int np, n_samples, fast;
    int nh, dh;                /* heads scored per layer (n_head with CVENE_ALL_HEADS, else 1), head width */
    int32_t *base;             /* (T) the base prompt (trace: the clean prompt) */
    float *caches;             /* per sample: resid (L+1)TC, kc LTC, vc LTC (device) */
    double *noise;             /* per sample: (n_subject, C) (host) */
    float *logits_full;        /* (T, V) logits of a full forward (host) */
    float *last;               /* (max_batch, V) last-position logits of the rows of a forward (host) */
    float *x;                  /* (max_batch, T, C) packed input of a resumed forward (device) */
    int *row_pos;
    pos_idx *order;
    double *acc;
    cvene_sweep_summary sum;
    int64_t done;
};

static void dev_free(cvene_backend *be, void *p) {
    if (p) be->ops->free(be, p);
}

void cvene_sweep_end(cvene_sweep_session *ss) {
    if (!ss) return;
    sweep_state *s = &ss->s;
    if (s->be) {
        dev_free(s->be, s->src), dev_free(s->be, ss->caches), dev_free(s->be, ss->x), dev_free(s->be, s->d_idx);
    }
    free(s->kp), free(s->vp), free(s->src_logp), free(s->h_idx), free(s->host_rows);
    free(ss->positions), free(ss->subject), free(ss->base), free(ss->noise), free(ss->position_ids);
    free(ss->logits_full), free(ss->last), free(ss->row_pos), free(ss->order), free(ss->acc);
    free(ss);
}

/* point the state at sample k's caches (and noise) */
static void use_sample(cvene_sweep_session *ss, int k) {
    sweep_state *s = &ss->s;
    size_t TC = (size_t)s->T * s->C, per = (size_t)(3 * s->L + 1) * TC;
    s->resid = ss->caches + per * k;
    s->kc = s->resid + (size_t)(s->L + 1) * TC;
    s->vc = s->kc + (size_t)s->L * TC;
    for (int l = 0; l < s->L; l++) s->kp[l] = s->kc + l * TC, s->vp[l] = s->vc + l * TC;
    s->noise = ss->noise ? ss->noise + (size_t)k * ss->p.n_subject * s->C : NULL;
}

cvene_status cvene_sweep_begin(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                               const cvene_sweep_params *p, cvene_sweep_session **out) {
    if (!out) return CVENE_ERR_INVALID_ARG;
    *out = NULL;
    if (!m || !p || !source_ids || (!p->trace && !base_ids))
        return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "sweep: NULL argument");
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    cvene_model_info mi = cvene_model_get_info(m);
    if (p->atp)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "sweep: a session runs exact patching; atp estimates every "
                          "layer at once (cvene_sweep or cvene_sweep_atp)");
    CVENE_TRY(sweep_check_params(ctx, &mi, p, T, base_ids, source_ids));
    cvene_sweep_session *ss = calloc(1, sizeof *ss);
    if (!ss) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    const int L = mi.n_layer, C = mi.n_embd, V = mi.vocab_size;
    const int head = p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
    sweep_state *s = &ss->s;
    ss->p = *p;
    ss->np = p->positions ? p->n_positions : T;
    ss->n_samples = p->trace ? p->n_samples : 1;
    ss->fast = !p->naive && m->vt->forward_from;
    s->m = m, s->be = be, s->on_host = be->device == CVENE_DEVICE_CPU;
    s->p = &ss->p, s->T = T, s->L = L, s->C = C, s->V = V;
    s->phys = head ? CVENE_ATTENTION_VALUE_OUTPUT : p->component;
    s->D = p->component == CVENE_MLP_ACTIVATION ? mi.n_inner : C;
    ss->nh = head && p->head == CVENE_ALL_HEADS ? mi.n_head : 1;
    ss->dh = C / mi.n_head;
    s->off = head && ss->nh == 1 ? p->head * ss->dh : 0;
    s->len = head ? C / mi.n_head : s->D;
    /* Automatic batch: the rows of a resumed forward are padded to its longest (its earliest
     * patched position), so on the CPU, where every padded token costs its FLOPs, small batches
     * win: GPT-2-small, 12 x 32 block_output sweep, 2 cores, with the last block on the last
     * position only: 3.97 s at 8, 4.35 s at 16, 6.0 s at 32, 4.7 s at 6 and 4.5-5.4 s at 4 (below
     * 8 the per-forward work of the keys/values copies and the tail dominates). On CUDA the
     * larger batch keeps the GPU busy (measured at 32 only). Positions are split into equal
     * batches (cvene_sweep_layer). */
    int max_batch = p->max_batch > 0 ? p->max_batch : be->device == CVENE_DEVICE_CPU ? 8 : 32;
    if (max_batch > ss->np) max_batch = ss->np;
    if (p->together) max_batch = ss->nh; /* a forward's rows: the heads, each patching every position */
    ss->p.max_batch = max_batch;
    s->max_batch = max_batch;
    size_t TC = (size_t)T * C;
    s->kp = malloc(sizeof(float *) * (size_t)L);
    s->vp = malloc(sizeof(float *) * (size_t)L);
    s->src_logp = malloc(sizeof(double) * (size_t)V);
    /* together: the rows of a forward are the heads (or one row), each patching every position */
    s->icap = p->together ? max_batch * ss->np : max_batch;
    s->h_idx = malloc(sizeof(int64_t) * 4 * (size_t)s->icap);
    s->host_rows = p->trace && !s->on_host ? malloc(sizeof(float) * TC) : NULL;
    ss->positions = malloc(sizeof(int) * (size_t)ss->np);
    ss->position_ids = p->position_ids ? malloc(sizeof(int32_t) * (size_t)T) : NULL;
    ss->base = malloc(sizeof(int32_t) * (size_t)T);
    ss->noise = p->trace ? malloc(sizeof(double) * (size_t)p->n_subject * C * (size_t)ss->n_samples) : NULL;
    ss->subject = p->trace ? malloc(sizeof(int) * (size_t)p->n_subject) : NULL;
    ss->logits_full = malloc(sizeof(float) * (size_t)T * V);
    ss->last = malloc(sizeof(float) * (size_t)max_batch * V);
    ss->row_pos = malloc(sizeof(int) * (size_t)max_batch);
    ss->order = malloc(sizeof(pos_idx) * (size_t)ss->np);
    ss->acc = malloc(sizeof(double) * (size_t)ss->np * ss->nh);
    if (!s->kp || !s->vp || !s->src_logp || !s->h_idx || (p->trace && !s->on_host && !s->host_rows) ||
        !ss->positions || !ss->base || (p->position_ids && !ss->position_ids) || (p->trace && (!ss->noise || !ss->subject)) || !ss->logits_full ||
        !ss->last || !ss->row_pos || !ss->order || !ss->acc) {
        cvene_sweep_end(ss);
        return cvene_fail(ctx, CVENE_ERR_OOM, "sweep: out of memory (host buffers, T=%d, V=%d, n_samples=%d)", T, V,
                          ss->n_samples);
    }
    /* what sites read and write, on the backend's device */
    struct { void **ptr; size_t bytes; } dev[] = {
        {(void **)&s->src, sizeof(float) * (size_t)L * T * s->D},
        {(void **)&ss->caches, sizeof(float) * (size_t)(3 * L + 1) * TC * (size_t)ss->n_samples},
        {(void **)&ss->x, sizeof(float) * (size_t)max_batch * TC},
        {(void **)&s->d_idx, sizeof(int64_t) * 4 * (size_t)s->icap},
    };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (be->ops->alloc(be, dev[i].ptr, dev[i].bytes) != CVENE_OK) {
            *dev[i].ptr = NULL;
            cvene_sweep_end(ss);
            return cvene_fail(ctx, CVENE_ERR_OOM,
                              "sweep: out of %s memory for caches (%zu bytes; T=%d, %d layers, %d samples, batch %d)",
                              be->device == CVENE_DEVICE_CPU ? "host" : "device", dev[i].bytes, T, L,
                              ss->n_samples, max_batch);
        }
    for (int k = 0; k < ss->np; k++) ss->positions[k] = p->positions ? p->positions[k] : k;
    if (p->position_ids) memcpy(ss->position_ids, p->position_ids, sizeof(int32_t) * (size_t)T);
    ss->p.position_ids = ss->position_ids;
    ss->p.positions = ss->positions, ss->p.n_positions = ss->np;
    ss->p.layers = NULL, ss->p.n_layers = 0; /* layers are chosen per call */
    if (p->trace) {
        memcpy(ss->subject, p->subject, sizeof(int) * (size_t)p->n_subject);
        ss->p.subject = ss->subject;
    }
    for (int k = 0; k < ss->np; k++) ss->order[k] = (pos_idx){ss->positions[k], k};
    qsort(ss->order, (size_t)ss->np, sizeof *ss->order, pos_cmp);
    memcpy(ss->base, p->trace ? source_ids : base_ids, sizeof(int32_t) * (size_t)T);
    s->pos = ss->row_pos;

    /* the source run: its component at every layer, and its last-position logits */
    uint64_t sites[CVENE_N_COMPONENTS], all = L >= 64 ? ~0ull : (1ull << L) - 1;
    memset(sites, 0, sizeof sites);
    sites[s->phys] = all;
    s->caching = 2;
    cvene_status st = full_forward(s, source_ids, 1, ss->logits_full, ss->last, sites);
    s->caching = 0;
    ss->sum.forwards++;
    if (st == CVENE_OK && cvene_first_nonfinite(ss->last, (size_t)V) >= 0)
        st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "sweep: the source run's last-position logits are not finite "
                        "(NaN or infinity)");
    if (st == CVENE_OK) {
        softmax_log(ss->last, V, s->src_logp);
        ss->sum.source_score = metric(s, ss->last);
    }
    double scale = p->noise_scale;
    if (st == CVENE_OK && p->trace && scale == 0) {
        double sd = 0;
        st = embedding_std(m, &sd);
        scale = 3.0 * sd;
    }
    /* the base runs (one per noise sample): residual stream, keys and values at every layer */
    for (int k = 0; k < ss->n_samples && st == CVENE_OK; k++) {
        if (p->trace) {
            double *nz = ss->noise + (size_t)k * p->n_subject * C;
            cvene_np_randn(p->seed + (uint32_t)k, nz, (size_t)p->n_subject * C);
            for (size_t q = 0; q < (size_t)p->n_subject * C; q++) nz[q] *= scale;
        }
        use_sample(ss, k);
        memset(sites, 0, sizeof sites);
        sites[CVENE_BLOCK_INPUT] = all, sites[CVENE_KEY_OUTPUT] = all, sites[CVENE_VALUE_OUTPUT] = all;
        sites[CVENE_BLOCK_OUTPUT] = 1ull << (L - 1);
        s->caching = 1, s->add_noise = 1;
        st = full_forward(s, ss->base, 1, ss->logits_full, ss->last, sites);
        s->caching = 0;
        ss->sum.forwards++;
        if (st == CVENE_OK && cvene_first_nonfinite(ss->last, (size_t)V) >= 0)
            st = p->trace ? cvene_fail(ctx, CVENE_ERR_NUMERIC, "sweep: the corrupted run's logits (noise sample %d, "
                                       "noise scale %g) are not finite (NaN or infinity)", k, scale)
                          : cvene_fail(ctx, CVENE_ERR_NUMERIC, "sweep: the base run's last-position logits are not "
                                       "finite (NaN or infinity)");
        if (st == CVENE_OK) ss->sum.base_score += metric(s, ss->last) / ss->n_samples;
    }
    if (st != CVENE_OK) {
        cvene_sweep_end(ss);
        return st;
    }
    *out = ss;
    return CVENE_OK;
}

/* One resumed forward of nb rows on the index arrays uploaded for it: each row's input is the base
 * residual entering `start` from position past on; a direct patch (the residual itself) goes into
 * that input, any other is applied at the window's sites; the last position's logits (the two
 * metric tokens' columns when narrow) into last. */
static cvene_status resume_rows(cvene_sweep_session *ss, int l, int start, int past, int nb, int direct, int narrow,
                                float *last) {
    sweep_state *s = &ss->s;
    cvene_backend *be = s->be;
    const size_t TC = (size_t)s->T * s->C;
    const int Tq = s->T - past;
    const int32_t cols[2] = {ss->p.token, ss->p.token_b};
    /* (nb, Tq, C): one iv_units op, nb units of Tq rows all reading the same rows of resid */
    CVENE_TRY(be->ops->iv_units(be, ss->x, s->d_idx + 2 * s->icap, s->C, s->resid + start * TC, s->d_idx + 3 * s->icap,
                                s->C, NULL, NULL, NULL, nb, Tq, s->C, CVENE_IVOP_VANILLA));
    if (direct) /* the patched positions take the source's vectors (D = C, off = 0 here) */
        CVENE_TRY(be->ops->iv_units(be, ss->x, s->d_idx, 0, s->src + (size_t)l * TC, s->d_idx + s->icap, 0, NULL, NULL,
                                    NULL, s->n_units, 1, s->C, CVENE_IVOP_VANILLA));
    cvene_resume rs = {start, past, ss->x, s->kp, s->vp, 1, narrow ? cols : NULL, narrow ? 2 : 0, ss->position_ids};
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.logits = last;
    if (!direct) {
        for (int q = s->lo; q < s->hi; q++) o.sites[s->phys] |= 1ull << q;
        o.site_fn = on_site;
        o.site_user = s;
        s->past = past, s->patching = 1, s->add_noise = 0;
    }
    ss->sum.forwards++;
    return site_status(s, s->m->vt->forward_from(s->m, &rs, nb, s->T, &o));
}

/* params.together: every row patches all the positions at once; the rows of a forward are the heads
 * (CVENE_ALL_HEADS) or the one patched slice. scores: (nh). The naive path runs a full forward per
 * row. */
static cvene_status sweep_layer_together(cvene_sweep_session *ss, int l, int direct, int start, float *scores) {
    sweep_state *s = &ss->s;
    const cvene_sweep_params *p = &ss->p;
    cvene_model *m = s->m;
    const int T = s->T, V = s->V, np = ss->np, nh = ss->nh;
    const int narrow = ss->fast && p->metric == CVENE_METRIC_LOGIT_DIFF;
    const int past = ss->fast ? ss->order[0].pos : 0, Tq = T - past;
    int off[CVENE_MAX_HEADS_TOGETHER];
    for (int b = 0; b < nh; b++) off[b] = nh > 1 ? b * ss->dh : s->off;
    cvene_status st = CVENE_OK;
    for (int b = 0; b < nh; b++) ss->acc[b] = 0;
    for (int smp = 0; smp < ss->n_samples && st == CVENE_OK; smp++) {
        use_sample(ss, smp);
        if (!ss->fast) { /* reference: one full forward per row */
            uint64_t sites[CVENE_N_COMPONENTS];
            memset(sites, 0, sizeof sites);
            for (int q = s->lo; q < s->hi; q++) sites[s->phys] |= 1ull << q;
            sites[CVENE_BLOCK_INPUT] |= 1; /* noise */
            for (int b = 0; b < nh && st == CVENE_OK; b++) {
                s->past = 0, s->patching = 1, s->add_noise = 1;
                st = upload_index_together(s, 1, &off[b], ss->positions, np, 0, T);
                if (st == CVENE_OK) st = full_forward(s, ss->base, 1, ss->logits_full, ss->last + (size_t)b * V, sites);
                ss->sum.forwards++;
            }
        } else {
            st = upload_index_together(s, nh, off, ss->positions, np, past, Tq);
            if (st == CVENE_OK) st = resume_rows(ss, l, start, past, nh, direct, narrow, ss->last);
        }
        for (int b = 0; b < nh && st == CVENE_OK; b++)
            ss->acc[b] += (narrow ? (double)ss->last[2 * b] - ss->last[2 * b + 1] : metric(s, ss->last + (size_t)b * V)) /
                          ss->n_samples;
        s->patching = 0;
    }
    if (st != CVENE_OK) return st;
    ss->done += nh;
    if (p->progress) p->progress(p->progress_user, ss->done, 0);
    for (int b = 0; b < nh; b++)
        if (!isfinite(ss->acc[b]) || fabs(ss->acc[b]) > 3.4028234663852886e38)
            return cvene_fail(m->ctx, CVENE_ERR_NUMERIC, "sweep: the score of layer %d, row %d (head %d when every head; "
                              "positions patched together) is not finite (%g): the patched run overflowed", l, b, b,
                              ss->acc[b]);
    for (int b = 0; b < nh; b++) scores[b] = (float)ss->acc[b];
    ss->sum.sites += nh;
    return CVENE_OK;
}

cvene_status cvene_sweep_layer(cvene_sweep_session *ss, int l, float *scores) {
    sweep_state *s = &ss->s;
    const cvene_sweep_params *p = &ss->p;
    cvene_model *m = s->m;
    const int L = s->L, T = s->T, V = s->V, np = ss->np, max_batch = p->max_batch;
    /* equal batches of at most max_batch positions (30 positions at 8: 8, 8, 7, 7, not 8, 8, 8, 6) */
    const int n_batches = (np + max_batch - 1) / max_batch; /* np >= 1 (check_params) */
    const int per = (np + n_batches - 1) / n_batches;
    /* the logit difference reads two logits: the resumed forwards compute only those two
     * columns of the output head and return (rows, 2) = (token, token_b) */
    const int narrow = ss->fast && p->metric == CVENE_METRIC_LOGIT_DIFF;
    if (l < 0 || l >= L) return cvene_fail(m->ctx, CVENE_ERR_INVALID_ARG, "sweep: layer %d is out of range [0, %d)", l, L);
    s->lo = window_lo(l, p->window), s->hi = window_hi(l, p->window, L);
    /* block_input / block_output with no window: patch the residual directly */
    int direct = p->window == 1 && (p->component == CVENE_BLOCK_OUTPUT || p->component == CVENE_BLOCK_INPUT);
    int start = !direct ? s->lo : p->component == CVENE_BLOCK_OUTPUT ? l + 1 : l;
    if (p->together) return sweep_layer_together(ss, l, direct, start, scores);
    int *row_pos = ss->row_pos;
    float *last = ss->last;
    cvene_status st = CVENE_OK;
    const int nh = ss->nh;
    for (int k = 0; k < np * nh; k++) ss->acc[k] = 0;
    uint64_t sites[CVENE_N_COMPONENTS];
    for (int hh = 0; hh < nh && st == CVENE_OK; hh++) {
        double *acc = ss->acc + (size_t)hh * np;
        if (nh > 1) s->off = hh * ss->dh; /* every head: the same caches, another slice of the source */
        for (int smp = 0; smp < ss->n_samples && st == CVENE_OK; smp++) {
            use_sample(ss, smp);
            for (int k0 = 0; k0 < np && st == CVENE_OK; k0 += per) {
                int nb = np - k0 < per ? np - k0 : per;
                for (int b = 0; b < nb; b++) row_pos[b] = ss->order[k0 + b].pos;
                if (!ss->fast) { /* reference: one full forward per site */
                    for (int b = 0; b < nb && st == CVENE_OK; b++) {
                        s->pos = &row_pos[b], s->past = 0, s->patching = 1, s->add_noise = 1;
                        memset(sites, 0, sizeof sites);
                        for (int q = s->lo; q < s->hi; q++) sites[s->phys] |= 1ull << q;
                        sites[CVENE_BLOCK_INPUT] |= 1; /* noise */
                        st = upload_index(s, 1, 0, T);
                        if (st == CVENE_OK) st = full_forward(s, ss->base, 1, ss->logits_full, last + (size_t)b * V, sites);
                        ss->sum.forwards++;
                    }
                    s->pos = row_pos;
                } else {
                    const int past = row_pos[0];
                    st = upload_index(s, nb, past, T - past);
                    if (st == CVENE_OK) st = resume_rows(ss, l, start, past, nb, direct, narrow, last);
                }
                for (int b = 0; b < nb && st == CVENE_OK; b++) {
                    double sc = narrow ? (double)last[2 * b] - last[2 * b + 1] : metric(s, last + (size_t)b * V);
                    acc[ss->order[k0 + b].idx] += sc / ss->n_samples;
                }
                s->patching = 0;
                ss->done += nb;
                if (p->progress && st == CVENE_OK) p->progress(p->progress_user, ss->done, 0);
            }
        }
    }
    if (st != CVENE_OK) return st;
    for (int k = 0; k < np * nh; k++)
        if (!isfinite(ss->acc[k]) || fabs(ss->acc[k]) > 3.4028234663852886e38)
            return cvene_fail(m->ctx, CVENE_ERR_NUMERIC, "sweep: the score of layer %d, position %d%s is not finite "
                              "(%g): the patched run overflowed", l, ss->positions[k % np], nh > 1 ? " (some head)" : "",
                              ss->acc[k]);
    for (int k = 0; k < np * nh; k++) scores[k] = (float)ss->acc[k];
    ss->sum.sites += (int64_t)np * nh;
    return CVENE_OK;
}

cvene_sweep_summary cvene_sweep_get_summary(const cvene_sweep_session *ss) { return ss->sum; }

cvene_status cvene_sweep(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                         const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary) {
    if (p && p->atp) return cvene_sweep_atp(m, base_ids, source_ids, T, p, scores, summary);
    if (p && p->comm && cvene_comm_size(p->comm) > 1) return sweep_on_ranks(m, base_ids, source_ids, T, p, scores, summary);
    cvene_sweep_session *ss;
    CVENE_TRY(cvene_sweep_begin(m, base_ids, source_ids, T, p, &ss));
    cvene_model_info mi = cvene_model_get_info(m);
    int nl = p->layers ? p->n_layers : mi.n_layer;
    cvene_status st = CVENE_OK;
    for (int li = 0; li < nl && st == CVENE_OK; li++)
        st = cvene_sweep_layer(ss, p->layers ? p->layers[li] : li,
                               scores + (size_t)li * (p->together ? 1 : ss->np) * ss->nh);
    if (st == CVENE_OK && summary) *summary = ss->sum;
    cvene_sweep_end(ss);
    return st;
}

