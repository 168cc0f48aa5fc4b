"""A strict GGUF v2/v3 reader over mmap.

Validates what llama.cpp's gguf.cpp validates (and never reads past the end, nor
allocates more than the file could hold because a count said so), decodes metadata
into Python values, and exposes tensor bytes as zero-copy numpy views of the map.
Decoding is a flat loop over `struct.unpack_from`, not gguf-py's per-field object
graph: the 262,144-token Gemma 3 vocabulary opens in about a tenth of a second.
"""
import mmap
import os
import struct

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType as V

from .errors import GGUFError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NAME_BYTES = 63              # GGML_MAX_NAME is 64 including the terminating NUL
MAX_ARRAY_ELEMENTS = 1 << 30     # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS
MAX_STRING_BYTES = 1 << 30       # llama.cpp's GGUF_MAX_STRING_LENGTH
MIN_KV_BYTES = 8 + 1 + 4 + 1     # key length, one key byte, type, one value byte
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8   # name length, name, n_dims, one dim, type, offset

# value type -> (struct format, numpy dtype) for the fixed-size scalars
SCALAR_FORMATS = {
    V.UINT8: ("<B", np.uint8), V.INT8: ("<b", np.int8),
    V.UINT16: ("<H", np.uint16), V.INT16: ("<h", np.int16),
    V.UINT32: ("<I", np.uint32), V.INT32: ("<i", np.int32),
    V.UINT64: ("<Q", np.uint64), V.INT64: ("<q", np.int64),
    V.FLOAT32: ("<f", np.float32), V.FLOAT64: ("<d", np.float64),
    V.BOOL: ("<B", np.uint8),
}
_UNPACK = {t: struct.Struct(fmt).unpack_from for t, (fmt, _) in SCALAR_FORMATS.items()}
_SIZE = {t: struct.calcsize(fmt) for t, (fmt, _) in SCALAR_FORMATS.items()}
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_i32 = struct.Struct("<i").unpack_from


def drop_mapped_pages(mapped, offset=0, length=None):
    """Let the OS reclaim the resident pages of bytes offset..offset+length (to the end if None) of an
    mmap: they stay mapped and are read again if touched, but stop counting in the process's memory."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = offset - offset % mmap.PAGESIZE
    end = len(mapped) if length is None else min(len(mapped), offset + length)
    if end > start:
        mapped.madvise(mmap.MADV_DONTNEED, start, end - start)


def _pad(n, alignment):
    return (n + alignment - 1) // alignment * alignment


class GGUFTensor:
    """One tensor: its name, GGML type, numpy-order shape and bytes in the file."""
    __slots__ = ("name", "type", "shape", "offset", "nbytes", "_file")

    def __init__(self, name, qtype, shape, offset, nbytes, file):
        self.name = name
        self.type = qtype
        self.shape = shape          # numpy order: rows first, e.g. (49152, 576)
        self.offset = offset        # absolute byte offset in the file
        self.nbytes = nbytes
        self._file = file

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def raw(self) -> np.ndarray:
        """The tensor's bytes: a read-only, zero-copy uint8 view of the mapped file."""
        return np.frombuffer(self._file._map, dtype=np.uint8, count=self.nbytes, offset=self.offset)

    def drop_resident_pages(self, offset=0, length=None):
        """Let the OS reclaim this tensor's file pages (or those of bytes offset..offset+length of it)."""
        self._file.drop_resident_pages(self.offset + offset, self.nbytes - offset if length is None else length)

    def dequantize(self) -> np.ndarray:
        from .formats import dequantize
        return dequantize(self.raw, self.type, self.shape)

    def __repr__(self):
        return f"GGUFTensor({self.name!r}, {self.type.name}, shape={self.shape}, nbytes={self.nbytes})"


class GGUFFile:
    """An open GGUF file. `metadata` maps keys to Python values (numeric arrays as
    numpy arrays, string arrays as lists); `metadata_types` keeps each value's GGUF
    type so a writer can reproduce the file; `tensors` maps names to GGUFTensor."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.metadata = {}
        self.metadata_types = {}
        self.tensors = {}
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size == 0:
                    raise GGUFError(self.path, 0, "the file is empty, not a GGUF file")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise GGUFError(self.path, None, f"cannot open: {e.strerror or e}") from None
        try:
            _Parser(self).parse()
        except BaseException:
            self.close()
            raise

    @property
    def architecture(self):
        return self.metadata.get("general.architecture")

    def drop_resident_pages(self, offset=0, length=None):
        """Let the OS reclaim the file pages read so far (all, or those of bytes offset..offset+length);
        they stay mapped and are read again if touched. After a loader has copied the weights into its
        own layout, this keeps them from counting twice in the process's memory."""
        if getattr(self, "_map", None) is not None:
            drop_mapped_pages(self._map, offset, length)

    def close(self):
        """Release the map; arrays still viewing it keep it alive until they are gone."""
        m, self._map = getattr(self, "_map", None), None
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"GGUFFile({self.path!r}, v{self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors)"


def open_gguf(path) -> GGUFFile:
    """Open and validate a GGUF file; raises GGUFError naming the problem and its offset."""
    return GGUFFile(path)


class _Parser:
    """Reads the header, metadata and tensor infos into a GGUFFile, checking every bound."""

    def __init__(self, gf):
        self.gf = gf
        self.buf = gf._map
        self.end = gf.file_size
        self.pos = 0

    def fail(self, problem, offset=None):
        raise GGUFError(self.gf.path, self.pos if offset is None else offset, problem)

    def need(self, n, what):
        if n > self.end - self.pos:
            self.fail(f"truncated: {what} needs {n} bytes but only {self.end - self.pos} remain")

    def u32(self, what):
        self.need(4, what)
        (v,) = _u32(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what):
        self.need(8, what)
        (v,) = _u64(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what, limit=MAX_STRING_BYTES):
        start = self.pos
        n = self.u64(f"the length of {what}")
        if n > limit:
            self.fail(f"{what} is {n} bytes long, more than the limit of {limit}", start)
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start} of the string)", start + 8 + e.start)

    def value_type(self, what):
        start = self.pos
        t = self.u32(what)
        try:
            return V(t)
        except ValueError:
            self.fail(f"{what} has unknown value type {t}", start)

    # ------------------------------------------------------------------ header

    def parse(self):
        gf = self.gf
        self.need(4, "the magic")
        magic = bytes(self.buf[0:4])
        if magic != GGUF_MAGIC:
            self.fail(f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}")
        self.pos = 4
        gf.version = self.u32("the version")
        if gf.version not in SUPPORTED_VERSIONS:
            hint = {1: " (GGUF v1 is obsolete: convert the model again)",
                    0: ""}.get(gf.version, " (a big-endian file?)" if gf.version & 0xFFFF == 0 else "")
            self.fail(f"unsupported GGUF version {gf.version}; nibble reads versions 2 and 3{hint}", 4)
        n_tensors = self.u64("the tensor count")
        n_kv = self.u64("the metadata key count")
        left = self.end - self.pos
        if n_kv > left // MIN_KV_BYTES or n_tensors > left // MIN_TENSOR_INFO_BYTES \
                or n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > left:
            self.fail(f"header claims {n_tensors} tensors and {n_kv} metadata keys, "
                      f"more than the remaining {left} bytes can hold", 8)
        for _ in range(n_kv):
            self.key_value()
        gf.alignment = self.alignment()
        infos = [self.tensor_info() for _ in range(n_tensors)]
        self.place_tensors(infos)

    def key_value(self):
        gf = self.gf
        start = self.pos
        key = self.string("a metadata key", limit=1 << 16)
        if not key:
            self.fail("empty metadata key", start)
        if key in gf.metadata:
            self.fail(f"duplicate metadata key {key!r}", start)
        vtype = self.value_type(f"metadata key {key!r}")
        if vtype == V.ARRAY:
            item_type = self.value_type(f"the items of {key!r}")
            gf.metadata[key] = self.array(key, item_type)
            gf.metadata_types[key] = (V.ARRAY, item_type)
        else:
            gf.metadata[key] = self.scalar(key, vtype)
            gf.metadata_types[key] = vtype

    def scalar(self, key, vtype):
        if vtype == V.STRING:
            return self.string(f"the value of {key!r}")
        size = _SIZE[vtype]
        self.need(size, f"the value of {key!r}")
        (v,) = _UNPACK[vtype](self.buf, self.pos)
        self.pos += size
        return bool(v) if vtype == V.BOOL else v

    def array(self, key, item_type):
        start = self.pos
        n = self.u64(f"the length of array {key!r}")
        if item_type == V.ARRAY:
            self.fail(f"array {key!r} holds arrays; nested arrays are not supported (llama.cpp rejects them too)", start - 4)
        if n > MAX_ARRAY_ELEMENTS:
            self.fail(f"array {key!r} claims {n} items, more than the limit of {MAX_ARRAY_ELEMENTS}", start)
        if item_type == V.STRING:
            return self.string_array(key, n, start)
        size = _SIZE[item_type]
        self.need(n * size, f"array {key!r} of {n} {item_type.name} items")
        values = np.frombuffer(self.buf, dtype=SCALAR_FORMATS[item_type][1], count=n, offset=self.pos).copy()
        self.pos += n * size
        return values.astype(bool) if item_type == V.BOOL else values

    def string_array(self, key, n, start):
        """The hot path of opening a model (its vocabulary): one tight loop, bounds checked."""
        self.need(n * 8, f"array {key!r} of {n} strings")
        buf, pos, end = self.buf, self.pos, self.end
        out = []
        append = out.append
        try:
            for _ in range(n):
                if end - pos < 8:
                    break
                (length,) = _u64(buf, pos)
                pos += 8
                if length > end - pos:
                    pos -= 8
                    break
                append(buf[pos:pos + length].decode("utf-8"))
                pos += length
        except UnicodeDecodeError as e:
            self.pos = pos
            self.fail(f"string {len(out)} of array {key!r} is not valid UTF-8 ({e.reason})", pos)
        self.pos = pos
        if len(out) < n:
            self.fail(f"truncated: string {len(out)} of array {key!r} runs past the end of the file")
        return out

    def alignment(self):
        gf = self.gf
        if "general.alignment" not in gf.metadata:
            return DEFAULT_ALIGNMENT
        if gf.metadata_types["general.alignment"] != V.UINT32:
            self.fail(f"general.alignment must be UINT32, not {gf.metadata_types['general.alignment']}")
        alignment = gf.metadata["general.alignment"]
        if alignment == 0 or alignment & (alignment - 1):
            self.fail(f"general.alignment is {alignment}, not a power of two")
        return alignment

    # ------------------------------------------------------------------ tensors

    def tensor_info(self):
        gf = self.gf
        start = self.pos
        name = self.string("a tensor name", limit=1 << 16)
        if len(name.encode()) > MAX_NAME_BYTES:
            self.fail(f"tensor name {name[:80]!r} is longer than {MAX_NAME_BYTES} bytes", start)
        if name in gf.tensors:
            self.fail(f"duplicate tensor name {name!r}", start)
        dims_at = self.pos
        n_dims = self.u32(f"the dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            self.fail(f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}", dims_at)
        ne = [self.u64(f"dimension {i} of {name!r}") for i in range(n_dims)]
        n_elements = 1
        for i, d in enumerate(ne):
            if d == 0:
                self.fail(f"tensor {name!r} has a zero-sized dimension {i}", dims_at + 4 + 8 * i)
            n_elements *= d
            if n_elements >= 1 << 63:
                self.fail(f"tensor {name!r} with dimensions {ne} has too many elements (overflows int64)", dims_at)
        type_at = self.pos
        type_id = self.u32(f"the type of {name!r}")
        try:
            qtype = GGMLQuantizationType(type_id)
            block_size, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            self.fail(f"tensor {name!r} has unknown type id {type_id}", type_at)
        if ne[0] % block_size:
            self.fail(f"tensor {name!r} of type {qtype.name} has rows of {ne[0]} elements, "
                      f"not a multiple of its block size {block_size}", dims_at)
        nbytes = n_elements // block_size * type_size
        if nbytes >= 1 << 63:
            self.fail(f"tensor {name!r} would take {nbytes} bytes (overflows)", dims_at)
        offset = self.u64(f"the data offset of {name!r}")
        shape = tuple(int(d) for d in reversed(ne))
        gf.tensors[name] = GGUFTensor(name, qtype, shape, offset, nbytes, gf)
        return gf.tensors[name], self.pos - 8

    def place_tensors(self, infos):
        """Tensor offsets must be the packed layout: aligned, in order, no gaps, no overlap."""
        gf = self.gf
        if not infos:
            gf.data_offset = self.pos
            return
        gf.data_offset = _pad(self.pos, gf.alignment)
        if gf.data_offset > self.end:
            self.fail("truncated: the file ends before its tensor data begins", self.end)
        expected = 0
        for tensor, offset_at in infos:
            relative = tensor.offset
            if relative % gf.alignment:
                self.fail(f"tensor {tensor.name!r} data offset {relative} is not aligned to {gf.alignment}", offset_at)
            if relative < expected:
                self.fail(f"tensor {tensor.name!r} data at offset {relative} overlaps the previous tensor "
                          f"(which ends at {expected})", offset_at)
            if relative > expected:
                self.fail(f"tensor {tensor.name!r} data offset {relative} leaves a gap; "
                          f"the packed layout puts it at {expected}", offset_at)
            tensor.offset = gf.data_offset + relative
            if tensor.nbytes > self.end - tensor.offset:
                self.fail(f"tensor {tensor.name!r} data ({tensor.nbytes} bytes at {tensor.offset}) "
                          f"runs past the end of the file ({self.end} bytes)", offset_at)
            expected = relative + _pad(tensor.nbytes, gf.alignment)
