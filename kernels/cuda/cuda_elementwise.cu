/* cuda_elementwise.cu: the memory-bound entries of the table (axpby, clamp, tanh clamp, GEGLU,
 * upsampling, concatenation, image <-> tokens), the shared conv / linear epilogue, and the
 * embedding and gather kernels behind the staged host ids and indices.
 *
 * Each launcher picks the 16-byte vector kernel when sizes and pointers allow. Images are NHWC,
 * so image_to_tokens is a plain copy and tokens_to_image a copy or a residual add.
 */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/k_elementwise.cuh"

namespace SDXS_CU_NS {

const int kThreads = 256;

/* y (n) = f(a, b) over n elements; b may be NULL. */
template <typename T, typename F>
static int launch_map(cu_backend *c, T *y, const T *a, const T *b, int64_t n, F f, cudaStream_t stream)
{
    const int vn = vec16<T>::n;
    CU_REQUIRE(c, n <= INT32_MAX);
    if (cu_vec_ok(n, vn, y, a, b))
        CU_LAUNCH(c, (k_map_vec<T, F>), cu_grid_for(c, n / vn, kThreads), kThreads, 0, stream, y,
                  a, b, (int)(n / vn), f);
    else
        CU_LAUNCH(c, (k_map<T, F>), cu_grid_for(c, n, kThreads), kThreads, 0, stream, y, a, b,
                  (int)n, f);
    return 0;
}

template <typename T>
static int axpby_t(cu_backend *c, sdxs_tensor *y, float a, const sdxs_tensor *x, float b,
            const sdxs_tensor *y_in, int act)
{
    fn_axpby f{a, b, act, y_in != nullptr};
    return launch_map(c, cu_data<T>(y), cu_data<T>(x), y_in ? cu_data<T>(y_in) : nullptr,
                      sdxs_tensor_numel(y), f, c->stream);
}

template <typename T> static int clamp_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, float lo,
                                  float hi)
{
    return launch_map(c, cu_data<T>(y), cu_data<T>(x), (const T *)nullptr, sdxs_tensor_numel(y),
                      fn_clamp{lo, hi}, c->stream);
}

template <typename T>
static int tanh_clamp_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, float limit)
{
    return launch_map(c, cu_data<T>(y), cu_data<T>(x), (const T *)nullptr, sdxs_tensor_numel(y),
                      fn_tanh_clamp{limit}, c->stream);
}

template <typename T>
static int add_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const sdxs_tensor *r)
{
    return launch_map(c, cu_data<T>(y), cu_data<T>(x), cu_data<T>(r), sdxs_tensor_numel(y),
                      fn_add{}, c->stream);
}

/* x (rows, 2F) -> y (rows, F). */
template <typename T> static int geglu_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x)
{
    const int vn = vec16<T>::n;
    int64_t f = y->ne[y->ndim - 1], rows = sdxs_tensor_numel(y) / f;
    CU_REQUIRE(c, rows * f * 2 <= INT32_MAX);
    if (cu_vec_ok(f, vn, y->data, x->data))
        CU_LAUNCH(c, (k_geglu_vec<T>), cu_grid_for(c, rows * f / vn, kThreads), kThreads, 0,
                  c->stream, cu_data<T>(y), cu_data<T>(x), (int)rows, (int)f);
    else
        CU_LAUNCH(c, (k_geglu<T>), cu_grid_for(c, rows * f, kThreads), kThreads, 0, c->stream,
                  cu_data<T>(y), cu_data<T>(x), (int)rows, (int)f);
    return 0;
}

/* x (N, H, W, C) -> y (N, 2H, 2W, C). */
template <typename T> static int upsample_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x)
{
    const int vn = vec16<T>::n;
    int64_t n = x->ne[0], ch = x->ne[1], h = x->ne[2], w = x->ne[3];
    CU_REQUIRE(c, sdxs_tensor_numel(y) <= INT32_MAX);
    if (cu_vec_ok(ch, vn, y->data, x->data))
        CU_LAUNCH(c, (k_upsample2x<T, vec16<T>::n>), cu_grid_for(c, sdxs_tensor_numel(y) / vn,
                  kThreads), kThreads, 0, c->stream, cu_data<T>(y), cu_data<T>(x), (int)n,
                  (int)h, (int)w, (int)ch);
    else
        CU_LAUNCH(c, (k_upsample2x<T, 1>), cu_grid_for(c, sdxs_tensor_numel(y), kThreads),
                  kThreads, 0, c->stream, cu_data<T>(y), cu_data<T>(x), (int)n, (int)h, (int)w,
                  (int)ch);
    return 0;
}

/* a (P, Ca), b (P, Cb) -> y (P, Ca + Cb). */
template <typename T>
static int concat_t(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *a, const sdxs_tensor *b)
{
    const int vn = vec16<T>::n;
    int64_t pixels = a->ne[0] * a->ne[2] * a->ne[3], ca = a->ne[1], cb = b->ne[1];
    CU_REQUIRE(c, sdxs_tensor_numel(y) <= INT32_MAX);
    if (cu_vec_ok(ca, vn, y->data, a->data, b->data) && cb % vn == 0)
        CU_LAUNCH(c, (k_concat<T, vec16<T>::n>), cu_grid_for(c, sdxs_tensor_numel(y) / vn,
                  kThreads), kThreads, 0, c->stream, cu_data<T>(y), cu_data<T>(a), cu_data<T>(b),
                  (int)pixels, (int)ca, (int)cb);
    else
        CU_LAUNCH(c, (k_concat<T, 1>), cu_grid_for(c, sdxs_tensor_numel(y), kThreads), kThreads,
                  0, c->stream, cu_data<T>(y), cu_data<T>(a), cu_data<T>(b), (int)pixels,
                  (int)ca, (int)cb);
    return 0;
}

/* ids (N * L) int32 on the device; table (rows, D), pos (L', D) T; y (N, L, D). */
template <typename T>
static int embed_t(cu_backend *c, sdxs_tensor *y, const int32_t *ids, const sdxs_tensor *table,
            const sdxs_tensor *pos)
{
    int64_t rows = y->ne[0] * y->ne[1], l = y->ne[1], d = y->ne[2];
    CU_REQUIRE(c, rows * d <= INT32_MAX);
    CU_LAUNCH(c, (k_embed<T>), cu_grid_for(c, rows * d, kThreads), kThreads, 0, c->stream,
              cu_data<T>(y), ids, cu_data<T>(table), cu_data<T>(pos), (int)rows, (int)l, (int)d);
    return 0;
}

template <typename T>
int cu_bias_act(cu_backend *c, T *y, int64_t rows, int64_t cols, const float *bias,
                const T *chan_bias, int64_t rows_per_n, const T *residual, int act,
                cudaStream_t stream)
{
    const int vn = vec16<T>::n;
    CU_REQUIRE(c, cols <= INT32_MAX && rows_per_n > 0);
    if (cu_vec_ok(cols, vn, y, residual, chan_bias))
        CU_LAUNCH(c, (k_bias_act<T, vec16<T>::n>), cu_grid_for(c, rows * cols / vn, kThreads),
                  kThreads, 0, stream, y, rows, (int)cols, bias, chan_bias, rows_per_n, residual,
                  act);
    else
        CU_LAUNCH(c, (k_bias_act<T, 1>), cu_grid_for(c, rows * cols, kThreads), kThreads, 0,
                  stream, y, rows, (int)cols, bias, chan_bias, rows_per_n, residual, act);
    return 0;
}

template int cu_bias_act<float>(cu_backend *, float *, int64_t, int64_t, const float *,
                                const float *, int64_t, const float *, int, cudaStream_t);
template int cu_bias_act<__half>(cu_backend *, __half *, int64_t, int64_t, const float *,
                                 const __half *, int64_t, const __half *, int, cudaStream_t);
template int cu_bias_act<__nv_bfloat16>(cu_backend *, __nv_bfloat16 *, int64_t, int64_t,
                                        const float *, const __nv_bfloat16 *, int64_t,
                                        const __nv_bfloat16 *, int, cudaStream_t);

/* ---- table entries ---- */

int cu_axpby(sdxs_backend *be, sdxs_tensor *y, float a, const sdxs_tensor *x, float b,
             const sdxs_tensor *y_in, sdxs_act act)
{
    cu_backend *c = cu_of(be);
    c->op = "axpby";
    if (cu_require_act(c, x, "x") || (y_in && cu_require_act(c, y_in, "y_in")))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, axpby_t, c, y, a, x, b, y_in, (int)act);
}

int cu_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float lo, float hi)
{
    cu_backend *c = cu_of(be);
    c->op = "clamp";
    if (cu_require_act(c, x, "x"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, clamp_t, c, y, x, lo, hi);
}

int cu_tanh_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float limit)
{
    cu_backend *c = cu_of(be);
    c->op = "tanh_clamp";
    if (cu_require_act(c, x, "x"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, tanh_clamp_t, c, y, x, limit);
}

int cu_geglu(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    cu_backend *c = cu_of(be);
    c->op = "geglu";
    if (cu_require_act(c, x, "x"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, geglu_t, c, y, x);
}

int cu_upsample2x(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    cu_backend *c = cu_of(be);
    c->op = "upsample2x";
    if (cu_require_act(c, x, "x"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, upsample_t, c, y, x);
}

int cu_concat_channels(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *a,
                       const sdxs_tensor *b)
{
    cu_backend *c = cu_of(be);
    c->op = "concat_channels";
    if (cu_require_act(c, a, "a") || cu_require_act(c, b, "b"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, concat_t, c, y, a, b);
}

/* (N, H, W, C) is already (N, H*W, C): a copy. */
int cu_image_to_tokens(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    cu_backend *c = cu_of(be);
    c->op = "image_to_tokens";
    if (cu_require_act(c, x, "x"))
        return SDXS_ERR_RUNTIME;
    CU_CHECK(c, cudaMemcpyAsync(y->data, x->data, y->nbytes, cudaMemcpyDeviceToDevice, c->stream));
    return 0;
}

int cu_tokens_to_image(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                       const sdxs_tensor *residual)
{
    cu_backend *c = cu_of(be);
    c->op = "tokens_to_image";
    if (cu_require_act(c, x, "x") || (residual && cu_require_act(c, residual, "residual")))
        return SDXS_ERR_RUNTIME;
    if (residual)
        return CU_DISPATCH(c, add_t, c, y, x, residual);
    CU_CHECK(c, cudaMemcpyAsync(y->data, x->data, y->nbytes, cudaMemcpyDeviceToDevice, c->stream));
    return 0;
}

int cu_embed_staged(cu_backend *c, sdxs_tensor *y, const int32_t *ids_dev,
                    const sdxs_tensor *table, const sdxs_tensor *pos)
{
    if (cu_require_act(c, table, "the token table") || cu_require_act(c, pos, "the positions"))
        return SDXS_ERR_RUNTIME;
    return CU_DISPATCH(c, embed_t, c, y, ids_dev, table, pos);
}

/* Rows of the outermost dimension, whatever the element type. */
int cu_gather_staged(cu_backend *c, sdxs_tensor *y, const sdxs_tensor *x, const int32_t *index_dev)
{
    int64_t row = (int64_t)(x->nbytes / (size_t)x->ne[0]), count = y->ne[0];
    unsigned char *yd = static_cast<unsigned char *>(y->data);
    const unsigned char *xd = static_cast<const unsigned char *>(x->data);
    CU_REQUIRE(c, count <= INT32_MAX);
    if (cu_vec_ok(row, 16, yd, xd))
        CU_LAUNCH(c, (k_gather<true>), cu_grid_for(c, row / 16 * count, kThreads), kThreads, 0,
                  c->stream, yd, xd, index_dev, row, (int)count);
    else
        CU_LAUNCH(c, (k_gather<false>), cu_grid_for(c, row * count, kThreads), kThreads, 0,
                  c->stream, yd, xd, index_dev, row, (int)count);
    return 0;
}

} /* namespace SDXS_CU_NS */
