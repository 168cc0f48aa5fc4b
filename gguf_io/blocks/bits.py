"""Bit-exact scalar helpers shared by the block kernels.

Numba has no float16 on the CPU, so half floats are converted here with the same
integer tricks as ggml (`ggml_compute_fp16_to_fp32` / `ggml_compute_fp32_to_fp16` in
ggml-impl.h): round-to-nearest-even, identical to F16C hardware and numpy.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F32 = np.float32


@intrinsic
def f32_to_bits(typingctx, x):
    """The IEEE bits of a float32, as uint32 (a bitcast, not a conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def bits_to_f32(typingctx, x):
    """The float32 whose IEEE bits are the low 32 bits of an integer."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if value.type.width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif value.type.width < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())
    return types.float32(x), codegen


@njit(cache=True, inline="always")
def fp16_to_fp32(h):
    w = np.uint32((np.uint32(h) & 0xFFFF) << 16)
    sign = w & np.uint32(0x80000000)
    two_w = (w + w) & np.uint32(0xFFFFFFFF)
    normalized = bits_to_f32((two_w >> 4) + (np.uint32(0xE0) << 23)) * F32(2.0 ** -112)
    denormalized = bits_to_f32((two_w >> 17) | (np.uint32(126) << 23)) - F32(0.5)
    if two_w < (np.uint32(1) << 27):
        return bits_to_f32(sign | f32_to_bits(denormalized))
    return bits_to_f32(sign | f32_to_bits(normalized))


@njit(cache=True, inline="always")
def fp32_to_fp16(f):
    """float32 -> IEEE half bits (uint16), round to nearest even."""
    f = F32(f)
    base = (abs(f) * F32(2.0 ** 112)) * F32(2.0 ** -110)
    w = f32_to_bits(f)
    shl1_w = (np.uint32(w) + np.uint32(w)) & np.uint32(0xFFFFFFFF)
    sign = w & np.uint32(0x80000000)
    bias = shl1_w & np.uint32(0xFF000000)
    if bias < np.uint32(0x71000000):
        bias = np.uint32(0x71000000)
    base = bits_to_f32((bias >> 1) + np.uint32(0x07800000)) + base
    bits = f32_to_bits(base)
    exp_bits = (bits >> 13) & np.uint32(0x00007C00)
    mantissa_bits = bits & np.uint32(0x00000FFF)
    nonsign = exp_bits + mantissa_bits
    if shl1_w > np.uint32(0xFF000000):
        nonsign = np.uint32(0x7E00)
    return np.uint16((sign >> 16) | nonsign)


@njit(cache=True, inline="always")
def nearest_int(fval):
    """ggml's nearest_int: round half to even, exact for |fval| <= 4194303."""
    val = F32(fval) + F32(12582912.0)
    i = np.int32(f32_to_bits(val) & np.uint32(0x007FFFFF))
    return i - np.int32(0x00400000)


@njit(cache=True, inline="always")
def put_u16(out, offset, value):
    out[offset] = np.uint8(value & 0xFF)
    out[offset + 1] = np.uint8((value >> 8) & 0xFF)


@njit(cache=True, inline="always")
def get_u16(raw, offset):
    return np.uint32(raw[offset]) | (np.uint32(raw[offset + 1]) << 8)


@njit(cache=True, inline="always")
def get_f16(raw, offset):
    return fp16_to_fp32(get_u16(raw, offset))


@njit(cache=True, inline="always")
def get_u32(raw, offset):
    return (np.uint32(raw[offset]) | (np.uint32(raw[offset + 1]) << 8)
            | (np.uint32(raw[offset + 2]) << 16) | (np.uint32(raw[offset + 3]) << 24))


@njit(cache=True, inline="always")
def put_u32(out, offset, value):
    for k in range(4):
        out[offset + k] = np.uint8((value >> (8 * k)) & 0xFF)


@njit(cache=True, inline="always")
def round_half_away(v):
    """C's roundf / lroundf: halves away from zero (exact: a float32 plus 0.5 fits a float64)."""
    r = math.floor(abs(np.float64(v)) + 0.5)
    return -r if v < 0 else r


@njit(cache=True, inline="always")
def signed_absmax(x):
    """(largest |x|, that element with its sign), the first one on ties: ggml's amax / max pair."""
    amax = F32(0.0)
    vmax = F32(0.0)
    for v in x:
        if abs(v) > amax:
            amax = abs(v)
            vmax = v
    return amax, vmax
