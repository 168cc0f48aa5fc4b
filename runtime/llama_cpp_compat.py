"""nibble under the name `llama_cpp`, so that code written for llama-cpp-python runs unchanged.

    import runtime
    runtime.install_as_llama_cpp()      # as pymysql.install_as_MySQLdb()
    from langchain_community.llms import LlamaCpp     # its `from llama_cpp import Llama` gets nibble's

The module holds what the integrations import: `Llama`, `LlamaGrammar` and llama-cpp-python's constants.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

from .llama import ContextFullError, Llama

# llama-cpp-python's pooling and token-type constants, which apps pass to Llama(...)
CONSTANTS = {"LLAMA_POOLING_TYPE_UNSPECIFIED": -1, "LLAMA_POOLING_TYPE_NONE": 0, "LLAMA_POOLING_TYPE_MEAN": 1,
             "LLAMA_POOLING_TYPE_CLS": 2, "LLAMA_POOLING_TYPE_LAST": 3, "LLAMA_DEFAULT_SEED": 0xFFFFFFFF,
             "GGML_TYPE_F32": 0, "GGML_TYPE_F16": 1}


class LlamaGrammar:
    """A GBNF grammar, as llama-cpp-python's class of the same name is built. Holding one works; generating
    with it (grammar=...) is refused until nibble enforces grammars."""

    def __init__(self, grammar: str):
        if not isinstance(grammar, str) or not grammar.strip():
            raise ValueError("a GBNF grammar must be a non-empty string")
        self._grammar = grammar

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(grammar)

    @classmethod
    def from_file(cls, file, verbose: bool = True) -> "LlamaGrammar":
        try:
            return cls(Path(file).read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"cannot read the grammar file {file}: {error.strerror or error}") from None

    def __repr__(self):
        return f"LlamaGrammar({len(self._grammar)} characters of GBNF)"


def install_as_llama_cpp() -> types.ModuleType:
    """Register nibble as the module `llama_cpp` (replacing llama-cpp-python's, if imported or installed);
    returns that module."""
    module = types.ModuleType("llama_cpp", __doc__)
    module.Llama, module.LlamaGrammar, module.ContextFullError = Llama, LlamaGrammar, ContextFullError
    module.__version__ = "0.3.36"          # the llama-cpp-python whose API nibble follows
    for name, value in CONSTANTS.items():
        setattr(module, name, value)
    grammar = types.ModuleType("llama_cpp.llama_grammar")
    grammar.LlamaGrammar = LlamaGrammar
    module.llama_grammar = grammar
    sys.modules.update({"llama_cpp": module, "llama_cpp.llama_grammar": grammar})
    return module
