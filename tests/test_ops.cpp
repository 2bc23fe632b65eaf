// CPU op table against direct double-precision evaluations of each op's formula.
// Tolerance: f32 op vs double reference, ~1e-6 relative for these small sizes.
#include <random>

#include "test_util.h"
extern "C" {
#include "kernels/tensor.h"
#include "kernels/backend.h"
}

namespace {

std::vector<float> randv(size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(g);
    return v;
}

double max_rel(const std::vector<float> &a, const std::vector<double> &b) {
    double mx = 1e-30, err = 0;
    for (size_t i = 0; i < b.size(); i++) {
        mx = std::max(mx, std::fabs(b[i]));
        err = std::max(err, std::fabs(a[i] - b[i]));
    }
    return err / mx;
}

struct Cpu {
    cvene_backend *be;
    char err[256];
    Cpu() { be = cvene_backend_cpu_new(2, err, sizeof err); }
    ~Cpu() { cvene_backend_cpu_free(be); }
    const cvene_ops *operator->() const { return be->ops; }
};

TEST(CpuOps, Layernorm) {
    Cpu cpu;
    const int N = 5, C = 37;
    auto x = randv(N * C, 1, 3.0f), w = randv(C, 2), b = randv(C, 3);
    for (auto &v : x) v += 10.0f;  // offset mean to exercise the centring
    std::vector<float> out(N * C);
    ASSERT_EQ(cpu->layernorm(cpu.be, out.data(), x.data(), w.data(), b.data(), N, C, 1e-5f), CVENE_OK);
    std::vector<double> ref(N * C);
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++) ref[n * C + c] = (x[n * C + c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c];
    }
    EXPECT_LE(max_rel(out, ref), 1e-6);
}

TEST(CpuOps, MatmulConv1DSliceLinearAndBias) {
    Cpu cpu;
    const int M = 7, K = 13, N = 5, LD = 3 * N;
    auto x = randv(M * K, 4), w = randv(K * LD, 5), bias = randv(N, 6);
    for (int trans = 0; trans < 2; trans++) {
        // trans 0: W (K, N) is columns [N, 2N) of a (K, 3N) matrix; trans 1: W (N, K) rows with ld LD >= K
        int ldw = trans ? K + 2 : LD;
        const float *W = trans ? w.data() : w.data() + N;
        std::vector<float> out(M * N);
        ASSERT_EQ(cpu->matmul(cpu.be, out.data(), x.data(), W, ldw, trans, bias.data(), M, K, N), CVENE_OK);
        std::vector<double> ref(M * N);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double s = bias[n];
                for (int k = 0; k < K; k++) s += (double)x[m * K + k] * (trans ? W[n * ldw + k] : W[k * ldw + n]);
                ref[m * N + n] = s;
            }
        EXPECT_LE(max_rel(out, ref), 1e-6) << "trans_w=" << trans;
    }
}

// Reference attention in double: causal with offset past = Tk - Tq, key mask, zero rows.
std::vector<double> ref_attn(const std::vector<float> &q, const std::vector<float> &k,
                             const std::vector<int32_t> &mask, int B, int Tq, int Tk, int H, int D,
                             float scale) {
    int C = H * D;
    std::vector<double> p((size_t)B * H * Tq * Tk, 0.0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double *row = &p[(((size_t)b * H + h) * Tq + i) * Tk];
                std::vector<int> vis;
                for (int j = 0; j <= Tk - Tq + i; j++)
                    if (mask.empty() || mask[b * Tk + j]) vis.push_back(j);
                if (vis.empty()) continue;
                double mx = -1e300, z = 0;
                std::vector<double> s(Tk);
                for (int j : vis) {
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)q[((size_t)b * Tq + i) * C + h * D + e] * k[((size_t)b * Tk + j) * C + h * D + e];
                    s[j] = d * scale;
                    mx = std::max(mx, s[j]);
                }
                for (int j : vis) z += std::exp(s[j] - mx);
                for (int j : vis) row[j] = std::exp(s[j] - mx) / z;
            }
    return p;
}

TEST(CpuOps, AttentionMaskCausalAndKVCache) {
    Cpu cpu;
    const int B = 2, H = 3, D = 4, C = H * D, Tk = 6;
    auto q = randv(B * Tk * C, 7), k = randv(B * Tk * C, 8), v = randv(B * Tk * C, 9);
    // example 0: left-padded (2 pads: its first two queries see nothing); example 1: one pad at the end
    std::vector<int32_t> mask = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    const float scale = 0.5f;
    std::vector<float> probs(B * H * Tk * Tk), out(B * Tk * C);
    ASSERT_EQ(cpu->attn_probs(cpu.be, probs.data(), q.data(), Tk * C, k.data(), Tk * C, mask.data(), B, Tk, Tk, H, D, scale), CVENE_OK);
    auto ref = ref_attn(q, k, mask, B, Tk, Tk, H, D, scale);
    EXPECT_LE(max_rel(probs, ref), 1e-6);
    EXPECT_EQ(probs[0], 0.0f);  // padded query row is all zeros
    ASSERT_EQ(cpu->attn_apply(cpu.be, out.data(), probs.data(), v.data(), Tk * C, B, Tk, Tk, H, D), CVENE_OK);
    std::vector<double> ref_out(B * Tk * C, 0.0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tk; i++)
                for (int j = 0; j < Tk; j++)
                    for (int e = 0; e < D; e++)
                        ref_out[(b * Tk + i) * C + h * D + e] += ref[((b * H + h) * Tk + i) * Tk + j] * v[(b * Tk + j) * C + h * D + e];
    EXPECT_LE(max_rel(out, ref_out), 1e-6);

    // K/V cache: the last Tq queries against all Tk cached keys equal the full rows
    const int Tq = 2;
    std::vector<float> qtail(B * Tq * C), probs2(B * H * Tq * Tk), out2(B * Tq * C);
    for (int b = 0; b < B; b++)
        std::copy(q.begin() + (b * Tk + Tk - Tq) * C, q.begin() + (b * Tk + Tk) * C, qtail.begin() + b * Tq * C);
    ASSERT_EQ(cpu->attn_probs(cpu.be, probs2.data(), qtail.data(), Tq * C, k.data(), Tk * C, mask.data(), B, Tq, Tk, H, D, scale), CVENE_OK);
    ASSERT_EQ(cpu->attn_apply(cpu.be, out2.data(), probs2.data(), v.data(), Tk * C, B, Tq, Tk, H, D), CVENE_OK);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++)
                for (int j = 0; j < Tk; j++)
                    EXPECT_FLOAT_EQ(probs2[((b * H + h) * Tq + i) * Tk + j], probs[((b * H + h) * Tk + Tk - Tq + i) * Tk + j]);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Tq; i++)
            for (int c = 0; c < C; c++)
                EXPECT_FLOAT_EQ(out2[(b * Tq + i) * C + c], out[(b * Tk + Tk - Tq + i) * C + c]);
}

TEST(CpuOps, ActivationsSoftmaxResidualEmbeddingPermute) {
    Cpu cpu;
    auto x = randv(101, 10, 3.0f);
    for (int act = 0; act < 3; act++) {
        auto y = x;
        ASSERT_EQ(cpu->activation(cpu.be, y.data(), y.size(), (cvene_act)act), CVENE_OK);
        std::vector<double> ref(x.size());
        for (size_t i = 0; i < x.size(); i++) {
            double v = x[i];
            ref[i] = act == CVENE_GELU_TANH ? 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))
                   : act == CVENE_GELU_ERF ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))
                                           : std::max(v, 0.0);
        }
        EXPECT_LE(max_rel(y, ref), 1e-6) << "act " << act;
    }
    auto s = x;
    ASSERT_EQ(cpu->softmax(cpu.be, s.data(), 1, 101), CVENE_OK);
    double z = 0;
    for (float v : x) z += std::exp((double)v);
    std::vector<double> sref(101);
    for (int i = 0; i < 101; i++) sref[i] = std::exp((double)x[i]) / z;
    EXPECT_LE(max_rel(s, sref), 1e-6);

    auto r = x;
    auto y = randv(101, 11);
    ASSERT_EQ(cpu->residual_add(cpu.be, r.data(), y.data(), 101), CVENE_OK);
    for (int i = 0; i < 101; i++) EXPECT_EQ(r[i], x[i] + y[i]);

    const int V = 9, P = 5, C = 4, B = 2, T = 3;
    auto wte = randv(V * C, 12), wpe = randv(P * C, 13);
    std::vector<int32_t> ids = {8, 0, 3, 1, 1, 7}, pos = {2, 3, 4, 0, 1, 2};
    std::vector<float> e(B * T * C), e2(B * T * C);
    ASSERT_EQ(cpu->embedding(cpu.be, e.data(), ids.data(), nullptr, wte.data(), wpe.data(), B, T, C), CVENE_OK);
    ASSERT_EQ(cpu->embedding(cpu.be, e2.data(), ids.data(), pos.data(), wte.data(), wpe.data(), B, T, C), CVENE_OK);
    for (int n = 0; n < B * T; n++)
        for (int c = 0; c < C; c++) {
            EXPECT_EQ(e[n * C + c], wte[ids[n] * C + c] + wpe[(n % T) * C + c]);
            EXPECT_EQ(e2[n * C + c], wte[ids[n] * C + c] + wpe[pos[n] * C + c]);
        }

    const int H = 3, D = 2;
    auto src = randv(B * T * H * D, 14);
    std::vector<float> heads(src.size()), back(src.size());
    ASSERT_EQ(cpu->permute_heads(cpu.be, heads.data(), src.data(), B, T, H, D, 1), CVENE_OK);
    // element (b, t, h, d) of src is (b, h, t, d) of heads
    EXPECT_EQ(heads[((1 * H + 2) * T + 1) * D + 1], src[((1 * T + 1) * H + 2) * D + 1]);
    ASSERT_EQ(cpu->permute_heads(cpu.be, back.data(), heads.data(), B, T, H, D, 0), CVENE_OK);
    EXPECT_EQ(back, src);
}

TEST(Tensor, HalfAndBfloatConversionsAreExact) {
    // hand-derived bit patterns
    EXPECT_EQ(cvene_f16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(cvene_f16_to_f32(0xc000), -2.0f);
    EXPECT_EQ(cvene_f16_to_f32(0x7bff), 65504.0f);
    EXPECT_EQ(cvene_f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(cvene_f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
    EXPECT_TRUE(std::isinf(cvene_f16_to_f32(0x7c00)));
    EXPECT_TRUE(std::isnan(cvene_f16_to_f32(0x7e00)));
    EXPECT_EQ(cvene_bf16_to_f32(0x3fc0), 1.5f);
    EXPECT_EQ(cvene_bf16_to_f32(0xc010), -2.25f);
    EXPECT_EQ(cvene_f32_to_bf16(1.5f), 0x3fc0);
    EXPECT_EQ(cvene_f32_to_bf16(1.00390625f), 0x3f80);  // tie 1 + 2^-8 rounds to even (1.0)
    EXPECT_EQ(cvene_f32_to_f16(65504.0f), 0x7bff);
    EXPECT_EQ(cvene_f32_to_f16(1e6f), 0x7c00);
    EXPECT_EQ(cvene_f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
    EXPECT_EQ(cvene_f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
    // every finite half round-trips
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        EXPECT_EQ(cvene_f32_to_f16(cvene_f16_to_f32((uint16_t)h)), h) << std::hex << h;
    }
}

TEST(Arena, SizingPassThenCarve) {
    cvene_arena a = {nullptr, 0, 0};
    EXPECT_EQ(cvene_arena_take(&a, 10), nullptr);
    EXPECT_EQ(cvene_arena_take(&a, 300), nullptr);
    EXPECT_EQ(a.used, 256u + 300u);  // second block starts at the next 256-byte boundary
    std::vector<char> mem(a.used + 256);
    char *base = mem.data() + (256 - ((uintptr_t)mem.data() % 256)) % 256;
    cvene_arena b = {base, 0, a.used};
    EXPECT_EQ(cvene_arena_take(&b, 10), base);
    EXPECT_EQ(cvene_arena_take(&b, 300), base + 256);
}

TEST(Forward, SameInputsGiveBitIdenticalOutputs) {
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/inner_erf/model");
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int V = cvene_model_get_info(L.model).vocab_size;
    int32_t ids[2 * 5] = {1, 5, 9, 2, 6, 3, 5, 8, 9, 7};
    std::vector<float> a(2 * 5 * V), b(2 * 5 * V);
    cvene_run_opts o{};
    o.logits = a.data();
    ASSERT_EQ(cvene_forward(L.model, ids, 2, 5, &o), CVENE_OK);
    o.logits = b.data();
    ASSERT_EQ(cvene_forward(L.model, ids, 2, 5, &o), CVENE_OK);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

}  // namespace
