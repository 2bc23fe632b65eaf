/* The trainer (cvene.h, "training"). With the model frozen, what lies below the lowest
 * intervention is the same in every epoch, and so is every source's activation at its site:
 * both are computed once per dataset (engine/train_data.c) and each step runs only the layers from
 * the lowest intervention up (the model's training pass, models/model.h), with the
 * interventions applied at their sites, then the loss at each example's label position and the
 * backward down to that layer, where each intervention's backward takes its units' gradient.
 *
 * Units: unit "pos" on (B, T, d) streams; example b's n_pos positions are its units, so a batch
 * has B n_pos units per intervention, gathered in order into a (B, n_pos d) buffer. Distributed
 * types (the rotations) act on each example's n_pos d floats as one vector, as pyvene flattens
 * them (then max_number_of_units must be n_pos, and the rotation is (n_pos d) square or tall);
 * the others (SigmoidMask, JumpReLU, pyreft's) act on each unit's d floats (tr_type_flattened). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"
#include "engine/dataset.h"
#include "engine/intervene.h"
#include "engine/iv_type.h"
#include "engine/optim.h"
#include "engine/train.h"
#include "engine/trained.h"
#include "engine/train_io.h"
#include "engine/trainable.h"
#include "kernels/tensor.h"
#include "models/model.h"

cvene_train_params cvene_train_default_params(void) {
    cvene_train_params p;
    memset(&p, 0, sizeof p);
    p.epochs = 1, p.batch_size = 16, p.grad_accum = 1;
    p.optimizer = CVENE_OPTIM_ADAM;
    p.lr = 1e-3, p.beta1 = 0.9, p.beta2 = 0.999, p.eps = 1e-8;
    p.warmup_ratio = 0.1;
    p.shuffle = 1;
    p.boundary_lr = 1e-2;
    return p;
}

#include "engine/train_internal.h"

static cvene_component phys(cvene_component c) { return c; }

static int unit_dim(const cvene_model_info *mi, cvene_component c) {
    return c == CVENE_MLP_ACTIVATION ? mi->n_inner : mi->n_embd;
}

void cvene_trainer_free(cvene_trainer *t) {
    if (!t) return;
    cvene_backend *be = t->ctx->be;
    if (t->st && t->site) train_free_batch_buffers(t);
    for (int i = 0; i < t->n_iv; i++) {
        if (t->w) tr_weights_free(&t->w[i]);
        if (t->site && t->site[i].src_cache) be->ops->free(be, t->site[i].src_cache);
    }
    if (t->prefix) be->ops->free(be, t->prefix);
    if (t->kv_cache) be->ops->free(be, t->kv_cache);
    free(t->w), free(t->st), free(t->site), free(t->prefix_off), free(t->losses), free(t->order), free(t->start);
    free(t->kv_off);
    free(t);
}

cvene_status train_dev_alloc(cvene_trainer *t, void **p, size_t bytes, const char *what) {
    cvene_backend *be = t->ctx->be;
    if (be->ops->alloc(be, p, bytes ? bytes : 4) != CVENE_OK) {
        *p = NULL;
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "training: cannot allocate %zu bytes for %s", bytes, what);
    }
    return CVENE_OK;
}

cvene_status cvene_trainer_new(cvene_model *m, const cvene_config *c, const cvene_train_params *p,
                               cvene_trainer **out) {
    if (!out) return CVENE_ERR_INVALID_ARG;
    *out = NULL;
    if (!m || !c) return CVENE_ERR_INVALID_ARG;
    cvene_ctx *ctx = m->ctx;
    const cvene_train_params P = p ? *p : cvene_train_default_params();
    if (P.shards < 0 || P.shards > P.batch_size)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "train: shards %d is out of range [0, batch_size %d]", P.shards,
                          P.batch_size);
    if (P.batch_size < 1 || P.grad_accum < 1 || P.epochs < 1 || P.max_steps < 0 || !(P.lr >= 0) || P.warmup_ratio < 0 ||
        P.warmup_ratio > 1 || !(P.beta1 >= 0 && P.beta1 < 1) || !(P.beta2 >= 0 && P.beta2 < 1) || !(P.eps > 0))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "train: batch_size %d, grad_accum %d, epochs %d (>= 1), lr %g (>= 0), warmup_ratio %g "
                          "([0, 1]), betas %g %g ([0, 1)), eps %g (> 0): a value is out of range",
                          P.batch_size, P.grad_accum, P.epochs, P.lr, P.warmup_ratio, P.beta1, P.beta2, P.eps);
    if (!m->vt->train_forward)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "train: %s models cannot train yet (GPT-2 and GPT-NeoX can)", m->vt->name);
    const cvene_model_info mi = cvene_model_get_info(m);
    cvene_trainer *t = calloc(1, sizeof *t);
    if (!t) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    t->ctx = ctx, t->m = m, t->c = c, t->p = P, t->n_iv = c->n, t->C = mi.n_embd, t->V = mi.vocab_size;
    t->batch_in_epoch = -1, t->rng = P.seed ^ 0x7261696eull;
    t->w = calloc((size_t)c->n, sizeof(tr_weights));
    t->st = calloc((size_t)c->n, sizeof(tr_state *));
    t->site = calloc((size_t)c->n, sizeof(iv_site));
    cvene_status st = t->w && t->st && t->site ? CVENE_OK : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    t->l0 = mi.n_layer;
    for (int i = 0; st == CVENE_OK && i < c->n; i++) {
        const cvene_representation *r = &c->reps[i].r;
        const char *tn = cvene_intervention_type_name(r->type);
        if (!tr_type_trainable(r->type))
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: %s is not trainable (RotatedSpace, "
                            "LowRankRotatedSpace, BoundlessRotatedSpace, SigmoidMaskRotatedSpace, SigmoidMask, "
                            "Autoencoder, JumpReLUAutoencoder and pyreft's Loreft, Noreft, Consreft, Lobireft, Direft "
                            "and Nodireft interventions are; PCARotatedSpace takes part, frozen)", i, tn);
        else if (r->unit != CVENE_UNIT_POS || cvene_component_is_gru(r->component) ||
                 r->component == CVENE_ATTENTION_WEIGHT)
            st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "representations[%d]: training acts on unit \"pos\" of a (B, T, D) "
                            "stream of a transformer; %s with unit \"%s\" is not supported", i,
                            cvene_component_name(r->component), cvene_unit_name(r->unit));
        else if (r->layer >= mi.n_layer)
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].layer = %d: the model has %d layers", i,
                            r->layer, mi.n_layer);
        else if (r->link_key >= 0 || r->n_partitions)
            st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "representations[%d]: intervention_link_key and "
                            "subspace_partition are not supported in training yet", i);
        if (st != CVENE_OK) break;
        iv_site *s = &t->site[i];
        s->comp = phys(r->component), s->layer = r->layer, s->D = unit_dim(&mi, r->component);
        s->U = r->max_number_of_units;
        s->flat = tr_type_flattened(r->type);
        s->has_source = iv_type_get(r->type)->flags & IV_NEEDS_SOURCE ? 1 : 0;
        const int width = s->flat ? s->U * s->D : s->D; /* what the intervention's parameters act on */
        const int first = r->component == CVENE_BLOCK_OUTPUT ? r->layer + 1 : r->layer;
        if (first < t->l0) t->l0 = first;
        st = tr_weights_for_rep(ctx, r, i, width, P.seed + (uint64_t)i * 7919u, &t->w[i]);
    }
    if (st != CVENE_OK) {
        cvene_trainer_free(t);
        return st;
    }
    /* live rows when every site is on the residual entering l0 (models/model.h); their clean keys
     * and values come from a resumed forward (train_data.c), which both architectures have */
    t->live = (mi.arch == CVENE_ARCH_GPT2 || mi.arch == CVENE_ARCH_GPT_NEOX) && m->vt->forward_from &&
              t->l0 < mi.n_layer;
    for (int i = 0; i < c->n; i++)
        t->live &= (t->site[i].comp == CVENE_BLOCK_OUTPUT && t->site[i].layer == t->l0 - 1) ||
                   (t->site[i].comp == CVENE_BLOCK_INPUT && t->site[i].layer == t->l0);
    *out = t;
    return CVENE_OK;
}

int train_live_rows(const cvene_trainer *t) { return t->kv != NULL; }

void train_full_rows(cvene_trainer *t) {
    t->live = 0;
    t->cached_uid = 0; /* the caches follow */
}

/* ---- the pass ---- */

typedef struct {
    cvene_trainer *t;
    cvene_status err;
    char msg[CVENE_ERR_LEN];
} pass_run;

/* gather (op COLLECT) or scatter (VANILLA) intervention i's n units between the stream x and buf */
static cvene_status units(cvene_trainer *t, int i, float *x, float *buf, int op) {
    cvene_backend *be = t->ctx->be;
    const iv_site *s = &t->site[i];
    const int n = t->B * t->n_pos;
    return be->ops->iv_units(be, x, s->off, s->D, buf, s->off + n, s->D, NULL, NULL, NULL, n, 1, s->D, op);
}

static int fail_pass(pass_run *r) {
    snprintf(r->msg, sizeof r->msg, "%s", cvene_ctx_error(r->t->ctx));
    return 1;
}

/* rows the intervention's forward and backward see: an example's units as one vector, or each */
static int iv_rows(const cvene_trainer *t, const iv_site *s) { return s->flat ? t->B : t->B * t->n_pos; }

static int train_site(void *user, cvene_component comp, int layer, cvene_tensor_view *v) {
    pass_run *r = user;
    cvene_trainer *t = r->t;
    for (int i = 0; i < t->n_iv; i++) {
        const iv_site *s = &t->site[i];
        if (s->comp != comp || s->layer != layer) continue;
        const int n = iv_rows(t, s);
        if ((r->err = units(t, i, v->data, t->ub, CVENE_IVOP_COLLECT)) != CVENE_OK ||
            (r->err = tr_forward(t->st[i], t->uo, t->ub, s->has_source ? s->us : t->ub, n)) != CVENE_OK ||
            (r->err = units(t, i, v->data, t->uo, CVENE_IVOP_VANILLA)) != CVENE_OK)
            return fail_pass(r);
    }
    return 0;
}

static int train_grad(void *user, cvene_component comp, int layer, cvene_tensor_view *v) {
    pass_run *r = user;
    cvene_trainer *t = r->t;
    for (int i = t->n_iv - 1; i >= 0; i--) { /* the reverse of the forward's order */
        const iv_site *s = &t->site[i];
        if (s->comp != comp || s->layer != layer) continue;
        const int n = iv_rows(t, s);
        if ((r->err = units(t, i, v->data, t->ub, CVENE_IVOP_COLLECT)) != CVENE_OK ||
            (r->err = tr_backward(t->st[i], t->uo, t->ub, n)) != CVENE_OK ||
            (r->err = units(t, i, v->data, t->uo, CVENE_IVOP_VANILLA)) != CVENE_OK)
            return fail_pass(r);
    }
    return 0;
}

static model_train_pass make_pass(cvene_trainer *t) {
    model_train_pass tp = {t->l0, t->x0, t->B, t->T, t->mask, NULL, t->rows, t->B, t->logits,
                           t->kv ? t->live_start : NULL, t->kv ? t->live_end : NULL, t->kv};
    return tp;
}

static cvene_status pass_status(cvene_trainer *t, pass_run *r, cvene_status st) {
    if (st == CVENE_ERR_CALLBACK && r->err != CVENE_OK) return cvene_fail(t->ctx, r->err, "%s", r->msg);
    return st;
}

/* Forward of the current batch with the interventions; the loss rows' logits in t->logits. */
static cvene_status forward_batch(cvene_trainer *t, pass_run *r) {
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.site_fn = train_site;
    o.site_user = r;
    for (int i = 0; i < t->n_iv; i++) o.sites[t->site[i].comp] |= 1ull << t->site[i].layer;
    model_train_pass tp = make_pass(t);
    return pass_status(t, r, t->m->vt->train_forward(t->m, &tp, &o));
}

/* The sum of the batch's rows' cross-entropy into *loss_sum (each row's times scale in the
 * gradient), dlogits for the backward. */
static cvene_status loss_batch(cvene_trainer *t, float scale, double *loss_sum) {
    cvene_backend *be = t->ctx->be;
    CVENE_TRY(be->ops->bwd->xent(be, t->dlogits, t->loss_dev, t->logits, t->labels, t->B, t->V, scale));
    float l[512];
    double sum = 0;
    for (int b0 = 0; b0 < t->B; b0 += 512) {
        const int k = t->B - b0 < 512 ? t->B - b0 : 512;
        CVENE_TRY(be->ops->to_host(be, l, t->loss_dev + b0, sizeof(float) * (size_t)k));
        for (int q = 0; q < k; q++) sum += l[q];
    }
    *loss_sum = sum;
    return CVENE_OK;
}

static cvene_status backward_batch(cvene_trainer *t, pass_run *r) {
    model_grad_sites g;
    memset(&g, 0, sizeof g);
    g.fn = train_grad;
    g.user = r;
    for (int i = 0; i < t->n_iv; i++) g.sites[t->site[i].comp] |= 1ull << t->site[i].layer;
    model_train_pass tp = make_pass(t);
    return pass_status(t, r, t->m->vt->train_backward(t->m, &tp, t->dlogits, &g));
}

/* Boundless: the tutorial's boundary loss, boundary_loss * sum(boundaries), its value added to
 * *loss and its gradient to the boundaries'. The tutorial's loop keeps only the last
 * intervention's term; with several Boundless interventions this sums them all. */
static void add_boundary_loss(cvene_trainer *t, double *loss) {
    const double c = t->p.boundary_loss;
    for (int i = 0; c != 0 && i < t->n_iv; i++) {
        tr_tensor *b = tr_weights_find(&t->w[i], "intervention_boundaries");
        for (int64_t q = 0; b && q < b->numel; q++) {
            *loss += c * b->value[q];
            b->grad[q] += (float)c;
        }
    }
}

/* The temperature of every annealed intervention, and the weights it changes. */
static cvene_status set_temperature(cvene_trainer *t, float temp) {
    for (int i = 0; i < t->n_iv; i++)
        if (tr_has_temperature(&t->w[i])) {
            tr_set_temperature(&t->w[i], temp);
            CVENE_TRY(tr_prepare(t->st[i]));
        }
    return CVENE_OK;
}

cvene_status train_batch_gradients(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B, float row_scale,
                                   double *loss_sum) {
    pass_run r = {t, CVENE_OK, ""};
    CVENE_TRY(train_load_batch(t, d, idx, B));
    CVENE_TRY(forward_batch(t, &r));
    CVENE_TRY(loss_batch(t, row_scale, loss_sum));
    return backward_batch(t, &r);
}

/* ---- training ---- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static cvene_status record_loss(cvene_trainer *t, double loss) {
    if (t->n_losses == t->cap_losses) {
        int64_t cap = t->cap_losses ? 2 * t->cap_losses : 256;
        double *g = realloc(t->losses, sizeof(double) * (size_t)cap);
        if (!g) return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
        t->losses = g, t->cap_losses = cap;
    }
    t->losses[t->n_losses++] = loss;
    return CVENE_OK;
}

void train_next_batch(cvene_trainer *t, const cvene_dataset *d, int *b0, int *B) {
    const int bs = t->p.batch_size;
    if (t->batch_in_epoch < 0 || t->batch_in_epoch * bs >= d->n) { /* a new epoch: the order */
        for (int e = 0; e < d->n; e++) t->order[e] = e;
        for (int e = d->n - 1; t->p.shuffle && e > 0; e--) { /* Fisher-Yates */
            const int j = (int)(splitmix(&t->rng) % (uint64_t)(e + 1));
            const int tmp = t->order[e];
            t->order[e] = t->order[j], t->order[j] = tmp;
        }
        t->batch_in_epoch = 0;
    }
    *b0 = (int)(t->batch_in_epoch * bs);
    *B = d->n - *b0 < bs ? d->n - *b0 : bs;
    t->batch_in_epoch++;
}

cvene_status cvene_trainer_fit(cvene_trainer *t, const cvene_dataset *d) {
    if (!t || !d || d->n == 0) return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "train: no examples");
    CVENE_TRY(train_build_caches(t, d));
    CVENE_TRY(train_batch_buffers(t));
    for (int i = 0; i < t->n_iv; i++) CVENE_TRY(tr_prepare(t->st[i])); /* parameters set since */
    const cvene_train_params *p = &t->p;
    const int64_t batches = (d->n + p->batch_size - 1) / p->batch_size;
    const int64_t per_epoch = (batches + p->grad_accum - 1) / p->grad_accum;
    t->total = p->max_steps > 0 ? p->max_steps : per_epoch * p->epochs;
    const int64_t warmup = (int64_t)(p->warmup_ratio * (double)t->total);
    optim_adam opt = optim_adam_default();
    opt.lr = p->lr, opt.beta1 = p->beta1, opt.beta2 = p->beta2, opt.eps = p->eps;
    opt.weight_decay = p->weight_decay, opt.decoupled = p->optimizer == CVENE_OPTIM_ADAMW;
    const int anneal = p->temperature_start != 0 || p->temperature_end != 0;
    float *temps = anneal ? malloc(sizeof(float) * (size_t)t->total) : NULL;
    if (!t->order) t->order = malloc(sizeof(int) * (size_t)d->n);
    if (!t->order || (anneal && !temps)) {
        free(temps);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    }
    if (anneal) optim_linspace_f32((float)p->temperature_start, (float)p->temperature_end, t->total, temps);
    cvene_status st = CVENE_OK;
    /* the tutorials set schedule[s] after step s: step 0 runs with entry 0, step s with s - 1 */
    if (anneal && t->step == 0) st = set_temperature(t, temps[0]);
    const int shards = train_shards(t);
    while (st == CVENE_OK && t->step < t->total) {
        double step_loss = 0;
        for (int i = 0; i < t->n_iv; i++) tr_weights_zero_grad(&t->w[i]); /* whatever a caller left there */
        if (shards) {
            st = train_step_sharded(t, d, shards, &step_loss);
        } else {
            for (int a = 0; a < p->grad_accum && st == CVENE_OK; a++) {
                int b0, B;
                train_next_batch(t, d, &b0, &B);
                double loss = 0;
                /* each batch's mean, averaged over the accumulated batches */
                st = train_batch_gradients(t, d, t->order + b0, B, 1.0f / (float)p->grad_accum / (float)B, &loss);
                step_loss += loss / B / p->grad_accum;
            }
            for (int i = 0; st == CVENE_OK && i < t->n_iv; i++) st = tr_finish_grads(t->st[i]);
        }
        if (st == CVENE_OK) add_boundary_loss(t, &step_loss);
        if (st == CVENE_OK && !isfinite(step_loss))
            st = cvene_fail(t->ctx, CVENE_ERR_NUMERIC, "train: the loss of step %lld is not finite (%g); lower the "
                            "learning rate", (long long)t->step + 1, step_loss);
        const double lr = p->lr * optim_linear_warmup(t->step, warmup, t->total);
        for (int i = 0; st == CVENE_OK && i < t->n_iv; i++) {
            for (int k = 0; k < t->w[i].n; k++) {
                tr_tensor *x = &t->w[i].t[k];
                const int boundary = !strcmp(x->name, "intervention_boundaries") && p->boundary_lr > 0;
                const double lr_x = boundary ? p->boundary_lr * optim_linear_warmup(t->step, warmup, t->total) : lr;
                if (x->trainable) optim_adam_step(&opt, x->value, x->grad, x->m, x->v, (size_t)x->numel, t->step + 1, lr_x);
            }
            st = tr_prepare(t->st[i]);
        }
        if (st == CVENE_OK) st = record_loss(t, step_loss);
        if (st == CVENE_OK && anneal) st = set_temperature(t, temps[t->step]);
        if (st == CVENE_OK) t->step++;
        if (st == CVENE_OK && p->progress && p->progress(p->progress_user, t->step, t->total, step_loss, lr))
            break;
    }
    free(temps);
    return st;
}

cvene_status cvene_trainer_evaluate(cvene_trainer *t, const cvene_dataset *d, double *accuracy, double *loss) {
    if (!t || !d || d->n == 0) return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "evaluate: no examples");
    CVENE_TRY(train_build_caches(t, d));
    CVENE_TRY(train_batch_buffers(t));
    for (int i = 0; i < t->n_iv; i++) CVENE_TRY(tr_prepare(t->st[i]));
    cvene_backend *be = t->ctx->be;
    pass_run r = {t, CVENE_OK, ""};
    const int bs = t->p.batch_size, n_batches = (d->n + bs - 1) / bs, N = train_ranks(t);
    const int me = train_rank(t);
    int *idx = malloc(sizeof(int) * (size_t)bs), *owner = malloc(sizeof(int) * (size_t)n_batches);
    float *lg = malloc(sizeof(float) * (size_t)t->V);
    double *res = calloc(2 * (size_t)n_batches, sizeof(double)); /* per batch: examples right, loss sum */
    if (!idx || !owner || !lg || !res) {
        free(idx), free(owner), free(lg), free(res);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    }
    cvene_status st = CVENE_OK;
    for (int k = 0; k < n_batches && st == CVENE_OK; k++) {
        owner[k] = k % N; /* on ranks: every N-th batch is this rank's */
        if (owner[k] != me) continue;
        const int b0 = k * bs, B = d->n - b0 < bs ? d->n - b0 : bs;
        for (int b = 0; b < B; b++) idx[b] = b0 + b;
        st = train_load_batch(t, d, idx, B);
        if (st == CVENE_OK) st = forward_batch(t, &r);
        for (int b = 0; b < B && st == CVENE_OK; b++) {
            st = be->ops->to_host(be, lg, t->logits + (size_t)b * t->V, sizeof(float) * (size_t)t->V);
            int arg = 0;
            for (int v = 1; v < t->V; v++) arg = lg[v] > lg[arg] ? v : arg;
            res[2 * k] += arg == d->ex[b0 + b].label;
        }
        if (st == CVENE_OK) st = loss_batch(t, 1.0f, &res[2 * k + 1]);
    }
    if (N > 1 && st == CVENE_OK) st = comm_share_rows(t->p.comm, owner, n_batches, 2 * sizeof(double), res);
    double right = 0, sum = 0;
    for (int k = 0; k < n_batches; k++) right += res[2 * k], sum += res[2 * k + 1]; /* batch order: as one process */
    free(idx), free(owner), free(lg), free(res);
    CVENE_TRY(st);
    if (accuracy) *accuracy = right / d->n;
    if (loss) *loss = sum / d->n;
    return CVENE_OK;
}

tr_weights *train_weights(cvene_trainer *t, int k) { return k >= 0 && k < t->n_iv ? &t->w[k] : NULL; }

cvene_status train_gradients(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B, double *loss) {
    CVENE_TRY(train_build_caches(t, d));
    CVENE_TRY(train_batch_buffers(t));
    if (B < 1 || B > t->p.batch_size)
        return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "train_gradients: batch %d outside [1, %d]", B, t->p.batch_size);
    for (int i = 0; i < t->n_iv; i++) {
        tr_weights_zero_grad(&t->w[i]);
        CVENE_TRY(tr_prepare(t->st[i]));
    }
    double sum = 0;
    CVENE_TRY(train_batch_gradients(t, d, idx, B, 1.0f / (float)B, &sum));
    *loss = sum / B;
    add_boundary_loss(t, loss);
    for (int i = 0; i < t->n_iv; i++) CVENE_TRY(tr_finish_grads(t->st[i]));
    return CVENE_OK;
}

double cvene_trainer_rows_fraction(const cvene_trainer *t) { return t && t->cached_uid ? t->rows_fraction : 0; }

const double *cvene_trainer_losses(const cvene_trainer *t, int64_t *n) {
    if (n) *n = t ? t->n_losses : 0;
    return t ? t->losses : NULL;
}

/* ---- PCARotatedSpace's basis from data ---- */

cvene_status cvene_trainer_fit_pca(cvene_trainer *t, int k, const cvene_dataset *d, int n_components) {
    if (!t || !d) return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "trainer_fit_pca: NULL argument");
    if (k < 0 || k >= t->n_iv)
        return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "trainer_fit_pca: intervention %d is out of range [0, %d)", k,
                          t->n_iv);
    const cvene_representation *r = &t->c->reps[k].r;
    if (r->type != CVENE_IV_PCA_ROTATED_SPACE)
        return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "trainer_fit_pca: representations[%d] is a %s, not a "
                          "PCARotatedSpaceIntervention", k, cvene_intervention_type_name(r->type));
    const iv_site *s = &t->site[k];
    const int N = d->n, U = s->flat ? s->U : 1;
    if (N < 2) return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "trainer_fit_pca: a PCA needs at least 2 examples, got %d", N);
    for (int e = 0; e < N; e++)
        if (d->ex[e].n_pos < U)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "trainer_fit_pca: example %d has %d base position%s; "
                              "representations[%d] flattens %d (max_number_of_units)", e, d->ex[e].n_pos,
                              d->ex[e].n_pos == 1 ? "" : "s", k, U);
    /* X (N, U D): each example's base units at the site, as pyvene flattens them */
    const int32_t **ids = malloc(sizeof *ids * (size_t)N);
    int *lens = malloc(sizeof(int) * (size_t)N), *pos = malloc(sizeof(int) * (size_t)N);
    float *X = malloc(sizeof(float) * (size_t)N * U * s->D);
    cvene_status st = ids && lens && pos && X ? CVENE_OK : cvene_fail(t->ctx, CVENE_ERR_OOM, "out of memory");
    for (int e = 0; e < N && st == CVENE_OK; e++) ids[e] = ds_base(d, e), lens[e] = d->ex[e].base_len;
    const cvene_site site = {s->comp, s->layer};
    for (int u = 0; u < U && st == CVENE_OK; u++) {
        for (int e = 0; e < N; e++) pos[e] = ds_base_pos(d, e)[u];
        cvene_activations *a = NULL;
        st = cvene_collect(t->m, ids, lens, pos, N, &site, 1, t->p.batch_size, &a);
        if (st != CVENE_OK) break;
        const float *x = cvene_activations_data(a, 0);
        for (int e = 0; e < N; e++)
            memcpy(X + ((size_t)e * U + u) * s->D, x + (size_t)e * s->D, sizeof(float) * (size_t)s->D);
        cvene_activations_free(a);
    }
    if (st == CVENE_OK) st = tr_pca_fit(t->ctx, &t->w[k], X, N, n_components);
    if (st == CVENE_OK && t->st && t->st[k]) st = tr_prepare(t->st[k]);
    free(ids), free(lens), free(pos), free(X);
    return st;
}

/* ---- weights in and out ---- */

cvene_status cvene_trainer_save(cvene_trainer *t, const char *dir) { return train_io_save(t->ctx, t->c, t->w, dir); }

cvene_status cvene_trainer_load(cvene_trainer *t, int k, const char *path) {
    if (!t || k < 0 || k >= t->n_iv)
        return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "trainer_load: intervention %d is out of range", k);
    CVENE_TRY(train_io_load_tensors(t->ctx, &t->w[k], path));
    return t->st && t->st[k] ? tr_prepare(t->st[k]) : CVENE_OK;
}
