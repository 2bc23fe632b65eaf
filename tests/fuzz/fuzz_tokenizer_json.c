/* libFuzzer harness: tokenizer.json (models/tokenizer.c, cvene_tokenizer_load on a file).
 *
 * The input is the file. An accepted tokenizer must encode the probe texts of fuzz_tok.c
 * with all three merge loops agreeing, ids in range, and decode its own ids. */
#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 262144) return 0;
    char path[FUZZ_PATH_MAX];
    fuzz_path(path, "tokenizer.json");
    fuzz_write(path, data, size);
    cvene_tokenizer *tok = NULL;
    cvene_status st = cvene_tokenizer_load(fuzz_ctx(), path, &tok);
    fuzz_note("cvene_tokenizer_load", st);
    if (st != CVENE_OK) {
        if (tok) fuzz_fail("a refused tokenizer was returned");
        return 0;
    }
    fuzz_tok_probe(tok, "fuzzed tokenizer.json");
    cvene_tokenizer_free(tok);
    return 0;
}
