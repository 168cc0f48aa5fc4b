"""A streaming GGUF v3 writer.

Metadata and tensor infos are declared first; tensor bytes are then written one
tensor at a time in the declared order, so a model never has to be in memory whole.
Everything goes to a temporary file beside the target, renamed into place only
when the last tensor is written: a failed or interrupted write leaves nothing behind.
"""
import os
import struct
import tempfile

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType as V

from .reader import DEFAULT_ALIGNMENT, GGUF_MAGIC, SCALAR_FORMATS, _pad

NUMPY_TO_VALUE_TYPE = {np.dtype(dtype): vtype for vtype, (_, dtype) in SCALAR_FORMATS.items() if vtype != V.BOOL}
NUMPY_TO_VALUE_TYPE[np.dtype(bool)] = V.BOOL


def infer_value_type(value):
    """The GGUF type gguf-py would pick for a Python value: (type) or (ARRAY, item type)."""
    if isinstance(value, (bool, np.bool_)):
        return V.BOOL
    if isinstance(value, (int, np.integer)):
        return V.INT32 if -2**31 <= value < 2**31 else V.INT64
    if isinstance(value, (float, np.floating)):
        return V.FLOAT32
    if isinstance(value, str):
        return V.STRING
    if isinstance(value, np.ndarray):
        return (V.ARRAY, NUMPY_TO_VALUE_TYPE[value.dtype])
    if isinstance(value, (list, tuple)):
        items = {infer_value_type(v) for v in value} or {V.STRING}
        if len(items) != 1 or isinstance(next(iter(items)), tuple):
            raise ValueError(f"array items must share one scalar type, got {sorted(map(str, items))}")
        return (V.ARRAY, items.pop())
    raise TypeError(f"cannot store {type(value).__name__} in GGUF metadata")


def _encode_string(s):
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def encode_value(value, vtype):
    if isinstance(vtype, tuple):
        _, item_type = vtype
        if item_type == V.STRING:
            body = b"".join(_encode_string(s) for s in value)
        else:
            body = np.asarray(value).astype(SCALAR_FORMATS[item_type][1], copy=False).tobytes()
        return struct.pack("<IQ", item_type, len(value)) + body
    if vtype == V.STRING:
        return _encode_string(value)
    return struct.pack(SCALAR_FORMATS[vtype][0], value)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class GGUFWriter:
    """Write a GGUF file: `add_metadata` and `add_tensor` first, then `write_tensor`
    for each tensor in the same order, then `close()` (or use it as a context manager;
    an exception inside the block discards the partial file)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.metadata = {}
        self._tensors = []           # (name, shape, type, nbytes) in declaration order
        self._names = set()
        self._written = 0
        self._file = None
        self._tmp_path = None
        self._failed = None

    @property
    def alignment(self):
        return int(self.metadata.get("general.alignment", (DEFAULT_ALIGNMENT,))[0])

    def add_metadata(self, key, value, value_type=None):
        """Add one key; `value_type` is a GGUFValueType or (ARRAY, item type), inferred if None."""
        self._check_not_started("metadata")
        if key in self.metadata:
            raise ValueError(f"metadata key {key!r} added twice")
        vtype = value_type if value_type is not None else infer_value_type(value)
        if key == "general.alignment" and (vtype != V.UINT32 or value <= 0 or value & (value - 1)):
            raise ValueError("general.alignment must be a UINT32 power of two")
        self.metadata[key] = (value, vtype)

    def add_all_metadata(self, metadata, metadata_types, skip=()):
        """Copy keys (with their original types) from an open GGUFFile's dicts."""
        for key, value in metadata.items():
            if key not in skip:
                self.add_metadata(key, value, metadata_types[key])

    def add_tensor(self, name, shape, qtype):
        """Declare a tensor (numpy-order shape, rows last) to be written later, in order."""
        self._check_not_started("tensors")
        qtype = GGMLQuantizationType(qtype)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(int(d) for d in shape)
        if name in self._names:
            raise ValueError(f"tensor {name!r} added twice")
        if not 1 <= len(shape) <= 4 or min(shape) < 1 or shape[-1] % block_size:
            raise ValueError(f"tensor {name!r}: shape {shape} is not valid for {qtype.name} "
                             f"(1 to 4 dimensions, rows a multiple of {block_size})")
        nbytes = int(np.prod(shape, dtype=np.int64)) // block_size * type_size
        self._names.add(name)
        self._tensors.append((name, shape, qtype, nbytes))

    def write_tensor(self, name, data):
        """Write the next declared tensor's bytes (any array whose buffer is exactly its bytes)."""
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._check_next(name, buf.size)
        self.write_tensor_parts(name, (buf,))

    def write_tensor_parts(self, name, parts):
        """Write the next declared tensor as consecutive pieces (arrays of whole rows, in order),
        so a converter never holds a whole tensor: quantize a slice of rows, write it, drop it.
        A wrong total discards the partial file."""
        self._check_next(name)
        if self._file is None:
            self._start()
        _, shape, qtype, nbytes = self._tensors[self._written]
        written = 0
        for part in parts:
            buf = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
            written += buf.size
            if written > nbytes:
                break
            self._file.write(memoryview(buf))
        if written != nbytes:
            self.abort()
            self._failed = f"tensor {name!r} ({qtype.name} {shape}) needed {nbytes} bytes, got " \
                           f"{written if written < nbytes else 'more'}; the partial file was discarded"
            raise ValueError(self._failed)
        self._file.write(bytes(_pad(nbytes, self.alignment) - nbytes))
        self._written += 1

    def _check_next(self, name, size=None):
        if self._failed:
            raise ValueError(self._failed)
        if self._written >= len(self._tensors):
            raise ValueError(f"tensor {name!r} was not declared with add_tensor")
        expected_name, shape, qtype, nbytes = self._tensors[self._written]
        if name != expected_name:
            raise ValueError(f"tensors must be written in declaration order: expected {expected_name!r}, got {name!r}")
        if size is not None and size != nbytes:
            raise ValueError(f"tensor {name!r} ({qtype.name} {shape}) needs {nbytes} bytes, got {size}")

    def close(self):
        """Finish the file and move it into place; every declared tensor must have been written."""
        if self._failed:
            raise ValueError(self._failed)
        if self._file is None:
            self._start()
        if self._written != len(self._tensors):
            missing = [t[0] for t in self._tensors[self._written:]]
            self.abort()
            raise ValueError(f"{len(missing)} declared tensors were never written, first {missing[0]!r}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp_path, self.path)
        self._file = None

    def abort(self):
        """Discard the partial file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp_path and os.path.exists(self._tmp_path):
            os.unlink(self._tmp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_not_started(self, what):
        if self._file is not None:
            raise ValueError(f"cannot add {what} after tensor data has started")

    def _start(self):
        """Open the temporary file and write the header, metadata and tensor infos."""
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o666 & ~_umask())     # mkstemp makes it private; a finished model is an ordinary file
        self._file = os.fdopen(fd, "wb")
        parts = [GGUF_MAGIC, struct.pack("<IQQ", 3, len(self._tensors), len(self.metadata))]
        for key, (value, vtype) in self.metadata.items():
            top = V.ARRAY if isinstance(vtype, tuple) else vtype
            parts += [_encode_string(key), struct.pack("<I", top), encode_value(value, vtype)]
        offset = 0
        for name, shape, qtype, nbytes in self._tensors:
            parts += [_encode_string(name), struct.pack("<I", len(shape)),
                      struct.pack(f"<{len(shape)}Q", *reversed(shape)), struct.pack("<IQ", qtype, offset)]
            offset += _pad(nbytes, self.alignment)
        header = b"".join(parts)
        if self._tensors:
            header += bytes(_pad(len(header), self.alignment) - len(header))
        self._file.write(header)
