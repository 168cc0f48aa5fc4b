"""F32, F16 and BF16: element formats, converted in parallel with ggml's bit-exact rules.

F16 uses ggml's fp16<->fp32 integer conversions (round to nearest even, like F16C and
numpy); BF16 rounding is ggml's `ggml_compute_fp32_to_bf16` (nearest even, NaNs kept quiet).
"""
import numpy as np
from numba import njit, prange

from .bits import bits_to_f32, f32_to_bits, fp16_to_fp32, fp32_to_fp16

CHUNK = 1 << 14


@njit(cache=True, parallel=True)
def _f32_to_f16(x, out):
    for c in prange((x.size + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(x.size, (c + 1) * CHUNK)):
            out[i] = fp32_to_fp16(x[i])


@njit(cache=True, parallel=True)
def _f16_to_f32(h, out):
    for c in prange((h.size + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(h.size, (c + 1) * CHUNK)):
            out[i] = fp16_to_fp32(h[i])


@njit(cache=True, parallel=True)
def _f32_to_bf16(x, out):
    for c in prange((x.size + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(x.size, (c + 1) * CHUNK)):
            u = np.uint32(f32_to_bits(x[i]))
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                out[i] = np.uint16((u >> 16) | np.uint32(64))
            else:
                out[i] = np.uint16((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16)


@njit(cache=True, parallel=True)
def _bf16_to_f32(h, out):
    for c in prange((h.size + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(h.size, (c + 1) * CHUNK)):
            out[i] = bits_to_f32(np.uint32(h[i]) << 16)


def quantize_f32(x, out):
    out.view(np.float32)[:] = x


def dequantize_f32(raw, out):
    out[:] = raw.view(np.float32)


def quantize_f16(x, out):
    _f32_to_f16(x, out.view(np.uint16))


def dequantize_f16(raw, out):
    _f16_to_f32(raw.view(np.uint16), out)


def quantize_bf16(x, out):
    _f32_to_bf16(x, out.view(np.uint16))


def dequantize_bf16(raw, out):
    _bf16_to_f32(raw.view(np.uint16), out)
