"""Pre-tokenizers: split text into words before BPE, exactly as llama.cpp does for each `tokenizer.ggml.pre`.

llama.cpp runs a list of regexes one after another; each one splits every piece left by the previous one,
and the text between matches stays a piece of its own. Regexes that use Unicode categories run on a
"collapsed" copy of the text in which every non-ASCII code point is replaced by one byte standing for its
category (letter, number, punctuation, whitespace, other); we do the same, so `\\p{L}` means what it means
in llama.cpp (categories from the `regex` module, which generated llama.cpp's tables). Collapsed text has
one byte per code point, so match offsets index the original string directly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import regex

# llama.cpp's regexes, by pre-tokenizer family (llama-vocab.cpp, llm_tokenizer_bpe).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Written with escapes: several of these code points have canonical equivalents an editor may substitute.
_DEEPSEEK_LLM_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-"
    "\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-"
    "\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
    "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-"
    "\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115"
    "\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e"
    "\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-"
    "\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-"
    "\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943")

_FAMILIES = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    "gpt2": [_GPT2],
    "llama3": [_LLAMA3],
    "qwen2": [_QWEN2],
    "starcoder": [r"\p{N}", _GPT2],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"],
    "deepseek-llm": ["[\r\n]", rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                     r"\s+\Z",  # llama.cpp's "\s+$" (Python's $ also matches before a final newline)
                     "[一-龥ࠀ-一가-퟿]+", r"\p{N}+"],
    "deepseek-coder": ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"],
    "poro": [r" ?[^(\s|.,!?…。，、।۔،)]+"],
    "viking": [r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"],
}


@dataclass(frozen=True)
class PreTokenizer:
    """One `tokenizer.ggml.pre` value: its regex family and the vocabulary flags llama.cpp ties to it."""
    family: str
    ignore_merges: bool = False   # a word that is already a token is not split (llama3, tekken)
    add_bos: bool | None = None   # default for add_bos when the metadata does not say


# tokenizer.ggml.pre -> how llama.cpp treats it (llama_vocab::impl::load).
PRE_TOKENIZERS = {
    "default": PreTokenizer("default"),
    "llama3": PreTokenizer("llama3", ignore_merges=True, add_bos=True),
    "llama-v3": PreTokenizer("llama3", ignore_merges=True, add_bos=True),
    "llama-bpe": PreTokenizer("llama3", ignore_merges=True, add_bos=True),
    "falcon3": PreTokenizer("llama3", ignore_merges=True, add_bos=True),
    "dbrx": PreTokenizer("llama3"),
    "smaug-bpe": PreTokenizer("llama3"),
    "chatglm-bpe": PreTokenizer("llama3"),
    "deepseek-llm": PreTokenizer("deepseek-llm"),
    "deepseek-coder": PreTokenizer("deepseek-coder"),
    "falcon": PreTokenizer("falcon"),
    "starcoder": PreTokenizer("starcoder"),
    "refact": PreTokenizer("starcoder"),
    "command-r": PreTokenizer("starcoder"),
    "smollm": PreTokenizer("starcoder"),
    "codeshell": PreTokenizer("starcoder"),
    "exaone": PreTokenizer("starcoder"),
    "minerva-7b": PreTokenizer("starcoder"),
    "gpt-2": PreTokenizer("gpt2"),
    "phi-2": PreTokenizer("gpt2"),
    "mpt": PreTokenizer("gpt2"),
    "olmo": PreTokenizer("gpt2"),
    "jais": PreTokenizer("gpt2"),
    "roberta-bpe": PreTokenizer("gpt2"),
    "gigachat": PreTokenizer("gpt2"),
    "jina-es": PreTokenizer("gpt2"),
    "jina-de": PreTokenizer("gpt2"),
    "jina-v1-en": PreTokenizer("gpt2"),
    "jina-v2-es": PreTokenizer("gpt2"),
    "jina-v2-de": PreTokenizer("gpt2"),
    "jina-v2-code": PreTokenizer("gpt2"),
    "qwen2": PreTokenizer("qwen2"),
    "stablelm2": PreTokenizer("qwen2"),
    "megrez": PreTokenizer("qwen2"),
    "deepseek-r1-qwen": PreTokenizer("qwen2"),
    "poro-chat": PreTokenizer("poro"),
    "bloom": PreTokenizer("poro"),
    "gpt3-finnish": PreTokenizer("poro"),
    "viking": PreTokenizer("viking"),
}

# Collapsed bytes standing for a non-ASCII code point, and the ASCII ranges each category keeps.
_CATEGORY_BYTE = {"N": 0xD1, "L": 0xD2, "P": 0xD3}
_OTHER_BYTE, _WHITESPACE_BYTE = 0xD0, 0x0B
_CATEGORY_CLASS = {
    "N": rb"\xD1\x30-\x39",
    "L": rb"\xD2\x41-\x5A\x61-\x7A",
    "P": rb"\xD3!-#%-*,-/:;?@\[-\]_{}",
}
_UNICODE_CLASS = re.compile(r"\\p\{([NLP])\}")
_WHITESPACE = regex.compile(r"\s")
_CATEGORY = [(name, regex.compile(rf"\p{{{name}}}")) for name in ("N", "L", "P")]


class _CollapseTable(dict):
    """str.translate table filled on demand: code point -> its collapsed byte (as a one-char str)."""

    def __missing__(self, cpt):
        char = chr(cpt)
        if _WHITESPACE.match(char):
            byte = _WHITESPACE_BYTE
        else:
            byte = next((_CATEGORY_BYTE[name] for name, pattern in _CATEGORY if pattern.match(char)), _OTHER_BYTE)
        self[cpt] = chr(byte)
        return self[cpt]


class _WhitespaceTable(dict):
    """str.translate table: non-ASCII whitespace -> \\v, as llama.cpp feeds std::wregex (its \\s is ASCII)."""

    def __missing__(self, cpt):
        self[cpt] = "\x0b" if _WHITESPACE.match(chr(cpt)) else chr(cpt)
        return self[cpt]


_COLLAPSE = _CollapseTable({c: chr(c) for c in range(128)})
_ASCII_WHITESPACE = _WhitespaceTable({c: c for c in range(128)})


def _compile(expression: str):
    """Compile one llama.cpp regex for Python: collapsed-bytes form if it uses \\p{..}, else ASCII-\\s str form."""
    if _UNICODE_CLASS.search(expression):
        source = expression.encode("ascii")
        collapsed = re.sub(rb"\\p\{([NLP])\}", lambda m: _category_class(m, source), source)
        return re.compile(collapsed), True
    return re.compile(expression, re.ASCII), False


def _category_class(match, source):
    """\\p{X} -> its byte class; bracketed when it stands alone, bare inside [...] (as llama.cpp rewrites)."""
    body = _CATEGORY_CLASS[match.group(1).decode()]
    inside = source.rfind(b"[", 0, match.start()) > source.rfind(b"]", 0, match.start())
    return body if inside else b"[" + body + b"]"


class Splitter:
    """Splits text into the words of one pre-tokenizer family."""

    def __init__(self, family: str):
        self.stages = [_compile(expression) for expression in _FAMILIES[family]]

    def split(self, text: str) -> list[str]:
        collapsed = plain = None
        spans = [(0, len(text))]
        for pattern, uses_categories in self.stages:
            if uses_categories:
                if collapsed is None:
                    collapsed = text.encode("ascii") if text.isascii() else \
                        text.translate(_COLLAPSE).encode("latin-1")
                subject = collapsed
            else:
                if plain is None:
                    plain = text if text.isascii() else text.translate(_ASCII_WHITESPACE)
                subject = plain
            spans = _split_spans(pattern, subject, spans)
        return [text[start:end] for start, end in spans]


def _split_spans(pattern, subject, spans):
    """Apply one regex inside each span; matches and the gaps between them become the new spans."""
    out = []
    append = out.append
    for start, end in spans:
        position = start
        for match in pattern.finditer(subject, start, end):
            match_start, match_end = match.span()
            if match_start > position:
                append((position, match_start))
            if match_end > match_start:
                append((match_start, match_end))
            position = match_end
        if position < end:
            append((position, end))
    return out
