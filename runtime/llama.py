"""`Llama`: a drop-in subset of llama-cpp-python 0.3's class of the same name, on nibble's runtime.

Same constructor arguments, method names, defaults and return shapes (`text_completion`,
`chat.completion` and their streaming chunks). Like llama-cpp-python, a call whose prompt starts with
tokens already in the KV cache evaluates only the rest, so a chat turn does not re-read the history.
"""
from __future__ import annotations

import itertools
import sys
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator

import numpy as np

from cpu_kernels import set_threads

from .chat_template import ChatTemplate
from .completion import (LogprobWriter, TextStream, chat_chunks, chat_logprobs, chat_prompt_tokens, chat_response,
                         completion_budget, completion_chunk, completion_response, infill_prompt_tokens, new_meta,
                         scored, shared_prefix, text_prompt_tokens, tool_reply_chunks)
from .embedding import embed_tokens, pooling_type as parse_pooling_type
from .grammar import Grammar, as_grammar
from .model import VocabOnly, load_model
from .sampling import DEFAULT_SEED, Sampler, SamplingParams
from .tools import check_tools, tool_plan

# llama-cpp-python 0.3's constructor arguments that change nothing in nibble: name -> (the value that asks
# for nothing, why). Another value warns once per process. f16_kv and n_parts are older llama-cpp-python's,
# which LangChain still passes.
_WITHOUT_EFFECT = {
    "n_gpu_layers": (0, "nibble runs on the CPU"), "split_mode": (1, "nibble runs on the CPU"),
    "main_gpu": (0, "nibble runs on the CPU"), "tensor_split": (None, "nibble runs on the CPU"),
    "offload_kqv": (True, "nibble runs on the CPU"), "op_offload": (None, "nibble runs on the CPU"),
    "rpc_servers": (None, "nibble runs in this process"),
    "use_mlock": (False, "nibble does not lock the model in RAM"),
    "use_mmap": (True, "nibble always maps the file read-only and packs the weights once"),
    "numa": (False, "nibble does not place threads by NUMA node"),
    "n_ubatch": (512, "n_batch tokens go through the kernels at once"),
    "flash_attn": (False, "nibble's attention kernels are always fused"),
    "swa_full": (None, "sliding-window layers keep their window only"),
    "no_perf": (False, "nibble keeps no performance counters"),
    "attention_type": (-1, "decoders attend causally and encoders both ways, as their files say"),
    "rope_scaling_type": (-1, "RoPE scaling comes from the file"),
    "yarn_ext_factor": (-1.0, "YaRN is not supported"), "yarn_attn_factor": (1.0, "YaRN is not supported"),
    "yarn_beta_fast": (32.0, "YaRN is not supported"), "yarn_beta_slow": (1.0, "YaRN is not supported"),
    "yarn_orig_ctx": (0, "YaRN is not supported"),
    "draft_model": (None, "speculative decoding is not supported yet"),
    "chat_handler": (None, "chat templates are rendered by nibble (chat_format picks a built-in one)"),
    "tokenizer": (None, "nibble tokenizes with the file's vocabulary"),
    "lora_base": (None, "LoRA adapters are not supported yet"), "lora_scale": (1.0, "LoRA adapters are not supported yet"),
    "f16_kv": (True, "an argument of older llama-cpp-python: type_k and type_v say this now"),
    "n_parts": (-1, "an argument of older llama-cpp-python, without meaning since GGUF"),
}
# Arguments whose request nibble cannot carry out: another value than this refuses to load.
_REFUSED = {"lora_path": (None, "LoRA adapters (lora_path) are not supported by nibble yet"),
            "kv_overrides": (None, "kv_overrides is not supported by nibble yet: write the keys into the file "
                                   "(gguf_io.GGUFWriter)")}
_warned: set[str] = set()


def _check_arguments(kwargs):
    """Refuse unknown names and requests nibble cannot honor; warn once about arguments without effect."""
    unknown = set(kwargs) - set(_WITHOUT_EFFECT) - set(_REFUSED)
    if unknown:
        raise TypeError(f"Llama() got unexpected argument(s): {', '.join(sorted(unknown))}")
    for name, value in kwargs.items():
        if name in _REFUSED and value not in (_REFUSED[name][0], {}, ""):
            raise ValueError(_REFUSED[name][1])
        if name in _WITHOUT_EFFECT and value is not None and value != _WITHOUT_EFFECT[name][0] \
                and name not in _warned:
            _warned.add(name)
            warnings.warn(f"Llama({name}={value!r}) has no effect: {_WITHOUT_EFFECT[name][1]}", stacklevel=3)


_CACHE_TYPES = {None: "f16", 1: "f16", 0: "f32", "f16": "f16", "f32": "f32"}


# Sampling arguments of llama-cpp-python's create_* calls that nibble cannot carry out yet (a request for one
# raises); the others there (mirostat off, tfs_z 1, ...) ask for nothing and pass.
_UNSUPPORTED_CALL_ARGUMENTS = {"mirostat_mode": 0, "logits_processor": None,
                               "stopping_criteria": None}
_NEUTRAL_CALL_ARGUMENTS = {"tfs_z": 1.0, "mirostat_tau": 5.0, "mirostat_eta": 0.1}


def _refuse_unsupported(kwargs):
    for name, value in kwargs.items():
        if name in _UNSUPPORTED_CALL_ARGUMENTS:
            if value not in (_UNSUPPORTED_CALL_ARGUMENTS[name], False):
                raise NotImplementedError(f"{name} is not supported by nibble yet")
        elif name not in _NEUTRAL_CALL_ARGUMENTS:
            raise TypeError(f"unexpected argument {name!r}")


@dataclass
class LlamaState:
    """What save_state() keeps, as llama-cpp-python's class of the same name: the evaluated tokens, their
    logits, the KV cache (`kv`, copies) and the seed. Picklable."""
    input_ids: np.ndarray
    scores: np.ndarray
    n_tokens: int
    seed: int
    kv: tuple = ()
    last_logits: np.ndarray | None = None

    @property
    def llama_state_size(self) -> int:
        keys, values = self.kv[:2] if self.kv else ((), ())
        return sum(a.nbytes for a in (*keys, *values))


class ContextFullError(ValueError):
    """The prompt, or prompt plus what is asked for, does not fit the context window."""


class Llama:
    """A model file loaded for generation. See llama-cpp-python's documentation for the arguments."""

    def __init__(self, model_path: str, *, n_ctx: int = 512, n_batch: int = 512, n_threads: int | None = None,
                 n_threads_batch: int | None = None, seed: int = DEFAULT_SEED, rope_freq_base: float = 0.0,
                 rope_freq_scale: float = 0.0, logits_all: bool = False, vocab_only: bool = False,
                 embedding: bool = False, pooling_type: int = -1, last_n_tokens_size: int = 64,
                 type_k=None, type_v=None, chat_format: str | None = None, spm_infill: bool = False,
                 verbose: bool = True, **kwargs):
        _check_arguments(kwargs)
        for name, cache_type in (("type_k", type_k), ("type_v", type_v)):
            if cache_type not in _CACHE_TYPES:
                raise ValueError(f"{name} must be f16 (1) or f32 (0), got {cache_type!r}")
        if _CACHE_TYPES[type_v] != _CACHE_TYPES[type_k]:
            raise ValueError("nibble keeps keys and values in one type: give type_v equal to type_k")
        if n_batch < 1:
            raise ValueError(f"n_batch must be at least 1, got {n_batch}")
        if last_n_tokens_size < 0:
            raise ValueError(f"last_n_tokens_size must be 0 or more, got {last_n_tokens_size}")
        self._pooling = parse_pooling_type(pooling_type)
        started = time.perf_counter()
        self.model_path = str(model_path)
        self.verbose = verbose
        self.embedding = bool(embedding)
        self.last_n_tokens_size = int(last_n_tokens_size)
        self.spm_infill = bool(spm_infill)
        self._model = (VocabOnly if vocab_only else load_model)(model_path, n_threads=n_threads)
        if rope_freq_base or rope_freq_scale:
            if self._model.is_encoder:
                raise ValueError(f"rope_freq_base/rope_freq_scale: {self._model.arch_name} has learned positions, "
                                 "not RoPE")
            self._model.override_rope(rope_freq_base, rope_freq_scale)
        self.tokenizer_ = self._model.tokenizer
        self.metadata = {k: v for k, v in self._model.gguf.metadata.items() if not isinstance(v, (list, np.ndarray))}
        n_ctx = n_ctx or self._model.hp.n_ctx_train or 2048
        self._n_ctx, self.n_batch, self.n_threads = int(n_ctx), int(n_batch), self._model.n_threads
        self.n_threads_batch = set_threads(n_threads_batch or self.n_threads)   # checked here, not at eval
        set_threads(self.n_threads)
        self._seed = seed
        self.logits_all = logits_all
        self._input_ids = np.zeros(self._n_ctx, np.int64)
        self._last_logits = None
        self.chat_format = chat_format
        # llama-cpp-python's parameter structs, read by integrations (llama-index: context_params.n_ctx)
        self.context_params = SimpleNamespace(n_ctx=self._n_ctx, n_batch=self.n_batch, n_ubatch=self.n_batch,
                                              n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                                              embeddings=self.embedding, pooling_type=pooling_type)
        self.model_params = SimpleNamespace(vocab_only=bool(vocab_only), use_mmap=True, use_mlock=False,
                                            n_gpu_layers=0)
        if self._model.is_encoder or vocab_only:   # no KV cache, logits or chat template
            self._cache = self._chat_template = None
            self.scores = np.empty((0, self._model.hp.n_vocab), np.float32)
        else:
            self._cache = self._model.new_cache(self._n_ctx, _CACHE_TYPES[type_k], self.n_batch)
            self.scores = np.empty((self._n_ctx if logits_all else 1, self._model.hp.n_vocab), np.float32)
            self._chat_template = ChatTemplate.for_model(self.tokenizer_, self._model.arch_name, chat_format)
        if verbose:
            print(f"nibble: loaded {self.model_path} ({self._model.arch_name}, {self._model.hp.n_layer} layers, "
                  f"n_ctx={self._n_ctx}, {self.n_threads} threads{', vocabulary only' if vocab_only else ''}) "
                  f"in {time.perf_counter() - started:.2f} s", file=sys.stderr)

    # ---- state ----

    @property
    def n_tokens(self) -> int:
        return self._cache.n_tokens if self._cache is not None else 0

    @property
    def input_ids(self) -> np.ndarray:
        return self._input_ids[: self.n_tokens]

    @property
    def eval_logits(self):
        from collections import deque
        rows = self.scores[: self.n_tokens] if self.logits_all else self.scores[:1]
        return deque(rows.tolist(), maxlen=self._n_ctx if self.logits_all else 1)

    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self._model.hp.n_vocab

    def n_embd(self) -> int:
        return self._model.hp.n_embd

    def token_bos(self) -> int:
        return self.tokenizer_.bos_id

    def token_eos(self) -> int:
        return self.tokenizer_.eos_id

    def pooling_type(self) -> int:
        """The pooling embed() applies (llama.cpp's enum: 0 none, 1 mean, 2 cls, 3 last)."""
        from .embedding import file_pooling
        return self._pooling if self._pooling >= 0 else file_pooling(self._model)

    def reset(self):
        """Forget the evaluated tokens (the next call evaluates its whole prompt)."""
        if self._cache is not None:
            self._cache.truncate(0)
        self._last_logits = None

    def save_state(self) -> LlamaState:
        """The context as it is now (tokens, logits, KV cache), for load_state()."""
        self._require_decoder()
        return LlamaState(input_ids=self.input_ids.copy(), scores=self.scores.copy(), n_tokens=self.n_tokens,
                          seed=self._seed, kv=self._cache.snapshot(),
                          last_logits=None if self._last_logits is None else np.array(self._last_logits))

    def load_state(self, state: LlamaState):
        """Return to a saved context: the next call reuses its tokens as if they had just been evaluated."""
        self._require_decoder()
        if state.scores.shape != self.scores.shape:
            raise ValueError(f"the saved state has {state.scores.shape[0]} rows of logits for {state.scores.shape[1]} "
                             f"tokens; this Llama keeps {self.scores.shape[0]} for {self.scores.shape[1]} "
                             "(load it into a Llama of the same model, n_ctx and logits_all)")
        self._cache.restore(state.kv)
        self._input_ids[:state.n_tokens] = state.input_ids
        self.scores[...] = state.scores
        self._last_logits = None if state.last_logits is None else np.array(state.last_logits)
        self._seed = state.seed

    def _require_decoder(self):
        if isinstance(self._model, VocabOnly):
            raise ValueError(f"{self.model_path} was loaded with vocab_only=True: it tokenizes, but has no "
                             "weights to run")
        if self._model.is_encoder:
            raise ValueError(f"{self.model_path} is an encoder ({self._model.arch_name}): it makes embeddings, not "
                             "text; call embed() or create_embedding()")

    # ---- tokens ----

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """llama_tokenize: add_bos adds the vocabulary's BOS/EOS, special parses control-token text."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        return self.tokenizer_.encode(text.decode("utf-8", errors="replace"), add_special=add_bos,
                                      parse_special=special)

    def detokenize(self, tokens, prev_tokens=None, special: bool = False) -> bytes:
        tokens = [int(t) for t in tokens]
        data = b"".join(self.tokenizer_.token_bytes(t, special) for t in tokens)
        if not prev_tokens and tokens and tokens[0] == self.token_bos() and data.startswith(b" "):
            data = data[1:]
        return data

    # ---- evaluation ----

    def eval(self, tokens):
        """Evaluate tokens after those already in the context, n_batch at a time."""
        self._require_decoder()
        tokens = [int(t) for t in tokens]
        if self.n_tokens + len(tokens) > self._n_ctx:
            raise ContextFullError(f"{self.n_tokens + len(tokens)} tokens do not fit the context window of "
                                   f"{self._n_ctx} tokens (raise n_ctx)")
        for start in range(0, len(tokens), self.n_batch):
            batch = tokens[start:start + self.n_batch]
            past = self.n_tokens
            if self.n_threads_batch != self.n_threads:       # prompts on n_threads_batch, tokens on n_threads
                set_threads(self.n_threads_batch if len(batch) > 1 else self.n_threads)
            logits = self._model.forward(batch, self._cache, all_logits=self.logits_all)
            self._input_ids[past:past + len(batch)] = batch
            if self.logits_all:
                self.scores[past:past + len(batch)] = logits
                self._last_logits = logits[-1]
            else:
                self.scores[0] = logits
                self._last_logits = logits

    def _check_prompt_fits(self, tokens):
        if len(tokens) > self._n_ctx:
            raise ContextFullError(f"Requested tokens ({len(tokens)}) exceed context window of {self._n_ctx}")

    def _evaluate_prompt(self, tokens):
        """Reuse the longest cached prefix (keeping at least one token to evaluate), evaluate the rest."""
        self._check_prompt_fits(tokens)
        self._cache.truncate(min(shared_prefix(self.input_ids, tokens), len(tokens) - 1))
        self.eval(tokens[self.n_tokens:])

    def generate(self, tokens, sampling: SamplingParams, seed=None, grammar: Grammar | None = None) -> Iterator[int]:
        """Yield sampled tokens after evaluating the prompt `tokens`; stops at end-of-generation or a full
        context. The caller decides when to stop asking. With a `grammar`, only tokens it allows are sampled
        (and end-of-generation only once the text is complete)."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("the prompt is empty: give at least one token")
        constraint = grammar.constraint(self.tokenizer_, self.n_vocab()) if grammar is not None else None
        self._evaluate_prompt(tokens)
        sampler = Sampler(sampling, self._seed if seed is None else seed)
        while True:
            history = self.input_ids[-sampling.penalty_last_n:] if sampling.penalty_last_n else ()
            token = sampler.sample(self._last_logits, history, constraint)
            yield token
            if self.tokenizer_.is_eog(token) or self.n_tokens >= self._n_ctx:
                return
            self.eval([token])

    # ---- completions ----

    def create_completion(self, prompt, suffix=None, max_tokens: int | None = 16, temperature: float = 0.8,
                          top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0, logprobs=None,
                          echo: bool = False, stop=None, frequency_penalty: float = 0.0,
                          presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                          stream: bool = False, seed: int | None = None, logit_bias=None, model=None, grammar=None,
                          **kwargs):
        """Complete `prompt` (text or token ids); a text_completion dict, or an iterator of chunks. `grammar`
        (a LlamaGrammar, or GBNF text) constrains the completion."""
        self._require_decoder()
        _refuse_unsupported(kwargs)
        if logprobs is not None:
            if not isinstance(logprobs, int) or isinstance(logprobs, bool) or logprobs < 0:
                raise ValueError(f"logprobs must be a number of top tokens (0 or more), got {logprobs!r}")
            if echo and stream:
                raise ValueError("logprobs with echo=True is not streamed: call without stream=True")
            if echo and not self.logits_all:
                raise ValueError("logprobs with echo=True needs the prompt's logits: create the Llama with "
                                 "logits_all=True")
        sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  typical_p=typical_p, repeat_penalty=repeat_penalty,
                                  penalty_last_n=self.last_n_tokens_size, frequency_penalty=frequency_penalty,
                                  presence_penalty=presence_penalty,
                                  logit_bias={int(k): float(v) for k, v in (logit_bias or {}).items()})
        prompt_tokens = (text_prompt_tokens(self.tokenizer_, prompt) if suffix is None else
                         infill_prompt_tokens(self.tokenizer_, prompt, suffix, self.spm_infill))
        prompt_text = prompt if isinstance(prompt, str) else \
            self.detokenize(prompt_tokens).decode("utf-8", errors="replace")
        self._check_prompt_fits(prompt_tokens)   # now, not when a stream is first read
        steps = [] if logprobs is not None else None
        pieces = self._completion(prompt_tokens, sampling, max_tokens, stop, seed, steps, as_grammar(grammar))
        meta = new_meta(model or self.model_path)
        if stream:
            writer = None if logprobs is None else LogprobWriter(self.tokenizer_, len(prompt_text))
            return self._completion_stream(meta, pieces, prompt_text if echo else None, steps, writer, logprobs)
        text, finish_reason, n_completion = "", None, 0
        for piece, finish_reason, n_completion in pieces:
            text += piece
        response = completion_response(meta, prompt_text + text if echo else text, finish_reason,
                                       len(prompt_tokens), n_completion)
        if logprobs is not None:
            response["choices"][0]["logprobs"] = self._logprobs(prompt_tokens, prompt_text, steps[:n_completion],
                                                                logprobs, echo)
        return response

    def _logprobs(self, prompt_tokens, prompt_text, steps, n_top, echo) -> dict:
        """llama-cpp-python's logprobs object: each token's text, its offset in the returned text, its log-
        probability under the logits before it, and the n_top likeliest tokens there (the token itself
        added). With echo the prompt comes first (BOS left out; the first token has none, as in OpenAI's)."""
        entries = list(steps)
        if echo:
            start = 1 if prompt_tokens and prompt_tokens[0] == self.token_bos() else 0
            entries = [(prompt_tokens[j], self.scores[j - 1] if j > 0 else None)
                       for j in range(start, len(prompt_tokens))] + entries
            if entries:
                entries[0] = (entries[0][0], None)
        writer = LogprobWriter(self.tokenizer_, 0 if echo else len(prompt_text),
                               after_bos=bool(entries) and entries[0][0] == self.token_bos())
        return writer.write([(token, None if logits is None else scored(token, logits, n_top))
                             for token, logits in entries])

    __call__ = create_completion

    def _completion_stream(self, meta, pieces, echo_text, steps=None, writer=None, n_top=0):
        """Chunks as TextStream lets text out; with a logprobs writer each chunk carries the tokens generated
        since the one before (a stop string held back can put a token's text in a later chunk)."""
        if echo_text:
            yield completion_chunk(meta, echo_text)
        written = 0
        for piece, finish_reason, count in pieces:
            chunk = completion_chunk(meta, piece, finish_reason)
            if writer is not None and count > written:
                chunk["choices"][0]["logprobs"] = writer.write([(token, scored(token, logits, n_top))
                                                                for token, logits in steps[written:count]])
                written = count
            yield chunk

    def _completion(self, prompt_tokens, sampling, max_tokens, stop, seed, steps=None, grammar=None):
        """Yield (text, finish_reason, completion_tokens) as TextStream lets text out; the last item carries
        the finish reason ("stop" or "length"). `steps`, when a list, receives (token, the logits it was
        sampled from) for each generated token."""
        stream = TextStream(self.tokenizer_, stop, completion_budget(self._n_ctx, len(prompt_tokens), max_tokens))
        for token in self.generate(prompt_tokens, sampling, seed, grammar):
            if steps is not None:
                steps.append((token, np.array(self._last_logits, np.float32)))
            text, finish_reason = stream.push(token)
            if finish_reason is not None:
                yield text, finish_reason, stream.count
                return
            if text:
                yield text, None, stream.count
        yield *stream.end("length"), stream.count    # the context is full

    def create_chat_completion(self, messages, functions=None, function_call=None, tools=None, tool_choice=None,
                               temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               typical_p: float = 1.0, stream: bool = False, stop=None, seed: int | None = None,
                               response_format=None, max_tokens: int | None = None, presence_penalty: float = 0.0,
                               frequency_penalty: float = 0.0, repeat_penalty: float = 1.0, logit_bias=None,
                               logprobs: bool | None = None, top_logprobs: int | None = None, model=None,
                               grammar=None, parallel_tool_calls: bool = False, **kwargs):
        """Answer a conversation with the model's chat template: chat.completion, or chunks when streaming.
        response_format (OpenAI's json_object / json_schema) or grammar constrains the reply; with tools
        (or legacy functions) the reply may call them (see runtime.tools), and a stream of such a reply comes
        when it is complete."""
        self._require_decoder()
        _refuse_unsupported(kwargs)
        if response_format is not None and grammar is not None:
            raise ValueError("give response_format or grammar, not both")
        grammar = Grammar.for_response_format(response_format) if response_format is not None else as_grammar(grammar)
        tools, tool_choice = check_tools(tools, tool_choice, functions, function_call)
        plan = tool_plan(self._chat_template.source, messages, tools, tool_choice, parallel_tool_calls) if tools else None
        if plan is not None and grammar is not None:
            raise ValueError("give tools or response_format/grammar, not both")
        prompt_tokens = chat_prompt_tokens(self._chat_template, self.tokenizer_, plan.messages if plan else messages,
                                           tools=plan.tools if plan else None)
        n_logprobs = (top_logprobs or 0) if logprobs else None
        completion = self.create_completion(prompt_tokens, max_tokens=max_tokens, temperature=temperature,
                                            top_p=top_p, min_p=min_p, typical_p=typical_p, stop=stop,
                                            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                            repeat_penalty=repeat_penalty, top_k=top_k, stream=stream and not plan,
                                            seed=seed, logit_bias=logit_bias, model=model,
                                            grammar=plan.grammar if plan else grammar,
                                            logprobs=n_logprobs)
        if stream and not plan:
            return self._chat_stream(completion, n_logprobs)
        choice = completion["choices"][0]
        meta = {**completion, "id": "chat" + completion["id"]}
        content, calls = plan.parse(choice["text"]) if plan else (choice["text"], [])
        if stream:
            return tool_reply_chunks(meta, content, calls, choice["finish_reason"])
        response = chat_response(meta, content, choice["finish_reason"], completion["usage"]["prompt_tokens"],
                                 completion["usage"]["completion_tokens"], calls)
        if calls and functions is not None:      # the legacy functions API answers with function_call
            response["choices"][0]["message"]["function_call"] = calls[0]["function"]
        if n_logprobs is not None:
            response["choices"][0]["logprobs"] = chat_logprobs(choice["logprobs"], n_logprobs)
        return response

    @staticmethod
    def _chat_stream(completion_chunks, n_top=None):
        """Completion chunks as chat chunks; with n_top, each carries its tokens' logprobs in OpenAI's shape."""
        chunks = iter(completion_chunks)
        first = next(chunks)
        meta = {**first, "id": "chat" + first["id"]}

        def logprobs(choice):
            return chat_logprobs(choice["logprobs"], n_top) if n_top is not None and choice["logprobs"] else None
        pieces = ((c["choices"][0]["text"], c["choices"][0]["finish_reason"], logprobs(c["choices"][0]))
                  for c in itertools.chain([first], chunks))
        yield from chat_chunks(meta, pieces)

    # ---- embeddings ----

    def embed(self, input, normalize: bool = False, truncate: bool = True, return_count: bool = False):
        """Embeddings of a text (a list of floats) or of a list of texts (a list of them), pooled as
        pooling_type() says (pooling none: a list of per-token vectors per text). Texts are tokenized with
        BOS/CLS, cut to n_batch tokens when `truncate`, and run n_batch tokens of texts per forward pass.
        With return_count: (embeddings, number of tokens)."""
        if not self.embedding:
            raise RuntimeError("Llama model must be created with embedding=True to call this method")
        texts = [input] if isinstance(input, str) else list(input)
        limit = min(self.n_batch, self._model.max_tokens if self._model.is_encoder else self._n_ctx)
        token_lists = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"input {index} is a {type(text).__name__}; embed() takes a string or a list of strings")
            tokens = self.tokenize(text.encode("utf-8"))
            if truncate:
                tokens = tokens[:limit]
            if not tokens:
                raise ValueError(f"input {index} gives no tokens: embed a non-empty text")
            if len(tokens) > limit:
                raise ValueError(f"Requested tokens ({len(tokens)}) exceed batch size of {limit}")
            token_lists.append(tokens)
        vectors = embed_tokens(self._model, token_lists, self.pooling_type(), self.n_batch, normalize)
        data = [vector.tolist() for vector in vectors]
        output = data[0] if isinstance(input, str) else data
        n_tokens = sum(len(tokens) for tokens in token_lists)
        return (output, n_tokens) if return_count else output

    def create_embedding(self, input, model: str | None = None) -> dict:
        """OpenAI's embedding response for a text or a list of texts (vectors as embed() gives them)."""
        vectors, n_tokens = self.embed(input if isinstance(input, list) else [input], return_count=True)
        return {"object": "list",
                "data": [{"object": "embedding", "embedding": vector, "index": i} for i, vector in enumerate(vectors)],
                "model": model if model is not None else self.model_path,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    def close(self):
        self._model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


