/* The trainer's state, shared by its files (not public: cvene.h has the API):
 *   engine/train.c       the trainer: parameters, the pass, the loop, evaluation, files
 *   engine/train_data.c  what a dataset gives it: the caches (once per dataset) and each batch
 *   engine/train_shards.c  a step's gradient as the sum of fixed parts (shards), split among ranks */
#ifndef CVENE_TRAIN_INTERNAL_H
#define CVENE_TRAIN_INTERNAL_H

#include "cvene.h"
#include "engine/dataset.h"
#include "engine/trainable.h"

typedef struct {
    cvene_component comp;     /* its (physical) site */
    int layer;
    int D;                    /* floats per unit (d) */
    int U;                    /* units per example (max_number_of_units) */
    int flat;                 /* distributed types: the U units of an example are one vector of U d floats
                               * (pyvene flattens them); else each unit on its own */
    int has_source;
    float *src_cache;         /* (examples, n_pos, D) source units, device */
    float *us;                /* (n_max, D) this batch's source units, device */
    int64_t *off;             /* (2 n_max): x_off then src_off of this batch's units, device */
} iv_site;

struct cvene_trainer {
    cvene_ctx *ctx;
    cvene_model *m;
    const cvene_config *c;
    cvene_train_params p;
    int n_iv;
    tr_weights *w;            /* per intervention */
    tr_state **st;
    iv_site *site;
    int l0;                   /* first layer of the training pass */
    int C, V, n_max, T_max;   /* n_max: units per intervention per batch */
    int T_buf, n_pos_buf;     /* what the batch buffers were sized for */
    /* the cached dataset: its uid (0: none), and the share of its token rows a step runs */
    uint64_t cached_uid;
    double rows_fraction;
    float *prefix;            /* residual entering l0 of every example, packed (device) */
    size_t *prefix_off;       /* per example, in floats */
    /* live rows (model_train_pass): only rows from an example's first intervened (or loss) position
     * on change, so the pass runs those, with the clean run's keys and values of the rows before */
    int live;                 /* 1: every site on the residual entering l0, GPT-2 or GPT-NeoX (train_full_rows: 0) */
    int *start;               /* per example: its first live row */
    float *kv_cache;          /* per example: (L - l0, 2, start, C) clean K and V of the rows before it */
    size_t *kv_off;           /* per example, in floats */
    float *kv;                /* (L - l0, 2, B, T, C): the batch's, for the pass */
    int *live_start, *live_end; /* (batch_size) host: the batch's live rows */
    /* per batch */
    float *x0, *logits, *dlogits, *loss_dev, *zeros, *ub, *uo;
    int32_t *labels;
    int64_t *off_host;
    int32_t *mask, *rows;
    int B, T, n_pos;
    /* per step; the position in the epoch survives fit calls (a stopped run continues where it was) */
    int64_t step, total;
    int *order;               /* this epoch's example order */
    int64_t batch_in_epoch;   /* batches of it done; -1: none started */
    uint64_t rng;
    double *losses;
    int64_t n_losses, cap_losses;
};

/* The most the clean keys and values of live rows may take (on the training device). */
#define TRAIN_LIVE_CACHE_BYTES ((size_t)2 << 30)

cvene_status train_dev_alloc(cvene_trainer *t, void **p, size_t bytes, const char *what);
/* The caches for dataset d (a no-op when they are d's already), then the batch buffers. */
cvene_status train_build_caches(cvene_trainer *t, const cvene_dataset *d);
cvene_status train_batch_buffers(cvene_trainer *t);
void train_free_batch_buffers(cvene_trainer *t);
/* The batch of examples idx[0..B): x0, mask, loss rows and labels, live rows and their keys and
 * values, each intervention's unit indices and source units. */
cvene_status train_load_batch(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B);

/* One batch's forward and backward: each row's loss times row_scale in the gradients (accumulated
 * into the interventions' device gradients), the sum of the rows' losses into *loss_sum. */
cvene_status train_batch_gradients(cvene_trainer *t, const cvene_dataset *d, const int *idx, int B, float row_scale,
                                   double *loss_sum);
/* The next batch of the epoch (a new, shuffled epoch when one ends): t->order[b0 .. b0 + B). */
void train_next_batch(cvene_trainer *t, const cvene_dataset *d, int *b0, int *B);

static inline int train_ranks(const cvene_trainer *t) { return t->p.comm ? cvene_comm_size(t->p.comm) : 1; }
static inline int train_rank(const cvene_trainer *t) { return t->p.comm ? cvene_comm_rank(t->p.comm) : 0; }
/* The shards of a step's batches (cvene_train_params.shards; on ranks 0 means one per rank), or 0:
 * the plain step (one process, one part). */
int train_shards(const cvene_trainer *t);
/* One optimizer step's gradients: each of its grad_accum batches cut into `shards` contiguous
 * parts, each part's gradient computed alone (on the rank that owns it) and all of them added in
 * part order on every rank, into the weights' host grad; the step's loss (the mean over its
 * batches) into *step_loss. */
cvene_status train_step_sharded(cvene_trainer *t, const cvene_dataset *d, int shards, double *step_loss);

#endif
