// The kernel emulator's runtime (tests/kernel_emu/README.md): launches on OS threads,
// barrier-emulated __syncthreads and warp shuffles, late-completing cp.async, host memory as
// device memory, synchronous streams, naive cuBLAS GEMMs.
#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

#include <string>

#include <ucontext.h>

extern "C" {
#include "kernels/tensor.h" // cvene_f32_to_bf16 / f16 and back: the host conversions the CPU backend uses
}

emu_uint3 threadIdx, blockIdx; // of the running emulated thread (set at every switch)
emu_uint3 blockDim, gridDim;
unsigned char *emu_smem = nullptr;
int emu_occ = 1, emu_sms = 132, emu_optin = 232448; // an H100 / H200: 132 SMs, 227 KB opt-in

// Every CUDA thread of a block is a fiber (ucontext) on the calling OS thread; a scheduler
// runs each ready fiber until it finishes or blocks at __syncthreads (block barrier) or at a
// warp shuffle (warp barrier), and releases a barrier once every unfinished fiber of the
// block (warp) waits there. User-space switches keep a 512-thread block with hundreds of
// barriers cheap, and the interleaving is deterministic.
namespace {
constexpr size_t kStack = 256 * 1024; // per fiber; kernels keep small frames, ASan grows them

struct Copy {
    void *dst;
    const void *src;
    int n, src_bytes, group;
};
enum State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };
struct Fiber {
    ucontext_t ctx;
    emu_uint3 tid;
    State state;
    int shuffles; // this lane's shuffle count: which half of the warp's buffer it uses
    std::vector<Copy> cp_queue;
    int cp_group;
};
struct Warp {
    double buf[2][32];
};
struct Launch {
    ucontext_t sched;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    const std::function<void()> *body;
};
Launch *cur_launch = nullptr;
Fiber *cur = nullptr;
// fiber stacks, kept between launches (not zeroed: untouched pages cost nothing)
std::unique_ptr<char[]> stack_pool;
size_t stack_pool_n = 0;

void fiber_entry() {
    (*cur_launch->body)();
    if (!cur->cp_queue.empty()) { // a copy nobody waited for: its data was never used
        std::fprintf(stderr, "emu: thread (%u, %u) of block %u ended with %zu cp.async copies not waited for\n",
                     cur->tid.x, cur->tid.y, blockIdx.x, cur->cp_queue.size());
        std::abort();
    }
    cur->state = kDone;
    swapcontext(&cur->ctx, &cur_launch->sched);
}

// getcontext returns twice like setjmp: kept out of emu_launch_impl's frame, whose loop
// variables the compiler would otherwise have to treat as clobbered
__attribute__((noinline)) void fiber_init(Fiber &f, char *stack) {
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack;
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
}

void block_point(State st) { // block here until the scheduler releases this barrier
    cur->state = st;
    swapcontext(&cur->ctx, &cur_launch->sched);
}

void cp_do(const Copy &c) {
    std::memset(c.dst, 0, (size_t)c.n);
    if (c.src_bytes) std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
}
void cp_issue(void *dst, const void *src, int n, int src_bytes) {
    if ((uintptr_t)dst % (uintptr_t)n || (uintptr_t)src % (uintptr_t)(n == 16 ? 16 : 4) ||
        (src_bytes != 0 && src_bytes != n) || !src) {
        std::fprintf(stderr, "emu: bad cp.async: dst %p src %p n %d src_bytes %d\n", dst, src, n, src_bytes);
        std::abort();
    }
    std::memset(dst, 0xff, (size_t)n); // NaN until the wait
    cur->cp_queue.push_back(Copy{dst, src, n, src_bytes, cur->cp_group});
}

template <class T> T shfl_xor(T v, int o) {
    const size_t lane = (size_t)(cur - cur_launch->fibers.data());
    Warp &w = cur_launch->warps[lane / 32];
    const int half = cur->shuffles++ & 1; // lanes run ahead by at most one shuffle
    w.buf[half][lane % 32] = (double)v;
    block_point(kAtWarpBarrier);
    return (T)w.buf[half][(lane % 32) ^ (size_t)o];
}
} // namespace

void __syncthreads() { block_point(kAtBlockBarrier); }
float __shfl_xor_sync(unsigned mask, float v, int o) {
    if (mask != 0xffffffffu) std::abort();
    return shfl_xor(v, o);
}
double __shfl_xor_sync(unsigned mask, double v, int o) {
    if (mask != 0xffffffffu) std::abort();
    return shfl_xor(v, o);
}
void cp_async16(void *dst, const void *src, int b) { cp_issue(dst, src, 16, b); }
void cp_async4(void *dst, const void *src, int b) { cp_issue(dst, src, 4, b); }
void cp_commit() { cur->cp_group++; }
void emu_cp_wait(int n_pending) { // complete the copies of all but the newest n_pending groups
    std::vector<Copy> keep;
    for (const Copy &c : cur->cp_queue)
        if (c.group < cur->cp_group - n_pending) cp_do(c);
        else keep.push_back(c);
    cur->cp_queue.swap(keep);
}
void cp_wait_all() { emu_cp_wait(0); }

// Runs the grid's blocks one after another; each block's threads as fibers (above), with
// fresh NaN-filled dynamic shared memory (a float's and a double's all-ones pattern is NaN).
void emu_launch_impl(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    if (smem > (size_t)emu_optin) {
        std::fprintf(stderr, "emu: launch with %zu bytes of shared memory > %d\n", smem, emu_optin);
        std::abort();
    }
    const int T = (int)(block.x * block.y * block.z);
    if (T < 1 || T > 1024 || grid.x < 1 || grid.y < 1) {
        std::fprintf(stderr, "emu: bad launch: grid %u x %u, %d threads\n", grid.x, grid.y, T);
        std::abort();
    }
    if (cur_launch) {
        std::fprintf(stderr, "emu: a launch from inside a kernel\n");
        std::abort();
    }
    gridDim = {grid.x, grid.y, 1};
    blockDim = {block.x, block.y, block.z};
    Launch L;
    L.body = &body;
    L.fibers.resize((size_t)T);
    L.warps.resize(((size_t)T + 31) / 32);
    if (stack_pool_n < (size_t)T) {
        stack_pool.reset(new char[(size_t)T * kStack]);
        stack_pool_n = (size_t)T;
    }
    cur_launch = &L;
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx = {bx, by, 0};
            if (smem) {
                emu_smem = static_cast<unsigned char *>(std::malloc(smem));
                std::memset(emu_smem, 0xff, smem);
            }
            for (int t = 0; t < T; t++) {
                Fiber &f = L.fibers[(size_t)t];
                f.tid = {(unsigned)t % block.x, ((unsigned)t / block.x) % block.y, (unsigned)t / (block.x * block.y)};
                f.state = kReady;
                f.shuffles = 0;
                f.cp_queue.clear();
                f.cp_group = 0;
                fiber_init(f, stack_pool.get() + (size_t)t * kStack);
            }
            for (;;) {
                for (Fiber &f : L.fibers)
                    if (f.state == kReady) {
                        cur = &f;
                        threadIdx = f.tid;
                        swapcontext(&L.sched, &f.ctx);
                    }
                cur = nullptr;
                // release every warp whose unfinished lanes all wait at its shuffle, else the block
                // barrier once every unfinished thread waits there
                bool released = false, all_done = true, all_at_block = true;
                for (size_t w = 0; w < L.warps.size(); w++) {
                    bool all = true, any = false;
                    for (size_t t = 32 * w; t < std::min(L.fibers.size(), 32 * w + 32); t++) {
                        const State st = L.fibers[t].state;
                        if (st == kDone) continue;
                        any |= st == kAtWarpBarrier;
                        all &= st == kAtWarpBarrier;
                    }
                    if (any && all) {
                        for (size_t t = 32 * w; t < std::min(L.fibers.size(), 32 * w + 32); t++)
                            if (L.fibers[t].state == kAtWarpBarrier) L.fibers[t].state = kReady;
                        released = true;
                    }
                }
                for (const Fiber &f : L.fibers) {
                    all_done &= f.state == kDone;
                    all_at_block &= f.state == kDone || f.state == kAtBlockBarrier;
                }
                if (all_done) break;
                if (released) continue;
                if (all_at_block) {
                    for (Fiber &f : L.fibers)
                        if (f.state == kAtBlockBarrier) f.state = kReady;
                    continue;
                }
                std::fprintf(stderr, "emu: block %u deadlocked (threads wait at different barriers)\n", bx);
                std::abort();
            }
            std::free(emu_smem);
            emu_smem = nullptr;
        }
    cur_launch = nullptr;
}

// ---- runtime API: host memory, synchronous streams, one device -------------------------

const char *cudaGetErrorString(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "out of memory" : "emulated error"; }
const char *cudaGetErrorName(cudaError_t e) {
    return e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorEmulated";
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    if (dev != 0) return cudaErrorInvalidDevice;
    snprintf(p->name, sizeof p->name, "emulated CUDA device (tests/kernel_emu)");
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrMultiProcessorCount ? emu_sms : emu_optin;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = nullptr;
    if (posix_memalign(p, 256, n ? n : 1) != 0) return cudaErrorMemoryAllocation; // exact size: ASan sees overruns
    std::memset(*p, 0xff, n); // device memory starts as garbage (NaN here)
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return cudaFree(p); } // streams are synchronous
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t) {
    if (n) std::memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind, cudaStream_t) {
    if (!width || !height) return cudaSuccess;
    if (dpitch < width || spitch < width) return cudaErrorInvalidPitchValue;
    // row by row, each exactly width bytes: ASan sees a row past either buffer's end
    for (size_t r = 0; r < height; r++)
        std::memmove(static_cast<char *>(dst) + r * dpitch, static_cast<const char *>(src) + r * spitch, width);
    return cudaSuccess;
}
static int emu_stream_tag;
cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = &emu_stream_tag;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// ---- cuBLAS: naive column-major GEMMs, f32 accumulation --------------------------------

namespace {
struct Handle {
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
};
float load(const void *p, cudaDataType_t t, size_t i) {
    switch (t) {
    case CUDA_R_16BF: return cvene_bf16_to_f32(static_cast<const uint16_t *>(p)[i]);
    case CUDA_R_16F: return cvene_f16_to_f32(static_cast<const uint16_t *>(p)[i]);
    default: return static_cast<const float *>(p)[i];
    }
}
// C (m, n) = alpha op(A) op(B) + beta C, column-major, C f32
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A,
          cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, float beta, float *C, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int l = 0; l < k; l++) {
                const float a = ta == CUBLAS_OP_N ? load(A, at, i + (size_t)l * lda) : load(A, at, l + (size_t)i * lda);
                const float b = tb == CUBLAS_OP_N ? load(B, bt, l + (size_t)j * ldb) : load(B, bt, j + (size_t)l * ldb);
                acc = std::fma(a, b, acc);
            }
            float &c = C[i + (size_t)j * ldc];
            c = alpha * acc + (beta == 0.0f ? 0.0f : beta * c);
        }
}
} // namespace

const char *cublasGetStatusString(cublasStatus_t) { return "emulated cuBLAS error"; }
const char *cublasGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_EMULATED"; }
cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new Handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete static_cast<Handle *>(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    static_cast<Handle *>(h)->math = m;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *m) {
    *m = static_cast<Handle *>(h)->math;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t, cublasPointerMode_t m) {
    return m == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    gemm(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *A, int lda, long long strideA,
                                         const float *B, int ldb, long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batchCount) {
    if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batchCount; i++) {
        const cublasStatus_t s = cublasSgemm(h, ta, tb, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb,
                                             beta, C + i * strideC, ldc);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t, cublasGemmAlgo_t) {
    if (ct != CUDA_R_32F || lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    gemm(ta, tb, m, n, k, *static_cast<const float *>(alpha), A, at, lda, B, bt, ldb, *static_cast<const float *>(beta),
         static_cast<float *>(C), ldc);
    return CUBLAS_STATUS_SUCCESS;
}

__nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16{cvene_f32_to_bf16(x)}; }
__half __float2half_rn(float x) { return __half{cvene_f32_to_f16(x)}; }
float __bfloat162float(__nv_bfloat16 h) { return cvene_bf16_to_f32(h.bits); }
float __half2float(__half h) { return cvene_f16_to_f32(h.bits); }

static std::string emu_path_log;
void emu_note(const char *path) { emu_path_log += std::string(emu_path_log.empty() ? "" : "+") + path; }
// the harness reads and clears the path log (emu_iv_rotated.cpp)
std::string emu_take_path() {
    std::string s;
    s.swap(emu_path_log);
    return s;
}
