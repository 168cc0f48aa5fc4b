"""Records llama.cpp's WordPiece token ids and sentence embeddings for tests/test_embedding.py.

The model is all-MiniLM-L6-v2 as `nibble pull all-minilm-l6-v2` converts it (F16; its sha256 is kept so
the test knows it has the same file). Token ids: every string of the two tokenizer golden files plus
strings that exercise WordPiece (accents, CJK, punctuation, control characters, unknown words), with and
without special tokens. Embeddings: llama-cpp-python's `embed` (mean pooling, unnormalized) of the first
EMBEDDED sentences, and of the first DECODER_EMBEDDED with SmolLM2 (a decoder) pooled by mean and by last
token. Run once where llama-cpp-python is installed:
    python tests/data/make_embedding_cases.py
"""
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
OUT = Path(__file__).parent / "embedding-minilm.json"
EMBEDDED = 48
DECODER_EMBEDDED = 8
EXTRA_STRINGS = [
    "İstanbul ǅemal Ǆ ﬀ ½ ² ™ © ® ° ±", "Ünïcödé ñandú façade", "中文字符和日本語かな한국어", "a\u0301e\u0300 combining",
    "tab\u00adsoft hyphen\u200bzero\u200dwidth", "[CLS] [SEP] [MASK] [UNK] [PAD]",
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "$100 & 50% off #1 @user ^_^ ~tilde `code`",
    "\u2028line\u2029para\u3000ideographic", "e-mail: john.doe@example.com; http://x.y/z", "ǅ Ǉ ǈ ΐ ΰ ẞ ß",
]


def sentences(n=256):
    """n distinct sentences of 5 to 40 words from the Python language reference in benchmarks/data."""
    text = " ".join((ROOT / "benchmarks" / "data" / "python-language-reference.txt").read_text(encoding="utf-8").split())
    out, seen = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if 5 <= len(sentence.split()) <= 40 and sentence not in seen and not set(sentence) & set("*=^~"):
            seen.add(sentence)
            out.append(sentence)
            if len(out) == n:
                break
    return out


def token_strings():
    texts = set(EXTRA_STRINGS)
    for name in ("tokenizer-smollm2-135m.json", "tokenizer-gemma3-270m.json"):
        texts |= {case["text"] for case in json.loads((Path(__file__).parent / name).read_text())["cases"]}
    return sorted(texts)


def main():
    from llama_cpp import Llama
    sys.path.insert(0, str(ROOT))
    from runtime import pull
    path = pull("all-minilm-l6-v2")
    llm = Llama(str(path), embedding=True, n_threads=2, verbose=False)
    tokens = [{"text": t, "add_special": llm.tokenize(t.encode(), add_bos=True, special=False),
               "parse_special": llm.tokenize(t.encode(), add_bos=True, special=True),
               "plain": llm.tokenize(t.encode(), add_bos=False, special=False)} for t in token_strings()]
    embedded = sentences()[:EMBEDDED]
    vectors = llm.embed(embedded)
    decoder = {}
    for pooling, number in (("mean", 1), ("last", 3)):
        smol = Llama(str(pull("smollm2-135m-instruct")), embedding=True, pooling_type=number, n_threads=2, verbose=False)
        decoder[pooling] = [[round(x, 6) for x in v] for v in smol.embed(embedded[:DECODER_EMBEDDED])]
    OUT.write_text(json.dumps({
        "source": "llama-cpp-python 0.3.36 on the F16 file of `nibble pull all-minilm-l6-v2`",
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tokens": tokens,
        "embeddings": [{"text": s, "embedding": [round(x, 6) for x in v]} for s, v in zip(embedded, vectors)],
        "smollm2": decoder,
    }, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}: {len(tokens)} token cases, {len(embedded)} embeddings")


if __name__ == "__main__":
    main()
