"""BERT-family encoders from GGUF files (llama.cpp's `bert` architecture): sentence embeddings.

An encoder differs in kind from the decoders of model.py: every token sees every other token of its text
(no causal mask, no KV cache), positions are a learned table, and each block is post-norm (LayerNorm with
a bias after each residual add) with a plain GELU feed-forward. The matrix products are the same kernels
(`model._project`): float weights through BLAS, quantized ones through the integer tiles.

A batch is many texts packed row after row: the projections and the feed-forward run once over all of
their rows, and attention stays within each text (K.attention_bidirectional). `hidden_states` returns each
text's last-layer rows, which embedding.py pools.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import cpu_kernels as K
from gguf_io import block_format, open_gguf

from . import tile_cache
from .model import ModelError, _project, _Weights
from .tokenizer import Tokenizer


@dataclass
class EncoderParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    eps: float
    n_ctx_train: int
    pooling_type: int      # llama.cpp's enum: 0 none, 1 mean, 2 cls, 3 last

    @classmethod
    def from_metadata(cls, meta: dict, arch: str, n_vocab: int) -> "EncoderParams":
        def key(name, default=None):
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise ModelError(f"the file has no {arch}.{name}, which architecture {arch!r} needs")
            return value

        if meta.get(f"{arch}.attention.causal", False):
            raise ModelError(f"{arch}.attention.causal is true: nibble runs {arch} as a bidirectional encoder only")
        return cls(n_vocab=n_vocab, n_embd=int(key("embedding_length")), n_layer=int(key("block_count")),
                   n_head=int(key("attention.head_count")), n_ff=int(key("feed_forward_length")),
                   eps=float(key("attention.layer_norm_epsilon")), n_ctx_train=int(key("context_length")),
                   pooling_type=int(key("pooling_type", 0)))


@dataclass
class EncoderLayer:
    wq: K.PackedWeight
    wk: K.PackedWeight
    wv: K.PackedWeight
    wo: K.PackedWeight
    q_bias: np.ndarray
    k_bias: np.ndarray
    v_bias: np.ndarray
    o_bias: np.ndarray
    attn_norm: np.ndarray          # attn_output_norm: after attention + residual
    attn_norm_bias: np.ndarray
    up: K.PackedWeight
    up_bias: np.ndarray
    down: K.PackedWeight
    down_bias: np.ndarray
    out_norm: np.ndarray           # layer_output_norm: after the feed-forward + residual
    out_norm_bias: np.ndarray


ENCODER_ARCHITECTURES = ("bert",)


class EncoderModel:
    """A loaded BERT-family GGUF: tokenizer, parameters, packed weights and the bidirectional forward pass."""

    is_encoder = True

    def __init__(self, path, n_threads: int | None = None):
        self.path = Path(path)
        self.n_threads = K.set_threads(n_threads)
        self.gguf = open_gguf(self.path)
        meta = self.gguf.metadata
        self.arch_name = meta.get("general.architecture")
        if self.arch_name not in ENCODER_ARCHITECTURES:
            raise ModelError(f"architecture {self.arch_name!r} is not an encoder nibble runs "
                             f"({', '.join(ENCODER_ARCHITECTURES)})")
        self.tokenizer = Tokenizer(meta)
        self.hp = hp = EncoderParams.from_metadata(meta, self.arch_name, self.tokenizer.n_vocab)
        if hp.n_embd % hp.n_head:
            raise ModelError(f"embedding_length {hp.n_embd} is not a multiple of head_count {hp.n_head}")
        cached_tiles = tile_cache.load(self.path)
        w = _Weights(self.gguf, self.arch_name, cached_tiles)
        embd = w.tensor("token_embd.weight")
        if embd.shape != (hp.n_vocab, hp.n_embd):
            raise ModelError(f"token_embd.weight has shape {embd.shape}, expected ({hp.n_vocab}, {hp.n_embd})")
        self._embd_raw = embd.raw.reshape(hp.n_vocab, -1)
        self._embd_dequantize = block_format(embd.type).dequantize_blocks
        positions = w.tensor("position_embd.weight").dequantize()
        self.position_embd = np.ascontiguousarray(positions.reshape(-1, hp.n_embd), np.float32)   # (n_ctx_train, n_embd)
        self.token_type_row = (w.tensor("token_types.weight").dequantize().reshape(-1, hp.n_embd)[0].astype(np.float32)
                               if w.has("token_types.weight") else np.zeros(hp.n_embd, np.float32))  # "sentence A"
        self.embd_norm, self.embd_norm_bias = w.vector("token_embd_norm.weight"), w.vector("token_embd_norm.bias")
        self.layers = [self._layer(w, i) for i in range(hp.n_layer)]
        self.gguf.drop_resident_pages()
        if cached_tiles is None and w.packed:
            tile_cache.save(self.path, w.packed)

    def _layer(self, w, i):
        d, ff = self.hp.n_embd, self.hp.n_ff
        p = f"blk.{i}."
        return EncoderLayer(
            wq=w.matrix(p + "attn_q.weight", d, d), wk=w.matrix(p + "attn_k.weight", d, d),
            wv=w.matrix(p + "attn_v.weight", d, d), wo=w.matrix(p + "attn_output.weight", d, d),
            q_bias=w.vector(p + "attn_q.bias"), k_bias=w.vector(p + "attn_k.bias"), v_bias=w.vector(p + "attn_v.bias"),
            o_bias=w.vector(p + "attn_output.bias"),
            attn_norm=w.vector(p + "attn_output_norm.weight"), attn_norm_bias=w.vector(p + "attn_output_norm.bias"),
            up=w.matrix(p + "ffn_up.weight", ff, d), up_bias=w.vector(p + "ffn_up.bias"),
            down=w.matrix(p + "ffn_down.weight", d, ff), down_bias=w.vector(p + "ffn_down.bias"),
            out_norm=w.vector(p + "layer_output_norm.weight"), out_norm_bias=w.vector(p + "layer_output_norm.bias"))

    @property
    def max_tokens(self) -> int:
        """The longest text the position table covers."""
        return self.hp.n_ctx_train

    def hidden_states(self, sequences) -> list[np.ndarray]:
        """The last layer's rows (n_i, n_embd) of each token sequence, all run in one batch."""
        hp = self.hp
        sequences = [np.asarray(s, np.int64).reshape(-1) for s in sequences]
        for tokens in sequences:
            if tokens.size == 0:
                raise ValueError("an encoder input needs at least one token")
            if tokens.size > hp.n_ctx_train:
                raise ValueError(f"{tokens.size} tokens are more than the {hp.n_ctx_train} positions of this model")
            if tokens.min() < 0 or tokens.max() >= hp.n_vocab:
                raise ValueError(f"token ids must be in 0..{hp.n_vocab - 1}")
        lengths = np.array([s.size for s in sequences], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.concatenate(sequences)
        positions = np.concatenate([np.arange(n) for n in lengths])
        n, d, heads = tokens.size, hp.n_embd, hp.n_head
        f32 = lambda *shape: np.empty(shape, np.float32)  # noqa: E731
        x, q, k, v, attn, o, up = f32(n, d), f32(n, d), f32(n, d), f32(n, d), f32(n, d), f32(n, d), f32(n, hp.n_ff)
        shape3 = (n, heads, d // heads)
        scale = np.float32(1.0 / math.sqrt(d // heads))
        prepared = {}

        for row, token in enumerate(tokens):
            self._embd_dequantize(self._embd_raw[token], x[row])
        x += self.position_embd[positions]
        x += self.token_type_row
        K.layer_norm(x, self.embd_norm, self.embd_norm_bias, hp.eps, x)
        for layer in self.layers:
            _project(x, prepared, (layer.wq, q), (layer.wk, k), (layer.wv, v))
            q += layer.q_bias
            k += layer.k_bias
            v += layer.v_bias
            K.attention_bidirectional(q.reshape(shape3), k.reshape(shape3), v.reshape(shape3), starts, scale,
                                      attn.reshape(shape3))
            _project(attn, prepared, (layer.wo, o))
            o += layer.o_bias
            K.add_layer_norm(x, o, layer.attn_norm, layer.attn_norm_bias, hp.eps)
            _project(x, prepared, (layer.up, up))
            K.add_bias_gelu(up, layer.up_bias)
            _project(up, prepared, (layer.down, o))
            o += layer.down_bias
            K.add_layer_norm(x, o, layer.out_norm, layer.out_norm_bias, hp.eps)
        return [x[starts[i]:starts[i + 1]] for i in range(len(sequences))]

    def close(self):
        self.gguf.close()
