/* CPU fused intervention ops (kernels/backend.h: iv_units, iv_rotated): the reference
 * the CUDA kernels (kernels/cuda/intervene.cu) are tested against, and what engine/run.c
 * uses on the CPU backend. Plain loops, OpenMP over units / vectors when there is enough
 * work; every output float is computed by one iteration in a fixed order, so results do
 * not depend on the thread count. */
#include <stdio.h>
#include <stdlib.h>

#include <omp.h>

#include "kernels/backend.h"

#define NT(be) ((be)->n_threads > 0 ? (be)->n_threads : omp_get_max_threads())
/* below this many floats one thread is faster than a parallel region (see ops_cpu.c) */
#define PAR_MIN 32768

static cvene_status bad_arg(cvene_backend *be, const char *what) {
    if (be->err && be->err_len) snprintf(be->err, be->err_len, "%s", what);
    return CVENE_ERR_INVALID_ARG;
}

/* One row: the touched dims of x (D floats) and of its source row y. */
static void row_op(float *x, float *y, const int32_t *dims, int nd, int D, int op) {
    const int all = nd < 0;
    const int m = all ? D : nd;
    for (int k = 0; k < m; k++) {
        const int d = all ? k : dims[k];
        switch (op) {
        case CVENE_IVOP_VANILLA: x[d] = y[d]; break;
        case CVENE_IVOP_ADDITION: x[d] = x[d] + y[d]; break;
        case CVENE_IVOP_SUBTRACTION: x[d] = x[d] - y[d]; break;
        case CVENE_IVOP_ZERO: x[d] = 0.0f; break;
        default: y[d] = x[d]; break; /* CVENE_IVOP_COLLECT */
        }
    }
}

cvene_status cvene_cpu_iv_units(cvene_backend *be, float *x, const int64_t *x_off, int64_t x_rs, float *src,
                                const int64_t *src_off, int64_t src_rs, const int32_t *dims,
                                const int64_t *dims_off, const int32_t *dims_n, int n, int R, int D, int op) {
    if (op < CVENE_IVOP_VANILLA || op > CVENE_IVOP_COLLECT) return bad_arg(be, "iv_units: unknown op");
    if (n <= 0 || R <= 0 || D <= 0) return CVENE_OK;
    if (op != CVENE_IVOP_ZERO && (!src || !src_off)) return bad_arg(be, "iv_units: this op needs a source");
    const int64_t work = (int64_t)n * R * D;
#pragma omp parallel for num_threads(NT(be)) schedule(static) if (work >= PAR_MIN)
    for (int u = 0; u < n; u++) {
        const int nd = dims_n ? dims_n[u] : -1;
        const int32_t *du = nd >= 0 ? dims + dims_off[u] : NULL;
        float *xu = x + x_off[u];
        float *su = op == CVENE_IVOP_ZERO ? NULL : src + src_off[u];
        for (int r = 0; r < R; r++)
            row_op(xu + (int64_t)r * x_rs, su ? su + (int64_t)r * src_rs : NULL, du, nd, D, op);
    }
    return CVENE_OK;
}

/* One vector: proj (k) = W (s - x), then x += W^T proj (trans: W is (D, k), the roles
 * of W and W^T swap). f32 accumulation in index order, as the CUDA kernel's contract. */
static void rotated_one(float *x, const float *s, const float *W, int D, int k, int trans, float *proj) {
    for (int j = 0; j < k; j++) {
        float acc = 0.0f;
        for (int d = 0; d < D; d++) {
            const float w = trans ? W[(int64_t)d * k + j] : W[(int64_t)j * D + d];
            acc += w * (s[d] - x[d]);
        }
        proj[j] = acc;
    }
    for (int d = 0; d < D; d++) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc += (trans ? W[(int64_t)d * k + j] : W[(int64_t)j * D + d]) * proj[j];
        x[d] += acc;
    }
}

cvene_status cvene_cpu_iv_rotated(cvene_backend *be, float *x, const int64_t *x_off, const float *s,
                                  const int64_t *s_off, const float *W, int n, int D, int k, int trans) {
    if (n <= 0 || D <= 0 || k <= 0) return CVENE_OK;
    if (!x || !s || !W) return bad_arg(be, "iv_rotated: NULL buffer");
    const int nt = (int64_t)n * D * k >= PAR_MIN ? NT(be) : 1;
    float *proj = malloc(sizeof(float) * (size_t)k * (size_t)nt); /* (threads, k) */
    if (!proj) {
        if (be->err && be->err_len) snprintf(be->err, be->err_len, "iv_rotated: out of memory");
        return CVENE_ERR_OOM;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < n; i++) {
        float *xi = x + (x_off ? x_off[i] : (int64_t)i * D);
        const float *si = s + (s_off ? s_off[i] : (int64_t)i * D);
        rotated_one(xi, si, W, D, k, trans, proj + (size_t)omp_get_thread_num() * (size_t)k);
    }
    free(proj);
    return CVENE_OK;
}
