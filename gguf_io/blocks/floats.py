"""F32, F16 and BF16: plain element formats, converted with numpy (already at memory speed).

BF16 rounding is ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaNs kept quiet.
"""
import numpy as np


def quantize_f32(x, out):
    out.view(np.float32)[:] = x


def dequantize_f32(raw, out):
    out[:] = raw.view(np.float32)


def quantize_f16(x, out):
    out.view(np.float16)[:] = x


def dequantize_f16(raw, out):
    out[:] = raw.view(np.float16)


def quantize_bf16(x, out):
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    out.view(np.uint16)[:] = np.where(is_nan, (bits >> 16) | 64, rounded).astype(np.uint16)


def dequantize_bf16(raw, out):
    out.view(np.uint32)[:] = raw.view(np.uint16).astype(np.uint32) << 16
