import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

from gguf_io import FORMATS, dequantize, open_gguf, quantize
from gguf_io.formats import can_write, can_write_weighted
from random_blocks import random_blocks

LLAMA_CPP_EXACT = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
LLAMA_CPP_SEARCHED = ["Q2_K", "Q3_K_S", "Q4_K_S", "Q5_K_S", "Q6_K", "IQ4_NL", "IQ4_XS"]


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def relative_rmse(approx, exact):
    exact = exact.astype(np.float64)
    return float(np.sqrt(((approx - exact) ** 2).sum() / (exact ** 2).sum()))


def test_table_uses_gguf_constants():
    assert {f.name for f in FORMATS.values()} == {
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
        "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4"}
    for qtype, fmt in FORMATS.items():
        assert (fmt.block_size, fmt.type_size) == GGML_QUANT_SIZES[qtype]


def test_dequantize_matches_gguf_py_on_every_real_tensor(real_model_path):
    with open_gguf(real_model_path) as gf:
        for t in gf.tensors.values():
            ours = t.dequantize()
            reference = quants.dequantize(t.raw.reshape(t.shape[:-1] + (-1,)), t.type)
            assert ours.shape == t.shape
            assert np.array_equal(bits(ours), bits(reference)), t.name


@pytest.mark.parametrize("file_type", LLAMA_CPP_EXACT + LLAMA_CPP_SEARCHED)
def test_quantize_is_bit_identical_to_llama_quantize(file_type, quant_source_path, quant_golden):
    """Every tensor of the golden source, quantized, hashes to llama-quantize's bytes; the
    dequantized result then equals gguf-py's and its error equals llama.cpp's."""
    expected = quant_golden["types"][file_type]
    with open_gguf(quant_source_path) as src:
        for name, want in expected.items():
            x = src.tensors[name].dequantize()
            qtype = T[want["type"]]
            q = quantize(x, qtype)
            assert q.shape == x.shape[:-1] + (FORMATS[qtype].row_bytes(x.shape[-1]),)
            assert hashlib.sha256(q.tobytes()).hexdigest() == want["sha256"], (file_type, name)
            d = dequantize(q, qtype, x.shape)
            assert np.array_equal(bits(d), bits(quants.dequantize(q, qtype))), (file_type, name)
            assert relative_rmse(d, x) == pytest.approx(want["relative_rmse"], rel=1e-9)


LEGACY = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16, T.F16]
WRITABLE = [qtype for qtype in FORMATS if can_write(qtype)]
READ_ONLY = [qtype for qtype in FORMATS if not can_write(qtype) and not can_write_weighted(qtype)]
NEEDS_WEIGHTS = [qtype for qtype in FORMATS if not can_write(qtype) and can_write_weighted(qtype)]
GRID_TERNARY_FP4 = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.TQ1_0, T.TQ2_0,
                    T.MXFP4, T.NVFP4]


@pytest.mark.parametrize("qtype", GRID_TERNARY_FP4, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py_on_random_blocks(qtype):
    rng = np.random.default_rng(int(qtype))
    blocks = random_blocks(qtype, 4096, rng)
    block_size = GGML_QUANT_SIZES[qtype][0]
    ours = dequantize(blocks, qtype, (64, 4096 // 64 * block_size))
    with np.errstate(over="ignore"):       # MXFP4 scales reach 2^127
        reference = quants.dequantize(blocks.reshape(64, -1), qtype)
    assert np.array_equal(bits(ours), bits(reference))


def test_dequantize_matches_gguf_py_on_real_iquant_blocks():
    """llama-quantize's blocks of every grid i-quant and ternary type, from both real models."""
    from pathlib import Path
    with open_gguf(Path(__file__).parent / "data" / "iquant-excerpts.gguf") as gf:
        assert len(gf.tensors) == 18
        for t in gf.tensors.values():
            reference = quants.dequantize(t.raw.reshape(t.shape[0], -1), t.type)
            assert np.array_equal(bits(t.dequantize()), bits(reference)), t.name


@pytest.mark.parametrize("qtype", READ_ONLY + NEEDS_WEIGHTS, ids=lambda t: t.name)
def test_types_without_a_quantizer_say_so(qtype):
    block_size = GGML_QUANT_SIZES[qtype][0]
    says = "needs an importance matrix" if qtype in NEEDS_WEIGHTS else f"reads {qtype.name} but cannot write it yet"
    with pytest.raises(ValueError, match=says):
        quantize(np.ones(block_size, np.float32), qtype)
    if qtype in READ_ONLY:
        with pytest.raises(ValueError, match=f"no importance-weighted {qtype.name} quantizer"):
            quantize(np.ones(block_size, np.float32), qtype, weights=np.ones(block_size))


@pytest.mark.parametrize("mix, qtype, count", [("IQ2_XXS", T.IQ2_XXS, 27 + 34), ("IQ2_XS", T.IQ2_XS, 27 + 34),
                                               ("IQ2_S", T.IQ2_XS, 27 + 16)])
def test_weighted_grid_quantizers_are_byte_identical_to_llama_quantize(mix, qtype, count, f16_bases):
    """The grid-type rows of both real models, quantized with llama-imatrix's matrix: llama-quantize's bytes (the
    digests of its tensors in that mix, recorded with tests/data/make_quantize_cases.py)."""
    from runtime.imatrix import read_imatrix
    cases = json.loads((Path(__file__).parent / "data" / "quantize-mixes.json").read_text())
    checked = 0
    for model, base in f16_bases.items():
        matrix = read_imatrix(Path(__file__).parent / "data" / f"imatrix-{model}-llama.cpp.gguf")
        with open_gguf(base) as src:
            for name, digest in cases[model]["imatrix_tensors"][mix].items():
                q = quantize(src.tensors[name].dequantize(), qtype, weights=matrix.weights(name))
                assert hashlib.sha256(q.tobytes()).hexdigest() == digest, name
                checked += 1
    assert checked == count


@pytest.mark.parametrize("qtype", WRITABLE, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(1, 256), (3, 512), (257, 768), (2, 4096 * 4), (256,)])
def test_odd_shapes_round_trip(qtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * rng.uniform(1e-3, 10, shape[:-1] + (1,))).astype(np.float32)
    grid = qtype in GRID_TERNARY_FP4[:7]          # the i-quant grids have no zero point: a zero group inside a block
    if not grid:                                  # comes back as the smallest one (and IQ3_S misplaces the block's
        x.reshape(-1)[: 64] = 0                  # next groups), as in llama.cpp; a test on zeros means nothing there
    x.reshape(-1)[100] = 300.0                   # an outlier
    q = quantize(x, qtype)
    assert q.dtype == np.uint8 and q.shape == x.shape[:-1] + (FORMATS[qtype].row_bytes(x.shape[-1]),)
    d = dequantize(q, qtype, x.shape)
    assert np.array_equal(bits(d), bits(quants.dequantize(q, qtype)))
    if not grid:
        assert np.all(d.reshape(-1)[:64] == 0)
    ternary = qtype in (T.TQ1_0, T.TQ2_0)     # 3 levels: Gaussian rows lose much, ternary rows nothing
    # the grid types' 4-bit group scales run from the largest: the outlier flattens the rest of its super-block
    assert relative_rmse(d, x) < (0.9 if ternary else 0.65 if grid else 0.35)
    if ternary:
        t = rng.integers(-1, 2, shape).astype(np.float32) * np.float32(0.125)
        t.reshape(-1)[::256] = 0.125              # every block's amax is the scale
        assert np.array_equal(dequantize(quantize(t, qtype), qtype, shape), t)
    if qtype in LEGACY:
        assert np.array_equal(q, quants.quantize(x, qtype).view(np.uint8).reshape(q.shape))


def test_quantize_rejects_rows_that_are_not_whole_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize(np.zeros((2, 100), np.float32), T.Q4_K)
    with pytest.raises(ValueError, match="must be 68 bytes"):
        dequantize(np.zeros(34, np.uint8), T.Q8_0, (64,))
    with pytest.raises(ValueError, match="unsupported tensor type"):
        quantize(np.zeros(32, np.float32), T.Q8_K)


def test_half_float_conversions_are_exact_for_every_bit_pattern():
    every_half = np.arange(65536, dtype=np.uint16)
    ours = dequantize(every_half.view(np.uint8), T.F16, (65536,))
    reference = every_half.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(ours), np.isnan(reference))
    finite = ~np.isnan(reference)
    assert np.array_equal(bits(ours[finite]), bits(reference[finite]))
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 6e-8, 2.9e-8, 3e-8, 1e-9,
                         np.nextafter(np.float32(1), np.float32(2))], np.float32)
    with np.errstate(over="ignore"):
        assert np.array_equal(quantize(specials, T.F16).view(np.uint16), specials.astype(np.float16).view(np.uint16))
    bf16 = quantize(np.array([1.00390625, 1.01171875, -np.inf, np.nan], np.float32), T.BF16).view(np.uint16)
    assert bf16[:3].tolist() == [0x3F80, 0x3F82, 0xFF80] and bf16[3] & 0x7FC0 == 0x7FC0
