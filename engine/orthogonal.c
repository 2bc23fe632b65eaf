/* The orthogonal parametrization (engine/orthogonal.h), on the host in double.
 *
 * expm: scaling and squaring around the degree-16 Taylor polynomial, evaluated by
 * Paterson-Stockmeyer (the powers A^2, A^3, A^4, then Horner in A^4 over four blocks of four
 * terms: 6 matrix products where plain Horner takes 16), with the scaled matrix's 1-norm at most
 * 1 (truncation below 3e-15 relative: double precision). Its backward is reverse-mode
 * differentiation of exactly that evaluation (every step is a matrix product), so it is the
 * exact gradient of the computed exponential: 12 + 2 s products for 6 + s in the forward.
 * householder: k reflections applied to the first k columns of the identity, right to left,
 * and their reverse, O(n k^2). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "engine/orthogonal.h"

enum { N_BLOCKS = 4, N_SAVED = 3 + N_BLOCKS - 1 }; /* degree 16; saved: A^2, A^3, A^4, H_3 .. H_1 (taylor) */
static const double kScaledNorm = 1.0; /* the 1-norm the scaled matrix is brought below */

struct orth_param {
    int n, k;
    /* square: the scaled A, taylor's saved products, the squaring inputs */
    double *xs, *saved, *squares;
    int s;                   /* squarings */
    double *e;               /* expm(A) (n x n) */
    /* tall: Q before each reflection (k matrices of n x k), the reflectors and their taus */
    double *qs, *v, *tau, *q;
    int *sign;               /* int(X[j][j]) */
    const double *base;      /* the base of the last forward */
};

orth_param *orth_new(int n, int k) {
    if (n < 1 || k < 1 || k > n) return NULL;
    orth_param *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n, p->k = k;
    const size_t nn = (size_t)n * n, nk = (size_t)n * k;
    if (k == n) {
        p->xs = malloc(nn * sizeof(double));
        p->saved = malloc(nn * N_SAVED * sizeof(double));
        p->e = malloc(nn * sizeof(double));
        if (!p->xs || !p->saved || !p->e) goto oom;
    } else {
        p->qs = malloc(nk * (size_t)k * sizeof(double));
        p->v = malloc(nk * sizeof(double));
        p->tau = malloc((size_t)k * sizeof(double));
        p->q = malloc(nk * sizeof(double));
        p->sign = malloc((size_t)k * sizeof(int));
        if (!p->qs || !p->v || !p->tau || !p->q || !p->sign) goto oom;
    }
    return p;
oom:
    orth_free(p);
    return NULL;
}

void orth_free(orth_param *p) {
    if (!p) return;
    free(p->xs), free(p->saved), free(p->squares), free(p->e);
    free(p->qs), free(p->v), free(p->tau), free(p->q), free(p->sign);
    free(p);
}

/* C (n x n) = alpha op(A) op(B) + beta C */
static void mm(int n, int ta, int tb, double alpha, const double *A, const double *B, double beta, double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, n, n, n, alpha, A, n,
                B, n, beta, C, n);
}

static void add_identity(int n, double *X, double a) {
    for (int i = 0; i < n; i++) X[(size_t)i * n + i] += a;
}

/* 1/k! */
static double inv_fact(int k) {
    double f = 1;
    for (int i = 2; i <= k; i++) f *= i;
    return 1.0 / f;
}

/* out = sum_{i<4} c_{4j+i} X^i with X^0 = I, X^1 = xs, X^2 = A2, X^3 = A3 (block j of the
 * polynomial) plus beta * out */
static void block(int n, int j, const double *xs, const double *A2, const double *A3, double beta, double *out) {
    const size_t nn = (size_t)n * n;
    const double c1 = inv_fact(4 * j + 1), c2 = inv_fact(4 * j + 2), c3 = inv_fact(4 * j + 3);
    for (size_t i = 0; i < nn; i++) /* beta 0: out is not read (it may be uninitialised, even NaN) */
        out[i] = (beta != 0 ? beta * out[i] : 0.0) + c1 * xs[i] + c2 * A2[i] + c3 * A3[i];
    add_identity(n, out, inv_fact(4 * j));
}

/* expm(xs)'s Taylor polynomial of degree 4 N_BLOCKS into out, by Paterson-Stockmeyer:
 *   A2 = xs xs, A3 = A2 xs, A4 = A2 A2,
 *   H_{N-1} = B_{N-1} + c_{4N} A4, H_j = B_j + A4 H_{j+1} (j = N-2 .. 0), out = H_0
 * (B_j: block j, c_k = 1/k!), keeping A2, A3, A4, H_{N-1} .. H_1 in saved (N_SAVED matrices).
 * The squarings are the caller's. */
static void taylor(int n, const double *xs, double *saved, double *out) {
    const size_t nn = (size_t)n * n;
    double *A2 = saved, *A3 = saved + nn, *A4 = saved + 2 * nn, *H = saved + 3 * nn; /* H_j at H + (j-1) nn */
    mm(n, 0, 0, 1.0, xs, xs, 0.0, A2);
    mm(n, 0, 0, 1.0, A2, xs, 0.0, A3);
    mm(n, 0, 0, 1.0, A2, A2, 0.0, A4);
    double *top = H + (size_t)(N_BLOCKS - 2) * nn;
    for (size_t i = 0; i < nn; i++) top[i] = inv_fact(4 * N_BLOCKS) * A4[i];
    block(n, N_BLOCKS - 1, xs, A2, A3, 1.0, top);
    for (int j = N_BLOCKS - 2; j >= 0; j--) {
        double *h = j ? H + (size_t)(j - 1) * nn : out;
        block(n, j, xs, A2, A3, 0.0, h);
        mm(n, 0, 0, 1.0, A4, H + (size_t)j * nn, 1.0, h); /* + A4 H_{j+1} */
    }
}

/* The reverse of taylor: g = dL/d out in (overwritten), dxs = dL/d xs out. */
static int taylor_backward(int n, const double *xs, const double *saved, double *g, double *dxs) {
    const size_t nn = (size_t)n * n;
    const double *A2 = saved, *A4 = saved + 2 * nn, *H = saved + 3 * nn; /* A3 enters linearly */
    double *dA2 = calloc(nn, sizeof(double)), *dA3 = calloc(nn, sizeof(double)), *dA4 = calloc(nn, sizeof(double));
    double *dh = malloc(nn * sizeof(double));
    if (!dA2 || !dA3 || !dA4 || !dh) {
        free(dA2), free(dA3), free(dA4), free(dh);
        return -1;
    }
    memset(dxs, 0, nn * sizeof(double));
    for (int j = 0; j < N_BLOCKS; j++) { /* g = dL/dH_j */
        for (size_t i = 0; i < nn; i++) { /* B_j's inputs */
            dxs[i] += inv_fact(4 * j + 1) * g[i];
            dA2[i] += inv_fact(4 * j + 2) * g[i];
            dA3[i] += inv_fact(4 * j + 3) * g[i];
        }
        if (j == N_BLOCKS - 1) { /* H_{N-1} = B_{N-1} + c_{4N} A4 */
            for (size_t i = 0; i < nn; i++) dA4[i] += inv_fact(4 * N_BLOCKS) * g[i];
        } else { /* H_j = B_j + A4 H_{j+1} */
            mm(n, 0, 1, 1.0, g, H + (size_t)j * nn, 1.0, dA4);
            mm(n, 1, 0, 1.0, A4, g, 0.0, dh);
            memcpy(g, dh, nn * sizeof(double));
        }
    }
    /* A4 = A2 A2, A3 = A2 xs, A2 = xs xs */
    mm(n, 0, 1, 1.0, dA4, A2, 1.0, dA2);
    mm(n, 1, 0, 1.0, A2, dA4, 1.0, dA2);
    mm(n, 0, 1, 1.0, dA3, xs, 1.0, dA2);
    mm(n, 1, 0, 1.0, A2, dA3, 1.0, dxs);
    mm(n, 0, 1, 1.0, dA2, xs, 1.0, dxs);
    mm(n, 1, 0, 1.0, xs, dA2, 1.0, dxs);
    free(dA2), free(dA3), free(dA4), free(dh);
    return 0;
}

static double norm1(int n, const double *A) {
    double best = 0;
    for (int j = 0; j < n; j++) {
        double c = 0;
        for (int i = 0; i < n; i++) c += fabs(A[(size_t)i * n + j]);
        best = c > best ? c : best;
    }
    return best;
}

/* expm(A) into e, keeping the scaled matrix, taylor's products and the squaring inputs in p
 * (p NULL: nothing kept, for orth_expm). */
static int expm_keep(orth_param *p, int n, const double *A, double *e) {
    const size_t nn = (size_t)n * n;
    const double nrm = norm1(n, A);
    const int s = nrm > kScaledNorm ? (int)ceil(log2(nrm / kScaledNorm)) : 0;
    double *xs = p ? p->xs : malloc(nn * sizeof(double));
    double *saved = p ? p->saved : malloc(nn * N_SAVED * sizeof(double));
    double *tmp = malloc(nn * sizeof(double));
    double *squares = NULL;
    if (p && s > 0) {
        free(p->squares);
        p->squares = squares = malloc(nn * (size_t)s * sizeof(double));
    }
    if (!xs || !saved || !tmp || (p && s > 0 && !squares)) {
        if (!p) free(xs), free(saved);
        free(tmp);
        return -1;
    }
    const double scale = ldexp(1.0, -s);
    for (size_t i = 0; i < nn; i++) xs[i] = A[i] * scale;
    taylor(n, xs, saved, e);
    for (int j = 0; j < s; j++) {
        if (squares) memcpy(squares + (size_t)j * nn, e, nn * sizeof(double));
        mm(n, 0, 0, 1.0, e, e, 0.0, tmp);
        memcpy(e, tmp, nn * sizeof(double));
    }
    if (p) p->s = s;
    else free(xs), free(saved);
    free(tmp);
    return 0;
}

int orth_expm(int n, const double *A, double *out) { return expm_keep(NULL, n, A, out); }

/* ---- the square case ---- */

static int square_forward(orth_param *p, const double *X, const double *base, double *W) {
    const int n = p->n;
    const size_t nn = (size_t)n * n;
    double *A = malloc(nn * sizeof(double));
    if (!A) return -1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) /* tril(X) - tril(X)^T */
            A[(size_t)i * n + j] = (j <= i ? X[(size_t)i * n + j] : 0.0) - (i <= j ? X[(size_t)j * n + i] : 0.0);
    int rc = expm_keep(p, n, A, p->e);
    free(A);
    if (rc) return rc;
    mm(n, 0, 0, 1.0, base, p->e, 0.0, W);
    return 0;
}

static int square_backward(orth_param *p, const double *dW, double *dX) {
    const int n = p->n;
    const size_t nn = (size_t)n * n;
    double *g = malloc(nn * sizeof(double)), *t = malloc(nn * sizeof(double)), *dxs = malloc(nn * sizeof(double));
    if (!g || !t || !dxs) {
        free(g), free(t), free(dxs);
        return -1;
    }
    mm(n, 1, 0, 1.0, p->base, dW, 0.0, g); /* d expm = base^T dW */
    for (int j = p->s - 1; j >= 0; j--) {  /* Y_{j+1} = Y_j Y_j */
        const double *y = p->squares + (size_t)j * nn;
        mm(n, 0, 1, 1.0, g, y, 0.0, t);
        mm(n, 1, 0, 1.0, y, g, 1.0, t);
        memcpy(g, t, nn * sizeof(double));
    }
    const int rc = taylor_backward(n, p->xs, p->saved, g, dxs); /* g = dL/d taylor's output */
    if (rc == 0) {
        const double scale = ldexp(1.0, -p->s);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) { /* dA = dxs / 2^s; dX = tril(dA - dA^T) */
                const double da = dxs[(size_t)i * n + j] * scale, dat = dxs[(size_t)j * n + i] * scale;
                dX[(size_t)i * n + j] = j < i ? da - dat : 0.0;
            }
    }
    free(g), free(t), free(dxs);
    return rc;
}

/* ---- the tall case ---- */

static int tall_forward(orth_param *p, const double *X, const double *base, double *W) {
    const int n = p->n, k = p->k;
    const size_t nk = (size_t)n * k;
    double *q = p->q, *v = p->v;
    for (int j = 0; j < k; j++) {
        double ss = 0;
        for (int i = 0; i < n; i++) {
            const double x = i > j ? X[(size_t)i * k + j] : i == j ? 1.0 : 0.0;
            v[(size_t)i * k + j] = x;
            if (i > j) ss += x * x;
        }
        p->tau[j] = 2.0 / (1.0 + ss);
        p->sign[j] = (int)X[(size_t)j * k + j]; /* torch: .int(), truncation toward zero */
    }
    memset(q, 0, nk * sizeof(double));
    for (int j = 0; j < k; j++) q[(size_t)j * k + j] = 1.0;
    for (int j = k - 1; j >= 0; j--) { /* q = H_j q = q - tau v (v^T q) */
        memcpy(p->qs + (size_t)j * nk, q, nk * sizeof(double));
        for (int c = 0; c < k; c++) {
            double w = 0;
            for (int i = j; i < n; i++) w += v[(size_t)i * k + j] * q[(size_t)i * k + c];
            for (int i = j; i < n; i++) q[(size_t)i * k + c] -= p->tau[j] * v[(size_t)i * k + j] * w;
        }
    }
    double *qs = malloc(nk * sizeof(double));
    if (!qs) return -1;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) qs[(size_t)i * k + c] = q[(size_t)i * k + c] * p->sign[c];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, n, 1.0, base, n, qs, k, 0.0, W, k);
    free(qs);
    return 0;
}

static int tall_backward(orth_param *p, const double *dW, double *dX) {
    const int n = p->n, k = p->k;
    const size_t nk = (size_t)n * k;
    double *g = malloc(nk * sizeof(double)), *w = malloc((size_t)k * sizeof(double)),
           *gv = malloc((size_t)k * sizeof(double));
    if (!g || !w || !gv) {
        free(g), free(w), free(gv);
        return -1;
    }
    /* dQs = base^T dW; the signs */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, n, 1.0, p->base, n, dW, k, 0.0, g, k);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) g[(size_t)i * k + c] *= p->sign[c];
    memset(dX, 0, nk * sizeof(double));
    for (int j = 0; j < k; j++) { /* forward applied H_{k-1} first, H_0 last: reverse from H_0 */
        const double *q = p->qs + (size_t)j * nk; /* q before H_j */
        const double *v = p->v, tau = p->tau[j];
        /* w = v^T q (k), gv = g^T v (k): q' = q - tau v w, with g = dL/dq' */
        for (int c = 0; c < k; c++) {
            double a = 0, b = 0;
            for (int i = j; i < n; i++) {
                a += v[(size_t)i * k + j] * q[(size_t)i * k + c];
                b += v[(size_t)i * k + j] * g[(size_t)i * k + c];
            }
            w[c] = a, gv[c] = b;
        }
        double dtau = 0; /* -v^T g w^T */
        for (int c = 0; c < k; c++) dtau -= gv[c] * w[c];
        /* dL/dv = -tau (g w^T + q (g^T v)); only rows i > j are parameters */
        for (int i = j + 1; i < n; i++) {
            double gw = 0, qg = 0;
            for (int c = 0; c < k; c++) {
                gw += g[(size_t)i * k + c] * w[c];
                qg += q[(size_t)i * k + c] * gv[c];
            }
            const double x = v[(size_t)i * k + j];
            /* tau = 2 / (1 + |u|^2): dtau/du_i = -tau^2 u_i */
            dX[(size_t)i * k + j] = -tau * (gw + qg) - tau * tau * x * dtau;
        }
        /* dL/dq = H_j g = g - tau v (v^T g) */
        for (int c = 0; c < k; c++)
            for (int i = j; i < n; i++) g[(size_t)i * k + c] -= tau * v[(size_t)i * k + j] * gv[c];
    }
    free(g), free(w), free(gv);
    return 0;
}

int orth_forward(orth_param *p, const double *X, const double *base, double *W) {
    p->base = base;
    return p->k == p->n ? square_forward(p, X, base, W) : tall_forward(p, X, base, W);
}

int orth_backward(orth_param *p, const double *dW, double *dX) {
    return p->k == p->n ? square_backward(p, dW, dX) : tall_backward(p, dW, dX);
}
