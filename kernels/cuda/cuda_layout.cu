/* cuda_layout.cu: launchers that convert staged host data into device tensors and back: float32
 * logical layout <-> T (NCHW <-> NHWC for images), and uint8 RGB pixels <-> T images.
 *
 * The staged buffers live in the device half of the staging area (cuda_backend.cu copies them
 * from or to pinned host memory), so a recorded graph replays these conversions unchanged.
 */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/k_layout.cuh"

namespace SDXS_CU_NS {

const int kThreads = 256;

/* x (N, C, P) float32 -> y (N, P, C) T. */
template <typename T>
static int launch_nchw_to_nhwc(cu_backend *c, T *y, const float *x, int64_t n, int64_t ch, int64_t p,
                        cudaStream_t stream)
{
    CU_REQUIRE(c, n <= 65535 && ch * p <= INT32_MAX);
    dim3 grid((unsigned)((p + LAYOUT_TILE - 1) / LAYOUT_TILE),
              (unsigned)((ch + LAYOUT_TILE - 1) / LAYOUT_TILE), (unsigned)n);
    CU_REQUIRE(c, grid.y <= 65535);
    CU_LAUNCH(c, (k_nchw_to_nhwc<T>), grid, dim3(LAYOUT_TILE, LAYOUT_ROWS), 0, stream, y, x,
              (int)ch, (int)p);
    return 0;
}

/* x (N, P, C) T -> y (N, C, P) float32. */
template <typename T>
static int launch_nhwc_to_nchw(cu_backend *c, float *y, const T *x, int64_t n, int64_t ch, int64_t p,
                        cudaStream_t stream)
{
    CU_REQUIRE(c, n <= 65535 && ch * p <= INT32_MAX);
    dim3 grid((unsigned)((p + LAYOUT_TILE - 1) / LAYOUT_TILE),
              (unsigned)((ch + LAYOUT_TILE - 1) / LAYOUT_TILE), (unsigned)n);
    CU_REQUIRE(c, grid.y <= 65535);
    CU_LAUNCH(c, (k_nhwc_to_nchw<T>), grid, dim3(LAYOUT_TILE, LAYOUT_ROWS), 0, stream, y, x,
              (int)ch, (int)p);
    return 0;
}

template <typename T> static int upload_t(cu_backend *c, sdxs_tensor *dst, const float *staged)
{
    int64_t n = sdxs_tensor_numel(dst);
    CU_REQUIRE(c, n <= INT32_MAX);
    if (dst->ndim == 4)
        return launch_nchw_to_nhwc(c, cu_data<T>(dst), staged, dst->ne[0], dst->ne[1],
                                   dst->ne[2] * dst->ne[3], c->stream);
    CU_LAUNCH(c, (k_from_f32<T>), cu_grid_for(c, n, kThreads), kThreads, 0, c->stream,
              cu_data<T>(dst), staged, (int)n);
    return 0;
}

template <typename T> static int download_t(cu_backend *c, float *staged, const sdxs_tensor *src)
{
    int64_t n = sdxs_tensor_numel(src);
    CU_REQUIRE(c, n <= INT32_MAX);
    if (src->ndim == 4)
        return launch_nhwc_to_nchw(c, staged, cu_data<T>(src), src->ne[0], src->ne[1],
                                   src->ne[2] * src->ne[3], c->stream);
    CU_LAUNCH(c, (k_to_f32<T>), cu_grid_for(c, n, kThreads), kThreads, 0, c->stream, staged,
              cu_data<T>(src), (int)n);
    return 0;
}

template <typename T>
static int from_rgb8_t(cu_backend *c, sdxs_tensor *y, const uint8_t *staged, float scale, float shift)
{
    int64_t n = sdxs_tensor_numel(y);
    CU_REQUIRE(c, n <= INT32_MAX);
    CU_LAUNCH(c, (k_rgb8_to<T>), cu_grid_for(c, n, kThreads), kThreads, 0, c->stream,
              cu_data<T>(y), staged, (int)n, scale, shift);
    return 0;
}

template <typename T>
static int to_rgb8_t(cu_backend *c, uint8_t *staged, const sdxs_tensor *x, float scale, float shift)
{
    int64_t n = sdxs_tensor_numel(x);
    CU_REQUIRE(c, n <= INT32_MAX);
    CU_LAUNCH(c, (k_to_rgb8<T>), cu_grid_for(c, n, kThreads), kThreads, 0, c->stream, staged,
              cu_data<T>(x), (int)n, scale, shift);
    return 0;
}

int cu_upload_convert(cu_backend *c, sdxs_tensor *dst, const float *staged)
{
    return CU_DISPATCH(c, upload_t, c, dst, staged);
}

int cu_download_convert(cu_backend *c, float *staged, const sdxs_tensor *src)
{
    if (cu_require_act(c, src, "the downloaded tensor"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, download_t, c, staged, src);
}

/* An NHWC image with three channels is the pixels' own (N, H, W, 3) order. */
int cu_from_rgb8_convert(cu_backend *c, sdxs_tensor *y, const uint8_t *staged, float scale,
                         float shift)
{
    return CU_DISPATCH(c, from_rgb8_t, c, y, staged, scale, shift);
}

int cu_to_rgb8_convert(cu_backend *c, uint8_t *staged, const sdxs_tensor *x, float scale,
                       float shift)
{
    if (cu_require_act(c, x, "the image"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, to_rgb8_t, c, staged, x, scale, shift);
}

} /* namespace SDXS_CU_NS */
