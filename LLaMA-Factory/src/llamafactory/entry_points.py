"""What every command-line entry point shares: flag parsing helpers, the model-loading flags and the
one-line error exit.

User errors (``UserInputError``) end a command with one ``error: ...`` line on stderr and exit code 2,
never a traceback; ``run_command`` is the one place that does it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import torch

from .errors import UserInputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "off"})
USER_ERROR_EXIT_CODE = 2
FLASH_ATTN_INSTALL = "pip install -r requirements-cuda.txt on a CUDA machine"


def bool_word(text: str) -> bool | None:
    """``true/false/1/0/yes/no/on/off/y/n`` (any case) as a bool; None for any other word."""
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    return None


def parse_bool(text: str) -> bool:
    """argparse ``type`` for booleans (``type=bool`` would make ``"False"`` true)."""
    value = bool_word(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")
    return value


def add_bool_flag(parser: Any, name: str, default: bool | None, help: str, *aliases: str) -> None:
    """``--name`` alone means true; ``--name false`` (or any word of ``parse_bool``) sets it; ``aliases`` are
    other option strings of the same flag."""
    parser.add_argument(name, *aliases, type=parse_bool, nargs="?", const=True, default=default, help=help)


def add_model_arguments(parser: Any, *, model_name: str, base_model_name: str | None, diffusion: bool = True) -> None:
    """The flags that say which checkpoint to load and how: name, base model, adapters, kernels, device."""
    parser.add_argument("--model_name", default=model_name, help="Hub id or local checkpoint directory")
    if diffusion:
        parser.add_argument("--base_model_name", default=base_model_name,
                            help="base AR model, used only for its config/tokenizer when the checkpoint lacks them")
    parser.add_argument("--adapter", action="append", default=[], help="PEFT LoRA adapter to merge (repeatable)")
    parser.add_argument("--flash_attn", "--attn_implementation", dest="flash_attn", choices=ATTENTION_IMPLEMENTATIONS,
                        default="sdpa", help="attention implementation")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    add_bool_flag(parser, "--trust_remote_code", False, "allow a checkpoint's own Python code (off unless you trust it)")


def resolve_device(choice: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; asking for a missing GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was requested but no CUDA device is available")
    return torch.device(choice)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 on CPU; otherwise one of ``DTYPES``."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if choice not in DTYPES:
        raise UserInputError(f"unknown dtype {choice!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[choice]


def check_attention_implementation(choice: str, device: torch.device) -> None:
    """flash_attention_2 needs CUDA and the flash-attn package; fail before loading anything."""
    if choice not in ATTENTION_IMPLEMENTATIONS:
        raise UserInputError(
            f"unknown attention implementation {choice!r}; expected one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    if choice != "flash_attention_2":
        return
    from transformers.utils import is_flash_attn_2_available

    if device.type != "cuda" or not is_flash_attn_2_available():
        raise UserInputError(
            f"flash_attention_2 needs a CUDA device and the flash-attn package ({FLASH_ATTN_INSTALL}); use sdpa or eager"
        )


def attention_kernels() -> dict[str, str]:
    """Each ``--flash_attn`` choice and whether it can run here (with the kernels behind sdpa on CUDA)."""
    from transformers.utils import is_flash_attn_2_available

    cuda = torch.cuda.is_available()
    backends = torch.backends.cuda
    if cuda:
        sdpa_kernels = [name for name, usable in (
            ("flash", backends.flash_sdp_enabled() and backends.is_flash_attention_available()),
            ("memory-efficient", backends.mem_efficient_sdp_enabled()), ("cudnn", backends.cudnn_sdp_enabled()),
            ("math", backends.math_sdp_enabled())) if usable]
        sdpa = f"available (CUDA kernels: {', '.join(sdpa_kernels)})"
    else:
        sdpa = "available (CPU kernels)"
    if is_flash_attn_2_available():
        flash = f"available (flash-attn {importlib.metadata.version('flash-attn')})"
    elif importlib.util.find_spec("flash_attn") is not None:
        flash = "unavailable (flash-attn is installed but needs a CUDA device)"
    else:
        flash = f"unavailable (flash-attn is not installed: {FLASH_ATTN_INSTALL})"
    return {"eager": "available", "sdpa": sdpa, "flash_attention_2": flash}


def attention_report(chosen: str | None = None) -> str:
    """One line per attention implementation; ``chosen`` (the run's ``--flash_attn``) is marked."""
    return "\n".join(f"attention {name}: {state}" + (" <- used" if name == chosen else "")
                     for name, state in attention_kernels().items())


def run_command(action: Callable[[], Any]) -> int:
    """Run a command's body: 0 on success; a user error prints one ``error:`` line and gives 2."""
    try:
        action()
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0
