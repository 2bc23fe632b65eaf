/* unit_locations and subspaces in pyvene's forms -> canonical per-intervention
 * arrays. The forms (docs/pyvene_semantics.md §2, §4):
 *   {"sources->base": [SRC, BASE]}   SRC[i][b][u], BASE[i][b][u]; null = None
 *   {"sources->base": 3}             same position everywhere
 *   {"sources->base": [s, b]}        a pair of ints: source s, base b (pyvene's rule)
 *   {"sources->base": [p0, p1, p2]}  a flat list (length != 2): those positions
 *   {"sources->base": [null, b]}     one side None
 *   {"base": ...}                    base side only (sources None), same shorthands
 *   serial: {"source_0->source_1": .., "source_1->base": ..}
 * For unit h.pos an intervention's entry is [HEADS (B x Uh), POSITIONS (B x Up)]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/intervene.h"

/* range-checked first: converting an out-of-range double to int is undefined */
static int is_int(const cJSON *j) {
    return cJSON_IsNumber(j) && j->valuedouble >= -2147483648.0 && j->valuedouble <= 2147483647.0 &&
           (double)(int)j->valuedouble == j->valuedouble;
}

static int is_flat_ints(const cJSON *j) {
    if (!cJSON_IsArray(j) || !j->child) return 0;
    for (const cJSON *e = j->child; e; e = e->next)
        if (!is_int(e)) return 0;
    return 1;
}

/* A side given for every intervention as the same flat list of units. */
typedef struct {
    enum { SIDE_NONE, SIDE_BROADCAST, SIDE_VERBATIM } kind;
    const cJSON *units;  /* BROADCAST: an int or a flat list */
    const cJSON *list;   /* VERBATIM: per-intervention list */
} side_spec;

static void split_value(const cJSON *v, int base_only, side_spec *src, side_spec *base) {
    src->kind = base->kind = SIDE_NONE;
    src->units = base->units = src->list = base->list = NULL;
    if (is_int(v)) {
        base->kind = SIDE_BROADCAST, base->units = v;
        if (!base_only) src->kind = SIDE_BROADCAST, src->units = v;
        return;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
        const cJSON *a = v->child, *b = v->child->next;
        int a_sc = is_int(a) || cJSON_IsNull(a), b_sc = is_int(b) || cJSON_IsNull(b);
        if (a_sc && b_sc) { /* pyvene reads any 2-element scalar list as (source, base) */
            if (is_int(a)) src->kind = SIDE_BROADCAST, src->units = a;
            if (is_int(b)) base->kind = SIDE_BROADCAST, base->units = b;
            return;
        }
    }
    if (is_flat_ints(v)) {
        base->kind = SIDE_BROADCAST, base->units = v;
        if (!base_only) src->kind = SIDE_BROADCAST, src->units = v;
        return;
    }
    if (base_only) {
        if (!cJSON_IsNull(v)) base->kind = SIDE_VERBATIM, base->list = v;
        return;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
        if (!cJSON_IsNull(v->child)) src->kind = SIDE_VERBATIM, src->list = v->child;
        if (!cJSON_IsNull(v->child->next)) base->kind = SIDE_VERBATIM, base->list = v->child->next;
    } else {
        src->kind = SIDE_VERBATIM, src->list = v; /* reported as malformed below */
        base->kind = SIDE_VERBATIM, base->list = NULL;
    }
}

/* Read a (B, U) table of ints into *out; all rows the same length. A table of one example
 * where B > 1 is accepted when one_ok (a source side: pyvene gathers that one example and
 * broadcasts it) and copied to every example, setting *one. */
static cvene_status read_table(cvene_ctx *ctx, const cJSON *t, int B, const char *what, int i, int **out,
                               int *U, int one_ok, int *one) {
    const int rows = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : 0;
    const int single = one_ok && B > 1 && rows == 1;
    if (!cJSON_IsArray(t) || (rows != B && !single))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "unit_locations: %s of intervention %d must list %d example%s (the batch size)%s, got %s%d",
                          what, i, B, B == 1 ? "" : "s", one_ok ? ", or 1 to use one source example for all" : "",
                          cJSON_IsArray(t) ? "" : "a non-list ", rows);
    int u = -1, b = 0;
    for (const cJSON *row = t->child; row; row = row->next, b++) {
        if (!is_flat_ints(row))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: %s of intervention %d, example %d must be a non-empty list of integers",
                              what, i, b);
        int n = cJSON_GetArraySize(row);
        if (u >= 0 && n != u)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: %s of intervention %d has %d units in example %d but %d in example 0; "
                              "every example needs the same number", what, i, n, b, u);
        u = n;
    }
    int *a = malloc(sizeof(int) * (size_t)B * (size_t)u);
    if (!a) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    b = 0;
    for (const cJSON *row = t->child; row; row = row->next, b++) {
        int k = 0;
        for (const cJSON *e = row->child; e; e = e->next, k++) {
            if (e->valuedouble < 0) {
                free(a);
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "unit_locations: %s of intervention %d, example %d, unit %d = %d is negative", what, i,
                                  b, k, (int)e->valuedouble);
            }
            a[b * u + k] = (int)e->valuedouble;
        }
    }
    for (b = rows; single && b < B; b++) memcpy(a + (size_t)b * u, a, sizeof(int) * (size_t)u);
    if (one) *one = single;
    *out = a;
    *U = u;
    return CVENE_OK;
}

/* src_side: the source side in parallel mode, which may list one example for all (read_table) */
static cvene_status fill_side(cvene_ctx *ctx, const cvene_config *c, const side_spec *s, int i,
                              int entry, int B, const char *what, int src_side, iv_locs *l) {
    memset(l, 0, sizeof *l);
    const cvene_representation *r = &c->reps[i].r;
    if (s->kind == SIDE_NONE) return CVENE_OK;
    if (s->kind == SIDE_BROADCAST) {
        if (r->unit == CVENE_UNIT_H_POS)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: intervention %d uses unit h.pos, which needs the explicit form "
                              "[HEADS (B x Uh), POSITIONS (B x Up)]; shorthands do not apply", i);
        int u = is_int(s->units) ? 1 : cJSON_GetArraySize(s->units);
        l->idx = malloc(sizeof(int) * (size_t)B * (size_t)u);
        if (!l->idx) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
        for (int b = 0; b < B; b++) {
            int k = 0;
            if (is_int(s->units)) l->idx[b] = (int)s->units->valuedouble;
            else
                for (const cJSON *e = s->units->child; e; e = e->next, k++) l->idx[b * u + k] = (int)e->valuedouble;
        }
        for (int k = 0; k < B * u; k++)
            if (l->idx[k] < 0) {
                int v = l->idx[k];
                free(l->idx);
                l->idx = NULL;
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "unit_locations: %s location %d is negative", what, v);
            }
        l->U = u;
        l->present = 1;
        return CVENE_OK;
    }
    const cJSON *list = s->list;
    if (!cJSON_IsArray(list))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "unit_locations: expected [SOURCE_LOCATIONS, BASE_LOCATIONS] with one entry per "
                          "intervention, or a shorthand (an int, [source, base], a flat list)");
    const cJSON *e = cJSON_GetArrayItem(list, entry);
    if (cJSON_GetArraySize(list) <= entry)
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "unit_locations: the %s list has %d entries but intervention %d needs entry %d", what,
                          cJSON_GetArraySize(list), i, entry);
    if (cJSON_IsNull(e)) return CVENE_OK;
    if (r->unit == CVENE_UNIT_H_POS) {
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: %s of intervention %d (unit h.pos) must be [HEADS, POSITIONS]", what, i);
        char w[64];
        snprintf(w, sizeof w, "%s heads", what);
        int one_h = 0, one_p = 0;
        CVENE_TRY(read_table(ctx, e->child, B, w, i, &l->idx, &l->U, src_side, &one_h));
        snprintf(w, sizeof w, "%s positions", what);
        cvene_status st = read_table(ctx, e->child->next, B, w, i, &l->pos, &l->U2, src_side, &one_p);
        if (st == CVENE_OK && one_h != one_p)
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                            "unit_locations: %s of intervention %d (unit h.pos) lists %d example(s) of heads but %d of "
                            "positions", what, i, one_h ? 1 : B, one_p ? 1 : B);
        l->bcast = one_h;
        if (st != CVENE_OK) {
            free(l->idx);
            l->idx = NULL;
            return st;
        }
    } else {
        CVENE_TRY(read_table(ctx, e, B, what, i, &l->idx, &l->U, src_side, &l->bcast));
    }
    l->present = 1;
    return CVENE_OK;
}

/* Leaves the entries empty: a failed resolve frees what it built and the
 * caller's cleanup may free the same array again. */
void iv_locs_free(iv_locs *l, int n) {
    for (int i = 0; l && i < n; i++) {
        free(l[i].idx);
        free(l[i].pos);
        l[i].idx = l[i].pos = NULL;
    }
}

cvene_status iv_resolve_locations(cvene_ctx *ctx, const cvene_config *c, const cJSON *json, int B,
                                  iv_locs *locs) {
    memset(locs, 0, sizeof(iv_locs) * 2 * (size_t)c->n);
    if (!json || cJSON_IsNull(json)) return CVENE_OK; /* pyvene's None: whole streams */
    if (!cJSON_IsObject(json))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "unit_locations must be an object such as {\"sources->base\": ...}");
    cvene_status st = CVENE_OK;
    if (c->mode == CVENE_MODE_PARALLEL) {
        const cJSON *sb = cJSON_GetObjectItemCaseSensitive(json, "sources->base");
        const cJSON *bo = cJSON_GetObjectItemCaseSensitive(json, "base");
        if (!sb && !bo)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: parallel mode needs a \"sources->base\" or \"base\" entry");
        side_spec src, base;
        split_value(sb ? sb : bo, !sb, &src, &base);
        for (int i = 0; i < c->n && st == CVENE_OK; i++) {
            st = fill_side(ctx, c, &src, i, i, B, "sources", 1, &locs[2 * i]);
            if (st == CVENE_OK) st = fill_side(ctx, c, &base, i, i, B, "base", 0, &locs[2 * i + 1]);
        }
    } else {
        if (cJSON_GetObjectItemCaseSensitive(json, "sources->base"))
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "unit_locations: serial mode takes \"source_0->source_1\", ..., \"source_N->base\" "
                              "entries, not \"sources->base\"");
        for (int i = 0; i < c->n && st == CVENE_OK; i++) {
            int g = iv_group(c, i);
            char key[64];
            if (g < c->n_groups - 1) snprintf(key, sizeof key, "source_%d->source_%d", g, g + 1);
            else snprintf(key, sizeof key, "source_%d->base", g);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, key);
            if (!v) continue; /* checked against the sources in the run */
            side_spec src, base;
            split_value(v, 0, &src, &base);
            st = fill_side(ctx, c, &src, i, 0, B, key, 0, &locs[2 * i]);
            if (st == CVENE_OK) st = fill_side(ctx, c, &base, i, 0, B, key, 0, &locs[2 * i + 1]);
        }
    }
    if (st != CVENE_OK) iv_locs_free(locs, 2 * c->n);
    return st;
}

void iv_dims_free(iv_dims *d, int n) {
    for (int i = 0; d && i < n; i++) {
        free(d[i].dims);
        d[i].dims = NULL;
    }
}

/* Expand one example's subspace list (raw dims, or ids into the partition). */
static cvene_status expand_dims(cvene_ctx *ctx, const iv_rep *rep, const cJSON *row, int i, int b,
                                iv_dims *out) {
    const cvene_representation *r = &rep->r;
    if (!is_flat_ints(row))
        return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                          "subspaces: intervention %d, example %d must be a non-empty list of integers", i, b);
    int64_t n = 0;
    for (const cJSON *e = row->child; e; e = e->next) {
        int v = (int)e->valuedouble;
        if (v < 0)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "subspaces: intervention %d, example %d: index %d is negative",
                              i, b, v);
        if (r->n_partitions) {
            if (v >= r->n_partitions)
                return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                                  "subspaces: intervention %d, example %d: partition id %d is outside its "
                                  "subspace_partition (%d parts)", i, b, v, r->n_partitions);
            n += r->partition_offsets[v + 1] - r->partition_offsets[v];
        } else {
            n++;
        }
        if (n > IV_MAX_PARTITION_DIMS)
            return cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                              "subspaces: intervention %d, example %d selects more than %d dimensions", i, b,
                              IV_MAX_PARTITION_DIMS);
    }
    out->dims = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!out->dims) return cvene_fail(ctx, CVENE_ERR_OOM, "out of memory");
    out->n = 0;
    for (const cJSON *e = row->child; e; e = e->next) {
        int v = (int)e->valuedouble;
        if (r->n_partitions)
            for (int k = r->partition_offsets[v]; k < r->partition_offsets[v + 1]; k++)
                out->dims[out->n++] = r->partition_dims[k];
        else
            out->dims[out->n++] = v;
    }
    return CVENE_OK;
}

cvene_status iv_resolve_subspaces(cvene_ctx *ctx, const cvene_config *c, const cJSON *json, int B,
                                  iv_dims *out) {
    for (int k = 0; k < c->n * B; k++) out[k] = (iv_dims){NULL, -1};
    if (!json || cJSON_IsNull(json)) return CVENE_OK;
    cvene_status st = CVENE_OK;
    int broadcast = is_int(json) || is_flat_ints(json);
    cJSON *wrapped = NULL;
    if (is_int(json)) { /* s -> [[[s]] * B] * n */
        wrapped = cJSON_CreateArray();
        cJSON_AddItemToArray(wrapped, cJSON_CreateNumber(json->valuedouble));
    }
    const cJSON *row_all = wrapped ? wrapped : json;
    if (!broadcast && !cJSON_IsArray(json))
        st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG, "subspaces must be an int, a list of ints, or one entry per intervention");
    for (int i = 0; i < c->n && st == CVENE_OK; i++) {
        const cJSON *per = broadcast ? NULL : cJSON_GetArrayItem(json, i);
        if (!broadcast && (!per || cJSON_IsNull(per))) continue;
        if (!broadcast && (!cJSON_IsArray(per) || cJSON_GetArraySize(per) != B)) {
            st = cvene_fail(ctx, CVENE_ERR_INVALID_ARG,
                            "subspaces: intervention %d must list %d example%s (the batch size)", i, B, B == 1 ? "" : "s");
            break;
        }
        int b = 0;
        for (const cJSON *row = broadcast ? NULL : per->child; b < B && st == CVENE_OK; b++) {
            const cJSON *r = broadcast ? row_all : row;
            if (!cJSON_IsNull(r)) st = expand_dims(ctx, &c->reps[i], r, i, b, &out[i * B + b]);
            if (row) row = row->next;
        }
    }
    cJSON_Delete(wrapped);
    if (st != CVENE_OK) iv_dims_free(out, c->n * B);
    return st;
}
