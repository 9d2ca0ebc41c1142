"""Autoregressive pre-training stage."""

from .workflow import run_pt

__all__ = ["run_pt"]
