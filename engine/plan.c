/* Planning a request's forward passes and running one pass (docs/interventions.md, "Plans"):
 *  - parallel, same lengths: one batched forward holding each distinct source, the base and
 *    the clean base; at each site sources are gathered before the base rows are overwritten;
 *  - parallel, other lengths (and GRU sources read at unit t, whose timesteps may come after
 *    the base steps they feed): those sources first, batched by length, each stopping after
 *    the last site it feeds; then the base pass;
 *  - serial: source_0, then source_1 with group 0's interventions applied, ..., then the base.
 * A source given to several groups runs once. */
#include <stdlib.h>
#include <string.h>

#include "engine/run_internal.h"

static int same_input(const iv_input *a, const iv_input *b) {
    if (a->B != b->B || a->T != b->T || !a->mask != !b->mask || !a->pos != !b->pos) return 0;
    size_t n = (size_t)a->B * a->T;
    return !memcmp(a->ids, b->ids, n * 4) && (!a->mask || !memcmp(a->mask, b->mask, n * 4)) &&
           (!a->pos || !memcmp(a->pos, b->pos, n * 4));
}

/* ---- one pass ----------------------------------------------------------- */

void iv_pass_begin(run_state *s, block *blocks, int n_blocks, int T, int want_logits, cvene_run_opts *o) {
    memset(o, 0, sizeof *o);
    s->last_site = -1;
    memset(s->step, 0, sizeof s->step);
    for (int k = 0; k < n_blocks; k++) {
        for (int j = 0; j < blocks[k].n_setters; j++) {
            const cvene_representation *r = &s->c->reps[blocks[k].setters[j]].r;
            o->sites[iv_physical(r->component)] |= 1ull << r->layer;
        }
        for (int j = 0; j < blocks[k].n_getters; j++) {
            const cvene_representation *r = &s->c->reps[blocks[k].getters[j]].r;
            o->sites[iv_physical(iv_getter_component(r, s->m))] |= 1ull << r->layer;
            int last_step = 0; /* unit t: the last source timestep read */
            if (r->unit == CVENE_UNIT_T) {
                const iv_locs *sl = &s->locs[2 * blocks[k].getters[j]];
                last_step = sl->present ? 0 : T - 1;
                for (int q = 0; sl->present && q < s->B * sl->U; q++)
                    if (sl->idx[q] > last_step) last_step = sl->idx[q];
            }
            int64_t so = iv_site_order(iv_physical(iv_getter_component(r, s->m)), r->layer, last_step);
            if (!want_logits && so > s->last_site) s->last_site = so;
        }
    }
    if (want_logits) s->last_site = -1;
    cvene_model_info mi = cvene_model_get_info(s->m);
    if (s->diagnose) { /* every layer's output too, and the embeddings */
        const int L = mi.n_layer;
        const uint64_t all = L >= 64 ? ~0ull : (1ull << L) - 1;
        if (mi.arch == CVENE_ARCH_GRU) o->sites[CVENE_CELL_OUTPUT] |= all;
        else o->sites[CVENE_BLOCK_OUTPUT] |= all, o->sites[CVENE_BLOCK_INPUT] |= 1;
    }
    o->site_fn = iv_on_site;
    o->site_user = s;
    s->blocks = blocks;
    s->n_blocks = n_blocks;
    s->T = T;
    s->err = CVENE_OK;
    for (int l = 0; l < s->n_links; l++) { /* link chains live within one forward */
        free(s->link[l].hot);
        s->link[l].hot = NULL;
        s->link[l].dev_len = 0;
    }
}

cvene_status iv_pass_end(run_state *s, cvene_status st) {
    if (st == CVENE_ERR_CALLBACK && s->err != CVENE_OK) st = cvene_fail(s->ctx, s->err, "%s", s->errmsg);
    s->res->n_passes++;
    return st;
}


static cvene_status run_pass(run_state *s, block *blocks, int n_blocks, int want_logits) {
    int N = 0, T = blocks[0].in->T;
    for (int k = 0; k < n_blocks; k++) {
        blocks[k].row0 = N;
        N += blocks[k].in->B;
    }
    cvene_model_info mi = cvene_model_get_info(s->m);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N * T);
    int32_t *mask = malloc(sizeof(int32_t) * (size_t)N * T);
    /* position ids when any block has them; the others get transformers' default 0..T-1 (a
     * GRU's blocks all have them or none do: cvene_run checks) */
    int any_pos = 0;
    for (int k = 0; k < n_blocks; k++) any_pos |= blocks[k].in->pos != NULL;
    int32_t *pos = any_pos ? malloc(sizeof(int32_t) * (size_t)N * T) : NULL;
    /* logits only for the base (and clean base) rows, which come last: written straight
     * into the result, the clean base's right after the base's */
    int row0 = N;
    for (int k = 0; want_logits && k < n_blocks; k++)
        if (blocks[k].role != ROLE_SOURCE && blocks[k].row0 < row0) row0 = blocks[k].row0;
    float *logits = want_logits ? malloc(sizeof(float) * (size_t)(N - row0) * T * mi.vocab_size) : NULL;
    if (!ids || !mask || (want_logits && !logits) || (any_pos && !pos)) {
        free(ids), free(mask), free(logits), free(pos);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory assembling a batch of %d x %d", N, T);
    }
    for (int k = 0; k < n_blocks; k++) {
        const iv_input *in = blocks[k].in;
        memcpy(ids + (size_t)blocks[k].row0 * T, in->ids, sizeof(int32_t) * (size_t)in->B * T);
        for (int64_t q = 0; q < (int64_t)in->B * T; q++)
            mask[(size_t)blocks[k].row0 * T + q] = in->mask ? in->mask[q] : 1;
        for (int64_t q = 0; pos && q < (int64_t)in->B * T; q++)
            pos[(size_t)blocks[k].row0 * T + q] = in->pos ? in->pos[q] : (int32_t)(q % T);
    }
    cvene_run_opts o;
    iv_pass_begin(s, blocks, n_blocks, T, want_logits, &o);
    o.attention_mask = mask;
    o.position_ids = pos;
    o.logits = logits;
    o.logits_row0 = want_logits ? row0 : 0;
    cvene_status st = iv_pass_end(s, cvene_forward(s->m, ids, N, T, &o));
    if (st == CVENE_OK && want_logits) {
        for (int k = 0; k < n_blocks; k++) {
            if (blocks[k].role == ROLE_BASE) s->res->logits = logits + (size_t)(blocks[k].row0 - row0) * T * mi.vocab_size;
            if (blocks[k].role == ROLE_ORIG) s->res->orig_logits = logits + (size_t)(blocks[k].row0 - row0) * T * mi.vocab_size;
        }
        s->res->logits_mem = logits; /* owns both */
        logits = NULL;
    }
    free(ids), free(mask), free(logits), free(pos);
    return st;
}

/* Whether an intervention acts on a run: types that need a source only with one (pyvene's
 * None source leaves them out). */
static int is_active(const cvene_representation *r, const iv_input *src) {
    return !iv_needs_source(r) || r->source != NULL || src != NULL;
}

/* Interventions of group g (or all when g < 0) that act on a run. */
static int collect_setters(const run_state *s, const iv_input **src, int g, int *out) {
    int k = 0;
    for (int i = 0; i < s->c->n; i++)
        if ((g < 0 || iv_group(s->c, i) == g) && is_active(&s->c->reps[i].r, src[iv_group(s->c, i)])) out[k++] = i;
    return k;
}

static int runs_first(const run_state *s, const block *bk, const iv_input *base) {
    if (bk->in->T != base->T) return 1;
    for (int j = 0; j < bk->n_getters; j++)
        if (s->c->reps[bk->getters[j]].r.unit == CVENE_UNIT_T) return 1;
    return 0;
}

/* One block per distinct source input holding the interventions it feeds (never run the same
 * source twice); lists: room for the getter lists, (2n + 1) ints per block. */
static int source_blocks(const run_state *s, const iv_input **src, block *blocks, int *lists) {
    const cvene_config *c = s->c;
    const int n = c->n;
    int nb = 0;
    for (int i = 0; i < n; i++) {
        if (!s->iv[i].store) continue;
        const iv_input *in = src[iv_group(c, i)];
        int k = 0;
        while (k < nb && !same_input(blocks[k].in, in)) k++;
        if (k == nb) {
            blocks[nb] = (block){ROLE_SOURCE, iv_group(c, i), in, 0, NULL, 0, lists + (size_t)nb * (2 * n + 1), 0};
            nb++;
        }
        blocks[k].getters[blocks[k].n_getters++] = i;
    }
    return nb;
}

/* The source blocks for which first(s, block) holds, batched by length, each pass stopping at
 * its last site; they are marked done (role -1). */
static cvene_status run_source_passes(run_state *s, block *blocks, int nb, block *pass, const iv_input *base,
                                      int (*first)(const run_state *, const block *, const iv_input *)) {
    for (int k = 0; k < nb; k++) {
        if (blocks[k].role != ROLE_SOURCE || !first(s, &blocks[k], base)) continue;
        int m = 0, T = blocks[k].in->T;
        for (int q = k; q < nb; q++)
            if (blocks[q].role == ROLE_SOURCE && blocks[q].in->T == T && first(s, &blocks[q], base)) {
                pass[m++] = blocks[q];
                blocks[q].role = -1; /* done */
            }
        CVENE_TRY(run_pass(s, pass, m, 0));
    }
    return CVENE_OK;
}

static int always(const run_state *s, const block *bk, const iv_input *base) {
    (void)s, (void)bk, (void)base;
    return 1;
}

cvene_status iv_run_sources(run_state *s, const iv_input **src) {
    const int n = s->c->n;
    block *blocks = calloc((size_t)s->c->n_groups + 1, sizeof(block));
    block *pass = calloc((size_t)s->c->n_groups + 1, sizeof(block));
    int *lists = malloc(sizeof(int) * (size_t)(2 * n + 1) * ((size_t)s->c->n_groups + 1));
    cvene_status st = blocks && pass && lists ? CVENE_OK : cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) st = run_source_passes(s, blocks, source_blocks(s, src, blocks, lists), pass, NULL, always);
    free(blocks), free(pass), free(lists);
    return st;
}

int iv_base_setters(const run_state *s, const iv_input **src, int *out) { return collect_setters(s, src, -1, out); }

cvene_status iv_plan_parallel(run_state *s, const iv_input **src, const iv_input *base, int orig) {
    const cvene_config *c = s->c;
    int n = c->n;
    block *blocks = calloc((size_t)c->n_groups + 2, sizeof(block));
    int *lists = malloc(sizeof(int) * (size_t)(2 * n + 1) * ((size_t)c->n_groups + 2));
    block *pass = calloc((size_t)c->n_groups + 2, sizeof(block));
    if (!blocks || !lists || !pass) {
        free(blocks), free(lists), free(pass);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    const int nb = source_blocks(s, src, blocks, lists);
    /* sources of another length (and GRU sources read at unit t, whose timesteps may come
     * after the base steps they feed) run first, batched by length, stopping at their
     * last site */
    cvene_status st = run_source_passes(s, blocks, nb, pass, base, runs_first);
    /* the base pass: same-length sources, the base, and the clean base */
    int m = 0;
    for (int k = 0; k < nb; k++)
        if (blocks[k].role == ROLE_SOURCE) pass[m++] = blocks[k];
    int *setters = lists + (size_t)(c->n_groups + 1) * (2 * n + 1);
    pass[m++] = (block){ROLE_BASE, -1, base, 0, setters, collect_setters(s, src, -1, setters), NULL, 0};
    if (orig) pass[m++] = (block){ROLE_ORIG, -1, base, 0, NULL, 0, NULL, 0};
    if (st == CVENE_OK) st = run_pass(s, pass, m, 1);
    free(blocks), free(lists), free(pass);
    return st;
}

/* Serial mode's chain: source_0, then source_1 with group 0's interventions applied (none with
 * chained 0), ...; setters (room for n + 1) gets the interventions that then act on the base (those
 * of the last group with a source; with run 0 only that list, nothing runs). */
static cvene_status serial_chain(run_state *s, const iv_input **src, int run, int chained, int *setters,
                                 int *n_setters) {
    const cvene_config *c = s->c;
    int n = c->n;
    int *prev = malloc(sizeof(int) * (size_t)(n + 1)), *cur = malloc(sizeof(int) * (size_t)(n + 1));
    int *get = malloc(sizeof(int) * (size_t)(n + 1));
    if (!prev || !cur || !get) {
        free(prev), free(cur), free(get);
        return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    }
    int n_prev = 0;
    cvene_status st = CVENE_OK;
    for (int g = 0; g < c->n_groups && st == CVENE_OK; g++) {
        if (!src[g]) continue; /* as pyvene: the previous setters stay active */
        int ng = 0;
        for (int i = 0; i < n; i++)
            if (iv_group(c, i) == g && s->iv[i].store) get[ng++] = i;
        if (ng && run) {
            block b = {ROLE_SOURCE, g, src[g], 0, prev, chained ? n_prev : 0, get, ng};
            st = run_pass(s, &b, 1, 0);
        }
        n_prev = collect_setters(s, src, g, cur);
        int *t = prev;
        prev = cur, cur = t;
    }
    memcpy(setters, prev, sizeof(int) * (size_t)n_prev);
    *n_setters = n_prev;
    free(prev), free(cur), free(get);
    return st;
}

cvene_status iv_run_serial_sources(run_state *s, const iv_input **src, int chained, int *setters, int *n_setters) {
    return serial_chain(s, src, 1, chained, setters, n_setters);
}

int iv_serial_base_setters(run_state *s, const iv_input **src, int *out) {
    int n = 0;
    return serial_chain(s, src, 0, 1, out, &n) == CVENE_OK ? n : 0;
}

cvene_status iv_plan_serial(run_state *s, const iv_input **src, const iv_input *base, int orig) {
    int *setters = malloc(sizeof(int) * (size_t)(s->c->n + 1)), n_setters = 0;
    if (!setters) return cvene_fail(s->ctx, CVENE_ERR_OOM, "out of memory");
    cvene_status st = serial_chain(s, src, 1, 1, setters, &n_setters);
    if (st == CVENE_OK) {
        block pass[2] = {{ROLE_BASE, -1, base, 0, setters, n_setters, NULL, 0},
                         {ROLE_ORIG, -1, base, 0, NULL, 0, NULL, 0}};
        st = run_pass(s, pass, orig ? 2 : 1, 1);
    }
    free(setters);
    return st;
}
