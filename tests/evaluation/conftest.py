"""Fixtures for the evaluation tests: fixture data, the shared real data, and tiny models with a known answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from tests.tiny import tiny_gpt2, tiny_tokenizer, write_diffugpt_s, write_diffullama

from .common import KNOWN_ANSWER, SHARED_DATA, plant_answer


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    """No network, no wandb; one CPU thread, which tiny models run fastest on (and steadily on busy machines)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def bos_tokenizer():
    """The tiny tokenizer made to prepend <s> whenever special tokens are added, as LLaMA's does."""
    base = tiny_tokenizer()
    backend = base.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", base.bos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   mask_token="<mask>")


@pytest.fixture(scope="session")
def known_token(tokenizer) -> int:
    ids = tokenizer(KNOWN_ANSWER, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


@pytest.fixture(scope="session")
def planted_gpt2(tokenizer, known_token):
    """A tiny causal GPT-2 that always predicts the known answer."""
    return plant_answer(tiny_gpt2(len(tokenizer), n_positions=128), known_token)


@pytest.fixture(scope="session")
def planted_diffugpt_dir(tmp_path_factory, tokenizer, known_token) -> Path:
    """The planted model saved in the DiffuGPT-S Hub layout (wrapper keys, no head)."""
    from llamafactory.ddm import save_diffusion_checkpoint

    model = plant_answer(tiny_gpt2(len(tokenizer), n_positions=128), known_token)
    directory = tmp_path_factory.mktemp("planted") / "diffugpt"
    save_diffusion_checkpoint(model, directory, layout="wrapper", tokenizer=tokenizer, generation_length=32)
    return directory


@pytest.fixture(scope="session")
def random_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised tiny checkpoints in the released layouts, plus an ordinary causal GPT-2."""
    root = tmp_path_factory.mktemp("random")
    write_diffugpt_s(root / "diffugpt")
    write_diffullama(root / "diffullama")
    tok = tiny_tokenizer()
    tiny_gpt2(len(tok)).save_pretrained(root / "gpt2")
    tok.save_pretrained(root / "gpt2")
    return {"diffugpt": root / "diffugpt", "diffullama": root / "diffullama", "gpt2": root / "gpt2"}
