"""Compute an importance matrix over a text, as llama-imatrix does.

For every weight matrix of the layers: the sum of each input activation squared over the text's
tokens, and the token count. llama-quantize --imatrix uses it to weight the rounding error of each
column; the very-low-bit types (IQ1, IQ2, IQ3_XXS, Q2_K_S) need one. The text is cut into chunks of
-c tokens as llama-perplexity cuts it, and the perplexity of each chunk is printed on the way.
The file is llama-imatrix's GGUF format; it appears only when complete.

A text ships with nibble: benchmarks/data/python-language-reference.txt.

Example: nibble imatrix -m model-f16.gguf -f benchmarks/data/python-language-reference.txt \\
             -o model.imatrix.gguf --chunks 32"""
import sys
import time
from pathlib import Path

from tqdm import tqdm

from runtime import resolve_model
from runtime.imatrix import compute_imatrix, write_imatrix
from runtime.model import Model

from .model_args import say_if_compiling

HELP = "importance matrix over a text for quantization, like llama-imatrix"


def setup_arg_parser(parser):
    parser.add_argument("-m", "--model", required=True, help="a .gguf path or a known model name (F16 is best)")
    parser.add_argument("-f", "--file", required=True, help="a UTF-8 text file (calibration text)")
    parser.add_argument("-o", "--output", required=True, help="the importance matrix file to write (.gguf)")
    parser.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk (default: 512)")
    parser.add_argument("--chunks", type=int, default=None, help="use at most this many chunks (default: all)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")


def main(args):
    path = Path(args.file)
    if not path.is_file():
        raise ValueError(f"{path}: no such text file")
    if args.ctx_size < 16:
        raise ValueError(f"-c {args.ctx_size} is too small: llama-imatrix counts products over 16 tokens or more")
    text = path.read_text(encoding="utf-8")
    model_path = resolve_model(args.model)
    say_if_compiling()
    model = Model(model_path, n_threads=args.threads)
    tokens = model.tokenizer.encode(text, add_special=True, parse_special=False)
    n_chunks = len(tokens) // args.ctx_size if args.chunks is None else min(args.chunks, len(tokens) // args.ctx_size)
    print(f"{path.name}: {len(tokens)} tokens; {n_chunks} chunks of {args.ctx_size}", file=sys.stderr)
    final, start = [], time.perf_counter()
    with tqdm(total=n_chunks, unit="chunk", desc="importance matrix", leave=False, disable=None) as bar:
        def show(done, total, ppl):
            bar.update(1)
            bar.set_postfix(ppl=f"{ppl:.4f}")
            final[:] = [ppl]
        matrix = compute_imatrix(model, tokens, args.ctx_size, max_chunks=args.chunks, dataset=str(args.file),
                                 progress=show)
    seconds = time.perf_counter() - start
    write_imatrix(args.output, matrix)
    n_tokens = matrix.chunk_count * matrix.chunk_size
    print(f"Final estimate: PPL = {final[0]:.4f}")
    print(f"{len(matrix.entries)} tensors over {matrix.chunk_count} chunks ({n_tokens} tokens, "
          f"{n_tokens / max(seconds, 1e-9):.0f} tokens/s) -> {args.output}")
    return 0
