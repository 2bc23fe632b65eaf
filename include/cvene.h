/* cvene — native interventions on neural networks.
 *
 * The public C API. Everything is reached through opaque handles; every call
 * that can fail returns a cvene_status and leaves a human-readable message in
 * the context (cvene_ctx_error). Ownership:
 *   - cvene_ctx_new  -> caller frees with cvene_ctx_free (after freeing its models).
 *   - cvene_model_load -> caller frees with cvene_model_free; the model keeps a
 *     pointer to its context, which must outlive it.
 *   - Buffers passed in (token ids, masks, logits) stay owned by the caller.
 *   - Tensors handed to a site callback belong to the engine and are valid only
 *     during the callback; copy what you want to keep.
 * No global mutable state: two contexts may be used from two threads at once.
 * A single context (and its models) must not be used from two threads at once.
 */
#ifndef CVENE_H
#define CVENE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CVENE_OK = 0,
    CVENE_ERR_INVALID_ARG = 1, /* a caller-supplied value is out of range */
    CVENE_ERR_IO = 2,          /* a file could not be opened/read/mapped */
    CVENE_ERR_FORMAT = 3,      /* a file is malformed (safetensors, JSON, config) */
    CVENE_ERR_OOM = 4,         /* an allocation failed */
    CVENE_ERR_UNSUPPORTED = 5, /* valid request this build/backend cannot do */
    CVENE_ERR_BACKEND = 6,     /* CUDA / cuBLAS reported an error */
    CVENE_ERR_CALLBACK = 7     /* a user site callback asked to stop */
} cvene_status;

const char *cvene_status_name(cvene_status s);

typedef enum { CVENE_F32 = 0, CVENE_F16 = 1, CVENE_BF16 = 2, CVENE_I32 = 3 } cvene_dtype;
typedef enum { CVENE_DEVICE_CPU = 0, CVENE_DEVICE_CUDA = 1 } cvene_device;

/* ---- context ---------------------------------------------------------- */
typedef struct cvene_ctx cvene_ctx;

typedef struct {
    cvene_device device; /* CPU (default) or CUDA */
    int n_threads;       /* CPU threads; 0 = OpenMP default */
    int cuda_device;     /* CUDA ordinal when device == CUDA */
} cvene_ctx_params;

cvene_ctx_params cvene_ctx_default_params(void);
/* On failure *out is NULL; the message is also copied to errbuf when non-NULL. */
cvene_status cvene_ctx_new(const cvene_ctx_params *params, cvene_ctx **out,
                           char *errbuf, size_t errbuf_len);
void cvene_ctx_free(cvene_ctx *ctx);
/* Message of the last failing call on this context ("" if none). */
const char *cvene_ctx_error(const cvene_ctx *ctx);
/* 1 if the CUDA backend was compiled in and a device is visible. */
int cvene_cuda_available(void);

/* ---- tensors seen at sites -------------------------------------------- */
typedef struct {
    void *data;          /* dtype elements, row-major contiguous */
    cvene_dtype dtype;
    cvene_device device;
    int ndim;
    int64_t shape[4];
} cvene_tensor_view;

/* ---- models ----------------------------------------------------------- */
typedef struct cvene_model cvene_model;

typedef enum { CVENE_ARCH_GPT2 = 0 } cvene_arch;

typedef struct {
    cvene_arch arch;
    int n_layer, n_head, n_embd, n_inner, vocab_size, n_positions;
    int64_t n_params; /* parameters actually used by the forward */
} cvene_model_info;

/* Load a Hugging Face model directory: config.json plus model.safetensors, or
 * model.safetensors.index.json with its shards. Nothing is read from the network. */
cvene_status cvene_model_load(cvene_ctx *ctx, const char *dir, cvene_model **out);
void cvene_model_free(cvene_model *m);
cvene_model_info cvene_model_get_info(const cvene_model *m);

/* ---- sites ------------------------------------------------------------
 * A site is the point in the forward where a stream is complete. Components
 * follow pyvene's names. Shapes (B batch, T tokens, C n_embd, H heads,
 * D = C/H, I = n_inner):                                                   */
typedef enum {
    CVENE_BLOCK_INPUT = 0,            /* (B, T, C) residual entering block l */
    CVENE_ATTENTION_INPUT,            /* (B, T, C) ln_1 output */
    CVENE_QUERY_OUTPUT,               /* (B, T, C) */
    CVENE_KEY_OUTPUT,                 /* (B, T, C) */
    CVENE_VALUE_OUTPUT,               /* (B, T, C) */
    CVENE_HEAD_QUERY_OUTPUT,          /* (B, H, T, D) */
    CVENE_HEAD_KEY_OUTPUT,            /* (B, H, T, D) */
    CVENE_HEAD_VALUE_OUTPUT,          /* (B, H, T, D) */
    CVENE_ATTENTION_WEIGHT,           /* (B, H, T, T) softmax probabilities */
    CVENE_ATTENTION_VALUE_OUTPUT,     /* (B, T, C) merged heads, c_proj input */
    CVENE_HEAD_ATTENTION_VALUE_OUTPUT,/* (B, H, T, D) */
    CVENE_ATTENTION_OUTPUT,           /* (B, T, C) attn c_proj output */
    CVENE_MLP_INPUT,                  /* (B, T, C) ln_2 output */
    CVENE_MLP_ACTIVATION,             /* (B, T, I) after GELU */
    CVENE_MLP_OUTPUT,                 /* (B, T, C) mlp c_proj output */
    CVENE_BLOCK_OUTPUT,               /* (B, T, C) residual leaving block l */
    CVENE_N_COMPONENTS
} cvene_component;

const char *cvene_component_name(cvene_component c);
/* Returns CVENE_N_COMPONENTS when the name is unknown. */
cvene_component cvene_component_from_name(const char *name);

/* Called at every site the run asked for (see cvene_run_opts.sites). The view
 * may be read and overwritten in place; the forward continues with what the
 * callback leaves there. Return non-zero to abort the forward
 * (CVENE_ERR_CALLBACK). */
typedef int (*cvene_site_fn)(void *user, cvene_component comp, int layer,
                             cvene_tensor_view *t);

typedef struct {
    const int32_t *attention_mask; /* (B, T) 1 = token, 0 = padding; NULL = all 1 */
    const int32_t *position_ids;   /* (B, T); NULL = 0..T-1 as transformers */
    float *logits;                 /* (B, T, V) out, f32 on the host; NULL = skip lm_head */
    cvene_site_fn site_fn;         /* NULL = no sites */
    void *site_user;
    /* sites[c] is a bitmask over layers (bit l = layer l, up to 64 layers) of
     * the sites at which site_fn is called. */
    uint64_t sites[CVENE_N_COMPONENTS];
} cvene_run_opts;

/* One forward over a (B, T) batch of token ids on the context's device. */
cvene_status cvene_forward(cvene_model *m, const int32_t *input_ids, int B, int T,
                           const cvene_run_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* CVENE_H */
