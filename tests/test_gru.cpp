// The native GRU (models/gru.c) and unit "t" (engine/run.c), against pyvene 0.1.8's GRU.
//
// Fixtures: tests/fixtures/gru/<model>/{model/, reference.safetensors} from
// tools/make_gru_fixtures.py: per input case the logits and every GRU stream at every layer,
// hooked per timestep at pyvene's modules and stacked to (B, T, W); and "iv.*", a forward with
// in-place edits at several (component, layer, timestep) sites. The pyvene intervention cases
// (tests/fixtures/pyvene_gru) run in test_pyvene_parity.cpp; here are the forward, the sites, the
// unit-t semantics where pyvene 0.1.8 itself is broken (docs/interventions.md, "GRU"), the new ops,
// and bad input. Tolerance: 1e-5 of the largest reference magnitude (f32 vs f32).
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "test_util.h"
extern "C" {
#include "kernels/backend.h"
}

namespace {

const double kTol = 1e-5;
const std::string kGru = std::string(CVENE_FIXTURES) + "/gru/";
const std::vector<std::string> kModels = {"lm2", "lm3_nobias", "cls2"};

bool contains(const std::string &s, const std::string &needle) { return s.find(needle) != std::string::npos; }

double rel_err(const float *got, const float *want, size_t n, std::string *where = nullptr) {
    double mx = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        mx = std::max(mx, (double)std::fabs(want[i]));
        double d = std::fabs((double)got[i] - (double)want[i]);
        if (!(d <= err)) {
            err = std::isnan(d) ? INFINITY : d;
            if (where) *where = "index " + std::to_string(i) + ": got " + std::to_string(got[i]) + " want " +
                                std::to_string(want[i]);
        }
    }
    return err / std::max(mx, 1e-30);
}

std::string key_of(cvene_component c, int l) { return std::string(cvene_component_name(c)) + "." + std::to_string(l); }

// Every site call, one (B, W) copy per timestep.
struct Steps {
    int B = 0;
    std::map<std::string, std::vector<std::vector<float>>> calls;
    std::map<std::string, int64_t> width;
    std::string bad;
    // (B, T, W) of one stream
    std::vector<float> stacked(const std::string &key) const {
        const auto &v = calls.at(key);
        int64_t W = width.at(key), T = (int64_t)v.size();
        std::vector<float> out((size_t)(B * T * W));
        for (int64_t t = 0; t < T; t++)
            for (int b = 0; b < B; b++)
                std::copy(v[t].begin() + b * W, v[t].begin() + (b + 1) * W, out.begin() + (b * T + t) * W);
        return out;
    }
};

int record(void *user, cvene_component c, int l, cvene_tensor_view *t) {
    auto *s = static_cast<Steps *>(user);
    std::string k = key_of(c, l);
    if (t->ndim != 2 || t->shape[0] != s->B || t->dtype != CVENE_F32) s->bad = k + ": view is not (B, W) f32";
    s->width[k] = t->shape[1];
    const float *p = static_cast<const float *>(t->data);
    s->calls[k].emplace_back(p, p + t->shape[0] * t->shape[1]);
    return 0;
}

void all_gru_sites(cvene_run_opts &o, int L) {
    for (int c = CVENE_N_TRANSFORMER_COMPONENTS; c < CVENE_N_COMPONENTS; c++) o.sites[c] = (1ull << L) - 1;
}

// ---- forward and every stream vs pyvene's model --------------------------------------------

class GruParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GruParity, LogitsAndEveryStreamMatchPyvene) {
    const std::string dir = kGru + GetParam();
    Loaded M(dir + "/model");
    ASSERT_EQ(M.status, CVENE_OK) << M.error();
    cvene_model_info info = cvene_model_get_info(M.model);
    EXPECT_EQ(info.arch, CVENE_ARCH_GRU);
    EXPECT_EQ(info.n_head, 1);
    EXPECT_EQ(info.n_inner, 3 * info.n_embd);
    const bool cls = GetParam() == "cls2";
    EXPECT_EQ(info.vocab_size, cls ? 3 : GetParam() == "lm2" ? 40 : 32);
    Archive ref(dir + "/reference.safetensors");
    double worst_logits = 0, worst_stream = 0;
    std::string worst_where;
    int n_cases = 0, checked = 0;
    for (int k = 0;; k++, n_cases++) {
        const std::string pre = "case" + std::to_string(k) + ".";
        if (!ref.find(pre + "input_ids")) break;
        std::vector<int64_t> ishape;
        auto ids = ref.get<int32_t>(pre + "input_ids", &ishape);
        auto mask = ref.get<int32_t>(pre + "attention_mask");
        std::vector<int32_t> pos;
        if (ref.find(pre + "position_ids")) pos = ref.get<int32_t>(pre + "position_ids");
        const int B = (int)ishape[0], T = (int)ishape[1], L = info.n_layer, V = info.vocab_size;
        Steps st;
        st.B = B;
        std::vector<float> logits((size_t)B * T * V), plain((size_t)B * T * V);
        cvene_run_opts o{};
        o.attention_mask = mask.data();
        o.position_ids = pos.empty() ? nullptr : pos.data();
        o.logits = logits.data();
        o.site_fn = record;
        o.site_user = &st;
        all_gru_sites(o, L);
        ASSERT_EQ(cvene_forward(M.model, ids.data(), B, T, &o), CVENE_OK) << M.error();
        EXPECT_EQ(st.bad, "");
        // the same forward without sites: bit-identical logits (sites only read here)
        cvene_run_opts p{};
        p.position_ids = o.position_ids;
        p.logits = plain.data();
        ASSERT_EQ(cvene_forward(M.model, ids.data(), B, T, &p), CVENE_OK) << M.error();
        EXPECT_EQ(logits, plain) << pre << "requesting sites changed the logits";

        std::string where;
        auto want = ref.get<float>(pre + "logits");
        ASSERT_EQ(want.size(), logits.size());
        double e = rel_err(logits.data(), want.data(), want.size(), &where);
        EXPECT_LE(e, kTol) << GetParam() << " " << pre << "logits " << where;
        worst_logits = std::max(worst_logits, e);
        if (cls) { // pyvene's pooled output: the row at sum(mask) - 1
            auto pooled = ref.get<float>(pre + "pooled_logits");
            for (int b = 0; b < B; b++) {
                int len = 0;
                for (int t = 0; t < T; t++) len += mask[b * T + t];
                e = rel_err(&logits[((size_t)b * T + len - 1) * V], &pooled[(size_t)b * V], V, &where);
                EXPECT_LE(e, kTol) << pre << "pooled row " << b << " " << where;
            }
        }
        for (int c = CVENE_N_TRANSFORMER_COMPONENTS; c < CVENE_N_COMPONENTS; c++)
            for (int l = 0; l < L; l++) {
                const std::string key = key_of((cvene_component)c, l);
                ASSERT_EQ(st.calls[key].size(), (size_t)T) << key << ": one call per timestep";
                std::vector<int64_t> shape;
                auto w = ref.get<float>(pre + key, &shape);
                ASSERT_EQ(shape, (std::vector<int64_t>{B, T, st.width[key]})) << key;
                auto got = st.stacked(key);
                e = rel_err(got.data(), w.data(), w.size(), &where);
                EXPECT_LE(e, kTol) << GetParam() << " " << pre << key << " " << where;
                if (e > worst_stream) worst_stream = e, worst_where = pre + key;
                checked++;
            }
    }
    EXPECT_EQ(n_cases, 3);
    EXPECT_EQ(checked, n_cases * (CVENE_N_COMPONENTS - CVENE_N_TRANSFORMER_COMPONENTS) * info.n_layer);
    std::printf("[ gru parity ] %-10s %d cases: max rel err logits %.3g, streams %.3g (%s)\n", GetParam().c_str(),
                n_cases, worst_logits, worst_stream, worst_where.c_str());
}

// Writes at per-timestep sites feed the recurrence as pyvene's in-place hooks do (the edits of
// tools/make_gru_fixtures.py iv_edits, by (component, layer, step)).
struct Editor {
    std::map<std::string, int> step;
    int B = 0, h = 0;
    std::vector<std::vector<float>> cell0; // cell_output.0 per step, after the edits
};
int edit(void *user, cvene_component c, int l, cvene_tensor_view *t) {
    auto *e = static_cast<Editor *>(user);
    int s = e->step[key_of(c, l)]++;
    float *x = static_cast<float *>(t->data);
    const int64_t n = t->shape[0] * t->shape[1];
    auto at = [&](cvene_component cc, int ll, int ss) { return c == cc && l == ll && s == ss; };
    if (at(CVENE_CELL_OUTPUT, 0, 1)) std::fill(x, x + n, 0.0f);
    if (at(CVENE_CELL_INPUT, 1, 0)) for (int64_t i = 0; i < n; i++) x[i] *= 2.0f;
    if (at(CVENE_RESET_GATE_OUTPUT, 1, 2)) for (int64_t i = 0; i < n; i++) x[i] += 0.5f;
    if (at(CVENE_NEW_H2H_OUTPUT, 0, 3)) for (int64_t i = 0; i < n; i++) x[i] = -x[i];
    if (at(CVENE_UPDATE_X2H_OUTPUT, 1, 4)) for (int64_t i = 0; i < n; i++) x[i] *= 0.5f;
    if (at(CVENE_NEW_GATE_INPUT, 0, 2)) for (int64_t i = 0; i < e->h; i++) x[i] += 1.0f; // example 0
    if (c == CVENE_CELL_OUTPUT && l == 0) e->cell0.emplace_back(x, x + n);
    return 0;
}

TEST_P(GruParity, WritesAtSitesFeedTheRecurrenceAsPyvene) {
    const std::string dir = kGru + GetParam();
    Loaded M(dir + "/model");
    ASSERT_EQ(M.status, CVENE_OK) << M.error();
    cvene_model_info info = cvene_model_get_info(M.model);
    Archive ref(dir + "/reference.safetensors");
    std::vector<int64_t> ishape;
    auto ids = ref.get<int32_t>("case0.input_ids", &ishape);
    const int B = (int)ishape[0], T = (int)ishape[1], V = info.vocab_size;
    Editor e;
    e.B = B, e.h = info.n_embd;
    std::vector<float> logits((size_t)B * T * V);
    cvene_run_opts o{};
    o.logits = logits.data();
    o.site_fn = edit;
    o.site_user = &e;
    for (cvene_component c : {CVENE_CELL_OUTPUT, CVENE_CELL_INPUT, CVENE_RESET_GATE_OUTPUT, CVENE_NEW_H2H_OUTPUT,
                              CVENE_UPDATE_X2H_OUTPUT, CVENE_NEW_GATE_INPUT})
        o.sites[c] = 3; // layers 0 and 1
    ASSERT_EQ(cvene_forward(M.model, ids.data(), B, T, &o), CVENE_OK) << M.error();
    std::string where;
    auto want = ref.get<float>("iv.logits");
    EXPECT_LE(rel_err(logits.data(), want.data(), want.size(), &where), kTol) << "iv.logits " << where;
    auto clean = ref.get<float>("case0.logits");
    EXPECT_GT(rel_err(logits.data(), clean.data(), clean.size()), 1e-3) << "the edits changed nothing";
    Steps s;
    s.B = B;
    s.calls["c"] = e.cell0;
    s.width["c"] = info.n_embd;
    auto got = s.stacked("c");
    auto wc = ref.get<float>("iv.cell_output.0");
    EXPECT_LE(rel_err(got.data(), wc.data(), wc.size(), &where), kTol) << "iv.cell_output.0 " << where;
}

INSTANTIATE_TEST_SUITE_P(Models, GruParity, ::testing::ValuesIn(kModels));

// ---- unit t: cvene's semantics where pyvene 0.1.8 breaks (docs/interventions.md, "GRU") -----

struct Ivm {
    Loaded M{kGru + "lm2/model"};
    cvene_result *res = nullptr;
    ~Ivm() { cvene_result_free(res); }
    cvene_status run(const std::string &config, const std::string &request) {
        cvene_config *c = nullptr;
        cvene_request *r = nullptr;
        cvene_status st = cvene_config_parse(M.ctx, config.c_str(), &c);
        if (st == CVENE_OK) {
            cvene_config_bind_callback(c, "half", half, nullptr);
            st = cvene_request_parse(M.ctx, request.c_str(), &r);
        }
        cvene_result_free(res);
        res = nullptr;
        if (st == CVENE_OK) st = cvene_run(M.model, c, r, &res);
        cvene_request_free(r);
        cvene_config_free(c);
        return st;
    }
    static int half(void *, float *base, const float *src, const int64_t shape[4], int, const int *, int) {
        int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
        for (int64_t i = 0; i < n; i++) base[i] = 0.5f * base[i] + (src ? src[i] : 0.0f);
        return 0;
    }
    std::string err() const { return M.error(); }
};

std::string rep(const char *comp, int layer, const char *type, const std::string &extra = "") {
    return std::string("{\"layer\": ") + std::to_string(layer) + ", \"component\": \"" + comp +
           "\", \"unit\": \"t\", \"intervention_type\": \"" + type + "\"" + extra + "}";
}
std::string config(const std::vector<std::string> &reps, const char *mode = "parallel") {
    std::string s = std::string("{\"mode\": \"") + mode + "\", \"representations\": [";
    for (size_t i = 0; i < reps.size(); i++) s += (i ? ", " : "") + reps[i];
    return s + "]}";
}
std::string ids_json(const std::vector<std::vector<int>> &rows) {
    std::string s = "{\"input_ids\": [";
    for (size_t b = 0; b < rows.size(); b++) {
        s += b ? ", [" : "[";
        for (size_t t = 0; t < rows[b].size(); t++) s += (t ? ", " : "") + std::to_string(rows[b][t]);
        s += "]";
    }
    return s + "]}";
}

const std::vector<std::vector<int>> kBase = {{4, 7, 18, 19, 13, 1}, {28, 36, 9, 18, 22, 3}};
const std::vector<std::vector<int>> kSrc = {{16, 35, 21, 19, 31, 2}, {11, 38, 11, 33, 17, 5}};
const std::vector<std::vector<int>> kSrc2 = {{9, 9, 30, 1, 12}, {5, 26, 14, 39, 8}};

// A plain forward with per-step edits fn(component, layer, step, (B, W) row data, W).
using StepFn = std::function<void(cvene_component, int, int, float *, int64_t)>;
struct Manual {
    StepFn fn;
    std::map<std::string, int> step;
};
int manual_cb(void *user, cvene_component c, int l, cvene_tensor_view *t) {
    auto *m = static_cast<Manual *>(user);
    m->fn(c, l, m->step[key_of(c, l)]++, static_cast<float *>(t->data), t->shape[1]);
    return 0;
}
std::vector<float> manual_forward(Loaded &M, const std::vector<std::vector<int>> &rows,
                                  const std::vector<std::pair<cvene_component, int>> &sites, StepFn fn) {
    const int B = (int)rows.size(), T = (int)rows[0].size(), V = cvene_model_get_info(M.model).vocab_size;
    std::vector<int32_t> ids;
    for (auto &r : rows) ids.insert(ids.end(), r.begin(), r.end());
    std::vector<float> logits((size_t)B * T * V);
    Manual m{std::move(fn), {}};
    cvene_run_opts o{};
    o.logits = logits.data();
    o.site_fn = manual_cb;
    o.site_user = &m;
    for (auto &s : sites) o.sites[s.first] |= 1ull << s.second;
    EXPECT_EQ(cvene_forward(M.model, ids.data(), B, T, &o), CVENE_OK) << M.error();
    return logits;
}
// The (B, W) rows of one stream at one step of each example.
std::vector<std::vector<float>> grab(Loaded &M, const std::vector<std::vector<int>> &rows, cvene_component c, int l,
                                     const std::vector<int> &step_of_example) {
    std::vector<std::vector<float>> out(rows.size());
    manual_forward(M, rows, {{c, l}}, [&](cvene_component, int, int s, float *x, int64_t W) {
        for (size_t b = 0; b < rows.size(); b++)
            if (s == step_of_example[b]) out[b].assign(x + b * W, x + (b + 1) * W);
    });
    return out;
}

const float *logits_of(const cvene_result *r) { return cvene_result_logits(r, nullptr, nullptr, nullptr); }

TEST(GruUnitT, VanillaAtOneStepLeavesTheOtherStepsAlone) {
    // pyvene writes zeros at every unlisted step; cvene changes only the listed one
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    const std::string req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc) +
                            "], \"unit_locations\": {\"sources->base\": [[[[4], [5]]], [[[2], [1]]]]}, "
                            "\"output_original_output\": true}";
    ASSERT_EQ(iv.run(config({rep("cell_output", 0, "VanillaIntervention")}), req), CVENE_OK) << iv.err();
    EXPECT_EQ(cvene_result_n_passes(iv.res), 2); // the source runs first: its step 4/5 feeds base step 2/1
    auto src = grab(iv.M, kSrc, CVENE_CELL_OUTPUT, 0, {4, 5});
    auto want = manual_forward(iv.M, kBase, {{CVENE_CELL_OUTPUT, 0}},
                               [&](cvene_component, int, int s, float *x, int64_t W) {
                                   for (int b = 0; b < 2; b++)
                                       if (s == (b == 0 ? 2 : 1)) std::copy(src[b].begin(), src[b].end(), x + b * W);
                               });
    const int T = 6, V = 40;
    std::string where;
    EXPECT_LE(rel_err(logits_of(iv.res), want.data(), want.size(), &where), 1e-6) << where;
    // before the listed step nothing changed (pyvene's zeros would change step 0)
    const float *got = logits_of(iv.res), *orig = cvene_result_original_logits(iv.res);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < T; t++) {
            bool same = std::equal(got + (b * T + t) * V, got + (b * T + t + 1) * V, orig + (b * T + t) * V);
            EXPECT_EQ(same, t < (b == 0 ? 2 : 1)) << "example " << b << " step " << t;
        }
}

TEST(GruUnitT, ZeroAndLambdaActOnlyAtTheListedSteps) {
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    // Zero on dims 1 and 4 of new_gate_output L1 at step 3 (ex 0) and steps 0, 2 (ex 1): "base" shorthand
    // cannot give per-example lists, so the explicit form with a null source side
    std::string req = "{\"base\": " + ids_json(kBase) +
                      ", \"unit_locations\": {\"sources->base\": [null, [[[3, 3], [2, 0]]]]}, "
                      "\"subspaces\": [[[1, 4], [1, 4]]]}";
    // [3, 3] lists step 3 twice: refused
    ASSERT_EQ(iv.run(config({rep("new_gate_output", 1, "ZeroIntervention")}), req), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(iv.err(), "timestep 3 is listed twice")) << iv.err();
    req = "{\"base\": " + ids_json(kBase) +
          ", \"unit_locations\": {\"sources->base\": [null, [[[3], [2]]]]}, \"subspaces\": [[[1, 4], [1, 4]]]}";
    ASSERT_EQ(iv.run(config({rep("new_gate_output", 1, "ZeroIntervention")}), req), CVENE_OK) << iv.err();
    auto want = manual_forward(iv.M, kBase, {{CVENE_NEW_GATE_OUTPUT, 1}},
                               [&](cvene_component, int, int s, float *x, int64_t W) {
                                   for (int b = 0; b < 2; b++)
                                       if (s == (b == 0 ? 3 : 2)) x[b * W + 1] = x[b * W + 4] = 0.0f;
                               });
    std::string where;
    EXPECT_LE(rel_err(logits_of(iv.res), want.data(), want.size(), &where), 1e-6) << "zero " << where;

    // Lambda 0.5 * base + source at step 1 from source step 3, other steps untouched
    req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc) +
          "], \"unit_locations\": {\"sources->base\": [3, 1]}}";
    ASSERT_EQ(iv.run(config({rep("update_gate_input", 0, "LambdaIntervention", ", \"callback\": \"half\"")}), req),
              CVENE_OK)
        << iv.err();
    auto src = grab(iv.M, kSrc, CVENE_UPDATE_GATE_INPUT, 0, {3, 3});
    want = manual_forward(iv.M, kBase, {{CVENE_UPDATE_GATE_INPUT, 0}},
                          [&](cvene_component, int, int s, float *x, int64_t W) {
                              for (int b = 0; s == 1 && b < 2; b++)
                                  for (int64_t d = 0; d < W; d++) x[b * W + d] = 0.5f * x[b * W + d] + src[b][d];
                          });
    EXPECT_LE(rel_err(logits_of(iv.res), want.data(), want.size(), &where), 1e-6) << "lambda " << where;
}

TEST(GruUnitT, CollectTakesTheListedStepsInAscendingOrder) {
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    std::string req = "{\"base\": " + ids_json(kBase) +
                      ", \"unit_locations\": {\"sources->base\": [null, [[[3, 1], [0, 5]]]]}}";
    ASSERT_EQ(iv.run(config({rep("update_x2h_output", 1, "CollectIntervention")}), req), CVENE_OK) << iv.err();
    ASSERT_EQ(cvene_result_n_collected(iv.res), 1);
    cvene_tensor_view t = cvene_result_collected(iv.res, 0);
    ASSERT_EQ(std::vector<int64_t>(t.shape, t.shape + t.ndim), (std::vector<int64_t>{2, 2, 16}));
    const float *c = static_cast<const float *>(t.data);
    const int steps[2][2] = {{1, 3}, {0, 5}}; // ascending
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 2; k++) {
            auto x = grab(iv.M, kBase, CVENE_X2H_OUTPUT, 1, {steps[b][k], steps[b][k]});
            EXPECT_TRUE(std::equal(c + (b * 2 + k) * 16, c + (b * 2 + k + 1) * 16, x[b].begin() + 16))
                << "example " << b << " slot " << k << ": the update third of x2h at step " << steps[b][k];
        }
    // with subspaces: (B, U, dims) per timestep
    req = "{\"base\": " + ids_json(kBase) +
          ", \"unit_locations\": {\"sources->base\": [null, [[[3, 1], [0, 5]]]]}, \"subspaces\": [[[2, 7, 0], [5, 1, 3]]]}";
    ASSERT_EQ(iv.run(config({rep("update_x2h_output", 1, "CollectIntervention")}), req), CVENE_OK) << iv.err();
    t = cvene_result_collected(iv.res, 0);
    ASSERT_EQ(std::vector<int64_t>(t.shape, t.shape + t.ndim), (std::vector<int64_t>{2, 2, 3}));
    c = static_cast<const float *>(t.data);
    const int dims[2][3] = {{2, 7, 0}, {5, 1, 3}};
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 2; k++) {
            auto x = grab(iv.M, kBase, CVENE_X2H_OUTPUT, 1, {steps[b][k], steps[b][k]});
            for (int d = 0; d < 3; d++) EXPECT_EQ(c[(b * 2 + k) * 3 + d], x[b][16 + dims[b][d]]);
        }
}

TEST(GruUnitT, SerialChainsThroughASecondSource) {
    // pyvene 0.1.8 fails on this (it re-tidies tidied activations); cvene: source_0 -> source_1 -> base
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    std::string req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc2) + ", " + ids_json(kSrc) +
                      "], \"unit_locations\": {\"source_0->source_1\": [[[[3], [4]]], [[[1], [2]]]], "
                      "\"source_1->base\": [[[[5], [0]]], [[[2], [3]]]]}}";
    ASSERT_EQ(iv.run(config({rep("cell_output", 0, "VanillaIntervention"), rep("new_gate_output", 1, "AdditionIntervention")},
                            "serial"),
                     req),
              CVENE_OK)
        << iv.err();
    auto s0 = grab(iv.M, kSrc2, CVENE_CELL_OUTPUT, 0, {3, 4});
    std::vector<std::vector<float>> s1(2);
    manual_forward(iv.M, kSrc, {{CVENE_CELL_OUTPUT, 0}, {CVENE_NEW_GATE_OUTPUT, 1}},
                   [&](cvene_component c, int, int s, float *x, int64_t W) {
                       for (int b = 0; b < 2; b++) {
                           if (c == CVENE_CELL_OUTPUT && s == (b == 0 ? 1 : 2))
                               std::copy(s0[b].begin(), s0[b].end(), x + b * W);
                           if (c == CVENE_NEW_GATE_OUTPUT && s == (b == 0 ? 5 : 0)) s1[b].assign(x + b * W, x + (b + 1) * W);
                       }
                   });
    auto want = manual_forward(iv.M, kBase, {{CVENE_NEW_GATE_OUTPUT, 1}},
                               [&](cvene_component, int, int s, float *x, int64_t W) {
                                   for (int b = 0; b < 2; b++)
                                       if (s == (b == 0 ? 2 : 3))
                                           for (int64_t d = 0; d < W; d++) x[b * W + d] += s1[b][d];
                               });
    std::string where;
    EXPECT_LE(rel_err(logits_of(iv.res), want.data(), want.size(), &where), 1e-6) << where;
}

TEST(GruUnitT, NoLocationsMeansEveryTimestep) {
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    // Vanilla on the top layer's cell_output at every step from the same steps of the source:
    // the base's logits become the source's
    std::string req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc) + "], \"unit_locations\": null}";
    ASSERT_EQ(iv.run(config({rep("cell_output", 1, "VanillaIntervention")}), req), CVENE_OK) << iv.err();
    auto want = manual_forward(iv.M, kSrc, {}, nullptr);
    std::string where;
    EXPECT_LE(rel_err(logits_of(iv.res), want.data(), want.size(), &where), 1e-6) << where;
    // sources of another length select another number of timesteps
    req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc2) + "], \"unit_locations\": null}";
    ASSERT_EQ(iv.run(config({rep("cell_output", 1, "VanillaIntervention")}), req), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(iv.err(), "the source selects 5 timestep(s) of 16 values but the base 6")) << iv.err();
}

// ---- bad input: configs and requests ---------------------------------------------------------

TEST(GruBadInput, UnitsAndComponentsMustMatch) {
    Loaded gpt2(std::string(CVENE_FIXTURES) + "/gpt2/small/model");
    ASSERT_EQ(gpt2.status, CVENE_OK) << gpt2.error();
    struct Bad {
        std::string rep;
        cvene_status st;
        std::vector<std::string> needles;
    } bad[] = {
        {"{\"layer\": 0, \"component\": \"block_output\", \"unit\": \"t\"}", CVENE_ERR_INVALID_ARG,
         {"representations[0]", "unit \"t\" (GRU timesteps) is only valid for GRU components", "block_output takes \"pos\""}},
        {"{\"layer\": 0, \"component\": \"head_query_output\", \"unit\": \"t\"}", CVENE_ERR_INVALID_ARG,
         {"head_query_output takes \"h\" or \"h.pos\""}},
        {"{\"layer\": 0, \"component\": \"cell_output\", \"unit\": \"pos\"}", CVENE_ERR_INVALID_ARG,
         {"unit \"pos\" is not valid for GRU component cell_output", "use unit \"t\""}},
        {"{\"layer\": 0, \"component\": \"new_x2h_output\", \"unit\": \"h.pos\"}", CVENE_ERR_INVALID_ARG,
         {"unit \"h.pos\" is not valid for GRU component new_x2h_output"}},
        {"{\"layer\": 0, \"component\": \"cell_output\"}", CVENE_ERR_INVALID_ARG, // unit defaults to pos
         {"unit \"pos\" is not valid for GRU component cell_output"}},
        {"{\"layer\": 0, \"component\": \"cell_output\", \"unit\": \"time\"}", CVENE_ERR_INVALID_ARG,
         {"unit \"time\" is unknown (pos, h, h.pos, t)"}},
        {"{\"layer\": 0, \"component\": \"cell_state\", \"unit\": \"t\"}", CVENE_ERR_INVALID_ARG,
         {"component \"cell_state\" is unknown", "GRU components: cell_input"}},
        {"{\"layer\": 0, \"component\": \"cell_output\", \"unit\": \"t\", \"intervention_type\": \"NoiseIntervention\"}",
         CVENE_ERR_UNSUPPORTED, {"NoiseIntervention needs unit \"pos\""}},
        {"{\"layer\": 0, \"component\": \"update_gate_output\", \"unit\": \"t\", \"intervention_type\": \"SkipIntervention\"}",
         CVENE_ERR_UNSUPPORTED, {"SkipIntervention on update_gate_output"}},
        {"{\"layer\": 0, \"component\": \"cell_output\", \"unit\": \"t\", \"intervention_link_key\": 0}",
         CVENE_ERR_UNSUPPORTED, {"intervention_link_key is not supported with unit \"t\""}},
    };
    for (auto &b : bad) {
        cvene_config *c = nullptr;
        std::string js = "{\"representations\": [" + b.rep + "]}";
        EXPECT_EQ(cvene_config_parse(gpt2.ctx, js.c_str(), &c), b.st) << js;
        EXPECT_EQ(c, nullptr);
        for (auto &n : b.needles) EXPECT_TRUE(contains(gpt2.error(), n)) << js << "\n  " << gpt2.error();
        cvene_config_free(c);
    }
    // names round-trip
    for (int c = CVENE_N_TRANSFORMER_COMPONENTS; c < CVENE_N_COMPONENTS; c++) {
        EXPECT_EQ(cvene_component_from_name(cvene_component_name((cvene_component)c)), c);
        EXPECT_TRUE(cvene_component_is_gru((cvene_component)c));
    }
    EXPECT_FALSE(cvene_component_is_gru(CVENE_BLOCK_OUTPUT));
    EXPECT_STREQ(cvene_unit_name(CVENE_UNIT_T), "t");
}

TEST(GruBadInput, ComponentsOfTheOtherArchitectureAreRefusedAtRun) {
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    // a transformer component on the GRU
    std::string req = "{\"base\": " + ids_json(kBase) + ", \"unit_locations\": {\"base\": 1}}";
    EXPECT_EQ(iv.run("{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", "
                     "\"intervention_type\": \"ZeroIntervention\"}]}", req),
              CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(iv.err(), "component = block_output: the model is a GRU (gru), which has no such stream"))
        << iv.err();
    // a GRU component on GPT-2
    Loaded gpt2(std::string(CVENE_FIXTURES) + "/gpt2/small/model");
    ASSERT_EQ(gpt2.status, CVENE_OK) << gpt2.error();
    cvene_config *c = nullptr;
    cvene_request *r = nullptr;
    cvene_result *res = nullptr;
    ASSERT_EQ(cvene_config_parse(gpt2.ctx, config({rep("cell_output", 0, "ZeroIntervention")}).c_str(), &c), CVENE_OK);
    ASSERT_EQ(cvene_request_parse(gpt2.ctx, req.c_str(), &r), CVENE_OK) << gpt2.error();
    EXPECT_EQ(cvene_run(gpt2.model, c, r, &res), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(res, nullptr);
    EXPECT_TRUE(contains(gpt2.error(), "component = cell_output is a GRU component but the model is a transformer (gpt2)"))
        << gpt2.error();
    cvene_request_free(r);
    cvene_config_free(c);
    // transformer sites asked of a GRU forward directly
    std::vector<int32_t> ids = {1, 2, 3};
    cvene_run_opts o{};
    o.site_fn = record;
    o.sites[CVENE_BLOCK_OUTPUT] = 1;
    EXPECT_EQ(cvene_forward(iv.M.model, ids.data(), 1, 3, &o), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(iv.err(), "sites[block_output]: a GRU has no such stream")) << iv.err();
    o.sites[CVENE_BLOCK_OUTPUT] = 0;
    o.sites[CVENE_CELL_OUTPUT] = 4; // layer 2 of a 2-layer GRU
    EXPECT_EQ(cvene_forward(iv.M.model, ids.data(), 1, 3, &o), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(iv.err(), "sites[cell_output] asks for a layer >= n_layer = 2")) << iv.err();
}

TEST(GruBadInput, TimestepLocationsAreChecked) {
    Ivm iv;
    ASSERT_EQ(iv.M.status, CVENE_OK) << iv.err();
    const std::string cfg = config({rep("cell_output", 1, "AdditionIntervention")});
    struct Bad {
        std::string ul;
        std::string needle;
    } bad[] = {
        {"[[[[1], [2]]], [[[6], [0]]]]", "example 0: base timestep 6 is out of range [0, 6)"},
        {"[[[[7], [2]]], [[[1], [0]]]]", "example 0: source timestep 7 is out of range [0, 6)"},
        {"[[[[1, 2], [2, 1]]], [[[0, 0], [1, 2]]]]", "example 0: base timestep 0 is listed twice"},
        {"[[[[1, 2], [2, 3]]], [[[0], [1]]]]", "the source selects 2 timestep(s) of 16 values but the base 1"},
        {"[[[[1], [2]]], [[[-1], [0]]]]", "is negative"},
    };
    for (auto &b : bad) {
        std::string req = "{\"base\": " + ids_json(kBase) + ", \"sources\": [" + ids_json(kSrc) +
                          "], \"unit_locations\": {\"sources->base\": " + b.ul + "}}";
        EXPECT_EQ(iv.run(cfg, req), CVENE_ERR_INVALID_ARG) << b.ul;
        EXPECT_EQ(iv.res, nullptr);
        EXPECT_TRUE(contains(iv.err(), b.needle)) << b.ul << "\n  " << iv.err();
    }
}

TEST(GruBadInput, ForwardArguments) {
    Loaded M(kGru + "lm2/model");
    ASSERT_EQ(M.status, CVENE_OK) << M.error();
    std::vector<int32_t> ids = {1, 2, 3, 4}, pos = {0, 1, 16, 2};
    cvene_run_opts o{};
    o.position_ids = pos.data();
    EXPECT_EQ(cvene_forward(M.model, ids.data(), 2, 2, &o), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(M.error(), "position_ids[1][0] = 16 is outside the position table [0, 16)")) << M.error();
    ids[3] = 40;
    EXPECT_EQ(cvene_forward(M.model, ids.data(), 2, 2, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(M.error(), "input_ids[1][1] = 40 is outside the vocabulary [0, 40)")) << M.error();
    EXPECT_EQ(cvene_forward(M.model, ids.data(), 0, 2, nullptr), CVENE_ERR_INVALID_ARG);
    // a GRU has no position limit without position_ids: T > max_position_embeddings runs
    std::vector<int32_t> longer(40, 3);
    std::vector<float> logits(40 * 40);
    cvene_run_opts ok{};
    ok.logits = logits.data();
    EXPECT_EQ(cvene_forward(M.model, longer.data(), 1, 40, &ok), CVENE_OK) << M.error();
}

// ---- bad input: checkpoints -------------------------------------------------------------------

struct GruFiles {
    int h = 4, L = 2, V = 7, P = 5, labels = 3;
    bool bias = true;
    std::string arch = "\"GRULMHeadModel\""; // JSON value of "architectures"[0]; "" = no field
    std::string head = "lm_head.weight";     // "" = no head tensor
    int64_t x2h_rows = -1;                   // layer 1's x2h.weight rows (-1 = 3h)
    int64_t h2h_cols = -1;                   // layer 0's h2h.weight columns (-1 = h)
    int64_t bias_len = -1;                   // layer 0's h2h.bias length (-1 = 3h)
    bool drop_bias = false;                  // leave out layer 1's x2h.bias
    std::string fields;                      // extra / overriding config.json fields, ", \"k\": v"
    bool no_h_dim = false;
};

std::string write_gru(const std::string &name, const GruFiles &f) {
    std::string dir = std::string(CVENE_TEST_TMP) + "/gru_" + name;
    mkdir(CVENE_TEST_TMP, 0755);
    mkdir(dir.c_str(), 0755);
    {
        std::ofstream c(dir + "/config.json");
        // the overriding fields first: cJSON reads the first of duplicate keys
        c << "{\"model_type\": \"gru\"" << f.fields << ", \"include_emb\": true, \"n_layer\": " << f.L << ", \"vocab_size\": " << f.V
          << ", \"max_position_embeddings\": " << f.P << ", \"n_labels\": " << f.labels
          << ", \"include_bias\": " << (f.bias ? "true" : "false");
        if (!f.no_h_dim) c << ", \"h_dim\": " << f.h;
        if (!f.arch.empty()) c << ", \"architectures\": [" << f.arch << "]";
        c << "}";
    }
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    std::deque<std::vector<float>> data;
    std::deque<std::string> names;
    std::vector<st_out_tensor> ts;
    auto add = [&](const std::string &n, std::vector<int64_t> shape) {
        int64_t numel = 1;
        for (auto d : shape) numel *= d;
        data.emplace_back((size_t)numel);
        for (auto &x : data.back()) x = nd(rng);
        names.push_back(n);
        st_out_tensor t{};
        t.name = names.back().c_str();
        t.dtype = ST_F32;
        t.ndim = (int)shape.size();
        for (size_t i = 0; i < shape.size(); i++) t.shape[i] = shape[i];
        t.data = data.back().data();
        ts.push_back(t);
    };
    const int64_t h = f.h;
    add("gru.wte.weight", {f.V, h});
    add("gru.wpe.weight", {f.P, h});
    for (int l = 0; l < f.L; l++) {
        const std::string p = "gru.cells." + std::to_string(l) + ".";
        add(p + "x2h.weight", {l == 1 && f.x2h_rows >= 0 ? f.x2h_rows : 3 * h, h});
        if (f.bias && !(l == 1 && f.drop_bias)) add(p + "x2h.bias", {3 * h});
        add(p + "h2h.weight", {3 * h, l == 0 && f.h2h_cols >= 0 ? f.h2h_cols : h});
        if (f.bias) add(p + "h2h.bias", {l == 0 && f.bias_len >= 0 ? f.bias_len : 3 * h});
    }
    if (f.head == "lm_head.weight") add(f.head, {f.V, h});
    if (f.head == "score.weight") add(f.head, {f.labels, h});
    cvene_ctx *ctx = nullptr;
    char err[256];
    EXPECT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK);
    EXPECT_EQ(st_write(ctx, (dir + "/model.safetensors").c_str(), ts.data(), (int)ts.size(), nullptr, 0), CVENE_OK)
        << cvene_ctx_error(ctx);
    cvene_ctx_free(ctx);
    return dir;
}

TEST(GruBadInput, GoodFilesLoad) {
    for (bool cls : {false, true}) {
        GruFiles f;
        if (cls) f.arch = "\"GRUForClassification\"", f.head = "score.weight";
        Loaded M(write_gru(cls ? "good_cls" : "good_lm", f));
        ASSERT_EQ(M.status, CVENE_OK) << M.error();
        cvene_model_info info = cvene_model_get_info(M.model);
        EXPECT_EQ(info.vocab_size, cls ? 3 : 7);
        EXPECT_EQ(info.n_params, 7 * 4 + 5 * 4 + 2 * 2 * (12 * 4 + 12) + (cls ? 3 : 7) * 4);
        std::vector<int32_t> ids = {1, 2, 3};
        std::vector<float> logits(3 * info.vocab_size);
        cvene_run_opts o{};
        o.logits = logits.data();
        EXPECT_EQ(cvene_forward(M.model, ids.data(), 1, 3, &o), CVENE_OK) << M.error();
    }
    // no "architectures": the head tensor decides
    GruFiles f;
    f.arch = "", f.head = "score.weight";
    Loaded M(write_gru("no_arch", f));
    ASSERT_EQ(M.status, CVENE_OK) << M.error();
    EXPECT_EQ(cvene_model_get_info(M.model).vocab_size, 3);
}

TEST(GruBadInput, BadCheckpointsAreRefusedWithTheirCulprit) {
    struct Bad {
        const char *name;
        std::function<void(GruFiles &)> edit;
        cvene_status st;
        std::vector<std::string> needles;
    } bad[] = {
        {"x2h_rows", [](GruFiles &f) { f.x2h_rows = 14; }, CVENE_ERR_FORMAT,
         {"tensor 'gru.cells.1.x2h.weight' has shape [14, 4]", "stacks the reset, update and new gates",
          "h_dim = 4 in config.json needs [12, 4]"}},
        {"h2h_cols", [](GruFiles &f) { f.h2h_cols = 5; }, CVENE_ERR_FORMAT,
         {"tensor 'gru.cells.0.h2h.weight' has shape [12, 5]", "needs [12, 4]"}},
        {"bias_len", [](GruFiles &f) { f.bias_len = 4; }, CVENE_ERR_FORMAT,
         {"tensor 'gru.cells.0.h2h.bias' has shape [4]", "needs [12]"}},
        {"h_dim_mismatch", [](GruFiles &f) { f.fields = ", \"h_dim\": 6"; f.no_h_dim = true; }, CVENE_ERR_FORMAT,
         {"h_dim = 6 in config.json needs [18, 6]"}},
        {"missing_bias", [](GruFiles &f) { f.drop_bias = true; }, CVENE_ERR_FORMAT,
         {"missing tensor 'gru.cells.1.x2h.bias'"}},
        {"no_h_dim", [](GruFiles &f) { f.no_h_dim = true; }, CVENE_ERR_FORMAT, {"config.json", "\"h_dim\""}},
        {"no_emb", [](GruFiles &f) { f.fields = ", \"include_emb\": false"; }, CVENE_ERR_UNSUPPORTED,
         {"include_emb is false"}},
        {"bare_model", [](GruFiles &f) { f.arch = "\"GRUModel\""; }, CVENE_ERR_UNSUPPORTED,
         {"architectures[0] = \"GRUModel\" is not supported", "no output head"}},
        {"arch_not_string", [](GruFiles &f) { f.arch = "3"; }, CVENE_ERR_FORMAT, {"\"architectures\" must be"}},
        {"lm_without_lm_head", [](GruFiles &f) { f.head = "score.weight"; }, CVENE_ERR_FORMAT,
         {"says GRULMHeadModel but the checkpoint has no tensor 'lm_head.weight'"}},
        {"cls_without_score", [](GruFiles &f) { f.arch = "\"GRUForClassification\""; }, CVENE_ERR_FORMAT,
         {"says GRUForClassification but the checkpoint has no tensor 'score.weight'"}},
        {"no_head", [](GruFiles &f) { f.arch = ""; f.head = ""; }, CVENE_ERR_FORMAT,
         {"neither lm_head.weight (GRULMHeadModel) nor score.weight (GRUForClassification)"}},
        {"n_layer_0", [](GruFiles &f) { f.fields = ", \"n_layer\": 0"; }, CVENE_ERR_FORMAT, {"\"n_layer\""}},
        {"bad_bias_flag", [](GruFiles &f) { f.fields = ", \"include_bias\": 1"; }, CVENE_ERR_FORMAT,
         {"\"include_bias\" must be true or false"}},
    };
    for (auto &b : bad) {
        GruFiles f;
        b.edit(f);
        Loaded M(write_gru(b.name, f));
        EXPECT_EQ(M.status, b.st) << b.name << ": " << M.error();
        EXPECT_EQ(M.model, nullptr) << b.name;
        for (auto &n : b.needles) EXPECT_TRUE(contains(M.error(), n)) << b.name << "\n  " << M.error();
    }
}

// ---- the ops the GRU adds (CPU), vs double-precision formulas --------------------------------

TEST(GruOps, SigmoidTanhAndPointwiseSteps) {
    char err[256] = {0};
    cvene_backend *be = cvene_backend_cpu_new(0, err, sizeof err);
    ASSERT_NE(be, nullptr) << err;
    be->err = err;
    be->err_len = sizeof err;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-8.0f, 8.0f);
    const size_t n = 1003;
    std::vector<float> x(n), a(n), b(n), c(n);
    for (size_t i = 0; i < n; i++) x[i] = u(rng), a[i] = u(rng) / 8.0f, b[i] = u(rng), c[i] = u(rng);
    x[0] = -100.0f, x[1] = 100.0f, x[2] = 0.0f;
    for (cvene_act act : {CVENE_ACT_SIGMOID, CVENE_ACT_TANH}) {
        std::vector<float> y = x;
        ASSERT_EQ(be->ops->activation(be, y.data(), n, act), CVENE_OK);
        for (size_t i = 0; i < n; i++) {
            double want = act == CVENE_ACT_SIGMOID ? 1.0 / (1.0 + std::exp(-(double)x[i])) : std::tanh((double)x[i]);
            EXPECT_NEAR(y[i], want, 2e-7) << "act " << act << " x = " << x[i];
        }
    }
    for (cvene_gru_step step : {CVENE_GRU_NEW_GATE_IN, CVENE_GRU_HIDDEN})
        for (int alias = 0; alias < 4; alias++) {
            std::vector<float> A = a, Bv = b, C = c, O(n, 99.0f);
            float *out = alias == 1 ? A.data() : alias == 2 ? Bv.data() : alias == 3 ? C.data() : O.data();
            ASSERT_EQ(be->ops->gru_pointwise(be, out, A.data(), Bv.data(), C.data(), n, step), CVENE_OK);
            for (size_t i = 0; i < n; i++) {
                // the f32 result of torch's op order: each product and sum rounded (volatile keeps
                // the compiler from contracting them into FMAs here)
                volatile float p = step == CVENE_GRU_NEW_GATE_IN ? b[i] * c[i] : a[i] * b[i];
                volatile float om = 1.0f - a[i];
                volatile float q = om * c[i];
                float want = step == CVENE_GRU_NEW_GATE_IN ? a[i] + p : p + q;
                EXPECT_EQ(out[i], want) << "step " << step << " alias " << alias << " i " << i;
            }
        }
    EXPECT_EQ(be->ops->gru_pointwise(be, a.data(), a.data(), b.data(), c.data(), n, (cvene_gru_step)9),
              CVENE_ERR_INVALID_ARG);
    EXPECT_TRUE(contains(err, "unknown step 9")) << err;
    cvene_backend_cpu_free(be);
}

// ---- CUDA: the same forward on the GPU (skipped without one) ---------------------------------

TEST(GruCuda, ForwardMatchesTheReference) {
    if (!cvene_cuda_available()) GTEST_SKIP() << "no CUDA device (or a build without the CUDA backend)";
    for (const auto &name : kModels) {
        Loaded M(kGru + name + "/model", CVENE_DEVICE_CUDA);
        ASSERT_EQ(M.status, CVENE_OK) << M.error();
        Archive ref(kGru + name + "/reference.safetensors");
        for (int k = 0; k < 3; k++) {
            const std::string pre = "case" + std::to_string(k) + ".";
            std::vector<int64_t> ishape;
            auto ids = ref.get<int32_t>(pre + "input_ids", &ishape);
            std::vector<int32_t> pos;
            if (ref.find(pre + "position_ids")) pos = ref.get<int32_t>(pre + "position_ids");
            auto want = ref.get<float>(pre + "logits");
            std::vector<float> logits(want.size());
            cvene_run_opts o{};
            o.position_ids = pos.empty() ? nullptr : pos.data();
            o.logits = logits.data();
            ASSERT_EQ(cvene_forward(M.model, ids.data(), (int)ishape[0], (int)ishape[1], &o), CVENE_OK) << M.error();
            std::string where;
            EXPECT_LE(rel_err(logits.data(), want.data(), want.size(), &where), kTol) << name << " " << pre << where;
        }
    }
}

}  // namespace

TEST(GruBadInput, LogitsToKeepIsRefused) {
    Loaded L(kGru + "lm2/model");
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info mi = cvene_model_get_info(L.model);
    std::vector<int32_t> ids = {1, 2, 3};
    std::vector<float> logits(3 * (size_t)mi.vocab_size, 7.0f);
    cvene_run_opts o{};
    o.logits = logits.data();
    o.logits_to_keep = 1;
    EXPECT_EQ(cvene_forward(L.model, ids.data(), 1, 3, &o), CVENE_ERR_UNSUPPORTED);
    EXPECT_NE(L.error().find("logits_to_keep = 1"), std::string::npos) << L.error();
    EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float x) { return x == 7.0f; }));
}
