"""The llama forward pass on tiny random models against a float64 reference, and load-time errors."""
import numpy as np
import pytest

from gguf_io import open_gguf
import cpu_kernels
from runtime import tile_cache
from runtime.model import Model, ModelError

from tiny_model import build_tiny_llama, reference_logits

TOKENS = [1, 520, 9531, 198, 4093, 30, 216, 2, 10, 11, 12, 13, 14]


@pytest.fixture(scope="module")
def smollm_gguf(smollm2_path):
    with open_gguf(smollm2_path) as gguf:
        yield gguf


@pytest.mark.parametrize("options", [dict(), dict(qtype="F32", tied=False), dict(rope_scale=4.0),
                                     dict(rope_freqs=[1, 1, 2, 4, 8, 8, 16, 32])],
                         ids=["q8_0-tied", "f32-separate-output", "linear-rope-scaling", "llama3-rope-freqs"])
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
    path = build_tiny_llama(tmp_path / "tiny.gguf", smollm_gguf, arch="falcon")
    with pytest.raises(ModelError, match=r"architecture 'falcon' is not supported \(nibble runs: bert, gemma2, gemma3, llama, "
                                         r"phi3, qwen2, qwen3\)"):
        Model(path)


def test_tiny_gemma3_sliding_window_beyond_512_tokens(tmp_path, smollm_gguf):
    """Six layers (five sliding, one global), window 512, 720 tokens: logits at every position equal a float64
    reference that applies the window, while sliding layers keep a ring of window + batch slots."""
    path = build_tiny_llama(tmp_path / "gemma.gguf", smollm_gguf, arch="gemma3", window=512, n_layer=6)
    tokens = np.random.default_rng(1).integers(0, 49152, 720).tolist()
    expected = reference_logits(path, tokens)
    model = Model(path)
    assert [layer.sliding for layer in model.layers] == [True] * 5 + [False]
    cache = model.new_cache(1024, "f32", max_batch=128)
    assert cache.k[0].shape[1] == 512 + 128 and cache.k[5].shape[1] == 1024
    prefill = model.forward(tokens[:700], cache, all_logits=True)
    steps = [model.forward([t], cache) for t in tokens[700:]]
    got = np.vstack([prefill, *steps])
    assert np.abs(got - expected).max() < 2e-3 * np.abs(expected).max()
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()

    assert cache.truncate(700) == 700            # the ring still holds the window position 700 needs
    again = model.forward(tokens[700:], cache, all_logits=True)
    assert np.abs(again - got[700:]).max() < 1e-4 * np.abs(expected).max()
    assert cache.truncate(100) == 0              # overwritten: start over rather than attend to wrong keys


def test_windowless_reference_differs(tmp_path, smollm_gguf):
    """The window matters on this model: without it, late positions would come out differently."""
    path = build_tiny_llama(tmp_path / "gemma.gguf", smollm_gguf, arch="gemma3", window=16, n_layer=6)
    tokens = np.random.default_rng(2).integers(0, 49152, 40).tolist()
    model = Model(path)
    got = model.forward(tokens, model.new_cache(64, "f32", max_batch=8), all_logits=True)
    windowed = reference_logits(path, tokens)
    assert np.abs(got - windowed).max() < 2e-3 * np.abs(windowed).max()
    full = reference_logits(build_tiny_llama(tmp_path / "full.gguf", smollm_gguf, arch="gemma3", n_layer=6), tokens)
    assert np.abs(got[20:] - full[20:]).max() > 0.05 * np.abs(full).max()


@pytest.mark.skipif(not cpu_kernels.tiles.USE_TILES, reason="only the integer kernels' tiles are cached")
def test_tile_cache_maps_the_packed_tiles_on_the_second_load(smollm2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NIBBLE_TILE_CACHE", "1")
    monkeypatch.setenv("NIBBLE_CACHE", str(tmp_path))
    first = Model(smollm2_path)
    cached = tile_cache.cache_path(smollm2_path)
    assert cached.exists()
    second = Model(smollm2_path)
    for a, b in zip(first.layers, second.layers):
        for name in ("wq", "wk", "wv", "wo", "gate", "up", "down"):
            assert np.array_equal(getattr(a, name).tiles, getattr(b, name).tiles)
            assert not getattr(b, name).tiles.flags.owndata          # a view of the mapped cache file
    tokens = [1, 4093, 198, 1780, 314]
    expected = first.forward(tokens, first.new_cache(16))
    assert np.array_equal(second.forward(tokens, second.new_cache(16)), expected)
    del second                                   # (a mapped file must not be cut short under a live model)
    with open(cached, "r+b") as f:               # a damaged cache file is packed again, and replaced
        f.truncate(cached.stat().st_size // 2)
    third = Model(smollm2_path)
    assert third.layers[-1].down.tiles.flags.owndata
    assert np.array_equal(third.forward(tokens, third.new_cache(16)), expected)
    assert tile_cache.load(smollm2_path) is not None


@pytest.mark.parametrize("model_name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_forward_batch_equals_one_sequence_at_a_time(model_name):
    """Sequences of different lengths in one forward (prompts, then decode steps together) give each
    sequence's own logits: bit for bit where matmul and matvec add alike (SmolLM2's Q4_1), within rounding
    on K-quants (Gemma; the same greedy tokens)."""
    from runtime import resolve_model
    model = Model(resolve_model(model_name))
    prompts = [TOKENS[:5], TOKENS[:11], TOKENS[:1], TOKENS * 3]
    expected = []
    for prompt in prompts:
        cache = model.new_cache(128)
        steps = [model.forward(prompt, cache)]
        for _ in range(4):
            steps.append(model.forward([int(np.argmax(steps[-1]))], cache))
        expected.append(steps)
    caches = model.new_caches(len(prompts), 128)
    got = [[logits] for logits in model.forward_batch(list(zip(prompts, caches)))]
    for _ in range(4):
        for seq, logits in zip(got, model.forward_batch([([int(np.argmax(g[-1]))], c) for g, c in zip(got, caches)])):
            seq.append(logits)
    for want, have in zip(expected, got):
        assert [int(np.argmax(x)) for x in want] == [int(np.argmax(x)) for x in have]
        if model_name.startswith("smollm2"):
            assert all(np.array_equal(a, b) for a, b in zip(want, have))
        else:
            assert max(float(np.abs(a - b).max()) for a, b in zip(want, have)) < 0.2
    with pytest.raises(ValueError, match="one cache per sequence"):
        model.forward_batch([([1], caches[0]), ([2], caches[0])])
