// Shared helpers for the GoogleTest suites.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>
#include <cjson/cJSON.h>
#include <unistd.h>

#include "cvene.h"
extern "C" {
#include "models/safetensors.h"
}

// A context + model pair freed on scope exit.
struct Loaded {
    cvene_ctx *ctx = nullptr;
    cvene_model *model = nullptr;
    cvene_status status = CVENE_OK;
    explicit Loaded(const std::string &dir, cvene_device dev = CVENE_DEVICE_CPU, cvene_dtype compute = CVENE_F32,
                    cvene_dtype activations = CVENE_F32) {
        cvene_ctx_params p = cvene_ctx_default_params();
        p.device = dev;
        p.compute_dtype = compute;
        p.activation_dtype = activations;
        char err[512];
        status = cvene_ctx_new(&p, &ctx, err, sizeof err);
        if (status == CVENE_OK) status = cvene_model_load(ctx, dir.c_str(), &model);
    }
    ~Loaded() {
        cvene_model_free(model);
        cvene_ctx_free(ctx);
    }
    std::string error() const { return ctx ? cvene_ctx_error(ctx) : "no context"; }
};

// A safetensors file opened with the engine's reader (validated independently in test_loader).
struct Archive {
    st_archive a{};
    cvene_ctx *ctx = nullptr;
    explicit Archive(const std::string &path) {
        char err[256];
        cvene_ctx_new(nullptr, &ctx, err, sizeof err);
        if (st_archive_add_file(ctx, &a, path.c_str()) != CVENE_OK)
            ADD_FAILURE() << cvene_ctx_error(ctx);
    }
    ~Archive() {
        st_archive_close(&a);
        cvene_ctx_free(ctx);
    }
    const st_tensor *find(const std::string &name) const { return st_archive_find(&a, name.c_str()); }
    template <class T> std::vector<T> get(const std::string &name, std::vector<int64_t> *shape = nullptr) const {
        const st_tensor *t = find(name);
        if (!t) {
            ADD_FAILURE() << "reference tensor missing: " << name;
            return {};
        }
        if (shape) shape->assign(t->shape, t->shape + t->ndim);
        std::vector<T> v(t->nbytes / sizeof(T));
        std::memcpy(v.data(), t->data, t->nbytes);
        return v;
    }
};

// logits_to_keep against transformers' full logits in a fixture's reference.safetensors:
// every kept position (rows b >= logits_row0, positions t >= T - N, real query tokens)
// must match the reference row within tol of the largest reference magnitude, for
// N in {1, 3, T}, logits_row0 in {0, B - 1}, with no site (the last block then runs the
// kept positions only) and with a site on the last layer (it runs them all). N outside
// [0, T] must fail naming the field and leave the caller's buffer untouched.
inline std::string slurp(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A pyvene case's inputs.json as a request: without the "model" key the fixture generator adds
// (the name of the fixture model the case runs on), which is not part of a request.
inline std::string case_inputs(const std::string &case_dir) {
    cJSON *j = cJSON_Parse(slurp(case_dir + "/inputs.json").c_str());
    if (!j) return "";
    cJSON_DeleteItemFromObjectCaseSensitive(j, "model");
    char *txt = cJSON_PrintUnformatted(j);
    std::string out = txt ? txt : "";
    cJSON_free(txt);
    cJSON_Delete(j);
    return out;
}

// The fixture model a pyvene case runs on (its inputs.json's "model").
inline std::string case_model(const std::string &case_dir) {
    cJSON *j = cJSON_Parse(slurp(case_dir + "/inputs.json").c_str());
    const cJSON *m = j ? cJSON_GetObjectItem(j, "model") : nullptr;
    std::string out = cJSON_IsString(m) ? m->valuestring : "";
    cJSON_Delete(j);
    return out;
}

inline int noop_site(void *, cvene_component, int, cvene_tensor_view *) { return 0; }

// Inputs of reference case k ("case<k>." entries): ids (B, T), attention mask, and position
// ids when the case has them (else empty). False when there is no such case.
struct RefCase {
    std::vector<int32_t> ids, mask, pos;
    int B = 0, T = 0;
};
inline bool read_ref_case(const Archive &ref, int k, RefCase *c) {
    const std::string pre = "case" + std::to_string(k) + ".";
    if (!ref.find(pre + "input_ids")) return false;
    std::vector<int64_t> ishape;
    c->ids = ref.get<int32_t>(pre + "input_ids", &ishape);
    c->mask = ref.get<int32_t>(pre + "attention_mask");
    c->pos.clear();
    if (ref.find(pre + "position_ids")) c->pos = ref.get<int32_t>(pre + "position_ids");
    c->B = (int)ishape[0], c->T = (int)ishape[1];
    return true;
}

inline void expect_logits_to_keep_match(cvene_ctx *ctx, cvene_model *m, const Archive &ref, double tol) {
    const cvene_model_info info = cvene_model_get_info(m);
    const int V = info.vocab_size;
    int checked = 0;
    RefCase rc;
    for (int k = 0; read_ref_case(ref, k, &rc); k++) {
        const std::string pre = "case" + std::to_string(k) + ".";
        const std::vector<int32_t> &ids = rc.ids, &mask = rc.mask, &pos = rc.pos;
        auto want = ref.get<float>(pre + "logits");
        const int B = rc.B, T = rc.T;
        std::vector<int> keeps = {1, std::min(3, T), T};
        keeps.erase(std::unique(keeps.begin(), keeps.end()), keeps.end());
        for (int N : keeps)
            for (int row0 : {0, B - 1})
                for (int site : {0, 1}) {
                    std::vector<float> got((size_t)(B - row0) * N * V, NAN); // unwritten rows stay NaN
                    cvene_run_opts o{};
                    o.attention_mask = mask.data();
                    o.position_ids = pos.empty() ? nullptr : pos.data();
                    o.logits = got.data();
                    o.logits_row0 = row0;
                    o.logits_to_keep = N;
                    if (site) o.site_fn = noop_site, o.sites[CVENE_BLOCK_OUTPUT] = 1ull << (info.n_layer - 1);
                    const std::string tag = pre + " N=" + std::to_string(N) + " row0=" + std::to_string(row0) +
                                            " site=" + std::to_string(site);
                    ASSERT_EQ(cvene_forward(m, ids.data(), B, T, &o), CVENE_OK) << tag;
                    double mx = 0, err = 0;
                    for (int b = row0; b < B; b++)
                        for (int i = 0; i < N; i++) {
                            const int t = T - N + i;
                            if (!mask[(size_t)b * T + t]) continue; // padding queries: transformers' rows are arbitrary
                            const float *g = &got[((size_t)(b - row0) * N + i) * V];
                            const float *w = &want[((size_t)b * T + t) * V];
                            for (int v = 0; v < V; v++) {
                                mx = std::max(mx, (double)std::fabs(w[v]));
                                const double e = std::fabs((double)g[v] - w[v]);
                                err = std::isnan(e) ? INFINITY : std::max(err, e);
                            }
                            checked++;
                        }
                    EXPECT_LE(err / std::max(mx, 1e-30), tol) << tag;
                }
        for (int bad : {-1, T + 1}) {
            std::vector<float> buf((size_t)B * T * V, 7.0f);
            cvene_run_opts o{};
            o.logits = buf.data();
            o.logits_to_keep = bad;
            EXPECT_EQ(cvene_forward(m, ids.data(), B, T, &o), CVENE_ERR_INVALID_ARG) << "logits_to_keep " << bad;
            EXPECT_NE(std::string(cvene_ctx_error(ctx)).find("logits_to_keep"), std::string::npos)
                << cvene_ctx_error(ctx);
            EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](float x) { return x == 7.0f; }));
        }
    }
    EXPECT_GT(checked, 0);
}

#ifdef CVENE_TEST_TMP
// A fresh directory under the test scratch space, removed on scope exit.
struct TmpDir {
    std::string path;
    explicit TmpDir(const std::string &name) {
        path = std::string(CVENE_TEST_TMP) + "/" + name + "_" + std::to_string(getpid());
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~TmpDir() { std::filesystem::remove_all(path); }
    std::string put(const std::string &name, const std::string &bytes) const {
        std::ofstream(path + "/" + name, std::ios::binary) << bytes;
        return path + "/" + name;
    }
};
#endif

// The call failed with want and its message holds every part.
inline void expect_msg(cvene_ctx *ctx, cvene_status got, cvene_status want, std::initializer_list<std::string> parts) {
    const std::string msg = cvene_ctx_error(ctx);
    EXPECT_EQ(got, want) << cvene_status_name(got) << ": " << msg;
    for (const std::string &p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
}
