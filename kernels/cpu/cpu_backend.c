/* cpu_backend.c: the CPU backend, the reference every other backend is compared with.
 *
 * Layout: images are float32 NHWC (so that tokens are the same memory as the image, and
 * oneDNN's convolutions run without reorders); tokens (N, L, D) and vectors are row-major.
 * Weights are float32: convolution weights in the layout oneDNN picks (cpu_conv.c), the rest in
 * their logical layout. Matrix products go through oneDNN's sgemm (measured faster here than
 * Debian's OpenBLAS, which falls back to a generic kernel on this CPU); everything else is plain
 * loops spread over OpenMP threads, the runtime oneDNN uses too, so the two never oversubscribe.
 * Each image of a batch is computed on its own, so results do not depend on the batch.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_conv.h"

#define CPU_SCRATCH_BYTES ((size_t)4 << 20) /* attention scores, per thread */
#define CPU_ATTN_BLOCK 64                    /* query rows per attention block */

typedef struct cpu_backend {
    int threads;
    void *weights; /* the one weight block */
    size_t weight_bytes;
    void *arena;
    size_t arena_bytes;
    float **scratch; /* one CPU_SCRATCH_BYTES buffer per thread */
    cpu_conv_cache *conv;
    bool bf16; /* convolution and linear weights in bfloat16 (see cpu_conv.c) */
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

static size_t numel_of(const sdxs_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->ne[i];
    return n;
}

/* Whether a weight is kept in a oneDNN convolution layout: convolutions always; in bf16 mode also
 * linear layers, which then run as 1x1 convolutions over a (1, rows) image. */
static bool conv_layout(const cpu_backend *c, const sdxs_tensor *t)
{
    return t->role == SDXS_WEIGHT_CONV || (c->bf16 && t->role == SDXS_WEIGHT_LINEAR);
}

static void cpu_weight_size(sdxs_backend *be, sdxs_tensor *t)
{
    t->dtype = SDXS_DTYPE_F32;
    t->nbytes = numel_of(t) * 4;
    /* Convolution weights take the layout oneDNN wants (its size may include padding). */
    if (conv_layout(cpu(be), t)) {
        size_t bytes;
        sdxs_error err;
        if (cpu_conv_weight_size(cpu(be)->conv, t, &bytes, &err) != SDXS_OK)
            sdxs_panic("%s", err.message);
        t->nbytes = bytes;
    }
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
    float *plain;
    sdxs_status st;

    SDXS_ASSERT(offset + t->nbytes <= c->weight_bytes);
    t->data = (char *)c->weights + offset;
    if (!conv_layout(c, t)) {
        to_f32(t->data, src_dtype, src, numel_of(t));
        return SDXS_OK;
    }
    plain = sdxs_alloc(numel_of(t) * sizeof(float), err, "a convolution weight");
    if (!plain)
        return SDXS_ERR_RUNTIME;
    to_f32(plain, src_dtype, src, numel_of(t));
    st = cpu_conv_weight_fill(c->conv, t, plain, err);
    free(plain);
    return st;
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

/* NCHW <-> NHWC for one batch of images; to_nhwc chooses the direction. */
static void transpose_images(float *dst, const float *src, const int64_t *ne, bool to_nhwc)
{
    int64_t n = ne[0], c = ne[1], hw = ne[2] * ne[3];
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t k = 0; k < c; k++) {
                int64_t nchw = (b * c + k) * hw + p, nhwc = (b * hw + p) * c + k;
                if (to_nhwc)
                    dst[nhwc] = src[nchw];
                else
                    dst[nchw] = src[nhwc];
            }
}

static int cpu_upload(sdxs_backend *be, sdxs_tensor *dst, const float *src)
{
    if (dst->ndim == 4)
        transpose_images(dst->data, src, dst->ne, true);
    else
        memcpy(dst->data, src, dst->nbytes);
    return 0;
}

static int cpu_download(sdxs_backend *be, const sdxs_tensor *src, float *dst)
{
    if (src->ndim == 4)
        transpose_images(dst, src->data, src->ne, false);
    else
        memcpy(dst, src->data, src->nbytes);
    return 0;
}

static int cpu_from_rgb8(sdxs_backend *be, sdxs_tensor *y, const uint8_t *src, float scale,
                         float shift)
{
    int64_t count = y->ne[0] * y->ne[2] * y->ne[3] * 3;
    float *out = fp(y); /* (N, H, W, 3), the same order as the pixels */
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++)
        out[i] = (float)src[i] / 255.0f * scale + shift;
    return 0;
}

static int cpu_to_rgb8(sdxs_backend *be, const sdxs_tensor *x, float scale, float shift,
                       uint8_t *dst)
{
    int64_t count = x->ne[0] * x->ne[2] * x->ne[3] * 3;
    const float *in = fp(x); /* (N, H, W, 3) */
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++) {
        float v = in[i] * scale + shift;
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        /* The default rounding mode rounds half to even, as numpy's round does. */
        dst[i] = (uint8_t)nearbyintf(v * 255.0f);
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

static int cpu_conv2d(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                      const sdxs_conv2d *conv, const sdxs_tensor *chan_bias,
                      const sdxs_tensor *residual, sdxs_act act)
{
    return cpu_conv_run(cpu(be)->conv, y, x, conv, chan_bias, residual, act);
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

    if (cpu(be)->bf16) {
        /* As a 1x1 convolution: (rows, din) row-major is a (1, din, 1, rows) NHWC image. */
        sdxs_conv2d conv = {.weight = lin->weight, .bias = lin->bias, .cin = (int)lin->din,
                            .cout = (int)dout, .kernel = 1, .stride = 1, .pad = 0};
        sdxs_tensor xi = *x, yi = *y, ri;
        xi.ndim = yi.ndim = 4;
        xi.ne[0] = yi.ne[0] = n;
        xi.ne[1] = lin->din;
        yi.ne[1] = dout;
        xi.ne[2] = yi.ne[2] = 1;
        xi.ne[3] = yi.ne[3] = rows;
        if (residual) {
            ri = yi;
            ri.data = residual->data;
        }
        return cpu_conv_run(cpu(be)->conv, &yi, &xi, &conv, NULL, residual ? &ri : NULL, act);
    }
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
    enum { MAX_GROUPS = 1024, MAX_CHANNELS = 8192 };
    int64_t n = x->ne[0], ch = x->ne[1], hw = x->ne[2] * x->ne[3];
    int64_t groups = norm->groups, cpg = ch / groups;
    const float *gamma = fp(norm->gamma), *beta = fp(norm->beta);

    SDXS_ASSERT(groups <= MAX_GROUPS && ch <= MAX_CHANNELS);
    for (int64_t b = 0; b < n; b++) {
        const float *in = fp(x) + b * hw * ch; /* (HW, C) */
        float *out = fp(y) + b * hw * ch;
        double sum[MAX_GROUPS] = {0}, sq[MAX_GROUPS] = {0};
        float sc[MAX_CHANNELS], sh[MAX_CHANNELS];

        /* Sums and squares per group, in double, over pixels split among threads. */
#pragma omp parallel
        {
            double ls[MAX_GROUPS] = {0}, lq[MAX_GROUPS] = {0};
#pragma omp for nowait
            for (int64_t p = 0; p < hw; p++)
                for (int64_t c = 0; c < ch; c++) {
                    double v = in[p * ch + c];
                    ls[c / cpg] += v;
                    lq[c / cpg] += v * v;
                }
#pragma omp critical
            for (int64_t g = 0; g < groups; g++) {
                sum[g] += ls[g];
                sq[g] += lq[g];
            }
        }

        /* Per channel: y = x * scale + shift with scale = rstd * gamma. */
        for (int64_t c = 0; c < ch; c++) {
            int64_t g = c / cpg;
            double count = (double)(cpg * hw), mean = sum[g] / count;
            double var = sq[g] / count - mean * mean;
            double rstd = 1.0 / sqrt((var > 0.0 ? var : 0.0) + (double)norm->eps);
            sc[c] = (float)(rstd * gamma[c]);
            sh[c] = (float)(beta[c] - mean * rstd * gamma[c]);
        }
#pragma omp parallel for
        for (int64_t p = 0; p < hw; p++)
            for (int64_t c = 0; c < ch; c++)
                out[p * ch + c] = act_apply(in[p * ch + c] * sc[c] + sh[c], act);
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
    int64_t n = x->ne[0], c = x->ne[1], h = x->ne[2], w = x->ne[3];
#pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < 2 * h; i++) {
            const float *in = fp(x) + (b * h + i / 2) * w * c; /* one input row (W, C) */
            float *out = fp(y) + (b * 2 * h + i) * 2 * w * c;
            for (int64_t j = 0; j < 2 * w; j++)
                memcpy(out + j * c, in + (j / 2) * c, (size_t)c * sizeof(float));
        }
    return 0;
}

static int cpu_concat_channels(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *a,
                               const sdxs_tensor *b)
{
    int64_t pixels = a->ne[0] * a->ne[2] * a->ne[3], ca = a->ne[1], cb = b->ne[1];
#pragma omp parallel for
    for (int64_t p = 0; p < pixels; p++) {
        memcpy(fp(y) + p * (ca + cb), fp(a) + p * ca, (size_t)ca * sizeof(float));
        memcpy(fp(y) + p * (ca + cb) + ca, fp(b) + p * cb, (size_t)cb * sizeof(float));
    }
    return 0;
}

/* In NHWC an image and its tokens are the same memory. */
static int cpu_image_to_tokens(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x)
{
    memcpy(y->data, x->data, y->nbytes);
    return 0;
}

static int cpu_tokens_to_image(sdxs_backend *be, sdxs_tensor *y, const sdxs_tensor *x,
                               const sdxs_tensor *residual)
{
    int64_t count = sdxs_tensor_numel(y);
    if (!residual) {
        memcpy(y->data, x->data, y->nbytes);
        return 0;
    }
#pragma omp parallel for
    for (int64_t i = 0; i < count; i++)
        fp(y)[i] = fp(x)[i] + fp(residual)[i];
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
    cpu_conv_cache_free(c->conv);
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

    if (precision == SDXS_PRECISION_FP16)
        return sdxs_fail(err, SDXS_ERR_INVALID, "precision",
                         "the CPU backend computes in fp32 or bf16, not fp16");
    if (threads <= 0)
        threads = omp_get_num_procs();
    omp_set_num_threads(threads);

    be = sdxs_calloc(1, sizeof(*be), err, "a backend");
    c = sdxs_calloc(1, sizeof(*c), err, "the CPU backend");
    if (!be || !c)
        goto oom;
    c->threads = threads;
    c->bf16 = precision == SDXS_PRECISION_BF16;
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
    if (cpu_conv_cache_create(&c->conv, c->bf16, err) != SDXS_OK)
        goto oom;
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
