// The CPU fused intervention ops (kernels/cpu/ops_intervene.c: iv_units, iv_rotated)
// against references written here, in double, on fresh random inputs (fixed seeds).
//
// iv_units moves floats (VANILLA, ZERO, COLLECT) or adds/subtracts two floats once
// (ADDITION, SUBTRACTION). The sum of two floats in [-4, 4] is exact in double, so the f32
// result is the double result rounded once: the op must match the reference bit for bit,
// and every float it must not touch (gaps between rows, dims outside a subspace, source
// buffers) keeps its poisoned value bit for bit.
//
// iv_rotated accumulates in f32: proj_j = sum_d W[j,d] (s[d] - x[d]) over D terms, then
// x[d] += sum_j W[j,d] proj_j over k terms. With |x|, |s| <= 1 and orthonormal rows of W
// every partial sum stays O(sqrt(D)) at most, so the f32 rounding error is below about
// (D + k) * 2^-24 * O(1) ~ 3e-5 in the worst case and ~sqrt(D + k) * 6e-8 ~ 1e-6 in
// practice for D + k <= 520; we require |f32 - f64| <= 1e-5 * max(1, max |ref|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace {

constexpr double kRotTol = 1e-5; // see the header comment
const float kPoison = std::nanf("0x7fc0dead");

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

class IvOps : public ::testing::Test {
  protected:
    cvene_backend *be = nullptr;
    char err[512] = {0};
    std::mt19937 rng{20240611};

    void SetUp() override {
        be = cvene_backend_cpu_new(0, err, sizeof err);
        ASSERT_NE(be, nullptr) << err;
        be->err = err;
        be->err_len = sizeof err;
    }
    void TearDown() override { cvene_backend_cpu_free(be); }

    std::vector<float> randf(size_t n, float lo = -1.0f, float hi = 1.0f) {
        std::uniform_real_distribution<float> d(lo, hi);
        std::vector<float> v(n);
        for (auto &x : v) x = d(rng);
        return v;
    }
    int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); } // inclusive
};

// A set of n units of R rows of D floats laid out in a buffer: each unit in its own slot of
// R * rs floats (slots in random order), starting `shift` floats into the slot, so rows
// never overlap, there are gaps between them, and offsets are not monotonic in u.
struct Layout {
    std::vector<int64_t> off;
    size_t size = 0;
};
Layout scatter_layout(std::mt19937 &rng, int n, int R, int D, int64_t rs) {
    Layout L;
    int slots = n + 2;
    std::vector<int> perm(slots);
    for (int i = 0; i < slots; i++) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    const int64_t slot = (int64_t)R * rs + 3;
    for (int u = 0; u < n; u++) {
        int64_t shift = std::uniform_int_distribution<int64_t>(0, rs - D + 3)(rng);
        L.off.push_back(perm[u] * slot + shift);
    }
    L.size = (size_t)(slots * slot);
    return L;
}

// the double reference of one op on one float pair
void ref_op(int op, float &x, float &s) {
    switch (op) {
    case CVENE_IVOP_VANILLA: x = s; break;
    case CVENE_IVOP_ADDITION: x = (float)((double)x + (double)s); break;
    case CVENE_IVOP_SUBTRACTION: x = (float)((double)x - (double)s); break;
    case CVENE_IVOP_ZERO: x = 0.0f; break;
    default: s = x; break;
    }
}

struct UnitsCase {
    int op, n, R, D;
    int64_t x_rs, src_rs; // src_rs 0: one broadcast source row
    bool subspaces;       // per-unit random dims (some units all dims)
};

std::string describe(const UnitsCase &c) {
    return "op=" + std::to_string(c.op) + " n=" + std::to_string(c.n) + " R=" + std::to_string(c.R) +
           " D=" + std::to_string(c.D) + " x_rs=" + std::to_string(c.x_rs) + " src_rs=" + std::to_string(c.src_rs) +
           " sub=" + std::to_string(c.subspaces);
}

TEST_F(IvOps, UnitsMatchReference) {
    std::vector<UnitsCase> cases;
    for (int op = CVENE_IVOP_VANILLA; op <= CVENE_IVOP_COLLECT; op++)
        for (int D : {1, 7, 33, 130})
            for (int R : {1, 3})
                for (bool sub : {false, true}) {
                    cases.push_back({op, 5, R, D, D, D, sub});          // packed rows
                    cases.push_back({op, 1, R, D, D + 5, D + 2, sub});  // padded strides
                    if (op != CVENE_IVOP_COLLECT) cases.push_back({op, 4, R, D, D + 1, 0, sub}); // broadcast source
                }
    for (const UnitsCase &c : cases) {
        SCOPED_TRACE(describe(c));
        Layout lx = scatter_layout(rng, c.n, c.R, c.D, c.x_rs);
        // the source: per-unit slots, or one shared row when broadcast
        Layout ls = c.src_rs ? scatter_layout(rng, c.n, c.R, c.D, c.src_rs) : Layout{std::vector<int64_t>(c.n, 2), (size_t)c.D + 4};
        std::vector<float> x = randf(lx.size, -4.0f, 4.0f);
        std::vector<float> src = c.op == CVENE_IVOP_COLLECT ? std::vector<float>(ls.size, kPoison) : randf(ls.size, -4.0f, 4.0f);
        // poison the gaps of x too, so a stray write or read shows up
        std::vector<char> in_row(lx.size, 0);
        for (int u = 0; u < c.n; u++)
            for (int r = 0; r < c.R; r++)
                for (int d = 0; d < c.D; d++) in_row[lx.off[u] + r * c.x_rs + d] = 1;
        for (size_t i = 0; i < x.size(); i++)
            if (!in_row[i]) x[i] = kPoison;
        // per-unit subspaces: distinct dims in random order, or all (-1)
        std::vector<int32_t> dims, dims_n;
        std::vector<int64_t> dims_off;
        for (int u = 0; u < c.n; u++) {
            dims_off.push_back((int64_t)dims.size());
            if (!c.subspaces || (u % 3 == 2)) {
                dims_n.push_back(-1);
                continue;
            }
            std::vector<int32_t> all(c.D);
            for (int d = 0; d < c.D; d++) all[d] = d;
            std::shuffle(all.begin(), all.end(), rng);
            int m = randint(0, c.D);
            dims.insert(dims.end(), all.begin(), all.begin() + m);
            dims_n.push_back(m);
        }
        // reference, loops over units / rows / dims
        std::vector<float> rx = x, rs = src;
        for (int u = 0; u < c.n; u++)
            for (int r = 0; r < c.R; r++) {
                int m = dims_n[u] < 0 ? c.D : dims_n[u];
                for (int k = 0; k < m; k++) {
                    int d = dims_n[u] < 0 ? k : dims[dims_off[u] + k];
                    ref_op(c.op, rx[lx.off[u] + r * c.x_rs + d], rs[ls.off[u] + r * c.src_rs + d]);
                }
            }
        float *srcp = c.op == CVENE_IVOP_ZERO ? nullptr : src.data();
        ASSERT_EQ(be->ops->iv_units(be, x.data(), lx.off.data(), c.x_rs, srcp, ls.off.data(), c.src_rs, dims.data(),
                                    dims_off.data(), c.subspaces ? dims_n.data() : nullptr, c.n, c.R, c.D, c.op),
                  CVENE_OK)
            << err;
        for (size_t i = 0; i < x.size(); i++) ASSERT_TRUE(same_bits(x[i], rx[i])) << "x[" << i << "] " << x[i] << " want " << rx[i];
        for (size_t i = 0; i < src.size(); i++)
            ASSERT_TRUE(same_bits(src[i], rs[i])) << "src[" << i << "] " << src[i] << " want " << rs[i];
    }
}

TEST_F(IvOps, UnitsRejectBadArguments) {
    float x[4] = {0, 0, 0, 0};
    int64_t off[1] = {0};
    EXPECT_EQ(be->ops->iv_units(be, x, off, 4, x, off, 4, nullptr, nullptr, nullptr, 1, 1, 4, 99), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(err), "");
    EXPECT_EQ(be->ops->iv_units(be, x, off, 4, nullptr, nullptr, 0, nullptr, nullptr, nullptr, 1, 1, 4,
                                CVENE_IVOP_VANILLA),
              CVENE_ERR_INVALID_ARG);
    // nothing to do is not an error
    EXPECT_EQ(be->ops->iv_units(be, x, off, 4, x, off, 4, nullptr, nullptr, nullptr, 0, 1, 4, CVENE_IVOP_ADDITION),
              CVENE_OK);
}

// ---- iv_rotated ----------------------------------------------------------------------

// k orthonormal rows of length D (k <= D) by modified Gram-Schmidt in double on random rows.
std::vector<double> orthonormal_rows(std::mt19937 &rng, int k, int D) {
    std::normal_distribution<double> nd;
    std::vector<double> W((size_t)k * D);
    for (int j = 0; j < k; j++) {
        double *w = &W[(size_t)j * D];
        for (;;) {
            for (int d = 0; d < D; d++) w[d] = nd(rng);
            for (int q = 0; q < j; q++) {
                const double *v = &W[(size_t)q * D];
                double dot = 0;
                for (int d = 0; d < D; d++) dot += v[d] * w[d];
                for (int d = 0; d < D; d++) w[d] -= dot * v[d];
            }
            double nrm = 0;
            for (int d = 0; d < D; d++) nrm += w[d] * w[d];
            nrm = std::sqrt(nrm);
            if (nrm > 1e-6) {
                for (int d = 0; d < D; d++) w[d] /= nrm;
                break;
            }
        }
    }
    return W;
}

// x <- x + W^T W (s - x) in double, W (k, D) given as the f32 values the op sees
void ref_rotated(std::vector<double> &x, const std::vector<float> &s, const std::vector<float> &W, int k, int D) {
    std::vector<double> proj(k, 0.0);
    for (int j = 0; j < k; j++)
        for (int d = 0; d < D; d++) proj[j] += (double)W[(size_t)j * D + d] * ((double)s[d] - x[d]);
    for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int j = 0; j < k; j++) acc += (double)W[(size_t)j * D + d] * proj[j];
        x[d] += acc;
    }
}

std::vector<float> transpose(const std::vector<float> &W, int k, int D) { // (k, D) -> (D, k)
    std::vector<float> T((size_t)k * D);
    for (int j = 0; j < k; j++)
        for (int d = 0; d < D; d++) T[(size_t)d * k + j] = W[(size_t)j * D + d];
    return T;
}

struct RotRun {
    std::vector<float> x, s;
    Layout lx, ls;
};

// n vectors at scattered offsets (poisoned gaps), the op on W or its transpose, checked
// against the double reference; returns the max relative error seen.
double check_rotated(cvene_backend *be, std::mt19937 &rng, const std::vector<float> &W, int n, int D, int k, int trans,
                     bool offsets, const char *err) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    Layout lx = offsets ? scatter_layout(rng, n, 1, D, D) : Layout{{}, (size_t)n * D};
    Layout ls = offsets ? scatter_layout(rng, n, 1, D, D) : Layout{{}, (size_t)n * D};
    if (!offsets)
        for (int i = 0; i < n; i++) lx.off.push_back((int64_t)i * D), ls.off.push_back((int64_t)i * D);
    std::vector<float> x(lx.size, kPoison), s(ls.size, kPoison);
    for (int i = 0; i < n; i++)
        for (int d = 0; d < D; d++) x[lx.off[i] + d] = u(rng), s[ls.off[i] + d] = u(rng);
    std::vector<float> x0 = x, s0 = s;
    std::vector<float> Wop = trans ? transpose(W, k, D) : W;
    EXPECT_EQ(be->ops->iv_rotated(be, x.data(), offsets ? lx.off.data() : nullptr, s.data(),
                                  offsets ? ls.off.data() : nullptr, Wop.data(), n, D, k, trans),
              CVENE_OK)
        << err;
    double worst = 0;
    std::vector<char> in_vec(lx.size, 0);
    for (int i = 0; i < n; i++) {
        std::vector<double> rx(D);
        std::vector<float> si(s0.begin() + ls.off[i], s0.begin() + ls.off[i] + D);
        for (int d = 0; d < D; d++) rx[d] = x0[lx.off[i] + d], in_vec[lx.off[i] + d] = 1;
        ref_rotated(rx, si, W, k, D);
        double mx = 1.0;
        for (int d = 0; d < D; d++) mx = std::max(mx, std::fabs(rx[d]));
        for (int d = 0; d < D; d++) {
            double e = std::fabs((double)x[lx.off[i] + d] - rx[d]) / mx;
            if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
        }
    }
    for (size_t q = 0; q < x.size(); q++)
        EXPECT_TRUE(in_vec[q] || same_bits(x[q], kPoison)) << "gap x[" << q << "] was written";
    for (size_t q = 0; q < s.size(); q++) EXPECT_TRUE(same_bits(s[q], s0[q])) << "source s[" << q << "] was written";
    return worst;
}

TEST_F(IvOps, RotatedMatchesReference) {
    double worst = 0;
    for (int D : {1, 7, 64, 257})
        for (int k : {1, 3, 16, 257}) {
            if (k > D) continue;
            std::vector<double> Wd = orthonormal_rows(rng, k, D);
            std::vector<float> W(Wd.begin(), Wd.end());
            for (int n : {1, 5, 33})
                for (int trans : {0, 1})
                    for (bool offsets : {false, true}) {
                        double e = check_rotated(be, rng, W, n, D, k, trans, offsets, err);
                        EXPECT_LE(e, kRotTol) << "D=" << D << " k=" << k << " n=" << n << " trans=" << trans
                                              << " offsets=" << offsets;
                        worst = std::max(worst, e);
                    }
        }
    std::printf("[ rotated ] worst relative error vs double: %.3g\n", worst); // for the record
}

// W = the first k rows of the identity: the interchange of the first k dims. By hand:
// proj_j = s_j - x_j (one nonzero term), x_j + (s_j - x_j) = s_j up to the rounding of the
// difference (within 1 ulp of 2 max(|x|, |s|)), and dims >= k get x + 0 exactly.
TEST_F(IvOps, RotatedIdentityRowsInterchangeFirstDims) {
    const int D = 37, n = 6;
    for (int k : {1, 5, 37})
        for (int trans : {0, 1}) {
            std::vector<float> W((size_t)k * D, 0.0f);
            for (int j = 0; j < k; j++) W[(size_t)j * D + j] = 1.0f;
            std::vector<float> Wop = trans ? transpose(W, k, D) : W;
            std::vector<float> x = randf((size_t)n * D), s = randf((size_t)n * D);
            std::vector<float> x0 = x;
            ASSERT_EQ(be->ops->iv_rotated(be, x.data(), nullptr, s.data(), nullptr, Wop.data(), n, D, k, trans), CVENE_OK)
                << err;
            for (int i = 0; i < n; i++)
                for (int d = 0; d < D; d++) {
                    size_t q = (size_t)i * D + d;
                    if (d < k) {
                        EXPECT_NEAR(x[q], s[q], 2.4e-7) << "k=" << k << " trans=" << trans << " i=" << i << " d=" << d;
                    } else {
                        EXPECT_TRUE(same_bits(x[q], x0[q])) << "k=" << k << " trans=" << trans << " i=" << i << " d=" << d;
                    }
                }
        }
}

// s == x: nothing moves (the difference is exactly zero).
TEST_F(IvOps, RotatedSourceEqualBaseIsIdentity) {
    const int D = 19, k = 4, n = 3;
    std::vector<double> Wd = orthonormal_rows(rng, k, D);
    std::vector<float> W(Wd.begin(), Wd.end());
    std::vector<float> x = randf((size_t)n * D), s = x, x0 = x;
    ASSERT_EQ(be->ops->iv_rotated(be, x.data(), nullptr, s.data(), nullptr, W.data(), n, D, k, 0), CVENE_OK);
    for (size_t q = 0; q < x.size(); q++) EXPECT_TRUE(same_bits(x[q], x0[q])) << q;
}

} // namespace
