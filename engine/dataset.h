/* Training datasets (not public: cvene.h has the API). */
#ifndef CVENE_DATASET_H
#define CVENE_DATASET_H

#include "kernels/ctx.h"

typedef struct {
    size_t base_off, source_off; /* into ids */
    int base_len, source_len;    /* source_len 0: no source */
    size_t pos_off;              /* into pos: n_pos base positions, then n_pos source positions */
    int n_pos;
    int32_t label;
    int label_pos;               /* resolved (the last base token by default) */
} ds_example;

struct cvene_dataset {
    cvene_ctx *ctx;
    uint64_t uid;  /* this content's identity (a new one on every add): what a trainer's caches were built
                    * from, safe against a freed dataset's address being reused */
    ds_example *ex;
    int n;
    size_t cap_ex;
    int32_t *ids;
    size_t n_ids, cap_ids;
    int *pos;
    size_t n_posv, cap_pos;
};

static inline const int32_t *ds_base(const cvene_dataset *d, int i) { return d->ids + d->ex[i].base_off; }
static inline const int32_t *ds_source(const cvene_dataset *d, int i) { return d->ids + d->ex[i].source_off; }
static inline const int *ds_base_pos(const cvene_dataset *d, int i) { return d->pos + d->ex[i].pos_off; }
static inline const int *ds_source_pos(const cvene_dataset *d, int i) {
    return d->pos + d->ex[i].pos_off + d->ex[i].n_pos;
}

#endif
