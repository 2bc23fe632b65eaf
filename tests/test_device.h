// The device a parity suite runs its models on, and host access to site tensors there.
//
// A suite built twice (tests/CMakeLists.txt: test_X on the CPU, label parity; test_X_cuda
// with CVENE_TEST_CUDA=1, label cuda) loads its models on kTestDevice and calls
// CVENE_SKIP_WITHOUT_DEVICE() first in every test that runs a model.
//
// A site callback receives engine memory on the run's device: host memory on the CPU,
// device memory on CUDA (cvene_tensor_view.device says which). SiteHost gives the callback
// a host float array either way: a copy in (CUDA) or the view itself (CPU); write_back()
// copies edits to the device.
#pragma once
#include <gtest/gtest.h>

#include <vector>

#include "cvene.h"
extern "C" {
#include "kernels/ctx.h"
}

#ifndef CVENE_TEST_CUDA
#define CVENE_TEST_CUDA 0
#endif

constexpr cvene_device kTestDevice = CVENE_TEST_CUDA ? CVENE_DEVICE_CUDA : CVENE_DEVICE_CPU;

#define CVENE_SKIP_WITHOUT_DEVICE()                                                                  \
    do {                                                                                             \
        if (kTestDevice == CVENE_DEVICE_CUDA && !cvene_cuda_available())                             \
            GTEST_SKIP() << "no CUDA device visible (or a build without the CUDA backend): "         \
                            "this CUDA parity test did not run";                                     \
    } while (0)

inline int64_t view_numel(const cvene_tensor_view *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// Host view of an f32 site tensor. be: the run's backend (ctx->be), used for the copies.
struct SiteHost {
    cvene_backend *be;
    cvene_tensor_view *v;
    std::vector<float> buf;  // the host copy (CUDA only)
    float *p = nullptr;      // host floats, view_numel(v) of them
    int64_t n = 0;
    bool ok = true;
    SiteHost(cvene_backend *backend, cvene_tensor_view *view) : be(backend), v(view), n(view_numel(view)) {
        if (v->device == CVENE_DEVICE_CPU) {
            p = static_cast<float *>(v->data);
            return;
        }
        buf.resize((size_t)n);
        p = buf.data();
        ok = be && be->ops->to_host(be, p, v->data, (size_t)n * sizeof(float)) == CVENE_OK;
        EXPECT_TRUE(ok) << "copying a site tensor to the host failed";
    }
    // Copies host edits back to the device (no-op on the CPU). false on failure.
    bool write_back() {
        if (v->device == CVENE_DEVICE_CPU) return true;
        bool w = be && be->ops->to_device(be, v->data, p, (size_t)n * sizeof(float)) == CVENE_OK;
        EXPECT_TRUE(w) << "copying a site tensor back to the device failed";
        return w;
    }
};
