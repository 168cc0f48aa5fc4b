"""Tokenizers from GGUF metadata against llama.cpp's ids (golden data from llama-cpp-python 0.3.36)."""
import json

import pytest
import regex

from runtime.pretokenize import PRE_TOKENIZERS, Splitter
from runtime.tokenizer import Tokenizer, TokenizerError, _merge

from conftest import DATA

FLAGS = {"add_special=False,parse_special=False": (False, False),
         "add_special=True,parse_special=True": (True, True)}
GOLDEN = {"smollm2-135m-instruct": "tokenizer-smollm2-135m.json", "gemma3-270m": "tokenizer-gemma3-270m.json"}


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def model(request):
    from runtime import resolve_model
    tokenizer = Tokenizer.from_gguf(resolve_model(request.param))
    cases = json.loads((DATA / GOLDEN[request.param]).read_text())["cases"]
    return tokenizer, cases


def test_golden_token_ids(model):
    tokenizer, cases = model
    mismatches = []
    for case in cases:
        for key, (add_special, parse_special) in FLAGS.items():
            got = tokenizer.encode(case["text"], add_special=add_special, parse_special=parse_special)
            if got != case[key]:
                mismatches.append((case["text"], key, got, case[key]))
    assert not mismatches, mismatches[:3]
    assert len(cases) >= 80


def test_decode_gives_back_the_text(model):
    tokenizer, cases = model
    for case in cases:
        ids = tokenizer.encode(case["text"], add_special=False, parse_special=False)
        assert tokenizer.decode(ids) == case["text"]


def test_streaming_never_emits_broken_utf8(model):
    tokenizer, cases = model
    split_characters = 0
    for case in cases:
        ids = tokenizer.encode(case["text"], add_special=False)
        decoder = tokenizer.incremental_decoder()
        pieces = [decoder.decode(i) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == case["text"]
        assert all("\ufffd" not in piece for piece in pieces)
        split_characters += any(_is_partial(tokenizer.token_bytes(i)) for i in ids)
    assert split_characters > 0, "no golden string puts one character over several tokens"


def _is_partial(data):
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_special_tokens_and_flags(smollm2_path, gemma3_path):
    smollm = Tokenizer.from_gguf(smollm2_path)
    assert smollm.encode("<|im_start|>", parse_special=True) == [1]
    assert len(smollm.encode("<|im_start|>", parse_special=False)) > 1
    assert not smollm.add_bos and smollm.is_eog(2)
    gemma = Tokenizer.from_gguf(gemma3_path)
    assert gemma.encode("hi")[0] == gemma.bos_id == 2
    assert gemma.encode("hi", add_special=False)[0] != 2
    assert gemma.is_eog(gemma.vocab["<end_of_turn>"]) and gemma.is_eog(gemma.eos_id)
    assert gemma.decode([gemma.vocab["<end_of_turn>"]]) == ""
    assert gemma.decode([gemma.vocab["<end_of_turn>"]], special=True) == "<end_of_turn>"


def test_merge_prefers_best_rank_then_leftmost():
    ranks = {"a b": 1, "b c": 0, "ab c": 5, "a bc": 2}
    assert _merge(list("abc"), ranks, " ") == ["abc"]          # b+c first (rank 0), then a+bc
    assert _merge(list("aaa"), {"a a": 0}, " ") == ["aa", "a"]  # ties go to the leftmost pair


# The regexes Hugging Face tokenizers run for these families; llama.cpp's splits must agree on them.
HF_REGEX = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+",
}
SAMPLES = ["Hello world", "I'LL be there, don't   worry!!\n\n  ok", "x = f(1234567) + 3.14\t\t# note\r\n",
           "Straße 日本語 Привет  🙂🙂 end  ", "   leading and trailing   ", "a\n\n\nb", "1e-9 0x1F 12,345.67"]


@pytest.mark.parametrize("family", sorted(HF_REGEX))
def test_pretokenizer_families_match_reference_regex(family):
    splitter = Splitter(family)
    for text in SAMPLES:
        assert splitter.split(text) == regex.findall(HF_REGEX[family], text), text


def test_starcoder_family_splits_digits_first():
    assert Splitter("starcoder").split("abc 123") == ["abc", " ", "1", "2", "3"]
    assert Splitter("default").split("x 1234567") == ["x", " ", "123", "456", "7"]
    assert Splitter("deepseek-llm").split("Hi 你好\n12") == ["Hi", " ", "你好", "\n", "12"]


def test_required_pre_tokenizers_are_known():
    for name in ("default", "gpt-2", "llama-bpe", "llama3", "smollm", "qwen2", "deepseek-llm", "starcoder"):
        assert name in PRE_TOKENIZERS


def test_unsupported_vocabulary_is_one_clear_error():
    with pytest.raises(TokenizerError, match="pre-tokenizer 'nonsense'"):
        Tokenizer({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "nonsense",
                   "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": ["a a"]})
    with pytest.raises(TokenizerError, match="'t5' is not supported"):
        Tokenizer({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a"]})
