"""llamafactory-cli: commands, one-line user errors, and the torchrun relaunch command."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from llamafactory import __version__
from llamafactory.cli import main, torchrun_command


def test_version_env_and_help(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert main(["env"]) == 0
    report = capsys.readouterr().out
    assert all(f"{name}:" in report for name in ("python", "torch", "transformers", "peft", "deepspeed", "flash-attn",
                                                 "wandb", "pyyaml"))
    assert "attention eager: available" in report and "attention sdpa: available" in report
    if importlib.util.find_spec("flash_attn") is None:  # CI never installs the CUDA extra
        assert ("attention flash_attention_2: unavailable (flash-attn is not installed: pip install -r "
                "requirements-cuda.txt on a CUDA machine)") in report
    assert main(["help"]) == 0 and "llamafactory-cli train CONFIG.yaml" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0 and "FORCE_TORCHRUN" in capsys.readouterr().out
    assert main(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: gpt2\nstage: ddm\ndo_train: true\ndataset: wiki_demo\n")
    assert main(["train", str(config), "stage=rm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown stage 'rm'") and err.count("\n") == 1
    assert main(["train"]) == 2 and "needs a config file" in capsys.readouterr().err


def test_torchrun_command_follows_the_environment(monkeypatch):
    for key, value in {"NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "4", "MASTER_ADDR": "10.0.0.1",
                       "MASTER_PORT": "29555"}.items():
        monkeypatch.setenv(key, value)
    command = torchrun_command(["run.yaml", "max_steps=3"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    options = dict(zip(command[3:13:2], command[4:13:2]))
    assert options == {"--nnodes": "2", "--node_rank": "1", "--nproc_per_node": "4", "--master_addr": "10.0.0.1",
                       "--master_port": "29555"}
    assert command[13:] == ["-m", "llamafactory.cli", "train", "run.yaml", "max_steps=3"]


@pytest.mark.parametrize(("force", "local_rank", "expected"), [("1", None, True), ("0", None, False), ("1", "0", False)])
def test_when_torchrun_is_used(monkeypatch, force, local_rank, expected):
    from llamafactory import cli

    monkeypatch.setenv("FORCE_TORCHRUN", force)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert cli._wants_torchrun() is expected
