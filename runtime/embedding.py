"""Embeddings: texts -> token sequences -> one batched forward -> pooled vectors.

The same path serves `Llama.embed`/`create_embedding`, `nibble embed` and the server's /v1/embeddings. A
model gives the last layer's rows of each sequence (`hidden_states`: an encoder's output, or a decoder's
final-norm rows, which is what llama.cpp pools); pooling reduces them as the file's `{arch}.pooling_type`
says (llama.cpp's enum), or as the caller asks.
"""
from __future__ import annotations

import numpy as np

# llama.cpp's enum llama_pooling_type (-1: take the file's)
POOLING_TYPES = {"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3}
POOLING_NAMES = {value: name for name, value in POOLING_TYPES.items()}


def pooling_type(value) -> int:
    """A pooling type from its name or llama.cpp's number."""
    if isinstance(value, str):
        if value.lower() not in POOLING_TYPES:
            raise ValueError(f"unknown pooling {value!r}; choose {', '.join(n for n in POOLING_TYPES if n != 'unspecified')}")
        return POOLING_TYPES[value.lower()]
    if value not in POOLING_NAMES:
        raise ValueError(f"pooling_type must be one of {sorted(POOLING_NAMES)} (llama.cpp's enum), got {value!r}")
    return int(value)


def file_pooling(model) -> int:
    """The pooling the model file names; none for a file that names none (as llama.cpp)."""
    return int(model.gguf.metadata.get(f"{model.arch_name}.pooling_type", 0))


def pool(rows: np.ndarray, kind: int) -> np.ndarray:
    """One sequence's rows (n, d) -> (d,) by mean, first (CLS) or last row; (n, d) unchanged for none."""
    if kind == 1:
        return rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    if kind == 2:
        return rows[0].copy()
    if kind == 3:
        return rows[-1].copy()
    return rows.copy()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalized along the last axis (a zero vector stays zero), as llama-cpp-python's normalize."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0.0, 1.0, norms)


def batches(token_lists, n_batch: int):
    """Consecutive runs of sequences with at most n_batch tokens in all (a longer sequence alone)."""
    batch, size = [], 0
    for tokens in token_lists:
        if batch and size + len(tokens) > n_batch:
            yield batch
            batch, size = [], 0
        batch.append(tokens)
        size += len(tokens)
    if batch:
        yield batch


def embed_tokens(model, token_lists, kind: int, n_batch: int = 512, normalized: bool = False) -> list[np.ndarray]:
    """Pooled embeddings (d,) of each token sequence (or (n, d) rows for pooling none), running up to n_batch
    tokens of sequences per forward."""
    if kind < 0:
        kind = file_pooling(model)
    out = []
    for batch in batches(token_lists, n_batch):
        for rows in model.hidden_states(batch):
            vector = pool(rows, kind)
            out.append(normalize(vector) if normalized else vector)
    return out
