"""Diffusion language models adapted from autoregressive ones."""

__version__ = "0.9.0"
