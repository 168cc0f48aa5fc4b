"""Load-time conversions for formats whose native codes do not vectorize well in Numba.

Q6_K -> "Q8_16": each 32 elements become two float32 scales (one per 16, the product d * scale
that ggml computes) and 32 int8 codes (the 6-bit code minus 32). The values are exactly ggml's
(d * scale computed first, then times the code, as in dequantize_row_q6_K), at 1.25 bytes per
weight instead of 0.82: the 6-bit unpacking ran at 1-2 GB/s, while int8 codes run at the Q8_0
kernel's speed.
"""
import numpy as np
from numba import njit, prange

from .bits import F32, bits_to_f32, f32_to_bits, fp16_to_fp32

Q6_K_BYTES, Q8_16_BYTES = 210, 40


@njit(cache=True, parallel=True)
def _q6_k_to_q8_16(src, dst):
    """src (n_superblocks, 210) Q6_K -> dst (n_superblocks, 8, 40) Q8_16."""
    for i in prange(src.shape[0]):
        block = src[i]
        out = dst[i]
        d = fp16_to_fp32(np.int32(block[208]) | (np.int32(block[209]) << 8))
        for group in range(16):
            bits = f32_to_bits(F32(d * F32(np.int8(block[192 + group]))))
            at = 4 * (group & 1)
            for k in range(4):
                out[group >> 1, at + k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(255))
        for index in range(256):
            half, rest = index >> 7, index & 127
            chunk, lane = rest >> 5, rest & 31
            low = (np.int32(block[64 * half + lane + 32 * (chunk & 1)]) >> (4 * (chunk >> 1))) & 15
            high = (np.int32(block[128 + 32 * half + lane]) >> (2 * chunk)) & 3
            out[index >> 5, 8 + (index & 31)] = np.uint8(((low | (high << 4)) - 32) & 255)


def repack_q6_k(raw, rows, cols):
    """Q6_K rows (GGUF bytes) -> Q8_16 rows, in new memory."""
    n = rows * (cols // 256)
    dst = np.empty((n, 8, Q8_16_BYTES), np.uint8)
    _q6_k_to_q8_16(np.asarray(raw, np.uint8).reshape(n, Q6_K_BYTES), dst)
    return dst.reshape(-1)


@njit(cache=True, parallel=True)
def dequantize_q8_16(raw, out):
    """Q8_16 bytes -> float32 values (for the matmul path)."""
    blocks = raw.reshape(-1, Q8_16_BYTES)
    for i in prange(blocks.shape[0]):
        block = blocks[i]
        for half in range(2):
            at = 4 * half
            bits = (np.uint32(block[at]) | (np.uint32(block[at + 1]) << 8) | (np.uint32(block[at + 2]) << 16)
                    | (np.uint32(block[at + 3]) << 24))
            scale = bits_to_f32(bits)
            for j in range(16):
                out[32 * i + 16 * half + j] = scale * F32(np.int8(block[8 + 16 * half + j]))
