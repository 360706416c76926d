/* common.cuh: what every CUDA source of the backend shares, in both builds: the CUDA headers (or
 * the CPU emulation of emu.h when SDXS_CUDA_EMU is defined), the launch and shared-memory macros
 * that read the same in both, element conversions, 16-byte vectors and activation functions.
 *
 * Everything of the backend lives in namespace SDXS_CU_NS (sdxs_cuda, or sdxs_cuda_emu in the
 * emulated build), so the two builds can be linked into one test program.
 */
#ifndef SDXS_CUDA_COMMON_CUH
#define SDXS_CUDA_COMMON_CUH

#include <cstddef>
#include <cstdint>

#ifdef SDXS_CUDA_EMU
#include "kernels/cuda/emu.h"
#define SDXS_CU_NS sdxs_cuda_emu
/* kernel<<<grid, block, smem, stream>>>(args), run on the emulated device. */
#define CU_LAUNCH_RAW(kernel, grid, block, smem, stream, ...)                                      \
    ::sdxs_emu::launch(#kernel, kernel, grid, block, smem, stream, __VA_ARGS__)
#define CU_DYNAMIC_SMEM(type, name) type *name = reinterpret_cast<type *>(::sdxs_emu::dynamic_smem())
#define CU_UNROLL
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define SDXS_CU_NS sdxs_cuda
#define CU_LAUNCH_RAW(kernel, grid, block, smem, stream, ...)                                      \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
/* 128-byte alignment: wmma loads from dynamic shared memory need 32-byte aligned pointers. */
#define CU_DYNAMIC_SMEM(type, name)                                                                \
    extern __shared__ __align__(128) unsigned char sdxs_dynamic_smem_[];                           \
    type *name = reinterpret_cast<type *>(sdxs_dynamic_smem_)
#define CU_UNROLL _Pragma("unroll")
#endif

extern "C" {
#include "kernels/backend.h"
}

namespace SDXS_CU_NS {

/* ---- element types: every kernel loads T, computes in float and stores T ---- */

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* 16 bytes of T: the unit of vectorised loads and stores (8 halves or 4 floats). */
template <typename T> struct alignas(16) vec16 {
    enum { n = 16 / sizeof(T) };
    T v[n];
};

template <typename T> __device__ __forceinline__ vec16<T> load16(const T *p)
{
    return *reinterpret_cast<const vec16<T> *>(p);
}

template <typename T> __device__ __forceinline__ void store16(T *p, const vec16<T> &v)
{
    *reinterpret_cast<vec16<T> *>(p) = v;
}

/* ---- activations, as the CPU reference evaluates them ---- */

__device__ __forceinline__ float act_apply(float x, int act)
{
    switch (act) {
    case SDXS_ACT_SILU: return x / (1.0f + expf(-x));
    case SDXS_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case SDXS_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case SDXS_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    default: return x;
    }
}

/* The epilogue of convolutions and matrix products for element (row, col) of a (rows, cols)
 * output, in the CPU's order: v + bias + chan_bias + residual, then the activation. chan_bias is
 * (rows / rows_per_n, cols); any of the three may be NULL. */
template <typename T>
__device__ __forceinline__ float epilogue_value(float v, int64_t row, int col, int cols,
                                                const float *bias, const T *chan_bias,
                                                int64_t rows_per_n, const T *res, int act)
{
    if (bias)
        v += bias[col];
    if (chan_bias)
        v += to_f(chan_bias[(row / rows_per_n) * cols + col]);
    if (res)
        v += to_f(res[row * cols + col]);
    return act_apply(v, act);
}

__device__ __forceinline__ float warp_sum(float v)
{
    CU_UNROLL
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    CU_UNROLL
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_COMMON_CUH */
