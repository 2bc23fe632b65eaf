/* torch.nn.utils.parametrizations.orthogonal as pyvene's rotate layers use it (the default
 * use_trivialization=True), forward and backward, so a trained rotation follows the trajectory
 * torch's would from the same parameters. The trained parameter is X ("original", n x k, the
 * shape of the weight) and a fixed orthogonal base (n x n, a buffer):
 *   square (k == n), matrix_exp:   W = base @ expm(A),  A = tril(X) - tril(X)^T;
 *   tall (k < n), householder:     W = base[:, :n] @ (H_0 H_1 ... H_{k-1})[:, :k] * sign(diag X),
 *                                  H_j = I - tau_j v_j v_j^T, v_j = (0,..,0, 1, X[j+1:, j]),
 *                                  tau_j = 2 / (1 + |X[j+1:, j]|^2)  (exact reflections).
 * (torch multiplies column j by int(X[j][j]) with no gradient; X's diagonal starts at -1 and
 * never moves.) Everything is computed on the host in double; W and dX are handed back in
 * whatever precision the caller stores. Wide weights (k > n) are the transpose of a tall one:
 * pyvene's layers never make them, and orth_new refuses them. */
#ifndef CVENE_ORTHOGONAL_H
#define CVENE_ORTHOGONAL_H

#include <stddef.h>

typedef struct orth_param orth_param;

/* A parametrization of an n x k weight (1 <= k <= n); NULL when out of memory. */
orth_param *orth_new(int n, int k);
void orth_free(orth_param *p);
/* W (n x k, row-major) from X (n x k) and base (n x n), keeping what orth_backward needs. */
int orth_forward(orth_param *p, const double *X, const double *base, double *W);
/* dX (n x k) = the gradient of a loss L(W) with respect to X, given dW = dL/dW (n x k), for the
 * X and base of the last orth_forward. The entries of X the weight does not depend on (the
 * upper triangle and the diagonal) get 0, as in torch. */
int orth_backward(orth_param *p, const double *dW, double *dX);
/* The matrix exponential of an n x n matrix (for tests): out = expm(A). */
int orth_expm(int n, const double *A, double *out);

#endif
