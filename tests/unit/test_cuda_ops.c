/* test_cuda_ops.c: every operation of the CUDA backend against the CPU reference backend, in each
 * activation type (fp16, bf16, fp32), by normalized error (relative L2) under written tolerances.
 *
 * By default the CUDA backend runs on its CPU emulation (kernels/cuda/emu.h), so every
 * hand-written kernel executes here without a GPU; the test then checks that every launch site
 * in the .cu files of kernels/cuda ran. `test_cuda_ops --device` runs the real backend on a GPU instead
 * (tests/gpu/run.sh). Each case runs three times with new inputs: eagerly, captured into a CUDA
 * graph, and replayed, so the recording and the staging of host inputs are checked too.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_emu.h"

/* Tolerances on ||cuda - cpu|| / ||cpu||, both computed from the same inputs and weights (already
 * rounded to the storage type). The CUDA side rounds its output to the storage type, and some
 * operations round an intermediate too (the product before a separate bias/activation pass, the
 * attention probabilities before P V); one rounding to nearest costs at most u, about u / 2 in
 * relative L2 over many elements, u = 2^-11 for fp16 and 2^-8 for bf16. The tolerance is 4u:
 * room for two roundings and the different order of fp32 sums. For fp32 storage nothing is
 * rounded but the order of sums differs (and the GPU's expf, erff and tanhf may be an ulp off):
 * 1e-5 over sums of at most a few thousand terms. */
#define TOL_F16 (4.0 * 4.8828125e-4) /* 4 * 2^-11 */
#define TOL_BF16 (4.0 * 3.90625e-3)  /* 4 * 2^-8 */
#define TOL_F32 1e-5

#define PASSES 3 /* eager, captured, replayed */
enum { MAX_W = 8, MAX_IN = 3, MAX_IDS = 64 };

static int failures;
static bool verbose;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* ---- values: a fixed generator, and rounding to the storage type written independently of
 * the backend's own conversions ---- */

static uint64_t rng_state;

static float rnd(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 4503599627370496.0 - 1.0);
}

/* Rounds to nearest even with `bits` significant bits and no exponent below `min_exp` (the
 * smallest normal's exponent, as frexp counts): fp16 is (11, -13), bf16 (8, -125). */
static float round_to(float x, int bits, int min_exp)
{
    int e;
    if (x == 0.0f || !isfinite(x))
        return x;
    frexpf(x, &e);
    if (e < min_exp)
        e = min_exp;
    return ldexpf(nearbyintf(ldexpf(x, bits - e)), e - bits);
}

static float round_dtype(float x, sdxs_dtype dt)
{
    switch (dt) {
    case SDXS_DTYPE_F16: return round_to(x, 11, -13);
    case SDXS_DTYPE_BF16: return round_to(x, 8, -125);
    default: return x;
    }
}

/* The storage bits of a value already on the fp16 grid (|v| < 65504), or on the bf16 grid. */
static uint16_t f16_bits(float v)
{
    uint16_t sign = signbit(v) ? 0x8000u : 0u;
    float a = fabsf(v), m;
    int e;
    if (a == 0.0f)
        return sign;
    m = frexpf(a, &e); /* a = m 2^e, m in [0.5, 1) */
    if (e - 1 < -14)   /* subnormal: a counted in units of 2^-24 */
        return (uint16_t)(sign | (uint16_t)lrintf(ldexpf(a, 24)));
    return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) |
                      (uint16_t)lrintf((2.0f * m - 1.0f) * 1024.0f));
}

static uint16_t bf16_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)(u >> 16);
}

static double tolerance(sdxs_dtype dt)
{
    return dt == SDXS_DTYPE_F16 ? TOL_F16 : dt == SDXS_DTYPE_BF16 ? TOL_BF16 : TOL_F32;
}

/* ---- cases ---- */

typedef struct tshape {
    int ndim;
    int64_t d[4];
} tshape;

typedef struct tcase tcase;
typedef sdxs_tensor *(*run_fn)(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in);

struct tcase {
    const char *name;
    run_fn run;
    bool conv; /* also run with the backend's own convolutions (SDXS_CUDA_CONV=implicit) */
    int nw, nin;
    sdxs_weight_role wrole[MAX_W];
    tshape wshape[MAX_W];
    tshape inshape[MAX_IN];
    float in_offset; /* added to inputs: a mean far from zero tests the norms' statistics */
    /* operation parameters */
    sdxs_act act;
    int heads, groups, kernel, stride, pad;
    bool causal, with_bias;
    float a, b, lo, hi;
    int64_t q_first, k_first, v_first, count; /* attention columns */
    int32_t ids[MAX_IDS];                     /* embed ids, gather indices */
    int64_t nids;
    bool rgb_in, rgb_out;
    /* Weights reach the backends as F32 (0), or as F16 / BF16 storage bits, as checkpoints ship
     * them: each backend converts them itself. F16 matrices are made of subnormal values. */
    sdxs_dtype wsrc;
    /* per side, filled by the harness */
    float *wdata[MAX_W];
    uint16_t *wbits[MAX_W];
    float *indata[MAX_IN];
    uint8_t *rgb_src, *rgb_dst;
    int64_t rgb_count;
};

static sdxs_tensor *up(sdxs_exec *e, tcase *c, int i)
{
    return sdxs_op_upload(e, c->inshape[i].ndim, c->inshape[i].d, c->indata[i]);
}

static sdxs_tensor *run_conv(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_conv2d conv = {w[0], c->with_bias ? w[1] : NULL, (int)c->wshape[0].d[1],
                        (int)c->wshape[0].d[0], c->kernel, c->stride, c->pad};
    sdxs_tensor *x = up(e, c, 0);
    sdxs_tensor *cb = c->nin > 1 ? up(e, c, 1) : NULL;
    sdxs_tensor *res = c->nin > 2 ? up(e, c, 2) : NULL;
    return sdxs_op_conv2d(e, x, &conv, cb, res, c->act);
}

static sdxs_tensor *run_linear(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_linear lin = {w[0], c->with_bias ? w[1] : NULL, (int)c->wshape[0].d[1],
                       (int)c->wshape[0].d[0]};
    sdxs_tensor *x = up(e, c, 0);
    sdxs_tensor *res = c->nin > 1 ? up(e, c, 1) : NULL;
    return sdxs_op_linear(e, x, &lin, res, c->act);
}

static sdxs_tensor *run_group_norm(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_norm n = {w[0], w[1], (int)c->wshape[0].d[0], c->groups, 1e-5f};
    return sdxs_op_group_norm(e, up(e, c, 0), &n, c->act);
}

static sdxs_tensor *run_layer_norm(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_norm n = {w[0], w[1], (int)c->wshape[0].d[0], 0, 1e-5f};
    return sdxs_op_layer_norm(e, up(e, c, 0), &n);
}

/* Input 0 holds q (and k, v when there is no input 1); input 1 holds k and v. */
static sdxs_tensor *run_attention(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_tensor *qt = up(e, c, 0), *kvt = c->nin > 1 ? up(e, c, 1) : qt;
    sdxs_cols q = {qt, c->q_first, c->count}, k = {kvt, c->k_first, c->count};
    sdxs_cols v = {kvt, c->v_first, c->count};
    return sdxs_op_attention(e, q, k, v, c->heads, c->causal);
}

static sdxs_tensor *run_geglu(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_geglu(e, up(e, c, 0));
}

static sdxs_tensor *run_axpby(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_tensor *x = up(e, c, 0), *y = c->nin > 1 ? up(e, c, 1) : NULL;
    return sdxs_op_axpby(e, c->a, x, c->b, y, c->act);
}

static sdxs_tensor *run_clamp(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_clamp(e, up(e, c, 0), c->lo, c->hi);
}

static sdxs_tensor *run_tanh_clamp(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_tanh_clamp(e, up(e, c, 0), c->hi);
}

static sdxs_tensor *run_upsample(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_upsample2x(e, up(e, c, 0));
}

static sdxs_tensor *run_concat(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_tensor *a = up(e, c, 0);
    return sdxs_op_concat_channels(e, a, up(e, c, 1));
}

/* image -> tokens -> image (+ residual when there is an input 1): both layout entries. */
static sdxs_tensor *run_tokens(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_tensor *x = up(e, c, 0), *res = c->nin > 1 ? up(e, c, 1) : NULL;
    sdxs_tensor *t = sdxs_op_image_to_tokens(e, x);
    return sdxs_op_tokens_to_image(e, t, x->ne[2], x->ne[3], res);
}

/* Tokens alone, so the (N, L, C) result is compared directly. */
static sdxs_tensor *run_image_to_tokens(sdxs_exec *e, tcase *c, sdxs_tensor **w,
                                        sdxs_tensor **in)
{
    return sdxs_op_image_to_tokens(e, up(e, c, 0));
}

static sdxs_tensor *run_embed(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_embed(e, c->ids, c->inshape[0].d[0], c->inshape[0].d[1], w[0], w[1]);
}

static sdxs_tensor *run_gather(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    return sdxs_op_gather(e, up(e, c, 0), c->ids, c->nids);
}

/* Pixels in, an image out; or an image in, pixels out (the uint8 result is compared exactly). */
static sdxs_tensor *run_rgb(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    if (c->rgb_in)
        return sdxs_op_from_rgb8(e, c->rgb_src, c->inshape[0].d[0], c->inshape[0].d[2],
                                 c->inshape[0].d[3], 2.0f, -1.0f);
    sdxs_op_to_rgb8(e, up(e, c, 0), 0.5f, 0.5f, c->rgb_dst);
    return NULL;
}

/* A small U-Net-like chain: convolution, group norm + SiLU, a transformer block on the tokens
 * (layer norm, fused q|k|v, attention, output projection, GEGLU feed-forward, residuals), back to
 * an image with a residual, upsampling and the soft clamp. Intermediates are released as model
 * code does, so later outputs reuse their arena blocks inside one recorded graph. Weights: conv
 * (16, 8, 3, 3), its bias, norm gamma and beta (16), q|k|v (48, 16), output (16, 16),
 * feed-forward in (64, 16) and out (16, 32). */
static sdxs_tensor *run_chain(sdxs_exec *e, tcase *c, sdxs_tensor **w, sdxs_tensor **in)
{
    sdxs_conv2d conv = {w[0], w[1], 8, 16, 3, 1, 1};
    sdxs_norm gn = {w[2], w[3], 16, 4, 1e-5f}, ln = {w[2], w[3], 16, 0, 1e-5f};
    sdxs_linear qkv = {w[4], NULL, 16, 48}, out = {w[5], NULL, 16, 16};
    sdxs_linear ff_in = {w[6], NULL, 16, 64}, ff_out = {w[7], NULL, 32, 16};
    sdxs_tensor *x = up(e, c, 0), *h, *g, *t, *n, *p, *a, *t2, *f, *gg, *t3, *img, *u, *y;

    h = sdxs_op_conv2d(e, x, &conv, NULL, NULL, SDXS_ACT_NONE);
    sdxs_release(e, x);
    g = sdxs_op_group_norm(e, h, &gn, SDXS_ACT_SILU);
    t = sdxs_op_image_to_tokens(e, g);
    sdxs_release(e, g);
    n = sdxs_op_layer_norm(e, t, &ln);
    p = sdxs_op_linear(e, n, &qkv, NULL, SDXS_ACT_NONE);
    sdxs_release(e, n);
    a = sdxs_op_attention(e, (sdxs_cols){p, 0, 16}, (sdxs_cols){p, 16, 16},
                          (sdxs_cols){p, 32, 16}, 2, false);
    sdxs_release(e, p);
    t2 = sdxs_op_linear(e, a, &out, t, SDXS_ACT_NONE);
    sdxs_release(e, a);
    sdxs_release(e, t);
    f = sdxs_op_linear(e, t2, &ff_in, NULL, SDXS_ACT_NONE);
    gg = sdxs_op_geglu(e, f);
    sdxs_release(e, f);
    t3 = sdxs_op_linear(e, gg, &ff_out, t2, SDXS_ACT_NONE);
    sdxs_release(e, gg);
    sdxs_release(e, t2);
    img = sdxs_op_tokens_to_image(e, t3, 6, 6, h);
    sdxs_release(e, t3);
    sdxs_release(e, h);
    u = sdxs_op_upsample2x(e, img);
    sdxs_release(e, img);
    y = sdxs_op_tanh_clamp(e, u, 3.0f);
    sdxs_release(e, u);
    return y;
}

/* ---- the table of cases: small shapes that reach every kernel and both paths of each ---- */

#define S2(a, b) {2, {a, b, 1, 1}}
#define S3(a, b, c) {3, {a, b, c, 1}}
#define S4(a, b, c, d) {4, {a, b, c, d}}
#define W_CONV SDXS_WEIGHT_CONV
#define W_LIN SDXS_WEIGHT_LINEAR
#define W_VEC SDXS_WEIGHT_VECTOR
#define W_TAB SDXS_WEIGHT_TABLE

static tcase cases[] = {
    /* Convolutions: Cin a multiple of 8 (vector loads) or not, strides, 1x1, several tiles of
     * pixels and channels, every part of the epilogue. */
    {.name = "conv 3x3 8->72 +bias +chan_bias +residual silu", .run = run_conv, .conv = true,
     .nw = 2, .wrole = {W_CONV, W_VEC}, .wshape = {S4(72, 8, 3, 3), {1, {72}}},
     .nin = 3, .inshape = {S4(2, 8, 9, 7), S2(2, 72), S4(2, 72, 9, 7)}, .act = SDXS_ACT_SILU,
     .kernel = 3, .stride = 1, .pad = 1, .with_bias = true},
    {.name = "conv 3x3 stride 2 3->5 +bias", .run = run_conv, .conv = true, .nw = 2,
     .wrole = {W_CONV, W_VEC}, .wshape = {S4(5, 3, 3, 3), {1, {5}}}, .nin = 1,
     .inshape = {S4(1, 3, 11, 10)}, .kernel = 3, .stride = 2, .pad = 1, .with_bias = true},
    {.name = "conv 1x1 16->8 no bias relu", .run = run_conv, .conv = true, .nw = 1,
     .wrole = {W_CONV}, .wshape = {S4(8, 16, 1, 1)}, .nin = 1, .inshape = {S4(2, 16, 5, 5)},
     .act = SDXS_ACT_RELU, .kernel = 1, .stride = 1, .pad = 0},
    {.name = "conv 3x3 8->8, F16 subnormal weights", .run = run_conv, .conv = true, .nw = 1,
     .wrole = {W_CONV}, .wshape = {S4(8, 8, 3, 3)}, .nin = 1, .inshape = {S4(1, 8, 4, 5)},
     .kernel = 3, .stride = 1, .pad = 1, .wsrc = SDXS_DTYPE_F16},
    {.name = "conv 3x3 4->12 +chan_bias +residual", .run = run_conv, .conv = true, .nw = 1,
     .wrole = {W_CONV}, .wshape = {S4(12, 4, 3, 3)}, .nin = 3,
     .inshape = {S4(1, 4, 6, 6), S2(1, 12), S4(1, 12, 6, 6)}, .kernel = 3, .stride = 1,
     .pad = 1},

    /* Linear layers: with and without the epilogue, 2-D and 3-D inputs, vector and scalar
     * epilogue widths. */
    {.name = "linear 24->40 +bias +residual gelu", .run = run_linear, .nw = 2,
     .wrole = {W_LIN, W_VEC}, .wshape = {S2(40, 24), {1, {40}}}, .nin = 2,
     .inshape = {S3(2, 5, 24), S3(2, 5, 40)}, .act = SDXS_ACT_GELU, .with_bias = true},
    {.name = "linear 16->12 quick_gelu", .run = run_linear, .nw = 2, .wrole = {W_LIN, W_VEC},
     .wshape = {S2(12, 16), {1, {12}}}, .nin = 1, .inshape = {S2(3, 16)},
     .act = SDXS_ACT_QUICK_GELU, .with_bias = true},
    {.name = "linear 32->24 plain", .run = run_linear, .nw = 1, .wrole = {W_LIN},
     .wshape = {S2(24, 32)}, .nin = 1, .inshape = {S3(1, 7, 32)}},
    {.name = "linear 32->16, F16 subnormal weights", .run = run_linear, .nw = 1,
     .wrole = {W_LIN}, .wshape = {S2(16, 32)}, .nin = 1, .inshape = {S2(5, 32)},
     .wsrc = SDXS_DTYPE_F16},
    {.name = "linear 16->8 +bias, BF16 weights", .run = run_linear, .nw = 2,
     .wrole = {W_LIN, W_VEC}, .wshape = {S2(8, 16), {1, {8}}}, .nin = 1, .inshape = {S2(3, 16)},
     .with_bias = true, .wsrc = SDXS_DTYPE_BF16},

    /* Norms: group norm with vector and scalar channel loads, a mean far from zero, several
     * pixel chunks; layer norm rows in registers and longer ones. */
    {.name = "group norm 32 ch 8 groups silu, mean 4", .run = run_group_norm, .nw = 2,
     .wrole = {W_VEC, W_VEC}, .wshape = {{1, {32}}, {1, {32}}}, .nin = 1,
     .inshape = {S4(2, 32, 9, 11)}, .act = SDXS_ACT_SILU, .groups = 8, .in_offset = 4.0f},
    {.name = "group norm 6 ch 3 groups", .run = run_group_norm, .nw = 2,
     .wrole = {W_VEC, W_VEC}, .wshape = {{1, {6}}, {1, {6}}}, .nin = 1,
     .inshape = {S4(1, 6, 5, 3)}, .groups = 3},
    {.name = "layer norm 40, mean 3", .run = run_layer_norm, .nw = 2, .wrole = {W_VEC, W_VEC},
     .wshape = {{1, {40}}, {1, {40}}}, .nin = 1, .inshape = {S3(2, 7, 40)}, .in_offset = 3.0f},
    {.name = "layer norm 1600 (long rows)", .run = run_layer_norm, .nw = 2,
     .wrole = {W_VEC, W_VEC}, .wshape = {{1, {1600}}, {1, {1600}}}, .nin = 1,
     .inshape = {S3(1, 3, 1600)}},

    /* Attention: the tensor-core kernel at every instantiated head size (a fused q|k|v input,
     * or q apart from a fused k|v), partial query and key tiles, causal masking; odd head sizes
     * take the plain kernel in every type. */
    {.name = "attention 2 heads x 64, 70 queries, 77 keys", .run = run_attention, .nin = 2,
     .inshape = {S3(1, 70, 128), S3(1, 77, 256)}, .heads = 2, .q_first = 0, .k_first = 0,
     .v_first = 128, .count = 128},
    {.name = "attention causal 2 heads x 32 (fused qkv, 77 tokens)", .run = run_attention,
     .nin = 1, .inshape = {S3(2, 77, 192)}, .heads = 2, .causal = true, .q_first = 0,
     .k_first = 64, .v_first = 128, .count = 64},
    {.name = "attention 1 head x 80", .run = run_attention, .nin = 1,
     .inshape = {S3(1, 19, 240)}, .heads = 1, .q_first = 0, .k_first = 80, .v_first = 160,
     .count = 80},
    {.name = "attention 1 head x 96", .run = run_attention, .nin = 2,
     .inshape = {S3(1, 9, 96), S3(1, 13, 192)}, .heads = 1, .q_first = 0, .k_first = 0,
     .v_first = 96, .count = 96},
    {.name = "attention 1 head x 128", .run = run_attention, .nin = 2,
     .inshape = {S3(1, 9, 128), S3(1, 11, 256)}, .heads = 1, .q_first = 0, .k_first = 0,
     .v_first = 128, .count = 128},
    {.name = "attention 1 head x 160", .run = run_attention, .nin = 2,
     .inshape = {S3(1, 5, 160), S3(1, 7, 320)}, .heads = 1, .q_first = 0, .k_first = 0,
     .v_first = 160, .count = 160},
    {.name = "attention 3 heads x 12 (plain kernel)", .run = run_attention, .nin = 1,
     .inshape = {S3(1, 13, 108)}, .heads = 3, .q_first = 0, .k_first = 36, .v_first = 72,
     .count = 36},
    {.name = "attention causal 1 head x 200 (plain kernel)", .run = run_attention, .nin = 1,
     .inshape = {S3(1, 6, 600)}, .heads = 1, .causal = true, .q_first = 0, .k_first = 200,
     .v_first = 400, .count = 200},

    /* Elementwise and layout entries: vector and scalar paths. */
    {.name = "geglu 2x24", .run = run_geglu, .nin = 1, .inshape = {S3(2, 5, 48)}},
    {.name = "geglu 2x10", .run = run_geglu, .nin = 1, .inshape = {S3(1, 3, 20)}},
    {.name = "axpby silu", .run = run_axpby, .nin = 2, .inshape = {S4(2, 8, 4, 4), S4(2, 8, 4, 4)},
     .a = 0.75f, .b = -1.5f, .act = SDXS_ACT_SILU},
    {.name = "axpby odd count, no y", .run = run_axpby, .nin = 1, .inshape = {S2(3, 7)},
     .a = 2.5f},
    {.name = "clamp", .run = run_clamp, .nin = 1, .inshape = {S3(2, 5, 16)}, .lo = -0.5f,
     .hi = 0.25f},
    {.name = "tanh clamp odd count", .run = run_tanh_clamp, .nin = 1, .inshape = {S2(5, 3)},
     .hi = 0.6f},
    {.name = "upsample 16 ch", .run = run_upsample, .nin = 1, .inshape = {S4(2, 16, 3, 5)}},
    {.name = "upsample 3 ch", .run = run_upsample, .nin = 1, .inshape = {S4(1, 3, 4, 2)}},
    {.name = "concat 8 + 16", .run = run_concat, .nin = 2,
     .inshape = {S4(2, 8, 3, 3), S4(2, 16, 3, 3)}},
    {.name = "concat 3 + 5", .run = run_concat, .nin = 2,
     .inshape = {S4(1, 3, 2, 3), S4(1, 5, 2, 3)}},
    {.name = "image to tokens", .run = run_image_to_tokens, .nin = 1,
     .inshape = {S4(2, 8, 3, 4)}},
    {.name = "tokens to image + residual", .run = run_tokens, .nin = 2,
     .inshape = {S4(2, 16, 3, 4), S4(2, 16, 3, 4)}},
    {.name = "tokens to image + residual, 3 ch", .run = run_tokens, .nin = 2,
     .inshape = {S4(1, 3, 3, 3), S4(1, 3, 3, 3)}},
    {.name = "tokens to image", .run = run_tokens, .nin = 1, .inshape = {S4(1, 5, 2, 2)}},
    {.name = "embed", .run = run_embed, .nw = 2, .wrole = {W_TAB, W_TAB},
     .wshape = {S2(50, 24), S2(10, 24)}, .nin = 0, .inshape = {S2(2, 7)},
     .ids = {3, 0, 49, 7, 7, 12, 1, 2, 5, 8, 40, 41, 0, 9}, .nids = 14},
    {.name = "gather 16-byte rows", .run = run_gather, .nin = 1, .inshape = {S3(3, 4, 8)},
     .ids = {2, 0, 2, 1}, .nids = 4},
    {.name = "gather odd rows", .run = run_gather, .nin = 1, .inshape = {S2(3, 5)},
     .ids = {1, 1, 0}, .nids = 3},
    {.name = "upload/download 4-D", .run = run_upsample, .nin = 1, .inshape = {S4(1, 40, 3, 2)}},
    {.name = "from rgb8", .run = run_rgb, .nin = 0, .inshape = {S4(2, 3, 5, 7)}, .rgb_in = true},
    {.name = "to rgb8", .run = run_rgb, .nin = 1, .inshape = {S4(2, 3, 6, 5)}, .rgb_out = true},

    /* Thirteen operations in a row, under the same tolerance as one. */
    {.name = "chain: conv, norms, transformer block, upsample", .run = run_chain, .conv = true,
     .nw = 8, .wrole = {W_CONV, W_VEC, W_VEC, W_VEC, W_LIN, W_LIN, W_LIN, W_LIN},
     .wshape = {S4(16, 8, 3, 3), {1, {16}}, {1, {16}}, {1, {16}}, S2(48, 16), S2(16, 16),
                S2(64, 16), S2(16, 32)},
     .nin = 1, .inshape = {S4(2, 8, 6, 6)}},
};

/* ---- running one case on one backend ---- */

typedef struct side {
    sdxs_backend *be;
    sdxs_exec *ex;
    sdxs_weight_store *ws;
    sdxs_tensor *w[MAX_W];
    tcase *c;
    float *out; /* the downloaded result */
    int64_t out_n;
} side;

static int64_t numel(const tshape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->d[i];
    return n;
}

static sdxs_status run_fn_case(sdxs_exec *e, void *user)
{
    side *s = user;
    sdxs_tensor *y = s->c->run(e, s->c, s->w, NULL);
    if (y && !sdxs_exec_planning(e)) {
        s->out_n = sdxs_tensor_numel(y);
        s->out = realloc(s->out, (size_t)s->out_n * sizeof(float));
        if (!s->out) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        sdxs_op_download(e, y, s->out);
    }
    return SDXS_OK;
}

/* The case's weights on this backend: the sizing pass, the block, then the creating pass. */
static int make_weights(side *s, tcase *c)
{
    sdxs_error err;
    if (sdxs_weight_store_create(s->be, &s->ws, &err) != SDXS_OK)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < c->nw; i++) {
            const void *src = c->wbits[i] ? (const void *)c->wbits[i] : (const void *)c->wdata[i];
            s->w[i] = sdxs_weight_store_add(s->ws, c->wrole[i], c->wshape[i].ndim, c->wshape[i].d,
                                            c->wbits[i] ? c->wsrc : SDXS_DTYPE_F32,
                                            pass ? src : NULL, &err);
            if (!s->w[i]) {
                fprintf(stderr, "%s: weight %d: %s\n", c->name, i, err.message);
                return -1;
            }
        }
        if (pass == 0 && sdxs_weight_store_reserve(s->ws, &err) != SDXS_OK) {
            fprintf(stderr, "%s: %s\n", c->name, err.message);
            return -1;
        }
    }
    return 0;
}

/* New inputs for one pass, rounded to the storage type. */
static void fill_inputs(tcase *c, sdxs_dtype dt, uint64_t seed)
{
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < c->nin; i++) {
        int64_t n = numel(&c->inshape[i]);
        for (int64_t j = 0; j < n; j++)
            c->indata[i][j] = round_dtype(c->in_offset + 2.0f * rnd(), dt);
    }
    for (int64_t j = 0; c->rgb_src && j < c->rgb_count; j++) {
        rnd();
        c->rgb_src[j] = (uint8_t)(rng_state >> 56);
    }
}

static double rel_l2(const float *got, const float *want, int64_t n, double *ref_norm)
{
    double d = 0.0, r = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double diff = (double)got[i] - (double)want[i];
        d += diff * diff;
        r += (double)want[i] * (double)want[i];
    }
    *ref_norm = sqrt(r);
    return r > 0.0 ? sqrt(d / r) : INFINITY;
}

static double worst[3]; /* largest error seen per storage type, for the summary */

/* Runs case c on the CPU and on the CUDA backend `gpu` (activation type dt) for PASSES passes
 * with new inputs each, and compares. */
static void run_case(tcase *c, sdxs_backend *cpu_be, sdxs_backend *gpu_be, sdxs_dtype dt,
                     const char *label, uint64_t key)
{
    side s[2] = {{.be = cpu_be, .c = c}, {.be = gpu_be, .c = c}};
    sdxs_error err;
    double tol = tolerance(dt), err_max = 0.0;

    /* Weights, rounded to the storage type the CUDA side keeps them in (vectors stay fp32). */
    rng_state = key * 7919 + 17;
    for (int i = 0; i < c->nw; i++) {
        int64_t n = numel(&c->wshape[i]);
        float scale = c->wrole[i] == SDXS_WEIGHT_CONV || c->wrole[i] == SDXS_WEIGHT_LINEAR
                          ? 1.0f / sqrtf((float)(n / c->wshape[i].d[0]))
                          : 1.0f;
        c->wdata[i] = malloc((size_t)n * sizeof(float));
        c->wbits[i] = c->wsrc != SDXS_DTYPE_F32 ? malloc((size_t)n * 2) : NULL;
        for (int64_t j = 0; j < n; j++) {
            float v = scale * rnd() + (c->wrole[i] == SDXS_WEIGHT_VECTOR && i == 0 ? 1.0f : 0.0f);
            if (c->wsrc == SDXS_DTYPE_F16) {
                /* Matrices scaled into fp16's subnormal range (below 2^-14), so that a wrong
                 * conversion of subnormals shows in the result at full weight. */
                if (c->wrole[i] != SDXS_WEIGHT_VECTOR)
                    v = ldexpf(v, -12);
                v = round_dtype(v, SDXS_DTYPE_F16);
                c->wbits[i][j] = f16_bits(v);
            } else if (c->wsrc == SDXS_DTYPE_BF16) {
                v = round_dtype(v, SDXS_DTYPE_BF16);
                c->wbits[i][j] = bf16_bits(v);
            }
            c->wdata[i][j] = c->wrole[i] == SDXS_WEIGHT_VECTOR ? v : round_dtype(v, dt);
        }
    }
    for (int i = 0; i < c->nin; i++)
        c->indata[i] = malloc((size_t)numel(&c->inshape[i]) * sizeof(float));
    c->rgb_count = c->rgb_in || c->rgb_out ? numel(&c->inshape[0]) : 0;
    c->rgb_src = c->rgb_in ? malloc((size_t)c->rgb_count) : NULL;

    for (int k = 0; k < 2; k++) {
        if (make_weights(&s[k], c) || sdxs_exec_create(s[k].be, &s[k].ex, &err) != SDXS_OK) {
            CHECK(0, "%s [%s]: setup failed", c->name, label);
            goto done;
        }
    }

    for (int pass = 0; pass < PASSES; pass++) {
        uint8_t *rgb_out[2] = {NULL, NULL};
        fill_inputs(c, dt, key * 131 + (uint64_t)pass);
        for (int k = 0; k < 2; k++) {
            if (c->rgb_out)
                rgb_out[k] = calloc((size_t)c->rgb_count, 1);
            c->rgb_dst = rgb_out[k];
            if (sdxs_exec_run(s[k].ex, key, run_fn_case, &s[k], &err) != SDXS_OK)
                CHECK(0, "%s [%s] pass %d on %s: %s", c->name, label, pass,
                      sdxs_backend_name(s[k].be), err.message);
        }
        if (c->rgb_out) {
            int64_t differ = 0;
            for (int64_t j = 0; j < c->rgb_count; j++)
                differ += rgb_out[0][j] != rgb_out[1][j];
            CHECK(differ == 0, "%s [%s] pass %d: %lld of %lld pixel values differ", c->name,
                  label, pass, (long long)differ, (long long)c->rgb_count);
            if (verbose)
                printf("  %-58s %-13s pass %d: %lld values differ\n", c->name, label, pass,
                       (long long)differ);
            free(rgb_out[0]);
            free(rgb_out[1]);
            continue;
        }
        if (!s[0].out || !s[1].out || s[0].out_n != s[1].out_n) {
            CHECK(0, "%s [%s] pass %d: no result to compare", c->name, label, pass);
            continue;
        }
        double ref_norm, e = rel_l2(s[1].out, s[0].out, s[0].out_n, &ref_norm);
        CHECK(ref_norm > 0.0, "%s: the reference is all zeros", c->name);
        CHECK(e <= tol, "%s [%s] pass %d: relative L2 %.3g over the tolerance %.3g", c->name,
              label, pass, e, tol);
        if (!(e <= err_max))
            err_max = e;
    }
    if (verbose)
        printf("  %-58s %-13s rel L2 %.2e (tolerance %.1e)\n", c->name, label, err_max, tol);
    if (!(err_max <= worst[dt == SDXS_DTYPE_F16 ? 0 : dt == SDXS_DTYPE_BF16 ? 1 : 2]))
        worst[dt == SDXS_DTYPE_F16 ? 0 : dt == SDXS_DTYPE_BF16 ? 1 : 2] = err_max;

done:
    for (int k = 0; k < 2; k++) {
        sdxs_exec_free(s[k].ex);
        sdxs_weight_store_free(s[k].ws);
        free(s[k].out);
    }
    for (int i = 0; i < c->nw; i++) {
        free(c->wdata[i]);
        free(c->wbits[i]);
        c->wbits[i] = NULL;
    }
    for (int i = 0; i < c->nin; i++)
        free(c->indata[i]);
    free(c->rgb_src);
}

/* ---- recordings across growth: a new, larger shape grows the arena and the staging area,
 * which moves them and must drop every recorded graph; an older shape then runs eagerly again,
 * is recorded again and replays with its new inputs ---- */

typedef struct growth_run {
    int64_t n;
    float *in, *out;
} growth_run;

static sdxs_status run_growth(sdxs_exec *e, void *user)
{
    growth_run *g = user;
    int64_t shape[2] = {2, g->n / 2};
    sdxs_tensor *x = sdxs_op_upload(e, 2, shape, g->in);
    sdxs_tensor *y = sdxs_op_axpby(e, 2.0f, x, 0.0f, NULL, SDXS_ACT_NONE);
    sdxs_op_download(e, y, g->out);
    return SDXS_OK;
}

static void test_replay_after_growth(sdxs_backend *gpu_be, const char *label)
{
    /* (elements, runs): 3 runs go eager, captured, replayed; 1.5 M elements need more than the
     * 4 MiB of staging the backend starts with. */
    static const int64_t plan[][2] = {{64, 3}, {1536 * 1024, 2}, {64, 3}, {256, 1}, {64, 1}};
    sdxs_dtype dt = gpu_be->ops->act_dtype(gpu_be);
    sdxs_exec *ex = NULL;
    sdxs_error err;
    int run = 0;

    if (sdxs_exec_create(gpu_be, &ex, &err) != SDXS_OK) {
        CHECK(0, "exec: %s", err.message);
        return;
    }
    for (size_t p = 0; p < SDXS_ARRAY_LEN(plan); p++)
        for (int r = 0; r < plan[p][1]; r++, run++) {
            growth_run g = {plan[p][0], malloc((size_t)plan[p][0] * 4),
                            malloc((size_t)plan[p][0] * 4)};
            int64_t wrong = 0;
            rng_state = (uint64_t)run * 1000003 + 5;
            for (int64_t i = 0; i < g.n; i++) {
                g.in[i] = round_dtype(rnd(), dt); /* 2x is exact in every storage type */
                g.out[i] = NAN;
            }
            if (sdxs_exec_run(ex, (uint64_t)g.n, run_growth, &g, &err) != SDXS_OK)
                CHECK(0, "growth [%s] run %d (%lld elements): %s", label, run,
                      (long long)g.n, err.message);
            for (int64_t i = 0; i < g.n; i++)
                wrong += !(g.out[i] == 2.0f * g.in[i]);
            CHECK(wrong == 0, "growth [%s] run %d (%lld elements): %lld wrong values", label,
                  run, (long long)g.n, (long long)wrong);
            free(g.in);
            free(g.out);
        }
    sdxs_exec_free(ex);
}

/* ---- coverage: every launch site in kernels/cuda/ must have run in the emulation ---- */

/* Appends to `out` the kernel expression of each CU_LAUNCH in src, as the launch macro
 * stringizes it ("k_map_vec<T, F>": outer parentheses dropped, white space collapsed). */
static int launch_sites(const char *src, char out[][96], int n, int cap)
{
    const char *p = src;
    while ((p = strstr(p, "CU_LAUNCH(")) != NULL) {
        const char *q = strchr(p, ',');
        char buf[96];
        int depth = 0, len = 0;
        bool space = false;
        p += 10;
        if (!q)
            break;
        for (q++; *q == ' ' || *q == '\n'; q++)
            ;
        if (*q == '(')
            q++, depth = 1;
        for (; *q && len < (int)sizeof(buf) - 1; q++) {
            if (*q == '(')
                depth++;
            if (*q == ')' && --depth <= 0)
                break;
            if (*q == ',' && depth == 0)
                break;
            if (*q == ' ' || *q == '\n') {
                space = true;
                continue;
            }
            if (space && len)
                buf[len++] = ' ';
            space = false;
            buf[len++] = *q;
        }
        buf[len] = 0;
        if (!strcmp(buf, "kernel"))
            continue; /* the macro's own definition */
        if (n < cap)
            snprintf(out[n++], 96, "%s", buf);
    }
    return n;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[len] = 0;
    fclose(f);
    return buf;
}

static void check_coverage(void)
{
    enum { CAP = 128 };
    static char sites[CAP][96];
    const char *ran = sdxs_cuda_emu_kernels_ran();
    DIR *dir = opendir("kernels/cuda");
    struct dirent *de;
    int n = 0, missing = 0;

    CHECK(dir != NULL, "kernels/cuda not found: run from the source directory");
    if (!dir)
        return;
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[512], *text;
        if (len < 4 || strcmp(de->d_name + len - 3, ".cu"))
            continue;
        snprintf(path, sizeof(path), "kernels/cuda/%s", de->d_name);
        text = read_text(path);
        CHECK(text != NULL, "cannot read %s", path);
        if (text)
            n = launch_sites(text, sites, n, CAP);
        free(text);
    }
    closedir(dir);
    CHECK(n > 20 && n < CAP, "found %d launch sites", n);
    for (int i = 0; i < n; i++) {
        char line[128];
        snprintf(line, sizeof(line), "%.95s\n", sites[i]);
        if (!strstr(ran, line)) {
            CHECK(0, "the kernel launched as %s never ran", sites[i]);
            missing++;
        }
    }
    printf("coverage: %d kernel launch sites in kernels/cuda, %d never ran\n", n, missing);
}

/* ---- main ---- */

/* True when `only` is NULL or one of its comma-separated parts occurs in "name [label]". */
static bool selected(const char *only, const char *name, const char *label)
{
    char full[160], part[64];
    if (!only)
        return true;
    snprintf(full, sizeof(full), "%s [%s]", name, label);
    while (*only) {
        size_t len = strcspn(only, ",");
        snprintf(part, sizeof(part), "%.*s", (int)(len < sizeof(part) ? len : sizeof(part) - 1),
                 only);
        if (len && strstr(full, part))
            return true;
        only += len + (only[len] == ',');
    }
    return false;
}

static sdxs_status make_gpu(bool device, sdxs_precision p, bool implicit_conv,
                            sdxs_backend **out, sdxs_error *err)
{
    if (implicit_conv)
        setenv("SDXS_CUDA_CONV", "implicit", 1);
    else
        unsetenv("SDXS_CUDA_CONV");
    sdxs_status st = device ? sdxs_backend_cuda_create(p, out, err)
                            : sdxs_backend_cuda_emu_create(p, out, err);
    unsetenv("SDXS_CUDA_CONV");
    return st;
}

int main(int argc, char **argv)
{
    static const sdxs_precision precisions[] = {SDXS_PRECISION_FP16, SDXS_PRECISION_BF16,
                                                SDXS_PRECISION_FP32};
    static const char *const names[] = {"fp16", "bf16", "fp32"};
    bool device = false;
    sdxs_backend *cpu_be = NULL;
    sdxs_error err;
    const char *only = NULL;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device"))
            device = true;
        else if (!strcmp(argv[i], "-v"))
            verbose = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: test_cuda_ops [--device] [-v] [--only A,B,...]\n"
                            "  --only: run the cases whose \"name [type]\" contains one of the\n"
                            "          comma-separated parts (e.g. attention,own-conv)\n");
            return 2;
        }
    }
    sdxs_log_set_level(SDXS_LOG_WARN);
    if (sdxs_backend_cpu_create(2, SDXS_PRECISION_FP32, &cpu_be, &err) != SDXS_OK) {
        fprintf(stderr, "CPU backend: %s\n", err.message);
        return 1;
    }

    /* Without a device the constructor fails with a message, and nothing leaks. */
    if (!device) {
        sdxs_backend *none = NULL;
        setenv("SDXS_EMU_NO_DEVICE", "1", 1);
        CHECK(sdxs_backend_cuda_emu_create(SDXS_PRECISION_DEFAULT, &none, &err) ==
                      SDXS_ERR_RUNTIME && none == NULL && strstr(err.message, "no usable CUDA"),
              "creation without a device: %s", err.message);
        unsetenv("SDXS_EMU_NO_DEVICE");
    }

    for (int p = 0; p < 3; p++) {
        for (int implicit = 0; implicit < 2; implicit++) {
            sdxs_backend *gpu_be = NULL;
            char label[32];
            snprintf(label, sizeof(label), "%s%s", names[p], implicit ? " own-conv" : "");
            /* bf16 runs every block's threads in reverse order: the 2-byte kernels are the same
             * templates as fp16's, so each kernel meets both orders. */
            if (!device)
                sdxs_cuda_emu_reverse_order(p == 1);
            if (make_gpu(device, precisions[p], implicit, &gpu_be, &err) != SDXS_OK) {
                CHECK(0, "CUDA backend (%s): %s", label, err.message);
                continue;
            }
            CHECK(gpu_be->ops->act_dtype(gpu_be) ==
                      (p == 0 ? SDXS_DTYPE_F16 : p == 1 ? SDXS_DTYPE_BF16 : SDXS_DTYPE_F32),
                  "activation type of %s", label);
            for (size_t i = 0; i < SDXS_ARRAY_LEN(cases); i++) {
                if ((implicit && !cases[i].conv) || !selected(only, cases[i].name, label))
                    continue;
                run_case(&cases[i], cpu_be, gpu_be, gpu_be->ops->act_dtype(gpu_be), label,
                         (uint64_t)i + 1);
            }
            if (!implicit && selected(only, "growth", label))
                test_replay_after_growth(gpu_be, label);
            sdxs_backend_free(gpu_be);
        }
    }
    printf("largest relative L2: fp16 %.2e (tolerance %.1e), bf16 %.2e (%.1e), fp32 %.2e "
           "(%.1e)\n", worst[0], TOL_F16, worst[1], TOL_BF16, worst[2], TOL_F32);
    if (!device && !only)
        check_coverage();
    sdxs_backend_free(cpu_be);
    if (failures)
        fprintf(stderr, "test_cuda_ops: %d failures\n", failures);
    else
        printf("test_cuda_ops: all %zu cases passed on %s\n", SDXS_ARRAY_LEN(cases),
               device ? "the GPU" : "the CUDA emulation");
    return failures ? 1 : 0;
}
