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
#include "engine/orthogonal.h"
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

/* pyvene's interchange_dim buffer (and the config's intervention_dimensions): RotatedSpace's
 * swapped dims, every other type its embed_dim */
static int interchange_dim(const tr_weights *w) {
    return w->type == CVENE_IV_ROTATED_SPACE && w->r > 0 ? w->r : w->D;
}

#define LOREFT_A "learned_source.weight"
#define LOREFT_B "learned_source.bias"
#define ORIGINAL "rotate_layer.parametrizations.weight.original"
#define ROT_BASE "rotate_layer.parametrizations.weight.0.base"

/* The rotation W (n x k) = orthogonal(original, base), rounded to f32 as torch keeps it. */
static cvene_status materialise(cvene_ctx *ctx, const tr_weights *w, float *W) {
    const tr_tensor *X = tr_weights_find((tr_weights *)w, ORIGINAL), *B = tr_weights_find((tr_weights *)w, ROT_BASE);
    const int n = (int)X->shape[0], k = (int)X->shape[1];
    orth_param *o = orth_new(n, k);
    double *Xd = malloc(sizeof(double) * (size_t)n * k), *Bd = malloc(sizeof(double) * (size_t)n * n);
    double *Wd = malloc(sizeof(double) * (size_t)n * k);
    int ok = o && Xd && Bd && Wd;
    for (int64_t i = 0; ok && i < X->numel; i++) Xd[i] = X->value[i];
    for (int64_t i = 0; ok && i < B->numel; i++) Bd[i] = B->value[i];
    ok = ok && orth_forward(o, Xd, Bd, Wd) == 0;
    for (int64_t i = 0; ok && i < (int64_t)n * k; i++) W[i] = (float)Wd[i];
    orth_free(o), free(Xd), free(Bd), free(Wd);
    return ok ? CVENE_OK : cvene_fail(ctx, CVENE_ERR_OOM, "out of memory materialising a rotation");
}

/* intervention.state_dict() as pyvene writes it: the parameters and buffers under their names
 * and dtypes, embed_dim / interchange_dim (I64 scalars), Boundless's intervention_population
 * (I64 arange). pyreft's LoreftIntervention overrides state_dict: weight and bias of its
 * learned source, and rotate_layer, the materialised (D, r) rotation. */
static cvene_status save_state_dict(cvene_ctx *ctx, const tr_weights *w, const char *path) {
    st_out_tensor ts[TR_MAX_TENSORS + 3];
    int n = 0;
    const int64_t embed = w->D, inter = interchange_dim(w);
    int64_t *pop = NULL;
    float *W = NULL;
    cvene_status st = CVENE_OK;
    if (w->type == CVENE_IV_LOREFT) {
        const tr_tensor *A = tr_weights_find((tr_weights *)w, LOREFT_A), *b = tr_weights_find((tr_weights *)w, LOREFT_B);
        W = malloc(sizeof(float) * (size_t)w->D * w->r);
        if (!W) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        st = materialise(ctx, w, W);
        ts[n++] = (st_out_tensor){"weight", ST_F32, 2, {A->shape[0], A->shape[1]}, A->value};
        ts[n++] = (st_out_tensor){"bias", ST_F32, 1, {b->shape[0]}, b->value};
        ts[n++] = (st_out_tensor){"rotate_layer", ST_F32, 2, {w->D, w->r}, W};
    } else {
        for (int k = 0; k < w->n; k++) {
            const tr_tensor *x = &w->t[k];
            ts[n++] = (st_out_tensor){x->name, ST_F32, x->ndim, {x->shape[0], x->shape[1]}, x->value};
        }
        ts[n++] = (st_out_tensor){"embed_dim", ST_I64, 0, {0}, &embed};
        ts[n++] = (st_out_tensor){"interchange_dim", ST_I64, 0, {0}, &inter};
        if (w->type == CVENE_IV_BOUNDLESS_ROTATED_SPACE) {
            if (!(pop = malloc(sizeof(int64_t) * (size_t)w->D))) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
            for (int i = 0; i < w->D; i++) pop[i] = i;
            ts[n++] = (st_out_tensor){"intervention_population", ST_I64, 1, {w->D}, pop};
        }
    }
    const char *meta[] = {"producer", "cvene train", "intervention", cvene_intervention_type_name(w->type)};
    if (st == CVENE_OK) st = st_write(ctx, path, ts, n, meta, 2);
    free(W), free(pop);
    return st;
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
        cJSON_AddItemToArray(dims, cJSON_CreateNumber(interchange_dim(&w[i])));
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

/* A tensor of the file into x, its shape checked. */
static cvene_status load_into(cvene_ctx *ctx, const char *path, const st_tensor *s, const tr_weights *w,
                              const tr_tensor *x, float *dst) {
    int64_t numel = 1;
    for (int d = 0; d < s->ndim; d++) numel *= s->shape[d];
    const int same = s->ndim == x->ndim && (x->ndim < 1 || s->shape[0] == x->shape[0]) &&
                     (x->ndim < 2 || s->shape[1] == x->shape[1]);
    if (!same || numel != x->numel)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' has %d dims (%lld x %lld) but this %s (D = %d) needs "
                          "%d (%lld x %lld)", path, s->name, s->ndim, (long long)(s->ndim > 0 ? s->shape[0] : 1),
                          (long long)(s->ndim > 1 ? s->shape[1] : 1), cvene_intervention_type_name(w->type), w->D,
                          x->ndim, (long long)(x->ndim > 0 ? x->shape[0] : 1), (long long)(x->ndim > 1 ? x->shape[1] : 1));
    return st_tensor_to_f32(ctx, s, dst);
}

/* pyvene's I64 scalar buffer `name` must say `want`: a file for another width is refused. */
static cvene_status check_scalar(cvene_ctx *ctx, const char *path, const st_tensor *s, int64_t want) {
    int64_t v = 0;
    if (s->dtype != ST_I64 || s->ndim != 0 || s->nbytes != sizeof v)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: '%s' must be an I64 scalar (pyvene's buffer), got %s with %d dims",
                          path, s->name, st_dtype_name(s->dtype), s->ndim);
    memcpy(&v, s->data, sizeof v);
    if (v != want)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "%s: %s is %lld, but this intervention's is %lld (another model "
                          "or another component?)", path, s->name, (long long)v, (long long)want);
    return CVENE_OK;
}

static cvene_status load_file(cvene_ctx *ctx, tr_weights *w, const char *path);

cvene_status train_io_load_tensors(cvene_ctx *ctx, tr_weights *w, const char *path) {
    tr_weights tmp; /* all or nothing: w changes only when the whole file loaded */
    CVENE_TRY(tr_weights_copy(ctx, &tmp, w));
    cvene_status st = load_file(ctx, &tmp, path);
    for (int k = 0; st == CVENE_OK && k < w->n; k++)
        memcpy(w->t[k].value, tmp.t[k].value, sizeof(float) * (size_t)w->t[k].numel);
    tr_weights_free(&tmp);
    return st;
}

static cvene_status load_file(cvene_ctx *ctx, tr_weights *w, const char *path) {
    st_archive ar;
    memset(&ar, 0, sizeof ar);
    CVENE_TRY(st_archive_add_file(ctx, &ar, path));
    cvene_status st = CVENE_OK;
    for (int i = 0; i < ar.n_tensors && st == CVENE_OK; i++) {
        const st_tensor *s = &ar.tensors[i];
        const char *name = s->name;
        if (!strcmp(name, "embed_dim")) {
            st = check_scalar(ctx, path, s, w->D);
            continue;
        }
        if (!strcmp(name, "interchange_dim") || !strcmp(name, "intervention_population"))
            continue; /* the config's intervention_dimensions decide, as in pyvene's load */
        if (w->type == CVENE_IV_LOREFT && !strcmp(name, "rotate_layer")) {
            /* pyreft's load_state_dict: base[:, :r] = R with original as a fresh module has it
             * (-I: the map is then the identity), so W = R */
            tr_tensor *X = tr_weights_find(w, ORIGINAL), *B = tr_weights_find(w, ROT_BASE);
            float *R = malloc(sizeof(float) * (size_t)X->numel);
            if (!R) {
                st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
                break;
            }
            st = load_into(ctx, path, s, w, X, R);
            const int D = w->D, r = w->r;
            for (int a = 0; st == CVENE_OK && a < D; a++)
                for (int b = 0; b < r; b++) {
                    B->value[(size_t)a * D + b] = R[(size_t)a * r + b];
                    X->value[(size_t)a * r + b] = a == b ? -1.0f : 0.0f;
                }
            free(R);
            continue;
        }
        if (w->type == CVENE_IV_LOREFT && (!strcmp(name, "weight") || !strcmp(name, "bias")))
            name = !strcmp(name, "weight") ? LOREFT_A : LOREFT_B;
        tr_tensor *x = tr_weights_find(w, name);
        if (!x) {
            st = cvene_fail(ctx, CVENE_ERR_FORMAT, "%s: tensor '%s' is not in a %s's state dict", path, s->name,
                            cvene_intervention_type_name(w->type));
            break;
        }
        st = load_into(ctx, path, s, w, x, x->value);
    }
    st_archive_close(&ar);
    return st;
}
