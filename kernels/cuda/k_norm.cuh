/* k_norm.cuh: group norm (+SiLU) over NHWC images and layer norm over token rows.
 *
 * Group norm runs in two kernels so that a small batch still fills the device: k_gn_stats splits
 * each image's pixels into chunks and leaves per-(image, chunk, group) Welford partials
 * (count, mean, M2); k_gn_apply merges them per group (Chan's formula, stable when the mean is
 * large against the spread) and normalises its chunk. Layer norm keeps a row in one warp's
 * registers and takes mean and variance in two passes. Included by cuda_norm.cu in both builds.
 * Dimension letters: N batch, P = H*W pixels, C channels, G groups, D features.
 */
#ifndef SDXS_CUDA_K_NORM_CUH
#define SDXS_CUDA_K_NORM_CUH

#include "kernels/cuda/common.cuh"

namespace SDXS_CU_NS {

enum {
    GN_MAX_GROUPS = 128,
    LN_LANE_ELEMS = 48, /* layer norm rows up to 32 * 48 = 1536 features stay in registers */
};

/* Merges the statistics (nb, mb, qb) of a set into (n, m, q): count, mean, sum of squared
 * deviations. */
__device__ __forceinline__ void welford_merge(float &n, float &m, float &q, float nb, float mb,
                                              float qb)
{
    if (nb == 0.0f)
        return;
    float nn = n + nb, d = mb - m;
    m += d * (nb / nn);
    q += qb + d * d * (n * nb / nn);
    n = nn;
}

/* Loads V channels of T at p as floats (one 16-byte vector, or one element when V is 1). */
template <typename T, int V> __device__ __forceinline__ void load_channels(const T *p, float *v)
{
    if (V == 1) {
        v[0] = to_f(p[0]);
    } else {
        vec16<T> w = load16(p);
        for (int j = 0; j < V; j++)
            v[j] = to_f(w.v[j]);
    }
}

/* x (N, P, C) -> part (N, chunks, G, 3). grid (chunks, N); block: C / V columns times some rows
 * of pixels; dynamic shared memory (2 * rows * C + rows) floats. */
template <typename T, int V>
__global__ void k_gn_stats(const T *__restrict__ x, float *__restrict__ part, int p, int c,
                           int groups, int chunk, int chunks)
{
    CU_DYNAMIC_SMEM(float, sm);
    int cols = c / V, rows = blockDim.x / cols, t = threadIdx.x;
    int col = t % cols, row = t / cols, b = blockIdx.y;
    int p0 = blockIdx.x * chunk, p1 = p0 + chunk < p ? p0 + chunk : p;
    float *s_mean = sm, *s_m2 = sm + rows * c, *s_cnt = sm + 2 * rows * c;
    float cnt = 0.0f, mean[V], m2[V], v[V];

    /* Step 1: each thread runs Welford over its V channels down its rows of pixels. */
    for (int j = 0; j < V; j++)
        mean[j] = m2[j] = 0.0f;
    if (row < rows) {
        for (int pi = p0 + row; pi < p1; pi += rows) {
            float inv;
            load_channels<T, V>(x + ((size_t)b * p + pi) * c + col * V, v);
            cnt += 1.0f;
            inv = 1.0f / cnt;
            for (int j = 0; j < V; j++) {
                float d = v[j] - mean[j];
                mean[j] += d * inv;
                m2[j] += d * (v[j] - mean[j]);
            }
        }
        for (int j = 0; j < V; j++) {
            s_mean[row * c + col * V + j] = mean[j];
            s_m2[row * c + col * V + j] = m2[j];
        }
        if (col == 0)
            s_cnt[row] = cnt;
    }
    __syncthreads();

    /* Step 2: one thread per group merges its channels over the rows. */
    for (int g = t; g < groups; g += blockDim.x) {
        int cpg = c / groups;
        float n = 0.0f, m = 0.0f, q = 0.0f;
        for (int r = 0; r < rows; r++)
            for (int ch = g * cpg; ch < (g + 1) * cpg; ch++)
                welford_merge(n, m, q, s_cnt[r], s_mean[r * c + ch], s_m2[r * c + ch]);
        float *out = part + (((size_t)b * chunks + blockIdx.x) * groups + g) * 3;
        out[0] = n;
        out[1] = m;
        out[2] = q;
    }
}

/* y (N, P, C) = act((x - mean[g]) / sqrt(var[g] + eps) * gamma + beta), with the statistics
 * merged from part (N, chunks, G, 3). grid (ceil(P / ppb), N); block 256. */
template <typename T, int V>
__global__ void k_gn_apply(T *__restrict__ y, const T *__restrict__ x,
                           const float *__restrict__ part, const float *__restrict__ gamma,
                           const float *__restrict__ beta, int p, int c, int groups, int chunks,
                           int ppb, float eps, int act)
{
    __shared__ float s_mean[GN_MAX_GROUPS], s_rstd[GN_MAX_GROUPS];
    int t = threadIdx.x, b = blockIdx.y, cpg = c / groups, cv = c / V;
    int p0 = blockIdx.x * ppb, p1 = p0 + ppb < p ? p0 + ppb : p;

    /* Step 1: each group's statistics, merged over the chunks. */
    for (int g = t; g < groups; g += blockDim.x) {
        float n = 0.0f, m = 0.0f, q = 0.0f;
        for (int k = 0; k < chunks; k++) {
            const float *s = part + (((size_t)b * chunks + k) * groups + g) * 3;
            welford_merge(n, m, q, s[0], s[1], s[2]);
        }
        s_mean[g] = m;
        s_rstd[g] = 1.0f / sqrtf(q / n + eps);
    }
    __syncthreads();

    /* Step 2: normalise this block's pixels. */
    for (int i = t; i < (p1 - p0) * cv; i += blockDim.x) {
        int pi = p0 + i / cv, ch = (i % cv) * V;
        size_t at = ((size_t)b * p + pi) * c + ch;
        float v[V];
        load_channels<T, V>(x + at, v);
        for (int j = 0; j < V; j++) {
            int g = (ch + j) / cpg;
            v[j] = act_apply((v[j] - s_mean[g]) * s_rstd[g] * gamma[ch + j] + beta[ch + j], act);
        }
        if (V == 1) {
            y[at] = from_f<T>(v[0]);
        } else {
            vec16<T> w;
            for (int j = 0; j < V; j++)
                w.v[j] = from_f<T>(v[j]);
            store16(y + at, w);
        }
    }
}

/* Layer norm of x (rows, D) into y, one warp per row. E elements per lane stay in registers, so
 * D <= 32 * E; block 128 (four rows). */
template <typename T, int E>
__global__ void k_layer_norm(T *__restrict__ y, const T *__restrict__ x,
                             const float *__restrict__ gamma, const float *__restrict__ beta,
                             int rows, int d, float eps)
{
    int lane = threadIdx.x % 32, row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    float v[E], s = 0.0f, q = 0.0f, mean, rstd;
    if (row >= rows)
        return; /* the whole warp leaves together */
    const T *xr = x + (size_t)row * d;
    T *yr = y + (size_t)row * d;

    CU_UNROLL
    for (int e = 0; e < E; e++) {
        int i = e * 32 + lane;
        v[e] = i < d ? to_f(xr[i]) : 0.0f;
        s += v[e];
    }
    mean = warp_sum(s) / (float)d;
    CU_UNROLL
    for (int e = 0; e < E; e++) {
        float dv = e * 32 + lane < d ? v[e] - mean : 0.0f;
        q += dv * dv;
    }
    rstd = 1.0f / sqrtf(warp_sum(q) / (float)d + eps);
    CU_UNROLL
    for (int e = 0; e < E; e++) {
        int i = e * 32 + lane;
        if (i < d)
            yr[i] = from_f<T>((v[e] - mean) * rstd * gamma[i] + beta[i]);
    }
}

/* The same for rows too long for registers: three passes over global memory. */
template <typename T>
__global__ void k_layer_norm_long(T *__restrict__ y, const T *__restrict__ x,
                                  const float *__restrict__ gamma,
                                  const float *__restrict__ beta, int rows, int d, float eps)
{
    int lane = threadIdx.x % 32, row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    float s = 0.0f, q = 0.0f, mean, rstd;
    if (row >= rows)
        return;
    const T *xr = x + (size_t)row * d;
    T *yr = y + (size_t)row * d;
    for (int i = lane; i < d; i += 32)
        s += to_f(xr[i]);
    mean = warp_sum(s) / (float)d;
    for (int i = lane; i < d; i += 32) {
        float dv = to_f(xr[i]) - mean;
        q += dv * dv;
    }
    rstd = 1.0f / sqrtf(warp_sum(q) / (float)d + eps);
    for (int i = lane; i < d; i += 32)
        yr[i] = from_f<T>((to_f(xr[i]) - mean) * rstd * gamma[i] + beta[i]);
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_K_NORM_CUH */
