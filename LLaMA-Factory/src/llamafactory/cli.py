"""``llamafactory-cli``: train / api / chat / webchat / export / version / env / help.

``train`` runs in this process, or relaunches itself through torchrun when ``FORCE_TORCHRUN=1`` is set or
more than one GPU is visible; torchrun is then configured from ``NNODES``, ``NODE_RANK``,
``NPROC_PER_NODE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

from . import __version__
from .entry_points import attention_report, bool_word, run_command

USAGE = f"""llamafactory-cli {__version__}: diffusion LMs adapted from autoregressive ones (DiffuGPT / DiffuLLaMA)

usage:
  llamafactory-cli train CONFIG.yaml [key=value ...]   train / evaluate / predict as the config says
  llamafactory-cli api CONFIG.yaml [key=value ...]     serve the config's model over an OpenAI-compatible HTTP API
  llamafactory-cli chat CONFIG.yaml [key=value ...]    chat with the config's model in the terminal
  llamafactory-cli webchat CONFIG.yaml [key=value ...] the API plus a web page that shows the denoising live
  llamafactory-cli export --model_name_or_path SRC --export_dir DIR [--self-contained] [--overwrite]
                                                       write SRC as a Hugging Face-native model (see export --help)
  llamafactory-cli version                             print the version
  llamafactory-cli env                                 print library versions and devices
  llamafactory-cli help                                print this message

stages (key `stage`): pt, sft (autoregressive); ddm, ddm-sft (diffusion).
key=value items override the config's keys, e.g. `max_steps=100 output_dir=out/run1`.

environment:
  FORCE_TORCHRUN=1     launch through torchrun even with one (or no) GPU
  NPROC_PER_NODE       processes per node (default: number of GPUs, or 1)
  NNODES, NODE_RANK    multi-node layout (default 1, 0)
  MASTER_ADDR, MASTER_PORT  rendezvous address (default 127.0.0.1, a free port)
  API_HOST, API_PORT   api: address to listen on (default 127.0.0.1, 8000)
  API_KEY              api: require `Authorization: Bearer KEY`
  API_MODEL_NAME       api: the model id clients send (default: the checkpoint folder's name)
  API_MAX_BATCH, API_MAX_QUEUE, API_TIMEOUT, API_MAX_BODY  api: rows batched (32), rows waiting (256),
                       seconds per request (600), bytes per body (1048576)
"""

ENV_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "deepspeed", "flash-attn", "tokenizers",
                "wandb", "tensorboard", "pyyaml")


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> str:
    import torch

    lines = [f"llamafactory: {__version__}", f"python: {platform.python_version()}", f"platform: {platform.platform()}"]
    lines += [f"{package}: {_version_of(package)}" for package in ENV_PACKAGES]
    if torch.cuda.is_available():
        lines += [f"cuda device {i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    else:
        lines.append("cuda devices: none")
    lines.append(attention_report())
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wants_torchrun() -> bool:
    if "LOCAL_RANK" in os.environ:  # already a torchrun worker
        return False
    if bool_word(os.environ.get("FORCE_TORCHRUN", "0")):
        return True
    import torch

    return torch.cuda.device_count() > 1


def torchrun_command(train_args: list[str]) -> list[str]:
    """The torchrun command that runs ``llamafactory-cli train ...`` in every process."""
    import torch

    env = os.environ
    processes = env.get("NPROC_PER_NODE") or str(max(torch.cuda.device_count(), 1))
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", env.get("NNODES", "1"),
        "--node_rank", env.get("NODE_RANK", "0"),
        "--nproc_per_node", processes,
        "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"),
        "--master_port", env.get("MASTER_PORT") or str(_free_port()),
        "-m", "llamafactory.cli", "train", *train_args,
    ]


def train(train_args: list[str]) -> int:
    if _wants_torchrun():
        return subprocess.run(torchrun_command(train_args), check=False).returncode
    from .train import run_exp

    return run_command(lambda: run_exp(train_args))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else "help"
    if command == "train":
        if argv and argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        if not argv:
            print("error: train needs a config file, e.g. llamafactory-cli train examples/tiny/gpt2_ddm.yaml",
                  file=sys.stderr)
            return 2
        return train(argv)
    if command in ("api", "chat", "webchat"):
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        from .serve import launch

        if command == "chat":
            return run_command(lambda: launch.chat(argv))
        return run_command(lambda: launch.serve(argv, page=command == "webchat"))
    if command == "export":
        from .export_command import main as export_main

        return export_main(argv)
    if command == "version":
        print(__version__)
        return 0
    if command == "env":
        print(environment_report())
        return 0
    if command in ("help", "-h", "--help"):
        print(USAGE)
        return 0
    print(f"error: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
