"""The OpenAI-compatible API against a live server on 127.0.0.1 (the bundled model, few steps)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from llamafactory.serve.background import serve_in_background

FAST = {"steps": 8}


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60, max_retries=0)


def _complete(client: OpenAI, prompt: str, **fields):
    extra = {**FAST, **fields.pop("extra", {})}
    return client.completions.create(model="diffugpt-tiny", prompt=prompt, max_tokens=fields.pop("max_tokens", 12),
                                     extra_body=extra, **fields)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["diffugpt-tiny"]
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


def test_completion_shape_seed_and_usage(client, engine):
    first = _complete(client, "The weather today is", seed=3, temperature=0.8)
    again = _complete(client, "The weather today is", seed=3, temperature=0.8)
    other = _complete(client, "The weather today is", seed=4, temperature=0.8, n=2)
    choice = first.choices[0]
    assert choice.text == again.choices[0].text
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= choice.model_extra["nfe"] <= FAST["steps"]
    assert first.usage.prompt_tokens == 1 + len(engine.tokenizer.encode("The weather today is"))  # + start token
    assert 0 <= first.usage.completion_tokens <= 12
    assert [c.index for c in other.choices] == [0, 1]


def test_streamed_deltas_join_to_the_whole_answer(client):
    whole = _complete(client, "Once upon a time", seed=7, max_tokens=24).choices[0]
    chunks = list(_complete(client, "Once upon a time", seed=7, max_tokens=24, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.text
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def test_traced_stream_sends_every_step_and_the_same_answer(client, engine):
    whole = _complete(client, "Once upon a time", seed=7, max_tokens=24).choices[0]
    chunks = list(_complete(client, "Once upon a time", seed=7, max_tokens=24, stream=True,
                            extra={"trace": True}))
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.text
    frames = [chunk.choices[0].model_extra["denoise"] for chunk in chunks
              if chunk.choices[0].model_extra.get("denoise")]
    assert [frame["step"] for frame in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["nfe"] == whole.model_extra["nfe"]
    masked = [frame["tokens"].count(None) for frame in frames]
    assert masked == sorted(masked, reverse=True) and masked[0] > 0 and masked[-1] == 0
    for earlier, later in zip(frames, frames[1:]):  # a fixed column never changes
        assert all(a is None or a == b for a, b in zip(earlier["tokens"], later["tokens"]))
    assert "".join(frames[-1]["tokens"]).startswith(whole.text)


def test_the_page_is_served_only_by_webchat(server, engine):
    assert httpx.get(server.url + "/", timeout=30).status_code == 404
    with serve_in_background(engine, page=True) as running:
        page = httpx.get(running.url + "/", timeout=30)
        assert page.status_code == 200 and 'id="canvas"' in page.text
        config = httpx.get(running.url + "/webchat/config", timeout=30).json()
    assert config["defaults"]["steps"] == engine.defaults.sampler_arguments({})["steps"]
    assert "threshold" in config["strategies"] and config["positions"] == engine.limit


def test_chat_and_chat_stream(client):
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    whole = client.chat.completions.create(model="diffugpt-tiny", messages=messages, max_tokens=12, seed=1,
                                           extra_body=FAST)
    streamed = client.chat.completions.create(model="diffugpt-tiny", messages=messages, max_tokens=12, seed=1,
                                              extra_body=FAST, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert whole.choices[0].message.role == "assistant"
    assert text == whole.choices[0].message.content


def test_suffix_infills_between_prompt_and_suffix(client, engine):
    answer = _complete(client, "The cat sat on the", suffix=" and slept.", max_tokens=6, temperature=0, seed=0,
                       extra={"steps": 6})
    tokens = engine.tokenizer.encode
    assert answer.usage.prompt_tokens == 1 + len(tokens("The cat sat on the")) + len(tokens(" and slept."))
    assert answer.usage.completion_tokens <= 6 and not answer.choices[0].text.endswith(" and slept.")
    echoed = _complete(client, "The cat sat on the", suffix=" and slept.", max_tokens=6, temperature=0, seed=0,
                       extra={"steps": 6}, echo=True)
    assert echoed.choices[0].text == "The cat sat on the" + answer.choices[0].text


def test_stop_string_ends_the_text(client):
    whole = _complete(client, "One, two, three,", seed=5, max_tokens=16, temperature=0).choices[0].text
    if len(whole) < 3:
        pytest.skip("the answer is too short to cut")
    stop = whole[1:3]
    cut = _complete(client, "One, two, three,", seed=5, max_tokens=16, temperature=0, stop=[stop]).choices[0]
    assert cut.text == whole[: whole.find(stop)] and cut.finish_reason == "stop"


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_concurrent_answers_equal_answers_alone(client, server, temperature):
    prompts = ["A", "The history of the city", "In 1990 the", "My favourite food is", "Rain", "The river flows"] * 2

    def ask(item):
        index, prompt = item
        return _complete(client, prompt, seed=100 + index, temperature=temperature, max_tokens=10).choices[0].text

    alone = [ask(item) for item in enumerate(prompts)]
    before = server.app.state.scheduler.peak_rows
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, enumerate(prompts)))
    assert together == alone
    assert server.app.state.scheduler.peak_rows > 1 or before > 1  # rows did share the batch


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_input_gets_openai_errors_and_the_server_keeps_serving(server, client):
    url = f"{server.url}/v1/completions"
    cases = [
        ({"prompt": "x", "steps": 0}, 400, "diffusion_steps must be >= 1"),
        ({"prompt": "x", "strategy": "nope"}, 400, "unknown decoding_strategy"),
        ({"prompt": "x", "bogus": 1}, 400, "unknown field 'bogus'"),
        ({"prompt": ""}, 400, "empty"),
        ({"prompt": "x", "max_tokens": "many"}, 422, "max_tokens"),
        ({"prompt": "x", "max_tokens": 5000}, 400, "exceeds the model's"),
        ({"prompt": "x", "model": "gpt-9"}, 404, "unknown model"),
        ({"prompt": "x", "presence_penalty": 1.0}, 400, "presence_penalty"),
        ({"prompt": "x", "trace": True}, 400, "needs stream: true"),
    ]
    for body, status, words in cases:
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == status, (body, response.text)
        assert words in _error(response)["message"]
    response = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 422
    response = httpx.post(url, content=b"x" * (2 << 20), headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413 and _error(response)["code"] == "body_too_large"
    assert _complete(client, "still there?").choices[0].finish_reason in ("stop", "length")


def test_api_key_and_full_queue(engine):
    with serve_in_background(engine, api_key="sesame", max_batch=1, max_queue=1, timeout=60) as running:
        url = f"{running.url}/v1/completions"
        assert httpx.post(url, json={"prompt": "x"}, timeout=30).status_code == 401
        wrong = httpx.post(url, json={"prompt": "x"}, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401 and _error(wrong)["code"] == "invalid_api_key"
        full = httpx.post(url, json={"prompt": "x", "n": 2, **FAST}, headers={"Authorization": "Bearer sesame"},
                          timeout=30)
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        ok = httpx.post(url, json={"prompt": "x", **FAST}, headers={"Authorization": "Bearer sesame"}, timeout=60)
        assert ok.status_code == 200
