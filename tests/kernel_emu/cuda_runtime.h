/* Host stand-in for the CUDA runtime, for the kernel emulator (tests/kernel_emu/README.md).
 * Not CUDA: the kernel files are compiled as host C++ (after gen_emu.cmake's rewrite), device
 * memory is host memory, every stream is synchronous, and a launch runs its blocks one after
 * another on OS threads, one per CUDA thread. Covers what kernels/cuda/ files use. */
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct emu_uint3 {
    unsigned x, y, z;
};
extern emu_uint3 threadIdx, blockIdx;
extern emu_uint3 blockDim, gridDim;

/* ---- runtime API ---- */
typedef void *cudaStream_t;
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97, cudaDevAttrMultiProcessorCount = 16 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaSetDevice(int);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
struct cudaDeviceProp {
    char name[256];
};
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaGetLastError();
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t);
cudaError_t cudaFreeAsync(void *p, cudaStream_t);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t);
/* rows of width bytes between pitched buffers; a pitch below width is cudaErrorInvalidPitchValue,
 * as the runtime answers */
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind, cudaStream_t);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
struct cudaFuncAttributes {
    size_t sharedSizeBytes; /* static shared memory: 0 here (the emulator has no per-block limit) */
};
template <class F> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F) {
    a->sharedSizeBytes = 0;
    return cudaSuccess;
}
extern int emu_occ; /* what the occupancy query answers (the emulated device's) */
template <class F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *o, F, int, size_t) {
    *o = emu_occ;
    return cudaSuccess;
}
extern int emu_sms, emu_optin; /* the emulated device: SMs, opt-in shared memory per block */

/* ---- device qualifiers and intrinsics ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline void __stcg(T *p, T v) { *p = v; }
template <class T> inline T min(T a, T b) { return a < b ? a : b; }
/* round-to-nearest f32 operations that the compiler must not fuse (the emulator is built
 * with -ffp-contract=off, so plain operators are exact IEEE f32 too) */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
float __shfl_xor_sync(unsigned mask, float v, int o);
double __shfl_xor_sync(unsigned mask, double v, int o);
void __syncthreads();
extern unsigned char *emu_smem; /* the running block's dynamic shared memory */

/* cp.async (kernels/cuda/iv_rotated.cu leaves its own out under CVENE_KERNEL_EMU): copies
 * are queued per thread with their commit group and done as LATE as the wait allows; the
 * destination is filled with NaN when the copy is issued, so reading it early shows. */
void cp_async16(void *dst, const void *src, int src_bytes);
void cp_async4(void *dst, const void *src, int src_bytes);
void cp_commit();
void cp_wait_all();
void emu_cp_wait(int n_pending);
template <int N> inline void cp_wait_n() { emu_cp_wait(N); }

/* ---- launches: gen_emu.cmake rewrites kern<<<g, b, smem, st>>>(args); as
 * emu_cfg(g, b, smem, st) | [=]() { kern(args); }; -- the configuration, then a lambda holding
 * copies of the arguments (as a launch copies them) that every emulated thread runs. */
void emu_launch_impl(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
struct EmuCfg {
    dim3 g, b;
    size_t smem;
};
inline EmuCfg emu_cfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t = nullptr) { return EmuCfg{g, b, smem}; }
template <class F> void operator|(const EmuCfg &c, F body) { emu_launch_impl(c.g, c.b, c.smem, body); }
/* which kernel path the host code took (markers gen_emu.cmake adds to iv_rotated.cu) */
void emu_note(const char *path);
