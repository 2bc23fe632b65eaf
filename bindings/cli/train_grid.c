/* cvene train --grid-positions P1,P2 [--layers L]: one intervention trained per (layer, position)
 * cell, as the pyvene paper's DAS grid (one rank-1 LowRankRotatedSpace per cell at block_output),
 * with each cell's held-out IIA in OUT/grid.json and OUT/grid.svg (beside a probe grid's accuracy
 * with --beside PROBE_DIR/results.json).
 *
 * A cell is exactly what `cvene train --type T --layer l` does on the data with every example's
 * positions set to the cell's (cvene_dataset_at_position): a fresh trainer with the same seed,
 * init and data order. What cells share here is the process: the model is loaded and the data
 * tokenised once, and each position's datasets are built once for every layer. The trainer's own
 * caches (the frozen prefix below the layer, the sources) are per cell.
 *
 * On ranks (mpirun -np N cvene train --grid-positions ...) the cells are split by cost (a step
 * runs the layers from the cell's upward); a rank other than 0 saves a cell's interventions in a
 * temporary directory and posts them, with its IIA, to rank 0, which writes OUT/ as one process
 * would. Cells are independent, so every file equals one process's. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
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

typedef struct { /* a cell's results, as posted to rank 0 (its files follow) */
    double acc0, acc, loss, final_loss;
    int64_t steps;
} cell_result;

typedef struct { /* rank 0's record of the grid */
    const train_grid_args *g;
    float *iia, *iia0;
    cJSON **cell;  /* (n_cells) each cell's JSON, in the single process's order at the end */
    double t0;
    int got;       /* cells recorded */
} grid_state;

static int record(grid_state *gs, int c, const cell_result *r) {
    const train_grid_args *g = gs->g;
    const int nl = g->n_layers, np = g->n_positions, k = c / nl, li = c % nl;
    gs->iia[li * np + k] = (float)r->acc, gs->iia0[li * np + k] = (float)r->acc0;
    printf("layer %3d  position %4d  IIA %.4f (before %.4f)  final loss %.4f  %6.1f s\n", g->layers[li],
           g->positions[k], r->acc, r->acc0, r->final_loss, cli_now() - gs->t0);
    fflush(stdout);
    cJSON *j = cJSON_CreateObject();
    if (!j) return -1;
    cJSON_AddNumberToObject(j, "layer", g->layers[li]);
    cJSON_AddNumberToObject(j, "position", g->positions[k]);
    cJSON_AddNumberToObject(j, "iia", r->acc);
    cJSON_AddNumberToObject(j, "iia_before", r->acc0);
    cJSON_AddNumberToObject(j, "held_out_loss", r->loss);
    cJSON_AddNumberToObject(j, "steps", (double)r->steps);
    gs->cell[c] = j;
    gs->got++;
    return 0;
}

static void cell_dir(const train_grid_args *g, int c, char *dir, size_t n) {
    snprintf(dir, n, "%.4000s/L%d_P%d", g->out, g->layers[c % g->n_layers], g->positions[c / g->n_layers]);
}

/* rank 0: the cells other ranks posted (waiting up to wait_s for the first); item n_cells: a rank
 * is finished. 0, or -1 (said). */
static int take_cells(grid_state *gs, unsigned char **buf, size_t *cap, int *finished, double wait_s) {
    const int n_cells = gs->g->n_layers * gs->g->n_positions;
    for (;;) {
        int item = -1, from = -1;
        size_t n = 0;
        if (cvene_comm_collect(gs->g->comm, &item, *buf, *cap, &n, &from, wait_s) != CVENE_OK) {
            fprintf(stderr, "cvene train (rank 0): %s\n", cvene_ctx_error(gs->g->ctx));
            return -1;
        }
        if (item == -1) return 0;
        if (item == -2) { /* longer than the room: grow it and take the cell */
            unsigned char *b = realloc(*buf, n);
            if (!b) {
                fprintf(stderr, "cvene train (rank 0): out of memory\n");
                return -1;
            }
            *buf = b, *cap = n;
            continue;
        }
        wait_s = 0;
        if (item == n_cells) {
            (*finished)++;
            continue;
        }
        cell_result r;
        char dir[4200], err[1024];
        if (item > n_cells || n < sizeof r || gs->cell[item]) {
            fprintf(stderr, "cvene train (rank 0): rank %d sent cell %d of %d twice or malformed\n", from, item, n_cells);
            return -1;
        }
        memcpy(&r, *buf, sizeof r);
        cell_dir(gs->g, item, dir, sizeof dir);
        if (cli_unpack_dir(*buf + sizeof r, n - sizeof r, dir, err, sizeof err) != 0) {
            fprintf(stderr, "cvene train (rank 0): the cell from rank %d: %s\n", from, err);
            return -1;
        }
        if (record(gs, item, &r) != 0) return -1;
    }
}

/* a rank other than 0: the cell's files (saved in a temporary directory) and results to rank 0 */
static int post_cell(const train_grid_args *g, int c, cvene_trainer *t, const cell_result *r) {
    const char *tmpdir = getenv("TMPDIR");
    char dir[4200];
    snprintf(dir, sizeof dir, "%.4000s/cvene-cell-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cvene train (rank %d): cannot make a temporary directory %s: %s\n", cvene_comm_rank(g->comm),
                dir, strerror(errno));
        return -1;
    }
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    int ok = cvene_trainer_save(t, dir) == CVENE_OK;
    if (!ok) fprintf(stderr, "cvene train (rank %d): %s\n", cvene_comm_rank(g->comm), cvene_ctx_error(g->ctx));
    if (ok && ((cap = sizeof *r + 65536, buf = malloc(cap)) == NULL || (memcpy(buf, r, sizeof *r), n = sizeof *r,
                                                                       cli_pack_dir(dir, &buf, &n, &cap) != 0))) {
        fprintf(stderr, "cvene train (rank %d): cannot read back %s\n", cvene_comm_rank(g->comm), dir);
        ok = 0;
    }
    if (ok && cvene_comm_post(g->comm, c, buf, n) != CVENE_OK) {
        fprintf(stderr, "cvene train (rank %d): %s\n", cvene_comm_rank(g->comm), cvene_ctx_error(g->ctx));
        ok = 0;
    }
    free(buf);
    cli_remove_dir(dir);
    return ok ? 0 : -1;
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
    const int rank0 = cvene_comm_rank(g->comm) == 0; /* only rank 0 reads --beside and writes OUT/ */
    if (g->beside && rank0) {
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
    if (rank0 && mkdir(g->out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cvene train: --out %s: cannot create the directory: %s\n", g->out, strerror(errno));
        goto done;
    }
    if (cvene_comm_rank(g->comm) == 0)
        printf("DAS grid: %d layers x %d positions = %d cells of %s (rank %d) at %s, %d training and %d held-out "
               "examples%s\n", nl, np, nl * np, g->type, g->rank, g->component, cvene_dataset_count(g->train),
               cvene_dataset_count(g->held), cvene_comm_size(g->comm) > 1 ? ", cells split among the ranks" : "");
    fflush(stdout);
    cJSON *cells = cJSON_AddArrayToObject(doc, "cells");
    const double t0 = cli_now();
    const int n_cells = nl * np, rank = cvene_comm_rank(g->comm), n_ranks = cvene_comm_size(g->comm);
    /* cell c = k * nl + li (position-major, as one process trains them); its cost: the layers a
     * step runs, from the cell's upward, plus the unembedding */
    const int L = cvene_model_get_info(g->m).n_layer;
    cJSON **cellv = calloc((size_t)n_cells, sizeof(cJSON *));
    int *owner = malloc(sizeof(int) * (size_t)n_cells);
    double *cost = malloc(sizeof(double) * (size_t)n_cells);
    size_t cap = 65536;
    unsigned char *buf = malloc(cap);
    int finished = 0, failed = 0;
    grid_state gs = {g, iia, iia0, cellv, t0, 0};
    if (!cellv || !owner || !cost || !buf) {
        free(cellv), free(owner), free(cost), free(buf);
        goto oom;
    }
    for (int c = 0; c < n_cells; c++) cost[c] = (double)(L - g->layers[c % nl]) + 1.0;
    cvene_comm_split(cost, NULL, n_cells, n_ranks, owner);
    for (int k = 0; k < np && !failed; k++) {
        int mine = 0;
        for (int li = 0; li < nl; li++) mine += owner[k * nl + li] == rank;
        if (!mine) continue;
        cvene_dataset *tr = NULL, *ho = NULL;
        if (cvene_dataset_at_position(g->train, g->positions[k], &tr) != CVENE_OK ||
            cvene_dataset_at_position(g->held, g->positions[k], &ho) != CVENE_OK) {
            fprintf(stderr, "cvene train: position %d: %s\n", g->positions[k], cvene_ctx_error(ctx));
            cvene_dataset_free(tr), cvene_dataset_free(ho);
            failed = 1;
            break;
        }
        for (int li = 0; li < nl && !failed; li++) {
            const int c = k * nl + li;
            if (owner[c] != rank) continue;
            cvene_config *cfg = NULL;
            cvene_trainer *t = NULL;
            cell_result r = {0, 0, 0, 0, 0};
            char dir[4200];
            cell_dir(g, c, dir, sizeof dir);
            int ok = cli_type_config(ctx, "train", g->type, g->layers[li], g->component, g->rank, &cfg) == 0;
            ok = ok && cvene_trainer_new(g->m, cfg, g->tp, &t) == CVENE_OK;
            ok = ok && cvene_trainer_evaluate(t, ho, &r.acc0, NULL) == CVENE_OK;
            ok = ok && cvene_trainer_fit(t, tr) == CVENE_OK;
            ok = ok && cvene_trainer_evaluate(t, ho, &r.acc, &r.loss) == CVENE_OK;
            ok = ok && (rank != 0 || cvene_trainer_save(t, dir) == CVENE_OK);
            if (!ok && cfg)
                fprintf(stderr, "cvene train: cell layer %d, position %d: %s\n", g->layers[li], g->positions[k],
                        cvene_ctx_error(ctx));
            if (ok) {
                const double *losses = cvene_trainer_losses(t, &r.steps);
                r.final_loss = r.steps ? losses[r.steps - 1] : 0.0;
                ok = rank == 0 ? record(&gs, c, &r) == 0 && take_cells(&gs, &buf, &cap, &finished, 0) == 0
                               : post_cell(g, c, t, &r) == 0;
            }
            cvene_trainer_free(t), cvene_config_free(cfg);
            failed = !ok;
        }
        cvene_dataset_free(tr), cvene_dataset_free(ho);
    }
    if (!failed && rank != 0) { /* finished: rank 0 writes the grid */
        failed = cvene_comm_post(g->comm, n_cells, &n_cells, sizeof n_cells) != CVENE_OK;
        if (failed) fprintf(stderr, "cvene train (rank %d): %s\n", rank, cvene_ctx_error(ctx));
    }
    while (!failed && rank == 0 && finished < n_ranks - 1) failed = take_cells(&gs, &buf, &cap, &finished, 0.1) != 0;
    if (!failed && rank == 0 && gs.got != n_cells) {
        fprintf(stderr, "cvene train (rank 0): %d of %d cells arrived\n", gs.got, n_cells);
        failed = 1;
    }
    for (int c = 0; c < n_cells; c++) { /* the cells in order (each taken into the document) */
        if (cellv[c] && !failed && rank == 0) cJSON_AddItemToArray(cells, cellv[c]);
        else cJSON_Delete(cellv[c]);
    }
    free(cellv), free(owner), free(cost), free(buf);
    if (failed) {
        if (n_ranks > 1) cvene_comm_abort(g->comm, 1); /* the other ranks would wait for this one */
        goto done;
    }
    if (rank != 0) {
        rc = 0;
        goto done;
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
