/* cvene probe: which layers linearly encode a property? Activations at one position per example,
 * collected at every requested site, a softmax-regression probe per site, accuracy on held-out
 * examples (include/cvene.h: cvene_collect, cvene_probe_fit; docs/probes.md). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "bindings/cli/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cvene probe --model DIR --data PROBE.jsonl [--component block_output[,mlp_output...]]\n"
            "                   [--layers 0-7] [--eval EVAL.jsonl | --eval-fraction 0.25] [--steps 300]\n"
            "                   [--lr 1e-2] [--weight-decay 0] [--no-standardize] [--seed 0] [--batch 32]\n"
            "                   [--out DIR] [--threads N] [--device cpu|cuda] [--dtype f32|bf16|f16]\n"
            "                   [--positions P1,P2,...]\n"
            "Asks at which sites a property is linearly readable: runs every example once, keeps the stream of\n"
            "each --component at each of --layers (default: every layer) at the example's position, fits one\n"
            "softmax-regression probe per site on the training examples and reports its accuracy on the\n"
            "held-out ones, next to the majority-class baseline.\n"
            "PROBE.jsonl, one example per line:\n"
            "  {\"text\": \"Today, the favourite colour of Judge Trular is\", \"pos\": -2, \"label\": \"blue\"}\n"
            "  text (the model directory's tokenizer) or \"ids\": [token ids]; pos: a position, negative from the\n"
            "  end, or \"last\" (the default); label: any string or integer (the classes are the distinct\n"
            "  labels, sorted).\n"
            "The probe: logits = W z + b on z, each feature z-scored with the training examples' mean and\n"
            "deviation (--no-standardize: the raw activations), W and b from zero, --steps full-batch Adam\n"
            "steps (torch's defaults, --lr) on the mean cross-entropy plus --weight-decay on W, the way a torch\n"
            "loop would train it (tests/test_probe.cpp checks that it lands on torch's weights).\n"
            "--eval-fraction holds out that share of the examples (a seeded shuffle, --seed); --eval gives\n"
            "the held-out examples instead. --out DIR writes DIR/results.json (every site's accuracies and\n"
            "losses, the classes, the settings) and DIR/probe_<component>_<layer>.safetensors (weight, bias,\n"
            "mean, std; the classes in its metadata).\n"
            "--positions P1,P2,...: a probe grid - every example's activations at each of these positions\n"
            "(negative from the end; the examples' own \"pos\" is then ignored), collected in the same single\n"
            "pass, and a probe per (site, position); --out DIR also writes DIR/probe_grid_<component>.svg, the\n"
            "held-out accuracy over layers x positions.\n"
            "Example (the demo model; tools/make_das_demo.py writes the file):\n"
            "  cvene probe --model assets/demo-gpt2 --data assets/demo-gpt2/das_colour/probe.jsonl\n" CLI_CTX_HELP);
}

typedef struct {
    int n, cap;
    int32_t **ids;
    int *len, *pos;
    char **label;  /* the label's text */
    int32_t *y;    /* its class */
} probe_set;

static void set_free(probe_set *s) {
    for (int i = 0; i < s->n; i++) free(s->ids[i]), free(s->label[i]);
    free(s->ids), free(s->len), free(s->pos), free(s->label), free(s->y);
    memset(s, 0, sizeof *s);
}

/* One line of PROBE.jsonl into s; 0, or -1 after printing "path:line: what". */
static int parse_line(const char *path, int line, const char *text, cli_text *tx, probe_set *s) {
    cJSON *j = cJSON_Parse(text);
    int rc = -1;
    if (!cJSON_IsObject(j)) {
        fprintf(stderr, "cvene probe: %s:%d: not a JSON object\n", path, line);
        goto done;
    }
    for (const cJSON *k = j->child; k; k = k->next)
        if (strcmp(k->string, "text") && strcmp(k->string, "ids") && strcmp(k->string, "pos") &&
            strcmp(k->string, "label")) {
            fprintf(stderr, "cvene probe: %s:%d: unknown key \"%s\" (accepted: text, ids, pos, label)\n", path, line,
                    k->string);
            goto done;
        }
    const cJSON *t = cJSON_GetObjectItem(j, "text"), *ids = cJSON_GetObjectItem(j, "ids");
    const cJSON *p = cJSON_GetObjectItem(j, "pos"), *l = cJSON_GetObjectItem(j, "label");
    if (!!t == !!ids) {
        fprintf(stderr, "cvene probe: %s:%d: give \"text\" or \"ids\" (one of them)\n", path, line);
        goto done;
    }
    if (!cJSON_IsString(l) && !cJSON_IsNumber(l)) {
        fprintf(stderr, "cvene probe: %s:%d: \"label\" must be a string or a number\n", path, line);
        goto done;
    }
    if (s->n == s->cap) {
        const int cap = s->cap ? 2 * s->cap : 256;
        int32_t **a = realloc(s->ids, sizeof *a * cap);
        if (a) s->ids = a;
        int *b = realloc(s->len, sizeof *b * cap);
        if (b) s->len = b;
        int *c = realloc(s->pos, sizeof *c * cap);
        if (c) s->pos = c;
        char **d = realloc(s->label, sizeof *d * cap);
        if (d) s->label = d;
        if (!a || !b || !c || !d) {
            fprintf(stderr, "cvene probe: out of memory\n");
            goto done;
        }
        s->cap = cap;
    }
    int32_t *x = NULL;
    int n = 0;
    if (t) {
        if (!cJSON_IsString(t) || cli_text_encode(tx, t->valuestring, &x, &n)) {
            if (!cJSON_IsString(t)) fprintf(stderr, "cvene probe: %s:%d: \"text\" must be a string\n", path, line);
            goto done;
        }
    } else {
        n = cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : 0;
        x = n ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
        int q = 0;
        for (const cJSON *e = n ? ids->child : NULL; e; e = e->next, q++) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble > 2147483647.0) {
                fprintf(stderr, "cvene probe: %s:%d: \"ids\"[%d] is not a token id\n", path, line, q);
                free(x);
                goto done;
            }
            x[q] = (int32_t)e->valueint;
        }
    }
    if (n < 1) {
        fprintf(stderr, "cvene probe: %s:%d: the example has no tokens\n", path, line);
        free(x);
        goto done;
    }
    int pos = -1;
    if (p && !(cJSON_IsString(p) && !strcmp(p->valuestring, "last"))) {
        if (!cJSON_IsNumber(p) || p->valuedouble != floor(p->valuedouble) || p->valuedouble < -n ||
            p->valuedouble >= n) {
            fprintf(stderr, "cvene probe: %s:%d: \"pos\" must be \"last\" or a position in [%d, %d) (%d tokens)\n", path,
                    line, -n, n, n);
            free(x);
            goto done;
        }
        pos = p->valueint;
    }
    char buf[64];
    if (cJSON_IsNumber(l)) snprintf(buf, sizeof buf, "%.17g", l->valuedouble);
    char *lab = strdup(cJSON_IsString(l) ? l->valuestring : buf);
    if (!lab) {
        free(x);
        goto done;
    }
    s->ids[s->n] = x, s->len[s->n] = n, s->pos[s->n] = pos, s->label[s->n] = lab;
    s->n++;
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

static int load_set(const char *path, cli_text *tx, probe_set *s) {
    char err[1024];
    char *text = cli_read_file(path, err, sizeof err);
    if (!text) {
        fprintf(stderr, "cvene probe: %s\n", err);
        return -1;
    }
    int line = 0, rc = 0;
    for (char *p = text; *p && rc == 0;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        const char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (*q) rc = parse_line(path, line, p, tx, s);
        p = nl ? nl + 1 : p + strlen(p);
    }
    free(text);
    if (rc == 0 && s->n == 0) {
        fprintf(stderr, "cvene probe: %s: no examples\n", path);
        rc = -1;
    }
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The classes: the distinct labels of both sets, sorted; each example's class in y. */
static int classes_of(probe_set *a, probe_set *b, char ***out) {
    const int n = a->n + b->n;
    char **all = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    if (!all) return -1;
    for (int i = 0; i < a->n; i++) all[i] = a->label[i];
    for (int i = 0; i < b->n; i++) all[a->n + i] = b->label[i];
    qsort(all, (size_t)n, sizeof *all, cmp_str);
    int C = 0;
    for (int i = 0; i < n; i++)
        if (C == 0 || strcmp(all[C - 1], all[i])) all[C++] = all[i];
    probe_set *sets[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        probe_set *s = sets[k];
        s->y = malloc(sizeof(int32_t) * (size_t)(s->n ? s->n : 1));
        if (!s->y) {
            free(all);
            return -1;
        }
        for (int i = 0; i < s->n; i++) {
            char **hit = bsearch(&s->label[i], all, (size_t)C, sizeof *all, cmp_str);
            s->y[i] = (int32_t)(hit - all);
        }
    }
    *out = all;
    return C;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Move a seeded share of a's examples (the last ones after a Fisher-Yates shuffle) into b. */
static int split_set(probe_set *a, double fraction, uint64_t seed, probe_set *b) {
    const int n_held = (int)lround(fraction * a->n);
    if (n_held < 1 || n_held >= a->n) {
        fprintf(stderr, "cvene probe: --eval-fraction %g of %d examples leaves no %s examples\n", fraction, a->n,
                n_held < 1 ? "held-out" : "training");
        return -1;
    }
    uint64_t st = seed;
    for (int i = a->n - 1; i > 0; i--) {
        const int j = (int)(splitmix(&st) % (uint64_t)(i + 1));
        int32_t *ids = a->ids[i];
        char *lab = a->label[i];
        const int len = a->len[i], pos = a->pos[i];
        a->ids[i] = a->ids[j], a->label[i] = a->label[j], a->len[i] = a->len[j], a->pos[i] = a->pos[j];
        a->ids[j] = ids, a->label[j] = lab, a->len[j] = len, a->pos[j] = pos;
    }
    b->cap = b->n = n_held;
    b->ids = malloc(sizeof *b->ids * n_held), b->len = malloc(sizeof(int) * n_held);
    b->pos = malloc(sizeof(int) * n_held), b->label = malloc(sizeof(char *) * n_held);
    if (!b->ids || !b->len || !b->pos || !b->label) return -1;
    const int k0 = a->n - n_held;
    memcpy(b->ids, a->ids + k0, sizeof *b->ids * n_held), memcpy(b->len, a->len + k0, sizeof(int) * n_held);
    memcpy(b->pos, a->pos + k0, sizeof(int) * n_held), memcpy(b->label, a->label + k0, sizeof(char *) * n_held);
    a->n = k0;
    return 0;
}

/* pick rows first .. first + n - 1 of the site's activations at grid column k of R (rows e R + k) */
static float *rows(const cvene_activations *A, int site, int first, int n, int k, int R) {
    const int D = cvene_activations_width(A, site);
    float *x = malloc(sizeof(float) * (size_t)n * D);
    for (int i = 0; x && i < n; i++)
        memcpy(x + (size_t)i * D, cvene_activations_data(A, site) + ((size_t)(first + i) * R + k) * D,
               sizeof(float) * (size_t)D);
    return x;
}

/* DIR/probe_grid_<component>.svg: held-out accuracy over layers x positions, one per component */
static int write_grid_svgs(const char *out, const char *model, const cvene_component *comps, int n_comp,
                           const int *lay, int nl, const int *gpos, int R, const float *acc) {
    char **labels = calloc((size_t)R, sizeof(char *));
    int *done = malloc(sizeof(int) * (size_t)nl), rc = 0;
    for (int k = 0; labels && k < R; k++) {
        labels[k] = malloc(24);
        if (!labels[k]) rc = -1;
        else snprintf(labels[k], 24, "%d", gpos[k]);
    }
    if (rc) fprintf(stderr, "cvene probe: out of memory\n");
    for (int l = 0; done && l < nl; l++) done[l] = 1;
    for (int c = 0; c < n_comp && rc == 0; c++) {
        char path[4200], title[512];
        snprintf(path, sizeof path, "%.4000s/probe_grid_%s.svg", out, cvene_component_name(comps[c]));
        snprintf(title, sizeof title, "probe accuracy, %s: %s", cvene_component_name(comps[c]), model);
        FILE *f = labels && done ? fopen(path, "w") : NULL;
        int ok = f && cli_write_heatmap(f, title, "held-out accuracy (columns: positions, negative from the end)",
                                        acc + (size_t)c * nl * R, lay, nl, (const char *const *)labels, gpos, R,
                                        done) == 0;
        if (f && fclose(f) != 0) ok = 0;
        if (!ok) {
            fprintf(stderr, "cvene probe: cannot write %s\n", path);
            rc = -1;
        }
    }
    for (int k = 0; labels && k < R; k++) free(labels[k]);
    free(labels), free(done);
    return rc;
}

int cmd_probe(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *eval = NULL, *out = NULL, *components = "block_output", *layers = NULL;
    const char *device = "cpu", *dtype = "f32", *grid = NULL;
    int threads = 0, batch = 32, standardize = 1;
    double fraction = 0.25;
    uint64_t seed = 0;
    cvene_probe_params pp = cvene_probe_default_params();
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(k, "--no-standardize")) {
            standardize = 0;
            continue;
        }
        if (!v) {
            fprintf(stderr, "cvene probe: option %s needs a value\n", k);
            return 2;
        }
        i++;
        const char **sv = !strcmp(k, "--model") ? &model : !strcmp(k, "--data") ? &data : !strcmp(k, "--eval") ? &eval
                        : !strcmp(k, "--out") ? &out : !strcmp(k, "--component") ? &components
                        : !strcmp(k, "--layers") ? &layers : !strcmp(k, "--device") ? &device
                        : !strcmp(k, "--dtype") ? &dtype : !strcmp(k, "--positions") ? &grid : NULL;
        if (sv) {
            *sv = v;
            continue;
        }
        static const struct { const char *opt; double lo, hi; int integer; } ranges[] = {
            {"--steps", 1, 1e7, 1}, {"--lr", 1e-12, 1e3, 0}, {"--weight-decay", 0, 1e3, 0},
            {"--eval-fraction", 0.01, 0.99, 0}, {"--seed", 0, 1.8e19, 1}, {"--batch", 1, 65536, 1},
            {"--threads", 0, 1024, 1}};
        size_t q = 0;
        while (q < sizeof ranges / sizeof *ranges && strcmp(ranges[q].opt, k)) q++;
        if (q == sizeof ranges / sizeof *ranges) {
            fprintf(stderr, "cvene probe: unknown option %s (see cvene probe --help)\n", k);
            return 2;
        }
        char *end;
        errno = 0;
        const double x = strtod(v, &end);
        if (*end || errno || !isfinite(x) || x < ranges[q].lo || x > ranges[q].hi ||
            (ranges[q].integer && floor(x) != x)) {
            fprintf(stderr, "cvene probe: %s %s must be %s in [%g, %g]\n", k, v,
                    ranges[q].integer ? "an integer" : "a number", ranges[q].lo, ranges[q].hi);
            return 2;
        }
        if (!strcmp(k, "--steps")) pp.steps = (int)x;
        else if (!strcmp(k, "--lr")) pp.lr = x;
        else if (!strcmp(k, "--weight-decay")) pp.weight_decay = x;
        else if (!strcmp(k, "--eval-fraction")) fraction = x;
        else if (!strcmp(k, "--seed")) seed = (uint64_t)x;
        else if (!strcmp(k, "--batch")) batch = (int)x;
        else threads = (int)x;
    }
    pp.standardize = standardize;
    if (!model || !data) {
        fprintf(stderr, "cvene probe: --model and --data are required (see cvene probe --help)\n");
        return 2;
    }
    int gpos[256], R = 1;
    if (grid && (R = cli_parse_positions("probe", "--positions", grid, gpos, 256)) < 0) return 2;
    /* the components, checked before anything loads */
    cvene_component comps[CVENE_N_COMPONENTS];
    int n_comp = 0;
    for (const char *p = components; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        const cvene_component c = cvene_component_from_name(name);
        if (c == CVENE_N_COMPONENTS || n_comp == CVENE_N_COMPONENTS) {
            fprintf(stderr, "cvene probe: --component \"%s\" is not a component (block_output, mlp_output, ...)\n",
                    name);
            return 2;
        }
        comps[n_comp++] = c;
        p = e ? e + 1 : p + len;
    }
    cvene_ctx_params cp;
    if (cli_ctx_params("probe", device, dtype, threads, &cp)) return 2;
    char err[1024];
    int rc = 1, C = 0, *lay = NULL;
    char **classes = NULL;
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_comm *comm = NULL; /* on ranks: the collect split by batches; rank 0 trains the probes */
    cvene_activations *A = NULL;
    cvene_site *sites = NULL;
    cJSON *res = NULL;
    float *grid_acc = NULL; /* (n_sites, R) held-out accuracies */
    probe_set tr, ho;
    memset(&tr, 0, sizeof tr), memset(&ho, 0, sizeof ho);
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        return 1;
    }
    cli_text tx = {ctx, model, NULL, 0};
    if (cvene_model_load(ctx, model, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    const cvene_model_info mi = cvene_model_get_info(m);
    cJSON *cmd = cJSON_CreateStringArray((const char *const *)argv, argc);
    const int agreed = cmd && cli_ranks_open("probe", ctx, &comm) == 0 && cli_ranks_agree(ctx, comm, "probe", cmd, &mi) == 0;
    cJSON_Delete(cmd);
    if (!agreed) goto done;
    const int rank = cvene_comm_rank(comm);
    lay = malloc(sizeof(int) * (size_t)mi.n_layer);
    if (!lay) goto oom;
    int nl = mi.n_layer;
    for (int l = 0; l < nl; l++) lay[l] = l;
    char why[64];
    snprintf(why, sizeof why, "the model has %d layers", mi.n_layer);
    if (layers && (nl = cli_parse_list("probe", "--layers", layers, lay, 0, mi.n_layer, "layer", why)) <= 0) goto done;
    if (load_set(data, &tx, &tr)) goto done;
    if (eval ? load_set(eval, &tx, &ho) : split_set(&tr, fraction, seed, &ho)) goto done;
    if ((C = classes_of(&tr, &ho, &classes)) < 0) goto oom;
    if (C < 2) {
        fprintf(stderr, "cvene probe: every example has the label \"%s\": a probe needs at least 2 classes\n",
                classes[0]);
        goto done;
    }
    /* collect train and held-out examples in one pass per batch */
    const int n_sites = n_comp * nl, N = tr.n + ho.n;
    sites = malloc(sizeof *sites * (size_t)n_sites);
    const int32_t **ids = malloc(sizeof *ids * (size_t)N);
    int *lens = malloc(sizeof(int) * (size_t)N), *pos = malloc(sizeof(int) * (size_t)N * R);
    if (!sites || !ids || !lens || !pos) {
        free(ids), free(lens), free(pos);
        goto oom;
    }
    for (int c = 0; c < n_comp; c++)
        for (int l = 0; l < nl; l++) sites[c * nl + l] = (cvene_site){comps[c], lay[l]};
    for (int i = 0; i < N; i++) {
        const probe_set *s = i < tr.n ? &tr : &ho;
        const int k = i < tr.n ? i : i - tr.n;
        ids[i] = s->ids[k], lens[i] = s->len[k];
        for (int q = 0; q < R; q++) pos[(size_t)i * R + q] = grid ? gpos[q] : s->pos[k];
    }
    if (rank == 0)
        printf("probing %d site%s (%d component%s x %d layer%s%s%s) of %s: %d training and %d held-out examples, %d classes\n",
           n_sites * R, n_sites * R == 1 ? "" : "s", n_comp, n_comp == 1 ? "" : "s", nl, nl == 1 ? "" : "s",
           grid ? " x positions " : "", grid ? grid : "", model, tr.n, ho.n, C);
    fflush(stdout);
    const double t0 = cli_now();
    const cvene_status cst = cvene_collect_ranks(comm, m, ids, lens, pos, R, N, sites, n_sites, batch, &A);
    free(ids), free(lens), free(pos);
    if (cst != CVENE_OK) {
        fprintf(stderr, "cvene%s: %s\n", cvene_comm_size(comm) > 1 ? " probe (ranks)" : "", cvene_ctx_error(ctx));
        if (cvene_comm_size(comm) > 1) cvene_comm_abort(comm, 1); /* the others would wait for this rank */
        goto done;
    }
    if (rank != 0) { /* every rank holds every activation; rank 0 fits the probes and writes */
        rc = 0;
        goto done;
    }
    const double t1 = cli_now();
    int *count = calloc((size_t)C, sizeof(int)), major = 0;
    if (!count) goto oom;
    for (int i = 0; i < tr.n; i++) count[tr.y[i]]++;
    for (int c = 1; c < C; c++) major = count[c] > count[major] ? c : major;
    int base_right = 0;
    for (int i = 0; i < ho.n; i++) base_right += ho.y[i] == major;
    free(count);
    printf("activations collected in %.2f s; majority class \"%s\": held-out accuracy %.4f\n", t1 - t0, classes[major],
           (double)base_right / ho.n);
    if (grid) printf("%-24s %6s %8s %10s %14s %14s\n", "component", "layer", "position", "train acc", "held-out acc",
                     "held-out loss");
    else printf("%-24s %6s %10s %14s %14s\n", "component", "layer", "train acc", "held-out acc", "held-out loss");
    grid_acc = malloc(sizeof(float) * (size_t)n_sites * R);
    if (!grid_acc) goto oom;
    res = cJSON_CreateObject();
    cJSON *jsites = cJSON_AddArrayToObject(res, "sites");
    int best = -1, best_k = 0;
    double best_acc = -1;
    if (out && mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cvene probe: --out %s: cannot create the directory: %s\n", out, strerror(errno));
        goto done;
    }
    for (int sk = 0; sk < n_sites * R; sk++) {
        const int s = sk / R, k = sk % R;
        const int D = cvene_activations_width(A, s);
        float *Xtr = rows(A, s, 0, tr.n, k, R), *Xho = rows(A, s, tr.n, ho.n, k, R);
        cvene_probe *pr = NULL;
        double acc_tr = 0, acc_ho = 0, loss_ho = 0;
        cvene_status st = Xtr && Xho ? cvene_probe_fit(ctx, Xtr, tr.y, tr.n, D, C, &pp, &pr) : CVENE_ERR_OOM;
        if (st == CVENE_OK) st = cvene_probe_evaluate(pr, Xtr, tr.y, tr.n, &acc_tr, NULL);
        if (st == CVENE_OK) st = cvene_probe_evaluate(pr, Xho, ho.y, ho.n, &acc_ho, &loss_ho);
        if (st == CVENE_OK && out) {
            char path[4200], *cls = NULL;
            cJSON *jc = cJSON_CreateStringArray((const char *const *)classes, C);
            cls = cJSON_PrintUnformatted(jc);
            cJSON_Delete(jc);
            if (grid)
                snprintf(path, sizeof path, "%.4000s/probe_%s_%d_pos%d.safetensors", out,
                         cvene_component_name(sites[s].component), sites[s].layer, gpos[k]);
            else
                snprintf(path, sizeof path, "%.4000s/probe_%s_%d.safetensors", out,
                         cvene_component_name(sites[s].component), sites[s].layer);
            const char *meta[] = {"producer", "cvene probe", "classes", cls ? cls : "[]"};
            st = cvene_probe_save(pr, path, meta, 2);
            free(cls);
        }
        free(Xtr), free(Xho);
        cvene_probe_free(pr);
        if (st != CVENE_OK) {
            fprintf(stderr, "cvene probe: %s layer %d: %s\n", cvene_component_name(sites[s].component), sites[s].layer,
                    cvene_ctx_error(ctx));
            goto done;
        }
        if (grid)
            printf("%-24s %6d %8d %10.4f %14.4f %14.4f\n", cvene_component_name(sites[s].component), sites[s].layer,
                   gpos[k], acc_tr, acc_ho, loss_ho);
        else
            printf("%-24s %6d %10.4f %14.4f %14.4f\n", cvene_component_name(sites[s].component), sites[s].layer,
                   acc_tr, acc_ho, loss_ho);
        fflush(stdout);
        grid_acc[sk] = (float)acc_ho;
        if (acc_ho > best_acc) best_acc = acc_ho, best = s, best_k = k;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "component", cvene_component_name(sites[s].component));
        cJSON_AddNumberToObject(j, "layer", sites[s].layer);
        if (grid) cJSON_AddNumberToObject(j, "position", gpos[k]);
        cJSON_AddNumberToObject(j, "width", D);
        cJSON_AddNumberToObject(j, "train_accuracy", acc_tr);
        cJSON_AddNumberToObject(j, "held_out_accuracy", acc_ho);
        cJSON_AddNumberToObject(j, "held_out_loss", loss_ho);
        cJSON_AddItemToArray(jsites, j);
    }
    if (grid)
        printf("best: %s layer %d position %d, held-out accuracy %.4f (%.2f s in all)\n",
               cvene_component_name(sites[best].component), sites[best].layer, gpos[best_k], best_acc, cli_now() - t0);
    else
        printf("best: %s layer %d, held-out accuracy %.4f (%.2f s in all)\n",
               cvene_component_name(sites[best].component), sites[best].layer, best_acc, cli_now() - t0);
    if (grid && out && write_grid_svgs(out, model, comps, n_comp, lay, nl, gpos, R, grid_acc) != 0) goto done;
    if (out) {
        cJSON_AddItemToObject(res, "classes", cJSON_CreateStringArray((const char *const *)classes, C));
        cJSON_AddStringToObject(res, "model", model);
        cJSON_AddStringToObject(res, "data", data);
        cJSON_AddNumberToObject(res, "n_train", tr.n);
        cJSON_AddNumberToObject(res, "n_held_out", ho.n);
        cJSON_AddNumberToObject(res, "majority_held_out_accuracy", (double)base_right / ho.n);
        cJSON *jp = cJSON_AddObjectToObject(res, "params");
        cJSON_AddNumberToObject(jp, "steps", pp.steps);
        cJSON_AddNumberToObject(jp, "lr", pp.lr);
        cJSON_AddNumberToObject(jp, "weight_decay", pp.weight_decay);
        cJSON_AddBoolToObject(jp, "standardize", pp.standardize);
        cJSON_AddNumberToObject(jp, "seed", (double)seed);
        char path[4200], tmp[4300];
        snprintf(path, sizeof path, "%.4000s/results.json", out);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        char *text = cJSON_Print(res);
        FILE *f = text ? fopen(tmp, "w") : NULL;
        const int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (f && fclose(f) != 0) f = NULL;
        free(text);
        if (!ok || !f || rename(tmp, path) != 0) {
            fprintf(stderr, "cvene probe: cannot write %s: %s\n", path, strerror(errno));
            remove(tmp);
            goto done;
        }
        printf("wrote %s and %d probe file%s\n", path, n_sites * R, n_sites * R == 1 ? "" : "s");
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "cvene probe: out of memory\n");
done:
    cJSON_Delete(res);
    free(classes), free(lay), free(sites), free(grid_acc);
    cvene_activations_free(A);
    set_free(&tr), set_free(&ho);
    cli_text_free(&tx);
    cvene_model_free(m);
    cvene_comm_free(comm);
    cvene_ctx_free(ctx);
    return rc;
}
