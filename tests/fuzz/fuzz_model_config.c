/* libFuzzer harness: a model's config.json (models/hf_config.c, the gpt2 / gpt_neox / gru
 * loaders, cvene_model_load) and the memory planner on it (cvene_plan_memory).
 *
 * The input is config.json. It is written into a directory holding a real small checkpoint
 * (symlinks to one of the fixtures' *.safetensors, the sharded ones with their index), chosen
 * as the fixture whose own config matches the input best on model_type, architectures[0],
 * vocab_size, width and depth, so a mutated fixture config still meets weights of its shapes
 * and the fuzzer reaches past the shape checks.
 * Invariants of an accepted config:
 *  - a forward of (2, min(3, n_positions)) tokens succeeds, and again with the same logits;
 *  - for gpt2 / gpt_neox the planner accepts the same config (include/cvene.h: it checks
 *    what the loader checks) and agrees with the loaded model: architecture, sizes, the
 *    parameter count, and activation bytes = the arena that forward reserved + its logits. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "models/model.h"
#include "tests/fuzz/fuzz_util.h"

/* the fields a checkpoint is matched on: model_type, architectures[0], vocab, width, depth */
enum { K_TYPE, K_ARCH, K_VOCAB, K_WIDTH, K_DEPTH, K_N };
typedef struct {
    const char *fixture; /* directory under tests/fixtures or assets/ */
    int asset;
    char dir[FUZZ_PATH_MAX]; /* the scratch directory of this checkpoint */
    const cJSON *keys[K_N];
    cJSON *cfg;
} checkpoint;

#define FIXTURE(p) {.fixture = p}
static checkpoint ckpts[] = {
    FIXTURE("gpt2/small/model"),     FIXTURE("gpt2/fp16/model"),      FIXTURE("gpt2/bf16_base/model"),
    FIXTURE("gpt2/inner_erf/model"), FIXTURE("gpt2/sharded/model"),   {.fixture = "demo-gpt2", .asset = 1},
    FIXTURE("neox/par_rot25/model"), FIXTURE("neox/seq_rot100/model"), FIXTURE("neox/fp16/model"),
    FIXTURE("neox/bf16_seq/model"),  FIXTURE("neox/sharded/model"),   FIXTURE("gru/lm2/model"),
    FIXTURE("gru/cls2/model"),       FIXTURE("gru/lm3_nobias/model"),
};
enum { N_CKPT = sizeof ckpts / sizeof ckpts[0] };

static const cJSON *field(const cJSON *cfg, const char *const *names) {
    for (; *names; names++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, *names);
        if (j) return j;
    }
    return NULL;
}

static void match_keys(const cJSON *cfg, const cJSON *out[K_N]) {
    static const char *const type[] = {"model_type", NULL}, *const vocab[] = {"vocab_size", NULL};
    static const char *const width[] = {"n_embd", "hidden_size", "h_dim", NULL};
    static const char *const depth[] = {"n_layer", "num_hidden_layers", NULL};
    out[K_TYPE] = field(cfg, type);
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
    out[K_ARCH] = cJSON_IsArray(archs) ? archs->child : NULL;
    out[K_VOCAB] = field(cfg, vocab);
    out[K_WIDTH] = field(cfg, width);
    out[K_DEPTH] = field(cfg, depth);
}

static void setup(void) {
    for (int i = 0; i < N_CKPT; i++) {
        checkpoint *c = &ckpts[i];
        char src[FUZZ_PATH_MAX], name[64], path[2 * FUZZ_PATH_MAX];
        if (c->asset) fuzz_asset(src, c->fixture);
        else fuzz_fixture(src, c->fixture);
        snprintf(name, sizeof name, "ckpt%d", i);
        fuzz_subdir(c->dir, name);
        DIR *d = opendir(src);
        if (!d) fuzz_fail("fixture %s is missing", src);
        for (struct dirent *e; (e = readdir(d));) {
            size_t n = strlen(e->d_name);
            int weights = (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
                          !strcmp(e->d_name, "model.safetensors.index.json");
            if (!weights) continue;
            char target[2 * FUZZ_PATH_MAX];
            snprintf(target, sizeof target, "%s/%s", src, e->d_name);
            snprintf(path, sizeof path, "%s/%s", c->dir, e->d_name);
            fuzz_link(target, path);
        }
        closedir(d);
        snprintf(path, sizeof path, "%s/config.json", src);
        FILE *f = fopen(path, "rb");
        char buf[1 << 14];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = '\0';
        if (!(c->cfg = cJSON_Parse(buf))) fuzz_fail("%s is not JSON", path);
        match_keys(c->cfg, c->keys);
    }
}

static checkpoint *choose(const char *text) {
    cJSON *cfg = cJSON_Parse(text);
    const cJSON *keys[K_N] = {0};
    if (cJSON_IsObject(cfg)) match_keys(cfg, keys);
    int best = 0, best_score = -1;
    for (int i = 0; i < N_CKPT; i++) {
        int score = 0;
        for (int k = 0; k < K_N; k++) score += keys[k] && cJSON_Compare(keys[k], ckpts[i].keys[k], 1);
        if (score > best_score) best = i, best_score = score;
    }
    cJSON_Delete(cfg);
    return &ckpts[best];
}

static void check_loaded(cvene_model *m, const char *dir) {
    cvene_ctx *ctx = fuzz_ctx();
    cvene_model_info info = cvene_model_get_info(m);
    const int B = 2, T = info.n_positions < 3 ? info.n_positions : 3;
    int32_t ids[6];
    for (int i = 0; i < B * T; i++) ids[i] = i % info.vocab_size;
    const size_t n = (size_t)B * T * info.vocab_size;
    float *logits = malloc(2 * n * sizeof(float));
    if (!logits) fuzz_fail("out of memory");
    cvene_run_opts o;
    memset(&o, 0, sizeof o);
    o.logits = logits;
    fuzz_ok(cvene_forward(m, ids, B, T, &o), "a forward of an accepted model");
    o.logits = logits + n; /* again: bit-identical, or something read memory it never wrote */
    fuzz_ok(cvene_forward(m, ids, B, T, &o), "a second forward");
    if (memcmp(logits, logits + n, n * sizeof(float)) != 0) fuzz_fail("two forwards of the same ids differ");
    free(logits);
    if (info.arch == CVENE_ARCH_GRU) return; /* not planned (gpt2 and gpt_neox only) */
    cvene_plan_params p = cvene_plan_default_params();
    p.batch = B, p.seq = T;
    cvene_memory_plan plan;
    fuzz_ok(cvene_plan_memory(ctx, dir, &p, &plan), "the planner on a config the loader accepted");
    if (plan.arch != info.arch || plan.n_layer != info.n_layer || plan.n_head != info.n_head ||
        plan.n_embd != info.n_embd || plan.n_inner != info.n_inner || plan.vocab_size != info.vocab_size)
        fuzz_fail("planner and loader disagree on the shape: plan (%d L%d H%d C%d I%d V%d), model (%d L%d H%d C%d I%d V%d)",
                  plan.arch, plan.n_layer, plan.n_head, plan.n_embd, plan.n_inner, plan.vocab_size, info.arch,
                  info.n_layer, info.n_head, info.n_embd, info.n_inner, info.vocab_size);
    if (plan.n_params != info.n_params)
        fuzz_fail("planner counts %lld parameters, the loaded model %lld", (long long)plan.n_params,
                  (long long)info.n_params);
    const int64_t want = (int64_t)m->act_cap + (int64_t)B * T * info.vocab_size * (int64_t)sizeof(float);
    if (plan.devices[0].activation_bytes != want)
        fuzz_fail("planner says %lld activation bytes, the forward reserved %zu + logits = %lld",
                  (long long)plan.devices[0].activation_bytes, m->act_cap, (long long)want);
}

/* The planner on every config, loadable or not, with a second shape of parameters. */
static void plan_any(const char *dir) {
    cvene_memory_plan plan;
    cvene_plan_params p = cvene_plan_default_params();
    fuzz_note("cvene_plan_memory", cvene_plan_memory(fuzz_ctx(), dir, &p, &plan));
    p.device = CVENE_DEVICE_CUDA; /* pure arithmetic: no GPU is touched */
    p.n_devices = 2, p.batch = 3, p.seq = 5;
    p.weight_dtype = p.activation_dtype = CVENE_BF16;
    p.capacity_bytes = (int64_t)1 << 30;
    if (cvene_plan_memory(fuzz_ctx(), dir, &p, &plan) == CVENE_OK) {
        int64_t layers = 0;
        for (int d = 0; d < plan.n_devices; d++) layers += plan.devices[d].n_layers;
        if (layers != plan.n_layer) fuzz_fail("the plan's devices hold %lld of %d layers", (long long)layers, plan.n_layer);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0; /* a config is small; larger inputs only slow the search */
    if (!ckpts[0].dir[0]) setup();
    char *text = fuzz_cstr(data, size);
    checkpoint *c = choose(text);
    free(text);
    char path[2 * FUZZ_PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    fuzz_write(path, data, size);
    cvene_model *m = NULL;
    cvene_status st = cvene_model_load(fuzz_ctx(), c->dir, &m);
    fuzz_note(c->fixture, st);
    if (st == CVENE_OK) {
        check_loaded(m, c->dir);
        cvene_model_free(m);
    } else if (m) {
        fuzz_fail("a failed load returned a model");
    }
    plan_any(c->dir);
    return 0;
}
