"""Kernel speed: quantized matvec GB/s next to this machine's read bandwidth (measured in
the same run), the load-time packing of each format (MB/s of GGUF bytes), matmul GFLOP/s next to numpy's float32 matmul, and JIT cost.

    python benchmarks/bench_kernels.py [--quick] [--skip-jit]

Weights are rotated through copies totalling more than the L3 cache, so matvec reads
come from memory as they do when generating with a real model.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from gguf import GGMLQuantizationType as T
from numba import get_num_threads

from cpu_kernels import KERNELS, PackedWeight, read_bandwidth
from gguf_io import FORMATS, open_gguf, quantize
from gguf_io.formats import can_write
from runtime import resolve_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from random_blocks import random_weight  # noqa: E402

GOAL_60 = {T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q6_K}
FLOAT_TYPES = {T.F32, T.F16, T.BF16}       # read in place from the file: no load-time packing
STREAM_BYTES = 160e6       # more than the 32 MiB L3 several times over


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matvec_gbps(weights, raw_bytes, x, seconds=1.0, windows=3):
    """GB/s of GGUF bytes for matvecs cycling through `weights` (copies of one matrix): the best of
    `windows` timing windows, since other tenants of this shared machine take the memory bus in bursts."""
    prepared = weights[0].prepare(x)
    out = np.empty(weights[0].rows, np.float32)
    weights[0].matvec(x, out, prepared)
    best = 0.0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for w in weights:
                w.matvec(x, out, prepared)
            count += len(weights)
        best = max(best, raw_bytes * count / (time.perf_counter() - start) / 1e9)
    return best


def pack_copies(raw, qtype, shape):
    copies = max(2, int(STREAM_BYTES // raw.nbytes))
    dequant = FORMATS[qtype].dequantize_blocks
    return [PackedWeight(raw.copy(), qtype, shape, dequant) for _ in range(copies)]


def synthetic_table(bandwidth, seconds):
    rng = np.random.default_rng(0)
    shape = (4096, 4096)
    w = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal(shape[1]).astype(np.float32)
    print(f"\nmatvec 4096x4096 (GB/s of GGUF bytes; bandwidth {bandwidth:.1f} GB/s)")
    print(f"{'type':8s}{'GB/s':>6s} {'% bw':>6s} {'goal':>5s}  met  {'load MB/s':>9s}")
    for qtype in KERNELS:
        # types nibble cannot write yet: random blocks (every code pattern; the kernels' speed does not
        # depend on the values)
        raw = quantize(w, qtype) if can_write(qtype) else random_weight(qtype, *shape, rng)
        copies = pack_copies(raw, qtype, shape)
        gbps = matvec_gbps(copies, raw.nbytes, x, seconds)
        goal = 60 if qtype in GOAL_60 else 40
        share = 100 * gbps / bandwidth
        load = min(_timed(lambda: PackedWeight(raw, qtype, shape, FORMATS[qtype].dequantize_blocks)) for _ in range(3))
        load_rate = "in place" if qtype in FLOAT_TYPES else f"{raw.nbytes / load / 1e6:.0f}"
        print(f"{qtype.name:8s}{gbps:6.1f} {share:5.0f}% {goal:4d}%  {'yes' if share >= goal else 'no ':3s}"
              f"  {load_rate:>9s}")


def real_shapes_table(bandwidth, seconds):
    print("\nmatvec on real layer shapes (GB/s of GGUF bytes)")
    print(f"{'model':22s} {'tensor':26s} {'type':6s} {'shape':>12s} {'GB/s':>6s} {'% bw':>5s}")
    rng = np.random.default_rng(1)
    for model, names in (("smollm2-135m-instruct", ["blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                                    "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight",
                                                    "token_embd.weight"]),
                         ("gemma3-270m", ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_gate.weight",
                                          "blk.0.ffn_down.weight", "blk.5.ffn_down.weight", "token_embd.weight"])):
        with open_gguf(resolve_model(model)) as gf:
            for name in names:
                t = gf.tensors[name]
                raw = np.array(t.raw)
                x = rng.standard_normal(t.shape[1]).astype(np.float32)
                gbps = matvec_gbps(pack_copies(raw, t.type, t.shape), raw.nbytes, x, seconds)
                shape = "x".join(map(str, t.shape))
                print(f"{model:22s} {name:26s} {t.type.name:6s} {shape:>12s} {gbps:6.1f} {100 * gbps / bandwidth:4.0f}%")


def matmul_table(seconds):
    """nibble's matmuls are all timed before numpy's: BLAS worker threads keep spinning after a call and
    would take the cores from the next kernel (the runtime keeps BLAS on one thread for that reason)."""
    print("\nmatmul, 512 activation rows (GFLOP/s; numpy = float32 matmul on the dequantized weight)")
    print(f"{'type':8s}{'shape':>10s} {'nibble':>7s} {'numpy':>7s} {'ratio':>6s}")
    rng = np.random.default_rng(2)
    cases = []
    for qtype, shape in ((T.Q4_0, (4096, 4096)), (T.Q4_1, (1536, 576)), (T.Q8_0, (576, 576)),
                         (T.Q4_K, (2048, 2048)), (T.Q6_K, (640, 2048)), (T.Q5_0, (2048, 640)),
                         (T.IQ2_XXS, (2048, 2048)), (T.IQ2_S, (2048, 2048)), (T.IQ3_XXS, (2048, 2048))):
        w = rng.standard_normal(shape).astype(np.float32)
        raw = quantize(w, qtype) if can_write(qtype) else random_weight(qtype, *shape, rng)
        pw = PackedWeight(raw, qtype, shape, FORMATS[qtype].dequantize_blocks)
        xs = rng.standard_normal((512, shape[1])).astype(np.float32)
        out = np.empty((512, shape[0]), np.float32)
        pw.matmul(xs, out)
        cases.append((qtype, shape, pw, xs, min(_timed(lambda: pw.matmul(xs, out)) for _ in range(5))))
    for qtype, shape, pw, xs, ours in cases:
        dense = pw.dequantize()
        numpy = min(_timed(lambda: np.matmul(xs, dense.T)) for _ in range(5))
        flops = 2 * 512 * shape[0] * shape[1]
        print(f"{qtype.name:8s}{'x'.join(map(str, shape)):>10s} {flops / ours / 1e9:7.1f} "
              f"{flops / numpy / 1e9:7.1f} {numpy / ours:5.2f}x")


JIT_SCRIPT = """
import time, numpy as np
start = time.perf_counter()
from gguf import GGMLQuantizationType as T
from gguf_io import FORMATS, quantize
import cpu_kernels
from cpu_kernels import PackedWeight, ops
for qtype in {types}:
    w = np.ones((4, 1024), np.float32)
    pw = PackedWeight(quantize(w, qtype), qtype, w.shape, FORMATS[qtype].dequantize_blocks)
    pw.matvec(np.ones(1024, np.float32)); pw.matmul(np.ones((2, 1024), np.float32))
x = np.ones((2, 64), np.float32); out = np.empty_like(x)
ops.rms_norm(x, x[0], 1e-5, out); ops.add_rms_norm(x, x, x[0], 1e-5, out); ops.silu_mul(x, x, out)
ops.gelu_tanh_mul(x, x, out); ops.softmax(x, out)
q = np.ones((2, 4, 16), np.float32); cos, sin = cpu_kernels.rope_angles(np.arange(2), 16, 1e4)
ops.apply_rope(q, cos, sin, False); ops.apply_rope(q, cos, sin, True)
for dtype in (np.float32, np.uint16):
    kc = np.zeros((2, 8, 16), dtype); ops.store_kv(kc, kc, np.arange(2), q[:, :2], q[:, :2])
    pool = np.zeros((2, 2, 8, 16), dtype); one = np.arange(2)
    ops.attention_seqs(q, pool, pool, one, one, one, np.zeros((2, 8), np.int64), one + 1, q[:, :2], q[:, :2], one,
                       np.float32(0.25), 0, np.float32(0.0), np.empty((8, 8), np.float32), np.empty_like(q))
print(time.perf_counter() - start)
"""


def jit_table():
    print("\nJIT cost: every kernel one model needs (matvec, matmul dequantize, ops), in a new process")
    print(f"{'model':22s} {'cold cache':>11s} {'warm cache':>11s}")
    for model, types in (("smollm2-135m-instruct", "[T.Q4_1, T.Q8_0, T.F32]"),
                         ("gemma3-270m", "[T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K, T.F32]")):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NIBBLE_CACHE=cache)
            env.pop("NUMBA_CACHE_DIR", None)
            times = []
            for _ in range(2):
                result = subprocess.run([sys.executable, "-c", JIT_SCRIPT.format(types=types)], env=env,
                                        capture_output=True, text=True, check=True)
                times.append(float(result.stdout.strip().splitlines()[-1]))
        print(f"{model:22s} {times[0]:10.1f}s {times[1]:10.2f}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--skip-jit", action="store_true", help="leave out the JIT cost table")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.0
    bandwidth = read_bandwidth()
    print(f"{get_num_threads()} threads; read bandwidth (parallel sum over 1 GiB): {bandwidth:.1f} GB/s")
    synthetic_table(bandwidth, seconds)
    real_shapes_table(bandwidth, seconds)
    matmul_table(seconds)
    if not args.skip_jit:
        jit_table()


if __name__ == "__main__":
    main()
