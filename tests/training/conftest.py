"""Fixtures for the 7B trainer tests: a tiny LLaMA base model and tiny packed corpora, built once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from diffullama_training.packed_dataset import PackedWriter
from tests.tiny import corpus, tiny_llama, tiny_tokenizer

TRAINING_DIR = Path(__file__).resolve().parents[2] / "DiffuLLaMA-training"
SEQ_LENGTH = 15  # blocks of 16 tokens: divisible by 2 for the two-rank sequence-parallel run
CHUNK = 16 * 8


def write_corpus(directory: Path, prefix: str, tokenizer, lines: list[str], chunk_size: int = CHUNK) -> list[Path]:
    """Pack ``BOS + text + EOS`` documents into ``{prefix}_*.bin`` files."""
    with PackedWriter(directory, prefix, chunk_size, tokenizer.eos_token_id) as writer:
        for line in lines:
            writer.add([tokenizer.bos_token_id, *tokenizer(line, add_special_tokens=False)["input_ids"],
                        tokenizer.eos_token_id])
    return writer.files


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def base_model(tmp_path_factory, tokenizer) -> Path:
    """An autoregressive tiny LLaMA checkpoint (the thing the trainer adapts)."""
    directory = tmp_path_factory.mktemp("base_model")
    tiny_llama(len(tokenizer), max_position_embeddings=64).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def packed_data(tmp_path_factory, tokenizer) -> Path:
    """train_slim / train_star files (different text) and a validation set in ``val/``."""
    root = tmp_path_factory.mktemp("packed")
    write_corpus(root / "train", "train_slim", tokenizer, corpus(400, seed=0))
    write_corpus(root / "train", "train_star", tokenizer, corpus(400, seed=1))
    write_corpus(root / "val", "validation", tokenizer, corpus(40, seed=9))
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_deepspeed_launch_config(path: Path, deepspeed_json: Path, processes: int = 2) -> Path:
    """An accelerate config running DeepSpeed with ``deepspeed_json`` on CPU processes."""
    path.write_text("\n".join([
        "compute_environment: LOCAL_MACHINE", "distributed_type: DEEPSPEED", "deepspeed_config:",
        f"  deepspeed_config_file: {deepspeed_json}", "  zero3_init_flag: false", "machine_rank: 0",
        "num_machines: 1", f"num_processes: {processes}", "use_cpu: true",
    ]) + "\n")
    return path


def torchrun(processes: int) -> list[str]:
    """Launcher prefix for a CPU data-parallel run (gloo)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port())]


def accelerate_launch(config: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--main_process_port", str(free_port())]


def run_training(args: list[str], launcher: list[str] | None = None, *, expect_success: bool = True,
                 timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run train.py in its directory, in one process or under ``launcher``; fail with its output.

    ``env`` replaces the inherited environment (default: this one, with W&B disabled and the Hub offline)."""
    env = env or {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                  "OMP_NUM_THREADS": "1"}
    command = [*(launcher or [sys.executable]), "train.py", *args]
    result = subprocess.run(command, cwd=TRAINING_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_success and result.returncode != 0:
        raise AssertionError(f"train.py exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result
