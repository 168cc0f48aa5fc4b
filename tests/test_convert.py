"""`nibble convert`: Hugging Face folders written by transformers, converted back and run.

The real models go GGUF -> transformers -> save_pretrained -> nibble convert: the result must
equal gguf-py's dequantization of the original tensor by tensor, tokenize the golden strings as
llama.cpp does, and pass the golden-logit rules. Tiny random models per architecture must give
transformers' logits."""
import json

import numpy as np
import pytest
from gguf import quants

from gguf_io import open_gguf
from runtime import Tokenizer, resolve_model
from runtime.convert import ConvertError, convert
from runtime.model import Model
from tools.cli import main as nibble

from conftest import DATA
from hf_models import TINY_CONFIGS, tiny_model
from test_fidelity import GOLDEN as GOLDEN_LOGITS
from test_tokenizer import FLAGS, GOLDEN as GOLDEN_TOKENS

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]


@pytest.fixture(scope="module", params=MODELS)
def converted(request, hf_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / f"{request.param}-f32.gguf"
    assert nibble(["convert", str(hf_folders[request.param]), "-o", str(out), "--outtype", "f32"]) == 0
    return request.param, out


def test_tensors_equal_gguf_py_dequantization(converted):
    model, path = converted
    with open_gguf(resolve_model(model)) as original, open_gguf(path) as ours:
        assert set(ours.tensors) == set(original.tensors)
        for name, t in original.tensors.items():
            reference = quants.dequantize(t.raw.reshape(t.shape[:-1] + (-1,)), t.type).astype(np.float32)
            mine = ours.tensors[name].dequantize()
            assert mine.shape == reference.shape and np.array_equal(mine.view(np.uint32), reference.view(np.uint32)), name
        for key in ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"):
            assert ours.metadata.get(key) == original.metadata.get(key), key
        arch = original.architecture
        for key, value in original.metadata.items():
            if key.startswith(arch + "."):
                assert ours.metadata[key] == value and ours.metadata_types[key] == original.metadata_types[key], key


def test_golden_strings_tokenize_as_llama_cpp(converted):
    model, path = converted
    tokenizer = Tokenizer.from_gguf(path)
    cases = json.loads((DATA / GOLDEN_TOKENS[model]).read_text())["cases"]
    for case in cases:
        for key, (add_special, parse_special) in FLAGS.items():
            assert tokenizer.encode(case["text"], add_special=add_special, parse_special=parse_special) == case[key]


def test_golden_logits_rules(converted):
    model_name, path = converted
    model = Model(path)
    golden = json.loads((DATA / GOLDEN_LOGITS[model_name]).read_text())
    for case in golden["cases"]:
        cache = model.new_cache(64)
        logits = model.forward(case["tokens"], cache, all_logits=True)
        assert [int(np.argmax(row)) for row in logits] == [top[0][0] for top in case["reference_topk"]]
        greedy = [int(np.argmax(logits[-1]))]
        while len(greedy) < len(case["reference_greedy"]):
            greedy.append(int(np.argmax(model.forward([greedy[-1]], cache))))
        assert greedy == case["reference_greedy"]


@pytest.mark.parametrize("architecture", sorted(TINY_CONFIGS))
def test_tiny_random_model_logits_equal_transformers(architecture, hf_folders, tmp_path):
    import torch
    folder, hf_model = tiny_model(architecture, hf_folders["smollm2-135m-instruct"], tmp_path / "hf")
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, 49152, 40)]
    with torch.no_grad():
        expected = hf_model(torch.tensor([tokens])).logits[0].numpy()
    out = tmp_path / "tiny.gguf"
    convert(folder, out, "f32")
    model = Model(out)
    got = model.forward(tokens, model.new_cache(64, dtype="f32"), all_logits=True)
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < 1e-3


NEW_ARCHITECTURES = ["Qwen3ForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM", "MistralForCausalLM"]


@pytest.mark.parametrize("architecture", NEW_ARCHITECTURES)
def test_tiny_random_model_decodes_as_transformers(architecture, hf_folders, tmp_path):
    """The same through the KV cache: the prompt in pieces of 8 (sliding-window rings of 8 + 8 slots wrap), then
    one token at a time (the decode kernels); every position's logits against transformers'."""
    import torch
    folder, hf_model = tiny_model(architecture, hf_folders["smollm2-135m-instruct"], tmp_path / "hf")
    tokens = [int(t) for t in np.random.default_rng(2).integers(0, 49152, 40)]
    with torch.no_grad():
        expected = hf_model(torch.tensor([tokens])).logits[0].numpy()
    out = tmp_path / "tiny.gguf"
    convert(folder, out, "f32")
    model = Model(out)
    cache = model.new_cache(64, dtype="f32", max_batch=8)
    got = [model.forward(tokens[:24], cache, all_logits=True)]
    got += [model.forward([t], cache)[None, :] for t in tokens[24:]]
    assert float(np.abs(np.concatenate(got) - expected).max()) < 1e-3


def test_phi3_short_rope_factors_within_the_original_context(hf_folders, tmp_path):
    """A context no longer than original_max_position_embeddings takes the short factors (llama.cpp chooses by
    the context size, transformers by the sequence: both short here)."""
    import torch
    folder, hf_model = tiny_model("Phi3ForCausalLM", hf_folders["smollm2-135m-instruct"], tmp_path / "hf")
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 49152, 24)]
    with torch.no_grad():
        expected = hf_model(torch.tensor([tokens])).logits[0].numpy()
    out = tmp_path / "phi3.gguf"
    convert(folder, out, "f32")
    model = Model(out)
    with open_gguf(out) as f:
        assert f.metadata["phi3.rope.dimension_count"] == 8 and "rope_factors_long.weight" in f.tensors
    got = model.forward(tokens, model.new_cache(32, dtype="f32"), all_logits=True)
    assert float(np.abs(got - expected).max()) < 1e-3


@pytest.mark.parametrize("architecture", NEW_ARCHITECTURES)
def test_tiny_random_model_quantized(architecture, hf_folders, tmp_path):
    """Q8_0 and Q4_K_M files of the new architectures (Phi-3's fused matrices split into integer tiles) give the
    logits of their own weights: those of the same file dequantized to F32 and run by the float kernels."""
    from runtime.quantize import quantize_file
    folder, _ = tiny_model(architecture, hf_folders["smollm2-135m-instruct"], tmp_path / "hf")
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, 49152, 32)]
    for outtype in ("q8_0", "Q4_K_M"):
        quantized, dequantized = tmp_path / f"tiny-{outtype}.gguf", tmp_path / f"tiny-{outtype}-f32.gguf"
        convert(folder, quantized, outtype)
        quantize_file(quantized, dequantized, "F32")
        a, b = (model.forward(tokens, model.new_cache(64, dtype="f32"), all_logits=True)
                for model in (Model(quantized), Model(dequantized)))
        cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cosine.min() > 0.9999, (outtype, cosine.min())


def test_outtypes(hf_folders, tmp_path):
    folder = hf_folders["smollm2-135m-instruct"]
    q8 = tmp_path / "q8.gguf"
    convert(folder, q8, "q8_0")
    with open_gguf(q8) as f:
        assert f.tensors["blk.0.attn_q.weight"].type.name == "Q8_0"
        assert f.tensors["blk.0.attn_norm.weight"].type.name == "F32"
        assert f.metadata["general.file_type"] == 7
    q4km = tmp_path / "q4km.gguf"
    convert(folder, q4km, "Q4_K_M")
    with open_gguf(q4km) as f:
        assert f.metadata["general.file_type"] == 15
        assert f.tensors["blk.0.ffn_down.weight"].type.name == "Q6_K"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q4km.gguf", "q8.gguf"]    # no temporary left


def test_clear_errors(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ConvertError, match="MambaForCausalLM is not supported"):
        convert(tmp_path, tmp_path / "out.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ConvertError, match="pickle"):
        convert(tmp_path, tmp_path / "out.gguf")
    with pytest.raises(ConvertError, match="unknown --outtype 'q9'"):
        convert(tmp_path, tmp_path / "out.gguf", "q9")
    assert nibble(["convert", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out.gguf").exists()
