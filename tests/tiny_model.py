"""Tiny random llama-architecture GGUF files, and a float64 numpy forward pass to check them against."""
import numpy as np
from gguf import GGMLQuantizationType as T

from gguf_io import GGUFWriter, open_gguf, quantize

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = 64, 4, 2, 128, 2
HEAD_DIM = N_EMBD // N_HEAD


def build_tiny_llama(path, tokenizer_source, *, arch="llama", qtype="Q8_0", rope_scale=None, drop=(),
                     tied=True, seed=0, window=0, n_layer=N_LAYER, rope_freqs=None):
    """A small model with random weights and the tokenizer of `tokenizer_source` (a GGUFFile).

    arch "gemma3" adds its per-head q/k norms, post-norms and, with `window`, sliding-window layers."""
    rng = np.random.default_rng(seed)
    n_vocab = len(tokenizer_source.metadata["tokenizer.ggml.tokens"])
    tensors = {"token_embd.weight": (rng.standard_normal((n_vocab, N_EMBD)) * 0.5, "F32"),
               "output_norm.weight": (1 + 0.1 * rng.standard_normal(N_EMBD), "F32")}
    if rope_freqs is not None:   # llama3-style rope scaling: a divisor per frequency
        tensors["rope_freqs.weight"] = (np.asarray(rope_freqs, np.float32), "F32")
    if not tied:
        tensors["output.weight"] = (rng.standard_normal((n_vocab, N_EMBD)) * 0.2, qtype)
    shapes = {"attn_q": (N_EMBD, N_EMBD), "attn_k": (N_HEAD_KV * HEAD_DIM, N_EMBD),
              "attn_v": (N_HEAD_KV * HEAD_DIM, N_EMBD), "attn_output": (N_EMBD, N_EMBD),
              "ffn_gate": (N_FF, N_EMBD), "ffn_up": (N_FF, N_EMBD), "ffn_down": (N_EMBD, N_FF)}
    gemma = arch == "gemma3"
    for layer in range(n_layer):
        for name in ("attn_norm", "ffn_norm") + (("post_attention_norm", "post_ffw_norm") if gemma else ()):
            tensors[f"blk.{layer}.{name}.weight"] = (1 + 0.1 * rng.standard_normal(N_EMBD), "F32")
        for name, shape in shapes.items():
            tensors[f"blk.{layer}.{name}.weight"] = (rng.standard_normal(shape) / np.sqrt(shape[1]), qtype)
        if gemma:
            for name in ("attn_q_norm", "attn_k_norm"):
                tensors[f"blk.{layer}.{name}.weight"] = (1 + 0.1 * rng.standard_normal(HEAD_DIM), "F32")
    with GGUFWriter(path) as writer:
        writer.add_metadata("general.architecture", arch)
        for key, value in {"context_length": 2048, "embedding_length": N_EMBD, "block_count": n_layer,
                           "feed_forward_length": N_FF, "attention.head_count": N_HEAD,
                           "attention.head_count_kv": N_HEAD_KV,
                           "rope.freq_base": 1_000_000.0 if gemma else 10000.0,
                           "attention.layer_norm_rms_epsilon": 1e-5}.items():
            writer.add_metadata(f"{arch}.{key}", value if isinstance(value, float) else int(value))
        if window:
            writer.add_metadata(f"{arch}.attention.sliding_window", int(window))
        if rope_scale:
            writer.add_metadata(f"{arch}.rope.scaling.type", "linear")
            writer.add_metadata(f"{arch}.rope.scaling.factor", float(rope_scale))
        writer.add_all_metadata(tokenizer_source.metadata, tokenizer_source.metadata_types,
                                skip=[k for k in tokenizer_source.metadata if not k.startswith("tokenizer.")])
        kept = {name: value for name, value in tensors.items() if name not in drop}
        encoded = {name: quantize(np.asarray(data, np.float32), T[qt]) for name, (data, qt) in kept.items()}
        for name, (data, qt) in kept.items():
            writer.add_tensor(name, np.shape(data), T[qt])
        for name in kept:
            writer.write_tensor(name, encoded[name])
    return path


def reference_logits(path, tokens, rope_scale=1.0):
    """Every position's logits, in float64 from the file's dequantized weights (no KV cache, no kernels).

    Follows llama.cpp's graphs: llama, and gemma3 (embeddings scaled by sqrt(n_embd), q/k norms, NeoX RoPE
    with base 10000 on sliding layers, post-norms, GELU gate, every sixth layer global)."""
    with open_gguf(path) as gguf:
        w = {name: t.dequantize().astype(np.float64) for name, t in gguf.tensors.items()}
        arch = gguf.metadata["general.architecture"]
        eps = gguf.metadata[f"{arch}.attention.layer_norm_rms_epsilon"]
        window = gguf.metadata.get(f"{arch}.attention.sliding_window", 0)
        n_layer = gguf.metadata[f"{arch}.block_count"]
        freq_base = gguf.metadata[f"{arch}.rope.freq_base"]
        factors = gguf.tensors["rope_freqs.weight"].dequantize() if "rope_freqs.weight" in gguf.tensors else 1.0
    gemma = arch == "gemma3"
    n = len(tokens)
    x = w["token_embd.weight"][tokens] * (np.sqrt(N_EMBD) if gemma else 1.0)
    positions = np.arange(n)

    def norm(v, weight):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * weight

    def rope(v, base):   # (n, heads, head_dim)
        angles = positions[:, None] * base ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)[None, :] / rope_scale / factors
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        out = np.empty_like(v)
        if gemma:   # NeoX pairs (i, i + d/2)
            a, b = v[..., : HEAD_DIM // 2], v[..., HEAD_DIM // 2:]
            out[..., : HEAD_DIM // 2], out[..., HEAD_DIM // 2:] = a * cos - b * sin, a * sin + b * cos
        else:       # pairs (2i, 2i + 1)
            a, b = v[..., 0::2], v[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    for layer in range(n_layer):
        p = f"blk.{layer}."
        sliding = gemma and window and (layer + 1) % 6 != 0
        base = 10000.0 if sliding else freq_base
        h = norm(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        if gemma:
            q, k = norm(q, w[p + "attn_q_norm.weight"]), norm(k, w[p + "attn_k_norm.weight"])
        q, k = rope(q, base), rope(k, base)
        mask = np.triu(np.ones((n, n), bool), 1)
        if sliding:
            mask |= positions[:, None] - positions[None, :] >= window
        group = N_HEAD // N_HEAD_KV
        attn = np.empty((n, N_HEAD, HEAD_DIM))
        for head in range(N_HEAD):
            scores = q[:, head] @ k[:, head // group].T / np.sqrt(HEAD_DIM)
            scores[mask] = -np.inf
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            attn[:, head] = probs @ v[:, head // group]
        out = attn.reshape(n, N_EMBD) @ w[p + "attn_output.weight"].T
        x = x + (norm(out, w[p + "post_attention_norm.weight"]) if gemma else out)
        h = norm(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        if gemma:
            act = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        out = (act * up) @ w[p + "ffn_down.weight"].T
        x = x + (norm(out, w[p + "post_ffw_norm.weight"]) if gemma else out)
    output = w.get("output.weight", w["token_embd.weight"])
    return norm(x, w["output_norm.weight"]) @ output.T
