/* cuda_norm.cu: the group norm and layer norm entries and their launchers (kernels in
 * k_norm.cuh). Group norm's partial statistics go to the backend's preallocated gn_stats buffer;
 * the number of pixel chunks per image is chosen to fill the device and to fit that buffer.
 */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/k_norm.cuh"

namespace SDXS_CU_NS {

const int kApplyThreads = 256;
const int kStatsThreads = 256; /* a target: the block is a whole number of pixel rows */
const int kMaxChunks = 64;

/* x, y (N, P, C) T; gamma, beta (C) float. */
template <typename T, int V>
static int launch_group_norm(cu_backend *c, T *y, const T *x, const float *gamma, const float *beta,
                      int64_t n, int64_t p, int64_t ch, int groups, float eps, int act,
                      cudaStream_t stream)
{
    int64_t cols = ch / V, rows = cols >= kStatsThreads ? 1 : kStatsThreads / cols;
    int64_t chunks = (2 * c->sm_count + n - 1) / n, chunk, ppb;
    size_t smem = sizeof(float) * (size_t)(2 * rows * ch + rows);

    /* Step 1: the geometry, within the partial-statistics buffer. */
    CU_REQUIRE(c, ch % groups == 0 && groups <= GN_MAX_GROUPS && ch % V == 0);
    CU_REQUIRE(c, cols * rows <= 1024 && smem <= 48 * 1024);
    CU_REQUIRE(c, n <= 65535 && n * p * ch <= INT32_MAX);
    if (chunks > kMaxChunks)
        chunks = kMaxChunks;
    if (chunks > p)
        chunks = p;
    while (chunks > 1 && (size_t)(n * chunks * groups * 3) * sizeof(float) > c->gn_stats_bytes)
        chunks /= 2;
    CU_REQUIRE(c, (size_t)(n * chunks * groups * 3) * sizeof(float) <= c->gn_stats_bytes);
    chunk = (p + chunks - 1) / chunks;
    chunks = (p + chunk - 1) / chunk;
    ppb = chunk;

    /* Step 2: partial statistics per (image, chunk, group), then normalise. */
    CU_LAUNCH(c, (k_gn_stats<T, V>), dim3((unsigned)chunks, (unsigned)n), (unsigned)(cols * rows),
              smem, stream, x, c->gn_stats, (int)p, (int)ch, groups, (int)chunk, (int)chunks);
    CU_LAUNCH(c, (k_gn_apply<T, V>), dim3((unsigned)((p + ppb - 1) / ppb), (unsigned)n),
              kApplyThreads, 0, stream, y, x, c->gn_stats, gamma, beta, (int)p, (int)ch, groups,
              (int)chunks, (int)ppb, eps, act);
    return 0;
}

template <typename T>
static int group_norm_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm,
                 int act)
{
    const int vn = vec16<T>::n;
    int64_t n = x->ne[0], ch = x->ne[1], p = x->ne[2] * x->ne[3];
    const float *gamma = cu_data<float>(norm->gamma), *beta = cu_data<float>(norm->beta);
    if (cu_vec_ok(ch, vn, x->data, y->data))
        return launch_group_norm<T, vec16<T>::n>(c, cu_data<T>(y), cu_data<T>(x), gamma, beta, n,
                                                 p, ch, norm->groups, norm->eps, act, c->stream);
    return launch_group_norm<T, 1>(c, cu_data<T>(y), cu_data<T>(x), gamma, beta, n, p, ch,
                                   norm->groups, norm->eps, act, c->stream);
}

/* x, y (rows, D) T; gamma, beta (D) float. */
template <typename T>
static int layer_norm_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm)
{
    const int rows_per_block = 4;
    int64_t d = norm->channels, rows = sdxs_tensor_numel(x) / d;
    unsigned blocks = (unsigned)((rows + rows_per_block - 1) / rows_per_block);
    const float *gamma = cu_data<float>(norm->gamma), *beta = cu_data<float>(norm->beta);
    CU_REQUIRE(c, rows * d <= INT32_MAX);
    if (d <= 32 * LN_LANE_ELEMS)
        CU_LAUNCH(c, (k_layer_norm<T, LN_LANE_ELEMS>), blocks, rows_per_block * 32, 0, c->stream,
                  cu_data<T>(y), cu_data<T>(x), gamma, beta, (int)rows, (int)d, norm->eps);
    else
        CU_LAUNCH(c, (k_layer_norm_long<T>), blocks, rows_per_block * 32, 0, c->stream,
                  cu_data<T>(y), cu_data<T>(x), gamma, beta, (int)rows, (int)d, norm->eps);
    return 0;
}

/* Norm scales and shifts are fp32 vectors of the weight block. */
static int check_norm(cu_backend *c, const sdxs_norm *norm)
{
    if (norm->gamma->dtype != SDXS_DTYPE_F32 || norm->beta->dtype != SDXS_DTYPE_F32)
        return cu_fail(c, "norm weights", "gamma and beta must be vector weights (F32)",
                       __FILE__, __LINE__);
    return 0;
}

int cu_group_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm,
                  sdxs_act act)
{
    cu_backend *c = cu_of(be);
    c->op = "group_norm";
    if (cu_require_act(c, x, "x") || check_norm(c, norm))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, group_norm_t, c, y, x, norm, (int)act);
}

int cu_layer_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_norm *norm)
{
    cu_backend *c = cu_of(be);
    c->op = "layer_norm";
    if (cu_require_act(c, x, "x") || check_norm(c, norm))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, layer_norm_t, c, y, x, norm);
}

} /* namespace SDXS_CU_NS */
