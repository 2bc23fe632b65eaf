/* The context options every command that runs a model shares: --device and --dtype. */
#include <stdio.h>
#include <stdlib.h>
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
    if (!strncmp(device, "cuda", 4) && (device[4] == 0 || device[4] == ':')) {
        cp->device = CVENE_DEVICE_CUDA;
        /* cuda:N picks device N; plain cuda on ranks (mpirun): the rank's place on its machine modulo
         * the visible devices, so the ranks of a machine share its GPUs one each */
        const int n = cvene_cuda_device_count();
        cp->cuda_device = cvene_comm_launched_size() > 1 && n > 0 ? cvene_comm_launched_local_rank() % n : 0;
        if (device[4] == ':') {
            char *end = NULL;
            const long d = strtol(device + 5, &end, 10);
            if (end == device + 5 || *end || d < 0 || d > 1024) {
                fprintf(stderr, "cvene %s: --device cuda:N needs a device number N, got \"%s\"\n", cmd, device);
                return 2;
            }
            cp->cuda_device = (int)d;
        }
    } else if (strcmp(device, "cpu") != 0) {
        fprintf(stderr, "cvene %s: --device must be cpu, cuda or cuda:N, got \"%s\"\n", cmd, device);
        return 2;
    }
    /* bf16 / f16: the model as transformers runs it after model.to(dtype) - weights,
     * parameters and activations in that dtype (GPT-2, GPT-NeoX); GRU models refuse it */
    cvene_dtype dt;
    if (cli_dtype(cmd, dtype, &dt)) return 2;
    cp->compute_dtype = cp->activation_dtype = dt;
    return 0;
}
