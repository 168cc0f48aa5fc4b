"""Numba CPU kernels over plain numpy arrays: quantized matvec/matmul for every block
format, and the elementwise and attention kernels of a transformer step.

Knows nothing about files or models: imports neither gguf_io nor runtime.
"""

import hashlib
import os
from pathlib import Path

# Numba's OpenMP workers spin after each parallel region (GNU libgomp's default is long) and take the
# second core from the BLAS calls of prompt processing; a short spin keeps generation's back-to-back
# kernels fast (83-91 tok/s either way on SmolLM2) and lets two BLAS threads run (pp512 +38%).
# libgomp reads this when Numba first loads it, after this import.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba
import threadpoolctl


def _use_versioned_numba_cache(package_dir):
    """Point Numba's on-disk cache at a folder named by a hash of this package's sources.

    Numba keys a cached kernel by its own file's timestamp only, not by the functions it
    inlines from other files: after an edit or an upgrade, a stale kernel would load.
    Returns the previous setting, to restore once the package's kernels are defined."""
    previous = numba.config.CACHE_DIR
    if os.environ.get("NUMBA_CACHE_DIR"):
        return previous
    digest = hashlib.sha256()
    for source in sorted(Path(package_dir).rglob("*.py")):
        digest.update(source.read_bytes())
    root = Path(os.environ.get("NIBBLE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nibble")
    numba.config.CACHE_DIR = str(root / "numba" / f"{Path(package_dir).name}-{digest.hexdigest()[:16]}")
    return previous


_previous_cache_dir = _use_versioned_numba_cache(Path(__file__).parent)
KERNEL_CACHE_DIR = Path(numba.config.CACHE_DIR)


def kernels_compiled():
    """Whether this version's kernels are in Numba's on-disk cache already (False on a first run, when
    loading a model compiles them for this CPU: tens of seconds)."""
    return KERNEL_CACHE_DIR.is_dir() and any(KERNEL_CACHE_DIR.rglob("*.nbi"))

from .bandwidth import read_bandwidth
from .layout import InterleavedX, deinterleave, interleave
from .ops import (add, add_bias_gelu, add_layer_norm, add_rms_norm, apply_rope, attention_bidirectional,
                  attention_seqs, gelu_tanh_mul, layer_norm, masked_softmax, rms_norm, rope_angles, silu_mul, softmax,
                  store_kv, token_nll, top_k)
from .weights import KERNELS, KernelFormat, PackedWeight, map_threads

numba.config.CACHE_DIR = _previous_cache_dir


def set_threads(n_threads=None):
    """Use n_threads for every kernel (default: all of the machine's cores); returns the count.

    Also keeps BLAS (numpy's matmul, used for prompt processing) on one thread: its spinning worker
    threads and Numba's fight for the same cores, which made a 64-token prefill of SmolLM2 nine times
    slower (2.6 s against 0.28 s) on this 2-core machine."""
    available = numba.config.NUMBA_NUM_THREADS
    n = available if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be at least 1, got {n}")
    if n > available:
        raise ValueError(f"n_threads={n} is more than the {available} threads available "
                         f"(this machine has {os.cpu_count()} cores)")
    numba.set_num_threads(n)
    threadpoolctl.threadpool_limits(1, user_api="blas")
    return n


__all__ = ["kernels_compiled", "KERNELS", "KernelFormat", "PackedWeight", "InterleavedX", "interleave", "deinterleave",
           "set_threads", "rms_norm", "add_rms_norm", "layer_norm", "add_layer_norm", "add_bias_gelu",
           "attention_bidirectional", "add", "rope_angles", "apply_rope", "softmax",
           "silu_mul", "gelu_tanh_mul", "store_kv", "attention_seqs", "top_k", "masked_softmax", "token_nll", "map_threads", "read_bandwidth"]
