"""The GGUF file format: a strict mmap reader, a streaming writer and the block formats.

Knows nothing about transformers or kernels; imports neither cpu_kernels nor runtime.
"""
import hashlib
import os
from pathlib import Path

import numba


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

from .errors import GGUFError
from .formats import FORMATS, BlockFormat, block_format, dequantize, quantize
from .reader import GGUFFile, GGUFTensor, drop_mapped_pages, open_gguf
from .writer import GGUFWriter

numba.config.CACHE_DIR = _previous_cache_dir

__all__ = ["GGUFError", "GGUFFile", "GGUFTensor", "GGUFWriter", "open_gguf", "drop_mapped_pages",
           "quantize", "dequantize", "FORMATS", "BlockFormat", "block_format"]
