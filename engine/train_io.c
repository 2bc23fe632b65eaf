/* Trained interventions on disk (engine/train_io.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "engine/iv_type.h"
#include "engine/train_io.h"
#include "models/fileio.h"
#include "models/safetensors.h"

void train_io_key(const cvene_config *c, int i, char *out, size_t n) {
    const cvene_representation *r = &c->reps[i].r;
    char base[256];
    snprintf(base, sizeof base, "layer_%d_comp_%s_unit_%s_nunit_%d", r->layer, cvene_component_name(r->component),
             cvene_unit_name(r->unit), r->max_number_of_units);
    int dup = 0; /* pyvene numbers repeats of a key: #0, #1, ... */
    for (int j = 0; j < i; j++) {
        const cvene_representation *q = &c->reps[j].r;
        dup += q->layer == r->layer && q->component == r->component && q->unit == r->unit &&
               q->max_number_of_units == r->max_number_of_units;
    }
    snprintf(out, n, "%s#%d", base, dup);
}

static cvene_status write_text_atomic(cvene_ctx *ctx, const char *path, const char *text) {
    char tmp[4500];
    file_remove_stale_tmp(path);
    snprintf(tmp, sizeof tmp, "%.4400s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return cvene_fail(ctx, CVENE_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return cvene_fail(ctx, CVENE_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return CVENE_OK;
}

/* intervention.state_dict() as the type's entry exports it (engine/trainable.h), written as
 * safetensors under the same names and dtypes */
static cvene_status save_state_dict(cvene_ctx *ctx, const tr_weights *w, const char *path) {
    tr_state_dict sd;
    CVENE_TRY(tr_state_dict_export(ctx, w, &sd));
    st_out_tensor ts[TR_SD_MAX];
    for (int k = 0; k < sd.n; k++) {
        const tr_sd_tensor *x = &sd.t[k];
        ts[k] = (st_out_tensor){x->name, x->is_i64 ? ST_I64 : ST_F32, x->ndim, {x->shape[0], x->shape[1]},
                                x->is_i64 ? (const void *)x->l : (const void *)x->f};
    }
    const char *meta[] = {"producer", "cvene train", "intervention", cvene_intervention_type_name(w->type)};
    cvene_status st = st_write(ctx, path, ts, sd.n, meta, 2);
    tr_state_dict_free(&sd);
    return st;
}

/* config.json's intervention_dimensions entry: interchange_dim.tolist() */
static cJSON *interchange_json(const tr_weights *w) {
    int n = 0;
    int64_t one;
    tr_interchange_dim(w, &one, 1, &n);
    int64_t *v = malloc(sizeof(int64_t) * (size_t)n);
    if (!v) return NULL;
    const int list = tr_interchange_dim(w, v, n, &n);
    cJSON *j = list ? cJSON_CreateArray() : cJSON_CreateNumber((double)v[0]);
    for (int i = 0; list && j && i < n; i++) cJSON_AddItemToArray(j, cJSON_CreateNumber((double)v[i]));
    free(v);
    return j;
}

cvene_status train_io_save(cvene_ctx *ctx, const cvene_config *c, const tr_weights *w, const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return cvene_fail(ctx, CVENE_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
    /* pyvene's saved form: positional representations, class names, sorted keys */
    cJSON *root = cJSON_CreateObject(), *cs = cJSON_AddArrayToObject(root, "intervention_constant_sources");
    cJSON *dims = cJSON_AddArrayToObject(root, "intervention_dimensions");
    cJSON *types = cJSON_AddArrayToObject(root, "intervention_types");
    cJSON_AddStringToObject(root, "mode", c->mode == CVENE_MODE_SERIAL ? "serial" : "parallel");
    cJSON *reps = cJSON_AddArrayToObject(root, "representations"), *keys = cJSON_AddArrayToObject(root, "sorted_keys");
    char key[300], cls[200], path[4400];
    cvene_status st = CVENE_OK;
    for (int i = 0; i < c->n && st == CVENE_OK; i++) {
        const cvene_representation *r = &c->reps[i].r;
        /* pyvene's is_source_constant: pyreft's sourceless types say true */
        cJSON_AddItemToArray(cs, cJSON_CreateBool(!(iv_type_get(r->type)->flags & IV_TAKES_SOURCE)));
        cJSON_AddItemToArray(dims, interchange_json(&w[i]));
        snprintf(cls, sizeof cls, "<class '%s.%s'>", iv_type_module(r->type), cvene_intervention_type_name(r->type));
        cJSON_AddItemToArray(types, cJSON_CreateString(cls));
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, cJSON_CreateNumber(r->layer));
        cJSON_AddItemToArray(a, cJSON_CreateString(cvene_component_name(r->component)));
        cJSON_AddItemToArray(a, cJSON_CreateString(cvene_unit_name(r->unit)));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(r->max_number_of_units));
        cJSON_AddItemToArray(a, r->low_rank_dimension ? cJSON_CreateNumber(r->low_rank_dimension) : cJSON_CreateNull());
        for (int k = 0; k < 3; k++) cJSON_AddItemToArray(a, cJSON_CreateNull()); /* type, intervention, partition */
        cJSON_AddItemToArray(a, r->group_key >= 0 ? cJSON_CreateNumber(r->group_key) : cJSON_CreateNull());
        cJSON_AddItemToArray(a, r->link_key >= 0 ? cJSON_CreateNumber(r->link_key) : cJSON_CreateNull());
        for (int k = 0; k < 4; k++) cJSON_AddItemToArray(a, cJSON_CreateNull()); /* moe, sources, latent */
        cJSON_AddItemToArray(reps, a);
        train_io_key(c, i, key, sizeof key);
        cJSON_AddItemToArray(keys, cJSON_CreateString(key));
        snprintf(path, sizeof path, "%.3000s/intkey_%s.safetensors", dir, key);
        if (st == CVENE_OK) st = save_state_dict(ctx, &w[i], path);
    }
    char *text = st == CVENE_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (st == CVENE_OK && !text) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    snprintf(path, sizeof path, "%.3000s/config.json", dir);
    if (st == CVENE_OK) st = write_text_atomic(ctx, path, text);
    free(text);
    return st;
}

static cvene_status load_file(cvene_ctx *ctx, tr_weights *w, const char *path);

cvene_status train_io_load_tensors(cvene_ctx *ctx, tr_weights *w, const char *path) {
    tr_weights tmp; /* all or nothing: w changes only when the whole file loaded */
    CVENE_TRY(tr_weights_copy(ctx, &tmp, w));
    cvene_status st = load_file(ctx, &tmp, path);
    if (st == CVENE_OK) { /* the file may have reshaped tensors (PCA's components, NoReFT's bias) */
        tr_weights_free(w);
        *w = tmp;
    } else {
        tr_weights_free(&tmp);
    }
    return st;
}

/* The file's tensors as a state dict (F16 / BF16 converted to f32, I64 kept), mapped onto w by
 * the type's entry. */
static cvene_status load_file(cvene_ctx *ctx, tr_weights *w, const char *path) {
    st_archive ar;
    memset(&ar, 0, sizeof ar);
    CVENE_TRY(st_archive_add_file(ctx, &ar, path));
    const int n = ar.n_tensors;
    tr_sd_tensor *t = calloc((size_t)(n ? n : 1), sizeof *t);
    float **conv = calloc((size_t)(n ? n : 1), sizeof *conv);
    cvene_status st = t && conv ? CVENE_OK : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    for (int i = 0; i < n && st == CVENE_OK; i++) {
        const st_tensor *s = &ar.tensors[i];
        tr_sd_tensor *x = &t[i];
        x->name = s->name, x->ndim = s->ndim, x->dtype = st_dtype_name(s->dtype);
        if (s->ndim > 2) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %d dims; an intervention's have at most 2",
                            path, s->name, s->ndim);
            break;
        }
        for (int d = 0; d < s->ndim; d++) x->shape[d] = s->shape[d];
        int64_t numel = 1;
        for (int d = 0; d < s->ndim; d++) numel *= s->shape[d];
        if (!(conv[i] = malloc(8 * (size_t)(numel ? numel : 1)))) { /* room for f32 or int64 */
            st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            break;
        }
        if (s->dtype == ST_I64) { /* copied: the file's data need not be 8-byte aligned */
            if (s->nbytes != sizeof(int64_t) * (size_t)numel) {
                st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %zu bytes for %lld I64 values", path,
                                s->name, s->nbytes, (long long)numel);
                break;
            }
            memcpy(conv[i], s->data, s->nbytes);
            x->is_i64 = 1, x->l = (const int64_t *)(void *)conv[i];
            continue;
        }
        st = st_tensor_to_f32(ctx, s, conv[i]);
        x->f = conv[i];
    }
    if (st == CVENE_OK) st = tr_state_dict_import(ctx, w, path, t, n);
    for (int i = 0; conv && i < n; i++) free(conv[i]);
    free(conv), free(t);
    st_archive_close(&ar);
    return st;
}
