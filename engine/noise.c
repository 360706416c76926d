/* noise.c: seeded Gaussian noise bit-identical to torch.randn on a CPU torch.Generator (torch
 * 1.13, float32), so that a seed gives the same starting latent, and picture, as diffusers.
 *
 * What torch does, and what is reproduced here step by step:
 *  - an MT19937 stream seeded with the low 32 bits of the seed;
 *  - count >= 16: every element first gets a uniform float from one 32-bit draw (its low 24 bits
 *    times 2^-24); then each block of 16 becomes 8 Box-Muller pairs (element j of the block
 *    pairs with element j + 8: u1 = 1 - data[j], u2 = data[j + 8]). When count is not a multiple
 *    of 16, the last 16 elements are drawn again from the stream and transformed as one more
 *    block. torch's x86-64 build runs this in its AVX2 kernel, whose logarithm, sine and cosine
 *    are Cephes-style float polynomials and whose multiply-adds the compiler fused; the scalar
 *    code below evaluates the same polynomials with fmaf() at the same places, which makes it
 *    bit-identical (tests/test_noise.py checks this element by element);
 *  - count < 16: the scalar double-precision path, one pair per two elements from two 53-bit
 *    uniforms (each from two 32-bit draws), the sine of a pair kept for the next element.
 */
#include "engine/noise.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "sdxs.h"

/* ---- MT19937 ---- */

#define MT_SHIFT 397
#define MT_MATRIX 0x9908b0dfu
#define MT_UPPER 0x80000000u

void sdxs_noise_mt_seed(sdxs_mt19937 *mt, uint64_t seed)
{
    mt->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t i = 1; i < SDXS_MT_STATE; i++) {
        uint32_t prev = mt->state[i - 1];
        mt->state[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
    }
    mt->next = SDXS_MT_STATE;
}

/* Refills the whole state at once (the "twist"). */
static void mt_regenerate(sdxs_mt19937 *mt)
{
    uint32_t *s = mt->state;
    for (int i = 0; i < SDXS_MT_STATE; i++) {
        uint32_t succ = s[(i + 1) % SDXS_MT_STATE];
        uint32_t y = (s[i] & MT_UPPER) | (succ & ~MT_UPPER);
        s[i] = s[(i + MT_SHIFT) % SDXS_MT_STATE] ^ (y >> 1) ^ ((succ & 1u) ? MT_MATRIX : 0u);
    }
    mt->next = 0;
}

uint32_t sdxs_noise_mt_next(sdxs_mt19937 *mt)
{
    uint32_t y;
    if (mt->next >= SDXS_MT_STATE)
        mt_regenerate(mt);
    y = mt->state[mt->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* A float in [0, 1) with 24 random bits: torch's uniform_real_distribution<float>. */
static float uniform_float(sdxs_mt19937 *mt)
{
    return (float)(sdxs_noise_mt_next(mt) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* A double in [0, 1) with 53 random bits from two draws, the first one high. */
static double uniform_double(sdxs_mt19937 *mt)
{
    uint64_t hi = sdxs_noise_mt_next(mt);
    uint64_t lo = sdxs_noise_mt_next(mt);
    uint64_t bits = ((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1);
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* ---- float logarithm, sine and cosine as torch's AVX2 kernel evaluates them ---- */

/* fmaf() is a library call unless the compiler may use the FMA instruction; on x86-64 the
 * transform below is built twice, once for x86-64-v3 CPUs (AVX2 and FMA: same results, about
 * three times faster), with the polynomials inlined into both copies. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NOISE_FMA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define NOISE_INLINE static inline __attribute__((always_inline))
#else
#define NOISE_FMA_CLONES
#define NOISE_INLINE static inline
#endif

NOISE_INLINE float float_from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}

NOISE_INLINE uint32_t bits_from_float(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof(b));
    return b;
}

/* log(x) for a normal float x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then a degree-9
 * polynomial in m - 1 and e * ln 2 split into two parts. */
NOISE_INLINE float log_poly(float x)
{
    const float ln2_lo = -2.12194440e-4f, ln2_hi = 0.693359375f;
    uint32_t bits = bits_from_float(x);
    float e = (float)((int32_t)(bits >> 23) - 127) + 1.0f;
    float m = float_from_bits((bits & 0x807fffffu) | 0x3f000000u); /* in [0.5, 1) */
    float t, z, y;

    /* Step 1: move m into [sqrt(1/2), sqrt(2)) and take t = m - 1. Selects, not branches: the
     * test is a coin flip, and mispredicted branches cost more than the arithmetic. */
    bool small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    t = (m - 1.0f) + (small ? m : 0.0f);

    /* Step 2: the polynomial, Horner's rule with fused steps. */
    z = t * t;
    y = fmaf(7.0376836292E-2f, t, -1.1514610310E-1f);
    y = fmaf(y, t, 1.1676998740E-1f);
    y = fmaf(y, t, -1.2420140846E-1f);
    y = fmaf(y, t, 1.4249322787E-1f);
    y = fmaf(y, t, -1.6668057665E-1f);
    y = fmaf(y, t, 2.0000714765E-1f);
    y = fmaf(y, t, -2.4999993993E-1f);
    y = fmaf(y, t, 3.3333331174E-1f);
    y = y * t;

    /* Step 3: t - t^2/2 + t^3 P(t) + e ln 2, in this order. */
    y = fmaf(y, z, e * ln2_lo);
    y = fmaf(-z, 0.5f, y);
    return fmaf(e, ln2_hi, t + y);
}

/* sin(x) and cos(x) for 0 <= x < 2 pi: reduction by multiples of pi/4 (pi/4 split in three
 * parts), then the sine or cosine polynomial of the remainder, chosen and signed by octant. */
NOISE_INLINE void sincos_poly(float x, float *sin_out, float *cos_out)
{
    int32_t j = (int32_t)(x * 1.27323954473516f); /* 4 / pi, truncated */
    uint32_t sin_sign, cos_sign;
    float r, z, c, s, y;

    /* Step 1: the octant, rounded up to even, and the signs it implies. */
    j = (j + 1) & ~1;
    y = (float)j;
    sin_sign = ((uint32_t)j & 4u) << 29;
    cos_sign = (~(uint32_t)(j - 2) & 4u) << 29;

    /* Step 2: r = x - y * pi/4 in extended precision. */
    r = fmaf(y, -0.78515625f, x);
    r = fmaf(y, -2.4187564849853515625e-4f, r);
    r = fmaf(y, -3.77489497744594108e-8f, r);
    z = r * r;

    /* Step 3: both polynomials on [-pi/4, pi/4]. */
    c = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
    c = fmaf(c, z, 4.166664568298827E-002f);
    c = c * z;
    c = fmaf(c, z, -(z * 0.5f));
    c = c + 1.0f;
    s = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
    s = fmaf(s, z, -1.6666654611E-1f);
    s = s * z;
    s = fmaf(s, r, r);

    /* Step 4: octants 2 and 6 (after rounding) swap the two. */
    y = (j & 2) ? c : s;
    c = (j & 2) ? s : c;
    *sin_out = float_from_bits(bits_from_float(y) ^ sin_sign);
    *cos_out = float_from_bits(bits_from_float(c) ^ cos_sign);
}

/* ---- Box-Muller ---- */

/* block: 16 uniforms in, 16 normal samples out. */
NOISE_FMA_CLONES static void box_muller_16(float *block)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - block[j]; /* (0, 1]: the logarithm stays finite */
        float radius = sqrtf(-2.0f * log_poly(u1));
        float s, c;
        sincos_poly(two_pi * block[j + 8], &s, &c);
        block[j] = radius * c;
        block[j + 8] = radius * s;
    }
}

/* count < 16: torch's double-precision normal_distribution, one pair per two elements. */
static void randn_short(sdxs_mt19937 *mt, float *out, size_t count)
{
    double cached = 0.0;
    int have_cached = 0;
    for (size_t i = 0; i < count; i++) {
        if (have_cached) {
            out[i] = (float)cached;
            have_cached = 0;
            continue;
        }
        double u1 = uniform_double(mt);
        double u2 = uniform_double(mt);
        double radius = sqrt(-2.0 * log(1.0 - u2));
        double theta = 2.0 * 3.14159265358979323846 * u1;
        cached = radius * sin(theta);
        have_cached = 1;
        out[i] = (float)(radius * cos(theta));
    }
}

void sdxs_randn(uint64_t seed, float *out, size_t count)
{
    sdxs_mt19937 mt;
    sdxs_noise_mt_seed(&mt, seed);
    if (count < 16) {
        randn_short(&mt, out, count);
        return;
    }

    /* Step 1: one uniform per element, in order. */
    for (size_t i = 0; i < count; i++)
        out[i] = uniform_float(&mt);

    /* Step 2: whole blocks of 16. */
    for (size_t i = 0; i + 16 <= count; i += 16)
        box_muller_16(out + i);

    /* Step 3: a ragged end: fresh uniforms for the last 16 elements, transformed again. */
    if (count % 16 != 0) {
        float *tail = out + count - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = uniform_float(&mt);
        box_muller_16(tail);
    }
}
