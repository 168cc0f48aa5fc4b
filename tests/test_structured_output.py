"""Structured output on the real models: JSON schemas through response_format, llama.cpp's own GBNF grammars
through grammar=, in Llama, in LangChain's LlamaCpp and in `nibble serve`. The constraint is llguidance's."""
import json
import re

import jsonschema
import pytest

import llama_cpp_files
from runtime import GrammarError, Llama, LlamaGrammar
from runtime.grammar import Grammar, bounded_schema

from conftest import DATA

CASES = json.loads((DATA / "json-schemas.json").read_text())["schemas"]


def schema_prompt(case):
    return [{"role": "user", "content": f"{case['prompt']} Answer in JSON with this schema: {json.dumps(case['schema'])}"}]


def invalid(text, schema):
    """Why `text` is not a JSON document valid under `schema` (formats checked too), or None."""
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    except (json.JSONDecodeError, jsonschema.ValidationError) as error:
        return f"{type(error).__name__}: {str(error)[:120]}"
    return None


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def llm(request):
    from runtime import resolve_model
    return Llama(str(resolve_model(request.param)), n_ctx=2048, verbose=False)


def test_every_schema_gives_valid_json(llm):
    """>= 30 schemas (nested objects, arrays, enums, bounded numbers, patterns, formats, optional fields, $ref,
    anyOf/allOf, const, nullable): every greedy answer ends by itself and validates."""
    assert len(CASES) >= 30
    failures = []
    for case in CASES:
        reply = llm.create_chat_completion(
            schema_prompt(case), temperature=0, max_tokens=512,
            response_format={"type": "json_schema", "json_schema": {"name": case["name"], "schema": case["schema"]}})
        choice = reply["choices"][0]
        why = invalid(choice["message"]["content"], case["schema"])
        if why or choice["finish_reason"] != "stop":
            failures.append((case["name"], choice["finish_reason"], why, choice["message"]["content"][:200]))
    assert not failures


def test_sampled_and_streamed_answers_validate(llm):
    """Sampling at temperature 0.8 draws only tokens the schema allows; a stream's pieces join into the same."""
    case = next(c for c in CASES if c["name"] == "inventory")
    options = dict(temperature=0.8, seed=11, max_tokens=400,
                   response_format={"type": "json_object", "schema": case["schema"]})   # llama-cpp-python's form
    reply = llm.create_chat_completion(schema_prompt(case), **options)
    assert invalid(reply["choices"][0]["message"]["content"], case["schema"]) is None
    chunks = list(llm.create_chat_completion(schema_prompt(case), stream=True, **options))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        reply["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return Llama(str(smollm2_path), n_ctx=2048, verbose=False)


def test_json_object_mode(smollm2):
    """Any JSON object. (Only SmolLM2: Gemma 3 270M, a base model, writes open-ended objects with strings of
    zeros that run to max_tokens; the schema cases above bound what it writes.)"""
    llm = smollm2
    question = "Give the name and the height in meters of the Eiffel Tower as a JSON object."
    reply = llm.create_chat_completion([{"role": "user", "content": question}], response_format={"type": "json_object"},
                                       temperature=0, max_tokens=300)
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(reply["choices"][0]["message"]["content"]), dict)
    text = llm.create_chat_completion([{"role": "user", "content": "Say hi."}], response_format={"type": "text"},
                                      temperature=0, max_tokens=8)["choices"][0]["message"]["content"]
    assert text == llm.create_chat_completion([{"role": "user", "content": "Say hi."}], temperature=0,
                                              max_tokens=8)["choices"][0]["message"]["content"]


def test_llama_cpp_grammars_load():
    """Every GBNF grammar that ships with llama.cpp converts and validates."""
    for name in llama_cpp_files.GRAMMARS:
        assert "GBNF" in repr(LlamaGrammar.from_string(llama_cpp_files.grammar(name)))


@pytest.mark.parametrize("name, prompt, check", [
    ("json", 'The cat, as JSON: {"name": "Tom", "age": 3}\nThe dog, as JSON:', lambda text: isinstance(json.loads(text), dict)),
    ("list", "Groceries to buy:\n", lambda text: all(line.startswith("- ") for line in text.strip().split("\n"))),
    ("arithmetic", "An arithmetic expression: ", lambda text: re.fullmatch(r"[-+*/()=a-z0-9_ \t\n]+", text) is not None),
])
def test_completion_under_llama_cpp_grammars(llm, name, prompt, check):
    """create_completion(grammar=LlamaGrammar) on a plain prompt: the text is in the grammar's language (checked
    without the grammar engine). The json grammar must end by itself; the others may run to max_tokens."""
    grammar = LlamaGrammar.from_string(llama_cpp_files.grammar(name))
    choice = llm.create_completion(prompt, grammar=grammar, temperature=0, max_tokens=120)["choices"][0]
    assert choice["text"] and check(choice["text"]), choice
    if name == "json":
        assert choice["finish_reason"] == "stop"


def test_a_choice_grammar_decides(llm):
    grammar = LlamaGrammar.from_string('root ::= "yes" | "no"')
    for question in ("Is Paris in France? Answer:", "Is the sun cold? Answer:"):
        choice = llm.create_completion(question, grammar=grammar, temperature=0, max_tokens=8)["choices"][0]
        assert choice["text"] in ("yes", "no") and choice["finish_reason"] == "stop"


def test_bad_grammars_and_formats_say_why(llm):
    with pytest.raises(GrammarError, match="GBNF"):
        LlamaGrammar.from_string("root ::= [unclosed")
    with pytest.raises(GrammarError, match="GBNF"):
        LlamaGrammar.from_string("")
    with pytest.raises(GrammarError, match="cannot read the grammar file"):
        LlamaGrammar.from_file("/nonexistent.gbnf")
    with pytest.raises(GrammarError, match="not JSON"):
        LlamaGrammar.from_json_schema("{bad")
    with pytest.raises(GrammarError, match="response_format type"):
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], response_format={"type": "yaml"})
    with pytest.raises(ValueError, match="not both"):
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], response_format={"type": "json_object"},
                                   grammar=LlamaGrammar.from_string('root ::= "a"'))


def test_schemas_are_bounded_as_llama_cpp_reads_them():
    schema = bounded_schema({"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"},
                                                              "e": {"enum": [{"type": "object"}]}}})
    assert schema["additionalProperties"] is False
    assert schema["properties"]["n"] == {"type": "integer", "minimum": -(10**16 - 1), "maximum": 10**16 - 1}
    assert schema["properties"]["x"]["multipleOf"] == 1e-10
    assert schema["properties"]["e"] == {"enum": [{"type": "object"}]}      # values are left as they are
    merged = bounded_schema({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                       {"type": "object", "properties": {"b": {"type": "boolean"}}}]})
    assert merged == {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
                      "required": ["a"], "additionalProperties": False}
    assert bounded_schema({"type": "object"}) == {"type": "object"}                # json_object: any object
    assert Grammar.from_json_schema({"type": "object"}).source == "JSON schema"
