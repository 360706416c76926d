/* halfconv.h: fp16 and bf16 conversions on the host, bit-exact with the GPU's round-to-nearest-even.
 *
 * The CUDA backend converts weights on the host at load, and the CUDA emulation (emu.h) builds its
 * __half and __nv_bfloat16 on these, so both agree with what a GPU computes. C++ only.
 */
#ifndef SDXS_CUDA_HALFCONV_H
#define SDXS_CUDA_HALFCONV_H

#include <cstdint>
#include <cstring>

namespace sdxs_halfconv {

inline uint32_t float_bits(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

/* float -> IEEE half, round to nearest even; overflow gives infinity, NaN stays NaN. */
inline uint16_t f32_to_f16(float f)
{
    uint32_t x = float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
    if (x >= 0x477ff000u) /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) { /* below 2^-14: a subnormal half, or zero */
        uint32_t m = (x & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(x >> 23); /* f / 2^-24 (the half's unit) = m >> shift */
        uint32_t r, rem, half;
        if (shift > 24)
            return (uint16_t)sign;
        r = m >> shift;
        rem = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    x -= 112u << 23; /* rebias the exponent from 127 to 15 */
    return (uint16_t)(sign | ((x + 0x0fffu + ((x >> 13) & 1u)) >> 13));
}

inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f)
        return bits_float(sign | 0x7f800000u | (man << 13));
    if (exp != 0)
        return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24, exact in float */
    return bits_float(sign | float_bits((float)man * 5.9604644775390625e-8f));
}

/* float -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
inline uint16_t f32_to_bf16(float f)
{
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(uint16_t h) { return bits_float((uint32_t)h << 16); }

} /* namespace sdxs_halfconv */

#endif /* SDXS_CUDA_HALFCONV_H */
