"""The group-interleaved block layout the quantized kernels read.

A row of GGUF blocks is cut into groups of consecutive blocks; inside a group, byte k
of every block sits next to byte k of the others ([k][lane]), so a kernel handles a
group's blocks at once, one per vector lane, with no horizontal sums. Groups have a
constant width — 16 lanes, then at most one group of 8 and one of 4 — because LLVM
only runs its vector loop for a lane count it knows: measured on a 4096x4096 Q4_0
matvec, 16 constant lanes read 13 GB/s, a runtime lane count 3-5 GB/s, 2 lanes 1.3.
A row is padded with zero blocks to a multiple of 4 (their scale is 0, so they add 0).

Each part is its own C-contiguous array (rows, groups, type_size, 16), (rows,
type_size, 8), (rows, type_size, 4): indexing a 4-D array with constant inner shape is
what vectorizes; the same bytes reached through reshaped slices ran 2-3x slower.
"""
import numpy as np
from numba import njit, prange

LANES = 16


def split_blocks(nb):
    """Blocks per row -> (groups of 16, has a group of 8, has a group of 4, padded count)."""
    padded = -(-nb // 4) * 4
    return padded // 16, bool(padded % 16 >= 8), bool(padded % 8 >= 4), padded


@njit(cache=True, parallel=True)
def _interleave(raw, rows, type_size, g16, p8, p4):
    nb = raw.size // rows // type_size
    n16 = g16.shape[1] * 16
    n8 = p8.shape[2]
    for r in prange(rows):
        src = raw[r * nb * type_size:(r + 1) * nb * type_size]
        for blk in range(nb):
            if blk < n16:
                dst = g16[r, blk // 16]
                lane = blk % 16
            elif blk < n16 + n8:
                dst = p8[r]
                lane = blk - n16
            else:
                dst = p4[r]
                lane = blk - n16 - n8
            for k in range(type_size):
                dst[k, lane] = src[blk * type_size + k]


def interleave(raw, rows, type_size):
    """GGUF block rows (uint8, rows * nb * type_size) -> (g16, p8, p4) zero-padded parts."""
    nb = raw.size // rows // type_size
    groups, has8, has4, _ = split_blocks(nb)
    g16 = np.zeros((rows, groups, type_size, 16), np.uint8)
    p8 = np.zeros((rows, type_size, 8 if has8 else 0), np.uint8)
    p4 = np.zeros((rows, type_size, 4 if has4 else 0), np.uint8)
    _interleave(np.ascontiguousarray(raw).reshape(-1), rows, type_size, g16, p8, p4)
    return g16, p8, p4


@njit(cache=True, parallel=True)
def _deinterleave(g16, p8, p4, nb, out):
    rows, type_size = g16.shape[0], g16.shape[2]
    n16 = g16.shape[1] * 16
    n8 = p8.shape[2]
    for r in prange(rows):
        dst = out[r * nb * type_size:(r + 1) * nb * type_size]
        for blk in range(nb):
            if blk < n16:
                src = g16[r, blk // 16]
                lane = blk % 16
            elif blk < n16 + n8:
                src = p8[r]
                lane = blk - n16
            else:
                src = p4[r]
                lane = blk - n16 - n8
            for k in range(type_size):
                dst[blk * type_size + k] = src[k, lane]


def deinterleave(g16, p8, p4, nb):
    """The inverse of interleave: GGUF block rows, padding dropped."""
    rows, type_size = g16.shape[0], g16.shape[2]
    out = np.empty(rows * nb * type_size, np.uint8)
    _deinterleave(g16, p8, p4, nb, out)
    return out


@njit(cache=True)
def _interleave_x(x, block_size, x16, x8, x4, s16, s8, s4):
    nb = x.size // block_size
    n16 = x16.shape[0] * 16
    n8 = x8.shape[1]
    chunks = block_size // 16
    for blk in range(nb):
        if blk < n16:
            X = x16[blk // 16]
            S = s16[blk // 16]
            lane = blk % 16
        elif blk < n16 + n8:
            X = x8
            S = s8
            lane = blk - n16
        else:
            X = x4
            S = s4
            lane = blk - n16 - n8
        for c in range(chunks):
            total = np.float32(0.0)
            for i in range(16):
                v = x[blk * block_size + 16 * c + i]
                X[16 * c + i, lane] = v
                total += v
            S[c, lane] = total


class InterleavedX:
    """An activation vector laid out like a weight's blocks, with the sums of each 16
    elements (for block offsets and mins); made once per vector and shared by every
    weight of the same block size and width."""
    __slots__ = ("x16", "x8", "x4", "s16", "s8", "s4", "block_size", "size")

    def __init__(self, x, block_size):
        self.block_size, self.size = block_size, x.size
        nb = x.size // block_size
        groups, has8, has4, _ = split_blocks(nb)
        chunks = block_size // 16
        self.x16 = np.zeros((groups, block_size, 16), np.float32)
        self.x8 = np.zeros((block_size, 8 if has8 else 0), np.float32)
        self.x4 = np.zeros((block_size, 4 if has4 else 0), np.float32)
        self.s16 = np.zeros((groups, chunks, 16), np.float32)
        self.s8 = np.zeros((chunks, 8 if has8 else 0), np.float32)
        self.s4 = np.zeros((chunks, 4 if has4 else 0), np.float32)
        self.refill(x)

    def refill(self, x):
        """Lay out a new vector of the same size in place (generation reuses one per shape: no allocation)."""
        _interleave_x(np.ascontiguousarray(x, dtype=np.float32), self.block_size,
                      self.x16, self.x8, self.x4, self.s16, self.s8, self.s4)
