/* Checks shared by the tokenizer harnesses (fuzz_tokenizer_json.c, fuzz_tokenizer_bpe.c,
 * fuzz_tokenize.c). */
#ifndef CVENE_FUZZ_TOK_H
#define CVENE_FUZZ_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "cvene.h"

/* Encode text[0, len) with every merge loop (models/tokenizer.h: auto, scan, heap), which
 * must give the same ids, each in [0, vocab_size); decode them, which must succeed. With
 * exact = 1 the decoded bytes must be the text (include/cvene.h's promise; only for a
 * tokenizer without add_prefix_space and whose added tokens do not reuse vocabulary ids).
 * Returns the ids (malloc'd, *n_ids of them) for further checks; aborts on any violation. */
int32_t *fuzz_tok_check(const cvene_tokenizer *tok, const char *what, const char *text, size_t len, int exact,
                        size_t *n_ids);

/* A few texts that reach every part of an encoder: words, numbers, contractions, spaces,
 * UTF-8 letters, invalid bytes, a special token, a piece long enough for the heap loop. */
void fuzz_tok_probe(const cvene_tokenizer *tok, const char *what);

#endif
