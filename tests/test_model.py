"""The llama forward pass on tiny random models against a float64 reference, and load-time errors."""
import numpy as np
import pytest

from gguf_io import open_gguf
from runtime.model import Model, ModelError

from tiny_model import build_tiny_llama, reference_logits

TOKENS = [1, 520, 9531, 198, 4093, 30, 216, 2, 10, 11, 12, 13, 14]


@pytest.fixture(scope="module")
def smollm_gguf(smollm2_path):
    with open_gguf(smollm2_path) as gguf:
        yield gguf


@pytest.mark.parametrize("options", [dict(), dict(qtype="F32", tied=False), dict(rope_scale=4.0)],
                         ids=["q8_0-tied", "f32-separate-output", "linear-rope-scaling"])
def test_tiny_llama_matches_float64_reference(tmp_path, smollm_gguf, options):
    path = build_tiny_llama(tmp_path / "tiny.gguf", smollm_gguf, **options)
    model = Model(path)
    expected = reference_logits(path, TOKENS, rope_scale=options.get("rope_scale", 1.0))
    for cache_type in ("f32", "f16"):
        cache = model.new_cache(32, cache_type)
        batch = model.forward(TOKENS[:9], cache, all_logits=True)     # prompt: BLAS matmul path
        steps = [model.forward([t], cache) for t in TOKENS[9:]]       # generation: matvec path
        got = np.vstack([batch, *steps])
        tolerance = 2e-3 if cache_type == "f32" else 2e-2
        assert np.abs(got - expected).max() < tolerance * np.abs(expected).max()
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
        assert cache.n_tokens == len(TOKENS)


def test_context_overflow_is_an_error_not_wrong_output(tmp_path, smollm_gguf):
    model = Model(build_tiny_llama(tmp_path / "tiny.gguf", smollm_gguf))
    cache = model.new_cache(8)
    model.forward(TOKENS[:6], cache)
    with pytest.raises(ValueError, match="do not fit the context of 8 tokens"):
        model.forward(TOKENS[:3], cache)
    assert cache.n_tokens == 6


def test_missing_tensor_is_named(tmp_path, smollm_gguf):
    path = build_tiny_llama(tmp_path / "tiny.gguf", smollm_gguf, drop=("blk.1.ffn_up.weight",))
    with pytest.raises(ModelError, match=r"tensor 'blk.1.ffn_up.weight' is missing from tiny.gguf"):
        Model(path)


def test_unsupported_architecture_is_named(tmp_path, smollm_gguf):
    path = build_tiny_llama(tmp_path / "tiny.gguf", smollm_gguf, arch="qwen3")
    with pytest.raises(ModelError, match=r"architecture 'qwen3' is not supported \(nibble runs: gemma3, llama\)"):
        Model(path)
