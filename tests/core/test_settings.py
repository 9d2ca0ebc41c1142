"""The settings schema: every setting, under every spelling, reaches the sampler through every surface, round-trips
through generation_config.json, and a bad value gets the same one message everywhere."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import GenerationConfig

from dlm_eval import cli as eval_cli
from dlm_eval.harness import MODEL_ARG_KEYS, harness_decoding
from llamafactory.ddm import SETTINGS, SamplingConfig, generate
from llamafactory.ddm.hf import DiffusionGenerationConfig
from llamafactory.ddm.settings import GENERATE_SETTINGS, Setting, canonical, settings_table
from llamafactory.errors import UserInputError
from llamafactory.hparams import get_train_args
from llamafactory.hparams.generating_args import CONFIG_KEYS
from llamafactory.quickstart import DIFFUGPT, build_parser
from llamafactory.quickstart import main as quickstart_main
from llamafactory.quickstart import sampling_config as quickstart_config
from model import _sampler_settings

generate_module = importlib.import_module("llamafactory.ddm.generate")  # the package's ``generate`` is the function
DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
YAML_BASE = {"model_name_or_path": "gpt2", "stage": "ddm", "do_train": True, "dataset": "wiki_demo",
             "output_dir": "unused", "finetuning_type": "full"}
IDS = [s.name for s in SETTINGS]


def _value(s: Setting) -> Any:
    """A usable value other than the default."""
    if s.choices:
        return next(c for c in reversed(s.choices) if c != s.default)
    if s.kind is bool:
        return not s.default
    if s.kind is tuple:
        return (3, 5)
    if s.kind is int:
        return 2 if s.default is None else s.default + 1
    return 0.5 if s.default != 0.5 else 0.25


def _bad(s: Setting) -> Any:
    """A value of the setting's type outside what it allows (choices and ranges only)."""
    if s.choices:
        return "nope"
    return s.kind(s.low if s.low_open else s.low - 1)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


CHECKED = [s for s in SETTINGS if s.choices or s.low is not None]


def test_names_defaults_and_aliases_come_from_the_schema():
    assert [s.name for s in SETTINGS] == [f for f in SamplingConfig().settings()]
    assert SamplingConfig().settings() == {s.name: s.default for s in SETTINGS}
    spellings = [name for s in GENERATE_SETTINGS for name in s.spellings]
    assert len(spellings) == len(set(spellings)), "a spelling names two settings"
    assert canonical({"logits_temp": 0.5, "block_size": 2, "gen_length": 3}) == \
        {"temperature": 0.5, "block_length": 2, "max_new_tokens": 3}
    with pytest.raises(UserInputError, match="top_p=0.4 and its alias topp_temp=0.5 disagree"):
        canonical({"topp_temp": 0.5, "top_p": 0.4})


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_a_quick_start_flag_reaches_the_sampler_and_round_trips_through_generation_config(setting, tmp_path):
    value = _value(setting)
    for spelling in setting.spellings:
        config = quickstart_config(build_parser(DIFFUGPT).parse_args([f"--{spelling}", _text(value)]))
        assert config.settings()[setting.name] == value, spelling
    DiffusionGenerationConfig.from_settings(config.settings()).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "generation_config.json").read_text())
    assert (setting.name in written) or (setting.name == "greedy" and written["do_sample"] is (not value))
    loaded = DiffusionGenerationConfig.adopt(GenerationConfig.from_pretrained(tmp_path))
    assert SamplingConfig(**loaded.sampler_settings()).settings() == config.settings()


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_a_do_predict_key_reaches_the_sampler(setting):
    value = _value(setting)
    key = "diffusion_steps" if setting.name == "steps" else CONFIG_KEYS.get(setting.name, setting.name)
    yaml_value = list(value) if isinstance(value, tuple) else value  # what a YAML list loads as
    _, _, _, finetuning_args, generating_args = get_train_args({**YAML_BASE, key: yaml_value, "shift": True})
    config = generating_args.sampling_config(finetuning_args.diffusion_steps, finetuning_args.shift)
    assert config.settings()[setting.name] == value


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_generate_takes_every_spelling_of_a_setting(setting, monkeypatch):
    seen = []
    monkeypatch.setattr(generate_module, "sample", lambda model, ids, mask_id, config, **_: seen.append(config) or
                        SimpleNamespace(tokens=ids, nfe=None, history=[]))
    model = SimpleNamespace(device="cpu", shift=True, mask_id=9, config=SimpleNamespace())

    parameters = inspect.signature(generate).parameters
    value = _value(setting)
    for spelling in setting.spellings:
        assert parameters[spelling].kind is inspect.Parameter.KEYWORD_ONLY
        generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, **{spelling: value})
        assert seen[-1].settings()[setting.name] == value, spelling
    assert parameters[setting.name].default == setting.default


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_evaluation_flags_model_args_and_the_original_api_take_a_setting(setting):
    value = _value(setting)
    harness_key = MODEL_ARG_KEYS.get(setting.name, setting.name)
    assert harness_decoding({harness_key: _text(value)}).settings()[setting.name] == value
    assert harness_decoding({setting.name: value}).settings()[setting.name] == value
    required = {"diffusion_steps": 64, "logits_temp": 0.95, "shift": True}
    for spelling in setting.spellings:
        args = {**{k: v for k, v in required.items() if canonical({k: v}).keys() != {setting.name}}, spelling: value}
        assert _sampler_settings(SimpleNamespace(**args))[setting.name] == value
    if setting.name == "steps":  # each evaluation task sets its own T
        return
    for spelling in setting.spellings:
        args = eval_cli.build_parser(eval_cli.DIFFUGPT).parse_args([f"--{spelling}", _text(value)])
        decoding = eval_cli.settings_from(args, eval_cli.DIFFUGPT).decoding(eval_cli.DIFFUGPT.decoding())
        assert decoding.settings()[setting.name] == value, spelling


@pytest.mark.parametrize("setting", CHECKED, ids=[s.name for s in CHECKED])
def test_a_bad_value_gets_the_same_message_on_every_surface(setting, capsys, monkeypatch):
    bad = _bad(setting)
    message = setting.problem(bad)
    assert message and setting.label in message
    with pytest.raises(UserInputError) as error:
        SamplingConfig(**{setting.name: bad}).validate()
    assert str(error.value) == message
    with pytest.raises(UserInputError) as error:
        generate_module.sampler_config({setting.name: bad, "max_new_tokens": 2}, shift=True)
    assert str(error.value) == message
    with pytest.raises(UserInputError) as error:
        harness_decoding({MODEL_ARG_KEYS.get(setting.name, setting.name): _text(bad)})
    assert str(error.value) == message
    key = "diffusion_steps" if setting.name == "steps" else CONFIG_KEYS.get(setting.name, setting.name)
    with pytest.raises(UserInputError) as error:
        get_train_args({**YAML_BASE, key: bad})
    assert str(error.value) == message
    flag = f"--{setting.spellings[-1]}"
    assert quickstart_main(DIFFUGPT, ["--model_name", "/nonexistent/model", flag, _text(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    if setting.name != "steps":
        monkeypatch.setattr(eval_cli, "load_examples", lambda *a: pytest.fail("data loaded before the check"))
        assert eval_cli.main(eval_cli.DIFFUGPT, ["--model_name", "/nonexistent", "--tasks", "piqa", flag,
                                                 _text(bad)]) == 2
        assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")] == \
            [f"error: {message}"]


def test_the_design_doc_table_is_the_schema():
    text = DESIGN.read_text()
    section = text[text.index("## Sampler settings"): text.index("## Likelihood scoring")]
    assert settings_table() in section
