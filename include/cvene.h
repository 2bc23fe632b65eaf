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
    CVENE_ERR_CALLBACK = 7,    /* a user site callback asked to stop */
    CVENE_ERR_NUMERIC = 8      /* a result is not finite (NaN or infinity); the message names where it
                                * first appeared */
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
    /* Precision of the big GEMMs (attention and MLP projections, a GRU's x2h / h2h, the
     * output head) of the models loaded on this context. CVENE_F32 (the default, 0):
     * everything in f32. CVENE_BF16 / CVENE_F16: those weights are held in that dtype on
     * the device (half the memory) and multiplied with the activations rounded to it
     * (nearest even, as torch running a bf16 / f16 model), accumulating in f32. Embeddings,
     * layer norms, biases, attention, softmax, the GRU's gates and the residual stream stay
     * f32, and sites still see f32 tensors. Logits then move by about 1e-2 relative (bf16)
     * from the f32 ones. GPT-2, GPT-NeoX and the GRU, on CUDA and on the CPU (the CPU path
     * is the reference: it converts each weight back to f32 at every GEMM, so it is slow);
     * CVENE_I32 fails with CVENE_ERR_INVALID_ARG. */
    cvene_dtype compute_dtype;
    /* Storage of the activations inside a GPT-2 / GPT-NeoX forward. CVENE_F32 (the default,
     * 0): as compute_dtype describes. CVENE_BF16 / CVENE_F16 (compute_dtype must be the same
     * dtype): the model runs as transformers runs it after model.to(dtype) - parameters
     * (embeddings, layer norms, biases too) rounded to dtype, and every op (embedding, layer
     * norm, each GEMM, attention, GELU, rotary, residual add) reads dtype activations, computes
     * in f32 and stores its result rounded to dtype (kernels/backend.h: cvene_ops16); logits are
     * dtype values returned as f32. Sites still see f32 tensors: each active site's tensor is
     * widened into an f32 copy before the site runs and rounded back after, so interventions
     * and collected activations work unchanged. Half the activation memory and bandwidth.
     * Sweeps keep their fast path (the resumed forward rounds the f32 residual and K/V caches
     * to dtype). GRU models refuse it (CVENE_ERR_UNSUPPORTED). */
    cvene_dtype activation_dtype;
} cvene_ctx_params;

cvene_ctx_params cvene_ctx_default_params(void);
/* On failure *out is NULL; the message is also copied to errbuf when non-NULL. */
cvene_status cvene_ctx_new(const cvene_ctx_params *params, cvene_ctx **out,
                           char *errbuf, size_t errbuf_len);
void cvene_ctx_free(cvene_ctx *ctx);
/* Message of the last failing call on this context ("" if none). */
const char *cvene_ctx_error(const cvene_ctx *ctx);
/* The library's version ("0.1.0"). */
const char *cvene_version(void);
/* sizeof the public struct named type_name ("cvene_run_opts", ...; 0 for an unknown name): bindings
 * that mirror the structs (the Python package) check their layout against the library they load. */
size_t cvene_abi_sizeof(const char *type_name);

/* What the context's device is, for reports: the GPU's name ("NVIDIA H100 80GB HBM3"), or the
 * CPU's model name. Owned by the context. */
const char *cvene_ctx_device_name(const cvene_ctx *ctx);
/* The CPU threads the context's ops use (its n_threads, else OpenMP's default); 0 on CUDA. */
int cvene_ctx_threads(const cvene_ctx *ctx);
/* 1 if the CUDA backend was compiled in and a device is visible. */
int cvene_cuda_available(void);
/* CUDA devices visible to this process (0 without the CUDA backend). */
int cvene_cuda_device_count(void);

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

typedef enum { CVENE_ARCH_GPT2 = 0, CVENE_ARCH_GPT_NEOX = 1, CVENE_ARCH_GRU = 2 } cvene_arch;

typedef struct {
    cvene_arch arch;
    /* GRU: n_embd = h_dim, n_head = 1, n_inner = 3 h_dim (the x2h / h2h width);
     * vocab_size is the logits' last dimension, i.e. n_labels for GRUForClassification */
    int n_layer, n_head, n_embd, n_inner, vocab_size, n_positions;
    int64_t n_params; /* parameters actually used by the forward */
    int n_token_ids;  /* token ids the forward accepts: [0, n_token_ids) (the embedding's rows; differs
                       * from vocab_size for a GRU classifier) */
} cvene_model_info;

/* Load a Hugging Face model directory: config.json plus model.safetensors, or
 * model.safetensors.index.json with its shards. Nothing is read from the network.
 * model_type "gpt2", "gpt_neox", or "gru" (pyvene's GRUConfig; the head is chosen by
 * "architectures": GRULMHeadModel or GRUForClassification, else by the checkpoint's
 * lm_head.weight / score.weight). */
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
    /* GRU (models/gru.c; pyvene's GRU mapping). A GRU's streams exist per timestep:
     * the site of (component, layer) is called once per timestep t = 0, 1, ..., T-1,
     * in that order, with a (B, W) view of the stream at that step (W = h_dim, or
     * 3 h_dim for x2h_output / h2h_output), and what the callback leaves there
     * feeds the rest of the recurrence. Listed in the order they fire within a
     * (timestep, layer); layers run 0..L-1 inside each timestep. */
    CVENE_CELL_INPUT,                 /* cells[l] input x_t: the embedding (l = 0) or cell_output of
                                       * layer l-1 at t -- the same buffer, which is also layer l-1's
                                       * hidden state for step t+1 (pyvene's in-place semantics) */
    CVENE_X2H_OUTPUT,                 /* x2h(x_t) = [x_r | x_z | x_n], 3 h_dim */
    CVENE_RESET_X2H_OUTPUT,           /* x_r */
    CVENE_UPDATE_X2H_OUTPUT,          /* x_z */
    CVENE_NEW_X2H_OUTPUT,             /* x_n */
    CVENE_H2H_OUTPUT,                 /* h2h(h_{t-1}) = [h_r | h_z | h_n], 3 h_dim */
    CVENE_RESET_H2H_OUTPUT,           /* h_r */
    CVENE_UPDATE_H2H_OUTPUT,          /* h_z */
    CVENE_NEW_H2H_OUTPUT,             /* h_n */
    CVENE_RESET_GATE_INPUT,           /* x_r + h_r */
    CVENE_RESET_GATE_OUTPUT,          /* r = sigmoid(x_r + h_r) */
    CVENE_UPDATE_GATE_INPUT,          /* x_z + h_z */
    CVENE_UPDATE_GATE_OUTPUT,         /* z = sigmoid(x_z + h_z) */
    CVENE_NEW_GATE_INPUT,             /* x_n + r * h_n */
    CVENE_NEW_GATE_OUTPUT,            /* n = tanh(x_n + r * h_n) */
    CVENE_CELL_OUTPUT,                /* h_t = z * h_{t-1} + (1 - z) * n */
    CVENE_N_COMPONENTS
} cvene_component;

/* Components below this one are the transformer (GPT-2 / GPT-NeoX) ones; from it up
 * to CVENE_N_COMPONENTS the GRU ones. */
#define CVENE_N_TRANSFORMER_COMPONENTS ((int)CVENE_CELL_INPUT)
/* 1 for a GRU component (unit "t"), 0 for a transformer one. */
int cvene_component_is_gru(cvene_component c);

const char *cvene_component_name(cvene_component c);
/* Returns CVENE_N_COMPONENTS when the name is unknown. */
cvene_component cvene_component_from_name(const char *name);

/* Called at every site the run asked for (see cvene_run_opts.sites). The view
 * may be read and overwritten in place; the forward continues with what the
 * callback leaves there. Return non-zero to abort the forward
 * (CVENE_ERR_CALLBACK). */
typedef int (*cvene_site_fn)(void *user, cvene_component comp, int layer,
                             cvene_tensor_view *t);
/* A site callback may return this to end the forward early with success (the
 * rest of the forward, logits included, is skipped). */
#define CVENE_SITE_STOP 0x5709

typedef struct {
    const int32_t *attention_mask; /* (B, T) 1 = token, 0 = padding; NULL = all 1 (a GRU reads
                                    * every token, as pyvene's; the mask only says which rows
                                    * are padding) */
    const int32_t *position_ids;   /* (B, T); NULL = 0..T-1 as transformers. GRU: NULL = no
                                    * position embedding (pyvene's GRUModel adds wpe only when
                                    * position_ids are given) */
    float *logits;                 /* (B, T, V) out, f32 on the host; NULL = skip lm_head. A GRU
                                    * classifier writes its score head at every timestep
                                    * (B, T, n_labels); pyvene's pooled logits are row len - 1 */
    int logits_row0;               /* logits only for batch rows logits_row0 .. B-1, so logits is
                                    * (B - logits_row0, T, V); default 0: every row */
    int logits_to_keep;            /* 0 (default): logits at every position; N in [1, T]: only each
                                    * row's last N positions (as transformers' logits_to_keep), so
                                    * logits is (B - logits_row0, N, V). The last block then runs
                                    * only those positions after its keys and values (unless a site
                                    * of that layer is on), and only N rows cross to the host.
                                    * GPT-2 and GPT-NeoX; a GRU refuses N != 0 */
    cvene_site_fn site_fn;         /* NULL = no sites */
    void *site_user;
    /* sites[c] is a bitmask over layers (bit l = layer l, up to 64 layers) of
     * the sites at which site_fn is called. */
    uint64_t sites[CVENE_N_COMPONENTS];
    int logits_on_device;          /* 1: logits is memory of the context's device (cvene_device_alloc) and the
                                    * logits are written there and stay there: nothing crosses to the host and
                                    * the forward does not wait for the device (read them with
                                    * cvene_device_to_host, or hand them to torch: cvene_dlpack.h). On the CPU
                                    * the device is the host. GPT-2 and GPT-NeoX */
    const int32_t *logits_vocab;   /* host ids of the only logits columns wanted (a metric's tokens), in this
                                    * order: logits is then (.., n_logits_vocab); NULL: every column. With
                                    * logits_to_keep only (GPT-2 and GPT-NeoX) */
    int n_logits_vocab;
} cvene_run_opts;

/* ---- device memory: outputs that stay on the device ----
 * Memory of the context's device (CUDA: device memory on its stream; CPU: the heap), for
 * cvene_run_opts.logits_on_device and for the device views results hand out. to_host waits for
 * the work queued before it. */
cvene_status cvene_device_alloc(cvene_ctx *ctx, size_t nbytes, void **out);
void cvene_device_free(cvene_ctx *ctx, void *p);
cvene_status cvene_device_to_host(cvene_ctx *ctx, void *host_dst, const void *src, size_t nbytes);

/* One forward over a (B, T) batch of token ids on the context's device. */
cvene_status cvene_forward(cvene_model *m, const int32_t *input_ids, int B, int T,
                           const cvene_run_opts *opts);


/* ---- interventions (pyvene-compatible) ---------------------------------
 * A config is pyvene's IntervenableConfig: a list of representations (where and
 * what to intervene) and a mode. A request is one call: base inputs, sources,
 * unit_locations and subspaces. cvene_run plans the forward passes, runs them
 * and returns a result (logits, collected activations). See
 * docs/interventions.md for the semantics and where they differ from pyvene. */
typedef enum {
    CVENE_IV_VANILLA = 0,   /* base[S] = source[S] */
    CVENE_IV_ADDITION,      /* base[S] += source[S] */
    CVENE_IV_SUBTRACTION,   /* base[S] -= source[S] */
    CVENE_IV_ZERO,          /* base[S] = 0 */
    CVENE_IV_COLLECT,       /* return base[S], leave the model alone */
    CVENE_IV_SKIP,          /* base = the source run's input of this component */
    CVENE_IV_NOISE,         /* base += level * RandomState(seed).randn(1, U, D) (pyvene's) */
    CVENE_IV_CALLBACK,      /* base = fn(base, source) (pyvene's LambdaIntervention) */
    /* trainable (docs/training.md; the formulas in engine/trainable.h) */
    CVENE_IV_ROTATED_SPACE,            /* RotatedSpaceIntervention: W (D, D) orthogonal */
    CVENE_IV_LOW_RANK_ROTATED_SPACE,   /* LowRankRotatedSpaceIntervention: W (D, r) orthonormal columns */
    CVENE_IV_BOUNDLESS_ROTATED_SPACE,  /* BoundlessRotatedSpaceIntervention: a learned boundary in W's basis */
    CVENE_IV_SIGMOID_MASK_ROTATED_SPACE, /* SigmoidMaskRotatedSpaceIntervention: a learned mask in W's basis */
    CVENE_IV_SIGMOID_MASK,             /* SigmoidMaskIntervention: a learned mask in the original basis */
    CVENE_IV_LOREFT,                   /* pyreft's LoreftIntervention: h + R^T (W h + b - R h) */
    /* basis- or code-from-data types (engine/tr_autoencoder.c) */
    CVENE_IV_PCA_ROTATED_SPACE,        /* PCARotatedSpaceIntervention: swap in a fixed PCA basis of data
                                        * (standardised); frozen, fitted by tr_pca_fit or loaded */
    CVENE_IV_AUTOENCODER,              /* AutoencoderIntervention: swap latents (interchange_dim: their
                                        * indices) of a ReLU autoencoder; latent width = low_rank_dimension */
    CVENE_IV_JUMPRELU_AUTOENCODER,     /* JumpReLUAutoencoderIntervention: swap a JumpReLU SAE's latents
                                        * (latent width = low_rank_dimension); its threshold never trains */
    /* pyreft's other ReFT interventions (sourceless, per position; R (r, D) orthonormal rows, W, b
     * a Linear(D, r), P a Linear(D, r) not orthogonal, c a learned (r) vector) */
    CVENE_IV_NOREFT,                   /* NoreftIntervention: h + P^T (W h + b - P h - p) */
    CVENE_IV_CONSREFT,                 /* ConsreftIntervention: h + R^T (c - R h) */
    CVENE_IV_LOBIREFT,                 /* LobireftIntervention: h + R^T c */
    CVENE_IV_DIREFT,                   /* DireftIntervention: h + R^T (W h + b) */
    CVENE_IV_NODIREFT,                 /* NodireftIntervention: h + P^T (W h + b) */
    CVENE_IV_N_TYPES
} cvene_intervention_type;

/* pos: positions; h: heads; h.pos: heads then positions (transformers); t: GRU
 * timesteps (GRU components only; docs/interventions.md, "GRU"). */
typedef enum { CVENE_UNIT_POS = 0, CVENE_UNIT_H, CVENE_UNIT_H_POS, CVENE_UNIT_T, CVENE_N_UNITS } cvene_unit;
typedef enum { CVENE_MODE_PARALLEL = 0, CVENE_MODE_SERIAL = 1 } cvene_mode;

/* A callback intervention. base is the gathered (B, U, R, D) block, row-major,
 * to be modified in place (R = rows per unit: 1 for positions, T for a head's
 * positions, Tq for attention_weight); source is the gathered source with the
 * same shape, or NULL when the call has none. dims/n_dims: the subspace of
 * example b (NULL = all D). Return non-zero to abort the run. */
typedef int (*cvene_intervention_fn)(void *user, float *base, const float *source,
                                     const int64_t shape[4], int example, const int *dims,
                                     int n_dims);

typedef struct {
    int layer;
    cvene_component component;
    cvene_unit unit;
    int max_number_of_units;   /* default 1; kept for pyvene round-trips */
    int low_rank_dimension;    /* 0 = unset; the rank of LowRankRotatedSpace and LoReFT */
    int interchange_dim;       /* RotatedSpace: the rotated dims swapped (pyvene's set_interchange_dim, saved
                                * as intervention_dimensions); 0 = unset: every dim, as pyvene */
    cvene_intervention_type type;
    int group_key;             /* -1 = none: then intervention i has its own source i */
    int link_key;              /* -1 = none (pyvene's intervention_link_key) */
    /* subspace_partition: n_partitions parts; part p is the dims
     * partition_dims[partition_offsets[p] .. partition_offsets[p + 1]). */
    int n_partitions;
    const int *partition_offsets; /* n_partitions + 1 entries */
    const int *partition_dims;
    const float *source;       /* constant source (Vanilla/Addition/Subtraction): D floats */
    int64_t source_len;
    cvene_intervention_fn fn;  /* CVENE_IV_CALLBACK */
    void *fn_user;
    double noise_level;        /* CVENE_IV_NOISE; pyvene's 0.13462981581687927 by default */
    uint32_t noise_seed;       /* CVENE_IV_NOISE; pyvene's 1 by default */
} cvene_representation;

typedef struct cvene_config cvene_config;

cvene_representation cvene_representation_default(void);
const char *cvene_intervention_type_name(cvene_intervention_type t); /* pyvene class name */
const char *cvene_unit_name(cvene_unit u);

/* Configs copy everything they are given. Free with cvene_config_free. */
cvene_status cvene_config_new(cvene_ctx *ctx, cvene_mode mode, cvene_config **out);
cvene_status cvene_config_add(cvene_config *c, const cvene_representation *r);
/* Parse pyvene's IntervenableConfig JSON: what IntervenableModel.save writes
 * (positional representations, "<class '...'>" types) or the dict form
 * {"mode":..., "representations":[{"layer":..,"component":..,...}]}. A
 * representation may name a callback ("intervention_type": "LambdaIntervention",
 * "callback": "NAME"); bind it with cvene_config_bind_callback before running. */
cvene_status cvene_config_parse(cvene_ctx *ctx, const char *json, cvene_config **out);
cvene_status cvene_config_bind_callback(cvene_config *c, const char *name,
                                        cvene_intervention_fn fn, void *user);
/* Dict-form JSON; *json is malloc'd, free with cvene_free. */
cvene_status cvene_config_to_json(const cvene_config *c, char **json);
int cvene_config_count(const cvene_config *c);
/* Representation i as parsed (NULL when out of range); owned by the config. */
const cvene_representation *cvene_config_get(const cvene_config *c, int i);
void cvene_config_free(cvene_config *c);
/* Trained weights for the config's trainable representations (RotatedSpace, LoReFT, ...: see
 * cvene_train_params), from dir/intkey_<key>.safetensors with pyvene's keys: what cvene train
 * --out writes, or pyvene's save converted by tools/convert_pyvene_weights.py. Each file is
 * checked now; its tensors when a run knows the model's widths. cvene_run then applies them
 * (units of one row: unit pos or h; no subspaces yet). All or nothing. The compute state built
 * on the first run stays with the config: do not run one such config on two threads at once. */
cvene_status cvene_config_load_weights(cvene_config *c, const char *dir);
/* How many of the config's representations are trainable (need cvene_config_load_weights). */
int cvene_config_count_trainable(const cvene_config *c);
void cvene_free(void *p);

/* ---- requests ---------------------------------------------------------- */
typedef struct {
    const int32_t *input_ids;      /* (B, T) */
    const int32_t *attention_mask; /* (B, T) or NULL */
    int B, T;
    const int32_t *position_ids;   /* (B, T) or NULL: as cvene_run_opts.position_ids (transformers'
                                    * position_ids; a GRU adds its position embedding only when given) */
} cvene_input;

typedef struct cvene_request cvene_request;

cvene_status cvene_request_new(cvene_ctx *ctx, cvene_request **out);
void cvene_request_free(cvene_request *r);
/* Inputs are copied. Sources are indexed by group (parallel) or by chain
 * position (serial); a missing source is pyvene's None. */
cvene_status cvene_request_set_base(cvene_request *r, const cvene_input *in);
cvene_status cvene_request_set_source(cvene_request *r, int index, const cvene_input *in);
/* unit_locations and subspaces in pyvene's forms, as JSON text (tuples as
 * 2-element lists, None as null); checked against the config in cvene_run. */
cvene_status cvene_request_set_unit_locations(cvene_request *r, const char *json);
cvene_status cvene_request_set_subspaces(cvene_request *r, const char *json);
void cvene_request_set_output_original(cvene_request *r, int on);
/* 1: time every intervention's work inside the forward (its source gather and its application,
 * each bracketed by a device synchronisation, so on CUDA the run itself gets slower): read with
 * cvene_result_intervention_seconds. For `cvene bench run`. */
void cvene_request_set_profile(cvene_request *r, int on);
/* A whole request as JSON: {"base": {"input_ids": [[..]], "attention_mask": [[..]],
 * "position_ids": [[..]]}, "sources": [{..} | null, ...], "unit_locations": .., "subspaces": ..,
 * "output_original_output": bool}. Any other key is refused (CVENE_ERR_FORMAT naming it): a
 * misspelt "unit_location" must not silently mean "the whole stream". A source may have batch
 * size 1 in parallel mode: its one example then serves every base example (as pyvene, which
 * broadcasts a source listed for one example). */
cvene_status cvene_request_parse(cvene_ctx *ctx, const char *json, cvene_request **out);

/* ---- runs -------------------------------------------------------------- */
typedef struct cvene_result cvene_result;

/* Plan and run the request. On failure nothing is returned and the model is
 * unchanged. The result is owned by the caller (cvene_result_free). */
cvene_status cvene_run(cvene_model *m, const cvene_config *c, const cvene_request *r,
                       cvene_result **out);
const float *cvene_result_logits(const cvene_result *res, int *B, int *T, int *V);
const float *cvene_result_original_logits(const cvene_result *res); /* NULL unless asked */
int cvene_result_n_collected(const cvene_result *res);
/* Collected activations in config order of the Collect interventions. */
cvene_tensor_view cvene_result_collected(const cvene_result *res, int k);
/* The same values left on the context's device (equal bit for bit; valid until
 * cvene_result_free; on the CPU the host copy itself): for cvene_dlpack.h, without a copy. */
cvene_tensor_view cvene_result_collected_device(const cvene_result *res, int k);
int cvene_result_n_passes(const cvene_result *res); /* forwards the plan ran */
/* Seconds intervention k (config order) took in this run, summed over its calls (profiled
 * requests only; -1 otherwise). */
double cvene_result_intervention_seconds(const cvene_result *res, int k);
void cvene_result_free(cvene_result *res);

/* ---- generation (docs/generation.md) --------------------------------------
 * Decoding from a batch of prompts (the request's base: left-padded rows with an attention
 * mask, as transformers' generate takes them) with a K/V cache that grows per step, on the
 * context's device. Greedy by default (transformers' generate with do_sample=False); sampling
 * with temperature, top-k and top-p from a seed (reproducible run to run on one backend; the
 * rules in kernels/backend.h, cvene_sample_params). A row that emits one of eos_ids emits
 * pad_id from then on; generation ends when every row has ended or after max_new_tokens.
 * Position ids follow transformers: cumsum(mask) - 1 over the prompt (1 at padding), then one
 * more per step (or the base's own position_ids over the prompt, then their last + 1, + 2, ...).
 *
 * With a config, interventions act while decoding with pyvene 0.1.8's IntervenableModel.generate
 * semantics. Call 0 is the prompt's forward (it produces generated token 0); call j >= 1 reads
 * token j - 1 (its input is one position per row) and produces token j.
 *   intervene_on_prompt 1, unit_locations given: call 0 only (the prompt);
 *   intervene_on_prompt 0: calls 1, 2, ... (every generated token's call, not the prompt's),
 *     at the request's unit_locations, which then index the step's one position (pyvene's
 *     default when none are given: {"base": 0});
 *   intervene_on_prompt 1, unit_locations none (null): every call, on the whole stream (the
 *     steering case with a constant-source Addition).
 * first_call / last_call (cvene's, pyvene's issue #111) narrow that to calls
 * [first_call, last_call] (-1: no bound), e.g. first 1, last 5: the calls producing generated
 * tokens 1..5. Sources run once, before the prompt, and every call reuses what they gave (serial
 * mode: the chain source_0 -> source_1 -> ..., then the last group acts on the calls).
 * CollectIntervention keeps one result per call it acts on (cvene_generation_collected). */
typedef struct {
    int max_new_tokens;      /* >= 1 (default 16) */
    int do_sample;           /* 0 (default): greedy */
    float temperature;       /* > 0 (default 1) */
    int top_k;               /* 0 (default): off */
    float top_p;             /* (0, 1] (default 1: off) */
    uint64_t seed;           /* default 0 */
    const int32_t *eos_ids;  /* a row ends after emitting one of these (NULL / 0: never) */
    int n_eos;
    int32_t pad_id;          /* what an ended row emits; -1 (default): eos_ids[0], else 0 */
    int intervene_on_prompt; /* pyvene's generate argument (default 0) */
    int first_call, last_call; /* -1 (default): every call the rule above selects */
    int keep_logits;         /* 1: the result holds each step's logits (B, steps, V) (transformers'
                              * output_logits); 0 (default): only the ids */
    /* streaming: called after every step with that step's token of each row (host ids, B of
     * them); return non-zero to stop early (the result then ends at that step) */
    int (*on_token)(void *user, int step, const int32_t *ids, int B);
    void *user;
} cvene_gen_params;
cvene_gen_params cvene_gen_default_params(void);

typedef struct cvene_generation cvene_generation;
/* Generate from r's base (sources, unit_locations and subspaces when c is given; c NULL: no
 * interventions, r's base only). The result is owned by the caller (cvene_generation_free). */
cvene_status cvene_generate(cvene_model *m, const cvene_config *c, const cvene_request *r, const cvene_gen_params *p,
                            cvene_generation **out);
/* (B, T) ids: each row's prompt (as given, padding included) then its generated tokens, T =
 * prompt length + steps (transformers' generate output). */
const int32_t *cvene_generation_ids(const cvene_generation *g, int *B, int *T);
/* Generated tokens per row (steps) and the prompt length. */
int cvene_generation_steps(const cvene_generation *g);
int cvene_generation_prompt_len(const cvene_generation *g);
/* (B, steps, V) f32 logits of each step's last position, or NULL without keep_logits. */
const float *cvene_generation_logits(const cvene_generation *g, int *B, int *steps, int *V);
/* The same, left on the context's device (valid until cvene_generation_free; with
 * cvene_dlpack.h, torch reads them without a copy), step-major as decoding wrote them: ids
 * (steps, B) i32, logits (steps, B, V) f32 (a view with data NULL without keep_logits). Equal bit
 * for bit to the host copies above. */
cvene_tensor_view cvene_generation_device_ids(const cvene_generation *g);
cvene_tensor_view cvene_generation_device_logits(const cvene_generation *g);
/* CollectIntervention results: one tensor per intervened call (the shape cvene_run gives for that
 * call's input: the prompt, or a step's one position), grouped by intervention in config order,
 * then by call, as pyvene's generate returns its collected activations. *call (may be NULL): the
 * call it came from. Host memory owned by g. */
int cvene_generation_n_collected(const cvene_generation *g);
cvene_tensor_view cvene_generation_collected(const cvene_generation *g, int k, int *call);
void cvene_generation_free(cvene_generation *g);

/* ---- ranks: one process per device, started by MPI ---------------------------
 * A communicator joins the processes of one run (`mpirun -np N`, Slurm's `srun`). Host buffers move
 * over MPI, which is the whole transport of CPU ranks, so every schedule runs without GPUs. Work is
 * split (sweep layers by their cost, dataset examples) and results are exchanged so that they never
 * depend on the number of ranks: a sweep on N ranks equals the single process bit for bit.
 * Lifetime: cvene_comm_new -> cvene_comm_free (after every call that uses it; the context outlives
 * it). A communicator that initialised MPI finalises it when freed, and MPI cannot be initialised
 * twice in one process: make one communicator per process. */
typedef struct cvene_comm cvene_comm;
/* 1 when this process was started by an MPI launcher (mpirun, srun: its environment says so) */
int cvene_comm_launched(void);
/* the number of ranks the launcher started, from the environment (1 without a launcher) */
int cvene_comm_launched_size(void);
/* this process's rank among the ranks on its machine, from the launcher's environment (0 without
 * one): the CLI's default CUDA device on ranks is this modulo the visible devices */
int cvene_comm_launched_local_rank(void);
/* 1 when this build has MPI */
int cvene_comm_mpi_available(void);
/* use_mpi 0: this process alone (rank 0 of 1, nothing leaves it); 1: MPI's world (MPI initialised
 * here unless the caller did; CVENE_ERR_UNSUPPORTED in a build without MPI). timeout_s: how long a
 * collective waits for every rank before failing (<= 0: 600 s, or CVENE_COMM_TIMEOUT seconds). */
cvene_status cvene_comm_new(cvene_ctx *ctx, int use_mpi, double timeout_s, cvene_comm **out);
int cvene_comm_rank(const cvene_comm *c);
int cvene_comm_size(const cvene_comm *c);
/* Every rank gives n bytes describing what it is about to do (model, arguments); CVENE_ERR_INVALID_ARG
 * on every rank, naming `what` and the first rank whose bytes differ from rank 0's, when they differ. */
cvene_status cvene_comm_agree(cvene_comm *c, const void *data, size_t n, const char *what);
/* root's n bytes to every rank */
cvene_status cvene_comm_bcast(cvene_comm *c, void *data, size_t n, int root);
/* Results streamed to rank 0 as they are done (a rank's sweep layers, a grid's cells): post sends
 * unit `item`'s n bytes from a rank other than 0; on rank 0, collect returns one that has arrived:
 * *item >= 0, its *n bytes in data (room: cap bytes), *from its rank; *item = -1 when none arrived
 * within wait_s seconds (0: do not wait); *item = -2 when the next one is longer than cap (*n says
 * how long; it stays queued: call again with more room). Messages from one rank arrive in the order
 * posted. n and from may be NULL. */
cvene_status cvene_comm_post(cvene_comm *c, int item, const void *data, size_t n);
cvene_status cvene_comm_collect(cvene_comm *c, int *item, void *data, size_t cap, size_t *n, int *from,
                                double wait_s);
/* Units of work with costs split among n_ranks: costliest first to the least-loaded rank (ties: the
 * lower unit, the lower rank), the same on every rank. skip (may be NULL): units already done (owner
 * -1). owner: (n_units). */
void cvene_comm_split(const double *cost, const int *skip, int n_units, int n_ranks, int *owner);
/* End every rank of the run now (a rank that cannot go on: the others would wait for it). Returns
 * only on a single-process communicator. */
void cvene_comm_abort(cvene_comm *c, int code);

/* ---- layer split: a model's layers in stages on ranks (docs/ranks.md) ---------------
 * Stage s of N runs the contiguous layers `cvene plan --devices N` gives device s (the first
 * L % N stages one layer more): stage 0 also the embeddings, the last stage the final norm and
 * the output head. The B rows go through in micro-batches: stage s passes a micro-batch's residual
 * (and its carry) to stage s + 1 and takes the next, so once the pipe is full every stage works. */
void cvene_stage_layers(int n_layer, int n_stages, int stage, int *first, int *count);

/* A site of a staged forward, called on the rank whose stage holds the layer, for the rows
 * [row0, row0 + v->shape[0]) of the batch; carry: those rows' carry (rows x carry floats, host
 * memory), which travels with them to the later stages (zero at stage 0): what a site on one
 * stage leaves for a site on a later one (a source read at layer 2 and written at layer 6). May
 * change v (as cvene_site_fn). Non-zero stops the forward with CVENE_ERR_CALLBACK. */
typedef int (*cvene_stage_site_fn)(void *user, cvene_component comp, int layer, cvene_tensor_view *v, int row0,
                                   float *carry);
typedef struct {
    cvene_stage_site_fn fn; /* NULL: no sites */
    void *user;
    uint64_t sites[CVENE_N_COMPONENTS]; /* as cvene_run_opts.sites: bit l = layer l */
    int carry;                          /* floats per row that travel with the rows */
    int logits_to_keep;                 /* logits of each row's last position only (1) or of all (0) */
} cvene_stage_opts;

/* The forward of input_ids (B, T) (rows of T real tokens: no padding yet) with the model's layers
 * split among the ranks of comm, micro_batch rows at a time (1..B). Every rank calls it with the
 * same B, T, micro_batch and options (checked); input_ids are read on rank 0 and the logits
 * (B, T or logits_to_keep, V) written there (other ranks may pass NULL for both). opts may be NULL.
 * GPT-2 and GPT-NeoX. Each rank loads the whole model today (a CPU maps its weights, touching only
 * its stage's). */
cvene_status cvene_forward_stages(cvene_comm *comm, cvene_model *m, const int32_t *input_ids, int B, int T,
                                  int micro_batch, const cvene_stage_opts *opts, float *logits);
void cvene_comm_free(cvene_comm *c);

/* ---- sweeps: activation patching and causal tracing ------------------------
 * Patch one component from a source run into a base run at every (layer,
 * position) — or a chosen subset — and score each patched run by a metric at
 * the last position. The fast path reuses everything a patch cannot change:
 * layers below it, and positions before it (their keys/values are cached), and
 * packs many sites into one batched forward. `naive` runs one full forward per
 * site instead (the reference the fast path is tested against). */
#define CVENE_ALL_HEADS (-1) /* cvene_sweep_params.head: every head (scores gain a head dimension) */
typedef enum { CVENE_METRIC_LOGIT_DIFF = 0, CVENE_METRIC_PROB = 1, CVENE_METRIC_KL = 2 } cvene_metric;
typedef void (*cvene_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct {
    cvene_component component; /* block_output (default), block_input, attention_output, mlp_output,
                                  mlp_activation, attention_value_output, head_attention_value_output */
    int head;                  /* head_attention_value_output: which head, or CVENE_ALL_HEADS: every head,
                                  scores then (n_layers, n_head, n_positions) */
    cvene_metric metric;       /* LOGIT_DIFF: logit[token] - logit[token_b]; PROB: p(token);
                                  KL: KL(source || patched) over the vocabulary */
    int32_t token, token_b;
    const int *layers;         /* layers to sweep (NULL = all) */
    int n_layers;
    const int *positions;      /* positions to sweep (NULL = all) */
    int n_positions;
    int window;                /* patch layers [l - window/2, l + ceil(window/2)) together (ROME); default 1 */
    /* Causal tracing (ROME): the base is the source prompt with Gaussian noise
     * added to the embeddings of the subject positions; base_ids are ignored. */
    int trace;
    const int *subject;
    int n_subject;
    float noise_scale;         /* 0 = 3 x the standard deviation of the token embeddings */
    int n_samples;             /* noise samples averaged (default 10) */
    uint32_t seed;             /* sample s draws numpy RandomState(seed + s).randn(n_subject, C) */
    const int32_t *position_ids; /* (T) position ids of the prompt's tokens, shared by the base and source runs
                                  (transformers' position_ids); NULL = 0..T-1 */
    int naive;                 /* 1: one full forward per site (reference) */
    int max_batch;             /* sites per batched forward (0 = automatic: 8 on the CPU, 32 on CUDA; with
                                  together, the rows are the heads and this is ignored) */
    cvene_progress_fn progress;
    void *progress_user;
    int atp;                   /* 1: estimate the scores by attribution patching (cvene_sweep_atp below) */
    int together;              /* 1: patch all the positions at once (a head's output over the whole prompt:
                                  layer x head patching); scores (n_layers, [n_head,] 1) */
    cvene_comm *comm;          /* ranks sharing the work (NULL: this process alone): cvene_sweep splits the layers by
                                  their cost (the blocks a patch resumes), cvene_sweep_dataset the examples; every
                                  rank gets all the scores, equal bit for bit to one process's. progress then
                                  counts this rank's sites. Every rank must call with the same arguments. */
} cvene_sweep_params;

typedef struct {
    double base_score;         /* metric of the unpatched base (trace: mean over noise samples) */
    double source_score;       /* metric of the source run */
    int64_t forwards;          /* forward passes run */
    int64_t sites;             /* patched runs scored */
} cvene_sweep_summary;

cvene_sweep_params cvene_sweep_default_params(void);
/* base_ids and source_ids are (T) token ids of one prompt each (the same
 * length: positions are patched one to one). scores is (n_layers, n_positions),
 * caller-owned, in the order of params->layers / positions. */
cvene_status cvene_sweep(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                         const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary);

/* Attribution patching (AtP; Nanda 2023, Kramar et al. 2024): cvene_sweep's scores estimated to
 * first order from one source forward, one base forward and one backward of the metric:
 *   score(l, t) ~= metric(base) + (a_src(l, t) - a_base(l, t)) . dmetric/da(l, t) at the base run,
 * a the component's vector at (layer l, position t) (a head's slice of attention_value_output for
 * head_attention_value_output; every head with CVENE_ALL_HEADS). Same params, units and layout as
 * cvene_sweep, so the two can be compared site by site (with together: the positions' estimated changes
 * summed, the estimate being linear); trace, window != 1 and naive are refused.
 * GPT-2 and GPT-NeoX (models with a backward pass) in f32; summary->forwards counts the passes (3: the
 * source, the base up to layer 0's input, the base's training pass; plus one backward). */
cvene_status cvene_sweep_atp(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                             const cvene_sweep_params *p, float *scores, cvene_sweep_summary *summary);

/* A sweep over a dataset of pairs (`cvene sweep --data`). Each example is a base/source pair of
 * its own length with its own metric tokens; a column is a role ("subject last", "last") that
 * each example maps to its own position. Every example is swept at p's layers and its columns'
 * positions on the fast path (or estimated, p->atp); per_example is (n_ex, n_layers, n_positions)
 * -- (n_ex, n_layers, n_head, n_positions) with CVENE_ALL_HEADS -- and mean the same without n_ex,
 * averaged in double; both caller-owned, either may be NULL. p->positions, p->n_positions,
 * p->token, p->token_b and p->position_ids are per example here and ignored; trace and together
 * are refused. A
 * bad example fails naming its index. summary: sums over the examples (base_score and
 * source_score: their means). progress: sites done over the whole dataset, total given. */
typedef struct {
    const int32_t *base_ids, *source_ids; /* (T) each: patched position to position */
    int T;
    const int *positions;                 /* (n_positions): this example's position for each column */
    int32_t token, token_b;               /* this example's metric tokens */
} cvene_sweep_example;
cvene_status cvene_sweep_dataset(cvene_model *m, const cvene_sweep_example *ex, int n_ex, int n_positions,
                                 const cvene_sweep_params *p, float *per_example, float *mean,
                                 cvene_sweep_summary *summary);

/* Which rank sweeps each of p's layers on n_ranks ranks (owner: n_layers of p, in p->layers' order)
 * for a prompt of T tokens, balanced by cost -- a patch at (l, t) resumes the blocks above the patched
 * one over the positions from t on, then unembeds one row -- costliest first to the least-loaded
 * rank, the same on every rank. done (may be NULL): layers already swept (owner -1), so a resumed
 * sweep splits what is left, whatever the ranks that began it. */
cvene_status cvene_sweep_split(const cvene_model *m, const cvene_sweep_params *p, int T, const int *done, int n_ranks,
                               int *owner);

/* The same one layer at a time (progress, interruption, resume): begin runs
 * the source and base forwards once and keeps their caches (one base cache per
 * noise sample); each cvene_sweep_layer scores one layer's positions into
 * scores (n_positions; (n_head, n_positions) with CVENE_ALL_HEADS; (n_head) or (1) with together). params->layers is ignored here. The session copies the
 * params and ids; free it with cvene_sweep_end. progress gets the sites done so
 * far (total 0). */
typedef struct cvene_sweep_session cvene_sweep_session;
cvene_status cvene_sweep_begin(cvene_model *m, const int32_t *base_ids, const int32_t *source_ids, int T,
                               const cvene_sweep_params *p, cvene_sweep_session **out);
cvene_status cvene_sweep_layer(cvene_sweep_session *s, int layer, float *scores);
cvene_sweep_summary cvene_sweep_get_summary(const cvene_sweep_session *s);
void cvene_sweep_end(cvene_sweep_session *s);

/* ---- benchmarks -----------------------------------------------------------
 * The fused intervention kernels at a caller's shapes (`cvene bench kernels`): on a (B, T, C)
 * site and a source of the same shape, each case is timed as the median of `repeat` samples
 * (a sample: 10 back-to-back launches on rotating buffers, one synchronisation, divided by 10)
 * beside a device-to-device copy moving the same bytes, timed the same way. Cases, in order: the
 * copy of one site; Vanilla on one position per example; on every position; on every position
 * with dims [0, C/2); the rotated form W (k, C) and the low-rank form W (C, k) on every position
 * (iv_rotated). CUDA contexts only (CVENE_ERR_UNSUPPORTED on the CPU). */
#define CVENE_BENCH_KERNELS_MAX 8
typedef struct {
    char name[64];
    int64_t n, D, k;       /* vectors (units), floats per vector, rank (rotated cases) */
    double bytes;          /* the least the op must move: bytes read + written */
    double seconds;        /* median per launch */
    double seconds_min, seconds_max;
    double copy_seconds;   /* a device-to-device copy of the same bytes (read + written) */
} cvene_kernel_timing;
/* out holds CVENE_BENCH_KERNELS_MAX entries; *n_out the cases measured. */
cvene_status cvene_bench_kernels(cvene_ctx *ctx, int B, int T, int C, int k, int repeat, cvene_kernel_timing *out,
                                 int *n_out);

/* ---- memory planning ------------------------------------------------------
 * How much memory a model needs for one (B, T) forward, per device, worked out
 * from DIR/config.json alone (no weights are read, so a 6.9B model can be
 * planned anywhere). With n_devices > 1 the layers are split into contiguous
 * runs (pipeline): device 0 also holds the input embeddings, the last device the
 * final norm, the output head and the logits. */
#define CVENE_PLAN_MAX_DEVICES 64

typedef struct {
    int batch, seq;           /* B, T (> 0) */
    int n_devices;            /* 1..CVENE_PLAN_MAX_DEVICES, at most n_layer; 1 for the CPU */
    cvene_device device;      /* CUDA: the inputs and the logits live in device memory too */
    cvene_dtype weight_dtype; /* what the device holds weights in: F32 by default (the CPU
                               * maps F32 checkpoints in place and converts F16/BF16 to f32;
                               * the CUDA backend uploads f32); F16/BF16 approximates a
                               * context with that compute_dtype (which keeps embeddings,
                               * norms and biases in f32 and adds a 16-bit copy of a tied
                               * output head; this counts every parameter at 2 bytes) */
    cvene_dtype activation_dtype; /* the context's activation_dtype: F32 (default), or F16 / BF16
                               * (= weight_dtype): 16-bit activations plus the f32 copy a site
                               * sees (cvene plan --dtype bf16 plans `run --dtype bf16`) */
    int64_t capacity_bytes;   /* memory per device; 0 = unknown (fits = -1) */
} cvene_plan_params;

typedef struct {
    int first_layer, n_layers; /* the layers this device runs */
    int64_t n_params;          /* parameters it holds */
    int64_t weight_bytes;      /* n_params in weight_dtype */
    int64_t activation_bytes;  /* the forward's activation arena for (B, T), plus the (B, T, V)
                                * f32 logits on the last device */
    int64_t cache_bytes;       /* K and V of its layers for B x T tokens in f32 (what generation
                                * or a sweep keeps): 2 * n_layers * B * T * C * 4 */
    int64_t total_bytes;       /* the three above */
} cvene_plan_device;

typedef struct {
    cvene_arch arch;
    int n_layer, n_head, n_embd, n_inner, vocab_size;
    int64_t n_params;          /* the whole model (what cvene_model_info.n_params reports) */
    int n_devices;
    cvene_plan_device devices[CVENE_PLAN_MAX_DEVICES];
    int64_t capacity_bytes;    /* as given */
    int fits;                  /* 1: every device's total <= capacity; 0: not; -1: unknown */
} cvene_memory_plan;

/* B = T = 1, one CPU device, F32 weights, capacity 0 (unknown). */
cvene_plan_params cvene_plan_default_params(void);
/* gpt2 and gpt_neox configs; the fields it reads are checked as cvene_model_load checks
 * them (a bad rotary_pct or head count is the same error). Per-device numbers follow the
 * model's own arena (test_neox_parity checks them against a real forward's). */
cvene_status cvene_plan_memory(cvene_ctx *ctx, const char *dir, const cvene_plan_params *p,
                               cvene_memory_plan *out);

/* ---- tokenizer -----------------------------------------------------------
 * Byte-level BPE as GPT-2 uses it (Hugging Face's GPT2TokenizerFast): the text is
 * split on added/special tokens, pre-tokenized with GPT-2's regex (Unicode 14.0
 * letter/number/white-space classes, implemented without a regex library), mapped
 * byte by byte to GPT-2's byte-to-unicode alphabet and merged by rank.
 * Ownership: cvene_tokenizer_load -> caller frees with cvene_tokenizer_free; the
 * tokenizer keeps a pointer to its context (errors of encode/decode are reported
 * there), which must outlive it. Encode/decode do not modify the tokenizer; the
 * context rule applies (one thread at a time per context). Arrays and strings
 * returned by encode/decode are malloc'd and owned by the caller (cvene_free). */
typedef struct cvene_tokenizer cvene_tokenizer;

/* path is a directory holding tokenizer.json (preferred when present) or vocab.json +
 * merges.txt, or the path of a tokenizer.json file. Nothing is read from the network.
 * tokenizer.json must describe a BPE model (no dropout, no subword prefix/suffix; its
 * ignore_merges is honoured) with a ByteLevel pre-tokenizer (add_prefix_space and
 * use_regex are honoured), no normalizer and a ByteLevel or null decoder; anything else
 * is CVENE_ERR_UNSUPPORTED. Its post_processor is ignored (see encode). Its
 * added_tokens are split out of the text before pre-tokenization, first those with
 * "normalized": false, then the others, leftmost-longest, as `tokenizers` does;
 * lstrip/rstrip/single_word are not supported. With vocab.json + merges.txt,
 * "<|endoftext|>" is the one special token, when the vocabulary has it. Every byte must
 * have its byte-level token in the vocabulary. Malformed files are CVENE_ERR_FORMAT
 * with a message naming the file and the line (merges.txt, JSON syntax) or entry. */
cvene_status cvene_tokenizer_load(cvene_ctx *ctx, const char *path, cvene_tokenizer **out);
/* The same from explicitly named vocab.json / merges.txt files (GPT-2's encoder.json and
 * vocab.bpe are the same formats). */
cvene_status cvene_tokenizer_load_bpe(cvene_ctx *ctx, const char *vocab_json,
                                      const char *merges_txt, cvene_tokenizer **out);
void cvene_tokenizer_free(cvene_tokenizer *tok);

/* Encode len bytes of text (need not be NUL-terminated; text may be NULL when len is 0)
 * into *ids (malloc'd, never NULL on success; free with cvene_free) and *n_ids.
 * No special tokens are added (add_special_tokens=False; GPT-2 adds none anyway), but
 * added-token text in the input becomes its id. Any bytes are accepted: invalid UTF-8
 * bytes are pre-tokenized as one non-letter, non-number character each, so
 * decode(encode(x)) == x for every byte string x. */
cvene_status cvene_tokenizer_encode(const cvene_tokenizer *tok, const char *text, size_t len,
                                    int32_t **ids, size_t *n_ids);
/* Decode n_ids ids into the bytes they stand for: *text (malloc'd, NUL-terminated, free
 * with cvene_free) holding *len bytes (not counting the NUL). Special tokens are kept
 * (skip_special_tokens=False). Unlike `tokenizers`, which replaces invalid UTF-8 with
 * U+FFFD, the exact bytes are returned. An id outside [0, vocab_size) or not assigned
 * to a token is CVENE_ERR_INVALID_ARG. */
cvene_status cvene_tokenizer_decode(const cvene_tokenizer *tok, const int32_t *ids,
                                    size_t n_ids, char **text, size_t *len);
/* Largest id + 1, added tokens included (50257 for GPT-2). */
int cvene_tokenizer_vocab_size(const cvene_tokenizer *tok);
/* Id of an added/special token ("<|endoftext|>") or of a vocabulary entry written in its
 * byte-level form ("\xc4\xa0the" = "Ġthe"); -1 when there is none. */
int32_t cvene_tokenizer_token_id(const cvene_tokenizer *tok, const char *token);

/* ---- training (docs/training.md) ------------------------------------------------
 * Trainable interventions (RotatedSpace, LowRankRotatedSpace, BoundlessRotatedSpace,
 * SigmoidMaskRotatedSpace, SigmoidMask, Autoencoder, JumpReLUAutoencoder, and pyreft's LoReFT,
 * NoReFT, ConsReFT, LobiReFT, DiReFT, NodiReFT; PCARotatedSpace takes part with its basis frozen)
 * learn from examples with the model frozen:
 * each step runs the base from the lowest intervention's layer (everything below it, and every
 * source's activations at its site, is computed once per dataset and cached), applies the
 * interventions, takes the loss at each example's label position and runs the backward down to
 * that layer. Ownership: datasets and trainers are freed by their _free; a trainer keeps
 * pointers to its model and config, which must outlive it. */

/* One example: the base prompt, the source prompt (NULL for interventions without a source:
 * pyreft's), the positions the interventions act on (the same n_pos positions for every
 * intervention of the config; unit "pos"), and the label the intervened model should predict
 * at label_pos (-1: the last base token). Copied by cvene_dataset_add. */
typedef struct {
    const int32_t *base_ids;
    int base_len;
    const int32_t *source_ids;
    int source_len;
    const int *base_pos, *source_pos;
    int n_pos;
    int32_t label;
    int label_pos;
} cvene_example;

typedef struct cvene_dataset cvene_dataset;
cvene_status cvene_dataset_new(cvene_ctx *ctx, cvene_dataset **out);
cvene_status cvene_dataset_add(cvene_dataset *d, const cvene_example *e);
/* One JSON object per line: {"base": [ids] or "text", "source": [ids] or "text" (optional),
 * "base_pos": 3 | [3, 5] | "last", "source_pos": as base_pos, "label": id or "one-token text",
 * "label_pos": a position (optional; default the last base token)}. Negative positions count
 * from the end. Text needs tok (else NULL). Errors name the file and line. */
cvene_status cvene_dataset_load_jsonl(cvene_ctx *ctx, const char *path, const cvene_tokenizer *tok,
                                      cvene_dataset **out);
/* A copy of d whose examples act on one position, pos, in base and source alike (negative: from the end
 * of each prompt), as a DAS grid's cell does; an example too short for it fails naming it. */
cvene_status cvene_dataset_at_position(const cvene_dataset *d, int pos, cvene_dataset **out);
int cvene_dataset_count(const cvene_dataset *d);
/* A seeded shuffle of d's examples cut into *first (1 - fraction) and *second (fraction, rounded),
 * e.g. training and held-out evaluation sets; both new, freed by the caller. */
cvene_status cvene_dataset_split(const cvene_dataset *d, double fraction, uint64_t seed, cvene_dataset **first,
                                 cvene_dataset **second);
void cvene_dataset_free(cvene_dataset *d);

typedef enum { CVENE_OPTIM_ADAM = 0, CVENE_OPTIM_ADAMW = 1 } cvene_optimizer;

typedef struct {
    int epochs;               /* passes over the training set (default 1) */
    int batch_size;           /* examples per batch (default 16) */
    int grad_accum;           /* batches per optimizer step (default 1) */
    int64_t max_steps;        /* optimizer steps; 0 = epochs x ceil(examples / (batch x grad_accum)) */
    cvene_optimizer optimizer;
    double lr;                /* 1e-3 (pyvene's tutorials) */
    double beta1, beta2, eps; /* torch's defaults 0.9, 0.999, 1e-8 */
    double weight_decay;      /* 0 (AdamW: decoupled) */
    double warmup_ratio;      /* linear warm-up over this fraction of the steps, then linear decay to 0
                               * (transformers' get_linear_schedule_with_warmup); default 0.1 */
    int shuffle;              /* 1 (default): a new order every epoch from seed; 0: the dataset's order */
    uint64_t seed;            /* initial parameters and shuffling (default 0) */
    /* Boundless / SigmoidMask: the temperature follows torch.linspace(temperature_start,
     * temperature_end, steps), set after each step as pyvene's tutorials set it (so step s uses
     * entry max(s - 1, 0)); 0 / 0 (default) = leave it alone. The tutorials use 50 -> 0.1. */
    double temperature_start, temperature_end;
    double boundary_loss;     /* Boundless: this times the sum of the boundaries added to the loss
                               * (the Boundless DAS tutorial's 1.0; default 0) */
    double boundary_lr;       /* Boundless: the boundaries' learning rate (the tutorial's second Adam group,
                               * 1e-2, the default); 0 = lr */
    /* called after every optimizer step (and once at the end); non-zero stops training */
    int (*progress)(void *user, int64_t step, int64_t total, double loss, double lr);
    void *progress_user;
    /* Data parallel: ranks training one set of interventions together (NULL: this process alone;
     * docs/ranks.md). Every rank calls cvene_trainer_new, _fit and _evaluate alike, with the same
     * data; each computes its share of every step's shards (below), the shards' gradients are added
     * in shard order on every rank, so all take the same step; evaluation splits its batches. */
    cvene_comm *comm;
    /* A batch's gradient as the sum, in order, of this many contiguous parts of it, each its own
     * forward and backward: the units of work ranks split. The same shards give the same bits on any
     * number of ranks (and in one process); shards 1 in one process is the whole batch at once (the
     * default there); 0 on ranks means one per rank (then the result depends on the rank count
     * within float rounding, which Adam's first steps can amplify on near-zero gradients). */
    int shards;
} cvene_train_params;

cvene_train_params cvene_train_default_params(void);

typedef struct cvene_trainer cvene_trainer;
/* A trainer for the trainable interventions of c on m (every representation of c must be a
 * trainable type on a transformer component with unit "pos"); initialises their parameters
 * (seed) unless set later with cvene_trainer_load. low_rank_dimension is the rank (LowRank,
 * pyreft's) or the latent width (Autoencoder, JumpReLU: pyvene's latent_dim is not read);
 * interchange_dim the swapped dims (RotatedSpace, PCARotatedSpace, JumpReLU's latent prefix) or
 * the Autoencoder's latent index. PCARotatedSpace starts as the identity basis (mean 0, std 1)
 * until a load sets pyvene's pca_components / pca_mean / pca_std; nothing of it trains. */
cvene_status cvene_trainer_new(cvene_model *m, const cvene_config *c, const cvene_train_params *p,
                               cvene_trainer **out);
/* Train on d (caches built on the first call). */
cvene_status cvene_trainer_fit(cvene_trainer *t, const cvene_dataset *d);
/* The intervened model on d: the fraction of examples whose top logit at the label position is
 * the label (interchange intervention accuracy, IIA) and the mean loss. */
cvene_status cvene_trainer_evaluate(cvene_trainer *t, const cvene_dataset *d, double *accuracy, double *loss);
/* The loss of each optimizer step so far (*n entries); owned by the trainer. */
const double *cvene_trainer_losses(const cvene_trainer *t, int64_t *n);
/* The fraction of the cached dataset's token rows a step runs in the layers above the lowest
 * intervention: below 1 with live rows (GPT-2 / GPT-NeoX, every intervention on the residual
 * entering one layer: an example's positions before its first intervened one are the clean run's
 * and are not recomputed; docs/training.md), 1 otherwise; 0 before the first fit or evaluate. */
double cvene_trainer_rows_fraction(const cvene_trainer *t);
/* Write dir/config.json (pyvene's IntervenableConfig) and dir/intkey_<key>.safetensors per
 * intervention, atomically: the state dict pyvene's IntervenableModel.save writes (pyreft's for
 * LoReFT) as safetensors; tools/convert_pyvene_weights.py --to-pyvene makes the .bin files
 * pyvene loads. */
cvene_status cvene_trainer_save(cvene_trainer *t, const char *dir);
/* Set intervention k's tensors from a safetensors file holding its state dict (pyvene's names, or
 * pyreft's weight / bias / rotate_layer for LoReFT; tools/convert_pyvene_weights.py makes one
 * from pyvene's .bin). Tensors the file lacks keep their values (a PCARotatedSpace takes its
 * components' count from the file, a NoReFT / NodiReFT its proj_layer bias or none); an unknown
 * tensor, a wrong shape or an embed_dim other than the intervention's is an error, and then
 * nothing changes. */
cvene_status cvene_trainer_load(cvene_trainer *t, int k, const char *path);
/* PCARotatedSpace k's basis (pca_components, pca_mean, pca_std) fitted to d's base activations at
 * its site and base positions (an example's max_number_of_units positions concatenated, as pyvene
 * flattens them), as its users fit sklearn's PCA on standardised activations (engine/trainable.h
 * tr_pca_fit: population std, floored at 1e-6; components by decreasing variance, sklearn >= 1.5's
 * signs). n_components <= 0: min(examples, width). */
cvene_status cvene_trainer_fit_pca(cvene_trainer *t, int k, const cvene_dataset *d, int n_components);
void cvene_trainer_free(cvene_trainer *t);

/* ---- probes (docs/probes.md) ----------------------------------------------------
 * A probe asks whether a stream linearly encodes a property: collect the stream's activation at
 * one position per example at any sites (layers x components), then fit a softmax-regression
 * classifier per site and measure its accuracy on held-out examples. */

typedef struct {
    cvene_component component; /* a (B, T, D) stream, or a GRU stream (per timestep) */
    int layer;
} cvene_site;

/* Activations of n_sites sites at one position per example, on the host in f32. */
typedef struct cvene_activations cvene_activations;
/* Runs the N examples (ids[e] of lens[e] tokens, right-padded into batches of batch_size; 0 =
 * 32) and keeps, for every site, row pos[e] of the stream (negative: from the end). Positions,
 * ids and sites are checked first, naming the example or site. */
cvene_status cvene_collect(cvene_model *m, const int32_t *const *ids, const int *lens, const int *pos, int N,
                           const cvene_site *sites, int n_sites, int batch_size, cvene_activations **out);
/* The same at R positions per example, pos (N, R) row-major (a probe grid: layers x positions from one
 * forward per batch): each site's data is (N R, D), row e R + k for example e's k-th position. */
cvene_status cvene_collect_positions(cvene_model *m, const int32_t *const *ids, const int *lens, const int *pos, int R,
                                     int N, const cvene_site *sites, int n_sites, int batch_size,
                                     cvene_activations **out);
/* The same on ranks (comm NULL or of one rank: cvene_collect_positions): whole batches split among
 * the ranks by their padded tokens, each rank runs its own, and every rank ends with all N R rows,
 * equal bit for bit to one process's (each batch is the one a single process runs). Every rank
 * must call with the same arguments. */
cvene_status cvene_collect_ranks(cvene_comm *comm, cvene_model *m, const int32_t *const *ids, const int *lens,
                                 const int *pos, int R, int N, const cvene_site *sites, int n_sites, int batch_size,
                                 cvene_activations **out);
int cvene_activations_count(const cvene_activations *a);              /* N (N R from cvene_collect_positions) */
int cvene_activations_width(const cvene_activations *a, int site);    /* D of a site's stream */
const float *cvene_activations_data(const cvene_activations *a, int site); /* (N, D), owned by a */
void cvene_activations_free(cvene_activations *a);

typedef struct {
    int steps;           /* full-batch Adam steps (default 300) */
    double lr;           /* 1e-2 */
    double beta1, beta2, eps; /* torch's 0.9, 0.999, 1e-8 */
    double weight_decay; /* L2 on the weights, not the bias, added to the gradient as torch's Adam
                          * does (default 0) */
    int standardize;     /* 1 (default): z-score each feature with the training examples' mean and
                          * standard deviation (ddof 0). A feature whose deviation is below 1e-5 of
                          * the features' root-mean-square is constant up to f32 noise and is
                          * divided by 1 (as a zero deviation is), not amplified */
} cvene_probe_params;

cvene_probe_params cvene_probe_default_params(void);

/* A fitted probe: logits = W z + b, z the (standardised) activation, W (C, D), b (C). */
typedef struct cvene_probe cvene_probe;
/* Fit on X (N, D) with labels y in [0, C): mean cross-entropy, W and b from zero, Adam. */
cvene_status cvene_probe_fit(cvene_ctx *ctx, const float *X, const int32_t *y, int N, int D, int C,
                             const cvene_probe_params *p, cvene_probe **out);
/* Accuracy (argmax of the logits equals the label) and mean cross-entropy on X (N, D). */
cvene_status cvene_probe_evaluate(const cvene_probe *pr, const float *X, const int32_t *y, int N, double *accuracy,
                                  double *loss);
/* W (C, D), b (C), the standardisation's mean and std (D each; NULL when off); owned by pr. */
void cvene_probe_weights(const cvene_probe *pr, const float **W, const float **b, const float **mean,
                         const float **std);
/* W, b, mean, std as safetensors at path (atomically), with string metadata pairs. */
cvene_status cvene_probe_save(const cvene_probe *pr, const char *path, const char *const *meta_kv, int n_meta);
void cvene_probe_free(cvene_probe *pr);

#ifdef __cplusplus
}
#endif
#endif /* CVENE_H */
