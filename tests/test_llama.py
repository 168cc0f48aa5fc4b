"""runtime.Llama: llama-cpp-python's API on SmolLM2, sampling, stop strings, prefix reuse, context limits."""
import numpy as np
import pytest

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


def test_penalties_follow_llama_cpp():
    logits = np.array([2.0, -2.0, 1.0], np.float32)
    p = SamplingParams(repeat_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    from runtime.sampling import _apply_penalties
    _apply_penalties(logits, [0, 0, 1], p)
    assert np.allclose(logits, [2.0 / 2 - 2 * 0.5 - 0.25, -2.0 * 2 - 0.5 - 0.25, 1.0])


def test_invalid_sampling_values_are_clear():
    with pytest.raises(ValueError, match="top_p and min_p"):
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
