/* The orthogonal parametrization (engine/orthogonal.h), on the host in double.
 *
 * expm: scaling and squaring around a degree-12 Taylor polynomial evaluated by Horner's rule,
 * with the scaled matrix's 1-norm at most 1/4 (truncation below 1e-14 relative, far inside
 * the f32 the weight is used in). Its backward is reverse-mode differentiation of exactly that
 * evaluation (every step is a matrix product), so it is the exact gradient of the computed
 * exponential: 2 (12 + s) products for 12 + s in the forward.
 * householder: k reflections applied to the first k columns of the identity, right to left,
 * and their reverse, O(n k^2). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "engine/orthogonal.h"

enum { TAYLOR_DEGREE = 12 };
static const double kScaledNorm = 0.25; /* the 1-norm the scaled matrix is brought below */

struct orth_param {
    int n, k;
    /* square: the scaled A, the Horner values P_1 .. P_{m-1} (P_m = I), the squaring inputs */
    double *xs, *horner, *squares;
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
        p->horner = malloc(nn * (TAYLOR_DEGREE - 1) * sizeof(double));
        p->e = malloc(nn * sizeof(double));
        if (!p->xs || !p->horner || !p->e) goto oom;
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
    free(p->xs), free(p->horner), free(p->squares), free(p->e);
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

/* expm(xs) by Horner (saving P_1 .. P_{m-1} in horner when not NULL) into out; the squarings
 * are done by the caller. */
static void taylor(int n, const double *xs, double *horner, double *out, double *tmp) {
    const size_t nn = (size_t)n * n;
    /* P_m = I; P_{j-1} = I + xs P_j / j, j = m .. 1 */
    memset(out, 0, nn * sizeof(double));
    add_identity(n, out, 1.0);
    for (int j = TAYLOR_DEGREE; j >= 1; j--) {
        if (j < TAYLOR_DEGREE && horner) memcpy(horner + (size_t)(j - 1) * nn, out, nn * sizeof(double)); /* P_j */
        mm(n, 0, 0, 1.0 / j, xs, out, 0.0, tmp);
        add_identity(n, tmp, 1.0);
        memcpy(out, tmp, nn * sizeof(double));
    }
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

/* expm(A) into e, keeping the scaled matrix, the Horner values and the squaring inputs in p
 * (p NULL: nothing kept, for orth_expm). */
static int expm_keep(orth_param *p, int n, const double *A, double *e) {
    const size_t nn = (size_t)n * n;
    const double nrm = norm1(n, A);
    const int s = nrm > kScaledNorm ? (int)ceil(log2(nrm / kScaledNorm)) : 0;
    double *xs = p ? p->xs : malloc(nn * sizeof(double));
    double *tmp = malloc(nn * sizeof(double));
    double *squares = NULL;
    if (p && s > 0) {
        free(p->squares);
        p->squares = squares = malloc(nn * (size_t)s * sizeof(double));
    }
    if (!xs || !tmp || (p && s > 0 && !squares)) {
        if (!p) free(xs);
        free(tmp);
        return -1;
    }
    const double scale = ldexp(1.0, -s);
    for (size_t i = 0; i < nn; i++) xs[i] = A[i] * scale;
    taylor(n, xs, p ? p->horner : NULL, e, tmp);
    for (int j = 0; j < s; j++) {
        if (squares) memcpy(squares + (size_t)j * nn, e, nn * sizeof(double));
        mm(n, 0, 0, 1.0, e, e, 0.0, tmp);
        memcpy(e, tmp, nn * sizeof(double));
    }
    if (p) p->s = s;
    else free(xs);
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
    const int n = p->n, m = TAYLOR_DEGREE;
    const size_t nn = (size_t)n * n;
    double *g = malloc(nn * sizeof(double)), *t = malloc(nn * sizeof(double)), *dxs = calloc(nn, sizeof(double));
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
    /* g = dL/dP_0; P_{j-1} = I + xs P_j / j for j = 1 .. m */
    for (int j = 1; j <= m; j++) {
        if (j < m) mm(n, 0, 1, 1.0 / j, g, p->horner + (size_t)(j - 1) * nn, 1.0, dxs); /* g P_j^T / j */
        else
            for (size_t i = 0; i < nn; i++) dxs[i] += g[i] / j; /* P_m = I */
        if (j < m) {
            mm(n, 1, 0, 1.0 / j, p->xs, g, 0.0, t); /* dL/dP_j = xs^T g / j */
            memcpy(g, t, nn * sizeof(double));
        }
    }
    const double scale = ldexp(1.0, -p->s);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) { /* dA = dxs / 2^s; dX = tril(dA - dA^T) */
            const double da = dxs[(size_t)i * n + j] * scale, dat = dxs[(size_t)j * n + i] * scale;
            dX[(size_t)i * n + j] = j < i ? da - dat : 0.0;
        }
    free(g), free(t), free(dxs);
    return 0;
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
