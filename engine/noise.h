/* noise.h: the generator behind sdxs_randn (declared in sdxs.h), which reproduces
 * torch.randn(count, generator=torch.Generator("cpu").manual_seed(seed)) for float32.
 *
 * Only the Mersenne Twister is exposed here, for the unit test; how its draws become normal
 * samples is described in noise.c.
 */
#ifndef SDXS_NOISE_H
#define SDXS_NOISE_H

#include <stdint.h>

#define SDXS_MT_STATE 624 /* 32-bit words of MT19937 state */

typedef struct sdxs_mt19937 {
    uint32_t state[SDXS_MT_STATE];
    int next; /* index of the next word to temper; SDXS_MT_STATE means "regenerate first" */
} sdxs_mt19937;

/* Seeds as torch's CPU generator does: only the low 32 bits of the seed reach the state, so
 * seeds that differ by a multiple of 2^32 give the same stream (torch behaves the same way). */
void sdxs_noise_mt_seed(sdxs_mt19937 *mt, uint64_t seed);
/* The next 32-bit output of the standard MT19937 sequence. */
uint32_t sdxs_noise_mt_next(sdxs_mt19937 *mt);

#endif /* SDXS_NOISE_H */
