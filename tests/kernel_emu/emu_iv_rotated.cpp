// Host emulator of kernels/cuda/iv_rotated.cu (a per-kernel dev harness that runs in CI,
// where there is no GPU). The kernel file is rewritten into host C++ at build time
// (gen_emu.cmake) and its real host code and kernels run here: every CUDA thread is an OS
// thread, __syncthreads and each warp shuffle are std::barrier rendezvous, dynamic shared
// memory is a fresh NaN-filled heap block per CUDA block, cp.async copies complete as late
// as their waits allow (and poison their destination until then), cuBLAS is a naive f32
// SGEMM, and every global buffer is an exact-size heap allocation (so ASan, in the sanitize
// build, catches any out-of-bounds global or shared access). The emulated device's SM count,
// occupancy answer and shared-memory limit are set per case, which steers the dispatcher into
// each kernel (W resident in shared memory, pipelined, W in registers, the L2 kernel, cuBLAS);
// each case names the path it must take. Results are compared with a double-precision
// reference at 1e-5 relative (f32 accumulation in a different order). What it cannot check:
// speed, and races the real memory model allows but sequential block emulation hides.
//
//   test_kernel_emu [--full]     quick set by default (CI); --full: every shape (minutes)
#include "cublas_v2.h"
#include "cuda_runtime.h"

#include <random>
#include <string>

extern "C" {
#include "kernels/backend.h"
}

// the runtime (threads, barriers, cp.async, cuBLAS) is emu_runtime.cpp; these stand in for
// the backend accessors kernels/cuda/iv_rotated.cu calls (kernels/cuda/backend_cuda.cu's)
std::string emu_take_path();
static cublasHandle_t emu_blas;
static void *emu_scratch = nullptr;
static size_t emu_scratch_cap = 0;
extern "C" {
void *cvene_backend_cuda_stream(cvene_backend *) { return nullptr; }
int cvene_backend_cuda_ordinal(cvene_backend *) { return 0; }
void *cvene_backend_cuda_blas(cvene_backend *) { return emu_blas; }
cvene_status cvene_backend_cuda_scratch(cvene_backend *, size_t nbytes, void **out) {
    if (nbytes > emu_scratch_cap) {
        std::free(emu_scratch);
        emu_scratch = std::malloc(nbytes);
        emu_scratch_cap = nbytes;
        std::memset(emu_scratch, 0xff, nbytes);
    }
    *out = emu_scratch;
    return CVENE_OK;
}
}


// ---- cases --------------------------------------------------------------------------------

namespace {
std::mt19937 rng(7);
int fails = 0, cases = 0;

std::vector<float> randf(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float &x : v) x = d(rng);
    return v;
}

struct Device { // the emulated device a case runs on
    int sms, occ;         // SMs, and the occupancy query's answer (blocks per SM)
    int optin = 232448;   // opt-in shared memory per block (an H100 / H200's)
};

// One iv_rotated call on exact-size heap buffers, against a double-precision reference over
// the whole x buffer (the gaps between scattered vectors must stay untouched). Offsets: mode
// 0 NULL, 1 scattered on 16-byte boundaries (x in reverse order), 2 scattered with offsets
// 0..3 (mod 4) in x and s independently. wshift: W starts one float into its buffer. alias:
// s is x with the same offsets (a no-op). want: the path the dispatcher must take (NULL: any).
void run_case(Device dev, int n, int D, int k, int trans, int mode, int wshift, bool alias, const char *want) {
    emu_sms = dev.sms, emu_occ = dev.occ, emu_optin = dev.optin;
    std::vector<int64_t> xo, so;
    size_t nb;
    if (mode == 0) {
        nb = (size_t)n * D;
    } else {
        const int64_t slot = mode == 1 ? ((int64_t)D + 3) / 4 * 4 + 4 : (int64_t)D + 5;
        for (int i = 0; i < n; i++) {
            xo.push_back((int64_t)(n - 1 - i) * slot + (mode == 2 ? i % 4 : 0));
            so.push_back((int64_t)i * slot + (mode == 2 ? (i / 4 + 1) % 4 : 0));
        }
        nb = (size_t)n * slot + 4;
    }
    const float a = std::sqrt(3.0f / (float)D); // W entries of variance 1 / D
    const std::vector<float> hx = randf(nb, -1, 1), hs = randf(nb, -1, 1);
    const std::vector<float> hW = randf((size_t)k * D + wshift, -a, a);
    float *x = static_cast<float *>(std::malloc(nb * 4)); // glibc malloc: 16-byte aligned
    float *s = alias ? x : static_cast<float *>(std::malloc(nb * 4));
    float *W = static_cast<float *>(std::malloc(hW.size() * 4));
    std::memcpy(x, hx.data(), nb * 4);
    if (!alias) std::memcpy(s, hs.data(), nb * 4);
    std::memcpy(W, hW.data(), hW.size() * 4);
    int64_t *dxo = nullptr, *dso = nullptr;
    if (mode) {
        dxo = static_cast<int64_t *>(std::malloc((size_t)n * 8));
        std::memcpy(dxo, xo.data(), (size_t)n * 8);
        dso = alias ? dxo : static_cast<int64_t *>(std::malloc((size_t)n * 8));
        if (!alias) std::memcpy(dso, so.data(), (size_t)n * 8);
    }
    const std::vector<float> &hsr = alias ? hx : hs;
    const std::vector<int64_t> &sor = alias ? xo : so;
    std::vector<double> ref(hx.begin(), hx.end());
    const float *Wr = hW.data() + wshift;
    for (int i = 0; i < n; i++) {
        const int64_t xoff = mode ? xo[i] : (int64_t)i * D, soff = mode ? sor[i] : (int64_t)i * D;
        std::vector<double> p(k, 0.0);
        for (int j = 0; j < k; j++)
            for (int d = 0; d < D; d++) {
                const double w = trans ? Wr[(size_t)d * k + j] : Wr[(size_t)j * D + d];
                p[j] += w * ((double)hsr[soff + d] - (double)hx[xoff + d]);
            }
        for (int d = 0; d < D; d++) {
            double u = 0;
            for (int j = 0; j < k; j++) u += (trans ? Wr[(size_t)d * k + j] : Wr[(size_t)j * D + d]) * p[j];
            ref[xoff + d] = (double)hx[xoff + d] + u;
        }
    }
    char err[256] = {0};
    cvene_backend be{};
    be.err = err;
    be.err_len = sizeof err;
    (void)emu_take_path();
    const cvene_status st = cvene_cuda_iv_rotated(&be, x, dxo, s, dso, W + wshift, n, D, k, trans);
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < nb; i++) {
        maxref = std::max(maxref, std::fabs(ref[i]));
        const double df = std::fabs(ref[i] - (double)x[i]);
        if (!(df <= maxdiff)) maxdiff = df; // NaN counts
    }
    const std::string emu_path = emu_take_path();
    const bool path_ok = !want || emu_path == want;
    const bool ok = st == CVENE_OK && maxdiff <= 1e-5 * std::max(1.0, maxref) && path_ok;
    std::printf("%s n=%d D=%d k=%d trans=%d offsets=%d wshift=%d alias=%d sms=%d occ=%d: path %s%s%s, max diff %.2e%s%s\n",
                ok ? "ok  " : "FAIL", n, D, k, trans, mode, wshift, alias, dev.sms, dev.occ, emu_path.c_str(),
                path_ok ? "" : " (want ", path_ok ? "" : (std::string(want ? want : "") + ")").c_str(), maxdiff,
                st == CVENE_OK ? "" : ", error: ", st == CVENE_OK ? "" : err);
    std::fflush(stdout);
    fails += !ok;
    cases++;
    std::free(x);
    if (!alias) std::free(s);
    std::free(W);
    std::free(dxo);
    if (!alias) std::free(dso);
}

void with_kernel_env(const char *v) {
    if (v) setenv("CVENE_IV_ROTATED", v, 1);
    else unsetenv("CVENE_IV_ROTATED");
}

// CI: every kernel and dispatcher branch once or a few times, on small shapes (seconds).
void quick() {
    const Device one{1, 1}, two{2, 1}, occ2{2, 2};
    // W in registers: every k, C = 1 (D = 130: 33 chunks, 64 threads) and C = 2 (D = 4093,
    // 512 threads, a partial last chunk), every offset kind, the ring wrapping (9 vectors, S = 8)
    for (int k = 2; k <= 8; k++)
        for (int trans : {0, 1}) run_case(one, 9, 130, k, trans, (k + trans) % 3, k % 2, false, "wreg");
    for (int trans : {0, 1}) run_case(one, 7, 4093, 8, trans, 2, 1, false, "wreg");
    run_case(one, 9, 130, 5, 1, 2, 0, true, "wreg"); // s == x
    // the same shapes with W in shared memory (CVENE_IV_ROTATED=smem): the pipelined kernel
    with_kernel_env("smem");
    for (int trans : {0, 1}) {
        run_case(one, 7, 4096, 8, trans, 2 * trans, trans, false, "pipe"); // C 2, VP 2
        run_case(one, 13, 97, 13, trans, 2, 1, false, "pipe");            // C 1, VP 4
    }
    run_case(one, 9, 130, 5, 1, 2, 0, true, "pipe");
    with_kernel_env(nullptr);
    // W resident, not pipelined: two blocks per SM, k = 1 (no pipeline), one group per SM
    run_case(occ2, 13, 768, 4, 1, 2, 1, false, "resident");
    run_case(occ2, 17, 5, 3, 0, 1, 0, false, "resident");
    run_case(one, 11, 4096, 1, 0, 2, 0, false, "resident");
    run_case(two, 2, 2500, 6, 1, 0, 0, false, "resident");
    // larger k (W does not fit in shared memory): three SGEMMs for NULL offsets; the L2 kernel
    // for scattered vectors (W^T transposed first for trans 1), or when the handle would use TF32
    for (int trans : {0, 1}) {
        run_case(two, 5, 1000, 100, trans, 0, 0, false, "cublas");
        run_case(two, 3, 300, 200, trans, 2, 1, false, "l2");
    }
    cublasSetMathMode(emu_blas, CUBLAS_TF32_TENSOR_OP_MATH);
    run_case(two, 3, 300, 200, 1, 0, 0, false, "l2");
    cublasSetMathMode(emu_blas, CUBLAS_DEFAULT_MATH);
    // n >= 1024: four vectors per block; 200 bytes of shared memory keep even W (2, 8) out of it
    const Device tiny{2, 1, 200};
    run_case(tiny, 1030, 8, 2, 1, 2, 0, false, "l2");
}

// Every shape the kernels were developed against (minutes; run by hand after kernel changes).
void full() {
    quick();
    const Device three{3, 1}, occ2{2, 2};
    for (int D : {1, 3, 5, 97, 768, 2500, 4099})
        for (int n : {1, 5, 13})
            for (int k : {1, 4, 13})
                for (int trans : {0, 1})
                    for (int mode : {0, 1, 2}) {
                        if (D >= 2500 && (n == 13 || mode == 1)) continue;
                        run_case(three, n, D, k, trans, mode, mode == 2, false, nullptr);
                    }
    for (int k = 2; k <= 8; k++)
        for (int trans : {0, 1}) {
            run_case(Device{1, 1}, 10, 2048, k, trans, 2, 1, false, "wreg");
            run_case(Device{1, 1}, 11, 1000, k, trans, k % 3, 0, false, "wreg");
        }
    run_case(Device{3, 1}, 40, 130, 8, 1, 2, 1, false, "wreg");
    run_case(occ2, 2003, 97, 13, 0, 2, 1, false, "resident");
    run_case(Device{2, 1, 8192}, 1030, 40, 60, 1, 2, 0, false, "l2");
    for (int trans : {0, 1}) run_case(occ2, 3, 20000, 2, trans, 2, 0, false, "l2");
}
} // namespace

int main(int argc, char **argv) {
    cublasCreate(&emu_blas);
    const bool all = argc > 1 && std::strcmp(argv[1], "--full") == 0;
    if (all) full();
    else quick();
    std::printf("%d of %d cases failed\n", fails, cases);
    cublasDestroy(emu_blas);
    std::free(emu_scratch);
    return fails != 0;
}
