/* k_attention.cuh: fused multi-head attention, softmax(q k^T * scale) v, never writing the score
 * matrix to device memory.
 *
 * k_attention_wmma (fp16 / bf16, head size up to 160): a block takes 64 queries of one head, four
 * warps of 16 rows each, and walks the keys in tiles of 64 through shared memory. Scores come
 * from tensor cores (wmma, fp32 accumulation). Pass 1 finds each row's maximum and sum of
 * exponentials; pass 2 recomputes the scores, writes the normalised probabilities as T and
 * accumulates P V in wmma accumulators. The second pass over q k^T costs a third more
 * arithmetic than one online-softmax pass but needs no rescaling of accumulators, whose element
 * layout wmma keeps opaque. k_attention_simt (any type, any head size up to 256) is the plain
 * version: one warp per query row, online softmax, 32 keys at a time.
 *
 * Padded key rows are zero and masked; padded query rows are computed and not stored. Causal
 * masking hides key j from query i when j > i. Included by cuda_attention.cu in both builds.
 * Dimension letters: N batch, L tokens (Lq queries, Lk keys), H heads, Dh head size.
 */
#ifndef SDXS_CUDA_K_ATTENTION_CUH
#define SDXS_CUDA_K_ATTENTION_CUH

#include "kernels/cuda/common.cuh"

namespace SDXS_CU_NS {

enum {
    ATT_BQ = 64,       /* queries per block (16 per warp) */
    ATT_BK = 64,       /* keys per tile */
    ATT_THREADS = 128, /* four warps */
    ATT_LDS = ATT_BK + 4, /* floats per row of a warp's score tile */
    ATT_LDP = ATT_BK + 8, /* T per row of a warp's probability tile */
    ATT_SIMT_ROWS = 4,    /* query rows per block of the plain kernel, one per warp */
    ATT_SIMT_KEYS = 32,   /* keys per tile of the plain kernel */
    ATT_SIMT_MAX_DH = 256,
};

/* Dynamic shared memory of k_attention_wmma: Q, K and V tiles of (64, DHP + 8) T, per-warp score
 * tiles (16, ATT_LDS) float and probability tiles (16, ATT_LDP) T. */
template <typename T, int DHP> constexpr size_t att_wmma_smem()
{
    return (size_t)3 * ATT_BQ * (DHP + 8) * sizeof(T) + (size_t)4 * 16 * ATT_LDS * sizeof(float) +
           (size_t)4 * 16 * ATT_LDP * sizeof(T);
}

/* Copies rows [row0, row0 + 64) of src (rows, ld) T, columns [0, dh), into dst (64, DHP + 8);
 * missing rows and columns dh..DHP become zero. dh is a multiple of 8. */
template <typename T, int DHP>
__device__ __forceinline__ void att_load_tile(T *dst, const T *src, int ld, int row0, int rows,
                                              int dh)
{
    const int vpr = DHP / 8;
    for (int i = threadIdx.x; i < ATT_BK * vpr; i += blockDim.x) {
        int r = i / vpr, c = (i % vpr) * 8;
        vec16<T> v;
        if (row0 + r < rows && c < dh) {
            v = load16(src + (size_t)(row0 + r) * ld + c);
        } else {
            for (int e = 0; e < 8; e++)
                v.v[e] = from_f<T>(0.0f);
        }
        store16(dst + r * (DHP + 8) + c, v);
    }
}

/* sw (16, 64) = this warp's 16 rows of the Q tile times the K tile transposed. */
template <typename T, int DHP>
__device__ __forceinline__ void att_scores(float *sw, const T *qw, const T *ks)
{
    using namespace nvcuda;
    const int ld = DHP + 8;
    for (int kb = 0; kb < ATT_BK / 16; kb++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < DHP / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(a, qw + kk * 16, ld);
            wmma::load_matrix_sync(b, ks + kb * 16 * ld + kk * 16, ld);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(sw + kb * 16, acc, ATT_LDS, wmma::mem_row_major);
    }
}

/* q (N, Lq, ldq), k (N, Lk, ldk), v (N, Lk, ldv): each already offset to its first column, head h
 * at columns h * dh. y (N, Lq, ldy). grid (ceil(Lq / 64), H, N), block 128, dynamic shared
 * memory att_wmma_smem<T, DHP>(). */
template <typename T, int DHP>
__global__ void __launch_bounds__(ATT_THREADS)
    k_attention_wmma(T *__restrict__ y, int ldy, const T *__restrict__ q, int ldq,
                     const T *__restrict__ k, int ldk, const T *__restrict__ v, int ldv, int lq,
                     int lk, int dh, float scale, int causal)
{
    using namespace nvcuda;
    const int ld = DHP + 8;
    CU_DYNAMIC_SMEM(unsigned char, raw);
    T *qs = reinterpret_cast<T *>(raw), *ks = qs + ATT_BQ * ld, *vs = ks + ATT_BK * ld;
    float *ss = reinterpret_cast<float *>(vs + ATT_BK * ld);
    T *ps = reinterpret_cast<T *>(ss + 4 * 16 * ATT_LDS);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, b = blockIdx.z, h = blockIdx.y;
    int q0 = blockIdx.x * ATT_BQ, r = lane / 2, half = lane % 2, qrow = q0 + warp * 16 + r;
    const T *qb = q + (size_t)b * lq * ldq + h * dh; /* (Lq, ldq) */
    const T *kb = k + (size_t)b * lk * ldk + h * dh; /* (Lk, ldk) */
    const T *vb = v + (size_t)b * lk * ldv + h * dh; /* (Lk, ldv) */
    float *sw = ss + warp * 16 * ATT_LDS;            /* this warp's scores (16, 64) */
    T *pw = ps + warp * 16 * ATT_LDP;                /* this warp's probabilities (16, 64) */
    const T *qw = qs + warp * 16 * ld;
    int kend = causal ? (lk < q0 + ATT_BQ ? lk : q0 + ATT_BQ) : lk;
    float m = -INFINITY, l = 0.0f, inv_l;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[DHP / 16];

    /* Step 1: the Q tile. */
    att_load_tile<T, DHP>(qs, qb, ldq, q0, lq, dh);

    /* Step 2 (pass 1): each row's maximum m and sum of exponentials l. A lane pair owns a row,
     * each lane half of the 64 columns. */
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        float mx = -INFINITY, sum = 0.0f, mnew;
        __syncthreads(); /* the previous K tile is no longer read */
        att_load_tile<T, DHP>(ks, kb, ldk, k0, lk, dh);
        __syncthreads();
        att_scores<T, DHP>(sw, qw, ks);
        __syncwarp();
        for (int j = 0; j < 32; j++) {
            int col = half * 32 + j, key = k0 + col;
            if (key < lk && (!causal || key <= qrow))
                mx = fmaxf(mx, sw[r * ATT_LDS + col] * scale);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mnew = fmaxf(m, mx);
        for (int j = 0; j < 32; j++) {
            int col = half * 32 + j, key = k0 + col;
            if (key < lk && (!causal || key <= qrow))
                sum += expf(sw[r * ATT_LDS + col] * scale - mnew);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = (m == -INFINITY ? 0.0f : l * expf(m - mnew)) + sum;
        m = mnew;
        __syncwarp(); /* the scores are rewritten by the next tile */
    }
    inv_l = 1.0f / l;

    /* Step 3 (pass 2): o = P V with P = exp(s - m) / l. */
    for (int d = 0; d < DHP / 16; d++)
        wmma::fill_fragment(o[d], 0.0f);
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        att_load_tile<T, DHP>(ks, kb, ldk, k0, lk, dh);
        att_load_tile<T, DHP>(vs, vb, ldv, k0, lk, dh);
        __syncthreads();
        att_scores<T, DHP>(sw, qw, ks);
        __syncwarp();
        for (int j = 0; j < 32; j++) {
            int col = half * 32 + j, key = k0 + col;
            float p = 0.0f;
            if (key < lk && (!causal || key <= qrow))
                p = expf(sw[r * ATT_LDS + col] * scale - m) * inv_l;
            pw[r * ATT_LDP + col] = from_f<T>(p);
        }
        __syncwarp();
        for (int kk = 0; kk < ATT_BK / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::load_matrix_sync(a, pw + kk * 16, ATT_LDP);
            for (int d = 0; d < DHP / 16; d++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bv;
                wmma::load_matrix_sync(bv, vs + kk * 16 * ld + d * 16, ld);
                wmma::mma_sync(o[d], a, bv, o[d]);
            }
        }
    }

    /* Step 4: the output, 64 columns at a time through the warp's score tile. */
    for (int d0 = 0; d0 < DHP / 16; d0 += 4) {
        int nd = DHP / 16 - d0 < 4 ? DHP / 16 - d0 : 4;
        __syncwarp();
        for (int d = 0; d < nd; d++)
            wmma::store_matrix_sync(sw + d * 16, o[d0 + d], ATT_LDS, wmma::mem_row_major);
        __syncwarp();
        for (int i = lane; i < 16 * nd * 16; i += 32) {
            int rr = i / (nd * 16), cc = i % (nd * 16), row = q0 + warp * 16 + rr;
            int col = d0 * 16 + cc;
            if (row < lq && col < dh)
                y[((size_t)b * lq + row) * ldy + h * dh + col] = from_f<T>(sw[rr * ATT_LDS + cc]);
        }
    }
}

/* Dynamic shared memory of k_attention_simt: K tile (32, dh + 1), V tile (32, dh), the block's
 * query rows (4, dh) and probabilities (4, 32), all float. */
static inline size_t att_simt_smem(int dh)
{
    return sizeof(float) * ((size_t)ATT_SIMT_KEYS * (dh + 1) + (size_t)ATT_SIMT_KEYS * dh +
                            (size_t)ATT_SIMT_ROWS * dh + ATT_SIMT_ROWS * ATT_SIMT_KEYS);
}

/* Same arguments as k_attention_wmma; grid (ceil(Lq / 4), H, N), block 128, dynamic shared memory
 * att_simt_smem(dh). A lane scores one key of each tile and owns output columns lane + 32 j. */
template <typename T>
__global__ void __launch_bounds__(ATT_SIMT_ROWS * 32)
    k_attention_simt(T *__restrict__ y, int ldy, const T *__restrict__ q, int ldq,
                     const T *__restrict__ k, int ldk, const T *__restrict__ v, int ldv, int lq,
                     int lk, int dh, float scale, int causal)
{
    CU_DYNAMIC_SMEM(float, sm);
    const int kst = dh + 1;
    float *ks = sm, *vs = ks + ATT_SIMT_KEYS * kst, *qs = vs + ATT_SIMT_KEYS * dh;
    float *ps = qs + ATT_SIMT_ROWS * dh;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, b = blockIdx.z, h = blockIdx.y;
    int qi = blockIdx.x * ATT_SIMT_ROWS + warp, last = blockIdx.x * ATT_SIMT_ROWS + ATT_SIMT_ROWS;
    int kend = causal ? (lk < last ? lk : last) : lk;
    const T *kb = k + (size_t)b * lk * ldk + h * dh, *vb = v + (size_t)b * lk * ldv + h * dh;
    float o[ATT_SIMT_MAX_DH / 32], m = -INFINITY, l = 0.0f;

    for (int d = lane; d < dh; d += 32)
        qs[warp * dh + d] = qi < lq ? to_f(q[((size_t)b * lq + qi) * ldq + h * dh + d]) * scale
                                    : 0.0f;
    for (int j = 0; j < ATT_SIMT_MAX_DH / 32; j++)
        o[j] = 0.0f;

    for (int k0 = 0; k0 < kend; k0 += ATT_SIMT_KEYS) {
        float s = 0.0f, mnew, alpha, p;
        int key = k0 + lane;
        bool valid = key < lk && (!causal || key <= qi);

        /* Step 1: the tile's keys and values. */
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_SIMT_KEYS * dh; i += blockDim.x) {
            int rr = i / dh, d = i % dh;
            bool in = k0 + rr < lk;
            ks[rr * kst + d] = in ? to_f(kb[(size_t)(k0 + rr) * ldk + d]) : 0.0f;
            vs[rr * dh + d] = in ? to_f(vb[(size_t)(k0 + rr) * ldv + d]) : 0.0f;
        }
        __syncthreads();

        /* Step 2: this lane's score, then the online softmax update. */
        for (int d = 0; d < dh; d++)
            s += qs[warp * dh + d] * ks[lane * kst + d];
        mnew = fmaxf(m, warp_max(valid ? s : -INFINITY));
        p = valid ? expf(s - mnew) : 0.0f;
        alpha = m == -INFINITY ? 0.0f : expf(m - mnew);
        l = l * alpha + warp_sum(p);
        m = mnew;
        ps[warp * ATT_SIMT_KEYS + lane] = p;
        __syncwarp();

        /* Step 3: rescale and accumulate this lane's output columns. */
        for (int j = 0; j < ATT_SIMT_MAX_DH / 32; j++) {
            int d = lane + 32 * j;
            if (d < dh) {
                float acc = o[j] * alpha;
                for (int kk = 0; kk < ATT_SIMT_KEYS; kk++)
                    acc += ps[warp * ATT_SIMT_KEYS + kk] * vs[kk * dh + d];
                o[j] = acc;
            }
        }
        __syncwarp();
    }
    if (qi < lq)
        for (int j = 0; j < ATT_SIMT_MAX_DH / 32; j++) {
            int d = lane + 32 * j;
            if (d < dh)
                y[((size_t)b * lq + qi) * ldy + h * dh + d] = from_f<T>(o[j] / l);
        }
}

} /* namespace SDXS_CU_NS */

#endif /* SDXS_CUDA_K_ATTENTION_CUH */
