"""Numba CPU kernels over plain numpy arrays: quantized matvec/matmul for every block
format, and the elementwise and attention kernels of a transformer step.

Knows nothing about files or models: imports neither gguf_io nor runtime.
"""
import os

import numba

from .layout import InterleavedX, deinterleave, interleave
from .ops import (add, add_rms_norm, apply_rope, attention, gelu_tanh_mul, rms_norm, rope_angles,
                  silu_mul, softmax, store_kv)
from .weights import KERNELS, KernelFormat, PackedWeight


def set_threads(n_threads=None):
    """Use n_threads for every kernel (default: all of the machine's cores); returns the count."""
    available = numba.config.NUMBA_NUM_THREADS
    n = available if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be at least 1, got {n}")
    if n > available:
        raise ValueError(f"n_threads={n} is more than the {available} threads available "
                         f"(this machine has {os.cpu_count()} cores)")
    numba.set_num_threads(n)
    return n


__all__ = ["KERNELS", "KernelFormat", "PackedWeight", "InterleavedX", "interleave", "deinterleave",
           "set_threads", "rms_norm", "add_rms_norm", "add", "rope_angles", "apply_rope", "softmax",
           "silu_mul", "gelu_tanh_mul", "store_kv", "attention"]
