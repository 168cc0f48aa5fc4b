"""Quantization quality and speed: nibble quantize next to llama-quantize, every type, with and without an
importance matrix, both real models.

    python benchmarks/bench_quantize.py [--models smollm2-135m-instruct gemma3-270m] [--chunks 8] [--types ...]
                                        [--matrix {both,without,with}]

Base: each real model dequantized to F16 by nibble. For every TYPE both tools quantize the base without a
matrix (where llama-quantize allows that) and with llama-imatrix's matrix of the model
(tests/data/imatrix-<model>-llama.cpp.gguf, made from the first 120000 bytes of the shipped text,
benchmarks/data/python-language-reference.txt). The table gives file size, bits per weight, perplexity on the
rest of that text (held out from the matrix; chunks of 512, second halves scored), mean KL divergence from the
base and top-1 agreement with it, for nibble's file and llama-quantize's file side by side (scored by nibble;
when the two files hold the same tensors the numbers are equal), then the time and peak RSS of each tool as a
fresh process (and, of that time, the quantizing itself: a fresh Python process spends about 0.9 s importing
numpy and Numba before nibble's first kernel runs). Rows where the matrix changes nothing (F16, BF16, Q8_0,
the ternary and FP4 types ignore it in llama.cpp) are given without one only.
llama-quantize: $LLAMA_QUANTIZE, or the binary benchmarks/build_llama_cpp.sh builds.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gguf_io import open_gguf
from runtime import resolve_model
from runtime.model import Model
from runtime.perplexity import chunk_log_probs, perplexity
from runtime.quantize import MIXES, NEEDS_IMATRIX, Q2_K_NEEDS_IMATRIX, quantize_file

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from data.make_quantize_cases import tensor_digest  # noqa: E402

TEXT = HERE / "data" / "python-language-reference.txt"
CALIBRATION_BYTES = 120000                       # what the shipped llama-imatrix matrices were made from
MATRICES = HERE.parent / "tests" / "data"
MATRIX_IGNORED = {"F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4_MOE"}
GNU_TIME = "/usr/bin/time"

NIBBLE_QUANTIZE = """
import sys
from cpu_kernels import set_threads
from runtime.imatrix import read_imatrix
from runtime.quantize import quantize_file
source, destination, mix, threads, matrix = sys.argv[1:6]
set_threads(int(threads))
imatrix = dict(imatrix=read_imatrix(matrix), imatrix_path=matrix) if matrix else {}
print(quantize_file(source, destination, mix, **imatrix).seconds)
"""


def llama_quantize_binary():
    if os.environ.get("LLAMA_QUANTIZE"):
        return Path(os.environ["LLAMA_QUANTIZE"])
    out = subprocess.run([str(HERE / "build_llama_cpp.sh"), "native"], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_quantize: building llama.cpp failed:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1]) / "llama-quantize"


def timed_process(command, work_seconds):
    """(wall seconds, the work's own seconds as `work_seconds` reads them from the output, peak RSS in MB) of a
    fresh process. GNU time measures the peak: a child's own rusage would start from this big process's, which
    the fork copies."""
    if not Path(GNU_TIME).exists():
        sys.exit("bench_quantize: needs GNU time for peak memory (apt install time)")
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        out = subprocess.run([GNU_TIME, "-f", "%M", "-o", peak.name, *command], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if out.returncode:
            raise RuntimeError(f"{command[0]} failed:\n{(out.stdout + out.stderr)[-2000:]}")
        return seconds, work_seconds(out.stdout + out.stderr), int(peak.read().split()[-1]) / 1024


def quantize_both(llama_quantize, base, work, mix, threads, matrix):
    ours, theirs = work / f"nibble-{mix}.gguf", work / f"llama.cpp-{mix}.gguf"
    nibble = timed_process([sys.executable, "-c", NIBBLE_QUANTIZE, base, ours, mix, str(threads), str(matrix or "")],
                           lambda out: float(out.strip().splitlines()[-1]))
    with_matrix = ["--imatrix", str(matrix)] if matrix else []
    llama = timed_process([str(llama_quantize), *with_matrix, str(base), str(theirs), mix, str(threads)],
                          lambda out: float(re.search(r"quantize time = +([0-9.]+) ms", out).group(1)) / 1000)
    return ours, theirs, nibble, llama


def quality(path, tokens, base_chunks, n_chunks):
    model = Model(path)
    r = perplexity(model, tokens, 512, base=iter(base_chunks), max_chunks=n_chunks)
    size = os.path.getsize(path)
    n_weights = sum(t.n_elements for t in model.gguf.tensors.values())
    return size, size * 8 / n_weights, r


def needs_matrix(mix):
    return MIXES[mix].default in NEEDS_IMATRIX or mix in Q2_K_NEEDS_IMATRIX


def rows(types, matrix_path, which):
    """(type, matrix or None) in table order: each type without a matrix, then with one."""
    for mix in types:
        if which != "with" and not needs_matrix(mix):
            yield mix, None
        if which != "without" and mix not in MATRIX_IGNORED:
            yield mix, matrix_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--types", nargs="+", default=[m for m in MIXES if m != "F32"])
    parser.add_argument("--matrix", choices=("both", "without", "with"), default="both",
                        help="rows without an importance matrix, with one, or both (default)")
    parser.add_argument("--chunks", type=int, default=8, help="512-token chunks scored per file (default 8)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()
    llama_quantize = llama_quantize_binary()
    text = TEXT.read_bytes()[CALIBRATION_BYTES:].decode("utf-8", errors="ignore")
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.threads} threads; {llama_quantize}; "
          f"text {TEXT.name} after its first {CALIBRATION_BYTES} bytes, {args.chunks} chunks of 512")
    for name in args.models:
        matrix_path = MATRICES / f"imatrix-{name}-llama.cpp.gguf"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = work / "base-f16.gguf"
            quantize_file(resolve_model(name), base, "F16")
            base_model = Model(base)
            tokens = base_model.tokenizer.encode(text, add_special=True, parse_special=False)
            base_chunks = [(t, lp.astype("float32")) for t, lp in chunk_log_probs(base_model, tokens, 512, args.chunks)]
            base_ppl = perplexity(base_model, tokens, 512, max_chunks=args.chunks).ppl
            del base_model
            print(f"\n## {name} (base F16, PPL {base_ppl:.4f}; matrix {matrix_path.name})\n")
            print("| type | matrix | size MB | bpw | PPL nibble / llama-quantize | KLD nibble / llama-quantize | "
                  "top-1 % nibble / llama-quantize | same file | process s nibble / llama-quantize | "
                  "of which quantizing | peak RSS MB nibble / llama-quantize |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for mix, matrix in rows(args.types, matrix_path, args.matrix):
                ours, theirs, (s_ours, w_ours, m_ours), (s_theirs, w_theirs, m_theirs) = \
                    quantize_both(llama_quantize, base, work, mix, args.threads, matrix)
                with open_gguf(ours) as a, open_gguf(theirs) as b:
                    same = tensor_digest(a) == tensor_digest(b)
                size, bpw, q_ours = quality(ours, tokens, base_chunks, args.chunks)
                q_theirs = q_ours if same else quality(theirs, tokens, base_chunks, args.chunks)[2]
                print(f"| {mix} | {'yes' if matrix else 'no'} | {size / 1e6:.1f} | {bpw:.2f} | "
                      f"{q_ours.ppl:.4f} / {q_theirs.ppl:.4f} | "
                      f"{q_ours.kl_mean:.5f} / {q_theirs.kl_mean:.5f} | {100 * q_ours.top1_agreement:.2f} / "
                      f"{100 * q_theirs.top1_agreement:.2f} | {'yes' if same else 'no'} | {s_ours:.2f} / {s_theirs:.2f} | "
                      f"{w_ours:.2f} / {w_theirs:.2f} | "
                      f"{m_ours:.0f} / {m_theirs:.0f} |", flush=True)
                ours.unlink()
                theirs.unlink()


if __name__ == "__main__":
    main()
