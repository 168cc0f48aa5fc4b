"""The README's end-to-end speed table: nibble next to llama.cpp on the same files, same threads, same run.

    python benchmarks/bench_end_to_end.py [-t 2] [-r 3] [--quick]

Files: SmolLM2-135M-Instruct as packaged (Q4_1), requantized by `nibble quantize` (llama-quantize's mixes,
the same bytes) to Q4_0, Q8_0, Q4_K_M, Q6_K and F16, and Gemma 3 270M Q4_K_M. Columns: pp512 and tg128 tokens/s (runs
interleaved), load-to-first-token in a fresh process with a warm JIT cache, and peak RSS of that process.
Needs llama-cpp-python for the llama.cpp columns.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from runtime import resolve_model
from runtime.quantize import quantize_file
from runtime.registry import cache_dir
from tools import bench

def requantized(source, mix):
    """SmolLM2 quantized by `nibble quantize` to a llama.cpp mix (cached next to the models)."""
    out = cache_dir() / f"{source.stem}-{mix}.gguf"
    if not out.exists():
        quantize_file(source, out, mix)
    return out


FIRST_TOKEN = r"""
import sys, time
start = time.perf_counter()
engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if engine == "nibble":
    from runtime import Llama
else:
    from llama_cpp import Llama
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, verbose=False)
llm("Hello", max_tokens=1, temperature=0)
seconds = time.perf_counter() - start
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(seconds, int(peak.split()[1]) / 1024)
"""


def first_token(engine, path, threads):
    """Seconds from process start (imports included) to the first generated token, and peak RSS in MB."""
    result = subprocess.run([sys.executable, "-c", FIRST_TOKEN, engine, str(path), str(threads)],
                            capture_output=True, text=True, check=True)
    seconds, rss = result.stdout.split()[-2:]
    return float(seconds), float(rss)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="pp128/tg32, one repetition")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    n_prompt, n_gen, reps = (128, 32, 1) if args.quick else (512, 128, args.repetitions)
    smollm = resolve_model("smollm2-135m-instruct")
    files = [("SmolLM2-135M Q4_1 (packaged)", smollm)]
    files += [(f"SmolLM2-135M {mix}", requantized(smollm, mix)) for mix in ("Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "F16")]
    files.append(("Gemma 3 270M Q4_K_M", resolve_model("gemma3-270m")))
    options = argparse.Namespace(n_prompt=n_prompt, n_gen=n_gen, repetitions=reps)
    rows = []
    header = (f"| file | MB | pp{n_prompt} nibble | llama.cpp | ratio | tg{n_gen} nibble | llama.cpp | ratio "
              f"| first token nibble | llama.cpp | peak RSS nibble | llama.cpp |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, path in files:
        engines = [bench.NibbleEngine(path, args.threads, max(n_prompt, n_gen), n_prompt),
                   bench.LlamaCppEngine(path, args.threads, max(n_prompt, n_gen), n_prompt)]
        results = {(r["engine"], r["test"][:2]): r["tokens_per_second"]
                   for r in bench.run_tests(engines, options, engines[0].model.hp.n_vocab)}
        del engines
        ours_ftt, ours_rss = first_token("nibble", path, args.threads)
        theirs_ftt, theirs_rss = first_token("llama.cpp", path, args.threads)
        row = dict(file=label, mb=path.stat().st_size / 1e6, **{f"{e}_{t}": v for (e, t), v in results.items()},
                   nibble_first_token=ours_ftt, llama_first_token=theirs_ftt, nibble_rss=ours_rss, llama_rss=theirs_rss)
        rows.append(row)
        pp = (results["nibble", "pp"], results["llama.cpp", "pp"])
        tg = (results["nibble", "tg"], results["llama.cpp", "tg"])
        print(f"| {label} | {row['mb']:.0f} | {pp[0]:.0f} | {pp[1]:.0f} | {pp[0] / pp[1]:.2f} | {tg[0]:.1f} | "
              f"{tg[1]:.1f} | {tg[0] / tg[1]:.2f} | {ours_ftt:.2f} s | {theirs_ftt:.2f} s | {ours_rss:.0f} MB | "
              f"{theirs_rss:.0f} MB |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{time.strftime('%Y-%m-%d')}, {args.threads} threads; ratios are nibble / llama.cpp.")


if __name__ == "__main__":
    main()
