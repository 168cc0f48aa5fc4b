import json
import os
from pathlib import Path

import pytest

from gguf_io import open_gguf
from runtime import resolve_model

DATA = Path(__file__).parent / "data"

# The tests load many temporary model files: their packed tiles are not worth a cache file each.
# test_model.py's tile-cache test turns the cache on for itself.
os.environ.setdefault("NIBBLE_TILE_CACHE", "0")


@pytest.fixture(scope="session")
def smollm2_path():
    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path():
    return resolve_model("gemma3-270m")


@pytest.fixture(scope="session", params=["smollm2-135m-instruct", "gemma3-270m"])
def real_model_path(request):
    return resolve_model(request.param)


@pytest.fixture(scope="session")
def quant_golden():
    return json.loads((DATA / "quant-golden.json").read_text())


@pytest.fixture(scope="session")
def quant_source_path():
    return DATA / "quant-source-f16.gguf"


REAL_MODELS = ["smollm2-135m-instruct", "gemma3-270m"]


@pytest.fixture(scope="session")
def f16_bases(tmp_path_factory):
    """The real models dequantized to F16 by nibble: the sources llama-quantize was given."""
    from data.make_quantize_cases import tensor_digest
    from runtime.quantize import quantize_file
    cases = json.loads((DATA / "quantize-mixes.json").read_text())
    work = tmp_path_factory.mktemp("f16")
    bases = {}
    for model in REAL_MODELS:
        bases[model] = work / f"{model}-f16.gguf"
        report = quantize_file(resolve_model(model), bases[model], "F16")
        assert report.requantized                   # the packaged files are quantized: dequantized first
        with open_gguf(bases[model]) as f:
            assert tensor_digest(f) == cases[model]["base_digest"]
    return bases


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """The real models as Hugging Face folders written by transformers (save_pretrained)."""
    from hf_models import export_gguf_to_hf
    work = tmp_path_factory.mktemp("hf")
    return {m: export_gguf_to_hf(resolve_model(m), work / m) for m in REAL_MODELS}
