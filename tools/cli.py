"""`nibble COMMAND ...`: one module per command, each with setup_arg_parser() and main()."""
import argparse
import os
import sys

try:
    import cpu_kernels  # noqa: F401  picks the kernel path first; NIBBLE_KERNELS may name one this CPU cannot run
except ValueError as error:
    sys.exit(f"nibble: {error}")

from gguf_io import GGUFError
from runtime import ModelNotFound

from . import bench, chat, convert, embed, imatrix, inspect_gguf, perplexity, pull, quantize, run, serve

COMMANDS = {
    "chat": chat,
    "run": run,
    "embed": embed,
    "pull": pull,
    "inspect": inspect_gguf,
    "convert": convert,
    "quantize": quantize,
    "imatrix": imatrix,
    "perplexity": perplexity,
    "bench": bench,
    "serve": serve,
}

USER_ERRORS = (GGUFError, ModelNotFound, ValueError, OSError)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nibble",
        description="A CPU inference engine for quantized GGUF language models.",
        epilog="Run 'nibble COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"nibble {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.setup_arg_parser(sub)
        sub.set_defaults(run=module.main)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except BrokenPipeError:
        # the reader went away (`nibble inspect ... | head`): stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as e:
        print(f"nibble: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nibble: interrupted", file=sys.stderr)
        return 130


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nibble")
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
