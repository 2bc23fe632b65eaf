/* libFuzzer harness: tokenizer.json (models/tokenizer.c, cvene_tokenizer_load on a file).
 *
 * The input is the file, optionally followed by a NUL byte and a text (JSON cannot hold a
 * raw NUL), so tokenizer and text mutate together. An accepted tokenizer must encode the
 * probe texts of fuzz_tok.c and that text with all three merge loops agreeing, ids in range,
 * and decode its own ids. */
#include <string.h>

#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 262144) return 0;
    char path[FUZZ_PATH_MAX];
    fuzz_path(path, "tokenizer.json");
    const uint8_t *nul = memchr(data, 0, size);
    fuzz_write(path, data, nul ? (size_t)(nul - data) : size);
    cvene_tokenizer *tok = NULL;
    cvene_status st = cvene_tokenizer_load(fuzz_ctx(), path, &tok);
    fuzz_note("cvene_tokenizer_load", st);
    if (st != CVENE_OK) {
        if (tok) fuzz_fail("a refused tokenizer was returned");
        return 0;
    }
    fuzz_tok_probe(tok, "fuzzed tokenizer.json");
    if (nul) {
        size_t n;
        cvene_free(fuzz_tok_check(tok, "fuzzed tokenizer.json, the input's text", (const char *)nul + 1,
                                  size - (size_t)(nul + 1 - data), 0, &n));
    }
    cvene_tokenizer_free(tok);
    return 0;
}
