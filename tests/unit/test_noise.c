/* test_noise.c: properties of the seeded noise that need no reference framework: the Mersenne
 * Twister against the value the C++ standard fixes for it, the seed's low-32-bit mapping, and the
 * block structure of the Box-Muller fill. Parity with torch.randn is tests/test_noise.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/noise.h"
#include "sdxs.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* std::mt19937 default-seeded (5489) gives 4123659995 as its 10000th output ([rand.predef]). */
static void test_mt_reference_value(void)
{
    sdxs_mt19937 mt;
    uint32_t v = 0;
    sdxs_noise_mt_seed(&mt, 5489);
    for (int i = 0; i < 10000; i++)
        v = sdxs_noise_mt_next(&mt);
    CHECK(v == 4123659995u, "got %u", v);
}

static void test_seed_low_bits(void)
{
    float a[40], b[40];
    sdxs_randn(5, a, 40);
    sdxs_randn((UINT64_C(1) << 32) + 5, b, 40);
    CHECK(!memcmp(a, b, sizeof(a)), "seeds 5 and 2^32+5 differ");
    sdxs_randn(6, b, 40);
    CHECK(memcmp(a, b, sizeof(a)), "seeds 5 and 6 agree");
}

/* Whole blocks do not depend on the count; a ragged end redraws only the last 16 values. */
static void test_block_structure(void)
{
    float a[48], b[49];
    sdxs_randn(42, a, 48);
    sdxs_randn(42, b, 49);
    CHECK(!memcmp(a, b, 33 * sizeof(float)), "the first 33 values of 48 and 49 differ");
    CHECK(memcmp(a + 33, b + 33, 15 * sizeof(float)), "the redrawn tail equals the first draw");
}

/* Moments of a large sample: mean within 5 standard errors of 0, variance of 1. */
static void test_moments(void)
{
    const size_t n = (size_t)1 << 20;
    float *x = malloc(n * sizeof(float));
    double sum = 0, sum2 = 0;
    if (!x) {
        CHECK(0, "out of memory");
        return;
    }
    sdxs_randn(7, x, n);
    for (size_t i = 0; i < n; i++) {
        CHECK(isfinite(x[i]), "x[%zu] = %g", i, x[i]);
        sum += x[i];
        sum2 += (double)x[i] * x[i];
    }
    CHECK(fabs(sum / (double)n) < 5.0 / sqrt((double)n), "mean %g", sum / (double)n);
    CHECK(fabs(sum2 / (double)n - 1.0) < 0.01, "variance %g", sum2 / (double)n);
    free(x);
}

/* count < 16 uses pairs: the values never depend on how many are asked for. */
static void test_short_prefix(void)
{
    float a[15], b[7];
    sdxs_randn(3, a, 15);
    sdxs_randn(3, b, 7);
    CHECK(!memcmp(a, b, sizeof(b)), "the first 7 of 15 differ from 7");
}

int main(void)
{
    test_mt_reference_value();
    test_seed_low_bits();
    test_block_structure();
    test_moments();
    test_short_prefix();
    if (failures) {
        fprintf(stderr, "test_noise: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_noise: ok\n");
    return 0;
}
