// Localization beyond one patched pair (issue #14): attribution patching (cvene_sweep_atp) against
// torch autograd, the exact head sweep (CVENE_ALL_HEADS) against per-head naive patching, and
// dataset sweeps (cvene_sweep_dataset) against single-pair sweeps.
//
// The AtP references (tests/fixtures/atp/*.json, tools/make_atp_fixtures.py) are the same
// estimate computed by transformers' models in float64 with torch.autograd.grad through forward
// hooks at pyvene's modules: exact to ~1e-15. cvene computes in float32 (forward, backward, and
// the dot products in double), so the estimates differ by f32 rounding through two forwards and
// a backward of a 2-layer model: measured at most 7e-7 of the largest estimated change (a gradient
// of the logit difference 10% off gives 4e-2). Bound: 1e-4 of the largest |change| (floor 1e-3
// absolute for cases whose changes are all tiny).
//
// Built twice (tests/CMakeLists.txt): on the CPU, and on the emulated CUDA backend.
#include <cmath>
#include <random>

#include "test_device.h"
#include "test_util.h"

namespace {

struct AtpCase {
    const char *fixture;
};

void PrintTo(const AtpCase &c, std::ostream *os) { *os << c.fixture; }

cvene_component component_named(const char *n) {
    for (int c = 0; c < CVENE_N_COMPONENTS; c++)
        if (!strcmp(cvene_component_name((cvene_component)c), n)) return (cvene_component)c;
    return CVENE_N_COMPONENTS;
}

cvene_metric metric_named(const std::string &n) {
    return n == "logit_diff" ? CVENE_METRIC_LOGIT_DIFF : n == "prob" ? CVENE_METRIC_PROB : CVENE_METRIC_KL;
}

std::vector<int32_t> ints(const cJSON *a) {
    std::vector<int32_t> v;
    for (const cJSON *e = a->child; e; e = e->next) v.push_back((int32_t)e->valuedouble);
    return v;
}

// the reference's nested lists (L, T) or (L, H, T) of changes, flattened in that order
void flatten(const cJSON *a, std::vector<double> *out) {
    for (const cJSON *e = a->child; e; e = e->next) {
        if (cJSON_IsArray(e)) flatten(e, out);
        else out->push_back(e->valuedouble);
    }
}

class AtpMatchesTorch : public ::testing::TestWithParam<AtpCase> {};

TEST_P(AtpMatchesTorch, EveryComponentAndMetric) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string path = std::string(CVENE_FIXTURES) + "/atp/" + GetParam().fixture + ".json";
    cJSON *doc = cJSON_Parse(slurp(path).c_str());
    ASSERT_NE(doc, nullptr) << path;
    const std::string model_dir = std::string(CVENE_FIXTURES) + "/" + cJSON_GetObjectItem(doc, "model")->valuestring;
    Loaded L(model_dir, kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const std::vector<int32_t> base = ints(cJSON_GetObjectItem(doc, "base")), src = ints(cJSON_GetObjectItem(doc, "source"));
    const int T = (int)base.size();
    int n = 0;
    for (const cJSON *c = cJSON_GetObjectItem(doc, "cases")->child; c; c = c->next, n++) {
        cvene_sweep_params p = cvene_sweep_default_params();
        p.component = component_named(cJSON_GetObjectItem(c, "component")->valuestring);
        ASSERT_NE(p.component, CVENE_N_COMPONENTS);
        p.metric = metric_named(cJSON_GetObjectItem(c, "metric")->valuestring);
        p.token = (int32_t)cJSON_GetObjectItem(doc, "token")->valuedouble;
        p.token_b = (int32_t)cJSON_GetObjectItem(doc, "token_b")->valuedouble;
        p.head = CVENE_ALL_HEADS;
        std::vector<double> change;
        flatten(cJSON_GetObjectItem(c, "scores"), &change);
        const int nh = p.component == CVENE_HEAD_ATTENTION_VALUE_OUTPUT ? mi.n_head : 1;
        ASSERT_EQ(change.size(), (size_t)mi.n_layer * nh * T);
        std::vector<float> got(change.size());
        cvene_sweep_summary sum;
        ASSERT_EQ(cvene_sweep_atp(L.model, base.data(), src.data(), T, &p, got.data(), &sum), CVENE_OK) << L.error();
        const double base_score = cJSON_GetObjectItem(c, "base_score")->valuedouble;
        double scale = 1e-3, err = 0;
        for (double d : change) scale = std::max(scale, std::fabs(d));
        for (size_t i = 0; i < change.size(); i++) err = std::max(err, std::fabs(got[i] - (base_score + change[i])));
        const std::string what = std::string(cvene_component_name(p.component)) + " / " +
                                 cJSON_GetObjectItem(c, "metric")->valuestring;
        EXPECT_LE(err / scale, 1e-4) << what << ": max |cvene - torch| " << err << ", largest change " << scale;
        EXPECT_NEAR(sum.base_score, base_score, 1e-5 * std::max(1.0, std::fabs(base_score))) << what;
        EXPECT_EQ(sum.sites, (int64_t)change.size());
    }
    EXPECT_EQ(n, 21);
    cJSON_Delete(doc);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, AtpMatchesTorch,
                         ::testing::Values(AtpCase{"gpt2_small"}, AtpCase{"neox_par_rot25"}, AtpCase{"neox_seq_rot100"}));

// A subset of layers and positions, and one head, pick the same numbers out of the full grid.
TEST(Atp, SubsetsAreSlicesOfTheFullGrid) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const int T = 7, H = mi.n_head, NL = mi.n_layer;
    std::vector<int32_t> base(T), src(T);
    for (int t = 0; t < T; t++) base[t] = (3 * t + 1) % mi.vocab_size, src[t] = (5 * t + 2) % mi.vocab_size;
    cvene_sweep_params p = cvene_sweep_default_params();
    p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
    p.head = CVENE_ALL_HEADS;
    p.metric = CVENE_METRIC_LOGIT_DIFF;
    p.token = 5, p.token_b = 17;
    std::vector<float> all((size_t)NL * H * T);
    ASSERT_EQ(cvene_sweep_atp(L.model, base.data(), src.data(), T, &p, all.data(), nullptr), CVENE_OK) << L.error();
    const int layers[1] = {1}, positions[3] = {6, 0, 4};
    p.layers = layers, p.n_layers = 1, p.positions = positions, p.n_positions = 3, p.head = 2;
    std::vector<float> some(3);
    ASSERT_EQ(cvene_sweep_atp(L.model, base.data(), src.data(), T, &p, some.data(), nullptr), CVENE_OK) << L.error();
    for (int k = 0; k < 3; k++) EXPECT_EQ(some[k], all[((size_t)1 * H + 2) * T + positions[k]]) << k;
}

TEST(Atp, RefusesWhatItCannotEstimate) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const int T = 4;
    int32_t ids[T] = {1, 2, 3, 4};
    float out[64];
    cvene_sweep_params p = cvene_sweep_default_params();
    p.token = 3;
    p.window = 3;
    EXPECT_EQ(cvene_sweep_atp(L.model, ids, ids, T, &p, out, nullptr), CVENE_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("window"), std::string::npos) << cvene_ctx_error(L.ctx);
    p.window = 1;
    p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
    p.head = 9;
    EXPECT_EQ(cvene_sweep_atp(L.model, ids, ids, T, &p, out, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("head 9"), std::string::npos) << cvene_ctx_error(L.ctx);
    p.component = CVENE_BLOCK_OUTPUT;
    p.token = 100000;
    EXPECT_EQ(cvene_sweep_atp(L.model, ids, ids, T, &p, out, nullptr), CVENE_ERR_INVALID_ARG);
    // positions patched together must be distinct (a repeated one would count twice in the estimate)
    const int twice[2] = {1, 1};
    p.token = 3, p.together = 1, p.positions = twice, p.n_positions = 2;
    EXPECT_EQ(cvene_sweep_atp(L.model, ids, ids, T, &p, out, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("listed twice"), std::string::npos) << cvene_ctx_error(L.ctx);
    EXPECT_EQ(cvene_sweep(L.model, ids, ids, T, &p, out, nullptr), CVENE_ERR_INVALID_ARG);
}

// The exact head sweep: every head in one session equals each head patched alone by the naive
// path (one full forward per site), 1e-5 of the largest score (f32 rounding of two batch shapes,
// as test_sweep's bound).
TEST(HeadSweep, AllHeadsEqualsEachHeadNaive) {
    CVENE_SKIP_WITHOUT_DEVICE();
    for (const char *model : {"gpt2/small", "neox/par_rot25"}) {
        Loaded L(std::string(CVENE_FIXTURES) + "/" + model + "/model", kTestDevice);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        const cvene_model_info mi = cvene_model_get_info(L.model);
        const int T = 8, H = mi.n_head, NL = mi.n_layer;
        std::mt19937 g(3);
        std::vector<int32_t> base(T), src(T);
        for (int t = 0; t < T; t++) base[t] = (int32_t)(g() % mi.vocab_size), src[t] = (int32_t)(g() % mi.vocab_size);
        for (cvene_metric metric : {CVENE_METRIC_LOGIT_DIFF, CVENE_METRIC_KL}) {
            cvene_sweep_params p = cvene_sweep_default_params();
            p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
            p.head = CVENE_ALL_HEADS;
            p.metric = metric;
            p.token = 5, p.token_b = 17;
            p.max_batch = 3;
            std::vector<float> all((size_t)NL * H * T);
            cvene_sweep_summary sum;
            ASSERT_EQ(cvene_sweep(L.model, base.data(), src.data(), T, &p, all.data(), &sum), CVENE_OK) << L.error();
            EXPECT_EQ(sum.sites, (int64_t)NL * H * T);
            double mx = 0.1, err = 0;
            for (int h = 0; h < H; h++) {
                p.head = h;
                p.naive = 1;
                std::vector<float> one((size_t)NL * T);
                ASSERT_EQ(cvene_sweep(L.model, base.data(), src.data(), T, &p, one.data(), nullptr), CVENE_OK);
                for (int l = 0; l < NL; l++)
                    for (int t = 0; t < T; t++) {
                        const float ref = one[(size_t)l * T + t], got = all[((size_t)l * H + h) * T + t];
                        mx = std::max(mx, (double)std::fabs(ref));
                        err = std::max(err, (double)std::fabs(got - ref));
                    }
            }
            EXPECT_LE(err / mx, 1e-5) << model << " metric " << metric << ": max error " << err;
        }
    }
}

// Layer x head patching (together): each head's output patched at every position at once. The fast
// path (the heads as rows of one resumed forward) equals the naive path (a full forward per head,
// all positions patched at the site), 1e-5 as above, for every head, one head, and a non-head
// component; and the AtP estimate of it is the base score plus the per-position changes of the torch
// reference summed (1e-4 of the largest, as AtpMatchesTorch).
TEST(HeadSweep, AllPositionsTogether) {
    CVENE_SKIP_WITHOUT_DEVICE();
    for (const char *model : {"gpt2/small", "neox/par_rot25"}) {
        Loaded L(std::string(CVENE_FIXTURES) + "/" + model + "/model", kTestDevice);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        const cvene_model_info mi = cvene_model_get_info(L.model);
        const int T = 7, H = mi.n_head, NL = mi.n_layer;
        std::mt19937 g(9);
        std::vector<int32_t> base(T), src(T);
        for (int t = 0; t < T; t++) base[t] = (int32_t)(g() % mi.vocab_size), src[t] = (int32_t)(g() % mi.vocab_size);
        const int some[3] = {1, 4, 6};
        for (int variant = 0; variant < 3; variant++) { // every head; head 2 at positions 1, 4, 6; mlp_output
            cvene_sweep_params p = cvene_sweep_default_params();
            p.component = variant == 2 ? CVENE_MLP_OUTPUT : CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
            p.head = variant == 0 ? CVENE_ALL_HEADS : 2;
            if (variant == 1) p.positions = some, p.n_positions = 3;
            p.metric = CVENE_METRIC_KL;
            p.together = 1;
            const int nh = variant == 0 ? H : 1;
            std::vector<float> fast((size_t)NL * nh), naive((size_t)NL * nh);
            cvene_sweep_summary sum;
            ASSERT_EQ(cvene_sweep(L.model, base.data(), src.data(), T, &p, fast.data(), &sum), CVENE_OK) << L.error();
            EXPECT_EQ(sum.sites, (int64_t)NL * nh);
            p.naive = 1;
            ASSERT_EQ(cvene_sweep(L.model, base.data(), src.data(), T, &p, naive.data(), nullptr), CVENE_OK) << L.error();
            double mx = 0.1, err = 0;
            for (size_t i = 0; i < fast.size(); i++) {
                mx = std::max(mx, (double)std::fabs(naive[i]));
                err = std::max(err, (double)std::fabs(fast[i] - naive[i]));
            }
            EXPECT_LE(err / mx, 1e-5) << model << " variant " << variant << ": max error " << err;
            // patching every position of a head differs from patching none: the scores are not all the base's
            double spread = 0;
            for (float v : fast) spread = std::max(spread, std::fabs(v - sum.base_score));
            EXPECT_GT(spread, 1e-6) << model << " variant " << variant;
        }
    }
}

TEST(Atp, TogetherSumsThePositionsOfTheTorchReference) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string path = std::string(CVENE_FIXTURES) + "/atp/gpt2_small.json";
    cJSON *doc = cJSON_Parse(slurp(path).c_str());
    ASSERT_NE(doc, nullptr);
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const std::vector<int32_t> base = ints(cJSON_GetObjectItem(doc, "base")), src = ints(cJSON_GetObjectItem(doc, "source"));
    const int T = (int)base.size(), H = mi.n_head;
    int checked = 0;
    for (const cJSON *c = cJSON_GetObjectItem(doc, "cases")->child; c; c = c->next) {
        if (strcmp(cJSON_GetObjectItem(c, "component")->valuestring, "head_attention_value_output")) continue;
        std::vector<double> change;
        flatten(cJSON_GetObjectItem(c, "scores"), &change); // (L, H, T)
        const double b0 = cJSON_GetObjectItem(c, "base_score")->valuedouble;
        cvene_sweep_params p = cvene_sweep_default_params();
        p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT, p.head = CVENE_ALL_HEADS, p.together = 1;
        p.metric = metric_named(cJSON_GetObjectItem(c, "metric")->valuestring);
        p.token = (int32_t)cJSON_GetObjectItem(doc, "token")->valuedouble;
        p.token_b = (int32_t)cJSON_GetObjectItem(doc, "token_b")->valuedouble;
        std::vector<float> got((size_t)mi.n_layer * H);
        ASSERT_EQ(cvene_sweep_atp(L.model, base.data(), src.data(), T, &p, got.data(), nullptr), CVENE_OK) << L.error();
        double scale = 1e-3, err = 0;
        for (int lh = 0; lh < mi.n_layer * H; lh++) {
            double want = 0;
            for (int t = 0; t < T; t++) want += change[(size_t)lh * T + t];
            scale = std::max(scale, std::fabs(want));
            err = std::max(err, std::fabs(got[lh] - (b0 + want)));
        }
        EXPECT_LE(err / scale, 1e-4) << cJSON_GetObjectItem(c, "metric")->valuestring;
        checked++;
    }
    EXPECT_EQ(checked, 3);
    cJSON_Delete(doc);
}

// With the base as its own source every activation difference is 0: every estimate is the base
// score exactly, and the source score equals it.
TEST(Atp, NoChangeWhenTheSourceIsTheBase) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/neox/par_rot25/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const cvene_model_info mi = cvene_model_get_info(L.model);
    const int T = 6;
    std::vector<int32_t> ids(T);
    for (int t = 0; t < T; t++) ids[t] = (7 * t + 2) % mi.vocab_size;
    cvene_sweep_params p = cvene_sweep_default_params();
    p.metric = CVENE_METRIC_PROB;
    p.token = 4;
    std::vector<float> got((size_t)mi.n_layer * T);
    cvene_sweep_summary sum;
    ASSERT_EQ(cvene_sweep_atp(L.model, ids.data(), ids.data(), T, &p, got.data(), &sum), CVENE_OK) << L.error();
    for (float v : got) EXPECT_FLOAT_EQ(v, (float)sum.base_score);
    EXPECT_NEAR(sum.base_score, sum.source_score, 1e-6);
}

// A dataset of pairs of different lengths, each with its own positions for the columns and its own
// metric tokens: every example's row equals a naive single-pair sweep at its positions (one full
// forward per site: the independent reference, 1e-5 of the largest score as test_sweep), and the
// mean is their mean (1e-5). The examples run one by one at their own lengths, so no padding is
// involved. Also with every head and with atp (the mean of single-pair estimates).
TEST(DatasetSweep, MeanOfSinglePairSweeps) {
    CVENE_SKIP_WITHOUT_DEVICE();
    for (const char *model : {"gpt2/small", "neox/par_rot25"}) {
        Loaded L(std::string(CVENE_FIXTURES) + "/" + model + "/model", kTestDevice);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        const cvene_model_info mi = cvene_model_get_info(L.model);
        const int NE = 3, NP = 2, lens[NE] = {6, 9, 7}, pos[NE][NP] = {{2, 5}, {4, 8}, {0, 6}};
        std::mt19937 g(5);
        std::vector<std::vector<int32_t>> base(NE), src(NE);
        std::vector<cvene_sweep_example> ex(NE);
        for (int e = 0; e < NE; e++) {
            for (int t = 0; t < lens[e]; t++)
                base[e].push_back((int32_t)(g() % mi.vocab_size)), src[e].push_back((int32_t)(g() % mi.vocab_size));
            ex[e] = {base[e].data(), src[e].data(), lens[e], pos[e], (int32_t)(3 + e), (int32_t)(11 + 2 * e)};
        }
        for (int variant = 0; variant < 3; variant++) { // exact, every head, atp
            cvene_sweep_params p = cvene_sweep_default_params();
            p.metric = CVENE_METRIC_LOGIT_DIFF;
            if (variant == 1) p.component = CVENE_HEAD_ATTENTION_VALUE_OUTPUT, p.head = CVENE_ALL_HEADS;
            p.atp = variant == 2;
            const int nh = variant == 1 ? mi.n_head : 1;
            const size_t per = (size_t)mi.n_layer * nh * NP;
            std::vector<float> each(per * NE), mean(per);
            cvene_sweep_summary sum;
            ASSERT_EQ(cvene_sweep_dataset(L.model, ex.data(), NE, NP, &p, each.data(), mean.data(), &sum), CVENE_OK)
                << L.error();
            std::vector<double> acc(per, 0.0);
            double mx = 0.1, err = 0, merr = 0;
            for (int e = 0; e < NE; e++) {
                cvene_sweep_params q = p;
                q.positions = pos[e], q.n_positions = NP, q.token = ex[e].token, q.token_b = ex[e].token_b;
                q.naive = !p.atp;
                std::vector<float> one(per);
                ASSERT_EQ(cvene_sweep(L.model, base[e].data(), src[e].data(), lens[e], &q, one.data(), nullptr), CVENE_OK)
                    << L.error();
                for (size_t i = 0; i < per; i++) {
                    acc[i] += one[i] / NE;
                    mx = std::max(mx, (double)std::fabs(one[i]));
                    err = std::max(err, (double)std::fabs(each[per * e + i] - one[i]));
                }
            }
            for (size_t i = 0; i < per; i++) merr = std::max(merr, std::fabs(mean[i] - acc[i]));
            EXPECT_LE(err / mx, 1e-5) << model << " variant " << variant;
            EXPECT_LE(merr / mx, 1e-5) << model << " variant " << variant;
            EXPECT_EQ(sum.sites, (int64_t)per * NE);
        }
    }
}

TEST(DatasetSweep, RefusalsNameTheExample) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int32_t ids[5] = {1, 2, 3, 4, 5};
    int good[1] = {2}, bad[1] = {5};
    cvene_sweep_example ex[2] = {{ids, ids, 5, good, 3, 4}, {ids, ids, 5, bad, 3, 4}};
    cvene_sweep_params p = cvene_sweep_default_params();
    float out[64];
    EXPECT_EQ(cvene_sweep_dataset(L.model, ex, 0, 1, &p, out, out, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("empty"), std::string::npos) << cvene_ctx_error(L.ctx);
    EXPECT_EQ(cvene_sweep_dataset(L.model, ex, 2, 1, &p, out, out, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("example 1: position 5"), std::string::npos)
        << cvene_ctx_error(L.ctx);
    ex[1].positions = good;
    ex[1].token = 100000;
    EXPECT_EQ(cvene_sweep_dataset(L.model, ex, 2, 1, &p, out, out, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("example 1: sweep: metric token 100000"), std::string::npos)
        << cvene_ctx_error(L.ctx);
}

} // namespace
