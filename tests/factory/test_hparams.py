"""get_train_args: every shipped config parses; unknown keys, bad values and contradictions fail early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamafactory.errors import UserInputError
from llamafactory.hparams import get_train_args
from llamafactory.train.preflight import check_annealing, check_run_inputs

from .conftest import EXAMPLES

TRAIN_CONFIGS = sorted(
    p for p in EXAMPLES.rglob("*.yaml") if p.parent.name in ("train_full", "train_lora", "inference", "tiny")
)
BASE = {"model_name_or_path": "gpt2", "stage": "ddm", "do_train": True, "dataset": "wiki_demo",
        "output_dir": "unused", "finetuning_type": "full"}


def test_every_original_example_is_shipped():
    names = {p.relative_to(EXAMPLES).as_posix() for p in TRAIN_CONFIGS}
    expected = {
        "train_full/gpt2_full_ddm.yaml", "train_full/gpt2_full_ddm-small.yaml", "train_full/gpt2_full_ddm-sft.yaml",
        "train_full/gpt2_preprocess.yaml", "train_lora/llama2_lora_ddm-sft.yaml",
        "train_lora/llama2_lora_ar-sft-gsm.yaml", "inference/gpt2_full_ddm-inf.yaml",
        "inference/gpt2_full_ddm-gsm-inf.yaml", "inference/gpt2_full_ddm-small-inf-512.yaml",
        "inference/llama2_full_ddm-gsm-inf.yaml", "inference/llama2_full_ddm-inf-uncon.yaml",
    }
    assert expected <= names
    for stage in ("z0", "z2", "z2_offload", "z3", "z3_offload"):
        config = json.loads((EXAMPLES / "deepspeed" / f"ds_{stage}_config.json").read_text())
        assert config["zero_optimization"]["stage"] == int(stage[1])


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_config_parses(path: Path):
    model_args, data_args, training_args, finetuning_args, _ = get_train_args([str(path)])
    assert model_args.model_name_or_path
    assert finetuning_args.stage in ("pt", "sft", "ddm", "ddm-sft")
    assert data_args.dataset_names


def test_paper_values_of_the_adaptation_config():
    _, data_args, training_args, finetuning_args, _ = get_train_args([str(EXAMPLES / "train_full/gpt2_full_ddm.yaml")])
    assert (finetuning_args.stage, finetuning_args.anneal_steps, finetuning_args.shift) == ("ddm", 10000, True)
    assert (data_args.cutoff_len, data_args.packing) == (1024, True)
    assert (training_args.learning_rate, training_args.max_steps, training_args.warmup_steps) == (3e-4, 160000, 2000)
    assert training_args.lr_scheduler_type == "cosine" and training_args.bf16
    assert Path(training_args.deepspeed).name == "ds_z2_config.json"


def test_stage_defaults():
    ddm = get_train_args(BASE)[3]
    sft = get_train_args({**BASE, "stage": "ddm-sft", "dataset": "gsm_demo"})
    assert ddm.anneal_steps == 10000
    assert sft[3].anneal_steps == 1 and sft[1].packing is False
    assert get_train_args(BASE)[1].packing is True


def test_original_keys_default_as_in_the_original(caplog):
    _, _, _, finetuning_args, generating_args = get_train_args(BASE)
    assert finetuning_args.shift is False  # the original's default; every shipped diffusion config sets true
    assert "shift is not set" in caplog.text
    assert (finetuning_args.diffusion_steps, generating_args.logits_temp) == (64, 1.0)
    assert (generating_args.decoding_strategy, generating_args.topp_temp, generating_args.greedy) == ("random", 0.9, False)
    assert get_train_args({**BASE, "score_temp": 0.9})[3].score_temp == 0.9  # accepted; no code reads it


def test_shipped_small_config_anneals_over_the_ddm_default():
    text = (EXAMPLES / "train_full/gpt2_full_ddm-small.yaml").read_text()
    assert not [line for line in text.splitlines() if line.startswith("anneal_steps")]
    assert get_train_args([str(EXAMPLES / "train_full/gpt2_full_ddm-small.yaml")])[3].anneal_steps == 10000


# (config, diffusion_steps, logits_temp, decoding_strategy, greedy, topp_temp): what the original predict
# path ran for each of its inference configs (top-k + argmax without top-p when eval_dataset is "gsm*").
ORIGINAL_INFERENCE = [
    ("inference/gpt2_full_ddm-gsm-inf.yaml", 64, 0.98, "topk", True, None),
    ("inference/llama2_full_ddm-gsm-inf.yaml", 64, 1.0, "topk", True, None),
    ("inference/gpt2_full_ddm-inf.yaml", 1024, 0.98, "random", False, 0.9),
    ("inference/gpt2_full_ddm-small-inf-512.yaml", 512, 0.98, "random", False, 0.9),
    ("inference/llama2_full_ddm-inf-uncon.yaml", 256, 0.98, "random", False, 0.9),
]


@pytest.mark.parametrize("name, steps, temperature, strategy, greedy, top_p", ORIGINAL_INFERENCE,
                         ids=[row[0] for row in ORIGINAL_INFERENCE])
def test_original_inference_configs_resolve_to_the_original_decoding(name, steps, temperature, strategy, greedy,
                                                                      top_p):
    text = (EXAMPLES / name).read_text()
    assert "decoding_strategy" not in text and "greedy" not in text  # the original keys only
    _, _, training_args, finetuning_args, generating_args = get_train_args([str(EXAMPLES / name)])
    assert training_args.do_predict and finetuning_args.shift is True
    assert (finetuning_args.diffusion_steps, generating_args.logits_temp) == (steps, temperature)
    assert (generating_args.decoding_strategy, generating_args.greedy, generating_args.topp_temp) == \
        (strategy, greedy, top_p)


def test_keys_given_explicitly_win_over_the_gsm_rule():
    gsm = {**BASE, "stage": "ddm-sft", "do_train": False, "do_predict": True, "dataset": "gsm_test",
           "eval_dataset": "gsm_test", "shift": True}
    generating_args = get_train_args({**gsm, "topp_temp": 0.9, "greedy": False})[4]
    assert (generating_args.decoding_strategy, generating_args.greedy, generating_args.topp_temp) == ("topk", False, 0.9)
    generating_args = get_train_args({**gsm, "decoding_strategy": "random"})[4]
    assert (generating_args.decoding_strategy, generating_args.greedy, generating_args.topp_temp) == ("random", True, 0.9)
    other = get_train_args({**gsm, "eval_dataset": "c4_demo,gsm_test"})[4]  # only the first name counts
    assert (other.decoding_strategy, other.greedy, other.topp_temp) == ("random", False, 0.9)
    topk = get_train_args({**gsm, "eval_dataset": "c4_demo", "decoding_strategy": "topk"})[4]
    assert topk.topp_temp is None  # the top-k rule has no nucleus unless one is asked for


def test_accelerate_fsdp_config_loads():
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(EXAMPLES / "accelerate" / "fsdp_config.yaml")
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"


def test_misspelt_key_in_yaml_is_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model_name_or_path: gpt2\nstage: ddm\ndo_train: true\ndataset: wiki_demo\nlerning_rate: 1.0e-4\n")
    with pytest.raises(UserInputError, match=r"'lerning_rate' \(did you mean 'learning_rate'\?\)"):
        get_train_args([str(config)])


def test_command_line_overrides_are_typed(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: gpt2\nstage: ddm\ndo_train: true\ndataset: wiki_demo\nfinetuning_type: full\n")
    _, data_args, training_args, finetuning_args, generating_args = get_train_args(
        [str(config), "learning_rate=3e-4", "max_steps=7", "--shift", "false", "topp_temp=null", "cutoff_len=64",
         "output_dir=out"]
    )
    assert training_args.learning_rate == 3e-4 and training_args.max_steps == 7
    assert finetuning_args.shift is False and generating_args.topp_temp is None and data_args.cutoff_len == 64


def test_removed_transformers_keys_are_mapped():
    _, _, training_args, _, _ = get_train_args(
        {**BASE, "evaluation_strategy": "steps", "eval_steps": 5, "val_size": 4, "no_cuda": True,
         "per_gpu_train_batch_size": 3, "overwrite_output_dir": True}
    )
    assert training_args.eval_strategy == "steps" and training_args.use_cpu
    assert training_args.per_device_train_batch_size == 3 and training_args.overwrite_output_dir


def test_conflicting_old_and_new_key():
    with pytest.raises(UserInputError, match="evaluation_strategy"):
        get_train_args({**BASE, "evaluation_strategy": "steps", "eval_strategy": "no"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stage": "rm"}, "unknown stage 'rm'"),
        ({"anneal_steps": -1}, "anneal_steps must be >= 0 \\(0 or 1: no annealing\\), got -1"),
        ({"cutoff_len": 3}, "cutoff_len must be >= 4"),
        ({"diffusion_steps": 0}, "diffusion_steps must be >= 1"),
        ({"logits_temp": -1.0}, "logits_temp must be >= 0"),
        ({"topp_temp": 1.5}, "topp_temp must be in"),
        ({"decoding_strategy": "entropy"}, "unknown decoding_strategy"),
        ({"threshold": 1.5}, "threshold must be in \\(0, 1\\], got 1.5"),
        ({"cache": "full"}, "unknown cache 'full'"),
        ({"flash_attn": "flash_attention_2"}, "flash_attention_2"),
        ({"flash_attn": "xformers"}, "unknown flash_attn"),
        ({"finetuning_type": "qlora"}, "unknown finetuning_type"),
        ({"do_train": False}, "nothing to do"),
        ({"do_eval": True}, "needs data: set val_size or eval_dataset"),
        ({"adapter_name_or_path": "a"}, "adapter_name_or_path needs finetuning_type: lora"),
        ({"val_size": 2.5}, "val_size >= 1 is a record count"),
        ({"streaming": True, "val_size": 0.1}, "streaming needs val_size as a record count"),
        ({"stage": "pt", "do_predict": True, "val_size": 2}, "do_predict is not available for stage pt"),
        ({"deepspeed": "missing_ds.json"}, "deepspeed config missing_ds.json does not exist"),
        ({"learning_rate": "fast"}, "learning_rate must be"),
        ({"model_name_or_path": None}, "model_name_or_path is required"),
    ],
)
def test_contradictions_fail_before_loading(overrides, message):
    with pytest.raises(UserInputError, match=message):
        get_train_args({**BASE, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stage": "ddm-sft"}, "dataset 'wiki_demo'.*no prompt/response"),
        ({"stage": "sft", "dataset": "c4_demo"}, "dataset 'c4_demo'.*no prompt/response"),
        ({"dataset": "no_such_set"}, "unknown dataset 'no_such_set'"),
        ({"template": "chatml"}, "unknown template 'chatml'"),
    ],
)
def test_dataset_and_template_problems_fail_in_the_preflight(overrides, message):
    """The registry and templates live with the data: the preflight checks them before any model loads."""
    model_args, data_args, training_args, finetuning_args, _ = get_train_args({**BASE, **overrides})
    with pytest.raises(UserInputError, match=message):
        check_run_inputs(model_args, data_args, training_args, finetuning_args)


@pytest.fixture
def flash_installed(monkeypatch):
    """flash_attention_2 passes the parser's availability check (the preflight's checks are what is tested)."""
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)


@pytest.mark.parametrize("stage", ["ddm", "ddm-sft"])
def test_the_preflight_refuses_flash_attention_while_annealing(flash_installed, stage):
    """Both diffusion stages anneal when anneal_steps > 1; the 4D mask would only fail at the first step."""
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(
        {**BASE, "stage": stage, "flash_attn": "flash_attention_2", "anneal_steps": 100})
    with pytest.raises(UserInputError) as refused:
        check_run_inputs(model_args, data_args, training_args, finetuning_args)
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert f"anneal_steps 100 trains 99 steps of stage {stage}" in message and "use flash_attn: sdpa" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"anneal_steps": 1},  # the stages' spelling of "no annealing"
        {"anneal_steps": 0},  # the 7B trainer's spelling, accepted here with the same meaning
        {"anneal_steps": 100, "do_train": False, "do_eval": True, "val_size": 2},  # no training step
        {"anneal_steps": 100, "stage": "pt"},  # the AR stages never anneal
    ],
)
def test_flash_attention_is_accepted_when_nothing_anneals(flash_installed, overrides):
    model_args, _, training_args, finetuning_args, _ = get_train_args(
        {**BASE, "flash_attn": "flash_attention_2", **overrides})
    check_annealing(model_args, training_args, finetuning_args)


def test_annealing_under_sdpa_passes_the_preflight_check():
    model_args, _, training_args, finetuning_args, _ = get_train_args({**BASE, "anneal_steps": 100})
    check_annealing(model_args, training_args, finetuning_args)


def test_reporting_packages_are_checked(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if "tensorboard" in name else real(name))
    with pytest.raises(UserInputError, match="report_to: tensorboard needs the tensorboard package"):
        get_train_args({**BASE, "report_to": "tensorboard"})


def test_dataset_registry_errors(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"odd": {"file_name": "x.json", "formatting": "sharegpt"}}))
    for overrides, message in (({"dataset": "odd", "dataset_dir": str(tmp_path)}, "formatting 'sharegpt' is not supported"),
                               ({"dataset_dir": str(tmp_path / "nowhere")}, "registry .* not found")):
        model_args, data_args, training_args, finetuning_args, _ = get_train_args({**BASE, **overrides})
        with pytest.raises(UserInputError, match=message):
            check_run_inputs(model_args, data_args, training_args, finetuning_args)
