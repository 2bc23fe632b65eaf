// A CPU backend and a CUDA backend side by side, for op-level tests of the CUDA backend
// against the CPU reference (tests/test_cuda_ops.cpp, tests/test_fused_ops.cpp).
//
// BackendPair (a GoogleTest fixture: derive a named fixture from it) creates both backends,
// or skips the test (GTEST_SKIP) when no CUDA device is visible, so a suite without a GPU
// passes and reports its tests as skipped. It uploads the same host data to both backends
// (both()), frees every buffer in TearDown, and compares results with
//   max |cuda - cpu| <= kRelTol * max(1, max |cpu|),   non-finite values equal exactly.
// Tolerance: both sides compute in f32 (statistics and softmax sums in double on both);
// they differ only in summation order (GEMM blocking, warp-tree dot products) and in
// last-ulp differences of expf/tanhf/erff, well inside 1e-5 relative for the reduction
// lengths the suites use.
//
// Only for builds with the CUDA backend (CVENE_WITH_CUDA).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"

constexpr double kRelTol = 1e-5; // see the header comment

class BackendPair : public ::testing::Test {
  protected:
    cvene_backend *cpu = nullptr;
    cvene_backend *gpu = nullptr;
    char cpu_err[512] = {0};
    char gpu_err[512] = {0};
    std::mt19937 rng{12345};
    std::vector<std::pair<cvene_backend *, void *>> allocs;

    void SetUp() override {
        if (cvene_backend_cuda_device_count() == 0)
            GTEST_SKIP() << "no CUDA device: cvene_backend_cuda_device_count() == 0 "
                            "(no driver or no visible GPU)";
        char err[512] = {0};
        cpu = cvene_backend_cpu_new(0, err, sizeof err);
        ASSERT_NE(cpu, nullptr) << err;
        gpu = cvene_backend_cuda_new(0, err, sizeof err);
        ASSERT_NE(gpu, nullptr) << err;
        ASSERT_EQ(gpu->device, CVENE_DEVICE_CUDA);
        cpu->err = cpu_err;
        cpu->err_len = sizeof cpu_err;
        gpu->err = gpu_err;
        gpu->err_len = sizeof gpu_err;
    }

    void TearDown() override {
        for (auto &a : allocs) a.first->ops->free(a.first, a.second);
        allocs.clear();
        if (gpu) cvene_backend_cuda_free(gpu);
        if (cpu) cvene_backend_cpu_free(cpu);
    }

    static const char *msg(cvene_backend *be) { return be->err ? be->err : ""; }

    // ---- random host data
    std::vector<float> randf(size_t n, float lo = -1.0f, float hi = 1.0f) {
        std::uniform_real_distribution<float> d(lo, hi);
        std::vector<float> v(n);
        for (auto &x : v) x = d(rng);
        return v;
    }
    std::vector<int32_t> randi(size_t n, int lo, int hi) { // inclusive
        std::uniform_int_distribution<int> d(lo, hi);
        std::vector<int32_t> v(n);
        for (auto &x : v) x = d(rng);
        return v;
    }

    // ---- device buffers, freed in TearDown
    void *alloc(cvene_backend *be, size_t nbytes) {
        void *p = nullptr;
        cvene_status s = be->ops->alloc(be, &p, nbytes);
        EXPECT_EQ(s, CVENE_OK) << msg(be);
        if (s == CVENE_OK) allocs.emplace_back(be, p);
        return p;
    }
    template <class T> T *upload(cvene_backend *be, const std::vector<T> &h) {
        T *p = static_cast<T *>(alloc(be, std::max<size_t>(1, h.size()) * sizeof(T)));
        if (p && !h.empty()) {
            EXPECT_EQ(be->ops->to_device(be, p, h.data(), h.size() * sizeof(T)), CVENE_OK) << msg(be);
        }
        return p;
    }
    template <class T> std::vector<T> download(cvene_backend *be, const T *p, size_t n) {
        std::vector<T> h(n);
        if (n) {
            EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(T)), CVENE_OK) << msg(be);
        }
        return h;
    }

    // The same host data on both backends.
    template <class T> struct Pair {
        T *c = nullptr; // on the CPU backend
        T *g = nullptr; // on the CUDA backend
    };
    template <class T> Pair<T> both(const std::vector<T> &h) { return Pair<T>{upload(cpu, h), upload(gpu, h)}; }

    // Compare the results of the two backends (n floats at c on the CPU, g on the GPU).
    void expect_close(const float *c, const float *g, size_t n, const std::string &what) {
        std::vector<float> hc = download(cpu, c, n), hg = download(gpu, g, n);
        expect_close_host(hc, hg, what);
    }
    static void expect_close_host(const std::vector<float> &hc, const std::vector<float> &hg, const std::string &what) {
        ASSERT_EQ(hc.size(), hg.size()) << what;
        double max_ref = 0.0, max_diff = 0.0;
        size_t worst = 0, bad = 0;
        for (size_t i = 0; i < hc.size(); i++) {
            if (!std::isfinite(hc[i]) || !std::isfinite(hg[i])) {
                // non-finite values must agree exactly (same inf, or both NaN)
                bool same = (std::isnan(hc[i]) && std::isnan(hg[i])) || hc[i] == hg[i];
                if (!same && bad++ == 0) worst = i;
                continue;
            }
            max_ref = std::max(max_ref, (double)std::fabs(hc[i]));
            double d = std::fabs((double)hc[i] - (double)hg[i]);
            if (d > max_diff) {
                max_diff = d;
                if (!bad) worst = i;
            }
        }
        const double tol = kRelTol * std::max(1.0, max_ref);
        EXPECT_EQ(bad, 0u) << what << ": non-finite mismatch at " << worst << " cpu=" << hc[worst]
                           << " cuda=" << hg[worst];
        EXPECT_LE(max_diff, tol) << what << ": worst index " << worst << " cpu=" << hc[worst] << " cuda=" << hg[worst]
                                 << " (max |cpu| = " << max_ref << ")";
    }
};

// "k=v k=v " for failure messages.
inline std::string tag(std::initializer_list<std::pair<const char *, long long>> kv) {
    std::ostringstream os;
    for (auto &p : kv) os << p.first << "=" << p.second << " ";
    return os.str();
}
