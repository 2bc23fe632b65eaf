/* Training datasets (cvene.h, "training"): examples of a base prompt, a source prompt, the
 * positions an intervention reads and writes, and the label the intervened model should
 * predict. Held in one growing pool of ids; loaded from JSONL with every line checked. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "engine/dataset.h"
#include "models/fileio.h"

cvene_status cvene_dataset_new(cvene_ctx *ctx, cvene_dataset **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    (*out)->ctx = ctx;
    (*out)->uid = ++ctx->serial;
    return CVENE_OK;
}

void cvene_dataset_free(cvene_dataset *d) {
    if (!d) return;
    free(d->ex), free(d->ids), free(d->pos);
    free(d);
}

int cvene_dataset_count(const cvene_dataset *d) { return d ? d->n : 0; }

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return 0;
    *p = q, *cap = c;
    return 1;
}

cvene_status cvene_dataset_add(cvene_dataset *d, const cvene_example *e) {
    cvene_ctx *ctx = d->ctx;
    const int k = d->n;
    if (!e || !e->base_ids || e->base_len <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "example %d: no base ids", k);
    if (e->source_ids ? e->source_len <= 0 : e->source_len != 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "example %d: source_len %d does not match source_ids", k,
                          e->source_len);
    if (e->n_pos < 0 || e->n_pos > 64 || (e->n_pos && !e->base_pos))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "example %d: %d positions (0..64, with base_pos)", k, e->n_pos);
    for (int u = 0; u < e->n_pos; u++) {
        if (e->base_pos[u] < 0 || e->base_pos[u] >= e->base_len)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "example %d: base position %d is outside the base's %d tokens",
                              k, e->base_pos[u], e->base_len);
        if (e->source_ids && (!e->source_pos || e->source_pos[u] < 0 || e->source_pos[u] >= e->source_len))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "example %d: source position %d is outside the source's %d tokens", k,
                              e->source_pos ? e->source_pos[u] : -1, e->source_len);
    }
    if (e->label_pos < -1 || e->label_pos >= e->base_len)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "example %d: label_pos %d is outside the base's %d tokens", k,
                          e->label_pos, e->base_len);
    const size_t nid = (size_t)e->base_len + (size_t)e->source_len, npos = 2 * (size_t)e->n_pos;
    if (!grow((void **)&d->ex, &d->cap_ex, (size_t)k + 1, sizeof *d->ex) ||
        !grow((void **)&d->ids, &d->cap_ids, d->n_ids + nid, sizeof *d->ids) ||
        !grow((void **)&d->pos, &d->cap_pos, d->n_posv + npos, sizeof *d->pos))
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory adding example %d", k);
    ds_example *x = &d->ex[k];
    x->base_off = d->n_ids, x->base_len = e->base_len;
    memcpy(d->ids + d->n_ids, e->base_ids, sizeof(int32_t) * (size_t)e->base_len);
    d->n_ids += (size_t)e->base_len;
    x->source_off = d->n_ids, x->source_len = e->source_len;
    if (e->source_len) memcpy(d->ids + d->n_ids, e->source_ids, sizeof(int32_t) * (size_t)e->source_len);
    d->n_ids += (size_t)e->source_len;
    x->pos_off = d->n_posv, x->n_pos = e->n_pos;
    for (int u = 0; u < e->n_pos; u++) {
        d->pos[d->n_posv + u] = e->base_pos[u];
        d->pos[d->n_posv + e->n_pos + u] = e->source_ids ? e->source_pos[u] : e->base_pos[u];
    }
    d->n_posv += npos;
    x->label = e->label;
    x->label_pos = e->label_pos < 0 ? e->base_len - 1 : e->label_pos;
    d->n++;
    d->uid = ++ctx->serial; /* new content: a trainer's caches of the old one no longer apply */
    return CVENE_OK;
}

/* ---- JSONL ---- */

/* ids from a list of integers, or text through the tokenizer; *n tokens */
static cvene_status json_ids(cvene_ctx *ctx, const cJSON *j, const cvene_tokenizer *tok, const char *where,
                             const char *key, int32_t **ids, int *n) {
    *ids = NULL, *n = 0;
    if (cJSON_IsString(j)) {
        if (!tok)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"%s\" is text, but no tokenizer was given (the model "
                              "directory's tokenizer files, or ids)", where, key);
        size_t k = 0;
        CVENE_TRY(cvene_tokenizer_encode(tok, j->valuestring, strlen(j->valuestring), ids, &k));
        *n = (int)k;
        if (k == 0) {
            free(*ids), *ids = NULL;
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"%s\" is empty after tokenisation", where, key);
        }
        return CVENE_OK;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"%s\" must be text or a non-empty list of token ids", where, key);
    *n = cJSON_GetArraySize(j);
    if (!(*ids = malloc(sizeof(int32_t) * (size_t)*n))) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    int k = 0;
    for (const cJSON *e = j->child; e; e = e->next, k++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2147483647.0 ||
            floor(e->valuedouble) != e->valuedouble) {
            free(*ids), *ids = NULL;
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"%s\"[%d] is not a token id", where, key, k);
        }
        (*ids)[k] = (int32_t)e->valuedouble;
    }
    return CVENE_OK;
}

/* positions: an int, a list of ints, or "last" */
static cvene_status json_pos(cvene_ctx *ctx, const cJSON *j, int len, const char *where, const char *key, int *out,
                             int *n) {
    if (!j) {
        *n = 0;
        return CVENE_OK;
    }
    if (cJSON_IsString(j)) {
        if (strcmp(j->valuestring, "last"))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"%s\": \"%s\" is not a position role (\"last\")", where,
                              key, j->valuestring);
        out[0] = len - 1, *n = 1;
        return CVENE_OK;
    }
    const int single = cJSON_IsNumber(j);
    if (!single && (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0 || cJSON_GetArraySize(j) > 64))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"%s\" must be a position, a list of 1..64 positions or \"last\"",
                          where, key);
    *n = 0;
    for (const cJSON *e = single ? j : j->child; e; e = single ? NULL : e->next) {
        const double v = e->valuedouble;
        if (!cJSON_IsNumber(e) || floor(v) != v || v < -len || v >= len)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"%s\" position %g is outside the %d tokens", where, key,
                              cJSON_IsNumber(e) ? v : -1.0, len);
        out[(*n)++] = v < 0 ? len + (int)v : (int)v; /* negative: from the end, as Python */
    }
    return CVENE_OK;
}

static const char *const kKeys[] = {"base", "source", "base_pos", "source_pos", "label", "label_pos"};

static cvene_status parse_line(cvene_dataset *d, const char *line, size_t len, const cvene_tokenizer *tok,
                               const char *where) {
    cvene_ctx *ctx = d->ctx;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: not a JSON object", where);
    }
    /* one object per line: a second one after it would otherwise be dropped without a word */
    while (end < line + len && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
    if (end != line + len) {
        cJSON_Delete(j);
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: text after the JSON object (one object per line)", where);
    }
    cvene_status st = CVENE_OK;
    for (const cJSON *e = j->child; e && st == CVENE_OK; e = e->next) {
        size_t k = 0;
        while (k < sizeof kKeys / sizeof *kKeys && strcmp(kKeys[k], e->string)) k++;
        if (k == sizeof kKeys / sizeof *kKeys)
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: unknown key \"%.60s\" (accepted: base, source, base_pos, "
                            "source_pos, label, label_pos)", where, e->string);
    }
    int32_t *base = NULL, *src = NULL, *lab = NULL;
    int nb = 0, ns = 0, nl = 0, npb = 0, nps = 0, bpos[64], spos[64];
    if (st == CVENE_OK) st = json_ids(ctx, cJSON_GetObjectItemCaseSensitive(j, "base"), tok, where, "base", &base, &nb);
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(j, "source");
    if (st == CVENE_OK && js && !cJSON_IsNull(js)) st = json_ids(ctx, js, tok, where, "source", &src, &ns);
    if (st == CVENE_OK)
        st = json_pos(ctx, cJSON_GetObjectItemCaseSensitive(j, "base_pos"), nb, where, "base_pos", bpos, &npb);
    if (st == CVENE_OK && src)
        st = json_pos(ctx, cJSON_GetObjectItemCaseSensitive(j, "source_pos"), ns, where, "source_pos", spos, &nps);
    if (st == CVENE_OK && src && (npb == 0 || nps == 0))
        st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"%s\" is missing (an example with a source needs base_pos and "
                        "source_pos, e.g. \"last\")", where, npb == 0 ? "base_pos" : "source_pos");
    if (st == CVENE_OK && src && nps != npb)
        st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: %d base positions but %d source positions", where, npb, nps);
    const cJSON *jl = cJSON_GetObjectItemCaseSensitive(j, "label");
    if (st == CVENE_OK && !jl) st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: no \"label\"", where);
    if (st == CVENE_OK && cJSON_IsNumber(jl)) {
        if (jl->valuedouble < 0 || floor(jl->valuedouble) != jl->valuedouble || jl->valuedouble > 2147483647.0)
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: \"label\" %g is not a token id", where, jl->valuedouble);
        else if (!(lab = malloc(sizeof *lab))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        else lab[0] = (int32_t)jl->valuedouble, nl = 1;
    } else if (st == CVENE_OK) {
        st = json_ids(ctx, jl, tok, where, "label", &lab, &nl);
        if (st == CVENE_OK && nl != 1)
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"label\" is %d tokens; a label is one token (a leading "
                            "space is usually part of it: \" Paris\")", where, nl);
    }
    int label_pos = -1;
    const cJSON *jlp = cJSON_GetObjectItemCaseSensitive(j, "label_pos");
    if (st == CVENE_OK && jlp) {
        int n1 = 0, p1[64];
        st = json_pos(ctx, jlp, nb, where, "label_pos", p1, &n1);
        if (st == CVENE_OK && n1 != 1) st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: \"label_pos\" is one position", where);
        label_pos = p1[0];
    }
    if (st == CVENE_OK) {
        cvene_example e = {base, nb, src, ns, bpos, src ? spos : NULL, npb, lab[0], label_pos};
        st = cvene_dataset_add(d, &e);
        if (st != CVENE_OK) { /* say which line */
            char msg[CVENE_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", cvene_ctx_error(ctx));
            st = cvene_fail(ctx, st, "%s: %s", where, msg);
        }
    }
    free(base), free(src), free(lab);
    cJSON_Delete(j);
    return st;
}

cvene_status cvene_dataset_load_jsonl(cvene_ctx *ctx, const char *path, const cvene_tokenizer *tok,
                                      cvene_dataset **out) {
    *out = NULL;
    char *text = NULL, why[4200];
    size_t len = 0;
    cvene_status st = file_read_all(path, (size_t)1 << 31, &text, &len, why, sizeof why);
    if (st != CVENE_OK) return cvene_fail(ctx, st, "%s", why);
    cvene_dataset *d;
    st = cvene_dataset_new(ctx, &d);
    long line = 0;
    for (size_t i = 0; st == CVENE_OK && i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        line++;
        size_t a = i, b = j;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        if (b > a) {
            char where[4200];
            snprintf(where, sizeof where, "%.4000s:%ld", path, line);
            st = parse_line(d, text + a, b - a, tok, where);
        }
        i = j + 1;
    }
    free(text);
    if (st == CVENE_OK && d->n == 0) st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: no examples", path);
    if (st != CVENE_OK) {
        cvene_dataset_free(d);
        return st;
    }
    *out = d;
    return CVENE_OK;
}

/* splitmix64: a seeded shuffle for the split, the same on every machine */
static uint64_t mix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static cvene_status copy_example(cvene_dataset *dst, const cvene_dataset *src, int i) {
    const ds_example *x = &src->ex[i];
    /* no positions: NULL, not src->pos + offset (src->pos is NULL when no example has any) */
    cvene_example e = {ds_base(src, i), x->base_len, x->source_len ? ds_source(src, i) : NULL, x->source_len,
                       x->n_pos ? ds_base_pos(src, i) : NULL, x->source_len && x->n_pos ? ds_source_pos(src, i) : NULL,
                       x->n_pos, x->label, x->label_pos};
    return cvene_dataset_add(dst, &e);
}

cvene_status cvene_dataset_at_position(const cvene_dataset *d, int pos, cvene_dataset **out) {
    *out = NULL;
    CVENE_TRY(cvene_dataset_new(d->ctx, out));
    cvene_status st = CVENE_OK;
    for (int i = 0; i < d->n && st == CVENE_OK; i++) {
        const ds_example *x = &d->ex[i];
        const int bp = pos < 0 ? x->base_len + pos : pos, sp = pos < 0 ? x->source_len + pos : pos;
        if (bp < 0 || bp >= x->base_len || (x->source_len && (sp < 0 || sp >= x->source_len))) {
            st = cvene_fail(d->ctx, CVENE_ERR_INVALID_ARG, "dataset: example %d: position %d is outside its base (%d "
                            "tokens) or source (%d tokens)", i, pos, x->base_len, x->source_len);
            break;
        }
        cvene_example e = {ds_base(d, i), x->base_len, x->source_len ? ds_source(d, i) : NULL, x->source_len,
                           &bp, x->source_len ? &sp : NULL, 1, x->label, x->label_pos};
        st = cvene_dataset_add(*out, &e);
    }
    if (st != CVENE_OK) {
        cvene_dataset_free(*out);
        *out = NULL;
    }
    return st;
}

cvene_status cvene_dataset_split(const cvene_dataset *d, double fraction, uint64_t seed, cvene_dataset **first,
                                 cvene_dataset **second) {
    *first = *second = NULL;
    cvene_ctx *ctx = d->ctx;
    if (!(fraction > 0 && fraction < 1))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "split: fraction %g must be in (0, 1)", fraction);
    const int n2 = (int)(fraction * d->n + 0.5), n1 = d->n - n2;
    if (n1 < 1 || n2 < 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "split: %d examples cannot be split %g / %g (each part needs one)",
                          d->n, 1 - fraction, fraction);
    int *order = malloc(sizeof(int) * (size_t)d->n);
    if (!order) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; i < d->n; i++) order[i] = i;
    uint64_t st64 = seed ^ 0x73706c6974ull;
    for (int i = d->n - 1; i > 0; i--) {
        const int j = (int)(mix(&st64) % (uint64_t)(i + 1));
        const int t = order[i];
        order[i] = order[j], order[j] = t;
    }
    cvene_status st = cvene_dataset_new(ctx, first);
    if (st == CVENE_OK) st = cvene_dataset_new(ctx, second);
    for (int k = 0; k < d->n && st == CVENE_OK; k++) st = copy_example(k < n1 ? *first : *second, d, order[k]);
    free(order);
    if (st != CVENE_OK) {
        cvene_dataset_free(*first), cvene_dataset_free(*second);
        *first = *second = NULL;
    }
    return st;
}
