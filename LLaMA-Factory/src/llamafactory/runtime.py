"""Choices every command-line entry point shares: device, dtype, attention implementation, booleans."""

from __future__ import annotations

import argparse

import torch

from llamafactory.ddm import DiffusionInputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no`` -> bool (argparse's ``type=bool`` would make ``"False"`` true)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def resolve_device(choice: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; asking for a missing GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DiffusionInputError("--device cuda was requested but no CUDA device is available")
    return torch.device(choice)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 on CPU; otherwise one of ``DTYPES``."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if choice not in DTYPES:
        raise DiffusionInputError(f"unknown dtype {choice!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[choice]


def check_attention_implementation(choice: str, device: torch.device) -> None:
    """flash_attention_2 needs CUDA and the flash-attn package; fail before loading anything."""
    if choice not in ATTENTION_IMPLEMENTATIONS:
        raise DiffusionInputError(
            f"unknown attention implementation {choice!r}; expected one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    if choice != "flash_attention_2":
        return
    from transformers.utils import is_flash_attn_2_available

    if device.type != "cuda" or not is_flash_attn_2_available():
        raise DiffusionInputError("flash_attention_2 needs a CUDA device and the flash-attn package; use sdpa or eager")
