"""Paths and the planted-answer model shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.real_data import REAL_DATA

FIXTURES = Path(__file__).parent / "data"
SHARED_DATA = REAL_DATA
KNOWN_ANSWER = " dog"  # the token the planted model predicts everywhere


def plant_answer(model, token_id: int):
    """Make a GPT-2 predict ``token_id`` at every position, whatever the input.

    The final layer norm is zeroed and its bias set along that token's (enlarged) embedding, so every
    hidden state is the same vector and the tied head scores the token far above all others.
    """
    with torch.no_grad():
        embedding = model.transformer.wte.weight
        embedding[token_id] *= 5.0
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(embedding[token_id] / embedding[token_id].norm() * 40.0)
    return model
