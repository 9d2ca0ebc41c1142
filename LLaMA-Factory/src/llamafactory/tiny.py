"""Small tokenizers and randomly initialised models built from configs, offline.

One home for what the CPU examples (``examples/tiny``, ``examples/mini_paper``), the benchmarks and the
tests build: a byte-level BPE tokenizer trained on given texts, wrapped as ``PreTrainedTokenizerFast``
with the special tokens the diffusion stages need, and GPT-2 / LLaMA models of any small shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

RESERVED_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                  "sep_token": "<sep>", "mask_token": "<mask>"}


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Mapping[str, str] = RESERVED_TOKENS,
    add_prefix_space: bool = False,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE over ``texts`` whose vocabulary starts with ``special_tokens`` (role -> string;
    roles may share a string, e.g. GPT-2's bos = eos). No special token is added to encoded text."""
    bpe = Tokenizer(models.BPE(unk_token=special_tokens.get("unk_token")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(special_tokens.values())),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    extra: dict[str, Any] = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **special_tokens, **extra)


def token_ids(tokenizer: Any) -> dict[str, int | None]:
    """The bos / eos / pad ids of a tokenizer, as model configs record them."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def tiny_gpt2(
    vocab_size: int,
    *,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    n_positions: int = 64,
    seed: int = 0,
    **config: Any,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (tied head, learned positions) from ``seed``, in eval mode.

    ``config`` adds GPT2Config fields (token ids, dropout, ...); special ids default to none.
    """
    if n_embd % n_head:
        raise ValueError(f"n_embd {n_embd} must be a multiple of n_head {n_head}")
    settings = {"bos_token_id": None, "eos_token_id": None, **config}
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                                      n_layer=n_layer, n_head=n_head, **settings)).eval()


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 64,
    seed: int = 0,
    **config: Any,
) -> LlamaForCausalLM:
    """A randomly initialised LLaMA (untied head, grouped-query attention) from ``seed``, in eval mode."""
    settings = {"tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
                **config}
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings, **settings,
    )).eval()
