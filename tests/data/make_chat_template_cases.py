"""Records what transformers' apply_chat_template renders, for tests/test_chat_template.py.

Run once where transformers is installed (it is not a nibble dependency):
    python tests/data/make_chat_template_cases.py
"""
import json
from pathlib import Path

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from runtime import resolve_model
from runtime.chat_template import BUILTIN_TEMPLATES
from runtime.tokenizer import Tokenizer as NibbleTokenizer

CONVERSATIONS = {
    "system+user": [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": "Hi there"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "  Name a prime.  "}],
    "no-system": [{"role": "user", "content": "Bonjour, ça va ?"},
                  {"role": "assistant", "content": "Oui, merci."},
                  {"role": "user", "content": "Et toi 🙂"}],
}


def hf_tokenizer(bos, eos):
    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token="<unk>")


def main():
    smollm = NibbleTokenizer.from_gguf(resolve_model("smollm2-135m-instruct"))
    templates = {
        "smollm2-file": (smollm.chat_template, "<|im_start|>", "<|im_end|>"),
        "builtin-chatml": (BUILTIN_TEMPLATES["chatml"], "<s>", "</s>"),
        "builtin-gemma": (BUILTIN_TEMPLATES["gemma"], "<bos>", "<eos>"),
    }
    cases = []
    for template_name, (source, bos, eos) in templates.items():
        tokenizer = hf_tokenizer(bos, eos)
        for conversation_name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                rendered = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                         add_generation_prompt=add_generation_prompt)
                cases.append(dict(template=template_name, bos_token=bos, eos_token=eos,
                                  conversation=conversation_name, messages=messages,
                                  add_generation_prompt=add_generation_prompt, expected=rendered))
    out = Path(__file__).with_name("chat-template-cases.json")
    out.write_text(json.dumps(dict(source="transformers apply_chat_template", templates={
        name: source for name, (source, _, _) in templates.items()}, cases=cases), ensure_ascii=False, indent=1))
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
