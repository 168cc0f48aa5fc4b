"""The runtime: model files by name, tokenizers and chat templates; architectures and generation next."""
from .chat_template import ChatTemplate, ChatTemplateError
from .registry import KNOWN_MODELS, ModelNotFound, pull, resolve_model
from .tokenizer import IncrementalDecoder, Tokenizer, TokenizerError

__all__ = ["KNOWN_MODELS", "ChatTemplate", "ChatTemplateError", "IncrementalDecoder", "ModelNotFound", "Tokenizer",
           "TokenizerError", "pull", "resolve_model"]
