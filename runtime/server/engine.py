"""Continuous batching: the slots of `nibble serve` decode together, one pass over the weights per step.

One thread runs the model. Each step it gathers one token from every slot that is generating and the
next piece of every prompt still being read (within `n_batch` rows in all, prompts first come first
served), runs them as one `Model.forward_batch`, samples each sequence's next token and hands the text to
the request's event loop. A new request joins at the next step; a long prompt is read a piece per step, so
running streams keep flowing. Each slot keeps its tokens in its cache after its request ends: a request
goes to the free slot whose cache shares the longest prefix with its prompt and evaluates only the rest.

Embedding requests run on the same thread between steps, one batch of at most `n_batch` tokens of texts
at a time (an encoder model has no slots and serves embeddings only).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import cpu_kernels as K

from ..completion import TextStream, scored, shared_prefix
from ..embedding import batches, normalize, pool
from ..model import Model
from ..sampling import Sampler, SamplingParams


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting line is full."""


@dataclass
class Job:
    """One request's generation. `emit` is called from the engine's thread with
    ("text", text, scores) while it runs and finally ("end", text, finish_reason, n_prompt, n_completion,
    scores) or ("error", message); scores are the (token, completion.scored(...)) of the tokens since the
    last event when n_logprobs is set (else empty). It must hand the event over to the request's own thread
    (see app.py)."""
    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: list[str]
    emit: Callable[[tuple], None]
    seed: int | None = None
    constraint: object = None       # a grammar.Constraint: the tokens its grammar allows, made for this job
    n_logprobs: int | None = None   # record each token's logprob and this many alternatives
    cancelled: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class EmbeddingJob:
    """One request's texts as token lists, pooled by `pooling` (llama.cpp's enum) and L2-normalized. `emit`
    is called from the engine's thread with ("end", vectors) or ("error", message)."""
    inputs: list[list[int]]
    pooling: int
    emit: Callable[[tuple], None]
    cancelled: bool = False
    vectors: list = field(default_factory=list)
    pending: object = None          # the batches still to run

    def run_next_batch(self, model, n_batch) -> bool:
        """Embed the next batch of texts; True when every text is done."""
        if self.pending is None:
            self.pending = batches(self.inputs, n_batch)
        batch = next(self.pending, None)
        if batch is None:
            return True
        self.vectors += [normalize(pool(rows, self.pooling)) for rows in model.hidden_states(batch)]
        return len(self.vectors) == len(self.inputs)


class Slot:
    """A sequence's KV cache, the tokens it holds, and the job using it (None when free)."""

    def __init__(self, index, cache):
        self.index, self.cache = index, cache
        self.tokens: list[int] = []      # tokens whose keys and values are in the cache
        self.job: Job | None = None
        self.todo: list[int] = []        # tokens still to evaluate (the rest of the prompt, or the last sample)
        self.decoding = False            # the prompt is read: todo is the token sampled last
        self.sampler = self.stream = None
        self.scores: list = []           # logprobs of tokens not yet sent with an event
        self.last_used = 0.0

    def start(self, job, tokenizer, shared):
        """Take `job`, whose prompt shares `shared` leading tokens with the cache: keep them (at least one
        token is left to evaluate)."""
        kept = self.cache.truncate(min(shared, len(job.prompt) - 1))
        del self.tokens[kept:]
        self.job, self.todo, self.decoding = job, list(job.prompt[kept:]), False
        self.sampler = Sampler(job.sampling, job.seed)
        self.stream = TextStream(tokenizer, job.stop, job.max_tokens)
        self.scores = []
        return kept


class Engine:
    """The slots, the waiting line and the thread that runs the model for them."""

    def __init__(self, model: Model, n_slots: int = 4, n_ctx: int = 2048, n_batch: int = 256,
                 max_queue: int = 64, cache_type: str = "f16"):
        self.model, self.n_ctx, self.n_batch, self.max_queue = model, n_ctx, n_batch, max_queue
        caches = [] if model.is_encoder else model.new_caches(n_slots, n_ctx, cache_type, n_batch)
        self.slots = [Slot(i, cache) for i, cache in enumerate(caches)]
        self.waiting: deque[Job] = deque()
        self.embeddings: deque[EmbeddingJob] = deque()
        self.lock = threading.Condition()
        self.stats = dict(requests=0, prompt_tokens=0, cached_tokens=0, generated_tokens=0, prompt_seconds=0.0,
                          decode_seconds=0.0, steps=0, errors=0, rejected=0, embedding_requests=0,
                          embedding_tokens=0)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="nibble-engine", daemon=True)
        self._thread.start()

    # ---- from request threads ----

    def submit(self, job: Job):
        with self.lock:
            if len(self.waiting) >= self.max_queue and not any(s.job is None for s in self.slots):
                self.stats["rejected"] += 1
                raise QueueFull(f"all {len(self.slots)} slots are busy and {len(self.waiting)} requests wait")
            self.waiting.append(job)
            self.stats["requests"] += 1
            self.lock.notify()

    def submit_embedding(self, job: EmbeddingJob):
        with self.lock:
            if len(self.embeddings) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"{len(self.embeddings)} embedding requests wait")
            self.embeddings.append(job)
            self.stats["embedding_requests"] += 1
            self.lock.notify()

    def cancel(self, job: Job):
        """The client went away: its slot is freed at the next step."""
        job.cancelled = True
        with self.lock:
            self.lock.notify()

    @property
    def busy_slots(self) -> int:
        return sum(s.job is not None for s in self.slots)

    @property
    def queue_length(self) -> int:
        return len(self.waiting)

    def close(self):
        with self.lock:
            self._running = False
            self.lock.notify()
        self._thread.join(timeout=30)

    # ---- the engine's thread ----

    def _run(self):
        K.set_threads(self.model.n_threads)   # Numba's thread count is per calling thread
        while True:
            with self.lock:
                while self._running and not self.waiting and not self.embeddings and not any(s.job for s in self.slots):
                    self.lock.wait()
                if not self._running:
                    break
                self._admit()
                embedding = self.embeddings[0] if self.embeddings else None
            self._drop_cancelled()
            try:
                self._step()
            except Exception as error:   # one bad step ends the requests in it, never the server
                self.stats["errors"] += 1
                for slot in self.slots:
                    if slot.job is not None:
                        slot.job.emit(("error", f"generation failed: {error}"))
                        self._free(slot, forget=True)
            if embedding is not None:
                self._embed_step(embedding)
        for slot in self.slots:
            if slot.job is not None:
                slot.job.emit(("error", "the server is shutting down"))
        for job in [*self.waiting, *self.embeddings]:
            job.emit(("error", "the server is shutting down"))

    def _embed_step(self, job: EmbeddingJob):
        """One batch of the oldest embedding request, between generation steps."""
        done = True
        try:
            if not job.cancelled:
                done = job.run_next_batch(self.model, self.n_batch)
                if done:
                    self.stats["embedding_tokens"] += sum(len(tokens) for tokens in job.inputs)
                    job.emit(("end", job.vectors))
        except Exception as error:
            self.stats["errors"] += 1
            job.emit(("error", f"embedding failed: {error}"))
        if done:
            with self.lock:
                self.embeddings.popleft()

    def _admit(self):
        """Waiting jobs into free slots (called with the lock held)."""
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                job.emit(("error", "cancelled"))
                continue
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            self.waiting.popleft()
            shared, _, slot = max(((shared_prefix(s.tokens, job.prompt), -s.last_used, s) for s in free),
                                  key=lambda choice: choice[:2])
            kept = slot.start(job, self.model.tokenizer, shared)
            self.stats["cached_tokens"] += kept

    def _drop_cancelled(self):
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                slot.job.emit(("error", "cancelled"))
                self._free(slot)

    def _free(self, slot, forget=False):
        slot.job, slot.todo, slot.sampler, slot.stream, slot.decoding = None, [], None, None, False
        slot.last_used = time.perf_counter()
        if forget:
            slot.cache.truncate(0)
            slot.tokens.clear()

    def _step(self):
        """One forward over every generating slot's next token and the next pieces of waiting prompts."""
        decoding = [s for s in self.slots if s.job is not None and s.decoding]
        reading = sorted((s for s in self.slots if s.job is not None and not s.decoding),
                         key=lambda s: s.job.queued_at)
        budget = max(self.n_batch - len(decoding), min(16, self.n_batch))   # prompts always move on
        batch = [(s, s.todo) for s in decoding]
        for slot in reading:
            if budget <= 0:
                break
            piece = slot.todo[:budget]
            batch.append((slot, piece))
            budget -= len(piece)
        if not batch:
            return
        started = time.perf_counter()
        logits = self.model.forward_batch([(piece, slot.cache) for slot, piece in batch])
        elapsed = time.perf_counter() - started
        n_prompt_rows = sum(len(piece) for slot, piece in batch if slot not in decoding)
        rows = n_prompt_rows + len(decoding)
        self.stats["steps"] += 1
        self.stats["prompt_tokens"] += n_prompt_rows
        self.stats["prompt_seconds"] += elapsed * n_prompt_rows / rows
        self.stats["decode_seconds"] += elapsed * len(decoding) / rows
        for (slot, piece), row in zip(batch, logits):
            slot.tokens.extend(piece)
            del slot.todo[:len(piece)]
            if not slot.todo:
                try:
                    self._sample(slot, row)
                except Exception as error:   # one request's sampling fails: that request ends, not the step
                    self.stats["errors"] += 1
                    slot.job.emit(("error", f"sampling failed: {error}"))
                    self._free(slot)

    def _sample(self, slot, logits):
        job, params = slot.job, slot.job.sampling
        history = slot.tokens[-params.penalty_last_n:] if params.penalty_last_n else ()
        token = slot.sampler.sample(logits, history, job.constraint)
        text, finish_reason = slot.stream.push(token)
        is_eog = self.model.tokenizer.is_eog(token)
        if job.n_logprobs is not None and not is_eog:
            slot.scores.append((token, scored(token, logits, job.n_logprobs)))
        self.stats["generated_tokens"] += not is_eog
        if finish_reason is None and len(slot.tokens) >= self.n_ctx:
            more, finish_reason = slot.stream.end("length")
            text += more
        if finish_reason is not None:
            job.emit(("end", text, finish_reason, len(job.prompt), slot.stream.count, slot.scores))
            self._free(slot)
            return
        slot.todo, slot.decoding = [token], True
        scores, slot.scores = slot.scores, []
        job.emit(("text", text, scores))     # every token, even one whose text waits (a split character): as llama-server

