/* cvene generate: decoding with (or without) interventions, tokens streamed as they come.
 *   cvene generate --model DIR (--prompt TEXT ... | --ids IDS | --inputs INPUTS.json)
 *                  [--config CONFIG.json [--weights DIR]] [--intervene-on-prompt] [--calls A-B]
 *                  [--max-new-tokens N] [--sample --temperature T --top-k K --top-p P --seed S]
 *                  [--eos IDS | --no-eos] [--pad ID] [--original] [--json]
 * Prompts of different lengths are left-padded (as transformers asks of decoder-only models). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "models/safetensors.h"

#define MAX_PROMPTS 256

static void usage(void) {
    printf("usage: cvene generate --model DIR (--prompt TEXT [--prompt TEXT ...] | --ids IDS | --inputs INPUTS.json)\n"
           "                      [--config CONFIG.json [--weights DIR]] [--intervene-on-prompt] [--calls A-B]\n"
           "                      [--max-new-tokens N] [--sample] [--temperature T] [--top-k K] [--top-p P]\n"
           "                      [--seed S] [--eos IDS | --no-eos] [--pad ID] [--original] [--json] [--quiet]\n"
           "                      [--threads N] [--device cpu|cuda] [--dtype f32|bf16|f16]\n" CLI_CTX_HELP
           "  --prompt TEXT     a prompt (repeat for a batch; shorter ones are left-padded and masked)\n"
           "  --ids IDS         token ids instead, \"1,2,3;4,5\" (';' between prompts)\n"
           "  --inputs FILE     a cvene run request (base with input_ids / attention_mask, left-padded; sources,\n"
           "                    unit_locations, subspaces) for the config's interventions\n"
           "  --config FILE     interventions while decoding (pyvene's IntervenableModel.generate semantics):\n"
           "                      default: every generated token's call (not the prompt's), at the request's\n"
           "                        unit_locations, which index the call's one new position ({\"base\": 0}\n"
           "                        without any);\n"
           "                      --intervene-on-prompt with unit_locations: the prompt's call only;\n"
           "                      --intervene-on-prompt without unit_locations: every call, on the whole stream\n"
           "                        (steering: a constant-source AdditionIntervention)\n"
           "  --calls A-B       only calls A..B (call 0 reads the prompt and gives token 0; call j reads token\n"
           "                    j-1): e.g. 1-5; \"A-\" has no end\n"
           "  --max-new-tokens N  tokens to generate per prompt (default 20)\n"
           "  --sample          sample instead of greedy: --temperature (1), --top-k (0: off), --top-p (1: off),\n"
           "                    --seed (0): the same seed gives the same tokens on the same backend\n"
           "  --eos IDS         a row ends after one of these ids (default: config.json's eos_token_id);\n"
           "                    --no-eos never ends early; --pad ID what ended rows emit (default: the first eos)\n"
           "  --original        also generate without the interventions, and print both\n"
           "  --json            one JSON object: ids, text, steps, seconds (no streaming)\n"
           "  --out FILE        a safetensors file numpy / torch read: ids (B, T) int32 (prompt then generated),\n"
           "                    logits (B, steps, V) f32 of each step, and each CollectIntervention's tensor of\n"
           "                    each call it acted on (collected.K, in pyvene's order)\n"
           "  --quiet           no streaming, only the results\n");
}

/* "a,b;c" -> rows of ids (left-padded into ids / mask (B, T)); returns B or -1. */
static int parse_rows(const char *s, int32_t **ids, int32_t **mask, int *T, int32_t pad) {
    int B = 1;
    for (const char *p = s; *p; p++) B += *p == ';';
    int *len = calloc((size_t)B, sizeof(int));
    int32_t *flat = calloc(strlen(s) + 1, sizeof(int32_t));
    int n = 0, b = 0, ok = len && flat;
    for (const char *p = s; ok && *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "cvene generate: --ids: expected a token id at \"%.20s\"\n", p);
            ok = 0;
            break;
        }
        flat[n++] = (int32_t)v, len[b]++;
        p = end;
        if (*p == ',') p++;
        else if (*p == ';') p++, b++;
        else if (*p) {
            fprintf(stderr, "cvene generate: --ids: unexpected character '%c'\n", *p);
            ok = 0;
        }
    }
    *T = 0;
    for (int i = 0; ok && i < B; i++) {
        if (!len[i]) {
            fprintf(stderr, "cvene generate: --ids: prompt %d is empty\n", i);
            ok = 0;
        }
        if (len[i] > *T) *T = len[i];
    }
    *ids = ok ? malloc(sizeof(int32_t) * (size_t)B * *T) : NULL;
    *mask = ok ? malloc(sizeof(int32_t) * (size_t)B * *T) : NULL;
    if (ok && (!*ids || !*mask)) ok = 0;
    for (int i = 0, k = 0; ok && i < B; i++)
        for (int t = 0; t < *T; t++) {
            const int pad_here = t < *T - len[i];
            (*ids)[(size_t)i * *T + t] = pad_here ? pad : flat[k++];
            (*mask)[(size_t)i * *T + t] = !pad_here;
        }
    free(len), free(flat);
    if (!ok) {
        free(*ids), free(*mask);
        *ids = *mask = NULL;
        return -1;
    }
    return B;
}

/* config.json's eos_token_id (an int or a list), or none. */
static int model_eos(const char *dir, int32_t *out, int max) {
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = cli_read_file(path, err, sizeof err);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *e = j ? cJSON_GetObjectItem(j, "eos_token_id") : NULL;
    int n = 0;
    if (cJSON_IsNumber(e)) out[n++] = (int32_t)e->valueint;
    const cJSON *v;
    if (cJSON_IsArray(e)) cJSON_ArrayForEach(v, e) if (cJSON_IsNumber(v) && n < max) out[n++] = (int32_t)v->valueint;
    cJSON_Delete(j);
    return n;
}

typedef struct {
    cli_text *tx;
    int on;
} stream_state;

/* Batch 1: each token's text as it comes. */
static int stream_token(void *user, int step, const int32_t *ids, int B) {
    stream_state *s = user;
    (void)step;
    if (!s->on || B != 1) return 0;
    char *t = cli_text_token_label(s->tx, ids[0]);
    fputs(t ? t : "?", stdout);
    fflush(stdout);
    free(t);
    return 0;
}

static char *decode_row(cli_text *tx, const int32_t *ids, int n) {
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    for (int k = 0; out && k < n; k++) {
        char *t = cli_text_token_label(tx, ids[k]);
        const size_t l = t ? strlen(t) : 0;
        if (len + l + 1 > cap) {
            char *grown = realloc(out, (cap = 2 * (len + l + 1)));
            if (!grown) free(out);
            out = grown;
        }
        if (out && t) memcpy(out + len, t, l), len += l;
        free(t);
    }
    if (out) out[len] = 0;
    return out;
}

static void print_rows(cli_text *tx, const char *what, const cvene_generation *g, const int32_t *mask) {
    int B, T;
    const int32_t *ids = cvene_generation_ids(g, &B, &T);
    const int T0 = cvene_generation_prompt_len(g);
    for (int b = 0; b < B; b++) {
        int first = 0; /* the prompt without its padding */
        while (mask && first < T0 && !mask[(size_t)b * T0 + first]) first++;
        char *p = decode_row(tx, ids + (size_t)b * T + first, T0 - first);
        char *c = decode_row(tx, ids + (size_t)b * T + T0, T - T0);
        printf("%s[%d] %s|%s\n", what, b, p ? p : "", c ? c : "");
        free(p), free(c);
    }
}

static cJSON *json_rows(cli_text *tx, const cvene_generation *g) {
    int B, T;
    const int32_t *ids = cvene_generation_ids(g, &B, &T);
    const int T0 = cvene_generation_prompt_len(g);
    cJSON *o = cJSON_CreateObject(), *ja = cJSON_AddArrayToObject(o, "ids"), *ta = cJSON_AddArrayToObject(o, "text");
    for (int b = 0; b < B; b++) {
        cJSON *row = cJSON_CreateArray();
        for (int t = T0; t < T; t++) cJSON_AddItemToArray(row, cJSON_CreateNumber(ids[(size_t)b * T + t]));
        cJSON_AddItemToArray(ja, row);
        char *s = decode_row(tx, ids + (size_t)b * T + T0, T - T0);
        cJSON_AddItemToArray(ta, cJSON_CreateString(s ? s : ""));
        free(s);
    }
    cJSON_AddNumberToObject(o, "steps", cvene_generation_steps(g));
    return o;
}

/* --out: ids, logits and the collected tensors as one safetensors file (written atomically by st_write). */
static int write_out(cvene_ctx *ctx, const char *path, const cvene_generation *g, const char *model_dir) {
    int B, T, steps, V;
    const int32_t *ids = cvene_generation_ids(g, &B, &T);
    const float *logits = cvene_generation_logits(g, &B, &steps, &V);
    const int nc = cvene_generation_n_collected(g);
    st_out_tensor *ts = calloc((size_t)nc + 2, sizeof *ts);
    char(*names)[32] = calloc((size_t)nc + 1, 32);
    if (!ts || !names) {
        free(ts), free(names);
        fprintf(stderr, "cvene: out of memory\n");
        return -1;
    }
    ts[0] = (st_out_tensor){"ids", ST_I32, 2, {B, T}, ids};
    ts[1] = (st_out_tensor){"logits", ST_F32, 3, {B, steps, V}, logits};
    for (int k = 0; k < nc; k++) {
        const cvene_tensor_view t = cvene_generation_collected(g, k, NULL);
        snprintf(names[k], 32, "collected.%d", k);
        ts[2 + k] = (st_out_tensor){names[k], ST_F32, t.ndim, {0}, t.data};
        for (int d = 0; d < t.ndim; d++) ts[2 + k].shape[d] = t.shape[d];
    }
    const char *meta[] = {"producer", "cvene generate", "model", model_dir};
    const cvene_status st = st_write(ctx, path, ts, nc + 2, meta, 2);
    free(ts), free(names);
    if (st != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        return -1;
    }
    fprintf(stderr, "wrote %s (ids, logits%s)\n", path, nc ? ", collected.*" : "");
    return 0;
}

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi)) {
        fprintf(stderr, "cvene generate: %s = \"%s\" must be a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *ids_s = NULL, *inputs_path = NULL, *config_path = NULL, *weights = NULL;
    const char *device = "cpu", *dtype = "f32", *eos_s = NULL, *calls_s = NULL, *out_path = NULL;
    const char *prompts[MAX_PROMPTS];
    int n_prompts = 0, threads = 0, json = 0, quiet = 0, original = 0, no_eos = 0;
    cvene_gen_params gp = cvene_gen_default_params();
    gp.max_new_tokens = 20;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--sample")) { gp.do_sample = 1; continue; }
        if (!strcmp(a, "--intervene-on-prompt")) { gp.intervene_on_prompt = 1; continue; }
        if (!strcmp(a, "--original")) { original = 1; continue; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--no-eos")) { no_eos = 1; continue; }
        if (!v) {
            fprintf(stderr, "cvene generate: option %s needs a value\n", a);
            return 2;
        }
        double x;
        i++;
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--prompt")) {
            if (n_prompts == MAX_PROMPTS) {
                fprintf(stderr, "cvene generate: at most %d --prompt\n", MAX_PROMPTS);
                return 2;
            }
            prompts[n_prompts++] = v;
        } else if (!strcmp(a, "--ids")) ids_s = v;
        else if (!strcmp(a, "--inputs")) inputs_path = v;
        else if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--eos")) eos_s = v;
        else if (!strcmp(a, "--calls")) calls_s = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--max-new-tokens")) {
            if (parse_num(a, v, 1, 1 << 20, &x)) return 2;
            gp.max_new_tokens = (int)x;
        } else if (!strcmp(a, "--temperature")) {
            if (parse_num(a, v, 0, 1e30, &x)) return 2;
            gp.temperature = (float)x;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_num(a, v, 0, 1 << 30, &x)) return 2;
            gp.top_k = (int)x;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_num(a, v, -1e30, 1e30, &x)) return 2; /* the library names a value outside (0, 1] */
            gp.top_p = (float)x;
        } else if (!strcmp(a, "--seed")) {
            if (parse_num(a, v, 0, 9007199254740992.0, &x)) return 2;
            gp.seed = (uint64_t)x;
        } else if (!strcmp(a, "--pad")) {
            if (parse_num(a, v, 0, INT32_MAX, &x)) return 2;
            gp.pad_id = (int32_t)x;
        } else if (!strcmp(a, "--threads")) {
            if (parse_num(a, v, 0, 1024, &x)) return 2;
            threads = (int)x;
        } else {
            fprintf(stderr, "cvene generate: unknown option %s (see cvene generate --help)\n", a);
            return 2;
        }
    }
    if (!model_dir || (!n_prompts + !ids_s + !inputs_path) != 2) {
        fprintf(stderr, "cvene generate: --model and one of --prompt, --ids or --inputs are required (see cvene "
                        "generate --help)\n");
        return 2;
    }
    if (calls_s) {
        char *end;
        long a = strtol(calls_s, &end, 10), b = -1;
        if (end == calls_s || *end != '-' || a < 0 || (end[1] && ((b = strtol(end + 1, &end, 10)) < a || *end))) {
            fprintf(stderr, "cvene generate: --calls \"%s\" must be A-B or A- (0 <= A <= B)\n", calls_s);
            return 2;
        }
        gp.first_call = (int)a, gp.last_call = (int)b;
    }
    int32_t eos[64];
    int n_eos = 0;
    if (eos_s) {
        int vals[64];
        n_eos = cli_parse_list("generate", "--eos", eos_s, vals, 0, INT32_MAX, "token id", "the vocabulary");
        if (n_eos < 0) return 2;
        for (int k = 0; k < n_eos; k++) eos[k] = vals[k];
    } else if (!no_eos) {
        n_eos = model_eos(model_dir, eos, 64);
    }
    gp.eos_ids = n_eos ? eos : NULL, gp.n_eos = no_eos ? 0 : n_eos;
    if (no_eos) gp.eos_ids = NULL;

    cvene_ctx_params cp;
    if (cli_ctx_params("generate", device, dtype, threads, &cp)) return 2;
    char err[1024];
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_config *cfg = NULL;
    cvene_request *req = NULL;
    cvene_generation *g = NULL, *g0 = NULL;
    cli_text tx = {NULL, model_dir, NULL, 0};
    int32_t *ids = NULL, *mask = NULL;
    char *text = NULL;
    int rc = 1, B = 0, T = 0;
    const int32_t pad = gp.pad_id >= 0 ? gp.pad_id : gp.n_eos ? gp.eos_ids[0] : 0;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        goto done;
    }
    tx.ctx = ctx;
    if (inputs_path) {
        if (!(text = cli_read_file(inputs_path, err, sizeof err))) {
            fprintf(stderr, "cvene: %s\n", err);
            goto done;
        }
        if (cvene_request_parse(ctx, text, &req) != CVENE_OK) {
            fprintf(stderr, "cvene: %s: %s\n", inputs_path, cvene_ctx_error(ctx));
            goto done;
        }
    } else {
        if (n_prompts) { /* text -> "a,b;c" through the tokenizer, then the same path as --ids */
            size_t cap = 16, len = 0;
            char *s = malloc(cap);
            for (int p = 0; s && p < n_prompts; p++) {
                int32_t *pi = NULL;
                int n = 0;
                if (cli_text_encode(&tx, prompts[p], &pi, &n) != 0) {
                    free(s), free(pi);
                    goto done;
                }
                if (!n) {
                    fprintf(stderr, "cvene generate: --prompt \"%s\" has no tokens\n", prompts[p]);
                    free(s), free(pi);
                    goto done;
                }
                for (int k = 0; s && k < n; k++) {
                    if (len + 16 > cap) {
                        char *grown = realloc(s, cap *= 2);
                        if (!grown) free(s);
                        s = grown;
                    }
                    if (s) len += (size_t)snprintf(s + len, cap - len, "%s%d", k ? "," : p ? ";" : "", (int)pi[k]);
                }
                free(pi);
            }
            if (!s) {
                fprintf(stderr, "cvene: out of memory\n");
                goto done;
            }
            text = s;
        }
        B = parse_rows(n_prompts ? text : ids_s, &ids, &mask, &T, pad);
        if (B < 0) goto done;
        if (cvene_request_new(ctx, &req) != CVENE_OK) goto done;
        cvene_input in = {ids, mask, B, T, NULL};
        if (cvene_request_set_base(req, &in) != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
    }
    if (config_path) {
        char *cj = cli_read_file(config_path, err, sizeof err);
        if (!cj) {
            fprintf(stderr, "cvene: %s\n", err);
            goto done;
        }
        const cvene_status st = cvene_config_parse(ctx, cj, &cfg);
        free(cj);
        if (st != CVENE_OK) {
            fprintf(stderr, "cvene: %s: %s\n", config_path, cvene_ctx_error(ctx));
            goto done;
        }
        if (cli_load_weights(ctx, cfg, config_path, weights) != 0) goto done;
    }
    if (cvene_model_load(ctx, model_dir, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    if (original && cfg) {
        gp.on_token = NULL;
        if (cvene_generate(m, NULL, req, &gp, &g0) != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
    }
    /* stream a single prompt's tokens as they come (after its text) */
    int base_B = 0, base_T = 0;
    stream_state ss = {&tx, 0};
    if (!json && !quiet && !inputs_path && B == 1 && !g0) { /* with --original both print as rows */
        char *p = decode_row(&tx, ids, T);
        printf("%s", p ? p : "");
        fflush(stdout);
        free(p);
        ss.on = 1;
    }
    gp.on_token = ss.on ? stream_token : NULL;
    gp.user = &ss;
    gp.keep_logits = out_path != NULL;
    const double t0 = cli_now();
    if (cvene_generate(m, cfg, req, &gp, &g) != CVENE_OK) {
        if (ss.on) printf("\n");
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    const double secs = cli_now() - t0;
    cvene_generation_ids(g, &base_B, &base_T);
    const int steps = cvene_generation_steps(g);
    if (json) {
        cJSON *o = json_rows(&tx, g);
        cJSON_AddNumberToObject(o, "seconds", secs);
        if (g0) cJSON_AddItemToObject(o, "original", json_rows(&tx, g0));
        char *s = cJSON_Print(o);
        printf("%s\n", s ? s : "{}");
        free(s), cJSON_Delete(o);
    } else {
        if (ss.on) printf("\n");
        else print_rows(&tx, cfg ? "intervened" : "generated", g, inputs_path ? NULL : mask);
        if (g0) print_rows(&tx, "original", g0, inputs_path ? NULL : mask);
        for (int k = 0; k < cvene_generation_n_collected(g); k++) { /* CollectIntervention: one per call */
            int call = 0;
            const cvene_tensor_view t = cvene_generation_collected(g, k, &call);
            printf("collected %d (call %d): shape (", k, call);
            for (int d = 0; d < t.ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t.shape[d]);
            printf(")\n");
        }
        fprintf(stderr, "%d prompt%s x %d new tokens in %.3f s (%.1f tokens/s, %s)\n", base_B, base_B == 1 ? "" : "s",
                steps, secs, secs > 0 ? base_B * steps / secs : 0.0, device);
    }
    if (out_path && write_out(ctx, out_path, g, model_dir) != 0) goto done;
    rc = 0;
done:
    cvene_generation_free(g);
    cvene_generation_free(g0);
    cvene_request_free(req);
    cvene_config_free(cfg);
    cvene_model_free(m);
    cli_text_free(&tx);
    cvene_ctx_free(ctx);
    free(ids), free(mask), free(text);
    return rc;
}
