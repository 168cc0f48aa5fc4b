"""Transformer models from GGUF files: hyper-parameters and weights from the file, one forward pass.

Each supported architecture is a small description (`ARCHITECTURES`) over one shared block: pre-norm
attention with grouped-query heads and RoPE, then a gated feed-forward. The description says which
optional pieces the architecture has (per-head q/k norms, post-norms, sliding-window layers, ...). What a
file states for itself is read from it, as llama.cpp does: fused q/k/v and gate/up matrices (split at
load), partial rotary dimensions, long/short RoPE factors and their attention factor, logit soft-caps.

Weights are packed once at load into the kernels' layout (cpu_kernels.PackedWeight). A forward pass over
n tokens uses matvec kernels when n == 1 (generation) and matmul kernels otherwise (prompt processing). On
CPUs with an integer kernel path (AVX-512, AVX2, ARM64 NEON: cpu_kernels/isa.py), quantized weights multiply
activations rounded to 15-bit integers per 32 values (cpu_kernels/tiles.py; llama.cpp rounds them to 8 bits);
elsewhere, and for float weights, activations stay
float32 (float matvec kernels; dequantize-plus-BLAS for prompts). Everything between the products (norms,
RoPE, attention, gates, the residual stream) is float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import cpu_kernels as K
from gguf_io import block_format, open_gguf

from . import tile_cache
from .tokenizer import Tokenizer


class ModelError(ValueError):
    """The model file lacks something the architecture needs, or uses something nibble cannot run."""


@dataclass(frozen=True)
class Architecture:
    """What distinguishes one architecture's block from the shared one."""
    rope_neox: bool = False            # rotate pairs (i, i + d/2) instead of (2i, 2i + 1)
    activation: str = "silu"           # feed-forward gate: silu (SwiGLU) or gelu (GeGLU, tanh form)
    embed_scale: bool = False          # multiply embeddings by sqrt(n_embd)
    qk_norm: bool = False              # RMSNorm over each head of q and k (attn_q_norm, attn_k_norm)
    post_norms: bool = False           # RMSNorm on the attention and feed-forward outputs before the residual
    windowed: bool = False             # the file's attention.sliding_window applies (to the layers below)
    global_every: int = 0              # with a sliding window: every Nth layer attends globally (0: none does)
    local_rope_base: float = 0.0       # RoPE base of sliding-window layers (0: same as global)
    qkv_bias: bool = False             # q, k and v projections add a bias (attn_q.bias, ...)
    wide_query_layers: int = 0         # models of this many layers (Gemma's 27B) scale q by 1/sqrt(n_embd/n_head)


ARCHITECTURES = {
    # Mistral files are llama files; nibble's converter writes their sliding window (llama.cpp ignores it)
    "llama": Architecture(windowed=True),
    "gemma2": Architecture(rope_neox=True, activation="gelu", embed_scale=True, post_norms=True, windowed=True,
                           global_every=2, wide_query_layers=46),
    "gemma3": Architecture(rope_neox=True, activation="gelu", embed_scale=True, qk_norm=True, post_norms=True,
                           windowed=True, global_every=6, local_rope_base=10000.0, wide_query_layers=62),
    "qwen2": Architecture(rope_neox=True, qkv_bias=True),
    "qwen3": Architecture(rope_neox=True, qk_norm=True),
    # Phi-3's window is applied as transformers does (llama.cpp turns it off); phi3 files fuse q/k/v and gate/up
    "phi3": Architecture(rope_neox=True, windowed=True),
}

_ACTIVATIONS = {"silu": K.silu_mul, "gelu": K.gelu_tanh_mul}


@dataclass
class HyperParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    eps: float
    rope_dims: int
    rope_base: float
    rope_freq_scale: float
    n_ctx_train: int
    sliding_window: int
    rope_attn_factor: float = 1.0      # cos and sin are scaled by it (Phi-3's long RoPE)
    n_ctx_orig: int = 0                # contexts longer than this take the long RoPE factors
    attn_softcap: float = 0.0          # Gemma 2's soft-caps of attention scores and of the logits (0: none)
    final_softcap: float = 0.0

    @classmethod
    def from_metadata(cls, meta: dict, arch: str, n_vocab: int) -> "HyperParams":
        def key(name, default=None):
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise ModelError(f"the file has no {arch}.{name}, which architecture {arch!r} needs")
            return value

        n_embd, n_head = int(key("embedding_length")), int(key("attention.head_count"))
        head_dim = int(key("attention.key_length", n_embd // n_head))
        if int(key("attention.value_length", head_dim)) != head_dim:
            raise ModelError("attention.value_length different from key_length is not supported")
        scaling = meta.get(f"{arch}.rope.scaling.type", "none")
        factor = float(meta.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0)
        if scaling not in ("none", "linear") and factor != 1.0:
            raise ModelError(f"rope scaling {scaling!r} is not supported (nibble supports linear and llama3)")
        return cls(
            n_vocab=n_vocab, n_embd=n_embd, n_layer=int(key("block_count")), n_head=n_head,
            n_head_kv=int(key("attention.head_count_kv", n_head)), head_dim=head_dim,
            n_ff=int(key("feed_forward_length")), eps=float(key("attention.layer_norm_rms_epsilon")),
            rope_dims=int(key("rope.dimension_count", head_dim)), rope_base=float(key("rope.freq_base", 10000.0)),
            rope_freq_scale=1.0 / factor if scaling == "linear" else 1.0,
            n_ctx_train=int(key("context_length", 0)), sliding_window=int(key("attention.sliding_window", 0)),
            rope_attn_factor=float(key("rope.scaling.attn_factor", 1.0)),
            n_ctx_orig=int(key("rope.scaling.original_context_length", key("context_length", 0))),
            attn_softcap=float(key("attn_logit_softcapping", 0.0)),
            final_softcap=float(key("final_logit_softcapping", 0.0)))


class _Weights:
    """Looks tensors up by name and packs them, naming what is missing. Tiles packed on an earlier load come
    from the tile cache (tile_cache.py); tiles packed now are kept in `packed` for it."""

    def __init__(self, gguf, arch, cached_tiles=None):
        self.gguf, self.arch = gguf, arch
        self.cached_tiles = cached_tiles
        self.packed = {}
        self.names = {}           # id(PackedWeight) -> its GGUF tensor's name (parts of a fused tensor share it)

    def has(self, name):
        return name in self.gguf.tensors

    def tensor(self, name):
        tensor = self.gguf.tensors.get(name)
        if tensor is None:
            raise ModelError(f"tensor {name!r} is missing from {Path(self.gguf.path).name} "
                             f"(architecture {self.arch!r} needs it)")
        return tensor

    def vector(self, name):
        return np.ascontiguousarray(self.tensor(name).dequantize().reshape(-1), np.float32)

    def matrix(self, name, rows=None, cols=None):
        tensor = self.tensor(name)
        shape = tensor.shape
        if len(shape) != 2 or (rows is not None and shape[0] != rows) or (cols is not None and shape[1] != cols):
            raise ModelError(f"tensor {name!r} has shape {shape}, expected ({rows}, {cols})")
        return self._packed(name, tensor.raw, tensor.type, shape)

    def matrices(self, name, row_counts, cols):
        """A fused tensor (attn_qkv, ffn_up holding gate and up) split by rows: one weight per count."""
        tensor = self.tensor(name)
        if len(tensor.shape) != 2 or tensor.shape != (sum(row_counts), cols):
            raise ModelError(f"tensor {name!r} has shape {tensor.shape}, expected ({sum(row_counts)}, {cols})")
        rows = tensor.raw.reshape(tensor.shape[0], -1)
        bounds = np.cumsum([0, *row_counts])
        return [self._packed(f"{name}[{a}:{b}]", rows[a:b], tensor.type, (b - a, cols))
                for a, b in zip(bounds[:-1], bounds[1:])]

    def _packed(self, key, raw, qtype, shape):
        try:
            if self.cached_tiles is not None and key in self.cached_tiles:
                return K.PackedWeight.from_tiles(self.cached_tiles[key], qtype, shape)
            weight = K.PackedWeight(raw, qtype, shape, block_format(qtype).dequantize_blocks)
        except ValueError as error:
            raise ModelError(f"tensor {key!r}: {error}") from None
        if weight.uses_tiles:
            self.packed[key] = weight.tiles
        self.names[id(weight)] = key.split("[")[0]
        return weight


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: K.PackedWeight
    wk: K.PackedWeight
    wv: K.PackedWeight
    wo: K.PackedWeight
    ffn_norm: np.ndarray
    gate: K.PackedWeight
    up: K.PackedWeight
    down: K.PackedWeight
    sliding: bool
    q_norm: np.ndarray | None = None
    k_norm: np.ndarray | None = None
    post_attn_norm: np.ndarray | None = None
    post_ffw_norm: np.ndarray | None = None
    q_bias: np.ndarray | None = None
    k_bias: np.ndarray | None = None
    v_bias: np.ndarray | None = None


EMPTY_SLOT = np.iinfo(np.int64).max   # a slot position no query can see


class KVPool:
    """The KV caches of several sequences in shared arrays (one per layer: (n_seqs, n_head_kv, slots,
    head_dim), float16 or float32), so that one kernel call per layer serves every sequence that generates
    a token in the same step (a server's slots). A single sequence's cache is a pool of one.

    Global layers keep one slot per position (n_ctx). Sliding-window layers keep a ring of
    window + max_batch slots, enough for a batch of queries to see their whole window, so their
    cache does not grow with the context. `linear_pos` and `ring_pos` say which position each slot holds.
    """

    def __init__(self, hp: HyperParams, n_seqs: int, n_ctx: int, sliding, dtype: str = "f16", max_batch: int = 512):
        storage = {"f16": np.uint16, "f32": np.float32}.get(dtype)
        if storage is None:
            raise ValueError(f"KV cache type must be f16 or f32, got {dtype!r}")
        if n_ctx < 1:
            raise ValueError(f"the context must hold at least one token, got n_ctx={n_ctx}")
        self.n_ctx, self.window = n_ctx, hp.sliding_window
        self.max_batch = max(1, min(max_batch, n_ctx))
        self.ring = min(n_ctx, self.window + self.max_batch) if any(sliding) else n_ctx
        sizes = [self.ring if s else n_ctx for s in sliding]
        self.k = [np.zeros((n_seqs, hp.n_head_kv, size, hp.head_dim), storage) for size in sizes]
        self.v = [np.zeros((n_seqs, hp.n_head_kv, size, hp.head_dim), storage) for size in sizes]
        self.linear_pos = np.full((n_seqs, n_ctx), EMPTY_SLOT, np.int64)
        self.ring_pos = np.full((n_seqs, self.ring), EMPTY_SLOT, np.int64)
        self.caches = [KVCache(self, i) for i in range(n_seqs)]


class KVCache:
    """One sequence's keys and values, per layer (n_head_kv, slots, head_dim): views into its pool."""

    def __init__(self, pool: KVPool, index: int):
        self.pool, self.index = pool, index
        self.n_ctx, self.window, self.max_batch, self.ring = pool.n_ctx, pool.window, pool.max_batch, pool.ring
        self.k = [k[index] for k in pool.k]
        self.v = [v[index] for v in pool.v]
        self.linear_pos, self.ring_pos = pool.linear_pos[index], pool.ring_pos[index]
        self.n_tokens = 0

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)

    def snapshot(self) -> tuple:
        """Copies of what the cache holds (keys, values, slot positions, token count), for restore()."""
        return ([k.copy() for k in self.k], [v.copy() for v in self.v], self.linear_pos.copy(),
                self.ring_pos.copy(), self.n_tokens)

    def restore(self, snapshot: tuple):
        """Put back what snapshot() took, from this cache or one of the same model and size."""
        keys, values, linear_pos, ring_pos, n_tokens = snapshot
        saved_layout = [(a.shape, a.dtype) for a in keys + values]
        if saved_layout != [(a.shape, a.dtype) for a in self.k + self.v]:
            raise ValueError("the saved state is from a model or context of another size")
        for saved, mine in zip(keys + values, self.k + self.v):
            mine[...] = saved
        self.linear_pos[...], self.ring_pos[...], self.n_tokens = linear_pos, ring_pos, n_tokens

    def truncate(self, n_tokens: int) -> int:
        """Forget positions >= n_tokens; returns how many are kept. A ring that has already overwritten
        keys which position n_tokens needs cannot go back there: then everything is forgotten."""
        n_tokens = min(n_tokens, self.n_tokens)
        if self.ring < self.n_ctx and n_tokens and n_tokens - self.window + 1 < self.n_tokens - self.ring:
            n_tokens = 0
        self.linear_pos[self.linear_pos >= n_tokens] = EMPTY_SLOT
        self.ring_pos[self.ring_pos >= n_tokens] = EMPTY_SLOT
        self.n_tokens = n_tokens
        return n_tokens


class _DecodeGroup:
    """The sequences of one forward that add a single token each and whose caches share a pool: one
    attention call per layer serves all of them (K.attention_seqs)."""

    def __init__(self, members, n_head):
        self.pool = members[0][1].pool
        self.rows = np.array([m[0] for m in members], np.int64)
        self.seqs = np.array([m[1].index for m in members], np.int64)
        self.positions = np.array([m[2] for m in members], np.int64)
        self.ring_slots = np.array([m[3] for m in members], np.int64)
        self.n_linear = self.positions + 1
        self.n_ring = np.full(len(members), self.pool.ring, np.int64)
        self.scores = np.empty((len(members) * n_head, self.pool.n_ctx), np.float32)

    def attend(self, i, sliding, window, q3, k3, v3, scale, softcap, out):
        pool = self.pool
        if sliding:
            slot_pos, slots, n_slots = pool.ring_pos, self.ring_slots, self.n_ring
        else:
            slot_pos, slots, n_slots, window = pool.linear_pos, self.positions, self.n_linear, 0
        K.attention_seqs(q3, pool.k[i], pool.v[i], self.rows, self.seqs, self.positions, slot_pos, n_slots, k3, v3,
                         slots, np.float32(scale), window, softcap, self.scores, out)


class _Workspace:
    """Activation buffers for up to n_batch tokens, reused by every forward pass."""

    def __init__(self, hp: HyperParams, n_batch: int):
        q_width, kv_width = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        f32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        self.n_batch = n_batch
        self.x, self.h = f32(n_batch, hp.n_embd), f32(n_batch, hp.n_embd)
        self.q, self.attn = f32(n_batch, q_width), f32(n_batch, q_width)
        self.k, self.v = f32(n_batch, kv_width), f32(n_batch, kv_width)
        self.o = f32(n_batch, hp.n_embd)
        self.gate, self.up, self.act = f32(n_batch, hp.n_ff), f32(n_batch, hp.n_ff), f32(n_batch, hp.n_ff)
        self.prepared = {}   # activation layouts for the kernels, refilled while the row count stays


class VocabOnly:
    """A model file's vocabulary and metadata without its weights (llama-cpp-python's vocab_only=True):
    enough to tokenize, count tokens and read the metadata."""

    is_encoder = False

    def __init__(self, path, n_threads: int | None = None):
        self.path = Path(path)
        self.n_threads = K.set_threads(n_threads)
        self.gguf = open_gguf(self.path)
        self.arch_name = self.gguf.metadata.get("general.architecture")
        self.tokenizer = Tokenizer(self.gguf.metadata)
        meta = self.gguf.metadata
        self.hp = SimpleNamespace(n_vocab=self.tokenizer.n_vocab, **{
            field: int(meta.get(f"{self.arch_name}.{key}", 0)) for field, key in (
                ("n_layer", "block_count"), ("n_embd", "embedding_length"), ("n_ctx_train", "context_length"))})

    def override_rope(self, freq_base=0.0, freq_scale=0.0):
        """Nothing to change: there are no weights to run."""

    def close(self):
        self.gguf.close()


def load_model(path, n_threads: int | None = None):
    """The model in a GGUF file: a decoder (Model) or, for an encoder architecture (BERT), an EncoderModel."""
    from .encoder import ENCODER_ARCHITECTURES, EncoderModel
    with open_gguf(path) as gguf:
        arch = gguf.metadata.get("general.architecture")
    return (EncoderModel if arch in ENCODER_ARCHITECTURES else Model)(path, n_threads=n_threads)


class Model:
    """A loaded GGUF model: tokenizer, hyper-parameters, packed weights and the forward pass."""

    is_encoder = False

    def __init__(self, path, n_threads: int | None = None):
        self.path = Path(path)
        self.n_threads = K.set_threads(n_threads)
        self.gguf = open_gguf(self.path)
        meta = self.gguf.metadata
        self.arch_name = meta.get("general.architecture")
        self.arch = ARCHITECTURES.get(self.arch_name)
        if self.arch is None:
            from .encoder import ENCODER_ARCHITECTURES
            if self.arch_name in ENCODER_ARCHITECTURES:
                raise ModelError(f"{self.path.name} is an encoder ({self.arch_name}): it makes embeddings, not text; "
                                 "use `nibble embed` or Llama(..., embedding=True)")
            raise ModelError(f"architecture {self.arch_name!r} is not supported "
                             f"(nibble runs: {', '.join(sorted([*ARCHITECTURES, *ENCODER_ARCHITECTURES]))})")
        self.tokenizer = Tokenizer(meta)
        self.hp = hp = HyperParams.from_metadata(meta, self.arch_name, self.tokenizer.n_vocab)
        cached_tiles = tile_cache.load(self.path)
        weights = _Weights(self.gguf, self.arch_name, cached_tiles)
        embd = weights.tensor("token_embd.weight")
        if embd.shape != (hp.n_vocab, hp.n_embd):
            raise ModelError(f"token_embd.weight has shape {embd.shape}, expected ({hp.n_vocab}, {hp.n_embd})")
        self._embd_raw = embd.raw.reshape(hp.n_vocab, -1)
        self._embd_dequantize = block_format(embd.type).dequantize_blocks
        self.output_norm = weights.vector("output_norm.weight")
        self.output = weights.matrix("output.weight" if weights.has("output.weight") else "token_embd.weight",
                                     hp.n_vocab, hp.n_embd)
        self.rope_freq_factors = weights.vector("rope_freqs.weight") if weights.has("rope_freqs.weight") else None
        self.rope_long_factors = self.rope_short_factors = None
        if weights.has("rope_factors_long.weight"):
            self.rope_long_factors = weights.vector("rope_factors_long.weight")
            self.rope_short_factors = weights.vector("rope_factors_short.weight")
        wide = self.arch.wide_query_layers == hp.n_layer
        self.query_scale = 1.0 / math.sqrt(hp.n_embd / hp.n_head if wide else hp.head_dim)
        self.layers = []
        for i in range(hp.n_layer):
            self.layers.append(self._layer(weights, i))
            self.gguf.drop_resident_pages()   # the packed copy lives in its own memory: count the bytes once
        if cached_tiles is None and weights.packed:
            tile_cache.save(self.path, weights.packed)
        self.weight_names = weights.names
        self._workspace = None

    def _layer(self, w, i):
        hp, arch = self.hp, self.arch
        p = f"blk.{i}."
        q_width, kv_width = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        if w.has(p + "attn_qkv.weight"):        # fused, as Phi-3 stores them
            wq, wk, wv = w.matrices(p + "attn_qkv.weight", (q_width, kv_width, kv_width), hp.n_embd)
        else:
            wq, wk, wv = (w.matrix(p + f"attn_{x}.weight", width, hp.n_embd)
                          for x, width in (("q", q_width), ("k", kv_width), ("v", kv_width)))
        if w.has(p + "ffn_gate.weight"):
            gate, up = w.matrix(p + "ffn_gate.weight", hp.n_ff, hp.n_embd), w.matrix(p + "ffn_up.weight", hp.n_ff, hp.n_embd)
        else:                                    # ffn_up holds gate then up (Phi-3's gate_up_proj)
            gate, up = w.matrices(p + "ffn_up.weight", (hp.n_ff, hp.n_ff), hp.n_embd)
        layer = Layer(
            attn_norm=w.vector(p + "attn_norm.weight"), wq=wq, wk=wk, wv=wv,
            wo=w.matrix(p + "attn_output.weight", hp.n_embd, q_width),
            ffn_norm=w.vector(p + "ffn_norm.weight"), gate=gate, up=up,
            down=w.matrix(p + "ffn_down.weight", hp.n_embd, hp.n_ff),
            sliding=bool(arch.windowed and hp.sliding_window and
                         (not arch.global_every or (i + 1) % arch.global_every != 0)))
        if arch.qk_norm:
            layer.q_norm, layer.k_norm = w.vector(p + "attn_q_norm.weight"), w.vector(p + "attn_k_norm.weight")
        if arch.qkv_bias:
            layer.q_bias, layer.k_bias, layer.v_bias = (w.vector(p + f"attn_{x}.bias") for x in "qkv")
        if arch.post_norms:
            layer.post_attn_norm = w.vector(p + "post_attention_norm.weight")
            layer.post_ffw_norm = w.vector(p + "post_ffw_norm.weight")
        return layer

    def new_cache(self, n_ctx: int, dtype: str = "f16", max_batch: int = 512) -> KVCache:
        return self.new_caches(1, n_ctx, dtype, max_batch)[0]

    def new_caches(self, n_seqs: int, n_ctx: int, dtype: str = "f16", max_batch: int = 512) -> list[KVCache]:
        """Caches for n_seqs sequences in one pool: forward_batch attends for all of them in one call."""
        return KVPool(self.hp, n_seqs, n_ctx, [layer.sliding for layer in self.layers], dtype, max_batch).caches

    def _workspace_for(self, n_batch):
        ws = self._workspace
        if ws is None or ws.n_batch < n_batch:
            ws = self._workspace = _Workspace(self.hp, n_batch)
        return ws

    def embed(self, tokens, out):
        for row, token in enumerate(tokens):
            self._embd_dequantize(self._embd_raw[token], out[row])
        if self.arch.embed_scale:
            out *= np.float32(math.sqrt(self.hp.n_embd))

    def forward(self, tokens, cache: KVCache, all_logits: bool = False, first_logit: int = 0) -> np.ndarray:
        """Run `tokens` at positions cache.n_tokens.. and append them to the cache.

        Returns float32 logits: (n_tokens - first_logit, n_vocab) with all_logits (the rows from token
        first_logit on: perplexity scores only a chunk's second half, and the output matrix is the largest
        product of a small model), else (n_vocab,) for the last token.
        """
        tokens = self._checked(tokens, cache)
        chunks = []
        for i in range(0, tokens.size, cache.max_batch):
            part = tokens[i:i + cache.max_batch]
            if all_logits and i + part.size <= first_logit:
                self._forward_rows([(part, cache)], all_logits=False, hidden=True)     # no logits wanted here
                continue
            chunks.append(self._forward_rows([(part, cache)], all_logits, first_logit=max(0, first_logit - i))[0])
        return np.concatenate(chunks) if all_logits and len(chunks) > 1 else chunks[-1]

    def forward_batch(self, batch) -> list[np.ndarray]:
        """Several sequences in one pass over the weights: `batch` is [(tokens, cache), ...], each cache a
        different sequence's; each sequence's tokens run at its own next positions and are appended to its
        cache. Returns each sequence's last-token logits (n_vocab,). The rows of all sequences share every
        matrix product, so n sequences decoding together read the weights once instead of n times. On formats
        whose matmul and matvec kernels add in the same order (Q4_0, Q4_1, Q5_x, Q8_0, IQ4) the logits equal
        one sequence at a time bit for bit; K-quant matvecs apply the small scales as integers and matmuls as
        floats, so there they differ in the last bits (as llama.cpp's batched results do)."""
        batch = [(self._checked(tokens, cache), cache) for tokens, cache in batch]
        if len({id(cache) for _, cache in batch}) != len(batch):
            raise ValueError("forward_batch needs one cache per sequence")
        if any(tokens.size > cache.max_batch for tokens, cache in batch):
            raise ValueError("forward_batch takes at most a cache's max_batch tokens per sequence")
        return self._forward_rows(batch, all_logits=False)

    def hidden_states(self, sequences) -> list[np.ndarray]:
        """Each token sequence's final-norm rows (n_i, n_embd), what llama.cpp pools into embeddings: the
        sequences run together in one pass, each in a fresh cache of its own."""
        sequences = [np.asarray(tokens, np.int64).reshape(-1) for tokens in sequences]
        longest = max(tokens.size for tokens in sequences)
        caches = self.new_caches(len(sequences), longest, "f32", max_batch=longest)
        batch = [(self._checked(tokens, cache), cache) for tokens, cache in zip(sequences, caches)]
        return self._forward_rows(batch, all_logits=False, hidden=True)

    def _checked(self, tokens, cache):
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if tokens.size == 0:
            raise ValueError("forward needs at least one token")
        if tokens.min() < 0 or tokens.max() >= self.hp.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.hp.n_vocab - 1}")
        if cache.n_tokens + tokens.size > cache.n_ctx:
            raise ValueError(f"{cache.n_tokens + tokens.size} tokens do not fit the context of {cache.n_ctx} tokens")
        return tokens

    def _forward_rows(self, batch, all_logits, hidden=False, first_logit=0):
        """The forward pass over the rows of one or more sequences ([(tokens, cache), ...], each at most
        its cache's max_batch tokens). Returns per sequence: its rows after the final norm with `hidden`,
        all its rows' logits with all_logits (one sequence: from row first_logit on), else its last row's."""
        hp = self.hp
        tokens = np.concatenate([t for t, _ in batch]) if len(batch) > 1 else batch[0][0]
        n_ctx = max(cache.n_ctx for _, cache in batch)
        n = tokens.size
        spans, row = [], 0
        for seq_tokens, cache in batch:
            start, count = cache.n_tokens, seq_tokens.size
            positions = np.arange(start, start + count, dtype=np.int64)
            ring_slots = positions % cache.ring
            cache.linear_pos[positions] = positions
            cache.ring_pos[ring_slots] = positions
            spans.append((slice(row, row + count), cache, positions, ring_slots))
            row += count
        positions = np.concatenate([s[2] for s in spans]) if len(spans) > 1 else spans[0][2]
        pools = {}
        for rows, cache, seq_positions, ring_slots in spans:
            if seq_positions.size == 1:
                pools.setdefault(id(cache.pool), []).append((rows.start, cache, seq_positions[0], ring_slots[0]))
        decode_groups = [_DecodeGroup(members, hp.n_head) for members in pools.values()]
        ws = self._workspace_for(n)
        ropes = self._rope_tables(positions, n_ctx)

        x, h = ws.x[:n], ws.h[:n]
        q, k, v, attn, o = ws.q[:n], ws.k[:n], ws.v[:n], ws.attn[:n], ws.o[:n]
        gate, up, act = ws.gate[:n], ws.up[:n], ws.act[:n]
        q3 = q.reshape(n, hp.n_head, hp.head_dim)
        k3 = k.reshape(n, hp.n_head_kv, hp.head_dim)
        v3 = v.reshape(n, hp.n_head_kv, hp.head_dim)
        attn3 = attn.reshape(n, hp.n_head, hp.head_dim)
        scale, softcap = self.query_scale, np.float32(hp.attn_softcap)
        activation = _ACTIVATIONS[self.arch.activation]
        self.embed(tokens, x)
        K.rms_norm(x, self.layers[0].attn_norm, hp.eps, h)
        for i, layer in enumerate(self.layers):
            _project(h, ws.prepared, (layer.wq, q), (layer.wk, k), (layer.wv, v))
            if layer.q_bias is not None:
                q += layer.q_bias
                k += layer.k_bias
                v += layer.v_bias
            if layer.q_norm is not None:
                qh = q.reshape(n * hp.n_head, hp.head_dim)
                kh = k.reshape(n * hp.n_head_kv, hp.head_dim)
                K.rms_norm(qh, layer.q_norm, hp.eps, qh)
                K.rms_norm(kh, layer.k_norm, hp.eps, kh)
            cos, sin = ropes[layer.sliding]
            K.apply_rope(q3, cos, sin, self.arch.rope_neox)
            K.apply_rope(k3, cos, sin, self.arch.rope_neox)
            for group in decode_groups:
                group.attend(i, layer.sliding, hp.sliding_window, q3, k3, v3, scale, softcap, attn3)
            for rows, cache, seq_positions, ring_slots in spans:
                if seq_positions.size > 1:
                    self._attend(i, layer.sliding, cache, seq_positions, ring_slots, q3[rows], k3[rows], v3[rows],
                                 scale, softcap, attn3[rows])
            _project(attn, ws.prepared, (layer.wo, o))
            if layer.post_attn_norm is not None:
                K.rms_norm(o, layer.post_attn_norm, hp.eps, o)
            K.add_rms_norm(x, o, layer.ffn_norm, hp.eps, h)
            _project(h, ws.prepared, (layer.gate, gate), (layer.up, up))
            activation(gate, up, act)
            _project(act, ws.prepared, (layer.down, o))
            if layer.post_ffw_norm is not None:
                K.rms_norm(o, layer.post_ffw_norm, hp.eps, o)
            next_norm = self.layers[i + 1].attn_norm if i + 1 < len(self.layers) else self.output_norm
            K.add_rms_norm(x, o, next_norm, hp.eps, h)
        for rows, cache, seq_positions, _ in spans:
            cache.n_tokens = int(seq_positions[-1]) + 1
        if hidden:
            return [h[rows].copy() for rows, *_ in spans]
        if all_logits and first_logit:
            return [self._capped(self.output.matmul(np.ascontiguousarray(h[first_logit:])))]
        if all_logits:
            logits = self._capped(self.output.matmul(h) if n > 1 else self.output.matvec(h[0])[None, :])
            return [logits[rows] for rows, *_ in spans]
        last = [rows.stop - 1 for rows, *_ in spans]
        if len(last) == 1:
            return [self._capped(self.output.matvec(h[last[0]]))]
        return list(self._capped(self.output.matmul(np.ascontiguousarray(h[last]))))

    def _capped(self, logits):
        """Gemma 2's final soft-cap, cap * tanh(logits / cap), in place; other models' logits as they are."""
        cap = self.hp.final_softcap
        if cap:
            np.multiply(np.tanh(np.divide(logits, cap, out=logits), out=logits), cap, out=logits)
        return logits

    def _attend(self, i, sliding, cache, positions, ring_slots, q3, k3, v3, scale, softcap, out):
        """Attention in layer i for several tokens of one sequence (a prompt): store their keys and values,
        then attend over the cache with BLAS products."""
        if sliding:
            slots, slot_pos, n_slots, window = ring_slots, cache.ring_pos, cache.ring, self.hp.sliding_window
        else:
            slots, slot_pos, n_slots, window = positions, cache.linear_pos, int(positions[-1]) + 1, 0
        K.store_kv(cache.k[i], cache.v[i], slots, k3, v3)
        _batch_attention(q3, cache.k[i][:, :n_slots], cache.v[i][:, :n_slots], positions,
                         slot_pos[:n_slots], scale, window, softcap, out)

    def override_rope(self, freq_base=0.0, freq_scale=0.0):
        """Replace the file's RoPE base frequency and position scale (0 keeps the file's), as llama.cpp's
        rope_freq_base/rope_freq_scale context parameters do; sliding layers keep their own base."""
        self.hp = replace(self.hp, rope_base=float(freq_base or self.hp.rope_base),
                          rope_freq_scale=float(freq_scale or self.hp.rope_freq_scale))

    def _rope_tables(self, positions, n_ctx):
        """cos/sin for global layers (False) and sliding-window layers (True). Files with long and short RoPE
        factors (Phi-3) take the long ones when the context is longer than the original one, as llama.cpp."""
        hp = self.hp
        factors = self.rope_freq_factors
        if self.rope_long_factors is not None:
            factors = self.rope_long_factors if n_ctx > hp.n_ctx_orig else self.rope_short_factors
        global_table = K.rope_angles(positions, hp.rope_dims, hp.rope_base, hp.rope_freq_scale, factors,
                                     hp.rope_attn_factor)
        if not self.arch.local_rope_base:
            return {False: global_table, True: global_table}
        return {False: global_table, True: K.rope_angles(positions, hp.rope_dims, self.arch.local_rope_base)}

    def close(self):
        self.gguf.close()


ATTENTION_CHUNK = 64     # queries per job of prompt-processing attention


def _batch_attention(q, k_cache, v_cache, positions, slot_pos, scale, window, softcap, out):
    """Attention for a batch of queries (prompt processing): two BLAS products per KV head and chunk of
    queries, the chunks spread over the kernel threads. A chunk multiplies only the slots its queries can
    see (causal: about half of the products of the whole square).

    q (n, n_head, head_dim); caches (n_head_kv, n_slots, head_dim), float32 or float16 bits; the
    same masking as cpu_kernels.attention_seqs: a query at p sees slots at p' <= p (and p - p' < window)."""
    n, n_head, head_dim = q.shape
    n_kv = k_cache.shape[0]
    group = n_head // n_kv
    keys = [_as_f32(k_cache[head]) for head in range(n_kv)]
    values = [_as_f32(v_cache[head]) for head in range(n_kv)]

    def job(work):
        head, a = work
        b = min(n, a + ATTENTION_CHUNK)
        seen = slot_pos <= positions[a:b].max()
        if window > 0:
            seen &= slot_pos > positions[a:b].min() - window
        slots = np.flatnonzero(seen)
        if slots.size and slots[-1] - slots[0] + 1 == slots.size:
            slots = slice(slots[0], slots[-1] + 1)
        queries = q[a:b, head * group:(head + 1) * group].reshape((b - a) * group, head_dim)
        scores = queries @ keys[head][slots].T
        K.masked_softmax(scores, positions[a:b], group, slot_pos[slots], np.float32(scale), window, softcap)
        out[a:b, head * group:(head + 1) * group] = (scores @ values[head][slots]).reshape(b - a, group, head_dim)

    K.map_threads(job, [(head, a) for head in range(n_kv) for a in range(0, n, ATTENTION_CHUNK)])


def _as_f32(cache_rows):
    return cache_rows.view(np.float16).astype(np.float32) if cache_rows.dtype == np.uint16 else cache_rows


def _project(x, scratch, *targets):
    """out = W @ x for each (W, out): matvec kernels for one row, else matmul. The input is laid out once
    per activation layout and shared (q, k and v; gate and up); `scratch` keeps those layouts between calls,
    refilled in place while the row count stays the same (every generation step, a server's steady decode)."""
    one = x.shape[0] == 1
    fresh = set()
    for weight, out in targets:
        key = weight.activation_layout
        if key not in fresh:
            scratch[key] = weight.prepare(x[0] if one else x, scratch.get(key))
            fresh.add(key)
        if one:
            weight.matvec(x[0], out[0], scratch[key])
        else:
            weight.matmul(x, out, scratch[key])
