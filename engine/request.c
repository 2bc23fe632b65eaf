/* Requests: base and source inputs, unit_locations, subspaces; and their JSON form. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"

cvene_status cvene_request_new(cvene_ctx *ctx, cvene_request **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    (*out)->ctx = ctx;
    return CVENE_OK;
}

static void input_free(iv_input *in) {
    free(in->ids);
    free(in->mask);
    free(in->pos);
    memset(in, 0, sizeof *in);
}

void cvene_request_free(cvene_request *r) {
    if (!r) return;
    input_free(&r->base);
    for (int i = 0; i < r->n_sources; i++) input_free(&r->sources[i]);
    free(r->sources);
    cJSON_Delete(r->locations);
    cJSON_Delete(r->subspaces);
    free(r);
}

static cvene_status input_copy(cvene_ctx *ctx, iv_input *dst, const cvene_input *in, const char *what) {
    if (!in || !in->input_ids || in->B <= 0 || in->T <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: input_ids missing or batch/length not positive", what);
    size_t n = (size_t)in->B * in->T;
    iv_input d = {malloc(n * 4), in->attention_mask ? malloc(n * 4) : NULL, in->position_ids ? malloc(n * 4) : NULL,
                  in->B, in->T, 1};
    if (!d.ids || (in->attention_mask && !d.mask) || (in->position_ids && !d.pos)) {
        input_free(&d);
        return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    }
    memcpy(d.ids, in->input_ids, n * 4);
    if (d.mask) memcpy(d.mask, in->attention_mask, n * 4);
    if (d.pos) memcpy(d.pos, in->position_ids, n * 4);
    input_free(dst);
    *dst = d;
    return CVENE_OK;
}

cvene_status cvene_request_set_base(cvene_request *r, const cvene_input *in) {
    return input_copy(r->ctx, &r->base, in, "base");
}

cvene_status cvene_request_set_source(cvene_request *r, int index, const cvene_input *in) {
    if (index < 0 || index > 4096)
        return cvene_fail(r->ctx, CVENE_ERR_INVALID_ARG, "source index %d is out of range", index);
    if (index >= r->n_sources) {
        iv_input *grown = realloc(r->sources, sizeof(iv_input) * (size_t)(index + 1));
        if (!grown) return cvene_fail(r->ctx, CVENE_ERR_OOM, "out of memory");
        memset(grown + r->n_sources, 0, sizeof(iv_input) * (size_t)(index + 1 - r->n_sources));
        r->sources = grown;
        r->n_sources = index + 1;
    }
    if (!in) { /* pyvene's None */
        input_free(&r->sources[index]);
        return CVENE_OK;
    }
    return input_copy(r->ctx, &r->sources[index], in, "source");
}

static cvene_status set_json(cvene_ctx *ctx, cJSON **slot, const char *json, const char *what) {
    cJSON *j = NULL;
    if (json) {
        const char *end = NULL;
        j = cJSON_ParseWithOpts(json, &end, 1);
        if (!j) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: malformed JSON near byte %ld", what, end ? (long)(end - json) : -1L);
    }
    cJSON_Delete(*slot);
    *slot = j;
    return CVENE_OK;
}

cvene_status cvene_request_set_unit_locations(cvene_request *r, const char *json) {
    return set_json(r->ctx, &r->locations, json, "unit_locations");
}
cvene_status cvene_request_set_subspaces(cvene_request *r, const char *json) {
    return set_json(r->ctx, &r->subspaces, json, "subspaces");
}
void cvene_request_set_output_original(cvene_request *r, int on) { r->output_original = on != 0; }
void cvene_request_set_profile(cvene_request *r, int on) { r->profile = on != 0; }

/* {"input_ids": [[..]], "attention_mask": [[..]]} -> iv_input */
static cvene_status parse_table(cvene_ctx *ctx, const cJSON *t, const char *what, int32_t **out, int *B, int *T) {
    if (!cJSON_IsArray(t) || !t->child)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s must be a non-empty list of lists of integers", what);
    int b = 0, len = cJSON_GetArraySize(t->child);
    int n = cJSON_GetArraySize(t);
    int32_t *a = malloc(sizeof(int32_t) * (size_t)n * (size_t)(len ? len : 1));
    if (!a) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (const cJSON *row = t->child; row; row = row->next, b++) {
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != len || len == 0) {
            free(a);
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s[%d] must be a list of %d integers (rows of equal length)",
                              what, b, len);
        }
        int k = 0;
        for (const cJSON *e = row->child; e; e = e->next, k++) {
            if (!cJSON_IsNumber(e) || floor(e->valuedouble) != e->valuedouble || fabs(e->valuedouble) > 2147483647.0) {
                free(a);
                return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s[%d][%d] is not an integer", what, b, k);
            }
            a[(size_t)b * len + k] = (int32_t)e->valuedouble;
        }
    }
    *out = a;
    *B = n;
    *T = len;
    return CVENE_OK;
}

static cvene_status parse_input(cvene_ctx *ctx, const cJSON *j, const char *what, cvene_request *r, int src_index) {
    if (!cJSON_IsObject(j)) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s must be an object with \"input_ids\"", what);
    for (const cJSON *e = j->child; e; e = e->next)
        if (strcmp(e->string, "input_ids") && strcmp(e->string, "attention_mask") && strcmp(e->string, "position_ids"))
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "inputs: %s has unknown key \"%.80s\" (accepted: input_ids, attention_mask, position_ids)",
                              what, e->string);
    char w[64];
    snprintf(w, sizeof w, "%s.input_ids", what);
    int32_t *ids = NULL, *mask = NULL, *pos = NULL;
    int B, T, mB, mT;
    CVENE_TRY(parse_table(ctx, cJSON_GetObjectItemCaseSensitive(j, "input_ids"), w, &ids, &B, &T));
    cvene_status st = CVENE_OK;
    const char *extra[2] = {"attention_mask", "position_ids"};
    int32_t **dst[2] = {&mask, &pos};
    for (int k = 0; k < 2 && st == CVENE_OK; k++) {
        const cJSON *jm = cJSON_GetObjectItemCaseSensitive(j, extra[k]);
        if (!jm || cJSON_IsNull(jm)) continue;
        snprintf(w, sizeof w, "%s.%s", what, extra[k]);
        st = parse_table(ctx, jm, w, dst[k], &mB, &mT);
        if (st == CVENE_OK && (mB != B || mT != T))
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s is %d x %d but input_ids is %d x %d", w, mB, mT, B, T);
    }
    cvene_input in = {ids, mask, B, T, pos};
    if (st == CVENE_OK) st = src_index < 0 ? cvene_request_set_base(r, &in) : cvene_request_set_source(r, src_index, &in);
    free(ids);
    free(mask);
    free(pos);
    return st;
}

cvene_status cvene_request_parse(cvene_ctx *ctx, const char *json, cvene_request **out) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = json ? cJSON_ParseWithOpts(json, &end, 1) : NULL;
    if (!root) return cvene_fail(ctx, CVENE_ERR_FORMAT, "inputs: malformed JSON near byte %ld", end && json ? (long)(end - json) : -1L);
    cvene_request *r;
    cvene_status st = cvene_request_new(ctx, &r);
    if (st == CVENE_OK && !cJSON_IsObject(root)) st = cvene_fail(ctx, CVENE_ERR_FORMAT, "inputs: expected a JSON object");
    static const char *const keys[] = {"base", "sources", "unit_locations", "subspaces", "output_original_output"};
    for (const cJSON *e = st == CVENE_OK ? root->child : NULL; e && st == CVENE_OK; e = e->next) {
        size_t k = 0;
        while (k < sizeof keys / sizeof *keys && strcmp(keys[k], e->string)) k++;
        if (k == sizeof keys / sizeof *keys)
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "inputs: unknown key \"%.80s\" (accepted: base, sources, unit_locations, subspaces, "
                            "output_original_output)", e->string);
    }
    if (st == CVENE_OK) st = parse_input(ctx, cJSON_GetObjectItemCaseSensitive(root, "base"), "base", r, -1);
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(root, "sources");
    if (st == CVENE_OK && srcs && !cJSON_IsNull(srcs)) {
        if (!cJSON_IsArray(srcs)) st = cvene_fail(ctx, CVENE_ERR_FORMAT, "inputs: \"sources\" must be a list");
        int k = 0;
        for (const cJSON *e = st == CVENE_OK ? srcs->child : NULL; e && st == CVENE_OK; e = e->next, k++) {
            char w[32];
            snprintf(w, sizeof w, "sources[%d]", k);
            st = cJSON_IsNull(e) ? cvene_request_set_source(r, k, NULL) : parse_input(ctx, e, w, r, k);
        }
    }
    if (st == CVENE_OK) {
        cJSON *loc = cJSON_DetachItemFromObjectCaseSensitive(root, "unit_locations");
        if (loc && cJSON_IsNull(loc)) cJSON_Delete(loc), loc = NULL;
        r->locations = loc;
        cJSON *sub = cJSON_DetachItemFromObjectCaseSensitive(root, "subspaces");
        if (sub && cJSON_IsNull(sub)) cJSON_Delete(sub), sub = NULL;
        r->subspaces = sub;
        const cJSON *oo = cJSON_GetObjectItemCaseSensitive(root, "output_original_output");
        if (oo && !cJSON_IsBool(oo) && !cJSON_IsNull(oo))
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "inputs: \"output_original_output\" must be true or false");
        r->output_original = cJSON_IsTrue(oo);
    }
    cJSON_Delete(root);
    if (st != CVENE_OK) {
        cvene_request_free(r);
        return st;
    }
    *out = r;
    return CVENE_OK;
}
