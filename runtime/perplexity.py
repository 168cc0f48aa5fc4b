"""Perplexity and KL divergence over a text, as llama.cpp's llama-perplexity computes them.

The text is tokenized once (BOS as the vocabulary says) and cut into chunks of n_ctx tokens; each
chunk is evaluated from an empty cache with its first token replaced by BOS (when the model adds
one), and only its second half is scored: token j + 1 from the logits at j, for j from n_ctx/2 to
n_ctx - 2, so every scored token has at least n_ctx/2 tokens of context.
With a base model, both see the same tokens and each scored position adds KL(base || model) over
the whole vocabulary and whether their most likely tokens agree.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

import cpu_kernels as K

ROWS_PER_STEP = 64     # log-softmax this many rows at a time in float64


@dataclass
class PerplexityResult:
    n_ctx: int
    chunk_ppl: list = field(default_factory=list)     # running perplexity after each chunk, as llama.cpp prints
    nll: list = field(default_factory=list)           # per scored token
    kl: list = field(default_factory=list)            # per scored token, with a base model
    same_top: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ppl(self):
        return math.exp(np.mean(self.nll))

    @property
    def ppl_stderr(self):
        """Standard error of the perplexity from that of the mean negative log-likelihood (delta method)."""
        return self.ppl * float(np.std(self.nll, ddof=1)) / math.sqrt(len(self.nll))

    @property
    def kl_mean(self):
        return float(np.mean(self.kl))

    @property
    def kl_stderr(self):
        return float(np.std(self.kl, ddof=1)) / math.sqrt(len(self.kl))

    @property
    def top1_agreement(self):
        return float(np.mean(self.same_top))


def log_softmax(logits):
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(model, tokens, n_ctx=512, *, base=None, max_chunks=None, progress=None) -> PerplexityResult:
    """Score `tokens` with a runtime Model. `base` (optional) is another Model of the same vocabulary, or
    the list `chunk_log_probs(base, ...)` returned, to compare several models with one base run."""
    n_chunks = _n_chunks(tokens, n_ctx, max_chunks)
    if hasattr(base, "hp") and base.hp.n_vocab != model.hp.n_vocab:
        raise ValueError(f"the base model's vocabulary ({base.hp.n_vocab}) differs from the model's "
                         f"({model.hp.n_vocab}); KL divergence needs the same tokens")
    base_chunks = None if base is None else \
        chunk_log_probs(base, tokens, n_ctx, n_chunks) if hasattr(base, "hp") else iter(base)
    result = PerplexityResult(n_ctx)
    started = time.perf_counter()
    if base_chunks is None:          # perplexity alone: no log-softmax over the whole vocabulary
        scored = ((nll, None) for _, nll in chunk_nll(model, tokens, n_ctx, n_chunks))
    else:
        scored = ((-logp[np.arange(len(targets)), targets], logp)
                  for targets, logp in chunk_log_probs(model, tokens, n_ctx, n_chunks))
    for c, (nll, logp) in enumerate(scored):
        result.nll.extend(nll.tolist())
        if base_chunks is not None:
            _, base_logp = next(base_chunks)
            p = np.exp(base_logp)
            result.kl.extend(np.sum(p * (base_logp - logp), axis=-1).tolist())
            result.same_top.extend((base_logp.argmax(-1) == logp.argmax(-1)).tolist())
        result.chunk_ppl.append(result.ppl)
        if progress:
            progress(c + 1, n_chunks, result)
    result.seconds = time.perf_counter() - started
    return result


def chunk_logits(model, tokens, n_ctx, n_chunks):
    """Per chunk: (the scored target tokens, the logits at the positions that predict them)."""
    tokens = np.asarray(tokens, np.int64)
    bos = model.tokenizer.bos_id if model.tokenizer.add_bos else None
    first = n_ctx // 2
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        logits = model.forward(chunk, model.new_cache(n_ctx), all_logits=True, first_logit=first)[:n_ctx - 1 - first]
        yield chunk[first + 1:], logits


def chunk_log_probs(model, tokens, n_ctx, n_chunks):
    """Per chunk: (the scored target tokens, log-probabilities at the positions that predict them).

    Lazy (a generator) when scoring once; wrap it in list() to reuse a base model's run."""
    for targets, logits in chunk_logits(model, tokens, n_ctx, n_chunks):
        yield targets, np.concatenate([log_softmax(logits[i:i + ROWS_PER_STEP])
                                       for i in range(0, len(logits), ROWS_PER_STEP)])


def chunk_nll(model, tokens, n_ctx, n_chunks):
    """Per chunk: (the scored target tokens, their negative log-likelihoods), without the log-softmax of the
    whole vocabulary (what perplexity alone needs)."""
    for targets, logits in chunk_logits(model, tokens, n_ctx, n_chunks):
        nll = np.empty(len(targets), np.float64)
        K.token_nll(np.ascontiguousarray(logits), targets, nll)
        yield targets, nll


def _n_chunks(tokens, n_ctx, max_chunks):
    n_chunks = len(tokens) // n_ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1 or n_ctx < 4:
        raise ValueError(f"the text has {len(tokens)} tokens; perplexity with -c {n_ctx} needs at least "
                         f"{max(2 * n_ctx, 8)} (a longer text or a smaller -c)")
    return n_chunks
