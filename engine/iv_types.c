/* The table of intervention types (engine/iv_type.h). */
#include <string.h>

#include "engine/iv_type.h"
#include "kernels/backend.h"

static const iv_type types[CVENE_IV_N_TYPES] = {
    [CVENE_IV_VANILLA] = {.id = CVENE_IV_VANILLA, .name = "VanillaIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE, .ivop = CVENE_IVOP_VANILLA},
    [CVENE_IV_ADDITION] = {.id = CVENE_IV_ADDITION, .name = "AdditionIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE, .ivop = CVENE_IVOP_ADDITION},
    [CVENE_IV_SUBTRACTION] = {.id = CVENE_IV_SUBTRACTION, .name = "SubtractionIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED | IV_CONST_SOURCE, .ivop = CVENE_IVOP_SUBTRACTION},
    [CVENE_IV_ZERO] = {.id = CVENE_IV_ZERO, .name = "ZeroIntervention", .flags = IV_FUSED, .ivop = CVENE_IVOP_ZERO},
    [CVENE_IV_COLLECT] = {.id = CVENE_IV_COLLECT, .name = "CollectIntervention",
        .flags = IV_FUSED, .ivop = CVENE_IVOP_COLLECT},
    /* Skip copies the source run's input of the hooked module (the runner picks that site) */
    [CVENE_IV_SKIP] = {.id = CVENE_IV_SKIP, .name = "SkipIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_FUSED, .ivop = CVENE_IVOP_VANILLA},
    /* Noise adds its host-drawn noise: on the CPU in double (the host path), on a device as an
     * Addition of the f32 values (engine/index.c, fused_on) */
    [CVENE_IV_NOISE] = {.id = CVENE_IV_NOISE, .name = "NoiseIntervention", .flags = 0, .ivop = CVENE_IVOP_ADDITION},
    /* a C callback (pyvene's LambdaIntervention), with the source when the request has one */
    [CVENE_IV_CALLBACK] = {.id = CVENE_IV_CALLBACK, .name = "LambdaIntervention",
        .flags = IV_TAKES_SOURCE, .ivop = CVENE_IVOP_VANILLA},
    /* trainable (engine/trainable.h): parameters, forward and backward of their own */
    [CVENE_IV_ROTATED_SPACE] = {.id = CVENE_IV_ROTATED_SPACE, .name = "RotatedSpaceIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_LOW_RANK_ROTATED_SPACE] = {.id = CVENE_IV_LOW_RANK_ROTATED_SPACE,
        .name = "LowRankRotatedSpaceIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_BOUNDLESS_ROTATED_SPACE] = {.id = CVENE_IV_BOUNDLESS_ROTATED_SPACE,
        .name = "BoundlessRotatedSpaceIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_SIGMOID_MASK_ROTATED_SPACE] = {.id = CVENE_IV_SIGMOID_MASK_ROTATED_SPACE,
        .name = "SigmoidMaskRotatedSpaceIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_SIGMOID_MASK] = {.id = CVENE_IV_SIGMOID_MASK, .name = "SigmoidMaskIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    /* pyreft's: its source is learned from the base (no source run) */
    [CVENE_IV_LOREFT] = {.id = CVENE_IV_LOREFT, .name = "LoreftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
    /* weights of their own (engine/trainable.h): PCA's frozen (fitted or loaded), the autoencoders' trained */
    [CVENE_IV_PCA_ROTATED_SPACE] = {.id = CVENE_IV_PCA_ROTATED_SPACE, .name = "PCARotatedSpaceIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_AUTOENCODER] = {.id = CVENE_IV_AUTOENCODER, .name = "AutoencoderIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_JUMPRELU_AUTOENCODER] = {.id = CVENE_IV_JUMPRELU_AUTOENCODER, .name = "JumpReLUAutoencoderIntervention",
        .flags = IV_TAKES_SOURCE | IV_NEEDS_SOURCE | IV_TRAINABLE},
    [CVENE_IV_NOREFT] = {.id = CVENE_IV_NOREFT, .name = "NoreftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
    [CVENE_IV_CONSREFT] = {.id = CVENE_IV_CONSREFT, .name = "ConsreftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
    [CVENE_IV_LOBIREFT] = {.id = CVENE_IV_LOBIREFT, .name = "LobireftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
    [CVENE_IV_DIREFT] = {.id = CVENE_IV_DIREFT, .name = "DireftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
    [CVENE_IV_NODIREFT] = {.id = CVENE_IV_NODIREFT, .name = "NodireftIntervention",
        .flags = IV_TRAINABLE, .module = "pyreft.interventions"},
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
