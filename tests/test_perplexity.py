"""`nibble perplexity`: llama-perplexity's chunk rules, and KL divergence against a base model."""
import json

import numpy as np
import pytest

from runtime import resolve_model
from runtime.model import Model
from runtime.perplexity import log_softmax, perplexity
from tools.cli import main as nibble

from conftest import DATA
from gguf_io import open_gguf
from tiny_model import build_tiny_llama

TEXT = DATA.parent.parent / "benchmarks" / "data" / "python-language-reference.txt"
LLAMA_CPP = json.loads((DATA / "perplexity-llama-cpp.json").read_text())


def test_shipped_text_is_a_few_hundred_kb():
    assert 200_000 < TEXT.stat().st_size < 1_000_000


@pytest.mark.parametrize("name", sorted(LLAMA_CPP["cases"]))
def test_perplexity_matches_llama_cpp(name):
    """Same tokens, same chunks, same scored positions; the values differ by llama.cpp's 8-bit activations
    (its golden-logit KL from the exact reference is 2.5e-3 on SmolLM2, 4.3e-3 on Gemma 3; nibble's ~1e-7)."""
    case = LLAMA_CPP["cases"][name]
    model = Model(resolve_model(name))
    tokens = model.tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_special=True, parse_special=False)
    assert len(tokens) == case["n_tokens"] and tokens[:16] == case["first_tokens"]
    result = perplexity(model, tokens, case["n_ctx"], max_chunks=case["chunks"])
    assert len(result.nll) == case["chunks"] * (case["n_ctx"] - 1 - case["n_ctx"] // 2)
    assert result.ppl == pytest.approx(case["ppl"], rel=0.025)


def test_chunk_rules_on_a_tiny_model(gemma3_path, tmp_path):
    """Each chunk starts from an empty cache with BOS first and scores tokens n_ctx/2 + 1 .. n_ctx - 1."""
    with open_gguf(gemma3_path) as vocabulary:        # a vocabulary that adds BOS
        model = Model(build_tiny_llama(tmp_path / "tiny.gguf", vocabulary))
    assert model.tokenizer.add_bos
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.hp.n_vocab, 100)
    n_ctx = 32
    result = perplexity(model, tokens, n_ctx)
    nll = []
    for c in range(3):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if model.tokenizer.add_bos:
            chunk[0] = model.tokenizer.bos_id
        logits = model.forward(chunk, model.new_cache(n_ctx), all_logits=True)
        for j in range(n_ctx // 2, n_ctx - 1):
            nll.append(-log_softmax(logits[j])[chunk[j + 1]])
    # float64 log-softmax here; perplexity sums float32 exponentials in float64, as llama-perplexity does
    assert result.ppl == pytest.approx(np.exp(np.mean(nll)), rel=1e-6)
    same = perplexity(model, tokens, n_ctx, base=model)
    assert max(same.kl) < 1e-9 and same.top1_agreement == 1.0


def test_kl_divergence_against_a_base_on_a_real_model(smollm2_path, tmp_path, capsys):
    from runtime.quantize import quantize_file
    f16, q4 = tmp_path / "f16.gguf", tmp_path / "q4_0.gguf"
    quantize_file(smollm2_path, f16, "F16")
    quantize_file(f16, q4, "Q4_0", pure=True)
    assert nibble(["perplexity", "-m", str(q4), "-f", str(TEXT), "-c", "128", "--chunks", "2",
                   "--kl-divergence-base", str(f16)]) == 0
    out = capsys.readouterr().out
    kld = float(out.split("Mean KLD:")[1].split()[0])
    same_top = float(out.split("Same top p:")[1].split()[0])
    assert 0.005 < kld < 0.5 and 60 < same_top < 100        # requantized to 4 bits: close, not equal
    assert "Final estimate: PPL =" in out


def test_clear_errors(smollm2_path, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert nibble(["perplexity", "-m", str(smollm2_path), "-f", str(short)]) == 1
    assert "needs at least 1024" in capsys.readouterr().err
    assert nibble(["perplexity", "-m", str(smollm2_path), "-f", str(tmp_path / "missing.txt")]) == 1
    assert "no such text file" in capsys.readouterr().err
