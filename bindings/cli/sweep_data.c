/* cvene sweep --data PAIRS.jsonl: activation patching averaged over a dataset of base/source
 * pairs (cvene_sweep_dataset). One JSON object per line:
 *   base / base_ids, source / source_ids   the pair (text or ids; the same length within a line)
 *   token / token_id, token_b / token_b_id the metric's tokens (default: --token / --token-b)
 *   positions   {"ROLE": P, ...}           named positions of this line (P < 0 counts from the end)
 *   subject     TEXT                       found in the base's tokens: roles "subject first", "subject last"
 * Roles "first" and "last" exist on every line. Columns: --roles R1,R2 (default: the first line's
 * positions, then its subject's roles, then "last"; with neither, every position, all lines the
 * same length). Writes PREFIX.json (the mean, and every example's scores), PREFIX.csv (a row per
 * example, layer, [head,] column; the mean's rows as example "mean") and PREFIX.svg (the mean). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "bindings/cli/sweep.h"

#define MAX_ROLES 64

typedef struct {
    int32_t *base, *src;
    int T, line;
    int32_t token, token_b;
    int n_named;
    char *name[MAX_ROLES];
    int pos[MAX_ROLES];
    int *cols; /* (n_cols) this line's position per column */
} data_line;

typedef struct {
    data_line *l;
    int n, cap;
} dataset;

static void dataset_free(dataset *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->l[i].base), free(d->l[i].src), free(d->l[i].cols);
        for (int r = 0; r < d->l[i].n_named; r++) free(d->l[i].name[r]);
    }
    free(d->l);
}

static int add_role(data_line *x, const char *path, const char *name, int pos) {
    if (strlen(name) > 256) {
        fprintf(stderr, "cvene sweep: %s line %d: a role name is longer than 256 characters\n", path, x->line);
        return -1;
    }
    for (int r = 0; r < x->n_named; r++)
        if (!strcmp(x->name[r], name)) {
            fprintf(stderr, "cvene sweep: %s line %d: role \"%s\" given twice\n", path, x->line, name);
            return -1;
        }
    if (x->n_named == MAX_ROLES) {
        fprintf(stderr, "cvene sweep: %s line %d: more than %d roles\n", path, x->line, MAX_ROLES);
        return -1;
    }
    x->name[x->n_named] = strdup(name);
    x->pos[x->n_named] = pos;
    if (!x->name[x->n_named]) return -1;
    x->n_named++;
    return 0;
}

/* ids of key (text, through the tokenizer) or key_ids (a list); 1 when neither is there */
static int line_ids(cli_text *tx, const cJSON *o, const char *key, const char *path, int line, int vocab,
                    int32_t **out, int *n) {
    char k_ids[32];
    snprintf(k_ids, sizeof k_ids, "%s_ids", key);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, key), *a = cJSON_GetObjectItemCaseSensitive(o, k_ids);
    if (t && a) {
        fprintf(stderr, "cvene sweep: %s line %d: give %s or %s, not both\n", path, line, key, k_ids);
        return -1;
    }
    if (a) {
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0) {
            fprintf(stderr, "cvene sweep: %s line %d: %s must be a non-empty list of token ids\n", path, line, k_ids);
            return -1;
        }
        *n = cJSON_GetArraySize(a);
        *out = malloc(sizeof(int32_t) * (size_t)*n);
        if (!*out) return -1;
        int i = 0;
        for (const cJSON *e = a->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int64_t)e->valuedouble || e->valuedouble < 0 ||
                e->valuedouble >= vocab) {
                fprintf(stderr, "cvene sweep: %s line %d: %s[%d] is not a token id in [0, %d)\n", path, line, k_ids, i,
                        vocab);
                return -1;
            }
            (*out)[i] = (int32_t)e->valuedouble;
        }
        return 0;
    }
    if (!t) return 1;
    if (!cJSON_IsString(t)) {
        fprintf(stderr, "cvene sweep: %s line %d: %s must be text\n", path, line, key);
        return -1;
    }
    if (cli_text_encode(tx, t->valuestring, out, n) != 0) return -1;
    for (int i = 0; i < *n; i++)
        if ((*out)[i] >= vocab) {
            fprintf(stderr, "cvene sweep: %s line %d: %s tokenises to id %d, outside the vocabulary [0, %d)\n", path, line,
                    key, (*out)[i], vocab);
            return -1;
        }
    if (*n == 0) {
        fprintf(stderr, "cvene sweep: %s line %d: %s is empty after tokenisation\n", path, line, key);
        return -1;
    }
    return 0;
}

/* one metric token: key (one token of text), key_id, or the default (-1: none) */
static int line_token(cli_text *tx, const cJSON *o, const char *key, const char *path, int line, int vocab, int dflt,
                      int32_t *out) {
    int32_t *ids = NULL;
    int n = 0;
    char k_id[32];
    snprintf(k_id, sizeof k_id, "%s_id", key);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, k_id);
    if (id) {
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= vocab ||
            id->valuedouble != (double)(int64_t)id->valuedouble) {
            fprintf(stderr, "cvene sweep: %s line %d: %s is not a token id in [0, %d)\n", path, line, k_id, vocab);
            return -1;
        }
        *out = (int32_t)id->valuedouble;
        return 0;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!t) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsString(t) || cli_text_encode(tx, t->valuestring, &ids, &n) != 0 || n != 1 || ids[0] >= vocab) {
        fprintf(stderr, "cvene sweep: %s line %d: %s must be text of exactly one token (got %d tokens)\n", path, line,
                key, n);
        free(ids);
        return -1;
    }
    *out = ids[0];
    free(ids);
    return 0;
}

static const char *const known_keys[] = {"base", "base_ids", "source", "source_ids", "token", "token_id", "token_b",
                                         "token_b_id", "positions", "subject"};

static int parse_line(cli_text *tx, const char *text, const char *path, int line, const cvene_model_info *mi,
                      const sweep_args *a, int tok, int tok_b, data_line *x) {
    memset(x, 0, sizeof *x);
    x->line = line;
    cJSON *o = cJSON_Parse(text);
    int rc = -1, nb = 0, ns = 0;
    if (!o || !cJSON_IsObject(o)) {
        fprintf(stderr, "cvene sweep: %s line %d: not a JSON object\n", path, line);
        goto out;
    }
    for (const cJSON *e = o->child; e; e = e->next) {
        size_t k = 0;
        while (k < sizeof known_keys / sizeof *known_keys && strcmp(known_keys[k], e->string)) k++;
        if (k == sizeof known_keys / sizeof *known_keys) {
            fprintf(stderr, "cvene sweep: %s line %d: unknown key \"%s\" (base, source, token, token_b, positions, "
                            "subject; or base_ids, source_ids, token_id, token_b_id)\n", path, line, e->string);
            goto out;
        }
    }
    int gb = line_ids(tx, o, "base", path, line, mi->vocab_size, &x->base, &nb);
    if (gb < 0) goto out;
    int gs = line_ids(tx, o, "source", path, line, mi->vocab_size, &x->src, &ns);
    if (gs < 0) goto out;
    if (gb || gs) {
        fprintf(stderr, "cvene sweep: %s line %d: needs a base and a source (text or ids)\n", path, line);
        goto out;
    }
    if (nb != ns) {
        fprintf(stderr, "cvene sweep: %s line %d: the base has %d tokens and the source %d; positions are patched one "
                        "to one\n", path, line, nb, ns);
        goto out;
    }
    if (nb > mi->n_positions) {
        fprintf(stderr, "cvene sweep: %s line %d: %d tokens; the model takes at most %d\n", path, line, nb,
                mi->n_positions);
        goto out;
    }
    x->T = nb;
    if (line_token(tx, o, "token", path, line, mi->vocab_size, tok, &x->token) ||
        line_token(tx, o, "token_b", path, line, mi->vocab_size, tok_b, &x->token_b))
        goto out;
    const int diff = !strcmp(a->metric, "logit-diff");
    if (x->token < 0 || (diff && x->token_b < 0)) {
        fprintf(stderr, "cvene sweep: %s line %d: no metric token%s (give \"token\"%s on the line, or --token%s)\n",
                path, line, x->token < 0 ? "" : " b", x->token < 0 ? "" : "_b", x->token < 0 ? "" : "-b");
        goto out;
    }
    if (x->token_b < 0) x->token_b = 0; /* not read by prob / kl */
    const cJSON *pos = cJSON_GetObjectItemCaseSensitive(o, "positions");
    if (pos && !cJSON_IsObject(pos)) {
        fprintf(stderr, "cvene sweep: %s line %d: positions must be an object {\"role\": position}\n", path, line);
        goto out;
    }
    for (const cJSON *e = pos ? pos->child : NULL; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int64_t)e->valuedouble || e->valuedouble < -nb ||
            e->valuedouble >= nb) {
            fprintf(stderr, "cvene sweep: %s line %d: positions.\"%s\" must be an integer in [-%d, %d) (the line has %d "
                            "tokens; negative counts from the end)\n", path, line, e->string, nb, nb, nb);
            goto out;
        }
        const int p = (int)e->valuedouble;
        if (add_role(x, path, e->string, p < 0 ? nb + p : p)) goto out;
    }
    const cJSON *subj = cJSON_GetObjectItemCaseSensitive(o, "subject");
    if (subj) {
        int32_t *sid = NULL;
        int n = 0, lo = -1;
        if (!cJSON_IsString(subj) || cli_text_encode(tx, subj->valuestring, &sid, &n) != 0) {
            fprintf(stderr, "cvene sweep: %s line %d: subject must be text\n", path, line);
            free(sid);
            goto out;
        }
        for (int t = 0; n > 0 && t + n <= nb && lo < 0; t++)
            if (!memcmp(x->base + t, sid, sizeof(int32_t) * (size_t)n)) lo = t;
        free(sid);
        if (lo < 0) {
            fprintf(stderr, "cvene sweep: %s line %d: the subject \"%s\" is not whole tokens of the base (a leading "
                            "space?)\n", path, line, subj->valuestring);
            goto out;
        }
        if (add_role(x, path, "subject first", lo) || add_role(x, path, "subject last", lo + n - 1)) goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

/* a line's position for a role; -1 when the line has no such role */
static int role_pos(const data_line *x, const char *role) {
    for (int r = 0; r < x->n_named; r++)
        if (!strcmp(x->name[r], role)) return x->pos[r];
    return !strcmp(role, "last") ? x->T - 1 : !strcmp(role, "first") ? 0 : -1;
}

int cli_sweep_data(const sweep_args *a) {
    char err[1024];
    if (a->trace || a->resume || a->stop_after || a->base_text || a->base_ids || a->source_text || a->source_ids ||
        a->positions || a->position_ids || a->window != 1 || a->verify || a->together) {
        fprintf(stderr, "cvene sweep: --data takes its prompts and positions from the file: not with --trace, --resume, "
                        "--stop-after, --base/--source, --positions (use --roles), --position-ids, --window, --verify "
                        "or --together\n");
        return 2;
    }
    int rc = 1;
    cvene_ctx_params cp;
    if (cli_ctx_params("sweep", a->device, a->dtype, a->threads, &cp)) return 2;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cli_text tx;
    memset(&tx, 0, sizeof tx);
    dataset d = {0};
    char *file = NULL, *roles_buf = NULL, *text = NULL, *csv = NULL;
    char *role[MAX_ROLES];
    int nr = 0, *layers = NULL, *cols_pos = NULL, *done = NULL;
    float *per = NULL, *mean = NULL;
    cvene_sweep_example *ex = NULL;
    cJSON *doc = NULL;
    cvene_comm *comm = NULL;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        return 1;
    }
    if (cvene_model_load(ctx, a->model, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    const cvene_model_info mi = cvene_model_get_info(m);
    tx.ctx = ctx, tx.dir = a->model;
    if (cli_ranks_open("sweep", ctx, &comm) != 0) goto done;
    const int rank = cvene_comm_rank(comm);
    if (a->head >= mi.n_head) {
        fprintf(stderr, "cvene sweep: --head %d is outside [0, %d) (the model's heads)\n", a->head, mi.n_head);
        goto done;
    }
    if (a->head < 0 && strcmp(a->component, "head_attention_value_output") != 0) {
        fprintf(stderr, "cvene sweep: --head all needs --component head_attention_value_output\n");
        goto done;
    }
    /* default metric tokens for every line */
    int32_t tok = a->token, tok_b = a->token_b;
    for (int which = 0; which < 2; which++) {
        const char *t = which ? a->token_b_text : a->token_text;
        int32_t *ids = NULL;
        int n = 0;
        if (!t) continue;
        if (cli_text_encode(&tx, t, &ids, &n) != 0 || n != 1 || ids[0] >= mi.vocab_size) {
            fprintf(stderr, "cvene sweep: --token%s \"%s\" must be exactly one token of the model's vocabulary\n",
                    which ? "-b" : "", t);
            free(ids);
            goto done;
        }
        *(which ? &tok_b : &tok) = ids[0];
        free(ids);
    }
    if (tok >= mi.vocab_size || tok_b >= mi.vocab_size) {
        fprintf(stderr, "cvene sweep: --token-id / --token-b-id outside the vocabulary [0, %d)\n", mi.vocab_size);
        goto done;
    }
    /* the lines */
    file = cli_read_file(a->data, err, sizeof err);
    if (!file) {
        fprintf(stderr, "cvene sweep: --data: %s\n", err);
        goto done;
    }
    int line = 0;
    for (char *s = file, *nl; s && *s; s = nl ? nl + 1 : NULL) {
        nl = strchr(s, '\n');
        if (nl) *nl = 0;
        line++;
        if (strspn(s, " \t\r") == strlen(s)) continue;
        if (d.n == d.cap) {
            d.cap = d.cap ? 2 * d.cap : 64;
            data_line *g = realloc(d.l, sizeof(data_line) * (size_t)d.cap);
            if (!g) goto oom;
            d.l = g;
        }
        if (parse_line(&tx, s, a->data, line, &mi, a, tok, tok_b, &d.l[d.n]) != 0) {
            d.n++; /* free what it holds */
            goto done;
        }
        d.n++;
    }
    if (d.n == 0) {
        fprintf(stderr, "cvene sweep: %s has no examples\n", a->data);
        goto done;
    }
    /* the columns */
    const data_line *first = &d.l[0];
    int every_position = 0;
    if (a->roles) {
        roles_buf = strdup(a->roles);
        if (!roles_buf) goto oom;
        for (char *r = strtok(roles_buf, ","); r; r = strtok(NULL, ",")) {
            if (nr == MAX_ROLES) {
                fprintf(stderr, "cvene sweep: --roles names more than %d columns\n", MAX_ROLES);
                goto done;
            }
            role[nr++] = r;
        }
    } else if (first->n_named) {
        for (int r = 0; r < first->n_named; r++) role[nr++] = first->name[r];
        if (role_pos(first, "last") == first->T - 1 && nr < MAX_ROLES) {
            int has = 0;
            for (int r = 0; r < first->n_named; r++) has |= !strcmp(first->name[r], "last");
            if (!has) role[nr++] = "last";
        }
    } else {
        every_position = 1;
        nr = first->T;
    }
    if (nr == 0) {
        fprintf(stderr, "cvene sweep: --roles is empty\n");
        goto done;
    }
    for (int i = 0; i < d.n; i++) {
        data_line *x = &d.l[i];
        x->cols = malloc(sizeof(int) * (size_t)nr);
        if (!x->cols) goto oom;
        if (every_position && x->T != first->T) {
            fprintf(stderr, "cvene sweep: %s line %d has %d tokens and line %d %d: with lines of different lengths, "
                            "name positions per line (\"positions\" or \"subject\") and choose --roles\n",
                    a->data, x->line, x->T, first->line, first->T);
            goto done;
        }
        for (int k = 0; k < nr; k++) {
            x->cols[k] = every_position ? k : role_pos(x, role[k]);
            if (x->cols[k] < 0) {
                fprintf(stderr, "cvene sweep: %s line %d has no role \"%s\" (its roles: first, last", a->data, x->line,
                        role[k]);
                for (int r = 0; r < x->n_named; r++) fprintf(stderr, ", %s", x->name[r]);
                fprintf(stderr, ")\n");
                goto done;
            }
        }
    }
    /* layers */
    layers = malloc(sizeof(int) * (size_t)(mi.n_layer + 1));
    if (!layers) goto oom;
    int nlay = mi.n_layer;
    for (int l = 0; l < nlay; l++) layers[l] = l;
    char why[64];
    snprintf(why, sizeof why, "the model has %d layers", mi.n_layer);
    if (a->layers && (nlay = cli_parse_list("sweep", "--layers", a->layers, layers, 0, mi.n_layer, "layer", why)) <= 0)
        goto done;
    cvene_component comp = cvene_component_from_name(a->component);
    int metric = !strcmp(a->metric, "prob") ? CVENE_METRIC_PROB : !strcmp(a->metric, "logit-diff") ? CVENE_METRIC_LOGIT_DIFF
               : !strcmp(a->metric, "kl") ? CVENE_METRIC_KL : -1;
    const int atp = !strcmp(a->method, "atp");
    if (comp == CVENE_N_COMPONENTS || metric < 0 || (!atp && strcmp(a->method, "exact") != 0)) {
        fprintf(stderr, "cvene sweep: unknown %s \"%s\"\n",
                comp == CVENE_N_COMPONENTS ? "--component" : metric < 0 ? "--metric" : "--method",
                comp == CVENE_N_COMPONENTS ? a->component : metric < 0 ? a->metric : a->method);
        goto done;
    }
    const int nh = a->head < 0 ? mi.n_head : 1, ncol = nh * nr;
    const size_t cells = (size_t)nlay * ncol;
    per = malloc(sizeof(float) * cells * (size_t)d.n);
    mean = malloc(sizeof(float) * cells);
    ex = calloc((size_t)d.n, sizeof *ex);
    cols_pos = malloc(sizeof(int) * (size_t)ncol);
    done = malloc(sizeof(int) * (size_t)nlay);
    if (!per || !mean || !ex || !cols_pos || !done) goto oom;
    for (int i = 0; i < d.n; i++)
        ex[i] = (cvene_sweep_example){d.l[i].base, d.l[i].src, d.l[i].T, d.l[i].cols, d.l[i].token, d.l[i].token_b};
    cli_sweep_bar bar = {0, (int64_t)cells * d.n, cli_now(), isatty(2)};
    cvene_sweep_params p = cvene_sweep_default_params();
    p.component = comp, p.head = a->head < 0 ? CVENE_ALL_HEADS : a->head, p.metric = (cvene_metric)metric;
    p.layers = layers, p.n_layers = nlay, p.naive = a->naive, p.max_batch = a->max_batch, p.atp = atp;
    p.progress = rank == 0 ? cli_sweep_progress : NULL, p.progress_user = &bar; /* on ranks: every rank's examples */
    p.comm = comm; /* the examples split among the ranks */
    if (cvene_comm_size(comm) > 1) { /* every rank reads the same file with the same options */
        cJSON *what = cJSON_CreateObject();
        cJSON_AddStringToObject(what, "data", file);
        cJSON_AddStringToObject(what, "model", a->model);
        cJSON_AddStringToObject(what, "component", cvene_component_name(comp));
        cJSON_AddNumberToObject(what, "head", a->head);
        cJSON_AddStringToObject(what, "metric", a->metric);
        cJSON_AddStringToObject(what, "method", a->method);
        cJSON_AddStringToObject(what, "roles", a->roles ? a->roles : "");
        cJSON_AddNumberToObject(what, "naive", a->naive);
        cJSON_AddItemToObject(what, "layers", cJSON_CreateIntArray(layers, nlay));
        int bad = !what || cli_ranks_agree(ctx, comm, "sweep", what, &mi) != 0;
        cJSON_Delete(what);
        if (bad) goto done;
    }
    cvene_sweep_summary sum;
    const double t0 = cli_now();
    if (cvene_sweep_dataset(m, ex, d.n, nr, &p, per, mean, &sum) != CVENE_OK) {
        /* name the line, not the example's index */
        const char *msg = cvene_ctx_error(ctx);
        int e = -1, skip = 0;
        if (sscanf(msg, "sweep dataset: example %d: %n", &e, &skip) == 1 && skip > 0 && e >= 0 && e < d.n)
            fprintf(stderr, "%scvene sweep: %s line %d: %s\n", bar.tty ? "\n" : "", a->data, d.l[e].line, msg + skip);
        else
            fprintf(stderr, "%scvene: %s\n", bar.tty ? "\n" : "", msg);
        if (cvene_comm_size(comm) > 1) cvene_comm_abort(comm, 1); /* the other ranks would wait for this one */
        goto done;
    }
    const double el = cli_now() - t0;
    if (rank != 0) { /* rank 0 writes the outputs */
        rc = 0;
        goto done;
    }
    if (bar.tty) fprintf(stderr, "\n");
    /* labels: the role (head by head with --head all) */
    char **label = calloc((size_t)ncol, sizeof(char *));
    if (!label) goto oom;
    for (int c = 0; c < ncol && label; c++) {
        const int k = c % nr;
        char buf[160];
        char *tl = every_position ? cli_text_token_label(&tx, first->src[k]) : NULL;
        const char *name = every_position ? (tl ? tl : "?") : role[k];
        if (nh > 1) snprintf(buf, sizeof buf, "h%d %s", c / nr, name);
        else snprintf(buf, sizeof buf, "%s", name);
        free(tl);
        label[c] = strdup(buf);
        cols_pos[c] = first->cols[k]; /* the first line's, for the heatmap's tooltips */
        if (!label[c]) {
            for (int q = 0; q < c; q++) free(label[q]);
            free(label), label = NULL;
        }
    }
    if (!label) goto oom;
    /* PREFIX.json */
    doc = cJSON_CreateObject();
    cJSON *spec = cJSON_AddObjectToObject(doc, "sweep");
    cJSON_AddStringToObject(spec, "model", a->model);
    cJSON_AddStringToObject(spec, "data", a->data);
    cJSON_AddStringToObject(spec, "component", cvene_component_name(comp));
    if (a->head < 0) cJSON_AddStringToObject(spec, "head", "all");
    else cJSON_AddNumberToObject(spec, "head", a->head);
    cJSON_AddStringToObject(spec, "metric", a->metric);
    cJSON_AddStringToObject(spec, "method", atp ? "atp" : "exact");
    cJSON_AddItemToObject(spec, "layers", cJSON_CreateIntArray(layers, nlay));
    cJSON_AddItemToObject(doc, "columns", cJSON_CreateStringArray((const char *const *)label, ncol));
    cJSON_AddNumberToObject(doc, "n_examples", d.n);
    cJSON_AddNumberToObject(doc, "base_score", sum.base_score);
    cJSON_AddNumberToObject(doc, "source_score", sum.source_score);
    cJSON *rows = cJSON_AddArrayToObject(doc, "scores");
    for (int li = 0; li < nlay; li++) cJSON_AddItemToArray(rows, cJSON_CreateFloatArray(mean + (size_t)li * ncol, ncol));
    cJSON *exs = cJSON_AddArrayToObject(doc, "examples");
    for (int i = 0; i < d.n; i++) {
        cJSON *e = cJSON_CreateObject(), *r = cJSON_AddArrayToObject(e, "scores");
        cJSON_AddNumberToObject(e, "line", d.l[i].line);
        cJSON_AddItemToObject(e, "positions", cJSON_CreateIntArray(d.l[i].cols, nr));
        for (int li = 0; li < nlay; li++)
            cJSON_AddItemToArray(r, cJSON_CreateFloatArray(per + cells * i + (size_t)li * ncol, ncol));
        cJSON_AddItemToArray(exs, e);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.json", a->out);
    text = cJSON_Print(doc);
    if (!text || cli_write_atomic(path, text, err, sizeof err) != 0) {
        fprintf(stderr, "cvene sweep: %s\n", text ? err : "out of memory");
        goto free_labels;
    }
    /* PREFIX.csv: every example's rows, then the mean's */
    size_t longest = 0; /* a role name may be long and is written quoted with its quotes doubled */
    for (int k = 0; !every_position && k < nr; k++) longest = strlen(role[k]) > longest ? strlen(role[k]) : longest;
    size_t cap = 128 + (cells * (size_t)(d.n + 1)) * (96 + 2 * longest), o = 0;
    csv = malloc(cap);
    if (!csv) goto free_labels;
    o += (size_t)snprintf(csv + o, cap - o, nh > 1 ? "example,line,layer,head,column,position,score\n"
                                                   : "example,line,layer,column,position,score\n");
    for (int i = 0; i <= d.n; i++)
        for (int li = 0; li < nlay; li++)
            for (int c = 0; c < ncol; c++) {
                const float v = i < d.n ? per[cells * i + (size_t)li * ncol + c] : mean[(size_t)li * ncol + c];
                char col[2 * 256 + 1];
                size_t n = 0;
                for (const char *q = every_position ? "" : role[c % nr]; *q && n + 2 < sizeof col; q++) {
                    if (*q == '"') col[n++] = '"'; /* CSV: a quote inside a quoted field is doubled */
                    col[n++] = *q;
                }
                col[n] = 0;
                char ex_s[16], line_s[16], pos_s[16];
                snprintf(ex_s, sizeof ex_s, i < d.n ? "%d" : "mean", i);
                snprintf(line_s, sizeof line_s, i < d.n ? "%d" : "", i < d.n ? d.l[i].line : 0);
                snprintf(pos_s, sizeof pos_s, i < d.n || every_position ? "%d" : "",
                         i < d.n ? d.l[i].cols[c % nr] : c % nr);
                if (nh > 1)
                    o += (size_t)snprintf(csv + o, cap - o, "%s,%s,%d,%d,\"%s\",%s,%.9g\n", ex_s, line_s, layers[li],
                                          c / nr, col, pos_s, v);
                else
                    o += (size_t)snprintf(csv + o, cap - o, "%s,%s,%d,\"%s\",%s,%.9g\n", ex_s, line_s, layers[li], col,
                                          pos_s, v);
            }
    snprintf(path, sizeof path, "%s.csv", a->out);
    if (cli_write_atomic(path, csv, err, sizeof err) != 0) {
        fprintf(stderr, "cvene sweep: %s\n", err);
        goto free_labels;
    }
    /* PREFIX.svg: the mean */
    snprintf(path, sizeof path, "%s.svg", a->out);
    char tmp[4200], title[512], vlabel[256];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(title, sizeof title, "%s %s, mean of %d examples: %s", atp ? "attribution patching (AtP estimate)"
             : "activation patching", cvene_component_name(comp), d.n, a->model);
    snprintf(vlabel, sizeof vlabel, "%s at the last position (mean base %.4g, mean source %.4g)", a->metric,
             sum.base_score, sum.source_score);
    for (int li = 0; li < nlay; li++) done[li] = 1;
    FILE *f = fopen(tmp, "wb");
    int ok = f && cli_write_heatmap(f, title, vlabel, mean, layers, nlay, (const char *const *)label, cols_pos, ncol,
                                    done) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        fprintf(stderr, "cvene sweep: cannot write %s\n", path);
        goto free_labels;
    }
    printf("dataset sweep: %d examples x %d layers x %d %s, %lld forward passes, %.2f s; mean base %.4g, mean "
           "source %.4g\n", d.n, nlay, ncol, every_position ? "positions" : "columns", (long long)sum.forwards, el,
           sum.base_score, sum.source_score);
    printf("wrote %s.json, %s.csv, %s.svg\n", a->out, a->out, a->out);
    rc = 0;
free_labels:
    for (int c = 0; c < ncol; c++) free(label[c]);
    free(label);
    goto done;
oom:
    fprintf(stderr, "cvene sweep: out of memory\n");
done:
    dataset_free(&d);
    cJSON_Delete(doc);
    free(file), free(roles_buf), free(text), free(csv), free(layers), free(cols_pos), free(done), free(per), free(mean),
        free(ex);
    cli_text_free(&tx);
    cvene_model_free(m);
    cvene_comm_free(comm);
    cvene_ctx_free(ctx);
    return rc;
}
