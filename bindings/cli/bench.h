/* `cvene bench`: what every mode shares (bindings/cli/bench_core.c) - the options, the loaded
 * model, honest timing (warm-up, repeats, median and spread, progress for long runs), the
 * machine's description and load, and one JSON document (schema "cvene-bench/1") that the human
 * table is printed from. Modes: bench_modes.c (forward, run, kernels), bench_sweep.c (sweep),
 * bench_gen_train.c (generate, train). */
#ifndef CVENE_CLI_BENCH_H
#define CVENE_CLI_BENCH_H
#include <stdint.h>
#include <cjson/cJSON.h>

#include "bindings/cli/cli.h"
#include "cvene.h"

typedef enum { BM_FORWARD, BM_RUN, BM_SWEEP, BM_GENERATE, BM_TRAIN, BM_KERNELS, BM_N } bench_mode;

/* every option of every mode (a mode refuses the ones it does not read, naming them) */
typedef struct {
    const char *model, *device, *dtype, *json;
    const char *config, *inputs, *weights;                   /* run, generate, train */
    const char *base, *source, *base_ids, *source_ids;      /* sweep */
    const char *component, *layers, *positions, *ranks;     /* sweep (layers: the sampled ones) */
    const char *prompt, *ids;                                /* generate */
    const char *data, *type;                                 /* train */
    int threads, warmup, repeat, batch, seq, full, naive_sites, sample_layers, max_new_tokens;
    int intervene_on_prompt, steps, layer, rank, epochs, head;
    unsigned seed;
    int given[64]; /* which options were on the command line (by table index) */
} bench_args;

typedef struct {
    bench_mode mode;
    bench_args a;
    cvene_ctx *ctx;
    cvene_model *m; /* NULL for kernels without --model */
    cvene_model_info info;
    cJSON *doc, *measurements, *derived, *projection;
    int tty;
    double t_start, t_last; /* when the benchmark started; the last progress line */
} bench_env;

/* One measurement: fn(arg) is called warmup times untimed, then repeat times timed. 0 and the
 * seconds' median / min / max in st, or -1 after printing what failed (the C message). */
typedef int (*bench_fn)(void *arg);
typedef struct {
    double median, min, max;
    double *samples;
    int n;
} bench_stats;
int bench_time(bench_env *e, const char *what, bench_fn fn, void *arg, int warmup, int repeat, bench_stats *st);
void bench_stats_free(bench_stats *st);
/* median, min and max of st's n samples; 0, or -1 (none, or out of memory) */
int bench_stats_summarise(bench_stats *st);
/* Records a measurement in the document: name, its seconds, and the rate work / median in unit
 * (e.g. 4096 "tokens/s"; work 0: no rate). Returns the entry (to add keys to). */
cJSON *bench_record(bench_env *e, const char *name, const bench_stats *st, double work, const char *unit);
/* A progress line on stderr (overwritten on a terminal; printed only every few seconds otherwise). */
void bench_progress(bench_env *e, const char *fmt, ...);
/* The memory `cvene plan` states for a B x T forward of the model on this device, into the document
 * ("memory"). 0, or -1 after printing why. */
int bench_plan_memory(bench_env *e, int B, int T);
/* --config parsed into *out (with_weights: and its trained weights, from --weights or the config's
 * folder); 0, or -1 after printing why (nothing in *out) */
int bench_load_config(bench_env *e, int with_weights, cvene_config **out);
/* random token ids in [0, n_token_ids) from the seed */
void bench_random_ids(const bench_env *e, int32_t *ids, size_t n, uint64_t salt);
/* "5,9,5": at most max integers in [lo, hi] (repeats allowed) for option opt; the count, or -1
 * after printing which entry is wrong */
int bench_parse_ints(const char *mode, const char *opt, const char *s, long lo, long hi, int32_t *out, int max);
/* "--ranks 1,2,4" -> counts (at most max); default 1, 2, 4, 8 */
int bench_rank_counts(const bench_env *e, int32_t *out, int max);

int bench_forward(bench_env *e);
int bench_run(bench_env *e);
int bench_kernels(bench_env *e);
int bench_sweep(bench_env *e);
int bench_generate(bench_env *e);
int bench_train(bench_env *e);

int cmd_bench(int argc, char **argv);
#endif
