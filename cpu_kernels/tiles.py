"""16-row tiles: the weight layout of the integer kernels (tile_dot.py), the activation quantizer that
pairs with it, and the matvec/matmul driver.

A tile record holds 16 rows' codes for one block (or one 256-element super-block) and then their
scales; tile_dot.py describes the byte order. Every quantized type has its own tile format with the
same codes and small integer scales as its GGUF blocks (a few more bytes per weight at most: 16-row
scale vectors are padded and half floats are per row), so the kernels stream about the file's bytes.
Rows are padded to a multiple of 16 with zero rows (the drivers never store them).

Used on every CPU with an integer kernel path (isa.py: AVX-512, AVX2, ARM64 NEON; `USE_TILES`); elsewhere
weights.py keeps the float kernels of matvec.py.
"""
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as T, quants as gq
from numba import njit, prange

from . import grid_tiles as gt
from .bits import fp16_to_fp32, u16_at, u32_at
from .repack import KVALUES_IQ4NL, scale_min_k4
from .isa import KERNEL_PATH
from .tile_dot import HI_SHIFT, LANES, TileFormat, make_tile_dot

USE_TILES = KERNEL_PATH.dot is not None
Q15_MAX = 127 << HI_SHIFT       # activation integers: |q| <= 16256, so that the hi byte is within +-127 too
LO_MASK = (1 << HI_SHIFT) - 1
IQ4_CODES = tuple(int(v) + 128 for v in KVALUES_IQ4NL)
MXFP4_CODES = tuple(int(v) + 128 for v in gq.MXFP4.kvalues)        # e2m1 values doubled, as ggml keeps them


@dataclass(frozen=True)
class TiledType:
    """A GGML type's tile format and where its GGUF block keeps the half-float scale (and min)."""
    format: TileFormat
    block_bytes: int
    d_at: int
    m_at: int = -1


TILED = {
    T.Q4_0: TiledType(TileFormat("q4_0", 4, offset=8), 18, 0),
    T.Q4_1: TiledType(TileFormat("q4_1", 4, minimum="f16"), 20, 0, 2),
    T.Q5_0: TiledType(TileFormat("q5_0", 4, offset=16, high_bits=1), 22, 0),
    T.Q5_1: TiledType(TileFormat("q5_1", 4, minimum="f16", high_bits=1), 24, 0, 2),
    T.Q8_0: TiledType(TileFormat("q8_0", 8, offset=128), 34, 0),
    T.IQ4_NL: TiledType(TileFormat("iq4_nl", 4, offset=128, lookup=IQ4_CODES), 18, 0),
    T.Q2_K: TiledType(TileFormat("q2_k", 2, scale="k16", minimum="k16", min_sign=-1, record_blocks=8), 84, 80, 82),
    T.Q3_K: TiledType(TileFormat("q3_k", 2, offset=4, scale="k16", record_blocks=8, high_bits=1), 110, 108),
    T.Q4_K: TiledType(TileFormat("q4_k", 4, scale="k32", minimum="k32", min_sign=-1, record_blocks=8), 144, 0, 2),
    T.Q5_K: TiledType(TileFormat("q5_k", 4, scale="k32", minimum="k32", min_sign=-1, record_blocks=8, high_bits=1),
                      176, 0, 2),
    T.Q6_K: TiledType(TileFormat("q6_k", 4, offset=32, scale="k16", record_blocks=8, high_bits=2), 210, 208),
    T.IQ4_XS: TiledType(TileFormat("iq4_xs", 4, offset=128, scale="k32", record_blocks=8, lookup=IQ4_CODES), 136, 0),
    T.IQ2_XXS: TiledType(TileFormat("iq2_xxs", 2, offset=128, scale="k32", record_blocks=8, high_bits=1,
                                    lookup=gt.LOOKUP_IQ2, factor=0.125), 66, 0),
    T.IQ2_XS: TiledType(TileFormat("iq2_xs", 2, offset=128, scale="k16", record_blocks=8, high_bits=1,
                                   lookup=gt.LOOKUP_IQ2, factor=0.125), 74, 0),
    T.IQ2_S: TiledType(TileFormat("iq2_s", 2, offset=128, scale="k16", record_blocks=8, high_bits=1,
                                  lookup=gt.LOOKUP_IQ2, factor=0.125), 82, 0),
    T.IQ3_XXS: TiledType(TileFormat("iq3_xxs", 4, offset=128, scale="k32", record_blocks=8, lookup=gt.LOOKUP_IQ3_XXS,
                                    factor=0.25), 98, 0),
    T.IQ3_S: TiledType(TileFormat("iq3_s", 4, offset=128, scale="k32", record_blocks=8, lookup=gt.LOOKUP_IQ3_S), 110, 0),
    T.IQ1_S: TiledType(TileFormat("iq1_s", 2, offset=1, scale="k32", minimum="k32", record_blocks=8,
                                  factor=0.125), 50, 0, 0),        # the shift as a min: grid_tiles.py
    T.IQ1_M: TiledType(TileFormat("iq1_m", 2, offset=128, scale="k16", record_blocks=8, high_bits=1,
                                  lookup=gt.LOOKUP_IQ1, factor=0.125), 56, -1),     # d: iq1_m_half
    T.TQ1_0: TiledType(TileFormat("tq1_0", 2, offset=1, scale="k32", record_blocks=8), 54, 52),
    T.TQ2_0: TiledType(TileFormat("tq2_0", 2, offset=1, scale="k32", record_blocks=8), 66, 64),
    T.MXFP4: TiledType(TileFormat("mxfp4", 4, offset=128, scale="f16", lookup=MXFP4_CODES), 17, 0),  # e8m0 -> f16
}
KIND = {qtype: index for index, qtype in enumerate(TILED)}
X_ROWS_TOGETHER = 3             # activation rows per pass over a tile in prompt processing
_tile_dot = make_tile_dot([tiled.format for tiled in TILED.values()], KERNEL_PATH)
_tile_dot_rows = make_tile_dot([tiled.format for tiled in TILED.values()], KERNEL_PATH, X_ROWS_TOGETHER)
_tile_dot_pair = make_tile_dot([tiled.format for tiled in TILED.values()], KERNEL_PATH, 2)   # 2 rows left over


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
                xq[b, 0, e] = np.int8(q >> HI_SHIFT)
                xq[b, 1, e] = np.int8(q & LO_MASK)
                total += q
            xs[b, half] = total


@njit(cache=True, nogil=True)
def quantize_one(x, xq, xd, xs):
    _quantize_row(x, xq[0], xd[0], xs[0])


@njit(cache=True, parallel=True, nogil=True)
def quantize_many(xs_in, xq, xd, xs):
    for i in prange(xs_in.shape[0]):
        _quantize_row(xs_in[i], xq[i], xd[i], xs[i])


class QuantizedX:
    """Activation rows in the integer kernels' form; made once per vector and shared by every
    weight of the same width (q, k, v; gate, up)."""
    __slots__ = ("xq", "xd", "xs", "size", "n")

    def __init__(self, xs_in):
        self.n, self.size = (1, xs_in.shape[0]) if xs_in.ndim == 1 else xs_in.shape
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
        q = self.xq[:, :, 0].astype(np.float32) * (1 << HI_SHIFT) + self.xq[:, :, 1]
        return (q * self.xd[:, :, None]).reshape(self.n, self.size)


# ---------------------------------------------------------------- the driver: out (n, rows) = x rows @ W.T

GROUP_WEIGHT_BYTES = 1 << 17    # prompt matmuls: tiles taken together, and activation rows taken together,
CHUNK_X_BYTES = 1 << 18         # so that both stay in a core's L2 cache while they meet


@njit(cache=True, parallel=True, nogil=True)
def matmul(kind, W, xq, xd, xs, out, n_threads=1):
    """W (tiles, records, record bytes) in tile format TILED[kind]; one x row is a matvec. Rows of x go
    through a tile X_ROWS_TOGETHER at a time (each weight vector unpacked once for all of them); two rows
    left over go through together, one alone.

    Blocked for the cache: each thread takes a group of tiles (~128 KB) and runs chunks of x rows (~256 KB)
    through all of them, so the group is read from memory once and each chunk once per group (a 512-token
    prompt's activations are 2-8 MB: read once per tile they cost more than the weights). A few rows (a
    server's decode step) make groups small enough that every thread gets several."""
    n, rows = out.shape
    together = n - n % X_ROWS_TOGETHER
    tile_bytes = W.shape[1] * W.shape[2]
    group = 1
    if n > 1:
        group = max(1, min(GROUP_WEIGHT_BYTES // tile_bytes, W.shape[0] // (4 * n_threads)))
    chunk = max(1, CHUNK_X_BYTES // (xd.shape[1] * 64 * X_ROWS_TOGETHER)) * X_ROWS_TOGETHER
    n_groups = (W.shape[0] + group - 1) // group
    for g in prange(n_groups):
        first, stop = g * group, min(W.shape[0], (g + 1) * group)
        for c in range(0, together, chunk):
            for t in range(first, stop):
                at, valid = t * tile_bytes, min(LANES, rows - LANES * t)
                for i in range(c, min(together, c + chunk), X_ROWS_TOGETHER):
                    _tile_dot_rows(kind, W, at, xq, xd, xs, i, xd.shape[1], out, i * rows + LANES * t, valid, rows)
        for t in range(first, stop):
            at, valid = t * tile_bytes, min(LANES, rows - LANES * t)
            if n - together == 2:
                _tile_dot_pair(kind, W, at, xq, xd, xs, together, xd.shape[1], out, together * rows + LANES * t,
                               valid, rows)
            elif n - together == 1:
                _tile_dot(kind, W, at, xq, xd, xs, together, xd.shape[1], out, together * rows + LANES * t,
                          valid, rows)


# ---------------------------------------------------------------- GGUF blocks -> tiles
# decode_<type>(block, j, codes, small): the 32 codes of 32-block j of a GGUF block (unsigned, before any
# lookup) and, for super-blocks, the small integer scales and mins of its two 16-element halves.

@njit(cache=True, inline="always")
def _nibbles(block, at, codes):
    for j in range(16):
        codes[j] = block[at + j] & 15
        codes[16 + j] = block[at + j] >> 4


@njit(cache=True, inline="always")
def _fifth_bits(block, at, codes):
    qh = np.uint32(block[at]) | (np.uint32(block[at + 1]) << 8) | (np.uint32(block[at + 2]) << 16) \
        | (np.uint32(block[at + 3]) << 24)
    for e in range(32):
        codes[e] |= np.uint8(((qh >> e) & 1) << 4)


@njit(cache=True)
def decode_q4_0(block, j, codes, small):
    _nibbles(block, 2, codes)


@njit(cache=True)
def decode_q4_1(block, j, codes, small):
    _nibbles(block, 4, codes)


@njit(cache=True)
def decode_q5_0(block, j, codes, small):
    _nibbles(block, 6, codes)
    _fifth_bits(block, 2, codes)


@njit(cache=True)
def decode_q5_1(block, j, codes, small):
    _nibbles(block, 8, codes)
    _fifth_bits(block, 4, codes)


@njit(cache=True)
def decode_q8_0(block, j, codes, small):
    for e in range(32):
        codes[e] = block[2 + e] ^ 128       # int8 + 128


@njit(cache=True)
def decode_iq4_nl(block, j, codes, small):
    _nibbles(block, 2, codes)


@njit(cache=True)
def decode_q4_k(block, j, codes, small):
    small[0], small[2] = scale_min_k4(j, block)
    shift = 4 * (j & 1)
    for e in range(32):
        codes[e] = (block[16 + 32 * (j >> 1) + e] >> shift) & 15


@njit(cache=True)
def decode_q5_k(block, j, codes, small):
    small[0], small[2] = scale_min_k4(j, block)
    shift = 4 * (j & 1)
    for e in range(32):
        codes[e] = ((block[48 + 32 * (j >> 1) + e] >> shift) & 15) | (((block[16 + e] >> j) & 1) << 4)


@njit(cache=True)
def decode_q6_k(block, j, codes, small):
    half, chunk = j >> 2, j & 3
    for e in range(32):
        low = (block[64 * half + e + 32 * (chunk & 1)] >> (4 * (chunk >> 1))) & 15
        codes[e] = low | (((block[128 + 32 * half + e] >> (2 * chunk)) & 3) << 4)
    small[0], small[1] = np.int8(block[192 + 2 * j]), np.int8(block[193 + 2 * j])


@njit(cache=True)
def decode_q3_k(block, j, codes, small):
    half, shift = j >> 2, j & 3
    for e in range(32):
        low = (block[32 + 32 * half + e] >> (2 * shift)) & 3
        codes[e] = low | (((block[e] >> (4 * half + shift)) & 1) << 2)
    for h in range(2):
        group = 2 * j + h
        low = np.int32(block[96 + group]) & 15 if group < 8 else np.int32(block[96 + group - 8]) >> 4
        small[h] = (low | (((np.int32(block[104 + group % 4]) >> (2 * (group // 4))) & 3) << 4)) - 32


@njit(cache=True)
def decode_q2_k(block, j, codes, small):
    half, shift = j >> 2, j & 3
    for e in range(32):
        codes[e] = (block[16 + 32 * half + e] >> (2 * shift)) & 3
    for h in range(2):
        small[h], small[2 + h] = block[2 * j + h] & 15, block[2 * j + h] >> 4


@njit(cache=True)
def decode_iq4_xs(block, j, codes, small):
    _nibbles(block, 8 + 16 * j, codes)
    high = u16_at(block, 2)
    small[0] = (((np.int32(block[4 + j // 2]) >> (4 * (j % 2))) & 15) | (((high >> (2 * j)) & 3) << 4)) - 32


_KINDS = {None: 0, "f16": 1, "k32": 2, "k16": 3}


def _layout(tiled: TiledType):
    """The packer's view of a format: bits, record blocks, field kinds and offsets, GGUF scale offsets."""
    fmt = tiled.format
    return np.array((fmt.low_bits, fmt.high_bits, fmt.record_blocks, _KINDS[fmt.scale], _KINDS[fmt.minimum],
                     *fmt.field_offsets(), fmt.block_stride, tiled.d_at, tiled.m_at), np.int64)


@njit(cache=True, inline="always")
def _plane_at(bits, quad):
    """tile_dot.plane_position for the packers: (vector, bit shift) of a quad in a plane of `bits` bits."""
    return quad % bits, bits * (quad // bits)


@njit(cache=True, inline="always")
def _put_plane(record, at, bits, codes, shift_down):
    """The `bits`-bit fields of the 16 rows' codes >> shift_down (codes (16, 32)) as a plane, four bytes at a
    time: a row's 4 codes of a quad are one 32-bit word, and a plane word ORs the quads that share a vector
    (each field stays inside its byte)."""
    mask = np.uint32(((1 << bits) - 1) * 0x01010101)
    words = codes.view(np.uint32)             # (16, 8): row, quad
    out = record[at:at + 64 * bits].view(np.uint32)
    for vector in range(bits):
        for row in range(LANES):
            value = np.uint32(0)
            for quad in range(vector, 8, bits):
                value |= ((words[row, quad] >> np.uint32(shift_down)) & mask) << np.uint32(bits * (quad // bits))
            out[16 * vector + row] = value


@njit(cache=True, inline="always")
def _put_small(record, kind, at, row, small):
    if kind == 2:
        record[at + row] = np.uint8(small[0] & 255)
    elif kind == 3:
        for h in range(2):
            record[at + 16 * h + row] = np.uint8(small[h] & 255)


@njit(cache=True, inline="always")
def _tile_rows(decode, src, dst, layout, low_bits, high_bits):
    """Tiles from GGUF blocks, one 32-block of all 16 rows at a time: decoded into a (16, 32) code matrix,
    then written out plane by plane. The bit widths come as constants from each format's caller, so that the
    plane arithmetic folds (the rest of the layout is data)."""
    record_blocks, scale_kind, min_kind = layout[2], layout[3], layout[4]
    scales_at, mins_at, record_scale_at, record_min_at, stride, d_at, m_at = (
        layout[5], layout[6], layout[7], layout[8], layout[9], layout[10], layout[11])
    rows = src.shape[0]
    for t in prange(dst.shape[0]):
        codes = np.zeros((LANES, 32), np.uint8)
        small = np.zeros(4, np.int32)
        valid = min(LANES, rows - LANES * t)
        for b in range(src.shape[1]):
            record = dst[t, b]
            for j in range(record_blocks):
                for r in range(valid):
                    block = src[LANES * t + r, b]
                    decode(block, j, codes[r], small)
                    if scale_kind == 1:
                        at = stride * j + scales_at + 2 * r
                        record[at:at + 2] = block[d_at:d_at + 2]
                    if min_kind == 1:
                        at = stride * j + mins_at + 2 * r
                        record[at:at + 2] = block[m_at:m_at + 2]
                    _put_small(record, scale_kind, stride * j + scales_at, r, small)
                    _put_small(record, min_kind, stride * j + mins_at, r, small[2:])
                _put_plane(record, stride * j, low_bits, codes, 0)
                if high_bits:
                    _put_plane(record, stride * j + 64 * low_bits, high_bits, codes, low_bits)
            for r in range(valid):
                block = src[LANES * t + r, b]
                if scale_kind > 1 and d_at < 0:
                    half = gt.iq1_m_half(block)
                    record[record_scale_at + 2 * r] = np.uint8(half & 255)
                    record[record_scale_at + 2 * r + 1] = np.uint8(half >> 8)
                elif scale_kind > 1:
                    record[record_scale_at + 2 * r:record_scale_at + 2 * r + 2] = block[d_at:d_at + 2]
                if min_kind > 1:
                    record[record_min_at + 2 * r:record_min_at + 2 * r + 2] = block[m_at:m_at + 2]


@njit(cache=True, parallel=True)
def _tile_q4_0(src, dst, layout):
    _tile_rows(decode_q4_0, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_q4_1(src, dst, layout):
    _tile_rows(decode_q4_1, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_q5_0(src, dst, layout):
    _tile_rows(decode_q5_0, src, dst, layout, 4, 1)


@njit(cache=True, parallel=True)
def _tile_q5_1(src, dst, layout):
    _tile_rows(decode_q5_1, src, dst, layout, 4, 1)


@njit(cache=True, parallel=True)
def _tile_q8_0(src, dst, layout):
    _tile_rows(decode_q8_0, src, dst, layout, 8, 0)


@njit(cache=True, parallel=True)
def _tile_iq4_nl(src, dst, layout):
    _tile_rows(decode_iq4_nl, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_q2_k(src, dst, layout):
    _tile_rows(decode_q2_k, src, dst, layout, 2, 0)


@njit(cache=True, parallel=True)
def _tile_q3_k(src, dst, layout):
    _tile_rows(decode_q3_k, src, dst, layout, 2, 1)


@njit(cache=True, parallel=True)
def _tile_q4_k(src, dst, layout):
    _tile_rows(decode_q4_k, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_q5_k(src, dst, layout):
    _tile_rows(decode_q5_k, src, dst, layout, 4, 1)


@njit(cache=True, parallel=True)
def _tile_q6_k(src, dst, layout):
    _tile_rows(decode_q6_k, src, dst, layout, 4, 2)


@njit(cache=True, parallel=True)
def _tile_iq4_xs(src, dst, layout):
    _tile_rows(decode_iq4_xs, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_iq2_xxs(src, dst, layout):
    _tile_rows(gt.decode_iq2_xxs, src, dst, layout, 2, 1)


@njit(cache=True, parallel=True)
def _tile_iq2_xs(src, dst, layout):
    _tile_rows(gt.decode_iq2_xs, src, dst, layout, 2, 1)


@njit(cache=True, parallel=True)
def _tile_iq2_s(src, dst, layout):
    _tile_rows(gt.decode_iq2_s, src, dst, layout, 2, 1)


@njit(cache=True, parallel=True)
def _tile_iq3_xxs(src, dst, layout):
    _tile_rows(gt.decode_iq3_xxs, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_iq3_s(src, dst, layout):
    _tile_rows(gt.decode_iq3_s, src, dst, layout, 4, 0)


@njit(cache=True, parallel=True)
def _tile_iq1_s(src, dst, layout):
    _tile_rows(gt.decode_iq1_s, src, dst, layout, 2, 0)


@njit(cache=True, parallel=True)
def _tile_iq1_m(src, dst, layout):
    _tile_rows(gt.decode_iq1_m, src, dst, layout, 2, 1)


@njit(cache=True, parallel=True)
def _tile_tq1_0(src, dst, layout):
    _tile_rows(gt.decode_tq1_0, src, dst, layout, 2, 0)


@njit(cache=True, parallel=True)
def _tile_tq2_0(src, dst, layout):
    _tile_rows(gt.decode_tq2_0, src, dst, layout, 2, 0)


# Word-level packers for the most used types: a row's four codes of a quad sit in one 32-bit word of the GGUF
# block and one plane word of the tile, so each tile word is a few shifts and masks of one or two source words
# (the generic path above decodes byte by byte: 2-5x slower; it still packs Q5_0, Q5_1, Q2_K and Q3_K).
# tests/test_kernels.py checks them against the generic packers byte for byte.

NIBBLES, CRUMBS = np.uint32(0x0F0F0F0F), np.uint32(0x03030303)


@njit(cache=True, inline="always")
def _tile_words(pack_row, src, dst, layout):
    """The word packers' common loop: pack_row(block, record, words, row, layout) fills one row of a record
    (words: the record as 32-bit words) from that row's GGUF block."""
    rows = src.shape[0]
    for t in prange(dst.shape[0]):
        for b in range(src.shape[1]):
            record = dst[t, b]
            words = record.view(np.uint32)
            for r in range(min(LANES, rows - LANES * t)):
                pack_row(src[LANES * t + r, b], record, words, r, layout)


@njit(cache=True, inline="always")
def _nibble_pairs(words, at, row, block, qs, shift):
    """4-bit codes kept as the low (shift 0) or high (shift 4) nibbles of 32 bytes, elements e and e + 16
    apart: tile vector k holds quad k in its low nibbles and quad k + 4 in its high ones."""
    for k in range(4):
        low = (u32_at(block, qs + 4 * k) >> shift) & NIBBLES
        high = (u32_at(block, qs + 16 + 4 * k) >> shift) & NIBBLES
        words[at + 16 * k + row] = low | (high << np.uint32(4))


@njit(cache=True, inline="always")
def _copy_nibble_words(words, at, row, block, qs):
    """16 bytes of GGUF nibbles (elements e and e + 16 in byte e) are already a 4-bit tile plane's layout."""
    for k in range(4):
        words[at + 16 * k + row] = u32_at(block, qs + 4 * k)


@njit(cache=True, inline="always")
def _k_scales(block, record, r, layout):
    """Q4_K/Q5_K: one row's 6-bit scales and mins as small integers, and its super-block d and dmin."""
    for j in range(8):
        scale, minimum = scale_min_k4(j, block)
        record[layout[9] * j + layout[5] + r] = np.uint8(scale)
        record[layout[9] * j + layout[6] + r] = np.uint8(minimum)
    record[layout[7] + 2 * r:layout[7] + 2 * r + 2] = block[0:2]
    record[layout[8] + 2 * r:layout[8] + 2 * r + 2] = block[2:4]


@njit(cache=True, inline="always")
def _row_q4_k(block, record, words, r, layout):
    stride = layout[9]
    for j in range(8):
        _nibble_pairs(words, (stride * j) // 4, r, block, 16 + 32 * (j >> 1), np.uint32(4 * (j & 1)))
    _k_scales(block, record, r, layout)


@njit(cache=True, inline="always")
def _row_q5_k(block, record, words, r, layout):
    stride = layout[9]
    for j in range(8):
        at = (stride * j) // 4
        _nibble_pairs(words, at, r, block, 48 + 32 * (j >> 1), np.uint32(4 * (j & 1)))
        fifth = np.uint32(0)
        for quad in range(8):
            fifth |= ((u32_at(block, 16 + 4 * quad) >> np.uint32(j)) & np.uint32(0x01010101)) << np.uint32(quad)
        words[at + 64 + r] = fifth
    _k_scales(block, record, r, layout)


@njit(cache=True, inline="always")
def _row_q6_k(block, record, words, r, layout):
    stride = layout[9]
    for j in range(8):
        half, chunk = j >> 2, j & 3
        at = (stride * j) // 4
        _nibble_pairs(words, at, r, block, 64 * half + 32 * (chunk & 1), np.uint32(4 * (chunk >> 1)))
        high_shift = np.uint32(2 * chunk)
        for v in range(2):
            value = np.uint32(0)
            for quad in range(v, 8, 2):
                value |= ((u32_at(block, 128 + 32 * half + 4 * quad) >> high_shift) & CRUMBS) << np.uint32(2 * (quad // 2))
            words[at + 64 + 16 * v + r] = value
        for h in range(2):
            record[stride * j + layout[5] + 16 * h + r] = block[192 + 2 * j + h]
    record[layout[7] + 2 * r:layout[7] + 2 * r + 2] = block[208:210]


@njit(cache=True, inline="always")
def _row_iq4_xs(block, record, words, r, layout):
    stride = layout[9]
    high = u16_at(block, 2)
    for j in range(8):
        _copy_nibble_words(words, (stride * j) // 4, r, block, 8 + 16 * j)
        small = (((np.int32(block[4 + j // 2]) >> (4 * (j % 2))) & 15) | (((high >> (2 * j)) & 3) << 4)) - 32
        record[stride * j + layout[5] + r] = np.uint8(small & 255)
    record[layout[7] + 2 * r:layout[7] + 2 * r + 2] = block[0:2]


@njit(cache=True, inline="always")
def _row_q8_0(block, record, words, r, layout):
    for quad in range(8):
        words[16 * quad + r] = u32_at(block, 2 + 4 * quad) ^ np.uint32(0x80808080)     # int8 + 128
    record[layout[5] + 2 * r:layout[5] + 2 * r + 2] = block[0:2]


@njit(cache=True, inline="always")
def _row_nibble_block(block, record, words, r, layout):
    """Q4_0, Q4_1, IQ4_NL: one 32-block per record, half-float scale (and min); the codes follow them."""
    qs_at = 4 if layout[11] >= 0 else 2
    _copy_nibble_words(words, 0, r, block, qs_at)
    record[layout[5] + 2 * r:layout[5] + 2 * r + 2] = block[layout[10]:layout[10] + 2]
    if layout[11] >= 0:
        record[layout[6] + 2 * r:layout[6] + 2 * r + 2] = block[layout[11]:layout[11] + 2]


@njit(cache=True, inline="always")
def mxfp4_half(e):
    """MXFP4's power-of-two scale byte (E8M0, halved as ggml's e8m0_to_fp32_half: 2^(e - 128)) as half-float
    bits; exact for e in MXFP4_HALF_RANGE (mxfp4_scales_fit checks a tensor)."""
    if e >= 114:
        return np.uint16((e - 113) << 10)
    return np.uint16(1 << (e - 104))


MXFP4_HALF_RANGE = (104, 143)      # 2^-24 (the smallest half subnormal) .. 2^15 (the largest half power of two)


def mxfp4_scales_fit(raw):
    """Whether every block scale of MXFP4 bytes is a half float exactly (real files: 2^-20 .. 2^0 or so)."""
    e = np.asarray(raw, np.uint8).reshape(-1, 17)[:, 0]
    return e.size == 0 or (MXFP4_HALF_RANGE[0] <= e.min() and e.max() <= MXFP4_HALF_RANGE[1])


@njit(cache=True, inline="always")
def _row_mxfp4(block, record, words, r, layout):
    """MXFP4: Q4_0's nibble order after a one-byte scale, which becomes the record's half float."""
    _copy_nibble_words(words, 0, r, block, 1)
    half = mxfp4_half(np.int32(block[0]))
    record[layout[5] + 2 * r] = np.uint8(half & 255)
    record[layout[5] + 2 * r + 1] = np.uint8(half >> 8)


@njit(cache=True, parallel=True)
def _tile_mxfp4_words(src, dst, layout):
    _tile_words(_row_mxfp4, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_q4_k_words(src, dst, layout):
    _tile_words(_row_q4_k, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_q5_k_words(src, dst, layout):
    _tile_words(_row_q5_k, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_q6_k_words(src, dst, layout):
    _tile_words(_row_q6_k, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_iq4_xs_words(src, dst, layout):
    _tile_words(_row_iq4_xs, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_q8_0_words(src, dst, layout):
    _tile_words(_row_q8_0, src, dst, layout)


@njit(cache=True, parallel=True)
def _tile_nibble_block_words(src, dst, layout):
    _tile_words(_row_nibble_block, src, dst, layout)


_PACKERS = {T.Q4_0: _tile_nibble_block_words, T.Q4_1: _tile_nibble_block_words, T.Q5_0: _tile_q5_0,
            T.Q5_1: _tile_q5_1, T.Q8_0: _tile_q8_0_words, T.IQ4_NL: _tile_nibble_block_words, T.Q2_K: _tile_q2_k, T.Q3_K: _tile_q3_k,
            T.Q4_K: _tile_q4_k_words, T.Q5_K: _tile_q5_k_words, T.Q6_K: _tile_q6_k_words, T.IQ4_XS: _tile_iq4_xs_words,
            T.IQ2_XXS: _tile_iq2_xxs, T.IQ2_XS: _tile_iq2_xs, T.IQ2_S: _tile_iq2_s, T.IQ3_XXS: _tile_iq3_xxs,
            T.IQ3_S: _tile_iq3_s, T.IQ1_S: _tile_iq1_s, T.IQ1_M: _tile_iq1_m, T.TQ1_0: _tile_tq1_0, T.TQ2_0: _tile_tq2_0,
            T.MXFP4: _tile_mxfp4_words}
# the generic path (a decoder per type), for the tests
BYTEWISE_PACKERS = {T.Q4_0: _tile_q4_0, T.Q4_1: _tile_q4_1, T.Q8_0: _tile_q8_0, T.IQ4_NL: _tile_iq4_nl,
                    T.Q4_K: _tile_q4_k, T.Q5_K: _tile_q5_k, T.Q6_K: _tile_q6_k, T.IQ4_XS: _tile_iq4_xs}


def tile_shape(qtype, rows, cols):
    """(tiles, records, record bytes) of a rows x cols weight of a quantized type."""
    fmt = TILED[qtype].format
    return -(-rows // LANES), cols // (32 * fmt.record_blocks), fmt.record_bytes


def pack(qtype, raw, rows, cols):
    """GGUF block rows of a quantized type -> tiles (tiles, records, record bytes), new memory."""
    tiled = TILED[qtype]
    dst = np.zeros(tile_shape(qtype, rows, cols), np.uint8)
    _PACKERS[qtype](np.asarray(raw, np.uint8).reshape(rows, dst.shape[1], tiled.block_bytes), dst, _layout(tiled))
    return dst


# ---------------------------------------------------------------- back to float32 (tests, dequantize())

@njit(cache=True, inline="always")
def _half_at(record, at):
    return fp16_to_fp32(np.int32(record[at]) | (np.int32(record[at + 1]) << 8))


@njit(cache=True, inline="always")
def _field(record, kind, at, record_at, half, row, factor):
    """A scale or min of block (at = its field's offset in the record) for one row and 16-element half."""
    if kind == 1:
        return _half_at(record, at + 2 * row)
    small_at = at + row if kind == 2 else at + 16 * half + row
    return _half_at(record, record_at + 2 * row) * factor * np.float32(np.int8(record[small_at]))


@njit(cache=True, inline="always")
def _plane_value(record, at, bits, row, e):
    vector, shift = _plane_at(bits, e // 4)
    return (np.int32(record[at + 64 * vector + 4 * row + e % 4]) >> shift) & ((1 << bits) - 1)


@njit(cache=True, parallel=True)
def _detile(W, layout, offset, min_sign, lookup, factor, row_start, out):
    low_bits, high_bits, record_blocks, scale_kind, min_kind = layout[0], layout[1], layout[2], layout[3], layout[4]
    scales_at, mins_at, record_scale_at, record_min_at, stride = layout[5], layout[6], layout[7], layout[8], layout[9]
    for i in prange(out.shape[0]):
        t, row = divmod(row_start + i, 16)
        for rec in range(W.shape[1]):
            record = W[t, rec]
            for j in range(record_blocks):
                for e in range(32):
                    code = _plane_value(record, stride * j, low_bits, row, e)
                    if high_bits:
                        code |= _plane_value(record, stride * j + 64 * low_bits, high_bits, row, e) << low_bits
                    if lookup.size:
                        code = lookup[code]
                    half = e // 16
                    value = _field(record, scale_kind, stride * j + scales_at, record_scale_at, half, row,
                                   factor) * np.float32(code - offset)
                    if min_kind:
                        value += min_sign * _field(record, min_kind, stride * j + mins_at, record_min_at, half, row,
                                                   factor)
                    out[i, 32 * (rec * record_blocks + j) + e] = value


def detile(qtype, W, row_start, row_stop):
    """Rows [row_start, row_stop) of a tiled weight as float32."""
    tiled = TILED[qtype]
    fmt = tiled.format
    out = np.empty((row_stop - row_start, W.shape[1] * fmt.record_blocks * 32), np.float32)
    lookup = np.array(fmt.lookup or (), np.int32)
    _detile(W, _layout(tiled), fmt.offset, np.float32(fmt.min_sign), lookup, np.float32(fmt.factor), row_start, out)
    return out


__all__ = ["USE_TILES", "TILED", "KIND", "QuantizedX", "matmul", "tile_shape", "pack", "detile", "mxfp4_scales_fit"]
