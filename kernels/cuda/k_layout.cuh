/* k_layout.cuh: kernels that move data between the host's logical layout and the device's:
 * float32 NCHW <-> T NHWC through shared-memory tiles (coalesced on both sides), float32 <-> T
 * for other shapes, and uint8 RGB pixels <-> T images.
 *
 * Included by cuda_layout.cu in both builds (nvcc, and the CPU emulation of emu.h).
 * Dimension letters: N batch, C channels, P = H*W pixels.
 */
#ifndef SDXS_CUDA_K_LAYOUT_CUH
#define SDXS_CUDA_K_LAYOUT_CUH

#include "kernels/cuda/common.cuh"

namespace SDXS_CU_NS {

enum { LAYOUT_TILE = 32, LAYOUT_ROWS = 8 }; /* a 32x32 tile moved by 32x8 threads */

/* x (N, C, P) float32 -> y (N, P, C) T. grid (ceil(P/32), ceil(C/32), N), block (32, 8). */
template <typename T>
__global__ void k_nchw_to_nhwc(T *__restrict__ y, const float *__restrict__ x, int c, int p)
{
    __shared__ float tile[LAYOUT_TILE][LAYOUT_TILE + 1];
    const float *xb = x + (size_t)blockIdx.z * c * p; /* (C, P) */
    T *yb = y + (size_t)blockIdx.z * c * p;           /* (P, C) */
    int p0 = blockIdx.x * LAYOUT_TILE, c0 = blockIdx.y * LAYOUT_TILE;

    for (int r = threadIdx.y; r < LAYOUT_TILE; r += LAYOUT_ROWS) {
        int ci = c0 + r, pi = p0 + threadIdx.x;
        tile[r][threadIdx.x] = ci < c && pi < p ? xb[(size_t)ci * p + pi] : 0.0f;
    }
    __syncthreads();
    for (int r = threadIdx.y; r < LAYOUT_TILE; r += LAYOUT_ROWS) {
        int pi = p0 + r, ci = c0 + threadIdx.x;
        if (pi < p && ci < c)
            yb[(size_t)pi * c + ci] = from_f<T>(tile[threadIdx.x][r]);
    }
}

/* x (N, P, C) T -> y (N, C, P) float32. Same geometry as k_nchw_to_nhwc. */
template <typename T>
__global__ void k_nhwc_to_nchw(float *__restrict__ y, const T *__restrict__ x, int c, int p)
{
    __shared__ float tile[LAYOUT_TILE][LAYOUT_TILE + 1];
    const T *xb = x + (size_t)blockIdx.z * c * p; /* (P, C) */
    float *yb = y + (size_t)blockIdx.z * c * p;   /* (C, P) */
    int p0 = blockIdx.x * LAYOUT_TILE, c0 = blockIdx.y * LAYOUT_TILE;

    for (int r = threadIdx.y; r < LAYOUT_TILE; r += LAYOUT_ROWS) {
        int pi = p0 + r, ci = c0 + threadIdx.x;
        tile[r][threadIdx.x] = pi < p && ci < c ? to_f(xb[(size_t)pi * c + ci]) : 0.0f;
    }
    __syncthreads();
    for (int r = threadIdx.y; r < LAYOUT_TILE; r += LAYOUT_ROWS) {
        int ci = c0 + r, pi = p0 + threadIdx.x;
        if (ci < c && pi < p)
            yb[(size_t)ci * p + pi] = tile[threadIdx.x][r];
    }
}

/* y[i] = T(x[i]) over n elements, grid-stride. */
template <typename T>
__global__ void k_from_f32(T *__restrict__ y, const float *__restrict__ x, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = from_f<T>(x[i]);
}

/* y[i] = float(x[i]) over n elements, grid-stride. */
template <typename T>
__global__ void k_to_f32(float *__restrict__ y, const T *__restrict__ x, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = to_f(x[i]);
}

/* Pixels (N, H, W, 3) uint8 -> image (N, H, W, 3) T: v / 255 * scale + shift, each step rounded
 * as the CPU rounds it (no fused multiply-add). */
template <typename T>
__global__ void k_rgb8_to(T *__restrict__ y, const uint8_t *__restrict__ src, int n, float scale,
                          float shift)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = __fdiv_rn((float)src[i], 255.0f);
        y[i] = from_f<T>(__fadd_rn(__fmul_rn(v, scale), shift));
    }
}

/* Image (N, H, W, 3) T -> pixels uint8: round_half_even(clamp(x * scale + shift, 0, 1) * 255). */
template <typename T>
__global__ void k_to_rgb8(uint8_t *__restrict__ dst, const T *__restrict__ x, int n, float scale,
                          float shift)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = __fadd_rn(__fmul_rn(to_f(x[i]), scale), shift);
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        dst[i] = (uint8_t)__float2int_rn(__fmul_rn(v, 255.0f));
    }
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_K_LAYOUT_CUH */
