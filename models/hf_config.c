#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/fileio.h"
#include "models/hf_config.h"

/* "a string (\"64\")", "a number (2.5)", ...: the type and, for scalars, the value. */
static const char *json_desc(const cJSON *j, char *buf, size_t len) {
    if (cJSON_IsNull(j)) snprintf(buf, len, "null");
    else if (cJSON_IsBool(j)) snprintf(buf, len, "a boolean (%s)", cJSON_IsTrue(j) ? "true" : "false");
    else if (cJSON_IsNumber(j)) snprintf(buf, len, "a number (%.17g)", j->valuedouble);
    else if (cJSON_IsString(j)) snprintf(buf, len, "a string (\"%.64s\")", j->valuestring);
    else if (cJSON_IsArray(j)) snprintf(buf, len, "an array");
    else if (cJSON_IsObject(j)) snprintf(buf, len, "an object");
    else snprintf(buf, len, "invalid");
    return buf;
}

cvene_status hf_config_read(cvene_ctx *ctx, const char *dir, cJSON **out) {
    char path[4096];
    *out = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *buf = NULL, why[4200];
    size_t len = 0;
    cvene_status rs = file_read_all(path, (size_t)16 << 20, &buf, &len, why, sizeof why);
    if (rs != CVENE_OK) return cvene_fail(ctx, rs, "%s", why);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, (size_t)len, &end, 0);
    while (root && end < buf + len && *end && strchr(" \t\n\r", *end)) end++;
    if (root && end < buf + len) { /* something after the value */
        cJSON_Delete(root);
        root = NULL;
    }
    if (!root || !cJSON_IsObject(root)) {
        long at = root || !end ? -1 : (long)(end - buf);
        cJSON_Delete(root);
        free(buf);
        if (at >= 0) return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: malformed JSON near byte %ld", path, at);
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: not a JSON object", path);
    }
    free(buf);
    *out = root;
    return CVENE_OK;
}

static cvene_status get_int(cvene_ctx *ctx, const cJSON *cfg, const char *dir, const char *field,
                            int lo, int hi, int required, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, field);
    char desc[96];
    if (!j || cJSON_IsNull(j)) {
        if (required)
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: missing required field \"%s\"",
                              dir, field);
        *out = def;
        return CVENE_OK;
    }
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: field \"%s\" must be an integer, got %s",
                          dir, field, json_desc(j, desc, sizeof desc));
    if (j->valuedouble < lo || j->valuedouble > hi)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: field \"%s\" = %.17g is outside [%d, %d]",
                          dir, field, j->valuedouble, lo, hi);
    *out = (int)j->valuedouble;
    return CVENE_OK;
}

cvene_status hf_config_int(cvene_ctx *ctx, const cJSON *cfg, const char *dir, const char *field,
                           int lo, int hi, int *out) {
    return get_int(ctx, cfg, dir, field, lo, hi, 1, 0, out);
}

cvene_status hf_config_int_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                               const char *field, int lo, int hi, int def, int *out) {
    return get_int(ctx, cfg, dir, field, lo, hi, 0, def, out);
}

cvene_status hf_config_float_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                                 const char *field, double def, double *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, field);
    char desc[96];
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return CVENE_OK;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: field \"%s\" must be a finite number, got %s",
                          dir, field, json_desc(j, desc, sizeof desc));
    *out = j->valuedouble;
    return CVENE_OK;
}

cvene_status hf_config_bool_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                                const char *field, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, field);
    char desc[96];
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return CVENE_OK;
    }
    if (!cJSON_IsBool(j))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: field \"%s\" must be true or false, got %s",
                          dir, field, json_desc(j, desc, sizeof desc));
    *out = cJSON_IsTrue(j);
    return CVENE_OK;
}

cvene_status hf_config_str_opt(cvene_ctx *ctx, const cJSON *cfg, const char *dir,
                               const char *field, const char *def, const char **out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, field);
    char desc[96];
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return CVENE_OK;
    }
    if (!cJSON_IsString(j))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: field \"%s\" must be a string, got %s",
                          dir, field, json_desc(j, desc, sizeof desc));
    *out = j->valuestring;
    return CVENE_OK;
}
