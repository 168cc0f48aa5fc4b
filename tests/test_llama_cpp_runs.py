"""Files nibble writes run in llama.cpp: the record (tests/data/llama-cpp-runs.json, made by
make_llama_cpp_runs.py with llama-cpp-python) holds, per file, a digest and llama.cpp's greedy
24 tokens on the golden prompts. Here each file is rebuilt, checked to be that same file, run in
nibble, and deleted (they take gigabytes together).

F16 files: the same greedy text. Quantized files: llama.cpp multiplies with 8-bit activations
(nibble keeps float32), so near-ties can go the other way; along llama.cpp's whole path each of its
tokens must then be within MAX_GAP logits of nibble's best (a file llama.cpp misread would not be)."""
import json

import numpy as np
import pytest

from runtime.model import Model

from conftest import DATA, REAL_MODELS
from data.make_llama_cpp_runs import LABELS, MODELS as GOLDEN_LOGITS, build_file, file_digest

RUNS = json.loads((DATA / "llama-cpp-runs.json").read_text())["runs"]
MAX_GAP = 0.5


def test_record_covers_every_file():
    assert all(list(RUNS[model]) == LABELS for model in REAL_MODELS)


@pytest.mark.parametrize("model", REAL_MODELS)
def test_greedy_text_against_llama_cpp(model, f16_bases, hf_folders, tmp_path):
    prompts = [c["tokens"] for c in json.loads((DATA / GOLDEN_LOGITS[model]).read_text())["cases"]]
    for label in LABELS:
        path = build_file(label, model, tmp_path, f16_bases[model], hf_folders[model])
        assert file_digest(path) == RUNS[model][label]["digest"], label       # the file llama.cpp ran
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
        nibble.close()
        path.unlink()
