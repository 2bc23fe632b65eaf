/* CPU reference for the backward ops (kernels/backend.h: cvene_ops_bwd), the oracle the
 * CUDA ones (kernels/cuda/backward.cu) are tested against.
 *
 * Sums over a row or a column (layer-norm statistics and its two gradient means, the
 * softmax-backward row sums of attention, cross-entropy's exponentials, sum_rows) run in
 * double, in index order. GEMM-shaped parts (attention's per-head products, matmul_tn) are
 * OpenBLAS sgemm with f32 accumulation, as the forward's matmul. Every op computes the fresh
 * gradient value of an element first and then, when accumulating, adds it to what is there
 * with one f32 add, so accumulate = 1 is bit for bit accumulate = 0 followed by residual_add
 * (except matmul_tn, whose sgemm adds with beta = 1 inside its own blocking).
 * Each output element is computed by one thread in a fixed order, so results do not depend
 * on the thread count; sgemm runs on one thread where it multiplies per head. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>

#include "kernels/backend.h"

/* as kernels/cpu/ops_cpu.c: the backend's thread count, and the element count below which a
 * loop runs on one thread (a parallel region costs more than the work; see PAR_MIN there) */
#define NT(be) ((be)->n_threads > 0 ? (be)->n_threads : omp_get_max_threads())
#define PAR_MIN 262144

static cvene_status bwd_fail(cvene_backend *be, cvene_status st, const char *op, const char *msg, long long v) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "bwd.%s: %s %lld", op, msg, v);
    return st;
}

static inline float acc_store(float old, float v, int accumulate) { return accumulate ? old + v : v; }

/* ---- layernorm ---- */

/* One row. The statistics are layernorm_row's (ops_cpu.c) bit for bit: double mean and
 * biased variance, two passes, then m and rstd rounded to f32; xhat = (x - m) * rstd in f32 as
 * the forward normalises. The two means of the gradient formula are double sums; the final
 * combination is in double, rounded once. */
static void layernorm_bwd_row(float *dx, const float *dy, const float *x, const float *w, int C, float eps,
                              int accumulate) {
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; c++) mean += x[c];
    mean /= C;
    for (int c = 0; c < C; c++) {
        const double d = x[c] - mean;
        var += d * d;
    }
    var /= C;
    const float m = (float)mean, rstd = (float)(1.0 / sqrt(var + eps));
    double sg = 0.0, sgx = 0.0;
    for (int c = 0; c < C; c++) {
        const float g = dy[c] * w[c], xh = (x[c] - m) * rstd;
        sg += g;
        sgx += (double)g * xh;
    }
    const double mg = sg / C, mgx = sgx / C;
    for (int c = 0; c < C; c++) {
        const float g = dy[c] * w[c], xh = (x[c] - m) * rstd;
        const float v = (float)((double)rstd * ((double)g - mg - (double)xh * mgx));
        dx[c] = acc_store(dx[c], v, accumulate);
    }
}

static cvene_status cpu_layernorm_bwd(cvene_backend *be, float *dx, const float *dy, const float *x, const float *w,
                                      int N, int C, float eps, int accumulate) {
    if (N <= 0 || C <= 0) return CVENE_OK;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)N * C >= PAR_MIN / 4)
    for (int n = 0; n < N; n++)
        layernorm_bwd_row(dx + (int64_t)n * C, dy + (int64_t)n * C, x + (int64_t)n * C, w, C, eps, accumulate);
    return CVENE_OK;
}

/* ---- attention ---- */

/* dS = P ⊙ (dP - rowsum(dP ⊙ P)) in place over dp, one (T, T) head. Keys with P == 0 (masked,
 * unseen, or an all-zero row) are skipped in the sum and get dS = 0, as attn_apply skips them
 * in the forward; the row sum is a double sum in key order. */
static void softmax_bwd_rows(float *dp, const float *p, int T) {
    for (int i = 0; i < T; i++) {
        float *d = dp + (size_t)i * T;
        const float *pr = p + (size_t)i * T;
        double s = 0.0;
        for (int j = 0; j < T; j++)
            if (pr[j] != 0.0f) s += (double)d[j] * pr[j];
        const float sf = (float)s;
        for (int j = 0; j < T; j++) d[j] = pr[j] != 0.0f ? pr[j] * (d[j] - sf) : 0.0f;
    }
}

/* One head (b, h): every pointer is at the head's first element; q-shaped rows have stride C,
 * the (T, T) matrices stride T. Row-major sgemm, one thread (see cpu_attention_bwd). */
static void attention_bwd_head(float *dq, float *dk, float *dv, float *dp, const float *dout, const float *q,
                               const float *k, const float *v, const float *p, int T, int C, int D, float scale) {
    /* dP (T, T) = dout_h (T, D) v_hᵀ */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, dout, C, v, C, 0.0f, dp, T);
    softmax_bwd_rows(dp, p, T);
    /* dq_h (T, D) = scale dS k_h;  dk_h = scale dSᵀ q_h;  dv_h = Pᵀ dout_h */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, dp, T, k, C, 0.0f, dq, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, dp, T, q, C, 0.0f, dk, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, p, T, dout, C, 0.0f, dv, C);
}

/* Heads in parallel (each on one thread, its sgemms single-threaded: OpenBLAS's OpenMP build
 * takes its thread count from the calling thread's omp_get_max_threads(), set to 1 here and
 * inherited by the region's threads), so a head's result never depends on the thread count. */
static cvene_status cpu_attention_bwd(cvene_backend *be, float *dq, float *dk, float *dv, float *dp,
                                      const float *dout, const float *q, const float *k, const float *v,
                                      const float *probs, int B, int T, int H, int D, float scale) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return CVENE_OK;
    const int C = H * D;
    const int64_t heads = (int64_t)B * H;
    const int nt = NT(be);
    const int prev = omp_get_max_threads();
    omp_set_num_threads(1);
#pragma omp parallel for num_threads(nt) schedule(static) if (heads * T * T * D >= PAR_MIN)
    for (int64_t bh = 0; bh < heads; bh++) {
        const int64_t b = bh / H, h = bh % H;
        const size_t off = (size_t)b * T * C + (size_t)h * D; /* (B, T, H*D): batch b, head h */
        const size_t poff = (size_t)bh * T * T;              /* (B, H, T, T) */
        attention_bwd_head(dq + off, dk + off, dv + off, dp + poff, dout + off, q + off, k + off, v + off,
                           probs + poff, T, C, D, scale);
    }
    omp_set_num_threads(prev);
    return CVENE_OK;
}

/* ---- activation ---- */

/* act'(x), x the activation's input; the forward formulas are cpu_activation's (ops_cpu.c). */
static inline float act_grad(float x, cvene_act act) {
    const float k0 = 0.7978845608028654f;  /* sqrt(2/pi) */
    const float rs2 = 0.7071067811865476f; /* 1/sqrt(2) */
    const float ir2pi = 0.3989422804014327f; /* 1/sqrt(2 pi) */
    switch (act) {
    case CVENE_GELU_TANH: {
        /* gelu_new = 0.5 x (1 + tanh(u)), u = k0 (x + 0.044715 x³):
         * d/dx = 0.5 (1 + t) + 0.5 x (1 - t²) k0 (1 + 3 * 0.044715 x²). Where 1 - t² is 0 (|u| past
         * ~9) the second term is 0; skipping it keeps a huge x from making 0 * inf = NaN. */
        const float t = tanhf(k0 * (x + 0.044715f * x * x * x));
        const float sech2 = 1.0f - t * t;
        const float d = 0.5f * (1.0f + t);
        return sech2 == 0.0f ? d : d + 0.5f * x * sech2 * k0 * (1.0f + 0.134145f * x * x);
    }
    case CVENE_GELU_ERF: /* 0.5 (1 + erf(x / sqrt 2)) + x φ(x) */
        return 0.5f * (1.0f + erff(x * rs2)) + x * ir2pi * expf(-0.5f * x * x);
    case CVENE_ACT_SIGMOID: {
        const float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f - s);
    }
    case CVENE_ACT_TANH: {
        const float t = tanhf(x);
        return 1.0f - t * t;
    }
    default: return 1.0f; /* NONE; RELU is a select, handled by the caller */
    }
}

static int act_known(cvene_act act) { return act >= CVENE_GELU_TANH && act <= CVENE_ACT_NONE; }

static cvene_status cpu_activation_bwd(cvene_backend *be, float *dx, const float *dy, const float *x, size_t n,
                                       cvene_act act, int accumulate) {
    if (!act_known(act)) return bwd_fail(be, CVENE_ERR_INVALID_ARG, "activation", "unknown activation", (long long)act);
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v;
        /* ReLU selects (as torch's threshold_backward: dy where x > 0, else 0), so a non-finite
         * dy at an inactive unit does not leak; NONE passes dy through */
        if (act == CVENE_ACT_RELU) v = x[i] > 0.0f ? dy[i] : 0.0f;
        else if (act == CVENE_ACT_NONE) v = dy[i];
        else v = dy[i] * act_grad(x[i], act);
        dx[i] = acc_store(dx[i], v, accumulate);
    }
    return CVENE_OK;
}

/* ---- rotary (the transpose) ---- */

/* The angle exactly as cpu_rotary (ops_cpu.c) computes it -- inv = 1 / f32(base^(f32(2i) /
 * f32(rot))) with the power in double, angle = f32(pos) * inv, cosf / sinf -- and each pair
 * turned by -angle: x[i] <- a cos + b sin, x[i + half] <- b cos - a sin. */
static cvene_status cpu_rotary_bwd(cvene_backend *be, float *x, int ld, const int32_t *pos, int B, int T, int H,
                                   int D, int rot_dims, float base) {
    const int half = rot_dims / 2;
    if (half <= 0 || B <= 0 || T <= 0) return CVENE_OK;
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
                xh[i] = a * c + b * s;
                xh[i + half] = b * c - a * s;
            }
        }
    }
    return CVENE_OK;
}

/* ---- matmul_tn ---- */

/* out (K, N) (+)= a (M, K)ᵀ b (M, N): one sgemm with A transposed (beta 1 accumulates). M = 0
 * is an empty sum (out = 0, or unchanged), done here because sgemm refuses some zero sizes.
 * Small products run on one thread, as cpu_matmul (ops_cpu.c) decides. */
static cvene_status cpu_matmul_tn(cvene_backend *be, float *out, const float *a, const float *b, int M, int K, int N,
                                  int accumulate) {
    if (K <= 0 || N <= 0) return CVENE_OK;
    if (M <= 0) {
        if (!accumulate) memset(out, 0, sizeof(float) * (size_t)K * (size_t)N);
        return CVENE_OK;
    }
    const int serial = (int64_t)K * N < 65536 || (int64_t)M * N * K < (1 << 22);
    const int prev = serial ? omp_get_max_threads() : 0;
    if (serial) omp_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, a, K, b, N, accumulate ? 1.0f : 0.0f, out,
                N);
    if (serial) omp_set_num_threads(prev);
    return CVENE_OK;
}

/* ---- softmax cross-entropy ---- */

/* One row: max, exponentials expf(x - max) in f32 summed in double (as the forward softmax),
 * loss = log(sum) + max - x[label] in double, gradient scale * (p - onehot) in f32 with
 * p = expf(x - max) * f32(1 / sum). x[label] is read before the row is written (in place). */
static void xent_row(float *dl, float *loss, const float *x, int label, int V, float scale) {
    if (label < 0) { /* ignored row */
        for (int j = 0; j < V; j++) dl[j] = 0.0f;
        *loss = 0.0f;
        return;
    }
    if (label >= V) { /* the caller's error; NaN where nothing can be reported without a sync on CUDA */
        for (int j = 0; j < V; j++) dl[j] = NAN;
        *loss = NAN;
        return;
    }
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < V; j++) sum += expf(x[j] - mx);
    const float xl = x[label];
    *loss = (float)(log(sum) + (double)mx - (double)xl);
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < V; j++) {
        const float p = expf(x[j] - mx) * inv;
        dl[j] = scale * (j == label ? p - 1.0f : p);
    }
}

static cvene_status cpu_xent(cvene_backend *be, float *dlogits, float *loss, const float *logits,
                             const int32_t *labels, int N, int V, float scale) {
    if (N <= 0) return CVENE_OK;
    if (V <= 0) return bwd_fail(be, CVENE_ERR_INVALID_ARG, "xent", "needs V >= 1, got V =", (long long)V);
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)N * V >= PAR_MIN / 4)
    for (int r = 0; r < N; r++)
        xent_row(dlogits + (int64_t)r * V, loss + r, logits + (int64_t)r * V, labels[r], V, scale);
    return CVENE_OK;
}

/* ---- element-wise ---- */

/* (alpha a + beta b) + gamma, each product and sum rounded in that order (no FMA: C11 build) */
static cvene_status cpu_affine(cvene_backend *be, float *out, const float *a, const float *b, float alpha, float beta,
                               float gamma, size_t n) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float t = b ? alpha * a[i] + beta * b[i] : alpha * a[i];
        out[i] = t + gamma;
    }
    return CVENE_OK;
}

static cvene_status cpu_mul(cvene_backend *be, float *out, const float *a, const float *b, size_t n, int accumulate) {
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = acc_store(out[i], a[i] * b[i], accumulate);
    return CVENE_OK;
}

/* ---- sum_rows ---- */

/* out (N) (+)= sum over m of x (M, N): columns in blocks of SUM_COLS, each block summed over
 * the rows in order in double (reading SUM_COLS contiguous floats per row), rounded once. */
#define SUM_COLS 64
static cvene_status cpu_sum_rows(cvene_backend *be, float *out, const float *x, int M, int N, int accumulate) {
    if (N <= 0) return CVENE_OK;
    if (M < 0) M = 0;
    const int blocks = (N + SUM_COLS - 1) / SUM_COLS;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if ((int64_t)M * N >= PAR_MIN)
    for (int blk = 0; blk < blocks; blk++) {
        const int c0 = blk * SUM_COLS, nc = N - c0 < SUM_COLS ? N - c0 : SUM_COLS;
        double acc[SUM_COLS] = {0};
        for (int m = 0; m < M; m++) {
            const float *r = x + (int64_t)m * N + c0;
            for (int c = 0; c < nc; c++) acc[c] += r[c];
        }
        for (int c = 0; c < nc; c++) out[c0 + c] = acc_store(out[c0 + c], (float)acc[c], accumulate);
    }
    return CVENE_OK;
}

/* ---- GRU cell ---- */

/* One element i through the selected stages (backend.h: gru_cell), each stage loading what it
 * reads from the buffers and storing what it writes, so a split into several calls is the same
 * arithmetic. S: saved (8, n); the (3, n) buffers at third k start at k * n. */
static void gru_cell_elt(float *dx, float *dhg, float *d, float *dh_prev, const float *dh, const float *S, size_t n,
                         size_t i, unsigned st) {
    const size_t R = i, Z = n + i, N = 2 * n + i;
    if (st & CVENE_GRU_BWD_HIDDEN) {
        const float g = dh[i], z = S[CVENE_GRU_SAVED_Z * n + i];
        const float hmn = S[CVENE_GRU_SAVED_H * n + i] - S[CVENE_GRU_SAVED_N * n + i];
        d[N] = g * (1.0f - z);
        d[Z] = g * hmn;
        dh_prev[i] = g * z; /* last: dh_prev may be dh */
    }
    if (st & CVENE_GRU_BWD_NEW_ACT) d[N] = d[N] * act_grad(S[CVENE_GRU_SAVED_AN * n + i], CVENE_ACT_TANH);
    if (st & CVENE_GRU_BWD_NEW_IN) {
        const float dn = d[N];
        dx[N] = dn;
        dhg[N] = dn * S[CVENE_GRU_SAVED_R * n + i];
        d[R] = dn * S[CVENE_GRU_SAVED_HN * n + i];
    }
    if (st & CVENE_GRU_BWD_UPDATE_ACT) d[Z] = d[Z] * act_grad(S[CVENE_GRU_SAVED_AZ * n + i], CVENE_ACT_SIGMOID);
    if (st & CVENE_GRU_BWD_UPDATE_IN) dx[Z] = dhg[Z] = d[Z];
    if (st & CVENE_GRU_BWD_RESET_ACT) d[R] = d[R] * act_grad(S[CVENE_GRU_SAVED_AR * n + i], CVENE_ACT_SIGMOID);
    if (st & CVENE_GRU_BWD_RESET_IN) dx[R] = dhg[R] = d[R];
}

static cvene_status cpu_gru_cell_bwd(cvene_backend *be, float *dx, float *dhg, float *d, float *dh_prev,
                                     const float *dh, const float *saved, size_t n, unsigned stages) {
    if (stages & ~(unsigned)CVENE_GRU_BWD_ALL)
        return bwd_fail(be, CVENE_ERR_INVALID_ARG, "gru_cell", "unknown stage bits", (long long)stages);
    if (!n || !stages) return CVENE_OK;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (n >= PAR_MIN / 8)
    for (size_t i = 0; i < n; i++) gru_cell_elt(dx, dhg, d, dh_prev, dh, saved, n, i, stages);
    return CVENE_OK;
}

const cvene_ops_bwd cvene_cpu_ops_bwd = {
    .layernorm = cpu_layernorm_bwd,
    .attention = cpu_attention_bwd,
    .activation = cpu_activation_bwd,
    .rotary = cpu_rotary_bwd,
    .matmul_tn = cpu_matmul_tn,
    .xent = cpu_xent,
    .affine = cpu_affine,
    .mul = cpu_mul,
    .sum_rows = cpu_sum_rows,
    .gru_cell = cpu_gru_cell_bwd,
};
