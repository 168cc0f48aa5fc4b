"""Records what transformers' apply_chat_template renders, for tests/test_chat_template.py.

Run once where transformers is installed (it is not a nibble dependency):
    python tests/data/make_chat_template_cases.py
"""
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from runtime import resolve_model
from runtime.chat_template import BUILTIN_TEMPLATES
from runtime.tokenizer import Tokenizer as NibbleTokenizer

sys.path.insert(0, str(Path(__file__).parents[1]))
import llama_cpp_files  # noqa: E402

# the families' own templates, as llama.cpp ships them (models/templates), with their bos and eos tokens
FAMILY_TEMPLATES = {"Qwen-Qwen3-0.6B": ("<|endoftext|>", "<|im_end|>"),
                    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
                    "google-gemma-2-2b-it": ("<bos>", "<eos>"),
                    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>")}

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
        "builtin-phi3": (BUILTIN_TEMPLATES["phi3"], "<s>", "<|endoftext|>"),
        **{name: (llama_cpp_files.template(name), bos, eos) for name, (bos, eos) in FAMILY_TEMPLATES.items()},
    }
    cases = []
    for template_name, (source, bos, eos) in templates.items():
        tokenizer = hf_tokenizer(bos, eos)
        for conversation_name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                case = dict(template=template_name, bos_token=bos, eos_token=eos, conversation=conversation_name,
                            messages=messages, add_generation_prompt=add_generation_prompt)
                try:
                    case["expected"] = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                                     add_generation_prompt=add_generation_prompt)
                except Exception as error:      # the template refuses this conversation (raise_exception)
                    case["error"] = str(error)
                cases.append(case)
    out = Path(__file__).with_name("chat-template-cases.json")
    out.write_text(json.dumps(dict(source="transformers apply_chat_template", templates={
        name: source for name, (source, _, _) in templates.items()}, cases=cases), ensure_ascii=False, indent=1))
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
