// Loading and input validation: safetensors files, sharded indexes, config.json and
// cvene_forward's argument checks. Every input is written at run time into a fresh
// directory under CVENE_TEST_TMP. Every bad input must return the expected status,
// leave the model pointer NULL (or the archive as it was) and name the culprit
// (file, field, tensor, value) in cvene_ctx_error.
#include <unistd.h>

#include <cjson/cJSON.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <tuple>
#include <utility>

#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::AssertionFailure;
using ::testing::AssertionResult;
using ::testing::AssertionSuccess;

namespace {

const std::string kSmall = std::string(CVENE_FIXTURES) + "/gpt2/small/model";
const std::string kSharded = std::string(CVENE_FIXTURES) + "/gpt2/sharded/model";

// ---- files ------------------------------------------------------------------

std::string read_bytes(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    EXPECT_TRUE(f.good()) << "cannot read " << path;
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string &path, const std::string &bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), (std::streamsize)bytes.size());
    ASSERT_TRUE(f.good()) << "cannot write " << path;
}

// A safetensors file: u64 little-endian header length, the header, the data region.
std::string st_raw_len(uint64_t hlen, const std::string &header, const std::string &data = "") {
    std::string out(8, '\0');
    for (int i = 0; i < 8; i++) out[i] = (char)((hlen >> (8 * i)) & 0xff);
    return out + header + data;
}
std::string st_raw(const std::string &header, const std::string &data = "") {
    return st_raw_len(header.size(), header, data);
}

// One header entry, fields as JSON text (nullptr leaves the field out).
std::string entry(const char *dtype, const char *shape, const char *offsets) {
    std::string s = "{";
    auto field = [&](const char *k, const char *v) {
        if (!v) return;
        if (s.size() > 1) s += ", ";
        s += std::string("\"") + k + "\": " + v;
    };
    field("dtype", dtype);
    field("shape", shape);
    field("data_offsets", offsets);
    return s + "}";
}

template <class T> std::string bytes_of(const std::vector<T> &v) {
    return std::string(reinterpret_cast<const char *>(v.data()), v.size() * sizeof(T));
}

// A well-formed file: tensors laid out in order, header padded with spaces to a
// multiple of 8 as the reference writer does.
struct StEntry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string data;
};

std::string st_build(const std::vector<StEntry> &ts, const std::string &metadata = "") {
    std::string h = "{", data;
    if (!metadata.empty()) h += "\"__metadata__\": " + metadata;
    for (const auto &t : ts) {
        std::string shape = "[";
        for (size_t d = 0; d < t.shape.size(); d++) shape += (d ? ", " : "") + std::to_string(t.shape[d]);
        shape += "]";
        std::string offs = "[" + std::to_string(data.size()) + ", " +
                           std::to_string(data.size() + t.data.size()) + "]";
        h += (h.size() > 1 ? ", \"" : "\"") + t.name + "\": " +
             entry(("\"" + t.dtype + "\"").c_str(), shape.c_str(), offs.c_str());
        data += t.data;
    }
    h += "}";
    while (h.size() % 8) h += ' ';
    return st_raw(h, data);
}

// Every tensor of a real checkpoint, for rewriting it with changes.
std::vector<StEntry> entries_of(const std::string &path) {
    cvene_ctx *ctx = nullptr;
    char err[256];
    EXPECT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
    st_archive a{};
    EXPECT_EQ(st_archive_add_file(ctx, &a, path.c_str()), CVENE_OK) << cvene_ctx_error(ctx);
    std::vector<StEntry> out;
    for (int i = 0; i < a.n_tensors; i++) {
        const st_tensor &t = a.tensors[i];
        out.push_back({t.name, st_dtype_name(t.dtype), std::vector<int64_t>(t.shape, t.shape + t.ndim),
                       std::string(static_cast<const char *>(t.data), t.nbytes)});
    }
    st_archive_close(&a);
    cvene_ctx_free(ctx);
    return out;
}

std::vector<StEntry> without(std::vector<StEntry> v, const std::string &name) {
    auto it = std::find_if(v.begin(), v.end(), [&](const StEntry &e) { return e.name == name; });
    EXPECT_NE(it, v.end()) << name;
    if (it != v.end()) v.erase(it);
    return v;
}

// A JSON file with top-level fields replaced by JSON text (nullptr removes the field).
std::string edit_json(const std::string &path,
                      const std::vector<std::pair<std::string, const char *>> &edits) {
    cJSON *root = cJSON_Parse(read_bytes(path).c_str());
    EXPECT_NE(root, nullptr) << path;
    if (!root) return "";
    for (const auto &[key, value] : edits) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, key.c_str());
        if (value) {
            cJSON *v = cJSON_Parse(value);
            EXPECT_NE(v, nullptr) << value;
            cJSON_AddItemToObject(root, key.c_str(), v);
        }
    }
    char *s = cJSON_Print(root);
    std::string out(s);
    cJSON_free(s);
    cJSON_Delete(root);
    return out;
}

std::string small_config(const std::vector<std::pair<std::string, const char *>> &edits = {}) {
    return edit_json(kSmall + "/config.json", edits);
}

// ---- expectations -------------------------------------------------------------

AssertionResult mentions(const std::string &msg, const std::vector<std::string> &needles) {
    for (const auto &n : needles)
        if (msg.find(n) == std::string::npos)
            return AssertionFailure() << "message \"" << msg << "\" does not mention \"" << n << "\"";
    return AssertionSuccess();
}

AssertionResult status_is(cvene_status got, cvene_status want, const std::string &msg) {
    if (got == want) return AssertionSuccess();
    return AssertionFailure() << "status \"" << cvene_status_name(got) << "\", want \""
                              << cvene_status_name(want) << "\"; message: " << msg;
}

// cvene_model_load(dir) fails with `want`, sets the model to NULL and names every needle.
AssertionResult load_fails(const std::string &dir, cvene_status want,
                           const std::vector<std::string> &needles) {
    cvene_ctx *ctx = nullptr;
    char err[256];
    if (cvene_ctx_new(nullptr, &ctx, err, sizeof err) != CVENE_OK)
        return AssertionFailure() << "cvene_ctx_new: " << err;
    cvene_model *m = reinterpret_cast<cvene_model *>(&ctx);  // the call must overwrite it
    cvene_status st = cvene_model_load(ctx, dir.c_str(), &m);
    std::string msg = cvene_ctx_error(ctx);
    AssertionResult r = status_is(st, want, msg);
    if (r && m) r = AssertionFailure() << "model pointer is not NULL after a failed load";
    if (r) r = mentions(msg, needles);
    if (st == CVENE_OK) cvene_model_free(m);
    cvene_ctx_free(ctx);
    return r;
}

// st_archive_add_file(path) fails with `want`, leaves a fresh archive empty and names
// every needle.
AssertionResult add_file_fails(const std::string &path, cvene_status want,
                               const std::vector<std::string> &needles) {
    cvene_ctx *ctx = nullptr;
    char err[256];
    if (cvene_ctx_new(nullptr, &ctx, err, sizeof err) != CVENE_OK)
        return AssertionFailure() << "cvene_ctx_new: " << err;
    st_archive a{};
    cvene_status st = st_archive_add_file(ctx, &a, path.c_str());
    std::string msg = cvene_ctx_error(ctx);
    AssertionResult r = status_is(st, want, msg);
    if (r && (a.n_tensors || a.n_files))
        r = AssertionFailure() << "archive holds " << a.n_tensors << " tensors / " << a.n_files
                               << " files after a failed add";
    if (r) r = mentions(msg, needles);
    st_archive_close(&a);
    cvene_ctx_free(ctx);
    return r;
}

std::vector<uint32_t> float_bits(const std::vector<float> &v) {
    std::vector<uint32_t> out(v.size());
    std::memcpy(out.data(), v.data(), v.size() * 4);
    return out;
}

// Logits of the ids (B, T) on a loaded model.
std::vector<float> logits_of(cvene_model *m, const std::vector<int32_t> &ids, int B, int T) {
    std::vector<float> out((size_t)B * T * cvene_model_get_info(m).vocab_size);
    cvene_run_opts o{};
    o.logits = out.data();
    EXPECT_EQ(cvene_forward(m, ids.data(), B, T, &o), CVENE_OK);
    return out;
}

// ---- a fresh directory per test -----------------------------------------------

class Tmp : public ::testing::Test {
  protected:
    fs::path dir_;
    void SetUp() override {
        const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::string name = std::string(info->test_suite_name()) + "." + info->name() + "." +
                           std::to_string(getpid());
        std::replace(name.begin(), name.end(), '/', '_');
        dir_ = fs::path(CVENE_TEST_TMP) / name;
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        if (!HasFailure()) fs::remove_all(dir_);
    }
    std::string path(const std::string &rel) const { return (dir_ / rel).string(); }
    // DIR/model with config.json and model.safetensors (bytes); returns DIR/model.
    std::string model_dir(const std::string &config, const std::string &checkpoint) {
        fs::create_directories(dir_ / "model");
        write_bytes(path("model/config.json"), config);
        write_bytes(path("model/model.safetensors"), checkpoint);
        return path("model");
    }
    // DIR/model with the given config.json and the small fixture's checkpoint.
    std::string small_dir(const std::string &config) {
        return model_dir(config, read_bytes(kSmall + "/model.safetensors"));
    }
};

// ---- safetensors: malformed files, through both entry points ------------------

struct BadFile {
    std::string name, bytes;
    cvene_status status;
    std::vector<std::string> needles;
};
void PrintTo(const BadFile &b, std::ostream *os) { *os << b.name; }

// One F32 tensor 'a' of shape [2] is the base every case breaks.
const std::string kData8 = bytes_of(std::vector<float>{1.0f, 2.0f});
std::string one(const std::string &e, const std::string &data = kData8) {
    return st_raw("{\"a\": " + e + "}", data);
}

std::vector<BadFile> bad_files() {
    const cvene_status F = CVENE_ERR_FORMAT;
    std::string hdr = "{\"a\": " + entry("\"F32\"", "[2]", "[0, 8]") + "}";
    return {
        {"Empty", "", F, {"truncated", "0 bytes"}},
        {"SevenBytes", std::string(7, '\x01'), F, {"truncated", "7 bytes"}},
        {"HeaderLengthPastEnd", st_raw_len(hdr.size() + 9, hdr, kData8), F,
         {"header length " + std::to_string(hdr.size() + 9), "past the end",
          std::to_string(8 + hdr.size() + 8) + " bytes"}},
        {"HeaderLengthHuge", st_raw_len(UINT64_MAX, hdr, kData8), F, {"18446744073709551615"}},
        {"HeaderLengthZero", st_raw_len(0, hdr, kData8), F, {"header length is 0"}},
        {"HeaderNotJson", st_raw("{nope", kData8), F, {"not a JSON object"}},
        {"HeaderJsonArray", st_raw("[1, 2]", kData8), F, {"not a JSON object"}},
        {"HeaderCutShort", st_raw_len(12, hdr, kData8), F, {"not a JSON object"}},
        {"HeaderTrailingGarbage", st_raw(hdr + " x      ", kData8), F, {"not a JSON object"}},
        {"EntryNotObject", one("5"), F, {"'a'", "not an object"}},
        {"MissingDtype", one(entry(nullptr, "[2]", "[0, 8]")), F, {"'a'", "\"dtype\" is missing"}},
        {"DtypeNotString", one(entry("32", "[2]", "[0, 8]")), F, {"'a'", "\"dtype\" is missing"}},
        {"MissingShape", one(entry("\"F32\"", nullptr, "[0, 8]")), F, {"'a'", "\"shape\" is missing"}},
        {"MissingOffsets", one(entry("\"F32\"", "[2]", nullptr)), F, {"'a'", "\"data_offsets\" is missing"}},
        {"OffsetsOneNumber", one(entry("\"F32\"", "[2]", "[8]")), F, {"'a'", "\"data_offsets\" is missing"}},
        {"UnknownDtype", one(entry("\"F33\"", "[2]", "[0, 8]")), F, {"'a'", "unknown dtype 'F33'"}},
        {"NegativeDim", one(entry("\"F32\"", "[-2]", "[0, 8]")), F, {"'a'", "invalid shape"}},
        {"FractionalDim", one(entry("\"F32\"", "[2.5]", "[0, 8]")), F, {"'a'", "invalid shape"}},
        {"StringDim", one(entry("\"F32\"", "[\"2\"]", "[0, 8]")), F, {"'a'", "invalid shape"}},
        {"NineDims", one(entry("\"F32\"", "[1, 1, 1, 1, 1, 1, 1, 1, 2]", "[0, 8]")), F, {"'a'", "9 dims"}},
        // 2^40 * 2^22 elements * 4 bytes wraps to 0 in 64 bits
        {"ByteCountOverflows", one(entry("\"F32\"", "[1099511627776, 4194304]", "[0, 0]")), F,
         {"'a'", "invalid shape"}},
        {"OffsetsPastData", one(entry("\"F32\"", "[3]", "[0, 12]")), F, {"'a'", "[0, 12]", "(8 bytes)"}},
        {"OffsetsReversed", one(entry("\"F32\"", "[2]", "[8, 0]")), F, {"'a'", "[8, 0]"}},
        {"OffsetNegative", one(entry("\"F32\"", "[2]", "[-8, 0]")), F, {"'a'", "data_offsets", "-8"}},
        {"OffsetFractional", one(entry("\"F32\"", "[2]", "[0, 7.5]")), F, {"'a'", "data_offsets", "7.5"}},
        {"SpanDisagreesWithShape", one(entry("\"F32\"", "[3]", "[0, 8]")), F,
         {"'a'", "spans 8 bytes", "F32", "needs 12"}},
        {"SpanDisagreesWithDtype", one(entry("\"F16\"", "[2]", "[0, 8]")), F,
         {"'a'", "spans 8 bytes", "F16", "needs 4"}},
        {"Overlap",
         st_raw("{\"a\": " + entry("\"F32\"", "[4]", "[0, 16]") + ", \"b\": " +
                    entry("\"F32\"", "[4]", "[8, 24]") + "}",
                std::string(24, '\0')),
         F, {"'a' [0, 16)", "'b' [8, 24)", "overlap"}},
        // an empty tensor sorted between the two must not hide the overlap
        {"OverlapPastEmptyTensor",
         st_raw("{\"a\": " + entry("\"F32\"", "[4]", "[0, 16]") + ", \"e\": " +
                    entry("\"F32\"", "[0]", "[4, 4]") + ", \"c\": " + entry("\"F32\"", "[1]", "[8, 12]") + "}",
                std::string(16, '\0')),
         F, {"'a'", "'c'", "overlap"}},
        {"DuplicateName",
         st_raw("{\"a\": " + entry("\"F32\"", "[1]", "[0, 4]") + ", \"a\": " +
                    entry("\"F32\"", "[1]", "[4, 8]") + "}",
                kData8),
         F, {"'a'", "twice"}},
    };
}

class BadSafetensors : public Tmp, public ::testing::WithParamInterface<std::tuple<BadFile, bool>> {};

TEST_P(BadSafetensors, FailsCleanlyAndNamesTheProblem) {
    const auto &[bad, via_model] = GetParam();
    std::string dir = model_dir(small_config(), bad.bytes);
    std::string file = dir + "/model.safetensors";
    std::vector<std::string> needles = bad.needles;
    needles.push_back(file);
    if (via_model)
        EXPECT_TRUE(load_fails(dir, bad.status, needles));
    else
        EXPECT_TRUE(add_file_fails(file, bad.status, needles));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSafetensors, ::testing::Combine(::testing::ValuesIn(bad_files()), ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<BadFile, bool>> &p) {
        return std::get<0>(p.param).name + (std::get<1>(p.param) ? "_ModelLoad" : "_AddFile");
    });

using Safetensors = Tmp;

TEST_F(Safetensors, BaseOfTheBadCasesIsValid) {
    write_bytes(path("ok.safetensors"), one(entry("\"F32\"", "[2]", "[0, 8]")));
    Archive ar(path("ok.safetensors"));
    ASSERT_EQ(ar.a.n_tensors, 1);
    EXPECT_EQ(ar.get<float>("a"), (std::vector<float>{1.0f, 2.0f}));
}

TEST_F(Safetensors, MissingFileAndDirectoryAreIoErrors) {
    EXPECT_TRUE(add_file_fails(path("nope.safetensors"), CVENE_ERR_IO,
                               {path("nope.safetensors"), "cannot open"}));
    EXPECT_TRUE(add_file_fails(dir_.string(), CVENE_ERR_IO, {dir_.string(), "not a regular file"}));
}

TEST_F(Safetensors, DataRegionCutShort) {
    std::string full = read_bytes(kSmall + "/model.safetensors");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)full[i];
    size_t cut = 8 + hlen + (full.size() - 8 - hlen) / 2;
    std::string dir = model_dir(small_config(), full.substr(0, cut));
    std::string file = dir + "/model.safetensors";
    std::vector<std::string> needles = {file, "data_offsets", "not a range within the data region",
                                        "(" + std::to_string(cut - 8 - hlen) + " bytes)"};
    EXPECT_TRUE(add_file_fails(file, CVENE_ERR_FORMAT, needles));
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, needles));
}

TEST_F(Safetensors, DuplicateTensorAcrossFilesKeepsTheFirstFile) {
    auto f = [](float x) { return bytes_of(std::vector<float>{x}); };
    write_bytes(path("a.safetensors"), st_build({{"x", "F32", {1}, f(1)}, {"y", "F32", {1}, f(2)}}));
    write_bytes(path("b.safetensors"), st_build({{"z", "F32", {1}, f(3)}, {"x", "F32", {1}, f(4)}}));
    cvene_ctx *ctx = nullptr;
    char err[256];
    ASSERT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
    st_archive a{};
    ASSERT_EQ(st_archive_add_file(ctx, &a, path("a.safetensors").c_str()), CVENE_OK) << cvene_ctx_error(ctx);
    EXPECT_EQ(st_archive_add_file(ctx, &a, path("b.safetensors").c_str()), CVENE_ERR_FORMAT);
    EXPECT_TRUE(mentions(cvene_ctx_error(ctx), {path("b.safetensors"), "'x'", "twice", path("a.safetensors")}));
    // the archive is as it was: a's two tensors, nothing of b
    EXPECT_EQ(a.n_files, 1);
    ASSERT_EQ(a.n_tensors, 2);
    EXPECT_EQ(st_archive_find(&a, "z"), nullptr);
    float x = 0;
    ASSERT_NE(st_archive_find(&a, "x"), nullptr);
    ASSERT_EQ(st_tensor_to_f32(ctx, st_archive_find(&a, "x"), &x), CVENE_OK);
    EXPECT_EQ(x, 1.0f);
    st_archive_close(&a);
    cvene_ctx_free(ctx);
}

// ---- safetensors: a valid hand-written file reads back exactly ---------------

TEST_F(Safetensors, HandWrittenFileRoundTrips) {
    // bit patterns and the values they encode, derived by hand
    std::vector<uint32_t> f32 = {0x3FC00000u, 0xC0100000u, 0x477FE000u, 0x00000001u, 0x80000000u, 0x7F800000u};
    std::vector<float> f32_want = {1.5f, -2.25f, 65504.0f, std::ldexp(1.0f, -149), -0.0f, INFINITY};
    std::vector<uint16_t> f16 = {0x3E00, 0xC080, 0x7BFF, 0x0001, 0x03FF, 0x0400, 0x8000, 0xFC00};
    std::vector<float> f16_want = {1.5f,  -2.25f, 65504.0f, std::ldexp(1.0f, -24), 1023 * std::ldexp(1.0f, -24),
                                   std::ldexp(1.0f, -14), -0.0f, -INFINITY};
    std::vector<uint16_t> bf16 = {0x3FC0, 0xC010, 0x477F, 0x0001, 0x7F7F};
    std::vector<float> bf16_want = {1.5f, -2.25f, 65280.0f, std::ldexp(1.0f, -133), std::ldexp(255.0f, 120)};
    // odd sizes first so later tensors start at offsets that are not 4-aligned
    std::vector<StEntry> ts = {
        {"bf16", "BF16", {5}, bytes_of(bf16)},
        {"f16", "F16", {2, 4}, bytes_of(f16)},
        {"f32", "F32", {2, 1, 3}, bytes_of(f32)},
        {"scalar", "F32", {}, bytes_of(std::vector<float>{7.0f})},
        {"empty", "F32", {0, 3}, ""},
        {"i32", "I32", {2}, bytes_of(std::vector<int32_t>{-1, 5})},
    };
    write_bytes(path("rt.safetensors"), st_build(ts, R"({"format": "pt", "note": "ignored"})"));
    Archive ar(path("rt.safetensors"));
    ASSERT_EQ(ar.a.n_files, 1);
    ASSERT_EQ(ar.a.n_tensors, (int)ts.size()) << "__metadata__ must not be a tensor";
    for (size_t i = 0; i < ts.size(); i++) {
        const st_tensor &t = ar.a.tensors[i];
        SCOPED_TRACE(ts[i].name);
        EXPECT_EQ(t.name, ts[i].name);
        EXPECT_STREQ(st_dtype_name(t.dtype), ts[i].dtype.c_str());
        EXPECT_EQ(std::vector<int64_t>(t.shape, t.shape + t.ndim), ts[i].shape);
        EXPECT_EQ(t.nbytes, ts[i].data.size());
        EXPECT_EQ(std::string(static_cast<const char *>(t.data), t.nbytes), ts[i].data);
    }
    auto as_f32 = [&](const std::string &name, size_t n) {
        std::vector<float> v(n, 42.0f);
        EXPECT_EQ(st_tensor_to_f32(ar.ctx, ar.find(name), v.data()), CVENE_OK) << cvene_ctx_error(ar.ctx);
        return v;
    };
    EXPECT_EQ(float_bits(as_f32("f32", 6)), float_bits(f32_want));
    EXPECT_EQ(float_bits(as_f32("f16", 8)), float_bits(f16_want));
    EXPECT_EQ(float_bits(as_f32("bf16", 5)), float_bits(bf16_want));
    EXPECT_EQ(as_f32("scalar", 1), std::vector<float>{7.0f});
    EXPECT_EQ(as_f32("empty", 1), std::vector<float>{42.0f}) << "an empty tensor writes nothing";
    EXPECT_EQ(ar.find("__metadata__"), nullptr);
    float sink[2];
    EXPECT_EQ(st_tensor_to_f32(ar.ctx, ar.find("i32"), sink), CVENE_ERR_FORMAT);
    EXPECT_TRUE(mentions(cvene_ctx_error(ar.ctx), {"'i32'", "I32"}));
}

// The writer above reproduces a real checkpoint: the rewritten small model loads and
// gives the fixture's logits (so the failures below come from what each test changed).
TEST_F(Safetensors, RewrittenFixtureLoadsIdentically) {
    std::string dir = model_dir(small_config(), st_build(entries_of(kSmall + "/model.safetensors")));
    Loaded a(kSmall), b(dir);
    ASSERT_EQ(a.status, CVENE_OK) << a.error();
    ASSERT_EQ(b.status, CVENE_OK) << b.error();
    std::vector<int32_t> ids = {5, 17, 3, 300, 0, 9};
    EXPECT_EQ(logits_of(a.model, ids, 2, 3), logits_of(b.model, ids, 2, 3));
}

// ---- sharded checkpoints --------------------------------------------------------

class Sharded : public Tmp {
  protected:
    std::string dir;
    std::string index() const { return dir + "/model.safetensors.index.json"; }
    void SetUp() override {
        Tmp::SetUp();
        dir = path("model");
        fs::copy(kSharded, dir);
    }
    // Rewrite the index with weight_map entries replaced (nullptr removes one).
    void edit_weight_map(const std::vector<std::pair<std::string, const char *>> &edits) {
        cJSON *root = cJSON_Parse(read_bytes(index()).c_str());
        ASSERT_NE(root, nullptr);
        cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
        for (const auto &[key, value] : edits) {
            cJSON_DeleteItemFromObjectCaseSensitive(wm, key.c_str());
            if (value) cJSON_AddItemToObject(wm, key.c_str(), cJSON_Parse(value));
        }
        char *s = cJSON_Print(root);
        write_bytes(index(), s);
        cJSON_free(s);
        cJSON_Delete(root);
    }
};

TEST_F(Sharded, CopyLoads) {
    Loaded L(dir);
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    EXPECT_EQ(cvene_model_get_info(L.model).n_layer, 3);
}

TEST_F(Sharded, IndexNamesAShardThatDoesNotExist) {
    edit_weight_map({{"transformer.wte.weight", "\"model-00009-of-00006.safetensors\""}});
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_IO, {dir + "/model-00009-of-00006.safetensors", "cannot open"}));
}

TEST_F(Sharded, ShardFileDeleted) {
    fs::remove(dir + "/model-00004-of-00006.safetensors");
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_IO, {dir + "/model-00004-of-00006.safetensors"}));
}

TEST_F(Sharded, IndexPutsATensorInTheWrongShard) {
    // transformer.h.0.ln_1.bias lives in shard 1
    edit_weight_map({{"transformer.h.0.ln_1.bias", "\"model-00002-of-00006.safetensors\""}});
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT,
                           {index(), "'transformer.h.0.ln_1.bias'", "model-00002-of-00006.safetensors"}));
}

TEST_F(Sharded, IndexNamesATensorNoShardHas) {
    edit_weight_map({{"transformer.extra", "\"model-00001-of-00006.safetensors\""}});
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {index(), "'transformer.extra'", "model-00001-of-00006"}));
}

TEST_F(Sharded, MalformedIndex) {
    std::string trailing = read_bytes(kSharded + "/model.safetensors.index.json") + "}";
    for (const std::string &text :
         {std::string(R"({"metadata": {"total_size": 1}})"), std::string(R"({"weight_map": ["a"]})"),
          std::string("{not json"), std::string("[]"), std::string(""), trailing}) {
        SCOPED_TRACE(text);
        write_bytes(index(), text);
        EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {index(), "weight_map"}));
    }
}

TEST_F(Sharded, ShardNameMustBeAPlainFileName) {
    // a real checkpoint reachable by traversal must still be refused
    std::string small_rel = fs::relative(kSmall + "/model.safetensors", dir).string();
    for (std::string name : {small_rel, std::string("sub/model.safetensors"), std::string(".."),
                             std::string("/etc/passwd"), kSmall + "/model.safetensors"}) {
        SCOPED_TRACE(name);
        fs::copy(kSharded + "/model.safetensors.index.json", index(), fs::copy_options::overwrite_existing);
        std::string quoted = "\"" + name + "\"";
        edit_weight_map({{"transformer.wte.weight", quoted.c_str()}});
        EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {index(), "transformer.wte.weight", "must be a file name"}));
    }
    fs::copy(kSharded + "/model.safetensors.index.json", index(), fs::copy_options::overwrite_existing);
    edit_weight_map({{"transformer.wte.weight", "5"}});
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {index(), "transformer.wte.weight"}));
}

TEST_F(Sharded, DuplicateTensorAcrossShards) {
    // shard 6 also carries a copy of shard 1's transformer.h.0.ln_1.bias
    std::string s1 = dir + "/model-00001-of-00006.safetensors", s6 = dir + "/model-00006-of-00006.safetensors";
    auto e6 = entries_of(s6);
    for (const auto &e : entries_of(s1))
        if (e.name == "transformer.h.0.ln_1.bias") e6.push_back(e);
    write_bytes(s6, st_build(e6));
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {"'transformer.h.0.ln_1.bias'", "twice", "model-0000"}));
}

TEST_F(Sharded, NoCheckpointAtAll) {
    fs::remove(index());
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_IO, {dir, "no model.safetensors"}));
}

// ---- config.json ------------------------------------------------------------------

using Config = Tmp;

TEST_F(Config, BaseConfigLoads) {
    Loaded L(small_dir(small_config()));
    ASSERT_EQ(L.status, CVENE_OK) << L.error();
    cvene_model_info info = cvene_model_get_info(L.model);
    EXPECT_EQ(info.n_embd, 64);
    EXPECT_EQ(info.n_inner, 256);
    EXPECT_EQ(info.vocab_size, 320);
    EXPECT_EQ(info.n_positions, 32);
}

TEST_F(Config, MissingFile) {
    fs::create_directories(path("model"));
    write_bytes(path("model/model.safetensors"), read_bytes(kSmall + "/model.safetensors"));
    EXPECT_TRUE(load_fails(path("model"), CVENE_ERR_IO, {path("model/config.json"), "cannot open"}));
    EXPECT_TRUE(load_fails(path("absent"), CVENE_ERR_IO, {path("absent/config.json")}));
}

TEST_F(Config, MalformedJson) {
    std::string dir = small_dir("{\"n_embd\": 64,, \"n_layer\": 2}");
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {dir + "/config.json", "malformed JSON near byte"}));
    dir = small_dir("");
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {dir + "/config.json"}));
    std::string cfg = small_config();
    dir = small_dir(cfg + "\n}");  // a stray byte after the object
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {"malformed JSON near byte " + std::to_string(cfg.size() + 1)}));
    dir = small_dir("[64, 2]");
    EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {dir + "/config.json", "not a JSON object"}));
}

class ConfigRequired : public Tmp, public ::testing::WithParamInterface<const char *> {};

TEST_P(ConfigRequired, MissingOrNullFieldIsNamed) {
    for (const char *value : {(const char *)nullptr, "null"}) {
        std::string dir = small_dir(small_config({{GetParam(), value}}));
        EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT,
                               {dir + "/config.json", "missing required field \"" + std::string(GetParam()) + "\""}));
    }
}

INSTANTIATE_TEST_SUITE_P(Fields, ConfigRequired,
                         ::testing::Values("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                                           "model_type"));

struct BadField {
    const char *name, *field, *value;
    cvene_status status;
    std::vector<std::string> needles;
};
void PrintTo(const BadField &b, std::ostream *os) { *os << b.name; }

class ConfigBadField : public Tmp, public ::testing::WithParamInterface<BadField> {};

TEST_P(ConfigBadField, IsRefusedWithFieldAndValue) {
    const BadField &b = GetParam();
    std::string dir = small_dir(small_config({{b.field, b.value}}));
    std::vector<std::string> needles = b.needles;
    needles.push_back(dir + "/config.json");
    EXPECT_TRUE(load_fails(dir, b.status, needles));
}

const cvene_status kF = CVENE_ERR_FORMAT;
INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigBadField,
    ::testing::Values(
        BadField{"EmbdString", "n_embd", "\"64\"", kF, {"\"n_embd\"", "must be an integer", "\"64\""}},
        BadField{"LayerFraction", "n_layer", "2.5", kF, {"\"n_layer\"", "must be an integer", "2.5"}},
        BadField{"HeadBool", "n_head", "true", kF, {"\"n_head\"", "must be an integer", "true"}},
        BadField{"VocabArray", "vocab_size", "[320]", kF, {"\"vocab_size\"", "must be an integer"}},
        BadField{"LayerZero", "n_layer", "0", kF, {"\"n_layer\"", "= 0", "[1, 64]"}},
        BadField{"LayerTooMany", "n_layer", "65", kF, {"\"n_layer\"", "= 65", "[1, 64]"}},
        BadField{"VocabNegative", "vocab_size", "-1", kF, {"\"vocab_size\"", "= -1"}},
        BadField{"PositionsHuge", "n_positions", "1e30", kF, {"\"n_positions\"", "e+30"}},
        BadField{"InnerZero", "n_inner", "0", kF, {"\"n_inner\"", "= 0"}},
        BadField{"ScaleYes", "scale_attn_weights", "\"yes\"", kF,
                 {"\"scale_attn_weights\"", "must be true or false", "\"yes\""}},
        BadField{"TieOne", "tie_word_embeddings", "1", kF, {"\"tie_word_embeddings\"", "must be true or false"}},
        BadField{"EpsString", "layer_norm_epsilon", "\"1e-5\"", kF, {"\"layer_norm_epsilon\"", "finite number"}},
        BadField{"EpsZero", "layer_norm_epsilon", "0", kF, {"layer_norm_epsilon", "must be in (0, 3e38)"}},
        BadField{"EmbdNotDivisible", "n_embd", "66", kF, {"n_embd = 66", "n_head = 4", "not divisible"}},
        BadField{"ActivationSwish", "activation_function", "\"swish\"", CVENE_ERR_UNSUPPORTED,
                 {"activation_function", "\"swish\"", "not supported"}},
        BadField{"ActivationNumber", "activation_function", "3", kF, {"\"activation_function\"", "must be a string"}},
        BadField{"ModelTypeLlama", "model_type", "\"llama\"", CVENE_ERR_UNSUPPORTED,
                 {"model_type", "\"llama\"", "not supported"}},
        BadField{"ModelTypeNumber", "model_type", "2", kF, {"\"model_type\"", "must be a string"}}),
    [](const ::testing::TestParamInfo<BadField> &p) { return std::string(p.param.name); });

// config.json and the checkpoint disagree: the message names the tensor and both shapes.
TEST_F(Config, DisagreesWithCheckpoint) {
    std::string dir = small_dir(small_config({{"n_embd", "32"}}));
    EXPECT_TRUE(load_fails(dir, kF, {dir, "'transformer.wte.weight'", "[320, 64]", "[320, 32]"}));
    dir = small_dir(small_config({{"n_inner", "128"}}));
    EXPECT_TRUE(load_fails(dir, kF, {"'transformer.h.0.mlp.c_fc.weight'", "[64, 256]", "[64, 128]"}));
    dir = small_dir(small_config({{"vocab_size", "321"}}));
    EXPECT_TRUE(load_fails(dir, kF, {"'transformer.wte.weight'", "[320, 64]", "[321, 64]"}));
    dir = small_dir(small_config({{"n_positions", "64"}}));
    EXPECT_TRUE(load_fails(dir, kF, {"'transformer.wpe.weight'", "[32, 64]", "[64, 64]"}));
    // one layer too many: the first tensor of layer 2 is missing
    dir = small_dir(small_config({{"n_layer", "3"}}));
    EXPECT_TRUE(load_fails(dir, kF, {"missing tensor 'transformer.h.2.ln_1.weight'"}));
}

TEST_F(Config, MissingTensor) {
    auto es = without(entries_of(kSmall + "/model.safetensors"), "transformer.h.1.mlp.c_fc.bias");
    std::string dir = model_dir(small_config(), st_build(es));
    EXPECT_TRUE(load_fails(dir, kF, {dir, "missing tensor 'transformer.h.1.mlp.c_fc.bias'", "'h.1.mlp.c_fc.bias'"}));
}

TEST_F(Config, TensorWithAnIntegerDtype) {
    auto es = entries_of(kSmall + "/model.safetensors");
    for (auto &e : es)
        if (e.name == "transformer.ln_f.bias") e.dtype = "I32";  // same byte count
    std::string dir = model_dir(small_config(), st_build(es));
    EXPECT_TRUE(load_fails(dir, kF, {"'transformer.ln_f.bias'", "I32"}));
}

TEST_F(Config, UntiedNeedsLmHead) {
    std::string dir = small_dir(small_config({{"tie_word_embeddings", "false"}}));
    EXPECT_TRUE(load_fails(dir, kF, {dir, "tie_word_embeddings", "'lm_head.weight'"}));
}

TEST_F(Config, UntiedWithLmHeadLoads) {
    auto es = entries_of(kSmall + "/model.safetensors");
    for (const auto &e : entries_of(kSmall + "/model.safetensors"))
        if (e.name == "transformer.wte.weight") es.push_back({"lm_head.weight", e.dtype, e.shape, e.data});
    std::string dir = model_dir(small_config({{"tie_word_embeddings", "false"}}), st_build(es));
    Loaded tied(kSmall), untied(dir);
    ASSERT_EQ(untied.status, CVENE_OK) << untied.error();
    std::vector<int32_t> ids = {1, 2, 3, 4};
    EXPECT_EQ(logits_of(tied.model, ids, 1, 4), logits_of(untied.model, ids, 1, 4));
    EXPECT_EQ(cvene_model_get_info(untied.model).n_params,
              cvene_model_get_info(tied.model).n_params + 320 * 64);
}

// ---- cvene_forward argument checks ------------------------------------------------

struct Call {
    int B = 2, T = 5;
    std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    std::vector<int32_t> mask, pos;  // empty = not passed
    bool null_ids = false;
    uint64_t sites[CVENE_N_COMPONENTS] = {};
};

struct BadCall {
    const char *name;
    void (*edit)(Call &);
    std::vector<std::string> needles;
};
void PrintTo(const BadCall &b, std::ostream *os) { *os << b.name; }

int count_calls(void *user, cvene_component, int, cvene_tensor_view *) {
    ++*static_cast<int *>(user);
    return 0;
}

class ForwardChecks : public ::testing::TestWithParam<BadCall> {};

TEST_P(ForwardChecks, RefusedWithoutTouchingTheModel) {
    Loaded used(kSmall), fresh(kSmall);
    ASSERT_EQ(used.status, CVENE_OK) << used.error();
    ASSERT_EQ(fresh.status, CVENE_OK) << fresh.error();
    Call c;
    GetParam().edit(c);
    const float sentinel = -12345.0f;
    size_t n_logits = (size_t)std::max(c.B, 1) * std::max(c.T, 1) * 320;
    std::vector<float> logits(n_logits, sentinel);
    int calls = 0;
    cvene_run_opts o{};
    o.logits = logits.data();
    o.attention_mask = c.mask.empty() ? nullptr : c.mask.data();
    o.position_ids = c.pos.empty() ? nullptr : c.pos.data();
    o.site_fn = count_calls;
    o.site_user = &calls;
    std::memcpy(o.sites, c.sites, sizeof o.sites);
    cvene_status st = cvene_forward(used.model, c.null_ids ? nullptr : c.ids.data(), c.B, c.T, &o);
    EXPECT_TRUE(status_is(st, CVENE_ERR_INVALID_ARG, used.error()));
    EXPECT_TRUE(mentions(used.error(), GetParam().needles));
    EXPECT_EQ(calls, 0) << "no site may run after a refused call";
    EXPECT_EQ(std::count(logits.begin(), logits.end(), sentinel), (long)n_logits) << "logits written";
    // the model still works and matches a fresh one
    std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    EXPECT_EQ(float_bits(logits_of(used.model, ids, 2, 5)), float_bits(logits_of(fresh.model, ids, 2, 5)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ForwardChecks,
    ::testing::Values(
        BadCall{"IdAtVocab", [](Call &c) { c.ids[1 * 5 + 2] = 320; }, {"input_ids[1][2] = 320", "[0, 320)"}},
        BadCall{"IdNegative", [](Call &c) { c.ids[3] = -1; }, {"input_ids[0][3] = -1"}},
        BadCall{"LongerThanPositions", [](Call &c) { c.T = 33; c.ids.assign(2 * 33, 1); },
                {"sequence length 33", "n_positions = 32"}},
        BadCall{"ZeroBatch", [](Call &c) { c.B = 0; }, {"batch size 0", "must be > 0"}},
        BadCall{"NegativeBatch", [](Call &c) { c.B = -3; }, {"batch size -3", "must be > 0"}},
        BadCall{"ZeroLength", [](Call &c) { c.T = 0; }, {"sequence length 0", "must be > 0"}},
        BadCall{"NullIds", [](Call &c) { c.null_ids = true; }, {"input_ids is NULL"}},
        BadCall{"MaskTwo", [](Call &c) { c.mask.assign(10, 1); c.mask[1 * 5 + 4] = 2; },
                {"attention_mask[1][4] = 2", "0 or 1"}},
        BadCall{"MaskNegative", [](Call &c) { c.mask.assign(10, 1); c.mask[0] = -1; },
                {"attention_mask[0][0] = -1"}},
        BadCall{"PositionAtLimit", [](Call &c) { c.pos = {0, 1, 32, 3, 4, 0, 1, 2, 3, 4}; },
                {"position_ids[0][2] = 32", "[0, 32)"}},
        BadCall{"PositionNegative", [](Call &c) { c.pos = {0, 1, 2, 3, 4, 0, 1, -1, 3, 4}; },
                {"position_ids[1][2] = -1"}},
        BadCall{"SiteLayer2", [](Call &c) { c.sites[CVENE_MLP_OUTPUT] = 1u << 2; },
                {"sites[mlp_output]", "n_layer = 2"}},
        BadCall{"SiteLayer63", [](Call &c) { c.sites[CVENE_BLOCK_INPUT] = (1ull << 63) | 1u; },
                {"sites[block_input]", "n_layer = 2"}}),
    [](const ::testing::TestParamInfo<BadCall> &p) { return std::string(p.param.name); });

TEST(ForwardChecksNull, NullModel) {
    int32_t ids[1] = {1};
    EXPECT_EQ(cvene_forward(nullptr, ids, 1, 1, nullptr), CVENE_ERR_INVALID_ARG);
}

// ---- robustness -------------------------------------------------------------------

using Robustness = Tmp;

// Every prefix length tried fails with a status and a message naming the file.
TEST_F(Robustness, EveryPrefixOfARealCheckpointFailsCleanly) {
    std::string full = read_bytes(kSmall + "/model.safetensors");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)full[i];
    const size_t data_at = 8 + hlen;
    std::vector<size_t> lengths;
    for (size_t n = 0; n <= 16; n++) lengths.push_back(n);
    for (size_t n = 17; n < data_at; n += 97) lengths.push_back(n);
    for (size_t n : {data_at - 1, data_at, data_at + 1, data_at + 3}) lengths.push_back(n);
    for (size_t n = data_at + 4099; n < full.size(); n += 4099) lengths.push_back(n);
    lengths.push_back(full.size() - 1);
    std::string dir = model_dir(small_config(), "");
    std::string file = dir + "/model.safetensors";
    for (size_t n : lengths) {
        SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
        write_bytes(file, full.substr(0, n));
        EXPECT_TRUE(add_file_fails(file, CVENE_ERR_FORMAT, {file}));
        EXPECT_TRUE(load_fails(dir, CVENE_ERR_FORMAT, {file}));
    }
    EXPECT_GT(lengths.size(), 150u);
}

// Single-byte corruption anywhere in a small file's header or length: the reader
// either refuses it with a message, or accepts it with every tensor inside the data
// region and its byte count consistent with dtype x shape.
TEST_F(Robustness, HeaderByteCorruption) {
    auto f = [](std::vector<float> v) { return bytes_of(v); };
    std::string good = st_build({{"w", "F32", {2, 2}, f({1, 2, 3, 4})},
                                 {"b", "F16", {2}, bytes_of(std::vector<uint16_t>{0x3C00, 0x4000})},
                                 {"s", "BF16", {}, bytes_of(std::vector<uint16_t>{0x3F80})}},
                                R"({"format": "pt"})");
    std::string file = path("mut.safetensors");
    cvene_ctx *ctx = nullptr;
    char err[256];
    ASSERT_EQ(cvene_ctx_new(nullptr, &ctx, err, sizeof err), CVENE_OK) << err;
    int accepted = 0, refused = 0;
    const char subst[] = {'\0', '"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', 'x', '\x80', '\xff'};
    for (size_t pos = 0; pos < good.size() - 22; pos++)  // header and length, not the data
        for (char ch : subst) {
            std::string bytes = good;
            if (bytes[pos] == ch) continue;
            bytes[pos] = ch;
            write_bytes(file, bytes);
            st_archive a{};
            cvene_status st = st_archive_add_file(ctx, &a, file.c_str());
            if (st != CVENE_OK) {
                refused++;
                EXPECT_EQ(a.n_tensors, 0);
                EXPECT_NE(std::string(cvene_ctx_error(ctx)).find(file), std::string::npos)
                    << "pos " << pos << ": " << cvene_ctx_error(ctx);
            } else {
                accepted++;
                const char *map = static_cast<const char *>(a.files[0].map);
                for (int i = 0; i < a.n_tensors; i++) {
                    const st_tensor &t = a.tensors[i];
                    size_t numel = 1;
                    for (int d = 0; d < t.ndim; d++) numel *= (size_t)t.shape[d];
                    EXPECT_EQ(t.nbytes, numel * st_dtype_size(t.dtype)) << "pos " << pos << " " << t.name;
                    const char *p = static_cast<const char *>(t.data);
                    EXPECT_TRUE(p >= map + 8 && p + t.nbytes <= map + a.files[0].size) << "pos " << pos;
                }
            }
            st_archive_close(&a);
        }
    cvene_ctx_free(ctx);
    EXPECT_GT(refused, 0);
    EXPECT_GT(accepted, 0);  // e.g. a changed metadata value or dtype F16 -> BF16 is still valid
}

}  // namespace
