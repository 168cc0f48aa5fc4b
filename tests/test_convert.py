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
