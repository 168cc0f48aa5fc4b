"""Load-time conversions for formats whose native codes do not vectorize well in Numba.

The 2-, 3-, 5- and 6-bit K-quants, Q5_0/Q5_1 and the IQ4 lookup codes are split across bit planes and
tables; unpacking them in the lane loop ran at 1-3 GB/s. At load they become one of two plain
layouts, per 32 elements (one block):

  Q8_16   two float32 scales (one per 16 elements) + 32 int8 codes            (40 bytes)
  Q8_16M  two float32 scales + two float32 mins + 32 int8 codes              (48 bytes)

value = scale * code (- min), with scale and min the very products ggml's dequantize_row_*
computes first (e.g. d * sc for Q6_K, d * sc and dmin * m for Q5_K, d and -m for Q5_1), so dequantizing the
repacked bytes gives ggml's values bit for bit. Both layouts use the Q8_0-style kernel, at the
cost of more bytes per weight (1.25 or 1.5 instead of 0.33-0.82).
"""
import numpy as np
from numba import njit, prange

from .bits import F32, bits_to_f32, f32_to_bits, fp16_to_fp32

Q8_16_BYTES, Q8_16M_BYTES = 40, 48
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int32)


# ---------------------------------------------------------------- writing the plain layouts

@njit(cache=True, inline="always")
def _put_f32(row, at, value):
    bits = f32_to_bits(F32(value))
    for k in range(4):
        row[at + k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(255))


@njit(cache=True, inline="always")
def _put_group(blocks, group, scale, minimum):
    """Scale (and, for Q8_16M, min) of the 16-element group `group` of blocks (n_blocks, 40 or 48)."""
    row = blocks[group >> 1]
    _put_f32(row, 4 * (group & 1), scale)
    if blocks.shape[1] == Q8_16M_BYTES:
        _put_f32(row, 8 + 4 * (group & 1), minimum)


@njit(cache=True, inline="always")
def _put_block(blocks, block, scale, minimum):
    """The same scale (and min) for both 16-element groups of 32-element block `block`."""
    _put_group(blocks, 2 * block, scale, minimum)
    _put_group(blocks, 2 * block + 1, scale, minimum)


@njit(cache=True, inline="always")
def _put_code(blocks, index, code):
    blocks[index >> 5, blocks.shape[1] - 32 + (index & 31)] = np.uint8(code & 255)


@njit(cache=True, inline="always")
def _f16(block, at):
    return fp16_to_fp32(np.int32(block[at]) | (np.int32(block[at + 1]) << 8))


# ---------------------------------------------------------------- one converter per source format

@njit(cache=True, parallel=True)
def _from_q6_k(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        d = _f16(block, 208)
        for group in range(16):
            _put_group(out, group, d * F32(np.int8(block[192 + group])), F32(0.0))
        for index in range(256):
            half, rest = index >> 7, index & 127
            chunk, lane = rest >> 5, rest & 31
            low = (np.int32(block[64 * half + lane + 32 * (chunk & 1)]) >> (4 * (chunk >> 1))) & 15
            high = (np.int32(block[128 + 32 * half + lane]) >> (2 * chunk)) & 3
            _put_code(out, index, (low | (high << 4)) - 32)


@njit(cache=True, parallel=True)
def _from_q3_k(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        d = _f16(block, 108)
        for group in range(16):
            low = np.int32(block[96 + group]) & 15 if group < 8 else np.int32(block[96 + group - 8]) >> 4
            high = (np.int32(block[104 + group % 4]) >> (2 * (group // 4))) & 3
            _put_group(out, group, d * F32((low | (high << 4)) - 32), F32(0.0))
        for index in range(256):
            half, rest = index >> 7, index & 127
            shift_i, lane = rest >> 5, rest & 31
            low = (np.int32(block[32 + 32 * half + lane]) >> (2 * shift_i)) & 3
            high = 4 - 4 * ((np.int32(block[lane]) >> (4 * half + shift_i)) & 1)
            _put_code(out, index, low - high)


@njit(cache=True, parallel=True)
def _from_q2_k(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        d, dmin = _f16(block, 80), _f16(block, 82)
        for group in range(16):
            sc = np.int32(block[group])
            _put_group(out, group, d * F32(sc & 15), dmin * F32(sc >> 4))
        for index in range(256):
            half, rest = index >> 7, index & 127
            shift_i, lane = rest >> 5, rest & 31
            _put_code(out, index, (np.int32(block[16 + 32 * half + lane]) >> (2 * shift_i)) & 3)


@njit(cache=True, inline="always")
def scale_min_k4(j, block):
    """The j-th 6-bit scale and min of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4)."""
    q = block[4:16]
    if j < 4:
        return np.int32(q[j]) & 63, np.int32(q[j + 4]) & 63
    return ((np.int32(q[j + 4]) & 15) | ((np.int32(q[j - 4]) >> 6) << 4),
            (np.int32(q[j + 4]) >> 4) | ((np.int32(q[j]) >> 6) << 4))


@njit(cache=True, parallel=True)
def _from_q5_k(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        d, dmin = _f16(block, 0), _f16(block, 2)
        for sub in range(8):
            sc, m = scale_min_k4(sub, block)
            _put_block(out, sub, d * F32(sc), dmin * F32(m))
        for index in range(256):
            g, rest = index >> 6, index & 63
            upper, lane = rest >> 5, rest & 31
            nibble = (np.int32(block[48 + 32 * g + lane]) >> (4 * upper)) & 15
            fifth = (np.int32(block[16 + lane]) >> (2 * g + upper)) & 1
            _put_code(out, index, nibble | (fifth << 4))


@njit(cache=True, inline="always")
def _put_fifth_bit_codes(block, out, qh_at, qs_at, offset):
    """Q5_0/Q5_1 codes: low nibbles of qs with bit j (or j + 16) of qh as the fifth bit, minus `offset`."""
    qh = np.int64(block[qh_at]) | (np.int64(block[qh_at + 1]) << 8) | (np.int64(block[qh_at + 2]) << 16) \
        | (np.int64(block[qh_at + 3]) << 24)
    for j in range(16):
        q = np.int32(block[qs_at + j])
        _put_code(out, j, ((q & 15) | np.int32(((qh >> j) << 4) & 16)) - offset)
        _put_code(out, 16 + j, ((q >> 4) | np.int32((qh >> (j + 12)) & 16)) - offset)


@njit(cache=True, parallel=True)
def _from_q5_0(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        _put_block(out, 0, _f16(block, 0), F32(0.0))
        _put_fifth_bit_codes(block, out, 2, 6, 16)


@njit(cache=True, parallel=True)
def _from_q5_1(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        _put_block(out, 0, _f16(block, 0), -_f16(block, 2))    # scale * code - (-m) is exactly ggml's x * d + m
        _put_fifth_bit_codes(block, out, 4, 8, 0)


@njit(cache=True, parallel=True)
def _from_iq4_nl(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        _put_block(out, 0, _f16(block, 0), F32(0.0))
        for j in range(16):
            q = np.int32(block[2 + j])
            _put_code(out, j, KVALUES_IQ4NL[q & 15])
            _put_code(out, 16 + j, KVALUES_IQ4NL[q >> 4])


@njit(cache=True, parallel=True)
def _from_iq4_xs(src, dst):
    for i in prange(src.shape[0]):
        block, out = src[i], dst[i]
        d = _f16(block, 0)
        scales_high = np.int32(block[2]) | (np.int32(block[3]) << 8)
        for sub in range(8):
            ls = ((np.int32(block[4 + sub // 2]) >> (4 * (sub % 2))) & 15) | (((scales_high >> (2 * sub)) & 3) << 4)
            _put_block(out, sub, d * F32(ls - 32), F32(0.0))
            for j in range(16):
                q = np.int32(block[8 + 16 * sub + j])
                _put_code(out, 32 * sub + j, KVALUES_IQ4NL[q & 15])
                _put_code(out, 32 * sub + 16 + j, KVALUES_IQ4NL[q >> 4])


def _repacker(convert, block_size, block_bytes, target_bytes):
    def repack(raw, rows, cols):
        n = rows * (cols // block_size)
        dst = np.empty((n, block_size // 32, target_bytes), np.uint8)
        convert(np.asarray(raw, np.uint8).reshape(n, block_bytes), dst)
        return dst.reshape(-1)
    repack.__doc__ = f"GGUF rows ({block_bytes} bytes per {block_size}) -> {target_bytes}-byte blocks of 32, new memory."
    return repack


repack_q6_k = _repacker(_from_q6_k, 256, 210, Q8_16_BYTES)
repack_q3_k = _repacker(_from_q3_k, 256, 110, Q8_16_BYTES)
repack_q2_k = _repacker(_from_q2_k, 256, 84, Q8_16M_BYTES)
repack_q5_k = _repacker(_from_q5_k, 256, 176, Q8_16M_BYTES)
repack_q5_0 = _repacker(_from_q5_0, 32, 22, Q8_16_BYTES)
repack_q5_1 = _repacker(_from_q5_1, 32, 24, Q8_16M_BYTES)
repack_iq4_nl = _repacker(_from_iq4_nl, 32, 18, Q8_16_BYTES)
repack_iq4_xs = _repacker(_from_iq4_xs, 256, 136, Q8_16_BYTES)


# ---------------------------------------------------------------- dequantizing (matmul path)

@njit(cache=True, inline="always")
def _get_f32(block, at):
    return bits_to_f32(np.uint32(block[at]) | (np.uint32(block[at + 1]) << 8) | (np.uint32(block[at + 2]) << 16)
                       | (np.uint32(block[at + 3]) << 24))


@njit(cache=True, parallel=True)
def dequantize_q8_16(raw, out):
    blocks = raw.reshape(-1, Q8_16_BYTES)
    for i in prange(blocks.shape[0]):
        block = blocks[i]
        for half in range(2):
            scale = _get_f32(block, 4 * half)
            for j in range(16):
                out[32 * i + 16 * half + j] = scale * F32(np.int8(block[8 + 16 * half + j]))


@njit(cache=True, parallel=True)
def dequantize_q8_16m(raw, out):
    blocks = raw.reshape(-1, Q8_16M_BYTES)
    for i in prange(blocks.shape[0]):
        block = blocks[i]
        for half in range(2):
            scale, minimum = _get_f32(block, 4 * half), _get_f32(block, 8 + 4 * half)
            for j in range(16):
                out[32 * i + 16 * half + j] = scale * F32(np.int8(block[16 + 16 * half + j])) - minimum
