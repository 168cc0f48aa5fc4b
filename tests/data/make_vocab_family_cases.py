"""Records llama.cpp's token ids for the model families' chat prompts, for tests/test_vocab_families.py.

Each family's vocabulary-only GGUF (llama.cpp's models/, see tests/llama_cpp_files.py) tokenizes the
prompts its template renders (chat-template-cases.json) and strings that put whitespace around special
tokens, where llama.cpp's strip attributes act (Phi-3's special tokens swallow the spaces after them), and fill-in-the-middle markers (StarCoder's).
Run once where llama-cpp-python is installed (it is not a nibble dependency):
    python tests/data/make_vocab_family_cases.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
import llama_cpp_files  # noqa: E402

# vocabulary -> the chat template whose prompts it tokenizes (Mistral's own vocabularies are not among
# llama.cpp's test files; Mistral 7B's is llama-spm)
FAMILIES = {"phi-3": "microsoft-Phi-3.5-mini-instruct", "qwen2": "Qwen-Qwen3-0.6B",
            "llama-spm": "mistralai-Mistral-Nemo-Instruct-2407", "bert-bge": None, "starcoder": None}
AROUND_SPECIALS = ["<|user|>  \n hi <|end|>\n\n<|assistant|>", "a <|end|> b", "  <|endoftext|>  x", "<s> </s> <unk>",
                   "<|im_start|>user\n\n x<|im_end|> \n", "[CLS] hello [SEP]  [MASK] ", "\t<|system|>\t\n",
                   "</s>\n\n", "x<|end|>", "<|end|>", "<fim_prefix>def f():\n    <fim_suffix>\n    return x<fim_middle>",
                   "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"]


def main():
    from llama_cpp import Llama
    rendered = json.loads((Path(__file__).parent / "chat-template-cases.json").read_text())["cases"]
    cases = {}
    for vocabulary, template in FAMILIES.items():
        llm = Llama(str(llama_cpp_files.vocabulary(vocabulary)), vocab_only=True, verbose=False)
        texts = [c["expected"] for c in rendered if c["template"] == template and "expected" in c]
        texts += AROUND_SPECIALS + [text for text, _ in llama_cpp_files.vocabulary_cases(vocabulary)[:20]]
        cases[vocabulary] = [dict(text=text, add_special=add_special, parse_special=parse_special,
                                  ids=llm.tokenize(text.encode(), add_bos=add_special, special=parse_special))
                             for text in texts for add_special in (False, True) for parse_special in (False, True)]
        del llm
    out = Path(__file__).with_name("vocab-family-cases.json")
    out.write_text(json.dumps(dict(made_by=f"llama-cpp-python {llama_cpp_files.VERSION} tokenize (vocab_only)",
                                   templates=FAMILIES, cases=cases), ensure_ascii=False, indent=1) + "\n")
    print(f"{sum(map(len, cases.values()))} cases -> {out}")


if __name__ == "__main__":
    main()
