"""Quantize a GGUF file to one of llama.cpp's mixes (`nibble quantize`).

A mix (Q4_K_M, Q3_K_S, ...) is a default block type plus llama.cpp's per-tensor rules that
give more bits to the tensors quantization hurts most (attn_v, ffn_down in the first and
last layers, the output matrix). The rules follow llama_tensor_get_type in llama.cpp's
src/llama-quant.cpp, and the resulting tensor types are checked against llama-quantize's on
both real models (tests/test_quantize.py). The block quantizers in gguf_io are bit-identical
to ggml's, so without an importance matrix the files equal llama-quantize's byte for byte.
"""
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFValueType as V, LlamaFileType as FT

from gguf_io import GGUFWriter, block_format, dequantize, open_gguf, quantize
from gguf_io.formats import can_write, can_write_weighted

GGML_QNT_VERSION = 2
ROWS_PER_PART_ELEMENTS = 1 << 22      # quantize ~4M weights at a time: bounded memory, whole rows


@dataclass(frozen=True)
class Mix:
    name: str
    file_type: FT
    default: T


MIXES = {mix.name: mix for mix in (
    Mix("F32", FT.ALL_F32, T.F32),
    Mix("F16", FT.MOSTLY_F16, T.F16),
    Mix("BF16", FT.MOSTLY_BF16, T.BF16),
    Mix("Q8_0", FT.MOSTLY_Q8_0, T.Q8_0),
    Mix("Q4_0", FT.MOSTLY_Q4_0, T.Q4_0),
    Mix("Q4_1", FT.MOSTLY_Q4_1, T.Q4_1),
    Mix("Q5_0", FT.MOSTLY_Q5_0, T.Q5_0),
    Mix("Q5_1", FT.MOSTLY_Q5_1, T.Q5_1),
    Mix("Q2_K", FT.MOSTLY_Q2_K, T.Q2_K),
    Mix("Q3_K_S", FT.MOSTLY_Q3_K_S, T.Q3_K),
    Mix("Q3_K_M", FT.MOSTLY_Q3_K_M, T.Q3_K),
    Mix("Q3_K_L", FT.MOSTLY_Q3_K_L, T.Q3_K),
    Mix("Q4_K_S", FT.MOSTLY_Q4_K_S, T.Q4_K),
    Mix("Q4_K_M", FT.MOSTLY_Q4_K_M, T.Q4_K),
    Mix("Q5_K_S", FT.MOSTLY_Q5_K_S, T.Q5_K),
    Mix("Q5_K_M", FT.MOSTLY_Q5_K_M, T.Q5_K),
    Mix("Q6_K", FT.MOSTLY_Q6_K, T.Q6_K),
    Mix("IQ4_NL", FT.MOSTLY_IQ4_NL, T.IQ4_NL),
    Mix("IQ4_XS", FT.MOSTLY_IQ4_XS, T.IQ4_XS),
    Mix("TQ1_0", FT.MOSTLY_TQ1_0, T.TQ1_0),
    Mix("TQ2_0", FT.MOSTLY_TQ2_0, T.TQ2_0),
    Mix("MXFP4_MOE", FT.MOSTLY_MXFP4_MOE, T.MXFP4),
    Mix("Q2_K_S", FT.MOSTLY_Q2_K_S, T.Q2_K),
    Mix("IQ3_XS", FT.MOSTLY_IQ3_XS, T.IQ3_S),
    Mix("IQ3_S", FT.MOSTLY_IQ3_S, T.IQ3_S),
    Mix("IQ3_M", FT.MOSTLY_IQ3_M, T.IQ3_S),
    Mix("IQ3_XXS", FT.MOSTLY_IQ3_XXS, T.IQ3_XXS),
    Mix("IQ2_M", FT.MOSTLY_IQ2_M, T.IQ2_S),
    Mix("IQ2_S", FT.MOSTLY_IQ2_S, T.IQ2_XS),
    Mix("IQ2_XS", FT.MOSTLY_IQ2_XS, T.IQ2_XS),
    Mix("IQ2_XXS", FT.MOSTLY_IQ2_XXS, T.IQ2_XXS),
    Mix("IQ1_M", FT.MOSTLY_IQ1_M, T.IQ1_M),
    Mix("IQ1_S", FT.MOSTLY_IQ1_S, T.IQ1_S),
)}

FLOAT_TYPES = (T.F32, T.F16, T.BF16)


def mix_by_name(name) -> Mix:
    try:
        return MIXES[name.upper()]
    except KeyError:
        raise ValueError(f"unknown quantization type {name!r}; choose one of {', '.join(MIXES)}") from None


def tensor_type_by_name(name) -> T:
    """A block type given by name (for --output-tensor-type and --token-embedding-type)."""
    return block_format(name).type


# --- which tensors are quantized, and to what (llama-quant.cpp) -----------------------------

# Substrings of 2-D weights that llama.cpp never quantizes (small, or lookup tables).
NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "position_embd.weight", "token_types.weight",
                   "ssm_conv1d", "attn_rel_b.weight", "altup", "laurel", "per_layer_model_proj")


def allows_quantization(name, shape):
    return len(shape) >= 2 and name.endswith("weight") and not any(s in name for s in NEVER_QUANTIZED)


def category(name):
    """llama.cpp's broad tensor categories, by the same substring tests in the same order."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                     ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                     ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def use_more_bits(i, n):
    """The first and last eighth of the layers, and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class Where:
    """What a rule sees: the tensor's index among its category's tensors, the layer count, n_head / n_head_kv,
    and whether an importance matrix was given."""
    i: int
    n: int
    gqa: int
    imatrix: bool = False


# Per mix, the rule for a category: Where -> type or None (keep the mix's default). llama.cpp's extra rules
# for Falcon and for MoE models are left out: nibble runs neither.
IQ2_GROUP = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M")   # llama.cpp's very-low-bit mixes
IQ2_S_OR_M = ("IQ2_S", "IQ2_M")


def _iq2_group(rule):
    return {mix: (lambda w, mix=mix: rule(w, mix)) for mix in IQ2_GROUP}


ATTN_V_RULES = {
    "Q2_K": lambda w: T.Q4_K if w.gqa >= 4 else T.Q3_K,
    "Q2_K_S": lambda w: T.Q4_K if w.gqa >= 4 else None,
    "IQ3_XXS": lambda w: T.Q4_K if w.gqa >= 4 else T.IQ3_XXS if w.imatrix else T.IQ3_S,
    "IQ3_XS": lambda w: T.Q4_K if w.gqa >= 4 else None,
    "IQ3_S": lambda w: T.Q4_K if w.gqa >= 4 else None,
    "IQ3_M": lambda w: T.Q4_K,
    "Q3_K_M": lambda w: T.Q5_K if w.i < 2 else T.Q4_K,
    "Q3_K_L": lambda w: T.Q5_K,
    "IQ4_NL": lambda w: T.Q5_K if w.gqa >= 4 else None,
    "IQ4_XS": lambda w: T.Q5_K if w.gqa >= 4 else None,
    "Q4_K_M": lambda w: T.Q6_K if use_more_bits(w.i, w.n) else None,
    "Q5_K_M": lambda w: T.Q6_K if use_more_bits(w.i, w.n) else None,
    "Q4_K_S": lambda w: T.Q5_K if w.i < 4 else None,
    **_iq2_group(lambda w, mix: T.Q4_K if w.gqa >= 4 else T.IQ3_S if mix in IQ2_S_OR_M else T.Q2_K),
}
ATTN_K_RULES = {"IQ3_XS": lambda w: T.IQ3_XXS, "IQ3_XXS": lambda w: T.IQ2_S}
ATTN_Q_RULES = ATTN_K_RULES
FFN_DOWN_RULES = {
    "Q2_K": lambda w: T.Q3_K,
    "Q2_K_S": lambda w: T.Q4_K if w.i < w.n // 8 else None,
    "IQ3_XXS": lambda w: None if w.imatrix else T.Q4_K if w.i < w.n // 8 else T.Q3_K,
    "Q3_K_M": lambda w: T.Q5_K if w.i < w.n // 16 else T.Q4_K,
    "IQ3_M": lambda w: T.Q4_K if w.i < w.n // 8 else None,
    "Q3_K_L": lambda w: T.Q5_K,
    "Q4_K_M": lambda w: T.Q6_K if use_more_bits(w.i, w.n) else None,
    "IQ4_NL": lambda w: T.Q5_K if w.i < w.n // 8 and not w.imatrix else None,
    "IQ4_XS": lambda w: T.Q5_K if w.i < w.n // 8 and not w.imatrix else None,
    "Q5_K_M": lambda w: T.Q6_K if use_more_bits(w.i, w.n) else None,
    "Q4_K_S": lambda w: T.Q5_K if w.i < w.n // 8 else None,
    # with a matrix, the first ffn_down layers of Q4_0/Q5_0 get a min (they "go crazy" otherwise)
    "Q4_0": lambda w: T.Q4_1 if w.imatrix and w.i < w.n // 8 else None,
    "Q5_0": lambda w: T.Q5_1 if w.imatrix and w.i < w.n // 8 else None,
    **_iq2_group(lambda w, mix: (T.IQ3_S if mix in IQ2_S_OR_M else T.Q2_K) if w.i < w.n // 8 else None),
}
ATTN_OUTPUT_RULES = {
    "Q2_K": lambda w: T.Q3_K,
    "IQ3_XXS": lambda w: T.IQ3_S,
    "Q3_K_M": lambda w: T.Q4_K,
    "Q3_K_L": lambda w: T.Q5_K,
    "IQ3_M": lambda w: T.Q4_K,
    **_iq2_group(lambda w, mix: T.IQ2_XXS if mix in ("IQ1_S", "IQ1_M") else T.IQ3_S if mix in IQ2_S_OR_M else None),
}
MIDDLE_LAYERS_IQ3_XXS = {"IQ3_XS": lambda w: T.IQ3_XXS if w.n // 8 <= w.i < 7 * w.n // 8 else None}
TOKEN_EMBD_RULES = {      # an embedding matrix of its own (not shared with the output)
    "TQ1_0": lambda w: T.Q4_K,
    "TQ2_0": lambda w: T.Q4_K,
    "IQ3_XXS": lambda w: T.IQ3_S,
    **_iq2_group(lambda w, mix: T.IQ3_S if mix in IQ2_S_OR_M else T.Q2_K),
}
RULES = {"attn_v": ATTN_V_RULES, "attn_k": ATTN_K_RULES, "attn_q": ATTN_Q_RULES, "ffn_down": FFN_DOWN_RULES,
         "attn_output": ATTN_OUTPUT_RULES, "ffn_gate": MIDDLE_LAYERS_IQ3_XXS, "ffn_up": MIDDLE_LAYERS_IQ3_XXS,
         "token_embd": TOKEN_EMBD_RULES}
COUNTED = ("attn_v", "ffn_down", "ffn_gate", "ffn_up")     # categories whose rules see the tensor's index
# The output matrix (or the embedding it shares) gets Q6_K; these mixes give it Q5_K.
OUTPUT_Q5_K = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
# MXFP4_MOE: MXFP4 for the experts (3-D tensors), Q8_0 everywhere else, the output matrix included.
EXPERTS_ONLY = {"MXFP4_MOE": T.Q8_0}
# Types llama-quantize refuses to write without an importance matrix ("the result will be garbage"), and the
# mixes whose Q2_K tensors it counts among them.
NEEDS_IMATRIX = (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS)
Q2_K_NEEDS_IMATRIX = ("Q2_K_S",)

# A block type whose size does not divide a row falls back to one with 32-element blocks.
FALLBACK = {T.IQ4_XS: T.IQ4_NL, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
            T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
            **{qtype: T.IQ4_NL for qtype in (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S)}}


@dataclass
class Plan:
    """The type each tensor gets, decided for the whole file before anything is written."""
    types: dict = field(default_factory=dict)       # name -> T
    fallbacks: list = field(default_factory=list)   # (name, wanted, given)


def plan_types(gguf_file, mix, *, pure=False, output_tensor_type=None, token_embedding_type=None,
               imatrix=False) -> Plan:
    """Choose every tensor's type as llama-quantize does for `mix` (`imatrix`: with an importance matrix)."""
    mix = mix if isinstance(mix, Mix) else mix_by_name(mix)
    md = gguf_file.metadata
    arch = md.get("general.architecture", "")
    n_layer = int(md.get(f"{arch}.block_count", 0))
    n_head = int(np.max(md.get(f"{arch}.attention.head_count", 1)))
    n_head_kv = int(np.max(md.get(f"{arch}.attention.head_count_kv", n_head))) or n_head
    gqa = n_head // n_head_kv
    names = list(gguf_file.tensors)
    tied = "output.weight" not in names
    counters = dict.fromkeys(COUNTED, 0)
    plan = Plan()
    # llama.cpp walks the tensors by layer, then by name; the per-category counters depend on it.
    for name in sorted(names, key=_layer_then_name):
        tensor = gguf_file.tensors[name]
        plan.types[name] = _choose(tensor, mix, pure, output_tensor_type, token_embedding_type,
                                   tied, counters, n_layer, gqa, imatrix, plan)
    plan.types = {name: plan.types[name] for name in names}
    return plan


def check_writable(plan, mix, imatrix=None):
    """ValueError (one line) if the plan needs a type nibble cannot write yet (with the importance matrix
    `imatrix`, an ImportanceMatrix, where it has an entry), or a matrix it lacks."""
    entries = imatrix.entries if imatrix is not None else {}
    needs = [name for name, qtype in plan.types.items() if category(name) not in ("output", "token_embd")
             and (qtype in NEEDS_IMATRIX or (qtype == T.Q2_K and mix.name in Q2_K_NEEDS_IMATRIX))
             and name not in entries]
    if needs and not entries:
        raise ValueError(f"the {mix.name} mix needs an importance matrix (without one llama.cpp's very-low-bit "
                         f"types give garbage); make one with nibble imatrix -m MODEL -f TEXT -o FILE and pass "
                         f"--imatrix FILE")
    if needs:
        raise ValueError(f"the importance matrix has no entry for {needs[0]} ({plan.types[needs[0]].name} needs one); "
                         f"was it made from this model, and kept by --include-weights/--exclude-weights?")
    missing = sorted({qtype.name for name, qtype in plan.types.items() if qtype not in FLOAT_TYPES
                      and not (can_write_weighted(qtype) if name in entries else can_write(qtype))})
    if missing:
        how = "with an importance matrix" if entries else "without an importance matrix"
        raise ValueError(f"the {mix.name} mix needs {', '.join(missing)} {how}, which nibble cannot write yet; "
                         f"quantize with llama-quantize, or pick another type (nibble quantize --help)")


def filter_imatrix(imatrix, include=(), exclude=()):
    """llama-quantize's --include-weights / --exclude-weights: keep the entries whose names contain one of
    `include`, or drop those that contain one of `exclude` (substrings)."""
    if include and exclude:
        raise ValueError("--include-weights and --exclude-weights cannot be used together")
    entries = imatrix.entries
    if exclude:
        entries = {n: e for n, e in entries.items() if not any(p in n for p in exclude)}
    if include:
        entries = {n: e for n, e in entries.items() if any(p in n for p in include)}
    return type(imatrix)(entries, imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size, imatrix.legacy)


def requantized_tensors(gguf_file, plan):
    """Names of the tensors that are quantized already and would be converted: they lose quality twice."""
    return [name for name, qtype in plan.types.items()
            if gguf_file.tensors[name].type not in FLOAT_TYPES and gguf_file.tensors[name].type != qtype]


def _layer_then_name(name):
    parts = name.split(".")
    layer = int(parts[1]) if parts[0] == "blk" and len(parts) > 1 and parts[1].isdigit() else -1
    return layer, name


def _choose(tensor, mix, pure, output_tensor_type, token_embedding_type, tied, counters, n_layer, gqa, imatrix, plan):
    name, shape = tensor.name, tensor.shape
    if not allows_quantization(name, shape):
        return tensor.type
    cat = category(name)
    if token_embedding_type is not None and cat == "token_embd":
        return token_embedding_type
    if output_tensor_type is not None and cat == "output":
        return output_tensor_type
    new_type = mix.default
    if mix.default in FLOAT_TYPES:
        return new_type
    n_cols = shape[-1]
    if not pure:
        if mix.name in EXPERTS_ONLY:
            new_type = mix.default if len(shape) == 3 and cat != "output" else EXPERTS_ONLY[mix.name]
        elif cat == "output" or (tied and cat == "token_embd"):
            # The output matrix (or the embedding it shares) gets Q6_K, or Q8_0 where 256 does not divide its rows.
            if n_cols % GGML_QUANT_SIZES[new_type][0]:
                new_type = T.Q8_0
            elif mix.name in OUTPUT_Q5_K:
                new_type = T.Q5_K
            elif new_type != T.Q8_0:
                new_type = T.Q6_K
        elif cat in RULES:
            rule = RULES[cat].get(mix.name)
            chosen = rule(Where(counters.get(cat, 0), n_layer, gqa, imatrix)) if rule else None
            new_type = chosen or new_type
            if cat == "attn_v" and n_layer == 80 and gqa > 1 and new_type in (T.Q3_K, T.Q4_K) \
                    and mix.name not in IQ2_GROUP:
                new_type = T.Q5_K      # llama.cpp's 70B rule: attn_v is 8x smaller there, so more bits are cheap
            if cat in counters:
                counters[cat] += 1
    if n_cols % GGML_QUANT_SIZES[new_type][0]:
        wanted, new_type = new_type, FALLBACK.get(new_type, T.F16)
        if n_cols % GGML_QUANT_SIZES[new_type][0]:
            new_type = T.F16
        plan.fallbacks.append((name, wanted, new_type))
    return new_type


# --- writing the file --------------------------------------------------------------------------

@dataclass
class QuantizeReport:
    seconds: float
    source_bytes: int
    output_bytes: int
    n_elements: int
    requantized: list      # names of tensors that were already quantized and were requantized
    plan: Plan

    @property
    def bits_per_weight(self):
        return self.output_bytes * 8 / self.n_elements


def quantize_file(source, destination, mix, *, pure=False, output_tensor_type=None, token_embedding_type=None,
                  imatrix=None, imatrix_path=None, progress=None) -> QuantizeReport:
    """Write `destination` as `source` quantized to `mix`; the file appears only when complete.

    `imatrix` (an ImportanceMatrix) weights each tensor's rounding by its entry, as llama-quantize --imatrix
    (`imatrix_path` is recorded in the file as llama-quantize records it). `progress(n_bytes)` is called as
    the source is consumed (for a progress bar)."""
    mix = mix if isinstance(mix, Mix) else mix_by_name(mix)
    if os.path.abspath(source) == os.path.abspath(destination):
        raise ValueError(f"{destination}: the output would overwrite the input; choose another name")
    start = time.perf_counter()
    with open_gguf(source) as src:
        entries = imatrix.entries if imatrix is not None else {}
        plan = plan_types(src, mix, pure=pure, output_tensor_type=output_tensor_type,
                          token_embedding_type=token_embedding_type, imatrix=bool(entries))
        check_writable(plan, mix, imatrix)
        requantized = requantized_tensors(src, plan)
        with GGUFWriter(destination) as out:
            split_keys = ("split.no", "split.count", "split.tensors.count")
            out.add_all_metadata(src.metadata, src.metadata_types,
                                 skip=("general.quantization_version", "general.file_type") + split_keys)
            out.add_metadata("general.quantization_version", GGML_QNT_VERSION, V.UINT32)
            out.add_metadata("general.file_type", int(mix.file_type), V.UINT32)
            if entries:
                out.add_metadata("quantize.imatrix.file", str(imatrix_path or "")[:127], V.STRING)
                if imatrix.datasets:
                    out.add_metadata("quantize.imatrix.dataset", imatrix.datasets[0][:127], V.STRING)
                out.add_metadata("quantize.imatrix.entries_count", len(entries), V.UINT32)
                out.add_metadata("quantize.imatrix.chunks_count", int(imatrix.chunk_count), V.UINT32)
            for name, tensor in src.tensors.items():
                out.add_tensor(name, tensor.shape, plan.types[name])
            output_bytes = 0
            for name, tensor in src.tensors.items():
                weights = imatrix.weights(name) if name in entries else None
                out.write_tensor_parts(name, _converted_parts(tensor, plan.types[name], weights))
                output_bytes += block_format(plan.types[name]).row_bytes(tensor.shape[-1]) * (tensor.n_elements // tensor.shape[-1])
                if progress:
                    progress(tensor.nbytes)
        n_elements = sum(t.n_elements for t in src.tensors.values())
        source_bytes = sum(t.nbytes for t in src.tensors.values())
    return QuantizeReport(time.perf_counter() - start, source_bytes, output_bytes, n_elements, requantized, plan)


def _converted_parts(tensor, new_type, weights=None):
    """The tensor's bytes in `new_type`, a slice of rows at a time (views of the file when the type is
    unchanged); the file pages of each slice are let go once it is converted."""
    n_cols = tensor.shape[-1]
    n_rows = tensor.n_elements // n_cols
    source_row_bytes = block_format(tensor.type).row_bytes(n_cols)
    rows = tensor.raw.reshape(n_rows, source_row_bytes)
    step = max(1, ROWS_PER_PART_ELEMENTS // n_cols)
    for first in range(0, n_rows, step):
        chunk = rows[first:first + step]
        if tensor.type == new_type:
            yield chunk
        else:
            yield quantize(dequantize(chunk, tensor.type, (chunk.shape[0], n_cols)), new_type,
                           weights if new_type not in FLOAT_TYPES else None)
        tensor.drop_resident_pages(first * source_row_bytes, chunk.nbytes)


def print_report(report, mix, destination, file=None):
    file = file or sys.stderr
    mib = 1024 * 1024
    print(f"model size  = {report.source_bytes / mib:8.2f} MiB ({report.source_bytes * 8 / report.n_elements:.2f} BPW)",
          file=file)
    print(f"quant size  = {report.output_bytes / mib:8.2f} MiB ({report.bits_per_weight:.2f} BPW)  "
          f"{mix.name} -> {destination} in {report.seconds:.1f} s", file=file)
