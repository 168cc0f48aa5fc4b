"""Scalar helpers for the kernels: half floats (Numba has no float16: read through LLVM's
fpext, written by integer tricks) and lane access into group-interleaved block bytes.

Wrapping integer expressions in np.int32(...) matters: Numba types int32 & int32 as
int64, and 64-bit lanes halve the vector width; an explicit narrowing lets LLVM's
vectorizer keep the unpacking in 8- or 32-bit lanes.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F32 = np.float32


@intrinsic
def f32_to_bits(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def bits_to_f32(typingctx, x):
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


@intrinsic
def fp16_to_fp32(typingctx, h):
    """IEEE half bits (the low 16 bits of an integer) -> float32, exactly: LLVM's fpext, one
    VCVTPH2PS for 16 values where the CPU has F16C (ggml's ggml_compute_fp16_to_fp32)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if value.type.width != 16:
            value = builder.trunc(value, ir.IntType(16))
        return builder.fpext(builder.bitcast(value, ir.HalfType()), ir.FloatType())
    return types.float32(h), codegen


@njit(cache=True, inline="always")
def half(P, b, k):
    """The f16 at bytes k, k+1 of lane b's block, as float32."""
    return fp16_to_fp32(np.int32(P[k, b]) | (np.int32(P[k + 1, b]) << 8))


@njit(cache=True, inline="always")
def word(P, b, k):
    """The little-endian uint32 at bytes k..k+3 of lane b's block."""
    return (np.int64(P[k, b]) | (np.int64(P[k + 1, b]) << 8)
            | (np.int64(P[k + 2, b]) << 16) | (np.int64(P[k + 3, b]) << 24))


@njit(cache=True, inline="always")
def fp32_to_fp16(f):
    """float32 -> IEEE half bits, round to nearest even (ggml_compute_fp32_to_fp16)."""
    f = F32(f)
    base = (abs(f) * F32(2.0 ** 112)) * F32(2.0 ** -110)
    w = f32_to_bits(f)
    shl1_w = (np.uint32(w) + np.uint32(w)) & np.uint32(0xFFFFFFFF)
    sign = w & np.uint32(0x80000000)
    bias = max(shl1_w & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = bits_to_f32((bias >> 1) + np.uint32(0x07800000)) + base
    bits = f32_to_bits(base)
    nonsign = ((bits >> 13) & np.uint32(0x00007C00)) + (bits & np.uint32(0x00000FFF))
    return np.uint16((sign >> 16) | (np.uint32(0x7E00) if shl1_w > np.uint32(0xFF000000) else nonsign))


@njit(cache=True, inline="always")
def u16_at(block, at):
    """The little-endian 16-bit word at byte `at` of a GGUF block, as int32."""
    return np.int32(block[at]) | (np.int32(block[at + 1]) << 8)


@njit(cache=True, inline="always")
def u32_at(block, at):
    """The little-endian 32-bit word at byte `at` of a GGUF block (any alignment), as uint32."""
    return (np.uint32(block[at]) | (np.uint32(block[at + 1]) << 8) | (np.uint32(block[at + 2]) << 16)
            | (np.uint32(block[at + 3]) << 24))
