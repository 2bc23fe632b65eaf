// Byte-level BPE tokenizer: parity with Hugging Face tokenizers on the real GPT-2
// vocabulary over tests/fixtures/tokenizer/corpus.json (tools/make_tokenizer_corpus.py),
// a small tokenizer.json with other settings, the pre-tokenizer on its own, and bad input.
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "test_util.h"
extern "C" {
#include "models/tokenizer.h"
}

#ifndef CVENE_GPT2_TOKENIZER
#define CVENE_GPT2_TOKENIZER ""
#endif

namespace {

const std::string kGpt2Dir = CVENE_GPT2_TOKENIZER;
const std::string kTinyDir = std::string(CVENE_FIXTURES) + "/tokenizer/tiny";

bool dir_exists(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

#define SKIP_WITHOUT_GPT2()                                                                  \
    do {                                                                                     \
        if (!dir_exists(kGpt2Dir))                                                           \
            GTEST_SKIP() << "GPT-2 tokenizer files not found at '" << kGpt2Dir                \
                         << "' (shared/data/gpt2-tokenizer beside the clone); skipping";      \
    } while (0)

std::string read_text(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void write_text(const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}

std::string b64decode(const std::string &in) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::string out;
    int bits = 0;
    unsigned acc = 0;
    for (char c : in) {
        int v = val(c);
        if (v < 0) continue; // '='
        acc = ((acc << 6) | (unsigned)v) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back((char)((acc >> bits) & 0xFF));
        }
    }
    return out;
}

// Printable form of a byte string for failure messages.
std::string show(const std::string &s, size_t max = 120) {
    std::string o = "\"";
    for (size_t i = 0; i < s.size() && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        char buf[8];
        if (c == '\\' || c == '"') o += '\\', o += (char)c;
        else if (c >= 0x20 && c < 0x7F) o += (char)c;
        else snprintf(buf, sizeof buf, "\\x%02X", c), o += buf;
    }
    if (s.size() > max) o += "...";
    return o + "\"";
}

std::string show(const std::vector<int32_t> &v, size_t max = 40) {
    std::string o = "[";
    for (size_t i = 0; i < v.size() && i < max; i++) o += (i ? "," : "") + std::to_string(v[i]);
    if (v.size() > max) o += ",...";
    return o + "]";
}

struct Case {
    std::string tag, ref, text;
    std::vector<int32_t> gpt2, tiny;
    bool has_tiny = false;
};

struct Corpus {
    std::vector<Case> cases;
    std::string error;
    Corpus() {
        std::string js = read_text(std::string(CVENE_FIXTURES) + "/tokenizer/corpus.json");
        cJSON *root = cJSON_Parse(js.c_str());
        const cJSON *arr = cJSON_GetObjectItem(root, "cases");
        if (!cJSON_IsArray(arr)) {
            error = "tests/fixtures/tokenizer/corpus.json missing or malformed";
            cJSON_Delete(root);
            return;
        }
        for (const cJSON *c = arr->child; c; c = c->next) {
            Case k;
            k.tag = cJSON_GetObjectItem(c, "tag")->valuestring;
            k.ref = cJSON_GetObjectItem(c, "ref")->valuestring;
            k.text = b64decode(cJSON_GetObjectItem(c, "b64")->valuestring);
            for (const cJSON *i = cJSON_GetObjectItem(c, "gpt2")->child; i; i = i->next)
                k.gpt2.push_back((int32_t)i->valuedouble);
            const cJSON *t = cJSON_GetObjectItem(c, "tiny");
            k.has_tiny = cJSON_IsArray(t);
            for (const cJSON *i = k.has_tiny ? t->child : nullptr; i; i = i->next)
                k.tiny.push_back((int32_t)i->valuedouble);
            cases.push_back(std::move(k));
        }
        cJSON_Delete(root);
    }
};

const Corpus &corpus() {
    static Corpus c;
    return c;
}

// A context + tokenizer freed on scope exit.
struct Tok {
    cvene_ctx *ctx = nullptr;
    cvene_tokenizer *tok = nullptr;
    cvene_status status = CVENE_OK;
    explicit Tok(const std::string &path) {
        char err[256];
        status = cvene_ctx_new(nullptr, &ctx, err, sizeof err);
        if (status == CVENE_OK) status = cvene_tokenizer_load(ctx, path.c_str(), &tok);
    }
    Tok(const std::string &vocab, const std::string &merges) {
        char err[256];
        status = cvene_ctx_new(nullptr, &ctx, err, sizeof err);
        if (status == CVENE_OK) status = cvene_tokenizer_load_bpe(ctx, vocab.c_str(), merges.c_str(), &tok);
    }
    ~Tok() {
        cvene_tokenizer_free(tok);
        cvene_ctx_free(ctx);
    }
    std::string error() const { return ctx ? cvene_ctx_error(ctx) : "no context"; }
    std::vector<int32_t> encode(const std::string &s, int mode = TOK_BPE_AUTO) const {
        int32_t *ids = nullptr;
        size_t n = 0;
        cvene_status st = tok_encode_mode(tok, s.data(), s.size(), mode, &ids, &n);
        EXPECT_EQ(st, CVENE_OK) << error();
        EXPECT_NE(ids, nullptr);
        std::vector<int32_t> v(ids, ids + n);
        cvene_free(ids);
        return v;
    }
    std::string decode(const std::vector<int32_t> &ids) const {
        char *text = nullptr;
        size_t len = 0;
        cvene_status st = cvene_tokenizer_decode(tok, ids.data(), ids.size(), &text, &len);
        EXPECT_EQ(st, CVENE_OK) << error();
        std::string s(text ? text : "", len);
        if (text) {
            EXPECT_EQ(text[len], '\0');
        }
        cvene_free(text);
        return s;
    }
};

// ---- GPT-2 on the corpus ----------------------------------------------------------

TEST(TokenizerGpt2, CorpusMatchesTokenizers) {
    SKIP_WITHOUT_GPT2();
    const Corpus &c = corpus();
    ASSERT_TRUE(c.error.empty()) << c.error;
    ASSERT_GE(c.cases.size(), 2000u);
    Tok t(kGpt2Dir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    int bad_ids = 0, bad_rt = 0, n_contract = 0;
    size_t n_ids = 0;
    for (const Case &k : c.cases) {
        std::vector<int32_t> ids = t.encode(k.text);
        n_ids += ids.size();
        n_contract += k.ref == "contract";
        if (ids != k.gpt2 && ++bad_ids <= 10)
            ADD_FAILURE() << "[" << k.tag << ", " << k.ref << "] " << show(k.text) << "\n  expected "
                          << show(k.gpt2) << "\n  got      " << show(ids);
        std::string back = t.decode(ids);
        if (back != k.text && ++bad_rt <= 10)
            ADD_FAILURE() << "[" << k.tag << "] decode(encode(x)) != x for " << show(k.text) << ": "
                          << show(back);
    }
    EXPECT_EQ(bad_ids, 0) << "of " << c.cases.size() << " strings";
    EXPECT_EQ(bad_rt, 0) << "of " << c.cases.size() << " strings";
    EXPECT_GT(n_contract, 100); // invalid UTF-8 strings are in the corpus
    EXPECT_GT(n_ids, 50000u);
}

// The scanning and the heap merge loops each give the reference ids on every string (the
// corpus has pre-tokens of up to 6,000 bytes, so both also meet long words).
TEST(TokenizerGpt2, MergeLoopsAgree) {
    SKIP_WITHOUT_GPT2();
    const Corpus &c = corpus();
    ASSERT_TRUE(c.error.empty()) << c.error;
    Tok t(kGpt2Dir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    int bad = 0;
    for (const Case &k : c.cases) {
        std::vector<int32_t> scan = t.encode(k.text, TOK_BPE_SCAN), heap = t.encode(k.text, TOK_BPE_HEAP);
        if ((scan != k.gpt2 || heap != k.gpt2) && ++bad <= 5)
            ADD_FAILURE() << show(k.text) << "\n scan " << show(scan) << "\n heap " << show(heap)
                          << "\n want " << show(k.gpt2);
    }
    EXPECT_EQ(bad, 0);
}

TEST(TokenizerGpt2, VocabularyAndSpecialTokens) {
    SKIP_WITHOUT_GPT2();
    Tok t(kGpt2Dir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    EXPECT_EQ(cvene_tokenizer_vocab_size(t.tok), 50257);
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, "<|endoftext|>"), 50256);
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, "\xc4\xa0the"), 262); // "Ġthe"
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, "!"), 0);
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, "not a token"), -1);
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, nullptr), -1);
    EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
    EXPECT_EQ(t.encode("a<|endoftext|>b"), (std::vector<int32_t>{64, 50256, 65}));
    EXPECT_EQ(t.decode({50256, 15496}), "<|endoftext|>Hello");
    // The same files named explicitly.
    Tok f(kGpt2Dir + "/vocab.json", kGpt2Dir + "/merges.txt");
    ASSERT_EQ(f.status, CVENE_OK) << f.error();
    EXPECT_EQ(f.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
}

// Invalid UTF-8, by cvene's contract: each stray byte is a non-letter, non-number
// character, maps to its byte-level token, and decodes to itself.
TEST(TokenizerGpt2, InvalidUtf8Contract) {
    SKIP_WITHOUT_GPT2();
    Tok t(kGpt2Dir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    int32_t y = cvene_tokenizer_token_id(t.tok, "\xc3\xbf"); // 'ÿ' stands for byte 0xFF
    int32_t c0 = cvene_tokenizer_token_id(t.tok, "\xc3\x80"); // 'À' stands for byte 0xC0
    ASSERT_GE(y, 0);
    ASSERT_GE(c0, 0);
    EXPECT_EQ(t.encode("\xff"), (std::vector<int32_t>{y}));
    EXPECT_EQ(t.encode("a\xff" "b"), (std::vector<int32_t>{64, y, 65}));       // letter, other, letter
    EXPECT_EQ(t.encode("\xc0"), (std::vector<int32_t>{c0}));                  // never a lead byte
    for (std::string s : {std::string("\xff\xfe"), std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
                          std::string("caf\xc3"), std::string("\xe2\x82"), std::string("x\0y", 3)})
        EXPECT_EQ(t.decode(t.encode(s)), s) << show(s);
    // Every single byte round-trips, alone and between letters.
    for (int b = 0; b < 256; b++) {
        std::string s(1, (char)b), w = "ab" + s + "cd";
        EXPECT_EQ(t.decode(t.encode(s)), s) << b;
        EXPECT_EQ(t.decode(t.encode(w)), w) << b;
    }
}

// ---- tokenizer.json (tiny vocabulary, add_prefix_space, ignore_merges, added tokens) ----

TEST(TokenizerJson, TinyCorpusMatchesTokenizers) {
    const Corpus &c = corpus();
    ASSERT_TRUE(c.error.empty()) << c.error;
    Tok t(kTinyDir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    Tok file(kTinyDir + "/tokenizer.json"); // the file itself, not its directory
    ASSERT_EQ(file.status, CVENE_OK) << file.error();
    int bad = 0, n = 0;
    for (const Case &k : c.cases) {
        if (!k.has_tiny) continue;
        n++;
        std::vector<int32_t> ids = t.encode(k.text);
        if (ids != k.tiny && ++bad <= 10)
            ADD_FAILURE() << "[" << k.tag << "] " << show(k.text) << "\n  expected " << show(k.tiny)
                          << "\n  got      " << show(ids);
        if (k.text.size() < 2000) {
            EXPECT_EQ(file.encode(k.text), ids);
        }
    }
    EXPECT_EQ(bad, 0) << "of " << n << " strings";
    EXPECT_GT(n, 2000);
    // Invalid UTF-8 (no reference ids): decode(encode(x)) is x with the prefix space.
    int rt = 0;
    for (const Case &k : c.cases) {
        if (k.has_tiny || k.text.empty() || k.text.find('|') != std::string::npos ||
            k.text.find("[MASK]") != std::string::npos)
            continue;
        rt++;
        EXPECT_EQ(t.decode(t.encode(k.text)), (k.text[0] == ' ' ? "" : " ") + k.text) << show(k.text);
    }
    EXPECT_GT(rt, 100);
}

TEST(TokenizerJson, TinyAddedTokensAndDecode) {
    Tok t(kTinyDir);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    const int32_t eot = cvene_tokenizer_token_id(t.tok, "<|endoftext|>");
    const int32_t user = cvene_tokenizer_token_id(t.tok, "<|user|>");
    const int32_t asst = cvene_tokenizer_token_id(t.tok, "<|assistant|>");
    const int32_t mask = cvene_tokenizer_token_id(t.tok, " [MASK]");
    const int32_t er = cvene_tokenizer_token_id(t.tok, "er|>");
    EXPECT_EQ(cvene_tokenizer_vocab_size(t.tok), er + 1);
    ASSERT_GE(eot, 0);
    EXPECT_EQ(t.encode("<|endoftext|>"), (std::vector<int32_t>{eot}));
    EXPECT_EQ(t.encode("<|assistant|>"), (std::vector<int32_t>{asst}));
    // "er|>" (normalized: false) is split out before "<|user|>" (normalized: true) is looked for.
    std::vector<int32_t> u = t.encode("<|user|>");
    EXPECT_EQ(u.back(), er);
    EXPECT_EQ(std::count(u.begin(), u.end(), user), 0);
    EXPECT_EQ(t.encode(" [MASK]"), (std::vector<int32_t>{mask}));
    // Added tokens decode to their content (" [MASK]": a space that is not byte-level).
    EXPECT_EQ(t.decode({eot, mask, asst}), "<|endoftext|> [MASK]<|assistant|>");
    // add_prefix_space: every stretch between added tokens gets one.
    EXPECT_EQ(t.decode(t.encode("a<|endoftext|>b")), " a<|endoftext|> b");
    EXPECT_EQ(t.decode(t.encode(" a")), " a");
    // ignore_merges: the whole word wins when the vocabulary has it.
    EXPECT_EQ(t.encode(" tokenizer"), (std::vector<int32_t>{cvene_tokenizer_token_id(t.tok, "\xc4\xa0tokenizer")}));
}

// ---- pre-tokenizer ------------------------------------------------------------------

std::vector<std::string> pieces(const std::string &s) {
    std::vector<std::string> out;
    struct U {
        const std::string *s;
        std::vector<std::string> *out;
    } u{&s, &out};
    tok_pretokenize(
        (const uint8_t *)s.data(), s.size(), 1,
        [](void *p, size_t a, size_t b) {
            U *x = (U *)p;
            x->out->push_back(x->s->substr(a, b - a));
            return 0;
        },
        &u);
    return out;
}

TEST(TokenizerPretok, Gpt2Regex) {
    using V = std::vector<std::string>;
    EXPECT_EQ(pieces(""), V{});
    EXPECT_EQ(pieces("  hello   world's"), (V{" ", " hello", "  ", " world", "'s"}));
    EXPECT_EQ(pieces("I'M you're 'S"), (V{"I", "'", "M", " you", "'re", " '", "S"}));
    EXPECT_EQ(pieces("a1b22 333!!x"), (V{"a", "1", "b", "22", " 333", "!!", "x"}));
    EXPECT_EQ(pieces("\t\t x"), (V{"\t\t", " x"}));
    EXPECT_EQ(pieces("\tx"), (V{"\t", "x"}));
    EXPECT_EQ(pieces("x  "), (V{"x", "  "}));
    EXPECT_EQ(pieces(" \xc2\xa0\xe3\x80\x80x"), (V{" \xc2\xa0", "\xe3\x80\x80", "x"})); // nbsp, ideographic
    EXPECT_EQ(pieces("caf\xc3\xa9 e\xcc\x81"), (V{"caf\xc3\xa9", " e", "\xcc\x81"}));   // combining mark: other
    EXPECT_EQ(pieces("a\xff\xfe" "b"), (V{"a", "\xff\xfe", "b"}));                      // invalid bytes: other
    EXPECT_EQ(pieces(" \xff"), (V{" \xff"}));
    std::vector<std::string> whole;
    std::string s = "no regex here";
    struct U {
        std::vector<std::string> *w;
        const std::string *s;
    } u{&whole, &s};
    tok_pretokenize((const uint8_t *)s.data(), s.size(), 0,
                    [](void *p, size_t a, size_t b) {
                        U *x = (U *)p;
                        x->w->push_back(x->s->substr(a, b - a));
                        return 0;
                    },
                    &u);
    EXPECT_EQ(whole, V{s});
}

TEST(TokenizerPretok, UnicodeClasses) {
    EXPECT_STREQ(tok_unicode_version(), "14.0.0");
    EXPECT_EQ(tok_class('a'), TOK_LETTER);
    EXPECT_EQ(tok_class(0x4E2D), TOK_LETTER);  // 中
    EXPECT_EQ(tok_class(0x1B11F), TOK_LETTER); // new in Unicode 14
    EXPECT_EQ(tok_class(0x11F04), TOK_OTHER);  // Kawi letter, Unicode 15: not yet
    EXPECT_EQ(tok_class('7'), TOK_NUMBER);
    EXPECT_EQ(tok_class(0xB2), TOK_NUMBER);    // superscript two (No)
    EXPECT_EQ(tok_class(0x2160), TOK_NUMBER);  // roman numeral one (Nl)
    EXPECT_EQ(tok_class(0x3000), TOK_SPACE);
    EXPECT_EQ(tok_class(0x85), TOK_SPACE);
    EXPECT_EQ(tok_class(0x1C), TOK_OTHER);     // Python's isspace() says yes; White_Space says no
    EXPECT_EQ(tok_class(0x180E), TOK_OTHER);
    EXPECT_EQ(tok_class(0x200B), TOK_OTHER);
    EXPECT_EQ(tok_class(0x301), TOK_OTHER);
    EXPECT_EQ(tok_class(0x1F600), TOK_OTHER);
    EXPECT_EQ(tok_class(0x10FFFF), TOK_OTHER);
    EXPECT_EQ(tok_class(0x110000), TOK_OTHER);
    int spaces = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) spaces += tok_class(cp) == TOK_SPACE;
    EXPECT_EQ(spaces, 25);
}

TEST(TokenizerPretok, Utf8Decoder) {
    auto dec = [](const std::string &s, uint32_t *cp) {
        return tok_utf8_next((const uint8_t *)s.data(), s.size(), 0, cp);
    };
    uint32_t cp;
    EXPECT_EQ(dec("A", &cp), 1u);
    EXPECT_EQ(cp, 0x41u);
    EXPECT_EQ(dec("\xc3\xa9", &cp), 2u);
    EXPECT_EQ(cp, 0xE9u);
    EXPECT_EQ(dec("\xe2\x82\xac", &cp), 3u);
    EXPECT_EQ(cp, 0x20ACu);
    EXPECT_EQ(dec("\xf0\x9f\x98\x80", &cp), 4u);
    EXPECT_EQ(cp, 0x1F600u);
    EXPECT_EQ(dec("\xf4\x8f\xbf\xbf", &cp), 4u);
    EXPECT_EQ(cp, 0x10FFFFu);
    for (std::string bad : {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                            "\xf5\x80\x80\x80", "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xe2\x28\xa1"}) {
        EXPECT_EQ(dec(bad, &cp), 1u) << show(bad);
        EXPECT_EQ(cp, TOK_INVALID_CP) << show(bad);
    }
}

// ---- bad input ------------------------------------------------------------------------

// GPT-2's byte -> character map, to write small byte-level vocabularies.
std::string byte_char(int b) {
    auto printable = [](int c) { return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255); };
    int cp = b;
    if (!printable(b)) {
        cp = 256;
        for (int c = 0; c < b; c++) cp += !printable(c);
    }
    std::string s;
    if (cp < 0x80) s += (char)cp;
    else s += (char)(0xC0 | (cp >> 6)), s += (char)(0x80 | (cp & 0x3F));
    return s;
}

std::string json_str(const std::string &s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        o += c;
    }
    return o + "\"";
}

// The 256 byte tokens (ids 0..255) plus extra tokens from id 256 on.
std::string vocab_json(const std::vector<std::string> &extra, int skip_byte = -1) {
    std::string o = "{\n";
    int id = 0;
    for (int b = 0; b < 256; b++, id++)
        if (b != skip_byte) o += json_str(byte_char(b)) + ": " + std::to_string(id) + ",\n";
    for (const std::string &e : extra) o += json_str(e) + ": " + std::to_string(id++) + ",\n";
    o.resize(o.size() - 2);
    return o + "\n}\n";
}

struct TmpDir {
    std::string path;
    explicit TmpDir(const std::string &name) : path(std::string(CVENE_TEST_TMP) + "/tok_" + name) {
        mkdir(CVENE_TEST_TMP, 0755);
        mkdir(path.c_str(), 0755);
        std::remove((path + "/tokenizer.json").c_str());
        std::remove((path + "/vocab.json").c_str());
        std::remove((path + "/merges.txt").c_str());
    }
    void put(const std::string &name, const std::string &text) const { write_text(path + "/" + name, text); }
};

// Loading dir must fail with status st and a message containing every part of want.
void expect_load_error(const TmpDir &d, cvene_status st, std::vector<std::string> want) {
    Tok t(d.path);
    EXPECT_EQ(t.status, st) << t.error();
    EXPECT_EQ(t.tok, nullptr);
    for (const std::string &w : want) EXPECT_NE(t.error().find(w), std::string::npos) << "'" << w << "' not in: " << t.error();
}

TEST(TokenizerErrors, SmallVocabularyWorks) {
    TmpDir d("small_ok");
    d.put("vocab.json", vocab_json({"ab", "abc", "\xc4\xa0" "ab"}));
    d.put("merges.txt", "#version: 0.2\r\na b\r\nab c\r\n\xc4\xa0 ab\r\n"); // CRLF endings
    Tok t(d.path);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    EXPECT_EQ(cvene_tokenizer_vocab_size(t.tok), 259);
    EXPECT_EQ(cvene_tokenizer_token_id(t.tok, "<|endoftext|>"), -1);
    // "abc" -> a b c -> ab c -> abc; " ab" -> Ġ a b -> Ġ ab -> Ġab; " abd" -> Ġab d
    EXPECT_EQ(t.encode("abc ab abd"), (std::vector<int32_t>{257, 258, 258, 'd'}));
    EXPECT_EQ(t.decode(t.encode("abc ab abd")), "abc ab abd");
    // Empty text, NULL text of length 0.
    int32_t *ids = nullptr;
    size_t n = 7;
    ASSERT_EQ(cvene_tokenizer_encode(t.tok, nullptr, 0, &ids, &n), CVENE_OK);
    EXPECT_NE(ids, nullptr);
    EXPECT_EQ(n, 0u);
    cvene_free(ids);
    EXPECT_EQ(cvene_tokenizer_encode(t.tok, nullptr, 3, &ids, &n), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(t.error().find("NULL"), std::string::npos) << t.error();
    char *text = nullptr;
    size_t len = 9;
    ASSERT_EQ(cvene_tokenizer_decode(t.tok, nullptr, 0, &text, &len), CVENE_OK);
    EXPECT_STREQ(text, "");
    EXPECT_EQ(len, 0u);
    cvene_free(text);
}

TEST(TokenizerErrors, DecodeOutOfRange) {
    TmpDir d("decode");
    // ids 0..255 bytes, 256 "ab", then a hole at 257, 258 "abc"
    std::string v = vocab_json({});
    v.resize(v.size() - 3);
    v += ",\n\"ab\": 256,\n\"abc\": 258\n}\n";
    d.put("vocab.json", v);
    d.put("merges.txt", "a b\nab c\n");
    Tok t(d.path);
    ASSERT_EQ(t.status, CVENE_OK) << t.error();
    EXPECT_EQ(cvene_tokenizer_vocab_size(t.tok), 259);
    EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{258}));
    for (int32_t bad : {-1, 259, 1 << 30, INT32_MIN}) {
        std::vector<int32_t> ids = {0, 1, bad};
        char *text = (char *)1;
        size_t len = 5;
        EXPECT_EQ(cvene_tokenizer_decode(t.tok, ids.data(), ids.size(), &text, &len), CVENE_ERR_INVALID_ARG);
        EXPECT_EQ(text, nullptr);
        EXPECT_NE(t.error().find("ids[2] = " + std::to_string(bad) + " is out of range [0, 259)"), std::string::npos)
            << t.error();
    }
    std::vector<int32_t> hole = {257};
    char *text = nullptr;
    size_t len = 0;
    EXPECT_EQ(cvene_tokenizer_decode(t.tok, hole.data(), 1, &text, &len), CVENE_ERR_INVALID_ARG);
    EXPECT_NE(t.error().find("ids[0] = 257 is not assigned"), std::string::npos) << t.error();
}

TEST(TokenizerErrors, MissingFiles) {
    TmpDir d("missing");
    expect_load_error(d, CVENE_ERR_IO, {d.path, "no tokenizer.json"});
    d.put("vocab.json", vocab_json({}));
    expect_load_error(d, CVENE_ERR_IO, {d.path + "/merges.txt", "cannot open"});
    Tok t(d.path + "/nope/tokenizer.json");
    EXPECT_EQ(t.status, CVENE_ERR_IO);
    EXPECT_NE(t.error().find("nope/tokenizer.json: cannot open"), std::string::npos) << t.error();
}

TEST(TokenizerErrors, MalformedVocab) {
    TmpDir d("vocab");
    d.put("merges.txt", "");
    d.put("vocab.json", "{\n\"a\": 1,\n\"b\" 2\n}\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {d.path + "/vocab.json", "malformed JSON at line 3"});
    d.put("vocab.json", "[1, 2]");
    expect_load_error(d, CVENE_ERR_FORMAT, {"vocab.json", "must be a JSON object"});
    d.put("vocab.json", "{}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"vocab.json", "empty"});
    d.put("vocab.json", "{\"a\": 1.5}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"vocab.json", "entry \"a\"", "integer", "1.5"});
    d.put("vocab.json", "{\"a\": \"1\"}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"entry \"a\"", "\"1\""});
    d.put("vocab.json", "{\"a\": -1}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"entry \"a\"", "-1"});
    d.put("vocab.json", "{\"a\": 99999999999}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"entry \"a\""});
    d.put("vocab.json", "{\"a\": 1, \"b\": 1}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"a\" and \"b\" both have id 1"});
    d.put("vocab.json", "{\"a\": 1, \"a\": 2}");
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"a\" appears twice"});
    d.put("vocab.json", "{\"a\": 1} x");
    expect_load_error(d, CVENE_ERR_FORMAT, {"line 1, column 10", "after the JSON value"});
    d.put("vocab.json", vocab_json({}, 0x20)); // no token for the space byte
    expect_load_error(d, CVENE_ERR_FORMAT, {"vocab.json", "no token for byte 0x20", "not a byte-level BPE"});
}

TEST(TokenizerErrors, MalformedMerges) {
    TmpDir d("merges");
    d.put("vocab.json", vocab_json({"ab", "abc"}));
    d.put("merges.txt", "#version: 0.2\na b\nab c d\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {d.path + "/merges.txt line 3", "two tokens", "ab c d"});
    d.put("merges.txt", "a b\nabc\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {"merges.txt line 2", "two tokens"});
    d.put("merges.txt", "a b\n\nab  c\n"); // blank lines are skipped; two spaces are not
    expect_load_error(d, CVENE_ERR_FORMAT, {"merges.txt line 3"});
    d.put("merges.txt", "a b\n a\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {"merges.txt line 2"});
    d.put("merges.txt", "a b\nab zz\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {"merges.txt line 2", "token \"zz\" is not in the vocabulary"});
    d.put("merges.txt", "a b\nb c\n");
    expect_load_error(d, CVENE_ERR_FORMAT, {"merges.txt line 2", "merged token \"bc\" is not in the vocabulary"});
}

// A tokenizer.json around the given parts (model vocab: bytes + "ab").
std::string tokenizer_json(const std::string &normalizer, const std::string &pre, const std::string &model_extra,
                           const std::string &merges, const std::string &added) {
    return "{\"version\": \"1.0\", \"added_tokens\": " + added + ", \"normalizer\": " + normalizer +
           ", \"pre_tokenizer\": " + pre + ", \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"}," +
           " \"model\": {\"type\": \"BPE\"" + model_extra + ", \"vocab\": " + vocab_json({"ab"}) +
           ", \"merges\": " + merges + "}}";
}

TEST(TokenizerErrors, TokenizerJson) {
    TmpDir d("json");
    const std::string bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}";
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[\"a b\"]", "[]"));
    {
        Tok t(d.path);
        ASSERT_EQ(t.status, CVENE_OK) << t.error();
        EXPECT_EQ(t.encode("ab"), (std::vector<int32_t>{256}));
    }
    d.put("tokenizer.json", tokenizer_json("{\"type\": \"NFC\"}", bl, "", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"tokenizer.json", "normalizer \"NFC\""});
    d.put("tokenizer.json", tokenizer_json("null", "{\"type\": \"Metaspace\"}", "", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"pre_tokenizer \"Metaspace\"", "only ByteLevel"});
    d.put("tokenizer.json", tokenizer_json("null", "null", "", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"pre_tokenizer null"});
    d.put("tokenizer.json", tokenizer_json("null", "{\"type\": \"ByteLevel\", \"add_prefix_space\": 1}", "", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"pre_tokenizer\".\"add_prefix_space\"", "true or false"});
    d.put("tokenizer.json", tokenizer_json("null", bl, ", \"dropout\": 0.1", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"\"dropout\"", "0.1"});
    d.put("tokenizer.json", tokenizer_json("null", bl, ", \"continuing_subword_prefix\": \"##\"", "[]", "[]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"continuing_subword_prefix"});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[\"a b\", \"ab\"]", "[]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"model\".\"merges\"[1]", "expected \"A B\""});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[[\"a\", \"b\"], [\"ab\", \"zz\"]]", "[]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"model\".\"merges\"[1]", "\"zz\" is not in the vocabulary"});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "{}", "[]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"merges\": must be an array"});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[]",
                                           "[{\"id\": 300, \"content\": \"<mask>\", \"lstrip\": true}]"));
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"\"added_tokens\"[0]", "<mask>", "lstrip"});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[]", "[{\"id\": \"x\", \"content\": \"<m>\"}]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"\"added_tokens\"[0].\"id\""});
    d.put("tokenizer.json", tokenizer_json("null", bl, "", "[]", "[{\"id\": 5, \"content\": \"\"}]"));
    expect_load_error(d, CVENE_ERR_FORMAT, {"empty content"});
    std::string wp = tokenizer_json("null", bl, "", "[]", "[]");
    wp.replace(wp.find("\"BPE\""), 5, "\"WordPiece\"");
    d.put("tokenizer.json", wp);
    expect_load_error(d, CVENE_ERR_UNSUPPORTED, {"\"WordPiece\"", "only \"BPE\""});
    d.put("tokenizer.json", vocab_json({}));
    expect_load_error(d, CVENE_ERR_FORMAT, {"not a tokenizer.json (no \"model\")"});
    d.put("tokenizer.json", "{\"model\": \n\n  {\"type\": }");
    expect_load_error(d, CVENE_ERR_FORMAT, {"tokenizer.json: malformed JSON at line 3"});
}

TEST(TokenizerErrors, NullArguments) {
    cvene_tokenizer *tok = (cvene_tokenizer *)1;
    EXPECT_EQ(cvene_tokenizer_load(nullptr, "x", &tok), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(tok, nullptr);
    EXPECT_EQ(cvene_tokenizer_load(nullptr, "x", nullptr), CVENE_ERR_INVALID_ARG);
    EXPECT_EQ(cvene_tokenizer_vocab_size(nullptr), 0);
    EXPECT_EQ(cvene_tokenizer_token_id(nullptr, "a"), -1);
    cvene_tokenizer_free(nullptr);
    int32_t *ids;
    size_t n;
    EXPECT_EQ(cvene_tokenizer_encode(nullptr, "a", 1, &ids, &n), CVENE_ERR_INVALID_ARG);
}

} // namespace
