// The backward ops (kernels/backend.h: cvene_ops_bwd) against torch autograd, finite
// differences, and (CUDA) the CPU reference.
//
// Built three times (tests/CMakeLists.txt):
//   test_backward_ops      (label unit)  the CPU ops;
//   test_backward_ops_cuda (label cuda)  the CUDA ops, skipped without a GPU;
//   test_backward_ops_emu  (label emu)   the CUDA ops on the kernel emulator, in every ctest.
// Every build runs the op-table check, the torch fixtures, accumulation, aliasing and error
// cases on its backend. The CPU build adds central finite differences in double and thread-
// count independence; the CUDA builds add every CUDA op against the CPU op at odd sizes.
//
// Torch fixtures: tests/fixtures/backward/<op>.safetensors (tools/make_backward_fixtures.py,
// torch 2.5.1 / transformers 4.46.3 on CPU). Each reference comes twice: autograd in float64
// (the exact gradient of the f32 inputs) and in float32 (what a torch user gets).
// Error measure: max_i |got_i - ref_i| / max_i |ref_i| over the whole tensor (a NaN fails).
// Tolerance kTol = 1e-5 against both. Why: every gradient element is a sum of at most ~70 f32
// terms here (GEMM dot products over T or D, sum_rows over 67 rows; layer-norm, softmax and
// cross-entropy sums are double), so f32 rounding bounds its error by ~70 u (u = 6e-8, 4e-6)
// relative to the largest term, which the tensor's max bounds; torch's own f32 gradients sit
// within 4e-7 of float64 (measured by the generator's data). Each check prints its measured
// errors ("[ bwd err ]") so regressions show before they fail.
//
// Finite differences: L(x) = <r, f(x)> with f the forward written in double in this file, its
// central difference (L(x + h u) - L(x - h u)) / 2h along random u (h = 1e-5: truncation ~h^2,
// cancellation ~1e-16 |L| / h, both below 1e-9 here) against <grad, u> from the f32 op, within
// kTol * sum_i |grad_i u_i| (the dot product's own scale, so cancellation cannot hide an error).
//
// CUDA vs CPU: same inputs on both, max |cuda - cpu| <= kTol * max |cpu| per tensor: both
// compute in f32 with the same double sums; they differ only in summation order (cuBLAS vs
// OpenBLAS, warp trees vs loops) and the last ulp of expf / tanhf / erff / sincosf.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "kernels/backend.h"
#include "backend_under_test.h"

#ifndef CVENE_TEST_CUDA
#define CVENE_TEST_CUDA 0
#endif
#if CVENE_TEST_CUDA
#include "backend_pair.h"
#endif

namespace {

constexpr double kTol = 1e-5; // see the header comment

std::string fixture(const std::string &op) { return std::string(CVENE_FIXTURES) + "/backward/" + op + ".safetensors"; }

// max |got - ref| / max |ref| (absolute when ref is all zero); a NaN or size mismatch is infinite
template <class R> double rel_err(const std::vector<float> &got, const std::vector<R> &ref) {
    if (got.size() != ref.size() || got.empty()) return INFINITY;
    double mx = 0.0, e = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        mx = std::max(mx, std::fabs((double)ref[i]));
        const double d = std::fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e)) e = std::isnan(d) ? INFINITY : d;
    }
    return mx > 0.0 ? e / mx : e;
}

std::vector<float> randv(std::mt19937 &rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

const std::pair<cvene_act, const char *> kActs[] = {{CVENE_GELU_TANH, "gelu_tanh"}, {CVENE_GELU_ERF, "gelu_erf"},
                                                    {CVENE_ACT_RELU, "relu"},       {CVENE_ACT_SIGMOID, "sigmoid"},
                                                    {CVENE_ACT_TANH, "tanh"},       {CVENE_ACT_NONE, "none"}};

// ---- the backend under test ----

class Bwd : public BackendUnderTest {
  protected:
    std::vector<void *> bufs;

    Bwd() : BackendUnderTest(2024, "backward-op") {}
    void TearDown() override {
        for (void *p : bufs)
            if (be) be->ops->free(be, p);
        BackendUnderTest::TearDown();
    }
    const cvene_ops_bwd *bwd() const { return be->ops->bwd; }

    template <class T> T *dev(const std::vector<T> &h) {
        void *p = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &p, std::max<size_t>(1, h.size()) * sizeof(T)), CVENE_OK) << err;
        bufs.push_back(p);
        if (!h.empty()) {
            EXPECT_EQ(be->ops->to_device(be, p, h.data(), h.size() * sizeof(T)), CVENE_OK) << err;
        }
        return static_cast<T *>(p);
    }
    float *nans(size_t n) { return dev(std::vector<float>(n, NAN)); } // an output: unwritten stays NaN
    template <class T> std::vector<T> host(const T *p, size_t n) {
        std::vector<T> h(n);
        if (n) {
            EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(T)), CVENE_OK) << err;
        }
        return h;
    }

    // got against name.f64 and name.f32 of the archive, kTol each; prints the measured errors
    void expect_torch(const Archive &a, const std::string &op, const std::string &name, const std::vector<float> &got) {
        const double e64 = rel_err(got, a.get<double>(name + ".f64"));
        const double e32 = rel_err(got, a.get<float>(name + ".f32"));
        std::printf("[ bwd err  ] %-10s %-12s vs f64 autograd %.2e   vs torch f32 %.2e\n", op.c_str(), name.c_str(), e64,
                    e32);
        EXPECT_LE(e64, kTol) << op << " " << name << " vs float64 autograd";
        EXPECT_LE(e32, kTol) << op << " " << name << " vs torch float32 autograd";
    }
};

TEST_F(Bwd, TableIsComplete) {
    const cvene_ops_bwd *o = bwd();
    ASSERT_NE(o, nullptr) << be->ops->name << " has no backward ops";
#define SLOT(f) EXPECT_TRUE(o->f != nullptr) << #f
    SLOT(layernorm); SLOT(attention); SLOT(activation); SLOT(rotary); SLOT(matmul_tn); SLOT(xent); SLOT(affine);
    SLOT(mul); SLOT(sum_rows); SLOT(gru_cell);
#undef SLOT
}

// ---- against torch ----

TEST_F(Bwd, LayerNormVsTorch) {
    Archive a(fixture("layernorm"));
    std::vector<int64_t> shape;
    const auto x = a.get<float>("x", &shape);
    const int N = (int)shape[0], C = (int)shape[1];
    float *dx = nans(x.size());
    ASSERT_EQ(bwd()->layernorm(be, dx, dev(a.get<float>("dy")), dev(x), dev(a.get<float>("w")), N, C, 1e-5f, 0),
              CVENE_OK)
        << err;
    expect_torch(a, "layernorm", "dx", host(dx, x.size()));
}

// The chain a training step runs: cvene's own attn_probs on q, k and the mask (causal, a hole,
// left padding with all-zero rows), then the backward from those probabilities.
TEST_F(Bwd, AttentionChainVsTorch) {
    Archive a(fixture("attention"));
    std::vector<int64_t> shape, mshape;
    const auto q = a.get<float>("q", &shape);
    const auto mask = a.get<int32_t>("mask", &mshape);
    const int B = (int)shape[0], T = (int)shape[1], H = 3, D = (int)shape[2] / 3, C = H * D;
    ASSERT_EQ(mshape[1], T);
    const float scale = 1.0f / std::sqrt((float)D);
    float *qd = dev(q), *kd = dev(a.get<float>("k")), *vd = dev(a.get<float>("v"));
    const size_t np = (size_t)B * H * T * T, nq = (size_t)B * T * C;
    float *probs = nans(np);
    ASSERT_EQ(be->ops->attn_probs(be, probs, qd, (size_t)T * C, kd, (size_t)T * C, dev(mask), B, T, T, H, D, scale),
              CVENE_OK)
        << err;
    expect_torch(a, "attention", "probs", host(probs, np));
    float *dq = nans(nq), *dk = nans(nq), *dv = nans(nq), *dp = nans(np);
    ASSERT_EQ(bwd()->attention(be, dq, dk, dv, dp, dev(a.get<float>("dout")), qd, kd, vd, probs, B, T, H, D, scale),
              CVENE_OK)
        << err;
    expect_torch(a, "attention", "dq", host(dq, nq));
    expect_torch(a, "attention", "dk", host(dk, nq));
    expect_torch(a, "attention", "dv", host(dv, nq));
}

TEST_F(Bwd, ActivationVsTorch) {
    Archive a(fixture("activation"));
    const auto x = a.get<float>("x");
    const float *xd = dev(x), *dy = dev(a.get<float>("dy"));
    for (auto &act : kActs) {
        float *dx = nans(x.size());
        ASSERT_EQ(bwd()->activation(be, dx, dy, xd, x.size(), act.first, 0), CVENE_OK) << err;
        expect_torch(a, "activation", act.second, host(dx, x.size()));
    }
}

// transformers' GPT-NeoX rotary (partial: 6 of 10 dims) on rows of stride 23 > H*D: the
// transpose applied to dy is the gradient; dims past rot and the row's tail pass through.
TEST_F(Bwd, RotaryVsTorch) {
    Archive a(fixture("rotary"));
    const int B = 2, T = 3, H = 2, D = 10, rot = 6, ld = 23;
    const auto dy = a.get<float>("dy");
    ASSERT_EQ(dy.size(), (size_t)B * T * ld);
    float *x = dev(dy);
    ASSERT_EQ(bwd()->rotary(be, x, ld, dev(a.get<int32_t>("pos")), B, T, H, D, rot, 10000.0f), CVENE_OK) << err;
    expect_torch(a, "rotary", "dx", host(x, dy.size()));
    float *x0 = dev(dy);
    ASSERT_EQ(bwd()->rotary(be, x0, ld, nullptr, B, T, H, D, rot, 10000.0f), CVENE_OK) << err;
    expect_torch(a, "rotary", "dx_pos0", host(x0, dy.size()));
}

TEST_F(Bwd, MatmulTnVsTorch) {
    Archive a(fixture("matmul_tn"));
    std::vector<int64_t> sa, sb;
    const auto av = a.get<float>("a", &sa), bv = a.get<float>("b", &sb);
    const int M = (int)sa[0], K = (int)sa[1], N = (int)sb[1];
    float *out = nans((size_t)K * N);
    ASSERT_EQ(bwd()->matmul_tn(be, out, dev(av), dev(bv), M, K, N, 0), CVENE_OK) << err;
    expect_torch(a, "matmul_tn", "out", host(out, (size_t)K * N));
}

TEST_F(Bwd, XentVsTorch) {
    Archive a(fixture("xent"));
    std::vector<int64_t> shape;
    const auto logits = a.get<float>("logits", &shape);
    const int N = (int)shape[0], V = (int)shape[1];
    const float scale = a.get<float>("scale")[0];
    float *dl = nans(logits.size()), *loss = nans(N);
    ASSERT_EQ(bwd()->xent(be, dl, loss, dev(logits), dev(a.get<int32_t>("labels")), N, V, scale), CVENE_OK) << err;
    expect_torch(a, "xent", "dlogits", host(dl, logits.size()));
    expect_torch(a, "xent", "loss", host(loss, N));
}

TEST_F(Bwd, AffineVsTorch) {
    Archive a(fixture("affine"));
    const auto av = a.get<float>("a"), c = a.get<float>("coef");
    const size_t n = av.size();
    float *out = nans(n);
    ASSERT_EQ(bwd()->affine(be, out, dev(av), dev(a.get<float>("b")), c[0], c[1], c[2], n), CVENE_OK) << err;
    expect_torch(a, "affine", "out", host(out, n));
    ASSERT_EQ(bwd()->affine(be, out, dev(av), nullptr, c[0], c[1], c[2], n), CVENE_OK) << err;
    expect_torch(a, "affine", "out_nob", host(out, n));
}

TEST_F(Bwd, MulVsTorch) {
    Archive a(fixture("mul"));
    const auto av = a.get<float>("a");
    float *out = nans(av.size());
    ASSERT_EQ(bwd()->mul(be, out, dev(av), dev(a.get<float>("b")), av.size(), 0), CVENE_OK) << err;
    expect_torch(a, "mul", "out", host(out, av.size()));
}

TEST_F(Bwd, SumRowsVsTorch) {
    Archive a(fixture("sum_rows"));
    std::vector<int64_t> shape;
    const auto x = a.get<float>("x", &shape);
    const int M = (int)shape[0], N = (int)shape[1];
    float *out = nans(N);
    ASSERT_EQ(bwd()->sum_rows(be, out, dev(x), M, N, 0), CVENE_OK) << err;
    expect_torch(a, "sum_rows", "out", host(out, N));
}

// ---- accumulate, aliasing, edge sizes, errors (every backend) ----

// accumulate = 1 adds the fresh value with one f32 add: bit for bit prior + (accumulate = 0),
// for every op but matmul_tn (its GEMM adds inside its own blocking: within kTol).
TEST_F(Bwd, AccumulateAddsTheFreshGradient) {
    auto check = [&](const char *what, size_t n, const std::function<void(float *, int)> &run, bool exact) {
        const std::vector<float> prior = randv(rng, n, -3.0f, 3.0f);
        float *fresh = nans(n), *acc = dev(prior);
        run(fresh, 0);
        run(acc, 1);
        const auto f = host(fresh, n), g = host(acc, n);
        std::vector<float> want(n);
        for (size_t i = 0; i < n; i++) want[i] = prior[i] + f[i];
        if (exact) {
            EXPECT_EQ(std::memcmp(g.data(), want.data(), n * sizeof(float)), 0) << what;
        } else {
            EXPECT_LE(rel_err(g, want), kTol) << what;
        }
    };
    const int N = 5, C = 37;
    const float *x = dev(randv(rng, (size_t)N * C, -2, 3)), *dy = dev(randv(rng, (size_t)N * C)),
                *w = dev(randv(rng, C));
    check("layernorm", (size_t)N * C, [&](float *o, int acc) {
        ASSERT_EQ(bwd()->layernorm(be, o, dy, x, w, N, C, 1e-5f, acc), CVENE_OK) << err;
    }, true);
    const size_t n = 1001;
    const float *xa = dev(randv(rng, n, -6, 6)), *dya = dev(randv(rng, n));
    for (auto &act : kActs)
        check(act.second, n, [&](float *o, int acc) {
            ASSERT_EQ(bwd()->activation(be, o, dya, xa, n, act.first, acc), CVENE_OK) << err;
        }, true);
    check("mul", n, [&](float *o, int acc) { ASSERT_EQ(bwd()->mul(be, o, xa, dya, n, acc), CVENE_OK) << err; }, true);
    const int M = 67, K = 13, Nn = 29;
    const float *am = dev(randv(rng, (size_t)M * K)), *bm = dev(randv(rng, (size_t)M * Nn));
    check("sum_rows", Nn, [&](float *o, int acc) { ASSERT_EQ(bwd()->sum_rows(be, o, bm, M, Nn, acc), CVENE_OK) << err; },
          true);
    check("matmul_tn", (size_t)K * Nn, [&](float *o, int acc) {
        ASSERT_EQ(bwd()->matmul_tn(be, o, am, bm, M, K, Nn, acc), CVENE_OK) << err;
    }, false);
}

// The aliasing the contract allows gives the non-aliased result bit for bit: activation dx = dy
// and mul out = a or b (not accumulating), xent dlogits = logits, affine out = a or b.
TEST_F(Bwd, AllowedAliasingMatchesSeparateBuffers) {
    const size_t n = 1001;
    const auto xv = randv(rng, n, -6, 6), yv = randv(rng, n, -2, 2);
    const float *x = dev(xv);
    for (auto &act : kActs) {
        float *sep = nans(n), *al = dev(yv);
        ASSERT_EQ(bwd()->activation(be, sep, dev(yv), x, n, act.first, 0), CVENE_OK) << err;
        ASSERT_EQ(bwd()->activation(be, al, al, x, n, act.first, 0), CVENE_OK) << err;
        EXPECT_EQ(host(sep, n), host(al, n)) << "activation dx = dy, " << act.second;
    }
    {
        float *sep = nans(n), *a1 = dev(xv), *b1 = dev(yv);
        ASSERT_EQ(bwd()->mul(be, sep, dev(xv), dev(yv), n, 0), CVENE_OK) << err;
        ASSERT_EQ(bwd()->mul(be, a1, a1, dev(yv), n, 0), CVENE_OK) << err;
        ASSERT_EQ(bwd()->mul(be, b1, dev(xv), b1, n, 0), CVENE_OK) << err;
        EXPECT_EQ(host(sep, n), host(a1, n)) << "mul out = a";
        EXPECT_EQ(host(sep, n), host(b1, n)) << "mul out = b";
    }
    for (int with_b : {0, 1}) {
        float *sep = nans(n), *a1 = dev(xv), *b1 = dev(yv);
        const float *bsep = with_b ? dev(yv) : nullptr;
        ASSERT_EQ(bwd()->affine(be, sep, dev(xv), bsep, 1.5f, -0.5f, 0.125f, n), CVENE_OK) << err;
        ASSERT_EQ(bwd()->affine(be, a1, a1, bsep, 1.5f, -0.5f, 0.125f, n), CVENE_OK) << err;
        EXPECT_EQ(host(sep, n), host(a1, n)) << "affine out = a, with_b " << with_b;
        if (with_b) {
            ASSERT_EQ(bwd()->affine(be, b1, dev(xv), b1, 1.5f, -0.5f, 0.125f, n), CVENE_OK) << err;
            EXPECT_EQ(host(sep, n), host(b1, n)) << "affine out = b";
        }
    }
    {
        const int N = 6, V = 301;
        const auto lv = randv(rng, (size_t)N * V, -8, 8);
        const int32_t *labels = dev(std::vector<int32_t>{0, 300, -100, 17, 150, 299});
        float *sep = nans(lv.size()), *inpl = dev(lv), *l1 = nans(N), *l2 = nans(N);
        ASSERT_EQ(bwd()->xent(be, sep, l1, dev(lv), labels, N, V, 0.2f), CVENE_OK) << err;
        ASSERT_EQ(bwd()->xent(be, inpl, l2, inpl, labels, N, V, 0.2f), CVENE_OK) << err;
        EXPECT_EQ(host(sep, lv.size()), host(inpl, lv.size())) << "xent dlogits = logits";
        EXPECT_EQ(host(l1, N), host(l2, N)) << "xent loss, in place";
    }
}

// Ignored rows (label < 0) give loss 0 and a zero gradient; a label >= V (the caller's error,
// not checkable on the device without a sync) gives a NaN loss and gradient row; V = 0 and an
// unknown activation are refused naming the op.
TEST_F(Bwd, XentRowsAndRefusals) {
    const int N = 3, V = 5;
    const int32_t *labels = dev(std::vector<int32_t>{-1, 5, 2});
    float *dl = nans((size_t)N * V), *loss = nans(N);
    ASSERT_EQ(bwd()->xent(be, dl, loss, dev(randv(rng, (size_t)N * V)), labels, N, V, 1.0f), CVENE_OK) << err;
    const auto g = host(dl, (size_t)N * V), l = host(loss, N);
    EXPECT_EQ(l[0], 0.0f);
    for (int j = 0; j < V; j++) EXPECT_EQ(g[j], 0.0f) << j;
    EXPECT_TRUE(std::isnan(l[1]));
    for (int j = 0; j < V; j++) EXPECT_TRUE(std::isnan(g[V + j])) << j;
    EXPECT_TRUE(std::isfinite(l[2]) && l[2] > 0.0f);
    double rowsum = 0.0; // softmax - onehot sums to 0
    for (int j = 0; j < V; j++) rowsum += g[2 * V + j];
    EXPECT_NEAR(rowsum, 0.0, 1e-6);

    EXPECT_EQ(bwd()->xent(be, dl, loss, dl, labels, N, 0, 1.0f), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("xent"), std::string::npos) << err;
    err[0] = 0;
    EXPECT_EQ(bwd()->activation(be, dl, dl, dl, 4, (cvene_act)42, 0), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("activation"), std::string::npos) << err;
    EXPECT_NE(std::string(err).find("42"), std::string::npos) << err;
}

// Empty sizes do nothing (outputs untouched), except an empty sum: matmul_tn with M = 0 and
// sum_rows with M = 0 write zeros (or leave an accumulator unchanged).
TEST_F(Bwd, EmptySizes) {
    float *o = dev(std::vector<float>(12, 7.0f));
    const float *in = dev(std::vector<float>(12, 1.0f));
    EXPECT_EQ(bwd()->layernorm(be, o, in, in, in, 0, 3, 1e-5f, 0), CVENE_OK) << err;
    EXPECT_EQ(bwd()->attention(be, o, o, o, o, in, in, in, in, in, 0, 3, 1, 2, 1.0f), CVENE_OK) << err;
    EXPECT_EQ(bwd()->activation(be, o, in, in, 0, CVENE_GELU_TANH, 0), CVENE_OK) << err;
    EXPECT_EQ(bwd()->rotary(be, o, 4, nullptr, 1, 3, 1, 4, 0, 10000.0f), CVENE_OK) << err;
    EXPECT_EQ(bwd()->xent(be, o, o, in, nullptr, 0, 3, 1.0f), CVENE_OK) << err;
    EXPECT_EQ(bwd()->affine(be, o, in, in, 1, 1, 1, 0), CVENE_OK) << err;
    EXPECT_EQ(bwd()->mul(be, o, in, in, 0, 0), CVENE_OK) << err;
    EXPECT_EQ(bwd()->matmul_tn(be, o, in, in, 3, 0, 4, 0), CVENE_OK) << err;
    EXPECT_EQ(host(o, 12), std::vector<float>(12, 7.0f));
    EXPECT_EQ(bwd()->matmul_tn(be, o, in, in, 0, 3, 4, 1), CVENE_OK) << err;
    EXPECT_EQ(host(o, 12), std::vector<float>(12, 7.0f)) << "M = 0, accumulate: unchanged";
    EXPECT_EQ(bwd()->matmul_tn(be, o, in, in, 0, 3, 4, 0), CVENE_OK) << err;
    EXPECT_EQ(host(o, 12), std::vector<float>(12, 0.0f)) << "M = 0: zeros";
    float *s = dev(std::vector<float>(5, 7.0f));
    EXPECT_EQ(bwd()->sum_rows(be, s, in, 0, 5, 0), CVENE_OK) << err;
    EXPECT_EQ(host(s, 5), std::vector<float>(5, 0.0f)) << "sum_rows M = 0";
}

// Rotary's transpose undoes the forward (rotations are orthogonal): bwd(fwd(x)) = x to f32
// rounding of two rotations, over every dim, with large positions.
TEST_F(Bwd, RotaryTransposeUndoesForward) {
    const int B = 2, T = 7, H = 3, D = 12, ld = H * D + 5;
    for (int rot : {4, 12}) {
        const auto xv = randv(rng, (size_t)B * T * ld, -2, 2);
        std::vector<int32_t> pos((size_t)B * T);
        for (size_t i = 0; i < pos.size(); i++) pos[i] = (int32_t)(i * 331 % 4099);
        float *x = dev(xv);
        const int32_t *pd = dev(pos);
        ASSERT_EQ(be->ops->rotary(be, x, ld, pd, B, T, H, D, rot, 10000.0f), CVENE_OK) << err;
        ASSERT_EQ(bwd()->rotary(be, x, ld, pd, B, T, H, D, rot, 10000.0f), CVENE_OK) << err;
        EXPECT_LE(rel_err(host(x, xv.size()), xv), 1e-6) << "rot " << rot;
    }
}

#if !CVENE_TEST_CUDA
// ---- finite differences in double (the CPU ops) ----

using Vec = std::vector<double>;

Vec to_d(const std::vector<float> &v) { return Vec(v.begin(), v.end()); }

// (L(x + h u) - L(x - h u)) / 2h
double central_diff(const std::function<double(const Vec &)> &L, const Vec &x, const Vec &u, double h = 1e-5) {
    Vec p(x), m(x);
    for (size_t i = 0; i < x.size(); i++) p[i] += h * u[i], m[i] -= h * u[i];
    return (L(p) - L(m)) / (2 * h);
}

// fd against <g, u>, within kTol of sum |g_i u_i|
void expect_directional(const std::string &what, double fd, const std::vector<float> &g, const Vec &u) {
    ASSERT_EQ(g.size(), u.size()) << what;
    double an = 0.0, sc = 0.0;
    for (size_t i = 0; i < g.size(); i++) an += (double)g[i] * u[i], sc += std::fabs((double)g[i] * u[i]);
    const double e = std::fabs(fd - an) / std::max(sc, 1e-300);
    std::printf("[ bwd fd   ] %-28s directional derivative %+.6e  rel err %.2e\n", what.c_str(), fd, e);
    EXPECT_LE(e, kTol) << what << ": finite difference " << fd << ", from the op " << an;
}

double dot(const Vec &a, const Vec &b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// out (N, C) = layernorm(x) in double
Vec layernorm_d(const Vec &x, const Vec &w, const Vec &b, int N, int C, double eps) {
    Vec out(x.size());
    for (int n = 0; n < N; n++) {
        const double *r = &x[(size_t)n * C];
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += r[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (r[c] - m) * (r[c] - m);
        v /= C;
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (r[c] - m) / std::sqrt(v + eps) * w[c] + b[c];
    }
    return out;
}

// attn_apply(attn_probs(q, k, mask), v) in double: causal, masked keys, all-zero unseen rows
Vec attention_d(const Vec &q, const Vec &k, const Vec &v, const std::vector<int32_t> &mask, int B, int T, int H,
                int D, double scale) {
    const int C = H * D;
    Vec out((size_t)B * T * C, 0.0), s(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    s[j] = -INFINITY;
                    if (j > i || !mask[(size_t)b * T + j]) continue;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += q[((size_t)b * T + i) * C + h * D + e] * k[((size_t)b * T + j) * C + h * D + e];
                    s[j] = d * scale;
                    mx = std::max(mx, s[j]);
                }
                if (mx == -INFINITY) continue;
                double z = 0;
                for (int j = 0; j < T; j++) z += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
                for (int j = 0; j < T; j++) {
                    if (s[j] == -INFINITY) continue;
                    const double p = std::exp(s[j] - mx) / z;
                    for (int e = 0; e < D; e++)
                        out[((size_t)b * T + i) * C + h * D + e] += p * v[((size_t)b * T + j) * C + h * D + e];
                }
            }
    return out;
}

double act_d(double x, cvene_act act) {
    switch (act) {
    case CVENE_GELU_TANH: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case CVENE_GELU_ERF: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case CVENE_ACT_RELU: return x > 0 ? x : 0;
    case CVENE_ACT_SIGMOID: return 1 / (1 + std::exp(-x));
    case CVENE_ACT_TANH: return std::tanh(x);
    default: return x;
    }
}

// scale * sum over counted rows of (logsumexp(x_r) - x_r[label_r])
double xent_d(const Vec &x, const std::vector<int32_t> &labels, int N, int V, double scale) {
    double total = 0;
    for (int r = 0; r < N; r++) {
        if (labels[r] < 0) continue;
        const double *row = &x[(size_t)r * V];
        const double mx = *std::max_element(row, row + V);
        double z = 0;
        for (int j = 0; j < V; j++) z += std::exp(row[j] - mx);
        total += std::log(z) + mx - row[labels[r]];
    }
    return scale * total;
}

TEST_F(Bwd, LayerNormFiniteDifferences) {
    const int N = 5, C = 41;
    const float eps = 1e-5f;
    const auto x = randv(rng, (size_t)N * C, -1, 4), w = randv(rng, C, -2, 2), b = randv(rng, C),
               dy = randv(rng, (size_t)N * C);
    float *dx = nans(x.size());
    ASSERT_EQ(bwd()->layernorm(be, dx, dy.data(), x.data(), w.data(), N, C, eps, 0), CVENE_OK) << err;
    const auto g = host(dx, x.size());
    const Vec wd = to_d(w), bd = to_d(b), r = to_d(dy);
    auto L = [&](const Vec &xx) { return dot(r, layernorm_d(xx, wd, bd, N, C, eps)); };
    for (int k = 0; k < 3; k++) {
        const Vec u = to_d(randv(rng, x.size()));
        expect_directional("layernorm dir " + std::to_string(k), central_diff(L, to_d(x), u), g, u);
    }
}

// Through cvene's attn_probs (f32) into the backward; the difference is of the double forward.
TEST_F(Bwd, AttentionFiniteDifferences) {
    const int B = 2, T = 7, H = 3, D = 5, C = H * D;
    const float scale = 1.0f / std::sqrt((float)D);
    std::vector<int32_t> mask((size_t)B * T, 1);
    mask[3] = 0;                          // batch 0: a hole at key 3
    mask[T + 0] = mask[T + 1] = 0;        // batch 1: left padding (queries 0, 1 see nothing)
    const size_t nq = (size_t)B * T * C, np = (size_t)B * H * T * T;
    const auto q = randv(rng, nq, -2, 2), k = randv(rng, nq, -2, 2), v = randv(rng, nq), dout = randv(rng, nq);
    std::vector<float> probs(np), dq(nq), dk(nq), dv(nq), dp(np);
    ASSERT_EQ(be->ops->attn_probs(be, probs.data(), q.data(), (size_t)T * C, k.data(), (size_t)T * C, mask.data(), B,
                                  T, T, H, D, scale),
              CVENE_OK);
    ASSERT_EQ(bwd()->attention(be, dq.data(), dk.data(), dv.data(), dp.data(), dout.data(), q.data(), k.data(),
                               v.data(), probs.data(), B, T, H, D, scale),
              CVENE_OK)
        << err;
    // one vector (q, k, v) and its gradient (dq, dk, dv)
    Vec x = to_d(q);
    x.insert(x.end(), k.begin(), k.end());
    x.insert(x.end(), v.begin(), v.end());
    std::vector<float> g = dq;
    g.insert(g.end(), dk.begin(), dk.end());
    g.insert(g.end(), dv.begin(), dv.end());
    const Vec r = to_d(dout);
    auto L = [&](const Vec &xx) {
        const Vec qq(xx.begin(), xx.begin() + nq), kk(xx.begin() + nq, xx.begin() + 2 * nq),
            vv(xx.begin() + 2 * nq, xx.end());
        return dot(r, attention_d(qq, kk, vv, mask, B, T, H, D, scale));
    };
    for (int d = 0; d < 3; d++) {
        const Vec u = to_d(randv(rng, x.size()));
        expect_directional("attention dir " + std::to_string(d), central_diff(L, x, u), g, u);
    }
    // the rows that see no key have no gradient at all
    for (int h = 0; h < H; h++)
        for (int e = 0; e < D; e++) {
            EXPECT_EQ(dq[((size_t)T + 0) * C + h * D + e], 0.0f);
            EXPECT_EQ(dk[((size_t)T + 1) * C + h * D + e], 0.0f); // a padded key
        }
}

TEST_F(Bwd, ActivationFiniteDifferences) {
    const size_t n = 301;
    auto x = randv(rng, n, -6, 6);
    for (auto &v : x)
        if (std::fabs(v) < 1e-3f) v = 0.5f; // keep ReLU's kink out of reach of the step
    const auto dy = randv(rng, n, -2, 2);
    const Vec r = to_d(dy);
    for (auto &act : kActs) {
        float *dx = nans(n);
        ASSERT_EQ(bwd()->activation(be, dx, dy.data(), x.data(), n, act.first, 0), CVENE_OK) << err;
        const auto g = host(dx, n);
        auto L = [&](const Vec &xx) {
            double s = 0;
            for (size_t i = 0; i < n; i++) s += r[i] * act_d(xx[i], act.first);
            return s;
        };
        const Vec u = to_d(randv(rng, n));
        expect_directional(std::string("activation ") + act.second, central_diff(L, to_d(x), u), g, u);
    }
}

TEST_F(Bwd, XentFiniteDifferencesAndLoss) {
    const int N = 6, V = 53;
    const float scale = 0.2f;
    auto x = randv(rng, (size_t)N * V, -4, 4);
    for (int j = 0; j < V; j++) x[(size_t)2 * V + j] += 30.0f; // a shifted row
    const std::vector<int32_t> labels = {3, 52, -100, 0, 17, 26};
    std::vector<float> dl(x.size()), loss(N);
    ASSERT_EQ(bwd()->xent(be, dl.data(), loss.data(), x.data(), labels.data(), N, V, scale), CVENE_OK) << err;
    auto L = [&](const Vec &xx) { return xent_d(xx, labels, N, V, scale); };
    for (int d = 0; d < 3; d++) {
        const Vec u = to_d(randv(rng, x.size()));
        expect_directional("xent dir " + std::to_string(d), central_diff(L, to_d(x), u), dl, u);
    }
    for (int r = 0; r < N; r++) {
        const std::vector<int32_t> one = {labels[r]};
        const Vec row(x.begin() + (size_t)r * V, x.begin() + (size_t)(r + 1) * V);
        const double want = xent_d(row, one, 1, V, 1.0);
        EXPECT_NEAR(loss[r], want, 1e-6 * std::max(1.0, want)) << "row " << r;
    }
}

// Results do not depend on the thread count (every element is computed by one thread in a fixed
// order; attention's per-head sgemms run single-threaded): 1 vs 3 threads at sizes past the
// parallel thresholds, bit for bit. matmul_tn (a threaded sgemm) is checked for repeatability.
TEST_F(Bwd, CpuResultsIndependentOfThreadCount) {
    cvene_backend *b1 = cvene_backend_cpu_new(1, err, sizeof err), *b3 = cvene_backend_cpu_new(3, err, sizeof err);
    ASSERT_TRUE(b1 && b3) << err;
    auto same = [&](const char *what, size_t n, const std::function<void(cvene_backend *, float *)> &run) {
        std::vector<float> o1(n, NAN), o3(n, NAN);
        run(b1, o1.data());
        run(b3, o3.data());
        EXPECT_EQ(std::memcmp(o1.data(), o3.data(), n * sizeof(float)), 0) << what;
    };
    {
        const int N = 300, C = 257;
        const auto x = randv(rng, (size_t)N * C), dy = randv(rng, (size_t)N * C), w = randv(rng, C);
        same("layernorm", x.size(), [&](cvene_backend *b, float *o) {
            ASSERT_EQ(b->ops->bwd->layernorm(b, o, dy.data(), x.data(), w.data(), N, C, 1e-5f, 0), CVENE_OK);
        });
    }
    {
        const int B = 2, T = 67, H = 3, D = 13, C = H * D;
        const size_t nq = (size_t)B * T * C, np = (size_t)B * H * T * T;
        const auto q = randv(rng, nq), k = randv(rng, nq), v = randv(rng, nq), dout = randv(rng, nq);
        std::vector<float> probs(np);
        ASSERT_EQ(b1->ops->attn_probs(b1, probs.data(), q.data(), (size_t)T * C, k.data(), (size_t)T * C, nullptr, B, T,
                                      T, H, D, 0.3f),
                  CVENE_OK);
        for (int which = 0; which < 3; which++)
            same("attention", nq, [&](cvene_backend *b, float *o) {
                std::vector<float> g0(nq), g1(nq), g2(nq), dp(np);
                ASSERT_EQ(b->ops->bwd->attention(b, g0.data(), g1.data(), g2.data(), dp.data(), dout.data(), q.data(),
                                                 k.data(), v.data(), probs.data(), B, T, H, D, 0.3f),
                          CVENE_OK);
                std::memcpy(o, (which == 0 ? g0 : which == 1 ? g1 : g2).data(), nq * sizeof(float));
            });
    }
    {
        const size_t n = 262147;
        const auto x = randv(rng, n, -6, 6), dy = randv(rng, n);
        for (auto &act : kActs)
            same(act.second, n, [&](cvene_backend *b, float *o) {
                ASSERT_EQ(b->ops->bwd->activation(b, o, dy.data(), x.data(), n, act.first, 0), CVENE_OK);
            });
        same("mul", n, [&](cvene_backend *b, float *o) {
            ASSERT_EQ(b->ops->bwd->mul(b, o, dy.data(), x.data(), n, 0), CVENE_OK);
        });
        same("affine", n, [&](cvene_backend *b, float *o) {
            ASSERT_EQ(b->ops->bwd->affine(b, o, dy.data(), x.data(), 0.5f, 2.0f, -1.0f, n), CVENE_OK);
        });
    }
    {
        const int N = 13, V = 5101;
        const auto x = randv(rng, (size_t)N * V, -5, 5);
        std::vector<int32_t> labels(N);
        for (int r = 0; r < N; r++) labels[r] = r == 4 ? -100 : (r * 389) % V;
        same("xent", x.size(), [&](cvene_backend *b, float *o) {
            std::vector<float> loss(N);
            ASSERT_EQ(b->ops->bwd->xent(b, o, loss.data(), x.data(), labels.data(), N, V, 0.1f), CVENE_OK);
        });
    }
    {
        const int M = 1031, N = 257;
        const auto x = randv(rng, (size_t)M * N);
        same("sum_rows", N, [&](cvene_backend *b, float *o) {
            ASSERT_EQ(b->ops->bwd->sum_rows(b, o, x.data(), M, N, 0), CVENE_OK);
        });
    }
    {
        const int B = 2, T = 257, H = 8, D = 64, ld = H * D;
        const auto x = randv(rng, (size_t)B * T * ld);
        same("rotary", x.size(), [&](cvene_backend *b, float *o) {
            std::memcpy(o, x.data(), x.size() * sizeof(float));
            ASSERT_EQ(b->ops->bwd->rotary(b, o, ld, nullptr, B, T, H, D, D, 10000.0f), CVENE_OK);
        });
    }
    {
        const int M = 64, K = 257, N = 257;
        const auto a = randv(rng, (size_t)M * K), bm = randv(rng, (size_t)M * N);
        std::vector<float> o1((size_t)K * N), o2((size_t)K * N);
        ASSERT_EQ(b3->ops->bwd->matmul_tn(b3, o1.data(), a.data(), bm.data(), M, K, N, 0), CVENE_OK);
        ASSERT_EQ(b3->ops->bwd->matmul_tn(b3, o2.data(), a.data(), bm.data(), M, K, N, 0), CVENE_OK);
        EXPECT_EQ(o1, o2) << "matmul_tn repeated on 3 threads";
    }
    cvene_backend_cpu_free(b1);
    cvene_backend_cpu_free(b3);
}
#endif // !CVENE_TEST_CUDA

#if CVENE_TEST_CUDA
// ---- every CUDA op against the CPU op at odd sizes ----

class CudaBwd : public BackendPair {
  protected:
    // max |cuda - cpu| <= kTol * max |cpu| (header comment); non-finite values must match
    void expect_rel(const float *c, const float *g, size_t n, const std::string &what) {
        const std::vector<float> hc = download(cpu, c, n), hg = download(gpu, g, n);
        double mx = 0.0, e = 0.0;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            if (!std::isfinite(hc[i]) || !std::isfinite(hg[i])) {
                bad += !((std::isnan(hc[i]) && std::isnan(hg[i])) || hc[i] == hg[i]);
                continue;
            }
            mx = std::max(mx, (double)std::fabs(hc[i]));
            e = std::max(e, std::fabs((double)hc[i] - hg[i]));
        }
        EXPECT_EQ(bad, 0u) << what << ": non-finite values differ";
        EXPECT_LE(e, kTol * mx) << what << " (max |cpu| " << mx << ")";
        std::printf("[ bwd cuda ] %-44s rel diff %.2e\n", what.c_str(), mx > 0 ? e / mx : e);
    }
    Pair<float> nans2(size_t n) { return both(std::vector<float>(n, NAN)); }
    const cvene_ops_bwd *cb() const { return cpu->ops->bwd; }
    const cvene_ops_bwd *gb() const { return gpu->ops->bwd; }
};

TEST_F(CudaBwd, LayerNorm) {
    for (auto nc : {std::pair<int, int>{1, 1}, {3, 37}, {5, 300}, {2, 1031}})
        for (int acc : {0, 1}) {
            const int N = nc.first, C = nc.second;
            const size_t n = (size_t)N * C;
            auto x = both(randf(n, -2.0f, 5.0f)), dy = both(randf(n)), w = both(randf(C, -2.0f, 2.0f));
            auto dx = both(randf(n));
            ASSERT_EQ(cb()->layernorm(cpu, dx.c, dy.c, x.c, w.c, N, C, 1e-5f, acc), CVENE_OK);
            ASSERT_EQ(gb()->layernorm(gpu, dx.g, dy.g, x.g, w.g, N, C, 1e-5f, acc), CVENE_OK) << msg(gpu);
            expect_rel(dx.c, dx.g, n, "layernorm " + tag({{"N", N}, {"C", C}, {"acc", acc}}));
        }
}

TEST_F(CudaBwd, Attention) {
    struct Case {
        int B, T, H, D, mask;
    };
    for (const Case c : {Case{1, 1, 1, 1, 0}, Case{2, 5, 3, 4, 1}, Case{2, 9, 2, 33, 1}, Case{1, 37, 2, 7, 0},
                         Case{3, 6, 1, 5, 1}}) {
        const int C = c.H * c.D;
        const size_t nq = (size_t)c.B * c.T * C, np = (size_t)c.B * c.H * c.T * c.T;
        const float scale = 1.0f / std::sqrt((float)c.D);
        const auto q = randf(nq, -2.0f, 2.0f), k = randf(nq, -2.0f, 2.0f);
        std::vector<int32_t> mask((size_t)c.B * c.T, 1);
        if (c.mask) { // batch 0 left-padded by 2 (all-zero rows), the last batch with a hole
            for (int j = 0; j < std::min(2, c.T); j++) mask[j] = 0;
            mask[(size_t)(c.B - 1) * c.T + c.T / 2] = 0;
        }
        // the same probabilities on both (the CPU's attn_probs), so only the backward differs
        std::vector<float> probs(np);
        ASSERT_EQ(cpu->ops->attn_probs(cpu, probs.data(), q.data(), (size_t)c.T * C, k.data(), (size_t)c.T * C,
                                       mask.data(), c.B, c.T, c.T, c.H, c.D, scale),
                  CVENE_OK);
        auto qp = both(q), kp = both(k), vp = both(randf(nq)), dout = both(randf(nq)), pp = both(probs);
        auto dq = nans2(nq), dk = nans2(nq), dv = nans2(nq), dp = nans2(np);
        ASSERT_EQ(cb()->attention(cpu, dq.c, dk.c, dv.c, dp.c, dout.c, qp.c, kp.c, vp.c, pp.c, c.B, c.T, c.H, c.D,
                                  scale),
                  CVENE_OK);
        ASSERT_EQ(gb()->attention(gpu, dq.g, dk.g, dv.g, dp.g, dout.g, qp.g, kp.g, vp.g, pp.g, c.B, c.T, c.H, c.D,
                                  scale),
                  CVENE_OK)
            << msg(gpu);
        const std::string t = tag({{"B", c.B}, {"T", c.T}, {"H", c.H}, {"D", c.D}, {"mask", c.mask}});
        expect_rel(dq.c, dq.g, nq, "attention dq " + t);
        expect_rel(dk.c, dk.g, nq, "attention dk " + t);
        expect_rel(dv.c, dv.g, nq, "attention dv " + t);
    }
}

TEST_F(CudaBwd, Activation) {
    for (auto &act : kActs)
        for (size_t n : {size_t(1), size_t(1000), size_t(4099)})
            for (int acc : {0, 1}) {
                std::vector<float> xv = randf(n, -8.0f, 8.0f);
                const float special[] = {0.0f, 1e-3f, -1e-3f, 20.0f, -20.0f, 60.0f, -60.0f};
                for (size_t i = 0; i < std::min(n, std::size(special)); i++) xv[i] = special[i];
                auto x = both(xv), dy = both(randf(n, -2.0f, 2.0f)), dx = both(randf(n));
                ASSERT_EQ(cb()->activation(cpu, dx.c, dy.c, x.c, n, act.first, acc), CVENE_OK);
                ASSERT_EQ(gb()->activation(gpu, dx.g, dy.g, x.g, n, act.first, acc), CVENE_OK) << msg(gpu);
                expect_rel(dx.c, dx.g, n,
                           std::string("activation ") + act.second + " " + tag({{"n", (long long)n}, {"acc", acc}}));
            }
}

TEST_F(CudaBwd, Rotary) {
    for (int rot : {0, 2, 7, 10})
        for (int with_pos : {0, 1}) {
            const int B = 2, T = 5, H = 3, D = 10, ld = H * D + 3;
            const size_t n = (size_t)B * T * ld;
            auto x = both(randf(n, -2.0f, 2.0f));
            Pair<int32_t> pos;
            if (with_pos) pos = both(randi((size_t)B * T, 0, 5000));
            ASSERT_EQ(cb()->rotary(cpu, x.c, ld, pos.c, B, T, H, D, rot, 10000.0f), CVENE_OK);
            ASSERT_EQ(gb()->rotary(gpu, x.g, ld, pos.g, B, T, H, D, rot, 10000.0f), CVENE_OK) << msg(gpu);
            expect_rel(x.c, x.g, n, "rotary " + tag({{"rot", rot}, {"pos", with_pos}}));
        }
}

TEST_F(CudaBwd, MatmulTn) {
    struct Case {
        int M, K, N;
    };
    for (const Case c : {Case{1, 1, 1}, Case{7, 37, 11}, Case{130, 33, 65}, Case{5, 3, 200}})
        for (int acc : {0, 1}) {
            auto a = both(randf((size_t)c.M * c.K)), b = both(randf((size_t)c.M * c.N));
            auto out = both(randf((size_t)c.K * c.N));
            ASSERT_EQ(cb()->matmul_tn(cpu, out.c, a.c, b.c, c.M, c.K, c.N, acc), CVENE_OK);
            ASSERT_EQ(gb()->matmul_tn(gpu, out.g, a.g, b.g, c.M, c.K, c.N, acc), CVENE_OK) << msg(gpu);
            expect_rel(out.c, out.g, (size_t)c.K * c.N,
                       "matmul_tn " + tag({{"M", c.M}, {"K", c.K}, {"N", c.N}, {"acc", acc}}));
        }
}

TEST_F(CudaBwd, Xent) {
    for (auto nv : {std::pair<int, int>{1, 1}, {7, 37}, {3, 5003}})
        for (int inplace : {0, 1}) {
            const int N = nv.first, V = nv.second;
            const size_t n = (size_t)N * V;
            std::vector<int32_t> labels = randi(N, 0, V - 1);
            if (N > 1) labels[1] = -100; // ignored
            if (N > 2) labels[2] = V;    // out of range: NaN on both
            auto x = both(randf(n, -6.0f, 6.0f));
            auto lab = both(labels);
            auto dl = inplace ? x : nans2(n);
            auto loss = nans2(N);
            ASSERT_EQ(cb()->xent(cpu, dl.c, loss.c, x.c, lab.c, N, V, 0.25f), CVENE_OK);
            ASSERT_EQ(gb()->xent(gpu, dl.g, loss.g, x.g, lab.g, N, V, 0.25f), CVENE_OK) << msg(gpu);
            const std::string t = tag({{"N", N}, {"V", V}, {"inplace", inplace}});
            expect_rel(dl.c, dl.g, n, "xent dlogits " + t);
            expect_rel(loss.c, loss.g, N, "xent loss " + t);
        }
}

TEST_F(CudaBwd, ElementwiseAndSumRows) {
    for (size_t n : {size_t(1), size_t(4099)}) {
        auto a = both(randf(n, -3.0f, 3.0f)), b = both(randf(n, -3.0f, 3.0f));
        for (int with_b : {0, 1}) {
            auto out = nans2(n);
            ASSERT_EQ(cb()->affine(cpu, out.c, a.c, with_b ? b.c : nullptr, 0.75f, -1.5f, 0.25f, n), CVENE_OK);
            ASSERT_EQ(gb()->affine(gpu, out.g, a.g, with_b ? b.g : nullptr, 0.75f, -1.5f, 0.25f, n), CVENE_OK)
                << msg(gpu);
            expect_rel(out.c, out.g, n, "affine " + tag({{"n", (long long)n}, {"b", with_b}}));
        }
        for (int acc : {0, 1}) {
            auto out = both(randf(n));
            ASSERT_EQ(cb()->mul(cpu, out.c, a.c, b.c, n, acc), CVENE_OK);
            ASSERT_EQ(gb()->mul(gpu, out.g, a.g, b.g, n, acc), CVENE_OK) << msg(gpu);
            expect_rel(out.c, out.g, n, "mul " + tag({{"n", (long long)n}, {"acc", acc}}));
        }
    }
    for (auto mn : {std::pair<int, int>{1, 1}, {67, 37}, {1000, 3}, {5, 300}, {0, 7}})
        for (int acc : {0, 1}) {
            const int M = mn.first, N = mn.second;
            auto x = both(randf(std::max<size_t>(1, (size_t)M * N), -2.0f, 2.0f)), out = both(randf(N));
            ASSERT_EQ(cb()->sum_rows(cpu, out.c, x.c, M, N, acc), CVENE_OK);
            ASSERT_EQ(gb()->sum_rows(gpu, out.g, x.g, M, N, acc), CVENE_OK) << msg(gpu);
            expect_rel(out.c, out.g, N, "sum_rows " + tag({{"M", M}, {"N", N}, {"acc", acc}}));
        }
}

// Same inputs twice on the device: the same bits (fixed-order reductions, no atomics).
TEST_F(CudaBwd, Deterministic) {
    const int B = 2, T = 33, H = 2, D = 16, C = H * D, N = 9, V = 1001;
    const size_t nq = (size_t)B * T * C, np = (size_t)B * H * T * T;
    const auto q = randf(nq, -2.0f, 2.0f), k = randf(nq, -2.0f, 2.0f);
    std::vector<float> probs(np);
    ASSERT_EQ(cpu->ops->attn_probs(cpu, probs.data(), q.data(), (size_t)T * C, k.data(), (size_t)T * C, nullptr, B, T,
                                   T, H, D, 0.25f),
              CVENE_OK);
    auto qp = both(q), kp = both(k), vp = both(randf(nq)), dout = both(randf(nq)), pp = both(probs);
    auto logits = both(randf((size_t)N * V, -5.0f, 5.0f));
    auto labels = both(randi(N, 0, V - 1));
    std::vector<std::vector<float>> runs[2];
    for (auto &r : runs) {
        auto dq = nans2(nq), dk = nans2(nq), dv = nans2(nq), dp = nans2(np), dl = nans2((size_t)N * V),
             loss = nans2(N), sr = nans2(C);
        ASSERT_EQ(gb()->attention(gpu, dq.g, dk.g, dv.g, dp.g, dout.g, qp.g, kp.g, vp.g, pp.g, B, T, H, D, 0.25f),
                  CVENE_OK)
            << msg(gpu);
        ASSERT_EQ(gb()->xent(gpu, dl.g, loss.g, logits.g, labels.g, N, V, 0.5f), CVENE_OK) << msg(gpu);
        ASSERT_EQ(gb()->sum_rows(gpu, sr.g, dq.g, B * T, C, 0), CVENE_OK) << msg(gpu);
        r = {download(gpu, dq.g, nq), download(gpu, dk.g, nq), download(gpu, dv.g, nq),
             download(gpu, dl.g, (size_t)N * V), download(gpu, loss.g, N), download(gpu, sr.g, C)};
    }
    for (size_t i = 0; i < runs[0].size(); i++) EXPECT_EQ(runs[0][i], runs[1][i]) << "output " << i;
}
#endif // CVENE_TEST_CUDA

} // namespace
