"""Write a randomly initialised tiny GPT-2 (config, safetensors weights, tokenizer) for stage ``pt``.

``llamafactory-cli train`` starts from ``model_name_or_path``; for pre-training from scratch that is
this folder. The model is GPT-2 shaped (tied head, learned positions) like DiffuGPT, only small.

    python init_model.py --tokenizer output/tiny/tokenizer --out output/tiny/init
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from transformers import AutoTokenizer, GPT2LMHeadModel

from llamafactory.tiny import tiny_gpt2, token_ids

logger = logging.getLogger(__name__)


def pipeline_gpt2(
    tokenizer, n_embd: int, n_layer: int, n_head: int, n_positions: int, seed: int, dropout: float = 0.0
) -> GPT2LMHeadModel:
    """A GPT-2 over ``tokenizer``'s vocabulary, its special ids recorded in the config.

    Dropout is off by default: at this size and budget it only slows down learning the corpus's rules.
    """
    if n_embd % n_head:
        raise SystemExit(f"--n-embd {n_embd} must be a multiple of --n-head {n_head}")
    return tiny_gpt2(len(tokenizer), n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions,
                     seed=seed, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **token_ids(tokenizer))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer folder (train_tokenizer.py)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model into")
    parser.add_argument("--n-embd", type=int, default=128, help="hidden size (default 128)")
    parser.add_argument("--n-layer", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--n-head", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--n-positions", type=int, default=128, help="position table size (default 128)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of every layer (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = pipeline_gpt2(tokenizer, args.n_embd, args.n_layer, args.n_head, args.n_positions, args.seed,
                      args.dropout)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    logger.info("wrote a %.2fM-parameter GPT-2 to %s", model.num_parameters() / 1e6, args.out)


if __name__ == "__main__":
    main()
