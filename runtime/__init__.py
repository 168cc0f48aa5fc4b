"""The runtime: model files by name, tokenizers, chat templates, architectures, sampling and the Llama API."""
import cpu_kernels  # noqa: F401  first, so that a kernel path picked by NIBBLE_KERNELS sets Numba's CPU before gguf_io compiles
from .chat_template import ChatTemplate, ChatTemplateError
from .llama import ContextFullError, Llama
from .grammar import GrammarError, LlamaGrammar
from .llama_cpp_compat import install_as_llama_cpp
from .model import Model, ModelError
from .registry import DEFAULT_MODEL, KNOWN_MODELS, ModelNotFound, pull, resolve_model, source_folder
from .tokenizer import IncrementalDecoder, Tokenizer, TokenizerError

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "ChatTemplate", "ChatTemplateError", "ContextFullError", "GrammarError", "Llama", "LlamaGrammar", "Model", "ModelError", "IncrementalDecoder", "ModelNotFound", "Tokenizer",
           "TokenizerError", "install_as_llama_cpp", "pull", "resolve_model", "source_folder"]
