/* One op table per device. Model code calls ops through it and never branches
 * on the device. All float buffers are f32 and live on the backend's device;
 * index buffers (ids, positions, masks) are int32 on the device too.
 * Every op returns CVENE_OK or a backend error status; ops never print.
 * Shape comments: B batch, T tokens, C channels, H heads, D head dim,
 * Tq query tokens, Tk key tokens (Tk >= Tq when a K/V cache is used). */
#ifndef CVENE_BACKEND_H
#define CVENE_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "cvene.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cvene_backend cvene_backend;

typedef enum {
    CVENE_GELU_TANH = 0,
    CVENE_GELU_ERF = 1,
    CVENE_ACT_RELU = 2,
    CVENE_ACT_SIGMOID = 3, /* 1 / (1 + exp(-x)) (GRU gates) */
    CVENE_ACT_TANH = 4,    /* tanh(x) (GRU new gate) */
    CVENE_ACT_NONE = 5     /* identity (matmul_act without an activation) */
} cvene_act;

/* The element-wise GRU steps that are not an activation (gru_pointwise). */
typedef enum {
    CVENE_GRU_NEW_GATE_IN = 0, /* out = a + b * c          (x_n + r * h_n) */
    CVENE_GRU_HIDDEN = 1       /* out = a * b + (1 - a) * c (z * h + (1 - z) * n) */
} cvene_gru_step;

/* The forward values one step of a GRU cell keeps for its backward (bwd.gru_cell's `saved`:
 * (CVENE_GRU_N_SAVED, n), each a (B, h) block in this order). "As read": after every site of
 * the step, i.e. the value the later ops of the forward used. */
typedef enum {
    CVENE_GRU_SAVED_H = 0,  /* h_{t-1}, the hidden state the cell read */
    CVENE_GRU_SAVED_AR = 1, /* a_r = x_r + h_r, the reset sigmoid's input */
    CVENE_GRU_SAVED_AZ = 2, /* a_z = x_z + h_z, the update sigmoid's input */
    CVENE_GRU_SAVED_AN = 3, /* a_n = x_n + r * h_n, the tanh's input */
    CVENE_GRU_SAVED_R = 4,  /* r as a_n read it */
    CVENE_GRU_SAVED_Z = 5,  /* z as the hidden update read it */
    CVENE_GRU_SAVED_N = 6,  /* n as the hidden update read it */
    CVENE_GRU_SAVED_HN = 7, /* h_n (h2h's new third) as a_n read it */
    CVENE_GRU_N_SAVED = 8
} cvene_gru_saved;

/* The stages of bwd.gru_cell, in the order they run (a bitmask selects them). d_r, d_z, d_n
 * are the gate gradients (d), dx_* and dh_* the gradients of x2h's and h2h's thirds. */
typedef enum {
    CVENE_GRU_BWD_HIDDEN = 1 << 0,     /* hy = z h + (1 - z) n: d_n = dh (1 - z), d_z = dh (h - n), dh_prev = dh z */
    CVENE_GRU_BWD_NEW_ACT = 1 << 1,    /* n = tanh(a_n):        d_n = d_n tanh'(a_n) */
    CVENE_GRU_BWD_NEW_IN = 1 << 2,     /* a_n = x_n + r h_n:    dx_n = d_n, dh_n = d_n r, d_r = d_n h_n */
    CVENE_GRU_BWD_UPDATE_ACT = 1 << 3, /* z = sigmoid(a_z):     d_z = d_z sigmoid'(a_z) */
    CVENE_GRU_BWD_UPDATE_IN = 1 << 4,  /* a_z = x_z + h_z:      dx_z = dh_z = d_z */
    CVENE_GRU_BWD_RESET_ACT = 1 << 5,  /* r = sigmoid(a_r):     d_r = d_r sigmoid'(a_r) */
    CVENE_GRU_BWD_RESET_IN = 1 << 6,   /* a_r = x_r + h_r:      dx_r = dh_r = d_r */
    CVENE_GRU_BWD_ALL = (1 << 7) - 1
} cvene_gru_bwd_stage;

/* What iv_units does to each touched float of a unit (x: the site, s: the source). */
typedef enum {
    CVENE_IVOP_VANILLA = 0,     /* x = s */
    CVENE_IVOP_ADDITION = 1,    /* x = x + s */
    CVENE_IVOP_SUBTRACTION = 2, /* x = x - s */
    CVENE_IVOP_ZERO = 3,        /* x = 0 (src unused, may be NULL) */
    CVENE_IVOP_COLLECT = 4      /* s = x (gather into src; x unchanged) */
} cvene_iv_op;

/* ---- 16-bit activation storage (issue #5) ----
 * The forward ops again, on activations stored as bf16 or f16 elements (dt CVENE_BF16 or
 * CVENE_F16; CVENE_F32 runs the f32 op of the same name, the void pointers then being
 * float). Parameters (embedding tables, layer-norm weights, biases) stay f32 arrays; GEMM
 * weights are dt elements. Semantics, one rule for every op: widen each 16-bit input to f32
 * (exact), compute exactly as the f32 op of the same name (its f32 / double accumulations),
 * round each output to dt once (nearest even, as torch stores the result of an op of a bf16 /
 * f16 model). Outputs written in place or in two steps (residual_layernorm's x, matmul_act's
 * GEMM before its activation) are rounded at each step the f32 ops would store. So the CPU
 * implementation (kernels/cpu/ops16.c: widen, f32 op, round) is the oracle, and the CUDA
 * kernels (the same templates as the f32 ones, loading and storing dt) differ from it only by
 * f32 summation order, and then by at most one rounding step of dt. Shapes, strides (in
 * elements) and aliasing rules are those of the f32 op; no entry is NULL. */
typedef struct cvene_ops16 {
    cvene_status (*embedding)(cvene_backend *be, cvene_dtype dt, void *out, const int32_t *ids,
                              const int32_t *pos, const float *wte, const float *wpe, int B, int T, int C);
    cvene_status (*layernorm)(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const float *w,
                              const float *b, int N, int C, float eps);
    /* x = round(x + y), then out = layernorm(x) (of the rounded x) */
    cvene_status (*residual_layernorm)(cvene_backend *be, cvene_dtype dt, void *x, const void *y, void *out,
                                       const float *w, const float *b, int N, int C, float eps);
    cvene_status (*residual_add)(cvene_backend *be, cvene_dtype dt, void *x, const void *y, size_t n);
    /* out = round(act(round(in @ W + bias))) with in, W and out dt elements, f32 bias and
     * accumulation (CVENE_ACT_NONE: out = round(in @ W + bias)) */
    cvene_status (*matmul_act)(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const void *w,
                               int ldw, int trans_w, const float *bias, int M, int K, int N, cvene_act act);
    /* probs = round(softmax(...)): the scores and the sums stay f32 / double inside the op */
    cvene_status (*attn_probs)(cvene_backend *be, cvene_dtype dt, void *probs, const void *q, size_t q_bs,
                               const void *k, size_t k_bs, const int32_t *key_mask, int B, int Tq, int Tk, int H,
                               int D, float scale);
    cvene_status (*attn_apply)(cvene_backend *be, cvene_dtype dt, void *out, const void *probs, const void *v,
                               size_t v_bs, int B, int Tq, int Tk, int H, int D);
    cvene_status (*activation)(cvene_backend *be, cvene_dtype dt, void *x, size_t n, cvene_act act);
    cvene_status (*softmax)(cvene_backend *be, cvene_dtype dt, void *x, int N, int C);
    cvene_status (*rotary)(cvene_backend *be, cvene_dtype dt, void *x, int ld, const int32_t *pos, int B, int T,
                           int H, int D, int rot_dims, float base);
    cvene_status (*permute_heads)(cvene_backend *be, cvene_dtype dt, void *dst, const void *src, int B, int T,
                                  int H, int D, int to_heads);
    cvene_status (*gru_pointwise)(cvene_backend *be, cvene_dtype dt, void *out, const void *a, const void *b,
                                  const void *c, size_t n, cvene_gru_step step);
    /* dst (n) of dst_dt = src (n) of src_dt (F32, F16, BF16; to 16-bit: nearest even, exact
     * otherwise); how 16-bit activations reach f32 sites and logits */
    cvene_status (*convert)(cvene_backend *be, void *dst, cvene_dtype dst_dt, const void *src, cvene_dtype src_dt,
                            size_t n);
    /* x (n, f32) = x rounded to dt (nearest even) and widened back, in place: a 16-bit result
     * kept in an f32 buffer (the output head's logits); dt F32 does nothing */
    cvene_status (*round)(cvene_backend *be, cvene_dtype dt, float *x, size_t n);
} cvene_ops16;

/* ---- backward ops (issue #13): gradients through a frozen model ----
 * The training path needs the gradient of a scalar loss with respect to activations (dX of
 * every op) and to the parameters of interventions and probes, never to the model's weights.
 * Each op takes dy, the gradient of its forward output, and what the forward read, and
 * writes dx (accumulate = 0) or adds it into dx (accumulate = 1: one f32 add of what
 * accumulate = 0 writes; matmul_tn's GEMM adds with beta = 1 instead). f32 only; all buffers on
 * the backend's device; row and column sums (statistics, softmax and cross-entropy sums,
 * sum_rows) in double (CPU) or in a fixed order (CUDA), GEMM-shaped products (attention's,
 * matmul_tn) in f32 as the forward's matmul, so a step is bit-identical on the same backend and
 * thread count. The GEMMs of a backward are the
 * forward's matmul / matmul_lp with the weight's transpose flag flipped (dX = dY Wᵀ); only
 * matmul_tn below is new. No entry is NULL (the CPU's are the reference the CUDA ones are
 * tested against). */
typedef struct cvene_ops_bwd {
    /* dx (N, C) (+)= the gradient of out = layernorm(x; w, b, eps) given dy (N, C): with the
     * statistics of x recomputed exactly as the forward layernorm computes them,
     *   xhat = (x - mean) * rstd,  g = dy * w,
     *   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)).
     * dx must not overlap dy or x. */
    cvene_status (*layernorm)(cvene_backend *be, float *dx, const float *dy, const float *x, const float *w, int N,
                              int C, float eps, int accumulate);
    /* Causal self-attention (Tq = Tk = T, as a training forward runs it), given dout (B, T, H*D),
     * the gradient of attn_apply's output, and the forward's q, k, v (B, T, H*D), contiguous,
     * and probs (B, H, T, T) (exactly as attn_probs wrote them: masked and unseen keys 0):
     *   dP = dout_h v_hᵀ,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),
     *   dq_h = scale dS k_h,  dk_h = scale dSᵀ q_h,  dv_h = Pᵀ dout_h.
     * dq, dk, dv (B, T, H*D) are written (never accumulated); dp is (B, H, T, T) scratch the
     * caller provides (it holds dS on return). Keys with P = 0 get dS = 0 whatever dP is, as
     * attn_apply skips them. No output may overlap an input. */
    cvene_status (*attention)(cvene_backend *be, float *dq, float *dk, float *dv, float *dp, const float *dout,
                              const float *q, const float *k, const float *v, const float *probs, int B, int T,
                              int H, int D, float scale);
    /* dx (n) (+)= dy ⊙ act'(x), x the activation's input (CVENE_GELU_TANH: gelu_new's exact
     * derivative; CVENE_GELU_ERF; RELU: 1 where x > 0; SIGMOID; TANH; NONE: dy). dx may alias
     * dy when not accumulating. */
    cvene_status (*activation)(cvene_backend *be, float *dx, const float *dy, const float *x, size_t n,
                               cvene_act act, int accumulate);
    /* The transpose of the forward rotary op (same arguments): every rotated pair of dims turned
     * back by its angle, in place. The gradient of a rotary embedding (rotations are orthogonal). */
    cvene_status (*rotary)(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T, int H, int D,
                           int rot_dims, float base);
    /* out (K, N) (+)= a (M, K)ᵀ b (M, N), row-major: the gradient of a weight (x (M, K) @ W (K, N)
     * gives dW = xᵀ dy) of an intervention or a probe. */
    cvene_status (*matmul_tn)(cvene_backend *be, float *out, const float *a, const float *b, int M, int K, int N,
                              int accumulate);
    /* Softmax cross-entropy over rows of logits (N, V): loss[r] = -log softmax(logits_r)[labels[r]]
     * and dlogits_r = scale * (softmax(logits_r) - onehot(labels[r])); a row with labels[r] < 0 is
     * ignored (loss 0, gradient 0). labels (N) on the device; loss (N) on the device. dlogits may
     * alias logits (in place). Reductions over V in double (CPU) / a fixed-order tree (CUDA).
     * V >= 1 (else CVENE_ERR_INVALID_ARG). labels[r] >= V is the caller's error, which the device
     * cannot report without a sync: that row's loss and gradient are NaN on both backends. */
    cvene_status (*xent)(cvene_backend *be, float *dlogits, float *loss, const float *logits, const int32_t *labels,
                         int N, int V, float scale);
    /* out (n) = alpha * a + beta * b + gamma element-wise (b NULL: the beta term is absent);
     * out may alias a or b. */
    cvene_status (*affine)(cvene_backend *be, float *out, const float *a, const float *b, float alpha, float beta,
                           float gamma, size_t n);
    /* out (n) (+)= a ⊙ b; out may alias a or b when not accumulating. */
    cvene_status (*mul)(cvene_backend *be, float *out, const float *a, const float *b, size_t n, int accumulate);
    /* out (N) (+)= the sum over the M rows of x (M, N): a bias's gradient. */
    cvene_status (*sum_rows)(cvene_backend *be, float *out, const float *x, int M, int N, int accumulate);
    /* The element-wise backward of one step of pyvene's GRUCell (the x2h / h2h GEMMs are the
     * caller's), over n = B * h elements, running the stages `stages` selects
     * (cvene_gru_bwd_stage, in enum order). Gate-major (3, n) buffers hold the reset, update and
     * new thirds one after another, each a contiguous (B, h):
     *   saved (8, n)  the forward's values (cvene_gru_saved)
     *   dh (n)        the gradient of the cell's output hy (HIDDEN reads it)
     *   dh_prev (n)   HIDDEN writes dh ⊙ z, the direct path to h_{t-1}; may alias dh
     *   d (3, n)      [d_r | d_z | d_n]: HIDDEN writes d_z and d_n, NEW_IN writes d_r, each *_ACT
     *                 stage turns its gate's output gradient into its input's, in place
     *   dx (3, n)     the gradient of x2h's output, written by the *_IN stages
     *   dhg (3, n)    the gradient of h2h's output, likewise
     * act' from the activation's input as bwd.activation computes it (s = sigmoid(a) recomputed,
     * s (1 - s); 1 - tanh(a)²); every product and sum is rounded to f32 in the order written.
     * Each element goes through the selected stages on one thread, reading and writing these
     * buffers, so splitting the stages over several calls (the caller reading or replacing a
     * gradient in between: the grad sites) gives the same bits as one call with all of them.
     * Nothing else may overlap. Unknown stage bits: CVENE_ERR_INVALID_ARG naming the op. */
    cvene_status (*gru_cell)(cvene_backend *be, float *dx, float *dhg, float *d, float *dh_prev, const float *dh,
                             const float *saved, size_t n, unsigned stages);
} cvene_ops_bwd;

/* ---- decoding (issue #16) ----
 * How the next token of each row is chosen from its last position's logits. Greedy: the
 * argmax (the lowest index among equal maxima, as torch.argmax). Sampling, in transformers'
 * order of logits warpers: z = logit / temperature (one f32 division), then top-k, then top-p,
 * then a draw:
 *   top-k (top_k > 0): keep the tokens with z >= the k-th largest z (ties at it kept, as
 *     transformers' TopKLogitsWarper); top_k >= V keeps all;
 *   top-p (top_p < 1): w_i = expf(z_i - zmax) over the top-k survivors, W = their sum; keep
 *     token i when the sum of w_j over survivors with z_j > z_i is < top_p * W (the most
 *     probable token is always kept);
 *   draw: u in [0, 1) from the counter-based generator below; target = u * (sum of the kept
 *     w_i); the token is the first kept index i (vocabulary order) whose inclusive running sum
 *     of kept w exceeds target, or the last kept index when rounding leaves none.
 * Sums of w in double on the CPU, in a fixed order on CUDA (so the CPU and CUDA may pick
 * different tokens only when target falls within rounding of a boundary).
 * Non-finite logits: a NaN logit (NaN z) is never chosen, by greedy or sampling (it is never
 * a top-k or top-p survivor and has no w), unless every logit of the row is NaN: then token 0.
 * -inf is an ordinary value (w = 0: drawn only when every surviving z is -inf). The weight of
 * a survivor is w_i = 1 when z_i == zmax, else expf(z_i - zmax) (the same for a finite zmax;
 * when zmax is +inf, e.g. a huge logit over a tiny temperature, the +inf tokens share the
 * draw equally and every other w is 0; when every survivor is -inf, all are equally likely).
 * Refused with CVENE_ERR_INVALID_ARG (message in be->err, nothing written): V < 1, B < 0,
 * ld < V, n_stop < 0, a NULL sp, a NULL ids / done / logits when B > 0, a NULL stop when
 * n_stop > 0; and, when sampling (greedy 0): temperature not > 0 and finite, top_p not in
 * (0, 1], top_k < 0, a NULL scratch (greedy reads neither these fields nor scratch).
 * The uniform of row b at decoding step `step` (both backends, bit for bit):
 *   x = splitmix64(splitmix64(seed + step) + b),  u = (x >> 40) * 2^-24,
 *   splitmix64(z): z += 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *                  z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31). */
typedef struct {
    int greedy;        /* 1: argmax; the fields below are not read */
    float temperature; /* > 0 */
    int top_k;         /* 0 = off */
    float top_p;       /* (0, 1]; 1 = off */
    uint64_t seed;
} cvene_sample_params;

typedef struct cvene_ops_gen {
    /* height rows of width bytes: row r from src + r * spitch to dst + r * dpitch (device to
     * device, stream-ordered: cudaMemcpy2DAsync on CUDA). Rows must not overlap. height or
     * width 0 does nothing; a NULL dst or src, or height > 1 with dpitch or spitch < width
     * (rows that would overlap), is CVENE_ERR_INVALID_ARG; with height 1 the pitches are not
     * read. */
    cvene_status (*copy2d)(cvene_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                           size_t width, size_t height);
    /* The next token of each of B rows: logits (B, V) f32 with row stride ld floats. ids (B)
     * int32 written. done (B) int32: a row with done[b] != 0 gets pad_id (transformers'
     * finished sequences), any other row the token chosen by sp (above), and then done[b] = 1
     * when that token is one of stop[0 .. n_stop) (n_stop may be 0, stop then unread).
     * scratch: (B, V) f32 the op may overwrite. ids, done, stop and scratch on the device;
     * logits are read only. No host synchronisation. */
    cvene_status (*sample)(cvene_backend *be, int32_t *ids, int32_t *done, const float *logits, int64_t ld, int B,
                           int V, float *scratch, const cvene_sample_params *sp, uint64_t step,
                           const int32_t *stop, int n_stop, int32_t pad_id);
} cvene_ops_gen;

typedef struct cvene_ops {
    const char *name;

    /* memory */
    cvene_status (*alloc)(cvene_backend *be, void **ptr, size_t nbytes);
    void (*free)(cvene_backend *be, void *ptr);
    cvene_status (*to_device)(cvene_backend *be, void *dst, const void *host_src, size_t n);
    cvene_status (*to_host)(cvene_backend *be, void *host_dst, const void *src, size_t n);
    cvene_status (*copy)(cvene_backend *be, void *dst, const void *src, size_t n);
    cvene_status (*sync)(cvene_backend *be);

    /* out (N, C) = wte[ids] + wpe[pos]; pos NULL means 0..T-1 per row of T. */
    cvene_status (*embedding)(cvene_backend *be, float *out, const int32_t *ids,
                              const int32_t *pos, const float *wte, const float *wpe,
                              int B, int T, int C);
    /* out (N, C) = (in - mean) / sqrt(var + eps) * w + b   per row */
    cvene_status (*layernorm)(cvene_backend *be, float *out, const float *in,
                              const float *w, const float *b, int N, int C, float eps);
    /* out (M, N) = in (M, K) @ W + bias.  trans_w = 0: W is (K, N) row-major with
     * leading dimension ldw (Conv1D layout, column slices allowed);
     * trans_w = 1: W is (N, K) row-major with leading dimension ldw (nn.Linear /
     * tied embedding layout). bias may be NULL; K = 0 gives out = bias (zeros without one). */
    cvene_status (*matmul)(cvene_backend *be, float *out, const float *in, const float *w,
                           int ldw, int trans_w, const float *bias, int M, int K, int N);
    /* probs (B, H, Tq, Tk) = softmax(q k^T * scale + masks).
     * q is (B, Tq, H*D) with batch stride q_bs; k is (B, Tk, H*D) with batch stride
     * k_bs. Query i sits at key position (Tk - Tq) + i and sees keys j <= that
     * (causal) whose key_mask[b, j] != 0 (key_mask (B, Tk) with batch stride Tk,
     * NULL = all valid). A query that sees no key gets an all-zero row. */
    cvene_status (*attn_probs)(cvene_backend *be, float *probs, const float *q, size_t q_bs,
                               const float *k, size_t k_bs, const int32_t *key_mask, int B,
                               int Tq, int Tk, int H, int D, float scale);
    /* out (B, Tq, H*D) = probs (B, H, Tq, Tk) @ v  with v (B, Tk, H*D), batch stride v_bs */
    cvene_status (*attn_apply)(cvene_backend *be, float *out, const float *probs,
                               const float *v, size_t v_bs, int B, int Tq, int Tk, int H,
                               int D);
    /* x (n) = act(x) in place (CVENE_ACT_NONE: x unchanged, nothing runs) */
    cvene_status (*activation)(cvene_backend *be, float *x, size_t n, cvene_act act);
    /* x (N, C) = softmax over each row, in place */
    cvene_status (*softmax)(cvene_backend *be, float *x, int N, int C);
    /* x (n) += y (n) */
    cvene_status (*residual_add)(cvene_backend *be, float *x, const float *y, size_t n);
    /* Rotary position embedding in place on x (B, T, H*D) with row stride ld
     * (floats between consecutive tokens): GPT-NeoX's rotate-half over the first
     * rot_dims of each head, angle pos * base^(-2i/rot_dims); pos (B, T) or NULL
     * for 0..T-1. (Implemented by the GPT-NeoX work.) */
    cvene_status (*rotary)(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T,
                           int H, int D, int rot_dims, float base);
    /* dst (B, H, T, D) <- src (B, T, H, D) when to_heads, else the reverse. */
    cvene_status (*permute_heads)(cvene_backend *be, float *dst, const float *src, int B,
                                  int T, int H, int D, int to_heads);
    /* out (n) = step(a, b, c) element-wise, each product and sum rounded to f32 in the
     * order written (as torch evaluates pyvene's GRUCell); out may alias any input. */
    cvene_status (*gru_pointwise)(cvene_backend *be, float *out, const float *a, const float *b,
                                  const float *c, size_t n, cvene_gru_step step);

    /* ---- fused interventions (engine/run.c); one launch each, no device sync ----
     * iv_units: gather / compute / scatter over n units in one pass. Unit u is R rows of
     * D floats: row r at x + x_off[u] + r * x_rs; its source row r at
     * src + src_off[u] + r * src_rs (src_rs = 0 broadcasts one row, a constant source).
     * The unit touches dims[dims_off[u] .. + dims_n[u]) of each row (indices in [0, D),
     * at most D of them), or all D when dims_n[u] < 0 or dims_n is NULL (then dims and
     * dims_off are not read). op is a cvene_iv_op. The index arrays live on the backend's
     * device. Units that op writes (x for VANILLA..ZERO, src for COLLECT) must not
     * overlap one another; the caller dedupes (pyvene's scatter keeps the last). */
    cvene_status (*iv_units)(cvene_backend *be, float *x, const int64_t *x_off, int64_t x_rs,
                             float *src, const int64_t *src_off, int64_t src_rs,
                             const int32_t *dims, const int64_t *dims_off, const int32_t *dims_n,
                             int n, int R, int D, int op);
    /* iv_rotated: rotated-subspace interchange on n vectors of D floats, x_i at
     * x + x_off[i], s_i at s + s_off[i] (x_off / s_off NULL: i * D), in place on x:
     *   trans = 0: x_i <- x_i + W^T (W s_i - W x_i), W (k, D) row-major: rows of an
     *              orthogonal rotation (pyvene's RotatedSpaceIntervention, interchange_dim k);
     *   trans = 1: x_i <- x_i + W (W^T s_i - W^T x_i), W (D, k) row-major
     *              (pyvene's LowRankRotatedSpaceIntervention).
     * Computed as W^T (W (s_i - x_i)) with f32 accumulation. Vectors must not overlap;
     * s may alias x only where s_i == x_i exactly (a no-op). */
    cvene_status (*iv_rotated)(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                               const int64_t *s_off, const float *W, int n, int D, int k, int trans);

    /* ---- reduced precision (opt-in; issue #5) ----
     * matmul_lp: out (M, N) = round(in) (M, K) @ W + bias, where W holds w_dtype elements
     * (F16 or BF16, 16-bit patterns; layout, ldw and trans_w exactly as matmul) and round()
     * rounds each input activation to w_dtype (round-to-nearest-even, as torch does when a
     * bf16 / f16 model runs). Products of the rounded operands are accumulated in f32 and
     * written as f32; bias (f32, may be NULL) is added in f32. w_dtype F32 is exactly
     * matmul (W is then float). Both backends multiply the same rounded operands, so they
     * differ only by f32 accumulation order. CUDA: the rounded inputs go to a grow-only
     * scratch buffer of the backend (stream-ordered, no sync), then cuBLAS GemmEx with
     * CUBLAS_COMPUTE_32F. CPU (the oracle): rounds in and W to f32 copies and calls matmul. */
    cvene_status (*matmul_lp)(cvene_backend *be, float *out, const float *in, const void *w,
                              cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                              int K, int N);

    /* ---- fused ops (a model uses them only where no site sits between the parts) ----
     * residual_layernorm: x (N, C) += y (N, C), then out (N, C) = layernorm(x) with w, b,
     * eps exactly as the layernorm op: bit for bit residual_add(x, y, N * C) followed by
     * layernorm(out, x, ...) on the same backend (the add is one f32 add per element either
     * way; the statistics are the same double sums in the same order). x is updated in
     * place (it is the residual stream and stays needed); out must not overlap x or y.
     * CPU: one pass per row while it is in cache; CUDA: one block per row. */
    cvene_status (*residual_layernorm)(cvene_backend *be, float *x, const float *y, float *out,
                                       const float *w, const float *b, int N, int C, float eps);
    /* matmul_act: out (M, N) = act(in (M, K) @ W + bias): exactly matmul_lp (w_dtype, ldw,
     * trans_w, bias as there) followed by activation(out, M * N, act); CVENE_ACT_NONE is
     * matmul_lp alone. CPU (the oracle): those two ops. CUDA: f32 weights, a bias and
     * CVENE_GELU_TANH run as one cuBLASLt GEMM with the GELU+bias epilogue if that epilogue
     * reproduced gelu_new within 2e-6 when the backend was created (kernels/cuda/gemm.cu;
     * CVENE_CUDA_GELU_EPILOGUE=0 in the environment turns it off); everything else is the
     * GEMM (bias in its epilogue) then the activation kernel. */
    cvene_status (*matmul_act)(cvene_backend *be, float *out, const float *in, const void *w,
                               cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                               int K, int N, cvene_act act);

    /* the forward ops on 16-bit activations (above) */
    const cvene_ops16 *ops16;
    /* the backward ops (above) */
    const cvene_ops_bwd *bwd;
    /* the decoding ops (above) */
    const cvene_ops_gen *gen;
} cvene_ops;

struct cvene_backend {
    const cvene_ops *ops;
    cvene_device device;
    int n_threads;       /* CPU: threads for our loops (OpenBLAS follows OpenMP) */
    void *impl;          /* backend-private state (CUDA: stream, cuBLAS handle) */
    char *err;           /* where ops write a message on failure (the ctx's buffer) */
    size_t err_len;
    char name[160];      /* what the device is, for reports: the CPU's model name, the GPU's name */
};

/* Constructors; on failure return NULL and write a message to err. */
cvene_backend *cvene_backend_cpu_new(int n_threads, char *err, size_t err_len);
void cvene_backend_cpu_free(cvene_backend *be);
/* The CPU iv_units / iv_rotated (kernels/cpu/ops_intervene.c), as in cvene_ops. */
cvene_status cvene_cpu_iv_units(cvene_backend *be, float *x, const int64_t *x_off, int64_t x_rs, float *src,
                                const int64_t *src_off, int64_t src_rs, const int32_t *dims,
                                const int64_t *dims_off, const int32_t *dims_n, int n, int R, int D, int op);
cvene_status cvene_cpu_iv_rotated(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                                  const int64_t *s_off, const float *W, int n, int D, int k, int trans);
/* The CPU ops on 16-bit activations (kernels/cpu/ops16.c): each widens, runs the f32 op of
 * the backend it is given (which must hold host memory: the CPU backend) and rounds. */
extern const cvene_ops16 cvene_cpu_ops16;
/* The CPU backward ops (kernels/cpu/ops_bwd.c), the reference for the CUDA ones. */
extern const cvene_ops_bwd cvene_cpu_ops_bwd;
/* The CPU decoding ops (kernels/cpu/ops_gen.c), the reference for the CUDA ones. */
extern const cvene_ops_gen cvene_cpu_ops_gen;
/* The argument checks of gen.copy2d / gen.sample (kernels/cpu/ops_gen.c), shared by both
 * backends so they refuse the same calls with the same message: CVENE_OK, or
 * CVENE_ERR_INVALID_ARG with the message in be->err. */
cvene_status cvene_gen_copy2d_check(cvene_backend *be, const void *dst, size_t dpitch, const void *src,
                                    size_t spitch, size_t width, size_t height);
cvene_status cvene_gen_sample_check(cvene_backend *be, const int32_t *ids, const int32_t *done, const float *logits,
                                    int64_t ld, int B, int V, const float *scratch, const cvene_sample_params *sp,
                                    const int32_t *stop, int n_stop);
/* The CPU matmul_lp (kernels/cpu/ops_lowp.c), as in cvene_ops. */
cvene_status cvene_cpu_matmul_lp(cvene_backend *be, float *out, const float *in, const void *w,
                                 cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                 int K, int N);
#ifdef CVENE_WITH_CUDA
cvene_backend *cvene_backend_cuda_new(int device, char *err, size_t err_len);
void cvene_backend_cuda_free(cvene_backend *be);
int cvene_backend_cuda_device_count(void);
/* The backend's stream (a cudaStream_t) and device ordinal: for kernels/cuda/intervene.cu
 * and benchmarks that time work queued by ops (CUDA events on this stream). */
void *cvene_backend_cuda_stream(cvene_backend *be);
int cvene_backend_cuda_ordinal(cvene_backend *be);
/* The CUDA iv_units / iv_rotated (kernels/cuda/intervene.cu), as in cvene_ops. */
cvene_status cvene_cuda_iv_units(cvene_backend *be, float *x, const int64_t *x_off, int64_t x_rs,
                                 float *src, const int64_t *src_off, int64_t src_rs, const int32_t *dims,
                                 const int64_t *dims_off, const int32_t *dims_n, int n, int R, int D,
                                 int op);
cvene_status cvene_cuda_iv_rotated(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                                   const int64_t *s_off, const float *W, int n, int D, int k, int trans);
/* The CUDA matmul / matmul_act (kernels/cuda/gemm.cu: cuBLASLt), as in cvene_ops. */
cvene_status cvene_cuda_matmul(cvene_backend *be, float *out, const float *in, const float *w, int ldw, int trans_w,
                               const float *bias, int M, int K, int N);
cvene_status cvene_cuda_matmul_act(cvene_backend *be, float *out, const float *in, const void *w,
                                   cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M, int K,
                                   int N, cvene_act act);
/* The CUDA backward ops (kernels/cuda/backward.cu), as in cvene_ops. */
extern const cvene_ops_bwd cvene_cuda_ops_bwd;
/* The CUDA decoding ops (copy2d in kernels/cuda/backend_cuda.cu, sample in
 * kernels/cuda/sample.cu), as in cvene_ops. */
extern const cvene_ops_gen cvene_cuda_ops_gen;
cvene_status cvene_cuda_sample(cvene_backend *be, int32_t *ids, int32_t *done, const float *logits, int64_t ld, int B,
                               int V, float *scratch, const cvene_sample_params *sp, uint64_t step,
                               const int32_t *stop, int n_stop, int32_t pad_id);
/* The CUDA matmul_lp (kernels/cuda/lowp.cu), as in cvene_ops. */
cvene_status cvene_cuda_matmul_lp(cvene_backend *be, float *out, const float *in, const void *w,
                                  cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                  int K, int N);
/* cvene_ops16.matmul_act on CUDA (kernels/cuda/lowp.cu). */
cvene_status cvene_cuda_matmul16(cvene_backend *be, cvene_dtype dt, void *out, const void *in, const void *w, int ldw,
                                 int trans_w, const float *bias, int M, int K, int N, cvene_act act);
/* For kernels/cuda/lowp.cu: the backend's cuBLAS handle (a cublasHandle_t, bound to its
 * stream), and its scratch buffer grown to at least nbytes. The scratch is one buffer
 * owned by the backend, valid until the next call that grows it; growing frees the old
 * one stream-ordered (cudaFreeAsync), so work already queued on the stream may still
 * read it and nothing waits. One op at a time may use it (ops are issued in order). */
void *cvene_backend_cuda_blas(cvene_backend *be);
cvene_status cvene_backend_cuda_scratch(cvene_backend *be, size_t nbytes, void **out);
/* 1 when this backend's matmul_act fuses CVENE_GELU_TANH into the cuBLASLt epilogue, 0 when
 * it runs the GEMM and then its own activation kernel (for tests and reports). */
int cvene_backend_cuda_gelu_epilogue(cvene_backend *be);
/* The start-up probe's worst error of that epilogue against gelu_new (relative to
 * max(1, |gelu_new|)); -1 when the epilogue could not run, -2 when it was not probed. */
double cvene_backend_cuda_gelu_probe_error(cvene_backend *be);
/* How many f32 GEMMs this backend ran through cuBLASLt and through the cuBLAS fallback
 * (kernels/cuda/gemm.cu); either pointer may be NULL. */
void cvene_backend_cuda_gemm_counts(cvene_backend *be, int64_t *lt, int64_t *blas);
#endif

#ifdef __cplusplus
}
#endif
#endif
