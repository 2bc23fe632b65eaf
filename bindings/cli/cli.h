/* Shared helpers of the cvene command-line tool. */
#ifndef CVENE_CLI_H
#define CVENE_CLI_H
#include <stddef.h>

double cli_now(void); /* monotonic seconds */
/* Whole file, NUL-terminated, malloc'd; NULL with a message in err on failure. */
char *cli_read_file(const char *path, char *err, size_t errlen);
/* Write text to path atomically (a temporary file renamed over it); 0, or -1 with err set. */
int cli_write_atomic(const char *path, const char *text, char *err, size_t errlen);
/* "-3,-2,-1": 1 to cap positions, negative counting from the end of each prompt (a grid's columns, for
 * option opt of command cmd); the count, or -1 after printing what is wrong. */
int cli_parse_positions(const char *cmd, const char *opt, const char *s, int *out, int cap);
/* "1,2,5-7" -> the values, each in [lo, hi) and at most once, for option opt of `cvene cmd` (what:
 * "layer"; why: where the bound comes from). The count, or -1 after printing what is wrong. */
int cli_parse_list(const char *cmd, const char *opt, const char *s, int *out, int lo, int hi, const char *what,
                   const char *why);

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

/* One panel of cli_write_panels: a heatmap's inputs, every row computed. */
typedef struct {
    const char *title, *value_label;
    const float *values; /* (n_layers, n_cols) */
    const int *layers;
    int n_layers;
    const char *const *labels; /* (n_cols) column labels */
    const int *positions;      /* (n_cols) for the tooltips */
    int n_cols;
} cli_panel;
/* Up to 8 heatmaps side by side in one SVG document; 0, or -1. */
int cli_write_panels(FILE *f, const cli_panel *panels, int n);

/* The shared context options: --device cpu|cuda, --dtype f32|bf16|f16 (bf16 / f16: weights,
 * parameters and activations in that dtype, as transformers after model.to(dtype)). Fills cp;
 * returns 0, or 2 after printing what is wrong (cmd names the command). */
int cli_ctx_params(const char *cmd, const char *device, const char *dtype, int threads, cvene_ctx_params *cp);
/* --dtype's value: f32, bf16 or f16 into *out; 0, or 2 after printing what is wrong. */
int cli_dtype(const char *cmd, const char *dtype, cvene_dtype *out);
#define CLI_CTX_HELP                                                                                       \
    "  --device D    cpu (default), cuda or cuda:N (device N; on ranks, cuda gives each rank of a machine\n"  \
    "                its own device: the rank's place on the machine modulo the devices)\n"               \
    "  --dtype T     f32 (default), bf16 or f16: the model's weights, parameters and activations in T,\n"  \
    "                as transformers runs it after model.to(T) (GPT-2 / GPT-NeoX; on the CPU this is the\n"  \
    "                reference path, rounding in software: ~4x slower than f32)\n"

/* --resume: the results file `text` (read from path) of a sweep described by spec, with nl
 * layer rows of np scores. Fills done[l] (1 for each finished row), its scores and the base /
 * source scores. Every value is checked (an unknown key, a row of the wrong length, a
 * non-number, a number that is not a finite f32, "complete" that disagrees with the rows, a
 * missing base score): 0, or -1 with "path: what, at which entry" in err and nothing filled. */
#include <cjson/cJSON.h>
int cli_resume_read(const char *text, const char *path, const cJSON *spec, int nl, int np, float *scores, int *done,
                    double *base_score, double *source_score, char *err, size_t errlen);

/* Ranks (cli_ranks.c): the communicator of this process -- MPI's world when an MPI launcher started
 * it, this process alone otherwise; 0, or -1 after printing why. */
int cli_ranks_open(const char *cmd, cvene_ctx *ctx, cvene_comm **out);
/* Every rank runs the same command (spec: what identifies it) on the same model; 0, or -1 after
 * printing which rank differs. */
int cli_ranks_agree(cvene_ctx *ctx, cvene_comm *comm, const char *cmd, const cJSON *spec, const cvene_model_info *mi);

/* A directory's regular files appended to *buf (capacity *cap, length *n; realloc'd) as
 * [u32 name length][name][u64 size][bytes] each; 0, or -1. cli_unpack_dir writes them into dir
 * (created if need be; names with '/' refused); 0, or -1 with err set. cli_remove_dir removes a
 * directory of files. (A DAS cell trained on another rank reaches rank 0 this way.) */
int cli_pack_dir(const char *dir, unsigned char **buf, size_t *n, size_t *cap);
int cli_unpack_dir(const unsigned char *buf, size_t n, const char *dir, char *err, size_t errlen);
int cli_remove_dir(const char *dir);

/* A config's trained weights: from --weights DIR, or by default CONFIG.json's directory when the
 * config has trainable interventions (nothing to do otherwise). 0, or -1 after printing why. */
int cli_load_weights(cvene_ctx *ctx, cvene_config *cfg, const char *config_path, const char *weights);

/* `--type T --layer L [--component C] [--rank R]`: the one-intervention config of `cvene train`
 * (T without "Intervention"; rank 0: none given). 0, or -1 after printing why (cmd: the command). */
int cli_type_config(cvene_ctx *ctx, const char *cmd, const char *type, int layer, const char *component, int rank,
                    cvene_config **out);

int cmd_sweep(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_generate(int argc, char **argv);
#endif
