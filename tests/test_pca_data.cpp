// cvene_trainer_fit_pca: a PCARotatedSpace basis fitted to a dataset's base activations at the
// intervention's site, against transformers' hidden states and a numpy PCA of them
// (tools/make_pca_fixture.py: the demo model, block_output of layer 2, 48 examples of the DAS
// colour task at their base positions).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"

namespace {

const std::string kFixture = std::string(CVENE_FIXTURES) + "/training/pca_demo.safetensors";

struct Fitted {
    std::vector<float> mean, std, comps;
};

// The trainer's PCA tensors after cvene_trainer_fit_pca on the fixture's examples, read back
// through cvene_trainer_save (pyvene's state dict names).
void fit(const Archive &ar, Fitted *out, int n_components) {
    Loaded L(std::string(CVENE_ASSETS) + "/demo-gpt2", kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    std::vector<int64_t> shape;
    const auto ids = ar.get<int32_t>("ids", &shape);
    const auto lens = ar.get<int32_t>("lens"), pos = ar.get<int32_t>("pos");
    const int N = (int)shape[0], T = (int)shape[1];
    cvene_dataset *d = nullptr;
    ASSERT_EQ(cvene_dataset_new(L.ctx, &d), CVENE_OK);
    for (int e = 0; e < N; e++) {
        int p = pos[e];
        cvene_example ex = {ids.data() + (size_t)e * T, lens[e], ids.data() + (size_t)e * T, lens[e], &p, &p, 1, 0,
                            lens[e] - 1};
        ASSERT_EQ(cvene_dataset_add(d, &ex), CVENE_OK) << L.error();
    }
    cvene_config *c = nullptr;
    ASSERT_EQ(cvene_config_parse(L.ctx,
                                 "{\"representations\": [{\"layer\": 2, \"component\": \"block_output\", \"unit\": "
                                 "\"pos\", \"intervention_type\": \"PCARotatedSpaceIntervention\"}]}",
                                 &c),
              CVENE_OK)
        << L.error();
    cvene_train_params p = cvene_train_default_params();
    cvene_trainer *t = nullptr;
    ASSERT_EQ(cvene_trainer_new(L.model, c, &p, &t), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_trainer_fit_pca(t, 0, d, n_components), CVENE_OK) << L.error();
    TmpDir dir("pca_data");
    ASSERT_EQ(cvene_trainer_save(t, dir.path.c_str()), CVENE_OK) << L.error();
    Archive got(dir.path + "/intkey_layer_2_comp_block_output_unit_pos_nunit_1#0.safetensors");
    out->mean = got.get<float>("pca_mean");
    out->std = got.get<float>("pca_std");
    out->comps = got.get<float>("pca_components");
    // bad input: a type that is not a PCA, an index out of range
    cvene_trainer_free(t);
    cvene_config_free(c);
    ASSERT_EQ(cvene_config_parse(L.ctx,
                                 "{\"representations\": [{\"layer\": 2, \"component\": \"block_output\", \"unit\": "
                                 "\"pos\", \"intervention_type\": \"LowRankRotatedSpaceIntervention\", "
                                 "\"low_rank_dimension\": 2}]}",
                                 &c),
              CVENE_OK)
        << L.error();
    ASSERT_EQ(cvene_trainer_new(L.model, c, &p, &t), CVENE_OK) << L.error();
    expect_msg(L.ctx, cvene_trainer_fit_pca(t, 0, d, 0), CVENE_ERR_INVALID_ARG,
               {"representations[0]", "LowRankRotatedSpaceIntervention", "not a PCARotatedSpaceIntervention"});
    expect_msg(L.ctx, cvene_trainer_fit_pca(t, 1, d, 0), CVENE_ERR_INVALID_ARG, {"intervention 1 is out of range"});
    cvene_trainer_free(t);
    cvene_config_free(c);
    cvene_dataset_free(d);
}

// mean and std: the site's activations at the right positions (1e-5 relative: f32 forwards on
// both sides, summed in double); components: the leading ones whose eigenvalue stands apart from
// its neighbours (relative gap > 5%, where an eigenvector is well determined), each within 1e-3
// of numpy's (a component's error is about f32 noise / gap).
TEST(PcaFromData, MatchesNumpyOnTransformersActivations) {
    CVENE_SKIP_WITHOUT_DEVICE();
    Archive ar(kFixture);
    Fitted f;
    fit(ar, &f, 0);
    const auto mean = ar.get<float>("pca_mean"), sd = ar.get<float>("pca_std");
    const auto comps = ar.get<float>("pca_components");
    const auto ev = ar.get<double>("eigenvalues");
    const size_t D = mean.size();
    ASSERT_EQ(f.mean.size(), D);
    ASSERT_EQ(f.comps.size(), std::min<size_t>(48, D) * D) << "n_components 0: min(examples, width)";
    double mx = 0, err = 0;
    for (size_t i = 0; i < D; i++) mx = std::max(mx, (double)std::fabs(mean[i])), err = std::max(err, (double)std::fabs(f.mean[i] - mean[i]));
    EXPECT_LE(err, 1e-5 * mx) << "pca_mean";
    mx = 0, err = 0;
    for (size_t i = 0; i < D; i++) mx = std::max(mx, (double)sd[i]), err = std::max(err, (double)std::fabs(f.std[i] - sd[i]));
    EXPECT_LE(err, 1e-5 * mx) << "pca_std";
    int checked = 0;
    for (size_t k = 0; k + 1 < ev.size() && k < 8; k++) {
        const double gap_prev = k ? (ev[k - 1] - ev[k]) / ev[k - 1] : 1.0, gap_next = (ev[k] - ev[k + 1]) / ev[k];
        if (gap_prev < 0.05 || gap_next < 0.05) continue;
        double e = 0;
        for (size_t i = 0; i < D; i++) e = std::max(e, (double)std::fabs(f.comps[k * D + i] - comps[k * D + i]));
        EXPECT_LE(e, 1e-3) << "component " << k << " (eigenvalue " << ev[k] << ")";
        checked++;
    }
    EXPECT_GE(checked, 2) << "too few well-separated components to check";
}

} // namespace
