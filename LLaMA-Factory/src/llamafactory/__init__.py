"""Diffusion language models adapted from autoregressive ones.

Importing the package registers the Hugging Face-native DiffuGPT / DiffuLLaMA classes with transformers'
Auto API (docs/design.md#hf-native-format).
"""

__version__ = "0.9.0"

from .ddm.hf import register_auto_classes  # noqa: E402  (the version is read by modules it imports)

register_auto_classes()
