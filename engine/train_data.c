/* What a dataset gives the trainer (engine/train_internal.h): the caches, computed once per
 * dataset (the residual entering the lowest trained layer, every source's units, and with live
 * rows the clean keys and values before each example's first live row), and each batch. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"
#include "engine/iv_type.h"
#include "engine/comm.h"
#include "engine/train_internal.h"
#include "models/model.h"

/* ---- caches ---- */

typedef struct {
    cvene_trainer *t;
    const cvene_dataset *d;
    const int *idx;           /* the examples of this forward */
    int B, T;
    int source_run;           /* 0: capture the base prefix; 1: the sources' units */
    int hits, want;           /* sites seen / needed: stop after the last */
    int64_t *off_host;
    cvene_status err;
} cache_run;

static int cache_site(void *user, cvene_component comp, int layer, cvene_tensor_view *v) {
    cache_run *r = user;
    cvene_trainer *t = r->t;
    cvene_backend *be = t->ctx->be;
    const cvene_dataset *d = r->d;
    const float *x = v->data;
    if (!r->source_run && comp != CVENE_KEY_OUTPUT && comp != CVENE_VALUE_OUTPUT) { /* the residual entering l0 */
        for (int b = 0; b < r->B && r->err == CVENE_OK; b++) {
            const int e = r->idx[b];
            r->err = be->ops->copy(be, t->prefix + t->prefix_off[e], x + (size_t)b * r->T * t->C,
                                   sizeof(float) * (size_t)d->ex[e].base_len * t->C);
        }
        if (r->err != CVENE_OK) return 1;
        return ++r->hits >= r->want ? CVENE_SITE_STOP : 0;
    }
    if (!r->source_run) { /* live rows: K or V of layer l >= l0 on the rows before each example's start */
        const int j = 2 * (layer - t->l0) + (comp == CVENE_VALUE_OUTPUT);
        for (int b = 0; b < r->B && r->err == CVENE_OK; b++) {
            const int e = r->idx[b], n = t->start[e];
            if (n > 0)
                r->err = be->ops->copy(be, t->kv_cache + t->kv_off[e] + (size_t)j * n * t->C,
                                       x + (size_t)b * r->T * t->C, sizeof(float) * (size_t)n * t->C);
        }
        if (r->err != CVENE_OK) return 1;
        return ++r->hits >= r->want ? CVENE_SITE_STOP : 0;
    }
    for (int i = 0; i < t->n_iv && r->err == CVENE_OK; i++) {
        iv_site *s = &t->site[i];
        if (!s->has_source || s->comp != comp || s->layer != layer) continue;
        for (int b = 0; b < r->B && r->err == CVENE_OK; b++) {
            const int e = r->idx[b], np = d->ex[e].n_pos;
            for (int u = 0; u < np && r->err == CVENE_OK; u++)
                r->err = be->ops->copy(be, s->src_cache + ((size_t)e * np + u) * s->D,
                                       x + ((size_t)b * r->T + ds_source_pos(d, e)[u]) * s->D,
                                       sizeof(float) * (size_t)s->D);
        }
    }
    if (r->err != CVENE_OK) return 1;
    return ++r->hits >= r->want ? CVENE_SITE_STOP : 0;
}

/* The source tokens a source run needs: up to its last unit (later ones cannot reach it). */
static int source_need(const cvene_dataset *d, int e) {
    int n = 0;
    for (int u = 0; u < d->ex[e].n_pos; u++) n = ds_source_pos(d, e)[u] + 1 > n ? ds_source_pos(d, e)[u] + 1 : n;
    return n;
}

typedef struct {
    int need, e;
} need_of;

static int by_need(const void *a, const void *b) {
    const need_of *x = a, *y = b;
    return x->need != y->need ? (x->need > y->need) - (x->need < y->need) : (x->e > y->e) - (x->e < y->e);
}

/* One forward over examples idx[0..B) (their base or source ids, right-padded; a source only as
 * far as its units). */
static cvene_status cache_forward(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B, int source) {
    int T = 0;
    for (int b = 0; b < B; b++) {
        const int len = source ? source_need(d, idx[b]) : d->ex[idx[b]].base_len;
        T = len > T ? len : T;
    }
    int32_t *ids = calloc((size_t)B * T, sizeof(int32_t)), *mask = calloc((size_t)B * T, sizeof(int32_t));
    if (!ids || !mask) {
        free(ids), free(mask);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    }
    for (int b = 0; b < B; b++) {
        const int e = idx[b], len = source ? source_need(d, e) : d->ex[e].base_len;
        memcpy(ids + (size_t)b * T, source ? ds_source(d, e) : ds_base(d, e), sizeof(int32_t) * (size_t)len);
        for (int q = 0; q < len; q++) mask[(size_t)b * T + q] = 1;
    }
    cache_run r = {t, d, idx, B, T, source, 0, 0, NULL, CVENE_OK};
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.attention_mask = mask;
    o.site_fn = cache_site;
    o.site_user = &r;
    const int L = cvene_model_get_info(t->m).n_layer;
    if (!source) {
        if (t->l0 < L) o.sites[CVENE_BLOCK_INPUT] = 1ull << t->l0;
        else o.sites[CVENE_BLOCK_OUTPUT] = 1ull << (L - 1);
        r.want = 1;
    } else {
        for (int i = 0; i < t->n_iv; i++)
            if (t->site[i].has_source && !((o.sites[t->site[i].comp] >> t->site[i].layer) & 1u)) {
                o.sites[t->site[i].comp] |= 1ull << t->site[i].layer;
                r.want++;
            }
    }
    cvene_status st = cvene_forward(t->m, ids, B, T, &o);
    if (st == CVENE_ERR_CALLBACK && r.err != CVENE_OK) st = r.err;
    free(ids), free(mask);
    return st;
}

/* Live rows: the clean keys and values of examples idx[0..B) above l0, from their cached residual
 * entering l0 and only as far as the latest start among them (earlier rows cannot see later ones). */
static cvene_status kv_forward(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B) {
    cvene_backend *be = t->ctx->be;
    const int C = t->C, L = cvene_model_get_info(t->m).n_layer;
    int T = 0;
    for (int b = 0; b < B; b++) T = t->start[idx[b]] > T ? t->start[idx[b]] : T;
    if (T == 0) return CVENE_OK;
    float *x = NULL, *zeros = calloc((size_t)T * C, sizeof(float));
    if (!zeros) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = train_dev_alloc(t, (void **)&x, sizeof(float) * (size_t)B * T * C, "a batch of keys and values");
    for (int b = 0; b < B && st == CVENE_OK; b++) { /* the residual's first T rows; zeros past a short one */
        const int e = idx[b], n = d->ex[e].base_len < T ? d->ex[e].base_len : T;
        st = be->ops->copy(be, x + (size_t)b * T * C, t->prefix + t->prefix_off[e], sizeof(float) * (size_t)n * C);
        if (st == CVENE_OK && n < T)
            st = be->ops->to_device(be, x + ((size_t)b * T + n) * C, zeros, sizeof(float) * (size_t)(T - n) * C);
    }
    free(zeros);
    cache_run r = {t, d, idx, B, T, 0, 0, 2 * (L - t->l0), NULL, CVENE_OK};
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.site_fn = cache_site;
    o.site_user = &r;
    for (int l = t->l0; l < L; l++) o.sites[CVENE_KEY_OUTPUT] |= 1ull << l, o.sites[CVENE_VALUE_OUTPUT] |= 1ull << l;
    cvene_resume rs;
    memset(&rs, 0, sizeof rs);
    rs.layer = t->l0, rs.x = x;
    if (st == CVENE_OK) st = t->m->vt->forward_from(t->m, &rs, B, T, &o);
    if (st == CVENE_ERR_CALLBACK && r.err != CVENE_OK) st = r.err;
    if (x) be->ops->free(be, x);
    return st;
}

/* Examples per cache forward. */
#define CACHE_CHUNK 32

/* One cache (n floats on the device) whose example e is the len[e] floats at off[e] (in floats),
 * from the rank that computed it to every rank. */
static cvene_status share_cache(cvene_trainer *t, float *dev, size_t n, const int *owner, int n_ex, const size_t *off,
                                const size_t *len) {
    cvene_backend *be = t->ctx->be;
    float *host = malloc(sizeof(float) * (n ? n : 1));
    size_t *bytes = malloc(sizeof(size_t) * 2 * (size_t)n_ex); /* comm_share_parts counts bytes */
    if (!host || !bytes) {
        free(host), free(bytes);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "train: out of memory sharing a cache of %zu floats", n);
    }
    for (int e = 0; e < n_ex; e++) bytes[e] = off[e] * sizeof(float), bytes[n_ex + e] = len[e] * sizeof(float);
    cvene_status st = be->ops->to_host(be, host, dev, sizeof(float) * n);
    if (st == CVENE_OK) st = comm_share_parts(t->p.comm, owner, n_ex, bytes, bytes + n_ex, host);
    if (st == CVENE_OK) st = be->ops->to_device(be, dev, host, sizeof(float) * n);
    free(host), free(bytes);
    return st;
}

/* The caches computed chunk by chunk on N ranks (chunk k of an order was rank k % N's),
 * shared: kv 0 the base prefixes (order: the examples' own) and the source units (order: src),
 * kv 1 the clean keys and values (order: src, by start). */
static cvene_status share_caches(cvene_trainer *t, const cvene_dataset *d, int N, int *owner, const int *src, int kv) {
    const int n = d->n, L = cvene_model_get_info(t->m).n_layer;
    size_t *off = malloc(sizeof(size_t) * 2 * (size_t)n);
    if (!off) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    size_t *len = off + n;
    cvene_status st = CVENE_OK;
    for (int q = 0; q < n; q++) owner[src[q]] = (q / CACHE_CHUNK) % N;
    if (kv) {
        for (int e = 0; e < n; e++) off[e] = t->kv_off[e], len[e] = (size_t)2 * (L - t->l0) * t->start[e] * t->C;
        st = share_cache(t, t->kv_cache, t->kv_off[n - 1] + len[n - 1], owner, n, off, len);
        free(off);
        return st;
    }
    for (int i = 0; st == CVENE_OK && i < t->n_iv; i++) {
        if (!t->site[i].src_cache) continue;
        const size_t per = (size_t)t->n_pos * t->site[i].D;
        for (int e = 0; e < n; e++) off[e] = (size_t)e * per, len[e] = per;
        st = share_cache(t, t->site[i].src_cache, per * n, owner, n, off, len);
    }
    for (int e = 0; e < n; e++) owner[e] = (e / CACHE_CHUNK) % N; /* the base chunks run in the examples' order */
    for (int e = 0; e < n; e++) off[e] = t->prefix_off[e], len[e] = (size_t)d->ex[e].base_len * t->C;
    if (st == CVENE_OK) st = share_cache(t, t->prefix, t->prefix_off[n - 1] + len[n - 1], owner, n, off, len);
    free(off);
    return st;
}

cvene_status train_build_caches(cvene_trainer *t, const cvene_dataset *d) {
    if (t->cached_uid == d->uid) return CVENE_OK;
    cvene_backend *be = t->ctx->be;
    const cvene_model_info mi = cvene_model_get_info(t->m);
    /* examples must fit the model and agree on their unit count */
    int n_pos = -1, any_source = 0;
    for (int i = 0; i < t->n_iv; i++) any_source |= t->site[i].has_source;
    for (int e = 0; e < d->n; e++) {
        const ds_example *x = &d->ex[e];
        if (n_pos < 0) n_pos = x->n_pos;
        if (x->n_pos != n_pos || x->n_pos < 1)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train: example %d has %d positions but example 0 has %d "
                              "(every example needs the same number, at least 1)", e, x->n_pos, n_pos);
        if (any_source && !x->source_len)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train: example %d has no source, which the interventions "
                              "need", e);
        const int32_t *ids[2] = {ds_base(d, e), ds_source(d, e)};
        const int lens[2] = {x->base_len, x->source_len};
        for (int k = 0; k < 2; k++) {
            if (lens[k] > mi.n_positions && mi.arch == CVENE_ARCH_GPT2)
                return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train: example %d's %s has %d tokens; the model takes "
                                  "at most %d", e, k ? "source" : "base", lens[k], mi.n_positions);
            for (int q = 0; q < lens[k]; q++)
                if (ids[k][q] < 0 || ids[k][q] >= mi.n_token_ids)
                    return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train: example %d: %s token %d = %d is outside "
                                      "the vocabulary [0, %d)", e, k ? "source" : "base", q, ids[k][q], mi.n_token_ids);
        }
        if (x->label < 0 || x->label >= mi.vocab_size)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train: example %d: label %d is outside the vocabulary "
                              "[0, %d)", e, x->label, mi.vocab_size);
    }
    for (int i = 0; i < t->n_iv; i++)
        if (t->site[i].flat && t->site[i].U != n_pos)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG,
                              "train: representations[%d] (%s) has max_number_of_units = %d but the examples list %d "
                              "position(s): pyvene rotates the %d positions of an example as one vector, so they "
                              "must agree", i, cvene_intervention_type_name(t->c->reps[i].r.type), t->site[i].U, n_pos,
                              n_pos);
    /* free the last dataset's caches; a new dataset starts a new epoch */
    free(t->order), t->order = NULL, t->batch_in_epoch = -1;
    if (t->prefix) be->ops->free(be, t->prefix), t->prefix = NULL;
    if (t->kv_cache) be->ops->free(be, t->kv_cache), t->kv_cache = NULL;
    free(t->start), t->start = NULL;
    free(t->kv_off), t->kv_off = NULL;
    for (int i = 0; i < t->n_iv; i++)
        if (t->site[i].src_cache) be->ops->free(be, t->site[i].src_cache), t->site[i].src_cache = NULL;
    free(t->prefix_off);
    t->prefix_off = malloc(sizeof(size_t) * (size_t)(d->n + 1));
    if (!t->prefix_off) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    size_t total = 0;
    t->T_max = 0;
    for (int e = 0; e < d->n; e++) {
        t->prefix_off[e] = total;
        total += (size_t)d->ex[e].base_len * t->C;
        if (d->ex[e].base_len > t->T_max) t->T_max = d->ex[e].base_len;
    }
    t->n_pos = n_pos;
    CVENE_TRY(train_dev_alloc(t, (void **)&t->prefix, total * sizeof(float), "the cached base activations"));
    size_t kv_total = 0; /* floats */
    if (t->live) { /* each example's first live row: its first unit or its loss row, whichever comes first */
        t->start = malloc(sizeof(int) * (size_t)d->n);
        t->kv_off = malloc(sizeof(size_t) * (size_t)(d->n + 1));
        if (!t->start || !t->kv_off) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
        for (int e = 0; e < d->n; e++) {
            int s0 = d->ex[e].label_pos;
            for (int u = 0; u < n_pos; u++) s0 = ds_base_pos(d, e)[u] < s0 ? ds_base_pos(d, e)[u] : s0;
            t->start[e] = s0;
            t->kv_off[e] = kv_total;
            kv_total += (size_t)2 * (mi.n_layer - t->l0) * s0 * t->C;
        }
        /* the clean keys and values cost this much once; beyond the budget, every row runs instead */
        if (kv_total * sizeof(float) <= TRAIN_LIVE_CACHE_BYTES)
            CVENE_TRY(train_dev_alloc(t, (void **)&t->kv_cache, kv_total * sizeof(float), "the cached keys and values"));
    }
    for (int i = 0; i < t->n_iv; i++)
        if (t->site[i].has_source)
            CVENE_TRY(train_dev_alloc(t, (void **)&t->site[i].src_cache, sizeof(float) * (size_t)d->n * n_pos * t->site[i].D,
                                "the cached source units"));
    /* the sources in order of the tokens they need, so a chunk's forward is as short as they allow */
    int *idx = malloc(sizeof(int) * (size_t)d->n), *src = malloc(sizeof(int) * (size_t)d->n);
    need_of *by = malloc(sizeof(need_of) * (size_t)d->n);
    if (!idx || !src || !by) {
        free(idx), free(src), free(by);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    }
    for (int e = 0; e < d->n; e++) idx[e] = e, by[e] = (need_of){any_source ? source_need(d, e) : 0, e};
    qsort(by, (size_t)d->n, sizeof *by, by_need);
    for (int e = 0; e < d->n; e++) src[e] = by[e].e;
    /* CPU ranks: chunk k is rank k % N's, and then every rank gets every example's (the same chunks
     * as one process: the same bits). Sharing moves (L - l0) 2 C floats per cached row over MPI,
     * three times quicker than a CPU computes them (bench/RESULTS.md, "ranks-train"); a GPU computes
     * them quicker than they cross the host, so device ranks compute every chunk themselves (as do
     * ranks whose caches pass MPI's 2 GiB per message). */
    size_t biggest = total > kv_total ? total : kv_total; /* floats: the prefix, the keys and values, a site's sources */
    for (int i = 0; i < t->n_iv; i++)
        if ((size_t)d->n * t->n_pos * t->site[i].D > biggest) biggest = (size_t)d->n * t->n_pos * t->site[i].D;
    const int split = t->ctx->params.device == CVENE_DEVICE_CPU && biggest * sizeof(float) < (size_t)1 << 31;
    const int N = split ? train_ranks(t) : 1, me = N > 1 ? train_rank(t) : 0;
    const int chunk = CACHE_CHUNK;
    int *owner = N > 1 ? malloc(sizeof(int) * (size_t)d->n) : NULL;
    cvene_status st = N > 1 && !owner ? cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory") : CVENE_OK;
    for (int e0 = 0, k = 0; e0 < d->n && st == CVENE_OK; e0 += chunk, k++) {
        const int B = d->n - e0 < chunk ? d->n - e0 : chunk;
        if (k % N != me) continue;
        st = cache_forward(t, d, idx + e0, B, 0);
        if (st == CVENE_OK && any_source) st = cache_forward(t, d, src + e0, B, 1);
    }
    if (st == CVENE_OK && N > 1) st = share_caches(t, d, N, owner, src, 0);
    if (st == CVENE_OK && t->kv_cache) { /* by start, so a chunk runs no further than it must */
        for (int e = 0; e < d->n; e++) by[e] = (need_of){t->start[e], e};
        qsort(by, (size_t)d->n, sizeof *by, by_need);
        for (int e = 0; e < d->n; e++) src[e] = by[e].e;
        for (int e0 = 0, k = 0; e0 < d->n && st == CVENE_OK; e0 += chunk, k++)
            if (k % N == me) st = kv_forward(t, d, src + e0, d->n - e0 < chunk ? d->n - e0 : chunk);
        if (st == CVENE_OK && N > 1) st = share_caches(t, d, N, owner, src, 1);
    }
    free(idx), free(src), free(by), free(owner);
    if (st == CVENE_OK) {
        double all = 0, run = 0;
        for (int e = 0; e < d->n; e++) {
            all += d->ex[e].base_len;
            run += d->ex[e].base_len - (t->kv_cache ? t->start[e] : 0);
        }
        t->rows_fraction = all > 0 ? run / all : 0;
        t->cached_uid = d->uid;
    }
    return st;
}

/* ---- batch buffers ---- */

/* Frees what batch_buffers allocates (sized by the dataset's longest example and unit count). */
void train_free_batch_buffers(cvene_trainer *t) {
    cvene_backend *be = t->ctx->be;
    float **dev[] = {&t->x0, &t->zeros, &t->logits, &t->dlogits, &t->loss_dev, &t->ub, &t->uo, &t->kv};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (*dev[i]) be->ops->free(be, *dev[i]), *dev[i] = NULL;
    if (t->labels) be->ops->free(be, t->labels), t->labels = NULL;
    for (int i = 0; i < t->n_iv; i++) {
        iv_site *s = &t->site[i];
        if (s->us) be->ops->free(be, s->us), s->us = NULL;
        if (s->off) be->ops->free(be, s->off), s->off = NULL;
        tr_state_free(t->st[i]), t->st[i] = NULL;
    }
    free(t->off_host), free(t->mask), free(t->rows), free(t->live_start), free(t->live_end);
    t->off_host = NULL, t->mask = NULL, t->rows = NULL, t->live_start = NULL, t->live_end = NULL;
}

/* The batch's buffers for the cached dataset: kept while its examples fit them. */
cvene_status train_batch_buffers(cvene_trainer *t) {
    if (t->x0 && t->T_max <= t->T_buf && t->n_pos == t->n_pos_buf && (t->kv != NULL) == (t->kv_cache != NULL))
        return CVENE_OK;
    train_free_batch_buffers(t);
    const int Bm = t->p.batch_size, T = t->T_max, C = t->C, V = t->V;
    int Dmax = C;
    for (int i = 0; i < t->n_iv; i++) Dmax = t->site[i].D > Dmax ? t->site[i].D : Dmax;
    t->n_max = Bm * t->n_pos;
    CVENE_TRY(train_dev_alloc(t, (void **)&t->x0, sizeof(float) * (size_t)Bm * T * C, "a batch"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->zeros, sizeof(float) * (size_t)T * C, "a batch"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->logits, sizeof(float) * (size_t)Bm * V, "logits"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->dlogits, sizeof(float) * (size_t)Bm * V, "logits"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->loss_dev, sizeof(float) * (size_t)Bm, "losses"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->labels, sizeof(int32_t) * (size_t)Bm, "labels"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->ub, sizeof(float) * (size_t)t->n_max * Dmax, "units"));
    CVENE_TRY(train_dev_alloc(t, (void **)&t->uo, sizeof(float) * (size_t)t->n_max * Dmax, "units"));
    if (t->kv_cache) {
        const int n_layers = cvene_model_get_info(t->m).n_layer - t->l0;
        CVENE_TRY(train_dev_alloc(t, (void **)&t->kv, sizeof(float) * (size_t)2 * n_layers * Bm * T * C,
                            "the batch's keys and values"));
    }
    for (int i = 0; i < t->n_iv; i++) {
        iv_site *s = &t->site[i];
        CVENE_TRY(train_dev_alloc(t, (void **)&s->us, sizeof(float) * (size_t)t->n_max * s->D, "source units"));
        CVENE_TRY(train_dev_alloc(t, (void **)&s->off, sizeof(int64_t) * 2 * (size_t)t->n_max, "unit indices"));
        CVENE_TRY(tr_state_new(t->ctx, &t->w[i], s->flat ? Bm : t->n_max, &t->st[i]));
        CVENE_TRY(tr_prepare(t->st[i]));
    }
    t->off_host = malloc(sizeof(int64_t) * 2 * (size_t)t->n_max);
    t->mask = malloc(sizeof(int32_t) * (size_t)Bm * T);
    t->rows = malloc(sizeof(int32_t) * (size_t)Bm);
    t->live_start = malloc(sizeof(int) * (size_t)Bm);
    t->live_end = malloc(sizeof(int) * (size_t)Bm);
    float *z = calloc((size_t)T * C, sizeof(float));
    cvene_status st = t->off_host && t->mask && t->rows && t->live_start && t->live_end && z
                          ? CVENE_OK : cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = t->ctx->be->ops->to_device(t->ctx->be, t->zeros, z, sizeof(float) * (size_t)T * C);
    free(z);
    if (st == CVENE_OK) t->T_buf = T, t->n_pos_buf = t->n_pos;
    return st;
}

/* The batch of examples idx[0..B): x0, mask, loss rows and labels, each intervention's unit
 * indices and source units. */
cvene_status train_load_batch(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B) {
    cvene_backend *be = t->ctx->be;
    const int C = t->C;
    int T = 0;
    for (int b = 0; b < B; b++) T = d->ex[idx[b]].base_len > T ? d->ex[idx[b]].base_len : T;
    t->B = B, t->T = T;
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)B);
    if (!labels) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = CVENE_OK;
    for (int b = 0; b < B && st == CVENE_OK; b++) {
        const ds_example *x = &d->ex[idx[b]];
        st = be->ops->copy(be, t->x0 + (size_t)b * T * C, t->prefix + t->prefix_off[idx[b]],
                           sizeof(float) * (size_t)x->base_len * C);
        if (st == CVENE_OK && x->base_len < T) /* padding: zeros, masked */
            st = be->ops->copy(be, t->x0 + ((size_t)b * T + x->base_len) * C, t->zeros,
                               sizeof(float) * (size_t)(T - x->base_len) * C);
        for (int q = 0; q < T; q++) t->mask[(size_t)b * T + q] = q < x->base_len;
        t->rows[b] = b * T + x->label_pos;
        labels[b] = x->label;
        if (t->kv) { /* live rows from its start; the clean keys and values before it */
            const int n = t->start[idx[b]], n_kv = 2 * (cvene_model_get_info(t->m).n_layer - t->l0);
            t->live_start[b] = n, t->live_end[b] = x->base_len;
            for (int j = 0; j < n_kv && n > 0 && st == CVENE_OK; j++)
                st = be->ops->copy(be, t->kv + ((size_t)j * B + b) * T * C,
                                   t->kv_cache + t->kv_off[idx[b]] + (size_t)j * n * C, sizeof(float) * (size_t)n * C);
        }
    }
    if (st == CVENE_OK) st = be->ops->to_device(be, t->labels, labels, sizeof(int32_t) * (size_t)B);
    free(labels);
    const int n = B * t->n_pos;
    for (int i = 0; i < t->n_iv && st == CVENE_OK; i++) {
        iv_site *s = &t->site[i];
        for (int b = 0; b < B; b++)
            for (int u = 0; u < t->n_pos; u++) {
                const int q = b * t->n_pos + u;
                t->off_host[q] = ((int64_t)b * T + ds_base_pos(d, idx[b])[u]) * s->D; /* in the site tensor */
                t->off_host[n + q] = (int64_t)q * s->D;                                /* in a (n, D) buffer */
            }
        st = be->ops->to_device(be, s->off, t->off_host, sizeof(int64_t) * 2 * (size_t)n);
        for (int b = 0; s->has_source && b < B && st == CVENE_OK; b++)
            st = be->ops->copy(be, s->us + (size_t)b * t->n_pos * s->D,
                               s->src_cache + (size_t)idx[b] * t->n_pos * s->D,
                               sizeof(float) * (size_t)t->n_pos * s->D);
    }
    return st;
}
