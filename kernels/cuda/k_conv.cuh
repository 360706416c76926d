/* k_conv.cuh: the backend's own convolutions, implicit GEMM over NHWC images, with the whole
 * epilogue (bias, per-(n, c) bias, residual, activation) fused.
 *
 * The product: rows m = output pixels (N * Ho * Wo), columns = Cout, inner index
 * k = (ky * K + kx) * Cin + ci, so that an NHWC pixel's channels and a (Cout, K, K, Cin) weight
 * row are both contiguous in k, and the NHWC output is the product's row-major result.
 * k_conv_wmma (fp16 / bf16): 64 x 64 tiles, 32-deep slices, four warps of 32 x 32 on tensor
 * cores; 16-byte loads when Cin is a multiple of 8, element loads otherwise (Cin 3 and 4).
 * k_conv_simt (fp32): the same tiling on the CUDA cores. Used when cuDNN is absent,
 * refuses a shape, or SDXS_CUDA_CONV=implicit. Included by cuda_conv.cu in both builds.
 */
#ifndef SDXS_CUDA_K_CONV_CUH
#define SDXS_CUDA_K_CONV_CUH

#include "kernels/cuda/common.cuh"

namespace SDXS_CU_NS {

enum {
    CONV_BM = 64, /* output pixels per block */
    CONV_BN = 64, /* output channels per block */
    CONV_BK = 32, /* inner slice of the wmma kernel */
    CONV_WMMA_THREADS = 128,
    CONV_SIMT_BK = 16,
    CONV_SIMT_THREADS = 256,
};

/* The convolution's sizes, passed by value to the kernels. */
struct conv_geom {
    int n, h, w, cin;  /* input (N, H, W, Cin) */
    int ho, wo, cout;  /* output (N, Ho, Wo, Cout) */
    int k, stride, pad;
    int kk;            /* K * K * Cin */
    int m;             /* N * Ho * Wo */
};

/* Input element of product row m, inner index k (zero outside the image or the product). */
template <typename T>
__device__ __forceinline__ float conv_a_value(const T *x, const conv_geom &g, int m, int k)
{
    if (m >= g.m || k >= g.kk)
        return 0.0f;
    int ox = m % g.wo, oy = (m / g.wo) % g.ho, b = m / (g.wo * g.ho);
    int tap = k / g.cin, ci = k % g.cin;
    int iy = oy * g.stride - g.pad + tap / g.k, ix = ox * g.stride - g.pad + tap % g.k;
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
        return 0.0f;
    return to_f(x[(((size_t)b * g.h + iy) * g.w + ix) * g.cin + ci]);
}

/* x (N, H, W, Cin), w (Cout, K, K, Cin), y (N, Ho, Wo, Cout); residual like y, chan_bias
 * (N, Cout). grid (ceil(M / 64), ceil(Cout / 64)), block 128. VEC: Cin % 8 == 0. */
template <typename T, bool VEC>
__global__ void __launch_bounds__(CONV_WMMA_THREADS)
    k_conv_wmma(T *__restrict__ y, const T *__restrict__ x, const T *__restrict__ w,
                const float *__restrict__ bias, const T *__restrict__ chan_bias,
                const T *__restrict__ res, conv_geom g, int act)
{
    using namespace nvcuda;
    const int lda = CONV_BK + 8, ldc = CONV_BN + 4;
    __shared__ __align__(32) T as[CONV_BM * lda]; /* (64 pixels, 32 k) */
    __shared__ __align__(32) T bs[CONV_BN * lda]; /* (64 channels, 32 k) */
    __shared__ __align__(32) float cs[CONV_BM * ldc];
    int t = threadIdx.x, warp = t / 32, wm = warp / 2, wn = warp % 2;
    int m0 = blockIdx.x * CONV_BM, n0 = blockIdx.y * CONV_BN;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];

    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            wmma::fill_fragment(acc[i][j], 0.0f);

    for (int k0 = 0; k0 < g.kk; k0 += CONV_BK) {
        /* Step 1: the slice of input pixels and of weights. */
        if (VEC) {
            for (int i = t; i < CONV_BM * CONV_BK / 8; i += CONV_WMMA_THREADS) {
                int r = i / (CONV_BK / 8), kv = (i % (CONV_BK / 8)) * 8, m = m0 + r, k = k0 + kv;
                vec16<T> v;
                bool in = false;
                if (m < g.m && k < g.kk) {
                    int ox = m % g.wo, oy = (m / g.wo) % g.ho, b = m / (g.wo * g.ho);
                    int tap = k / g.cin, ci = k % g.cin;
                    int iy = oy * g.stride - g.pad + tap / g.k;
                    int ix = ox * g.stride - g.pad + tap % g.k;
                    if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
                        v = load16(x + (((size_t)b * g.h + iy) * g.w + ix) * g.cin + ci);
                        in = true;
                    }
                }
                if (!in)
                    for (int e = 0; e < 8; e++)
                        v.v[e] = from_f<T>(0.0f);
                store16(as + r * lda + kv, v);
            }
            for (int i = t; i < CONV_BN * CONV_BK / 8; i += CONV_WMMA_THREADS) {
                int r = i / (CONV_BK / 8), kv = (i % (CONV_BK / 8)) * 8;
                vec16<T> v;
                if (n0 + r < g.cout && k0 + kv < g.kk) {
                    v = load16(w + (size_t)(n0 + r) * g.kk + k0 + kv);
                } else {
                    for (int e = 0; e < 8; e++)
                        v.v[e] = from_f<T>(0.0f);
                }
                store16(bs + r * lda + kv, v);
            }
        } else {
            for (int i = t; i < CONV_BM * CONV_BK; i += CONV_WMMA_THREADS) {
                int r = i / CONV_BK, kc = i % CONV_BK;
                as[r * lda + kc] = from_f<T>(conv_a_value(x, g, m0 + r, k0 + kc));
            }
            for (int i = t; i < CONV_BN * CONV_BK; i += CONV_WMMA_THREADS) {
                int r = i / CONV_BK, kc = i % CONV_BK;
                bool in = n0 + r < g.cout && k0 + kc < g.kk;
                bs[r * lda + kc] = in ? w[(size_t)(n0 + r) * g.kk + k0 + kc] : from_f<T>(0.0f);
            }
        }
        __syncthreads();

        /* Step 2: this warp's 32 x 32 on the tensor cores. */
        for (int kk = 0; kk < CONV_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
            for (int i = 0; i < 2; i++)
                wmma::load_matrix_sync(a[i], as + (wm * 32 + i * 16) * lda + kk, lda);
            for (int j = 0; j < 2; j++)
                wmma::load_matrix_sync(b[j], bs + (wn * 32 + j * 16) * lda + kk, lda);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    /* Step 3: the fused epilogue, through shared memory so that stores are coalesced. */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(cs + (wm * 32 + i * 16) * ldc + wn * 32 + j * 16, acc[i][j],
                                    ldc, wmma::mem_row_major);
    __syncthreads();
    for (int i = t; i < CONV_BM * CONV_BN; i += CONV_WMMA_THREADS) {
        int r = i / CONV_BN, cc = i % CONV_BN, m = m0 + r, co = n0 + cc;
        if (m < g.m && co < g.cout)
            y[(size_t)m * g.cout + co] = from_f<T>(epilogue_value(
                cs[r * ldc + cc], m, co, g.cout, bias, chan_bias, (int64_t)g.ho * g.wo, res, act));
    }
}

/* The same product in fp32 on the CUDA cores: 256 threads, each 4 x 4 outputs of the 64 x 64
 * tile. grid (ceil(M / 64), ceil(Cout / 64)). */
template <typename T>
__global__ void __launch_bounds__(CONV_SIMT_THREADS)
    k_conv_simt(T *__restrict__ y, const T *__restrict__ x, const T *__restrict__ w,
                const float *__restrict__ bias, const T *__restrict__ chan_bias,
                const T *__restrict__ res, conv_geom g, int act)
{
    __shared__ float as[CONV_SIMT_BK][CONV_BM + 4]; /* (k, pixel) */
    __shared__ float bs[CONV_SIMT_BK][CONV_BN + 4]; /* (k, channel) */
    int t = threadIdx.x, tx = t % 16, ty = t / 16;
    int m0 = blockIdx.x * CONV_BM, n0 = blockIdx.y * CONV_BN;
    float acc[4][4];

    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < g.kk; k0 += CONV_SIMT_BK) {
        for (int i = t; i < CONV_BM * CONV_SIMT_BK; i += CONV_SIMT_THREADS) {
            int r = i / CONV_SIMT_BK, kc = i % CONV_SIMT_BK;
            as[kc][r] = conv_a_value(x, g, m0 + r, k0 + kc);
        }
        for (int i = t; i < CONV_BN * CONV_SIMT_BK; i += CONV_SIMT_THREADS) {
            int r = i / CONV_SIMT_BK, kc = i % CONV_SIMT_BK;
            bool in = n0 + r < g.cout && k0 + kc < g.kk;
            bs[kc][r] = in ? to_f(w[(size_t)(n0 + r) * g.kk + k0 + kc]) : 0.0f;
        }
        __syncthreads();
        for (int kc = 0; kc < CONV_SIMT_BK; kc++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) {
                a[i] = as[kc][ty * 4 + i];
                b[i] = bs[kc][tx * 4 + i];
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int m = m0 + ty * 4 + i, co = n0 + tx * 4 + j;
            if (m < g.m && co < g.cout)
                y[(size_t)m * g.cout + co] = from_f<T>(epilogue_value(
                    acc[i][j], m, co, g.cout, bias, chan_bias, (int64_t)g.ho * g.wo, res, act));
        }
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_K_CONV_CUH */
