// Native GPT-NeoX vs Hugging Face transformers (fixtures from tools/make_neox_fixtures.py),
// the rotary op against a double-precision formula, zero-copy F32 loading, config
// validation, and the memory planner (cvene_plan_memory) against parameter counts and
// the arena the forward actually reserves.
//
// Parity: every stream cvene publishes and the logits, for every layer and case, within
// 1e-5 of the largest reference magnitude over real-token rows (the GPT-2 tolerance: f32
// vs f32 in a different summation order). q/k/v are the post-rotary vectors
// GPTNeoXAttention._attn receives.
//
// Built twice: test_neox_parity (CPU, label parity: everything below) and
// test_neox_parity_cuda (CVENE_TEST_CUDA=1, label cuda: the parity and site tests with the
// model on CVENE_DEVICE_CUDA, sites read and written through host copies; skipped without
// a GPU; the CPU-only rotary, loading, config and planner tests are left out). The CUDA
// build's test names carry "Cuda" so the two never share a ctest name.
#include <unistd.h>

#include <cjson/cJSON.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "test_device.h"
#include "test_util.h"
extern "C" {
#include "models/model.h"
}

namespace fs = std::filesystem;

namespace {

const double kTol = 1e-5;
const std::string kNeox = std::string(CVENE_FIXTURES) + "/neox/";

#if CVENE_TEST_CUDA
#define NEOX_SITES NeoxSitesCuda
#else
#define NEOX_SITES NeoxSites
#endif

struct Collector {
    cvene_backend *be = nullptr;  // the run's backend (device-to-host copies on CUDA)
    std::map<std::string, std::vector<float>> got;
    std::map<std::string, std::vector<int64_t>> shape;
    std::vector<std::string> order;
};

int collect(void *user, cvene_component c, int layer, cvene_tensor_view *t) {
    auto *col = static_cast<Collector *>(user);
    std::string key = std::string(cvene_component_name(c)) + "." + std::to_string(layer);
    SiteHost h(col->be, t);
    if (!h.ok) return 1;
    col->got[key].assign(h.p, h.p + h.n);
    col->shape[key].assign(t->shape, t->shape + t->ndim);
    col->order.push_back(key);
    return 0;
}

bool per_head(cvene_component c) {
    return c == CVENE_HEAD_QUERY_OUTPUT || c == CVENE_HEAD_KEY_OUTPUT || c == CVENE_HEAD_VALUE_OUTPUT ||
           c == CVENE_HEAD_ATTENTION_VALUE_OUTPUT || c == CVENE_ATTENTION_WEIGHT;
}

// Max |got - ref| over rows whose query token is real (mask 1), relative to max |ref| over
// the same rows. Layout (B, T, X) or, with heads, (B, H, T, X).
double rel_err(const std::vector<float> &got, const std::vector<float> &ref, const std::vector<int64_t> &shape,
               const std::vector<int32_t> &mask, int T, bool heads, std::string *where) {
    if (got.size() != ref.size()) {
        *where = "size mismatch " + std::to_string(got.size()) + " vs " + std::to_string(ref.size());
        return INFINITY;
    }
    int64_t X = shape.back();
    int64_t rows = (int64_t)ref.size() / X;
    double max_ref = 0, max_err = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = r % T;
        int64_t b = heads ? r / (T * shape[1]) : r / T;
        if (!mask[b * T + t]) continue;
        for (int64_t x = 0; x < X; x++) {
            double a = got[r * X + x], e = ref[r * X + x];
            max_ref = std::max(max_ref, std::fabs(e));
            if (!(std::fabs(a - e) <= max_err)) {  // also catches NaN
                max_err = std::isnan(a) ? INFINITY : std::fabs(a - e);
                *where = "row " + std::to_string(r) + " col " + std::to_string(x) + ": got " + std::to_string(a) +
                         " want " + std::to_string(e);
            }
        }
    }
    return max_err / std::max(max_ref, 1e-30);
}

const std::vector<std::string> kModels = {"par_rot25", "seq_rot100", "fp16", "bf16_seq", "sharded"};

class NeoxParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NeoxParity, LogitsAndEveryStreamMatchTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = kNeox + GetParam();
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info info = cvene_model_get_info(L.model);
    EXPECT_EQ(info.arch, CVENE_ARCH_GPT_NEOX);
    Archive ref(dir + "/reference.safetensors");
    ASSERT_NE(ref.find("case0.input_ids"), nullptr);
    int checked = 0, n_cases = 0;
    double worst_logits = 0, worst_stream = 0;
    std::string worst_where;
    for (int k = 0;; k++, n_cases++) {
        std::string pre = "case" + std::to_string(k) + ".";
        if (!ref.find(pre + "input_ids")) break;
        std::vector<int64_t> ishape;
        auto ids = ref.get<int32_t>(pre + "input_ids", &ishape);
        auto mask = ref.get<int32_t>(pre + "attention_mask");
        std::vector<int32_t> pos;
        if (ref.find(pre + "position_ids")) pos = ref.get<int32_t>(pre + "position_ids");
        int B = (int)ishape[0], T = (int)ishape[1];
        Collector col;
        col.be = L.ctx->be;
        std::vector<float> logits((size_t)B * T * info.vocab_size);
        cvene_run_opts o{};
        o.attention_mask = mask.data();
        o.position_ids = pos.empty() ? nullptr : pos.data();
        o.logits = logits.data();
        o.site_fn = collect;
        o.site_user = &col;
        for (int c = 0; c < CVENE_N_TRANSFORMER_COMPONENTS; c++) o.sites[c] = (1ull << info.n_layer) - 1;
        ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();

        std::vector<int64_t> lshape;
        auto ref_logits = ref.get<float>(pre + "logits", &lshape);
        std::string where;
        double e = rel_err(logits, ref_logits, lshape, mask, T, false, &where);
        EXPECT_LE(e, kTol) << GetParam() << " " << pre << "logits: " << where;
        worst_logits = std::max(worst_logits, e);
        checked++;
        for (int c = 0; c < CVENE_N_TRANSFORMER_COMPONENTS; c++)
            for (int l = 0; l < info.n_layer; l++) {
                std::string key = std::string(cvene_component_name((cvene_component)c)) + "." + std::to_string(l);
                std::vector<int64_t> shape;
                auto want = ref.get<float>(pre + key, &shape);
                ASSERT_EQ(col.shape[key], shape) << key;
                e = rel_err(col.got[key], want, shape, mask, T, per_head((cvene_component)c), &where);
                EXPECT_LE(e, kTol) << GetParam() << " " << pre << key << ": " << where;
                if (e > worst_stream) worst_stream = e, worst_where = pre + key;
                checked++;
            }
    }
    EXPECT_GE(n_cases, 2);
    EXPECT_EQ(checked, n_cases * (1 + CVENE_N_TRANSFORMER_COMPONENTS * info.n_layer));
    std::printf("[ neox parity ] %-10s %d cases: max rel err logits %.3g, streams %.3g (%s)\n",
                GetParam().c_str(), n_cases, worst_logits, worst_stream, worst_where.c_str());
}

// logits_to_keep (transformers' argument of that name): the kept rows equal transformers' full
// logits at those positions, with and without the last block's shortcut.
TEST_P(NeoxParity, LogitsToKeepMatchesTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = kNeox + GetParam();
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Archive ref(dir + "/reference.safetensors");
    expect_logits_to_keep_match(L.ctx, L.model, ref, kTol);
}

#if CVENE_TEST_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, NeoxParity, ::testing::ValuesIn(kModels));
#else
INSTANTIATE_TEST_SUITE_P(Fixtures, NeoxParity, ::testing::ValuesIn(kModels));
#endif

// Sites fire in the order pyvene's hooks would (block_input ... block_output), q/k/v
// (post-rotary) and attention_weight in the positions the forward computes them.
TEST(NEOX_SITES, OrderInsideALayer) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(kNeox + "seq_rot100/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int32_t ids[4] = {5, 9, 1, 33};
    Collector col;
    col.be = L.ctx->be;
    cvene_run_opts o{};
    o.site_fn = collect;
    o.site_user = &col;
    for (int c = 0; c < CVENE_N_TRANSFORMER_COMPONENTS; c++) o.sites[c] = 1ull << 1;
    ASSERT_EQ(cvene_forward(L.model, ids, 1, 4, &o), CVENE_OK) << L.error();
    std::vector<std::string> want = {"block_input", "attention_input", "query_output", "key_output",
                                     "value_output", "head_query_output", "head_key_output",
                                     "head_value_output", "attention_weight", "attention_value_output",
                                     "head_attention_value_output", "attention_output", "mlp_input",
                                     "mlp_activation", "mlp_output", "block_output"};
    for (auto &w : want) w += ".1";
    EXPECT_EQ(col.order, want);
}

// Writing at the post-rotary q/k/v sites feeds attention exactly as editing the tensors
// inside transformers' GPTNeoXAttention._attn does (fixture "iv": head 1 of the layer-0
// query zeroed, +0.25 on dims 0..2 of every layer-0 key head, position 2 of the last
// layer's value negated).
struct IvEdit {
    cvene_backend *be;
    int last;
    std::vector<float> q0, v_last;
};
int iv_edit(void *user, cvene_component c, int layer, cvene_tensor_view *t) {
    auto *e = static_cast<IvEdit *>(user);
    SiteHost h(e->be, t);
    if (!h.ok) return 1;
    float *p = h.p;
    const int64_t B = t->shape[0];
    if (c == CVENE_HEAD_QUERY_OUTPUT && layer == 0) {  // (B, H, T, D)
        const int64_t H = t->shape[1], T = t->shape[2], D = t->shape[3];
        for (int64_t b = 0; b < B; b++) std::fill(p + ((b * H + 1) * T) * D, p + ((b * H + 2) * T) * D, 0.0f);
        e->q0.assign(p, p + B * H * T * D);
    }
    if (c == CVENE_HEAD_KEY_OUTPUT && layer == 0) {
        const int64_t n = B * t->shape[1] * t->shape[2], D = t->shape[3];
        for (int64_t r = 0; r < n; r++)
            for (int d = 0; d < 3; d++) p[r * D + d] += 0.25f;
    }
    if (c == CVENE_VALUE_OUTPUT && layer == e->last) {  // (B, T, C)
        const int64_t T = t->shape[1], C = t->shape[2];
        for (int64_t b = 0; b < B; b++)
            for (int64_t x = 0; x < C; x++) p[(b * T + 2) * C + x] = -p[(b * T + 2) * C + x];
        e->v_last.assign(p, p + B * T * C);
    }
    return h.write_back() ? 0 : 1;
}

TEST_P(NeoxParity, WritingPostRotaryQKVMatchesTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = kNeox + GetParam();
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info info = cvene_model_get_info(L.model);
    Archive ref(dir + "/reference.safetensors");
    std::vector<int64_t> ishape;
    auto ids = ref.get<int32_t>("case0.input_ids", &ishape);
    auto mask = ref.get<int32_t>("case0.attention_mask");
    int B = (int)ishape[0], T = (int)ishape[1], last = info.n_layer - 1;
    IvEdit e{L.ctx->be, last, {}, {}};
    std::vector<float> logits((size_t)B * T * info.vocab_size);
    cvene_run_opts o{};
    o.attention_mask = mask.data();
    o.logits = logits.data();
    o.site_fn = iv_edit;
    o.site_user = &e;
    o.sites[CVENE_HEAD_QUERY_OUTPUT] = 1;
    o.sites[CVENE_HEAD_KEY_OUTPUT] = 1;
    o.sites[CVENE_VALUE_OUTPUT] = 1ull << last;
    ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();
    std::string where;
    std::vector<int64_t> shape;
    auto want = ref.get<float>("iv.logits", &shape);
    EXPECT_LE(rel_err(logits, want, shape, mask, T, false, &where), kTol) << "iv.logits " << where;
    auto clean = ref.get<float>("case0.logits");
    EXPECT_GT(rel_err(logits, clean, shape, mask, T, false, &where), 1e-3) << "the edit changed nothing";
    want = ref.get<float>("iv.head_query_output.0", &shape);
    EXPECT_LE(rel_err(e.q0, want, shape, mask, T, true, &where), kTol) << "iv.head_query_output.0 " << where;
    want = ref.get<float>("iv.value_output." + std::to_string(last), &shape);
    EXPECT_LE(rel_err(e.v_last, want, shape, mask, T, false, &where), kTol) << "iv.value_output " << where;
}

#if !CVENE_TEST_CUDA  // the rest runs on the CPU only
// ---- the rotary op ------------------------------------------------------------

TEST(NeoxRotary, CpuOpMatchesDoubleFormula) {
    char err[256] = {0};
    cvene_backend *be = cvene_backend_cpu_new(0, err, sizeof err);
    ASSERT_NE(be, nullptr) << err;
    const int B = 2, T = 5, H = 3, D = 12, ld = H * D + 4;
    for (int rot : {0, 2, 4, 12})
        for (int with_pos : {0, 1}) {
            std::vector<float> x((size_t)B * T * ld);
            for (size_t i = 0; i < x.size(); i++) x[i] = (float)std::sin(0.37 * (double)i + rot) * 1.5f;
            std::vector<int32_t> pos((size_t)B * T);
            for (size_t i = 0; i < pos.size(); i++) pos[i] = (int32_t)(i * 7 % 61);
            std::vector<float> orig = x;
            const float base = rot == 4 ? 500.0f : 10000.0f;
            ASSERT_EQ(be->ops->rotary(be, x.data(), ld, with_pos ? pos.data() : nullptr, B, T, H, D, rot, base),
                      CVENE_OK);
            double worst = 0;
            for (int n = 0; n < B * T; n++) {
                double p = with_pos ? pos[n] : n % T;
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) {
                        const float *o = &orig[(size_t)n * ld + (size_t)h * D];
                        double want = o[d];
                        if (d < rot) {
                            int half = rot / 2, i = d % half;
                            double ang = p * std::pow((double)base, -2.0 * i / rot);
                            want = d < half ? o[i] * std::cos(ang) - o[i + half] * std::sin(ang)
                                            : o[i + half] * std::cos(ang) + o[i] * std::sin(ang);
                        }
                        worst = std::max(worst, std::fabs(want - x[(size_t)n * ld + (size_t)h * D + d]));
                    }
                for (int pad = H * D; pad < ld; pad++)  // columns past H*D are untouched
                    EXPECT_EQ(x[(size_t)n * ld + pad], orig[(size_t)n * ld + pad]);
            }
            // f32 angles for positions < 64 and inputs |x| <= 1.5: a few ulps of 1.5
            EXPECT_LE(worst, 2e-5) << "rot " << rot << " pos " << with_pos;
            if (rot == 0) {
                EXPECT_EQ(x, orig);
            }
        }
    cvene_backend_cpu_free(be);
}

// ---- zero-copy loading ----------------------------------------------------------

TEST(NeoxLoad, F32WeightsAreUsedInPlaceFromTheMapping) {
    for (const char *name : {"par_rot25", "sharded"}) {
        Loaded L(kNeox + name + "/model");
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        EXPECT_EQ(L.model->param_mem, nullptr) << name << ": an F32 checkpoint was copied";
        EXPECT_GT(L.model->map.n_files, 0) << name << ": the mapping was not kept";
    }
    Loaded g(std::string(CVENE_FIXTURES) + "/gpt2/small/model");  // GPT-2 shares the loader
    ASSERT_EQ(g.status, CVENE_OK) << g.error();
    EXPECT_EQ(g.model->param_mem, nullptr);
    EXPECT_EQ(g.model->map.n_files, 1);
    for (const char *name : {"fp16", "bf16_seq"}) {  // converted to f32: no mapping kept
        Loaded L(kNeox + name + "/model");
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        EXPECT_NE(L.model->param_mem, nullptr) << name;
        EXPECT_EQ(L.model->map.n_files, 0) << name;
    }
}

// ---- bad input --------------------------------------------------------------------

std::string tmp_dir(const std::string &name) {
    std::string d = std::string(CVENE_TEST_TMP) + "/neox_" + std::to_string(getpid()) + "_" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void write_text(const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
}

// par_rot25's config with the fields in overrides ('"key": value, ...') replaced or added.
std::string neox_config(const std::string &overrides) {
    cJSON *cfg = cJSON_Parse(R"({"model_type": "gpt_neox", "vocab_size": 96, "hidden_size": 64,
        "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 96, "rotary_pct": 0.25,
        "rotary_emb_base": 10000, "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5})");
    cJSON *over = cJSON_Parse(("{" + overrides + "}").c_str());
    EXPECT_NE(over, nullptr) << overrides;
    for (cJSON *e = over ? over->child : nullptr; e; e = e->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, e->string);
        cJSON_AddItemToObject(cfg, e->string, cJSON_Duplicate(e, 1));
    }
    char *text = cJSON_Print(cfg);
    std::string out = text;
    cJSON_free(text);
    cJSON_Delete(over);
    cJSON_Delete(cfg);
    return out;
}

// A model directory: config.json with the given overrides, the par_rot25 weights.
std::string model_with(const std::string &name, const std::string &overrides) {
    std::string d = tmp_dir(name);
    write_text(d + "/config.json", neox_config(overrides));
    fs::copy_file(kNeox + "par_rot25/model/model.safetensors", d + "/model.safetensors");
    return d;
}

struct BadCase {
    const char *name, *overrides;
    cvene_status status;
    std::vector<std::string> words;  // all must appear in the message
};

TEST(NeoxConfig, BadConfigsAreClearErrors) {
    std::vector<BadCase> cases = {
        {"pct_zero", R"("rotary_pct": 0)", CVENE_ERR_FORMAT, {"rotary_pct", "= 0", "(0, 1]"}},
        {"pct_neg", R"("rotary_pct": -0.25)", CVENE_ERR_FORMAT, {"rotary_pct", "-0.25", "(0, 1]"}},
        {"pct_big", R"("rotary_pct": 1.5)", CVENE_ERR_FORMAT, {"rotary_pct", "1.5", "(0, 1]"}},
        {"pct_str", R"("rotary_pct": "half")", CVENE_ERR_FORMAT, {"rotary_pct", "number"}},
        {"pct_odd", R"("rotary_pct": 0.1875)", CVENE_ERR_FORMAT, {"rotary_pct", "3 rotary dims", "even"}},
        {"heads", R"("hidden_size": 50)", CVENE_ERR_FORMAT,
         {"hidden_size = 50", "not divisible", "num_attention_heads = 4"}},
        {"heads_zero", R"("num_attention_heads": 0)", CVENE_ERR_FORMAT, {"num_attention_heads"}},
        {"base", R"("rotary_emb_base": 0)", CVENE_ERR_FORMAT, {"rotary_emb_base", "must be in (0, 3e38)"}},
        {"eps", R"("layer_norm_eps": -1)", CVENE_ERR_FORMAT, {"layer_norm_eps"}},
        {"act", R"("hidden_act": "swish")", CVENE_ERR_UNSUPPORTED, {"hidden_act", "swish"}},
        {"scaling", R"("rope_scaling": {"type": "linear", "factor": 2.0})", CVENE_ERR_UNSUPPORTED,
         {"rope_scaling"}},
        {"parallel", R"("use_parallel_residual": 1)", CVENE_ERR_FORMAT, {"use_parallel_residual", "true or false"}},
        {"inner", R"("intermediate_size": 128)", CVENE_ERR_FORMAT,
         {"dense_h_to_4h.weight", "[96, 64]", "[128, 64]"}},
        {"tied", R"("tie_word_embeddings": true, "vocab_size": 97)", CVENE_ERR_FORMAT, {"embed_in.weight", "97"}},
        {"no_bias", R"("attention_bias": false)", CVENE_OK, {}},  // extra tensors are ignored
    };
    for (const auto &c : cases) {
        std::string d = model_with(c.name, c.overrides);
        Loaded L(d);
        EXPECT_EQ(L.status, c.status) << c.name << ": " << L.error();
        EXPECT_EQ(L.model == nullptr, c.status != CVENE_OK) << c.name;
        for (const auto &w : c.words) EXPECT_NE(L.error().find(w), std::string::npos) << c.name << ": " << L.error();
        fs::remove_all(d);
    }
    // a missing required field is named
    std::string d = tmp_dir("missing");
    write_text(d + "/config.json", R"({"model_type": "gpt_neox", "vocab_size": 96, "num_attention_heads": 4,
        "num_hidden_layers": 2, "intermediate_size": 96})");
    Loaded L(d);
    EXPECT_EQ(L.status, CVENE_ERR_FORMAT);
    EXPECT_NE(L.error().find("hidden_size"), std::string::npos) << L.error();
    fs::remove_all(d);
}

// transformers >= 5 saves rotary_pct / rotary_emb_base as rope_parameters {rope_type,
// partial_rotary_factor, rope_theta}. seq_rot100 (rotary 1.0, base 500: neither is the
// default 0.25 / 10000) rewritten that way must still give transformers' logits, and the
// same config without rope_parameters (so the defaults apply) must not.
TEST(NeoxConfig, TransformersV5RopeParameters) {
    const std::string src = kNeox + "seq_rot100/model";
    std::ifstream in(src + "/config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    cJSON *cfg = cJSON_Parse(ss.str().c_str());
    ASSERT_NE(cfg, nullptr);
    for (const char *k : {"rotary_pct", "rotary_emb_base", "partial_rotary_factor", "rope_theta", "rope_scaling"})
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, k);
    auto write_dir = [&](const std::string &name, cJSON *c) {
        std::string d = tmp_dir(name);
        char *text = cJSON_Print(c);
        write_text(d + "/config.json", text);
        cJSON_free(text);
        fs::copy_file(src + "/model.safetensors", d + "/model.safetensors");
        return d;
    };
    std::string defaults = write_dir("v5_defaults", cfg);
    cJSON *rp = cJSON_Parse(R"({"rope_type": "default", "rope_theta": 500, "partial_rotary_factor": 1.0})");
    cJSON_AddItemToObject(cfg, "rope_parameters", rp);
    std::string v5 = write_dir("v5", cfg);
    cJSON_ReplaceItemInObjectCaseSensitive(rp, "rope_type", cJSON_CreateString("linear"));
    std::string scaled = write_dir("v5_linear", cfg);
    cJSON_Delete(cfg);

    Archive ref(kNeox + "seq_rot100/reference.safetensors");
    std::vector<int64_t> ishape, lshape;
    auto ids = ref.get<int32_t>("case0.input_ids", &ishape);
    auto mask = ref.get<int32_t>("case0.attention_mask");
    auto want = ref.get<float>("case0.logits", &lshape);
    int B = (int)ishape[0], T = (int)ishape[1];
    auto err_of = [&](const std::string &dir) {
        Loaded L(dir);
        EXPECT_EQ(L.status, CVENE_OK) << L.error();
        if (L.status != CVENE_OK) return (double)INFINITY;
        std::vector<float> logits(want.size());
        cvene_run_opts o{};
        o.attention_mask = mask.data();
        o.logits = logits.data();
        EXPECT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();
        std::string where;
        return rel_err(logits, want, lshape, mask, T, false, &where);
    };
    EXPECT_LE(err_of(v5), 1e-5);      // f32 vs f32, as the parity suite
    EXPECT_GT(err_of(defaults), 1e-3); // the rotary settings matter: the test can fail
    Loaded bad(scaled);
    EXPECT_EQ(bad.status, CVENE_ERR_UNSUPPORTED);
    EXPECT_NE(bad.error().find("rope_parameters.rope_type = linear"), std::string::npos) << bad.error();
    for (const auto &d : {defaults, v5, scaled}) fs::remove_all(d);
}

TEST(NeoxConfig, ForwardInputChecks) {
    Loaded L(kNeox + "par_rot25/model");
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int32_t ids[3] = {1, 2, 96};
    EXPECT_EQ(cvene_forward(L.model, ids, 1, 3, nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(L.error().find("input_ids[0][2] = 96"), std::string::npos) << L.error();
    ids[2] = 3;
    int32_t pos[3] = {0, -1, 2};
    cvene_run_opts o{};
    o.position_ids = pos;
    EXPECT_EQ(cvene_forward(L.model, ids, 1, 3, &o), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(L.error().find("position_ids[0][1] = -1"), std::string::npos) << L.error();
    o = cvene_run_opts{};
    o.sites[CVENE_BLOCK_OUTPUT] = 1ull << 2;
    o.site_fn = collect;
    EXPECT_EQ(cvene_forward(L.model, ids, 1, 3, &o), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(L.error().find("n_layer = 2"), std::string::npos) << L.error();
    // rotary has no position table: sequences longer than max_position_embeddings (32) run
    std::vector<int32_t> longer(40, 7);
    EXPECT_EQ(cvene_forward(L.model, longer.data(), 1, 40, nullptr), CVENE_OK) << L.error();
}

// ---- the memory planner -------------------------------------------------------------

cvene_memory_plan plan_of(cvene_ctx *ctx, const std::string &dir, cvene_plan_params p, cvene_status *st) {
    cvene_memory_plan out;
    *st = cvene_plan_memory(ctx, dir.c_str(), &p, &out);
    return out;
}

// Pythia-6.9B's shape. 6,857,302,016 parameters: transformers 4.46.3's
// GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50432, hidden_size=4096, num_hidden_layers=32,
// num_attention_heads=32, intermediate_size=16384)) built on the meta device,
// .num_parameters() == 6857302016 (also EleutherAI's published count); by hand:
// 2*V*C + L*(4C + 3C*C + 3C + C*C + C + C*I + I + I*C + C) + 2C.
TEST(NeoxPlan, Pythia69BShape) {
    const int64_t kPythia69B = 6857302016;
    const int64_t V = 50432, C = 4096, L = 32, H = 32, I = 16384;
    const int64_t layer = 4 * C + 3 * C * C + 3 * C + C * C + C + C * I + I + I * C + C;
    ASSERT_EQ(2 * V * C + L * layer + 2 * C, kPythia69B);  // the hand formula
    std::string d = tmp_dir("pythia69b");
    write_text(d + "/config.json", R"({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "vocab_size": 50432, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "intermediate_size": 16384, "max_position_embeddings": 2048, "rotary_pct": 0.25,
        "rotary_emb_base": 10000, "use_parallel_residual": true, "tie_word_embeddings": false,
        "hidden_act": "gelu", "layer_norm_eps": 1e-05, "torch_dtype": "float16"})");
    cvene_ctx *ctx = nullptr;
    char err[256];
    ASSERT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
    cvene_status st;

    // one H100 (80 GiB), f32 weights, B=1 T=2048
    cvene_plan_params p = cvene_plan_default_params();
    p.batch = 1, p.seq = 2048, p.device = CVENE_DEVICE_CUDA, p.capacity_bytes = int64_t(80) << 30;
    cvene_memory_plan m = plan_of(ctx, d, p, &st);
    ASSERT_EQ(st, CVENE_OK) << cvene_ctx_error(ctx);
    EXPECT_EQ(m.arch, CVENE_ARCH_GPT_NEOX);
    EXPECT_EQ(m.n_params, kPythia69B);
    ASSERT_EQ(m.n_devices, 1);
    const int64_t BT = p.batch * p.seq;
    // the arena gpt_neox.c carves: x, ln, att, attn, mlp, heads (BT*C each), qkv and its
    // regrouping scratch (3*BT*C each), probs (BT*H*T), fc (BT*I), ids/pos/mask on the
    // device and the zero position ids (BT int32 each); every size here is a multiple of 256
    const int64_t arena = 4 * (12 * BT * C + BT * H * p.seq + BT * I) + 4 * 4 * BT;
    const int64_t logits = 4 * BT * V;
    const int64_t kv = 2 * L * BT * C * 4;
    EXPECT_EQ(m.devices[0].first_layer, 0);
    EXPECT_EQ(m.devices[0].n_layers, 32);
    EXPECT_EQ(m.devices[0].n_params, kPythia69B);
    EXPECT_EQ(m.devices[0].weight_bytes, 4 * kPythia69B);
    EXPECT_EQ(m.devices[0].activation_bytes, arena + logits);
    EXPECT_EQ(m.devices[0].cache_bytes, kv);
    EXPECT_EQ(m.devices[0].total_bytes, 4 * kPythia69B + arena + logits + kv);
    EXPECT_EQ(m.fits, 1);  // ~28.9 GiB

    // two devices, bf16 weights: 16 layers each, embeddings first, head last
    p.n_devices = 2, p.weight_dtype = CVENE_BF16;
    m = plan_of(ctx, d, p, &st);
    ASSERT_EQ(st, CVENE_OK) << cvene_ctx_error(ctx);
    ASSERT_EQ(m.n_devices, 2);
    EXPECT_EQ(m.devices[0].n_layers, 16);
    EXPECT_EQ(m.devices[1].first_layer, 16);
    EXPECT_EQ(m.devices[0].n_params, V * C + 16 * layer);
    EXPECT_EQ(m.devices[1].n_params, 16 * layer + 2 * C + V * C);
    EXPECT_EQ(m.devices[0].n_params + m.devices[1].n_params, kPythia69B);
    EXPECT_EQ(m.devices[1].weight_bytes, 2 * m.devices[1].n_params);
    EXPECT_EQ(m.devices[0].activation_bytes, arena);
    EXPECT_EQ(m.devices[1].activation_bytes, arena + logits);
    EXPECT_EQ(m.devices[0].cache_bytes, kv / 2);

    // 16 GiB is not enough for 6.9B f32 weights on one device; unknown capacity -> -1
    p = cvene_plan_default_params();
    p.batch = 1, p.seq = 2048, p.device = CVENE_DEVICE_CUDA, p.capacity_bytes = int64_t(16) << 30;
    m = plan_of(ctx, d, p, &st);
    ASSERT_EQ(st, CVENE_OK);
    EXPECT_EQ(m.fits, 0);
    p.capacity_bytes = 0;
    m = plan_of(ctx, d, p, &st);
    EXPECT_EQ(m.fits, -1);

    // bad requests
    p.n_devices = 33;
    plan_of(ctx, d, p, &st);
    EXPECT_EQ(st, CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cvene_ctx_error(ctx)).find("33 devices"), std::string::npos) << cvene_ctx_error(ctx);
    p.n_devices = 2, p.device = CVENE_DEVICE_CPU;
    plan_of(ctx, d, p, &st);
    EXPECT_EQ(st, CVENE_ERR_INVALID_ARG);
    p = cvene_plan_default_params();
    p.batch = 0;
    plan_of(ctx, d, p, &st);
    EXPECT_EQ(st, CVENE_ERR_INVALID_ARG);
    // the config is validated as the loader does
    write_text(d + "/config.json", neox_config(R"("rotary_pct": 1.25)"));
    plan_of(ctx, d, cvene_plan_default_params(), &st);
    EXPECT_EQ(st, CVENE_ERR_FORMAT);
    EXPECT_NE(std::string(cvene_ctx_error(ctx)).find("rotary_pct"), std::string::npos);
    cvene_ctx_free(ctx);
    fs::remove_all(d);
}

// The planner's parameter count equals what the loader counts, and its activation bytes
// equal the arena a CPU forward of the same (B, T) reserves plus the host logits.
TEST(NeoxPlan, MatchesLoadedModelsAndTheirArena) {
    std::vector<std::string> dirs;
    for (const auto &n : kModels) dirs.push_back(kNeox + n + "/model");
    for (const char *n : {"small", "inner_erf", "bf16_base"})
        dirs.push_back(std::string(CVENE_FIXTURES) + "/gpt2/" + n + "/model");
    for (const auto &dir : dirs) {
        Loaded L(dir);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        cvene_model_info info = cvene_model_get_info(L.model);
        const int B = 3, T = 7;
        std::vector<int32_t> ids((size_t)B * T, 1);
        std::vector<float> logits((size_t)B * T * info.vocab_size);
        cvene_run_opts o{};
        o.logits = logits.data();
        ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();
        cvene_plan_params p = cvene_plan_default_params();
        p.batch = B, p.seq = T;
        cvene_memory_plan m;
        ASSERT_EQ(cvene_plan_memory(L.ctx, dir.c_str(), &p, &m), CVENE_OK) << L.error();
        EXPECT_EQ(m.arch, info.arch) << dir;
        EXPECT_EQ(m.n_params, info.n_params) << dir;
        EXPECT_EQ(m.n_layer, info.n_layer) << dir;
        EXPECT_EQ(m.devices[0].weight_bytes, 4 * info.n_params) << dir;
        EXPECT_EQ((size_t)m.devices[0].activation_bytes, L.model->act_cap + logits.size() * sizeof(float)) << dir;
        // a bf16-activation context's arena (16-bit buffers, the 16-bit logits, the f32 site stage)
        Loaded L16(dir, CVENE_DEVICE_CPU, CVENE_BF16, CVENE_BF16);
        ASSERT_EQ(L16.status, CVENE_OK) << L16.error();
        ASSERT_EQ(cvene_forward(L16.model, ids.data(), B, T, &o), CVENE_OK) << L16.error();
        p.weight_dtype = p.activation_dtype = CVENE_BF16;
        ASSERT_EQ(cvene_plan_memory(L.ctx, dir.c_str(), &p, &m), CVENE_OK) << L.error();
        EXPECT_EQ((size_t)m.devices[0].activation_bytes, L16.model->act_cap + logits.size() * sizeof(float)) << dir;
        EXPECT_LT(L16.model->act_cap, L.model->act_cap) << dir;
        p.weight_dtype = CVENE_F16; // activations in another 16-bit dtype than the weights
        EXPECT_EQ(cvene_plan_memory(L.ctx, dir.c_str(), &p, &m), CVENE_ERR_INVALID_ARG);
        EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("activation dtype bf16 needs weight dtype bf16"),
                  std::string::npos) << cvene_ctx_error(L.ctx);
    }
}
#endif  // !CVENE_TEST_CUDA

}  // namespace
