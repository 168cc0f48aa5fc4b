"""The README's end-to-end speed table: nibble next to llama.cpp on the same files, same threads, same run.

    python benchmarks/bench_end_to_end.py [-t 2] [-r 3] [--quick] [--shaped | --only-shaped]

Files: SmolLM2-135M-Instruct as packaged (Q4_1), requantized by `nibble quantize` (llama-quantize's mixes,
the same bytes) to Q4_0, Q8_0, Q4_K_M, Q6_K and F16, and Gemma 3 270M Q4_K_M. With --shaped, also files with the
dimensions of Llama-3.2-1B in eight mixes and Llama-3.1-8B in Q4_K_M (random weights, written by
make_shaped_model.py into --shaped-dir on first use; pp64/tg16 on 8B). Columns: pp and tg tokens/s (runs
interleaved), the weights streamed per generated token in GB/s next to the read bandwidth measured at the start
of the run, load-to-first-token in a fresh process with a warm JIT cache, and peak RSS of that process.
Needs llama-cpp-python for the llama.cpp columns.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cpu_kernels
from gguf_io import open_gguf
from make_shaped_model import write_shaped_model
from runtime import resolve_model
from runtime.quantize import quantize_file
from runtime.registry import cache_dir
from tools import bench

SHAPED_1B_MIXES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "IQ4_XS", "Q3_K_M", "Q2_K")

def requantized(source, mix):
    """SmolLM2 quantized by `nibble quantize` to a llama.cpp mix (cached next to the models)."""
    out = cache_dir() / f"{source.stem}-{mix}.gguf"
    if not out.exists():
        quantize_file(source, out, mix)
    return out


def shaped(directory, shape, mix):
    """A file with a popular model's dimensions and random weights (make_shaped_model.py), made once."""
    out = Path(directory) / f"{shape}-{mix.lower()}.gguf"
    if not out.exists():
        print(f"writing {out} ...", file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_shaped_model(shape, mix, out)
    return out


def streamed_bytes(path):
    """Weight bytes one generated token reads: every tensor, except an embedding table that only gives rows."""
    with open_gguf(path) as gf:
        total = sum(t.nbytes for t in gf.tensors.values())
        if "output.weight" in gf.tensors:
            total -= gf.tensors["token_embd.weight"].nbytes
    return total


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
    parser.add_argument("--shaped", action="store_true", help="add the 1B- and 8B-shaped files")
    parser.add_argument("--only-shaped", action="store_true", help="only the 1B- and 8B-shaped files")
    parser.add_argument("--shaped-dir", type=Path, default=cache_dir() / "shaped",
                        help="where the shaped files are kept (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    n_prompt, n_gen, reps = (128, 32, 1) if args.quick else (512, 128, args.repetitions)
    files = []
    if not args.only_shaped:
        smollm = resolve_model("smollm2-135m-instruct")
        files.append(("SmolLM2-135M Q4_1 (packaged)", smollm, n_prompt, n_gen))
        files += [(f"SmolLM2-135M {mix}", requantized(smollm, mix), n_prompt, n_gen)
                  for mix in ("Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "F16")]
        files.append(("Gemma 3 270M Q4_K_M", resolve_model("gemma3-270m"), n_prompt, n_gen))
    if args.shaped or args.only_shaped:
        files += [(f"Llama-3.2-1B-shaped {mix}", shaped(args.shaped_dir, "llama-3.2-1b", mix), n_prompt, n_gen)
                  for mix in SHAPED_1B_MIXES]
        files.append(("Llama-3.1-8B-shaped Q4_K_M", shaped(args.shaped_dir, "llama-3.1-8b", "Q4_K_M"),
                      min(n_prompt, 64), min(n_gen, 16)))
    bandwidth = cpu_kernels.read_bandwidth()
    rows = []
    header = ("| file | MB | pp nibble | llama.cpp | ratio | tg nibble | llama.cpp | ratio | weights GB/s nibble "
              "| llama.cpp | first token nibble | llama.cpp | peak RSS nibble | llama.cpp |")
    print(f"read bandwidth at the start of the run: {bandwidth:.1f} GB/s\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for label, path, pp_count, tg_count in files:
        engines = [bench.NibbleEngine(path, args.threads, max(pp_count, tg_count), pp_count),
                   bench.LlamaCppEngine(path, args.threads, max(pp_count, tg_count), pp_count)]
        options = argparse.Namespace(n_prompt=pp_count, n_gen=tg_count, repetitions=reps)
        results = {(r["engine"], r["test"][:2]): r["tokens_per_second"]
                   for r in bench.run_tests(engines, options, engines[0].model.hp.n_vocab)}
        del engines
        ours_ftt, ours_rss = first_token("nibble", path, args.threads)
        theirs_ftt, theirs_rss = first_token("llama.cpp", path, args.threads)
        per_token = streamed_bytes(path) / 1e9
        row = dict(file=label, mb=path.stat().st_size / 1e6, pp=pp_count, tg=tg_count, bandwidth=bandwidth,
                   **{f"{e}_{t}": v for (e, t), v in results.items()},
                   nibble_first_token=ours_ftt, llama_first_token=theirs_ftt, nibble_rss=ours_rss, llama_rss=theirs_rss)
        rows.append(row)
        pp = (results["nibble", "pp"], results["llama.cpp", "pp"])
        tg = (results["nibble", "tg"], results["llama.cpp", "tg"])
        print(f"| {label} (pp{pp_count}, tg{tg_count}) | {row['mb']:.0f} | {pp[0]:.1f} | {pp[1]:.1f} | "
              f"{pp[0] / pp[1]:.2f} | {tg[0]:.1f} | {tg[1]:.1f} | {tg[0] / tg[1]:.2f} | "
              f"{per_token * tg[0]:.1f} ({100 * per_token * tg[0] / bandwidth:.0f}%) | "
              f"{per_token * tg[1]:.1f} ({100 * per_token * tg[1] / bandwidth:.0f}%) | {ours_ftt:.2f} s | "
              f"{theirs_ftt:.2f} s | {ours_rss:.0f} MB | {theirs_rss:.0f} MB |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{time.strftime('%Y-%m-%d')}, {args.threads} threads; ratios are nibble / llama.cpp; weights GB/s = bytes "
          f"of weights one token reads x tokens/s (% of the {bandwidth:.1f} GB/s read bandwidth).")


if __name__ == "__main__":
    main()
