/* GPT-2's pre-tokenizer without a regex engine.
 *
 * The pattern (tokenizers' ByteLevel, OpenAI's encoder.py) is
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * tried at each position, first alternative that matches wins, matches are greedy and
 * consecutive (every character is in one of the four classes, so there are no gaps).
 * With L letter, N number, S white space and O anything else, at position i:
 *   1. "'" followed by s t m d (or re ve ll), case-sensitive: the contraction.
 *   2. " " followed by a character of class L, N or O: the space plus the run of that class.
 *   3. A character of class L, N or O: the run of that class.
 *   4. White space: the run of white space up to j. If the text ends at j, all of it;
 *      else, when the run has two or more characters, all but its last character
 *      (\s+(?!\S) backtracks one character so the last space can lead the next word);
 *      else the single character (\s+).
 * Invalid UTF-8 bytes are one character each of class O.
 */
#include "models/tokenizer.h"
#include "models/tokenizer_unicode.h"

int tok_class(uint32_t cp) {
    if (cp > 0x10FFFF) return TOK_OTHER;
    return (tok_uc_stage2[tok_uc_stage1[cp >> 8]][(cp & 255) >> 2] >> (2 * (cp & 3))) & 3;
}

const char *tok_unicode_version(void) { return TOK_UNICODE_VERSION; }

size_t tok_utf8_next(const uint8_t *s, size_t n, size_t i, uint32_t *cp) {
    uint8_t b = s[i];
    if (b < 0x80) {
        *cp = b;
        return i + 1;
    }
    size_t len;
    uint32_t c;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (b == 0xED) hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else {
        *cp = TOK_INVALID_CP;
        return i + 1;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) {
        *cp = TOK_INVALID_CP;
        return i + 1;
    }
    c = (c << 6) | (s[i + 1] & 0x3F);
    for (size_t k = 2; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *cp = TOK_INVALID_CP;
            return i + 1;
        }
        c = (c << 6) | (s[i + k] & 0x3F);
    }
    *cp = c;
    return i + len;
}

/* ASCII classes, so the common case needs no table walk. */
static const uint8_t ascii_class[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, /* \t \n \v \f \r */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* space */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, /* 0-9 */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* A-O */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, /* P-Z */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* a-o */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, /* p-z */
};

/* Class of the character at s[i]; *next is the index after it. */
static inline int class_at(const uint8_t *s, size_t n, size_t i, size_t *next) {
    if (s[i] < 0x80) {
        *next = i + 1;
        return ascii_class[s[i]];
    }
    uint32_t cp;
    *next = tok_utf8_next(s, n, i, &cp);
    return cp == TOK_INVALID_CP ? TOK_OTHER : tok_class(cp);
}

/* End of the run of class cls that starts at i (s[i] is known to be of that class). */
static size_t run_end(const uint8_t *s, size_t n, size_t i, int cls) {
    size_t next;
    while (i < n && class_at(s, n, i, &next) == cls) i = next;
    return i;
}

/* Length of a contraction at s[i] == '\'' (0 if none). */
static size_t contraction(const uint8_t *s, size_t n, size_t i) {
    if (n - i >= 2) {
        uint8_t c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
        if (n - i >= 3) {
            uint8_t c2 = s[i + 2];
            if ((c == 'r' && c2 == 'e') || (c == 'v' && c2 == 'e') || (c == 'l' && c2 == 'l'))
                return 3;
        }
    }
    return 0;
}

int tok_pretokenize(const uint8_t *s, size_t n, int use_regex, tok_piece_fn fn, void *user) {
    if (n == 0) return 0;
    if (!use_regex) return fn(user, 0, n);
    size_t i = 0;
    while (i < n) {
        size_t next, end = 0, after;
        int cls = class_at(s, n, i, &next), c2 = TOK_OTHER;
        if (s[i] == '\'' && (end = contraction(s, n, i)) != 0) {
            end += i;
        } else if (s[i] == ' ' && next < n && (c2 = class_at(s, n, next, &after)) != TOK_SPACE) {
            end = run_end(s, n, after, c2); /* ' ?X+' with the leading space */
        } else if (cls != TOK_SPACE) {
            end = run_end(s, n, next, cls);
        } else {
            /* White space: find the run, remembering where its last character starts. */
            size_t last = i, j = next;
            while (j < n && class_at(s, n, j, &after) == TOK_SPACE) {
                last = j;
                j = after;
            }
            if (j == n || last == i) end = j; /* \s+(?!\S) at the end, or \s+ */
            else end = last;                  /* \s+(?!\S): leave the last one */
        }
        int r = fn(user, i, end);
        if (r) return r;
        i = end;
    }
    return 0;
}
