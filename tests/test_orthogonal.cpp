// The orthogonal parametrization (engine/orthogonal.c) against torch's own
// (torch.nn.utils.parametrizations.orthogonal on pyvene's rotate layers, in float64:
// tools/make_orthogonal_fixtures.py), and against finite differences of itself.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.h"
extern "C" {
#include "engine/orthogonal.h"
}

namespace {

const std::string kFile = std::string(CVENE_FIXTURES) + "/orthogonal/orthogonal.safetensors";

double max_rel(const std::vector<double> &got, const std::vector<double> &want) {
    double mx = 0, err = 0;
    for (size_t i = 0; i < want.size(); i++) mx = std::max(mx, std::fabs(want[i]));
    for (size_t i = 0; i < want.size(); i++) err = std::max(err, std::fabs(got[i] - want[i]));
    return err / std::max(mx, 1e-300);
}

struct Case {
    std::string name;
    int n, k;
};
const Case kCases[] = {{"sq7_small", 7, 7}, {"sq9_large", 9, 9}, {"sq16_mid", 16, 16},
                       {"tall10x1", 10, 1}, {"tall10x3", 10, 3}, {"tall24x5", 24, 5}};

class Orthogonal : public ::testing::TestWithParam<Case> {};

// Both sides compute in double with different algorithms (torch: degree-18 Taylor with its own
// scaling thresholds; cvene: degree 16 by Paterson-Stockmeyer below norm 1): they agree to rounding, which grows with
// the squarings (sq9_large squares 5 times): 1e-12 relative to the largest entry.
TEST_P(Orthogonal, MatchesTorch) {
    const Case &c = GetParam();
    Archive ar(kFile);
    auto X = ar.get<double>(c.name + ".X"), base = ar.get<double>(c.name + ".base");
    auto W = ar.get<double>(c.name + ".W"), G = ar.get<double>(c.name + ".G"), dX = ar.get<double>(c.name + ".dX");
    ASSERT_EQ(X.size(), (size_t)c.n * c.k);
    orth_param *p = orth_new(c.n, c.k);
    ASSERT_NE(p, nullptr);
    std::vector<double> w(W.size()), dx(X.size());
    ASSERT_EQ(orth_forward(p, X.data(), base.data(), w.data()), 0);
    EXPECT_LE(max_rel(w, W), 1e-12) << "W";
    ASSERT_EQ(orth_backward(p, G.data(), dx.data()), 0);
    EXPECT_LE(max_rel(dx, dX), 1e-11) << "dX";
    // W^T W = I: the weight is as orthonormal as the base torch made (its f32 initialisation,
    // widened: about 3e-7 off), so within 1e-6
    for (int a = 0; a < c.k; a++)
        for (int b = 0; b < c.k; b++) {
            double d = 0;
            for (int i = 0; i < c.n; i++) d += w[(size_t)i * c.k + a] * w[(size_t)i * c.k + b];
            EXPECT_NEAR(d, a == b ? 1.0 : 0.0, 1e-6);
        }
    // central differences of L = sum(W * G) along a few coordinates of X
    const double h = 1e-6;
    for (size_t q = 1; q < X.size(); q += 3) {
        if (c.k < c.n && q / c.k == q % c.k) continue; /* int(X[j][j]) is a step: no derivative there */
        auto xp = X, xm = X;
        xp[q] += h, xm[q] -= h;
        std::vector<double> wp(W.size()), wm(W.size());
        orth_forward(p, xp.data(), base.data(), wp.data());
        orth_forward(p, xm.data(), base.data(), wm.data());
        double lp = 0, lm = 0;
        for (size_t i = 0; i < W.size(); i++) lp += wp[i] * G[i], lm += wm[i] * G[i];
        EXPECT_NEAR((lp - lm) / (2 * h), dx[q], 1e-6 * (1 + std::fabs(dx[q]))) << "coordinate " << q;
    }
    orth_free(p);
}

INSTANTIATE_TEST_SUITE_P(Cases, Orthogonal, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case> &i) { return i.param.name; });

TEST(OrthogonalExpm, ZeroAndSkew) {
    const int n = 5;
    std::vector<double> A(n * n, 0.0), E(n * n);
    ASSERT_EQ(orth_expm(n, A.data(), E.data()), 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) EXPECT_EQ(E[i * n + j], i == j ? 1.0 : 0.0);
    // a rotation by 30 in the (0, 1) plane: exp([[0, -t], [t, 0]]) = [[cos, -sin], [sin, cos]]
    const double t = 30.0;
    A[0 * n + 1] = -t, A[1 * n + 0] = t;
    ASSERT_EQ(orth_expm(n, A.data(), E.data()), 0);
    EXPECT_NEAR(E[0], std::cos(t), 1e-12);
    EXPECT_NEAR(E[1], -std::sin(t), 1e-12);
    EXPECT_NEAR(E[n], std::sin(t), 1e-12);
    EXPECT_NEAR(E[n + 1], std::cos(t), 1e-12);
    EXPECT_EQ(orth_new(3, 4), nullptr) << "wide weights are refused";
}

} // namespace
