// The one backend an op suite runs on: the CPU backend, or the CUDA backend in the suite's _cuda
// build (CVENE_TEST_CUDA; GTEST_SKIP when no device is visible, so a suite without a GPU passes
// and reports its tests as skipped) and in its _emu build (the emulated device). Op errors land
// in err. Derive a named fixture from it (tests/test_backward_ops.cpp, tests/test_sample.cpp).
#pragma once
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "kernels/backend.h"

class BackendUnderTest : public ::testing::Test {
  protected:
    cvene_backend *be = nullptr;
    char err[512] = {0};
    std::mt19937 rng;

    // suite: what the skip message names ("the CUDA <suite> suite did not run")
    BackendUnderTest(unsigned seed, const char *suite) : rng(seed), suite_(suite) {}

    void SetUp() override {
#if CVENE_TEST_CUDA
        if (cvene_backend_cuda_device_count() == 0)
            GTEST_SKIP() << "no CUDA device: the CUDA " << suite_ << " suite did not run";
        be = cvene_backend_cuda_new(0, err, sizeof err);
#else
        be = cvene_backend_cpu_new(0, err, sizeof err);
#endif
        ASSERT_NE(be, nullptr) << err;
        be->err = err;
        be->err_len = sizeof err;
    }
    void TearDown() override {
        if (!be) return;
#if CVENE_TEST_CUDA
        cvene_backend_cuda_free(be);
#else
        cvene_backend_cpu_free(be);
#endif
        be = nullptr;
    }

  private:
    std::string suite_;
};
