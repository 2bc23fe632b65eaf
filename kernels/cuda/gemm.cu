/* GEMMs of the CUDA backend (kernels/backend.h: matmul, matmul_act, and matmul_lp's 16-bit
 * GEMM) through cuBLASLt.
 *
 * out (M, N) = act(in (M, K) @ W + bias) is one cublasLtMatmul: the bias (and gelu_new, when
 * allowed) is applied in the GEMM's epilogue instead of a separate pass over out.
 *
 * Numerics: CUBLAS_COMPUTE_32F, f32 scale, A/B/C/D all CUDA_R_32F. The heuristic is asked
 * (CUBLASLT_MATMUL_PREF_IMPL_MASK) for, and each candidate is checked
 * (CUBLASLT_ALGO_CAP_NUMERICAL_IMPL_FLAGS) to be, math on f32 inputs without tensor cores:
 * no TF32, no 16-bit down-conversion, no BF16x9 emulation. Results then differ from the CPU
 * (OpenBLAS sgemm) only by f32 summation order, as the cuBLAS SGEMM did before.
 *
 * Layout: row-major out (M, N) = in (M, K) @ W is, read column-major, out^T (N, M) =
 * op(A) (N, K) @ in^T (K, M). A = W: trans_w = 0, W (K, N) row-major with leading dimension
 * ldw is a column-major N x K matrix (ld ldw), op N; trans_w = 1, W (N, K) row-major is a
 * column-major K x N matrix (ld ldw), op T. B = in, K x M with ld K; C = D = out, N x M with
 * ld N. cuBLASLt's bias is one value per row of D, i.e. per output feature n, as wanted.
 *
 * Plans: descriptors, layouts and the chosen algorithm are cached per problem (shape, ld,
 * transposition, epilogue and the alignment of each pointer, which the heuristic depends
 * on), so after the first call of a shape a GEMM costs one attribute update and the launch;
 * nothing is allocated and nothing waits. The workspace is allocated once with the backend.
 *
 * Fallback: where cuBLASLt offers no such algorithm (an alignment, a shape), the GEMM runs as
 * before this file existed: out = bias, then cublasGemmEx (CUBLAS_COMPUTE_32F) with beta = 1.
 *
 * 16-bit inputs (cvene_cuda_lt_matmul_half, for kernels/cuda/lowp.cu): A = W and B = the
 * rounded activations both CUDA_R_16BF or both CUDA_R_16F, C = D = out CUDA_R_32F, the f32
 * bias in the epilogue (saves matmul_lp's bias-fill pass over out and the beta = 1 read of
 * it). Accepted candidates: tensor cores allowed (they are the point), but the inputs must be
 * taken as exactly that 16-bit type and the accumulator must be f32 (flags checked as above).
 * Not yet measured on a GPU; without an accepted algorithm matmul_lp keeps its GemmEx path.
 * 16-bit out (cvene_cuda_lt_matmul_half_out, for cvene_ops16.matmul_act): C = D of the inputs'
 * 16-bit type too, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = CUDA_R_32F so the f32 bias is added
 * before the one rounding, and split-K reductions only in the compute type
 * (CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK): the in-place and output-type schemes would add
 * partial sums rounded to 16 bits. Where cuBLASLt refuses that, the caller writes f32 and rounds.
 *
 * gelu_new (CVENE_GELU_TANH): cuBLASLt documents CUBLASLT_EPILOGUE_GELU_BIAS only as "bias,
 * then GELU"; it is the tanh approximation (torch decomposes _addmm_activation(use_gelu=True),
 * which uses that epilogue, to gelu(approximate="tanh") on CUDA), but no accuracy is given.
 * So cvene_cuda_gemm_probe_gelu runs it once when the backend is created, on inputs spanning
 * [-12, 12] through the real code path, and fuses only if every output is within
 * 2e-6 * max(1, |ref|) of gelu_new evaluated in double (an accurate f32 gelu_new, like torch's
 * or our activation kernel, is within about 3e-7). Otherwise matmul_act runs the GEMM and
 * then the activation kernel. CVENE_CUDA_GELU_EPILOGUE=0 in the environment skips the probe
 * and never fuses. Exact-erf GELU (Pythia) has no epilogue and always takes the second path. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/act.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"

/* Types at namespace scope (not anonymous): they are fields of cvene_cuda_gemm. */
struct cvene_cuda_gemm_key {
    int32_t M, K, N, ldw, trans_w, epi;
    int32_t ab; /* cvene_dtype of A and B: F32, or F16 / BF16 (16-bit inputs) */
    int32_t od; /* cvene_dtype of C = D: F32, or ab's 16-bit type (16-bit activations) */
    int32_t al_w, al_in, al_out, al_bias; /* alignment in bytes (4 .. 256) */
};

struct cvene_cuda_gemm_plan {
    int used;
    cvene_cuda_gemm_key key;
    int lt_ok; /* 0: no acceptable cuBLASLt algorithm, use cuBLAS */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

namespace {
constexpr size_t kWorkspace = (size_t)32 << 20; /* NVIDIA's suggestion for Hopper */
constexpr int kPlans = 64;                       /* a forward uses about 6 shapes */
constexpr int kCandidates = 8;
constexpr int kFillBlock = 256;
/* Implementation details we refuse: any tensor-core math or down-converted inputs. */
constexpr uint64_t kBadImpl = CUBLASLT_NUMERICAL_IMPL_FLAGS_TENSOR_OP_MASK | CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16F |
                              CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16BF | CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_TF32;

/* The implementation flags an algorithm for A/B of dtype ab must not have: f32 -> kBadImpl;
 * F16 / BF16 -> any other input type, and any accumulator but f32. */
uint64_t bad_impl(int32_t ab) {
    if (ab == CVENE_F32) return kBadImpl;
    const uint64_t in = ab == CVENE_BF16 ? CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16BF : CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16F;
    return (CUBLASLT_NUMERICAL_IMPL_FLAGS_OP_INPUT_TYPE_MASK & ~in) |
           (CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_TYPE_MASK & ~CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F) |
           CUBLASLT_NUMERICAL_IMPL_FLAGS_GAUSSIAN;
}

/* A candidate's flags are acceptable for dtype ab: none of bad_impl(ab), and for 16-bit
 * inputs positively an f32 accumulator (flags that name none are refused). */
bool impl_ok(uint64_t flags, int32_t ab) {
    if (flags & bad_impl(ab)) return false;
    return ab == CVENE_F32 || (flags & CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F) != 0;
}
} // namespace

struct cvene_cuda_gemm {
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_size;
    int gelu_epilogue;     /* matmul_act may use CUBLASLT_EPILOGUE_GELU_BIAS */
    double gelu_probe_err; /* the probe's worst |epilogue - gelu_new| / max(1, |gelu_new|);
                            * -1: the epilogue did not run (no algorithm / error), -2: not probed */
    int64_t n_lt, n_blas;  /* GEMMs run by each path (tests, reports) */
    cvene_cuda_gemm_plan plans[kPlans];
    int next;              /* round-robin victim when the cache is full */
};

namespace {

/* Largest power of two (at most 256) dividing the address and the leading dimension in bytes
 * (elements of esz bytes). */
int32_t align_bytes(const void *p, int64_t ld, size_t esz = sizeof(float)) {
    const uintptr_t a = (uintptr_t)p | ((uintptr_t)ld * esz) | (uintptr_t)256;
    return (int32_t)(a & (~a + 1));
}

void plan_destroy(cvene_cuda_gemm_plan *p) {
    if (p->desc) (void)cublasLtMatmulDescDestroy(p->desc);
    if (p->a) (void)cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) (void)cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) (void)cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

struct pref_guard { /* destroys the heuristic preference on every return path */
    cublasLtMatmulPreference_t p = nullptr;
    ~pref_guard() {
        if (p) (void)cublasLtMatmulPreferenceDestroy(p);
    }
};

/* Builds p (zeroed) for key k: descriptors, then the first heuristic candidate that passes
 * the numerics check. On error the caller destroys p. */
cvene_status plan_make(cvene_backend *be, cvene_cuda_gemm *g, cvene_cuda_gemm_plan *p, const cvene_cuda_gemm_key &k,
                       const float *bias) {
    p->key = k;
    const cublasOperation_t ta = k.trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k.epi;
    CUBLAS_CHECK(be, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (bias && k.od != CVENE_F32) { /* the bias stays f32 (by default it would be D's type) */
        const int32_t bt = CUDA_R_32F;
        cublasStatus_t bs;
        CUBLAS_CHECK_ALLOW(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                                              sizeof bt),
                           CUBLAS_STATUS_INVALID_VALUE, bs);
        if (bs != CUBLAS_STATUS_SUCCESS) { /* not settable: no cuBLASLt plan, the caller's path */
            p->used = 1;
            return CVENE_OK;
        }
    }
    if (bias) { /* the heuristic reads the pointer's alignment from here */
        const void *bp = bias;
        CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
    }
    /* A is stored as written before op(): N x K for op N, K x N for op T (both ld ldw) */
    const uint64_t a_rows = k.trans_w ? (uint64_t)k.K : (uint64_t)k.N, a_cols = k.trans_w ? (uint64_t)k.N : (uint64_t)k.K;
    const cudaDataType_t abt = k.ab == CVENE_BF16 ? CUDA_R_16BF : k.ab == CVENE_F16 ? CUDA_R_16F : CUDA_R_32F;
    CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&p->a, abt, a_rows, a_cols, k.ldw));
    CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&p->b, abt, (uint64_t)k.K, (uint64_t)k.M, k.K));
    const cudaDataType_t odt = k.od == CVENE_BF16 ? CUDA_R_16BF : k.od == CVENE_F16 ? CUDA_R_16F : CUDA_R_32F;
    CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&p->c, odt, (uint64_t)k.N, (uint64_t)k.M, k.N));

    pref_guard pref;
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceCreate(&pref.p));
    const uint64_t ws = g->ws_size, mask = ~bad_impl(k.ab);
    const uint32_t al_a = (uint32_t)k.al_w, al_b = (uint32_t)k.al_in, al_c = (uint32_t)k.al_out;
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_IMPL_MASK, &mask, sizeof mask));
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    if (k.od != CVENE_F32) { /* split-K partial sums added in f32 only, never in the 16-bit output type */
        const uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
                                                              sizeof red));
    }

    cublasLtMatmulHeuristicResult_t res[kCandidates];
    memset(res, 0, sizeof res);
    int n = 0;
    cublasStatus_t hs;
    CUBLAS_CHECK_ALLOW(be, cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->a, p->b, p->c, p->c, pref.p, kCandidates,
                                                          res, &n),
                       CUBLAS_STATUS_NOT_SUPPORTED, hs);
    if (hs != CUBLAS_STATUS_SUCCESS) n = 0; /* no heuristic for this configuration: cuBLAS path */
    for (int i = 0; i < n && !p->lt_ok; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > g->ws_size) continue;
        uint64_t flags = ~(uint64_t)0;
        size_t written = 0;
        cublasStatus_t cs;
        CUBLAS_CHECK_ALLOW(be, cublasLtMatmulAlgoCapGetAttribute(&res[i].algo, CUBLASLT_ALGO_CAP_NUMERICAL_IMPL_FLAGS,
                                                                 &flags, sizeof flags, &written),
                           CUBLAS_STATUS_INVALID_VALUE, cs);
        if (cs != CUBLAS_STATUS_SUCCESS || written != sizeof flags || !impl_ok(flags, k.ab)) continue; /* unknown: refuse */
        p->algo = res[i].algo;
        p->lt_ok = 1;
    }
    p->used = 1;
    return CVENE_OK;
}

/* Runs out = epi(in @ W + bias) with cuBLASLt, in and W both of dtype ab (F32, F16 or BF16),
 * out of dtype od (F32, or ab when 16-bit: rounded once, after the bias), bias f32. *ran = 0
 * (nothing queued) when no acceptable algorithm exists for this problem, or W has a dimension
 * of 1 (torch's addmm, CUDA >= 12.1, keeps such GEMMs off cuBLASLt too); the caller then takes
 * its own path. */
cvene_status lt_gemm(cvene_backend *be, cvene_cuda_gemm *g, cudaStream_t st, void *out, cvene_dtype od, const void *in,
                     const void *w, cvene_dtype ab, int ldw, int trans_w, const float *bias, int M, int K, int N,
                     cublasLtEpilogue_t epi, int *ran) {
    *ran = 0;
    if (M < 1 || K < 2 || N < 2) return CVENE_OK;
    const size_t esz = ab == CVENE_F32 ? sizeof(float) : sizeof(uint16_t);
    const size_t osz = od == CVENE_F32 ? sizeof(float) : sizeof(uint16_t);
    cvene_cuda_gemm_key k;
    memset(&k, 0, sizeof k); /* compared with memcmp: no stray bytes */
    k.M = M, k.K = K, k.N = N, k.ldw = ldw, k.trans_w = trans_w ? 1 : 0, k.epi = (int32_t)epi, k.ab = (int32_t)ab;
    k.od = (int32_t)od;
    k.al_w = align_bytes(w, ldw, esz), k.al_in = align_bytes(in, K, esz), k.al_out = align_bytes(out, N, osz);
    k.al_bias = bias ? align_bytes(bias, 0) : 0;
    cvene_cuda_gemm_plan *p = nullptr;
    for (int i = 0; i < kPlans && !p; i++)
        if (g->plans[i].used && memcmp(&g->plans[i].key, &k, sizeof k) == 0) p = &g->plans[i];
    if (!p) { /* descriptors are host objects: destroying an evicted plan never waits */
        p = &g->plans[g->next];
        g->next = (g->next + 1) % kPlans;
        plan_destroy(p);
        const cvene_status s = plan_make(be, g, p, k, bias);
        if (s != CVENE_OK) {
            plan_destroy(p);
            return s;
        }
    }
    if (!p->lt_ok) return CVENE_OK;
    if (bias) {
        const void *bp = bias;
        CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
    }
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(be, cublasLtMatmul(g->lt, p->desc, &alpha, w, p->a, in, p->b, &beta, out, p->c, out, p->c, &p->algo,
                                    g->ws, g->ws_size, st));
    g->n_lt++;
    *ran = 1;
    return CVENE_OK;
}

/* out (M, N) = bias broadcast over rows (zeros when bias is NULL) */
__global__ void k_gemm_bias_fill(float *out, const float *bias, int N, size_t total) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias ? bias[i % (size_t)N] : 0.0f;
}

/* The cuBLAS path (and K = 0): out = bias, then SGEMM accumulating into it (beta = 1). */
cvene_status blas_gemm(cvene_backend *be, cvene_cuda_gemm *g, cudaStream_t st, float *out, const float *in,
                       const float *w, int ldw, int trans_w, const float *bias, int M, int K, int N) {
    const size_t total = (size_t)M * (size_t)N;
    float beta = 0.0f;
    if (bias || K <= 0) { /* out = bias per row (or zeros for an empty K) */
        size_t grid = (total + kFillBlock - 1) / kFillBlock;
        if (grid > ((size_t)1 << 20)) grid = (size_t)1 << 20; /* the grid-stride loop covers the rest */
        k_gemm_bias_fill<<<(unsigned)grid, kFillBlock, 0, st>>>(out, bias, N, total);
        CU_CHECK(be, cudaGetLastError());
        beta = 1.0f;
    }
    if (K <= 0) return CVENE_OK;
    const float alpha = 1.0f;
    cublasHandle_t blas = static_cast<cublasHandle_t>(cvene_backend_cuda_blas(be));
    CUBLAS_CHECK(be, cublasGemmEx(blas, trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, w, CUDA_R_32F,
                                  ldw, in, CUDA_R_32F, K, &beta, out, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    g->n_blas++;
    return CVENE_OK;
}

} // namespace

/* ---- ops ----------------------------------------------------------------- */

extern "C" cvene_status cvene_cuda_matmul(cvene_backend *be, float *out, const float *in, const float *w, int ldw,
                                          int trans_w, const float *bias, int M, int K, int N) {
    if (M <= 0 || N <= 0) return CVENE_OK;
    CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)));
    cvene_cuda_gemm *g = cvene_backend_cuda_gemm(be);
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    if (K > 0) {
        int ran = 0;
        const cvene_status s = lt_gemm(be, g, st, out, CVENE_F32, in, w, CVENE_F32, ldw, trans_w, bias, M, K, N,
                                       bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, &ran);
        if (s != CVENE_OK || ran) return s;
    }
    return blas_gemm(be, g, st, out, in, w, ldw, trans_w, bias, M, K, N);
}

/* gelu_new with f32 weights and a bias: one GEMM with the GELU+bias epilogue when the probe
 * allowed it (the bias-less GELU epilogue is not probed, so it is not used); everything else
 * is matmul_lp then the activation op, both queued on the stream. */
extern "C" cvene_status cvene_cuda_matmul_act(cvene_backend *be, float *out, const float *in, const void *w,
                                              cvene_dtype w_dtype, int ldw, int trans_w, const float *bias, int M,
                                              int K, int N, cvene_act act) {
    if (!act_valid(act)) return CUDA_OP_FAIL(be, CVENE_ERR_INVALID_ARG, "matmul_act: unknown activation");
    cvene_cuda_gemm *g = cvene_backend_cuda_gemm(be);
    if (act == CVENE_GELU_TANH && w_dtype == CVENE_F32 && bias && M > 0 && N > 0 && K > 0 && g->gelu_epilogue) {
        CU_CHECK(be, cudaSetDevice(cvene_backend_cuda_ordinal(be)));
        cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
        int ran = 0;
        const cvene_status s =
            lt_gemm(be, g, st, out, CVENE_F32, in, w, CVENE_F32, ldw, trans_w, bias, M, K, N, CUBLASLT_EPILOGUE_GELU_BIAS,
                    &ran);
        if (s != CVENE_OK || ran) return s;
    }
    const cvene_status s = be->ops->matmul_lp(be, out, in, w, w_dtype, ldw, trans_w, bias, M, K, N);
    if (s != CVENE_OK || M <= 0 || N <= 0) return s;
    return be->ops->activation(be, out, (size_t)M * (size_t)N, act);
}

/* out (M, N) = in16 (M, K) @ W + bias with in16 and W both 16-bit (dt F16 or BF16), f32 out and
 * bias, one cuBLASLt GEMM with the bias in its epilogue; *ran = 0 (nothing queued) when
 * cuBLASLt offers no acceptable algorithm (see the header): the caller then runs its own path. */
cvene_status cvene_cuda_lt_matmul_half(cvene_backend *be, float *out, const void *in16, const void *w, cvene_dtype dt,
                                       int ldw, int trans_w, const float *bias, int M, int K, int N, int *ran) {
    *ran = 0;
    if (dt != CVENE_F16 && dt != CVENE_BF16) return CVENE_OK;
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    return lt_gemm(be, cvene_backend_cuda_gemm(be), st, out, CVENE_F32, in16, w, dt, ldw, trans_w, bias, M, K, N,
                   bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, ran);
}

/* out16 (M, N) = round(in16 @ W + bias) with in16, W and out16 all of dt (F16 or BF16), f32
 * bias and accumulation: one cuBLASLt GEMM writing dt directly (the bias added in f32 in its
 * epilogue, then one rounding). *ran = 0 (nothing queued) when cuBLASLt offers no acceptable
 * algorithm, e.g. when it refuses an f32 bias with a 16-bit D. */
cvene_status cvene_cuda_lt_matmul_half_out(cvene_backend *be, void *out16, const void *in16, const void *w,
                                           cvene_dtype dt, int ldw, int trans_w, const float *bias, int M, int K, int N,
                                           int *ran) {
    *ran = 0;
    if (dt != CVENE_F16 && dt != CVENE_BF16) return CVENE_OK;
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    return lt_gemm(be, cvene_backend_cuda_gemm(be), st, out16, dt, in16, w, dt, ldw, trans_w, bias, M, K, N,
                   bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, ran);
}

extern "C" int cvene_backend_cuda_gelu_epilogue(cvene_backend *be) { return cvene_backend_cuda_gemm(be)->gelu_epilogue; }
extern "C" double cvene_backend_cuda_gelu_probe_error(cvene_backend *be) {
    return cvene_backend_cuda_gemm(be)->gelu_probe_err;
}

extern "C" void cvene_backend_cuda_gemm_counts(cvene_backend *be, int64_t *lt, int64_t *blas) {
    const cvene_cuda_gemm *g = cvene_backend_cuda_gemm(be);
    if (lt) *lt = g->n_lt;
    if (blas) *blas = g->n_blas;
}

/* ---- state ----------------------------------------------------------------- */

cvene_cuda_gemm *cvene_cuda_gemm_new(char *err, size_t err_len) {
    cvene_cuda_gemm *g = static_cast<cvene_cuda_gemm *>(calloc(1, sizeof(cvene_cuda_gemm)));
    if (!g) {
        if (err && err_len) snprintf(err, err_len, "out of memory creating the cuBLASLt state");
        return nullptr;
    }
    const cublasStatus_t s = cublasLtCreate(&g->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cvene_cublas_fail(err, err_len, __FILE__, __LINE__, "cublasLtCreate(&g->lt)", s);
        free(g);
        return nullptr;
    }
    const cudaError_t e = cudaMalloc(&g->ws, kWorkspace);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        cvene_cuda_fail(err, err_len, __FILE__, __LINE__, "cudaMalloc(&g->ws, kWorkspace)", e);
        (void)cublasLtDestroy(g->lt);
        free(g);
        return nullptr;
    }
    g->ws_size = kWorkspace;
    return g;
}

void cvene_cuda_gemm_free(cvene_cuda_gemm *g) {
    if (!g) return;
    for (int i = 0; i < kPlans; i++) plan_destroy(&g->plans[i]);
    if (g->ws) (void)cudaFree(g->ws);
    if (g->lt) (void)cublasLtDestroy(g->lt);
    free(g);
}

/* ---- the gelu_new probe ------------------------------------------------------ */

namespace {

/* The GPT-2 small c_fc shape except for M: in = ones (M, K); W (K, N) has row 0 = the test
 * values v and zeros below, so in @ W = v exactly in every row (adding zeros is exact, in
 * any order or split), and bias = 0: the output is the epilogue's gelu(v) alone. */
constexpr int kProbeM = 64, kProbeK = 64, kProbeN = 3072;

double gelu_new_ref(double v) { return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); }

cvene_status probe_alloc(cvene_backend *be, float **dev, size_t n) {
    CU_CHECK(be, cudaMalloc(reinterpret_cast<void **>(dev), n * sizeof(float)));
    return CVENE_OK;
}

/* host: in, W, bias, then room for out; dev the same layout. Waits for the result. */
cvene_status probe_run(cvene_backend *be, cvene_cuda_gemm *g, float *host, float *dev, int *ran) {
    const size_t n_in = (size_t)kProbeM * kProbeK, n_w = (size_t)kProbeK * kProbeN, n_b = kProbeN;
    const size_t n_out = (size_t)kProbeM * kProbeN;
    cudaStream_t st = static_cast<cudaStream_t>(cvene_backend_cuda_stream(be));
    CU_CHECK(be, cudaMemcpyAsync(dev, host, (n_in + n_w + n_b) * sizeof(float), cudaMemcpyHostToDevice, st));
    float *in = dev, *w = dev + n_in, *bias = w + n_w, *out = bias + n_b;
    const cvene_status s =
        lt_gemm(be, g, st, out, CVENE_F32, in, w, CVENE_F32, kProbeN, 0, bias, kProbeM, kProbeK, kProbeN,
                CUBLASLT_EPILOGUE_GELU_BIAS, ran);
    if (s != CVENE_OK) return s;
    if (*ran)
        CU_CHECK(be, cudaMemcpyAsync(host + n_in + n_w + n_b, out, n_out * sizeof(float), cudaMemcpyDeviceToHost, st));
    CU_CHECK(be, cudaStreamSynchronize(st));
    return CVENE_OK;
}

} // namespace

void cvene_cuda_gemm_probe_gelu(cvene_backend *be) {
    cvene_cuda_gemm *g = cvene_backend_cuda_gemm(be);
    g->gelu_epilogue = 0;
    g->gelu_probe_err = -2.0;
    const char *env = getenv("CVENE_CUDA_GELU_EPILOGUE");
    if (env && strcmp(env, "0") == 0) return;
    const size_t n_in = (size_t)kProbeM * kProbeK, n_w = (size_t)kProbeK * kProbeN, n_b = kProbeN;
    const size_t n_out = (size_t)kProbeM * kProbeN, total = n_in + n_w + n_b + n_out;
    float *host = static_cast<float *>(calloc(total, sizeof(float)));
    if (!host) return;
    float *v = host + n_in; /* row 0 of W */
    for (size_t i = 0; i < n_in; i++) host[i] = 1.0f;
    const float special[] = {0.0f, 1e-3f, -1e-3f, 0.5f, -0.5f, 20.0f, -20.0f, 30.0f, -30.0f};
    const int n_special = (int)(sizeof special / sizeof special[0]);
    const int n_span = kProbeN - n_special;
    for (int n = 0; n < n_span; n++) v[n] = -12.0f + 24.0f * (float)n / (float)(n_span - 1);
    for (int i = 0; i < n_special; i++) v[n_span + i] = special[i];
    float *dev = nullptr;
    int ran = 0;
    cvene_status s = probe_alloc(be, &dev, total);
    if (s == CVENE_OK) s = probe_run(be, g, host, dev, &ran);
    if (dev) (void)cudaFree(dev);
    (void)cudaGetLastError(); /* the probe's failures are answers, not errors */
    int ok = s == CVENE_OK && ran;
    const float *out = host + n_in + n_w + n_b;
    double worst = ok ? 0.0 : -1.0; /* relative to max(1, |ref|); kept for reports */
    for (int m = 0; m < kProbeM && ok; m++)
        for (int n = 0; n < kProbeN; n++) {
            const double ref = gelu_new_ref((double)v[n]), got = out[(size_t)m * kProbeN + n];
            const double e = isfinite(got) ? fabs(got - ref) / (fabs(ref) > 1.0 ? fabs(ref) : 1.0) : INFINITY;
            if (e > worst) worst = e;
        }
    if (ok && !(worst <= 2e-6)) ok = 0;
    free(host);
    g->gelu_probe_err = worst;
    g->gelu_epilogue = ok;
    g->n_lt = g->n_blas = 0; /* count only the backend's own work */
}
