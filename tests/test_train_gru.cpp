// The GRU's training pass (models/gru_train.c) against torch autograd through pyvene's GRU models
// (tests/fixtures/training/sites/gru_{lm2,cls2}.safetensors, tools/make_training_fixtures.py; the
// README there, section sites/):
//   GruSiteGradients  dLoss/d(stream) at every site of both layers, every timestep, for the LM
//                     (CE and a logit difference at chosen (b, t)) and the classifier (its pooled
//                     logits at sum(mask) - 1 of a right-padded row), from the embeddings; with
//                     only some grad sites on (one fused bwd.gru_cell call) the bits are the same;
//                     a pass from layer 1 (layer 1's sites as the fixture's) and from layer 2 (the head)
//   GruTrainPass      its forward with sites equals cvene_forward with them; an intervention's
//                     vector-Jacobian product at the grad sites (cell_input.1, which IS
//                     cell_output.0) against finite differences; refused sites
// Built twice (tests/CMakeLists.txt): test_train_gru (label parity, CPU) and test_train_gru_emu
// (label emu: the CUDA backend on the kernel emulator), plus test_train_gru_cuda (label cuda).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"
extern "C" {
#include "models/model.h"
}

namespace {

const std::string kDir = std::string(CVENE_FIXTURES) + "/training/sites";

const cvene_component kGruComps[] = {
    CVENE_CELL_INPUT,        CVENE_X2H_OUTPUT,        CVENE_RESET_X2H_OUTPUT,  CVENE_UPDATE_X2H_OUTPUT,
    CVENE_NEW_X2H_OUTPUT,    CVENE_H2H_OUTPUT,        CVENE_RESET_H2H_OUTPUT,  CVENE_UPDATE_H2H_OUTPUT,
    CVENE_NEW_H2H_OUTPUT,    CVENE_RESET_GATE_INPUT,  CVENE_RESET_GATE_OUTPUT, CVENE_UPDATE_GATE_INPUT,
    CVENE_UPDATE_GATE_OUTPUT, CVENE_NEW_GATE_INPUT,   CVENE_NEW_GATE_OUTPUT,   CVENE_CELL_OUTPUT};

// max |got - want| / max |want| (want's scale); where names the worst element
double rel(const std::vector<float> &got, const std::vector<float> &want, std::string *where = nullptr) {
    if (got.size() != want.size() || want.empty()) return INFINITY;
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

std::string key_of(cvene_component c, int l) { return std::string(cvene_component_name(c)) + "." + std::to_string(l); }

// Every grad site call, per (component, layer) in call order: timestep T-1 first.
struct Recorder {
    cvene_backend *be = nullptr;
    std::map<std::string, std::vector<std::vector<float>>> calls;
    std::map<std::string, int> width;
    // (B, T, W) stacked as the fixture stores a stream; calls[k] is timestep T-1-k
    std::vector<float> stacked(const std::string &key, int B, int T) {
        const auto &cs = calls[key];
        const int W = width[key];
        std::vector<float> out((size_t)B * T * W, NAN);
        if ((int)cs.size() != T) return {};
        for (int k = 0; k < T; k++)
            for (int b = 0; b < B; b++)
                for (int w = 0; w < W; w++) out[((size_t)b * T + (T - 1 - k)) * W + w] = cs[k][(size_t)b * W + w];
        return out;
    }
};

int record(void *user, cvene_component c, int layer, cvene_tensor_view *v) {
    Recorder *r = static_cast<Recorder *>(user);
    if (v->ndim != 2) return 2;
    std::vector<float> h((size_t)view_numel(v));
    if (r->be->ops->to_host(r->be, h.data(), v->data, sizeof(float) * h.size()) != CVENE_OK) return 1;
    const std::string key = key_of(c, layer);
    r->calls[key].push_back(h);
    r->width[key] = (int)v->shape[1];
    return 0;
}

// One fixture model and its loss: the pass's device buffers, rows, dlogits.
struct Case {
    std::string name; // gru_lm2 / gru_cls2
    bool cls = false;
    Archive ar;
    Loaded L;
    cvene_backend *be = nullptr;
    int B = 0, T = 0, h = 0, V = 0, N = 0, W = 0;
    std::vector<int32_t> pairs, rows, labels;
    std::vector<void *> bufs;
    explicit Case(const std::string &n)
        : name(n), cls(n == "gru_cls2"), ar(kDir + "/" + n + ".safetensors"),
          L(std::string(CVENE_FIXTURES) + "/gru/" + (n == "gru_cls2" ? "cls2" : "lm2") + "/model", kTestDevice) {
        if (L.status == CVENE_OK) be = L.ctx->be;
    }
    ~Case() {
        for (void *p : bufs) be->ops->free(be, p);
    }
    template <class T> T *dev(const std::vector<T> &v) {
        void *p = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &p, std::max<size_t>(1, v.size()) * sizeof(T)), CVENE_OK);
        bufs.push_back(p);
        if (!v.empty()) {
            EXPECT_EQ(be->ops->to_device(be, p, v.data(), v.size() * sizeof(T)), CVENE_OK);
        }
        return static_cast<T *>(p);
    }
    std::vector<float> host(const float *p, size_t n) {
        std::vector<float> v(n);
        EXPECT_EQ(be->ops->to_host(be, v.data(), p, n * sizeof(float)), CVENE_OK);
        return v;
    }
    // the loss's pairs: rows b * T + t (the classifier: the pooled step sum(mask_b) - 1)
    void set_loss(const std::string &loss) {
        std::vector<int64_t> xs, ps;
        ar.get<float>("value.cell_input.0", &xs);
        B = (int)xs[0], T = (int)xs[1], h = (int)xs[2];
        V = cvene_model_get_info(L.model).vocab_size;
        pairs = ar.get<int32_t>(loss + ".pairs", &ps);
        N = (int)ps[0], W = (int)ps[1];
        const int off = cls ? 1 : 2; // (b, label) / (b, a, c) or (b, t, label) / (b, t, a, c)
        std::vector<int32_t> mask = cls ? ar.get<int32_t>("attention_mask") : std::vector<int32_t>();
        rows.assign(N, 0), labels.assign(N, 0);
        for (int i = 0; i < N; i++) {
            const int b = pairs[i * W];
            int t = 0;
            if (cls)
                for (int q = 0; q < T; q++) t += mask[(size_t)b * T + q];
            rows[i] = cls ? b * T + t - 1 : b * T + pairs[i * W + 1];
            labels[i] = pairs[i * W + off];
        }
    }
    // the fixture's logits of the loss rows (N, V)
    std::vector<float> want_logits() {
        auto lg = ar.get<float>("logits");
        std::vector<float> w((size_t)N * V);
        for (int i = 0; i < N; i++) {
            const size_t src = cls ? (size_t)pairs[i * W] : (size_t)rows[i];
            std::copy(lg.begin() + src * V, lg.begin() + (src + 1) * V, w.begin() + (size_t)i * V);
        }
        return w;
    }
    // dLoss/dlogits (N, V) on the device and the loss, from the pass's logits
    float *dlogits(const std::string &loss, const float *logits, double *value) {
        float *g = dev(std::vector<float>((size_t)N * V, 0.0f));
        const int off = cls ? 1 : 2;
        *value = 0;
        if (loss == "ce") {
            float *l = dev(std::vector<float>(N, 0.0f));
            EXPECT_EQ(be->ops->bwd->xent(be, g, l, logits, dev(labels), N, V, 1.0f / N), CVENE_OK);
            for (float v : host(l, N)) *value += v / N;
            return g;
        }
        const auto lg = host(logits, (size_t)N * V);
        std::vector<float> gh((size_t)N * V, 0.0f);
        for (int i = 0; i < N; i++) {
            const int a = pairs[i * W + off], c = pairs[i * W + off + 1];
            gh[(size_t)i * V + a] += 1.0f / N, gh[(size_t)i * V + c] -= 1.0f / N;
            *value += ((double)lg[(size_t)i * V + a] - lg[(size_t)i * V + c]) / N;
        }
        EXPECT_EQ(be->ops->to_device(be, g, gh.data(), gh.size() * 4), CVENE_OK);
        return g;
    }
};

// The pass from layer l0 (its input: the fixture's stacked cell_input.l0), the loss's gradient,
// the backward with grad sites `on` (per component, a layer mask) recorded.
struct PassResult {
    std::vector<float> logits;
    Recorder rec;
};
void run_pass(Case &c, const std::string &loss, int l0, const uint64_t *on, PassResult *res,
              const cvene_run_opts *o = nullptr) {
    const std::string xkey = l0 < 2 ? "value.cell_input." + std::to_string(l0) : "value.cell_output.1";
    float *x = c.dev(c.ar.get<float>(xkey)), *logits = c.dev(std::vector<float>((size_t)c.N * c.V, NAN));
    model_train_pass tp = {l0, x, c.B, c.T, nullptr, nullptr, c.rows.data(), c.N, logits, nullptr, nullptr, nullptr};
    cvene_run_opts none{};
    ASSERT_EQ(c.L.model->vt->train_forward(c.L.model, &tp, o ? o : &none), CVENE_OK) << c.L.error();
    res->logits = c.host(logits, (size_t)c.N * c.V);
    double value = 0;
    const float *dl = c.dlogits(loss, logits, &value);
    EXPECT_NEAR(value, c.ar.get<float>("loss." + loss)[0], 1e-5 * (1 + std::fabs(value))) << c.name << " " << loss;
    res->rec.be = c.be;
    model_grad_sites gs{};
    gs.fn = record, gs.user = &res->rec;
    for (int k = 0; k < CVENE_N_COMPONENTS; k++) gs.sites[k] = on[k];
    ASSERT_EQ(c.L.model->vt->train_backward(c.L.model, &tp, dl, &gs), CVENE_OK) << c.L.error();
}

// Every grad site of the layers in `layers` against the fixture: within 1e-5 of each stream's
// largest gradient (f32 throughout: each element is a sum over at most 3h = 48 GEMM terms per
// step through 6 steps of the recurrence, a few ulps relative to the largest term; measured
// below 3e-7, printed).
void check_sites(const std::string &name, const std::string &loss) {
    Case c(name);
    ASSERT_EQ(c.L.status, CVENE_OK) << c.L.error();
    c.set_loss(loss);
    uint64_t on[CVENE_N_COMPONENTS] = {0};
    for (cvene_component k : kGruComps) on[k] = 3; // both layers
    PassResult all;
    ASSERT_NO_FATAL_FAILURE(run_pass(c, loss, 0, on, &all));
    EXPECT_LE(rel(all.logits, c.want_logits()), 1e-5) << "logits";
    int checked = 0;
    double worst = 0;
    for (cvene_component k : kGruComps)
        for (int l = 0; l < 2; l++) {
            const std::string key = key_of(k, l);
            ASSERT_TRUE(all.rec.calls.count(key)) << "no grad site call for " << key;
            ASSERT_EQ((int)all.rec.calls[key].size(), c.T) << key << ": one call per timestep";
            std::string where;
            const double e = rel(all.rec.stacked(key, c.B, c.T), c.ar.get<float>(loss + ".grad." + key), &where);
            EXPECT_LE(e, 1e-5) << name << " " << loss << " " << key << " " << where;
            worst = std::max(worst, e);
            checked++;
        }
    EXPECT_EQ(checked, 32);
    std::printf("[ gru grad ] %-8s %-10s 32 sites, worst rel err %.2e\n", name.c_str(), loss.c_str(), worst);

    // only cell_output / cell_input on: bwd.gru_cell runs its stages in one call per cell; the
    // same bits as with every gate site on (stage by stage)
    uint64_t few[CVENE_N_COMPONENTS] = {0};
    few[CVENE_CELL_OUTPUT] = few[CVENE_CELL_INPUT] = 3;
    PassResult fused;
    ASSERT_NO_FATAL_FAILURE(run_pass(c, loss, 0, few, &fused));
    for (cvene_component k : {CVENE_CELL_OUTPUT, CVENE_CELL_INPUT})
        for (int l = 0; l < 2; l++)
            EXPECT_EQ(fused.rec.calls[key_of(k, l)], all.rec.calls[key_of(k, l)]) << "fused vs staged " << key_of(k, l);

    // from layer 1: its input is cell_output.0 (= cell_input.1); layer 1's streams get the same
    // gradients (nothing there reads layer 0), cell_input.1 aside (it needs layer 0: refused)
    uint64_t l1[CVENE_N_COMPONENTS] = {0};
    for (cvene_component k : kGruComps) l1[k] = k == CVENE_CELL_INPUT ? 0 : 2;
    PassResult from1;
    ASSERT_NO_FATAL_FAILURE(run_pass(c, loss, 1, l1, &from1));
    EXPECT_LE(rel(from1.logits, c.want_logits()), 1e-5) << "logits from layer 1";
    for (cvene_component k : kGruComps) {
        if (k == CVENE_CELL_INPUT) continue;
        const std::string key = key_of(k, 1);
        std::string where;
        EXPECT_LE(rel(from1.rec.stacked(key, c.B, c.T), c.ar.get<float>(loss + ".grad." + key), &where), 1e-5)
            << "from layer 1: " << key << " " << where;
        EXPECT_EQ(from1.rec.calls.count(key_of(k, 0)), 0u) << "a layer-0 grad site in a pass from layer 1";
    }
    // from layer 2: the head alone
    uint64_t none[CVENE_N_COMPONENTS] = {0};
    PassResult head;
    ASSERT_NO_FATAL_FAILURE(run_pass(c, loss, 2, none, &head));
    EXPECT_LE(rel(head.logits, c.want_logits()), 1e-5) << "logits from layer 2";
}

TEST(GruSiteGradients, LmCrossEntropy) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("gru_lm2", "ce");
}
TEST(GruSiteGradients, LmLogitDifference) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("gru_lm2", "logit_diff");
}
TEST(GruSiteGradients, ClassifierCrossEntropy) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("gru_cls2", "ce");
}
TEST(GruSiteGradients, ClassifierLogitDifference) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("gru_cls2", "logit_diff");
}

// ---- the pass with interventions ----

// Scales the stream by alpha at `comp` of `layer` in the forward; at the grad site, the VJP
// (the gradient scaled by alpha too). Every timestep.
struct Scale {
    cvene_backend *be;
    float alpha;
    int calls = 0;
};
int scale_site(void *user, cvene_component, int, cvene_tensor_view *v) {
    Scale *s = static_cast<Scale *>(user);
    SiteHost hv(s->be, v);
    for (int64_t i = 0; i < hv.n; i++) hv.p[i] *= s->alpha;
    s->calls++;
    return hv.write_back() ? 0 : 1;
}

// The training forward with sites (cell_input.1: the buffer layer 0 reads again at the next step,
// and reset_gate_output.0) gives cvene_forward's logits with the same sites.
TEST(GruTrainPass, ForwardSitesAsTheForward) {
    CVENE_SKIP_WITHOUT_DEVICE();
    for (const char *name : {"gru_lm2", "gru_cls2"}) {
        Case c(name);
        ASSERT_EQ(c.L.status, CVENE_OK) << c.L.error();
        c.set_loss("ce");
        auto ids = c.ar.get<int32_t>("input_ids");
        Scale s{c.be, 0.5f};
        cvene_run_opts o{};
        o.site_fn = scale_site, o.site_user = &s;
        o.sites[CVENE_CELL_INPUT] = 2, o.sites[CVENE_RESET_GATE_OUTPUT] = 1;
        const int Vout = cvene_model_get_info(c.L.model).vocab_size;
        std::vector<float> full((size_t)c.B * c.T * Vout);
        o.logits = full.data();
        ASSERT_EQ(cvene_forward(c.L.model, ids.data(), c.B, c.T, &o), CVENE_OK) << c.L.error();
        EXPECT_EQ(s.calls, 2 * c.T);
        o.logits = nullptr;
        float *x = c.dev(c.ar.get<float>("value.cell_input.0")), *logits = c.dev(std::vector<float>((size_t)c.N * c.V));
        model_train_pass tp = {0, x, c.B, c.T, nullptr, nullptr, c.rows.data(), c.N, logits, nullptr, nullptr, nullptr};
        ASSERT_EQ(c.L.model->vt->train_forward(c.L.model, &tp, &o), CVENE_OK) << c.L.error();
        EXPECT_EQ(s.calls, 4 * c.T);
        const auto got = c.host(logits, (size_t)c.N * c.V);
        std::vector<float> want((size_t)c.N * c.V);
        for (int i = 0; i < c.N; i++)
            std::copy(full.begin() + (size_t)c.rows[i] * Vout, full.begin() + (size_t)(c.rows[i] + 1) * Vout,
                      want.begin() + (size_t)i * c.V);
        const double e = rel(got, want);
        std::printf("[ gru fwd  ] %-8s training forward vs cvene_forward with sites: rel diff %.2e\n", name, e);
        EXPECT_LE(e, 1e-6) << name; // the same ops on the same values (GEMM row blocking aside)
    }
}

// With cell_input.1 scaled by 0.5 in the forward and its VJP at the grad site, the gradient g of a
// logit difference at the embeddings (cell_input.0) against a central difference of the training
// forward itself in f32 along u = g / |g| (eps 1e-2: truncation ~eps^2; f32 rounding of the loss,
// ~1e-8 / eps, is ~1e-4 of this derivative, the largest one; within 1e-3 relative, measured 6e-5).
// The check can tell: without the VJP at cell_input.1 <g, u> is off by far more than 10 % (2x).
struct VjpRun {
    cvene_backend *be;
    float alpha;   // the VJP's scale at cell_input.1
    Recorder rec;  // cell_input.0
};
int vjp_site(void *user, cvene_component comp, int layer, cvene_tensor_view *v) {
    VjpRun *r = static_cast<VjpRun *>(user);
    if (comp == CVENE_CELL_INPUT && layer == 1) {
        Scale sc{r->be, r->alpha};
        return scale_site(&sc, comp, layer, v);
    }
    return record(&r->rec, comp, layer, v);
}

TEST(GruTrainPass, InterventionGradientVsFiniteDifferences) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Case c("gru_lm2");
    ASSERT_EQ(c.L.status, CVENE_OK) << c.L.error();
    c.set_loss("logit_diff");
    const auto x0 = c.ar.get<float>("value.cell_input.0");
    Scale s{c.be, 0.5f};
    cvene_run_opts o{};
    o.site_fn = scale_site, o.site_user = &s;
    o.sites[CVENE_CELL_INPUT] = 2;
    float *logits = c.dev(std::vector<float>((size_t)c.N * c.V));
    auto forward = [&](const std::vector<float> &xv) {
        model_train_pass tp = {0, c.dev(xv), c.B, c.T, nullptr, nullptr, c.rows.data(), c.N, logits, nullptr, nullptr, nullptr};
        EXPECT_EQ(c.L.model->vt->train_forward(c.L.model, &tp, &o), CVENE_OK) << c.L.error();
        return tp;
    };
    auto grad = [&](float alpha) { // the embeddings' gradient with the VJP alpha at cell_input.1
        model_train_pass tp = forward(x0);
        double unused = 0;
        const float *dl = c.dlogits("logit_diff", logits, &unused);
        VjpRun r{c.be, alpha, {}};
        r.rec.be = c.be;
        model_grad_sites gs{};
        gs.fn = vjp_site, gs.user = &r;
        gs.sites[CVENE_CELL_INPUT] = 3;
        EXPECT_EQ(c.L.model->vt->train_backward(c.L.model, &tp, dl, &gs), CVENE_OK) << c.L.error();
        return r.rec.stacked("cell_input.0", c.B, c.T);
    };
    auto loss = [&](const std::vector<float> &xv) {
        forward(xv);
        double v = 0;
        c.dlogits("logit_diff", logits, &v);
        return v;
    };
    const auto g = grad(0.5f), g_wrong = grad(1.0f);
    ASSERT_EQ(g.size(), x0.size());
    ASSERT_EQ(g_wrong.size(), x0.size());
    double norm = 0;
    for (float v : g) norm += (double)v * v;
    norm = std::sqrt(norm);
    const double eps = 1e-2;
    std::vector<float> xp(x0), xm(x0);
    double an = 0, an_wrong = 0;
    for (size_t i = 0; i < g.size(); i++) {
        const double u = g[i] / norm;
        xp[i] = (float)(x0[i] + eps * u), xm[i] = (float)(x0[i] - eps * u);
        an += g[i] * u, an_wrong += g_wrong[i] * u;
    }
    const double fd = (loss(xp) - loss(xm)) / (2 * eps);
    std::printf("[ gru fd   ] directional derivative: fd %+.6e  backward %+.6e (rel err %.1e)  without the VJP "
                "%+.6e\n", fd, an, std::fabs(an - fd) / std::fabs(fd), an_wrong);
    EXPECT_NEAR(an, fd, 1e-3 * std::fabs(fd));
    EXPECT_GT(std::fabs(an_wrong - fd), 0.1 * std::fabs(fd)) << "the check cannot see a missing VJP";
}

// Sites a pass cannot serve are refused by name: a transformer component, a layer below the pass,
// cell_input of the first layer of a pass from layer 1 (it is cell_output.0: layer 0's state).
TEST(GruTrainPass, RefusedSites) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Case c("gru_lm2");
    ASSERT_EQ(c.L.status, CVENE_OK) << c.L.error();
    c.set_loss("ce");
    float *x = c.dev(c.ar.get<float>("value.cell_input.1")), *logits = c.dev(std::vector<float>((size_t)c.N * c.V));
    model_train_pass tp = {1, x, c.B, c.T, nullptr, nullptr, c.rows.data(), c.N, logits, nullptr, nullptr, nullptr};
    Scale s{c.be, 1.0f};
    struct Bad {
        cvene_component comp;
        uint64_t layers;
        const char *says;
    };
    for (const Bad &b : {Bad{CVENE_BLOCK_OUTPUT, 1, "no such stream"}, Bad{CVENE_CELL_OUTPUT, 1, "below"},
                         Bad{CVENE_CELL_INPUT, 2, "start the pass at layer 0"}, Bad{CVENE_H2H_OUTPUT, 4, "n_layer"}}) {
        cvene_run_opts o{};
        o.site_fn = scale_site, o.site_user = &s;
        o.sites[b.comp] = b.layers;
        EXPECT_NE(c.L.model->vt->train_forward(c.L.model, &tp, &o), CVENE_OK) << cvene_component_name(b.comp);
        EXPECT_NE(c.L.error().find(b.says), std::string::npos) << c.L.error();
        model_grad_sites gs{};
        gs.fn = scale_site, gs.user = &s;
        gs.sites[b.comp] = b.layers;
        EXPECT_NE(c.L.model->vt->train_backward(c.L.model, &tp, logits, &gs), CVENE_OK) << cvene_component_name(b.comp);
        EXPECT_NE(c.L.error().find(b.says), std::string::npos) << c.L.error();
    }
    EXPECT_EQ(s.calls, 0);
}

} // namespace
