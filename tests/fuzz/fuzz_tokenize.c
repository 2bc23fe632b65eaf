/* libFuzzer harness: encode / decode of arbitrary bytes (models/tokenizer.c,
 * models/tokenizer_pretok.c) with fixed real tokenizers.
 *
 * The input is the text. Tokenizers: assets/demo-gpt2 read from its tokenizer.json and from
 * its vocab.json + merges.txt (no prefix space: decode(encode(x)) must be exactly x, as
 * include/cvene.h promises for every byte string, and both readings must give the same ids),
 * and tests/fixtures/tokenizer/tiny (add_prefix_space, ignore_merges, added tokens of both
 * kinds: the merge loops must agree and decode must accept the ids). The input's bytes read
 * as 16-bit ids are also decoded with the demo tokenizer and the decoded text round-tripped:
 * token-shaped text reaches merges random bytes rarely do. */
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

static cvene_tokenizer *demo_json, *demo_bpe, *tiny;

static void free_all(void) {
    cvene_tokenizer_free(demo_json);
    cvene_tokenizer_free(demo_bpe);
    cvene_tokenizer_free(tiny);
}

static void setup(void) {
    char a[FUZZ_PATH_MAX], b[FUZZ_PATH_MAX];
    fuzz_asset(a, "demo-gpt2/tokenizer.json");
    fuzz_ok(cvene_tokenizer_load(fuzz_ctx(), a, &demo_json), a);
    fuzz_asset(a, "demo-gpt2/vocab.json");
    fuzz_asset(b, "demo-gpt2/merges.txt");
    fuzz_ok(cvene_tokenizer_load_bpe(fuzz_ctx(), a, b, &demo_bpe), a);
    fuzz_fixture(a, "tokenizer/tiny/tokenizer.json");
    fuzz_ok(cvene_tokenizer_load(fuzz_ctx(), a, &tiny), a);
    atexit(free_all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* longer texts only slow the search: pieces past 48 bytes already take the heap */
    if (!demo_json) setup();
    const char *text = (const char *)data;
    size_t n_json, n_bpe, n_tiny;
    int32_t *ids_json = fuzz_tok_check(demo_json, "demo tokenizer.json", text, size, 1, &n_json);
    int32_t *ids_bpe = fuzz_tok_check(demo_bpe, "demo vocab.json + merges.txt", text, size, 1, &n_bpe);
    if (n_json != n_bpe || (n_json && memcmp(ids_json, ids_bpe, n_json * sizeof(int32_t)) != 0))
        fuzz_fail("the demo tokenizer read from tokenizer.json and from vocab.json + merges.txt disagree "
                  "(%zu vs %zu ids)", n_json, n_bpe);
    cvene_free(ids_json);
    cvene_free(ids_bpe);
    cvene_free(fuzz_tok_check(tiny, "tiny tokenizer.json", text, size, 0, &n_tiny));

    /* the bytes as ids, decoded, and that text round-tripped */
    const int V = cvene_tokenizer_vocab_size(demo_json);
    size_t n = size / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) fuzz_fail("out of memory");
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((data[2 * i] | data[2 * i + 1] << 8) % V);
    char *dec = NULL;
    size_t dlen = 0;
    fuzz_ok(cvene_tokenizer_decode(demo_json, ids, n, &dec, &dlen), "decoding ids in [0, vocab_size)");
    size_t n2;
    cvene_free(fuzz_tok_check(demo_json, "demo tokenizer.json, decoded ids", dec, dlen, 1, &n2));
    cvene_free(dec);
    free(ids);
    return 0;
}
