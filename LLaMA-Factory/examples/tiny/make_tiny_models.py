"""Write the tiny random models the CPU example configs in examples/tiny/ train.

A byte-level BPE tokenizer (with <s> </s> <unk> <pad> <sep> <mask>) is trained on the demo data in
LLaMA-Factory/data, then a 2-layer GPT-2 and a 2-layer LLaMA are initialised from a fixed seed:

    python examples/tiny/make_tiny_models.py              # -> output/tiny/gpt2, output/tiny/llama
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                  "sep_token": "<sep>", "mask_token": "<mask>"}


def demo_texts() -> list[str]:
    """Every text of the bundled demo datasets."""
    texts = (DATA_DIR / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()
    texts += [record["text"] for record in json.loads((DATA_DIR / "c4_demo.json").read_text(encoding="utf-8"))]
    for record in json.loads((DATA_DIR / "gsm_demo.json").read_text(encoding="utf-8")):
        texts += [record["instruction"], record["output"]]
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)


def tiny_configs(tokenizer: PreTrainedTokenizerFast, positions: int) -> tuple[GPT2Config, LlamaConfig]:
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=64, n_layer=2, n_head=2, **ids)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                        tie_word_embeddings=False, **ids)
    return gpt2, llama


def write_tiny_models(output_dir: Path, seed: int = 0, vocab_size: int = 1000, positions: int = 128) -> list[Path]:
    """Train the tokenizer, then save ``gpt2/`` and ``llama/`` (weights + tokenizer) under ``output_dir``."""
    tokenizer = train_tokenizer(demo_texts(), vocab_size)
    written = []
    for name, config, model_class in zip(("gpt2", "llama"), tiny_configs(tokenizer, positions),
                                         (GPT2LMHeadModel, LlamaForCausalLM)):
        torch.manual_seed(seed)
        target = output_dir / name
        model_class(config).save_pretrained(target)
        tokenizer.save_pretrained(target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("output/tiny"), help="where gpt2/ and llama/ go")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args()
    for path in write_tiny_models(args.output_dir, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
