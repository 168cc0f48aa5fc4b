"""Options shared by the commands that load a model (chat, run, bench, perplexity), and loading it with one
clear error."""
import sys

import cpu_kernels
from runtime import DEFAULT_MODEL, Llama, resolve_model


def say_if_compiling():
    """One line on a first run, when loading compiles the kernels for this CPU (instead of silence)."""
    if not cpu_kernels.kernels_compiled():
        print("nibble: compiling kernels for this CPU (first run only; up to two minutes) ...", file=sys.stderr,
              flush=True)


def add_model_arguments(parser, sampling_defaults):
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL,
                        help=f"a known model name (pulled if missing) or a .gguf path (default: {DEFAULT_MODEL})")
    parser.add_argument("-t", "--threads", type=int, default=None,
                        help="threads for the kernels (default: all cores)")
    parser.add_argument("-c", "--ctx-size", type=int, default=2048, help="context window in tokens (default: 2048)")
    parser.add_argument("--temp", type=float, default=sampling_defaults["temp"],
                        help=f"temperature; 0 picks the most likely token (default: {sampling_defaults['temp']})")
    parser.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0: all (default: 40)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold (default: 0.95)")
    parser.add_argument("--min-p", type=float, default=0.05,
                        help="drop tokens below this fraction of the best one's probability (default: 0.05)")
    parser.add_argument("--repeat-penalty", type=float, default=1.0, help="penalize recent tokens (default: 1.0)")
    parser.add_argument("--seed", type=int, default=None, help="random seed; the same seed gives the same text")


def load(args):
    path = resolve_model(args.model)
    say_if_compiling()
    return Llama(model_path=str(path), n_ctx=args.ctx_size, n_threads=args.threads, verbose=False)


def sampling_options(args):
    return dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repeat_penalty=args.repeat_penalty, seed=args.seed)
