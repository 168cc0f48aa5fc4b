"""Measure prompt processing (pp) and generation (tg) speed, like llama-bench.

pp: a prompt of P random tokens evaluated from an empty context, in one batch.
tg: N tokens evaluated one at a time from an empty context (no sampling).
Each test runs once to warm up, then R times; the table shows mean ± standard deviation.
With --vs-llama-cpp the same file runs in llama.cpp (through llama-cpp-python, where installed)
with the same threads, the two engines' runs interleaved, and the ratio nibble / llama.cpp.

Examples:
  nibble bench                                   # SmolLM2, pp512 and tg128, 3 runs
  nibble bench -m gemma3-270m -t 2 --vs-llama-cpp
  nibble bench -p 128 -n 32 -r 5 --json
  nibble bench -m gemma3-270m --profile         # time per op and per layer, Python overhead
"""
import json
import os
import statistics
import sys
import time

import numpy as np

import cpu_kernels as K
from runtime import DEFAULT_MODEL, resolve_model
from runtime.model import Model
from runtime.profile import Profile

from .model_args import say_if_compiling

HELP = "measure prompt and generation tokens/s (optionally against llama.cpp)"


def setup_arg_parser(parser):
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model name or path (default: {DEFAULT_MODEL})")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens for pp (0: skip; default 512)")
    parser.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens for tg (0: skip; default 128)")
    parser.add_argument("-r", "--repetitions", type=int, default=3, help="measured runs per test (default: 3)")
    parser.add_argument("--vs-llama-cpp", action="store_true", help="also run llama.cpp on the same file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the speed table: where one pp and one tg run spend their time, per op and "
                             "per layer, with the weights' GB/s next to this machine's read bandwidth")


class NibbleEngine:
    name = "nibble"

    def __init__(self, path, threads, n_ctx, n_batch):
        self.model = Model(path, n_threads=threads)
        self.threads = self.model.n_threads
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.cache = self.model.new_cache(n_ctx, max_batch=n_batch)

    def prompt(self, tokens):
        self.cache.truncate(0)
        self.model.forward(tokens, self.cache)

    def generate(self, tokens):
        self.cache.truncate(0)
        for token in tokens:
            self.model.forward([token], self.cache)


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, path, threads, n_ctx, n_batch):
        from llama_cpp import Llama
        self.threads = threads or os.cpu_count()
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                         n_threads=self.threads, n_threads_batch=self.threads, verbose=False)

    def prompt(self, tokens):
        self.llm.reset()
        self.llm.eval(tokens)

    def generate(self, tokens):
        self.llm.reset()
        for token in tokens:
            self.llm.eval([token])


def _timed(fn, tokens):
    start = time.perf_counter()
    fn(tokens)
    return len(tokens) / (time.perf_counter() - start)


def run_tests(engines, args, n_vocab):
    rng = np.random.default_rng(0)
    tests = [(f"pp{args.n_prompt}", "prompt", args.n_prompt), (f"tg{args.n_gen}", "generate", args.n_gen)]
    results = []
    for test, method, count in tests:
        if count <= 0:
            continue
        tokens = rng.integers(100, n_vocab - 100, count).tolist()
        speeds = {engine.name: [] for engine in engines}
        for engine in engines:                       # warm-up
            getattr(engine, method)(tokens)
        for _ in range(args.repetitions):            # interleaved, so machine noise hits both alike
            for engine in engines:
                speeds[engine.name].append(_timed(getattr(engine, method), tokens))
        for engine in engines:
            values = speeds[engine.name]
            results.append(dict(engine=engine.name, test=test, threads=engine.threads,
                                tokens_per_second=statistics.mean(values),
                                stdev=statistics.stdev(values) if len(values) > 1 else 0.0, runs=values))
    return results


def main(args):
    if args.repetitions < 1:
        raise ValueError("--repetitions must be at least 1")
    if args.threads is not None and args.threads > (os.cpu_count() or 1):
        print(f"nibble: warning: -t {args.threads} is more than the {os.cpu_count()} cores here; "
              f"using {os.cpu_count()}", file=sys.stderr)
        args.threads = os.cpu_count()
    path = resolve_model(args.model)
    n_ctx = max(args.n_prompt, args.n_gen, 1)
    say_if_compiling()
    engines = [NibbleEngine(path, args.threads, n_ctx, max(args.n_prompt, 1))]
    if args.profile:
        return profile(engines[0], args, path)
    if args.vs_llama_cpp:
        try:
            engines.append(LlamaCppEngine(path, engines[0].threads, n_ctx, max(args.n_prompt, 1)))
        except ImportError:
            print("nibble: warning: llama-cpp-python is not installed; measuring nibble alone", file=sys.stderr)
    model = engines[0].model
    results = run_tests(engines, args, model.hp.n_vocab)
    info = dict(model=str(path), size_mb=round(path.stat().st_size / 1e6, 1), architecture=model.arch_name,
                kernel_path=K.isa.KERNEL_PATH.name)
    if args.json:
        print(json.dumps(dict(**info, results=results), indent=1))
        return 0
    print(f"{path.name}  ({info['size_mb']} MB, {model.arch_name}); kernels: {K.isa.KERNEL_PATH.describe}")
    print(f"| {'engine':9s} | {'threads':>7s} | {'test':>6s} | {'t/s':>16s} | {'vs llama.cpp':>12s} |")
    print(f"| {'-' * 9} | {'-' * 6}: | {'-' * 5}: | {'-' * 15}: | {'-' * 11}: |")
    reference = {r["test"]: r["tokens_per_second"] for r in results if r["engine"] == "llama.cpp"}
    for r in results:
        ratio = f"{r['tokens_per_second'] / reference[r['test']]:.2f}x" if r["test"] in reference else ""
        speed = f"{r['tokens_per_second']:.1f} ± {r['stdev']:.1f}"
        print(f"| {r['engine']:9s} | {r['threads']:>7d} | {r['test']:>6s} | {speed:>16s} | {ratio:>12s} |")
    return 0


def profile(engine, args, path):
    """Print where a pp run and a tg run spend their time (after a warm-up of each)."""
    model = engine.model
    rng = np.random.default_rng(0)
    print(f"{path.name}: {engine.threads} threads; measuring this machine's read bandwidth ...", file=sys.stderr)
    bandwidth = K.read_bandwidth()
    print(f"# {path.name}, {engine.threads} threads, read bandwidth {bandwidth:.1f} GB/s")
    for test, n, per in (("pp", args.n_prompt, "call"), ("tg", args.n_gen, "token")):
        if n <= 0:
            continue
        tokens = rng.integers(0, model.hp.n_vocab, n).tolist()
        run = engine.prompt if test == "pp" else engine.generate
        run(tokens)
        recorder = Profile(model)
        with recorder.active():
            run(tokens)
        print(f"\n## {test}{n}: {recorder.tokens / recorder.forward_seconds:.1f} tokens/s while profiled\n")
        print("\n".join(recorder.table(bandwidth if test == "tg" else None, per=per)))
        print("\n" + recorder.layer_line(per))
    return 0
