/* cvene tensors handed out as DLPack tensors (dlpack/dlpack.h, Debian's libdlpack-dev), so
 * torch (torch.from_dlpack), numpy and others read outputs that stay on the device without a
 * copy. Separate from cvene.h so C users who do not want DLPack need not have its header. */
#ifndef CVENE_DLPACK_H
#define CVENE_DLPACK_H

#include <dlpack/dlpack.h>

#include "cvene.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A DLManagedTensor viewing v's memory (no copy): compact row-major, v's shape and dtype (f32,
 * f16, bf16, i32), on ctx's device (kDLCPU, or kDLCUDA with the context's device ordinal). The
 * consumer calls its deleter once when done; the deleter frees the DLPack structure and then
 * calls release(owner) when release is non-NULL (e.g. the owner's _free), so the memory lives as
 * long as the consumer needs it. v's memory must be ctx's device's (a site's tensor, a device
 * output), and must stay valid until the deleter runs. */
cvene_status cvene_dlpack_from_view(cvene_ctx *ctx, const cvene_tensor_view *v, void *owner,
                                    void (*release)(void *owner), DLManagedTensor **out);

#ifdef __cplusplus
}
#endif
#endif
