"""The model families' vocabularies (llama.cpp's vocabulary-only GGUFs for Phi-3, Qwen2/Qwen3, Llama/Mistral SPM,
BERT and StarCoder): nibble's token ids equal Hugging Face's on llama.cpp's test strings, and llama.cpp's on the chat
prompts each family's template renders, with and without special-token parsing (tests/data/vocab-family-cases.json,
made by make_vocab_family_cases.py)."""
import json

import pytest

import llama_cpp_files
from runtime.completion import infill_prompt_tokens
from runtime.tokenizer import Tokenizer

from conftest import DATA

RECORDED = json.loads((DATA / "vocab-family-cases.json").read_text())


@pytest.fixture(scope="module")
def tokenizers():
    return {name: Tokenizer.from_gguf(llama_cpp_files.vocabulary(name)) for name in llama_cpp_files.VOCABULARIES}


@pytest.mark.parametrize("vocabulary", llama_cpp_files.VOCABULARIES)
def test_hugging_face_ids_on_llama_cpp_test_strings(tokenizers, vocabulary):
    cases = llama_cpp_files.vocabulary_cases(vocabulary)
    assert len(cases) > 40
    wrong = [(text, ids) for text, ids in cases if tokenizers[vocabulary].encode(text, add_special=False) != ids]
    assert not wrong


@pytest.mark.parametrize("vocabulary", llama_cpp_files.VOCABULARIES)
def test_llama_cpp_ids_on_chat_prompts(tokenizers, vocabulary):
    cases = RECORDED["cases"][vocabulary]
    template = RECORDED["templates"][vocabulary]
    assert template is None or sum("<|" in c["text"] or "[INST]" in c["text"] for c in cases) >= 8
    wrong = [c for c in cases
             if tokenizers[vocabulary].encode(c["text"], c["add_special"], c["parse_special"]) != c["ids"]]
    assert not wrong


def test_phi3_special_tokens_take_the_whitespace_after_them(tokenizers):
    phi3 = tokenizers["phi-3"]
    end, user = phi3.vocab["<|end|>"], phi3.vocab["<|user|>"]
    assert phi3.encode("<|user|>\n\nhi<|end|>  \n", add_special=False, parse_special=True) == \
        [user] + phi3.encode("hi", add_special=False) + [end]
    assert phi3.encode("<s>  hi", add_special=False, parse_special=True)[1:] == phi3.encode("  hi", add_special=False)


def test_fill_in_the_middle_prompt_from_the_vocabularys_tokens(tokenizers):
    coder = tokenizers["starcoder"]
    pre, suf, mid = (coder.vocab[t] for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    assert coder.special_ids["fim_pre"] == pre and coder.is_eog(coder.vocab["<fim_pad>"])
    head, tail = "def add(a, b):\n    ", "\n    return total\n"
    assert infill_prompt_tokens(coder, head, tail) == \
        [pre] + coder.encode(head, add_special=False) + [suf] + coder.encode(tail, add_special=False) + [mid]
    assert infill_prompt_tokens(coder, head, tail, suffix_first=True) == \
        [suf] + coder.encode(tail, add_special=False) + [pre] + coder.encode(head, add_special=False) + [mid]
    with pytest.raises(ValueError, match="fill-in-the-middle tokens.*fim_pre, fim_suf, fim_mid"):
        infill_prompt_tokens(tokenizers["llama-spm"], head, tail)
