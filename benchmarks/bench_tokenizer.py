"""Tokenizer speed: build time from the GGUF metadata and encode MB/s, next to llama.cpp where installed.

    python benchmarks/bench_tokenizer.py [MODEL ...]      (default: both known models)

The text is about 1 MB of mixed English and code that every Python install has: the reference
documentation in pydoc_data plus standard-library sources. One core (the tokenizer is single-threaded).
"""
import argparse
import inspect
import time

import pydoc_data.topics

from gguf_io import open_gguf
from runtime import KNOWN_MODELS, resolve_model
from runtime.tokenizer import Tokenizer


def mixed_text(size=1_000_000):
    import argparse as m1, collections as m2, inspect as m3, json.decoder as m4, email.message as m5, typing as m6
    english = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    code = "".join(inspect.getsource(m) for m in (m1, m2, m3, m4, m5, m6))
    return english[: size // 2] + code[: size // 2]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def llama_cpp_encode(path, data):
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, None
    build, llm = timed(lambda: Llama(model_path=str(path), vocab_only=True, verbose=False))
    seconds, ids = timed(lambda: llm.tokenize(data, add_bos=False, special=False))
    return build, (seconds, ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(KNOWN_MODELS))
    args = parser.parse_args()
    text = mixed_text()
    data = text.encode("utf-8")
    megabytes = len(data) / 1e6
    print(f"text: {megabytes:.2f} MB of mixed English and code\n")
    print(f"{'model':24s} {'vocab':>7s} {'open+build':>11s} {'encode MB/s':>12s} {'llama.cpp build':>16s} "
          f"{'llama.cpp MB/s':>15s} {'same ids':>9s}")
    for name in args.models:
        path = resolve_model(name)
        build, tokenizer = timed(lambda: Tokenizer(open_gguf(path).metadata))
        seconds, ids = timed(lambda: tokenizer.encode(text, add_special=False))
        their_build, theirs = llama_cpp_encode(path, data)
        if theirs is None:
            reference = f"{'-':>16s} {'-':>15s} {'-':>9s}"
        else:
            their_seconds, their_ids = theirs
            reference = (f"{their_build:>15.3f}s {megabytes / their_seconds:>15.2f} "
                         f"{'yes' if their_ids == ids else 'NO':>9s}")
        print(f"{name:24s} {tokenizer.n_vocab:>7d} {build:>10.3f}s {megabytes / seconds:>12.2f} {reference}")


if __name__ == "__main__":
    main()
