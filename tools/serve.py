"""Serve a model over the OpenAI API (chat completions, completions, embeddings, models), as llama-server does.

Up to --parallel requests generate together in one pass over the weights per token (continuous
batching); more wait in a queue of --queue requests, and past it get 503 with Retry-After. The context
(-c) is shared by the slots as in llama-server: each slot holds CTX / SLOTS tokens. The model loads in the
background; /health answers 503 until it is ready.

Examples:
  nibble serve                                   # SmolLM2 on http://127.0.0.1:8080
  nibble serve -m gemma3-270m -np 8 --port 9000
  nibble serve -m all-minilm-l6-v2                # an embedding model: /v1/embeddings only
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "Hello!"}]}'
"""
import sys

import cpu_kernels
from runtime import DEFAULT_MODEL, resolve_model
from runtime.embedding import POOLING_TYPES

from .model_args import say_if_compiling

HELP = "serve a model over an OpenAI-compatible HTTP API"


def setup_arg_parser(parser):
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL,
                        help=f"a known model name (pulled if missing) or a .gguf path (default: {DEFAULT_MODEL})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                             "only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument("-np", "--parallel", type=int, default=4,
                        help="slots: requests generated together (default: 4)")
    parser.add_argument("-c", "--ctx-size", type=int, default=0,
                        help="context in tokens for all slots together (default: 2048 per slot)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads for the kernels (default: all cores)")
    parser.add_argument("-b", "--batch-size", type=int, default=256,
                        help="tokens per forward pass: generating slots' tokens plus pieces of prompts (default: 256)")
    parser.add_argument("--queue", type=int, default=64,
                        help="requests that may wait for a slot before 503 (default: 64)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: none)")
    parser.add_argument("--chat-template", metavar="FILE", default=None,
                        help="a Jinja chat template file to use instead of the model's")
    parser.add_argument("--alias", default=None, help="the model's name in responses (default: the file name)")
    parser.add_argument("--pooling", choices=["mean", "cls", "last"], default=None,
                        help="how /v1/embeddings pools a text's token vectors (default: what the model file says)")


def main(args):
    for name, value, low in (("--parallel", args.parallel, 1), ("--batch-size", args.batch_size, 1),
                             ("--queue", args.queue, 0), ("--ctx-size", args.ctx_size, 0), ("--port", args.port, 0)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.ctx_size and args.ctx_size // args.parallel < 2:
        raise ValueError(f"--ctx-size {args.ctx_size} leaves {args.ctx_size // args.parallel} tokens per slot "
                         f"for {args.parallel} slots")
    if args.chat_template:
        open(args.chat_template, encoding="utf-8").close()     # a missing file: one line now, not at load
    cpu_kernels.set_threads(args.threads)                      # too many threads: the same
    import uvicorn

    from runtime.server import ServerConfig, create_app
    path = resolve_model(args.model)
    say_if_compiling()
    config = ServerConfig(model_path=str(path), n_slots=args.parallel, n_ctx=args.ctx_size, n_threads=args.threads,
                          n_batch=args.batch_size, max_queue=args.queue, api_key=args.api_key,
                          chat_template_file=args.chat_template, alias=args.alias,
                          pooling=POOLING_TYPES[args.pooling or "unspecified"])
    app = create_app(config)
    print(f"nibble: serving {path.name} on http://{args.host}:{args.port}/v1 ({args.parallel} slots); "
          "the model loads in the background (/health says when it is ready)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
