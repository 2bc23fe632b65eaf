// The fused ops of kernels/backend.h (residual_layernorm, matmul_act), the cuBLASLt epilogues
// of the CUDA matmul, and the forwards that use them.
//
// Built twice (tests/CMakeLists.txt):
//  - test_fused_ops (label unit): the CPU fused ops against the unfused ops they replace,
//    bit for bit (fusing must change no number), and the GPT-2 / GPT-NeoX forwards with the
//    fusions on (no site between the fused ops) against the same forwards with them off
//    (a no-op site at every block_output keeps each residual add apart from the next ln_1):
//    identical logits, bit for bit.
//  - test_fused_ops_cuda (label cuda, CVENE_TEST_CUDA=1; every test skipped without a GPU):
//    the CUDA ops against the CPU oracle within 1e-5 relative (tests/backend_pair.h), the
//    CUDA fused layernorm against the CUDA unfused pair bit for bit, the matmul paths the
//    cuBLASLt epilogues add (tests/test_cuda_ops.cpp's Matmul covers the basic sizes), and
//    the same model checks with the models on CUDA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "kernels/dtype.h"
}
#include "kernels/backend.h"
#include "test_device.h"
#include "test_util.h"
#if CVENE_TEST_CUDA
#include "backend_pair.h"
#endif

namespace {

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// ---- forwards: fused (no sites) vs unfused (a no-op site at every block_output) -------------

int noop_site(void *, cvene_component, int, cvene_tensor_view *) { return 0; }

std::vector<float> logits_of(Loaded &L, const std::vector<int32_t> &ids, const std::vector<int32_t> &mask, int B,
                             int T, bool block_sites) {
    const cvene_model_info info = cvene_model_get_info(L.model);
    std::vector<float> logits((size_t)B * T * info.vocab_size);
    cvene_run_opts o{};
    o.attention_mask = mask.data();
    o.logits = logits.data();
    if (block_sites) {
        o.site_fn = noop_site;
        o.sites[CVENE_BLOCK_OUTPUT] = (1ull << info.n_layer) - 1;
    }
    EXPECT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();
    return logits;
}

void expect_fusion_changes_nothing(const std::string &fixture) {
    const std::string dir = std::string(CVENE_FIXTURES) + "/" + fixture;
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Archive ref(dir + "/reference.safetensors");
    std::vector<int64_t> shape;
    auto ids = ref.get<int32_t>("case0.input_ids", &shape);
    auto mask = ref.get<int32_t>("case0.attention_mask");
    ASSERT_EQ(shape.size(), 2u);
    const int B = (int)shape[0], T = (int)shape[1];
    auto fused = logits_of(L, ids, mask, B, T, false);
    auto apart = logits_of(L, ids, mask, B, T, true);
    EXPECT_TRUE(same_bits(fused, apart)) << fixture << ": logits differ with the residual/ln_1 fusion on";
}

#if CVENE_TEST_CUDA
#define FUSED_MODELS FusedModelsCuda
#else
#define FUSED_MODELS FusedModels
#endif

TEST(FUSED_MODELS, Gpt2FusionChangesNoLogit) {
    CVENE_SKIP_WITHOUT_DEVICE();
    expect_fusion_changes_nothing("gpt2/small");
}
TEST(FUSED_MODELS, NeoxSequentialFusionChangesNoLogit) {
    CVENE_SKIP_WITHOUT_DEVICE();
    expect_fusion_changes_nothing("neox/seq_rot100");
}
TEST(FUSED_MODELS, NeoxParallelFusionChangesNoLogit) {
    CVENE_SKIP_WITHOUT_DEVICE();
    expect_fusion_changes_nothing("neox/par_rot25");
}

#if !CVENE_TEST_CUDA
// ---- CPU: the fused ops are the unfused ones, bit for bit ------------------------------------

struct Cpu {
    cvene_backend *be = nullptr;
    char err[256] = {0};
    Cpu() {
        be = cvene_backend_cpu_new(0, err, sizeof err);
        if (be) be->err = err, be->err_len = sizeof err;
    }
    ~Cpu() { cvene_backend_cpu_free(be); }
};

std::vector<float> randv(std::mt19937 &rng, size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

TEST(FusedCpu, ResidualLayerNormIsResidualAddThenLayerNorm) {
    Cpu cpu;
    ASSERT_NE(cpu.be, nullptr) << cpu.err;
    ASSERT_NE(cpu.be->ops->residual_layernorm, nullptr);
    std::mt19937 rng(7);
    for (int N : {1, 7, 33})
        for (int C : {1, 5, 768, 1001}) {
            const size_t n = (size_t)N * C;
            // an offset mean and a non-unit spread exercise the double statistics
            auto x = randv(rng, n, 2.0f, 5.0f), y = randv(rng, n, -1.0f, 1.0f);
            auto w = randv(rng, C, 0.5f, 1.5f), b = randv(rng, C, -1.0f, 1.0f);
            std::vector<float> x1 = x, out1(n, -7.0f), x2 = x, out2(n, 9.0f);
            ASSERT_EQ(cpu.be->ops->residual_add(cpu.be, x1.data(), y.data(), n), CVENE_OK);
            ASSERT_EQ(cpu.be->ops->layernorm(cpu.be, out1.data(), x1.data(), w.data(), b.data(), N, C, 1e-5f), CVENE_OK);
            ASSERT_EQ(cpu.be->ops->residual_layernorm(cpu.be, x2.data(), y.data(), out2.data(), w.data(), b.data(), N, C,
                                                      1e-5f),
                      CVENE_OK)
                << cpu.err;
            EXPECT_TRUE(same_bits(x1, x2)) << "x N=" << N << " C=" << C;
            EXPECT_TRUE(same_bits(out1, out2)) << "out N=" << N << " C=" << C;
        }
}

TEST(FusedCpu, MatmulActIsMatmulThenActivation) {
    Cpu cpu;
    ASSERT_NE(cpu.be, nullptr) << cpu.err;
    ASSERT_NE(cpu.be->ops->matmul_act, nullptr);
    std::mt19937 rng(8);
    const int M = 7, K = 130, N = 129, ldw = N + 5;
    auto in = randv(rng, (size_t)M * K, -1.0f, 1.0f), w = randv(rng, (size_t)K * ldw, -0.2f, 0.2f);
    auto bias = randv(rng, N, -1.0f, 1.0f);
    for (cvene_act act : {CVENE_GELU_TANH, CVENE_GELU_ERF, CVENE_ACT_RELU, CVENE_ACT_NONE})
        for (int with_bias : {0, 1}) {
            std::vector<float> want((size_t)M * N, 3.0f), got((size_t)M * N, -3.0f);
            const float *bp = with_bias ? bias.data() : nullptr;
            ASSERT_EQ(cpu.be->ops->matmul(cpu.be, want.data(), in.data(), w.data() + 2, ldw, 0, bp, M, K, N), CVENE_OK);
            ASSERT_EQ(cpu.be->ops->activation(cpu.be, want.data(), want.size(), act), CVENE_OK);
            ASSERT_EQ(cpu.be->ops->matmul_act(cpu.be, got.data(), in.data(), w.data() + 2, CVENE_F32, ldw, 0, bp, M, K, N,
                                              act),
                      CVENE_OK)
                << cpu.err;
            EXPECT_TRUE(same_bits(want, got)) << "act " << act << " bias " << with_bias;
        }
}

// K = 0 (an empty sum): out = bias, or zeros without one, then the activation.
TEST(FusedCpu, EmptyKIsTheBias) {
    Cpu cpu;
    ASSERT_NE(cpu.be, nullptr) << cpu.err;
    const int M = 3, N = 5;
    const std::vector<float> bias = {-2.0f, -0.5f, 0.0f, 0.5f, 2.0f};
    for (int with_bias : {0, 1}) {
        std::vector<float> want((size_t)M * N), got((size_t)M * N, 7.0f), act((size_t)M * N, 7.0f);
        for (size_t i = 0; i < want.size(); i++) want[i] = with_bias ? bias[i % N] : 0.0f;
        const float *bp = with_bias ? bias.data() : nullptr;
        ASSERT_EQ(cpu.be->ops->matmul(cpu.be, got.data(), nullptr, nullptr, N, 0, bp, M, 0, N), CVENE_OK);
        EXPECT_TRUE(same_bits(got, want)) << "bias " << with_bias;
        ASSERT_EQ(cpu.be->ops->matmul_act(cpu.be, act.data(), nullptr, nullptr, CVENE_F32, N, 0, bp, M, 0, N,
                                          CVENE_ACT_RELU),
                  CVENE_OK);
        for (auto &v : want) v = v > 0.0f ? v : 0.0f;
        EXPECT_TRUE(same_bits(act, want)) << "relu, bias " << with_bias;
    }
}

#else
// ---- CUDA vs the CPU oracle --------------------------------------------------------------------

class FusedCuda : public BackendPair {
  protected:
    int64_t lt_count() {
        int64_t lt = 0;
        cvene_backend_cuda_gemm_counts(gpu, &lt, nullptr);
        return lt;
    }
    void act_cases(cvene_backend *g, const char *label);
};

TEST_F(FusedCuda, OpTablesHaveTheFusedOps) {
    for (cvene_backend *be : {cpu, gpu}) {
        EXPECT_NE(be->ops->residual_layernorm, nullptr) << be->ops->name;
        EXPECT_NE(be->ops->matmul_act, nullptr) << be->ops->name;
    }
    // which matmul_act path this GPU takes for gelu_new (see kernels/cuda/gemm.cu)
    const int epi = cvene_backend_cuda_gelu_epilogue(gpu);
    RecordProperty("gelu_epilogue", epi);
    std::printf("[ INFO     ] gelu_new epilogue fusion: %s; probe's worst error %.3g (-1: did not run)\n",
                epi ? "on (cuBLASLt GELU_BIAS matched gelu_new within 2e-6)" : "off (GEMM, then the activation kernel)",
                cvene_backend_cuda_gelu_probe_error(gpu));
}

TEST_F(FusedCuda, ResidualLayerNorm) {
    for (int N : {1, 7, 33})
        for (int C : {1, 5, 768, 1001}) {
            const size_t n = (size_t)N * C;
            auto hx = randf(n, 2.0f, 5.0f);
            auto x = both(hx), y = both(randf(n)), w = both(randf(C, 0.5f, 1.5f)), b = both(randf(C));
            auto out = both(randf(n, 100.0f, 200.0f)); // overwritten
            ASSERT_EQ(cpu->ops->residual_layernorm(cpu, x.c, y.c, out.c, w.c, b.c, N, C, 1e-5f), CVENE_OK);
            ASSERT_EQ(gpu->ops->residual_layernorm(gpu, x.g, y.g, out.g, w.g, b.g, N, C, 1e-5f), CVENE_OK) << msg(gpu);
            const std::string t = tag({{"N", N}, {"C", C}});
            expect_close(x.c, x.g, n, "residual_layernorm x " + t);
            expect_close(out.c, out.g, n, "residual_layernorm out " + t);
            // and the CUDA pair it replaces gives the same bits
            float *x2 = upload(gpu, hx), *out2 = static_cast<float *>(alloc(gpu, n * sizeof(float)));
            ASSERT_EQ(gpu->ops->residual_add(gpu, x2, y.g, n), CVENE_OK) << msg(gpu);
            ASSERT_EQ(gpu->ops->layernorm(gpu, out2, x2, w.g, b.g, N, C, 1e-5f), CVENE_OK) << msg(gpu);
            EXPECT_TRUE(same_bits(download(gpu, x.g, n), download(gpu, x2, n))) << "cuda x vs residual_add " << t;
            EXPECT_TRUE(same_bits(download(gpu, out.g, n), download(gpu, out2, n))) << "cuda out vs layernorm " << t;
        }
}

// One matmul or matmul_act on both backends: W is rows x ldw floats read from offset off.
struct MmCase {
    int M, K, N, trans_w, off, ldw_extra, bias; // bias: 0 none, 1 aligned, 2 misaligned (+1 float)
};

TEST_F(FusedCuda, MatmulEpilogues) {
    const MmCase cases[] = {
        {33, 768, 2304, 0, 0, 0, 1},    // GPT-2 c_attn (all of q, k, v)
        {33, 768, 768, 0, 768, 1536, 1}, // a column slice of c_attn (ldw = 3C, offset C)
        {33, 768, 768, 1, 0, 0, 1},     // nn.Linear layout
        {1, 768, 3072, 0, 0, 0, 1},     // one row
        {7, 130, 129, 0, 3, 7, 2},      // odd sizes, misaligned W, in-row offset, misaligned bias
        {7, 130, 129, 1, 3, 7, 2},
        {5, 64, 96, 0, 0, 0, 0},        // no bias: no epilogue
        {5, 64, 96, 1, 1, 3, 0},
        {3, 2, 2, 0, 0, 0, 1},          // the smallest cuBLASLt problem
        {4, 1, 9, 0, 0, 0, 1},          // K = 1 and N = 1: the cuBLAS path
        {4, 9, 1, 1, 0, 0, 1},
    };
    for (const MmCase &c : cases) {
        const int width = c.trans_w ? c.K : c.N, rows = c.trans_w ? c.N : c.K, ldw = width + c.ldw_extra;
        auto w = both(randf((size_t)rows * ldw + c.off));
        auto in = both(randf((size_t)c.M * c.K));
        auto bias = both(randf((size_t)c.N + 1));
        const int b_off = c.bias == 2 ? 1 : 0;
        const float *bc = c.bias ? bias.c + b_off : nullptr, *bg = c.bias ? bias.g + b_off : nullptr;
        auto out = both(randf((size_t)c.M * c.N, 100.0f, 200.0f)); // overwritten
        const int64_t lt0 = lt_count();
        ASSERT_EQ(cpu->ops->matmul(cpu, out.c, in.c, w.c + c.off, ldw, c.trans_w, bc, c.M, c.K, c.N), CVENE_OK);
        ASSERT_EQ(gpu->ops->matmul(gpu, out.g, in.g, w.g + c.off, ldw, c.trans_w, bg, c.M, c.K, c.N), CVENE_OK)
            << msg(gpu);
        const std::string t = tag({{"M", c.M}, {"K", c.K}, {"N", c.N}, {"trans_w", c.trans_w}, {"off", c.off},
                                   {"ldw", ldw}, {"bias", c.bias}});
        expect_close(out.c, out.g, (size_t)c.M * c.N, "matmul " + t);
        // aligned problems with no dimension of 1 must not fall back to cuBLAS
        if (c.M > 1 && c.K > 1 && c.N > 1 && c.off % 64 == 0 && ldw % 64 == 0 && c.bias != 2) {
            EXPECT_EQ(lt_count(), lt0 + 1) << "cuBLASLt offered no plain-f32 algorithm for " << t;
        }
        // the same shape again with other buffers (a cached plan) still gives its own result
        auto in2 = both(randf((size_t)c.M * c.K));
        ASSERT_EQ(cpu->ops->matmul(cpu, out.c, in2.c, w.c + c.off, ldw, c.trans_w, bc, c.M, c.K, c.N), CVENE_OK);
        ASSERT_EQ(gpu->ops->matmul(gpu, out.g, in2.g, w.g + c.off, ldw, c.trans_w, bg, c.M, c.K, c.N), CVENE_OK)
            << msg(gpu);
        expect_close(out.c, out.g, (size_t)c.M * c.N, "matmul (cached plan) " + t);
    }
}

// K = 0: out = bias (or zeros), no GEMM, on both backends.
TEST_F(FusedCuda, MatmulEmptyK) {
    const int M = 3, N = 5;
    std::vector<float> hb = randf(N);
    auto bias = both(hb);
    auto w = both(randf(8)), in = both(randf(8));
    for (int with_bias : {0, 1}) {
        auto out = both(randf((size_t)M * N, 100.0f, 200.0f));
        ASSERT_EQ(gpu->ops->matmul(gpu, out.g, in.g, w.g, N, 0, with_bias ? bias.g : nullptr, M, 0, N), CVENE_OK)
            << msg(gpu);
        std::vector<float> got = download(gpu, out.g, (size_t)M * N), want((size_t)M * N);
        for (size_t i = 0; i < want.size(); i++) want[i] = with_bias ? hb[i % N] : 0.0f;
        EXPECT_TRUE(same_bits(got, want)) << "bias " << with_bias;
        std::vector<float> on_cpu((size_t)M * N, 7.0f);
        ASSERT_EQ(cpu->ops->matmul(cpu, on_cpu.data(), nullptr, nullptr, N, 0, with_bias ? hb.data() : nullptr, M, 0, N),
                  CVENE_OK);
        EXPECT_TRUE(same_bits(on_cpu, want)) << "cpu bias " << with_bias;
        ASSERT_EQ(gpu->ops->matmul_act(gpu, out.g, in.g, w.g, CVENE_F32, N, 0, with_bias ? bias.g : nullptr, M, 0, N,
                                       CVENE_GELU_TANH),
                  CVENE_OK)
            << msg(gpu);
        ASSERT_EQ(cpu->ops->activation(cpu, want.data(), want.size(), CVENE_GELU_TANH), CVENE_OK);
        expect_close_host(want, download(gpu, out.g, (size_t)M * N), "matmul_act K=0");
    }
}

// More shapes than the plan cache holds: evicted plans are rebuilt and results stay right.
TEST_F(FusedCuda, MatmulPlanCacheEviction) {
    const int M = 2, N = 3;
    for (int round = 0; round < 2; round++)
        for (int K = 2; K < 2 + 80; K++) {
            auto w = both(randf((size_t)K * N)), in = both(randf((size_t)M * K)), bias = both(randf(N));
            auto out = both(randf((size_t)M * N));
            ASSERT_EQ(cpu->ops->matmul(cpu, out.c, in.c, w.c, N, 0, bias.c, M, K, N), CVENE_OK);
            ASSERT_EQ(gpu->ops->matmul(gpu, out.g, in.g, w.g, N, 0, bias.g, M, K, N), CVENE_OK) << msg(gpu);
            expect_close(out.c, out.g, (size_t)M * N, "matmul eviction " + tag({{"K", K}, {"round", round}}));
        }
}

// matmul_act on the CUDA backend g vs the CPU's matmul + activation. Weights scaled so the
// pre-activations stay within about +-4, where GELU is curved: a tolerance relative to
// max |out| then still checks the small outputs closely.
void FusedCuda::act_cases(cvene_backend *g, const char *label) {
    struct Case {
        int M, K, N, trans_w, off, ldw_extra, bias;
    };
    const Case cases[] = {
        {33, 768, 3072, 0, 0, 0, 1}, // GPT-2 c_fc
        {1, 768, 3072, 0, 0, 0, 1},  {7, 130, 129, 0, 3, 7, 1}, {7, 130, 129, 1, 3, 7, 1},
        {5, 64, 96, 0, 0, 0, 0}, // no bias: not fused
        {4, 1, 9, 0, 0, 0, 1},   // K = 1: the cuBLAS path
    };
    for (cvene_act act : {CVENE_GELU_TANH, CVENE_GELU_ERF, CVENE_ACT_NONE, CVENE_ACT_RELU})
        for (const Case &c : cases) {
            const int width = c.trans_w ? c.K : c.N, rows = c.trans_w ? c.N : c.K, ldw = width + c.ldw_extra;
            const float ws = 2.0f / std::sqrt((float)c.K);
            auto w = both(randf((size_t)rows * ldw + c.off, -ws, ws));
            auto in = both(randf((size_t)c.M * c.K, -1.0f, 1.0f));
            auto bias = both(randf(c.N, -0.5f, 0.5f));
            auto out = both(randf((size_t)c.M * c.N, 100.0f, 200.0f)); // overwritten
            ASSERT_EQ(cpu->ops->matmul(cpu, out.c, in.c, w.c + c.off, ldw, c.trans_w, c.bias ? bias.c : nullptr, c.M, c.K,
                                       c.N),
                      CVENE_OK);
            ASSERT_EQ(cpu->ops->activation(cpu, out.c, (size_t)c.M * c.N, act), CVENE_OK);
            // the uploads ran on this fixture's stream: complete them before g's stream reads
            ASSERT_EQ(gpu->ops->sync(gpu), CVENE_OK) << msg(gpu);
            ASSERT_EQ(g->ops->matmul_act(g, out.g, in.g, w.g + c.off, CVENE_F32, ldw, c.trans_w,
                                         c.bias ? bias.g : nullptr, c.M, c.K, c.N, act),
                      CVENE_OK)
                << msg(g);
            std::vector<float> hc = download(cpu, out.c, (size_t)c.M * c.N), hg(hc.size());
            ASSERT_EQ(g->ops->to_host(g, hg.data(), out.g, hg.size() * sizeof(float)), CVENE_OK) << msg(g);
            expect_close_host(hc, hg, std::string(label) + " matmul_act " +
                                          tag({{"act", (long long)act}, {"M", c.M}, {"K", c.K}, {"N", c.N},
                                               {"trans_w", c.trans_w}, {"bias", c.bias}}));
        }
}

TEST_F(FusedCuda, MatmulAct) { act_cases(gpu, cvene_backend_cuda_gelu_epilogue(gpu) ? "fused" : "unfused"); }

// The fallback path on purpose: a backend created with CVENE_CUDA_GELU_EPILOGUE=0 never fuses.
TEST_F(FusedCuda, MatmulActWithTheEpilogueSwitchedOff) {
    const char *old = std::getenv("CVENE_CUDA_GELU_EPILOGUE");
    const std::string saved = old ? old : "";
    setenv("CVENE_CUDA_GELU_EPILOGUE", "0", 1);
    char err[512] = {0};
    cvene_backend *off = cvene_backend_cuda_new(0, err, sizeof err);
    if (old) setenv("CVENE_CUDA_GELU_EPILOGUE", saved.c_str(), 1);
    else unsetenv("CVENE_CUDA_GELU_EPILOGUE");
    ASSERT_NE(off, nullptr) << err;
    char off_err[512] = {0};
    off->err = off_err, off->err_len = sizeof off_err;
    EXPECT_EQ(cvene_backend_cuda_gelu_epilogue(off), 0);
    // buffers of both backends live on device 0; the switched-off backend reads them
    act_cases(off, "switched off");
    cvene_backend_cuda_free(off);
}

// matmul_lp with 16-bit weights: the rounded inputs and W through one cuBLASLt GEMM with the bias in
// its epilogue (kernels/cuda/gemm.cu: cvene_cuda_lt_matmul_half) for aligned problems, cublasGemmEx
// after a bias fill otherwise; against the CPU oracle (the same rounded operands in f32, so only
// the f32 summation order differs: the usual 1e-5 relative tolerance). Same shapes as
// MatmulEpilogues; W's offsets and leading dimensions count 16-bit elements.
TEST_F(FusedCuda, MatmulLowPrecisionThroughCublasLt) {
    const MmCase cases[] = {
        {33, 768, 2304, 0, 0, 0, 1}, {33, 768, 768, 0, 768, 1536, 1}, {33, 768, 768, 1, 0, 0, 1},
        {1, 768, 3072, 0, 0, 0, 1},  {7, 130, 129, 0, 3, 7, 2},       {7, 130, 129, 1, 3, 7, 2},
        {5, 64, 96, 0, 0, 0, 0},     {5, 64, 96, 1, 1, 3, 0},         {3, 2, 2, 0, 0, 0, 1},
        {4, 1, 9, 0, 0, 0, 1},       {4, 9, 1, 1, 0, 0, 1},
    };
    for (cvene_dtype dt : {CVENE_BF16, CVENE_F16})
        for (const MmCase &c : cases) {
            const int width = c.trans_w ? c.K : c.N, rows = c.trans_w ? c.N : c.K, ldw = width + c.ldw_extra;
            std::vector<float> wf = randf((size_t)rows * ldw + c.off, -0.25f, 0.25f);
            std::vector<uint16_t> wh(wf.size());
            cvene_f32_to_half_array(wh.data(), wf.data(), wf.size(), dt);
            auto w = both(wh);
            auto bias = both(randf((size_t)c.N + 1));
            const int b_off = c.bias == 2 ? 1 : 0;
            const float *bc = c.bias ? bias.c + b_off : nullptr, *bg = c.bias ? bias.g + b_off : nullptr;
            const std::string t = std::string(dt == CVENE_BF16 ? "bf16 " : "f16 ") +
                                  tag({{"M", c.M}, {"K", c.K}, {"N", c.N}, {"trans_w", c.trans_w}, {"off", c.off},
                                       {"ldw", ldw}, {"bias", c.bias}});
            for (int rep = 0; rep < 2; rep++) { // the second time through the cached plan, other inputs
                auto in = both(randf((size_t)c.M * c.K));
                auto out = both(randf((size_t)c.M * c.N, 100.0f, 200.0f)); // overwritten
                const int64_t lt0 = lt_count();
                ASSERT_EQ(cpu->ops->matmul_lp(cpu, out.c, in.c, w.c + c.off, dt, ldw, c.trans_w, bc, c.M, c.K, c.N),
                          CVENE_OK);
                ASSERT_EQ(gpu->ops->matmul_lp(gpu, out.g, in.g, w.g + c.off, dt, ldw, c.trans_w, bg, c.M, c.K, c.N),
                          CVENE_OK)
                    << msg(gpu);
                expect_close(out.c, out.g, (size_t)c.M * c.N, "matmul_lp " + t + (rep ? " (cached plan)" : ""));
                if (c.M > 1 && c.K > 1 && c.N > 1 && c.off % 64 == 0 && ldw % 64 == 0 && c.bias != 2) {
                    EXPECT_EQ(lt_count(), lt0 + 1)
                        << "cuBLASLt offered no 16-bit algorithm with f32 accumulation for " << t;
                }
            }
        }
}

TEST_F(FusedCuda, MatmulActLowPrecisionWeights) {
    const int M = 7, K = 65, N = 129;
    for (cvene_dtype dt : {CVENE_BF16, CVENE_F16}) {
        std::vector<float> wf = randf((size_t)K * N, -0.25f, 0.25f);
        std::vector<uint16_t> wh(wf.size());
        cvene_f32_to_half_array(wh.data(), wf.data(), wf.size(), dt);
        auto w = both(wh);
        auto in = both(randf((size_t)M * K));
        auto bias = both(randf(N));
        auto out = both(randf((size_t)M * N));
        ASSERT_EQ(cpu->ops->matmul_act(cpu, out.c, in.c, w.c, dt, N, 0, bias.c, M, K, N, CVENE_GELU_TANH), CVENE_OK)
            << msg(cpu);
        ASSERT_EQ(gpu->ops->matmul_act(gpu, out.g, in.g, w.g, dt, N, 0, bias.g, M, K, N, CVENE_GELU_TANH), CVENE_OK)
            << msg(gpu);
        expect_close(out.c, out.g, (size_t)M * N, dt == CVENE_BF16 ? "matmul_act bf16" : "matmul_act f16");
    }
    auto dummy = both(randf(4));
    EXPECT_EQ(gpu->ops->matmul_act(gpu, dummy.g, dummy.g, dummy.g, CVENE_F32, 2, 0, nullptr, 2, 2, 2, (cvene_act)99),
              CVENE_ERR_INVALID_ARG);
}
#endif

} // namespace
