/* libFuzzer harness: vocab.json + merges.txt (models/tokenizer.c, cvene_tokenizer_load_bpe).
 *
 * The input is vocab.json, a NUL byte, then merges.txt (JSON cannot hold a raw NUL; with no
 * NUL, merges.txt is empty), optionally a second NUL and a text (a NUL in merges.txt is an
 * error anyway). An accepted tokenizer must pass fuzz_tok.c's probe, on that text too. */
#include <string.h>

#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 262144) return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t vlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *nul2 = nul ? memchr(nul + 1, 0, size - vlen - 1) : NULL;
    const uint8_t *mend = nul2 ? nul2 : data + size;
    char vocab[FUZZ_PATH_MAX], merges[FUZZ_PATH_MAX];
    fuzz_path(vocab, "vocab.json");
    fuzz_path(merges, "merges.txt");
    fuzz_write(vocab, data, vlen);
    fuzz_write(merges, nul ? nul + 1 : data, nul ? (size_t)(mend - nul - 1) : 0);
    cvene_tokenizer *tok = NULL;
    cvene_status st = cvene_tokenizer_load_bpe(fuzz_ctx(), vocab, merges, &tok);
    fuzz_note("cvene_tokenizer_load_bpe", st);
    if (st != CVENE_OK) {
        if (tok) fuzz_fail("a refused tokenizer was returned");
        return 0;
    }
    fuzz_tok_probe(tok, "fuzzed vocab.json + merges.txt");
    if (nul2) {
        size_t n;
        cvene_free(fuzz_tok_check(tok, "fuzzed vocab.json + merges.txt, the input's text", (const char *)nul2 + 1,
                                  size - (size_t)(nul2 + 1 - data), 0, &n));
    }
    cvene_tokenizer_free(tok);
    return 0;
}
