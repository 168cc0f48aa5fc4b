"""Tool calls: OpenAI's `tools` and `tool_choice` on any chat template.

A request with tools becomes a `ToolPlan`: the messages and tools the chat template is given, the grammar the
reply must follow, and how to read tool calls back out of the reply. Two formats, chosen by the template:

- `HermesFormat`, for templates that render tools themselves and ask for `<tool_call>` blocks (Qwen2.5,
  Qwen3, Hermes 2/3, SmolLM3): the tools go to the template; with tool_choice "auto" the model writes text or
  calls, and once it opens a `<tool_call>` the JSON inside must name a tool and fit its parameters.
- `GenericFormat`, for every other template (llama.cpp's generic convention): a system note lists the tools
  and the reply is JSON, {"tool_call": {"name", "arguments"}} or {"response": "..."} (with parallel calls
  {"tool_calls": [...]}), enforced by a JSON schema.

"required" or a named function forces a call whose arguments fit that function's parameter schema; "none"
leaves the tools out of the prompt.
"""
from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Callable

from .grammar import JSON_WHITESPACE, Grammar, bounded_schema


class ToolError(ValueError):
    """A tools, tool_choice or message field that cannot be used; the message names it."""


@dataclass
class ToolPlan:
    messages: list               # the conversation as the chat template is given it
    tools: list | None           # the template's `tools` variable
    grammar: Grammar | None
    parse: Callable[[str], tuple]   # reply text -> (content or None, [OpenAI tool calls])


def _call_id() -> str:
    return "call_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def _openai_call(name, arguments) -> dict:
    return {"id": _call_id(), "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def check_tools(tools, tool_choice, functions=None, function_call=None):
    """(tools, tool_choice) in OpenAI's current form: legacy functions/function_call converted (as
    llama-cpp-python does), each tool checked. tool_choice None means "auto" when there are tools."""
    if functions is not None:
        tools = [{"type": "function", "function": f} for f in functions]
    if function_call is not None:
        tool_choice = function_call if isinstance(function_call, str) else \
            {"type": "function", "function": {"name": (function_call or {}).get("name")}}
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ToolError("tool_choice asks for a tool call but no tools were given")
        return None, "none"
    if not isinstance(tools, list):
        raise ToolError("tools must be a list of {\"type\": \"function\", \"function\": {...}}")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ToolError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                            "\"parameters\": {...}}}")
        if not isinstance(function.get("parameters", {}), dict):
            raise ToolError(f"tools[{i}].function.parameters must be a JSON schema object")
    tool_choice = "auto" if tool_choice is None else tool_choice
    names = {t["function"]["name"] for t in tools}
    if isinstance(tool_choice, str) and tool_choice in names - {"none", "auto", "required"}:
        tool_choice = {"type": "function", "function": {"name": tool_choice}}   # LangChain's bind_tools passes a name
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise ToolError(f"tool_choice names the function {name!r}, which is not among the tools")
    elif tool_choice not in ("none", "auto", "required"):
        raise ToolError(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {tool_choice!r}")
    return tools, tool_choice


def _call_schema(function) -> dict:
    return {"type": "object", "properties": {"name": {"const": function["name"]},
                                             "arguments": function.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"]}


def _choices(tools, tool_choice) -> list:
    """The tools a call may name."""
    if isinstance(tool_choice, dict):
        return [t["function"] for t in tools if t["function"]["name"] == tool_choice["function"]["name"]]
    return [t["function"] for t in tools]


def _arguments_as_objects(messages):
    """Earlier assistant tool calls with their JSON-string arguments parsed, as tool-aware templates render
    them (`arguments | tojson`)."""
    out = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                if isinstance(function.get("arguments"), str):
                    try:
                        function["arguments"] = json.loads(function["arguments"])
                    except json.JSONDecodeError:
                        raise ToolError(f"a tool call's arguments are not JSON: {function['arguments'][:60]!r}") from None
                calls.append({**call, "function": function})
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


class HermesFormat:
    """<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>, one block per call."""

    @staticmethod
    def detect(template_source: str) -> bool:
        return "<tool_call>" in template_source and "tools" in template_source

    @staticmethod
    def plan(messages, tools, tool_choice, parallel) -> ToolPlan:
        call = {"anyOf": [_call_schema(f) for f in _choices(tools, tool_choice)],
                "x-guidance": {"whitespace_pattern": JSON_WHITESPACE}}
        more = " (NEXT body CLOSE)*" if parallel else ""
        lark = "\n".join([
            f"start: {'TEXT | ' if tool_choice == 'auto' else ''}{'OPEN' if tool_choice == 'auto' else 'FIRST'} "
            f"body CLOSE{more}",
            r"TEXT: /(?s:.*)/ & ~/(?s:.*<tool_call>.*)/",              # text that opens no call
            r"OPEN: /(?s:.*)<tool_call>\n/ & ~/(?s:.*<tool_call>.*<tool_call>.*)/",   # text, then the first call
            r"FIRST: /<tool_call>\n/",
            r"NEXT: /\s*<tool_call>\n/",
            r"CLOSE: /\n<\/tool_call>\s*/",
            f"body: %json {json.dumps(bounded_schema(call))}"])
        return ToolPlan(_arguments_as_objects(messages), tools, Grammar.from_lark(lark, "tool-call grammar"),
                        HermesFormat.parse)

    @staticmethod
    def parse(text):
        blocks = re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, flags=re.S)
        calls = []
        for block in blocks:
            try:
                call = json.loads(block)
            except json.JSONDecodeError:
                continue      # an unfinished block (max_tokens): left in the content
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                calls.append(_openai_call(call["name"], call.get("arguments", {})))
        if not calls:
            return text, []
        content = text[:text.find("<tool_call>")].strip()
        return content or None, calls


class GenericFormat:
    """llama.cpp's convention for templates that know no tools: a system note and a JSON reply."""

    NOTE = ("You can call any of the following tools to satisfy the user's requests: {tools}\n\n"
            "Respond in JSON format, either with `{key}` (a request to call tools) or with `response` reply to the "
            "user's request.")

    @staticmethod
    def plan(messages, tools, tool_choice, parallel) -> ToolPlan:
        calls = [_call_schema(f) for f in _choices(tools, tool_choice)]
        call = calls[0] if len(calls) == 1 else {"anyOf": calls}
        key = "tool_calls" if parallel else "tool_call"
        request = {"type": "object", "properties": {key: {"type": "array", "items": call, "minItems": 1}
                                                    if parallel else call}, "required": [key]}
        reply = request if tool_choice != "auto" else \
            {"anyOf": [request, {"type": "object", "properties": {"response": {"type": "string"}},
                                 "required": ["response"]}]}
        note = GenericFormat.NOTE.format(tools=json.dumps([t["function"] for t in tools], indent=2), key=key)
        return ToolPlan(GenericFormat._messages(messages, note, parallel), None, Grammar.from_json_schema(reply),
                        GenericFormat.parse)

    @staticmethod
    def _messages(messages, note, parallel):
        """The note in the system message; earlier calls and tool results written as the JSON this format uses,
        tool results as user turns (templates without tools have no tool role)."""
        names, out = {}, []
        for message in _arguments_as_objects(messages):
            if message.get("role") == "assistant" and message.get("tool_calls"):
                calls = [{"name": c["function"]["name"], "arguments": c["function"].get("arguments", {}),
                          **({"id": c["id"]} if c.get("id") else {})} for c in message["tool_calls"]]
                names.update({c["id"]: c["function"]["name"] for c in message["tool_calls"] if c.get("id")})
                body = {"tool_calls": calls} if parallel or len(calls) > 1 else {"tool_call": calls[0]}
                message = {"role": "assistant", "content": json.dumps(body, ensure_ascii=False)}
            elif message.get("role") == "tool":
                response = {"tool": names.get(message.get("tool_call_id"), message.get("name", "")),
                            "content": message.get("content") or ""}
                message = {"role": "user", "content": json.dumps({"tool_response": response}, ensure_ascii=False)}
            out.append(message)
        if out and out[0].get("role") == "system":
            return [{**out[0], "content": f"{out[0]['content']}\n\n{note}"}] + out[1:]
        return [{"role": "system", "content": note}] + out

    @staticmethod
    def parse(text):
        try:
            reply = json.loads(text)
        except json.JSONDecodeError:
            return text, []             # cut off by max_tokens: the text as it is
        if not isinstance(reply, dict):
            return text, []
        calls = reply.get("tool_calls") or ([reply["tool_call"]] if isinstance(reply.get("tool_call"), dict) else [])
        if calls:
            return None, [_openai_call(c["name"], c.get("arguments", {})) for c in calls]
        return reply.get("response", text), []


FORMATS = [HermesFormat]          # tried in order; GenericFormat when none fits the template


def tool_plan(template_source, messages, tools, tool_choice, parallel=False) -> ToolPlan | None:
    """The plan for a request whose tools and tool_choice passed check_tools; None for tool_choice "none"."""
    if tool_choice == "none":
        return None
    fmt = next((f for f in FORMATS if f.detect(template_source)), GenericFormat)
    return fmt.plan(messages, tools, tool_choice, parallel)

