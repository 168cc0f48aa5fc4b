"""nibble imatrix against llama-imatrix on the real SmolLM2 (its F16, as llama-imatrix was given it).

tests/data/imatrix-<model>-llama.cpp.gguf (and SmolLM2's .dat) are llama-imatrix's output (llama.cpp of llama-cpp-python
0.3.36, -c 512 --chunks 16, over the first 120000 bytes of benchmarks/data/python-language-reference.txt).
"""
import numpy as np
import pytest

from conftest import DATA
from runtime.imatrix import ImportanceMatrix, compute_imatrix, read_imatrix, write_imatrix
from runtime.model import Model
from tools.cli import main as nibble

TEXT = DATA.parent.parent / "benchmarks" / "data" / "python-language-reference.txt"
LLAMA_GGUF = DATA / "imatrix-smollm2-135m-instruct-llama.cpp.gguf"
LLAMA_DAT = DATA / "imatrix-smollm2-135m-instruct-llama.cpp.dat"


def calibration_text():
    return TEXT.read_bytes()[:120000].decode("utf-8", "ignore")


@pytest.fixture(scope="module")
def smollm2_matrix(f16_bases):
    model = Model(f16_bases["smollm2-135m-instruct"])
    tokens = model.tokenizer.encode(calibration_text(), add_special=True, parse_special=False)
    seen = []
    matrix = compute_imatrix(model, tokens, 512, max_chunks=16, dataset="calib.txt",
                             progress=lambda done, total, ppl: seen.append((done, total, ppl)))
    return matrix, seen


def relative_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_values_agree_with_llama_imatrix(smollm2_matrix):
    ours, seen = smollm2_matrix
    theirs = read_imatrix(LLAMA_GGUF)
    assert list(ours.entries) == list(theirs.entries) and len(ours.entries) == 30 * 7
    assert (ours.chunk_count, ours.chunk_size) == (theirs.chunk_count, theirs.chunk_size) == (16, 512)
    for name, entry in ours.entries.items():
        assert np.array_equal(entry.counts, theirs.entries[name].counts), name        # 8192 tokens each
        assert relative_l2(entry.sums, theirs.entries[name].sums) < 1e-3, name          # measured: max 3.9e-4
    assert [(d, t) for d, t, _ in seen] == [(i, 16) for i in range(1, 17)]
    assert seen[-1][2] == pytest.approx(12.3247, rel=1e-3)        # llama-imatrix's final estimate


def test_file_round_trip_and_llama_formats(smollm2_matrix, tmp_path):
    ours, _ = smollm2_matrix
    path = tmp_path / "m.gguf"
    write_imatrix(path, ours)
    again = read_imatrix(path)
    assert again.datasets == ["calib.txt"] and (again.chunk_count, again.chunk_size) == (16, 512)
    for name, entry in ours.entries.items():
        assert np.array_equal(again.entries[name].sums, entry.sums.astype(np.float32)), name
        assert np.array_equal(again.weights(name), (entry.sums.astype(np.float32) / np.float32(8192)).reshape(-1))
    # llama-imatrix's legacy .dat holds the same averages: the quantizers' weights agree
    gguf, dat = read_imatrix(LLAMA_GGUF), read_imatrix(LLAMA_DAT)
    assert dat.legacy and dat.chunk_count == 16 and set(dat.entries) == set(gguf.entries)
    for name in gguf.entries:
        np.testing.assert_allclose(dat.weights(name), gguf.weights(name), rtol=1e-6)


def test_bad_files_say_what_they_are(tmp_path):
    with pytest.raises(ValueError, match="no such importance matrix"):
        read_imatrix(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x05\x00\x00\x00abc")
    with pytest.raises(ValueError, match="neither a GGUF nor a legacy"):
        read_imatrix(junk)
    model_file = DATA / "quant-source-f16.gguf"
    with pytest.raises(ValueError, match="not an importance matrix"):
        read_imatrix(model_file)
    assert isinstance(read_imatrix(LLAMA_GGUF), ImportanceMatrix)


def test_cli(smollm2_path, tmp_path, capsys):
    text = tmp_path / "calib.txt"
    text.write_text(calibration_text()[:20000])
    out = tmp_path / "smollm2.imatrix.gguf"
    assert nibble(["imatrix", "-m", str(smollm2_path), "-f", str(text), "-o", str(out), "-c", "256",
                   "--chunks", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Final estimate: PPL = " in printed and "210 tensors over 4 chunks (1024 tokens" in printed
    matrix = read_imatrix(out)
    assert matrix.chunk_size == 256 and all(e.counts[0] == 1024 for e in matrix.entries.values())
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert nibble(["imatrix", "-m", str(smollm2_path), "-f", str(short), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "needs at least 1024" in capsys.readouterr().err and not (tmp_path / "x.gguf").exists()
