"""The grid i-quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (256-element super-blocks).

Each group of 8 (IQ2, IQ1) or 4 (IQ3) weights is one entry of a fixed codebook (a "grid") times a
per-32 (or per-16) small scale; IQ2/IQ3 add a sign per weight (IQ2_XXS/IQ2_XS/IQ3_XXS through a
7-bit index into `KSIGNS`, whose 8th bit makes the count of minus signs even), IQ1 a shared +-1/8
shift per group. The grids and KSIGNS come from the `gguf` package (gguf/quants.py), as every
format constant here does. Layouts, in struct order:
  IQ2_XXS d:f16 qs:u16[32]                          (66 bytes)
  IQ2_XS  d:f16 qs:u16[32] scales[8]                (74)
  IQ2_S   d:f16 qs[32] signs[32] qh[8] scales[8]    (82)
  IQ3_XXS d:f16 qs[64] scales_and_signs:u32[8]      (98)
  IQ3_S   d:f16 qs[64] qh[8] signs[32] scales[4]    (110)
  IQ1_S   d:f16 qs[32] qh:u16[8]                    (50)
  IQ1_M   qs[32] qh[16] scales:u16[4] (d in the scales' top nibbles)   (56)
Dequantizers compute in float32 in gguf-py's order (every product is exact: grids hold small integers).
"""
import numpy as np
from gguf import quants as gq
from numba import njit, prange

from .bits import F32, fp16_to_fp32, get_f16, get_u16, get_u32


def _grid(cls):
    """A gguf-py grid as int8 rows (entries, weights per entry)."""
    cls.init_grid()
    return np.ascontiguousarray(cls.grid.reshape(cls.grid_shape).astype(np.int8))


GRID_IQ2_XXS = _grid(gq.IQ2_XXS)      # (256, 8) of {8, 25, 43}
GRID_IQ2_XS = _grid(gq.IQ2_XS)        # (512, 8)
GRID_IQ2_S = _grid(gq.IQ2_S)          # (1024, 8)
GRID_IQ3_XXS = _grid(gq.IQ3_XXS)      # (256, 4) of {4, 12, ..., 62}
GRID_IQ3_S = _grid(gq.IQ3_S)          # (512, 4) of {1, 3, ..., 15}
GRID_IQ1 = _grid(gq.IQ1_S)            # (2048, 8) of {-1, 0, 1}
KSIGNS = np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).copy()     # 128 sign bytes
IQ1_DELTA = F32(gq.IQ1_S.delta)


@njit(cache=True, inline="always")
def _signed(value, signs, j):
    return -value if (signs >> j) & 1 else value


@njit(cache=True, parallel=True)
def dequantize_iq2_xxs(raw, out):
    grid, ksigns = GRID_IQ2_XXS, KSIGNS
    for b in prange(raw.size // 66):
        blk, y = raw[b * 66:(b + 1) * 66], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            aux = get_u32(blk, 6 + 8 * ib)
            db = d * (F32(0.5) + F32(aux >> 28)) * F32(0.25)
            for l in range(4):
                entry = grid[blk[2 + 8 * ib + l]]
                signs = ksigns[(aux >> (7 * l)) & 127]
                for j in range(8):
                    y[32 * ib + 8 * l + j] = _signed(db * F32(entry[j]), signs, j)


@njit(cache=True, parallel=True)
def dequantize_iq2_xs(raw, out):
    grid, ksigns = GRID_IQ2_XS, KSIGNS
    for b in prange(raw.size // 74):
        blk, y = raw[b * 74:(b + 1) * 74], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            for l in range(4):
                db = d * (F32(0.5) + F32((blk[66 + ib] >> (4 * (l // 2))) & 15)) * F32(0.25)
                q = get_u16(blk, 2 + 8 * ib + 2 * l)
                entry = grid[q & 511]
                signs = ksigns[q >> 9]
                for j in range(8):
                    y[32 * ib + 8 * l + j] = _signed(db * F32(entry[j]), signs, j)


@njit(cache=True, parallel=True)
def dequantize_iq2_s(raw, out):
    grid = GRID_IQ2_S
    for b in prange(raw.size // 82):
        blk, y = raw[b * 82:(b + 1) * 82], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            for l in range(4):
                db = d * (F32(0.5) + F32((blk[74 + ib] >> (4 * (l // 2))) & 15)) * F32(0.25)
                entry = grid[np.int32(blk[2 + 4 * ib + l]) | ((np.int32(blk[66 + ib]) >> (2 * l)) & 3) << 8]
                signs = blk[34 + 4 * ib + l]
                for j in range(8):
                    y[32 * ib + 8 * l + j] = _signed(db * F32(entry[j]), signs, j)


@njit(cache=True, parallel=True)
def dequantize_iq3_xxs(raw, out):
    grid, ksigns = GRID_IQ3_XXS, KSIGNS
    for b in prange(raw.size // 98):
        blk, y = raw[b * 98:(b + 1) * 98], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            aux = get_u32(blk, 66 + 4 * ib)
            db = d * (F32(0.5) + F32(aux >> 28)) * F32(0.5)
            for l in range(4):
                signs = ksigns[(aux >> (7 * l)) & 127]
                for half in range(2):
                    entry = grid[blk[2 + 8 * ib + 2 * l + half]]
                    for j in range(4):
                        y[32 * ib + 8 * l + 4 * half + j] = _signed(db * F32(entry[j]), signs, 4 * half + j)


@njit(cache=True, parallel=True)
def dequantize_iq3_s(raw, out):
    grid = GRID_IQ3_S
    for b in prange(raw.size // 110):
        blk, y = raw[b * 110:(b + 1) * 110], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            db = d * F32(1 + 2 * ((np.int32(blk[106 + ib // 2]) >> (4 * (ib % 2))) & 15))
            for l in range(4):
                signs = blk[74 + 4 * ib + l]
                for half in range(2):
                    k = 8 * ib + 2 * l + half
                    entry = grid[np.int32(blk[2 + k]) | ((np.int32(blk[66 + k // 8]) >> (k % 8)) & 1) << 8]
                    for j in range(4):
                        y[32 * ib + 8 * l + 4 * half + j] = _signed(db * F32(entry[j]), signs, 4 * half + j)


@njit(cache=True, parallel=True)
def dequantize_iq1_s(raw, out):
    grid = GRID_IQ1
    for b in prange(raw.size // 50):
        blk, y = raw[b * 50:(b + 1) * 50], out[b * 256:(b + 1) * 256]
        d = get_f16(blk, 0)
        for ib in range(8):
            qh = np.int32(get_u16(blk, 34 + 2 * ib))
            dl = d * F32(2 * ((qh >> 12) & 7) + 1)
            delta = -IQ1_DELTA if qh & 0x8000 else IQ1_DELTA
            for l in range(4):
                entry = grid[np.int32(blk[2 + 4 * ib + l]) | ((qh >> (3 * l)) & 7) << 8]
                for j in range(8):
                    y[32 * ib + 8 * l + j] = dl * (F32(entry[j]) + delta)


@njit(cache=True, inline="always")
def iq1_m_scale(blk):
    """IQ1_M keeps its half-float scale in the top nibbles of its four 16-bit scale words."""
    h = 0
    for w in range(4):
        h |= ((np.int32(get_u16(blk, 48 + 2 * w)) >> 12) & 15) << (4 * w)
    return fp16_to_fp32(h)


@njit(cache=True, parallel=True)
def dequantize_iq1_m(raw, out):
    grid = GRID_IQ1
    for b in prange(raw.size // 56):
        blk, y = raw[b * 56:(b + 1) * 56], out[b * 256:(b + 1) * 256]
        d = iq1_m_scale(blk)
        for ib in range(8):
            word = np.int32(get_u16(blk, 48 + 2 * (ib // 2)))
            for l in range(4):
                s = (word >> (3 * (2 * (ib % 2) + l // 2))) & 7
                dl = d * F32(2 * s + 1)
                qh = (np.int32(blk[32 + 2 * ib + l // 2]) >> (4 * (l % 2))) & 15
                delta = -IQ1_DELTA if qh & 8 else IQ1_DELTA
                entry = grid[np.int32(blk[4 * ib + l]) | (qh & 7) << 8]
                for j in range(8):
                    y[32 * ib + 8 * l + j] = dl * (F32(entry[j]) + delta)
