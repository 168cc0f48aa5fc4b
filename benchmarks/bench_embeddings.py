"""Sentence embeddings: nibble next to llama.cpp (llama-cpp-python's `embed`) and sentence-transformers.

    python benchmarks/bench_embeddings.py [-t 2] [-r 3] [--batch 32] [--sentences 256]

The model is all-MiniLM-L6-v2 (`nibble pull all-minilm-l6-v2`) converted by `nibble convert` to F32, F16 and
Q8_0; the same files go to both engines. Throughput: sentences per second embedding --sentences sentences of
the Python language reference, --batch texts per call, rounds interleaved between the engines, best round.
Quality: cosine of each engine's vectors with sentence-transformers' (min and mean over the sentences).
Needs llama-cpp-python and sentence-transformers for their columns.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from data.make_embedding_cases import sentences  # noqa: E402

from runtime import Llama, pull, source_folder  # noqa: E402
from runtime.convert import convert  # noqa: E402
from runtime.registry import cache_dir  # noqa: E402

MODEL = "all-minilm-l6-v2"


def files():
    """F32, F16 and Q8_0 files of the model (converted once, next to the pulled F16)."""
    out = {"F16": pull(MODEL)}
    for outtype in ("f32", "q8_0"):
        path = cache_dir() / f"all-MiniLM-L6-v2.{outtype}.gguf"
        if not path.exists():
            convert(source_folder(MODEL), path, outtype)
        out[outtype.upper()] = path
    return out


def throughput(embed, texts, batch, rounds, results):
    """Append sentences/s of one round: every text, `batch` per call."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embed(texts[start:start + batch])
    results.append(len(texts) / (time.perf_counter() - started))


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return c.min(), c.mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="texts per embed() call (default: 32)")
    parser.add_argument("--sentences", type=int, default=256)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        reference = SentenceTransformer(str(source_folder(MODEL)), device="cpu").encode(texts, batch_size=32)
    except ImportError:
        reference = None
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
    n_tokens = None
    print(f"all-MiniLM-L6-v2, {len(texts)} sentences, {args.batch} per call, {args.threads} threads, "
          f"best of {args.rounds} interleaved rounds")
    print("| file | nibble sentences/s | llama.cpp sentences/s | ratio | cos vs ST nibble min / mean "
          "| cos vs ST llama.cpp min / mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, path in files().items():
        ours = Llama(str(path), embedding=True, n_threads=args.threads, verbose=False)
        theirs = (llama_cpp.Llama(str(path), embedding=True, n_threads=args.threads, n_threads_batch=args.threads,
                                  verbose=False) if llama_cpp else None)
        n_tokens = ours.embed(texts, return_count=True)[1]
        ours_rate, theirs_rate = [], []
        for _ in range(args.rounds):
            throughput(ours.embed, texts, args.batch, args.rounds, ours_rate)
            if theirs is not None:
                throughput(theirs.embed, texts, args.batch, args.rounds, theirs_rate)
        quality = ["n/a", "n/a"]
        if reference is not None:
            quality[0] = "%.7f / %.7f" % cosines(ours.embed(texts), reference)
            if theirs is not None:
                quality[1] = "%.7f / %.7f" % cosines(theirs.embed(texts), reference)
        best, other = max(ours_rate), max(theirs_rate) if theirs_rate else None
        print(f"| {name} | {best:.1f} | {other:.1f} | {best / other:.2f}x | {quality[0]} | {quality[1]} |"
              if other else f"| {name} | {best:.1f} | n/a | n/a | {quality[0]} | n/a |", flush=True)
    print(f"({n_tokens} tokens in all: {n_tokens / len(texts):.1f} per sentence)")


if __name__ == "__main__":
    main()
