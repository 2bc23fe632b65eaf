/* Ranks in the CLI: `mpirun -np N cvene sweep ...` runs one process per rank; each opens the
 * communicator here, checks that every rank runs the same command on the same model, and only
 * rank 0 writes outputs. Without a launcher a command runs alone (rank 0 of 1, no MPI). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/cli.h"

int cli_ranks_open(const char *cmd, cvene_ctx *ctx, cvene_comm **out) {
    const int launched = cvene_comm_launched();
    if (launched && !cvene_comm_mpi_available() && cvene_comm_launched_size() > 1) {
        fprintf(stderr, "cvene %s: started as %d ranks, but this build has no MPI (install libopenmpi-dev and "
                        "rebuild)\n", cmd, cvene_comm_launched_size());
        return -1;
    }
    if (cvene_comm_new(ctx, launched && cvene_comm_mpi_available(), 0, out) != CVENE_OK) {
        fprintf(stderr, "cvene %s: %s\n", cmd, cvene_ctx_error(ctx));
        return -1;
    }
    return 0;
}

int cli_ranks_agree(cvene_ctx *ctx, cvene_comm *comm, const char *cmd, const cJSON *spec, const cvene_model_info *mi) {
    if (cvene_comm_size(comm) == 1) return 0;
    char *text = cJSON_PrintUnformatted(spec), shape[160];
    /* the model's shape as text (the struct has padding bytes) */
    const int k = snprintf(shape, sizeof shape, "|arch %d layers %d heads %d embd %d inner %d vocab %d ctx %d params %lld",
                           (int)mi->arch, mi->n_layer, mi->n_head, mi->n_embd, mi->n_inner, mi->vocab_size,
                           mi->n_positions, (long long)mi->n_params);
    size_t n = text ? strlen(text) : 0;
    char *all = text ? malloc(n + (size_t)k + 1) : NULL;
    if (!all) {
        free(text);
        fprintf(stderr, "cvene %s: out of memory\n", cmd);
        return -1;
    }
    memcpy(all, text, n), memcpy(all + n, shape, (size_t)k + 1);
    cvene_status st = cvene_comm_agree(comm, all, n + (size_t)k, "command or model");
    free(text), free(all);
    if (st != CVENE_OK) {
        fprintf(stderr, "cvene %s (rank %d): %s\n", cmd, cvene_comm_rank(comm), cvene_ctx_error(ctx));
        return -1;
    }
    return 0;
}
