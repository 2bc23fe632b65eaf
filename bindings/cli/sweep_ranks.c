/* `mpirun -np N cvene sweep ...`: the layers split among the ranks by cost (cvene_sweep_split);
 * each rank sweeps its own with the session every rank began (the same base and source caches as
 * one process, so the same scores bit for bit) and posts each row to rank 0 as it is done. Rank 0
 * sweeps its share too, takes the others' rows as they arrive (between its own batches), rewrites
 * the results file after each, and draws the progress of every rank together. A rank that stops
 * (Ctrl-C, --stop-after, SIGTERM from mpirun when another rank died) says so to rank 0; the file
 * then holds every row that was done, and --resume finishes with any number of ranks. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/cli.h"
#include "bindings/cli/sweep.h"

typedef struct { /* a row's message: the sender's counts so far, then the row */
    int64_t forwards, sites;
} row_head;

/* Rank 0: every message that has arrived (waiting up to wait_s for the first). 0, or -1 (said). */
static int take_rows(cli_sweep_ranks *rs, double wait_s) {
    const size_t cap = sizeof(row_head) + sizeof(float) * (size_t)rs->ncol;
    for (;;) {
        int item = -1, from = -1;
        if (cvene_comm_collect(rs->comm, &item, rs->msg, cap, NULL, &from, wait_s) != CVENE_OK) {
            fprintf(stderr, "\ncvene sweep (rank 0): %s\n", cvene_ctx_error(rs->ctx));
            return -1;
        }
        if (item == -1) return 0;
        wait_s = 0;
        row_head h;
        memcpy(&h, rs->msg, sizeof h);
        rs->forwards[from] = h.forwards, rs->sites[from] = h.sites;
        if (item == rs->nl) { /* the rank is finished (or stopped) */
            rs->finished++;
            continue;
        }
        if (item < 0 || item > rs->nl || from <= 0) {
            fprintf(stderr, "\ncvene sweep (rank 0): rank %d sent row %d of %d\n", from, item, rs->nl);
            return -1;
        }
        memcpy(rs->scores + (size_t)item * rs->ncol, rs->msg + sizeof h, sizeof(float) * (size_t)rs->ncol);
        if (rs->row_done(rs->user, item) != 0) return -1;
    }
}

static int64_t others_sites(const cli_sweep_ranks *rs) {
    int64_t n = 0;
    for (int r = 1; r < cvene_comm_size(rs->comm); r++) n += rs->sites[r];
    return n;
}

void cli_sweep_ranks_progress(void *user, int64_t done, int64_t total) {
    cli_sweep_ranks *rs = user;
    if (rs->failed) return;
    if (take_rows(rs, 0) != 0) rs->failed = 1; /* rows that arrived while rank 0 computes its own */
    cli_sweep_progress(rs->bar, done + others_sites(rs), total);
}

static int post(cli_sweep_ranks *rs, int item, const float *row, const cvene_sweep_summary *s) {
    row_head h = {s->forwards, s->sites};
    memcpy(rs->msg, &h, sizeof h);
    if (row) memcpy(rs->msg + sizeof h, row, sizeof(float) * (size_t)rs->ncol);
    if (cvene_comm_post(rs->comm, item, rs->msg, sizeof h + (row ? sizeof(float) * (size_t)rs->ncol : 0)) != CVENE_OK) {
        fprintf(stderr, "cvene sweep (rank %d): %s\n", cvene_comm_rank(rs->comm), cvene_ctx_error(rs->ctx));
        return -1;
    }
    return 0;
}

int cli_sweep_ranks_run(cli_sweep_ranks *rs, cvene_sweep_session *session, cvene_sweep_summary *sum) {
    const int rank = cvene_comm_rank(rs->comm), n = cvene_comm_size(rs->comm);
    int computed = 0, stopped = 0;
    cvene_sweep_summary mine;
    memset(&mine, 0, sizeof mine);
    for (int li = 0; li < rs->nl; li++) {
        if (rs->done[li] || rs->owner[li] != rank) continue;
        if (*rs->stop || (rs->stop_after > 0 && computed >= rs->stop_after)) {
            stopped = 1;
            break;
        }
        computed++;
        if (cvene_sweep_layer(session, rs->layers[li], rs->scores + (size_t)li * rs->ncol) != CVENE_OK) {
            fprintf(stderr, "%scvene sweep (rank %d): %s\n", rank == 0 && rs->bar->tty ? "\n" : "", rank,
                    cvene_ctx_error(rs->ctx));
            return -1;
        }
        mine = cvene_sweep_get_summary(session);
        if (rank == 0 ? rs->row_done(rs->user, li) != 0 || rs->failed || take_rows(rs, 0) != 0
                      : post(rs, li, rs->scores + (size_t)li * rs->ncol, &mine) != 0)
            return -1;
    }
    if (session) mine = cvene_sweep_get_summary(session);
    if (rank != 0) {
        if (post(rs, rs->nl, NULL, &mine) != 0) return -1;
        return stopped || *rs->stop ? 130 : 0;
    }
    /* rank 0: the others' rows until every rank has said it is finished (after a stop, only what
     * arrives within half a second: mpirun kills what is left soon after it stops a job) */
    double stop_at = 0;
    while (rs->finished < n - 1) {
        if (take_rows(rs, 0.05) != 0) return -1;
        cli_sweep_progress(rs->bar, (int64_t)(mine.sites + others_sites(rs)), 0);
        if (*rs->stop && stop_at == 0) stop_at = cli_now() + 0.5;
        if (stop_at > 0 && cli_now() > stop_at) break;
    }
    *sum = mine;
    for (int r = 1; r < n; r++) sum->forwards += rs->forwards[r], sum->sites += rs->sites[r];
    for (int li = 0; li < rs->nl; li++)
        if (!rs->done[li]) stopped = 1;
    return stopped ? 130 : 0;
}
