"""Generate text from a prompt once and print it as it comes.

The prompt is continued as written; --chat sends it as a user message through the model's chat
template instead.

--grammar, --grammar-file and --json-schema constrain the text (llama.cpp's GBNF, or a JSON schema).

Examples:
  nibble run -p "The capital of France is" -n 16 --temp 0
  nibble run -m gemma3-270m --chat -p "Write a haiku about autumn."
  nibble run --chat -p "Describe a cat." -j '{"type": "object", "properties": {"name": {"type": "string"}}}'
"""
import sys
from pathlib import Path

from runtime.grammar import Grammar

from .model_args import add_model_arguments, load, sampling_options

HELP = "generate a completion for one prompt"


def setup_arg_parser(parser):
    add_model_arguments(parser, {"temp": 0.8})
    parser.add_argument("-p", "--prompt", required=True, help="the prompt text ('-' reads standard input)")
    parser.add_argument("-n", "--n-predict", type=int, default=128,
                        help="tokens to generate; -1: until the model stops or the context is full (default: 128)")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a chat message")
    constraint = parser.add_mutually_exclusive_group()
    constraint.add_argument("--grammar", metavar="GBNF", help="a GBNF grammar (llama.cpp's format) the text must follow")
    constraint.add_argument("--grammar-file", metavar="FILE", help="read the GBNF grammar from FILE")
    constraint.add_argument("-j", "--json-schema", metavar="SCHEMA", help="a JSON schema the text must follow")
    constraint.add_argument("--json-schema-file", metavar="FILE", help="read the JSON schema from FILE")


def grammar_of(args):
    """The grammar the options ask for, or None."""
    if args.grammar is not None or args.grammar_file:
        return Grammar.from_gbnf(args.grammar if args.grammar is not None else _read(args.grammar_file, "--grammar-file"))
    if args.json_schema is not None or args.json_schema_file:
        return Grammar.from_json_schema(args.json_schema if args.json_schema is not None else
                                        _read(args.json_schema_file, "--json-schema-file"))
    return None


def _read(path, option):
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read {option} {path}: {error.strerror or error}") from None


def main(args):
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    grammar = grammar_of(args)          # a bad grammar fails before the model loads
    llm = load(args)
    options = dict(max_tokens=args.n_predict, stream=True, grammar=grammar, **sampling_options(args))
    if args.chat:
        chunks = llm.create_chat_completion([{"role": "user", "content": prompt}], **options)
        texts = (c["choices"][0]["delta"].get("content", "") for c in chunks)
    else:
        chunks = llm.create_completion(prompt, **options)
        texts = (c["choices"][0]["text"] for c in chunks)
    for text in texts:
        print(text, end="", flush=True)
    print()
    return 0
