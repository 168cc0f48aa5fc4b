"""Sentence embeddings on the real all-MiniLM-L6-v2 (BERT, WordPiece) and on SmolLM2 (a decoder).

References: sentence-transformers on the packaged folder (computed here), llama.cpp's token ids and
embeddings recorded by tests/data/make_embedding_cases.py (llama-cpp-python 0.3.36)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gguf_io import open_gguf
from runtime import Llama, Tokenizer, pull, resolve_model, source_folder
from runtime.convert import convert
from runtime.embedding import batches, pool

from conftest import DATA
from data.make_embedding_cases import sentences

GOLDEN = json.loads((DATA / "embedding-minilm.json").read_text())
MINILM = "all-minilm-l6-v2"
ROOT = DATA.parents[1]


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def minilm_path():
    return pull(MINILM)


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' normalized embeddings of 256 sentences (the folder's Transformer, mean Pooling
    and Normalize modules)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    texts = sentences()
    model = SentenceTransformer(str(source_folder(MINILM)), device="cpu")
    return texts, model.encode(texts, batch_size=32, normalize_embeddings=True)


@pytest.fixture(scope="module")
def converted_files(minilm_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("minilm")
    files = {"f16": minilm_path}
    for outtype in ("f32", "q8_0"):
        files[outtype] = work / f"minilm-{outtype}.gguf"
        convert(source_folder(MINILM), files[outtype], outtype)
    return files


def test_pulled_file_is_the_one_llama_cpp_was_run_on(minilm_path):
    import hashlib
    assert hashlib.sha256(minilm_path.read_bytes()).hexdigest() == GOLDEN["file_sha256"]
    with open_gguf(minilm_path) as f:
        assert f.metadata["bert.pooling_type"] == 1          # from 1_Pooling/config.json: mean
        assert f.metadata["tokenizer.ggml.model"] == "bert"
        assert f.tensors["position_embd.weight"].type.name == "F32"   # as llama.cpp's converter keeps it


def test_wordpiece_token_ids_equal_llama_cpp(minilm_path):
    tokenizer = Tokenizer.from_gguf(minilm_path)
    flags = {"add_special": (True, False), "parse_special": (True, True), "plain": (False, False)}
    mismatches = [(case["text"], key) for case in GOLDEN["tokens"] for key, (add, parse) in flags.items()
                  if tokenizer.encode(case["text"], add_special=add, parse_special=parse) != case[key]]
    assert not mismatches, mismatches[:5]
    assert len(GOLDEN["tokens"]) >= 90
    assert any(100 in case["plain"] for case in GOLDEN["tokens"])    # some word has no pieces: [UNK]


@pytest.mark.parametrize("outtype, bound", [("f32", 0.9999), ("f16", 0.9999), ("q8_0", 0.99)])
def test_cosine_against_sentence_transformers(converted_files, reference, outtype, bound):
    texts, expected = reference
    assert len(texts) >= 200
    llm = Llama(str(converted_files[outtype]), embedding=True, verbose=False)
    got = np.array(llm.embed(texts, normalize=True))
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= bound


def test_agrees_with_llama_cpp(minilm_path):
    llm = Llama(str(minilm_path), embedding=True, verbose=False)
    cases = GOLDEN["embeddings"]
    got = llm.embed([case["text"] for case in cases])
    assert cosines(got, [case["embedding"] for case in cases]).min() >= 0.999
    # unnormalized like llama-cpp-python's embed(): the norms agree too
    assert np.allclose(np.linalg.norm(got, axis=1), [np.linalg.norm(c["embedding"]) for c in cases], rtol=2e-3)


@pytest.mark.parametrize("pooling, number", [("mean", 1), ("last", 3)])
def test_decoder_embeddings_agree_with_llama_cpp(smollm2_path, pooling, number):
    expected = GOLDEN["smollm2"][pooling]
    texts = [case["text"] for case in GOLDEN["embeddings"][:len(expected)]]
    llm = Llama(str(smollm2_path), embedding=True, pooling_type=number, verbose=False)
    assert llm.pooling_type() == number
    assert cosines(llm.embed(texts), expected).min() >= 0.999


def test_a_batch_equals_one_text_at_a_time(minilm_path, smollm2_path):
    texts = sentences()[:12]
    for path, pooling in ((minilm_path, -1), (smollm2_path, 1)):
        llm = Llama(str(path), embedding=True, pooling_type=pooling, verbose=False)
        together = np.array(llm.embed(texts))
        alone = np.array([llm.embed(text) for text in texts])
        assert np.allclose(together, alone, atol=1e-4), path


def test_llama_embedding_api(minilm_path):
    llm = Llama(str(minilm_path), embedding=True, n_batch=64, verbose=False)
    response = llm.create_embedding(["A cat sat on the mat.", "Dogs bark."], model="minilm")
    assert response["object"] == "list" and response["model"] == "minilm"
    assert [d["index"] for d in response["data"]] == [0, 1] and len(response["data"][0]["embedding"]) == 384
    n_tokens = sum(len(llm.tokenize(t.encode())) for t in ("A cat sat on the mat.", "Dogs bark."))
    assert response["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
    vector = llm.embed("A cat sat on the mat.", normalize=True)
    assert isinstance(vector, list) and abs(np.linalg.norm(vector) - 1) < 1e-6
    assert np.allclose(vector, np.array(response["data"][0]["embedding"]) / np.linalg.norm(response["data"][0]["embedding"]),
                       atol=1e-6)
    vectors, count = llm.embed(["one", "two three"], return_count=True)
    assert len(vectors) == 2 and count == 3 + 4
    long_text = "word " * 200                          # cut to n_batch tokens, as llama-cpp-python
    assert llm.embed(long_text, return_count=True)[1] == 64
    with pytest.raises(ValueError, match="exceed batch size"):
        llm.embed(long_text, truncate=False)
    per_token = Llama(str(minilm_path), embedding=True, pooling_type=0, verbose=False).embed("Dogs bark.")
    assert np.array(per_token).shape == (len(llm.tokenize(b"Dogs bark.")), 384)
    with pytest.raises(ValueError, match="embeddings, not text"):
        llm.create_completion("Hello")
    with pytest.raises(RuntimeError, match="embedding=True"):
        Llama(str(minilm_path), verbose=False).embed("hi")


def test_pooling_and_batches():
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(pool(rows, 1), rows.mean(0)) and np.array_equal(pool(rows, 2), rows[0])
    assert np.array_equal(pool(rows, 3), rows[2]) and np.array_equal(pool(rows, 0), rows)
    assert list(batches([[1] * 3, [1] * 4, [1] * 9, [1]], 8)) == [[[1] * 3, [1] * 4], [[1] * 9], [[1]]]


def test_nibble_embed_writes_json_lines(minilm_path, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("A cat sat on the mat.\n\nDogs bark.\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "tools.cli", "embed", "-m", str(minilm_path), "-f", str(source)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["index"], r["text"]) for r in lines] == [(0, "A cat sat on the mat."), (1, "Dogs bark.")]
    expected = Llama(str(minilm_path), embedding=True, verbose=False).embed(["A cat sat on the mat.", "Dogs bark."],
                                                                          normalize=True)
    assert np.allclose([r["embedding"] for r in lines], expected, atol=1e-6)
    decoder = subprocess.run([sys.executable, "-m", "tools.cli", "embed", "-m", str(resolve_model("smollm2-135m-instruct")),
                              "-p", "hi"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert decoder.returncode == 1 and "--pooling" in decoder.stderr and "Traceback" not in decoder.stderr
