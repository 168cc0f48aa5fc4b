"""nibble under the name `llama_cpp`, so that code written for llama-cpp-python runs unchanged.

    import runtime
    runtime.install_as_llama_cpp()      # as pymysql.install_as_MySQLdb()
    from langchain_community.llms import LlamaCpp     # its `from llama_cpp import Llama` gets nibble's

The module holds what the integrations import: `Llama`, `LlamaGrammar` and llama-cpp-python's constants.
"""
from __future__ import annotations

import sys
import types

from .grammar import LlamaGrammar
from .llama import ContextFullError, Llama

# llama-cpp-python's pooling and token-type constants, which apps pass to Llama(...)
CONSTANTS = {"LLAMA_POOLING_TYPE_UNSPECIFIED": -1, "LLAMA_POOLING_TYPE_NONE": 0, "LLAMA_POOLING_TYPE_MEAN": 1,
             "LLAMA_POOLING_TYPE_CLS": 2, "LLAMA_POOLING_TYPE_LAST": 3, "LLAMA_DEFAULT_SEED": 0xFFFFFFFF,
             "GGML_TYPE_F32": 0, "GGML_TYPE_F16": 1}


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
