"""Block dot products in the group-interleaved layout, one function per format.

`dot_<type>(P, X, S, b, sub)` is the dot product of lane b's block with its activations
(for 256-element super-blocks, of its 32-element chunk `sub`, so that the code inside
the lane loop stays small enough for LLVM to unroll):
P (type_size, lanes) holds a group's interleaved blocks (byte k of lane b at P[k, b]),
X (block_size, lanes) the group's activations (element i of lane b at X[i, b]) and S
(block_size // 16, lanes) the sums of each 16 activations. Called for every lane inside
a reduction, LLVM vectorizes across lanes. The block math is ggml's dequantize_row_*
(gguf_io/blocks has the same formats in GGUF layout).

Three rules keep the lane loop vectorized, 16 lanes wide (each measured: breaking one
makes a kernel 5-10x slower): index arrays only with a bare loop variable or a
constant (take a view of a field, `qs = P[2:18]`, rather than index `P[2 + j]`); unpack
codes only as unsigned values, F32(np.int32(v & mask)), never with an integer offset
such as `q - 8`; apply every offset or min once per block through the activation sums
S (sum_i (q_i - 8) x_i = sum_i q_i x_i - 8 sum_i x_i).
Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K and the IQ4 types are not read natively: repack.py converts them
at load to int8 codes with float32 scales (dot_q8_16, dot_q8_16m).
Activations stay float32: no 8-bit activation quantization (llama.cpp quantizes them
to Q8_0/Q8_K; nibble does not, so its logits stay closer to the exact reference).
"""
import numpy as np
from numba import njit

from .bits import F32, bits_to_f32, half, word


@njit(cache=True, inline="always")
def _nibbles_dot(qs, X, b):
    """sum_j lo(qs[j]) * X[j] + hi(qs[j]) * X[16+j] over one 32-element block."""
    xl = X[0:16]
    xh = X[16:32]
    s = F32(0.0)
    for j in range(16):
        v = np.int32(qs[j, b])
        s += F32(np.int32(v & 15)) * xl[j, b] + F32(np.int32(v >> 4)) * xh[j, b]
    return s


@njit(cache=True, inline="always")
def dot_q4_0(P, X, S, b, sub):
    s = _nibbles_dot(P[2:18], X, b) - F32(8.0) * (S[0, b] + S[1, b])
    return half(P, b, 0) * s


@njit(cache=True, inline="always")
def dot_q4_1(P, X, S, b, sub):
    return half(P, b, 0) * _nibbles_dot(P[4:20], X, b) + half(P, b, 2) * (S[0, b] + S[1, b])


@njit(cache=True, inline="always")
def dot_q8_0(P, X, S, b, sub):
    qs = P[2:34]
    s = F32(0.0)
    for j in range(32):
        s += F32(np.int8(qs[j, b])) * X[j, b]
    return half(P, b, 0) * s


@njit(cache=True, inline="always")
def _scale_min_k4(scales, b, j):
    """The j-th 6-bit (scale, min) of a Q4_K 12-byte scales field."""
    if j < 4:
        return np.int32(scales[j, b]) & 63, np.int32(scales[j + 4, b]) & 63
    sc = (np.int32(scales[j + 4, b]) & 15) | ((np.int32(scales[j - 4, b]) >> 6) << 4)
    m = (np.int32(scales[j + 4, b]) >> 4) | ((np.int32(scales[j, b]) >> 6) << 4)
    return sc, m


@njit(cache=True, inline="always")
def dot_q4_k(P, X, S, b, sub):
    """Chunk `sub` of a Q4_K block: 6-bit scale and min, 4-bit codes. Loops of 16 over two
    16-element halves: LLVM unrolls those fully, which keeps the lane loop vectorized (loops
    of 32 were not unrolled)."""
    sc, m = _scale_min_k4(P[4:16], b, sub)
    base = 16 + 32 * (sub >> 1)
    qa = P[base:base + 16]
    qb = P[base + 16:base + 32]
    xa = X[32 * sub:32 * sub + 16]
    xb = X[32 * sub + 16:32 * sub + 32]
    shift = 4 * (sub & 1)
    s = F32(0.0)
    for l in range(16):
        s += (F32(np.int32((np.int32(qa[l, b]) >> shift) & 15)) * xa[l, b]
              + F32(np.int32((np.int32(qb[l, b]) >> shift) & 15)) * xb[l, b])
    return half(P, b, 0) * F32(sc) * s - half(P, b, 2) * F32(m) * (S[2 * sub, b] + S[2 * sub + 1, b])


@njit(cache=True, inline="always")
def _int8_halves_dot(qs, X, b):
    """(sum of the first 16 codes times x, sum of the last 16): the two per-16 partial dots."""
    xl = X[0:16]
    xh = X[16:32]
    s0 = F32(0.0)
    s1 = F32(0.0)
    for j in range(16):
        s0 += F32(np.int8(qs[j, b])) * xl[j, b]
        s1 += F32(np.int8(qs[16 + j, b])) * xh[j, b]
    return s0, s1


@njit(cache=True, inline="always")
def dot_q8_16(P, X, S, b, sub):
    """Q8_16 (repack.py: from Q6_K, Q3_K, IQ4_NL, IQ4_XS): int8 codes, a float32 scale per 16."""
    s0, s1 = _int8_halves_dot(P[8:40], X, b)
    return bits_to_f32(word(P, b, 0)) * s0 + bits_to_f32(word(P, b, 4)) * s1


@njit(cache=True, inline="always")
def dot_q8_16m(P, X, S, b, sub):
    """Q8_16M (repack.py: from Q2_K, Q5_K): Q8_16 plus a float32 min per 16, applied through the sums S."""
    s0, s1 = _int8_halves_dot(P[16:48], X, b)
    return (bits_to_f32(word(P, b, 0)) * s0 + bits_to_f32(word(P, b, 4)) * s1
            - (bits_to_f32(word(P, b, 8)) * S[0, b] + bits_to_f32(word(P, b, 12)) * S[1, b]))
