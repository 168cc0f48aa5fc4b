"""Chat with a model in the terminal: replies stream as they are generated.

The conversation stays in the model's KV cache between turns, so a new turn only reads the new message.
Commands: /reset starts over (keeping the system prompt), /exit quits (so does Ctrl-D).
Ctrl-C stops the reply being written, not the program.

Examples:
  nibble chat                                  # SmolLM2-135M-Instruct, installed on first use
  nibble chat -m gemma3-270m -s "Answer in French."
  nibble chat -m path/to/model.gguf -c 4096 --temp 0.2
"""
import sys
import time

from runtime import ContextFullError

from .model_args import add_model_arguments, load, sampling_options

HELP = "chat with a model (default: SmolLM2-135M-Instruct)"


def setup_arg_parser(parser):
    add_model_arguments(parser, {"temp": 0.7})
    parser.add_argument("-s", "--system", default=None, help="a system prompt for the conversation")
    parser.add_argument("-n", "--max-tokens", type=int, default=-1,
                        help="longest reply in tokens; -1: until the model stops or the context is full")
    parser.add_argument("--stats", action="store_true", help="print tokens/s after each reply")


def main(args):
    started = time.perf_counter()
    llm = load(args)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"nibble chat: {args.model} loaded in {time.perf_counter() - started:.1f} s "
              f"(context {llm.n_ctx()} tokens). /reset starts over, /exit quits, Ctrl-C stops a reply.")
    base = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(base)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            print("\n(type /exit or press Ctrl-D to quit)")
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(base)
            llm.reset()
            print("(conversation cleared)")
            continue
        messages.append({"role": "user", "content": line})
        reply = _reply(llm, messages, args)
        if reply is None:
            messages.pop()
        else:
            messages.append({"role": "assistant", "content": reply})
    return 0


def _reply(llm, messages, args):
    """Stream one reply; returns its text (partial if interrupted), or None if the context is full."""
    pieces, n_tokens, started = [], 0, time.perf_counter()
    try:
        stream = llm.create_chat_completion(messages, stream=True, max_tokens=args.max_tokens,
                                            **sampling_options(args))
        for chunk in stream:
            content = chunk["choices"][0]["delta"].get("content")
            if content:
                n_tokens += 1
                pieces.append(content)
                print(content, end="", flush=True)
    except ContextFullError:
        print(f"(the conversation no longer fits the {llm.n_ctx()}-token context: /reset to start over, "
              f"or restart with a larger -c)")
        return None
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print()
    if args.stats:
        seconds = time.perf_counter() - started
        print(f"({n_tokens} chunks in {seconds:.2f} s, {n_tokens / seconds:.1f}/s)", file=sys.stderr)
    return "".join(pieces)
