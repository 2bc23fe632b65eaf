// bwd.gru_cell (kernels/backend.h): the element-wise backward of one step of pyvene's GRUCell,
// against torch autograd through pyvene's own GRUCell (tests/fixtures/backward/gru_cell.safetensors,
// tools/make_gru_backward_fixtures.py), finite differences (CPU) and the CPU op (CUDA).
//
// Built three times, as test_backward_ops (tests/CMakeLists.txt):
//   test_gru_cell_bwd      (label unit)  the CPU op;
//   test_gru_cell_bwd_cuda (label cuda)  the CUDA op, skipped without a GPU;
//   test_gru_cell_bwd_emu  (label emu)   the CUDA op on the kernel emulator, in every ctest.
// Error measure and tolerance as test_backward_ops: max |got - ref| / max |ref| per tensor, within
// kTol = 1e-5. Every gradient element here is a chain of at most four f32 products and one
// expf / tanhf (last-ulp differences), so its error is a few ulps (~1e-6) of the chain's value;
// the saved forward values the op reads are torch's f32 forward, so against float64 autograd the
// forward's own rounding adds ~1e-7 (measured: the printed "[ bwd err ]" lines).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
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
constexpr unsigned kStages[] = {CVENE_GRU_BWD_HIDDEN,     CVENE_GRU_BWD_NEW_ACT,   CVENE_GRU_BWD_NEW_IN,
                                CVENE_GRU_BWD_UPDATE_ACT, CVENE_GRU_BWD_UPDATE_IN, CVENE_GRU_BWD_RESET_ACT,
                                CVENE_GRU_BWD_RESET_IN};

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

std::vector<float> slice(const std::vector<float> &v, size_t off, size_t n) {
    return std::vector<float>(v.begin() + (ptrdiff_t)off, v.begin() + (ptrdiff_t)(off + n));
}

// Random saved values (8, n) of a consistent forward (the gates recomputed from their inputs in
// double and rounded), gate inputs in [-6, 6] with a few saturated, and a gradient dy (n).
void random_cell(std::mt19937 &rng, size_t n, std::vector<float> *saved, std::vector<float> *dy) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    saved->assign(CVENE_GRU_N_SAVED * n, 0.0f);
    dy->resize(n);
    float *S = saved->data();
    for (size_t i = 0; i < n; i++) {
        const double h = 1.5 * u(rng), ar = i % 97 == 3 ? 16.0 : 6.0 * u(rng), az = i % 89 == 5 ? -17.0 : 6.0 * u(rng);
        const double hn = 3.0 * u(rng), xn = 3.0 * u(rng);
        const double r = 1.0 / (1.0 + std::exp(-ar)), z = 1.0 / (1.0 + std::exp(-az));
        const double an = i % 83 == 7 ? 10.0 : xn + r * hn;
        const double vals[CVENE_GRU_N_SAVED] = {h, ar, az, an, r, z, std::tanh(an), hn};
        for (int k = 0; k < CVENE_GRU_N_SAVED; k++) S[(size_t)k * n + i] = (float)vals[k];
        (*dy)[i] = u(rng);
    }
}

// ---- the backend under test ----

class GruCellBwd : public BackendUnderTest {
  protected:
    std::vector<void *> bufs;

    GruCellBwd() : BackendUnderTest(2025, "gru_cell") {}
    void SetUp() override {
        BackendUnderTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        ASSERT_NE(be->ops->bwd, nullptr);
        ASSERT_NE(be->ops->bwd->gru_cell, nullptr) << be->ops->name << " has no bwd.gru_cell";
    }
    void TearDown() override {
        for (void *p : bufs)
            if (be) be->ops->free(be, p);
        BackendUnderTest::TearDown();
    }
    float *dev(const std::vector<float> &h) {
        void *p = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &p, std::max<size_t>(1, h.size()) * sizeof(float)), CVENE_OK) << err;
        bufs.push_back(p);
        if (!h.empty()) {
            EXPECT_EQ(be->ops->to_device(be, p, h.data(), h.size() * sizeof(float)), CVENE_OK) << err;
        }
        return static_cast<float *>(p);
    }
    float *nans(size_t n) { return dev(std::vector<float>(n, NAN)); }
    std::vector<float> host(const float *p, size_t n) {
        std::vector<float> h(n);
        if (n) {
            EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(float)), CVENE_OK) << err;
        }
        return h;
    }
    cvene_status cell(float *dx, float *dhg, float *d, float *dhp, const float *dh, const float *S, size_t n,
                      unsigned st) {
        return be->ops->bwd->gru_cell(be, dx, dhg, d, dhp, dh, S, n, st);
    }
    void expect_torch(const Archive &a, const std::string &name, const std::vector<float> &got) {
        const double e64 = rel_err(got, a.get<double>(name + ".f64"));
        const double e32 = rel_err(got, a.get<float>(name + ".f32"));
        std::printf("[ bwd err  ] gru_cell   %-10s vs f64 autograd %.2e   vs torch f32 %.2e\n", name.c_str(), e64, e32);
        EXPECT_LE(e64, kTol) << name << " vs float64 autograd";
        EXPECT_LE(e32, kTol) << name << " vs torch float32 autograd";
    }
    // The outputs of one pass: the op run over `groups` (stage masks, one call each).
    struct Out {
        std::vector<float> dx, dhg, d, dhp;
    };
    Out run(const float *S, const std::vector<float> &dy, size_t n, std::initializer_list<unsigned> groups,
            bool alias = false) {
        float *dx = nans(3 * n), *dhg = nans(3 * n), *d = nans(3 * n), *dh = dev(dy);
        float *dhp = alias ? dh : nans(n);
        for (unsigned g : groups) EXPECT_EQ(cell(dx, dhg, d, dhp, dh, S, n, g), CVENE_OK) << err;
        return Out{host(dx, 3 * n), host(dhg, 3 * n), host(d, 3 * n), host(dhp, n)};
    }
};

// Every stage at once against torch: the gradients of x2h's and h2h's outputs, of h_{t-1}, and
// (d after the last stage) of the three gate inputs.
TEST_F(GruCellBwd, AllStagesVsTorch) {
    Archive a(std::string(CVENE_FIXTURES) + "/backward/gru_cell.safetensors");
    std::vector<int64_t> shape;
    const auto saved = a.get<float>("saved", &shape);
    ASSERT_EQ(shape.size(), 3u);
    ASSERT_EQ(shape[0], CVENE_GRU_N_SAVED);
    const size_t n = (size_t)(shape[1] * shape[2]);
    const Out o = run(dev(saved), a.get<float>("dy"), n, {CVENE_GRU_BWD_ALL});
    expect_torch(a, "dx", o.dx);
    expect_torch(a, "dhg", o.dhg);
    expect_torch(a, "dh_prev", o.dhp);
    expect_torch(a, "d_ar", slice(o.d, 0, n));
    expect_torch(a, "d_az", slice(o.d, n, n));
    expect_torch(a, "d_an", slice(o.d, 2 * n, n));
}

// One stage per call: what each stage leaves in d is the gradient of the tensor its grad site
// sees (d_n / d_z after HIDDEN: the new and update gates' outputs; d_r after NEW_IN: the reset
// gate's output), and the outputs are the one-call outputs bit for bit.
TEST_F(GruCellBwd, StageByStageVsTorch) {
    Archive a(std::string(CVENE_FIXTURES) + "/backward/gru_cell.safetensors");
    std::vector<int64_t> shape;
    const auto saved = a.get<float>("saved", &shape);
    const size_t n = (size_t)(shape[1] * shape[2]);
    const float *S = dev(saved), *dh = dev(a.get<float>("dy"));
    float *dx = nans(3 * n), *dhg = nans(3 * n), *d = nans(3 * n), *dhp = nans(n);
    ASSERT_EQ(cell(dx, dhg, d, dhp, dh, S, n, CVENE_GRU_BWD_HIDDEN), CVENE_OK) << err;
    auto dv = host(d, 3 * n);
    expect_torch(a, "d_z", slice(dv, n, n));
    expect_torch(a, "d_n", slice(dv, 2 * n, n));
    for (float v : slice(dv, 0, n)) EXPECT_TRUE(std::isnan(v)) << "HIDDEN wrote d_r";
    for (float v : host(dx, 3 * n)) EXPECT_TRUE(std::isnan(v)) << "HIDDEN wrote dx";
    ASSERT_EQ(cell(dx, dhg, d, dhp, dh, S, n, CVENE_GRU_BWD_NEW_ACT), CVENE_OK) << err;
    expect_torch(a, "d_an", slice(host(d, 3 * n), 2 * n, n));
    ASSERT_EQ(cell(dx, dhg, d, dhp, dh, S, n, CVENE_GRU_BWD_NEW_IN), CVENE_OK) << err;
    expect_torch(a, "d_r", slice(host(d, 3 * n), 0, n));
    for (unsigned st : {CVENE_GRU_BWD_UPDATE_ACT, CVENE_GRU_BWD_UPDATE_IN, CVENE_GRU_BWD_RESET_ACT,
                        CVENE_GRU_BWD_RESET_IN})
        ASSERT_EQ(cell(dx, dhg, d, dhp, dh, S, n, st), CVENE_OK) << err;
    const Out all = run(S, a.get<float>("dy"), n, {CVENE_GRU_BWD_ALL});
    EXPECT_EQ(host(dx, 3 * n), all.dx);
    EXPECT_EQ(host(dhg, 3 * n), all.dhg);
    EXPECT_EQ(host(d, 3 * n), all.d);
    EXPECT_EQ(host(dhp, n), all.dhp);
}

// Any split of the stages over calls, and dh_prev = dh, give the one-call bits (memcmp: NaN-free).
TEST_F(GruCellBwd, SplitsAndAliasingGiveTheSameBits) {
    const size_t n = 1001;
    std::vector<float> saved, dy;
    random_cell(rng, n, &saved, &dy);
    const float *S = dev(saved);
    const Out all = run(S, dy, n, {CVENE_GRU_BWD_ALL});
    auto same = [&](const Out &o, const char *what) {
        EXPECT_EQ(std::memcmp(o.dx.data(), all.dx.data(), 3 * n * 4), 0) << what << ": dx";
        EXPECT_EQ(std::memcmp(o.dhg.data(), all.dhg.data(), 3 * n * 4), 0) << what << ": dhg";
        EXPECT_EQ(std::memcmp(o.d.data(), all.d.data(), 3 * n * 4), 0) << what << ": d";
        EXPECT_EQ(std::memcmp(o.dhp.data(), all.dhp.data(), n * 4), 0) << what << ": dh_prev";
    };
    for (float v : all.dx) ASSERT_TRUE(std::isfinite(v));
    same(run(S, dy, n, {kStages[0], kStages[1], kStages[2], kStages[3], kStages[4], kStages[5], kStages[6]}),
         "one stage per call");
    same(run(S, dy, n,
             {CVENE_GRU_BWD_HIDDEN | CVENE_GRU_BWD_NEW_ACT,
              CVENE_GRU_BWD_NEW_IN | CVENE_GRU_BWD_UPDATE_ACT | CVENE_GRU_BWD_UPDATE_IN,
              CVENE_GRU_BWD_RESET_ACT | CVENE_GRU_BWD_RESET_IN}),
         "three calls");
    same(run(S, dy, n, {CVENE_GRU_BWD_ALL}, true), "dh_prev = dh");
}

// Unknown stage bits are refused naming the op; n = 0 or no stage leaves every output untouched.
TEST_F(GruCellBwd, RefusalsAndEmpty) {
    float *o = dev(std::vector<float>(24, 7.0f));
    const float *in = dev(std::vector<float>(24, 1.0f));
    EXPECT_EQ(cell(o, o + 3, o + 6, o + 9, in, in, 3, 1u << 7), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("gru_cell"), std::string::npos) << err;
    EXPECT_EQ(cell(o, o + 3, o + 6, o + 9, in, in, 0, CVENE_GRU_BWD_ALL), CVENE_OK) << err;
    EXPECT_EQ(cell(o, o + 3, o + 6, o + 9, in, in, 1, 0), CVENE_OK) << err;
    EXPECT_EQ(host(o, 24), std::vector<float>(24, 7.0f));
}

#if !CVENE_TEST_CUDA
// The cell's forward in double: hy (n) from h, the x2h and h2h outputs (3, n) gate-major.
std::vector<double> cell_forward_d(const std::vector<double> &h, const std::vector<double> &xg,
                                   const std::vector<double> &hg, size_t n) {
    std::vector<double> hy(n);
    for (size_t i = 0; i < n; i++) {
        const double r = 1.0 / (1.0 + std::exp(-(xg[i] + hg[i])));
        const double z = 1.0 / (1.0 + std::exp(-(xg[n + i] + hg[n + i])));
        const double nn = std::tanh(xg[2 * n + i] + r * hg[2 * n + i]);
        hy[i] = z * h[i] + (1.0 - z) * nn;
    }
    return hy;
}

// L = <dy, hy(h, xg, hg)>: central differences in double along random directions against the
// op's gradients (dh_prev, dx, dhg) from f32 saved values of the same forward, within kTol of
// sum |g_i u_i| (as test_backward_ops' finite differences).
TEST_F(GruCellBwd, FiniteDifferences) {
    const size_t n = 37;
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    std::vector<double> h(n), xg(3 * n), hg(3 * n);
    for (auto *v : {&h, &xg, &hg})
        for (auto &x : *v) x = 3.0 * u(rng);
    std::vector<float> dy(n), saved(CVENE_GRU_N_SAVED * n);
    for (auto &x : dy) x = (float)u(rng);
    for (size_t i = 0; i < n; i++) { // the forward's values, rounded to f32 as a forward stores them
        const double ar = xg[i] + hg[i], az = xg[n + i] + hg[n + i];
        const double r = 1.0 / (1.0 + std::exp(-ar)), z = 1.0 / (1.0 + std::exp(-az));
        const double an = xg[2 * n + i] + r * hg[2 * n + i];
        const double vals[CVENE_GRU_N_SAVED] = {h[i], ar, az, an, r, z, std::tanh(an), hg[2 * n + i]};
        for (int k = 0; k < CVENE_GRU_N_SAVED; k++) saved[(size_t)k * n + i] = (float)vals[k];
    }
    const Out o = run(dev(saved), dy, n, {CVENE_GRU_BWD_ALL});
    for (int which = 0; which < 3; which++) {
        std::vector<double> dir(which == 0 ? n : 3 * n);
        for (auto &x : dir) x = u(rng);
        auto L = [&](double hstep) {
            std::vector<double> a = h, b = xg, c = hg;
            std::vector<double> &tgt = which == 0 ? a : which == 1 ? b : c;
            for (size_t i = 0; i < dir.size(); i++) tgt[i] += hstep * dir[i];
            const auto hy = cell_forward_d(a, b, c, n);
            double s = 0.0;
            for (size_t i = 0; i < n; i++) s += (double)dy[i] * hy[i];
            return s;
        };
        const double eps = 1e-5, fd = (L(eps) - L(-eps)) / (2 * eps);
        const std::vector<float> &g = which == 0 ? o.dhp : which == 1 ? o.dx : o.dhg;
        double an = 0.0, sc = 0.0;
        for (size_t i = 0; i < g.size(); i++) an += (double)g[i] * dir[i], sc += std::fabs((double)g[i] * dir[i]);
        const double e = std::fabs(fd - an) / sc;
        std::printf("[ bwd fd   ] gru_cell %-8s directional derivative %+.6e  rel err %.2e\n",
                    which == 0 ? "dh_prev" : which == 1 ? "dx" : "dhg", fd, e);
        EXPECT_LE(e, kTol) << which;
    }
}

// Past the parallel threshold, 1 and 3 threads give the same bits (one thread per element).
TEST_F(GruCellBwd, CpuResultsIndependentOfThreadCount) {
    const size_t n = 40009;
    std::vector<float> saved, dy;
    random_cell(rng, n, &saved, &dy);
    std::vector<float> outs[2];
    int k = 0;
    for (int threads : {1, 3}) {
        cvene_backend *b = cvene_backend_cpu_new(threads, err, sizeof err);
        ASSERT_NE(b, nullptr) << err;
        std::vector<float> dx(3 * n), dhg(3 * n), d(3 * n), dhp(n);
        ASSERT_EQ(b->ops->bwd->gru_cell(b, dx.data(), dhg.data(), d.data(), dhp.data(), dy.data(), saved.data(), n,
                                        CVENE_GRU_BWD_ALL),
                  CVENE_OK);
        outs[k] = dx;
        outs[k].insert(outs[k].end(), dhg.begin(), dhg.end());
        outs[k].insert(outs[k].end(), d.begin(), d.end());
        outs[k].insert(outs[k].end(), dhp.begin(), dhp.end());
        k++;
        cvene_backend_cpu_free(b);
    }
    EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4), 0);
}
#endif // !CVENE_TEST_CUDA

#if CVENE_TEST_CUDA
// ---- the CUDA op against the CPU op ----

class CudaGruCellBwd : public BackendPair {};

// Odd sizes, saturated gates, every stage in one call and one stage per call: max |cuda - cpu|
// within kTol of max |cpu| per output (the two differ in the last ulp of expf / tanhf).
TEST_F(CudaGruCellBwd, MatchesCpu) {
    for (size_t n : {size_t(1), size_t(37), size_t(4099)})
        for (int split : {0, 1}) {
            std::vector<float> saved, dy;
            random_cell(rng, n, &saved, &dy);
            auto S = both(saved), dh = both(dy);
            const std::vector<float> nn(3 * n, NAN);
            auto dx = both(nn), dhg = both(nn), d = both(nn), dhp = both(std::vector<float>(n, NAN));
            const std::vector<unsigned> groups = split ? std::vector<unsigned>(std::begin(kStages), std::end(kStages))
                                                       : std::vector<unsigned>{CVENE_GRU_BWD_ALL};
            for (unsigned g : groups) {
                ASSERT_EQ(cpu->ops->bwd->gru_cell(cpu, dx.c, dhg.c, d.c, dhp.c, dh.c, S.c, n, g), CVENE_OK);
                ASSERT_EQ(gpu->ops->bwd->gru_cell(gpu, dx.g, dhg.g, d.g, dhp.g, dh.g, S.g, n, g), CVENE_OK) << msg(gpu);
            }
            const std::string t = " n " + std::to_string(n) + " split " + std::to_string(split);
            expect_close(dx.c, dx.g, 3 * n, "gru_cell dx" + t);
            expect_close(dhg.c, dhg.g, 3 * n, "gru_cell dhg" + t);
            expect_close(d.c, d.g, 3 * n, "gru_cell d" + t);
            expect_close(dhp.c, dhp.g, n, "gru_cell dh_prev" + t);
        }
}
#endif // CVENE_TEST_CUDA

} // namespace
