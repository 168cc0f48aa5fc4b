"""The OpenAI-compatible HTTP API of `nibble serve`, on Starlette (run by uvicorn).

Routes: POST /v1/chat/completions and /v1/completions (streamed as server-sent events or not), POST
/v1/embeddings, GET /v1/models, GET /health (503 while the model loads in the background), GET /metrics
(Prometheus text), POST /tokenize and /detokenize (llama-server's shapes). An encoder model (BERT) serves
embeddings only. Generation runs in the engine's thread
(engine.py); each request waits on an asyncio queue the engine feeds, and a watcher on the connection
cancels the request's job when the client goes away.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from ..chat_template import ChatTemplate, ChatTemplateError
from ..completion import (LogprobWriter, chat_chunk, chat_logprobs, chat_prompt_tokens, chat_response,
                          completion_budget, completion_chunk, completion_response, new_meta, text_prompt_tokens,
                          tool_reply_chunks, usage)
from ..embedding import file_pooling
from ..grammar import GrammarError
from ..tools import ToolError, check_tools, tool_plan
from ..model import load_model
from .engine import EmbeddingJob, Engine, Job, QueueFull
from .requests import (CHAT_FIELDS, COMPLETION_FIELDS, ApiError, BadRequest, NotFound, TooLarge, Unauthorized,
                       Unavailable, chat_messages, embedding_inputs, parse)

PUBLIC_PATHS = ("/health", "/v1/health")


@dataclass
class ServerConfig:
    model_path: str
    n_slots: int = 4
    n_ctx: int = 0                  # all slots together, as llama-server's -c; 0: 2048 per slot
    n_threads: int | None = None
    n_batch: int = 256              # rows per step: generating slots' tokens plus pieces of prompts
    max_queue: int = 64
    api_key: str | None = None
    chat_template_file: str | None = None
    alias: str | None = None
    max_body_bytes: int = 8 << 20
    cache_type: str = "f16"
    pooling: int = -1               # embeddings: llama.cpp's pooling enum; -1: the model file's


class ServerState:
    """The model and engine, loaded in a background thread so the server answers /health at once."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model_name = config.alias or Path(config.model_path).name
        self.engine: Engine | None = None
        self.model = self.template = None
        self.load_error: str | None = None
        self.started = time.time()
        self._outbox = None
        self._loader = threading.Thread(target=self._load, name="nibble-load", daemon=True)
        self._loader.start()

    def _load(self):
        config = self.config
        try:
            model = load_model(config.model_path, n_threads=config.n_threads)
            template = None
            if model.is_encoder:
                pass
            elif config.chat_template_file:
                source = Path(config.chat_template_file).read_text(encoding="utf-8")
                template = ChatTemplate(source, name=config.chat_template_file)
            else:
                template = ChatTemplate.for_model(model.tokenizer, model.arch_name)
            per_slot = config.n_ctx // config.n_slots if config.n_ctx else 2048
            if model.hp.n_ctx_train:
                per_slot = min(per_slot, model.hp.n_ctx_train)
            self.pooling = config.pooling if config.pooling >= 0 else file_pooling(model)
            self.model, self.template = model, template
            self.engine = Engine(model, config.n_slots, per_slot, config.n_batch, config.max_queue,
                                 config.cache_type)
        except Exception as error:   # reported by /health and every request
            self.load_error = f"{type(error).__name__}: {error}"

    def outbox(self, loop) -> "Outbox":
        if self._outbox is None or self._outbox.loop is not loop:
            self._outbox = Outbox(loop)
        return self._outbox

    def wait_loaded(self, timeout=None):
        self._loader.join(timeout)
        return self.engine is not None

    def ready(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.load_error:
            raise ApiError(f"the model failed to load: {self.load_error}")
        raise Unavailable("the model is loading", headers={"Retry-After": "1"})

    def close(self):
        if self.engine is not None:
            self.engine.close()


class Outbox:
    """Events from the engine's thread to the event loop, handed over in one wake-up per step: the first
    event of a step schedules a flush, the others join it (one wake-up per event cost the engine thread
    the GIL several times per step)."""

    def __init__(self, loop):
        self.loop, self.items, self.lock, self.scheduled = loop, [], threading.Lock(), False

    def put(self, queue, event):
        with self.lock:
            self.items.append((queue, event))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._flush)

    def _flush(self):
        with self.lock:
            items, self.items, self.scheduled = self.items, [], False
        for queue, event in items:
            queue.put_nowait(event)


def create_app(config: ServerConfig) -> Starlette:
    state = ServerState(config)
    routes = [
        Route("/health", health, methods=["GET"]), Route("/v1/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]), Route("/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]), Route("/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/embeddings", embeddings, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]), Route("/detokenize", detokenize, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.server = state
    return ApiKeyCheck(app, config.api_key) if config.api_key else app


# ---- errors ----

async def _api_error(request, error: ApiError):
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request, error: HTTPException):
    kinds = {404: NotFound, 405: BadRequest}
    kind = kinds.get(error.status_code, ApiError)
    message = f"{request.method} {request.url.path}: " + ("no such route" if error.status_code == 404 else
                                                          error.detail)
    api_error = kind(message)
    return JSONResponse(api_error.body(), status_code=error.status_code)


async def _server_error(request, error: Exception):
    return JSONResponse(ApiError(f"internal error: {type(error).__name__}: {error}").body(), status_code=500)


class ApiKeyCheck:
    """ASGI middleware: every route but /health wants `Authorization: Bearer KEY` (401 otherwise)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.key):
                error = Unauthorized("invalid or missing API key: send 'Authorization: Bearer KEY'")
                response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_json(request, limit):
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body has {length} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
    try:
        return json.loads(body)
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None


# ---- routes ----

async def health(request):
    state = request.app.state.server
    if state.engine is not None:
        return JSONResponse({"status": "ok", "slots_idle": len(state.engine.slots) - state.engine.busy_slots,
                             "slots_processing": state.engine.busy_slots})
    state.ready()


async def models(request):
    state = request.app.state.server
    meta = {}
    if state.model is not None:
        hp = state.model.hp
        meta = {"architecture": state.model.arch_name, "n_vocab": hp.n_vocab, "n_ctx_train": hp.n_ctx_train,
                "n_embd": hp.n_embd, "n_ctx_slot": state.engine.n_ctx if state.engine else None}
    return JSONResponse({"object": "list", "data": [{"id": state.model_name, "object": "model",
                                                     "created": int(state.started), "owned_by": "nibble",
                                                     "meta": meta}]})


def _generating(state) -> Engine:
    engine = state.ready()
    if state.model.is_encoder:
        raise BadRequest(f"{state.model_name} is an encoder ({state.model.arch_name}): it makes embeddings, not text; "
                         "use /v1/embeddings")
    return engine


async def chat_completions(request):
    state = request.app.state.server
    engine = _generating(state)
    body = await _read_json(request, state.config.max_body_bytes)
    req = parse(body, CHAT_FIELDS)
    messages = chat_messages(body["messages"])
    try:
        tools, tool_choice = check_tools(body.get("tools"), body.get("tool_choice"), body.get("functions"),
                                         body.get("function_call"))
        plan = tool_plan(state.template.source, messages, tools, tool_choice,
                         bool(body.get("parallel_tool_calls"))) if tools else None
    except ToolError as error:
        raise BadRequest(str(error), param="tools") from None
    if plan is not None:
        if req.grammar is not None:
            raise BadRequest("give tools or response_format/json_schema/grammar, not both", param="tools")
        req.grammar = plan.grammar
    try:
        tokens = chat_prompt_tokens(state.template, state.model.tokenizer, plan.messages if plan else messages,
                                    tools=plan.tools if plan else None)
    except ChatTemplateError as error:
        raise BadRequest(str(error), param="messages") from None
    return await _generate(request, state, engine, req, tokens, chat=True, plan=plan)


async def completions(request):
    state = request.app.state.server
    engine = _generating(state)
    body = await _read_json(request, state.config.max_body_bytes)
    req = parse(body, COMPLETION_FIELDS)
    prompt = body["prompt"]
    prompt = prompt[0] if isinstance(prompt, list) and isinstance(prompt[0], str) else prompt
    tokens = text_prompt_tokens(state.model.tokenizer, prompt)
    n_vocab = state.model.hp.n_vocab
    if any(not 0 <= t < n_vocab for t in tokens):
        raise BadRequest(f"token ids in 'prompt' must be in 0..{n_vocab - 1}", param="prompt")
    prompt_text = prompt if isinstance(prompt, str) else _detokenize(state, tokens)
    if body.get("echo") and req.n_logprobs is not None:
        raise BadRequest("'logprobs' with 'echo' is not supported by nibble's server yet (the Python API has it)",
                         param="logprobs")
    return await _generate(request, state, engine, req, tokens, chat=False,
                           echo=prompt_text if body.get("echo") else None, prompt_text=prompt_text)


async def _generate(request, state, engine, req, tokens, chat, echo=None, plan=None, prompt_text=""):
    """Run one request on the engine; `plan` (tools.ToolPlan) reads tool calls out of a chat reply, which is
    then streamed when complete. Logprobs are written as Llama writes them (offsets after the prompt text)."""
    n_prompt, n_ctx, n_vocab = len(tokens), engine.n_ctx, state.model.hp.n_vocab
    if any(t >= n_vocab for t in req.sampling.logit_bias):
        raise BadRequest(f"'logit_bias' keys must be token ids in 0..{n_vocab - 1}", param="logit_bias")
    if n_prompt == 0:
        raise BadRequest("the prompt is empty", param="prompt")
    if req.max_tokens and n_prompt + req.max_tokens > n_ctx:
        raise BadRequest(f"the prompt ({n_prompt} tokens) plus max_tokens ({req.max_tokens}) is more than the "
                         f"context of {n_ctx} tokens per slot", param="max_tokens")
    if n_prompt >= n_ctx:
        raise BadRequest(f"the prompt ({n_prompt} tokens) does not fit the context of {n_ctx} tokens per slot "
                         "(with room for one generated token)", param="messages" if chat else "prompt")
    # a grammar's view of the vocabulary takes up to a second to build the first time: not on the event loop
    try:
        constraint = None if req.grammar is None else \
            await asyncio.to_thread(req.grammar.constraint, state.model.tokenizer, n_vocab)
    except GrammarError as error:
        raise BadRequest(str(error)) from None
    events: asyncio.Queue = asyncio.Queue()
    outbox = state.outbox(asyncio.get_running_loop())
    job = Job(prompt=tokens, sampling=req.sampling, max_tokens=completion_budget(n_ctx, n_prompt, req.max_tokens),
              stop=req.stop, seed=req.seed, constraint=constraint, n_logprobs=req.n_logprobs,
              emit=lambda event: outbox.put(events, event))
    logprobs = None if req.n_logprobs is None else \
        _Logprobs(LogprobWriter(state.model.tokenizer, 0 if chat else len(prompt_text)), chat, req.n_logprobs)
    try:
        engine.submit(job)
    except QueueFull as error:
        raise Unavailable(f"the server is busy: {error}; retry later", headers={"Retry-After": "1"}) from None
    meta = new_meta(req.model or state.model_name, "chatcmpl-" if chat else "cmpl-")
    watcher = asyncio.create_task(_cancel_on_disconnect(request, engine, job))
    if req.stream:
        return StreamingResponse(_sse(engine, job, events, watcher, meta, chat, echo, req.include_usage, plan,
                                      logprobs),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, scores = "", []
    try:
        while True:
            event = await events.get()
            if event[0] == "text":
                text += event[1]
                scores += event[2]
            elif event[0] == "end":
                _, rest, finish_reason, n_prompt, n_completion, last = event
                text += rest
                scores += last
                break
            else:
                raise ApiError(event[1])
    finally:
        watcher.cancel()
        engine.cancel(job)
    if chat:
        content, calls = plan.parse(text) if plan else (text, [])
        response = chat_response(meta, content, finish_reason, n_prompt, n_completion, calls)
    else:
        response = completion_response(meta, (echo or "") + text, finish_reason, n_prompt, n_completion)
    if logprobs is not None:
        response["choices"][0]["logprobs"] = logprobs.object(scores)
    return JSONResponse(response)


@dataclass
class _Logprobs:
    """A request's logprobs: the writer that keeps offsets, and the shape (chat: OpenAI's; else llama-cpp-
    python's, which is OpenAI's legacy completions shape)."""
    writer: LogprobWriter
    chat: bool
    n_top: int

    def object(self, scores):
        written = self.writer.write(scores)
        return chat_logprobs(written, self.n_top) if self.chat else written


async def _sse(engine, job, events, watcher, meta, chat, echo, include_usage, plan=None, logprobs=None):
    def data(obj):
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def piece(text, finish_reason=None, scores=()):
        chunk = chat_chunk(meta, {"content": text} if text or scores else {}, finish_reason) if chat else \
            completion_chunk(meta, text, finish_reason)
        if logprobs is not None and scores:
            chunk["choices"][0]["logprobs"] = logprobs.object(scores)
        return chunk

    held = ""                # a reply with tools: its text, parsed when complete
    try:
        if chat and not plan:
            yield data(chat_chunk(meta, {"role": "assistant", "content": ""}))
        elif echo:
            yield data(piece(echo))
        while True:
            event = await events.get()
            if event[0] == "text":
                if plan:
                    held += event[1]
                else:
                    yield data(piece(event[1], scores=event[2]))
                continue
            if event[0] == "end":
                _, rest, finish_reason, n_prompt, n_completion, last = event
                if plan:
                    content, calls = plan.parse(held + rest)
                    for chunk in tool_reply_chunks(meta, content, calls, finish_reason):
                        yield data(chunk)
                elif (rest or last) and chat:
                    yield data(piece(rest, scores=last))
                    yield data(piece("", finish_reason))
                else:
                    yield data(piece(rest, finish_reason, last))
                if include_usage:
                    kind = "chat.completion.chunk" if chat else "text_completion"
                    yield data({"id": meta["id"], "object": kind, "created": meta["created"], "model": meta["model"],
                                "choices": [], "usage": usage(n_prompt, n_completion)})
            else:
                yield data(ApiError(event[1]).body())
            yield "data: [DONE]\n\n"
            return
    finally:
        watcher.cancel()
        engine.cancel(job)


async def embeddings(request):
    """OpenAI's embeddings: each input's pooled, L2-normalized vector (as llama-server's), as floats or as
    base64 of little-endian float32 (the openai client asks for base64)."""
    state = request.app.state.server
    engine = state.ready()
    body = await _read_json(request, state.config.max_body_bytes)
    model = state.model
    limit = model.max_tokens if model.is_encoder else engine.n_ctx
    inputs, encoding = embedding_inputs(body, model.tokenizer, model.hp.n_vocab, limit)
    if state.pooling == 0:
        raise BadRequest(f"{state.model_name} names no pooling, so its vectors are per token; start the server with "
                         "--pooling mean, cls or last", param="input")
    events: asyncio.Queue = asyncio.Queue()
    outbox = state.outbox(asyncio.get_running_loop())
    job = EmbeddingJob(inputs=inputs, pooling=state.pooling, emit=lambda event: outbox.put(events, event))
    try:
        engine.submit_embedding(job)
    except QueueFull as error:
        raise Unavailable(f"the server is busy: {error}; retry later", headers={"Retry-After": "1"}) from None
    try:
        event = await events.get()
    finally:
        job.cancelled = True
    if event[0] == "error":
        raise ApiError(event[1])
    encode = ((lambda v: base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")) if encoding == "base64"
              else (lambda v: v.tolist()))
    n_tokens = sum(len(tokens) for tokens in inputs)
    return JSONResponse({"object": "list", "model": body.get("model") or state.model_name,
                         "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                                  for i, v in enumerate(event[1])],
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


async def _cancel_on_disconnect(request, engine, job):
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            engine.cancel(job)
            return


async def tokenize(request):
    state = request.app.state.server
    state.ready()
    body = await _read_json(request, state.config.max_body_bytes)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, str):
        raise BadRequest("'content' must be a string", param="content")
    tokenizer = state.model.tokenizer
    tokens = tokenizer.encode(content, add_special=bool(body.get("add_special", False)),
                              parse_special=bool(body.get("parse_special", True)))
    if body.get("with_pieces"):
        return JSONResponse({"tokens": [{"id": t, "piece": tokenizer.token_bytes(t, True).decode("utf-8", "replace")}
                                        for t in tokens]})
    return JSONResponse({"tokens": tokens})


async def detokenize(request):
    state = request.app.state.server
    state.ready()
    body = await _read_json(request, state.config.max_body_bytes)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    n_vocab = state.model.hp.n_vocab
    if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < n_vocab for t in tokens):
        raise BadRequest(f"'tokens' must be a list of token ids in 0..{n_vocab - 1}", param="tokens")
    return JSONResponse({"content": _detokenize(state, tokens)})


def _detokenize(state, tokens):
    decoder = state.model.tokenizer.incremental_decoder()
    return "".join(decoder.decode(t) for t in tokens) + decoder.flush()


async def metrics(request):
    state = request.app.state.server
    engine = state.ready()
    s = engine.stats
    rows = [
        ("requests_total", "counter", "requests accepted", s["requests"]),
        ("requests_rejected_total", "counter", "requests refused because the queue was full", s["rejected"]),
        ("prompt_tokens_total", "counter", "prompt tokens evaluated", s["prompt_tokens"]),
        ("prompt_tokens_cached_total", "counter", "prompt tokens reused from a slot's cache", s["cached_tokens"]),
        ("tokens_predicted_total", "counter", "tokens generated", s["generated_tokens"]),
        ("embedding_requests_total", "counter", "embedding requests accepted", s["embedding_requests"]),
        ("embedding_tokens_total", "counter", "tokens embedded", s["embedding_tokens"]),
        ("prompt_tokens_seconds", "gauge", "prompt tokens per second of forward time",
         s["prompt_tokens"] / s["prompt_seconds"] if s["prompt_seconds"] else 0.0),
        ("predicted_tokens_seconds", "gauge", "generated tokens per second of forward time (all slots)",
         s["generated_tokens"] / s["decode_seconds"] if s["decode_seconds"] else 0.0),
        ("requests_processing", "gauge", "busy slots", engine.busy_slots),
        ("requests_deferred", "gauge", "requests waiting for a slot", engine.queue_length),
        ("slots_total", "gauge", "slots", len(engine.slots)),
        ("steps_total", "counter", "forward passes", s["steps"]),
        ("errors_total", "counter", "steps that failed", s["errors"]),
    ]
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP nibble_{name} {help_text}", f"# TYPE nibble_{name} {kind}", f"nibble_{name} {value}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
