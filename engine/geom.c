/* Stream geometry: where a unit of an intervention sits in the tensor of its site
 * (engine/run_internal.h). */
#include <string.h>

#include "engine/run_internal.h"

/* forward order of sites, for stopping early: layer by layer in a transformer (step 0);
 * a GRU runs every layer inside each timestep, so there the step comes first */
int64_t iv_site_order(cvene_component c, int layer, int step) {
    return ((int64_t)step * 64 + layer) * CVENE_N_COMPONENTS + (int)c;
}

int iv_is_head(cvene_component c) {
    return c == CVENE_HEAD_QUERY_OUTPUT || c == CVENE_HEAD_KEY_OUTPUT || c == CVENE_HEAD_VALUE_OUTPUT ||
           c == CVENE_HEAD_ATTENTION_VALUE_OUTPUT;
}

/* The site whose tensor holds a component. */
cvene_component iv_physical(cvene_component c) {
    switch (c) {
    case CVENE_HEAD_QUERY_OUTPUT: return CVENE_QUERY_OUTPUT;
    case CVENE_HEAD_KEY_OUTPUT: return CVENE_KEY_OUTPUT;
    case CVENE_HEAD_VALUE_OUTPUT: return CVENE_VALUE_OUTPUT;
    case CVENE_HEAD_ATTENTION_VALUE_OUTPUT: return CVENE_ATTENTION_VALUE_OUTPUT;
    /* a GRU gate's third of x2h / h2h is served on the whole (B, 3h) output, so every
     * intervention on that module's output acts in config order, as pyvene's hooks */
    case CVENE_RESET_X2H_OUTPUT: case CVENE_UPDATE_X2H_OUTPUT: case CVENE_NEW_X2H_OUTPUT: return CVENE_X2H_OUTPUT;
    case CVENE_RESET_H2H_OUTPUT: case CVENE_UPDATE_H2H_OUTPUT: case CVENE_NEW_H2H_OUTPUT: return CVENE_H2H_OUTPUT;
    default: return c;
    }
}

geom iv_stream_geom(const cvene_model_info *mi, cvene_component comp, cvene_unit unit, int T,
                        int present) {
    geom g;
    memset(&g, 0, sizeof g);
    int C = mi->n_embd, H = mi->n_head, hd = C / H;
    g.T = T, g.C = C, g.hd = hd;
    if (unit == CVENE_UNIT_T) {
        /* a GRU site call is one timestep: (B, W) rows, W = 3h on x2h/h2h (whose thirds are
         * served there), h otherwise; a unit is one timestep's D floats (present or not) */
        int W = iv_physical(comp) == CVENE_X2H_OUTPUT || iv_physical(comp) == CVENE_H2H_OUTPUT ? 3 * C : C;
        g.E = W, g.A = T, g.R = 1;
        g.D = g.S = comp == CVENE_X2H_OUTPUT || comp == CVENE_H2H_OUTPUT ? 3 * C : C;
        return g;
    }
    if (comp == CVENE_ATTENTION_WEIGHT) {
        g.E = (int64_t)H * T * T, g.A = H, g.R = T, g.D = T;
    } else if (iv_is_head(comp)) {
        g.E = (int64_t)T * C, g.A = H, g.D = hd, g.R = unit == CVENE_UNIT_H ? T : 1, g.S = C;
    } else {
        g.D = comp == CVENE_MLP_ACTIVATION ? mi->n_inner : C;
        g.E = (int64_t)T * g.D, g.A = T, g.R = 1;
    }
    if (!present) { /* the whole example as one unit */
        g.D = iv_is_head(comp) ? C : g.D;
        g.R = (int)(g.E / g.D);
        g.S = g.D;
    }
    if (!g.S) g.S = g.D;
    return g;
}

int iv_n_units(const iv_locs *l) {
    return !l->present ? 1 : (l->pos ? l->U * l->U2 : l->U);
}

/* Units an intervention side selects in a run of length T: for unit t, no locations
 * (pyvene's None) means every timestep. */
int iv_units_of(const cvene_representation *r, const iv_locs *l, int T) {
    return r->unit == CVENE_UNIT_T && !l->present ? T : iv_n_units(l);
}

/* Unit t: the slot of timestep `step` for example b (its rank among the example's listed
 * timesteps, which check_locs made distinct), or -1 when the step is not listed. */
int iv_step_slot(const iv_locs *l, int b, int step) {
    if (!l->present) return step;
    int rank = 0, found = 0;
    for (int u = 0; u < l->U; u++) {
        int v = l->idx[b * l->U + u];
        if (v == step) found = 1;
        else if (v < step) rank++;
    }
    return found ? rank : -1;
}

/* Unit t: where a component's D floats start in a (B, W) row of its site. */
int64_t iv_gru_offset(cvene_component comp, const geom *g) {
    switch (comp) {
    case CVENE_UPDATE_X2H_OUTPUT: case CVENE_UPDATE_H2H_OUTPUT: return g->C;
    case CVENE_NEW_X2H_OUTPUT: case CVENE_NEW_H2H_OUTPUT: return 2 * (int64_t)g->C;
    default: return 0; /* reset third, or the whole row */
    }
}

/* float offset of unit u of example b inside that example */
int64_t iv_unit_offset(const iv_locs *l, const geom *g, cvene_component comp, int b, int u) {
    if (!l->present) return 0;
    if (l->pos) {
        int h = l->idx[b * l->U + u / l->U2], p = l->pos[b * l->U2 + u % l->U2];
        return (int64_t)p * g->C + (int64_t)h * g->hd;
    }
    int idx = l->idx[b * l->U + u];
    if (comp == CVENE_ATTENTION_WEIGHT) return (int64_t)idx * g->T * g->T;
    if (iv_is_head(comp)) return (int64_t)idx * g->hd;
    return (int64_t)idx * g->D;
}

/* The site Skip reads: the input of the module pyvene hooks. */
cvene_component iv_getter_component(const cvene_representation *r, const cvene_model *m) {
    if (r->type != CVENE_IV_SKIP) return r->component;
    if (r->component == CVENE_BLOCK_OUTPUT) return CVENE_BLOCK_INPUT;
    if (r->component == CVENE_MLP_OUTPUT) return CVENE_MLP_INPUT;
    /* GPT-NeoX: pyvene hooks the whole attention module, whose input is attention_input */
    if (r->component == CVENE_ATTENTION_OUTPUT && cvene_model_get_info(m).arch == CVENE_ARCH_GPT_NEOX)
        return CVENE_ATTENTION_INPUT;
    return r->component; /* pre-hooked components and GPT-2's attention_output read themselves */
}
