/* cvene command-line interface.
 *   cvene run ...     (bindings/cli/cmd_run.c)
 *   cvene predict --model DIR --ids 1,2,3[;4,5,6] [--top K] [--threads N] [--device cpu|cuda] [--dtype T]
 * Loads a Hugging Face model directory and prints the top-K next-token
 * predictions after the last token of each sequence. Sequences separated by ';'
 * may have different lengths: they are right-padded with an attention mask. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "kernels/tensor.h"


static void usage(FILE *f) {
    fprintf(f,
            "usage: cvene predict --model DIR --ids IDS [--mask M] [--position-ids P] [--top K] [--threads N]\n"
            "                     [--device cpu|cuda] [--dtype T] [--micro-batch M]\n"
            "       cvene run --model DIR --config CONFIG.json --inputs INPUTS.json [--out OUT.safetensors]\n"
            "       cvene plan --model DIR --batch B --seq T [--devices N]  (memory per device; cvene plan --help)\n"
            "       cvene sweep --model DIR --base TEXT --source TEXT --out PREFIX [...]  (cvene sweep --help)\n"
            "       cvene train --model DIR --data TRAIN.jsonl --out DIR --type T --layer L [...]  (cvene train --help)\n"
            "       cvene probe --model DIR --data PROBE.jsonl [--layers L] [--out DIR] [...]  (cvene probe --help)\n"
            "       cvene generate --model DIR --prompt TEXT [--config CONFIG.json] [...]  (cvene generate --help)\n"
            "       cvene bench forward|run|sweep|generate|train|kernels --model DIR [...]  (cvene bench --help)\n"
            "  IDS   comma-separated token ids; separate sequences with ';' (e.g. \"464,3290;464\"); shorter\n"
            "        sequences are right-padded and masked\n"
            "  --mask M          attention mask in the same layout (1 = token, 0 = padding), e.g. for a\n"
            "                    left-padded batch \"0,1,1;1,1,1\"; predictions are read at each row's last 1\n"
            "  --position-ids P  position ids in the same layout (transformers' position_ids; default\n"
            "                    0..T-1), e.g. \"0,0,1;0,1,2\" for that left-padded batch\n"
            "  --top K       predictions to print per sequence (default 5)\n"
            "  --micro-batch M  on ranks (mpirun -np N cvene predict ...): the model's layers in N stages, one per\n"
            "                rank (as cvene plan --devices N splits them), the sequences M at a time through the\n"
            "                pipeline (default: all at once; sequences of one length, no --mask / --position-ids)\n"
            "  --threads N   CPU threads (default: OpenMP default)\n" CLI_CTX_HELP);
}

typedef struct {
    int32_t *ids, *mask, *pos;
    int *len;
    int B, T;
} batch;

static void batch_free(batch *b) {
    free(b->ids);
    free(b->mask);
    free(b->pos);
    free(b->len);
}

/* Parse "1,2,3;4,5" into a right-padded batch. Returns 0 on success. */
static int parse_ids(const char *s, batch *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int B = 1, total = 0;
    for (const char *p = s; *p; p++) B += *p == ';';
    int *len = calloc((size_t)B, sizeof(int));
    int32_t *flat = calloc(strlen(s) + 1, sizeof(int32_t));
    if (!len || !flat) {
        free(len);
        free(flat);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int b = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            snprintf(err, errlen, "--ids: expected a non-negative token id at \"%.20s\"", p);
            free(len);
            free(flat);
            return -1;
        }
        flat[total++] = (int32_t)v;
        len[b]++;
        p = end;
        if (*p == ',') p++;
        else if (*p == ';') { p++; b++; }
        else if (*p) {
            snprintf(err, errlen, "--ids: unexpected character '%c'", *p);
            free(len);
            free(flat);
            return -1;
        }
    }
    int T = 0;
    for (int i = 0; i < B; i++) {
        if (len[i] == 0) {
            snprintf(err, errlen, "--ids: sequence %d is empty", i);
            free(len);
            free(flat);
            return -1;
        }
        if (len[i] > T) T = len[i];
    }
    out->ids = calloc((size_t)B * T, sizeof(int32_t));
    out->mask = calloc((size_t)B * T, sizeof(int32_t));
    if (!out->ids || !out->mask) {
        free(out->ids);
        free(out->mask);
        free(len);
        free(flat);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0, k = 0; i < B; i++)
        for (int t = 0; t < len[i]; t++, k++) {
            out->ids[(size_t)i * T + t] = flat[k];
            out->mask[(size_t)i * T + t] = 1;
        }
    free(flat);
    out->len = len;
    out->B = B;
    out->T = T;
    return 0;
}

/* --mask / --position-ids: a table laid out exactly as --ids (same rows, same lengths) into
 * *out (B, T), rows right-padded with pad; values must be in [lo, hi]. */
static int parse_like(const char *opt, const char *s, const batch *ids, long lo, long hi, int32_t pad,
                      int32_t **out, char *err, size_t errlen) {
    batch t;
    if (parse_ids(s, &t, err, errlen) != 0) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %.400s", opt, tmp + (strncmp(tmp, "--ids: ", 7) ? 0 : 7));
        return -1;
    }
    int bad = t.B != ids->B;
    for (int b = 0; !bad && b < t.B; b++) bad = t.len[b] != ids->len[b];
    if (bad) {
        snprintf(err, errlen, "%s must have the layout of --ids: %d sequence(s) of the same lengths", opt, ids->B);
        batch_free(&t);
        return -1;
    }
    for (int b = 0; b < t.B; b++)
        for (int q = 0; q < t.T; q++) {
            int32_t *v = &t.ids[(size_t)b * t.T + q];
            if (q >= t.len[b]) *v = pad;
            else if (*v < lo || *v > hi) {
                snprintf(err, errlen, "%s: sequence %d, entry %d is %d; must be in [%ld, %ld]", opt, b, q, *v, lo, hi);
                batch_free(&t);
                return -1;
            }
        }
    *out = t.ids;
    t.ids = NULL;
    batch_free(&t);
    return 0;
}

int cmd_predict(int argc, char **argv) {
    const char *model_dir = NULL, *ids_arg = NULL, *device = "cpu", *dtype = "f32", *mask_arg = NULL, *pos_arg = NULL;
    int top = 5, threads = 0, micro = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "cvene: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--ids")) ids_arg = v;
        else if (!strcmp(a, "--mask")) mask_arg = v;
        else if (!strcmp(a, "--position-ids")) pos_arg = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--top") || !strcmp(a, "--threads") || !strcmp(a, "--micro-batch")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < (strcmp(a, "--threads") ? 1 : 0) || n > 100000) {
                fprintf(stderr, "cvene: %s must be a small %s integer, got \"%s\"\n", a,
                        strcmp(a, "--threads") ? "positive" : "non-negative", v);
                return 2;
            }
            if (!strcmp(a, "--top")) top = (int)n;
            else if (!strcmp(a, "--micro-batch")) micro = (int)n;
            else threads = (int)n;
        } else {
            fprintf(stderr, "cvene: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!model_dir || !ids_arg) {
        fprintf(stderr, "cvene predict: --model and --ids are required\n");
        usage(stderr);
        return 2;
    }
    cvene_ctx_params cp;
    if (cli_ctx_params("predict", device, dtype, threads, &cp)) return 2;
    batch bt;
    char err[512];
    if (parse_ids(ids_arg, &bt, err, sizeof err) != 0) {
        fprintf(stderr, "cvene: %s\n", err);
        return 2;
    }
    int32_t *user_mask = NULL;
    if ((mask_arg && parse_like("--mask", mask_arg, &bt, 0, 1, 0, &user_mask, err, sizeof err) != 0) ||
        (pos_arg && parse_like("--position-ids", pos_arg, &bt, 0, INT32_MAX, 0, &bt.pos, err, sizeof err) != 0)) {
        fprintf(stderr, "cvene: %s\n", err);
        free(user_mask);
        batch_free(&bt);
        return 2;
    }
    if (user_mask) { /* predictions at each row's last real token */
        free(bt.mask);
        bt.mask = user_mask;
        for (int b = 0; b < bt.B; b++) {
            int last = -1;
            for (int t = 0; t < bt.T; t++)
                if (bt.mask[(size_t)b * bt.T + t]) last = t;
            if (last < 0) {
                fprintf(stderr, "cvene: --mask: sequence %d has no token (all zeros)\n", b);
                batch_free(&bt);
                return 2;
            }
            bt.len[b] = last + 1;
        }
    }
    const int staged = cvene_comm_launched_size() > 1;
    for (int b = 0; staged && b < bt.B; b++)
        if (user_mask || bt.pos || bt.len[b] != bt.T) {
            fprintf(stderr, "cvene predict: on ranks the model runs in stages, which take sequences of one length "
                            "without --mask or --position-ids so far (sequence %d has %d of %d tokens)\n", b,
                    bt.len[b], bt.T);
            batch_free(&bt);
            return 2;
        }
    if (micro > bt.B) micro = bt.B;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_comm *comm = NULL;
    float *logits = NULL;
    int rc = 1, rank0 = 1;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        goto done;
    }
    double t0 = cli_now();
    if (cvene_model_load(ctx, model_dir, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    double t1 = cli_now();
    cvene_model_info info = cvene_model_get_info(m);
    if (staged) {
        if (cli_ranks_open("predict", ctx, &comm) != 0) goto done;
        rank0 = cvene_comm_rank(comm) == 0;
    }
    const double t_fwd = cli_now(); /* after MPI's start */
    if (rank0)
        printf("model %s: %d layers, %d heads, n_embd %d, vocab %d, %.1fM parameters (loaded in %.2fs)\n",
           model_dir, info.n_layer, info.n_head, info.n_embd, info.vocab_size,
           (double)info.n_params / 1e6, t1 - t0);
    if (top > info.vocab_size) top = info.vocab_size;
    logits = malloc(sizeof(float) * (size_t)bt.B * bt.T * info.vocab_size);
    if (!logits) {
        fprintf(stderr, "cvene: out of memory for logits\n");
        goto done;
    }
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.attention_mask = bt.mask;
    o.position_ids = bt.pos;
    o.logits = logits;
    cvene_stage_opts so; /* in stages only the last position's logits (what predict reads) cross to rank 0 */
    memset(&so, 0, sizeof so);
    so.logits_to_keep = 1;
    if (staged ? cvene_forward_stages(comm, m, bt.ids, bt.B, bt.T, micro ? micro : bt.B, &so, logits) != CVENE_OK
               : cvene_forward(m, bt.ids, bt.B, bt.T, &o) != CVENE_OK) {
        fprintf(stderr, "cvene predict%s: %s\n", staged ? " (a stage)" : "", cvene_ctx_error(ctx));
        if (staged) cvene_comm_abort(comm, 1); /* the other stages would wait for this one */
        goto done;
    }
    double t2 = cli_now();
    if (!rank0) { /* rank 0 prints */
        rc = 0;
        goto done;
    }
    if (staged) {
        int first, count;
        cvene_stage_layers(info.n_layer, cvene_comm_size(comm), 0, &first, &count);
        printf("layers in %d stages on %d ranks (stage 0: layers %d-%d), %d sequence%s per micro-batch\n",
               cvene_comm_size(comm), cvene_comm_size(comm), first, first + count - 1, micro ? micro : bt.B,
               (micro ? micro : bt.B) == 1 ? "" : "s");
    }
    printf("forward: batch %d x %d tokens in %.1f ms\n", bt.B, bt.T, 1e3 * (t2 - t_fwd));
    for (int b = 0; b < bt.B; b++) {
        const float *row = logits + (staged ? (size_t)b : (size_t)b * bt.T + (size_t)(bt.len[b] - 1)) * info.vocab_size;
        if (cvene_first_nonfinite(row, (size_t)info.vocab_size) >= 0) {
            fprintf(stderr, "cvene: the logits of sequence %d at position %d are not finite (NaN or infinity): the "
                            "model's weights or inputs overflow\n", b, bt.len[b] - 1);
            goto done;
        }
        double mx = -INFINITY, z = 0.0;
        for (int v = 0; v < info.vocab_size; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < info.vocab_size; v++) z += exp(row[v] - mx);
        int real = 0;
        for (int t = 0; t < bt.len[b]; t++) real += bt.mask[(size_t)b * bt.T + t] != 0;
        printf("sequence %d (%d tokens): top %d next tokens\n", b, real, top);
        /* partial selection: top is small */
        int *best = malloc(sizeof(int) * (size_t)top);
        if (!best) goto done;
        for (int k = 0; k < top; k++) {
            int arg = -1;
            for (int v = 0; v < info.vocab_size; v++) {
                int taken = 0;
                for (int j = 0; j < k && !taken; j++) taken = best[j] == v;
                if (!taken && (arg < 0 || row[v] > row[arg])) arg = v;
            }
            best[k] = arg;
            printf("  %2d. id %6d  logit %9.4f  p %.4f\n", k + 1, arg, row[arg], exp(row[arg] - mx) / z);
        }
        free(best);
    }
    rc = 0;
done:
    free(logits);
    cvene_comm_free(comm);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    batch_free(&bt);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* on ranks (mpirun -np N): the commands that split their work; the others would run N copies
     * writing the same files */
    if (cvene_comm_launched_size() > 1 && strcmp(argv[1], "sweep") != 0 && strcmp(argv[1], "train") != 0 &&
        strcmp(argv[1], "probe") != 0 && strcmp(argv[1], "predict") != 0) {
        fprintf(stderr, "cvene %s: started as %d ranks, but only `cvene sweep`, `cvene probe`, `cvene train` and "
                        "`cvene predict` (a layer split) split their work among ranks so far; run `cvene %s` as one "
                        "process\n", argv[1], cvene_comm_launched_size(), argv[1]);
        return 2;
    }
    if (!strcmp(argv[1], "predict")) return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(argv[1], "plan")) return cmd_plan(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sweep")) return cmd_sweep(argc - 2, argv + 2);
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "probe")) return cmd_probe(argc - 2, argv + 2);
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "cvene: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
