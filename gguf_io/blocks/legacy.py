"""The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Quantizers follow ggml-quants.c's `quantize_row_*_ref` operation for operation in
float32, so their bytes equal llama.cpp's; dequantizers follow `dequantize_row_*` (and
equal gguf-py's `quants.dequantize`). Layouts, in struct order:
  Q4_0 d:f16 qs[16]        Q4_1 d:f16 m:f16 qs[16]
  Q5_0 d:f16 qh[4] qs[16]  Q5_1 d:f16 m:f16 qh[4] qs[16]
  Q8_0 d:f16 qs:i8[32]
Kernels index per-block views (`blk`, `y`) with small non-negative offsets: Numba then
drops its negative-index checks and LLVM vectorizes the inner loops (3x faster).
"""
import numpy as np
from numba import njit, prange

from .bits import F32, fp32_to_fp16, get_f16, get_u32, put_u16, put_u32, round_half_away, signed_absmax

QK = 32
FLT_MAX = F32(3.4028234663852886e38)


@njit(cache=True, inline="always")
def _min_max(xb):
    vmin = FLT_MAX
    vmax = -FLT_MAX
    for j in range(QK):
        if xb[j] < vmin:
            vmin = xb[j]
        if xb[j] > vmax:
            vmax = xb[j]
    return vmin, vmax


@njit(cache=True, inline="always")
def _inverse(d):
    return F32(1.0) / d if d != 0 else F32(0.0)


@njit(cache=True, parallel=True)
def quantize_q4_0(x, out):
    for b in prange(x.size // QK):
        xb, blk = x[b * QK:(b + 1) * QK], out[b * 18:(b + 1) * 18]
        d = signed_absmax(xb)[1] / F32(-8.0)
        inv = _inverse(d)
        put_u16(blk, 0, fp32_to_fp16(d))
        for j in range(16):
            q0 = min(15, int(xb[j] * inv + F32(8.5)))
            q1 = min(15, int(xb[16 + j] * inv + F32(8.5)))
            blk[2 + j] = np.uint8(q0 | (q1 << 4))


@njit(cache=True, parallel=True)
def dequantize_q4_0(raw, out):
    for b in prange(raw.size // 18):
        blk, y = raw[b * 18:(b + 1) * 18], out[b * QK:(b + 1) * QK]
        d = get_f16(blk, 0)
        for j in range(16):
            q = np.int32(blk[2 + j])
            y[j] = F32((q & 0xF) - 8) * d
            y[16 + j] = F32((q >> 4) - 8) * d


@njit(cache=True, parallel=True)
def quantize_q4_1(x, out):
    for b in prange(x.size // QK):
        xb, blk = x[b * QK:(b + 1) * QK], out[b * 20:(b + 1) * 20]
        vmin, vmax = _min_max(xb)
        d = (vmax - vmin) / F32(15.0)
        inv = _inverse(d)
        put_u16(blk, 0, fp32_to_fp16(d))
        put_u16(blk, 2, fp32_to_fp16(vmin))
        for j in range(16):
            q0 = min(15, int((xb[j] - vmin) * inv + F32(0.5)))
            q1 = min(15, int((xb[16 + j] - vmin) * inv + F32(0.5)))
            blk[4 + j] = np.uint8(q0 | (q1 << 4))


@njit(cache=True, parallel=True)
def dequantize_q4_1(raw, out):
    for b in prange(raw.size // 20):
        blk, y = raw[b * 20:(b + 1) * 20], out[b * QK:(b + 1) * QK]
        d = get_f16(blk, 0)
        m = get_f16(blk, 2)
        for j in range(16):
            q = np.int32(blk[4 + j])
            y[j] = F32(q & 0xF) * d + m
            y[16 + j] = F32(q >> 4) * d + m


@njit(cache=True, inline="always")
def _put_q5(blk, o, q0s, q1s):
    """Pack 2x16 five-bit values at blk[o]: the fifth bits in a 32-bit qh, then nibbles in qs."""
    qh = np.uint32(0)
    for j in range(16):
        q0, q1 = q0s[j], q1s[j]
        blk[o + 4 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
        qh |= np.uint32((q0 >> 4) & 1) << j
        qh |= np.uint32((q1 >> 4) & 1) << (j + 16)
    put_u32(blk, o, qh)


@njit(cache=True, parallel=True)
def quantize_q5_0(x, out):
    for b in prange(x.size // QK):
        xb, blk = x[b * QK:(b + 1) * QK], out[b * 22:(b + 1) * 22]
        q0s = np.empty(16, np.int32)
        q1s = np.empty(16, np.int32)
        d = signed_absmax(xb)[1] / F32(-16.0)
        inv = _inverse(d)
        put_u16(blk, 0, fp32_to_fp16(d))
        for j in range(16):
            q0s[j] = min(31, int(xb[j] * inv + F32(16.5)))
            q1s[j] = min(31, int(xb[16 + j] * inv + F32(16.5)))
        _put_q5(blk, 2, q0s, q1s)


@njit(cache=True, parallel=True)
def dequantize_q5_0(raw, out):
    for b in prange(raw.size // 22):
        blk, y = raw[b * 22:(b + 1) * 22], out[b * QK:(b + 1) * QK]
        d = get_f16(blk, 0)
        qh = get_u32(blk, 2)
        for j in range(16):
            q = np.int32(blk[6 + j])
            h0 = np.int32((qh >> j) & 1) << 4
            h1 = np.int32((qh >> (j + 16)) & 1) << 4
            y[j] = F32(((q & 0xF) | h0) - 16) * d
            y[16 + j] = F32(((q >> 4) | h1) - 16) * d


@njit(cache=True, parallel=True)
def quantize_q5_1(x, out):
    for b in prange(x.size // QK):
        xb, blk = x[b * QK:(b + 1) * QK], out[b * 24:(b + 1) * 24]
        q0s = np.empty(16, np.int32)
        q1s = np.empty(16, np.int32)
        vmin, vmax = _min_max(xb)
        d = (vmax - vmin) / F32(31.0)
        inv = _inverse(d)
        put_u16(blk, 0, fp32_to_fp16(d))
        put_u16(blk, 2, fp32_to_fp16(vmin))
        for j in range(16):
            # ggml casts to uint8_t without clamping: keep the low 8 bits as it does
            q0s[j] = int((xb[j] - vmin) * inv + F32(0.5)) & 0xFF
            q1s[j] = int((xb[16 + j] - vmin) * inv + F32(0.5)) & 0xFF
        _put_q5(blk, 4, q0s, q1s)


@njit(cache=True, parallel=True)
def dequantize_q5_1(raw, out):
    for b in prange(raw.size // 24):
        blk, y = raw[b * 24:(b + 1) * 24], out[b * QK:(b + 1) * QK]
        d = get_f16(blk, 0)
        m = get_f16(blk, 2)
        qh = get_u32(blk, 4)
        for j in range(16):
            q = np.int32(blk[8 + j])
            h0 = np.int32((qh >> j) & 1) << 4
            h1 = np.int32((qh >> (j + 16)) & 1) << 4
            y[j] = F32((q & 0xF) | h0) * d + m
            y[16 + j] = F32((q >> 4) | h1) * d + m


@njit(cache=True, parallel=True)
def quantize_q8_0(x, out):
    for b in prange(x.size // QK):
        xb, blk = x[b * QK:(b + 1) * QK], out[b * 34:(b + 1) * 34]
        amax = F32(0.0)
        for j in range(QK):
            amax = max(amax, abs(xb[j]))
        d = amax / F32(127.0)
        inv = _inverse(d)
        put_u16(blk, 0, fp32_to_fp16(d))
        for j in range(QK):
            blk[2 + j] = np.uint8(np.int32(round_half_away(xb[j] * inv)) & 0xFF)


@njit(cache=True, parallel=True)
def dequantize_q8_0(raw, out):
    for b in prange(raw.size // 34):
        blk, y = raw[b * 34:(b + 1) * 34], out[b * QK:(b + 1) * QK]
        d = get_f16(blk, 0)
        for j in range(QK):
            y[j] = F32(np.int8(blk[2 + j])) * d
