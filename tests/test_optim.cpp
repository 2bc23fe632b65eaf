// Adam / AdamW and the linear warm-up schedule (engine/optim.c) against torch.optim and
// transformers' get_linear_schedule_with_warmup (tools/make_optim_fixtures.py): 12 steps from the
// same parameters and gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.h"
extern "C" {
#include "engine/optim.h"
}

namespace {

struct Case {
    const char *name;
    double lr, wd, b1, b2, eps;
    int decoupled;
};

// The same f32 operations in the same order as torch, fused multiply-adds included
// (docs/training_semantics.md 5.4). Not bit for bit: torch's CPU float sqrt (AVX2 kernel) is not
// correctly rounded (sqrt of the f32 0x3B836E03 comes out one ulp below the IEEE result), so a
// denominator can differ by an ulp. Measured: 1 element of 3 x 12 x 37 off by 1 ulp; allowed:
// 4 ulps of the parameter.
TEST(Optim, AdamMatchesTorch) {
    const Case cases[] = {{"adam", 1e-3, 0, 0.9, 0.999, 1e-8, 0},
                          {"adam_l2", 5e-3, 0.1, 0.9, 0.999, 1e-8, 0},
                          {"adamw", 1e-2, 0.01, 0.8, 0.99, 1e-6, 1}};
    Archive ar(std::string(CVENE_FIXTURES) + "/optim/optim.safetensors");
    for (const Case &c : cases) {
        SCOPED_TRACE(c.name);
        const std::string n = c.name;
        auto p = ar.get<float>(n + ".init"), grads = ar.get<float>(n + ".grads"), want = ar.get<float>(n + ".params");
        auto lrs = ar.get<double>(n + ".lr");
        const size_t N = p.size(), steps = lrs.size();
        std::vector<float> m(N, 0.0f), v(N, 0.0f);
        optim_adam o = optim_adam_default();
        o.lr = c.lr, o.weight_decay = c.wd, o.beta1 = c.b1, o.beta2 = c.b2, o.eps = c.eps, o.decoupled = c.decoupled;
        for (size_t k = 0; k < steps; k++) {
            const double lr = c.lr * optim_linear_warmup((int64_t)k, 3, (int64_t)steps);
            EXPECT_DOUBLE_EQ(lr, lrs[k]) << "step " << k;
            optim_adam_step(&o, p.data(), grads.data() + k * N, m.data(), v.data(), N, (int64_t)k + 1, lr);
            for (size_t i = 0; i < N; i++) {
                const float w = want[k * N + i];
                ASSERT_LE(std::fabs(p[i] - w), 4 * (std::nextafter(std::fabs(w), INFINITY) - std::fabs(w)))
                    << "step " << k << " param " << i;
            }
        }
    }
}

TEST(Optim, LinearWarmupShape) {
    EXPECT_EQ(optim_linear_warmup(0, 2, 10), 0.0); // transformers: the first step has lr 0
    EXPECT_EQ(optim_linear_warmup(1, 2, 10), 0.5);
    EXPECT_EQ(optim_linear_warmup(2, 2, 10), 1.0);
    EXPECT_EQ(optim_linear_warmup(6, 2, 10), 0.5);
    EXPECT_EQ(optim_linear_warmup(10, 2, 10), 0.0);
    EXPECT_EQ(optim_linear_warmup(0, 0, 4), 1.0); // no warm-up
}

} // namespace
