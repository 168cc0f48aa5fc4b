"""The ternary formats TQ1_0 and TQ2_0 (256-element super-blocks, weights in {-1, 0, 1} times one scale).

Layouts, in struct order:
  TQ1_0 qs[48] qh[4] d:f16   (54 bytes): five trits per byte of qs, four per byte of qh, each byte the
                              fixed-point fraction ceil(t * 256 / 243) of the base-3 number t; trit n of a
                              byte q is ((q * 3^n mod 256) * 3) >> 8
  TQ2_0 qs[64] d:f16         (66 bytes): 2-bit codes t + 1, four per byte
Element order is ggml's (dequantize_row_tq1_0 / tq2_0), which gguf-py's dequantizers follow. The
quantizers port quantize_row_tq1_0_ref / tq2_0_ref (llama-quantize ignores an importance matrix for them):
d = amax, trits lroundf(x / d) + 1.
"""
import numpy as np
from numba import njit, prange

from .bits import F32, fp32_to_fp16, get_f16, put_u16, round_half_away, signed_absmax

TQ1_BYTES, TQ2_BYTES = 54, 66


@njit(cache=True, inline="always")
def tq1_trit(q, n):
    """Trit n (0 = most significant) of a TQ1_0 byte, 0..2."""
    power = np.uint8(1)
    for _ in range(n):
        power = np.uint8(power * np.uint8(3))
    return (np.int32(np.uint8(np.uint8(q) * power)) * 3) >> 8


@njit(cache=True, inline="always")
def tq1_codes(blk, codes):
    """The 256 codes (trit values 0..2) of one TQ1_0 block in element order."""
    for n in range(5):
        for m in range(32):
            codes[32 * n + m] = tq1_trit(blk[m], n)
        for m in range(16):
            codes[160 + 16 * n + m] = tq1_trit(blk[32 + m], n)
    for n in range(4):
        for j in range(4):
            codes[240 + 4 * n + j] = tq1_trit(blk[48 + j], n)


@njit(cache=True, inline="always")
def tq2_code(blk, e):
    """The code (0..2; 3 unused) of element e of a TQ2_0 block."""
    c, rest = e // 128, e % 128
    return (np.int32(blk[32 * c + rest % 32]) >> (2 * (rest // 32))) & 3


@njit(cache=True, parallel=True)
def dequantize_tq1_0(raw, out):
    for b in prange(raw.size // TQ1_BYTES):
        blk, y = raw[b * TQ1_BYTES:(b + 1) * TQ1_BYTES], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 52)
        codes = np.empty(256, np.int32)
        tq1_codes(blk, codes)
        for e in range(256):
            y[e] = F32(codes[e] - 1) * d


@njit(cache=True, parallel=True)
def dequantize_tq2_0(raw, out):
    for b in prange(raw.size // TQ2_BYTES):
        blk, y = raw[b * TQ2_BYTES:(b + 1) * TQ2_BYTES], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 64)
        for e in range(256):
            y[e] = F32(tq2_code(blk, e) - 1) * d


@njit(cache=True, inline="always")
def _trit_of(v):
    """lroundf(x / d): -1, 0 or 1."""
    return np.int32(round_half_away(v))


@njit(cache=True, inline="always")
def _ternary_scale(x):
    amax = signed_absmax(x)[0]
    return amax, (F32(1.0) / amax if amax != 0 else F32(0.0))


@njit(cache=True, inline="always")
def _trit_byte(x, first, step, count, inverse):
    """count trits x[first + n * step] (most significant first), then zero trits to five, as ceil(t * 256 / 243)."""
    q = np.int32(0)
    for n in range(5):
        q = (q * 3 + (_trit_of(x[first + n * step] * inverse) + 1 if n < count else 0)) & 255
    return np.uint8((q * 256 + 242) // 243)


@njit(cache=True, parallel=True)
def quantize_tq1_0(x, out):
    for b in prange(x.size // 256):
        xb, blk = x[b * 256:(b + 1) * 256], out[b * TQ1_BYTES:(b + 1) * TQ1_BYTES]
        d, inverse = _ternary_scale(xb)
        for m in range(32):
            blk[m] = _trit_byte(xb, m, 32, 5, inverse)
        for m in range(16):
            blk[32 + m] = _trit_byte(xb, 160 + m, 16, 5, inverse)
        for j in range(4):
            blk[48 + j] = _trit_byte(xb, 240 + j, 4, 4, inverse)
        put_u16(blk, 52, fp32_to_fp16(d))


@njit(cache=True, parallel=True)
def quantize_tq2_0(x, out):
    for b in prange(x.size // 256):
        xb, blk = x[b * 256:(b + 1) * 256], out[b * TQ2_BYTES:(b + 1) * TQ2_BYTES]
        d, inverse = _ternary_scale(xb)
        for c in range(2):
            for m in range(32):
                q = np.int32(0)
                for n in range(4):
                    q += ((_trit_of(xb[128 * c + 32 * n + m] * inverse) + 1) & 3) << (2 * n)
                blk[32 * c + m] = np.uint8(q)
        put_u16(blk, 64, fp32_to_fp16(d))
