/* Shared helpers of the cvene command-line tool. */
#ifndef CVENE_CLI_H
#define CVENE_CLI_H
#include <stddef.h>

double cli_now(void); /* monotonic seconds */
/* Whole file, NUL-terminated, malloc'd; NULL with a message in err on failure. */
char *cli_read_file(const char *path, char *err, size_t errlen);

#include <stdint.h>
#include <stdio.h>
#include "cvene.h"

/* tokenizer of a model directory, loaded on first use */
typedef struct {
    cvene_ctx *ctx;
    const char *dir;
    cvene_tokenizer *tok;
    int failed;
} cli_text;
int cli_text_encode(cli_text *tx, const char *text, int32_t **ids, int *n); /* prints errors */
char *cli_text_token_label(cli_text *tx, int32_t id); /* decoded token or "#id"; malloc'd */
void cli_text_free(cli_text *tx);

/* SVG heatmap: scores (n_layers, n_positions); rows with done_rows[l] == 0 are grey */
int cli_write_heatmap(FILE *f, const char *title, const char *value_label, const float *scores, const int *layers,
                      int n_layers, const char *const *tokens, const int *positions, int n_positions,
                      const int *done_rows);

int cmd_sweep(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_run(int argc, char **argv);
#endif
