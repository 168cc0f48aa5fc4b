"""Perplexity of a model over a text file, as llama-perplexity computes it.

The text is cut into chunks of -c tokens; each chunk scores its second half. With
--kl-divergence-base BASE.gguf the base model runs on the same tokens and the mean KL
divergence KL(base || model) over the whole vocabulary and the top-1 agreement are printed
(the usual check of a quantized file against its F16 original).

A text ships with nibble: benchmarks/data/python-language-reference.txt.

Example: nibble perplexity -m model-q4_k_m.gguf -f benchmarks/data/python-language-reference.txt \\
             --kl-divergence-base model-f16.gguf"""
import sys
from pathlib import Path

from runtime import resolve_model
from runtime.model import Model
from runtime.perplexity import perplexity

from .model_args import say_if_compiling

HELP = "perplexity (and KL divergence from a base model) over a text, like llama-perplexity"


def setup_arg_parser(parser):
    parser.add_argument("-m", "--model", required=True, help="a .gguf path or a known model name")
    parser.add_argument("-f", "--file", required=True, help="a UTF-8 text file")
    parser.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk (default: 512)")
    parser.add_argument("--chunks", type=int, default=None, help="score at most this many chunks (default: all)")
    parser.add_argument("--kl-divergence-base", metavar="BASE", default=None,
                        help="also compare with this model (same vocabulary): mean KL divergence and top-1 agreement")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")


def main(args):
    path = Path(args.file)
    if not path.is_file():
        raise ValueError(f"{path}: no such text file")
    text = path.read_text(encoding="utf-8")
    model_path = resolve_model(args.model)
    say_if_compiling()
    model = Model(model_path, n_threads=args.threads)
    base = Model(resolve_model(args.kl_divergence_base), n_threads=args.threads) if args.kl_divergence_base else None
    tokens = model.tokenizer.encode(text, add_special=True, parse_special=False)
    print(f"{path.name}: {len(tokens)} tokens, {len(tokens) // args.ctx_size} chunks of {args.ctx_size}",
          file=sys.stderr)

    def show(done, total, result):
        print(f"[{done}]{result.chunk_ppl[-1]:.4f},", end="\n" if done == total else "", flush=True)

    r = perplexity(model, tokens, args.ctx_size, base=base, max_chunks=args.chunks, progress=show)
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_stderr:.5f}  ({len(r.nll)} tokens scored, {r.seconds:.1f} s)")
    if base is not None:
        print(f"Mean KLD: {r.kl_mean:.6f} +/- {r.kl_stderr:.6f}")
        print(f"Same top p: {100 * r.top1_agreement:.3f} %")
    return 0
