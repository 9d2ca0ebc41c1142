"""Tiny tokenizers, models and released-layout checkpoints for tests: random weights, no network."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerFast

from llamafactory.ddm import record_generation_length
from llamafactory.tiny import RESERVED_TOKENS, tiny_gpt2, tiny_llama, train_bpe_tokenizer

__all__ = ["corpus", "tiny_gpt2", "tiny_llama", "tiny_tokenizer", "write_diffugpt_m", "write_diffugpt_s", "write_diffullama"]

_WORDS = ("the a one two three four five six seven eight nine ten cat dog bird fish tree river house "
          "red green blue small big quick slow runs jumps sees eats sleeps today is wonderful day and "
          "of to in on with under over sky sun moon star plus minus equals answer question").split()


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English lines made of a small vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(lines):
        n = int(torch.randint(4, 12, (1,), generator=generator))
        idx = torch.randint(0, len(_WORDS), (n,), generator=generator).tolist()
        out.append(" ".join(_WORDS[i] for i in idx) + ".")
    return out


def tiny_tokenizer(vocab_size: int = 400, with_mask: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the tiny corpus, with bos/eos/pad/sep (and mask unless ``with_mask=False``)."""
    specials = {role: token for role, token in RESERVED_TOKENS.items() if with_mask or role != "mask_token"}
    return train_bpe_tokenizer(corpus(), vocab_size, special_tokens=specials)


def write_diffugpt_s(directory: Path, gen_len: int = 24) -> GPT2LMHeadModel:
    """DiffuGPT-S Hub layout: GPT-2 config + tokenizer, wrapper keys, no ``lm_head.weight``."""
    tokenizer = tiny_tokenizer()
    model = tiny_gpt2(len(tokenizer))
    _write_wrapper_layout(directory, model, tokenizer, gen_len)
    return model


def write_diffugpt_m(directory: Path, gen_len: int = 24) -> GPT2LMHeadModel:
    """DiffuGPT-M Hub layout: mask token added at id = old vocab size, embeddings resized (+ pad to 2)."""
    tokenizer = tiny_tokenizer(with_mask=False)
    old_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"mask_token": "[¨M¨]"})
    assert tokenizer.mask_token_id == old_vocab
    model = tiny_gpt2(old_vocab, seed=1)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=2)
    _write_wrapper_layout(directory, model, tokenizer, gen_len)
    return model


def _write_wrapper_layout(directory: Path, model: GPT2LMHeadModel, tokenizer, gen_len: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {"embed_tokens.weight": model.transformer.wte.weight}
    for key, value in model.transformer.state_dict().items():
        if not key.startswith("wte."):
            state[f"denoise_model.{key}"] = value
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, directory / "model.safetensors",
              metadata={"format": "pt"})
    config = model.config.to_dict()
    config["task_specific_params"] = {"text-generation": {"do_sample": True, "max_length": gen_len}}
    config.pop("is_causal", None)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(directory)


def write_diffullama(directory: Path, gen_len: int = 24) -> LlamaForCausalLM:
    """DiffuLLaMA Hub layout: sharded LLaMA safetensors with an index, untied head, tokenizer."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), seed=2)
    record_generation_length(model.config, gen_len)
    model.save_pretrained(directory, max_shard_size="40KB", safe_serialization=True)
    tokenizer.save_pretrained(directory)
    assert (directory / "model.safetensors.index.json").exists()
    return model
