"""The block-format table: one row per GGML type, as ggml's `type_traits`.

Block size and bytes per block come from the `gguf` package; each row adds the kernels
that turn float32 rows into blocks and back. Adding a format is adding a row.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from .blocks import floats, fp4, gridquants, iquants, kquants, legacy, ternary, weighted


@dataclass(frozen=True)
class BlockFormat:
    type: T
    block_size: int          # elements per block
    type_size: int           # bytes per block
    # (float32 flat, uint8 flat out); None for a type nibble reads but cannot write, or writes only weighted
    quantize_blocks: Optional[Callable[[np.ndarray, np.ndarray], None]]
    dequantize_blocks: Callable[[np.ndarray, np.ndarray], None]  # (uint8 flat, float32 flat out)
    # (float32 flat, uint8 flat out, float32 weights per column of a row): llama.cpp's importance-weighted search
    quantize_weighted: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = None

    @property
    def name(self) -> str:
        return self.type.name

    def row_bytes(self, n_per_row: int) -> int:
        return n_per_row // self.block_size * self.type_size


def _ignoring_weights(quantize):
    """For the types whose llama.cpp quantizer takes an importance matrix and ignores it (Q8_0, the ternary and
    FP4 types): the same bytes with or without one."""
    def quantize_weighted(x, out, weights):
        quantize(x, out)
    return quantize_weighted


def _row(qtype, quantize, dequantize, weighted=None):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return BlockFormat(qtype, block_size, type_size, quantize, dequantize, weighted)


FORMATS: dict[T, BlockFormat] = {row.type: row for row in (
    _row(T.F32, floats.quantize_f32, floats.dequantize_f32),
    _row(T.F16, floats.quantize_f16, floats.dequantize_f16),
    _row(T.BF16, floats.quantize_bf16, floats.dequantize_bf16),
    _row(T.Q8_0, legacy.quantize_q8_0, legacy.dequantize_q8_0, _ignoring_weights(legacy.quantize_q8_0)),
    _row(T.Q4_0, legacy.quantize_q4_0, legacy.dequantize_q4_0, weighted.quantize_q4_0_weighted),
    _row(T.Q4_1, legacy.quantize_q4_1, legacy.dequantize_q4_1, weighted.quantize_q4_1_weighted),
    _row(T.Q5_0, legacy.quantize_q5_0, legacy.dequantize_q5_0, weighted.quantize_q5_0_weighted),
    _row(T.Q5_1, legacy.quantize_q5_1, legacy.dequantize_q5_1, weighted.quantize_q5_1_weighted),
    _row(T.Q2_K, kquants.quantize_q2_k, kquants.dequantize_q2_k, weighted.quantize_q2_k_weighted),
    _row(T.Q3_K, kquants.quantize_q3_k, kquants.dequantize_q3_k, weighted.quantize_q3_k_weighted),
    _row(T.Q4_K, kquants.quantize_q4_k, kquants.dequantize_q4_k, weighted.quantize_q4_k_weighted),
    _row(T.Q5_K, kquants.quantize_q5_k, kquants.dequantize_q5_k, weighted.quantize_q5_k_weighted),
    _row(T.Q6_K, kquants.quantize_q6_k, kquants.dequantize_q6_k, weighted.quantize_q6_k_weighted),
    _row(T.IQ4_NL, iquants.quantize_iq4_nl, iquants.dequantize_iq4_nl, iquants.quantize_iq4_nl_weighted),
    _row(T.IQ4_XS, iquants.quantize_iq4_xs, iquants.dequantize_iq4_xs, iquants.quantize_iq4_xs_weighted),
    _row(T.IQ2_XXS, None, gridquants.dequantize_iq2_xxs, gridquants.quantize_iq2_xxs),
    _row(T.IQ2_XS, None, gridquants.dequantize_iq2_xs, gridquants.quantize_iq2_xs),
    _row(T.IQ2_S, None, gridquants.dequantize_iq2_s, gridquants.quantize_iq2_s),
    _row(T.IQ3_XXS, gridquants.quantize_iq3_xxs, gridquants.dequantize_iq3_xxs, gridquants.quantize_iq3_xxs_weighted),
    _row(T.IQ3_S, gridquants.quantize_iq3_s, gridquants.dequantize_iq3_s, gridquants.quantize_iq3_s_weighted),
    _row(T.IQ1_S, None, gridquants.dequantize_iq1_s, gridquants.quantize_iq1_s),
    _row(T.IQ1_M, None, gridquants.dequantize_iq1_m, gridquants.quantize_iq1_m),
    _row(T.TQ1_0, ternary.quantize_tq1_0, ternary.dequantize_tq1_0, _ignoring_weights(ternary.quantize_tq1_0)),
    _row(T.TQ2_0, ternary.quantize_tq2_0, ternary.dequantize_tq2_0, _ignoring_weights(ternary.quantize_tq2_0)),
    _row(T.MXFP4, fp4.quantize_mxfp4, fp4.dequantize_mxfp4, _ignoring_weights(fp4.quantize_mxfp4)),
    _row(T.NVFP4, fp4.quantize_nvfp4, fp4.dequantize_nvfp4, _ignoring_weights(fp4.quantize_nvfp4)),
)}


def can_write(qtype) -> bool:
    """Whether nibble has a quantizer for a type it reads that needs no importance matrix."""
    return block_format(qtype).quantize_blocks is not None


def can_write_weighted(qtype) -> bool:
    """Whether nibble has llama.cpp's importance-weighted quantizer for a type."""
    return block_format(qtype).quantize_weighted is not None


def block_format(qtype) -> BlockFormat:
    """The table row for a type (a GGMLQuantizationType, its name or its id)."""
    try:
        qtype = T[qtype.upper()] if isinstance(qtype, str) else T(qtype)
        return FORMATS[qtype]
    except (KeyError, ValueError):
        supported = ", ".join(f.name for f in FORMATS.values())
        raise ValueError(f"unsupported tensor type {qtype!r}; nibble supports {supported}") from None


def quantize(array, qtype, weights=None) -> np.ndarray:
    """float rows -> uint8 block bytes, one row of bytes per row of `array`. `weights` (one per column, from
    an importance matrix: ImportanceMatrix.weights) selects llama.cpp's weighted search, for the types that
    have one here."""
    fmt = block_format(qtype)
    array = np.asarray(array)
    if array.ndim == 0 or array.shape[-1] % fmt.block_size:
        raise ValueError(f"cannot quantize shape {array.shape} to {fmt.name}: "
                         f"rows must be a multiple of {fmt.block_size} elements")
    x = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    out = np.empty(array.shape[:-1] + (fmt.row_bytes(array.shape[-1]),), dtype=np.uint8)
    if weights is None and fmt.quantize_blocks is None:
        if fmt.quantize_weighted is not None:
            raise ValueError(f"{fmt.name} needs an importance matrix (nibble imatrix -m MODEL -f TEXT -o FILE)")
        raise ValueError(f"nibble reads {fmt.name} but cannot write it yet; "
                         f"pick another type (nibble quantize --help lists them)")
    if weights is not None and fmt.quantize_weighted is None:
        raise ValueError(f"nibble has no importance-weighted {fmt.name} quantizer yet")
    if weights is not None and np.size(weights) != array.shape[-1]:
        raise ValueError(f"{np.size(weights)} importance weights for rows of {array.shape[-1]} elements")
    if x.size and weights is not None:
        fmt.quantize_weighted(x, out.reshape(-1), np.ascontiguousarray(weights, np.float32).reshape(-1))
    elif x.size:
        fmt.quantize_blocks(x, out.reshape(-1))
    return out


def dequantize(raw, qtype, shape) -> np.ndarray:
    """uint8 block bytes -> float32 array of `shape` (numpy order, rows last)."""
    fmt = block_format(qtype)
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if not shape or shape[-1] % fmt.block_size:
        raise ValueError(f"shape {shape} is not a whole number of {fmt.name} blocks "
                         f"({fmt.block_size} elements per block along the rows)")
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    expected = n // fmt.block_size * fmt.type_size
    if raw.size != expected:
        raise ValueError(f"{fmt.name} data for shape {shape} must be {expected} bytes, got {raw.size}")
    out = np.empty(shape, dtype=np.float32)
    if n:
        fmt.dequantize_blocks(raw, out.reshape(-1))
    return out
