"""The non-linear 4-bit formats IQ4_NL (32-element blocks) and IQ4_XS (256-element super-blocks).

Quantizers port ggml-quants.c's `quantize_row_iq4_nl_impl` as llama-quantize calls it, without an
importance matrix (weights x^2) and with one (weights qw * sqrt(sigma2 + x^2)); ntry 7. Layouts, in struct order:
  IQ4_NL d:f16 qs[16]                                  (18 bytes)
  IQ4_XS d:f16 scales_h:u16 scales_l[4] qs[128]        (136)
"""
import numpy as np
from numba import njit, prange

from .bits import F32, fp32_to_fp16, get_f16, get_u16, nearest_int, put_u16, signed_absmax
from .weighted import importance_weights, sum_squares

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)
GROUP_MAX_EPS = F32(1e-15)
NTRY = 7
CHUNK = 64


@njit(cache=True, inline="always")
def best_index_iq4(x):
    """Index of the codebook value nearest x (the upper one at a midpoint), as ggml's best_index_int8."""
    values = KVALUES_IQ4NL
    x2 = x + x
    idx = 0
    step = 8
    while step > 0:
        j = idx + step
        if x2 >= F32(np.int32(values[j - 1]) + np.int32(values[j])):
            idx = j
        step >>= 1
    return idx


@njit(cache=True)
def _fit_block_scale(xb, L, w):
    """Best scale for one 32-element block against the codebook, weights w; levels into L."""
    values = KVALUES_IQ4NL
    amax, vmax = signed_absmax(xb[:32])
    if amax < GROUP_MAX_EPS:
        return F32(0.0)
    d = -vmax / F32(values[0])
    inv = F32(1.0) / d
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for j in range(32):
        l = best_index_iq4(inv * xb[j])
        L[j] = l
        q = F32(values[l])
        sumqx += w[j] * q * xb[j]
        sumq2 += w[j] * q * q
    d = sumqx / sumq2 if sumq2 > 0 else F32(0.0)
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        inv = F32(itry + np.int32(values[0])) / vmax
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for j in range(32):
            q = F32(values[best_index_iq4(inv * xb[j])])
            sumqx += w[j] * q * xb[j]
            sumq2 += w[j] * q * q
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True, inline="always")
def _pack_nibbles(L, out, o, n):
    for i in range(n // 32):
        for j in range(16):
            out[o + 16 * i + j] = np.uint8(L[32 * i + j] | (L[32 * i + 16 + j] << 4))


@njit(cache=True, inline="always")
def _weights(xs, qw, weighted, w):
    """x^2 without an importance matrix; with one (qw: this super-block's columns) qw * sqrt(sigma2 + x^2),
    sigma2 = 2 * mean x^2 over the super-block, as quantize_row_iq4_nl_impl."""
    if not weighted:
        for j in range(xs.size):
            w[j] = xs[j] * xs[j]
        return
    importance_weights(xs, qw, sum_squares(xs) * (F32(2.0) / F32(xs.size)), w)


@njit(cache=True, parallel=True)
def _quantize_iq4_nl(x, out, qw, weighted):
    nb = x.size // 32
    per_row = qw.size // 32
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(32, np.int32)
        w = np.empty(32, np.float32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * 32:(b + 1) * 32]
            o = b * 18
            _weights(xb, qw[32 * (b % per_row):32 * (b % per_row) + 32], weighted, w)
            scale = _fit_block_scale(xb, L, w)
            put_u16(out, o, fp32_to_fp16(scale))
            inv = F32(1.0) / scale if scale != 0 else F32(0.0)
            for j in range(32):
                L[j] = best_index_iq4(inv * xb[j])
            _pack_nibbles(L, out, o + 2, 32)


@njit(cache=True, parallel=True)
def _quantize_iq4_xs(x, out, qw, weighted):
    nb = x.size // 256
    per_row = qw.size // 256
    for c in prange((nb + CHUNK - 1) // CHUNK):
        L = np.empty(256, np.int32)
        w = np.empty(256, np.float32)
        scales = np.empty(8, np.float32)
        for b in range(c * CHUNK, min(nb, (c + 1) * CHUNK)):
            xb = x[b * 256:(b + 1) * 256]
            o = b * 136
            _weights(xb, qw[256 * (b % per_row):256 * (b % per_row) + 256], weighted, w)
            max_scale = F32(0.0)
            amax_scale = F32(0.0)
            for ib in range(8):
                scales[ib] = _fit_block_scale(xb[32 * ib:32 * ib + 32], L[32 * ib:32 * ib + 32], w[32 * ib:32 * ib + 32])
                if abs(scales[ib]) > amax_scale:
                    amax_scale = abs(scales[ib])
                    max_scale = scales[ib]
            d = -max_scale / F32(32.0)
            put_u16(out, o, fp32_to_fp16(d))
            inv = F32(1.0) / d if d != 0 else F32(0.0)
            scales_h = 0
            for k in range(4):
                out[o + 4 + k] = 0
            for ib in range(8):
                l = max(-32, min(31, nearest_int(inv * scales[ib])))
                dl = d * F32(l)
                idl = F32(1.0) / dl if dl != 0 else F32(0.0)
                for j in range(32):
                    L[32 * ib + j] = best_index_iq4(idl * xb[32 * ib + j])
                l += 32
                out[o + 4 + ib // 2] |= np.uint8((l & 0xF) << (4 * (ib % 2)))
                scales_h |= (l >> 4) << (2 * ib)
            put_u16(out, o + 2, scales_h)
            _pack_nibbles(L, out, o + 8, 256)


_NO_WEIGHTS = np.ones(256, np.float32)


def quantize_iq4_nl(x, out):
    _quantize_iq4_nl(x, out, _NO_WEIGHTS, False)


def quantize_iq4_nl_weighted(x, out, weights):
    _quantize_iq4_nl(x, out, weights, True)


def quantize_iq4_xs(x, out):
    _quantize_iq4_xs(x, out, _NO_WEIGHTS, False)


def quantize_iq4_xs_weighted(x, out, weights):
    _quantize_iq4_xs(x, out, weights, True)


@njit(cache=True, parallel=True)
def dequantize_iq4_nl(raw, out):
    values = KVALUES_IQ4NL
    for b in prange(raw.size // 18):
        blk, y = raw[b * 18:(b + 1) * 18], out[b * 32:(b + 1) * 32]
        d = get_f16(blk, 0)
        for j in range(16):
            q = np.int32(blk[2 + j])
            y[j] = d * F32(values[q & 0xF])
            y[16 + j] = d * F32(values[q >> 4])


@njit(cache=True, parallel=True)
def dequantize_iq4_xs(raw, out):
    values = KVALUES_IQ4NL
    for b in prange(raw.size // 136):
        blk, y = raw[b * 136:(b + 1) * 136], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        scales_h = np.int32(get_u16(blk, 2))
        for ib in range(8):
            ls = ((np.int32(blk[4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4)
            dl = d * F32(ls - 32)
            q = blk[8 + 16 * ib:24 + 16 * ib]
            ys = y[32 * ib:32 * ib + 32]
            for j in range(16):
                ys[j] = dl * F32(values[np.int32(q[j]) & 0xF])
                ys[16 + j] = dl * F32(values[np.int32(q[j]) >> 4])
