/* The table of intervention types (engine/iv_type.h). */
#include <string.h>

#include "engine/iv_type.h"
#include "kernels/backend.h"

static const iv_type types[CVENE_IV_N_TYPES] = {
    [CVENE_IV_VANILLA] = {CVENE_IV_VANILLA, "VanillaIntervention",
                          IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE, CVENE_IVOP_VANILLA},
    [CVENE_IV_ADDITION] = {CVENE_IV_ADDITION, "AdditionIntervention",
                           IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE, CVENE_IVOP_ADDITION},
    [CVENE_IV_SUBTRACTION] = {CVENE_IV_SUBTRACTION, "SubtractionIntervention",
                              IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE,
                              CVENE_IVOP_SUBTRACTION},
    [CVENE_IV_ZERO] = {CVENE_IV_ZERO, "ZeroIntervention", IV_FUSED, CVENE_IVOP_ZERO},
    [CVENE_IV_COLLECT] = {CVENE_IV_COLLECT, "CollectIntervention", IV_FUSED, CVENE_IVOP_COLLECT},
    /* Skip copies the source run's input of the hooked module (the runner picks that site) */
    [CVENE_IV_SKIP] = {CVENE_IV_SKIP, "SkipIntervention", IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED,
                       CVENE_IVOP_VANILLA},
    /* Noise adds its host-drawn noise: on the CPU in double (the host path), on a device as an
     * Addition of the f32 values (engine/index.c, fused_on) */
    [CVENE_IV_NOISE] = {CVENE_IV_NOISE, "NoiseIntervention", 0, CVENE_IVOP_ADDITION},
    /* a C callback (pyvene's LambdaIntervention), with the source when the request has one */
    [CVENE_IV_CALLBACK] = {CVENE_IV_CALLBACK, "LambdaIntervention", IV_TAKES_SOURCE, CVENE_IVOP_VANILLA},
    /* trainable (engine/trainable.h): parameters, forward and backward of their own */
    [CVENE_IV_ROTATED_SPACE] = {CVENE_IV_ROTATED_SPACE, "RotatedSpaceIntervention",
                                IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_LOW_RANK_ROTATED_SPACE] = {CVENE_IV_LOW_RANK_ROTATED_SPACE, "LowRankRotatedSpaceIntervention",
                                         IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_BOUNDLESS_ROTATED_SPACE] = {CVENE_IV_BOUNDLESS_ROTATED_SPACE, "BoundlessRotatedSpaceIntervention",
                                          IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_SIGMOID_MASK_ROTATED_SPACE] = {CVENE_IV_SIGMOID_MASK_ROTATED_SPACE,
                                             "SigmoidMaskRotatedSpaceIntervention",
                                             IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_SIGMOID_MASK] = {CVENE_IV_SIGMOID_MASK, "SigmoidMaskIntervention",
                               IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    /* pyreft's: its source is learned from the base (no source run) */
    [CVENE_IV_LOREFT] = {CVENE_IV_LOREFT, "LoreftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
    /* weights of their own (engine/trainable.h): PCA's frozen (fitted or loaded), the autoencoders' trained */
    [CVENE_IV_PCA_ROTATED_SPACE] = {CVENE_IV_PCA_ROTATED_SPACE, "PCARotatedSpaceIntervention",
                                    IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_AUTOENCODER] = {CVENE_IV_AUTOENCODER, "AutoencoderIntervention",
                              IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_JUMPRELU_AUTOENCODER] = {CVENE_IV_JUMPRELU_AUTOENCODER, "JumpReLUAutoencoderIntervention",
                                       IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE, 0},
    [CVENE_IV_NOREFT] = {CVENE_IV_NOREFT, "NoreftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
    [CVENE_IV_CONSREFT] = {CVENE_IV_CONSREFT, "ConsreftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
    [CVENE_IV_LOBIREFT] = {CVENE_IV_LOBIREFT, "LobireftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
    [CVENE_IV_DIREFT] = {CVENE_IV_DIREFT, "DireftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
    [CVENE_IV_NODIREFT] = {CVENE_IV_NODIREFT, "NodireftIntervention", IV_TRAINABLE, 0, "pyreft.interventions"},
};

const iv_type *iv_type_get(cvene_intervention_type t) { return &types[t]; }

const char *iv_type_module(cvene_intervention_type t) {
    return types[t].module ? types[t].module : "pyvene.models.interventions";
}

const char *cvene_intervention_type_name(cvene_intervention_type t) {
    return (t >= 0 && t < CVENE_IV_N_TYPES) ? types[t].name : "?";
}

int iv_type_parse(const char *s, cvene_intervention_type *out) {
    const char *base = s;
    const char *dot = strrchr(s, '.');
    if (dot) base = dot + 1;
    size_t n = strlen(base);
    if (n >= 2 && base[n - 1] == '>' && base[n - 2] == '\'') n -= 2;
    for (int t = 0; t < CVENE_IV_N_TYPES; t++)
        if (strlen(types[t].name) == n && strncmp(base, types[t].name, n) == 0) {
            *out = (cvene_intervention_type)t;
            return 1;
        }
    return 0;
}

const char *iv_type_names(void) {
    return "VanillaIntervention, AdditionIntervention, SubtractionIntervention, ZeroIntervention, "
           "CollectIntervention, SkipIntervention, NoiseIntervention, LambdaIntervention, RotatedSpaceIntervention, "
           "LowRankRotatedSpaceIntervention, BoundlessRotatedSpaceIntervention, "
           "SigmoidMaskRotatedSpaceIntervention, SigmoidMaskIntervention, LoreftIntervention, "
           "PCARotatedSpaceIntervention, AutoencoderIntervention, JumpReLUAutoencoderIntervention, "
           "NoreftIntervention, ConsreftIntervention, LobireftIntervention, DireftIntervention, NodireftIntervention";
}
