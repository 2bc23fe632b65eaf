/* DLPack export of tensor views (include/cvene_dlpack.h). */
#include <stdlib.h>
#include <string.h>

#include "cvene_dlpack.h"
#include "kernels/backend.h"
#include "kernels/ctx.h"

typedef struct {
    DLManagedTensor t; /* first: the consumer's pointer is this struct's */
    int64_t shape[4];
    void *owner;
    void (*release)(void *);
} dl_holder;

static void dl_delete(DLManagedTensor *t) {
    dl_holder *h = (dl_holder *)t;
    if (h->release) h->release(h->owner);
    free(h);
}

cvene_status cvene_dlpack_from_view(cvene_ctx *ctx, const cvene_tensor_view *v, void *owner,
                                    void (*release)(void *owner), DLManagedTensor **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_dlpack_from_view: out is NULL");
    *out = NULL;
    if (!ctx || !v || !v->data) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_dlpack_from_view: NULL view");
    if (v->ndim < 0 || v->ndim > 4)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_dlpack_from_view: ndim = %d is outside [0, 4]", v->ndim);
    if (v->device != ctx->be->device)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_dlpack_from_view: the view is on another device than "
                          "the context's (%s)", ctx->be->ops->name);
    DLDataType dt = {kDLFloat, 32, 1};
    switch (v->dtype) {
    case CVENE_F32: break;
    case CVENE_F16: dt.bits = 16; break;
    case CVENE_BF16: dt.code = kDLBfloat, dt.bits = 16; break;
    case CVENE_I32: dt.code = kDLInt; break;
    default: return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_dlpack_from_view: dtype %d", (int)v->dtype);
    }
    dl_holder *h = calloc(1, sizeof *h);
    if (!h) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    memcpy(h->shape, v->shape, sizeof h->shape);
    int ordinal = 0;
#ifdef CVENE_WITH_CUDA
    if (ctx->be->device == CVENE_DEVICE_CUDA) ordinal = cvene_backend_cuda_ordinal(ctx->be);
#endif
    h->t.dl_tensor = (DLTensor){v->data, {ctx->be->device == CVENE_DEVICE_CUDA ? kDLCUDA : kDLCPU, ordinal},
                                v->ndim, dt, h->shape, NULL, 0};
    h->t.manager_ctx = h;
    h->t.deleter = dl_delete;
    h->owner = owner, h->release = release;
    *out = &h->t;
    return CVENE_OK;
}
