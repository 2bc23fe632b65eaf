/* Write a random-weight Hugging Face model directory (config.json +
 * model.safetensors) of a standard shape, so benchmarks need no Python:
 *   cvene_make_random_model OUT_DIR gpt2-small|pythia-160m [seed]
 * Weights ~ N(0, 0.02) (layer-norm weights 1, biases 0), as transformers
 * initialises them; the numbers do not matter for timing. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/ctx.h"
#include "models/safetensors.h"

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int kind; /* 0 normal, 1 ones, 2 zeros */
} spec;

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static float normal(void) { return (float)(sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform())); }

static int add(spec *s, int n, const char *name, int64_t d0, int64_t d1, int kind) {
    snprintf(s[n].name, sizeof s[n].name, "%s", name);
    s[n].ndim = d1 ? 2 : 1, s[n].shape[0] = d0, s[n].shape[1] = d1, s[n].kind = kind;
    return n + 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[2], "gpt2-small") && strcmp(argv[2], "pythia-160m"))) {
        fprintf(stderr, "usage: %s OUT_DIR gpt2-small|pythia-160m [seed]\n", argv[0]);
        return 2;
    }
    if (argc > 3) rng ^= strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ull;
    const char *dir = argv[1];
    int neox = !strcmp(argv[2], "pythia-160m");
    const int L = 12, C = 768, H = 12, I = 3072, V = neox ? 50304 : 50257, P = neox ? 2048 : 1024;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }
    spec *s = calloc(16 * L + 8, sizeof *s);
    int n = 0;
    char nm[96];
    if (!neox) {
        n = add(s, n, "wte.weight", V, C, 0), n = add(s, n, "wpe.weight", P, C, 0);
        for (int l = 0; l < L; l++) {
#define A(fmt, d0, d1, k) (snprintf(nm, sizeof nm, fmt, l), n = add(s, n, nm, d0, d1, k))
            A("h.%d.ln_1.weight", C, 0, 1), A("h.%d.ln_1.bias", C, 0, 2);
            A("h.%d.attn.c_attn.weight", C, 3 * C, 0), A("h.%d.attn.c_attn.bias", 3 * C, 0, 2);
            A("h.%d.attn.c_proj.weight", C, C, 0), A("h.%d.attn.c_proj.bias", C, 0, 2);
            A("h.%d.ln_2.weight", C, 0, 1), A("h.%d.ln_2.bias", C, 0, 2);
            A("h.%d.mlp.c_fc.weight", C, I, 0), A("h.%d.mlp.c_fc.bias", I, 0, 2);
            A("h.%d.mlp.c_proj.weight", I, C, 0), A("h.%d.mlp.c_proj.bias", C, 0, 2);
        }
        n = add(s, n, "ln_f.weight", C, 0, 1), n = add(s, n, "ln_f.bias", C, 0, 2);
    } else {
        n = add(s, n, "gpt_neox.embed_in.weight", V, C, 0);
        for (int l = 0; l < L; l++) {
            A("gpt_neox.layers.%d.input_layernorm.weight", C, 0, 1), A("gpt_neox.layers.%d.input_layernorm.bias", C, 0, 2);
            A("gpt_neox.layers.%d.post_attention_layernorm.weight", C, 0, 1);
            A("gpt_neox.layers.%d.post_attention_layernorm.bias", C, 0, 2);
            A("gpt_neox.layers.%d.attention.query_key_value.weight", 3 * C, C, 0);
            A("gpt_neox.layers.%d.attention.query_key_value.bias", 3 * C, 0, 2);
            A("gpt_neox.layers.%d.attention.dense.weight", C, C, 0), A("gpt_neox.layers.%d.attention.dense.bias", C, 0, 2);
            A("gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", I, C, 0), A("gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", I, 0, 2);
            A("gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", C, I, 0), A("gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", C, 0, 2);
#undef A
        }
        n = add(s, n, "gpt_neox.final_layer_norm.weight", C, 0, 1), n = add(s, n, "gpt_neox.final_layer_norm.bias", C, 0, 2);
        n = add(s, n, "embed_out.weight", V, C, 0);
    }
    st_out_tensor *t = calloc((size_t)n, sizeof *t);
    float **data = calloc((size_t)n, sizeof(float *));
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)s[i].shape[0] * (s[i].ndim == 2 ? (size_t)s[i].shape[1] : 1);
        data[i] = malloc(k * sizeof(float));
        if (!data[i]) return 1;
        for (size_t j = 0; j < k; j++) data[i][j] = s[i].kind == 0 ? 0.02f * normal() : s[i].kind == 1 ? 1.0f : 0.0f;
        t[i] = (st_out_tensor){s[i].name, ST_F32, s[i].ndim, {s[i].shape[0], s[i].shape[1]}, data[i]};
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cvene_ctx *ctx;
    char err[256];
    if (cvene_ctx_new(NULL, &ctx, err, sizeof err) != CVENE_OK) return 1;
    const char *meta[] = {"format", "pt", "producer", "cvene_make_random_model"};
    if (st_write(ctx, path, t, n, meta, 2) != CVENE_OK) {
        fprintf(stderr, "%s\n", cvene_ctx_error(ctx));
        return 1;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    if (!neox)
        fprintf(f, "{\"model_type\": \"gpt2\", \"vocab_size\": %d, \"n_positions\": %d, \"n_embd\": %d, \"n_layer\": %d, "
                   "\"n_head\": %d, \"n_inner\": null, \"activation_function\": \"gelu_new\", \"layer_norm_epsilon\": 1e-05}\n",
                V, P, C, L, H);
    else
        fprintf(f, "{\"model_type\": \"gpt_neox\", \"vocab_size\": %d, \"max_position_embeddings\": %d, \"hidden_size\": %d, "
                   "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"intermediate_size\": %d, \"rotary_pct\": 0.25, "
                   "\"rotary_emb_base\": 10000, \"use_parallel_residual\": true, \"hidden_act\": \"gelu\", "
                   "\"layer_norm_eps\": 1e-05, \"tie_word_embeddings\": false}\n",
                V, P, C, L, H, I);
    fclose(f);
    for (int i = 0; i < n; i++) free(data[i]);
    free(data), free(t), free(s);
    cvene_ctx_free(ctx);
    printf("wrote %s (%s, %d tensors)\n", dir, argv[2], n);
    return 0;
}
