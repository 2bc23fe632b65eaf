/* Tokenizer internals shared by models/tokenizer.c, models/tokenizer_pretok.c and the
 * tests (not public; the API is in include/cvene.h). */
#ifndef CVENE_TOKENIZER_H
#define CVENE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cvene.h"

/* Character classes of GPT-2's pre-tokenizer regex (see tools/make_tokenizer_unicode.py). */
enum { TOK_OTHER = 0, TOK_LETTER = 1, TOK_NUMBER = 2, TOK_SPACE = 3 };

/* Class of a code point (TOK_OTHER above U+10FFFF). */
int tok_class(uint32_t cp);
/* Unicode version of the class table ("14.0.0"). */
const char *tok_unicode_version(void);

/* Decode the UTF-8 sequence at s[i] (i < n). Returns the index after it and stores the
 * code point. A byte that does not start a well-formed sequence (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF, no truncation) is consumed alone and yields
 * TOK_INVALID_CP, which is classed TOK_OTHER. */
#define TOK_INVALID_CP 0xFFFFFFFFu
size_t tok_utf8_next(const uint8_t *s, size_t n, size_t i, uint32_t *cp);

/* One pre-token: bytes [start, end) of the text. Return non-zero to stop the split. */
typedef int (*tok_piece_fn)(void *user, size_t start, size_t end);

/* Split s[0, n) as GPT-2's regex does (use_regex = 1), or as one piece (use_regex = 0).
 * Calls fn for each piece in order; pieces are non-empty and tile the text. Returns the
 * first non-zero value of fn, else 0. */
int tok_pretokenize(const uint8_t *s, size_t n, int use_regex, tok_piece_fn fn, void *user);

/* cvene_tokenizer_encode with a chosen merge loop, so tests can check that both agree:
 * TOK_BPE_AUTO scans short pieces and uses a heap for long ones, TOK_BPE_SCAN and
 * TOK_BPE_HEAP use one loop for every piece. */
enum { TOK_BPE_AUTO = 0, TOK_BPE_SCAN = 1, TOK_BPE_HEAP = 2 };
cvene_status tok_encode_mode(const cvene_tokenizer *tok, const char *text, size_t len, int mode,
                             int32_t **ids, size_t *n_ids);

#endif
