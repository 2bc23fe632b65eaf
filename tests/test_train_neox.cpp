// Training GPT-NeoX (issue #13; models/gpt_neox_train.c):
//   NeoxSiteGradients   the model's backward: dLoss/d(stream) at every grad site of
//                       tests/fixtures/neox/par_rot25 vs torch autograd
//                       (tests/fixtures/training/sites/neox_par_rot25), from layer 0 and from layer 1
//   NeoxSiteFiniteDiff  the same gradients against central differences of the training forward's own
//                       loss, on par_rot25 and on seq_rot100 (sequential residual, full rotary), whose
//                       gradients no torch fixture holds
//   NeoxTrainer         a LowRankRotatedSpace trainer on both models: its loss against the plain
//                       forward (an intervention that changes nothing) and its gradient against a
//                       central difference of its loss (no pyvene NeoX training fixture exists)
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"
extern "C" {
#include "engine/train.h"
#include "engine/trainable.h"
#include "models/model.h"
}

namespace {

const std::string kNeox = std::string(CVENE_FIXTURES) + "/neox/";
const std::string kSites = std::string(CVENE_FIXTURES) + "/training/sites/neox_par_rot25.safetensors";

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

// Device buffers freed on scope exit.
struct Dev {
    cvene_backend *be;
    std::vector<void *> bufs;
    explicit Dev(cvene_backend *b) : be(b) {}
    ~Dev() {
        for (void *p : bufs) be->ops->free(be, p);
    }
    template <class T> T *alloc(size_t n) {
        void *p = nullptr;
        EXPECT_EQ(be->ops->alloc(be, &p, n * sizeof(T)), CVENE_OK);
        bufs.push_back(p);
        return static_cast<T *>(p);
    }
    template <class T> T *upload(const std::vector<T> &h) {
        T *p = alloc<T>(h.size());
        EXPECT_EQ(be->ops->to_device(be, p, h.data(), h.size() * sizeof(T)), CVENE_OK);
        return p;
    }
    template <class T> std::vector<T> download(const T *p, size_t n) {
        std::vector<T> h(n);
        EXPECT_EQ(be->ops->to_host(be, h.data(), p, n * sizeof(T)), CVENE_OK);
        return h;
    }
};

std::vector<float> view_to_host(cvene_backend *be, const cvene_tensor_view *v) {
    std::vector<float> h((size_t)view_numel(v));
    if (be->ops->to_host(be, h.data(), v->data, h.size() * sizeof(float)) != CVENE_OK) h.clear();
    return h;
}

std::string key_of(cvene_component c, int layer) {
    return std::string(cvene_component_name(c)) + "." + std::to_string(layer);
}

// Every (B, T, C) and (B, T, I) component a NeoX training pass has grad sites for, and the per-head
// forms (the q / k / v and merged-heads streams permuted to (B, H, T, D)).
const cvene_component kComps[] = {CVENE_BLOCK_INPUT, CVENE_ATTENTION_INPUT, CVENE_QUERY_OUTPUT, CVENE_KEY_OUTPUT,
                                  CVENE_VALUE_OUTPUT, CVENE_ATTENTION_VALUE_OUTPUT, CVENE_ATTENTION_OUTPUT,
                                  CVENE_MLP_INPUT, CVENE_MLP_ACTIVATION, CVENE_MLP_OUTPUT, CVENE_BLOCK_OUTPUT};
const std::pair<cvene_component, cvene_component> kHeads[] = {
    {CVENE_HEAD_QUERY_OUTPUT, CVENE_QUERY_OUTPUT},
    {CVENE_HEAD_KEY_OUTPUT, CVENE_KEY_OUTPUT},
    {CVENE_HEAD_VALUE_OUTPUT, CVENE_VALUE_OUTPUT},
    {CVENE_HEAD_ATTENTION_VALUE_OUTPUT, CVENE_ATTENTION_VALUE_OUTPUT}};

// Site and grad site callbacks: each tensor seen, by "component.layer"; the order of the calls.
struct Recorder {
    cvene_backend *be = nullptr;
    std::map<std::string, std::vector<float>> seen;
    std::vector<std::string> order;
};

int record(void *user, cvene_component c, int layer, cvene_tensor_view *v) {
    Recorder *r = static_cast<Recorder *>(user);
    auto h = view_to_host(r->be, v);
    if (h.empty()) return 1;
    r->seen[key_of(c, layer)] = h;
    r->order.push_back(key_of(c, layer));
    return 0;
}

// (B, T, H, D) -> (B, H, T, D)
std::vector<float> to_heads(const std::vector<float> &x, int B, int T, int H, int D) {
    std::vector<float> y(x.size());
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++)
                    y[(((size_t)b * H + h) * T + t) * D + d] = x[(((size_t)b * T + t) * H + h) * D + d];
    return y;
}

// The loss rows and the loss's gradient for their logits (host): mean CE over (b, t, label) pairs, or
// the mean logit difference over (b, t, a, c) pairs, in double.
struct Loss {
    std::string name;
    std::vector<int32_t> pairs;
    int W = 0, N = 0, V = 0, T = 0;
    std::vector<int32_t> rows() const {
        std::vector<int32_t> r(N);
        for (int i = 0; i < N; i++) r[i] = pairs[i * W] * T + pairs[i * W + 1];
        return r;
    }
    double value(const std::vector<float> &lg, std::vector<float> *grad) const {
        double loss = 0;
        if (grad) grad->assign((size_t)N * V, 0.0f);
        for (int i = 0; i < N; i++) {
            const float *z = &lg[(size_t)i * V];
            if (name == "ce") {
                double mx = -INFINITY, s = 0;
                for (int j = 0; j < V; j++) mx = std::max(mx, (double)z[j]);
                for (int j = 0; j < V; j++) s += std::exp((double)z[j] - mx);
                const int y = pairs[i * W + 2];
                loss += (mx + std::log(s) - z[y]) / N;
                for (int j = 0; grad && j < V; j++)
                    (*grad)[(size_t)i * V + j] = (float)((std::exp((double)z[j] - mx) / s - (j == y)) / N);
            } else {
                const int a = pairs[i * W + 2], c = pairs[i * W + 3];
                loss += ((double)z[a] - z[c]) / N;
                if (grad) (*grad)[(size_t)i * V + a] += 1.0f / N, (*grad)[(size_t)i * V + c] -= 1.0f / N;
            }
        }
        return loss;
    }
};

Loss fixture_loss(const Archive &ar, const std::string &name, int T, int V) {
    Loss l;
    std::vector<int64_t> ps;
    l.name = name, l.pairs = ar.get<int32_t>(name + ".pairs", &ps);
    l.N = (int)ps[0], l.W = (int)ps[1], l.V = V, l.T = T;
    return l;
}

// ---------------------------------------------------------------------------------------------
// NeoxSiteGradients: the training pass of par_rot25 from layer l0 (its input: the fixture's
// block_input.l0), every site's forward value and every grad site recorded

// Within 1e-5 of torch's f32 autograd relative to each stream's largest value, as GPT-2's
// (test_training.cpp, SiteGradients): the model in f32, the backward's sums in f32 GEMMs.
void check_sites(const std::string &loss_name, int l0) {
    Loaded L(kNeox + "par_rot25/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_backend *be = L.ctx->be;
    Dev dev(be);
    Archive ar(kSites);
    std::vector<int64_t> xs;
    auto x0 = ar.get<float>("value.block_input." + std::to_string(l0), &xs);
    auto mask = ar.get<int32_t>("attention_mask");
    const int B = (int)xs[0], T = (int)xs[1], C = (int)xs[2], V = 96, H = 4, D = C / H, n_layer = 2;
    const Loss loss = fixture_loss(ar, loss_name, T, V);
    const auto rows = loss.rows();
    float *dx = dev.upload(x0), *dlog = dev.alloc<float>((size_t)loss.N * V);
    model_train_pass tp = {l0, dx, B, T, mask.data(), nullptr, rows.data(), loss.N, dlog, nullptr, nullptr, nullptr};
    Recorder fwd;
    fwd.be = be;
    cvene_run_opts o{};
    o.site_fn = record, o.site_user = &fwd;
    for (cvene_component c : kComps) o.sites[c] = 3; // both layers (those below l0 are not run)
    ASSERT_EQ(L.model->vt->train_forward(L.model, &tp, &o), CVENE_OK) << L.error();
    // the sites' values and the loss rows' logits are the forward's
    int n_values = 0;
    for (cvene_component c : kComps)
        for (int l = l0 - (c == CVENE_BLOCK_OUTPUT); l < n_layer; l++) {
            if (l < 0) continue;
            const std::string key = key_of(c, l);
            ASSERT_TRUE(fwd.seen.count(key)) << "no site call for " << key;
            std::string where;
            EXPECT_LE(rel(fwd.seen[key].data(), ar.get<float>("value." + key), &where), 1e-5) << key << " " << where;
            n_values++;
        }
    EXPECT_EQ(n_values, 11 * (n_layer - l0) + (l0 > 0));
    auto logits = ar.get<float>("logits");
    auto lg = dev.download(dlog, (size_t)loss.N * V);
    std::vector<float> want((size_t)loss.N * V);
    for (int i = 0; i < loss.N; i++)
        std::copy(logits.begin() + (size_t)rows[i] * V, logits.begin() + (size_t)(rows[i] + 1) * V,
                  want.begin() + i * V);
    EXPECT_LE(rel(lg.data(), want), 1e-5) << "logits";
    // the loss's gradient for those logits: CE through the backend's xent, as the trainer computes it
    std::vector<float> g;
    const double lv = loss.value(lg, &g);
    EXPECT_NEAR(lv, ar.get<float>("loss." + loss_name)[0], 1e-5 * (1 + std::fabs(lv)));
    float *dg = dev.upload(g);
    if (loss_name == "ce") {
        std::vector<int32_t> labels(loss.N);
        for (int i = 0; i < loss.N; i++) labels[i] = loss.pairs[i * loss.W + 2];
        int32_t *dlab = dev.upload(labels);
        float *dl = dev.alloc<float>(loss.N);
        ASSERT_EQ(be->ops->bwd->xent(be, dg, dl, dlog, dlab, loss.N, V, 1.0f / loss.N), CVENE_OK);
        auto l = dev.download(dl, loss.N);
        double sum = 0;
        for (float v : l) sum += v / loss.N;
        EXPECT_NEAR(sum, lv, 1e-5 * (1 + std::fabs(lv)));
    }
    Recorder rec;
    rec.be = be;
    model_grad_sites gs{};
    gs.fn = record, gs.user = &rec;
    for (cvene_component c : kComps) gs.sites[c] = 3;
    for (auto hc : kHeads) gs.sites[hc.first] = 3;
    ASSERT_EQ(L.model->vt->train_backward(L.model, &tp, dg, &gs), CVENE_OK) << L.error();
    int checked = 0;
    double worst = 0;
    for (cvene_component c : kComps)
        for (int l = l0 - (c == CVENE_BLOCK_OUTPUT); l < n_layer; l++) {
            if (l < 0) continue;
            const std::string key = key_of(c, l);
            ASSERT_TRUE(rec.seen.count(key)) << "no grad site call for " << key;
            auto want_g = ar.get<float>(loss_name + ".grad." + key);
            ASSERT_EQ(rec.seen[key].size(), want_g.size()) << key;
            std::string where;
            const double e = rel(rec.seen[key].data(), want_g, &where);
            EXPECT_LE(e, 1e-5) << key << " " << where;
            worst = std::max(worst, e);
            checked++;
        }
    EXPECT_EQ(checked, 11 * (n_layer - l0) + (l0 > 0));
    std::printf("[ grads ] %s from layer %d: worst %.2e relative to each stream's largest gradient\n",
                loss_name.c_str(), l0, worst);
    // the per-head grad sites see the same gradients as (B, H, T, D)
    for (auto hc : kHeads)
        for (int l = l0; l < n_layer; l++) {
            const std::string key = key_of(hc.first, l);
            ASSERT_TRUE(rec.seen.count(key)) << "no grad site call for " << key;
            auto want_g = to_heads(ar.get<float>(loss_name + ".grad." + key_of(hc.second, l)), B, T, H, D);
            EXPECT_LE(rel(rec.seen[key].data(), want_g), 1e-5) << key;
        }
    // the grad sites come in the reverse of the forward's site order
    std::vector<std::string> want_order;
    for (int l = n_layer - 1; l >= l0; l--) {
        const char *o1[] = {"block_output", "mlp_output", "mlp_activation", "mlp_input", "attention_output",
                            "head_attention_value_output", "attention_value_output", "head_value_output",
                            "head_key_output", "head_query_output", "value_output", "key_output", "query_output",
                            "attention_input", "block_input"};
        for (const char *n : o1) want_order.push_back(std::string(n) + "." + std::to_string(l));
    }
    if (l0 > 0) want_order.push_back("block_output." + std::to_string(l0 - 1));
    EXPECT_EQ(rec.order, want_order);
}

TEST(NeoxSiteGradients, CrossEntropy) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("ce", 0);
}
TEST(NeoxSiteGradients, LogitDifference) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("logit_diff", 0);
}
TEST(NeoxSiteGradients, CrossEntropyFromLayer1) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("ce", 1);
}
TEST(NeoxSiteGradients, LogitDifferenceFromLayer1) {
    CVENE_SKIP_WITHOUT_DEVICE();
    check_sites("logit_diff", 1);
}

// ---------------------------------------------------------------------------------------------
// NeoxSiteFiniteDiff: at every grad site, <dLoss/d(stream), v> against the central difference
// (L(x + h v) - L(x - h v)) / 2h of the training forward's loss, with the stream moved at its site
// (a site callback). The same input, mask and loss pairs as the fixture, on any NeoX model.

struct Perturb {
    cvene_backend *be = nullptr;
    cvene_component c = CVENE_N_COMPONENTS;
    int layer = -1;
    const std::vector<float> *v = nullptr;
    double h = 0;
    std::vector<double> delta; // what the site's values actually moved by (after f32 rounding)
    int hits = 0;
};

int perturb(void *user, cvene_component c, int layer, cvene_tensor_view *t) {
    Perturb *p = static_cast<Perturb *>(user);
    if (c != p->c || layer != p->layer) return 0;
    SiteHost sh(p->be, t);
    if (!sh.ok || (size_t)sh.n != p->v->size()) return 1;
    p->delta.assign((size_t)sh.n, 0.0);
    for (int64_t i = 0; i < sh.n; i++) {
        const float before = sh.p[i];
        sh.p[i] = before + (float)(p->h * (*p->v)[(size_t)i]);
        p->delta[(size_t)i] = (double)sh.p[i] - before;
    }
    p->hits++;
    return sh.write_back() ? 0 : 1;
}

int grab_input(void *user, cvene_component, int, cvene_tensor_view *t) {
    auto *r = static_cast<std::pair<cvene_backend *, std::vector<float>> *>(user);
    r->second = view_to_host(r->first, t);
    return CVENE_SITE_STOP;
}

// Each site's error is |fd - <g, delta>| / (|g| |delta|), delta = what the stream actually moved by
// between the two runs (f32 rounding included): Cauchy-Schwarz's bound on the directional
// derivative is the scale, so the measure does not depend on how v happens to meet g. The model is
// f32, so fd has rounding noise ~ eps_f32 |L| / h and truncation ~ h^2 (the third derivative):
// measured worst over every site of both models and both losses (v ~ N(0, 1) per element),
// h = 1e-2: 1.0e-3 (truncation), 3e-3: 9.8e-5, 1e-3: 8.6e-5, 3e-4: 4.0e-4, 1e-4: 7.2e-4 (noise).
// With h = 1e-3 the tolerance 1e-3 is 10x the worst seen; a wrong block structure fails by far more
// (a sequential ln_2 differentiated at the block's input, or a sequential attention given the
// block output's gradient instead of h's: 4e-2 to 1.3e-1).
// shifted: explicit position ids, t (t + 1) / 2 + 3 b: not a shift of 0..T-1 (rotary's scores depend
// on position differences only, which a shift keeps); rotary's angles from tp->pos, forward and
// backward, and the pass's logits against the inference forward's with the same position_ids.
void fd_sites(const std::string &model, const std::string &loss_name, double tol, bool shifted = false) {
    Loaded L(kNeox + model + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_backend *be = L.ctx->be;
    const cvene_model_info mi = cvene_model_get_info(L.model);
    Dev dev(be);
    Archive ar(kSites);
    std::vector<int64_t> is;
    auto ids = ar.get<int32_t>("input_ids", &is);
    auto mask = ar.get<int32_t>("attention_mask");
    const int B = (int)is[0], T = (int)is[1], C = mi.n_embd, V = mi.vocab_size, NL = mi.n_layer;
    const Loss loss = fixture_loss(ar, loss_name, T, V);
    const auto rows = loss.rows();
    std::vector<int32_t> pos((size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pos[(size_t)b * T + t] = t * (t + 1) / 2 + 3 * b;
    // the embeddings: block_input of layer 0 in a plain forward (then its logits, for shifted)
    std::pair<cvene_backend *, std::vector<float>> x0{be, {}};
    cvene_run_opts fo{};
    fo.attention_mask = mask.data(), fo.site_fn = grab_input, fo.site_user = &x0;
    fo.sites[CVENE_BLOCK_INPUT] = 1;
    ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &fo), CVENE_OK) << L.error();
    ASSERT_EQ(x0.second.size(), (size_t)B * T * C);
    float *dx = dev.upload(x0.second), *dlog = dev.alloc<float>((size_t)loss.N * V);
    model_train_pass tp = {0, dx, B, T, mask.data(), shifted ? pos.data() : nullptr, rows.data(), loss.N, dlog, nullptr, nullptr, nullptr};
    ASSERT_EQ(L.model->vt->train_forward(L.model, &tp, nullptr), CVENE_OK) << L.error();
    const std::vector<float> lg = dev.download(dlog, (size_t)loss.N * V);
    if (shifted) {
        std::vector<float> full((size_t)B * T * V);
        cvene_run_opts po{};
        po.attention_mask = mask.data(), po.position_ids = pos.data(), po.logits = full.data();
        ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &po), CVENE_OK) << L.error();
        std::vector<float> want((size_t)loss.N * V);
        for (int i = 0; i < loss.N; i++)
            std::copy(full.begin() + (size_t)rows[i] * V, full.begin() + (size_t)(rows[i] + 1) * V,
                      want.begin() + i * V);
        EXPECT_LE(rel(lg.data(), want), 1e-5) << "logits with position ids";
        std::vector<float> plain((size_t)B * T * V);
        po.position_ids = nullptr, po.logits = plain.data();
        ASSERT_EQ(cvene_forward(L.model, ids.data(), B, T, &po), CVENE_OK) << L.error();
        EXPECT_GT(rel(plain.data(), full), 1e-3) << "the position ids change nothing: a vacuous check";
    }
    std::vector<float> g;
    loss.value(lg, &g);
    Recorder rec;
    rec.be = be;
    model_grad_sites gs{};
    gs.fn = record, gs.user = &rec;
    const uint64_t all = NL >= 64 ? ~0ull : (1ull << NL) - 1;
    for (cvene_component c : kComps) gs.sites[c] = all;
    ASSERT_EQ(L.model->vt->train_backward(L.model, &tp, dev.upload(g), &gs), CVENE_OK) << L.error();
    std::mt19937 rng(1234);
    std::normal_distribution<double> gauss;
    double worst = 0;
    std::string worst_at;
    int checked = 0;
    for (cvene_component c : kComps)
        for (int l = 0; l < NL; l++) {
            const std::string key = key_of(c, l);
            ASSERT_TRUE(rec.seen.count(key)) << key;
            const std::vector<float> &gr = rec.seen[key];
            // v: Gaussian (the streams' values are O(0.1 .. 1): h v moves them by about 1e-3)
            Perturb p;
            p.be = be, p.c = c, p.layer = l;
            std::vector<float> v(gr.size());
            for (float &e : v) e = (float)gauss(rng);
            p.v = &v;
            cvene_run_opts o{};
            o.site_fn = perturb, o.site_user = &p;
            o.sites[c] = 1ull << l;
            double Lpm[2];
            std::vector<double> dpm[2];
            for (int k = 0; k < 2; k++) {
                p.h = (k ? -1 : 1) * 1e-3;
                ASSERT_EQ(L.model->vt->train_forward(L.model, &tp, &o), CVENE_OK) << L.error();
                Lpm[k] = loss.value(dev.download(dlog, (size_t)loss.N * V), nullptr);
                dpm[k] = p.delta;
            }
            ASSERT_EQ(p.hits, 2) << key;
            double ana = 0, gn = 0, dn = 0;
            for (size_t i = 0; i < gr.size(); i++) {
                const double d = dpm[0][i] - dpm[1][i];
                ana += gr[i] * d, gn += (double)gr[i] * gr[i], dn += d * d;
            }
            const double scale = std::sqrt(gn * dn), err = std::fabs((Lpm[0] - Lpm[1]) - ana) / std::max(scale, 1e-300);
            EXPECT_GT(gn, 0) << key << ": a zero gradient";
            EXPECT_LE(err, tol) << key << ": difference " << Lpm[0] - Lpm[1] << ", gradient " << ana;
            if (err > worst) worst = err, worst_at = key;
            checked++;
        }
    EXPECT_EQ(checked, 11 * NL);
    std::printf("[ fd ] %s %s%s: worst %.2e at %s\n", model.c_str(), loss_name.c_str(),
                shifted ? " (position ids)" : "", worst, worst_at.c_str());
}

TEST(NeoxSiteFiniteDiff, ParallelRotary25) {
    CVENE_SKIP_WITHOUT_DEVICE();
    fd_sites("par_rot25", "ce", 1e-3);
    fd_sites("par_rot25", "logit_diff", 1e-3);
}
TEST(NeoxSiteFiniteDiff, SequentialRotary100) {
    CVENE_SKIP_WITHOUT_DEVICE();
    fd_sites("seq_rot100", "ce", 1e-3);
    fd_sites("seq_rot100", "logit_diff", 1e-3);
}
TEST(NeoxSiteFiniteDiff, PositionIds) {
    CVENE_SKIP_WITHOUT_DEVICE();
    fd_sites("par_rot25", "ce", 1e-3, true);
    fd_sites("seq_rot100", "ce", 1e-3, true);
}

// ---------------------------------------------------------------------------------------------
// NeoxTrainer: a LowRankRotatedSpace intervention (rank 2) at block_input of layer 0, so every
// layer runs backward, on a small random dataset (right-padded batches; one position per example,
// the base's last token, where the label is predicted; the source's position random)

struct Trainer {
    cvene_ctx *ctx = nullptr;
    cvene_config *cfg = nullptr;
    cvene_dataset *data = nullptr, *same = nullptr;
    cvene_trainer *t = nullptr;
    ~Trainer() {
        cvene_trainer_free(t);
        cvene_dataset_free(data);
        cvene_dataset_free(same);
        cvene_config_free(cfg);
    }
};

constexpr int kExamples = 6;

struct Example {
    std::vector<int32_t> base;
    int32_t label;
};

// data: random bases and sources; same: each base as its own source at the same position (the
// intervention then changes nothing: out = b + (b W - b W) W^T = b exactly)
void make_trainer(Loaded &L, Trainer &T, std::vector<Example> *ex) {
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    T.ctx = L.ctx;
    const char *cfg = "{\"representations\": [{\"layer\": 0, \"component\": \"block_input\", \"unit\": \"pos\", "
                      "\"max_number_of_units\": 1, \"low_rank_dimension\": 2}], "
                      "\"intervention_types\": \"LowRankRotatedSpaceIntervention\"}";
    ASSERT_EQ(cvene_config_parse(L.ctx, cfg, &T.cfg), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_dataset_new(L.ctx, &T.data), CVENE_OK);
    ASSERT_EQ(cvene_dataset_new(L.ctx, &T.same), CVENE_OK);
    const int V = cvene_model_get_info(L.model).vocab_size;
    std::mt19937 rng(77);
    auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    for (int e = 0; e < kExamples; e++) {
        std::vector<int32_t> b(uni(3, 6)), s(uni(3, 6));
        for (auto &x : b) x = uni(0, V - 1);
        for (auto &x : s) x = uni(0, V - 1);
        int bp = (int)b.size() - 1, sp = uni(0, (int)s.size() - 1); // bp: the label's position
        const int32_t label = uni(0, V - 1);
        cvene_example x = {b.data(), (int)b.size(), s.data(), (int)s.size(), &bp, &sp, 1, label, -1};
        ASSERT_EQ(cvene_dataset_add(T.data, &x), CVENE_OK) << L.error();
        cvene_example id = {b.data(), (int)b.size(), b.data(), (int)b.size(), &bp, &bp, 1, label, -1};
        ASSERT_EQ(cvene_dataset_add(T.same, &id), CVENE_OK) << L.error();
        ex->push_back({b, label});
    }
    cvene_train_params p = cvene_train_default_params();
    p.batch_size = kExamples;
    ASSERT_EQ(cvene_trainer_new(L.model, T.cfg, &p, &T.t), CVENE_OK) << L.error();
}

double batch_loss(Trainer &T, const cvene_dataset *d) {
    int idx[kExamples];
    for (int b = 0; b < kExamples; b++) idx[b] = b;
    double loss = NAN;
    EXPECT_EQ(train_gradients(T.t, d, idx, kExamples, &loss), CVENE_OK) << cvene_ctx_error(T.ctx);
    return loss;
}

const char *kOriginal = "rotate_layer.parametrizations.weight.original";

// With the intervention changing nothing, the trainer's loss is the plain forward's mean CE at each
// example's last token (the inference forward, itself checked against transformers in
// test_neox_parity): within 1e-5, the two forwards' roundings apart (fused and unfused ops).
void trainer_loss(const std::string &model) {
    Loaded L(kNeox + model + "/model", kTestDevice);
    Trainer T;
    std::vector<Example> ex;
    make_trainer(L, T, &ex);
    if (::testing::Test::HasFatalFailure()) return;
    const double got = batch_loss(T, T.same);
    EXPECT_TRUE(train_live_rows(T.t)) << "block_input of layer 0, the units at the last token: the live-rows pass";
    const int V = cvene_model_get_info(L.model).vocab_size;
    int Tm = 0;
    for (auto &e : ex) Tm = std::max(Tm, (int)e.base.size());
    std::vector<int32_t> ids((size_t)kExamples * Tm, 0), mask((size_t)kExamples * Tm, 0);
    for (int e = 0; e < kExamples; e++)
        for (size_t q = 0; q < ex[e].base.size(); q++)
            ids[(size_t)e * Tm + q] = ex[e].base[q], mask[(size_t)e * Tm + q] = 1;
    std::vector<float> logits((size_t)kExamples * Tm * V);
    cvene_run_opts o{};
    o.attention_mask = mask.data(), o.logits = logits.data();
    ASSERT_EQ(cvene_forward(L.model, ids.data(), kExamples, Tm, &o), CVENE_OK) << L.error();
    double want = 0;
    for (int e = 0; e < kExamples; e++) {
        const int last = (int)ex[e].base.size() - 1, y = ex[e].label;
        const float *z = &logits[((size_t)e * Tm + last) * V];
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) mx = std::max(mx, (double)z[j]);
        for (int j = 0; j < V; j++) s += std::exp((double)z[j] - mx);
        want += (mx + std::log(s) - z[y]) / kExamples;
    }
    EXPECT_NEAR(got, want, 1e-5 * std::fabs(want)) << model;
    std::printf("[ loss ] trainer %s: %.7f, plain forward %.7f\n", model.c_str(), got, want);
    // and a rotation that changes nothing gets no gradient here (the swapped difference is 0)
    const tr_tensor *orig = tr_weights_find(train_weights(T.t, 0), kOriginal);
    ASSERT_NE(orig, nullptr);
    for (int64_t i = 0; i < orig->numel; i++) ASSERT_EQ(orig->grad[i], 0.0f) << i;
}

// The gradient of `original` (the householder parametrization's (D, 2) input, set to random
// values) against the central difference of the trainer's loss along a unit direction u:
// L(o + h u) - L(o - h u) against <grad, delta>, delta the move of the f32 parameters, along a
// random u and along the gradient itself (there <grad, delta> = 2h |grad|: its size is checked
// too). The loss is an f32 model's (each row's loss an f32: noise of an ulp of the loss, ~5e-7),
// so as in fd_sites the error is measured against |grad| |delta|, at two step sizes. Measured
// worst (both models, both directions): h = 3e-2: 1.2e-4, 1.5e-2: 1.2e-4; larger steps meet the
// curvature (1e-1 along the gradient: 1.1e-3), smaller ones the noise (1e-2: 4.0e-4, 3e-3:
// 7.7e-4). Tolerance 1e-3, 8x the worst seen; a gradient 1% off fails along the gradient (1e-2).
void trainer_fd(const std::string &model) {
    Loaded L(kNeox + model + "/model", kTestDevice);
    Trainer T;
    std::vector<Example> ex;
    make_trainer(L, T, &ex);
    if (::testing::Test::HasFatalFailure()) return;
    tr_tensor *orig = tr_weights_find(train_weights(T.t, 0), kOriginal);
    ASSERT_NE(orig, nullptr);
    ASSERT_EQ(orig->ndim, 2);
    EXPECT_EQ(orig->shape[1], 2);
    std::mt19937 rng(5);
    std::normal_distribution<double> gauss;
    for (int64_t i = 0; i < orig->numel; i++) orig->value[i] += (float)(0.5 * gauss(rng));
    const std::vector<float> o0(orig->value, orig->value + orig->numel);
    const double loss = batch_loss(T, T.data);
    ASSERT_TRUE(std::isfinite(loss));
    const std::vector<float> grad(orig->grad, orig->grad + orig->numel);
    double gn = 0;
    for (float g : grad) gn += (double)g * g;
    ASSERT_GT(gn, 0) << "no gradient reached the intervention";
    for (int along_grad = 0; along_grad < 2; along_grad++) {
        std::vector<double> u((size_t)orig->numel);
        double un = 0;
        for (size_t i = 0; i < u.size(); i++) u[i] = along_grad ? grad[i] : gauss(rng), un += u[i] * u[i];
        for (double &e : u) e /= std::sqrt(un);
        for (double h : {3e-2, 1.5e-2}) {
            double Lpm[2];
            std::vector<float> at[2];
            for (int k = 0; k < 2; k++) {
                for (int64_t i = 0; i < orig->numel; i++)
                    orig->value[i] = (float)(o0[(size_t)i] + (k ? -h : h) * u[(size_t)i]);
                at[k].assign(orig->value, orig->value + orig->numel);
                Lpm[k] = batch_loss(T, T.data);
            }
            double ana = 0, dn = 0;
            for (size_t i = 0; i < grad.size(); i++) {
                const double d = (double)at[0][i] - at[1][i];
                ana += grad[i] * d, dn += d * d;
            }
            const double err = std::fabs((Lpm[0] - Lpm[1]) - ana) / std::sqrt(gn * dn);
            const char *dir = along_grad ? "the gradient" : "random";
            EXPECT_LE(err, 1e-3) << model << " " << dir << " h " << h << ": difference " << Lpm[0] - Lpm[1]
                                 << ", gradient " << ana;
            std::printf("[ fd ] trainer %s, %s direction, h %.1e: loss %.6f, difference %.6e, <grad, delta> %.6e, "
                        "error %.2e\n", model.c_str(), dir, h, loss, Lpm[0] - Lpm[1], ana, err);
        }
    }
    std::copy(o0.begin(), o0.end(), orig->value);
    // the loss is back where it was: nothing leaked between the evaluations
    EXPECT_EQ(batch_loss(T, T.data), loss);
}

TEST(NeoxTrainer, LossIsThePlainForwardsWhenNothingChanges) {
    CVENE_SKIP_WITHOUT_DEVICE();
    trainer_loss("par_rot25");
    trainer_loss("seq_rot100");
}
TEST(NeoxTrainer, GradientMatchesFiniteDifferenceParallel) {
    CVENE_SKIP_WITHOUT_DEVICE();
    trainer_fd("par_rot25");
}
TEST(NeoxTrainer, GradientMatchesFiniteDifferenceSequential) {
    CVENE_SKIP_WITHOUT_DEVICE();
    trainer_fd("seq_rot100");
}

// Live rows (model_train_pass.live_start) against every row, on both fixtures (parallel rotary 25%,
// sequential rotary 100%): the LowRank intervention at block_input of layer 0 at a random position
// of each base (the loss at its last token), so each example runs from there on with the clean
// keys and values (post-rotary) of the rows before. The same loss (1e-6 relative) and gradient (1e-5
// of its largest) as the every-row pass, which the tests above check against finite differences
// and the plain forwards.
void live_vs_every_row(const std::string &model) {
    Loaded L(kNeox + model + "/model", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    Trainer T;
    T.ctx = L.ctx;
    const char *cfg = "{\"representations\": [{\"layer\": 0, \"component\": \"block_input\", \"unit\": \"pos\", "
                      "\"max_number_of_units\": 1, \"low_rank_dimension\": 2}], "
                      "\"intervention_types\": \"LowRankRotatedSpaceIntervention\"}";
    ASSERT_EQ(cvene_config_parse(L.ctx, cfg, &T.cfg), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_dataset_new(L.ctx, &T.data), CVENE_OK);
    const int V = cvene_model_get_info(L.model).vocab_size;
    std::mt19937 rng(5);
    auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    for (int e = 0; e < kExamples; e++) {
        std::vector<int32_t> b(uni(4, 7)), s(uni(3, 6));
        for (auto &x : b) x = uni(0, V - 1);
        for (auto &x : s) x = uni(0, V - 1);
        int bp = uni(1, (int)b.size() - 1), sp = uni(0, (int)s.size() - 1);
        cvene_example x = {b.data(), (int)b.size(), s.data(), (int)s.size(), &bp, &sp, 1, uni(0, V - 1), -1};
        ASSERT_EQ(cvene_dataset_add(T.data, &x), CVENE_OK) << L.error();
    }
    cvene_train_params p = cvene_train_default_params();
    p.batch_size = kExamples;
    ASSERT_EQ(cvene_trainer_new(L.model, T.cfg, &p, &T.t), CVENE_OK) << L.error();
    tr_tensor *orig = tr_weights_find(train_weights(T.t, 0), kOriginal);
    const double live_loss = batch_loss(T, T.data);
    EXPECT_TRUE(train_live_rows(T.t));
    const std::vector<float> live_grad(orig->grad, orig->grad + orig->numel);
    train_full_rows(T.t);
    const double loss = batch_loss(T, T.data);
    EXPECT_FALSE(train_live_rows(T.t));
    EXPECT_NEAR(live_loss, loss, 1e-6 * std::fabs(loss));
    double mx = 0, err = 0;
    for (int64_t i = 0; i < orig->numel; i++) {
        mx = std::max(mx, (double)std::fabs(orig->grad[i]));
        err = std::max(err, (double)std::fabs(orig->grad[i] - live_grad[i]));
    }
    EXPECT_GT(mx, 0);
    EXPECT_LE(err, 1e-5 * mx) << model;
}

TEST(NeoxTrainer, LiveRowsAsEveryRow) {
    CVENE_SKIP_WITHOUT_DEVICE();
    live_vs_every_row("par_rot25");
    live_vs_every_row("seq_rot100");
}

// ---------------------------------------------------------------------------------------------
// NeoxTrainPass: what a training pass refuses, with a message naming it

TEST(NeoxTrainPass, Refuses) {
    CVENE_SKIP_WITHOUT_DEVICE();
    std::vector<int32_t> rows = {0, 5};
    {
        Loaded L(kNeox + "par_rot25/model", kTestDevice);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        Dev dev(L.ctx->be);
        float *x = dev.alloc<float>(2 * 3 * 64), *lg = dev.alloc<float>(2 * 96);
        model_train_pass tp = {0, x, 2, 3, nullptr, nullptr, rows.data(), 2, lg, nullptr, nullptr, nullptr};
        cvene_run_opts o{};
        o.site_fn = record, o.sites[CVENE_ATTENTION_WEIGHT] = 2;
        expect_msg(L.ctx, L.model->vt->train_forward(L.model, &tp, &o), CVENE_ERR_UNSUPPORTED,
                   {"attention_weight", "layer 1"});
        rows[1] = 6; // outside B * T
        expect_msg(L.ctx, L.model->vt->train_forward(L.model, &tp, nullptr), CVENE_ERR_INVALID_ARG,
                   {"loss row 1 = 6", "[0, 6)"});
        rows[1] = 5;
        std::vector<int32_t> pos = {0, 1, 2, 0, 1, (1 << 24) + 1};
        tp.pos = pos.data();
        expect_msg(L.ctx, L.model->vt->train_forward(L.model, &tp, nullptr), CVENE_ERR_INVALID_ARG,
                   {"position id 5", "16777217"});
        tp.pos = nullptr, tp.layer = 3;
        expect_msg(L.ctx, L.model->vt->train_forward(L.model, &tp, nullptr), CVENE_ERR_INVALID_ARG, {"layer 3"});
    }
    {
        Loaded L(kNeox + "par_rot25/model", kTestDevice, CVENE_BF16);
        ASSERT_EQ(L.status, CVENE_OK) << L.error();
        Dev dev(L.ctx->be);
        float *x = dev.alloc<float>(2 * 3 * 64), *lg = dev.alloc<float>(2 * 96);
        model_train_pass tp = {0, x, 2, 3, nullptr, nullptr, rows.data(), 2, lg, nullptr, nullptr, nullptr};
        expect_msg(L.ctx, L.model->vt->train_forward(L.model, &tp, nullptr), CVENE_ERR_UNSUPPORTED,
                   {"f32 only", "bf16"});
    }
}

} // namespace
