"""The GGUF file format: a strict mmap reader, a streaming writer and the block formats.

Knows nothing about transformers or kernels; imports neither cpu_kernels nor runtime.
"""
from .errors import GGUFError
from .formats import FORMATS, BlockFormat, block_format, dequantize, quantize
from .reader import GGUFFile, GGUFTensor, open_gguf
from .writer import GGUFWriter

__all__ = ["GGUFError", "GGUFFile", "GGUFTensor", "GGUFWriter", "open_gguf",
           "quantize", "dequantize", "FORMATS", "BlockFormat", "block_format"]
