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
        cJSON_AddItemToArray(cs, cJSON_CreateBool(0));
        cJSON_AddItemToArray(dims, cJSON_CreateNumber(w[i].D));
        snprintf(cls, sizeof cls, "<class 'pyvene.models.interventions.%s'>", cvene_intervention_type_name(r->type));
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
        /* the state dict */
        st_out_tensor ts[TR_MAX_TENSORS];
        for (int k = 0; k < w[i].n; k++) {
            const tr_tensor *x = &w[i].t[k];
            ts[k] = (st_out_tensor){x->name, ST_F32, x->ndim, {x->shape[0], x->shape[1]}, x->value};
        }
        const char *meta[] = {"producer", "cvene train", "intervention", cvene_intervention_type_name(r->type)};
        snprintf(path, sizeof path, "%.3000s/intkey_%s.safetensors", dir, key);
        st = st_write(ctx, path, ts, w[i].n, meta, 2);
    }
    char *text = st == CVENE_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (st == CVENE_OK && !text) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    snprintf(path, sizeof path, "%.3000s/config.json", dir);
    if (st == CVENE_OK) st = write_text_atomic(ctx, path, text);
    free(text);
    return st;
}

cvene_status train_io_load_tensors(cvene_ctx *ctx, tr_weights *w, const char *path) {
    st_archive ar;
    memset(&ar, 0, sizeof ar);
    CVENE_TRY(st_archive_add_file(ctx, &ar, path));
    cvene_status st = CVENE_OK;
    for (int i = 0; i < ar.n_tensors && st == CVENE_OK; i++) {
        const st_tensor *s = &ar.tensors[i];
        tr_tensor *x = tr_weights_find(w, s->name);
        if (!x) {
            if (strcmp(s->name, "embed_dim") && strcmp(s->name, "interchange_dim") &&
                strcmp(s->name, "intervention_population"))
                st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' is not a parameter of a %s", path, s->name,
                                cvene_intervention_type_name(w->type));
            continue;
        }
        int64_t numel = 1;
        for (int d = 0; d < s->ndim; d++) numel *= s->shape[d];
        const int same = s->ndim == x->ndim && (x->ndim < 1 || s->shape[0] == x->shape[0]) &&
                         (x->ndim < 2 || s->shape[1] == x->shape[1]);
        if (!same || numel != x->numel)
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %d dims (%lld x %lld) but this %s (D = %d) needs "
                            "%d (%lld x %lld)", path, s->name, s->ndim, (long long)(s->ndim > 0 ? s->shape[0] : 1),
                            (long long)(s->ndim > 1 ? s->shape[1] : 1), cvene_intervention_type_name(w->type), w->D,
                            x->ndim, (long long)(x->ndim > 0 ? x->shape[0] : 1), (long long)(x->ndim > 1 ? x->shape[1] : 1));
        else
            st = st_tensor_to_f32(ctx, s, x->value);
    }
    st_archive_close(&ar);
    return st;
}
