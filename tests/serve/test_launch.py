"""The serving commands' front doors: the terminal chat, the environment's limits, the CLI's usage."""

from __future__ import annotations

import io

import httpx
import pytest

from llamafactory.cli import main
from llamafactory.errors import UserInputError
from llamafactory.serve.background import serve_in_background
from llamafactory.serve.chat import terminal_chat
from llamafactory.serve.launch import WEBCHAT_PORT
from llamafactory.serve.limits import Limits

FIELDS = {"seed": 5, "max_tokens": 10, "steps": 10}


def test_terminal_chat_replies_as_the_api_does(engine):
    out = io.StringIO()
    terminal_chat(engine, dict(FIELDS), stdin=io.StringIO("Hello there\nclear\nHello there\nexit\n"), out=out)
    lines = out.getvalue().splitlines()
    replies = [line.removeprefix("User: Assistant: ") for line in lines if line.startswith("User: Assistant: ")]
    assert "User: (history cleared)" in lines and len(replies) == 2
    assert replies[0] == replies[1]  # the history was cleared, the seed is the same: the same reply
    with serve_in_background(engine) as running:
        answer = httpx.post(running.url + "/v1/chat/completions", timeout=60, json={
            **FIELDS, "stop": ["\nUser:"], "messages": [{"role": "user", "content": "Hello there"}]}).json()
    assert replies[0] == answer["choices"][0]["message"]["content"]


def test_limits_come_from_the_environment(monkeypatch):
    for name in ("API_HOST", "API_PORT", "API_KEY", "API_MAX_BATCH", "API_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert (Limits.from_env().host, Limits.from_env().port) == ("127.0.0.1", 8000)
    assert Limits.from_env(port=WEBCHAT_PORT).port == 7860
    monkeypatch.setenv("API_PORT", "9001")
    monkeypatch.setenv("API_MAX_BATCH", "4")
    assert (Limits.from_env(port=WEBCHAT_PORT).port, Limits.from_env().max_batch) == (9001, 4)
    for name, value, words in [("API_PORT", "eighty", "API_PORT must be an integer >= 1, got 'eighty'"),
                               ("API_MAX_BATCH", "0", "API_MAX_BATCH must be an integer >= 1"),
                               ("API_TIMEOUT", "-3", "API_TIMEOUT must be a number of seconds > 0")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(UserInputError, match=words):
            Limits.from_env()
        monkeypatch.delenv(name)


@pytest.mark.parametrize("command", ["api", "chat", "webchat"])
def test_serving_commands_need_a_config(command, capsys):
    assert main([command]) == 2
    assert main([command, "--help"]) == 0
    assert f"llamafactory-cli {command} CONFIG.yaml" in capsys.readouterr().out


def test_a_config_without_a_model_is_one_error_line(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text("learning_rate: 1.0e-4\n")
    assert main(["webchat", str(config)]) != 0
    assert "set model_name_or_path" in capsys.readouterr().err


def test_the_configs_sampler_keys_replace_the_checkpoints_defaults():
    from llamafactory.serve.launch import load_engine

    from .conftest import BUNDLED

    engine = load_engine([f"model_name_or_path={BUNDLED}", "diffusion_steps=7", "decoding_strategy=topk",
                          "threshold=0.5"])
    defaults = engine.defaults.sampler_arguments({})
    assert (defaults["steps"], defaults["strategy"], defaults["threshold"]) == (7, "topk", 0.5)
    assert engine.settings(None, {"steps": 9})[1].steps == 9  # a request's field still wins
    with pytest.raises(UserInputError, match="threshold"):
        load_engine([f"model_name_or_path={BUNDLED}", "threshold=2"])


def test_a_block_model_refuses_a_suffix_with_one_line():
    from llamafactory.ddm import DiffusionLM
    from llamafactory.serve.engine import Engine
    from llamafactory.serve.launch import load_engine

    from .conftest import BUNDLED

    loaded = load_engine([f"model_name_or_path={BUNDLED}"])
    model = DiffusionLM(loaded.model.model, loaded.model.tokens, shift=loaded.model.shift, block_size=4).eval()
    block = Engine.load(model, loaded.tokenizer, str(BUNDLED))
    assert block.jobs(["Once"], suffix=None, n=1, seed=1, stops=[], max_tokens=8, fields={})[0][0].new_tokens == 8
    with pytest.raises(UserInputError, match=r"block-causal \(block_size=4\)"):
        block.jobs(["Once"], suffix=" the end", n=1, seed=1, stops=[], max_tokens=8, fields={})
