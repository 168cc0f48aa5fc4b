"""Files nibble writes run in llama.cpp: the record (tests/data/llama-cpp-runs.json, made by
make_llama_cpp_runs.py with llama-cpp-python) holds, per file, a digest and llama.cpp's greedy
24 tokens on the golden prompts. Here each file is rebuilt, checked to be that same file, and run
in nibble.

F16 files: the same greedy text. Quantized files: llama.cpp multiplies with 8-bit activations
(nibble keeps float32), so near-ties can go the other way; along llama.cpp's whole path each of its
tokens must then be within MAX_GAP logits of nibble's best (a file llama.cpp misread would not be)."""
import json

import numpy as np
import pytest

from runtime.model import Model

from conftest import DATA, REAL_MODELS
from data.make_llama_cpp_runs import MODELS as GOLDEN_LOGITS, build_files, file_digest

RUNS = json.loads((DATA / "llama-cpp-runs.json").read_text())["runs"]
MAX_GAP = 0.5


@pytest.fixture(scope="module", params=REAL_MODELS)
def built(request, f16_bases, hf_folders, tmp_path_factory):
    model = request.param
    files = build_files(model, tmp_path_factory.mktemp("llama-cpp-runs"), f16_bases[model], hf_folders[model])
    prompts = [c["tokens"] for c in json.loads((DATA / GOLDEN_LOGITS[model]).read_text())["cases"]]
    return model, files, prompts


def test_same_files_as_llama_cpp_ran(built):
    model, files, _ = built
    assert set(files) == set(RUNS[model])
    for label, path in files.items():
        assert file_digest(path) == RUNS[model][label]["digest"], label


def test_greedy_text_against_llama_cpp(built):
    model, files, prompts = built
    for label, path in files.items():
        nibble = Model(path)
        for prompt, theirs in zip(prompts, RUNS[model][label]["llama_cpp_greedy"]):
            cache = nibble.new_cache(128)
            logits = nibble.forward(prompt, cache)
            ours, worst_gap = [], 0.0
            for token in theirs:              # follow llama.cpp's path, noting where our choice would differ
                ours.append(int(np.argmax(logits)))
                worst_gap = max(worst_gap, float(logits.max() - logits[token]))
                logits = nibble.forward([token], cache)
            if label.endswith(("F16", "f16")):
                assert ours == theirs, label
            assert worst_gap < MAX_GAP, (label, worst_gap)
