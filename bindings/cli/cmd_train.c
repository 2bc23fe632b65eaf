/* cvene train: train interventions (DAS rotations, masks, LoReFT) on a JSONL dataset with the
 * model frozen, report the loss as it goes and the interchange-intervention accuracy (IIA) on
 * a held-out split, and write the trained interventions as pyvene's config plus safetensors. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bindings/cli/cli.h"
#include "bindings/cli/train_grid.h"
#include "cvene.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cvene train --model DIR --data TRAIN.jsonl --out DIR\n"
            "                   (--config CONFIG.json | --type T --layer L [--component C] [--rank R])\n"
            "                   [--eval EVAL.jsonl | --eval-fraction 0.2] [--epochs 1] [--steps N] [--batch 16]\n"
            "                   [--lr 1e-3] [--warmup 0.1] [--optimizer adam|adamw] [--weight-decay 0]\n"
            "                   [--grad-accum 1] [--seed 0] [--no-shuffle] [--temperature 50:0.1]\n"
            "                   [--boundary-loss 1.0] [--init WEIGHTS.safetensors] [--threads N] [--device cpu|cuda]\n"
            "                   [--shards S]\n"
            "       cvene train ... --type T --grid-positions P1,P2 [--layers 0-7] [--beside PROBE_DIR/results.json]\n"
            "Trains the interventions of CONFIG.json (pyvene's IntervenableConfig; every representation a\n"
            "trainable type) on the model, frozen (docs/training.md): DAS rotations, masks, LoReFT and its\n"
            "variants, autoencoders. --type/--layer/--component/--rank make a one-intervention config instead;\n"
            "--type is the class name without \"Intervention\":\n"
            "  RotatedSpace (--rank: the interchange dims), LowRankRotatedSpace (--rank r), BoundlessRotatedSpace,\n"
            "  SigmoidMaskRotatedSpace, SigmoidMask, Loreft / Noreft / Consreft / Lobireft / Direft / Nodireft\n"
            "  (pyreft's; --rank r; no source), Autoencoder / JumpReLUAutoencoder (--rank: the latent width;\n"
            "  e.g. an SAE given by --init), PCARotatedSpace (its basis frozen: fitted to the training\n"
            "  examples' base activations at the site, or given by --init).\n"
            "TRAIN.jsonl, one example per line:\n"
            "  {\"base\": \"Today, Judge Triklol's favourite colour is\", \"source\": \"...\",\n"
            "   \"base_pos\": \"last\", \"source_pos\": \"last\", \"label\": \" red\"}\n"
            "  base/source: text (the model directory's tokenizer) or token ids; *_pos: a position, a list\n"
            "  of positions, or \"last\" (negative positions count from the end); label: the token the\n"
            "  intervened model should predict at label_pos (default: the last base token).\n"
            "The loss is the cross-entropy of the label at label_pos, averaged over the batch; Adam (or\n"
            "AdamW) with a linear warm-up over --warmup of the steps, then linear decay (pyvene's tutorials).\n"
            "--temperature S:E anneals the Boundless / sigmoid-mask temperature from S to E over training;\n"
            "--boundary-loss adds that times the Boundless boundaries to the loss (the tutorial's 1.0).\n"
            "Writes OUT/config.json and OUT/intkey_<key>.safetensors (pyvene's state-dict names;\n"
            "tools/convert_pyvene_weights.py turns them into pyvene's intkey_<key>.bin and back).\n"
            "--init loads initial parameters (pyvene's names) into the first intervention.\n"
            "On ranks (mpirun -np N cvene train ..., docs/ranks.md): data parallel - every batch cut into\n"
            "--shards parts (default: one per rank), each rank computing its run of them, the gradients added\n"
            "in part order on every rank; the same --shards gives the same weights, bit for bit, on any number\n"
            "of ranks and in one process. Rank 0 prints and writes.\n"
            "--grid-positions P1,P2,... (with --type, instead of --layer): the DAS grid - one intervention\n"
            "trained per (layer, position) cell (--layers, default every layer; positions negative from the\n"
            "end replace every example's base_pos and source_pos), each exactly `--layer l` on the data at\n"
            "that position; writes OUT/grid.json (IIA per cell), OUT/grid.svg (beside a `cvene probe\n"
            "--positions` grid's accuracy with --beside) and OUT/L<layer>_P<position>/ per cell.\n"
            "Example (the demo model; held-out IIA 0 -> ~0.6):\n"
            "  cvene train --model assets/demo-gpt2 --data assets/demo-gpt2/das_colour/train.jsonl \\\n"
            "    --eval assets/demo-gpt2/das_colour/eval.jsonl --type LowRankRotatedSpace --layer 2 --rank 8 \\\n"
            "    --epochs 5 --lr 1e-2 --out das_out\n"
            CLI_CTX_HELP);
}

typedef struct {
    double t0;
    int tty;
    double sum;   /* of the losses since the last line */
    int64_t n;
} train_progress;

/* A line per tenth of the run (the mean loss of its steps: one batch's loss is noisy); on a
 * terminal, one line kept up to date. */
static int show(void *user, int64_t step, int64_t total, double loss, double lr) {
    train_progress *p = user;
    const double el = cli_now() - p->t0, rate = el > 0 ? step / el : 0, eta = rate > 0 ? (total - step) / rate : 0;
    const int64_t every = total > 10 ? total / 10 : 1;
    p->sum += loss, p->n++;
    if (p->tty)
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %.2f steps/s  ETA %.0fs   ", (long long)step,
                (long long)total, loss, lr, rate, eta);
    if (step % every == 0 || step == total) {
        fprintf(stderr, "%sstep %lld/%lld  mean loss %.4f over %lld steps  lr %.2e  %.1f steps/s\n", p->tty ? "\r" : "",
                (long long)step, (long long)total, p->sum / (double)p->n, (long long)p->n, lr, rate);
        p->sum = 0, p->n = 0;
    }
    fflush(stderr);
    return 0;
}

/* "50:0.1" */
static int parse_range(const char *s, double *a, double *b) {
    char *end;
    *a = strtod(s, &end);
    if (end == s || *end != ':') return -1;
    const char *q = end + 1;
    *b = strtod(q, &end);
    return end == q || *end || !isfinite(*a) || !isfinite(*b) || *a <= 0 || *b <= 0 ? -1 : 0;
}

int cmd_train(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL, *config = NULL, *eval = NULL, *type = NULL, *init = NULL;
    const char *component = "block_output", *device = "cpu", *optimizer = "adam", *temperature = NULL;
    const char *grid = NULL, *grid_layers = NULL, *beside = NULL;
    int layer = -1, rank = 0, threads = 0;
    double eval_fraction = 0.2;
    cvene_train_params tp = cvene_train_default_params();
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(k, "--no-shuffle")) {
            tp.shuffle = 0;
            continue;
        }
        if (!v) {
            fprintf(stderr, "cvene train: option %s needs a value\n", k);
            return 2;
        }
        i++;
        const char **sv = !strcmp(k, "--model") ? &model : !strcmp(k, "--data") ? &data : !strcmp(k, "--out") ? &out
                        : !strcmp(k, "--config") ? &config : !strcmp(k, "--eval") ? &eval : !strcmp(k, "--type") ? &type
                        : !strcmp(k, "--component") ? &component : !strcmp(k, "--device") ? &device
                        : !strcmp(k, "--optimizer") ? &optimizer : !strcmp(k, "--temperature") ? &temperature
                        : !strcmp(k, "--init") ? &init : !strcmp(k, "--grid-positions") ? &grid
                        : !strcmp(k, "--layers") ? &grid_layers : !strcmp(k, "--beside") ? &beside : NULL;
        if (sv) {
            *sv = v;
            continue;
        }
        char *end;
        errno = 0;
        const double x = strtod(v, &end);
        if (*end || errno || !isfinite(x)) {
            fprintf(stderr, "cvene train: %s expects a number, got \"%s\"\n", k, v);
            return 2;
        }
        static const struct { const char *opt; double lo, hi; } ranges[] = {
            {"--layer", 0, 1023}, {"--rank", 1, 1 << 20}, {"--threads", 0, 1024}, {"--epochs", 1, 1e6},
            {"--steps", 0, 1e12}, {"--batch", 1, 65536}, {"--grad-accum", 1, 65536}, {"--seed", 0, 1.8e19},
            {"--lr", 0, 1e3}, {"--warmup", 0, 1}, {"--weight-decay", 0, 1e3}, {"--eval-fraction", 0, 0.99},
            {"--boundary-loss", -1e6, 1e6}, {"--shards", 0, 65536}};
        size_t q = 0;
        while (q < sizeof ranges / sizeof *ranges && strcmp(ranges[q].opt, k)) q++;
        if (q == sizeof ranges / sizeof *ranges) {
            fprintf(stderr, "cvene train: unknown option %s (see cvene train --help)\n", k);
            return 2;
        }
        const int integer = strcmp(k, "--lr") && strcmp(k, "--warmup") && strcmp(k, "--weight-decay") &&
                            strcmp(k, "--eval-fraction") && strcmp(k, "--boundary-loss");
        if (x < ranges[q].lo || x > ranges[q].hi || (integer && floor(x) != x)) {
            fprintf(stderr, "cvene train: %s %s must be %s in [%g, %g]\n", k, v, integer ? "an integer" : "a number",
                    ranges[q].lo, ranges[q].hi);
            return 2;
        }
        if (!strcmp(k, "--layer")) layer = (int)x;
        else if (!strcmp(k, "--rank")) rank = (int)x;
        else if (!strcmp(k, "--threads")) threads = (int)x;
        else if (!strcmp(k, "--epochs")) tp.epochs = (int)x;
        else if (!strcmp(k, "--steps")) tp.max_steps = (int64_t)x;
        else if (!strcmp(k, "--batch")) tp.batch_size = (int)x;
        else if (!strcmp(k, "--grad-accum")) tp.grad_accum = (int)x;
        else if (!strcmp(k, "--shards")) tp.shards = (int)x;
        else if (!strcmp(k, "--seed")) tp.seed = (uint64_t)x;
        else if (!strcmp(k, "--lr")) tp.lr = x;
        else if (!strcmp(k, "--warmup")) tp.warmup_ratio = x;
        else if (!strcmp(k, "--weight-decay")) tp.weight_decay = x;
        else if (!strcmp(k, "--eval-fraction")) eval_fraction = x;
        else tp.boundary_loss = x;
    }
    if (!model || !data || !out || (!config && !type)) {
        fprintf(stderr, "cvene train: --model, --data, --out and --config (or --type and --layer) are required (see "
                        "cvene train --help)\n");
        return 2;
    }
    if (config && type) {
        fprintf(stderr, "cvene train: give --config or --type, not both\n");
        return 2;
    }
    if (grid && (!type || layer >= 0 || init)) {
        fprintf(stderr, "cvene train: --grid-positions trains --type at every (layer, position) cell: give --type, "
                        "and --layers instead of --layer%s\n", init ? " (and no --init)" : "");
        return 2;
    }
    if ((grid_layers || beside) && !grid) {
        fprintf(stderr, "cvene train: --layers and --beside belong to a DAS grid: add --grid-positions\n");
        return 2;
    }
    if (type && layer < 0 && !grid) {
        fprintf(stderr, "cvene train: --type needs --layer\n");
        return 2;
    }
    if (!strcmp(optimizer, "adamw")) tp.optimizer = CVENE_OPTIM_ADAMW;
    else if (strcmp(optimizer, "adam")) {
        fprintf(stderr, "cvene train: --optimizer must be adam or adamw, got \"%s\"\n", optimizer);
        return 2;
    }
    if (temperature && parse_range(temperature, &tp.temperature_start, &tp.temperature_end)) {
        fprintf(stderr, "cvene train: --temperature must be START:END with positive numbers, got \"%s\"\n", temperature);
        return 2;
    }
    cvene_ctx_params cp;
    if (cli_ctx_params("train", device, "f32", threads, &cp)) return 2;
    char err[1024];
    int rc = 1;
    char *cfg_text = NULL;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_config *cfg = NULL;
    cvene_tokenizer *tok = NULL;
    cvene_dataset *all = NULL, *train = NULL, *held = NULL;
    cvene_trainer *t = NULL;
    cvene_comm *comm = NULL; /* on ranks: a grid's cells, or each batch, split among them */
    int ranked = 0;          /* ranks that agreed: a failure on one must end the others (they would wait) */
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        return 1;
    }
    if (config) {
        if (!(cfg_text = cli_read_file(config, err, sizeof err))) {
            fprintf(stderr, "cvene: %s\n", err);
            goto done;
        }
        if (cvene_config_parse(ctx, cfg_text, &cfg) != CVENE_OK) {
            fprintf(stderr, "cvene: %s: %s\n", config, cvene_ctx_error(ctx));
            goto done;
        }
    } else if (cli_type_config(ctx, "train", type, grid ? 0 : layer, component, rank, &cfg)) {
        goto done; /* a grid's cells make their own; this checks --type, --component and --rank first */
    }
    if (cvene_model_load(ctx, model, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    if (cvene_tokenizer_load(ctx, model, &tok) != CVENE_OK) tok = NULL; /* ids-only datasets need none */
    if (cvene_dataset_load_jsonl(ctx, data, tok, &all) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    if (eval) {
        if (cvene_dataset_load_jsonl(ctx, eval, tok, &held) != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
        train = all, all = NULL;
    } else if (eval_fraction > 0 && cvene_dataset_count(all) >= 2) {
        if (cvene_dataset_split(all, eval_fraction, tp.seed, &train, &held) != CVENE_OK) {
            fprintf(stderr, "cvene train: --eval-fraction: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
    } else {
        train = all, all = NULL;
    }
    const cvene_model_info mi = cvene_model_get_info(m);
    cJSON *cmd = cJSON_CreateStringArray((const char *const *)argv, argc);
    if (cli_ranks_open("train", ctx, &comm) != 0 || !cmd || cli_ranks_agree(ctx, comm, "train", cmd, &mi) != 0) {
        cJSON_Delete(cmd);
        goto done;
    }
    cJSON_Delete(cmd);
    const int rank0 = cvene_comm_rank(comm) == 0, ranks = cvene_comm_size(comm);
    ranked = ranks > 1;
    if (grid) {
        const int L = mi.n_layer;
        int gpos[256], np = 0, nl = L, *glay = malloc(sizeof(int) * (size_t)(L + 1));
        if (!glay) {
            fprintf(stderr, "cvene train: out of memory\n");
            goto done;
        }
        if ((np = cli_parse_positions("train", "--grid-positions", grid, gpos, 256)) < 0) {
            free(glay);
            goto done;
        }
        for (int l = 0; l < L; l++) glay[l] = l;
        char why[64];
        snprintf(why, sizeof why, "the model has %d layers", L);
        if (grid_layers && (nl = cli_parse_list("train", "--layers", grid_layers, glay, 0, L, "layer", why)) <= 0) {
            free(glay);
            goto done;
        }
        if (!held) {
            fprintf(stderr, "cvene train: a DAS grid reports held-out IIA: give --eval or --eval-fraction\n");
            free(glay);
            goto done;
        }
        tp.progress = NULL;
        train_grid_args ga = {ctx, m, train, held, type, component, out, beside, rank, glay, gpos, nl, np, &tp, comm};
        rc = cli_train_grid(&ga);
        free(glay);
        ranked = 0; /* the grid ends its ranks itself */
        goto done;
    }
    train_progress pr = {cli_now(), isatty(2), 0, 0};
    tp.progress = rank0 ? show : NULL, tp.progress_user = &pr;
    tp.comm = ranks > 1 ? comm : NULL; /* data parallel: every rank runs its share of each batch */
    if (cvene_trainer_new(m, cfg, &tp, &t) != CVENE_OK ||
        (init && cvene_trainer_load(t, 0, init) != CVENE_OK)) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    for (int k = 0; k < cvene_config_count(cfg); k++) { /* a PCA basis not given by --init: from the data */
        if (cvene_config_get(cfg, k)->type != CVENE_IV_PCA_ROTATED_SPACE || (init && k == 0)) continue;
        if (cvene_trainer_fit_pca(t, k, train, 0) != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
        if (rank0)
            printf("representations[%d]: PCA basis fitted to the base activations of the %d training examples\n", k,
                   cvene_dataset_count(train));
    }
    if (rank0)
        printf("training %d intervention%s on %d examples (%d held out) of %s\n", cvene_config_count(cfg),
               cvene_config_count(cfg) == 1 ? "" : "s", cvene_dataset_count(train),
               held ? cvene_dataset_count(held) : 0, data);
    if (rank0 && ranks > 1)
        printf("data parallel on %d ranks: each batch in %d shards, their gradients added in shard order%s\n", ranks,
               tp.shards ? tp.shards : ranks, tp.shards ? "" : " (--shards fixes them for any number of ranks)");
    double acc0 = 0, loss0 = 0;
    if (held && cvene_trainer_evaluate(t, held, &acc0, &loss0) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    const double t0 = cli_now();
    if (cvene_trainer_fit(t, train) != CVENE_OK) {
        fprintf(stderr, "%scvene train (rank %d of %d): %s\n", pr.tty ? "\n" : "", cvene_comm_rank(comm), ranks, cvene_ctx_error(ctx));
        goto done;
    }
    const double el = cli_now() - t0;
    if (pr.tty && rank0) fprintf(stderr, "\n");
    int64_t n_steps = 0;
    const double *losses = cvene_trainer_losses(t, &n_steps);
    if (rank0)
        printf("%lld steps in %.2f s (%.2f steps/s); loss %.4f -> %.4f\n", (long long)n_steps, el,
           el > 0 ? n_steps / el : 0.0, n_steps ? losses[0] : 0.0, n_steps ? losses[n_steps - 1] : 0.0);
    const double rows = cvene_trainer_rows_fraction(t);
    if (rank0 && rows > 0 && rows < 1)
        printf("live rows: each step ran %.0f%% of the token rows above the intervention (the rest are the clean "
               "run's: positions before each example's intervened one)\n", 100 * rows);
    if (held) {
        double acc = 0, loss = 0;
        if (cvene_trainer_evaluate(t, held, &acc, &loss) != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
        if (rank0)
            printf("held out (%d examples): IIA %.4f (before training %.4f), loss %.4f (before %.4f)\n",
                   cvene_dataset_count(held), acc, acc0, loss, loss0);
    }
    if (rank0 && cvene_trainer_save(t, out) != CVENE_OK) { /* every rank holds the same weights: rank 0 writes */
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    if (rank0) printf("wrote %s/config.json and the interventions' weights\n", out);
    rc = 0;
done:
    if (rc != 0 && ranked) cvene_comm_abort(comm, rc);
    cvene_comm_free(comm);
    cvene_trainer_free(t);
    cvene_dataset_free(all), cvene_dataset_free(train), cvene_dataset_free(held);
    cvene_tokenizer_free(tok);
    cvene_config_free(cfg);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    free(cfg_text);
    return rc;
}
