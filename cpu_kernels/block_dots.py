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
Activations stay float32: no 8-bit activation quantization (llama.cpp quantizes them
to Q8_0/Q8_K; nibble does not, so its logits stay closer to the exact reference).
"""
import numpy as np
from numba import njit

from .bits import F32, bits_to_f32, half, word

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)


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
def _fifth_bits_dot(P, X, b, qh_at):
    """sum of 16 * x over the elements whose fifth bit (in the 32-bit qh) is set."""
    qh = word(P, b, qh_at)
    s = F32(0.0)
    for j in range(32):
        s += F32(np.int32((qh >> j) & 1)) * X[j, b]
    return F32(16.0) * s


@njit(cache=True, inline="always")
def dot_q5_0(P, X, S, b, sub):
    s = _nibbles_dot(P[6:22], X, b) + _fifth_bits_dot(P, X, b, 2) - F32(16.0) * (S[0, b] + S[1, b])
    return half(P, b, 0) * s


@njit(cache=True, inline="always")
def dot_q5_1(P, X, S, b, sub):
    s = _nibbles_dot(P[8:24], X, b) + _fifth_bits_dot(P, X, b, 4)
    return half(P, b, 0) * s + half(P, b, 2) * (S[0, b] + S[1, b])


@njit(cache=True, inline="always")
def dot_q8_0(P, X, S, b, sub):
    qs = P[2:34]
    s = F32(0.0)
    for j in range(32):
        s += F32(np.int8(qs[j, b])) * X[j, b]
    return half(P, b, 0) * s


@njit(cache=True, inline="always")
def dot_iq4_nl(P, X, S, b, sub):
    qs = P[2:18]
    xl = X[0:16]
    xh = X[16:32]
    s = F32(0.0)
    for j in range(16):
        v = np.int32(qs[j, b])
        s += KVALUES_IQ4NL[np.int32(v & 15)] * xl[j, b] + KVALUES_IQ4NL[np.int32(v >> 4)] * xh[j, b]
    return half(P, b, 0) * s


# ---------------------------------------------------------------- 256-element super-blocks
# Each call covers the 32-element chunk `sub` (0..7) of lane b's super-block.

@njit(cache=True, inline="always")
def _scale_min_k4(scales, b, j):
    """The j-th 6-bit (scale, min) of a Q4_K/Q5_K 12-byte scales field."""
    if j < 4:
        return np.int32(scales[j, b]) & 63, np.int32(scales[j + 4, b]) & 63
    sc = (np.int32(scales[j + 4, b]) & 15) | ((np.int32(scales[j - 4, b]) >> 6) << 4)
    m = (np.int32(scales[j + 4, b]) >> 4) | ((np.int32(scales[j, b]) >> 6) << 4)
    return sc, m


@njit(cache=True, inline="always")
def _k4_chunk(P, X, S, b, sub, qs_at, qh_at):
    """Chunk `sub` of a Q4_K (qh_at < 0) or Q5_K block: (6-bit scale, 6-bit min,
    sum of codes * x, sum of x). Loops of 16 over two 16-element halves: LLVM unrolls
    those fully, which keeps the lane loop vectorized (loops of 32 were not unrolled)."""
    sc, m = _scale_min_k4(P[4:16], b, sub)
    base = qs_at + 32 * (sub >> 1)
    qa = P[base:base + 16]
    qb = P[base + 16:base + 32]
    xa = X[32 * sub:32 * sub + 16]
    xb = X[32 * sub + 16:32 * sub + 32]
    shift = 4 * (sub & 1)
    s = F32(0.0)
    if qh_at < 0:
        for l in range(16):
            s += (F32(np.int32((np.int32(qa[l, b]) >> shift) & 15)) * xa[l, b]
                  + F32(np.int32((np.int32(qb[l, b]) >> shift) & 15)) * xb[l, b])
    else:
        ha = P[qh_at:qh_at + 16]
        hb = P[qh_at + 16:qh_at + 32]
        for l in range(16):
            ca = ((np.int32(qa[l, b]) >> shift) & 15) | (((np.int32(ha[l, b]) >> sub) & 1) << 4)
            cb = ((np.int32(qb[l, b]) >> shift) & 15) | (((np.int32(hb[l, b]) >> sub) & 1) << 4)
            s += F32(np.int32(ca)) * xa[l, b] + F32(np.int32(cb)) * xb[l, b]
    return sc, m, s, S[2 * sub, b] + S[2 * sub + 1, b]


@njit(cache=True, inline="always")
def dot_q4_k(P, X, S, b, sub):
    sc, m, s, sx = _k4_chunk(P, X, S, b, sub, 16, -1)
    return half(P, b, 0) * F32(sc) * s - half(P, b, 2) * F32(m) * sx


@njit(cache=True, inline="always")
def dot_q5_k(P, X, S, b, sub):
    sc, m, s, sx = _k4_chunk(P, X, S, b, sub, 48, 16)
    return half(P, b, 0) * F32(sc) * s - half(P, b, 2) * F32(m) * sx


@njit(cache=True, inline="always")
def dot_q8_16(P, X, S, b, sub):
    """Q8_16 (repack.py, from Q6_K): int8 codes with a float32 scale per 16."""
    qs = P[8:40]
    xl = X[0:16]
    xh = X[16:32]
    s0 = F32(0.0)
    s1 = F32(0.0)
    for j in range(16):
        s0 += F32(np.int8(qs[j, b])) * xl[j, b]
        s1 += F32(np.int8(qs[16 + j, b])) * xh[j, b]
    return bits_to_f32(word(P, b, 0)) * s0 + bits_to_f32(word(P, b, 4)) * s1


@njit(cache=True, inline="always")
def dot_q6_k(P, X, S, b, sub):
    """Chunk `sub` = elements 32*sub.. of 6-bit codes (offset 32), two int8-scaled halves."""
    half128 = sub >> 2
    quarter = sub & 3
    ql = P[64 * half128 + 32 * (quarter & 1):64 * half128 + 32 * (quarter & 1) + 32]
    qh = P[128 + 32 * half128:160 + 32 * half128]
    x = X[32 * sub:32 * sub + 32]
    lo_shift = 4 * (quarter >> 1)
    hi_shift = 2 * quarter
    s0 = F32(0.0)
    s1 = F32(0.0)
    for l in range(16):
        q0 = ((np.int32(ql[l, b]) >> lo_shift) & 15) | (((np.int32(qh[l, b]) >> hi_shift) & 3) << 4)
        q1 = ((np.int32(ql[16 + l, b]) >> lo_shift) & 15) | (((np.int32(qh[16 + l, b]) >> hi_shift) & 3) << 4)
        s0 += F32(np.int32(q0)) * x[l, b]
        s1 += F32(np.int32(q1)) * x[16 + l, b]
    scales = P[192:208]
    k = 8 * half128 + 2 * quarter
    sc0 = F32(np.int8(scales[k, b]))
    sc1 = F32(np.int8(scales[k + 1, b]))
    total = sc0 * (s0 - F32(32.0) * S[2 * sub, b]) + sc1 * (s1 - F32(32.0) * S[2 * sub + 1, b])
    return half(P, b, 208) * total


@njit(cache=True, inline="always")
def dot_q2_k(P, X, S, b, sub):
    """Chunk `sub`: 2-bit codes at shift 2*(sub%4) of qs[32*(sub//4)..], 4-bit scale and min per 16."""
    qs = P[16 + 32 * (sub >> 2):48 + 32 * (sub >> 2)]
    x = X[32 * sub:32 * sub + 32]
    shift = 2 * (sub & 3)
    s0 = F32(0.0)
    s1 = F32(0.0)
    for l in range(16):
        s0 += F32(np.int32((np.int32(qs[l, b]) >> shift) & 3)) * x[l, b]
        s1 += F32(np.int32((np.int32(qs[16 + l, b]) >> shift) & 3)) * x[16 + l, b]
    sc0 = np.int32(P[2 * sub, b])
    sc1 = np.int32(P[2 * sub + 1, b])
    total = F32(sc0 & 15) * s0 + F32(sc1 & 15) * s1
    mins = F32(sc0 >> 4) * S[2 * sub, b] + F32(sc1 >> 4) * S[2 * sub + 1, b]
    return half(P, b, 80) * total - half(P, b, 82) * mins


@njit(cache=True, inline="always")
def _q3_scale(scales, b, j):
    """The j-th 6-bit Q3_K scale (minus 32) of the 12-byte scales field."""
    low = np.int32(scales[j, b]) & 15 if j < 8 else np.int32(scales[j - 8, b]) >> 4
    high = (np.int32(scales[8 + (j & 3), b]) >> (2 * (j >> 2))) & 3
    return np.int32(low | (high << 4)) - 32


@njit(cache=True, inline="always")
def dot_q3_k(P, X, S, b, sub):
    """Chunk `sub`: codes low2 | hmask bit << 2 in 0..7 (value code - 4), scale per 16."""
    qs = P[32 + 32 * (sub >> 2):64 + 32 * (sub >> 2)]
    hmask = P[0:32]
    x = X[32 * sub:32 * sub + 32]
    shift = 2 * (sub & 3)
    s0 = F32(0.0)
    s1 = F32(0.0)
    for l in range(16):
        c0 = ((np.int32(qs[l, b]) >> shift) & 3) | (((np.int32(hmask[l, b]) >> sub) & 1) << 2)
        c1 = ((np.int32(qs[16 + l, b]) >> shift) & 3) | (((np.int32(hmask[16 + l, b]) >> sub) & 1) << 2)
        s0 += F32(np.int32(c0)) * x[l, b]
        s1 += F32(np.int32(c1)) * x[16 + l, b]
    scales = P[96:108]
    total = (F32(_q3_scale(scales, b, 2 * sub)) * (s0 - F32(4.0) * S[2 * sub, b])
             + F32(_q3_scale(scales, b, 2 * sub + 1)) * (s1 - F32(4.0) * S[2 * sub + 1, b]))
    return half(P, b, 108) * total


@njit(cache=True, inline="always")
def dot_iq4_xs(P, X, S, b, sub):
    scales_h = np.int32(P[2, b]) | (np.int32(P[3, b]) << 8)
    ls = ((np.int32(P[4 + (sub >> 1), b]) >> (4 * (sub & 1))) & 15) | (((scales_h >> (2 * sub)) & 3) << 4)
    qs = P[8 + 16 * sub:24 + 16 * sub]
    xl = X[32 * sub:32 * sub + 16]
    xh = X[32 * sub + 16:32 * sub + 32]
    s = F32(0.0)
    for j in range(16):
        v = np.int32(qs[j, b])
        s += KVALUES_IQ4NL[np.int32(v & 15)] * xl[j, b] + KVALUES_IQ4NL[np.int32(v >> 4)] * xh[j, b]
    return half(P, b, 0) * F32(np.int32(ls) - 32) * s
