"""`nibble quantize`: llama.cpp's mixes, checked against llama-quantize's own output.

tests/data/quantize-mixes.json (made by make_quantize_cases.py) holds, for both real models
dequantized to F16, the tensor types llama-quantize chose for every mix and a digest of its
output; tests/data/quant-golden.json the --pure files of the small golden source."""
import hashlib
import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from data.make_quantize_cases import tensor_digest
from gguf_io import GGUFWriter, open_gguf
from runtime.quantize import MIXES, plan_types, quantize_file
from tools.cli import main as nibble
from conftest import DATA

CASES = json.loads((DATA / "quantize-mixes.json").read_text())
MODELS = list(CASES)
# every mix of SmolLM2 byte for byte; Gemma's larger file for the mixes people use most
FILE_CHECKS = [("smollm2-135m-instruct", mix) for mix in MIXES if mix in CASES["smollm2-135m-instruct"]["mixes"]] + \
              [("gemma3-270m", mix) for mix in ("Q4_K_M", "Q8_0", "Q3_K_M", "IQ4_XS", "IQ3_M", "TQ1_0")]


@pytest.mark.parametrize("model", MODELS)
def test_mix_types_equal_llama_quantize(model):
    """The plan on the real file (as packaged) picks llama-quantize's type for every tensor of every mix."""
    from runtime import resolve_model
    case = CASES[model]
    with open_gguf(resolve_model(model)) as f:
        assert list(f.tensors) == case["tensors"]
        for mix, expected in case["mixes"].items():
            plan = plan_types(f, mix)
            assert " ".join(t.name for t in plan.types.values()) == expected["types"], mix


@pytest.mark.parametrize("model", MODELS)
def test_mix_types_with_an_importance_matrix_equal_llama_quantize(model):
    """With a matrix, llama-quantize's rules change (IQ3_XXS keeps attn_v, Q4_0 gives the first ffn_down layers
    Q4_1, ...); the i-quant mixes exist only with one."""
    from runtime import resolve_model
    case = CASES[model]
    assert {"IQ2_XXS", "IQ2_M", "IQ3_XXS", "IQ1_S", "Q2_K_S"} <= set(case["imatrix_mixes"])
    with open_gguf(resolve_model(model)) as f:
        for mix, expected in case["imatrix_mixes"].items():
            plan = plan_types(f, mix, imatrix=True)
            assert " ".join(t.name for t in plan.types.values()) == expected["types"], mix


@pytest.mark.parametrize("model,mix", FILE_CHECKS)
def test_files_equal_llama_quantize(model, mix, f16_bases, tmp_path):
    out = tmp_path / f"{mix}.gguf"
    quantize_file(f16_bases[model], out, mix)
    with open_gguf(out) as f:
        assert f.metadata["general.file_type"] == int(MIXES[mix].file_type)
        assert tensor_digest(f) == CASES[model]["mixes"][mix]["digest"]
    out.unlink()                              # 22 files of 0.1-0.3 GB: do not keep them all


@pytest.mark.parametrize("file_type", ["Q4_0", "Q5_1", "Q2_K", "Q3_K_S", "Q4_K_S", "Q6_K", "IQ4_XS", "BF16"])
def test_pure_equals_llama_quantize_pure(file_type, quant_source_path, quant_golden, tmp_path):
    out = tmp_path / "pure.gguf"
    quantize_file(quant_source_path, out, file_type, pure=True)
    with open_gguf(out) as f:
        for name, want in quant_golden["types"][file_type].items():
            t = f.tensors[name]
            assert t.type.name == want["type"], name
            assert hashlib.sha256(t.raw).hexdigest() == want["sha256"], name


def test_overrides_and_fallbacks(quant_source_path):
    with open_gguf(quant_source_path) as f:
        plan = plan_types(f, "Q4_K_M", output_tensor_type=T.Q8_0, token_embedding_type=T.Q4_0)
        assert plan.types["output.weight"] == T.Q8_0 and plan.types["token_embd.weight"] == T.Q4_0
        assert plan.types["output_norm.weight"] == T.F32            # 1-D stays as it is
        default = plan_types(f, "Q4_K_M")
        assert default.types["output.weight"] == T.Q6_K and default.types["token_embd.weight"] == T.Q4_K
        assert plan_types(f, "Q8_0").types["output.weight"] == T.Q8_0
        assert plan_types(f, "Q4_0").types["output.weight"] == T.Q6_K
        assert not default.fallbacks


def test_rows_a_256_block_does_not_divide_fall_back(tmp_path):
    path = tmp_path / "odd.gguf"
    with GGUFWriter(path) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("llama.block_count", 1)
        shapes = {"blk.0.attn_q.weight": (64, 96), "blk.0.ffn_down.weight": (64, 160), "blk.0.attn_v.weight": (64, 200)}
        for name, shape in shapes.items():
            w.add_tensor(name, shape, T.F32)
        for name, shape in shapes.items():
            w.write_tensor(name, np.ones(shape, np.float32))
    with open_gguf(path) as f:
        plan = plan_types(f, "Q3_K_L")
    assert plan.types["blk.0.attn_q.weight"] == T.Q4_0          # Q3_K -> Q4_0
    assert plan.types["blk.0.ffn_down.weight"] == T.Q5_1        # Q5_K (Q3_K_L's ffn_down) -> Q5_1
    assert plan.types["blk.0.attn_v.weight"] == T.F16           # 200 is not a multiple of 32 either
    assert len(plan.fallbacks) == 3


def test_cli_quantize(smollm2_path, tmp_path, capsys):
    out = tmp_path / "q8.gguf"
    assert nibble(["quantize", str(smollm2_path), str(out), "q8_0", "--dry-run"]) == 0
    assert "blk.0.attn_q.weight" in capsys.readouterr().out and not out.exists()
    assert nibble(["quantize", str(smollm2_path), str(out), "Q8_0"]) == 0
    err = capsys.readouterr().err
    assert "already quantized" in err and "quant size" in err
    with open_gguf(out) as f:
        assert {t.type for t in f.tensors.values()} == {T.Q8_0, T.F32}
    assert nibble(["quantize", str(smollm2_path), str(out), "Q9_K"]) == 1
    assert "unknown quantization type 'Q9_K'" in capsys.readouterr().err
    assert nibble(["quantize", str(out), str(out), "Q4_0"]) == 1
    assert "overwrite the input" in capsys.readouterr().err


@pytest.mark.parametrize("model,mix", [(model, mix) for model in MODELS for mix in CASES[model]["imatrix_mixes"]])
def test_imatrix_files_equal_llama_quantize(model, mix, f16_bases, tmp_path):
    """--imatrix with llama-imatrix's matrix: llama-quantize --imatrix's bytes, every tensor of every mix recorded
    (the 17 below 5 bits: all the i-quant mixes, Q2_K_S, the K and legacy mixes a matrix changes)."""
    from runtime.imatrix import read_imatrix
    matrix_path = DATA / f"imatrix-{model}-llama.cpp.gguf"
    out = tmp_path / f"{mix}.gguf"
    quantize_file(f16_bases[model], out, mix, imatrix=read_imatrix(matrix_path), imatrix_path=matrix_path)
    with open_gguf(out) as f:
        assert tensor_digest(f) == CASES[model]["imatrix_mixes"][mix]["digest"]
        assert f.metadata["quantize.imatrix.entries_count"] == len(read_imatrix(matrix_path).entries)
        assert f.metadata["quantize.imatrix.chunks_count"] == 16
    out.unlink()


def test_cli_imatrix_options_and_refusals(f16_bases, tmp_path, capsys):
    base, out = str(f16_bases["smollm2-135m-instruct"]), str(tmp_path / "q.gguf")
    matrix = str(DATA / "imatrix-smollm2-135m-instruct-llama.cpp.gguf")
    assert nibble(["quantize", base, out, "IQ2_XXS"]) == 1
    assert "needs an importance matrix" in capsys.readouterr().err
    assert nibble(["quantize", "--imatrix", matrix, "--include-weights", "attn", base, out, "IQ2_XXS"]) == 1
    assert "the importance matrix has no entry for blk.10.ffn_down.weight (IQ2_XXS needs one)" in capsys.readouterr().err
    assert nibble(["quantize", "--imatrix", matrix, "--include-weights", "ffn", "--exclude-weights", "attn",
                   base, out, "IQ4_XS"]) == 1
    assert "cannot be used together" in capsys.readouterr().err
    assert nibble(["quantize", "--imatrix", str(tmp_path / "none.gguf"), base, out, "IQ4_XS"]) == 1
    assert "no such importance matrix" in capsys.readouterr().err
    # only ffn_down weighted: those tensors change, the others keep their unweighted bytes
    assert nibble(["quantize", "--imatrix", matrix, "--include-weights", "ffn_down", base, out, "IQ4_XS"]) == 0
    plain = tmp_path / "plain.gguf"
    quantize_file(base, plain, "IQ4_XS")
    with open_gguf(out) as a, open_gguf(plain) as b:
        assert a.metadata["quantize.imatrix.entries_count"] == 30
        for name, t in a.tensors.items():
            assert (t.raw.tobytes() == b.tensors[name].raw.tobytes()) == ("ffn_down" not in name), name
    assert not (tmp_path / "none.gguf").exists()
