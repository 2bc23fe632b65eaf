/* A step's gradient as the sum of fixed parts (cvene_train_params.shards): each of the step's
 * batches is cut into `shards` contiguous parts, each part's gradient is computed alone, and the
 * parts are added in order. The parts are the units ranks split (data parallel), and since every
 * rank adds the same parts in the same order, the result is the same bits on any number of ranks:
 * a fixed-order all-reduce. (MPI_Allreduce and NCCL choose their own order; one process adding
 * one batch at once adds its rows in the GEMMs' order, which no split of the rows can repeat.)
 *
 * Each part's gradient goes through tr_finish_grads alone (the parametrization's backward is
 * linear in the gradient), so a part costs a forward, a backward and one finish. */
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"
#include "engine/train_internal.h"
#include "kernels/ctx.h"

int train_shards(const cvene_trainer *t) {
    const int N = train_ranks(t);
    if (N == 1 && t->p.shards <= 1) return 0;
    return t->p.shards > 0 ? t->p.shards : N;
}

/* Floats of every tensor that has a gradient. */
static size_t grad_floats(const cvene_trainer *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_iv; i++)
        for (int k = 0; k < t->w[i].n; k++) n += t->w[i].t[k].grad ? (size_t)t->w[i].t[k].numel : 0;
    return n;
}

/* The host gradients into g (to_grads 0) or g into them (1), tensor by tensor. */
static void move_grads(cvene_trainer *t, float *g, int to_grads) {
    size_t o = 0;
    for (int i = 0; i < t->n_iv; i++)
        for (int k = 0; k < t->w[i].n; k++) {
            tr_tensor *x = &t->w[i].t[k];
            if (!x->grad) continue;
            const size_t bytes = sizeof(float) * (size_t)x->numel;
            if (to_grads) memcpy(x->grad, g + o, bytes);
            else memcpy(g + o, x->grad, bytes);
            o += (size_t)x->numel;
        }
}

cvene_status train_step_sharded(cvene_trainer *t, const cvene_dataset *d, int shards, double *step_loss) {
    const int ga = t->p.grad_accum, units = shards * ga, N = train_ranks(t), me = train_rank(t);
    const size_t G = grad_floats(t);
    /* a part's row: its loss (the batch mean's share, over the accumulated batches), then its gradient */
    const size_t row = sizeof(double) + sizeof(float) * G;
    unsigned char *rows = calloc((size_t)units, row);
    int *owner = malloc(sizeof(int) * (size_t)units);
    float *g = malloc(sizeof(float) * (G ? G : 1));
    if (!rows || !owner || !g) {
        free(rows), free(owner), free(g);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "train: out of memory for %d shards of %zu gradients", units, G);
    }
    cvene_status st = CVENE_OK;
    for (int u = 0; u < units; u++) owner[u] = (int)((int64_t)u * N / units); /* contiguous runs of parts */
    for (int a = 0; a < ga && st == CVENE_OK; a++) {
        int b0, B;
        train_next_batch(t, d, &b0, &B); /* every rank walks the same batches */
        for (int j = 0; j < shards && st == CVENE_OK; j++) {
            const int u = a * shards + j, lo = (int)((int64_t)B * j / shards), hi = (int)((int64_t)B * (j + 1) / shards);
            if (owner[u] != me || hi == lo) continue; /* another rank's, or empty (a batch shorter than shards) */
            for (int i = 0; i < t->n_iv; i++) tr_weights_zero_grad(&t->w[i]);
            double loss = 0;
            st = train_batch_gradients(t, d, t->order + b0 + lo, hi - lo, 1.0f / (float)ga / (float)B, &loss);
            for (int i = 0; st == CVENE_OK && i < t->n_iv; i++) st = tr_finish_grads(t->st[i]);
            loss = loss / B / ga;
            memcpy(rows + (size_t)u * row, &loss, sizeof loss);
            move_grads(t, g, 0);
            memcpy(rows + (size_t)u * row + sizeof loss, g, sizeof(float) * G);
        }
    }
    if (st == CVENE_OK && N > 1) st = comm_share_rows(t->p.comm, owner, units, row, rows);
    if (st == CVENE_OK) { /* every part, in part order, on every rank */
        memset(g, 0, sizeof(float) * G);
        *step_loss = 0;
        float *x = malloc(sizeof(float) * (G ? G : 1));
        if (!x) st = cvene_fail(t->ctx, CVENE_ERR_OOM, "train: out of memory");
        for (int u = 0; x && u < units; u++) {
            double loss;
            memcpy(&loss, rows + (size_t)u * row, sizeof loss);
            memcpy(x, rows + (size_t)u * row + sizeof loss, sizeof(float) * G); /* rows are not float-aligned */
            *step_loss += loss;
            for (size_t q = 0; q < G; q++) g[q] += x[q];
        }
        free(x);
        if (st == CVENE_OK) move_grads(t, g, 1);
    }
    free(rows), free(owner), free(g);
    return st;
}
