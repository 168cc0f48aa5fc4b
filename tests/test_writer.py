import hashlib
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from gguf_io import GGUFWriter, open_gguf, quantize


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_gguf(src, dst):
    with open_gguf(src) as gf, GGUFWriter(dst) as w:
        w.add_all_metadata(gf.metadata, gf.metadata_types)
        for t in gf.tensors.values():
            w.add_tensor(t.name, t.shape, t.type)
        for t in gf.tensors.values():
            w.write_tensor(t.name, t.raw)


def test_real_models_round_trip_byte_identical(real_model_path, tmp_path):
    out = tmp_path / "copy.gguf"
    copy_gguf(real_model_path, out)
    assert os.path.getsize(out) == os.path.getsize(real_model_path)
    assert sha256(out) == sha256(real_model_path)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.gguf"]


def test_golden_source_round_trip(quant_source_path, tmp_path):
    copy_gguf(quant_source_path, tmp_path / "copy.gguf")
    assert sha256(tmp_path / "copy.gguf") == sha256(quant_source_path)


def test_written_values_read_back(tmp_path):
    path = tmp_path / "small.gguf"
    weights = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    with GGUFWriter(path) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("general.alignment", 64, V.UINT32)
        w.add_metadata("test.count", 7, V.UINT64)
        w.add_metadata("test.flag", True)
        w.add_metadata("test.ratio", 0.5)
        w.add_metadata("test.words", ["a", "ü", ""])
        w.add_metadata("test.numbers", np.arange(5, dtype=np.int16))
        w.add_tensor("w.f32", weights.shape, T.F32)
        w.add_tensor("w.q8", weights.shape, T.Q8_0)
        w.write_tensor("w.f32", weights)
        w.write_tensor("w.q8", quantize(weights, T.Q8_0))
    with open_gguf(path) as gf:
        assert gf.alignment == 64
        assert gf.metadata["test.count"] == 7 and gf.metadata_types["test.count"] == V.UINT64
        assert gf.metadata["test.flag"] is True
        assert gf.metadata["test.ratio"] == 0.5 and gf.metadata_types["test.ratio"] == V.FLOAT32
        assert gf.metadata["test.words"] == ["a", "ü", ""]
        assert gf.metadata["test.numbers"].tolist() == [0, 1, 2, 3, 4]
        assert np.array_equal(gf.tensors["w.f32"].dequantize(), weights)
        assert gf.tensors["w.q8"].offset % 64 == 0
        assert np.abs(gf.tensors["w.q8"].dequantize() - weights).max() < 0.01


def test_failure_leaves_no_file(tmp_path):
    path = tmp_path / "partial.gguf"
    with pytest.raises(RuntimeError):
        with GGUFWriter(path) as w:
            w.add_tensor("a", (32,), T.F32)
            w.add_tensor("b", (32,), T.F32)
            w.write_tensor("a", np.zeros(32, np.float32))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_misuse_is_refused_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.gguf"
    w = GGUFWriter(path)
    w.add_tensor("a", (32,), T.F32)
    w.add_tensor("b", (32,), T.F32)
    with pytest.raises(ValueError, match="declaration order"):
        w.write_tensor("b", np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="needs 128 bytes"):
        w.write_tensor("a", np.zeros(31, np.float32))
    w.write_tensor("a", np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="never written"):
        w.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="multiple of 32"):
        GGUFWriter(path).add_tensor("c", (4, 33), T.Q4_0)
    with pytest.raises(ValueError, match="power of two"):
        GGUFWriter(path).add_metadata("general.alignment", 48, V.UINT32)


def test_tensor_written_in_parts(tmp_path):
    path = tmp_path / "parts.gguf"
    data = np.arange(96, dtype=np.float32).reshape(3, 32)
    with GGUFWriter(path) as w:
        w.add_tensor("a", data.shape, T.F32)
        w.write_tensor_parts("a", (data[:1], data[1:]))
    with open_gguf(path) as f:
        assert np.array_equal(f.tensors["a"].dequantize(), data)


def test_parts_of_the_wrong_size_discard_the_file(tmp_path):
    path = tmp_path / "parts.gguf"
    w = GGUFWriter(path)
    w.add_tensor("a", (3, 32), T.F32)
    with pytest.raises(ValueError, match="needed 384 bytes, got 256"):
        w.write_tensor_parts("a", (np.zeros((2, 32), np.float32),))
    with pytest.raises(ValueError, match="partial file was discarded"):
        w.close()
    assert list(tmp_path.iterdir()) == []
