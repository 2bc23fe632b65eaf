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
    CVENE_ACT_TANH = 4     /* tanh(x) (GRU new gate) */
} cvene_act;

/* The element-wise GRU steps that are not an activation (gru_pointwise). */
typedef enum {
    CVENE_GRU_NEW_GATE_IN = 0, /* out = a + b * c          (x_n + r * h_n) */
    CVENE_GRU_HIDDEN = 1       /* out = a * b + (1 - a) * c (z * h + (1 - z) * n) */
} cvene_gru_step;

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
     * tied embedding layout). bias may be NULL. */
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
    /* x (n) = act(x) in place */
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
} cvene_ops;

struct cvene_backend {
    const cvene_ops *ops;
    cvene_device device;
    int n_threads;       /* CPU: threads for our loops (OpenBLAS follows OpenMP) */
    void *impl;          /* backend-private state (CUDA: stream, cuBLAS handle) */
    char *err;           /* where ops write a message on failure (the ctx's buffer) */
    size_t err_len;
};

/* Constructors; on failure return NULL and write a message to err. */
cvene_backend *cvene_backend_cpu_new(int n_threads, char *err, size_t err_len);
void cvene_backend_cpu_free(cvene_backend *be);
#ifdef CVENE_WITH_CUDA
cvene_backend *cvene_backend_cuda_new(int device, char *err, size_t err_len);
void cvene_backend_cuda_free(cvene_backend *be);
int cvene_backend_cuda_device_count(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
