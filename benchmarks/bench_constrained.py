"""Constrained decoding: what a JSON-schema constraint costs per token, next to the decode step, for the
libraries nibble could use (llguidance, xgrammar, outlines-core).

    python benchmarks/bench_constrained.py [-m smollm2-135m-instruct gemma3-270m] [-t 2] [--max-tokens 256]

For each model, nibble answers every schema of tests/data/json-schemas.json under llguidance (greedy, the
schema in the prompt) and records the tokens and the time per token of decoding and of the constraint. Then
each library replays those same tokens: compile the schema (as nibble rewrites it, grammar.bounded_schema),
and per token compute the mask, apply it to a logits row, accept the token. A library that fails to compile
a schema, or refuses a token llguidance allowed, is counted under "failed"/"refused". Each library's per-
token cost is shown as a share of the model's decode time per token measured in the same run.
Needs xgrammar and outlines-core for their rows (pip install xgrammar outlines-core); either may be absent.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from runtime import Llama, resolve_model
from runtime.grammar import Grammar, bounded_schema

SCHEMAS = Path(__file__).parents[1] / "tests" / "data" / "json-schemas.json"


def unpack_mask(bits, n):
    return np.unpackbits(bits.view(np.uint8), bitorder="little", count=n).view(bool)


class TimedGrammar(Grammar):
    """A Grammar whose constraint counts the seconds spent masking and accepting."""

    def __init__(self, grammar, clock, tokens):
        self.definition, self.source, self.clock, self.tokens = grammar.definition, grammar.source, clock, tokens

    def constraint(self, tokenizer, n_logits):
        inner = super().constraint(tokenizer, n_logits)
        clock, tokens = self.clock, self.tokens

        class Timed:
            def mask(self, logits):
                start = time.perf_counter()
                out = inner.mask(logits)
                clock.append(time.perf_counter() - start)
                return out

            def accept(self, token):
                start = time.perf_counter()
                inner.accept(token)
                clock[-1] += time.perf_counter() - start
                tokens.append(int(token))
        return Timed()


def record(llm, cases, max_tokens):
    """nibble's answers under llguidance: per case the tokens, the seconds per token of the whole step and of
    the constraint alone."""
    runs = []
    for case in cases:
        clock, tokens = [], []
        grammar = TimedGrammar(Grammar.from_json_schema(case["schema"]), clock, tokens)
        prompt = f"{case['prompt']} Answer in JSON with this schema: {json.dumps(case['schema'])}"
        start = time.perf_counter()
        reply = llm.create_chat_completion([{"role": "user", "content": prompt}], grammar=grammar,
                                           temperature=0, max_tokens=max_tokens)
        elapsed = time.perf_counter() - start
        runs.append({"name": case["name"], "schema": bounded_schema(case["schema"]), "tokens": tokens,
                     "constraint": sum(clock), "steps": len(clock), "seconds": elapsed,
                     "finish": reply["choices"][0]["finish_reason"], "text": reply["choices"][0]["message"]["content"]})
    return runs


class Llguidance:
    name = "llguidance"

    def __init__(self, llm):
        from runtime.grammar import _vocabularies, _vocabulary
        self.tokenizer, self.n = llm.tokenizer_, llm.n_vocab()
        _vocabularies.clear()
        start = time.perf_counter()
        _vocabulary(self.tokenizer, self.n)
        self.setup = time.perf_counter() - start

    def compile(self, schema):
        constraint = Grammar.from_json_schema(schema).constraint(self.tokenizer, self.n)
        return constraint

    def step(self, constraint, logits, token):
        constraint.mask(logits)
        constraint.accept(token)
        return True


class Xgrammar:
    name = "xgrammar"

    def __init__(self, llm):
        import xgrammar
        self.xgr, self.n = xgrammar, llm.n_vocab()
        tokenizer = llm.tokenizer_
        start = time.perf_counter()
        vocab = [tokenizer.token_bytes(i) for i in range(self.n)]     # control tokens are b"": special
        info = xgrammar.TokenizerInfo(vocab, xgrammar.VocabType.RAW, vocab_size=self.n,
                                      stop_token_ids=sorted(tokenizer.eog_ids))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        self.setup = time.perf_counter() - start
        self.bits = np.zeros((self.n + 31) // 32, np.int32)

    def compile(self, schema):
        return self.xgr.GrammarMatcher(self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=True))

    def step(self, matcher, logits, token):
        matcher.fill_next_token_bitmask(self.bits[None, :])
        logits[~unpack_mask(self.bits, self.n)] = -np.inf
        return matcher.accept_token(int(token))


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, llm):
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema
        self.oc, self.regex_of, self.n = outlines_core, build_regex_from_schema, llm.n_vocab()
        self.tokenizer = tokenizer = llm.tokenizer_
        start = time.perf_counter()
        by_bytes = {}
        for i in range(self.n):
            piece = tokenizer.token_bytes(i)
            if piece and not tokenizer.is_eog(i):
                by_bytes.setdefault(piece, []).append(i)
        self.eos = tokenizer.eot_id if tokenizer.eot_id is not None else tokenizer.eos_id
        self.vocabulary = outlines_core.Vocabulary(self.eos, by_bytes)
        self.setup = time.perf_counter() - start
        self.bits = np.zeros((self.n + 31) // 32, np.int32)

    def compile(self, schema):
        regex = self.regex_of(json.dumps(schema), r"(?: |\n{1,2}[ \t]{0,20})?")
        return self.oc.Guide(self.oc.Index(regex, self.vocabulary))

    def step(self, guide, logits, token):
        guide.write_mask_into(self.bits.ctypes.data, self.bits.size, 4)
        logits[~unpack_mask(self.bits, self.n)] = -np.inf
        if self.tokenizer.is_eog(token):      # the end: allowed by the mask, and outlines-core has no move for it
            return bool(unpack_mask(self.bits, self.n)[self.eos])
        guide.advance(int(token), return_tokens=False)
        return True


def replay(library, runs, n_vocab):
    """Compile seconds per schema, seconds per token, and how many schemas failed to compile or refused."""
    compile_times, step_times, failed, refused = [], [], [], []
    logits = np.zeros(n_vocab, np.float32)
    for run in runs:
        try:
            start = time.perf_counter()
            state = library.compile(run["schema"])
            compile_times.append(time.perf_counter() - start)
        except Exception as error:      # a library's own exceptions for what it cannot compile
            failed.append(f"{run['name']} ({type(error).__name__})")
            continue
        for token in run["tokens"]:
            logits[:] = 0
            start = time.perf_counter()
            try:
                ok = library.step(state, logits, token)
            except Exception:
                ok = False
            step_times.append(time.perf_counter() - start)
            if not ok:
                refused.append(run["name"])
                break
    return compile_times, step_times, failed, refused


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    cases = json.loads(SCHEMAS.read_text())["schemas"]
    print(f"# constrained decoding, {len(cases)} JSON schemas, {time.strftime('%Y-%m-%d')}, {args.threads} threads\n")
    for model in args.models:
        llm = Llama(str(resolve_model(model)), n_ctx=2048, n_threads=args.threads, verbose=False)
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4)    # compile kernels
        runs = record(llm, cases, args.max_tokens)
        steps = sum(r["steps"] for r in runs)
        decode = (sum(r["seconds"] for r in runs) - sum(r["constraint"] for r in runs)) / steps
        finished = sum(r["finish"] == "stop" for r in runs)
        print(f"## {model}: vocabulary {llm.n_vocab()}, {steps} tokens, decode {decode * 1e3:.2f} ms/token "
              f"without the constraint; {finished}/{len(runs)} answers finished\n")
        print("| library | vocabulary setup s | compile ms (mean / max) | constraint us/token (mean / p95) "
              "| share of decode | schemas failed | tokens refused |")
        print("|---|---|---|---|---|---|---|")
        for kind in (Llguidance, Xgrammar, OutlinesCore):
            try:
                library = kind(llm)
            except ImportError:
                print(f"| {kind.name} | not installed | | | | | |")
                continue
            compile_times, step_times, failed, refused = replay(library, runs, llm.n_vocab())
            mean = statistics.fmean(step_times) if step_times else float("nan")
            p95 = float(np.percentile(step_times, 95)) if step_times else float("nan")
            print(f"| {kind.name} | {library.setup:.2f} | {statistics.fmean(compile_times) * 1e3:.1f} / "
                  f"{max(compile_times) * 1e3:.1f} | {mean * 1e6:.0f} / {p95 * 1e6:.0f} | {mean / decode:.1%} | "
                  f"{len(failed)} {', '.join(failed)} | {len(set(refused))} {', '.join(sorted(set(refused)))} |")
        print()
        llm.close()


if __name__ == "__main__":
    main()
