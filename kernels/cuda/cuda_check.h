/* Error reporting shared by the CUDA files: every CUDA / cuBLAS call is checked and a
 * failure writes "kernels/cuda/FILE.cu:LINE: call: reason (name)" to be->err (or to a
 * constructor's buffer) and returns CVENE_ERR_BACKEND from the calling op. */
#ifndef CVENE_CUDA_CHECK_H
#define CVENE_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"

/* __FILE__ from "kernels/" on, so messages do not carry the build machine's paths */
static inline const char *cvene_cuda_short_file(const char *f) {
    const char *k = strstr(f, "kernels/");
    return k ? k : f;
}

static inline cvene_status cvene_cuda_fail(char *err, size_t err_len, const char *file, int line,
                                           const char *call, cudaError_t e) {
    if (err && err_len)
        snprintf(err, err_len, "%s:%d: %s: %s (%s)", cvene_cuda_short_file(file), line, call,
                 cudaGetErrorString(e), cudaGetErrorName(e));
    return CVENE_ERR_BACKEND;
}

static inline cvene_status cvene_cublas_fail(char *err, size_t err_len, const char *file, int line,
                                             const char *call, cublasStatus_t s) {
    if (err && err_len)
        snprintf(err, err_len, "%s:%d: %s: %s (%s)", cvene_cuda_short_file(file), line, call,
                 cublasGetStatusString(s), cublasGetStatusName(s));
    return CVENE_ERR_BACKEND;
}

/* An op's own refusal (bad argument, unsupported size): "file:line: msg", status st. */
static inline cvene_status cvene_cuda_msg(cvene_backend *be, cvene_status st, const char *file, int line,
                                          const char *msg) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "%s:%d: %s", cvene_cuda_short_file(file), line, msg);
    return st;
}

/* Check a CUDA runtime call; on failure write the message to be->err and return. */
#define CU_CHECK(be, call)                                                                       \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) return cvene_cuda_fail((be)->err, (be)->err_len, __FILE__, __LINE__, #call, e_); \
    } while (0)

/* Check a cuBLAS call the same way. */
#define CUBLAS_CHECK(be, call)                                                                   \
    do {                                                                                         \
        cublasStatus_t s_ = (call);                                                              \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                         \
            return cvene_cublas_fail((be)->err, (be)->err_len, __FILE__, __LINE__, #call, s_);   \
    } while (0)

/* A cuBLAS(Lt) call for which the status `allowed` is an answer rather than a failure (a
 * heuristic query's CUBLAS_STATUS_NOT_SUPPORTED): the status is stored in `out`; any other
 * failure returns as CUBLAS_CHECK does. */
#define CUBLAS_CHECK_ALLOW(be, call, allowed, out)                                               \
    do {                                                                                         \
        (out) = (call);                                                                          \
        if ((out) != CUBLAS_STATUS_SUCCESS && (out) != (allowed))                                \
            return cvene_cublas_fail((be)->err, (be)->err_len, __FILE__, __LINE__, #call, (out)); \
    } while (0)

/* After a kernel launch: launch-configuration errors surface here, without a sync. */
#define LAUNCH_CHECK(be) CU_CHECK(be, cudaGetLastError())

#define CUDA_OP_FAIL(be, st, msg) cvene_cuda_msg((be), (st), __FILE__, __LINE__, (msg))

#endif
