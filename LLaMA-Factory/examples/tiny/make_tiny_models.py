"""Write the tiny random models the CPU example configs in examples/tiny/ train.

A byte-level BPE tokenizer (with <s> </s> <unk> <pad> <sep> <mask>) is trained on the demo data in
LLaMA-Factory/data, then a 2-layer GPT-2 and a 2-layer LLaMA are initialised from a fixed seed:

    python examples/tiny/make_tiny_models.py              # -> output/tiny/gpt2, output/tiny/llama
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llamafactory.tiny import tiny_gpt2, tiny_llama, token_ids, train_bpe_tokenizer

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def demo_texts() -> list[str]:
    """Every text of the bundled demo datasets."""
    texts = (DATA_DIR / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()
    texts += [record["text"] for record in json.loads((DATA_DIR / "c4_demo.json").read_text(encoding="utf-8"))]
    for record in json.loads((DATA_DIR / "gsm_demo.json").read_text(encoding="utf-8")):
        texts += [record["instruction"], record["output"]]
    return texts


def write_tiny_models(output_dir: Path, seed: int = 0, vocab_size: int = 1000, positions: int = 128) -> list[Path]:
    """Train the tokenizer, then save ``gpt2/`` and ``llama/`` (weights + tokenizer) under ``output_dir``."""
    tokenizer = train_bpe_tokenizer(demo_texts(), vocab_size)
    ids = token_ids(tokenizer)
    models = {
        "gpt2": tiny_gpt2(len(tokenizer), n_embd=64, n_positions=positions, seed=seed, **ids),
        "llama": tiny_llama(len(tokenizer), hidden_size=64, intermediate_size=128, max_position_embeddings=positions,
                            seed=seed, **ids),
    }
    written = []
    for name, model in models.items():
        model.save_pretrained(output_dir / name)
        tokenizer.save_pretrained(output_dir / name)
        written.append(output_dir / name)
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
