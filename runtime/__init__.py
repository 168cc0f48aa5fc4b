"""The runtime: model names and files today; architectures, tokenizers and generation next."""
from .registry import KNOWN_MODELS, ModelNotFound, pull, resolve_model

__all__ = ["KNOWN_MODELS", "ModelNotFound", "pull", "resolve_model"]
