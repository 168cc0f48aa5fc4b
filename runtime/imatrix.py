"""Importance matrices (`nibble imatrix`), as llama.cpp's llama-imatrix computes and stores them.

For every weight matrix of the layers, the sum over the calibration tokens of each input activation
squared (in_sum2) and the number of tokens (counts): the quantizers weight each column's rounding error
by in_sum2 / counts. The text is cut into chunks as llama-perplexity cuts it (BOS first, every token of
every chunk contributes; the perplexity of each chunk's second half comes for free). Only products over
16 or more tokens count, and not the output matrix, as in llama-imatrix.

Files: llama-imatrix's GGUF (general.type "imatrix"; <tensor>.in_sum2 F32 (n_mat, n) and <tensor>.counts
F32 (n_mat, 1); imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size), written and read; its legacy
.dat (per entry: name, ncall, values already divided by the count and multiplied by ncall), read.
"""
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from gguf_io import GGUFWriter, open_gguf

from . import model as model_module
from .perplexity import _n_chunks, chunk_nll

MIN_TOKENS = 16           # llama-imatrix ignores products over fewer tokens
IN_SUM2, COUNTS = ".in_sum2", ".counts"


@dataclass
class Entry:
    sums: np.ndarray      # float64 (n_mat, n): sum of x^2 per input column
    counts: np.ndarray    # int64 (n_mat,): tokens seen


@dataclass
class ImportanceMatrix:
    entries: dict = field(default_factory=dict)      # tensor name -> Entry
    datasets: list = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False

    def weights(self, name):
        """The per-column weights llama-quantize gives a tensor's quantizer (flat, float32): in_sum2 / counts
        (1 where nothing was seen), or None when the matrix has no entry for it."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        counts = entry.counts.astype(np.float32)[:, None]
        sums = entry.sums.astype(np.float32)
        if self.legacy:       # legacy values are already averages times ncall
            return (sums / counts if counts[0, 0] > 0 else sums).reshape(-1)
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.float32(1)).reshape(-1)


class Collector:
    """Adds x^2 over the rows of every weight product's input while active (model.forward's _project)."""

    def __init__(self, model):
        self.names = model.weight_names
        self.entries = {}

    def add(self, x, targets):
        if x.shape[0] < MIN_TOKENS:
            return
        names = {self.names.get(id(weight)) for weight, _ in targets} - {None}
        if not names:
            return
        squares = np.square(x, dtype=np.float64).sum(axis=0)
        for name in names:
            entry = self.entries.get(name)
            if entry is None:
                entry = self.entries[name] = Entry(np.zeros((1, x.shape[1])), np.zeros(1, np.int64))
            entry.sums[0] += squares
            entry.counts[0] += x.shape[0]

    @contextmanager
    def active(self):
        project = model_module._project

        def collecting(x, scratch, *targets):
            self.add(x, targets)
            project(x, scratch, *targets)
        model_module._project = collecting
        try:
            yield self
        finally:
            model_module._project = project


def compute_imatrix(model, tokens, n_ctx=512, *, max_chunks=None, dataset="", progress=None):
    """An ImportanceMatrix over `tokens`; progress(done, total, running perplexity) after each chunk."""
    if len(tokens) < 2 * n_ctx:
        raise ValueError(f"the text has {len(tokens)} tokens; an importance matrix with -c {n_ctx} needs at least "
                         f"{2 * n_ctx} (a longer text or a smaller -c)")
    n_chunks = _n_chunks(tokens, n_ctx, max_chunks)
    collector = Collector(model)
    nll = []
    with collector.active():
        for c, (_, chunk) in enumerate(chunk_nll(model, tokens, n_ctx, n_chunks)):
            nll.extend(chunk.tolist())
            if progress:
                progress(c + 1, n_chunks, float(np.exp(np.mean(nll))))
    entries = {name: collector.entries[name] for name in sorted(collector.entries)}
    return ImportanceMatrix(entries, [dataset] if dataset else [], n_chunks, n_ctx)


def write_imatrix(path, matrix: ImportanceMatrix):
    """llama-imatrix's GGUF file (tensors in name order); appears only when complete."""
    with GGUFWriter(path) as out:
        out.add_metadata("general.type", "imatrix", V.STRING)
        out.add_metadata("imatrix.datasets", list(matrix.datasets), (V.ARRAY, V.STRING))
        out.add_metadata("imatrix.chunk_count", int(matrix.chunk_count), V.UINT32)
        out.add_metadata("imatrix.chunk_size", int(matrix.chunk_size), V.UINT32)
        arrays = []
        for name, entry in matrix.entries.items():
            arrays.append((name + IN_SUM2, entry.sums.astype(np.float32)))
            arrays.append((name + COUNTS, entry.counts.astype(np.float32).reshape(-1, 1)))
        for name, array in arrays:
            out.add_tensor(name, array.shape, T.F32)
        for name, array in arrays:
            out.write_tensor(name, array)


def read_imatrix(path) -> ImportanceMatrix:
    """A GGUF importance matrix (llama-imatrix's or nibble's) or a legacy .dat one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such importance matrix file")
    with open(path, "rb") as f:
        is_gguf = f.read(4) == b"GGUF"
    return _read_gguf(path) if is_gguf else _read_legacy(path)


def _read_gguf(path):
    with open_gguf(path) as gf:
        md = gf.metadata
        if not {"imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"} <= set(md):
            raise ValueError(f"{path.name} is a GGUF file but not an importance matrix (no imatrix.* keys)")
        entries = {}
        for tensor_name, tensor in gf.tensors.items():
            if not tensor_name.endswith(IN_SUM2):
                continue
            name = tensor_name[:-len(IN_SUM2)]
            counts = gf.tensors.get(name + COUNTS)
            if counts is None or tensor.type != T.F32 or counts.type != T.F32:
                raise ValueError(f"{path.name}: {name} needs F32 {IN_SUM2} and {COUNTS} tensors")
            n_mat = counts.n_elements
            entries[name] = Entry(tensor.dequantize().astype(np.float64).reshape(n_mat, -1),
                                  np.rint(counts.dequantize().reshape(-1)).astype(np.int64))
        return ImportanceMatrix(dict(sorted(entries.items())), list(md["imatrix.datasets"]),
                                int(md["imatrix.chunk_count"]), int(md["imatrix.chunk_size"]))


def _read_legacy(path):
    data = path.read_bytes()
    at = 0

    def take(fmt):
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise ValueError(f"{path.name} is neither a GGUF nor a legacy .dat importance matrix (cut short)")
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ValueError(f"{path.name}: no entries in this legacy importance matrix")
    matrix = ImportanceMatrix(legacy=True)
    for _ in range(n_entries):
        (length,) = take("<i")
        name = bytes(take(f"<{length}s")[0]).decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ValueError(f"{path.name}: entry {name!r} has no values")
        values = np.array(take(f"<{nval}f"), np.float64).reshape(1, -1)
        matrix.entries[name] = Entry(values, np.array([ncall], np.int64))
    if at < len(data):
        (matrix.chunk_count,) = take("<i")
        if at + 4 <= len(data):
            (length,) = take("<i")
            if length > 0:
                matrix.datasets.append(bytes(take(f"<{length}s")[0]).decode("utf-8", "replace"))
    return matrix


__all__ = ["ImportanceMatrix", "Entry", "compute_imatrix", "write_imatrix", "read_imatrix"]
