"""`nibble serve` on the real models, through the official `openai` client: answers equal to Llama's for the
same seed, concurrent streams equal to sequential runs, OpenAI's error objects, disconnects, a full queue.

Each server is a `nibble serve` process on a free loopback port, started by its fixture and stopped by it.
"""
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from runtime import Llama

KEY = "test-key"
ROOT = Path(__file__).parent.parent
SLOTS, CTX_PER_SLOT = 4, 1024
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name three colors of the rainbow."}]
SAMPLING = dict(temperature=0.7, top_p=0.9, seed=1234, max_tokens=40)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "tools.cli", "serve", "-m", str(model), "-t", "2",
                                         "--port", str(self.port), *options], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while time.time() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the server did not start")

    def metric(self, name):
        text = httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"nibble_{name} ")))

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def server(smollm2_path):
    server = Server(smollm2_path, "-np", str(SLOTS), "-c", str(SLOTS * CTX_PER_SLOT), "--api-key", KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return Llama(model_path=str(smollm2_path), n_ctx=CTX_PER_SLOT, verbose=False)


def test_chat_equals_llama_streamed_and_not(client, llm):
    expected = llm.create_chat_completion(MESSAGES, **SAMPLING)
    reply = client.chat.completions.create(model="smollm2", messages=MESSAGES, **SAMPLING)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert reply.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    assert reply.usage.model_dump() == {**expected["usage"], "completion_tokens_details": None,
                                        "prompt_tokens_details": None}

    chunks = list(client.chat.completions.create(model="smollm2", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}, **SAMPLING))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["choices"][0]["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected["choices"][0]["finish_reason"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected["usage"]["completion_tokens"]


def test_completion_equals_llama_streamed_and_not(client, llm):
    prompt = "The three primary colors are"
    options = dict(temperature=0.9, seed=7, max_tokens=24, stop=["\n\n"])
    expected = llm.create_completion(prompt, **options)
    reply = client.completions.create(model="smollm2", prompt=prompt, **options)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == expected["choices"][0]["text"]
    assert reply.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    streamed = list(client.completions.create(model="smollm2", prompt=prompt, stream=True, **options))
    assert "".join(c.choices[0].text for c in streamed) == expected["choices"][0]["text"]
    echoed = client.completions.create(model="smollm2", prompt=prompt, echo=True, **options)
    assert echoed.choices[0].text == prompt + expected["choices"][0]["text"]
    # sampling options beyond OpenAI's (llama-server's top_k, min_p, typical_p, repeat_penalty) reach the sampler
    extra = dict(top_k=5, min_p=0.1, typical_p=0.6, repeat_penalty=1.3)
    with_extra = llm.create_completion(prompt, **options, **extra)
    reply = client.completions.create(model="smollm2", prompt=prompt, extra_body=extra, **options)
    assert reply.choices[0].text == with_extra["choices"][0]["text"]


def test_eight_concurrent_streams_equal_sequential_runs(server, client, llm):
    """Temperature 0: the texts do not depend on which requests share the batch (more streams than slots,
    so some wait in the queue and join later)."""
    prompts = [f"Write one sentence about the number {n}." for n in range(8)]
    messages = [[{"role": "user", "content": p}] for p in prompts]
    expected = [llm.create_chat_completion(m, temperature=0, max_tokens=32)["choices"][0]["message"]["content"]
                for m in messages]

    def stream(m):
        chunks = client.chat.completions.create(model="smollm2", messages=m, temperature=0, max_tokens=32,
                                                stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(stream, messages))
    assert got == expected
    assert len(set(got)) > 4     # different prompts, different answers: no request saw another's text


def test_prompt_cache_reuses_a_slot(server, client):
    conversation = MESSAGES + [{"role": "assistant", "content": "Red, green and blue."},
                               {"role": "user", "content": "And three more?"}]
    before = server.metric("prompt_tokens_cached_total")
    client.chat.completions.create(model="smollm2", messages=conversation[:2], temperature=0, max_tokens=4)
    client.chat.completions.create(model="smollm2", messages=conversation, temperature=0, max_tokens=4)
    assert server.metric("prompt_tokens_cached_total") - before >= 20   # the system and first user turn


def test_structured_output_equals_llama(server, client, llm):
    """response_format json_schema (OpenAI's shape, and openai's parse() with a pydantic model), llama-server's
    json_schema and grammar fields: the server's answer equals Llama's under the same constraint."""
    import pydantic

    class City(pydantic.BaseModel):
        name: str
        country: str
        population: int

    messages = [{"role": "user", "content": "Describe Paris as JSON with its name, country and population."}]
    schema = City.model_json_schema()
    expected = llm.create_chat_completion(messages, temperature=0, max_tokens=100, response_format={
        "type": "json_schema", "json_schema": {"name": "City", "schema": schema}})["choices"][0]["message"]["content"]
    parsed = client.chat.completions.parse(model="smollm2", messages=messages, response_format=City, temperature=0,
                                           max_tokens=100)
    assert parsed.choices[0].message.content == expected
    assert parsed.choices[0].message.parsed == City.model_validate_json(expected)
    streamed = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=100,
                                              stream=True, extra_body={"json_schema": schema})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected

    grammar = 'root ::= "yes" | "no"'
    prompt = "Is Paris the capital of France? Answer:"
    reply = client.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=8,
                                      extra_body={"grammar": grammar})
    assert reply.choices[0].text == llm.create_completion(prompt, grammar=grammar, temperature=0,
                                                          max_tokens=8)["choices"][0]["text"]
    assert reply.choices[0].text in ("yes", "no") and reply.choices[0].finish_reason == "stop"


def test_tool_calls_equal_llama(server, client, llm):
    """tools and tool_choice through the openai client, streamed and not: the same calls as Llama's."""
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
                                               "parameters": {"type": "object", "required": ["city"],
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    options = dict(temperature=0, max_tokens=100, tools=tools, tool_choice="required")
    expected = llm.create_chat_completion(messages, **options)["choices"][0]["message"]["tool_calls"]
    reply = client.chat.completions.create(model="smollm2", messages=messages, **options)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in expected]
    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, stream=True, **options))
    streamed = [d.tool_calls[0] for d in (c.choices[0].delta for c in chunks) if d.tool_calls]
    assert [(c.function.name, c.function.arguments) for c in streamed] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in expected]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the conversation goes on with the call and its result
    history = messages + [reply.choices[0].message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": reply.choices[0].message.tool_calls[0].id, "content": "18 C"}]
    answer = client.chat.completions.create(model="smollm2", messages=history, temperature=0, max_tokens=60,
                                            tools=tools)
    assert answer.choices[0].message.content or answer.choices[0].message.tool_calls


def test_logprobs_equal_llama(server, client, llm):
    """Chat logprobs/top_logprobs and completion logprobs, streamed and not: Llama's tokens and offsets, values
    within 5e-3 (a slot reuses the cached prefix of an earlier request: the rest of the prompt goes through
    another kernel than Llama's whole-prompt pass, ~1e-3 apart)."""
    llm.reset()
    expected = llm.create_chat_completion(MESSAGES, temperature=0, max_tokens=10, logprobs=True, top_logprobs=3)
    reply = client.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=10,
                                           logprobs=True, top_logprobs=3)
    got = reply.choices[0].logprobs.model_dump()["content"]
    want = expected["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in got] == [t["token"] for t in want]
    assert [[a["token"] for a in t["top_logprobs"]] for t in got] == [[a["token"] for a in t["top_logprobs"]] for t in want]
    assert np.allclose([t["logprob"] for t in got], [t["logprob"] for t in want], atol=5e-3)
    chunks = client.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=10,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [t.token for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert streamed == [t["token"] for t in want]

    prompt = "The capital of France is"
    llm.reset()
    expected = llm(prompt, temperature=0, max_tokens=8, logprobs=2)["choices"][0]["logprobs"]
    reply = client.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=8, logprobs=2)
    got = reply.choices[0].logprobs
    assert got.tokens == expected["tokens"] and got.text_offset == expected["text_offset"]
    assert np.allclose(got.token_logprobs, expected["token_logprobs"], atol=5e-3)
    assert [list(t) for t in got.top_logprobs] == [list(t) for t in expected["top_logprobs"]]
    streamed = client.completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=8, logprobs=2,
                                         stream=True)
    offsets = [o for c in streamed if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert offsets == expected["text_offset"]


def test_models_tokenize_detokenize(server, client, llm):
    assert [m.id for m in client.models.list().data] == [Path(llm.model_path).name]
    headers = {"Authorization": f"Bearer {KEY}"}
    tokens = httpx.post(server.url + "/tokenize", json={"content": "Hello world"}, headers=headers).json()["tokens"]
    assert tokens == llm.tokenize(b"Hello world", add_bos=False, special=True)
    content = httpx.post(server.url + "/detokenize", json={"tokens": tokens}, headers=headers).json()["content"]
    assert content == "Hello world"


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["code"] == status
    return error["message"]


def test_errors_in_openai_shape(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    post = lambda path, body, **kw: httpx.post(server.url + path, content=body, headers=kw.get("h", headers))  # noqa
    assert "JSON" in _error(post("/v1/chat/completions", b"{not json"), 400)
    assert "messages" in _error(post("/v1/chat/completions", b'{"max_tokens": 5}'), 400)
    assert "temperature" in _error(post("/v1/chat/completions", json.dumps(
        {"messages": MESSAGES, "temperature": "hot"}).encode()), 400)
    assert "prompt" in _error(post("/v1/completions", b'{"prompt": 5}'), 400)
    assert "logit_bias" in _error(post("/v1/completions", b'{"prompt": "Hi", "logit_bias": {"abc": 1}}'), 400)
    assert "logit_bias" in _error(post("/v1/completions", b'{"prompt": "Hi", "logit_bias": {"999999": 1}}'), 400)
    message = _error(post("/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 5000}).encode()), 400)
    assert "5000" in message and str(CTX_PER_SLOT) in message
    long_prompt = "word " * (CTX_PER_SLOT + 10)
    assert str(CTX_PER_SLOT) in _error(post("/v1/completions", json.dumps({"prompt": long_prompt}).encode()), 400)
    assert "tools[0]" in _error(post("/v1/chat/completions", json.dumps(
        {"messages": MESSAGES, "tools": [{"type": "function"}]}).encode()), 400)
    assert "not supported" in _error(post("/v1/completions", json.dumps(
        {"prompt": "Hi", "logprobs": 1, "echo": True}).encode()), 400)
    assert "top_logprobs" in _error(post("/v1/chat/completions", json.dumps(
        {"messages": MESSAGES, "top_logprobs": 2}).encode()), 400)
    assert "response_format" in _error(post("/v1/chat/completions", json.dumps(
        {"messages": MESSAGES, "response_format": {"type": "yaml"}}).encode()), 400)
    assert "GBNF" in _error(post("/v1/completions", json.dumps({"prompt": "Hi", "grammar": "root ::= ["}).encode()), 400)
    assert "not several" in _error(post("/v1/completions", json.dumps(
        {"prompt": "Hi", "grammar": 'root ::= "a"', "json_schema": {"type": "object"}}).encode()), 400)
    assert _error(post("/v1/chat/completions", json.dumps({"messages": MESSAGES}).encode(),
                       h={"Authorization": "Bearer wrong"}), 401)
    assert _error(post("/v1/chat/completions", json.dumps({"messages": MESSAGES}).encode(), h={}), 401)
    assert _error(httpx.get(server.url + "/v1/nothing", headers=headers), 404)
    assert "limit" in _error(post("/v1/completions", b'{"prompt": "' + b"x" * (9 << 20) + b'"}'), 413)
    assert httpx.get(server.url + "/health").status_code == 200        # no key needed
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_disconnect_frees_the_slot(server):
    body = {"prompt": "Count from one to a thousand: one, two,", "max_tokens": 900, "stream": True,
            "logit_bias": {"0": -100, "2": -100}}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert server.metric("requests_processing") == 1
    deadline = time.time() + 5
    while server.metric("requests_processing") and time.time() < deadline:
        time.sleep(0.05)
    assert server.metric("requests_processing") == 0
    generated = server.metric("tokens_predicted_total")
    time.sleep(0.5)
    assert server.metric("tokens_predicted_total") == generated     # nothing runs for the gone client


def test_full_queue_answers_503_with_retry_after(smollm2_path):
    server = Server(smollm2_path, "-np", "1", "--queue", "0", "-c", "2048")
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 400, "stream": True, "logit_bias": {"0": -100, "2": -100}}
        with httpx.stream("POST", server.url + "/v1/completions", json=body) as response:
            lines = response.iter_lines()      # kept: a dropped iterator closes the connection
            first = next(lines)
            assert first.startswith("data: ") and '"finish_reason": null' in first, first
            assert server.metric("requests_processing") == 1
            busy = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            assert "busy" in busy.json()["error"]["message"]
        time.sleep(0.5)
        assert httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
    finally:
        server.stop()


def test_gemma_chat_equals_llama(gemma3_path):
    llm = Llama(model_path=str(gemma3_path), n_ctx=2048, verbose=False)
    expected = llm.create_chat_completion(MESSAGES, **SAMPLING)["choices"][0]["message"]["content"]
    server = Server(gemma3_path, "-np", "2", "-c", "4096")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="gemma", messages=MESSAGES, **SAMPLING)
        assert reply.choices[0].message.content == expected
    finally:
        server.stop()


def test_a_file_that_fails_to_load_is_reported(tmp_path):
    """The model loads in the background: /health and requests say why it failed (500), with no traceback."""
    from starlette.testclient import TestClient

    from runtime.server import ServerConfig, create_app
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    app = create_app(ServerConfig(model_path=str(bad)))
    app.state.server.wait_loaded(timeout=30)
    with TestClient(app) as test_client:
        response = test_client.get("/health")
        assert response.status_code == 500 and "failed to load" in response.json()["error"]["message"]
        assert test_client.post("/v1/completions", json={"prompt": "Hi"}).status_code == 500


def test_health_answers_503_while_the_model_loads(smollm2_path, monkeypatch):
    """The server answers at once; until the model is loaded /health and requests say 503 with Retry-After."""
    import threading

    from starlette.testclient import TestClient

    import runtime.server.app as app_module
    from runtime.server import ServerConfig, create_app
    release = threading.Event()

    def slow_model(*args, **kwargs):
        release.wait(60)
        return slow_model.__wrapped__(*args, **kwargs)

    slow_model.__wrapped__ = app_module.load_model
    monkeypatch.setattr(app_module, "load_model", slow_model)
    app = create_app(ServerConfig(model_path=str(smollm2_path), n_slots=1, n_ctx=256))
    with TestClient(app) as test_client:
        response = test_client.get("/health")
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "loading" in response.json()["error"]["message"]
        busy = test_client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
        assert busy.status_code == 503
        release.set()
        assert app.state.server.wait_loaded(timeout=120)
        assert test_client.get("/health").json()["status"] == "ok"
        reply = test_client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "temperature": 0,
                                                           "logit_bias": {"0": -100, "2": -100}})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3


def test_embeddings_through_the_openai_client(tmp_path):
    """/v1/embeddings on all-MiniLM-L6-v2: the vectors of Llama.embed, L2-normalized, as floats or base64 (what
    the openai client asks for by default); generation routes refuse an encoder; bad inputs are 400s."""
    import base64

    from runtime import pull
    path = pull("all-minilm-l6-v2")
    texts = ["A cat sat on the mat.", "Dogs bark.", "Embeddings are vectors."]
    expected = Llama(str(path), embedding=True, verbose=False).embed(texts, normalize=True)
    server = Server(path, "--api-key", KEY)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        response = client.embeddings.create(model="minilm", input=texts)          # base64 on the wire
        assert [d.index for d in response.data] == [0, 1, 2] and response.model == "minilm"
        assert np.allclose([d.embedding for d in response.data], expected, atol=1e-6)
        n_tokens = sum(len(Llama(str(path), embedding=True, verbose=False).tokenize(t.encode())) for t in texts)
        assert response.usage.prompt_tokens == response.usage.total_tokens == n_tokens
        floats = httpx.post(server.url + "/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                            json={"input": texts[1], "encoding_format": "float"}).json()
        assert np.allclose(floats["data"][0]["embedding"], expected[1], atol=1e-6)
        raw = httpx.post(server.url + "/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                         json={"input": [texts[2]], "encoding_format": "base64"}).json()["data"][0]["embedding"]
        assert np.allclose(np.frombuffer(base64.b64decode(raw), "<f4"), expected[2], atol=1e-6)
        with pytest.raises(openai.BadRequestError, match="embeddings, not text"):
            client.chat.completions.create(model="minilm", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError, match="at most 512"):
            client.embeddings.create(model="minilm", input="word " * 600)
        with pytest.raises(openai.BadRequestError, match="'input'"):
            client.embeddings.create(model="minilm", input=[{"text": "no"}])
    finally:
        server.stop()


def test_decoder_embeddings_need_a_pooling(server, smollm2_path):
    error = httpx.post(server.url + "/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                       json={"input": "hello"})
    assert error.status_code == 400 and "--pooling" in error.json()["error"]["message"]
    pooled = Server(smollm2_path, "-np", "1", "--pooling", "last")
    try:
        got = httpx.post(pooled.url + "/v1/embeddings", json={"input": ["hello", "a cat"], "encoding_format": "float"})
        expected = Llama(str(smollm2_path), embedding=True, pooling_type=3, verbose=False).embed(["hello", "a cat"],
                                                                                               normalize=True)
        assert got.status_code == 200
        served = np.array([d["embedding"] for d in got.json()["data"]])
        # unit vectors from another process (its own threads and kernel state): float sums may differ in order
        assert np.all(np.sum(served * np.array(expected), axis=1) > 0.99999)
    finally:
        pooled.stop()
