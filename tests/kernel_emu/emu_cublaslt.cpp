// cuBLASLt stand-in for the kernel emulator (declared in cublasLt.h here): lets
// kernels/cuda/gemm.cu run unchanged on the emulated backend -- its plans, layouts, numerics
// checks, epilogues, the gelu_new probe and the 16-bit path -- with naive GEMMs.
#include "cublasLt.h"

#include <cmath>
#include <cstring>

extern "C" {
#include "kernels/tensor.h"
}

struct EmuLtHandle {
    int unused;
};
struct EmuLtDesc {
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    int32_t bias_type = -1; // -1: D's type, as cuBLASLt's default
};
struct EmuLtLayout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
struct EmuLtPref {
    uint64_t mask = ~0ull;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_MASK; // split-K reductions allowed
};

namespace {
template <class T> cublasStatus_t set(T *dst, const void *buf, size_t n) {
    if (n != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(dst, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}
float load(const void *p, cudaDataType_t t, size_t i) {
    switch (t) {
    case CUDA_R_16BF: return cvene_bf16_to_f32(static_cast<const uint16_t *>(p)[i]);
    case CUDA_R_16F: return cvene_f16_to_f32(static_cast<const uint16_t *>(p)[i]);
    default: return static_cast<const float *>(p)[i];
    }
}
// what a real algorithm for these input types would report (algo.data[0] carries it)
uint64_t flags_for(cudaDataType_t t) {
    const uint64_t acc = CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F;
    if (t == CUDA_R_16BF) return CUBLASLT_NUMERICAL_IMPL_FLAGS_HMMA | acc | CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16BF;
    if (t == CUDA_R_16F) return CUBLASLT_NUMERICAL_IMPL_FLAGS_HMMA | acc | CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_16F;
    return CUBLASLT_NUMERICAL_IMPL_FLAGS_FMA | acc | CUBLASLT_NUMERICAL_IMPL_FLAGS_INPUT_32F;
}
void store(void *p, cudaDataType_t t, size_t i, float v) {
    switch (t) {
    case CUDA_R_16BF: static_cast<uint16_t *>(p)[i] = cvene_f32_to_bf16(v); break;
    case CUDA_R_16F: static_cast<uint16_t *>(p)[i] = cvene_f32_to_f16(v); break;
    default: static_cast<float *>(p)[i] = v;
    }
}
// the shapes of D = op(A) op(B): m x n with k inner; false when the layouts disagree (C / D are
// f32, or of A's 16-bit type)
bool shapes(const EmuLtDesc *d, const EmuLtLayout *a, const EmuLtLayout *b, const EmuLtLayout *c, uint64_t *m,
            uint64_t *n, uint64_t *k) {
    *m = c->rows, *n = c->cols;
    const uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    const uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    *k = ak;
    return am == *m && bn == *n && bk == ak && a->ld >= (int64_t)a->rows && b->ld >= (int64_t)b->rows &&
           c->ld >= (int64_t)c->rows && a->type == b->type && (c->type == CUDA_R_32F || c->type == a->type);
}
} // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new EmuLtHandle{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new EmuLtDesc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *buf,
                                              size_t n) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return set(&d->ta, buf, n);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set(&d->tb, buf, n);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set(&d->epi, buf, n);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set(&d->bias, buf, n);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set(&d->bias_type, buf, n);
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    *l = new EmuLtLayout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new EmuLtPref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *buf, size_t n) {
    if (a == CUBLASLT_MATMUL_PREF_IMPL_MASK) return set(&p->mask, buf, n);
    if (a == CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK) return set(&p->red, buf, n);
    return CUBLAS_STATUS_SUCCESS; // workspace and alignments: the naive GEMM needs neither
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *returned) {
    uint64_t m, n, k;
    *returned = 0;
    if (requested < 1 || !shapes(d, a, b, c, &m, &n, &k) || dd->rows != c->rows || dd->cols != c->cols)
        return CUBLAS_STATUS_INVALID_VALUE;
    const uint64_t flags = flags_for(a->type);
    if (flags & ~p->mask) return CUBLAS_STATUS_NOT_SUPPORTED; // the only algorithm is masked out
    std::memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = flags;
    // a real heuristic may pick split-K for a 16-bit D; allowed to reduce in the output type, it
    // does here (two halves of the K sum, each rounded to D's type), so a caller that does not
    // mask those schemes out gets the extra roundings a GPU could give it
    results[0].algo.data[1] = c->type != CUDA_R_32F && k >= 4 &&
                              (p->red & (CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE));
    results[0].state = CUBLAS_STATUS_SUCCESS;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoCapGetAttribute(const cublasLtMatmulAlgo_t *algo, cublasLtMatmulAlgoCapAttributes_t a,
                                                 void *buf, size_t n, size_t *written) {
    if (a != CUBLASLT_ALGO_CAP_NUMERICAL_IMPL_FLAGS || n < sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(buf, &algo->data[0], sizeof(uint64_t));
    *written = sizeof(uint64_t);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Al, const void *B, cublasLtMatrixLayout_t Bl, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cl, void *D, cublasLtMatrixLayout_t Dl,
                              const cublasLtMatmulAlgo_t *algo, void *, size_t, cudaStream_t) {
    uint64_t m, n, k;
    if (!shapes(d, Al, Bl, Cl, &m, &n, &k) || Dl->rows != m || Dl->cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    if ((d->epi == CUBLASLT_EPILOGUE_BIAS || d->epi == CUBLASLT_EPILOGUE_GELU_BIAS) && !d->bias)
        return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
    // the bias is read as its declared type (default: D's), so a missing BIAS_DATA_TYPE shows
    const cudaDataType_t bt = d->bias_type < 0 ? Dl->type : (cudaDataType_t)d->bias_type;
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            const uint64_t split = algo && algo->data[1] ? k / 2 : k; // split-K in D's type (see the heuristic)
            float acc = 0.0f, first_half = 0.0f;
            for (uint64_t l = 0; l < k; l++) {
                if (l == split) {
                    first_half = acc;
                    acc = 0.0f;
                }
                const float x = d->ta == CUBLAS_OP_N ? load(A, Al->type, i + l * (uint64_t)Al->ld)
                                                     : load(A, Al->type, l + i * (uint64_t)Al->ld);
                const float y = d->tb == CUBLAS_OP_N ? load(B, Bl->type, l + j * (uint64_t)Bl->ld)
                                                     : load(B, Bl->type, j + l * (uint64_t)Bl->ld);
                acc = std::fma(x, y, acc);
            }
            if (split < k) { // each partial sum stored in D's type, then added
                float h[2]; // room for two elements of D's type (16-bit here)
                store(h, Dl->type, 0, first_half);
                store(h, Dl->type, 1, acc);
                acc = load(h, Dl->type, 0) + load(h, Dl->type, 1);
            }
            float v = al * acc + (be == 0.0f ? 0.0f : be * load(C, Cl->type, i + j * (uint64_t)Cl->ld));
            if (d->epi != CUBLASLT_EPILOGUE_DEFAULT) v += load(d->bias, bt, i); // one bias per row of D
            if (d->epi == CUBLASLT_EPILOGUE_GELU_BIAS) { // gelu_new (the tanh form)
                const double x = v;
                v = (float)(0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
            }
            store(D, Dl->type, i + j * (uint64_t)Dl->ld, v); // 16-bit D: one rounding
        }
    return CUBLAS_STATUS_SUCCESS;
}
