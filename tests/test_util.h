// Shared helpers for the GoogleTest suites.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cvene.h"
extern "C" {
#include "models/safetensors.h"
}

// A context + model pair freed on scope exit.
struct Loaded {
    cvene_ctx *ctx = nullptr;
    cvene_model *model = nullptr;
    cvene_status status = CVENE_OK;
    explicit Loaded(const std::string &dir, cvene_device dev = CVENE_DEVICE_CPU, cvene_dtype compute = CVENE_F32) {
        cvene_ctx_params p = cvene_ctx_default_params();
        p.device = dev;
        p.compute_dtype = compute;
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
