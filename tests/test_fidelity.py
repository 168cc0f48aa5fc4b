"""Golden logits: nibble against an exact float reference and llama.cpp (tests/data/logits-*.json).

Rules (issue 5/6): top-1 equal to the reference at every position; mean KL divergence over the reference's
top 16 (renormalized) no larger than llama.cpp's; greedy continuation of 24 tokens equal to the recorded
reference or llama.cpp one.
"""
import json

import numpy as np
import pytest

from runtime import resolve_model
from runtime.model import Model

from conftest import DATA

GOLDEN = {"smollm2-135m-instruct": "logits-smollm2-135m-q4_1.json", "gemma3-270m": "logits-gemma3-270m-q4_k_m.json"}


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def run(request):
    model = Model(resolve_model(request.param))
    golden = json.loads((DATA / GOLDEN[request.param]).read_text())
    results = []
    for case in golden["cases"]:
        cache = model.new_cache(64)
        logits = model.forward(case["tokens"], cache, all_logits=True)
        greedy = [int(np.argmax(logits[-1]))]
        while len(greedy) < len(case["reference_greedy"]):
            greedy.append(int(np.argmax(model.forward([greedy[-1]], cache))))
        results.append((case, logits, greedy))
    return golden, results


def kl_top16(reference_topk, logits):
    ids = [i for i, _ in reference_topk]
    p = _softmax(np.array([v for _, v in reference_topk], np.float64))
    q = _softmax(logits[ids].astype(np.float64))
    return float(np.sum(p * np.log(p / q)))


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_top1_at_every_position(run):
    _, results = run
    for case, logits, _ in results:
        assert len(case["reference_topk"]) == len(case["tokens"])
        for position, top in enumerate(case["reference_topk"]):
            assert int(np.argmax(logits[position])) == top[0][0], (case["prompt"], position)


def test_mean_kl_no_larger_than_llama_cpp(run):
    golden, results = run
    ours = np.mean([kl_top16(top, logits[position]) for case, logits, _ in results
                    for position, top in enumerate(case["reference_topk"])])
    theirs = np.mean([kl_top16(top, np.array(dict_logits(top, at)))
                      for case, _, _ in results
                      for top, at in zip(case["reference_topk"], case["llama_cpp_at_reference_topk"])])
    assert abs(theirs - golden["llama_cpp_kl_top16_mean"]) < 1e-6   # our KL matches the file's definition
    assert ours <= theirs, (ours, theirs)
    assert ours < theirs / 10   # float activations: far closer to the reference than 8-bit ones


def dict_logits(top, values):
    """llama.cpp's logits at the reference ids, laid out so kl_top16 can index them by id."""
    logits = np.full(max(i for i, _ in top) + 1, -np.inf)
    logits[[i for i, _ in top]] = values
    return logits


def test_greedy_continuation(run):
    _, results = run
    for case, _, greedy in results:
        assert greedy in (case["reference_greedy"], case["llama_cpp_greedy"]), case["prompt"]
