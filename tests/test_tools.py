"""Tool calls: OpenAI's tools and tool_choice through create_chat_completion, on a tool-aware template (Qwen2.5's,
on a tiny random Qwen2 model converted from transformers: the prompt equals transformers' rendering, calls are
parsed from <tool_call> blocks) and on the generic fallback (the real SmolLM2 and Gemma 3)."""
import json

import jsonschema
import openai.types.chat as openai_chat
import pytest

import llama_cpp_files
from runtime import Llama, resolve_model
from runtime.tools import GenericFormat, HermesFormat, ToolError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Get the current time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}
TOOLS = [WEATHER, CLOCK]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
# for random weights, which never close a free string: the same tools with every argument a choice
CLOSED_TOOLS = [{"type": "function", "function": {**t["function"], "parameters": {
    **t["function"]["parameters"], "properties": {name: {"enum": ["Paris", "Oslo", "UTC"]} if "enum" not in p else p
                                                  for name, p in t["function"]["parameters"]["properties"].items()}}}}
    for t in TOOLS]


def calls_of(reply):
    """The reply's tool calls as (name, arguments), each checked against OpenAI's types and its schema."""
    openai_chat.ChatCompletion.model_validate(reply)
    out = []
    for call in reply["choices"][0]["message"].get("tool_calls") or []:
        assert call["type"] == "function" and call["id"].startswith("call_")
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, PARAMETERS[call["function"]["name"]])
        out.append((call["function"]["name"], arguments))
    return out


@pytest.fixture(scope="module")
def qwen_tiny(hf_folders, tmp_path_factory):
    """A tiny random Qwen2 model whose file carries Qwen2.5-7B-Instruct's chat template (tools as <tool_call>)."""
    from hf_models import tiny_model
    from runtime.convert import convert
    work = tmp_path_factory.mktemp("qwen-tools")
    folder, _ = tiny_model("Qwen2ForCausalLM", hf_folders["smollm2-135m-instruct"], work / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = llama_cpp_files.template("Qwen-Qwen2.5-7B-Instruct")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    convert(folder, work / "tiny.gguf", "f32")
    return folder, Llama(str(work / "tiny.gguf"), n_ctx=2048, verbose=False)


def rendered(llm, messages, **options):
    """The prompt text nibble gave the model: its tokens detokenized with control-token text."""
    llm.create_chat_completion(messages, max_tokens=1, temperature=0, **options)
    return llm.detokenize(llm.input_ids, special=True).decode("utf-8")


def test_tool_aware_template_renders_tools_as_transformers(qwen_tiny):
    from transformers import AutoTokenizer
    folder, llm = qwen_tiny
    tokenizer = AutoTokenizer.from_pretrained(folder)
    history = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'}]
    for messages in (QUESTION, history):
        expected = tokenizer.apply_chat_template(
            [{**m, "content": m["content"] or "", **({"tool_calls": [{**c, "function": {
                **c["function"], "arguments": json.loads(c["function"]["arguments"])}} for c in m["tool_calls"]]}
                if m.get("tool_calls") else {})} for m in messages],
            tools=TOOLS, add_generation_prompt=True, tokenize=False)
        assert rendered(llm, messages, tools=TOOLS).startswith(expected)
        assert "# Tools" in expected and "get_time" in expected
    assert "# Tools" not in rendered(llm, QUESTION, tools=TOOLS, tool_choice="none")


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_tool_aware_template_forced_call(qwen_tiny, tool_choice):
    """Random weights, so only the grammar makes this a call: a <tool_call> block naming a tool, arguments that
    fit its schema, finish_reason tool_calls; streamed the same."""
    _, llm = qwen_tiny
    reply = llm.create_chat_completion(QUESTION, tools=CLOSED_TOOLS, tool_choice=tool_choice, temperature=0,
                                       max_tokens=200)
    calls = calls_of(reply)
    assert len(calls) == 1 and reply["choices"][0]["finish_reason"] == "tool_calls"
    if isinstance(tool_choice, dict):
        assert calls[0][0] == "get_time"
    chunks = list(llm.create_chat_completion(QUESTION, tools=CLOSED_TOOLS, tool_choice=tool_choice, temperature=0,
                                             max_tokens=200, stream=True))
    for chunk in chunks:
        openai_chat.ChatCompletionChunk.model_validate(chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    streamed = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [(s["function"]["name"], json.loads(s["function"]["arguments"])) for s in streamed] == calls
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_aware_template_auto_reads_what_the_model_wrote(qwen_tiny):
    """With "auto" the random model writes text; whatever it writes parses (text, or calls that fit)."""
    _, llm = qwen_tiny
    for seed in range(3):
        reply = llm.create_chat_completion(QUESTION, tools=CLOSED_TOOLS, temperature=1.0, seed=seed, max_tokens=40)
        calls = calls_of(reply)
        message = reply["choices"][0]["message"]
        assert calls or "<tool_call>" not in (message["content"] or "")


def test_hermes_and_generic_replies_parse():
    text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n' \
           '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>'
    content, calls = HermesFormat.parse(text)
    assert content == "Let me look." and [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert HermesFormat.parse("Just text.") == ("Just text.", [])
    assert HermesFormat.parse('<tool_call>\n{"name": "get_wea') == ('<tool_call>\n{"name": "get_wea', [])
    content, calls = GenericFormat.parse('{"tool_call": {"name": "get_time", "arguments": {"timezone": "UTC"}}}')
    assert content is None and calls[0]["function"]["name"] == "get_time"
    assert GenericFormat.parse('{"response": "Hello!"}') == ("Hello!", [])
    assert GenericFormat.parse('{"response": "cut sho') == ('{"response": "cut sho', [])


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def real_llm(request):
    return Llama(str(resolve_model(request.param)), n_ctx=2048, verbose=False)


def test_generic_fallback_on_real_models(real_llm):
    """Templates without tools (SmolLM2's ChatML, Gemma's): the note lists the tools; "required" and a named
    function give a call that fits; the weather question under "auto" is answered by get_weather (greedy)."""
    required = real_llm.create_chat_completion(QUESTION, tools=TOOLS, tool_choice="required", temperature=0,
                                               max_tokens=200)
    assert [name for name, _ in calls_of(required)] == ["get_weather"]
    assert calls_of(required)[0][1]["city"] == "Paris"
    named = real_llm.create_chat_completion(QUESTION, tools=TOOLS, temperature=0, max_tokens=200,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [name for name, _ in calls_of(named)] == ["get_time"]
    prompt = rendered(real_llm, QUESTION, tools=TOOLS)
    assert "get_weather" in prompt and "Respond in JSON format" in prompt


def test_generic_fallback_parallel_calls(smollm2_path):
    """parallel_tool_calls: {"tool_calls": [...]}, one call or more. (Gemma 3 270M, a base model, repeats calls
    until max_tokens.)"""
    llm = Llama(str(smollm2_path), n_ctx=2048, verbose=False)
    reply = llm.create_chat_completion(QUESTION, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=300,
                                       parallel_tool_calls=True)
    assert calls_of(reply)[0][0] == "get_weather" and reply["choices"][0]["finish_reason"] == "tool_calls"
    assert "`tool_calls`" in rendered(llm, QUESTION, tools=TOOLS, parallel_tool_calls=True)


def test_generic_fallback_conversation_continues(real_llm):
    """A second turn after a call and its result: the call and the result are written into the conversation in
    the generic format, and the model answers (text or another call) in a reply that parses."""
    history = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18, "sky": "clear"}'}]
    prompt = rendered(real_llm, history, tools=TOOLS)
    assert '"tool_response"' in prompt and '"tool_call"' in prompt and "get_weather" in prompt
    reply = real_llm.create_chat_completion(history, tools=TOOLS, temperature=0, max_tokens=200)
    calls_of(reply)


def test_legacy_functions(real_llm):
    reply = real_llm.create_chat_completion(QUESTION, functions=[WEATHER["function"]], temperature=0, max_tokens=200,
                                            function_call={"name": "get_weather"})
    message = reply["choices"][0]["message"]
    assert message["function_call"]["name"] == "get_weather" and calls_of(reply)[0][0] == "get_weather"


def test_bad_tool_requests_say_why(real_llm):
    with pytest.raises(ToolError, match="tool_choice names"):
        real_llm.create_chat_completion(QUESTION, tools=TOOLS, tool_choice={"type": "function",
                                                                            "function": {"name": "nope"}})
    with pytest.raises(ToolError, match=r"tools\[0\]"):
        real_llm.create_chat_completion(QUESTION, tools=[{"type": "function"}])
    with pytest.raises(ToolError, match="no tools"):
        real_llm.create_chat_completion(QUESTION, tool_choice="required")
    with pytest.raises(ValueError, match="not both"):
        real_llm.create_chat_completion(QUESTION, tools=TOOLS, response_format={"type": "json_object"})
