"""Train the byte-level BPE tokenizer of the tiny pipeline on its synthetic corpus.

The tokenizer carries every special token the stages need — ``<|endoftext|>`` (bos and eos, as in GPT-2:
the packed pre-training stream separates records with it, so a sequence that starts with it starts a
record), ``<pad>``, ``<sep>`` (between prompt and response in ``ddm-sft``), ``<mask>`` (the absorbing
diffusion state) and ``<unk>`` — and is saved as a ``PreTrainedTokenizerFast`` folder that
``AutoTokenizer`` loads offline.

    python train_tokenizer.py --corpus output/tiny/data/tiny_corpus.jsonl --out output/tiny/tokenizer
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from llamafactory.tiny import train_bpe_tokenizer

logger = logging.getLogger(__name__)

RESERVED_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
                  "pad_token": "<pad>", "sep_token": "<sep>", "mask_token": "<mask>"}


def corpus_lines(path: Path) -> Iterator[str]:
    """The ``text`` field of every line of a jsonl corpus."""
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                record = json.loads(line)
                if "text" not in record:
                    raise SystemExit(f"{path}:{number}: expected a json object with a 'text' field")
                yield record["text"]


def train_tokenizer(lines: Iterator[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over ``lines`` with the special tokens above (none is added automatically)."""
    return train_bpe_tokenizer(lines, vocab_size, special_tokens=RESERVED_TOKENS, add_prefix_space=True,
                               model_max_length=max_length)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="jsonl file with a 'text' field per line")
    parser.add_argument("--out", type=Path, required=True, help="folder to save the tokenizer into")
    parser.add_argument("--vocab-size", type=int, default=640, help="BPE vocabulary size at most (default 640: every corpus word whole)")
    parser.add_argument("--max-length", type=int, default=128, help="model_max_length to record (default 128)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.corpus.is_file():
        raise SystemExit(f"corpus {args.corpus} does not exist; run synthetic.py first")
    tokenizer = train_tokenizer(corpus_lines(args.corpus), args.vocab_size, args.max_length)
    tokenizer.save_pretrained(args.out)
    logger.info("saved a %d-token BPE tokenizer to %s", len(tokenizer), args.out)


if __name__ == "__main__":
    main()
