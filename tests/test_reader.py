import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from gguf_io import GGUFError, open_gguf


def test_smollm2_metadata_and_tensors(smollm2_path):
    with open_gguf(smollm2_path) as gf:
        assert gf.version == 3 and gf.alignment == 32
        md = gf.metadata
        assert md["general.architecture"] == "llama"
        assert md["llama.block_count"] == 30 and gf.metadata_types["llama.block_count"] == V.UINT32
        assert md["llama.rope.freq_base"] == 100000.0
        assert md["tokenizer.ggml.add_bos_token"] is False
        tokens = md["tokenizer.ggml.tokens"]
        assert isinstance(tokens, list) and len(tokens) == 49152 and tokens[1] == "<|im_start|>"
        token_types = md["tokenizer.ggml.token_type"]
        assert isinstance(token_types, np.ndarray) and token_types.dtype == np.int32 and token_types.size == 49152
        assert gf.metadata_types["tokenizer.ggml.merges"] == (V.ARRAY, V.STRING)
        assert len(md["tokenizer.ggml.merges"]) == 48900
        assert "<|im_start|>" in md["tokenizer.chat_template"]

        assert len(gf.tensors) == 272
        emb = gf.tensors["token_embd.weight"]
        assert emb.type == T.Q8_0 and emb.shape == (49152, 576) and emb.nbytes == 49152 * 576 // 32 * 34
        q = gf.tensors["blk.0.attn_q.weight"]
        assert q.type == T.Q4_1 and q.shape == (576, 576)
        assert gf.tensors["blk.0.attn_k.weight"].shape == (192, 576)
        assert gf.tensors["blk.0.attn_norm.weight"].shape == (576,)
        assert list(gf.tensors)[:2] == ["token_embd.weight", "blk.0.attn_norm.weight"]


def test_gemma3_metadata_and_tensors(gemma3_path):
    with open_gguf(gemma3_path) as gf:
        md = gf.metadata
        assert md["general.architecture"] == "gemma3"
        assert md["gemma3.attention.sliding_window"] == 512
        assert md["gemma3.attention.key_length"] == 256
        assert len(md["tokenizer.ggml.tokens"]) == 262144
        scores = md["tokenizer.ggml.scores"]
        assert scores.dtype == np.float32 and scores.shape == (262144,)
        assert md["tokenizer.ggml.tokens"][2] == "<bos>"
        types = {t.type for t in gf.tensors.values()}
        assert types == {T.F32, T.Q5_0, T.Q4_K, T.Q8_0, T.Q6_K}
        assert gf.tensors["token_embd.weight"].shape == (262144, 640)


def test_raw_is_a_zero_copy_read_only_view(smollm2_path):
    with open_gguf(smollm2_path) as gf:
        t = gf.tensors["output_norm.weight"]
        raw = t.raw
        assert raw.dtype == np.uint8 and raw.size == t.nbytes
        assert not raw.flags.writeable and not raw.flags.owndata
        with open(smollm2_path, "rb") as f:
            f.seek(t.offset)
            assert f.read(t.nbytes) == raw.tobytes()
        values = t.dequantize()
        assert values.dtype == np.float32 and values.shape == (576,)
        assert np.array_equal(values, raw.view(np.float32))


def test_tensor_offsets_are_packed_and_inside_the_file(real_model_path):
    with open_gguf(real_model_path) as gf:
        end = gf.data_offset
        for t in gf.tensors.values():
            assert t.offset == end, t.name
            end = t.offset + (t.nbytes + gf.alignment - 1) // gf.alignment * gf.alignment
        assert max(t.offset + t.nbytes for t in gf.tensors.values()) <= gf.file_size


def test_missing_file_is_a_gguf_error(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        open_gguf(tmp_path / "nope.gguf")
