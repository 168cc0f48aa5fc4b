import json
import os
import subprocess
import sys

import pytest

from runtime import KNOWN_MODELS, ModelNotFound, resolve_model
from tools.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_text(capsys, smollm2_path):
    code, out, err = run(capsys, "inspect", "smollm2-135m-instruct")
    assert code == 0 and err == ""
    assert "architecture llama" in out
    assert "tokenizer.ggml.tokens" in out and "(49152 items)" in out
    assert "tensors (272)" in out
    assert "token_embd.weight" in out and "49152 x 576" in out
    assert "total: 272 tensors (210 Q4_1, 61 F32, 1 Q8_0)" in out


def test_inspect_json(capsys, gemma3_path):
    code, out, _ = run(capsys, "inspect", str(gemma3_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["architecture"] == "gemma3" and info["n_tensors"] == 236
    tokens = info["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["type"] == "[STRING]" and tokens["value"]["length"] == 262144
    assert info["metadata"]["gemma3.attention.sliding_window"] == {"type": "UINT32", "value": 512}
    embd = next(t for t in info["tensors"] if t["name"] == "token_embd.weight")
    assert embd == {"name": "token_embd.weight", "type": "Q8_0", "shape": [262144, 640],
                    "bytes": 178257920, "offset": embd["offset"]}
    assert info["tensor_bytes"] == sum(t["bytes"] for t in info["tensors"])


def test_pull_prints_the_local_path(capsys, real_model_path):
    name = next(n for n in KNOWN_MODELS if resolve_model(n) == real_model_path)
    code, out, _ = run(capsys, "pull", name)
    assert code == 0 and out.strip() == str(real_model_path) and os.path.isfile(out.strip())


def test_pull_lists_models(capsys):
    code, out, _ = run(capsys, "pull", "--list")
    assert code == 0 and "smollm2-135m-instruct" in out and "gemma3-270m" in out


def test_unknown_model_is_one_clear_line(capsys):
    code, out, err = run(capsys, "inspect", "no-such-model")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "no such model file or known model: 'no-such-model'" in err and "smollm2-135m-instruct" in err


def test_resolve_model_accepts_paths_and_names(smollm2_path):
    assert resolve_model(str(smollm2_path)) == smollm2_path
    assert resolve_model("SmolLM2-135M-Instruct") == smollm2_path
    with pytest.raises(ModelNotFound):
        resolve_model("/no/such/file.gguf")


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "inspect" in result.stdout and "pull" in result.stdout
