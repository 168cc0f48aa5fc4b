"""runtime.Llama: llama-cpp-python's API on SmolLM2, sampling, stop strings, prefix reuse, context limits."""
import pickle
import warnings

import numpy as np
import pytest

import runtime.llama as llama_module
from runtime import ContextFullError, Llama
from runtime.completion import _longest_stop_prefix
from runtime.sampling import Sampler, SamplingParams

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return Llama(model_path=str(smollm2_path), n_ctx=1024, verbose=False)


def test_llama_cpp_python_readme_examples(smollm2_path):
    """The README's calls, with only the import changed (paths pointed at the real model)."""
    from runtime import Llama   # was: from llama_cpp import Llama
    llm = Llama(
        model_path=str(smollm2_path),
        # n_gpu_layers=-1, # Uncomment to use GPU acceleration
        # seed=1337, # Uncomment to set a specific seed
        # n_ctx=2048, # Uncomment to increase the context window
    )
    output = llm(
        "Q: Name the planets in the solar system? A: ",  # Prompt
        max_tokens=32,  # Generate up to 32 tokens, set to None to generate up to the end of the context window
        stop=["Q:", "\n"],  # Stop generating just before the model would generate a new question
        echo=True  # Echo the prompt back in the output
    )  # Generate a completion, can also call create_completion
    assert output["object"] == "text_completion" and output["id"].startswith("cmpl-")
    choice = output["choices"][0]
    assert choice["text"].startswith("Q: Name the planets in the solar system? A: ")
    assert "\n" not in choice["text"] and choice["finish_reason"] in ("stop", "length")
    assert set(output["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}

    llm = Llama(model_path=str(smollm2_path), chat_format="chatml")
    answer = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are an assistant who perfectly describes images."},
            {"role": "user", "content": "Describe this image in detail please."},
        ]
    )
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant" and answer["choices"][0]["message"]["content"]

    stream = llm.create_chat_completion(messages=QUESTION, stream=True)
    chunks = list(stream)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)

    tokens = llm.tokenize(b"Hello, world!")
    assert llm.detokenize(tokens) == b"Hello, world!"
    assert llm.n_ctx() == 512 and llm.n_vocab() == 49152 and llm.token_eos() == 2 and llm.token_bos() == 1


def test_greedy_chat_answer_and_usage(llm):
    answer = llm.create_chat_completion(QUESTION, temperature=0)
    assert answer["choices"][0]["message"]["content"] == "The capital of France is Paris."
    assert answer["choices"][0]["finish_reason"] == "stop"      # ended by <|im_end|>, an end-of-generation token
    assert answer["usage"]["completion_tokens"] == 7


def test_same_seed_same_text(llm):
    texts = [llm("Once upon a time", max_tokens=24, temperature=1.0, seed=seed)["choices"][0]["text"]
             for seed in (7, 7, 8)]
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_max_tokens_and_finish_reason(llm):
    out = llm("The quick brown fox", max_tokens=5, temperature=0)
    assert out["usage"]["completion_tokens"] == 5 and out["choices"][0]["finish_reason"] == "length"


def test_stop_strings_are_never_streamed(llm):
    full = llm("The capital of France is", max_tokens=12, temperature=0)["choices"][0]["text"]
    assert full.startswith(" Paris.")
    for stop in ("Paris", "aris.", " Pa"):
        pieces = [c["choices"][0]["text"] for c in llm("The capital of France is", max_tokens=12, temperature=0,
                                                        stop=[stop], stream=True)]
        text = "".join(pieces)
        assert text == full[:full.index(stop)], stop
        assert all(stop not in piece for piece in pieces)


def test_logit_bias_forces_a_token(llm):
    target = llm.tokenize(b" banana", add_bos=False)[0]
    out = llm("The capital of France is", max_tokens=3, temperature=0, logit_bias={target: 100.0})
    assert out["choices"][0]["text"] == " banana banana banana"


def test_a_chat_turn_reuses_the_cached_history(llm, monkeypatch):
    first = llm.create_chat_completion(QUESTION, temperature=0)
    history = QUESTION + [first["choices"][0]["message"]]
    cached = first["usage"]["total_tokens"]   # the closing <|im_end|> was sampled, neither counted nor evaluated
    evaluated = []
    forward = llm._model.forward
    monkeypatch.setattr(llm._model, "forward", lambda tokens, *a, **k: evaluated.append(len(tokens)) or
                        forward(tokens, *a, **k))
    second = history + [{"role": "user", "content": "And of Italy?"}]
    answer = llm.create_chat_completion(second, temperature=0, max_tokens=8)
    prompt_tokens = answer["usage"]["prompt_tokens"]
    assert evaluated[0] == prompt_tokens - cached   # only the new turn is read, not the whole conversation
    assert evaluated[0] < 16 < cached


def test_prompt_longer_than_the_context(smollm2_path):
    small = Llama(model_path=str(smollm2_path), n_ctx=16, verbose=False)
    with pytest.raises(ContextFullError, match=r"Requested tokens \(\d+\) exceed context window of 16"):
        small("word " * 40)
    out = small("Count: one two", max_tokens=100, temperature=0)
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["total_tokens"] <= 16


def test_eval_scores_and_reset(smollm2_path):
    llm = Llama(model_path=str(smollm2_path), n_ctx=64, logits_all=True, verbose=False)
    tokens = llm.tokenize(b"The capital of France is", add_bos=False)
    llm.eval(tokens)
    assert llm.n_tokens == len(tokens) and list(llm.input_ids) == tokens
    assert llm.scores[: llm.n_tokens].shape == (len(tokens), 49152) and len(llm.eval_logits) == len(tokens)
    assert llm.detokenize([int(np.argmax(llm.scores[len(tokens) - 1]))]) == b" Paris"
    llm.reset()
    assert llm.n_tokens == 0


def test_unknown_argument_is_a_clear_error(smollm2_path):
    with pytest.raises(TypeError, match="unexpected argument.*n_cxt"):
        Llama(model_path=str(smollm2_path), n_cxt=100)


def test_completion_logprobs_are_the_log_softmax_of_the_scores(smollm2_path):
    llm = Llama(model_path=str(smollm2_path), n_ctx=256, logits_all=True, verbose=False)
    prompt = "The capital of France is"
    plain = llm(prompt, max_tokens=6, temperature=0, logprobs=3)["choices"][0]
    n_prompt = len(llm.tokenize(prompt.encode()))
    for k, value in enumerate(plain["logprobs"]["token_logprobs"]):
        row = llm.scores[n_prompt - 1 + k].astype(np.float64)
        token = llm.input_ids[n_prompt + k] if n_prompt + k < llm.n_tokens else int(np.argmax(row))
        assert abs(value - (row[token] - row.max() - np.log(np.exp(row - row.max()).sum()))) < 1e-5
    echoed = llm(prompt, max_tokens=6, temperature=0, logprobs=3, echo=True)["choices"][0]
    prompt_tokens = llm.tokenize(prompt.encode())
    sequence = list(llm.input_ids) + [None]          # the last sampled token is not evaluated
    lp = echoed["logprobs"]
    assert len(lp["tokens"]) == len(prompt_tokens) + 6 and lp["token_logprobs"][0] is None
    assert "".join(lp["tokens"]) == echoed["text"] == prompt + plain["text"]
    assert [echoed["text"][:offset] for offset in lp["text_offset"]] == \
        ["".join(lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
    for j in range(1, len(lp["tokens"])):
        row = llm.scores[j - 1].astype(np.float64)
        expected = row - row.max() - np.log(np.exp(row - row.max()).sum())
        token = sequence[j] if sequence[j] is not None else int(np.argmax(row))
        assert abs(lp["token_logprobs"][j] - expected[token]) < 1e-5
        best = np.argsort(-expected)[:3]
        assert list(lp["top_logprobs"][j].values())[:3] == pytest.approx(expected[best], abs=1e-5)
    assert plain["logprobs"]["tokens"] == lp["tokens"][len(prompt_tokens):]    # (the logits there come from
    assert all(v < 0 for v in plain["logprobs"]["token_logprobs"])              # another kernel: prompt reuse)
    assert plain["logprobs"]["text_offset"][0] == len(prompt)
    with pytest.raises(ValueError, match="logits_all=True"):
        Llama(model_path=str(smollm2_path), n_ctx=256, verbose=False)(prompt, logprobs=1, echo=True)


def test_chat_logprobs_in_openai_shape(llm):
    from openai.types.chat import ChatCompletion
    reply = llm.create_chat_completion(QUESTION, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    content = ChatCompletion.model_validate(reply).choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply["choices"][0]["message"]["content"]
    for token in content:
        assert len(token.top_logprobs) == 2 and token.top_logprobs[0].logprob >= token.logprob
        assert bytes(token.bytes).decode() == token.token and token.logprob < 0
    bare = llm.create_chat_completion(QUESTION, max_tokens=5, temperature=0, logprobs=True)
    assert [t["top_logprobs"] for t in bare["choices"][0]["logprobs"]["content"]] == [[]] * 5
    assert llm.create_chat_completion(QUESTION, max_tokens=2, temperature=0)["choices"][0]["logprobs"] is None


def test_streamed_logprobs_equal_the_whole_reply(llm):
    """A stream's chunks carry the logprobs of the tokens generated since the chunk before: joined, they are
    the non-streamed reply's (completion and chat)."""
    from openai.types.chat import ChatCompletionChunk
    prompt = "The capital of France is"
    llm.reset()       # both calls read the whole prompt (a reused prefix gives the first logits another kernel)
    whole = llm(prompt, max_tokens=12, temperature=0, logprobs=2)["choices"][0]["logprobs"]
    joined = {key: [] for key in whole}
    llm.reset()
    for chunk in llm(prompt, max_tokens=12, temperature=0, logprobs=2, stream=True):
        for key, values in (chunk["choices"][0]["logprobs"] or {}).items():
            joined[key] += values
    assert joined == whole
    llm.reset()
    reply = llm.create_chat_completion(QUESTION, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    llm.reset()
    chunks = list(llm.create_chat_completion(QUESTION, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                                             stream=True))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    streamed = [entry for c in chunks if c["choices"][0]["logprobs"] for entry in c["choices"][0]["logprobs"]["content"]]
    assert streamed == reply["choices"][0]["logprobs"]["content"]
    with pytest.raises(ValueError, match="not streamed"):
        llm(prompt, logprobs=1, echo=True, stream=True)


def test_suffix_needs_fill_in_the_middle_tokens(llm):
    with pytest.raises(ValueError, match="fill-in-the-middle tokens"):      # SmolLM2 has none
        llm("def add(a, b):", suffix="    return total", max_tokens=4)


def test_save_and_load_state(smollm2_path, llm):
    """A saved context comes back whole: its logits, and the keys and values the next token reads."""
    tokens = llm.tokenize(b"A saved context comes back")
    llm.reset()
    llm.eval(tokens)
    state = pickle.loads(pickle.dumps(llm.save_state()))
    assert state.n_tokens == len(tokens) and state.llama_state_size > 0
    logits = llm.scores[0].copy()
    llm.eval([42])
    after = llm.scores[0].copy()
    llm.reset()
    llm.eval(llm.tokenize(b"Something else entirely, and longer than the saved one"))
    llm.load_state(state)
    assert llm.n_tokens == len(tokens) and list(llm.input_ids) == tokens
    assert np.array_equal(llm.scores[0], logits)
    llm.eval([42])
    assert np.array_equal(llm.scores[0], after)
    other = Llama(model_path=str(smollm2_path), n_ctx=1024, verbose=False)     # same model and size
    other.load_state(state)
    other.eval([42])
    assert np.array_equal(other.scores[0], after)
    with pytest.raises(ValueError, match="same model, n_ctx"):
        Llama(model_path=str(smollm2_path), n_ctx=1024, logits_all=True, verbose=False).load_state(state)
    with pytest.raises(ValueError, match="another size"):
        Llama(model_path=str(smollm2_path), n_ctx=256, verbose=False).load_state(state)


# ---- llama-cpp-python's constructor arguments ----

def test_langchain_arguments_load_without_a_word(smollm2_path):
    """What langchain-community's LlamaCpp passes by default, older llama-cpp-python's f16_kv and n_parts
    among them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Llama(model_path=str(smollm2_path), rope_freq_scale=1.0, rope_freq_base=10000.0, lora_base=None,
              lora_path=None, n_ctx=512, n_parts=-1, seed=-1, f16_kv=True, logits_all=False, vocab_only=False,
              use_mlock=False, n_threads=None, n_batch=8, use_mmap=True, last_n_tokens_size=64, verbose=False)


def test_arguments_without_effect_warn_once(smollm2_path, monkeypatch):
    monkeypatch.setattr(llama_module, "_warned", set())
    with pytest.warns(UserWarning, match=r"Llama\(n_gpu_layers=-1\) has no effect: nibble runs on the CPU"):
        Llama(model_path=str(smollm2_path), n_gpu_layers=-1, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Llama(model_path=str(smollm2_path), n_gpu_layers=-1, verbose=False)


@pytest.mark.parametrize("arguments, error", [
    (dict(lora_path="adapter.gguf"), "LoRA adapters"),
    (dict(kv_overrides={"llama.context_length": 8}), "kv_overrides"),
    (dict(type_k=1, type_v=0), "one type"),
    (dict(type_k=8), "type_k must be f16"),
    (dict(n_threads_batch=1000), "n_threads=1000"),
])
def test_requests_nibble_cannot_honor_are_refused(smollm2_path, arguments, error):
    with pytest.raises(ValueError, match=error):
        Llama(model_path=str(smollm2_path), verbose=False, **arguments)


def test_vocab_only_tokenizes_without_weights(smollm2_path, llm):
    vocab = Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False)
    assert vocab.tokenize(b"Hello, world") == llm.tokenize(b"Hello, world")
    assert vocab.n_vocab() == llm.n_vocab() and vocab.metadata["general.architecture"] == "llama"
    with pytest.raises(ValueError, match="vocab_only=True"):
        vocab("Hello", max_tokens=2)


def test_rope_frequency_overrides(smollm2_path, llm):
    prompt = llm.tokenize(b"The quick brown fox jumps over the lazy dog")
    def logits(**rope):
        model = Llama(model_path=str(smollm2_path), logits_all=True, verbose=False, **rope)
        model.eval(prompt)
        return model.scores[:len(prompt)].copy(), model._model.hp
    base, hp = logits()
    same, _ = logits(rope_freq_base=hp.rope_base, rope_freq_scale=1.0)
    assert np.array_equal(base, same)
    faster, faster_hp = logits(rope_freq_base=hp.rope_base / 4)
    scaled, scaled_hp = logits(rope_freq_scale=0.5)
    assert faster_hp.rope_base == hp.rope_base / 4 and scaled_hp.rope_freq_scale == 0.5
    assert np.array_equal(base[0], faster[0]) and np.array_equal(base[0], scaled[0])   # position 0 turns by 0
    assert np.abs(base[1:] - faster[1:]).max() > 0.1 and np.abs(base[1:] - scaled[1:]).max() > 0.1


def test_last_n_tokens_size_is_the_penalty_window(smollm2_path):
    def text(last_n, repeat_penalty):
        model = Llama(model_path=str(smollm2_path), last_n_tokens_size=last_n, verbose=False)
        return model("1, 2, 1, 2, 1, 2, 1, 2,", max_tokens=16, temperature=0,
                     repeat_penalty=repeat_penalty)["choices"][0]["text"]
    plain = text(64, 1.0)
    assert text(0, 1.5) == plain and text(64, 1.5) != plain


def test_prompts_on_n_threads_batch(smollm2_path, llm, monkeypatch):
    """A prompt runs on n_threads_batch threads and a generated token on n_threads; the logits stay."""
    from cpu_kernels import set_threads
    prompt = llm.tokenize(b"Counting threads changes who adds, not what is added")
    one = Llama(model_path=str(smollm2_path), n_threads=2, n_threads_batch=1, verbose=False)
    calls = []
    monkeypatch.setattr(llama_module, "set_threads", lambda n: calls.append(n) or set_threads(n))
    one.eval(prompt)
    after_prompt = one.scores[0].copy()
    one.eval([42])
    assert calls == [1, 2]
    llm.reset()
    llm.eval(prompt)
    assert np.allclose(after_prompt, llm.scores[0], atol=1e-4)


# ---- sampling on synthetic logits ----

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))


def draws(n=2000, seed=0, **params):
    sampler = Sampler(SamplingParams(**params), seed=seed)
    return np.bincount([sampler.sample(LOGITS) for _ in range(n)], minlength=4) / n


def test_greedy_top_k_top_p_min_p():
    assert Sampler(SamplingParams(temperature=0)).sample(LOGITS) == 0
    assert draws(top_k=1, top_p=1, min_p=0)[0] == 1.0
    assert draws(top_k=0, top_p=0.8, min_p=0)[2:].sum() == 0          # 0.5 + 0.3 reach 0.8
    assert draws(top_k=0, top_p=1, min_p=0.2)[3] == 0                # 0.05 < 0.2 * 0.5
    full = draws(top_k=0, top_p=1, min_p=0, temperature=1.0)
    assert np.abs(full - [0.5, 0.3, 0.15, 0.05]).max() < 0.04
    hot = draws(top_k=0, top_p=1, min_p=0, temperature=3.0)
    assert hot[3] > full[3] * 2


def test_typical_keeps_the_tokens_nearest_the_entropy():
    # entropy 1.142 nats; surprises 0.69, 1.20, 1.90, 3.00: token 1 is the most typical, then token 0
    assert draws(top_k=0, top_p=1, min_p=0, typical_p=0.2, temperature=1.0)[1] == 1.0
    kept = draws(top_k=0, top_p=1, min_p=0, typical_p=0.5, temperature=1.0)
    assert kept[2:].sum() == 0 and abs(kept[0] - 0.625) < 0.04          # 0.5 / (0.5 + 0.3)
    assert draws(top_k=0, top_p=1, min_p=0, typical_p=0.99, temperature=1.0)[3] > 0


def test_typical_p_in_completions(llm):
    llm.reset()
    out = llm("Once upon a time", max_tokens=8, typical_p=0.3, seed=3)
    assert out["choices"][0]["text"] == llm("Once upon a time", max_tokens=8, typical_p=0.3, seed=3)["choices"][0]["text"]
    with pytest.raises(ValueError, match="typical_p"):
        llm("Once upon a time", max_tokens=8, typical_p=1.5)


def test_penalties_follow_llama_cpp():
    logits = np.array([2.0, -2.0, 1.0], np.float32)
    p = SamplingParams(repeat_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    from runtime.sampling import _apply_penalties
    _apply_penalties(logits, [0, 0, 1], p)
    assert np.allclose(logits, [2.0 / 2 - 2 * 0.5 - 0.25, -2.0 * 2 - 0.5 - 0.25, 1.0])


def test_invalid_sampling_values_are_clear():
    with pytest.raises(ValueError, match="top_p, min_p and typical_p"):
        Sampler(SamplingParams(top_p=1.5))


def test_longest_stop_prefix():
    assert _longest_stop_prefix("Hello Wor", ["World"]) == 3
    assert _longest_stop_prefix("Hello", ["World", "lo!"]) == 2
    assert _longest_stop_prefix("Hello", []) == 0


def test_gemma3_chat_uses_the_builtin_template(gemma3_path):
    """Gemma's file has no chat template: the built-in Gemma one renders the same tokens as the golden chat
    prompt, and greedy generation through Llama gives the recorded reference continuation."""
    import json
    from conftest import DATA
    case = json.loads((DATA / "logits-gemma3-270m-q4_k_m.json").read_text())["cases"][1]
    llm = Llama(model_path=str(gemma3_path), n_ctx=256, verbose=False)
    prompt = llm._chat_template.render([{"role": "user", "content": "Write a haiku about autumn."}])
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == case["tokens"]
    answer = llm.create_chat_completion([{"role": "user", "content": "Write a haiku about autumn."}],
                                        temperature=0, max_tokens=24)
    assert answer["choices"][0]["message"]["content"] == case["reference_greedy_text"]
