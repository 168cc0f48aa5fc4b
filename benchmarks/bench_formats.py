"""Quantize and dequantize speed for every block format: nibble (Numba, all cores) next to
gguf-py's numpy implementation, in MB/s of float32 data (the input of quantize, the
output of dequantize).

Dequantize is timed two ways: into a fresh array of the whole matrix (what
`gguf_io.dequantize` does: bound by the machine's write bandwidth, printed as the
"fill floor" of a plain parallel fill of the same array), and tile by tile into a
reused buffer that stays in cache (what a kernel does).

    python benchmarks/bench_formats.py [--rows 4096] [--cols 4096] [--repeat 5]
"""
import argparse
import time

import numpy as np
from gguf import quants
from numba import get_num_threads, njit, prange

from gguf_io import FORMATS, dequantize, quantize

TILE_ROWS = 64


@njit(parallel=True)
def _fill(out):
    for c in prange(out.size // 16384):
        for i in range(c * 16384, (c + 1) * 16384):
            out[i] = 1.0


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
    tile = x[:TILE_ROWS]
    mb, tile_mb = x.nbytes / 1e6, tile.nbytes / 1e6

    def fill_fresh():
        _fill(np.empty(x.size, np.float32))
    fill_fresh()
    floor = mb / best_time(fill_fresh, args.repeat)
    print(f"{args.rows}x{args.cols} float32 ({mb:.0f} MB); nibble on {get_num_threads()} threads; "
          f"MB/s of float32 data; fill floor (parallel fill of a fresh array): {floor:.0f} MB/s")
    print(f"{'':7s} | {'quantize':^24s} | {'dequantize, fresh array':^24s} | {'dequantize, in-cache tile':^25s}")
    print(f"{'type':7s} | {'nibble':>7s} {'gguf-py':>8s} {'ratio':>6s} | {'nibble':>7s} {'gguf-py':>8s} {'ratio':>6s} "
          f"| {'nibble':>7s} {'gguf-py':>8s} {'ratio':>6s}")
    for qtype, fmt in FORMATS.items():
        if qtype.name == "F32":
            continue                    # gguf-py returns a view of the input: nothing to compare
        q = quantize(x, qtype)          # also compiles the kernels
        q_tile = q[:TILE_ROWS].reshape(-1)
        tile_out = np.empty(tile.size, np.float32)
        fmt.dequantize_blocks(q_tile, tile_out)

        ours_q = mb / best_time(lambda: quantize(x, qtype), args.repeat)
        try:
            theirs_q = mb / best_time(lambda: quants.quantize(x, qtype), 1)
            q_cols = f"{theirs_q:8.0f} {ours_q / theirs_q:5.1f}x"
        except NotImplementedError:
            q_cols = f"{'n/a':>8s} {'':6s}"
        ours_d = mb / best_time(lambda: dequantize(q, qtype, x.shape), args.repeat)
        theirs_d = mb / best_time(lambda: quants.dequantize(q, qtype), 1)
        ours_t = tile_mb * 20 / best_time(lambda: [fmt.dequantize_blocks(q_tile, tile_out) for _ in range(20)],
                                          args.repeat)
        theirs_t = tile_mb / best_time(lambda: quants.dequantize(q[:TILE_ROWS], qtype), args.repeat)
        print(f"{qtype.name:7s} | {ours_q:7.0f} {q_cols} | {ours_d:7.0f} {theirs_d:8.0f} {ours_d / theirs_d:5.1f}x "
              f"| {ours_t:7.0f} {theirs_t:8.0f} {ours_t / theirs_t:5.1f}x")


if __name__ == "__main__":
    main()
