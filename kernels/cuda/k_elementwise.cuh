/* k_elementwise.cuh: memory-bound kernels: elementwise maps (axpby, clamp, tanh clamp, residual
 * add), GEGLU, nearest 2x upsampling and channel concatenation of NHWC images, the bias /
 * per-(n, c) bias / residual / activation epilogue of convolutions and matrix products, token
 * embeddings and batch gathers.
 *
 * Each kernel has a 16-byte vector path (VN = 16 / sizeof(T) elements per load) that its launcher
 * picks when sizes and pointers allow, and a scalar path otherwise. Included by
 * cuda_elementwise.cu in both builds. Dimension letters: N batch, H/W height/width, C channels,
 * L tokens, D features, F GEGLU width.
 */
#ifndef SDXS_CUDA_K_ELEMENTWISE_CUH
#define SDXS_CUDA_K_ELEMENTWISE_CUH

#include "kernels/cuda/common.cuh"

namespace SDXS_CU_NS {

/* ---- elementwise maps: y = f(a, b); b may be NULL (f then sees 0) ---- */

struct fn_axpby {
    float a, b;
    int act;
    bool has_y;
    __device__ float operator()(float x, float y) const
    {
        float v = a * x;
        if (has_y)
            v += b * y;
        return act_apply(v, act);
    }
};

struct fn_clamp {
    float lo, hi;
    __device__ float operator()(float x, float) const { return x < lo ? lo : (x > hi ? hi : x); }
};

struct fn_tanh_clamp {
    float limit;
    __device__ float operator()(float x, float) const { return tanhf(x / limit) * limit; }
};

struct fn_add {
    __device__ float operator()(float x, float y) const { return x + y; }
};

/* y (n) = f(a, b), element by element. */
template <typename T, typename F>
__global__ void k_map(T *__restrict__ y, const T *__restrict__ a, const T *__restrict__ b, int n,
                      F f)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = from_f<T>(f(to_f(a[i]), b ? to_f(b[i]) : 0.0f));
}

/* The same over nvec vectors of 16 bytes. */
template <typename T, typename F>
__global__ void k_map_vec(T *__restrict__ y, const T *__restrict__ a, const T *__restrict__ b,
                          int nvec, F f)
{
    const int vn = vec16<T>::n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += gridDim.x * blockDim.x) {
        vec16<T> va = load16(a + (size_t)i * vn), out;
        vec16<T> vb = b ? load16(b + (size_t)i * vn) : va;
        for (int j = 0; j < vn; j++)
            out.v[j] = from_f<T>(f(to_f(va.v[j]), b ? to_f(vb.v[j]) : 0.0f));
        store16(y + (size_t)i * vn, out);
    }
}

/* ---- GEGLU: x (rows, 2F) -> y (rows, F) = x[:, :F] * gelu(x[:, F:]) ---- */

template <typename T>
__global__ void k_geglu(T *__restrict__ y, const T *__restrict__ x, int rows, int f)
{
    int n = rows * f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int r = i / f, j = i % f;
        const T *row = x + (size_t)r * 2 * f;
        y[i] = from_f<T>(to_f(row[j]) * act_apply(to_f(row[f + j]), SDXS_ACT_GELU));
    }
}

template <typename T>
__global__ void k_geglu_vec(T *__restrict__ y, const T *__restrict__ x, int rows, int f)
{
    const int vn = vec16<T>::n;
    int fv = f / vn, n = rows * fv;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int r = i / fv, j = (i % fv) * vn;
        const T *row = x + (size_t)r * 2 * f;
        vec16<T> a = load16(row + j), g = load16(row + f + j), out;
        for (int e = 0; e < vn; e++)
            out.v[e] = from_f<T>(to_f(a.v[e]) * act_apply(to_f(g.v[e]), SDXS_ACT_GELU));
        store16(y + (size_t)r * f + j, out);
    }
}

/* ---- x (N, H, W, C) -> y (N, 2H, 2W, C), nearest; cv = C / vn channel vectors per pixel ---- */

template <typename T, int VN>
__global__ void k_upsample2x(T *__restrict__ y, const T *__restrict__ x, int n, int h, int w,
                             int c)
{
    int cv = c / VN, total = n * 4 * h * w * cv;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int ch = (i % cv) * VN, pix = i / cv;
        int ox = pix % (2 * w), oy = (pix / (2 * w)) % (2 * h), b = pix / (4 * h * w);
        const T *src = x + (((size_t)b * h + oy / 2) * w + ox / 2) * c + ch;
        T *dst = y + (size_t)pix * c + ch;
        if (VN == 1)
            dst[0] = src[0];
        else
            store16(dst, load16(src));
    }
}

/* ---- a (P, Ca), b (P, Cb) -> y (P, Ca + Cb): NHWC channel concatenation ---- */

template <typename T, int VN>
__global__ void k_concat(T *__restrict__ y, const T *__restrict__ a, const T *__restrict__ b,
                         int pixels, int ca, int cb)
{
    int cy = ca + cb, cv = cy / VN, total = pixels * cv;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int p = i / cv, ch = (i % cv) * VN;
        const T *src = ch < ca ? a + (size_t)p * ca + ch : b + (size_t)p * cb + (ch - ca);
        T *dst = y + (size_t)p * cy + ch;
        if (VN == 1)
            dst[0] = src[0];
        else
            store16(dst, load16(src));
    }
}

/* ---- epilogue over y (rows, cols), in place (see epilogue_value) ---- */

template <typename T, int VN>
__global__ void k_bias_act(T *__restrict__ y, int64_t rows, int cols, const float *__restrict__ bias,
                           const T *__restrict__ chan_bias, int64_t rows_per_n,
                           const T *__restrict__ res, int act)
{
    int cv = cols / VN;
    int64_t total = rows * cv;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = i / cv;
        int col = (int)(i % cv) * VN;
        T *p = y + row * cols + col;
        if (VN == 1) {
            p[0] = from_f<T>(epilogue_value(to_f(p[0]), row, col, cols, bias, chan_bias,
                                            rows_per_n, res, act));
        } else {
            vec16<T> v = load16(p);
            for (int e = 0; e < VN; e++)
                v.v[e] = from_f<T>(epilogue_value(to_f(v.v[e]), row, col + e, cols, bias,
                                                  chan_bias, rows_per_n, res, act));
            store16(p, v);
        }
    }
}

/* ---- y (N * L, D) = table[ids[row]] + pos[row % L] ---- */

template <typename T>
__global__ void k_embed(T *__restrict__ y, const int32_t *__restrict__ ids,
                        const T *__restrict__ table, const T *__restrict__ pos, int rows, int l,
                        int d)
{
    int total = rows * d;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += gridDim.x * blockDim.x) {
        int row = i / d, j = i % d;
        y[i] = from_f<T>(to_f(table[(size_t)ids[row] * d + j]) + to_f(pos[(size_t)(row % l) * d + j]));
    }
}

/* ---- y row i = x row index[i]; rows of row_bytes, moved in 16-byte words when VEC ---- */

template <bool VEC>
__global__ void k_gather(unsigned char *__restrict__ y, const unsigned char *__restrict__ x,
                         const int32_t *__restrict__ index, int64_t row_bytes, int count)
{
    int64_t unit = VEC ? 16 : 1, per_row = row_bytes / unit, total = per_row * count;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / per_row, o = (i % per_row) * unit;
        const unsigned char *src = x + (int64_t)index[r] * row_bytes + o;
        unsigned char *dst = y + r * row_bytes + o;
        if (VEC)
            store16(reinterpret_cast<float *>(dst), load16(reinterpret_cast<const float *>(src)));
        else
            dst[0] = src[0];
    }
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_K_ELEMENTWISE_CUH */
