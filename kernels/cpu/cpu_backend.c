/* cpu_backend.c: the CPU backend, the reference every other backend is compared with.
 *
 * Layout: activations are logical-layout float32 (images NCHW, tokens NLD, row-major); weights
 * are float32 in their logical layout. Matrix products go through oneDNN's sgemm (measured faster
 * here than Debian's OpenBLAS, which falls back to a generic kernel on this CPU); convolutions are
 * im2col over bands of output rows plus one product per band; everything else is plain loops
 * spread over OpenMP threads, the same runtime oneDNN uses, so the two never oversubscribe.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "kernels/backend.h"

#define CPU_SCRATCH_BYTES ((size_t)32 << 20) /* im2col bands and attention scores, per thread */
#define CPU_ATTN_BLOCK 64                    /* query rows per attention block */

typedef struct cpu_backend {
    int threads;
    void *weights; /* the one weight block */
    size_t weight_bytes;
    void *arena;
    size_t arena_bytes;
    float **scratch; /* one CPU_SCRATCH_BYTES buffer per thread */
    double marks[SDXS_MAX_MARKS];
} cpu_backend;

static cpu_backend *cpu(sdxs_backend *be) { return be->impl; }

static float *fp(const sdxs_tensor *t) { return (float *)t->data; }

/* ---- element conversion ---- */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    float f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf or nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal half: the value is man * 2^-24, exact in float. */
        f = (float)man * 5.9604644775390625e-8f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void to_f32(float *dst, sdxs_dtype src_dtype, const void *src, size_t n)
{
    const uint16_t *h = src;
    switch (src_dtype) {
    case SDXS_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return;
    case SDXS_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(h[i]);
        return;
    case SDXS_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(h[i]);
        return;
    case SDXS_DTYPE_U8:
        break;
    }
    sdxs_panic("cpu: cannot convert weights of type %s", sdxs_dtype_name(src_dtype));
}

/* ---- activation functions, in float32 as PyTorch evaluates them ---- */

static inline float act_apply(float x, sdxs_act act)
{
    switch (act) {
    case SDXS_ACT_NONE: return x;
    case SDXS_ACT_SILU: return x / (1.0f + expf(-x));
    case SDXS_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case SDXS_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case SDXS_ACT_QUICK_GELU: return x * (1.0f / (1.0f + expf(-1.702f * x)));
    }
    return x;
}

/* ---- storage ---- */

static sdxs_dtype cpu_act_dtype(const sdxs_backend *be) { return SDXS_DTYPE_F32; }

static void cpu_weight_size(sdxs_backend *be, sdxs_tensor *t)
{
    size_t n = 4;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->ne[i];
    t->dtype = SDXS_DTYPE_F32;
    t->nbytes = n;
}

static sdxs_status cpu_weights_reserve(sdxs_backend *be, size_t bytes, sdxs_error *err)
{
    cpu_backend *c = cpu(be);
    free(c->weights);
    c->weights = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!c->weights)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL,
                         "out of memory: %.1f MiB of weights", (double)bytes / 1048576.0);
    c->weight_bytes = bytes;
    return SDXS_OK;
}

static sdxs_status cpu_weight_create(sdxs_backend *be, sdxs_tensor *t, size_t offset,
                                     sdxs_dtype src_dtype, const void *src, sdxs_error *err)
{
    cpu_backend *c = cpu(be);
    SDXS_ASSERT(offset + t->nbytes <= c->weight_bytes);
    t->data = (char *)c->weights + offset;
    to_f32(t->data, src_dtype, src, t->nbytes / 4);
    return SDXS_OK;
}

static sdxs_status cpu_arena_reserve(sdxs_backend *be, size_t bytes, void **base,
                                     sdxs_error *err)
{
    cpu_backend *c = cpu(be);
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p)
        return sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory: %.1f MiB of activations",
                         (double)bytes / 1048576.0);
    free(c->arena);
    c->arena = p;
    c->arena_bytes = bytes;
    *base = p;
    return SDXS_OK;
}

/* ---- runs: the CPU computes as it goes, so a run needs no recording ---- */

static int cpu_run_begin(sdxs_backend *be, uint64_t key, bool *replay)
{
    cpu_backend *c = cpu(be);
    for (int i = 0; i < SDXS_MAX_MARKS; i++)
        c->marks[i] = -1.0;
    *replay = false;
    return 0;
}

static int cpu_run_end(sdxs_backend *be) { return 0; }

static int cpu_mark(sdxs_backend *be, int mark)
{
    cpu(be)->marks[mark] = sdxs_now_ms();
    return 0;
}

static double cpu_elapsed_ms(const sdxs_backend *be, int from, int to)
{
    const cpu_backend *c = be->impl;
    if (from < 0 || to < 0 || from >= SDXS_MAX_MARKS || to >= SDXS_MAX_MARKS ||
        c->marks[from] < 0 || c->marks[to] < 0)
        return -1.0;
    return c->marks[to] - c->marks[from];
}

/* ---- data movement ---- */

static int cpu_upload(sdxs_backend *be, sdxs_tensor *dst, const float *src)
{
    memcpy(dst->data, src, dst->nbytes);
    return 0;
}

static int cpu_download(sdxs_backend *be, const sdxs_tensor *src, float *dst)
{
    memcpy(dst, src->data, src->nbytes);
    return 0;
}

static int cpu_from_rgb8(sdxs_backend *be, sdxs_tensor *y, const uint8_t *src, float scale,
                         float shift)
{
    int64_t n = y->ne[0], h = y->ne[2], w = y->ne[3];
    float *out = fp(y); /* (N, 3, H, W) */
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t i = 0; i < h * w; i++)
                out[(b * 3 + c) * h * w + i] =
                    (float)src[(b * h * w + i) * 3 + c] / 255.0f * scale + shift;
    return 0;
}

static int cpu_to_rgb8(sdxs_backend *be, const sdxs_tensor *x, float scale, float shift,
                       uint8_t *dst)
{
    int64_t n = x->ne[0], h = x->ne[2], w = x->ne[3];
    const float *in = fp(x); /* (N, 3, H, W) */
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t i = 0; i < h * w; i++) {
                float v = in[(b * 3 + c) * h * w + i] * scale + shift;
                v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
                /* The default rounding mode rounds half to even, as numpy's round does. */
                dst[(b * h * w + i) * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
            }
    return 0;
}

/* ---- matrix products ---- */

/* Row-major C(M, N) = A(M, K) * op(B) with op(B) = B (K, N) or B^T for B (N, K). */
static int gemm(bool trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    dnnl_status_t st = dnnl_sgemm('N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, beta,
                                  c, ldc);
    return st == dnnl_success ? 0 : SDXS_ERR_RUNTIME;
}

/* ---- convolution ---- */

/* Bias, per-(n, c) bias, residual and activation over one image's (Cout, P) output. */
static void conv_epilogue(float *y, int64_t cout, int64_t p, const float *bias,
                          const float *chan_bias, const float *res, sdxs_act act)
{
#pragma omp parallel for
    for (int64_t co = 0; co < cout; co++) {
        float *row = y + co * p;
        const float *rrow = res ? res + co * p : NULL;
        float b = bias ? bias[co] : 0.0f;
        float cb = chan_bias ? chan_bias[co] : 0.0f;
        for (int64_t i = 0; i < p; i++) {
            float v = row[i];
            if (bias)
                v += b;
            if (chan_bias)
                v += cb;
            if (rrow)
                v += rrow[i];
            row[i] = act_apply(v, act);
        }
    }
}

/* Columns for output rows [oy0, oy1) of one image: col (Cin*K*K, (oy1 - oy0) * Wo). */
static void im2col(float *col, const float *x, int64_t cin, int64_t h, int64_t w, int k,
                   int stride, int pad, int64_t oy0, int64_t oy1, int64_t wo)
{
    int64_t rows = cin * k * k, cols = (oy1 - oy0) * wo;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        int64_t ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        float *dst = col + r * cols;
        const float *src = x + ci * h * w;
        for (int64_t oy = oy0; oy < oy1; oy++) {
            int64_t iy = oy * stride - pad + ky;
            float *d = dst + (oy - oy0) * wo;
            if (iy < 0 || iy >= h) {
                memset(d, 0, (size_t)wo * sizeof(float));
                continue;
            }
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t ix = ox * stride - pad + kx;
                d[ox] = (ix >= 0 && ix < w) ? src[iy * w + ix] : 0.0f;
            }
        }
    }
}

static int cpu_conv2d(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const sdxs_conv2d *conv, const sdxs_tensor *chan_bias,
                      const sdxs_tensor *residual, sdxs_act act)
{
    cpu_backend *c = cpu(be);
    int64_t n = x->ne[0], cin = x->ne[1], h = x->ne[2], w = x->ne[3];
    int64_t cout = y->ne[1], ho = y->ne[2], wo = y->ne[3];
    int k = conv->kernel;
    int64_t kk = cin * k * k; /* the product's inner dimension */
    const float *wt = fp(conv->weight); /* (Cout, Cin*K*K) */
    bool direct = k == 1 && conv->stride == 1 && conv->pad == 0;
    int64_t band = (int64_t)(CPU_SCRATCH_BYTES / sizeof(float)) / (kk * wo);
    int rc = 0;

    if (band < 1)
        band = 1;
    for (int64_t b = 0; b < n && !rc; b++) {
        const float *xb = fp(x) + b * cin * h * w; /* (Cin, H, W) */
        float *yb = fp(y) + b * cout * ho * wo;    /* (Cout, Ho, Wo) */

        /* A 1x1 stride-1 convolution is one product over the input as it is. */
        if (direct) {
            rc = gemm(false, cout, ho * wo, kk, wt, kk, xb, ho * wo, 0.0f, yb, ho * wo);
        } else {
            for (int64_t oy0 = 0; oy0 < ho && !rc; oy0 += band) {
                int64_t oy1 = oy0 + band < ho ? oy0 + band : ho;
                float *col = c->scratch[0];
                im2col(col, xb, cin, h, w, k, conv->stride, conv->pad, oy0, oy1, wo);
                rc = gemm(false, cout, (oy1 - oy0) * wo, kk, wt, kk, col, (oy1 - oy0) * wo, 0.0f,
                          yb + oy0 * wo, ho * wo);
            }
        }
        conv_epilogue(yb, cout, ho * wo, conv->bias ? fp(conv->bias) : NULL,
                      chan_bias ? fp(chan_bias) + b * cout : NULL,
                      residual ? fp(residual) + b * cout * ho * wo : NULL, act);
    }
    return rc;
}

/* ---- linear ---- */

static int cpu_linear(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const sdxs_linear *lin, const sdxs_tensor *residual, sdxs_act act)
{
    /* One product per batch entry, so an image's result does not depend on its batch. */
    int64_t n = x->ne[0], rows = sdxs_tensor_numel(x) / lin->din / n, dout = lin->dout;
    float *out = fp(y);
    const float *bias = lin->bias ? fp(lin->bias) : NULL;
    const float *res = residual ? fp(residual) : NULL;
    for (int64_t b = 0; b < n; b++) {
        int rc = gemm(true, rows, dout, lin->din, fp(x) + b * rows * lin->din, lin->din,
                      fp(lin->weight), lin->din, 0.0f, out + b * rows * dout, dout);
        if (rc)
            return rc;
    }
    rows *= n;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        float *row = out + r * dout;
        const float *rrow = res ? res + r * dout : NULL;
        for (int64_t j = 0; j < dout; j++) {
            float v = row[j];
            if (bias)
                v += bias[j];
            if (rrow)
                v += rrow[j];
            row[j] = act_apply(v, act);
        }
    }
    return 0;
}

/* ---- normalisation: statistics in double, so the reference error is far below PyTorch's ---- */

static int cpu_group_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                          const sdxs_norm *norm, sdxs_act act)
{
    int64_t n = x->ne[0], ch = x->ne[1], hw = x->ne[2] * x->ne[3];
    int64_t groups = norm->groups, cpg = ch / groups;
    const float *gamma = fp(norm->gamma), *beta = fp(norm->beta);

#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t g = 0; g < groups; g++) {
            const float *in = fp(x) + (b * ch + g * cpg) * hw; /* (cpg, HW) */
            float *out = fp(y) + (b * ch + g * cpg) * hw;
            int64_t count = cpg * hw;
            double sum = 0.0, sq = 0.0, mean, var;
            float scale;
            for (int64_t i = 0; i < count; i++)
                sum += in[i];
            mean = sum / (double)count;
            for (int64_t i = 0; i < count; i++) {
                double d = in[i] - mean;
                sq += d * d;
            }
            var = sq / (double)count;
            scale = (float)(1.0 / sqrt(var + (double)norm->eps));
            for (int64_t c = 0; c < cpg; c++) {
                float gm = gamma[g * cpg + c], bt = beta[g * cpg + c];
                for (int64_t i = 0; i < hw; i++) {
                    float v = ((float)(in[c * hw + i] - mean)) * scale * gm + bt;
                    out[c * hw + i] = act_apply(v, act);
                }
            }
        }
    return 0;
}

static int cpu_layer_norm(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                          const sdxs_norm *norm)
{
    int64_t d = norm->channels, rows = sdxs_tensor_numel(x) / d;
    const float *gamma = fp(norm->gamma), *beta = fp(norm->beta);
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *in = fp(x) + r * d;
        float *out = fp(y) + r * d;
        double sum = 0.0, sq = 0.0, mean;
        float scale;
        for (int64_t i = 0; i < d; i++)
            sum += in[i];
        mean = sum / (double)d;
        for (int64_t i = 0; i < d; i++)
            sq += (in[i] - mean) * (in[i] - mean);
        scale = (float)(1.0 / sqrt(sq / (double)d + (double)norm->eps));
        for (int64_t i = 0; i < d; i++)
            out[i] = ((float)(in[i] - mean)) * scale * gamma[i] + beta[i];
    }
    return 0;
}

/* ---- attention ---- */

/* One block of query rows of one head: scores, softmax, then the weighted sum of values. */
static int attention_block(float *scores, const float *q, int64_t ldq, const float *k,
                           int64_t ldk, const float *v, int64_t ldv, float *out, int64_t ldo,
                           int64_t rows, int64_t row0, int64_t lk, int64_t dh, float scale,
                           bool causal)
{
    dnnl_status_t st = dnnl_sgemm('N', 'T', rows, lk, dh, scale, q, ldq, k, ldk, 0.0f, scores,
                                  lk);
    if (st != dnnl_success)
        return SDXS_ERR_RUNTIME;
    for (int64_t i = 0; i < rows; i++) {
        float *s = scores + i * lk;
        int64_t valid = causal ? row0 + i + 1 : lk;
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t j = 0; j < valid; j++)
            mx = s[j] > mx ? s[j] : mx;
        for (int64_t j = 0; j < valid; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        for (int64_t j = 0; j < valid; j++)
            s[j] /= sum;
        for (int64_t j = valid; j < lk; j++)
            s[j] = 0.0f;
    }
    st = dnnl_sgemm('N', 'N', rows, dh, lk, 1.0f, scores, lk, v, ldv, 0.0f, out, ldo);
    return st == dnnl_success ? 0 : SDXS_ERR_RUNTIME;
}

static int cpu_attention(sdxs_backend *be, sdxs_tensor *y, sdxs_cols q, sdxs_cols k,
                         sdxs_cols v, int heads, bool causal)
{
    cpu_backend *c = cpu(be);
    int64_t n = q.t->ne[0], lq = q.t->ne[1], lk = k.t->ne[1], dh = q.count / heads;
    int64_t ldq = q.t->ne[2], ldk = k.t->ne[2], ldv = v.t->ne[2], ldo = y->ne[2];
    int64_t blocks = (lq + CPU_ATTN_BLOCK - 1) / CPU_ATTN_BLOCK;
    int64_t jobs = n * heads * blocks;
    float scale = 1.0f / sqrtf((float)dh);
    int rc = 0;

    if ((size_t)CPU_ATTN_BLOCK * (size_t)lk * sizeof(float) > CPU_SCRATCH_BYTES)
        return SDXS_ERR_RUNTIME; /* keys beyond what the scratch holds: not reachable by SDXS */

#pragma omp parallel for schedule(dynamic) reduction(| : rc)
    for (int64_t job = 0; job < jobs; job++) {
        int64_t b = job / (heads * blocks), hd = (job / blocks) % heads, blk = job % blocks;
        int64_t row0 = blk * CPU_ATTN_BLOCK;
        int64_t rows = lq - row0 < CPU_ATTN_BLOCK ? lq - row0 : CPU_ATTN_BLOCK;
        const float *qp = fp(q.t) + (b * lq + row0) * ldq + q.first + hd * dh;
        const float *kp = fp(k.t) + b * lk * ldk + k.first + hd * dh;
        const float *vp = fp(v.t) + b * lk * ldv + v.first + hd * dh;
        float *op = fp(y) + (b * lq + row0) * ldo + hd * dh;
        rc |= attention_block(c->scratch[omp_get_thread_num()], qp, ldq, kp, ldk, vp, ldv, op,
                              ldo, rows, row0, lk, dh, scale, causal);
    }
    return rc ? SDXS_ERR_RUNTIME : 0;
}

/* ---- elementwise and data layout ---- */

static int cpu_geglu(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    int64_t f = y->ne[y->ndim - 1], rows = sdxs_tensor_numel(y) / f;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *in = fp(x) + r * 2 * f;
        float *out = fp(y) + r * f;
        for (int64_t i = 0; i < f; i++)
            out[i] = in[i] * act_apply(in[f + i], SDXS_ACT_GELU);
    }
    return 0;
}

static int cpu_axpby(sdxs_backend *be, sdxs_tensor *y, float a, const sdxs_tensor *x, float b,
                     const sdxs_tensor *y_in, sdxs_act act)
{
    int64_t count = sdxs_tensor_numel(y);
    const float *xi = fp(x), *yi = y_in ? fp(y_in) : NULL;
    float *out = fp(y);
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++) {
        float v = a * xi[i];
        if (yi)
            v += b * yi[i];
        out[i] = act_apply(v, act);
    }
    return 0;
}

static int cpu_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float lo, float hi)
{
    int64_t count = sdxs_tensor_numel(y);
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++) {
        float v = fp(x)[i];
        fp(y)[i] = v < lo ? lo : (v > hi ? hi : v);
    }
    return 0;
}

static int cpu_tanh_clamp(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x, float limit)
{
    int64_t count = sdxs_tensor_numel(y);
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++)
        fp(y)[i] = tanhf(fp(x)[i] / limit) * limit;
    return 0;
}

static int cpu_upsample2x(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    int64_t planes = x->ne[0] * x->ne[1], h = x->ne[2], w = x->ne[3];
#pragma omp parallel for
    for (int64_t p = 0; p < planes; p++) {
        const float *in = fp(x) + p * h * w;
        float *out = fp(y) + p * 4 * h * w;
        for (int64_t i = 0; i < 2 * h; i++)
            for (int64_t j = 0; j < 2 * w; j++)
                out[i * 2 * w + j] = in[(i / 2) * w + j / 2];
    }
    return 0;
}

static int cpu_concat_channels(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *a,
                               const sdxs_tensor *b)
{
    int64_t n = a->ne[0], hw = a->ne[2] * a->ne[3], ca = a->ne[1], cb = b->ne[1];
    for (int64_t i = 0; i < n; i++) {
        memcpy(fp(y) + i * (ca + cb) * hw, fp(a) + i * ca * hw, (size_t)(ca * hw) * 4);
        memcpy(fp(y) + (i * (ca + cb) + ca) * hw, fp(b) + i * cb * hw, (size_t)(cb * hw) * 4);
    }
    return 0;
}

static int cpu_image_to_tokens(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    int64_t n = x->ne[0], ch = x->ne[1], hw = x->ne[2] * x->ne[3];
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t c = 0; c < ch; c++)
                fp(y)[(b * hw + p) * ch + c] = fp(x)[(b * ch + c) * hw + p];
    return 0;
}

static int cpu_tokens_to_image(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                               const sdxs_tensor *residual)
{
    int64_t n = y->ne[0], ch = y->ne[1], hw = y->ne[2] * y->ne[3];
    const float *res = residual ? fp(residual) : NULL;
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t p = 0; p < hw; p++) {
                int64_t o = (b * ch + c) * hw + p;
                float v = fp(x)[(b * hw + p) * ch + c];
                fp(y)[o] = res ? v + res[o] : v;
            }
    return 0;
}

static int cpu_embed(sdxs_backend *be, sdxs_tensor *y, const int32_t *ids,
                     const sdxs_tensor *table, const sdxs_tensor *pos)
{
    int64_t n = y->ne[0], l = y->ne[1], d = y->ne[2];
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < l; i++) {
            const float *t = fp(table) + (int64_t)ids[b * l + i] * d;
            const float *p = fp(pos) + i * d;
            float *out = fp(y) + (b * l + i) * d;
            for (int64_t j = 0; j < d; j++)
                out[j] = t[j] + p[j];
        }
    return 0;
}

static int cpu_gather(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const int32_t *index)
{
    size_t row = x->nbytes / (size_t)x->ne[0];
    for (int64_t i = 0; i < y->ne[0]; i++)
        memcpy((char *)y->data + (size_t)i * row, (const char *)x->data + (size_t)index[i] * row,
               row);
    return 0;
}

/* ---- the table ---- */

static void cpu_destroy(sdxs_backend *be)
{
    cpu_backend *c = cpu(be);
    for (int i = 0; i < c->threads; i++)
        free(c->scratch[i]);
    free(c->scratch);
    free(c->weights);
    free(c->arena);
    free(c);
    free(be);
}

static const sdxs_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .act_dtype = cpu_act_dtype,
    .weight_size = cpu_weight_size,
    .weights_reserve = cpu_weights_reserve,
    .weight_create = cpu_weight_create,
    .arena_reserve = cpu_arena_reserve,
    .run_begin = cpu_run_begin,
    .run_end = cpu_run_end,
    .mark = cpu_mark,
    .elapsed_ms = cpu_elapsed_ms,
    .upload = cpu_upload,
    .download = cpu_download,
    .from_rgb8 = cpu_from_rgb8,
    .to_rgb8 = cpu_to_rgb8,
    .conv2d = cpu_conv2d,
    .linear = cpu_linear,
    .group_norm = cpu_group_norm,
    .layer_norm = cpu_layer_norm,
    .attention = cpu_attention,
    .geglu = cpu_geglu,
    .axpby = cpu_axpby,
    .clamp = cpu_clamp,
    .tanh_clamp = cpu_tanh_clamp,
    .upsample2x = cpu_upsample2x,
    .concat_channels = cpu_concat_channels,
    .image_to_tokens = cpu_image_to_tokens,
    .tokens_to_image = cpu_tokens_to_image,
    .embed = cpu_embed,
    .gather = cpu_gather,
};

sdxs_status sdxs_backend_cpu_create(int threads, sdxs_precision precision, sdxs_backend **out,
                                    sdxs_error *err)
{
    sdxs_backend *be;
    cpu_backend *c;

    if (precision != SDXS_PRECISION_DEFAULT && precision != SDXS_PRECISION_FP32)
        return sdxs_fail(err, SDXS_ERR_INVALID, "precision",
                         "the CPU backend computes in fp32 only");
    if (threads <= 0)
        threads = omp_get_num_procs();
    omp_set_num_threads(threads);

    be = sdxs_calloc(1, sizeof(*be), err, "a backend");
    c = sdxs_calloc(1, sizeof(*c), err, "the CPU backend");
    if (!be || !c)
        goto oom;
    c->threads = threads;
    c->scratch = sdxs_calloc((size_t)threads, sizeof(float *), err, "scratch pointers");
    if (!c->scratch)
        goto oom;
    for (int i = 0; i < threads; i++) {
        c->scratch[i] = aligned_alloc(64, CPU_SCRATCH_BYTES);
        if (!c->scratch[i]) {
            sdxs_fail(err, SDXS_ERR_RUNTIME, NULL, "out of memory for CPU scratch");
            goto oom;
        }
    }
    be->ops = &cpu_ops;
    be->impl = c;
    *out = be;
    return SDXS_OK;

oom:
    if (c && c->scratch) {
        for (int i = 0; i < threads; i++)
            free(c->scratch[i]);
        free(c->scratch);
    }
    free(c);
    free(be);
    return SDXS_ERR_RUNTIME;
}
