/* `cvene train --grid-positions`: the DAS grid (bindings/cli/train_grid.c). */
#ifndef CVENE_CLI_TRAIN_GRID_H
#define CVENE_CLI_TRAIN_GRID_H

#include "cvene.h"

typedef struct {
    cvene_ctx *ctx;
    cvene_model *m;
    const cvene_dataset *train, *held;
    const char *type, *component, *out, *beside; /* beside: a probe grid's results.json, or NULL */
    int rank;
    const int *layers, *positions;
    int n_layers, n_positions;
    const cvene_train_params *tp;
    cvene_comm *comm; /* ranks: cells split by cost (the layers a step runs), rank 0 writes everything */
} train_grid_args;

/* Every (layer, position) cell trained and evaluated; the process's exit status. On ranks, each
 * cell's results and trained files travel to rank 0, which prints and writes them as they come. */
int cli_train_grid(const train_grid_args *g);

#endif
