// The decoding ops (kernels/backend.h: cvene_ops_gen): gen.sample against an independent
// reference written here the obvious way, and gen.copy2d.
//
// Built three times (tests/CMakeLists.txt):
//   test_sample      (label unit)  the CPU ops;
//   test_sample_cuda (label cuda)  the CUDA ops, skipped without a GPU;
//   test_sample_emu  (label emu)   the CUDA ops on the kernel emulator, in every ctest.
// Every build runs the reference, greedy, done / stop, stride, statistical and refusal checks on
// its backend; the CPU build adds thread-count independence; the CUDA builds add the CUDA ops
// against the CPU ops (greedy ids, sampled ids, done flags, copy2d bytes, run-to-run identity).
//
// The reference (ref_sample): transformers' TemperatureLogitsWarper -> TopKLogitsWarper ->
// TopPLogitsWarper written with std::sort: z = logit / T; top-k: z below the k-th largest of a
// sorted copy becomes -inf; top-p: sort ascending, softmax (expf(z - max) as the spec's w, in
// double), cumulative sum, remove where cumsum <= 1 - top_p, always keep the last (largest);
// then softmax over what is left and the inverse CDF in vocabulary order: the first token whose
// cumulative probability exceeds u, u from splitmix64 written here from the header's formula.
// On logits without ties this is the op's rule exactly (keep i when the w of the larger z sum
// to < top_p * W is cumsum_i > 1 - top_p; target = u * S is cum > u after normalising), so
// ids must be equal, except where rounding decides: the op sums w in index order (CPU) or a
// fixed tree (CUDA), the reference in sorted order, and the GPU's expf may differ from the
// host's by an ulp. A row is skipped (and counted) when u or 1 - top_p lies within kMargin of
// one of the reference's cumulative sums: 1e-9 on the CPU (double sums of at most 50257 terms
// differ by ~1e-11), 1e-6 with CUDA (expf's ulp, 1.2e-7 relative per term, moves a normalised
// sum by at most about that). Each check asserts that at most 5% of its rows were skipped.
//
// Statistical check: the ids of 20000 draws (different steps and rows; 500 on the emulator)
// against the reference's probabilities after the warpers: each token's frequency within
// 5 sigma of its probability (sigma = sqrt(p (1 - p) / N); 5 sigma: a false failure has
// probability below 1e-6 per token), and tokens the warpers removed never drawn.
//
// CUDA vs CPU: greedy is exact on both (max and the first index holding it), so ids are equal
// for any logits (ties, NaN, infinities). Sampled ids are equal unless the target falls within
// rounding of a boundary of the running sum, or a token sits at the top-p cut: top-k thresholds
// are exact on both (the same f32 divisions and comparisons), but the CUDA sums run in another
// order (and the GPU's expf may differ in the last ulp), so rows whose CPU target is within
// 1e-6 relative of a boundary (tested with the reference's cumulative sums) are skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "backend_under_test.h"

#ifndef CVENE_TEST_CUDA
#define CVENE_TEST_CUDA 0
#endif
#ifndef CVENE_TEST_EMU
#define CVENE_TEST_EMU 0
#endif
#if CVENE_TEST_CUDA
#include "backend_pair.h"
#endif

namespace {

// see the header comment
constexpr double kMargin = CVENE_TEST_CUDA ? 1e-6 : 1e-9;
// the emulator runs every CUDA thread as a fiber: fewer and smaller rows there
constexpr bool kEmu = CVENE_TEST_EMU != 0;

cvene_sample_params sampling(float temperature, int top_k, float top_p, uint64_t seed) {
    cvene_sample_params p;
    std::memset(&p, 0, sizeof p);
    p.greedy = 0;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.seed = seed;
    return p;
}
cvene_sample_params greedy() {
    cvene_sample_params p = sampling(1.0f, 0, 1.0f, 0);
    p.greedy = 1;
    return p;
}

// ---- the reference ----

uint64_t ref_splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
double ref_uniform(uint64_t seed, uint64_t step, int b) {
    const uint64_t x = ref_splitmix64(ref_splitmix64(seed + step) + (uint64_t)b);
    return std::ldexp((double)(x >> 40), -24);
}

// torch.argmax with the header's NaN rule: the first largest non-NaN logit, 0 when all are NaN
int ref_argmax(const float *x, int V) {
    std::vector<int> idx;
    for (int i = 0; i < V; i++)
        if (!std::isnan(x[i])) idx.push_back(i);
    if (idx.empty()) return 0;
    return *std::max_element(idx.begin(), idx.end(), [&](int a, int b) { return x[a] < x[b]; });
}

struct Ref {
    int token = 0;
    bool near = false;         // u or the top-p cut within kMargin of a cumulative sum
    std::vector<double> probs; // after the warpers, vocabulary order
};

// The warpers and the draw on one row without ties or NaN (see the header comment).
Ref ref_sample(const float *x, int V, const cvene_sample_params &p, double u, double margin = kMargin) {
    Ref r;
    std::vector<float> z(V);
    for (int i = 0; i < V; i++) z[i] = x[i] / p.temperature; // TemperatureLogitsWarper
    if (p.top_k > 0) {                                       // TopKLogitsWarper
        const int k = std::min(p.top_k, V);
        std::vector<float> s = z;
        std::sort(s.begin(), s.end(), std::greater<float>());
        const float kth = s[k - 1];
        for (float &v : z)
            if (v < kth) v = -INFINITY;
    }
    if (p.top_p < 1.0f) { // TopPLogitsWarper
        std::vector<int> idx(V);
        std::iota(idx.begin(), idx.end(), 0);
        std::sort(idx.begin(), idx.end(), [&](int a, int b) { return z[a] < z[b]; });
        const float zmax = z[idx[V - 1]];
        std::vector<double> e(V);
        double sum = 0.0;
        for (int j = 0; j < V; j++) {
            e[j] = z[idx[j]] == -INFINITY ? 0.0 : (double)std::exp(z[idx[j]] - zmax);
            sum += e[j];
        }
        const double cut = 1.0 - (double)p.top_p;
        double cum = 0.0;
        std::vector<int> remove;
        for (int j = 0; j < V; j++) {
            cum += e[j] / sum;
            if (e[j] > 0.0 && std::fabs(cum - cut) <= margin) r.near = true;
            if (cum <= cut && j < V - 1) remove.push_back(idx[j]);
        }
        for (int i : remove) z[i] = -INFINITY;
    }
    const float zmax = *std::max_element(z.begin(), z.end());
    r.probs.assign(V, 0.0);
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        r.probs[i] = z[i] == -INFINITY ? 0.0 : (double)std::exp(z[i] - zmax);
        sum += r.probs[i];
    }
    for (double &q : r.probs) q /= sum;
    double cum = 0.0;
    r.token = -1;
    for (int i = 0; i < V; i++) {
        if (r.probs[i] == 0.0) continue;
        cum += r.probs[i];
        if (std::fabs(cum - u) <= margin) r.near = true;
        if (r.token < 0 && cum > u) r.token = i;
    }
    if (r.token < 0) { // rounding left none: the last kept token
        r.near = true;
        for (int i = 0; i < V; i++)
            if (r.probs[i] > 0.0) r.token = i;
    }
    return r;
}

// n logits without ties (distinct floats), N(0, sigma)
std::vector<float> distinct_logits(std::mt19937 &rng, size_t n, float sigma) {
    std::normal_distribution<float> d(0.0f, sigma);
    std::vector<float> v(n);
    std::set<float> seen;
    for (auto &x : v) { // a repeat (dozens at 50257 normal floats) moves up to the next free float
        x = d(rng);
        while (!seen.insert(x).second) x = std::nextafter(x, INFINITY);
    }
    return v;
}

// A device buffer freed on scope exit.
template <class T> struct Dev {
    cvene_backend *be = nullptr;
    T *p = nullptr;
    size_t n = 0;
    Dev(cvene_backend *b, const std::vector<T> &h) : be(b), n(h.size()) {
        void *q = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &q, std::max<size_t>(1, n) * sizeof(T)), CVENE_OK);
        p = static_cast<T *>(q);
        if (p && n) {
            EXPECT_EQ(be->ops->to_device(be, p, h.data(), n * sizeof(T)), CVENE_OK);
        }
    }
    Dev(const Dev &) = delete;
    Dev &operator=(const Dev &) = delete;
    ~Dev() {
        if (p) be->ops->free(be, p);
    }
    std::vector<T> host() const {
        std::vector<T> h(n);
        if (n) {
            EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(T)), CVENE_OK);
        }
        return h;
    }
};

// One gen.sample call on host data: logits (B, ld), done (B) updated in place; returns ids.
// The scratch starts NaN-filled and the ids at a sentinel, so neither can leak into a result.
struct Call {
    cvene_status status = CVENE_OK;
    std::vector<int32_t> ids;
};
Call run_sample(cvene_backend *be, const std::vector<float> &logits, int64_t ld, int B, int V,
                const cvene_sample_params &sp, uint64_t step, std::vector<int32_t> &done,
                const std::vector<int32_t> &stop = {}, int32_t pad = -1) {
    Dev<float> x(be, logits), scratch(be, std::vector<float>((size_t)std::max(B, 0) * V, NAN));
    Dev<int32_t> ids(be, std::vector<int32_t>((size_t)std::max(B, 0), -777)), dn(be, done), st(be, stop);
    Call c;
    c.status = be->ops->gen->sample(be, ids.p, dn.p, x.p, ld, B, V, scratch.p, &sp, step,
                                    stop.empty() ? nullptr : st.p, (int)stop.size(), pad);
    c.ids = ids.host();
    done = dn.host();
    return c;
}

// ---- the backend under test ----

class Gen : public BackendUnderTest {
  protected:
    Gen() : BackendUnderTest(16, "decoding") {}
    Call sample(const std::vector<float> &logits, int64_t ld, int B, int V, const cvene_sample_params &sp,
                uint64_t step, std::vector<int32_t> &done, const std::vector<int32_t> &stop = {}, int32_t pad = -1) {
        return run_sample(be, logits, ld, B, V, sp, step, done, stop, pad);
    }
};

TEST_F(Gen, TableIsComplete) {
    const cvene_ops_gen *g = be->ops->gen;
    ASSERT_NE(g, nullptr) << be->ops->name << " has no decoding ops";
    EXPECT_TRUE(g->copy2d != nullptr);
    EXPECT_TRUE(g->sample != nullptr);
}

// Sampled ids against the reference over vocabulary sizes, batch sizes, warper settings, seeds
// and steps, on rows with ld > V whose padding (1e30) would win any draw that read it.
TEST_F(Gen, SampledIdsMatchTheReference) {
    struct Set {
        float T;
        int k;
        float p;
    };
    const Set sets[] = {{1.0f, 0, 1.0f},  {0.7f, 50, 1.0f}, {1.3f, 0, 0.9f},   {0.8f, 40, 0.95f},
                        {1.0f, 5, 0.5f},  {2.0f, 0, 0.3f},  {0.5f, 3, 1.0f},   {1.0f, 100000, 0.99f}};
    struct Shape {
        int V, B, steps;
    };
    std::vector<Shape> shapes = {{1, 3, 2}, {7, 8, 6}, {1000, 5, 4}, {50257, 2, 2}};
    if (kEmu) shapes = {{1, 2, 1}, {7, 4, 2}, {1000, 2, 1}, {50257, 1, 1}};
    int rows = 0, skipped = 0;
    for (const Shape &sh : shapes)
        for (const Set &s : sets)
            for (int pad : {0, 3}) {
                if (kEmu && sh.V == 50257 && pad) continue;
                const int V = sh.V, B = sh.B;
                const int64_t ld = V + pad;
                std::vector<float> logits((size_t)B * ld, 1e30f);
                for (int b = 0; b < B; b++) {
                    const auto row = distinct_logits(rng, V, 2.5f);
                    std::copy(row.begin(), row.end(), logits.begin() + (int64_t)b * ld);
                }
                for (int t = 0; t < sh.steps; t++) {
                    const uint64_t seed = 1000u + (uint64_t)rows, step = (uint64_t)t * 7919u;
                    const auto sp = sampling(s.T, s.k, s.p, seed);
                    std::vector<int32_t> done(B, 0);
                    const Call c = sample(logits, ld, B, V, sp, step, done);
                    ASSERT_EQ(c.status, CVENE_OK) << err;
                    for (int b = 0; b < B; b++) {
                        const Ref r = ref_sample(&logits[(size_t)b * ld], V, sp, ref_uniform(seed, step, b));
                        rows++;
                        if (r.near) {
                            skipped++;
                            continue;
                        }
                        EXPECT_EQ(c.ids[b], r.token) << "V=" << V << " B=" << B << " b=" << b << " T=" << s.T
                                                     << " k=" << s.k << " p=" << s.p << " seed=" << seed
                                                     << " step=" << step << " ld=" << ld;
                        EXPECT_EQ(done[b], 0);
                    }
                }
            }
    std::printf("[ sample   ] %d rows against the reference, %d skipped near a rounding boundary\n", rows, skipped);
    EXPECT_LE(skipped * 20, rows) << "more than 5% of the rows were near a boundary: the check tests too little";
}

// Greedy: the first largest logit (torch.argmax), ties at the lowest index, NaN never chosen
// unless the whole row is NaN (token 0), infinities ordinary values, -0 == +0; the sampling
// fields are not read (a zero temperature is fine).
TEST_F(Gen, GreedyIsTheArgmax) {
    const float nan = NAN, inf = INFINITY;
    const std::vector<std::vector<float>> rows = {
        {0.5f},
        {1.0f, 3.0f, 3.0f, 2.0f},
        {3.0f, 3.0f, 3.0f},
        {nan, 2.0f, nan, 2.0f, 1.0f},
        {nan, nan, nan},
        {-inf, -inf},
        {-inf, 1.0f, inf, inf},
        {nan, -inf, -inf},
        {-0.0f, 0.0f, -1.0f},
        {0.0f, -0.0f},
        {-5.0f, -4.0f, -4.5f, nan},
    };
    const std::vector<int> want = {0, 1, 0, 1, 0, 0, 2, 1, 0, 0, 1};
    int Vmax = 0;
    for (auto &r : rows) Vmax = std::max(Vmax, (int)r.size());
    for (size_t k = 0; k < rows.size(); k++) {
        const int V = (int)rows[k].size(), ld = Vmax + 2;
        std::vector<float> logits(ld, 1e30f); // padding past V would be the argmax
        std::copy(rows[k].begin(), rows[k].end(), logits.begin());
        auto sp = greedy();
        sp.temperature = 0.0f;
        sp.top_p = -1.0f;
        std::vector<int32_t> done(1, 0);
        const Call c = sample(logits, ld, 1, V, sp, 0, done);
        ASSERT_EQ(c.status, CVENE_OK) << err;
        EXPECT_EQ(c.ids[0], want[k]) << "row " << k;
        EXPECT_EQ(c.ids[0], ref_argmax(rows[k].data(), V)) << "row " << k;
    }
    // many rows, big vocabularies, planted ties and NaN
    for (int V : {7, 1000, 50257}) {
        const int B = kEmu ? 3 : 6;
        std::vector<float> logits((size_t)B * V);
        std::uniform_real_distribution<float> d(-3.0f, 3.0f);
        for (auto &x : logits) x = d(rng);
        for (int b = 0; b < B; b++) {
            float *r = &logits[(size_t)b * V];
            if (b % 3 == 1) { // a tie of the maximum at two places
                r[V - 1] = 10.0f;
                r[V / 2] = 10.0f;
            }
            if (b % 3 == 2)
                for (int i = 0; i < V; i += 5) r[i] = nan;
        }
        std::vector<int32_t> done(B, 0);
        const Call c = sample(logits, V, B, V, greedy(), 3, done);
        ASSERT_EQ(c.status, CVENE_OK) << err;
        for (int b = 0; b < B; b++) EXPECT_EQ(c.ids[b], ref_argmax(&logits[(size_t)b * V], V)) << "V=" << V << " b=" << b;
    }
}

// top_k = 1 keeps only the largest z, a tiny top_p only the most probable token: both are the
// argmax whatever u is (rows without ties).
TEST_F(Gen, TopKOneAndTinyTopPAreGreedy) {
    for (int V : {1, 7, 1000, 50257}) {
        const int B = kEmu ? 2 : 5;
        std::vector<float> logits;
        for (int b = 0; b < B; b++) {
            const auto r = distinct_logits(rng, V, 3.0f);
            logits.insert(logits.end(), r.begin(), r.end());
        }
        const int steps = kEmu && V > 1000 ? 1 : 3;
        for (int t = 0; t < steps; t++)
            for (const auto sp : {sampling(0.9f, 1, 1.0f, 5u + t), sampling(1.7f, 1, 0.6f, 9u + t),
                                  sampling(1.0f, 0, 1e-6f, 11u + t), sampling(0.3f, 20, 1e-6f, 13u + t)}) {
                std::vector<int32_t> done(B, 0);
                const Call c = sample(logits, V, B, V, sp, (uint64_t)t, done);
                ASSERT_EQ(c.status, CVENE_OK) << err;
                for (int b = 0; b < B; b++)
                    EXPECT_EQ(c.ids[b], ref_argmax(&logits[(size_t)b * V], V))
                        << "V=" << V << " b=" << b << " k=" << sp.top_k << " p=" << sp.top_p;
            }
    }
}

// The uniform is the header's splitmix64 bit for bit: with 2^16 equal logits every token has
// w = 1, the running sums are exact integers and the token is floor(u * 2^16), the top 16 of
// u's 24 bits, for every seed, step and row.
TEST_F(Gen, UniformIsTheSpecifiedSplitmix) {
    const int V = 1 << 16, B = kEmu ? 2 : 8;
    const std::vector<float> logits((size_t)B * V, 0.25f);
    for (uint64_t seed : {0ull, 42ull, 0xFFFFFFFFFFFFFFFFull})
        for (uint64_t step : {0ull, 1ull, 123456789ull}) {
            if (kEmu && step == 1) continue;
            std::vector<int32_t> done(B, 0);
            const Call c = sample(logits, V, B, V, sampling(1.0f, 0, 1.0f, seed), step, done);
            ASSERT_EQ(c.status, CVENE_OK) << err;
            for (int b = 0; b < B; b++)
                EXPECT_EQ(c.ids[b], (int)std::floor(ref_uniform(seed, step, b) * V))
                    << "seed=" << seed << " step=" << step << " b=" << b;
        }
}

// Finished rows get pad_id and are left as they are (their logits are not read: NaN here);
// a row whose token is a stop id gets done = 1; n_stop = 0 reads no stop list.
TEST_F(Gen, DoneRowsAndStopIds) {
    const int V = 9, B = 5;
    std::vector<float> logits((size_t)B * V);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < V; i++) logits[(size_t)b * V + i] = (float)((i * 7 + b * 3) % V); // argmax: distinct per row
    for (int i = 0; i < V; i++) logits[(size_t)1 * V + i] = NAN;
    std::vector<int> arg(B);
    for (int b = 0; b < B; b++) arg[b] = ref_argmax(&logits[(size_t)b * V], V);
    for (const auto sp : {greedy(), sampling(1.0f, 1, 1.0f, 3)}) { // top_k 1: the argmax too
        std::vector<int32_t> done = {0, 7, 0, 1, 0};
        const std::vector<int32_t> stop = {arg[2], 1000, arg[1]};
        const Call c = sample(logits, V, B, V, sp, 0, done, stop, -5);
        ASSERT_EQ(c.status, CVENE_OK) << err;
        EXPECT_EQ(c.ids, (std::vector<int32_t>{arg[0], -5, arg[2], -5, arg[4]}));
        EXPECT_EQ(done, (std::vector<int32_t>{0, 7, 1, 1, 0})) << "only row 2 drew a stop id";
        // again: row 2 is finished now
        const Call c2 = sample(logits, V, B, V, sp, 1, done, stop, 50256);
        ASSERT_EQ(c2.status, CVENE_OK) << err;
        EXPECT_EQ(c2.ids, (std::vector<int32_t>{arg[0], 50256, 50256, 50256, arg[4]}));
        EXPECT_EQ(done, (std::vector<int32_t>{0, 7, 1, 1, 0}));
        // no stop list
        std::vector<int32_t> none(B, 0);
        const Call c3 = sample(logits, V, B, V, sp, 2, none);
        ASSERT_EQ(c3.status, CVENE_OK) << err;
        EXPECT_EQ(none, std::vector<int32_t>(B, 0));
        EXPECT_EQ(c3.ids[2], arg[2]);
    }
    // B = 0 does nothing
    std::vector<int32_t> empty;
    EXPECT_EQ(sample({}, V, 0, V, greedy(), 0, empty).status, CVENE_OK) << err;
}

// Frequencies of many draws (different steps and rows) against the reference's probabilities
// after the warpers (the header comment gives the tolerance).
TEST_F(Gen, DrawFrequenciesMatchTheProbabilities) {
    const int V = 10, B = 20, N = kEmu ? 500 : 20000;
    const std::vector<float> row = {1.0f, -0.5f, 2.2f, 0.3f, -2.0f, 1.7f, 0.9f, -1.1f, 2.0f, 0.1f};
    std::vector<float> logits;
    for (int b = 0; b < B; b++) logits.insert(logits.end(), row.begin(), row.end());
    for (const auto sp0 : {sampling(1.0f, 0, 1.0f, 77), sampling(0.8f, 6, 0.9f, 78), sampling(1.5f, 0, 0.7f, 79)}) {
        const Ref r = ref_sample(row.data(), V, sp0, 0.5);
        std::vector<int> count(V, 0);
        for (int t = 0; t < N / B; t++) {
            std::vector<int32_t> done(B, 0);
            const Call c = sample(logits, V, B, V, sp0, (uint64_t)t, done);
            ASSERT_EQ(c.status, CVENE_OK) << err;
            for (int b = 0; b < B; b++) {
                ASSERT_TRUE(c.ids[b] >= 0 && c.ids[b] < V) << c.ids[b];
                count[c.ids[b]]++;
            }
        }
        double worst = 0.0;
        for (int i = 0; i < V; i++) {
            const double p = r.probs[i], f = (double)count[i] / N;
            if (p == 0.0) {
                EXPECT_EQ(count[i], 0) << "token " << i << " was removed by the warpers";
                continue;
            }
            const double sigma = std::sqrt(p * (1.0 - p) / N);
            worst = std::max(worst, std::fabs(f - p) / sigma);
            EXPECT_LE(std::fabs(f - p), 5.0 * sigma) << "token " << i << " p=" << p << " freq=" << f << " k=" << sp0.top_k
                                                     << " p=" << sp0.top_p;
        }
        std::printf("[ sample   ] %d draws, T=%.1f k=%d p=%.1f: worst |freq - p| %.2f sigma\n", N, sp0.temperature,
                    sp0.top_k, sp0.top_p, worst);
    }
}

// Non-finite logits in sampling: NaN never drawn (all-NaN row: token 0); -inf never drawn while
// a finite survivor exists; +inf tokens (or a z overflowing to +inf) share the draw; an all -inf
// row is a uniform draw.
TEST_F(Gen, NonFiniteLogitsWhenSampling) {
    const float nan = NAN, inf = INFINITY;
    auto draws = [&](const std::vector<float> &row, const cvene_sample_params &sp, int n) {
        const int V = (int)row.size();
        std::vector<int> count(V, 0);
        const int B = 8;
        std::vector<float> logits;
        for (int b = 0; b < B; b++) logits.insert(logits.end(), row.begin(), row.end());
        for (int t = 0; t < n / B; t++) {
            std::vector<int32_t> done(B, 0);
            const Call c = sample(logits, V, B, V, sp, (uint64_t)t, done);
            EXPECT_EQ(c.status, CVENE_OK) << err;
            for (int b = 0; b < B; b++) {
                EXPECT_TRUE(c.ids[b] >= 0 && c.ids[b] < V) << c.ids[b];
                if (c.ids[b] >= 0 && c.ids[b] < V) count[c.ids[b]]++;
            }
        }
        return count;
    };
    const int n = kEmu ? 64 : 400;
    for (const auto sp : {sampling(1.0f, 0, 1.0f, 1), sampling(0.7f, 2, 0.9f, 2)}) {
        auto c = draws({nan, 0.5f, nan, -inf, 0.2f}, sp, n);
        EXPECT_EQ(c[0] + c[2] + c[3], 0) << "NaN or -inf drawn";
        c = draws({nan, nan, nan}, sp, 16);
        EXPECT_EQ(c[0], 16) << "all NaN: token 0";
        c = draws({1.0f, inf, 3.0f, inf, nan}, sp, n);
        EXPECT_EQ(c[0] + c[2] + c[4], 0) << "only the +inf tokens";
        EXPECT_GT(c[1], n / 4);
        EXPECT_GT(c[3], n / 4);
        c = draws({-inf, -inf, -inf, nan}, sp, n);
        EXPECT_EQ(c[3], 0);
    }
    // an all -inf row without warpers: uniform over the three
    auto c = draws({-inf, -inf, -inf}, sampling(1.0f, 0, 1.0f, 3), n);
    for (int i = 0; i < 3; i++) EXPECT_GT(c[i], n / 6) << i;
    // z overflowing to +inf (1e30 / 1e-10): shares the draw with the real +inf, nothing else
    c = draws({1e30f, 0.0f, 2e30f, -1e30f}, sampling(1e-10f, 0, 1.0f, 4), n);
    EXPECT_EQ(c[1] + c[3], 0);
    EXPECT_GT(c[0], n / 4);
    EXPECT_GT(c[2], n / 4);
}

// Top-k keeps ties at the k-th value (transformers' TopKLogitsWarper): with k = 2 and the
// second value tied three times, four tokens can be drawn and the others never.
TEST_F(Gen, TopKKeepsTiesAtTheThreshold) {
    const std::vector<float> row = {0.0f, 2.0f, 1.0f, -1.0f, 1.0f, 1.0f, 0.5f};
    const int V = 7, B = 16, steps = kEmu ? 8 : 40;
    std::vector<float> logits;
    for (int b = 0; b < B; b++) logits.insert(logits.end(), row.begin(), row.end());
    std::vector<int> count(V, 0);
    for (int t = 0; t < steps; t++) {
        std::vector<int32_t> done(B, 0);
        const Call c = sample(logits, V, B, V, sampling(0.5f, 2, 1.0f, 21), (uint64_t)t, done);
        ASSERT_EQ(c.status, CVENE_OK) << err;
        for (int b = 0; b < B; b++) count[c.ids[b]]++;
    }
    EXPECT_EQ(count[0] + count[3] + count[6], 0);
    for (int i : {1, 2, 4, 5}) EXPECT_GT(count[i], 0) << i;
}

// Refusals: CVENE_ERR_INVALID_ARG naming the op and nothing written; greedy reads neither the
// sampling fields nor scratch.
TEST_F(Gen, Refusals) {
    const int V = 4, B = 2;
    Dev<float> x(be, std::vector<float>((size_t)B * V, 0.5f)), scratch(be, std::vector<float>((size_t)B * V));
    Dev<int32_t> ids(be, std::vector<int32_t>(B, -9)), done(be, std::vector<int32_t>(B, 0));
    const auto good = sampling(1.0f, 0, 1.0f, 1);
    auto bad = [&](const char *what, int64_t ld, int Bn, int Vn, const cvene_sample_params *sp, float *scr,
                   const int32_t *stop, int n_stop) {
        err[0] = 0;
        EXPECT_EQ(be->ops->gen->sample(be, ids.p, done.p, x.p, ld, Bn, Vn, scr, sp, 0, stop, n_stop, 0),
                  CVENE_ERR_INVALID_ARG)
            << what;
        EXPECT_NE(std::string(err).find("gen.sample"), std::string::npos) << what << ": " << err;
    };
    bad("V = 0", V, B, 0, &good, scratch.p, nullptr, 0);
    bad("B < 0", V, -1, V, &good, scratch.p, nullptr, 0);
    bad("ld < V", V - 1, B, V, &good, scratch.p, nullptr, 0);
    bad("sp NULL", V, B, V, nullptr, scratch.p, nullptr, 0);
    bad("n_stop < 0", V, B, V, &good, scratch.p, nullptr, -1);
    bad("stop NULL", V, B, V, &good, scratch.p, nullptr, 2);
    bad("scratch NULL", V, B, V, &good, nullptr, nullptr, 0);
    for (float T : {0.0f, -1.0f, (float)INFINITY, (float)NAN}) {
        const auto sp = sampling(T, 0, 1.0f, 1);
        bad("temperature", V, B, V, &sp, scratch.p, nullptr, 0);
    }
    for (float p : {0.0f, -0.5f, 1.0001f, (float)NAN}) {
        const auto sp = sampling(1.0f, 0, p, 1);
        bad("top_p", V, B, V, &sp, scratch.p, nullptr, 0);
    }
    const auto negk = sampling(1.0f, -1, 1.0f, 1);
    bad("top_k < 0", V, B, V, &negk, scratch.p, nullptr, 0);
    EXPECT_EQ(ids.host(), std::vector<int32_t>(B, -9)) << "a refused call wrote ids";
    EXPECT_EQ(done.host(), std::vector<int32_t>(B, 0));
    EXPECT_EQ(be->ops->gen->sample(be, nullptr, nullptr, nullptr, V, 0, V, nullptr, &good, 0, nullptr, 0, 0), CVENE_OK)
        << "B = 0 reads nothing: " << err;
    auto g = greedy();
    g.temperature = NAN;
    g.top_k = -3;
    g.top_p = 7.0f;
    EXPECT_EQ(be->ops->gen->sample(be, ids.p, done.p, x.p, V, B, V, nullptr, &g, 0, nullptr, 0, 0), CVENE_OK) << err;
    EXPECT_EQ(ids.host(), std::vector<int32_t>(B, 0)) << "greedy over equal logits: token 0";

    // copy2d: overlapping rows (a pitch below width with several rows) are refused
    Dev<uint8_t> a(be, std::vector<uint8_t>(64, 1)), c(be, std::vector<uint8_t>(64, 2));
    err[0] = 0;
    EXPECT_EQ(be->ops->gen->copy2d(be, a.p, 8, c.p, 16, 12, 3), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err).find("gen.copy2d"), std::string::npos) << err;
    EXPECT_EQ(be->ops->gen->copy2d(be, a.p, 16, c.p, 8, 12, 3), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(a.host(), std::vector<uint8_t>(64, 1));
}

// copy2d moves exactly height rows of width bytes and nothing between them; one row ignores
// the pitches; an empty copy does nothing.
TEST_F(Gen, Copy2d) {
    std::vector<uint8_t> src(300), dst0(400, 0xAB);
    for (size_t i = 0; i < src.size(); i++) src[i] = (uint8_t)(i * 37 + 5);
    struct Case {
        size_t dpitch, spitch, width, height;
    };
    for (const Case k : {Case{40, 30, 25, 9}, Case{25, 25, 25, 12}, Case{50, 7, 7, 6}, Case{0, 0, 300, 1},
                         Case{13, 17, 0, 5}, Case{13, 17, 10, 0}}) {
        Dev<uint8_t> s(be, src), d(be, dst0);
        ASSERT_EQ(be->ops->gen->copy2d(be, d.p, k.dpitch, s.p, k.spitch, k.width, k.height), CVENE_OK) << err;
        std::vector<uint8_t> want = dst0;
        for (size_t r = 0; r < k.height; r++)
            std::memcpy(&want[r * k.dpitch], &src[r * k.spitch], k.width);
        EXPECT_EQ(d.host(), want) << "dpitch " << k.dpitch << " spitch " << k.spitch << " width " << k.width
                                  << " height " << k.height;
    }
}

#if !CVENE_TEST_CUDA
// Rows run in parallel on the CPU, each on one thread: ids do not depend on the thread count.
TEST(GenCpu, IdsIndependentOfThreadCount) {
    char e1[256] = {0}, e3[256] = {0};
    cvene_backend *b1 = cvene_backend_cpu_new(1, e1, sizeof e1), *b3 = cvene_backend_cpu_new(3, e3, sizeof e3);
    ASSERT_NE(b1, nullptr) << e1;
    ASSERT_NE(b3, nullptr) << e3;
    std::mt19937 rng(5);
    const int V = 5000, B = 12;
    std::vector<float> logits;
    for (int b = 0; b < B; b++) {
        const auto r = distinct_logits(rng, V, 2.0f);
        logits.insert(logits.end(), r.begin(), r.end());
    }
    for (const auto sp : {sampling(1.0f, 0, 1.0f, 8), sampling(0.9f, 30, 0.8f, 9), greedy()}) {
        std::vector<int32_t> d1(B, 0), d3(B, 0);
        const Call c1 = run_sample(b1, logits, V, B, V, sp, 4, d1), c3 = run_sample(b3, logits, V, B, V, sp, 4, d3);
        ASSERT_EQ(c1.status, CVENE_OK);
        ASSERT_EQ(c3.status, CVENE_OK);
        EXPECT_EQ(c1.ids, c3.ids);
    }
    cvene_backend_cpu_free(b1);
    cvene_backend_cpu_free(b3);
}
#endif // !CVENE_TEST_CUDA

#if CVENE_TEST_CUDA
// ---- the CUDA ops against the CPU ops ----

class CudaGen : public BackendPair {
  protected:
    // both backends on the same host data; ids and done flags of each
    void both_sample(const std::vector<float> &logits, int64_t ld, int B, int V, const cvene_sample_params &sp,
                     uint64_t step, const std::vector<int32_t> &done0, const std::vector<int32_t> &stop, Call &cc,
                     Call &cg, std::vector<int32_t> &dc, std::vector<int32_t> &dg) {
        dc = done0;
        dg = done0;
        cc = run_sample(cpu, logits, ld, B, V, sp, step, dc, stop, -1);
        cg = run_sample(gpu, logits, ld, B, V, sp, step, dg, stop, -1);
        ASSERT_EQ(cc.status, CVENE_OK) << msg(cpu);
        ASSERT_EQ(cg.status, CVENE_OK) << msg(gpu);
    }
};

// Greedy is exact on both: identical ids for any logits (ties, NaN, infinities, -0).
TEST_F(CudaGen, GreedyIdentical) {
    for (int V : {1, 7, 33, 1000, 50257}) {
        const int B = kEmu && V > 1000 ? 2 : 6, ld = V + 1;
        std::vector<float> logits((size_t)B * ld, 1e30f);
        std::uniform_int_distribution<int> coarse(-4, 4); // many ties
        for (int b = 0; b < B; b++)
            for (int i = 0; i < V; i++) {
                float v = (float)coarse(rng);
                if (b == 1 && i % 3 == 0) v = NAN;
                if (b == 2 && i % 7 == 0) v = (i % 2) ? INFINITY : -INFINITY;
                if (b == 3) v = (i % 2) ? 0.0f : -0.0f;
                if (b == 4) v = NAN;
                logits[(size_t)b * ld + i] = v;
            }
        Call cc, cg;
        std::vector<int32_t> dc, dg;
        both_sample(logits, ld, B, V, greedy(), 0, std::vector<int32_t>(B, 0), {}, cc, cg, dc, dg);
        EXPECT_EQ(cc.ids, cg.ids) << "V=" << V;
    }
}

// Sampled ids are identical away from rounding boundaries (header comment); done flags and
// stop handling identical.
TEST_F(CudaGen, SampledIdentical) {
    struct Set {
        float T;
        int k;
        float p;
    };
    int rows = 0, skipped = 0;
    for (int V : {1, 7, 1000, 50257})
        for (const Set s : {Set{1.0f, 0, 1.0f}, Set{0.8f, 40, 0.95f}, Set{1.2f, 0, 0.8f}, Set{0.6f, 7, 1.0f}}) {
            const int B = kEmu ? (V > 1000 ? 1 : 3) : (V > 1000 ? 4 : 16);
            const int64_t ld = V + 2;
            std::vector<float> logits((size_t)B * ld, 1e30f);
            for (int b = 0; b < B; b++) {
                const auto r = distinct_logits(rng, V, 2.5f);
                std::copy(r.begin(), r.end(), logits.begin() + (int64_t)b * ld);
            }
            std::vector<int32_t> done0(B, 0);
            if (B > 2) done0[1] = 1;
            const std::vector<int32_t> stop = {0, 3, 5};
            for (uint64_t step : {0ull, 17ull}) {
                const auto sp = sampling(s.T, s.k, s.p, 99);
                Call cc, cg;
                std::vector<int32_t> dc, dg;
                both_sample(logits, ld, B, V, sp, step, done0, stop, cc, cg, dc, dg);
                bool any_near = false;
                for (int b = 0; b < B; b++) {
                    rows++;
                    if (done0[b]) {
                        EXPECT_EQ(cg.ids[b], -1);
                        continue;
                    }
                    // the CPU's token must be the reference's with this margin too, or the row is near
                    const Ref r = ref_sample(&logits[(size_t)b * ld], V, sp, ref_uniform(99, step, b), 1e-6);
                    if (r.near) {
                        skipped++;
                        any_near = true;
                        continue;
                    }
                    EXPECT_EQ(cc.ids[b], r.token) << "cpu V=" << V << " b=" << b;
                    EXPECT_EQ(cg.ids[b], cc.ids[b]) << "V=" << V << " b=" << b << " T=" << s.T << " k=" << s.k
                                                    << " p=" << s.p << " step=" << step;
                }
                if (!any_near) {
                    EXPECT_EQ(dg, dc) << "done flags, V=" << V;
                }
            }
        }
    std::printf("[ sample   ] %d rows cuda vs cpu, %d skipped near a rounding boundary\n", rows, skipped);
    EXPECT_LE(skipped * 20, rows);
}

// The same call twice on the device: the same ids (fixed-order sums, no atomics).
TEST_F(CudaGen, Deterministic) {
    const int V = kEmu ? 3000 : 50257, B = kEmu ? 2 : 8;
    std::vector<float> logits((size_t)B * V);
    std::uniform_real_distribution<float> d(-4.0f, 4.0f);
    for (auto &x : logits) x = d(rng);
    for (const auto sp : {sampling(1.0f, 0, 0.97f, 5), sampling(0.7f, 100, 0.9f, 6)}) {
        std::vector<int32_t> d1(B, 0), d2(B, 0);
        const Call a = run_sample(gpu, logits, V, B, V, sp, 3, d1), b = run_sample(gpu, logits, V, B, V, sp, 3, d2);
        ASSERT_EQ(a.status, CVENE_OK) << msg(gpu);
        ASSERT_EQ(b.status, CVENE_OK) << msg(gpu);
        EXPECT_EQ(a.ids, b.ids);
    }
}

// copy2d: the same bytes on both backends (including what lies between the rows).
TEST_F(CudaGen, Copy2dIdentical) {
    std::vector<uint8_t> src(4096), dst0(8192);
    for (auto &x : src) x = (uint8_t)rng();
    for (auto &x : dst0) x = (uint8_t)rng();
    for (const auto &k : {std::vector<size_t>{64, 48, 40, 50}, std::vector<size_t>{4, 4, 4, 1000},
                         std::vector<size_t>{60, 33, 33, 120}, std::vector<size_t>{0, 0, 4096, 1}}) {
        auto s = both(src), dd = both(dst0);
        ASSERT_EQ(cpu->ops->gen->copy2d(cpu, dd.c, k[0], s.c, k[1], k[2], k[3]), CVENE_OK) << msg(cpu);
        ASSERT_EQ(gpu->ops->gen->copy2d(gpu, dd.g, k[0], s.g, k[1], k[2], k[3]), CVENE_OK) << msg(gpu);
        EXPECT_EQ(download(cpu, dd.c, dst0.size()), download(gpu, dd.g, dst0.size()));
    }
}

// Both backends refuse the same calls with the same message.
TEST_F(CudaGen, SameRefusals) {
    const auto bad = sampling(0.0f, 0, 1.0f, 1);
    auto x = both(std::vector<float>(8, 0.0f)), s = both(std::vector<float>(8, 0.0f));
    auto ids = both(std::vector<int32_t>(2, 0)), dn = both(std::vector<int32_t>(2, 0));
    EXPECT_EQ(cpu->ops->gen->sample(cpu, ids.c, dn.c, x.c, 4, 2, 4, s.c, &bad, 0, nullptr, 0, 0), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(gpu->ops->gen->sample(gpu, ids.g, dn.g, x.g, 4, 2, 4, s.g, &bad, 0, nullptr, 0, 0), CVENE_ERR_INVALID_ARG);
    EXPECT_STREQ(cpu_err, gpu_err);
}
#endif // CVENE_TEST_CUDA

} // namespace
