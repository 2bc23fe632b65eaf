// Native GPT-2 vs Hugging Face transformers (fixtures from tools/make_gpt2_fixtures.py).
// Every stream pyvene can hook and the logits, for every layer and case, within
// 1e-5 of the largest reference magnitude: f32 vs f32 computed in a different
// order (OpenBLAS vs MKL-free torch GEMMs) differs by a few ulps per op, which
// stays well under 1e-5 relative after a handful of layers.
//
// Built twice: test_gpt2_parity (CPU, label parity) and test_gpt2_parity_cuda
// (CVENE_TEST_CUDA=1, label cuda: the same checks with the model on CVENE_DEVICE_CUDA,
// sites read through device-to-host copies; skipped without a GPU). The CUDA build's
// test names carry "Cuda" so the two never share a ctest name.
#include <map>

#include "test_device.h"
#include "test_util.h"

namespace {

const double kTol = 1e-5;

#if CVENE_TEST_CUDA
#define GPT2_SITES Gpt2SitesCuda
#else
#define GPT2_SITES Gpt2Sites
#endif

struct Collector {
    cvene_backend *be = nullptr;  // the run's backend (device-to-host copies on CUDA)
    std::map<std::string, std::vector<float>> got;
    std::map<std::string, std::vector<int64_t>> shape;
};

int collect(void *user, cvene_component c, int layer, cvene_tensor_view *t) {
    auto *col = static_cast<Collector *>(user);
    std::string key = std::string(cvene_component_name(c)) + "." + std::to_string(layer);
    SiteHost h(col->be, t);
    if (!h.ok) return 1;
    col->got[key].assign(h.p, h.p + h.n);
    col->shape[key].assign(t->shape, t->shape + t->ndim);
    return 0;
}

bool per_head(cvene_component c) {
    return c == CVENE_HEAD_QUERY_OUTPUT || c == CVENE_HEAD_KEY_OUTPUT || c == CVENE_HEAD_VALUE_OUTPUT ||
           c == CVENE_HEAD_ATTENTION_VALUE_OUTPUT || c == CVENE_ATTENTION_WEIGHT;
}

// Max |got - ref| over rows whose query token is real (mask 1), relative to max |ref|
// over the same rows. Layout (B, T, X) or, with heads, (B, H, T, X).
double rel_err(const std::vector<float> &got, const std::vector<float> &ref,
               const std::vector<int64_t> &shape, const std::vector<int32_t> &mask, int T,
               bool heads, std::string *where) {
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
                *where = "row " + std::to_string(r) + " col " + std::to_string(x) + ": got " +
                         std::to_string(a) + " want " + std::to_string(e);
            }
        }
    }
    return max_err / std::max(max_ref, 1e-30);
}

class Gpt2Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Gpt2Parity, LogitsAndEveryStreamMatchTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = std::string(CVENE_FIXTURES) + "/gpt2/" + GetParam();
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info info = cvene_model_get_info(L.model);
    Archive ref(dir + "/reference.safetensors");
    const st_tensor *nc = ref.find("case0.input_ids");
    ASSERT_NE(nc, nullptr);
    int checked = 0;
    for (int k = 0;; k++) {
        std::string pre = "case" + std::to_string(k) + ".";
        if (!ref.find(pre + "input_ids")) break;
        std::vector<int64_t> ishape;
        auto ids = ref.get<int32_t>(pre + "input_ids", &ishape);
        auto mask = ref.get<int32_t>(pre + "attention_mask");
        int B = (int)ishape[0], T = (int)ishape[1];
        Collector col;
        col.be = L.ctx->be;
        std::vector<float> logits((size_t)B * T * info.vocab_size);
        cvene_run_opts o{};
        o.attention_mask = mask.data();
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
        checked++;
        for (int c = 0; c < CVENE_N_TRANSFORMER_COMPONENTS; c++)
            for (int l = 0; l < info.n_layer; l++) {
                std::string key = std::string(cvene_component_name((cvene_component)c)) + "." + std::to_string(l);
                std::vector<int64_t> shape;
                auto want = ref.get<float>(pre + key, &shape);
                ASSERT_EQ(col.shape[key], shape) << key;
                e = rel_err(col.got[key], want, shape, mask, T, per_head((cvene_component)c), &where);
                EXPECT_LE(e, kTol) << GetParam() << " " << pre << key << ": " << where;
                checked++;
            }
    }
    EXPECT_GE(checked, 3 * (1 + CVENE_N_TRANSFORMER_COMPONENTS * info.n_layer));
}

// logits_to_keep (transformers' argument of that name): the kept rows equal transformers' full
// logits at those positions, with and without the last block's shortcut.
TEST_P(Gpt2Parity, LogitsToKeepMatchesTransformers) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = std::string(CVENE_FIXTURES) + "/gpt2/" + GetParam();
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Archive ref(dir + "/reference.safetensors");
    expect_logits_to_keep_match(L.ctx, L.model, ref, kTol);
}


#define GPT2_FIXTURES ::testing::Values("small", "inner_erf", "sharded", "fp16", "bf16_base")
#if CVENE_TEST_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, Gpt2Parity, GPT2_FIXTURES);
#else
INSTANTIATE_TEST_SUITE_P(Fixtures, Gpt2Parity, GPT2_FIXTURES);
#endif

// Writing at a site changes what follows: with the last layer's mlp_output zeroed,
// its block_output must equal block_input + attention_output from transformers.
struct ZeroMlp {
    cvene_backend *be;
    int layer;
    std::vector<float> block_out;
};
int zero_mlp(void *user, cvene_component c, int layer, cvene_tensor_view *t) {
    auto *z = static_cast<ZeroMlp *>(user);
    SiteHost h(z->be, t);
    if (!h.ok) return 1;
    if (c == CVENE_MLP_OUTPUT && layer == z->layer) {
        std::fill(h.p, h.p + h.n, 0.0f);
        if (!h.write_back()) return 1;
    }
    if (c == CVENE_BLOCK_OUTPUT && layer == z->layer) z->block_out.assign(h.p, h.p + h.n);
    return 0;
}

TEST(GPT2_SITES, OverwritingMlpOutputFeedsTheResidual) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::string dir = std::string(CVENE_FIXTURES) + "/gpt2/small";
    Loaded L(dir + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Archive ref(dir + "/reference.safetensors");
    std::vector<int64_t> ishape;
    auto ids = ref.get<int32_t>("case0.input_ids", &ishape);
    int B = (int)ishape[0], T = (int)ishape[1], last = cvene_model_get_info(L.model).n_layer - 1;
    ZeroMlp z{L.ctx->be, last, {}};
    cvene_run_opts o{};
    o.site_fn = zero_mlp;
    o.site_user = &z;
    o.sites[CVENE_MLP_OUTPUT] = 1ull << last;
    o.sites[CVENE_BLOCK_OUTPUT] = 1ull << last;
    ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &o), CVENE_OK) << L.error();
    auto in = ref.get<float>("case0.block_input." + std::to_string(last));
    auto att = ref.get<float>("case0.attention_output." + std::to_string(last));
    ASSERT_EQ(z.block_out.size(), in.size());
    double mx = 0, err = 0;
    for (size_t i = 0; i < in.size(); i++) {
        double want = (double)in[i] + att[i];
        mx = std::max(mx, std::fabs(want));
        err = std::max(err, std::fabs(want - z.block_out[i]));
    }
    EXPECT_LE(err / mx, kTol);
}

TEST(GPT2_SITES, CallbackCanStopTheForward) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    int32_t ids[3] = {1, 2, 3};
    cvene_run_opts o{};
    o.site_fn = [](void *, cvene_component, int, cvene_tensor_view *) { return 7; };
    o.sites[CVENE_MLP_INPUT] = 1;
    EXPECT_EQ(cvene_forward(L.model, ids, 1, 3, &o), CVENE_ERR_CALLBACK);
    EXPECT_NE(L.error().find("mlp_input layer 0 returned 7"), std::string::npos) << L.error();
}

}  // namespace
