/* Reading a sweep's results file back for --resume (bindings/cli/cmd_sweep.c writes it).
 * The file is the user's to move, edit or damage, so every value is checked and a bad one
 * is refused with the JSON path of the entry; nothing is guessed. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bindings/cli/cli.h"

/* the keys cmd_sweep writes */
static const char *const resume_keys[] = {"sweep", "scores", "tokens", "base_score", "source_score", "complete"};

static int fail(char *err, size_t errlen, const char *path, const char *what) {
    snprintf(err, errlen, "%s: %s", path, what);
    return -1;
}

/* A JSON number that is a finite f32 value (a score is stored as one). */
static int f32_number(const cJSON *j, double *out) {
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || fabs(j->valuedouble) > FLT_MAX) return 0;
    *out = j->valuedouble;
    return 1;
}

int cli_resume_read(const char *text, const char *path, const cJSON *spec, int nl, int np, float *scores, int *done,
                    double *base_score, double *source_score, char *err, size_t errlen) {
    char msg[512];
    cJSON *doc = cJSON_Parse(text);
    if (!doc) return fail(err, errlen, path, "malformed JSON");
    int rc = -1;
    if (!cJSON_IsObject(doc)) {
        fail(err, errlen, path, "expected a JSON object");
        goto out;
    }
    for (const cJSON *e = doc->child; e; e = e->next) {
        size_t k = 0;
        while (k < sizeof resume_keys / sizeof *resume_keys && strcmp(resume_keys[k], e->string)) k++;
        if (k == sizeof resume_keys / sizeof *resume_keys) {
            snprintf(msg, sizeof msg, "unknown key \"%.100s\" (a results file has sweep, scores, tokens, base_score, "
                     "source_score and complete)", e->string);
            fail(err, errlen, path, msg);
            goto out;
        }
    }
    if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(doc, "sweep"), spec, 1)) {
        fail(err, errlen, path, "was written by a different sweep (model, prompts, component, metric, tokens, "
                                "layers or positions differ); remove it or drop --resume");
        goto out;
    }
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(doc, "scores");
    if (!cJSON_IsArray(rows) || cJSON_GetArraySize(rows) != nl) {
        snprintf(msg, sizeof msg, "\"scores\" must be a list of %d rows (one per layer, null when not done)", nl);
        fail(err, errlen, path, msg);
        goto out;
    }
    int li = 0, n_done = 0;
    for (const cJSON *r = rows->child; r; r = r->next, li++) {
        done[li] = 0;
        if (cJSON_IsNull(r)) continue;
        if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != np) {
            snprintf(msg, sizeof msg, "scores[%d] must be null or a list of %d numbers (one per position)", li, np);
            fail(err, errlen, path, msg);
            goto out;
        }
        int pi = 0;
        for (const cJSON *e = r->child; e; e = e->next, pi++) {
            double v;
            if (!f32_number(e, &v)) {
                char *txt = cJSON_PrintUnformatted(e);
                snprintf(msg, sizeof msg, "scores[%d][%d] = %.60s is not a finite f32 number", li, pi,
                         txt ? txt : "?");
                cJSON_free(txt);
                fail(err, errlen, path, msg);
                goto out;
            }
            scores[(size_t)li * np + pi] = (float)v;
        }
        done[li] = 1;
        n_done++;
    }
    const char *names[2] = {"base_score", "source_score"};
    double *outs[2] = {base_score, source_score};
    for (int k = 0; k < 2; k++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(doc, names[k]);
        *outs[k] = 0;
        if (!j && !n_done) continue; /* nothing computed yet */
        if (!f32_number(j, outs[k])) {
            char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
            snprintf(msg, sizeof msg, "\"%s\" = %.60s must be a finite number", names[k], txt ? txt : "(missing)");
            cJSON_free(txt);
            fail(err, errlen, path, msg);
            goto out;
        }
    }
    const cJSON *complete = cJSON_GetObjectItemCaseSensitive(doc, "complete");
    if (complete && !cJSON_IsBool(complete)) {
        fail(err, errlen, path, "\"complete\" must be true or false");
        goto out;
    }
    if (complete && cJSON_IsTrue(complete) != (n_done == nl)) {
        snprintf(msg, sizeof msg, "\"complete\" is %s but %d of %d rows of \"scores\" are done",
                 cJSON_IsTrue(complete) ? "true" : "false", n_done, nl);
        fail(err, errlen, path, msg);
        goto out;
    }
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(doc, "tokens");
    if (tokens) {
        int ok = cJSON_IsArray(tokens) && cJSON_GetArraySize(tokens) == np;
        for (const cJSON *e = ok ? tokens->child : NULL; e; e = e->next) ok &= cJSON_IsString(e);
        if (!ok) {
            snprintf(msg, sizeof msg, "\"tokens\" must be a list of %d strings (one per position)", np);
            fail(err, errlen, path, msg);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0) {
        for (int q = 0; q < nl; q++) done[q] = 0;
        *base_score = *source_score = 0;
    }
    cJSON_Delete(doc);
    return rc;
}
