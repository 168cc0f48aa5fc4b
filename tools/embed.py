"""Embed texts and write one JSON object per line: {"index": i, "text": ..., "embedding": [...]}.

Texts come from -p (repeatable), from a file with one text per line (-f), or from standard input.
They are pooled as the model file says (all-MiniLM-L6-v2: mean) or as --pooling asks, and
L2-normalized unless --no-normalize.

Examples:
  nibble embed -m all-minilm-l6-v2 -p "A cat sat on the mat." -p "Dogs bark."
  nibble embed -m all-minilm-l6-v2 -f sentences.txt > vectors.jsonl
  nibble embed -m smollm2-135m-instruct --pooling last -f sentences.txt
"""
import json
import sys

from runtime import Llama, resolve_model
from runtime.embedding import POOLING_TYPES

from .model_args import say_if_compiling

HELP = "embed texts (one per line) and write JSON lines"


def setup_arg_parser(parser):
    parser.add_argument("-m", "--model", default="all-minilm-l6-v2",
                        help="a known model name (pulled if missing) or a .gguf path (default: all-minilm-l6-v2)")
    parser.add_argument("-p", "--prompt", action="append", default=[], help="a text to embed (repeatable)")
    parser.add_argument("-f", "--file", help="a file with one text per line ('-': standard input)")
    parser.add_argument("--pooling", choices=[n for n in POOLING_TYPES if n != "unspecified"],
                        help="how a text's token vectors become one (default: what the model file says)")
    parser.add_argument("--no-normalize", action="store_true", help="leave the vectors unnormalized")
    parser.add_argument("-b", "--batch-size", type=int, default=512,
                        help="tokens of texts per forward pass; longer texts are cut (default: 512)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads for the kernels (default: all cores)")


def _texts(args):
    texts = list(args.prompt)
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            texts += [line.rstrip("\n") for line in stream if line.strip()]
    elif not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("nothing to embed: give -p TEXT or -f FILE (one text per line)")
    return texts


def main(args):
    texts = _texts(args)
    path = resolve_model(args.model)
    say_if_compiling()
    llm = Llama(model_path=str(path), embedding=True, n_batch=args.batch_size, n_ctx=args.batch_size, n_threads=args.threads,
                pooling_type=POOLING_TYPES[args.pooling or "unspecified"], verbose=False)
    if llm.pooling_type() == 0 and args.pooling is None:
        raise ValueError(f"{path.name} names no pooling; choose one with --pooling mean|cls|last (or none for "
                         "a vector per token)")
    for start in range(0, len(texts), 256):
        chunk = texts[start:start + 256]
        for offset, vector in enumerate(llm.embed(chunk, normalize=not args.no_normalize)):
            print(json.dumps({"index": start + offset, "text": chunk[offset], "embedding": vector}))
    return 0
