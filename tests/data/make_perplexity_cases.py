"""Records llama.cpp's perplexity on the shipped text, for tests/test_perplexity.py.

llama-perplexity's rules on llama-cpp-python's logits: chunks of N_CTX tokens, BOS as the first token
when the vocabulary adds one, the second half of each chunk scored.
Run once where llama-cpp-python is installed (it is not a nibble dependency):
    python tests/data/make_perplexity_cases.py
"""
import json
from pathlib import Path

import numpy as np

from runtime import Tokenizer, resolve_model
from runtime.perplexity import log_softmax

TEXT = Path(__file__).parents[2] / "benchmarks" / "data" / "python-language-reference.txt"
OUT = Path(__file__).parent / "perplexity-llama-cpp.json"
N_CTX, N_CHUNKS = 128, 3


def main():
    from llama_cpp import Llama
    cases = {}
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        path = resolve_model(name)
        tokenizer = Tokenizer.from_gguf(path)
        tokens = tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_special=True, parse_special=False)
        llm = Llama(str(path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, logits_all=True, verbose=False)
        nll = []
        for c in range(N_CHUNKS):
            chunk = list(tokens[c * N_CTX:(c + 1) * N_CTX])
            if tokenizer.add_bos:
                chunk[0] = tokenizer.bos_id
            llm.reset()
            llm.eval(chunk)
            logp = log_softmax(np.array(llm.scores[N_CTX // 2:N_CTX - 1]))
            targets = chunk[N_CTX // 2 + 1:]
            nll += (-logp[np.arange(len(targets)), targets]).tolist()
        cases[name] = {"n_ctx": N_CTX, "chunks": N_CHUNKS, "n_tokens": len(tokens), "first_tokens": tokens[:16],
                       "ppl": float(np.exp(np.mean(nll)))}
    OUT.write_text(json.dumps({"made_by": "llama-cpp-python 0.3.36, llama-perplexity's chunk rules",
                               "text": TEXT.name, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
