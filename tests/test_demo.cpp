// The shipped demo model (assets/demo-gpt2, trained by tools/train_demo_model.py)
// stores its facts the way ROME found in GPT-2: a causal trace restoring the
// last subject token in early-to-middle layers, or the last token in late
// layers, recovers most of the clean answer probability; unrelated positions do
// not. The trace is computed by cvene's sweep engine. Per prompt the model must
// know the fact (clean p and clean - corrupted above prompts.json's "expect");
// over the prompts, the mean of each recovery measure must pass its threshold
// (ROME's picture is an average over facts too). Each score is also compared with
// the torch causal trace that the training script stored (same noise: numpy
// RandomState(seed + s), float64 added to float32): probabilities rounded to 6
// decimals there, f32 here, so they must agree to ~1e-5 (2e-5 allowed).
#include <cjson/cJSON.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace {

const std::string kDemo = std::string(CVENE_ASSETS) + "/demo-gpt2";

struct Doc {
    cJSON *j = nullptr;
    Doc() {
        std::ifstream f(kDemo + "/prompts.json");
        std::stringstream ss;
        ss << f.rdbuf();
        j = cJSON_Parse(ss.str().c_str());
    }
    ~Doc() { cJSON_Delete(j); }
};

std::vector<int> ints(const cJSON *a) {
    std::vector<int> v;
    for (const cJSON *e = a ? a->child : nullptr; e; e = e->next) v.push_back((int)e->valuedouble);
    return v;
}

double num(const cJSON *o, const char *k) { return cJSON_GetObjectItem(o, k)->valuedouble; }

TEST(DemoModel, CausalTraceLocalisesFacts) {
    Doc doc;
    ASSERT_NE(doc.j, nullptr) << "cannot read " << kDemo << "/prompts.json";
    Loaded L(kDemo);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info mi = cvene_model_get_info(L.model);
    const cJSON *trace = cJSON_GetObjectItem(doc.j, "trace"), *ex = cJSON_GetObjectItem(doc.j, "expect");
    auto early = ints(cJSON_GetObjectItem(cJSON_GetObjectItem(ex, "subject_last_early_mid"), "layers"));
    auto late = ints(cJSON_GetObjectItem(cJSON_GetObjectItem(ex, "last_token_late"), "layers"));
    double min_early = num(cJSON_GetObjectItem(ex, "subject_last_early_mid"), "min_recovery");
    double min_late = num(cJSON_GetObjectItem(ex, "last_token_late"), "min_recovery");
    double max_unrel = num(ex, "unrelated_max_recovery");
    double sum_early = 0, sum_late = 0, sum_unrel = 0;
    int n = 0;
    for (const cJSON *p = cJSON_GetObjectItem(doc.j, "prompts")->child; p; p = p->next, n++) {
        auto ids = ints(cJSON_GetObjectItem(p, "ids"));
        auto unrelated = ints(cJSON_GetObjectItem(p, "unrelated"));
        int s0 = (int)num(p, "subject_start"), s1 = (int)num(p, "subject_end"), T = (int)ids.size();
        std::vector<int> subject;
        for (int t = s0; t < s1; t++) subject.push_back(t);
        std::vector<int32_t> prompt(ids.begin(), ids.end());
        cvene_sweep_params sp = cvene_sweep_default_params();
        sp.component = CVENE_BLOCK_OUTPUT;
        sp.metric = CVENE_METRIC_PROB;
        sp.token = (int32_t)num(p, "answer_id");
        sp.trace = 1;
        sp.subject = subject.data();
        sp.n_subject = (int)subject.size();
        sp.n_samples = (int)num(trace, "n_samples");
        sp.seed = (uint32_t)num(trace, "seed");
        std::vector<float> scores((size_t)mi.n_layer * T);
        cvene_sweep_summary sum{};
        ASSERT_EQ(cvene_sweep(L.model, nullptr, prompt.data(), T, &sp, scores.data(), &sum), CVENE_OK) << L.error();
        const char *text = cJSON_GetObjectItem(p, "text")->valuestring;
        // agreement with the torch trace stored by the training script
        EXPECT_NEAR(sum.source_score, num(p, "clean_prob"), 2e-5) << text;
        EXPECT_NEAR(sum.base_score, num(p, "corrupted_prob"), 2e-5) << text;
        const cJSON *ref = cJSON_GetObjectItem(p, "scores");
        int l = 0;
        for (const cJSON *row = ref->child; row; row = row->next, l++) {
            int t = 0;
            for (const cJSON *e = row->child; e; e = e->next, t++)
                EXPECT_NEAR(scores[(size_t)l * T + t], e->valuedouble, 2e-5) << text << " layer " << l << " pos " << t;
        }
        // the property itself
        double clean = sum.source_score, corr = sum.base_score, gap = clean - corr;
        EXPECT_GE(clean, num(ex, "min_clean_prob")) << text;
        ASSERT_GE(gap, num(ex, "min_clean_minus_corrupted")) << text;
        auto rec = [&](int layer, int pos) { return (scores[(size_t)layer * T + pos] - corr) / gap; };
        double e_min = INFINITY, l_min = INFINITY, u_max = -INFINITY;
        for (int layer : early) e_min = std::min(e_min, rec(layer, s1 - 1));
        for (int layer : late) l_min = std::min(l_min, rec(layer, T - 1));
        for (int pos : unrelated)
            for (int layer = 0; layer < mi.n_layer; layer++) u_max = std::max(u_max, rec(layer, pos));
        sum_early += e_min, sum_late += l_min, sum_unrel += u_max;
    }
    ASSERT_GE(n, 3);
    EXPECT_GT(sum_early / n, min_early) << "mean recovery of the last subject token in early-to-middle layers";
    EXPECT_GT(sum_late / n, min_late) << "mean recovery of the last token in late layers";
    EXPECT_LT(sum_unrel / n, max_unrel) << "mean of the largest recovery at unrelated positions";
}

// The tokenizer shipped with the demo reproduces the ids the training script stored.
TEST(DemoModel, TokenizerMatchesTrainingIds) {
    Doc doc;
    ASSERT_NE(doc.j, nullptr);
    cvene_ctx *ctx = nullptr;
    char err[256];
    ASSERT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK);
    cvene_tokenizer *tok = nullptr;
    ASSERT_EQ(cvene_tokenizer_load(ctx, kDemo.c_str(), &tok), CVENE_OK) << cvene_ctx_error(ctx);
    for (const cJSON *p = cJSON_GetObjectItem(doc.j, "prompts")->child; p; p = p->next) {
        const char *text = cJSON_GetObjectItem(p, "text")->valuestring;
        int32_t *ids = nullptr;
        size_t n = 0;
        ASSERT_EQ(cvene_tokenizer_encode(tok, text, strlen(text), &ids, &n), CVENE_OK);
        auto want = ints(cJSON_GetObjectItem(p, "ids"));
        EXPECT_EQ(std::vector<int>(ids, ids + n), want) << text;
        cvene_free(ids);
    }
    cvene_tokenizer_free(tok);
    cvene_ctx_free(ctx);
}

}  // namespace
