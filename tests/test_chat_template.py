"""Chat templates: equal to transformers' apply_chat_template (SmolLM2's, the built-ins, and the Qwen3, Phi-3.5,
Gemma 2 and Mistral Nemo templates llama.cpp ships), sandboxed, built-in fallbacks."""
import json
import re

import pytest

from runtime.chat_template import ChatTemplate, ChatTemplateError
from runtime.tokenizer import Tokenizer

from conftest import DATA

RECORDED = json.loads((DATA / "chat-template-cases.json").read_text())


@pytest.mark.parametrize("case", RECORDED["cases"], ids=lambda c: f"{c['template']}-{c['conversation']}-"
                                                              f"{'gen' if c['add_generation_prompt'] else 'nogen'}")
def test_renders_like_transformers(case):
    template = ChatTemplate(RECORDED["templates"][case["template"]], case["bos_token"], case["eos_token"])
    if "error" in case:                 # the template refused the conversation in transformers too
        with pytest.raises(ChatTemplateError, match=re.escape(case["error"])):
            template.render(case["messages"], add_generation_prompt=case["add_generation_prompt"])
        return
    assert template.render(case["messages"], add_generation_prompt=case["add_generation_prompt"]) == \
        case["expected"]


def test_recorded_file_template_is_the_models(smollm2_path):
    assert Tokenizer.from_gguf(smollm2_path).chat_template == RECORDED["templates"]["smollm2-file"]


@pytest.mark.parametrize("source", ["{{ ''.__class__.__mro__ }}", "{{ lipsum.__globals__ }}",
                                    "{{ cycler.__init__.__globals__.os.system('echo unsafe') }}",
                                    "{% set x = messages.append(1) %}"])
def test_reaching_for_python_internals_fails_clearly(source):
    with pytest.raises(ChatTemplateError, match="Python internals"):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])


def test_template_errors_are_one_line():
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        ChatTemplate.for_model(_FakeTokenizer(), "gemma3").render(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_strftime_now_and_tojson_are_available():
    rendered = ChatTemplate("{{ strftime_now('%Y') }} {{ messages | tojson }}").render([{"role": "user",
                                                                                        "content": "é"}])
    assert rendered.split()[0].isdigit() and '"é"' in rendered


class _FakeTokenizer:
    tokens, bos_id, eos_id, chat_template = ["<bos>", "<eos>"], 0, 1, None


def test_builtin_template_chosen_by_architecture(gemma3_path):
    gemma = Tokenizer.from_gguf(gemma3_path)
    assert gemma.chat_template is None
    template = ChatTemplate.for_model(gemma, "gemma3")
    assert template.name == "gemma"
    prompt = template.render([{"role": "user", "content": "Hi"}])
    assert prompt == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert ChatTemplate.for_model(_FakeTokenizer(), "llama").name == "chatml"
    assert ChatTemplate.for_model(_FakeTokenizer(), "phi3").name == "phi3"    # as llama.cpp formats Phi-3
