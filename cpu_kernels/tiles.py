"""16-row tiles: the weight layout of the integer kernels (vnni.py), the activation quantizer that
pairs with it, and the matvec/matmul drivers.

A tile record holds 16 rows' codes for one block (or one 256-element super-block) and then their
scales; vnni.py describes the byte order. Every quantized type has one tile format: Q4_0, Q4_1,
Q8_0 and Q4_K keep their own codes and scales (same bytes per weight as the GGUF file); the
others go through repack.py's Q8_16 / Q8_16M first. Rows are padded to a multiple of 16 with
zero rows (the drivers never store them).

Used only where the CPU has AVX-512 VNNI (`HAVE_VNNI`); elsewhere weights.py keeps the float
kernels of matvec.py.
"""
from dataclasses import dataclass
from typing import Callable

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange

from .bits import bits_to_f32, fp16_to_fp32
from .vnni import LANES, TileFormat, make_tile_dot

HAVE_VNNI = all(llvm.get_host_cpu_features().get(feature, False) for feature in ("avx512f", "avx512bw", "avx512vnni"))
Q15_MAX = 16383                  # activation integers: |q| <= 2**14 - 1, split into two signed bytes

T4_0 = TileFormat("q4_0", 4, 8, "f16")
T4_1 = TileFormat("q4_1", 4, 0, "f16", "f16", +1)
T8_0 = TileFormat("q8_0", 8, 128, "f16")
T4_K = TileFormat("q4_k", 4, 0, "k", "k", -1, record_blocks=8)
T8_16 = TileFormat("q8_16", 8, 128, "f32x2")
T8_16M = TileFormat("q8_16m", 8, 0, "f32x2", "f32x2", -1)

_dot_q4_0, _dot_q4_1, _dot_q8_0, _dot_q4_k, _dot_q8_16, _dot_q8_16m = (
    make_tile_dot(f) for f in (T4_0, T4_1, T8_0, T4_K, T8_16, T8_16M))


# ---------------------------------------------------------------- activations

@njit(cache=True, inline="always")
def _quantize_row(x, xq, xd, xs):
    """x (cols,) -> 15-bit integers per 32-block: xq (nb, 2, 32) hi/lo bytes, xd (nb,) scales, xs (nb, 2) sums."""
    for b in range(xd.size):
        block = x[32 * b:32 * b + 32]
        amax = np.float32(0.0)
        for e in range(32):
            amax = max(amax, abs(block[e]))
        inverse = np.float32(Q15_MAX) / amax if amax > 0 else np.float32(0.0)
        xd[b] = amax / np.float32(Q15_MAX)
        for half in range(2):
            total = np.int32(0)
            for e in range(16 * half, 16 * half + 16):
                q = np.int32(np.rint(block[e] * inverse))
                xq[b, 0, e] = np.int8(q >> 7)
                xq[b, 1, e] = np.int8(q & 127)
                total += q
            xs[b, half] = total


@njit(cache=True)
def quantize_one(x, xq, xd, xs):
    _quantize_row(x, xq[0], xd[0], xs[0])


@njit(cache=True, parallel=True)
def quantize_many(xs_in, xq, xd, xs):
    for i in prange(xs_in.shape[0]):
        _quantize_row(xs_in[i], xq[i], xd[i], xs[i])


class QuantizedX:
    """Activation rows in the integer kernels' form; made once per vector and shared by every
    weight of the same width (q, k, v; gate, up)."""
    __slots__ = ("xq", "xd", "xs", "size", "n")

    def __init__(self, xs_in):
        xs_in = np.ascontiguousarray(xs_in, dtype=np.float32)
        if xs_in.ndim == 1:
            xs_in = xs_in[None, :]
        self.n, self.size = xs_in.shape
        nb = self.size // 32
        self.xq = np.empty((self.n, nb, 2, 32), np.int8)
        self.xd = np.empty((self.n, nb), np.float32)
        self.xs = np.empty((self.n, nb, 2), np.int32)
        self.refill(xs_in)

    def refill(self, xs_in):
        xs_in = np.ascontiguousarray(xs_in, dtype=np.float32)
        if xs_in.ndim == 1:
            quantize_one(xs_in, self.xq, self.xd, self.xs)
        else:
            quantize_many(xs_in, self.xq, self.xd, self.xs)

    def dequantize(self):
        """The activations the kernels multiply, as float32 (n, size): what tests compare against."""
        q = self.xq[:, :, 0].astype(np.float32) * 128 + self.xq[:, :, 1]
        return (q * self.xd[:, :, None]).reshape(self.n, self.size)


# ---------------------------------------------------------------- drivers: out (n, rows) = x rows @ W.T

@njit(cache=True, inline="always")
def _tile_bounds(W, out, t):
    return t * W.shape[1] * W.shape[2], min(LANES, out.shape[1] - LANES * t)


@njit(cache=True, parallel=True)
def matmul_q4_0(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q4_0(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


@njit(cache=True, parallel=True)
def matmul_q4_1(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q4_1(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


@njit(cache=True, parallel=True)
def matmul_q8_0(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q8_0(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


@njit(cache=True, parallel=True)
def matmul_q4_k(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q4_k(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


@njit(cache=True, parallel=True)
def matmul_q8_16(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q8_16(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


@njit(cache=True, parallel=True)
def matmul_q8_16m(W, xq, xd, xs, out):
    for t in prange(W.shape[0]):
        at, valid = _tile_bounds(W, out, t)
        for i in range(out.shape[0]):
            _dot_q8_16m(W, at, xq, xd, xs, i, xd.shape[1], out, i * out.shape[1] + LANES * t, valid)


# ---------------------------------------------------------------- packing GGUF (or Q8_16) blocks into tiles

@njit(cache=True, inline="always")
def _put_codes(record, at, code_bits, row, codes):
    """32 stored codes (uint8) of one row's block into the vector layout starting at record[at]."""
    if code_bits == 4:
        for k in range(4):
            for t in range(4):
                record[at + 64 * k + 4 * row + t] = codes[4 * k + t] | (codes[16 + 4 * k + t] << 4)
    else:
        for k in range(8):
            for t in range(4):
                record[at + 64 * k + 4 * row + t] = codes[4 * k + t]


@njit(cache=True, inline="always")
def _copy(record, at, block, start, n):
    for k in range(n):
        record[at + k] = block[start + k]


@njit(cache=True, parallel=True)
def _tile_q4(src, dst, with_min):
    """Q4_0 (18-byte blocks) or Q4_1 (20-byte blocks, with_min) rows (rows, nb, bytes) -> tiles."""
    rows, nb = src.shape[0], src.shape[1]
    qs_at = 4 if with_min else 2
    for t in prange(dst.shape[0]):
        codes = np.empty(32, np.uint8)
        for r in range(min(LANES, rows - LANES * t)):
            for b in range(nb):
                block, record = src[LANES * t + r, b], dst[t, b]
                for j in range(16):
                    codes[j] = block[qs_at + j] & 15
                    codes[16 + j] = block[qs_at + j] >> 4
                _put_codes(record, 0, 4, r, codes)
                _copy(record, 256 + 2 * r, block, 0, 2)
                if with_min:
                    _copy(record, 288 + 2 * r, block, 2, 2)


@njit(cache=True, parallel=True)
def _tile_q8(src, dst, scale_bytes, with_min):
    """Q8_0 (34-byte blocks), Q8_16 (40) or Q8_16M (48, with_min) rows -> tiles; signed codes biased by 128."""
    rows, nb = src.shape[0], src.shape[1]
    codes_at = src.shape[2] - 32
    bias = 0 if with_min else 128
    for t in prange(dst.shape[0]):
        codes = np.empty(32, np.uint8)
        for r in range(min(LANES, rows - LANES * t)):
            for b in range(nb):
                block, record = src[LANES * t + r, b], dst[t, b]
                for j in range(32):
                    codes[j] = np.uint8((np.int32(block[codes_at + j]) + bias) & 255)
                _put_codes(record, 0, 8, r, codes)
                if scale_bytes == 2:
                    _copy(record, 512 + 2 * r, block, 0, 2)
                else:
                    for half in range(2):
                        _copy(record, 512 + 64 * half + 4 * r, block, 4 * half, 4)
                        if with_min:
                            _copy(record, 640 + 64 * half + 4 * r, block, 8 + 4 * half, 4)


@njit(cache=True, parallel=True)
def _tile_q4_k(src, dst):
    """Q4_K (144-byte super-blocks: d, dmin, 12 bytes of 6-bit scales/mins, 128 of nibbles) -> tiles."""
    rows, nb = src.shape[0], src.shape[1]
    for t in prange(dst.shape[0]):
        codes = np.empty(32, np.uint8)
        for r in range(min(LANES, rows - LANES * t)):
            for b in range(nb):
                block, record = src[LANES * t + r, b], dst[t, b]
                q = block[4:16]
                for j in range(8):
                    if j < 4:
                        sc, m = q[j] & 63, q[j + 4] & 63
                    else:
                        sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4)
                        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4)
                    record[2048 + 16 * j + r] = sc
                    record[2176 + 16 * j + r] = m
                    shift = 4 * (j & 1)
                    for e in range(32):
                        codes[e] = (block[16 + 32 * (j >> 1) + e] >> shift) & 15
                    _put_codes(record, 256 * j, 4, r, codes)
                _copy(record, 2304 + 2 * r, block, 0, 2)
                _copy(record, 2336 + 2 * r, block, 2, 2)


def _new_tiles(fmt, rows, n_records):
    return np.zeros((-(-rows // LANES), n_records, fmt.record_bytes), np.uint8)


def tile_q4_0(raw, rows, cols):
    dst = _new_tiles(T4_0, rows, cols // 32)
    _tile_q4(raw.reshape(rows, cols // 32, 18), dst, False)
    return dst


def tile_q4_1(raw, rows, cols):
    dst = _new_tiles(T4_1, rows, cols // 32)
    _tile_q4(raw.reshape(rows, cols // 32, 20), dst, True)
    return dst


def tile_q8_0(raw, rows, cols):
    dst = _new_tiles(T8_0, rows, cols // 32)
    _tile_q8(raw.reshape(rows, cols // 32, 34), dst, 2, False)
    return dst


def tile_q4_k(raw, rows, cols):
    dst = _new_tiles(T4_K, rows, cols // 256)
    _tile_q4_k(raw.reshape(rows, cols // 256, 144), dst)
    return dst


def tile_q8_16(repacked, rows, cols):
    dst = _new_tiles(T8_16, rows, cols // 32)
    _tile_q8(repacked.reshape(rows, cols // 32, 40), dst, 4, False)
    return dst


def tile_q8_16m(repacked, rows, cols):
    dst = _new_tiles(T8_16M, rows, cols // 32)
    _tile_q8(repacked.reshape(rows, cols // 32, 48), dst, 4, True)
    return dst


@dataclass(frozen=True)
class TiledKernel:
    """A tile format with its packer (bytes, rows, cols) -> tiles and its matmul (W, xq, xd, xs, out)."""
    format: TileFormat
    pack: Callable
    matmul: Callable


TILED_Q4_0 = TiledKernel(T4_0, tile_q4_0, matmul_q4_0)
TILED_Q4_1 = TiledKernel(T4_1, tile_q4_1, matmul_q4_1)
TILED_Q8_0 = TiledKernel(T8_0, tile_q8_0, matmul_q8_0)
TILED_Q4_K = TiledKernel(T4_K, tile_q4_k, matmul_q4_k)
TILED_Q8_16 = TiledKernel(T8_16, tile_q8_16, matmul_q8_16)
TILED_Q8_16M = TiledKernel(T8_16M, tile_q8_16m, matmul_q8_16m)


# ---------------------------------------------------------------- back to float32 (tests, dequantize())

_KINDS = {None: 0, "f16": 1, "f32x2": 2, "k": 3}


@njit(cache=True, inline="always")
def _half_at(record, at):
    return fp16_to_fp32(np.int32(record[at]) | (np.int32(record[at + 1]) << 8))


@njit(cache=True, inline="always")
def _field(record, kind, at, record_at, j, half, row):
    if kind == 1:
        return _half_at(record, at + 32 * j + 2 * row)
    if kind == 2:
        p = at + 64 * (2 * j + half) + 4 * row
        return bits_to_f32(np.uint32(record[p]) | (np.uint32(record[p + 1]) << 8)
                           | (np.uint32(record[p + 2]) << 16) | (np.uint32(record[p + 3]) << 24))
    return _half_at(record, record_at + 2 * row) * np.float32(record[at + 16 * j + row])


@njit(cache=True, parallel=True)
def _detile(W, code_bits, offset, scale_kind, min_kind, min_sign, record_blocks, fields, row_start, out):
    scales_at, mins_at, record_scale_at, record_min_at = fields
    code_bytes = 16 * code_bits * 4
    for i in prange(out.shape[0]):
        t, row = divmod(row_start + i, 16)
        for rec in range(W.shape[1]):
            record = W[t, rec]
            for j in range(record_blocks):
                b = rec * record_blocks + j
                for e in range(32):
                    half = e // 16
                    if code_bits == 4:
                        byte = record[code_bytes * j + 64 * ((e % 16) // 4) + 4 * row + e % 4]
                        code = np.int32(byte & 15) if e < 16 else np.int32(byte >> 4)
                    else:
                        code = np.int32(record[code_bytes * j + 64 * (e // 4) + 4 * row + e % 4])
                    value = _field(record, scale_kind, scales_at, record_scale_at, j, half, row) * np.float32(code - offset)
                    if min_kind:
                        value += min_sign * _field(record, min_kind, mins_at, record_min_at, j, half, row)
                    out[i, 32 * b + e] = value


def detile(fmt, W, row_start, row_stop):
    """Rows [row_start, row_stop) of a tiled weight as float32."""
    out = np.empty((row_stop - row_start, W.shape[1] * fmt.record_blocks * 32), np.float32)
    _detile(W, fmt.code_bits, fmt.offset, _KINDS[fmt.scale], _KINDS[fmt.minimum], np.float32(fmt.min_sign),
            fmt.record_blocks, np.array(fmt.field_offsets(), np.int64), row_start, out)
    return out
