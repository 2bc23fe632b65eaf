// Trained interventions in cvene_run (cvene_config_load_weights, engine/trained.c) against pyvene:
// each tests/fixtures/training/model case is a pyvene IntervenableModel on GPT-2 small holding one
// trainable intervention at block_output of layer 1, saved with IntervenableModel.save (its
// intkey_*.bin, converted tensor for tensor to the .safetensors beside it), and the logits of its
// forward on the case's inputs (expected.safetensors "logits", (4, 6, 320)).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_device.h"
#include "test_util.h"

namespace {

const std::string kDir = std::string(CVENE_FIXTURES) + "/training/model/";
const std::string kModel = std::string(CVENE_FIXTURES) + "/gpt2/small/model";

// The case's inputs.json holds the generator's notes (labels, loss, ...) beside pyvene's
// arguments: the request is base, sources and unit_locations alone.
std::string request_json(const std::string &dir) {
    cJSON *in = cJSON_Parse(slurp(dir + "/inputs.json").c_str());
    EXPECT_NE(in, nullptr);
    cJSON *req = cJSON_CreateObject();
    for (const char *k : {"base", "sources", "unit_locations"}) {
        const cJSON *v = cJSON_GetObjectItem(in, k);
        if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(req, k, cJSON_Duplicate(v, 1));
    }
    char *s = cJSON_PrintUnformatted(req);
    std::string out(s);
    free(s), cJSON_Delete(req), cJSON_Delete(in);
    return out;
}

double mx_of(const std::vector<float> &v) {
    double mx = 0;
    for (float x : v) mx = std::max(mx, (double)std::fabs(x));
    return mx;
}

class TrainedRun : public ::testing::TestWithParam<std::string> {};

// cvene_run with pyvene's saved weights gives pyvene's logits. Tolerance 1e-5 of the logits'
// largest magnitude: f32 throughout on both sides, the same bound the model cases' losses meet;
// the intervention's rotation is materialised in double here and in f32 by torch (1e-7 apart).
TEST_P(TrainedRun, LogitsMatchPyvene) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string dir = kDir + GetParam();
    Loaded L(kModel, kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_config *c = nullptr;
    ASSERT_EQ(cvene_config_parse(L.ctx, slurp(dir + "/config.json").c_str(), &c), CVENE_OK) << L.error();
    cvene_request *r = nullptr;
    ASSERT_EQ(cvene_request_parse(L.ctx, request_json(dir).c_str(), &r), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_config_load_weights(c, dir.c_str()), CVENE_OK) << L.error();
    Archive ar(dir + "/expected.safetensors");
    std::vector<int64_t> shape;
    const std::vector<float> want = ar.get<float>("logits", &shape);
    ASSERT_EQ(shape.size(), 3u);
    for (int pass = 0; pass < 2; pass++) { // the second run reuses the state the first built
        cvene_result *res = nullptr;
        ASSERT_EQ(cvene_run(L.model, c, r, &res), CVENE_OK) << L.error();
        int B = 0, T = 0, V = 0;
        const float *got = cvene_result_logits(res, &B, &T, &V);
        ASSERT_EQ(B, shape[0]);
        ASSERT_EQ(T, shape[1]);
        ASSERT_EQ(V, shape[2]);
        double mx = 0, err = 0;
        for (size_t k = 0; k < want.size(); k++) {
            mx = std::max(mx, (double)std::fabs(want[k]));
            err = std::max(err, std::isfinite(got[k]) ? std::fabs((double)got[k] - want[k]) : INFINITY);
        }
        EXPECT_LE(err, 1e-5 * mx) << "pass " << pass << ": max |cvene - pyvene| " << err << " of " << mx;
        cvene_result_free(res);
    }
    // and the intervention is not a no-op: the model's own logits differ from pyvene's intervened ones
    cvene_request_set_output_original(r, 1);
    cvene_result *res = nullptr;
    ASSERT_EQ(cvene_run(L.model, c, r, &res), CVENE_OK) << L.error();
    const float *orig = cvene_result_original_logits(res);
    ASSERT_NE(orig, nullptr);
    double diff = 0;
    for (size_t k = 0; k < want.size(); k++) diff = std::max(diff, (double)std::fabs(orig[k] - want[k]));
    EXPECT_GT(diff, 1e-3 * mx_of(want)) << "the intervention changed nothing this test could see";
    cvene_result_free(res);
    cvene_request_free(r), cvene_config_free(c);
}

INSTANTIATE_TEST_SUITE_P(Cases, TrainedRun,
                         ::testing::Values("das_rotated_l1", "das_lowrank_r1_l1", "boundless_l1", "loreft_r4_l1"));

// A trainable config without weights, a directory without the file, a file with another type's
// tensors: each refused, naming the representation and what to do; a failed load keeps the
// weights loaded before.
TEST(TrainedRunInput, RefusalsNameTheirCause) {
    CVENE_SKIP_WITHOUT_DEVICE();
    const std::string dir = kDir + "das_lowrank_r1_l1";
    Loaded L(kModel, kTestDevice);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_config *c = nullptr;
    ASSERT_EQ(cvene_config_parse(L.ctx, slurp(dir + "/config.json").c_str(), &c), CVENE_OK) << L.error();
    cvene_request *r = nullptr;
    ASSERT_EQ(cvene_request_parse(L.ctx, request_json(dir).c_str(), &r), CVENE_OK) << L.error();
    cvene_result *res = nullptr;
    expect_msg(L.ctx, cvene_run(L.model, c, r, &res), CVENE_ERR_INVALID_ARG,
               {"representations[0]", "LowRankRotatedSpaceIntervention", "no weights", "--weights"});
    EXPECT_EQ(res, nullptr);

    TmpDir empty("trained_run_empty");
    expect_msg(L.ctx, cvene_config_load_weights(c, empty.path.c_str()), CVENE_ERR_IO,
               {"representations[0]", "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.safetensors",
                "convert_pyvene_weights.py"});

    cvene_config *none = nullptr;
    ASSERT_EQ(cvene_config_parse(L.ctx, "{\"representations\": [[0, \"block_output\", \"pos\", 1]]}", &none), CVENE_OK)
        << L.error();
    expect_msg(L.ctx, cvene_config_load_weights(none, dir.c_str()), CVENE_ERR_INVALID_ARG, {"no trainable"});
    cvene_config_free(none);

    // LoReFT's file under a LowRank config: found, but its tensors are not LowRank's (refused when
    // the run knows the widths), and the run fails without a result
    TmpDir foreign("trained_run_foreign");
    std::filesystem::copy_file(kDir + "loreft_r4_l1/intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.safetensors",
                               foreign.path + "/intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.safetensors");
    ASSERT_EQ(cvene_config_load_weights(c, foreign.path.c_str()), CVENE_OK) << L.error();
    const cvene_status st = cvene_run(L.model, c, r, &res);
    EXPECT_NE(st, CVENE_OK);
    EXPECT_NE(std::string(cvene_ctx_error(L.ctx)).find("not in a LowRankRotatedSpaceIntervention's state dict"), std::string::npos) << cvene_ctx_error(L.ctx);
    EXPECT_EQ(res, nullptr);

    // the right file again: the run works
    ASSERT_EQ(cvene_config_load_weights(c, dir.c_str()), CVENE_OK) << L.error();
    ASSERT_EQ(cvene_run(L.model, c, r, &res), CVENE_OK) << L.error();
    cvene_result_free(res);
    cvene_request_free(r), cvene_config_free(c);
}

} // namespace
