// Probes (issue #13 item 4) against torch (tests/fixtures/probe, tools/make_probe_fixtures.py):
//   Collect   the demo model's activations at 9 sites, one position per example, vs transformers
//   Fit       softmax-regression probes trained on cvene's activations vs torch's Adam on torch's
//   Input     bad sites, positions, tokens, labels and NaN features
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"

namespace {

const std::string kDir = std::string(CVENE_FIXTURES) + "/probe";

struct Fixture {
    Archive ar{kDir + "/probe.safetensors"};
    cJSON *manifest = cJSON_Parse(slurp(kDir + "/manifest.json").c_str());
    std::vector<int32_t> ids, lens, pos, labels, train, held;
    std::vector<const int32_t *> rows;
    std::vector<cvene_site> sites;
    std::vector<std::string> keys;
    int T = 0;
    Fixture() {
        std::vector<int64_t> shape;
        ids = ar.get<int32_t>("ids", &shape);
        T = (int)shape[1];
        lens = ar.get<int32_t>("lens"), pos = ar.get<int32_t>("pos"), labels = ar.get<int32_t>("labels");
        train = ar.get<int32_t>("train"), held = ar.get<int32_t>("held_out");
        for (size_t e = 0; e < lens.size(); e++) rows.push_back(ids.data() + e * T);
        for (const cJSON *s = cJSON_GetObjectItem(manifest, "sites")->child; s; s = s->next) {
            const char *comp = cJSON_GetObjectItem(s, "component")->valuestring;
            const int layer = cJSON_GetObjectItem(s, "layer")->valueint;
            sites.push_back({cvene_component_from_name(comp), layer});
            keys.push_back(std::string(comp) + "." + std::to_string(layer));
        }
    }
    ~Fixture() { cJSON_Delete(manifest); }
    const cJSON *site(int s) const { return cJSON_GetArrayItem(cJSON_GetObjectItem(manifest, "sites"), s); }
};

// max |a - b| / max |b|
double rel(const float *a, const std::vector<float> &b) {
    double err = 0, mx = 0;
    for (size_t i = 0; i < b.size(); i++) {
        err = std::max(err, std::isnan(a[i]) ? INFINITY : std::fabs((double)a[i] - b[i]));
        mx = std::max(mx, (double)std::fabs(b[i]));
    }
    return err / std::max(mx, 1e-30);
}

std::vector<float> rows_of(const float *X, int D, const std::vector<int32_t> &idx) {
    std::vector<float> out;
    for (int32_t e : idx) out.insert(out.end(), X + (size_t)e * D, X + (size_t)(e + 1) * D);
    return out;
}
std::vector<int32_t> labels_of(const std::vector<int32_t> &y, const std::vector<int32_t> &idx) {
    std::vector<int32_t> out;
    for (int32_t e : idx) out.push_back(y[e]);
    return out;
}

struct Acts {
    cvene_activations *a = nullptr;
    ~Acts() { cvene_activations_free(a); }
};

// Activations equal transformers' hooks within 1e-5 of each site's largest value (two f32
// forwards with different GEMM orders; the forward parity suites see ~1e-6).
TEST(Collect, MatchesTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Fixture f;
    Loaded L(std::string(CVENE_ASSETS) + "/demo-gpt2", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Acts A;
    ASSERT_EQ(cvene_collect(L.model, f.rows.data(), f.lens.data(), f.pos.data(), (int)f.lens.size(), f.sites.data(),
                            (int)f.sites.size(), 16, &A.a),
              CVENE_OK)
        << L.error();
    ASSERT_EQ(cvene_activations_count(A.a), (int)f.lens.size());
    for (size_t s = 0; s < f.sites.size(); s++) {
        SCOPED_TRACE(f.keys[s]);
        auto want = f.ar.get<float>(f.keys[s] + ".activations");
        const int D = cvene_activations_width(A.a, (int)s);
        ASSERT_EQ((size_t)D * f.lens.size(), want.size());
        EXPECT_EQ(D, cJSON_GetObjectItem(f.site((int)s), "width")->valueint);
        EXPECT_LE(rel(cvene_activations_data(A.a, (int)s), want), 1e-5);
    }
}

// Two checks per site, with torch's settings:
//  - the fit alone: cvene_probe_fit on torch's own activations of the training rows lands on
//    torch's weights, bias, mean and std within 1e-5 of the largest (the fixture measures torch's
//    own spread under 1e-6 relative gradient noise at <= 1e-6: full-batch Adam on this convex
//    loss does not amplify noise), with torch's accuracies exactly and losses within 1e-5;
//  - end to end, collected by cvene and fitted by cvene: torch's accuracies exactly, losses within
//    1e-3 relative. Not 1e-5: z-scoring divides each feature by its deviation, and a feature that
//    barely varies (a saturated GELU unit of mlp_activation, deviation ~1e-5) turns the forwards'
//    ~1e-7 absolute differences into ~1% differences of its standardised values.
TEST(Fit, MatchesTorch) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Fixture f;
    Loaded L(std::string(CVENE_ASSETS) + "/demo-gpt2", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Acts A;
    ASSERT_EQ(cvene_collect(L.model, f.rows.data(), f.lens.data(), f.pos.data(), (int)f.lens.size(), f.sites.data(),
                            (int)f.sites.size(), 0, &A.a),
              CVENE_OK)
        << L.error();
    const cJSON *prm = cJSON_GetObjectItem(f.manifest, "params");
    cvene_probe_params p = cvene_probe_default_params();
    p.steps = cJSON_GetObjectItem(prm, "steps")->valueint;
    p.lr = cJSON_GetObjectItem(prm, "lr")->valuedouble;
    p.weight_decay = cJSON_GetObjectItem(prm, "weight_decay")->valuedouble;
    const int C = cJSON_GetArraySize(cJSON_GetObjectItem(f.manifest, "classes"));
    const auto ytr = labels_of(f.labels, f.train), yho = labels_of(f.labels, f.held);
    auto count = [](double acc, size_t n) { return std::lround(acc * (double)n); };
    for (size_t s = 0; s < f.sites.size(); s++) {
        SCOPED_TRACE(f.keys[s]);
        const cJSON *site = f.site((int)s);
        const int D = cvene_activations_width(A.a, (int)s);
        const double want_acc[2] = {cJSON_GetObjectItem(site, "train_accuracy")->valuedouble,
                                    cJSON_GetObjectItem(site, "held_out_accuracy")->valuedouble};
        const double want_loss[2] = {cJSON_GetObjectItem(site, "train_loss")->valuedouble,
                                     cJSON_GetObjectItem(site, "held_out_loss")->valuedouble};
        const auto torch_x = f.ar.get<float>(f.keys[s] + ".activations");
        for (int ours = 0; ours < 2; ours++) {
            SCOPED_TRACE(ours ? "cvene's activations" : "torch's activations");
            const float *X = ours ? cvene_activations_data(A.a, (int)s) : torch_x.data();
            const auto Xtr = rows_of(X, D, f.train), Xho = rows_of(X, D, f.held);
            cvene_probe *pr = nullptr;
            ASSERT_EQ(cvene_probe_fit(L.ctx, Xtr.data(), ytr.data(), (int)ytr.size(), D, C, &p, &pr), CVENE_OK)
                << L.error();
            if (!ours) {
                const float *W, *b, *mean, *sd;
                cvene_probe_weights(pr, &W, &b, &mean, &sd);
                EXPECT_LE(rel(W, f.ar.get<float>(f.keys[s] + ".weight")), 1e-5) << "weight";
                EXPECT_LE(rel(b, f.ar.get<float>(f.keys[s] + ".bias")), 1e-5) << "bias";
                EXPECT_LE(rel(mean, f.ar.get<float>(f.keys[s] + ".mean")), 1e-5) << "mean";
                EXPECT_LE(rel(sd, f.ar.get<float>(f.keys[s] + ".std")), 1e-5) << "std";
            }
            const double tol = ours ? 1e-3 : 1e-5;
            for (int split = 0; split < 2; split++) {
                const auto &Xs = split ? Xho : Xtr;
                const auto &ys = split ? yho : ytr;
                double acc = 0, loss = 0;
                ASSERT_EQ(cvene_probe_evaluate(pr, Xs.data(), ys.data(), (int)ys.size(), &acc, &loss), CVENE_OK);
                EXPECT_EQ(count(acc, ys.size()), count(want_acc[split], ys.size())) << (split ? "held out" : "train");
                EXPECT_NEAR(loss, want_loss[split], tol * std::max(1.0, std::fabs(want_loss[split])))
                    << (split ? "held out" : "train");
                if (ours && split) std::printf("[ probe ] %-18s held-out accuracy %.3f\n", f.keys[s].c_str(), acc);
            }
            cvene_probe_free(pr);
        }
    }
}

TEST(Input, CollectNamesWhatIsWrong) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int32_t a[] = {1, 2, 3}, bad[] = {1, 99999, 3};
    const int32_t *rows[] = {a}, *bad_rows[] = {bad};
    int len = 3, pos = 1, far = 3, neg = -4;
    cvene_site ok{CVENE_BLOCK_OUTPUT, 0}, high{CVENE_BLOCK_OUTPUT, 2}, head{CVENE_HEAD_QUERY_OUTPUT, 0},
        gru{CVENE_CELL_INPUT, 0}, twice[] = {{CVENE_BLOCK_OUTPUT, 1}, {CVENE_BLOCK_OUTPUT, 1}};
    cvene_activations *out = nullptr;
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &pos, 1, &high, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"sites[0].layer 2", "[0, 2)"});
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &far, 1, &ok, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"example 0", "position 3"});
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &neg, 1, &ok, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"position -4"});
    expect_msg(L.ctx, cvene_collect(L.model, bad_rows, &len, &pos, 1, &ok, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"token 1 = 99999"});
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &pos, 1, &head, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"head_query_output", "(B, T, D)"});
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &pos, 1, &gru, 1, 0, &out), CVENE_ERR_INVALID_ARG,
               {"sites[0].component"});
    expect_msg(L.ctx, cvene_collect(L.model, rows, &len, &pos, 1, twice, 2, 0, &out), CVENE_ERR_INVALID_ARG,
               {"sites[1] repeats sites[0]"});
    EXPECT_EQ(out, nullptr);
}

TEST(Input, FitNamesWhatIsWrong) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    float X[] = {1, 2, 3, 4, 5, 6};
    int32_t y[] = {0, 1, 1}, y_bad[] = {0, 3, 1};
    cvene_probe *pr = nullptr;
    expect_msg(L.ctx, cvene_probe_fit(L.ctx, X, y_bad, 3, 2, 2, nullptr, &pr), CVENE_ERR_INVALID_ARG,
               {"label 3 of example 1"});
    X[3] = NAN;
    expect_msg(L.ctx, cvene_probe_fit(L.ctx, X, y, 3, 2, 2, nullptr, &pr), CVENE_ERR_NUMERIC,
               {"feature 1 of example 1"});
    X[3] = 4;
    cvene_probe_params p = cvene_probe_default_params();
    p.lr = 0;
    expect_msg(L.ctx, cvene_probe_fit(L.ctx, X, y, 3, 2, 2, &p, &pr), CVENE_ERR_INVALID_ARG, {"lr 0"});
    EXPECT_EQ(pr, nullptr);
    // a separable toy: two clusters, every example right after training
    ASSERT_EQ(cvene_probe_fit(L.ctx, X, y, 3, 2, 2, nullptr, &pr), CVENE_OK) << L.error();
    double acc = 0;
    ASSERT_EQ(cvene_probe_evaluate(pr, X, y, 3, &acc, nullptr), CVENE_OK);
    EXPECT_EQ(acc, 1.0);
    cvene_probe_free(pr);
}

} // namespace
