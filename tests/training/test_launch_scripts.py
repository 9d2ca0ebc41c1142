"""run_distributed.sh / multi_node.sh assemble the launch commands from a hostfile or SLURM (dry runs)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.training.conftest import TRAINING_DIR


def _dry_run(script: str, *args: str, **env: str) -> list[list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NODE_RANK", "MASTER_"))}
    result = subprocess.run(["bash", str(TRAINING_DIR / script), *args], env={**clean, "DRY_RUN": "1", **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.fixture
def hostfile(tmp_path) -> Path:
    path = tmp_path / "hosts.txt"
    path.write_text("gh-001\ngh-002\ngh-003\n")
    return path


def test_a_node_of_a_hostfile_job_gets_its_rank_and_the_world(hostfile):
    (command,) = _dry_run("run_distributed.sh", "2", "--anneal-steps", "100", HOSTFILE=str(hostfile),
                          GPUS_PER_NODE="4", MODEL="/models/llama 2")
    assert command[:2] == ["accelerate", "launch"]
    assert (_flag(command, "--machine_rank"), _flag(command, "--num_machines"), _flag(command, "--num_processes"),
            _flag(command, "--main_process_ip")) == ("2", "3", "12", "gh-001")
    assert _flag(command, "--config_file") == "accelerate_configs/multi_node.yaml"
    assert _flag(command, "--model") == "/models/llama 2" and command[-2:] == ["--anneal-steps", "100"]
    assert "--resume" in command and command[command.index("train.py") - 1] == "12"


def test_slurm_variables_take_precedence(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/bin/sh\nprintf 'node17\\nnode18\\n'\n")
    (fake_bin / "scontrol").chmod(0o755)
    (command,) = _dry_run("run_distributed.sh", SLURM_JOB_NODELIST="node[17-18]", SLURM_NNODES="2",
                          SLURM_NODEID="1", GPUS_PER_NODE="4", PATH=f"{fake_bin}:{os.environ['PATH']}")
    assert (_flag(command, "--machine_rank"), _flag(command, "--num_machines"), _flag(command, "--main_process_ip"),
            _flag(command, "--num_processes")) == ("1", "2", "node17", "8")


def test_a_single_machine_uses_the_single_node_config(tmp_path):
    (command,) = _dry_run("run_distributed.sh", HOSTFILE=str(tmp_path / "absent.txt"), GPUS_PER_NODE="8")
    assert _flag(command, "--config_file") == "accelerate_configs/single_node.yaml"
    assert (_flag(command, "--num_machines"), _flag(command, "--num_processes")) == ("1", "8")


def test_multi_node_starts_every_host_with_its_rank_and_the_settings(hostfile):
    commands = _dry_run("multi_node.sh", "--seed", "7", HOSTFILE=str(hostfile), MODEL="/models/llama 2",
                        ENV_SETUP="source /env/bin/activate")
    commands.sort(key=lambda command: command[-2])  # the hosts are started in parallel: print order varies
    assert [c[-2] for c in commands] == ["gh-001", "gh-002", "gh-003"]
    for rank, command in enumerate(commands):
        remote = command[-1]
        assert "source /env/bin/activate;" in remote and "export MODEL=/models/llama\\ 2;" in remote
        assert remote.endswith(f"bash run_distributed.sh {rank} --seed 7 ")


def _documented_train_flags(readme: Path) -> list[str]:
    """The train.py flags of the first `accelerate launch ... train.py` command in a README's code blocks."""
    text = readme.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith("accelerate launch") and "train.py" in line)
    words = shlex.split(line)
    return words[words.index("train.py") + 1:]


@pytest.mark.parametrize("readme", [TRAINING_DIR / "README.md", TRAINING_DIR.parent / "README.md"])
def test_the_documented_command_and_the_launch_script_reproduce_the_published_run(readme, tmp_path):
    """Constant lr 2e-5 without warm-up (what the original's DeepSpeed scheduler pinned, whatever its
    --learning-rate said), blocks of 2048 + 1 tokens, 60 x 4 per GPU, seed 2829, bf16, no annealing."""
    from diffullama_training.run import parse_args

    published = {"learning_rate": 2e-5, "warmup_steps": 0, "seq_length": 2048, "batch_size": 60,
                 "gradient_accumulate_every": 4, "max_train_steps": 20000, "seed": 2829, "mixed_precision": "bf16",
                 "anneal_steps": 0, "gradient_checkpointing": True, "parallel_mode": "data_parallel"}
    documented = vars(parse_args(_documented_train_flags(readme)))
    (launched,) = _dry_run("run_distributed.sh", HOSTFILE=str(tmp_path / "absent.txt"), GPUS_PER_NODE="8")
    scripted = vars(parse_args(launched[launched.index("train.py") + 1:]))
    for settings in (documented, scripted):
        assert {key: settings[key] for key in published} == published


@pytest.mark.parametrize("name", ["single_node.yaml", "two_node.yaml", "multi_node.yaml"])
def test_the_shipped_training_configs_are_the_published_zero3_with_offload(name):
    import json

    import yaml

    launch = yaml.safe_load((TRAINING_DIR / "accelerate_configs" / name).read_text())
    assert launch["distributed_type"] == "DEEPSPEED" and launch["deepspeed_config"]["zero3_init_flag"] is False
    assert not {"mixed_precision", "gradient_accumulation_steps", "zero_stage"} & set(launch)
    deepspeed = json.loads((TRAINING_DIR / launch["deepspeed_config"]["deepspeed_config_file"]).read_text())
    zero = deepspeed["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "cpu"
    assert not {"optimizer", "scheduler"} & set(deepspeed)  # train.py's flags decide the rate
    assert deepspeed["bf16"]["enabled"] == "auto" and deepspeed["gradient_clipping"] == "auto"
