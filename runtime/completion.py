"""From sampled tokens to OpenAI-shaped answers, shared by `Llama` and `nibble serve`.

`TextStream` turns tokens into text as it may be shown: a stop string never leaks (not even when it
arrives split across tokens), a character split across tokens waits until complete, and the end says
why ("stop" or "length"). The builders below give llama-cpp-python's and OpenAI's response objects.
"""
from __future__ import annotations

import codecs
import time
import uuid

import numpy as np

from .chat_template import ChatTemplate
from .tokenizer import Tokenizer


def completion_budget(n_ctx: int, n_prompt: int, max_tokens: int | None) -> int:
    """How many tokens a completion may generate: max_tokens (None or <= 0: no limit), and never past the
    context, which holds the prompt and the completion together."""
    room = n_ctx - n_prompt
    return room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)


def shared_prefix(cached, prompt) -> int:
    """How many leading tokens `prompt` shares with the tokens already in a cache (evaluated once, reused)."""
    n = min(len(cached), len(prompt))
    same = np.asarray(cached[:n]) == np.asarray(prompt[:n])
    return n if same.all() else int(np.argmin(same))


def stop_list(stop) -> list[str]:
    return [stop] if isinstance(stop, str) and stop else [s for s in (stop or []) if s]


def chat_prompt_tokens(template: ChatTemplate, tokenizer: Tokenizer, messages, tools=None) -> list[int]:
    """A conversation as the model's chat template writes it (with `tools` where it renders them), ready for
    the assistant's reply."""
    prompt = template.render(messages, add_generation_prompt=True, tools=tools)
    return tokenizer.encode(prompt, add_special=False, parse_special=True)


def text_prompt_tokens(tokenizer: Tokenizer, prompt) -> list[int]:
    """A completion prompt: text (with BOS where the vocabulary wants one; control-token text parsed) or ids."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_special=True, parse_special=True)
    return [int(t) for t in prompt]


def infill_prompt_tokens(tokenizer: Tokenizer, prefix: str, suffix: str, suffix_first: bool = False) -> list[int]:
    """A fill-in-the-middle prompt as llama.cpp's server builds it: [BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID
    (suffix_first, llama-cpp-python's spm_infill: FIM_SUF suffix FIM_PRE prefix FIM_MID); the model then
    writes the middle."""
    ids = tokenizer.special_ids
    missing = [kind for kind in ("fim_pre", "fim_suf", "fim_mid") if kind not in ids]
    if missing:
        raise ValueError("suffix needs a vocabulary with fill-in-the-middle tokens (prefix, suffix, middle); "
                         f"this one lacks {', '.join(missing)}")
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise ValueError("fill-in-the-middle takes a text prompt and a text suffix")
    before = [ids["fim_pre"]] + tokenizer.encode(prefix, add_special=False)
    after = [ids["fim_suf"]] + tokenizer.encode(suffix, add_special=False)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    return bos + (after + before if suffix_first else before + after) + [ids["fim_mid"]]


def log_softmax(logits) -> np.ndarray:
    """Log-probabilities from logits, in float32 as llama-cpp-python's Llama.logits_to_logprobs."""
    shifted = np.asarray(logits, np.float32) - np.float32(np.max(logits))
    return shifted - np.log(np.sum(np.exp(shifted), dtype=np.float32))


def scored(token, logits, n_top) -> tuple:
    """(log-probability of `token`, [(id, log-probability)] of the n_top likeliest) under `logits`: the
    n_top first of a stable descending sort, found without sorting the whole vocabulary."""
    row = log_softmax(logits)
    if n_top <= 0:
        return float(row[token]), []
    n_top = min(n_top, row.size)
    candidates = np.nonzero(row >= np.partition(row, -n_top)[-n_top])[0]
    best = candidates[np.lexsort((candidates, -row[candidates]))][:n_top]
    return float(row[token]), [(int(t), float(row[t])) for t in best]


class LogprobWriter:
    """llama-cpp-python's logprobs object (tokens, text_offset, token_logprobs, top_logprobs) written a few
    tokens at a time (a stream's chunks): each offset is the length of the text before the token, kept up to
    date one token at a time; texts as Llama.detokenize gives them."""

    def __init__(self, tokenizer: Tokenizer, offset: int, after_bos: bool = False):
        self.tokenizer, self.offset = tokenizer, offset
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.drop_leading_space = after_bos     # as detokenize does after BOS
        self.previous = False

    def _text(self, token, first):
        piece = self.tokenizer.token_bytes(int(token), False)
        if first and token == self.tokenizer.bos_id:
            piece = piece.removeprefix(b" ")
        return piece.decode("utf-8", errors="ignore")

    def write(self, entries) -> dict:
        """The object for (token, (logprob, [(id, logprob)]) or None) entries that follow those written."""
        out = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        for token, score in entries:
            first, self.previous = not self.previous, True
            text = self._text(token, first)
            out["tokens"].append(text)
            out["text_offset"].append(self.offset)
            piece = self.tokenizer.token_bytes(int(token), False)
            if self.drop_leading_space and piece:
                piece, self.drop_leading_space = piece.removeprefix(b" "), False
            self.offset += len(self.decoder.decode(piece))
            if score is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            logprob, best = score
            top = {self._text(t, first): value for t, value in best}
            top[text] = logprob
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append(top)
        return out


def chat_logprobs(completion_logprobs, n_top) -> dict:
    """OpenAI's chat logprobs from a completion's: per token its text, UTF-8 bytes, log-probability and the
    n_top likeliest tokens there."""
    def entry(token, logprob):
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}
    return {"content": [{**entry(token, logprob), "top_logprobs": [entry(t, v) for t, v in list(top.items())[:n_top]]}
                        for token, logprob, top in zip(completion_logprobs["tokens"],
                                                       completion_logprobs["token_logprobs"],
                                                       completion_logprobs["top_logprobs"])],
            "refusal": None}


class TextStream:
    """Feed it each sampled token; it says what text may be shown now and when the completion is over."""

    def __init__(self, tokenizer: Tokenizer, stop, max_tokens: int):
        self.tokenizer = tokenizer
        self.stops = stop_list(stop)
        self.max_tokens = max_tokens
        self.decoder = tokenizer.incremental_decoder()
        self.pending = ""
        self.count = 0              # completion tokens (end-of-generation tokens are not counted)
        self.finish_reason = None

    def push(self, token: int) -> tuple[str, str | None]:
        """(text to show, finish_reason or None while the completion goes on)."""
        if self.tokenizer.is_eog(token):
            return self.end("stop")
        self.count += 1
        self.pending += self.decoder.decode(token)
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.pending, self.finish_reason = self.pending[:cut], "", "stop"
            return text, "stop"
        if self.count >= self.max_tokens:
            return self.end("length")
        held = _longest_stop_prefix(self.pending, self.stops)
        ready, self.pending = self.pending[: len(self.pending) - held], self.pending[len(self.pending) - held:]
        return ready, None

    def end(self, reason: str = "length") -> tuple[str, str]:
        """Finish now (end of generation, the budget, or a full context): all the text held back."""
        text, self.pending, self.finish_reason = self.pending + self.decoder.flush(), "", reason
        return text, reason


def _longest_stop_prefix(text, stops):
    """How many trailing characters of `text` could be the start of a stop string (and must wait)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


# ---- response objects ----

def new_meta(model: str, prefix: str = "cmpl-") -> dict:
    return dict(id=f"{prefix}{uuid.uuid4()}", created=int(time.time()), model=model)


def header(meta, kind):
    return {"id": meta["id"], "object": kind, "created": meta["created"], "model": meta["model"]}


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_chunk(meta, text, finish_reason=None):
    return {**header(meta, "text_completion"),
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}


def completion_response(meta, text, finish_reason, n_prompt, n_completion):
    return {**completion_chunk(meta, text, finish_reason), "usage": usage(n_prompt, n_completion)}


def chat_response(meta, text, finish_reason, n_prompt, n_completion, tool_calls=None):
    """A chat.completion; with tool calls the message carries them and finish_reason is "tool_calls"."""
    message = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"], finish_reason = tool_calls, "tool_calls"
    return {**header(meta, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(n_prompt, n_completion)}


def chat_chunk(meta, delta, finish_reason=None):
    return {**header(meta, "chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def tool_reply_chunks(meta, content, tool_calls, finish_reason):
    """A finished reply with tools as OpenAI's stream: the role, the content, one delta per tool call (with its
    index), then the finish reason."""
    yield chat_chunk(meta, {"role": "assistant"})
    if content:
        yield chat_chunk(meta, {"content": content})
    for i, call in enumerate(tool_calls):
        yield chat_chunk(meta, {"tool_calls": [{"index": i, **call}]})
    yield chat_chunk(meta, {}, "tool_calls" if tool_calls else finish_reason)


def chat_chunks(meta, pieces):
    """OpenAI's chat stream from (text, finish_reason, logprobs or None) pieces: the role first, then content
    deltas (with their logprobs), then an empty delta carrying the finish reason."""
    yield chat_chunk(meta, {"role": "assistant"})
    for text, finish_reason, logprobs in pieces:
        if text or logprobs:
            chunk = chat_chunk(meta, {"content": text})
            chunk["choices"][0]["logprobs"] = logprobs
            yield chunk
        if finish_reason is not None:
            yield chat_chunk(meta, {}, finish_reason)
