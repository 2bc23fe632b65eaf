#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer.h"
#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

static void show(const char *text, size_t len) {
    fputs("text (C escapes): \"", stderr);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fputs("\"\n", stderr);
}

int32_t *fuzz_tok_check(const cvene_tokenizer *tok, const char *what, const char *text, size_t len, int exact,
                        size_t *n_ids) {
    int32_t *ids[3] = {NULL, NULL, NULL};
    size_t n[3] = {0, 0, 0};
    static const char *const mode_name[3] = {"auto", "scan", "heap"};
    const int modes[3] = {TOK_BPE_AUTO, TOK_BPE_SCAN, TOK_BPE_HEAP};
    for (int k = 0; k < 3; k++)
        fuzz_ok(tok_encode_mode(tok, text, len, modes[k], &ids[k], &n[k]), "encode");
    for (int k = 1; k < 3; k++)
        if (n[k] != n[0] || (n[0] && memcmp(ids[k], ids[0], n[0] * sizeof(int32_t)) != 0)) {
            show(text, len);
            fuzz_fail("%s: the %s merge loop gives %zu ids, the %s loop %zu (or other ids)", what, mode_name[k], n[k],
                      mode_name[0], n[0]);
        }
    const int V = cvene_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n[0]; i++)
        if (ids[0][i] < 0 || ids[0][i] >= V) fuzz_fail("%s: encode gave id %d, vocab_size %d", what, ids[0][i], V);
    char *back = NULL;
    size_t blen = 0;
    fuzz_ok(cvene_tokenizer_decode(tok, ids[0], n[0], &back, &blen), "decoding encode's own ids");
    if (exact && (blen != len || (len && memcmp(back, text, len) != 0))) {
        show(text, len);
        show(back, blen);
        fuzz_fail("%s: decode(encode(text)) is not the text (%zu bytes -> %zu ids -> %zu bytes)", what, len, n[0],
                  blen);
    }
    cvene_free(back);
    cvene_free(ids[1]);
    cvene_free(ids[2]);
    *n_ids = n[0];
    return ids[0];
}

void fuzz_tok_probe(const cvene_tokenizer *tok, const char *what) {
    static const char *const texts[] = {
        "Hello world, it's 2024!", " the  quick\tbrown\n\nfox's   ", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xe4\xb8\x96\xe7\x95\x8c",
        "\xff\xfe\xc3 invalid \x80", "<|endoftext|>a<|endoftext|>",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        size_t n;
        cvene_free(fuzz_tok_check(tok, what, texts[k], strlen(texts[k]), 0, &n));
    }
    int32_t eot = cvene_tokenizer_token_id(tok, "<|endoftext|>");
    if (eot >= 0) { /* decodes; to other text when an added token reuses a vocabulary entry's id */
        char *s = NULL;
        size_t len = 0;
        fuzz_ok(cvene_tokenizer_decode(tok, &eot, 1, &s, &len), "decoding <|endoftext|>'s id");
        cvene_free(s);
    }
}
