/* Model loading, the forward entry point (dispatch on config.json's model_type) and
 * memory planning from a config alone (each architecture's own footprint is in its file). */
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"
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
    cvene_status (*load)(cvene_model *, const char *, const cJSON *) = NULL;
    if (st == CVENE_OK) {
        if (!strcmp(type, "gpt2")) load = gpt2_load;
        else if (!strcmp(type, "gpt_neox")) load = gpt_neox_load;
        else if (!strcmp(type, "gru")) load = gru_load; /* pyvene's GRUConfig.model_type */
        else
            st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                            "%s/config.json: model_type \"%s\" is not supported (supported: gpt2, gpt_neox, gru)",
                            dir, type);
    }
    cvene_model *m = NULL;
    if (st == CVENE_OK && !(m = calloc(1, sizeof *m))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    if (st == CVENE_OK) {
        m->ctx = ctx;
        st = load(m, dir, cfg);
    }
    cJSON_Delete(cfg);
    if (st != CVENE_OK) {
        if (m && m->param_mem) ctx->be->ops->free(ctx->be, m->param_mem);
        if (m) st_archive_close(&m->map);
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
    if (m->train_mem) be->ops->free(be, m->train_mem);
    st_archive_close(&m->map);
    free(m);
}

cvene_model_info cvene_model_get_info(const cvene_model *m) { return m->info; }

int model_position_limit(const cvene_model *m) {
    return m->info.arch == CVENE_ARCH_GPT_NEOX ? (1 << 24) + 1 : m->info.n_positions;
}

cvene_status cvene_forward(cvene_model *m, const int32_t *input_ids, int B, int T,
                           const cvene_run_opts *opts) {
    if (!m) return CVENE_ERR_INVALID_ARG;
    return m->vt->forward(m, input_ids, B, T, opts);
}

void cvene_stage_layers(int n_layer, int n_stages, int stage, int *first, int *count) {
    const int L = n_layer > 0 ? n_layer : 0, N = n_stages > 0 ? n_stages : 1;
    const int s = stage < 0 ? 0 : stage >= N ? N - 1 : stage, extra = s < L % N ? s : L % N;
    if (first) *first = s * (L / N) + extra; /* the first L % N stages hold one layer more */
    if (count) *count = L / N + (s < L % N);
}

/* ---- memory planning (from config.json alone) ---------------------------- */

cvene_plan_params cvene_plan_default_params(void) {
    cvene_plan_params p;
    memset(&p, 0, sizeof p);
    p.batch = p.seq = 1;
    p.n_devices = 1;
    p.device = CVENE_DEVICE_CPU;
    p.weight_dtype = CVENE_F32;
    return p;
}

cvene_status cvene_plan_memory(cvene_ctx *ctx, const char *dir, const cvene_plan_params *p,
                               cvene_memory_plan *out) {
    if (!dir || !p || !out) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "cvene_plan_memory: NULL argument");
    memset(out, 0, sizeof *out);
    if (p->batch <= 0 || p->seq <= 0 || (int64_t)p->batch * p->seq > (1 << 30))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: batch %d and sequence length %d must be > 0 (and "
                          "their product at most 2^30)", p->batch, p->seq);
    if (p->n_devices < 1 || p->n_devices > CVENE_PLAN_MAX_DEVICES)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: devices = %d must be in [1, %d]", p->n_devices,
                          CVENE_PLAN_MAX_DEVICES);
    if (p->device == CVENE_DEVICE_CPU && p->n_devices != 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: the CPU is one device (got devices = %d)",
                          p->n_devices);
    if (p->device != CVENE_DEVICE_CPU && p->device != CVENE_DEVICE_CUDA)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: unknown device %d", (int)p->device);
    if (p->weight_dtype != CVENE_F32 && p->weight_dtype != CVENE_F16 && p->weight_dtype != CVENE_BF16)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: weight dtype must be f32, f16 or bf16");
    if (p->activation_dtype != CVENE_F32 && p->activation_dtype != p->weight_dtype)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: activation dtype %s needs weight dtype %s (got %s)",
                          cvene_dtype_name(p->activation_dtype), cvene_dtype_name(p->activation_dtype),
                          cvene_dtype_name(p->weight_dtype));
    if (p->capacity_bytes < 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: capacity %lld bytes is negative",
                          (long long)p->capacity_bytes);
    cJSON *cfg;
    CVENE_TRY(hf_config_read(ctx, dir, &cfg));
    const char *type;
    cvene_status st = hf_config_str_opt(ctx, cfg, dir, "model_type", NULL, &type);
    if (st == CVENE_OK && !type)
        st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s/config.json: missing required field \"model_type\"", dir);
    model_plan mp;
    const int on_device = p->device != CVENE_DEVICE_CPU;
    if (st == CVENE_OK) {
        if (!strcmp(type, "gpt2"))
            st = gpt2_plan(ctx, dir, cfg, p->batch, p->seq, on_device, p->activation_dtype, &mp);
        else if (!strcmp(type, "gpt_neox"))
            st = gpt_neox_plan(ctx, dir, cfg, p->batch, p->seq, on_device, p->activation_dtype, &mp);
        else
            st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                            "%s/config.json: model_type \"%s\" is not supported by the planner (gpt2, gpt_neox)",
                            dir, type);
    }
    cJSON_Delete(cfg);
    CVENE_TRY(st);
    const int N = p->n_devices, L = mp.n_layer;
    if (N > L)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "plan: %d devices but the model has only %d layers", N, L);
    out->arch = mp.arch;
    out->n_layer = L, out->n_head = mp.n_head, out->n_embd = mp.n_embd, out->n_inner = mp.n_inner;
    out->vocab_size = mp.vocab_size;
    out->n_params = mp.embed_params + (int64_t)L * mp.layer_params + mp.final_params;
    out->n_devices = N;
    out->capacity_bytes = p->capacity_bytes;
    out->fits = p->capacity_bytes > 0 ? 1 : -1;
    const int64_t wsize = p->weight_dtype == CVENE_F32 ? 4 : 2;
    const int64_t kv_per_layer = 2 * (int64_t)p->batch * p->seq * mp.n_embd * (int64_t)sizeof(float);
    for (int d = 0; d < N; d++) {
        cvene_plan_device *dv = &out->devices[d];
        cvene_stage_layers(L, N, d, &dv->first_layer, &dv->n_layers);
        dv->n_params = (int64_t)dv->n_layers * mp.layer_params + (d == 0 ? mp.embed_params : 0) +
                       (d == N - 1 ? mp.final_params : 0);
        dv->weight_bytes = dv->n_params * wsize;
        dv->activation_bytes = (int64_t)mp.arena_bytes + (d == N - 1 ? (int64_t)mp.logits_bytes : 0);
        dv->cache_bytes = (int64_t)dv->n_layers * kv_per_layer;
        dv->total_bytes = dv->weight_bytes + dv->activation_bytes + dv->cache_bytes;
        if (p->capacity_bytes > 0 && dv->total_bytes > p->capacity_bytes) out->fits = 0;
    }
    return CVENE_OK;
}
