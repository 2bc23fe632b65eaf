#define _POSIX_C_SOURCE 200809L
/* Intervention configs: pyvene's IntervenableConfig built through the C API or
 * read from / written to JSON. Validation here is model-independent; layer
 * ranges and dimensions are checked against the model in cvene_run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"
#include "engine/trained.h"
#include "engine/iv_type.h"

static const char *const unit_names[CVENE_N_UNITS] = {"pos", "h", "h.pos", "t"};

const char *cvene_unit_name(cvene_unit u) { return (u >= 0 && u < CVENE_N_UNITS) ? unit_names[u] : "?"; }

void cvene_free(void *p) { free(p); }

cvene_representation cvene_representation_default(void) {
    cvene_representation r;
    memset(&r, 0, sizeof r);
    r.component = CVENE_BLOCK_OUTPUT;
    r.unit = CVENE_UNIT_POS;
    r.max_number_of_units = 1;
    r.type = CVENE_IV_VANILLA;
    r.group_key = -1;
    r.link_key = -1;
    r.noise_level = 0.13462981581687927; /* pyvene's default noise_level (f32 value) */
    r.noise_seed = 1;                    /* pyvene draws np.random.RandomState(1) */
    return r;
}

cvene_status cvene_config_new(cvene_ctx *ctx, cvene_mode mode, cvene_config **out) {
    *out = NULL;
    if (mode != CVENE_MODE_PARALLEL && mode != CVENE_MODE_SERIAL)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "mode %d is not parallel (0) or serial (1)", (int)mode);
    cvene_config *c = calloc(1, sizeof *c);
    if (!c) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    c->ctx = ctx;
    c->mode = mode;
    *out = c;
    return CVENE_OK;
}

static void rep_free(iv_rep *r) {
    free(r->partition_offsets);
    free(r->partition_dims);
    free(r->source);
    free(r->callback_name);
    iv_trained_free(r->trained);
}

void cvene_config_free(cvene_config *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) rep_free(&c->reps[i]);
    free(c->reps);
    free(c);
}

int cvene_config_count(const cvene_config *c) { return c ? c->n : 0; }

const cvene_representation *cvene_config_get(const cvene_config *c, int i) {
    return c && i >= 0 && i < c->n ? &c->reps[i].r : NULL;
}

static int is_head_component(cvene_component c) {
    return c == CVENE_HEAD_QUERY_OUTPUT || c == CVENE_HEAD_KEY_OUTPUT || c == CVENE_HEAD_VALUE_OUTPUT ||
           c == CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
}

/* Skip reads the *input* of the module pyvene hooks; cvene has it as a site
 * only for these components. */
static int skip_supported(cvene_component c) {
    switch (c) {
    case CVENE_BLOCK_INPUT: case CVENE_BLOCK_OUTPUT: case CVENE_ATTENTION_INPUT:
    case CVENE_ATTENTION_WEIGHT: case CVENE_ATTENTION_VALUE_OUTPUT:
    case CVENE_HEAD_ATTENTION_VALUE_OUTPUT: case CVENE_ATTENTION_OUTPUT:
    case CVENE_MLP_INPUT: case CVENE_MLP_OUTPUT:
        return 1;
    default:
        return 0;
    }
}

/* Check one representation on its own; idx names it in messages. */
static cvene_status check_rep(cvene_ctx *ctx, const cvene_representation *r, int idx) {
    if (r->component < 0 || r->component >= CVENE_N_COMPONENTS)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].component = %d is not a known component",
                          idx, (int)r->component);
    const char *cn = cvene_component_name(r->component);
    if (r->layer < 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].layer = %d must be >= 0", idx, r->layer);
    if (r->type < 0 || r->type >= CVENE_IV_N_TYPES)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].intervention_type = %d is unknown", idx,
                          (int)r->type);
    if (r->unit < 0 || r->unit >= CVENE_N_UNITS)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].unit = %d is unknown", idx, (int)r->unit);
    /* GRU streams are indexed by timestep, transformer streams by position/head */
    int gru = cvene_component_is_gru(r->component);
    if (gru && r->unit != CVENE_UNIT_T)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: unit \"%s\" is not valid for GRU component %s: a GRU's "
                          "streams are indexed by timestep, use unit \"t\"",
                          idx, cvene_unit_name(r->unit), cn);
    if (!gru && r->unit == CVENE_UNIT_T)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: unit \"t\" (GRU timesteps) is only valid for GRU components "
                          "(cell_input, cell_output, {reset,update,new}_gate_{input,output}, x2h_output, "
                          "h2h_output, {reset,update,new}_{x2h,h2h}_output); %s takes \"%s\"",
                          idx, cn, is_head_component(r->component) ? "h\" or \"h.pos" : "pos");
    if (gru && r->link_key >= 0)
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "representations[%d]: intervention_link_key is not supported with unit \"t\"", idx);
    int head = is_head_component(r->component);
    if (head && r->unit == CVENE_UNIT_POS)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: unit \"pos\" is not valid for component %s (use \"h\" or \"h.pos\")",
                          idx, cn);
    if (!head && !gru && r->unit != CVENE_UNIT_POS)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: unit \"%s\" is only valid for per-head components "
                          "(head_query_output, head_key_output, head_value_output, "
                          "head_attention_value_output); %s takes \"pos\"",
                          idx, cvene_unit_name(r->unit), cn);
    if (r->interchange_dim < 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].interchange_dim = %d must be >= 0 (0: every "
                          "dim)", idx, r->interchange_dim);
    if (r->max_number_of_units < 1)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].max_number_of_units = %d must be >= 1",
                          idx, r->max_number_of_units);
    if (r->type == CVENE_IV_SKIP && !skip_supported(r->component))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "representations[%d]: SkipIntervention on %s needs that module's input, which "
                          "cvene does not expose (supported: block_input, block_output, attention_input, "
                          "attention_weight, attention_value_output, head_attention_value_output, "
                          "attention_output, mlp_input, mlp_output)",
                          idx, cn);
    if (r->type == CVENE_IV_NOISE && (r->unit != CVENE_UNIT_POS || r->component == CVENE_ATTENTION_WEIGHT))
        return cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                          "representations[%d]: NoiseIntervention needs unit \"pos\" on a (B, T, D) stream, not %s",
                          idx, cn);
    if (r->type == CVENE_IV_NOISE && !(isfinite(r->noise_level)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d].noise_level is not finite", idx);
    if (r->source && !(iv_type_get(r->type)->flags & IV_CONST_SOURCE))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: source_representation is only used by Vanilla, Addition and "
                          "Subtraction interventions, not %s", idx, cvene_intervention_type_name(r->type));
    if (r->source && r->source_len <= 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: source_representation is empty", idx);
    for (int64_t i = 0; r->source && i < r->source_len; i++)
        if (!isfinite(r->source[i]))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].source_representation[%lld] is not finite", idx, (long long)i);
    if (r->n_partitions < 0 || (r->n_partitions > 0 && (!r->partition_offsets || !r->partition_dims)))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "representations[%d]: subspace_partition is malformed", idx);
    if (r->n_partitions > 0 && r->partition_offsets[0] != 0)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "representations[%d]: subspace_partition offsets must start at 0 (got %d)", idx,
                          r->partition_offsets[0]);
    for (int p = 0; p < r->n_partitions; p++) {
        if (r->partition_offsets[p + 1] <= r->partition_offsets[p])
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].subspace_partition[%d] is %s: every part needs at least one "
                              "dimension", idx, p, r->partition_offsets[p + 1] < r->partition_offsets[p]
                              ? "malformed (its offsets decrease)" : "empty");
        if (r->partition_offsets[p + 1] > IV_MAX_PARTITION_DIMS)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].subspace_partition lists more than %d dimensions", idx,
                              IV_MAX_PARTITION_DIMS);
        for (int k = r->partition_offsets[p]; k < r->partition_offsets[p + 1]; k++)
            if (r->partition_dims[k] < 0 || r->partition_dims[k] >= IV_MAX_DIM)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "representations[%d].subspace_partition[%d] has dimension %d, outside [0, %d)",
                                  idx, p, r->partition_dims[k], IV_MAX_DIM);
    }
    return CVENE_OK;
}

/* Group keys: all or none, non-decreasing in config order, exactly 0..G-1. */
static cvene_status check_groups(cvene_config *c) {
    int with = 0, maxg = -1;
    for (int i = 0; i < c->n; i++) with += c->reps[i].r.group_key >= 0;
    if (with && with != c->n)
        return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG,
                          "group_key is set on %d of %d representations; set it on all or none", with, c->n);
    if (!with) {
        c->n_groups = c->n;
        return CVENE_OK;
    }
    for (int i = 0; i < c->n; i++) {
        int g = c->reps[i].r.group_key;
        if (i > 0 && g < c->reps[i - 1].r.group_key)
            return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].group_key = %d comes after group_key %d: group keys must "
                              "not decrease in config order", i, g, c->reps[i - 1].r.group_key);
        if (g > maxg + 1)
            return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].group_key = %d skips group %d: group keys must be 0..G-1",
                              i, g, maxg + 1);
        if (g > maxg) maxg = g;
    }
    c->n_groups = maxg + 1;
    if (c->mode == CVENE_MODE_SERIAL)
        for (int i = 1; i < c->n; i++)
            if (c->reps[i].r.group_key == c->reps[i - 1].r.group_key)
                return cvene_fail(c->ctx, CVENE_ERR_UNSUPPORTED,
                                  "serial mode takes one intervention per group; group_key %d has several "
                                  "(pyvene mishandles this case too)", c->reps[i].r.group_key);
    return CVENE_OK;
}

cvene_status cvene_config_add(cvene_config *c, const cvene_representation *r) {
    if (!c || !r) return CVENE_ERR_INVALID_ARG;
    CVENE_TRY(check_rep(c->ctx, r, c->n));
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 4;
        iv_rep *grown = realloc(c->reps, sizeof(iv_rep) * (size_t)cap);
        if (!grown) return cvene_fail(c->ctx, CVENE_ERR_OOM, "out of memory");
        c->reps = grown;
        c->cap = cap;
    }
    iv_rep *d = &c->reps[c->n];
    memset(d, 0, sizeof *d);
    d->r = *r;
    int np = r->n_partitions, nd = np ? r->partition_offsets[np] : 0;
    int ok = 1;
    if (np) {
        d->partition_offsets = malloc(sizeof(int) * (size_t)(np + 1));
        d->partition_dims = malloc(sizeof(int) * (size_t)(nd ? nd : 1));
        ok = d->partition_offsets && d->partition_dims;
        if (ok) {
            memcpy(d->partition_offsets, r->partition_offsets, sizeof(int) * (size_t)(np + 1));
            memcpy(d->partition_dims, r->partition_dims, sizeof(int) * (size_t)nd);
        }
    }
    if (ok && r->source) {
        d->source = malloc(sizeof(float) * (size_t)r->source_len);
        ok = d->source != NULL;
        if (ok) memcpy(d->source, r->source, sizeof(float) * (size_t)r->source_len);
    }
    if (!ok) {
        rep_free(d);
        return cvene_fail(c->ctx, CVENE_ERR_OOM, "out of memory");
    }
    d->r.partition_offsets = d->partition_offsets;
    d->r.partition_dims = d->partition_dims;
    d->r.source = d->source;
    /* link keys are labels, not sizes: number them densely in order of first use */
    d->link = -1;
    if (r->link_key >= 0) {
        for (int j = 0; j < c->n && d->link < 0; j++)
            if (c->reps[j].r.link_key == r->link_key) d->link = c->reps[j].link;
        if (d->link < 0) d->link = c->n_links++;
    }
    c->n++;
    cvene_status st = check_groups(c);
    if (st != CVENE_OK) {
        iv_rep *last = &c->reps[--c->n];
        if (last->link == c->n_links - 1) { /* a key this representation introduced */
            int used = 0;
            for (int j = 0; j < c->n; j++) used |= c->reps[j].link == last->link;
            if (!used) c->n_links--;
        }
        rep_free(last);
        return st;
    }
    return CVENE_OK;
}

cvene_status cvene_config_bind_callback(cvene_config *c, const char *name, cvene_intervention_fn fn,
                                        void *user) {
    int bound = 0;
    for (int i = 0; i < c->n; i++)
        if (c->reps[i].callback_name && name && strcmp(c->reps[i].callback_name, name) == 0) {
            c->reps[i].r.fn = fn;
            c->reps[i].r.fn_user = user;
            bound++;
        }
    if (!bound)
        return cvene_fail(c->ctx, CVENE_ERR_INVALID_ARG, "no representation names callback \"%s\"",
                          name ? name : "(null)");
    return CVENE_OK;
}

/* ---- JSON --------------------------------------------------------------- */

static cvene_status json_int(cvene_ctx *ctx, const cJSON *j, const char *what, int idx, int lo, int *out) {
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble || j->valuedouble < lo ||
        j->valuedouble > 1e9)
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].%s must be an integer >= %d", idx, what, lo);
    *out = (int)j->valuedouble;
    return CVENE_OK;
}

/* subspace_partition: [[a, b], [d0, d1, d2], ...]; a 2-int entry is range(a, b). Sizes are
 * summed in 64 bits and bounded (IV_MAX_DIM per dimension, IV_MAX_PARTITION_DIMS in all) before
 * anything is allocated; against the stream's real width they are checked when the config runs. */
static cvene_status parse_partition(cvene_ctx *ctx, const cJSON *j, int idx, cvene_representation *r,
                                    int **offs, int **dims) {
    if (!j || cJSON_IsNull(j)) return CVENE_OK;
    if (!cJSON_IsArray(j))
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].subspace_partition must be a list of lists", idx);
    int np = cJSON_GetArraySize(j), p = 0;
    int64_t total = 0;
    for (const cJSON *e = j->child; e; e = e->next, p++) {
        if (!cJSON_IsArray(e))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].subspace_partition[%d] must be a list", idx,
                              p);
        int n = cJSON_GetArraySize(e);
        if (n == 0)
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "representations[%d].subspace_partition[%d] is empty: every part needs at least one "
                              "dimension", idx, p);
        if (n == 2 && cJSON_IsNumber(e->child) && cJSON_IsNumber(e->child->next)) {
            double a = e->child->valuedouble, b = e->child->next->valuedouble;
            if (!(a >= 0) || !(b > a) || b > IV_MAX_DIM || floor(a) != a || floor(b) != b)
                return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                  "representations[%d].subspace_partition[%d] = [%.0f, %.0f] is not a range [a, b) of "
                                  "dimensions with 0 <= a < b <= %d", idx, p, a, b, IV_MAX_DIM);
            total += (int64_t)(b - a);
        } else {
            total += n;
        }
        if (total > IV_MAX_PARTITION_DIMS)
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "representations[%d].subspace_partition lists more than %d dimensions in all (up to "
                              "part %d); a part is a set of a stream's dimensions", idx, IV_MAX_PARTITION_DIMS, p);
    }
    *offs = malloc(sizeof(int) * (size_t)(np + 1));
    *dims = malloc(sizeof(int) * (size_t)(total ? total : 1));
    if (!*offs || !*dims) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    int k = 0;
    p = 0;
    for (const cJSON *e = j->child; e; e = e->next, p++) {
        (*offs)[p] = k;
        int n = cJSON_GetArraySize(e);
        if (n == 2 && cJSON_IsNumber(e->child) && cJSON_IsNumber(e->child->next)) {
            for (int d = (int)e->child->valuedouble; d < (int)e->child->next->valuedouble; d++) (*dims)[k++] = d;
        } else {
            for (const cJSON *v = e->child; v; v = v->next) {
                int d = 0;
                char what[64];
                snprintf(what, sizeof what, "subspace_partition[%d][]", p);
                CVENE_TRY(json_int(ctx, v, what, idx, 0, &d));
                if (d >= IV_MAX_DIM)
                    return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                      "representations[%d].subspace_partition[%d] has dimension %d, outside [0, %d)",
                                      idx, p, d, IV_MAX_DIM);
                (*dims)[k++] = d;
            }
        }
    }
    (*offs)[p] = k;
    r->n_partitions = np;
    r->partition_offsets = *offs;
    r->partition_dims = *dims;
    return CVENE_OK;
}

/* Positional order of pyvene's RepresentationConfig namedtuple. */
enum { F_LAYER, F_COMPONENT, F_UNIT, F_MAX_UNITS, F_LOW_RANK, F_TYPE, F_INTERVENTION, F_PARTITION,
       F_GROUP, F_LINK, F_MOE, F_SOURCE, F_HIDDEN_SOURCE, F_LATENT, F_N };
static const char *const field_names[F_N] = {
    "layer", "component", "unit", "max_number_of_units", "low_rank_dimension", "intervention_type",
    "intervention", "subspace_partition", "group_key", "intervention_link_key", "moe_key",
    "source_representation", "hidden_source_representation", "latent_dim"};

static cvene_status parse_rep(cvene_ctx *ctx, const cJSON *j, int idx, const cJSON *types, const cJSON *idims,
                              cvene_config *c) {
    const cJSON *f[F_N] = {0};
    const cJSON *callback = NULL, *noise_level = NULL, *noise_seed = NULL, *ichange = NULL;
    if (cJSON_IsArray(j)) {
        int k = 0;
        for (const cJSON *e = j->child; e && k < F_N; e = e->next, k++) f[k] = e;
        if (cJSON_GetArraySize(j) > F_N)
            return cvene_fail(ctx, CVENE_ERR_FORMAT,
                              "representations[%d] has %d positional fields; pyvene's RepresentationConfig has %d "
                              "(layer, component, unit, max_number_of_units, low_rank_dimension, intervention_type, "
                              "intervention, subspace_partition, group_key, intervention_link_key, moe_key, "
                              "source_representation, hidden_source_representation, latent_dim)",
                              idx, cJSON_GetArraySize(j), F_N);
    } else if (cJSON_IsObject(j)) {
        for (const cJSON *e = j->child; e; e = e->next) {
            int known = !strcmp(e->string, "callback") || !strcmp(e->string, "noise_level") ||
                        !strcmp(e->string, "noise_seed") || !strcmp(e->string, "interchange_dim");
            for (int k = 0; k < F_N && !known; k++) known = !strcmp(e->string, field_names[k]);
            if (!known)
                return cvene_fail(ctx, CVENE_ERR_FORMAT,
                                  "representations[%d]: unknown key \"%.80s\" (accepted: layer, component, unit, "
                                  "max_number_of_units, low_rank_dimension, intervention_type, intervention, "
                                  "subspace_partition, group_key, intervention_link_key, moe_key, "
                                  "source_representation, hidden_source_representation, latent_dim, callback, "
                                  "noise_level, noise_seed, interchange_dim)", idx, e->string);
        }
        for (int k = 0; k < F_N; k++) f[k] = cJSON_GetObjectItemCaseSensitive(j, field_names[k]);
        callback = cJSON_GetObjectItemCaseSensitive(j, "callback");
        noise_level = cJSON_GetObjectItemCaseSensitive(j, "noise_level");
        noise_seed = cJSON_GetObjectItemCaseSensitive(j, "noise_seed");
        ichange = cJSON_GetObjectItemCaseSensitive(j, "interchange_dim");
    } else {
        return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d] must be an object or a list", idx);
    }
    cvene_representation r = cvene_representation_default();
    if (f[F_LAYER] && !cJSON_IsNull(f[F_LAYER])) CVENE_TRY(json_int(ctx, f[F_LAYER], "layer", idx, 0, &r.layer));
    if (f[F_COMPONENT] && !cJSON_IsNull(f[F_COMPONENT])) {
        if (!cJSON_IsString(f[F_COMPONENT]))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].component must be a string", idx);
        r.component = cvene_component_from_name(f[F_COMPONENT]->valuestring);
        if (r.component == CVENE_N_COMPONENTS)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].component \"%s\" is unknown (GPT-2 components: block_input, "
                              "block_output, attention_input, attention_output, attention_value_output, "
                              "head_attention_value_output, attention_weight, query_output, key_output, "
                              "value_output, head_query_output, head_key_output, head_value_output, "
                              "mlp_input, mlp_activation, mlp_output; GRU components: cell_input, "
                              "cell_output, {reset,update,new}_gate_{input,output}, x2h_output, h2h_output, "
                              "{reset,update,new}_{x2h,h2h}_output)",
                              idx, f[F_COMPONENT]->valuestring);
    }
    if (f[F_UNIT] && !cJSON_IsNull(f[F_UNIT])) {
        if (!cJSON_IsString(f[F_UNIT]))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].unit must be a string", idx);
        int u = 0;
        while (u < CVENE_N_UNITS && strcmp(unit_names[u], f[F_UNIT]->valuestring) != 0) u++;
        if (u == CVENE_N_UNITS)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d].unit \"%s\" is unknown (pos, h, h.pos, t)", idx, f[F_UNIT]->valuestring);
        r.unit = (cvene_unit)u;
    }
    if (f[F_MAX_UNITS] && !cJSON_IsNull(f[F_MAX_UNITS]))
        CVENE_TRY(json_int(ctx, f[F_MAX_UNITS], "max_number_of_units", idx, 1, &r.max_number_of_units));
    if (f[F_LOW_RANK] && !cJSON_IsNull(f[F_LOW_RANK]))
        CVENE_TRY(json_int(ctx, f[F_LOW_RANK], "low_rank_dimension", idx, 0, &r.low_rank_dimension));
    /* type: the representation's own field, else intervention_types (list or one) */
    const cJSON *t = f[F_TYPE] && !cJSON_IsNull(f[F_TYPE]) ? f[F_TYPE] : NULL;
    if (!t && types) t = cJSON_IsArray(types) ? cJSON_GetArrayItem(types, idx) : types;
    if (t) {
        if (!cJSON_IsString(t) || !iv_type_parse(t->valuestring, &r.type))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "representations[%d]: intervention type %s%s%s is not supported (%s)",
                              idx, cJSON_IsString(t) ? "\"" : "", cJSON_IsString(t) ? t->valuestring : "(not a string)",
                              cJSON_IsString(t) ? "\"" : "", iv_type_names());
    }
    if (f[F_GROUP] && !cJSON_IsNull(f[F_GROUP])) CVENE_TRY(json_int(ctx, f[F_GROUP], "group_key", idx, 0, &r.group_key));
    if (f[F_LINK] && !cJSON_IsNull(f[F_LINK])) CVENE_TRY(json_int(ctx, f[F_LINK], "intervention_link_key", idx, 0, &r.link_key));
    if (noise_level && !cJSON_IsNull(noise_level)) {
        if (!cJSON_IsNumber(noise_level))
            return cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].noise_level must be a number", idx);
        r.noise_level = noise_level->valuedouble;
    }
    if (ichange && !cJSON_IsNull(ichange)) CVENE_TRY(json_int(ctx, ichange, "interchange_dim", idx, 1, &r.interchange_dim));
    const cJSON *dim = cJSON_IsArray(idims) ? cJSON_GetArrayItem(idims, idx) : NULL;
    if (!ichange && r.type == CVENE_IV_ROTATED_SPACE && dim && cJSON_IsNumber(dim))
        CVENE_TRY(json_int(ctx, dim, "intervention_dimensions[]", idx, 1, &r.interchange_dim));
    if (noise_seed && !cJSON_IsNull(noise_seed)) {
        int s = 0;
        CVENE_TRY(json_int(ctx, noise_seed, "noise_seed", idx, 0, &s));
        r.noise_seed = (uint32_t)s;
    }
    const cJSON *src = f[F_SOURCE];
    float *source = NULL;
    int *offs = NULL, *dims = NULL;
    cvene_status st = CVENE_OK;
    if (src && !cJSON_IsNull(src)) {
        int n = cJSON_IsArray(src) ? cJSON_GetArraySize(src) : 0;
        if (n <= 0) st = cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].source_representation must be a list of numbers", idx);
        else if (!(source = malloc(sizeof(float) * (size_t)n))) st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        int k = 0;
        for (const cJSON *v = st == CVENE_OK ? src->child : NULL; v; v = v->next, k++) {
            if (!cJSON_IsNumber(v)) {
                st = cvene_fail(ctx, CVENE_ERR_FORMAT, "representations[%d].source_representation[%d] is not a number", idx, k);
                break;
            }
            source[k] = (float)v->valuedouble;
        }
        r.source = source;
        r.source_len = n;
    } else if (f[F_HIDDEN_SOURCE] && cJSON_IsTrue(f[F_HIDDEN_SOURCE])) {
        st = cvene_fail(ctx, CVENE_ERR_UNSUPPORTED,
                        "representations[%d]: pyvene saved its constant source to a .bin file (torch pickle), "
                        "which cvene does not read; give it inline as \"source_representation\": [..]", idx);
    }
    if (st == CVENE_OK) st = parse_partition(ctx, f[F_PARTITION], idx, &r, &offs, &dims);
    if (st == CVENE_OK && r.type == CVENE_IV_CALLBACK && !(callback && cJSON_IsString(callback)))
        st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                        "representations[%d]: a LambdaIntervention needs \"callback\": \"NAME\" (bound with "
                        "cvene_config_bind_callback)", idx);
    if (st == CVENE_OK) st = cvene_config_add(c, &r);
    if (st == CVENE_OK && callback && cJSON_IsString(callback) &&
        !(c->reps[c->n - 1].callback_name = strdup(callback->valuestring)))
        st = cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    free(source);
    free(offs);
    free(dims);
    return st;
}

/* Top-level keys of an IntervenableConfig file: what cvene reads, and what pyvene's save (a
 * transformers PretrainedConfig) writes beside it, which cvene ignores. Anything else is most
 * likely a misspelling and is refused rather than silently ignored. */
static int config_key_known(const char *k) {
    static const char *const keys[] = {"representations", "mode", "intervention_types", "sorted_keys",
                                       "intervention_dimensions", "intervention_constant_sources", "model_type",
                                       "transformers_version"};
    if (k[0] == '_') return 1; /* transformers' private keys (_name_or_path, _commit_hash) */
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!strcmp(k, keys[i])) return 1;
    return 0;
}

cvene_status cvene_config_parse(cvene_ctx *ctx, const char *json, cvene_config **out) {
    *out = NULL;
    if (!json) return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "config JSON is NULL");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return cvene_fail(ctx, CVENE_ERR_FORMAT, "config: malformed JSON near byte %ld", end ? (long)(end - json) : -1L);
    cvene_status st = CVENE_OK;
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(root, "mode");
    const cJSON *reps = cJSON_GetObjectItemCaseSensitive(root, "representations");
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(root, "intervention_types");
    /* pyvene's save writes each intervention's interchange_dim here (RotatedSpace's swapped dims) */
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(root, "intervention_dimensions");
    cvene_mode m = CVENE_MODE_PARALLEL;
    if (!cJSON_IsObject(root)) st = cvene_fail(ctx, CVENE_ERR_FORMAT, "config: expected a JSON object");
    for (const cJSON *e = st == CVENE_OK ? root->child : NULL; e && st == CVENE_OK; e = e->next)
        if (!config_key_known(e->string))
            st = cvene_fail(ctx, CVENE_ERR_FORMAT,
                            "config: unknown key \"%.80s\" (accepted: representations, mode, intervention_types, and "
                            "what IntervenableModel.save adds: sorted_keys, intervention_dimensions, "
                            "intervention_constant_sources, model_type, transformers_version, and keys starting "
                            "with '_')", e->string);
    else if (mode && !cJSON_IsNull(mode)) {
        if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "parallel")) m = CVENE_MODE_PARALLEL;
        else if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "serial")) m = CVENE_MODE_SERIAL;
        else st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "config: mode must be \"parallel\" or \"serial\"%s%s%s",
                             cJSON_IsString(mode) ? ", got \"" : "", cJSON_IsString(mode) ? mode->valuestring : "",
                             cJSON_IsString(mode) ? "\"" : "");
    }
    if (st == CVENE_OK && !cJSON_IsArray(reps) && !cJSON_IsObject(reps))
        st = cvene_fail(ctx, CVENE_ERR_FORMAT, "config: \"representations\" must be a list");
    if (st == CVENE_OK && types && !cJSON_IsNull(types) && !cJSON_IsArray(types) && !cJSON_IsString(types))
        st = cvene_fail(ctx, CVENE_ERR_FORMAT, "config: \"intervention_types\" must be a string or a list");
    cvene_config *c = NULL;
    if (st == CVENE_OK) st = cvene_config_new(ctx, m, &c);
    if (st == CVENE_OK) {
        if (cJSON_IsObject(reps)) {
            st = parse_rep(ctx, reps, 0, types, dims, c);
        } else {
            int i = 0;
            for (const cJSON *e = reps->child; e && st == CVENE_OK; e = e->next, i++)
                st = parse_rep(ctx, e, i, types, dims, c);
        }
    }
    if (st == CVENE_OK && c->n == 0) st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "config: no representations");
    cJSON_Delete(root);
    if (st != CVENE_OK) {
        cvene_config_free(c);
        return st;
    }
    *out = c;
    return CVENE_OK;
}

cvene_status cvene_config_to_json(const cvene_config *c, char **json) {
    *json = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *reps = cJSON_AddArrayToObject(root, "representations");
    cJSON_AddStringToObject(root, "mode", c->mode == CVENE_MODE_SERIAL ? "serial" : "parallel");
    for (int i = 0; reps && i < c->n; i++) {
        const iv_rep *d = &c->reps[i];
        const cvene_representation *r = &d->r;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(reps, o);
        cJSON_AddNumberToObject(o, "layer", r->layer);
        cJSON_AddStringToObject(o, "component", cvene_component_name(r->component));
        cJSON_AddStringToObject(o, "unit", cvene_unit_name(r->unit));
        cJSON_AddNumberToObject(o, "max_number_of_units", r->max_number_of_units);
        if (r->low_rank_dimension) cJSON_AddNumberToObject(o, "low_rank_dimension", r->low_rank_dimension);
        else cJSON_AddNullToObject(o, "low_rank_dimension");
        cJSON_AddStringToObject(o, "intervention_type", cvene_intervention_type_name(r->type));
        if (r->n_partitions) {
            cJSON *parts = cJSON_AddArrayToObject(o, "subspace_partition");
            for (int p = 0; p < r->n_partitions; p++) {
                const int *pd = r->partition_dims + r->partition_offsets[p];
                int nd = r->partition_offsets[p + 1] - r->partition_offsets[p];
                /* a 2-element entry reads back as range(a, b) (pyvene's rule): write two
                 * consecutive dims as that range; two others have no pyvene form */
                if (nd == 2 && pd[1] != pd[0] + 1) {
                    cJSON_Delete(root);
                    return cvene_fail(c->ctx, CVENE_ERR_UNSUPPORTED,
                                      "representations[%d].subspace_partition[%d] = [%d, %d] cannot be written as "
                                      "JSON: a 2-element entry means range(a, b) in pyvene's format", i, p, pd[0],
                                      pd[1]);
                }
                int range[2] = {pd[0], pd[0] + 2};
                cJSON_AddItemToArray(parts, cJSON_CreateIntArray(nd == 2 ? range : pd, nd));
            }
        } else {
            cJSON_AddNullToObject(o, "subspace_partition");
        }
        if (r->group_key >= 0) cJSON_AddNumberToObject(o, "group_key", r->group_key);
        else cJSON_AddNullToObject(o, "group_key");
        if (r->link_key >= 0) cJSON_AddNumberToObject(o, "intervention_link_key", r->link_key);
        else cJSON_AddNullToObject(o, "intervention_link_key");
        if (r->source) cJSON_AddItemToObject(o, "source_representation", cJSON_CreateFloatArray(r->source, (int)r->source_len));
        if (d->callback_name) cJSON_AddStringToObject(o, "callback", d->callback_name);
        if (r->interchange_dim) cJSON_AddNumberToObject(o, "interchange_dim", r->interchange_dim);
        if (r->type == CVENE_IV_NOISE) {
            cJSON_AddNumberToObject(o, "noise_level", r->noise_level);
            cJSON_AddNumberToObject(o, "noise_seed", r->noise_seed);
        }
    }
    *json = cJSON_Print(root);
    cJSON_Delete(root);
    return *json ? CVENE_OK : cvene_fail(c->ctx, CVENE_ERR_OOM, "out of memory writing config JSON");
}
