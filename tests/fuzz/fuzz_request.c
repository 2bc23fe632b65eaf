/* libFuzzer harness: the request JSON, i.e. `cvene run --inputs` (engine/request.c,
 * cvene_request_parse), and for an accepted request the run itself (engine/run.c), which
 * resolves its unit_locations and subspaces against a config (engine/locations.c).
 *
 * The input is inputs.json, optionally followed by a NUL byte and a config JSON (JSON cannot
 * hold a raw NUL). Each accepted request runs on tests/fixtures/gpt2/small (2 layers, 64
 * wide, 4 heads, 320 tokens) under every config of `cases` below (pyvene fixture configs:
 * positions with subspaces, heads x positions, a partition, serial mode with group keys, two
 * sources, a link key, a callback, noise and a zeroed attention weight), and under the
 * input's own config when it has one the parser accepts, so the fuzzer mutates requests and
 * configs together. The seeds are the fixtures' inputs.json, with their case's config
 * appended. A run may refuse; one it accepts must return finite logits of the base's shape
 * (and original logits exactly when asked for, finite collected activations), and the input's
 * config runs twice with bit-identical results. Every refusal must leave a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "kernels/ctx.h"
#include "tests/fuzz/fuzz_util.h"

static const char *const cases[] = {
    "084_subspaces_ragged_b2", "026_vanilla_hpos_head_key_output_small", "090_partition_discrete",
    "105_serial_group_keys_addition", "094_parallel_two_sources", "108_link_key_addition",
    "065_lambda_half_base_plus_source", "059_noise_block_input_u4", "045_zero_attention_weight_heads",
};
enum { N_CASES = sizeof cases / sizeof cases[0] };
static cvene_config *configs[N_CASES];
static cvene_model *model;

/* the fixtures' half_base_plus_source (tests/fixtures/pyvene/README.md): b * 0.5 + s */
static int half_base_plus_source(void *user, float *base, const float *src, const int64_t shape[4], int example,
                                 const int *dims, int n_dims) {
    int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    for (int64_t i = 0; i < n; i++) base[i] = base[i] * 0.5f + (src ? src[i] : 0.0f);
    return 0;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fuzz_fail("cannot open %s", path);
    char *buf = malloc(1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (!buf) fuzz_fail("out of memory");
    buf[n] = '\0';
    return buf;
}

static void free_all(void) {
    for (int i = 0; i < N_CASES; i++) cvene_config_free(configs[i]);
    cvene_model_free(model);
}

static void setup(void) {
    cvene_ctx *ctx = fuzz_ctx();
    char path[FUZZ_PATH_MAX];
    fuzz_fixture(path, "gpt2/small/model");
    fuzz_ok(cvene_model_load(ctx, path, &model), "loading tests/fixtures/gpt2/small");
    for (int i = 0; i < N_CASES; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "pyvene/cases/%s/config.json", cases[i]);
        fuzz_fixture(path, rel);
        char *json = slurp(path);
        fuzz_ok(cvene_config_parse(ctx, json, &configs[i]), path);
        free(json);
        if (strstr(cases[i], "lambda"))
            fuzz_ok(cvene_config_bind_callback(configs[i], "half_base_plus_source", half_base_plus_source, NULL),
                    "binding half_base_plus_source");
    }
    atexit(free_all);
}

static void check_finite(const float *v, size_t n, const char *which, const char *what) {
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k])) fuzz_fail("%s: %s[%zu] is %g", which, what, k, v[k]);
}

/* Logits (and the original ones when asked for) of the base's shape, every collected
 * activation a host tensor of positive sizes; all finite. */
static void check_result(const cvene_result *res, int B, int T, int original, const char *which) {
    int rB, rT, rV;
    const float *logits = cvene_result_logits(res, &rB, &rT, &rV);
    if (!logits || rB != B || rT != T || rV != 320)
        fuzz_fail("%s: logits are (%d, %d, %d), want (%d, %d, 320)", which, rB, rT, rV, B, T);
    const size_t n = (size_t)rB * rT * rV;
    check_finite(logits, n, which, "logits");
    const float *orig = cvene_result_original_logits(res);
    if (original != (orig != NULL)) fuzz_fail("%s: output_original_output %d, original logits %p", which, original, (const void *)orig);
    if (orig) check_finite(orig, n, which, "original logits");
    for (int k = 0; k < cvene_result_n_collected(res); k++) {
        cvene_tensor_view v = cvene_result_collected(res, k);
        size_t numel = 1;
        if (v.dtype != CVENE_F32 || v.device != CVENE_DEVICE_CPU || v.ndim < 1 || v.ndim > 4)
            fuzz_fail("%s: collected[%d] is not a host f32 tensor of 1 to 4 dims", which, k);
        for (int d = 0; d < v.ndim; d++) numel *= (size_t)v.shape[d];
        if (numel && !v.data) fuzz_fail("%s: collected[%d] has no data", which, k);
        check_finite(v.data, numel, which, "collected");
    }
}

/* The base's shape and output_original_output, read back from the JSON the parser accepted. */
static void base_shape(const char *json, int *B, int *T, int *original) {
    cJSON *root = cJSON_Parse(json);
    *original = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "output_original_output"));
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(root, "base");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(base, "input_ids");
    *B = cJSON_GetArraySize(ids);
    *T = ids && ids->child ? cJSON_GetArraySize(ids->child) : 0;
    cJSON_Delete(root);
}

/* Two results of the same run are bit-identical (DESIGN.md: same inputs, same backend ->
 * same outputs): a difference means something read memory it never wrote. */
static void check_same(const cvene_result *a, const cvene_result *b, const char *which) {
    int B, T, V;
    const float *la = cvene_result_logits(a, &B, &T, &V), *lb = cvene_result_logits(b, &B, &T, &V);
    const size_t n = (size_t)B * T * V * sizeof(float);
    const float *oa = cvene_result_original_logits(a), *ob = cvene_result_original_logits(b);
    if (memcmp(la, lb, n) != 0 || (oa && memcmp(oa, ob, n) != 0))
        fuzz_fail("%s: the same run twice gave different logits", which);
    for (int k = 0; k < cvene_result_n_collected(a); k++) {
        cvene_tensor_view va = cvene_result_collected(a, k), vb = cvene_result_collected(b, k);
        size_t numel = 1;
        for (int d = 0; d < va.ndim; d++) numel *= (size_t)va.shape[d];
        if (memcmp(va.shape, vb.shape, sizeof va.shape) != 0 || (numel && memcmp(va.data, vb.data, numel * 4) != 0))
            fuzz_fail("%s: the same run twice collected different values", which);
    }
}

/* Run c on r; twice = 1 runs it again and compares. */
static void run_one(const cvene_request *r, const cvene_config *c, int B, int T, int original, const char *which,
                    int twice) {
    cvene_ctx *ctx = fuzz_ctx();
    cvene_result *res = NULL;
    ctx->err[0] = '\0';
    cvene_status st = cvene_run(model, c, r, &res);
    fuzz_note(which, st);
    if (st == CVENE_OK) {
        check_result(res, B, T, original, which);
        cvene_result *again = NULL;
        if (twice) {
            fuzz_ok(cvene_run(model, c, r, &again), "the same run again");
            check_same(res, again, which);
        }
        cvene_result_free(again);
        cvene_result_free(res);
    } else if (res) {
        fuzz_fail("%s: a refused run returned a result", which);
    } else if (!ctx->err[0]) {
        fuzz_fail("%s: a refused run left no message", which);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* keeps every run on the tiny model well under a millisecond */
    if (!model) setup();
    cvene_ctx *ctx = fuzz_ctx();
    const uint8_t *nul = memchr(data, 0, size);
    char *json = fuzz_cstr(data, nul ? (size_t)(nul - data) : size);
    cvene_request *r = NULL;
    ctx->err[0] = '\0';
    cvene_status st = cvene_request_parse(ctx, json, &r);
    fuzz_note("cvene_request_parse", st);
    if (st != CVENE_OK) {
        if (r) fuzz_fail("a refused request was returned");
        if (!ctx->err[0]) fuzz_fail("a refused request left no message");
        free(json);
        return 0;
    }
    int B = 0, T = 0, original = 0;
    base_shape(json, &B, &T, &original);
    for (int i = 0; i < N_CASES; i++) run_one(r, configs[i], B, T, original, cases[i], 0);
    if (nul) { /* the input's own config */
        char *ctext = fuzz_cstr(nul + 1, size - (size_t)(nul + 1 - data));
        cvene_config *c = NULL;
        st = cvene_config_parse(ctx, ctext, &c);
        fuzz_note("cvene_config_parse of the input's config", st);
        if (st == CVENE_OK) {
            (void)cvene_config_bind_callback(c, "half_base_plus_source", half_base_plus_source, NULL);
            run_one(r, c, B, T, original, "the input's config", 1);
        }
        cvene_config_free(c);
        free(ctext);
    }
    cvene_request_free(r);
    free(json);
    return 0;
}
