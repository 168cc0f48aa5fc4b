"""The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Quantizers follow ggml-quants.c's `quantize_row_*_ref` operation for operation in
float32, so their bytes equal llama.cpp's; dequantizers follow `dequantize_row_*` (and
equal gguf-py's `quants.dequantize`). Layouts, in struct order:
  Q4_0 d:f16 qs[16]        Q4_1 d:f16 m:f16 qs[16]
  Q5_0 d:f16 qh[4] qs[16]  Q5_1 d:f16 m:f16 qh[4] qs[16]
  Q8_0 d:f16 qs:i8[32]
"""
import math

import numpy as np
from numba import njit, prange

from .bits import F32, fp32_to_fp16, fp16_to_fp32, get_f16, put_u16

QK = 32
FLT_MAX = F32(3.4028234663852886e38)


@njit(cache=True, inline="always")
def _signed_absmax(x, base):
    """The element of largest magnitude (the first one on ties), sign kept."""
    amax = F32(0.0)
    vmax = F32(0.0)
    for j in range(QK):
        v = x[base + j]
        if amax < abs(v):
            amax = abs(v)
            vmax = v
    return vmax


@njit(cache=True, inline="always")
def _min_max(x, base):
    vmin = FLT_MAX
    vmax = -FLT_MAX
    for j in range(QK):
        v = x[base + j]
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
    return vmin, vmax


@njit(cache=True, inline="always")
def _inverse(d):
    return F32(1.0) / d if d != 0 else F32(0.0)


@njit(cache=True, parallel=True)
def quantize_q4_0(x, out):
    for b in prange(x.size // QK):
        base, o = b * QK, b * 18
        d = _signed_absmax(x, base) / F32(-8.0)
        inv = _inverse(d)
        put_u16(out, o, fp32_to_fp16(d))
        for j in range(16):
            q0 = min(15, int(x[base + j] * inv + F32(8.5)))
            q1 = min(15, int(x[base + 16 + j] * inv + F32(8.5)))
            out[o + 2 + j] = np.uint8(q0 | (q1 << 4))


@njit(cache=True, parallel=True)
def dequantize_q4_0(raw, out):
    for b in prange(raw.size // 18):
        o, base = b * 18, b * QK
        d = get_f16(raw, o)
        for j in range(16):
            q = raw[o + 2 + j]
            out[base + j] = F32(np.int32(q & 0xF) - 8) * d
            out[base + 16 + j] = F32(np.int32(q >> 4) - 8) * d


@njit(cache=True, parallel=True)
def quantize_q4_1(x, out):
    for b in prange(x.size // QK):
        base, o = b * QK, b * 20
        vmin, vmax = _min_max(x, base)
        d = (vmax - vmin) / F32(15.0)
        inv = _inverse(d)
        put_u16(out, o, fp32_to_fp16(d))
        put_u16(out, o + 2, fp32_to_fp16(vmin))
        for j in range(16):
            q0 = min(15, int((x[base + j] - vmin) * inv + F32(0.5)))
            q1 = min(15, int((x[base + 16 + j] - vmin) * inv + F32(0.5)))
            out[o + 4 + j] = np.uint8(q0 | (q1 << 4))


@njit(cache=True, parallel=True)
def dequantize_q4_1(raw, out):
    for b in prange(raw.size // 20):
        o, base = b * 20, b * QK
        d = get_f16(raw, o)
        m = get_f16(raw, o + 2)
        for j in range(16):
            q = raw[o + 4 + j]
            out[base + j] = F32(q & 0xF) * d + m
            out[base + 16 + j] = F32(q >> 4) * d + m


@njit(cache=True, inline="always")
def _put_q5(out, o, q0s, q1s):
    """Pack 2x16 five-bit values: low nibbles in qs, fifth bits in the 32-bit qh."""
    qh = np.uint32(0)
    for j in range(16):
        q0, q1 = q0s[j], q1s[j]
        out[o + 4 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
        qh |= np.uint32((q0 >> 4) & 1) << j
        qh |= np.uint32((q1 >> 4) & 1) << (j + 16)
    for k in range(4):
        out[o + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(cache=True, inline="always")
def _get_qh(raw, o):
    return (np.uint32(raw[o]) | (np.uint32(raw[o + 1]) << 8)
            | (np.uint32(raw[o + 2]) << 16) | (np.uint32(raw[o + 3]) << 24))


@njit(cache=True, parallel=True)
def quantize_q5_0(x, out):
    for b in prange(x.size // QK):
        base, o = b * QK, b * 22
        q0s = np.empty(16, np.int32)
        q1s = np.empty(16, np.int32)
        d = _signed_absmax(x, base) / F32(-16.0)
        inv = _inverse(d)
        put_u16(out, o, fp32_to_fp16(d))
        for j in range(16):
            q0s[j] = min(31, int(x[base + j] * inv + F32(16.5)))
            q1s[j] = min(31, int(x[base + 16 + j] * inv + F32(16.5)))
        _put_q5(out, o + 2, q0s, q1s)


@njit(cache=True, parallel=True)
def dequantize_q5_0(raw, out):
    for b in prange(raw.size // 22):
        o, base = b * 22, b * QK
        d = get_f16(raw, o)
        qh = _get_qh(raw, o + 2)
        for j in range(16):
            q = raw[o + 6 + j]
            h0 = np.int32((qh >> j) & 1) << 4
            h1 = np.int32((qh >> (j + 16)) & 1) << 4
            out[base + j] = F32((np.int32(q & 0xF) | h0) - 16) * d
            out[base + 16 + j] = F32((np.int32(q >> 4) | h1) - 16) * d


@njit(cache=True, parallel=True)
def quantize_q5_1(x, out):
    for b in prange(x.size // QK):
        base, o = b * QK, b * 24
        q0s = np.empty(16, np.int32)
        q1s = np.empty(16, np.int32)
        vmin, vmax = _min_max(x, base)
        d = (vmax - vmin) / F32(31.0)
        inv = _inverse(d)
        put_u16(out, o, fp32_to_fp16(d))
        put_u16(out, o + 2, fp32_to_fp16(vmin))
        for j in range(16):
            # ggml casts to uint8_t without clamping: keep the low 8 bits as it does
            q0s[j] = int((x[base + j] - vmin) * inv + F32(0.5)) & 0xFF
            q1s[j] = int((x[base + 16 + j] - vmin) * inv + F32(0.5)) & 0xFF
        _put_q5(out, o + 4, q0s, q1s)


@njit(cache=True, parallel=True)
def dequantize_q5_1(raw, out):
    for b in prange(raw.size // 24):
        o, base = b * 24, b * QK
        d = get_f16(raw, o)
        m = get_f16(raw, o + 2)
        qh = _get_qh(raw, o + 4)
        for j in range(16):
            q = raw[o + 8 + j]
            h0 = np.int32((qh >> j) & 1) << 4
            h1 = np.int32((qh >> (j + 16)) & 1) << 4
            out[base + j] = F32(np.int32(q & 0xF) | h0) * d + m
            out[base + 16 + j] = F32(np.int32(q >> 4) | h1) * d + m


@njit(cache=True, inline="always")
def round_half_away(v):
    """C's roundf: halves away from zero (exact: a float32 plus 0.5 fits a float64)."""
    r = math.floor(abs(np.float64(v)) + 0.5)
    return -r if v < 0 else r


@njit(cache=True, parallel=True)
def quantize_q8_0(x, out):
    for b in prange(x.size // QK):
        base, o = b * QK, b * 34
        amax = F32(0.0)
        for j in range(QK):
            amax = max(amax, abs(x[base + j]))
        d = amax / F32(127.0)
        inv = _inverse(d)
        put_u16(out, o, fp32_to_fp16(d))
        for j in range(QK):
            out[o + 2 + j] = np.uint8(np.int32(round_half_away(x[base + j] * inv)) & 0xFF)


@njit(cache=True, parallel=True)
def dequantize_q8_0(raw, out):
    for b in prange(raw.size // 34):
        o, base = b * 34, b * QK
        d = get_f16(raw, o)
        for j in range(QK):
            out[base + j] = F32(np.int8(raw[o + 2 + j])) * d
