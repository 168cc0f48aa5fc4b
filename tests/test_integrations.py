"""Code written for llama-cpp-python, unchanged, on nibble: runtime.install_as_llama_cpp() registers nibble as
`llama_cpp`, then langchain-community's LlamaCpp and ChatLlamaCpp and llama-index's LlamaCPP load the real
SmolLM2 and invoke, stream and chat. Their answers equal nibble's Llama called with the arguments they pass."""
import sys

import pytest

import runtime
from runtime import Llama

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a primary colour."}]


@pytest.fixture
def as_llama_cpp(monkeypatch):
    """nibble as `llama_cpp` for one test; the integrations' modules are imported afresh under it."""
    for name in [n for n in sys.modules if n == "llama_cpp" or n.startswith(("llama_cpp.", "llama_index.llms.llama_cpp"))]:
        monkeypatch.delitem(sys.modules, name)
    module = runtime.install_as_llama_cpp()
    for name in ("llama_cpp", "llama_cpp.llama_grammar"):
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    return module


def test_the_module_is_nibble(as_llama_cpp):
    import llama_cpp
    from llama_cpp import Llama as Imported, LlamaGrammar
    from llama_cpp.llama_grammar import LlamaGrammar as FromSubmodule
    assert llama_cpp is as_llama_cpp and Imported is Llama and FromSubmodule is LlamaGrammar
    assert llama_cpp.LLAMA_POOLING_TYPE_MEAN == 1
    assert "GBNF" in repr(LlamaGrammar.from_string('root ::= "yes" | "no"'))
    with pytest.raises(ValueError, match="GBNF"):
        LlamaGrammar.from_string("")


def test_what_nibble_cannot_do_yet_is_refused_not_ignored(llm_small):
    with pytest.raises(NotImplementedError, match="mirostat_mode"):
        llm_small.create_chat_completion(MESSAGES, mirostat_mode=2)
    with pytest.raises(TypeError, match="'temprature'"):
        llm_small("Hi", temprature=0)
    assert llm_small("Hi", max_tokens=2, tfs_z=1.0, mirostat_mode=0, grammar=None)["choices"]


@pytest.fixture(scope="module")
def llm_small(smollm2_path):
    return Llama(str(smollm2_path), verbose=False)


@pytest.mark.filterwarnings("ignore:`langchain-community` is being sunset:DeprecationWarning")
def test_langchain_llamacpp_invoke_and_stream(as_llama_cpp, smollm2_path):
    from langchain_community.llms import LlamaCpp
    llm = LlamaCpp(model_path=str(smollm2_path), temperature=0, max_tokens=24, verbose=False)
    prompt = "The three primary colours are"
    text = llm.invoke(prompt)
    streamed = "".join(llm.stream(prompt))
    # what LlamaCpp passes by default (rope_freq_base 10000 overrides SmolLM2's 100000, as in llama-cpp-python)
    direct = Llama(str(smollm2_path), n_ctx=512, n_batch=8, seed=-1, rope_freq_base=10000.0, rope_freq_scale=1.0,
                   f16_kv=True, n_parts=-1, last_n_tokens_size=64, verbose=False)
    expected = direct(prompt, max_tokens=24, temperature=0, top_p=0.95, top_k=40, repeat_penalty=1.1,
                      stop=[])["choices"][0]["text"]
    assert text == streamed == expected and len(text) > 10


@pytest.mark.filterwarnings("ignore:`langchain-community` is being sunset:DeprecationWarning")
def test_langchain_chatllamacpp_invoke_and_stream(as_llama_cpp, smollm2_path):
    from langchain_community.chat_models import ChatLlamaCpp
    chat = ChatLlamaCpp(model_path=str(smollm2_path), temperature=0, max_tokens=24, rope_freq_base=100000.0,
                        verbose=False)
    pairs = [("system", MESSAGES[0]["content"]), ("human", MESSAGES[1]["content"])]
    reply = chat.invoke(pairs)
    streamed = "".join(chunk.content for chunk in chat.stream(pairs))
    expected = Llama(str(smollm2_path), n_batch=8, verbose=False).create_chat_completion(
        MESSAGES, max_tokens=24, temperature=0, repeat_penalty=1.1)["choices"][0]["message"]["content"]
    assert reply.content == streamed == expected and len(expected) > 2
    assert reply.response_metadata["finish_reason"] in ("stop", "length")


def test_llama_index_llamacpp_complete_stream_and_chat(as_llama_cpp, smollm2_path):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.llama_cpp import LlamaCPP
    llm = LlamaCPP(model_path=str(smollm2_path), temperature=0, max_new_tokens=24, context_window=1024,
                   verbose=False)
    assert llm.metadata.context_window == 1024
    completion = llm.complete("Paris is the capital of", formatted=True).text
    streamed = "".join(part.delta for part in llm.stream_complete("Paris is the capital of", formatted=True))
    expected = Llama(str(smollm2_path), n_ctx=1024, verbose=False)("Paris is the capital of", max_tokens=24,
                                                                    temperature=0)["choices"][0]["text"]
    assert completion == streamed == expected and len(expected) > 5
    answer = llm.chat([ChatMessage(role="user", content="Say hello.")])
    assert answer.message.content.strip()


@pytest.mark.filterwarnings("ignore:`langchain-community` is being sunset:DeprecationWarning")
def test_langchain_llamacpp_grammar_path(as_llama_cpp, tmp_path, smollm2_path):
    """LlamaCpp(grammar_path=...) reads the file with LlamaGrammar.from_file and passes it to every call."""
    from langchain_community.llms import LlamaCpp
    path = tmp_path / "answer.gbnf"
    path.write_text('root ::= ("yes" | "no")\n')
    llm = LlamaCpp(model_path=str(smollm2_path), grammar_path=str(path), temperature=0, max_tokens=8, verbose=False)
    assert llm.invoke("Is Paris in France? Answer:") in ("yes", "no")


@pytest.mark.filterwarnings("ignore:`langchain-community` is being sunset:DeprecationWarning")
def test_langchain_chatllamacpp_tools_and_structured_output(as_llama_cpp, smollm2_path):
    """ChatLlamaCpp.bind_tools(tool_choice=...) and with_structured_output(pydantic model), which LangChain
    builds on tool calls, on the real SmolLM2."""
    import pydantic
    from langchain_community.chat_models import ChatLlamaCpp

    class Weather(pydantic.BaseModel):
        """Get the current weather in a city."""
        city: str

    chat = ChatLlamaCpp(model_path=str(smollm2_path), temperature=0, max_tokens=100, rope_freq_base=100000.0,
                        verbose=False)
    message = chat.bind_tools([Weather], tool_choice="Weather").invoke("What is the weather in Paris?")
    assert [call["name"] for call in message.tool_calls] == ["Weather"]
    assert set(message.tool_calls[0]["args"]) == {"city"}
    answer = chat.with_structured_output(Weather).invoke("What is the weather in Paris?")
    assert isinstance(answer, Weather) and answer.city
