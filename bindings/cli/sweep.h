/* `cvene sweep`'s options and progress bar, shared by the one-pair sweep (cmd_sweep.c) and the
 * dataset sweep (sweep_data.c). */
#ifndef CVENE_CLI_SWEEP_H
#define CVENE_CLI_SWEEP_H

#include <stdint.h>

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

/* `cvene sweep --data FILE`: the dataset sweep; the process's exit status. */
int cli_sweep_data(const sweep_args *a);

#endif
