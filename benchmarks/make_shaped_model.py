"""A GGUF file with the dimensions of a popular model and random weights, for speed and memory tests.

    python benchmarks/make_shaped_model.py llama-3.2-1b Q4_K_M /tmp/llama-1b-q4_k_m.gguf
    python benchmarks/make_shaped_model.py --list

Every tensor gets the type llama-quantize's mix gives it (nibble quantize's plan, the same rules), and
its blocks are written directly: random codes with small random scales, so an 8B file takes about a
minute and never holds more than one slice of rows in memory. The vocabulary is SmolLM2's (the packaged
model's BPE tokenizer), padded with unused tokens to the shape's vocabulary size, so the embedding and
output matrices have the real model's size. The logits mean nothing: the file is for speed and memory.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFValueType as V

from gguf_io import GGUFWriter, open_gguf
from runtime import resolve_model
from runtime.quantize import GGML_QNT_VERSION, NEEDS_IMATRIX, Q2_K_NEEDS_IMATRIX, mix_by_name, plan_types


@dataclass(frozen=True)
class Shape:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    tied: bool
    rope_base: float
    n_ctx: int = 131072
    qkv_bias: bool = False


SHAPES = {
    "llama-3.2-1b": Shape("llama", 2048, 16, 32, 8, 64, 8192, 128256, True, 500000.0),
    "llama-3.2-3b": Shape("llama", 3072, 28, 24, 8, 128, 8192, 128256, True, 500000.0),
    "llama-3.1-8b": Shape("llama", 4096, 32, 32, 8, 128, 14336, 128256, False, 500000.0),
    "qwen2.5-1.5b": Shape("qwen2", 1536, 28, 12, 2, 128, 8960, 151936, True, 1000000.0, 32768, qkv_bias=True),
}

# Where each block keeps its half-float scale (and min), and the largest |code * small scale| it can
# reach: the scale is chosen so that weights stay near +-0.05 whatever the random codes are.
HALF_FIELDS = {
    T.Q4_0: ((0,), 8), T.Q4_1: ((0, 2), 15), T.Q5_0: ((0,), 16), T.Q5_1: ((0, 2), 31), T.Q8_0: ((0,), 127),
    T.IQ4_NL: ((0,), 127), T.Q2_K: ((80, 82), 45), T.Q3_K: ((108,), 128), T.Q4_K: ((0, 2), 945),
    T.Q5_K: ((0, 2), 1953), T.Q6_K: ((208,), 4096), T.IQ4_XS: ((0,), 4064),
    T.IQ2_XXS: ((0,), 167), T.IQ2_XS: ((0,), 167), T.IQ2_S: ((0,), 167), T.IQ3_XXS: ((0,), 480),
    T.IQ3_S: ((0,), 465), T.IQ1_S: ((0,), 17), T.TQ1_0: ((52,), 1), T.TQ2_0: ((64,), 1),
}
WEIGHT_SCALE = 0.05
SLICE_BYTES = 64 << 20


def tensor_shapes(s: Shape):
    """name -> (rows, cols) in llama.cpp's order (1-D tensors have rows == 0)."""
    shapes = {"token_embd.weight": (s.n_vocab, s.n_embd)}
    if s.arch == "llama":
        shapes["rope_freqs.weight"] = (0, s.head_dim // 2)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
        shapes[p + "attn_norm.weight"] = (0, s.n_embd)
        shapes[p + "attn_q.weight"], shapes[p + "attn_k.weight"], shapes[p + "attn_v.weight"] = \
            (q, s.n_embd), (kv, s.n_embd), (kv, s.n_embd)
        if s.qkv_bias:
            shapes[p + "attn_q.bias"], shapes[p + "attn_k.bias"], shapes[p + "attn_v.bias"] = (0, q), (0, kv), (0, kv)
        shapes[p + "attn_output.weight"] = (s.n_embd, q)
        shapes[p + "ffn_norm.weight"] = (0, s.n_embd)
        shapes[p + "ffn_gate.weight"], shapes[p + "ffn_up.weight"] = (s.n_ff, s.n_embd), (s.n_ff, s.n_embd)
        shapes[p + "ffn_down.weight"] = (s.n_embd, s.n_ff)
    shapes["output_norm.weight"] = (0, s.n_embd)
    if not s.tied:
        shapes["output.weight"] = (s.n_vocab, s.n_embd)
    return shapes


def gguf_shape(rows, cols):
    return (cols,) if rows == 0 else (rows, cols)


def metadata(s: Shape, mix, name):
    a = s.arch
    md = [("general.architecture", a, V.STRING), ("general.name", name, V.STRING),
          (f"{a}.context_length", s.n_ctx, V.UINT32), (f"{a}.embedding_length", s.n_embd, V.UINT32),
          (f"{a}.block_count", s.n_layer, V.UINT32), (f"{a}.feed_forward_length", s.n_ff, V.UINT32),
          (f"{a}.attention.head_count", s.n_head, V.UINT32), (f"{a}.attention.head_count_kv", s.n_head_kv, V.UINT32),
          (f"{a}.attention.layer_norm_rms_epsilon", 1e-5 if a == "llama" else 1e-6, V.FLOAT32),
          (f"{a}.rope.freq_base", s.rope_base, V.FLOAT32), (f"{a}.rope.dimension_count", s.head_dim, V.UINT32),
          (f"{a}.vocab_size", s.n_vocab, V.UINT32),
          ("general.file_type", int(mix.file_type), V.UINT32),
          ("general.quantization_version", GGML_QNT_VERSION, V.UINT32)]
    if s.head_dim != s.n_embd // s.n_head:
        md += [(f"{a}.attention.key_length", s.head_dim, V.UINT32), (f"{a}.attention.value_length", s.head_dim, V.UINT32)]
    return md


def padded_vocabulary(n_vocab):
    """SmolLM2's tokenizer metadata with unused tokens appended up to n_vocab."""
    with open_gguf(resolve_model("smollm2-135m-instruct")) as gf:
        items = {k: (v, gf.metadata_types[k]) for k, v in gf.metadata.items() if k.startswith("tokenizer.")}
    tokens = list(items["tokenizer.ggml.tokens"][0])
    types = np.asarray(items["tokenizer.ggml.token_type"][0], np.int32)
    extra = n_vocab - len(tokens)
    tokens += [f"<|unused_{i}|>" for i in range(extra)]
    items["tokenizer.ggml.tokens"] = (tokens, items["tokenizer.ggml.tokens"][1])
    items["tokenizer.ggml.token_type"] = (np.concatenate([types, np.full(extra, 5, np.int32)]),
                                          items["tokenizer.ggml.token_type"][1])
    if "tokenizer.ggml.scores" in items:
        scores = np.asarray(items["tokenizer.ggml.scores"][0], np.float32)
        items["tokenizer.ggml.scores"] = (np.concatenate([scores, np.zeros(extra, np.float32)]),
                                          items["tokenizer.ggml.scores"][1])
    return items


def random_rows(rng, qtype, rows, cols):
    """rows x cols random weights of a block type, as GGUF bytes (rows, row bytes)."""
    if qtype == T.F32:
        return np.ones((max(rows, 1), cols), np.float32).view(np.uint8)
    if qtype == T.F16:
        return (rng.standard_normal((rows, cols), np.float32) * WEIGHT_SCALE).astype(np.float16).view(np.uint8)
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows, cols // block_size, block_bytes), np.uint8)
    fields, reach = HALF_FIELDS[qtype]
    for at in fields:
        scale = rng.uniform(0.5, 1.0, blocks.shape[:2]).astype(np.float32) * np.float32(WEIGHT_SCALE / reach)
        blocks[:, :, at:at + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, -1, 2)
    return blocks.reshape(rows, -1)


def needs_imatrix(mix):
    return mix.default in NEEDS_IMATRIX or mix.name in Q2_K_NEEDS_IMATRIX


def write_shaped_model(shape_name, mix_name, out, seed=0, progress=None):
    shape, mix = SHAPES[shape_name], mix_by_name(mix_name)
    shapes = tensor_shapes(shape)
    plain = {name: SimpleNamespace(name=name, shape=gguf_shape(*rc),
                                   type=T.F32 if rc[0] == 0 else T.F16) for name, rc in shapes.items()}
    md = {f"{shape.arch}.block_count": shape.n_layer, f"{shape.arch}.attention.head_count": shape.n_head,
          f"{shape.arch}.attention.head_count_kv": shape.n_head_kv, "general.architecture": shape.arch}
    # the mixes llama-quantize writes only with an importance matrix get the types it gives them with one
    plan = plan_types(SimpleNamespace(metadata=md, tensors=plain), mix, imatrix=needs_imatrix(mix))
    rng = np.random.default_rng(seed)
    with GGUFWriter(out) as w:
        for key, value, vtype in metadata(shape, mix, f"{shape_name} (random weights, {mix.name})"):
            w.add_metadata(key, value, vtype)
        for key, (value, vtype) in padded_vocabulary(shape.n_vocab).items():
            w.add_metadata(key, value, vtype)
        for name, (rows, cols) in shapes.items():
            w.add_tensor(name, gguf_shape(rows, cols), plan.types[name])
        for name, (rows, cols) in shapes.items():
            qtype = plan.types[name]
            block_size, block_bytes = GGML_QUANT_SIZES[qtype]
            step = max(1, SLICE_BYTES // (cols // block_size * block_bytes))
            w.write_tensor_parts(name, (random_rows(rng, qtype, min(step, rows - first) if rows else 0, cols)
                                        for first in range(0, max(rows, 1), step)))
            if progress:
                progress(name)
    return plan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", nargs="?", help="one of: " + ", ".join(SHAPES))
    parser.add_argument("type", nargs="?", help="a llama-quantize mix: Q4_K_M, Q8_0, Q4_0, IQ4_XS, ...")
    parser.add_argument("out", nargs="?", help="the GGUF file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the shapes")
    args = parser.parse_args()
    if args.list:
        for name, s in SHAPES.items():
            print(f"{name:14} {s.arch:6} embd {s.n_embd} layers {s.n_layer} heads {s.n_head}/{s.n_head_kv} "
                  f"ff {s.n_ff} vocab {s.n_vocab}{' tied' if s.tied else ''}")
        return
    if not (args.shape and args.type and args.out):
        parser.error("give SHAPE TYPE OUT.gguf (or --list)")
    if args.shape not in SHAPES:
        parser.error(f"unknown shape {args.shape!r}; choose one of {', '.join(SHAPES)}")
    try:
        mix_by_name(args.type)
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    write_shaped_model(args.shape, args.type, args.out, args.seed)
    print(f"{args.out}: {os.path.getsize(args.out) / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
