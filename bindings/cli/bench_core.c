/* cvene bench MODE ...: intervention throughput on the user's own model, config and device.
 * What every mode shares: the option table, the context and model, timing (warm-up, repeats,
 * median and spread), the machine's description and load, the JSON document and the table
 * printed from it. The modes are in bench_modes.c, bench_sweep.c and bench_gen_train.c. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bindings/cli/bench.h"

static const char *const mode_names[BM_N] = {"forward", "run", "sweep", "generate", "train", "kernels"};

#define M(x) (1u << (x))
#define ALL (M(BM_N) - 1u)
#define MODELS (ALL & ~M(BM_KERNELS))
typedef enum { O_STR, O_INT, O_FLAG } opt_kind;
static const struct {
    const char *name;
    opt_kind kind;
    size_t off;
    unsigned modes;
    long lo, hi;
    const char *help;
} opts[] = {
#define S(f) O_STR, offsetof(bench_args, f)
#define I(f) O_INT, offsetof(bench_args, f)
#define F(f) O_FLAG, offsetof(bench_args, f)
    {"--model", S(model), ALL, 0, 0, "DIR: the Hugging Face model directory (kernels: its width C)"},
    {"--device", S(device), ALL, 0, 0, "cpu (default) or cuda"},
    {"--dtype", S(dtype), MODELS, 0, 0, "f32 (default), bf16 or f16 (as `cvene run --dtype`)"},
    {"--threads", I(threads), ALL, 0, 4096, "CPU threads (default: OpenMP's)"},
    {"--warmup", I(warmup), ALL, 0, 1000, "untimed runs before timing (default 1)"},
    {"--repeat", I(repeat), ALL, 1, 100000, "timed runs; the median and the spread are reported (default 5)"},
    {"--json", S(json), ALL, 0, 0, "FILE: also write the results as JSON (schema cvene-bench/1); - for stdout only"},
    {"--seed", I(seed), ALL, 0, INT_MAX, "random token ids and parameters (default 0)"},
    {"--batch", I(batch), M(BM_FORWARD) | M(BM_GENERATE) | M(BM_TRAIN) | M(BM_KERNELS), 1, 1 << 20,
     "B: sequences per forward (forward: 1; generate: copies of the prompt, 1; train: examples per step, 16; "
     "kernels: 8)"},
    {"--seq", I(seq), M(BM_FORWARD) | M(BM_SWEEP) | M(BM_KERNELS), 1, 1 << 20,
     "T: tokens per sequence (forward, kernels: 128 or the model's context; sweep: random prompts of T, 16)"},
    {"--config", S(config), M(BM_RUN) | M(BM_GENERATE) | M(BM_TRAIN), 0, 0, "CONFIG.json: pyvene's IntervenableConfig"},
    {"--inputs", S(inputs), M(BM_RUN), 0, 0, "INPUTS.json: the request, as `cvene run --inputs`"},
    {"--weights", S(weights), M(BM_RUN) | M(BM_GENERATE), 0, 0, "DIR: trained interventions' weights"},
    {"--base", S(base), M(BM_SWEEP), 0, 0, "TEXT: the base prompt (the model's tokenizer)"},
    {"--source", S(source), M(BM_SWEEP), 0, 0, "TEXT: the source prompt"},
    {"--base-ids", S(base_ids), M(BM_SWEEP), 0, 0, "IDS: the base prompt as token ids"},
    {"--source-ids", S(source_ids), M(BM_SWEEP), 0, 0, "IDS: the source prompt as token ids"},
    {"--component", S(component), M(BM_SWEEP), 0, 0, "the swept component (default block_output)"},
    {"--head", I(head), M(BM_SWEEP), 0, 1 << 20, "head_attention_value_output: the head"},
    {"--layers", S(layers), M(BM_SWEEP), 0, 0, "the layers timed (default: --sample-layers spread evenly)"},
    {"--sample-layers", I(sample_layers), M(BM_SWEEP), 1, 1 << 20,
     "layers timed, evenly spaced, to project the others (default 4)"},
    {"--naive-sites", I(naive_sites), M(BM_SWEEP), 0, 1 << 20,
     "sites of the naive per-site loop timed, for the speed-up (default 4; 0: skip)"},
    {"--full", F(full), M(BM_SWEEP), 0, 0, "also time the full sweep (median of up to 3), to check the projection"},
    {"--ranks", S(ranks), M(BM_SWEEP) | M(BM_TRAIN), 0, 0, "N,N,..: rank counts to project for (default 1,2,4,8)"},
    {"--prompt", S(prompt), M(BM_GENERATE), 0, 0, "TEXT: the prompt (default: 16 random tokens)"},
    {"--ids", S(ids), M(BM_GENERATE), 0, 0, "IDS: the prompt as token ids"},
    {"--max-new-tokens", I(max_new_tokens), M(BM_GENERATE), 1, 1 << 20, "tokens generated per run (default 32, or what the context leaves)"},
    {"--intervene-on-prompt", F(intervene_on_prompt), M(BM_GENERATE), 0, 0, "pyvene's generate argument"},
    {"--data", S(data), M(BM_TRAIN), 0, 0, "TRAIN.jsonl, as `cvene train --data`"},
    {"--type", S(type), M(BM_TRAIN), 0, 0, "T: a one-intervention config of this type (as `cvene train --type`)"},
    {"--layer", I(layer), M(BM_TRAIN), 0, 1 << 20, "L: its layer"},
    {"--rank", I(rank), M(BM_TRAIN) | M(BM_KERNELS), 1, 1 << 20, "r: its rank (default 1; kernels: k, 8)"},
    {"--steps", I(steps), M(BM_TRAIN), 1, 1 << 20, "optimizer steps per timed run (default 10)"},
    {"--epochs", I(epochs), M(BM_TRAIN), 1, 1 << 20, "epochs of the projected training run (default 1)"},
#undef S
#undef I
#undef F
};
#define N_OPTS ((int)(sizeof opts / sizeof opts[0]))

static void usage(FILE *f) {
    fprintf(f,
            "usage: cvene bench MODE --model DIR [options]\n"
            "Measures cvene on your model, config and device: warm-up runs, then --repeat timed runs;\n"
            "the median and the spread (min - max) are reported, with the device, the thread count and\n"
            "(on the CPU) the machine's load, which a busy machine makes worse. Modes:\n"
            "  forward   tokens/s of a B x T forward, with all logits, the last position's, and none\n"
            "  run       requests/s of a pyvene config + inputs against the same forwards without\n"
            "            interventions: the overhead in %% and us, and each intervention's own time\n"
            "  sweep     the activation-patching sweep (block_output or --component) of a prompt pair:\n"
            "            sites/s of the fast path on sampled layers, of the naive per-site loop on a\n"
            "            few sites (the speed-up), and the projected time of the full layers x\n"
            "            positions sweep, on this device and split over N ranks (--full: check it)\n"
            "  generate  tokens/s of greedy decoding, with and without --config (steering)\n"
            "  train     optimizer steps/s of a trainable config on a dataset, and the projected time of\n"
            "            an epoch, a run of --epochs, and a DAS grid (one training per layer x position)\n"
            "  kernels   (cuda) GB/s of the fused intervention kernels at B x T x C, against a device\n"
            "            copy of the same bytes\n"
            "Options (each mode reads only its own; others are refused):\n");
    for (int i = 0; i < N_OPTS; i++) {
        char modes[80] = "";
        if (opts[i].modes != ALL)
            for (int m = 0; m < BM_N; m++)
                if (opts[i].modes & M(m))
                    snprintf(modes + strlen(modes), sizeof modes - strlen(modes), "%s%s", modes[0] ? "," : " [",
                             mode_names[m]);
        fprintf(f, "  %-22s %s%s%s\n", opts[i].name, opts[i].help, modes, modes[0] ? "]" : "");
    }
    fprintf(f, "Examples (the shipped demo model):\n"
               "  cvene bench forward --model assets/demo-gpt2 --batch 8 --seq 64\n"
               "  cvene bench sweep --model assets/demo-gpt2 --base \"...\" --source \"...\" --full\n");
}

static int parse_args(bench_mode mode, int argc, char **argv, bench_args *a) {
    memset(a, 0, sizeof *a);
    a->device = "cpu", a->dtype = "f32", a->warmup = 1, a->repeat = 5, a->naive_sites = 4, a->sample_layers = 4;
    a->max_new_tokens = 0, a->steps = 10, a->epochs = 1, a->rank = 0, a->layer = -1;
    for (int i = 0; i < argc; i++) {
        int k = 0;
        while (k < N_OPTS && strcmp(opts[k].name, argv[i])) k++;
        if (k == N_OPTS) {
            fprintf(stderr, "cvene bench %s: unknown option %s (cvene bench --help)\n", mode_names[mode], argv[i]);
            return 2;
        }
        if (!(opts[k].modes & M(mode))) {
            fprintf(stderr, "cvene bench %s: %s is not an option of this mode (it is read by another: cvene bench "
                            "--help)\n", mode_names[mode], argv[i]);
            return 2;
        }
        a->given[k] = 1;
        void *field = (char *)a + opts[k].off;
        if (opts[k].kind == O_FLAG) {
            *(int *)field = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cvene bench %s: option %s needs a value\n", mode_names[mode], argv[i]);
            return 2;
        }
        const char *v = argv[++i];
        if (opts[k].kind == O_STR) {
            *(const char **)field = v;
            continue;
        }
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (end == v || *end || errno || n < opts[k].lo || n > opts[k].hi) {
            fprintf(stderr, "cvene bench %s: %s must be an integer in [%ld, %ld], got \"%s\"\n", mode_names[mode],
                    opts[k].name, opts[k].lo, opts[k].hi, v);
            return 2;
        }
        *(int *)field = (int)n;
    }
    /* what a mode cannot run without, refused before a model is loaded */
    const char *need = !a->model && mode != BM_KERNELS                       ? "--model DIR is required"
                     : mode == BM_RUN && (!a->config || !a->inputs)          ? "--config CONFIG.json and --inputs "
                                                                               "INPUTS.json are required"
                     : mode == BM_TRAIN && (!a->data || !a->config == !a->type) ? "--data and one of --config or "
                                                                               "--type (with --layer) are required"
                     : mode == BM_TRAIN && a->type && a->layer < 0            ? "--type needs --layer"
                     : mode == BM_GENERATE && a->prompt && a->ids             ? "give --prompt or --ids, not both"
                                                                              : NULL;
    if (need) {
        fprintf(stderr, "cvene bench %s: %s\n", mode_names[mode], need);
        return 2;
    }
    return 0;
}

int bench_time(bench_env *e, const char *what, bench_fn fn, void *arg, int warmup, int repeat, bench_stats *st) {
    memset(st, 0, sizeof *st);
    for (int w = 0; w < warmup; w++) {
        bench_progress(e, "%s: warm-up %d/%d", what, w + 1, warmup);
        if (fn(arg)) return -1;
    }
    if (!(st->samples = malloc(sizeof(double) * (size_t)repeat))) {
        fprintf(stderr, "cvene bench: out of memory\n");
        return -1;
    }
    for (int r = 0; r < repeat; r++) {
        bench_progress(e, "%s: run %d/%d", what, r + 1, repeat);
        const double t0 = cli_now();
        if (fn(arg)) {
            bench_stats_free(st);
            return -1;
        }
        st->samples[st->n++] = cli_now() - t0;
    }
    if (bench_stats_summarise(st)) {
        bench_stats_free(st);
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_stats_summarise(bench_stats *st) {
    if (st->n < 1) return -1;
    double *s = malloc(sizeof(double) * (size_t)st->n);
    if (!s) {
        fprintf(stderr, "cvene bench: out of memory\n");
        return -1;
    }
    memcpy(s, st->samples, sizeof(double) * (size_t)st->n);
    qsort(s, (size_t)st->n, sizeof(double), cmp_double);
    const int n = st->n;
    st->min = s[0], st->max = s[n - 1];
    st->median = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return 0;
}

void bench_stats_free(bench_stats *st) {
    free(st->samples);
    memset(st, 0, sizeof *st);
}

cJSON *bench_record(bench_env *e, const char *name, const bench_stats *st, double work, const char *unit) {
    cJSON *m = cJSON_CreateObject(), *sec = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", name);
    cJSON_AddNumberToObject(sec, "median", st->median);
    cJSON_AddNumberToObject(sec, "min", st->min);
    cJSON_AddNumberToObject(sec, "max", st->max);
    cJSON_AddNumberToObject(sec, "spread_pct", st->median > 0 ? 100.0 * (st->max - st->min) / st->median : 0);
    cJSON_AddItemToObject(sec, "samples", st->n ? cJSON_CreateDoubleArray(st->samples, st->n) : cJSON_CreateArray());
    cJSON_AddItemToObject(m, "seconds", sec);
    if (work > 0 && unit) {
        cJSON_AddNumberToObject(m, "work", work);
        cJSON_AddStringToObject(m, "unit", unit);
        cJSON_AddNumberToObject(m, "rate", st->median > 0 ? work / st->median : 0);
    }
    cJSON_AddItemToArray(e->measurements, m);
    return m;
}

void bench_progress(bench_env *e, const char *fmt, ...) {
    static const double every = 5.0; /* seconds between lines when stderr is not a terminal */
    const double now = cli_now();
    if (!e->tty && now - e->t_last < every) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (e->tty) fprintf(stderr, "\r\033[K[%.0fs] %s", now - e->t_start, line);
    else fprintf(stderr, "cvene bench: [%.0fs] %s\n", now - e->t_start, line);
    e->t_last = now;
    fflush(stderr);
}

int bench_plan_memory(bench_env *e, int B, int T) {
    cvene_plan_params p = cvene_plan_default_params();
    p.batch = B, p.seq = T, p.n_devices = 1;
    p.device = e->info.arch == CVENE_ARCH_GRU ? CVENE_DEVICE_CPU : !strcmp(e->a.device, "cuda") ? CVENE_DEVICE_CUDA
                                                                                                   : CVENE_DEVICE_CPU;
    if (cli_dtype("bench", e->a.dtype, &p.weight_dtype)) return -1;
    p.activation_dtype = p.weight_dtype;
    cvene_memory_plan *plan = malloc(sizeof *plan);
    if (!plan) return -1;
    cJSON *mem = cJSON_AddObjectToObject(e->doc, "memory");
    if (cvene_plan_memory(e->ctx, e->a.model, &p, plan) != CVENE_OK) {
        /* a GRU has no plan: say so rather than fail the benchmark */
        cJSON_AddStringToObject(mem, "unavailable", cvene_ctx_error(e->ctx));
        free(plan);
        return 0;
    }
    cJSON_AddNumberToObject(mem, "batch", B);
    cJSON_AddNumberToObject(mem, "seq", T);
    cJSON_AddNumberToObject(mem, "weight_bytes", (double)plan->devices[0].weight_bytes);
    cJSON_AddNumberToObject(mem, "activation_bytes", (double)plan->devices[0].activation_bytes);
    cJSON_AddNumberToObject(mem, "cache_bytes", (double)plan->devices[0].cache_bytes);
    cJSON_AddNumberToObject(mem, "total_bytes", (double)plan->devices[0].total_bytes);
    free(plan);
    return 0;
}

int bench_load_config(bench_env *e, int with_weights, cvene_config **out) {
    char err[1024];
    char *text = cli_read_file(e->a.config, err, sizeof err);
    if (!text) {
        fprintf(stderr, "cvene bench %s: %s\n", mode_names[e->mode], err);
        return -1;
    }
    const cvene_status st = cvene_config_parse(e->ctx, text, out);
    free(text);
    if (st != CVENE_OK) {
        fprintf(stderr, "cvene bench %s: --config %s: %s\n", mode_names[e->mode], e->a.config, cvene_ctx_error(e->ctx));
        return -1;
    }
    if (with_weights && cli_load_weights(e->ctx, *out, e->a.config, e->a.weights)) {
        cvene_config_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

void bench_random_ids(const bench_env *e, int32_t *ids, size_t n, uint64_t salt) {
    uint64_t x = 0x9E3779B97F4A7C15ull * ((uint64_t)e->a.seed + 1) ^ salt;
    const uint64_t V = (uint64_t)(e->info.n_token_ids > 0 ? e->info.n_token_ids : 1);
    for (size_t i = 0; i < n; i++) { /* splitmix64 */
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        ids[i] = (int32_t)((z ^ (z >> 31)) % V);
    }
}

int bench_parse_ints(const char *mode, const char *opt, const char *s, long lo, long hi, int32_t *out, int max) {
    int n = 0;
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',')) {
            fprintf(stderr, "cvene bench %s: %s must be comma-separated integers, got \"%s\"\n", mode, opt, s);
            return -1;
        }
        if (v < lo || v > hi) {
            fprintf(stderr, "cvene bench %s: %s entry %d is %ld, outside [%ld, %ld]\n", mode, opt, n, v, lo, hi);
            return -1;
        }
        if (n == max) {
            fprintf(stderr, "cvene bench %s: %s has more than %d entries\n", mode, opt, max);
            return -1;
        }
        out[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) fprintf(stderr, "cvene bench %s: %s is empty\n", mode, opt);
    return n ? n : -1;
}

int bench_rank_counts(const bench_env *e, int32_t *out, int max) {
    if (!e->a.ranks) {
        static const int def[] = {1, 2, 4, 8};
        for (int i = 0; i < 4 && i < max; i++) out[i] = def[i];
        return max < 4 ? max : 4;
    }
    return bench_parse_ints(mode_names[e->mode], "--ranks", e->a.ranks, 1, 1 << 20, out, max);
}

/* the load average (1, 5, 15 min) or -1s */
static void load_avg(double l[3]) {
    l[0] = l[1] = l[2] = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return;
    if (fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3) l[0] = l[1] = l[2] = -1;
    fclose(f);
}

static void describe(bench_env *e) {
    cJSON *d = e->doc;
    cJSON_AddStringToObject(d, "schema", "cvene-bench/1");
    cJSON_AddStringToObject(d, "mode", mode_names[e->mode]);
    cJSON *dev = cJSON_AddObjectToObject(d, "device");
    cJSON_AddStringToObject(dev, "kind", e->a.device);
    cJSON_AddStringToObject(dev, "name", cvene_ctx_device_name(e->ctx));
    cJSON_AddStringToObject(dev, "dtype", e->a.dtype);
    cJSON_AddNumberToObject(dev, "threads", cvene_ctx_threads(e->ctx));
    cJSON *mc = cJSON_AddObjectToObject(d, "machine");
    cJSON_AddNumberToObject(mc, "cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    double l[3];
    load_avg(l);
    cJSON_AddItemToObject(mc, "load_avg_before", cJSON_CreateDoubleArray(l, 3));
    cJSON *t = cJSON_AddObjectToObject(d, "timing");
    cJSON_AddNumberToObject(t, "warmup", e->a.warmup);
    cJSON_AddNumberToObject(t, "repeat", e->a.repeat);
    if (e->m) {
        static const char *arch[] = {"gpt2", "gpt_neox", "gru"};
        cJSON *mo = cJSON_AddObjectToObject(d, "model");
        cJSON_AddStringToObject(mo, "dir", e->a.model);
        cJSON_AddStringToObject(mo, "arch", (unsigned)e->info.arch < 3u ? arch[e->info.arch] : "?");
        cJSON_AddNumberToObject(mo, "n_layer", e->info.n_layer);
        cJSON_AddNumberToObject(mo, "n_embd", e->info.n_embd);
        cJSON_AddNumberToObject(mo, "n_head", e->info.n_head);
        cJSON_AddNumberToObject(mo, "vocab_size", e->info.vocab_size);
        cJSON_AddNumberToObject(mo, "n_params", (double)e->info.n_params);
    }
    e->measurements = cJSON_AddArrayToObject(d, "measurements");
    e->derived = cJSON_AddObjectToObject(d, "derived");
    e->projection = cJSON_AddObjectToObject(d, "projection");
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void print_value(const cJSON *v) {
    if (cJSON_IsNumber(v)) printf("%.6g", v->valuedouble);
    else if (cJSON_IsString(v)) printf("%s", v->valuestring);
    else if (cJSON_IsArray(v) && cJSON_IsObject(v->child)) { /* one line per entry: key value, ... */
        const cJSON *o, *f;
        cJSON_ArrayForEach(o, v) {
            printf("\n    ");
            cJSON_ArrayForEach(f, o) {
                printf("%s%s ", f == o->child ? "" : ", ", f->string);
                print_value(f);
            }
        }
    }
    else {
        char *s = cJSON_PrintUnformatted(v);
        printf("%s", s ? s : "?");
        free(s);
    }
}

/* the human table, from the document */
static void print_table(const bench_env *e) {
    const cJSON *d = e->doc, *dev = cJSON_GetObjectItemCaseSensitive(d, "device");
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(d, "machine");
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(mc, "load_avg_before");
    printf("cvene bench %s", mode_names[e->mode]);
    if (e->m)
        printf(" - %s (%d layers, n_embd %d, %.1fM parameters)", e->a.model, e->info.n_layer, e->info.n_embd,
               (double)e->info.n_params / 1e6);
    printf("\ndevice %s: %s, %s", e->a.device, cvene_ctx_device_name(e->ctx), e->a.dtype);
    if (cvene_ctx_threads(e->ctx)) printf(", %d threads", cvene_ctx_threads(e->ctx));
    printf("; %g CPUs, load average %.2f before, %.2f after", num(mc, "cpus"),
           cJSON_GetArrayItem(la, 0) ? cJSON_GetArrayItem(la, 0)->valuedouble : -1,
           cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(mc, "load_avg_after"), 0)
               ? cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(mc, "load_avg_after"), 0)->valuedouble
               : -1);
    printf("\n%d warm-up, %d timed run%s each: median (min - max)\n", e->a.warmup, e->a.repeat,
           e->a.repeat == 1 ? "" : "s");
    (void)dev;
    const cJSON *m;
    cJSON_ArrayForEach(m, e->measurements) {
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(m, "seconds");
        const cJSON *unit = cJSON_GetObjectItemCaseSensitive(m, "unit");
        printf("  %-46s %10.3f ms (%.3f - %.3f)", cJSON_GetObjectItemCaseSensitive(m, "name")->valuestring,
               1e3 * num(sec, "median"), 1e3 * num(sec, "min"), 1e3 * num(sec, "max"));
        if (cJSON_IsString(unit)) printf("  %12.4g %s", num(m, "rate"), unit->valuestring);
        if (cJSON_GetObjectItemCaseSensitive(m, "pct_of_copy")) printf("  (%.1f%% of a copy's speed)", num(m, "pct_of_copy"));
        printf("\n");
    }
    const cJSON *groups[2] = {e->derived, e->projection};
    const char *titles[2] = {"derived", "projection"};
    for (int g = 0; g < 2; g++) {
        if (!groups[g]->child) continue;
        printf("%s:\n", titles[g]);
        const cJSON *v;
        cJSON_ArrayForEach(v, groups[g]) {
            printf("  %-46s ", v->string);
            print_value(v);
            printf("\n");
        }
    }
    const cJSON *mem = cJSON_GetObjectItemCaseSensitive(d, "memory");
    if (mem && cJSON_GetObjectItemCaseSensitive(mem, "total_bytes"))
        printf("memory (cvene plan, B %g x T %g): weights %.1f MiB, activations %.1f MiB, cache %.1f MiB, total %.1f "
               "MiB\n", num(mem, "batch"), num(mem, "seq"), num(mem, "weight_bytes") / 1048576.0,
               num(mem, "activation_bytes") / 1048576.0, num(mem, "cache_bytes") / 1048576.0,
               num(mem, "total_bytes") / 1048576.0);
}

int cmd_bench(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    int mode = 0;
    while (mode < BM_N && strcmp(mode_names[mode], argv[0])) mode++;
    if (mode == BM_N) {
        fprintf(stderr, "cvene bench: unknown mode \"%s\": forward, run, sweep, generate, train or kernels\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    bench_env e;
    memset(&e, 0, sizeof e);
    e.mode = (bench_mode)mode;
    if (parse_args(e.mode, argc - 1, argv + 1, &e.a)) return 2;
    cvene_ctx_params cp;
    char cmd[32];
    snprintf(cmd, sizeof cmd, "bench %s", mode_names[mode]);
    if (cli_ctx_params(cmd, e.a.device, e.a.dtype, e.a.threads, &cp)) return 2;
    if (e.mode == BM_KERNELS && strcmp(e.a.device, "cuda")) {
        fprintf(stderr, "cvene bench kernels: the fused intervention kernels are the CUDA backend's; this mode needs "
                        "--device cuda (got --device %s)\n", e.a.device);
        return 2;
    }
    char err[512];
    if (cvene_ctx_new(&cp, &e.ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene bench %s: %s\n", mode_names[mode], err);
        return 1;
    }
    int rc = 1;
    if (e.a.model) {
        if (cvene_model_load(e.ctx, e.a.model, &e.m) != CVENE_OK) {
            fprintf(stderr, "cvene bench %s: %s\n", mode_names[mode], cvene_ctx_error(e.ctx));
            goto done;
        }
        e.info = cvene_model_get_info(e.m);
    }
    e.tty = isatty(2);
    e.t_start = e.t_last = cli_now();
    e.doc = cJSON_CreateObject();
    if (!e.doc) goto done;
    describe(&e);
    static int (*const run[BM_N])(bench_env *) = {bench_forward, bench_run,   bench_sweep,
                                                  bench_generate, bench_train, bench_kernels};
    rc = run[mode](&e);
    rc = rc == 2 ? 2 : rc ? 1 : 0; /* 2: the options are wrong; 1: the run failed */
    if (e.tty) fprintf(stderr, "\r\033[K");
    if (rc) goto done;
    double l[3];
    load_avg(l);
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(e.doc, "machine"), "load_avg_after",
                          cJSON_CreateDoubleArray(l, 3));
    if (!e.a.json || strcmp(e.a.json, "-")) print_table(&e);
    if (e.a.json) {
        char *text = cJSON_Print(e.doc);
        FILE *f = !text ? NULL : strcmp(e.a.json, "-") ? fopen(e.a.json, "w") : stdout;
        int ok = f && fprintf(f, "%s\n", text) >= 0;
        if (f && f != stdout && fclose(f) != 0) ok = 0;
        if (!ok) {
            fprintf(stderr, "cvene bench: --json %s: cannot write: %s\n", e.a.json, strerror(errno));
            if (f && f != stdout) remove(e.a.json);
            rc = 1;
        }
        free(text);
    }
done:
    cJSON_Delete(e.doc);
    cvene_model_free(e.m);
    cvene_ctx_free(e.ctx);
    return rc;
}
