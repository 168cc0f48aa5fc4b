"""Every kernel against a float64 reference: quantized matvec and matmul for every format
(random odd shapes and real tensors from both models), and the transformer-step ops."""
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import cpu_kernels
from cpu_kernels import KERNELS, PackedWeight, deinterleave, interleave, ops, tiles
from gguf_io import FORMATS, dequantize, open_gguf, quantize
from gguf_io.formats import can_write
from random_blocks import random_weight

RTOL = 1e-5     # float32 accumulation against float64, relative to sum |w| |x| (the dot's own scale)
KERNEL_PATHS = [True, False] if cpu_kernels.tiles.USE_TILES else [False]    # integer tiles, float kernels


def packed(raw, qtype, shape, use_tiles=True):
    return PackedWeight(raw, qtype, shape, FORMATS[qtype].dequantize_blocks, use_tiles)


def seen_activations(pw, x):
    """The activations the kernel multiplies: x itself for the float kernels; for the integer tiles, x
    rounded per 32-block to 15-bit integers, never further than half a step (amax / Q15_MAX) from x."""
    if pw.tiled is None:
        return x
    rows = np.atleast_2d(x)
    rounded = pw.prepare(x).dequantize()
    step = np.abs(rows.reshape(rows.shape[0], -1, 32)).max(axis=2) / cpu_kernels.tiles.Q15_MAX
    error = np.abs(rounded - rows).reshape(rows.shape[0], -1, 32).max(axis=2)
    assert np.all(error <= 0.51 * step + 1e-30)    # 0.01: float32 rounding of x / step, relative to amax
    return rounded.reshape(x.shape)


def check_products(pw, exact, x, xs=None):
    """matvec (and matmul of the rows xs) against float64 on the activations the kernel saw."""
    assert rel_err(pw.matvec(x), exact, seen_activations(pw, x)) < RTOL
    if xs is not None:
        assert rel_err(pw.matmul(xs), exact, seen_activations(pw, xs)) < RTOL


def rel_err(out, exact_w, x):
    """Largest error of W @ x (or of x @ W.T for a batch) over the scale sum |w| |x|."""
    if x.ndim == 1:
        ref, scale = exact_w @ x, np.abs(exact_w) @ np.abs(x)
    else:
        ref, scale = x @ exact_w.T, np.abs(x) @ np.abs(exact_w).T
    return float(np.abs(out - ref).max() / max(scale.max(), 1e-30))


def shapes_for(block_size):
    """Rows of 1, 3, 17, 300; widths whose block counts hit every group split (16s, 8, 4, padding)."""
    counts = [1, 2, 3, 5, 8, 12, 16, 18, 20, 33] if block_size == 32 else [1, 2, 3, 6, 8, 17]
    rows = [1, 3, 17, 300]
    return [(rows[i % len(rows)], block_size * n) for i, n in enumerate(counts)]


@pytest.mark.parametrize("use_tiles", KERNEL_PATHS, ids=["tiles", "float"][2 - len(KERNEL_PATHS):])
@pytest.mark.parametrize("qtype", list(KERNELS), ids=lambda t: t.name)
def test_matvec_and_matmul_match_float64_on_random_shapes(qtype, use_tiles):
    rng = np.random.default_rng(int(qtype))
    block = 32 if FORMATS[qtype].block_size == 1 else FORMATS[qtype].block_size
    for i, (rows, cols) in enumerate(shapes_for(block)):
        if can_write(qtype):
            w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2, (rows, 1))).astype(np.float32)
            raw = quantize(w, qtype)
        else:
            raw = random_weight(qtype, rows, cols, rng)
        exact = dequantize(raw, qtype, (rows, cols)).astype(np.float64)
        pw = packed(raw, qtype, (rows, cols), use_tiles)
        x = rng.standard_normal(cols).astype(np.float32)
        x[:7] *= 1e-3     # small and large values in one block
        x_rows = 4 + i % 2    # matmul passes of 3 rows, then one row (4) or two together (5) left over
        check_products(pw, exact, x, rng.standard_normal((x_rows, cols)).astype(np.float32))
        assert np.array_equal(pw.dequantize(), exact.astype(np.float32))


def test_mxfp4_tiles_on_a_real_tensor_and_the_float_fallback():
    """MXFP4's power-of-two scales become the tiles' half floats where a half holds them (every real scale);
    a block scale beyond (2^-24 .. 2^15) keeps the tensor in float32, exact."""
    from runtime import resolve_model
    rng = np.random.default_rng(5)
    with open_gguf(resolve_model("smollm2-135m-instruct")) as gf:
        w = gf.tensors["blk.0.ffn_down.weight"].dequantize()
    raw = quantize(w, T.MXFP4)
    exact = dequantize(raw, T.MXFP4, w.shape).astype(np.float64)
    pw = packed(raw, T.MXFP4, w.shape)
    assert (pw.tiled is not None) == cpu_kernels.tiles.USE_TILES
    check_products(pw, exact, rng.standard_normal(w.shape[1]).astype(np.float32),
                   rng.standard_normal((3, w.shape[1])).astype(np.float32))
    beyond = raw.copy()
    beyond[0, 0] = 200                           # one block's scale 2^72
    pw = packed(beyond, T.MXFP4, w.shape)
    assert pw.tiled is None
    check_products(pw, dequantize(beyond, T.MXFP4, w.shape).astype(np.float64),
                   rng.standard_normal(w.shape[1]).astype(np.float32))


@pytest.mark.parametrize("use_tiles", KERNEL_PATHS, ids=["tiles", "float"][2 - len(KERNEL_PATHS):])
@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q8_0, T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_one_huge_row(qtype, use_tiles):
    rng = np.random.default_rng(3)
    cols = 256 * 300
    w = rng.standard_normal((2, cols)).astype(np.float32)
    raw = quantize(w, qtype)
    exact = dequantize(raw, qtype, w.shape).astype(np.float64)
    x = rng.standard_normal(cols).astype(np.float32)
    check_products(packed(raw, qtype, w.shape, use_tiles), exact, x)


def test_zero_and_tiny_activation_blocks():
    """A block of zeros has no scale to divide by; a block of denormal-sized values still rounds within bounds."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((20, 256)).astype(np.float32)
    raw = quantize(w, T.Q4_K)
    exact = dequantize(raw, T.Q4_K, w.shape).astype(np.float64)
    x = rng.standard_normal(256).astype(np.float32)
    x[:32] = 0.0
    x[32:64] *= 1e-30
    for use_tiles in KERNEL_PATHS:
        pw = packed(raw, T.Q4_K, w.shape, use_tiles)
        assert np.all(np.isfinite(pw.matvec(x)))
        check_products(pw, exact, x)


@pytest.mark.parametrize("qtype", [q for q in KERNELS if KERNELS[q].interleaved], ids=lambda t: t.name)
def test_interleave_round_trip(qtype):
    fmt = KERNELS[qtype]
    rng = np.random.default_rng(5)
    for nb in (1, 4, 7, 16, 29):
        raw = rng.integers(0, 256, 3 * nb * fmt.type_size, dtype=np.uint8)
        assert np.array_equal(deinterleave(*interleave(raw, 3, fmt.type_size), nb), raw)


REAL_TENSORS = {
    "smollm2-135m-instruct": ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.3.ffn_down.weight",
                              "blk.7.ffn_gate.weight", "token_embd.weight"],
    "gemma3-270m": ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
                    "blk.1.ffn_up.weight", "blk.5.ffn_down.weight", "token_embd.weight"],
}


@pytest.mark.parametrize("use_tiles", KERNEL_PATHS, ids=["tiles", "float"][2 - len(KERNEL_PATHS):])
@pytest.mark.parametrize("model", list(REAL_TENSORS))
def test_real_tensors(model, use_tiles):
    from runtime import resolve_model
    rng = np.random.default_rng(11)
    seen = set()
    with open_gguf(resolve_model(model)) as gf:
        for name in REAL_TENSORS[model]:
            t = gf.tensors[name]
            seen.add(t.type)
            exact = t.dequantize().astype(np.float64)
            pw = packed(t.raw, t.type, t.shape, use_tiles)
            x = rng.standard_normal(t.shape[1]).astype(np.float32)
            xs = rng.standard_normal((3, t.shape[1])).astype(np.float32) if t.shape[0] <= 4096 else None
            check_products(pw, exact, x, xs)
    expected = {"smollm2-135m-instruct": {T.Q4_1, T.Q8_0}, "gemma3-270m": {T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K}}
    assert expected[model] <= seen


IQUANT_EXCERPTS = Path(__file__).parent / "data" / "iquant-excerpts.gguf"


@pytest.mark.parametrize("use_tiles", KERNEL_PATHS, ids=["tiles", "float"][2 - len(KERNEL_PATHS):])
def test_real_iquant_and_ternary_blocks(use_tiles):
    """Rows of llama-quantize's IQ1-IQ3 and TQ tensors of both real models (data/make_iquant_excerpts.py)."""
    rng = np.random.default_rng(12)
    seen = set()
    with open_gguf(IQUANT_EXCERPTS) as gf:
        for t in gf.tensors.values():
            seen.add(t.type)
            pw = packed(t.raw, t.type, t.shape, use_tiles)
            exact = t.dequantize().astype(np.float64)
            check_products(pw, exact, rng.standard_normal(t.shape[1]).astype(np.float32),
                           rng.standard_normal((4, t.shape[1])).astype(np.float32))
            assert np.array_equal(pw.dequantize(), exact.astype(np.float32)), t.name
    assert {T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M, T.TQ1_0, T.TQ2_0} <= seen


def test_one_thread_gives_the_same_numbers():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 512)).astype(np.float32)
    pw = packed(quantize(w, T.Q4_K), T.Q4_K, w.shape)
    x = rng.standard_normal(512).astype(np.float32)
    both = pw.matvec(x)
    try:
        assert cpu_kernels.set_threads(1) == 1
        one = pw.matvec(x)
    finally:
        cpu_kernels.set_threads()
    assert np.array_equal(one, both)
    with pytest.raises(ValueError, match="more than"):
        cpu_kernels.set_threads(10_000)


@pytest.mark.parametrize("qtype", list(tiles.BYTEWISE_PACKERS), ids=lambda t: t.name)
def test_word_packers_equal_the_generic_ones(qtype):
    """The word-level packers (load time) write the same tile bytes as the byte-by-byte decoders (packing needs no
    integer path, so every path checks it)."""
    rng = np.random.default_rng(4)
    for rows in (16, 37):
        raw = quantize(rng.standard_normal((rows, 512)).astype(np.float32), qtype)
        fast = tiles.pack(qtype, raw, rows, 512)
        generic = np.zeros_like(fast)
        tiled = tiles.TILED[qtype]
        tiles.BYTEWISE_PACKERS[qtype](raw.reshape(rows, -1, tiled.block_bytes), generic, tiles._layout(tiled))
        assert np.array_equal(fast, generic)


# ---------------------------------------------------------------- transformer-step ops

def test_rms_norm_and_fused_residual():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 576)).astype(np.float32)
    d = rng.standard_normal((5, 576)).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    out = np.empty_like(x)
    ops.rms_norm(x, w, 1e-5, out)
    ref = x / np.sqrt((x.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-5) * w
    assert np.abs(out - ref).max() < 1e-5
    residual = x.copy()
    ops.add_rms_norm(residual, d, w, 1e-6, out)
    s = x.astype(np.float64) + d
    assert np.allclose(residual, s, atol=1e-6)
    assert np.abs(out - s / np.sqrt((s ** 2).mean(1, keepdims=True) + 1e-6) * w).max() < 1e-5


@pytest.mark.parametrize("name", ["rms_norm", "add_rms_norm", "add", "apply_rope", "softmax", "silu_mul",
                                  "gelu_tanh_mul"])
def test_rowwise_ops_serial_equals_parallel(name):
    """Generation runs the row-wise ops on the calling thread, batches over the threads: the same bits."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 64)).astype(np.float32)
    cos, sin = cpu_kernels.rope_angles(np.array([0, 5, 900]), 64, 10000.0)
    w = rng.standard_normal(256).astype(np.float32)
    args = {"rms_norm": lambda x2, o: (x2, w, 1e-5, o), "add_rms_norm": lambda x2, o: (x2, x2 * 0.5, w, 1e-5, o),
            "add": lambda x2, o: (x2, x2 * 0.5), "softmax": lambda x2, o: (x2, o),
            "silu_mul": lambda x2, o: (x2, x2 * 0.5, o), "gelu_tanh_mul": lambda x2, o: (x2, x2 * 0.5, o)}
    op = getattr(ops, name)
    results = []
    for variant in (op.serial, op.parallel):
        if name == "apply_rope":
            y = x.copy()
            variant(y, cos, sin, True)
            results.append(y)
            continue
        x2, o = x.reshape(3, 256).copy(), np.zeros((3, 256), np.float32)
        variant(*args[name](x2, o))
        results.append(np.concatenate([x2, o]))
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("neox", [False, True])
def test_rope(neox):
    rng = np.random.default_rng(1)
    n, heads, dim, n_rot = 4, 3, 64, 64
    x = rng.standard_normal((n, heads, dim)).astype(np.float32)
    pos = np.array([0, 1, 7, 300])
    cos, sin = cpu_kernels.rope_angles(pos, n_rot, 10000.0)
    y = x.copy()
    ops.apply_rope(y, cos, sin, neox)
    theta = pos[:, None] * 10000.0 ** (-np.arange(0, n_rot, 2) / n_rot)
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    if neox:
        a, b = x[..., :n_rot // 2], x[..., n_rot // 2:]
        ref = np.concatenate([a * c - b * s, a * s + b * c], -1)
    else:
        a, b = x[..., 0::2], x[..., 1::2]
        ref = np.stack([a * c - b * s, a * s + b * c], -1).reshape(x.shape)
    assert np.abs(y - ref).max() < 2e-4          # float32 angles, as ggml computes them
    assert np.array_equal(y[0], x[0])            # position 0 is the identity


def test_softmax_and_gates():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 100)) * 10).astype(np.float32)
    out = np.empty_like(x)
    ops.softmax(x, out)
    e = np.exp(x - x.max(1, keepdims=True))
    assert np.abs(out - e / e.sum(1, keepdims=True)).max() < 1e-6
    g, u = rng.standard_normal((2, 3, 100)).astype(np.float32)
    ops.silu_mul(g, u, out)
    assert np.abs(out - g / (1 + np.exp(-g.astype(np.float64))) * u).max() < 1e-5
    ops.gelu_tanh_mul(g, u, out)
    gd = g.astype(np.float64)
    ref = 0.5 * gd * (1 + np.tanh(np.sqrt(2 / np.pi) * (gd + 0.044715 * gd ** 3))) * u
    assert np.abs(out - ref).max() < 1e-5


def reference_attention(q, k, v, q_pos, slot_pos, n_slots, scale, window, softcap=0.0):
    n, heads, dim = q.shape
    group = heads // k.shape[0]
    out = np.zeros_like(q, dtype=np.float64)
    for t in range(n):
        for h in range(heads):
            pos = slot_pos[:n_slots]
            visible = (pos <= q_pos[t]) & ((window <= 0) | (q_pos[t] - pos < window))
            s = k[h // group, :n_slots] @ q[t, h].astype(np.float64) * scale
            s = np.where(visible, softcap * np.tanh(s / softcap) if softcap else s, -np.inf)
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v[h // group, :n_slots]
    return out


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("window, softcap", [(0, 0.0), (5, 0.0), (5, 2.0)])
def test_attention_gqa_window_and_ring_buffer(cache_dtype, window, softcap):
    rng = np.random.default_rng(3)
    heads, kv_heads, dim, ctx = 8, 2, 32, 12
    n = 4
    q = rng.standard_normal((n, heads, dim)).astype(np.float32)
    k = rng.standard_normal((ctx, kv_heads, dim)).astype(np.float32)
    v = rng.standard_normal((ctx, kv_heads, dim)).astype(np.float32)
    storage = np.uint16 if cache_dtype == np.float16 else np.float32
    k_cache = np.zeros((kv_heads, ctx, dim), storage)
    v_cache = np.zeros((kv_heads, ctx, dim), storage)
    slots = np.array([5, 6, 7, 0, 1, 2, 3, 4, 8, 9, 10, 11])       # a ring buffer that wrapped
    slot_pos = np.empty(ctx, np.int32)
    slot_pos[slots] = np.arange(ctx) + 20
    ops.store_kv(k_cache, v_cache, slots.astype(np.int64), k, v)
    kr = (k_cache.view(np.float16) if storage == np.uint16 else k_cache).astype(np.float64)
    vr = (v_cache.view(np.float16) if storage == np.uint16 else v_cache).astype(np.float64)
    if storage == np.uint16:
        assert np.array_equal(kr[:, slots].transpose(1, 0, 2), k.astype(np.float16).astype(np.float64))
    q_pos = np.array([24, 27, 30, 31], np.int64)
    # each query is the newest token of its own sequence; the sequences' caches (a pool) hold the same
    # keys and values, and each query stores its own k, v again in the slot of its position
    seqs = np.arange(n)
    k_pool, v_pool = np.stack([k_cache] * n), np.stack([v_cache] * n)
    mine = q_pos - 20
    scores = np.empty((n * heads, ctx), np.float32)
    out = np.empty_like(q)
    ops.attention_seqs(q, k_pool, v_pool, seqs, seqs, q_pos, np.stack([slot_pos] * n).astype(np.int64), np.full(n, ctx), k[mine],
                       v[mine], slots[mine], np.float32(dim ** -0.5), window, np.float32(softcap), scores, out)
    assert all(np.array_equal(k_pool[j], k_cache) and np.array_equal(v_pool[j], v_cache) for j in seqs)
    ref = reference_attention(q, kr, vr, q_pos, slot_pos, ctx, dim ** -0.5, window, softcap)
    assert np.abs(out - ref).max() < 1e-5


def test_top_k_is_a_stable_descending_sort_prefix():
    rng = np.random.default_rng(5)
    for k in (1, 2, 40, 100, 1000):
        logits = rng.standard_normal(49152).astype(np.float32)
        logits[rng.integers(0, logits.size, 200)] = 2.5      # ties: the lower index comes first
        assert np.array_equal(cpu_kernels.top_k(logits, k), np.argsort(-logits, kind="stable")[:k])
    assert np.array_equal(cpu_kernels.top_k(np.float32([1, 3, 2]), 10), [1, 2, 0])


def test_a_process_that_compiles_the_ops_computes_what_later_ones_load(tmp_path):
    """Run the elementwise-chain ops in a process with an empty kernel cache (it compiles them), then in a
    second one (it loads them): the same bits. Full fast-math broke this (silu_mul, 1 ulp, 0.009 in SmolLM2's
    logits on a first run)."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).parent / "kernel_bits.py"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True).stdout
            for _ in range(2)]
    assert runs[0].count("\n") == 3 and runs[0] == runs[1]
