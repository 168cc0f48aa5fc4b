"""Every validation rule, each on a crafted file: one GGUFError with a useful message, fast."""
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from gguf_io import GGUFError, open_gguf
from gguf_craft import (DEFAULT_KVS, build, kv_i32_array, kv_string, kv_string_array, kv_u32, string,
                        tensor_info)


def write(tmp_path, data, name="crafted.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def expect_error(tmp_path, data, *fragments):
    path = write(tmp_path, data)
    start = time.perf_counter()
    with pytest.raises(GGUFError) as info:
        open_gguf(path)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert message.startswith(str(path))
    assert info.value.offset is None or " at byte " in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_the_baseline_file_is_valid(tmp_path):
    with open_gguf(write(tmp_path, build())) as gf:
        assert gf.metadata["tokenizer.ggml.tokens"] == ["<s>", "hello", "wörld"]
        assert gf.tensors["b"].shape == (2, 32) and gf.tensors["b"].type == T.Q8_0
        assert gf.tensors["a"].dequantize().shape == (8,)


def test_truncated_at_every_byte(tmp_path):
    data = build()
    for cut in range(len(data)):
        path = write(tmp_path, data[:cut], f"cut{cut}.gguf")
        start = time.perf_counter()
        with pytest.raises(GGUFError):
            open_gguf(path)
        assert time.perf_counter() - start < 1.0


def test_empty_file(tmp_path):
    expect_error(tmp_path, b"", "empty")


@pytest.mark.parametrize("case, data, fragments", [
    ("wrong magic", lambda: build(magic=b"GGML"), ["not a GGUF file"]),
    ("version 1", lambda: build(version=1), ["version 1", "obsolete"]),
    ("version 0", lambda: build(version=0), ["version 0"]),
    ("version 4", lambda: build(version=4), ["version 4"]),
    ("big endian", lambda: build(version=3 << 24), ["big-endian"]),
    ("kv count too large", lambda: build(n_kv=1 << 40), ["more than the remaining"]),
    ("tensor count too large", lambda: build(n_tensors=1 << 62), ["more than the remaining"]),
    ("2^63 array count", lambda: build(kvs=[kv_i32_array("x", [1], count=1 << 63)]), ["claims", "items"]),
    ("array longer than file", lambda: build(kvs=[kv_i32_array("x", [1], count=1 << 20)]), ["truncated"]),
    ("string array count", lambda: build(kvs=[kv_string_array("x", ["a"], count=1 << 20)]), ["truncated"]),
    ("huge string length", lambda: build(kvs=[struct.pack("<Q", 0xFFFFFFFFFFFF) + b"k"]), ["more than the limit"]),
    ("huge value string", lambda: build(kvs=[string("k") + struct.pack("<IQ", V.STRING, 0xFFFFFFFFFFFF)]),
     ["more than the limit"]),
    ("string past the end", lambda: build(kvs=[string("k") + struct.pack("<IQ", V.STRING, 1 << 20)]),
     ["truncated"]),
    ("empty key", lambda: build(kvs=[kv_string("", "x")]), ["empty metadata key"]),
    ("duplicate key", lambda: build(kvs=[kv_string("k", "x"), kv_string("k", "y")]), ["duplicate metadata key 'k'"]),
    ("unknown value type", lambda: build(kvs=[string("k") + struct.pack("<I", 13) + b"\0" * 8]),
     ["unknown value type 13"]),
    ("nested arrays", lambda: build(kvs=[string("k") + struct.pack("<IIQ", V.ARRAY, V.ARRAY, 1)
                                         + struct.pack("<IQ", V.INT32, 0)]), ["nested arrays"]),
    ("invalid UTF-8 key", lambda: build(kvs=[kv_string(b"k\xff", "x")]), ["not valid UTF-8"]),
    ("invalid UTF-8 value", lambda: build(kvs=[kv_string("k", b"\xc3\x28")]), ["not valid UTF-8"]),
    ("invalid UTF-8 token", lambda: build(kvs=[kv_string_array("tokens", ["ok", b"\xe2\x82"])]),
     ["string 1 of array 'tokens' is not valid UTF-8"]),
    ("alignment zero", lambda: build(kvs=DEFAULT_KVS + [kv_u32("general.alignment", 0)]), ["not a power of two"]),
    ("alignment 48", lambda: build(kvs=DEFAULT_KVS + [kv_u32("general.alignment", 48)], alignment=48),
     ["not a power of two"]),
    ("alignment wrong type", lambda: build(kvs=DEFAULT_KVS + [kv_u32("general.alignment", 32, V.UINT64)]),
     ["must be UINT32"]),
    ("n_dims 5", lambda: build(tensors=[tensor_info("a", [8, 1, 1, 1, 1], T.F32, 0)]), ["5 dimensions"]),
    ("n_dims 0", lambda: build(tensors=[tensor_info("a", [], T.F32, 0)]), ["0 dimensions"]),
    ("zero dim", lambda: build(tensors=[tensor_info("a", [8, 0], T.F32, 0)]), ["zero-sized dimension 1"]),
    ("overflowing dims", lambda: build(tensors=[tensor_info("a", [1 << 32, 1 << 32], T.F32, 0)]),
     ["too many elements"]),
    ("overflowing bytes", lambda: build(tensors=[tensor_info("a", [1 << 31, 1 << 31], T.F32, 0)]),
     ["overflows"]),
    ("unknown type", lambda: build(tensors=[tensor_info("a", [8], 99, 0)]), ["unknown type id 99"]),
    ("removed type 4", lambda: build(tensors=[tensor_info("a", [32], 4, 0)]), ["unknown type id 4"]),
    ("row not whole blocks", lambda: build(tensors=[tensor_info("a", [48], T.Q4_0, 0)]),
     ["not a multiple of its block size 32"]),
    ("duplicate tensor", lambda: build(tensors=[tensor_info("a", [8], T.F32, 0), tensor_info("a", [8], T.F32, 32)]),
     ["duplicate tensor name 'a'"]),
    ("long tensor name", lambda: build(tensors=[tensor_info("x" * 64, [8], T.F32, 0)]), ["longer than 63 bytes"]),
    ("invalid UTF-8 name", lambda: build(tensors=[tensor_info(b"\x80", [8], T.F32, 0)]), ["not valid UTF-8"]),
    ("misaligned offset", lambda: build(tensors=[tensor_info("a", [8], T.F32, 0), tensor_info("b", [32, 2], T.Q8_0, 40)]),
     ["not aligned"]),
    ("overlapping offsets", lambda: build(tensors=[tensor_info("a", [16], T.F32, 0), tensor_info("b", [32, 2], T.Q8_0, 32)]),
     ["overlaps the previous tensor"]),
    ("gap between tensors", lambda: build(tensors=[tensor_info("a", [8], T.F32, 0), tensor_info("b", [32, 2], T.Q8_0, 64)]),
     ["leaves a gap"]),
    ("first tensor not at zero", lambda: build(tensors=[tensor_info("a", [8], T.F32, 32)]), ["leaves a gap"]),
    ("data past the end", lambda: build(data_bytes=90), ["runs past the end of the file"]),
    ("huge data past the end", lambda: build(tensors=[tensor_info("a", [1 << 40], T.F32, 0)]),
     ["runs past the end of the file"]),
])
def test_rule(tmp_path, case, data, fragments):
    expect_error(tmp_path, data(), *fragments)


def test_random_corruption_gives_only_gguf_errors(tmp_path):
    """Flipped bytes anywhere in the header: the file opens or fails with GGUFError, never anything else."""
    data = bytearray(build())
    header = len(data) - 100
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz.gguf"
    for _ in range(3000):
        mutated = bytearray(data)
        for position in rng.integers(0, header, rng.integers(1, 4)):
            mutated[position] = rng.integers(0, 256)
        path.write_bytes(bytes(mutated))
        try:
            open_gguf(path).close()
        except GGUFError:
            pass


def test_inspect_prints_one_line_and_fails(tmp_path):
    path = write(tmp_path, build(version=1))
    result = subprocess.run([sys.executable, "-m", "tools.cli", "inspect", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nibble: error: ") and "version 1" in lines[0]
