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

from .bits import F32, fp16_to_fp32, fp32_to_fp16, get_f16, get_u16, get_u32, nearest_int, put_u16, put_u32
from .weighted import importance_weights, make_qp_quants, sum_squares


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


# ---------------------------------------------------------------- quantizers (importance-weighted, as llama.cpp)
# ggml-quants.c's iq2xs_init_impl / iq3xs_init_impl: each grid point as its odd positions 2l + 1 (l = magnitude
# index); a map from every point with `bits` bits per weight to its grid index, or for points off the grid to the
# list of grid points at its `nwant` smallest squared distances (ties by grid index), which the search tries
# instead. IQ2: 8 weights of 2 bits (l <= 2 on the grid), IQ3: 4 weights of 3 bits.

IQ2_KMAP_SIZE = 43692      # ggml's: 1 + the largest 8-digit base-4 point with digits <= 2 (0xaaaa: 43690)
IQ3_KMAP_SIZE = 4096       # every 4-digit base-8 point


def _grid_tables(grid, nwant, bits, kmap_size):
    """(positions (entries, n) int8, kmap (kmap_size,) int32, neighbours uint16): llama.cpp's tables."""
    n = grid.shape[1]
    levels = np.searchsorted(np.unique(grid), grid).astype(np.int64)            # (entries, n) magnitude index
    positions = (2 * levels + 1).astype(np.int8)
    index = (levels << (bits * np.arange(n))).sum(axis=1)
    assert np.all(np.diff(index) > 0), "grid order differs from llama.cpp's"
    kmap = np.full(kmap_size, -1, np.int64)
    kmap[index] = np.arange(len(grid))
    off_grid = np.nonzero(kmap < 0)[0]
    grid_points = positions.astype(np.float32)
    lists = []
    for first in range(0, off_grid.size, 4096):          # a slice of points at a time: the distances of all
        lists.extend(_neighbour_lists(off_grid[first:first + 4096], grid_points, nwant, bits))   # take 0.5 GB
    counts = np.array([len(chosen) for chosen in lists])
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])       # each list: its count, then the indices
    flat = np.empty(int((counts + 1).sum()), np.int64)
    flat[starts] = counts
    is_index = np.ones(flat.size, bool)
    is_index[starts] = False
    flat[is_index] = np.concatenate(lists)
    kmap[off_grid] = -(starts + 1)
    return positions, kmap.astype(np.int32), flat.astype(np.uint16)


def _neighbour_lists(points_index, grid_points, nwant, bits):
    """For each off-grid point, the grid indices at its nwant smallest distinct squared distances, nearest first
    (ties by index, as ggml's qsort on (distance, index))."""
    n = grid_points.shape[1]
    points = (2 * ((points_index[:, None] >> (bits * np.arange(n))) & ((1 << bits) - 1)) + 1).astype(np.float32)
    d2 = ((points ** 2).sum(1)[:, None] + (grid_points ** 2).sum(1)[None, :]
          - 2 * points @ grid_points.T).astype(np.int32)        # small integers: exact in float32
    order = np.argsort(d2, axis=1, kind="stable")
    sorted_d2 = np.take_along_axis(d2, order, axis=1)
    threshold = sorted_d2[:, 0]
    for _ in range(nwant - 1):
        threshold = np.where(sorted_d2 > threshold[:, None], sorted_d2, np.iinfo(np.int32).max).min(axis=1)
    chosen = sorted_d2 <= threshold[:, None]
    return [order[p][chosen[p]] for p in range(len(points_index))]


_TABLES = {}


def iq2_xxs_tables():
    if "iq2_xxs" not in _TABLES:
        _TABLES["iq2_xxs"] = _grid_tables(GRID_IQ2_XXS, 2, 2, IQ2_KMAP_SIZE)
    return _TABLES["iq2_xxs"]


@njit(cache=True, inline="always")
def _best_neighbour(neighbours, at, positions, xval, weight, scale, L):
    """iq2/iq3_find_best_neighbour: the listed grid point nearest (weighted) to xval at `scale`; its levels
    into L."""
    best_d2 = np.float32(np.inf)
    best = -1
    for j in range(1, np.int32(neighbours[at]) + 1):
        g = np.int32(neighbours[at + j])
        d2 = F32(0.0)
        for i in range(xval.size):
            diff = scale * F32(positions[g, i]) - xval[i]
            d2 += weight[i] * diff * diff
        if d2 < best_d2:
            best_d2, best = d2, g
    for i in range(xval.size):
        L[i] = (positions[best, i] - 1) // 2
    return best


@njit(cache=True, inline="always")
def _grid_point(levels, kmap, neighbours, positions, xval, weight, scale):
    """The grid index of 8 levels, or of the best listed neighbour when they are off the grid (levels updated)."""
    u = 0
    for i in range(8):
        u |= np.int32(levels[i]) << (2 * i)
    g = kmap[u]
    if g < 0:
        g = _best_neighbour(neighbours, -g - 1, positions, xval, weight, scale, levels)
    return g


@njit(cache=True, inline="always")
def _fit(weight, xval, levels):
    """sum w x q and sum w q^2 for the odd grid values q = 2l + 1: the least-squares scale is their ratio."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for i in range(xval.size):
        q = F32(2 * levels[i] + 1)
        sumqx += weight[i] * xval[i] * q
        sumq2 += weight[i] * q * q
    return sumqx, sumq2


@njit(cache=True, inline="always")
def _magnitudes_and_signs(xb, weight, waux, xval, block_signs, even):
    """The grid searches' start on one group of 8 * len(block_signs) weights: the square roots of the weights
    (for the neighbour search), |x|, and per 8 the sign bits; with `even` their count is made even by flipping
    the one that costs least (IQ2_XXS/IQ2_XS/IQ3_XXS sign codes hold 7 bits; the 8th is the parity)."""
    for i in range(xb.size):
        waux[i] = np.sqrt(weight[i])
    for k in range(block_signs.size):
        nflip = 0
        s = 0
        for i in range(8):
            if xb[8 * k + i] >= 0:
                xval[8 * k + i] = xb[8 * k + i]
            else:
                xval[8 * k + i] = -xb[8 * k + i]
                nflip += 1
                s |= 1 << i
        if even and nflip % 2:
            imin = 0
            smallest = weight[8 * k] * xb[8 * k] * xb[8 * k]
            for i in range(1, 8):
                ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i]
                if ax < smallest:
                    smallest, imin = ax, i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        block_signs[k] = s & 127 if even else s


@njit(cache=True, parallel=True)
def _quantize_iq2_xxs(x, out, quant_weights, positions, kmap, neighbours):
    """quantize_row_iq2_xxs_impl, one 256-block per iteration (quant_weights: the row's n_per_row weights)."""
    per_row = quant_weights.size // 256
    max_q = 3
    for b in prange(x.size // 256):
        xbl, blk = x[256 * b:256 * b + 256], out[66 * b:66 * b + 66]
        qwb = quant_weights[256 * (b % per_row):256 * (b % per_row) + 256]
        weight = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        L = np.zeros(32, np.int32)
        Laux = np.zeros(32, np.int32)
        Lqp = np.zeros(32, np.uint8)
        scales = np.zeros(8, np.float32)
        block_signs = np.zeros(4, np.int32)
        q2 = np.zeros(16, np.uint32)
        max_scale = F32(0.0)
        sigma2 = sum_squares(xbl) / F32(256)
        for ib in range(8):
            xb = xbl[32 * ib:32 * ib + 32]
            importance_weights(xb, qwb[32 * ib:32 * ib + 32], sigma2, weight)
            _magnitudes_and_signs(xb, weight, waux, xval, block_signs, True)
            vmax = xval[0]
            for i in range(1, 32):
                vmax = max(vmax, xval[i])
            if vmax < F32(1e-15):
                scales[ib] = 0
                L[:] = 0
                continue
            scale = make_qp_quants(32, max_q + 1, xval, Lqp, weight)
            eff_max = scale * F32(max_q)
            if eff_max <= 0:
                scales[ib] = 0
                L[:] = 0
                continue
            best = F32(0.0)
            for step in range(-6, 7):
                inverse = (F32(2 * max_q - 1) + F32(step) * F32(0.1)) / eff_max
                this_scale = F32(1.0) / inverse
                for k in range(4):
                    for i in range(8):
                        l = nearest_int(F32(0.5) * (inverse * xval[8 * k + i] - F32(1.0)))
                        Laux[8 * k + i] = max(0, min(max_q - 1, l))
                    _grid_point(Laux[8 * k:8 * k + 8], kmap, neighbours, positions, xval[8 * k:8 * k + 8],
                                waux[8 * k:8 * k + 8], this_scale)
                sumqx, sumq2 = _fit(weight, xval, Laux)
                if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
            if scale > 0:
                inverse = F32(1.0) / scale
                for k in range(4):
                    for i in range(8):
                        l = nearest_int(F32(0.5) * (inverse * xval[8 * k + i] - F32(1.0)))
                        L[8 * k + i] = max(0, min(max_q - 1, l))
                    g = _grid_point(L[8 * k:8 * k + 8], kmap, neighbours, positions, xval[8 * k:8 * k + 8],
                                    waux[8 * k:8 * k + 8], scale)
                    for i in range(8):
                        L[8 * k + i] = (positions[g, i] - 1) // 2
                sumqx, sumq2 = _fit(weight, xval, L)
                if sumq2 > 0:
                    scale = sumqx / sumq2
            if scale < 0:
                scale = -scale
                for k in range(4):
                    block_signs[k] = ~block_signs[k] & 127
            for k in range(4):
                u = 0
                for i in range(8):
                    u |= L[8 * k + i] << (2 * i)
                q2[2 * ib] |= np.uint32(kmap[u]) << np.uint32(8 * k)
                q2[2 * ib + 1] |= np.uint32(block_signs[k]) << np.uint32(7 * k)
            scales[ib] = scale
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            blk[:] = 0
            continue
        d = max_scale / F32(31)
        put_u16(blk, 0, fp32_to_fp16(d))
        inverse = F32(1.0) / d
        for ib in range(8):
            l = max(0, min(15, nearest_int(F32(0.5) * (inverse * scales[ib] - F32(1.0)))))
            q2[2 * ib + 1] |= np.uint32(l) << np.uint32(28)
        for w in range(16):
            put_u32(blk, 2 + 4 * w, q2[w])


def quantize_iq2_xxs(x, out, quant_weights):
    positions, kmap, neighbours = iq2_xxs_tables()
    _quantize_iq2_xxs(x, out, np.ascontiguousarray(quant_weights, np.float32), positions, kmap, neighbours)


def iq2_xs_tables():
    if "iq2_xs" not in _TABLES:
        _TABLES["iq2_xs"] = _grid_tables(GRID_IQ2_XS, 2, 2, IQ2_KMAP_SIZE)
    return _TABLES["iq2_xs"]


@njit(cache=True, parallel=True)
def _quantize_iq2_xs_s(x, out, quant_weights, positions, kmap, neighbours, is_s):
    """quantize_row_iq2_xs_impl and quantize_row_iq2_s_impl: 16-element groups (two grid points each); IQ2_XS
    stores a 9-bit grid index + 7 sign bits (the 8th the parity), IQ2_S a 10-bit index and 8 sign bits, weighs
    with twice the super-block's mean square, and stores d 1.25% smaller."""
    per_row = quant_weights.size // 256
    max_q = 3
    block_bytes = 82 if is_s else 74
    for b in prange(x.size // 256):
        xbl, blk = x[256 * b:256 * b + 256], out[block_bytes * b:block_bytes * (b + 1)]
        qwb = quant_weights[256 * (b % per_row):256 * (b % per_row) + 256]
        weight = np.empty(16, np.float32)
        waux = np.empty(16, np.float32)
        xval = np.empty(16, np.float32)
        L = np.zeros(16, np.int32)
        Laux = np.zeros(16, np.int32)
        on_grid = np.ones(2, np.bool_)
        on_grid_aux = np.ones(2, np.bool_)
        block_signs = np.zeros(2, np.int32)
        scales = np.zeros(16, np.float32)
        q2 = np.zeros(32, np.int32)
        max_scale = F32(0.0)
        sigma2 = (F32(2.0) if is_s else F32(1.0)) * sum_squares(xbl) / F32(256)
        blk[:] = 0
        for ib in range(16):
            xb = xbl[16 * ib:16 * ib + 16]
            importance_weights(xb, qwb[16 * ib:16 * ib + 16], sigma2, weight)
            _magnitudes_and_signs(xb, weight, waux, xval, block_signs, not is_s)
            vmax = xval[0]
            for i in range(1, 16):
                vmax = max(vmax, xval[i])
            L[:] = 0
            if vmax < (F32(1e-8) if is_s else F32(1e-15)):
                scales[ib] = 0
                continue
            best = F32(0.0)
            scale = vmax / F32(2 * max_q - 1)
            on_grid[:] = True
            for step in range(-9, 10):
                inverse = (F32(2 * max_q - 1) + F32(step) * F32(0.1)) / vmax
                this_scale = F32(1.0) / inverse
                for k in range(2):
                    u = 0
                    for i in range(8):
                        l = nearest_int(F32(0.5) * (inverse * xval[8 * k + i] - F32(1.0)))
                        Laux[8 * k + i] = max(0, min(max_q - 1, l))
                        u |= Laux[8 * k + i] << (2 * i)
                    on_grid_aux[k] = kmap[u] >= 0
                    if not on_grid_aux[k]:
                        _best_neighbour(neighbours, -kmap[u] - 1, positions, xval[8 * k:8 * k + 8],
                                        waux[8 * k:8 * k + 8], this_scale, Laux[8 * k:8 * k + 8])
                sumqx, sumq2 = _fit(weight, xval, Laux)
                if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
                    on_grid[:] = on_grid_aux
            if (not on_grid[0] or not on_grid[1]) and scale > 0:
                inverse = F32(1.0) / scale
                for k in range(2):
                    if on_grid[k]:
                        continue
                    u = 0
                    for i in range(8):
                        l = max(0, min(max_q - 1, nearest_int(F32(0.5) * (inverse * xval[8 * k + i] - F32(1.0)))))
                        u |= l << (2 * i)
                        L[8 * k + i] = l
                    if kmap[u] < 0:
                        _best_neighbour(neighbours, -kmap[u] - 1, positions, xval[8 * k:8 * k + 8],
                                        waux[8 * k:8 * k + 8], scale, L[8 * k:8 * k + 8])
                sumqx, sumq2 = _fit(weight, xval, L)
                if sumq2 > 0:
                    scale = sumqx / sumq2
            if scale < 0:
                scale = -scale
                for k in range(2):
                    block_signs[k] = ~block_signs[k] & (255 if is_s else 127)
            for k in range(2):
                u = 0
                for i in range(8):
                    u |= L[8 * k + i] << (2 * i)
                if is_s:
                    i8 = 2 * ib + k
                    blk[2 + i8] = np.uint8(kmap[u] & 255)
                    blk[66 + i8 // 4] |= np.uint8((kmap[u] >> 8) << (2 * (i8 % 4)))
                    blk[34 + i8] = np.uint8(block_signs[k])
                else:
                    q2[2 * ib + k] = kmap[u] | (block_signs[k] << 9)
            scales[ib] = scale
            max_scale = max(max_scale, scale)
        if max_scale == 0:                  # IQ2_S keeps the grid indices and signs it wrote, as llama.cpp's
            continue
        d = max_scale / F32(31)
        put_u16(blk, 0, fp32_to_fp16(d * F32(0.9875) if is_s else d))
        inverse = F32(1.0) / d
        scales_at = 74 if is_s else 66
        for ib in range(16):
            l = max(0, min(15, nearest_int(F32(0.5) * (inverse * scales[ib] - F32(1.0)))))
            blk[scales_at + ib // 2] |= np.uint8(l << (4 * (ib % 2)))
        if not is_s:
            for w in range(32):
                put_u16(blk, 2 + 2 * w, q2[w])


def quantize_iq2_xs(x, out, quant_weights):
    positions, kmap, neighbours = iq2_xs_tables()
    _quantize_iq2_xs_s(x, out, np.ascontiguousarray(quant_weights, np.float32), positions, kmap, neighbours, False)


def iq2_s_tables():
    if "iq2_s" not in _TABLES:
        _TABLES["iq2_s"] = _grid_tables(GRID_IQ2_S, 1, 2, IQ2_KMAP_SIZE)
    return _TABLES["iq2_s"]


def quantize_iq2_s(x, out, quant_weights):
    positions, kmap, neighbours = iq2_s_tables()
    _quantize_iq2_xs_s(x, out, np.ascontiguousarray(quant_weights, np.float32), positions, kmap, neighbours, True)


def iq3_tables(grid_size):
    """iq3xs_init_impl's tables for the 256-point (IQ3_XXS, 2 neighbour distances) or 512-point grid (IQ3_S, 3)."""
    key = f"iq3_{grid_size}"
    if key not in _TABLES:
        grid = GRID_IQ3_XXS if grid_size == 256 else GRID_IQ3_S
        _TABLES[key] = _grid_tables(grid, 2 if grid_size == 256 else 3, 3, IQ3_KMAP_SIZE)
    return _TABLES[key]


@njit(cache=True, parallel=True)
def _quantize_iq3(x, out, quant_weights, weighted, xxs, positions, kmap, neighbours):
    """quantize_row_iq3_xxs_impl (xxs) and quantize_row_iq3_s_impl: per 32 weights a scale searched over 31
    (XXS) or 19 (S) trial steps, 4-weight grid points (off-grid ones replaced by their best listed neighbour),
    then 4-bit scales against the largest. Without weights each weight counts as x^2, as llama.cpp's.
    IQ3_S keeps llama.cpp's cursor quirk: a group of zeros does not advance where the next group's grid
    indices and signs go."""
    block_bytes = 98 if xxs else 110
    per_row = max(1, quant_weights.size // 256)
    max_q = 8
    for b in prange(x.size // 256):
        xbl, blk = x[256 * b:256 * b + 256], out[block_bytes * b:block_bytes * (b + 1)]
        weight = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        L = np.zeros(32, np.int32)
        Laux = np.zeros(32, np.int32)
        on_grid = np.ones(8, np.bool_)
        on_grid_aux = np.ones(8, np.bool_)
        block_signs = np.zeros(4, np.int32)
        scales = np.zeros(8, np.float32)
        blk[:] = 0
        max_scale = F32(0.0)
        sigma2 = F32(2.0) * sum_squares(xbl) / F32(256)
        qs_at, signs_at = 2, 74
        for ib in range(8):
            xb = xbl[32 * ib:32 * ib + 32]
            if weighted:
                o = 256 * (b % per_row) + 32 * ib
                importance_weights(xb, quant_weights[o:o + 32], sigma2, weight)
            else:
                for i in range(32):
                    weight[i] = xb[i] * xb[i]
            _magnitudes_and_signs(xb, weight, waux, xval, block_signs, xxs)
            vmax = xval[0]
            for i in range(1, 32):
                vmax = max(vmax, xval[i])
            L[:] = 0
            if (xxs and vmax < F32(1e-8)) or vmax == 0:
                scales[ib] = 0
                continue
            best = F32(0.0)
            scale = vmax / F32(2 * max_q - 1)
            on_grid[:] = xxs
            steps = 15 if xxs else 9
            for step in range(-steps, steps + 1):
                inverse = (F32(2 * max_q - 1) + F32(step) * F32(0.2)) / vmax
                this_scale = F32(1.0) / inverse
                for k in range(8):
                    u = 0
                    for i in range(4):
                        l = nearest_int(F32(0.5) * (inverse * xval[4 * k + i] - F32(1.0)))
                        Laux[4 * k + i] = max(0, min(max_q - 1, l))
                        u |= Laux[4 * k + i] << (3 * i)
                    on_grid_aux[k] = kmap[u] >= 0
                    if not on_grid_aux[k]:
                        _best_neighbour(neighbours, -kmap[u] - 1, positions, xval[4 * k:4 * k + 4],
                                        waux[4 * k:4 * k + 4], this_scale, Laux[4 * k:4 * k + 4])
                sumqx, sumq2 = _fit(weight, xval, Laux)
                if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    L[:] = Laux
                    on_grid[:] = on_grid_aux
            if not on_grid.all() and scale > 0:
                inverse = F32(1.0) / scale
                for k in range(8):
                    if xxs and on_grid[k]:
                        continue
                    u = 0
                    for i in range(4):
                        l = max(0, min(max_q - 1, nearest_int(F32(0.5) * (inverse * xval[4 * k + i] - F32(1.0)))))
                        u |= l << (3 * i)
                    g = kmap[u]
                    if g < 0:
                        g = _best_neighbour(neighbours, -g - 1, positions, xval[4 * k:4 * k + 4],
                                            waux[4 * k:4 * k + 4], scale, L[4 * k:4 * k + 4])
                    for i in range(4):
                        L[4 * k + i] = (positions[g, i] - 1) // 2
                sumqx, sumq2 = _fit(weight, xval, L)
                if sumq2 > 0:
                    scale = sumqx / sumq2
            if scale < 0:
                scale = -scale
                for k in range(4):
                    block_signs[k] = ~block_signs[k] & (127 if xxs else 255)
            for k in range(8):
                u = 0
                for i in range(4):
                    u |= L[4 * k + i] << (3 * i)
                g = kmap[u]
                if xxs:
                    blk[2 + 8 * ib + k] = np.uint8(g)
                else:
                    blk[qs_at + k] = np.uint8(g & 255)
                    blk[66 + ib] |= np.uint8((g >> 8) << k)
            if xxs:
                put_u32(blk, 66 + 4 * ib, np.uint32(block_signs[0] | (block_signs[1] << 7) | (block_signs[2] << 14)
                                                    | (block_signs[3] << 21)))
            else:
                qs_at += 8
                for k in range(4):
                    blk[signs_at + k] = np.uint8(block_signs[k])
                signs_at += 4
            scales[ib] = scale
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            if xxs:
                blk[:] = 0
            continue
        d = max_scale / F32(31)
        put_u16(blk, 0, fp32_to_fp16(d * (F32(1.0125) if xxs else F32(1.033))))
        inverse = F32(1.0) / d
        for ib in range(8):
            l = max(0, min(15, nearest_int(F32(0.5) * (inverse * scales[ib] - F32(1.0)))))
            if xxs:
                put_u32(blk, 66 + 4 * ib, get_u32(blk, 66 + 4 * ib) | (np.uint32(l) << np.uint32(28)))
            else:
                blk[106 + ib // 2] |= np.uint8(l << (4 * (ib % 2)))


def _iq3_quantizer(grid_size, weighted):
    def quantize(x, out, quant_weights=None):
        positions, kmap, neighbours = iq3_tables(grid_size)
        qw = np.ascontiguousarray(quant_weights, np.float32) if weighted else np.zeros(0, np.float32)
        _quantize_iq3(x, out, qw, weighted, grid_size == 256, positions, kmap, neighbours)
    return quantize


quantize_iq3_xxs = _iq3_quantizer(256, False)
quantize_iq3_xxs_weighted = _iq3_quantizer(256, True)
quantize_iq3_s = _iq3_quantizer(512, False)
quantize_iq3_s_weighted = _iq3_quantizer(512, True)


# ---------------------------------------------------------------- IQ1_S, IQ1_M: three levels -1, 0, 1 plus a shift
IQ1_X_PLUS = np.array([-1 + IQ1_DELTA, IQ1_DELTA, 1 + IQ1_DELTA], np.float32)
IQ1_X_MINUS = np.array([-1 - IQ1_DELTA, -IQ1_DELTA, 1 - IQ1_DELTA], np.float32)
FLT_MAX = F32(3.4028234663852886e38)


def iq1_tables():
    if "iq1" not in _TABLES:
        _TABLES["iq1"] = _grid_tables(GRID_IQ1, 3, 2, IQ2_KMAP_SIZE)
    return _TABLES["iq1"]


@njit(cache=True, inline="always")
def _stable_order(xb, order):
    """The indices of xb in ascending order, ties in index order: glibc's qsort (a merge sort) as ggml calls it."""
    for j in range(xb.size):
        order[j] = j
        k = j
        while k > 0 and xb[order[k - 1]] > xb[j]:
            order[k] = order[k - 1]
            k -= 1
        order[k] = j


@njit(cache=True, inline="always")
def _iq1_grid_point(levels, kmap, neighbours, positions, xb, weight, scale, xx):
    """The grid index of 8 levels 0..2, or iq1_find_best_neighbour2's: the listed point whose shifted values
    (xx) at `scale` are nearest (weighted) to xb (levels updated). Second value: whether it was on the grid."""
    u = 0
    for i in range(8):
        u |= np.int32(levels[i]) << (2 * i)
    g = kmap[u]
    if g >= 0:
        return g, True
    at = -g - 1
    best_d2 = FLT_MAX
    for j in range(1, np.int32(neighbours[at]) + 1):
        n = np.int32(neighbours[at + j])
        d2 = F32(0.0)
        for i in range(8):
            diff = scale * xx[(positions[n, i] - 1) // 2] - xb[i]
            d2 += weight[i] * diff * diff
        if d2 < best_d2:
            best_d2, g = d2, n
    for i in range(8):
        levels[i] = (positions[g, i] - 1) // 2
    return g, False


@njit(cache=True, inline="always")
def _iq1_refit(xb, weight, indices, positions, xx_of, scale):
    """After a point moved off its levels: the least-squares scale over the chosen points, kept if positive."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for k in range(indices.size):
        xx = xx_of[k]
        for j in range(8):
            w = weight[8 * k + j]
            q = xx[(positions[indices[k], j] - 1) // 2]
            sumqx += w * q * xb[8 * k + j]
            sumq2 += w * q * q
    return sumqx / sumq2 if sumqx > 0 and sumq2 > 0 else scale


@njit(cache=True, parallel=True)
def _quantize_iq1_s(x, out, quant_weights, positions, kmap, neighbours):
    """quantize_row_iq1_s_impl: per 32 weights the exact weighted split into levels -1, 0, 1 with a +-1/8 shift
    (every pair of boundaries of the sorted values tried), grid points by the IQ1 neighbour search."""
    per_row = quant_weights.size // 256
    xp, xm = IQ1_X_PLUS, IQ1_X_MINUS
    for b in prange(x.size // 256):
        xbl, blk = x[256 * b:256 * b + 256], out[50 * b:50 * b + 50]
        qwb = quant_weights[256 * (b % per_row):256 * (b % per_row) + 256]
        weight = np.empty(32, np.float32)
        order = np.empty(32, np.int64)
        sumx = np.zeros(33, np.float32)
        sumw = np.zeros(33, np.float32)
        L = np.zeros(32, np.int32)
        indices = np.zeros(4, np.int32)
        scales = np.zeros(8, np.float32)
        shifts = np.ones(8, np.int32)
        blk[:] = 0
        max_scale = F32(0.0)
        sigma2 = F32(2.0) * sum_squares(xbl) / F32(256)
        for ib in range(8):
            xb = xbl[32 * ib:32 * ib + 32]
            importance_weights(xb, qwb[32 * ib:32 * ib + 32], sigma2, weight)
            amax = abs(xb[0])
            for i in range(1, 32):
                amax = max(amax, abs(xb[i]))
            if amax < F32(1e-12):
                scales[ib], shifts[ib] = 0, 1
                continue
            _stable_order(xb, order)
            for j in range(32):
                i = order[j]
                sumx[j + 1] = sumx[j] + weight[i] * xb[i]
                sumw[j + 1] = sumw[j] + weight[i]
            best_score, scale = -FLT_MAX, amax
            besti1, besti2, best_shift = -1, -1, 0
            for i1 in range(33):
                for i2 in range(i1, 33):
                    for shift in (1, -1):
                        xx = xp if shift == 1 else xm
                        sumqx = ((sumx[i1] - sumx[0]) * xx[0] + (sumx[i2] - sumx[i1]) * xx[1]
                                 + (sumx[32] - sumx[i2]) * xx[2])
                        sumq2 = ((sumw[i1] - sumw[0]) * xx[0] * xx[0] + (sumw[i2] - sumw[i1]) * xx[1] * xx[1]
                                 + (sumw[32] - sumw[i2]) * xx[2] * xx[2])
                        if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                            scale = sumqx / sumq2
                            best_score = scale * sumqx
                            besti1, besti2, best_shift = i1, i2, shift
            if besti1 < 0 or besti2 < 0 or best_shift == 0:
                scales[ib], shifts[ib] = 0, 1
                continue
            for j in range(32):
                L[order[j]] = 0 if j < besti1 else 1 if j < besti2 else 2
            if scale < 0:
                for j in range(32):
                    L[j] = 2 - L[j]
                scale, best_shift = -scale, -best_shift
            xx = xp if best_shift == 1 else xm
            all_on_grid = True
            for k in range(4):
                indices[k], on_grid = _iq1_grid_point(L[8 * k:8 * k + 8], kmap, neighbours, positions,
                                                      xb[8 * k:8 * k + 8], weight[8 * k:8 * k + 8], scale, xx)
                all_on_grid &= on_grid
            if not all_on_grid:
                scale = _iq1_refit(xb, weight, indices, positions, (xx, xx, xx, xx), scale)
            h = 0
            for k in range(4):
                blk[2 + 4 * ib + k] = np.uint8(indices[k] & 255)
                h |= (indices[k] >> 8) << (3 * k)
            put_u16(blk, 34 + 2 * ib, h)
            scales[ib], shifts[ib] = scale, best_shift
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            continue
        d = max_scale / F32(15)
        put_u16(blk, 0, fp32_to_fp16(d * F32(1.125)))
        inverse = F32(1.0) / d
        for ib in range(8):
            l = max(0, min(7, nearest_int(F32(0.5) * (inverse * scales[ib] - F32(1.0)))))
            if shifts[ib] == -1:
                l |= 8
            put_u16(blk, 34 + 2 * ib, get_u16(blk, 34 + 2 * ib) | (l << 12))


def quantize_iq1_s(x, out, quant_weights):
    positions, kmap, neighbours = iq1_tables()
    _quantize_iq1_s(x, out, np.ascontiguousarray(quant_weights, np.float32), positions, kmap, neighbours)


@njit(cache=True, inline="always")
def _iq1_m_shifts(best_k):
    """IQ1_M's shift choice k (0..3) per 16: the +1/8 (x_plus) or -1/8 (x_minus) values of each half."""
    return (IQ1_X_PLUS if best_k < 2 else IQ1_X_MINUS), (IQ1_X_PLUS if best_k % 2 == 0 else IQ1_X_MINUS)


@njit(cache=True, parallel=True)
def _quantize_iq1_m(x, out, quant_weights, positions, kmap, neighbours):
    """quantize_row_iq1_m_impl: per 16 weights the exact split into -1, 0, 1 with a shift per 8 (four
    combinations tried from prefix sums kept per half), 3-bit scales, then d refitted over the whole block."""
    per_row = quant_weights.size // 256
    xp, xm = IQ1_X_PLUS, IQ1_X_MINUS
    masks = (0x00, 0x80, 0x08, 0x88)
    p2, m2 = xp[2], xm[2]
    cp1 = xp[0] * xp[0] - xp[1] * xp[1]
    cp2 = xp[1] * xp[1] - xp[2] * xp[2]
    cm1 = xm[0] * xm[0] - xm[1] * xm[1]
    cm2 = xm[1] * xm[1] - xm[2] * xm[2]
    for b in prange(x.size // 256):
        xbl, blk = x[256 * b:256 * b + 256], out[56 * b:56 * b + 56]
        qwb = quant_weights[256 * (b % per_row):256 * (b % per_row) + 256]
        weight = np.empty(16, np.float32)
        order = np.empty(16, np.int64)
        px = np.zeros((2, 17), np.float32)
        pw = np.zeros((2, 17), np.float32)
        sumqx = np.zeros(4, np.float32)
        sumq2 = np.zeros(4, np.float32)
        L = np.zeros(16, np.int32)
        indices = np.zeros(2, np.int32)
        scales = np.zeros(16, np.float32)
        shifts = np.zeros(16, np.int32)
        blk[:] = 0
        max_scale = F32(0.0)
        sigma2 = F32(2.0) * sum_squares(xbl) / F32(256)
        for ib in range(16):
            xb = xbl[16 * ib:16 * ib + 16]
            importance_weights(xb, qwb[16 * ib:16 * ib + 16], sigma2, weight)
            amax = abs(xb[0])
            for i in range(1, 16):
                amax = max(amax, abs(xb[i]))
            if amax < F32(1e-7):
                scales[ib], shifts[ib] = 0, 0
                continue
            _stable_order(xb, order)
            for j in range(16):
                i = order[j]
                h = 0 if i < 8 else 1
                px[h, j + 1] = px[h, j] + weight[i] * xb[i]
                px[1 - h, j + 1] = px[1 - h, j]
                pw[h, j + 1] = pw[h, j] + weight[i]
                pw[1 - h, j + 1] = pw[1 - h, j]
            best_score, scale = -FLT_MAX, amax
            besti1, besti2, best_k = -1, -1, -1
            for i1 in range(17):
                for i2 in range(i1, 17):
                    sx0 = px[0, i1] + px[0, i2]
                    sx1 = px[1, i1] + px[1, i2]
                    qx_p0, qx_m0 = px[0, 16] * p2 - sx0, px[0, 16] * m2 - sx0
                    qx_p1, qx_m1 = px[1, 16] * p2 - sx1, px[1, 16] * m2 - sx1
                    q2_p0 = pw[0, 16] * p2 * p2 + pw[0, i1] * cp1 + pw[0, i2] * cp2
                    q2_m0 = pw[0, 16] * m2 * m2 + pw[0, i1] * cm1 + pw[0, i2] * cm2
                    q2_p1 = pw[1, 16] * p2 * p2 + pw[1, i1] * cp1 + pw[1, i2] * cp2
                    q2_m1 = pw[1, 16] * m2 * m2 + pw[1, i1] * cm1 + pw[1, i2] * cm2
                    sumqx[0], sumqx[1], sumqx[2], sumqx[3] = qx_p0 + qx_p1, qx_p0 + qx_m1, qx_m0 + qx_p1, qx_m0 + qx_m1
                    sumq2[0], sumq2[1], sumq2[2], sumq2[3] = q2_p0 + q2_p1, q2_p0 + q2_m1, q2_m0 + q2_p1, q2_m0 + q2_m1
                    for k in range(4):
                        if sumq2[k] > 0 and sumqx[k] * sumqx[k] > best_score * sumq2[k]:
                            scale = sumqx[k] / sumq2[k]
                            best_score = scale * sumqx[k]
                            besti1, besti2, best_k = i1, i2, k
            if besti1 < 0 or besti2 < 0 or best_k < 0:
                scales[ib], shifts[ib] = 0, 0
                continue
            for j in range(16):
                L[order[j]] = 0 if j < besti1 else 1 if j < besti2 else 2
            if scale < 0:
                for j in range(16):
                    L[j] = 2 - L[j]
                scale, best_k = -scale, 3 - best_k
            xx_of = _iq1_m_shifts(best_k)
            all_on_grid = True
            for k in range(2):
                indices[k], on_grid = _iq1_grid_point(L[8 * k:8 * k + 8], kmap, neighbours, positions,
                                                      xb[8 * k:8 * k + 8], weight[8 * k:8 * k + 8], scale, xx_of[k])
                all_on_grid &= on_grid
            if not all_on_grid:
                scale = _iq1_refit(xb, weight, indices, positions, xx_of, scale)
            blk[2 * ib] = np.uint8(indices[0] & 255)
            blk[2 * ib + 1] = np.uint8(indices[1] & 255)
            blk[32 + ib] = np.uint8((indices[0] >> 8) | ((indices[1] >> 8) << 4))
            scales[ib], shifts[ib] = scale, best_k
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            continue
        d = max_scale / F32(15)
        inverse = F32(1.0) / d
        sumqx_f = F32(0.0)
        sumq2_f = F32(0.0)
        sc = np.zeros(4, np.int32)
        for ib in range(16):
            l = max(0, min(7, nearest_int(F32(0.5) * (inverse * scales[ib] - F32(1.0)))))
            sc[ib // 4] |= l << (3 * (ib % 4))
            blk[32 + ib] |= np.uint8(masks[shifts[ib]])
            xb = xbl[16 * ib:16 * ib + 16]
            importance_weights(xb, qwb[16 * ib:16 * ib + 16], sigma2, weight)
            xx_of = _iq1_m_shifts(shifts[ib])
            for k in range(2):
                g = np.int32(blk[2 * ib + k]) + ((np.int32(blk[32 + ib]) << (8 - 4 * k)) & 0x700)
                xx = xx_of[k]
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[(positions[g, j] - 1) // 2] * F32(2 * l + 1)
                    sumqx_f += w * q * xb[8 * k + j]
                    sumq2_f += w * q * q
        if sumq2_f > 0:
            d = sumqx_f / sumq2_f
        s = np.int32(fp32_to_fp16(d * F32(1.1125)))
        sc[0] |= (s & 0x000F) << 12
        sc[1] |= (s & 0x00F0) << 8
        sc[2] |= (s & 0x0F00) << 4
        sc[3] |= s & 0xF000
        for w in range(4):
            put_u16(blk, 48 + 2 * w, sc[w])


def quantize_iq1_m(x, out, quant_weights):
    positions, kmap, neighbours = iq1_tables()
    _quantize_iq1_m(x, out, np.ascontiguousarray(quant_weights, np.float32), positions, kmap, neighbours)
