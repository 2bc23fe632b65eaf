/* CPU reference for the decoding ops (kernels/backend.h: cvene_ops_gen), the oracle the CUDA
 * ones (kernels/cuda/sample.cu) are tested against.
 *
 * sample, one row at a time (rows in parallel, each on one thread, so results do not depend
 * on the thread count):
 *   1. zmax and the number of non-NaN z (z = logit / temperature, recomputed wherever needed:
 *      one f32 division, the same bits every time);
 *   2. top-k: the k-th largest z, found exactly by bisection over the order-preserving uint32
 *      keys of floats (the largest key t with count(z >= t) >= k; at most 32 passes, no sort);
 *   3. w of every top-k survivor into the row's scratch (0 for the others), W their double sum;
 *   4. top-p: the smallest key t with G(t) < top_p * W, G(t) the double sum (index order) of w
 *      over z > t. G shrinks as t grows (a fixed-order sum of fewer non-negative terms never
 *      rounds larger), so the survivors with z >= t are exactly those the rule keeps;
 *   5. the draw: target = u * S, S the index-order double sum of the kept w, and the first kept
 *      index whose running sum (the same sum, so it ends at S > target) exceeds target.
 * Greedy is one pass: the first index of the largest non-NaN logit. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <omp.h>

#include "kernels/backend.h"
#include "kernels/sample_common.h"

/* as kernels/cpu/ops_cpu.c: the backend's thread count */
#define NT(be) ((be)->n_threads > 0 ? (be)->n_threads : omp_get_max_threads())
/* rows run in parallel when B * V reaches this (a sampled row is ~70 passes over V) */
#define PAR_MIN_ROWS 16384

static cvene_status gen_fail(cvene_backend *be, const char *op, const char *what, double v) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "gen.%s: %s (got %g)", op, what, v);
    return CVENE_ERR_INVALID_ARG;
}

cvene_status cvene_gen_copy2d_check(cvene_backend *be, const void *dst, size_t dpitch, const void *src,
                                    size_t spitch, size_t width, size_t height) {
    if (!width || !height) return CVENE_OK;
    if (!dst || !src) return gen_fail(be, "copy2d", "dst and src must not be NULL", 0.0);
    if (height > 1 && dpitch < width) return gen_fail(be, "copy2d", "dpitch below width (rows overlap)", (double)dpitch);
    if (height > 1 && spitch < width) return gen_fail(be, "copy2d", "spitch below width (rows overlap)", (double)spitch);
    return CVENE_OK;
}

cvene_status cvene_gen_sample_check(cvene_backend *be, const int32_t *ids, const int32_t *done, const float *logits,
                                    int64_t ld, int B, int V, const float *scratch, const cvene_sample_params *sp,
                                    const int32_t *stop, int n_stop) {
    if (!sp) return gen_fail(be, "sample", "sp must not be NULL", 0.0);
    if (V < 1) return gen_fail(be, "sample", "V must be >= 1", V);
    if (B < 0) return gen_fail(be, "sample", "B must be >= 0", B);
    if (ld < V) return gen_fail(be, "sample", "ld must be >= V", (double)ld);
    if (n_stop < 0) return gen_fail(be, "sample", "n_stop must be >= 0", n_stop);
    if (n_stop > 0 && !stop) return gen_fail(be, "sample", "stop must not be NULL when n_stop > 0", n_stop);
    if (B > 0 && (!ids || !done || !logits)) return gen_fail(be, "sample", "ids, done and logits must not be NULL", B);
    if (sp->greedy) return CVENE_OK;
    if (!(sp->temperature > 0.0f) || !isfinite(sp->temperature))
        return gen_fail(be, "sample", "temperature must be > 0 and finite", sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f)) return gen_fail(be, "sample", "top_p must be in (0, 1]", sp->top_p);
    if (sp->top_k < 0) return gen_fail(be, "sample", "top_k must be >= 0", sp->top_k);
    if (B > 0 && !scratch) return gen_fail(be, "sample", "scratch must not be NULL when sampling", B);
    return CVENE_OK;
}

static cvene_status cpu_copy2d(cvene_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                               size_t width, size_t height) {
    const cvene_status st = cvene_gen_copy2d_check(be, dst, dpitch, src, spitch, width, height);
    if (st != CVENE_OK || !width || !height) return st;
    for (size_t r = 0; r < height; r++) memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return CVENE_OK;
}

/* The first index of the largest non-NaN value (strict >: equal maxima keep the lowest index,
 * -0 and +0 being equal); 0 when every value is NaN. */
static int32_t argmax_row(const float *x, int V) {
    int best = -1;
    for (int i = 0; i < V; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

/* The k-th largest z (0 < k < the number of non-NaN z): the largest key t in
 * [key(-inf), key(+inf)] with count(z >= t) >= k. The count shrinks as t grows, so bisection
 * finds it; it is a value some z has (a key between two z values counts like the upper one). */
static float topk_threshold(const float *x, int V, float temp, int k) {
    uint32_t lo = cvene_f32_key(-INFINITY), hi = cvene_f32_key(INFINITY);
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        const float t = cvene_key_f32(mid);
        int c = 0;
        for (int i = 0; i < V; i++) c += x[i] / temp >= t;
        if (c >= k) lo = mid;
        else hi = mid - 1;
    }
    return cvene_key_f32(lo);
}

/* The smallest key t with G(t) = sum of w over z > t (index order, double) < pw. G(+inf) = 0 <
 * pw, and for t below the least survivor G(t) = W >= pw, so t is a survivor's z. */
static float topp_threshold(const float *x, const float *w, int V, float temp, double pw) {
    uint32_t lo = cvene_f32_key(-INFINITY), hi = cvene_f32_key(INFINITY);
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        const float t = cvene_key_f32(mid);
        double g = 0.0;
        for (int i = 0; i < V; i++)
            if (x[i] / temp > t) g += w[i];
        if (g < pw) hi = mid;
        else lo = mid + 1;
    }
    return cvene_key_f32(lo);
}

/* One row x (V) of logits; w (V) is the row's scratch. Steps as in the header comment. */
static int32_t sample_row(const float *x, int V, float *w, const cvene_sample_params *sp, double u) {
    const float temp = sp->temperature;
    float zmax = -INFINITY;
    int n_valid = 0;
    for (int i = 0; i < V; i++) {
        const float z = x[i] / temp;
        if (isnan(z)) continue;
        n_valid++;
        if (z > zmax) zmax = z;
    }
    if (n_valid == 0) return 0;
    /* survivors: z >= tk (never NaN); -inf keeps every non-NaN z */
    const float tk = sp->top_k > 0 && sp->top_k < n_valid ? topk_threshold(x, V, temp, sp->top_k) : -INFINITY;
    double W = 0.0;
    for (int i = 0; i < V; i++) {
        const float z = x[i] / temp;
        w[i] = z >= tk ? cvene_sample_weight(z, zmax) : 0.0f;
        W += w[i];
    }
    /* zmax survives (tk <= zmax) with w = 1, so W >= 1 and pw > 0 */
    const float tp = sp->top_p < 1.0f ? topp_threshold(x, w, V, temp, (double)sp->top_p * W) : -INFINITY;
    const float keep = tk > tp ? tk : tp; /* kept: survivors of both, z >= max(tk, tp) */
    double S = 0.0;
    for (int i = 0; i < V; i++)
        if (x[i] / temp >= keep) S += w[i];
    const double target = u * S;
    double run = 0.0;
    int last = -1;
    for (int i = 0; i < V; i++) {
        if (!(x[i] / temp >= keep)) continue;
        run += w[i];
        last = i;
        if (run > target) return i;
    }
    return last; /* unreachable: run ends at S > target (u < 1, S >= 1) */
}

static cvene_status cpu_sample(cvene_backend *be, int32_t *ids, int32_t *done, const float *logits, int64_t ld,
                               int B, int V, float *scratch, const cvene_sample_params *sp, uint64_t step,
                               const int32_t *stop, int n_stop, int32_t pad_id) {
    const cvene_status st = cvene_gen_sample_check(be, ids, done, logits, ld, B, V, scratch, sp, stop, n_stop);
    if (st != CVENE_OK || B == 0) return st;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (B > 1 && (int64_t)B * V >= PAR_MIN_ROWS)
    for (int b = 0; b < B; b++) {
        if (done[b] != 0) { /* a finished sequence: transformers pads it */
            ids[b] = pad_id;
            continue;
        }
        const float *x = logits + (int64_t)b * ld;
        const int32_t tok = sp->greedy ? argmax_row(x, V)
                                       : sample_row(x, V, scratch + (int64_t)b * V, sp,
                                                    cvene_sample_uniform(sp->seed, step, b));
        ids[b] = tok;
        for (int s = 0; s < n_stop; s++)
            if (stop[s] == tok) {
                done[b] = 1;
                break;
            }
    }
    return CVENE_OK;
}

const cvene_ops_gen cvene_cpu_ops_gen = {
    .copy2d = cpu_copy2d,
    .sample = cpu_sample,
};
