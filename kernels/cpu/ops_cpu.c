/* CPU reference backend: OpenBLAS sgemm for matmuls, OpenMP loops for the rest.
 * It is the oracle the CUDA backend is tested against, so clarity beats tricks;
 * accumulations that decide accuracy (layernorm statistics, softmax sums) run
 * in double. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>

#include "kernels/backend.h"

#define NT(be) ((be)->n_threads > 0 ? (be)->n_threads : omp_get_max_threads())
/* Element-wise loops over fewer floats than this run on one thread: a parallel region
 * costs more than the work (a GRU step is a few (B, h) ops), and on a loaded machine a
 * region's barrier can wait milliseconds for a descheduled thread. Iterations are
 * independent, so results do not depend on it. Measured: a tiny model's causal trace on a
 * 2-core machine with one core busy took 28 s with every loop parallel and 0.12 s on one
 * thread, so the threshold is generous (about 0.1 ms of work). */
#define PAR_MIN 262144

static cvene_status cpu_alloc(cvene_backend *be, void **ptr, size_t nbytes) {
    (void)be;
    /* 64-byte alignment for vector loads; round size up as aligned_alloc requires */
    size_t n = (nbytes + 63) & ~(size_t)63;
    *ptr = aligned_alloc(64, n ? n : 64);
    return *ptr ? CVENE_OK : CVENE_ERR_OOM;
}
static void cpu_free(cvene_backend *be, void *p) { (void)be; free(p); }
static cvene_status cpu_memcpy(cvene_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memcpy(dst, src, n);
    return CVENE_OK;
}
static cvene_status cpu_sync(cvene_backend *be) { (void)be; return CVENE_OK; }

static cvene_status cpu_embedding(cvene_backend *be, float *out, const int32_t *ids,
                                  const int32_t *pos, const float *wte, const float *wpe,
                                  int B, int T, int C) {
    int64_t N = (int64_t)B * T;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (N * C >= PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *e = wte + (int64_t)ids[n] * C;
        const float *p = wpe + (int64_t)(pos ? pos[n] : (int32_t)(n % T)) * C;
        float *o = out + n * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
    return CVENE_OK;
}

/* One row: mean and (biased, as torch) variance in double, two passes, then the f32
 * normalisation. Shared by layernorm and residual_layernorm, so the two agree bit for bit. */
static void layernorm_row(float *o, const float *x, const float *w, const float *b, int C, float eps) {
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; c++) mean += x[c];
    mean /= C;
    for (int c = 0; c < C; c++) {
        double d = x[c] - mean;
        var += d * d;
    }
    var /= C;
    float m = (float)mean, rstd = (float)(1.0 / sqrt(var + eps));
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * rstd * w[c] + b[c];
}

static cvene_status cpu_layernorm(cvene_backend *be, float *out, const float *in,
                                  const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)N * C >= PAR_MIN / 4)
    for (int n = 0; n < N; n++) layernorm_row(out + (int64_t)n * C, in + (int64_t)n * C, w, b, C, eps);
    return CVENE_OK;
}

static cvene_status cpu_matmul(cvene_backend *be, float *out, const float *in, const float *w,
                               int ldw, int trans_w, const float *bias, int M, int K, int N) {
    if (M <= 0 || N <= 0) return CVENE_OK;
    float beta = 0.0f;
    if (K <= 0) { /* empty sum: out = bias (or zeros), as the CUDA matmul; sgemm refuses lda = 0 */
        for (size_t i = 0; i < (size_t)M * (size_t)N; i++) out[i] = bias ? bias[i % (size_t)N] : 0.0f;
        return CVENE_OK;
    }
    if (bias) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)M * N >= PAR_MIN)
        for (int m = 0; m < M; m++) memcpy(out + (int64_t)m * N, bias, sizeof(float) * N);
        beta = 1.0f;
    }
    /* A tiny weight matrix (a demo or test model) or a tiny product runs on one thread:
     * OpenBLAS's OpenMP build takes its thread count from the calling thread's
     * omp_get_max_threads() (a per-thread setting, restored right after), and its threads
     * cost more than they save here, badly so on a busy machine (see PAR_MIN). */
    /* (one row is memory-bound: a second thread doubles the bandwidth once W is past L2) */
    const int serial = M == 1 ? (int64_t)N * K < (1 << 18) : (int64_t)N * K < 65536 || (int64_t)M * N * K < (1 << 22);
    const int prev = serial ? omp_get_max_threads() : 0;
    if (serial) omp_set_num_threads(1);
    if (M == 1) /* one row (a decoding step): sgemv streams W once, where sgemm (OpenBLAS 0.3.21) first packs
                 * all of it into buffers, about 1.5x the memory traffic of a memory-bound product */
        cblas_sgemv(CblasRowMajor, trans_w ? CblasNoTrans : CblasTrans, trans_w ? N : K, trans_w ? K : N, 1.0f, w,
                    ldw, in, 1, beta, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_w ? CblasTrans : CblasNoTrans, M, N, K,
                    1.0f, in, K, w, ldw, beta, out, N);
    if (serial) omp_set_num_threads(prev);
    return CVENE_OK;
}

static cvene_status cpu_attn_probs(cvene_backend *be, float *probs, const float *q, size_t q_bs,
                                   const float *k, size_t k_bs, const int32_t *key_mask, int B,
                                   int Tq, int Tk, int H, int D, float scale) {
    const int C = H * D, past = Tk - Tq;
    const int64_t rows = (int64_t)B * H * Tq;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (rows * Tk * D >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int i = (int)(r % Tq);
        int h = (int)((r / Tq) % H);
        int b = (int)(r / ((int64_t)Tq * H));
        const float *qi = q + b * q_bs + (size_t)i * C + (size_t)h * D;
        const float *kb = k + b * k_bs + (size_t)h * D;
        const int32_t *km = key_mask ? key_mask + (size_t)b * Tk : NULL;
        float *p = probs + r * Tk;
        int last = past + i; /* causal: keys 0..last */
        float mx = -INFINITY;
        for (int j = 0; j < Tk; j++) {
            if (j > last || (km && !km[j])) {
                p[j] = -INFINITY;
                continue;
            }
            const float *kj = kb + (size_t)j * C;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int d = 0; d < D; d++) s += qi[d] * kj[d];
            p[j] = s * scale;
            if (p[j] > mx) mx = p[j];
        }
        if (mx == -INFINITY) { /* nothing visible (a padded query): zero row */
            memset(p, 0, sizeof(float) * Tk);
            continue;
        }
        double sum = 0.0;
        for (int j = 0; j < Tk; j++) {
            float e = p[j] == -INFINITY ? 0.0f : expf(p[j] - mx);
            p[j] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < Tk; j++) p[j] *= inv;
    }
    return CVENE_OK;
}

static cvene_status cpu_attn_apply(cvene_backend *be, float *out, const float *probs,
                                   const float *v, size_t v_bs, int B, int Tq, int Tk, int H,
                                   int D) {
    const int C = H * D;
    const int64_t rows = (int64_t)B * H * Tq;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (rows * Tk * D >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int i = (int)(r % Tq);
        int h = (int)((r / Tq) % H);
        int b = (int)(r / ((int64_t)Tq * H));
        const float *p = probs + r * Tk;
        const float *vb = v + b * v_bs + (size_t)h * D;
        float *o = out + (size_t)b * Tq * C + (size_t)i * C + (size_t)h * D;
        for (int d = 0; d < D; d++) o[d] = 0.0f;
        for (int j = 0; j < Tk; j++) {
            float pj = p[j];
            if (pj == 0.0f) continue;
            const float *vj = vb + (size_t)j * C;
            for (int d = 0; d < D; d++) o[d] += pj * vj[d];
        }
    }
    return CVENE_OK;
}

static cvene_status cpu_activation(cvene_backend *be, float *x, size_t n, cvene_act act) {
    if (act == CVENE_ACT_NONE) return CVENE_OK;
    const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
    const float rs2 = 0.7071067811865476f; /* 1/sqrt(2) */
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        switch (act) {
        /* 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)): same function, and expf is far
         * cheaper than tanhf (a tenth of a 1 x 16 GPT-2 forward went to tanhf) */
        case CVENE_GELU_TANH: x[i] = v / (1.0f + expf(-2.0f * k0 * (v + 0.044715f * v * v * v))); break;
        case CVENE_GELU_ERF: x[i] = 0.5f * v * (1.0f + erff(v * rs2)); break;
        case CVENE_ACT_RELU: x[i] = v > 0.0f ? v : 0.0f; break;
        case CVENE_ACT_SIGMOID: x[i] = 1.0f / (1.0f + expf(-v)); break;
        case CVENE_ACT_TANH: x[i] = tanhf(v); break;
        case CVENE_ACT_NONE: break;
        }
    }
    return CVENE_OK;
}

static cvene_status cpu_softmax(cvene_backend *be, float *x, int N, int C) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)N * C >= PAR_MIN / 4)
    for (int n = 0; n < N; n++) {
        float *r = x + (int64_t)n * C;
        float mx = -INFINITY;
        for (int c = 0; c < C; c++) mx = r[c] > mx ? r[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++) {
            r[c] = expf(r[c] - mx);
            sum += r[c];
        }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) r[c] *= inv;
    }
    return CVENE_OK;
}

static cvene_status cpu_residual_add(cvene_backend *be, float *x, const float *y, size_t n) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    return CVENE_OK;
}

/* x += y, then out = layernorm(x), one row at a time while the row is in cache: the same
 * f32 add per element as residual_add, then the same row routine as layernorm, so the
 * result is bit for bit residual_add + layernorm. */
static cvene_status cpu_residual_layernorm(cvene_backend *be, float *x, const float *y, float *out,
                                           const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)N * C >= PAR_MIN / 4)
    for (int n = 0; n < N; n++) {
        float *xr = x + (int64_t)n * C;
        const float *yr = y + (int64_t)n * C;
        for (int c = 0; c < C; c++) xr[c] += yr[c];
        layernorm_row(out + (int64_t)n * C, xr, w, b, C, eps);
    }
    return CVENE_OK;
}

/* matmul_lp then the activation: the reference the CUDA epilogue fusion is tested against. */
static cvene_status cpu_matmul_act(cvene_backend *be, float *out, const float *in, const void *w,
                                   cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                   int K, int N, cvene_act act) {
    cvene_status st = cvene_cpu_matmul_lp(be, out, in, w, w_dtype, ldw, trans_w, bias, M, K, N);
    if (st != CVENE_OK || M <= 0 || N <= 0) return st;
    return cpu_activation(be, out, (size_t)M * (size_t)N, act);
}

/* GPT-NeoX rotary embedding, as transformers 4.46 computes it in float32:
 * inv_freq[i] = 1 / base^(f32(2i) / f32(rot)) (the power rounded to f32), angle =
 * f32(pos) * inv_freq[i], then per head x[i], x[i + rot/2] <- x[i] cos - x[i + rot/2] sin,
 * x[i + rot/2] cos + x[i] sin for i < rot/2 (rotate-half); dims >= rot pass through. */
static cvene_status cpu_rotary(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T, int H,
                               int D, int rot_dims, float base) {
    const int half = rot_dims / 2;
    if (half <= 0) return CVENE_OK;
    const int64_t rows = (int64_t)B * T;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (rows * H * rot_dims >= PAR_MIN)
    for (int64_t n = 0; n < rows; n++) {
        const float p = (float)(pos ? pos[n] : (int32_t)(n % T));
        float *row = x + n * (int64_t)ld;
        for (int i = 0; i < half; i++) {
            const float e = (float)(2 * i) / (float)rot_dims;
            const float inv = 1.0f / (float)pow((double)base, (double)e);
            const float ang = p * inv;
            const float c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < H; h++) {
                float *xh = row + (int64_t)h * D;
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
    return CVENE_OK;
}

static cvene_status cpu_permute_heads(cvene_backend *be, float *dst, const float *src, int B,
                                      int T, int H, int D, int to_heads) {
    const int64_t rows = (int64_t)B * T * H;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (rows * D >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int h = (int)(r % H);
        int t = (int)((r / H) % T);
        int b = (int)(r / ((int64_t)H * T));
        size_t bth = (((size_t)b * T + t) * H + h) * D; /* (B, T, H, D) */
        size_t bht = (((size_t)b * H + h) * T + t) * D; /* (B, H, T, D) */
        if (to_heads) memcpy(dst + bht, src + bth, sizeof(float) * D);
        else memcpy(dst + bth, src + bht, sizeof(float) * D);
    }
    return CVENE_OK;
}

/* Products and sums rounded separately, as torch computes them (the library is built
 * as ISO C11, where GCC does not contract a * b + c into an FMA: -ffp-contract=off). */
static cvene_status cpu_gru_pointwise(cvene_backend *be, float *out, const float *a, const float *b,
                                      const float *c, size_t n, cvene_gru_step step) {
    if (step != CVENE_GRU_NEW_GATE_IN && step != CVENE_GRU_HIDDEN) {
        if (be->err && be->err_len) snprintf(be->err, be->err_len, "gru_pointwise: unknown step %d", (int)step);
        return CVENE_ERR_INVALID_ARG;
    }
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float x = a[i], y = b[i], w = c[i];
        if (step == CVENE_GRU_NEW_GATE_IN) {
            const float p = y * w;
            out[i] = x + p;
        } else {
            const float p = x * y, q = (1.0f - x) * w;
            out[i] = p + q;
        }
    }
    return CVENE_OK;
}

static const cvene_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_memcpy,
    .to_host = cpu_memcpy,
    .copy = cpu_memcpy,
    .sync = cpu_sync,
    .embedding = cpu_embedding,
    .layernorm = cpu_layernorm,
    .matmul = cpu_matmul,
    .attn_probs = cpu_attn_probs,
    .attn_apply = cpu_attn_apply,
    .activation = cpu_activation,
    .softmax = cpu_softmax,
    .residual_add = cpu_residual_add,
    .rotary = cpu_rotary,
    .permute_heads = cpu_permute_heads,
    .gru_pointwise = cpu_gru_pointwise,
    .iv_units = cvene_cpu_iv_units,     /* kernels/cpu/ops_intervene.c */
    .iv_rotated = cvene_cpu_iv_rotated,
    .matmul_lp = cvene_cpu_matmul_lp,   /* kernels/cpu/ops_lowp.c */
    .residual_layernorm = cpu_residual_layernorm,
    .matmul_act = cpu_matmul_act,
    .ops16 = &cvene_cpu_ops16, /* kernels/cpu/ops16.c */
    .bwd = &cvene_cpu_ops_bwd, /* kernels/cpu/ops_bwd.c */
    .gen = &cvene_cpu_ops_gen, /* kernels/cpu/ops_gen.c */
};

/* /proc/cpuinfo's first "model name" (x86; "CPU" where there is none, e.g. some ARM kernels) */
static void cpu_model_name(char *out, size_t len) {
    snprintf(out, len, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        for (v++; *v == ' ' || *v == '\t'; v++) {}
        size_t n = strcspn(v, "\n");
        snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), v);
        break;
    }
    fclose(f);
}

cvene_backend *cvene_backend_cpu_new(int n_threads, char *err, size_t err_len) {
    cvene_backend *be = calloc(1, sizeof(*be));
    if (!be) {
        if (err && err_len) strncpy(err, "out of memory creating CPU backend", err_len - 1);
        return NULL;
    }
    be->ops = &cpu_ops;
    be->device = CVENE_DEVICE_CPU;
    be->n_threads = n_threads;
    if (n_threads > 0) openblas_set_num_threads(n_threads);
    cpu_model_name(be->name, sizeof be->name);
    return be;
}

void cvene_backend_cpu_free(cvene_backend *be) { free(be); }
