"""Kernel-ready weights: a GGUF tensor's bytes turned, once at load, into the layout its
kernels read, with matvec (one activation row: generation) and matmul (a batch of rows:
prompt processing) on float32 activations.

The kernel table has one row per GGML type: block size and bytes per block of the layout
the kernel reads (from the `gguf` package, unless the type is repacked), whether the bytes
are group-interleaved, the matvec kernel, and for repacked types the conversion from GGUF
bytes and the dequantizer of the repacked bytes (repack.py says why and how). On CPUs with an integer
kernel path (isa.py) the quantized types use the integer tile kernels instead (tiles.py: their own table).
The grid i-quants, ternary types and MXFP4 have only tile kernels; on the float path (a CPU with neither AVX2
nor NEON, or NIBBLE_KERNELS=float) they are dequantized to float32 at load, as NVFP4 is on every path (its
FP8 scales per 16 weights have no tile format yet), and MXFP4 tensors with a block scale a half float cannot
hold.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numba
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from . import matvec as mv
from .layout import InterleavedX, deinterleave, interleave
from . import repack as rp
from . import tiles as tl

MATMUL_TILE_BYTES = 64 << 20      # dequantize at most this much float32 at once


@dataclass(frozen=True)
class KernelFormat:
    type: T
    block_size: int
    type_size: int
    matvec: Callable
    interleaved: bool = True         # False: float weights kept in GGUF layout
    repack: Optional[Callable] = None        # (raw, rows, cols) -> bytes in this row's layout
    dequantize: Optional[Callable] = None    # (repacked raw rows, out) for matmul
    float_at_load: bool = False              # no float kernel of its own: float32 on the float path

    @property
    def name(self):
        return self.type.name


def _row(qtype, matvec, interleaved=True):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return KernelFormat(qtype, block_size, type_size, matvec, interleaved)


def _repacked(qtype, repack, with_mins=False):
    """A type converted at load to Q8_16 or, with mins, Q8_16M (repack.py)."""
    if with_mins:
        return KernelFormat(qtype, 32, rp.Q8_16M_BYTES, mv.matvec_q8_16m, True, repack, rp.dequantize_q8_16m)
    return KernelFormat(qtype, 32, rp.Q8_16_BYTES, mv.matvec_q8_16, True, repack, rp.dequantize_q8_16)


def _float_at_load(qtype):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return KernelFormat(qtype, block_size, type_size, mv.matvec_f32, False, float_at_load=True)


KERNELS: dict[T, KernelFormat] = {row.type: row for row in (
    _row(T.F32, mv.matvec_f32, interleaved=False),
    _row(T.F16, mv.matvec_f16, interleaved=False),
    _row(T.BF16, mv.matvec_bf16, interleaved=False),
    _row(T.Q8_0, mv.matvec_q8_0),
    _row(T.Q4_0, mv.matvec_q4_0),
    _row(T.Q4_1, mv.matvec_q4_1),
    _repacked(T.Q5_0, rp.repack_q5_0),
    _repacked(T.Q5_1, rp.repack_q5_1, with_mins=True),
    _row(T.Q4_K, mv.matvec_q4_k),
    _repacked(T.Q2_K, rp.repack_q2_k, with_mins=True),
    _repacked(T.Q3_K, rp.repack_q3_k),
    _repacked(T.Q5_K, rp.repack_q5_k, with_mins=True),
    _repacked(T.Q6_K, rp.repack_q6_k),
    _repacked(T.IQ4_NL, rp.repack_iq4_nl),
    _repacked(T.IQ4_XS, rp.repack_iq4_xs),
    *(_float_at_load(qtype) for qtype in (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M,
                                          T.TQ1_0, T.TQ2_0, T.MXFP4, T.NVFP4)),
)}

FLOAT_VIEWS = {T.F32: np.float32, T.F16: np.uint16, T.BF16: np.uint16}


class PackedWeight:
    """A (rows, cols) weight matrix in its kernels' layout.

    `raw` is the tensor's GGUF bytes (e.g. a zero-copy view of the mapped file).
    Block formats are tiled (integer kernels, on CPUs with an integer path) or interleaved
    (float kernels) into new memory and keep no reference to `raw`; float formats read
    `raw` in place. `dequantize_rows(raw_rows, out)` turns GGUF block rows into float32
    (the interleaved layout's matmul uses it, tile by tile); the runtime passes gguf_io's
    dequantizer, which this package does not import.

    `use_tiles=False` keeps the float kernels even where the integer ones run (tests, benchmarks)."""

    def __init__(self, raw, qtype, shape, dequantize_rows: Optional[Callable] = None, use_tiles=True):
        self.format = KERNELS.get(T(qtype))
        if self.format is None:
            raise ValueError(f"no kernel for tensor type {T(qtype).name}")
        self.rows, self.cols = (int(shape[0]), int(np.prod(shape[1:]))) if len(shape) > 1 else (1, int(shape[0]))
        fmt = self.format
        gguf_block, gguf_bytes = GGML_QUANT_SIZES[fmt.type]
        if self.cols % gguf_block:
            raise ValueError(f"{fmt.name} rows must be a multiple of {gguf_block}, got {self.cols}")
        raw = np.asarray(raw).reshape(-1).view(np.uint8)
        expected = self.rows * (self.cols // gguf_block) * gguf_bytes
        if raw.size != expected:
            raise ValueError(f"{fmt.name} {self.rows}x{self.cols} needs {expected} bytes, got {raw.size}")
        self.tiles = self.parts = self.values = None
        self.tiled = tl.TILED.get(fmt.type) if use_tiles and tl.USE_TILES else None
        if fmt.type == T.MXFP4 and not tl.mxfp4_scales_fit(raw):
            self.tiled = None           # a block scale beyond a half float's range: float32, exact
        if self.tiled is not None:
            self.tiles = tl.pack(fmt.type, raw, self.rows, self.cols)
            return
        if fmt.repack is not None:
            raw = fmt.repack(raw, self.rows, self.cols)
            dequantize_rows = fmt.dequantize
        self.nb = self.cols // fmt.block_size
        self._dequantize_rows = dequantize_rows
        if fmt.float_at_load:
            if dequantize_rows is None:
                raise ValueError(f"{fmt.name} has no float kernel; pass its dequantizer")
            self.values = np.empty((self.rows, self.cols), np.float32)
            dequantize_rows(raw, self.values.reshape(-1))
        elif fmt.interleaved:
            self.parts = interleave(raw, self.rows, fmt.type_size)
        else:
            self.values = raw.view(FLOAT_VIEWS[fmt.type]).reshape(self.rows, self.cols)

    @classmethod
    def from_tiles(cls, tiles, qtype, shape):
        """A weight whose tiles were packed earlier (the runtime keeps them in a file between runs)."""
        self = cls.__new__(cls)
        self.format = KERNELS[T(qtype)]
        self.rows, self.cols = int(shape[0]), int(np.prod(shape[1:]))
        self.tiled = tl.TILED[self.format.type]
        expected = tl.tile_shape(self.format.type, self.rows, self.cols)
        if tuple(tiles.shape) != expected or tiles.dtype != np.uint8:
            raise ValueError(f"{self.format.name} {self.rows}x{self.cols} tiles must be {expected} bytes, "
                             f"got {tiles.shape}")
        self.tiles, self.parts, self.values = tiles, None, None
        return self

    @property
    def uses_tiles(self):
        return self.tiles is not None

    @property
    def nbytes(self):
        if self.tiles is not None:
            return self.tiles.nbytes
        if self.values is not None:
            return self.values.nbytes
        return sum(p.nbytes for p in self.parts)

    @property
    def activation_layout(self):
        """Weights with equal keys take the same prepared activations."""
        if self.tiled is not None:
            return ("q15", self.cols)
        return (self.format.type, self.cols)

    def prepare(self, x, reuse=None):
        """The activations (a vector, or rows for matmul) in this weight's layout; reusable for weights
        with the same activation_layout (q, k and v share one, as do gate and up). `reuse`: an earlier
        result for the same shape, refilled in place instead of allocating."""
        if self.tiled is not None:
            if isinstance(reuse, tl.QuantizedX) and reuse.size == x.shape[-1] and reuse.n == (x.shape[0] if x.ndim > 1 else 1):
                reuse.refill(x)
                return reuse
            return tl.QuantizedX(x)
        if not self.format.interleaved or x.ndim > 1:
            return np.ascontiguousarray(x, dtype=np.float32)
        if isinstance(reuse, InterleavedX) and reuse.size == x.size and reuse.block_size == self.format.block_size:
            reuse.refill(x)
            return reuse
        return InterleavedX(np.ascontiguousarray(x, dtype=np.float32), self.format.block_size)

    def matvec(self, x, out=None, prepared=None):
        """W @ x: x (cols,) float32 -> out (rows,)."""
        if out is None:
            out = np.empty(self.rows, np.float32)
        px = prepared if prepared is not None else self.prepare(x)
        if self.tiles is not None:
            tl.matmul(tl.KIND[self.format.type], self.tiles, px.xq, px.xd, px.xs, out.reshape(1, -1))
        elif self.values is not None:
            self.format.matvec(self.values, px, out)
        else:
            self.format.matvec(*self.parts, px.x16, px.x8, px.x4, px.s16, px.s8, px.s4, out)
        return out

    def dequantize(self, row_start=0, row_stop=None):
        """Rows [row_start, row_stop) as float32 (rows, cols)."""
        row_stop = self.rows if row_stop is None else row_stop
        if self.tiles is not None:
            return tl.detile(self.format.type, self.tiles, row_start, row_stop)
        if self.values is not None:
            if self.values.dtype == np.float32:
                return self.values[row_start:row_stop]
            out = np.empty((row_stop - row_start, self.cols), np.float32)
            self._dequantize_rows(self.values[row_start:row_stop].reshape(-1).view(np.uint8), out.reshape(-1))
            return out
        if self._dequantize_rows is None:
            raise ValueError("this weight was packed without a dequantizer; matmul needs one")
        g16, p8, p4 = (p[row_start:row_stop] for p in self.parts)
        raw = deinterleave(np.ascontiguousarray(g16), np.ascontiguousarray(p8), np.ascontiguousarray(p4), self.nb)
        out = np.empty((row_stop - row_start, self.cols), np.float32)
        self._dequantize_rows(raw, out.reshape(-1))
        return out

    def matmul(self, xs, out=None, prepared=None):
        """xs (n, cols) -> out (n, rows) = xs @ W.T. Tiled weights: the integer kernel over the rows. Others:
        the weight dequantized (whole, or in tiles of rows when large) and multiplied by BLAS, its rows split
        over the kernel threads, one single-threaded BLAS call each (prompt processing is compute-bound;
        BLAS's own threads spin and fight Numba's for the cores)."""
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        if out is None:
            out = np.empty((xs.shape[0], self.rows), np.float32)
        if self.tiles is not None:
            px = prepared if prepared is not None else self.prepare(xs)
            tl.matmul(tl.KIND[self.format.type], self.tiles, px.xq, px.xd, px.xs, out, numba.get_num_threads())
            return out
        tile = max(1, MATMUL_TILE_BYTES // (4 * self.cols))
        for start in range(0, self.rows, tile):
            stop = min(self.rows, start + tile)
            _threaded_gemm(xs, self.dequantize(start, stop), out[:, start:stop])
        return out


_pool = None


def map_threads(fn, items):
    """[fn(item) for item in items] on Numba's thread count of Python threads: for work that releases
    the GIL (BLAS calls, nogil kernels)."""
    global _pool
    n = numba.get_num_threads()
    if n == 1 or len(items) < 2:
        return [fn(item) for item in items]
    if _pool is None or _pool._max_workers != n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="nibble-kernels")
    return list(_pool.map(fn, items))


def _threaded_gemm(xs, w, out):
    """out = xs @ w.T with the rows of w shared among the kernel threads (numpy releases the GIL inside BLAS)."""
    n = numba.get_num_threads()
    rows = w.shape[0]
    if n == 1 or rows < 64 * n:
        out[...] = xs @ w.T
        return
    bounds = [rows * i // n for i in range(n + 1)]

    def part(i):
        out[:, bounds[i]:bounds[i + 1]] = xs @ w[bounds[i]:bounds[i + 1]].T
    map_threads(part, range(n))
