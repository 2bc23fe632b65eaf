/* Intervention internals: configs, requests, runs (not public). */
#ifndef CVENE_INTERVENE_H
#define CVENE_INTERVENE_H

#include <cjson/cJSON.h>
#include "kernels/ctx.h"

typedef struct {
    cvene_representation r; /* arrays below are owned copies */
    int *partition_offsets, *partition_dims;
    float *source;
    char *callback_name;    /* from JSON; bound later */
    int link;               /* dense index of r.link_key among the config's link keys, or -1 */
    struct iv_trained *trained; /* a trainable type's weights and compute state (engine/trained.h) */
} iv_rep;

struct cvene_config {
    cvene_ctx *ctx;
    cvene_mode mode;
    int n, cap;
    iv_rep *reps;
    int n_groups;           /* groups of sources: max group_key + 1, or n */
    int n_links;            /* distinct intervention_link_key values (iv_rep.link indexes them) */
};

/* A stream's last dimension is at most this (far above any model's widths: GPT-2 XL's
 * n_inner is 6400, Pythia-6.9B's 16384); subspace_partition entries are bounded by it when a
 * config is parsed, and by the stream's real width when it runs. */
#define IV_MAX_DIM (1 << 20)
/* ... and a partition lists at most this many dims in all (each part is a set of a stream's
 * dims, so a real partition lists at most its width). */
#define IV_MAX_PARTITION_DIMS (1 << 22)

/* group of intervention i */
static inline int iv_group(const cvene_config *c, int i) {
    return c->reps[i].r.group_key >= 0 ? c->reps[i].r.group_key : i;
}

typedef struct {
    int32_t *ids, *mask; /* owned (B, T); mask may be NULL */
    int32_t *pos;        /* owned (B, T) position ids, or NULL */
    int B, T;
    int present;
} iv_input;

struct cvene_request {
    cvene_ctx *ctx;
    iv_input base;
    iv_input *sources;
    int n_sources;
    cJSON *locations;  /* the unit_locations JSON (owned); NULL = pyvene's None */
    cJSON *subspaces;  /* NULL = none */
    int output_original;
    int profile; /* cvene_request_set_profile */
};

/* Canonical locations of one intervention side: idx (B, U); for h.pos also
 * pos (B, U2). present == 0 means pyvene's None (the whole stream). */
typedef struct {
    int present;
    int U, U2;
    int *idx, *pos;
    int bcast;  /* source side listed for one example (pyvene's broadcast): the table was copied to
                 * every example, and every example reads the source's example 0 */
} iv_locs;

/* Resolve request locations/subspaces against a config (engine/locations.c).
 * locs has 2 * n entries: [2i] source side, [2i + 1] base side. subspaces has
 * n * B entries of (dims, count) with count -1 = all dims; dims owned. */
typedef struct {
    int *dims;
    int n; /* -1 = all */
} iv_dims;

cvene_status iv_resolve_locations(cvene_ctx *ctx, const cvene_config *c, const cJSON *json, int B,
                                  iv_locs *locs);
cvene_status iv_resolve_subspaces(cvene_ctx *ctx, const cvene_config *c, const cJSON *json, int B,
                                  iv_dims *out);
void iv_locs_free(iv_locs *l, int n);
void iv_dims_free(iv_dims *d, int n);

#endif
