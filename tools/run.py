"""Generate text from a prompt once and print it as it comes.

The prompt is continued as written; --chat sends it as a user message through the model's chat
template instead.

Examples:
  nibble run -p "The capital of France is" -n 16 --temp 0
  nibble run -m gemma3-270m --chat -p "Write a haiku about autumn."
"""
import sys

from .model_args import add_model_arguments, load, sampling_options

HELP = "generate a completion for one prompt"


def setup_arg_parser(parser):
    add_model_arguments(parser, {"temp": 0.8})
    parser.add_argument("-p", "--prompt", required=True, help="the prompt text ('-' reads standard input)")
    parser.add_argument("-n", "--n-predict", type=int, default=128,
                        help="tokens to generate; -1: until the model stops or the context is full (default: 128)")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a chat message")


def main(args):
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    llm = load(args)
    options = dict(max_tokens=args.n_predict, stream=True, **sampling_options(args))
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
