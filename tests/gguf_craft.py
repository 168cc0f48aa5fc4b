"""Build small GGUF files byte by byte, valid or broken on purpose, for the validation tests."""
import struct

from gguf import GGMLQuantizationType as T, GGUFValueType as V


def string(text):
    data = text if isinstance(text, bytes) else text.encode()
    return struct.pack("<Q", len(data)) + data


def kv_string(key, value):
    return string(key) + struct.pack("<I", V.STRING) + string(value)


def kv_u32(key, value, vtype=V.UINT32):
    fmt = {V.UINT32: "<I", V.UINT64: "<Q", V.INT32: "<i"}[vtype]
    return string(key) + struct.pack("<I", vtype) + struct.pack(fmt, value)


def kv_i32_array(key, values, count=None):
    n = len(values) if count is None else count
    return string(key) + struct.pack("<IIQ", V.ARRAY, V.INT32, n) + struct.pack(f"<{len(values)}i", *values)


def kv_string_array(key, items, count=None):
    n = len(items) if count is None else count
    return string(key) + struct.pack("<IIQ", V.ARRAY, V.STRING, n) + b"".join(string(s) for s in items)


def tensor_info(name, ne, qtype, offset, n_dims=None):
    """ne in GGUF order (fastest dimension first)."""
    n = len(ne) if n_dims is None else n_dims
    return string(name) + struct.pack("<I", n) + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", qtype, offset)


DEFAULT_KVS = [
    kv_string("general.architecture", "llama"),
    kv_i32_array("test.ints", [1, 2, 3]),
    kv_string_array("tokenizer.ggml.tokens", ["<s>", "hello", "wörld"]),
]
# a: F32 (8,) = 32 bytes at 0; b: Q8_0 (2, 32) = 68 bytes at 32 (padded to 96)
DEFAULT_TENSORS = [
    tensor_info("a", [8], T.F32, 0),
    tensor_info("b", [32, 2], T.Q8_0, 32),
]
DEFAULT_DATA_BYTES = 32 + 68


def build(kvs=None, tensors=None, data_bytes=None, magic=b"GGUF", version=3,
          n_tensors=None, n_kv=None, alignment=32):
    """A GGUF file's bytes; any part can be replaced to break one rule."""
    kvs = DEFAULT_KVS if kvs is None else kvs
    tensors = DEFAULT_TENSORS if tensors is None else tensors
    data_bytes = DEFAULT_DATA_BYTES if data_bytes is None else data_bytes
    head = magic + struct.pack("<IQQ", version,
                               len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if tensors:
        body += bytes(-len(body) % alignment)
    return body + bytes(range(256)) * (data_bytes // 256) + bytes(range(data_bytes % 256))
