/* Byte-level BPE tokenizer (GPT-2 / Hugging Face GPT2TokenizerFast): loading from
 * vocab.json + merges.txt or tokenizer.json, encode, decode.
 *
 * Encode: added tokens are split out of the text (those with "normalized": false first,
 * then the others in the gaps, leftmost-longest, as tokenizers' AddedVocabulary does);
 * each remaining segment gets the prefix space (add_prefix_space), is pre-tokenized
 * (models/tokenizer_pretok.c), and each piece's bytes become their byte-level tokens,
 * merged by rank: repeatedly the lowest-ranked adjacent pair, the leftmost on ties. That
 * is what tokenizers' heap of (rank, position) with stale-entry checks computes; short
 * pieces scan for the minimum (fast, O(n^2)), long ones use the heap (O(n log n)).
 * Nothing is cached, so encode never writes to the tokenizer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "kernels/ctx.h"
#include "models/byte_trie.h"
#include "models/fileio.h"
#include "models/tokenizer.h"

#define TOK_MAX_ID (1 << 24)        /* ids must be below this */
#define TOK_MAX_FILE ((size_t)1 << 30)    /* vocab / merges / tokenizer.json size limit */
#define TOK_SCAN_MAX 48             /* pieces up to this many bytes: scanning merge loop */
#define NO_RANK 0xFFFFFFFFu
#define NO_STR 0xFFFFFFFFu

typedef struct {
    uint64_t key; /* (left id << 32) | right id; EMPTY_KEY when free */
    uint32_t rank;
    int32_t id;
} merge_slot;
#define EMPTY_KEY 0xFFFFFFFFFFFFFFFFull

typedef struct {
    uint32_t hash;
    int32_t id; /* -1 when free */
} str_slot;

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in astr */
    int normalized, special;
} added_token;

struct cvene_tokenizer {
    cvene_ctx *ctx;
    int32_t n_ids; /* largest id + 1 */
    /* model vocabulary: id -> byte-level string, and a hash string -> id */
    char *vstr;
    size_t vstr_len;
    uint32_t *str_off, *str_len; /* [n_ids]; str_len NO_STR: no model token */
    str_slot *vhash;
    uint32_t vmask;
    /* merges: (left, right) -> (rank, merged id) */
    merge_slot *mhash;
    uint32_t mmask, n_merges;
    int32_t byte_id[256]; /* token of each byte */
    /* added tokens */
    added_token *added;
    int n_added, cap_added;
    char *astr;
    size_t astr_len, astr_cap;
    uint8_t afirst[2][256]; /* [normalized][byte]: some added token of that pass starts with it */
    byte_trie atrie[2];     /* [normalized]: content -> index into added */
    /* id -> the bytes it decodes to */
    uint8_t *dec;
    size_t *dec_off;   /* [n_ids + 1] */
    uint8_t *assigned; /* [n_ids] */
    char bl[256][2]; /* byte-level form of each byte (UTF-8, 1 or 2 bytes) */
    uint8_t bl_len[256];
    int add_prefix_space, use_regex, ignore_merges;
};

/* ---- GPT-2's byte <-> unicode mapping ------------------------------------ */

/* Bytes that print (33..126, 161..172, 174..255) stand for themselves; the others take
 * the code points 256, 257, ... in byte order. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) k++;
    return 256u + (uint32_t)k;
}

static size_t put_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12)); /* every code point used here is below 0x10000 */
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* ---- hashing ---------------------------------------------------------------- */

static uint32_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

static uint32_t table_size(size_t n) { /* power of two >= 2n */
    uint32_t sz = 16;
    while (sz < 2 * n) sz <<= 1;
    return sz;
}

static inline uint32_t merge_hash(uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32);
}

static inline const merge_slot *merge_find(const cvene_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t i = merge_hash(key) & t->mmask;; i = (i + 1) & t->mmask) {
        const merge_slot *m = &t->mhash[i];
        if (m->key == key) return m;
        if (m->key == EMPTY_KEY) return NULL;
    }
}

/* Vocabulary lookup of a byte-level string; -1 when absent. */
static int32_t vocab_find(const cvene_tokenizer *t, const char *s, size_t n) {
    uint32_t h = hash_bytes(s, n);
    for (uint32_t i = h & t->vmask;; i = (i + 1) & t->vmask) {
        const str_slot *e = &t->vhash[i];
        if (e->id < 0) return -1;
        if (e->hash == h && t->str_len[e->id] == n && memcmp(t->vstr + t->str_off[e->id], s, n) == 0)
            return e->id;
    }
}

/* ---- files -------------------------------------------------------------------- */

static cvene_status read_file(cvene_ctx *ctx, const char *path, char **buf, size_t *len) {
    char why[4200];
    cvene_status st = file_read_all(path, TOK_MAX_FILE, buf, len, why, sizeof why);
    return st == CVENE_OK ? CVENE_OK : cvene_fail(ctx, st, "%s", why);
}

/* Line and column (1-based) of byte offset at in buf. */
static void line_col(const char *buf, size_t at, long *line, long *col) {
    long l = 1, c = 1;
    for (size_t i = 0; i < at; i++) {
        if (buf[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static cvene_status parse_json(cvene_ctx *ctx, const char *path, const char *buf, size_t len,
                               cJSON **out) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (root) {
        while (end < buf + len && strchr(" \t\n\r", *end) && *end) end++;
        if (end < buf + len) {
            long l, c;
            line_col(buf, (size_t)(end - buf), &l, &c);
            cJSON_Delete(root);
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: line %ld, column %ld: unexpected text after the JSON value",
                              path, l, c);
        }
        *out = root;
        return CVENE_OK;
    }
    if (!end) end = buf;
    long l, c;
    line_col(buf, (size_t)(end - buf), &l, &c);
    return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: malformed JSON at line %ld, column %ld", path, l, c);
}

static const char *json_desc(const cJSON *j, char *buf, size_t len) {
    if (!j) snprintf(buf, len, "nothing");
    else if (cJSON_IsNull(j)) snprintf(buf, len, "null");
    else if (cJSON_IsBool(j)) snprintf(buf, len, "%s", cJSON_IsTrue(j) ? "true" : "false");
    else if (cJSON_IsNumber(j)) snprintf(buf, len, "%.17g", j->valuedouble);
    else if (cJSON_IsString(j)) snprintf(buf, len, "\"%.64s\"", j->valuestring);
    else if (cJSON_IsArray(j)) snprintf(buf, len, "an array");
    else if (cJSON_IsObject(j)) snprintf(buf, len, "an object");
    else snprintf(buf, len, "invalid JSON");
    return buf;
}

/* ---- building ---------------------------------------------------------------- */

/* A JSON number that is a valid id: an integer in [0, TOK_MAX_ID). */
static int json_is_id(const cJSON *j) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    return v >= 0 && v < TOK_MAX_ID && v == (double)(int32_t)v;
}

void cvene_tokenizer_free(cvene_tokenizer *t) {
    if (!t) return;
    free(t->vstr);
    free(t->str_off);
    free(t->str_len);
    free(t->vhash);
    free(t->mhash);
    free(t->added);
    free(t->astr);
    byte_trie_free(&t->atrie[0]);
    byte_trie_free(&t->atrie[1]);
    free(t->dec);
    free(t->dec_off);
    free(t->assigned);
    free(t);
}

static cvene_status oom(cvene_ctx *ctx, const char *what) {
    return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory building the tokenizer (%s)", what);
}

/* Grow the per-id arrays to hold ids < n. */
static cvene_status ensure_ids(cvene_tokenizer *t, int32_t n) {
    if (n <= t->n_ids) return CVENE_OK;
    uint32_t *off = realloc(t->str_off, (size_t)n * sizeof *off);
    if (off) t->str_off = off;
    uint32_t *len = realloc(t->str_len, (size_t)n * sizeof *len);
    if (len) t->str_len = len;
    if (!off || !len) return oom(t->ctx, "id table");
    for (int32_t i = t->n_ids; i < n; i++) {
        t->str_off[i] = 0;
        t->str_len[i] = NO_STR;
    }
    t->n_ids = n;
    return CVENE_OK;
}

/* The model vocabulary: a JSON object token -> id. where names it in messages. */
static cvene_status load_vocab(cvene_tokenizer *t, const cJSON *obj, const char *where) {
    cvene_ctx *ctx = t->ctx;
    char desc[96];
    if (!cJSON_IsObject(obj))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: must be a JSON object {\"token\": id, ...}, got %s",
                          where, json_desc(obj, desc, sizeof desc));
    size_t n = 0, bytes = 0;
    int32_t max_id = -1;
    for (const cJSON *e = obj->child; e; e = e->next) {
        if (!json_is_id(e))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: entry \"%.64s\": the id must be an integer in [0, %d], got %s",
                              where, e->string ? e->string : "", TOK_MAX_ID - 1, json_desc(e, desc, sizeof desc));
        if ((int32_t)e->valuedouble > max_id) max_id = (int32_t)e->valuedouble;
        n++;
        bytes += strlen(e->string) + 1;
    }
    if (n == 0) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: the vocabulary is empty", where);
    if (bytes > 0xFFFFFFF0u) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: vocabulary strings exceed 4 GiB", where);
    CVENE_TRY(ensure_ids(t, max_id + 1));
    t->vstr = malloc(bytes);
    t->vmask = table_size(n) - 1;
    t->vhash = malloc(((size_t)t->vmask + 1) * sizeof *t->vhash);
    if (!t->vstr || !t->vhash) return oom(ctx, "vocabulary");
    for (size_t i = 0; i <= t->vmask; i++) t->vhash[i].id = -1;
    for (const cJSON *e = obj->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        size_t len = strlen(e->string);
        if (t->str_len[id] != NO_STR)
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tokens \"%.64s\" and \"%.64s\" both have id %d",
                              where, t->vstr + t->str_off[id], e->string, (int)id);
        uint32_t h = hash_bytes(e->string, len);
        uint32_t i = h & t->vmask;
        for (; t->vhash[i].id >= 0; i = (i + 1) & t->vmask) {
            int32_t o = t->vhash[i].id;
            if (t->vhash[i].hash == h && t->str_len[o] == len &&
                memcmp(t->vstr + t->str_off[o], e->string, len) == 0)
                return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: token \"%.64s\" appears twice (ids %d and %d)",
                                  where, e->string, (int)o, (int)id);
        }
        t->vhash[i].hash = h;
        t->vhash[i].id = id;
        memcpy(t->vstr + t->vstr_len, e->string, len + 1);
        t->str_off[id] = (uint32_t)t->vstr_len;
        t->str_len[id] = (uint32_t)len;
        t->vstr_len += len + 1;
    }
    return CVENE_OK;
}

static cvene_status merges_alloc(cvene_tokenizer *t, size_t n) {
    t->mmask = table_size(n) - 1;
    t->mhash = malloc(((size_t)t->mmask + 1) * sizeof *t->mhash);
    if (!t->mhash) return oom(t->ctx, "merges");
    for (size_t i = 0; i <= t->mmask; i++) t->mhash[i].key = EMPTY_KEY;
    return CVENE_OK;
}

/* Add the next merge (rank = merges so far): a + b. where locates it for messages
 * ("merges.txt line 7"). */
static cvene_status merge_add(cvene_tokenizer *t, const char *a, size_t alen, const char *b,
                              size_t blen, const char *where) {
    int32_t ia = vocab_find(t, a, alen), ib = vocab_find(t, b, blen);
    if (ia < 0 || ib < 0) {
        const char *s = ia < 0 ? a : b;
        int sl = (int)(ia < 0 ? alen : blen);
        return cvene_fail(t->ctx, CVENE_ERR_FORMAT, "%s: token \"%.*s\" is not in the vocabulary", where,
                          sl > 64 ? 64 : sl, s);
    }
    char stack[256], *cat = alen + blen <= sizeof stack ? stack : malloc(alen + blen);
    if (!cat) return oom(t->ctx, "merges");
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int32_t id = vocab_find(t, cat, alen + blen);
    if (cat != stack) free(cat);
    if (id < 0)
        return cvene_fail(t->ctx, CVENE_ERR_FORMAT, "%s: the merged token \"%.*s%.*s\" is not in the vocabulary",
                          where, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b);
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t i = merge_hash(key) & t->mmask;
    while (t->mhash[i].key != EMPTY_KEY && t->mhash[i].key != key) i = (i + 1) & t->mmask;
    /* A repeated merge takes its later rank, as tokenizers' HashMap::collect does. */
    t->mhash[i].key = key;
    t->mhash[i].rank = t->n_merges++;
    t->mhash[i].id = id;
    return CVENE_OK;
}

static cvene_status added_add(cvene_tokenizer *t, const char *content, int32_t id, int normalized,
                              int special, const char *where) {
    size_t len = strlen(content);
    if (len == 0) return cvene_fail(t->ctx, CVENE_ERR_FORMAT, "%s: added token %d has empty content", where, (int)id);
    if (t->n_added == t->cap_added) {
        int cap = t->cap_added ? 2 * t->cap_added : 8;
        added_token *a = realloc(t->added, (size_t)cap * sizeof *a);
        if (!a) return oom(t->ctx, "added tokens");
        t->added = a;
        t->cap_added = cap;
    }
    if (t->astr_len + len + 1 > t->astr_cap) {
        size_t cap = 2 * (t->astr_len + len + 1) + 64;
        char *s = realloc(t->astr, cap);
        if (!s) return oom(t->ctx, "added tokens");
        t->astr = s;
        t->astr_cap = cap;
    }
    CVENE_TRY(ensure_ids(t, id + 1));
    memcpy(t->astr + t->astr_len, content, len + 1);
    t->added[t->n_added++] = (added_token){id, (uint32_t)t->astr_len, (uint32_t)len, normalized, special};
    t->astr_len += len + 1;
    return CVENE_OK;
}

/* Byte ids, the decode table and the added-token first-byte filters. */
static cvene_status finish(cvene_tokenizer *t, const char *where) {
    cvene_ctx *ctx = t->ctx;
    int16_t cp_byte[324]; /* byte-level code point -> byte */
    for (int i = 0; i < 324; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_to_cp(b);
        cp_byte[cp] = (int16_t)b;
        t->bl_len[b] = (uint8_t)put_utf8(cp, t->bl[b]);
        t->byte_id[b] = vocab_find(t, t->bl[b], t->bl_len[b]);
        if (t->byte_id[b] < 0)
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "%s: no token for byte 0x%02X (\"%.*s\"): not a byte-level BPE vocabulary",
                              where, b, (int)t->bl_len[b], t->bl[b]);
    }
    /* id -> bytes: an added token's content wins over the model's string for its id
     * (tokenizers looks ids up in the added vocabulary first). A token whose characters
     * are all in the byte-level alphabet decodes to those bytes; any other token to its
     * UTF-8 text (tokenizers' ByteLevel decoder does the same). */
    t->assigned = calloc((size_t)t->n_ids, 1);
    t->dec_off = malloc(((size_t)t->n_ids + 1) * sizeof *t->dec_off);
    t->dec = malloc(t->vstr_len + t->astr_len + 1);
    const char **src = calloc((size_t)t->n_ids, sizeof *src);
    uint32_t *srclen = calloc((size_t)t->n_ids, sizeof *srclen);
    if (!t->assigned || !t->dec_off || !t->dec || !src || !srclen) {
        free(src);
        free(srclen);
        return oom(ctx, "decode table");
    }
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->str_len[id] != NO_STR) {
            src[id] = t->vstr + t->str_off[id];
            srclen[id] = t->str_len[id];
        }
    for (int k = 0; k < t->n_added; k++) {
        const int32_t id = t->added[k].id;
        if (t->assigned[id]) { /* marks ids taken by an added token, until the loop below */
            free(src);
            free(srclen);
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: two added tokens have id %d", where, (int)id);
        }
        t->assigned[id] = 1;
        src[id] = t->astr + t->added[k].off;
        srclen[id] = t->added[k].len;
    }
    memset(t->assigned, 0, (size_t)t->n_ids);
    size_t pos = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        t->dec_off[id] = pos;
        if (!src[id]) continue;
        t->assigned[id] = 1;
        const uint8_t *s = (const uint8_t *)src[id];
        size_t n = srclen[id], i = 0, start = pos;
        int byte_level = 1;
        while (i < n && byte_level) {
            uint32_t cp;
            i = tok_utf8_next(s, n, i, &cp);
            byte_level = cp < 324 && cp_byte[cp] >= 0;
            if (byte_level) t->dec[pos++] = (uint8_t)cp_byte[cp];
        }
        if (!byte_level) {
            memcpy(t->dec + start, s, n);
            pos = start + n;
        }
    }
    t->dec_off[t->n_ids] = pos;
    free(src);
    free(srclen);
    for (int k = 0; k < t->n_added; k++)
        t->afirst[t->added[k].normalized ? 1 : 0][(uint8_t)t->astr[t->added[k].off]] = 1;
    /* one trie per pass: finding the tokens costs the text's length times the longest token at
     * most, not times the number of added tokens */
    for (int pass = 0; pass < 2; pass++) {
        size_t total = 0;
        for (int k = 0; k < t->n_added; k++)
            if ((t->added[k].normalized != 0) == pass) total += t->added[k].len;
        if (byte_trie_init(&t->atrie[pass], total) != 0) return oom(ctx, "added tokens");
        for (int k = 0; k < t->n_added; k++)
            if ((t->added[k].normalized != 0) == pass)
                byte_trie_add(&t->atrie[pass], (const uint8_t *)t->astr + t->added[k].off, t->added[k].len, k);
    }
    return CVENE_OK;
}

static cvene_tokenizer *tok_new(cvene_ctx *ctx) {
    cvene_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ctx = ctx;
    t->use_regex = 1;
    return t;
}

/* ---- vocab.json + merges.txt ---------------------------------------------------- */

static cvene_status load_merges_txt(cvene_tokenizer *t, const char *path) {
    char *buf;
    size_t len;
    CVENE_TRY(read_file(t->ctx, path, &buf, &len));
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    cvene_status s = merges_alloc(t, lines);
    char where[4200];
    long lineno = 0;
    for (size_t i = 0; s == CVENE_OK && i < len;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        size_t next = e + 1, end = e;
        if (end > i && buf[end - 1] == '\r') end--;
        lineno++;
        const char *l = buf + i;
        size_t n = end - i;
        i = next;
        if (n == 0) continue;                                        /* blank line */
        if (n >= 8 && memcmp(l, "#version", 8) == 0) continue; /* "#version: 0.2" header */
        const char *sp = memchr(l, ' ', n);
        snprintf(where, sizeof where, "%s line %ld", path, lineno);
        if (!sp || sp == l || sp == l + n - 1 || memchr(sp + 1, ' ', (size_t)(l + n - sp - 1))) {
            s = cvene_fail(t->ctx, CVENE_ERR_FORMAT,
                           "%s: expected two tokens separated by one space, got \"%.*s\"", where,
                           (int)(n > 80 ? 80 : n), l);
            break;
        }
        if (memchr(l, '\0', n)) {
            s = cvene_fail(t->ctx, CVENE_ERR_FORMAT, "%s: NUL byte in the line", where);
            break;
        }
        s = merge_add(t, l, (size_t)(sp - l), sp + 1, (size_t)(l + n - sp - 1), where);
    }
    free(buf);
    return s;
}

cvene_status cvene_tokenizer_load_bpe(cvene_ctx *ctx, const char *vocab_json,
                                      const char *merges_txt, cvene_tokenizer **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_load_bpe: out is NULL");
    *out = NULL;
    if (!ctx || !vocab_json || !merges_txt)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_load_bpe: ctx, vocab_json and merges_txt must not be NULL");
    cvene_tokenizer *t = tok_new(ctx);
    if (!t) return oom(ctx, "tokenizer");
    char *buf = NULL;
    size_t len;
    cJSON *root = NULL;
    cvene_status s = read_file(ctx, vocab_json, &buf, &len);
    if (s == CVENE_OK) s = parse_json(ctx, vocab_json, buf, len, &root);
    if (s == CVENE_OK) s = load_vocab(t, root, vocab_json);
    cJSON_Delete(root);
    free(buf);
    if (s == CVENE_OK) s = load_merges_txt(t, merges_txt);
    if (s == CVENE_OK) {
        int32_t eot = vocab_find(t, "<|endoftext|>", 13);
        if (eot >= 0) s = added_add(t, "<|endoftext|>", eot, 1, 1, vocab_json);
    }
    if (s == CVENE_OK) s = finish(t, vocab_json);
    if (s != CVENE_OK) {
        cvene_tokenizer_free(t);
        return s;
    }
    *out = t;
    return CVENE_OK;
}

/* ---- tokenizer.json ------------------------------------------------------------ */

/* A member that must be absent/null or a boolean. */
static cvene_status json_bool(cvene_ctx *ctx, const cJSON *obj, const char *field, const char *where,
                              int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, field);
    char desc[96];
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return CVENE_OK;
    }
    if (!cJSON_IsBool(j))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s.\"%s\": must be true or false, got %s", where, field,
                          json_desc(j, desc, sizeof desc));
    *out = cJSON_IsTrue(j);
    return CVENE_OK;
}

/* "type" of a component object, or NULL when the component is null/absent. */
static cvene_status json_type(cvene_ctx *ctx, const cJSON *obj, const char *where, const char **type) {
    char desc[96];
    *type = NULL;
    if (!obj || cJSON_IsNull(obj)) return CVENE_OK;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!cJSON_IsObject(obj) || !cJSON_IsString(ty))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: must be null or an object with a string \"type\", got %s",
                          where, json_desc(obj, desc, sizeof desc));
    *type = ty->valuestring;
    return CVENE_OK;
}

static cvene_status load_tokenizer_json(cvene_tokenizer *t, const char *path, const cJSON *root) {
    cvene_ctx *ctx = t->ctx;
    char where[4200], desc[96];
    const char *type;
    if (!cJSON_IsObject(root)) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: not a JSON object", path);
    if (!cJSON_GetObjectItemCaseSensitive(root, "model"))
        return cvene_fail(ctx, CVENE_ERR_FORMAT,
                          "%s: not a tokenizer.json (no \"model\"); for vocab.json + merges.txt pass their "
                          "directory or use cvene_tokenizer_load_bpe", path);

    snprintf(where, sizeof where, "%s: \"normalizer\"", path);
    CVENE_TRY(json_type(ctx, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), where, &type));
    if (type)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s: normalizer \"%.64s\" is not supported (cvene's tokenizer does byte-level BPE without a normalizer)",
                          path, type);

    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    snprintf(where, sizeof where, "%s: \"pre_tokenizer\"", path);
    CVENE_TRY(json_type(ctx, pre, where, &type));
    if (!type || strcmp(type, "ByteLevel") != 0)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "%s: pre_tokenizer %s%.64s%s is not supported (only ByteLevel)", path,
                          type ? "\"" : "", type ? type : "null", type ? "\"" : "");
    CVENE_TRY(json_bool(ctx, pre, "add_prefix_space", where, 1, &t->add_prefix_space));
    CVENE_TRY(json_bool(ctx, pre, "use_regex", where, 1, &t->use_regex));

    snprintf(where, sizeof where, "%s: \"decoder\"", path);
    CVENE_TRY(json_type(ctx, cJSON_GetObjectItemCaseSensitive(root, "decoder"), where, &type));
    if (type && strcmp(type, "ByteLevel") != 0)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "%s: decoder \"%.64s\" is not supported (only ByteLevel)",
                          path, type);

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    snprintf(where, sizeof where, "%s: \"model\"", path);
    if (!cJSON_IsObject(model))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: must be an object, got %s", where,
                          json_desc(model, desc, sizeof desc));
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (ty && !(cJSON_IsString(ty) && strcmp(ty->valuestring, "BPE") == 0))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "%s.\"type\": %s is not supported (only \"BPE\")", where,
                          json_desc(ty, desc, sizeof desc));
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "%s.\"dropout\": %s is not supported (BPE dropout is random; use null)",
                          where, json_desc(dropout, desc, sizeof desc));
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affixes[k]);
        if (a && !cJSON_IsNull(a) && !(cJSON_IsString(a) && a->valuestring[0] == '\0'))
            return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "%s.\"%s\": %s is not supported (byte-level BPE has none)",
                              where, affixes[k], json_desc(a, desc, sizeof desc));
    }
    CVENE_TRY(json_bool(ctx, model, "ignore_merges", where, 0, &t->ignore_merges));

    snprintf(where, sizeof where, "%s: \"model\".\"vocab\"", path);
    CVENE_TRY(load_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), where));

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"model\".\"merges\": must be an array, got %s", path,
                          json_desc(merges, desc, sizeof desc));
    CVENE_TRY(merges_alloc(t, (size_t)cJSON_GetArraySize(merges)));
    long k = 0;
    for (const cJSON *m = merges->child; m; m = m->next, k++) {
        snprintf(where, sizeof where, "%s: \"model\".\"merges\"[%ld]", path, k);
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if (cJSON_IsString(m)) { /* "a b" */
            const char *s = m->valuestring, *sp = strchr(s, ' ');
            if (sp && sp != s && sp[1] && !strchr(sp + 1, ' ')) {
                a = s;
                alen = (size_t)(sp - s);
                b = sp + 1;
                blen = strlen(b);
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) { /* ["a", "b"] (tokenizers >= 0.20) */
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            alen = strlen(a);
            blen = strlen(b);
        }
        if (!a)
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: expected \"A B\" or [\"A\", \"B\"], got %s", where,
                              json_desc(m, desc, sizeof desc));
        CVENE_TRY(merge_add(t, a, alen, b, blen, where));
    }

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"added_tokens\": must be an array, got %s", path,
                          json_desc(added, desc, sizeof desc));
    k = 0;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next, k++) {
        snprintf(where, sizeof where, "%s: \"added_tokens\"[%ld]", path, k);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!json_is_id(id))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s.\"id\": must be an integer in [0, %d], got %s", where,
                              TOK_MAX_ID - 1, json_desc(id, desc, sizeof desc));
        if (!cJSON_IsString(content))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s.\"content\": must be a string, got %s", where,
                              json_desc(content, desc, sizeof desc));
        static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (int u = 0; u < 3; u++) {
            int on;
            CVENE_TRY(json_bool(ctx, a, unsupported[u], where, 0, &on));
            if (on)
                return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED, "%s (\"%.64s\"): \"%s\": true is not supported",
                                  where, content->valuestring, unsupported[u]);
        }
        int normalized, special;
        CVENE_TRY(json_bool(ctx, a, "special", where, 0, &special));
        CVENE_TRY(json_bool(ctx, a, "normalized", where, !special, &normalized));
        CVENE_TRY(added_add(t, content->valuestring, (int32_t)id->valuedouble, normalized, special, where));
    }
    return finish(t, path);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* present, or there but unreadable (a symlink loop, no permission): read_file then says why */
static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
}

cvene_status cvene_tokenizer_load(cvene_ctx *ctx, const char *path, cvene_tokenizer **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_load: out is NULL");
    *out = NULL;
    if (!ctx || !path)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_load: ctx and path must not be NULL");
    char json[4096], vocab[4096], merges[4096];
    if (is_dir(path)) {
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        snprintf(vocab, sizeof vocab, "%s/vocab.json", path);
        snprintf(merges, sizeof merges, "%s/merges.txt", path);
        if (!exists(json)) {
            if (exists(vocab) || exists(merges)) return cvene_tokenizer_load_bpe(ctx, vocab, merges, out);
            return cvene_fail(ctx, CVENE_ERR_IO, "%s: no tokenizer.json, nor vocab.json and merges.txt", path);
        }
    } else {
        snprintf(json, sizeof json, "%s", path);
    }
    cvene_tokenizer *t = tok_new(ctx);
    if (!t) return oom(ctx, "tokenizer");
    char *buf = NULL;
    size_t len;
    cJSON *root = NULL;
    cvene_status s = read_file(ctx, json, &buf, &len);
    if (s == CVENE_OK) s = parse_json(ctx, json, buf, len, &root);
    free(buf);
    if (s == CVENE_OK) s = load_tokenizer_json(t, json, root);
    cJSON_Delete(root);
    if (s != CVENE_OK) {
        cvene_tokenizer_free(t);
        return s;
    }
    *out = t;
    return CVENE_OK;
}

int cvene_tokenizer_vocab_size(const cvene_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t cvene_tokenizer_token_id(const cvene_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    size_t n = strlen(token);
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && memcmp(t->astr + t->added[k].off, token, n) == 0) return t->added[k].id;
    return vocab_find(t, token, n);
}

/* ---- encode ---------------------------------------------------------------------- */

typedef struct {
    uint32_t rank, pos;
    int32_t id;
} heap_ent;

typedef struct {
    const cvene_tokenizer *t;
    int mode;
    int32_t *out;
    size_t n_out, cap_out;
    /* merge-loop scratch, grown to the longest piece */
    size_t cap;
    int32_t *sym, *prev, *next, *nid;
    uint32_t *rank;
    heap_ent *heap;
    uint8_t *pre; /* segment with its prefix space */
    size_t cap_pre;
    char *blstr; /* ignore_merges: the piece in byte-level form */
    size_t cap_bl;
} encoder;

static int push_id(encoder *e, int32_t id) {
    if (e->n_out == e->cap_out) {
        size_t cap = e->cap_out ? 2 * e->cap_out : 64;
        int32_t *o = realloc(e->out, cap * sizeof *o);
        if (!o) return 1;
        e->out = o;
        e->cap_out = cap;
    }
    e->out[e->n_out++] = id;
    return 0;
}

static int grow_scratch(encoder *e, size_t n) {
    if (n <= e->cap) return 0;
    size_t cap = n < 64 ? 64 : n;
    int32_t *sym = realloc(e->sym, cap * sizeof *sym);
    if (sym) e->sym = sym;
    int32_t *prev = realloc(e->prev, cap * sizeof *prev);
    if (prev) e->prev = prev;
    int32_t *next = realloc(e->next, cap * sizeof *next);
    if (next) e->next = next;
    int32_t *nid = realloc(e->nid, cap * sizeof *nid);
    if (nid) e->nid = nid;
    uint32_t *rank = realloc(e->rank, cap * sizeof *rank);
    if (rank) e->rank = rank;
    heap_ent *heap = realloc(e->heap, 3 * cap * sizeof *heap);
    if (heap) e->heap = heap;
    if (!sym || !prev || !next || !nid || !rank || !heap) return 1;
    e->cap = cap;
    return 0;
}

static inline void pair_rank(const cvene_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *id) {
    const merge_slot *m = merge_find(t, a, b);
    *rank = m ? m->rank : NO_RANK;
    *id = m ? m->id : -1;
}

/* Scanning loop: merge the lowest-ranked pair, leftmost on ties, until none is left. */
static int bpe_scan(encoder *e, const uint8_t *s, size_t n) {
    const cvene_tokenizer *t = e->t;
    int32_t *sym = e->sym, *nid = e->nid;
    uint32_t *rank = e->rank;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[s[i]];
    for (size_t i = 0; i + 1 < n; i++) pair_rank(t, sym[i], sym[i + 1], &rank[i], &nid[i]);
    size_t m = n;
    while (m > 1) {
        uint32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        if (best == NO_RANK) break;
        sym[bi] = nid[bi];
        /* drop symbol bi + 1 and pair bi + 1 (pairs after it shift down by one) */
        memmove(sym + bi + 1, sym + bi + 2, (m - bi - 2) * sizeof *sym);
        if (m - bi > 2) {
            memmove(rank + bi + 1, rank + bi + 2, (m - bi - 3) * sizeof *rank);
            memmove(nid + bi + 1, nid + bi + 2, (m - bi - 3) * sizeof *nid);
        }
        m--;
        if (bi > 0) pair_rank(t, sym[bi - 1], sym[bi], &rank[bi - 1], &nid[bi - 1]);
        if (bi + 1 < m) pair_rank(t, sym[bi], sym[bi + 1], &rank[bi], &nid[bi]);
    }
    for (size_t i = 0; i < m; i++)
        if (push_id(e, sym[i])) return 1;
    return 0;
}

static inline int heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &v)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = v;
    return top;
}

/* Heap loop (tokenizers' Word::merge_all without dropout): entries (rank, left position);
 * an entry is stale when its left symbol was absorbed or the pair changed. */
static int bpe_heap(encoder *e, const uint8_t *s, size_t n) {
    const cvene_tokenizer *t = e->t;
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    heap_ent *h = e->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[s[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_find(t, sym[i], sym[i + 1]);
        if (m) heap_push(h, &nh, (heap_ent){m->rank, (uint32_t)i, m->id});
    }
    while (nh) {
        heap_ent top = heap_pop(h, &nh);
        int32_t p = (int32_t)top.pos, q = next[p];
        if (sym[p] < 0 || q < 0) continue; /* absorbed, or now the last symbol */
        const merge_slot *m = merge_find(t, sym[p], sym[q]);
        if (!m || m->id != top.id) continue; /* stale */
        sym[p] = top.id;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0 && (m = merge_find(t, sym[prev[p]], sym[p])))
            heap_push(h, &nh, (heap_ent){m->rank, (uint32_t)prev[p], m->id});
        if (next[p] >= 0 && (m = merge_find(t, sym[p], sym[next[p]])))
            heap_push(h, &nh, (heap_ent){m->rank, (uint32_t)p, m->id});
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        if (push_id(e, sym[i])) return 1;
    return 0;
}

static int bpe_piece(void *user, size_t start, size_t end);

/* A stretch of text without added tokens. */
static int encode_segment(encoder *e, const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    if (e->t->add_prefix_space && s[0] != ' ') { /* tokenizers: unless it starts with ' ' */
        if (n + 1 > e->cap_pre) {
            uint8_t *p = realloc(e->pre, n + 1);
            if (!p) return 1;
            e->pre = p;
            e->cap_pre = n + 1;
        }
        e->pre[0] = ' ';
        memcpy(e->pre + 1, s, n);
        s = e->pre;
        n++;
    }
    struct {
        encoder *e;
        const uint8_t *s;
    } ctx = {e, s};
    return tok_pretokenize(s, n, e->t->use_regex, bpe_piece, &ctx);
}

static int bpe_piece(void *user, size_t start, size_t end) {
    struct {
        encoder *e;
        const uint8_t *s;
    } *c = user;
    encoder *e = c->e;
    const cvene_tokenizer *t = e->t;
    const uint8_t *s = c->s + start;
    size_t n = end - start;
    if (n == 1) return push_id(e, t->byte_id[s[0]]);
    if (t->ignore_merges) { /* the whole piece when the vocabulary has it */
        if (2 * n > e->cap_bl) {
            char *b = realloc(e->blstr, 2 * n);
            if (!b) return 1;
            e->blstr = b;
            e->cap_bl = 2 * n;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(e->blstr + m, t->bl[s[i]], 2);
            m += t->bl_len[s[i]];
        }
        int32_t id = vocab_find(t, e->blstr, m);
        if (id >= 0) return push_id(e, id);
    }
    if (n > INT32_MAX / 4 || grow_scratch(e, n)) return 1;
    int heap = e->mode == TOK_BPE_HEAP || (e->mode == TOK_BPE_AUTO && n > TOK_SCAN_MAX);
    return heap ? bpe_heap(e, s, n) : bpe_scan(e, s, n);
}

/* Find the leftmost-longest added token of pass (0: normalized false, 1: true) in s[from, n). */
static int find_added(const cvene_tokenizer *t, int pass, const uint8_t *s, size_t from, size_t n,
                      size_t *at, int *which) {
    for (size_t i = from; i < n; i++) {
        if (!t->afirst[pass][s[i]]) continue;
        size_t len;
        const int32_t k = byte_trie_longest(&t->atrie[pass], s + i, n - i, &len);
        if (k >= 0) {
            *at = i;
            *which = k;
            return 1;
        }
    }
    return 0;
}

/* Split on the added tokens of pass, recursing into the next pass for the gaps. */
static int encode_pass(encoder *e, int pass, const uint8_t *s, size_t n) {
    if (pass == 2) return encode_segment(e, s, n);
    const cvene_tokenizer *t = e->t;
    size_t i = 0, at;
    int k;
    while (i < n && find_added(t, pass, s, i, n, &at, &k)) {
        if (at > i && encode_pass(e, pass + 1, s + i, at - i)) return 1;
        if (push_id(e, t->added[k].id)) return 1;
        i = at + t->added[k].len;
    }
    return i < n ? encode_pass(e, pass + 1, s + i, n - i) : 0;
}

cvene_status tok_encode_mode(const cvene_tokenizer *t, const char *text, size_t len, int mode,
                             int32_t **ids, size_t *n_ids) {
    if (!ids || !n_ids) return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_encode: ids and n_ids must not be NULL");
    *ids = NULL;
    *n_ids = 0;
    if (!t) return CVENE_ERR_INVALID_ARG;
    if (!text && len) return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_encode: text is NULL but len is %zu", len);
    encoder e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.mode = mode;
    int fail = (e.out = malloc(64 * sizeof *e.out)) == NULL;
    e.cap_out = 64;
    if (!fail && len) fail = encode_pass(&e, 0, (const uint8_t *)text, len);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.nid);
    free(e.rank);
    free(e.heap);
    free(e.pre);
    free(e.blstr);
    if (fail) {
        free(e.out);
        return cvene_fail(t->ctx, CVENE_ERR_OOM, "cvene_tokenizer_encode: out of memory encoding %zu bytes", len);
    }
    *ids = e.out;
    *n_ids = e.n_out;
    return CVENE_OK;
}

cvene_status cvene_tokenizer_encode(const cvene_tokenizer *t, const char *text, size_t len, int32_t **ids,
                                    size_t *n_ids) {
    return tok_encode_mode(t, text, len, TOK_BPE_AUTO, ids, n_ids);
}

/* ---- decode ---------------------------------------------------------------------- */

cvene_status cvene_tokenizer_decode(const cvene_tokenizer *t, const int32_t *ids, size_t n_ids, char **text,
                                    size_t *len) {
    if (!text || !len) return cvene_fail(t ? t->ctx : NULL, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_decode: text and len must not be NULL");
    *text = NULL;
    *len = 0;
    if (!t) return CVENE_ERR_INVALID_ARG;
    if (!ids && n_ids) return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG, "cvene_tokenizer_decode: ids is NULL but n_ids is %zu", n_ids);
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids)
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG,
                              "cvene_tokenizer_decode: ids[%zu] = %d is out of range [0, %d)", i, (int)id, (int)t->n_ids);
        if (!t->assigned[id])
            return cvene_fail(t->ctx, CVENE_ERR_INVALID_ARG,
                              "cvene_tokenizer_decode: ids[%zu] = %d is not assigned to any token", i, (int)id);
        total += t->dec_off[id + 1] - t->dec_off[id];
    }
    char *out = malloc(total + 1);
    if (!out) return cvene_fail(t->ctx, CVENE_ERR_OOM, "cvene_tokenizer_decode: out of memory (%zu bytes)", total + 1);
    size_t pos = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t a = t->dec_off[ids[i]], b = t->dec_off[ids[i] + 1];
        memcpy(out + pos, t->dec + a, b - a);
        pos += b - a;
    }
    out[pos] = '\0';
    *text = out;
    *len = pos;
    return CVENE_OK;
}
