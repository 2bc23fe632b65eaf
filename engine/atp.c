/* Attribution patching (AtP): every patching effect of a sweep, to first order, from one
 * source forward, one base forward and one backward.
 *
 * Patching a component's vector a at (layer l, position t) from the source run into the base run
 * changes the metric by about (a_src - a_base) . dmetric/da, the gradient taken on the base run
 * (Nanda, "Attribution patching", 2023; Kramar et al., "AtP*", 2024). So: the source's component
 * at every layer (a plain forward with sites), the base run as a training pass from layer 0
 * (models/model.h: its sites give a_base, its grad sites the gradient of the metric through the
 * whole frozen model), and one dot product per site. Scores are in the exact sweep's units
 * (the patched run's metric, cvene_sweep), so the two can be set side by side: base score +
 * estimated change.
 *
 * The three stages write into device buffers (L, T, D) and the dot products run on the host in
 * double after one copy each: B is 1, so these are L T D floats, a few MB for GPT-2-small. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ctx.h"
#include "kernels/tensor.h"
#include "engine/sweep_internal.h"
#include "models/model.h"

typedef struct {
    cvene_backend *be;
    cvene_component comp;
    int T, D;
    float *acts;           /* (L, T, D) on the device: where the site's tensors go */
    float *x0;             /* (T, C) residual entering layer 0 (the base forward's block_input(0)), or NULL */
    cvene_status err;
} atp_run;

/* Forward sites and grad sites: copy the (1, T, D) tensor of the site's layer into acts. */
static int atp_site(void *user, cvene_component comp, int layer, cvene_tensor_view *v) {
    atp_run *r = user;
    const size_t n = (size_t)r->T * r->D;
    if (r->x0) {
        r->err = r->be->ops->copy(r->be, r->x0, v->data, n * sizeof(float));
        return r->err != CVENE_OK ? 1 : CVENE_SITE_STOP;
    }
    if (comp != r->comp) return 0;
    r->err = r->be->ops->copy(r->be, r->acts + (size_t)layer * n, v->data, n * sizeof(float));
    return r->err != CVENE_OK;
}

/* A pass's status: a copy that failed inside a site reports its own status (its message is in
 * the context's error); the forward stopped at layer 0's input is a success. */
static cvene_status run_status(const atp_run *r, cvene_status st) {
    if (st == CVENE_OK || st == CVENE_SITE_STOPPED) return CVENE_OK;
    return st == CVENE_ERR_CALLBACK && r->err != CVENE_OK ? r->err : st;
}

/* dmetric/dlogits at the base run's last position, and the metric, in double. */
static double metric_grad(const cvene_sweep_params *p, const float *logits, const double *src_logp, int V, float *d) {
    if (p->metric == CVENE_METRIC_LOGIT_DIFF) {
        for (int v = 0; v < V; v++) d[v] = 0;
        d[p->token] += 1.0f, d[p->token_b] -= 1.0f;
        return (double)logits[p->token] - logits[p->token_b];
    }
    double mx = -INFINITY, z = 0;
    for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
    const double lz = mx + log(z);
    if (p->metric == CVENE_METRIC_PROB) { /* p_tok (onehot - softmax) */
        const double pt = exp(logits[p->token] - lz);
        for (int v = 0; v < V; v++) d[v] = (float)(-pt * exp(logits[v] - lz));
        d[p->token] = (float)(pt * (1 - pt));
        return pt;
    }
    double kl = 0; /* KL(source || base): its gradient softmax(base) - softmax(source) */
    for (int v = 0; v < V; v++) {
        kl += exp(src_logp[v]) * (src_logp[v] - (logits[v] - lz));
        d[v] = (float)(exp(logits[v] - lz) - exp(src_logp[v]));
    }
    return kl;
}

cvene_status cvene_sweep_atp(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                             const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary) {
    if (!m || !p || !base_ids || !source_ids || !scores)
        return cvene_fail(m ? m->ctx : NULL, CVENE_ERR_INVALID_ARG, "atp: NULL argument");
    cvene_ctx *ctx = m->ctx;
    cvene_backend *be = ctx->be;
    const cvene_model_info mi = cvene_model_get_info(m);
    if (p->trace || p->window != 1 || p->naive)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "atp: estimates single-site patches of a base and a source run "
                          "(not causal tracing, a window of layers, or the naive path)");
    if (!m->vt->train_forward || !m->vt->train_backward)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "atp: %s models have no backward pass (GPT-2 and GPT-NeoX do)",
                          m->vt->name);
    CVENE_TRY(sweep_check_params(ctx, &mi, p, T, base_ids, source_ids));
    const int L = mi.n_layer, C = mi.n_embd, V = mi.vocab_size, H = mi.n_head;
    const int head = p->component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT, all_heads = head && p->head == CVENE_ALL_HEADS;
    const cvene_component phys = head ? CVENE_ATTENTION_VALUE_OUTPUT : p->component;
    const int D = p->component == CVENE_MLP_ACTIVATION ? mi.n_inner : C, Dh = C / H;
    const int nl = p->layers ? p->n_layers : L, np = p->positions ? p->n_positions : T, nh = all_heads ? H : 1;
    const size_t LTD = (size_t)L * T * D;

    float *src = NULL, *base = NULL, *grad = NULL, *x0 = NULL, *dlogits = NULL, *logits = NULL;
    float *h_src = malloc(sizeof(float) * LTD), *h_base = malloc(sizeof(float) * LTD);
    float *h_grad = malloc(sizeof(float) * LTD), *h_logits = malloc(sizeof(float) * (size_t)V * 2);
    float *h_d = malloc(sizeof(float) * (size_t)V), *full = malloc(sizeof(float) * (size_t)T * V);
    double *src_logp = malloc(sizeof(double) * (size_t)V);
    int32_t *pos = NULL;
    cvene_status st = h_src && h_base && h_grad && h_logits && h_d && full && src_logp
                          ? CVENE_OK
                          : cvene_fail(ctx, CVENE_ERR_OOM, "atp: out of memory (host, %zu floats per run)", LTD);
    struct { void **ptr; size_t bytes; } dev[] = {
        {(void **)&src, sizeof(float) * LTD},          {(void **)&base, sizeof(float) * LTD},
        {(void **)&grad, sizeof(float) * LTD},         {(void **)&x0, sizeof(float) * (size_t)T * C},
        {(void **)&dlogits, sizeof(float) * (size_t)V}, {(void **)&logits, sizeof(float) * (size_t)V},
    };
    for (size_t i = 0; st == CVENE_OK && i < sizeof dev / sizeof dev[0]; i++)
        if (be->ops->alloc(be, dev[i].ptr, dev[i].bytes) != CVENE_OK) {
            *dev[i].ptr = NULL;
            st = cvene_fail(ctx, CVENE_ERR_OOM, "atp: out of %s memory (%zu bytes)",
                            be->device == CVENE_DEVICE_CPU ? "host" : "device", dev[i].bytes);
        }
    if (st == CVENE_OK && p->position_ids) {
        pos = malloc(sizeof(int32_t) * (size_t)T);
        if (!pos) st = cvene_fail(ctx, CVENE_ERR_OOM, "atp: out of memory");
        else memcpy(pos, p->position_ids, sizeof(int32_t) * (size_t)T);
    }
    const uint64_t all = L >= 64 ? ~0ull : (1ull << L) - 1;
    atp_run r = {be, phys, T, D, src, NULL, CVENE_OK};
    cvene_run_opts o;
    /* 1. the source run: its component at every layer, its last-position log-softmax (KL) */
    if (st == CVENE_OK) {
        memset(&o, 0, sizeof o);
        o.sites[phys] = all;
        o.site_fn = atp_site, o.site_user = &r;
        o.logits = full, o.position_ids = p->position_ids;
        st = run_status(&r, cvene_forward(m, source_ids, 1, T, &o));
    }
    double src_score = 0, base_score = 0;
    if (st == CVENE_OK) {
        const float *last = full + (size_t)(T - 1) * V;
        if (cvene_first_nonfinite(last, (size_t)V) >= 0)
            st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "atp: the source run's last-position logits are not finite");
    }
    if (st == CVENE_OK) {
        const float *last = full + (size_t)(T - 1) * V;
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < V; v++) mx = last[v] > mx ? last[v] : mx;
        for (int v = 0; v < V; v++) z += exp((double)last[v] - mx);
        for (int v = 0; v < V; v++) src_logp[v] = last[v] - mx - log(z);
        src_score = metric_grad(p, last, src_logp, V, h_d);
    }
    /* 2. the base run: the residual entering layer 0 (a forward stopped there), then the
     * training pass over every layer, its sites keeping a_base */
    if (st == CVENE_OK) {
        memset(&o, 0, sizeof o);
        o.sites[CVENE_BLOCK_INPUT] = 1;
        o.site_fn = atp_site, o.site_user = &r;
        o.position_ids = p->position_ids;
        r.x0 = x0;
        r.D = C;
        st = run_status(&r, cvene_forward(m, base_ids, 1, T, &o));
        r.x0 = NULL;
        r.D = D;
    }
    const int32_t row = T - 1;
    model_train_pass tp = {0, x0, 1, T, NULL, pos, &row, 1, logits, NULL, NULL, NULL};
    if (st == CVENE_OK) {
        memset(&o, 0, sizeof o);
        o.sites[phys] = all;
        o.site_fn = atp_site, o.site_user = &r;
        r.acts = base;
        st = run_status(&r, m->vt->train_forward(m, &tp, &o));
    }
    if (st == CVENE_OK) st = be->ops->to_host(be, h_logits, logits, sizeof(float) * (size_t)V);
    if (st == CVENE_OK && cvene_first_nonfinite(h_logits, (size_t)V) >= 0)
        st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "atp: the base run's last-position logits are not finite");
    /* 3. the backward of the metric; its grad sites keep dmetric/da */
    if (st == CVENE_OK) {
        base_score = metric_grad(p, h_logits, src_logp, V, h_d);
        st = be->ops->to_device(be, dlogits, h_d, sizeof(float) * (size_t)V);
    }
    if (st == CVENE_OK) {
        model_grad_sites g;
        memset(&g, 0, sizeof g);
        g.fn = atp_site, g.user = &r;
        g.sites[phys] = all;
        r.acts = grad;
        st = run_status(&r, m->vt->train_backward(m, &tp, dlogits, &g));
    }
    if (st == CVENE_OK) st = be->ops->to_host(be, h_src, src, sizeof(float) * LTD);
    if (st == CVENE_OK) st = be->ops->to_host(be, h_base, base, sizeof(float) * LTD);
    if (st == CVENE_OK) st = be->ops->to_host(be, h_grad, grad, sizeof(float) * LTD);
    /* 4. the estimates: base score + (a_src - a_base) . grad over the patched slice */
    for (int li = 0; st == CVENE_OK && li < nl; li++) {
        const int l = p->layers ? p->layers[li] : li;
        for (int hi = 0; st == CVENE_OK && hi < nh; hi++) {
            const int off = !head ? 0 : (all_heads ? hi : p->head) * Dh, len = head ? Dh : D;
            double sum = 0; /* together: the positions' changes add up (the estimate is linear) */
            for (int k = 0; k < np; k++) {
                const int t = p->positions ? p->positions[k] : k;
                const size_t at = ((size_t)l * T + t) * D + off;
                double e = 0;
                for (int c = 0; c < len; c++) e += ((double)h_src[at + c] - h_base[at + c]) * h_grad[at + c];
                sum += e;
                const double sc = base_score + (p->together ? sum : e);
                if (!isfinite(sc) || fabs(sc) > 3.4028234663852886e38) {
                    char hs[32] = "";
                    if (head) snprintf(hs, sizeof hs, ", head %d", off / Dh);
                    st = cvene_fail(ctx, CVENE_ERR_NUMERIC, "atp: the estimate at layer %d, position %d%s is not finite",
                                    l, t, hs);
                    break;
                }
                if (!p->together) scores[((size_t)li * nh + hi) * np + k] = (float)sc;
                else if (k == np - 1) scores[(size_t)li * nh + hi] = (float)sc;
            }
        }
    }
    if (st == CVENE_OK && summary) {
        memset(summary, 0, sizeof *summary);
        summary->base_score = base_score;
        summary->source_score = src_score;
        summary->forwards = 3; /* source, base (stopped at layer 0's input), the base training pass */
        summary->sites = (int64_t)nl * nh * (p->together ? 1 : np);
    }
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (*dev[i].ptr) be->ops->free(be, *dev[i].ptr);
    free(h_src), free(h_base), free(h_grad), free(h_logits), free(h_d), free(full), free(src_logp), free(pos);
    return st;
}
