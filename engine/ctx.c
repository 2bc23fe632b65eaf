/* Contexts: the public constructor and destructor (the struct, status strings and the error
 * channel are kernels/ctx.h, which every layer uses). */
#include <stdarg.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ctx.h"
#include "kernels/tensor.h"

cvene_ctx_params cvene_ctx_default_params(void) {
    cvene_ctx_params p;
    memset(&p, 0, sizeof p);
    p.device = CVENE_DEVICE_CPU;
    return p;
}

int cvene_cuda_available(void) {
#ifdef CVENE_WITH_CUDA
    return cvene_backend_cuda_device_count() > 0;
#else
    return 0;
#endif
}

int cvene_cuda_device_count(void) {
#ifdef CVENE_WITH_CUDA
    const int n = cvene_backend_cuda_device_count();
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

static void put_err(char *errbuf, size_t len, const char *msg) {
    if (errbuf && len) snprintf(errbuf, len, "%s", msg);
}

cvene_status cvene_ctx_new(const cvene_ctx_params *params, cvene_ctx **out, char *errbuf,
                           size_t errbuf_len) {
    *out = NULL;
    cvene_ctx_params p = params ? *params : cvene_ctx_default_params();
    if (p.n_threads < 0) {
        put_err(errbuf, errbuf_len, "n_threads must be >= 0 (0 = OpenMP default)");
        return CVENE_ERR_INVALID_ARG;
    }
    if (p.activation_dtype != CVENE_F32) {
        char m[192];
        const char *a = cvene_dtype_name(p.activation_dtype);
        if (p.activation_dtype != CVENE_BF16 && p.activation_dtype != CVENE_F16)
            snprintf(m, sizeof m, "activation_dtype = %s (%d): expected f32, f16 or bf16", a, (int)p.activation_dtype);
        else if (p.compute_dtype != p.activation_dtype)
            snprintf(m, sizeof m,
                     "activation_dtype = %s needs compute_dtype = %s (16-bit activations multiply weights of their "
                     "own dtype); got compute_dtype = %s", a, a, cvene_dtype_name(p.compute_dtype));
        else
            m[0] = 0;
        if (m[0]) {
            put_err(errbuf, errbuf_len, m);
            return CVENE_ERR_INVALID_ARG;
        }
    }
    cvene_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        put_err(errbuf, errbuf_len, "out of memory allocating context");
        return CVENE_ERR_OOM;
    }
    ctx->params = p;
    if (p.device == CVENE_DEVICE_CPU) {
        ctx->be = cvene_backend_cpu_new(p.n_threads, ctx->err, sizeof ctx->err);
    } else if (p.device == CVENE_DEVICE_CUDA) {
#ifdef CVENE_WITH_CUDA
        ctx->be = cvene_backend_cuda_new(p.cuda_device, ctx->err, sizeof ctx->err);
#else
        snprintf(ctx->err, sizeof ctx->err,
                 "device cuda requested but this build has no CUDA backend (nvcc was not "
                 "found at configure time)");
#endif
    } else {
        snprintf(ctx->err, sizeof ctx->err, "unknown device %d", (int)p.device);
    }
    if (!ctx->be) {
        put_err(errbuf, errbuf_len, ctx->err);
        free(ctx);
        return p.device == CVENE_DEVICE_CPU ? CVENE_ERR_OOM : CVENE_ERR_UNSUPPORTED;
    }
    ctx->be->err = ctx->err;
    ctx->be->err_len = sizeof ctx->err;
    *out = ctx;
    return CVENE_OK;
}

void cvene_ctx_free(cvene_ctx *ctx) {
    if (!ctx) return;
    if (ctx->be) {
        if (ctx->be->device == CVENE_DEVICE_CPU) cvene_backend_cpu_free(ctx->be);
#ifdef CVENE_WITH_CUDA
        else cvene_backend_cuda_free(ctx->be);
#endif
    }
    free(ctx);
}

const char *cvene_ctx_error(const cvene_ctx *ctx) { return ctx ? ctx->err : ""; }

const char *cvene_ctx_device_name(const cvene_ctx *ctx) { return ctx && ctx->be ? ctx->be->name : ""; }

int cvene_ctx_threads(const cvene_ctx *ctx) {
    if (!ctx || !ctx->be || ctx->be->device != CVENE_DEVICE_CPU) return 0;
    return ctx->be->n_threads > 0 ? ctx->be->n_threads : omp_get_max_threads();
}

static const char *const component_names[CVENE_N_COMPONENTS] = {
    [CVENE_BLOCK_INPUT] = "block_input",
    [CVENE_ATTENTION_INPUT] = "attention_input",
    [CVENE_QUERY_OUTPUT] = "query_output",
    [CVENE_KEY_OUTPUT] = "key_output",
    [CVENE_VALUE_OUTPUT] = "value_output",
    [CVENE_HEAD_QUERY_OUTPUT] = "head_query_output",
    [CVENE_HEAD_KEY_OUTPUT] = "head_key_output",
    [CVENE_HEAD_VALUE_OUTPUT] = "head_value_output",
    [CVENE_ATTENTION_WEIGHT] = "attention_weight",
    [CVENE_ATTENTION_VALUE_OUTPUT] = "attention_value_output",
    [CVENE_HEAD_ATTENTION_VALUE_OUTPUT] = "head_attention_value_output",
    [CVENE_ATTENTION_OUTPUT] = "attention_output",
    [CVENE_MLP_INPUT] = "mlp_input",
    [CVENE_MLP_ACTIVATION] = "mlp_activation",
    [CVENE_MLP_OUTPUT] = "mlp_output",
    [CVENE_BLOCK_OUTPUT] = "block_output",
    [CVENE_CELL_INPUT] = "cell_input",
    [CVENE_X2H_OUTPUT] = "x2h_output",
    [CVENE_RESET_X2H_OUTPUT] = "reset_x2h_output",
    [CVENE_UPDATE_X2H_OUTPUT] = "update_x2h_output",
    [CVENE_NEW_X2H_OUTPUT] = "new_x2h_output",
    [CVENE_H2H_OUTPUT] = "h2h_output",
    [CVENE_RESET_H2H_OUTPUT] = "reset_h2h_output",
    [CVENE_UPDATE_H2H_OUTPUT] = "update_h2h_output",
    [CVENE_NEW_H2H_OUTPUT] = "new_h2h_output",
    [CVENE_RESET_GATE_INPUT] = "reset_gate_input",
    [CVENE_RESET_GATE_OUTPUT] = "reset_gate_output",
    [CVENE_UPDATE_GATE_INPUT] = "update_gate_input",
    [CVENE_UPDATE_GATE_OUTPUT] = "update_gate_output",
    [CVENE_NEW_GATE_INPUT] = "new_gate_input",
    [CVENE_NEW_GATE_OUTPUT] = "new_gate_output",
    [CVENE_CELL_OUTPUT] = "cell_output",
};

int cvene_component_is_gru(cvene_component c) { return c >= CVENE_CELL_INPUT && c < CVENE_N_COMPONENTS; }

const char *cvene_component_name(cvene_component c) {
    return (c >= 0 && c < CVENE_N_COMPONENTS) ? component_names[c] : "?";
}

cvene_component cvene_component_from_name(const char *name) {
    for (int c = 0; c < CVENE_N_COMPONENTS; c++)
        if (name && strcmp(name, component_names[c]) == 0) return (cvene_component)c;
    return CVENE_N_COMPONENTS;
}

/* ---- device memory ---------------------------------------------------------- */

cvene_status cvene_device_alloc(cvene_ctx *ctx, size_t nbytes, void **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_device_alloc: out is NULL");
    *out = NULL;
    if (!ctx) return CVENE_ERR_INVALID_ARG;
    const cvene_status st = ctx->be->ops->alloc(ctx->be, out, nbytes ? nbytes : 1);
    if (st != CVENE_OK)
        return cvene_fail(ctx, st, "cannot allocate %zu bytes on the %s device", nbytes, ctx->be->ops->name);
    return CVENE_OK;
}

void cvene_device_free(cvene_ctx *ctx, void *p) {
    if (ctx && p) ctx->be->ops->free(ctx->be, p);
}

cvene_status cvene_device_to_host(cvene_ctx *ctx, void *host_dst, const void *src, size_t nbytes) {
    if (!ctx || (nbytes && (!host_dst || !src))) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_device_to_host: NULL");
    CVENE_TRY(ctx->be->ops->to_host(ctx->be, host_dst, src, nbytes));
    return ctx->be->ops->sync(ctx->be);
}
