"""Choosing the next token from logits, in llama-cpp-python's order.

logit bias -> repeat/frequency/presence penalties over the last `penalty_last_n` tokens -> a grammar's mask
(constrained decoding: the tokens it forbids get -inf) -> then either
greedy (temperature <= 0) or top-k -> typical -> top-p -> min-p -> temperature -> a draw from a seeded
generator.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

import cpu_kernels as K

DEFAULT_SEED = 0xFFFFFFFF   # llama.cpp's LLAMA_DEFAULT_SEED: pick a random seed


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    logit_bias: dict = field(default_factory=dict)

    def check(self):
        """One clear error for a value llama.cpp would reject or misread."""
        if not all(0 <= value <= 1 for value in (self.top_p, self.min_p, self.typical_p)):
            raise ValueError(f"top_p, min_p and typical_p must be within [0, 1], got top_p={self.top_p}, "
                             f"min_p={self.min_p}, typical_p={self.typical_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be positive, got {self.repeat_penalty}")
        return self


class Sampler:
    """Stateful only through its random generator: the same seed gives the same choices."""

    def __init__(self, params: SamplingParams, seed: int | None = None):
        self.params = params.check()
        self.rng = np.random.default_rng(None if seed is None or seed == DEFAULT_SEED or seed < 0 else seed)

    def sample(self, logits: np.ndarray, history=(), constraint=None) -> int:
        """One token id; under a `constraint` (a grammar.Constraint) only one it allows, which it then accepts."""
        p = self.params
        logits = np.array(logits, dtype=np.float32)
        for token, bias in p.logit_bias.items():
            logits[int(token)] += np.float32(bias)
        if p.penalty_last_n and (p.repeat_penalty != 1.0 or p.frequency_penalty or p.presence_penalty):
            _apply_penalties(logits, list(history)[-p.penalty_last_n:], p)
        if constraint is not None:
            constraint.mask(logits)
        token = self._choose(logits)
        if constraint is not None:
            constraint.accept(token)
        return token

    def _choose(self, logits) -> int:
        p = self.params
        if p.temperature <= 0:
            return int(np.argmax(logits))
        ids = K.top_k(logits, p.top_k) if 0 < p.top_k < logits.size else np.argsort(-logits, kind="stable")
        values = logits[ids].astype(np.float64)
        if p.typical_p < 1.0:
            ids, values = _typical(ids, values, p.typical_p)
        probs = _softmax(values)
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            ids, values = ids[:keep], values[:keep]
        if p.min_p > 0.0:
            keep = values >= values[0] + np.log(p.min_p)
            ids, values = ids[keep], values[keep]
        probs = _softmax(values / p.temperature)
        return int(ids[self.rng.choice(len(ids), p=probs)])


def _typical(ids, values, typical_p):
    """Locally typical sampling (llama.cpp's typical sampler, min_keep 1): keep the tokens whose surprise is
    closest to the distribution's entropy until their probability passes typical_p; back in logit order."""
    probs = _softmax(values)
    surprise = -np.log(np.maximum(probs, np.finfo(np.float64).tiny))
    entropy = float(np.sum(probs * surprise))
    order = np.argsort(np.abs(surprise - entropy), kind="stable")
    passed = np.nonzero(np.cumsum(probs[order]) > typical_p)[0]
    kept = np.sort(order[:passed[0] + 1 if passed.size else order.size])    # ids came sorted by logit
    return ids[kept], values[kept]


def _apply_penalties(logits, recent, p):
    """llama.cpp's penalties sampler: repeat divides positive logits (multiplies negative ones), then
    frequency and presence subtract count * f and p for every token seen recently."""
    for token, count in Counter(recent).items():
        value = logits[token]
        value = value / p.repeat_penalty if value > 0 else value * p.repeat_penalty
        logits[token] = value - count * p.frequency_penalty - p.presence_penalty


def _softmax(values):
    e = np.exp(values - values.max())
    return e / e.sum()
