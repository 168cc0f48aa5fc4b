"""Quantization quality and speed: nibble quantize next to llama-quantize, every type, both real models.

    python benchmarks/bench_quantize.py [--models smollm2-135m-instruct gemma3-270m] [--chunks 8] [--types ...]

Base: each real model dequantized to F16 by nibble. For every TYPE both tools quantize the base;
the table gives file size, bits per weight, perplexity on the shipped text
(benchmarks/data/python-language-reference.txt, chunks of 512, second halves scored), mean KL
divergence from the base and top-1 agreement with it, for nibble's file and llama-quantize's file
side by side (scored by nibble; when the two files hold the same tensors the numbers are equal),
then the time and peak RSS of each tool as a fresh process on the same machine (and, of that time,
the quantizing itself: a fresh Python process spends about 0.9 s importing numpy and Numba and
initializing Numba's code loader before nibble's first kernel runs).
Needs llama-cpp-python (llama-quantize is reached through its C API).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gguf_io import open_gguf
from runtime import resolve_model
from runtime.model import Model
from runtime.perplexity import chunk_log_probs, perplexity
from runtime.quantize import MIXES, quantize_file

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from data.make_quantize_cases import tensor_digest  # noqa: E402

TEXT = Path(__file__).parent / "data" / "python-language-reference.txt"

LLAMA_QUANTIZE = r"""
import ctypes, sys, time, llama_cpp, gguf
src, dst, mix = sys.argv[1:4]
p = llama_cpp.llama_model_quantize_default_params()
p.nthread = int(sys.argv[4])
p.ftype = int(gguf.LlamaFileType.ALL_F32 if mix == "F32" else gguf.LlamaFileType["MOSTLY_" + mix])
start = time.perf_counter()
if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)):
    sys.exit(1)
print(time.perf_counter() - start)
""" + "\n"

NIBBLE_QUANTIZE = """
import sys
from runtime.quantize import quantize_file
from cpu_kernels import set_threads
set_threads(int(sys.argv[4]))
print(quantize_file(*sys.argv[1:4]).seconds)
"""

PEAK_RSS = """
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print(int(line.split()[1]) / 1024)
"""


def timed_process(script, *args):
    """(wall seconds, seconds the script reports for the work itself, peak RSS in MB: the process's own VmHWM)
    of a fresh Python process running `script`."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script + PEAK_RSS, *map(str, args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    work, peak = out.stdout.split()[-2:]
    return seconds, float(work), float(peak)


def quantize_both(base, work, mix, threads):
    ours, theirs = work / f"nibble-{mix}.gguf", work / f"llama.cpp-{mix}.gguf"
    return (ours, theirs, timed_process(NIBBLE_QUANTIZE, base, ours, mix, threads),
            timed_process(LLAMA_QUANTIZE, base, theirs, mix, threads))


def quality(path, tokens, base_chunks, n_chunks):
    model = Model(path)
    r = perplexity(model, tokens, 512, base=iter(base_chunks), max_chunks=n_chunks)
    size = os.path.getsize(path)
    n_weights = sum(t.n_elements for t in model.gguf.tensors.values())
    return size, size * 8 / n_weights, r


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--types", nargs="+", default=[m for m in MIXES if m != "F32"])
    parser.add_argument("--chunks", type=int, default=8, help="512-token chunks scored per file (default 8)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()
    text = TEXT.read_text(encoding="utf-8")
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.threads} threads; text {TEXT.name}, "
          f"{args.chunks} chunks of 512")
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = work / "base-f16.gguf"
            quantize_file(resolve_model(name), base, "F16")
            base_model = Model(base)
            tokens = base_model.tokenizer.encode(text, add_special=True, parse_special=False)
            base_chunks = [(t, lp.astype("float32")) for t, lp in chunk_log_probs(base_model, tokens, 512, args.chunks)]
            base_ppl = perplexity(base_model, tokens, 512, max_chunks=args.chunks).ppl
            del base_model
            print(f"\n## {name} (base F16, PPL {base_ppl:.4f})\n")
            print("| type | size MB | bpw | PPL nibble / llama-quantize | KLD nibble / llama-quantize | "
                  "top-1 % nibble / llama-quantize | same file | process s nibble / llama-quantize | "
                  "of which quantizing | "
                  "peak RSS MB nibble / llama-quantize |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for mix in args.types:
                ours, theirs, (s_ours, w_ours, m_ours), (s_theirs, w_theirs, m_theirs) = \
                    quantize_both(base, work, mix, args.threads)
                with open_gguf(ours) as a, open_gguf(theirs) as b:
                    same = tensor_digest(a) == tensor_digest(b)
                size, bpw, q_ours = quality(ours, tokens, base_chunks, args.chunks)
                q_theirs = q_ours if same else quality(theirs, tokens, base_chunks, args.chunks)[2]
                print(f"| {mix} | {size / 1e6:.1f} | {bpw:.2f} | {q_ours.ppl:.4f} / {q_theirs.ppl:.4f} | "
                      f"{q_ours.kl_mean:.5f} / {q_theirs.kl_mean:.5f} | {100 * q_ours.top1_agreement:.2f} / "
                      f"{100 * q_theirs.top1_agreement:.2f} | {'yes' if same else 'no'} | {s_ours:.2f} / {s_theirs:.2f} | "
                      f"{w_ours:.2f} / {w_theirs:.2f} | "
                      f"{m_ours:.0f} / {m_theirs:.0f} |", flush=True)
                ours.unlink()
                theirs.unlink()


if __name__ == "__main__":
    main()
