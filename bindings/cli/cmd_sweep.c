/* cvene sweep: activation patching / causal tracing over layers x positions.
 * Results go to PREFIX.json (rewritten atomically after every finished layer,
 * so an interrupted sweep resumes with --resume), PREFIX.csv and PREFIX.svg. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "bindings/cli/sweep.h"
#include "models/fileio.h"

static volatile sig_atomic_t g_stop = 0; /* set by SIGINT/SIGTERM: stop after the current layer */
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

void cli_sweep_progress(void *user, int64_t done, int64_t total) {
    cli_sweep_bar *pr = user;
    if (total > 0) pr->total = total; /* a dataset sweep's (on ranks: this rank's share) */
    if (!pr->tty) return;
    int64_t d = pr->base_done + done;
    double el = cli_now() - pr->t0, rate = el > 0 ? d / el : 0, eta = rate > 0 ? (pr->total - d) / rate : 0;
    int w = 30, fill = pr->total ? (int)(w * d / pr->total) : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "\r[%s] %lld/%lld sites  %.1f sites/s  ETA %.0fs ", bar, (long long)d, (long long)pr->total, rate, eta);
    fflush(stderr);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: cvene sweep --model DIR (--base TEXT | --base-ids IDS) [--source TEXT | --source-ids IDS]\n"
            "                   --out PREFIX [--component block_output] [--metric prob|logit-diff|kl]\n"
            "                   [--token TEXT | --token-id N] [--token-b TEXT | --token-b-id N]\n"
            "                   [--layers 0-11] [--positions 0,3,5-9] [--window W] [--head H|all]\n"
            "                   [--method exact|atp] [--verify K] [--together]\n"
            "       cvene sweep --model DIR --data PAIRS.jsonl --out PREFIX [--roles R1,R2] [the options above]\n"
            "                   [--trace --subject TEXT | --subject-positions P] [--samples 10] [--noise X] [--seed S]\n"
            "                   [--naive] [--resume] [--threads N] [--batch N] [--stop-after N] [--position-ids P]\n"
            "                   [--device cpu|cuda] [--dtype f32|bf16|f16]\n"
            "Patches COMPONENT from the source run into the base run at every (layer, position) and scores\n"
            "the last position. --trace: ROME causal tracing (base = source prompt with noise on the subject\n"
            "tokens' embeddings; the clean state is restored at each site). Writes PREFIX.json, PREFIX.csv\n"
            "and PREFIX.svg; after Ctrl-C, run again with --resume to finish without recomputing done layers.\n"
            "--stop-after N computes at most N layers in this run (then stops as if interrupted).\n"
            "--head all (head_attention_value_output): every head, columns head by head (layer x head x position).\n"
            "--together: patch the listed positions all at once (with --head all: layer x head patching of\n"
            "each head's output over the whole prompt); one column per head.\n"
            "--method atp: attribution patching - every site's score estimated to first order from one source\n"
            "forward, one base forward and one backward ((a_src - a_base) . dmetric/da at the base), in the exact\n"
            "sweep's units; --verify K then patches the K sites with the largest estimated change exactly and\n"
            "reports where the estimate misleads (GPT-2 and GPT-NeoX; not with --trace, --window, --naive).\n"
            "--data PAIRS.jsonl: the mean over a dataset (one JSON object per line: base / source text or\n"
            "base_ids / source_ids, token / token_b or token_id / token_b_id, positions {\"role\": P} (P < 0 from\n"
            "the end), subject TEXT (roles \"subject first\", \"subject last\"); roles first and last always\n"
            "exist). --roles picks the columns (default: the first line's roles, then last; with none, every\n"
            "position). PREFIX.json has the mean and every example's scores; PREFIX.csv a row per example.\n"
            "--position-ids P: position ids of the prompt's tokens (comma-separated, one per token; default\n"
            "0..T-1), used by the base and source runs alike (transformers' position_ids).\n"
            "Text needs tokenizer files (vocab.json + merges.txt or tokenizer.json) in the model directory.\n"
            CLI_CTX_HELP);
}

/* "5,9,2": n integers in [0, hi) (token ids, position ids) for option opt; 0, or -1 after
 * printing which entry is wrong. *out is malloc'd. */
static int parse_ints(const char *opt, const char *s, int32_t **out, int *n, long hi, const char *why) {
    *n = 0;
    *out = malloc(sizeof(int32_t) * (strlen(s) / 2 + 1));
    if (!*out) {
        fprintf(stderr, "cvene sweep: out of memory\n");
        return -1;
    }
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',')) {
            fprintf(stderr, "cvene sweep: %s must be a comma-separated list of integers, got \"%s\"\n", opt, s);
            goto fail;
        }
        if (v < 0 || v >= hi) {
            fprintf(stderr, "cvene sweep: %s entry %d is %ld, outside [0, %ld) (%s)\n", opt, *n, v, hi, why);
            goto fail;
        }
        (*out)[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        fprintf(stderr, "cvene sweep: %s is empty\n", opt);
        goto fail;
    }
    return 0;
fail:
    free(*out), *out = NULL;
    return -1;
}

/* ids from "1,2,3" or from text through the model directory's tokenizer; 1 when neither
 * is given */
static int get_ids(cli_text *tx, const char *ids_arg, const char *text, int32_t **out, int *n, const char *what,
                   int vocab) {
    if (ids_arg) {
        char opt[32];
        snprintf(opt, sizeof opt, "--%s-ids", what);
        return parse_ints(opt, ids_arg, out, n, vocab, "the model's vocabulary");
    }
    if (!text) return 1; /* absent */
    if (cli_text_encode(tx, text, out, n) != 0) return -1;
    for (int i = 0; i < *n; i++)
        if ((*out)[i] >= vocab) {
            fprintf(stderr, "cvene sweep: --%s tokenises to id %d at position %d, outside the model's vocabulary "
                            "[0, %d) (a tokenizer of another model?)\n", what, (*out)[i], i, vocab);
            free(*out), *out = NULL;
            return -1;
        }
    if (*n == 0) {
        fprintf(stderr, "cvene sweep: --%s \"%s\" is empty after tokenisation\n", what, text);
        free(*out), *out = NULL;
        return -1;
    }
    return 0;
}

static cJSON *int_array(const int32_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static int argmax(const float *v, int n) {
    int k = 0;
    for (int i = 1; i < n; i++) k = v[i] > v[k] ? i : k;
    return k;
}

/* The results document, rewritten atomically: after layer li (li >= 0, the exact sweep) marks it
 * done, or with every layer done (li < 0: attribution patching). 0, or -1 after printing why. */
static int write_doc(cJSON *doc, const char *path, const float *scores, int *done, int nl, int ncol, char **labels,
                     const cvene_sweep_summary *sum, char **text, int li) {
    char err[1024];
    for (int q = 0; q < nl; q++)
        if (li < 0 || q == li) done[q] = 1;
    cJSON_DeleteItemFromObject(doc, "scores");
    cJSON *rows = cJSON_AddArrayToObject(doc, "scores");
    int complete = 1;
    for (int q = 0; q < nl; q++) {
        if (!done[q]) complete = 0;
        cJSON_AddItemToArray(rows, done[q] ? cJSON_CreateFloatArray(scores + (size_t)q * ncol, ncol) : cJSON_CreateNull());
    }
    cJSON_DeleteItemFromObject(doc, "tokens");
    cJSON_AddItemToObject(doc, "tokens", cJSON_CreateStringArray((const char *const *)labels, ncol));
    cJSON_DeleteItemFromObject(doc, "base_score");
    cJSON_DeleteItemFromObject(doc, "source_score");
    cJSON_DeleteItemFromObject(doc, "complete");
    cJSON_AddNumberToObject(doc, "base_score", sum->base_score);
    cJSON_AddNumberToObject(doc, "source_score", sum->source_score);
    cJSON_AddBoolToObject(doc, "complete", complete);
    free(*text);
    *text = cJSON_Print(doc);
    if (!*text || cli_write_atomic(path, *text, err, sizeof err) != 0) {
        fprintf(stderr, "\ncvene sweep: %s\n", *text ? err : "out of memory");
        return -1;
    }
    return 0;
}


typedef struct { /* write_doc's arguments, for rows that arrive from other ranks */
    cJSON *doc;
    const char *path;
    const float *scores;
    int *done, nl, ncol;
    char **labels, **text;
    const cvene_sweep_summary *sum;
} doc_writer;
static int write_row(void *user, int li) {
    doc_writer *w = user;
    return write_doc(w->doc, w->path, w->scores, w->done, w->nl, w->ncol, w->labels, w->sum, w->text, li);
}

static int run_sweep(const sweep_args *a) {
    char err[1024];
    int rc = 1;
    cvene_ctx_params cp;
    if (cli_ctx_params("sweep", a->device, a->dtype, a->threads, &cp)) return 2;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cli_text tx;
    memset(&tx, 0, sizeof tx);
    int32_t *base = NULL, *src = NULL, *subj_ids = NULL, *pos_ids = NULL;
    int nb = 0, ns = 0, nsubj = 0, npos = 0;
    int *layers = NULL, *positions = NULL, *subject = NULL, *done = NULL, *col_pos = NULL;
    float *scores = NULL, *logits = NULL;
    char **labels = NULL;
    cJSON *doc = NULL;
    char *text = NULL;
    cvene_sweep_session *session = NULL;
    cvene_comm *comm = NULL;
    int *owner = NULL, ranked = 0; /* ranked: the ranks have begun working together (a failure ends them all) */
    int64_t *rank_counts = NULL;
    unsigned char *rank_msg = NULL;
    cvene_sweep_summary resumed;
    memset(&resumed, 0, sizeof resumed);
    int np = 0, ncol_alloc = 0;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        return 1;
    }
    if (cvene_model_load(ctx, a->model, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    cvene_model_info mi = cvene_model_get_info(m);
    tx.ctx = ctx, tx.dir = a->model;
    if (cli_ranks_open("sweep", ctx, &comm) != 0) goto done;
    const int rank = cvene_comm_rank(comm), n_ranks = cvene_comm_size(comm);
    /* every argument is checked before any forward runs or any file is written */
    int gb = get_ids(&tx, a->base_ids, a->base_text, &base, &nb, "base", mi.n_token_ids);
    int gs = gb < 0 ? -1 : get_ids(&tx, a->source_ids, a->source_text, &src, &ns, "source", mi.n_token_ids);
    if (gb < 0 || gs < 0) goto done;
    if (a->trace) { /* one prompt: the clean run */
        if (gb == 1 && gs == 1) {
            fprintf(stderr, "cvene sweep: --trace needs the prompt (--base TEXT or --base-ids)\n");
            goto done;
        }
        if (gs == 1) src = base, base = NULL, ns = nb;
        free(base), base = NULL, nb = ns;
    } else if (gb == 1 || gs == 1) {
        fprintf(stderr, "cvene sweep: give both --base and --source (or --trace for causal tracing)\n");
        goto done;
    } else if (nb != ns) {
        fprintf(stderr,
                "cvene sweep: the base has %d tokens and the source %d; patching maps positions one to one, so make "
                "the prompts the same length (e.g. pad the shorter one with a neutral word)\n", nb, ns);
        goto done;
    }
    int T = ns;
    if (T > mi.n_positions) {
        fprintf(stderr, "cvene sweep: the prompt has %d tokens; the model takes at most %d\n", T, mi.n_positions);
        goto done;
    }
    if (a->position_ids) {
        if (parse_ints("--position-ids", a->position_ids, &pos_ids, &npos, (long)mi.n_positions,
                       "the model's position table") != 0)
            goto done;
        if (npos != T) {
            fprintf(stderr, "cvene sweep: --position-ids lists %d positions but the prompt has %d tokens\n", npos, T);
            goto done;
        }
    }
    /* subject positions (trace) */
    if (a->trace) {
        subject = malloc(sizeof(int) * (size_t)T + sizeof(int));
        if (!subject) goto oom;
        if (a->subject_pos) {
            char why[64];
            snprintf(why, sizeof why, "the prompt has %d tokens", T);
            nsubj = cli_parse_list("sweep", "--subject-positions", a->subject_pos, subject, 0, T, "position", why);
            if (nsubj <= 0) goto done;
        } else if (a->subject_text) {
            int lo = -1, n = 0;
            if (cli_text_encode(&tx, a->subject_text, &subj_ids, &n) != 0) goto done;
            /* the subject's tokens inside the prompt, tokenised in context when it starts with a space */
            for (int t = 0; t + n <= T && lo < 0; t++)
                if (n > 0 && !memcmp(src + t, subj_ids, sizeof(int32_t) * (size_t)n)) lo = t;
            if (lo < 0) {
                fprintf(stderr, "cvene sweep: the subject \"%s\" does not appear as whole tokens in the prompt "
                                "(try a leading space, e.g. \" %s\", or --subject-positions)\n",
                        a->subject_text, a->subject_text);
                goto done;
            }
            for (int k = 0; k < n; k++) subject[k] = lo + k;
            nsubj = n;
        } else {
            fprintf(stderr, "cvene sweep: --trace needs --subject TEXT or --subject-positions P\n");
            goto done;
        }
        if (a->samples < 1) {
            fprintf(stderr, "cvene sweep: --samples %d must be at least 1\n", a->samples);
            goto done;
        }
    }
    int metric = !strcmp(a->metric, "prob") ? CVENE_METRIC_PROB : !strcmp(a->metric, "logit-diff") ? CVENE_METRIC_LOGIT_DIFF
               : !strcmp(a->metric, "kl") ? CVENE_METRIC_KL : -1;
    if (metric < 0) {
        fprintf(stderr, "cvene sweep: --metric must be prob, logit-diff or kl, got \"%s\"\n", a->metric);
        goto done;
    }
    cvene_component comp = cvene_component_from_name(a->component);
    if (comp == CVENE_N_COMPONENTS) {
        fprintf(stderr, "cvene sweep: unknown --component \"%s\" (block_output, block_input, attention_output, "
                        "mlp_output, mlp_activation, attention_value_output, head_attention_value_output)\n",
                a->component);
        goto done;
    }
    if (a->head < 0 && comp != CVENE_HEAD_ATTENTION_VALUE_OUTPUT) {
        fprintf(stderr, "cvene sweep: --head all needs --component head_attention_value_output (got %s)\n",
                a->component);
        goto done;
    }
    const int atp = !strcmp(a->method, "atp");
    if (!atp && strcmp(a->method, "exact") != 0) {
        fprintf(stderr, "cvene sweep: --method must be exact or atp, got \"%s\"\n", a->method);
        goto done;
    }
    if (atp && (a->trace || a->window != 1 || a->naive || a->resume || a->stop_after)) {
        fprintf(stderr, "cvene sweep: --method atp estimates one base/source pair in one pass: it takes no %s\n",
                a->trace ? "--trace" : a->window != 1 ? "--window" : a->naive ? "--naive" : a->resume ? "--resume"
                                                                                             : "--stop-after");
        goto done;
    }
    if (atp && n_ranks > 1) {
        fprintf(stderr, "cvene sweep: --method atp is one forward and one backward: run it as one process, not on %d "
                        "ranks\n", n_ranks);
        goto done;
    }
    if (a->together && (a->verify || a->trace)) {
        fprintf(stderr, "cvene sweep: --together patches every position at once: not with %s\n",
                a->verify ? "--verify" : "--trace");
        goto done;
    }
    if (a->verify && !atp) {
        fprintf(stderr, "cvene sweep: --verify K checks an attribution-patching estimate: add --method atp\n");
        goto done;
    }
    if (comp == CVENE_HEAD_ATTENTION_VALUE_OUTPUT && a->head >= mi.n_head) {
        fprintf(stderr, "cvene sweep: --head %d is outside [0, %d) (the model's heads)\n", a->head, mi.n_head);
        goto done;
    }
    if (a->window < 1 || a->window > mi.n_layer) {
        fprintf(stderr, "cvene sweep: --window %d must be in [1, %d] (the model's layers)\n", a->window, mi.n_layer);
        goto done;
    }
    /* metric tokens: by text, by id, or the model's own predictions */
    int token = a->token, token_b = a->token_b;
    for (int which = 0; which < 2; which++) {
        const char *t = which ? a->token_b_text : a->token_text;
        int *dst = which ? &token_b : &token;
        if (!t) {
            if (*dst >= mi.vocab_size) {
                fprintf(stderr, "cvene sweep: --token%s-id %d is outside the model's vocabulary [0, %d)\n",
                        which ? "-b" : "", *dst, mi.vocab_size);
                goto done;
            }
            continue;
        }
        int32_t *ids = NULL;
        int n = 0;
        if (cli_text_encode(&tx, t, &ids, &n) != 0) goto done;
        if (n != 1 || ids[0] >= mi.vocab_size) {
            if (n != 1)
                fprintf(stderr, "cvene sweep: --token%s \"%s\" is %d tokens; the metric needs exactly one (a leading "
                                "space is usually part of the token: \" Paris\")\n", which ? "-b" : "", t, n);
            else
                fprintf(stderr, "cvene sweep: --token%s \"%s\" is id %d, outside the model's vocabulary [0, %d)\n",
                        which ? "-b" : "", t, ids[0], mi.vocab_size);
            free(ids);
            goto done;
        }
        *dst = ids[0];
        free(ids);
    }
    if (metric == CVENE_METRIC_LOGIT_DIFF && token_b < 0 && a->trace) {
        fprintf(stderr, "cvene sweep: --metric logit-diff needs --token-b (or --token-b-id)\n");
        goto done;
    }
    /* layers and positions */
    layers = malloc(sizeof(int) * (size_t)(mi.n_layer + 1));
    positions = malloc(sizeof(int) * (size_t)(T + 1));
    if (!layers || !positions) goto oom;
    int nl = mi.n_layer;
    np = T;
    for (int l = 0; l < nl; l++) layers[l] = l;
    for (int t = 0; t < np; t++) positions[t] = t;
    char why[64];
    snprintf(why, sizeof why, "the model has %d layers", mi.n_layer);
    if (a->layers && (nl = cli_parse_list("sweep", "--layers", a->layers, layers, 0, mi.n_layer, "layer", why)) <= 0)
        goto done;
    snprintf(why, sizeof why, "the prompt has %d tokens", T);
    if (a->positions && (np = cli_parse_list("sweep", "--positions", a->positions, positions, 0, T, "position", why)) <= 0)
        goto done;

    logits = malloc(sizeof(float) * (size_t)T * mi.vocab_size);
    if (!logits) goto oom;
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.logits = logits;
    o.position_ids = pos_ids;
    if (token < 0) { /* the clean/source run's prediction */
        if (cvene_forward(m, src, 1, T, &o) != CVENE_OK) goto fail_ctx;
        token = argmax(logits + (size_t)(T - 1) * mi.vocab_size, mi.vocab_size);
    }
    if (metric == CVENE_METRIC_LOGIT_DIFF && token_b < 0) {
        if (cvene_forward(m, base, 1, T, &o) != CVENE_OK) goto fail_ctx;
        token_b = argmax(logits + (size_t)(T - 1) * mi.vocab_size, mi.vocab_size);
    }
    /* columns: positions, or (head, position) head by head with --head all; --together: one per head */
    const int nh = a->head < 0 ? mi.n_head : 1, npc = a->together ? 1 : np, ncol = nh * npc;
    scores = calloc((size_t)nl * ncol, sizeof(float));
    done = calloc((size_t)nl, sizeof(int));
    labels = calloc((size_t)ncol, sizeof(char *));
    ncol_alloc = labels ? ncol : 0;
    col_pos = malloc(sizeof(int) * (size_t)ncol);
    if (!scores || !done || !labels || !col_pos) goto oom;
    for (int c = 0; c < ncol; c++) {
        char *tl = a->together ? strdup("all positions") : cli_text_token_label(&tx, src[positions[c % npc]]);
        col_pos[c] = positions[c % npc];
        if (nh > 1 && tl) {
            size_t n = strlen(tl) + 16;
            labels[c] = malloc(n);
            if (labels[c]) snprintf(labels[c], n, "h%d %s", c / npc, tl);
            free(tl);
        } else {
            labels[c] = tl;
        }
        if (!labels[c]) goto oom;
    }

    /* the description that identifies this sweep (for --resume) */
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "model", a->model);
    if (strcmp(a->dtype, "f32") != 0) cJSON_AddStringToObject(spec, "dtype", a->dtype); /* f32: as before */
    cJSON_AddItemToObject(spec, "source_ids", int_array(src, T));
    if (pos_ids) cJSON_AddItemToObject(spec, "position_ids", int_array(pos_ids, T));
    if (!a->trace) cJSON_AddItemToObject(spec, "base_ids", int_array(base, T));
    cJSON_AddStringToObject(spec, "component", cvene_component_name(comp));
    if (a->head < 0) cJSON_AddStringToObject(spec, "head", "all");
    else cJSON_AddNumberToObject(spec, "head", a->head);
    if (atp) cJSON_AddStringToObject(spec, "method", "atp");
    if (a->together) cJSON_AddBoolToObject(spec, "together", 1);
    cJSON_AddStringToObject(spec, "metric", a->metric);
    cJSON_AddNumberToObject(spec, "token", token);
    cJSON_AddNumberToObject(spec, "token_b", token_b);
    cJSON_AddNumberToObject(spec, "window", a->window);
    cJSON_AddBoolToObject(spec, "trace", a->trace);
    if (a->trace) {
        cJSON_AddItemToObject(spec, "subject", cJSON_CreateIntArray(subject, nsubj));
        cJSON_AddNumberToObject(spec, "samples", a->samples);
        cJSON_AddNumberToObject(spec, "noise", a->noise);
        cJSON_AddNumberToObject(spec, "seed", a->seed);
    }
    cJSON_AddItemToObject(spec, "layers", cJSON_CreateIntArray(layers, nl));
    cJSON_AddItemToObject(spec, "positions", cJSON_CreateIntArray(positions, np));
    doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "sweep", spec);

    if (cli_ranks_agree(ctx, comm, "sweep", spec, &mi) != 0) goto done;

    char path[4096];
    snprintf(path, sizeof path, "%s.json", a->out);
    if (a->resume) { /* rank 0 reads the file (ranks need not share a disk) and hands its rows to the others */
        int bad = 0;
        if (rank == 0) {
            char *old = cli_read_file(path, err, sizeof err);
            bad = !old || cli_resume_read(old, path, spec, nl, ncol, scores, done, &resumed.base_score,
                                          &resumed.source_score, err, sizeof err);
            free(old);
            if (bad) fprintf(stderr, "cvene sweep: --resume: %s\n", err);
        }
        if (n_ranks > 1 && (cvene_comm_bcast(comm, &bad, sizeof bad, 0) != CVENE_OK ||
                            (!bad && (cvene_comm_bcast(comm, done, sizeof(int) * (size_t)nl, 0) != CVENE_OK ||
                                      cvene_comm_bcast(comm, scores, sizeof(float) * (size_t)nl * ncol, 0) != CVENE_OK))))
            goto fail_ctx;
        if (bad) goto done;
    }
    int n_done = 0;
    for (int li = 0; li < nl; li++) n_done += done[li];
    if (a->resume && rank == 0) fprintf(stderr, "resuming: %d of %d layers already done\n", n_done, nl);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    cli_sweep_bar pr = {(int64_t)n_done * ncol, (int64_t)nl * ncol, cli_now(), isatty(2)};
    cvene_sweep_params p = cvene_sweep_default_params();
    p.component = comp, p.head = a->head < 0 ? CVENE_ALL_HEADS : a->head, p.metric = (cvene_metric)metric, p.token = token, p.token_b = token_b;
    p.positions = positions, p.n_positions = np, p.window = a->window, p.naive = a->naive, p.max_batch = a->max_batch;
    p.trace = a->trace, p.subject = subject, p.n_subject = nsubj, p.noise_scale = (float)a->noise;
    p.n_samples = a->samples, p.seed = a->seed, p.progress = cli_sweep_progress, p.progress_user = &pr;
    p.position_ids = pos_ids, p.together = a->together;
    p.layers = layers, p.n_layers = nl; /* checked by begin (the session takes layers per call) */
    cvene_sweep_summary sum = resumed;
    doc_writer dw = {doc, path, scores, done, nl, ncol, labels, &text, &sum};
    cli_sweep_ranks rs;
    memset(&rs, 0, sizeof rs);
    if (n_ranks > 1) { /* the layers left, split by cost; rank 0 draws every rank's progress */
        owner = malloc(sizeof(int) * (size_t)nl);
        rank_counts = calloc(2 * (size_t)n_ranks, sizeof(int64_t));
        rank_msg = malloc(16 + sizeof(float) * (size_t)ncol);
        if (!owner || !rank_counts || !rank_msg) goto oom;
        if (cvene_sweep_split(m, &p, T, done, n_ranks, owner) != CVENE_OK) goto fail_ctx;
        rs = (cli_sweep_ranks){ctx, comm, layers, owner, nl, ncol, a->stop_after, scores, done, &g_stop, write_row, &dw,
                               &pr, rank_msg, rank_counts, rank_counts + n_ranks, 0, 0};
        p.progress = rank == 0 ? cli_sweep_ranks_progress : NULL, p.progress_user = &rs;
        ranked = 1;
    }
    int mine = 0; /* layers this rank sweeps (rank 0 begins a session anyway: the base and source scores) */
    for (int li = 0; li < nl; li++) mine += !done[li] && (!owner || owner[li] == rank);
    double t0 = cli_now();
    if (atp) { /* every layer at once */
        if (cvene_sweep_atp(m, base, src, T, &p, scores, &sum) != CVENE_OK) goto fail_ctx;
        if (write_doc(doc, path, scores, done, nl, ncol, labels, &sum, &text, -1) != 0) goto done;
        const int v = a->verify > 0 ? cli_sweep_verify_atp(m, base, src, T, &p, scores, layers, nl, nh, &sum, a->verify, doc) : 0;
        if (v == -2) goto done; /* out of memory, said */
        if (v != 0) goto fail_ctx;
        if (write_doc(doc, path, scores, done, nl, ncol, labels, &sum, &text, -1) != 0) goto done;
    }
    if (!atp && n_done < nl && (mine > 0 || rank == 0) && cvene_sweep_begin(m, base, src, T, &p, &session) != CVENE_OK)
        goto fail_ctx;
    if (session) sum = cvene_sweep_get_summary(session);
    if (n_ranks > 1) {
        const int r = n_done < nl ? cli_sweep_ranks_run(&rs, session, &sum) : 0;
        if (r < 0) goto done;
        if (rank != 0) { /* rank 0 writes the outputs */
            rc = r;
            if (r == 130) fprintf(stderr, "cvene sweep (rank %d): interrupted\n", rank);
            goto done;
        }
    }
    int computed = 0;
    for (int li = 0; !atp && n_ranks == 1 && li < nl; li++) {
        if (done[li]) continue;
        if (g_stop || (a->stop_after > 0 && computed >= a->stop_after)) break;
        computed++;
        if (cvene_sweep_layer(session, layers[li], scores + (size_t)li * ncol) != CVENE_OK) goto fail_ctx;
        sum = cvene_sweep_get_summary(session);
        if (write_doc(doc, path, scores, done, nl, ncol, labels, &sum, &text, li) != 0) goto done;
    }
    if (pr.tty) fprintf(stderr, "\n");
    n_done = 0;
    for (int li = 0; li < nl; li++) n_done += done[li];
    /* CSV and SVG of what is done */
    {
        size_t longest = 0; /* every label is written, quotes doubled, on each layer's rows */
        for (int ci = 0; ci < ncol; ci++) longest = strlen(labels[ci]) > longest ? strlen(labels[ci]) : longest;
        size_t cap = 64 + (size_t)nl * ncol * (48 + 2 * longest);
        char *csv = malloc(cap);
        if (!csv) goto done;
        size_t o2 = (size_t)snprintf(csv, cap, nh > 1 ? "layer,head,position,token,score\n" : "layer,position,token,score\n");
        for (int li = 0; li < nl; li++)
            for (int ci = 0; done[li] && ci < ncol; ci++) {
                const int pi = ci % npc;
                char ps[16];
                snprintf(ps, sizeof ps, a->together ? "all" : "%d", positions[pi]);
                if (nh > 1) o2 += (size_t)snprintf(csv + o2, cap - o2, "%d,%d,%s,\"", layers[li], ci / npc, ps);
                else o2 += (size_t)snprintf(csv + o2, cap - o2, "%d,%s,\"", layers[li], ps);
                for (const char *c = labels[nh > 1 ? pi : ci] + (nh > 1 ? strcspn(labels[pi], " ") + 1 : 0);
                     *c && o2 + 4 < cap; c++) {
                    if (*c == '"') csv[o2++] = '"';
                    csv[o2++] = *c;
                }
                o2 += (size_t)snprintf(csv + o2, cap - o2, "\",%.9g\n", scores[(size_t)li * ncol + ci]);
            }
        snprintf(path, sizeof path, "%s.csv", a->out);
        int w = cli_write_atomic(path, csv, err, sizeof err);
        free(csv);
        if (w != 0) {
            fprintf(stderr, "cvene sweep: %s\n", err);
            goto done;
        }
        snprintf(path, sizeof path, "%s.svg", a->out);
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        char title[512], vlabel[256];
        snprintf(title, sizeof title, "%s %s: %s", a->trace ? "causal trace" : atp ? "attribution patching (AtP estimate)"
                                                                                  : "activation patching",
                 cvene_component_name(comp), a->model);
        char *tl = cli_text_token_label(&tx, token), *tbl = token_b >= 0 ? cli_text_token_label(&tx, token_b) : NULL;
        if (tbl)
            snprintf(vlabel, sizeof vlabel, "%s of \"%s\" (%d) vs \"%s\" (%d) at the last position (base %.4g, source %.4g)",
                     a->metric, tl ? tl : "?", token, tbl, token_b, sum.base_score, sum.source_score);
        else
            snprintf(vlabel, sizeof vlabel, "%s of \"%s\" (token %d) at the last position (base %.4g, source %.4g)",
                     a->metric, tl ? tl : "?", token, sum.base_score, sum.source_score);
        free(tl), free(tbl);
        int ok = f && cli_write_heatmap(f, title, vlabel, scores, layers, nl, (const char *const *)labels, col_pos,
                                        ncol, done) == 0;
        if (f && fclose(f) != 0) ok = 0;
        if (!ok || rename(tmp, path) != 0) {
            remove(tmp);
            fprintf(stderr, "cvene sweep: cannot write %s\n", path);
            goto done;
        }
    }
    double el = cli_now() - t0;
    printf("%s: %d of %d layers x %d %s, %lld forward passes, %.2f s; base %.4g, source %.4g\n",
           a->trace ? "causal trace" : atp ? "attribution patching" : "patching sweep", n_done, nl, ncol,
           a->together ? (nh > 1 ? "heads (all positions together)" : "column (all positions together)")
                       : nh > 1 ? "head-positions" : "positions", (long long)sum.forwards, el, sum.base_score,
           sum.source_score);
    printf("wrote %s.json, %s.csv, %s.svg\n", a->out, a->out, a->out);
    if (n_done < nl) {
        fprintf(stderr, "interrupted: %d layers left; run the same command with --resume to finish\n", nl - n_done);
        rc = 130;
        goto done;
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "cvene sweep: out of memory\n");
    goto done;
fail_ctx:
    fprintf(stderr, "%scvene: %s\n", isatty(2) ? "\n" : "", cvene_ctx_error(ctx));
done:
    /* a rank that fails while the others work with it ends them all: they would wait for it; and
     * after a signal (Ctrl-C, or mpirun's SIGTERM when another rank died) the outputs are written
     * and the job is ending: MPI_Finalize would wait for a rank that may be gone */
    if (ranked && ((rc != 0 && rc != 130) || g_stop)) cvene_comm_abort(comm, rc ? rc : 1);
    free(owner), free(rank_counts), free(rank_msg);
    for (int ci = 0; labels && ci < ncol_alloc; ci++) free(labels[ci]);
    free(col_pos);
    free(labels), free(text), cJSON_Delete(doc);
    free(base), free(src), free(subj_ids), free(pos_ids), free(layers), free(positions), free(subject), free(done), free(scores),
        free(logits);
    cli_text_free(&tx);
    cvene_sweep_end(session);
    cvene_model_free(m);
    cvene_comm_free(comm);
    cvene_ctx_free(ctx);
    return rc;
}

int cmd_sweep(int argc, char **argv) {
    sweep_args a;
    memset(&a, 0, sizeof a);
    a.component = "block_output", a.metric = "prob", a.token = a.token_b = -1, a.window = 1, a.samples = 10;
    a.seed = 1;
    a.device = "cpu", a.dtype = "f32", a.method = "exact";
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(k, "--naive")) { a.naive = 1; continue; }
        if (!strcmp(k, "--resume")) { a.resume = 1; continue; }
        if (!strcmp(k, "--trace")) { a.trace = 1; continue; }
        if (!strcmp(k, "--together")) { a.together = 1; continue; }
        if (!v) {
            fprintf(stderr, "cvene sweep: option %s needs a value\n", k);
            return 2;
        }
        i++;
        const char **sv = !strcmp(k, "--model") ? &a.model : !strcmp(k, "--out") ? &a.out
                        : !strcmp(k, "--component") ? &a.component : !strcmp(k, "--metric") ? &a.metric
                        : !strcmp(k, "--base") ? &a.base_text : !strcmp(k, "--source") ? &a.source_text
                        : !strcmp(k, "--base-ids") ? &a.base_ids : !strcmp(k, "--source-ids") ? &a.source_ids
                        : !strcmp(k, "--subject") ? &a.subject_text : !strcmp(k, "--subject-positions") ? &a.subject_pos
                        : !strcmp(k, "--token") ? &a.token_text : !strcmp(k, "--token-b") ? &a.token_b_text
                        : !strcmp(k, "--layers") ? &a.layers : !strcmp(k, "--positions") ? &a.positions
                        : !strcmp(k, "--device") ? &a.device : !strcmp(k, "--dtype") ? &a.dtype
                        : !strcmp(k, "--position-ids") ? &a.position_ids : !strcmp(k, "--method") ? &a.method
                        : !strcmp(k, "--data") ? &a.data : !strcmp(k, "--roles") ? &a.roles : NULL;
        if (sv) {
            *sv = v;
            continue;
        }
        if (!strcmp(k, "--head") && !strcmp(v, "all")) {
            a.head = -1;
            continue;
        }
        char *end;
        double num = strtod(v, &end);
        if (*end || !isfinite(num)) {
            fprintf(stderr, "cvene sweep: %s expects a number, got \"%s\"\n", k, v);
            return 2;
        }
        if (!strcmp(k, "--noise")) {
            if (num < 0 || num > 3.4e38) {
                fprintf(stderr, "cvene sweep: --noise %s must be a finite f32 value >= 0 (0: 3 x the embeddings' "
                                "standard deviation)\n", v);
                return 2;
            }
            a.noise = num;
            continue;
        }
        /* integer options and the values they accept */
        static const struct { const char *opt; double lo, hi; const char *why; } ints[] = {
            {"--token-id", 0, 2147483647.0, "a token id"},       {"--token-b-id", 0, 2147483647.0, "a token id"},
            {"--head", 0, 65535, "a head index"},                {"--window", 1, 65535, "layers patched together"},
            {"--samples", 1, 100000, "noise samples averaged"},  {"--seed", 0, 4294967295.0, "a 32-bit seed"},
            {"--threads", 0, 1024, "CPU threads, 0 = OpenMP's default"},
            {"--batch", 0, 65536, "sites per forward, 0 = automatic"}, {"--stop-after", 0, 1e9, "layers"},
            {"--verify", 1, 1e6, "sites patched exactly"},
        };
        size_t q = 0;
        while (q < sizeof ints / sizeof *ints && strcmp(ints[q].opt, k)) q++;
        if (q == sizeof ints / sizeof *ints) {
            fprintf(stderr, "cvene sweep: unknown option %s (see cvene sweep --help)\n", k);
            return 2;
        }
        if (num < ints[q].lo || num > ints[q].hi || floor(num) != num) {
            fprintf(stderr, "cvene sweep: %s %s must be an integer in [%.0f, %.0f] (%s)\n", k, v, ints[q].lo, ints[q].hi,
                    ints[q].why);
            return 2;
        }
        if (!strcmp(k, "--token-id")) a.token = (int)num;
        else if (!strcmp(k, "--token-b-id")) a.token_b = (int)num;
        else if (!strcmp(k, "--head")) a.head = (int)num;
        else if (!strcmp(k, "--window")) a.window = (int)num;
        else if (!strcmp(k, "--samples")) a.samples = (int)num;
        else if (!strcmp(k, "--seed")) a.seed = (unsigned)num;
        else if (!strcmp(k, "--threads")) a.threads = (int)num;
        else if (!strcmp(k, "--batch")) a.max_batch = (int)num;
        else if (!strcmp(k, "--verify")) a.verify = (int)num;
        else a.stop_after = (int)num;
    }
    if (!a.model || !a.out) {
        fprintf(stderr, "cvene sweep: --model and --out are required (see cvene sweep --help)\n");
        return 2;
    }
    if (a.roles && !a.data) {
        fprintf(stderr, "cvene sweep: --roles names a dataset's columns: add --data FILE\n");
        return 2;
    }
    return a.data ? cli_sweep_data(&a) : run_sweep(&a);
}
