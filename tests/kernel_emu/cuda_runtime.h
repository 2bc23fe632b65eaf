/* Host stand-in for the CUDA runtime pieces kernels/cuda/iv_rotated.cu uses, for the kernel
 * emulator (tests/kernel_emu/emu_iv_rotated.cpp; see README.md there). Not CUDA: device code
 * runs as plain C++ on OS threads, one per CUDA thread. */
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
extern thread_local emu_uint3 threadIdx, blockIdx;
extern emu_uint3 blockDim, gridDim;

typedef void *cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97, cudaDevAttrMultiProcessorCount = 16 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline const char *cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
cudaError_t cudaSetDevice(int);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
cudaError_t cudaGetLastError();
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
extern int emu_occ; /* what the occupancy query answers (the emulated device's) */
template <class F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *o, F, int, size_t) {
    *o = emu_occ;
    return cudaSuccess;
}

/* device qualifiers and intrinsics */
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
float __shfl_xor_sync(unsigned mask, float v, int o);
void __syncthreads();
extern unsigned char *emu_smem; /* the running block's dynamic shared memory */

/* cp.async (the kernel file leaves these out under CVENE_KERNEL_EMU): copies are queued per
 * thread with their commit group and done as LATE as the wait allows; the destination is
 * filled with NaN when the copy is issued, so reading it before the matching wait shows. */
void cp_async16(void *dst, const void *src, int src_bytes);
void cp_async4(void *dst, const void *src, int src_bytes);
void cp_commit();
void cp_wait_all();
void emu_cp_wait(int n_pending);
template <int N> inline void cp_wait_n() { emu_cp_wait(N); }

/* launches: blocks one after another, each block's threads as OS threads */
void emu_launch_impl(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
#define EMU_LAUNCH(kern, grid, block, smem, stream, ...) \
    emu_launch_impl(dim3(grid), dim3(block), (size_t)(smem), [=]() { kern(__VA_ARGS__); })
/* which kernel path the host code took (markers the generator adds to the kernel file) */
void emu_note(const char *path);
