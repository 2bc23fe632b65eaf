/* Text <-> token ids for the CLI, through the tokenizer files of the model
 * directory (loaded on first use, so id-only commands never need them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/cli.h"

static int ensure(cli_text *tx, int quiet) {
    if (tx->tok) return 0;
    if (!tx->failed && cvene_tokenizer_load(tx->ctx, tx->dir, &tx->tok) == CVENE_OK) return 0;
    if (!quiet) fprintf(stderr, "cvene: text needs the model's tokenizer: %s\n", cvene_ctx_error(tx->ctx));
    tx->failed = 1;
    return -1;
}

int cli_text_encode(cli_text *tx, const char *text, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (ensure(tx, 0) != 0) return -1;
    size_t k = 0;
    if (cvene_tokenizer_encode(tx->tok, text, strlen(text), ids, &k) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(tx->ctx));
        return -1;
    }
    *n = (int)k;
    return 0;
}

char *cli_text_token_label(cli_text *tx, int32_t id) {
    char *s = NULL;
    size_t len = 0;
    if (ensure(tx, 1) == 0 && cvene_tokenizer_decode(tx->tok, &id, 1, &s, &len) == CVENE_OK) return s;
    /* no tokenizer: label tokens by id */
    s = malloc(24);
    if (s) snprintf(s, 24, "#%d", (int)id);
    return s;
}

void cli_text_free(cli_text *tx) {
    cvene_tokenizer_free(tx->tok);
    tx->tok = NULL;
}
