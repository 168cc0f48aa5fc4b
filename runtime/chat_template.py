"""Chat templates: `tokenizer.chat_template` rendered as Hugging Face's `apply_chat_template` renders it.

Templates come from model files, which anyone can write, so they run in jinja2's immutable sandbox; any
reach for Python internals (`''.__class__`, `lipsum.__globals__`, ...) stops rendering with an error
instead of quietly printing nothing, which is what the stock sandbox does.
"""
from __future__ import annotations

import json
from datetime import datetime

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """A chat template that does not parse, refuses the conversation, or tried something unsafe."""


_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's turn format: a system message is folded into the first user turn; the assistant is "model".
_GEMMA = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Phi-3's turns, as llama.cpp writes them for a file without a template (LLM_CHAT_TEMPLATE_PHI_3).
_PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

BUILTIN_TEMPLATES = {"chatml": _CHATML, "gemma": _GEMMA, "phi3": _PHI3}

# general.architecture -> the built-in template used when the file carries none.
ARCHITECTURE_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3"}
DEFAULT_TEMPLATE = "chatml"


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, but an unsafe attribute raises at once rather than rendering as empty."""

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _raise_exception(message):
    raise ChatTemplateError(f"the chat template refused this conversation: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment():
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class ChatTemplate:
    """One compiled template plus the special-token strings it may refer to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", name: str = "file"):
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ChatTemplateError(f"chat template ({name}) does not parse: {error.message} "
                                    f"(line {error.lineno})") from None

    @classmethod
    def for_model(cls, tokenizer, architecture: str | None = None, override: str | None = None) -> "ChatTemplate":
        """The file's template, else a built-in one chosen by architecture; `override` names a built-in."""
        bos = tokenizer.tokens[tokenizer.bos_id] if tokenizer.bos_id is not None else ""
        eos = tokenizer.tokens[tokenizer.eos_id] if tokenizer.eos_id is not None else ""
        if override:
            if override not in BUILTIN_TEMPLATES:
                raise ChatTemplateError(f"unknown chat format {override!r}; built in: "
                                        f"{', '.join(sorted(BUILTIN_TEMPLATES))}")
            return cls(BUILTIN_TEMPLATES[override], bos, eos, name=override)
        if tokenizer.chat_template:
            return cls(tokenizer.chat_template, bos, eos, name="tokenizer.chat_template")
        name = ARCHITECTURE_TEMPLATES.get(architecture or "", DEFAULT_TEMPLATE)
        return cls(BUILTIN_TEMPLATES[name], bos, eos, name=name)

    def render(self, messages, add_generation_prompt: bool = True, tools=None, **extra) -> str:
        """The prompt text for `messages` (dicts with "role" and "content")."""
        try:
            return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         tools=tools, documents=None, bos_token=self.bos_token,
                                         eos_token=self.eos_token, **extra)
        except SecurityError as error:
            raise ChatTemplateError(f"chat template ({self.name}) tried to reach Python internals and was "
                                    f"stopped: {error}") from None
        except jinja2.TemplateError as error:
            raise ChatTemplateError(f"chat template ({self.name}) failed: {error}") from None
