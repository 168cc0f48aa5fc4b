"""Time to open and validate a GGUF file: nibble's reader next to gguf-py's GGUFReader.

    python benchmarks/bench_reader.py [MODEL ...]      (default: both known models)
"""
import argparse
import statistics
import time

from gguf import GGUFReader

from gguf_io import open_gguf
from runtime import KNOWN_MODELS, resolve_model


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(KNOWN_MODELS))
    parser.add_argument("-r", "--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':28s} {'tokens':>8s} {'nibble best':>12s} {'median':>8s} {'gguf-py':>9s} {'speed-up':>9s}")
    for name in args.models:
        path = resolve_model(name)

        def ours():
            with open_gguf(path) as gf:
                return len(gf.metadata.get("tokenizer.ggml.tokens", ()))
        n_tokens = ours()
        best, median = best_of(ours, args.repeat)
        theirs, _ = best_of(lambda: GGUFReader(path), 1)
        print(f"{name:28s} {n_tokens:>8d} {best:>11.3f}s {median:>7.3f}s {theirs:>8.2f}s {theirs / best:>8.0f}x")


if __name__ == "__main__":
    main()
