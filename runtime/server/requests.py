"""Request bodies of the OpenAI API, checked field by field against one table.

A bad field gives `BadRequest` naming it and what was expected, which the app turns into OpenAI's error
object with status 400. Defaults are llama-server's (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..completion import stop_list
from ..grammar import Grammar, GrammarError
from ..sampling import SamplingParams


class ApiError(Exception):
    """An error answered with OpenAI's error object."""
    status, kind = 500, "server_error"

    def __init__(self, message, param=None, headers=None):
        super().__init__(message)
        self.message, self.param, self.headers = message, param, headers

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


class BadRequest(ApiError):
    status, kind = 400, "invalid_request_error"


class Unauthorized(ApiError):
    status, kind = 401, "authentication_error"


class NotFound(ApiError):
    status, kind = 404, "not_found_error"


class TooLarge(ApiError):
    status, kind = 413, "invalid_request_error"


class Unavailable(ApiError):
    status, kind = 503, "unavailable_error"


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _stop(value):
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))


def _bias(value):
    return isinstance(value, dict) and all(str(k).isdigit() and _number(v) for k, v in value.items())


def _prompt(value):
    return isinstance(value, str) or (isinstance(value, list) and value and all(_integer(t) for t in value)) \
        or (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str))


# field: (accepts the value?, what it must be, default). None is accepted wherever the default is None.
COMMON_FIELDS = {
    "model": (lambda v: isinstance(v, str), "a string", None),
    "max_tokens": (_integer, "an integer", None),
    "max_completion_tokens": (_integer, "an integer", None),
    "temperature": (_number, "a number", 0.8),
    "top_p": (_number, "a number", 0.95),
    "top_k": (_integer, "an integer", 40),
    "min_p": (_number, "a number", 0.05),
    "typical_p": (_number, "a number", 1.0),
    "presence_penalty": (_number, "a number", 0.0),
    "frequency_penalty": (_number, "a number", 0.0),
    "repeat_penalty": (_number, "a number", 1.0),
    "repeat_last_n": (_integer, "an integer", 64),
    "seed": (_integer, "an integer", None),
    "stop": (_stop, "a string or a list of strings", None),
    "logit_bias": (_bias, "an object mapping token ids to numbers", None),
    "stream": (lambda v: isinstance(v, bool), "true or false", False),
    "stream_options": (lambda v: isinstance(v, dict), "an object", None),
    "n": (lambda v: v == 1, "1 (one choice per request)", 1),
    "user": (lambda v: isinstance(v, str), "a string", None),
}
CHAT_FIELDS = {**COMMON_FIELDS, "messages": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list", ...),
               "logprobs": (lambda v: isinstance(v, bool), "true or false", False),
               "top_logprobs": (lambda v: _integer(v) and 0 <= v <= 20, "an integer from 0 to 20", None)}
COMPLETION_FIELDS = {**COMMON_FIELDS, "prompt": (_prompt, "a string or a list of token ids", ...),
                     "echo": (lambda v: isinstance(v, bool), "true or false", False),
                     "logprobs": (lambda v: _integer(v) and 0 <= v <= 20, "an integer from 0 to 20", None)}
# Known to the OpenAI API but not served yet: a clear 400 rather than a silently different answer.
NOT_YET = ("suffix",)
# Ways to constrain the output, as llama-server takes them: OpenAI's response_format, a JSON schema, GBNF text.
CONSTRAINTS = {"response_format": Grammar.for_response_format, "json_schema": Grammar.from_json_schema,
               "grammar": Grammar.from_gbnf}
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class GenerationRequest:
    sampling: SamplingParams
    max_tokens: int | None
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool
    model: str | None
    body: dict
    grammar: Grammar | None = None
    n_logprobs: int | None = None    # None: no logprobs; else how many top tokens beside each token's own


def _logprobs_asked(values) -> int | None:
    """Chat: logprobs true (top_logprobs alternatives each); completions: logprobs N."""
    if "messages" not in values:
        return values["logprobs"]
    if values["top_logprobs"] is not None and not values["logprobs"]:
        raise BadRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return (values["top_logprobs"] or 0) if values["logprobs"] else None


def output_grammar(body) -> Grammar | None:
    """The grammar the request's response_format, json_schema or grammar field asks for (at most one)."""
    given = [name for name in CONSTRAINTS if body.get(name) is not None]
    if len(given) > 1:
        raise BadRequest(f"give one of {', '.join(given)}, not several", param=given[1])
    if not given:
        return None
    try:
        return CONSTRAINTS[given[0]](body[given[0]])
    except GrammarError as error:
        raise BadRequest(str(error), param=given[0]) from None


def parse(body, table) -> GenerationRequest:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    for name in NOT_YET:
        if body.get(name) not in (None, False, [], {}):
            raise BadRequest(f"'{name}' is not supported by nibble's server yet", param=name)
    values = {}
    for name, (accepts, expected, default) in table.items():
        value = body.get(name)
        if value is None:
            if default is ...:
                raise BadRequest(f"'{name}' is required", param=name)
            values[name] = default
        elif not accepts(value):
            raise BadRequest(f"'{name}' must be {expected}, got {value!r:.80}", param=name)
        else:
            values[name] = value
    try:
        sampling = SamplingParams(
            temperature=float(values["temperature"]), top_k=values["top_k"], top_p=float(values["top_p"]),
            min_p=float(values["min_p"]), typical_p=float(values["typical_p"]),
            repeat_penalty=float(values["repeat_penalty"]),
            frequency_penalty=float(values["frequency_penalty"]), presence_penalty=float(values["presence_penalty"]),
            penalty_last_n=max(0, values["repeat_last_n"]),
            logit_bias={int(k): float(v) for k, v in (values["logit_bias"] or {}).items()}).check()
    except ValueError as error:
        raise BadRequest(str(error)) from None
    max_tokens = values["max_completion_tokens"] if values["max_tokens"] is None else values["max_tokens"]
    if max_tokens is not None and max_tokens < 0:
        raise BadRequest(f"'max_tokens' must not be negative, got {max_tokens}", param="max_tokens")
    return GenerationRequest(sampling=sampling, max_tokens=max_tokens, stop=stop_list(values["stop"]),
                             seed=values["seed"], stream=values["stream"],
                             include_usage=bool((values["stream_options"] or {}).get("include_usage")),
                             model=values["model"], body=body, grammar=output_grammar(body),
                             n_logprobs=_logprobs_asked(values))


def embedding_inputs(body, tokenizer, n_vocab, limit):
    """An embeddings body's inputs as token lists (texts tokenized with the model's BOS/CLS and SEP) and its
    encoding_format. `input` is a string, a list of strings, a list of token ids or a list of such lists."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    value = body.get("input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(f"'encoding_format' must be float or base64, got {encoding!r:.40}", param="encoding_format")
    if body.get("dimensions") is not None:
        raise BadRequest("'dimensions' is not supported: this model's vectors have one size", param="dimensions")
    if isinstance(value, str) or (isinstance(value, list) and value and all(_integer(t) for t in value)):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) or (isinstance(v, list) and all(_integer(t) for t in v)) for v in value):
        raise BadRequest("'input' must be a string, a list of strings, a list of token ids or a list of those",
                         param="input")
    inputs = []
    for i, item in enumerate(value):
        tokens = tokenizer.encode(item, add_special=True) if isinstance(item, str) else list(item)
        if not tokens:
            raise BadRequest(f"input[{i}] is empty", param="input")
        if any(not 0 <= t < n_vocab for t in tokens):
            raise BadRequest(f"input[{i}]: token ids must be in 0..{n_vocab - 1}", param="input")
        if len(tokens) > limit:
            raise BadRequest(f"input[{i}] has {len(tokens)} tokens; this model embeds at most {limit}", param="input")
        inputs.append(tokens)
    return inputs, encoding


def chat_messages(messages):
    """OpenAI's messages as the chat templates take them: content parts of type text joined into a string."""
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] must be an object with a role ({', '.join(ROLES)})", param="messages")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        elif content is not None and not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", param="messages")
        checked.append({**message, "content": content or ""})
    return checked
