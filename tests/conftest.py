import json
from pathlib import Path

import pytest

from runtime import resolve_model

DATA = Path(__file__).parent / "data"


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
