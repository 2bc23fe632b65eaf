/* Model loading and the forward entry point: dispatch on config.json's model_type. */
#include <stdlib.h>
#include <string.h>

#include "models/hf_config.h"
#include "models/model.h"

cvene_status cvene_model_load(cvene_ctx *ctx, const char *dir, cvene_model **out) {
    if (!out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_model_load: out is NULL");
    *out = NULL;
    if (!ctx || !dir) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_model_load: NULL ctx or dir");
    cJSON *cfg;
    CVENE_TRY(hf_config_read(ctx, dir, &cfg));
    const char *type;
    cvene_status st = hf_config_str_opt(ctx, cfg, dir, "model_type", NULL, &type);
    if (st == CVENE_OK && !type)
        st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: missing required field \"model_type\"", dir);
    if (st == CVENE_OK && strcmp(type, "gpt2") != 0)
        st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                        "%s/config.json: model_type \"%s\" is not supported (supported: gpt2)", dir, type);
    cvene_model *m = NULL;
    if (st == CVENE_OK && !(m = calloc(1, sizeof *m))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) {
        m->ctx = ctx;
        st = gpt2_load(m, dir, cfg);
    }
    cJSON_Delete(cfg);
    if (st != CVENE_OK) {
        if (m && m->param_mem) ctx->be->ops->free(ctx->be, m->param_mem);
        free(m);
        return st;
    }
    *out = m;
    return CVENE_OK;
}

void cvene_model_free(cvene_model *m) {
    if (!m) return;
    cvene_backend *be = m->ctx->be;
    if (m->vt) m->vt->free(m);
    if (m->param_mem) be->ops->free(be, m->param_mem);
    if (m->act_mem) be->ops->free(be, m->act_mem);
    free(m);
}

cvene_model_info cvene_model_get_info(const cvene_model *m) { return m->info; }

cvene_status cvene_forward(cvene_model *m, const int32_t *input_ids, int B, int T,
                           const cvene_run_opts *opts) {
    if (!m) return CVENE_ERR_INVALID_ARG;
    return m->vt->forward(m, input_ids, B, T, opts);
}
