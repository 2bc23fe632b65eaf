/* cvene run --model DIR --config CONFIG.json --inputs INPUTS.json [--out FILE] [--top K]
 *           [--weights DIR] [--device cpu|cuda] [--dtype f32|bf16|f16]
 * Runs a pyvene-style intervention request, prints a summary (top tokens
 * before and after at each example's last real token, logit differences) and
 * writes logits, original logits and collected activations to a safetensors
 * file that numpy/torch read directly. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cvene.h"
#include "bindings/cli/cli.h"
#include "engine/intervene.h"
#include "models/safetensors.h"

static void top_k(const float *row, int V, int k, int *out) {
    for (int j = 0; j < k; j++) {
        int arg = -1;
        for (int v = 0; v < V; v++) {
            int taken = 0;
            for (int q = 0; q < j && !taken; q++) taken = out[q] == v;
            if (!taken && (arg < 0 || row[v] > row[arg])) arg = v;
        }
        out[j] = arg;
    }
}

static double log_softmax_at(const float *row, int V, int v) {
    double mx = -INFINITY, z = 0;
    for (int q = 0; q < V; q++) mx = row[q] > mx ? row[q] : mx;
    for (int q = 0; q < V; q++) z += exp(row[q] - mx);
    return row[v] - mx - log(z);
}

int cmd_run(int argc, char **argv) {
    const char *model_dir = NULL, *config_path = NULL, *inputs_path = NULL, *out_path = NULL;
    const char *device = "cpu", *dtype = "f32", *weights = NULL;
    int top = 5, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: cvene run --model DIR --config CONFIG.json --inputs INPUTS.json [--out OUT.safetensors]\n"
                   "                 [--top K] [--weights DIR] [--threads N] [--device cpu|cuda] [--dtype f32|bf16|f16]\n"
                   CLI_CTX_HELP
                   "  --weights DIR  the trained weights of the config's trainable interventions (RotatedSpace,\n"
                   "                 LowRank, Boundless, masks, autoencoders, LoReFT): DIR/intkey_<key>.safetensors,\n"
                   "                 as cvene train --out writes them beside its config.json, or pyvene's save\n"
                   "                 converted by tools/convert_pyvene_weights.py. Default: CONFIG.json's directory\n"
                   "                 when the config has trainable interventions.\n"

                   "Runs a pyvene intervention request and prints, for each base example, the top next tokens\n"
                   "before and after at its last real token; --out writes logits, original_logits and every\n"
                   "CollectIntervention's values (collected.K) to a safetensors file.\n\n"
                   "CONFIG.json: pyvene's IntervenableConfig as IntervenableModel.save writes it, or this dict form\n"
                   "(two interventions, each reading its own source: group keys 0 and 1):\n"
                   "  {\"mode\": \"parallel\",\n"
                   "   \"representations\": [\n"
                   "     {\"layer\": 3, \"component\": \"block_output\", \"unit\": \"pos\",\n"
                   "      \"intervention_type\": \"VanillaIntervention\", \"group_key\": 0},\n"
                   "     {\"layer\": 5, \"component\": \"head_attention_value_output\", \"unit\": \"h.pos\",\n"
                   "      \"intervention_type\": \"AdditionIntervention\", \"group_key\": 1,\n"
                   "      \"subspace_partition\": [[0, 8], [8, 16]]}]}\n"
                   "INPUTS.json for it (runs on assets/demo-gpt2):\n"
                   "  {\"base\": {\"input_ids\": [[5, 61, 72, 9], [5, 61, 72, 0]],\n"
                   "            \"attention_mask\": [[1, 1, 1, 1], [1, 1, 1, 0]],\n"
                   "            \"position_ids\": [[0, 1, 2, 3], [0, 1, 2, 3]]},\n"
                   "   \"sources\": [{\"input_ids\": [[7, 30, 72, 9], [7, 30, 72, 9]]},\n"
                   "               {\"input_ids\": [[11, 12, 13, 14]]}],\n"
                   "   \"unit_locations\": {\"sources->base\": [\n"
                   "       [[[3], [3]], [[[0, 1]], [[3]]]],\n"
                   "       [[[3], [2]], [[[0, 1], [2, 3]], [[3], [2]]]]]},\n"
                   "   \"subspaces\": [null, [[1], [0]]],\n"
                   "   \"output_original_output\": true}\n"
                   "  unit_locations: [SOURCE side, BASE side], each one entry per intervention, each entry one\n"
                   "    list of units per example; unit h.pos takes [HEADS, POSITIONS] per intervention (here\n"
                   "    heads 0 and 1 x position 3 of source 1, which has batch 1 and is shared by every base\n"
                   "    example, like its one-example location lists). pyvene's shorthands work too:\n"
                   "    {\"sources->base\": 3}, [s, b], a flat list, {\"base\": ...} for interventions without a\n"
                   "    source; serial mode takes \"source_0->source_1\", ..., \"source_N->base\" entries.\n"
                   "  subspaces: per intervention (null = all dims), per example, dims or ids of subspace_partition\n"
                   "    parts (here part 1 = dims 8..15 for example 0, part 0 for example 1).\n"
                   "  attention_mask, position_ids, subspaces and output_original_output are optional; a source\n"
                   "    may be null (pyvene's None). Unknown keys are refused.\n"
                   "  Types: Vanilla, Addition, Subtraction, Zero, Collect, Skip, Noise (noise_level, noise_seed),\n"
                   "    Lambda (\"callback\": NAME, bound through the C API); \"source_representation\": [...]\n"
                   "    gives a constant source; intervention_link_key shares one intervention between sites.\n"
                   "  Trained types (cvene train --help lists them) run with their weights (--weights) on units\n"
                   "    pos or h, without subspaces for now.\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "cvene run: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--inputs")) inputs_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--top") || !strcmp(a, "--threads")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 0 || n > 1000) {
                fprintf(stderr, "cvene run: %s must be a small non-negative integer, got \"%s\"\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--top")) top = (int)n;
            else threads = (int)n;
        } else {
            fprintf(stderr, "cvene run: unknown option %s (see cvene run --help)\n", a);
            return 2;
        }
        i++;
    }
    if (!model_dir || !config_path || !inputs_path) {
        fprintf(stderr, "cvene run: --model, --config and --inputs are required (see cvene run --help)\n");
        return 2;
    }
    char err[1024];
    char *config_json = cli_read_file(config_path, err, sizeof err), *inputs_json = NULL;
    if (config_json) inputs_json = cli_read_file(inputs_path, err, sizeof err);
    if (!config_json || !inputs_json) {
        fprintf(stderr, "cvene: %s\n", err);
        free(config_json);
        return 1;
    }
    cvene_ctx_params cp;
    if (cli_ctx_params("run", device, dtype, threads, &cp)) {
        free(config_json);
        free(inputs_json);
        return 2;
    }
    cvene_ctx *ctx = NULL;
    cvene_model *m = NULL;
    cvene_config *cfg = NULL;
    cvene_request *req = NULL;
    cvene_result *res = NULL;
    int rc = 1;
    if (cvene_ctx_new(&cp, &ctx, err, sizeof err) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", err);
        goto done;
    }
    if (cvene_config_parse(ctx, config_json, &cfg) != CVENE_OK) {
        fprintf(stderr, "cvene: %s: %s\n", config_path, cvene_ctx_error(ctx));
        goto done;
    }
    if (cli_load_weights(ctx, cfg, config_path, weights) != 0) goto done;
    if (cvene_request_parse(ctx, inputs_json, &req) != CVENE_OK) {
        fprintf(stderr, "cvene: %s: %s\n", inputs_path, cvene_ctx_error(ctx));
        goto done;
    }
    if (cvene_model_load(ctx, model_dir, &m) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    cvene_request_set_output_original(req, 1); /* for the before/after summary */
    double t0 = cli_now();
    if (cvene_run(m, cfg, req, &res) != CVENE_OK) {
        fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
        goto done;
    }
    double t1 = cli_now();
    int B, T, V;
    const float *logits = cvene_result_logits(res, &B, &T, &V);
    const float *orig = cvene_result_original_logits(res);
    const cvene_request *rq = req;
    printf("%d intervention%s, %d forward pass%s, %.1f ms\n", cvene_config_count(cfg),
           cvene_config_count(cfg) == 1 ? "" : "s", cvene_result_n_passes(res),
           cvene_result_n_passes(res) == 1 ? "" : "es", 1e3 * (t1 - t0));
    if (top > V) top = V;
    int *ta = malloc(sizeof(int) * (size_t)(top ? top : 1)), *tb = malloc(sizeof(int) * (size_t)(top ? top : 1));
    for (int b = 0; b < B && ta && tb; b++) {
        int last = T - 1;
        const int32_t *mask = rq->base.mask;
        while (mask && last > 0 && !mask[(size_t)b * T + last]) last--;
        const float *before = orig + ((size_t)b * T + last) * V, *after = logits + ((size_t)b * T + last) * V;
        double maxd = 0;
        for (int v = 0; v < V; v++) maxd = fmax(maxd, fabs((double)after[v] - before[v]));
        printf("example %d, last token (position %d): max |logit change| %.4g\n", b, last, maxd);
        top_k(before, V, top, tb);
        top_k(after, V, top, ta);
        printf("  %-28s %-28s\n", "before: id (log p)", "after: id (log p)");
        for (int k = 0; k < top; k++)
            printf("  %6d (%8.4f)             %6d (%8.4f)\n", tb[k], log_softmax_at(before, V, tb[k]), ta[k],
                   log_softmax_at(after, V, ta[k]));
    }
    free(ta);
    free(tb);
    for (int k = 0; k < cvene_result_n_collected(res); k++) {
        cvene_tensor_view t = cvene_result_collected(res, k);
        printf("collected %d: shape (", k);
        for (int d = 0; d < t.ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t.shape[d]);
        printf(")\n");
    }
    if (out_path) {
        int nc = cvene_result_n_collected(res);
        st_out_tensor *ts = calloc((size_t)nc + 2, sizeof(st_out_tensor));
        char (*names)[32] = calloc((size_t)nc + 1, 32);
        if (!ts || !names) {
            free(ts), free(names);
            fprintf(stderr, "cvene: out of memory\n");
            goto done;
        }
        ts[0] = (st_out_tensor){"logits", ST_F32, 3, {B, T, V}, logits};
        ts[1] = (st_out_tensor){"original_logits", ST_F32, 3, {B, T, V}, orig};
        for (int k = 0; k < nc; k++) {
            cvene_tensor_view t = cvene_result_collected(res, k);
            snprintf(names[k], 32, "collected.%d", k);
            ts[2 + k] = (st_out_tensor){names[k], ST_F32, t.ndim, {0}, t.data};
            for (int d = 0; d < t.ndim; d++) ts[2 + k].shape[d] = t.shape[d];
        }
        const char *meta[] = {"producer", "cvene run", "model", model_dir, "config", config_path};
        cvene_status st = st_write(ctx, out_path, ts, nc + 2, meta, 3);
        free(ts), free(names);
        if (st != CVENE_OK) {
            fprintf(stderr, "cvene: %s\n", cvene_ctx_error(ctx));
            goto done;
        }
        printf("wrote %s (logits, original_logits%s)\n", out_path, nc ? ", collected.*" : "");
    }
    rc = 0;
done:
    cvene_result_free(res);
    cvene_request_free(req);
    cvene_config_free(cfg);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    free(config_json);
    free(inputs_json);
    return rc;
}
