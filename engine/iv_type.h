/* The intervention types, one entry each: what a type is called in pyvene, what it reads
 * and how the runner computes it. Everything that differs between types is here (the
 * runner asks the table, it does not switch on the type); the trainable types add their
 * parameters, forward, backward and (de)serialisation to their entry (issue #13). */
#ifndef CVENE_IV_TYPE_H
#define CVENE_IV_TYPE_H

#include "cvene.h"

enum {
    IV_TAKES_SOURCE = 1u << 0,  /* gathers a source at its site when the request gives one */
    IV_NEEDS_SOURCE = 1u << 1,  /* acts only with a source (a run or a constant source): pyvene's None
                                 * source leaves it out */
    IV_FUSED = 1u << 2,         /* one iv_units op computes it (ivop) on every backend */
    IV_CONST_SOURCE = 1u << 3,  /* accepts source_representation (a constant source) */
    IV_TRAINABLE = 1u << 4,     /* has parameters (engine/trainable.h; PCARotatedSpace's are frozen) */
};

typedef struct iv_type {
    cvene_intervention_type id;
    const char *name; /* pyvene's class name */
    unsigned flags;
    int ivop;         /* the cvene_iv_op of an IV_FUSED type (and Noise's addition on a device) */
    const char *module; /* the class's Python module when not pyvene.models.interventions */
} iv_type;

/* The entry of t (t must be valid: configs check it). */
const iv_type *iv_type_get(cvene_intervention_type t);
/* The module of t's class ("pyvene.models.interventions", "pyreft.interventions"). */
const char *iv_type_module(cvene_intervention_type t);
/* "VanillaIntervention", "pyvene.VanillaIntervention" or pyvene's saved
 * "<class 'pyvene.models.interventions.VanillaIntervention'>": 1 and *out, or 0. */
int iv_type_parse(const char *s, cvene_intervention_type *out);
/* A representation's type flags. */
static inline int iv_needs_source(const cvene_representation *r) {
    return (iv_type_get(r->type)->flags & IV_NEEDS_SOURCE) != 0;
}
static inline int iv_takes_source(const cvene_representation *r) {
    return (iv_type_get(r->type)->flags & IV_TAKES_SOURCE) != 0;
}
/* The types one iv_units op computes. */
static inline int iv_fusable_kind(const cvene_representation *r) { return (iv_type_get(r->type)->flags & IV_FUSED) != 0; }
/* Types the fused path covers on every backend (outside link-key chains); the rest run on
 * the host path on the CPU, and on a device as iv_fused_on (engine/index.c) says. */
static inline int iv_fused_type(const cvene_representation *r) { return r->link_key < 0 && iv_fusable_kind(r); }

/* The names of every type, ", "-separated, for messages. */
const char *iv_type_names(void);

#endif
