/* `cvene sweep`'s options and progress bar, shared by the one-pair sweep (cmd_sweep.c) and the
 * dataset sweep (sweep_data.c). */
#ifndef CVENE_CLI_SWEEP_H
#define CVENE_CLI_SWEEP_H

#include <stdint.h>

#include "cvene.h"

typedef struct { /* the progress bar on stderr (a terminal only) */
    int64_t base_done, total;
    double t0;
    int tty;
} cli_sweep_bar;

typedef struct { /* the parsed options */
    const char *model, *out, *component, *metric;
    const char *base_text, *source_text, *base_ids, *source_ids, *subject_text, *subject_pos;
    const char *token_text, *token_b_text, *layers, *positions, *device, *dtype, *position_ids, *method;
    const char *data, *roles; /* --data FILE (a dataset sweep), --roles its columns */
    int token, token_b, head, window, verify, together, samples, naive, resume, threads, trace, max_batch, stop_after;
    unsigned seed;
    double noise;
} sweep_args;

void cli_sweep_progress(void *user, int64_t done, int64_t total); /* a cvene_progress_fn over a cli_sweep_bar */

/* --method atp --verify K (sweep_verify.c): the K sites of largest estimated change patched exactly,
 * reported on stdout and in doc["verify"]. 0; -1: the context's error; -2: out of memory (said). */
typedef struct cJSON cJSON;
int cli_sweep_verify_atp(cvene_model *m, const int32_t *base, const int32_t *src, int T, const cvene_sweep_params *p0,
                         const float *est, const int *layers, int nl, int nh, const cvene_sweep_summary *sum, int K,
                         cJSON *doc);

/* The one-pair sweep on ranks (sweep_ranks.c). Rank 0 hands the others' rows to row_done as they
 * arrive (it rewrites the results file); the fields above `msg` are the caller's. */
#include <signal.h>
typedef struct {
    cvene_ctx *ctx;
    cvene_comm *comm;
    const int *layers, *owner; /* (nl) each layer's rank (cvene_sweep_split) */
    int nl, ncol, stop_after;
    float *scores;             /* (nl, ncol) */
    int *done;                 /* (nl) rows finished (resumed ones included); row_done sets them */
    volatile sig_atomic_t *stop;
    int (*row_done)(void *user, int li); /* 0, or -1 after printing why */
    void *user;
    cli_sweep_bar *bar;
    unsigned char *msg;        /* a message's room: 16 + 4 ncol bytes */
    int64_t *forwards, *sites; /* (ranks) each rank's counts so far */
    int finished, failed;
} cli_sweep_ranks;
/* rank 0's progress callback (user: the cli_sweep_ranks): takes the rows that arrived, draws the bar
 * for every rank */
void cli_sweep_ranks_progress(void *user, int64_t done, int64_t total);
/* This rank's layers (session may be NULL on a rank with none), then on rank 0 everyone's rows.
 * sum (rank 0): the counts of every rank. 0: done; 130: stopped (rows kept); -1: failed (said). */
int cli_sweep_ranks_run(cli_sweep_ranks *rs, cvene_sweep_session *session, cvene_sweep_summary *sum);

/* `cvene sweep --data FILE`: the dataset sweep; the process's exit status. */
int cli_sweep_data(const sweep_args *a);

#endif
