/* Model internals shared by engine/ and models/ (not public). */
#ifndef CVENE_MODEL_H
#define CVENE_MODEL_H

#include "kernels/ctx.h"
#include <cjson/cJSON.h>
#include "models/safetensors.h"

/* A forward resumed part-way (sweeps): start at `layer` with the residual
 * stream x of positions [past, T), attending to cached keys/values of positions
 * [0, past) shared by every row. */
typedef struct {
    int layer;
    int past;
    const float *x;              /* (B, T - past, C) residual entering `layer` (device, f32 whatever the
                                  * activation dtype: a 16-bit forward rounds it, and the caches, to its own) */
    float *const *k_cache;       /* per layer: (past, C) keys (device), or (T, C) with a longer prefix */
    float *const *v_cache;       /* per layer: values, like k_cache */
    int last_logits_only;        /* o->logits gets (B, V): position T - 1 only */
    const int32_t *vocab;        /* with last_logits_only: only these n_vocab columns (host ids): */
    int n_vocab;                 /*   o->logits gets (B, n_vocab); 0 = every column */
    const int32_t *positions;    /* (T) host position ids of every position of the prompt, shared by the rows
                                  * (the caches were computed with them); NULL = 0..T-1. GPT-NeoX's rotary
                                  * reads positions[past..T-1]; GPT-2 resumes after its position embedding */
} cvene_resume;

/* ---- decoding (issue #16): a forward that appends to a per-row K/V cache ----
 * One call runs T new positions of every row after the `past` positions already cached (the
 * prompt: past 0; each generated token: T 1), attending to the cache and itself. Rows are
 * left-padded prompts: every row has the same past, the mask says which keys are padding.
 * Everything is on the device, so a decoding loop needs no host round trip; sites are called
 * as in a forward, on the new positions' (B, T, ...) tensors (what pyvene's hooks see in
 * transformers' generate). */
typedef struct {
    void *k, *v;          /* (L, B, cap, C) each, in the activation dtype: every layer's keys (GPT-NeoX: after
                           * rotary, as attention uses them) and values so far; the call writes its T positions
                           * at [past, past + T) of each row, after the sites of key/value_output ran */
    int cap, past;
    const int32_t *ids;   /* (B, T) token ids (device) */
    const int32_t *pos;   /* (B, T) position ids (device) */
    const int32_t *mask;  /* (B, past + T) key mask (device): 1 token, 0 padding */
    const int32_t *zeros; /* (B, T) zeros (device): GPT-NeoX has no position table, its embedding reads
                           * these as every token's position (kept by the caller, so no call uploads) */
    float *logits;        /* (B, V) f32 (device): the last new position's logits; NULL: none */
} model_decode;

/* The arguments of a decoding call against the model (models/decode.c): sizes, past + T within
 * cap, buffers present. */
cvene_status decode_check(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o);
/* Layer l's new keys and values k, v (B, T, C) into dc's cache at [past, past + T) of each row;
 * *kk, *vv: the layer's cache (B, cap, C), what attention then reads (batch stride cap * C). */
cvene_status decode_append(cvene_backend *be, cvene_dtype adt, const model_decode *dc, int l, int B, int T, int C,
                           const void *k, const void *v, const void **kk, const void **vv);

/* ---- training passes (issue #13): the model frozen, gradients for interventions ----
 * A training pass runs the layers [layer, L) from a given residual and keeps what the backward
 * needs (in the model's training arena, apart from the forward arena); the backward goes from
 * the gradient of the loss rows' logits down to the input of `layer`. At every site the forward
 * calls o->site_fn as a normal forward does (interventions act there); at every grad site the
 * backward calls grad_fn with the gradient of the loss with respect to the site's stream as the
 * rest of the forward used it, which grad_fn may replace in place by the gradient with respect
 * to the stream before the site's interventions (their vector-Jacobian product) -- the backward
 * continues with what grad_fn leaves there. Site BLOCK_OUTPUT of layer - 1 (the residual the
 * pass starts from) is a site and a grad site of the pass too: first in the forward, last in the
 * backward. f32 activations only. The GRU's pass (models/gru_train.c) takes layer's cell input
 * sequence as x, calls its sites and grad sites once per timestep, and reads no mask or positions. */
typedef struct {
    int layer;              /* first layer run (0 .. L; L: only the output head) */
    const float *x;         /* (B, T, C) residual entering `layer`, f32 on the device (read only) */
    int B, T;
    const int32_t *mask;    /* (B, T) attention mask, host; NULL = all ones */
    const int32_t *pos;     /* (B, T) position ids, host; NULL = 0..T-1 (GPT-NeoX's rotary reads them) */
    const int32_t *rows;    /* (n_rows) loss rows as b * T + t, host */
    int n_rows;
    float *logits;          /* (n_rows, V) f32 on the device: train_forward writes the loss rows' logits */
    /* Optional live rows (GPT-2 and GPT-NeoX; NULL: every row is computed). When the only sites of
     * the pass are on the residual entering `layer` (BLOCK_OUTPUT of layer - 1, BLOCK_INPUT of
     * layer) and they change no row of example b before live_start[b],
     * those rows are the clean run's in every layer above: the pass computes rows [live_start[b],
     * live_end[b]) alone and reads the others' keys and values from kv, (L - layer, 2, B, T, C) f32
     * on the device (layer l's K then V), whose rows before live_start[b] the caller filled with the
     * clean run's (post-rotary for GPT-NeoX); the pass writes the live rows' there. The loss rows
     * must be live; the backward's gradient at those two sites is 0 on the rows that are not. */
    const int *live_start, *live_end; /* (B) host */
    float *kv;
} model_train_pass;

typedef struct {
    cvene_site_fn fn;       /* the grad site callback (see above); return non-zero to abort */
    void *user;
    uint64_t sites[CVENE_N_COMPONENTS]; /* per component, a bitmask over layers (as cvene_run_opts.sites) */
} model_grad_sites;

typedef struct {
    const char *name;
    cvene_status (*forward)(cvene_model *m, const int32_t *ids, int B, int T, const cvene_run_opts *o);
    void (*free)(cvene_model *m); /* frees m->arch only */
    /* optional (NULL: sweeps fall back to full forwards) */
    cvene_status (*forward_from)(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o);
    /* optional: the (V, C) token-embedding matrix on the backend device */
    const float *(*token_embeddings)(cvene_model *m, int *V, int *C);
    /* optional (NULL: this architecture cannot train yet): a training pass (above). o: sites and
     * site_fn only (no logits, masks or ids: those are in tp). */
    cvene_status (*train_forward)(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o);
    /* dlogits (n_rows, V) on the device: the loss's gradient for tp->logits. Needs the
     * train_forward of the same tp just before (its saved activations). */
    cvene_status (*train_backward)(cvene_model *m, const model_train_pass *tp, const float *dlogits,
                                   const model_grad_sites *g);
    /* optional (NULL: this architecture cannot decode): a decoding call (above). o: sites and
     * site_fn only (its logits, masks and ids are not read: those are in dc). */
    cvene_status (*decode)(cvene_model *m, const model_decode *dc, int B, int T, const cvene_run_opts *o);
} cvene_model_vtable;

struct cvene_model {
    cvene_ctx *ctx;
    cvene_model_info info;
    const cvene_model_vtable *vt;
    void *arch;        /* the architecture's config and parameter pointers */
    void *param_mem;   /* one allocation on the backend device (NULL when nothing was converted) */
    st_archive map;    /* the checkpoint, kept mapped while parameters point into it (F32 tensors
                        * used in place on the CPU); empty otherwise. Closed by cvene_model_free. */
    void *act_mem;     /* the activation arena, grown to the largest (B, T) seen */
    size_t act_cap;
    void *train_mem;   /* the training arena (saved activations and backward scratch), grown likewise */
    size_t train_cap;
};

/* Loaders fill m (zeroed, m->ctx set): vt, arch, param_mem, info. On failure
 * they free m->arch; the caller frees param_mem and closes m->map. */
cvene_status gpt2_load(cvene_model *m, const char *dir, const cJSON *cfg);
cvene_status gpt_neox_load(cvene_model *m, const char *dir, const cJSON *cfg);
cvene_status gru_load(cvene_model *m, const char *dir, const cJSON *cfg); /* model_type "gru" (pyvene) */

/* What a model needs in memory, worked out from config.json alone (cvene_plan_memory). */
typedef struct {
    cvene_arch arch;
    int n_layer, n_embd, n_head, n_inner, vocab_size, n_positions;
    int64_t embed_params;  /* input embeddings (and position table): with the first layer */
    int64_t layer_params;  /* one block */
    int64_t final_params;  /* final norm and an untied output head: with the last layer */
    size_t arena_bytes;    /* the forward's activation arena for (B, T), device logits excluded */
    size_t logits_bytes;   /* B x T x V floats */
} model_plan;

/* on_device: inputs are copied to the device (CUDA), so the arena holds them too. */
cvene_status gpt2_plan(cvene_ctx *ctx, const char *dir, const cJSON *cfg, int B, int T, int on_device,
                       cvene_dtype adt, model_plan *out);
cvene_status gpt_neox_plan(cvene_ctx *ctx, const char *dir, const cJSON *cfg, int B, int T, int on_device,
                           cvene_dtype adt, model_plan *out);

/* ---- resumed forwards (models/resume.c) ---- */
/* Arguments of a forward_from: sizes, layer and past in range, no mask or position ids,
 * vocab columns valid (uses m->info). */
cvene_status resume_check(cvene_model *m, const cvene_resume *rs, int B, int T, const cvene_run_opts *o);
/* 1 if any site of layer l is on (then that layer computes every position). */
int resume_layer_has_sites(const cvene_run_opts *o, int l);
/* rows (B, N, C) <- rows T - N .. T - 1 of each (T, C) block of x (B, T, C), elements of esz bytes. */
cvene_status resume_gather_tail(cvene_backend *be, void *rows, const void *x, int B, int T, int N, int C, size_t esz);
/* Positions whose logits a forward keeps: 1 for a resumed forward with last_logits_only,
 * else opts->logits_to_keep (0: all). Fails (naming the field) unless 0 <= N <= T; checks the
 * options' logits columns too (logits_vocab: ids in range, only with logits_to_keep, not beside a
 * resumed forward's own). */
cvene_status model_logits_to_keep(cvene_model *m, const cvene_run_opts *o, const cvene_resume *rs, int T, int *N);
/* The logits columns a forward writes: the resumed forward's, the options', or NULL (every one). */
static inline const int32_t *model_logits_vocab(const cvene_run_opts *o, const cvene_resume *rs, int *n) {
    if (rs && rs->n_vocab > 0) return *n = rs->n_vocab, rs->vocab;
    if (o && o->n_logits_vocab > 0) return *n = o->n_logits_vocab, o->logits_vocab;
    return *n = 0, (const int32_t *)0;
}
/* full (B, past + T, C) <- per row: cache (past, C, f32), shared by the rows, then cur's (T, C);
 * full and cur hold adt elements (16-bit adt: the cache is rounded to it, exactly when it holds
 * values a 16-bit forward stored). */
cvene_status resume_join_cache(cvene_backend *be, cvene_dtype adt, void *full, const float *cache, const void *cur,
                               int B, int past, int T, int C);
/* dst (n, C) <- rows ids[0..n) of an output head (V, C) held in dt (the head's own dtype). */
cvene_status resume_head_rows(cvene_backend *be, void *dst, const void *head, cvene_dtype dt, const int32_t *ids,
                              int n, int C);

/* The output head of a causal LM forward (GPT-2, GPT-NeoX): ln_f over the rows whose logits
 * are kept, then those rows times the head, copied out. */
typedef struct {
    cvene_dtype adt;       /* activation storage (F32, or F16 / BF16: cvene_ctx_params.activation_dtype) */
    const void *x;         /* (B, T, C) final residual stream */
    const void *xq;        /* (B, keep, C) when the last block ran on the kept positions only, else x */
    void *gather;          /* (B, keep, C) scratch for gathering kept rows of x */
    void *ln;              /* (rows, C) scratch for ln_f's output */
    float *stage;          /* 16-bit adt: (rows, C) f32 scratch for the widened ln_f output; else unused */
    const float *ln_w, *ln_b;
    float eps;
    const void *head;      /* (V, C) in wdt */
    cvene_dtype wdt;
    void *wsel;            /* (n_vocab, C) scratch for the head rows of the columns asked for */
    const int32_t *vocab;  /* host ids of the only columns wanted (n_vocab of them); NULL: every column */
    int n_vocab;
    int B, T, C, V, row0, keep;
    float *dev;            /* device logits buffer, or NULL to write out directly (host memory) */
    float *out;            /* the caller's logits: host memory, copied from dev; with dev NULL written directly
                            * (host memory on the CPU; a decoding call's device buffer) */
} model_head_args;
cvene_status model_head_logits(cvene_backend *be, const model_head_args *a);

/* One GEMM of a causal LM forward in its activation storage: out = act(in @ W + bias).
 * adt F32: matmul_lp / matmul_act with W in wdt (f32, or 16-bit weights multiplying the
 * activations rounded to them); adt F16 / BF16: the 16-bit op (W in adt, out rounded to adt). */
static inline cvene_status model_gemm(cvene_backend *be, cvene_dtype adt, cvene_dtype wdt, void *out, const void *in,
                                      const void *w, int ldw, int trans_w, const float *bias, int M, int K, int N,
                                      cvene_act act) {
    if (adt != CVENE_F32) return be->ops->ops16->matmul_act(be, adt, out, in, w, ldw, trans_w, bias, M, K, N, act);
    float *o = (float *)out;
    const float *x = (const float *)in;
    if (act == CVENE_ACT_NONE) return be->ops->matmul_lp(be, o, x, w, wdt, ldw, trans_w, bias, M, K, N);
    return be->ops->matmul_act(be, o, x, w, wdt, ldw, trans_w, bias, M, K, N, act);
}
/* Element off of an activation buffer p holding adt elements. */
static inline void *act_at(const void *p, cvene_dtype adt, size_t off) {
    return (char *)(uintptr_t)p + off * (adt == CVENE_F32 ? 4 : 2);
}

/* A causal LM's site: o->site_fn on data (ndim, shape) held in adt. f32: the view is data
 * itself. F16 / BF16: data is widened into stage (f32, on the same device, at least numel
 * floats), the site sees stage, and stage is rounded back into data afterwards (edits the site
 * made are stored as a 16-bit model would store them). A site returning CVENE_SITE_STOP gives
 * CVENE_SITE_STOPPED; any other non-zero return fails with CVENE_ERR_CALLBACK naming it. */
cvene_status model_site(cvene_model *m, const cvene_run_opts *o, cvene_dtype adt, float *stage, cvene_component c,
                        int l, void *data, int ndim, const int64_t *shape);

/* Position ids a forward of m accepts are [0, model_position_limit(m)): the position table's
 * size for GPT-2 and the GRU, 2^24 + 1 for GPT-NeoX (rotary angles exact in f32). */
int model_position_limit(const cvene_model *m);

/* Grow the activation arena to at least bytes (used by every forward). */
cvene_status model_reserve_activations(cvene_model *m, size_t bytes, int B, int T);
/* Grow the training arena likewise (training passes). */
cvene_status model_reserve_training(cvene_model *m, size_t bytes);

/* A grad site of a training pass: g->fn on the (ndim, shape) f32 gradient data when g asks for
 * (c, l); CVENE_ERR_CALLBACK naming the site when it returns non-zero. */
cvene_status model_grad_site(cvene_model *m, const model_grad_sites *g, cvene_component c, int l, float *data,
                             int ndim, const int64_t *shape);
static inline int model_grad_on(const model_grad_sites *g, cvene_component c, int l) {
    return g && g->fn && ((g->sites[c] >> l) & 1u);
}

/* GPT-2's and GPT-NeoX's training passes (models/train_pass.c): a grad site on a (B, T, C) gradient
 * and, head_c not CVENE_N_COMPONENTS, its per-head (B, H, T, C / H) form first (permuted, called,
 * permuted back); with live rows, the packed (M, C) gradient g back on the (B, T, C) layout (0 on
 * the rows that are not live; tmp: M C floats of scratch, zero: B T C zeros). */
cvene_status model_grad_btc(cvene_model *m, const model_grad_sites *g, cvene_component c, cvene_component head_c, int l,
                            float *data, float *heads, int B, int T, int C, int H);
cvene_status model_live_unpack(cvene_backend *be, const model_train_pass *tp, float *g, float *tmp, const float *zero,
                               int C);
/* Live rows (models/train_pass.c): their count (B T without them), the moves between full
 * (B, T, W) and packed (R, W) rows (dir 0 gathers into packed, 1 scatters into full), loss row
 * i's index among the rows the pass runs, and the checks (sites o or grad sites g allowed only on
 * the residual entering tp->layer; the loss rows live). */
int model_live_rows(const model_train_pass *tp);
cvene_status model_live_move(cvene_backend *be, const model_train_pass *tp, float *full, float *packed, int W,
                             int dir);
size_t model_loss_row(const model_train_pass *tp, int i);
/* Zero the rows after each example's live ones (padding) in full (B, T, W), from zero (T W zeros or
 * more): the attention's padded keys and values must be finite, as padded query rows reach them. */
cvene_status model_live_pad(cvene_backend *be, const model_train_pass *tp, float *full, const float *zero, int W);
cvene_status model_check_live(cvene_model *m, const model_train_pass *tp, const cvene_run_opts *o,
                              const model_grad_sites *g, int n_layer);

#endif
