/* cvene train --grid-positions P1,P2 [--layers L]: one intervention trained per (layer, position)
 * cell, as the pyvene paper's DAS grid (one rank-1 LowRankRotatedSpace per cell at block_output),
 * with each cell's held-out IIA in OUT/grid.json and OUT/grid.svg (beside a probe grid's accuracy
 * with --beside PROBE_DIR/results.json).
 *
 * A cell is exactly what `cvene train --type T --layer l` does on the data with every example's
 * positions set to the cell's (cvene_dataset_at_position): a fresh trainer with the same seed,
 * init and data order. What cells share here is the process: the model is loaded and the data
 * tokenised once, and each position's datasets are built once for every layer. The trainer's own
 * caches (the frozen prefix below the layer, the sources) are per cell. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "bindings/cli/train_grid.h"

/* the probe grid's held-out accuracy for (component, layer, position), NaN where it has none */
static void probe_values(const cJSON *res, const char *component, const int *layers, int nl, const int *pos, int np,
                         float *v) {
    for (int i = 0; i < nl * np; i++) v[i] = NAN;
    const cJSON *sites = cJSON_GetObjectItem(res, "sites");
    for (const cJSON *s = sites ? sites->child : NULL; s; s = s->next) {
        const cJSON *c = cJSON_GetObjectItem(s, "component"), *l = cJSON_GetObjectItem(s, "layer");
        const cJSON *p = cJSON_GetObjectItem(s, "position"), *a = cJSON_GetObjectItem(s, "held_out_accuracy");
        if (!cJSON_IsString(c) || strcmp(c->valuestring, component) || !cJSON_IsNumber(l) || !cJSON_IsNumber(p) ||
            !cJSON_IsNumber(a))
            continue;
        for (int li = 0; li < nl; li++)
            for (int k = 0; k < np; k++)
                if (layers[li] == l->valueint && pos[k] == p->valueint) v[li * np + k] = (float)a->valuedouble;
    }
}

int cli_train_grid(const train_grid_args *g) {
    cvene_ctx *ctx = g->ctx;
    const int nl = g->n_layers, np = g->n_positions;
    float *iia = malloc(sizeof(float) * (size_t)nl * np), *iia0 = malloc(sizeof(float) * (size_t)nl * np);
    float *beside = NULL;
    char **labels = calloc((size_t)np, sizeof(char *));
    cJSON *doc = cJSON_CreateObject(), *probe = NULL;
    int rc = 1;
    if (!iia || !iia0 || !labels || !doc) goto oom;
    if (g->beside) {
        char err[1024];
        char *text = cli_read_file(g->beside, err, sizeof err);
        const int read = text != NULL;
        probe = text ? cJSON_Parse(text) : NULL;
        free(text);
        if (!probe || !cJSON_IsArray(cJSON_GetObjectItem(probe, "sites"))) {
            fprintf(stderr, "cvene train: --beside %s: %s\n", g->beside,
                    read ? "not a `cvene probe --out` results.json" : err);
            goto done;
        }
    }
    if (mkdir(g->out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cvene train: --out %s: cannot create the directory: %s\n", g->out, strerror(errno));
        goto done;
    }
    printf("DAS grid: %d layers x %d positions = %d cells of %s (rank %d) at %s, %d training and %d held-out "
           "examples\n", nl, np, nl * np, g->type, g->rank, g->component, cvene_dataset_count(g->train),
           cvene_dataset_count(g->held));
    fflush(stdout);
    cJSON *cells = cJSON_AddArrayToObject(doc, "cells");
    const double t0 = cli_now();
    for (int k = 0; k < np; k++) {
        cvene_dataset *tr = NULL, *ho = NULL;
        if (cvene_dataset_at_position(g->train, g->positions[k], &tr) != CVENE_OK ||
            cvene_dataset_at_position(g->held, g->positions[k], &ho) != CVENE_OK) {
            fprintf(stderr, "cvene train: position %d: %s\n", g->positions[k], cvene_ctx_error(ctx));
            cvene_dataset_free(tr), cvene_dataset_free(ho);
            goto done;
        }
        for (int li = 0; li < nl; li++) {
            cvene_config *cfg = NULL;
            cvene_trainer *t = NULL;
            double acc0 = 0, acc = 0, loss = 0;
            char dir[4200];
            snprintf(dir, sizeof dir, "%.4000s/L%d_P%d", g->out, g->layers[li], g->positions[k]);
            int ok = cli_type_config(ctx, "train", g->type, g->layers[li], g->component, g->rank, &cfg) == 0;
            ok = ok && cvene_trainer_new(g->m, cfg, g->tp, &t) == CVENE_OK;
            ok = ok && cvene_trainer_evaluate(t, ho, &acc0, NULL) == CVENE_OK;
            ok = ok && cvene_trainer_fit(t, tr) == CVENE_OK;
            ok = ok && cvene_trainer_evaluate(t, ho, &acc, &loss) == CVENE_OK;
            ok = ok && cvene_trainer_save(t, dir) == CVENE_OK;
            if (!ok) {
                if (cfg) fprintf(stderr, "cvene train: cell layer %d, position %d: %s\n", g->layers[li], g->positions[k],
                                 cvene_ctx_error(ctx));
                cvene_trainer_free(t), cvene_config_free(cfg);
                cvene_dataset_free(tr), cvene_dataset_free(ho);
                goto done;
            }
            int64_t n_steps = 0;
            const double *losses = cvene_trainer_losses(t, &n_steps);
            iia[li * np + k] = (float)acc, iia0[li * np + k] = (float)acc0;
            printf("layer %3d  position %4d  IIA %.4f (before %.4f)  final loss %.4f  %6.1f s\n", g->layers[li],
                   g->positions[k], acc, acc0, n_steps ? losses[n_steps - 1] : 0.0, cli_now() - t0);
            fflush(stdout);
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "layer", g->layers[li]);
            cJSON_AddNumberToObject(c, "position", g->positions[k]);
            cJSON_AddNumberToObject(c, "iia", acc);
            cJSON_AddNumberToObject(c, "iia_before", acc0);
            cJSON_AddNumberToObject(c, "held_out_loss", loss);
            cJSON_AddNumberToObject(c, "steps", (double)n_steps);
            cJSON_AddItemToArray(cells, c);
            cvene_trainer_free(t), cvene_config_free(cfg);
        }
        cvene_dataset_free(tr), cvene_dataset_free(ho);
    }
    const double el = cli_now() - t0;
    cJSON_AddStringToObject(doc, "type", g->type);
    cJSON_AddStringToObject(doc, "component", g->component);
    cJSON_AddNumberToObject(doc, "rank", g->rank);
    cJSON_AddItemToObject(doc, "layers", cJSON_CreateIntArray(g->layers, nl));
    cJSON_AddItemToObject(doc, "positions", cJSON_CreateIntArray(g->positions, np));
    cJSON_AddNumberToObject(doc, "seconds", el);
    char path[4200], err[1024] = "out of memory";
    snprintf(path, sizeof path, "%.4000s/grid.json", g->out);
    char *text = cJSON_Print(doc);
    const int wrote = text && cli_write_atomic(path, text, err, sizeof err) == 0;
    free(text);
    if (!wrote) {
        fprintf(stderr, "cvene train: %s\n", err);
        goto done;
    }
    for (int k = 0; k < np; k++) {
        labels[k] = malloc(24);
        if (!labels[k]) goto oom;
        snprintf(labels[k], 24, "%d", g->positions[k]);
    }
    char title[512], ptitle[512];
    snprintf(title, sizeof title, "DAS (%s, rank %d) IIA, %s", g->type, g->rank, g->component);
    cli_panel panels[2] = {{title, "held-out IIA (columns: positions, negative from the end)", iia, g->layers, nl,
                            (const char *const *)labels, g->positions, np}};
    int n_panels = 1;
    if (probe) {
        beside = malloc(sizeof(float) * (size_t)nl * np);
        if (!beside) goto oom;
        probe_values(probe, g->component, g->layers, nl, g->positions, np, beside);
        snprintf(ptitle, sizeof ptitle, "probe accuracy, %s", g->component);
        panels[1] = (cli_panel){ptitle, "held-out probe accuracy (blank: not in the probe grid)", beside, g->layers, nl,
                                (const char *const *)labels, g->positions, np};
        n_panels = 2;
    }
    snprintf(path, sizeof path, "%.4000s/grid.svg", g->out);
    FILE *f = fopen(path, "w");
    int ok = f && cli_write_panels(f, panels, n_panels) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "cvene train: cannot write %s\n", path);
        goto done;
    }
    int best = 0;
    for (int i = 1; i < nl * np; i++) best = iia[i] > iia[best] ? i : best;
    printf("%d cells in %.2f s; best: layer %d, position %d, IIA %.4f\nwrote %s/grid.json, %s/grid.svg and each "
           "cell's interventions in %s/L<layer>_P<position>/\n", nl * np, el, g->layers[best / np],
           g->positions[best % np], iia[best], g->out, g->out, g->out);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "cvene train: out of memory\n");
done:
    for (int k = 0; labels && k < np; k++) free(labels[k]);
    free(labels), free(iia), free(iia0), free(beside);
    cJSON_Delete(doc), cJSON_Delete(probe);
    return rc;
}
