"""Tile codes for the grid i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) and the ternary
formats (TQ1_0, TQ2_0): each weight of their GGUF blocks as a small code that the tile kernels' 16-entry
lookup turns into a signed integer, with the per-32 (or per-16) small scale kept as an integer.

A grid entry names 8 (or 4) weights, but every grid holds few distinct magnitudes: {8, 25, 43} for the
IQ2 grids, {4, 12, ..., 62} for IQ3_XXS, {1, 3, ..., 15} for IQ3_S, {-1, 0, 1} for IQ1. So a weight is the
index of its magnitude plus its sign (IQ1: plus the sign of the group's 1/8 shift), 3 or 4 bits, and its
value is exactly d * factor * small * LOOKUP[code] with the small scale 2s + 1:
  IQ2_*   d * (0.5 + s) / 4 * grid * sign       = d / 8 * (2s + 1) * (+-grid)
  IQ3_XXS d * (0.5 + s) / 2 * grid * sign       = d / 4 * (2s + 1) * (+-grid)
  IQ3_S   d * (1 + 2s) * grid * sign
  IQ1_*   d * (2s + 1) * (g +- 1/8)             = d / 8 * (2s + 1) * (8g +- 1)
          (IQ1_S: its shift is one per 32-block, so a min instead: 2-bit codes, see decode_iq1_s)
  TQ*     d * (t - 1)                            small 1, offset 1
The tiles read 3-4 bits per weight where the files hold 1.6-3.4 (a grid index would need a gather per
8 weights); decoding is the same arithmetic as gguf_io's dequantizers, on codes instead of floats.

decode_<type>(block, j, codes, small) has tiles.py's decoder signature: the 32 codes of 32-block j
(before the lookup) and its small scales (small[0], or small[0] and small[1] for the two 16-halves).
"""
import numpy as np
from gguf import quants as gq
from numba import njit

from .bits import u16_at, u32_at


def _grid(cls):
    cls.init_grid()
    return cls.grid.reshape(cls.grid_shape).astype(np.int32)


def _codes(grid, magnitudes):
    """Each grid value as the index of its magnitude."""
    return np.searchsorted(np.array(magnitudes), grid).astype(np.uint8)


IQ2_MAGNITUDES = (8, 25, 43)
IQ3_XXS_MAGNITUDES = (4, 12, 20, 28, 36, 44, 52, 62)
IQ3_S_MAGNITUDES = (1, 3, 5, 7, 9, 11, 13, 15)
CODES_IQ2_XXS = _codes(_grid(gq.IQ2_XXS), IQ2_MAGNITUDES)
CODES_IQ2_XS = _codes(_grid(gq.IQ2_XS), IQ2_MAGNITUDES)
CODES_IQ2_S = _codes(_grid(gq.IQ2_S), IQ2_MAGNITUDES)
CODES_IQ3_XXS = _codes(_grid(gq.IQ3_XXS), IQ3_XXS_MAGNITUDES)
CODES_IQ3_S = _codes(_grid(gq.IQ3_S), IQ3_S_MAGNITUDES)
CODES_IQ1 = (_grid(gq.IQ1_S) + 1).astype(np.uint8)                    # g + 1
KSIGNS = np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).copy()


def _signed_lookup(magnitudes, unused=0):
    """code = index | sign << bits -> +-magnitude + 128 (tiles' unsigned lookup), padded to 16 entries."""
    values = list(magnitudes) + [unused] * (-len(magnitudes) % 4)
    values = values + [-v for v in values]
    return tuple(v + 128 for v in values + [0] * (16 - len(values)))


LOOKUP_IQ2 = _signed_lookup(IQ2_MAGNITUDES)                 # 3-bit codes
LOOKUP_IQ3_XXS = _signed_lookup(IQ3_XXS_MAGNITUDES)         # 4-bit codes
LOOKUP_IQ3_S = _signed_lookup(IQ3_S_MAGNITUDES)
LOOKUP_IQ1 = tuple(v + 128 for v in (-7, 1, 9, 0, -9, -1, 7, 0) + (0,) * 8)   # 8g + 1, then 8g - 1


@njit(cache=True, inline="always")
def _put_group(codes, at, entry, signs, sign_bit, n):
    for k in range(n):
        codes[at + k] = entry[k] | (((signs >> k) & 1) << sign_bit)


@njit(cache=True)
def decode_iq2_xxs(block, j, codes, small):
    aux = u32_at(block, 6 + 8 * j)
    small[0] = 2 * np.int32(aux >> 28) + 1
    for l in range(4):
        _put_group(codes, 8 * l, CODES_IQ2_XXS[block[2 + 8 * j + l]], KSIGNS[(aux >> (7 * l)) & 127], 2, 8)


@njit(cache=True)
def decode_iq2_xs(block, j, codes, small):
    for h in range(2):
        small[h] = 2 * ((np.int32(block[66 + j]) >> (4 * h)) & 15) + 1
    for l in range(4):
        q = u16_at(block, 2 + 8 * j + 2 * l)
        _put_group(codes, 8 * l, CODES_IQ2_XS[q & 511], KSIGNS[q >> 9], 2, 8)


@njit(cache=True)
def decode_iq2_s(block, j, codes, small):
    for h in range(2):
        small[h] = 2 * ((np.int32(block[74 + j]) >> (4 * h)) & 15) + 1
    for l in range(4):
        entry = np.int32(block[2 + 4 * j + l]) | (((np.int32(block[66 + j]) >> (2 * l)) & 3) << 8)
        _put_group(codes, 8 * l, CODES_IQ2_S[entry], block[34 + 4 * j + l], 2, 8)


@njit(cache=True)
def decode_iq3_xxs(block, j, codes, small):
    aux = u32_at(block, 66 + 4 * j)
    small[0] = 2 * np.int32(aux >> 28) + 1
    for l in range(4):
        signs = np.int32(KSIGNS[(aux >> (7 * l)) & 127])
        for half in range(2):
            _put_group(codes, 8 * l + 4 * half, CODES_IQ3_XXS[block[2 + 8 * j + 2 * l + half]], signs >> (4 * half), 3, 4)


@njit(cache=True)
def decode_iq3_s(block, j, codes, small):
    small[0] = 2 * ((np.int32(block[106 + j // 2]) >> (4 * (j % 2))) & 15) + 1
    for l in range(4):
        signs = np.int32(block[74 + 4 * j + l])
        for half in range(2):
            k = 8 * j + 2 * l + half
            entry = np.int32(block[2 + k]) | (((np.int32(block[66 + k // 8]) >> (k % 8)) & 1) << 8)
            _put_group(codes, 8 * l + 4 * half, CODES_IQ3_S[entry], signs >> (4 * half), 3, 4)


@njit(cache=True)
def decode_iq1_s(block, j, codes, small):
    """IQ1_S shares its 1/8 shift over a 32-block, so it is a min: d/8 * (8 (2s + 1) * g + (+-(2s + 1))),
    2-bit codes g + 1 (offset 1), scale 8 (2s + 1), min +-(2s + 1), both times d/8."""
    qh = u16_at(block, 34 + 2 * j)
    odd = 2 * ((qh >> 12) & 7) + 1
    small[0] = 8 * odd
    small[2] = -odd if qh & 0x8000 else odd
    for l in range(4):
        entry = CODES_IQ1[np.int32(block[2 + 4 * j + l]) | (((qh >> (3 * l)) & 7) << 8)]
        for k in range(8):
            codes[8 * l + k] = entry[k]


@njit(cache=True)
def decode_iq1_m(block, j, codes, small):
    word = u16_at(block, 48 + 2 * (j // 2))
    for h in range(2):
        small[h] = 2 * ((word >> (3 * (2 * (j % 2) + h))) & 7) + 1
    for l in range(4):
        qh = (np.int32(block[32 + 2 * j + l // 2]) >> (4 * (l % 2))) & 15
        entry = CODES_IQ1[np.int32(block[4 * j + l]) | ((qh & 7) << 8)]
        for k in range(8):
            codes[8 * l + k] = entry[k] | (((qh >> 3) & 1) << 2)


@njit(cache=True, inline="always")
def iq1_m_half(block):
    """IQ1_M's half-float scale, kept in the top nibbles of its four 16-bit scale words."""
    h = 0
    for w in range(4):
        h |= ((u16_at(block, 48 + 2 * w) >> 12) & 15) << (4 * w)
    return h


@njit(cache=True, inline="always")
def _trit(q, n):
    """Trit n of a TQ1_0 byte: ((q * 3^n mod 256) * 3) >> 8."""
    power = np.int32(1)
    for _ in range(n):
        power *= 3
    return ((np.int32(q) * power & 255) * 3) >> 8


@njit(cache=True)
def decode_tq1_0(block, j, codes, small):
    small[0] = 1
    for k in range(32):
        e = 32 * j + k
        if e < 160:
            codes[k] = _trit(block[e % 32], e // 32)
        elif e < 240:
            codes[k] = _trit(block[32 + (e - 160) % 16], (e - 160) // 16)
        else:
            codes[k] = _trit(block[48 + (e - 240) % 4], (e - 240) // 4)


@njit(cache=True)
def decode_tq2_0(block, j, codes, small):
    small[0] = 1
    c, rest = j // 4, 32 * (j % 4)
    for k in range(32):
        codes[k] = (block[32 * c + k] >> (2 * (rest // 32))) & 3

