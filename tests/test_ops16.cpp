// The ops on 16-bit activations (kernels/backend.h: cvene_ops16) against torch.
//
// tests/fixtures/ops16/{bf16,f16}.safetensors (tools/make_ops16_fixtures.py, torch 2.5.1 on
// CPU) hold inputs and torch's outputs for every entry of cvene_ops16. This suite runs each
// entry on one backend: the CPU (test_ops16, label unit: the oracle itself against torch), or
// CUDA (test_ops16_cuda, label cuda; test_ops16_emu on the emulated device, label emu).
//
// Tolerance (tests/ulp16.h), per element: |got - torch| <= 1 ulp of dt at torch's value (bf16:
// 2^-7 relative at most, f16: 2^-10), plus 1e-5 * max(1, max |torch|), the f32-vs-f32 noise
// every f32 suite allows. Why: both sides round one f32 (or double) result to dt once, and
// their f32 results differ only by summation order (GEMM, dot products, layer-norm / softmax
// sums) or the last bit of expf / tanhf / erff / pow, so at most one rounding boundary separates
// them, except where a sum cancels to far below its terms and that f32 noise exceeds dt's ulp at
// the value (the absolute term); torch's
// own 16-bit CPU kernels (layer norm, softmax, the activations) also widen, compute in f32 and
// round once. Moves and conversions (permute_heads, convert) must match exactly (0 ulp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"
#include "ulp16.h"
extern "C" {
#include "kernels/dtype.h"
#include "kernels/tensor.h"
}
#include "kernels/backend.h"

#ifndef CVENE_TEST_CUDA
#define CVENE_TEST_CUDA 0
#endif

namespace {

struct Ops16Case {
    const char *name;
    cvene_dtype dt;
};

class Ops16 : public ::testing::TestWithParam<Ops16Case> {
  protected:
    cvene_backend *be = nullptr;
    char err[512] = {0};
    std::vector<void *> bufs;
    Archive *ref = nullptr;
    cvene_dtype dt = CVENE_BF16;

    void SetUp() override {
        dt = GetParam().dt;
#if CVENE_TEST_CUDA
        if (cvene_backend_cuda_device_count() == 0)
            GTEST_SKIP() << "no CUDA device: the CUDA ops16 suite did not run";
        be = cvene_backend_cuda_new(0, err, sizeof err);
#else
        be = cvene_backend_cpu_new(1, err, sizeof err);
#endif
        ASSERT_NE(be, nullptr) << err;
        be->err = err;
        be->err_len = sizeof err;
        ref = new Archive(std::string(CVENE_FIXTURES) + "/ops16/" + GetParam().name + ".safetensors");
    }
    void TearDown() override {
        for (void *p : bufs) be->ops->free(be, p);
#if CVENE_TEST_CUDA
        if (be) cvene_backend_cuda_free(be);
#else
        if (be) cvene_backend_cpu_free(be);
#endif
        delete ref;
    }
    const cvene_ops16 *o16() const { return be->ops->ops16; }

    template <class T> T *dev(const std::vector<T> &h) {
        void *p = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &p, std::max<size_t>(1, h.size()) * sizeof(T)), CVENE_OK) << err;
        bufs.push_back(p);
        if (!h.empty()) {
            EXPECT_EQ(be->ops->to_device(be, p, h.data(), h.size() * sizeof(T)), CVENE_OK) << err;
        }
        return static_cast<T *>(p);
    }
    template <class T> T *dev(const std::string &name) { return dev(ref->get<T>(name)); }
    uint16_t *out16(size_t n) { return dev(std::vector<uint16_t>(n, 0x7fc1)); } // NaN-filled
    template <class T> std::vector<T> host(const T *p, size_t n) {
        std::vector<T> h(n);
        EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(T)), CVENE_OK) << err;
        return h;
    }

    // got (device, dt elements) against the reference tensor `want` (dt elements), tests/ulp16.h
    void expect_ulps(const uint16_t *got_dev, const std::string &want, int ulps = 1) {
        const std::vector<uint16_t> w = ref->get<uint16_t>(want);
        ASSERT_FALSE(w.empty()) << want;
        expect_ulp16(w, host(got_dev, w.size()), dt, want + " vs torch", ulps);
    }
};

TEST_P(Ops16, TableIsComplete) {
    const cvene_ops16 *o = o16();
    ASSERT_NE(o, nullptr);
#define SLOT(f) EXPECT_TRUE(o->f != nullptr) << #f
    SLOT(embedding); SLOT(layernorm); SLOT(residual_layernorm); SLOT(residual_add); SLOT(matmul_act);
    SLOT(attn_probs); SLOT(attn_apply); SLOT(activation); SLOT(softmax); SLOT(rotary); SLOT(permute_heads);
    SLOT(gru_pointwise); SLOT(convert); SLOT(round);
#undef SLOT
}

TEST_P(Ops16, Embedding) {
    const int B = 2, T = 5, C = 13;
    uint16_t *out = out16((size_t)B * T * C);
    ASSERT_EQ(o16()->embedding(be, dt, out, dev<int32_t>("emb.ids"), dev<int32_t>("emb.pos"), dev<float>("emb.wte"),
                               dev<float>("emb.wpe"), B, T, C),
              CVENE_OK)
        << err;
    expect_ulps(out, "emb.out");
}

TEST_P(Ops16, LayerNormAndResidualLayerNorm) {
    const int N = 7, C = 37;
    uint16_t *out = out16((size_t)N * C);
    const float *w = dev<float>("ln.w"), *b = dev<float>("ln.b");
    ASSERT_EQ(o16()->layernorm(be, dt, out, dev<uint16_t>("ln.in"), w, b, N, C, 1e-5f), CVENE_OK) << err;
    expect_ulps(out, "ln.out");
    uint16_t *x = dev<uint16_t>("ln.in"), *out2 = out16((size_t)N * C);
    ASSERT_EQ(o16()->residual_layernorm(be, dt, x, dev<uint16_t>("ln.y"), out2, w, b, N, C, 1e-5f), CVENE_OK) << err;
    expect_ulps(x, "rln.x");
    expect_ulps(out2, "rln.out");
}

TEST_P(Ops16, ResidualAdd) {
    uint16_t *x = dev<uint16_t>("add.x");
    ASSERT_EQ(o16()->residual_add(be, dt, x, dev<uint16_t>("add.y"), 101), CVENE_OK) << err;
    expect_ulps(x, "add.out");
}

TEST_P(Ops16, MatmulActBothLayoutsEveryActivation) {
    const int M = 5, K = 33, N = 17;
    const uint16_t *in = dev<uint16_t>("mm.in");
    const std::pair<cvene_act, const char *> acts[] = {
        {CVENE_ACT_NONE, "none"}, {CVENE_GELU_TANH, "gelu_tanh"}, {CVENE_GELU_ERF, "gelu_erf"}, {CVENE_ACT_RELU, "relu"}};
    for (int trans : {0, 1}) {
        const std::string pre = "mm" + std::to_string(trans) + ".";
        const uint16_t *w = dev<uint16_t>(pre + "w");
        const float *bias = dev<float>(pre + "bias");
        for (auto &a : acts) {
            uint16_t *out = out16((size_t)M * N);
            ASSERT_EQ(o16()->matmul_act(be, dt, out, in, w, trans ? K : N, trans, bias, M, K, N, a.first), CVENE_OK)
                << err;
            expect_ulps(out, pre + a.second);
        }
    }
}

TEST_P(Ops16, AttentionProbsAndApplyWithPastAndMask) {
    const int B = 2, Tq = 3, Tk = 5, H = 2, D = 7, C = H * D;
    uint16_t *probs = out16((size_t)B * H * Tq * Tk), *out = out16((size_t)B * Tq * C);
    ASSERT_EQ(o16()->attn_probs(be, dt, probs, dev<uint16_t>("attn.q"), (size_t)Tq * C, dev<uint16_t>("attn.k"),
                                (size_t)Tk * C, dev<int32_t>("attn.mask"), B, Tq, Tk, H, D, 1.0f / std::sqrt(7.0f)),
              CVENE_OK)
        << err;
    expect_ulps(probs, "attn.probs");
    // apply torch's rounded probabilities, so the two ops are checked separately
    ASSERT_EQ(o16()->attn_apply(be, dt, out, dev<uint16_t>("attn.probs"), dev<uint16_t>("attn.v"), (size_t)Tk * C, B,
                                Tq, Tk, H, D),
              CVENE_OK)
        << err;
    expect_ulps(out, "attn.out");
}

TEST_P(Ops16, Activations) {
    const std::pair<cvene_act, const char *> acts[] = {{CVENE_GELU_TANH, "act.gelu_tanh"},
                                                       {CVENE_GELU_ERF, "act.gelu_erf"},
                                                       {CVENE_ACT_RELU, "act.relu"},
                                                       {CVENE_ACT_SIGMOID, "act.sigmoid"},
                                                       {CVENE_ACT_TANH, "act.tanh"}};
    for (auto &a : acts) {
        uint16_t *x = dev<uint16_t>("act.in");
        ASSERT_EQ(o16()->activation(be, dt, x, 257, a.first), CVENE_OK) << err;
        expect_ulps(x, a.second);
    }
}

TEST_P(Ops16, Softmax) {
    uint16_t *x = dev<uint16_t>("softmax.in");
    ASSERT_EQ(o16()->softmax(be, dt, x, 3, 19), CVENE_OK) << err;
    expect_ulps(x, "softmax.out");
}

TEST_P(Ops16, RotaryOnStridedRows) {
    uint16_t *x = dev<uint16_t>("rot.in");
    ASSERT_EQ(o16()->rotary(be, dt, x, 21, dev<int32_t>("rot.pos"), 2, 3, 2, 8, 6, 10000.0f), CVENE_OK) << err;
    expect_ulps(x, "rot.out");
}

TEST_P(Ops16, GruSteps) {
    uint16_t *out = out16(55);
    ASSERT_EQ(o16()->gru_pointwise(be, dt, out, dev<uint16_t>("gru.a"), dev<uint16_t>("gru.b"), dev<uint16_t>("gru.c"),
                                   55, CVENE_GRU_NEW_GATE_IN),
              CVENE_OK)
        << err;
    expect_ulps(out, "gru.new_gate_in");
    // in place (out aliases a), as a GRU step writes its hidden state
    uint16_t *z = dev<uint16_t>("gru.z");
    ASSERT_EQ(o16()->gru_pointwise(be, dt, z, z, dev<uint16_t>("gru.b"), dev<uint16_t>("gru.c"), 55, CVENE_GRU_HIDDEN),
              CVENE_OK)
        << err;
    expect_ulps(z, "gru.hidden");
}

TEST_P(Ops16, PermuteHeadsBothWaysExactly) {
    const int B = 2, T = 3, H = 4, D = 5;
    const size_t n = (size_t)B * T * H * D;
    uint16_t *heads = out16(n), *back = out16(n);
    ASSERT_EQ(o16()->permute_heads(be, dt, heads, dev<uint16_t>("perm.in"), B, T, H, D, 1), CVENE_OK) << err;
    expect_ulps(heads, "perm.to_heads", 0);
    ASSERT_EQ(o16()->permute_heads(be, dt, back, heads, B, T, H, D, 0), CVENE_OK) << err;
    expect_ulps(back, "perm.in", 0);
}

TEST_P(Ops16, ConvertRoundsLikeTorchAndWidensExactly) {
    const std::vector<float> f = ref->get<float>("cvt.f32");
    const size_t n = f.size();
    uint16_t *h = out16(n);
    ASSERT_EQ(o16()->convert(be, h, dt, dev(f), CVENE_F32, n), CVENE_OK) << err;
    expect_ulps(h, "cvt.out", 0); // ties to even, overflow, subnormals, Inf, NaN as torch
    float *back = dev(std::vector<float>(n, 0.0f));
    ASSERT_EQ(o16()->convert(be, back, CVENE_F32, h, dt, n), CVENE_OK) << err;
    const std::vector<float> bh = host(back, n);
    const std::vector<uint16_t> want = ref->get<uint16_t>("cvt.out");
    for (size_t i = 0; i < n; i++) {
        float w;
        cvene_half_to_f32_array(&w, &want[i], 1, dt);
        if (std::isnan(w)) {
            EXPECT_TRUE(std::isnan(bh[i])) << i;
        } else {
            EXPECT_EQ(bh[i], w) << i;
        }
    }
    // round: the same values, kept in an f32 buffer
    float *r = dev(f);
    ASSERT_EQ(o16()->round(be, dt, r, n), CVENE_OK) << err;
    const std::vector<float> rh = host(r, n);
    for (size_t i = 0; i < n; i++) {
        if (std::isnan(bh[i])) {
            EXPECT_TRUE(std::isnan(rh[i])) << i;
        } else {
            EXPECT_EQ(rh[i], bh[i]) << "round " << i;
        }
    }
    // to the other 16-bit type and back to dt: values in both ranges survive exactly
    const cvene_dtype other = dt == CVENE_BF16 ? CVENE_F16 : CVENE_BF16;
    const std::vector<float> small = {0.5f, -1.25f, 3.0f, 0.0f, 96.0f};
    uint16_t *s16 = out16(small.size()), *o16b = out16(small.size()), *s16b = out16(small.size());
    ASSERT_EQ(o16()->convert(be, s16, dt, dev(small), CVENE_F32, small.size()), CVENE_OK) << err;
    ASSERT_EQ(o16()->convert(be, o16b, other, s16, dt, small.size()), CVENE_OK) << err;
    ASSERT_EQ(o16()->convert(be, s16b, dt, o16b, other, small.size()), CVENE_OK) << err;
    EXPECT_EQ(host(s16, small.size()), host(s16b, small.size()));
}

TEST_P(Ops16, BadDtypeIsRefusedNamingIt) {
    uint16_t *x = out16(4);
    EXPECT_EQ(o16()->activation(be, CVENE_I32, x, 4, CVENE_ACT_RELU), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("dt = 3"), std::string::npos) << err;
    err[0] = 0;
    EXPECT_EQ(o16()->convert(be, x, CVENE_I32, x, CVENE_F16, 4), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("dt = 3"), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Ops16, ::testing::Values(Ops16Case{"bf16", CVENE_BF16}, Ops16Case{"f16", CVENE_F16}),
                         [](const ::testing::TestParamInfo<Ops16Case> &i) { return std::string(i.param.name); });

} // namespace
