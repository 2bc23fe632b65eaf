/* cvene plan --model DIR --batch B --seq T [--devices N] [--device cpu|cuda]
 *            [--dtype f32|f16|bf16] [--memory SIZE]
 * Prints, from DIR/config.json alone (no weights are read), the weight,
 * activation and K/V-cache bytes each device needs for one (B, T) forward and
 * whether that fits the device memory. The arithmetic is cvene_plan_memory's. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cvene.h"
#include "bindings/cli/cli.h"

static void plan_usage(FILE *f) {
    fprintf(f,
            "usage: cvene plan --model DIR --batch B --seq T [--devices N] [--device cpu|cuda]\n"
            "                  [--dtype f32|f16|bf16] [--memory SIZE]\n"
            "Memory per device for one forward of B sequences of T tokens, from DIR/config.json alone.\n"
            "  --devices N   split the layers over N devices (pipeline; default 1; cuda only)\n"
            "  --device D    cuda (default) or cpu\n"
            "  --dtype       f32 (default), f16 or bf16: weights and activations in that dtype, as\n"
            "                `cvene run --dtype` holds them (16-bit: plus the f32 copy a site sees)\n"
            "  --memory SIZE memory per device, e.g. 80GiB, 40GB, 1048576 (default: 80GiB, an H100,\n"
            "                for cuda; this machine's physical memory for cpu)\n"
            "Activations are the forward's arena (plus the f32 logits on the last device); the cache\n"
            "is K and V of every layer for B x T tokens in f32, as generation or a sweep keeps them.\n");
}

static int parse_pos_int(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || *end || errno || n < lo || n > hi) {
        fprintf(stderr, "cvene plan: %s must be an integer in [%d, %d], got \"%s\"\n", opt, lo, hi, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* "80GiB", "40GB", "512MiB", "1e9", "123456" -> bytes */
static int parse_size(const char *v, int64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !(x > 0)) return -1;
    double mul = 1;
    if (!strcmp(end, "") || !strcmp(end, "B")) mul = 1;
    else if (!strcmp(end, "KiB")) mul = 1024.0;
    else if (!strcmp(end, "MiB")) mul = 1024.0 * 1024;
    else if (!strcmp(end, "GiB")) mul = 1024.0 * 1024 * 1024;
    else if (!strcmp(end, "TiB")) mul = 1024.0 * 1024 * 1024 * 1024;
    else if (!strcmp(end, "KB") || !strcmp(end, "kB")) mul = 1e3;
    else if (!strcmp(end, "MB")) mul = 1e6;
    else if (!strcmp(end, "GB")) mul = 1e9;
    else if (!strcmp(end, "TB")) mul = 1e12;
    else return -1;
    x *= mul;
    if (x > 9.0e18) return -1;
    *out = (int64_t)x;
    return 0;
}

static const char *human(int64_t b, char *buf, size_t len) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)b;
    int u = 0;
    while (x >= 1024.0 && u < 4) x /= 1024.0, u++;
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", x, unit[u]);
    return buf;
}

int cmd_plan(int argc, char **argv) {
    const char *model_dir = NULL, *device = "cuda", *dtype = "f32", *memory = NULL;
    int B = 0, T = 0, N = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plan_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "cvene plan: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--memory")) memory = v;
        else if (!strcmp(a, "--batch")) {
            if (parse_pos_int(a, v, 1, 1 << 30, &B)) return 2;
        } else if (!strcmp(a, "--seq")) {
            if (parse_pos_int(a, v, 1, 1 << 30, &T)) return 2;
        } else if (!strcmp(a, "--devices")) {
            if (parse_pos_int(a, v, 1, CVENE_PLAN_MAX_DEVICES, &N)) return 2;
        } else {
            fprintf(stderr, "cvene plan: unknown option %s\n", a);
            plan_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!model_dir || !B || !T) {
        fprintf(stderr, "cvene plan: --model, --batch and --seq are required\n");
        plan_usage(stderr);
        return 2;
    }
    cvene_plan_params p = cvene_plan_default_params();
    p.batch = B, p.seq = T, p.n_devices = N;
    if (!strcmp(device, "cuda")) p.device = CVENE_DEVICE_CUDA;
    else if (!strcmp(device, "cpu")) p.device = CVENE_DEVICE_CPU;
    else {
        fprintf(stderr, "cvene plan: --device must be cpu or cuda, got \"%s\"\n", device);
        return 2;
    }
    if (cli_dtype("plan", dtype, &p.weight_dtype)) return 2;
    p.activation_dtype = p.weight_dtype; /* as `cvene run --dtype` holds them */
    const char *mem_note = "given";
    if (memory) {
        if (parse_size(memory, &p.capacity_bytes)) {
            fprintf(stderr, "cvene plan: --memory: expected a size such as 80GiB, 40GB or 1073741824, got \"%s\"\n",
                    memory);
            return 2;
        }
    } else if (p.device == CVENE_DEVICE_CUDA) {
        p.capacity_bytes = (int64_t)80 << 30;
        mem_note = "default: an H100's 80 GiB";
    } else {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        p.capacity_bytes = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
        mem_note = "this machine's physical memory";
    }
    cvene_ctx *ctx = NULL;
    char err[512];
    cvene_ctx_params cp = cvene_ctx_default_params(); /* CPU context: planning needs no GPU */
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        return 1;
    }
    cvene_memory_plan *plan = malloc(sizeof *plan);
    if (!plan) {
        fprintf(stderr, "cvene plan: out of memory\n");
        cvene_ctx_free(ctx);
        return 1;
    }
    if (cvene_plan_memory(ctx, model_dir, &p, plan) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        free(plan);
        cvene_ctx_free(ctx);
        return 1;
    }
    static const char *arch_names[] = {"gpt2", "gpt_neox", "gru"};
    char h1[32], h2[32], h3[32], h4[32];
    printf("model %s: %s, %d layers, hidden %d, %d heads, intermediate %d, vocab %d\n", model_dir,
           (unsigned)plan->arch < 3u ? arch_names[plan->arch] : "?", plan->n_layer, plan->n_embd,
           plan->n_head, plan->n_inner, plan->vocab_size);
    printf("parameters: %lld (%.3f B), weights and activations held as %s\n", (long long)plan->n_params,
           (double)plan->n_params / 1e9, dtype);
    printf("batch %d x %d tokens on %d %s device%s with %s each (%s)\n", B, T, N, device, N == 1 ? "" : "s",
           plan->capacity_bytes ? human(plan->capacity_bytes, h1, sizeof h1) : "unknown memory", mem_note);
    printf("%-6s %-9s %20s %20s %20s %20s  %s\n", "device", "layers", "weights", "activations", "kv cache", "total",
           "fits");
    for (int d = 0; d < plan->n_devices; d++) {
        const cvene_plan_device *dv = &plan->devices[d];
        char layers[24];
        snprintf(layers, sizeof layers, "%d-%d", dv->first_layer, dv->first_layer + dv->n_layers - 1);
        printf("%-6d %-9s %20lld %20lld %20lld %20lld  %s\n", d, layers, (long long)dv->weight_bytes,
               (long long)dv->activation_bytes, (long long)dv->cache_bytes, (long long)dv->total_bytes,
               !plan->capacity_bytes ? "?" : dv->total_bytes <= plan->capacity_bytes ? "yes" : "NO");
        printf("%-6s %-9s %20s %20s %20s %20s\n", "", "", human(dv->weight_bytes, h1, sizeof h1),
               human(dv->activation_bytes, h2, sizeof h2), human(dv->cache_bytes, h3, sizeof h3),
               human(dv->total_bytes, h4, sizeof h4));
    }
    printf("fits: %s\n", plan->fits < 0 ? "unknown (give --memory)" : plan->fits ? "yes" : "no");
    free(plan);
    cvene_ctx_free(ctx);
    return 0;
}
