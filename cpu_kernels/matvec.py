"""Quantized matrix-vector products: W (rows, cols) @ x (cols,) -> out (rows,).

Block formats read the group-interleaved layout (layout.py) through one driver and a
per-format block dot (block_dots.py); each kernel below is that pairing, compiled and
cached on its own. Float formats (F32, F16, BF16) keep the GGUF layout.
"""
import numpy as np
from numba import njit, prange

from . import block_dots as dots
from .bits import F32, bits_to_f32, fp16_to_fp32


@njit(cache=True, inline="always")
def _interleaved_matvec(block_dot, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, n_chunks):
    """out[r] = sum over row r's blocks of block_dot; the layout.py parts of W and of x.
    n_chunks: 32-element chunks per block (1, or 8 for 256-element super-blocks)."""
    rows, groups = g16.shape[0], g16.shape[1]
    has8 = p8.shape[2] == 8
    has4 = p4.shape[2] == 4
    for r in prange(rows):
        total = F32(0.0)
        for g in range(groups):
            P = g16[r, g]
            X = x16[g]
            S = s16[g]
            for b in range(16):
                total += _block(block_dot, P, X, S, b, n_chunks)
        if has8:
            P = p8[r]
            for b in range(8):
                total += _block(block_dot, P, x8, s8, b, n_chunks)
        if has4:
            P = p4[r]
            for b in range(4):
                total += _block(block_dot, P, x4, s4, b, n_chunks)
        out[r] = total


@njit(cache=True, inline="always")
def _block(block_dot, P, X, S, b, n_chunks):
    """A whole block; chunks spelled out with constant indices so every slice bound is a
    constant and the lane loop body is straight-line code LLVM can vectorize."""
    if n_chunks == 1:
        return block_dot(P, X, S, b, 0)
    return ((block_dot(P, X, S, b, 0) + block_dot(P, X, S, b, 1))
            + (block_dot(P, X, S, b, 2) + block_dot(P, X, S, b, 3))
            + (block_dot(P, X, S, b, 4) + block_dot(P, X, S, b, 5))
            + (block_dot(P, X, S, b, 6) + block_dot(P, X, S, b, 7)))


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q4_0(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q4_0, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 1)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q4_1(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q4_1, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 1)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q8_0(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q8_0, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 1)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q4_k(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q4_k, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 8)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q8_16(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q8_16, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 1)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_q8_16m(g16, p8, p4, x16, x8, x4, s16, s8, s4, out):
    _interleaved_matvec(dots.dot_q8_16m, g16, p8, p4, x16, x8, x4, s16, s8, s4, out, 1)


@njit(cache=True, parallel=True, fastmath=True)
def matvec_f32(w, x, out):
    """w: (rows, cols) float32."""
    for r in prange(w.shape[0]):
        row = w[r]
        total = F32(0.0)
        for i in range(row.size):
            total += row[i] * x[i]
        out[r] = total


@njit(cache=True, parallel=True, fastmath=True)
def matvec_f16(w, x, out):
    """w: (rows, cols) uint16 half-float bits."""
    for r in prange(w.shape[0]):
        row = w[r]
        total = F32(0.0)
        for i in range(row.size):
            total += fp16_to_fp32(row[i]) * x[i]
        out[r] = total


@njit(cache=True, parallel=True, fastmath=True)
def matvec_bf16(w, x, out):
    """w: (rows, cols) uint16 bfloat16 bits."""
    for r in prange(w.shape[0]):
        row = w[r]
        total = F32(0.0)
        for i in range(row.size):
            total += bits_to_f32(np.uint32(row[i]) << 16) * x[i]
        out[r] = total
