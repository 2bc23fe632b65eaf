// Training (issue #13) against pyvene / torch (tests/fixtures/training, tools/make_training_fixtures.py,
// docs/training_semantics.md):
//   SiteGradients  the model's backward: dLoss/d(stream) at every site of GPT-2 vs torch autograd
//   Units          each trainable type alone: output and every gradient vs pyvene's module
//   ModelCases     a pyvene IntervenableModel with one trainable intervention: loss and gradients
//   Trajectories   20 Adam steps from pyvene's initial parameters on the same batches
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"
extern "C" {
#include "engine/iv_type.h"
#include "engine/orthogonal.h"
#include "engine/train.h"
#include "engine/trainable.h"
#include "models/model.h"
}

namespace {

const std::string kDir = std::string(CVENE_FIXTURES) + "/training";

// max |got - want| / max |want| (want's scale); where names the worst element
double rel(const float *got, const std::vector<float> &want, std::string *where = nullptr) {
    double mx = 0, err = 0;
    size_t at = 0;
    for (size_t i = 0; i < want.size(); i++) mx = std::max(mx, (double)std::fabs(want[i]));
    for (size_t i = 0; i < want.size(); i++) {
        const double e = std::isnan(got[i]) ? INFINITY : std::fabs((double)got[i] - want[i]);
        if (e > err) err = e, at = i;
    }
    if (where) *where = "index " + std::to_string(at) + ": got " + std::to_string(got[at]) + " want " +
                        std::to_string(want[at]);
    return err / std::max(mx, 1e-30);
}

cJSON *manifest() {
    static std::string text = slurp(kDir + "/manifest.json");
    return cJSON_Parse(text.c_str());
}

// ---------------------------------------------------------------------------------------------
// SiteGradients: the training pass of GPT-2 from its embeddings, every grad site recorded

struct Recorder {
    cvene_backend *be = nullptr;
    std::map<std::string, std::vector<float>> grads;
};

int record(void *user, cvene_component c, int layer, cvene_tensor_view *v) {
    Recorder *r = static_cast<Recorder *>(user);
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
    std::vector<float> h((size_t)n);
    if (r->be->ops->to_host(r->be, h.data(), v->data, sizeof(float) * (size_t)n) != CVENE_OK) return 1;
    r->grads[std::string(cvene_component_name(c)) + "." + std::to_string(layer)] = h;
    return 0;
}

// The gradients of CE (or a logit difference) at chosen positions, at every site, with the model in
// f32 and the backward's sums in f32 GEMMs: within 1e-5 of torch's f32 autograd relative to each
// stream's largest gradient (measured below 1e-6).
void check_sites(const std::string &loss_name) {
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_backend *be = L.ctx->be;
    Archive ar(kDir + "/sites/gpt2_small.safetensors");
    std::vector<int64_t> xs;
    auto x0 = ar.get<float>("value.block_input.0", &xs);
    auto mask = ar.get<int32_t>("attention_mask");
    const int B = (int)xs[0], T = (int)xs[1], V = 320;
    std::vector<int64_t> ps;
    auto pairs = ar.get<int32_t>(loss_name + ".pairs", &ps);
    const int N = (int)ps[0], W = (int)ps[1]; // (b, t, label) or (b, t, a, c)
    std::vector<int32_t> rows(N), labels(N);
    for (int i = 0; i < N; i++) rows[i] = pairs[i * W] * T + pairs[i * W + 1], labels[i] = pairs[i * W + 2];
    float *dx = nullptr, *dlog = nullptr, *dlgrad = nullptr, *dloss = nullptr;
    int32_t *dlab = nullptr;
    ASSERT_EQ(be->ops->alloc(be, (void **)&dx, x0.size() * 4), CVENE_OK);
    ASSERT_EQ(be->ops->alloc(be, (void **)&dlog, (size_t)N * V * 4), CVENE_OK);
    ASSERT_EQ(be->ops->alloc(be, (void **)&dlgrad, (size_t)N * V * 4), CVENE_OK);
    ASSERT_EQ(be->ops->alloc(be, (void **)&dloss, (size_t)N * 4), CVENE_OK);
    ASSERT_EQ(be->ops->alloc(be, (void **)&dlab, (size_t)N * 4), CVENE_OK);
    ASSERT_EQ(be->ops->to_device(be, dx, x0.data(), x0.size() * 4), CVENE_OK);
    model_train_pass tp = {0, dx, B, T, mask.data(), nullptr, rows.data(), N, dlog, nullptr, nullptr, nullptr};
    cvene_run_opts o{};
    ASSERT_EQ(L.model->vt->train_forward(L.model, &tp, &o), CVENE_OK) << L.error();
    // the logits of the loss rows are the forward's
    auto logits = ar.get<float>("logits");
    std::vector<float> lg((size_t)N * V), want((size_t)N * V);
    ASSERT_EQ(be->ops->to_host(be, lg.data(), dlog, lg.size() * 4), CVENE_OK);
    for (int i = 0; i < N; i++)
        std::copy(logits.begin() + (size_t)rows[i] * V, logits.begin() + (size_t)(rows[i] + 1) * V, want.begin() + i * V);
    EXPECT_LE(rel(lg.data(), want), 1e-5) << "logits";
    // the loss's gradient for those logits
    std::vector<float> g((size_t)N * V, 0.0f);
    double loss = 0;
    if (loss_name == "ce") {
        ASSERT_EQ(be->ops->to_device(be, dlab, labels.data(), (size_t)N * 4), CVENE_OK);
        ASSERT_EQ(be->ops->bwd->xent(be, dlgrad, dloss, dlog, dlab, N, V, 1.0f / N), CVENE_OK);
        std::vector<float> l(N);
        ASSERT_EQ(be->ops->to_host(be, l.data(), dloss, (size_t)N * 4), CVENE_OK);
        for (float v : l) loss += v / N;
    } else {
        for (int i = 0; i < N; i++) {
            g[(size_t)i * V + pairs[i * W + 2]] += 1.0f / N;
            g[(size_t)i * V + pairs[i * W + 3]] -= 1.0f / N;
            loss += ((double)lg[(size_t)i * V + pairs[i * W + 2]] - lg[(size_t)i * V + pairs[i * W + 3]]) / N;
        }
        ASSERT_EQ(be->ops->to_device(be, dlgrad, g.data(), g.size() * 4), CVENE_OK);
    }
    EXPECT_NEAR(loss, ar.get<float>("loss." + loss_name)[0], 1e-5 * (1 + std::fabs(loss)));
    Recorder rec;
    rec.be = be;
    model_grad_sites gs{};
    gs.fn = record, gs.user = &rec;
    const cvene_component comps[] = {CVENE_BLOCK_INPUT, CVENE_ATTENTION_INPUT, CVENE_QUERY_OUTPUT, CVENE_KEY_OUTPUT,
                                     CVENE_VALUE_OUTPUT, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_ATTENTION_OUTPUT,
                                     CVENE_MLP_INPUT, CVENE_MLP_ACTIVATION, CVENE_MLP_OUTPUT, CVENE_BLOCK_OUTPUT};
    for (cvene_component c : comps) gs.sites[c] = 3; // both layers
    ASSERT_EQ(L.model->vt->train_backward(L.model, &tp, dlgrad, &gs), CVENE_OK) << L.error();
    int checked = 0;
    for (cvene_component c : comps)
        for (int l = 0; l < 2; l++) {
            const std::string key = std::string(cvene_component_name(c)) + "." + std::to_string(l);
            ASSERT_TRUE(rec.grads.count(key)) << "no grad site call for " << key;
            auto want_g = ar.get<float>(loss_name + ".grad." + key);
            ASSERT_EQ(rec.grads[key].size(), want_g.size()) << key;
            std::string where;
            EXPECT_LE(rel(rec.grads[key].data(), want_g, &where), 1e-5) << key << " " << where;
            checked++;
        }
    EXPECT_EQ(checked, 22);
    for (void *p : {(void *)dx, (void *)dlog, (void *)dlgrad, (void *)dloss, (void *)dlab}) be->ops->free(be, p);
}

TEST(SiteGradients, Gpt2CrossEntropy) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("ce");
}
TEST(SiteGradients, Gpt2LogitDifference) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("logit_diff");
}

// ---------------------------------------------------------------------------------------------
// Units: one intervention on n rows, every type of pyvene 0.1.8 and pyreft (30 cases)

struct UnitCase {
    std::string name, cls;
    int D = 0, U = 1, rank = 0;
    std::vector<int> inter;       // interchange_dim (a list for the Autoencoder)
    bool inter_list = false;
    std::vector<std::vector<int>> sub; // per example, partition ids expanded to dims
    std::vector<std::string> sd_keys, trainable, grad_none;
};

std::vector<int> ints(const cJSON *a) {
    std::vector<int> v;
    for (const cJSON *e = a ? a->child : nullptr; e; e = e->next) v.push_back(e->valueint);
    return v;
}
std::vector<std::string> strs(const cJSON *a) {
    std::vector<std::string> v;
    for (const cJSON *e = a ? a->child : nullptr; e; e = e->next) v.push_back(e->valuestring);
    return v;
}

std::vector<UnitCase> unit_cases() {
    std::vector<UnitCase> out;
    cJSON *m = manifest();
    for (const cJSON *c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next) {
        if (strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "unit")) continue;
        UnitCase u;
        u.name = cJSON_GetObjectItem(c, "name")->valuestring;
        u.cls = cJSON_GetObjectItem(c, "type")->valuestring;
        const cJSON *p = cJSON_GetObjectItem(c, "params");
        const cJSON *units = cJSON_GetObjectItem(p, "units"), *lr = cJSON_GetObjectItem(p, "low_rank_dimension");
        const cJSON *lat = cJSON_GetObjectItem(p, "latent_dim");
        const cJSON *ic = cJSON_GetObjectItem(c, "interchange_dim"), *ed = cJSON_GetObjectItem(c, "embed_dim");
        u.U = cJSON_IsArray(units) ? cJSON_GetArrayItem(units, 0)->valueint : 1;
        u.D = ed->valueint;
        u.inter_list = cJSON_IsArray(ic);
        u.inter = u.inter_list ? ints(ic) : std::vector<int>{ic->valueint};
        u.rank = cJSON_IsNumber(lr) ? lr->valueint : cJSON_IsNumber(lat) ? lat->valueint : u.inter[0];
        // pyvene's Intervention expands a partition [a, b] of ints into range(a, b)
        std::vector<std::vector<int>> part;
        const cJSON *partition = cJSON_GetObjectItem(p, "subspace_partition"), *subspaces = cJSON_GetObjectItem(p, "subspaces");
        for (const cJSON *q = partition ? partition->child : nullptr; q; q = q->next) {
            std::vector<int> v = ints(q);
            if (v.size() == 2) {
                std::vector<int> r;
                for (int d = v[0]; d < v[1]; d++) r.push_back(d);
                v = r;
            }
            part.push_back(v);
        }
        for (const cJSON *q = subspaces ? subspaces->child : nullptr; q; q = q->next) {
            std::vector<int> dims;
            for (int id : ints(q))
                if (part.empty()) dims.push_back(id);
                else dims.insert(dims.end(), part[id].begin(), part[id].end());
            u.sub.push_back(dims);
        }
        u.sd_keys = strs(cJSON_GetObjectItem(c, "state_dict_keys"));
        u.trainable = strs(cJSON_GetObjectItem(c, "trainable_parameters"));
        u.grad_none = strs(cJSON_GetObjectItem(c, "grad_none"));
        out.push_back(u);
    }
    cJSON_Delete(m);
    return out;
}

// a state dict of the archive's tensors called keys (F32 / I64, as the fixtures hold them)
std::vector<tr_sd_tensor> state_dict_of(const Archive &ar, const std::vector<std::string> &keys) {
    std::vector<tr_sd_tensor> t;
    for (const std::string &k : keys) {
        const st_tensor *x = ar.find(k);
        EXPECT_NE(x, nullptr) << k;
        if (!x) continue;
        tr_sd_tensor s{};
        s.name = x->name, s.ndim = x->ndim, s.dtype = st_dtype_name(x->dtype);
        for (int d = 0; d < x->ndim; d++) s.shape[d] = x->shape[d];
        s.is_i64 = x->dtype == ST_I64;
        if (s.is_i64) s.l = (const int64_t *)x->data;
        else s.f = (const float *)x->data;
        t.push_back(s);
    }
    return t;
}

void PrintTo(const UnitCase &u, std::ostream *os) { *os << u.name; }

class Units : public ::testing::TestWithParam<UnitCase> {};

// One intervention's math in f32 through the op table (rotations materialised in double and
// rounded): output and gradients (every parameter's, the base's and the source's) within 1e-5 of
// pyvene's f32 (relative to each tensor's largest value); the parametrization's own gradient in
// double is exact to 1e-11 (test_orthogonal). The weights go in through the type's state-dict
// import (pyreft's LoReFT: its module tensors, since its state dict resets `original`) and come
// back out of its export as pyvene's state_dict() holds them.
TEST_P(Units, MatchesPyvene) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const UnitCase &u = GetParam();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice); // for a context
    ASSERT_EQ(L.status, CVENE_OK);
    cvene_backend *be = L.ctx->be;
    const std::string path = kDir + "/unit/" + u.name + ".safetensors";
    Archive ar(path);
    cvene_intervention_type t;
    ASSERT_TRUE(iv_type_parse(u.cls.c_str(), &t)) << u.cls;
    ASSERT_TRUE(tr_type_trainable(t)) << u.cls;
    tr_weights w;
    ASSERT_EQ(tr_weights_init(L.ctx, &w, t, u.D, u.rank, 1), CVENE_OK) << L.error();
    ASSERT_EQ(tr_weights_set_interchange(L.ctx, &w, u.inter.data(), (int)u.inter.size(), u.inter_list), CVENE_OK)
        << L.error();
    if (t == CVENE_IV_LOREFT) { // pyreft's state dict: weight / bias / rotate_layer; the module's are module.*
        for (int k = 0; k < w.n; k++) {
            tr_tensor *x = &w.t[k];
            auto v = ar.get<float>("module." + std::string(x->name));
            ASSERT_EQ((int64_t)v.size(), x->numel) << x->name;
            std::copy(v.begin(), v.end(), x->value);
        }
    } else {
        auto sd = state_dict_of(ar, u.sd_keys);
        ASSERT_EQ(tr_state_dict_import(L.ctx, &w, path.c_str(), sd.data(), (int)sd.size()), CVENE_OK) << L.error();
    }
    // the export is pyvene's state dict: names, dtypes, shapes and values (LoReFT's materialised
    // rotate_layer: ours in double then rounded, torch's Householder product in f32, so within 1e-6)
    tr_state_dict out_sd;
    ASSERT_EQ(tr_state_dict_export(L.ctx, &w, &out_sd), CVENE_OK) << L.error();
    ASSERT_EQ(out_sd.n, (int)u.sd_keys.size());
    for (int k = 0; k < out_sd.n; k++) {
        const tr_sd_tensor *x = &out_sd.t[k];
        const st_tensor *y = ar.find(x->name);
        ASSERT_NE(y, nullptr) << "pyvene's state dict has no " << x->name;
        EXPECT_EQ(std::find(u.sd_keys.begin(), u.sd_keys.end(), x->name) != u.sd_keys.end(), true) << x->name;
        EXPECT_EQ(y->dtype, x->is_i64 ? ST_I64 : ST_F32) << x->name;
        ASSERT_EQ(y->ndim, x->ndim) << x->name;
        for (int d = 0; d < x->ndim; d++) EXPECT_EQ(y->shape[d], x->shape[d]) << x->name;
        const void *data = x->is_i64 ? (const void *)x->l : (const void *)x->f;
        if (!strcmp(x->name, "rotate_layer")) {
            std::vector<float> want = ar.get<float>(x->name);
            EXPECT_LE(rel(x->f, want), 1e-6) << x->name;
        } else {
            EXPECT_EQ(memcmp(data, y->data, y->nbytes), 0) << x->name << " differs";
        }
    }
    tr_state_dict_free(&out_sd);
    std::vector<int64_t> bs;
    auto base = ar.get<float>("base", &bs);
    const bool sourced = ar.find("source") != nullptr;
    auto src = sourced ? ar.get<float>("source") : base;
    auto g = ar.get<float>("grad_output"), want = ar.get<float>("output");
    // rows as the module saw them: an example's U units as one vector (flattened types), or each unit
    const int rows = (int)(base.size() / (size_t)u.D);
    ASSERT_EQ(tr_type_flattened(t) ? 1 : u.U, rows / 5) << "per-unit vs flattened";
    tr_state *s = nullptr;
    ASSERT_EQ(tr_state_new(L.ctx, &w, rows, &s), CVENE_OK) << L.error();
    if (!u.sub.empty()) { // example b's subspace for each of its rows
        std::vector<int> off{0}, dims;
        for (int r = 0; r < rows; r++) {
            const auto &d = u.sub[(size_t)(r / (rows / (int)u.sub.size()))];
            dims.insert(dims.end(), d.begin(), d.end());
            off.push_back((int)dims.size());
        }
        ASSERT_EQ(tr_set_subspaces(s, off.data(), dims.data(), rows), CVENE_OK) << L.error();
    }
    ASSERT_EQ(tr_prepare(s), CVENE_OK) << L.error();
    float *db = nullptr, *ds = nullptr, *dout = nullptr, *dg = nullptr, *dsrc = nullptr;
    for (float **p : {&db, &ds, &dout, &dg, &dsrc}) ASSERT_EQ(be->ops->alloc(be, (void **)p, base.size() * 4), CVENE_OK);
    ASSERT_EQ(be->ops->to_device(be, db, base.data(), base.size() * 4), CVENE_OK);
    ASSERT_EQ(be->ops->to_device(be, ds, src.data(), src.size() * 4), CVENE_OK);
    ASSERT_EQ(be->ops->to_device(be, dg, g.data(), g.size() * 4), CVENE_OK);
    ASSERT_EQ(tr_forward(s, dout, db, ds, rows), CVENE_OK) << L.error();
    std::vector<float> out(base.size());
    ASSERT_EQ(be->ops->to_host(be, out.data(), dout, out.size() * 4), CVENE_OK);
    std::string where;
    EXPECT_LE(rel(out.data(), want, &where), 1e-5) << "output " << where;
    ASSERT_EQ(tr_backward_ex(s, dout, sourced ? dsrc : nullptr, dg, rows), CVENE_OK) << L.error();
    ASSERT_EQ(tr_finish_grads(s), CVENE_OK);
    ASSERT_EQ(be->ops->to_host(be, out.data(), dout, out.size() * 4), CVENE_OK);
    EXPECT_LE(rel(out.data(), ar.get<float>("grad.base"), &where), 1e-5) << "grad.base " << where;
    if (sourced) {
        ASSERT_EQ(be->ops->to_host(be, out.data(), dsrc, out.size() * 4), CVENE_OK);
        EXPECT_LE(rel(out.data(), ar.get<float>("grad.source"), &where), 1e-5) << "grad.source " << where;
    }
    // every parameter torch gives a gradient gets one here, and it matches; the others (grad None:
    // SigmoidMask's temperature, JumpReLU's threshold; PCA's frozen tensors) get none
    size_t grads = 0;
    for (int k = 0; k < w.n; k++) {
        const tr_tensor *x = &w.t[k];
        const bool torch_grad = std::find(u.trainable.begin(), u.trainable.end(), x->name) != u.trainable.end() &&
                                std::find(u.grad_none.begin(), u.grad_none.end(), x->name) == u.grad_none.end();
        EXPECT_EQ(x->grad != nullptr, torch_grad) << x->name;
        if (!x->grad) continue;
        const std::string key = "grad." + std::string(x->name);
        ASSERT_TRUE(ar.find(key)) << "no reference gradient " << key;
        // Boundless's temperature gradient is a sum whose terms cancel 43-fold (boundless_d12_clamped:
        // |terms| sum to 3.1 for a result of 0.073), so W's f32 rounding (ours, exp in double then
        // rounded, is 3.6e-7 from torch's f32 one) moves it by 2.3e-5; torch's own f32 value is 1.3e-5
        // from the float64 one
        const double tol = t == CVENE_IV_BOUNDLESS_ROTATED_SPACE && !strcmp(x->name, "temperature") ? 1e-4 : 1e-5;
        EXPECT_LE(rel(x->grad, ar.get<float>(key), &where), tol) << key << " " << where;
        grads++;
    }
    EXPECT_EQ(grads, u.trainable.size() - u.grad_none.size());
    for (float *p : {db, ds, dout, dg, dsrc}) be->ops->free(be, p);
    tr_state_free(s);
    tr_weights_free(&w);
}

INSTANTIATE_TEST_SUITE_P(Cases, Units, ::testing::ValuesIn(unit_cases()),
                         [](const ::testing::TestParamInfo<UnitCase> &i) { return i.param.name; });

// PCARotatedSpace's basis fitted natively (tr_pca_fit) against sklearn's numbers
// (tools/make_pca_fit_fixtures.py: numpy's SVD of the standardised data, sklearn's convention):
// mean and population std within 1e-6, every well-defined component within 1e-5 up to its sign
// (an eigenvector's sign is arbitrary; ours follow sklearn >= 1.5: the largest |entry| positive),
// the components orthonormal, and pyvene's forward with the fitted basis within 1e-5.
TEST(PcaFit, MatchesSklearn) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice); // for a context
    ASSERT_EQ(L.status, CVENE_OK);
    cvene_backend *be = L.ctx->be;
    cJSON *cs = cJSON_Parse(slurp(kDir + "/pca_fit/cases.json").c_str());
    ASSERT_NE(cs, nullptr);
    int n_cases = 0;
    for (const cJSON *c = cJSON_GetObjectItem(cs, "cases")->child; c; c = c->next, n_cases++) {
        const std::string name = cJSON_GetObjectItem(c, "name")->valuestring;
        SCOPED_TRACE(name);
        const int n = cJSON_GetObjectItem(c, "n")->valueint, D = cJSON_GetObjectItem(c, "D")->valueint;
        const int k = cJSON_GetObjectItem(c, "n_components")->valueint, nd = cJSON_GetObjectItem(c, "n_defined")->valueint;
        const int k_swap = cJSON_GetObjectItem(c, "k_swap")->valueint;
        Archive ar(kDir + "/pca_fit/" + name + ".safetensors");
        const auto X = ar.get<float>("X"), C = ar.get<float>("components");
        tr_weights w;
        ASSERT_EQ(tr_weights_init(L.ctx, &w, CVENE_IV_PCA_ROTATED_SPACE, D, k_swap, 1), CVENE_OK) << L.error();
        // sklearn's default n_components (0 here) is min(n, D)
        ASSERT_EQ(tr_pca_fit(L.ctx, &w, X.data(), n, k == std::min(n, D) ? 0 : k), CVENE_OK) << L.error();
        std::string where;
        EXPECT_LE(rel(tr_weights_find(&w, "pca_mean")->value, ar.get<float>("mean"), &where), 1e-6) << "mean " << where;
        EXPECT_LE(rel(tr_weights_find(&w, "pca_std")->value, ar.get<float>("std"), &where), 1e-6) << "std " << where;
        const double e_mean = rel(tr_weights_find(&w, "pca_mean")->value, ar.get<float>("mean"));
        const double e_std = rel(tr_weights_find(&w, "pca_std")->value, ar.get<float>("std"));
        double e_comp = 0;
        const tr_tensor *got = tr_weights_find(&w, "pca_components");
        ASSERT_EQ(got->shape[0], k);
        ASSERT_EQ(got->shape[1], D);
        for (int r = 0; r < k; r++) {
            const float *v = got->value + (size_t)r * D, *want = C.data() + (size_t)r * D;
            int at = 0;
            double same = 0, flip = 0, dot = 0;
            for (int j = 0; j < D; j++) {
                at = std::fabs(v[j]) > std::fabs(v[at]) ? j : at;
                same = std::max(same, (double)std::fabs(v[j] - want[j]));
                flip = std::max(flip, (double)std::fabs(v[j] + want[j]));
            }
            EXPECT_GT(v[at], 0.0f) << "component " << r << ": its largest |entry| is negative";
            if (r < nd) {
                EXPECT_LE(std::min(same, flip), 1e-5) << "component " << r;
                e_comp = std::max(e_comp, std::min(same, flip));
            }
            for (int q = 0; q <= r; q++) {
                dot = 0;
                for (int j = 0; j < D; j++) dot += (double)v[j] * got->value[(size_t)q * D + j];
                EXPECT_NEAR(dot, q == r ? 1.0 : 0.0, 1e-6) << "components " << r << ", " << q;
            }
        }
        std::printf("[ pca fit ] %-13s mean %.2g std %.2g, worst of %d defined components %.2g (up to sign)\n",
                    name.c_str(), e_mean, e_std, nd, e_comp);
        if (nd == k) { // every component defined: the forward is the reference's, whatever the signs
            const auto base = ar.get<float>("base"), src = ar.get<float>("source"), want = ar.get<float>("output");
            const int rows = (int)(base.size() / (size_t)D);
            tr_state *st = nullptr;
            ASSERT_EQ(tr_state_new(L.ctx, &w, rows, &st), CVENE_OK) << L.error();
            ASSERT_EQ(tr_prepare(st), CVENE_OK) << L.error();
            float *db = nullptr, *ds = nullptr;
            ASSERT_EQ(be->ops->alloc(be, (void **)&db, base.size() * 4), CVENE_OK);
            ASSERT_EQ(be->ops->alloc(be, (void **)&ds, base.size() * 4), CVENE_OK);
            ASSERT_EQ(be->ops->to_device(be, db, base.data(), base.size() * 4), CVENE_OK);
            ASSERT_EQ(be->ops->to_device(be, ds, src.data(), src.size() * 4), CVENE_OK);
            ASSERT_EQ(tr_forward(st, db, db, ds, rows), CVENE_OK) << L.error();
            std::vector<float> out(base.size());
            ASSERT_EQ(be->ops->to_host(be, out.data(), db, out.size() * 4), CVENE_OK);
            const double e_out = rel(out.data(), want, &where);
            EXPECT_LE(e_out, 1e-5) << "output " << where;
            std::printf("[ pca fit ] %-13s forward with the fitted basis %.2g\n", name.c_str(), e_out);
            be->ops->free(be, db), be->ops->free(be, ds);
            tr_state_free(st);
        }
        tr_weights_free(&w);
    }
    cJSON_Delete(cs);
    EXPECT_EQ(n_cases, 4);
    // what cannot be fitted, and what has no basis
    tr_weights w;
    ASSERT_EQ(tr_weights_init(L.ctx, &w, CVENE_IV_PCA_ROTATED_SPACE, 4, 2, 1), CVENE_OK);
    const float x[12] = {1, 2, 3, 4, 2, 3, 5, 7, 0, 1, 1, 2};
    expect_msg(L.ctx, tr_pca_fit(L.ctx, &w, x, 1, 0), CVENE_ERR_INVALID_ARG, {"1 rows", "at least 2"});
    expect_msg(L.ctx, tr_pca_fit(L.ctx, &w, x, 3, 4), CVENE_ERR_INVALID_ARG, {"4 components", "at most 3"});
    tr_weights_free(&w);
    ASSERT_EQ(tr_weights_init(L.ctx, &w, CVENE_IV_LOW_RANK_ROTATED_SPACE, 4, 2, 1), CVENE_OK);
    expect_msg(L.ctx, tr_pca_fit(L.ctx, &w, x, 3, 0), CVENE_ERR_INVALID_ARG, {"LowRankRotatedSpaceIntervention"});
    tr_weights_free(&w);
}

// The trainer takes every new type (GPT-2 small, block_output of layer 0, 3 steps): the losses are
// finite, what torch trains moves (PCA's frozen basis does not), and the state dict saved by
// cvene_trainer_save loads back into a fresh trainer bit for bit.
TEST(UnitsInTrainer, NewTypesTrainSaveAndLoad) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const struct {
        const char *type;
        int rank, interchange;
    } types[] = {{"PCARotatedSpaceIntervention", 0, 8}, {"AutoencoderIntervention", 16, 3},
                 {"JumpReLUAutoencoderIntervention", 16, 0}, {"NoreftIntervention", 4, 0},
                 {"ConsreftIntervention", 4, 0}, {"LobireftIntervention", 4, 0}, {"DireftIntervention", 4, 0},
                 {"NodireftIntervention", 4, 0}};
    for (const auto &ty : types) {
        SCOPED_TRACE(ty.type);
        Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        char cfg_text[512];
        std::snprintf(cfg_text, sizeof cfg_text,
                      "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", \"unit\": \"pos\", "
                      "\"max_number_of_units\": 1, \"low_rank_dimension\": %d%s%d}], \"intervention_types\": \"%s\"}",
                      ty.rank, ty.interchange ? ", \"interchange_dim\": " : ", \"group_key\": ",
                      ty.interchange ? ty.interchange : 0, ty.type);
        if (!ty.rank) { // PCA: no low_rank_dimension
            std::snprintf(cfg_text, sizeof cfg_text,
                          "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", \"unit\": \"pos\", "
                          "\"max_number_of_units\": 1, \"interchange_dim\": %d}], \"intervention_types\": \"%s\"}",
                          ty.interchange, ty.type);
        }
        cvene_config *cfg = nullptr;
        ASSERT_EQ(cvene_config_parse(L.ctx, cfg_text, &cfg), CVENE_OK) << L.error() << "\n" << cfg_text;
        cvene_dataset *ds = nullptr;
        ASSERT_EQ(cvene_dataset_new(L.ctx, &ds), CVENE_OK);
        for (int e = 0; e < 4; e++) {
            int32_t b[] = {1 + e, 2, 3, 4}, src[] = {5, 6 + e, 7, 8};
            int bp = 1 + e % 2, sp = 2;
            cvene_example x = {b, 4, src, 4, &bp, &sp, 1, 10 + e, -1};
            ASSERT_EQ(cvene_dataset_add(ds, &x), CVENE_OK) << L.error();
        }
        cvene_train_params p = cvene_train_default_params();
        p.batch_size = 2, p.max_steps = 3, p.shuffle = 0, p.lr = 1e-2;
        cvene_trainer *t = nullptr, *t2 = nullptr;
        ASSERT_EQ(cvene_trainer_new(L.model, cfg, &p, &t), CVENE_OK) << L.error();
        tr_weights *w = train_weights(t, 0);
        std::vector<std::vector<float>> before;
        for (int k = 0; k < w->n; k++) before.emplace_back(w->t[k].value, w->t[k].value + w->t[k].numel);
        ASSERT_EQ(cvene_trainer_fit(t, ds), CVENE_OK) << L.error();
        int64_t n = 0;
        const double *losses = cvene_trainer_losses(t, &n);
        ASSERT_EQ(n, 3);
        for (int64_t q = 0; q < n; q++) EXPECT_TRUE(std::isfinite(losses[q])) << "loss of step " << q;
        for (int k = 0; k < w->n; k++) {
            const tr_tensor *x = &w->t[k];
            const bool moved = !std::equal(before[k].begin(), before[k].end(), x->value);
            if (!x->trainable) {
                EXPECT_FALSE(moved) << x->name << " is not trained but moved";
            }
        }
        bool any = false;
        for (int k = 0; k < w->n; k++) any |= w->t[k].trainable && !std::equal(before[k].begin(), before[k].end(), w->t[k].value);
        EXPECT_EQ(any, strcmp(ty.type, "PCARotatedSpaceIntervention") != 0) << "trainable parameters moved";
        TmpDir out(std::string("training_newtypes_") + ty.type);
        ASSERT_EQ(cvene_trainer_save(t, out.path.c_str()), CVENE_OK) << L.error();
        std::string file;
        for (const auto &f : std::filesystem::directory_iterator(out.path))
            if (f.path().extension() == ".safetensors") file = f.path().string();
        ASSERT_FALSE(file.empty());
        p.seed = 99; // other initial values: the load must replace them all
        ASSERT_EQ(cvene_trainer_new(L.model, cfg, &p, &t2), CVENE_OK) << L.error();
        ASSERT_EQ(cvene_trainer_load(t2, 0, file.c_str()), CVENE_OK) << L.error();
        tr_weights *w2 = train_weights(t2, 0);
        ASSERT_EQ(w2->n, w->n);
        for (int k = 0; k < w->n; k++) {
            const tr_tensor *y = tr_weights_find(w2, w->t[k].name);
            ASSERT_NE(y, nullptr) << w->t[k].name;
            ASSERT_EQ(y->numel, w->t[k].numel);
            EXPECT_EQ(memcmp(y->value, w->t[k].value, 4 * (size_t)y->numel), 0) << y->name << " differs after a load";
        }
        double acc1 = 0, loss1 = 0, acc2 = 0, loss2 = 0;
        ASSERT_EQ(cvene_trainer_evaluate(t, ds, &acc1, &loss1), CVENE_OK) << L.error();
        ASSERT_EQ(cvene_trainer_evaluate(t2, ds, &acc2, &loss2), CVENE_OK) << L.error();
        EXPECT_EQ(loss1, loss2);
        cvene_trainer_free(t2);
        cvene_trainer_free(t);
        cvene_dataset_free(ds);
        cvene_config_free(cfg);
    }
}

} // namespace

namespace {

// ---------------------------------------------------------------------------------------------
// ModelCases and Trajectories: the trainer on GPT-2 small with a pyvene config

struct Trainer {
    cvene_config *cfg = nullptr;
    cvene_dataset *data = nullptr;
    cvene_trainer *t = nullptr;
    ~Trainer() {
        cvene_trainer_free(t);
        cvene_dataset_free(data);
        cvene_config_free(cfg);
    }
};

// copy the reference's values of every tensor of w present in ar under prefix + name (LoReFT's
// module tensors: prefix + "module." + name)
void set_weights(tr_weights *w, const Archive &ar, const std::string &prefix) {
    for (int k = 0; k < w->n; k++) {
        tr_tensor *x = &w->t[k];
        std::string key = prefix + x->name;
        if (w->type == CVENE_IV_LOREFT || !ar.find(key)) key = prefix + "module." + x->name;
        ASSERT_TRUE(ar.find(key)) << "no reference tensor " << key;
        auto v = ar.get<float>(key);
        ASSERT_EQ((int64_t)v.size(), x->numel) << key;
        std::copy(v.begin(), v.end(), x->value);
    }
}

std::vector<std::string> cases_of(const char *kind) {
    std::vector<std::string> out;
    cJSON *m = manifest();
    for (const cJSON *c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next)
        if (!strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, kind)) out.push_back(cJSON_GetObjectItem(c, "name")->valuestring);
    cJSON_Delete(m);
    return out;
}

class ModelCases : public ::testing::TestWithParam<std::string> {};

// The trainer for a model/ case: pyvene's config, its inputs as a dataset (one example per row,
// the loss at each example's intervened position), batch B = every example.
void model_case(const std::string &dir, Loaded &L, Trainer &T, int *B) {
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    ASSERT_EQ(cvene_config_parse(L.ctx, slurp(dir + "/config.json").c_str(), &T.cfg), CVENE_OK) << L.error();
    cJSON *in = cJSON_Parse(slurp(dir + "/inputs.json").c_str());
    ASSERT_NE(in, nullptr);
    const cJSON *base = cJSON_GetObjectItem(cJSON_GetObjectItem(in, "base"), "input_ids");
    const cJSON *srcs = cJSON_GetObjectItem(in, "sources");
    const cJSON *src = cJSON_IsArray(srcs) && srcs->child ? cJSON_GetObjectItem(srcs->child, "input_ids") : nullptr;
    const cJSON *ul = cJSON_GetObjectItem(cJSON_GetObjectItem(in, "unit_locations"), "sources->base");
    const cJSON *labels = cJSON_GetObjectItem(in, "labels");
    ASSERT_EQ(cvene_dataset_new(L.ctx, &T.data), CVENE_OK);
    *B = cJSON_GetArraySize(base);
    for (int b = 0; b < *B; b++) {
        std::vector<int32_t> bi, si;
        for (const cJSON *e = cJSON_GetArrayItem(base, b)->child; e; e = e->next) bi.push_back(e->valueint);
        if (src)
            for (const cJSON *e = cJSON_GetArrayItem(src, b)->child; e; e = e->next) si.push_back(e->valueint);
        const cJSON *sb = ul->child, *bb = ul->child->next; // [SRC, BASE], intervention 0
        int bp = cJSON_GetArrayItem(cJSON_GetArrayItem(bb->child, b), 0)->valueint;
        int sp = cJSON_IsArray(sb) ? cJSON_GetArrayItem(cJSON_GetArrayItem(sb->child, b), 0)->valueint : bp;
        cvene_example e = {bi.data(), (int)bi.size(), src ? si.data() : nullptr, src ? (int)si.size() : 0,
                           &bp, src ? &sp : nullptr, 1, cJSON_GetArrayItem(labels, b)->valueint, bp};
        ASSERT_EQ(cvene_dataset_add(T.data, &e), CVENE_OK) << L.error();
    }
    cJSON_Delete(in);
    cvene_train_params p = cvene_train_default_params();
    p.batch_size = *B;
    ASSERT_EQ(cvene_trainer_new(L.model, T.cfg, &p, &T.t), CVENE_OK) << L.error();
}

// pyvene's file of the case's intervention, converted tensor for tensor from its .bin
std::string pyvene_weights(const std::string &dir) {
    cJSON *m = manifest();
    std::string key;
    for (const cJSON *c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next)
        if (dir.size() > 6 && dir.substr(dir.rfind('/') + 1) == cJSON_GetObjectItem(c, "name")->valuestring)
            key = cJSON_GetObjectItem(c, "key")->valuestring;
    cJSON_Delete(m);
    return dir + "/intkey_" + key + ".safetensors";
}

double batch_loss(Trainer &T, int B) {
    std::vector<int> idx(B);
    for (int b = 0; b < B; b++) idx[b] = b;
    double loss = NAN;
    EXPECT_EQ(train_gradients(T.t, T.data, idx.data(), B, &loss), CVENE_OK);
    return loss;
}

// pyvene's IntervenableModel on GPT-2 small with one trainable intervention at block_output of
// its last layer: the mean CE at each example's intervened position, and every parameter's
// gradient, within 1e-5 of torch (relative to each tensor's largest value; all f32).
TEST_P(ModelCases, LossAndGradientsMatchPyvene) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string dir = kDir + "/model/" + GetParam();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    Trainer T;
    int B = 0;
    model_case(dir, L, T, &B);
    Archive ar(dir + "/expected.safetensors");
    tr_weights *w = train_weights(T.t, 0);
    set_weights(w, ar, "");
    const double loss = batch_loss(T, B);
    EXPECT_NEAR(loss, ar.get<float>("loss")[0], 1e-5 * (1 + std::fabs(loss)));
    int n = 0;
    for (int k = 0; k < w->n; k++) {
        const tr_tensor *x = &w->t[k];
        if (!x->trainable) continue;
        std::string key = "grad." + std::string(x->name);
        if (!ar.find(key)) key = "grad.module." + std::string(x->name);
        if (!ar.find(key)) continue; /* a parameter torch gives no gradient here */
        std::string where;
        EXPECT_LE(rel(x->grad, ar.get<float>(key), &where), 1e-5) << key << " " << where;
        n++;
    }
    EXPECT_GT(n, 0);
}

// The file pyvene saved (IntervenableModel.save; pyreft's state dict for LoReFT, whose load puts
// rotate_layer into the base) loads into the trainer and gives pyvene's loss (1e-5, as above).
TEST_P(ModelCases, LoadsWhatPyveneSaved) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string dir = kDir + "/model/" + GetParam();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    Trainer T;
    int B = 0;
    model_case(dir, L, T, &B);
    ASSERT_EQ(cvene_trainer_load(T.t, 0, pyvene_weights(dir).c_str()), CVENE_OK) << L.error();
    Archive ar(dir + "/expected.safetensors");
    const double loss = batch_loss(T, B);
    EXPECT_NEAR(loss, ar.get<float>("loss")[0], 1e-5 * (1 + std::fabs(loss)));
}

// cvene_trainer_save writes what pyvene's save wrote for the same parameters: config.json equal
// as JSON (but transformers_version, which only transformers knows), and the state dict with the
// same names, dtypes, shapes and values (bit for bit; LoReFT's rotate_layer is materialised:
// ours in double then rounded, torch's Householder product in f32, so within 1e-6).
TEST_P(ModelCases, SavesWhatPyveneSaves) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string dir = kDir + "/model/" + GetParam();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    Trainer T;
    int B = 0;
    model_case(dir, L, T, &B);
    Archive ex(dir + "/expected.safetensors");
    set_weights(train_weights(T.t, 0), ex, "");
    TmpDir out("training_save_" + GetParam());
    ASSERT_EQ(cvene_trainer_save(T.t, out.path.c_str()), CVENE_OK) << L.error();
    cJSON *want = cJSON_Parse(slurp(dir + "/config.json").c_str()), *got = cJSON_Parse(slurp(out.path + "/config.json").c_str());
    ASSERT_TRUE(want && got);
    cJSON_DeleteItemFromObject(want, "transformers_version");
    char *gs = cJSON_PrintUnformatted(got), *ws = cJSON_PrintUnformatted(want);
    EXPECT_TRUE(cJSON_Compare(got, want, 1)) << "ours:   " << gs << "\npyvene: " << ws;
    free(gs), free(ws), cJSON_Delete(want), cJSON_Delete(got);
    const std::string file = pyvene_weights(dir);
    Archive a(file), b(out.path + file.substr(file.rfind('/')));
    ASSERT_EQ(b.a.n_tensors, a.a.n_tensors);
    for (int i = 0; i < a.a.n_tensors; i++) {
        const st_tensor *x = &a.a.tensors[i], *y = b.find(x->name);
        ASSERT_NE(y, nullptr) << "ours lacks " << x->name;
        EXPECT_EQ(y->dtype, x->dtype) << x->name;
        ASSERT_EQ(y->ndim, x->ndim) << x->name;
        for (int d = 0; d < x->ndim; d++) EXPECT_EQ(y->shape[d], x->shape[d]) << x->name;
        ASSERT_EQ(y->nbytes, x->nbytes) << x->name;
        if (!strcmp(x->name, "rotate_layer")) {
            const float *p = (const float *)x->data, *q = (const float *)y->data;
            double err = 0;
            for (size_t k = 0; k < x->nbytes / 4; k++) err = std::max(err, (double)std::fabs(p[k] - q[k]));
            EXPECT_LE(err, 1e-6) << x->name;
        } else {
            EXPECT_EQ(memcmp(x->data, y->data, x->nbytes), 0) << x->name << " differs";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Cases, ModelCases, ::testing::ValuesIn(cases_of("model")),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

// ---------------------------------------------------------------------------------------------


class Trajectories : public ::testing::TestWithParam<std::string> {};

// What a square rotation computes: out = x + (s - x) W diag(m) W^T (docs/training_semantics.md
// §3.1), so E = W diag(m) W^T is the whole function. The rotations inside m's flat regions (for
// RotatedSpace the dims past interchange_dim, whose gradient is exactly 0 in real arithmetic) do
// not change E; torch's gradient there is f32 rounding noise (|g| ~ 1e-8 of 7e-2), which Adam,
// dividing by sqrt(v), turns into full lr-sized steps of arbitrary sign. Those entries of
// `original` are noise in pyvene too, so the rotation is compared through E.
std::vector<double> effective_map(const float *X, const std::vector<float> &base, const std::vector<double> &m) {
    const int D = (int)m.size();
    std::vector<double> Xd(X, X + (size_t)D * D), Bd(base.begin(), base.end()), W((size_t)D * D), E((size_t)D * D);
    orth_param *o = orth_new(D, D);
    EXPECT_EQ(orth_forward(o, Xd.data(), Bd.data(), W.data()), 0);
    orth_free(o);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double e = 0;
            for (int q = 0; q < D; q++) e += W[(size_t)i * D + q] * m[q] * W[(size_t)j * D + q];
            E[(size_t)i * D + j] = e;
        }
    return E;
}

// The mask of a square rotation: RotatedSpace's first interchange_dim dims; Boundless's
// sigmoid(i / t) sigmoid((clamp(b, 1e-3, 1) D - i) / t) (pyvene's BoundlessRotatedSpaceIntervention).
std::vector<double> rotation_mask(int D, int interchange_dim, const float *boundary, float temperature) {
    std::vector<double> m(D);
    auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    for (int i = 0; i < D; i++) {
        if (!boundary) {
            m[i] = i < interchange_dim ? 1.0 : 0.0;
            continue;
        }
        const float b = std::min(std::max(*boundary, 1e-3f), 1.0f), y = b * (float)D;
        m[i] = sig(i / temperature) * sig((y - i) / temperature);
    }
    return m;
}

double max_abs_diff(const std::vector<double> &a, const std::vector<double> &b) {
    double e = 0;
    for (size_t i = 0; i < a.size(); i++) e = std::max(e, std::fabs(a[i] - b[i]));
    return e;
}

struct StepStop {
    int64_t stop_at;
};
int stop_cb(void *user, int64_t step, int64_t, double, double) {
    return step >= static_cast<StepStop *>(user)->stop_at;
}

// 20 steps of pyvene's training (Adam or AdamW, linear warm-up 2 of 20 steps, batch 8 in order,
// mean CE at the last position; Boundless: its boundaries in a 1e-2 group, temperature
// linspace(50, 0.1) set after each step, boundary loss 1.0) from pyvene's initial parameters:
//  - the first 3 steps' gradients within 1e-4 of torch's (relative to the largest; the forward
//    and backward alone agree to ~1e-6, ModelCases);
//  - every step's loss within 1e-4 relative;
//  - the parameters after steps 0..2 and after step 20 within 1e-4 of their movement plus 1e-6 of
//    their size; a square rotation through E (above) within 1e-2 of E's movement: the null-space
//    noise enters E at second order (rotations in different planes do not commute), and
//    tools/trajectory_sensitivity.py measures torch's own E moving by up to 1e-3 of its movement
//    when its gradients are perturbed by 1e-6 relative (tests/fixtures/training/README.md).
TEST_P(Trajectories, TwentyStepsFollowPyvene) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string name = GetParam(), dir = kDir + "/train/" + name;
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Trainer T;
    ASSERT_EQ(cvene_config_parse(L.ctx, slurp(dir + "/config.json").c_str(), &T.cfg), CVENE_OK) << L.error();
    cJSON *ds = cJSON_Parse(slurp(kDir + "/train/dataset.json").c_str());
    ASSERT_EQ(cvene_dataset_new(L.ctx, &T.data), CVENE_OK);
    for (const cJSON *e = cJSON_GetObjectItem(ds, "examples")->child; e; e = e->next) {
        std::vector<int32_t> bi, si;
        for (const cJSON *q = cJSON_GetObjectItem(e, "base_ids")->child; q; q = q->next) bi.push_back(q->valueint);
        for (const cJSON *q = cJSON_GetObjectItem(e, "source_ids")->child; q; q = q->next) si.push_back(q->valueint);
        int bp = cJSON_GetObjectItem(e, "base_position")->valueint, sp = cJSON_GetObjectItem(e, "source_position")->valueint;
        cvene_example x = {bi.data(), (int)bi.size(), si.data(), (int)si.size(), &bp, &sp, 1,
                           cJSON_GetObjectItem(e, "label")->valueint, -1};
        ASSERT_EQ(cvene_dataset_add(T.data, &x), CVENE_OK) << L.error();
    }
    cJSON_Delete(ds);
    cJSON *m = manifest();
    const cJSON *c = nullptr;
    for (c = cJSON_GetObjectItem(m, "cases")->child; c; c = c->next)
        if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name.c_str())) break;
    ASSERT_NE(c, nullptr);
    const cJSON *opt = cJSON_GetObjectItem(c, "optimizer"), *idim = cJSON_GetObjectItem(c, "interchange_dim");
    const std::string type = cJSON_GetObjectItem(c, "type")->valuestring;
    const int interchange_dim = cJSON_IsNumber(idim) ? idim->valueint : 0;
    cvene_train_params p = cvene_train_default_params();
    p.batch_size = 8, p.max_steps = 20, p.shuffle = 0;
    p.lr = cJSON_GetObjectItem(opt, "lr")->valuedouble;
    p.weight_decay = cJSON_GetObjectItem(opt, "weight_decay")->valuedouble;
    p.optimizer = !strcmp(cJSON_GetObjectItem(opt, "class")->valuestring, "AdamW") ? CVENE_OPTIM_ADAMW : CVENE_OPTIM_ADAM;
    const bool boundless = type == "BoundlessRotatedSpaceIntervention";
    const bool square = boundless || type == "RotatedSpaceIntervention";
    if (boundless) p.temperature_start = 50, p.temperature_end = 0.1, p.boundary_loss = 1.0, p.boundary_lr = 1e-2;
    StepStop stop{1};
    p.progress = stop_cb, p.progress_user = &stop;
    cJSON_Delete(m);
    ASSERT_EQ(cvene_trainer_new(L.model, T.cfg, &p, &T.t), CVENE_OK) << L.error();
    Archive ar(dir + "/trajectory.safetensors");
    tr_weights *w = train_weights(T.t, 0);
    set_weights(w, ar, "init.");
    const std::string orig = "rotate_layer.parametrizations.weight.original";
    const auto rot_base = square ? ar.get<float>("init.rotate_layer.parametrizations.weight.0.base") : std::vector<float>();
    auto temps = boundless ? ar.get<float>("temperature_schedule") : std::vector<float>();
    // the parameters of `prefix` (init., step<s>.param., final.) against ours
    auto compare = [&](const std::string &prefix, float ref_temperature) {
        for (int k = 0; k < w->n; k++) {
            const tr_tensor *x = &w->t[k];
            /* LoReFT's files keep the module's tensors under module. (its state_dict is another) */
            const std::string mod = ar.find("init.module." + std::string(x->name)) ? "module." : "";
            std::string key = prefix + x->name;
            if (!ar.find(key)) key = prefix + mod + x->name;
            if (!ar.find(key) || (!x->trainable && prefix != "final.")) continue;
            const auto want = ar.get<float>(key), ini = ar.get<float>("init." + mod + x->name);
            if (square && x->name == orig) {
                const float *wb = boundless ? tr_weights_find(w, "intervention_boundaries")->value : nullptr;
                const float tw = boundless ? tr_weights_find(w, "temperature")->value[0] : 1.0f;
                std::vector<float> rb = boundless ? ar.get<float>(prefix + "intervention_boundaries") : std::vector<float>(1);
                const auto e_got = effective_map(x->value, rot_base, rotation_mask(w->D, interchange_dim, wb, tw));
                const auto e_want = effective_map(want.data(), rot_base,
                                                  rotation_mask(w->D, interchange_dim, boundless ? rb.data() : nullptr, ref_temperature));
                const auto e_ini = effective_map(ini.data(), rot_base,
                                                 rotation_mask(w->D, interchange_dim, boundless ? rb.data() : nullptr, ref_temperature));
                const double err = max_abs_diff(e_got, e_want), move = max_abs_diff(e_want, e_ini);
                EXPECT_LE(err, 1e-2 * move) << key << " through W diag(m) W^T: error " << err << ", movement " << move;
                std::printf("[ trajectory ] %-16s %-48s W m W^T error %.3g of movement %.3g\n", name.c_str(), key.c_str(), err, move);
                continue;
            }
            double move = 0, big = 0, err = 0;
            for (size_t i = 0; i < want.size(); i++) {
                move = std::max(move, (double)std::fabs(want[i] - ini[i]));
                big = std::max(big, (double)std::fabs(want[i]));
                err = std::max(err, (double)std::fabs(x->value[i] - want[i]));
            }
            EXPECT_LE(err, 1e-4 * move + 1e-6 * big) << key << ": error " << err << ", movement " << move;
            if (prefix == "final.")
                std::printf("[ trajectory ] %-16s %-48s error %.3g of movement %.3g\n", name.c_str(), key.c_str(), err, move);
        }
    };
    std::string where;
    for (int s = 0; s < 3; s++) { // gradients before, parameters after each of the first steps
        SCOPED_TRACE("step " + std::to_string(s));
        std::vector<int> idx(8);
        for (int b = 0; b < 8; b++) idx[b] = 8 * (s % 4) + b;
        if (boundless) tr_set_temperature(w, temps[s > 0 ? s - 1 : 0]);
        double loss = 0;
        ASSERT_EQ(train_gradients(T.t, T.data, idx.data(), 8, &loss), CVENE_OK) << L.error();
        EXPECT_TRUE(train_live_rows(T.t)) << "layer 0's block_output on a 2-layer GPT-2: the live-rows pass";
        for (int k = 0; k < w->n; k++) {
            const tr_tensor *x = &w->t[k];
            const std::string key = "step" + std::to_string(s) + ".grad." + x->name;
            /* a square rotation's gradient depends on the basis of its null space, which the
             * noise above turns from step 1 on: compared where the parameters are still torch's */
            if (x->trainable && ar.find(key) && !(square && x->name == orig && s >= 2)) {
                EXPECT_LE(rel(x->grad, ar.get<float>(key), &where), 1e-4) << key << " " << where;
            }
        }
        stop.stop_at = s + 1;
        ASSERT_EQ(cvene_trainer_fit(T.t, T.data), CVENE_OK) << L.error();
        compare("step" + std::to_string(s) + ".param.", boundless ? temps[s] : 1.0f);
    }
    stop.stop_at = 20;
    ASSERT_EQ(cvene_trainer_fit(T.t, T.data), CVENE_OK) << L.error();
    int64_t n = 0;
    const double *losses = cvene_trainer_losses(T.t, &n);
    auto want = ar.get<float>("loss");
    ASSERT_EQ(n, (int64_t)want.size());
    for (int64_t s = 0; s < n; s++) EXPECT_NEAR(losses[s], want[s], 1e-4 * std::fabs(want[s])) << "loss of step " << s;
    compare("final.", boundless ? temps[19] : 1.0f);
}

INSTANTIATE_TEST_SUITE_P(Cases, Trajectories, ::testing::ValuesIn(cases_of("train")),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

// Live rows (model_train_pass.live_start) against every row, the path ModelCases checks against
// pyvene: on the trajectories' dataset (intervened positions 0 to 5 of 6), a LowRank and a LoReFT
// intervention at layer 0's block_output: the same loss (1e-6 relative) and gradients (1e-5 of the
// largest), batch after batch; only the rows' arithmetic order differs (f32 GEMMs over fewer rows).
TEST(LiveRows, SameAsEveryRow) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_dataset *data = nullptr;
    ASSERT_EQ(cvene_dataset_new(L.ctx, &data), CVENE_OK);
    cJSON *ds = cJSON_Parse(slurp(kDir + "/train/dataset.json").c_str());
    int n = 0, starts = 0;
    double all_rows = 0, live_rows = 0; /* the label is each example's last token, after its unit */
    for (const cJSON *e = cJSON_GetObjectItem(ds, "examples")->child; e; e = e->next, n++) {
        std::vector<int32_t> bi, si;
        for (const cJSON *q = cJSON_GetObjectItem(e, "base_ids")->child; q; q = q->next) bi.push_back(q->valueint);
        for (const cJSON *q = cJSON_GetObjectItem(e, "source_ids")->child; q; q = q->next) si.push_back(q->valueint);
        int bp = cJSON_GetObjectItem(e, "base_position")->valueint, sp = cJSON_GetObjectItem(e, "source_position")->valueint;
        starts += bp > 0;
        all_rows += (double)bi.size(), live_rows += (double)bi.size() - bp;
        cvene_example x = {bi.data(), (int)bi.size(), si.data(), (int)si.size(), &bp, &sp, 1,
                           cJSON_GetObjectItem(e, "label")->valueint, -1};
        ASSERT_EQ(cvene_dataset_add(data, &x), CVENE_OK) << L.error();
    }
    cJSON_Delete(ds);
    ASSERT_GT(starts, n / 2) << "the dataset should intervene after position 0 mostly";
    for (const char *cfg : {"{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", \"unit\": \"pos\", "
                            "\"intervention_type\": \"LowRankRotatedSpaceIntervention\", \"low_rank_dimension\": 3}]}",
                            "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", \"unit\": \"pos\", "
                            "\"intervention_type\": \"LoreftIntervention\", \"low_rank_dimension\": 2}]}"}) {
        SCOPED_TRACE(cfg);
        cvene_config *c = nullptr;
        ASSERT_EQ(cvene_config_parse(L.ctx, cfg, &c), CVENE_OK) << L.error();
        cvene_train_params p = cvene_train_default_params();
        p.batch_size = 8;
        cvene_trainer *t = nullptr;
        ASSERT_EQ(cvene_trainer_new(L.model, c, &p, &t), CVENE_OK) << L.error();
        tr_weights *w = train_weights(t, 0);
        std::vector<std::vector<float>> live_grads;
        std::vector<double> live_loss;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) train_full_rows(t);
            for (int b0 = 0; b0 + 8 <= n; b0 += 8) {
                std::vector<int> idx(8);
                for (int b = 0; b < 8; b++) idx[b] = b0 + b;
                double loss = 0;
                ASSERT_EQ(train_gradients(t, data, idx.data(), 8, &loss), CVENE_OK) << L.error();
                EXPECT_EQ(train_live_rows(t), pass == 0);
                EXPECT_NEAR(cvene_trainer_rows_fraction(t), pass == 0 ? live_rows / all_rows : 1.0, 1e-12);
                for (int k = 0; k < w->n; k++) {
                    const tr_tensor *x = &w->t[k];
                    if (!x->trainable) continue;
                    if (pass == 0) {
                        live_grads.emplace_back(x->grad, x->grad + x->numel);
                        continue;
                    }
                    std::string where;
                    EXPECT_LE(rel(x->grad, live_grads.front(), &where), 1e-5) << x->name << " batch " << b0 / 8 << " " << where;
                    live_grads.erase(live_grads.begin());
                }
                if (pass == 0) live_loss.push_back(loss);
                else {
                    EXPECT_NEAR(loss, live_loss.front(), 1e-6 * std::fabs(loss)) << "batch " << b0 / 8;
                    live_loss.erase(live_loss.begin());
                }
            }
        }
        cvene_trainer_free(t);
        cvene_config_free(c);
    }
    cvene_dataset_free(data);
}

} // namespace

namespace {

// ---------------------------------------------------------------------------------------------
// Bad input: a clear message naming the field and value, a non-zero status, nothing changed

std::string one_config(const char *type, int layer, int rank) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "{\"representations\": [{\"layer\": %d, \"component\": \"block_output\", \"unit\": \"pos\", "
                  "\"max_number_of_units\": 1, \"low_rank_dimension\": %d}], \"intervention_types\": \"%s\"}",
                  layer, rank, type);
    return buf;
}

struct Small {
    Loaded L{std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice};
    Trainer T;
    cvene_status make(const char *type, int layer, int rank, cvene_train_params p = cvene_train_default_params()) {
        EXPECT_EQ(cvene_config_parse(L.ctx, one_config(type, layer, rank).c_str(), &T.cfg), CVENE_OK) << L.error();
        return cvene_trainer_new(L.model, T.cfg, &p, &T.t);
    }
};

TEST(TrainerInput, RefusesWhatCannotTrain) {
    CVENE_SKIP_WITHOUT_DEVICE();
    {
        Small s;
        expect_msg(s.L.ctx, s.make("VanillaIntervention", 1, 0), CVENE_ERR_INVALID_ARG, {"VanillaIntervention", "trainable"});
        EXPECT_EQ(s.T.t, nullptr);
    }
    {
        Small s;
        expect_msg(s.L.ctx, s.make("LowRankRotatedSpaceIntervention", 1, 65), CVENE_ERR_INVALID_ARG,
                   {"low_rank_dimension 65", "[1, 64]"});
    }
    {
        Small s;
        expect_msg(s.L.ctx, s.make("LowRankRotatedSpaceIntervention", 7, 2), CVENE_ERR_INVALID_ARG, {"layer", "7"});
    }
    {
        Small s;
        cvene_train_params p = cvene_train_default_params();
        p.lr = -1;
        expect_msg(s.L.ctx, s.make("LowRankRotatedSpaceIntervention", 1, 2, p), CVENE_ERR_INVALID_ARG, {"lr -1"});
    }
}

TEST(TrainerInput, DatasetLinesNameTheirFault) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Loaded L(std::string(CVENE_FIXTURES) + "/gpt2/small/model", kTestDevice);
    TmpDir d("training_jsonl");
    const struct {
        const char *line, *part1, *part2; // part1: the line number
    } cases[] = {
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"base_pos\": 1, \"source_pos\": 0, \"label\": 7", "2", "JSON"},
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"base_pos\": 1, \"source_pos\": 0}", "2", "label"},
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"base_pos\": 9, \"source_pos\": 0, \"label\": 7}", "2", "base_pos"},
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"base_pos\": 1, \"source_pos\": 0, \"label\": 7, \"labl\": 3}", "2", "labl"},
        {"{\"base\": \"some text\", \"source\": [4, 5, 6], \"base_pos\": 1, \"source_pos\": 0, \"label\": 7}", "2", "tokenizer"},
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"label\": 7}", "2", "base_pos"},
        {"{\"base\": [1, 2, 3], \"source\": [4, 5, 6], \"base_pos\": 1, \"label\": 7}", "2", "source_pos\" is missing"},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.line);
        const std::string path = d.put("d.jsonl", std::string("{\"base\": [1, 2], \"source\": [3, 4], \"base_pos\": 0, "
                                                              "\"source_pos\": 0, \"label\": 5}\n") + c.line + "\n");
        cvene_dataset *ds = nullptr;
        const cvene_status st = cvene_dataset_load_jsonl(L.ctx, path.c_str(), nullptr, &ds);
        EXPECT_NE(st, CVENE_OK);
        EXPECT_EQ(ds, nullptr);
        const std::string msg = cvene_ctx_error(L.ctx);
        EXPECT_NE(msg.find(std::string("d.jsonl:") + c.part1), std::string::npos) << msg;
        EXPECT_NE(msg.find(c.part2), std::string::npos) << msg;
    }
}

// A saved file for another width, of the wrong shape or with a stranger's tensor is refused by
// name, and the trainer's parameters stay as they were.
TEST(TrainerInput, LoadRefusesForeignFilesAndChangesNothing) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Small s;
    ASSERT_EQ(s.make("LowRankRotatedSpaceIntervention", 1, 2), CVENE_OK) << s.L.error();
    tr_weights *w = train_weights(s.T.t, 0);
    std::vector<std::vector<float>> before;
    for (int k = 0; k < w->n; k++) before.emplace_back(w->t[k].value, w->t[k].value + w->t[k].numel);
    TmpDir d("training_load");
    const int64_t e32 = 32;
    std::vector<float> orig(64 * 2, 0.5f), wide(64 * 3, 0.5f);
    struct Case {
        std::vector<st_out_tensor> t;
        std::vector<std::string> parts;
    };
    const Case cases[] = {
        {{{"rotate_layer.parametrizations.weight.original", ST_F32, 2, {64, 2}, orig.data()},
          {"embed_dim", ST_I64, 0, {0}, &e32}},
         {"embed_dim is 32", "64"}},
        {{{"rotate_layer.parametrizations.weight.original", ST_F32, 2, {64, 3}, wide.data()}},
         {"rotate_layer.parametrizations.weight.original", "64 x 3", "64 x 2"}},
        {{{"rotate_layer.parametrizations.weight.original", ST_F32, 2, {64, 2}, orig.data()},
          {"learned_source.weight", ST_F32, 2, {64, 2}, orig.data()}},
         {"learned_source.weight", "LowRankRotatedSpaceIntervention"}},
    };
    for (const Case &c : cases) {
        const std::string path = d.path + "/w.safetensors";
        ASSERT_EQ(st_write(s.L.ctx, path.c_str(), c.t.data(), (int)c.t.size(), nullptr, 0), CVENE_OK);
        const cvene_status st = cvene_trainer_load(s.T.t, 0, path.c_str());
        EXPECT_NE(st, CVENE_OK);
        const std::string msg = cvene_ctx_error(s.L.ctx);
        for (const auto &p : c.parts) EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
        for (int k = 0; k < w->n; k++)
            EXPECT_TRUE(std::equal(before[k].begin(), before[k].end(), w->t[k].value)) << w->t[k].name << " changed";
    }
    expect_msg(s.L.ctx, cvene_trainer_load(s.T.t, 1, "x"), CVENE_ERR_INVALID_ARG, {"intervention 1"});
}

// Parameters that went to NaN stop training at once with CVENE_ERR_NUMERIC naming the step.
TEST(TrainerInput, NonFiniteLossStops) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Small s;
    ASSERT_EQ(s.make("SigmoidMaskIntervention", 0, 0), CVENE_OK) << s.L.error(); // seen by layer 1 at the label
    ASSERT_EQ(cvene_dataset_new(s.L.ctx, &s.T.data), CVENE_OK);
    int32_t b[] = {1, 2, 3}, src[] = {4, 5, 6};
    int pos = 1;
    cvene_example e = {b, 3, src, 3, &pos, &pos, 1, 7, -1};
    ASSERT_EQ(cvene_dataset_add(s.T.data, &e), CVENE_OK);
    tr_weights_find(train_weights(s.T.t, 0), "mask")->value[3] = NAN;
    expect_msg(s.L.ctx, cvene_trainer_fit(s.T.t, s.T.data), CVENE_ERR_NUMERIC, {"step 1", "not finite"});
    int64_t n = -1;
    cvene_trainer_losses(s.T.t, &n);
    EXPECT_EQ(n, 0);
}

// Datasets of different lengths through one trainer: evaluating on a held-out set with longer
// examples than the training set's (and more units per batch) gives what a fresh trainer with the
// same parameters gives (the batch buffers follow the dataset; they once kept the first one's size
// and overflowed). LowRank at layer 0: live rows, whose key/value buffers follow too.
TEST(TrainerInput, DatasetsOfOtherLengths) {
    CVENE_SKIP_WITHOUT_DEVICE();
    auto dataset = [](cvene_ctx *ctx, int T, int n, uint32_t seed) {
        cvene_dataset *d = nullptr;
        EXPECT_EQ(cvene_dataset_new(ctx, &d), CVENE_OK);
        for (int e = 0; e < n; e++) {
            std::vector<int32_t> b(T), src(T);
            for (int q = 0; q < T; q++) b[q] = (seed = seed * 1664525u + 1013904223u) >> 24, src[q] = (b[q] * 7 + 3) % 256;
            int pos = (e * 5) % T;
            cvene_example x = {b.data(), T, src.data(), T, &pos, &pos, 1, (int)(seed >> 20) % 256, -1};
            EXPECT_EQ(cvene_dataset_add(d, &x), CVENE_OK);
        }
        return d;
    };
    Small a, b;
    cvene_train_params p = cvene_train_default_params();
    p.batch_size = 4;
    ASSERT_EQ(a.make("LowRankRotatedSpaceIntervention", 0, 2, p), CVENE_OK) << a.L.error();
    ASSERT_EQ(b.make("LowRankRotatedSpaceIntervention", 0, 2, p), CVENE_OK) << b.L.error();
    cvene_dataset *short_a = dataset(a.L.ctx, 3, 6, 1), *long_a = dataset(a.L.ctx, 11, 9, 2), *long_b = dataset(b.L.ctx, 11, 9, 2);
    double acc = 0, loss_short = 0, loss_a = 0, loss_b = 0, acc_b = 0;
    ASSERT_EQ(cvene_trainer_evaluate(a.T.t, short_a, &acc, &loss_short), CVENE_OK) << a.L.error();
    ASSERT_EQ(cvene_trainer_evaluate(a.T.t, long_a, &acc, &loss_a), CVENE_OK) << a.L.error();
    ASSERT_EQ(cvene_trainer_evaluate(b.T.t, long_b, &acc_b, &loss_b), CVENE_OK) << b.L.error();
    EXPECT_NEAR(loss_a, loss_b, 1e-6 * std::fabs(loss_b));
    EXPECT_EQ(acc, acc_b);
    ASSERT_EQ(cvene_trainer_evaluate(a.T.t, short_a, &acc, &loss_a), CVENE_OK) << a.L.error(); // and back
    EXPECT_NEAR(loss_a, loss_short, 1e-6 * std::fabs(loss_short));
    cvene_dataset_free(short_a), cvene_dataset_free(long_a), cvene_dataset_free(long_b);
}

// The trainer's caches belong to a dataset's content, not its address: examples added after a
// cache was built are seen, and a dataset freed and replaced by another (which malloc may put at
// the same address, as Python's temporaries do) is not mistaken for it. The reference is a second
// trainer that only ever saw the final dataset.
TEST(TrainerInput, CachesFollowTheDatasetsContentNotItsAddress) {
    CVENE_SKIP_WITHOUT_DEVICE();
    auto add = [](cvene_dataset *d, int n, uint32_t seed) {
        for (int e = 0; e < n; e++) {
            std::vector<int32_t> b(5), src(5);
            for (int q = 0; q < 5; q++) b[q] = (seed = seed * 1664525u + 1013904223u) >> 24, src[q] = (b[q] * 7 + 3) % 256;
            int pos = e % 5;
            cvene_example x = {b.data(), 5, src.data(), 5, &pos, &pos, 1, (int)(seed >> 20) % 256, -1};
            EXPECT_EQ(cvene_dataset_add(d, &x), CVENE_OK);
        }
    };
    Small a, b;
    ASSERT_EQ(a.make("LowRankRotatedSpaceIntervention", 0, 2), CVENE_OK) << a.L.error();
    ASSERT_EQ(b.make("LowRankRotatedSpaceIntervention", 0, 2), CVENE_OK) << b.L.error();
    double acc = 0, loss = 0, acc_ref = 0, loss_ref = 0;
    cvene_dataset *d = nullptr, *ref = nullptr;
    ASSERT_EQ(cvene_dataset_new(a.L.ctx, &d), CVENE_OK);
    add(d, 4, 7);
    ASSERT_EQ(cvene_trainer_evaluate(a.T.t, d, &acc, &loss), CVENE_OK) << a.L.error();
    add(d, 6, 8); // 10 examples now
    ASSERT_EQ(cvene_trainer_evaluate(a.T.t, d, &acc, &loss), CVENE_OK) << a.L.error();
    ASSERT_EQ(cvene_dataset_new(b.L.ctx, &ref), CVENE_OK);
    add(ref, 4, 7), add(ref, 6, 8);
    ASSERT_EQ(cvene_trainer_evaluate(b.T.t, ref, &acc_ref, &loss_ref), CVENE_OK) << b.L.error();
    EXPECT_NEAR(loss, loss_ref, 1e-6 * std::fabs(loss_ref));
    EXPECT_EQ(acc, acc_ref);
    // freed, then another dataset of other examples (any address, the same one included)
    cvene_dataset_free(d);
    for (int round = 0; round < 4; round++) {
        cvene_dataset *e = nullptr, *e_ref = nullptr;
        ASSERT_EQ(cvene_dataset_new(a.L.ctx, &e), CVENE_OK);
        add(e, 3 + round, 100 + round);
        ASSERT_EQ(cvene_trainer_evaluate(a.T.t, e, &acc, &loss), CVENE_OK) << a.L.error();
        ASSERT_EQ(cvene_dataset_new(b.L.ctx, &e_ref), CVENE_OK);
        add(e_ref, 3 + round, 100 + round);
        ASSERT_EQ(cvene_trainer_evaluate(b.T.t, e_ref, &acc_ref, &loss_ref), CVENE_OK) << b.L.error();
        EXPECT_NEAR(loss, loss_ref, 1e-6 * std::fabs(loss_ref)) << "round " << round;
        cvene_dataset_free(e), cvene_dataset_free(e_ref);
    }
    cvene_dataset_free(ref);
}

} // namespace
