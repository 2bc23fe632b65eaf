// Regression tests for issue #18 ("Hardening"): one test per item the outside attack found,
// named Item<NN>_<what>, each failing on the code before its fix. The command-line items
// (2, 11, 12 and the CLI half of 5, 8 and 14) are in tests/cli/hardening.sh; items 7 and 13
// are also checked against pyvene (test_pyvene_parity's InputCases).
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cvene.h"
#include "test_util.h"
extern "C" {
#include "bindings/cli/cli.h"
#include "models/safetensors.h"
}

namespace fs = std::filesystem;

namespace {

const std::string kSmall = std::string(CVENE_FIXTURES) + "/gpt2/small/model";

struct Ctx {
    cvene_ctx *ctx = nullptr;
    Ctx() {
        char err[256];
        EXPECT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
    }
    ~Ctx() { cvene_ctx_free(ctx); }
};

std::string rep_with_partition(const std::string &part) {
    return "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": "
           "\"VanillaIntervention\", \"subspace_partition\": " + part + "}]}";
}

// Runs config + request on the small model; returns the status, logits in *out when OK.
cvene_status run(Loaded &L, const std::string &config, const std::string &request, std::vector<float> *out = nullptr) {
    cvene_config *c = nullptr;
    cvene_request *r = nullptr;
    cvene_result *res = nullptr;
    cvene_status st = cvene_config_parse(L.ctx, config.c_str(), &c);
    if (st == CVENE_OK) st = cvene_request_parse(L.ctx, request.c_str(), &r);
    if (st == CVENE_OK) st = cvene_run(L.model, c, r, &res);
    if (st == CVENE_OK && out) {
        int B, T, V;
        const float *lg = cvene_result_logits(res, &B, &T, &V);
        out->assign(lg, lg + (size_t)B * T * V);
    }
    cvene_result_free(res);
    cvene_request_free(r);
    cvene_config_free(c);
    return st;
}

const char *kRequest2 = "{\"base\": {\"input_ids\": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]}, "
                        "\"sources\": [{\"input_ids\": [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]}], "
                        "\"unit_locations\": {\"sources->base\": [[[[1], [2]]], [[[1], [3]]]]}";

} // namespace

// 1. subspace_partition sizes: summed in 64 bits and bounded before anything is allocated.
TEST(Issue18, Item01_PartitionSizesAreBounded) {
    Ctx c;
    for (int n : {215, 430}) { // overflowed a 32-bit sum, then wrapped it and overran the heap
        std::string part = "[";
        for (int k = 0; k < n; k++) part += std::string(k ? ", " : "") + "[0, 10000000]";
        cvene_config *cfg = nullptr;
        expect_msg(c.ctx, cvene_config_parse(c.ctx, rep_with_partition(part + "]").c_str(), &cfg), CVENE_ERR_FORMAT,
                   {"representations[0].subspace_partition[0]", "10000000", "0 <= a < b <= 1048576"});
        EXPECT_EQ(cfg, nullptr);
    }
    // each entry within the bound, the total over it
    std::string part = "[";
    for (int k = 0; k < 5; k++) part += std::string(k ? ", " : "") + "[0, 1048576]";
    cvene_config *cfg = nullptr;
    expect_msg(c.ctx, cvene_config_parse(c.ctx, rep_with_partition(part + "]").c_str(), &cfg), CVENE_ERR_FORMAT,
               {"more than 4194304 dimensions in all", "part 4"});
    // and a dimension the stream does not have is refused when it runs (the small model: 64 wide)
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    std::string req = std::string(kRequest2) + ", \"subspaces\": [[[1], [0]]]}";
    EXPECT_EQ(run(L, rep_with_partition("[[0, 8], [60, 70]]"), req), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(L.error()).find("dimension 64 is out of range [0, 64)"), std::string::npos) << L.error();
    std::vector<float> a, b;
    EXPECT_EQ(run(L, rep_with_partition("[[0, 8], [56, 64]]"), req, &a), CVENE_OK) << L.error();
    EXPECT_EQ(run(L, rep_with_partition("[[0, 1, 2, 3, 4, 5, 6, 7], [56, 57, 58, 59, 60, 61, 62, 63]]"), req, &b),
              CVENE_OK);
    EXPECT_EQ(a, b) << "a range and its dims listed out must be the same partition";
}

// 3. An empty partition entry is refused (to_json used to read past it).
TEST(Issue18, Item03_EmptyPartitionEntryRefused) {
    Ctx c;
    const char *bad = "{\"representations\":[[2,\"attention_output\",\"pos\",2,null,null,null,[[8],[]]]]}";
    cvene_config *cfg = nullptr;
    expect_msg(c.ctx, cvene_config_parse(c.ctx, bad, &cfg), CVENE_ERR_FORMAT,
               {"representations[0].subspace_partition[1] is empty"});
    expect_msg(c.ctx, cvene_config_parse(c.ctx, rep_with_partition("[[3, 3]]").c_str(), &cfg), CVENE_ERR_FORMAT,
               {"subspace_partition[0] = [3, 3]"});
    // the C API refuses an empty part too
    cvene_config *api = nullptr;
    ASSERT_EQ(cvene_config_new(c.ctx, CVENE_MODE_PARALLEL, &api), CVENE_OK);
    cvene_representation r = cvene_representation_default();
    int offs[3] = {0, 1, 1}, dims[1] = {8};
    r.n_partitions = 2, r.partition_offsets = offs, r.partition_dims = dims;
    expect_msg(c.ctx, cvene_config_add(api, &r), CVENE_ERR_INVALID_ARG, {"subspace_partition[1] is empty"});
    cvene_config_free(api);
    // a good partition round-trips through to_json
    ASSERT_EQ(cvene_config_parse(c.ctx, rep_with_partition("[[8], [0, 3], [5, 9, 11]]").c_str(), &cfg), CVENE_OK);
    char *json = nullptr;
    ASSERT_EQ(cvene_config_to_json(cfg, &json), CVENE_OK);
    EXPECT_NE(std::string(json).find("[5, 9, 11]"), std::string::npos) << json;
    cvene_free(json);
    cvene_config_free(cfg);
}

// 4. intervention_link_key is a label: a huge one costs nothing and means what key 0 means.
TEST(Issue18, Item04_LinkKeyIsALabelNotASize) {
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    auto cfg = [](const char *key) {
        return std::string("{\"representations\": [") +
               "{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"AdditionIntervention\", "
               "\"intervention_link_key\": " + key + "}, " +
               "{\"layer\": 1, \"component\": \"block_output\", \"intervention_type\": \"AdditionIntervention\", "
               "\"intervention_link_key\": " + key + "}]}";
    };
    const std::string req = "{\"base\": {\"input_ids\": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]}, "
                            "\"sources\": [{\"input_ids\": [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]}, "
                            "{\"input_ids\": [[21, 22, 23, 24, 25], [26, 27, 28, 29, 30]]}], "
                            "\"unit_locations\": {\"sources->base\": [[[[1], [2]], [[1], [2]]], "
                            "[[[1], [3]], [[2], [3]]]]}}";
    std::vector<float> small, huge;
    ASSERT_EQ(run(L, cfg("0"), req, &small), CVENE_OK) << L.error();
    ASSERT_EQ(run(L, cfg("999999999"), req, &huge), CVENE_OK) << L.error();
    EXPECT_EQ(small, huge);
}

// 5. A named pipe where a file is expected is refused at once instead of blocking forever (the
// suite has a ctest TIMEOUT, so a regression fails instead of hanging).
TEST(Issue18, Item05_NamedPipesAreRefused) {
    TmpDir d("hardening_fifo");
    fs::copy(kSmall + "/config.json", d.path + "/config.json");
    ASSERT_EQ(mkfifo((d.path + "/model.safetensors").c_str(), 0600), 0);
    Ctx c;
    cvene_model *m = nullptr;
    expect_msg(c.ctx, cvene_model_load(c.ctx, d.path.c_str(), &m), CVENE_ERR_IO,
               {"model.safetensors", "a named pipe", "not a regular file"});
    fs::remove(d.path + "/config.json");
    ASSERT_EQ(mkfifo((d.path + "/config.json").c_str(), 0600), 0);
    expect_msg(c.ctx, cvene_model_load(c.ctx, d.path.c_str(), &m), CVENE_ERR_IO, {"config.json", "a named pipe"});
    ASSERT_EQ(mkfifo((d.path + "/tokenizer.json").c_str(), 0600), 0);
    cvene_tokenizer *t = nullptr;
    expect_msg(c.ctx, cvene_tokenizer_load(c.ctx, d.path.c_str(), &t), CVENE_ERR_IO, {"tokenizer.json", "a named pipe"});
    EXPECT_EQ(m, nullptr);
    EXPECT_EQ(t, nullptr);
}

// 6. Hostile but valid sizes load in linear time: 200,000 tensors in one header (80,000 took
// 67 s with a linear lookup per name), and 50,000 added tokens over 400 KB of text (20,000 over
// 100 KB took 31 s). The suite's ctest TIMEOUT turns a return of the quadratic work into a
// failure; the test itself checks the results.
TEST(Issue18, Item06_ManyTensorsAndManyAddedTokens) {
    TmpDir d("hardening_many");
    const int n = 200000;
    std::string header = "{";
    for (int i = 0; i < n; i++)
        header += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[1]," +
                  "\"data_offsets\":[" + std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
    header += "}";
    std::string file(8, '\0');
    for (int k = 0; k < 8; k++) file[k] = (char)((uint64_t)header.size() >> (8 * k));
    file += header;
    for (int i = 0; i < n; i++) {
        float v = (float)i;
        file.append(reinterpret_cast<const char *>(&v), 4);
    }
    const std::string path = d.put("many.safetensors", file);
    Ctx c;
    st_archive a{};
    ASSERT_EQ(st_archive_add_file(c.ctx, &a, path.c_str()), CVENE_OK) << cvene_ctx_error(c.ctx);
    ASSERT_EQ(a.n_tensors, n);
    for (int i : {0, 1, 77777, n - 1}) {
        const st_tensor *t = st_archive_find(&a, ("t" + std::to_string(i)).c_str());
        ASSERT_NE(t, nullptr) << i;
        float v;
        memcpy(&v, t->data, 4);
        EXPECT_EQ(v, (float)i);
    }
    EXPECT_EQ(st_archive_find(&a, "t200000"), nullptr);
    st_archive_close(&a);

    // the demo tokenizer with 50,000 added tokens "<x0>" .. "<x49999>"
    cJSON *tok = cJSON_Parse(slurp(std::string(CVENE_ASSETS) + "/demo-gpt2/tokenizer.json").c_str());
    ASSERT_NE(tok, nullptr);
    cJSON *added = cJSON_GetObjectItem(tok, "added_tokens");
    const int base_id = 5000, n_added = 50000;
    for (int k = 0; k < n_added; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", base_id + k);
        cJSON_AddStringToObject(e, "content", ("<x" + std::to_string(k) + ">").c_str());
        cJSON_AddBoolToObject(e, "single_word", 0);
        cJSON_AddBoolToObject(e, "lstrip", 0);
        cJSON_AddBoolToObject(e, "rstrip", 0);
        cJSON_AddBoolToObject(e, "normalized", 0);
        cJSON_AddBoolToObject(e, "special", 1);
        cJSON_AddItemToArray(added, e);
    }
    char *txt = cJSON_PrintUnformatted(tok);
    cJSON_Delete(tok);
    d.put("tokenizer.json", txt);
    cJSON_free(txt);
    cvene_tokenizer *t = nullptr;
    ASSERT_EQ(cvene_tokenizer_load(c.ctx, d.path.c_str(), &t), CVENE_OK) << cvene_ctx_error(c.ctx);
    std::string text;
    std::vector<int32_t> want_added; // the added tokens in the text, in order
    for (int k = 0; text.size() < 400000; k++) {
        const int which = (k * 7919) % n_added;
        text += " The judge said <x" + std::to_string(which) + "> twice.";
        want_added.push_back(base_id + which);
    }
    int32_t *ids = nullptr;
    size_t n_ids = 0;
    ASSERT_EQ(cvene_tokenizer_encode(t, text.data(), text.size(), &ids, &n_ids), CVENE_OK);
    std::vector<int32_t> got_added;
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] >= base_id) got_added.push_back(ids[i]);
    EXPECT_EQ(got_added, want_added);
    char *back = nullptr;
    size_t back_len = 0;
    ASSERT_EQ(cvene_tokenizer_decode(t, ids, n_ids, &back, &back_len), CVENE_OK);
    EXPECT_EQ(std::string(back, back_len), text);
    cvene_free(back);
    cvene_free(ids);
    cvene_tokenizer_free(t);
}

// 7. Unknown keys anywhere in a request or a config are refused, naming the key (a misspelt
// "unit_location" silently patched the whole tensor). position_ids themselves: InputCases.
TEST(Issue18, Item07_UnknownKeysAreRefused) {
    Ctx c;
    cvene_request *r = nullptr;
    expect_msg(c.ctx,
               cvene_request_parse(c.ctx, "{\"base\": {\"input_ids\": [[1]]}, \"unit_location\": {\"base\": 0}}", &r),
               CVENE_ERR_FORMAT, {"unknown key \"unit_location\"", "unit_locations"});
    expect_msg(c.ctx, cvene_request_parse(c.ctx, "{\"base\": {\"input_ids\": [[1]], \"position_id\": [[0]]}}", &r),
               CVENE_ERR_FORMAT, {"base has unknown key \"position_id\"", "position_ids"});
    expect_msg(c.ctx,
               cvene_request_parse(c.ctx, "{\"base\": {\"input_ids\": [[1, 2]], \"position_ids\": [[0]]}}", &r),
               CVENE_ERR_FORMAT, {"base.position_ids is 1 x 1 but input_ids is 1 x 2"});
    EXPECT_EQ(r, nullptr);
    cvene_config *cfg = nullptr;
    expect_msg(c.ctx,
               cvene_config_parse(c.ctx, "{\"representations\": [{\"layer\": 0, \"subspace\": [[0, 3]]}]}", &cfg),
               CVENE_ERR_FORMAT, {"representations[0]: unknown key \"subspace\"", "subspace_partition"});
    expect_msg(c.ctx, cvene_config_parse(c.ctx, "{\"representation\": [{\"layer\": 0}]}", &cfg), CVENE_ERR_FORMAT,
               {"config: unknown key \"representation\"", "representations"});
    // what pyvene's save writes beside the representations is accepted
    ASSERT_EQ(cvene_config_parse(c.ctx,
                                 "{\"representations\": [[0, \"block_output\", \"pos\", 1, null, null, null, null, "
                                 "null, null, null, null, null, null]], \"intervention_types\": "
                                 "[\"<class 'pyvene.models.interventions.VanillaIntervention'>\"], \"mode\": "
                                 "\"parallel\", \"sorted_keys\": [\"k\"], \"intervention_dimensions\": [64], "
                                 "\"intervention_constant_sources\": [false], \"model_type\": \"None\", "
                                 "\"transformers_version\": \"4.46.3\", \"_name_or_path\": \"x\"}",
                                 &cfg),
              CVENE_OK)
        << cvene_ctx_error(c.ctx);
    cvene_config_free(cfg);
    // position ids out of the model's range name the request's own field
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const std::string v0 = "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\"}]}";
    EXPECT_EQ(run(L, v0, "{\"base\": {\"input_ids\": [[1, 2]], \"position_ids\": [[0, 32]]}, \"sources\": "
                         "[{\"input_ids\": [[3, 4]]}], \"unit_locations\": {\"sources->base\": 0}}"),
              CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(L.error()).find("base.position_ids[0][1] = 32 is outside [0, 32)"), std::string::npos)
        << L.error();
}

// 8. A damaged --resume file is refused with the path of the bad entry; nothing is taken from it.
TEST(Issue18, Item08_CorruptResumeFilesAreRefused) {
    cJSON *spec = cJSON_Parse("{\"model\": \"m\", \"layers\": [0, 1]}");
    auto read = [&](const std::string &scores, const std::string &extra, std::string *err) {
        std::string doc = "{\"sweep\": {\"model\": \"m\", \"layers\": [0, 1]}, \"scores\": " + scores + extra + "}";
        float sc[6];
        int done[2] = {7, 7};
        double bs = 9, ss = 9;
        char e[512] = "";
        int rc = cli_resume_read(doc.c_str(), "r.json", spec, 2, 3, sc, done, &bs, &ss, e, sizeof e);
        *err = e;
        if (rc != 0) {
            EXPECT_EQ(done[0] + done[1], 0) << "a refused file must leave nothing marked done";
        }
        return rc;
    };
    std::string err;
    const std::string scores_ok = ", \"base_score\": 0.5, \"source_score\": 0.25";
    EXPECT_EQ(read("[[1, 2, 3], null]", scores_ok + ", \"complete\": false", &err), 0) << err;
    struct Bad { std::string scores, extra, want; };
    const std::vector<Bad> bad = {
        {"[[\"1\", 2, 3], null]", scores_ok, "scores[0][0] = \"1\" is not a finite f32 number"},
        {"[[1, null, 3], null]", scores_ok, "scores[0][1] = null"},
        {"[[1, 2, true], null]", scores_ok, "scores[0][2] = true"},
        {"[[1, 2, {}], null]", scores_ok, "scores[0][2] = {}"},
        {"{\"0\": [1, 2, 3]}", scores_ok, "\"scores\" must be a list of 2 rows"},
        {"[[1, 2, 1e300], null]", scores_ok, "scores[0][2] = 1e+300 is not a finite f32 number"},
        {"[[1, 2, 3], [1, 2]]", scores_ok, "scores[1] must be null or a list of 3 numbers"},
        {"[[1, 2, 3], null]", ", \"base_score\": \"x\", \"source_score\": 0", "\"base_score\" = \"x\" must be a finite"},
        {"[[1, 2, 3], null]", ", \"source_score\": 0", "\"base_score\" = (missing)"},
        {"[[1, 2, 3], null]", scores_ok + ", \"complete\": true", "\"complete\" is true but 1 of 2 rows"},
        {"[[1, 2, 3], null]", scores_ok + ", \"extra\": 1", "unknown key \"extra\""},
    };
    for (const Bad &b : bad) {
        EXPECT_NE(read(b.scores, b.extra, &err), 0) << b.scores << b.extra;
        EXPECT_NE(err.find("r.json: "), std::string::npos) << err;
        EXPECT_NE(err.find(b.want), std::string::npos) << "\"" << b.want << "\" not in: " << err;
    }
    cJSON_Delete(spec);
}

// 9. A non-finite result is an error naming where it first appeared (noise_level 1e308 gave
// NaN logits with status 0).
TEST(Issue18, Item09_NonFiniteResultsNameTheirSite) {
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const std::string cfg = "{\"representations\": [{\"layer\": 1, \"component\": \"block_input\", "
                            "\"intervention_type\": \"NoiseIntervention\", \"noise_level\": 1e308}]}";
    const std::string req = "{\"base\": {\"input_ids\": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]}, "
                            "\"unit_locations\": {\"base\": [[[1], [2]]]}}";
    EXPECT_EQ(run(L, cfg, req), CVENE_ERR_NUMERIC);
    const std::string msg = L.error();
    for (const char *p : {"non-finite value (infinity)", "block_input of layer 1", "the base example 0", "position 1",
                          "representations[0] (NoiseIntervention)"})
        EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
    // the same with a finite level runs
    std::string ok = cfg;
    ok.replace(ok.find("1e308"), 5, "0.5");
    EXPECT_EQ(run(L, ok, req), CVENE_OK) << L.error();
    // two Additions of a finite constant (3e38 each) that overflow together at one site
    std::string big;
    for (int i = 0; i < 64; i++) big += (i ? ", " : "") + std::string("3e38");
    const std::string add1 = "{\"layer\": 0, \"component\": \"mlp_output\", \"intervention_type\": "
                             "\"AdditionIntervention\", \"source_representation\": [" + big + "]}";
    EXPECT_EQ(run(L, "{\"representations\": [" + add1 + "]}",
                  "{\"base\": {\"input_ids\": [[1, 2, 3]]}, \"unit_locations\": {\"base\": 2}}"),
              CVENE_OK)
        << "one addition stays finite: " << L.error();
    EXPECT_EQ(run(L, "{\"representations\": [" + add1 + ", " + add1 + "]}",
                  "{\"base\": {\"input_ids\": [[1, 2, 3]]}, \"unit_locations\": {\"base\": 2}}"),
              CVENE_ERR_NUMERIC);
    EXPECT_NE(std::string(L.error()).find("mlp_output of layer 0, the base example 0, position 2: after "
                                          "representations[1] (AdditionIntervention)"),
              std::string::npos)
        << L.error();
}

// 10. A shard holding a tensor the index does not list is refused.
TEST(Issue18, Item10_ShardsHoldOnlyIndexedTensors) {
    TmpDir d("hardening_shards");
    const std::string src = std::string(CVENE_FIXTURES) + "/gpt2/sharded/model";
    for (const auto &e : fs::directory_iterator(src)) fs::copy(e.path(), d.path + "/" + e.path().filename().string());
    cJSON *idx = cJSON_Parse(slurp(d.path + "/model.safetensors.index.json").c_str());
    ASSERT_NE(idx, nullptr);
    cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");
    const std::string dropped = wm->child->string;
    cJSON_DeleteItemFromObject(wm, dropped.c_str());
    char *txt = cJSON_Print(idx);
    d.put("model.safetensors.index.json", txt);
    cJSON_free(txt);
    cJSON_Delete(idx);
    Ctx c;
    cvene_model *m = nullptr;
    expect_msg(c.ctx, cvene_model_load(c.ctx, d.path.c_str(), &m), CVENE_ERR_FORMAT,
               {"holds tensor '" + dropped + "'", "does not list"});
    EXPECT_EQ(m, nullptr);
}

// 13. A source of batch 1 is shared by every base example (pyvene's broadcast; checked against
// pyvene in InputCases): here, that it equals the same source repeated per example.
TEST(Issue18, Item13_BatchOneSourceIsShared) {
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const std::string cfg = "{\"representations\": [{\"layer\": 0, \"component\": \"attention_output\"}]}";
    std::vector<float> shared, repeated;
    ASSERT_EQ(run(L, cfg,
                  "{\"base\": {\"input_ids\": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]}, \"sources\": "
                  "[{\"input_ids\": [[13, 14, 15]]}], \"unit_locations\": {\"sources->base\": [[[[2]]], "
                  "[[[1], [3], [0]]]]}}",
                  &shared),
              CVENE_OK)
        << L.error();
    ASSERT_EQ(run(L, cfg,
                  "{\"base\": {\"input_ids\": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]}, \"sources\": "
                  "[{\"input_ids\": [[13, 14, 15], [13, 14, 15], [13, 14, 15]]}], \"unit_locations\": "
                  "{\"sources->base\": [[[[2], [2], [2]]], [[[1], [3], [0]]]]}}",
                  &repeated),
              CVENE_OK)
        << L.error();
    ASSERT_EQ(shared.size(), repeated.size());
    double worst = 0; // one source row vs three: the GEMMs may round the rows differently
    for (size_t i = 0; i < shared.size(); i++) worst = std::max(worst, (double)std::fabs(shared[i] - repeated[i]));
    EXPECT_LE(worst, 1e-5);
}

// 14. Messages name what the user wrote: the request's own rows, why sizes differ, what a
// file is.
TEST(Issue18, Item14_MessagesNameWhatTheUserWrote) {
    Loaded L(kSmall);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    const std::string v0 = "{\"representations\": [{\"layer\": 0, \"component\": \"block_output\"}]}";
    // a bad id in the base's first row used to be reported as the packed batch's row 2
    EXPECT_EQ(run(L, v0, "{\"base\": {\"input_ids\": [[1, 999]]}, \"sources\": [{\"input_ids\": [[1, 2]]}], "
                         "\"unit_locations\": {\"sources->base\": 0}}"),
              CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(L.error()).find("base.input_ids[0][1] = 999 is outside the vocabulary [0, 320)"),
              std::string::npos)
        << L.error();
    EXPECT_EQ(run(L, v0, "{\"base\": {\"input_ids\": [[1, 2]]}, \"sources\": [{\"input_ids\": [[1, -3]]}], "
                         "\"unit_locations\": {\"sources->base\": 0}}"),
              CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(L.error()).find("sources[0].input_ids[0][1] = -3"), std::string::npos) << L.error();
    // unit h spans every position: the source must have the base's length, and the message says so
    const std::string h = "{\"representations\": [{\"layer\": 0, \"component\": \"head_query_output\", \"unit\": "
                          "\"h\"}]}";
    EXPECT_EQ(run(L, h, "{\"base\": {\"input_ids\": [[1, 2, 3]]}, \"sources\": [{\"input_ids\": [[1, 2]]}], "
                        "\"unit_locations\": {\"sources->base\": [[[[0]]], [[[1]]]]}}"),
              CVENE_ERR_INVALID_ARG);
    EXPECT_NE(std::string(L.error()).find("the source needs the base's length: the source has 2 tokens, the base 3"),
              std::string::npos)
        << L.error();
    // a symlink loop is not "no model.safetensors"
    TmpDir d("hardening_loop");
    fs::copy(kSmall + "/config.json", d.path + "/config.json");
    fs::create_symlink(d.path + "/model.safetensors", d.path + "/model.safetensors");
    Ctx c;
    cvene_model *m = nullptr;
    expect_msg(c.ctx, cvene_model_load(c.ctx, d.path.c_str(), &m), CVENE_ERR_IO, {"model.safetensors", "symlink loop"});
    // a rotary base beyond f32 says why
    TmpDir n("hardening_rotary");
    const std::string neox = std::string(CVENE_FIXTURES) + "/neox/par_rot25/model";
    cJSON *cfg = cJSON_Parse(slurp(neox + "/config.json").c_str());
    cJSON_ReplaceItemInObject(cfg, "rotary_emb_base", cJSON_CreateNumber(1e308));
    char *txt = cJSON_Print(cfg);
    n.put("config.json", txt);
    cJSON_free(txt);
    cJSON_Delete(cfg);
    fs::copy(neox + "/model.safetensors", n.path + "/model.safetensors");
    expect_msg(c.ctx, cvene_model_load(c.ctx, n.path.c_str(), &m), CVENE_ERR_FORMAT,
               {"rotary_emb_base = 1e+308 must be in (0, 3e38)", "float32"});
}
