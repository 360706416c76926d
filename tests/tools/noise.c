/* noise.c (sdxs-noise): writes sdxs_randn's noise for tests/test_noise.py to compare with
 * torch.randn. Usage: sdxs-noise COUNT SEED [SEED...]; for each seed in turn, COUNT float32
 * values in native byte order go to stdout. Exit 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdxs.h"

#define MAX_COUNT ((size_t)1 << 28) /* 1 GiB of floats */

/* A decimal unsigned 64-bit number, nothing else. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (!*s || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

int main(int argc, char **argv)
{
    uint64_t count64;
    float *buf;

    if (argc < 3 || !parse_u64(argv[1], &count64) || count64 > MAX_COUNT) {
        fprintf(stderr, "usage: sdxs-noise COUNT SEED [SEED...]  (COUNT at most %zu)\n",
                MAX_COUNT);
        return SDXS_ERR_INVALID;
    }
    buf = malloc(count64 ? (size_t)count64 * sizeof(float) : 1);
    if (!buf) {
        fprintf(stderr, "sdxs-noise: out of memory\n");
        return SDXS_ERR_RUNTIME;
    }
    for (int i = 2; i < argc; i++) {
        uint64_t seed;
        if (!parse_u64(argv[i], &seed)) {
            fprintf(stderr, "sdxs-noise: seed '%s' is not an integer in [0, 2^64)\n", argv[i]);
            free(buf);
            return SDXS_ERR_INVALID;
        }
        sdxs_randn(seed, buf, (size_t)count64);
        if (fwrite(buf, sizeof(float), (size_t)count64, stdout) != (size_t)count64) {
            fprintf(stderr, "sdxs-noise: write failed: %s\n", strerror(errno));
            free(buf);
            return SDXS_ERR_RUNTIME;
        }
    }
    free(buf);
    return SDXS_OK;
}
