/* The context options every command that runs a model shares: --device and --dtype. */
#include <stdio.h>
#include <string.h>

#include "bindings/cli/cli.h"

int cli_dtype(const char *cmd, const char *dtype, cvene_dtype *out) {
    if (!strcmp(dtype, "f32")) *out = CVENE_F32;
    else if (!strcmp(dtype, "bf16")) *out = CVENE_BF16;
    else if (!strcmp(dtype, "f16")) *out = CVENE_F16;
    else {
        fprintf(stderr, "cvene %s: --dtype must be f32, bf16 or f16, got \"%s\"\n", cmd, dtype);
        return 2;
    }
    return 0;
}

int cli_ctx_params(const char *cmd, const char *device, const char *dtype, int threads, cvene_ctx_params *cp) {
    *cp = cvene_ctx_default_params();
    cp->n_threads = threads;
    if (!strcmp(device, "cuda")) {
        cp->device = CVENE_DEVICE_CUDA;
    } else if (strcmp(device, "cpu") != 0) {
        fprintf(stderr, "cvene %s: --device must be cpu or cuda, got \"%s\"\n", cmd, device);
        return 2;
    }
    /* bf16 / f16: the model as transformers runs it after model.to(dtype) - weights,
     * parameters and activations in that dtype (GPT-2, GPT-NeoX); GRU models refuse it */
    cvene_dtype dt;
    if (cli_dtype(cmd, dtype, &dt)) return 2;
    cp->compute_dtype = cp->activation_dtype = dt;
    return 0;
}
