"""The 4-bit float formats MXFP4 (OCP microscaling: 32 e2m1 values and one power-of-two scale) and
NVFP4 (64 values in four 16-groups, each with an unsigned e4m3 scale).

e2m1 values are kept doubled as small integers (KVALUES_FP4), so both scales carry a factor 0.5, as in
ggml (ggml_e8m0_to_fp32_half, ggml_ue4m3_to_fp32). Layouts, in struct order:
  MXFP4 e:u8 qs[16]          (17 bytes): element j in qs[j] & 15, element j + 16 in qs[j] >> 4
  NVFP4 d:u8[4] qs[32]       (36 bytes): group g's elements j and j + 8 in qs[8g + j]'s low and high nibbles
The quantizers port quantize_row_mxfp4_ref / nvfp4_ref (an importance matrix is not used by llama.cpp
either): a scale from the group's amax, then each value's nearest code (the first of equals).
"""
import numpy as np
from numba import njit, prange

from .bits import F32, bits_to_f32, f32_to_bits, signed_absmax

KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
MXFP4_BYTES, NVFP4_BYTES = 17, 36


@njit(cache=True, inline="always")
def e8m0_to_fp32_half(e):
    """Half of 2^(e - 127): e - 1 in the exponent, or a subnormal for e < 2."""
    e = np.uint32(e)
    return bits_to_f32(np.uint32(0x00200000) << e if e < 2 else (e - np.uint32(1)) << np.uint32(23))


@njit(cache=True, inline="always")
def ue4m3_to_fp32_half(x):
    """Half of an unsigned e4m3 float (bias 7; 0x7F, its NaN, reads as 0)."""
    x = np.int32(x)
    exponent, mantissa = (x >> 3) & 15, x & 7
    if x == 0 or x == 0x7F:
        return F32(0.0)
    if exponent == 0:
        return F32(mantissa) * F32(2.0 ** -10)
    return (F32(1.0) + F32(mantissa) / F32(8.0)) * F32(2.0) ** F32(exponent - 8)


@njit(cache=True, parallel=True)
def dequantize_mxfp4(raw, out):
    for b in prange(raw.size // MXFP4_BYTES):
        blk, y = raw[b * MXFP4_BYTES:(b + 1) * MXFP4_BYTES], out[b * 32:(b + 1) * 32]
        d = e8m0_to_fp32_half(blk[0])
        for j in range(16):
            y[j] = d * F32(KVALUES_FP4[blk[1 + j] & 15])
            y[j + 16] = d * F32(KVALUES_FP4[blk[1 + j] >> 4])


@njit(cache=True, parallel=True)
def dequantize_nvfp4(raw, out):
    for b in prange(raw.size // NVFP4_BYTES):
        blk, y = raw[b * NVFP4_BYTES:(b + 1) * NVFP4_BYTES], out[b * 64:(b + 1) * 64]
        for g in range(4):
            d = ue4m3_to_fp32_half(blk[g])
            for j in range(8):
                q = blk[4 + 8 * g + j]
                y[16 * g + j] = d * F32(KVALUES_FP4[q & 15])
                y[16 * g + 8 + j] = d * F32(KVALUES_FP4[q >> 4])


@njit(cache=True, inline="always")
def _best_code(x, d):
    """ggml's best_index_mxfp4: the code whose value times d is nearest x, the first on ties."""
    best, best_error = 0, abs(F32(KVALUES_FP4[0]) * d - x)
    for i in range(1, 16):
        error = abs(F32(KVALUES_FP4[i]) * d - x)
        if error < best_error:
            best, best_error = i, error
    return best


@njit(cache=True, parallel=True)
def quantize_mxfp4(x, out):
    for b in prange(x.size // 32):
        xb, blk = x[b * 32:(b + 1) * 32], out[b * MXFP4_BYTES:(b + 1) * MXFP4_BYTES]
        amax = signed_absmax(xb)[0]
        e = (np.int32(np.floor(np.log2(amax))) - 2 + 127) & 255 if amax > 0 else 0
        d = e8m0_to_fp32_half(e)
        blk[0] = np.uint8(e)
        for j in range(16):
            blk[1 + j] = np.uint8(_best_code(xb[j], d) | (_best_code(xb[16 + j], d) << 4))


@njit(cache=True, inline="always")
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3: round to nearest (ties up) on the top mantissa bits; 0x7E past the top."""
    if not x > 0:
        return 0
    x = min(x, F32(448.0))
    bits = np.int32(f32_to_bits(x))
    exponent = ((bits >> 23) & 255) - 127 + 7
    if exponent <= 0:
        mantissa = np.int32(x * F32(512.0) + F32(0.5))
        return min(mantissa, 7) if mantissa >= 1 else 0
    if exponent >= 15:
        return 0x7E
    mantissa = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    if mantissa > 7:
        mantissa = 0
        exponent += 1
        if exponent >= 15:
            return 0x7E
    return (exponent << 3) | mantissa


@njit(cache=True, parallel=True)
def quantize_nvfp4(x, out):
    for b in prange(x.size // 64):
        blk = out[b * NVFP4_BYTES:(b + 1) * NVFP4_BYTES]
        for g in range(4):
            xb = x[b * 64 + 16 * g:b * 64 + 16 * g + 16]
            scale = fp32_to_ue4m3(signed_absmax(xb)[0] / F32(6.0))
            blk[g] = np.uint8(scale)
            d = ue4m3_to_fp32_half(scale)
            for j in range(8):
                blk[4 + 8 * g + j] = np.uint8(_best_code(xb[j], d) | (_best_code(xb[8 + j], d) << 4))
