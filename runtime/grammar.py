"""Constrained decoding: a grammar masks the logits before each token is sampled, so the text always parses.

llguidance enforces the grammar. It was picked over xgrammar and outlines-core by
`benchmarks/bench_constrained.py`: it reads llama.cpp's GBNF as well as JSON schema, regex and Lark (outlines-core
has no GBNF), needs nothing else installed (xgrammar requires torch, transformers and triton), and its mask costs
a small fraction of a decode step on both vocabularies here (the benchmark prints the numbers).

`LlamaGrammar` is llama-cpp-python's class of the same name (from_string for GBNF, from_file,
from_json_schema); `Grammar.for_response_format` reads OpenAI's response_format. A `Constraint` is one
grammar matched against one generation: it masks logits and consumes the sampled tokens.
"""
from __future__ import annotations

import json
import weakref
from pathlib import Path

import llguidance
import numpy as np
from llguidance import LLMatcher, LLTokenizer

from .tokenizer import CONTROL, UNKNOWN, Tokenizer

# Whitespace that JSON may have between its parts: llama.cpp's json-schema-to-grammar `space` rule (a space,
# or one or two newlines and up to 20 spaces or tabs of indent). Bounded, so a small model cannot loop on it.
JSON_WHITESPACE = r"(?: |\n{1,2}[ \t]{0,20})?"
_JSON_OPTIONS = {"whitespace_pattern": JSON_WHITESPACE}


class GrammarError(ValueError):
    """A grammar, schema or response_format that cannot be enforced; the message says which and why."""


class Grammar:
    """A grammar in llguidance's form, built from one of the texts users write. Immutable, reusable."""

    def __init__(self, definition: str, source: str):
        is_error, messages = LLMatcher.validate_grammar_with_warnings(definition)
        if is_error:
            raise GrammarError(f"the {source} cannot be enforced: {messages[0]}")
        self.definition = definition   # llguidance's grammar text
        self.source = source           # what it was made from, for messages

    @classmethod
    def from_gbnf(cls, text: str) -> "Grammar":
        if not isinstance(text, str) or not text.strip():
            raise GrammarError("a GBNF grammar must be a non-empty string")
        try:
            return cls(llguidance.grammar_from("gbnf", text), "GBNF grammar")
        except Exception as error:   # llguidance's converter raises several kinds for one cause: bad GBNF
            raise GrammarError(f"the GBNF grammar does not parse: {error}") from None

    @classmethod
    def from_json_schema(cls, schema) -> "Grammar":
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as error:
                raise GrammarError(f"the JSON schema is not JSON: {error}") from None
        if not isinstance(schema, dict):
            raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}")
        try:
            definition = LLMatcher.grammar_from_json_schema(bounded_schema(schema), defaults=_JSON_OPTIONS)
        except ValueError as error:
            raise GrammarError(f"the JSON schema cannot be enforced: {error}") from None
        return cls(definition, "JSON schema")

    @classmethod
    def from_lark(cls, text: str, source: str = "Lark grammar") -> "Grammar":
        """llguidance's own Lark-like syntax (regex & and ~, %json {schema}): what nibble builds for tool calls."""
        return cls(LLMatcher.grammar_from_lark(text), source)

    @classmethod
    def for_response_format(cls, response_format) -> "Grammar | None":
        """OpenAI's response_format ({"type": "text" | "json_object" | "json_schema", ...}) as a grammar, None
        for text. Also llama-cpp-python's {"type": "json_object", "schema": {...}}."""
        if response_format is None:
            return None
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            return cls.from_json_schema(response_format.get("schema") or {"type": "object"})
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise GrammarError('response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}')
            return cls.from_json_schema(spec.get("schema") or {"type": "object"})
        raise GrammarError(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}")

    def constraint(self, tokenizer: Tokenizer, n_logits: int) -> "Constraint":
        return Constraint(self, tokenizer, n_logits)


def bounded_schema(schema):
    """The schema as llama.cpp's json-schema-to-grammar reads it, where that keeps a small model from running
    on until max_tokens: objects that list their properties are closed to others (additionalProperties false
    where it is not given, as OpenAI's strict mode also asks), allOf over such objects is merged into one, and
    numbers have at most 16 integer digits where no bound is given (llama.cpp's integral-part rule) and at most
    10 decimals where no multipleOf is given (llama.cpp allows 16; llguidance's multipleOf reaches 10)."""
    if isinstance(schema, list):
        return [bounded_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: value if key in ("enum", "const", "default", "examples") else bounded_schema(value)
              for key, value in schema.items()}
    if schema.get("type") in ("integer", "number"):
        for side, other, limit in (("minimum", "exclusiveMinimum", -_INTEGER_LIMIT),
                                   ("maximum", "exclusiveMaximum", _INTEGER_LIMIT)):
            if side not in schema and other not in schema:
                schema[side] = limit
        if schema["type"] == "number":
            schema.setdefault("multipleOf", _DECIMAL_STEP)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts and all(isinstance(p, dict) and set(p) <= _PLAIN_OBJECT_KEYS and
                                                 "properties" in p for p in parts):
        merged = {key: value for key, value in schema.items() if key != "allOf"}
        merged.setdefault("type", "object")
        merged["properties"] = {**merged.get("properties", {}),
                                **{k: v for p in parts for k, v in p["properties"].items()}}
        merged["required"] = list(dict.fromkeys([*merged.get("required", []),
                                                 *(k for p in parts for k in p.get("required", []))]))
        merged["additionalProperties"] = all(p.get("additionalProperties", False) is not False for p in parts) \
            and merged.get("additionalProperties", False)
        schema = merged
    if "properties" in schema and not {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(schema):
        schema["additionalProperties"] = False
    return schema


_INTEGER_LIMIT = 10**16 - 1
_DECIMAL_STEP = 1e-10
_PLAIN_OBJECT_KEYS = {"type", "properties", "required", "additionalProperties", "title", "description"}


class LlamaGrammar:
    """llama-cpp-python's grammar object: GBNF text (from_string, from_file) or a JSON schema
    (from_json_schema), checked when made, enforced by passing grammar= to create_completion or
    create_chat_completion."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(Grammar.from_gbnf(grammar))

    @classmethod
    def from_file(cls, file, verbose: bool = True) -> "LlamaGrammar":
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as error:
            raise GrammarError(f"cannot read the grammar file {file}: {error.strerror or error}") from None
        return cls.from_string(text)

    @classmethod
    def from_json_schema(cls, json_schema: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(Grammar.from_json_schema(json_schema))

    def __repr__(self):
        return f"LlamaGrammar({self.grammar.source})"


def as_grammar(grammar) -> Grammar | None:
    """The grammar= argument of the create_* calls: a LlamaGrammar, a Grammar, GBNF text, or None."""
    if grammar is None or isinstance(grammar, Grammar):
        return grammar
    if isinstance(grammar, LlamaGrammar):
        return grammar.grammar
    if isinstance(grammar, str):
        return Grammar.from_gbnf(grammar)
    raise GrammarError(f"grammar must be a LlamaGrammar or GBNF text, got {type(grammar).__name__}")


class Constraint:
    """One generation under a grammar: mask(logits) before sampling, then accept(token)."""

    def __init__(self, grammar: Grammar, tokenizer: Tokenizer, n_logits: int):
        self.matcher = LLMatcher(_vocabulary(tokenizer, n_logits), grammar.definition, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"the {grammar.source} cannot be enforced: {self.matcher.get_error()}")
        self.n_logits = n_logits
        self._bits = np.zeros((n_logits + 31) // 32, np.int32)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` (float32, written in place) with every token the grammar forbids here set to -inf."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little", count=self.n_logits).view(bool)
        logits[~allowed] = -np.inf
        return logits

    def accept(self, token: int):
        if not self.matcher.consume_token(int(token)):
            raise GrammarError(f"the grammar refused token {token}: {self.matcher.get_error()}")


class _VocabularyView:
    """What llguidance's LLTokenizer asks of a tokenizer: every token's bytes (control tokens marked with a
    leading 0xFF, as llguidance's llama.cpp adapter does), the end tokens, and a tokenize function."""

    def __init__(self, tokenizer: Tokenizer):
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id
        special = np.isin(tokenizer.token_types, (CONTROL, UNKNOWN))
        self.special_token_ids = np.nonzero(special)[0].tolist()
        self.tokens = [b"\xff" + text.encode("utf-8") if is_special else tokenizer.token_bytes(i)
                       for i, (text, is_special) in enumerate(zip(tokenizer.tokens, special.tolist()))]
        self._encode = tokenizer.encode_continuation
        self.is_tokenizer_wrapper = True     # what LLTokenizer checks for

    def __call__(self, text):
        return self._encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


_vocabularies: "weakref.WeakKeyDictionary[Tokenizer, dict]" = weakref.WeakKeyDictionary()


def _vocabulary(tokenizer: Tokenizer, n_logits: int):
    """llguidance's view of a vocabulary, built once per tokenizer (a second or so for 262k tokens)."""
    made = _vocabularies.setdefault(tokenizer, {})
    if n_logits not in made:
        made[n_logits] = LLTokenizer(_VocabularyView(tokenizer), n_vocab=n_logits,
                                     eos_token=sorted(tokenizer.eog_ids))
    return made[n_logits]
