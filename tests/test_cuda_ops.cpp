// CUDA backend vs the CPU reference, op by op.
//
// Each test fills fresh random inputs (fixed-seed std::mt19937) at several odd sizes,
// runs the op on a CPU backend and on a CUDA backend, copies the CUDA result back and
// requires   max |cuda - cpu| <= 1e-5 * max(1, max |cpu|).
// Tolerance: both sides compute in f32 (statistics/softmax sums in double on both);
// they differ only in summation order (GEMM blocking, warp-tree dot products) and in
// last-ulp differences of expf/tanhf/erff, which stays well inside 1e-5 relative for
// the reduction lengths used here.
//
// Without a CUDA device every test is skipped (GTEST_SKIP), so the suite passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "kernels/dtype.h"
#include "kernels/tensor.h"
}
#include "backend_pair.h" // both backends, uploads, expect_close (1e-5 relative), tag()
#include "ulp16.h"        // expect_ulp16: 16-bit results within an ulp
#include "kernels/backend.h"

namespace {

class CudaOps : public BackendPair {};

// ---------------------------------------------------------------------------------------

TEST_F(CudaOps, OpTableIsComplete) {
    const cvene_ops *o = gpu->ops;
    EXPECT_STREQ(o->name, "cuda");
#define SLOT(f) EXPECT_TRUE(o->f != nullptr) << #f
    SLOT(alloc); SLOT(free); SLOT(to_device); SLOT(to_host); SLOT(copy); SLOT(sync);
    SLOT(embedding); SLOT(layernorm); SLOT(matmul); SLOT(attn_probs); SLOT(attn_apply);
    SLOT(activation); SLOT(softmax); SLOT(residual_add); SLOT(rotary); SLOT(permute_heads);
    SLOT(gru_pointwise); SLOT(iv_units); SLOT(iv_rotated); SLOT(matmul_lp);
    SLOT(residual_layernorm); SLOT(matmul_act); SLOT(ops16);
#undef SLOT
}

TEST_F(CudaOps, BadDeviceOrdinalFailsCleanly) {
    char err[256] = {0};
    cvene_backend *be = cvene_backend_cuda_new(1 << 20, err, sizeof err);
    EXPECT_EQ(be, nullptr);
    EXPECT_NE(std::string(err), "");
    if (be) cvene_backend_cuda_free(be);
}

TEST_F(CudaOps, MemoryRoundTripAndCopy) {
    for (size_t n : {size_t(1), size_t(7), size_t(1000003)}) {
        std::vector<float> h = randf(n);
        float *a = upload(gpu, h);
        float *b = static_cast<float *>(alloc(gpu, n * sizeof(float)));
        ASSERT_EQ(gpu->ops->copy(gpu, b, a, n * sizeof(float)), CVENE_OK) << msg(gpu);
        ASSERT_EQ(gpu->ops->sync(gpu), CVENE_OK) << msg(gpu);
        std::vector<float> back = download(gpu, b, n);
        EXPECT_EQ(std::memcmp(back.data(), h.data(), n * sizeof(float)), 0) << "n=" << n;
    }
    // zero-byte transfers are no-ops
    float dummy = 0.0f;
    float *a = upload(gpu, std::vector<float>{1.0f});
    EXPECT_EQ(gpu->ops->to_device(gpu, a, &dummy, 0), CVENE_OK);
    EXPECT_EQ(gpu->ops->to_host(gpu, &dummy, a, 0), CVENE_OK);
    EXPECT_EQ(gpu->ops->copy(gpu, a, a, 0), CVENE_OK);
}

TEST_F(CudaOps, Embedding) {
    const int V = 50, P = 40;
    for (int B : {1, 2, 3})
        for (int T : {1, 7, 33})
            for (int C : {5, 48, 130})
                for (int with_pos : {0, 1}) {
                    const size_t N = (size_t)B * T;
                    auto wte = both(randf((size_t)V * C));
                    auto wpe = both(randf((size_t)P * C));
                    auto ids = both(randi(N, 0, V - 1));
                    Pair<int32_t> pos;
                    if (with_pos) pos = both(randi(N, 0, P - 1));
                    auto out = both(randf(N * C)); // garbage that must be overwritten
                    ASSERT_EQ(cpu->ops->embedding(cpu, out.c, ids.c, pos.c, wte.c, wpe.c, B, T, C),
                              CVENE_OK);
                    ASSERT_EQ(gpu->ops->embedding(gpu, out.g, ids.g, pos.g, wte.g, wpe.g, B, T, C),
                              CVENE_OK)
                        << msg(gpu);
                    expect_close(out.c, out.g, N * C,
                                 "embedding " + tag({{"B", B}, {"T", T}, {"C", C}, {"pos", with_pos}}));
                }
}

TEST_F(CudaOps, LayerNorm) {
    for (int N : {1, 7, 33})
        for (int C : {5, 48, 130, 1000})
            for (int in_place : {0, 1}) {
                // an offset mean and a non-unit spread exercise the double statistics
                auto in = both(randf((size_t)N * C, 2.0f, 5.0f));
                auto w = both(randf(C, 0.5f, 1.5f));
                auto b = both(randf(C));
                Pair<float> out = in_place ? in : both(randf((size_t)N * C));
                ASSERT_EQ(cpu->ops->layernorm(cpu, out.c, in.c, w.c, b.c, N, C, 1e-5f), CVENE_OK);
                ASSERT_EQ(gpu->ops->layernorm(gpu, out.g, in.g, w.g, b.g, N, C, 1e-5f), CVENE_OK)
                    << msg(gpu);
                expect_close(out.c, out.g, (size_t)N * C,
                             "layernorm " + tag({{"N", N}, {"C", C}, {"in_place", in_place}}));
            }
}

TEST_F(CudaOps, Matmul) {
    for (int trans_w : {0, 1})
        for (int M : {1, 7, 33})
            for (int K : {1, 5, 48, 130})
                for (int N : {1, 5, 48, 130})
                    for (int variant : {0, 1, 2}) {
                        // variant 0: dense W, no bias; 1: dense W + bias;
                        // 2: W is a column/row slice of a wider matrix (ldw > width, offset) + bias
                        const int off = variant == 2 ? 3 : 0;
                        const int width = trans_w ? K : N; // row length of W
                        const int ldw = variant == 2 ? width + 2 * off + 1 : width;
                        const int rows = trans_w ? N : K;
                        auto wbuf = both(randf((size_t)rows * ldw));
                        auto in = both(randf((size_t)M * K));
                        Pair<float> bias;
                        if (variant >= 1) bias = both(randf(N));
                        auto out = both(randf((size_t)M * N, 100.0f, 200.0f)); // overwritten
                        ASSERT_EQ(cpu->ops->matmul(cpu, out.c, in.c, wbuf.c + off, ldw, trans_w,
                                                   bias.c, M, K, N),
                                  CVENE_OK);
                        ASSERT_EQ(gpu->ops->matmul(gpu, out.g, in.g, wbuf.g + off, ldw, trans_w,
                                                   bias.g, M, K, N),
                                  CVENE_OK)
                            << msg(gpu);
                        expect_close(out.c, out.g, (size_t)M * N,
                                     "matmul " + tag({{"trans_w", trans_w},
                                                      {"M", M},
                                                      {"K", K},
                                                      {"N", N},
                                                      {"variant", variant}}));
                    }
}

// ---- matmul_lp: bf16 / f16 weights, inputs rounded to the weight dtype, f32 accumulation.
// Tolerance: the same kRelTol = 1e-5 as the f32 ops. Both backends multiply identical
// operands -- the weights are the same 16-bit patterns, and the CUDA rounding of the inputs
// (__float2bfloat16_rn / __float2half_rn) is bit-identical to the host's (checked by
// MatmulLpRoundsLikeTheHost) -- every product of two 16-bit floats is exact in f32, and
// both accumulate in f32 (CUBLAS_COMPUTE_32F; OpenBLAS sgemm). So they differ only by the
// summation order of K = 65 terms of magnitude <= 1, as the f32 Matmul test does.

std::vector<uint16_t> to_half(const std::vector<float> &f, cvene_dtype dt) {
    std::vector<uint16_t> h(f.size());
    cvene_f32_to_half_array(h.data(), f.data(), f.size(), dt);
    return h;
}

TEST_F(CudaOps, MatmulLp) {
    for (cvene_dtype dt : {CVENE_BF16, CVENE_F16})
        for (int trans_w : {0, 1})
            for (int M : {1, 7, 33})
                for (int K : {65, 1, 130})
                    for (int N : {129, 5})
                        for (int variant : {0, 1, 2}) {
                            if (K != 65 && N != 129) continue; // the brief's sizes, plus a few edges
                            // variant 0: dense W, no bias; 1: dense W + bias;
                            // 2: W is a column/row slice of a wider matrix (ldw > width, offset) + bias
                            const int off = variant == 2 ? 3 : 0;
                            const int width = trans_w ? K : N;
                            const int ldw = variant == 2 ? width + 2 * off + 1 : width;
                            const int rows = trans_w ? N : K;
                            auto wbuf = both(to_half(randf((size_t)rows * ldw), dt));
                            auto in = both(randf((size_t)M * K));
                            Pair<float> bias;
                            if (variant >= 1) bias = both(randf(N));
                            auto out = both(randf((size_t)M * N, 100.0f, 200.0f)); // overwritten
                            ASSERT_EQ(cpu->ops->matmul_lp(cpu, out.c, in.c, wbuf.c + off, dt, ldw, trans_w, bias.c,
                                                          M, K, N),
                                      CVENE_OK)
                                << msg(cpu);
                            ASSERT_EQ(gpu->ops->matmul_lp(gpu, out.g, in.g, wbuf.g + off, dt, ldw, trans_w, bias.g,
                                                          M, K, N),
                                      CVENE_OK)
                                << msg(gpu);
                            expect_close(out.c, out.g, (size_t)M * N,
                                         std::string("matmul_lp ") + (dt == CVENE_BF16 ? "bf16 " : "f16 ") +
                                             tag({{"trans_w", trans_w}, {"M", M}, {"K", K}, {"N", N},
                                                  {"variant", variant}}));
                        }
}

// K = 1 and W = [1]: out = round(x) exactly, so the device rounding must equal the host's
// bit for bit: ties to even, f16 subnormals and overflow, Inf and NaN.
TEST_F(CudaOps, MatmulLpRoundsLikeTheHost) {
    auto fb = [](uint32_t b) {
        float f;
        std::memcpy(&f, &b, 4);
        return f;
    };
    std::vector<float> x = {1.0f, fb(0x3f808000u), fb(0x3f818000u), fb(0x3f808001u),
                            1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11), 65504.0f,
                            65519.996f, 65520.0f, -1e6f, INFINITY, -INFINITY, NAN, fb(0x7f7f7fffu), FLT_MAX};
    std::vector<float> f16_only = {std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(1.5f, -25),
                                   std::ldexp(3.0f, -25), std::ldexp(5.0f, -25), std::ldexp(2047.0f, -25),
                                   -std::ldexp(1023.0f, -24)};
    auto r = randf(1000, -3.0f, 3.0f);
    x.insert(x.end(), r.begin(), r.end());
    for (cvene_dtype dt : {CVENE_BF16, CVENE_F16}) {
        std::vector<float> xs = x;
        if (dt == CVENE_F16) xs.insert(xs.end(), f16_only.begin(), f16_only.end());
        const int M = (int)xs.size();
        const std::vector<uint16_t> one = {(uint16_t)(dt == CVENE_BF16 ? 0x3f80 : 0x3c00)};
        auto w = both(one);
        auto in = both(xs);
        auto out = both(randf((size_t)M));
        ASSERT_EQ(gpu->ops->matmul_lp(gpu, out.g, in.g, w.g, dt, 1, 0, nullptr, M, 1, 1), CVENE_OK) << msg(gpu);
        std::vector<float> got = download(gpu, out.g, (size_t)M);
        for (int m = 0; m < M; m++) {
            const float want = cvene_round_to_half(xs[m], dt);
            uint32_t wb, gb;
            std::memcpy(&wb, &want, 4);
            std::memcpy(&gb, &got[m], 4);
            if (std::isnan(want)) EXPECT_TRUE(std::isnan(got[m])) << m;
            else EXPECT_EQ(gb, wb) << (dt == CVENE_BF16 ? "bf16" : "f16") << " m=" << m << " x=" << xs[m]
                                   << " want=" << want << " got=" << got[m];
        }
    }
}

// The scratch grows while earlier GEMMs that read it are still queued (no sync between the
// calls): each result must still be its own.
TEST_F(CudaOps, MatmulLpScratchGrowthKeepsQueuedWork) {
    const int K = 65, N = 129;
    const cvene_dtype dt = CVENE_BF16;
    auto w = both(to_half(randf((size_t)K * N), dt));
    std::vector<Pair<float>> outs, ins;
    const int Ms[] = {3, 40, 7, 700, 2};
    for (int M : Ms) {
        ins.push_back(both(randf((size_t)M * K)));
        outs.push_back(both(randf((size_t)M * N)));
        ASSERT_EQ(gpu->ops->matmul_lp(gpu, outs.back().g, ins.back().g, w.g, dt, N, 0, nullptr, M, K, N), CVENE_OK)
            << msg(gpu);
    }
    for (size_t i = 0; i < outs.size(); i++) {
        const int M = Ms[i];
        ASSERT_EQ(cpu->ops->matmul_lp(cpu, outs[i].c, ins[i].c, w.c, dt, N, 0, nullptr, M, K, N), CVENE_OK);
        expect_close(outs[i].c, outs[i].g, (size_t)M * N, "matmul_lp queued M=" + std::to_string(M));
    }
    EXPECT_EQ(gpu->ops->matmul_lp(gpu, outs[0].g, ins[0].g, w.g, CVENE_I32, N, 0, nullptr, 3, K, N),
              CVENE_ERR_INVALID_ARG);
}

struct AttnCase {
    int B, H, Tq, Tk, D;
    int mask; // 0: none; 1: random zeros; 2: random zeros + batch 0 fully masked + a
              //    prefix mask that leaves early queries with no visible key
};

const AttnCase kAttnCases[] = {
    {1, 1, 1, 1, 1, 0},    {1, 1, 1, 1, 1, 2},   {2, 3, 7, 7, 5, 0},   {2, 3, 7, 7, 5, 1},
    {3, 2, 5, 12, 8, 1},   {3, 2, 5, 12, 8, 2},  {2, 4, 33, 33, 64, 2}, {1, 2, 1, 40, 16, 1},
    {2, 2, 3, 300, 16, 2}, {1, 3, 17, 17, 33, 0}, {2, 1, 9, 130, 48, 2},
};

std::vector<int32_t> make_mask(std::mt19937 &rng, const AttnCase &c) {
    std::vector<int32_t> m((size_t)c.B * c.Tk, 1);
    std::bernoulli_distribution zero(0.25);
    for (auto &x : m) x = zero(rng) ? 0 : 1;
    if (c.mask == 2) {
        for (int j = 0; j < c.Tk; j++) m[j] = 0; // batch 0: every row all-masked
        if (c.B > 1) {                            // batch 1: keys 0..2 padded (left padding)
            for (int j = 0; j < c.Tk; j++) m[(size_t)c.Tk + j] = j < 3 ? 0 : 1;
        }
    }
    return m;
}

TEST_F(CudaOps, AttnProbs) {
    for (const AttnCase &c : kAttnCases)
        for (int strided : {0, 1}) {
            const int C = c.H * c.D;
            // strided: batch strides larger than the packed size (q/k views into a wider buffer)
            const size_t q_bs = (size_t)c.Tq * C + (strided ? 7 : 0);
            const size_t k_bs = (size_t)c.Tk * C + (strided ? 11 : 0);
            auto q = both(randf(q_bs * c.B, -2.0f, 2.0f));
            auto k = both(randf(k_bs * c.B, -2.0f, 2.0f));
            Pair<int32_t> mask;
            if (c.mask) mask = both(make_mask(rng, c));
            const size_t np = (size_t)c.B * c.H * c.Tq * c.Tk;
            auto probs = both(randf(np, 5.0f, 6.0f)); // overwritten
            const float scale = 1.0f / std::sqrt((float)c.D);
            ASSERT_EQ(cpu->ops->attn_probs(cpu, probs.c, q.c, q_bs, k.c, k_bs, mask.c, c.B, c.Tq,
                                           c.Tk, c.H, c.D, scale),
                      CVENE_OK);
            ASSERT_EQ(gpu->ops->attn_probs(gpu, probs.g, q.g, q_bs, k.g, k_bs, mask.g, c.B, c.Tq,
                                           c.Tk, c.H, c.D, scale),
                      CVENE_OK)
                << msg(gpu);
            const std::string what = "attn_probs " + tag({{"B", c.B},
                                                          {"H", c.H},
                                                          {"Tq", c.Tq},
                                                          {"Tk", c.Tk},
                                                          {"D", c.D},
                                                          {"mask", c.mask},
                                                          {"strided", strided}});
            std::vector<float> hc = download(cpu, probs.c, np), hg = download(gpu, probs.g, np);
            expect_close_host(hc, hg, what);
            if (c.mask == 2) { // batch 0 is fully masked: the CUDA rows must be exactly zero
                const size_t n0 = (size_t)c.H * c.Tq * c.Tk;
                for (size_t i = 0; i < n0; i++) ASSERT_EQ(hg[i], 0.0f) << what << " index " << i;
            }
        }
}

TEST_F(CudaOps, AttnApply) {
    for (const AttnCase &c : kAttnCases)
        for (int strided : {0, 1}) {
            const int C = c.H * c.D;
            const size_t v_bs = (size_t)c.Tk * C + (strided ? 13 : 0);
            const size_t np = (size_t)c.B * c.H * c.Tq * c.Tk;
            // probabilities with exact zeros (masked / causal keys) and an all-zero row
            std::vector<float> p = randf(np, 0.0f, 1.0f);
            std::bernoulli_distribution zero(0.3);
            for (auto &x : p)
                if (zero(rng)) x = 0.0f;
            for (int j = 0; j < c.Tk; j++) p[j] = 0.0f; // row (0, 0, 0)
            auto probs = both(p);
            auto v = both(randf(v_bs * c.B));
            const size_t no = (size_t)c.B * c.Tq * C;
            auto out = both(randf(no, 50.0f, 60.0f)); // overwritten
            ASSERT_EQ(cpu->ops->attn_apply(cpu, out.c, probs.c, v.c, v_bs, c.B, c.Tq, c.Tk, c.H,
                                           c.D),
                      CVENE_OK);
            ASSERT_EQ(gpu->ops->attn_apply(gpu, out.g, probs.g, v.g, v_bs, c.B, c.Tq, c.Tk, c.H,
                                           c.D),
                      CVENE_OK)
                << msg(gpu);
            expect_close(out.c, out.g, no,
                         "attn_apply " + tag({{"B", c.B},
                                              {"H", c.H},
                                              {"Tq", c.Tq},
                                              {"Tk", c.Tk},
                                              {"D", c.D},
                                              {"strided", strided}}));
        }
}

TEST_F(CudaOps, Activation) {
    for (cvene_act act : {CVENE_GELU_TANH, CVENE_GELU_ERF, CVENE_ACT_RELU, CVENE_ACT_SIGMOID, CVENE_ACT_TANH})
        for (size_t n : {size_t(1), size_t(7), size_t(33), size_t(1000), size_t(100003)}) {
            auto x = both(randf(n, -6.0f, 6.0f));
            ASSERT_EQ(cpu->ops->activation(cpu, x.c, n, act), CVENE_OK);
            ASSERT_EQ(gpu->ops->activation(gpu, x.g, n, act), CVENE_OK) << msg(gpu);
            expect_close(x.c, x.g, n, "activation " + tag({{"act", (long long)act}, {"n", (long long)n}}));
        }
}

TEST_F(CudaOps, Softmax) {
    for (int N : {1, 7, 33})
        for (int C : {1, 5, 48, 130, 1000, 5003}) {
            std::vector<float> h = randf((size_t)N * C, -8.0f, 8.0f);
            h[0] = 80.0f; // a large logit: needs the max subtraction
            auto x = both(h);
            ASSERT_EQ(cpu->ops->softmax(cpu, x.c, N, C), CVENE_OK);
            ASSERT_EQ(gpu->ops->softmax(gpu, x.g, N, C), CVENE_OK) << msg(gpu);
            expect_close(x.c, x.g, (size_t)N * C, "softmax " + tag({{"N", N}, {"C", C}}));
        }
}

TEST_F(CudaOps, ResidualAdd) {
    for (size_t n : {size_t(1), size_t(7), size_t(33), size_t(130), size_t(1000003)}) {
        auto x = both(randf(n));
        auto y = both(randf(n));
        ASSERT_EQ(cpu->ops->residual_add(cpu, x.c, y.c, n), CVENE_OK);
        ASSERT_EQ(gpu->ops->residual_add(gpu, x.g, y.g, n), CVENE_OK) << msg(gpu);
        expect_close(x.c, x.g, n, "residual_add " + tag({{"n", (long long)n}}));
    }
}

// GRU steps (models/gru.c), out of place and in place on each operand.
TEST_F(CudaOps, GruPointwise) {
    for (cvene_gru_step step : {CVENE_GRU_NEW_GATE_IN, CVENE_GRU_HIDDEN})
        for (size_t n : {size_t(1), size_t(7), size_t(48), size_t(1000), size_t(100003)})
            for (int alias = 0; alias < 4; alias++) { // 0: separate out; 1..3: out = a, b, c
                auto a = both(randf(n, step == CVENE_GRU_HIDDEN ? 0.0f : -3.0f, step == CVENE_GRU_HIDDEN ? 1.0f : 3.0f));
                auto b = both(randf(n, -3.0f, 3.0f));
                auto c = both(randf(n, -3.0f, 3.0f));
                auto o = both(randf(n, 10.0f, 11.0f));
                Pair<float> out = alias == 1 ? a : alias == 2 ? b : alias == 3 ? c : o;
                ASSERT_EQ(cpu->ops->gru_pointwise(cpu, out.c, a.c, b.c, c.c, n, step), CVENE_OK);
                ASSERT_EQ(gpu->ops->gru_pointwise(gpu, out.g, a.g, b.g, c.g, n, step), CVENE_OK) << msg(gpu);
                expect_close(out.c, out.g, n,
                             "gru_pointwise " + tag({{"step", (long long)step}, {"n", (long long)n}, {"alias", alias}}));
            }
    EXPECT_EQ(gpu->ops->gru_pointwise(gpu, nullptr, nullptr, nullptr, nullptr, 0, (cvene_gru_step)7),
              CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(msg(gpu)).find("unknown step"), std::string::npos) << msg(gpu);
}

TEST_F(CudaOps, PermuteHeads) {
    const int shapes[][4] = {{1, 1, 1, 1}, {2, 7, 3, 5}, {3, 33, 4, 48}, {1, 5, 12, 64}};
    for (const auto &s : shapes)
        for (int to_heads : {1, 0}) {
            const int B = s[0], T = s[1], H = s[2], D = s[3];
            const size_t n = (size_t)B * T * H * D;
            auto src = both(randf(n));
            auto dst = both(randf(n, 10.0f, 11.0f)); // overwritten
            ASSERT_EQ(cpu->ops->permute_heads(cpu, dst.c, src.c, B, T, H, D, to_heads), CVENE_OK);
            ASSERT_EQ(gpu->ops->permute_heads(gpu, dst.g, src.g, B, T, H, D, to_heads), CVENE_OK)
                << msg(gpu);
            expect_close(dst.c, dst.g, n,
                         "permute_heads " +
                             tag({{"B", B}, {"T", T}, {"H", H}, {"D", D}, {"to_heads", to_heads}}));
        }
}

TEST_F(CudaOps, Rotary) {
    // rot_dims from none to the whole head, default and explicit positions (large ones too:
    // angles up to ~5000 rad stress the f32 sin/cos argument reduction), and a row stride
    // wider than H*D (a slice of a fused buffer) whose extra columns must stay untouched.
    for (int B : {1, 3})
        for (int T : {1, 7, 33})
            for (int HD : {0, 1}) {
                const int H = HD ? 5 : 2, D = HD ? 16 : 8;
                for (int rot : {0, 2, D / 2, D})
                    for (int with_pos : {0, 1})
                        for (int pad : {0, 3}) {
                            const int ld = H * D + pad;
                            const size_t n = (size_t)B * T * ld;
                            auto x = both(randf(n, -2.0f, 2.0f));
                            Pair<int32_t> pos;
                            if (with_pos) pos = both(randi((size_t)B * T, 0, 5000));
                            const float base = rot == 2 ? 500.0f : 10000.0f;
                            ASSERT_EQ(cpu->ops->rotary(cpu, x.c, ld, pos.c, B, T, H, D, rot, base), CVENE_OK);
                            ASSERT_EQ(gpu->ops->rotary(gpu, x.g, ld, pos.g, B, T, H, D, rot, base), CVENE_OK)
                                << msg(gpu);
                            expect_close(x.c, x.g, n,
                                         "rotary " + tag({{"B", B}, {"T", T}, {"H", H}, {"D", D}, {"rot", rot},
                                                          {"pos", with_pos}, {"pad", pad}}));
                        }
            }
}

// A small attention block end to end on both backends (ops chained on the CUDA stream
// without intermediate syncs), to catch ordering mistakes between ops.
TEST_F(CudaOps, ChainedAttentionBlock) {
    const int B = 2, T = 9, H = 3, D = 8, C = H * D;
    const size_t N = (size_t)B * T;
    auto x = both(randf(N * C));
    auto lw = both(randf(C, 0.5f, 1.5f));
    auto lb = both(randf(C));
    auto wqkv = both(randf((size_t)C * 3 * C, -0.3f, 0.3f)); // (C, 3C) Conv1D layout
    auto bqkv = both(randf(3 * C));
    std::vector<int32_t> m(N, 1);
    m[0] = m[1] = 0; // left padding on batch 0
    auto mask = both(m);
    auto h = both(std::vector<float>(N * C));
    auto q = both(std::vector<float>(N * C));
    auto k = both(std::vector<float>(N * C));
    auto v = both(std::vector<float>(N * C));
    auto p = both(std::vector<float>((size_t)B * H * T * T));
    auto o = both(std::vector<float>(N * C));
    auto oh = both(std::vector<float>(N * C));
    for (cvene_backend *be : {cpu, gpu}) {
        const bool g = be == gpu;
        auto pick = [g](const Pair<float> &pr) { return g ? pr.g : pr.c; };
        ASSERT_EQ(be->ops->layernorm(be, pick(h), pick(x), pick(lw), pick(lb), (int)N, C, 1e-5f),
                  CVENE_OK);
        // q, k, v as column slices of the fused (C, 3C) weight
        ASSERT_EQ(be->ops->matmul(be, pick(q), pick(h), pick(wqkv), 3 * C, 0, pick(bqkv), (int)N,
                                  C, C),
                  CVENE_OK);
        ASSERT_EQ(be->ops->matmul(be, pick(k), pick(h), pick(wqkv) + C, 3 * C, 0, pick(bqkv) + C,
                                  (int)N, C, C),
                  CVENE_OK);
        ASSERT_EQ(be->ops->matmul(be, pick(v), pick(h), pick(wqkv) + 2 * C, 3 * C, 0,
                                  pick(bqkv) + 2 * C, (int)N, C, C),
                  CVENE_OK);
        ASSERT_EQ(be->ops->attn_probs(be, pick(p), pick(q), (size_t)T * C, pick(k), (size_t)T * C,
                                      g ? mask.g : mask.c, B, T, T, H, D, 1.0f / std::sqrt((float)D)),
                  CVENE_OK);
        ASSERT_EQ(be->ops->attn_apply(be, pick(o), pick(p), pick(v), (size_t)T * C, B, T, T, H, D),
                  CVENE_OK);
        ASSERT_EQ(be->ops->activation(be, pick(o), N * C, CVENE_GELU_TANH), CVENE_OK);
        ASSERT_EQ(be->ops->residual_add(be, pick(o), pick(x), N * C), CVENE_OK);
        ASSERT_EQ(be->ops->permute_heads(be, pick(oh), pick(o), B, T, H, D, 1), CVENE_OK);
    }
    expect_close(p.c, p.g, (size_t)B * H * T * T, "chained probs");
    expect_close(oh.c, oh.g, N * C, "chained output");
}

// iv_units: the same units (scattered offsets, padded strides, per-unit subspaces, a
// broadcast source) on both backends, every op; the ops only copy or add/subtract once,
// so the whole buffers (gaps included) must agree bit for bit.
TEST_F(CudaOps, IvUnits) {
    for (int op = CVENE_IVOP_VANILLA; op <= CVENE_IVOP_COLLECT; op++)
        for (int D : {1, 5, 64, 1031, 4100})
            for (int R : {1, 3})
                for (int variant = 0; variant < 3; variant++) {
                    // 0: packed rows, all dims; 1: padded strides, subspaces; 2: broadcast source row
                    if (variant == 2 && op == CVENE_IVOP_COLLECT) continue;
                    const int n = variant == 1 ? 7 : 4;
                    const int64_t x_rs = variant == 1 ? D + 3 : D;
                    const int64_t src_rs = variant == 2 ? 0 : variant == 1 ? D + 1 : D;
                    const int64_t xslot = R * x_rs + 4, sslot = src_rs ? R * src_rs + 4 : 0;
                    std::vector<int> perm(n);
                    for (int i = 0; i < n; i++) perm[i] = n - 1 - i; // offsets not monotonic in u
                    std::vector<int64_t> x_off(n), src_off(n), dims_off(n);
                    std::vector<int32_t> dims, dims_n(n, -1);
                    for (int u = 0; u < n; u++) {
                        x_off[u] = perm[u] * xslot + (u & 1);  // odd offsets: the scalar path
                        src_off[u] = src_rs ? u * sslot + 4 * (u % 2) : 0;
                        dims_off[u] = (int64_t)dims.size();
                        if (variant == 1 && u % 3 != 2) {
                            std::vector<int32_t> all(D);
                            for (int d = 0; d < D; d++) all[d] = d;
                            std::shuffle(all.begin(), all.end(), rng);
                            int m = std::uniform_int_distribution<int>(0, D)(rng);
                            dims.insert(dims.end(), all.begin(), all.begin() + m);
                            dims_n[u] = m;
                        }
                    }
                    const size_t nx = (size_t)(n * xslot + 2), ns = src_rs ? (size_t)(n * sslot + 8) : (size_t)D + 8;
                    auto x = both(randf(nx));
                    auto src = both(op == CVENE_IVOP_COLLECT ? std::vector<float>(ns, -7.0f) : randf(ns));
                    auto xo = both(x_off);
                    auto so = both(src_off);
                    auto dm = both(dims.empty() ? std::vector<int32_t>{0} : dims);
                    auto doff = both(dims_off);
                    auto dn = both(dims_n);
                    const bool sub = variant == 1;
                    for (cvene_backend *be : {cpu, gpu}) {
                        const bool g = be == gpu;
                        ASSERT_EQ(be->ops->iv_units(be, g ? x.g : x.c, g ? xo.g : xo.c, x_rs,
                                                    op == CVENE_IVOP_ZERO ? nullptr : (g ? src.g : src.c),
                                                    g ? so.g : so.c, src_rs, g ? dm.g : dm.c, g ? doff.g : doff.c,
                                                    sub ? (g ? dn.g : dn.c) : nullptr, n, R, D, op),
                                  CVENE_OK)
                            << msg(be);
                    }
                    const std::string t = "iv_units " + tag({{"op", op}, {"D", D}, {"R", R}, {"variant", variant}});
                    std::vector<float> cx = download(cpu, x.c, nx), gx = download(gpu, x.g, nx);
                    std::vector<float> cs = download(cpu, src.c, ns), gs = download(gpu, src.g, ns);
                    EXPECT_EQ(std::memcmp(cx.data(), gx.data(), nx * sizeof(float)), 0) << t << " (x)";
                    EXPECT_EQ(std::memcmp(cs.data(), gs.data(), ns * sizeof(float)), 0) << t << " (src)";
                }
}

// ---- iv_rotated -------------------------------------------------------------------------
// iv_rotated (and the low-rank transpose form) against the CPU reference on fresh random
// inputs; f32 accumulation in different orders, so the usual 1e-5 relative tolerance. W has
// entries of variance 1 / D (rows of norm ~1, as a rotation's), so x stays O(1) while a
// misplaced projection still moves x by ~1e-2 or more. Whole buffers are compared, so the
// gaps between scattered vectors must stay untouched.
// Paths of kernels/cuda/iv_rotated.cu on an H100 / H200 (227 KB of opt-in shared memory per
// block, 114-132 SMs), by size:
//   IvRotated (W resident in shared memory): every (D, k) there except D = 9000 with k = 13;
//     float4 chunks per thread C = 1 (D <= 768), 2 (D = 2500), 4 (D = 4099), 8 (D = 9000);
//     vectors per pass V = 4 (n = 2003, and D = 4096 with n = 600: the bench's shape, two
//     groups per block), 2 (n = 301), 1 (n = 1, 5); n = 2003 and 301 leave a partial last
//     group. D = 9000, k = 13 (469 KB of W) takes the larger-k paths.
//   IvRotatedEveryKBothKernels: k = 2..8 at D = 2048 .. 4096 with n = 300: W in registers
//     (k_rot_wreg), and with CVENE_IV_ROTATED=smem W in shared memory (k_rot_pipe); also
//     taken by IvRotated's D = 2500, n = 301, k = 4 and D = 4096, n = 600, k = 8.
//   IvRotatedLargeK: cuBLAS for NULL offsets, the kernel reading W from L2 for scattered
//     vectors (W^T transposed into the backend's scratch first when trans = 1), with one or
//     four vectors per block (n >= 1024); D = 20000 (over 8 chunks per thread at 512 threads)
//     with a small k takes them too.
// Offsets: NULL (contiguous: every vector 16-byte aligned only when D % 4 == 0), scattered on
// 16-byte boundaries (float4 loads and stores), scattered with offsets 0..3 (mod 4) in x and
// s independently (scalar and mixed loads); with the latter W starts one float into its
// buffer (the scalar copies of W into shared memory).

// x (n vectors per `mode`) and s for one case: mode 0 NULL offsets, 1 scattered aligned
// (reverse order for x), 2 scattered misaligned. Returns the buffer length in floats.
size_t rot_layout(int n, int D, int mode, std::vector<int64_t> &xo, std::vector<int64_t> &so) {
    xo.clear(), so.clear();
    if (mode == 0) return (size_t)n * D;
    const int64_t slot = mode == 1 ? ((int64_t)D + 3) / 4 * 4 + 4 : (int64_t)D + 5;
    for (int i = 0; i < n; i++) {
        xo.push_back((int64_t)(n - 1 - i) * slot + (mode == 2 ? i % 4 : 0));
        so.push_back((int64_t)i * slot + (mode == 2 ? (i / 4 + 1) % 4 : 0));
    }
    return (size_t)n * slot + 4;
}

// One backend runs iv_rotated on its own copies (freed before returning, so a long sweep of
// sizes does not pile up buffers); returns the whole x buffer, or nothing with *err set.
// alias: s is x and s_off is x_off (a no-op by the contract). W is hW from float w_off on.
std::vector<float> rot_run(cvene_backend *be, const std::vector<float> &hx, const std::vector<float> &hs,
                           const std::vector<float> &hW, int w_off, const std::vector<int64_t> &xo,
                           const std::vector<int64_t> &so, int n, int D, int k, int trans, bool alias, std::string *err) {
    std::vector<void *> bufs;
    auto up = [&](const void *h, size_t nbytes) -> void * {
        void *p = nullptr;
        if (be->ops->alloc(be, &p, std::max<size_t>(nbytes, 4)) != CVENE_OK) return nullptr;
        bufs.push_back(p);
        if (nbytes && be->ops->to_device(be, p, h, nbytes) != CVENE_OK) return nullptr;
        return p;
    };
    float *x = static_cast<float *>(up(hx.data(), hx.size() * sizeof(float)));
    float *s = alias ? x : static_cast<float *>(up(hs.data(), hs.size() * sizeof(float)));
    float *W = static_cast<float *>(up(hW.data(), hW.size() * sizeof(float)));
    int64_t *dxo = xo.empty() ? nullptr : static_cast<int64_t *>(up(xo.data(), xo.size() * sizeof(int64_t)));
    int64_t *dso = alias ? dxo : so.empty() ? nullptr : static_cast<int64_t *>(up(so.data(), so.size() * sizeof(int64_t)));
    std::vector<float> out;
    if (!x || !s || !W || (!xo.empty() && !dxo) || (!alias && !so.empty() && !dso)) {
        *err = std::string("alloc / upload failed: ") + (be->err ? be->err : "");
    } else if (be->ops->iv_rotated(be, x, dxo, s, dso, W + w_off, n, D, k, trans) != CVENE_OK) {
        *err = std::string("iv_rotated failed: ") + (be->err ? be->err : "");
    } else {
        out.resize(hx.size());
        if (be->ops->to_host(be, out.data(), x, hx.size() * sizeof(float)) != CVENE_OK) { // syncs: kernel faults show here
            out.clear();
            *err = std::string("to_host failed: ") + (be->err ? be->err : "");
        }
    }
    for (void *p : bufs) be->ops->free(be, p);
    return out;
}

// ---- the ops on 16-bit activations (cvene_ops16), CUDA vs the CPU oracle ---------------
// Inputs are random f32 rounded to dt. Tolerance (tests/ulp16.h): 1 ulp of dt at the CPU's value
// plus 1e-5 * max(1, max |cpu|) - both sides round one f32 result once, and their f32 results
// differ by the noise the f32 comparisons allow; tests/test_ops16.cpp checks the CPU side
// against torch the same way. Moves and conversions: exact.

const cvene_dtype kDts16[] = {CVENE_BF16, CVENE_F16};

std::vector<uint16_t> to16(const std::vector<float> &f, cvene_dtype dt) {
    std::vector<uint16_t> h(f.size());
    cvene_f32_to_half_array(h.data(), f.data(), f.size(), dt);
    return h;
}

#define O16(be) ((be)->ops->ops16)

TEST_F(CudaOps, Ops16RowOpsAtOddSizes) {
    for (cvene_dtype dt : kDts16)
        for (int N : {1, 5, 33})
            for (int C : {1, 37, 257, 1031}) {
                const size_t n = (size_t)N * C;
                const std::string t = tag({{"N", N}, {"C", C}});
                auto w = both(randf(C, 0.5f, 1.5f)), b = both(randf(C));
                auto x = both(to16(randf(n, -3.0f, 3.0f), dt)), y = both(to16(randf(n), dt));
                auto out = both(std::vector<uint16_t>(n, 0));
                ASSERT_EQ(O16(cpu)->layernorm(cpu, dt, out.c, x.c, w.c, b.c, N, C, 1e-5f), CVENE_OK) << msg(cpu);
                ASSERT_EQ(O16(gpu)->layernorm(gpu, dt, out.g, x.g, w.g, b.g, N, C, 1e-5f), CVENE_OK) << msg(gpu);
                expect_ulp16(download(cpu, out.c, n), download(gpu, out.g, n), dt, "layernorm " + t);
                ASSERT_EQ(O16(cpu)->residual_layernorm(cpu, dt, x.c, y.c, out.c, w.c, b.c, N, C, 1e-5f), CVENE_OK);
                ASSERT_EQ(O16(gpu)->residual_layernorm(gpu, dt, x.g, y.g, out.g, w.g, b.g, N, C, 1e-5f), CVENE_OK)
                    << msg(gpu);
                expect_ulp16(download(cpu, x.c, n), download(gpu, x.g, n), dt, "residual_layernorm x " + t);
                expect_ulp16(download(cpu, out.c, n), download(gpu, out.g, n), dt, "residual_layernorm out " + t);
                auto sm = both(to16(randf(n, -6.0f, 6.0f), dt));
                ASSERT_EQ(O16(cpu)->softmax(cpu, dt, sm.c, N, C), CVENE_OK);
                ASSERT_EQ(O16(gpu)->softmax(gpu, dt, sm.g, N, C), CVENE_OK) << msg(gpu);
                expect_ulp16(download(cpu, sm.c, n), download(gpu, sm.g, n), dt, "softmax " + t);
            }
}

TEST_F(CudaOps, Ops16AttentionAtOddSizes) {
    for (cvene_dtype dt : kDts16)
        for (const AttnCase &c : kAttnCases) {
            const int C = c.H * c.D;
            const size_t q_bs = (size_t)c.Tq * C + 7, k_bs = (size_t)c.Tk * C + 11, v_bs = (size_t)c.Tk * C + 13;
            auto q = both(to16(randf(q_bs * c.B, -2.0f, 2.0f), dt)), k = both(to16(randf(k_bs * c.B, -2.0f, 2.0f), dt));
            auto v = both(to16(randf(v_bs * c.B), dt));
            Pair<int32_t> mask;
            if (c.mask) mask = both(make_mask(rng, c));
            const size_t np = (size_t)c.B * c.H * c.Tq * c.Tk, no = (size_t)c.B * c.Tq * C;
            auto probs = both(std::vector<uint16_t>(np, 0x7fc1)), out = both(std::vector<uint16_t>(no, 0x7fc1));
            const float scale = 1.0f / std::sqrt((float)c.D);
            const std::string t = tag({{"B", c.B}, {"H", c.H}, {"Tq", c.Tq}, {"Tk", c.Tk}, {"D", c.D}, {"mask", c.mask}});
            ASSERT_EQ(O16(cpu)->attn_probs(cpu, dt, probs.c, q.c, q_bs, k.c, k_bs, mask.c, c.B, c.Tq, c.Tk, c.H, c.D,
                                           scale),
                      CVENE_OK);
            ASSERT_EQ(O16(gpu)->attn_probs(gpu, dt, probs.g, q.g, q_bs, k.g, k_bs, mask.g, c.B, c.Tq, c.Tk, c.H, c.D,
                                           scale),
                      CVENE_OK)
                << msg(gpu);
            const std::vector<uint16_t> pc = download(cpu, probs.c, np);
            expect_ulp16(pc, download(gpu, probs.g, np), dt, "attn_probs " + t);
            // both apply the CPU's probabilities, so attn_apply is checked on its own
            auto pin = both(pc);
            ASSERT_EQ(O16(cpu)->attn_apply(cpu, dt, out.c, pin.c, v.c, v_bs, c.B, c.Tq, c.Tk, c.H, c.D), CVENE_OK);
            ASSERT_EQ(O16(gpu)->attn_apply(gpu, dt, out.g, pin.g, v.g, v_bs, c.B, c.Tq, c.Tk, c.H, c.D), CVENE_OK)
                << msg(gpu);
            expect_ulp16(download(cpu, out.c, no), download(gpu, out.g, no), dt, "attn_apply " + t);
        }
}

TEST_F(CudaOps, Ops16MatmulActAtOddSizes) {
    struct Shape { int M, K, N; };
    // odd shapes (cuBLASLt may refuse their alignment: the GemmEx path), aligned ones (the
    // cuBLASLt path), K = 0 (bias only) and 1-wide dimensions
    const Shape shapes[] = {{1, 1, 1}, {7, 33, 17}, {3, 1, 5}, {64, 128, 96}, {5, 0, 9}, {33, 256, 40}};
    for (cvene_dtype dt : kDts16)
        for (const Shape &sh : shapes)
            for (int trans : {0, 1})
                for (int with_bias : {0, 1})
                    for (cvene_act act : {CVENE_ACT_NONE, CVENE_GELU_TANH, CVENE_GELU_ERF}) {
                        const int ldw = trans ? sh.K : sh.N;
                        auto x = both(to16(randf((size_t)sh.M * sh.K), dt));
                        auto w = both(to16(randf((size_t)sh.K * sh.N, -0.5f, 0.5f), dt));
                        Pair<float> bias;
                        if (with_bias) bias = both(randf(sh.N));
                        const size_t n = (size_t)sh.M * sh.N;
                        auto out = both(std::vector<uint16_t>(n, 0x7fc1));
                        const std::string t = tag({{"M", sh.M}, {"K", sh.K}, {"N", sh.N}, {"trans", trans},
                                                   {"bias", with_bias}, {"act", (long long)act}});
                        ASSERT_EQ(O16(cpu)->matmul_act(cpu, dt, out.c, x.c, w.c, ldw, trans, bias.c, sh.M, sh.K,
                                                       sh.N, act),
                                  CVENE_OK)
                            << msg(cpu);
                        ASSERT_EQ(O16(gpu)->matmul_act(gpu, dt, out.g, x.g, w.g, ldw, trans, bias.g, sh.M, sh.K,
                                                       sh.N, act),
                                  CVENE_OK)
                            << msg(gpu);
                        expect_ulp16(download(cpu, out.c, n), download(gpu, out.g, n), dt, "matmul_act " + t);
                    }
}

TEST_F(CudaOps, Ops16ElementwiseAtOddSizes) {
    for (cvene_dtype dt : kDts16) {
        for (size_t n : {size_t(1), size_t(1000), size_t(65537)}) {
            const std::string t = tag({{"n", (long long)n}});
            auto x = both(to16(randf(n, -4.0f, 4.0f), dt)), y = both(to16(randf(n), dt));
            ASSERT_EQ(O16(cpu)->residual_add(cpu, dt, x.c, y.c, n), CVENE_OK);
            ASSERT_EQ(O16(gpu)->residual_add(gpu, dt, x.g, y.g, n), CVENE_OK) << msg(gpu);
            expect_ulp16(download(cpu, x.c, n), download(gpu, x.g, n), dt, "residual_add " + t);
            for (cvene_act act : {CVENE_GELU_TANH, CVENE_GELU_ERF, CVENE_ACT_RELU, CVENE_ACT_SIGMOID, CVENE_ACT_TANH}) {
                auto a = both(to16(randf(n, -8.0f, 8.0f), dt));
                ASSERT_EQ(O16(cpu)->activation(cpu, dt, a.c, n, act), CVENE_OK);
                ASSERT_EQ(O16(gpu)->activation(gpu, dt, a.g, n, act), CVENE_OK) << msg(gpu);
                expect_ulp16(download(cpu, a.c, n), download(gpu, a.g, n), dt,
                             "activation " + t + tag({{"act", (long long)act}}));
            }
            for (cvene_gru_step step : {CVENE_GRU_NEW_GATE_IN, CVENE_GRU_HIDDEN}) {
                auto a = both(to16(randf(n, 0.0f, 1.0f), dt)), b = both(to16(randf(n), dt));
                auto c = both(to16(randf(n), dt)), o = both(std::vector<uint16_t>(n, 0));
                ASSERT_EQ(O16(cpu)->gru_pointwise(cpu, dt, o.c, a.c, b.c, c.c, n, step), CVENE_OK);
                ASSERT_EQ(O16(gpu)->gru_pointwise(gpu, dt, o.g, a.g, b.g, c.g, n, step), CVENE_OK) << msg(gpu);
                expect_ulp16(download(cpu, o.c, n), download(gpu, o.g, n), dt,
                             "gru_pointwise " + t + tag({{"step", (long long)step}}));
            }
            // f32 -> dt (values beyond f16's range, subnormals) and dt -> f32, exact
            std::vector<float> f = randf(n, -80000.0f, 80000.0f);
            for (size_t i = 0; i < n; i += 3) f[i] *= 1e-9f;
            auto src = both(f);
            auto h = both(std::vector<uint16_t>(n, 0));
            ASSERT_EQ(O16(cpu)->convert(cpu, h.c, dt, src.c, CVENE_F32, n), CVENE_OK);
            ASSERT_EQ(O16(gpu)->convert(gpu, h.g, dt, src.g, CVENE_F32, n), CVENE_OK) << msg(gpu);
            expect_ulp16(download(cpu, h.c, n), download(gpu, h.g, n), dt, "convert to 16 " + t, 0);
            auto back = both(std::vector<float>(n, 0.0f));
            ASSERT_EQ(O16(gpu)->convert(gpu, back.g, CVENE_F32, h.g, dt, n), CVENE_OK) << msg(gpu);
            ASSERT_EQ(O16(cpu)->convert(cpu, back.c, CVENE_F32, h.c, dt, n), CVENE_OK);
            const std::vector<float> bc = download(cpu, back.c, n), bg = download(gpu, back.g, n);
            EXPECT_EQ(std::memcmp(bc.data(), bg.data(), n * sizeof(float)), 0) << "convert to f32 " << t;
        }
        // embedding, rotary (a row stride wider than H*D), permute_heads
        for (int B : {1, 3})
            for (int T : {1, 7}) {
                const int C = 37, V = 20, P = 16, H = 3, D = 10, ld = H * D + 3;
                const std::string t = tag({{"B", B}, {"T", T}});
                auto wte = both(randf((size_t)V * C)), wpe = both(randf((size_t)P * C));
                auto ids = both(randi((size_t)B * T, 0, V - 1)), pos = both(randi((size_t)B * T, 0, P - 1));
                const size_t ne = (size_t)B * T * C;
                auto e = both(std::vector<uint16_t>(ne, 0));
                ASSERT_EQ(O16(cpu)->embedding(cpu, dt, e.c, ids.c, pos.c, wte.c, wpe.c, B, T, C), CVENE_OK);
                ASSERT_EQ(O16(gpu)->embedding(gpu, dt, e.g, ids.g, pos.g, wte.g, wpe.g, B, T, C), CVENE_OK)
                    << msg(gpu);
                expect_ulp16(download(cpu, e.c, ne), download(gpu, e.g, ne), dt, "embedding " + t, 0);
                const size_t nr = (size_t)B * T * ld;
                for (int rot : {2, 6, D}) {
                    auto x = both(to16(randf(nr, -2.0f, 2.0f), dt));
                    auto rp = both(randi((size_t)B * T, 0, 3000));
                    ASSERT_EQ(O16(cpu)->rotary(cpu, dt, x.c, ld, rp.c, B, T, H, D, rot, 10000.0f), CVENE_OK);
                    ASSERT_EQ(O16(gpu)->rotary(gpu, dt, x.g, ld, rp.g, B, T, H, D, rot, 10000.0f), CVENE_OK)
                        << msg(gpu);
                    expect_ulp16(download(cpu, x.c, nr), download(gpu, x.g, nr), dt,
                                 "rotary " + t + tag({{"rot", rot}}));
                }
                const size_t np = (size_t)B * T * H * D;
                auto src = both(to16(randf(np), dt));
                for (int to_heads : {0, 1}) {
                    auto d = both(std::vector<uint16_t>(np, 0));
                    ASSERT_EQ(O16(cpu)->permute_heads(cpu, dt, d.c, src.c, B, T, H, D, to_heads), CVENE_OK);
                    ASSERT_EQ(O16(gpu)->permute_heads(gpu, dt, d.g, src.g, B, T, H, D, to_heads), CVENE_OK)
                        << msg(gpu);
                    expect_ulp16(download(cpu, d.c, np), download(gpu, d.g, np), dt,
                                 "permute_heads " + t + tag({{"to_heads", to_heads}}), 0);
                }
            }
    }
}
#undef O16


class CudaOpsRotated : public CudaOps {
  protected:
    // both backends on the same inputs, then compare x
    void check(const std::vector<float> &hx, const std::vector<float> &hs, const std::vector<float> &hW, int w_off,
               const std::vector<int64_t> &xo, const std::vector<int64_t> &so, int n, int D, int k, int trans,
               bool alias, const std::string &what) {
        std::string ce, ge;
        const std::vector<float> c = rot_run(cpu, hx, hs, hW, w_off, xo, so, n, D, k, trans, alias, &ce);
        const std::vector<float> g = rot_run(gpu, hx, hs, hW, w_off, xo, so, n, D, k, trans, alias, &ge);
        ASSERT_FALSE(c.empty()) << what << ": cpu: " << ce;
        ASSERT_FALSE(g.empty()) << what << ": cuda: " << ge;
        expect_close_host(c, g, what);
    }
    // s == x (same buffer, same offsets): a no-op; W entries uniform in [-w, w]
    void no_op(int n, int D, int k, int trans, int mode, float w, const std::string &what) {
        std::vector<int64_t> xo, so;
        const std::vector<float> hx = randf(rot_layout(n, D, mode, xo, so));
        const std::vector<float> hW = randf((size_t)k * D, -w, w);
        check(hx, hx, hW, 0, xo, xo, n, D, k, trans, true, what + " " + tag({{"offsets", mode}}));
    }
    // every trans and k of ks for (D, n, mode), fresh x, s and W
    void sweep(int D, int n, int mode, std::initializer_list<int> ks) {
        std::vector<int64_t> xo, so;
        const size_t nb = rot_layout(n, D, mode, xo, so);
        const std::vector<float> hx = randf(nb), hs = randf(nb);
        const float a = std::sqrt(3.0f / (float)D); // uniform [-a, a]: variance 1 / D
        const int w_off = mode == 2;
        for (int k : ks) {
            const std::vector<float> hW = randf((size_t)k * D + w_off, -a, a);
            for (int trans : {0, 1})
                check(hx, hs, hW, w_off, xo, so, n, D, k, trans, false,
                      "iv_rotated " + tag({{"D", D}, {"k", k}, {"n", n}, {"trans", trans}, {"offsets", mode}}));
        }
    }
};

TEST_F(CudaOpsRotated, IvRotated) {
    for (int D : {1, 3, 97, 768, 2500, 4099, 9000})
        for (int n : {1, 5, 301, 2003}) {
            if (D > 768 && n > 301) continue; // keeps the CPU reference quick
            for (int mode : {0, 1, 2}) sweep(D, n, mode, {1, 4, 13});
        }
    for (int mode : {0, 1, 2}) sweep(4096, 600, mode, {1, 8});
    for (int mode : {0, 2}) no_op(301, 768, 4, 1, mode, 0.0625f, "iv_rotated s == x");
}

// k = 2..8 at one block per SM (D > 1024 at 512 threads: 128 registers each fill an SM) with
// n >= 2 x the SMs: W held in registers with a deep cp.async ring (k_rot_wreg), then the same
// cases with CVENE_IV_ROTATED=smem, which keeps W in shared memory (k_rot_pipe). D = 4093: the
// last chunk is partial; offsets aligned, misaligned (scalar copies) and NULL.
TEST_F(CudaOpsRotated, IvRotatedEveryKBothKernels) {
    for (const char *kernel : {"auto", "smem"}) {
        ASSERT_EQ(setenv("CVENE_IV_ROTATED", kernel, 1), 0);
        for (int D : {2048, 4093, 4096})
            for (int mode : {0, 1, 2}) sweep(D, 300, mode, {2, 3, 4, 5, 6, 7, 8});
        no_op(300, 4096, 8, 0, 2, 0.03f, std::string("iv_rotated s == x, kernel ") + kernel);
    }
    unsetenv("CVENE_IV_ROTATED");
}

TEST_F(CudaOpsRotated, IvRotatedLargeK) {
    for (int mode : {0, 2}) {
        sweep(4096, 37, mode, {64});
        sweep(4096, 300, mode, {64});
        sweep(1000, 5, mode, {100});
        sweep(1000, 1030, mode, {100});
        sweep(20000, 3, mode, {2});
    }
    for (int mode : {0, 2}) no_op(300, 4096, 64, 0, mode, 0.027f, "iv_rotated large k, s == x");
}

} // namespace
