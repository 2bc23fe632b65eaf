/* The runner's shared state (not public): cvene_run (engine/run.c) plans passes
 * (engine/plan.c) whose site calls apply interventions (engine/apply.c) through index
 * arrays built once per request (engine/index.c), all on stream geometry (engine/geom.c).
 *
 * A pass is one batched forward over blocks of rows (a source, the base, the clean base for
 * output_original_output). At each site, for each block: first its setters (interventions
 * applied to its rows, in config order), then its getters (source activations gathered from
 * its rows). Rows never interact in a forward, so putting sources and the base in one batch
 * is exact. */
#ifndef CVENE_RUN_INTERNAL_H
#define CVENE_RUN_INTERNAL_H

#include "engine/intervene.h"
#include "engine/iv_type.h"
#include "models/model.h"

struct cvene_result {
    float *logits, *orig_logits; /* views into logits_mem */
    float *logits_mem;
    int B, T, V;
    int n_collected;
    cvene_tensor_view *collected; /* data owned */
    float **collected_dev;        /* (n_collected) their device copies (CUDA; owned, freed through be), or NULL */
    cvene_backend *be;
    int n_passes;
    double *iv_seconds;           /* (n interventions) with cvene_request_set_profile, else NULL */
    int n_iv;
};

/* ---- geometry (engine/geom.c) -------------------------------------------
 * One intervention's stream in a run of length T. A unit is R rows of D floats, row stride
 * S, starting at an offset inside the example. Per-head components are served on their
 * (B, T, C) stream (query_output for head_query_output, ...): head h of position p is the hd
 * floats at p*C + h*hd. That keeps every intervention on one tensor in config order, as
 * pyvene's hooks on one module fire. */
typedef struct {
    int A;        /* what a "pos"/"h" index addresses: T, or heads */
    int R, D, S;  /* rows per unit, the last dim, row stride */
    int T, C, hd; /* for head units */
    int64_t E;    /* floats per example */
} geom;

/* Forward order of sites, for stopping early: layer by layer in a transformer (step 0); a GRU
 * runs every layer inside each timestep, so there the step comes first. */
int64_t iv_site_order(cvene_component c, int layer, int step);
int iv_is_head(cvene_component c);
/* The site whose tensor holds a component (per-head components: their (B, T, C) stream; a
 * GRU gate's third of x2h / h2h: the whole output). */
cvene_component iv_physical(cvene_component c);
geom iv_stream_geom(const cvene_model_info *mi, cvene_component comp, cvene_unit unit, int T, int present);
int iv_n_units(const iv_locs *l);
/* Units a side selects in a run of length T (unit t without locations: every timestep). */
int iv_units_of(const cvene_representation *r, const iv_locs *l, int T);
/* Unit t: the slot of timestep `step` for example b, or -1 when the step is not listed. */
int iv_step_slot(const iv_locs *l, int b, int step);
/* Unit t: where a component's D floats start in a (B, W) row of its site. */
int64_t iv_gru_offset(cvene_component comp, const geom *g);
/* Float offset of unit u of example b inside that example. */
int64_t iv_unit_offset(const iv_locs *l, const geom *g, cvene_component comp, int b, int u);
/* The site a getter reads: the component, or for Skip the input of the module pyvene hooks. */
cvene_component iv_getter_component(const cvene_representation *r, const cvene_model *m);

/* ---- fused calls and the per-request state ------------------------------- */
enum { ROLE_SOURCE, ROLE_BASE, ROLE_ORIG };

/* One iv_units call: its shape and where its index arrays sit in the request's packed
 * index buffers (idx64: x_off, src_off, dims_off; idx32: dims, dims_n). */
typedef struct {
    int on;              /* 0: no fused call for this side */
    int op;              /* cvene_iv_op */
    int n, R, D;         /* units, rows per unit, floats per row */
    int64_t x_rs, src_rs;
    int64_t E;           /* floats per example of the site: the block's rows start at row0 * E */
    int T;               /* sequence length of the run it acts on */
    int64_t x_off, src_off, dims_off; /* element offsets into idx64 */
    int64_t dims_n;      /* element offset into idx32, -1 = every unit takes all D */
} fused_call;

/* Host-side growing index arrays, uploaded once per request. */
typedef struct {
    int64_t *v64;
    int32_t *v32;
    size_t n64, cap64, n32, cap32;
} idx_pool;

typedef struct {
    int role, group;      /* group: for sources */
    const iv_input *in;
    int row0;             /* first row in the pass */
    int *setters, n_setters;
    int *getters, n_getters;
} block;

/* What the run holds for one intervention. */
typedef struct {
    int target_T;          /* length of the run its setter acts on */
    float *store;          /* the gathered source (B, U, R, D), on the device */
    int64_t store_len;     /* ... its floats */
    float *csrc;           /* its constant source (or Noise's f32 noise) on the device (fused path) */
    float *coll;           /* Collect: its result on the device (CPU: the result's own buffer) */
    int collect_slot;      /* index into res->collected, or -1 */
    fused_call set, get;   /* fused setter / source gather */
    fused_call *step_set, *step_get; /* unit t: one call per timestep (step_set of a device callback: 2T) */
    int n_step_set, n_step_get;      /* ... and how many timesteps they cover */
    fused_call link_in, link_out;    /* a device link chain: chain buffer -> units, units -> buffer */
    float *rt_dev, *rt_src;          /* a device callback: its units on the device, its source on the host */
    int64_t rt_len, rt_src_len;      /* ... and their lengths in floats */
    double *noise;                   /* Noise: (U, D) doubles */
    struct tr_state *trained;        /* a trainable type: its compute state (owned by the config) */
    int trained_rows;                /* ... the rows it computes: examples, or examples x units */
} iv_slot;

/* What the run holds for one intervention_link_key chain (config.c numbers keys densely). */
typedef struct {
    float *hot;            /* the host path: the chain's last result */
    int64_t hot_len;
    float *dev;            /* on a device: the chain's last result */
    int64_t dev_cap, dev_len; /* its size, and the length now held (0: none yet this pass) */
} iv_link;

typedef struct {
    cvene_ctx *ctx;
    cvene_model *m;
    const cvene_config *c;
    iv_locs *locs;        /* 2n: [2i] source side, [2i + 1] base side */
    iv_dims *dims;        /* n * B */
    int B;
    iv_slot *iv;          /* n */
    iv_link *link;        /* n_links */
    int n_links;
    int64_t *idx64;       /* packed index arrays on the device (fused_call offsets point here) */
    int32_t *idx32;
    float *scratch;       /* (B, U, R, D) base gather of the host path */
    size_t scratch_len;
    cvene_result *res;
    block *blocks;        /* this pass */
    int n_blocks;
    int T;                /* this pass */
    int in_base_T;        /* the base's sequence length */
    int64_t last_site;    /* stop the pass after this site order (-1 = run to the end) */
    int step[CVENE_N_COMPONENTS][64]; /* GRU: calls so far of (site, layer) in this pass = timestep */
    cvene_status err;
    char errmsg[CVENE_ERR_LEN]; /* err's message: the forward overwrites the context's */
    int diagnose;         /* looking for where a non-finite result first appears (apply.c) */
    int profile;          /* time each intervention's calls into res->iv_seconds (device synchronised) */
    float *diag_host;     /* diagnose on a device: the site tensor copied to the host */
    size_t diag_cap;
} run_state;

/* ---- a request's state (engine/run.c) ----
 * Check a request against the model and prepare everything its passes need, with the base
 * locations resolved from `locations` (the request's own, or generation's stand-in) against a
 * base of length target_T (-1: the base's own; generation: the prompt's, or 1 for a generated
 * step). *src_out: the source of each group (NULL: none), owned by the state. On failure the
 * state is still closed with iv_state_close. s->res is the result the passes fill (owned by
 * the caller once taken; iv_state_close does not free it). */
cvene_status iv_state_open(run_state *s, cvene_model *m, const cvene_config *c, const cvene_request *r,
                           const cJSON *locations, int target_T, int diagnose, const iv_input ***src_out);
void iv_state_close(run_state *s, const iv_input **src);
/* CUDA: bring the collected values of the last pass into s->res (host memory). */
cvene_status iv_fetch_collected(run_state *s);

/* ---- index building (engine/index.c) ---- */
/* Whether intervention i runs as fused iv_units calls on this backend (see index.c). */
int iv_fused_on(const run_state *s, int i);
/* Every fused call of the request, and one upload of their index arrays. */
cvene_status iv_build_fused(run_state *s, const iv_input **src);
/* One device buffer of nbytes, with a message naming what it is for. */
cvene_status iv_dev_alloc(run_state *s, void **p, size_t nbytes, const char *what);

/* ---- applying (engine/apply.c) ---- */
/* The forward's site callback (user: the run_state). */
int iv_on_site(void *user, cvene_component comp, int layer, cvene_tensor_view *t);

/* ---- passes (engine/plan.c) ---- */
cvene_status iv_plan_parallel(run_state *s, const iv_input **src, const iv_input *base, int orig);
cvene_status iv_plan_serial(run_state *s, const iv_input **src, const iv_input *base, int orig);
/* A forward's site options for a pass over blocks of length T (sites of their setters and
 * getters, iv_on_site), and the state reset for it; iv_pass_end turns a callback's failure into
 * its own message and counts the pass. */
void iv_pass_begin(run_state *s, block *blocks, int n_blocks, int T, int want_logits, cvene_run_opts *o);
cvene_status iv_pass_end(run_state *s, cvene_status st);
/* Generation: every source's pass (each distinct source once), filling the stores. */
cvene_status iv_run_sources(run_state *s, const iv_input **src);
/* The interventions that act on the base (out: room for n). */
int iv_base_setters(const run_state *s, const iv_input **src, int *out);
/* Serial mode: the chain of source passes (each with the previous group's interventions; chained 0:
 * without them), and the interventions that then act on the base (room for n + 1);
 * iv_serial_base_setters: only that list, running nothing (out of memory: 0, with the context's
 * message). */
cvene_status iv_run_serial_sources(run_state *s, const iv_input **src, int chained, int *setters, int *n_setters);
int iv_serial_base_setters(run_state *s, const iv_input **src, int *out);

#endif
